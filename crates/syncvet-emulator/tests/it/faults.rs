//! Faults below HTTP (dropped connections, truncated bodies) and the fault
//! rates and latency.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use syncvet_emulator::EmulatorConfig;

use crate::common::{DATE, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_client_errors_and_the_server_keeps_serving() {
    let h = start(EmulatorConfig {
        drop_rate: 1.0,
        ..EmulatorConfig::default()
    })
    .await;
    let path = format!("batch/p-0001/patients?date={DATE}");
    for _ in 0..3 {
        let error = h
            .try_get(&path)
            .await
            .err()
            .expect("a dropped connection is an error");
        assert!(!error.is_status(), "{error}");
    }
    h.emulator.update(json!({"drop_rate": 0.0})).unwrap();
    assert_eq!(h.get(&path).await.status, StatusCode::OK);
    let stats = h.emulator.stats();
    assert_eq!(stats.faults["drop"], 3);
    assert_eq!(stats.requests, 4 + 1, "4 API requests and the token");
    assert_eq!(
        stats.by_status.get("200"),
        Some(&2),
        "the token and the last page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_bodies_announce_the_full_length_and_fail_to_read() {
    let h = start(EmulatorConfig {
        truncate_rate: 1.0,
        ..EmulatorConfig::default()
    })
    .await;
    let url = format!("{}batch/p-0001/patients?date={DATE}", h.emulator.base_url());
    let response = h.http.get(&url).bearer_auth(&h.token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the status line arrives");
    let announced = response.content_length().expect("a Content-Length");
    assert!(announced > 100);
    assert!(response.bytes().await.is_err(), "reading the body fails");

    h.emulator.update(json!({"truncate_rate": 0.0})).unwrap();
    let whole = h.get(&format!("batch/p-0001/patients?date={DATE}")).await;
    assert_eq!(
        whole.body.len() as u64,
        announced,
        "the same page in full has the announced length"
    );
    let stats = h.emulator.stats();
    assert_eq!(stats.faults["truncate"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rates_are_roughly_as_set() {
    let h = start(EmulatorConfig {
        error_rate_500: 0.2,
        error_rate_503: 0.1,
        ..EmulatorConfig::default()
    })
    .await;
    let n = 400;
    let (mut e500, mut e503) = (0u64, 0u64);
    for _ in 0..n {
        match h.get("practices").await.status {
            StatusCode::INTERNAL_SERVER_ERROR => e500 += 1,
            StatusCode::SERVICE_UNAVAILABLE => e503 += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
    }
    // Binomial bounds, about 4 standard deviations.
    assert!((48..=112).contains(&e500), "{e500} of {n} were 500");
    assert!((16..=64).contains(&e503), "{e503} of {n} were 503");
    let stats = h.emulator.stats();
    assert_eq!(stats.faults["500"], e500);
    assert_eq!(stats.faults["503"], e503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_added_to_api_requests() {
    let h = start(EmulatorConfig {
        latency_ms: 40,
        ..EmulatorConfig::default()
    })
    .await;
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(h.get("practices").await.status, StatusCode::OK);
    }
    let elapsed = started.elapsed();
    // Ten delays uniform in 0..80 ms: 400 ms on average.
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert_eq!(h.emulator.stats().faults["latency"], 10);
}
