//! Splitting the `items` array into the text of its elements.
//!
//! Each record's text is needed twice: parsed for its values, and kept
//! verbatim when it is rejected. Splitting the array with serde_json
//! (`Vec<&RawValue>`) would parse every record twice; this scanner only
//! tracks strings and brackets, and leaves validation to the one full parse
//! of each element. Together they accept exactly the valid arrays: if every
//! element is one valid JSON value (checked by that parse) and the scanner
//! found `[`, commas and `]` between them, the whole text is a valid array.

/// The elements of the JSON array `text`, trimmed, in order; `None` when the
/// text is not an array (unbalanced, truncated, an empty element, trailing
/// data), for the caller to ask serde_json for a precise error.
pub(crate) fn split_array(text: &str) -> Option<Vec<&str>> {
    let b = text.as_bytes();
    let mut i = skip_whitespace(b, 0);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i = skip_whitespace(b, i + 1);
    let mut elements = Vec::new();
    if b.get(i) == Some(&b']') {
        return (skip_whitespace(b, i + 1) == b.len()).then_some(elements);
    }
    loop {
        let start = i;
        let mut depth = 0usize;
        loop {
            match *b.get(i)? {
                b'"' => {
                    i = skip_string(b, i + 1)?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b',' | b']' if depth == 0 => break,
                b'}' | b']' => depth = depth.checked_sub(1)?,
                _ => {}
            }
            i += 1;
        }
        let mut end = i;
        while end > start && b[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        if end == start {
            return None;
        }
        // Both ends sit next to ASCII bytes, so they are char boundaries.
        elements.push(&text[start..end]);
        if b[i] == b']' {
            return (skip_whitespace(b, i + 1) == b.len()).then_some(elements);
        }
        i = skip_whitespace(b, i + 1);
    }
}

fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\n' | b'\r' | b'\t'))
    {
        i += 1;
    }
    i
}

/// The index after the string whose opening quote is just before `i`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_array;

    #[test]
    fn splits_at_top_level_commas_only() {
        assert_eq!(split_array(" [ ] "), Some(vec![]));
        assert_eq!(
            split_array(r#"[ {"a":"x,]}\"\\","b":[1,{"c":2}]} ,"s", 5 ,null]"#),
            Some(vec![
                r#"{"a":"x,]}\"\\","b":[1,{"c":2}]}"#,
                r#""s""#,
                "5",
                "null"
            ])
        );
        assert_eq!(
            split_array("[\n{\"é\":\"ü\"}\n]\n"),
            Some(vec!["{\"é\":\"ü\"}"])
        );
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
            "[1] x",
            "[1]]",
            "[}]",
            "[\"abc]",
            "[\"a\\\"]",
        ] {
            assert_eq!(split_array(bad), None, "{bad}");
        }
    }
}
