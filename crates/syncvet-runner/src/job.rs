//! Syncing one partition: pages in, Parquet out, committed once.

use std::collections::BTreeMap;
use std::time::Instant;

use syncvet_client::{ApiClient, ClientError, PageEvent};
use syncvet_lake::{Lake, PartitionWriter};
use syncvet_model::PageDecoder;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::plan::PartitionJob;
use crate::report::{PartitionReport, PartitionStatus};

/// What a partition sync needs from the run.
pub(crate) struct JobContext<'a> {
    pub client: &'a ApiClient,
    pub lake: &'a Lake,
    pub metrics: &'a Metrics,
    pub run_id: &'a str,
    pub pages_in_flight: usize,
    /// Cancelled when in-flight partitions must be abandoned.
    pub abort: &'a CancellationToken,
}

/// Why a partition did not commit.
enum Failure {
    Api(ClientError),
    Other(String),
    Interrupted,
}

/// Counts of one attempt at a partition; reset when the upstream restarts it.
#[derive(Default)]
struct Tally {
    pages: u64,
    rows: u64,
    rejects: u64,
    json_bytes: u64,
    unknown_keys: BTreeMap<String, u64>,
    total_count: Option<u64>,
}

/// Syncs one partition and says how it went; never panics on bad data.
pub(crate) async fn sync_partition(ctx: &JobContext<'_>, job: PartitionJob) -> PartitionReport {
    let started = Instant::now();
    let key = job.key.clone();
    let mut stream = ctx
        .client
        .batch(&key.source_id, &key.entity, key.batch_date);
    let mut writer = ctx.lake.writer(job.entity.clone(), key.clone(), ctx.run_id);
    let mut decoder = PageDecoder::new(job.entity.clone(), &key.source_id);
    let mut tally = Tally::default();

    // The next pages are fetched while this one is decoded and written; the
    // bounded channel pushes back on the fetcher when the writer is slower.
    let (pages_tx, mut pages_rx) = mpsc::channel(ctx.pages_in_flight);
    let fetcher = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let failed = event.is_err();
            if pages_tx.send(event).await.is_err() || failed {
                break;
            }
        }
        stream.stats()
    });

    let outcome: Result<(), Failure> = async {
        loop {
            let event = tokio::select! {
                _ = ctx.abort.cancelled() => return Err(Failure::Interrupted),
                event = pages_rx.recv() => event,
            };
            let Some(event) = event else { return Ok(()) };
            match event.map_err(Failure::Api)? {
                PageEvent::Restarted => {
                    writer
                        .restart()
                        .await
                        .map_err(|e| Failure::Other(e.to_string()))?;
                    tally = Tally::default();
                }
                PageEvent::Page(page) => {
                    tally.pages += 1;
                    tally.json_bytes += page.body_bytes as u64;
                    if page.total_count.is_some() {
                        tally.total_count = page.total_count;
                    }
                    let decoded = decoder
                        .decode(&page.items)
                        .map_err(|e| Failure::Other(format!("page {}: {e}", page.number)))?;
                    for (key, n) in decoded.unknown_keys {
                        *tally.unknown_keys.entry(key).or_default() += n;
                    }
                    tally.rows += decoded.batch.num_rows() as u64;
                    tally.rejects += decoded.rejects.len() as u64;
                    ctx.metrics.page_decoded(
                        decoded.batch.num_rows() as u64,
                        decoded.rejects.len() as u64,
                    );
                    if decoded.batch.num_rows() > 0 {
                        writer
                            .write_batch(&decoded.batch)
                            .await
                            .map_err(|e| Failure::Other(e.to_string()))?;
                    }
                    if !decoded.rejects.is_empty() {
                        writer
                            .write_rejects(&decoded.rejects)
                            .await
                            .map_err(|e| Failure::Other(e.to_string()))?;
                    }
                }
            }
        }
    }
    .await;

    drop(pages_rx);
    if matches!(outcome, Err(Failure::Interrupted)) {
        fetcher.abort();
    }
    let stream_stats = fetcher.await.unwrap_or_default();

    let status = match outcome {
        Ok(()) => match writer.commit(tally.total_count).await {
            Ok(summary) => PartitionStatus::Committed {
                files: summary.files.len() as u64,
                bytes: summary.bytes,
            },
            Err(e) => PartitionStatus::Failed {
                error: e.to_string(),
            },
        },
        Err(failure) => {
            abort_quietly(writer).await;
            match failure {
                Failure::Interrupted => PartitionStatus::Interrupted,
                Failure::Api(e) => PartitionStatus::from_client_error(&e),
                Failure::Other(e) => PartitionStatus::Failed { error: e },
            }
        }
    };
    let report = PartitionReport::new(
        key,
        status,
        started.elapsed(),
        &stream_stats,
        tally.into_counts(),
    );
    ctx.metrics.partition_done(&report);
    report
}

async fn abort_quietly(writer: PartitionWriter) {
    // Nothing of an aborted partition is visible to readers; a failed abort
    // only leaves invisible upload parts behind.
    writer.abort().await;
}

impl Tally {
    fn into_counts(self) -> crate::report::PartitionCounts {
        crate::report::PartitionCounts {
            pages: self.pages,
            rows: self.rows,
            rejects: self.rejects,
            json_bytes: self.json_bytes,
            source_total: self.total_count,
            unknown_keys: self.unknown_keys,
        }
    }
}
