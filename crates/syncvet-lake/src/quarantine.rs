//! Rejected records, for the quarantine table of their entity.

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::PartitionKey;
use crate::writer::lineage_fields;

/// A record the decoder could not map, as the quarantine stores it.
///
/// Implemented for `(raw, field, reason)` tuples of strings; the decoder's
/// reject type implements it too, so its slices can be passed as they are.
pub trait RejectedRecord {
    /// The record's JSON text as received.
    fn raw(&self) -> &str;
    /// The field that failed (empty when the record as a whole is bad).
    fn field(&self) -> &str;
    /// Why the record was rejected.
    fn reason(&self) -> &str;
}

impl<A: AsRef<str>, B: AsRef<str>, C: AsRef<str>> RejectedRecord for (A, B, C) {
    fn raw(&self) -> &str {
        self.0.as_ref()
    }
    fn field(&self) -> &str {
        self.1.as_ref()
    }
    fn reason(&self) -> &str {
        self.2.as_ref()
    }
}

impl RejectedRecord for syncvet_model::Reject {
    fn raw(&self) -> &str {
        &self.raw
    }
    fn field(&self) -> &str {
        &self.field
    }
    fn reason(&self) -> &str {
        &self.reason
    }
}

/// The columns of a quarantine file: where the record came from, the
/// record itself and why it was refused, and the lineage. The batch date is
/// the table's partition.
pub(crate) fn file_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields = vec![
            Field::new("source_id", DataType::Utf8, false),
            Field::new("source_type", DataType::Utf8, false),
            Field::new("entity", DataType::Utf8, false),
            Field::new("raw", DataType::Utf8, false),
            Field::new("field", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, false),
        ];
        fields.extend(lineage_fields());
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

pub(crate) fn rejects_batch<R: RejectedRecord>(
    rejects: &[R],
    key: &PartitionKey,
    lineage: [ArrayRef; 2],
    schema: &SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = rejects.len();
    let constant = |v: &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n)))
    };
    let column = |f: fn(&R) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rejects.iter().map(f)))
    };
    let mut columns = vec![
        constant(&key.source_id),
        constant(key.source.as_str()),
        constant(&key.entity),
        column(R::raw),
        column(R::field),
        column(R::reason),
    ];
    columns.extend(lineage);
    RecordBatch::try_new(schema.clone(), columns)
}
