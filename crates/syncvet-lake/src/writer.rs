//! [`BatchWriter`]: streams one batch into its entity's Delta table and
//! commits it exactly once.

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::compute::{SlicesIterator, filter_record_batch, not};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use chrono::Utc;
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::datafile::writer::{PartitionWriter, PartitionWriterConfig};
use deltalake::kernel::Add;
use indexmap::IndexMap;
use object_store::ObjectStore;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use syncvet_model::{Chain, Entity};

use crate::quarantine::rejects_batch;
use crate::table::{BatchChange, BatchId, PARTITION_COLUMN, Partition, Table};
use crate::{Lake, LakeConfig, LakeError, PartitionKey, RejectedRecord};

/// The lineage columns every row carries: the run that landed it, and when.
pub const RUN_ID_COLUMN: &str = "_run_id";
/// See [`RUN_ID_COLUMN`].
pub const LOADED_AT_COLUMN: &str = "_loaded_at";

/// Every entity's deletion flag (the catalog's common `deleted` key).
pub(crate) const DELETED_COLUMN: &str = "deleted";

/// Deletions a writer holds back at most (see [`BatchWriter`]'s `held`):
/// a few MB of rows.
const HELD_ROWS_MAX: usize = 8192;

/// What a successful commit wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// Data files, relative to the table root.
    pub files: Vec<String>,
    /// Rows in the data files.
    pub rows: u64,
    /// Rows sent to quarantine.
    pub rejected: u64,
    /// Bytes of the data files.
    pub bytes: u64,
    /// The history table's version that holds the batch.
    pub version: u64,
}

pub(crate) fn lineage_fields() -> [Field; 2] {
    [
        Field::new(RUN_ID_COLUMN, DataType::Utf8, false),
        Field::new(
            LOADED_AT_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]
}

/// The columns of a data file: the source key, the entity's columns, the
/// lineage. The batch date is the partition: in the path, not the file.
pub(crate) fn file_schema(source_column: &str, columns: &Schema) -> SchemaRef {
    let mut fields = vec![Field::new(source_column, DataType::Utf8, false)];
    fields.extend(columns.fields().iter().map(|f| f.as_ref().clone()));
    fields.extend(lineage_fields());
    Arc::new(Schema::new(fields))
}

/// The table's columns: [`file_schema`] with the batch date before the lineage.
pub(crate) fn table_schema(file_schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let at = fields.len() - lineage_fields().len();
    fields.insert(at, Field::new(PARTITION_COLUMN, DataType::Date32, false));
    Arc::new(Schema::new(fields))
}

/// How data files are written, by batch writers and rewrites alike.
#[derive(Clone)]
pub(crate) struct FileSettings {
    properties: WriterProperties,
    row_group_rows: usize,
    max_file_bytes: u64,
    upload_concurrency: usize,
}

impl FileSettings {
    pub(crate) fn new(config: &LakeConfig) -> Result<FileSettings, LakeError> {
        let level = ZstdLevel::try_new(config.zstd_level)?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_dictionary_enabled(true)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(config.row_group_rows))
            .build();
        Ok(FileSettings {
            properties,
            row_group_rows: config.row_group_rows,
            max_file_bytes: config.max_file_bytes,
            upload_concurrency: config.upload_concurrency,
        })
    }

    /// How every data file is encoded.
    pub(crate) fn properties(&self) -> &WriterProperties {
        &self.properties
    }

    /// Rows per row group.
    pub(crate) fn row_group_rows(&self) -> usize {
        self.row_group_rows
    }

    /// Files at least this large are left alone by compaction.
    pub(crate) fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// A writer of new files of `schema` into the partition's folder of
    /// the table whose root `store` is, for rows that start with `first`:
    /// the columns that are [`nearly_distinct`] there are written without
    /// a dictionary.
    pub(crate) fn partition_writer(
        &self,
        store: Arc<dyn ObjectStore>,
        schema: SchemaRef,
        partition: &Partition,
        first: &RecordBatch,
    ) -> Result<PartitionWriter, deltalake::DeltaTableError> {
        let partition = IndexMap::from([(partition.column().to_owned(), partition.scalar())]);
        let properties = nearly_distinct(first)
            .into_iter()
            .fold(self.properties.clone().into_builder(), |p, column| {
                p.set_column_dictionary_enabled(ColumnPath::from(column), false)
            });
        let properties = text_columns(&schema)
            .fold(properties, |p, column| {
                p.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None)
            })
            .build();
        let writer_config = PartitionWriterConfig::try_new(
            schema,
            partition,
            Some(properties),
            NonZeroU64::new(self.max_file_bytes),
            None,
            Some(self.upload_concurrency),
            None,
        )?;
        PartitionWriter::try_with_config(
            store,
            writer_config,
            DataSkippingNumIndexedCols::NumColumns(32),
            None,
        )
    }
}

