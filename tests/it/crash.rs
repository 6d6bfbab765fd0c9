//! Issue 7.1: crash consistency. A backfill is killed with SIGKILL at
//! seeded random moments (every other attempt a `--force` run, so kills
//! also land while committed partitions are being replaced), then run
//! again until it completes; the lake must then match the emulator exactly.
//!
//! `SYNCVET_CRASH_KILLS` (default 3) sets the number of kills and
//! `SYNCVET_CRASH_SEED` the seed; `tests/crash.sh` runs the long version.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use syncvet_e2e::{Etl, Listing, Store, Truth, assert_lake_matches, dates};

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{key} must be a number"))
    })
}

#[test]
fn sigkill_at_random_moments_then_rerun_gives_the_exact_lake() {
    let kills = env_u64("SYNCVET_CRASH_KILLS", 3);
    let seed = env_u64("SYNCVET_CRASH_SEED", 20261128);
    eprintln!("crash test: {kills} kills, seed {seed} (replay with SYNCVET_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let lake = Store::File.lake("crash");
    let etl = Etl::new(&lake.url)
        .emu("seed", seed % 1000)
        .emu("pims_sources", 3)
        .emu("supplier_sources", 1)
        .emu("rows_per_day", 120)
        .emu("dirty_rate", 0.02)
        .emu("latency_ms", 4)
        .env("SYNCVET_ETL__API__PAGE_SIZE", 40)
        .env("SYNCVET_ETL__SYNC__CONCURRENCY", 2)
        // Small groups, so kills land between, during and after commits.
        .env("SYNCVET_ETL__LAKE__COMMIT_INTERVAL_SECS", 0.3)
        .args(["backfill", "--from", "2026-09-01", "--to", "2026-09-03"]);
    let truth = Truth::new(&etl.emulator_settings(), &dates("2026-09-01", 3), &[], &[]);

    let mut delivered = 0;
    let mut attempts = 0;
    while delivered < kills {
        attempts += 1;
        assert!(
            attempts <= kills * 4,
            "only {delivered} of {kills} kills landed in {attempts} attempts"
        );
        let force = attempts % 2 == 0;
        let run = if force {
            etl.clone().args(["--force"])
        } else {
            etl.clone()
        };
        let mut running = run.spawn();
        let delay = Duration::from_millis(rng.random_range(100..1500));
        std::thread::sleep(delay);
        if running.has_exited() {
            let out = running.wait(Duration::from_secs(5));
            assert!(
                out.code == Some(0),
                "an unkilled run fails:\n{}",
                syncvet_e2e::tail(&out.stderr, 30)
            );
            continue;
        }
        running.signal("KILL");
        let out = running.wait(Duration::from_secs(10));
        if out.code.is_none() {
            delivered += 1;
            eprintln!("kill {delivered}: after {delay:?} (force: {force})");
        }
        // Whatever a reader following the Delta logs sees is whole, at every kill.
        let problems = Listing::of(&lake.url).commit_violations(false);
        assert!(
            problems.is_empty(),
            "after kill {delivered} (seed {seed}):\n{}",
            problems.join("\n")
        );
    }
    // Nothing a killed run left (no claim, no lock) stands in the way of
    // the very next run.
    let out = etl.run();
    assert_eq!(
        out.code,
        Some(0),
        "the re-run after the last kill:\n{}",
        out.stdout
    );
    assert_lake_matches(&lake.url, &truth);
}
