//! Running a plan: sources concurrently, partitions within a source as
//! configured, all under the client's one rate governor.

use std::collections::{BTreeSet, HashSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use syncvet_client::ApiClient;
use syncvet_lake::{BetweenGroups, CurrentUpdate, GroupCommitter, PartitionKey};
use syncvet_model::{Chain, Entity, SourceType};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::RunnerError;
use crate::config::Config;
use crate::job::{JobContext, Landing, sync_partition};
use crate::metrics::Metrics;
use crate::plan::{Dates, PartitionJob, Shard, SourcePlan, discover, plan, select_entities};
use crate::report::{
    PartitionReport, PartitionStatus, RunMaintenance, RunReport, SourceFailure, new_run_id,
};
use crate::tables::Tables;

/// What a run will sync, and what it could not plan.
struct Planned {
    entities: Vec<Arc<Entity>>,
    plans: Vec<SourcePlan>,
    source_failures: Vec<SourceFailure>,
    skipped: u64,
}

/// What to sync.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// `run`, `backfill` or `daemon`: recorded in the report.
    pub command: &'static str,
    /// The batch dates.
    pub dates: Dates,
    /// Only these sources (empty: those of `sync.practices`, or all).
    pub practices: Vec<String>,
    /// Only these entities (empty: those of `sync.entities`, or all).
    pub entities: Vec<String>,
    /// Rewrite partitions that are already done.
    pub force: bool,
    /// Show a progress bar (only ever drawn on a terminal).
    pub progress: bool,
}

/// Everything a sync needs, built once per process.
pub struct Runner {
    config: Config,
    tables: Tables,
    client: ApiClient,
    metrics: Arc<Metrics>,
    shard: Option<Shard>,
}