/// The string columns that get no statistics: every one but the keys and
/// references (`id`, `…_id`). A file's range of names, addresses or notes
/// spans nearly the alphabet, so no reader skips a file by it, and its
/// min and max cost a comparison of every value (2.4% of a sync's CPU);
/// an id carries its record's date (`pat-20261127-…`), so a file's range
/// of ids is narrow, and the source column's range says whose rows a
/// history file holds.
fn text_columns(schema: &Schema) -> impl Iterator<Item = String> + '_ {
    schema
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        })
        .map(|f| f.name())
        .filter(|name| *name != "id" && !name.ends_with("_id"))
        .cloned()
}

/// Below this many values a sample says too little about a column.
const DISTINCT_SAMPLE_MIN: usize = 100;

/// The columns of `sample` (a file's first rows) whose non-null values are
/// at least 90% distinct: ids, codes, exact times and measures. parquet-rs
/// dictionary-encodes a column until its dictionary page is full (1 MiB)
/// and only then falls back to plain encoding, so on such a column it
/// would hash and intern most of every row group for a dictionary that
/// saves nothing: a fifth of a sync's CPU before this choice. Deciding
/// from the data, not from names, holds for a user's catalog and a real
/// practice's values alike; list and struct columns keep the dictionary.
fn nearly_distinct(sample: &RecordBatch) -> Vec<String> {
    let schema = sample.schema();
    schema
        .fields()
        .iter()
        .zip(sample.columns())
        .filter(|(field, column)| {
            !field.data_type().is_nested() && {
                let values = column.len() - column.null_count();
                values >= DISTINCT_SAMPLE_MIN && distinct_values(column) * 10 >= values * 9
            }
        })
        .map(|(field, _)| field.name().clone())
        .collect()
}

/// How many distinct non-null values `column` holds, compared by their
/// row-format bytes (exact for every type the catalog has).
fn distinct_values(column: &ArrayRef) -> usize {
    let Ok(converter) = RowConverter::new(vec![SortField::new(column.data_type().clone())]) else {
        return 0;
    };
    let Ok(rows) = converter.convert_columns(std::slice::from_ref(column)) else {
        return 0;
    };
    (0..rows.num_rows())
        .filter(|&i| column.is_valid(i))
        .map(|i| rows.row(i))
        .collect::<HashSet<_>>()
        .len()
}

/// One table's side of a batch: the table and its file schema.
#[derive(Clone)]
struct Side {
    table: Arc<Table>,
    schema: SchemaRef,
}

impl Side {
    fn open(&self, batch: &BatchId, first: &RecordBatch) -> Result<PartitionWriter, LakeError> {
        let table = &self.table;
        table
            .settings()
            .partition_writer(
                table.file_store(),
                self.schema.clone(),
                &Partition::Day(batch.batch_date),
                first,
            )
            .map_err(|e| self.table_error(e))
    }

    fn table_error(&self, e: deltalake::DeltaTableError) -> LakeError {
        LakeError::Delta {
            table: self.table.name.clone(),
            source: Box::new(e),
        }
    }

    async fn write(
        &self,
        slot: &mut Option<PartitionWriter>,
        batch: &BatchId,
        rows: &RecordBatch,
    ) -> Result<(), LakeError> {
        self.write_sampled(slot, batch, rows, rows).await
    }

    /// [`Side::write`], the file (when this opens it) encoded as `sample`
    /// says ([`nearly_distinct`]): a whole page when `rows` is a slice of it.
    async fn write_sampled(
        &self,
        slot: &mut Option<PartitionWriter>,
        batch: &BatchId,
        rows: &RecordBatch,
        sample: &RecordBatch,
    ) -> Result<(), LakeError> {
        if slot.is_none() {
            *slot = Some(self.open(batch, sample)?);
        }
        let writer = slot.as_mut().expect("opened above");
        writer.write(rows).await.map_err(|e| self.table_error(e))
    }

