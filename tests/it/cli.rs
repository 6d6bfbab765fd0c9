//! Issue 5: the binary as a platform engineer runs it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, Utc};

use syncvet_e2e::{
    Etl, Listing, Store, TestEmulator, Truth, assert_lake_matches, dates, latest_report,
    partition_path, read_lake, report_partitions, walk,
};
use syncvet_emulator::EmulatorConfig;
use syncvet_model::{Catalog, SourceType};

use crate::gate::not_ready_gate;

/// The "total" line of the summary: (committed, failed, rows, rejects).
fn summary_totals(stdout: &str) -> (u64, u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("total "))
        .unwrap_or_else(|| panic!("no total line in:\n{stdout}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().expect("a number"))
        .collect();
    (n[0], n[1], n[2], n[3])
}

/// The README's first command, `cargo run -p syncvet-etl -- run`, from the
/// repository root with only the lake moved to a temp folder.
#[test]
fn default_run_lands_every_partition_with_the_emulators_counts() {
    let lake = Store::File.lake("default");
    let etl = Etl::bare()
        .env("SYNCVET_ETL__LAKE__URL", &lake.url)
        .args(["run"]);
    let out = etl.run();
    out.expect_code(0);
    assert_plain_log(&out.stderr);

    // No --date: the last `sync.catch_up_days` dates up to yesterday in
    // each source's time zone, so the dates come from the lake; every
    // (source, entity) must have exactly that many consecutive dates.
    let settings = etl.emulator_settings();
    let days = syncvet_etl::Settings::load(None, Default::default())
        .expect("the embedded default loads")
        .config
        .sync
        .catch_up_days;
    let listing = Listing::of(&lake.url);
    let today = Utc::now().date_naive();
    let mut truth = Truth {
        totals: Default::default(),
    };
    let mut pairs: BTreeMap<(String, String), BTreeSet<NaiveDate>> = BTreeMap::new();
    for path in listing.partitions() {
        let parts: Vec<&str> = path.split('/').collect();
        let id = parts[2].split_once('=').expect("key=value").1;
        let date: NaiveDate = parts[3]
            .strip_prefix("batch_date=")
            .expect("a date")
            .parse()
            .expect("a date");
        pairs
            .entry((parts[1].to_owned(), id.to_owned()))
            .or_default()
            .insert(date);
        truth.totals.insert(
            path.clone(),
            syncvet_emulator::record_count(&settings, id, parts[1], date),
        );
    }
    for ((entity, id), dates) in &pairs {
        let (first, last) = (*dates.first().unwrap(), *dates.last().unwrap());
        // Yesterday somewhere between UTC-12 and UTC+14.
        assert!(
            last <= today && last >= today - Days::new(2),
            "{entity} {id}: the latest date {last} is not yesterday"
        );
        assert_eq!(
            (dates.len() as u32, (last - first).num_days()),
            (days, i64::from(days) - 1),
            "{entity} {id}: not the last {days} consecutive dates: {dates:?}"
        );
    }
    let catalog = Catalog::embedded();
    let expected_pairs: usize = settings.pims_sources as usize
        * catalog.for_source(SourceType::Pims).count()
        + settings.supplier_sources as usize * catalog.for_source(SourceType::Supplier).count();
    assert_eq!(pairs.len(), expected_pairs, "every source × entity");

    let reading = assert_lake_matches(&lake.url, &truth);
    let rows: u64 = reading.data().values().map(|(rows, _)| rows).sum();
    let (committed, failed, summary_rows, _) = summary_totals(&out.stdout);
    assert_eq!(
        (committed, failed, summary_rows),
        (expected_pairs as u64 * u64::from(days), 0, rows),
        "summary:\n{}",
        out.stdout
    );
}

/// Human-format logs on a pipe (journald, `kubectl logs`, a file) are plain
/// text: no ANSI colour codes, yet the log lines are there.
fn assert_plain_log(stderr: &str) {
    assert!(
        !stderr.contains("\x1b["),
        "colour codes in a piped log:\n{}",
        syncvet_e2e::tail(stderr, 10)
    );
    assert!(
        stderr.contains(" INFO ") && stderr.contains("run planned"),
        "no human-format log lines:\n{}",
        syncvet_e2e::tail(stderr, 10)
    );
}

/// A nightly job that missed nights: the lake holds some of the last
/// `sync.catch_up_days` dates, and `run` without `--date` lands exactly the
/// others, in each source's time zone.
#[test]
fn run_without_date_lands_exactly_the_missed_nights() {
    let lake = Store::File.lake("catch-up");
    let days = 4;
    let etl = Etl::new(&lake.url)
        .emu("pims_sources", 3)
        .emu("supplier_sources", 1)
        .emu("rows_per_day", 10)
        .env("SYNCVET_ETL__SYNC__CATCH_UP_DAYS", days)
        .env("SYNCVET_ETL__SYNC__ENTITIES", "patients,supplier_products");
    // Two nights landed, UTC today - 4 and - 3: whatever a source's time
    // zone, one or both are in its window and at least one date is missing.
    let today = Utc::now().date_naive();
    let (from, to) = (today - Days::new(4), today - Days::new(3));
    etl.clone()
        .args([
            "backfill",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ])
        .run()
        .expect_code(0);
    let before = Listing::of(&lake.url).partitions();
    assert_eq!(before.len(), 2 * 4, "2 dates x 4 sources");

    let out = etl.clone().args(["run"]).run();
    out.expect_code(0);
    assert_plain_log(&out.stderr);

    // The window, from the run's own clock: the last `days` dates up to
    // yesterday in each source's time zone.
    let report = latest_report(&lake.url);
    assert_eq!(report["command"], "run");
    let started: DateTime<Utc> = report["started_at"]
        .as_str()
        .expect("a start time")
        .parse()
        .expect("RFC 3339");
    let mut window = BTreeSet::new();
    for practice in syncvet_emulator::sources(&etl.emulator_settings()) {
        let tz: chrono_tz::Tz = practice.time_zone.parse().expect("an IANA zone");
        let entity = match practice.source_type {
            SourceType::Pims => "patients",
            SourceType::Supplier => "supplier_products",
        };
        let yesterday = started.with_timezone(&tz).date_naive() - Days::new(1);
        for back in 0..days {
            let date = yesterday - Days::new(back);
            window.insert(partition_path(
                practice.source_type,
                entity,
                &practice.id,
                date,
            ));
        }
    }
    let missing: BTreeSet<String> = window.difference(&before).cloned().collect();
    assert!(!missing.is_empty() && missing.len() < window.len());
    assert_eq!(
        report_partitions(&report, "committed"),
        missing,
        "exactly the missing dates are landed"
    );
    assert_eq!(
        report["partitions"].as_array().map(Vec::len),
        Some(missing.len()),
        "and nothing else is attempted"
    );
    assert_eq!(
        report["skipped"],
        window.intersection(&before).count() as u64,
        "the dates already in the lake are skipped"
    );
    let after = Listing::of(&lake.url);
    after.assert_consistent();
    let expected: BTreeSet<String> = before.union(&window).cloned().collect();
    assert_eq!(after.partitions(), expected);
}

/// A backfill of 7 days × 20 sources, its no-op re-run and its `--force` re-run.
#[test]
fn backfill_of_7_days_and_20_sources_reruns_idempotently() {
    let lake = Store::File.lake("backfill");
    let days = dates("2026-10-01", 7);
    let etl = Etl::new(&lake.url)
        .emu("pims_sources", 18)
        .emu("supplier_sources", 2)
        .emu("rows_per_day", 4)
        .env("SYNCVET_ETL__SYNC__CONCURRENCY", 4)
        .env("SYNCVET_ETL__SYNC__ENTITY_CONCURRENCY", 4);
    let backfill = etl
        .clone()
        .args(["backfill", "--from", "2026-10-01", "--to", "2026-10-07"]);
    backfill.run().expect_code(0);
    let truth = Truth::new(&etl.emulator_settings(), &days, &[], &[]);
    let catalog = Catalog::embedded();
    let per_day = 18 * catalog.for_source(SourceType::Pims).count()
        + 2 * catalog.for_source(SourceType::Supplier).count();
    assert_eq!(truth.totals.len(), 7 * per_day);
    let first = assert_lake_matches(&lake.url, &truth);
    let before = Listing::of(&lake.url);

    let again = backfill.run();
    again.expect_code(0);
    let report = latest_report(&lake.url);
    assert_eq!(
        report["skipped"],
        7 * per_day as u64,
        "the re-run skips everything"
    );
    assert_eq!(
        report["partitions"].as_array().map(Vec::len),
        Some(0),
        "and attempts nothing"
    );
    let after = Listing::of(&lake.url);
    assert_eq!(after.batches, before.batches, "no batch committed again");
    let data = |l: &Listing| {
        l.objects
            .iter()
            .filter(|(k, _)| !k.starts_with("_runs/"))
            .map(|(k, v)| (k.clone(), *v))
            .collect::<Vec<_>>()
    };
    assert_eq!(data(&after), data(&before), "no data object written");

    backfill.clone().args(["--force"]).run().expect_code(0);
    let forced = latest_report(&lake.url);
    assert_eq!(
        forced["partitions"].as_array().map(Vec::len),
        Some(7 * per_day)
    );
    let rewritten = Listing::of(&lake.url);
    let run_id = forced["run_id"].as_str().expect("a run id");
    assert!(
        rewritten.batches.values().all(|m| m["run_id"] == run_id),
        "every partition rewritten by the forced run"
    );
    let second = assert_lake_matches(&lake.url, &truth);
    assert_eq!(
        second.data(),
        first.data(),
        "--force rewrote identical rows (per-partition checksums)"
    );
}

/// A source answering 403 fails alone; the others land; exit 2; named.
#[test]
fn forbidden_source_gives_exit_2_and_is_named() {
    let lake = Store::File.lake("forbidden");
    let etl = Etl::new(&lake.url)
        .emu("pims_sources", 3)
        .emu("rows_per_day", 20)
        .emu("forbidden_sources", "p-0002");
    let out = etl.clone().args(["run", "--date", "2026-10-03"]).run();
    out.expect_code(2);
    assert!(
        out.stdout.contains("p-0002"),
        "the summary names the source:\n{}",
        out.stdout
    );
    let report = latest_report(&lake.url);
    let forbidden = report_partitions(&report, "forbidden");
    let truth = Truth::new(&etl.emulator_settings(), &dates("2026-10-03", 1), &[], &[]);
    let of_p2: BTreeSet<String> = truth
        .partitions()
        .into_iter()
        .filter(|p| p.contains("=p-0002/"))
        .collect();
    assert_eq!(
        forbidden, of_p2,
        "every partition of p-0002 reported forbidden, and only those"
    );
    assert_lake_matches(&lake.url, &truth.without_sources(&["p-0002"]));
}

/// A source whose batches never get ready fails at the run deadline alone.
#[test]
fn not_ready_source_fails_at_the_deadline_and_is_named() {
    let settings = EmulatorConfig {
        pims_sources: 3,
        supplier_sources: 1,
        rows_per_day: 20,
        ..EmulatorConfig::default()
    };
    let emulator = TestEmulator::start(settings);
    let gate = not_ready_gate(emulator.addr(), "p-0003");
    let lake = Store::File.lake("not-ready");
    syncvet_e2e::etl_bin();
    let started = Instant::now();
    let out = emulator
        .etl_via(&gate, &lake.url)
        .env("SYNCVET_ETL__SYNC__RUN_DEADLINE_SECS", 6)
        .args(["run", "--date", "2026-10-03"])
        .run();
    out.expect_code(2);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by the deadline: {:?}\n{}",
        started.elapsed(),
        out.stdout
    );
    assert!(
        out.stdout.contains("p-0003"),
        "the summary names the source:\n{}",
        out.stdout
    );
    let report = latest_report(&lake.url);
    let truth = Truth::new(&emulator.settings(), &dates("2026-10-03", 1), &[], &[]);
    let of_p3: BTreeSet<String> = truth
        .partitions()
        .into_iter()
        .filter(|p| p.contains("=p-0003/"))
        .collect();
    assert_eq!(
        report_partitions(&report, "not_ready"),
        of_p3,
        "every partition of p-0003 reported not ready"
    );
    assert_lake_matches(&lake.url, &truth.without_sources(&["p-0003"]));
}

