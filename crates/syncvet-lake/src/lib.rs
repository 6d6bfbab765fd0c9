//! The lake: Parquet partitions on local disk, S3, Azure Blob or GCS,
//! committed exactly once.
//!
//! # Map
//!
//! | module | what |
//! | --- | --- |
//! | `config` | [`LakeConfig`], the `[lake]` section |
//! | `store` | opening the object store named by the URL, retries |
//! | `layout` | [`PartitionKey`] and every path of the lake |
//! | `upload` | a multipart upload whose completion is deferred to the commit |
//! | `files` | a series of size-rotated Parquet files over those uploads |
//! | `quarantine` | rejected records as Parquet (`raw`, `field`, `reason`) |
//! | `writer` | [`PartitionWriter`]: write, reconcile, commit |
//! | `manifest` | [`Manifest`], the `_manifest.json` that makes a partition done |
//! | `lake` | [`Lake`]: open, "which partitions are done", run reports |
//!
//! # Layout
//!
//! ```text
//! {root}/pims/{entity}/practice_id={id}/batch_date={YYYY-MM-DD}/part-00000.parquet …
//! {root}/pims/{entity}/practice_id={id}/batch_date={YYYY-MM-DD}/_manifest.json
//! {root}/supplier/{entity}/supplier_id={id}/batch_date=…/…
//! {root}/_quarantine/{entity}/practice_id=…|supplier_id=…/batch_date=…/part-00000.parquet
//! {root}/_runs/{run_id}.json
//! ```
//!
//! Partition columns live in the path only. Entity names, source ids and run
//! ids must each be one safe path segment ([`PartitionKey::new`] refuses
//! `/`, `\`, `..`, `=`, control characters, …), so nothing is ever written
//! outside the lake root.
//!
//! # Writing
//!
//! Files are Parquet with zstd, dictionary encoding and page statistics,
//! row groups of `row_group_rows`, rotated once a file reaches
//! `max_file_bytes`. Each file is an `AsyncArrowWriter` over a multipart
//! upload whose parts (`part_size_bytes`, at most `upload_concurrency` in
//! flight) are sent as they fill. Memory per writer is therefore one row
//! group plus a few parts, whatever the size of the partition. Measured
//! with `examples/memory.rs` (release, local disk, `patients` rows): peak
//! RSS 45 MiB for 100k rows, 88 MiB for 1M and 87 MiB for 2M (it plateaus
//! once the first row groups are out); about 125k–150k rows/s on one core.
//!
//! # Exactly once per partition
//!
//! A partition is done iff its `_manifest.json` exists, and only the files
//! the manifest lists belong to it.
//!
//! 1. **Write.** Every data and quarantine file is a multipart upload that is
//!    *not completed* while the partition is written. An uncompleted upload
//!    is invisible to readers on S3, Azure and GCS; object_store's local file
//!    system keeps it in a staging file `part-00000.parquet#N` that no
//!    `*.parquet` glob matches (and removes it when the upload is dropped).
//!    A crash or an aborted task mid-partition leaves nothing visible.
//! 2. **Reconcile.** When the source reported a total, rows written + rows
//!    rejected must equal it; otherwise [`LakeError::Reconciliation`] gives
//!    both numbers, the uploads are aborted and nothing is committed.
//! 3. **Claim.** `_commit.claim` is put create-only. If it exists and is
//!    younger than `commit_claim_ttl_secs`, another writer is committing:
//!    [`LakeError::CommitConflict`]. An older claim was left by a crash and
//!    is taken over (conditionally on its ETag where the store can). Under
//!    the claim, the manifest is checked again: if it changed since the
//!    writer started, someone committed meanwhile: conflict. Only the
//!    claim holder ever completes uploads, so racing writers, whose files
//!    have the same deterministic names, cannot overwrite each other's data.
//! 4. **Publish.** Every upload is completed, then `_manifest.json` is written
//!    last: create-only if there was none when the writer started,
//!    otherwise conditional on the ETag/version it saw (`PutMode::Update`).
//!    The local file system cannot update conditionally, so there the
//!    manifest is overwritten and the claim alone serialises committers.
//! 5. **Clean up.** Objects under the partition and its quarantine folder that
//!    the new manifest does not list (files of an earlier, larger run) are
//!    deleted, as are stale local staging files; then the claim is released.
//!
//! What is left open: a crash *during* step 4 on a partition committed
//! before leaves the old manifest beside some new files of the same names
//! (whole files, never half-written ones); the manifest records each file's
//! size, and the re-run (after the claim's TTL) repairs the partition. A
//! crash between claim and release delays the next commit of that
//! partition by at most `commit_claim_ttl_secs`. Incomplete S3/GCS uploads
//! of a killed process are invisible but take space until a bucket
//! lifecycle rule (`AbortIncompleteMultipartUpload`) removes them.
//!
//! # Store faults
//!
//! Every store request is retried by object_store with exponential backoff
//! (connection refused while a server restarts, 5xx, 429, timeouts of
//! idempotent requests) for up to `retry_timeout_secs` (120 s by default),
//! so a store that restarts mid-run does not fail the run.

mod config;
mod error;
mod files;
mod lake;
mod layout;
mod manifest;
mod quarantine;
mod store;
pub mod synthetic;
mod upload;
mod writer;

pub use config::LakeConfig;
pub use error::LakeError;
pub use lake::Lake;
pub use layout::{MANIFEST_FILE, PartitionKey, QUARANTINE_DIR, RUNS_DIR};
pub use manifest::{MANIFEST_FORMAT_VERSION, Manifest, ManifestFile};
pub use quarantine::{RejectedRecord, quarantine_schema};
pub use writer::{CommitSummary, PartitionWriter};
