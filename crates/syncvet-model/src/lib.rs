//! The SyncVet entity catalog and the JSON → Arrow mapping.
//!
//! The catalog is data, not code: one TOML file per entity under `catalog/`,
//! embedded in the binary, and optionally overridden or extended from a
//! folder of the user's (a file named like an embedded entity replaces it;
//! any other file adds an entity). From each [`Entity`] the crate derives
//! the Arrow schema of its Parquet files ([`Entity::arrow_schema`]) and a
//! fingerprint of that schema (of the catalog's own type names) that each
//! batch's Delta commit records, so a reader can tell when a batch was
//! written with another catalog. It also derives a record's shape once
//! ([`Entity::members`]: fields and nested objects, which the decoder and
//! the emulator both follow), and carries the hints the emulator generates
//! realistic records from ([`Sample`], `id_prefix`, `daily_weight`).
//!
//! [`scan`] finds where each JSON value begins and ends by following
//! strings and brackets only: the client locates a page's records with it,
//! and [`PageDecoder::decode`] splits a page the same way, so every path
//! finds records one way. [`Chain`] prints an error with its causes, once
//! each; [`fnv1a`] is the one stable hash.
//!
//! [`PageDecoder`] turns the JSON text of a page's `items` into a
//! `RecordBatch` of exactly that schema, coercing each value as it is parsed
//! (no `serde_json::Value` tree) and setting aside every record it cannot
//! type as a [`Reject`] with its raw text, the field and the reason, so one
//! bad record never costs its page. The decoding rules, including those the
//! spec leaves open, are listed on [`PageDecoder`].
//!
//! This crate is pure: it does no I/O beyond reading a catalog folder.
//! HTTP lives in `syncvet-client`, storage in `syncvet-lake`.

mod catalog;
mod decode;
mod error;
mod field_type;
mod sample;
pub mod scan;

pub use catalog::{Catalog, Entity, Field, FieldRole, Member, SourceType, fnv1a};
pub use decode::{DecodedPage, PageDecoder, Reject};
pub use error::{CatalogError, Chain, DecodeError};
pub use field_type::FieldType;
pub use sample::{Sample, TEXT_SAMPLES};
