//! The current tables on the local file system, with hand-made change
//! feeds: the latest version wins, deletions remove rows, a deletion
//! outranks an older version landed after it, and every landing order,
//! re-landing and rebuild gives the same table.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Date32Type, TimestampMicrosecondType};
use chrono::NaiveDate;
use deltalake::DeltaTableBuilder;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use syncvet_lake::{Lake, LakeConfig, PartitionKey, synthetic};
use syncvet_model::{Catalog, Entity, SourceType};

fn patients() -> Arc<Entity> {
    Catalog::embedded().entity("patients").unwrap().clone()
}

fn day(n: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, n).unwrap()
}

/// One version of a record: (id, last_modified in seconds, deleted).
type V = (&'static str, i64, bool);

/// A batch of `versions`: synthetic values, with the ids, times and
/// deletion flags given.
fn rows(entity: &Entity, versions: &[V]) -> RecordBatch {
    let schema = entity.arrow_schema();
    let base = synthetic::batch(&schema, 0, versions.len());
    let mut columns: Vec<ArrayRef> = base.columns().to_vec();
    let at = |name: &str| schema.index_of(name).unwrap();
    columns[at("id")] = Arc::new(StringArray::from_iter_values(versions.iter().map(|v| v.0)));
    let tz = match schema.field(at("last_modified")).data_type() {
        arrow::datatypes::DataType::Timestamp(_, tz) => tz.clone(),
        other => panic!("last_modified is {other}"),
    };
    columns[at("last_modified")] = Arc::new(
        TimestampMicrosecondArray::from_iter_values(versions.iter().map(|v| v.1 * 1_000_000))
            .with_timezone_opt(tz),
    );
    columns[at("deleted")] = Arc::new(BooleanArray::from_iter(versions.iter().map(|v| Some(v.2))));
    RecordBatch::try_new(schema, columns).unwrap()
}

/// The change feed of source `p-1`: day → its batch.
fn feed() -> Vec<(u32, Vec<V>)> {
    vec![
        (
            1,
            vec![("a", 100, false), ("b", 100, false), ("c", 100, false)],
        ),
        // a changed, b deleted, d new.
        (
            2,
            vec![
                ("a", 200, false),
                ("b", 200, false),
                ("b", 210, true),
                ("d", 200, false),
            ],
        ),
        // c "deleted" with a time older than its version: c stays; e new.
        (3, vec![("c", 50, true), ("e", 300, false)]),
        // b comes back with a time older than its deletion: it stays deleted.
        // f is deleted on the day it appears.
        (
            4,
            vec![("b", 150, false), ("f", 400, false), ("f", 400, true)],
        ),
    ]
}

async fn land(lake: &Lake, source: &str, n: u32, versions: &[V]) {
    let entity = patients();
    let key = PartitionKey::new(SourceType::Pims, "patients", source, day(n)).unwrap();
    let mut w = lake.writer(entity.clone(), key, "test");
    w.write_batch(&rows(&entity, versions)).await.unwrap();
    w.commit(None).await.unwrap();
}

/// The current table: (source, id) → (last_modified seconds, batch_date), read
/// with delta-rs's log and the `parquet` reader; panics on a duplicate.
async fn current(root: &Path) -> BTreeMap<(String, String), (i64, NaiveDate)> {
    let dir = root.canonicalize().unwrap().join("current/pims/patients");
    let url = url::Url::from_directory_path(&dir).unwrap();
    let table = DeltaTableBuilder::from_url(url)
        .unwrap()
        .load()
        .await
        .unwrap();
    let snapshot = table.snapshot().unwrap();
    let mut out = BTreeMap::new();
    for f in snapshot.log_data().iter() {
        let source = f.partition_values_map()["practice_id"].clone().unwrap();
        let file = std::fs::File::open(dir.join(f.path().as_ref())).unwrap();
        for b in ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
        {
            let b = b.unwrap();
            assert!(
                b.column_by_name("practice_id").is_none(),
                "the partition is in the path"
            );
            let ids = b.column_by_name("id").unwrap().as_string::<i32>();
            let lm = b
                .column_by_name("last_modified")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            let dates = b
                .column_by_name("batch_date")
                .unwrap()
                .as_primitive::<Date32Type>();
            let deleted = b.column_by_name("deleted").unwrap().as_boolean();
            for i in 0..b.num_rows() {
                assert!(!deleted.value(i), "a deleted version is never current");
                let date = chrono::DateTime::UNIX_EPOCH.date_naive()
                    + chrono::Duration::days(i64::from(dates.value(i)));
                let previous = out.insert(
                    (source.clone(), ids.value(i).to_owned()),
                    (lm.value(i) / 1_000_000, date),
                );
                assert!(previous.is_none(), "{source}/{} twice", ids.value(i));
            }
        }
    }
    out
}

fn expected() -> BTreeMap<(String, String), (i64, NaiveDate)> {
    let mut out = BTreeMap::new();
    for source in ["p-1", "p-2"] {
        for (id, lm, n) in [("a", 200, 2), ("c", 100, 1), ("d", 200, 2), ("e", 300, 3)] {
            out.insert((source.to_owned(), id.to_owned()), (lm, day(n)));
        }
    }
    out
}

fn open(dir: &Path) -> Lake {
    Lake::open(&LakeConfig::with_url(dir.to_str().unwrap())).unwrap()
}

#[tokio::test]
async fn every_landing_order_gives_the_latest_live_version_of_each_record() {
    let orders: [&[u32]; 5] = [
        &[1, 2, 3, 4],
        &[4, 3, 2, 1],
        &[2, 4, 1, 3],
        &[3, 1, 4, 2],
        &[1, 3, 2, 4],
    ];
    for order in orders {
        let dir = tempfile::tempdir().unwrap();
        let lake = open(dir.path());
        let feed = feed();
        for &n in order {
            let versions = &feed.iter().find(|(d, _)| *d == n).unwrap().1;
            // Two sources, merged after every landing, as runs do.
            land(&lake, "p-1", n, versions).await;
            land(&lake, "p-2", n, versions).await;
            let update = lake
                .update_current(SourceType::Pims, "patients")
                .await
                .unwrap();
            assert_eq!(update.batches, 2, "{order:?}");
            assert!(update.errors.is_empty(), "{update:?}");
        }
        assert_eq!(current(dir.path()).await, expected(), "order {order:?}");
    }
}

#[tokio::test]
async fn merging_once_after_all_landings_or_rebuilding_gives_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    for (n, versions) in feed() {
        land(&lake, "p-1", n, &versions).await;
        land(&lake, "p-2", n, &versions).await;
    }
    let first = lake
        .update_current(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert_eq!((first.sources, first.batches, first.rebuilt), (2, 8, 0));
    assert_eq!(current(dir.path()).await, expected());

    // Nothing new: nothing merged, no commit.
    let again = lake
        .update_current(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert_eq!((again.sources, again.version), (0, None));

    // A re-landed batch (a forced re-run) rebuilds its source only.
    let (n, versions) = feed().remove(1);
    land(&lake, "p-2", n, &versions).await;
    let relanded = lake
        .update_current(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert_eq!(
        (relanded.sources, relanded.rebuilt, relanded.batches),
        (1, 1, 1)
    );
    assert_eq!(current(dir.path()).await, expected());

    let rebuilt = lake
        .rebuild_current(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert_eq!((rebuilt.sources, rebuilt.rebuilt), (2, 2));
    assert_eq!(current(dir.path()).await, expected());

    // A second process (its own handle) sees everything absorbed.
    let other = open(dir.path());
    let none = other
        .update_current(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert_eq!(none.sources, 0);
}

#[tokio::test]
async fn a_current_file_untouched_by_a_day_is_kept_and_memory_is_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let entity = patients();
    // p-1: 5 000 records on day 1, one changed on day 2.
    let key = PartitionKey::new(SourceType::Pims, "patients", "p-1", day(1)).unwrap();
    let mut w = lake.writer(entity.clone(), key, "test");
    let mut batch = synthetic::batch(&entity.arrow_schema(), 0, 5_000);
    let deleted = batch.schema().index_of("deleted").unwrap();
    let mut columns = batch.columns().to_vec();
    columns[deleted] = Arc::new(BooleanArray::from(vec![false; 5_000]));
    batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
    w.write_batch(&batch).await.unwrap();
    w.commit(None).await.unwrap();
    lake.update_current(SourceType::Pims, "patients")
        .await
        .unwrap();
    let before = current(dir.path()).await;
    assert_eq!(before.len(), 5_000);
    // p-2 lands; p-1's current file is not rewritten.
    land(&lake, "p-2", 2, &[("x", 500, false)]).await;
    let update = lake
        .update_current(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert_eq!((update.sources, update.rows_written), (1, 1));
    let after = current(dir.path()).await;
    assert_eq!(after.len(), 5_001);
    // p-1 changes one record: its 5 000 rows are written again, once.
    let id = before.keys().next().unwrap().1.clone();
    let id: &'static str = Box::leak(id.into_boxed_str());
    land(&lake, "p-1", 3, &[(id, 2_000_000_000, false)]).await;
    let update = lake
        .update_current(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert_eq!((update.sources, update.rows_written), (1, 5_000));
    let now = current(dir.path()).await;
    assert_eq!(now.len(), 5_001);
    assert_eq!(
        now[&("p-1".to_owned(), id.to_owned())],
        (2_000_000_000, day(3))
    );
}

/// `rows` synthetic records from `first`, all live or all deletions.
fn synthetic_rows(entity: &Entity, first: u64, rows: usize, deleted: bool) -> RecordBatch {
    let batch = synthetic::batch(&entity.arrow_schema(), first, rows);
    let at = batch.schema().index_of("deleted").unwrap();
    let mut columns = batch.columns().to_vec();
    columns[at] = Arc::new(BooleanArray::from(vec![deleted; rows]));
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

/// Merges the landed batches into the current table and checks the rows
/// it wrote and, of them, copied with their history files.
async fn merged(lake: &Lake, written: u64, copied: u64) {
    let update = lake
        .update_current(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert_eq!(
        (update.rows_written, update.rows_copied),
        (written, copied),
        "{update:?}"
    );
}

/// The active files of `table` in the partition `folder`, by path.
async fn active_files(root: &Path, table: &str, folder: &str) -> Vec<String> {
    let dir = root.canonicalize().unwrap().join(table);
    let url = url::Url::from_directory_path(&dir).unwrap();
    let table = DeltaTableBuilder::from_url(url)
        .unwrap()
        .load()
        .await
        .unwrap();
    let mut paths: Vec<String> = table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| f.path().into_owned())
        .filter(|p| p.starts_with(folder))
        .collect();
    paths.sort();
    paths
}

/// Every row of the active files of `table` in the partition `folder`, in
/// file order (files by path), read with the `parquet` reader.
async fn file_rows(root: &Path, table: &str, folder: &str) -> Vec<RecordBatch> {
    let dir = root.canonicalize().unwrap().join(table);
    active_files(root, table, folder)
        .await
        .iter()
        .flat_map(|p| {
            let file = std::fs::File::open(dir.join(p)).unwrap();
            ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
        })
        .collect()
}

#[tokio::test]
async fn a_large_batch_is_copied_into_the_current_table_column_chunks_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LakeConfig::with_url(dir.path().to_str().unwrap());
    config.row_group_rows = 1_000;
    let lake = Lake::open(&config).unwrap();
    let entity = patients();
    // Day 1: 3 000 live records with 50 deletions of others among them.
    let key = PartitionKey::new(SourceType::Pims, "patients", "p-1", day(1)).unwrap();
    let mut w = lake.writer(entity.clone(), key, "test");
    let live = synthetic_rows(&entity, 0, 3_000, false);
    let gone = synthetic_rows(&entity, 10_000, 50, true);
    for (batch, from, len) in [
        (&live, 0, 1_000),
        (&gone, 0, 25),
        (&live, 1_000, 2_000),
        (&gone, 25, 25),
    ] {
        w.write_batch(&batch.slice(from, len)).await.unwrap();
    }
    let landed = w.commit(None).await.unwrap();
    // Statistics for keys, references and non-text columns; none for text.
    let url =
        url::Url::from_directory_path(dir.path().canonicalize().unwrap().join("pims/patients"))
            .unwrap();
    let history = DeltaTableBuilder::from_url(url)
        .unwrap()
        .load()
        .await
        .unwrap();
    for file in history.snapshot().unwrap().log_data().iter() {
        let stats: serde_json::Value = serde_json::from_str(&file.stats().unwrap()).unwrap();
        for column in ["practice_id", "id", "last_modified", "_run_id"] {
            assert!(!stats["minValues"][column].is_null(), "{column}: {stats}");
        }
        assert!(stats["minValues"].get("name").is_none(), "{stats}");
    }
    assert_eq!(
        landed.files.len(),
        2,
        "the deletions have a file of their own: {landed:?}"
    );

    merged(&lake, 3_000, 3_000).await;
    let now = current(dir.path()).await;
    assert_eq!(now.len(), 3_000);
    assert!(now.values().all(|(_, date)| *date == day(1)));
    // A run's compaction leaves the batch's two files; `maintain` merges them.
    let day_one = std::collections::BTreeSet::from([day(1)]);
    lake.maintain(SourceType::Pims, "patients", Some(&day_one))
        .await
        .unwrap();
    assert_eq!(
        active_files(dir.path(), "pims/patients", "batch_date=2026-11-01")
            .await
            .len(),
        2
    );
    // The copy holds the history's live rows, value for value, with the
    // batch date and without the source column.
    let history = file_rows(dir.path(), "pims/patients", "batch_date=2026-11-01").await;
    let history = arrow::compute::concat_batches(&history[0].schema(), &history).unwrap();
    let live =
        arrow::compute::not(history.column_by_name("deleted").unwrap().as_boolean()).unwrap();
    let history = arrow::compute::filter_record_batch(&history, &live).unwrap();
    let copied = file_rows(dir.path(), "current/pims/patients", "practice_id=p-1").await;
    let copied = arrow::compute::concat_batches(&copied[0].schema(), &copied).unwrap();
    assert_eq!(copied.num_rows(), 3_000);
    for field in copied.schema().fields() {
        let name = field.name();
        if name == "batch_date" {
            assert_eq!(copied.column_by_name(name).unwrap().null_count(), 0);
            continue;
        }
        let was = history
            .column_by_name(name)
            .unwrap_or_else(|| panic!("history has no {name}"));
        assert_eq!(field.data_type(), was.data_type(), "{name}");
        assert_eq!(
            copied.column_by_name(name).unwrap().as_ref(),
            was.as_ref(),
            "{name}"
        );
    }

    // Day 2, small: one record changed, one new, no deletion. Day 1's copy
    // loses a row and is written again, with day 2's rows: one new file
    // (a small file is not copied on its own).
    let changed = now.keys().next().unwrap().1.clone();
    let changed: &'static str = Box::leak(changed.into_boxed_str());
    land(
        &lake,
        "p-1",
        2,
        &[
            (changed, 2_000_000_000, false),
            ("new", 2_000_000_000, false),
        ],
    )
    .await;
    merged(&lake, 3_001, 0).await;
    let now = current(dir.path()).await;
    assert_eq!(now.len(), 3_001);
    let files = active_files(dir.path(), "current/pims/patients", "practice_id=p-1").await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        now[&("p-1".to_owned(), changed.to_owned())],
        (2_000_000_000, day(2))
    );

    lake.maintain(SourceType::Pims, "patients", None)
        .await
        .unwrap();
    assert_eq!(
        active_files(dir.path(), "pims/patients", "batch_date=2026-11-01")
            .await
            .len(),
        1
    );

    // Day 3, small, with a deletion: one file, the deletion at its end,
    // and nothing copied (the deletion does not win a row).
    let deleted = now.keys().nth(1).unwrap().1.clone();
    let deleted: &'static str = Box::leak(deleted.into_boxed_str());
    land(
        &lake,
        "p-1",
        3,
        &[
            (deleted, 2_000_000_001, true),
            ("newer", 2_000_000_001, false),
        ],
    )
    .await;
    let history = file_rows(dir.path(), "pims/patients", "batch_date=2026-11-03").await;
    assert_eq!(history.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
    merged(&lake, 3_001, 0).await;
    let now = current(dir.path()).await;
    assert_eq!(now.len(), 3_001);
    assert!(!now.contains_key(&("p-1".to_owned(), deleted.to_owned())));
    assert!(now.contains_key(&("p-1".to_owned(), "newer".to_owned())));
}