    /// Closes the files; their add actions (with statistics) are returned.
    async fn close(&self, slot: &mut Option<PartitionWriter>) -> Result<Vec<Add>, LakeError> {
        match slot.take() {
            Some(w) => w.close().await.map_err(|e| self.table_error(e)),
            None => Ok(Vec::new()),
        }
    }

    async fn abort(&self, slot: &mut Option<PartitionWriter>) {
        if let Some(w) = slot.take()
            && let Err(e) = w.abort().await
        {
            tracing::debug!(table = %self.table.name, error = %Chain(&e), "could not abort a file upload");
        }
    }
}

/// What a batch is written to; shared by reference across awaits, so it
/// is `Sync` (the Parquet encoders in [`BatchWriter`] are not).
#[derive(Clone)]
struct BatchSink {
    lake: Lake,
    entity: Arc<Entity>,
    key: PartitionKey,
    batch: BatchId,
    run_id: String,
    loaded_at: i64,
    data: Side,
    quarantine: Side,
}

/// Writes one batch. Files are written to the table folder as they fill,
/// but no reader sees them until [`BatchWriter::commit`] adds them to the
/// log; dropping or aborting the writer commits nothing.
pub struct BatchWriter {
    t: BatchSink,
    /// The records' files.
    data: Option<PartitionWriter>,
    /// The deletions of a large batch, in files of their own: then a file
    /// of live records whose rows all win is copied into the current table
    /// as it is ([`crate::splice`]), not decoded and encoded again.
    tombstones: Option<PartitionWriter>,
    /// Deletions held back until the batch is known to be large (then
    /// they go to `tombstones`) or ends small (then they end its one file:
    /// a small batch gains nothing from the copy, and a second file per
    /// night would double a fleet's small files).
    held: Vec<RecordBatch>,
    held_rows: usize,
    live_rows: usize,
    quarantine: Option<PartitionWriter>,
    /// The batch's transaction versions (history, quarantine) when the
    /// writer started: a commit by another writer since then is a
    /// conflict, not silently replaced.
    seen: Option<Seen>,
    rows: u64,
    rejected: u64,
}

impl std::fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter")
            .field("batch", &self.t.key.path())
            .field("run_id", &self.t.run_id)
            .field("rows", &self.rows)
            .field("rejected", &self.rejected)
            .finish()
    }
}

impl BatchWriter {
    pub(crate) fn new(lake: Lake, entity: Arc<Entity>, key: PartitionKey, run_id: &str) -> Self {
        let source_column = key.source.partition_column();
        let data = Side {
            table: lake.history(key.source, &key.entity),
            schema: file_schema(source_column, &entity.arrow_schema()),
        };
        let quarantine = Side {
            table: lake.quarantine(&key.entity),
            schema: crate::quarantine::file_schema(),
        };
        BatchWriter {
            t: BatchSink {
                batch: BatchId {
                    source_id: key.source_id.clone(),
                    batch_date: key.batch_date,
                },
                lake,
                entity,
                key,
                run_id: run_id.to_owned(),
                loaded_at: Utc::now().timestamp_micros(),
                data,
                quarantine,
            },
            data: None,
            tombstones: None,
            held: Vec::new(),
            held_rows: 0,
            live_rows: 0,
            quarantine: None,
            seen: None,
            rows: 0,
            rejected: 0,
        }
    }

