//! The gateway's rate limits, pure of HTTP: a token bucket, a fixed or a
//! sliding window of N calls per T seconds, and a cap on the requests in
//! flight, each per client id and each a switch. Every limit that is set
//! applies; a request must pass all of them.
//!
//! Everything reads `tokio::time::Instant::now()`, so `tokio::time::pause()`
//! and `advance` drive it in tests (the client crate's paced-clock tests use
//! a [`Gateway`] directly, without HTTP).
//!
//! Checks run in the order concurrency, window, bucket, and nothing is
//! consumed until all of them have passed: a request refused by the window
//! takes no token, one refused by the bucket is not counted in the window,
//! and a refused request never holds a concurrency slot.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use syncvet_emulator::{Gateway, GatewayLimits};
//! use syncvet_emulator::limits::LimitKind;
//! let gateway = Gateway::new(GatewayLimits { max_concurrent_requests: 1, ..Default::default() });
//! let held = gateway.admit("demo-client").unwrap();
//! assert_eq!(gateway.admit("demo-client").unwrap_err().kind, LimitKind::Concurrency);
//! drop(held);
//! assert!(gateway.admit("demo-client").is_ok());
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::EmulatorConfig;

/// Which limits the gateway enforces; every one that is set applies (a
/// request must pass all).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayLimits {
    /// Token bucket refill per second; 0 = no bucket.
    pub rate_limit_rps: u32,
    /// Bucket size; 0 = same as `rate_limit_rps`.
    pub burst: u32,
    /// N calls per window; 0 = no window limit.
    pub window_calls: u32,
    /// T, the window length in seconds (a window of 0 s is no window).
    pub window_secs: u64,
    /// `false`: fixed windows `[k·T, (k+1)·T)` aligned to the gateway's
    /// start; `true`: a trailing window of T seconds.
    pub window_sliding: bool,
    /// Cap on requests in flight per client; 0 = none.
    pub max_concurrent_requests: u32,
    /// `Retry-After` (seconds, at least 1 is sent) for a bucket or
    /// concurrency 429.
    pub retry_after_secs: u64,
}

impl GatewayLimits {
    /// The limit switches of an emulator configuration.
    pub fn from_config(c: &EmulatorConfig) -> Self {
        GatewayLimits {
            rate_limit_rps: c.rate_limit_rps,
            burst: c.burst,
            window_calls: c.window_calls,
            window_secs: c.window_secs,
            window_sliding: c.window_sliding,
            max_concurrent_requests: c.max_concurrent_requests,
            retry_after_secs: c.retry_after_secs,
        }
    }

    fn window(&self) -> Option<(u32, Duration)> {
        (self.window_calls > 0 && self.window_secs > 0)
            .then(|| (self.window_calls, Duration::from_secs(self.window_secs)))
    }

    fn quota(&self) -> Option<Quota> {
        let rps = NonZeroU32::new(self.rate_limit_rps)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(rps);
        Some(Quota::per_second(rps).allow_burst(burst))
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// The token bucket was empty.
    TokenBucket,
    /// The fixed window already admitted its N calls.
    FixedWindow,
    /// The trailing window already holds N admitted calls.
    SlidingWindow,
    /// The client already has the most requests in flight.
    Concurrency,
}

impl LimitKind {
    /// Every kind, in the order of [`LimitKind::index`].
    pub const ALL: [LimitKind; 4] = [
        LimitKind::TokenBucket,
        LimitKind::FixedWindow,
        LimitKind::SlidingWindow,
        LimitKind::Concurrency,
    ];

    /// `"token_bucket"`, `"fixed_window"`, `"sliding_window"` or
    /// `"concurrency"` (the keys of the stats' `rate_limited_by`).
    pub fn name(&self) -> &'static str {
        match self {
            LimitKind::TokenBucket => "token_bucket",
            LimitKind::FixedWindow => "fixed_window",
            LimitKind::SlidingWindow => "sliding_window",
            LimitKind::Concurrency => "concurrency",
        }
    }

    /// Position in [`LimitKind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A refusal: which limit, and the `Retry-After` to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limited {
    /// The limit that refused the request.
    pub kind: LimitKind,
    /// Whole seconds, at least 1.
    pub retry_after: Duration,
}

