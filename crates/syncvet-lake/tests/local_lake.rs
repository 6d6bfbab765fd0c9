//! The lake on the local file system: batches land in Delta tables, read
//! back through the Delta log with the `parquet` reader; reconcile, rotate,
//! replace, crash mid-batch, race two processes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use chrono::NaiveDate;
use deltalake::DeltaTableBuilder;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use syncvet_lake::{Compacted, Lake, LakeConfig, LakeError, PartitionKey, synthetic};
use syncvet_model::{Catalog, Entity, SourceType};

fn patients() -> Arc<Entity> {
    Catalog::embedded().entity("patients").unwrap().clone()
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
}

fn key(id: &str) -> PartitionKey {
    PartitionKey::new(SourceType::Pims, "patients", id, date()).unwrap()
}

fn lake(dir: &Path, tweak: impl FnOnce(&mut LakeConfig)) -> Lake {
    let mut config = LakeConfig::with_url(dir.to_str().unwrap());
    tweak(&mut config);
    Lake::open(&config).unwrap()
}

/// What the Delta log of a table says, read with delta-rs and the files
/// it adds read with the `parquet` reader: rows per (source, date), the
/// version, the number of active files.
struct Read {
    version: u64,
    files: usize,
    /// (source column value, batch_date partition) → rows, in file order.
    rows: BTreeMap<(String, String), Vec<RecordBatch>>,
}

impl Read {
    /// The source's ids, sorted: a batch's deletions end its file (or
    /// have one of their own), so its rows are not in page order.
    fn ids(&self, source: &str) -> Vec<String> {
        let mut ids = self.column(source, "id");
        ids.sort();
        ids
    }

    fn column(&self, source: &str, name: &str) -> Vec<String> {
        self.column_on(source, date(), name)
    }

