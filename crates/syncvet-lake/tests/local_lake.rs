//! The lake on the local file system: write, read back with the `parquet`
//! reader, reconcile, rotate, crash mid-partition, race two committers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use syncvet_lake::{Lake, LakeConfig, LakeError, PartitionKey, synthetic};
use syncvet_model::{Catalog, Entity, SourceType};

fn patients() -> Arc<Entity> {
    Catalog::embedded().entity("patients").unwrap().clone()
}

fn key(id: &str) -> PartitionKey {
    PartitionKey::new(
        SourceType::Pims,
        "patients",
        id,
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
    )
    .unwrap()
}

fn lake(dir: &Path, tweak: impl FnOnce(&mut LakeConfig)) -> Lake {
    let mut config = LakeConfig::with_url(dir.to_str().unwrap());
    tweak(&mut config);
    Lake::open(&config).unwrap()
}

/// Every `*.parquet` file under `dir`, relative to `root`, as a reader's glob sees it.
fn glob_parquet(root: &Path, dir: &str) -> BTreeSet<String> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let mut files = Vec::new();
    walk(&root.join(dir), &mut files);
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn ids(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let col = b
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            (0..col.len())
                .map(|i| col.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Reads back every file a manifest lists, checking its row count.
async fn read_partition(lake: &Lake, root: &Path, key: &PartitionKey) -> Vec<RecordBatch> {
    let manifest = lake.manifest(key).await.unwrap().expect("committed");
    let mut all = Vec::new();
    for f in &manifest.files {
        let batches = read_parquet(&root.join(&f.path));
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows as u64, f.rows, "{}", f.path);
        assert_eq!(
            std::fs::metadata(root.join(&f.path)).unwrap().len(),
            f.bytes
        );
        all.extend(batches);
    }
    all
}

async fn write_rows(
    w: &mut syncvet_lake::PartitionWriter,
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

#[tokio::test]
async fn a_partition_round_trips_with_its_rejects_and_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let root = tmp.path().canonicalize().unwrap();
    let entity = patients();
    let k = key("p-0001");
    assert!(!lake.is_done(&k).await.unwrap());

    let mut w = lake.writer(entity.clone(), k.clone(), "run-1");
    let first = synthetic::batch(&entity.arrow_schema(), 0, 700);
    let second = synthetic::batch(&entity.arrow_schema(), 700, 300);
    w.write_batch(&first).await.unwrap();
    w.write_rejects(&[("{\"id\":1}", "name", "required field is missing")])
        .await
        .unwrap();
    w.write_batch(&second).await.unwrap();
    w.write_rejects(&[(
        "{\"id\":2,\"weight\":\"heavy\"}".to_string(),
        "weight".to_string(),
        "not a decimal".to_string(),
    )])
    .await
    .unwrap();
    let summary = w.commit(Some(1002)).await.unwrap();
    assert_eq!((summary.rows, summary.rejected), (1000, 2));
    assert_eq!(
        summary.files,
        vec!["pims/patients/practice_id=p-0001/batch_date=2026-11-27/part-00000.parquet"]
    );

    let back = read_partition(&lake, &root, &k).await;
    let expected =
        arrow::compute::concat_batches(&entity.arrow_schema(), &[first, second]).unwrap();
    let got = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
    assert_eq!(
        got.schema(),
        entity.arrow_schema(),
        "catalog names and types"
    );
    assert_eq!(got, expected, "same values");
    assert!(got.schema().field_with_name("practice_id").is_err());

    let m = lake.manifest(&k).await.unwrap().unwrap();
    assert_eq!(m.run_id, "run-1");
    assert_eq!(m.source_total, Some(1002));
    assert_eq!(m.schema_fingerprint, entity.schema_fingerprint());
    assert_eq!(m.quarantine_files.len(), 1);
    let q = read_parquet(&root.join(&m.quarantine_files[0].path));
    let q = arrow::compute::concat_batches(&q[0].schema(), &q).unwrap();
    assert_eq!(q.num_rows(), 2);
    let reason = q
        .column_by_name("reason")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(reason.value(1), "not a decimal");
    assert!(
        m.quarantine_files[0]
            .path
            .starts_with("_quarantine/patients/practice_id=p-0001/batch_date=2026-11-27/")
    );

    // Parquet properties: zstd, dictionary, statistics, row groups.
    let file = std::fs::File::open(root.join(&m.files[0].path)).unwrap();
    let meta = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .metadata()
        .clone();
    let id = meta.row_group(0).column(0);
    assert_eq!(id.column_path().string(), "id");
    assert!(
        id.dictionary_page_offset().is_none(),
        "unique ids are stored plain"
    );
    let col = meta.row_group(0).column(1);
    assert!(matches!(
        col.compression(),
        parquet::basic::Compression::ZSTD(_)
    ));
    assert!(col.dictionary_page_offset().is_some());
    assert!(col.statistics().is_some());

    assert!(lake.is_done(&k).await.unwrap());
    lake.writer(entity.clone(), key("p-0002"), "run-1")
        .commit(Some(0))
        .await
        .unwrap();
    let done = lake
        .done_partitions(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert_eq!(done, vec![k.clone(), key("p-0002")]);
    assert!(
        lake.done_partitions(SourceType::Pims, "clients")
            .await
            .unwrap()
            .is_empty()
    );
    let empty = read_partition(&lake, &root, &key("p-0002")).await;
    assert_eq!(
        empty.iter().map(|b| b.num_rows()).sum::<usize>(),
        0,
        "an empty partition still has a file with its schema"
    );
}

#[tokio::test]
async fn a_mismatch_with_the_source_total_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let root = tmp.path().canonicalize().unwrap();
    let entity = patients();
    let k = key("p-0003");
    let mut w = lake.writer(entity.clone(), k.clone(), "run-1");
    write_rows(&mut w, &entity, 0, 500, 100).await;
    w.write_rejects(&[("{}", "id", "missing")]).await.unwrap();
    let err = w.commit(Some(510)).await.unwrap_err();
    match &err {
        LakeError::Reconciliation {
            expected,
            written,
            rejected,
            partition,
        } => {
            assert_eq!((*expected, *written, *rejected), (510, 500, 1));
            assert_eq!(partition, &k.path());
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string().contains("510") && err.to_string().contains("500"),
        "{err}"
    );
    assert!(!lake.is_done(&k).await.unwrap());
    assert!(glob_parquet(&root, "pims").is_empty());
    assert!(glob_parquet(&root, "_quarantine").is_empty());
}

#[tokio::test]
async fn files_rotate_at_max_file_bytes_with_correct_row_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |c| {
        c.row_group_rows = 1000;
        c.max_file_bytes = 64 * 1024;
    });
    let root = tmp.path().canonicalize().unwrap();
    let entity = patients();
    let k = key("p-0004");
    let mut w = lake.writer(entity.clone(), k.clone(), "run-1");
    write_rows(&mut w, &entity, 0, 20_000, 1000).await;
    let summary = w.commit(Some(20_000)).await.unwrap();
    assert!(summary.files.len() >= 3, "{:?}", summary.files);
    for (i, f) in summary.files.iter().enumerate() {
        assert!(f.ends_with(&format!("part-{i:05}.parquet")), "{f}");
    }
    let back = read_partition(&lake, &root, &k).await;
    let got: BTreeSet<String> = ids(&back).into_iter().collect();
    assert_eq!(got.len(), 20_000);
    for f in &summary.files {
        let file = std::fs::File::open(root.join(f)).unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .metadata()
            .clone();
        assert!(meta.num_row_groups() >= 1);
        for rg in meta.row_groups() {
            assert_eq!(rg.num_rows(), 1000, "row groups of row_group_rows in {f}");
        }
    }
}

