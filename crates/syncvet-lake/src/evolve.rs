//! Schema evolution: how a table's columns take the catalog's when the
//! catalog changes. A pure comparison of the two Delta schemas; the table
//! carries out what it says ([`crate::table::Table`]).
//!
//! - A new column (top level, nullable) is a metadata change: the files
//!   written before have none, and every reader reads NULL for it.
//! - A widened type (the Delta type-widening rules: `int` to `long` or
//!   `double`, `float` to `double`, a decimal with no fewer integer digits
//!   and no smaller scale, an integer to a decimal that holds it): the
//!   table's files are rewritten with the new types, in the same commit as
//!   the new schema. Delta's `typeWidening`
//!   table feature would spare the rewrite, but it needs reader version 3
//!   and writer version 7, which delta-rs cannot write and not every
//!   reader of the lake (Fabric, older Spark) reads; a rewrite gives a
//!   table every reader opens, at a cost paid once per change.
//! - Anything else (string to int, a narrower decimal, a changed list, a
//!   non-null column that left the catalog) is refused: the old files could
//!   not be read as the new type. (The catalog flattens nested keys into
//!   columns, `primaryVet.id` -> `primary_vet_id`, so a table has no
//!   struct columns to evolve field by field.)

use deltalake::kernel::{DataType, PrimitiveType, StructField, StructType};

/// What the catalog asks of the table's schema.
#[derive(Debug, PartialEq)]
pub(crate) enum Evolution {
    /// The table has the catalog's columns.
    Unchanged,
    /// The catalog has new top-level columns, added nullable.
    AddColumns {
        schema: StructType,
        columns: Vec<String>,
    },
    /// Types widened: the files must be rewritten with `schema`. `columns`
    /// names the columns widened, then those added.
    Rewrite {
        schema: StructType,
        columns: Vec<String>,
    },
}

/// A catalog type the table's column cannot take.
#[derive(Debug, PartialEq)]
pub(crate) struct Refused {
    pub column: String,
    pub table_type: String,
    pub catalog_type: String,
    pub why: &'static str,
}

#[derive(Default)]
struct Changes {
    added: Vec<String>,
    rewritten: Vec<String>,
}

/// The evolution that takes `table` to `catalog`.
pub(crate) fn plan(table: &StructType, catalog: &StructType) -> Result<Evolution, Refused> {
    let mut changes = Changes::default();
    let schema = merge(table, catalog, &mut changes)?;
    Ok(if !changes.rewritten.is_empty() {
        changes.rewritten.extend(changes.added);
        Evolution::Rewrite {
            schema,
            columns: changes.rewritten,
        }
    } else if !changes.added.is_empty() {
        Evolution::AddColumns {
            schema,
            columns: changes.added,
        }
    } else {
        Evolution::Unchanged
    })
}

/// The table's fields in their order, each with the catalog's type where
/// it widens, then the catalog's new fields (nullable).
fn merge(
    table: &StructType,
    catalog: &StructType,
    changes: &mut Changes,
) -> Result<StructType, Refused> {
    let mut fields = Vec::new();
    for old in table.fields() {
        match catalog.field(old.name()) {
            None if !old.is_nullable() => {
                return Err(Refused {
                    column: old.name().clone(),
                    table_type: old.data_type().to_string(),
                    catalog_type: "absent".into(),
                    why: "a non-null column cannot leave the table",
                });
            }
            Some(new) if new.data_type() != old.data_type() => {
                let refused = |why| Refused {
                    column: old.name().clone(),
                    table_type: old.data_type().to_string(),
                    catalog_type: new.data_type().to_string(),
                    why,
                };
                let (DataType::Primitive(from), DataType::Primitive(to)) =
                    (old.data_type(), new.data_type())
                else {
                    return Err(refused("only a widening change of type is allowed"));
                };
                if !widens(from, to) {
                    return Err(refused(match (from, to) {
                        (PrimitiveType::Decimal(_), PrimitiveType::Decimal(_)) => {
                            "a decimal may only gain precision, never lose scale or integer digits"
                        }
                        (_, PrimitiveType::Decimal(_)) if integer_width(from).is_some() => {
                            "the decimal has too few integer digits for every value"
                        }
                        _ => "only a widening change of type is allowed",
                    }));
                }
                changes.rewritten.push(old.name().clone());
                fields.push(
                    StructField::new(old.name(), new.data_type().clone(), old.is_nullable())
                        .with_metadata(old.metadata().clone()),
                );
            }
            None | Some(_) => fields.push(old.clone()),
        }
    }
    for new in catalog.fields() {
        if table.field(new.name()).is_none() {
            changes.added.push(new.name().clone());
            fields.push(StructField::nullable(new.name(), new.data_type().clone()));
        }
    }
    Ok(StructType::try_new(fields).expect("field names are the table's and the catalog's"))
}

/// The integers by width, for the widening rules.
fn integer_width(t: &PrimitiveType) -> Option<u8> {
    match t {
        PrimitiveType::Byte => Some(1),
        PrimitiveType::Short => Some(2),
        PrimitiveType::Integer => Some(4),
        PrimitiveType::Long => Some(8),
        _ => None,
    }
}

