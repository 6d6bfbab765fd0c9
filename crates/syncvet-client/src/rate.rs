//! The rate governor: one per `ApiClient`, shared by every clone and worker.
//!
//! Three layers:
//! - a `governor` GCRA limiter paces requests at the current rate and burst
//!   (it runs on tokio's clock, so `tokio::time::pause()` drives it in tests);
//! - a pause: a 429 stops every worker until its Retry-After has passed
//!   (never less; 0 or a past date means `min_pause_ms`, never a hot loop);
//! - slow start, then AIMD. The rate only rises after a period without a
//!   429 in which the limiter was the bottleneck (idle time proves
//!   nothing). Until the first 429 (slow start, as in TCP) each
//!   `slow_start_period_secs` multiplies it by `slow_start_factor`, so a
//!   start at 10 rps finds a limit of 50 in ~4 s instead of minutes of
//!   +1 steps. After it, a 429 cuts the rate by `decrease_factor` (once per
//!   rate step: the answers to requests already sent at the old rate do not
//!   cut it again), and every `quiet_period_secs` adds `increase_fraction`
//!   of the rate (at least `increase_rps`): proportional, so the limit is
//!   found again in a few periods after a cut whatever its scale. The
//!   limiter is rebuilt at each change.
//!
//! Fairness: requests wait in one queue per key (practice) and a single
//! dispatcher task hands out permits round-robin over the keys, so a
//! practice with thousands of pages queued delays another by one turn, not
//! by its whole backlog.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::RateConfig;

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

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// Permission to send one request, stamped with the rate step it was
/// granted under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Permit {
    step: u64,
}

/// The governor is gone (the client was dropped mid-request).
#[derive(Debug)]
pub(crate) struct GovernorClosed;

struct State {
    rate: f64,
    limiter: Limiter,
    /// Bumped on every decrease; a 429 for a permit of an older step is
    /// already accounted for.
    step: u64,
    paused_until: Option<Instant>,
    /// Start of the current quiet period (the end of the last pause or the
    /// last increase).
    quiet_since: Instant,
    /// The limiter held a request back since `quiet_since`: only then is
    /// the rate the bottleneck and worth raising.
    saturated: bool,
    /// No 429 yet: the rate grows multiplicatively.
    slow_start: bool,
}

struct Shared {
    config: RateConfig,
    clock: TokioClock,
    state: Mutex<State>,
}

struct Waiter {
    key: Arc<str>,
    grant: oneshot::Sender<Permit>,
}

/// Process-wide pacing and 429 handling.
pub(crate) struct RateGovernor {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Waiter>,
    /// Taken by the first `acquire`, which spawns the dispatcher on the
    /// runtime in use (construction needs no runtime).
    pending_dispatcher: Mutex<Option<mpsc::UnboundedReceiver<Waiter>>>,
}

impl RateGovernor {
    pub(crate) fn new(config: &RateConfig) -> Self {
        let clock = TokioClock {
            origin: Instant::now(),
        };
        let rate = config.requests_per_sec;
        let state = State {
            rate,
            limiter: build_limiter(rate, config.burst, &clock),
            step: 0,
            paused_until: None,
            quiet_since: Instant::now(),
            saturated: false,
            slow_start: config.adaptive && config.slow_start_factor > 1.0,
        };
        let (queue, receiver) = mpsc::unbounded_channel();
        RateGovernor {
            shared: Arc::new(Shared {
                config: config.clone(),
                clock,
                state: Mutex::new(state),
            }),
            queue,
            pending_dispatcher: Mutex::new(Some(receiver)),
        }
    }

    /// Waits for this key's turn and a free slot at the current rate, and
    /// for any 429 pause to end. Returns the permit and the time waited.
    pub(crate) async fn acquire(&self, key: &str) -> Result<(Permit, Duration), GovernorClosed> {
        let started = Instant::now();
        if let Some(receiver) = self.pending_dispatcher.lock().expect("poisoned").take() {
            tokio::spawn(dispatch(self.shared.clone(), receiver));
        }
        let key: Arc<str> = Arc::from(key);
        loop {
            let (grant, granted) = oneshot::channel();
            self.queue
                .send(Waiter {
                    key: key.clone(),
                    grant,
                })
                .map_err(|_| GovernorClosed)?;
            let permit = granted.await.map_err(|_| GovernorClosed)?;
            // A 429 may have landed between the grant and now: going now
            // would be an early retry, so wait and queue again.
            match self.paused_until() {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return Ok((permit, started.elapsed())),
            }
        }
    }

    /// Records a 429: pauses every worker for at least `retry_after` (or
    /// the configured minimum / default) and, if adaptive, slows down.
    /// Returns the pause applied.
    pub(crate) fn on_rate_limited(
        &self,
        permit: Permit,
        retry_after: Option<Duration>,
    ) -> Duration {
        let config = &self.shared.config;
        let asked = retry_after.unwrap_or(Duration::from_millis(config.default_pause_ms));
        let pause = asked.max(Duration::from_millis(config.min_pause_ms))
            + Duration::from_millis(config.pause_margin_ms);
        let until = Instant::now() + pause;
        let mut state = self.shared.state.lock().expect("poisoned");
        let paused_until = state.paused_until.map_or(until, |u| u.max(until));
        state.paused_until = Some(paused_until);
        state.quiet_since = paused_until;
        state.saturated = false;
        if state.slow_start {
            tracing::info!(rate_rps = state.rate, "first 429: slow start ends");
            state.slow_start = false;
        }
        if config.adaptive && permit.step == state.step {
            let rate = (state.rate * config.decrease_factor).max(config.min_requests_per_sec);
            tracing::info!(
                from_rps = state.rate,
                to_rps = rate,
                pause_ms = pause.as_millis() as u64,
                "rate limited (429): slowing down"
            );
            state.step += 1;
            state.rate = rate;
            state.limiter = build_limiter(rate, config.burst, &self.shared.clock);
        }
        pause
    }