/// SIGTERM mid-backfill: a bounded exit with 130, nothing half-committed,
/// and the next run completes the rest.
#[test]
fn sigterm_during_backfill_stops_cleanly_and_the_next_run_resumes() {
    let lake = Store::File.lake("sigterm");
    let etl = Etl::new(&lake.url)
        .emu("pims_sources", 4)
        .emu("rows_per_day", 60)
        .emu("latency_ms", 25)
        .env("SYNCVET_ETL__API__PAGE_SIZE", 20)
        .env("SYNCVET_ETL__SYNC__CONCURRENCY", 2)
        .env("SYNCVET_ETL__LAKE__COMMIT_INTERVAL_SECS", 0.5);
    let backfill = etl
        .clone()
        .args(["backfill", "--from", "2026-10-01", "--to", "2026-10-04"]);
    let mut running = backfill.spawn();
    let root = lake.local_root();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !walk(&root)
        .iter()
        .any(|f| f.ends_with("/_delta_log/00000000000000000001.json"))
    {
        assert!(
            !running.has_exited(),
            "the backfill ended before it could be interrupted"
        );
        assert!(
            Instant::now() < deadline,
            "no partition committed within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    running.signal("TERM");
    let signalled = Instant::now();
    let out = running.wait(Duration::from_secs(30));
    out.expect_code(130);
    // The grace period is 3 s; a clean stop takes well under 10.
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "exit took {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(out.stdout.contains("INTERRUPTED"), "{}", out.stdout);

    let listing = Listing::of(&lake.url);
    listing.assert_consistent();
    let truth = Truth::new(&etl.emulator_settings(), &dates("2026-10-01", 4), &[], &[]);
    assert!(
        listing.partitions().len() < truth.totals.len(),
        "interrupted before the end"
    );
    for file in walk(&root).iter().filter(|f| f.ends_with(".parquet")) {
        assert!(
            listing.objects.contains_key(file),
            "{file} is not an object of the lake"
        );
    }
    assert_eq!(latest_report(&lake.url)["interrupted"], true);

    let done_before = listing.partitions().len() as u64;
    backfill.run().expect_code(0);
    assert_eq!(
        latest_report(&lake.url)["skipped"],
        done_before,
        "the re-run resumed"
    );
    assert_lake_matches(&lake.url, &truth);
}

/// `--shard 0/2` + `--shard 1/2` = the unsharded run, no overlap.
#[test]
fn two_shards_make_exactly_the_unsharded_run() {
    let run = |name: &str, shard: Option<&str>| {
        let lake = Store::File.lake(name);
        let mut etl = Etl::new(&lake.url)
            .emu("pims_sources", 6)
            .emu("supplier_sources", 2)
            .emu("rows_per_day", 5);
        etl = etl.args(["run", "--date", "2026-10-02"]);
        if let Some(shard) = shard {
            etl = etl.args(["--shard", shard]);
        }
        etl.run().expect_code(0);
        let partitions = Listing::of(&lake.url).partitions();
        assert_eq!(read_lake(&lake.url).done(), partitions);
        (lake, partitions)
    };
    let (_a, shard0) = run("shard0", Some("0/2"));
    let (_b, shard1) = run("shard1", Some("1/2"));
    let (_c, all) = run("unsharded", None);
    assert!(
        !shard0.is_empty() && !shard1.is_empty(),
        "both shards got work: {} / {}",
        shard0.len(),
        shard1.len()
    );
    assert!(
        shard0.is_disjoint(&shard1),
        "overlap: {:?}",
        shard0.intersection(&shard1).collect::<Vec<_>>()
    );
    let union: BTreeSet<String> = shard0.union(&shard1).cloned().collect();
    assert_eq!(union, all);
    let sources = |set: &BTreeSet<String>| {
        set.iter()
            .map(|p| p.split('/').nth(2).unwrap().to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert!(
        sources(&shard0).is_disjoint(&sources(&shard1)),
        "a source is split by source, not by partition"
    );
    assert!(all.contains(&partition_path(
        SourceType::Supplier,
        "supplier_products",
        "s-0002",
        "2026-10-02".parse().unwrap()
    )));
}

/// Each misconfiguration: exit 1 before any work, one line naming the key.
#[test]
fn misconfiguration_exits_1_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let unknown_in_file = dir.path().join("unknown.toml");
    let default = std::fs::read_to_string(syncvet_e2e::default_config()).unwrap();
    std::fs::write(
        &unknown_in_file,
        default.replace("[sync]\n", "[sync]\nconcurrency_typo = 3\n"),
    )
    .unwrap();
    let lake = dir.path().join("never");
    let lake_url = lake.display().to_string();
    let off = |etl: Etl| {
        etl.env("SYNCVET_ETL__EMULATOR__ENABLED", "false").env(
            "SYNCVET_ETL__API__CLIENT_SECRET_ENV",
            "SYNCVET_CLIENT_SECRET",
        )
    };
    let cases: Vec<(&str, Etl, &[&str])> = vec![
        (
            "unknown key (env)",
            Etl::new(&lake_url).env("SYNCVET_ETL__SYNC__CONCURENCY", 3),
            &["concurency"],
        ),
        (
            "unknown key (file)",
            Etl::new(&lake_url).config(&unknown_in_file),
            &["concurrency_typo"],
        ),
        (
            "bad value",
            Etl::new(&lake_url).env("SYNCVET_ETL__SYNC__CONCURRENCY", "lots"),
            &["sync.concurrency"],
        ),
        (
            "bad API URL",
            off(Etl::new(&lake_url))
                .env("SYNCVET_CLIENT_SECRET", "x")
                .env("SYNCVET_ETL__API__BASE_URL", "not a url"),
            &["api.base_url"],
        ),
        (
            "bad lake URL",
            Etl::new("ftp://host/lake"),
            &["lake", "ftp"],
        ),
        (
            "missing secret",
            off(Etl::new(&lake_url)),
            &["SYNCVET_CLIENT_SECRET"],
        ),
        (
            "bad cron",
            Etl::new(&lake_url).env("SYNCVET_ETL__SCHEDULE__CRON", "every night"),
            &["schedule.cron"],
        ),
        (
            "bad time zone",
            Etl::new(&lake_url).env("SYNCVET_ETL__SCHEDULE__TIMEZONE", "Mars/Base"),
            &["schedule.timezone"],
        ),
        (
            "moved key",
            Etl::new(&lake_url).env("SYNCVET_ETL__SCHEDULE__CATCH_UP_DAYS", 7),
            &["`schedule.catch_up_days` moved to `sync.catch_up_days`"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, etl, needles) in cases {
        let out = etl.args(["run", "--date", "2026-10-01"]).run();
        let lines = syncvet_e2e::error_lines(&out.stderr);
        let ok = out.code == Some(1)
            && lines.len() == 1
            && needles.iter().all(|n| lines[0].contains(n))
            && out.stdout.trim().is_empty();
        if !ok {
            failures.push(format!(
                "{name}: exit {:?}, stderr:\n{}\nstdout:\n{}",
                out.code, out.stderr, out.stdout
            ));
        }
    }
    assert!(
        !lake.exists(),
        "nothing written before the config was checked"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// `validate` follows a continuation token, and names the config key when
/// the server ignores the parameter it is sent under.
#[test]
fn validate_names_a_continuation_parameter_the_server_ignores() {
    let lake = Store::File.lake("validate");
    let etl = Etl::new(&lake.url)
        .emu("pims_sources", 1)
        .emu("supplier_sources", 0)
        .emu("rows_per_day", 50);
    let out = etl.clone().args(["validate"]).run();
    out.expect_code(0);
    assert!(
        out.stdout.contains("(continuation)")
            && out.stdout.contains("the continuation token is followed"),
        "{}",
        out.stdout
    );
    let out = etl
        .env(
            "SYNCVET_ETL__API__PARAMS__CONTINUATION_TOKEN",
            "continuation",
        )
        .args(["validate"])
        .run();
    out.expect_code(1);
    assert!(
        out.stdout.contains("FAIL  (continuation)")
            && out.stdout.contains("`continuation`")
            && out.stdout.contains("api.params.continuation_token"),
        "{}",
        out.stdout
    );
}
