//! Reading response bodies with a size bound, and parsing the page envelope
//! without copying the records.
//!
//! The envelope is parsed with a visitor that looks only at the configured
//! field names: each record of `items` is borrowed as a `&RawValue`, and the
//! array is handed out as a `Bytes` slice of the body with every record's
//! range, so a page is never copied or turned into a `serde_json::Value`
//! here (the model crate decodes the records once, without scanning again).

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::config::EnvelopeConfig;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Bigger than the limit (announced or actual).
    TooLarge,
    /// The connection failed mid-body (dropped, truncated, timed out).
    Transport(String),
}

/// Reads the whole body, refusing a `Content-Length` above `limit` before
/// reading and stopping as soon as more than `limit` bytes arrived.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Bytes, BodyError> {
    let announced = response.content_length();
    if announced.is_some_and(|len| len > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = BytesMut::with_capacity(announced.unwrap_or(8 * 1024) as usize);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => return Err(BodyError::Transport(error_chain(&e))),
        }
    }
}

/// The headers a caller acts on: Retry-After (seconds or any HTTP date)
/// and the content type.
pub(crate) fn answer_headers(
    response: &reqwest::Response,
) -> (Option<std::time::Duration>, Option<String>) {
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    (
        header(http::header::RETRY_AFTER)
            .and_then(|v| crate::retry::parse_retry_after(v, std::time::SystemTime::now())),
        header(http::header::CONTENT_TYPE).map(str::to_owned),
    )
}

/// An error with its sources, for messages (reqwest hides the cause).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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

/// Parses a page envelope; `items` must be present and be an array.
pub(crate) fn parse_envelope(
    body: &Bytes,
    names: &EnvelopeConfig,
) -> Result<Envelope, EnvelopeError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = EnvelopeSeed { names }
        .deserialize(&mut de)
        .and_then(|fields| de.end().map(|()| fields))
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => EnvelopeError::Protocol(e.to_string()),
            _ => EnvelopeError::Unparsable(e.to_string()),
        })?;
    let elements = fields.items.ok_or_else(|| {
        EnvelopeError::Protocol(format!("no `{}` field in the page", names.items))
    })?;
    let (items, records) = locate_records(body, &elements);
    Ok(Envelope {
        items,
        records,
        total_count: fields.total_count,
        continuation_token: fields.continuation_token.filter(|t| !t.is_empty()),
        body_bytes: body.len(),
    })
}

/// The items array as a slice of `body`, and each record's range in it.
/// The elements borrow from `body`, so their offsets are exact; JSON allows
/// only whitespace between `[` and the first element and between the last
/// element and `]`, so the brackets are found by skipping it.
fn locate_records(body: &Bytes, elements: &[&RawValue]) -> (Bytes, Vec<Range<usize>>) {
    let (Some(first), Some(last)) = (elements.first(), elements.last()) else {
        return (Bytes::from_static(b"[]"), Vec::new());
    };
    let offset = |raw: &RawValue| raw.get().as_ptr() as usize - body.as_ptr() as usize;
    let is_space = |b: &u8| b.is_ascii_whitespace();
    let open = offset(first)
        - body[..offset(first)]
            .iter()
            .rev()
            .take_while(|b| is_space(b))
            .count()
        - 1;
    let last_end = offset(last) + last.get().len();
    let close = last_end + body[last_end..].iter().take_while(|b| is_space(b)).count();
    let records = elements
        .iter()
        .map(|raw| {
            let start = offset(raw) - open;
            start..start + raw.get().len()
        })
        .collect();
    (body.slice(open..=close), records)
}

struct EnvelopeFields<'a> {
    items: Option<Vec<&'a RawValue>>,
    total_count: Option<u64>,
    continuation_token: Option<String>,
}

struct EnvelopeSeed<'n> {
    names: &'n EnvelopeConfig,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = EnvelopeFields<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = EnvelopeFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a page envelope (JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = EnvelopeFields {
            items: None,
            total_count: None,
            continuation_token: None,
        };
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let key = key.as_str();
            if key == self.names.items {
                fields.items = Some(map.next_value()?);
            } else if key == self.names.total_count {
                fields.total_count = map.next_value()?;
            } else if key == self.names.continuation_token {
                fields.continuation_token = map.next_value()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
    }
}

/// A map key, borrowed when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key::Owned(v.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
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
