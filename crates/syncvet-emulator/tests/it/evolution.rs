//! A day's batch holds new records, changed versions of records created on
//! earlier days and deletions of them. Records are classified here from
//! what a client sees (the date in the id, `deleted`), independently of the
//! emulator's generator, and checked against `record_identity`.

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use syncvet_emulator::{
    EmulatorConfig, RecordKind, continuation_token, record_count, record_identity,
};

use crate::common::{DATE, Harness, date, start};

/// The (creation date, index) an id spells: `pat-20261127-000042`.
fn parse_id(id: &str) -> (NaiveDate, u64) {
    let mut parts = id.split('-');
    let (Some(_), Some(day), Some(index), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("not a record id: {id}");
    };
    (
        NaiveDate::parse_from_str(day, "%Y%m%d").unwrap_or_else(|e| panic!("{id}: {e}")),
        index.parse().unwrap_or_else(|e| panic!("{id}: {e}")),
    )
}

fn is_deleted(item: &Value) -> bool {
    item.get("deleted") == Some(&Value::Bool(true))
}

/// The UTC date of a record's `lastModified`.
fn modified_on(item: &Value) -> NaiveDate {
    let text = item["lastModified"].as_str().unwrap();
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
        .date_naive()
}

fn one_source(config: EmulatorConfig) -> EmulatorConfig {
    EmulatorConfig {
        pims_sources: 1,
        spread: 1.0,
        ..config
    }
}

