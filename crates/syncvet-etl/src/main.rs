//! `syncvet-etl`: the command line of the SyncVet → Parquet sync.
//!
//! Exit codes: 0 everything planned is in the lake; 1 nothing could start
//! (configuration, credentials, lake); 2 some partitions failed (the report
//! names them); 130 interrupted by SIGINT/SIGTERM.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};
use syncvet_etl::Settings;
use syncvet_lake::Lake;
use syncvet_model::Chain;
use syncvet_runner::{
    Config, Dates, RunReport, Runner, RunnerError, Shard, SyncRequest, Tables, run_daemon,
};
use tokio_util::sync::CancellationToken;

const EXIT_FAILED_PARTITIONS: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "syncvet-etl",
    version,
    about = "Lands SyncVet Consumer API batches in Delta Lake tables"
)]
struct Cli {
    /// The configuration file; without it `config/default.toml` if present,
    /// else the embedded default (emulator on loopback, lake in ./lake).
    #[arg(long, global = true, env = "SYNCVET_ETL_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Sync the recent batch dates that are not in the lake yet, or one date.
    ///
    /// Without --date: the last `sync.catch_up_days` (default 7) dates up to
    /// today - `sync.lag_days` in each source's time zone; partitions already
    /// in the lake are skipped, so a night that was missed or failed is
    /// completed by the next run. With --force and no --date only the latest
    /// date is rewritten (rewrite more with `backfill --force`).
    Run {
        /// Only this batch date (YYYY-MM-DD), instead of the catch-up window.
        #[arg(long)]
        date: Option<NaiveDate>,
        #[command(flatten)]
        filters: Filters,
    },
    /// Sync every batch date of a range, both ends included.
    Backfill {
        /// The first batch date (YYYY-MM-DD).
        #[arg(long)]
        from: NaiveDate,
        /// The last batch date (YYYY-MM-DD).
        #[arg(long)]
        to: NaiveDate,
        #[command(flatten)]
        filters: Filters,
    },
    /// Run on the configured cron schedule, with /healthz and /metrics.
    Daemon,
    /// Check the configuration, the credentials and the first page of each
    /// entity of one source; writes nothing.
    Validate {
        /// The source to read (default: the first one the API lists).
        #[arg(long)]
        practice: Option<String>,
    },
    /// Serve the emulated SyncVet API.
    Emulator(Box<syncvet_emulator::cli::Args>),
    /// Compact small files, write checkpoints and vacuum old files of every
    /// table; safe beside a running sync. The daemon runs it after each
    /// nightly sync.
    ///
    /// Compaction merges each day's small files (rows unchanged, a commit
    /// with dataChange = false); vacuum deletes files that no table version
    /// of the last `lake.vacuum_retention_hours` (7 days) refers to.
    Maintain {
        /// Only this entity; repeatable.
        #[arg(long = "entity")]
        entities: Vec<String>,
    },
    /// Rebuild the current tables (`current/…`) from the history tables
    /// alone: each source's state computed again from all its batches, in
    /// one commit per entity. Runs keep them up to date; this is for after
    /// a manual change to the history, or to check them.
    RebuildCurrent {
        /// Only this entity; repeatable.
        #[arg(long = "entity")]
        entities: Vec<String>,
    },
    /// Show a run report from the lake (default: the latest run).
    Report {
        /// The run id (as printed by `run`).
        run_id: Option<String>,
        /// Print the report's JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
struct Filters {
    /// Only this source (practice or supplier id); repeatable.
    #[arg(long = "practice")]
    practices: Vec<String>,
    /// Only this entity; repeatable.
    #[arg(long = "entity")]
    entities: Vec<String>,
    /// Rewrite partitions that are already in the lake (`run` without
    /// --date: only the latest date's).
    #[arg(long)]
    force: bool,
    /// Take one slice of the sources, INDEX/COUNT (the rate budget is divided by COUNT).
    #[arg(long)]
    shard: Option<Shard>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let command = match cli.command {
        Command::Emulator(args) => {
            return match syncvet_emulator::cli::run(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            };
        }
        command => command,
    };
    let config_path = cli.config.or_else(|| {
        let default = PathBuf::from("config/default.toml");
        default.exists().then_some(default)
    });
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut settings = match Settings::load(config_path.as_deref(), env) {
        Ok(settings) => settings,
        Err(e) => return fail(&e),
    };
    // Each command opens only what it uses: `report` the lake, `maintain`
    // and `rebuild-current` the catalog and the lake, the others the API.
    let command = match command {
        Command::Report { run_id, json } => {
            return match Lake::open(&settings.config.lake) {
                Ok(lake) => report(&lake, run_id, json).await,
                Err(e) => fail(&RunnerError::from(e)),
            };
        }
        Command::Maintain { entities } => {
            return match Tables::open(&settings.config) {
                Ok(tables) => maintain(&tables, &entities).await,
                Err(e) => fail(&e),
            };
        }
        Command::RebuildCurrent { entities } => {
            return match Tables::open(&settings.config) {
                Ok(tables) => rebuild_current(&tables, &entities).await,
                Err(e) => fail(&e),
            };
        }
        command => command,
    };
    // The embedded default's emulator serves while this lives.
    let _emulator = match settings.start_emulator().await {
        Ok(emulator) => emulator,
        Err(e) => return fail(&e),
    };
    let config = settings.config;
    let (dates, filters, command) = match command {
        Command::Run { date, filters } => {
            let dates = Dates::for_run(date, filters.force, config.sync.catch_up_days);
            (dates, filters, "run")
        }
        Command::Backfill { from, to, filters } => (Dates::Range(from, to), filters, "backfill"),
        Command::Daemon => return daemon(config).await,
        Command::Validate { practice } => return validate(&config, practice.as_deref()).await,
        _ => unreachable!("served above"),
    };
    let runner = match Runner::start(config, filters.shard).await {
        Ok(runner) => runner,
        Err(e) => return fail(&e),
    };
    let shutdown = shutdown_on_signals();
    if let Err(e) = runner.check_auth().await {
        return fail(&e);
    }
    let request = SyncRequest {
        command,
        dates,
        practices: filters.practices,
        entities: filters.entities,
        force: filters.force,
        progress: true,
    };
    match runner.sync(&request, shutdown).await {
        Ok(report) => {
            print!("{}", report.summary());
            exit_code(&report)
        }
        Err(e) => fail(&e),
    }
}

fn exit_code(report: &RunReport) -> ExitCode {
    if report.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if report.all_done() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED_PARTITIONS)
    }
}

