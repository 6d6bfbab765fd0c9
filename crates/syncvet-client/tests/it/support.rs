//! Shared helpers.

use std::collections::HashSet;

use syncvet_client::{ApiClient, ApiConfig, ClientError, PageEvent, SecretString, StreamStats};
use syncvet_emulator::{EmulatorConfig, RunningEmulator};

/// A client config for `emulator` with quick backoffs and a generous rate.
pub fn config_for(base_url: &str, token_url: &str) -> ApiConfig {
    let mut config = ApiConfig {
        base_url: base_url.to_string(),
        token_url: token_url.to_string(),
        client_id: "demo-client".into(),
        client_secret: Some(SecretString::from("demo-secret")),
        page_size: 100,
        request_timeout_secs: 10,
        ..ApiConfig::default()
    };
    config.rate.requests_per_sec = 500.0;
    config.rate.burst = 50;
    config.retry.initial_backoff_ms = 20;
    config.retry.max_backoff_secs = 1;
    config.retry.max_attempts = 10;
    config.retry.not_ready_poll_secs = 1;
    config
}

pub async fn emulator(config: EmulatorConfig) -> RunningEmulator {
    RunningEmulator::start(config, 0)
        .await
        .expect("emulator starts")
}

pub fn client(emulator: &RunningEmulator, tune: impl FnOnce(&mut ApiConfig)) -> ApiClient {
    let mut config = config_for(&emulator.base_url(), &emulator.token_url());
    tune(&mut config);
    ApiClient::new(&config, SecretString::from("demo-secret")).expect("valid config")
}

/// Everything one batch stream delivered, checked for order and duplicates.
#[derive(Debug)]
pub struct Fetched {
    pub records: u64,
    pub total_count: Option<u64>,
    pub stats: StreamStats,
}

/// Reads a whole batch; after a restart, drops what was buffered (as the
/// runner does). Fails on a duplicate record id or a page out of order.
pub async fn fetch_all(
    client: &ApiClient,
    practice: &str,
    entity: &str,
    date: chrono::NaiveDate,
) -> Result<Fetched, ClientError> {
    let mut stream = client.batch(practice, entity, date);
    let mut ids = HashSet::new();
    let (mut pages, mut total_count) = (0u32, None);
    while let Some(event) = stream.next().await {
        match event? {
            PageEvent::Restarted => {
                ids.clear();
                pages = 0;
            }
            PageEvent::Page(page) => {
                assert_eq!(page.number, pages, "pages in order, none skipped");
                pages += 1;
                total_count = page.total_count.or(total_count);
                let items: Vec<serde_json::Value> =
                    serde_json::from_slice(&page.items).expect("items is a JSON array");
                for item in items {
                    let id = item["id"].as_str().expect("record id").to_string();
                    assert!(ids.insert(id.clone()), "record {id} received twice");
                }
            }
        }
    }
    Ok(Fetched {
        records: ids.len() as u64,
        total_count,
        stats: stream.stats(),
    })
}

pub fn status_count(emulator: &RunningEmulator, status: &str) -> u64 {
    emulator.stats().by_status.get(status).copied().unwrap_or(0)
}

pub fn date() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
}
