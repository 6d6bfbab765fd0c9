//! [`GroupCommitter`]: lands the batches a run finishes in groups, so the
//! commits per table in a night follow the length of the night, not the
//! number of sources.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{CommitSummary, Lake, LakeError, StagedBatch};

type Submission = (
    StagedBatch,
    oneshot::Sender<Result<CommitSummary, LakeError>>,
);

/// Collects staged batches and commits them together: once
/// `commit_group_batches` are waiting, once the oldest has waited
/// `commit_interval_secs`, and at [`GroupCommitter::finish`]. A crash loses
/// at most the batches waiting (their files are in no commit, so no reader
/// sees them), which the re-run lands again.
pub struct GroupCommitter {
    tx: mpsc::UnboundedSender<Submission>,
    task: JoinHandle<()>,
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
        let task = tokio::spawn(run(lake.clone(), rx, interval, max));
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

    /// Commits everything still waiting and stops.
    pub async fn finish(self) {
        drop(self.tx);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the group committer stopped abnormally");
        }
    }
}

async fn run(
    lake: Lake,
    mut rx: mpsc::UnboundedReceiver<Submission>,
    interval: Duration,
    max: usize,
) {
    let mut waiting: Vec<Submission> = Vec::new();
    let mut due = Instant::now() + interval;
    loop {
        tokio::select! {
            received = rx.recv() => match received {
                Some(submission) => {
                    if waiting.is_empty() {
                        due = Instant::now() + interval;
                    }
                    waiting.push(submission);
                    if waiting.len() >= max {
                        commit(&lake, &mut waiting).await;
                    }
                }
                None => {
                    commit(&lake, &mut waiting).await;
                    return;
                }
            },
            () = tokio::time::sleep_until(due), if !waiting.is_empty() => {
                commit(&lake, &mut waiting).await;
            }
        }
    }
}

async fn commit(lake: &Lake, waiting: &mut Vec<Submission>) {
    if waiting.is_empty() {
        return;
    }
    let (staged, senders): (Vec<StagedBatch>, Vec<_>) = std::mem::take(waiting).into_iter().unzip();
    tracing::debug!(batches = staged.len(), "committing a group of batches");
    let results = lake.commit(staged).await;
    for (sender, result) in senders.into_iter().zip(results) {
        // The receiver may be gone (its job was abandoned): nothing to tell.
        let _ = sender.send(result);
    }
}
