//! Process-wide counters of one `ApiClient` (all clones), and per-stream stats.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::rate::GovernorSettings;

/// What one `PageStream` cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamStats {
    /// HTTP requests sent (every attempt and poll counts).
    pub requests: u64,
    /// Retries after transient failures (408, 5xx, connection, truncation).
    pub retries: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Time spent waiting for the rate governor (pacing and 429 pauses).
    pub throttled: Duration,
    /// Response body bytes received.
    pub bytes: u64,
    /// Restarts from the first page after an expired continuation token.
    pub restarts: u32,
    /// 202 (not ready) answers polled through.
    pub not_ready_polls: u64,
}

/// A point-in-time copy of the client's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Responses by HTTP status code.
    pub requests_by_status: BTreeMap<u16, u64>,
    /// Requests that got no HTTP response (connection error, timeout, cut body).
    pub transport_errors: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Total time requests waited for the rate governor, in seconds.
    pub throttled_secs: f64,
    /// Response body bytes received.
    pub bytes: u64,
    /// The governor's current target rate, requests per second.
    pub current_rate: f64,
    /// The governor's current burst (requests at once after a lull).
    pub current_burst: u32,
    /// The governor's current cap on requests in flight (0 = none).
    pub max_in_flight: u32,
    /// Access tokens fetched.
    pub tokens_fetched: u64,
}

#[derive(Default)]
pub(crate) struct Metrics {
    by_status: Mutex<BTreeMap<u16, u64>>,
    transport_errors: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    throttled_nanos: AtomicU64,
    bytes: AtomicU64,
}

impl Metrics {
    pub(crate) fn response(&self, status: u16, bytes: usize) {
        *self
            .by_status
            .lock()
            .expect("poisoned")
            .entry(status)
            .or_default() += 1;
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if status == 429 {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn transport_error(&self) {
        self.transport_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn throttled(&self, waited: Duration) {
        self.throttled_nanos
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(
        &self,
        governor: GovernorSettings,
        tokens_fetched: u64,
    ) -> MetricsSnapshot {
        MetricsSnapshot {
            requests_by_status: self.by_status.lock().expect("poisoned").clone(),
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            throttled_secs: Duration::from_nanos(self.throttled_nanos.load(Ordering::Relaxed))
                .as_secs_f64(),
            bytes: self.bytes.load(Ordering::Relaxed),
            current_rate: governor.rate,
            current_burst: governor.burst,
            max_in_flight: governor.max_in_flight,
            tokens_fetched,
        }
    }
}
