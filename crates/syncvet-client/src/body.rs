//! Reading response bodies with a size bound, and parsing the page envelope
//! without copying the records.
//!
//! The envelope is scanned for the configured field names ([`syncvet_model::scan`]):
//! the `items` array is handed out as a `Bytes` slice of the body with
//! every record's range, so a page is never copied or turned into a
//! `serde_json::Value` here, and the model crate parses each record once.

use std::borrow::Cow;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;

use crate::config::EnvelopeConfig;
use crate::error::TransientError;
use syncvet_model::scan;

/// One HTTP answer, its body read in full (within a size bound).
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    /// Retry-After, as seconds or any HTTP date.
    pub retry_after: Option<std::time::Duration>,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Why an exchange brought no whole answer.
#[derive(Debug)]
pub(crate) enum Unanswered {
    /// The body is bigger than the limit (announced or actual): final.
    TooLarge,
    /// No answer, or one cut short: worth another attempt.
    Failed(TransientError),
}

/// Sends `request` and reads the whole answer, refusing a `Content-Length`
/// above `limit` before reading and stopping as soon as more than `limit`
/// bytes arrived.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    limit: u64,
) -> Result<Answer, Unanswered> {
    let mut response = request
        .send()
        .await
        .map_err(|e| Unanswered::Failed(TransientError::NoAnswer(e)))?;
    let status = response.status().as_u16();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    let retry_after = header(http::header::RETRY_AFTER)
        .and_then(|v| crate::retry::parse_retry_after(v, std::time::SystemTime::now()));
    let content_type = header(http::header::CONTENT_TYPE).map(str::to_owned);
    let announced = response.content_length();
    if announced.is_some_and(|len| len > limit) {
        return Err(Unanswered::TooLarge);
    }
    let mut body = BytesMut::with_capacity(announced.unwrap_or(8 * 1024) as usize);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(Unanswered::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => {
                return Ok(Answer {
                    status,
                    retry_after,
                    content_type,
                    body: body.freeze(),
                });
            }
            Err(source) => {
                return Err(Unanswered::Failed(TransientError::BodyCutShort {
                    status,
                    source,
                }));
            }
        }
    }
}

/// The parts of a page the client needs.
#[derive(Debug)]
pub(crate) struct Envelope {
    /// The raw JSON array of records, a slice of the body.
    pub items: Bytes,
    /// Where each record is in `items`: found by the same parse that checks
    /// the page, so the decoder need not scan the array again.
    pub records: Vec<Range<usize>>,
    pub total_count: Option<u64>,
    /// `None` (null, absent or empty) on the last page.
    pub continuation_token: Option<String>,
    /// Size of the whole body.
    pub body_bytes: usize,
}

/// Why a 200 body is not a page.
#[derive(Debug)]
pub(crate) enum EnvelopeError {
    /// Not JSON (or cut short): worth another attempt.
    Unparsable(String),
    /// Valid JSON that breaks the contract: another attempt returns the same.
    Protocol(String),
}

/// Parses a page envelope; `items` must be present and be an array. The
/// records are located by a structural scan ([`syncvet_model::scan`]) and left for
/// the decoder to parse; the other fields are parsed here. A body the scan
/// cannot follow is handed to serde_json, whose error says what is wrong.
pub(crate) fn parse_envelope(
    body: &Bytes,
    names: &EnvelopeConfig,
) -> Result<Envelope, EnvelopeError> {
    // The members as found: the items array is split as it is scanned
    // (read once), the other values are parsed after.
    let mut items = None;
    let mut others = Vec::new();
    let start = scan::skip_whitespace(body, 0);
    let scanned = scan::object_members(body, start, |key, at| {
        let key = key_text(body, key)?;
        if *key == names.items && body[at] == b'[' {
            let (records, end) = scan::array_elements(body, at)?;
            items = Some((at..end, records));
            return Some(end);
        }
        let end = scan::value_end(body, at)?;
        others.push((key, at..end));
        Some(end)
    });
    if scanned.is_none() {
        return Err(not_an_envelope(body));
    }
    let mut total_count = None;
    let mut continuation_token = None;
    for (key, value) in others {
        let text = &body[value];
        if *key == names.items {
            return Err(EnvelopeError::Protocol(format!("`{key}` is not an array")));
        } else if *key == names.total_count {
            total_count = parse_field(&key, text)?;
        } else if *key == names.continuation_token {
            continuation_token = parse_field(&key, text)?;
        } else {
            parse_field::<IgnoredAny>(&key, text)?;
        }
    }
    let (items, records) = items.ok_or_else(|| {
        EnvelopeError::Protocol(format!("no `{}` field in the page", names.items))
    })?;
    let records = records
        .into_iter()
        .map(|r| r.start - items.start..r.end - items.start)
        .collect();
    Ok(Envelope {
        items: body.slice(items),
        records,
        total_count,
        continuation_token: continuation_token.filter(|t: &String| !t.is_empty()),
        body_bytes: body.len(),
    })
}

