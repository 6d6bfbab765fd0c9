//! [`Table`]: one Delta table of the lake (an entity's history, or its
//! quarantine), opened once per process and shared by every writer of it.
//!
//! A batch (one source's records of one day) is replaced or added by one
//! Delta commit that removes the batch's old files, adds its new ones and
//! sets the application transaction `syncvet:{source_id}:{date}`. The set of
//! those transactions is the set of batches done; it is read from the log
//! (checkpoint, then the commits after it) and kept up to date from each new
//! commit, never from a listing of data files.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, Schema, SchemaRef};
use chrono::{NaiveDate, Utc};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, MetadataExt, Remove, StructType, Transaction};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, TableProperty};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use syncvet_model::Chain;
use tokio::sync::Mutex;
use url::Url;

use crate::LakeError;
use crate::evolve::{self, Evolution};
use crate::rewrite::{Keep, OldFile, rewrite};
use crate::writer::FileSettings;

/// The partition column of every table: one folder per day, so a night's
/// files of hundreds of sources share a folder that compaction can merge.
pub const PARTITION_COLUMN: &str = "batch_date";

/// The `commitInfo` key of a commit's unique id.
const COMMIT_ID: &str = "syncvet.commit_id";

/// Commits lost to another process before giving up on a batch.
const COMMIT_ATTEMPTS: u32 = 30;

/// The partition of a data file: a day (history and quarantine tables,
/// [`PARTITION_COLUMN`]) or a source (current tables, partitioned by the
/// source column).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Partition {
    Day(NaiveDate),
    Source { column: &'static str, id: String },
}

impl Partition {
    /// The partition column.
    pub(crate) fn column(&self) -> &'static str {
        match self {
            Partition::Day(_) => PARTITION_COLUMN,
            Partition::Source { column, .. } => column,
        }
    }

    /// The partition value, as the writer puts it in the path.
    pub(crate) fn scalar(&self) -> delta_kernel::expressions::Scalar {
        use delta_kernel::expressions::Scalar;
        match self {
            Partition::Day(date) => {
                let days = (*date - chrono::DateTime::UNIX_EPOCH.date_naive()).num_days();
                Scalar::Date(days as i32)
            }
            Partition::Source { id, .. } => Scalar::String(id.clone()),
        }
    }

    /// The day of a day partition.
    pub(crate) fn day(&self) -> Option<NaiveDate> {
        match self {
            Partition::Day(date) => Some(*date),
            Partition::Source { .. } => None,
        }
    }
}

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
    /// `pims/patients`, `_quarantine/patients`, `current/pims/patients`:
    /// relative to the lake root.
    pub(crate) name: String,
    url: Url,
    root_store: Arc<dyn ObjectStore>,
    /// The table folder inside `root_store`.
    location: Path,
    /// The column that says which source a row is from (`practice_id`,
    /// `supplier_id`, `source_id`): with the date, a batch's rows.
    pub(crate) source_column: &'static str,
    /// [`PARTITION_COLUMN`], or the source column for a current table.
    partition_column: &'static str,
    settings: FileSettings,
    state: Mutex<Option<State>>,
}

/// An active data file of the table, as a rewrite needs it.
#[derive(Debug, Clone)]
pub(crate) struct ActiveFile {
    pub old: OldFile,
    pub partition: Partition,
    /// The smallest and greatest source id in it, by its statistics (or
    /// its partition).
    pub sources: (String, String),
    /// Its rows, by its statistics.
    pub rows: Option<u64>,
    /// Its statistics as the log has them (`Null` when none).
    pub stats: serde_json::Value,
    pub remove: Remove,
}

impl ActiveFile {
    /// Whether the file may hold rows of `source`.
    pub(crate) fn may_hold(&self, source: &str) -> bool {
        self.sources.0.as_str() <= source && source <= self.sources.1.as_str()
    }

    /// Whether the file holds rows of `source` only.
    pub(crate) fn only(&self, source: &str) -> bool {
        self.sources.0 == source && self.sources.1 == source
    }
}

