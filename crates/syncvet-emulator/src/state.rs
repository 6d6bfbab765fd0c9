//! The state every request shares: the current switches (swapped whole by
//! an admin patch), the gateway's rate limits, the counters and the little
//! memory the emulator keeps (the current 429 pause per client, 202 polls per
//! batch).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::hash::{combine, unit};
use crate::limits::{Gateway, GatewayLimits};
use crate::plan::{EntityPlan, embedded_catalog};
use crate::stats::Counters;
use crate::{EmulatorConfig, EmulatorError};

/// The switches in force, and the gateway built from their limits.
#[derive(Debug)]
pub(crate) struct Settings {
    pub config: EmulatorConfig,
    pub gateway: Arc<Gateway>,
}

/// The current pause of one client: from the first 429 of a run of them to
/// the latest end of the Retry-Afters they gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pause {
    /// When the first 429 of this pause was sent.
    pub sent_at: Instant,
    /// The latest `sent_at + Retry-After` over the 429s of this pause.
    pub deadline: Instant,
}

impl Pause {
    /// The pause after a 429 sent at `sent_at` with `retry_after`: a new one
    /// if the last has ended, else the last one, lengthened if need be.
    pub(crate) fn after(last: Option<Pause>, sent_at: Instant, retry_after: Duration) -> Pause {
        let deadline = sent_at + retry_after;
        match last {
            Some(pause) if sent_at < pause.deadline => Pause {
                sent_at: pause.sent_at,
                deadline: pause.deadline.max(deadline),
            },
            _ => Pause { sent_at, deadline },
        }
    }

    /// Whether a request arriving at `arrival` is an early retry: after the
    /// client could have seen the 429 (`sent_at + grace`), and before the
    /// deadline.
    pub(crate) fn is_early(&self, arrival: Instant, grace: Duration) -> bool {
        self.sent_at + grace < arrival && arrival < self.deadline
    }
}

/// Shared by every connection and handler.
#[derive(Debug)]
pub(crate) struct Shared {
    settings: RwLock<Arc<Settings>>,
    /// One plan per catalog entity, by name.
    pub plans: HashMap<String, Arc<EntityPlan>>,
    /// Batch pages rendered ahead of their request.
    pub lookahead: crate::lookahead::Lookahead,
    pub counters: Counters,
    /// Keys the access tokens' checks (new each start, so tokens of an
    /// earlier run are refused).
    pub token_key: u64,
    /// Per client id: its current (or last) 429 pause.
    pub pauses: Mutex<HashMap<String, Pause>>,
    /// Per (source, entity, date days): 202s answered so far.
    pub polls: Mutex<HashMap<(String, String, i64), u32>>,
    started: tokio::time::Instant,
    started_unix_ms: u64,
    fault_sequence: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: EmulatorConfig) -> Shared {
        let catalog = embedded_catalog();
        let plans = catalog
            .entities()
            .map(|e| (e.name.clone(), Arc::new(EntityPlan::new(e, catalog))))
            .collect();
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let gateway = Arc::new(Gateway::new(GatewayLimits::from_config(&config)));
        Shared {
            settings: RwLock::new(Arc::new(Settings { config, gateway })),
            plans,
            lookahead: Default::default(),
            counters: Counters::default(),
            token_key: rand::random(),
            pauses: Mutex::new(HashMap::new()),
            polls: Mutex::new(HashMap::new()),
            started: tokio::time::Instant::now(),
            started_unix_ms,
            fault_sequence: AtomicU64::new(0),
        }
    }

    /// The switches in force (a cheap clone of an `Arc`).
    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies an admin patch at once. The gateway is rebuilt only when a
    /// limit switch changes, so a patch of another switch keeps the buckets,
    /// windows and requests in flight. (Requests admitted by a replaced
    /// gateway hold its slots, not the new one's.)
    pub(crate) fn apply_patch(&self, patch: &serde_json::Value) -> Result<(), EmulatorError> {
        let mut guard = self.settings.write().unwrap_or_else(|e| e.into_inner());
        let config = guard.config.patched(patch)?;
        let limits = GatewayLimits::from_config(&config);
        let gateway = if &limits == guard.gateway.limits() {
            guard.gateway.clone()
        } else {
            Arc::new(Gateway::new(limits))
        };
        tracing::info!(?config, "emulator switches changed");
        *guard = Arc::new(Settings { config, gateway });
        Ok(())
    }

    /// Unix milliseconds on a clock that `tokio::time::pause` controls.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started_unix_ms + self.started.elapsed().as_millis() as u64
    }

    /// The next draw of the fault sequence, in [0, 1): reproducible for a
    /// given seed and request order.
    pub(crate) fn roll(&self, seed: u64) -> f64 {
        unit(combine(
            seed ^ 0xfa17,
            self.fault_sequence.fetch_add(1, Relaxed),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_runs_from_its_first_429_to_the_latest_deadline() {
        let t0 = Instant::now();
        let pause = Pause::after(None, t0, ms(2000));
        assert_eq!(
            pause,
            Pause {
                sent_at: t0,
                deadline: t0 + ms(2000)
            }
        );
        // A 429 inside the pause lengthens it, keeps its start.
        let pause = Pause::after(Some(pause), t0 + ms(1500), ms(1000));
        assert_eq!(
            pause,
            Pause {
                sent_at: t0,
                deadline: t0 + ms(2500)
            }
        );
        // One with an earlier deadline shortens nothing.
        let pause = Pause::after(Some(pause), t0 + ms(1600), ms(100));
        assert_eq!(pause.deadline, t0 + ms(2500));
        // One after the deadline starts a new pause.
        let next = Pause::after(Some(pause), t0 + ms(2500), ms(1000));
        assert_eq!(
            next,
            Pause {
                sent_at: t0 + ms(2500),
                deadline: t0 + ms(3500)
            }
        );

        let grace = ms(100);
        assert!(
            !pause.is_early(t0, grace),
            "in flight when the 429 was sent"
        );
        assert!(!pause.is_early(t0 + ms(100), grace), "inside the grace");
        assert!(pause.is_early(t0 + ms(101), grace));
        assert!(pause.is_early(t0 + ms(2499), grace));
        assert!(
            !pause.is_early(t0 + ms(2500), grace),
            "the deadline has passed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_patch_rebuilds_the_gateway_only_when_a_limit_changes() {
        let shared = Shared::new(EmulatorConfig::default());
        let before = shared.settings().gateway.clone();
        shared
            .apply_patch(&serde_json::json!({"drop_rate": 0.1}))
            .unwrap();
        assert!(Arc::ptr_eq(&before, &shared.settings().gateway));
        shared
            .apply_patch(&serde_json::json!({"window_calls": 0}))
            .unwrap();
        assert!(
            Arc::ptr_eq(&before, &shared.settings().gateway),
            "same value"
        );
        for patch in [
            serde_json::json!({"window_calls": 5}),
            serde_json::json!({"window_secs": 5}),
            serde_json::json!({"window_sliding": true}),
            serde_json::json!({"max_concurrent_requests": 2}),
            serde_json::json!({"rate_limit_rps": 3}),
            serde_json::json!({"burst": 9}),
        ] {
            let before = shared.settings().gateway.clone();
            shared.apply_patch(&patch).unwrap();
            let after = shared.settings().gateway.clone();
            assert!(!Arc::ptr_eq(&before, &after), "{patch}");
            assert_eq!(
                after.limits(),
                &GatewayLimits::from_config(&shared.settings().config)
            );
        }
    }
}
