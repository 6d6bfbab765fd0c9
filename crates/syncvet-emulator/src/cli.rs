//! The command line, shared by `syncvet-emulator` and `syncvet-etl emulator`
//! (which flattens [`Args`] into its own subcommand).
//!
//! Precedence: defaults < the `--config` TOML file < flags.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use crate::{EmulatorConfig, EmulatorError, RunningEmulator};

/// The client secret flag, kept out of `Debug` output.
fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// `syncvet-emulator [--config FILE] [--port P] [switch flags…]`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A TOML file of switches (the keys of the switch table).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Port on 127.0.0.1 to listen on; 0 picks any free port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// One flag per switch; each overrides the file.
    #[command(flatten)]
    pub switches: Switches,
}

/// One optional flag per switch of [`EmulatorConfig`] (same names, kebab-case).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Switches {
    /// Data seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of PIMS sources (p-0001…).
    #[arg(long)]
    pub pims_sources: Option<u32>,
    /// Number of supplier sources (s-0001…).
    #[arg(long)]
    pub supplier_sources: Option<u32>,
    /// Mean records per source per entity per day.
    #[arg(long)]
    pub rows_per_day: Option<u64>,
    /// Ratio between the largest and the smallest source.
    #[arg(long)]
    pub spread: Option<f64>,
    /// Hidden rate limit, requests per second per client id (0 = none).
    #[arg(long)]
    pub rate_limit_rps: Option<u32>,
    /// Bucket size of the rate limit (0 = rate_limit_rps).
    #[arg(long)]
    pub burst: Option<u32>,
    /// Retry-After seconds sent with a bucket or concurrency 429 (at least 1).
    #[arg(long)]
    pub retry_after_secs: Option<u64>,
    /// Window limit: calls per client id per window (0 = none).
    #[arg(long)]
    pub window_calls: Option<u32>,
    /// Window length, seconds.
    #[arg(long)]
    pub window_secs: Option<u64>,
    /// Sliding (trailing) window instead of fixed windows (`--window-sliding`
    /// alone = true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub window_sliding: Option<bool>,
    /// Cap on API requests in flight per client id (0 = none).
    #[arg(long)]
    pub max_concurrent_requests: Option<u32>,
    /// Milliseconds after a 429 before a request counts as an early retry.
    #[arg(long)]
    pub early_retry_grace_ms: Option<u64>,
    /// Lifetime of issued tokens, seconds.
    #[arg(long)]
    pub token_ttl_secs: Option<u64>,
    /// Fraction of API requests answered 500.
    #[arg(long)]
    pub error_rate_500: Option<f64>,
    /// Fraction of API requests answered 503.
    #[arg(long)]
    pub error_rate_503: Option<f64>,
    /// Fraction of API requests answered 408.
    #[arg(long)]
    pub error_rate_408: Option<f64>,
    /// Fraction of API requests whose connection is closed unanswered.
    #[arg(long)]
    pub drop_rate: Option<f64>,
    /// Fraction of 200 bodies cut short.
    #[arg(long)]
    pub truncate_rate: Option<f64>,
    /// Mean added latency, milliseconds.
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// 202 answers per batch before it is ready.
    #[arg(long)]
    pub not_ready_polls: Option<u32>,
    /// Source ids answered 403 (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub forbidden_sources: Option<Vec<String>>,
    /// Fraction of dirty records.
    #[arg(long)]
    pub dirty_rate: Option<f64>,
    /// Fraction of records with unknown extra keys.
    #[arg(long)]
    pub drift_rate: Option<f64>,
    /// Fraction of a batch's records that are changed versions of earlier records.
    #[arg(long)]
    pub change_rate: Option<f64>,
    /// Fraction of a batch's records that are deletions of earlier records.
    #[arg(long)]
    pub delete_rate: Option<f64>,
    /// How many days back changed and deleted records were created.
    #[arg(long)]
    pub change_lookback_days: Option<u32>,
    /// Age in seconds after which a continuation token expires (0 = never).
    #[arg(long)]
    pub continuation_ttl_secs: Option<u64>,
    /// Client id the token endpoint accepts.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Client secret the token endpoint accepts.
    #[arg(long, env = "SYNCVET_EMULATOR_CLIENT_SECRET", hide_env_values = true, value_parser = secret)]
    pub client_secret: Option<SecretString>,
    /// Scope the token endpoint accepts.
    #[arg(long)]
    pub scope: Option<String>,
    /// Largest pageSize accepted.
    #[arg(long)]
    pub max_page_size: Option<u32>,
}

impl Switches {
    /// Writes every flag given over `config`.
    pub fn apply(&self, config: &mut EmulatorConfig) {
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(value) = &self.$field {
                    config.$field = value.clone();
                }
            )*};
        }
        set!(
            seed,
            pims_sources,
            supplier_sources,
            rows_per_day,
            spread,
            rate_limit_rps,
            burst,
            retry_after_secs,
            window_calls,
            window_secs,
            window_sliding,
            max_concurrent_requests,
            early_retry_grace_ms,
            token_ttl_secs,
            error_rate_500,
            error_rate_503,
            error_rate_408,
            drop_rate,
            truncate_rate,
            latency_ms,
            not_ready_polls,
            forbidden_sources,
            dirty_rate,
            drift_rate,
            change_rate,
            delete_rate,
            change_lookback_days,
            continuation_ttl_secs,
            client_id,
            scope,
            max_page_size
        );
        if let Some(secret) = &self.client_secret {
            config.client_secret = secret.expose_secret().to_owned();
        }
    }
}

