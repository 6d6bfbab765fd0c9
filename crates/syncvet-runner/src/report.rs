//! Run reports: `_runs/{run_id}.json` in the lake and the summary table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use syncvet_client::{ClientError, StreamStats};
use syncvet_lake::{Compacted, CurrentUpdate, PartitionKey};
use syncvet_model::Chain;

/// How one partition ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PartitionStatus {
    /// Written and committed: its Delta commit is in the table's log.
    Committed {
        /// Data and quarantine files written.
        files: u64,
        /// Bytes written.
        bytes: u64,
    },
    /// Not committed; the lake holds nothing of this attempt.
    Failed {
        /// What went wrong.
        error: String,
    },
    /// The source refused access (403): the source fails, the others go on.
    Forbidden {
        /// The API's message.
        error: String,
    },
    /// The batch was still not ready (202) at the run deadline.
    NotReady {
        /// What the client said.
        error: String,
    },
    /// Abandoned uncommitted because the process was asked to stop.
    Interrupted,
}

impl PartitionStatus {
    pub(crate) fn from_client_error(error: &ClientError) -> PartitionStatus {
        let text = Chain(error).to_string();
        match error {
            ClientError::Forbidden { .. } => PartitionStatus::Forbidden { error: text },
            ClientError::NotReady { .. } => PartitionStatus::NotReady { error: text },
            _ => PartitionStatus::Failed { error: text },
        }
    }

    /// Whether the partition is in the lake now.
    pub fn is_committed(&self) -> bool {
        matches!(self, PartitionStatus::Committed { .. })
    }

    fn label(&self) -> &'static str {
        match self {
            PartitionStatus::Committed { .. } => "committed",
            PartitionStatus::Failed { .. } => "failed",
            PartitionStatus::Forbidden { .. } => "forbidden",
            PartitionStatus::NotReady { .. } => "not ready",
            PartitionStatus::Interrupted => "interrupted",
        }
    }

    fn error(&self) -> Option<&str> {
        match self {
            PartitionStatus::Failed { error }
            | PartitionStatus::Forbidden { error }
            | PartitionStatus::NotReady { error } => Some(error),
            PartitionStatus::Interrupted => Some("interrupted before commit"),
            PartitionStatus::Committed { .. } => None,
        }
    }
}

/// The counts a partition sync gathers while it reads pages.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionCounts {
    pub pages: u64,
    pub rows: u64,
    pub rejects: u64,
    pub json_bytes: u64,
    pub source_total: Option<u64>,
    pub unknown_keys: BTreeMap<String, u64>,
}

/// One partition of a run, as the report records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionReport {
    /// `pims` or `supplier`.
    pub source_type: String,
    /// The entity.
    pub entity: String,
    /// The practice or supplier id.
    pub source_id: String,
    /// The batch date.
    pub batch_date: NaiveDate,
    /// How it ended (and the error, if any).
    #[serde(flatten)]
    pub status: PartitionStatus,
    /// Rows written.
    pub rows: u64,
    /// Records sent to quarantine.
    pub rejects: u64,
    /// The API's `totalCount`, when it gave one.
    pub source_total: Option<u64>,
    /// Keys not in the catalog (schema drift), with how many records had each.
    pub unknown_keys: BTreeMap<String, u64>,
    /// Pages read.
    pub pages: u64,
    /// HTTP requests sent for this partition (retries and polls included).
    pub requests: u64,
    /// Requests that were retries.
    pub retries: u64,
    /// Answers 429.
    pub rate_limited: u64,
    /// Seconds spent waiting for the rate governor or a Retry-After.
    pub throttled_secs: f64,
    /// Times the upstream made us start the entity again (expired continuation token).
    pub restarts: u64,
    /// Bytes of JSON received.
    pub json_bytes: u64,
    /// Seconds from the first request to the commit.
    pub duration_secs: f64,
}

impl PartitionReport {
    pub(crate) fn new(
        key: PartitionKey,
        status: PartitionStatus,
        elapsed: Duration,
        stream: &StreamStats,
        counts: PartitionCounts,
    ) -> PartitionReport {
        PartitionReport {
            source_type: key.source.as_str().to_owned(),
            entity: key.entity,
            source_id: key.source_id,
            batch_date: key.batch_date,
            status,
            rows: counts.rows,
            rejects: counts.rejects,
            source_total: counts.source_total,
            unknown_keys: counts.unknown_keys,
            pages: counts.pages,
            requests: stream.requests,
            retries: stream.retries,
            rate_limited: stream.rate_limited,
            throttled_secs: stream.throttled.as_secs_f64(),
            restarts: u64::from(stream.restarts),
            json_bytes: counts.json_bytes,
            duration_secs: elapsed.as_secs_f64(),
        }
    }

    /// Data and quarantine files written.
    pub fn files(&self) -> u64 {
        match self.status {
            PartitionStatus::Committed { files, .. } => files,
            _ => 0,
        }
    }

    /// Bytes of Parquet written.
    pub fn bytes(&self) -> u64 {
        match self.status {
            PartitionStatus::Committed { bytes, .. } => bytes,
            _ => 0,
        }
    }
}

/// A source that failed before any of its partitions could run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceFailure {
    /// The source id.
    pub source_id: String,
    /// Why.
    pub error: String,
}

