//! A structural scan of JSON text: where each value begins and ends,
//! found by following strings and brackets only.
//!
//! The page envelope needs the extent of every record of `items` and the
//! few small fields around it, not the records' values: those are parsed
//! once, in full, by the decoder, which fails a page whose record is not
//! valid JSON. A full parse here (serde_json's `RawValue`, as before) read
//! every byte of a page twice; this scan classifies a record's bytes 64
//! at a time (SSE2 compares through `safe_arch`, simdjson's masks for
//! escapes and strings) and looks only at the brackets outside strings
//! (`tests/BENCHMARKS.md` has what each step saved). No crate offers
//! this: JSON parsers validate as they go, which is the work saved here.
//!
//! The decoder splits a page's `items` with the same scan
//! ([`PageDecoder::decode`](crate::PageDecoder::decode)), so every path
//! (sync, validate, tests) finds records one way.
//!
//! Every function returns `None` for text that cannot be what it expects
//! (cut short, unbalanced, an empty element): the caller then asks a real
//! parser for a precise error.

use std::ops::Range;

/// The index after the whitespace from `i`.
pub fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\n' | b'\r' | b'\t'))
    {
        i += 1;
    }
    i
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The eight bytes at `i`, the first in the lowest bits.
fn word(b: &[u8], i: usize) -> Option<u64> {
    let bytes = b.get(i..i + 8)?;
    Some(u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
}

/// The high bit of each byte of `word` that equals `byte`, exactly.
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    !(((x & LOWS) + LOWS) | x) & HIGHS
}

/// The index after the string whose opening quote is just before `i`.
pub fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        while let Some(w) = word(b, i) {
            let found = bytes_equal(w, b'"') | bytes_equal(w, b'\\');
            if found != 0 {
                i += (found.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Where the scan of an object or array stands.
#[derive(Default)]
struct Nesting {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Nesting {
    /// Takes one byte; true when it closes the outermost bracket. A
    /// backslash escapes the byte after it outside strings too, as the
    /// 64-byte scan has it: JSON has none there, and a record holding one
    /// fails the decoder's parse whatever its extent.
    fn step(&mut self, c: u8) -> bool {
        if self.escaped {
            self.escaped = false;
        } else if c == b'\\' {
            self.escaped = true;
        } else if self.in_string {
            if c == b'"' {
                self.in_string = false;
            }
        } else {
            match c {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    return self.depth == 0;
                }
                _ => {}
            }
        }
        false
    }
}

/// Bit k of each mask: what byte k of a 64-byte block is.
#[derive(Debug, Default, PartialEq, Eq)]
struct Classes {
    quotes: u64,
    backslashes: u64,
    /// `{` or `[`.
    opens: u64,
    /// `}` or `]`.
    closes: u64,
}

/// The block's classes, 16 bytes per SSE2 compare (every x86-64 has it).
/// `[` and `]` are `{` and `}` with the 0x20 bit clear, so one compare
/// each finds both kinds of bracket.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn classify(block: &[u8; 64]) -> Classes {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let equal = |v: m128i, c: u8| {
        u64::from(move_mask_i8_m128i(cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(c as i8))) as u16)
    };
    let mut out = Classes::default();
    for (k, chunk) in block.chunks_exact(16).enumerate() {
        let v = m128i::from(<[u8; 16]>::try_from(chunk).expect("16 bytes"));
        let folded = bitor_m128i(v, set_splat_i8_m128i(0x20));
        let at = 16 * k;
        out.quotes |= equal(v, b'"') << at;
        out.backslashes |= equal(v, b'\\') << at;
        out.opens |= equal(folded, b'{') << at;
        out.closes |= equal(folded, b'}') << at;
    }
    out
}