impl Args {
    /// The configuration: defaults, then the file, then the flags; validated.
    pub fn load(&self) -> Result<EmulatorConfig, EmulatorError> {
        let mut config = match &self.config {
            None => EmulatorConfig::default(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| EmulatorError::ReadConfig {
                        path: path.clone(),
                        source,
                    })?;
                EmulatorConfig::from_toml(&text).map_err(|e| match e {
                    EmulatorError::InvalidConfig { message, .. } => EmulatorError::InvalidConfig {
                        origin: path.display().to_string(),
                        message,
                    },
                    other => other,
                })?
            }
        };
        self.switches.apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}

/// Serves until `shutdown` completes, after printing the one line
/// `listening on http://127.0.0.1:PORT` on stdout.
pub async fn serve(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), EmulatorError> {
    let config = args.load()?;
    let emulator = RunningEmulator::start(config, args.port).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", emulator.url())?;
        stdout.flush()?;
    }
    shutdown.await;
    tracing::info!("emulator shutting down");
    emulator.shutdown().await;
    Ok(())
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> Result<(), EmulatorError> {
    serve(args, shutdown_signal()).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("syncvet-emulator-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("emulator.toml");
        std::fs::write(&file, "seed = 5\nrate_limit_rps = 7\ndrop_rate = 0.1\n").unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--rate-limit-rps",
            "9",
            "--forbidden-sources",
            "p-0001,p-0002",
            "--client-secret",
            "s3cret",
        ])
        .unwrap();
        let config = cli.args.load().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(config.seed, 5);
        assert_eq!(config.rate_limit_rps, 9);
        assert_eq!(config.drop_rate, 0.1);
        assert_eq!(config.rows_per_day, 200);
        assert_eq!(config.forbidden_sources, vec!["p-0001", "p-0002"]);
        assert_eq!(config.client_secret, "s3cret");
        assert!(!format!("{:?}", cli.args).contains("s3cret"));
    }

    #[test]
    fn limit_flags_set_their_switches() {
        let cli = Cli::try_parse_from([
            "x",
            "--window-calls",
            "30",
            "--window-secs",
            "10",
            "--window-sliding",
            "--max-concurrent-requests",
            "4",
            "--early-retry-grace-ms",
            "250",
        ])
        .unwrap();
        let config = cli.args.load().unwrap();
        assert_eq!(
            (
                config.window_calls,
                config.window_secs,
                config.window_sliding,
                config.max_concurrent_requests,
                config.early_retry_grace_ms
            ),
            (30, 10, true, 4, 250)
        );
        let cli = Cli::try_parse_from(["x", "--window-sliding", "false"]).unwrap();
        assert!(!cli.args.load().unwrap().window_sliding);
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert!(!cli.args.load().unwrap().window_sliding);
        let cli = Cli::try_parse_from(["x", "--window-calls", "3", "--window-secs", "0"]).unwrap();
        assert!(
            cli.args
                .load()
                .unwrap_err()
                .to_string()
                .contains("window_secs")
        );
    }

    #[test]
    fn evolution_flags_set_their_switches_and_are_validated() {
        let cli = Cli::try_parse_from([
            "x",
            "--change-rate",
            "0.25",
            "--delete-rate",
            "0.05",
            "--change-lookback-days",
            "30",
        ])
        .unwrap();
        let config = cli.args.load().unwrap();
        assert_eq!(
            (
                config.change_rate,
                config.delete_rate,
                config.change_lookback_days
            ),
            (0.25, 0.05, 30)
        );
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let config = cli.args.load().unwrap();
        assert_eq!(
            (
                config.change_rate,
                config.delete_rate,
                config.change_lookback_days
            ),
            (0.10, 0.01, 90)
        );
        let cli = Cli::try_parse_from(["x", "--change-lookback-days", "0"]).unwrap();
        let err = cli.args.load().unwrap_err().to_string();
        assert!(err.contains("change_lookback_days"), "{err}");
        let cli = Cli::try_parse_from(["x", "--delete-rate", "1.2"]).unwrap();
        let err = cli.args.load().unwrap_err().to_string();
        assert!(err.contains("delete_rate"), "{err}");
    }

    #[test]
    fn a_bad_file_names_the_file_and_the_key() {
        let dir = std::env::temp_dir().join(format!("syncvet-emulator-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "rate_limit = 3\n").unwrap();
        let cli = Cli::try_parse_from(["x", "--config", file.to_str().unwrap()]).unwrap();
        let err = cli.args.load().unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("bad.toml") && err.contains("rate_limit"),
            "{err}"
        );
    }
}
