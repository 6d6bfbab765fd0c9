//! The Arrow builders of a page: one per column, fed by accepted rows only.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder,
    Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::cell::Cell;
use crate::{Entity, FieldRole, FieldType};

/// One column's builder. Decimal and timestamp builders carry the column's
/// exact type (precision and scale, the `UTC` zone) from the start, and the
/// list builder its `item` field, so `finish` yields the catalog's schema.
#[derive(Debug)]
enum ColumnBuilder {
    Str(StringBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    List(ListBuilder<StringBuilder>),
}

impl ColumnBuilder {
    fn new(ty: FieldType) -> ColumnBuilder {
        let arrow_type = ty.arrow_type();
        match ty {
            FieldType::String => ColumnBuilder::Str(StringBuilder::new()),
            FieldType::Int32 => ColumnBuilder::Int32(Int32Builder::new()),
            FieldType::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
            FieldType::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
            FieldType::Decimal { .. } => {
                ColumnBuilder::Decimal(Decimal128Builder::new().with_data_type(arrow_type))
            }
            FieldType::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
            FieldType::Date => ColumnBuilder::Date(Date32Builder::new()),
            FieldType::Timestamp => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::new().with_data_type(arrow_type),
            ),
            FieldType::StringList => {
                let DataType::List(item) = arrow_type else {
                    unreachable!("list<string> is an Arrow list")
                };
                ColumnBuilder::List(ListBuilder::new(StringBuilder::new()).with_field(item))
            }
        }
    }

    /// Appends a cell produced for this column's type (absent and null
    /// append a null).
    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (ColumnBuilder::Str(b), Cell::Str(v)) => b.append_value(v),
            (ColumnBuilder::Int32(b), Cell::Int32(v)) => b.append_value(v),
            (ColumnBuilder::Int64(b), Cell::Int64(v)) => b.append_value(v),
            (ColumnBuilder::Float64(b), Cell::Float64(v)) => b.append_value(v),
            (ColumnBuilder::Decimal(b), Cell::Decimal(v)) => b.append_value(v),
            (ColumnBuilder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Date(b), Cell::Date(v)) => b.append_value(v),
            (ColumnBuilder::Timestamp(b), Cell::Timestamp(v)) => b.append_value(v),
            (ColumnBuilder::List(b), Cell::List(items)) => {
                for item in items {
                    b.values().append_option(item);
                }
                b.append(true);
            }
            (b, Cell::Absent | Cell::Null) => b.append_null(),
            (b, cell) => {
                unreachable!("cells are coerced to their column's type: {b:?} got {cell:?}")
            }
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Str(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Decimal(b) => b.append_null(),
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::List(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Str(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::List(b) => Arc::new(b.finish()),
        }
    }
}

/// The builders of an entity's columns, in schema order.
#[derive(Debug)]
pub(crate) struct Columns {
    schema: SchemaRef,
    /// (index in `Entity::fields`, builder, whether it is the `deleted` flag).
    columns: Vec<(usize, ColumnBuilder, bool)>,
}

impl Columns {
    pub(crate) fn new(entity: &Entity) -> Columns {
        let columns = entity
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.role != FieldRole::SourceKey)
            .map(|(i, f)| {
                (
                    i,
                    ColumnBuilder::new(f.field_type),
                    f.role == FieldRole::DeletedFlag,
                )
            })
            .collect();
        Columns {
            schema: entity.arrow_schema(),
            columns,
        }
    }

    /// Appends an accepted row, taking its cells (which leaves them absent).
    pub(crate) fn append(&mut self, cells: &mut [Cell<'_>]) {
        for (i, builder, is_deleted_flag) in &mut self.columns {
            let cell = std::mem::take(&mut cells[*i]);
            if *is_deleted_flag && cell.is_empty() {
                builder.append(Cell::Bool(false));
            } else {
                builder.append(cell);
            }
        }
    }

    /// The rows appended since the last call, as a batch of the entity's
    /// schema; the builders start over empty.
    pub(crate) fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let arrays = self
            .columns
            .iter_mut()
            .map(|(_, b, _)| b.finish())
            .collect();
        RecordBatch::try_new(self.schema.clone(), arrays)
    }
}
