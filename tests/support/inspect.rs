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
/// through object_store with the credentials of the environment, and what
/// the Delta logs in it say, replayed here from their raw JSON commits
/// (not through delta-rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Relative path → size in bytes.
    pub objects: BTreeMap<String, u64>,
    /// Every table (`pims/patients`, `_quarantine/patients`) → its log.
    pub tables: BTreeMap<String, TableLog>,
    /// Batch (`pims/patients/practice_id=p/batch_date=d`) → what the commit
    /// that landed it last recorded (its `syncvet.batches` entry): `run_id`,
    /// `rows`, `rejected`, `source_total`, `schema_fingerprint`, and the
    /// `version` of its history table.
    pub batches: BTreeMap<PartitionPath, Value>,
}

/// One Delta table's log, replayed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableLog {
    /// The latest version.
    pub version: u64,
    /// Active files (path relative to the table → size the log gives).
    pub files: BTreeMap<String, u64>,
    /// Every file some commit added, active or removed since (a removed
    /// file stays on the store until vacuum).
    pub ever_added: BTreeSet<String>,
    /// Application transactions (`syncvet:{source}:{date}` → version).
    pub txns: BTreeMap<String, i64>,
}

/// Replays a table's JSON commits (oldest first) into its log.
fn replay(
    table: &str,
    commits: &[(u64, Vec<u8>)],
    batches: &mut BTreeMap<PartitionPath, Value>,
) -> TableLog {
    let mut log = TableLog::default();
    for (version, bytes) in commits {
        log.version = *version;
        let mut landed: Vec<Value> = Vec::new();
        let mut txns_here: BTreeSet<String> = BTreeSet::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!("{table} version {version}: a log line is not JSON: {e}")
            });
            if let Some(add) = action.get("add") {
                let path = percent_decode(add["path"].as_str().expect("an add has a path"));
                log.ever_added.insert(path.clone());
                log.files
                    .insert(path, add["size"].as_u64().expect("an add has a size"));
            } else if let Some(remove) = action.get("remove") {
                let path = percent_decode(remove["path"].as_str().expect("a remove has a path"));
                log.files.remove(&path);
            } else if let Some(txn) = action.get("txn") {
                let app_id = txn["appId"]
                    .as_str()
                    .expect("a txn has an appId")
                    .to_owned();
                txns_here.insert(app_id.clone());
                log.txns.insert(
                    app_id,
                    txn["version"].as_i64().expect("a txn has a version"),
                );
            } else if let Some(info) = action.get("commitInfo")
                && let Some(batches) = info.get("syncvet.batches").and_then(Value::as_array)
            {
                landed = batches
                    .iter()
                    .map(|b| {
                        let mut b = b.clone();
                        b["version"] = (*version).into();
                        b
                    })
                    .collect();
            }
        }
        // The batches a history commit landed are those whose transaction
        // it set (a batch left out of a group for a conflict has none). A
        // quarantine commit lands a batch's rejects, not the batch.
        if table.starts_with("_quarantine/") {
            continue;
        }
        for batch in landed {
            let name = batch["batch"].as_str().expect("a batch name").to_owned();
            let (source, date) = batch_source_and_date(&name);
            if txns_here.contains(&format!("syncvet:{source}:{date}")) {
                batches.insert(name, batch);
            }
        }
    }
    log
}

/// The source id and date of a batch name
/// (`pims/patients/practice_id=p/batch_date=d`).
fn batch_source_and_date(name: &str) -> (&str, &str) {
    let parts: Vec<&str> = name.split('/').collect();
    let [_, _, source, date] = parts.as_slice() else {
        panic!("{name} is not a batch name");
    };
    let source = source.split_once('=').expect("key=value").1;
    let date = date.strip_prefix("batch_date=").expect("batch_date=");
    (source, date)
}

