use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field as ArrowField, TimeUnit};

/// The type of a catalog field, as written in the catalog (`decimal(12,2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// IEEE double.
    Float64,
    /// Fixed-point decimal with `precision` digits, `scale` of them after the point.
    Decimal {
        /// Total digits (1..=38).
        precision: u8,
        /// Digits after the point (0..=precision).
        scale: i8,
    },
    /// `true`/`false` (also `"true"`, `"false"`, `0`, `1` in the input).
    Bool,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An RFC 3339 instant, stored as UTC microseconds.
    Timestamp,
    /// A list of strings.
    StringList,
}

impl FieldType {
    /// The Arrow type this field is stored as.
    pub fn arrow_type(self) -> DataType {
        match self {
            FieldType::String => DataType::Utf8,
            FieldType::Int32 => DataType::Int32,
            FieldType::Int64 => DataType::Int64,
            FieldType::Float64 => DataType::Float64,
            FieldType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            FieldType::Bool => DataType::Boolean,
            FieldType::Date => DataType::Date32,
            FieldType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            // `element`, as Parquet's LIST layout and Delta name it: the
            // schema delta-rs derives for the table then equals the files'.
            FieldType::StringList => {
                DataType::List(Arc::new(ArrowField::new("element", DataType::Utf8, true)))
            }
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldType::String => f.write_str("string"),
            FieldType::Int32 => f.write_str("int32"),
            FieldType::Int64 => f.write_str("int64"),
            FieldType::Float64 => f.write_str("float64"),
            FieldType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            FieldType::Bool => f.write_str("bool"),
            FieldType::Date => f.write_str("date"),
            FieldType::Timestamp => f.write_str("timestamp"),
            FieldType::StringList => f.write_str("list<string>"),
        }
    }
}

impl FromStr for FieldType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        Ok(match compact.as_str() {
            "string" => FieldType::String,
            "int32" => FieldType::Int32,
            "int64" => FieldType::Int64,
            "float64" => FieldType::Float64,
            "bool" => FieldType::Bool,
            "date" => FieldType::Date,
            "timestamp" => FieldType::Timestamp,
            "list<string>" => FieldType::StringList,
            other => {
                return parse_decimal(other).ok_or_else(|| {
                    format!(
                        "unknown type `{s}`; expected one of string, int32, int64, float64, \
                     decimal(p,s), bool, date, timestamp, list<string>"
                    )
                })?;
            }
        })
    }
}

/// `decimal(p,s)` with 1 <= p <= 38 and 0 <= s <= p.
fn parse_decimal(s: &str) -> Option<Result<FieldType, String>> {
    let inner = s.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (p, sc) = inner.split_once(',')?;
    let (Ok(precision), Ok(scale)) = (p.parse::<u8>(), sc.parse::<i8>()) else {
        return Some(Err(format!(
            "`{s}`: precision and scale must be whole numbers"
        )));
    };
    if !(1..=38).contains(&precision) || scale < 0 || scale as u8 > precision {
        return Some(Err(format!(
            "`{s}`: precision must be 1 to 38 and scale 0 to the precision"
        )));
    }
    Some(Ok(FieldType::Decimal { precision, scale }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_through_their_names() {
        for name in [
            "string",
            "int32",
            "int64",
            "float64",
            "decimal(12,2)",
            "bool",
            "date",
            "timestamp",
            "list<string>",
        ] {
            let t: FieldType = name.parse().unwrap();
            assert_eq!(t.to_string(), name);
        }
        assert_eq!(
            "decimal( 9, 3 )".parse::<FieldType>(),
            Ok(FieldType::Decimal {
                precision: 9,
                scale: 3
            })
        );
    }

    #[test]
    fn bad_types_say_what_is_expected() {
        assert!(
            "decimal(40,2)"
                .parse::<FieldType>()
                .unwrap_err()
                .contains("1 to 38")
        );
        assert!("decimal(4,5)".parse::<FieldType>().is_err());
        assert!(
            "varchar"
                .parse::<FieldType>()
                .unwrap_err()
                .contains("expected one of")
        );
    }
}
