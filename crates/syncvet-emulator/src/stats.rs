//! The admin counters (`GET /__admin/stats`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::limits::LimitKind;

/// A snapshot of the emulator's counters, in the contract's stats shape.
///
/// Requests to `/__admin/…` are not counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests received (token endpoint and API), dropped ones included.
    pub requests: u64,
    /// Responses by status code (`"200"`, `"429"` …); a truncated 200 counts
    /// as a 200, a dropped connection under no status.
    pub by_status: BTreeMap<String, u64>,
    /// Injected faults by kind: `drop`, `truncate`, `500`, `503`, `408`,
    /// `latency` (requests delayed).
    pub faults: BTreeMap<String, u64>,
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// API requests that arrived from a client after it could have seen a
    /// 429 and before that 429's `Retry-After` had passed.
    ///
    /// Per client the emulator keeps its current pause: `sent_at`, when the
    /// first 429 of the pause was sent, and `deadline`, the latest
    /// `sent_at + Retry-After` over the 429s of the pause (a 429 sent at or
    /// after the deadline starts a new pause). A request arriving at
    /// `arrival` is early iff
    /// `sent_at + early_retry_grace_ms < arrival < deadline`: requests
    /// already in flight when the 429 was sent, and those arriving within
    /// the grace (sent before the client could have read the 429), are not
    /// blamed.
    pub early_retries: u64,
    /// 429 responses sent (the same as `by_status["429"]`).
    pub rate_limited: u64,
    /// 429 responses by the limit that refused: `token_bucket`,
    /// `fixed_window`, `sliding_window`, `concurrency` (every kind listed,
    /// 0 included); they add up to `rate_limited`.
    #[serde(default)]
    pub rate_limited_by: BTreeMap<String, u64>,
    /// 202 (batch not ready) responses sent.
    pub not_ready: u64,
    /// Records in the 200 batch pages sent.
    pub records_served: u64,
    /// Of those, dirty records (wrong type, impossible date, missing field).
    pub dirty_records_served: u64,
    /// Of those, records with unknown extra keys.
    pub drift_records_served: u64,
    /// Of those, changed versions of records created on an earlier day.
    #[serde(default)]
    pub changed_records_served: u64,
    /// Of those, deletions (`"deleted": true`) of records created on an
    /// earlier day.
    #[serde(default)]
    pub deleted_records_served: u64,
    /// Bytes of 200 batch page bodies sent (whole bodies, before truncation).
    pub bytes_served: u64,
}

/// The fault kinds counted, in the order of [`Counters::faults`].
pub(crate) const FAULT_KINDS: [&str; 6] = ["drop", "truncate", "500", "503", "408", "latency"];

/// A fault kind, indexing [`FAULT_KINDS`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    Drop = 0,
    Truncate = 1,
    Error500 = 2,
    Error503 = 3,
    Error408 = 4,
    Latency = 5,
}

/// The live counters, lock-free.
#[derive(Debug)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    by_status: Vec<AtomicU64>,
    faults: [AtomicU64; 6],
    pub tokens_issued: AtomicU64,
    pub early_retries: AtomicU64,
    rate_limited_by: [AtomicU64; 4],
    pub not_ready: AtomicU64,
    pub records_served: AtomicU64,
    pub dirty_records_served: AtomicU64,
    pub drift_records_served: AtomicU64,
    pub changed_records_served: AtomicU64,
    pub deleted_records_served: AtomicU64,
    pub bytes_served: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: AtomicU64::new(0),
            by_status: (0..600).map(|_| AtomicU64::new(0)).collect(),
            faults: Default::default(),
            tokens_issued: AtomicU64::new(0),
            early_retries: AtomicU64::new(0),
            rate_limited_by: Default::default(),
            not_ready: AtomicU64::new(0),
            records_served: AtomicU64::new(0),
            dirty_records_served: AtomicU64::new(0),
            drift_records_served: AtomicU64::new(0),
            changed_records_served: AtomicU64::new(0),
            deleted_records_served: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
        }
    }
}

impl Counters {
    pub(crate) fn status(&self, code: u16) {
        if let Some(counter) = self.by_status.get(usize::from(code)) {
            counter.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn fault(&self, fault: Fault) {
        self.faults[fault as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn limited(&self, kind: LimitKind) {
        self.rate_limited_by[kind.index()].fetch_add(1, Relaxed);
    }

    /// A batch page served: its records by kind, and its bytes.
    pub(crate) fn served(&self, tally: &crate::records::RecordTally, bytes: usize) {
        self.records_served.fetch_add(tally.records, Relaxed);
        self.dirty_records_served.fetch_add(tally.dirty, Relaxed);
        self.drift_records_served.fetch_add(tally.drift, Relaxed);
        self.changed_records_served
            .fetch_add(tally.changed, Relaxed);
        self.deleted_records_served
            .fetch_add(tally.deleted, Relaxed);
        self.bytes_served.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let by_status: BTreeMap<String, u64> = self
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(code, n)| {
                let n = n.load(Relaxed);
                (n > 0).then(|| (code.to_string(), n))
            })
            .collect();
        Stats {
            requests: self.requests.load(Relaxed),
            rate_limited: by_status.get("429").copied().unwrap_or(0),
            by_status,
            faults: FAULT_KINDS
                .iter()
                .zip(&self.faults)
                .map(|(kind, n)| ((*kind).to_owned(), n.load(Relaxed)))
                .collect(),
            tokens_issued: self.tokens_issued.load(Relaxed),
            early_retries: self.early_retries.load(Relaxed),
            rate_limited_by: LimitKind::ALL
                .iter()
                .zip(&self.rate_limited_by)
                .map(|(kind, n)| (kind.name().to_owned(), n.load(Relaxed)))
                .collect(),
            not_ready: self.not_ready.load(Relaxed),
            records_served: self.records_served.load(Relaxed),
            dirty_records_served: self.dirty_records_served.load(Relaxed),
            drift_records_served: self.drift_records_served.load(Relaxed),
            changed_records_served: self.changed_records_served.load(Relaxed),
            deleted_records_served: self.deleted_records_served.load(Relaxed),
            bytes_served: self.bytes_served.load(Relaxed),
        }
    }
}
