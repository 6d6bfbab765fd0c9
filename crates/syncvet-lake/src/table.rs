//! [`Table`]: one Delta table of the lake (an entity's history, or its
//! quarantine), opened once per process and shared by every writer of it.
//!
//! A batch (one source's records of one day) is replaced or added by one
//! Delta commit that removes the batch's old files, adds its new ones and
//! sets the application transaction `syncvet:{source_id}:{date}`. The set of
//! those transactions is the set of batches done; it is read from the log
//! (checkpoint, then the commits after it) and kept up to date from each new
//! commit, never from a listing of data files.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, SchemaRef};
use chrono::{NaiveDate, Utc};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, StructField, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, TableProperty};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::Mutex;
use url::Url;

use crate::LakeError;

/// The partition column of every table: one folder per day, so a night's
/// files of hundreds of sources share a folder that compaction can merge.
pub const PARTITION_COLUMN: &str = "batch_date";

/// The `commitInfo` key of a commit's unique id.
const COMMIT_ID: &str = "syncvet.commit_id";

/// Commits lost to another process before giving up on a batch.
const COMMIT_ATTEMPTS: u32 = 30;

/// A batch's identity in a table: the source and the day.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    /// The practice or supplier id.
    pub source_id: String,
    /// The batch date.
    pub batch_date: NaiveDate,
}

impl BatchId {
    /// The application transaction id of the batch: `syncvet:{source_id}:{YYYY-MM-DD}`.
    pub fn app_id(&self) -> String {
        format!("syncvet:{}:{}", self.source_id, self.date_value())
    }

    /// Parses [`BatchId::app_id`] back (the date is the last ten characters;
    /// a source id may itself contain `:`).
    pub fn from_app_id(app_id: &str) -> Option<BatchId> {
        let rest = app_id.strip_prefix("syncvet:")?;
        let (source_id, date) = rest.rsplit_once(':')?;
        let batch_date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        (!source_id.is_empty()).then(|| BatchId {
            source_id: source_id.to_owned(),
            batch_date,
        })
    }

    /// The partition value of the batch date, as Delta writes it.
    pub fn date_value(&self) -> String {
        self.batch_date.format("%Y-%m-%d").to_string()
    }
}

/// What a table holds besides Delta's own state: the application
/// transactions, which delta-rs can only look up one id at a time, each
/// lookup replaying the log.
struct State {
    table: DeltaTable,
    txns: HashMap<String, i64>,
    /// The version `txns` is up to date with.
    txns_version: Option<u64>,
    /// The `syncvet.commit_id` of each commit read since the table was
    /// opened: how a writer whose commit call failed tells whether its
    /// commit landed anyway.
    commit_ids: HashSet<String>,
}

/// One batch's part of a commit.
pub(crate) struct BatchChange {
    pub batch: BatchId,
    /// The batch's new files.
    pub adds: Vec<Add>,
    /// The batch's transaction version in this table when its writer
    /// started (`None`: not there). The commit sets the transaction, and
    /// only if it has not moved meanwhile.
    pub expected: Option<i64>,
}

/// One Delta table. Commits from this process are serialised by a lock, so
/// they never race each other; commits from other processes are retried on
/// the new version.
pub struct Table {
    /// `pims/patients`, `_quarantine/patients`: relative to the lake root.
    pub(crate) name: String,
    url: Url,
    root_store: Arc<dyn ObjectStore>,
    /// The table folder inside `root_store`.
    location: Path,
    /// The column that says which source a row is from (`practice_id`,
    /// `supplier_id`, `source_id`): with the date, a batch's rows.
    pub(crate) source_column: &'static str,
    state: Mutex<Option<State>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).finish()
    }
}

