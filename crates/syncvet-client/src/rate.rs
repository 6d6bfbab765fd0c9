//! The rate governor: one per `ApiClient`, shared by every clone and worker.
//!
//! A gateway may enforce its limit as a token bucket of any size, a fixed
//! or sliding window of N calls per T seconds, or a cap on requests in
//! flight; none is published. The governor holds all of them with four
//! controls, each adapted from the 429s it gets:
//!
//! - **rate**: a `governor` GCRA limiter at the current rate (on tokio's
//!   clock, so `tokio::time::pause()` drives it in tests). Until the first
//!   429 the rate is the limit's, slow start multiplies it by
//!   `slow_start_factor` per `slow_start_period_secs` spent at the limit.
//!   A 429 that is the rate's doing cuts it to `decrease_factor` × rate;
//!   to half when it came before one Retry-After's worth of sending since
//!   the last pause (far over); and, when a long Retry-After (≥ 2 s) points
//!   at a window's end, to the calls admitted since the last pause over
//!   that span plus the Retry-After: the window's own rate, so the client
//!   spreads the next window instead of spending it at once. After a cut
//!   the rate climbs back on a cubic curve (as TCP CUBIC): fast while far
//!   below the rate that drew the 429, flat near it for `recovery_secs`
//!   (or the limit's own cycle, up to 4×), then probing above; a 429 below
//!   the last such rate sets the plateau a little under it (CUBIC's fast
//!   convergence). It only grows while the limiter holds requests back
//!   (idle time proves nothing).
//! - **burst**: requests let through at once after an idle spell. It starts
//!   at `burst`, halves on a 429 for a request let go from it (without
//!   touching the rate) and on every rate cut, and grows by one per quiet
//!   period once a burst came back fine, so a small server bucket is not
//!   overrun after each lull; a change or a 429 pause never refills it (a
//!   new limiter's credit is spent at its first grant).
//! - **pause**: a 429 stops every worker until its Retry-After has passed
//!   (never less; 0 or a past date means `min_pause_ms`, never a hot loop).
//! - **concurrency**: at most `max_in_flight` requests at once (0 = no
//!   cap). The client counts a request from before it reaches the server
//!   until after its answer is back, so under a gateway's cap of `c` it
//!   never draws a 429 with `c` or fewer in flight, and draws many above:
//!   429s from a level up that never came below a level with answers and
//!   no 429 cap it there, and are not the rate's doing. The cap grows by
//!   one per quiet period in which it held a request back, but to a level
//!   that drew a 429 only after the recovery time; the first 429 above the
//!   old cap undoes such a raise.
//!
//! Each 429 changes one control, once per step: answers to requests
//! already sent under the old settings do not cut again.
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
use tokio::sync::{Notify, mpsc, oneshot};
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

/// Permission to send one request, stamped with the step it was granted
/// under. Holding it counts as a request in flight; dropping it frees the
/// slot.
pub(crate) struct Permit {
    step: u64,
    /// Requests in flight when this one was granted, itself included.
    in_flight: u32,
    /// Granted from the limiter's burst credit, sooner than one period
    /// after the previous one.
    from_burst: bool,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("step", &self.step)
            .field("in_flight", &self.in_flight)
            .field("from_burst", &self.from_burst)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.state.lock().expect("poisoned").in_flight -= 1;
        self.shared.slot_freed.notify_one();
    }
}

/// The governor is gone (the client was dropped mid-request).
#[derive(Debug)]
pub(crate) struct GovernorClosed;

/// What the governor holds requests to, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GovernorSettings {
    /// Requests per second.
    pub rate: f64,
    /// Requests at once after an idle spell.
    pub burst: u32,
    /// Requests in flight at most (0 = no cap).
    pub max_in_flight: u32,
}

