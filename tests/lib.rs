//! Shared helpers of the end-to-end suite (`tests/it`).
//!
//! The suite runs the real `syncvet-etl` binary over real HTTP and checks
//! what it leaves in a real store. These helpers:
//! - build the binary once and run it with a bounded wait ([`Etl`], [`Outcome`]);
//! - name the store under test ([`Store`]): a temp folder, or a fresh prefix
//!   on the S3 and Azure servers that `tests/run.sh` starts (a missing
//!   server is a failure that says to run `tests/run.sh`, never a skip);
//! - compute the emulator's truth ([`Truth`]) from the same settings the
//!   binary loads, through `syncvet_emulator::record_count`;
//! - inspect the lake two independent ways: the raw object listing through
//!   object_store ([`Listing`], not the lake crate's own queries) and the
//!   Parquet reader `tests/py/check_lake.py` (pyarrow, [`read_lake`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::Value;
use syncvet_emulator::EmulatorConfig;
use syncvet_model::{Catalog, SourceType};

/// The workspace root (the parent of this package).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_relative() => workspace_dir().join(dir),
        Some(dir) => dir,
        None => workspace_dir().join("target"),
    }
}

/// The `syncvet-etl` binary, built once per test process.
pub fn etl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .current_dir(workspace_dir())
            .args(["build", "-p", "syncvet-etl", "--bin", "syncvet-etl"])
            .status()
            .expect("cargo can be run");
        assert!(
            status.success(),
            "`cargo build -p syncvet-etl --bin syncvet-etl` failed"
        );
        let bin = target_dir().join("debug").join("syncvet-etl");
        assert!(bin.is_file(), "no binary at {}", bin.display());
        bin
    })
}

/// The embedded default configuration file of the repository.
pub fn default_config() -> PathBuf {
    workspace_dir().join("config/default.toml")
}

/// How a finished process ended, and what it printed.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
    /// The largest peak resident set (VmHWM) seen while waiting, in KiB.
    pub peak_rss_kib: u64,
}

impl Outcome {
    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Outcome {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\n--- stdout\n{}\n--- stderr (tail)\n{}",
            self.stdout,
            tail(&self.stderr, 60)
        );
        self
    }
}

/// The lines of a process's stderr that report an error: `error: …` or a
/// log line at ERROR level (log lines at other levels are not errors).
pub fn error_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(strip_ansi)
        .filter(|l| {
            l.starts_with("error") || l.contains(" ERROR ") || l.contains("\"level\":\"ERROR\"")
        })
        .collect()
}