/// A key's text, its escapes (rare in keys) resolved; `None` if it is not
/// a valid string.
fn key_text(body: &[u8], key: Range<usize>) -> Option<Cow<'_, str>> {
    let text = &body[key.clone()];
    match text.contains(&b'\\') {
        false => std::str::from_utf8(text).map(Cow::Borrowed).ok(),
        // Widened to the quotes, it is a JSON string.
        true => serde_json::from_slice::<String>(&body[key.start - 1..key.end + 1])
            .map(Cow::Owned)
            .ok(),
    }
}

/// The value of the envelope field `name`: a value of the wrong type
/// breaks the contract, text that is not JSON is worth another attempt.
fn parse_field<T: serde::de::DeserializeOwned>(
    name: &str,
    text: &[u8],
) -> Result<T, EnvelopeError> {
    serde_json::from_slice(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => EnvelopeError::Protocol(format!("`{name}`: {e}")),
        _ => EnvelopeError::Unparsable(format!(
            "`{name}`: {e} in `{}`",
            String::from_utf8_lossy(&text[..text.len().min(80)])
        )),
    })
}

/// What serde_json says of a body the scan could not follow: cut short or
/// not JSON (worth another attempt), or JSON that is no page.
fn not_an_envelope(body: &[u8]) -> EnvelopeError {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            EnvelopeError::Protocol(e.to_string())
        }
        Err(e) => EnvelopeError::Unparsable(e.to_string()),
        Ok(_) => EnvelopeError::Protocol(
            "a JSON object the envelope scan could not follow (please report this page)".into(),
        ),
    }
}