/// The record at `index` of the batch of `day`, read alone.
async fn record_at(
    h: &Harness,
    config: &EmulatorConfig,
    entity: &str,
    day: NaiveDate,
    index: u64,
) -> Value {
    let token = continuation_token(config, "p-0001", entity, day, index);
    let reply = h
        .get(&format!(
            "batch/p-0001/{entity}?date={day}&pageSize=1&continuationToken={token}"
        ))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["items"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_and_ids_do_not_depend_on_the_page_size() {
    let config = one_source(EmulatorConfig {
        rows_per_day: 1500,
        change_rate: 0.2,
        delete_rate: 0.1,
        dirty_rate: 0.05,
        ..EmulatorConfig::default()
    });
    let h = start(config.clone()).await;
    let (_, big) = h.read_batch("p-0001", "patients", 1000).await;
    let (small_pages, small) = h.read_batch("p-0001", "patients", 37).await;
    assert!(small_pages.len() > 30, "{}", small_pages.len());
    assert_eq!(
        big.len() as u64,
        record_count(&config, "p-0001", "patients", date())
    );
    assert_eq!(big, small, "the same records whatever the page size");
    let (mut kinds, mut checked) = ([0u64; 3], 0);
    for (position, item) in big.iter().enumerate() {
        let identity =
            record_identity(&config, "p-0001", "patients", date(), position as u64).unwrap();
        // A dirty record may have lost its id or have one of the wrong type.
        if let Some(id) = item["id"].as_str() {
            assert_eq!(id, identity.id, "{position}");
            checked += 1;
        }
        kinds[identity.kind as usize] += 1;
    }
    assert!(checked * 10 > big.len() * 9, "{checked} of {}", big.len());
    assert!(
        kinds[RecordKind::Change as usize] > 100 && kinds[RecordKind::Delete as usize] > 50,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_changes_and_deletions_come_at_about_their_rates() {
    let config = one_source(EmulatorConfig {
        rows_per_day: 2500,
        ..EmulatorConfig::default()
    });
    let h = start(config.clone()).await;
    let (mut total, mut changed, mut deleted) = (0u64, 0u64, 0u64);
    for day in 0..4 {
        let batch_date = date() + chrono::Days::new(day);
        let (_, items) = h
            .read_batch_of("p-0001", "patients", &batch_date.to_string(), 5000)
            .await;
        for (position, item) in items.iter().enumerate() {
            total += 1;
            let (created, index) = parse_id(item["id"].as_str().unwrap());
            match (created == batch_date, is_deleted(item)) {
                (true, false) => assert_eq!(index, position as u64, "{item}"),
                (true, true) => panic!("a new record is deleted: {item}"),
                (false, false) => changed += 1,
                (false, true) => deleted += 1,
            }
        }
    }
    assert!(total > 8000, "{total}");
    let change_share = changed as f64 / total as f64;
    let delete_share = deleted as f64 / total as f64;
    assert!(
        (0.06..=0.14).contains(&change_share),
        "changes {change_share}"
    );
    assert!(
        (0.006..=0.014).contains(&delete_share),
        "deletions {delete_share}"
    );
    let stats = h.emulator.stats();
    assert_eq!(stats.records_served, total);
    assert_eq!(stats.changed_records_served, changed);
    assert_eq!(stats.deleted_records_served, deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_and_deleted_ids_are_new_records_of_earlier_days_within_the_lookback() {
    let config = one_source(EmulatorConfig {
        rows_per_day: 400,
        change_rate: 0.15,
        delete_rate: 0.05,
        change_lookback_days: 30,
        ..EmulatorConfig::default()
    });
    let h = start(config.clone()).await;
    let (_, items) = h.read_batch("p-0001", "invoices", 1000).await;
    let (mut changes, mut deletions) = (0, 0);
    for item in &items {
        let id = item["id"].as_str().unwrap();
        let (created, index) = parse_id(id);
        if created == date() {
            continue;
        }
        let back = (date() - created).num_days();
        assert!((1..=30).contains(&back), "{id} is {back} days back");
        assert_eq!(
            modified_on(item),
            date(),
            "a new version is of the batch date: {item}"
        );
        if is_deleted(item) {
            deletions += 1;
        } else {
            changes += 1;
        }
        let origin = record_at(&h, &config, "invoices", created, index).await;
        assert_eq!(origin["id"], id, "the record {index} of {created}");
        assert!(!is_deleted(&origin), "the origin is a new record: {origin}");
        assert_eq!(modified_on(&origin), created, "{origin}");
    }
    assert!(
        changes > 20 && deletions > 5,
        "{changes} changes, {deletions} deletions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_is_true_exactly_for_deletions() {
    let config = one_source(EmulatorConfig {
        rows_per_day: 500,
        delete_rate: 0.05,
        ..EmulatorConfig::default()
    });
    let h = start(config.clone()).await;
    let mut deletions = 0;
    let mut absent = 0;
    for entity in ["clients", "patients", "invoice_lines", "medical_notes"] {
        let (_, items) = h.read_batch("p-0001", entity, 1000).await;
        for (position, item) in items.iter().enumerate() {
            let identity =
                record_identity(&config, "p-0001", entity, date(), position as u64).unwrap();
            match item.get("deleted") {
                Some(Value::Bool(true)) => {
                    assert_eq!(identity.kind, RecordKind::Delete, "{item}");
                    deletions += 1;
                }
                Some(Value::Bool(false)) => {
                    assert_ne!(identity.kind, RecordKind::Delete, "{item}")
                }
                None => {
                    assert_ne!(identity.kind, RecordKind::Delete, "{item}");
                    absent += 1;
                }
                Some(other) => panic!("deleted = {other} in {item}"),
            }
        }
    }
    assert!(deletions > 50, "{deletions}");
    assert!(absent > 50, "deleted is sometimes absent: {absent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_rates_serve_only_new_records_never_deleted() {
    let config = one_source(EmulatorConfig {
        rows_per_day: 400,
        change_rate: 0.0,
        delete_rate: 0.0,
        ..EmulatorConfig::default()
    });
    let h = start(config).await;
    let compact = DATE.replace('-', "");
    let mut total = 0;
    for entity in ["patients", "invoices", "reminders"] {
        let (_, items) = h.read_batch("p-0001", entity, 1000).await;
        for (position, item) in items.iter().enumerate() {
            let id = item["id"].as_str().unwrap();
            assert!(id.contains(&format!("-{compact}-")), "{id}");
            assert_eq!(parse_id(id).1, position as u64, "{id}");
            assert!(!is_deleted(item), "{item}");
            total += 1;
        }
    }
    assert!(total > 500, "{total}");
    let stats = h.emulator.stats();
    assert_eq!(
        (stats.changed_records_served, stats.deleted_records_served),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_evolution_switches_are_refused_naming_the_key() {
    let h = start(EmulatorConfig::default()).await;
    let url = format!("{}/__admin/config", h.emulator.url());
    for (patch, key) in [
        (serde_json::json!({"change_rate": 1.2}), "change_rate"),
        (serde_json::json!({"delete_rate": -0.5}), "delete_rate"),
        (
            serde_json::json!({"change_rate": 0.6, "delete_rate": 0.6}),
            "change_rate",
        ),
        (
            serde_json::json!({"change_lookback_days": 0}),
            "change_lookback_days",
        ),
    ] {
        let response = h
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(patch.to_string())
            .send()
            .await
            .unwrap();
        let reply = crate::common::reply(response).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{patch}");
        let body = reply.json();
        assert!(
            body["message"].as_str().unwrap().contains(key),
            "{patch}: {body}"
        );
    }
    assert_eq!(h.emulator.config().change_lookback_days, 90);
    // A good patch applies at once: with no changes or deletions, every id
    // of the batch is the batch date's.
    h.emulator
        .update(serde_json::json!({"change_rate": 0.0, "delete_rate": 0.0}))
        .unwrap();
    let (_, items) = h.read_batch("p-0001", "patients", 1000).await;
    assert!(!items.is_empty());
    for item in &items {
        assert_eq!(parse_id(item["id"].as_str().unwrap()).0, date(), "{item}");
    }
}
