//! The runner in-process against the embedded emulator, composed as the
//! binary composes it. The daemon:
//! catch-up at start, cron ticks that never overlap, /healthz, /metrics, and
//! a clean stop. `run` without `--date`: the missed recent nights, and only
//! those.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use syncvet_emulator::RunningEmulator;
use syncvet_etl::Settings;
use syncvet_model::SourceType;
use syncvet_runner::{Dates, RunReport, Runner, SyncRequest, run_daemon};
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The embedded default with `overrides`, its emulator started as the
/// binary starts it (it serves while the handle lives).
async fn embedded(overrides: &[(&str, &str)]) -> (Settings, RunningEmulator) {
    let env: HashMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut settings = Settings::load(None, env).unwrap();
    let emulator = settings.start_emulator().await.unwrap().unwrap();
    (settings, emulator)
}

fn reports(lake: &std::path::Path) -> Vec<RunReport> {
    let Ok(entries) = std::fs::read_dir(lake.join("_runs")) else {
        return Vec::new();
    };
    let mut reports: Vec<RunReport> = entries
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    reports.sort_by_key(|r| r.started_at);
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_catches_up_serves_metrics_and_stops_cleanly() {
    let lake = tempfile::tempdir().unwrap();
    let port = free_port();
    let (settings, _emulator) = embedded(&[
        ("SYNCVET_ETL__LAKE__URL", lake.path().to_str().unwrap()),
        ("SYNCVET_ETL__SCHEDULE__CRON", "*/2 * * * * *"),
        ("SYNCVET_ETL__SYNC__CATCH_UP_DAYS", "2"),
        ("SYNCVET_ETL__DAEMON__LISTEN", &format!("127.0.0.1:{port}")),
        (
            "SYNCVET_ETL__SYNC__ENTITIES",
            "patients,sites,supplier_products",
        ),
        ("SYNCVET_ETL__EMULATOR__SETTINGS__ROWS_PER_DAY", "50"),
        ("SYNCVET_ETL__EMULATOR__SETTINGS__LATENCY_MS", "20"),
    ])
    .await;
    let runner = Arc::new(Runner::start(settings.config, None).await.unwrap());
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run_daemon(runner, shutdown.clone()));

    // Catch-up: 2 dates x (3 PIMS x 2 entities + 1 supplier x 1 entity).
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut committed = 0;
    for _ in 0..200 {
        committed = reports(lake.path())
            .iter()
            .flat_map(|r| &r.partitions)
            .filter(|p| p.status.is_committed())
            .count();
        if committed >= 14 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(committed, 14, "the catch-up sync commits both dates");

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert!(value("syncvet_rows_written_total") > 0.0);
    assert_eq!(
        value("syncvet_partitions_total{outcome=\"committed\"}"),
        14.0
    );
    assert!(value("syncvet_api_requests_total{status=\"200\"}") >= 14.0);

    // Let a few cron ticks pass: they find everything done, and runs never overlap.
    tokio::time::sleep(Duration::from_secs(5)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), daemon)
        .await
        .expect("stops within 10 s")
        .unwrap()
        .unwrap();
    let runs = reports(lake.path());
    assert!(
        runs.len() >= 2,
        "the schedule ran after the catch-up: {} runs",
        runs.len()
    );
    for pair in runs.windows(2) {
        assert!(
            pair[0].finished_at <= pair[1].started_at,
            "runs overlap: {} and {}",
            pair[0].run_id,
            pair[1].run_id
        );
    }
    assert!(
        runs[1..]
            .iter()
            .all(|r| r.partitions.is_empty() && r.skipped == 14),
        "later runs skip what is done"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the HTTP endpoint is closed"
    );
}

/// (source id, entity, batch date) of a report's committed partitions.
type Partition = (String, String, NaiveDate);

fn committed(report: &RunReport) -> BTreeSet<Partition> {
    report
        .partitions
        .iter()
        .filter(|p| p.status.is_committed())
        .map(|p| (p.source_id.clone(), p.entity.clone(), p.batch_date))
        .collect()
}

