//! A series of Parquet files (`part-00000.parquet`, …) in one folder,
//! rotated by size, each streamed through a [`DeferredUpload`].

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::ObjectStore;
use object_store::path::{Path, PathPart};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::layout::part_file_name;
use crate::upload::{DeferredUpload, StagedFile};
use crate::{LakeConfig, LakeError};

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

pub(crate) fn writer_properties(config: &LakeConfig) -> Result<WriterProperties, LakeError> {
    let level = ZstdLevel::try_new(config.zstd_level)?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_dictionary_enabled(true)
        // `id` is unique within a partition: a dictionary would only cost
        // hashing every value before falling back to plain encoding.
        .set_column_dictionary_enabled(ColumnPath::from("id"), false)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(config.row_group_rows))
        .build())
}

struct OpenFile {
    writer: AsyncArrowWriter<DeferredUpload>,
    rows: u64,
}

/// Files written so far in one folder; nothing is visible until
/// [`StagedFile::publish`].
pub(crate) struct FileSeries {
    store: Arc<dyn ObjectStore>,
    folder: Path,
    schema: SchemaRef,
    props: WriterProperties,
    max_file_bytes: u64,
    part_size: usize,
    concurrency: usize,
    current: Option<OpenFile>,
    staged: Vec<StagedFile>,
}

impl FileSeries {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        folder: Path,
        schema: SchemaRef,
        config: &LakeConfig,
    ) -> Result<FileSeries, LakeError> {
        Ok(FileSeries {
            store,
            folder,
            schema,
            props: writer_properties(config)?,
            max_file_bytes: config.max_file_bytes,
            part_size: config.part_size_bytes,
            concurrency: config.upload_concurrency,
            current: None,
            staged: Vec::new(),
        })
    }

    async fn open_next(&mut self) -> Result<&mut OpenFile, LakeError> {
        if self.current.is_none() {
            let location = self.folder.clone().join(part_file_name(self.staged.len()));
            let upload =
                DeferredUpload::start(&self.store, location, self.part_size, self.concurrency)
                    .await?;
            let writer =
                AsyncArrowWriter::try_new(upload, self.schema.clone(), Some(self.props.clone()))?;
            self.current = Some(OpenFile { writer, rows: 0 });
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<(), LakeError> {
        let max = self.max_file_bytes;
        let file = self.open_next().await?;
        file.writer.write(batch).await?;
        file.rows += batch.num_rows() as u64;
        let size = (file.writer.bytes_written() + file.writer.in_progress_size()) as u64;
        if size >= max {
            self.close_current().await?;
        }
        Ok(())
    }

    async fn close_current(&mut self) -> Result<(), LakeError> {
        if let Some(mut file) = self.current.take() {
            file.writer.finish().await?;
            self.staged
                .push(file.writer.into_inner().into_staged(file.rows));
        }
        Ok(())
    }

    /// Closes the open file (writing an empty one if none was written, so a
    /// partition always carries its schema) and returns the staged files.
    pub(crate) async fn finish(mut self) -> Result<Vec<StagedFile>, LakeError> {
        if self.staged.is_empty() {
            self.open_next().await?;
        }
        self.close_current().await?;
        Ok(std::mem::take(&mut self.staged))
    }

    pub(crate) async fn abort(mut self) {
        if let Some(file) = self.current.take() {
            file.writer.into_inner().abort().await;
        }
        for f in std::mem::take(&mut self.staged) {
            f.abort().await;
        }
    }
}
