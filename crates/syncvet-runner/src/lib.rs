//! Plans and runs SyncVet syncs: the part a platform engineer touches.
//!
//! - [`Config`] is the one configuration file (`config` crate: TOML layered
//!   with `SYNCVET_ETL__SECTION__KEY`), checked whole before any work starts.
//! - [`Runner`] (built by whoever composes it: the binary points `[api]`
//!   at the embedded emulator when it serves one) discovers the sources, plans (source × entity × date)
//!   partitions, skips those the lake already has (state lives in the Delta
//!   tables' logs, so a re-run after a crash resumes), and syncs the rest:
//!   `sync.concurrency` sources at once, `sync.entity_concurrency`
//!   partitions per source, every request under the client's one rate
//!   governor (fair across sources). Within a partition the next pages are
//!   fetched while the current one is decoded and written, through a bounded
//!   channel, so memory is bounded by concurrency × (pages in flight + one
//!   row group) whatever the size of a source or a backfill.
//! - Shutdown is a token passed in: once cancelled no partition starts;
//!   in-flight ones get `daemon.shutdown_grace_secs` to commit and are then
//!   abandoned uncommitted (the lake never shows half a partition).
//! - Once its batches are committed, a run maintains the tables it wrote
//!   (current tables merged, the days it landed compacted, vacuum);
//!   [`Tables`] (the catalog and the lake, no API) does it for every day of
//!   every table (`maintain`) and rebuilds current tables.
//! - [`validate`] checks the configuration end to end through the API
//!   without opening the lake.
//! - Every run writes a [`RunReport`] to `_runs/{run_id}.json` in the lake.
//! - [`run_daemon`] adds the cron schedule, catch-up, maintenance after
//!   each sync and `/metrics`.

mod config;
mod daemon;
mod error;
mod job;
mod metrics;
mod plan;
mod report;
mod run;
mod tables;
mod validate;

pub use config::{Config, DaemonConfig, ScheduleConfig, SyncConfig, layer};
pub use daemon::run_daemon;
pub use error::RunnerError;
pub use metrics::Metrics;
pub use plan::{Dates, Shard};
pub use report::{PartitionReport, PartitionStatus, RunMaintenance, RunReport, SourceFailure};
pub use run::{Runner, SyncRequest};
pub use tables::{CurrentRebuilt, TableMaintained, Tables};
pub use validate::validate;
