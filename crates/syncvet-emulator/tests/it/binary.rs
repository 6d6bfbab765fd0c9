//! The `syncvet-emulator` binary: flags, the one `listening on` line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Stops the child we started, even when an assertion fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_its_address_and_honours_flags() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncvet-emulator"))
        .args([
            "--port",
            "0",
            "--pims-sources",
            "2",
            "--supplier-sources",
            "0",
            "--client-secret",
            "s3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let _child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let http = reqwest::Client::new();
    let token = http
        .post(format!("{url}/oauth2/v2.0/token"))
        .form(&[
            ("client_id", "demo-client"),
            ("client_secret", "s3"),
            ("scope", "https://consumerapi.sync.vet/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    let token: serde_json::Value = serde_json::from_slice(&token.bytes().await.unwrap()).unwrap();
    let token = token["access_token"]
        .as_str()
        .expect("the secret flag took effect");
    let page = http
        .get(format!("{url}/api/practices"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&page.bytes().await.unwrap()).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
}