    fn column_on(&self, source: &str, day: NaiveDate, name: &str) -> Vec<String> {
        self.rows
            .get(&(source.to_owned(), day.to_string()))
            .into_iter()
            .flatten()
            .flat_map(|b| {
                let col = arrow::compute::cast(
                    b.column_by_name(name).unwrap(),
                    &arrow::datatypes::DataType::Utf8,
                )
                .unwrap();
                let col = col.as_string::<i32>().clone();
                (0..col.len())
                    .map(|i| col.value(i).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every (source, day) → its ids, sorted: what a reader sees.
    fn all_ids(&self) -> BTreeMap<(String, String), Vec<String>> {
        self.all("id")
    }

    /// Every (source, day) → the values of column `name`, sorted.
    fn all(&self, name: &str) -> BTreeMap<(String, String), Vec<String>> {
        self.rows
            .keys()
            .map(|(source, day)| {
                let mut ids = self.column_on(source, day.parse().unwrap(), name);
                ids.sort();
                ((source.clone(), day.clone()), ids)
            })
            .collect()
    }
}

async fn read_table(root: &Path, table: &str, source_column: &str) -> Option<Read> {
    read_table_at(root, table, source_column, None).await
}

/// The table at `version` (the latest when `None`); every file the log
/// adds must be on disk with the size the log gives.
async fn read_table_at(
    root: &Path,
    table: &str,
    source_column: &str,
    version: Option<u64>,
) -> Option<Read> {
    let dir = root.canonicalize().unwrap().join(table);
    if !dir.exists() {
        return None;
    }
    let url = url::Url::from_directory_path(&dir).unwrap();
    let mut builder = DeltaTableBuilder::from_url(url).unwrap();
    if let Some(v) = version {
        builder = builder.with_version(v);
    }
    // `DeltaTable::load` goes to the latest version; the builder's keeps `version`.
    let t = match builder.load().await {
        Ok(t) => t,
        Err(deltalake::DeltaTableError::NotATable(_)) => return None,
        Err(e) => panic!("{table}: {e}"),
    };
    let snapshot = t.snapshot().unwrap();
    let mut rows: BTreeMap<(String, String), Vec<RecordBatch>> = BTreeMap::new();
    let mut files = 0;
    for f in snapshot.log_data().iter() {
        files += 1;
        let date = f.partition_values_map()["batch_date"].clone().unwrap();
        let file = std::fs::File::open(dir.join(f.path().as_ref())).unwrap();
        assert_eq!(
            file.metadata().unwrap().len() as i64,
            f.size(),
            "{}",
            f.path()
        );
        for b in ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
        {
            let b = b.unwrap();
            assert!(
                b.column_by_name("batch_date").is_none(),
                "the partition column is in the path only"
            );
            assert!(b.num_rows() > 0);
            // A compacted file holds many sources: split its rows by source.
            let source = b.column_by_name(source_column).unwrap().as_string::<i32>();
            let sources: std::collections::BTreeSet<String> =
                source.iter().map(|s| s.unwrap().to_owned()).collect();
            for id in sources {
                let mask: arrow::array::BooleanArray = source
                    .iter()
                    .map(|s| Some(s == Some(id.as_str())))
                    .collect();
                let part = arrow::compute::filter_record_batch(&b, &mask).unwrap();
                rows.entry((id, date.clone())).or_default().push(part);
            }
        }
    }
    Some(Read {
        version: snapshot.version(),
        files,
        rows,
    })
}

async fn write_rows(
    w: &mut syncvet_lake::BatchWriter,
    entity: &Entity,
    first: u64,
    rows: usize,
    per_batch: usize,
) {
    let mut at = first;
    while at < first + rows as u64 {
        let n = per_batch.min((first + rows as u64 - at) as usize);
        w.write_batch(&synthetic::batch(&entity.arrow_schema(), at, n))
            .await
            .unwrap();
        at += n as u64;
    }
}

fn expected_ids(first: u64, rows: u64) -> Vec<String> {
    (first..first + rows)
        .map(|i| format!("id-{i:010}"))
        .collect()
}

#[tokio::test]
async fn a_batch_lands_with_its_rejects_lineage_and_transaction() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let entity = patients();
    let k = key("p-0001");
    assert!(
        lake.done_partitions(SourceType::Pims, "patients")
            .await
            .unwrap()
            .is_empty()
    );

    let mut w = lake.writer(entity.clone(), k.clone(), "run-1");
    write_rows(&mut w, &entity, 0, 700, 700).await;
    w.write_rejects(&[("{\"id\":1}", "name", "required field is missing")])
        .await
        .unwrap();
    write_rows(&mut w, &entity, 700, 300, 300).await;
    let summary = w.commit(Some(1001)).await.unwrap();
    assert_eq!((summary.rows, summary.rejected), (1000, 1));
    assert_eq!(summary.files.len(), 1);
    assert!(
        summary.files[0].starts_with("batch_date=2026-11-27/part-")
            && summary.files[0].ends_with(".parquet"),
        "{:?}",
        summary.files
    );

    let read = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(read.ids("p-0001"), expected_ids(0, 1000));
    assert!(
        read.column("p-0001", "_run_id")
            .iter()
            .all(|r| r == "run-1")
    );
    assert_eq!(read.column("p-0001", "_loaded_at").len(), 1000);
    assert_eq!(read.version, summary.version);

    let rejects = read_table(tmp.path(), "_quarantine/patients", "source_id")
        .await
        .unwrap();
    assert_eq!(
        rejects.column("p-0001", "reason"),
        ["required field is missing"]
    );
    assert_eq!(rejects.column("p-0001", "raw"), ["{\"id\":1}"]);
    assert_eq!(rejects.column("p-0001", "entity"), ["patients"]);
    assert_eq!(rejects.column("p-0001", "source_type"), ["pims"]);

    assert_eq!(
        lake.done_partitions(SourceType::Pims, "patients")
            .await
            .unwrap(),
        vec![k.clone()]
    );
    // A second process (a fresh lake handle) reads the same done set from the log.
    let other = self::lake(tmp.path(), |_| {});
    assert_eq!(
        other
            .done_partitions(SourceType::Pims, "patients")
            .await
            .unwrap(),
        vec![k]
    );
}

#[tokio::test]
async fn a_mismatch_with_the_source_total_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let entity = patients();
    let mut w = lake.writer(entity.clone(), key("p-0001"), "run-1");
    write_rows(&mut w, &entity, 0, 500, 250).await;
    let err = w.commit(Some(501)).await.unwrap_err();
    assert!(
        matches!(
            err,
            LakeError::Reconciliation {
                expected: 501,
                written: 500,
                rejected: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("501"), "{err}");
    assert!(
        lake.done_partitions(SourceType::Pims, "patients")
            .await
            .unwrap()
            .is_empty()
    );
    if let Some(read) = read_table(tmp.path(), "pims/patients", "practice_id").await {
        assert_eq!(read.files, 0);
    }
}

#[tokio::test]
async fn files_rotate_at_max_file_bytes_and_all_land_in_one_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |c| {
        c.max_file_bytes = 64 * 1024;
        c.row_group_rows = 1000;
    });
    let entity = patients();
    let mut w = lake.writer(entity.clone(), key("p-0001"), "run-1");
    write_rows(&mut w, &entity, 0, 20_000, 1000).await;
    let summary = w.commit(Some(20_000)).await.unwrap();
    assert!(summary.files.len() > 2, "{} files", summary.files.len());
    let read = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(read.files, summary.files.len());
    let mut ids = read.ids("p-0001");
    ids.sort();
    assert_eq!(ids, expected_ids(0, 20_000));
    // Table creation is version 0; the batch is one commit.
    assert_eq!(read.version, 1);
}

#[tokio::test]
async fn a_rewrite_replaces_the_batch_in_one_commit_and_leaves_others_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let entity = patients();
    for (id, rows) in [("p-0001", 1000), ("p-0002", 300)] {
        let mut w = lake.writer(entity.clone(), key(id), "run-1");
        write_rows(&mut w, &entity, 0, rows, 500).await;
        w.write_rejects(&[("{}", "", "bad")]).await.unwrap();
        w.commit(Some(rows as u64 + 1)).await.unwrap();
    }
    let before = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();

    let mut w = lake.writer(entity.clone(), key("p-0001"), "run-2");
    write_rows(&mut w, &entity, 5000, 400, 400).await;
    let summary = w.commit(Some(400)).await.unwrap();
    assert_eq!(
        summary.version,
        before.version + 1,
        "one commit replaces the batch"
    );

    let after = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(after.ids("p-0001"), expected_ids(5000, 400));
    assert!(
        after
            .column("p-0001", "_run_id")
            .iter()
            .all(|r| r == "run-2")
    );
    assert_eq!(after.ids("p-0002"), before.ids("p-0002"));
    // The rejects of the first run went with it; the other batch's stay.
    let rejects = read_table(tmp.path(), "_quarantine/patients", "source_id")
        .await
        .unwrap();
    assert!(rejects.column("p-0001", "raw").is_empty());
    assert_eq!(rejects.column("p-0002", "raw"), ["{}"]);
    assert_eq!(
        lake.done_partitions(SourceType::Pims, "patients")
            .await
            .unwrap(),
        vec![key("p-0001"), key("p-0002")]
    );
}

#[tokio::test]
async fn an_empty_batch_is_done_without_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let w = lake.writer(patients(), key("p-0009"), "run-1");
    let summary = w.commit(Some(0)).await.unwrap();
    assert!(summary.files.is_empty());
    assert_eq!(
        lake.done_partitions(SourceType::Pims, "patients")
            .await
            .unwrap(),
        vec![key("p-0009")]
    );
    let read = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(read.files, 0);
    // The table carries the full schema for readers even with no file.
    let url =
        url::Url::from_directory_path(tmp.path().canonicalize().unwrap().join("pims/patients"))
            .unwrap();
    let t = deltalake::open_table(url).await.unwrap();
    let schema = t.snapshot().unwrap().schema();
    for column in [
        "practice_id",
        "id",
        "batch_date",
        "_run_id",
        "_loaded_at",
        "last_modified",
    ] {
        assert!(schema.field(column).is_some(), "{column}");
    }
}

