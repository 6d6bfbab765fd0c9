//! The current tables: the state now of every entity of every source,
//! kept from the history tables.
//!
//! `current/{pims|supplier}/{entity}` holds one row per (source, `id`): the
//! version with the greatest `last_modified` (equal: the later batch date;
//! equal again: a deletion), and no row for a record whose latest version is
//! a deletion. Its columns are the history table's (the source, the
//! entity's columns, the version's `batch_date`, its lineage); it is
//! partitioned by source, so a source's state is its own folder.
//!
//! # Which batches it holds
//!
//! The current table's log holds, for every batch it absorbed, the
//! application transaction `syncvet:{source}:{date}` with the version that
//! batch has in the history table. A batch whose history version it does
//! not hold (new, or re-landed with `--force`) is pending. So the table is
//! a function of the history's batches alone: a crash between a history
//! commit and the merge leaves batches pending, and the next update
//! absorbs them; a batch absorbed twice changes nothing.
//!
//! # How a source is merged
//!
//! Its pending batches are read back from the history table (so the merge
//! needs nothing held from the run) and merged with the source's current
//! rows, in two streaming passes:
//!
//! 1. the key columns (`id`, `last_modified`, `deleted`, the date) of every
//!    input row, as a 40-byte entry with a 128-bit hash of the `id`, sorted;
//!    the last entry of each `id` wins. Memory: 40 bytes per input row
//!    (1M rows: 40 MB) and one read batch.
//! 2. every input again, its winning live rows written into the source's
//!    new files. A current file whose rows all still win is kept as it is;
//!    a history file of at least a row group whose rows all win (a large
//!    first landing or night: a large batch keeps its deletions in a file
//!    of their own) is copied column chunk by column chunk
//!    ([`crate::splice`]), never decoded. Other inputs are read and
//!    filtered on a task of their own while the merge encodes what they
//!    hand over, so the two halves use two cores.
//!
//! All sources' changes of an entity land in one commit, which removes the
//! files replaced and sets the batches' transactions: a reader sees the
//! state before or after, never a mix.
//!
//! The incremental merge (current rows + pending batches) gives the same
//! answer as a merge of every batch only when it cannot miss a deletion it
//! no longer sees. That holds when every pending batch is newer than every
//! batch absorbed, none was absorbed before with another version, and every
//! record it brings back that is not current is at least as recent as the
//! latest deletion absorbed (kept per source as the transaction
//! `syncvet-deleted:{source}`). Otherwise (a backfill behind newer nights,
//! a forced re-run) the source is rebuilt from its whole history, which
//! is the same computation over more input.
//!
//! Written by hand: delta-rs's MERGE needs its `datafusion` feature (a
//! query engine, too heavy for the build budget here), and a keyed
//! last-writer-wins over a change feed is two passes of Arrow kernels.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, Date32Array, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Date32Type, Field, Schema, SchemaRef, TimestampMicrosecondType};
use chrono::{NaiveDate, Utc};
use deltalake::datafile::writer::PartitionWriter;
use deltalake::kernel::{Action, Add, Remove, Transaction};
use deltalake::logstore::parquet_reader::ParquetObjectReader;
use deltalake::protocol::{DeltaOperation, MergePredicate};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::async_reader::{ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder};
use parquet::file::statistics::Statistics;
use syncvet_model::{Chain, SourceType};
use tokio::sync::mpsc;
use twox_hash::XxHash3_128;

use crate::rewrite::conform;
use crate::splice::Splice;
use crate::table::{ActiveFile, BatchId, PARTITION_COLUMN, Partition, Table, View, without_column};
use crate::writer::DELETED_COLUMN;
use crate::{Lake, LakeError};

/// Plans lost to another process's merge before giving up.
const PLAN_ATTEMPTS: u32 = 5;

/// Rows read per step.
const READ_BATCH_ROWS: usize = 8192;

/// The app id prefix of a source's latest absorbed deletion.
const DELETED_PREFIX: &str = "syncvet-deleted:";

