//! Same request, same bytes: twice, in parallel, across restarts; and
//! `totalCount` is what the pages hold.

use futures::future::join_all;
use reqwest::StatusCode;
use syncvet_emulator::{EmulatorConfig, record_count, record_identity, sources};

use crate::common::{DATE, date, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_byte_identical_in_any_order_and_concurrency() {
    let config = EmulatorConfig {
        spread: 1.0,
        dirty_rate: 0.05,
        drift_rate: 0.05,
        ..EmulatorConfig::default()
    };
    let h = start(config.clone()).await;
    let (in_order, items) = h.read_batch("p-0002", "invoice_lines", 50).await;
    assert!(
        in_order.len() >= 3,
        "the batch should span several pages, has {}",
        in_order.len()
    );
    assert_eq!(
        items.len() as u64,
        record_count(&config, "p-0002", "invoice_lines", date())
    );

    // The same page twice.
    let again = h
        .get(&format!(
            "batch/p-0002/invoice_lines?date={DATE}&pageSize=50"
        ))
        .await;
    assert_eq!(again.body, in_order[0]);

    // Every page at once, in reverse order, with the tokens seen in order.
    let mut paths = vec![format!(
        "batch/p-0002/invoice_lines?date={DATE}&pageSize=50"
    )];
    for body in &in_order[..in_order.len() - 1] {
        let page: serde_json::Value = serde_json::from_slice(body).unwrap();
        let token = page["continuationToken"].as_str().unwrap();
        paths.push(format!(
            "batch/p-0002/invoice_lines?date={DATE}&pageSize=50&continuationToken={token}"
        ));
    }
    let parallel = join_all(paths.iter().rev().map(|p| h.get(p))).await;
    let mut parallel: Vec<Vec<u8>> = parallel.into_iter().map(|r| r.body).collect();
    parallel.reverse();
    assert_eq!(parallel, in_order);

    // Another emulator with the same seed serves the same bytes; another seed does not.
    let twin = start(config.clone()).await;
    let twin_page = twin
        .get(&format!(
            "batch/p-0002/invoice_lines?date={DATE}&pageSize=50"
        ))
        .await;
    assert_eq!(twin_page.body, in_order[0]);
    let other = start(EmulatorConfig { seed: 7, ..config }).await;
    let other_page = other
        .get(&format!(
            "batch/p-0002/invoice_lines?date={DATE}&pageSize=50"
        ))
        .await;
    assert_eq!(other_page.status, StatusCode::OK);
    assert_ne!(other_page.body, in_order[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_count_equals_the_records_served_for_every_source_and_entity() {
    let config = EmulatorConfig {
        pims_sources: 2,
        supplier_sources: 2,
        rows_per_day: 120,
        ..EmulatorConfig::default()
    };
    let h = start(config.clone()).await;
    let catalog = syncvet_model::Catalog::embedded();
    let mut served = 0u64;
    let mut sizes = Vec::new();
    for source in sources(&config) {
        for entity in catalog.for_source(source.source_type) {
            let (bodies, items) = h.read_batch(&source.id, &entity.name, 97).await;
            let expected = record_count(&config, &source.id, &entity.name, date());
            for body in &bodies {
                let page: serde_json::Value = serde_json::from_slice(body).unwrap();
                assert_eq!(
                    page["totalCount"], expected,
                    "{} {}",
                    source.id, entity.name
                );
                assert_eq!(page["entity"], entity.name.as_str());
                assert_eq!(page["practiceId"], source.id.as_str());
                assert_eq!(page["date"], DATE);
            }
            assert_eq!(
                items.len() as u64,
                expected,
                "{} {}",
                source.id,
                entity.name
            );
            // Changes and deletions carry the ids of earlier records, never
            // one already in the batch.
            let mut ids = std::collections::HashSet::new();
            for (position, item) in items.iter().enumerate() {
                let identity =
                    record_identity(&config, &source.id, &entity.name, date(), position as u64)
                        .unwrap();
                assert_eq!(
                    item["id"],
                    identity.id.as_str(),
                    "{} {}",
                    source.id,
                    entity.name
                );
                assert!(ids.insert(identity.id), "ids are unique within a batch");
            }
            served += expected;
            if entity.name == "patients" {
                sizes.push(expected);
            }
        }
    }
    assert_eq!(h.emulator.stats().records_served, served);
    assert!(sizes[0] != sizes[1], "sources differ in size: {sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_rendered_ahead_is_not_served_after_an_admin_patch() {
    // Page 1 is served (and page 2 rendered ahead) before the patch; page 2,
    // asked for after it, is the page the patched switches render.
    let config = EmulatorConfig {
        spread: 1.0,
        ..EmulatorConfig::default()
    };
    let patched = EmulatorConfig {
        dirty_rate: 1.0,
        ..config.clone()
    };
    let second_page = |token: &str| {
        format!("batch/p-0002/invoice_lines?date={DATE}&pageSize=20&continuationToken={token}")
    };
    let token =
        syncvet_emulator::continuation_token(&config, "p-0002", "invoice_lines", date(), 20);
    let h = start(config.clone()).await;
    let first = h
        .get(&format!(
            "batch/p-0002/invoice_lines?date={DATE}&pageSize=20"
        ))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let response = h
        .http
        .post(format!("{}/__admin/config", h.emulator.url()))
        .header("content-type", "application/json")
        .body(serde_json::json!({"dirty_rate": 1.0}).to_string())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let after = h.get(&second_page(&token)).await;

    let fresh = start(patched).await;
    let expected = fresh.get(&second_page(&token)).await;
    assert_eq!(expected.status, StatusCode::OK);
    assert_eq!(after.body, expected.body);
    let unpatched = start(config).await;
    let before = unpatched.get(&second_page(&token)).await;
    assert_ne!(after.body, before.body, "the patch changes the page");
}
