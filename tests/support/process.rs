//! Building and running the `syncvet-etl` binary with a bounded wait.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use syncvet_emulator::EmulatorConfig;

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

/// The `syncvet-etl` binary: `SYNCVET_ETL_BIN` when set (`tests/run.sh`
/// builds it just before the tests), else built once per test process as
/// `tests/run.sh` builds it (`--workspace --bins`). A `cargo build` run
/// from inside `cargo test` rebuilt the whole dependency graph in CI.
pub fn etl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SYNCVET_ETL_BIN").map(PathBuf::from) {
            assert!(
                bin.is_file(),
                "SYNCVET_ETL_BIN: no binary at {}",
                bin.display()
            );
            return bin;
        }
        let status = Command::new(env!("CARGO"))
            .current_dir(workspace_dir())
            .args(["build", "--workspace", "--bins"])
            .status()
            .expect("cargo can be run");
        assert!(status.success(), "`cargo build --workspace --bins` failed");
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
    /// overrides loaded through the binary's own config loader.
    pub fn emulator_settings(&self) -> EmulatorConfig {
        let env: HashMap<String, String> = self.env.clone().into_iter().collect();
        syncvet_etl::Settings::load(self.config.as_deref(), env)
            .expect("the test config loads")
            .emulator
            .settings
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