    /// The batch being written.
    pub fn key(&self) -> &PartitionKey {
        &self.t.key
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    async fn start(&mut self) -> Result<Seen, LakeError> {
        if let Some(seen) = self.seen {
            return Ok(seen);
        }
        let data = &self.t.data;
        data.table.check_schema(&table_schema(&data.schema)).await?;
        let seen = Seen {
            data: self.t.data.table.batch_version(&self.t.batch).await?,
            quarantine: self.t.quarantine.table.batch_version(&self.t.batch).await?,
        };
        self.seen = Some(seen);
        Ok(seen)
    }

    /// Appends records of the entity's schema to the batch.
    pub async fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), LakeError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.start().await?;
        let t = &self.t;
        let mismatch = |e: arrow::error::ArrowError| LakeError::SchemaMismatch {
            partition: t.key.path(),
            reason: e.to_string(),
        };
        let n = batch.num_rows();
        let expected = t.entity.arrow_schema();
        if batch.num_columns() != expected.fields().len() {
            return Err(mismatch(arrow::error::ArrowError::SchemaError(format!(
                "{} columns, the entity has {}",
                batch.num_columns(),
                expected.fields().len()
            ))));
        }
        // Same columns but, say, a non-null column declared nullable: the
        // file schema re-labels it (checking the data) rather than fail.
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(t.key.source_id.as_str(), n),
        ))];
        columns.extend(batch.columns().iter().cloned());
        columns.extend(t.lineage(n));
        let rows = RecordBatch::try_new(t.data.schema.clone(), columns).map_err(mismatch)?;
        let deleted = rows
            .column_by_name(DELETED_COLUMN)
            .and_then(|c| c.as_boolean_opt())
            .filter(|d| d.true_count() > 0);
        match deleted {
            None => {
                t.data.write(&mut self.data, &t.batch, &rows).await?;
                self.live_rows += n;
            }
            Some(deleted) => {
                // The live rows as slices of the page between its
                // deletions (a copy of every column by a filter cost more
                // than the rest of the split).
                for (start, end) in SlicesIterator::new(&not(deleted)?) {
                    let live = rows.slice(start, end - start);
                    t.data
                        .write_sampled(&mut self.data, &t.batch, &live, &rows)
                        .await?;
                    self.live_rows += end - start;
                }
                let gone = filter_record_batch(&rows, deleted)?;
                self.held_rows += gone.num_rows();
                self.held.push(gone);
            }
        }
        if self.held_rows > HELD_ROWS_MAX
            || self.live_rows >= t.data.table.settings().row_group_rows()
        {
            for gone in std::mem::take(&mut self.held) {
                t.data.write(&mut self.tombstones, &t.batch, &gone).await?;
            }
            self.held_rows = 0;
        }
        self.rows += n as u64;
        Ok(())
    }

    /// Appends rejected records to the batch's quarantine.
    pub async fn write_rejects<R: RejectedRecord>(
        &mut self,
        rejects: &[R],
    ) -> Result<(), LakeError> {
        if rejects.is_empty() {
            return Ok(());
        }
        self.start().await?;
        let t = &self.t;
        let rows = rejects_batch(
            rejects,
            &t.key,
            t.lineage(rejects.len()),
            &t.quarantine.schema,
        )?;
        t.quarantine
            .write(&mut self.quarantine, &t.batch, &rows)
            .await?;
        self.rejected += rejects.len() as u64;
        Ok(())
    }

    /// Drops everything written so far (the upstream continuation expired
    /// and the batch is read again from the start).
    pub async fn restart(&mut self) -> Result<(), LakeError> {
        self.discard().await;
        self.rows = 0;
        self.rejected = 0;
        Ok(())
    }

    async fn discard(&mut self) {
        self.t.data.abort(&mut self.data).await;
        self.t.data.abort(&mut self.tombstones).await;
        self.held.clear();
        self.held_rows = 0;
        self.live_rows = 0;
        self.t.quarantine.abort(&mut self.quarantine).await;
    }

    /// Discards the batch: nothing written becomes visible.
    pub async fn abort(mut self) {
        self.discard().await;
    }

    /// Reconciles and closes the files: the batch is then ready to commit
    /// (alone, or in a group with others through [`Lake::commit`]). Its
    /// files are complete but in no commit, so no reader sees them.
    pub async fn stage(mut self, source_total: Option<u64>) -> Result<StagedBatch, LakeError> {
        if let Some(expected) = source_total
            && expected != self.rows + self.rejected
        {
            self.discard().await;
            return Err(LakeError::Reconciliation {
                partition: self.t.key.path(),
                expected,
                written: self.rows,
                rejected: self.rejected,
            });
        }
        let seen = match self.start().await {
            Ok(seen) => seen,
            Err(e) => {
                self.discard().await;
                return Err(e);
            }
        };
        for gone in std::mem::take(&mut self.held) {
            if let Err(e) = self
                .t
                .data
                .write(&mut self.data, &self.t.batch, &gone)
                .await
            {
                self.discard().await;
                return Err(e);
            }
        }
        let data = self.t.data.close(&mut self.data).await;
        let tombstones = self.t.data.close(&mut self.tombstones).await;
        let quarantine = self.t.quarantine.close(&mut self.quarantine).await;
        let (data, quarantine) = match (data, tombstones, quarantine) {
            (Ok(mut d), Ok(t), Ok(q)) => {
                d.extend(t);
                (d, q)
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                self.discard().await;
                return Err(e);
            }
        };
        Ok(StagedBatch {
            t: self.t.clone(),
            data,
            quarantine,
            rows: self.rows,
            rejected: self.rejected,
            source_total,
            seen,
        })
    }

    /// [`BatchWriter::stage`], then [`Lake::commit`] of this batch alone.
    pub async fn commit(self, source_total: Option<u64>) -> Result<CommitSummary, LakeError> {
        let lake = self.t.lake.clone();
        let staged = self.stage(source_total).await?;
        lake.commit(vec![staged])
            .await
            .pop()
            .expect("one result per batch")
    }
}

