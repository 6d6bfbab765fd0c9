//! Issue 7.3: hostile inputs, table-driven. A proxy in front of the real
//! emulator serves source p-0001 faithfully and answers p-0002's pages with
//! something hostile; each case must give a clear error for p-0002, leave
//! p-0001's partition whole, keep memory bounded, and write nothing outside
//! the lake root. Then hostile configuration and hostile source ids.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use syncvet_e2e::{
    Etl, Listing, Outcome, TestEmulator, Truth, latest_report, read_lake, respond, walk,
};
use syncvet_emulator::EmulatorConfig;

use crate::gate::intercept;

const DATE: &str = "2026-10-01";

fn json_ok(stream: &mut TcpStream, body: &[u8]) -> bool {
    respond(
        stream,
        "200 OK",
        &[("content-type", "application/json")],
        body,
    )
}

/// Holds a connection open for at most `secs`, until the peer goes away.
fn linger(stream: &mut TcpStream, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if stream.write_all(b" ").is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

type Hostile = fn(&mut TcpStream);

fn malformed_json(s: &mut TcpStream) {
    json_ok(
        s,
        br#"{"practiceId":"p-0002","entity":"sites","totalCount":1,"items":[{"id":"x","#,
    );
}

fn items_not_an_array(s: &mut TcpStream) {
    json_ok(
        s,
        br#"{"totalCount":1,"items":{"id":"x"},"continuationToken":null}"#,
    );
}

fn content_length_2gb(s: &mut TcpStream) {
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2147483648\r\n\r\n";
    if s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(br#"{"totalCount":1,"items":["#))
        .is_ok()
    {
        linger(s, 20);
    }
}

fn never_ending_body(s: &mut TcpStream) {
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let record = r#"{"id":"a","lastModified":"2026-10-01T00:00:00Z","name":"n"},"#.repeat(1000);
    let chunk = format!("{:x}\r\n{record}\r\n", record.len());
    let start = format!("{:x}\r\n{{\"items\":[\r\n", "{\"items\":[".len());
    if s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(start.as_bytes()))
        .is_err()
    {
        return;
    }
    // Bounded: 1 GiB or 60 s, whichever first; a sane client hangs up long before.
    let until = Instant::now() + Duration::from_secs(60);
    let mut sent = 0usize;
    while Instant::now() < until && sent < 1 << 30 {
        if s.write_all(chunk.as_bytes()).is_err() {
            return;
        }
        sent += chunk.len();
    }
}

fn deeply_nested(s: &mut TcpStream) {
    let depth = 200_000;
    let body = format!(
        r#"{{"totalCount":1,"items":[{}{}],"continuationToken":null}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    json_ok(s, body.as_bytes());
}

fn invalid_utf8(s: &mut TcpStream) {
    let mut body = br#"{"totalCount":1,"continuationToken":null,"items":[{"id":"bad-"#.to_vec();
    body.extend_from_slice(b"\xff\xfe\xc3\x28");
    body.extend_from_slice(br#"","lastModified":"2026-10-01T00:00:00Z","deleted":false,"practiceId":"p-0002","name":"x"}]}"#);
    json_ok(s, &body);
}

fn huge_string(s: &mut TcpStream) {
    let name = "a".repeat(20 << 20);
    let body = format!(
        r#"{{"totalCount":1,"continuationToken":null,"items":[{{"id":"big","lastModified":"2026-10-01T00:00:00Z","deleted":false,"practiceId":"p-0002","name":"{name}"}}]}}"#
    );
    json_ok(s, body.as_bytes());
}

/// The same page and the same continuation token, forever: a loop.
fn same_token_forever(s: &mut TcpStream) {
    json_ok(
        s,
        br#"{"totalCount":5000,"items":[{"id":"loop-1","lastModified":"2026-10-01T00:00:00Z","deleted":false,"practiceId":"p-0002","name":"x"}],"continuationToken":"loop-token"}"#,
    );
}

/// A proxy's sign-in page where the API's JSON should be.
fn sign_in_page(s: &mut TcpStream) {
    respond(
        s,
        "200 OK",
        &[("content-type", "text/html; charset=utf-8")],
        b"<!DOCTYPE html><html><head><title>Sign in to your account</title></head></html>",
    );
}

/// What a case may end as for p-0002: `Strict` must fail the partition;
/// `Lenient` may also commit it with its one record written or quarantined.
#[derive(PartialEq)]
enum Expect {
    Strict,
    Lenient,
}

/// A temp folder T with the lake at T/a/b/lake: anything escaping the lake
/// root by a few levels lands in T, T/a or T/a/b, which must stay clean.
struct Nest {
    dir: tempfile::TempDir,
}

impl Nest {
    fn new() -> Nest {
        Nest {
            dir: tempfile::Builder::new()
                .prefix("syncvet-hostile-")
                .tempdir()
                .unwrap(),
        }
    }
    fn lake(&self) -> String {
        self.dir.path().join("a/b/lake").display().to_string()
    }
    fn assert_clean(&self, case: &str) {
        for file in walk(self.dir.path()) {
            assert!(
                file.starts_with("a/b/lake/"),
                "{case}: {file} written outside the lake root"
            );
        }
        for level in [
            self.dir.path(),
            &self.dir.path().join("a"),
            &self.dir.path().join("a/b"),
        ] {
            let entries: Vec<_> = std::fs::read_dir(level)
                .map(|d| d.flatten().count())
                .into_iter()
                .collect();
            assert!(
                entries.iter().all(|&n| n <= 1),
                "{case}: extra entries in {}",
                level.display()
            );
        }
    }
}

fn hostile_etl(emulator: &TestEmulator, api: &str, lake: &str) -> Etl {
    emulator
        .etl_via(api, lake)
        .env("SYNCVET_ETL__API__REQUEST_TIMEOUT_SECS", 5)
        .env("SYNCVET_ETL__API__RETRY__MAX_ATTEMPTS", 2)
        .env("SYNCVET_ETL__SYNC__RUN_DEADLINE_SECS", 60)
        .timeout_secs(120)
}

/// The status and error the report gives a partition of `source`.
fn reported(lake: &str, source: &str) -> Vec<(String, String)> {
    latest_report(lake)["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source_id"] == source)
        .map(|p| {
            (
                p["status"].as_str().unwrap().to_owned(),
                p["error"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn hostile_pages_fail_their_partition_alone_with_a_clear_error() {
    let settings = EmulatorConfig {
        pims_sources: 2,
        supplier_sources: 0,
        rows_per_day: 30,
        ..EmulatorConfig::default()
    };
    let emulator = TestEmulator::start(settings);
    let truth = Truth::new(
        &emulator.settings(),
        &syncvet_e2e::dates(DATE, 1),
        &["sites", "clients"],
        &["p-0001"],
    );
    // Each case, and what p-0002's failure must say (besides being clear).
    let cases: [(&str, Hostile, Expect, &[&str]); 9] = [
        ("malformed JSON", malformed_json, Expect::Strict, &[]),
        (
            "items not an array",
            items_not_an_array,
            Expect::Strict,
            &[],
        ),
        (
            "Content-Length of 2 GB",
            content_length_2gb,
            Expect::Strict,
            &[],
        ),
        ("never-ending body", never_ending_body, Expect::Strict, &[]),
        // A 200,000-deep array as a record: failing the page or quarantining
        // the record (with its reason) are both clear; a stack overflow is not.
        ("deeply nested JSON", deeply_nested, Expect::Lenient, &[]),
        ("invalid UTF-8", invalid_utf8, Expect::Lenient, &[]),
        ("a 20 MB string", huge_string, Expect::Lenient, &[]),
        (
            "the same page and token forever",
            same_token_forever,
            Expect::Strict,
            &[
                "p-0002/",
                "/2026-10-01",
                "loop-token",
                "api.params.continuation_token",
            ],
        ),
        (
            "an HTML sign-in page",
            sign_in_page,
            Expect::Strict,
            &["text/html; charset=utf-8", "<!DOCTYPE html>"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, hostile, expect, says) in cases {
        let api = intercept(emulator.addr(), move |request, stream| {
            request.target.starts_with("/api/batch/p-0002/").then(|| {
                hostile(stream);
                false
            })
        });
        let nest = Nest::new();
        let lake = nest.lake();
        let out = hostile_etl(&emulator, &api, &lake)
            .args([
                "run", "--date", DATE, "--entity", "sites", "--entity", "clients",
            ])
            .run();
        if let Err(problem) = check_case(&lake, &out, &truth, &expect, says) {
            failures.push(format!(
                "{name}: {problem}\n  exit {:?}\n{}",
                out.code,
                syncvet_e2e::tail(&out.stdout, 12)
            ));
        }
        assert!(
            out.peak_rss_kib < 512 * 1024,
            "{name}: peak RSS {} MiB",
            out.peak_rss_kib / 1024
        );
        nest.assert_clean(name);
        eprintln!(
            "{name}: exit {:?} in {:?}, peak RSS {} MiB",
            out.code,
            out.elapsed,
            out.peak_rss_kib / 1024
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn check_case(
    lake: &str,
    out: &Outcome,
    truth: &Truth,
    expect: &Expect,
    says: &[&str],
) -> Result<(), String> {
    let code = out.code.ok_or("killed by a signal (a crash)")?;
    if !(code == 2 || (code == 0 && *expect == Expect::Lenient)) {
        return Err(format!("exit {code}"));
    }
    let listing = Listing::of(lake);
    let problems = listing.commit_violations(true);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    // p-0001 is untouched by p-0002's trouble.
    let reading = read_lake(lake);
    for (partition, total) in &truth.totals {
        let rows =
            reading.data().get(partition).map_or(0, |(r, _)| *r) + reading.quarantined(partition);
        if rows != *total || !listing.batches.contains_key(partition) {
            return Err(format!("{partition}: {rows} of {total} records"));
        }
    }
    for (status, error) in reported(lake, "p-0002") {
        match status.as_str() {
            "committed" if *expect == Expect::Lenient => {}
            "failed" if error.len() > 10 && says.iter().all(|s| error.contains(s)) => {}
            _ => {
                return Err(format!(
                    "p-0002 reported {status}: {error:?}, which should say {says:?}"
                ));
            }
        }
    }
    let committed_p2: Vec<_> = listing
        .batches
        .iter()
        .filter(|(k, _)| k.contains("=p-0002/"))
        .collect();
    for (partition, landed) in committed_p2 {
        if *expect == Expect::Strict && partition.contains("/sites/") {
            return Err(format!("{partition} committed from a hostile page"));
        }
        let total = landed["rows"].as_u64().unwrap_or(0) + landed["rejected"].as_u64().unwrap_or(0);
        if partition.contains("/sites/") && total != 1 {
            return Err(format!("{partition}: {total} records of the 1 served"));
        }
    }
    Ok(())
}

/// Source ids with `../` and `=` from the API (and `../` on the command line):
/// they fail by name, the good source lands, nothing escapes the lake.
#[test]
fn hostile_source_ids_write_nothing_outside_the_lake() {
    let settings = EmulatorConfig {
        pims_sources: 1,
        supplier_sources: 0,
        rows_per_day: 30,
        ..EmulatorConfig::default()
    };
    let emulator = TestEmulator::start(settings);
    let evil = ["../../../escape", "p=0002", "..", "a/b"];
    let api = intercept(emulator.addr(), move |request, stream| {
        if request.target.starts_with("/api/practices") {
            let mut items = vec![
                serde_json::json!({"practiceId":"p-0001","practiceName":"Good","dataSourceType":"PIMS","timeZone":"UTC","batchSyncEnabled":true}),
            ];
            items.extend(evil.iter().map(|id| serde_json::json!({"practiceId":id,"practiceName":"Evil","dataSourceType":"PIMS","timeZone":"UTC","batchSyncEnabled":true})));
            let body = serde_json::json!({"items": items, "continuationToken": null}).to_string();
            return Some(json_ok(stream, body.as_bytes()));
        }
        let good = request.target.starts_with("/api/batch/p-0001/")
            || !request.target.starts_with("/api/batch/");
        (!good).then(|| {
            let body = r#"{"totalCount":1,"continuationToken":null,"items":[{"id":"e1","lastModified":"2026-10-01T00:00:00Z","deleted":false,"name":"evil"}]}"#;
            json_ok(stream, body.as_bytes())
        })
    });
    let nest = Nest::new();
    let lake = nest.lake();
    let out = hostile_etl(&emulator, &api, &lake)
        .args(["run", "--date", DATE, "--entity", "sites"])
        .run();
    out.expect_code(2);
    nest.assert_clean("ids from the API");
    let report = latest_report(&lake).to_string();
    for id in evil {
        assert!(report.contains(id), "{id} not named in the report");
    }
    let listing = Listing::of(&lake);
    let partitions = listing.partitions();
    assert_eq!(partitions.len(), 1, "only p-0001 committed: {partitions:?}");
    assert!(
        listing
            .objects
            .keys()
            .all(|k| !k.contains("escape") && !k.contains("p=0002")),
        "{:?}",
        listing.objects.keys()
    );

    let nest = Nest::new();
    let lake = nest.lake();
    let out = Etl::new(&lake)
        .emu("pims_sources", 1)
        .args(["run", "--date", DATE, "--practice", "../../../escape"])
        .run();
    assert!(matches!(out.code, Some(1 | 2)), "exit {:?}", out.code);
    assert!(
        out.stdout.contains("escape") || out.stderr.contains("escape"),
        "named:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    nest.assert_clean("id on the command line");
    assert!(Listing::of(&lake).partitions().is_empty());
}

/// Hostile configuration: each stops before any work, exit 1, one line.
#[test]
fn hostile_configuration_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    let sites = std::fs::read_to_string(
        syncvet_e2e::workspace_dir().join("crates/syncvet-model/catalog/pims/sites.toml"),
    )
    .unwrap();
    std::fs::write(
        catalog.join("sites.toml"),
        sites.replacen("type = \"string\"", "type = \"strng\"", 1),
    )
    .unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let cases: Vec<(&str, Etl, &str)> = vec![
        (
            "catalog file with a wrong type",
            Etl::new(&lake).env("SYNCVET_ETL__SYNC__CATALOG_DIR", catalog.display()),
            "strng",
        ),
        (
            "bad cron",
            Etl::new(&lake).env("SYNCVET_ETL__SCHEDULE__CRON", "61 * * * * *"),
            "schedule.cron",
        ),
        (
            "unknown lake scheme",
            Etl::new("gopher://host/lake"),
            "gopher",
        ),
    ];
    for (name, etl, needle) in cases {
        let out = etl.args(["run", "--date", DATE]).run();
        let lines = syncvet_e2e::error_lines(&out.stderr);
        assert_eq!(out.code, Some(1), "{name}: {}", out.stderr);
        assert_eq!(
            lines.len(),
            1,
            "{name}: one error line, got:\n{}",
            out.stderr
        );
        assert!(
            lines[0].contains(needle),
            "{name}: `{}` does not name `{needle}`",
            lines[0]
        );
    }
    assert!(!Path::new(&lake).exists(), "nothing written");
}