/// Whether every value of `old` is a value of `new`, by the rules of
/// Delta's type widening.
fn widens(old: &PrimitiveType, new: &PrimitiveType) -> bool {
    use PrimitiveType::{Decimal, Double, Float};
    if let (Some(a), Some(b)) = (integer_width(old), integer_width(new)) {
        return a <= b;
    }
    match (old, new) {
        (Float, Double) => true,
        (o, Double) => integer_width(o).is_some_and(|w| w <= 4),
        (Decimal(a), Decimal(b)) => {
            b.scale() >= a.scale() && b.precision() - b.scale() >= a.precision() - a.scale()
        }
        // Digits of the widest value: 3 for a byte, 5, 10, 19 for a long.
        (o, Decimal(b)) => integer_width(o).is_some_and(|w| {
            let digits = match w {
                1 => 3,
                2 => 5,
                4 => 10,
                _ => 20,
            };
            b.precision() - b.scale() >= digits
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use deltalake::kernel::{ArrayType, DecimalType};

    use super::*;

    fn decimal(p: u8, s: u8) -> DataType {
        DataType::Primitive(PrimitiveType::Decimal(DecimalType::try_new(p, s).unwrap()))
    }

    fn schema(fields: &[(&str, DataType)]) -> StructType {
        StructType::try_new(
            fields
                .iter()
                .map(|(n, t)| StructField::nullable(*n, t.clone())),
        )
        .unwrap()
    }

    fn one(old: DataType, new: DataType) -> Result<Evolution, Refused> {
        plan(&schema(&[("c", old)]), &schema(&[("c", new)]))
    }

    #[test]
    fn widening_changes_rewrite_the_column() {
        let cases = [
            (DataType::INTEGER, DataType::LONG),
            (DataType::SHORT, DataType::INTEGER),
            (DataType::INTEGER, DataType::DOUBLE),
            (DataType::FLOAT, DataType::DOUBLE),
            (decimal(9, 3), decimal(12, 3)),
            (decimal(9, 3), decimal(10, 4)),
            (DataType::INTEGER, decimal(12, 2)),
            (DataType::LONG, decimal(22, 2)),
        ];
        for (old, new) in cases {
            let got = one(old.clone(), new.clone());
            assert_eq!(
                got,
                Ok(Evolution::Rewrite {
                    schema: schema(&[("c", new.clone())]),
                    columns: vec!["c".into()],
                }),
                "{old} -> {new}"
            );
        }
    }

    #[test]
    fn narrowing_or_unrelated_changes_are_refused_with_both_types() {
        let cases = [
            (DataType::STRING, DataType::INTEGER),
            (DataType::LONG, DataType::INTEGER),
            (DataType::LONG, DataType::DOUBLE),
            (DataType::DOUBLE, DataType::FLOAT),
            (decimal(9, 3), decimal(7, 3)),
            (decimal(9, 3), decimal(9, 2)),
            (decimal(9, 3), decimal(10, 3 + 2)),
            (decimal(9, 3), DataType::STRING),
            (DataType::INTEGER, decimal(11, 2)),
            (DataType::DATE, DataType::TIMESTAMP),
            (DataType::BOOLEAN, DataType::STRING),
            (
                DataType::Array(Box::new(ArrayType::new(DataType::STRING, true))),
                DataType::Array(Box::new(ArrayType::new(DataType::LONG, true))),
            ),
        ];
        for (old, new) in cases {
            let refused = one(old.clone(), new.clone()).unwrap_err();
            assert_eq!(refused.column, "c");
            assert_eq!(refused.table_type, old.to_string());
            assert_eq!(refused.catalog_type, new.to_string());
            let decimals = matches!(
                (&old, &new),
                (
                    DataType::Primitive(PrimitiveType::Decimal(_)),
                    DataType::Primitive(PrimitiveType::Decimal(_))
                )
            );
            assert_eq!(
                refused.why.starts_with("a decimal"),
                decimals,
                "{old} -> {new}"
            );
        }
    }

    #[test]
    fn new_top_level_columns_are_added_nullable_without_a_rewrite() {
        let table = schema(&[("a", DataType::STRING)]);
        let catalog = StructType::try_new([
            StructField::not_null("a", DataType::STRING),
            StructField::not_null("b", DataType::LONG),
        ])
        .unwrap();
        assert_eq!(
            plan(&table, &catalog),
            Ok(Evolution::AddColumns {
                schema: schema(&[("a", DataType::STRING), ("b", DataType::LONG)]),
                columns: vec!["b".into()],
            })
        );
        assert_eq!(plan(&table, &table), Ok(Evolution::Unchanged));
    }

    #[test]
    fn a_widening_with_new_columns_rewrites_and_names_both() {
        let table = schema(&[("w", decimal(9, 3)), ("a", DataType::STRING)]);
        let catalog = schema(&[
            ("w", decimal(12, 4)),
            ("a", DataType::STRING),
            ("b", DataType::DATE),
        ]);
        assert_eq!(
            plan(&table, &catalog),
            Ok(Evolution::Rewrite {
                schema: catalog.clone(),
                columns: vec!["w".into(), "b".into()],
            })
        );
    }

    #[test]
    fn a_non_null_column_may_not_leave_the_catalog() {
        let table = StructType::try_new([
            StructField::not_null("id", DataType::STRING),
            StructField::nullable("note", DataType::STRING),
        ])
        .unwrap();
        let catalog = schema(&[("note", DataType::STRING)]);
        assert_eq!(plan(&table, &catalog).unwrap_err().column, "id");
        let kept = schema(&[("id", DataType::STRING)]);
        assert_eq!(plan(&table, &kept), Ok(Evolution::Unchanged));
    }
}