/// A line without its terminal colour codes.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running process whose output is being collected.
pub struct Running {
    child: Child,
    started: Instant,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("try_wait works").is_some()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success() || name == "KILL", "kill -s {name} failed");
    }

    /// Waits at most `timeout`, then kills it and panics.
    pub fn wait(mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let mut peak_rss_kib = 0;
        let status = loop {
            peak_rss_kib = peak_rss_kib.max(vm_hwm_kib(self.child.id()));
            if let Some(status) = self.child.try_wait().expect("try_wait works") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.err.join().unwrap_or_default();
                panic!(
                    "process did not exit within {timeout:?}; stderr tail:\n{}",
                    tail(&stderr, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        Outcome {
            code: status.code(),
            stdout: self.out.join().unwrap_or_default(),
            stderr: self.err.join().unwrap_or_default(),
            elapsed,
            peak_rss_kib,
        }
    }
}

/// The peak resident set of a live process, in KiB (0 once it is gone).
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// One invocation of `syncvet-etl`: the repository's default config with
/// environment overrides, and a clean environment of our own keys.
#[derive(Clone)]
pub struct Etl {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    config: Option<PathBuf>,
    /// The bounded wait of [`Etl::run`].
    pub timeout: Duration,
}

/// The environment key of an emulator switch (`rows_per_day` →
/// `SYNCVET_ETL__EMULATOR__SETTINGS__ROWS_PER_DAY`).
pub fn emulator_key(setting: &str) -> String {
    format!(
        "SYNCVET_ETL__EMULATOR__SETTINGS__{}",
        setting.to_ascii_uppercase()
    )
}

impl Etl {
    /// `config/default.toml` (embedded emulator) writing to `lake_url`, with
    /// the rate and backoffs opened up so that small test runs are quick.
    pub fn new(lake_url: &str) -> Etl {
        Etl::bare()
            .config(default_config())
            .env("SYNCVET_ETL__LAKE__URL", lake_url)
            .env("SYNCVET_ETL__API__RATE__REQUESTS_PER_SEC", "500")
            .env("SYNCVET_ETL__API__RATE__BURST", "100")
            .env("SYNCVET_ETL__API__RETRY__INITIAL_BACKOFF_MS", "20")
            .env("SYNCVET_ETL__API__RETRY__MAX_BACKOFF_SECS", "1")
            .env("SYNCVET_ETL__API__RETRY__NOT_READY_POLL_SECS", "1")
            .env("SYNCVET_ETL__SYNC__RUN_DEADLINE_SECS", "240")
            .env("SYNCVET_ETL__DAEMON__SHUTDOWN_GRACE_SECS", "3")
            .env("SYNCVET_ETL__LAKE__RETRY_TIMEOUT_SECS", "60")
    }

    /// No config file and no overrides; runs in the workspace root.
    pub fn bare() -> Etl {
        Etl {
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: workspace_dir(),
            config: None,
            timeout: Duration::from_secs(300),
        }
    }

    /// Sets the bounded wait of [`Etl::run`].
    pub fn timeout_secs(mut self, secs: u64) -> Etl {
        self.timeout = Duration::from_secs(secs);
        self
    }

    /// Passes `--config path`.
    pub fn config(mut self, path: impl Into<PathBuf>) -> Etl {
        self.config = Some(path.into());
        self
    }

    /// Leaves `--config` out (the binary then looks for `config/default.toml`).
    pub fn no_config(mut self) -> Etl {
        self.config = None;
        self
    }

    /// Sets an environment variable of the child.
    pub fn env(mut self, key: impl Into<String>, value: impl ToString) -> Etl {
        self.env.insert(key.into(), value.to_string());
        self
    }

    /// Sets an emulator switch of the embedded emulator.
    pub fn emu(self, setting: &str, value: impl ToString) -> Etl {
        self.env(emulator_key(setting), value)
    }

    /// Runs in `dir`.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Etl {
        self.cwd = dir.into();
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Etl
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.args.extend(args.into_iter().map(|a| a.to_string()));
        self
    }

    /// The environment overrides this invocation sets.
    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The emulator settings the binary will use: the same file and
    /// overrides loaded through the runner's own config loader.
    pub fn emulator_settings(&self) -> EmulatorConfig {
        let env: HashMap<String, String> = self.env.clone().into_iter().collect();
        let config = syncvet_runner::Config::load(self.config.as_deref(), env)
            .expect("the test config loads");
        config.emulator.settings
    }

    /// Starts the process.
    pub fn spawn(&self) -> Running {
        let mut cmd = Command::new(etl_bin());
        for (key, _) in std::env::vars() {
            // Keys of ours the test process may carry; object store
            // credentials (AWS_*, AZURE_*) are inherited on purpose.
            if key.starts_with("SYNCVET_ETL") || key == "RUST_LOG" || key == "SYNCVET_CLIENT_SECRET"
            {
                cmd.env_remove(key);
            }
        }
        cmd.envs(&self.env)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(&self.args);
        let mut child = cmd.spawn().expect("syncvet-etl starts");
        let out = collect(child.stdout.take().expect("piped"));
        let err = collect(child.stderr.take().expect("piped"));
        Running {
            child,
            started: Instant::now(),
            out,
            err,
        }
    }

    /// Runs to the end (bounded by [`Etl::timeout`]).
    pub fn run(&self) -> Outcome {
        self.spawn().wait(self.timeout)
    }
}

/// A store under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A temp folder, as a `file://` URL.
    File,
    /// The S3 server of `tests/run.sh` (`SYNCVET_TEST_S3_URL`).
    S3,
    /// The Azurite server of `tests/run.sh` (`SYNCVET_TEST_AZURE_URL`).
    Azure,
}

