//! The daemon in-process against the embedded emulator: catch-up at start,
//! cron ticks that never overlap, /healthz, /metrics, and a clean stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use syncvet_runner::{Config, RunReport, Runner, run_daemon};
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    let env: HashMap<String, String> = [
        ("SYNCVET_ETL__LAKE__URL", lake.path().to_str().unwrap()),
        ("SYNCVET_ETL__SCHEDULE__CRON", "*/2 * * * * *"),
        ("SYNCVET_ETL__SCHEDULE__CATCH_UP_DAYS", "2"),
        ("SYNCVET_ETL__DAEMON__LISTEN", &format!("127.0.0.1:{port}")),
        (
            "SYNCVET_ETL__SYNC__ENTITIES",
            "patients,sites,supplier_products",
        ),
        ("SYNCVET_ETL__EMULATOR__SETTINGS__ROWS_PER_DAY", "50"),
        ("SYNCVET_ETL__EMULATOR__SETTINGS__LATENCY_MS", "20"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::load(None, env).unwrap();
    let runner = Arc::new(Runner::start(config, None).await.unwrap());
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
