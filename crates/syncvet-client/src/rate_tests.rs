//! Governor tests on tokio's paused clock: pauses, slow start, AIMD steps,
//! fairness, and convergence against a simulated token-bucket server.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn config(rate: f64, burst: u32) -> RateConfig {
    RateConfig {
        requests_per_sec: rate,
        burst,
        ..RateConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn paces_at_the_configured_rate() {
    // Fixed rate: slow start would raise it after the first second.
    let governor = RateGovernor::new(&RateConfig {
        adaptive: false,
        ..config(10.0, 1)
    });
    let start = Instant::now();
    for _ in 0..21 {
        governor.acquire("p").await.unwrap();
    }
    // 21 permits at 10/s with a burst of 1: the last one at 2 s.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1990) && elapsed < Duration::from_millis(2100),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_everyone_for_at_least_retry_after() {
    let governor = Arc::new(RateGovernor::new(&config(100.0, 10)));
    let (permit, _) = governor.acquire("a").await.unwrap();
    let paused_at = Instant::now();
    let pause = governor.on_rate_limited(permit, Some(Duration::from_secs(7)));
    assert!(pause >= Duration::from_secs(7));
    let mut workers = Vec::new();
    for key in ["a", "b", "c"] {
        let governor = governor.clone();
        workers.push(tokio::spawn(async move {
            governor.acquire(key).await.unwrap();
            Instant::now()
        }));
    }
    for worker in workers {
        let granted_at = worker.await.unwrap();
        assert!(
            granted_at - paused_at >= Duration::from_secs(7),
            "granted during the pause"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_zero_is_a_minimum_pause_not_a_hot_loop() {
    let governor = RateGovernor::new(&config(1000.0, 1000));
    let start = Instant::now();
    let mut sent = 0;
    // A server answering every request with 429 and Retry-After: 0 for 10 s.
    while start.elapsed() < Duration::from_secs(10) {
        let (permit, _) = governor.acquire("p").await.unwrap();
        sent += 1;
        governor.on_rate_limited(permit, Some(Duration::ZERO));
    }
    // One request per min_pause (1 s + margin), not thousands.
    assert!(sent <= 11, "sent {sent} requests in 10 s of 429s");
    // No date in the past or 0 shortens the pause below the minimum.
    let (permit, _) = governor.acquire("p").await.unwrap();
    assert_eq!(
        governor.on_rate_limited(permit, None),
        Duration::from_millis(1050)
    );
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_is_never_capped() {
    let governor = RateGovernor::new(&config(10.0, 1));
    let (permit, _) = governor.acquire("p").await.unwrap();
    let start = Instant::now();
    governor.on_rate_limited(permit, Some(Duration::from_secs(3600)));
    governor.acquire("p").await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(3600));
}

#[tokio::test(start_paused = true)]
async fn rate_drops_once_per_step_and_recovers_after_quiet_periods() {
    let mut cfg = config(40.0, 1);
    cfg.decrease_factor = 0.5;
    cfg.increase_rps = 2.0;
    cfg.quiet_period_secs = 1.0;
    let governor = RateGovernor::new(&cfg);
    let (first, _) = governor.acquire("p").await.unwrap();
    let (second, _) = governor.acquire("p").await.unwrap();
    governor.on_rate_limited(first, Some(Duration::from_secs(1)));
    // The second request was sent at the old rate too: no second cut.
    governor.on_rate_limited(second, Some(Duration::from_secs(1)));
    assert_eq!(governor.current_rate(), 20.0);
    let (third, _) = governor.acquire("p").await.unwrap();
    governor.on_rate_limited(third, Some(Duration::from_secs(1)));
    assert_eq!(governor.current_rate(), 10.0);

    // Idle time is not a quiet period: the rate only rises while it is the bottleneck.
    tokio::time::sleep(Duration::from_secs(30)).await;
    governor.acquire("p").await.unwrap();
    assert_eq!(governor.current_rate(), 10.0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(5500) {
        governor.acquire("p").await.unwrap();
    }
    let rate = governor.current_rate();
    assert!(
        (18.0..=20.0).contains(&rate),
        "rate {rate} after 5.5 busy seconds"
    );
}

#[tokio::test(start_paused = true)]
async fn a_huge_practice_does_not_starve_a_small_one() {
    let governor = Arc::new(RateGovernor::new(&config(10.0, 1)));
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (governor, order_tx) = (governor.clone(), order_tx.clone());
        tasks.push(tokio::spawn(async move {
            governor.acquire("huge").await.unwrap();
            let _ = order_tx.send("huge");
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..5 {
        let (governor, order_tx) = (governor.clone(), order_tx.clone());
        tasks.push(tokio::spawn(async move {
            governor.acquire("small").await.unwrap();
            let _ = order_tx.send("small");
        }));
    }
    drop(order_tx);
    for task in tasks {
        task.await.unwrap();
    }
    let mut order = Vec::new();
    while let Some(key) = order_rx.recv().await {
        order.push(key);
    }
    let last_small = order.iter().rposition(|k| *k == "small").unwrap();
    // ~10 "huge" went before "small" arrived; then they alternate.
    assert!(
        last_small < 25,
        "small finished at position {last_small} of {}",
        order.len()
    );
}

/// A token-bucket server like the emulator's hidden limit.
struct BucketServer {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
    retry_after: Duration,
    not_before: Option<Instant>,
    ok: u64,
    limited: u64,
    early: u64,
}

impl BucketServer {
    /// A full bucket of `limit` tokens refilled at `limit` per second,
    /// answering 429s with Retry-After: 1, like the emulator's default.
    fn new(limit: f64) -> Self {
        BucketServer {
            rate: limit,
            capacity: limit,
            tokens: limit,
            last: Instant::now(),
            retry_after: Duration::from_secs(1),
            not_before: None,
            ok: 0,
            limited: 0,
            early: 0,
        }
    }

    fn answer(&mut self) -> bool {
        let now = Instant::now();
        if self.not_before.is_some_and(|t| now < t) {
            self.early += 1;
        }
        self.tokens =
            (self.tokens + (now - self.last).as_secs_f64() * self.rate).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.ok += 1;
            true
        } else {
            self.limited += 1;
            self.not_before = Some(now + self.retry_after);
            false
        }
    }
}

#[tokio::test(start_paused = true)]
async fn converges_on_a_hidden_limit_started_five_times_too_fast() {
    let limit = 40.0;
    let governor = Arc::new(RateGovernor::new(&config(5.0 * limit, 20)));
    let server = Arc::new(Mutex::new(BucketServer::new(limit)));
    let start = Instant::now();
    let run_for = Duration::from_secs(90);
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (governor, server) = (governor.clone(), server.clone());
        workers.push(tokio::spawn(async move {
            while start.elapsed() < run_for {
                let (permit, _) = governor.acquire(&format!("p{worker}")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
                let ok = server.lock().unwrap().answer();
                tokio::time::sleep(Duration::from_millis(2)).await;
                if !ok {
                    governor.on_rate_limited(permit, Some(Duration::from_secs(1)));
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let server = server.lock().unwrap();
    let total = server.ok + server.limited;
    let limited_share = server.limited as f64 / total as f64;
    let achieved = server.ok as f64 / run_for.as_secs_f64();
    eprintln!(
        "simulated: {total} requests, {} 429 ({:.2}%), {} early, {achieved:.1} rps ok ({:.0}% of {limit}), final rate {:.1}",
        server.limited,
        server.limited as f64 / total as f64 * 100.0,
        server.early,
        achieved / limit * 100.0,
        governor.current_rate()
    );
    assert!(
        limited_share <= 0.02,
        "{:.2}% of requests were 429",
        limited_share * 100.0
    );
    assert!(achieved >= 0.85 * limit, "achieved {achieved:.1} rps");
}

#[tokio::test(start_paused = true)]
async fn slow_start_finds_a_50_rps_limit_from_10_within_seconds() {
    let limit = 50.0;
    let governor = Arc::new(RateGovernor::new(&RateConfig::default()));
    let server = Arc::new(Mutex::new(BucketServer::new(limit)));
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..16 {
        let (governor, server) = (governor.clone(), server.clone());
        workers.push(tokio::spawn(async move {
            let mut reached_limit = None;
            while start.elapsed() < Duration::from_secs(20) {
                let (permit, _) = governor.acquire(&format!("p{worker}")).await.unwrap();
                if reached_limit.is_none() && governor.current_rate() >= limit {
                    reached_limit = Some(start.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                let ok = server.lock().unwrap().answer();
                if !ok {
                    governor.on_rate_limited(permit, Some(Duration::from_secs(1)));
                }
            }
            reached_limit
        }));
    }
    let mut reached = Vec::new();
    for worker in workers {
        reached.extend(worker.await.unwrap());
    }
    let reached = reached
        .into_iter()
        .min()
        .expect("the rate reached the limit");
    // 10 -> 15 -> 22.5 -> 33.75 -> 50.6 after four 1 s periods at the limit.
    assert!(
        reached <= Duration::from_secs(5),
        "50 rps after {reached:?}"
    );
    let server = server.lock().unwrap();
    let total = server.ok + server.limited;
    assert!(
        server.limited as f64 <= 0.02 * total as f64,
        "{} of {total} answered 429",
        server.limited
    );
    assert_eq!(server.early, 0);
}

#[tokio::test(start_paused = true)]
async fn after_the_first_429_the_rate_grows_by_a_fraction_not_a_factor() {
    let governor = RateGovernor::new(&config(10.0, 1));
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_millis(2500) {
        last = Some(governor.acquire("p").await.unwrap().0);
    }
    // Two slow-start periods at the limit: 10 x 1.5 x 1.5.
    assert_eq!(governor.current_rate(), 22.5);
    governor.on_rate_limited(last.unwrap(), Some(Duration::from_secs(1)));
    let cut = 22.5 * 0.85;
    assert_eq!(governor.current_rate(), cut);
    let busy = Instant::now();
    while busy.elapsed() < Duration::from_millis(7500) {
        governor.acquire("p").await.unwrap();
    }
    // The pause (1.05 s), then two 3 s quiet periods at the limit, each
    // adding max(5% of the rate, 1 rps): no more multiplication.
    let once = cut + 1.0;
    let twice = once + once * 0.05;
    assert!(
        (governor.current_rate() - twice).abs() < 1e-9,
        "rate {} after two quiet periods",
        governor.current_rate()
    );
}

#[tokio::test(start_paused = true)]
async fn the_additive_increase_is_proportional_to_the_rate() {
    let cfg = RateConfig {
        slow_start_factor: 1.0,
        ..config(200.0, 1)
    };
    let governor = RateGovernor::new(&cfg);
    let (permit, _) = governor.acquire("p").await.unwrap();
    governor.on_rate_limited(permit, Some(Duration::from_secs(1)));
    assert_eq!(governor.current_rate(), 170.0);
    let busy = Instant::now();
    while busy.elapsed() < Duration::from_millis(4500) {
        governor.acquire("p").await.unwrap();
    }
    // One quiet period after the pause: +5% of 170.
    let rate = governor.current_rate();
    assert!((rate - 178.5).abs() < 1e-9, "rate {rate}");
}

/// Figures of one simulated fleet run.
#[derive(Debug)]
struct FleetRun {
    wall: Duration,
    ok: u64,
    limited: u64,
    early: u64,
}

/// `requests` batch requests from 32 workers against a hidden 50 rps
/// bucket, as `tests/bench/run.sh fleet` does against the emulator: a few
/// ms per answer, then ~30 ms of decoding and writing before the next one.
async fn simulate_fleet(cfg: RateConfig, requests: u64) -> FleetRun {
    let governor = Arc::new(RateGovernor::new(&cfg));
    let server = Arc::new(Mutex::new(BucketServer::new(50.0)));
    let left = Arc::new(std::sync::atomic::AtomicU64::new(requests));
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..32 {
        let (governor, server, left) = (governor.clone(), server.clone(), left.clone());
        workers.push(tokio::spawn(async move {
            let key = format!("p{worker}");
            while left
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                loop {
                    let (permit, _) = governor.acquire(&key).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    let ok = server.lock().unwrap().answer();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if ok {
                        break;
                    }
                    governor.on_rate_limited(permit, Some(Duration::from_secs(1)));
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let server = server.lock().unwrap();
    FleetRun {
        wall: start.elapsed(),
        ok: server.ok,
        limited: server.limited,
        early: server.early,
    }
}

use std::sync::atomic::Ordering::Relaxed;

#[tokio::test(start_paused = true)]
async fn a_fleet_run_from_the_defaults_is_within_10_percent_of_the_floor() {
    // 470 PIMS x 13 + 30 suppliers x 3 entities, one page each.
    let requests = 6200;
    let show = |name: &str, run: &FleetRun| {
        let floor = run.ok as f64 / 50.0;
        let wall = run.wall.as_secs_f64();
        eprintln!(
            "{name}: wall {wall:.1}s, floor {floor:.1}s (+{:.1}%), {} of {} answered 429 ({:.2}%)",
            (wall / floor - 1.0) * 100.0,
            run.limited,
            run.ok + run.limited,
            run.limited as f64 / (run.ok + run.limited) as f64 * 100.0
        );
        (
            wall / floor,
            run.limited as f64 / (run.ok + run.limited) as f64,
        )
    };
    let plain_aimd = RateConfig {
        slow_start_factor: 1.0,
        increase_fraction: 0.0,
        ..RateConfig::default()
    };
    show("additive only", &simulate_fleet(plain_aimd, requests).await);
    let run = simulate_fleet(RateConfig::default(), requests).await;
    let (over_floor, limited_share) = show("defaults", &run);
    assert!(over_floor <= 1.10, "{run:?}");
    assert!(limited_share <= 0.02, "{run:?}");
    assert_eq!(run.early, 0);
}
