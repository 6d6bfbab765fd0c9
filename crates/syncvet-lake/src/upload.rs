//! A multipart upload that streams its parts as they fill but is completed
//! (made visible) only when the whole partition commits.

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use std::sync::Arc;
use tokio::task::JoinSet;

/// An [`AsyncFileWriter`] over `put_multipart` whose `complete` only flushes:
/// publishing is [`StagedFile::publish`], called at commit.
///
/// Memory: one part being filled plus `concurrency` parts in flight.
#[derive(Debug)]
pub(crate) struct DeferredUpload {
    upload: Box<dyn MultipartUpload>,
    location: Path,
    part_size: usize,
    concurrency: usize,
    pending: Vec<Bytes>,
    pending_len: usize,
    parts_sent: usize,
    bytes: u64,
    // Spawned so parts progress while the next row group is encoded;
    // dropping the set (writer aborted) cancels them.
    in_flight: JoinSet<object_store::Result<()>>,
}

/// A file whose bytes are all uploaded but not yet visible.
#[derive(Debug)]
pub(crate) struct StagedFile {
    pub location: Path,
    pub rows: u64,
    pub bytes: u64,
    upload: Box<dyn MultipartUpload>,
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl DeferredUpload {
    pub(crate) async fn start(
        store: &Arc<dyn ObjectStore>,
        location: Path,
        part_size: usize,
        concurrency: usize,
    ) -> object_store::Result<DeferredUpload> {
        let upload = store.put_multipart(&location).await?;
        Ok(DeferredUpload {
            upload,
            location,
            part_size,
            concurrency,
            pending: Vec::new(),
            pending_len: 0,
            parts_sent: 0,
            bytes: 0,
            in_flight: JoinSet::new(),
        })
    }

    async fn send_pending(&mut self) -> object_store::Result<()> {
        while self.in_flight.len() >= self.concurrency {
            self.join_one().await?;
        }
        let payload: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
        self.pending_len = 0;
        self.parts_sent += 1;
        self.in_flight.spawn(self.upload.put_part(payload));
        Ok(())
    }

    async fn join_one(&mut self) -> object_store::Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(join)) => Err(object_store::Error::JoinError { source: join }),
            None => Ok(()),
        }
    }

    /// The upload, all parts sent, ready to publish.
    pub(crate) fn into_staged(self, rows: u64) -> StagedFile {
        debug_assert!(self.in_flight.is_empty() && self.pending.is_empty());
        StagedFile {
            location: self.location,
            rows,
            bytes: self.bytes,
            upload: self.upload,
        }
    }

    /// Discards the parts sent so far.
    pub(crate) async fn abort(mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        abort_quietly(&mut self.upload, &self.location).await;
    }
}

impl AsyncFileWriter for DeferredUpload {
    fn write(&mut self, mut bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            self.bytes += bs.len() as u64;
            // Parts of exactly `part_size` (the last excepted): some S3
            // implementations require equal part sizes.
            while !bs.is_empty() {
                let take = (self.part_size - self.pending_len).min(bs.len());
                let chunk = bs.split_to(take);
                self.pending_len += chunk.len();
                self.pending.push(chunk);
                if self.pending_len == self.part_size {
                    self.send_pending().await.map_err(external)?;
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            if self.pending_len > 0 || self.parts_sent == 0 {
                self.send_pending().await.map_err(external)?;
            }
            while !self.in_flight.is_empty() {
                self.join_one().await.map_err(external)?;
            }
            Ok(())
        }
        .boxed()
    }
}

impl StagedFile {
    /// Makes the file visible (completes the multipart upload).
    pub(crate) async fn publish(mut self) -> object_store::Result<()> {
        self.upload.complete().await.map(|_| ())
    }

    pub(crate) async fn abort(mut self) {
        abort_quietly(&mut self.upload, &self.location).await;
    }
}

async fn abort_quietly(upload: &mut Box<dyn MultipartUpload>, location: &Path) {
    // Best effort: an upload left behind is invisible, and S3/GCS lifecycle
    // rules remove incomplete uploads.
    if let Err(e) = upload.abort().await {
        tracing::debug!(%location, error = %e, "could not abort a multipart upload");
    }
}