/// Says what a 200 body is when it is not JSON at all (an HTML sign-in page
/// from a proxy, say): its content type and first bytes. A body cut short
/// still starts as JSON and is left to the envelope parse (and a retry).
pub(crate) fn describe_non_json(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if matches!(first, b'{' | b'[') {
        return None;
    }
    let head: String = String::from_utf8_lossy(&body[..body.len().min(120)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Some(format!(
        "a 200 answer that is not JSON (Content-Type: {}), starting `{}`",
        content_type.unwrap_or("none"),
        head.trim()
    ))
}

/// The code and message of an error body, when it has them.
pub(crate) fn parse_error_body(body: &[u8], names: &EnvelopeConfig) -> (Option<String>, String) {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let code = field(&names.error);
    let message = match (&code, field(&names.message)) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.clone(),
        (None, Some(message)) => message,
        (None, None) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> EnvelopeConfig {
        EnvelopeConfig::default()
    }

    #[test]
    fn items_are_a_zero_copy_slice() {
        let body = Bytes::from_static(
            br#"{"practiceId":"p-1","totalCount":2,"items":[{"id":"a"},{"id":"b"}],"continuationToken":"t1"}"#,
        );
        let env = parse_envelope(&body, &names()).unwrap();
        assert_eq!(&env.items[..], br#"[{"id":"a"},{"id":"b"}]"#);
        // Same memory as the body: no copy.
        let offset = env.items.as_ptr() as usize - body.as_ptr() as usize;
        assert_eq!(&body[offset..offset + env.items.len()], &env.items[..]);
        assert_eq!(env.total_count, Some(2));
        assert_eq!(env.continuation_token.as_deref(), Some("t1"));
    }

    #[test]
    fn each_record_is_located_within_the_items_whatever_the_whitespace() {
        let body = Bytes::from_static(
            b"{\"items\" : [ \n {\"id\":\"a\",\"n\":[1,{\"x\":\"]\"}]} ,\t{\"id\":\"b\"}\r\n ] ,\"totalCount\":2}",
        );
        let env = parse_envelope(&body, &names()).unwrap();
        assert_eq!(
            &env.items[..],
            b"[ \n {\"id\":\"a\",\"n\":[1,{\"x\":\"]\"}]} ,\t{\"id\":\"b\"}\r\n ]"
        );
        let records: Vec<&[u8]> = env.records.iter().map(|r| &env.items[r.clone()]).collect();
        assert_eq!(
            records,
            [
                &br#"{"id":"a","n":[1,{"x":"]"}]}"#[..],
                &br#"{"id":"b"}"#[..]
            ]
        );
        let one = parse_envelope(&Bytes::from_static(br#"{"items":[7]}"#), &names()).unwrap();
        assert_eq!(&one.items[..], b"[7]");
        assert_eq!(one.records.first(), Some(&(1..2)));
    }

    #[test]
    fn last_page_and_configured_names() {
        let mut names = names();
        names.items = "records".into();
        names.continuation_token = "next".into();
        let body = Bytes::from_static(br#"{"re\u0063ords": [], "next": null}"#);
        let env = parse_envelope(&body, &names).unwrap();
        assert_eq!(&env.items[..], b"[]");
        assert_eq!(env.continuation_token, None);
        assert_eq!(env.total_count, None);
    }

    #[test]
    fn truncation_is_retryable_and_contract_breaks_are_not() {
        let cut = Bytes::from_static(br#"{"items":[{"id":"a"},{"id"#);
        assert!(matches!(
            parse_envelope(&cut, &names()),
            Err(EnvelopeError::Unparsable(_))
        ));
        let garbage = Bytes::from_static(b"<html>busy</html>");
        assert!(matches!(
            parse_envelope(&garbage, &names()),
            Err(EnvelopeError::Unparsable(_))
        ));
        let not_array = Bytes::from_static(br#"{"items":{"id":"a"}}"#);
        assert!(matches!(
            parse_envelope(&not_array, &names()),
            Err(EnvelopeError::Protocol(_))
        ));
        let missing = Bytes::from_static(br#"{"data":[]}"#);
        assert!(matches!(
            parse_envelope(&missing, &names()),
            Err(EnvelopeError::Protocol(_))
        ));
        let bad_count = Bytes::from_static(br#"{"items":[],"totalCount":"many"}"#);
        assert!(matches!(
            parse_envelope(&bad_count, &names()),
            Err(EnvelopeError::Protocol(_))
        ));
    }

    #[test]
    fn a_whole_page_with_a_record_that_is_not_json_is_left_to_the_decoder() {
        // The scan follows strings and brackets only: the record is handed
        // on whole, and the decoder's full parse says what is wrong with it
        // (a body cut short is still `Unparsable`, above).
        let body =
            Bytes::from_static(br#"{"items":[{"id":"a"},{"id":tru,"n":[1 2]}],"totalCount":2}"#);
        let env = parse_envelope(&body, &names()).unwrap();
        let records: Vec<&[u8]> = env.records.iter().map(|r| &env.items[r.clone()]).collect();
        assert_eq!(records, [&br#"{"id":"a"}"#[..], br#"{"id":tru,"n":[1 2]}"#]);
        // The envelope's own fields are still checked in full.
        let bad_field = Bytes::from_static(br#"{"items":[],"practiceId":tru}"#);
        assert!(matches!(
            parse_envelope(&bad_field, &names()),
            Err(EnvelopeError::Unparsable(_))
        ));
    }

    #[test]
    fn a_sign_in_page_is_named_by_its_content_type_and_first_bytes() {
        let page = b"\n <!DOCTYPE html><html><head><title>Sign in</title></head>\n<body>";
        let text = describe_non_json(Some("text/html; charset=utf-8"), page).unwrap();
        assert!(
            text.contains("Content-Type: text/html; charset=utf-8"),
            "{text}"
        );
        assert!(
            text.contains("`<!DOCTYPE html><html><head><title>Sign in"),
            "{text}"
        );
        assert_eq!(
            describe_non_json(Some("application/json"), br#" {"items":[]"#),
            None
        );
        assert_eq!(describe_non_json(None, b""), None);
    }

    #[test]
    fn error_body_code_and_message() {
        let (code, message) = parse_error_body(
            br#"{"error":"ContinuationTokenExpired","message":"too old"}"#,
            &names(),
        );
        assert_eq!(code.as_deref(), Some("ContinuationTokenExpired"));
        assert_eq!(message, "ContinuationTokenExpired: too old");
        let (code, message) = parse_error_body(b"plain text", &names());
        assert_eq!(code, None);
        assert_eq!(message, "plain text");
    }
}
