//! Issue 6: one behaviour suite, written once as functions of a lake URL,
//! run against a local folder, S3 (SeaweedFS) and Azure (Azurite); plus the
//! S3 restart mid-run and two runs racing to commit the same partitions.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use syncvet_e2e::{Etl, Listing, Store, Truth, assert_lake_matches, dates, latest_report};

/// S3 tests share one server; the restart test takes it for itself.
static S3_SERVER: RwLock<()> = RwLock::new(());

/// The settings of the suite: dirty and drifting records on, so quarantine
/// and drift are exercised, and small pages so partitions take several.
fn etl(url: &str) -> Etl {
    Etl::new(url)
        .emu("pims_sources", 2)
        .emu("supplier_sources", 1)
        .emu("rows_per_day", 40)
        .emu("dirty_rate", 0.05)
        .emu("drift_rate", 0.05)
        .env("SYNCVET_ETL__API__PAGE_SIZE", 25)
}

const FROM: &str = "2026-10-05";
const TO: &str = "2026-10-06";

fn truth(etl: &Etl) -> Truth {
    Truth::new(&etl.emulator_settings(), &dates(FROM, 2), &[], &[])
}

fn backfill(etl: Etl) -> Etl {
    etl.args(["backfill", "--from", FROM, "--to", TO])
}

/// Write a run, read it back independently; quarantine and the commits agree.
pub fn write_and_read_back(url: &str) {
    let etl = etl(url);
    backfill(etl.clone()).run().expect_code(0);
    let truth = truth(&etl);
    let reading = assert_lake_matches(url, &truth);
    let listing = Listing::of(url);
    // A clean run leaves no file that no commit added.
    listing.assert_consistent();
    let rejected: u64 = listing
        .batches
        .values()
        .map(|m| m["rejected"].as_u64().unwrap())
        .sum();
    assert!(rejected > 0, "dirty records reached quarantine");
    let quarantined: u64 = listing
        .partitions()
        .iter()
        .map(|p| reading.quarantined(p))
        .sum();
    assert_eq!(quarantined, rejected);
    // The quarantine files carry the raw record and the reason.
    let q = reading
        .folders
        .iter()
        .find(|(k, _)| k.starts_with("_quarantine/"))
        .expect("a quarantine folder")
        .1;
    let columns: Vec<&str> = q["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for column in ["raw", "field", "reason"] {
        assert!(columns.contains(&column), "quarantine columns {columns:?}");
    }
    let report = latest_report(url);
    let reported: u64 = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rejects"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, rejected, "the run report counts the same rejects");
    for m in listing.batches.values() {
        assert_eq!(
            m["source_total"].as_u64(),
            Some(m["rows"].as_u64().unwrap() + m["rejected"].as_u64().unwrap())
        );
        assert_eq!(m["run_id"], report["run_id"]);
    }
}

/// A re-run writes nothing; `--force` rewrites to identical rows.
pub fn rerun_is_idempotent_and_force_is_identical(url: &str) {
    let etl = etl(url);
    backfill(etl.clone()).run().expect_code(0);
    let first = assert_lake_matches(url, &truth(&etl));
    let before = Listing::of(url);
    backfill(etl.clone()).run().expect_code(0);
    assert_eq!(
        latest_report(url)["skipped"],
        truth(&etl).totals.len() as u64
    );
    let after = Listing::of(url);
    assert_eq!(after.batches, before.batches, "a re-run commits nothing");
    backfill(etl.clone()).args(["--force"]).run().expect_code(0);
    let forced = assert_lake_matches(url, &truth(&etl));
    assert_eq!(forced.data(), first.data(), "identical rows after --force");
    assert_eq!(
        forced.folders.len(),
        first.folders.len(),
        "the same quarantine folders"
    );
}

