//! The governor finds and holds an unpublished limit. One long test (~75 s).

use std::time::{Duration, Instant};

use syncvet_emulator::EmulatorConfig;

use crate::support::{client, date, emulator, status_count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_on_a_hidden_limit_from_five_times_too_fast() {
    let limit = 40.0;
    let emulator = emulator(EmulatorConfig {
        rate_limit_rps: limit as u32,
        retry_after_secs: 1,
        pims_sources: 12,
        rows_per_day: 400,
        ..EmulatorConfig::default()
    })
    .await;
    let client = client(&emulator, |c| {
        c.page_size = 5;
        c.rate.requests_per_sec = 5.0 * limit;
        c.rate.burst = 20;
        c.rate.adaptive = true;
    });
    let run_for = Duration::from_secs(75);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..8u32 {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut day = 0;
            'run: loop {
                let practice = format!("p-{:04}", (worker + day) % 12 + 1);
                let mut pages = client.batch(
                    &practice,
                    "patients",
                    date() - chrono::Days::new(day as u64),
                );
                day += 1;
                while let Some(event) = pages.next().await {
                    event.unwrap();
                    if started.elapsed() >= run_for {
                        break 'run;
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = emulator.stats();
    let (ok, limited) = (
        status_count(&emulator, "200"),
        status_count(&emulator, "429"),
    );
    let limited_share = limited as f64 / stats.requests as f64;
    let achieved = ok as f64 / elapsed;
    eprintln!(
        "convergence: {} requests in {elapsed:.1}s, {limited} answered 429 ({:.2}%), {ok} answered 200 = {achieved:.1} rps ({:.1}% of the {limit} rps limit), early retries {}, final client rate {:.1} rps",
        stats.requests,
        limited_share * 100.0,
        achieved / limit * 100.0,
        stats.early_retries,
        client.metrics().current_rate
    );
    assert!(stats.requests >= 2000, "a run of a few thousand requests");
    assert!(
        limited_share <= 0.02,
        "{:.2}% of requests were 429",
        limited_share * 100.0
    );
    assert!(
        achieved >= 0.85 * limit,
        "achieved {achieved:.1} rps of {limit}"
    );
    assert_eq!(stats.early_retries, 0);
}