/// Delta's add paths are percent-encoded (`batch_date=2026-11-27` stays,
/// a space or `%` in a name would not).
fn percent_decode(path: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", path.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| path.to_owned())
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
            let mut commits: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
            for meta in metas {
                let full = meta.location.as_ref().to_owned();
                let rel = if prefix.is_empty() {
                    full.clone()
                } else {
                    full.strip_prefix(&format!("{prefix}/"))
                        .unwrap_or(&full)
                        .to_owned()
                };
                if let Some((table, file)) = rel.split_once("/_delta_log/")
                    && let Some(version) = file
                        .strip_suffix(".json")
                        .and_then(|v| v.parse::<u64>().ok())
                {
                    let bytes = store
                        .get(&meta.location)
                        .await
                        .expect("get")
                        .bytes()
                        .await
                        .expect("read");
                    commits
                        .entry(table.to_owned())
                        .or_default()
                        .push((version, bytes.to_vec()));
                }
                objects.insert(rel, meta.size);
            }
            let mut batches = BTreeMap::new();
            let tables = commits
                .into_iter()
                .map(|(table, mut commits)| {
                    commits.sort();
                    let log = replay(&table, &commits, &mut batches);
                    (table, log)
                })
                .collect();
            Listing {
                objects,
                tables,
                batches,
            }
        })
    }

    /// Done batches: those whose history table holds their transaction.
    pub fn partitions(&self) -> BTreeSet<PartitionPath> {
        self.batches.keys().cloned().collect()
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

    /// The problems that break the commit rules: a batch recorded without
    /// its transaction (or the reverse), a file the log adds that is missing
    /// or of another size, and with `strays` a file in a table folder that
    /// no commit ever added (left by a crashed or lost commit: invisible to
    /// readers, but a clean run leaves none) or an object that belongs to
    /// no table.
    pub fn commit_violations(&self, strays: bool) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, log) in &self.tables {
            for (file, size) in &log.files {
                let path = format!("{name}/{file}");
                match self.objects.get(&path) {
                    None => problems.push(format!("{name}: the log adds missing {file}")),
                    Some(actual) if actual != size => problems.push(format!(
                        "{name}: {file} is {actual} bytes, the log says {size}"
                    )),
                    Some(_) => {}
                }
            }
            if let Some(history) = name.strip_prefix("current/") {
                // A current table absorbs only batches its history holds.
                let held = self.tables.get(history).map(|h| &h.txns);
                for app_id in log.txns.keys().filter(|a| a.starts_with("syncvet:")) {
                    if !held.is_some_and(|h| h.contains_key(app_id)) {
                        problems.push(format!(
                            "{name}: absorbed {app_id}, which {history} does not hold"
                        ));
                    }
                }
            } else if !name.starts_with("_quarantine/") {
                for app_id in log.txns.keys() {
                    let batch = app_id
                        .strip_prefix("syncvet:")
                        .and_then(|rest| rest.rsplit_once(':'))
                        .map(|(source, date)| {
                            let column = if name.starts_with("supplier/") {
                                "supplier_id"
                            } else {
                                "practice_id"
                            };
                            format!("{name}/{column}={source}/batch_date={date}")
                        });
                    match batch {
                        Some(b) if self.batches.contains_key(&b) => {}
                        _ => problems
                            .push(format!("{name}: transaction {app_id} has no batch commit")),
                    }
                }
            }
        }
        if strays {
            for path in self.objects.keys() {
                if path.starts_with("_runs/") {
                    continue;
                }
                let owner = self
                    .tables
                    .iter()
                    .find(|(name, _)| path.starts_with(&format!("{name}/")));
                match owner {
                    Some((name, log)) => {
                        let rel = &path[name.len() + 1..];
                        if !rel.starts_with("_delta_log/") && !log.ever_added.contains(rel) {
                            problems.push(format!("{path}: a file no commit added"));
                        }
                    }
                    None => problems.push(format!("{path}: an object of no table")),
                }
            }
        }
        problems
    }

    /// The batches of a history table its current table has not absorbed
    /// with the version the history holds (`table: app id`).
    pub fn current_lag(&self) -> Vec<String> {
        let mut lag = Vec::new();
        for (name, log) in &self.tables {
            if name.starts_with("current/") || name.starts_with("_quarantine/") {
                continue;
            }
            let current = self.tables.get(&format!("current/{name}"));
            for (app_id, version) in &log.txns {
                if current.and_then(|c| c.txns.get(app_id)) != Some(version) {
                    lag.push(format!("{name}: {app_id}"));
                }
            }
        }
        lag
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

/// What `tests/py/check_lake.py` reports of a lake, read with the Python
/// `deltalake` package, pyarrow and Polars: batch (data and `_quarantine/…`)
/// → its JSON (rows, duplicate_ids, sha256, read_errors, columns, …), and
/// table → its JSON (version, files, done, missing_files, orphans, …).
#[derive(Debug, Clone)]
pub struct Reading {
    /// Batch path → the reader's JSON of it.
    pub folders: BTreeMap<String, Value>,
    /// Table path (`pims/patients`) → the reader's JSON of it.
    pub tables: BTreeMap<String, Value>,
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

    /// Done batches as the reader replays the logs: `{table}/{done entry}`.
    pub fn done(&self) -> BTreeSet<String> {
        self.tables
            .iter()
            .filter(|(path, _)| !path.starts_with("_quarantine/"))
            .flat_map(|(path, t)| {
                t["done"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str())
                    .map(move |d| format!("{path}/{d}"))
            })
            .collect()
    }

    /// Read errors, duplicate ids and mixed schemas, batch by batch, and
    /// each table's unreadable, missing or mis-sized files, files whose
    /// schema or statistics disagree with the log, and row counts Polars
    /// and `deltalake` disagree on.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (path, t) in &self.tables {
            for key in [
                "read_errors",
                "missing_files",
                "file_schema_mismatches",
                "stats_mismatches",
            ] {
                if let Some(found) = t[key].as_array().filter(|e| !e.is_empty()) {
                    problems.push(format!("{path}: {key}: {found:?}"));
                }
            }
            if t["rows"] != t["polars_rows"] {
                problems.push(format!(
                    "{path}: deltalake reads {} rows, Polars {}",
                    t["rows"], t["polars_rows"]
                ));
            }
        }
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

/// Reads the whole lake with `tests/py/check_lake.py` (deltalake, pyarrow, Polars).
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
    let by_path = |key: &str| -> BTreeMap<String, Value> {
        json[key]
            .as_array()
            .unwrap_or_else(|| panic!("check_lake.py lists {key}"))
            .iter()
            .map(|p| (p["path"].as_str().expect("a path").to_owned(), p.clone()))
            .collect()
    };
    Reading {
        folders: by_path("partitions"),
        tables: by_path("tables"),
    }
}

