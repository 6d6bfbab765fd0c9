//! The one error type of the crate.

/// What went wrong in the lake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LakeError {
    /// The lake URL names a scheme this build does not know.
    #[error(
        "lake url `{url}`: unknown scheme `{scheme}`; use a plain path, file://, s3://, az://, abfs:// or gs://"
    )]
    UnknownScheme {
        /// The URL as configured (credentials removed).
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// The lake URL cannot be parsed or does not name a bucket/container.
    #[error("lake url `{url}` is invalid: {reason}")]
    InvalidUrl {
        /// The URL as configured (credentials removed).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range or unknown to the store.
    #[error("lake config: {0}")]
    InvalidConfig(String),
    /// A source id, entity or run id would not be a single safe path segment.
    #[error("{what} `{value}` cannot be used in a lake path: {reason}")]
    UnsafePathSegment {
        /// Which value (`source id`, `entity`, `run id`).
        what: &'static str,
        /// The value, with control characters escaped.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The written and rejected rows do not add up to the source's total:
    /// nothing was committed.
    #[error(
        "partition {partition} does not reconcile: source total {expected}, written {written} + rejected {rejected} = {}",
        written + rejected
    )]
    Reconciliation {
        /// The partition path.
        partition: String,
        /// The source's `totalCount`.
        expected: u64,
        /// Rows written to the data files.
        written: u64,
        /// Rows sent to quarantine.
        rejected: u64,
    },
    /// Another writer committed this batch since this writer started: this
    /// writer's files were discarded.
    #[error(
        "batch {partition} was committed by another writer; this writer's files were discarded"
    )]
    CommitConflict {
        /// The partition path.
        partition: String,
    },
    /// A batch does not have the entity's schema.
    #[error("batch for {partition} does not match the entity schema: {reason}")]
    SchemaMismatch {
        /// The partition path.
        partition: String,
        /// What differs.
        reason: String,
    },
    /// The catalog changed a column's type in a way the table's data
    /// cannot follow (see the `evolve` module for what can).
    #[error(
        "Delta table {table}: column `{column}` is {table_type} in the table but {catalog_type} in the catalog, which it cannot become ({why}); nothing was written to the table"
    )]
    TypeChange {
        /// The table, relative to the lake root.
        table: String,
        /// The column, dotted for a nested field.
        column: String,
        /// Its type in the table.
        table_type: String,
        /// Its type in the catalog (`absent` when it left the catalog).
        catalog_type: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// The run ended before the batch's group was committed.
    #[error("the batch was staged but its group was never committed")]
    CommitAbandoned,
    /// A table's log says something this writer cannot act on safely.
    #[error("Delta table {table}: {reason}")]
    CorruptLog {
        /// The table, relative to the lake root.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// The lake holds the first layout (Parquet folders per source and date
    /// with `_manifest.json`) where a Delta table belongs.
    #[error(
        "{table} holds `{found}`: a lake of the old layout (a folder per source and date with _manifest.json), not a Delta table; land into a new lake.url (or move the old folders away) rather than mix the two"
    )]
    OldLayout {
        /// The table, relative to the lake root.
        table: String,
        /// The old-layout folder or file found in it.
        found: String,
    },
    /// delta-rs failed on a table (after its own and our commit retries).
    #[error("Delta table {table}")]
    Delta {
        /// The table, relative to the lake root.
        table: String,
        /// The delta-rs error.
        source: Box<deltalake::DeltaTableError>,
    },
    /// The object store failed (after its own retries).
    #[error("object store")]
    Store(#[from] object_store::Error),
    /// Encoding Parquet failed.
    #[error("parquet")]
    Parquet(#[source] parquet::errors::ParquetError),
    /// Building an Arrow batch failed.
    #[error("arrow")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Local file system I/O (creating the lake folder).
    #[error("{path}")]
    Io {
        /// The local path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl From<parquet::errors::ParquetError> for LakeError {
    /// Store errors travel through the Parquet writer boxed; unbox them so
    /// callers can tell a store fault from an encoding fault.
    fn from(e: parquet::errors::ParquetError) -> Self {
        match e {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<object_store::Error>() {
                    Ok(store) => LakeError::Store(*store),
                    Err(other) => {
                        LakeError::Parquet(parquet::errors::ParquetError::External(other))
                    }
                }
            }
            other => LakeError::Parquet(other),
        }
    }
}