/// The block's classes, a byte at a time: where SSE2 is missing, and the
/// reference the SSE2 version is tested against.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), cfg(test))]
fn classify_bytes(block: &[u8; 64]) -> Classes {
    let mut out = Classes::default();
    for (k, &c) in block.iter().enumerate() {
        let bit = 1u64 << k;
        match c {
            b'"' => out.quotes |= bit,
            b'\\' => out.backslashes |= bit,
            b'{' | b'[' => out.opens |= bit,
            b'}' | b']' => out.closes |= bit,
            _ => {}
        }
    }
    out
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
use classify_bytes as classify;

/// Bit k: the parity of the bits 0..=k of `x`.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The bytes a backslash escapes, given the block's backslashes;
/// `carry` is 1 when the block's first byte is escaped by the one before,
/// and is set for the next block. simdjson's branch-free method (Langdale
/// and Lemire, "Parsing Gigabytes of JSON per Second", 2019): a run of
/// backslashes escapes the byte after it when the run is odd, which a
/// subtraction across each run finds by where the run starts.
fn escaped_bytes(backslashes: u64, carry: &mut u64) -> u64 {
    const ODD_BITS: u64 = 0xAAAA_AAAA_AAAA_AAAA;
    if backslashes == 0 {
        return std::mem::take(carry);
    }
    let potential = backslashes & !*carry;
    let codes = ((potential << 1) | ODD_BITS).wrapping_sub(potential) ^ ODD_BITS;
    let escaped = codes ^ (backslashes | *carry);
    *carry = (codes & backslashes) >> 63;
    escaped
}

/// The index after the object or array that starts at `b[start]`
/// (`{` or `[`), brackets counted outside strings.
///
/// 64 bytes at a time: masks of the block's quotes, backslashes and
/// brackets; the escaped bytes from the backslashes; which bytes lie
/// inside strings from the parity of the unescaped quotes before them;
/// then only the brackets outside strings are looked at one by one. The
/// tail of fewer than 64 bytes is stepped through byte by byte.
fn container_end(b: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    // All ones when the block starts inside a string.
    let mut in_string = 0u64;
    let mut escape_carry = 0u64;
    let mut i = start;
    while let Some(block) = b.get(i..i + 64) {
        let c = classify(block.try_into().expect("64 bytes"));
        let escaped = escaped_bytes(c.backslashes, &mut escape_carry);
        let inside = prefix_xor(c.quotes & !escaped) ^ in_string;
        in_string = 0u64.wrapping_sub(inside >> 63);
        let mut brackets = (c.opens | c.closes) & !inside & !escaped;
        while brackets != 0 {
            let k = brackets.trailing_zeros();
            if c.opens >> k & 1 == 1 {
                depth += 1;
            } else {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i + k as usize + 1);
                }
            }
            brackets &= brackets - 1;
        }
        i += 64;
    }
    let mut state = Nesting {
        depth,
        in_string: in_string != 0,
        escaped: escape_carry != 0,
    };
    (i..b.len()).find(|&k| state.step(b[k])).map(|k| k + 1)
}

/// The end of the value that starts at `i` (no whitespace before it): a
/// string, an object or array (brackets counted, strings skipped), or a
/// scalar up to the next delimiter.
pub fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i + 1),
        b'{' | b'[' => container_end(b, i),
        b',' | b':' | b'}' | b']' => None,
        _ => {
            let end = i + b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))?;
            Some(end)
        }
    }
}

/// The range of each element of the array that starts at `b[i] == '['`,
/// and the index after its `]`.
pub fn array_elements(b: &[u8], i: usize) -> Option<(Vec<Range<usize>>, usize)> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut elements = Vec::new();
    let mut i = skip_whitespace(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Some((elements, i + 1));
    }
    loop {
        let end = value_end(b, i)?;
        elements.push(i..end);
        i = skip_whitespace(b, end);
        match *b.get(i)? {
            b',' => i = skip_whitespace(b, i + 1),
            b']' => return Some((elements, i + 1)),
            _ => return None,
        }
    }
}

