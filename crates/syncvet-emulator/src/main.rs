//! `syncvet-emulator`: serves the emulated SyncVet Consumer API on loopback.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A faithful, deterministic emulator of the SyncVet Consumer API.
#[derive(Parser)]
#[command(name = "syncvet-emulator", version)]
struct Cli {
    #[command(flatten)]
    args: syncvet_emulator::cli::Args,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // stdout carries only the `listening on` line; logs go to stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = syncvet_emulator::cli::run(cli.args).await {
        eprintln!("syncvet-emulator: {}", syncvet_model::Chain(&error));
        std::process::exit(1);
    }
}
