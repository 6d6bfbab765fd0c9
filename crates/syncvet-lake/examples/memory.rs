//! Peak memory and throughput of writing one partition of `patients`-shaped
//! rows to a local lake: `cargo run --release -p syncvet-lake --example memory -- ROWS`.
//!
//! Prints one line: rows, files, bytes, seconds, rows/s, peak RSS (VmHWM).
//! Run it for 100k and 1M rows: the peak must not grow with the partition.

use std::time::Instant;

use chrono::NaiveDate;
use syncvet_lake::{Lake, LakeConfig, PartitionKey, synthetic};
use syncvet_model::{Catalog, SourceType};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rows: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ROWS is a number"))
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("syncvet-lake-memory-{}", std::process::id()));
    let lake = Lake::open(&LakeConfig::with_url(dir.to_str().unwrap())).unwrap();
    let entity = Catalog::embedded().entity("patients").unwrap().clone();
    let key = PartitionKey::new(
        SourceType::Pims,
        "patients",
        "p-0001",
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
    )
    .unwrap();
    let schema = entity.arrow_schema();
    let started = Instant::now();
    let mut writer = lake.writer(entity, key, "memory");
    // Pages of 1,000 records, as the API serves them.
    let mut at = 0;
    while at < rows {
        let n = 1000.min(rows - at);
        writer
            .write_batch(&synthetic::batch(&schema, at, n as usize))
            .await
            .unwrap();
        at += n;
    }
    let summary = writer.commit(Some(rows)).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rows={} files={} bytes={} secs={:.2} rows_per_sec={:.0} peak_rss_mib={:.1}",
        summary.rows,
        summary.files.len(),
        summary.bytes,
        secs,
        summary.rows as f64 / secs,
        peak_rss_kib() as f64 / 1024.0
    );
    std::fs::remove_dir_all(&dir).ok();
}
