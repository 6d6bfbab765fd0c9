//! One JSON value coerced to one catalog type: the rules of `schemas.md`.
//!
//! Everything here is a pure function from text to a typed [`Cell`]: a
//! failure is a reason for the reject, never a silent null. Numbers are read
//! from their JSON text (not through `f64`), so decimals and 64-bit integers
//! are exact whatever their size.

use std::borrow::Cow;

use chrono::{DateTime, Datelike as _, NaiveDate};

use crate::FieldType;

/// The value of one field of the record being decoded, already of its
/// column's type. Strings borrow from the page where JSON needs no unescaping.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Cell<'de> {
    /// The key was not in the record.
    #[default]
    Absent,
    /// The key was there with `null`.
    Null,
    Str(Cow<'de, str>),
    Int32(i32),
    Int64(i64),
    Float64(f64),
    /// The unscaled value (`12.50` at scale 2 is `1250`).
    Decimal(i128),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    /// Items may be null: the Arrow item field is nullable and a null in the
    /// source is kept rather than dropped or turned into a reject.
    List(Vec<Option<Cow<'de, str>>>),
}

impl Cell<'_> {
    /// Whether the field holds no value (absent or null).
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Cell::Absent | Cell::Null)
    }
}

/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Coerces a JSON string to `ty`: strings as they are, and the textual forms
/// of numbers, booleans, dates and timestamps.
pub(crate) fn from_str<'de>(ty: FieldType, s: Cow<'de, str>) -> Result<Cell<'de>, String> {
    match ty {
        FieldType::String => Ok(Cell::Str(s)),
        FieldType::Date => parse_date(&s).map(Cell::Date),
        FieldType::Timestamp => parse_timestamp(&s).map(Cell::Timestamp),
        FieldType::Bool => match s.as_ref() {
            "0" => Ok(Cell::Bool(false)),
            "1" => Ok(Cell::Bool(true)),
            t if t.eq_ignore_ascii_case("true") => Ok(Cell::Bool(true)),
            t if t.eq_ignore_ascii_case("false") => Ok(Cell::Bool(false)),
            _ => Err(format!("{} is not a boolean", quoted(&s))),
        },
        FieldType::Int32 | FieldType::Int64 | FieldType::Float64 | FieldType::Decimal { .. } => {
            from_number(ty, &s).map_err(|why| format!("{} {why}", quoted(&s)))
        }
        FieldType::StringList => Err(format!("expected a list of strings, got {}", quoted(&s))),
    }
}

/// Coerces the text of a JSON number (`-12.5e3`) to `ty`.
pub(crate) fn from_number_text(ty: FieldType, text: &str) -> Result<Cell<'static>, String> {
    match ty {
        FieldType::Bool => match text {
            "0" => Ok(Cell::Bool(false)),
            "1" => Ok(Cell::Bool(true)),
            _ => Err(format!("{text} is not a boolean (only 0 and 1 are)")),
        },
        FieldType::Int32 | FieldType::Int64 | FieldType::Float64 | FieldType::Decimal { .. } => {
            from_number(ty, text).map_err(|why| format!("{text} {why}"))
        }
        _ => Err(format!("expected {}, got the number {text}", describe(ty))),
    }
}

/// Coerces a JSON `true`/`false` to `ty` (only a bool field takes one).
pub(crate) fn from_bool(ty: FieldType, value: bool) -> Result<Cell<'static>, String> {
    match ty {
        FieldType::Bool => Ok(Cell::Bool(value)),
        _ => Err(format!("expected {}, got {value}", describe(ty))),
    }
}

/// What a field of that type expects, for the reasons of rejects.
pub(crate) fn describe(ty: FieldType) -> String {
    match ty {
        FieldType::String => "a string".into(),
        FieldType::Int32 | FieldType::Int64 => format!("a whole number ({ty})"),
        FieldType::Float64 => "a number".into(),
        FieldType::Decimal { .. } => format!("a number ({ty})"),
        FieldType::Bool => "a boolean".into(),
        FieldType::Date => "a date string YYYY-MM-DD".into(),
        FieldType::Timestamp => "an RFC 3339 timestamp string".into(),
        FieldType::StringList => "a list of strings".into(),
    }
}

