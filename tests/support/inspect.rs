//! Inspecting a lake: the raw object listing and the independent reader.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::Value;
use syncvet_model::SourceType;

use crate::*;

/// A tokio runtime for the async helpers.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// Every object of a lake (path relative to the root → size), listed
/// through object_store with the credentials of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Relative path → size in bytes.
    pub objects: BTreeMap<String, u64>,
    /// Relative path → manifest JSON, for every `_manifest.json`.
    pub manifests: BTreeMap<String, Value>,
}

impl Listing {
    /// Lists the lake at `url`.
    pub fn of(url: &str) -> Listing {
        let lake = syncvet_lake::Lake::open(&syncvet_lake::LakeConfig::with_url(url))
            .expect("the lake opens");
        let store = lake.object_store();
        let root = lake.root().clone();
        block_on(async move {
            let metas: Vec<_> = store
                .list(Some(&root))
                .try_collect()
                .await
                .expect("the lake lists");
            let prefix = root.as_ref().trim_end_matches('/').to_owned();
            let mut objects = BTreeMap::new();
            let mut manifests = BTreeMap::new();
            for meta in metas {
                let full = meta.location.as_ref().to_owned();
                let rel = if prefix.is_empty() {
                    full.clone()
                } else {
                    full.strip_prefix(&format!("{prefix}/"))
                        .unwrap_or(&full)
                        .to_owned()
                };
                if rel.ends_with("/_manifest.json") {
                    let bytes = store
                        .get(&meta.location)
                        .await
                        .expect("get")
                        .bytes()
                        .await
                        .expect("read");
                    let json: Value = serde_json::from_slice(&bytes).expect("a manifest is JSON");
                    manifests.insert(rel.trim_end_matches("/_manifest.json").to_owned(), json);
                }
                objects.insert(rel, meta.size);
            }
            Listing { objects, manifests }
        })
    }

    /// Committed partitions (folders with a manifest), data only.
    pub fn partitions(&self) -> BTreeSet<PartitionPath> {
        self.manifests.keys().cloned().collect()
    }

    /// Run report ids in `_runs/`.
    pub fn run_ids(&self) -> Vec<String> {
        self.objects
            .keys()
            .filter_map(|k| {
                k.strip_prefix("_runs/")?
                    .strip_suffix(".json")
                    .map(str::to_owned)
            })
            .collect()
    }

    /// The problems that break the commit rules: a manifest listing a file
    /// that is missing or of another size, and with `strays` a Parquet file
    /// (data or quarantine) that no manifest lists or an object in a
    /// partition folder that is neither.
    pub fn commit_violations(&self, strays: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let mut listed: BTreeSet<String> = BTreeSet::new();
        for (partition, manifest) in &self.manifests {
            for kind in ["files", "quarantine_files"] {
                for file in manifest[kind]
                    .as_array()
                    .unwrap_or_else(|| panic!("{partition}: manifest has no `{kind}`"))
                {
                    let path = file["path"].as_str().expect("a file path").to_owned();
                    let size = file["bytes"].as_u64().expect("a file size");
                    match self.objects.get(&path) {
                        None => {
                            problems.push(format!("{partition}: manifest lists missing {path}"))
                        }
                        Some(&actual) if actual != size => problems.push(format!(
                            "{partition}: {path} is {actual} bytes, manifest says {size}"
                        )),
                        Some(_) => {}
                    }
                    listed.insert(path);
                }
            }
        }
        for path in self.objects.keys() {
            let name = path.rsplit('/').next().unwrap_or_default();
            if !strays
                || path.starts_with("_runs/")
                || name == "_manifest.json"
                || listed.contains(path)
            {
                continue;
            }
            if name.ends_with(".parquet") {
                problems.push(format!("{path}: Parquet file listed by no manifest"));
            } else if name != "_commit.claim" {
                problems.push(format!("{path}: unexpected object in the lake"));
            }
        }
        problems
    }

    /// Panics with every commit-rule violation.
    pub fn assert_consistent(&self) {
        let problems = self.commit_violations(true);
        assert!(
            problems.is_empty(),
            "lake not consistent:\n{}",
            problems.join("\n")
        );
    }
}

/// What `tests/py/check_lake.py` reports of a lake: partition folder (data
/// and `_quarantine/…`) → its JSON (rows, duplicate_ids, sha256,
/// read_errors, files {manifest, found, missing, unlisted}, …).
#[derive(Debug, Clone)]
pub struct Reading {
    /// Folder → the reader's JSON of it.
    pub folders: BTreeMap<String, Value>,
}

impl Reading {
    /// The data partitions with rows, as `path → (rows, sha256)`.
    pub fn data(&self) -> BTreeMap<String, (u64, String)> {
        self.folders
            .iter()
            .filter(|(path, _)| !path.starts_with("_quarantine/"))
            .map(|(path, p)| {
                (
                    path.clone(),
                    (
                        p["rows"].as_u64().unwrap_or(0),
                        p["sha256"].as_str().unwrap_or("").to_owned(),
                    ),
                )
            })
            .collect()
    }

