//! The state every request shares: the current switches (swapped whole by
//! an admin patch), the rate limiter, the counters and the little memory the
//! emulator keeps (Retry-After deadlines per client, 202 polls per batch).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use syncvet_model::Catalog;

use crate::hash::{combine, unit};
use crate::plan::EntityPlan;
use crate::stats::Counters;
use crate::{EmulatorConfig, EmulatorError};

/// The hidden limit: one token bucket per client id.
pub(crate) type ClientLimiter = DefaultKeyedRateLimiter<String>;

/// The switches in force, and the limiter built from them.
#[derive(Debug)]
pub(crate) struct Settings {
    pub config: EmulatorConfig,
    pub limiter: Option<Arc<ClientLimiter>>,
}

/// Shared by every connection and handler.
#[derive(Debug)]
pub(crate) struct Shared {
    settings: RwLock<Arc<Settings>>,
    /// One plan per catalog entity, by name.
    pub plans: HashMap<String, EntityPlan>,
    pub counters: Counters,
    /// Keys the access tokens' checks (new each start, so tokens of an
    /// earlier run are refused).
    pub token_key: u64,
    /// Per client id: unix ms before which a request is an early retry.
    pub retry_not_before: Mutex<HashMap<String, u64>>,
    /// Per (source, entity, date days): 202s answered so far.
    pub polls: Mutex<HashMap<(String, String, i64), u32>>,
    started: tokio::time::Instant,
    started_unix_ms: u64,
    fault_sequence: AtomicU64,
}

fn limiter_for(config: &EmulatorConfig) -> Option<Arc<ClientLimiter>> {
    let rps = NonZeroU32::new(config.rate_limit_rps)?;
    let burst = NonZeroU32::new(config.burst).unwrap_or(rps);
    Some(Arc::new(RateLimiter::keyed(
        Quota::per_second(rps).allow_burst(burst),
    )))
}

impl Shared {
    pub(crate) fn new(config: EmulatorConfig) -> Shared {
        let plans = Catalog::embedded()
            .entities()
            .map(|e| (e.name.clone(), EntityPlan::new(e)))
            .collect();
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let limiter = limiter_for(&config);
        Shared {
            settings: RwLock::new(Arc::new(Settings { config, limiter })),
            plans,
            counters: Counters::default(),
            token_key: rand::random(),
            retry_not_before: Mutex::new(HashMap::new()),
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

    /// Applies an admin patch at once. The rate limiter is rebuilt only when
    /// its switches change, so a patch of another switch keeps the buckets.
    pub(crate) fn apply_patch(&self, patch: &serde_json::Value) -> Result<(), EmulatorError> {
        let mut guard = self.settings.write().unwrap_or_else(|e| e.into_inner());
        let config = guard.config.patched(patch)?;
        let limiter = if (config.rate_limit_rps, config.burst)
            == (guard.config.rate_limit_rps, guard.config.burst)
        {
            guard.limiter.clone()
        } else {
            limiter_for(&config)
        };
        tracing::info!(?config, "emulator switches changed");
        *guard = Arc::new(Settings { config, limiter });
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