    /// The end of the current 429 pause, if any.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.shared.state.lock().expect("poisoned").paused_until
    }

    /// The current target rate, requests per second.
    pub(crate) fn current_rate(&self) -> f64 {
        self.shared.state.lock().expect("poisoned").rate
    }
}

fn build_limiter(rate: f64, burst: u32, clock: &TokioClock) -> Limiter {
    // A burst bigger than one second of traffic at a cut rate would undo the cut.
    let burst = burst.min(rate.ceil() as u32).max(1);
    let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate))
        .expect("rate is positive and finite (validated)")
        .allow_burst(NonZeroU32::new(burst).expect("burst >= 1"));
    RateLimiter::direct_with_clock(quota, clock.clone())
}

impl Shared {
    /// Takes a slot now (`Ok`, stamped with the current rate step) or says
    /// how long the dispatcher must wait (pause or pacing).
    fn try_take_slot(&self) -> Result<Permit, Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("poisoned");
        if let Some(until) = state.paused_until {
            if until > now {
                return Err(until - now);
            }
            state.paused_until = None;
        }
        let config = &self.config;
        let period_secs = if state.slow_start {
            config.slow_start_period_secs
        } else {
            config.quiet_period_secs
        };
        if config.adaptive
            && state.saturated
            && state.rate < config.max_requests_per_sec
            && now.duration_since(state.quiet_since).as_secs_f64() >= period_secs
        {
            let raised = if state.slow_start {
                state.rate * config.slow_start_factor
            } else {
                state.rate + (state.rate * config.increase_fraction).max(config.increase_rps)
            };
            let rate = raised.min(config.max_requests_per_sec);
            tracing::debug!(
                from_rps = state.rate,
                to_rps = rate,
                slow_start = state.slow_start,
                "quiet period: speeding up"
            );
            state.rate = rate;
            state.limiter = build_limiter(rate, config.burst, &self.clock);
            // A fresh limiter starts with a full burst; in steady state that
            // burst would land on a server bucket that is already empty.
            while state.limiter.check().is_ok() {}
            state.quiet_since = now;
            state.saturated = false;
        }
        match state.limiter.check() {
            Ok(()) => Ok(Permit { step: state.step }),
            Err(not_until) => {
                if !state.saturated {
                    // The quiet period counts only time spent at the limit.
                    state.saturated = true;
                    state.quiet_since = state.quiet_since.max(now);
                }
                Err(not_until
                    .wait_time_from(self.clock.now())
                    .max(Duration::from_micros(100)))
            }
        }
    }
}

/// The single dispatcher: round-robin over keys, one permit per free slot.
async fn dispatch(shared: Arc<Shared>, mut incoming: mpsc::UnboundedReceiver<Waiter>) {
    let mut queues: Queues = HashMap::new();
    let mut turns: VecDeque<Arc<str>> = VecDeque::new();
    loop {
        while let Ok(waiter) = incoming.try_recv() {
            enqueue(waiter, &mut queues, &mut turns);
        }
        // Find the next live waiter (cancelled requests leave closed senders).
        let Some(key) = next_live(&mut queues, &mut turns) else {
            match incoming.recv().await {
                Some(waiter) => enqueue(waiter, &mut queues, &mut turns),
                None => return,
            }
            continue;
        };
        match shared.try_take_slot() {
            Err(wait) => tokio::time::sleep(wait).await,
            Ok(permit) => {
                turns.pop_front();
                let queue = queues.get_mut(&key).expect("key in turns has a queue");
                let grant = queue.pop_front().expect("live waiter");
                if queue.is_empty() {
                    queues.remove(&key);
                } else {
                    turns.push_back(key);
                }
                let _ = grant.send(permit);
            }
        }
    }
}

type Queues = HashMap<Arc<str>, VecDeque<oneshot::Sender<Permit>>>;

fn enqueue(waiter: Waiter, queues: &mut Queues, turns: &mut VecDeque<Arc<str>>) {
    let queue = queues.entry(waiter.key.clone()).or_default();
    if queue.is_empty() {
        turns.push_back(waiter.key);
    }
    queue.push_back(waiter.grant);
}

/// The key whose turn it is, after dropping waiters that gave up.
fn next_live(queues: &mut Queues, turns: &mut VecDeque<Arc<str>>) -> Option<Arc<str>> {
    while let Some(key) = turns.front().cloned() {
        let queue = queues.get_mut(&key).expect("key in turns has a queue");
        while queue.front().is_some_and(|grant| grant.is_closed()) {
            queue.pop_front();
        }
        if !queue.is_empty() {
            return Some(key);
        }
        queues.remove(&key);
        turns.pop_front();
    }
    None
}

#[cfg(test)]
#[path = "rate_tests.rs"]
mod tests;