#[tokio::test]
async fn a_writer_dropped_or_restarted_mid_batch_commits_nothing_of_before() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |c| c.row_group_rows = 1000);
    let entity = patients();
    {
        let mut w = lake.writer(entity.clone(), key("p-0001"), "run-1");
        write_rows(&mut w, &entity, 0, 5000, 1000).await;
        // Dropped without a commit, as an aborted task is.
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        lake.done_partitions(SourceType::Pims, "patients")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        read_table(tmp.path(), "pims/patients", "practice_id")
            .await
            .is_none()
    );

    let mut w = lake.writer(entity.clone(), key("p-0001"), "run-2");
    write_rows(&mut w, &entity, 0, 3000, 1000).await;
    w.write_rejects(&[("x", "", "bad")]).await.unwrap();
    w.restart().await.unwrap();
    assert_eq!((w.rows(), w.rejected()), (0, 0));
    write_rows(&mut w, &entity, 100, 200, 100).await;
    w.commit(Some(200)).await.unwrap();
    let read = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(read.ids("p-0001"), expected_ids(100, 200));
    assert!(
        read_table(tmp.path(), "_quarantine/patients", "source_id")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn two_processes_writing_one_batch_land_it_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    // Two lake handles share nothing in memory, as two processes would not.
    let (a, b) = (lake(tmp.path(), |_| {}), lake(tmp.path(), |_| {}));
    let entity = patients();
    let reject = [("{\"id\":1}", "name", "required field is missing")];
    let mut wa = a.writer(entity.clone(), key("p-0001"), "run-a");
    let mut wb = b.writer(entity.clone(), key("p-0001"), "run-b");
    for w in [&mut wa, &mut wb] {
        write_rows(w, &entity, 0, 1000, 500).await;
        w.write_rejects(&reject).await.unwrap();
    }
    wa.commit(Some(1001)).await.unwrap();
    let err = wb.commit(Some(1001)).await.unwrap_err();
    assert!(matches!(err, LakeError::CommitConflict { .. }), "{err}");
    assert_landed_once_by(tmp.path(), "run-a").await;
}

/// The batch p-0001 holds ids 0..1000 and one reject, all landed by `run`;
/// every file the logs add is on disk (`read_table` checks).
async fn assert_landed_once_by(root: &Path, run: &str) {
    let read = read_table(root, "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(read.ids("p-0001"), expected_ids(0, 1000));
    assert!(read.column("p-0001", "_run_id").iter().all(|r| r == run));
    let rejects = read_table(root, "_quarantine/patients", "source_id")
        .await
        .unwrap();
    assert_eq!(rejects.column("p-0001", "_run_id"), [run]);
}

#[tokio::test]
async fn a_writer_that_loses_the_race_between_the_winners_two_commits_lands_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (lake(tmp.path(), |_| {}), lake(tmp.path(), |_| {}));
    let entity = patients();
    let reject = [("{\"id\":1}", "name", "required field is missing")];
    let mut staged = Vec::new();
    for (lake, run) in [(&a, "run-a"), (&b, "run-b")] {
        let mut w = lake.writer(entity.clone(), key("p-0001"), run);
        write_rows(&mut w, &entity, 0, 1000, 500).await;
        w.write_rejects(&reject).await.unwrap();
        staged.push(w.stage(Some(1001)).await.unwrap());
    }
    let staged_b = staged.pop().unwrap();
    // Both commit at once: b's rejects may land between a's two commits,
    // or a's between b's; either way one batch wins whole and the
    // loser's files are gone from the logs and the store alike.
    let (ra, rb) = tokio::join!(a.commit(staged), b.commit(vec![staged_b]));
    let (ra, rb) = (
        ra.into_iter().next().unwrap(),
        rb.into_iter().next().unwrap(),
    );
    let winner = match (&ra, &rb) {
        (Ok(_), Err(LakeError::CommitConflict { .. })) => "run-a",
        (Err(LakeError::CommitConflict { .. }), Ok(_)) => "run-b",
        other => panic!("exactly one commit wins: {other:?}"),
    };
    assert_landed_once_by(tmp.path(), winner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_on_different_batches_lose_no_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let lakes = [lake(tmp.path(), |_| {}), lake(tmp.path(), |_| {})];
    let entity = patients();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let lake = lakes[i % 2].clone();
        let entity = entity.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("p-{i:04}");
            let mut w = lake.writer(entity.clone(), key(&id), "run");
            write_rows(&mut w, &entity, 0, 50 + i, 100).await;
            w.commit(Some(50 + i as u64)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let read = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    for i in 0..16 {
        assert_eq!(read.ids(&format!("p-{i:04}")).len(), 50 + i, "p-{i:04}");
    }
    let fresh = lake(tmp.path(), |_| {});
    assert_eq!(
        fresh
            .done_partitions(SourceType::Pims, "patients")
            .await
            .unwrap()
            .len(),
        16
    );
}

#[tokio::test]
async fn the_done_set_is_read_from_a_checkpoint_and_the_commits_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let entity = patients();
    for i in 0..3 {
        let mut w = lake.writer(entity.clone(), key(&format!("p-{i}")), "run");
        write_rows(&mut w, &entity, 0, 10, 10).await;
        w.commit(Some(10)).await.unwrap();
    }
    let url =
        url::Url::from_directory_path(tmp.path().canonicalize().unwrap().join("pims/patients"))
            .unwrap();
    let table = deltalake::open_table(url).await.unwrap();
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .unwrap();
    let w = lake.writer(entity.clone(), key("p-3"), "run");
    w.commit(Some(0)).await.unwrap();
    // Older commits gone, as log cleanup removes them: the checkpoint must answer.
    std::fs::remove_file(
        tmp.path()
            .join("pims/patients/_delta_log/00000000000000000001.json"),
    )
    .unwrap();
    let fresh = self::lake(tmp.path(), |_| {});
    let done: Vec<String> = fresh
        .done_partitions(SourceType::Pims, "patients")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.source_id)
        .collect();
    assert_eq!(done, ["p-0", "p-1", "p-2", "p-3"]);
}

