//! Syncing one partition: pages in, Parquet out, staged for its group commit.
//!
//! Three stages run at once, joined by bounded channels that push back:
//! the fetcher (HTTP, async), the decoders (JSON → Arrow, CPU-bound, on the
//! blocking pool so they never stall the runtime) and the writer (Parquet
//! through object_store, in this task). Fetching page n+2, decoding page
//! n+1 and writing page n overlap, so one partition uses both cores.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesOrdered;

use syncvet_client::{ApiClient, BatchPage, ClientError, PageEvent};
use syncvet_lake::{BatchWriter, GroupCommitter, Lake, LakeError, PendingCommit};
use syncvet_model::{Chain, DecodeError, DecodedPage, Entity, PageDecoder};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::plan::PartitionJob;
use crate::report::{PartitionReport, PartitionStatus};

/// What a partition sync needs from the run.
pub(crate) struct JobContext<'a> {
    pub client: &'a ApiClient,
    pub lake: &'a Lake,
    /// Where staged batches go to be committed in groups.
    pub committer: &'a GroupCommitter,
    pub metrics: &'a Metrics,
    pub run_id: &'a str,
    pub pages_in_flight: usize,
    /// Cancelled when in-flight partitions must be abandoned.
    pub abort: &'a CancellationToken,
}

/// Why a partition did not commit.
#[derive(Debug, thiserror::Error)]
enum PartitionFailure {
    #[error(transparent)]
    Api(ClientError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("page {page}")]
    Decode {
        page: u32,
        #[source]
        source: DecodeError,
    },
    #[error("page {page}: the decoder stopped")]
    DecoderStopped {
        page: u32,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("interrupted before commit")]
    Interrupted,
}

/// What the decoder stage hands the writer.
enum Decoded {
    Page {
        page: DecodedPage,
        total_count: Option<u64>,
        body_bytes: usize,
    },
    /// The upstream expired our continuation token: start the entity again.
    Restarted,
    Failed(PartitionFailure),
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
/// The batch is staged and handed to the run's group committer; the
/// partition counts as committed once [`Landing::landed`] says so.
pub(crate) async fn sync_partition(ctx: &JobContext<'_>, job: PartitionJob) -> Landing {
    let started = Instant::now();
    let key = job.key.clone();
    let mut stream = ctx
        .client
        .batch(&key.source_id, &key.entity, key.batch_date);
    let mut writer = ctx.lake.writer(job.entity.clone(), key.clone(), ctx.run_id);

    let (pages_tx, pages_rx) = mpsc::channel(ctx.pages_in_flight);
    let fetcher = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let failed = event.is_err();
            if pages_tx.send(event).await.is_err() || failed {
                break;
            }
        }
        stream.stats()
    });
    let (decoded_tx, mut decoded_rx) = mpsc::channel(1);
    let decoding = tokio::spawn(decode_pages(
        job.entity.clone(),
        key.source_id.clone(),
        pages_rx,
        decoded_tx,
    ));

    let mut tally = Tally::default();
    let outcome = write_pages(ctx, &mut writer, &mut decoded_rx, &mut tally).await;

    // Dropping the receiver ends the decoder, which ends the fetcher.
    drop(decoded_rx);
    if matches!(outcome, Err(PartitionFailure::Interrupted)) {
        fetcher.abort();
    }
    decoding.abort();
    let stream_stats = fetcher.await.unwrap_or_default();

    let (status, pending) = match outcome {
        Ok(()) => stage(ctx, writer, tally.total_count).await,
        Err(failure) => {
            abort_quietly(writer).await;
            let status = match failure {
                PartitionFailure::Interrupted => PartitionStatus::Interrupted,
                PartitionFailure::Api(e) => PartitionStatus::from_client_error(&e),
                other => PartitionStatus::Failed {
                    error: Chain(&other).to_string(),
                },
            };
            (status, None)
        }
    };
    let report = PartitionReport::new(
        key,
        status,
        started.elapsed(),
        &stream_stats,
        tally.into_counts(),
    );
    Landing { report, pending }
}

/// The writer stage: decoded pages (in page order) into the batch's files,
/// until the last page, a failure, a restart (which drops what was
/// written) or the abort.
async fn write_pages(
    ctx: &JobContext<'_>,
    writer: &mut BatchWriter,
    decoded_rx: &mut mpsc::Receiver<Decoded>,
    tally: &mut Tally,
) -> Result<(), PartitionFailure> {
    loop {
        let decoded = tokio::select! {
            _ = ctx.abort.cancelled() => return Err(PartitionFailure::Interrupted),
            decoded = decoded_rx.recv() => decoded,
        };
        match decoded {
            None => return Ok(()),
            Some(Decoded::Failed(failure)) => return Err(failure),
            Some(Decoded::Restarted) => {
                writer.restart().await?;
                *tally = Tally::default();
            }
            Some(Decoded::Page {
                page,
                total_count,
                body_bytes,
            }) => {
                tally.add(&page, total_count, body_bytes);
                ctx.metrics
                    .page_decoded(page.batch.num_rows() as u64, page.rejects.len() as u64);
                if page.batch.num_rows() > 0 {
                    writer.write_batch(&page.batch).await?;
                }
                if !page.rejects.is_empty() {
                    writer.write_rejects(&page.rejects).await?;
                }
            }
        }
    }
}