struct State {
    rate: f64,
    burst: u32,
    limiter: Limiter,
    /// Bumped on every cut; a 429 for a permit of an older step is
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
    /// The rate that tripped the last 429, and when it was cut: the cubic
    /// recovery is centred on them.
    tripped_rate: f64,
    cut_rate: f64,
    cut_at: Instant,
    /// How long the recovery to `tripped_rate` takes (the cubic's K).
    recovery_secs: f64,
    /// Requests granted since the last pause ended (or since the start),
    /// and when that span began: what the server admitted over it.
    granted_since_resume: u64,
    resumed_at: Instant,
    in_flight: u32,
    /// 0 = no cap.
    max_in_flight: u32,
    /// The concurrency that last drew a 429, and since when: not tried
    /// again before the recovery time.
    failed_in_flight: Option<(u32, Instant)>,
    /// Answers by requests in flight at grant, since the cap last changed.
    levels: InFlightLevels,
    /// The cap before it was last raised to (or past) a level that once
    /// drew a 429: a 429 above it undoes the raise.
    probed_from: Option<u32>,
    /// The burst before the last cut: not tried again before the recovery time.
    failed_burst: u32,
    /// A request let go from the burst credit came back fine since the
    /// burst last grew: only then may it grow again (a burst never used
    /// proves nothing).
    burst_proven: bool,
    /// The concurrency cap held a request back since `quiet_since`.
    concurrency_bound: bool,
    /// When the last permit was granted.
    last_grant: Option<Instant>,
    /// The rate or burst changed, or a pause ended: the limiter is rebuilt
    /// at the next grant (see `take_paced_slot`).
    rebuild: bool,
}

impl State {
    /// A slot at the current rate, from the limiter or, after a change,
    /// from a fresh one built at this very grant with all its credit spent:
    /// a new limiter starts full, and that burst would land on a server
    /// bucket that is already empty (or has only just refilled after a
    /// pause). Spent at the grant, its next slot is exactly one period
    /// later, and the first one waits one period after the last grant, so
    /// a change costs no slot and releases no burst.
    fn take_paced_slot(&mut self, clock: &TokioClock, now: Instant) -> Result<(), Duration> {
        if !self.rebuild {
            return self.limiter.check().map_err(|not_until| {
                not_until
                    .wait_time_from(clock.now())
                    .max(Duration::from_micros(100))
            });
        }
        let period = Duration::from_secs_f64(1.0 / self.rate);
        if let Some(at) = self.last_grant.map(|t| t + period).filter(|at| *at > now) {
            return Err(at - now);
        }
        self.limiter = build_limiter(self.rate, self.burst, clock);
        while self.limiter.check().is_ok() {}
        self.rebuild = false;
        Ok(())
    }
}

