//! [`Lake`]: the opened lake and its read-side queries.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::path::{Path, PathPart};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use syncvet_model::{Entity, SourceType};

use crate::layout::{CURRENT_DIR, QUARANTINE_DIR, RUNS_DIR, check_segment};

use crate::store::{self, OpenedStore};
use crate::table::{Compacted, PARTITION_COLUMN, Table};
use crate::writer::FileSettings;
use crate::{
    BatchWriter, CommitSummary, CurrentUpdate, LakeConfig, LakeError, PartitionKey, StagedBatch,
};

/// `root` + a relative `a/b/c` path.
pub(crate) fn join(root: &Path, rel: &str) -> Path {
    root.parts()
        .chain(rel.split('/').map(PathPart::from))
        .collect()
}

/// A location's path relative to `root`.
pub(crate) fn relative(root: &Path, location: &Path) -> String {
    match location.prefix_match(root) {
        Some(parts) => parts
            .map(|p| p.as_ref().to_owned())
            .collect::<Vec<_>>()
            .join("/"),
        None => location.to_string(),
    }
}

/// What maintenance did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableMaintenance {
    /// Small files merged.
    pub compacted: Compacted,
    /// The version a checkpoint was written for (none when the latest
    /// version had one, or there is no table).
    pub checkpoint: Option<u64>,
    /// Files vacuum deleted.
    pub files_vacuumed: u64,
}

/// An opened lake. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Lake {
    pub(crate) inner: Arc<LakeInner>,
}

pub(crate) struct LakeInner {
    pub(crate) opened: OpenedStore,
    pub(crate) config: LakeConfig,
    settings: FileSettings,
    /// Each table opened once per process: its state and commit lock are
    /// shared by every writer of the table.
    tables: Mutex<HashMap<String, Arc<Table>>>,
}

impl fmt::Debug for Lake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lake")
            .field("root", &self.inner.opened.display)
            .finish()
    }
}

