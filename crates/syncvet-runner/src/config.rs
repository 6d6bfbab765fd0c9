//! The one configuration file: TOML layered with `SYNCVET_ETL__SECTION__KEY`
//! environment variables, checked whole before any work starts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use syncvet_client::ApiConfig;
use syncvet_emulator::EmulatorConfig;
use syncvet_lake::LakeConfig;

use crate::RunnerError;

/// The embedded default: the emulator in-process on loopback, a lake in `./lake`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/default.toml");

/// The environment prefix of every override (`SYNCVET_ETL__LAKE__URL`).
pub const ENV_PREFIX: &str = "SYNCVET_ETL";

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "sync.practices",
    "sync.entities",
    "emulator.settings.forbidden_sources",
];

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
    /// The in-process emulator of the embedded default.
    #[serde(default)]
    pub emulator: EmulatorSection,
}

/// What to sync, and the bounds on doing it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Source ids (practices and suppliers) to sync; empty: every source the
    /// API lists under `practices`.
    #[serde(default)]
    pub practices: Vec<String>,
    /// Entities to sync; empty: every entity of the catalog that the
    /// source's type serves.
    #[serde(default)]
    pub entities: Vec<String>,
    /// Sources synced at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Entities of one source synced at once.
    #[serde(default = "default_entity_concurrency")]
    pub entity_concurrency: usize,
    /// Pages fetched ahead of the one being decoded and written, per partition.
    #[serde(default = "default_pages_in_flight")]
    pub pages_in_flight: usize,
    /// The latest batch date a sync without explicit dates covers is
    /// (today - `lag_days`) in each source's time zone.
    #[serde(default = "default_lag_days")]
    pub lag_days: u32,
    /// `run` without `--date`, and every daemon sync, cover the last this
    /// many batch dates up to (today - `lag_days`); partitions already in
    /// the lake are skipped, so a missed or failed night is completed by the
    /// next run at the cost of one cheap lookup per date. 1: only the latest
    /// date. At least 1.
    #[serde(default = "default_catch_up_days")]
    pub catch_up_days: u32,
    /// The time zone of a source that the API gives none for (IANA name).
    #[serde(default = "default_timezone")]
    pub default_timezone: String,
    /// The whole run must end within this many seconds: retries and
    /// not-ready polling stop at the deadline and the partition fails.
    #[serde(default = "default_run_deadline_secs")]
    pub run_deadline_secs: u64,
    /// A folder of catalog files that override or extend the embedded catalog.
    #[serde(default)]
    pub catalog_dir: Option<PathBuf>,
}

/// When the daemon runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Cron expression with seconds (`sec min hour day-of-month month day-of-week`).
    #[serde(default = "default_cron")]
    pub cron: String,
    /// The IANA time zone the cron expression is read in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

/// The daemon's HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Address of `/healthz` and `/metrics` (`host:port`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// On SIGTERM, in-flight partitions get this long to finish before they
    /// are abandoned uncommitted.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

/// The emulator that the embedded default serves in-process.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmulatorSection {
    /// Start the emulator on loopback and point `[api]` at it (its own
    /// addresses and credentials replace `base_url`, `token_url`,
    /// `client_id` and the secret).
    #[serde(default)]
    pub enabled: bool,
    /// The emulator's port (0: any free port).
    #[serde(default)]
    pub port: u16,
    /// The emulator's switches (see the emulator's README).
    #[serde(default)]
    pub settings: EmulatorConfig,
}

fn default_concurrency() -> usize {
    8
}
fn default_entity_concurrency() -> usize {
    2
}
fn default_pages_in_flight() -> usize {
    2
}
fn default_lag_days() -> u32 {
    1
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_run_deadline_secs() -> u64 {
    6 * 3600
}
fn default_cron() -> String {
    "0 0 2 * * *".into()
}
fn default_catch_up_days() -> u32 {
    7
}
fn default_listen() -> String {
    "127.0.0.1:9184".into()
}
fn default_shutdown_grace_secs() -> u64 {
    20
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            practices: Vec::new(),
            entities: Vec::new(),
            concurrency: default_concurrency(),
            entity_concurrency: default_entity_concurrency(),
            pages_in_flight: default_pages_in_flight(),
            lag_days: default_lag_days(),
            catch_up_days: default_catch_up_days(),
            default_timezone: default_timezone(),
            run_deadline_secs: default_run_deadline_secs(),
            catalog_dir: None,
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            cron: default_cron(),
            timezone: default_timezone(),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: default_listen(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
        }
    }
}

impl Config {
    /// Reads `path` (or the embedded default when `path` is `None`), layers
    /// the environment over it, and checks every value.
    pub fn load(path: Option<&Path>, env: HashMap<String, String>) -> Result<Config, RunnerError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                RunnerError::config(
                    "",
                    format!("cannot read config file {}: {e}", path.display()),
                )
            })?,
            None => DEFAULT_CONFIG.to_owned(),
        };
        let file = config::File::from_str(&text, config::FileFormat::Toml);
        let mut environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .source(Some(env));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        let merged = config::Config::builder()
            .add_source(file)
            .add_source(environment)
            .build()
            .map_err(|e| RunnerError::Config {
                key: String::new(),
                problem: e.to_string(),
            })?;
        let tree: serde_json::Value =
            merged.try_deserialize().map_err(|e| RunnerError::Config {
                key: String::new(),
                problem: e.to_string(),
            })?;
        refuse_moved_keys(&tree)?;
        let config: Config =
            serde_path_to_error::deserialize(tree).map_err(|e| RunnerError::Config {
                key: e.path().to_string(),
                problem: e.inner().to_string(),
            })?;
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
        if !self.emulator.enabled {
            self.api.validate().map_err(RunnerError::from)?;
        }
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
        parse_timezone("sync.default_timezone", &self.sync.default_timezone)?;
        let timezone = parse_timezone("schedule.timezone", &self.schedule.timezone)?;
        validate_cron(&self.schedule.cron, timezone)?;
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

