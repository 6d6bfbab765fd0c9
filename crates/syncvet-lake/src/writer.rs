//! [`PartitionWriter`]: streams one partition and commits it exactly once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::Utc;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use syncvet_model::Entity;

use crate::files::FileSeries;
use crate::layout::CLAIM_FILE;
use crate::manifest::{MANIFEST_FORMAT_VERSION, ManifestFile};
use crate::quarantine::{quarantine_schema, rejects_batch};
use crate::upload::StagedFile;
use crate::{Lake, LakeError, Manifest, PartitionKey, RejectedRecord};

/// What a successful commit wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// Data files, relative to the lake root.
    pub files: Vec<String>,
    /// Rows in the data files.
    pub rows: u64,
    /// Rows sent to quarantine.
    pub rejected: u64,
    /// Bytes of the data files.
    pub bytes: u64,
}

/// The partition's manifest as the writer first saw it: decides the
/// manifest's put mode, so a commit made by someone else meanwhile is a
/// conflict rather than silently replaced.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Absent,
    Present(UpdateVersion),
}

/// Writes one partition. Data files and quarantine files are streamed as
/// multipart uploads that are completed only by [`PartitionWriter::commit`];
/// dropping or aborting the writer leaves nothing visible.
pub struct PartitionWriter {
    t: Target,
    seen: Option<Seen>,
    data: Option<FileSeries>,
    quarantine: Option<FileSeries>,
    rows: u64,
    rejected: u64,
}

impl std::fmt::Debug for PartitionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionWriter")
            .field("partition", &self.t.key.path())
            .field("run_id", &self.t.run_id)
            .field("rows", &self.rows)
            .field("rejected", &self.rejected)
            .finish()
    }
}

impl PartitionWriter {
    pub(crate) fn new(lake: Lake, entity: Arc<Entity>, key: PartitionKey, run_id: &str) -> Self {
        PartitionWriter {
            t: Target {
                lake,
                entity,
                key,
                run_id: run_id.to_owned(),
            },
            seen: None,
            data: None,
            quarantine: None,
            rows: 0,
            rejected: 0,
        }
    }

    /// The partition being written.
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

    async fn start(&mut self) -> Result<(), LakeError> {
        if self.seen.is_none() {
            self.seen = Some(self.t.read_seen().await?);
        }
        Ok(())
    }

    /// Appends a batch of the entity's schema to the partition.
    pub async fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), LakeError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.start().await?;
        let schema = self.t.entity.arrow_schema();
        let conformed;
        let batch =
            if batch.schema() == schema {
                batch
            } else {
                // Same columns but, say, a non-null column declared nullable:
                // re-label it (checking the data) rather than fail.
                conformed = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                    .map_err(|e| LakeError::SchemaMismatch {
                        partition: self.t.key.path(),
                        reason: e.to_string(),
                    })?;
                &conformed
            };
        if self.data.is_none() {
            self.data = Some(self.t.series(&self.t.key.path(), schema)?);
        }
        self.data.as_mut().expect("set above").write(batch).await?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Appends rejected records to the partition's quarantine.
    pub async fn write_rejects<R: RejectedRecord>(
        &mut self,
        rejects: &[R],
    ) -> Result<(), LakeError> {
        if rejects.is_empty() {
            return Ok(());
        }
        self.start().await?;
        if self.quarantine.is_none() {
            self.quarantine = Some(
                self.t
                    .series(&self.t.key.quarantine_path(), quarantine_schema())?,
            );
        }
        let batch = rejects_batch(rejects)?;
        self.quarantine
            .as_mut()
            .expect("set above")
            .write(&batch)
            .await?;
        self.rejected += rejects.len() as u64;
        Ok(())
    }

    /// Drops everything written so far (the upstream continuation expired
    /// and the partition is read again from the start).
    pub async fn restart(&mut self) -> Result<(), LakeError> {
        self.discard().await;
        self.rows = 0;
        self.rejected = 0;
        Ok(())
    }

    async fn discard(&mut self) {
        if let Some(s) = self.data.take() {
            s.abort().await;
        }
        if let Some(s) = self.quarantine.take() {
            s.abort().await;
        }
    }

    /// Discards the partition: nothing written becomes visible.
    pub async fn abort(mut self) {
        self.discard().await;
    }

    /// Reconciles, then makes the partition visible: completes every upload
    /// and writes `_manifest.json` last. See the crate docs for the protocol.
    pub async fn commit(mut self, source_total: Option<u64>) -> Result<CommitSummary, LakeError> {
        let partition = self.t.key.path();
        if let Some(expected) = source_total
            && expected != self.rows + self.rejected
        {
            self.discard().await;
            return Err(LakeError::Reconciliation {
                partition,
                expected,
                written: self.rows,
                rejected: self.rejected,
            });
        }
        if let Err(e) = self.start().await {
            self.discard().await;
            return Err(e);
        }
        let data = match self.data.take() {
            Some(s) => s,
            None => self.t.series(&partition, self.t.entity.arrow_schema())?,
        };
        let data = data.finish().await;
        let quarantine = match self.quarantine.take() {
            Some(s) => s.finish().await.map(Some),
            None => Ok(None),
        };
        let (data, quarantine) = match (data, quarantine) {
            (Ok(d), Ok(q)) => (d, q.unwrap_or_default()),
            (Ok(files), Err(e)) | (Err(e), Ok(Some(files))) => {
                for f in files {
                    f.abort().await;
                }
                return Err(e);
            }
            (Err(e), _) => return Err(e),
        };

        let seen = self.seen.clone().unwrap_or(Seen::Absent);
        let claim = self.t.claim(&seen).await;
        let counts = (self.rows, self.rejected);
        let outcome = match claim {
            Ok(()) => {
                self.t
                    .publish(data, quarantine, source_total, counts, seen)
                    .await
            }
            Err(e) => {
                for f in data.into_iter().chain(quarantine) {
                    f.abort().await;
                }
                return Err(e);
            }
        };
        self.t.release_claim().await;
        let summary = outcome?;
        tracing::info!(
            partition = %partition,
            run_id = %self.t.run_id,
            rows = summary.rows,
            rejected = summary.rejected,
            bytes = summary.bytes,
            files = summary.files.len(),
            "partition committed"
        );
        Ok(summary)
    }
}