/// A table's state at one version, as a merge plans from it (empty when
/// there is no table).
pub(crate) struct View {
    /// Application transactions: app id → version.
    pub txns: HashMap<String, i64>,
    pub files: Vec<ActiveFile>,
    /// The table's columns (with the partition column).
    pub schema: Option<SchemaRef>,
}

/// The files holding rows of one batch.
#[derive(Default)]
struct BatchFiles {
    /// Files of the batch alone: removed whole.
    own: Vec<Remove>,
    /// Files that may hold other sources' rows too (compacted): rewritten
    /// without the batch's rows.
    shared: Vec<ActiveFile>,
}

/// How one commit attempt ended.
enum Attempt {
    Landed(u64),
    LostRace(DeltaTableError),
    Failed(DeltaTableError),
}

/// What compaction did to a table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compacted {
    /// Days (partitions) compacted.
    pub days: u64,
    /// Small files replaced.
    pub files_removed: u64,
    /// Files they were merged into.
    pub files_added: u64,
}

impl std::ops::AddAssign for Compacted {
    fn add_assign(&mut self, other: Compacted) {
        self.days += other.days;
        self.files_removed += other.files_removed;
        self.files_added += other.files_added;
    }
}

/// A pause before the next commit attempt: growing and random, so two
/// processes that collided do not collide again in lock step.
async fn pause(attempt: u32) {
    let pause = 20 * u64::from(attempt.min(10)) + rand::random_range(0..50);
    tokio::time::sleep(Duration::from_millis(pause)).await;
}

/// The columns of a table's data files: its schema without the partition
/// column, whose value is in the file's path.
pub(crate) fn without_column(schema: &Schema, column: &str) -> SchemaRef {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != column)
        .cloned()
        .collect();
    Arc::new(Schema::new(fields))
}

