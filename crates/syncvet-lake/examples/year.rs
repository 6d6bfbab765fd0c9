//! A simulated year of nights, written straight through the lake API (no
//! HTTP): every night `SOURCES` batches of `patients`-shaped rows land in
//! one group commit, then the tables are maintained for the night's day
//! (compaction, vacuum; a checkpoint every 10 commits), as `run` does. Then a fresh handle
//! answers "which batches are done", which is all a no-op run reads of
//! the table.
//!
//! `cargo run --release -p syncvet-lake --example year -- LAKE_URL [DAYS] [SOURCES] [ROWS]`
//! (defaults: 365 days, 500 sources, 5 rows a batch). Prints one JSON line.

use std::time::Instant;

use chrono::{Days, NaiveDate};
use futures::StreamExt;
use syncvet_lake::{Lake, LakeConfig, PartitionKey, synthetic};
use syncvet_model::{Catalog, SourceType};

fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .nth(n)
        .map(|a| a.parse().ok().expect("a number"))
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .expect("usage: year LAKE_URL [DAYS] [SOURCES] [ROWS]");
    let (days, sources, rows): (u64, usize, usize) = (arg(2, 365), arg(3, 500), arg(4, 5));
    let mut config = LakeConfig::with_url(&url);
    config.vacuum_retention_hours = 0.0;
    let lake = Lake::open(&config).unwrap();
    let entity = Catalog::embedded().entity("patients").unwrap().clone();
    let schema = entity.arrow_schema();
    let first = NaiveDate::from_ymd_opt(2025, 12, 1).unwrap();
    let started = Instant::now();
    let mut commits = 0u64;
    for day in 0..days {
        let date = first + Days::new(day);
        let staged: Vec<_> = futures::stream::iter(0..sources)
            .map(|s| {
                let (lake, entity, schema) = (lake.clone(), entity.clone(), schema.clone());
                async move {
                    let id = format!("p-{:04}", s + 1);
                    let key = PartitionKey::new(SourceType::Pims, "patients", id, date).unwrap();
                    let mut w = lake.writer(entity, key, "year");
                    let at = (day * sources as u64 + s as u64) * rows as u64;
                    w.write_batch(&synthetic::batch(&schema, at, rows))
                        .await
                        .unwrap();
                    w.stage(Some(rows as u64)).await.unwrap()
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for result in lake.commit(staged).await {
            result.unwrap();
        }
        commits += 1;
        let night = [date].into();
        for (table, result) in lake
            .maintain(SourceType::Pims, "patients", Some(&night))
            .await
            .unwrap()
        {
            let done = result.unwrap_or_else(|e| panic!("{table}: {e}"));
            if table == "pims/patients" {
                commits += done.compacted.days;
            }
        }
    }
    let written = started.elapsed().as_secs_f64();

    // What a no-op run reads: the done set, from a fresh handle.
    let fresh = Lake::open(&LakeConfig::with_url(&url)).unwrap();
    let planning = Instant::now();
    let done = fresh
        .done_partitions(SourceType::Pims, "patients")
        .await
        .unwrap();
    let planning = planning.elapsed().as_secs_f64();
    assert_eq!(done.len() as u64, days * sources as u64);

    let store = lake.object_store();
    let table = lake.root().clone().join("pims").join("patients");
    let mut data_files = 0u64;
    let mut log_files = 0u64;
    let mut json_commits = 0u64;
    let mut listing = store.list(Some(&table));
    while let Some(meta) = listing.next().await {
        let meta = meta.unwrap();
        let path = meta.location.as_ref();
        match path.contains("/_delta_log/") {
            true => {
                log_files += 1;
                json_commits += u64::from(path.ends_with(".json"));
            }
            false => data_files += u64::from(meta.location.as_ref().ends_with(".parquet")),
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "days": days,
            "sources": sources,
            "rows_per_batch": rows,
            "batches": days * sources as u64,
            "write_secs": written,
            "batch_and_compaction_commits": commits,
            "data_files": data_files,
            "data_files_per_day": data_files as f64 / days as f64,
            "log_objects": log_files,
            "json_commits": json_commits,
            "done_set_secs": planning,
        })
    );
}