/// Scans the object that starts at `b[i] == '{'`: for each member, calls
/// `member` with the key's text without its quotes (escapes left as they
/// are) and where its value starts; `member` scans the value and says
/// where it ends. `None` unless the object is whole and nothing but
/// whitespace follows it.
pub fn object_members(
    b: &[u8],
    i: usize,
    mut member: impl FnMut(Range<usize>, usize) -> Option<usize>,
) -> Option<()> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut i = skip_whitespace(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_whitespace(b, i + 1) == b.len()).then_some(());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i + 1)?;
        let key = i + 1..key_end - 1;
        i = skip_whitespace(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_whitespace(b, i + 1);
        b.get(i)?;
        i = skip_whitespace(b, member(key, i)?);
        match *b.get(i)? {
            b',' => i = skip_whitespace(b, i + 1),
            b'}' => return (skip_whitespace(b, i + 1) == b.len()).then_some(()),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(text: &str) -> Option<Vec<&str>> {
        let (ranges, end) = array_elements(text.as_bytes(), 0)?;
        (end == text.len()).then(|| ranges.into_iter().map(|r| &text[r]).collect())
    }

    #[test]
    fn elements_split_at_top_level_commas_only() {
        assert_eq!(elements("[ ]"), Some(vec![]));
        assert_eq!(
            elements(r#"[ {"a":"x,]}\"\\","b":[1,{"c":2}]} ,"s", 5 ,null,-1.5e3]"#),
            Some(vec![
                r#"{"a":"x,]}\"\\","b":[1,{"c":2}]}"#,
                r#""s""#,
                "5",
                "null",
                "-1.5e3"
            ])
        );
        assert_eq!(elements("[\n{\"é\":\"ü\"}\n]"), Some(vec!["{\"é\":\"ü\"}"]));
    }

    #[test]
    fn string_ends_are_found_at_every_position_of_a_word() {
        // A quote or an escape at each of the eight bytes of a word, and
        // past the last whole word.
        for len in 0..20 {
            let text = format!("\"{}\\\"{}\" x", "a".repeat(len), "b".repeat(len % 9));
            let end = string_end(text.as_bytes(), 1).unwrap();
            assert_eq!(&text[end..], " x", "{text}");
        }
        assert_eq!(string_end(br#""abcdefgh\\"#, 1), None);
        assert_eq!(string_end(b"\"\xc3\xa9\\u00e9\"", 1), Some(10));
    }

    #[test]
    fn containers_end_where_a_byte_by_byte_scan_says_at_every_alignment() {
        // Strings holding brackets, quotes, escapes and backslash runs,
        // nesting, at every offset from a word boundary.
        let parts = [
            r#"{"a":"x]}"}"#,
            r#"["\\",{"b":"\"]"},[]]"#,
            r#"{"c":"\\\"}","d":[1,{"e":"{["}]}"#,
            r#"{"f":"0123456789abcdef\u00e9]","g":{"h":{"i":[[["]"]]]}}}"#,
            r#"{"j":"é ü","k":"\\\\"}"#,
        ];
        let reference = |b: &[u8], start: usize| {
            let mut state = Nesting::default();
            (start..b.len()).find(|&i| state.step(b[i])).map(|i| i + 1)
        };
        for pad in 0..9 {
            for (n, part) in parts.iter().enumerate() {
                for tail in ["", ",", " x \"]\" ]"] {
                    let text = format!(
                        "{}{part}{}{tail}",
                        " ".repeat(pad),
                        parts[(n + 1) % parts.len()]
                    );
                    let b = text.as_bytes();
                    assert_eq!(container_end(b, pad), reference(b, pad), "{text}");
                    assert_eq!(container_end(b, pad), Some(pad + part.len()), "{text}");
                }
            }
        }
        assert_eq!(container_end(br#"{"a":"}"#, 0), None);
        assert_eq!(container_end(br#"{"a":[1,2,3,4,5,6,7,8]"#, 0), None);
    }

    #[test]
    fn containers_end_as_a_byte_by_byte_scan_says_on_random_text() {
        // Texts of quotes, backslashes, brackets and filler, mostly
        // unbalanced: the word-at-a-time scan must agree with `Nesting`
        // byte by byte from every opening bracket, end found or not.
        let alphabet = br#""\{}[]a,"#;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..3000 {
            // Up to four 64-byte blocks and a tail.
            let len = (seed % 300) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            for start in (0..text.len()).filter(|&i| matches!(text[i], b'{' | b'[')) {
                let mut state = Nesting::default();
                let expected = (start..text.len())
                    .find(|&i| state.step(text[i]))
                    .map(|i| i + 1);
                assert_eq!(
                    container_end(&text, start),
                    expected,
                    "{} from {start}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
    }

    #[test]
    fn the_sse2_classes_are_the_bytes_classes() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let block: [u8; 64] = std::array::from_fn(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly the classes' bytes and their 0x20 neighbours.
                let alphabet = b"\"\\{}[];<=>|~a ";
                alphabet[(seed % alphabet.len() as u64) as usize] ^ (((seed >> 8) & 1) as u8 * 0x80)
            });
            assert_eq!(classify(&block), classify_bytes(&block), "{block:?}");
        }
    }

    #[test]
    fn backslash_runs_escape_across_blocks() {
        // A run of n backslashes ending at every byte around a block
        // boundary, then a quote: escaped when n is odd.
        for n in 1..6 {
            for end in 56..72 {
                let mut text = vec![b'{', b'"'];
                text.resize(end - n, b'a');
                text.extend(std::iter::repeat_n(b'\\', n));
                text.extend_from_slice(br#""}"]}"#);
                text.resize(140, b' ');
                let expected = if n % 2 == 1 { end + 4 } else { end + 2 };
                assert_eq!(
                    container_end(&text, 0),
                    Some(expected),
                    "{n} backslashes ending at {end}"
                );
            }
        }
    }

    #[test]
    fn broken_arrays_are_not_split() {
        for bad in [
            "",
            "{}",
            "[",
            "[1,",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[}]",
            "[\"abc]",
            "[\"a\\\"]",
            "[{\"a\":1]",
        ] {
            assert_eq!(elements(bad), None, "{bad}");
        }
    }

    #[test]
    fn object_members_and_what_follows() {
        let members = |text: &[u8]| {
            let mut found = Vec::new();
            object_members(text, skip_whitespace(text, 0), |k, at| {
                let end = value_end(text, at)?;
                found.push((text[k].to_vec(), text[at..end].to_vec()));
                Some(end)
            })
            .map(|()| found)
        };
        let text = br#" { "a\"b" : [1, "]"] , "c":{"d":null},"e":7 } "#;
        let expected: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (br#"a\"b"#.to_vec(), br#"[1, "]"]"#.to_vec()),
            (b"c".to_vec(), br#"{"d":null}"#.to_vec()),
            (b"e".to_vec(), b"7".to_vec()),
        ];
        assert_eq!(members(text), Some(expected));
        assert_eq!(members(b"{}"), Some(vec![]));
        for bad in [
            &b"{"[..],
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":",
            b"{\"a\":1,}",
            b"{\"a\":1} x",
            b"{\"a\":1}}",
            b"{1:2}",
            b"{\"a\":1 \"b\":2}",
        ] {
            assert_eq!(members(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