/// What an update of a current table did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CurrentUpdate {
    /// Sources whose state changed.
    pub sources: u64,
    /// Of them, rebuilt from their whole history (a batch landed behind
    /// newer ones, or re-landed).
    pub rebuilt: u64,
    /// Batches absorbed.
    pub batches: u64,
    /// Rows written (current rows of the sources merged).
    pub rows_written: u64,
    /// Of them, rows copied with the history files that hold them, column
    /// chunks as they are (every row of the file won).
    #[serde(default)]
    pub rows_copied: u64,
    /// The current table's version that holds the update.
    pub version: Option<u64>,
    /// `source: error` of each source that could not be merged (its
    /// batches stay pending for the next update).
    pub errors: Vec<String>,
}

impl CurrentUpdate {
    /// Adds `other`'s counts (and errors) to these.
    pub fn absorb(&mut self, other: CurrentUpdate) {
        self.sources += other.sources;
        self.rebuilt += other.rebuilt;
        self.batches += other.batches;
        self.rows_written += other.rows_written;
        self.rows_copied += other.rows_copied;
        self.version = self.version.max(other.version);
        self.errors.extend(other.errors);
    }
}

/// One source's part of an update.
struct SourceWork {
    /// Batches to absorb: date → history version.
    pending: BTreeMap<NaiveDate, i64>,
    /// Every batch of the source in the history.
    all: BTreeMap<NaiveDate, i64>,
    incremental: bool,
    /// The latest deletion absorbed (µs), if any.
    deleted_before: Option<i64>,
}

/// What merging one source produced: nothing is visible until committed.
#[derive(Default)]
struct SourceMerged {
    removes: Vec<Remove>,
    adds: Vec<Add>,
    transactions: Vec<Transaction>,
    rows: u64,
    rows_copied: u64,
    batches: u64,
    rebuilt: bool,
}

/// Groups a table's batch transactions by source: source → date → version.
fn batches_by_source(txns: &HashMap<String, i64>) -> BTreeMap<String, BTreeMap<NaiveDate, i64>> {
    let mut out: BTreeMap<String, BTreeMap<NaiveDate, i64>> = BTreeMap::new();
    for (app_id, version) in txns {
        if let Some(b) = BatchId::from_app_id(app_id) {
            out.entry(b.source_id)
                .or_default()
                .insert(b.batch_date, *version);
        }
    }
    out
}

/// The sources to merge, and how.
fn plan(history: &View, current: &View, rebuild: bool) -> BTreeMap<String, SourceWork> {
    let absorbed = batches_by_source(&current.txns);
    let empty = BTreeMap::new();
    let mut work = BTreeMap::new();
    for (source, all) in batches_by_source(&history.txns) {
        let had = absorbed.get(&source).unwrap_or(&empty);
        let pending: BTreeMap<NaiveDate, i64> = all
            .iter()
            .filter(|(date, version)| rebuild || had.get(date) != Some(version))
            .map(|(d, v)| (*d, *v))
            .collect();
        if pending.is_empty() {
            continue;
        }
        let newest_absorbed = had.keys().next_back();
        let incremental = !rebuild
            && pending.keys().all(|d| !had.contains_key(d))
            && newest_absorbed.is_none_or(|newest| pending.keys().all(|d| d > newest));
        let deleted_before = current
            .txns
            .get(&format!("{DELETED_PREFIX}{source}"))
            .copied();
        work.insert(
            source,
            SourceWork {
                pending,
                all,
                incremental,
                deleted_before,
            },
        );
    }
    work
}