/// Checks a lake against the truth, end to end: exactly the expected
/// batches are done (in the log as replayed here and as the Python reader
/// replays it), each holds `totalCount` records (rows read by the
/// independent reader + quarantined rows, both agreeing with what the
/// batch's commit recorded), no duplicate ids, every file the logs add
/// present and readable. Returns the reading for further checks.
pub fn assert_lake_matches(url: &str, truth: &Truth) -> Reading {
    let listing = Listing::of(url);
    // Files of a killed or lost commit may stay until vacuum (no reader
    // sees them); tests of clean runs check for strays themselves.
    let problems = listing.commit_violations(false);
    assert!(
        problems.is_empty(),
        "lake not consistent:\n{}",
        problems.join("\n")
    );
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
    assert_eq!(
        reading.done(),
        committed,
        "the Python reader's done set differs from the log replayed here"
    );
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
        let landed = &listing.batches[partition];
        let (l_rows, l_rejected) = (landed["rows"].as_u64(), landed["rejected"].as_u64());
        if rows + rejects != total || l_rows != Some(rows) || l_rejected != Some(rejects) {
            wrong.push(format!(
                "{partition}: read {rows} rows + {rejects} rejects, totalCount {total}, commit says rows {l_rows:?} rejected {l_rejected:?}"
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
