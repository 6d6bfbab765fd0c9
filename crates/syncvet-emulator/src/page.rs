//! Pages: the batch envelope, the practices list, and continuation tokens.
//!
//! A continuation token is `{offset}-{issued}-{check}` in hex: the position
//! of the next record, the time it was issued (unix milliseconds, or 0 when
//! `continuation_ttl_secs` is 0, so the token is then a pure function of the
//! position), and a check binding both to the batch. With a TTL the bytes of
//! a page differ from one request to the next in the token only.

use chrono::{Datelike, NaiveDate};

use crate::EmulatorConfig;
use crate::hash::{combine, hash_str};
use crate::json::{push_date_raw, push_int, push_str};
use crate::lineage::Lineage;
use crate::plan::EntityPlan;
use crate::records::{Batch, RecordTally, push_compact_date};
use crate::sources::{Practice, batch_prefix};

/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
pub(crate) const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// Days since 1970-01-01 of a date.
pub(crate) fn days_since_epoch(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE
}

/// The hash every value of a batch derives from.
pub(crate) fn batch_hash(
    config: &EmulatorConfig,
    source_id: &str,
    entity: &str,
    date: NaiveDate,
) -> u64 {
    combine(
        batch_prefix(config, source_id, entity),
        days_since_epoch(date) as u64,
    )
}

/// The hash that binds practices-list tokens.
pub(crate) fn practices_hash(config: &EmulatorConfig) -> u64 {
    combine(config.seed, hash_str("practices"))
}

/// A token for the record at `offset` of the listing whose hash is `scope`.
pub(crate) fn encode_token(scope: u64, offset: u64, issued_ms: u64) -> String {
    let check = combine(combine(scope, offset), issued_ms) as u32;
    format!("{offset:x}-{issued_ms:x}-{check:08x}")
}

/// Why a continuation token was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    /// Not a token of this listing.
    Invalid,
    /// Older than `continuation_ttl_secs`.
    Expired,
}

/// The offset a token points at, if it is valid and fresh at `now_ms`.
pub(crate) fn decode_token(
    scope: u64,
    token: &str,
    ttl_secs: u64,
    now_ms: u64,
) -> Result<u64, TokenProblem> {
    let mut parts = token.split('-');
    let (Some(offset), Some(issued), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenProblem::Invalid);
    };
    let parse = |s: &str| u64::from_str_radix(s, 16).map_err(|_| TokenProblem::Invalid);
    let (offset, issued) = (parse(offset)?, parse(issued)?);
    if encode_token(scope, offset, issued) != token {
        return Err(TokenProblem::Invalid);
    }
    if ttl_secs > 0 && now_ms.saturating_sub(issued) > ttl_secs * 1000 {
        return Err(TokenProblem::Expired);
    }
    Ok(offset)
}

/// The token pointing at record `offset` of a batch, as the emulator issues
/// it when `continuation_ttl_secs` is 0. Lets tests and tools jump into the
/// middle of a huge batch without reading the pages before it.
pub fn continuation_token(
    config: &EmulatorConfig,
    source_id: &str,
    entity: &str,
    date: NaiveDate,
    offset: u64,
) -> String {
    encode_token(batch_hash(config, source_id, entity, date), offset, 0)
}

/// A rendered 200 page and what it holds.
#[derive(Debug)]
pub(crate) struct RenderedPage {
    pub body: Vec<u8>,
    pub tally: RecordTally,
}

/// Renders records `offset..offset+page_size` (capped at `total`) of a
/// batch: the page up to its continuation token, which
/// [`finish_batch_page`] adds when the page is served.
#[allow(clippy::too_many_arguments)]
pub(crate) fn render_batch_records(
    config: &EmulatorConfig,
    plan: &EntityPlan,
    source_id: &str,
    date: NaiveDate,
    offset: u64,
    page_size: u64,
    total: u64,
) -> RenderedPage {
    let date_days = days_since_epoch(date);
    let mut id_head = Vec::with_capacity(24);
    id_head.push(b'"');
    id_head.extend_from_slice(plan.id_prefix.as_bytes());
    id_head.push(b'-');
    push_compact_date(&mut id_head, date_days);
    id_head.push(b'-');
    let mut source_json = Vec::with_capacity(source_id.len() + 2);
    push_str(&mut source_json, source_id);
    let lineage = Lineage::new(config, source_id, &plan.name);
    let batch = Batch {
        plan,
        hash: lineage.batch_hash(date_days),
        lineage,
        date_days,
        source_json,
        id_head,
        pims_sources: config.pims_sources,
        population: config.rows_per_day.max(1),
        dirty_rate: config.dirty_rate,
        drift_rate: config.drift_rate,
    };
    let end = offset.saturating_add(page_size).min(total);
    let records = end.saturating_sub(offset);
    let mut out = Vec::with_capacity(256 + records as usize * plan.bytes_hint);
    out.extend_from_slice(b"{\"practiceId\":");
    push_str(&mut out, source_id);
    out.extend_from_slice(b",\"entity\":");
    push_str(&mut out, &plan.name);
    out.extend_from_slice(b",\"date\":\"");
    push_date_raw(&mut out, date_days);
    out.extend_from_slice(b"\",\"totalCount\":");
    push_int(&mut out, total);
    out.extend_from_slice(b",\"items\":[");
    let mut tally = RecordTally::default();
    for index in offset..end {
        if index > offset {
            out.push(b',');
        }
        batch.render(&mut out, index, &mut tally);
    }
    RenderedPage { body: out, tally }
}