#[tokio::test]
async fn a_writer_killed_mid_partition_leaves_nothing_visible_and_a_rewrite_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |c| {
        c.row_group_rows = 2000;
        c.max_file_bytes = 128 * 1024;
    });
    let root = tmp.path().canonicalize().unwrap();
    let entity = patients();
    let k = key("p-0005");

    // Run 1 commits 5,000 rows; run 2 is killed after 30,000 rows of 50,000.
    let mut w = lake.writer(entity.clone(), k.clone(), "run-1");
    write_rows(&mut w, &entity, 0, 5000, 1000).await;
    w.commit(None).await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(1);
    let task = {
        let (lake, entity, k) = (lake.clone(), entity.clone(), k.clone());
        tokio::spawn(async move {
            let mut w = lake.writer(entity.clone(), k, "run-2");
            for i in 0..50u64 {
                w.write_batch(&synthetic::batch(&entity.arrow_schema(), i * 1000, 1000))
                    .await
                    .unwrap();
                if i == 29 {
                    tx.send(i).await.unwrap();
                }
                tokio::task::yield_now().await;
            }
            w.commit(Some(50_000)).await.unwrap();
        })
    };
    rx.recv().await.unwrap();
    let staging: Vec<_> = std::fs::read_dir(root.join(k.path()))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".parquet#"))
        .collect();
    assert!(
        staging.len() > 1,
        "run 2 had rotated files in flight: {staging:?}"
    );
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    let manifest = lake.manifest(&k).await.unwrap().unwrap();
    assert_eq!(manifest.run_id, "run-1");
    let listed: BTreeSet<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
    let seen = glob_parquet(&root, "pims");
    assert!(
        seen.is_subset(&listed),
        "visible but unlisted: {:?}",
        seen.difference(&listed).collect::<Vec<_>>()
    );
    assert_eq!(ids(&read_partition(&lake, &root, &k).await).len(), 5000);

    // The re-run replaces the partition: same rows, no duplicates, no leftovers.
    let mut w = lake.writer(entity.clone(), k.clone(), "run-3");
    write_rows(&mut w, &entity, 0, 50_000, 1000).await;
    w.commit(Some(50_000)).await.unwrap();
    let back = ids(&read_partition(&lake, &root, &k).await);
    let unique: BTreeSet<&String> = back.iter().collect();
    assert_eq!((back.len(), unique.len()), (50_000, 50_000));
    let expected: BTreeSet<String> = ids(&[synthetic::batch(&entity.arrow_schema(), 0, 50_000)])
        .into_iter()
        .collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    let listed: BTreeSet<String> = lake
        .manifest(&k)
        .await
        .unwrap()
        .unwrap()
        .files
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(glob_parquet(&root, "pims"), listed);
    let leftovers: Vec<_> = std::fs::read_dir(root.join(k.path()))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains('#') || n.starts_with("_commit"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_rerun_with_fewer_files_removes_the_files_it_does_not_list() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |c| {
        c.row_group_rows = 1000;
        c.max_file_bytes = 32 * 1024;
    });
    let root = tmp.path().canonicalize().unwrap();
    let entity = patients();
    let k = key("p-0006");
    let mut w = lake.writer(entity.clone(), k.clone(), "run-1");
    write_rows(&mut w, &entity, 0, 10_000, 1000).await;
    w.write_rejects(&[("{}", "id", "missing")]).await.unwrap();
    let big = w.commit(None).await.unwrap();
    assert!(big.files.len() > 2);

    let mut w = lake.writer(entity.clone(), k.clone(), "run-2");
    write_rows(&mut w, &entity, 0, 900, 900).await;
    let small = w.commit(Some(900)).await.unwrap();
    assert_eq!(small.files.len(), 1);
    assert_eq!(
        glob_parquet(&root, "pims"),
        small.files.iter().cloned().collect()
    );
    assert!(
        glob_parquet(&root, "_quarantine").is_empty(),
        "old rejects went with their run"
    );
    assert_eq!(ids(&read_partition(&lake, &root, &k).await).len(), 900);
}