/// A lost race with another process: reload and try again.
fn lost_race(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

impl Table {
    pub(crate) fn new(
        name: String,
        url: Url,
        root_store: Arc<dyn ObjectStore>,
        location: Path,
        source_column: &'static str,
    ) -> Table {
        Table {
            name,
            url,
            root_store,
            location,
            source_column,
            state: Mutex::new(None),
        }
    }

    fn builder(&self) -> Result<DeltaTable, LakeError> {
        DeltaTableBuilder::from_url(self.url.clone())
            .and_then(|b| {
                b.with_storage_backend(self.root_store.clone(), self.url.clone())
                    .build()
            })
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: DeltaTableError) -> LakeError {
        LakeError::Delta {
            table: self.name.clone(),
            source: Box::new(e),
        }
    }

    /// The folder of a table on the local file system, which delta-rs
    /// wants to exist before it opens or creates the table there.
    fn local_folder(&self) -> Option<std::path::PathBuf> {
        (self.url.scheme() == "file")
            .then(|| self.url.to_file_path().ok())
            .flatten()
    }

    /// Loads the table if it exists; `None` if it does not (yet).
    async fn open_existing(&self) -> Result<Option<State>, LakeError> {
        if self.local_folder().is_some_and(|dir| !dir.exists()) {
            return Ok(None);
        }
        let mut table = self.builder()?;
        match table.load().await {
            Ok(()) => {}
            Err(DeltaTableError::NotATable(_)) => {
                self.refuse_old_layout().await?;
                return Ok(None);
            }
            Err(e) => return Err(self.error(e)),
        }
        let mut state = State {
            table,
            txns: HashMap::new(),
            txns_version: None,
            commit_ids: HashSet::new(),
        };
        self.read_txns(&mut state).await?;
        Ok(Some(state))
    }

    /// A folder of the lake's first layout (one folder per source and date,
    /// `_manifest.json` in each) where a table belongs is refused: its files
    /// must never be mixed into a table. One listing, only when the table
    /// does not exist yet.
    async fn refuse_old_layout(&self) -> Result<(), LakeError> {
        let listed = self
            .root_store
            .list_with_delimiter(Some(&self.location))
            .await?;
        let old = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .chain(listed.objects.iter().filter_map(|o| o.location.filename()))
            .find(|name| {
                name.starts_with("practice_id=")
                    || name.starts_with("supplier_id=")
                    || *name == "_manifest.json"
            });
        match old {
            Some(name) => Err(LakeError::OldLayout {
                table: self.name.clone(),
                found: name.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The table, created with `schema` (partitioned by [`PARTITION_COLUMN`])
    /// if it does not exist, its schema evolved if `schema` has new columns.
    async fn ensure<'a>(
        &self,
        guard: &'a mut Option<State>,
        schema: &SchemaRef,
    ) -> Result<&'a mut State, LakeError> {
        if guard.is_none() {
            *guard = self.open_existing().await?;
        }
        if guard.is_none() {
            *guard = Some(self.create(schema).await?);
        }
        let state = guard.as_mut().expect("opened or created above");
        self.evolve(state, schema).await?;
        Ok(state)
    }

    async fn create(&self, schema: &SchemaRef) -> Result<State, LakeError> {
        if let Some(dir) = self.local_folder() {
            std::fs::create_dir_all(&dir).map_err(|source| LakeError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let kernel: StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| self.error(e.into()))?;
        let created = self
            .builder()?
            .create()
            .with_columns(kernel.fields().cloned())
            .with_partition_columns([PARTITION_COLUMN])
            .with_table_name(self.name.replace('/', "_"))
            .with_configuration_property(TableProperty::CheckpointInterval, Some("100"))
            .with_save_mode(SaveMode::Ignore)
            // A create racing another process's create fails here instead
            // of writing a second table id; the table is then loaded.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await;
        match created {
            Ok(table) => {
                tracing::info!(table = %self.name, "created the Delta table");
                Ok(State {
                    table,
                    txns: HashMap::new(),
                    txns_version: None,
                    commit_ids: HashSet::new(),
                })
            }
            Err(e) if lost_race(&e) => self.open_existing().await?.ok_or_else(|| self.error(e)),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Adds the columns of `schema` the table lacks (nullable: the files
    /// written before have none). A column whose type changed, or a
    /// non-nullable table column the new schema lacks, is an error: a
    /// reader could not read old and new files as one table.
    async fn evolve(&self, state: &mut State, schema: &SchemaRef) -> Result<(), LakeError> {
        let current = state.table.snapshot().map_err(|e| self.error(e))?.schema();
        let wanted: StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| self.error(e.into()))?;
        let mut added = Vec::new();
        for field in wanted.fields() {
            match current.field(field.name()) {
                None => added.push(StructField::nullable(
                    field.name().clone(),
                    field.data_type().clone(),
                )),
                Some(old) if old.data_type() != field.data_type() => {
                    return Err(LakeError::SchemaMismatch {
                        partition: self.name.clone(),
                        reason: format!(
                            "column `{}` is {} in the table but {} in the catalog",
                            field.name(),
                            old.data_type(),
                            field.data_type()
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        for old in current.fields() {
            if !old.is_nullable() && wanted.field(old.name()).is_none() {
                return Err(LakeError::SchemaMismatch {
                    partition: self.name.clone(),
                    reason: format!(
                        "the table's non-null column `{}` is not in the catalog any more",
                        old.name()
                    ),
                });
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = added.iter().map(|f| f.name().clone()).collect();
        let table = std::mem::replace(&mut state.table, self.builder()?);
        state.table = table
            .add_columns()
            .with_fields(added)
            .await
            .map_err(|e| self.error(e))?;
        tracing::info!(table = %self.name, columns = ?names, "added columns to the Delta table");
        self.read_txns(state).await
    }

    /// Brings `txns` up to the loaded version: from the last checkpoint the
    /// first time, then commit by commit.
    async fn read_txns(&self, state: &mut State) -> Result<(), LakeError> {
        let Some(version) = state.table.version() else {
            return Ok(());
        };
        let mut next = match state.txns_version {
            Some(v) => v + 1,
            None => match self.read_checkpoint_txns(&mut state.txns).await? {
                Some(checkpoint) => checkpoint + 1,
                None => 0,
            },
        };
        let log_store = state.table.log_store();
        while next <= version {
            if let Some(bytes) = log_store
                .read_commit_entry(next)
                .await
                .map_err(|e| self.error(e))?
            {
                for action in
                    deltalake::logstore::get_actions(next, &bytes).map_err(|e| self.error(e))?
                {
                    match action {
                        Action::Txn(t) => {
                            state.txns.insert(t.app_id, t.version);
                        }
                        Action::CommitInfo(info) => {
                            if let Some(id) = info.info.get(COMMIT_ID).and_then(|v| v.as_str()) {
                                state.commit_ids.insert(id.to_owned());
                            }
                        }
                        _ => {}
                    }
                }
            }
            next += 1;
        }
        state.txns_version = Some(version);
        Ok(())
    }

    /// Reads the `txn` column of the last checkpoint into `txns`; returns
    /// the checkpoint's version, or `None` without one.
    async fn read_checkpoint_txns(
        &self,
        txns: &mut HashMap<String, i64>,
    ) -> Result<Option<u64>, LakeError> {
        let log = self.location.clone().join("_delta_log");
        let last = match self
            .root_store
            .get(&log.clone().join("_last_checkpoint"))
            .await
        {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let corrupt = |reason: String| LakeError::CorruptLog {
            table: self.name.clone(),
            reason,
        };
        let last: serde_json::Value = serde_json::from_slice(&last)
            .map_err(|e| corrupt(format!("_last_checkpoint is not JSON: {e}")))?;
        let version = last["version"]
            .as_u64()
            .ok_or_else(|| corrupt("_last_checkpoint has no version".into()))?;
        let parts = last["parts"].as_u64().unwrap_or(1);
        let files: Vec<Path> = if parts <= 1 {
            vec![
                log.clone()
                    .join(format!("{version:020}.checkpoint.parquet")),
            ]
        } else {
            (1..=parts)
                .map(|p| {
                    log.clone().join(format!(
                        "{version:020}.checkpoint.{p:010}.{parts:010}.parquet"
                    ))
                })
                .collect()
        };
        for file in files {
            // A checkpoint is the table's state in one small file: read whole.
            let bytes = self.root_store.get(&file).await?.bytes().await?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
            let Some(txn) = builder
                .parquet_schema()
                .root_schema()
                .get_fields()
                .iter()
                .position(|f| f.name() == "txn")
            else {
                continue;
            };
            let mask = ProjectionMask::roots(builder.parquet_schema(), [txn]);
            for batch in builder.with_projection(mask).build()? {
                let batch = batch?;
                let txn = batch.column(0).as_struct();
                let (Some(app), Some(ver)) =
                    (txn.column_by_name("appId"), txn.column_by_name("version"))
                else {
                    return Err(corrupt("a checkpoint's txn has no appId or version".into()));
                };
                let app = app.as_string::<i32>();
                let ver = ver.as_primitive::<Int64Type>();
                for i in 0..txn.len() {
                    if txn.is_valid(i) && app.is_valid(i) {
                        txns.insert(app.value(i).to_owned(), ver.value(i));
                    }
                }
            }
        }
        Ok(Some(version))
    }

    async fn refresh(&self, state: &mut State) -> Result<(), LakeError> {
        state
            .table
            .update_incremental(None)
            .await
            .map_err(|e| self.error(e))?;
        self.read_txns(state).await
    }

    /// The batches done in this table (those with an application transaction).
    pub(crate) async fn done(&self) -> Result<Vec<BatchId>, LakeError> {
        let mut guard = self.state.lock().await;
        match guard.as_mut() {
            Some(state) => self.refresh(state).await?,
            None => *guard = self.open_existing().await?,
        }
        let mut done: Vec<BatchId> = guard
            .iter()
            .flat_map(|s| s.txns.keys())
            .filter_map(|id| BatchId::from_app_id(id))
            .collect();
        done.sort();
        Ok(done)
    }

    /// The transaction version of a batch as this process last saw it.
    pub(crate) async fn batch_version(&self, batch: &BatchId) -> Result<Option<i64>, LakeError> {
        let mut guard = self.state.lock().await;
        if guard.is_none() {
            *guard = self.open_existing().await?;
        }
        Ok(guard
            .as_ref()
            .and_then(|s| s.txns.get(&batch.app_id()).copied()))
    }

    /// The transaction versions of `batches` in the latest version of the
    /// table: one refresh of the log for all.
    pub(crate) async fn latest_batch_versions(
        &self,
        batches: &[&BatchId],
    ) -> Result<Vec<Option<i64>>, LakeError> {
        let mut guard = self.state.lock().await;
        match guard.as_mut() {
            Some(state) => self.refresh(state).await?,
            None => *guard = self.open_existing().await?,
        }
        Ok(batches
            .iter()
            .map(|b| {
                guard
                    .as_ref()
                    .and_then(|s| s.txns.get(&b.app_id()).copied())
            })
            .collect())
    }

    /// The active files holding rows of `batch`, as remove actions. Files
    /// are written one batch each, so a file's statistics (min = max =
    /// the source id) say whose it is; a file mixing sources is refused
    /// rather than dropped with other sources' rows in it.
    fn files_of(
        &self,
        state: &State,
        batch: &BatchId,
    ) -> Result<Vec<deltalake::kernel::Remove>, LakeError> {
        let date = batch.date_value();
        let snapshot = state.table.snapshot().map_err(|e| self.error(e))?;
        let mut removes = Vec::new();
        for file in snapshot.log_data().iter() {
            let values = file.partition_values_map();
            if values.get(PARTITION_COLUMN).cloned().flatten().as_deref() != Some(date.as_str()) {
                continue;
            }
            let stats: serde_json::Value = file
                .stats()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            let min = stats["minValues"][self.source_column].as_str();
            let max = stats["maxValues"][self.source_column].as_str();
            match (min, max) {
                (Some(min), Some(max)) if min == max && min == batch.source_id => {
                    removes.push(file.remove_action(true));
                }
                (Some(min), Some(max))
                    if min <= batch.source_id.as_str() && batch.source_id.as_str() <= max =>
                {
                    return Err(LakeError::CorruptLog {
                        table: self.name.clone(),
                        reason: format!(
                            "file {} holds rows of sources {min}..{max}: a batch of {} cannot be replaced alone",
                            file.path(),
                            batch.source_id
                        ),
                    });
                }
                (Some(_), Some(_)) => {}
                _ => {
                    return Err(LakeError::CorruptLog {
                        table: self.name.clone(),
                        reason: format!(
                            "file {} has no {} statistics",
                            file.path(),
                            self.source_column
                        ),
                    });
                }
            }
        }
        Ok(removes)
    }

    /// Replaces each batch of `changes` with its files, all in one commit:
    /// every batch's old files removed, its new ones added, its
    /// transaction set. A batch whose transaction moved
    /// since its writer started (another process committed it meanwhile)
    /// is left out with [`LakeError::CommitConflict`]; the others commit.
    /// A commit that lost the race to another process is retried on the
    /// new version. `info` goes into the commit's `commitInfo`, for audits.
    /// Returns, per change, the table version that holds it.
    pub(crate) async fn commit_batches(
        &self,
        schema: &SchemaRef,
        changes: &[BatchChange],
        info: serde_json::Map<String, serde_json::Value>,
    ) -> Vec<Result<u64, LakeError>> {
        let mut guard = self.state.lock().await;
        let state = match self.ensure(&mut guard, schema).await {
            Ok(state) => state,
            Err(e) => {
                let message = e.to_string();
                let mut all = vec![Err(e)];
                all.extend((1..changes.len()).map(|_| {
                    Err(LakeError::CorruptLog {
                        table: self.name.clone(),
                        reason: message.clone(),
                    })
                }));
                return all;
            }
        };
        let now = Utc::now().timestamp_millis();
        let commit_id = uuid::Uuid::new_v4().to_string();
        let mut info = info;
        info.insert(COMMIT_ID.into(), commit_id.clone().into());
        // Each batch's new transaction version: later than any before, so
        // "did my commit land" is answered by the log alone.
        let versions: Vec<i64> = changes
            .iter()
            .map(|c| now.max(state.txns.get(&c.batch.app_id()).map_or(0, |v| v + 1)))
            .collect();
        let mut results: Vec<Option<Result<u64, LakeError>>> =
            changes.iter().map(|_| None).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            for (i, change) in changes.iter().enumerate() {
                if results[i].is_none()
                    && state.txns.get(&change.batch.app_id()).copied() != change.expected
                {
                    results[i] = Some(Err(LakeError::CommitConflict {
                        partition: format!("{}/{}", self.name, change.batch.app_id()),
                    }));
                }
            }
            let pending: Vec<usize> = (0..changes.len())
                .filter(|&i| results[i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            let mut actions: Vec<Action> = Vec::new();
            let mut transactions = Vec::new();
            let mut failed_files = None;
            for &i in &pending {
                let change = &changes[i];
                match self.files_of(state, &change.batch) {
                    Ok(removes) => actions.extend(removes.into_iter().map(Action::Remove)),
                    Err(e) => {
                        failed_files = Some((i, e));
                        break;
                    }
                }
                actions.extend(change.adds.iter().cloned().map(Action::Add));
                transactions.push(Transaction::new_with_last_update(
                    change.batch.app_id(),
                    versions[i],
                    Some(now),
                ));
            }
            if let Some((i, e)) = failed_files {
                results[i] = Some(Err(e));
                continue;
            }
            let properties = CommitProperties::default()
                .with_max_retries(0)
                .with_metadata(info.clone())
                .with_application_transactions(transactions);
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(vec![PARTITION_COLUMN.to_owned()]),
                predicate: None,
            };
            let committed = match state.table.snapshot() {
                Ok(snapshot) => {
                    CommitBuilder::from(properties)
                        .with_actions(actions)
                        .build(Some(snapshot), state.table.log_store(), operation)
                        .await
                }
                Err(e) => Err(e),
            };
            let refreshed = self.refresh(state).await;
            match committed {
                Ok(done) => {
                    if let Err(e) = refreshed {
                        tracing::warn!(table = %self.name, error = %e, "committed, but could not read the log back");
                    }
                    for &i in &pending {
                        results[i] = Some(Ok(done.version()));
                    }
                    break;
                }
                Err(e) => {
                    // A failed checkpoint after the commit landed also
                    // returns an error: the log tells.
                    let landed = refreshed.is_ok() && state.commit_ids.contains(&commit_id);
                    if landed {
                        tracing::warn!(table = %self.name, error = %e, "committed, but the post-commit step failed");
                        let version = state.table.version().unwrap_or_default();
                        for &i in &pending {
                            results[i] = Some(Ok(version));
                        }
                        break;
                    }
                    if !lost_race(&e) || attempt >= COMMIT_ATTEMPTS {
                        let message = e.to_string();
                        let mut first = Some(self.error(e));
                        for &i in &pending {
                            results[i] =
                                Some(Err(first.take().unwrap_or_else(|| LakeError::CorruptLog {
                                    table: self.name.clone(),
                                    reason: message.clone(),
                                })));
                        }
                        break;
                    }
                    tracing::debug!(table = %self.name, attempt, error = %e, "lost a commit race; retrying on the new version");
                    // Growing and random, so two processes that collided
                    // do not collide again in lock step.
                    let pause = 20 * u64::from(attempt.min(10)) + rand::random_range(0..50);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every change has a result"))
            .collect()
    }

    /// The table's root URL (for readers and tools).
    pub fn url(&self) -> &Url {
        &self.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_round_trip_even_with_colons_in_the_source() {
        let b = BatchId {
            source_id: "acme:7".into(),
            batch_date: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
        };
        assert_eq!(b.app_id(), "syncvet:acme:7:2026-11-27");
        assert_eq!(BatchId::from_app_id(&b.app_id()), Some(b));
        assert_eq!(BatchId::from_app_id("other:x:2026-11-27"), None);
        assert_eq!(BatchId::from_app_id("syncvet::2026-11-27"), None);
        assert_eq!(BatchId::from_app_id("syncvet:x:2026-13-27"), None);
    }
}