#[tokio::test]
async fn run_reports_are_stored_under_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    assert_eq!(lake.latest_run_id().await.unwrap(), None);
    assert_eq!(lake.get_run_report("r1").await.unwrap(), None);
    let at = lake
        .put_run_report("20261128T020000Z-a", "{\"a\":1}".into())
        .await
        .unwrap();
    assert!(at.ends_with("_runs/20261128T020000Z-a.json"), "{at}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    lake.put_run_report("20261129T020000Z-b", "{\"b\":2}".into())
        .await
        .unwrap();
    assert_eq!(
        lake.latest_run_id().await.unwrap().as_deref(),
        Some("20261129T020000Z-b")
    );
    assert_eq!(
        lake.get_run_report("20261128T020000Z-a")
            .await
            .unwrap()
            .unwrap(),
        bytes::Bytes::from("{\"a\":1}")
    );
    assert!(matches!(
        lake.put_run_report("../x", "{}".into()).await,
        Err(LakeError::UnsafePathSegment { .. })
    ));
}

/// `patients` from a user's catalog folder: the embedded file with each
/// `(from, to)` replaced (each must be found) and `extra` appended.
fn patients_edited(dir: &Path, edits: &[(&str, &str)], extra: &str) -> Arc<Entity> {
    let mut toml = include_str!("../../syncvet-model/catalog/pims/patients.toml").to_owned();
    for (from, to) in edits {
        assert!(toml.contains(from), "the catalog has no `{from}`");
        toml = toml.replace(from, to);
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("patients.toml"), format!("{toml}\n{extra}")).unwrap();
    Catalog::load(Some(dir))
        .unwrap()
        .entity("patients")
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_catalog_that_gains_a_field_adds_the_column_and_old_rows_read_null() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(&tmp.path().join("lake"), |_| {});
    let entity = patients();
    let mut w = lake.writer(entity.clone(), key("p-0001"), "run-1");
    write_rows(&mut w, &entity, 0, 10, 10).await;
    w.commit(Some(10)).await.unwrap();

    let wider = patients_edited(
        &tmp.path().join("catalog"),
        &[],
        "[[fields]]\nkey = \"microchipNumber\"\ntype = \"string\"\n",
    );
    assert!(
        wider
            .arrow_schema()
            .field_with_name("microchip_number")
            .is_ok()
    );
    let mut w = lake.writer(wider.clone(), key("p-0002"), "run-2");
    write_rows(&mut w, &wider, 0, 5, 5).await;
    w.commit(Some(5)).await.unwrap();

    let url = url::Url::from_directory_path(
        tmp.path()
            .join("lake")
            .canonicalize()
            .unwrap()
            .join("pims/patients"),
    )
    .unwrap();
    let t = deltalake::open_table(url).await.unwrap();
    let field = t
        .snapshot()
        .unwrap()
        .schema()
        .field("microchip_number")
        .cloned()
        .expect("the column was added");
    assert!(field.is_nullable());
    let read = read_table(&tmp.path().join("lake"), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(read.column("p-0002", "microchip_number").len(), 5);
    let old = &read.rows[&("p-0001".to_owned(), date().to_string())];
    assert!(
        old.iter()
            .all(|b| b.column_by_name("microchip_number").is_none()),
        "old files are not rewritten"
    );
}

/// The embedded `weight` field with its generation hint, which an edit of
/// its type replaces too (a `range` does not fit a string).
const WEIGHT: &str = "key = \"weight\"\ntype = \"decimal(9,3)\"\nrange = [0, 80]";

#[tokio::test]
async fn a_widened_type_rewrites_every_file_in_one_commit_and_keeps_every_value() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("lake");
    let lake = lake(&root, |_| {});
    let entity = patients();
    for (i, source) in ["p-0001", "p-0003"].into_iter().enumerate() {
        let mut w = lake.writer(entity.clone(), key(source), "run-1");
        write_rows(&mut w, &entity, 100 * i as u64, 10, 4).await;
        w.commit(Some(10)).await.unwrap();
    }
    let before = read_table(&root, "pims/patients", "practice_id")
        .await
        .unwrap();

    // Two integer digits and one decimal more (the old files are rewritten
    // with it), and a new column in the same commit.
    let wider = patients_edited(
        &tmp.path().join("catalog"),
        &[(WEIGHT, "key = \"weight\"\ntype = \"decimal(12,4)\"")],
        "[[fields]]\nkey = \"primaryVet.phone\"\ntype = \"string\"\n",
    );
    // A writer still on the old catalog, started before the change.
    let mut old_writer = lake.writer(entity.clone(), key("p-0004"), "run-3");
    write_rows(&mut old_writer, &entity, 0, 3, 3).await;
    let mut w = lake.writer(wider.clone(), key("p-0002"), "run-2");
    write_rows(&mut w, &wider, 0, 5, 5).await;
    w.commit(Some(5)).await.unwrap();

    let after = read_table(&root, "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(
        after.version,
        before.version + 2,
        "one schema commit, one batch commit"
    );
    let widen = commit_actions(&root, "pims/patients", before.version + 1);
    let metadata = widen
        .iter()
        .find_map(|a| a.get("metaData"))
        .expect("a new schema");
    let schema = metadata["schemaString"].as_str().unwrap();
    assert!(schema.contains("\"decimal(12,4)\""), "{schema}");
    assert!(schema.contains("\"primary_vet_phone\""), "{schema}");
    let removes: Vec<_> = widen.iter().filter_map(|a| a.get("remove")).collect();
    let adds: Vec<_> = widen.iter().filter_map(|a| a.get("add")).collect();
    assert_eq!(removes.len(), before.files, "every old file replaced");
    assert!(!adds.is_empty());
    assert!(
        removes
            .iter()
            .chain(&adds)
            .all(|a| a["dataChange"] == false),
        "a rewrite changes no data"
    );
    for batches in after.rows.values() {
        for b in batches {
            let weight = b.column_by_name("weight").unwrap();
            assert_eq!(
                weight.data_type(),
                &arrow::datatypes::DataType::Decimal128(12, 4)
            );
            assert!(
                b.column_by_name("primary_vet_phone").is_some(),
                "every file has the new column"
            );
        }
    }
    let number = |v: &String| v.parse::<f64>().ok();
    for source in ["p-0001", "p-0003"] {
        assert_eq!(after.ids(source), before.ids(source));
        let old: Vec<_> = before.column(source, "weight").iter().map(number).collect();
        let new: Vec<_> = after.column(source, "weight").iter().map(number).collect();
        assert!(old.iter().flatten().count() > 5, "the test needs weights");
        assert_eq!(old, new, "{source}'s weights");
    }
    assert_eq!(after.ids("p-0002").len(), 5);

    // The old catalog's writer is refused at its commit: the table cannot
    // go back, and its files are not of the table's types.
    let err = old_writer.commit(Some(3)).await.unwrap_err();
    assert!(matches!(err, LakeError::TypeChange { .. }), "{err}");
    let err = err.to_string();
    for part in ["pims/patients", "weight", "decimal(12,4)", "decimal(9,3)"] {
        assert!(err.contains(part), "{part} not in: {err}");
    }
    let last = read_table(&root, "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(last.version, after.version);
}

#[tokio::test]
async fn a_field_whose_type_cannot_widen_is_refused_by_name_and_nothing_is_written() {
    // `weight` is decimal(9,3) in the embedded catalog.
    for (to, why) in [
        ("string", "only a widening"),
        ("decimal(7,3)", "a decimal may only gain"),
        ("decimal(10,2)", "a decimal may only gain"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("lake");
        let lake = lake(&root, |_| {});
        let entity = patients();
        let mut w = lake.writer(entity.clone(), key("p-0001"), "run-1");
        write_rows(&mut w, &entity, 0, 10, 10).await;
        w.commit(Some(10)).await.unwrap();
        let before = read_table(&root, "pims/patients", "practice_id")
            .await
            .unwrap();

        let changed = patients_edited(
            &tmp.path().join("catalog"),
            &[(WEIGHT, &format!("key = \"weight\"\ntype = \"{to}\""))],
            "",
        );
        // Refused at the first rows, before the rest of the batch is fetched.
        let mut w = lake.writer(changed.clone(), key("p-0002"), "run-2");
        let err = w
            .write_batch(&synthetic::batch(&changed.arrow_schema(), 0, 5))
            .await
            .unwrap_err();
        assert!(matches!(err, LakeError::TypeChange { .. }), "{err}");
        let err = err.to_string();
        for part in ["pims/patients", "`weight`", "decimal(9,3)", to, why] {
            assert!(err.contains(part), "{part} not in: {err}");
        }
        let after = read_table(&root, "pims/patients", "practice_id")
            .await
            .unwrap();
        assert_eq!(after.version, before.version, "nothing committed");
        assert!(after.ids("p-0002").is_empty());
        assert_eq!(
            parquet_on_disk(&root, "pims/patients"),
            before.files,
            "the refused writer's files are gone"
        );
    }
}

#[tokio::test]
async fn a_lake_of_the_old_per_partition_layout_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp
        .path()
        .join("pims/patients/practice_id=p-0001/batch_date=2026-11-27");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("_manifest.json"), "{}").unwrap();
    let lake = lake(tmp.path(), |_| {});
    let err = lake
        .done_partitions(SourceType::Pims, "patients")
        .await
        .unwrap_err();
    assert!(matches!(err, LakeError::OldLayout { .. }), "{err}");
    assert!(err.to_string().contains("practice_id=p-0001"), "{err}");
    let entity = patients();
    let mut w = lake.writer(entity.clone(), key("p-0002"), "run-1");
    let written = w
        .write_batch(&synthetic::batch(&entity.arrow_schema(), 0, 5))
        .await;
    assert!(
        matches!(written, Err(LakeError::OldLayout { .. })),
        "{written:?}"
    );
    assert!(!tmp.path().join("pims/patients/_delta_log").exists());
}

