//! The lake: Delta Lake tables on local disk, S3, Azure Blob or GCS, each
//! batch committed exactly once.
//!
//! # Map
//!
//! | module | what |
//! | --- | --- |
//! | `config` | [`LakeConfig`], the `[lake]` section |
//! | `store` | opening the object store named by the URL, retries |
//! | `layout` | [`PartitionKey`] (a batch) and the names of the lake |
//! | `table` | [`table::Table`]: one Delta table, its done batches, the batch commit, compaction, checkpoints, vacuum |
//! | `evolve` | schema evolution: which catalog changes a table can follow, and how |
//! | `rewrite` | streaming rewrites of data files: compaction, copy-on-write, widened types |
//! | `quarantine` | rejected records, for the quarantine tables |
//! | `writer` | [`BatchWriter`]: write, reconcile, stage; the group commit |
//! | `group` | [`GroupCommitter`]: a run's batches committed in groups, compaction between them |
//! | `current` | the current tables: the latest live version of every record, merged from the history ([`Lake::update_current`]) |
//! | `lake` | [`Lake`]: open, "which batches are done", maintenance, run reports |
//!
//! # Layout
//!
//! ```text
//! {root}/pims/{entity}/                 Delta table: every batch of every practice
//!     _delta_log/…
//!     batch_date=2026-11-27/part-00000-{uuid}-c000.zstd.parquet …
//! {root}/supplier/{entity}/             the same, per supplier
//! {root}/current/pims/{entity}/         Delta table: the current state, one row per (practice, id)
//!     practice_id=p-0001/part-….parquet …
//! {root}/_quarantine/{entity}/          Delta table of the entity's rejected records
//! {root}/_runs/{run_id}.json            run reports
//! ```
//!
//! A history table's columns are the source key (`practice_id` or
//! `supplier_id`), the entity's columns, `batch_date` (the partition
//! column) and the lineage `_run_id` and `_loaded_at`. Every Delta reader
//! (Spark, Fabric, DuckDB, Polars, pandas through `deltalake`) sees them all.
//! Partitioning by day alone keeps a night's batches of every source in one
//! folder per table, so files do not multiply with sources × days.
//! Quarantine tables have `source_id`, `source_type`, `entity`, `batch_date`,
//! `raw`, `field`, `reason` and the lineage.
//!
//! Entity names, source ids and run ids must each be one safe path segment
//! ([`PartitionKey::new`] refuses `/`, `\`, `..`, `=`, control characters, …),
//! so nothing is ever written outside the lake root.
//!
//! # Writing
//!
//! Files are Parquet with zstd, dictionary encoding and page statistics,
//! except that a column whose values are nearly all distinct in a file's
//! first rows (ids, codes, exact times) is written plain: a dictionary
//! there costs hashing every value and saves nothing. Row groups of
//! `row_group_rows`, rotated once a file reaches
//! `max_file_bytes`, written by delta-rs's file writer (multipart uploads
//! of `upload_concurrency` parts in flight; memory is one row group plus
//! those parts, whatever the size of the batch). Each file's add action
//! carries its statistics, so readers skip files by source and column range
//! (every column but text ones other than `id` and `…_id`: a file's range of
//! names skips nothing and costs a comparison of every value).
//! A batch of at least a row group of live records writes its deletions to
//! a file of their own (a smaller one puts them at the end of its one file),
//! so its file of live records can be copied whole into the current table.
//!
//! # Exactly once per batch
//!
//! A batch is done iff the history table's log holds its application
//! transaction `syncvet:{source_id}:{date}`; which batches are done is read
//! from the log, once per run, never from a listing of data files.
//!
//! 1. **Write.** Data and quarantine files go to the table folders under
//!    new, unique names. No reader sees a file the log does not add.
//! 2. **Reconcile.** When the source reported a total, rows written + rows
//!    rejected must equal it; otherwise [`LakeError::Reconciliation`] gives
//!    both numbers and nothing is committed.
//! 3. **Stage.** [`BatchWriter::stage`] closes the files: the batch is
//!    ready to commit, alone or with others ([`Lake::commit`]). A run hands
//!    its staged batches to a [`GroupCommitter`], which commits them in
//!    groups: every `commit_interval_secs` (60 s), every
//!    `commit_group_batches` (1000), and at the end of the run, so the
//!    commits per table in a night follow the night's length, not the
//!    number of sources; a crash loses at most the batches waiting.
//! 4. **Quarantine commit.** One commit of the entity's quarantine table
//!    replaces the rejects of the group's batches that have (or had) some,
//!    and sets their transactions there: a batch another process committed
//!    since its writer started is refused here already.
//! 5. **History commit.** One Delta commit removes the group's batches'
//!    earlier files (a `--force` run, or a batch changed upstream; a
//!    compacted file that also holds other sources' rows is rewritten
//!    without the batch's, in the same commit), adds
//!    the new ones and sets each batch's transaction. A reader sees each
//!    batch whole or not at all. A batch that another process committed
//!    since its writer started is left out of the group with
//!    [`LakeError::CommitConflict`] (two processes share a batch's
//!    transaction id, which delta-rs's conflict check also refuses to
//!    commit twice); the others commit. A commit that lost the race to
//!    another process's commit of other batches is retried on the new
//!    version.
//!
//! A crash between 4 and 5 leaves the batches not done; the re-run
//! replaces the rejects. Files of a crashed or lost commit are in no
//! commit: no reader sees them, and vacuum removes them. Each history
//! commit's `commitInfo` has `syncvet.batches`: per batch its name, run id,
//! rows, rejects, the source's total and the catalog's schema fingerprint.
//!
//! Commits of one table from this process are serialised by a lock, so
//! they never race each other.
//!
//! # Schema evolution
//!
//! A writer whose catalog differs from its table's schema takes the table
//! along at its commit, in a commit of its own before the batch's: new
//! columns are added (nullable), widened types rewrite the table's files
//! in the new types in the same commit as the new schema. A change no
//! reader could follow is refused at the writer's first rows with
//! [`LakeError::TypeChange`], naming the table, the column and both types;
//! a writer that started before another process changed the schema is
//! refused at its commit. The rules are in the `evolve` module.
//!
//! # Maintenance
//!
//! [`Lake::maintain`] (and `syncvet-etl maintain`) keeps the tables fast:
//!
//! - **Compaction**: each day with two or more files under `max_file_bytes`
//!   is rewritten into as few files as that allows, rows ordered by source,
//!   in one commit per day whose actions say `dataChange = false`. If
//!   another process changed the day meanwhile, the day is left for the
//!   next time and the new files are deleted. A run does the same for the
//!   files under `run_compacts_below_bytes` (8 MiB) of the days it
//!   landed, and its [`GroupCommitter`] between groups for days that have
//!   gathered 64 of them; bigger files are left to a full maintenance.
//! - **Checkpoint** of the latest version, so that loading a table (and
//!   the done set) reads one Parquet file and the commits after it.
//! - **Vacuum** (delta-rs, full mode): files no version within
//!   `vacuum_retention_hours` refers to, and files in no commit older
//!   than that (a crashed writer's), are deleted; a writer's files not yet
//!   committed are younger than the retention and stay.
//!
//! # Store faults
//!
//! Every store request is retried by object_store with exponential backoff
//! (connection refused while a server restarts, 5xx, 429, timeouts of
//! idempotent requests) for up to `retry_timeout_secs` (120 s by default),
//! so a store that restarts mid-run does not fail the run.

mod config;
mod current;
mod error;
mod evolve;
mod group;
mod lake;
mod layout;
mod quarantine;
mod rewrite;
mod splice;
mod store;
pub mod synthetic;
pub mod table;
mod writer;

pub use config::LakeConfig;
pub use current::CurrentUpdate;
pub use error::LakeError;
pub use group::{BetweenGroups, GroupCommitter, PendingCommit};
pub use lake::{Lake, TableMaintenance};
pub use layout::{CURRENT_DIR, PartitionKey, QUARANTINE_DIR, RUNS_DIR};
pub use quarantine::RejectedRecord;
pub use table::{BatchId, Compacted, PARTITION_COLUMN};
pub use writer::{BatchWriter, CommitSummary, LOADED_AT_COLUMN, RUN_ID_COLUMN, StagedBatch};
