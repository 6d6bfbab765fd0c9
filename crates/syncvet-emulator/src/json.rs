//! Writing JSON by hand into a byte buffer: the hot path renders thousands of
//! records per page, so no intermediate `serde_json::Value`.

/// Appends `s` as a JSON string literal, escaped.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends an integer.
#[inline]
pub(crate) fn push_int<I: itoa::Integer>(out: &mut Vec<u8>, value: I) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends a finite float in its shortest round-trip form.
#[inline]
pub(crate) fn push_float(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
}

/// Appends `n` with at least `width` digits, zero-padded (n < 10^9).
#[inline]
pub(crate) fn push_padded(out: &mut Vec<u8>, n: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    for _ in len..width {
        out.push(b'0');
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends a fixed-point decimal `units / 10^scale` (`1250`, 2 → `12.50`).
pub(crate) fn push_decimal(out: &mut Vec<u8>, units: i64, scale: u32) {
    if units < 0 {
        out.push(b'-');
    }
    let abs = units.unsigned_abs();
    let pow = 10u64.pow(scale);
    push_int(out, abs / pow);
    if scale > 0 {
        out.push(b'.');
        push_padded(out, (abs % pow) as u32, scale as usize);
    }
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `YYYY-MM-DD` (without quotes) for a day count since 1970-01-01.
pub(crate) fn push_date_raw(out: &mut Vec<u8>, days: i64) {
    let (y, m, d) = civil_from_days(days);
    push_padded(out, y.clamp(0, 9999) as u32, 4);
    out.push(b'-');
    push_padded(out, m, 2);
    out.push(b'-');
    push_padded(out, d, 2);
}

/// Appends `"YYYY-MM-DDTHH:MM:SS[.mmm](Z|±HH:MM)"`; `offset_minutes` shifts the
/// wall clock so the instant stays `unix_secs` (+ `millis`).
pub(crate) fn push_timestamp(
    out: &mut Vec<u8>,
    unix_secs: i64,
    millis: Option<u32>,
    offset_minutes: i32,
) {
    let local = unix_secs + i64::from(offset_minutes) * 60;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400) as u32;
    out.push(b'"');
    push_date_raw(out, days);
    out.push(b'T');
    push_padded(out, secs / 3600, 2);
    out.push(b':');
    push_padded(out, secs / 60 % 60, 2);
    out.push(b':');
    push_padded(out, secs % 60, 2);
    if let Some(ms) = millis {
        out.push(b'.');
        push_padded(out, ms, 3);
    }
    if offset_minutes == 0 {
        out.push(b'Z');
    } else {
        out.push(if offset_minutes < 0 { b'-' } else { b'+' });
        let abs = offset_minutes.unsigned_abs();
        push_padded(out, abs / 60, 2);
        out.push(b':');
        push_padded(out, abs % 60, 2);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, NaiveDate};

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let s = "a\"b\\c\nd\u{1}é";
        let rendered = text(|o| push_str(o, s));
        assert_eq!(serde_json::from_str::<String>(&rendered).unwrap(), s);
    }

    #[test]
    fn decimals_keep_their_scale() {
        assert_eq!(text(|o| push_decimal(o, 1250, 2)), "12.50");
        assert_eq!(text(|o| push_decimal(o, -5, 3)), "-0.005");
        assert_eq!(text(|o| push_decimal(o, 7, 0)), "7");
    }

    #[test]
    fn dates_and_timestamps_match_chrono() {
        for days in [-1000i64, 0, 10_957, 20_000, 20_513, 29_220] {
            let expected =
                NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days);
            assert_eq!(text(|o| push_date_raw(o, days)), expected.to_string());
        }
        let ts = text(|o| push_timestamp(o, 1_795_000_000, Some(42), -360));
        let parsed = DateTime::parse_from_rfc3339(ts.trim_matches('"')).unwrap();
        assert_eq!(parsed.timestamp(), 1_795_000_000);
        assert_eq!(parsed.timestamp_subsec_millis(), 42);
        assert!(ts.ends_with("-06:00\""), "{ts}");
        let utc = text(|o| push_timestamp(o, 0, None, 0));
        assert_eq!(utc, "\"1970-01-01T00:00:00Z\"");
    }
}
