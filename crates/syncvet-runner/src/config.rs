//! The one configuration file: TOML layered with `SYNCVET_ETL__SECTION__KEY`
//! environment variables, checked whole before any work starts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::Deserialize;
use syncvet_client::ApiConfig;
use syncvet_lake::LakeConfig;

use crate::RunnerError;

/// The environment prefix of every override (`SYNCVET_ETL__LAKE__URL`).
pub const ENV_PREFIX: &str = "SYNCVET_ETL";

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["sync.practices", "sync.entities"];

/// Keys that moved (old dotted name, new one). A config that still sets an
/// old key is refused with both names: `deny_unknown_fields` alone would say
/// "unknown field" and leave the user to guess where the setting went.
const MOVED_KEYS: &[(&str, &str)] = &[("schedule.catch_up_days", "sync.catch_up_days")];

/// The whole configuration. Each section belongs to the crate that uses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The SyncVet Consumer API: addresses, credentials, paging, rate and retries.
    pub api: ApiConfig,
    /// Where and how Parquet is written.
    pub lake: LakeConfig,
    /// What to sync and how much at once.
    #[serde(default)]
    pub sync: SyncConfig,
    /// The daemon's schedule.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// The daemon's HTTP endpoint (`/healthz`, `/metrics`).
    #[serde(default)]
    pub daemon: DaemonConfig,
}

/// What to sync, and the bounds on doing it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Source ids (practices and suppliers) to sync; empty: every source the
    /// API lists under `practices`.
    pub practices: Vec<String>,
    /// Entities to sync; empty: every entity of the catalog that the
    /// source's type serves.
    pub entities: Vec<String>,
    /// Sources synced at once.
    pub concurrency: usize,
    /// Entities of one source synced at once.
    pub entity_concurrency: usize,
    /// Pages fetched ahead of the one being decoded and written, per partition.
    pub pages_in_flight: usize,
    /// The latest batch date a sync without explicit dates covers is
    /// (today - `lag_days`) in each source's time zone.
    pub lag_days: u32,
    /// `run` without `--date`, and every daemon sync, cover the last this
    /// many batch dates up to (today - `lag_days`); partitions already in
    /// the lake are skipped, so a missed or failed night is completed by the
    /// next run at the cost of one cheap lookup per date. 1: only the latest
    /// date. At least 1.
    pub catch_up_days: u32,
    /// The time zone of a source that the API gives none for (IANA name).
    #[serde(deserialize_with = "time_zone")]
    pub default_timezone: Tz,
    /// The whole run must end within this many seconds: retries and
    /// not-ready polling stop at the deadline and the partition fails.
    pub run_deadline_secs: u64,
    /// A folder of catalog files that override or extend the embedded catalog.
    pub catalog_dir: Option<PathBuf>,
}

/// When the daemon runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Cron expression with seconds (`sec min hour day-of-month month day-of-week`).
    pub cron: String,
    /// The IANA time zone the cron expression is read in.
    #[serde(deserialize_with = "time_zone")]
    pub timezone: Tz,
}

/// The daemon's HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Address of `/healthz` and `/metrics` (`host:port`).
    pub listen: String,
    /// On SIGTERM, in-flight partitions get this long to finish before they
    /// are abandoned uncommitted.
    pub shutdown_grace_secs: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            practices: Vec::new(),
            entities: Vec::new(),
            concurrency: 8,
            entity_concurrency: 2,
            pages_in_flight: 2,
            lag_days: 1,
            catch_up_days: 7,
            default_timezone: Tz::UTC,
            run_deadline_secs: 6 * 3600,
            catalog_dir: None,
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            cron: "0 0 2 * * *".into(),
            timezone: Tz::UTC,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: "127.0.0.1:9184".into(),
            shutdown_grace_secs: 20,
        }
    }
}