impl Runner {
    /// Loads the catalog, opens the lake and builds the client for the API
    /// that `config.api` names; `shard` divides the rate budget.
    pub async fn start(mut config: Config, shard: Option<Shard>) -> Result<Runner, RunnerError> {
        // Everything that can be wrong with the configuration is found
        // before anything is written: the secret, then the catalog and the
        // lake URL (opening a local lake creates its folder).
        let secret = config.api.resolve_secret()?;
        let tables = Tables::open(&config)?;
        if let Some(shard) = shard {
            config.api.rate.requests_per_sec /= f64::from(shard.count);
        }
        let client = ApiClient::new(&config.api, secret)?;
        Ok(Runner {
            config,
            tables,
            client,
            metrics: Arc::default(),
            shard,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The catalog and the lake.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The API client.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Fails early (exit 1) when the credentials are refused.
    pub async fn check_auth(&self) -> Result<(), RunnerError> {
        Ok(self.client.check_auth().await?)
    }

    /// Runs one sync to the end, or until `shutdown`; writes the report to
    /// the lake and returns it. Errors only when nothing could start.
    pub async fn sync(
        &self,
        request: &SyncRequest,
        shutdown: CancellationToken,
    ) -> Result<RunReport, RunnerError> {
        request.dates.validate()?;
        let started_at = Utc::now();
        let run_id = new_run_id(started_at);
        let Planned {
            entities,
            plans,
            source_failures,
            skipped,
        } = self.plan_run(request, started_at).await?;
        let total: usize = plans.iter().map(|p| p.jobs.len()).sum();
        info!(
            run_id,
            sources = plans.len(),
            partitions = total,
            skipped,
            "run planned"
        );
        self.metrics.run_started();
        let progress = progress_bar(request.progress, total as u64);
        let (partitions, between_groups) = self.land(&run_id, plans, &shutdown, &progress).await;
        progress.finish_and_clear();
        // Every entity of the run, landed now or not: batches a crashed
        // run committed but never merged are absorbed here.
        let merging = Instant::now();
        let mut current = match shutdown.is_cancelled() {
            false => self.tables.update_current(&entities, false).await,
            true => CurrentUpdate::default(),
        };
        let current_secs = merging.elapsed().as_secs_f64();
        current.absorb(between_groups.current);
        let mut maintenance = match self.config.lake.maintain_after_run {
            true if !shutdown.is_cancelled() => self.tables.maintain_landed(&partitions).await,
            _ => RunMaintenance::default(),
        };
        maintenance.compacted += between_groups.compacted;
        maintenance.errors.extend(between_groups.errors);

        let finished_at = Utc::now();
        let report = RunReport {
            run_id,
            command: request.command.to_owned(),
            shard: self.shard.map(|s| s.to_string()),
            started_at,
            finished_at,
            duration_secs: (finished_at - started_at).as_seconds_f64(),
            lake: self.tables.lake().root_display(),
            interrupted: shutdown.is_cancelled(),
            skipped,
            source_failures,
            partitions,
            current,
            current_secs,
            maintenance,
        };
        self.publish(&report).await;
        Ok(report)
    }

    /// What a run will sync: the entities, each source's partitions not
    /// yet in the lake (all of them with `force`), the sources that failed.
    async fn plan_run(
        &self,
        request: &SyncRequest,
        started_at: DateTime<Utc>,
    ) -> Result<Planned, RunnerError> {
        let names = if request.entities.is_empty() {
            &self.config.sync.entities
        } else {
            &request.entities
        };
        let entities = select_entities(self.tables.catalog(), names)?;
        let (sources, mut source_failures) = discover(
            &self.client,
            &self.config.sync,
            self.shard,
            &request.practices,
        )
        .await?;
        let mut plans = Vec::new();
        for source in &sources {
            match plan(
                std::slice::from_ref(source),
                &entities,
                request.dates,
                started_at,
                self.config.sync.lag_days,
            ) {
                Ok(mut p) => plans.append(&mut p),
                Err(e) => source_failures.push(SourceFailure {
                    source_id: source.id.clone(),
                    error: Chain(&e).to_string(),
                }),
            }
        }
        let skipped = if request.force {
            0
        } else {
            self.drop_done(&mut plans).await?
        };
        Ok(Planned {
            entities,
            plans,
            source_failures,
            skipped,
        })
    }

    /// Syncs the planned partitions, `sync.concurrency` sources at once, and
    /// commits them in groups; on `shutdown`, no partition starts and those
    /// in flight get the grace period. Returns each partition's report
    /// once its group is committed, and what was done between groups.
    async fn land(
        &self,
        run_id: &str,
        plans: Vec<SourcePlan>,
        shutdown: &CancellationToken,
        progress: &ProgressBar,
    ) -> (Vec<PartitionReport>, BetweenGroups) {
        let abort = CancellationToken::new();
        let grace = Duration::from_secs(self.config.daemon.shutdown_grace_secs);
        let escalate = tokio::spawn({
            let (shutdown, abort) = (shutdown.clone(), abort.clone());
            async move {
                shutdown.cancelled().await;
                warn!(
                    grace_secs = grace.as_secs(),
                    "stopping: no new partitions; in-flight ones get the grace period"
                );
                tokio::time::sleep(grace).await;
                abort.cancel();
            }
        });
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.config.sync.run_deadline_secs);
        let client = self.client.clone().with_deadline(deadline);
        let committer = GroupCommitter::new(self.tables.lake());
        let ctx = JobContext {
            client: &client,
            lake: self.tables.lake(),
            committer: &committer,
            metrics: &self.metrics,
            run_id,
            pages_in_flight: self.config.sync.pages_in_flight,
            abort: &abort,
        };
        let landings: Vec<Landing> = futures::stream::iter(plans)
            .map(|source_plan| self.sync_source(&ctx, source_plan, shutdown, progress))
            .buffer_unordered(self.config.sync.concurrency)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        // The batches still waiting are committed now, interrupted or not:
        // they are whole, and a commit is quick.
        let between_groups = committer.finish().await;
        let mut partitions = Vec::with_capacity(landings.len());
        for landing in landings {
            partitions.push(landing.landed(&self.metrics).await);
        }
        escalate.abort();
        (partitions, between_groups)
    }

    /// Writes the report to the lake (a failure is logged: the data is
    /// committed) and counts the run in the metrics.
    async fn publish(&self, report: &RunReport) {
        let json = serde_json::to_vec_pretty(report).expect("a run report serializes");
        match self
            .tables
            .lake()
            .put_run_report(&report.run_id, json.into())
            .await
        {
            Ok(path) => info!(run_id = %report.run_id, path, "run report written"),
            Err(e) => {
                warn!(run_id = %report.run_id, error = %Chain(&e), "run report could not be written")
            }
        }
        self.metrics.run_finished(report);
    }

    /// Removes partitions the lake already has; returns how many.
    async fn drop_done(&self, plans: &mut [SourcePlan]) -> Result<u64, RunnerError> {
        let kinds: BTreeSet<(SourceType, String)> = plans
            .iter()
            .flat_map(|p| p.jobs.iter().map(|j| (j.key.source, j.key.entity.clone())))
            .collect();
        let mut done: HashSet<PartitionKey> = HashSet::new();
        for (source, entity) in kinds {
            done.extend(self.tables.lake().done_partitions(source, &entity).await?);
        }
        let mut skipped = 0;
        for plan in plans {
            let before = plan.jobs.len();
            plan.jobs.retain(|j| !done.contains(&j.key));
            skipped += (before - plan.jobs.len()) as u64;
        }
        Ok(skipped)
    }

    async fn sync_source(
        &self,
        ctx: &JobContext<'_>,
        source_plan: SourcePlan,
        shutdown: &CancellationToken,
        progress: &ProgressBar,
    ) -> Vec<Landing> {
        // Once the source answers 403, its other partitions fail without a request.
        let forbidden: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let forbidden = &forbidden;
        tracing::debug!(source = %source_plan.source.id, partitions = source_plan.jobs.len(), "source started");
        futures::stream::iter(source_plan.jobs)
            .map(|job: PartitionJob| async move {
                if shutdown.is_cancelled() {
                    return None;
                }
                let refused = forbidden.lock().expect("not poisoned").clone();
                let landing = match refused {
                    Some(error) => Landing {
                        report: forbidden_report(job.key, error),
                        pending: None,
                    },
                    None => sync_partition(ctx, job).await,
                };
                if let PartitionStatus::Forbidden { error } = &landing.report.status {
                    *forbidden.lock().expect("not poisoned") = Some(error.clone());
                }
                progress.inc(1);
                let rows = self.metrics.rows_written();
                let rate = rows as f64 / progress.elapsed().as_secs_f64().max(0.001);
                progress.set_message(format!("{rows} rows, {rate:.0} rows/s"));
                Some(landing)
            })
            .buffer_unordered(self.config.sync.entity_concurrency)
            .filter_map(|landing| async move { landing })
            .collect()
            .await
    }
}

fn forbidden_report(key: PartitionKey, error: String) -> PartitionReport {
    PartitionReport::new(
        key,
        PartitionStatus::Forbidden { error },
        Duration::ZERO,
        &Default::default(),
        Default::default(),
    )
}

fn progress_bar(wanted: bool, total: u64) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} partitions, {msg}, ETA {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}