/// A batch written, reconciled and closed, not yet committed.
pub struct StagedBatch {
    t: BatchSink,
    data: Vec<Add>,
    quarantine: Vec<Add>,
    rows: u64,
    rejected: u64,
    source_total: Option<u64>,
    seen: Seen,
}

/// A batch's transaction versions in its two tables (`None`: not there).
#[derive(Debug, Clone, Copy)]
struct Seen {
    data: Option<i64>,
    quarantine: Option<i64>,
}

impl std::fmt::Debug for StagedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedBatch")
            .field("batch", &self.t.key.path())
            .field("files", &self.data.len())
            .field("rows", &self.rows)
            .field("rejected", &self.rejected)
            .finish()
    }
}

impl StagedBatch {
    /// The batch.
    pub fn key(&self) -> &PartitionKey {
        &self.t.key
    }

    /// Its data files: how many, and their bytes.
    pub fn files(&self) -> (u64, u64) {
        (
            self.data.len() as u64,
            self.data.iter().map(|a| a.size as u64).sum(),
        )
    }

    fn summary(&self, version: u64) -> CommitSummary {
        CommitSummary {
            files: self.data.iter().map(|a| a.path.clone()).collect(),
            rows: self.rows,
            rejected: self.rejected,
            bytes: self.files().1,
            version,
        }
    }

    /// What the commit records of the batch, for audits.
    fn audit(&self) -> serde_json::Value {
        serde_json::json!({
            "batch": self.t.key.path(),
            "run_id": self.t.run_id,
            "rows": self.rows,
            "rejected": self.rejected,
            "source_total": self.source_total,
            "schema_fingerprint": self.t.entity.schema_fingerprint(),
        })
    }

    /// Files no commit refers to are invisible; removed now rather than
    /// left for vacuum. The rejects stay when their commit landed (the
    /// history commit after it failed): the log refers to them.
    async fn remove_files(&self, rejects_committed: bool) {
        self.t.data.table.delete_uncommitted(&self.data).await;
        if !rejects_committed {
            self.t
                .quarantine
                .table
                .delete_uncommitted(&self.quarantine)
                .await;
        }
    }
}

