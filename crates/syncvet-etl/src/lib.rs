//! The `syncvet-etl` binary's composition root: the configuration file as
//! the binary reads it (the runner's sections plus `[emulator]`), and the
//! embedded default, which serves the emulator in-process on loopback and
//! points `[api]` at it. Only this crate links the emulator; the runner
//! knows nothing of it.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use syncvet_client::SecretString;
use syncvet_emulator::{EmulatorConfig, RunningEmulator};
use syncvet_runner::{Config, RunnerError};

/// The embedded default: the emulator in-process on loopback, a lake in `./lake`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/default.toml");

/// Keys of `[emulator]` whose environment value is a comma-separated list.
const EMULATOR_LIST_KEYS: &[&str] = &["emulator.settings.forbidden_sources"];

/// `[emulator]`: the emulator that the embedded default serves in-process.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorSection {
    /// Start the emulator on loopback and point `[api]` at it (its own
    /// addresses and credentials replace `base_url`, `token_url`,
    /// `client_id` and the secret) for the commands that read the API.
    pub enabled: bool,
    /// The emulator's port (0: any free port).
    pub port: u16,
    /// The emulator's switches (see the emulator's README).
    pub settings: EmulatorConfig,
}

/// The configuration file as the binary reads it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The runner's sections.
    pub config: Config,
    /// `[emulator]`.
    pub emulator: EmulatorSection,
}

impl Settings {
    /// Reads `path` (or the embedded default when `path` is `None`), layers
    /// the environment over it, and checks every value.
    pub fn load(
        path: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Settings, RunnerError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| RunnerError::Config {
                key: String::new(),
                problem: format!("cannot read config file {}: {e}", path.display()),
            })?,
            None => DEFAULT_CONFIG.to_owned(),
        };
        let mut tree = syncvet_runner::layer(&text, env, EMULATOR_LIST_KEYS)?;
        let emulator = match tree.as_object_mut().and_then(|t| t.remove("emulator")) {
            Some(section) => {
                serde_path_to_error::deserialize(section).map_err(|e| RunnerError::Config {
                    key: format!("emulator.{}", e.path()),
                    problem: e.inner().to_string(),
                })?
            }
            None => EmulatorSection::default(),
        };
        Ok(Settings {
            config: Config::from_tree(tree)?,
            emulator,
        })
    }

    /// For the commands that read the API: with `[emulator] enabled`,
    /// starts the emulator and points `[api]` at it. It serves for as long
    /// as the returned handle lives.
    pub async fn start_emulator(&mut self) -> Result<Option<RunningEmulator>, RunnerError> {
        if !self.emulator.enabled {
            return Ok(None);
        }
        let settings = &self.emulator.settings;
        let emulator = RunningEmulator::start(settings.clone(), self.emulator.port)
            .await
            .map_err(|source| RunnerError::Io {
                what: "starting the embedded emulator".into(),
                source,
            })?;
        tracing::info!(url = %emulator.url(), "embedded emulator listening");
        let api = &mut self.config.api;
        api.base_url = emulator.base_url();
        api.token_url = emulator.token_url();
        api.client_id = settings.client_id.clone();
        api.client_secret = Some(SecretString::from(settings.client_secret.clone()));
        api.client_secret_env = None;
        api.client_secret_file = None;
        Ok(Some(emulator))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncvet_client::ExposeSecret;

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
        match Settings::load(Some(&path), env(pairs)) {
            Err(RunnerError::Config { key, problem }) => (key, problem),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn the_embedded_default_loads() {
        let Settings { config, emulator } = Settings::load(None, HashMap::new()).unwrap();
        assert!(emulator.enabled);
        assert_eq!(config.lake.url, "./lake");
        assert_eq!(config.sync.catch_up_days, 7);
    }

    #[test]
    fn the_production_example_loads_with_a_secret_file_named_in_the_environment() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config/production.example.toml");
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, "s3cr3t\n").unwrap();
        let secret_file = secret_file.to_str().unwrap();
        let Settings { config, emulator } = Settings::load(
            Some(&path),
            env(&[("SYNCVET_ETL__API__CLIENT_SECRET_FILE", secret_file)]),
        )
        .unwrap();
        assert!(!emulator.enabled);
        assert_eq!(config.lake.url, "s3://vet-data-lake/syncvet");
        assert_eq!(
            config.api.resolve_secret().unwrap().expose_secret(),
            "s3cr3t"
        );
        assert_eq!(config.daemon.listen, "0.0.0.0:9184");
    }

    #[test]
    fn environment_overrides_nested_keys_and_lists() {
        let Settings { config, .. } = Settings::load(
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

        let moved =
            Settings::load(None, env(&[("SYNCVET_ETL__SYNC__CATCH_UP_DAYS", "3")])).unwrap();
        assert_eq!(moved.config.sync.catch_up_days, 3);
    }
}