/// Stages the whole batch (reconciled with the source's count) and hands it
/// to the group committer.
async fn stage(
    ctx: &JobContext<'_>,
    writer: BatchWriter,
    total_count: Option<u64>,
) -> (PartitionStatus, Option<PendingCommit>) {
    match writer.stage(total_count).await {
        Ok(staged) => {
            let (files, bytes) = staged.files();
            let pending = ctx.committer.submit(staged);
            (PartitionStatus::Committed { files, bytes }, Some(pending))
        }
        Err(e) => {
            let error = Chain(&e).to_string();
            (PartitionStatus::Failed { error }, None)
        }
    }
}

/// A partition synced: its report, and its commit while its group waits.
pub(crate) struct Landing {
    pub report: PartitionReport,
    pub pending: Option<PendingCommit>,
}

impl Landing {
    /// The report once the batch's group is committed: a commit that
    /// failed turns the partition failed.
    pub(crate) async fn landed(self, metrics: &Metrics) -> PartitionReport {
        let mut report = self.report;
        if let Some(pending) = self.pending
            && let Err(e) = pending.await
        {
            report.status = PartitionStatus::Failed {
                error: Chain(&e).to_string(),
            };
        }
        metrics.partition_done(&report);
        report
    }
}

/// Pages decoded at once per partition: two keep both cores busy on one
/// big partition; more would only queue on the blocking pool.
const DECODERS_PER_PARTITION: usize = 2;

type Decoding = Pin<Box<dyn Future<Output = (Option<PageDecoder>, Decoded)> + Send>>;

/// The decoder stage: pages decoded on the blocking pool, up to
/// [`DECODERS_PER_PARTITION`] at once, handed on in page order.
async fn decode_pages(
    entity: Arc<Entity>,
    source_id: String,
    mut pages: mpsc::Receiver<Result<PageEvent, ClientError>>,
    decoded: mpsc::Sender<Decoded>,
) {
    let mut idle: Vec<PageDecoder> = (0..DECODERS_PER_PARTITION)
        .map(|_| PageDecoder::new(entity.clone(), &source_id))
        .collect();
    let mut in_flight: FuturesOrdered<Decoding> = FuturesOrdered::new();
    let mut upstream_done = false;
    loop {
        tokio::select! {
            biased;
            Some((returned, message)) = in_flight.next(), if !in_flight.is_empty() => {
                idle.extend(returned);
                let failed = matches!(message, Decoded::Failed(_));
                if decoded.send(message).await.is_err() || failed {
                    return;
                }
            }
            event = pages.recv(), if !upstream_done && !idle.is_empty() => {
                let Some(event) = event else {
                    upstream_done = true;
                    continue;
                };
                in_flight.push_back(decode_one(event, &mut idle));
            }
            else => return,
        }
    }
}

fn decode_one(event: Result<PageEvent, ClientError>, idle: &mut Vec<PageDecoder>) -> Decoding {
    match event {
        Err(e) => Box::pin(std::future::ready((
            None,
            Decoded::Failed(PartitionFailure::Api(e)),
        ))),
        Ok(PageEvent::Restarted) => Box::pin(std::future::ready((None, Decoded::Restarted))),
        Ok(PageEvent::Page(page)) => {
            let mut decoder = idle.pop().expect("a decoder is idle when a page is taken");
            let BatchPage {
                number,
                items,
                records,
                total_count,
                body_bytes,
            } = page;
            Box::pin(async move {
                let work = tokio::task::spawn_blocking(move || {
                    let result = decoder.decode_records(&items, &records);
                    (decoder, result)
                });
                match work.await {
                    Ok((decoder, Ok(page))) => (
                        Some(decoder),
                        Decoded::Page {
                            page,
                            total_count,
                            body_bytes,
                        },
                    ),
                    Ok((decoder, Err(source))) => (
                        Some(decoder),
                        Decoded::Failed(PartitionFailure::Decode {
                            page: number,
                            source,
                        }),
                    ),
                    Err(source) => (
                        None,
                        Decoded::Failed(PartitionFailure::DecoderStopped {
                            page: number,
                            source,
                        }),
                    ),
                }
            })
        }
    }
}

async fn abort_quietly(writer: BatchWriter) {
    // Nothing of an aborted partition is visible to readers; a failed abort
    // only leaves invisible upload parts behind.
    writer.abort().await;
}

impl Tally {
    fn add(&mut self, page: &DecodedPage, total_count: Option<u64>, body_bytes: usize) {
        self.pages += 1;
        self.json_bytes += body_bytes as u64;
        if total_count.is_some() {
            self.total_count = total_count;
        }
        for (key, n) in &page.unknown_keys {
            *self.unknown_keys.entry(key.clone()).or_default() += n;
        }
        self.rows += page.batch.num_rows() as u64;
        self.rejects += page.rejects.len() as u64;
    }

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
