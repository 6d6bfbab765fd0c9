//! Issue 7.1 and 10: crash consistency. A backfill is killed with SIGKILL
//! at seeded random moments (in turn a plain run, a `--force` run, so kills
//! also land while committed batches are replaced, and `maintain`, so
//! they land during compaction, checkpoints and vacuum), then run again
//! until it completes; the lake must then match the emulator exactly.
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

/// How [`kill_after`] ended.
enum Killed {
    /// By the signal.
    Yes,
    /// It exited on its own just as the signal came.
    No,
    /// It had finished (successfully) before.
    Finished,
}

/// Starts `etl`, sends SIGKILL after `delay` unless it finished before
/// (then it must have succeeded), and checks that whatever a reader
/// following the Delta logs sees is whole.
fn kill_after(etl: &Etl, delay: Duration, lake_url: &str) -> Killed {
    let mut running = etl.spawn();
    std::thread::sleep(delay);
    let killed = if running.has_exited() {
        let out = running.wait(Duration::from_secs(5));
        assert_eq!(
            out.code,
            Some(0),
            "an unkilled run fails:\n{}",
            syncvet_e2e::tail(&out.stderr, 30)
        );
        Killed::Finished
    } else {
        running.signal("KILL");
        match running.wait(Duration::from_secs(10)).code {
            None => Killed::Yes,
            Some(_) => Killed::No,
        }
    };
    let problems = Listing::of(lake_url).commit_violations(false);
    assert!(
        problems.is_empty(),
        "after a kill at {delay:?}:\n{}",
        problems.join("\n")
    );
    killed
}

#[test]
fn sigkill_at_random_moments_then_rerun_gives_the_exact_lake() {
    let kills = env_u64("SYNCVET_CRASH_KILLS", 3);
    let seed = env_u64("SYNCVET_CRASH_SEED", 20261128);
    eprintln!("crash test: {kills} kills, seed {seed} (replay with SYNCVET_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let lake = Store::File.lake("crash");
    let base = Etl::new(&lake.url)
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
        // Nothing else runs beside it: vacuum may delete a killed run's
        // files at once.
        .env("SYNCVET_ETL__LAKE__VACUUM_RETENTION_HOURS", 0);
    let etl = base
        .clone()
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
        let what = ["run", "force", "maintain"][attempts as usize % 3];
        let run = match what {
            "force" => etl.clone().args(["--force"]),
            "maintain" => base.clone().args(["maintain"]),
            _ => etl.clone(),
        };
        let delay = Duration::from_millis(rng.random_range(100..1500));
        if let Killed::Yes = kill_after(&run, delay, &lake.url) {
            delivered += 1;
            eprintln!("kill {delivered}: after {delay:?} ({what})");
        }
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

#[test]
fn sigkill_during_maintenance_then_maintain_again_leaves_the_rows_as_they_were() {
    let kills = env_u64("SYNCVET_CRASH_KILLS", 3);
    let seed = env_u64("SYNCVET_CRASH_SEED", 20261128);
    eprintln!("maintenance crash test: seed {seed} (replay with SYNCVET_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let lake = Store::File.lake("crash-maintain");
    let base = Etl::new(&lake.url)
        .emu("pims_sources", 4)
        .emu("supplier_sources", 1)
        .emu("rows_per_day", 150)
        .emu("dirty_rate", 0.02)
        .env("SYNCVET_ETL__API__PAGE_SIZE", 50)
        .env("SYNCVET_ETL__LAKE__COMMIT_INTERVAL_SECS", 0.2)
        .env("SYNCVET_ETL__LAKE__MAINTAIN_AFTER_RUN", false)
        .env("SYNCVET_ETL__LAKE__VACUUM_RETENTION_HOURS", 0);
    let out = base
        .clone()
        .args(["backfill", "--from", "2026-09-01", "--to", "2026-09-03"])
        .run();
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    let truth = Truth::new(&base.emulator_settings(), &dates("2026-09-01", 3), &[], &[]);
    let before = syncvet_e2e::read_lake(&lake.url).data();
    let maintain = base.clone().args(["maintain"]);

    let mut delivered = 0;
    for attempt in 1..=kills * 3 {
        // Early and spread out: a kill before, in or between the steps.
        let delay = Duration::from_millis(rng.random_range(20..800));
        match kill_after(&maintain, delay, &lake.url) {
            Killed::Yes => {
                delivered += 1;
                eprintln!("kill {delivered} during maintain after {delay:?}");
            }
            Killed::No => {}
            Killed::Finished => {
                eprintln!("attempt {attempt}: maintain finished within {delay:?}");
                break;
            }
        }
    }
    assert!(
        delivered >= 1,
        "no kill landed during maintenance (seed {seed})"
    );
    let out = maintain.run();
    assert_eq!(
        out.code,
        Some(0),
        "maintain after the kills:\n{}",
        out.stdout
    );
    let reading = assert_lake_matches(&lake.url, &truth);
    assert_eq!(reading.data(), before, "maintenance changed rows");
    // Every table day is one file now, and nothing stray is left.
    let listing = Listing::of(&lake.url);
    for (table, log) in &listing.tables {
        let mut per_day: std::collections::BTreeMap<&str, usize> = Default::default();
        for file in log.files.keys() {
            *per_day.entry(file.split('/').next().unwrap()).or_default() += 1;
        }
        assert!(per_day.values().all(|&n| n == 1), "{table}: {per_day:?}");
    }
    listing.assert_consistent();
}
