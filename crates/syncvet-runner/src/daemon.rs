//! The daemon: scheduled runs, catch-up, `/healthz` and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use syncvet_model::Chain;

use crate::RunnerError;
use crate::plan::Dates;
use crate::run::{Runner, SyncRequest};

struct Daemon {
    runner: Arc<Runner>,
    /// Held for the length of a sync: the daemon never runs two at once.
    syncing: Mutex<()>,
    registry: Registry,
    shutdown: CancellationToken,
}

/// Runs until `shutdown`: a catch-up sync at start, then one per cron tick,
/// each covering the last `sync.catch_up_days` batch dates (done partitions are
/// skipped, so a missed or partly failed night is completed by the next).
pub async fn run_daemon(
    runner: Arc<Runner>,
    shutdown: CancellationToken,
) -> Result<(), RunnerError> {
    let config = runner.config().clone();
    let listener = tokio::net::TcpListener::bind(&config.daemon.listen)
        .await
        .map_err(|source| RunnerError::Io {
            what: format!("binding daemon.listen {}", config.daemon.listen),
            source,
        })?;
    let registry = runner.metrics().registry(runner.client().clone());
    let daemon = Arc::new(Daemon {
        runner,
        syncing: Mutex::new(()),
        registry,
        shutdown: shutdown.clone(),
    });
    let addr = listener.local_addr().map_err(|source| RunnerError::Io {
        what: "daemon address".into(),
        source,
    })?;
    info!(%addr, "serving /healthz and /metrics");
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(daemon.clone());
    let http = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    let timezone = config.schedule.timezone;
    let scheduler = JobScheduler::new().await.map_err(RunnerError::Scheduler)?;
    let tick = daemon.clone();
    let job = Job::new_async_tz(config.schedule.cron.as_str(), timezone, move |_, _| {
        let daemon = tick.clone();
        Box::pin(async move { daemon.sync_once("scheduled").await })
    })
    .map_err(|_| {
        RunnerError::config(
            "schedule.cron",
            format!("`{}` is not a valid cron expression", config.schedule.cron),
        )
    })?;
    scheduler.add(job).await.map_err(RunnerError::Scheduler)?;
    scheduler.start().await.map_err(RunnerError::Scheduler)?;
    info!(cron = %config.schedule.cron, timezone = %config.schedule.timezone, "daemon scheduled");

    daemon.sync_once("catch-up").await;
    shutdown.cancelled().await;
    let mut scheduler = scheduler;
    if let Err(e) = scheduler.shutdown().await {
        warn!(error = %Chain(&e), "scheduler did not stop cleanly");
    }
    // Wait for a sync in progress to wind down (it sees the same token).
    let _idle = daemon.syncing.lock().await;
    let _ = http.await;
    info!("daemon stopped");
    Ok(())
}

impl Daemon {
    async fn sync_once(&self, why: &str) {
        let Ok(_guard) = self.syncing.try_lock() else {
            warn!(why, "a sync is still running; this one is skipped");
            return;
        };
        if self.shutdown.is_cancelled() {
            return;
        }
        let days = self.runner.config().sync.catch_up_days.max(1);
        let request = SyncRequest {
            command: "daemon",
            dates: Dates::Recent { days },
            practices: Vec::new(),
            entities: Vec::new(),
            force: false,
            progress: false,
        };
        info!(why, days, "sync starting");
        match self.runner.sync(&request, self.shutdown.clone()).await {
            Ok(report) => {
                let failed = report.failed().count();
                info!(run_id = %report.run_id, failed, skipped = report.skipped, "sync finished");
                if failed > 0 || !report.source_failures.is_empty() {
                    warn!(run_id = %report.run_id, "some partitions failed:\n{}", report.summary());
                }
            }
            Err(e) => error!(error = %Chain(&e), "sync could not start"),
        }
        // The night's maintenance: compaction, checkpoints, vacuum.
        if self.shutdown.is_cancelled() {
            return;
        }
        match self.runner.tables().maintain(&[]).await {
            Ok(tables) => {
                let failed = tables.iter().filter(|t| t.error.is_some()).count();
                info!(tables = tables.len(), failed, "maintenance finished");
            }
            Err(e) => error!(error = %Chain(&e), "maintenance could not start"),
        }
    }
}

async fn healthz(State(daemon): State<Arc<Daemon>>) -> impl IntoResponse {
    let busy = daemon.syncing.try_lock().is_err();
    let body = serde_json::json!({ "status": "ok", "sync_in_progress": busy });
    (StatusCode::OK, axum::Json(body))
}

async fn metrics(State(daemon): State<Arc<Daemon>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &daemon.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        ),
    }
}