#[tokio::test]
async fn restart_drops_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let root = tmp.path().canonicalize().unwrap();
    let entity = patients();
    let k = key("p-0007");
    let mut w = lake.writer(entity.clone(), k.clone(), "run-1");
    write_rows(&mut w, &entity, 0, 3000, 1000).await;
    w.write_rejects(&[("{}", "id", "missing")]).await.unwrap();
    w.restart().await.unwrap();
    assert_eq!((w.rows(), w.rejected()), (0, 0));
    write_rows(&mut w, &entity, 0, 3000, 1000).await;
    w.commit(Some(3000)).await.unwrap();
    let back = ids(&read_partition(&lake, &root, &k).await);
    assert_eq!(back.iter().collect::<BTreeSet<_>>().len(), 3000);
    assert_eq!(back.len(), 3000);
}

#[tokio::test]
async fn two_racing_writers_commit_exactly_once_and_the_partition_stays_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |_| {});
    let root = tmp.path().canonicalize().unwrap();
    let entity = patients();
    for round in 0..5 {
        let k = key(&format!("race-{round}"));
        let mut a = lake.writer(entity.clone(), k.clone(), "run-a");
        let mut b = lake.writer(entity.clone(), k.clone(), "run-b");
        write_rows(&mut a, &entity, 0, 1000, 500).await;
        write_rows(&mut b, &entity, 0, 2500, 500).await;
        let (ra, rb) = tokio::join!(
            tokio::spawn(a.commit(Some(1000))),
            tokio::spawn(b.commit(Some(2500)))
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra.is_ok() != rb.is_ok(), "exactly one wins: {ra:?} {rb:?}");
        let loser = ra.as_ref().err().or(rb.as_ref().err()).unwrap();
        assert!(matches!(loser, LakeError::CommitConflict { .. }), "{loser}");
        let m = lake.manifest(&k).await.unwrap().unwrap();
        let winner_rows = if ra.is_ok() { 1000 } else { 2500 };
        assert_eq!(m.rows, winner_rows);
        assert_eq!(
            ids(&read_partition(&lake, &root, &k).await).len() as u64,
            winner_rows
        );
    }

    // A writer that started before another one committed loses too.
    let k = key("race-late");
    let mut early = lake.writer(entity.clone(), k.clone(), "run-early");
    write_rows(&mut early, &entity, 0, 100, 100).await;
    let mut late = lake.writer(entity.clone(), k.clone(), "run-late");
    write_rows(&mut late, &entity, 0, 200, 100).await;
    late.commit(Some(200)).await.unwrap();
    assert!(matches!(
        early.commit(Some(100)).await,
        Err(LakeError::CommitConflict { .. })
    ));
    assert_eq!(lake.manifest(&k).await.unwrap().unwrap().run_id, "run-late");
    assert_eq!(ids(&read_partition(&lake, &root, &k).await).len(), 200);
}

#[tokio::test]
async fn a_stale_claim_left_by_a_crash_is_taken_over_but_a_fresh_one_is_respected() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path(), |c| c.commit_claim_ttl_secs = 60);
    let root = tmp.path().canonicalize().unwrap();
    let entity = patients();
    let k = key("p-0008");
    let claim = root.join(k.path()).join("_commit.claim");
    std::fs::create_dir_all(claim.parent().unwrap()).unwrap();
    std::fs::write(&claim, "{}").unwrap();
    let w = lake.writer(entity.clone(), k.clone(), "run-1");
    assert!(matches!(
        w.commit(Some(0)).await,
        Err(LakeError::CommitConflict { .. })
    ));
    assert!(!lake.is_done(&k).await.unwrap());

    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    std::fs::File::options()
        .write(true)
        .open(&claim)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let w = lake.writer(entity.clone(), k.clone(), "run-2");
    w.commit(Some(0)).await.unwrap();
    assert!(lake.is_done(&k).await.unwrap());
    assert!(!claim.exists(), "released after the commit");
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