/// Brings the current table of an entity up to its history table: every
/// pending batch absorbed (every batch, rebuilding each source, when
/// `rebuild`), in one commit.
pub(crate) async fn update(
    lake: &Lake,
    source_type: SourceType,
    entity: &str,
    rebuild: bool,
) -> Result<CurrentUpdate, LakeError> {
    let history = lake.history(source_type, entity);
    let current = lake.current(source_type, entity);
    let column = source_type.partition_column();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let hist = history.view().await?;
        let Some(schema) = hist.schema.clone() else {
            return Ok(CurrentUpdate::default());
        };
        let cur = current.prepare(&schema).await?;
        let work = plan(&hist, &cur, rebuild);
        // A rebuild also empties the partitions of sources the history no
        // longer has.
        let mut gone: Vec<Remove> = Vec::new();
        if rebuild {
            let sources = batches_by_source(&hist.txns);
            for file in &cur.files {
                if !sources.contains_key(&file.sources.0) {
                    gone.push(file.remove.clone());
                }
            }
        }
        if work.is_empty() && gone.is_empty() {
            return Ok(CurrentUpdate::default());
        }
        let file_schema = without_column(&schema, column);
        let mut round = Round {
            actions: gone.into_iter().map(Action::Remove).collect(),
            ..Round::default()
        };
        for (source, work) in &work {
            let merge = Merge {
                history: &history,
                current: &current,
                hist: &hist,
                cur: &cur,
                column,
                source,
                file_schema: &file_schema,
            };
            let merged = match merge.run(work, work.incremental).await {
                Ok(Some(merged)) => Ok(merged),
                Ok(None) => merge.run(work, false).await.map(|m| m.unwrap_or_default()),
                Err(e) => Err(e),
            };
            match merged {
                Ok(merged) => round.absorb(column, source, merged),
                Err(e) => {
                    tracing::warn!(table = %current.name, source, error = %Chain(&e), "could not merge a source into the current table; its batches stay pending");
                    round
                        .update
                        .errors
                        .push(format!("{}: {source}: {}", current.name, Chain(&e)));
                }
            }
        }
        let Round {
            mut update,
            actions,
            transactions,
            written,
            partitions,
            audit,
        } = round;
        if actions.is_empty() && transactions.is_empty() {
            return Ok(update);
        }
        let mut info = serde_json::Map::new();
        info.insert("syncvet.current".into(), audit.into());
        let operation = merge_operation(column);
        match current
            .commit_planned(&cur, &partitions, actions, transactions, operation, info)
            .await
        {
            Ok(Some(version)) => {
                tracing::info!(table = %current.name, sources = update.sources, rebuilt = update.rebuilt, batches = update.batches, version, "updated the current table");
                update.version = Some(version);
                return Ok(update);
            }
            Ok(None) if attempt < PLAN_ATTEMPTS => {
                tracing::info!(table = %current.name, attempt, "another process changed the current table meanwhile; planning again");
                current.delete_uncommitted(&written).await;
            }
            Ok(None) => {
                current.delete_uncommitted(&written).await;
                return Err(LakeError::CommitConflict {
                    partition: current.name.clone(),
                });
            }
            Err(e) => {
                current.delete_uncommitted(&written).await;
                return Err(e);
            }
        }
    }
}

/// What one planning round of [`update`] merged, to commit as one.
#[derive(Default)]
struct Round {
    update: CurrentUpdate,
    actions: Vec<Action>,
    transactions: Vec<Transaction>,
    /// The files written, deleted again if the commit does not happen.
    written: Vec<Add>,
    partitions: BTreeSet<Partition>,
    /// Per source: batches, rebuilt, rows written (the commit's info).
    audit: serde_json::Map<String, serde_json::Value>,
}

impl Round {
    fn absorb(&mut self, column: &'static str, source: &str, merged: SourceMerged) {
        self.partitions.insert(Partition::Source {
            column,
            id: source.to_owned(),
        });
        self.update.sources += 1;
        self.update.rebuilt += u64::from(merged.rebuilt);
        self.update.batches += merged.batches;
        self.update.rows_written += merged.rows;
        self.update.rows_copied += merged.rows_copied;
        self.audit.insert(
            source.to_owned(),
            serde_json::json!({
                "batches": merged.batches,
                "rebuilt": merged.rebuilt,
                "rows_written": merged.rows,
                "rows_copied": merged.rows_copied,
            }),
        );
        self.actions
            .extend(merged.removes.into_iter().map(Action::Remove));
        self.actions
            .extend(merged.adds.iter().cloned().map(Action::Add));
        self.written.extend(merged.adds);
        self.transactions.extend(merged.transactions);
    }
}

/// The operation a current table's commit records: a merge on (source,
/// `id`), the latest `lastModified` (then batch date) winning.
fn merge_operation(column: &str) -> DeltaOperation {
    DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some(format!("{column}, id: latest last_modified, batch_date")),
        matched_predicates: vec![MergePredicate {
            action_type: "update".into(),
            predicate: None,
        }],
        not_matched_predicates: vec![MergePredicate {
            action_type: "insert".into(),
            predicate: None,
        }],
        not_matched_by_source_predicates: Vec::new(),
    }
}

