//! Servers in the test process: the emulator and tiny HTTP servers.

use std::io::Read;
use std::path::Path;

use serde_json::Value;
use syncvet_emulator::EmulatorConfig;

use crate::*;

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
