//! The gateway's limits over HTTP: 429 with Retry-After beyond them, counters
//! that agree, and early retries counted fairly.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use syncvet_emulator::EmulatorConfig;

use crate::common::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_limit_get_429_with_retry_after() {
    let h = start(EmulatorConfig {
        rate_limit_rps: 4,
        burst: 4,
        retry_after_secs: 1,
        // Every request after the first 429 is early (none is inside a grace).
        early_retry_grace_ms: 0,
        ..EmulatorConfig::default()
    })
    .await;
    let mut ok = 0;
    let mut limited = 0;
    let mut first_limited = None;
    let started = std::time::Instant::now();
    for i in 0..20u64 {
        let reply = h.get("practices").await;
        match reply.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                first_limited.get_or_insert(i);
                assert_eq!(reply.headers["retry-after"], "1");
                assert_eq!(reply.json()["error"], "TooManyRequests");
            }
            other => panic!("unexpected {other}"),
        }
    }
    // The burst of 4, plus what the bucket refilled at 4/s while sending.
    let refilled = (started.elapsed().as_secs_f64() * 4.0).ceil() as u64;
    assert!(
        (4..=4 + refilled).contains(&ok),
        "{ok} passed, {refilled} refilled"
    );
    let stats = h.emulator.stats();
    assert_eq!(stats.by_status["429"], limited);
    assert_eq!(stats.rate_limited, limited);
    assert_eq!(stats.rate_limited_by["token_bucket"], limited);
    assert_eq!(stats.rate_limited_by.values().sum::<u64>(), limited);
    assert_eq!(stats.by_status["200"], ok + 1, "and the token");
    // Every request after the first 429 came within a second of the last
    // 429, so before its Retry-After.
    let early = 20 - first_limited.expect("some 429") - 1;
    assert_eq!(stats.early_retries, early);

    // Waiting out the Retry-After: served again, and not an early retry.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(h.get("practices").await.status, StatusCode::OK);
    assert_eq!(h.emulator.stats().early_retries, early);

    // Lifting the limit at run time.
    h.emulator
        .update(serde_json::json!({"rate_limit_rps": 0}))
        .unwrap();
    for _ in 0..20 {
        assert_eq!(h.get("practices").await.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_retry_after_is_sent_as_one_and_a_retry_inside_the_grace_is_not_early() {
    let h = start(EmulatorConfig {
        rate_limit_rps: 1,
        burst: 1,
        retry_after_secs: 0,
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(h.get("practices").await.status, StatusCode::OK);
    let limited = h.get("practices").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "1");
    // At once: inside the 100 ms grace, so not blamed.
    let _ = h.get("practices").await;
    assert_eq!(h.emulator.stats().early_retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_retries_count_only_requests_after_the_grace_and_before_the_deadline() {
    let h = start(EmulatorConfig {
        rate_limit_rps: 1,
        burst: 1,
        retry_after_secs: 1,
        early_retry_grace_ms: 400,
        ..EmulatorConfig::default()
    })
    .await;
    assert_eq!(h.get("practices").await.status, StatusCode::OK);
    let first_429 = h.get("practices").await;
    let t0 = Instant::now();
    assert_eq!(first_429.status, StatusCode::TOO_MANY_REQUESTS);
    // Inside the grace (sent before the client could have read the 429).
    assert_eq!(
        h.get("practices").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert!(t0.elapsed() < Duration::from_millis(400), "test too slow");
    assert_eq!(h.emulator.stats().early_retries, 0);
    // After the grace, before the Retry-After: early (and refused again,
    // which lengthens the pause to about t0 + 1.6 s).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        h.get("practices").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(h.emulator.stats().early_retries, 1);
    // After the (lengthened) deadline: not early, and served.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(h.get("practices").await.status, StatusCode::OK);
    let stats = h.emulator.stats();
    assert_eq!(stats.early_retries, 1);
    assert_eq!(stats.rate_limited_by["token_bucket"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_window_sends_the_rest_of_the_window_as_retry_after() {
    let before_start = Instant::now();
    let h = start(EmulatorConfig {
        window_calls: 3,
        window_secs: 2,
        retry_after_secs: 7,
        ..EmulatorConfig::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(h.get("practices").await.status, StatusCode::OK);
    }
    let refused = h.get("practices").await;
    // The window started after `before_start`: at most this much of it is gone.
    let gone = before_start.elapsed().as_secs_f64();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"], "TooManyRequests");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let least = ((2.0 - gone).ceil() as u64).max(1);
    assert!(
        (least..=2).contains(&retry_after),
        "Retry-After {retry_after}, {gone:.2}s of a 2s window gone"
    );
    let stats = h.emulator.stats();
    assert_eq!(stats.rate_limited_by["fixed_window"], 1);
    assert_eq!(stats.rate_limited_by["token_bucket"], 0);
    // Waiting it out: a new window admits 3 again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    for _ in 0..3 {
        assert_eq!(h.get("practices").await.status, StatusCode::OK);
    }
    assert_eq!(
        h.get("practices").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(h.emulator.stats().rate_limited_by["fixed_window"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_cap_refuses_requests_beyond_those_in_flight() {
    let h = start(EmulatorConfig {
        max_concurrent_requests: 2,
        // With seed 42 the first two latency draws are 1.68 and 1.76 × the
        // mean: both requests stay in flight for over 800 ms.
        seed: 42,
        latency_ms: 500,
        retry_after_secs: 3,
        ..EmulatorConfig::default()
    })
    .await;
    let started = Instant::now();
    let (first, second, refused) = tokio::join!(
        h.get("practices"),
        h.get("batch/p-0001/patients?date=2026-11-27&pageSize=10"),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut refused = Vec::new();
            for _ in 0..4 {
                refused.push(h.get("practices").await);
            }
            (refused, started.elapsed())
        }
    );
    let (refused, refused_by) = refused;
    assert!(
        refused_by < Duration::from_millis(800),
        "refused at once, not after the latency: {refused_by:?}"
    );
    for reply in &refused {
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.headers["retry-after"], "3");
        assert_eq!(reply.json()["error"], "TooManyRequests");
    }
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(second.status, StatusCode::OK);
    // The slots are free again.
    assert_eq!(h.get("practices").await.status, StatusCode::OK);
    let stats = h.emulator.stats();
    assert_eq!(stats.rate_limited_by["concurrency"], 4);
    assert_eq!(stats.rate_limited, 4);
    assert_eq!(stats.by_status["200"], 3 + 1, "and the token");
}