/// A fresh, empty lake on one store; a local one is removed on drop.
pub struct TestLake {
    /// The lake URL to give the binary.
    pub url: String,
    /// The temp folder of a `file://` lake (its parent is checked for strays).
    pub dir: Option<tempfile::TempDir>,
}

impl TestLake {
    /// The lake root folder of a local lake.
    pub fn local_root(&self) -> PathBuf {
        self.dir.as_ref().expect("a local lake").path().join("lake")
    }
}

impl Store {
    /// A new lake with a unique prefix. Fails, never skips, when the
    /// store's server is not configured.
    pub fn lake(self, name: &str) -> TestLake {
        let unique = format!(
            "{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                % 1_000_000_000_000
        );
        let from_env = |var: &str| {
            let base = std::env::var(var).unwrap_or_else(|_| {
                panic!(
                    "{var} is not set: the S3 and Azure tests need the storage servers that \
                     tests/run.sh starts; run the suite with `tests/run.sh`"
                )
            });
            format!("{}/{unique}", base.trim_end_matches('/'))
        };
        match self {
            Store::File => {
                let dir = tempfile::Builder::new()
                    .prefix("syncvet-e2e-")
                    .tempdir()
                    .expect("a temp dir");
                let url = format!("file://{}", dir.path().join("lake").display());
                TestLake {
                    url,
                    dir: Some(dir),
                }
            }
            Store::S3 => TestLake {
                url: from_env("SYNCVET_TEST_S3_URL"),
                dir: None,
            },
            Store::Azure => TestLake {
                url: from_env("SYNCVET_TEST_AZURE_URL"),
                dir: None,
            },
        }
    }
}

/// A partition as the tests name it: `pims/patients/practice_id=p-0001/batch_date=2026-11-01`.
pub type PartitionPath = String;

/// The folder of a partition.
pub fn partition_path(
    source: SourceType,
    entity: &str,
    source_id: &str,
    date: NaiveDate,
) -> PartitionPath {
    format!(
        "{}/{entity}/{}={source_id}/batch_date={date}",
        source.as_str(),
        source.partition_column()
    )
}

/// The emulator's truth: every partition it serves for some dates, with
/// its `totalCount`.
#[derive(Debug, Clone)]
pub struct Truth {
    /// Partition folder → records in the batch.
    pub totals: BTreeMap<PartitionPath, u64>,
}

impl Truth {
    /// Every (source, entity, date) of the emulator `settings`, restricted
    /// to `entities` when not empty and to `sources` when not empty.
    pub fn new(
        settings: &EmulatorConfig,
        dates: &[NaiveDate],
        entities: &[&str],
        sources: &[&str],
    ) -> Truth {
        let catalog = Catalog::embedded();
        let mut totals = BTreeMap::new();
        let ids = (1..=settings.pims_sources)
            .map(|i| (SourceType::Pims, format!("p-{i:04}")))
            .chain(
                (1..=settings.supplier_sources)
                    .map(|i| (SourceType::Supplier, format!("s-{i:04}"))),
            );
        for (source, id) in ids {
            if !sources.is_empty() && !sources.contains(&id.as_str()) {
                continue;
            }
            for entity in catalog.for_source(source) {
                if !entities.is_empty() && !entities.contains(&entity.name.as_str()) {
                    continue;
                }
                for &date in dates {
                    let total = syncvet_emulator::record_count(settings, &id, &entity.name, date);
                    totals.insert(partition_path(source, &entity.name, &id, date), total);
                }
            }
        }
        Truth { totals }
    }

    /// The partition folders.
    pub fn partitions(&self) -> BTreeSet<PartitionPath> {
        self.totals.keys().cloned().collect()
    }

    /// Without the partitions of these sources.
    pub fn without_sources(mut self, ids: &[&str]) -> Truth {
        self.totals
            .retain(|path, _| !ids.iter().any(|id| path.contains(&format!("_id={id}/"))));
        self
    }
}

/// Consecutive dates from `first`.
pub fn dates(first: &str, days: u64) -> Vec<NaiveDate> {
    let first: NaiveDate = first.parse().expect("a YYYY-MM-DD date");
    (0..days).map(|d| first + chrono::Days::new(d)).collect()
}

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

