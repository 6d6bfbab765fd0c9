//! Rejected records as Parquet: columns `raw`, `field`, `reason`.

use std::sync::{Arc, LazyLock};

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

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

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("raw", DataType::Utf8, false),
        Field::new("field", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ]))
});

/// The schema of quarantine files.
pub fn quarantine_schema() -> SchemaRef {
    SCHEMA.clone()
}

pub(crate) fn rejects_batch<R: RejectedRecord>(
    rejects: &[R],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let column = |f: fn(&R) -> &str| Arc::new(StringArray::from_iter_values(rejects.iter().map(f)));
    RecordBatch::try_new(
        quarantine_schema(),
        vec![column(R::raw), column(R::field), column(R::reason)],
    )
}