/// Pass 1 of a merge: which rows of each input win.
struct Winners {
    /// Per input, a bit per row.
    keep: Vec<Vec<u64>>,
    /// Per input, the rows kept.
    kept: Vec<u32>,
    /// The latest `lastModified` of a deletion absorbed so far.
    deleted_before: Option<i64>,
}

/// Where an input's rows come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A file of the source's current partition.
    Current,
    /// A history file of that day (which may hold other sources' rows).
    History(NaiveDate),
}

/// One file read by a merge.
struct Input<'a> {
    file: &'a ActiveFile,
    origin: Origin,
    /// Rows of other sources must be skipped.
    shared: bool,
}

/// One version of a record, as pass 1 sorts them: 40 bytes.
#[derive(Clone, Copy)]
struct Version {
    key: [u64; 2],
    last_modified: i64,
    date: i32,
    row: u32,
    input: u32,
    deleted: bool,
}

impl Version {
    fn order(&self) -> (&[u64; 2], i64, i32, bool, u32, u32) {
        (
            &self.key,
            self.last_modified,
            self.date,
            self.deleted,
            self.input,
            self.row,
        )
    }
}

fn id_key(id: &str) -> [u64; 2] {
    let h = XxHash3_128::oneshot(id.as_bytes());
    [(h >> 64) as u64, h as u64]
}

pub(crate) fn days(date: NaiveDate) -> i32 {
    (date - chrono::DateTime::UNIX_EPOCH.date_naive()).num_days() as i32
}

/// One source's merge.
struct Merge<'a> {
    history: &'a Table,
    current: &'a Table,
    hist: &'a View,
    cur: &'a View,
    column: &'static str,
    source: &'a str,
    file_schema: &'a SchemaRef,
}

