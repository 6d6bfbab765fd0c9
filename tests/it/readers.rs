//! Issue 10: a reader that opens the Delta tables again and again while
//! forced re-runs (copy-on-write of compacted days) and maintenance
//! (compaction, checkpoints, vacuum) commit to them sees every batch
//! whole, once, from one run: never absent (every batch was landed before
//! the loop), never a mix of two runs, never a duplicate row.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use deltalake::DeltaTableBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use syncvet_e2e::{Etl, Store, Truth, assert_lake_matches, dates};

/// What a reader sees of one batch.
#[derive(Debug, Clone, Default)]
struct Batch {
    rows: u64,
    ids: BTreeSet<String>,
    /// The run ids of its rows: one, unless two runs are mixed.
    runs: BTreeSet<String>,
}

/// Per (source, day): the batch.
type Batches = BTreeMap<(String, String), Batch>;

const TABLES: [(&str, &str); 3] = [
    ("pims/patients", "practice_id"),
    ("pims/invoice_lines", "practice_id"),
    ("supplier/supplier_products", "supplier_id"),
];

/// The table's latest version as a reader sees it: the version and its batches.
async fn read(dir: &Path, source_column: &str) -> Result<(u64, Batches), String> {
    let url = url::Url::from_directory_path(dir).unwrap();
    let mut table = DeltaTableBuilder::from_url(url)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    table.load().await.map_err(|e| e.to_string())?;
    let snapshot = table.snapshot().map_err(|e| e.to_string())?;
    let mut batches = Batches::new();
    for f in snapshot.log_data().iter() {
        let day = f.partition_values_map()["batch_date"].clone().unwrap();
        let path = dir.join(f.path().as_ref());
        let file = std::fs::File::open(&path)
            .map_err(|e| format!("version {}: {}: {e}", snapshot.version(), path.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
        let mask =
            ProjectionMask::columns(builder.parquet_schema(), [source_column, "id", "_run_id"]);
        for batch in builder
            .with_projection(mask)
            .build()
            .map_err(|e| e.to_string())?
        {
            let batch = batch.map_err(|e| e.to_string())?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap()
                    .as_string::<i32>()
                    .clone()
            };
            let (source, id, run) = (column(source_column), column("id"), column("_run_id"));
            for i in 0..batch.num_rows() {
                let batch = batches
                    .entry((source.value(i).to_owned(), day.clone()))
                    .or_default();
                batch.rows += 1;
                if !id.is_null(i) {
                    batch.ids.insert(id.value(i).to_owned());
                }
                batch.runs.insert(run.value(i).to_owned());
            }
        }
    }
    Ok((snapshot.version(), batches))
}

#[test]
fn a_reader_during_forced_reruns_and_maintenance_sees_every_batch_whole_and_once() {
    let lake = Store::File.lake("readers");
    let root: PathBuf = lake.local_root();
    let base = Etl::new(&lake.url)
        .emu("pims_sources", 4)
        .emu("supplier_sources", 2)
        .emu("rows_per_day", 150)
        .emu("dirty_rate", 0)
        .env("SYNCVET_ETL__API__PAGE_SIZE", 50)
        // Small groups: a forced run commits many times.
        .env("SYNCVET_ETL__LAKE__COMMIT_INTERVAL_SECS", 0.2)
        // Old versions stay readable for the reader mid-read.
        .env("SYNCVET_ETL__LAKE__VACUUM_RETENTION_HOURS", 24);
    let backfill = base
        .clone()
        .args(["backfill", "--from", "2026-10-01", "--to", "2026-10-03"]);
    let truth = Truth::new(&base.emulator_settings(), &dates("2026-10-01", 3), &[], &[]);
    // Without compaction first, so maintenance has small files to merge.
    let out = backfill
        .clone()
        .env("SYNCVET_ETL__LAKE__MAINTAIN_AFTER_RUN", false)
        .run();
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let baseline: Vec<Batches> = TABLES
        .iter()
        .map(|(t, column)| rt.block_on(read(&root.join(t), column)).unwrap().1)
        .collect();
    for (batches, (table, _)) in baseline.iter().zip(TABLES) {
        assert!(batches.len() >= 6, "{table}: {} batches", batches.len());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (stop, root, baseline) = (stop.clone(), root.clone(), baseline.clone());
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut versions: BTreeSet<(usize, u64)> = BTreeSet::new();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                for (n, (table, column)) in TABLES.iter().enumerate() {
                    let (version, seen) = rt
                        .block_on(read(&root.join(table), column))
                        .unwrap_or_else(|e| panic!("{table}: {e}"));
                    reads += 1;
                    versions.insert((n, version));
                    let keys = |b: &Batches| b.keys().cloned().collect::<Vec<_>>();
                    assert_eq!(
                        keys(&seen),
                        keys(&baseline[n]),
                        "{table} v{version}: batches"
                    );
                    for (key, batch) in &seen {
                        let at = format!("{table} v{version} {key:?}");
                        assert_eq!(batch.rows, baseline[n][key].rows, "{at}: rows");
                        assert_eq!(batch.ids.len() as u64, batch.rows, "{at}: duplicates");
                        assert_eq!(batch.runs.len(), 1, "{at}: runs {:?}", batch.runs);
                    }
                }
            }
            (reads, versions.len())
        }
    });
    for step in 0..2 {
        let out = backfill.clone().args(["--force"]).run();
        assert_eq!(out.code, Some(0), "forced run {step}:\n{}", out.stdout);
        let out = base.clone().args(["maintain"]).run();
        assert_eq!(
            out.code,
            Some(0),
            "maintain {step}:\n{}{}",
            out.stdout,
            out.stderr
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (reads, versions) = match reader.join() {
        Ok(counts) => counts,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    eprintln!("reader: {reads} table reads over {versions} table versions");
    assert!(
        versions >= 3 * TABLES.len(),
        "the reader saw only {versions} versions in {reads} reads: it did not overlap the commits"
    );
    assert_lake_matches(&lake.url, &truth);
}