/// Ends a page of [`render_batch_records`] with its continuation token.
pub(crate) fn finish_batch_page(page: &mut RenderedPage, next_token: Option<&str>) {
    page.body.extend_from_slice(b"],\"continuationToken\":");
    push_token(&mut page.body, next_token);
    page.body.push(b'}');
}

/// Renders one page of `GET /api/practices`.
pub(crate) fn render_practices_page(practices: &[Practice], next_token: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + practices.len() * 200);
    out.extend_from_slice(b"{\"items\":[");
    for (i, p) in practices.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"practiceId\":");
        push_str(&mut out, &p.id);
        out.extend_from_slice(b",\"practiceName\":");
        push_str(&mut out, &p.name);
        out.extend_from_slice(b",\"dataSourceType\":");
        push_str(
            &mut out,
            match p.source_type {
                syncvet_model::SourceType::Pims => "PIMS",
                syncvet_model::SourceType::Supplier => "Supplier",
            },
        );
        out.extend_from_slice(b",\"pimsName\":");
        match &p.pims_name {
            Some(name) => push_str(&mut out, name),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"timeZone\":");
        push_str(&mut out, &p.time_zone);
        out.extend_from_slice(b",\"batchSyncEnabled\":");
        out.extend_from_slice(if p.batch_sync_enabled {
            b"true"
        } else {
            b"false"
        });
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"continuationToken\":");
    push_token(&mut out, next_token);
    out.push(b'}');
    out
}

fn push_token(out: &mut Vec<u8>, token: Option<&str>) {
    match token {
        Some(t) => push_str(out, t),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncvet_model::Catalog;

    #[test]
    fn tokens_round_trip_and_reject_tampering_and_age() {
        let token = encode_token(7, 1234, 0);
        assert_eq!(decode_token(7, &token, 0, 99), Ok(1234));
        assert_eq!(decode_token(8, &token, 0, 99), Err(TokenProblem::Invalid));
        assert_eq!(
            decode_token(7, "4d3-0-00000000", 0, 99),
            Err(TokenProblem::Invalid)
        );
        assert_eq!(
            decode_token(7, "garbage", 0, 99),
            Err(TokenProblem::Invalid)
        );
        let timed = encode_token(7, 10, 5_000);
        assert_eq!(decode_token(7, &timed, 2, 6_999), Ok(10));
        assert_eq!(
            decode_token(7, &timed, 2, 7_001),
            Err(TokenProblem::Expired)
        );
        // A position-only token is expired as soon as a TTL is switched on.
        assert_eq!(
            decode_token(7, &token, 2, 1_000_000),
            Err(TokenProblem::Expired)
        );
    }

    #[test]
    fn every_entity_renders_valid_json_with_the_declared_count() {
        let catalog = Catalog::embedded();
        let config = EmulatorConfig {
            dirty_rate: 0.2,
            drift_rate: 0.2,
            ..EmulatorConfig::default()
        };
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        for entity in catalog.entities() {
            let plan = EntityPlan::new(entity, &catalog);
            let mut page = render_batch_records(&config, &plan, "p-0001", date, 5, 40, 30);
            finish_batch_page(&mut page, Some("x"));
            let value: serde_json::Value = serde_json::from_slice(&page.body).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}: {}",
                    entity.name,
                    String::from_utf8_lossy(&page.body)
                )
            });
            assert_eq!(
                value["items"].as_array().unwrap().len(),
                25,
                "{}",
                entity.name
            );
            assert_eq!(page.tally.records, 25);
            assert_eq!(value["totalCount"], 30);
            assert_eq!(value["date"], "2026-11-27");
        }
    }
}