    /// Rows of a quarantine folder of a data partition (0 if none).
    pub fn quarantined(&self, partition: &str) -> u64 {
        self.folders
            .get(&format!(
                "_quarantine/{}",
                partition
                    .split_once('/')
                    .map_or(partition, |(_, rest)| rest)
            ))
            .map_or(0, |p| p["rows"].as_u64().unwrap_or(0))
    }

    /// Read errors, duplicate ids and mixed schemas, folder by folder.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (path, p) in &self.folders {
            if let Some(errors) = p["read_errors"].as_array().filter(|e| !e.is_empty()) {
                problems.push(format!("{path}: unreadable Parquet: {errors:?}"));
            }
            if p["duplicate_ids"].as_u64().unwrap_or(0) > 0 && !path.starts_with("_quarantine/") {
                problems.push(format!("{path}: {} duplicate ids", p["duplicate_ids"]));
            }
            if p["schema_consistent"] == Value::Bool(false) {
                problems.push(format!("{path}: files with different schemas"));
            }
        }
        problems
    }
}

/// The venv python of `tests/run.sh` (`SYNCVET_PYTHON`).
pub fn python() -> String {
    std::env::var("SYNCVET_PYTHON").unwrap_or_else(|_| {
        panic!("SYNCVET_PYTHON is not set: the independent Parquet reader needs the venv that tests/run.sh makes; run the suite with `tests/run.sh`")
    })
}

/// Reads the whole lake with `tests/py/check_lake.py` (pyarrow).
pub fn read_lake(url: &str) -> Reading {
    let script = workspace_dir().join("tests/py/check_lake.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(url)
        .output()
        .expect("the python reader runs");
    assert!(
        out.status.success(),
        "check_lake.py {url} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("check_lake.py prints JSON");
    let folders = json["partitions"]
        .as_array()
        .expect("check_lake.py lists partitions")
        .iter()
        .map(|p| (p["path"].as_str().expect("a path").to_owned(), p.clone()))
        .collect();
    Reading { folders }
}

/// Checks a lake against the truth, end to end: exactly the expected
/// partitions are committed, each holds `totalCount` records (rows read by
/// the independent reader + quarantined rows, both agreeing with the
/// manifest), no duplicate ids, every file readable, every Parquet file in
/// a manifest. Returns the reading for further checks.
pub fn assert_lake_matches(url: &str, truth: &Truth) -> Reading {
    let listing = Listing::of(url);
    listing.assert_consistent();
    let committed = listing.partitions();
    let expected = truth.partitions();
    let missing: Vec<_> = expected.difference(&committed).collect();
    let extra: Vec<_> = committed.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "partitions differ: {} missing (first {:?}), {} unexpected (first {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(5).collect::<Vec<_>>()
    );
    let reading = read_lake(url);
    let problems = reading.problems();
    assert!(
        problems.is_empty(),
        "the independent reader found:\n{}",
        problems.join("\n")
    );
    let data = reading.data();
    let mut wrong = Vec::new();
    for (partition, &total) in &truth.totals {
        let rows = data.get(partition).map_or(0, |(rows, _)| *rows);
        let rejects = reading.quarantined(partition);
        let manifest = &listing.manifests[partition];
        let (m_rows, m_rejected) = (manifest["rows"].as_u64(), manifest["rejected"].as_u64());
        if rows + rejects != total || m_rows != Some(rows) || m_rejected != Some(rejects) {
            wrong.push(format!(
                "{partition}: read {rows} rows + {rejects} rejects, totalCount {total}, manifest rows {m_rows:?} rejected {m_rejected:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} partitions hold the wrong records:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    reading
}

/// The run report of the latest run (`report --json` of the binary).
pub fn latest_report(lake_url: &str) -> Value {
    let out = Etl::new(lake_url).args(["report", "--json"]).run();
    out.expect_code(0);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("report --json is not JSON ({e}):\n{}", out.stdout))
}

/// Partition folders of a report's partitions with a given status.
pub fn report_partitions(report: &Value, status: &str) -> BTreeSet<PartitionPath> {
    report["partitions"]
        .as_array()
        .expect("a report lists partitions")
        .iter()
        .filter(|p| p["status"] == status)
        .map(|p| {
            let source = if p["source_type"] == "pims" {
                SourceType::Pims
            } else {
                SourceType::Supplier
            };
            let date: NaiveDate = p["batch_date"]
                .as_str()
                .expect("a date")
                .parse()
                .expect("a date");
            partition_path(
                source,
                p["entity"].as_str().expect("an entity"),
                p["source_id"].as_str().expect("an id"),
                date,
            )
        })
        .collect()
}
