//! Prometheus metrics: what the daemon's `/metrics` serves.
//!
//! Partition and row counters are kept here, updated in one place per event
//! (the end of a page, the end of a partition, the end of a run); request
//! counters are the client's own, read at scrape time so they are never
//! counted twice.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use syncvet_client::ApiClient;

use crate::report::{PartitionReport, RunReport};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    rows_written: Counter,
    rows_rejected: Counter,
    pages: Counter,
    partitions: Family<OutcomeLabel, Counter>,
    bytes_written: Counter,
    runs: Family<OutcomeLabel, Counter>,
    last_run_duration_secs: Gauge<f64, AtomicU64>,
    last_run_finished: Gauge,
    running: Gauge,
}

impl Metrics {
    /// A page was decoded: `rows` kept, `rejects` quarantined.
    pub(crate) fn page_decoded(&self, rows: u64, rejects: u64) {
        self.pages.inc();
        self.rows_written.inc_by(rows);
        self.rows_rejected.inc_by(rejects);
    }

    /// Rows written so far by this process.
    pub(crate) fn rows_written(&self) -> u64 {
        self.rows_written.get()
    }

    /// A partition ended, committed or not.
    pub(crate) fn partition_done(&self, report: &PartitionReport) {
        let outcome = if report.status.is_committed() {
            "committed"
        } else {
            "failed"
        };
        self.partitions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        self.bytes_written.inc_by(report.bytes());
    }

    /// A run started (the daemon never runs two at once).
    pub(crate) fn run_started(&self) {
        self.running.set(1);
    }

    /// A run ended.
    pub(crate) fn run_finished(&self, report: &RunReport) {
        let outcome = if report.all_done() { "ok" } else { "partial" };
        self.runs
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        self.last_run_duration_secs.set(report.duration_secs);
        self.last_run_finished.set(report.finished_at.timestamp());
        self.running.set(0);
    }

    /// A registry with these metrics and the API client's.
    pub fn registry(self: &Arc<Self>, client: ApiClient) -> Registry {
        let mut registry = Registry::with_prefix("syncvet");
        registry.register(
            "rows_written",
            "Rows decoded and written",
            self.rows_written.clone(),
        );
        registry.register(
            "rows_rejected",
            "Records sent to quarantine",
            self.rows_rejected.clone(),
        );
        registry.register("pages", "Batch pages decoded", self.pages.clone());
        registry.register(
            "partitions",
            "Partitions ended, by outcome",
            self.partitions.clone(),
        );
        registry.register(
            "bytes_written",
            "Bytes of Parquet committed",
            self.bytes_written.clone(),
        );
        registry.register("runs", "Runs ended, by outcome", self.runs.clone());
        registry.register(
            "last_run_duration_seconds",
            "Length of the last run",
            self.last_run_duration_secs.clone(),
        );
        registry.register(
            "last_run_finished_timestamp_seconds",
            "When the last run ended (Unix time)",
            self.last_run_finished.clone(),
        );
        registry.register(
            "run_in_progress",
            "1 while a run is in progress",
            self.running.clone(),
        );
        registry.register_collector(Box::new(ApiCollector(client)));
        registry
    }
}

/// Reads the client's counters at scrape time.
#[derive(Debug)]
struct ApiCollector(ApiClient);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

impl Collector for ApiCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.metrics();
        let mut requests = encoder.encode_descriptor(
            "api_requests",
            "API requests, by HTTP status (\"error\": no status)",
            None,
            MetricType::Counter,
        )?;
        for (status, count) in &snapshot.requests_by_status {
            let label = StatusLabel {
                status: status.to_string(),
            };
            ConstCounter::new(*count).encode(requests.encode_family(&label)?)?;
        }
        let label = StatusLabel {
            status: "error".into(),
        };
        ConstCounter::new(snapshot.transport_errors).encode(requests.encode_family(&label)?)?;
        let counters = [
            (
                "api_retries",
                "API requests that were retries",
                snapshot.retries,
            ),
            ("api_rate_limited", "API answers 429", snapshot.rate_limited),
        ];
        for (name, help, value) in counters {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        ConstCounter::new(snapshot.throttled_secs).encode(encoder.encode_descriptor(
            "api_throttled_seconds",
            "Seconds workers waited for the rate governor or a Retry-After",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(snapshot.current_rate).encode(encoder.encode_descriptor(
            "api_rate_per_second",
            "The request rate the governor allows now",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}