/// The numeric types, from number text; the error says what is wrong with it.
fn from_number(ty: FieldType, text: &str) -> Result<Cell<'static>, String> {
    match ty {
        FieldType::Int32 => {
            let v = parse_whole(text)?;
            i32::try_from(v)
                .map(Cell::Int32)
                .map_err(|_| "is out of range for int32".into())
        }
        FieldType::Int64 => {
            let v = parse_whole(text)?;
            i64::try_from(v)
                .map(Cell::Int64)
                .map_err(|_| "is out of range for int64".into())
        }
        FieldType::Float64 => match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Cell::Float64(v)),
            Ok(_) => Err("is not a finite number".into()),
            Err(_) => Err("is not a number".into()),
        },
        FieldType::Decimal { precision, scale } => {
            parse_decimal(text, precision, scale).map(Cell::Decimal)
        }
        _ => Err(format!("is not {}", describe(ty))),
    }
}

/// A whole number, exactly: `30`, also `30.0` and `3e1`, never `30.5`.
fn parse_whole(text: &str) -> Result<i128, String> {
    if let Ok(v) = text.parse::<i64>() {
        return Ok(v.into());
    }
    parse_decimal(text, 38, 0).map_err(|why| {
        if why.contains("decimal places") {
            "is not a whole number".into()
        } else {
            why
        }
    })
}

/// Parses decimal text (`-12.50`, `1.2e3`, `.5`) into the unscaled `i128` of
/// `decimal(precision, scale)`. Digits past the scale are accepted only when
/// they are zeros (`12.500` at scale 2): anything else would be rounding,
/// which a reject makes visible instead. Values of more than `precision`
/// digits are rejected.
pub(crate) fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let bytes = text.as_bytes();
    let (negative, mut i) = match bytes.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let not_a_number = || String::from("is not a number");
    let out_of_range = || format!("is out of range for decimal({precision},{scale})");
    let mut mantissa: i128 = 0;
    let mut digits = 0usize;
    let mut fraction_digits: i64 = 0;
    // Zeros after the point are only multiplied in when a non-zero digit
    // follows, so `1.0000…` with any number of zeros does not overflow.
    let mut pending_zeros: u32 = 0;
    let mut in_fraction = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'0'..=b'9' => {
                digits += 1;
                let d = i128::from(b - b'0');
                if in_fraction && d == 0 {
                    pending_zeros += 1;
                } else {
                    let factor = 10i128
                        .checked_pow(pending_zeros + 1)
                        .ok_or_else(out_of_range)?;
                    mantissa = mantissa
                        .checked_mul(factor)
                        .and_then(|m| m.checked_add(d))
                        .ok_or_else(out_of_range)?;
                    if in_fraction {
                        fraction_digits += i64::from(pending_zeros) + 1;
                    }
                    pending_zeros = 0;
                }
            }
            b'.' if !in_fraction => in_fraction = true,
            b'e' | b'E' => break,
            _ => return Err(not_a_number()),
        }
        i += 1;
    }
    if digits == 0 {
        return Err(not_a_number());
    }
    let mut exponent: i64 = 0;
    if i < bytes.len() {
        let exp_text = &text[i + 1..];
        let exp_digits = exp_text.strip_prefix(['+', '-']).unwrap_or(exp_text);
        if exp_digits.is_empty() || !exp_digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_a_number());
        }
        // Anything beyond a few hundred overflows or underflows every decimal.
        exponent = exp_text
            .parse::<i64>()
            .unwrap_or(if exp_text.starts_with('-') {
                -1000
            } else {
                1000
            });
    }
    let shift = i64::from(scale) - fraction_digits + exponent.clamp(-1000, 1000);
    let unscaled = if mantissa == 0 {
        0
    } else if shift >= 0 {
        u32::try_from(shift)
            .ok()
            .and_then(|s| 10i128.checked_pow(s))
            .and_then(|f| mantissa.checked_mul(f))
            .ok_or_else(out_of_range)?
    } else {
        let divisor = u32::try_from(-shift)
            .ok()
            .and_then(|s| 10i128.checked_pow(s));
        match divisor {
            Some(d) if mantissa % d == 0 => mantissa / d,
            _ => return Err(format!("has more than {scale} decimal places")),
        }
    };
    let limit = 10i128.pow(u32::from(precision));
    if unscaled >= limit {
        return Err(out_of_range());
    }
    Ok(if negative { -unscaled } else { unscaled })
}

