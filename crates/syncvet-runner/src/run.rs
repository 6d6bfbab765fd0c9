//! Running a plan: sources concurrently, partitions within a source as
//! configured, all under the client's one rate governor.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use syncvet_client::{ApiClient, Secret};
use syncvet_emulator::RunningEmulator;
use syncvet_lake::{CurrentUpdate, GroupCommitter, Lake, PartitionKey, TableMaintenance};
use syncvet_model::{Catalog, Entity, PageDecoder, SourceType};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::RunnerError;
use crate::config::{Config, parse_timezone};
use crate::job::{JobContext, Landing, sync_partition};
use crate::metrics::Metrics;
use crate::plan::{Dates, PartitionJob, Shard, Source, SourcePlan, plan, select_entities};
use crate::report::{
    PartitionReport, PartitionStatus, RunMaintenance, RunReport, SourceFailure, new_run_id,
};

/// Current tables merged at once: each merge is one core's work.
const CURRENT_MERGES: usize = 2;

/// One entity's current table after `rebuild-current`, or why it failed.
#[derive(Debug, Clone)]
pub struct CurrentRebuilt {
    /// The entity (`patients`).
    pub entity: String,
    /// What was done.
    pub done: CurrentUpdate,
}

/// One table's maintenance, or why it failed.
#[derive(Debug, Clone)]
pub struct TableMaintained {
    /// The table, relative to the lake root (`pims/patients`).
    pub table: String,
    /// What was done (nothing, when a step failed).
    pub done: TableMaintenance,
    /// The failure, if any.
    pub error: Option<String>,
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
    catalog: Catalog,
    client: ApiClient,
    lake: Lake,
    metrics: Arc<Metrics>,
    shard: Option<Shard>,
    // Kept so the in-process emulator lives as long as the runner.
    _emulator: Option<RunningEmulator>,
}

impl Runner {
    /// Loads the catalog, starts the embedded emulator if configured, opens
    /// the lake and builds the client; `shard` divides the rate budget.
    pub async fn start(mut config: Config, shard: Option<Shard>) -> Result<Runner, RunnerError> {
        let catalog = Catalog::load(config.sync.catalog_dir.as_deref())?;
        // Everything that can be wrong with the configuration is found
        // before anything is written or started: the secret, then the lake
        // URL (opening a local lake creates its folder).
        let secret = match config.emulator.enabled {
            true => None,
            false => Some(config.api.resolve_secret()?),
        };
        let lake = Lake::open(&config.lake)?;
        let (emulator, secret) = match secret {
            Some(secret) => (None, secret),
            None => {
                let settings = config.emulator.settings.clone();
                let emulator = RunningEmulator::start(settings.clone(), config.emulator.port)
                    .await
                    .map_err(|source| RunnerError::Io {
                        what: "starting the embedded emulator".into(),
                        source,
                    })?;
                info!(url = %emulator.url(), "embedded emulator listening");
                config.api.base_url = emulator.base_url();
                config.api.token_url = emulator.token_url();
                config.api.client_id = settings.client_id.clone();
                config.api.client_secret = Some(Secret::new(settings.client_secret.clone()));
                config.api.client_secret_env = None;
                config.api.client_secret_file = None;
                (Some(emulator), Secret::new(settings.client_secret))
            }
        };
        if let Some(shard) = shard {
            config.api.rate.requests_per_sec /= f64::from(shard.count);
        }
        let client = ApiClient::new(&config.api, secret)?;
        Ok(Runner {
            config,
            catalog,
            client,
            lake,
            metrics: Arc::default(),
            shard,
            _emulator: emulator,
        })
    }