struct Shared {
    config: RateConfig,
    clock: TokioClock,
    state: Mutex<State>,
    slot_freed: Notify,
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
        let now = Instant::now();
        let rate = config.requests_per_sec;
        let state = State {
            rate,
            burst: config.burst,
            limiter: build_limiter(rate, config.burst, &clock),
            step: 0,
            paused_until: None,
            quiet_since: now,
            saturated: false,
            slow_start: config.adaptive && config.slow_start_factor > 1.0,
            tripped_rate: rate,
            cut_rate: rate,
            cut_at: now,
            recovery_secs: config.recovery_secs,
            granted_since_resume: 0,
            resumed_at: now,
            in_flight: 0,
            max_in_flight: config.max_in_flight,
            failed_in_flight: None,
            levels: InFlightLevels::default(),
            probed_from: None,
            failed_burst: u32::MAX,
            burst_proven: false,
            concurrency_bound: false,
            last_grant: None,
            rebuild: false,
        };
        let (queue, receiver) = mpsc::unbounded_channel();
        RateGovernor {
            shared: Arc::new(Shared {
                config: config.clone(),
                clock,
                state: Mutex::new(state),
                slot_freed: Notify::new(),
            }),
            queue,
            pending_dispatcher: Mutex::new(Some(receiver)),
        }
    }

    /// Waits for this key's turn, a free slot at the current rate and
    /// concurrency, and for any 429 pause to end. Returns the permit and
    /// the time waited.
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
                Some(until) if until > Instant::now() => {
                    drop(permit);
                    tokio::time::sleep_until(until).await
                }
                _ => return Ok((permit, started.elapsed())),
            }
        }
    }

    /// Records a 429: pauses every worker for at least `retry_after` (or
    /// the configured minimum / default) and, if adaptive, cuts the rate,
    /// the burst and the concurrency. Returns the pause applied.
    pub(crate) fn on_rate_limited(
        &self,
        permit: &Permit,
        retry_after: Option<Duration>,
    ) -> Duration {
        let config = &self.shared.config;
        let asked = retry_after.unwrap_or(Duration::from_millis(config.default_pause_ms));
        let pause = asked.max(Duration::from_millis(config.min_pause_ms))
            + Duration::from_millis(config.pause_margin_ms);
        let now = Instant::now();
        let until = now + pause;
        let mut state = self.shared.state.lock().expect("poisoned");
        state.levels.answered(permit.in_flight, false);
        let paused_until = state.paused_until.map_or(until, |u| u.max(until));
        state.paused_until = Some(paused_until);
        state.quiet_since = paused_until;
        state.saturated = false;
        state.concurrency_bound = false;
        if config.adaptive && cut(&mut state, config, permit, asked, now, paused_until) {
            tracing::info!(
                to_rps = state.rate,
                burst = state.burst,
                max_in_flight = state.max_in_flight,
                pause_ms = pause.as_millis() as u64,
                "rate limited (429): slowing down"
            );
        }
        pause
    }

    /// Records an answer other than 429: that many requests in flight at
    /// once were let through.
    pub(crate) fn on_success(&self, permit: &Permit) {
        let mut state = self.shared.state.lock().expect("poisoned");
        state.levels.answered(permit.in_flight, true);
        state.burst_proven |= permit.from_burst;
    }

    /// The end of the current 429 pause, if any.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.shared.state.lock().expect("poisoned").paused_until
    }

    /// What requests are held to now.
    pub(crate) fn settings(&self) -> GovernorSettings {
        let state = self.shared.state.lock().expect("poisoned");
        GovernorSettings {
            rate: state.rate,
            burst: state.burst,
            max_in_flight: state.max_in_flight,
        }
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

/// Least requests since the last pause for their count to say what the
/// server admits.
const MIN_ADMITTED_SAMPLE: u64 = 10;

/// A Retry-After this long points at the end of a window, not at a
/// token bucket's next token.
const WINDOW_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Cuts the burst, the concurrency or the rate and the burst after a 429
/// (once per step): a 429 for a request let go from the burst credit is the
/// burst's doing; one for a request sent with more in flight than any
/// success came back from is the concurrency's (a gateway capping requests
/// in flight refuses exactly those above its cap); any other, the rate's.
fn cut(
    state: &mut State,
    config: &RateConfig,
    permit: &Permit,
    asked: Duration,
    now: Instant,
    paused_until: Instant,
) -> bool {
    // Answers to requests sent under older settings change nothing, but
    // may still show a cap (lowering it again is never a double cut).
    let current = permit.step == state.step;
    let recovery = |sending_for: Duration| {
        // As long as a cycle of the limit took (a window's length), within
        // bounds, so a slow limit is probed as rarely as it resets.
        (sending_for + asked)
            .as_secs_f64()
            .clamp(config.recovery_secs, 4.0 * config.recovery_secs)
    };
    let sending_for = now.duration_since(state.resumed_at);
    // A long wait after many calls points at a window's end, whatever let
    // the last call go: the window rule below must see it.
    let window_end =
        asked >= WINDOW_RETRY_AFTER && state.granted_since_resume >= MIN_ADMITTED_SAMPLE;
    // A raise of the cap to a level that once drew a 429, undone by a 429
    // above the old cap; or many 429s above a level that never drew one.
    let capped = if window_end {
        None
    } else {
        state
            .probed_from
            .filter(|&level| current && permit.in_flight > level)
            .or_else(|| state.levels.concurrency_cap(permit.in_flight))
    };
    if let Some(fine) = capped {
        if state.max_in_flight != 0 && fine >= state.max_in_flight {
            return false;
        }
        tracing::debug!(
            from = state.max_in_flight,
            to = fine,
            "429s above a concurrency that works: capping it"
        );
        state.step += 1;
        state.max_in_flight = fine;
        state.failed_in_flight = Some((permit.in_flight, now));
        state.probed_from = None;
        state.levels = InFlightLevels::default();
        return true;
    }
    if !current {
        return false;
    }
    state.step += 1;
    if permit.from_burst && !window_end {
        // The server took fewer at once than the limiter let go: the
        // burst's doing, not the rate's.
        state.failed_burst = state.burst;
        state.burst = (state.burst / 2).max(1);
        state.recovery_secs = recovery(sending_for);
        state.cut_at = paused_until;
        state.rebuild = true;
        return true;
    }
    if state.slow_start {
        tracing::info!(
            rate_rps = state.rate,
            "first 429 at this rate: slow start ends"
        );
        state.slow_start = false;
    }
    let from = state.rate;
    let granted = state.granted_since_resume;
    let (rate, tripped) = if window_end {
        // A window: it admitted what was sent since the last pause and
        // asks for a wait until it opens again, so the sustainable rate is
        // that many calls over both spans. Spread them: hold that rate.
        let window_rate = (granted - 1) as f64 / (sending_for + asked).as_secs_f64();
        let rate = (from * config.decrease_factor).min(window_rate);
        (rate, rate)
    } else if sending_for < asked {
        // Limited again before one Retry-After's worth of sending: far over.
        (from * 0.5, from)
    } else if from < state.tripped_rate {
        // Limited below where the last 429 came: the limit is lower, or
        // jitter trips it early. Return to a little under this rate
        // (CUBIC's fast convergence), so the next probe comes later.
        (
            from * config.decrease_factor,
            from * (1.0 + config.decrease_factor) / 2.0,
        )
    } else {
        (from * config.decrease_factor, from)
    };
    let rate = rate.max(config.min_requests_per_sec);
    state.tripped_rate = tripped.max(rate);
    state.cut_rate = rate;
    state.cut_at = paused_until;
    state.recovery_secs = recovery(sending_for);
    state.rate = rate;
    state.failed_burst = state.burst;
    state.burst = (state.burst / 2).max(1);
    state.rebuild = true;
    tracing::debug!(from_rps = from, to_rps = rate, "rate cut");
    true
}

/// Answers (let through or 429) by how many requests were in flight when
/// each was sent, to tell a cap on requests in flight from a rate limit.
/// Under a cap of `c`, the client, which counts a request from before it
/// reaches the server until after its answer is back, draws many 429s
/// above `c` and almost none at `c` or below; under a rate limit, 429s are
/// as likely at any level. Almost: a request granted with `c` or fewer in
/// flight can reach the server after requests granted later (a new
/// connection, a token fetch, a busy core) and find `c` there, so a level
/// counts as clean when a small share of its answers were 429s, not none.
#[derive(Debug, Default)]
struct InFlightLevels {
    /// Index `n - 1`: (let through, limited) at `n` in flight.
    counts: Vec<(u32, u32)>,
}

impl InFlightLevels {
    /// Levels above this are counted with it.
    const MAX_LEVEL: usize = 256;
    /// Answers a level needs before it counts as working.
    const MIN_SAMPLE: u32 = 5;
    /// Share of 429s from a level up that marks it as over a cap.
    const OVER_CAP_SHARE: f64 = 0.25;
    /// Share of 429s a clean level (and the levels below it, together) may
    /// have drawn from requests overtaken on their way.
    const STRAY_SHARE: f64 = 0.05;

    fn answered(&mut self, in_flight: u32, let_through: bool) {
        let level = (in_flight as usize).clamp(1, Self::MAX_LEVEL);
        if self.counts.len() < level {
            self.counts.resize(level, (0, 0));
        }
        let (ok, limited) = &mut self.counts[level - 1];
        *if let_through { ok } else { limited } += 1;
    }

    /// The cap that a 429 at `in_flight` points to, if it is a cap's doing:
    /// the highest level below it with enough answers, nearly all let
    /// through, as were those of every level below it, when at least a
    /// quarter of the answers from `in_flight` up were 429s.
    fn concurrency_cap(&self, in_flight: u32) -> Option<u32> {
        let level = (in_flight as usize).clamp(1, Self::MAX_LEVEL);
        let (ok, limited) = sum(&self.counts[level - 1..]);
        if f64::from(limited) < Self::OVER_CAP_SHARE * f64::from(ok + limited) {
            return None;
        }
        let nearly_clean = |(ok, limited): (u32, u32)| {
            f64::from(limited) <= Self::STRAY_SHARE * f64::from(ok + limited)
        };
        (1..level)
            .rev()
            .find(|&clean| {
                let at = self.counts[clean - 1];
                at.0 >= Self::MIN_SAMPLE
                    && nearly_clean(at)
                    && nearly_clean(sum(&self.counts[..clean]))
            })
            .map(|clean| clean as u32)
    }
}

/// (let through, limited) over `levels`.
fn sum(levels: &[(u32, u32)]) -> (u32, u32) {
    levels
        .iter()
        .fold((0, 0), |(a, b), (ok, limited)| (a + ok, b + limited))
}

/// Whether a setting may grow to `next` now: below the level that drew the
/// last 429 at once, to it or above only after the recovery time.
fn may_grow(next: u32, failed: u32, since: Instant, recovery_secs: f64, now: Instant) -> bool {
    next < failed || now.duration_since(since).as_secs_f64() >= recovery_secs
}

/// Why the dispatcher cannot hand out a permit now.
enum Wait {
    /// Pacing or a pause: try again after this long.
    For(Duration),
    /// Every slot of the concurrency cap is taken: wait for one to free.
    InFlight,
}

impl Shared {
    /// Takes a slot now (`Ok`, stamped with the current step) or says what
    /// the dispatcher must wait for.
    fn try_take_slot(self: &Arc<Self>) -> Result<Permit, Wait> {
        let now = Instant::now();
        let mut guard = self.state.lock().expect("poisoned");
        let state = &mut *guard;
        if let Some(until) = state.paused_until {
            if until > now {
                return Err(Wait::For(until - now));
            }
            // The pause let the limiter's credit build up: spending it at
            // once would land a burst on a server bucket that has only just
            // refilled, and trip it again.
            state.paused_until = None;
            state.rebuild = true;
            state.granted_since_resume = 0;
            state.resumed_at = now;
        }
        let config = &self.config;
        let quiet_for = now.duration_since(state.quiet_since).as_secs_f64();
        let period_secs = if state.slow_start {
            config.slow_start_period_secs
        } else {
            config.quiet_period_secs
        };
        if config.adaptive && quiet_for >= period_secs {
            if state.saturated && state.rate < config.max_requests_per_sec {
                let raised = if state.slow_start {
                    state.rate * config.slow_start_factor
                } else {
                    cubic_rate(state, config.decrease_factor, now).max(state.rate)
                };
                let rate = raised.min(config.max_requests_per_sec);
                tracing::debug!(
                    from_rps = state.rate,
                    to_rps = rate,
                    slow_start = state.slow_start,
                    "quiet period: speeding up"
                );
                state.rate = rate;
                let burst = (state.burst + 1).min(config.burst);
                if state.burst_proven
                    && may_grow(
                        burst,
                        state.failed_burst,
                        state.cut_at,
                        state.recovery_secs,
                        now,
                    )
                {
                    state.burst = burst;
                    state.burst_proven = false;
                }
                state.rebuild = true;
            }
            if state.concurrency_bound {
                let next = state.max_in_flight + 1;
                let allowed = state.failed_in_flight.is_none_or(|(failed, at)| {
                    may_grow(next, failed, at, state.recovery_secs, now)
                });
                if allowed {
                    tracing::debug!(
                        max_in_flight = next,
                        "quiet period: more requests in flight"
                    );
                    if state
                        .failed_in_flight
                        .is_some_and(|(failed, _)| next >= failed)
                    {
                        state.probed_from = Some(state.max_in_flight);
                    }
                    state.max_in_flight = next;
                    state.levels = InFlightLevels::default();
                }
            }
            state.quiet_since = now;
            state.saturated = false;
            state.concurrency_bound = false;
        }
        if state.max_in_flight > 0 && state.in_flight >= state.max_in_flight {
            state.concurrency_bound = true;
            return Err(Wait::InFlight);
        }
        match state.take_paced_slot(&self.clock, now) {
            Ok(()) => {
                let period = Duration::from_secs_f64(0.9 / state.rate);
                let from_burst = state.last_grant.is_some_and(|last| now < last + period);
                state.last_grant = Some(now);
                state.in_flight += 1;
                state.granted_since_resume += 1;
                Ok(Permit {
                    step: state.step,
                    in_flight: state.in_flight,
                    from_burst,
                    shared: self.clone(),
                })
            }
            Err(wait) => {
                state.saturated = true;
                Err(Wait::For(wait))
            }
        }
    }
}

/// The cubic recovery after a cut (TCP CUBIC's window curve, in requests
/// per second): back to the tripped rate after the recovery time, fast at
/// first, flat around it, then rising ever faster to find a limit that
/// went up. (The caller never lowers the rate with it.)
fn cubic_rate(state: &State, decrease_factor: f64, now: Instant) -> f64 {
    let k = state.recovery_secs;
    let t = now.saturating_duration_since(state.cut_at).as_secs_f64();
    let x = (t - k) / k;
    if x < 0.0 {
        let gap = state.tripped_rate - state.cut_rate;
        state.tripped_rate + gap * x * x * x
    } else {
        state.tripped_rate * (1.0 + (1.0 - decrease_factor) * x * x * x)
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
            Err(Wait::For(wait)) => tokio::time::sleep(wait).await,
            Err(Wait::InFlight) => shared.slot_freed.notified().await,
            Ok(permit) => {
                turns.pop_front();
                let queue = queues.get_mut(&key).expect("key in turns has a queue");
                let grant = queue.pop_front().expect("live waiter");
                if queue.is_empty() {
                    queues.remove(&key);
                } else {
                    turns.push_back(key);
                }
                // A waiter that gave up in between drops the permit, which frees the slot.
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