/// What the writer writes to; shared by reference across awaits, so it is
/// `Sync` (the Parquet encoders in [`PartitionWriter`] are not).
struct Target {
    lake: Lake,
    entity: Arc<Entity>,
    key: PartitionKey,
    run_id: String,
}

impl Target {
    fn manifest_location(&self) -> Path {
        self.lake.location(&self.key.manifest_path())
    }

    async fn read_seen(&self) -> Result<Seen, LakeError> {
        match self
            .lake
            .inner
            .opened
            .store
            .head(&self.manifest_location())
            .await
        {
            Ok(meta) => Ok(Seen::Present(UpdateVersion {
                e_tag: meta.e_tag,
                version: meta.version,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(Seen::Absent),
            Err(e) => Err(e.into()),
        }
    }

    fn series(
        &self,
        folder: &str,
        schema: arrow::datatypes::SchemaRef,
    ) -> Result<FileSeries, LakeError> {
        FileSeries::new(
            self.lake.inner.opened.store.clone(),
            self.lake.location(folder),
            schema,
            &self.lake.inner.config,
        )
    }

    fn claim_location(&self) -> Path {
        self.lake
            .location(&format!("{}/{CLAIM_FILE}", self.key.path()))
    }

    /// Takes the partition's commit claim (create-only), or takes over one
    /// older than `commit_claim_ttl_secs` (left by a crashed writer).
    async fn claim(&self, seen: &Seen) -> Result<(), LakeError> {
        let store = &self.lake.inner.opened.store;
        let location = self.claim_location();
        let body = || {
            PutPayload::from(
                serde_json::json!({"run_id": self.run_id, "claimed_at": Utc::now()}).to_string(),
            )
        };
        let conflict = || LakeError::CommitConflict {
            partition: self.key.path(),
        };
        match store
            .put_opts(&location, body(), PutMode::Create.into())
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                let meta = match store.head(&location).await {
                    Ok(m) => m,
                    // Released meanwhile: someone else just committed.
                    Err(object_store::Error::NotFound { .. }) => return Err(conflict()),
                    Err(e) => return Err(e.into()),
                };
                let ttl = Duration::from_secs(self.lake.inner.config.commit_claim_ttl_secs);
                let age = (Utc::now() - meta.last_modified)
                    .to_std()
                    .unwrap_or_default();
                if age < ttl {
                    return Err(conflict());
                }
                tracing::warn!(partition = %self.key, age_secs = age.as_secs(), "taking over a stale commit claim");
                let mode = if self.lake.inner.opened.supports_update {
                    PutMode::Update(UpdateVersion {
                        e_tag: meta.e_tag,
                        version: meta.version,
                    })
                } else {
                    PutMode::Overwrite
                };
                store
                    .put_opts(&location, body(), mode.into())
                    .await
                    .map_err(|e| match e {
                        object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. } => conflict(),
                        e => e.into(),
                    })?;
            }
            Err(e) => return Err(e.into()),
        }
        // Under the claim, a manifest that changed since this writer started
        // means another writer committed in between.
        match self.read_seen().await {
            Ok(now) if &now == seen => Ok(()),
            Ok(_) => {
                self.release_claim().await;
                Err(conflict())
            }
            Err(e) => {
                self.release_claim().await;
                Err(e)
            }
        }
    }

