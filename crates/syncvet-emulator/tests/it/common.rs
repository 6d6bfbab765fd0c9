//! A started emulator, a keep-alive client and a token.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use syncvet_emulator::{EmulatorConfig, RunningEmulator};

pub const DATE: &str = "2026-11-27";

pub fn date() -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(DATE, "%Y-%m-%d").unwrap()
}

pub struct Harness {
    pub emulator: RunningEmulator,
    pub http: reqwest::Client,
    pub token: String,
}

/// One response, body read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub async fn start(config: EmulatorConfig) -> Harness {
    let emulator = RunningEmulator::start(config, 0)
        .await
        .expect("emulator starts");
    let http = reqwest::Client::new();
    let token = fetch_token(&http, &emulator).await;
    Harness {
        emulator,
        http,
        token,
    }
}

pub async fn token_request(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> Reply {
    let response = http
        .post(url)
        .form(form)
        .send()
        .await
        .expect("token request");
    reply(response).await
}

pub async fn fetch_token(http: &reqwest::Client, emulator: &RunningEmulator) -> String {
    let reply = token_request(
        http,
        &emulator.token_url(),
        &[
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
            ("scope", "https://consumerapi.sync.vet/.default"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

impl Harness {
    /// `GET {base}{path}` with the bearer token.
    pub async fn get(&self, path: &str) -> Reply {
        self.try_get(path).await.expect("request")
    }

    pub async fn try_get(&self, path: &str) -> Result<Reply, reqwest::Error> {
        let response = self
            .http
            .get(format!("{}{path}", self.emulator.base_url()))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Every page of the batch of [`DATE`]: (bodies, items).
    pub async fn read_batch(
        &self,
        source: &str,
        entity: &str,
        page_size: u64,
    ) -> (Vec<Vec<u8>>, Vec<serde_json::Value>) {
        self.read_batch_of(source, entity, DATE, page_size).await
    }

    /// Every page of the batch of `date` (`YYYY-MM-DD`): (bodies, items).
    pub async fn read_batch_of(
        &self,
        source: &str,
        entity: &str,
        date: &str,
        page_size: u64,
    ) -> (Vec<Vec<u8>>, Vec<serde_json::Value>) {
        let mut bodies = Vec::new();
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("batch/{source}/{entity}?date={date}&pageSize={page_size}");
            if let Some(t) = &token {
                path.push_str(&format!("&continuationToken={t}"));
            }
            let reply = self.get(&path).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
            let page = reply.json();
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            bodies.push(reply.body);
            match page["continuationToken"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        (bodies, items)
    }
}
