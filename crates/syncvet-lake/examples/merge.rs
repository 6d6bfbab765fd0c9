//! The current-table merge at scale, for `tests/bench/run.sh merge`:
//!
//!   merge land DIR N        one source's day 1: N `patients`, merged into current/
//!   merge change DIR N T    day 2: N changed versions, N/10 new (after the T of day 1),
//!                           N/100 deleted; not merged
//!   merge absorb DIR        the merge alone (run it under /usr/bin/time)
//!
//! Each step is its own process, so the peak RSS of `absorb` is the merge's.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::NaiveDate;
use syncvet_lake::{Lake, LakeConfig, PartitionKey, synthetic};
use syncvet_model::{Catalog, SourceType};

const ROWS_PER_WRITE: usize = 8192;

fn day(n: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, n).unwrap()
}

/// Synthetic rows `first..first + n`, the id of row `i` `id-{id_of(i)}`,
/// live or deleted, modified at `modified` µs.
fn rows(
    first: u64,
    n: usize,
    id_of: impl Fn(u64) -> u64,
    modified: i64,
    deleted: bool,
) -> RecordBatch {
    let entity = Catalog::embedded().entity("patients").unwrap().clone();
    let schema = entity.arrow_schema();
    let base = synthetic::batch(&schema, first, n);
    let mut columns: Vec<ArrayRef> = base.columns().to_vec();
    let at = |name: &str| schema.index_of(name).unwrap();
    columns[at("id")] = Arc::new(StringArray::from_iter_values(
        (first..first + n as u64).map(|i| format!("id-{:010}", id_of(i))),
    ));
    let tz = match schema.field(at("last_modified")).data_type() {
        arrow::datatypes::DataType::Timestamp(_, tz) => tz.clone(),
        other => panic!("last_modified is {other}"),
    };
    columns[at("last_modified")] =
        Arc::new(TimestampMicrosecondArray::from_value(modified, n).with_timezone_opt(tz));
    columns[at("deleted")] = Arc::new(BooleanArray::from(vec![deleted; n]));
    RecordBatch::try_new(schema, columns).unwrap()
}

async fn land(lake: &Lake, date: NaiveDate, parts: &[(u64, usize, u64, i64, bool)]) {
    let entity = Catalog::embedded().entity("patients").unwrap().clone();
    let key = PartitionKey::new(SourceType::Pims, "patients", "p-0001", date).unwrap();
    let mut w = lake.writer(entity, key, "bench");
    for &(first, n, id_offset, modified, deleted) in parts {
        let mut at = first;
        while at < first + n as u64 {
            let k = ROWS_PER_WRITE.min((first + n as u64 - at) as usize);
            w.write_batch(&rows(at, k, |i| i + id_offset, modified, deleted))
                .await
                .unwrap();
            at += k as u64;
        }
    }
    w.commit(None).await.unwrap();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lake = Lake::open(&LakeConfig::with_url(&args[1])).unwrap();
    let n: u64 = args.get(2).map_or(0, |n| n.parse().unwrap());
    let day1 = 1_796_000_000_000_000;
    let day2 = day1 + 86_400_000_000;
    match args[0].as_str() {
        "land" => {
            land(&lake, day(1), &[(0, n as usize, 0, day1, false)]).await;
            let merged = lake
                .update_current(SourceType::Pims, "patients")
                .await
                .unwrap();
            println!("landed {n}, current rows {}", merged.rows_written);
        }
        "change" => {
            // Changes of the first N records, N/10 new ones after the
            // `total` landed, deletions of the first N/100.
            let total: u64 = args[3].parse().unwrap();
            land(
                &lake,
                day(2),
                &[
                    (0, n as usize, 0, day2, false),
                    (total, (n / 10) as usize, 0, day2, false),
                    (0, (n / 100) as usize, 0, day2 + 1, true),
                ],
            )
            .await;
        }
        "absorb" => {
            let started = Instant::now();
            let merged = lake
                .update_current(SourceType::Pims, "patients")
                .await
                .unwrap();
            println!(
                "merged {} batches, {} rows written in {:.2} s",
                merged.batches,
                merged.rows_written,
                started.elapsed().as_secs_f64()
            );
        }
        other => panic!("unknown step {other}"),
    }
}
