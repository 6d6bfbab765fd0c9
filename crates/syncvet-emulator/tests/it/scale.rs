//! A batch of over a million records, served page by page on demand.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use syncvet_emulator::{EmulatorConfig, continuation_token, record_count, record_identity};

use crate::common::{DATE, date, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_near_the_end_of_a_million_records_comes_at_once() {
    let config = EmulatorConfig {
        pims_sources: 1,
        spread: 1.0,
        rows_per_day: 1_500_000,
        ..EmulatorConfig::default()
    };
    let total = record_count(&config, "p-0001", "patients", date());
    assert!(total >= 1_000_000, "{total}");
    let h = start(config.clone()).await;

    let started = Instant::now();
    let first = h
        .get(&format!("batch/p-0001/patients?date={DATE}&pageSize=1000"))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json()["totalCount"], total);
    assert_eq!(first.json()["items"].as_array().unwrap().len(), 1000);

    let token = continuation_token(&config, "p-0001", "patients", date(), total - 10);
    let last = h
        .get(&format!(
            "batch/p-0001/patients?date={DATE}&pageSize=1000&continuationToken={token}"
        ))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(
        last.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&last.body)
    );
    let page = last.json();
    assert_eq!(page["totalCount"], total);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 10);
    assert_eq!(page["continuationToken"], serde_json::Value::Null);
    let last = record_identity(&config, "p-0001", "patients", date(), total - 1).unwrap();
    assert_eq!(items[9]["id"], last.id.as_str());
    assert!(
        last.id.ends_with(&format!("-{}", last.created_index)),
        "{last:?}"
    );
    // Generating the whole batch would take many seconds.
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(h.emulator.stats().records_served, 1010);
}