#[tokio::test]
async fn a_group_of_batches_lands_in_one_commit_per_table() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let entity = patients();
    let clients = Catalog::embedded().entity("clients").unwrap().clone();
    let committer = syncvet_lake::GroupCommitter::new(&lake);
    let mut pending = Vec::new();
    for i in 0..6 {
        let (entity, key) = if i % 3 == 2 {
            (
                clients.clone(),
                PartitionKey::new(SourceType::Pims, "clients", format!("p-{i}"), date()).unwrap(),
            )
        } else {
            (entity.clone(), key(&format!("p-{i}")))
        };
        let mut w = lake.writer(entity.clone(), key, "run-1");
        write_rows(&mut w, &entity, 0, 20, 20).await;
        if i == 1 {
            w.write_rejects(&[("{}", "", "bad")]).await.unwrap();
        }
        let total = 20 + u64::from(i == 1);
        pending.push(committer.submit(w.stage(Some(total)).await.unwrap()));
    }
    committer.finish().await;
    let mut versions = Vec::new();
    for p in pending {
        versions.push(p.await.unwrap().version);
    }
    // Version 0 created each table; the group is version 1 of each.
    assert_eq!(versions, [1, 1, 1, 1, 1, 1]);
    let read = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!((read.version, read.rows.len()), (1, 4));
    let clients = read_table(tmp.path(), "pims/clients", "practice_id")
        .await
        .unwrap();
    assert_eq!((clients.version, clients.rows.len()), (1, 2));
    let rejects = read_table(tmp.path(), "_quarantine/patients", "source_id")
        .await
        .unwrap();
    assert_eq!(rejects.column("p-1", "reason"), ["bad"]);
    assert_eq!(
        lake.done_partitions(SourceType::Pims, "patients")
            .await
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn the_committer_compacts_a_day_between_groups_once_it_has_enough_small_files() {
    for maintain_after_run in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let lake = lake(tmp.path(), |c| {
            c.commit_group_batches = 70;
            c.commit_interval_secs = 3600.0;
            c.maintain_after_run = maintain_after_run;
        });
        let entity = patients();
        let committer = syncvet_lake::GroupCommitter::new(&lake);
        let mut pending = Vec::new();
        for i in 0..150 {
            let mut w = lake.writer(entity.clone(), key(&format!("p-{i:04}")), "run-1");
            write_rows(&mut w, &entity, i, 2, 2).await;
            pending.push(committer.submit(w.stage(Some(2)).await.unwrap()));
        }
        let between = committer.finish().await;
        for p in pending {
            p.await.unwrap();
        }
        let read = read_table(tmp.path(), "pims/patients", "practice_id")
            .await
            .unwrap();
        assert_eq!(read.rows.len(), 150, "every batch is there");
        assert!(
            read.rows
                .values()
                .all(|b| b.iter().map(|b| b.num_rows()).sum::<usize>() == 2)
        );
        assert!(between.errors.is_empty(), "{:?}", between.errors);
        if maintain_after_run {
            // Group 1: 70 files into 1; group 2: that one and 70 more into
            // 1; the last 10 are left for the run's own maintenance.
            let expected = Compacted {
                days: 2,
                files_removed: 70 + 71,
                files_added: 2,
            };
            assert_eq!(between.compacted, expected);
            assert_eq!(read.files, 11);
            // Each group was merged into the current table before its
            // compaction, while its batches were still their own files.
            assert_eq!(
                (between.current.sources, between.current.batches),
                (140, 140),
                "{:?}",
                between.current
            );
            // `synthetic::batch` deletes every other record.
            assert_eq!(between.current.rows_written, 140);
            assert!(between.current.errors.is_empty());
        } else {
            assert_eq!(between.compacted, Compacted::default());
            assert_eq!(read.files, 150);
            assert_eq!(between.current.batches, 0);
        }
        // The run's own merge takes what the groups left.
        let rest = lake
            .update_current(SourceType::Pims, "patients")
            .await
            .unwrap();
        let left = if maintain_after_run { 10 } else { 150 };
        assert_eq!(rest.batches, left, "{rest:?}");
    }
}