/// Commits staged batches of one history table: their rejects in one
/// quarantine commit, then their records in one history commit.
async fn commit_group(staged: &[StagedBatch]) -> Vec<Result<u64, LakeError>> {
    let Some(first) = staged.first() else {
        return Vec::new();
    };
    let mut results: Vec<Option<Result<u64, LakeError>>> = staged.iter().map(|_| None).collect();
    let mut info = serde_json::Map::new();
    info.insert(
        "syncvet.batches".into(),
        staged.iter().map(StagedBatch::audit).collect(),
    );
    // Rejects first: a crash between the two commits leaves the batches not
    // done, and the re-run replaces the rejects committed here. A batch
    // with no rejects now but some before (a forced re-run) has them
    // removed. A batch another process committed since its writer started
    // is a conflict here already, before any of its files land.
    let quarantine = &first.t.quarantine;
    let batches: Vec<&BatchId> = staged.iter().map(|s| &s.t.batch).collect();
    let mut rejects_committed = vec![false; staged.len()];
    match quarantine.table.latest_batch_versions(&batches).await {
        Err(e) => {
            let failed = quarantine.table.same_error(staged.len(), e);
            results = failed.into_iter().map(Some).collect();
        }
        Ok(latest) => {
            let touched: Vec<usize> = (0..staged.len())
                .filter(|&i| latest[i].is_some() || !staged[i].quarantine.is_empty())
                .collect();
            if !touched.is_empty() {
                let changes: Vec<BatchChange> = touched
                    .iter()
                    .map(|&i| BatchChange {
                        batch: staged[i].t.batch.clone(),
                        adds: staged[i].quarantine.clone(),
                        expected: staged[i].seen.quarantine,
                    })
                    .collect();
                let schema = table_schema(&quarantine.schema);
                let done = quarantine
                    .table
                    .commit_batches(&schema, &changes, info.clone())
                    .await;
                for (&i, result) in touched.iter().zip(done) {
                    match result {
                        Ok(_) => rejects_committed[i] = true,
                        Err(e) => results[i] = Some(Err(e)),
                    }
                }
            }
        }
    }
    let history: Vec<usize> = (0..staged.len())
        .filter(|&i| results[i].is_none())
        .collect();
    if !history.is_empty() {
        let changes: Vec<BatchChange> = history
            .iter()
            .map(|&i| BatchChange {
                batch: staged[i].t.batch.clone(),
                adds: staged[i].data.clone(),
                expected: staged[i].seen.data,
            })
            .collect();
        let data = &first.t.data;
        let schema = table_schema(&data.schema);
        let done = data.table.commit_batches(&schema, &changes, info).await;
        for (&i, result) in history.iter().zip(done) {
            results[i] = Some(result);
        }
    }
    let mut out = Vec::with_capacity(staged.len());
    for ((s, result), rejects_committed) in staged.iter().zip(results).zip(rejects_committed) {
        let result = result.expect("every batch has a result");
        if result.is_err() {
            s.remove_files(rejects_committed).await;
        }
        out.push(result);
    }
    out
}

/// Commits staged batches, one group per history table; the results in
/// the order given.
pub(crate) async fn commit_all(staged: Vec<StagedBatch>) -> Vec<Result<CommitSummary, LakeError>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in staged.iter().enumerate() {
        groups
            .entry(s.t.data.table.name.clone())
            .or_default()
            .push(i);
    }
    let mut results: Vec<Option<Result<CommitSummary, LakeError>>> =
        staged.iter().map(|_| None).collect();
    let mut slots: Vec<Option<StagedBatch>> = staged.into_iter().map(Some).collect();
    for indexes in groups.into_values() {
        let group: Vec<StagedBatch> = indexes
            .iter()
            .map(|&i| slots[i].take().expect("each batch is in one group"))
            .collect();
        let done = commit_group(&group).await;
        for ((&i, s), result) in indexes.iter().zip(&group).zip(done) {
            let result = result.map(|version| s.summary(version));
            if let Ok(summary) = &result {
                tracing::info!(
                    partition = %s.t.key,
                    run_id = %s.t.run_id,
                    rows = summary.rows,
                    rejected = summary.rejected,
                    bytes = summary.bytes,
                    files = summary.files.len(),
                    version = summary.version,
                    "batch committed"
                );
            }
            results[i] = Some(result);
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every batch has a result"))
        .collect()
}

impl BatchSink {
    fn lineage(&self, rows: usize) -> [ArrayRef; 2] {
        [
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                self.run_id.as_str(),
                rows,
            ))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(std::iter::repeat_n(
                    self.loaded_at,
                    rows,
                ))
                .with_timezone("UTC"),
            ),
        ]
    }
}

impl Drop for BatchWriter {
    /// A writer dropped mid-batch (its task aborted) aborts its uploads in
    /// the background.
    fn drop(&mut self) {
        let writers: Vec<PartitionWriter> = self
            .data
            .take()
            .into_iter()
            .chain(self.quarantine.take())
            .collect();
        if writers.is_empty() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for w in writers {
                    let _ = w.abort().await;
                }
            });
        }
    }
}
