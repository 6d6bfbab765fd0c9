//! Behaviour against the emulator, over real HTTP.

use std::time::{Duration, Instant};

use syncvet_client::{ClientError, PageEvent};
use syncvet_emulator::{EmulatorConfig, record_count};

use crate::support::{client, date, emulator, fetch_all, status_count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_batches_exactly_once_with_faults_and_short_tokens() {
    let config = EmulatorConfig {
        pims_sources: 4,
        rows_per_day: 3000,
        spread: 4.0,
        error_rate_503: 0.05,
        drop_rate: 0.02,
        truncate_rate: 0.01,
        token_ttl_secs: 3,
        ..EmulatorConfig::default()
    };
    let emulator = emulator(config.clone()).await;
    // Paced so that the run outlives several tokens.
    let client = client(&emulator, |c| {
        c.page_size = 50;
        c.rate.requests_per_sec = 40.0;
        c.rate.burst = 5;
        c.rate.adaptive = false;
    });
    let started = Instant::now();
    let practices = client.practices().await.expect("practice list");
    let pims: Vec<_> = practices
        .iter()
        .filter(|p| p.data_source_type == "PIMS")
        .collect();
    assert_eq!(pims.len(), 4);
    let mut jobs = Vec::new();
    for practice in &pims {
        let (client, id) = (client.clone(), practice.id.clone());
        jobs.push(tokio::spawn(async move {
            let fetched = fetch_all(&client, &id, "patients", date()).await;
            (id, fetched)
        }));
    }
    let mut records = 0;
    for job in jobs {
        let (id, fetched) = job.await.unwrap();
        let fetched = fetched.unwrap_or_else(|e| panic!("{id}: {e}"));
        let expected = record_count(&config, &id, "patients", date());
        assert!(expected > 0);
        assert_eq!(fetched.total_count, Some(expected), "{id}: totalCount");
        assert_eq!(fetched.records, expected, "{id}: records received");
        records += fetched.records;
    }
    let stats = emulator.stats();
    let faults: u64 = stats.faults.values().sum();
    eprintln!(
        "{records} records in {:.1}s, faults {:?}, tokens issued {}, by status {:?}, client {:?}",
        started.elapsed().as_secs_f64(),
        stats.faults,
        stats.tokens_issued,
        stats.by_status,
        client.metrics()
    );
    assert!(faults >= 5, "faults were injected: {:?}", stats.faults);
    assert!(
        stats.tokens_issued >= 2,
        "the token was refreshed during the run"
    );
    assert!(
        client.metrics().retries >= faults.min(5),
        "faults were retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_before_retry_after_and_retry_after_zero_is_no_burst() {
    for retry_after_secs in [2, 0] {
        let emulator = emulator(EmulatorConfig {
            rate_limit_rps: 10,
            retry_after_secs,
            rows_per_day: 2000,
            ..EmulatorConfig::default()
        })
        .await;
        // Non-adaptive and 5x too fast: only the pauses keep it polite.
        let client = client(&emulator, |c| {
            c.page_size = 10;
            c.rate.requests_per_sec = 50.0;
            c.rate.burst = 5;
            c.rate.adaptive = false;
        });
        let run_for = Duration::from_secs(5);
        let started = Instant::now();
        let mut workers = Vec::new();
        for worker in 0..4u32 {
            let client = client.clone();
            workers.push(tokio::spawn(async move {
                while started.elapsed() < run_for {
                    let mut pages = client.batch(
                        &format!("p-000{}", worker % 3 + 1),
                        "patients",
                        crate::support::date(),
                    );
                    while let Some(event) = pages.next().await {
                        event.unwrap();
                        if started.elapsed() >= run_for {
                            break;
                        }
                    }
                }
            }));
        }
        for worker in workers {
            worker.await.unwrap();
        }
        let stats = emulator.stats();
        let limited = status_count(&emulator, "429");
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "Retry-After {retry_after_secs}: {} requests, {limited} 429, {} early in {elapsed:.1}s",
            stats.requests, stats.early_retries
        );
        assert!(limited > 0, "the limit was hit");
        assert_eq!(
            stats.early_retries, 0,
            "a request went before Retry-After had passed"
        );
        assert_eq!(client.metrics().rate_limited, limited);
        // Each 429 pauses everyone >= max(Retry-After, 1 s): a handful per
        // pause (requests already in flight), never a hot loop.
        let pause = (retry_after_secs as f64).max(1.0);
        assert!(
            (limited as f64) <= 4.0 * (elapsed / pause + 1.0),
            "{limited} 429s in {elapsed:.1}s with Retry-After {retry_after_secs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_source_fails_alone() {
    let config = EmulatorConfig {
        forbidden_sources: vec!["p-0002".into()],
        ..EmulatorConfig::default()
    };
    let emulator = emulator(config.clone()).await;
    let client = client(&emulator, |_| {});
    let mut jobs = Vec::new();
    for id in ["p-0001", "p-0002", "p-0003"] {
        let client = client.clone();
        jobs.push(tokio::spawn(async move {
            (id, fetch_all(&client, id, "clients", date()).await)
        }));
    }
    for job in jobs {
        match job.await.unwrap() {
            ("p-0002", Err(ClientError::Forbidden { practice, .. })) => {
                assert_eq!(practice, "p-0002")
            }
            ("p-0002", other) => panic!("p-0002 should be forbidden: {other:?}"),
            (id, result) => {
                let fetched = result.unwrap_or_else(|e| panic!("{id}: {e}"));
                assert_eq!(
                    fetched.records,
                    record_count(&config, id, "clients", date())
                );
            }
        }
    }
    assert_eq!(status_count(&emulator, "403"), 1, "403 is not retried");
    assert!(
        !ClientError::Forbidden {
            practice: "x".into(),
            message: String::new()
        }
        .is_fatal_for_run()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_is_polled_until_ready_or_the_deadline() {
    let config = EmulatorConfig {
        not_ready_polls: 2,
        ..EmulatorConfig::default()
    };
    let emulator = emulator(config.clone()).await;
    let client = client(&emulator, |_| {});
    let started = Instant::now();
    let fetched = fetch_all(&client, "p-0001", "patients", date())
        .await
        .unwrap();
    assert_eq!(fetched.stats.not_ready_polls, 2);
    assert_eq!(
        fetched.records,
        record_count(&config, "p-0001", "patients", date())
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "polls are spaced, not hammered"
    );

    emulator
        .update(serde_json::json!({"not_ready_polls": 1000}))
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    let client = client.with_deadline(deadline);
    let err = fetch_all(&client, "p-0002", "patients", date())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::NotReady { practice, entity, .. } if practice == "p-0002" && entity == "patients"),
        "{err:?}"
    );
    assert!(tokio::time::Instant::now() <= deadline + Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_continuation_token_restarts_the_entity() {
    let config = EmulatorConfig {
        continuation_ttl_secs: 1,
        ..EmulatorConfig::default()
    };
    let emulator = emulator(config.clone()).await;
    let client = client(&emulator, |c| c.page_size = 20);
    let expected = record_count(&config, "p-0001", "patients", date());
    assert!(expected > 60, "several pages: {expected}");

    // A slow consumer once: the token it holds expires; pages start over.
    let mut stream = client.batch("p-0001", "patients", date());
    let mut events = Vec::new();
    let mut records = 0;
    let mut slept = false;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            PageEvent::Restarted => {
                events.push("restart".to_string());
                records = 0;
            }
            PageEvent::Page(page) => {
                events.push(page.number.to_string());
                records += serde_json::from_slice::<Vec<serde_json::Value>>(&page.items)
                    .unwrap()
                    .len() as u64;
                if page.number == 1 && !slept {
                    slept = true;
                    tokio::time::sleep(Duration::from_millis(2100)).await;
                }
            }
        }
    }
    assert_eq!(&events[..4], ["0", "1", "restart", "0"]);
    assert_eq!(records, expected);
    assert_eq!(stream.stats().restarts, 1);

    // A consumer that is always too slow gives up after max_restarts.
    let client = crate::support::client(&emulator, |c| {
        c.page_size = 20;
        c.max_restarts = 2;
    });
    let mut stream = client.batch("p-0001", "patients", date());
    let mut restarts = 0;
    let error = loop {
        match stream.next().await.expect("ends with an error") {
            Ok(PageEvent::Restarted) => restarts += 1,
            Ok(PageEvent::Page(_)) => tokio::time::sleep(Duration::from_millis(1100)).await,
            Err(e) => break e,
        }
    };
    assert_eq!(restarts, 2);
    assert!(
        matches!(error, ClientError::ContinuationExpired { restarts: 2 }),
        "{error:?}"
    );
    assert!(stream.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn practices_and_bad_requests() {
    let config = EmulatorConfig {
        pims_sources: 7,
        supplier_sources: 2,
        ..EmulatorConfig::default()
    };
    let emulator = emulator(config).await;
    let client = client(&emulator, |_| {});
    client.check_auth().await.unwrap();
    let practices = client.practices().await.unwrap();
    assert_eq!(practices.len(), 9);
    assert_eq!(
        practices
            .iter()
            .filter(|p| p.data_source_type == "Supplier")
            .count(),
        2
    );
    assert!(
        practices
            .iter()
            .all(|p| !p.id.is_empty() && !p.name.is_empty())
    );
    // A PIMS source does not serve supplier entities: 400, not retried.
    let err = fetch_all(&client, "p-0001", "supplier_invoices", date())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::BadRequest { .. }), "{err:?}");
    assert_eq!(status_count(&emulator, "400"), 1);
}