#[tokio::test]
async fn a_batch_another_process_committed_is_left_out_of_the_group_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (lake(tmp.path(), |_| {}), lake(tmp.path(), |_| {}));
    let entity = patients();
    let mut staged = Vec::new();
    for id in ["p-1", "p-2", "p-3"] {
        let mut w = a.writer(entity.clone(), key(id), "run-a");
        write_rows(&mut w, &entity, 0, 10, 10).await;
        staged.push(w.stage(Some(10)).await.unwrap());
    }
    // Meanwhile another process lands p-2.
    let mut w = b.writer(entity.clone(), key("p-2"), "run-b");
    write_rows(&mut w, &entity, 100, 5, 5).await;
    w.commit(Some(5)).await.unwrap();

    let results = a.commit(staged).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(LakeError::CommitConflict { .. })),
        "{:?}",
        results[1]
    );
    let read = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(
        read.ids("p-2"),
        expected_ids(100, 5),
        "the other process's batch stands"
    );
    assert_eq!(read.ids("p-1").len(), 10);
    assert_eq!(read.ids("p-3").len(), 10);
}

const SOURCES: [&str; 5] = ["p-1", "p-2", "p-3", "p-4", "p-5"];

fn days() -> [NaiveDate; 2] {
    [date(), date().succ_opt().unwrap()]
}