/// Reads an IANA time zone name once, at load: a bad name fails the load
/// with the key (serde_path_to_error adds it) and an example.
fn time_zone<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{name}` is not an IANA time zone name (for example `Europe/London`)"
        ))
    })
}

/// A configuration text layered with the `SYNCVET_ETL__…` variables of
/// `env`, as one tree (keys that moved are refused, naming where they went).
/// `list_keys`: more dotted keys, beyond the runner's, whose environment
/// value is a comma-separated list (a composer's own sections).
pub fn layer(
    text: &str,
    env: HashMap<String, String>,
    list_keys: &[&str],
) -> Result<serde_json::Value, RunnerError> {
    let file = config::File::from_str(text, config::FileFormat::Toml);
    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .source(Some(env));
    for key in LIST_KEYS.iter().chain(list_keys) {
        environment = environment.with_list_parse_key(key);
    }
    let merged = config::Config::builder()
        .add_source(file)
        .add_source(environment)
        .build()
        .map_err(|e| RunnerError::config("", e.to_string()))?;
    let tree: serde_json::Value = merged
        .try_deserialize()
        .map_err(|e| RunnerError::config("", e.to_string()))?;
    refuse_moved_keys(&tree)?;
    Ok(tree)
}

impl Config {
    /// Reads the config file at `path`, layers the environment over it, and
    /// checks every value.
    pub fn load(path: &Path, env: HashMap<String, String>) -> Result<Config, RunnerError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            RunnerError::config(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )
        })?;
        Config::from_tree(layer(&text, env, &[])?)
    }

    /// The configuration in a layered tree (see [`layer`]), every value checked.
    pub fn from_tree(tree: serde_json::Value) -> Result<Config, RunnerError> {
        let config: Config = serde_path_to_error::deserialize(tree)
            .map_err(|e| RunnerError::config(&e.path().to_string(), e.inner().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: values that parse but make no sense.
    pub fn validate(&self) -> Result<(), RunnerError> {
        let bad = |key: &str, problem: String| {
            Err(RunnerError::Config {
                key: key.into(),
                problem,
            })
        };
        self.api.validate().map_err(RunnerError::from)?;
        if self.sync.concurrency == 0 {
            return bad("sync.concurrency", "must be at least 1".into());
        }
        if self.sync.entity_concurrency == 0 {
            return bad("sync.entity_concurrency", "must be at least 1".into());
        }
        if self.sync.pages_in_flight == 0 {
            return bad("sync.pages_in_flight", "must be at least 1".into());
        }
        if self.sync.catch_up_days == 0 {
            return bad(
                "sync.catch_up_days",
                "must be at least 1 (1: only the latest batch date)".into(),
            );
        }
        validate_cron(&self.schedule.cron, self.schedule.timezone)?;
        if self.daemon.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "daemon.listen",
                format!("`{}` is not a host:port address", self.daemon.listen),
            );
        }
        Ok(())
    }
}

/// Refuses a config (file or environment) that still sets a key of
/// [`MOVED_KEYS`], naming where it went.
fn refuse_moved_keys(tree: &serde_json::Value) -> Result<(), RunnerError> {
    for (old, new) in MOVED_KEYS {
        let present = old
            .split('.')
            .try_fold(tree, |node, part| node.get(part))
            .is_some();
        if present {
            let env = format!("{ENV_PREFIX}__{}", new.replace('.', "__").to_uppercase());
            return Err(RunnerError::config(
                old,
                format!("`{old}` moved to `{new}` (environment: {env}); set it there instead"),
            ));
        }
    }
    Ok(())
}

fn validate_cron(cron: &str, timezone: Tz) -> Result<(), RunnerError> {
    tokio_cron_scheduler::Job::new_async_tz(cron, timezone, |_, _| Box::pin(async {}))
        .map(drop)
        .map_err(|_| RunnerError::Config {
            key: "schedule.cron".into(),
            problem: format!(
                "`{cron}` is not a cron expression with seconds (`sec min hour day-of-month month day-of-week`)"
            ),
        })
}
