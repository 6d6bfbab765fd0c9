//! The hidden rate limit: 429 with Retry-After beyond it, counters that agree,
//! and early retries counted.

use reqwest::StatusCode;
use syncvet_emulator::EmulatorConfig;

use crate::common::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_limit_get_429_with_retry_after() {
    let h = start(EmulatorConfig {
        rate_limit_rps: 4,
        burst: 4,
        retry_after_secs: 1,
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
async fn a_zero_retry_after_is_sent_as_zero_and_never_early() {
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
    assert_eq!(limited.headers["retry-after"], "0");
    let _ = h.get("practices").await;
    assert_eq!(h.emulator.stats().early_retries, 0);
}