/// Five sources × two days, each batch in its own commit (its own file),
/// with one reject each.
async fn land_days(lake: &Lake, entity: &Arc<Entity>, run: &str) {
    for day in days() {
        for (n, id) in SOURCES.iter().enumerate() {
            let key = PartitionKey::new(SourceType::Pims, "patients", *id, day).unwrap();
            let mut w = lake.writer(entity.clone(), key, run);
            let rows = 100 + n * 10;
            write_rows(&mut w, entity, n as u64 * 1000, rows, 64).await;
            w.write_rejects(&[("{}", "name", "bad")]).await.unwrap();
            w.commit(Some(rows as u64 + 1)).await.unwrap();
        }
    }
}

/// The actions of one JSON commit of a table.
fn commit_actions(root: &Path, table: &str, version: u64) -> Vec<serde_json::Value> {
    let path = root
        .join(table)
        .join(format!("_delta_log/{version:020}.json"));
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The Parquet files on disk under a table folder, in no commit or in one.
fn parquet_on_disk(root: &Path, table: &str) -> usize {
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| match p.is_dir() {
                true => walk(&p),
                false => usize::from(p.extension().is_some_and(|x| x == "parquet")),
            })
            .sum()
    }
    walk(&root.join(table)) - walk(&root.join(table).join("_delta_log"))
}

#[tokio::test]
async fn a_run_compacts_only_files_under_its_threshold_and_maintain_takes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let entity = patients();
    {
        let lake = lake(tmp.path(), |_| {});
        for (i, rows) in [5, 5, 5, 3000, 3000].into_iter().enumerate() {
            let mut w = lake.writer(entity.clone(), key(&format!("p-{i}")), "run-1");
            write_rows(&mut w, &entity, 10_000 * i as u64, rows, 1000).await;
            w.commit(Some(rows as u64)).await.unwrap();
        }
    }
    let before = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(before.files, 5);
    let day = tmp
        .path()
        .join(format!("pims/patients/batch_date={}", date()));
    let mut files: Vec<u64> = std::fs::read_dir(&day)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    files.sort();
    let (small, big) = (files[2], files[3]);
    assert!(
        small * 2 < big,
        "the test needs small and big files: {files:?}"
    );

    let threshold = (small + big) / 2;
    let lake = lake(tmp.path(), |c| c.run_compacts_below_bytes = threshold);
    let days = std::collections::BTreeSet::from([date()]);
    // A run's compaction (days given) merges the three small files only;
    // `maintain` (every day) then takes every file under max_file_bytes:
    // the compacted one and the two big ones.
    for (scope, files_left) in [(Some(&days), 3), (None, 1)] {
        let done = lake
            .maintain(SourceType::Pims, "patients", scope)
            .await
            .unwrap();
        let expected = Compacted {
            days: 1,
            files_removed: 3,
            files_added: 1,
        };
        assert_eq!(done[0].1.as_ref().unwrap().compacted, expected);
        let after = read_table(tmp.path(), "pims/patients", "practice_id")
            .await
            .unwrap();
        assert_eq!(after.files, files_left, "{scope:?}");
        assert_eq!(after.all_ids(), before.all_ids());
    }
}

#[tokio::test]
async fn maintenance_compacts_each_day_into_one_file_and_the_rows_stay_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |c| c.vacuum_retention_hours = 1.0);
    let entity = patients();
    land_days(&lake, &entity, "run-1").await;
    let before = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    let rejects_before = read_table(tmp.path(), "_quarantine/patients", "source_id")
        .await
        .unwrap();
    assert_eq!((before.files, rejects_before.files), (10, 10));

    let done = lake
        .maintain(SourceType::Pims, "patients", None)
        .await
        .unwrap();
    let names: Vec<&str> = done.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "pims/patients",
            "_quarantine/patients",
            "current/pims/patients"
        ]
    );
    let after = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    let history = done[0].1.as_ref().unwrap();
    let compacted = Compacted {
        days: 2,
        files_removed: 10,
        files_added: 2,
    };
    assert_eq!(history.compacted, compacted);
    assert_eq!(history.checkpoint, Some(after.version));
    assert_eq!(history.files_vacuumed, 0, "removed within the retention");
    assert_eq!(done[1].1.as_ref().unwrap().compacted, compacted);

    assert_eq!(after.files, 2, "one file per day");
    assert_eq!(after.all_ids(), before.all_ids());
    assert_eq!(after.version, before.version + 2, "one commit per day");
    for source in SOURCES {
        assert!(after.column(source, "_run_id").iter().all(|r| r == "run-1"));
    }
    let rejects_after = read_table(tmp.path(), "_quarantine/patients", "source_id")
        .await
        .unwrap();
    assert_eq!(rejects_after.files, 2);
    assert_eq!(rejects_after.all("reason"), rejects_before.all("reason"));

    // Compaction changed no data, and says so.
    for version in [before.version + 1, before.version + 2] {
        let actions = commit_actions(tmp.path(), "pims/patients", version);
        let files: Vec<&serde_json::Value> = actions
            .iter()
            .filter_map(|a| a.get("add").or_else(|| a.get("remove")))
            .collect();
        assert_eq!(files.len(), 6, "5 removed, 1 added");
        assert!(files.iter().all(|f| f["dataChange"] == false), "{files:?}");
        let info = actions.iter().find_map(|a| a.get("commitInfo")).unwrap();
        assert_eq!(info["operation"], "OPTIMIZE");
    }
    // The version before is still readable: its files are within the retention.
    let old = read_table_at(
        tmp.path(),
        "pims/patients",
        "practice_id",
        Some(before.version),
    )
    .await
    .unwrap();
    assert_eq!((old.files, old.all_ids()), (10, before.all_ids()));

    // Nothing left to do the second time.
    let again = lake
        .maintain(SourceType::Pims, "patients", None)
        .await
        .unwrap();
    let again = again[0].1.as_ref().unwrap();
    assert_eq!((again.compacted.days, again.checkpoint), (0, None));
    // Another process reads the done set from the checkpoint.
    let other = self::lake(tmp.path(), |_| {});
    let done = other
        .done_partitions(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert_eq!(done.len(), 10);
}

