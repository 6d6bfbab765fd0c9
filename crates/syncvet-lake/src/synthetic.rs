//! Deterministic synthetic batches of any entity schema, for tests and
//! benchmarks (here and in `tests/`): the same `(first_row, rows)` always
//! gives the same values, so a re-write can be compared row for row.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
    ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

/// Rows `first_row .. first_row + rows` of a synthetic batch of `schema`.
/// Nullable columns are null on every seventh row; string columns mix
/// unique values (`id`) with low-cardinality ones, as real data does.
///
/// Panics on a column type the catalog does not produce.
pub fn batch(schema: &SchemaRef, first_row: u64, rows: usize) -> RecordBatch {
    let ids = first_row..first_row + rows as u64;
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(c, field)| {
            let null = |i: u64| field.is_nullable() && (i + c as u64).is_multiple_of(7);
            let c = c as u64;
            let array: ArrayRef = match field.data_type() {
                DataType::Utf8 => Arc::new(StringArray::from_iter(ids.clone().map(|i| {
                    (!null(i)).then(|| match c {
                        0 => format!("id-{i:010}"),
                        _ if c.is_multiple_of(3) => format!(
                            "{}-{}",
                            field.name(),
                            i.wrapping_mul(2_654_435_761) % 100_000
                        ),
                        _ => format!("{}-{}", field.name(), (i + c) % 40),
                    })
                }))),
                DataType::Int32 => Arc::new(Int32Array::from_iter(
                    ids.clone().map(|i| (!null(i)).then_some((i % 1000) as i32)),
                )),
                DataType::Int64 => Arc::new(Int64Array::from_iter(
                    ids.clone().map(|i| (!null(i)).then_some(i as i64)),
                )),
                DataType::Float64 => Arc::new(Float64Array::from_iter(
                    ids.clone().map(|i| (!null(i)).then_some(i as f64 / 8.0)),
                )),
                DataType::Decimal128(p, s) => Arc::new(
                    Decimal128Array::from_iter(
                        ids.clone()
                            .map(|i| (!null(i)).then_some((i % 100_000) as i128)),
                    )
                    .with_precision_and_scale(*p, *s)
                    .expect("catalog decimals are valid"),
                ),
                DataType::Boolean => Arc::new(BooleanArray::from_iter(
                    ids.clone()
                        .map(|i| (!null(i)).then_some(i.is_multiple_of(2))),
                )),
                DataType::Date32 => Arc::new(Date32Array::from_iter(
                    ids.clone()
                        .map(|i| (!null(i)).then_some(15_000 + (i % 5000) as i32)),
                )),
                DataType::Timestamp(TimeUnit::Microsecond, tz) => Arc::new(
                    TimestampMicrosecondArray::from_iter(ids.clone().map(|i| {
                        (!null(i)).then_some(1_700_000_000_000_000 + i as i64 * 1_000_003)
                    }))
                    .with_timezone_opt(tz.clone()),
                ),
                DataType::List(item) if item.data_type() == &DataType::Utf8 => {
                    let mut b = ListBuilder::new(StringBuilder::new()).with_field(item.clone());
                    for i in ids.clone() {
                        if null(i) {
                            b.append_null();
                        } else {
                            for k in 0..(i % 3) {
                                b.values().append_value(format!("alert-{k}"));
                            }
                            b.append(true);
                        }
                    }
                    Arc::new(b.finish())
                }
                other => panic!("synthetic::batch: unsupported column type {other}"),
            };
            array
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).expect("columns follow the schema")
}