/// `YYYY-MM-DD`, a real calendar day, as days since 1970-01-01.
pub(crate) fn parse_date(s: &str) -> Result<i32, String> {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = (b.len() == 10 && b[4] == b'-' && b[7] == b'-')
        .then(|| Some((digits(0..4)?, digits(5..7)?, digits(8..10)?)))
        .flatten()
        .ok_or_else(|| format!("{} is not a date YYYY-MM-DD", quoted(s)))?;
    let (year, month, day) = date;
    NaiveDate::from_ymd_opt(year as i32, month, day)
        .map(|d| d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
        .ok_or_else(|| format!("{} is not a day of the calendar", quoted(s)))
}

/// An RFC 3339 instant (`Z` or an offset, optional fractional seconds) as UTC
/// microseconds; digits finer than a microsecond are truncated, the stored
/// precision. A time without an offset is rejected: its instant is unknown.
pub(crate) fn parse_timestamp(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("{} is not an RFC 3339 timestamp ({e})", quoted(s)))
}

/// The value for a reject's reason, cut short so a huge value cannot bloat it.
pub(crate) fn quoted(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("\"{}…\"", &s[..cut]),
        None => format!("\"{s}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEC_12_2: FieldType = FieldType::Decimal {
        precision: 12,
        scale: 2,
    };

    fn s(ty: FieldType, text: &str) -> Result<Cell<'static>, String> {
        from_str(ty, Cow::Owned(text.to_owned()))
    }

    #[test]
    fn decimals_are_exact_and_never_rounded() {
        assert_eq!(parse_decimal("12.50", 12, 2), Ok(1250));
        assert_eq!(parse_decimal("-12.5", 12, 2), Ok(-1250));
        assert_eq!(parse_decimal("12", 12, 2), Ok(1200));
        assert_eq!(parse_decimal("12.500000", 12, 2), Ok(1250));
        assert_eq!(parse_decimal("0.07", 9, 3), Ok(70));
        assert_eq!(parse_decimal(".5", 9, 3), Ok(500));
        assert_eq!(parse_decimal("1.25e2", 12, 2), Ok(12500));
        assert_eq!(parse_decimal("125E-2", 12, 2), Ok(125));
        assert_eq!(parse_decimal("0e999999999999", 12, 2), Ok(0));
        assert_eq!(
            parse_decimal(&format!("1.{}", "0".repeat(100)), 12, 2),
            Ok(100)
        );
        assert_eq!(parse_decimal("9999999999.99", 12, 2), Ok(999_999_999_999));
        assert_eq!(
            parse_decimal("12345678901234567890.123456789", 38, 9),
            Ok(12_345_678_901_234_567_890_123_456_789)
        );
        let too_fine = parse_decimal("12.505", 12, 2).unwrap_err();
        assert!(
            too_fine.contains("more than 2 decimal places"),
            "{too_fine}"
        );
        let too_big = parse_decimal("10000000000.00", 12, 2).unwrap_err();
        assert!(too_big.contains("out of range"), "{too_big}");
        assert!(parse_decimal("1e40", 38, 0).is_err());
        assert!(parse_decimal(&"9".repeat(60), 38, 0).is_err());
        for bad in [
            "", "-", ".", "1.2.3", "12,5", "1e", "1e+", "abc", "1 ", "0x10", "--1",
        ] {
            assert!(parse_decimal(bad, 12, 2).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_given_as_strings_are_accepted() {
        assert_eq!(s(DEC_12_2, "12.50"), Ok(Cell::Decimal(1250)));
        assert_eq!(s(FieldType::Int32, "42"), Ok(Cell::Int32(42)));
        assert_eq!(
            s(FieldType::Int64, "-9000000000"),
            Ok(Cell::Int64(-9_000_000_000))
        );
        assert_eq!(s(FieldType::Float64, "2.5"), Ok(Cell::Float64(2.5)));
        assert!(s(DEC_12_2, "twelve").unwrap_err().contains("\"twelve\""));
        assert!(s(FieldType::Float64, "NaN").is_err());
        assert!(s(FieldType::Float64, "inf").is_err());
    }

    #[test]
    fn whole_numbers_are_range_checked() {
        let n = |t| from_number_text(FieldType::Int32, t);
        assert_eq!(n("2147483647"), Ok(Cell::Int32(i32::MAX)));
        assert_eq!(n("-2147483648"), Ok(Cell::Int32(i32::MIN)));
        assert_eq!(n("30.0"), Ok(Cell::Int32(30)));
        assert_eq!(n("3e1"), Ok(Cell::Int32(30)));
        assert!(
            n("2147483648")
                .unwrap_err()
                .contains("out of range for int32")
        );
        assert!(n("30.5").unwrap_err().contains("not a whole number"));
        let big = from_number_text(FieldType::Int64, "9223372036854775808");
        assert!(big.unwrap_err().contains("out of range for int64"));
        assert_eq!(
            from_number_text(FieldType::Int64, "9223372036854775807"),
            Ok(Cell::Int64(i64::MAX))
        );
        assert!(from_number_text(FieldType::Float64, "1e999").is_err());
        assert_eq!(
            from_number_text(FieldType::Float64, "-1.5e-3"),
            Ok(Cell::Float64(-0.0015))
        );
    }

    #[test]
    fn booleans_take_their_textual_and_numeric_forms() {
        for (text, want) in [
            ("true", true),
            ("false", false),
            ("TRUE", true),
            ("0", false),
            ("1", true),
        ] {
            assert_eq!(s(FieldType::Bool, text), Ok(Cell::Bool(want)), "{text}");
        }
        assert_eq!(from_number_text(FieldType::Bool, "1"), Ok(Cell::Bool(true)));
        assert_eq!(
            from_number_text(FieldType::Bool, "0"),
            Ok(Cell::Bool(false))
        );
        assert!(from_number_text(FieldType::Bool, "2").is_err());
        assert!(from_number_text(FieldType::Bool, "1.0").is_err());
        assert!(s(FieldType::Bool, "yes").is_err());
        assert!(from_bool(FieldType::Int32, true).is_err());
    }

    #[test]
    fn dates_must_exist() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("1969-12-31"), Ok(-1));
        assert_eq!(parse_date("2000-03-01"), Ok(11_017));
        assert_eq!(parse_date("2024-02-29"), Ok(19_782));
        assert!(parse_date("2026-02-30").unwrap_err().contains("not a day"));
        assert!(parse_date("2025-02-29").is_err());
        assert!(parse_date("2026-13-01").is_err());
        for bad in [
            "2026-1-01",
            "2026/01/01",
            "20260101",
            "2026-01-01T00:00:00Z",
            "",
            "2026-01-0x",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert!(from_number_text(FieldType::Date, "20260101").is_err());
    }

    #[test]
    fn timestamps_are_converted_to_utc_microseconds() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.5Z"), Ok(1_500_000));
        assert_eq!(
            parse_timestamp("2026-11-27T10:00:00+02:00"),
            parse_timestamp("2026-11-27T08:00:00Z")
        );
        assert_eq!(
            parse_timestamp("2026-11-27T08:00:00.123456-05:30"),
            Ok(1_795_766_400_123_456 + 5 * 3_600_000_000 + 30 * 60_000_000)
        );
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:00.0000019Z"),
            Ok(1),
            "finer than a microsecond is truncated"
        );
        assert!(parse_timestamp("2026-11-27T10:00:00").is_err(), "no offset");
        assert!(parse_timestamp("2026-02-30T10:00:00Z").is_err());
        assert!(parse_timestamp("yesterday").is_err());
        assert!(from_number_text(FieldType::Timestamp, "1700000000").is_err());
    }

    #[test]
    fn reasons_quote_values_but_not_without_bound() {
        let long = "x".repeat(10_000);
        let reason = s(FieldType::Date, &long).unwrap_err();
        assert!(reason.len() < 200, "{}", reason.len());
        assert!(s(FieldType::StringList, "a").is_err());
    }
}