#[tokio::test]
async fn vacuum_deletes_replaced_files_and_stale_orphans_but_never_a_live_file() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |c| c.vacuum_retention_hours = 0.0);
    let entity = patients();
    land_days(&lake, &entity, "run-1").await;
    // A writer that staged its files and died before the commit.
    let mut w = lake.writer(entity.clone(), key("p-9"), "run-x");
    write_rows(&mut w, &entity, 0, 10, 10).await;
    drop(w.stage(Some(10)).await.unwrap());
    assert_eq!(parquet_on_disk(tmp.path(), "pims/patients"), 11);
    let before = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();

    let done = lake
        .maintain(SourceType::Pims, "patients", None)
        .await
        .unwrap();
    let history = done[0].1.as_ref().unwrap();
    assert_eq!(history.compacted.files_removed, 10);
    assert_eq!(
        history.files_vacuumed, 11,
        "10 compacted away and the orphan"
    );
    assert_eq!(parquet_on_disk(tmp.path(), "pims/patients"), 2);
    let after = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(after.all_ids(), before.all_ids());
}

#[tokio::test]
async fn a_batch_replaced_in_a_compacted_day_takes_only_its_own_rows_out() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let entity = patients();
    land_days(&lake, &entity, "run-1").await;
    lake.maintain(SourceType::Pims, "patients", None)
        .await
        .unwrap();
    let before = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(before.files, 2);

    // p-3's first day lands again, with other rows and no reject.
    let mut w = lake.writer(entity.clone(), key("p-3"), "run-2");
    write_rows(&mut w, &entity, 50_000, 7, 7).await;
    let summary = w.commit(Some(7)).await.unwrap();
    assert_eq!(summary.version, before.version + 1, "one commit");

    let after = read_table(tmp.path(), "pims/patients", "practice_id")
        .await
        .unwrap();
    assert_eq!(after.ids("p-3"), expected_ids(50_000, 7));
    assert!(after.column("p-3", "_run_id").iter().all(|r| r == "run-2"));
    let mut expected = before.all_ids();
    expected.insert(("p-3".into(), date().to_string()), expected_ids(50_000, 7));
    assert_eq!(after.all_ids(), expected, "every other batch as it was");
    // The compacted file of the day was rewritten without p-3; the other day's stands.
    assert_eq!(after.files, 3);
    let rejects = read_table(tmp.path(), "_quarantine/patients", "source_id")
        .await
        .unwrap();
    assert!(rejects.column("p-3", "raw").is_empty());
    for source in ["p-1", "p-2", "p-4", "p-5"] {
        assert_eq!(rejects.column(source, "raw"), ["{}"], "{source}");
    }
    assert_eq!(rejects.column_on("p-3", days()[1], "raw"), ["{}"]);
}

/// Whether each column chunk of the first row group of `file` (in the
/// table `table`) has a dictionary page, by column path.
fn dictionary_pages(root: &Path, table: &str, file: &str) -> BTreeMap<String, bool> {
    let file = std::fs::File::open(root.join(table).join(file)).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    parquet::file::reader::FileReader::metadata(&reader)
        .row_group(0)
        .columns()
        .iter()
        .map(|c| {
            let path = c.column_path().parts()[0].clone();
            (path, c.dictionary_page_offset().is_some())
        })
        .collect()
}

#[tokio::test]
async fn columns_nearly_distinct_in_a_files_first_rows_are_written_without_a_dictionary() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let entity = patients();
    let mut w = lake.writer(entity.clone(), key("p-0001"), "run-1");
    write_rows(&mut w, &entity, 0, 5000, 1000).await;
    let summary = w.commit(Some(5000)).await.unwrap();
    let pages = dictionary_pages(tmp.path(), "pims/patients", &summary.files[0]);
    // The synthetic values (`synthetic::batch`): string column 0 (`id`)
    // and every third one are (nearly) distinct, the others repeat 40
    // values; numbers, dates and times are distinct; the lineage repeats.
    let schema = entity.arrow_schema();
    let mut checked = 0;
    for (c, field) in schema.fields().iter().enumerate() {
        let distinct = match field.data_type() {
            DataType::Utf8 => c % 3 == 0,
            DataType::Boolean => continue,
            DataType::List(_) => false,
            _ => true,
        };
        assert_eq!(
            pages[field.name()],
            !distinct,
            "{}: a dictionary only where values repeat",
            field.name()
        );
        checked += 1;
    }
    assert!(checked > 20, "{pages:?}");
    assert!(pages["_run_id"] && pages["_loaded_at"], "{pages:?}");

    // First rows too few to judge: every column keeps its dictionary.
    let mut w = lake.writer(entity.clone(), key("p-0002"), "run-1");
    write_rows(&mut w, &entity, 0, 50, 50).await;
    let summary = w.commit(Some(50)).await.unwrap();
    let pages = dictionary_pages(tmp.path(), "pims/patients", &summary.files[0]);
    assert!(pages["id"] && pages["entered_date"], "{pages:?}");
}
