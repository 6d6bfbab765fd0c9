//! [`GroupCommitter`]: lands the batches a run finishes in groups, so the
//! commits per table in a night follow the length of the night, not the
//! number of sources; between groups it merges them into the current
//! tables and compacts the days they filled.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::NaiveDate;
use syncvet_model::{Chain, SourceType};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{CommitSummary, Compacted, CurrentUpdate, Lake, LakeError, StagedBatch};

/// Small files a day must have before the committer compacts it between
/// groups: enough that a rewrite is worth its cost (the compacted file of
/// the group before is rewritten again with them, until it outgrows
/// `max_file_bytes`). The run's last compaction takes what is left.
const COMPACT_BETWEEN_GROUPS_FILES: usize = 64;

type Submission = (
    StagedBatch,
    oneshot::Sender<Result<CommitSummary, LakeError>>,
);

/// Collects staged batches and commits them together: once
/// `commit_group_batches` are waiting, once the oldest has waited
/// `commit_interval_secs`, and at [`GroupCommitter::finish`]. A crash loses
/// at most the batches waiting (their files are in no commit, so no reader
/// sees them), which the re-run lands again.
///
/// With `maintain_after_run`, each group but the last is merged into the
/// current tables of its entities and then followed by the compaction of
/// the days it landed that have gathered [`COMPACT_BETWEEN_GROUPS_FILES`]
/// small files: a fleet's run spends most of its night waiting on the
/// API's rate limit, and this work is done in that wait rather than all
/// after it. The merge comes first because it reads each batch from the
/// history: from its own small file it reads that batch alone, while from
/// a compacted day it reads (row groups of) every source's rows again, for
/// each source.
pub struct GroupCommitter {
    tx: mpsc::UnboundedSender<Submission>,
    task: JoinHandle<BetweenGroups>,
}

/// What the committer did between groups.
#[derive(Debug, Default)]
pub struct BetweenGroups {
    /// The merges into the current tables.
    pub current: CurrentUpdate,
    /// Days compacted, files replaced and added.
    pub compacted: Compacted,
    /// `table: error` of each compaction that failed (the data stays as
    /// committed).
    pub errors: Vec<String>,
}

/// The outcome of one submitted batch, once its group is committed.
pub struct PendingCommit(oneshot::Receiver<Result<CommitSummary, LakeError>>);

impl Future for PendingCommit {
    type Output = Result<CommitSummary, LakeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(LakeError::CommitAbandoned)))
    }
}

impl GroupCommitter {
    /// A committer over `lake` with the lake's group settings.
    pub fn new(lake: &Lake) -> GroupCommitter {
        let config = &lake.inner.config;
        let interval = Duration::from_secs_f64(config.commit_interval_secs);
        let max = config.commit_group_batches;
        let (tx, rx) = mpsc::unbounded_channel();
        let compact = config.maintain_after_run;
        let task = tokio::spawn(run(lake.clone(), rx, interval, max, compact));
        GroupCommitter { tx, task }
    }

    /// Queues a staged batch; the result comes once its group is committed.
    pub fn submit(&self, staged: StagedBatch) -> PendingCommit {
        let (done, result) = oneshot::channel();
        // A send fails only once the task ended, which `finish` alone does;
        // the receiver then reports the batch as abandoned.
        let _ = self.tx.send((staged, done));
        PendingCommit(result)
    }

    /// Commits everything still waiting and stops; returns what its
    /// compaction between groups did.
    pub async fn finish(self) -> BetweenGroups {
        drop(self.tx);
        self.task.await.unwrap_or_else(|e| {
            tracing::error!(error = %Chain(&e), "the group committer stopped abnormally");
            BetweenGroups::default()
        })
    }
}

async fn run(
    lake: Lake,
    mut rx: mpsc::UnboundedReceiver<Submission>,
    interval: Duration,
    max: usize,
    compact: bool,
) -> BetweenGroups {
    let mut waiting: Vec<Submission> = Vec::new();
    let mut due = Instant::now() + interval;
    let mut between = BetweenGroups::default();
    loop {
        let group_full = tokio::select! {
            received = rx.recv() => match received {
                Some(submission) => {
                    if waiting.is_empty() {
                        due = Instant::now() + interval;
                    }
                    waiting.push(submission);
                    waiting.len() >= max
                }
                None => {
                    commit(&lake, &mut waiting).await;
                    return between;
                }
            },
            () = tokio::time::sleep_until(due), if !waiting.is_empty() => true,
        };
        if group_full {
            let days = commit(&lake, &mut waiting).await;
            if compact {
                merge_current(&lake, &days, &mut between).await;
                compact_days(&lake, days, &mut between).await;
            }
        }
    }
}

/// The days of each table a group landed.
type LandedDays = BTreeMap<(SourceType, String), BTreeSet<NaiveDate>>;

async fn merge_current(lake: &Lake, days: &LandedDays, between: &mut BetweenGroups) {
    for (source, entity) in days.keys() {
        match lake.update_current(*source, entity).await {
            Ok(update) => between.current.absorb(update),
            Err(e) => {
                // Its batches stay pending: the run's own update takes them.
                tracing::warn!(entity, error = %Chain(&e), "merging a group into the current table failed; the data is committed");
                between.current.errors.push(format!(
                    "current/{}/{entity}: {}",
                    source.as_str(),
                    Chain(&e)
                ));
            }
        }
    }
}

async fn compact_days(lake: &Lake, days: LandedDays, between: &mut BetweenGroups) {
    for ((source, entity), days) in days {
        for (table, result) in lake
            .compact(source, &entity, &days, COMPACT_BETWEEN_GROUPS_FILES)
            .await
        {
            match result {
                Ok(done) => between.compacted += done,
                Err(e) => {
                    tracing::warn!(table, error = %Chain(&e), "compaction between groups failed; the data is committed");
                    between.errors.push(format!("{table}: {}", Chain(&e)));
                }
            }
        }
    }
}

/// Commits the waiting batches; returns the days of each table that
/// some of them landed in.
async fn commit(lake: &Lake, waiting: &mut Vec<Submission>) -> LandedDays {
    let mut landed = LandedDays::new();
    if waiting.is_empty() {
        return landed;
    }
    let (staged, senders): (Vec<StagedBatch>, Vec<_>) = std::mem::take(waiting).into_iter().unzip();
    tracing::debug!(batches = staged.len(), "committing a group of batches");
    let keys: Vec<_> = staged.iter().map(|s| s.key().clone()).collect();
    let results = lake.commit(staged).await;
    for ((sender, result), key) in senders.into_iter().zip(results).zip(keys) {
        if result.is_ok() {
            landed
                .entry((key.source, key.entity))
                .or_default()
                .insert(key.batch_date);
        }
        // The receiver may be gone (its job was abandoned): nothing to tell.
        let _ = sender.send(result);
    }
    landed
}
