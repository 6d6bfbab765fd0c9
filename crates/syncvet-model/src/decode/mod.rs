//! Decoding a page of records into a typed Arrow batch, with rejects.
//!
//! The page's `items` text is split into its records as borrowed slices
//! (a scan of strings and brackets only), then each record is read by a serde visitor that
//! matches its keys against the entity's fields and parses each value
//! straight into a typed staging cell: no `serde_json::Value` tree, strings
//! borrowed from the page unless they hold escapes. A record whose cells are
//! all valid is appended to the Arrow builders; any other is a [`Reject`]
//! that carries its raw text, so the rest of the page is always kept.

mod builders;
mod cell;
mod record;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use serde::de::{self, IgnoredAny};

use crate::{DecodeError, Entity};
use builders::Columns;
use record::{Problem, RecordLayout, Row};

/// Decodes the pages of one entity from one source into Arrow batches.
/// Keep one per (source, entity) stream: it holds the key index and the
/// builders, so nothing is rebuilt per page.
///
/// Decoding rules where `schemas.md` is silent:
/// - string, date and timestamp fields take JSON strings only (a number in a
///   string field is rejected rather than reformatted);
/// - numeric fields take JSON numbers or strings of number text, read
///   exactly; whole-number fields accept `30.0` and `3e1` but not `30.5`;
///   decimals accept extra fractional digits only when they are zeros;
/// - booleans: `true`/`false` in any case as JSON or strings, `0`/`1` as
///   numbers or strings;
/// - timestamps need an offset (or `Z`); sub-microsecond digits are truncated;
/// - `list<string>` keeps null items (the item field is nullable); any other
///   item is a reject;
/// - a nested object (`primaryVet`) may be null (all its fields null);
/// - `deleted` absent or null is false;
/// - a field given twice in a record is a reject;
/// - unknown keys are counted only for accepted records (a rejected record
///   is kept whole in quarantine); nested ones as `parent.key`;
/// - no nesting-depth limit is needed: the visitor recurses at most into a
///   nested object and a list, and serde_json skips unknown values (and
///   scans raw records) iteratively, so depth costs memory bounded by the
///   page, never stack.
#[derive(Debug)]
pub struct PageDecoder {
    layout: RecordLayout,
    source_id: String,
    columns: Columns,
}

/// One decoded page.
#[derive(Debug)]
pub struct DecodedPage {
    /// The accepted records, exactly in [`Entity::arrow_schema`].
    pub batch: RecordBatch,
    /// The rejected records, in page order.
    pub rejects: Vec<Reject>,
    /// Keys the catalog does not know (dotted when nested) → how many
    /// accepted records carried them.
    pub unknown_keys: BTreeMap<String, u64>,
}

/// A record that could not be decoded, for the quarantine.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// The record's JSON text exactly as received.
    pub raw: String,
    /// The JSON key at fault, dotted when nested, or empty for the record as
    /// a whole.
    pub field: String,
    /// What is wrong, for a person to read.
    pub reason: String,
}

impl PageDecoder {
    /// A decoder for the records of `entity` read from the source `source_id`:
    /// a PIMS record's `practiceId` (a supplier record's `supplierId`) must
    /// equal it, else the record is rejected with that key as the field.
    pub fn new(entity: Arc<Entity>, source_id: &str) -> PageDecoder {
        PageDecoder {
            columns: Columns::new(&entity),
            layout: RecordLayout::new(entity),
            source_id: source_id.to_owned(),
        }
    }

    /// Decodes `items`, the JSON text of a page's `items` array. Fails only
    /// when the text as a whole is unusable (not UTF-8, not valid JSON, not
    /// an array); a bad record becomes a reject and never fails the page.
    pub fn decode(&mut self, items: &[u8]) -> Result<DecodedPage, DecodeError> {
        let text = std::str::from_utf8(items).map_err(|e| DecodeError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        let found = match text.trim_start().as_bytes().first() {
            Some(b'[') => None,
            Some(b'{') => Some("an object"),
            Some(b'"') => Some("a string"),
            Some(b'n') => Some("null"),
            Some(b't' | b'f') => Some("a boolean"),
            Some(b'-' | b'0'..=b'9') => Some("a number"),
            Some(_) => Some("something else"),
            None => Some("nothing"),
        };
        if let Some(found) = found {
            return Err(DecodeError::NotAnArray { found });
        }
        let b = text.as_bytes();
        let split = crate::scan::array_elements(b, crate::scan::skip_whitespace(b, 0))
            .filter(|&(_, end)| crate::scan::skip_whitespace(b, end) == b.len());
        let Some((records, _)) = split else {
            return Err(match serde_json::from_str::<IgnoredAny>(text) {
                Err(e) => DecodeError::Malformed(e),
                Ok(_) => DecodeError::Malformed(de::Error::custom("not a JSON array")),
            });
        };
        self.decode_records(items, &records)
    }

    /// Like [`decode`](Self::decode), for a page whose records were already
    /// located by the same scan ([`crate::scan`], the client's envelope
    /// check): `records` are their byte ranges in `items`. Saves scanning
    /// the array a second time.
    pub fn decode_records(
        &mut self,
        items: &[u8],
        records: &[Range<usize>],
    ) -> Result<DecodedPage, DecodeError> {
        let text = std::str::from_utf8(items).map_err(|e| DecodeError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        let records = records
            .iter()
            .map(|range| {
                text.get(range.clone()).ok_or_else(|| {
                    DecodeError::Malformed(de::Error::custom(format!(
                        "record range {range:?} is not within the {} bytes of items",
                        text.len()
                    )))
                })
            })
            .collect::<Result<Vec<&str>, DecodeError>>()?;
        self.decode_split(records)
    }

    fn decode_split(&mut self, records: Vec<&str>) -> Result<DecodedPage, DecodeError> {
        let mut row = Row::new(&self.layout);
        let mut rejects = Vec::new();
        let mut unknown_keys = BTreeMap::new();
        for raw in records {
            match row.read(&self.layout, raw, &self.source_id) {
                Ok(()) => {
                    self.columns.append(&mut row.cells);
                    row.count_unknown(&mut unknown_keys);
                }
                Err(Problem::Reject(field, reason)) => {
                    row.clear();
                    rejects.push(Reject {
                        raw: raw.to_owned(),
                        field,
                        reason,
                    });
                }
                Err(Problem::Malformed(e)) => {
                    // Drop the rows of this page already appended.
                    let _ = self.columns.finish();
                    return Err(DecodeError::Malformed(e));
                }
            }
        }
        Ok(DecodedPage {
            batch: self.columns.finish()?,
            rejects,
            unknown_keys,
        })
    }

    /// The entity being decoded.
    pub fn entity(&self) -> &Arc<Entity> {
        &self.layout.entity
    }
}