/// Not found is an answer, not an error, for the read-side queries.
fn found<T>(r: object_store::Result<T>) -> Result<Option<T>, LakeError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Lake {
    /// Opens the lake named by `config.url` (creating a local folder if
    /// needed). Cloud credentials and endpoints come from the environment,
    /// then `config.options`. Nothing is read or written yet.
    pub fn open(config: &LakeConfig) -> Result<Lake, LakeError> {
        let opened = store::open(config)?;
        Ok(Lake {
            inner: Arc::new(LakeInner {
                opened,
                settings: FileSettings::new(config)?,
                config: config.clone(),
                tables: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub(crate) fn location(&self, rel: &str) -> Path {
        join(&self.inner.opened.root, rel)
    }

    pub(crate) fn relative(&self, location: &Path) -> String {
        relative(&self.inner.opened.root, location)
    }

    /// The underlying store, for tests and tools that inspect the lake.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.opened.store.clone()
    }

    /// The lake root inside [`Lake::object_store`].
    pub fn root(&self) -> &Path {
        &self.inner.opened.root
    }

    /// The lake as shown to people: a folder, or the URL without credentials.
    pub fn root_display(&self) -> String {
        self.inner.opened.display.clone()
    }

    fn table(
        &self,
        name: String,
        source_column: &'static str,
        partition_column: &'static str,
    ) -> Arc<Table> {
        let mut tables = self
            .inner
            .tables
            .lock()
            .expect("the table map is never poisoned");
        tables
            .entry(name.clone())
            .or_insert_with(|| {
                let opened = &self.inner.opened;
                let url = opened
                    .delta_url
                    .join(&format!("{name}/"))
                    .expect("a lake path segment joins onto the lake URL");
                Arc::new(Table::new(
                    name.clone(),
                    url,
                    opened.delta_store.clone(),
                    join(&opened.delta_root, &name),
                    source_column,
                    partition_column,
                    self.inner.settings.clone(),
                ))
            })
            .clone()
    }

    /// The history table of an entity: `pims/{entity}` or `supplier/{entity}`.
    pub(crate) fn history(&self, source: SourceType, entity: &str) -> Arc<Table> {
        self.table(
            format!("{}/{entity}", source.as_str()),
            source.partition_column(),
            PARTITION_COLUMN,
        )
    }

    /// The current table of an entity: `current/pims/{entity}` or
    /// `current/supplier/{entity}`, partitioned by source.
    pub(crate) fn current(&self, source: SourceType, entity: &str) -> Arc<Table> {
        let column = source.partition_column();
        self.table(
            format!("{CURRENT_DIR}/{}/{entity}", source.as_str()),
            column,
            column,
        )
    }

    /// The quarantine table of an entity: `_quarantine/{entity}`.
    pub(crate) fn quarantine(&self, entity: &str) -> Arc<Table> {
        self.table(
            format!("{QUARANTINE_DIR}/{entity}"),
            "source_id",
            PARTITION_COLUMN,
        )
    }

    /// The URL of an entity's history table, for readers.
    pub fn history_url(&self, source: SourceType, entity: &str) -> Result<url::Url, LakeError> {
        check_segment("entity", entity)?;
        Ok(self.history(source, entity).url().clone())
    }

    /// The URL of an entity's current table, for readers.
    pub fn current_url(&self, source: SourceType, entity: &str) -> Result<url::Url, LakeError> {
        check_segment("entity", entity)?;
        Ok(self.current(source, entity).url().clone())
    }

    /// Brings an entity's current table up to its history table: every
    /// batch the history has and the current table has not absorbed (or
    /// absorbed with another version) is merged, in one commit (see the
    /// `current` module). A no-op when there is nothing new.
    pub async fn update_current(
        &self,
        source: SourceType,
        entity: &str,
    ) -> Result<CurrentUpdate, LakeError> {
        check_segment("entity", entity)?;
        crate::current::update(self, source, entity, false).await
    }

    /// Rebuilds an entity's current table from its history table alone:
    /// every source's state computed again from all its batches, in one
    /// commit (`syncvet-etl rebuild-current`).
    pub async fn rebuild_current(
        &self,
        source: SourceType,
        entity: &str,
    ) -> Result<CurrentUpdate, LakeError> {
        check_segment("entity", entity)?;
        crate::current::update(self, source, entity, true).await
    }

    /// Every batch of an entity that is done, sorted by source id and date:
    /// read from the history table's log (its application transactions),
    /// not from a listing of its files.
    pub async fn done_partitions(
        &self,
        source: SourceType,
        entity: &str,
    ) -> Result<Vec<PartitionKey>, LakeError> {
        check_segment("entity", entity)?;
        let done = self.history(source, entity).done().await?;
        done.into_iter()
            .map(|b| PartitionKey::new(source, entity, b.source_id, b.batch_date))
            .collect()
    }

    /// Maintains an entity's history and quarantine tables, one result
    /// each (with the table's name, relative to the lake root): the days
    /// `days` that have two or more files under `run_compacts_below_bytes`
    /// (a run's), or every day's files under
    /// `max_file_bytes` when `None` (`syncvet-etl maintain`), compacted
    /// (rows unchanged, `dataChange = false`), and vacuum of the
    /// files no version of the last `vacuum_retention_hours` refers to;
    /// a full maintenance (`days` = `None`) also writes a checkpoint of
    /// the latest version. Safe beside running syncs: every step is a
    /// commit that loses a race cleanly. A run does this for the days it
    /// landed; `syncvet-etl maintain` for every day.
    pub async fn maintain(
        &self,
        source: SourceType,
        entity: &str,
        days: Option<&BTreeSet<NaiveDate>>,
    ) -> Result<Vec<(String, Result<TableMaintenance, LakeError>)>, LakeError> {
        check_segment("entity", entity)?;
        let hours = self.inner.config.vacuum_retention_hours;
        let retention = chrono::Duration::milliseconds((hours * 3_600_000.0) as i64);
        let mut results = Vec::new();
        let tables = [
            self.history(source, entity),
            self.quarantine(entity),
            self.current(source, entity),
        ];
        for table in tables {
            let outcome = async {
                let below = match days {
                    Some(_) => self.inner.config.run_compacts_below_bytes,
                    None => u64::MAX,
                };
                let compacted = table.compact(days, 2, below).await?;
                let checkpoint = match days {
                    None => table.checkpoint().await?,
                    Some(_) => None,
                };
                Ok(TableMaintenance {
                    compacted,
                    checkpoint,
                    files_vacuumed: table.vacuum(retention).await?,
                })
            };
            results.push((table.name.clone(), outcome.await));
        }
        Ok(results)
    }

    /// Compacts the days `days` of an entity's history and quarantine
    /// tables that have `min_files` or more files under
    /// `run_compacts_below_bytes` (see [`Lake::maintain`]); one result per
    /// table.
    pub async fn compact(
        &self,
        source: SourceType,
        entity: &str,
        days: &BTreeSet<NaiveDate>,
        min_files: usize,
    ) -> Vec<(String, Result<Compacted, LakeError>)> {
        let mut results = Vec::new();
        if let Err(e) = check_segment("entity", entity) {
            results.push((entity.to_owned(), Err(e)));
            return results;
        }
        for table in [self.history(source, entity), self.quarantine(entity)] {
            let below = self.inner.config.run_compacts_below_bytes;
            let compacted = table.compact(Some(days), min_files, below).await;
            results.push((table.name.clone(), compacted));
        }
        results
    }

    /// Commits staged batches: per history table, one quarantine commit and
    /// one history commit for all of them (see the crate docs). Results in
    /// the order given; a batch that fails takes no other down with it.
    pub async fn commit(&self, staged: Vec<StagedBatch>) -> Vec<Result<CommitSummary, LakeError>> {
        crate::writer::commit_all(staged).await
    }

    /// A writer for one batch. Nothing it writes is visible until
    /// [`BatchWriter::commit`].
    pub fn writer(&self, entity: Arc<Entity>, key: PartitionKey, run_id: &str) -> BatchWriter {
        BatchWriter::new(self.clone(), entity, key, run_id)
    }

    fn run_report_location(&self, run_id: &str) -> Result<Path, LakeError> {
        check_segment("run id", run_id)?;
        Ok(self.location(&format!("{RUNS_DIR}/{run_id}.json")))
    }

    /// Stores a run report at `_runs/{run_id}.json`; returns where (root
    /// display + path).
    pub async fn put_run_report(&self, run_id: &str, json: Bytes) -> Result<String, LakeError> {
        let location = self.run_report_location(run_id)?;
        self.inner
            .opened
            .store
            .put(&location, PutPayload::from(json))
            .await?;
        Ok(format!(
            "{}/{}",
            self.root_display().trim_end_matches('/'),
            self.relative(&location)
        ))
    }

    /// The run report of `run_id`, if stored.
    pub async fn get_run_report(&self, run_id: &str) -> Result<Option<Bytes>, LakeError> {
        let location = self.run_report_location(run_id)?;
        match found(self.inner.opened.store.get(&location).await)? {
            Some(got) => Ok(Some(got.bytes().await?)),
            None => Ok(None),
        }
    }

    /// Every object under `folder` (relative to the root).
    async fn list(&self, folder: &str) -> Result<Vec<ObjectMeta>, LakeError> {
        let prefix = self.location(folder);
        Ok(self
            .inner
            .opened
            .store
            .list(Some(&prefix))
            .try_collect()
            .await?)
    }

    /// The run id of the most recently stored report (by store time, then name).
    pub async fn latest_run_id(&self) -> Result<Option<String>, LakeError> {
        let metas = self.list(RUNS_DIR).await?;
        Ok(metas
            .iter()
            .filter_map(|m| {
                let id = m.location.filename()?.strip_suffix(".json")?;
                Some((m.last_modified, id.to_owned()))
            })
            .max()
            .map(|(_, id)| id))
    }
}