/// Held while the request is served; dropping it frees the concurrency slot.
#[derive(Debug)]
pub struct InFlight {
    slot: Arc<AtomicU32>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `governor` clock reading tokio's (pausable) time.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

// The windows and the concurrency cap are written by hand: `governor` only
// implements GCRA (a token bucket), which neither counts calls in aligned
// windows (and so cannot say how long the window has left), nor remembers
// the instants of the calls a trailing window holds, nor has any notion of
// requests in flight.

/// What the gateway remembers of one client.
#[derive(Default)]
struct ClientState {
    /// Requests in flight (shared with their [`InFlight`] guards).
    in_flight: Arc<AtomicU32>,
    /// This client's token bucket (governor), when there is one.
    bucket: Option<Bucket>,
    /// Fixed window: (index k of the window, calls admitted in it).
    fixed: (u64, u32),
    /// Sliding window: instants of the admitted calls still in the trailing
    /// window, oldest first; at most N.
    sliding: VecDeque<Instant>,
}

/// The gateway: per-client-id limiter state.
pub struct Gateway {
    limits: GatewayLimits,
    quota: Option<Quota>,
    started: Instant,
    clients: Mutex<HashMap<String, ClientState>>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clients = self.clients.lock().map_or(0, |c| c.len());
        f.debug_struct("Gateway")
            .field("limits", &self.limits)
            .field("clients", &clients)
            .finish_non_exhaustive()
    }
}