/// The partition of a file, from its partition values.
fn file_partition(
    column: &'static str,
    values: &HashMap<String, Option<String>>,
) -> Option<Partition> {
    let value = values.get(column)?.as_deref()?;
    match column {
        PARTITION_COLUMN => NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .ok()
            .map(Partition::Day),
        _ => Some(Partition::Source {
            column,
            id: value.to_owned(),
        }),
    }
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
        partition_column: &'static str,
        settings: FileSettings,
    ) -> Table {
        Table {
            name,
            url,
            root_store,
            location,
            source_column,
            partition_column,
            settings,
            state: Mutex::new(None),
        }
    }

    /// How the table's data files are written.
    pub(crate) fn settings(&self) -> &FileSettings {
        &self.settings
    }

    /// The store with the table folder as its root, for data files.
    pub(crate) fn file_store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(PrefixStore::new(
            self.root_store.clone(),
            self.location.clone(),
        ))
    }

    /// Deletes files no commit refers to (invisible to readers): now,
    /// rather than leaving them for vacuum.
    pub(crate) async fn delete_uncommitted(&self, adds: &[Add]) {
        let store = self.file_store();
        for add in adds {
            let path = Path::from(add.path.as_str());
            if let Err(e) = store.delete(&path).await {
                tracing::debug!(table = %self.name, %path, error = %Chain(&e), "could not remove an uncommitted file");
            }
        }
    }

    /// The columns of the table's data files: its schema without the
    /// partition column.
    fn file_schema(&self, state: &State) -> Result<SchemaRef, LakeError> {
        let snapshot = state.table.snapshot().map_err(|e| self.error(e))?;
        Ok(without_column(
            &snapshot.snapshot().arrow_schema(),
            self.partition_column,
        ))
    }

    /// Loads the table (once) or brings it up to the latest version;
    /// `None` when there is no table.
    async fn latest<'a>(
        &self,
        guard: &'a mut Option<State>,
    ) -> Result<Option<&'a mut State>, LakeError> {
        match guard.as_mut() {
            Some(state) => self.refresh(state).await?,
            None => *guard = self.open_existing().await?,
        }
        Ok(guard.as_mut())
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

    /// The table, created with `schema` (partitioned by its partition
    /// column) if it does not exist, its schema evolved if `schema` has new columns.
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
            .with_partition_columns([self.partition_column])
            .with_table_name(self.name.replace('/', "_"))
            // Delta's own default: a reader (and a run's planning) replays
            // at most 9 JSON commits after the checkpoint.
            .with_configuration_property(TableProperty::CheckpointInterval, Some("10"))
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

    /// Takes the table to the catalog's columns (`schema`), as the
    /// `evolve` module plans it, in one commit: new columns by a metadata
    /// change; widened types by the new schema and every data file
    /// rewritten with it (`dataChange = false`: the rows are the same). A
    /// change no reader could follow is [`LakeError::TypeChange`], and
    /// nothing is committed. A commit lost to another process is planned
    /// again on the new version (which may have made the change already).
    async fn evolve(&self, state: &mut State, schema: &SchemaRef) -> Result<(), LakeError> {
        let wanted: StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| self.error(e.into()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let snapshot = state.table.snapshot().map_err(|e| self.error(e))?;
            let current = snapshot.schema();
            let (new_schema, columns, rewrite_files) =
                match evolve::plan(&current, &wanted).map_err(|r| self.type_change(r))? {
                    Evolution::Unchanged => return Ok(()),
                    Evolution::AddColumns { schema, columns } => (schema, columns, false),
                    Evolution::Rewrite { schema, columns } => (schema, columns, true),
                };
            let metadata = snapshot
                .metadata()
                .clone()
                .with_schema(&new_schema)
                .map_err(|e| self.error(e.into()))?;
            let mut actions = vec![Action::Metadata(metadata)];
            let mut rewritten = Vec::new();
            let operation = if rewrite_files {
                let (removes, adds) = self.rewrite_all(state, &new_schema).await?;
                actions.extend(removes.into_iter().map(Action::Remove));
                actions.extend(adds.iter().cloned().map(Action::Add));
                rewritten = adds;
                DeltaOperation::Write {
                    mode: SaveMode::Overwrite,
                    partition_by: Some(vec![self.partition_column.to_owned()]),
                    predicate: None,
                }
            } else {
                DeltaOperation::AddColumn {
                    fields: columns
                        .iter()
                        .filter_map(|c| new_schema.field(c).cloned())
                        .collect(),
                }
            };
            let mut info = serde_json::Map::new();
            info.insert("syncvet.schema_change".into(), columns.clone().into());
            match self
                .commit_once(state, actions, operation, &info, Vec::new())
                .await
            {
                Attempt::Landed(version) => {
                    tracing::info!(table = %self.name, ?columns, files_rewritten = rewritten.len(), version, "evolved the Delta table's schema");
                    return Ok(());
                }
                Attempt::LostRace(_) if attempt < COMMIT_ATTEMPTS => {
                    self.delete_uncommitted(&rewritten).await;
                    pause(attempt).await;
                }
                Attempt::LostRace(e) | Attempt::Failed(e) => {
                    self.delete_uncommitted(&rewritten).await;
                    return Err(self.error(e));
                }
            }
        }
    }

    /// Every active data file rewritten with the columns of `schema` (its
    /// values cast to the widened types), file by file, so each keeps its
    /// day and its sources. Returns the removes and adds, all with
    /// `dataChange = false`; on error, nothing new is left behind.
    async fn rewrite_all(
        &self,
        state: &State,
        schema: &StructType,
    ) -> Result<(Vec<Remove>, Vec<Add>), LakeError> {
        let arrow: Schema = schema.try_into_arrow().map_err(|e| self.error(e.into()))?;
        let columns = without_column(&arrow, self.partition_column);
        let (mut removes, mut adds) = (Vec::new(), Vec::new());
        for file in self.active_files(state, None)? {
            let files = std::slice::from_ref(&file.old);
            match rewrite(
                self.file_store(),
                &self.settings,
                columns.clone(),
                &file.partition,
                files,
                Keep::All,
            )
            .await
            {
                Ok(done) => {
                    let mut remove = file.remove;
                    remove.data_change = false;
                    removes.push(remove);
                    adds.extend(done.adds.into_iter().map(|mut add| {
                        add.data_change = false;
                        add
                    }));
                }
                Err(e) => {
                    self.delete_uncommitted(&adds).await;
                    return Err(self.error(e));
                }
            }
        }
        Ok((removes, adds))
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

    /// The version and number of parts of the last checkpoint, if any.
    async fn last_checkpoint(&self) -> Result<Option<(u64, u64)>, LakeError> {
        let log = self.location.clone().join("_delta_log");
        let last = match self.root_store.get(&log.join("_last_checkpoint")).await {
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
        Ok(Some((version, last["parts"].as_u64().unwrap_or(1))))
    }

    /// Reads the `txn` column of the last checkpoint into `txns`; returns
    /// the checkpoint's version, or `None` without one.
    async fn read_checkpoint_txns(
        &self,
        txns: &mut HashMap<String, i64>,
    ) -> Result<Option<u64>, LakeError> {
        let Some((version, parts)) = self.last_checkpoint().await? else {
            return Ok(None);
        };
        let log = self.location.clone().join("_delta_log");
        let corrupt = |reason: String| LakeError::CorruptLog {
            table: self.name.clone(),
            reason,
        };
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
        let mut done: Vec<BatchId> = self
            .latest(&mut guard)
            .await?
            .iter()
            .flat_map(|s| s.txns.keys())
            .filter_map(|id| BatchId::from_app_id(id))
            .collect();
        done.sort();
        Ok(done)
    }

    /// Refuses a writer whose catalog `schema` the table cannot take (see
    /// [`Table::evolve`]) before it fetches the rest of its batch; changes
    /// nothing: the commit evolves the table.
    pub(crate) async fn check_schema(&self, schema: &SchemaRef) -> Result<(), LakeError> {
        let mut guard = self.state.lock().await;
        if guard.is_none() {
            *guard = self.open_existing().await?;
        }
        let Some(state) = guard.as_ref() else {
            return Ok(());
        };
        let wanted: StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| self.error(e.into()))?;
        let current = state.table.snapshot().map_err(|e| self.error(e))?.schema();
        evolve::plan(&current, &wanted)
            .map(|_| ())
            .map_err(|r| self.type_change(r))
    }

    fn type_change(&self, r: evolve::Refused) -> LakeError {
        LakeError::TypeChange {
            table: self.name.clone(),
            column: r.column,
            table_type: r.table_type,
            catalog_type: r.catalog_type,
            why: r.why,
        }
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
        let state = self.latest(&mut guard).await?;
        Ok(batches
            .iter()
            .map(|b| {
                state
                    .as_ref()
                    .and_then(|s| s.txns.get(&b.app_id()).copied())
            })
            .collect())
    }

    fn view_of(&self, state: Option<&State>) -> Result<View, LakeError> {
        let Some(state) = state else {
            return Ok(View {
                txns: HashMap::new(),
                files: Vec::new(),
                schema: None,
            });
        };
        let snapshot = state.table.snapshot().map_err(|e| self.error(e))?;
        Ok(View {
            txns: state.txns.clone(),
            files: self.active_files(state, None)?,
            schema: Some(snapshot.snapshot().arrow_schema()),
        })
    }

    /// The latest version of the table: its transactions and files.
    pub(crate) async fn view(&self) -> Result<View, LakeError> {
        let mut guard = self.state.lock().await;
        let state = self.latest(&mut guard).await?;
        self.view_of(state.map(|s| &*s))
    }

    /// [`Table::view`] of the table created with, or evolved to, `schema`.
    pub(crate) async fn prepare(&self, schema: &SchemaRef) -> Result<View, LakeError> {
        let mut guard = self.state.lock().await;
        if let Some(state) = guard.as_mut() {
            self.refresh(state).await?;
        }
        let state = self.ensure(&mut guard, schema).await?;
        self.view_of(Some(state))
    }

    /// Commits `actions` and `transactions`, planned on `planned`, if no
    /// commit since has changed what the plan read: the files of
    /// `partitions` and the transactions it sets. Returns the version, or
    /// `None` when the plan is stale (the caller deletes its new files and
    /// plans again); a commit lost to another process that touched none of
    /// it is retried on the new version.
    pub(crate) async fn commit_planned(
        &self,
        planned: &View,
        partitions: &BTreeSet<Partition>,
        actions: Vec<Action>,
        transactions: Vec<Transaction>,
        operation: DeltaOperation,
        info: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<u64>, LakeError> {
        let files_of = |files: &[ActiveFile]| -> BTreeSet<String> {
            files
                .iter()
                .filter(|f| partitions.contains(&f.partition))
                .map(|f| f.old.path.clone())
                .collect()
        };
        let read = files_of(&planned.files);
        let mut guard = self.state.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(state) = self.latest(&mut guard).await? else {
                return Ok(None);
            };
            let moved = transactions
                .iter()
                .any(|t| state.txns.get(&t.app_id) != planned.txns.get(&t.app_id));
            if moved || files_of(&self.active_files(state, None)?) != read {
                return Ok(None);
            }
            match self
                .commit_once(
                    state,
                    actions.clone(),
                    operation.clone(),
                    &info,
                    transactions.clone(),
                )
                .await
            {
                Attempt::Landed(version) => return Ok(Some(version)),
                Attempt::LostRace(e) if attempt < COMMIT_ATTEMPTS => {
                    tracing::debug!(table = %self.name, attempt, error = %Chain(&e), "lost a commit race; checking the plan on the new version");
                    pause(attempt).await;
                }
                Attempt::LostRace(e) | Attempt::Failed(e) => return Err(self.error(e)),
            }
        }
    }

    /// The active files of the day `date` (every day when `None`).
    fn active_files(
        &self,
        state: &State,
        date: Option<NaiveDate>,
    ) -> Result<Vec<ActiveFile>, LakeError> {
        let snapshot = state.table.snapshot().map_err(|e| self.error(e))?;
        let corrupt = |reason: String| LakeError::CorruptLog {
            table: self.name.clone(),
            reason,
        };
        let mut files = Vec::new();
        for file in snapshot.log_data().iter() {
            let partition = file_partition(self.partition_column, &file.partition_values_map())
                .ok_or_else(|| {
                    corrupt(format!(
                        "file {} has no {}",
                        file.path(),
                        self.partition_column
                    ))
                })?;
            if date.is_some_and(|d| partition.day() != Some(d)) {
                continue;
            }
            let stats: serde_json::Value = file
                .stats()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            let sources = match &partition {
                Partition::Source { id, .. } => (id.clone(), id.clone()),
                Partition::Day(_) => {
                    let min = stats["minValues"][self.source_column].as_str();
                    let max = stats["maxValues"][self.source_column].as_str();
                    let (Some(min), Some(max)) = (min, max) else {
                        return Err(corrupt(format!(
                            "file {} has no {} statistics",
                            file.path(),
                            self.source_column
                        )));
                    };
                    (min.to_owned(), max.to_owned())
                }
            };
            files.push(ActiveFile {
                old: OldFile {
                    path: file.path().into_owned(),
                    size: file.size() as u64,
                },
                partition,
                sources,
                rows: stats["numRecords"].as_u64(),
                stats,
                remove: file.remove_action(true),
            });
        }
        Ok(files)
    }

    /// The active files holding rows of `batch`. A file's statistics
    /// (min and max source id) say whose it is: a batch's own file is
    /// removed whole; a compacted file whose range holds the source may
    /// hold its rows among others'.
    fn files_of(&self, state: &State, batch: &BatchId) -> Result<BatchFiles, LakeError> {
        let source = batch.source_id.as_str();
        let mut found = BatchFiles::default();
        for file in self.active_files(state, Some(batch.batch_date))? {
            if file.only(source) {
                found.own.push(file.remove);
            } else if file.may_hold(source) {
                found.shared.push(file);
            }
        }
        Ok(found)
    }

    /// Copy-on-write: each shared file rewritten without the rows of the
    /// sources replaced, or left alone when it holds none of them. Returns
    /// the removes and adds; on error, nothing new is left behind.
    async fn rewrite_shared(
        &self,
        state: &State,
        shared: BTreeMap<String, (ActiveFile, BTreeSet<String>)>,
    ) -> Result<(Vec<Remove>, Vec<Add>), LakeError> {
        let (mut removes, mut adds) = (Vec::new(), Vec::new());
        if shared.is_empty() {
            return Ok((removes, adds));
        }
        let schema = self.file_schema(state)?;
        for (file, sources) in shared.into_values() {
            let keep = Keep::AllSourcesBut {
                column: self.source_column,
                sources: &sources,
            };
            let files = std::slice::from_ref(&file.old);
            match rewrite(
                self.file_store(),
                &self.settings,
                schema.clone(),
                &file.partition,
                files,
                keep,
            )
            .await
            {
                Ok(done) if done.rows_dropped == 0 => self.delete_uncommitted(&done.adds).await,
                Ok(done) => {
                    removes.push(file.remove);
                    adds.extend(done.adds);
                }
                Err(e) => {
                    self.delete_uncommitted(&adds).await;
                    return Err(self.error(e));
                }
            }
        }
        Ok((removes, adds))
    }

    /// One commit of `actions` on the loaded version, then a refresh. A
    /// commit whose post-commit step (a checkpoint) failed has landed all
    /// the same: its id in the log tells.
    async fn commit_once(
        &self,
        state: &mut State,
        actions: Vec<Action>,
        operation: DeltaOperation,
        info: &serde_json::Map<String, serde_json::Value>,
        transactions: Vec<Transaction>,
    ) -> Attempt {
        let commit_id = uuid::Uuid::new_v4().to_string();
        let mut info = info.clone();
        info.insert(COMMIT_ID.into(), commit_id.clone().into());
        let properties = CommitProperties::default()
            .with_max_retries(0)
            .with_metadata(info)
            .with_application_transactions(transactions);
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
                    tracing::warn!(table = %self.name, error = %Chain(&e), "committed, but could not read the log back");
                }
                Attempt::Landed(done.version())
            }
            Err(e) if refreshed.is_ok() && state.commit_ids.contains(&commit_id) => {
                tracing::warn!(table = %self.name, error = %Chain(&e), "committed, but the post-commit step failed");
                Attempt::Landed(state.table.version().unwrap_or_default())
            }
            Err(e) if lost_race(&e) => Attempt::LostRace(e),
            Err(e) => Attempt::Failed(e),
        }
    }

    /// Replaces each batch of `changes` with its files, all in one commit:
    /// every batch's old files removed (rows in a compacted file shared
    /// with other sources are dropped by rewriting it), its new ones
    /// added, its transaction set. A batch whose transaction moved since
    /// its writer started (another process committed it meanwhile) is
    /// left out with [`LakeError::CommitConflict`]; the others commit. A
    /// commit that lost the race to another process is retried on the new
    /// version. `info` goes into the commit's `commitInfo`, for audits.
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
            Err(e) => return self.same_error(changes.len(), e),
        };
        let now = Utc::now().timestamp_millis();
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
            if attempt > 1 {
                // The race may have been lost to a schema change: files of
                // a type the table no longer has must not be added to it.
                if let Err(e) = self.evolve(state, schema).await {
                    for (i, e) in pending.iter().zip(self.same_error(pending.len(), e)) {
                        results[*i] = Some(e);
                    }
                    break;
                }
            }
            let mut actions: Vec<Action> = Vec::new();
            let mut shared: BTreeMap<String, (ActiveFile, BTreeSet<String>)> = BTreeMap::new();
            let mut unreadable = None;
            for &i in &pending {
                let batch = &changes[i].batch;
                match self.files_of(state, batch) {
                    Ok(files) => {
                        actions.extend(files.own.into_iter().map(Action::Remove));
                        for file in files.shared {
                            let entry = shared
                                .entry(file.old.path.clone())
                                .or_insert_with(|| (file, BTreeSet::new()));
                            entry.1.insert(batch.source_id.clone());
                        }
                    }
                    Err(e) => {
                        unreadable = Some((i, e));
                        break;
                    }
                }
            }
            if let Some((i, e)) = unreadable {
                results[i] = Some(Err(e));
                continue;
            }
            let rewritten = match self.rewrite_shared(state, shared).await {
                Ok((removes, adds)) => {
                    actions.extend(removes.into_iter().map(Action::Remove));
                    actions.extend(adds.iter().cloned().map(Action::Add));
                    adds
                }
                Err(e) => {
                    for (i, e) in pending.iter().zip(self.same_error(pending.len(), e)) {
                        results[*i] = Some(e);
                    }
                    break;
                }
            };
            let mut transactions = Vec::new();
            for &i in &pending {
                let change = &changes[i];
                actions.extend(change.adds.iter().cloned().map(Action::Add));
                transactions.push(Transaction::new_with_last_update(
                    change.batch.app_id(),
                    versions[i],
                    Some(now),
                ));
            }
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(vec![self.partition_column.to_owned()]),
                predicate: None,
            };
            match self
                .commit_once(state, actions, operation, &info, transactions)
                .await
            {
                Attempt::Landed(version) => {
                    for &i in &pending {
                        results[i] = Some(Ok(version));
                    }
                    break;
                }
                Attempt::LostRace(e) if attempt < COMMIT_ATTEMPTS => {
                    tracing::debug!(table = %self.name, attempt, error = %Chain(&e), "lost a commit race; retrying on the new version");
                    self.delete_uncommitted(&rewritten).await;
                    pause(attempt).await;
                }
                Attempt::LostRace(e) | Attempt::Failed(e) => {
                    self.delete_uncommitted(&rewritten).await;
                    let failed = self.same_error(pending.len(), self.error(e));
                    for (i, e) in pending.iter().zip(failed) {
                        results[*i] = Some(e);
                    }
                    break;
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every change has a result"))
            .collect()
    }

    /// `e` for the first of `n` batches that failed as one, the same
    /// message for the others (errors are not `Clone`).
    pub(crate) fn same_error<T>(&self, n: usize, e: LakeError) -> Vec<Result<T, LakeError>> {
        let reason = Chain(&e).to_string();
        let mut first = Some(e);
        (0..n)
            .map(|_| {
                Err(first.take().unwrap_or_else(|| LakeError::CorruptLog {
                    table: self.name.clone(),
                    reason: reason.clone(),
                }))
            })
            .collect()
    }

    /// Compacts each day (of `days`, or every day) that has `min_files`
    /// (at least two) files smaller than `below_bytes` (at most
    /// `max_file_bytes`): their rows, unchanged and
    /// ordered by source, move into as few files as the size allows, in
    /// one commit per day that changes no data (`dataChange = false`), so
    /// a reader's results never change. A day that another process
    /// changed meanwhile is left for the next time.
    pub(crate) async fn compact(
        &self,
        days: Option<&BTreeSet<NaiveDate>>,
        min_files: usize,
        below_bytes: u64,
    ) -> Result<Compacted, LakeError> {
        let mut guard = self.state.lock().await;
        let Some(state) = self.latest(&mut guard).await? else {
            return Ok(Compacted::default());
        };
        let max = self.settings.max_file_bytes();
        let below = below_bytes.min(max);
        let mut by_day: BTreeMap<NaiveDate, Vec<ActiveFile>> = BTreeMap::new();
        for file in self.active_files(state, None)? {
            let Some(date) = file.partition.day() else {
                continue;
            };
            if file.old.size < below && days.is_none_or(|d| d.contains(&date)) {
                by_day.entry(date).or_default().push(file);
            }
        }
        let mut info = serde_json::Map::new();
        info.insert("syncvet.maintenance".into(), "compact".into());
        let mut out = Compacted::default();
        for (date, mut files) in by_day {
            if files.len() < min_files.max(2) {
                continue;
            }
            // A run leaves one batch's own files (its live records and its
            // deletions) as they are: merging them would encode the batch
            // again for one file fewer. `maintain` merges them.
            if days.is_some() && files.iter().all(|f| f.only(&files[0].sources.0)) {
                continue;
            }
            files.sort_by(|a, b| (&a.sources, &a.old).cmp(&(&b.sources, &b.old)));
            let old: Vec<OldFile> = files.iter().map(|f| f.old.clone()).collect();
            let schema = self.file_schema(state)?;
            let merged = rewrite(
                self.file_store(),
                &self.settings,
                schema,
                &Partition::Day(date),
                &old,
                Keep::All,
            )
            .await
            .map_err(|e| self.error(e))?;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let active: HashSet<String> = self
                    .active_files(state, Some(date))?
                    .into_iter()
                    .map(|f| f.old.path)
                    .collect();
                if !old.iter().all(|f| active.contains(&f.path)) {
                    tracing::info!(table = %self.name, %date, "the day changed while it was compacted; left for the next time");
                    self.delete_uncommitted(&merged.adds).await;
                    break;
                }
                let mut actions: Vec<Action> = files
                    .iter()
                    .map(|f| {
                        let mut remove = f.remove.clone();
                        remove.data_change = false;
                        Action::Remove(remove)
                    })
                    .collect();
                actions.extend(merged.adds.iter().cloned().map(|mut add| {
                    add.data_change = false;
                    Action::Add(add)
                }));
                let operation = DeltaOperation::Optimize {
                    predicate: Some(format!("{PARTITION_COLUMN} = '{date}'")),
                    target_size: max as i64,
                };
                match self
                    .commit_once(state, actions, operation, &info, Vec::new())
                    .await
                {
                    Attempt::Landed(version) => {
                        tracing::info!(table = %self.name, %date, files = old.len(), into = merged.adds.len(), version, "compacted a day");
                        out.days += 1;
                        out.files_removed += old.len() as u64;
                        out.files_added += merged.adds.len() as u64;
                        break;
                    }
                    Attempt::LostRace(_) if attempt < COMMIT_ATTEMPTS => pause(attempt).await,
                    Attempt::LostRace(e) | Attempt::Failed(e) => {
                        self.delete_uncommitted(&merged.adds).await;
                        return Err(self.error(e));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes a checkpoint of the latest version unless it has one, then
    /// removes the log files past the log retention; returns the version
    /// checkpointed.
    pub(crate) async fn checkpoint(&self) -> Result<Option<u64>, LakeError> {
        let mut guard = self.state.lock().await;
        let Some(state) = self.latest(&mut guard).await? else {
            return Ok(None);
        };
        let Some(version) = state.table.version() else {
            return Ok(None);
        };
        if self.last_checkpoint().await?.map(|(v, _)| v) == Some(version) {
            return Ok(None);
        }
        deltalake::checkpoints::create_checkpoint(&state.table, None)
            .await
            .map_err(|e| self.error(e))?;
        tracing::info!(table = %self.name, version, "wrote a checkpoint");
        // Commits and checkpoints older than the table's log retention (30
        // days) and than a checkpoint are no longer needed by any reader.
        let snapshot = state.table.snapshot().map_err(|e| self.error(e))?;
        if snapshot.table_config().enable_expired_log_cleanup() {
            let expired = deltalake::checkpoints::cleanup_metadata(&state.table, None)
                .await
                .map_err(|e| self.error(e))?;
            if expired > 0 {
                tracing::info!(table = %self.name, files = expired, "removed expired log files");
            }
        }
        Ok(Some(version))
    }

    /// Deletes the files that no version within `retention` refers to:
    /// files removed (by a replace or a compaction) longer ago than that,
    /// and files in no commit (of a crashed or lost writer) older than
    /// that. Returns how many.
    pub(crate) async fn vacuum(&self, retention: chrono::Duration) -> Result<u64, LakeError> {
        let mut guard = self.state.lock().await;
        let Some(state) = self.latest(&mut guard).await? else {
            return Ok(0);
        };
        let (table, metrics) = state
            .table
            .clone()
            .vacuum()
            .with_retention_period(retention)
            // The table's own minimum (7 days) is the config's default;
            // a shorter retention is the operator's explicit choice.
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .await
            .map_err(|e| self.error(e))?;
        state.table = table;
        self.read_txns(state).await?;
        let deleted = metrics.files_deleted.len() as u64;
        if deleted > 0 {
            tracing::info!(table = %self.name, files = deleted, "vacuumed");
        }
        Ok(deleted)
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
