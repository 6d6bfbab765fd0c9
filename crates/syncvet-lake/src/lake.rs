//! [`Lake`]: the opened lake and its read-side queries.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use syncvet_model::{Entity, SourceType};

use crate::files::{join, relative};
use crate::layout::{MANIFEST_FILE, RUNS_DIR, check_segment};
use crate::store::{self, OpenedStore};
use crate::{LakeConfig, LakeError, Manifest, PartitionKey, PartitionWriter};

/// An opened lake. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Lake {
    pub(crate) inner: Arc<LakeInner>,
}

pub(crate) struct LakeInner {
    pub(crate) opened: OpenedStore,
    pub(crate) config: LakeConfig,
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
                config: config.clone(),
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

    /// The manifest of a partition, if it is committed.
    pub async fn manifest(&self, key: &PartitionKey) -> Result<Option<Manifest>, LakeError> {
        let location = self.location(&key.manifest_path());
        let Some(got) = found(self.inner.opened.store.get(&location).await)? else {
            return Ok(None);
        };
        let bytes = got.bytes().await?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LakeError::CorruptManifest {
                path: location.to_string(),
                reason: e.to_string(),
            })
    }

    /// Whether a partition is committed (its manifest exists).
    pub async fn is_done(&self, key: &PartitionKey) -> Result<bool, LakeError> {
        let location = self.location(&key.manifest_path());
        Ok(found(self.inner.opened.store.head(&location).await)?.is_some())
    }

    /// Every committed partition of an entity, sorted by source id and date.
    /// One listing of the entity's folder, whatever the number of partitions.
    pub async fn done_partitions(
        &self,
        source: SourceType,
        entity: &str,
    ) -> Result<Vec<PartitionKey>, LakeError> {
        check_segment("entity", entity)?;
        let prefix = self.location(&format!("{}/{entity}", source.as_str()));
        let mut keys: Vec<PartitionKey> = self
            .inner
            .opened
            .store
            .list(Some(&prefix))
            .try_filter_map(|meta| {
                let key = (meta.location.filename() == Some(MANIFEST_FILE))
                    .then(|| PartitionKey::from_manifest_path(&self.relative(&meta.location)))
                    .flatten();
                futures::future::ready(Ok(key))
            })
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// Every object under a partition's folder and its quarantine folder
    /// (paths relative to the root, sorted): what a reader globbing the
    /// folders would find. Staging files of unfinished uploads are not objects.
    pub async fn list_partition_objects(
        &self,
        key: &PartitionKey,
    ) -> Result<Vec<String>, LakeError> {
        let mut out = Vec::new();
        for folder in [key.path(), key.quarantine_path()] {
            let metas = self.list(&folder).await?;
            out.extend(metas.iter().map(|m| self.relative(&m.location)));
        }
        out.sort();
        Ok(out)
    }

    /// A writer for one partition. Nothing it writes is visible until
    /// [`PartitionWriter::commit`].
    pub fn writer(&self, entity: Arc<Entity>, key: PartitionKey, run_id: &str) -> PartitionWriter {
        PartitionWriter::new(self.clone(), entity, key, run_id)
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