/// SIGKILL mid-run, then a re-run: complete and consistent.
pub fn crash_then_rerun(url: &str) {
    let etl = etl(url)
        .emu("latency_ms", 40)
        .env("SYNCVET_ETL__SYNC__CONCURRENCY", 2)
        // Groups committed every half second, so the kill lands between
        // and during commits.
        .env("SYNCVET_ETL__LAKE__COMMIT_INTERVAL_SECS", 0.5);
    let mut running = backfill(etl.clone()).spawn();
    // Killed once a few partitions are in, so it dies with others in flight.
    let started = Instant::now();
    while Listing::of(url).partitions().len() < 3 {
        assert!(
            !running.has_exited(),
            "the backfill ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing committed within 60 s"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    running.signal("KILL");
    let out = running.wait(Duration::from_secs(10));
    assert_eq!(
        out.code, None,
        "killed by the signal, not finished: {}",
        out.stdout
    );
    let listing = Listing::of(url);
    let problems = listing.commit_violations(false);
    assert!(
        problems.is_empty(),
        "committed partitions intact after SIGKILL:\n{}",
        problems.join("\n")
    );
    backfill(etl.clone()).run().expect_code(0);
    assert_lake_matches(url, &truth(&etl));
}

/// Between two nights the catalog widens `weight` (decimal(9,3) to
/// decimal(12,4)) and gains a field: the second run takes the table along
/// (its first night's files rewritten in the new type), and the Python
/// readers (deltalake, Polars) read one table of one type with every row.
pub fn a_widened_catalog_is_read_as_one_type(url: &str) {
    let etl = etl(url);
    etl.clone()
        .args(["run", "--date", FROM])
        .run()
        .expect_code(0);
    let catalog = tempfile::tempdir().unwrap();
    let embedded = std::fs::read_to_string(
        syncvet_e2e::workspace_dir().join("crates/syncvet-model/catalog/pims/patients.toml"),
    )
    .unwrap();
    let widened = embedded.replace(
        "key = \"weight\"\ntype = \"decimal(9,3)\"",
        "key = \"weight\"\ntype = \"decimal(12,4)\"",
    );
    assert_ne!(widened, embedded, "the catalog's weight line moved");
    std::fs::write(
        catalog.path().join("patients.toml"),
        format!("{widened}\n[[fields]]\nkey = \"tattooCode\"\ntype = \"string\"\n"),
    )
    .unwrap();
    etl.clone()
        .env("SYNCVET_ETL__SYNC__CATALOG_DIR", catalog.path().display())
        .args(["run", "--date", TO])
        .run()
        .expect_code(0);
    let reading = assert_lake_matches(url, &truth(&etl));
    let table = &reading.tables["pims/patients"];
    assert_eq!(table["schema"]["weight"], "decimal128(12, 4)", "{table}");
    assert_eq!(table["schema"]["tattoo_code"], "string", "{table}");
    assert_eq!(
        table["file_schema_mismatches"],
        serde_json::json!([]),
        "every file has the table's types"
    );
    assert_eq!(table["rows"], table["polars_rows"]);
}

macro_rules! behaviour_suite {
    ($store:ident, $variant:expr, $lock:expr) => {
        mod $store {
            use super::*;

            #[test]
            fn write_and_read_back() {
                let _guard = $lock;
                let lake = $variant.lake("read-back");
                super::write_and_read_back(&lake.url);
            }

            #[test]
            fn rerun_is_idempotent_and_force_is_identical() {
                let _guard = $lock;
                let lake = $variant.lake("rerun");
                super::rerun_is_idempotent_and_force_is_identical(&lake.url);
            }

            #[test]
            fn a_widened_catalog_is_read_as_one_type() {
                let _guard = $lock;
                let lake = $variant.lake("widen");
                super::a_widened_catalog_is_read_as_one_type(&lake.url);
            }

            #[test]
            fn crash_then_rerun() {
                let _guard = $lock;
                let lake = $variant.lake("crash");
                super::crash_then_rerun(&lake.url);
            }
        }
    };
}

behaviour_suite!(file, Store::File, ());
behaviour_suite!(
    s3,
    Store::S3,
    S3_SERVER.read().unwrap_or_else(|e| e.into_inner())
);
behaviour_suite!(azure, Store::Azure, ());

/// The S3 server restarts in the middle of a backfill; the run completes
/// (or fails some partitions with exit 2 and a re-run completes them).
#[test]
fn s3_restart_mid_run_still_gives_a_correct_lake() {
    let _only_me = S3_SERVER.write().unwrap_or_else(|e| e.into_inner());
    let url = Store::S3.lake("restart").url;
    let ctl = std::env::var("SYNCVET_SEAWEEDFS_CTL").unwrap_or_else(|_| {
        panic!("SYNCVET_SEAWEEDFS_CTL is not set: run the suite with `tests/run.sh`")
    });
    let etl = etl(&url)
        .emu("latency_ms", 30)
        .env("SYNCVET_ETL__SYNC__CONCURRENCY", 2)
        .env("SYNCVET_ETL__LAKE__COMMIT_INTERVAL_SECS", 0.5);
    let mut running = backfill(etl.clone()).spawn();
    let started = Instant::now();
    while Listing::of(&url).partitions().is_empty() {
        assert!(
            !running.has_exited(),
            "the backfill ended before the restart"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing committed within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let restart = std::process::Command::new("bash")
        .arg(&ctl)
        .arg("restart")
        .output()
        .expect("the restart runs");
    assert!(
        restart.status.success(),
        "{ctl} restart failed: {}",
        String::from_utf8_lossy(&restart.stderr)
    );
    assert!(
        !running.has_exited(),
        "the restart must land mid-run; make the run longer"
    );
    let out = running.wait(Duration::from_secs(240));
    match out.code {
        Some(0) => {}
        Some(2) => {
            backfill(etl.clone()).run().expect_code(0);
        }
        _ => panic!(
            "exit {:?} after the restart:\n{}",
            out.code,
            syncvet_e2e::tail(&out.stderr, 40)
        ),
    }
    assert_lake_matches(&url, &truth(&etl));
}

/// Two forced runs of the same partitions race on one object store: the
/// lake ends consistent, each partition committed by one of them whole.
fn racing_commits(url: &str) {
    let etl = etl(url).env("SYNCVET_ETL__SYNC__ENTITY_CONCURRENCY", 4);
    backfill(etl.clone()).run().expect_code(0);
    let first = assert_lake_matches(url, &truth(&etl));
    let a = backfill(etl.clone()).args(["--force"]).spawn();
    let b = backfill(etl.clone()).args(["--force"]).spawn();
    let (a, b) = (
        a.wait(Duration::from_secs(240)),
        b.wait(Duration::from_secs(240)),
    );
    for out in [&a, &b] {
        assert!(
            matches!(out.code, Some(0 | 2)),
            "exit {:?}:\n{}",
            out.code,
            syncvet_e2e::tail(&out.stderr, 30)
        );
    }
    let reading = assert_lake_matches(url, &truth(&etl));
    assert_eq!(
        reading.data(),
        first.data(),
        "the racing rewrites hold the same rows"
    );
    let listing = Listing::of(url);
    let runs = listing.run_ids();
    for (partition, landed) in &listing.batches {
        let run = landed["run_id"].as_str().unwrap();
        assert!(
            runs.iter().any(|r| r == run),
            "{partition}: committed by unknown run {run}"
        );
    }
}

#[test]
fn racing_commits_on_s3_leave_a_consistent_lake() {
    let _guard = S3_SERVER.read().unwrap_or_else(|e| e.into_inner());
    racing_commits(&Store::S3.lake("race").url);
}

#[test]
fn racing_commits_on_azure_leave_a_consistent_lake() {
    racing_commits(&Store::Azure.lake("race").url);
}

/// At API level: two processes' writers of one batch commit at the same
/// moment; exactly one commit lands, and the table holds the winner's rows.
fn exactly_one_commit_of_a_batch_wins(url: &str) {
    use syncvet_lake::{Lake, LakeConfig, PartitionKey, synthetic};
    use syncvet_model::{Catalog, SourceType};
    // Two handles share no state, as two processes would not.
    let open = || Lake::open(&LakeConfig::with_url(url)).expect("the lake opens");
    let (lake_a, lake_b) = (open(), open());
    let entity = Catalog::embedded()
        .entity("patients")
        .expect("patients")
        .clone();
    let schema = entity.arrow_schema();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let date = "2026-10-20".parse().unwrap();
    for round in 0..5u64 {
        let key =
            PartitionKey::new(SourceType::Pims, "patients", format!("p-{round:04}"), date).unwrap();
        let (a, b) = runtime.block_on(async {
            let mut a = lake_a.writer(entity.clone(), key.clone(), "race-a");
            let mut b = lake_b.writer(entity.clone(), key.clone(), "race-b");
            a.write_batch(&synthetic::batch(&schema, 0, 300))
                .await
                .unwrap();
            b.write_batch(&synthetic::batch(&schema, 10_000, 200))
                .await
                .unwrap();
            let (a, b) = tokio::join!(tokio::spawn(a.commit(None)), tokio::spawn(b.commit(None)));
            (a.unwrap(), b.unwrap())
        });
        assert!(
            a.is_ok() != b.is_ok(),
            "round {round}: exactly one commit wins: {a:?} / {b:?}"
        );
        let loser = if a.is_ok() { &b } else { &a };
        assert!(
            matches!(loser, Err(syncvet_lake::LakeError::CommitConflict { .. })),
            "round {round}: the loser is told: {loser:?}"
        );
        let (winner, rows) = if a.is_ok() {
            ("race-a", 300)
        } else {
            ("race-b", 200)
        };
        let listing = Listing::of(url);
        let landed = &listing.batches[&key.path()];
        assert_eq!(
            (landed["run_id"].as_str(), landed["rows"].as_u64()),
            (Some(winner), Some(rows)),
            "round {round}"
        );
    }
    Listing::of(url).assert_consistent();
    let reading = syncvet_e2e::read_lake(url);
    let rows: u64 = reading.data().values().map(|(rows, _)| rows).sum();
    let committed_rows: u64 = Listing::of(url)
        .batches
        .values()
        .map(|m| m["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(
        rows, committed_rows,
        "the reader sees exactly the winners' rows"
    );
}

#[test]
fn exactly_one_commit_of_a_batch_wins_on_s3() {
    let _guard = S3_SERVER.read().unwrap_or_else(|e| e.into_inner());
    exactly_one_commit_of_a_batch_wins(&Store::S3.lake("one-wins").url);
}

#[test]
fn exactly_one_commit_of_a_batch_wins_on_azure() {
    exactly_one_commit_of_a_batch_wins(&Store::Azure.lake("one-wins").url);
}

#[test]
fn exactly_one_commit_of_a_batch_wins_on_file() {
    let lake = Store::File.lake("one-wins");
    exactly_one_commit_of_a_batch_wins(&lake.url);
}