/// A duration rounded up to whole seconds, at least 1.
fn whole_secs(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

impl Gateway {
    /// A gateway enforcing `limits`; fixed windows are aligned to now.
    pub fn new(limits: GatewayLimits) -> Gateway {
        Gateway {
            quota: limits.quota(),
            limits,
            started: Instant::now(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The limits enforced.
    pub fn limits(&self) -> &GatewayLimits {
        &self.limits
    }

    /// Admits a request of `client` now (`tokio::time::Instant::now()`, so
    /// `tokio::time::pause()` drives it), or says why not.
    pub fn admit(&self, client: &str) -> Result<InFlight, Limited> {
        let now = Instant::now();
        let limits = &self.limits;
        let fixed_retry_after = Duration::from_secs(limits.retry_after_secs.max(1));
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if !clients.contains_key(client) {
            let state = ClientState {
                bucket: self.quota.map(|quota| {
                    RateLimiter::direct_with_clock(
                        quota,
                        TokioClock {
                            origin: self.started,
                        },
                    )
                }),
                ..ClientState::default()
            };
            clients.insert(client.to_owned(), state);
        }
        let state = clients.get_mut(client).expect("inserted above");

        // 1. Concurrency: a slot is only taken once every check has passed.
        let cap = limits.max_concurrent_requests;
        if cap > 0 && state.in_flight.load(Ordering::Acquire) >= cap {
            return Err(Limited {
                kind: LimitKind::Concurrency,
                retry_after: fixed_retry_after,
            });
        }

        // 2. The window: checked here, counted only when admitted.
        let window = limits.window();
        let mut fixed_index = 0;
        if let Some((calls, length)) = window {
            if limits.window_sliding {
                while state
                    .sliding
                    .front()
                    .is_some_and(|&oldest| oldest + length <= now)
                {
                    state.sliding.pop_front();
                }
                if state.sliding.len() >= calls as usize {
                    let oldest = state.sliding[0];
                    return Err(Limited {
                        kind: LimitKind::SlidingWindow,
                        retry_after: whole_secs(oldest + length - now),
                    });
                }
            } else {
                let elapsed = now - self.started;
                fixed_index = elapsed.as_secs() / limits.window_secs;
                if state.fixed.0 != fixed_index {
                    state.fixed = (fixed_index, 0);
                }
                if state.fixed.1 >= calls {
                    let end = Duration::from_secs((fixed_index + 1) * limits.window_secs);
                    return Err(Limited {
                        kind: LimitKind::FixedWindow,
                        retry_after: whole_secs(end - elapsed),
                    });
                }
            }
        }

        // 3. The bucket, last, so that only an admitted request takes a token.
        if let Some(bucket) = &state.bucket
            && bucket.check().is_err()
        {
            return Err(Limited {
                kind: LimitKind::TokenBucket,
                retry_after: fixed_retry_after,
            });
        }

        if window.is_some() {
            if limits.window_sliding {
                state.sliding.push_back(now);
            } else {
                state.fixed = (fixed_index, state.fixed.1 + 1);
            }
        }
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(InFlight {
            slot: state.in_flight.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const CLIENT: &str = "demo-client";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Admits as many as it will right now (guards dropped at once).
    fn drain(gateway: &Gateway) -> (u32, Limited) {
        let mut admitted = 0;
        loop {
            match gateway.admit(CLIENT) {
                Ok(_) => admitted += 1,
                Err(limited) => return (admitted, limited),
            }
            assert!(admitted < 100_000, "never refused");
        }
    }

    #[test]
    fn the_guard_and_the_gateway_can_cross_threads() {
        fn send_static<T: Send + 'static>() {}
        fn send_sync<T: Send + Sync + fmt::Debug>() {}
        send_static::<InFlight>();
        send_sync::<Gateway>();
        assert_eq!(
            LimitKind::ALL.map(|k| k.name()),
            [
                "token_bucket",
                "fixed_window",
                "sliding_window",
                "concurrency"
            ]
        );
        for (i, kind) in LimitKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_limits_admit_everything() {
        let gateway = Gateway::new(GatewayLimits::default());
        let guards: Vec<_> = (0..1000).map(|_| gateway.admit(CLIENT).unwrap()).collect();
        assert_eq!(guards.len(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_admits_its_burst_at_once_then_the_refill_rate() {
        for burst in [1, 5, 50] {
            let rps = 10;
            let gateway = Gateway::new(GatewayLimits {
                rate_limit_rps: rps,
                burst,
                retry_after_secs: 3,
                ..GatewayLimits::default()
            });
            let (admitted, limited) = drain(&gateway);
            assert_eq!(admitted, burst, "burst {burst}");
            assert_eq!(
                limited,
                Limited {
                    kind: LimitKind::TokenBucket,
                    retry_after: secs(3)
                }
            );
            // Then one every 100 ms: 10 in each of the next three seconds,
            // never two at once.
            for second in 0..3 {
                let mut in_second = 0;
                for _ in 0..100 {
                    advance(ms(10)).await;
                    let (admitted, _) = drain(&gateway);
                    assert!(admitted <= 1, "burst {burst}: {admitted} at once");
                    in_second += admitted;
                }
                assert_eq!(in_second, rps, "burst {burst}, second {second}");
            }
            // Idle long enough, the whole burst is back (and no more).
            advance(secs(10)).await;
            assert_eq!(drain(&gateway).0, burst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_zero_means_the_rate_and_retry_after_is_at_least_one() {
        let gateway = Gateway::new(GatewayLimits {
            rate_limit_rps: 7,
            retry_after_secs: 0,
            ..GatewayLimits::default()
        });
        let (admitted, limited) = drain(&gateway);
        assert_eq!(admitted, 7);
        assert_eq!(limited.retry_after, secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_and_windows_are_per_client() {
        let gateway = Gateway::new(GatewayLimits {
            rate_limit_rps: 1,
            burst: 2,
            window_calls: 1,
            window_secs: 10,
            ..GatewayLimits::default()
        });
        assert!(gateway.admit("a").is_ok());
        assert!(gateway.admit("a").is_err());
        assert!(gateway.admit("b").is_ok());
        assert!(gateway.admit("b").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_window_admits_n_then_says_how_long_the_window_has_left() {
        let gateway = Gateway::new(GatewayLimits {
            window_calls: 3,
            window_secs: 10,
            retry_after_secs: 1,
            ..GatewayLimits::default()
        });
        advance(ms(2500)).await;
        let (admitted, limited) = drain(&gateway);
        assert_eq!(admitted, 3);
        assert_eq!(
            limited,
            Limited {
                kind: LimitKind::FixedWindow,
                retry_after: secs(8) // ceil(7.5)
            }
        );
        advance(ms(4000)).await; // 6.5 s: 3.5 s left
        assert_eq!(gateway.admit(CLIENT).unwrap_err().retry_after, secs(4));
        advance(ms(2500)).await; // 9.0 s: exactly 1 s left
        assert_eq!(gateway.admit(CLIENT).unwrap_err().retry_after, secs(1));
        advance(ms(999)).await; // 9.999 s: rounded up to 1
        assert_eq!(gateway.admit(CLIENT).unwrap_err().retry_after, secs(1));
        advance(ms(1)).await; // 10 s: a new window, and the refusals did not count
        assert_eq!(drain(&gateway).0, 3);
        // Windows are aligned to the start, not to the first call: 3 at
        // 19.9 s and 3 more at 20.0 s.
        advance(ms(9900)).await;
        let (admitted, limited) = drain(&gateway);
        assert_eq!((admitted, limited.retry_after), (0, secs(1)));
        advance(ms(100)).await;
        assert_eq!(drain(&gateway).0, 3);
        advance(ms(9900)).await;
        assert_eq!(drain(&gateway).0, 0);
        advance(ms(100)).await;
        assert_eq!(drain(&gateway).0, 3);
        advance(ms(100)).await;
        assert_eq!(drain(&gateway).0, 0);
        // A window with no call in it is skipped cleanly.
        advance(secs(35)).await; // 65.1 s
        let (admitted, limited) = drain(&gateway);
        assert_eq!((admitted, limited.retry_after), (3, secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sliding_window_admits_n_in_any_trailing_window() {
        let gateway = Gateway::new(GatewayLimits {
            window_calls: 3,
            window_secs: 10,
            window_sliding: true,
            ..GatewayLimits::default()
        });
        for _ in 0..3 {
            assert!(gateway.admit(CLIENT).is_ok()); // at 0, 4, 8 s
            advance(secs(4)).await;
        }
        // 12 s: the call of 0 s has left, those of 4 and 8 s remain.
        assert!(gateway.admit(CLIENT).is_ok());
        let refused = gateway.admit(CLIENT).unwrap_err();
        assert_eq!(
            refused,
            Limited {
                kind: LimitKind::SlidingWindow,
                retry_after: secs(2) // the call of 4 s leaves at 14 s
            }
        );
        advance(ms(1500)).await; // 13.5 s
        assert_eq!(gateway.admit(CLIENT).unwrap_err().retry_after, secs(1));
        advance(ms(500)).await; // 14 s: it has left
        assert!(gateway.admit(CLIENT).is_ok());
        // 14 s holds calls of 8, 12, 14 s: the next slot is at 18 s.
        assert_eq!(gateway.admit(CLIENT).unwrap_err().retry_after, secs(4));
        advance(ms(3001)).await; // 17.001 s: 0.999 s left, rounded up
        assert_eq!(gateway.admit(CLIENT).unwrap_err().retry_after, secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sliding_window_never_holds_more_than_n_and_says_when_one_leaves() {
        let (calls, length) = (5u32, secs(3));
        let gateway = Gateway::new(GatewayLimits {
            window_calls: calls,
            window_secs: 3,
            window_sliding: true,
            ..GatewayLimits::default()
        });
        let origin = Instant::now();
        let mut admitted: Vec<Instant> = Vec::new();
        let mut refused = 0;
        let mut lcg = 0x2545_f491_u64;
        for _ in 0..3000 {
            lcg = lcg.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // Bursts and gaps: steps of 0..400 ms, a zero step a third of the time.
            let step = if lcg >> 62 == 0 { 0 } else { (lcg >> 33) % 400 };
            advance(ms(step)).await;
            let now = Instant::now();
            let in_window: Vec<Instant> = admitted
                .iter()
                .copied()
                .filter(|&t| t + length > now)
                .collect();
            match gateway.admit(CLIENT) {
                Ok(_) => {
                    assert!(in_window.len() < calls as usize, "admitted over N");
                    admitted.push(now);
                }
                Err(limited) => {
                    refused += 1;
                    assert_eq!(limited.kind, LimitKind::SlidingWindow);
                    assert_eq!(in_window.len(), calls as usize, "refused below N");
                    assert_eq!(limited.retry_after, whole_secs(in_window[0] + length - now));
                }
            }
        }
        // Any trailing window, not only those ending at a call.
        for (i, &start) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .filter(|&&t| t < start + length)
                .count();
            assert!(
                within <= calls as usize,
                "{within} calls from {:?}",
                start - origin
            );
        }
        assert!(refused > 100 && admitted.len() > 100, "{refused} refused");
    }

    #[tokio::test(start_paused = true)]
    async fn sliding_refuses_the_double_burst_a_fixed_window_allows_at_its_edge() {
        let limits = GatewayLimits {
            window_calls: 4,
            window_secs: 10,
            ..GatewayLimits::default()
        };
        let fixed = Gateway::new(limits.clone());
        let sliding = Gateway::new(GatewayLimits {
            window_sliding: true,
            ..limits
        });
        advance(ms(9900)).await;
        assert_eq!(drain(&fixed).0, 4);
        assert_eq!(drain(&sliding).0, 4);
        advance(ms(200)).await;
        assert_eq!(drain(&fixed).0, 4, "a new fixed window");
        let (admitted, limited) = drain(&sliding);
        assert_eq!((admitted, limited.retry_after), (0, secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_cap_frees_a_slot_when_a_guard_drops() {
        let gateway = Gateway::new(GatewayLimits {
            max_concurrent_requests: 2,
            retry_after_secs: 2,
            ..GatewayLimits::default()
        });
        let first = gateway.admit(CLIENT).unwrap();
        let second = gateway.admit(CLIENT).unwrap();
        for _ in 0..5 {
            assert_eq!(
                gateway.admit(CLIENT).unwrap_err(),
                Limited {
                    kind: LimitKind::Concurrency,
                    retry_after: secs(2)
                }
            );
        }
        assert!(gateway.admit("other-client").is_ok(), "per client");
        drop(first);
        let third = gateway.admit(CLIENT).unwrap();
        assert!(gateway.admit(CLIENT).is_err());
        drop((second, third));
        let _a = gateway.admit(CLIENT).unwrap();
        let _b = gateway.admit(CLIENT).unwrap();
        assert!(gateway.admit(CLIENT).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_moved_to_another_task_frees_its_slot_there() {
        let gateway = Arc::new(Gateway::new(GatewayLimits {
            max_concurrent_requests: 1,
            ..GatewayLimits::default()
        }));
        let guard = gateway.admit(CLIENT).unwrap();
        let task = tokio::spawn(async move {
            tokio::time::sleep(secs(1)).await;
            drop(guard);
        });
        assert!(gateway.admit(CLIENT).is_err());
        task.await.unwrap();
        assert!(gateway.admit(CLIENT).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_concurrency_window_bucket_and_refusals_consume_nothing() {
        // Concurrency refusals take no token and count no window call.
        let gateway = Gateway::new(GatewayLimits {
            max_concurrent_requests: 1,
            rate_limit_rps: 1,
            burst: 2,
            window_calls: 2,
            window_secs: 100,
            retry_after_secs: 1,
            ..GatewayLimits::default()
        });
        let held = gateway.admit(CLIENT).unwrap();
        for _ in 0..20 {
            assert_eq!(
                gateway.admit(CLIENT).unwrap_err().kind,
                LimitKind::Concurrency
            );
        }
        drop(held);
        drop(gateway.admit(CLIENT).unwrap()); // the second token, the second call
        // Window and bucket both exhausted: the window is named (checked first).
        let refused = gateway.admit(CLIENT).unwrap_err();
        assert_eq!(
            (refused.kind, refused.retry_after),
            (LimitKind::FixedWindow, secs(100))
        );

        // Bucket refusals are not counted in the window, and hold no slot.
        let gateway = Gateway::new(GatewayLimits {
            max_concurrent_requests: 1,
            rate_limit_rps: 1,
            burst: 1,
            window_calls: 3,
            window_secs: 100,
            window_sliding: true,
            retry_after_secs: 1,
        });
        drop(gateway.admit(CLIENT).unwrap());
        for _ in 0..20 {
            assert_eq!(
                gateway.admit(CLIENT).unwrap_err().kind,
                LimitKind::TokenBucket
            );
        }
        advance(secs(1)).await;
        let held = gateway
            .admit(CLIENT)
            .expect("no slot leaked, no call counted");
        // With the slot held, the next is refused for concurrency first;
        // freed, the bucket is empty.
        assert_eq!(
            gateway.admit(CLIENT).unwrap_err().kind,
            LimitKind::Concurrency
        );
        drop(held);
        assert_eq!(
            gateway.admit(CLIENT).unwrap_err().kind,
            LimitKind::TokenBucket
        );

        // Window refusals take no token.
        let gateway = Gateway::new(GatewayLimits {
            rate_limit_rps: 1,
            burst: 4,
            window_calls: 2,
            window_secs: 1,
            ..GatewayLimits::default()
        });
        assert_eq!(drain(&gateway).0, 2); // 2 tokens left
        for _ in 0..20 {
            assert_eq!(
                gateway.admit(CLIENT).unwrap_err().kind,
                LimitKind::FixedWindow
            );
        }
        advance(secs(1)).await; // a new window, 3 tokens
        let (admitted, limited) = drain(&gateway);
        assert_eq!(
            (admitted, limited.kind),
            (2, LimitKind::FixedWindow),
            "the window refusals took no token"
        );
    }
}