/// Everything one run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Sortable by time: `20261128T020000Z-3f9a1c`.
    pub run_id: String,
    /// `run`, `backfill` or `daemon`.
    pub command: String,
    /// The shard, when the run was one (`0/4`).
    pub shard: Option<String>,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Its length.
    pub duration_secs: f64,
    /// Where it wrote.
    pub lake: String,
    /// Whether it was stopped by a signal.
    pub interrupted: bool,
    /// Partitions skipped because the lake already had them.
    pub skipped: u64,
    /// Sources that failed as a whole.
    pub source_failures: Vec<SourceFailure>,
    /// Every partition that was attempted.
    pub partitions: Vec<PartitionReport>,
    /// The current tables brought up to the history (`current/…`).
    #[serde(default)]
    pub current: CurrentUpdate,
    /// How long the run's merge into the current tables took after its
    /// last group (the merges between groups, in `current` too, overlap
    /// the sync).
    #[serde(default)]
    pub current_secs: f64,
    /// The run's maintenance of the tables it wrote (`lake.maintain_after_run`).
    #[serde(default)]
    pub maintenance: RunMaintenance,
}

impl RunReport {
    /// Partitions that did not commit.
    pub fn failed(&self) -> impl Iterator<Item = &PartitionReport> {
        self.partitions.iter().filter(|p| !p.status.is_committed())
    }

    /// Whether everything planned is now in the lake.
    pub fn all_done(&self) -> bool {
        !self.interrupted
            && self.source_failures.is_empty()
            && self.failed().next().is_none()
            && self.current.errors.is_empty()
    }

    /// The human summary: one line per entity, then every failure.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "run {} ({}), {:.1} s, lake {}",
            self.run_id, self.command, self.duration_secs, self.lake
        );
        self.write_entity_table(&mut out);
        self.write_upkeep(&mut out);
        if self.skipped > 0 {
            let _ = writeln!(
                out,
                "{} partitions skipped: already in the lake (use --force to rewrite)",
                self.skipped
            );
        }
        for s in &self.source_failures {
            let _ = writeln!(out, "FAILED source {}: {}", s.source_id, s.error);
        }
        for p in self.failed() {
            let _ = writeln!(
                out,
                "{} {}/{} {} {}: {}",
                p.status.label().to_uppercase(),
                p.source_type,
                p.entity,
                p.source_id,
                p.batch_date,
                p.status.error().unwrap_or_default()
            );
        }
        if self.interrupted {
            let _ = writeln!(out, "INTERRUPTED: run again to complete the rest");
        }
        out
    }

    /// The partitions' counts, a line per entity and the total.
    fn write_entity_table(&self, out: &mut String) {
        let mut lines: BTreeMap<&str, EntityLine> = BTreeMap::new();
        for p in &self.partitions {
            lines.entry(&p.entity).or_default().add(&EntityLine {
                committed: u64::from(p.status.is_committed()),
                failed: u64::from(!p.status.is_committed()),
                rows: p.rows,
                rejects: p.rejects,
                drift: p.unknown_keys.values().sum::<u64>(),
                bytes: p.bytes(),
            });
        }
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>7} {:>12} {:>9} {:>9} {:>12}",
            "entity", "committed", "failed", "rows", "rejects", "drift", "bytes"
        );
        let mut total = EntityLine::default();
        for (entity, line) in &lines {
            line.write(out, entity);
            total.add(line);
        }
        total.write(out, "total");
    }

    /// The current tables' merge and the maintenance, with their failures.
    fn write_upkeep(&self, out: &mut String) {
        let c = &self.current;
        if c.sources > 0 {
            let _ = writeln!(
                out,
                "current tables: {} sources merged ({} rebuilt from their history), {} batches absorbed, {} rows written ({} copied with their files), in {:.1} s",
                c.sources, c.rebuilt, c.batches, c.rows_written, c.rows_copied, self.current_secs
            );
        }
        for e in &c.errors {
            let _ = writeln!(
                out,
                "CURRENT TABLE FAILED (the history is committed; the next run merges it) {e}"
            );
        }
        let m = &self.maintenance;
        if m.compacted.days > 0 || m.files_vacuumed > 0 {
            let _ = writeln!(
                out,
                "maintenance: {} table days compacted ({} files into {}), {} files vacuumed",
                m.compacted.days,
                m.compacted.files_removed,
                m.compacted.files_added,
                m.files_vacuumed
            );
        }
        for e in &m.errors {
            let _ = writeln!(out, "MAINTENANCE FAILED (the data is committed) {e}");
        }
    }
}

/// One line of the summary's entity table.
#[derive(Default)]
struct EntityLine {
    committed: u64,
    failed: u64,
    rows: u64,
    rejects: u64,
    drift: u64,
    bytes: u64,
}

impl EntityLine {
    fn add(&mut self, other: &EntityLine) {
        self.committed += other.committed;
        self.failed += other.failed;
        self.rows += other.rows;
        self.rejects += other.rejects;
        self.drift += other.drift;
        self.bytes += other.bytes;
    }

    fn write(&self, out: &mut String, name: &str) {
        let _ = writeln!(
            out,
            "{name:<24} {:>9} {:>7} {:>12} {:>9} {:>9} {:>12}",
            self.committed, self.failed, self.rows, self.rejects, self.drift, self.bytes
        );
    }
}

/// What a run's maintenance of the tables it wrote did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMaintenance {
    /// The days it landed, compacted.
    pub compacted: Compacted,
    /// Files vacuum deleted.
    pub files_vacuumed: u64,
    /// Tables whose maintenance failed, with why: their data is whole and
    /// committed; the next run or `syncvet-etl maintain` does it again.
    pub errors: Vec<String>,
}

/// A new run id: UTC time first, so ids sort by time, then a random suffix.
pub fn new_run_id(now: DateTime<Utc>) -> String {
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}
