//! Rewriting data files of one day of a table: compaction (many small
//! files into few), copy-on-write (one source's rows dropped from a
//! file that also holds other sources', when that source's batch is
//! replaced) and a schema change (every file in the widened types). Rows are streamed: read a batch of rows, write it through
//! delta-rs's file writer; memory is one row group, whatever the files.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, new_null_array};
use arrow::compute::{CastOptions, cast_with_options, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use deltalake::DeltaTableError;
use deltalake::datafile::writer::PartitionWriter;
use deltalake::kernel::Add;
use deltalake::logstore::parquet_reader::ParquetObjectReader;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use syncvet_model::Chain;

use crate::table::Partition;
use crate::writer::FileSettings;

/// Rows read from the old files per step.
const READ_BATCH_ROWS: usize = 8192;

/// A data file of the table to read: its path relative to the table root
/// (as the log has it, not percent-encoded) and its size.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct OldFile {
    pub path: String,
    pub size: u64,
}

/// The new files, and how many rows of the old ones they left out.
#[derive(Debug, Default)]
pub(crate) struct Rewritten {
    pub adds: Vec<Add>,
    pub rows_dropped: u64,
}

/// What is kept of the rows read.
pub(crate) enum Keep<'a> {
    All,
    /// Every row but those whose `column` is one of `sources`.
    AllSourcesBut {
        column: &'a str,
        sources: &'a BTreeSet<String>,
    },
}

/// Reads `files` in order and writes the rows `keep` keeps into new files
/// of `schema` (the table's columns without the partition column) in the
/// partition's folder. A file written before the table gained a column reads
/// NULL for it. On error nothing new is left behind.
pub(crate) async fn rewrite(
    store: Arc<dyn ObjectStore>,
    settings: &FileSettings,
    schema: SchemaRef,
    partition: &Partition,
    files: &[OldFile],
    keep: Keep<'_>,
) -> Result<Rewritten, DeltaTableError> {
    let mut output = Output {
        settings,
        store: store.clone(),
        schema: &schema,
        partition,
        writer: None,
    };
    let copied = copy(&store, &mut output, files, &keep).await;
    match (copied, output.writer) {
        (Ok(rows_dropped), writer) => Ok(Rewritten {
            adds: match writer {
                Some(writer) => writer.close().await?,
                None => Vec::new(),
            },
            rows_dropped,
        }),
        (Err(e), writer) => {
            if let Some(writer) = writer
                && let Err(abort) = writer.abort().await
            {
                tracing::debug!(error = %Chain(&abort), "could not abort a rewrite's upload");
            }
            Err(e)
        }
    }
}

/// The new files, opened at the first rows kept (their encodings follow
/// those rows: [`FileSettings::partition_writer`]).
struct Output<'a> {
    settings: &'a FileSettings,
    store: Arc<dyn ObjectStore>,
    schema: &'a SchemaRef,
    partition: &'a Partition,
    writer: Option<PartitionWriter>,
}

impl Output<'_> {
    async fn write(&mut self, rows: &RecordBatch) -> Result<(), DeltaTableError> {
        let rows = conform(rows, self.schema)?;
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => self.writer.insert(self.settings.partition_writer(
                self.store.clone(),
                self.schema.clone(),
                self.partition,
                &rows,
            )?),
        };
        writer.write(&rows).await
    }
}

async fn copy(
    store: &Arc<dyn ObjectStore>,
    output: &mut Output<'_>,
    files: &[OldFile],
    keep: &Keep<'_>,
) -> Result<u64, DeltaTableError> {
    let mut dropped = 0u64;
    for file in files {
        let reader = ParquetObjectReader::new(store.clone(), Path::from(file.path.as_str()))
            .with_file_size(file.size);
        let mut rows = ParquetRecordBatchStreamBuilder::new(reader)
            .await?
            .with_batch_size(READ_BATCH_ROWS)
            .build()?;
        while let Some(batch) = rows.try_next().await? {
            let read = batch.num_rows() as u64;
            let batch = match keep {
                Keep::All => batch,
                Keep::AllSourcesBut { column, sources } => {
                    let Some(source) = batch.column_by_name(column) else {
                        return Err(DeltaTableError::Generic(format!(
                            "{} has no column {column}",
                            file.path
                        )));
                    };
                    let source = source.as_string::<i32>();
                    let mask: BooleanArray = (0..source.len())
                        .map(|i| Some(source.is_null(i) || !sources.contains(source.value(i))))
                        .collect();
                    filter_record_batch(&batch, &mask)?
                }
            };
            dropped += read - batch.num_rows() as u64;
            if batch.num_rows() > 0 {
                output.write(&batch).await?;
            }
        }
    }
    Ok(dropped)
}

/// The rows in the table's current columns: a column the file predates
/// reads NULL, a column stored with a narrower type is cast to the
/// widened one (a value that does not fit is an error, never a NULL).
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => cast_with_options(column, field.data_type(), &strict),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}