/// A nightly `run` that missed some nights: the lake holds some of the last
/// `catch_up_days` dates, and the next `run` without `--date` lands exactly
/// the others; `--force` without `--date` rewrites the latest date only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_a_date_lands_exactly_the_missing_recent_dates() {
    let lake = tempfile::tempdir().unwrap();
    let days = 4u64;
    let (loaded, _emulator) = embedded(&[
        ("SYNCVET_ETL__LAKE__URL", lake.path().to_str().unwrap()),
        ("SYNCVET_ETL__SYNC__CATCH_UP_DAYS", &days.to_string()),
        ("SYNCVET_ETL__SYNC__ENTITIES", "patients,supplier_products"),
        ("SYNCVET_ETL__EMULATOR__SETTINGS__ROWS_PER_DAY", "20"),
    ])
    .await;
    let settings = loaded.emulator.settings.clone();
    let runner = Runner::start(loaded.config, None).await.unwrap();
    let sync = async |dates: Dates, force: bool| {
        let request = SyncRequest {
            command: "run",
            dates,
            practices: Vec::new(),
            entities: Vec::new(),
            force,
            progress: false,
        };
        let report = runner
            .sync(&request, CancellationToken::new())
            .await
            .unwrap();
        assert!(report.all_done(), "{}", report.summary());
        report
    };
    let run = |force: bool| Dates::for_run(None, force, runner.config().sync.catch_up_days);

    // Two nights landed, at UTC today - 4 and - 3: whatever each source's
    // time zone, one or both are in its window and at least one date of the
    // window is missing.
    let today = Utc::now().date_naive();
    let seeded = sync(
        Dates::Range(today - Days::new(4), today - Days::new(3)),
        false,
    )
    .await;
    let in_lake = committed(&seeded);
    assert_eq!(in_lake.len(), 8, "2 dates x 4 sources");

    let caught_up = sync(run(false), false).await;
    // The window, worked out here from the run's own clock: the last `days`
    // dates up to yesterday in each source's time zone.
    let mut window = BTreeSet::new();
    for practice in syncvet_emulator::sources(&settings) {
        let tz: chrono_tz::Tz = practice.time_zone.parse().unwrap();
        let entity = match practice.source_type {
            SourceType::Pims => "patients",
            SourceType::Supplier => "supplier_products",
        };
        let yesterday = caught_up.started_at.with_timezone(&tz).date_naive() - Days::new(1);
        for back in 0..days {
            let date = yesterday - Days::new(back);
            window.insert((practice.id.clone(), entity.to_owned(), date));
        }
    }
    let missing: BTreeSet<Partition> = window.difference(&in_lake).cloned().collect();
    assert!(!missing.is_empty() && missing.len() < window.len());
    assert_eq!(
        committed(&caught_up),
        missing,
        "exactly the missing dates are landed"
    );
    assert_eq!(
        caught_up.partitions.len(),
        missing.len(),
        "nothing else tried"
    );
    assert_eq!(
        caught_up.skipped as usize,
        window.intersection(&in_lake).count(),
        "the dates already in the lake are skipped"
    );

    let again = sync(run(false), false).await;
    assert!(
        again.partitions.is_empty(),
        "the next run has nothing to do"
    );
    assert_eq!(again.skipped, days * 4);

    // --force without --date: the latest date of each source, not the window.
    let forced = sync(run(true), true).await;
    let latest: BTreeSet<Partition> = committed(&forced);
    assert_eq!(latest.len(), 4, "one date per source: {latest:?}");
    for (source, entity, date) in &latest {
        let newest = window
            .iter()
            .filter(|(s, e, _)| s == source && e == entity)
            .map(|(_, _, d)| *d)
            .max();
        assert!(
            Some(*date) >= newest,
            "{source} {entity}: forced {date}, window ends {newest:?}"
        );
    }
}
