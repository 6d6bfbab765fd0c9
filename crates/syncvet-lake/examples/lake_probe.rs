//! Exercises the commit protocol against any lake URL (S3, Azure, local):
//! `cargo run -p syncvet-lake --example lake_probe -- URL`, with the store's
//! credentials in the environment. Exits non-zero on the first violation.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use syncvet_lake::{Lake, LakeConfig, LakeError, PartitionKey, synthetic};
use syncvet_model::{Catalog, SourceType};

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).expect("usage: lake_probe URL");
    let mut config = LakeConfig::with_url(url);
    config.row_group_rows = 1000;
    config.max_file_bytes = 64 * 1024;
    let lake = Lake::open(&config).unwrap();
    let entity = Catalog::embedded().entity("patients").unwrap().clone();
    let schema = entity.arrow_schema();
    let run = format!("probe-{}", std::process::id());
    let key = |id: &str| {
        PartitionKey::new(
            SourceType::Pims,
            "patients",
            format!("{id}-{run}"),
            NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
        )
        .unwrap()
    };

    // 1. A rotated partition with rejects commits; only listed objects exist.
    let k = key("p");
    let mut w = lake.writer(entity.clone(), k.clone(), &run);
    for i in 0..20 {
        w.write_batch(&synthetic::batch(&schema, i * 1000, 1000))
            .await
            .unwrap();
    }
    w.write_rejects(&[("{}", "id", "missing")]).await.unwrap();
    let s = w.commit(Some(20_001)).await.unwrap();
    assert!(s.files.len() > 2, "rotated: {:?}", s.files);
    let check = |m: syncvet_lake::Manifest, objects: Vec<String>| {
        let mut expect: BTreeSet<String> = m
            .files
            .iter()
            .chain(&m.quarantine_files)
            .map(|f| f.path.clone())
            .collect();
        expect.insert(k.manifest_path());
        assert_eq!(objects.into_iter().collect::<BTreeSet<_>>(), expect);
    };
    check(
        lake.manifest(&k).await.unwrap().unwrap(),
        lake.list_partition_objects(&k).await.unwrap(),
    );
    println!(
        "commit: {} files, {} rows, {} bytes",
        s.files.len(),
        s.rows,
        s.bytes
    );

    // 2. A killed writer leaves nothing visible.
    let task = {
        let (lake, entity, k, run, schema) = (
            lake.clone(),
            entity.clone(),
            k.clone(),
            run.clone(),
            schema.clone(),
        );
        tokio::spawn(async move {
            let mut w = lake.writer(entity, k, &run);
            for i in 0..1000 {
                w.write_batch(&synthetic::batch(&schema, i * 1000, 1000))
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    task.abort();
    let _ = task.await;
    check(
        lake.manifest(&k).await.unwrap().unwrap(),
        lake.list_partition_objects(&k).await.unwrap(),
    );
    println!("abort mid-partition: nothing visible");

    // 3. A smaller re-run removes the files it does not list.
    let mut w = lake.writer(entity.clone(), k.clone(), &run);
    w.write_batch(&synthetic::batch(&schema, 0, 500))
        .await
        .unwrap();
    w.commit(Some(500)).await.unwrap();
    check(
        lake.manifest(&k).await.unwrap().unwrap(),
        lake.list_partition_objects(&k).await.unwrap(),
    );
    println!("re-run: unlisted files removed");

    // 4. Racing writers: exactly one commits.
    for round in 0..3 {
        let k = key(&format!("race{round}"));
        let mut a = lake.writer(entity.clone(), k.clone(), "a");
        let mut b = lake.writer(entity.clone(), k.clone(), "b");
        a.write_batch(&synthetic::batch(&schema, 0, 1000))
            .await
            .unwrap();
        b.write_batch(&synthetic::batch(&schema, 0, 2000))
            .await
            .unwrap();
        let (ra, rb) = tokio::join!(tokio::spawn(a.commit(None)), tokio::spawn(b.commit(None)));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra.is_ok() != rb.is_ok(), "{ra:?} {rb:?}");
        let loser = ra.as_ref().err().or(rb.as_ref().err()).unwrap();
        assert!(matches!(loser, LakeError::CommitConflict { .. }), "{loser}");
        let m = lake.manifest(&k).await.unwrap().unwrap();
        assert_eq!(m.rows, if ra.is_ok() { 1000 } else { 2000 });
    }
    println!("race: exactly one commit each round");
    let done = lake
        .done_partitions(SourceType::Pims, "patients")
        .await
        .unwrap();
    assert!(done.contains(&k));
    println!("probe OK on {}", lake.root_display());
}