    async fn release_claim(&self) {
        if let Err(e) = self
            .lake
            .inner
            .opened
            .store
            .delete(&self.claim_location())
            .await
        {
            tracing::debug!(partition = %self.key, error = %e, "could not release the commit claim");
        }
    }

    async fn publish(
        &self,
        data: Vec<StagedFile>,
        quarantine: Vec<StagedFile>,
        source_total: Option<u64>,
        (rows, rejected): (u64, u64),
        seen: Seen,
    ) -> Result<CommitSummary, LakeError> {
        let describe = |f: &StagedFile| ManifestFile {
            path: self.lake.relative(&f.location),
            rows: f.rows,
            bytes: f.bytes,
        };
        let files: Vec<ManifestFile> = data.iter().map(describe).collect();
        let quarantine_files: Vec<ManifestFile> = quarantine.iter().map(describe).collect();
        futures::future::try_join_all(data.into_iter().chain(quarantine).map(StagedFile::publish))
            .await?;

        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            source: self.key.source,
            entity: self.key.entity.clone(),
            source_id: self.key.source_id.clone(),
            batch_date: self.key.batch_date,
            run_id: self.run_id.clone(),
            committed_at: Utc::now(),
            schema_fingerprint: self.entity.schema_fingerprint().to_owned(),
            source_total,
            rows,
            rejected,
            bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            quarantine_files,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
        let mode = match seen {
            Seen::Absent => PutMode::Create,
            Seen::Present(v) if self.lake.inner.opened.supports_update => PutMode::Update(v),
            // Local file systems cannot update conditionally; the claim
            // already serialises committers there.
            Seen::Present(_) => PutMode::Overwrite,
        };
        let store = &self.lake.inner.opened.store;
        store
            .put_opts(
                &self.manifest_location(),
                json.into(),
                PutOptions::from(mode),
            )
            .await
            .map_err(|e| match e {
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => LakeError::CommitConflict {
                    partition: self.key.path(),
                },
                e => e.into(),
            })?;

        self.remove_unlisted(&manifest).await;
        Ok(CommitSummary {
            files: manifest.files.iter().map(|f| f.path.clone()).collect(),
            rows: manifest.rows,
            rejected: manifest.rejected,
            bytes: manifest.bytes,
        })
    }

    /// After the commit: deletes files of earlier runs that the manifest
    /// does not list, and staging files of crashed local uploads. Best
    /// effort: the manifest already says which files count.
    async fn remove_unlisted(&self, manifest: &Manifest) {
        let store = &self.lake.inner.opened.store;
        let mut keep: HashSet<Path> = manifest
            .files
            .iter()
            .chain(&manifest.quarantine_files)
            .map(|f| self.lake.location(&f.path))
            .collect();
        keep.insert(self.manifest_location());
        keep.insert(self.claim_location());
        for folder in [self.key.path(), self.key.quarantine_path()] {
            let prefix = self.lake.location(&folder);
            let listed: Result<Vec<_>, _> = store.list(Some(&prefix)).try_collect().await;
            let stale = match listed {
                Ok(metas) => metas
                    .into_iter()
                    .map(|m| m.location)
                    .filter(|l| !keep.contains(l)),
                Err(e) => {
                    tracing::warn!(folder, error = %e, "could not list the partition to clean up");
                    continue;
                }
            };
            for location in stale.collect::<Vec<_>>() {
                match store.delete(&location).await {
                    Ok(()) => {
                        tracing::debug!(%location, "removed a file the manifest does not list")
                    }
                    Err(e) => {
                        tracing::warn!(%location, error = %e, "could not remove an unlisted file")
                    }
                }
            }
            if let Some(dir) = &self.lake.inner.opened.local_dir {
                let ttl = Duration::from_secs(self.lake.inner.config.commit_claim_ttl_secs);
                remove_local_staging(&dir.join(&folder), ttl);
            }
        }
    }
}

/// object_store's local staging files are `name#N`; a crashed process
/// leaves them behind. They match no `*.parquet` glob, but take space.
/// Only those untouched for `older_than` go: a younger one may belong to a
/// writer racing on this partition right now, which must then lose on the
/// claim, not on a file pulled from under it.
fn remove_local_staging(dir: &std::path::Path, older_than: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let staging = name
            .rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|idle| idle >= older_than);
        if staging && idle {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl Drop for PartitionWriter {
    /// A writer dropped mid-partition (its task aborted) aborts its uploads
    /// in the background; local staging files are removed by object_store.
    fn drop(&mut self) {
        let series: Vec<FileSeries> = self
            .data
            .take()
            .into_iter()
            .chain(self.quarantine.take())
            .collect();
        if series.is_empty() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for s in series {
                    s.abort().await;
                }
            });
        }
    }
}