async fn daemon(config: Config) -> ExitCode {
    let runner = match Runner::start(config, None).await {
        Ok(runner) => Arc::new(runner),
        Err(e) => return fail(&e),
    };
    if let Err(e) = runner.check_auth().await {
        return fail(&e);
    }
    let shutdown = shutdown_on_signals();
    match run_daemon(runner, shutdown.clone()).await {
        Ok(()) if shutdown.is_cancelled() => ExitCode::from(EXIT_INTERRUPTED),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn validate(config: &Config, practice: Option<&str>) -> ExitCode {
    match syncvet_runner::validate(config, practice).await {
        Ok(results) => {
            let mut ok = true;
            for (entity, outcome) in results {
                match outcome {
                    Ok(text) => println!("ok    {entity:<24} {text}"),
                    Err(e) => {
                        ok = false;
                        println!("FAIL  {entity:<24} {e}");
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&e),
    }
}

async fn maintain(tables: &Tables, entities: &[String]) -> ExitCode {
    let tables = match tables.maintain(entities).await {
        Ok(tables) => tables,
        Err(e) => return fail(&e),
    };
    println!(
        "{:<32} {:>5} {:>8} {:>6} {:>10} {:>9}",
        "table", "days", "merged", "into", "checkpoint", "vacuumed"
    );
    let mut failed = false;
    for t in &tables {
        let d = &t.done;
        let checkpoint = d.checkpoint.map_or("-".to_owned(), |v| v.to_string());
        println!(
            "{:<32} {:>5} {:>8} {:>6} {:>10} {:>9}",
            t.table,
            d.compacted.days,
            d.compacted.files_removed,
            d.compacted.files_added,
            checkpoint,
            d.files_vacuumed
        );
        if let Some(e) = &t.error {
            failed = true;
            println!("FAILED {}: {e}", t.table);
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILED_PARTITIONS)
    } else {
        ExitCode::SUCCESS
    }
}

async fn rebuild_current(tables: &Tables, entities: &[String]) -> ExitCode {
    let rebuilt = match tables.rebuild_current(entities).await {
        Ok(rebuilt) => rebuilt,
        Err(e) => return fail(&e),
    };
    println!(
        "{:<28} {:>8} {:>8} {:>12} {:>8}",
        "entity", "sources", "batches", "rows", "version"
    );
    let mut failed = false;
    for r in &rebuilt {
        let d = &r.done;
        let version = d.version.map_or("-".to_owned(), |v| v.to_string());
        println!(
            "{:<28} {:>8} {:>8} {:>12} {:>8}",
            r.entity, d.sources, d.batches, d.rows_written, version
        );
        for e in &d.errors {
            failed = true;
            println!("FAILED {e}");
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILED_PARTITIONS)
    } else {
        ExitCode::SUCCESS
    }
}

async fn report(lake: &Lake, run_id: Option<String>, json: bool) -> ExitCode {
    tracing::debug!(lake = %lake.root_display(), run_id = run_id.as_deref().unwrap_or("(latest)"), "reading a run report");
    let run_id = match run_id {
        Some(id) => id,
        None => match lake.latest_run_id().await {
            Ok(Some(id)) => id,
            Ok(None) => return fail(&RunnerError::NoSuchRun("(none yet)".into())),
            Err(e) => return fail(&RunnerError::from(e)),
        },
    };
    let bytes = match lake.get_run_report(&run_id).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return fail(&RunnerError::NoSuchRun(run_id)),
        Err(e) => return fail(&RunnerError::from(e)),
    };
    if json {
        println!("{}", String::from_utf8_lossy(&bytes));
        return ExitCode::SUCCESS;
    }
    match serde_json::from_slice::<RunReport>(&bytes) {
        Ok(report) => {
            print!("{}", report.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: run report {run_id} is not readable: {e}");
            ExitCode::from(1)
        }
    }
}

/// One line on stderr (the error and its causes), exit 1: the run could
/// not start.
fn fail(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {}", Chain(error));
    ExitCode::from(1)
}

/// The first SIGINT/SIGTERM stops the run cleanly; a second one exits at once.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        for _ in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            if trigger.is_cancelled() {
                tracing::warn!(
                    "second signal: exiting now; nothing half-written is visible in the lake"
                );
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            trigger.cancel();
        }
    });
    token
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = colour_logs(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Whether log lines carry ANSI colour: only on a terminal, since journald,
/// `kubectl logs` and log files show the escape codes as `^[[2m` noise; and
/// never when `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
fn colour_logs(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour_logs;
    use std::ffi::OsStr;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour_logs(true, None));
        assert!(colour_logs(true, Some(OsStr::new(""))));
        assert!(!colour_logs(true, Some(OsStr::new("1"))));
        assert!(!colour_logs(false, None));
        assert!(!colour_logs(false, Some(OsStr::new("1"))));
    }
}