/// An emulator served in the test process (its own runtime), for tests
/// that run the binary with the embedded emulator off: they can then read
/// its counters, switch faults at run time, or put a proxy in front of it.
pub struct TestEmulator {
    emulator: Option<syncvet_emulator::RunningEmulator>,
    runtime: tokio::runtime::Runtime,
}

impl TestEmulator {
    /// Starts one on a free loopback port with `settings`.
    pub fn start(settings: EmulatorConfig) -> TestEmulator {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let emulator = runtime
            .block_on(syncvet_emulator::RunningEmulator::start(settings, 0))
            .expect("the emulator starts");
        TestEmulator {
            emulator: Some(emulator),
            runtime,
        }
    }

    fn running(&self) -> &syncvet_emulator::RunningEmulator {
        self.emulator.as_ref().expect("running")
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running().addr()
    }

    /// The switches in force.
    pub fn settings(&self) -> EmulatorConfig {
        self.running().config()
    }

    /// Changes switches at once.
    pub fn update(&self, patch: Value) {
        self.running().update(patch).expect("the patch applies");
    }

    /// The counters.
    pub fn stats(&self) -> syncvet_emulator::Stats {
        self.running().stats()
    }

    /// A `syncvet-etl` invocation against this emulator through `api_url`
    /// (`http://host:port`, the emulator itself or a proxy in front of it),
    /// with the embedded emulator off and the secret from the environment.
    pub fn etl_via(&self, api_url: &str, lake_url: &str) -> Etl {
        let settings = self.settings();
        Etl::new(lake_url)
            .env("SYNCVET_ETL__EMULATOR__ENABLED", "false")
            .env("SYNCVET_ETL__API__BASE_URL", format!("{api_url}/api/"))
            .env(
                "SYNCVET_ETL__API__TOKEN_URL",
                format!("{api_url}/oauth2/v2.0/token"),
            )
            .env("SYNCVET_ETL__API__CLIENT_ID", &settings.client_id)
            .env(
                "SYNCVET_ETL__API__CLIENT_SECRET_ENV",
                "SYNCVET_CLIENT_SECRET",
            )
            .env("SYNCVET_CLIENT_SECRET", &settings.client_secret)
    }

    /// [`TestEmulator::etl_via`] the emulator itself.
    pub fn etl(&self, lake_url: &str) -> Etl {
        self.etl_via(&format!("http://{}", self.addr()), lake_url)
    }
}

impl Drop for TestEmulator {
    fn drop(&mut self) {
        if let Some(emulator) = self.emulator.take() {
            self.runtime.block_on(emulator.shutdown());
        }
    }
}

/// One HTTP/1.1 request as a test server reads it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST` …
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The head as received (request line and headers).
    pub head: String,
    /// The body (by `Content-Length`).
    pub body: Vec<u8>,
}

/// Reads one request from a connection; `None` at EOF or on garbage.
pub fn read_request(stream: &mut std::net::TcpStream) -> Option<Request> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split_whitespace();
    let method = words.next()?.to_owned();
    let target = words.next()?.to_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        head,
        body,
    })
}

/// Serves `handle` on `127.0.0.1:0`, one thread per connection, until the
/// test process ends; returns `http://127.0.0.1:PORT`. The handler answers
/// one request and returns whether the connection may be kept open.
pub fn serve<H>(handle: H) -> String
where
    H: Fn(Request, &mut std::net::TcpStream) -> bool + Send + Sync + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let handle = std::sync::Arc::new(handle);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || {
                while let Some(request) = read_request(&mut stream) {
                    if !handle(request, &mut stream) {
                        break;
                    }
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    url
}

/// Writes a whole response with a body and `Content-Length`.
pub fn respond(
    stream: &mut std::net::TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> bool {
    use std::io::Write;
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .and_then(|()| stream.flush())
        .is_ok()
}

/// Every file under `dir`, relative, sorted (for local lakes and temp dirs).
pub fn walk(dir: &Path) -> Vec<String> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                go(base, &path, out);
            } else {
                out.push(
                    path.strip_prefix(base)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}