impl Merge<'_> {
    fn corrupt(&self, table: &Table, reason: String) -> LakeError {
        LakeError::CorruptLog {
            table: table.name.clone(),
            reason,
        }
    }

    fn table(&self, origin: Origin) -> &Table {
        match origin {
            Origin::Current => self.current,
            Origin::History(_) => self.history,
        }
    }

    /// The files to read: the source's current files and its pending
    /// batches' history files (incremental), or every history file of
    /// its batches (rebuild).
    fn inputs(&self, work: &SourceWork, incremental: bool) -> Vec<Input<'_>> {
        let mut inputs = Vec::new();
        let partition = Partition::Source {
            column: self.column,
            id: self.source.to_owned(),
        };
        if incremental {
            inputs.extend(
                self.cur
                    .files
                    .iter()
                    .filter(|f| f.partition == partition)
                    .map(|file| Input {
                        file,
                        origin: Origin::Current,
                        shared: false,
                    }),
            );
        }
        let dates = if incremental {
            &work.pending
        } else {
            &work.all
        };
        for file in &self.hist.files {
            let Some(date) = file.partition.day() else {
                continue;
            };
            if dates.contains_key(&date) && file.may_hold(self.source) {
                inputs.push(Input {
                    file,
                    origin: Origin::History(date),
                    shared: !file.only(self.source),
                });
            }
        }
        inputs.sort_by_key(|i| match i.origin {
            Origin::Current => (0, NaiveDate::MIN),
            Origin::History(d) => (1, d),
        });
        inputs
    }

    /// A reader of an input: the row groups that may hold the source, the
    /// columns `names` (all when `None`).
    async fn open(
        &self,
        input: &Input<'_>,
        names: Option<&[&str]>,
    ) -> Result<ParquetRecordBatchStream<ParquetObjectReader>, LakeError> {
        let table = self.table(input.origin);
        let store: Arc<dyn ObjectStore> = table.file_store();
        let reader = ParquetObjectReader::new(store, Path::from(input.file.old.path.as_str()))
            .with_file_size(input.file.old.size);
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let mut builder = builder.with_batch_size(READ_BATCH_ROWS);
        if input.shared {
            let parquet = builder.metadata().file_metadata().schema_descr();
            let leaf = parquet
                .columns()
                .iter()
                .position(|c| c.path().string() == self.column);
            let groups: Vec<usize> = (0..builder.metadata().num_row_groups())
                .filter(|&g| {
                    let stats =
                        leaf.and_then(|l| builder.metadata().row_group(g).column(l).statistics());
                    match stats {
                        Some(Statistics::ByteArray(s)) => match (s.min_opt(), s.max_opt()) {
                            (Some(min), Some(max)) => {
                                min.data() <= self.source.as_bytes()
                                    && self.source.as_bytes() <= max.data()
                            }
                            _ => true,
                        },
                        _ => true,
                    }
                })
                .collect();
            builder = builder.with_row_groups(groups);
        }
        if let Some(names) = names {
            let arrow = builder.schema().clone();
            let mut roots = Vec::new();
            for name in names {
                let at = arrow.index_of(name).map_err(|_| {
                    self.corrupt(
                        table,
                        format!("file {} has no column {name}", input.file.old.path),
                    )
                })?;
                roots.push(at);
            }
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            builder = builder.with_projection(mask);
        }
        Ok(builder.build()?)
    }

    /// Which rows of a read batch are the source's.
    fn source_rows(&self, input: &Input<'_>, batch: &RecordBatch) -> Option<BooleanArray> {
        if !input.shared {
            return None;
        }
        let column = batch.column_by_name(self.column)?.as_string_opt::<i32>()?;
        Some(
            (0..column.len())
                .map(|i| Some(column.is_valid(i) && column.value(i) == self.source))
                .collect(),
        )
    }

    /// Pass 1: every version of the inputs, and each input's row count.
    async fn versions(&self, inputs: &[Input<'_>]) -> Result<(Vec<Version>, Vec<u32>), LakeError> {
        let reserve: u64 = inputs
            .iter()
            .filter(|i| !i.shared)
            .filter_map(|i| i.file.rows)
            .sum();
        let mut versions = Vec::with_capacity(reserve as usize);
        let mut counts = Vec::with_capacity(inputs.len());
        for (n, input) in inputs.iter().enumerate() {
            let table = self.table(input.origin);
            let mut names = vec!["id", "last_modified", DELETED_COLUMN];
            match input.origin {
                Origin::Current => names.push(PARTITION_COLUMN),
                Origin::History(_) if input.shared => names.push(self.column),
                Origin::History(_) => {}
            }
            let mut stream = self.open(input, Some(&names)).await?;
            let mut row: u32 = 0;
            while let Some(batch) = stream.try_next().await? {
                let bad = |what: &str| {
                    self.corrupt(
                        table,
                        format!(
                            "file {}: column {what} has an unexpected type",
                            input.file.old.path
                        ),
                    )
                };
                let ids = batch
                    .column_by_name("id")
                    .and_then(|c| c.as_string_opt::<i32>())
                    .ok_or_else(|| bad("id"))?;
                let modified = batch
                    .column_by_name("last_modified")
                    .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
                    .ok_or_else(|| bad("last_modified"))?;
                let deleted = batch
                    .column_by_name(DELETED_COLUMN)
                    .and_then(|c| c.as_boolean_opt())
                    .ok_or_else(|| bad(DELETED_COLUMN))?;
                let dates = match input.origin {
                    Origin::Current => Some(
                        batch
                            .column_by_name(PARTITION_COLUMN)
                            .and_then(|c| c.as_primitive_opt::<Date32Type>())
                            .ok_or_else(|| bad(PARTITION_COLUMN))?,
                    ),
                    Origin::History(_) => None,
                };
                let mine = self.source_rows(input, &batch);
                for i in 0..batch.num_rows() {
                    let r = row + i as u32;
                    if mine.as_ref().is_some_and(|m| !m.value(i)) || ids.is_null(i) {
                        continue;
                    }
                    let date = match (input.origin, dates) {
                        (_, Some(d)) => d.value(i),
                        (Origin::History(d), None) => days(d),
                        (Origin::Current, None) => unreachable!("read above"),
                    };
                    versions.push(Version {
                        key: id_key(ids.value(i)),
                        last_modified: modified.value(i),
                        date,
                        row: r,
                        input: n as u32,
                        deleted: deleted.is_valid(i) && deleted.value(i),
                    });
                }
                row += batch.num_rows() as u32;
            }
            counts.push(row);
        }
        Ok((versions, counts))
    }

    /// Merges the source; `None` when the incremental merge cannot be sure
    /// of the answer (the caller rebuilds).
    async fn run(
        &self,
        work: &SourceWork,
        incremental: bool,
    ) -> Result<Option<SourceMerged>, LakeError> {
        let inputs = self.inputs(work, incremental);
        let (mut versions, counts) = self.versions(&inputs).await?;
        versions.sort_unstable_by(|a, b| a.order().cmp(&b.order()));

        let Some(Winners {
            keep,
            kept,
            deleted_before,
        }) = self.winners(work, incremental, &inputs, &versions, &counts)
        else {
            return Ok(None);
        };
        drop(versions);

        // Pass 2: the winning rows into the source's new files.
        let mut out = SourceMerged {
            rebuilt: !incremental,
            ..SourceMerged::default()
        };
        if !incremental {
            let partition = Partition::Source {
                column: self.column,
                id: self.source.to_owned(),
            };
            out.removes.extend(
                self.cur
                    .files
                    .iter()
                    .filter(|f| f.partition == partition)
                    .map(|f| f.remove.clone()),
            );
        }
        let mut writer: Option<PartitionWriter> = None;
        let written = self
            .copy_winners(&inputs, &counts, &keep, &kept, &mut out, &mut writer)
            .await;
        match written {
            Ok(()) => {
                if let Some(w) = writer.take() {
                    match w.close().await {
                        Ok(adds) => out.adds.extend(adds),
                        Err(e) => {
                            self.current.delete_uncommitted(&out.adds).await;
                            return Err(self.delta(e));
                        }
                    }
                }
            }
            Err(e) => {
                if let Some(w) = writer.take()
                    && let Err(abort) = w.abort().await
                {
                    tracing::debug!(error = %Chain(&abort), "could not abort a current file's upload");
                }
                self.current.delete_uncommitted(&out.adds).await;
                return Err(e);
            }
        }
        out.transactions = self.absorbed(work, incremental, deleted_before);
        out.batches = work.pending.len() as u64;
        Ok(Some(out))
    }

    /// Pass 1: the last version of each id wins, and a live winner is
    /// kept. `None` when an incremental merge meets a record older than a
    /// deletion it absorbed before: the source must be rebuilt.
    fn winners(
        &self,
        work: &SourceWork,
        incremental: bool,
        inputs: &[Input<'_>],
        versions: &[Version],
        counts: &[u32],
    ) -> Option<Winners> {
        let mut keep: Vec<Vec<u64>> = counts
            .iter()
            .map(|&n| vec![0u64; n.div_ceil(64) as usize])
            .collect();
        let mut kept = vec![0u32; inputs.len()];
        let mut deleted_before = if incremental {
            work.deleted_before
        } else {
            None
        };
        for group in versions.chunk_by(|a, b| a.key == b.key) {
            let winner = group[group.len() - 1];
            if incremental && !winner.deleted {
                let was_current = group
                    .iter()
                    .any(|v| inputs[v.input as usize].origin == Origin::Current);
                if !was_current
                    && work
                        .deleted_before
                        .is_some_and(|t| winner.last_modified < t)
                {
                    tracing::info!(
                        source = self.source,
                        "a record came back older than a deletion absorbed before; rebuilding the source from its history"
                    );
                    return None;
                }
            }
            for v in group.iter().filter(|v| v.deleted) {
                deleted_before = deleted_before.max(Some(v.last_modified));
            }
            if !winner.deleted {
                let bits = &mut keep[winner.input as usize];
                bits[(winner.row / 64) as usize] |= 1 << (winner.row % 64);
                kept[winner.input as usize] += 1;
            }
        }
        Some(Winners {
            keep,
            kept,
            deleted_before,
        })
    }

    /// The transactions that record what the merge absorbed: each batch's
    /// version, and the latest deletion seen.
    fn absorbed(
        &self,
        work: &SourceWork,
        incremental: bool,
        deleted_before: Option<i64>,
    ) -> Vec<Transaction> {
        let now = Utc::now().timestamp_millis();
        let absorbed = if incremental {
            &work.pending
        } else {
            &work.all
        };
        let mut transactions = Vec::new();
        for (date, version) in absorbed {
            let batch = BatchId {
                source_id: self.source.to_owned(),
                batch_date: *date,
            };
            transactions.push(Transaction::new_with_last_update(
                batch.app_id(),
                *version,
                Some(now),
            ));
        }
        if let Some(t) = deleted_before {
            transactions.push(Transaction::new_with_last_update(
                format!("{DELETED_PREFIX}{}", self.source),
                t,
                Some(now),
            ));
        }
        transactions
    }

    fn delta(&self, e: deltalake::DeltaTableError) -> LakeError {
        LakeError::Delta {
            table: self.current.name.clone(),
            source: Box::new(e),
        }
    }

    async fn copy_winners(
        &self,
        inputs: &[Input<'_>],
        counts: &[u32],
        keep: &[Vec<u64>],
        kept: &[u32],
        out: &mut SourceMerged,
        writer: &mut Option<PartitionWriter>,
    ) -> Result<(), LakeError> {
        let partition = Partition::Source {
            column: self.column,
            id: self.source.to_owned(),
        };
        for (n, input) in inputs.iter().enumerate() {
            if input.origin == Origin::Current {
                if kept[n] == counts[n] {
                    // Every row still wins: the file stays as it is.
                    continue;
                }
                out.removes.push(input.file.remove.clone());
            }
            if kept[n] == 0 {
                continue;
            }
            // A large file only: a small one goes with the rest into one
            // new file, or every night would add a file to the source's
            // partition, which nothing compacts.
            if let Origin::History(date) = input.origin
                && kept[n] == counts[n]
                && !input.shared
                && kept[n] as usize >= self.current.settings().row_group_rows()
            {
                let splice = Splice {
                    history: self.history,
                    current: self.current,
                    file: input.file,
                    date,
                    partition: &partition,
                    schema: self.file_schema,
                };
                if let Some(add) = splice.copy().await? {
                    out.rows += u64::from(kept[n]);
                    out.rows_copied += u64::from(kept[n]);
                    out.adds.push(add);
                    continue;
                }
            }
            let stream = self.open(input, None).await?;
            let mut rows_kept = read_kept(
                stream,
                keep[n].clone(),
                input.origin,
                self.file_schema.clone(),
            );
            while let Some(rows) = rows_kept.recv().await {
                let rows = rows?;
                out.rows += rows.num_rows() as u64;
                if writer.is_none() {
                    *writer = Some(
                        self.current
                            .settings()
                            .partition_writer(
                                self.current.file_store(),
                                self.file_schema.clone(),
                                &partition,
                                &rows,
                            )
                            .map_err(|e| self.delta(e))?,
                    );
                }
                let w = writer.as_mut().expect("opened above");
                w.write(&rows).await.map_err(|e| self.delta(e))?;
            }
        }
        Ok(())
    }
}

/// The rows of `stream` that `keep` marks (a bit per row), in the file
/// schema of the current table, read on a task of their own so that
/// decoding an input overlaps with encoding the output (the merge's two
/// halves, about equal in cost, then use two cores). Ends at the first
/// error, which it passes on; stops when the receiver is dropped.
fn read_kept(
    mut stream: ParquetRecordBatchStream<ParquetObjectReader>,
    keep: Vec<u64>,
    origin: Origin,
    schema: SchemaRef,
) -> mpsc::Receiver<Result<RecordBatch, LakeError>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut row = 0usize;
        let read: Result<(), LakeError> = async {
            while let Some(batch) = stream.try_next().await? {
                let mask: BooleanArray = (row..row + batch.num_rows())
                    .map(|r| Some(keep[r / 64] & (1 << (r % 64)) != 0))
                    .collect();
                row += batch.num_rows();
                let rows = filter_record_batch(&batch, &mask)?;
                if rows.num_rows() == 0 {
                    continue;
                }
                let rows = match origin {
                    Origin::Current => rows,
                    Origin::History(date) => with_date(&rows, date)?,
                };
                if tx.send(Ok(conform(&rows, &schema)?)).await.is_err() {
                    break;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = read {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

/// History rows with their day as the `batch_date` column.
fn with_date(rows: &RecordBatch, date: NaiveDate) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut fields: Vec<Field> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(
        PARTITION_COLUMN,
        arrow::datatypes::DataType::Date32,
        false,
    ));
    let mut columns = rows.columns().to_vec();
    columns.push(Arc::new(Date32Array::from_value(
        days(date),
        rows.num_rows(),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