/// An IANA time zone name, or a config error naming `key`.
pub fn parse_timezone(key: &str, name: &str) -> Result<chrono_tz::Tz, RunnerError> {
    name.parse().map_err(|_| RunnerError::Config {
        key: key.into(),
        problem: format!("`{name}` is not an IANA time zone name (for example `Europe/London`)"),
    })
}

fn validate_cron(cron: &str, timezone: chrono_tz::Tz) -> Result<(), RunnerError> {
    tokio_cron_scheduler::Job::new_async_tz(cron, timezone, |_, _| Box::pin(async {}))
        .map(drop)
        .map_err(|_| RunnerError::Config {
            key: "schedule.cron".into(),
            problem: format!(
                "`{cron}` is not a cron expression with seconds (`sec min hour day-of-month month day-of-week`)"
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error_of(text: &str, pairs: &[(&str, &str)]) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        match Config::load(Some(&path), env(pairs)) {
            Err(RunnerError::Config { key, problem }) => (key, problem),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn the_embedded_default_loads() {
        let config = Config::load(None, HashMap::new()).unwrap();
        assert!(config.emulator.enabled);
        assert_eq!(config.lake.url, "./lake");
        assert_eq!(config.sync.catch_up_days, 7);
    }

    #[test]
    fn the_production_example_loads_with_a_secret_file_named_in_the_environment() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/production.example.toml");
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, "s3cr3t\n").unwrap();
        let secret_file = secret_file.to_str().unwrap();
        let config = Config::load(
            Some(&path),
            env(&[("SYNCVET_ETL__API__CLIENT_SECRET_FILE", secret_file)]),
        )
        .unwrap();
        assert!(!config.emulator.enabled);
        assert_eq!(config.lake.url, "s3://vet-data-lake/syncvet");
        assert_eq!(config.api.resolve_secret().unwrap().expose(), "s3cr3t");
        assert_eq!(config.daemon.listen, "0.0.0.0:9184");
    }

    #[test]
    fn environment_overrides_nested_keys_and_lists() {
        let config = Config::load(
            None,
            env(&[
                ("SYNCVET_ETL__LAKE__URL", "s3://bucket/lake"),
                ("SYNCVET_ETL__API__RATE__REQUESTS_PER_SEC", "7"),
                ("SYNCVET_ETL__SYNC__PRACTICES", "p-0001,p-0002"),
            ]),
        )
        .unwrap();
        assert_eq!(config.lake.url, "s3://bucket/lake");
        assert_eq!(config.sync.practices, vec!["p-0001", "p-0002"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let (key, problem) = error_of(&format!("{DEFAULT_CONFIG}\n[extra]\nx = 1\n"), &[]);
        assert!(key.is_empty() || key.contains("extra"), "{key}");
        assert!(problem.contains("extra"), "{problem}");

        let (key, problem) = error_of(DEFAULT_CONFIG, &[("SYNCVET_ETL__SYNC__CONCURENCY", "3")]);
        assert!(problem.contains("concurency"), "{key} {problem}");

        let (key, _) = error_of(
            DEFAULT_CONFIG,
            &[("SYNCVET_ETL__SYNC__CONCURRENCY", "lots")],
        );
        assert_eq!(key, "sync.concurrency");

        let (key, problem) = error_of(
            DEFAULT_CONFIG,
            &[("SYNCVET_ETL__SCHEDULE__CRON", "every night")],
        );
        assert_eq!(key, "schedule.cron");
        assert!(problem.contains("every night"));

        let (key, _) = error_of(
            DEFAULT_CONFIG,
            &[("SYNCVET_ETL__SCHEDULE__TIMEZONE", "Mars/Olympus")],
        );
        assert_eq!(key, "schedule.timezone");

        let (key, problem) = error_of(DEFAULT_CONFIG, &[("SYNCVET_ETL__SYNC__CATCH_UP_DAYS", "0")]);
        assert_eq!(key, "sync.catch_up_days");
        assert!(problem.contains("at least 1"), "{problem}");
    }

    #[test]
    fn the_moved_catch_up_key_names_its_new_place() {
        let in_file = DEFAULT_CONFIG.replace("[schedule]\n", "[schedule]\ncatch_up_days = 3\n");
        assert_ne!(in_file, DEFAULT_CONFIG);
        let in_env = [("SYNCVET_ETL__SCHEDULE__CATCH_UP_DAYS", "3")];
        for (text, pairs) in [(in_file.as_str(), &[][..]), (DEFAULT_CONFIG, &in_env[..])] {
            let (key, problem) = error_of(text, pairs);
            let message = RunnerError::Config { key, problem }.to_string();
            assert!(
                message.contains("`schedule.catch_up_days` moved to `sync.catch_up_days`"),
                "{message}"
            );
            assert!(
                message.contains("SYNCVET_ETL__SYNC__CATCH_UP_DAYS"),
                "{message}"
            );
        }

        let moved = Config::load(None, env(&[("SYNCVET_ETL__SYNC__CATCH_UP_DAYS", "3")])).unwrap();
        assert_eq!(moved.sync.catch_up_days, 3);
    }
}
