//! Issue 7.2: every emulator fault at once. The run must complete with the
//! rows of a run without transport faults (same seed, same dirty records),
//! and its report must account for the retries, 429s and rejects that the
//! emulator counted.

use serde_json::json;
use syncvet_e2e::{Listing, Store, TestEmulator, Truth, assert_lake_matches, dates, latest_report};
use syncvet_emulator::EmulatorConfig;

const DATE: &str = "2026-10-10";

fn sum(report: &serde_json::Value, key: &str) -> u64 {
    report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[key].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn every_fault_at_once_completes_with_the_clean_rows_and_an_accounting_report() {
    let settings = EmulatorConfig {
        seed: 7,
        pims_sources: 2,
        supplier_sources: 1,
        rows_per_day: 60,
        dirty_rate: 0.03,
        error_rate_500: 0.04,
        error_rate_503: 0.04,
        error_rate_408: 0.04,
        drop_rate: 0.03,
        truncate_rate: 0.05,
        latency_ms: 5,
        token_ttl_secs: 3,
        not_ready_polls: 1,
        rate_limit_rps: 25,
        burst: 5,
        retry_after_secs: 1,
        continuation_ttl_secs: 2,
        ..EmulatorConfig::default()
    };
    let emulator = TestEmulator::start(settings);
    let run = |url: &str| {
        emulator
            .etl(url)
            .env("SYNCVET_ETL__API__PAGE_SIZE", 20)
            .env("SYNCVET_ETL__API__RATE__REQUESTS_PER_SEC", 40)
            .env("SYNCVET_ETL__API__RETRY__MAX_ATTEMPTS", 10)
            .args(["run", "--date", DATE])
            .run()
    };
    let truth = Truth::new(&emulator.settings(), &dates(DATE, 1), &[], &[]);

    let faulty = Store::File.lake("soak");
    let out = run(&faulty.url);
    out.expect_code(0);
    let stats = emulator.stats();
    let faulty_reading = assert_lake_matches(&faulty.url, &truth);

    // The same data without transport faults.
    emulator.update(json!({
        "error_rate_500": 0.0, "error_rate_503": 0.0, "error_rate_408": 0.0, "drop_rate": 0.0,
        "truncate_rate": 0.0, "latency_ms": 0, "token_ttl_secs": 3599, "not_ready_polls": 0,
        "rate_limit_rps": 0, "continuation_ttl_secs": 0
    }));
    let reference = Store::File.lake("soak-ref");
    run(&reference.url).expect_code(0);
    let reference_reading = assert_lake_matches(&reference.url, &truth);
    assert_eq!(
        faulty_reading.data(),
        reference_reading.data(),
        "rows identical to the run without faults"
    );
    for partition in truth.partitions() {
        assert_eq!(
            faulty_reading.quarantined(&partition),
            reference_reading.quarantined(&partition),
            "{partition}"
        );
    }

    // And the clean data minus the rejects, record for record in count.
    emulator.update(json!({"dirty_rate": 0.0}));
    let clean = Store::File.lake("soak-clean");
    run(&clean.url).expect_code(0);
    let clean_data = assert_lake_matches(&clean.url, &truth).data();
    for (partition, (rows, _)) in faulty_reading.data() {
        let rejects = faulty_reading.quarantined(&partition);
        assert_eq!(rows + rejects, clean_data[&partition].0, "{partition}");
    }

    // The report accounts for what the emulator did.
    let report = latest_report(&faulty.url);
    let faults: u64 = ["drop", "truncate", "500", "503", "408"]
        .iter()
        .map(|k| stats.faults.get(*k).copied().unwrap_or(0))
        .sum();
    eprintln!("soak: emulator {stats:?}");
    eprintln!(
        "soak: report retries {}, 429s {}, restarts {}, rejects {}",
        sum(&report, "retries"),
        sum(&report, "rate_limited"),
        sum(&report, "restarts"),
        sum(&report, "rejects")
    );
    assert!(
        faults > 0 && stats.rate_limited > 0 && stats.not_ready > 0,
        "every fault fired: {stats:?}"
    );
    // The practices listing (not a partition) may take a few of the faults.
    assert!(
        sum(&report, "retries") + 6 >= faults,
        "every fault was retried: {faults} faults"
    );
    assert!(
        sum(&report, "rate_limited") <= stats.rate_limited
            && sum(&report, "rate_limited") + 3 >= stats.rate_limited
    );
    // Requests already in flight when a 429 is sent count as early too.
    assert!(
        stats.early_retries <= stats.rate_limited,
        "requests before their Retry-After: {}",
        stats.early_retries
    );
    let committed_rejected: u64 = Listing::of(&faulty.url)
        .batches
        .values()
        .map(|m| m["rejected"].as_u64().unwrap())
        .sum();
    assert!(committed_rejected > 0);
    assert_eq!(
        sum(&report, "rejects"),
        committed_rejected,
        "every reject in the report"
    );
}