    /// The configuration in force (emulator addresses filled in).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The lake.
    pub fn lake(&self) -> &Lake {
        &self.lake
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

    /// The sources to read: listed by the API, narrowed by the configuration,
    /// the request and the shard. Configured ids the API does not list fail.
    async fn sources(
        &self,
        request: &SyncRequest,
    ) -> Result<(Vec<Source>, Vec<SourceFailure>), RunnerError> {
        let listed = self.client.practices().await?;
        let wanted: Vec<&String> = if request.practices.is_empty() {
            self.config.sync.practices.iter().collect()
        } else {
            request.practices.iter().collect()
        };
        let default_tz =
            parse_timezone("sync.default_timezone", &self.config.sync.default_timezone)?;
        let in_shard = |id: &str| self.shard.is_none_or(|s| s.contains(id));
        let mut failures = Vec::new();
        for id in &wanted {
            if in_shard(id) && !listed.iter().any(|p| &&p.id == id) {
                failures.push(SourceFailure {
                    source_id: (*id).clone(),
                    error: "not listed by the API's practices".into(),
                });
            }
        }
        let mut sources = Vec::new();
        for practice in listed {
            if !(wanted.is_empty() || wanted.contains(&&practice.id)) || !in_shard(&practice.id) {
                continue;
            }
            let Some(source_type) = SourceType::from_api(&practice.data_source_type) else {
                failures.push(SourceFailure {
                    source_id: practice.id,
                    error: format!("unknown dataSourceType `{}`", practice.data_source_type),
                });
                continue;
            };
            if !practice.batch_sync_enabled {
                info!(practice = %practice.id, "batch sync disabled for this source; skipped");
                continue;
            }
            let time_zone = match practice
                .time_zone
                .as_deref()
                .map(str::parse::<chrono_tz::Tz>)
            {
                Some(Ok(tz)) => tz,
                Some(Err(_)) => {
                    warn!(practice = %practice.id, "unknown time zone; using sync.default_timezone");
                    default_tz
                }
                None => default_tz,
            };
            sources.push(Source {
                id: practice.id,
                source_type,
                time_zone,
            });
        }
        Ok((sources, failures))
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
        let names = if request.entities.is_empty() {
            &self.config.sync.entities
        } else {
            &request.entities
        };
        let entities = select_entities(&self.catalog, names)?;
        let (sources, mut source_failures) = self.sources(request).await?;

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
                    error: e.to_string(),
                }),
            }
        }
        let skipped = if request.force {
            0
        } else {
            self.drop_done(&mut plans).await?
        };
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
        let committer = GroupCommitter::new(&self.lake);
        let ctx = JobContext {
            client: &client,
            lake: &self.lake,
            committer: &committer,
            metrics: &self.metrics,
            run_id: &run_id,
            pages_in_flight: self.config.sync.pages_in_flight,
            abort: &abort,
        };
        let landings: Vec<Landing> = futures::stream::iter(plans)
            .map(|source_plan| self.sync_source(&ctx, source_plan, &shutdown, &progress))
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
        progress.finish_and_clear();
        // Every entity of the run, landed now or not: batches a crashed
        // run committed but never merged are absorbed here.
        let merging = Instant::now();
        let mut current = match shutdown.is_cancelled() {
            false => self.update_current(&entities, false).await,
            true => CurrentUpdate::default(),
        };
        let current_secs = merging.elapsed().as_secs_f64();
        current.absorb(between_groups.current);
        let mut maintenance = match self.config.lake.maintain_after_run {
            true if !shutdown.is_cancelled() => self.maintain_landed(&partitions).await,
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
            lake: self.lake.root_display(),
            interrupted: shutdown.is_cancelled(),
            skipped,
            source_failures,
            partitions,
            current,
            current_secs,
            maintenance,
        };
        let json = serde_json::to_vec_pretty(&report).expect("a run report serializes");
        match self.lake.put_run_report(&report.run_id, json.into()).await {
            Ok(path) => info!(run_id = %report.run_id, path, "run report written"),
            Err(e) => warn!(run_id = %report.run_id, error = %e, "run report could not be written"),
        }
        self.metrics.run_finished(&report);
        Ok(report)
    }

    /// Maintains the tables the run wrote, compacting the days it landed;
    /// a failure leaves the data as committed and is reported.
    async fn maintain_landed(&self, partitions: &[PartitionReport]) -> RunMaintenance {
        let mut days: BTreeMap<(SourceType, &str), BTreeSet<NaiveDate>> = BTreeMap::new();
        for p in partitions.iter().filter(|p| p.status.is_committed()) {
            let Some(source) = SourceType::from_api(&p.source_type) else {
                continue;
            };
            days.entry((source, &p.entity))
                .or_default()
                .insert(p.batch_date);
        }
        let mut total = RunMaintenance::default();
        for ((source, entity), days) in days {
            let tables = match self.lake.maintain(source, entity, Some(&days)).await {
                Ok(tables) => tables,
                Err(e) => vec![(entity.to_owned(), Err(e))],
            };
            for (table, result) in tables {
                match result {
                    Ok(done) => {
                        total.compacted += done.compacted;
                        total.files_vacuumed += done.files_vacuumed;
                    }
                    Err(e) => {
                        warn!(table, error = %e, "maintenance failed; the data is committed");
                        total.errors.push(format!("{table}: {e}"));
                    }
                }
            }
        }
        total
    }

    /// Brings the current tables of `entities` up to their history tables
    /// (rebuilds them from it when `rebuild`); a failure leaves the
    /// history as committed and the batches pending, and is reported.
    async fn update_current(&self, entities: &[Arc<Entity>], rebuild: bool) -> CurrentUpdate {
        let updates: Vec<CurrentUpdate> = futures::stream::iter(entities.to_vec())
            .map(|entity| {
                // A task each, so that two merges use two cores (the
                // futures of one task take turns on one thread).
                let lake = self.lake.clone();
                let name = entity.name.clone();
                let merge = tokio::spawn(async move {
                    match rebuild {
                        false => lake.update_current(entity.source, &entity.name).await,
                        true => lake.rebuild_current(entity.source, &entity.name).await,
                    }
                    .map_err(|e| {
                        (
                            format!("current/{}/{}", entity.source.as_str(), entity.name),
                            e.to_string(),
                        )
                    })
                });
                async move {
                    let (table, error) = match merge.await {
                        Ok(Ok(update)) => return update,
                        Ok(Err(failed)) => failed,
                        Err(e) => (
                            format!("current table of {name}"),
                            format!("the merge task failed: {e}"),
                        ),
                    };
                    warn!(
                        table,
                        error, "the current table could not be updated; the history is committed"
                    );
                    CurrentUpdate {
                        errors: vec![format!("{table}: {error}")],
                        ..CurrentUpdate::default()
                    }
                }
            })
            .buffered(CURRENT_MERGES)
            .collect()
            .await;
        let mut total = CurrentUpdate::default();
        for update in updates {
            total.absorb(update);
        }
        total
    }

    /// `syncvet-etl rebuild-current`: the current tables of `entities`
    /// (empty: those of `sync.entities`, or all) rebuilt from the history
    /// tables alone.
    pub async fn rebuild_current(
        &self,
        entities: &[String],
    ) -> Result<Vec<CurrentRebuilt>, RunnerError> {
        let names = if entities.is_empty() {
            &self.config.sync.entities
        } else {
            entities
        };
        let mut rows = Vec::new();
        for entity in select_entities(&self.catalog, names)? {
            let done = self
                .update_current(std::slice::from_ref(&entity), true)
                .await;
            rows.push(CurrentRebuilt {
                entity: entity.name.clone(),
                done,
            });
        }
        Ok(rows)
    }

    /// `syncvet-etl maintain`: compaction, checkpoints and vacuum of every
    /// table of `entities` (empty: those of `sync.entities`, or all).
    pub async fn maintain(&self, entities: &[String]) -> Result<Vec<TableMaintained>, RunnerError> {
        let names = if entities.is_empty() {
            &self.config.sync.entities
        } else {
            entities
        };
        let mut rows = Vec::new();
        for entity in select_entities(&self.catalog, names)? {
            for (table, result) in self
                .lake
                .maintain(entity.source, &entity.name, None)
                .await?
            {
                let (done, error) = match result {
                    Ok(done) => (done, None),
                    Err(e) => {
                        warn!(table, error = %e, "maintenance of a table failed");
                        (TableMaintenance::default(), Some(e.to_string()))
                    }
                };
                rows.push(TableMaintained { table, done, error });
            }
        }
        Ok(rows)
    }

    /// Removes partitions the lake already has; returns how many.
    async fn drop_done(&self, plans: &mut [SourcePlan]) -> Result<u64, RunnerError> {
        let kinds: BTreeSet<(SourceType, String)> = plans
            .iter()
            .flat_map(|p| p.jobs.iter().map(|j| (j.key.source, j.key.entity.clone())))
            .collect();
        let mut done: HashSet<PartitionKey> = HashSet::new();
        for (source, entity) in kinds {
            done.extend(self.lake.done_partitions(source, &entity).await?);
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

    /// Checks the configuration end to end without writing: the token, the
    /// sources, and the first page of each entity of one source, decoded.
    pub async fn validate(
        &self,
        practice: Option<&str>,
    ) -> Result<Vec<(String, Result<String, String>)>, RunnerError> {
        self.check_auth().await?;
        let request = SyncRequest {
            command: "validate",
            dates: Dates::Recent { days: 1 },
            practices: practice.map(|p| vec![p.to_owned()]).unwrap_or_default(),
            entities: Vec::new(),
            force: false,
            progress: false,
        };
        let (sources, failures) = self.sources(&request).await?;
        if let Some(f) = failures.first() {
            return Err(RunnerError::config(
                "sync.practices",
                format!("{}: {}", f.source_id, f.error),
            ));
        }
        let Some(source) = sources.first() else {
            return Err(RunnerError::config(
                "sync.practices",
                "the API lists no source to read",
            ));
        };
        let names = &self.config.sync.entities;
        let mut results = Vec::new();
        let date =
            Dates::Recent { days: 1 }.for_source(source, Utc::now(), self.config.sync.lag_days)[0];
        for entity in select_entities(&self.catalog, names)?
            .into_iter()
            .filter(|e| e.source == source.source_type)
        {
            let mut stream = self.client.batch(&source.id, &entity.name, date);
            let outcome = match stream.next().await {
                Some(Ok(syncvet_client::PageEvent::Page(page))) => {
                    match PageDecoder::new(entity.clone(), &source.id).decode(&page.items) {
                        Ok(d) => Ok(format!(
                            "{} rows, {} rejects, {} unknown keys (first page of {} {date})",
                            d.batch.num_rows(),
                            d.rejects.len(),
                            d.unknown_keys.len(),
                            source.id
                        )),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Some(Ok(syncvet_client::PageEvent::Restarted)) => Ok("restarted".into()),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("no page".into()),
            };
            results.push((entity.name.clone(), outcome));
        }
        let probed = select_entities(&self.catalog, names)?
            .into_iter()
            .find(|e| e.source == source.source_type);
        if let Some(entity) = probed {
            let outcome = self
                .probe_continuation(&source.id, &entity.name, date)
                .await;
            results.push(("(continuation)".to_string(), outcome));
        }
        Ok(results)
    }

    /// Reads the first two pages of one record each: a server that ignores
    /// the continuation parameter serves the first page again, which the
    /// page stream reports naming `api.params.continuation_token`.
    async fn probe_continuation(
        &self,
        source: &str,
        entity: &str,
        date: NaiveDate,
    ) -> Result<String, String> {
        let mut stream = self.client.batch(source, entity, date).with_page_size(1);
        let mut pages = 0;
        while pages < 2 {
            match stream.next().await {
                Some(Ok(syncvet_client::PageEvent::Page(_))) => pages += 1,
                Some(Ok(syncvet_client::PageEvent::Restarted)) => pages = 0,
                Some(Err(e)) => return Err(e.to_string()),
                None => break,
            }
        }
        Ok(match pages {
            2 => format!(
                "pages 1 and 2 of {source}/{entity}/{date} differ: the continuation token is followed"
            ),
            _ => format!("not checked: {source}/{entity}/{date} has fewer than two records"),
        })
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
