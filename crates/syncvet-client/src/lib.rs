//! The SyncVet Consumer API client: everything between the ETL and the API.
//!
//! ```text
//! PageStream::next ─► RateGovernor (fair per practice, paced, paused by 429s)
//!                  ─► TokenCache (one token, refreshed early by one request)
//!                  ─► GET page ─► bounded body ─► envelope (items as a Bytes slice)
//!                  ◄─ retry / backoff / 202 polling / 401 refresh, within the deadline
//! ```
//!
//! # Design
//!
//! - **One `ApiClient` per process.** Clones share one token cache, one rate
//!   governor and one set of metrics: the API's limit is per consumer, so
//!   every worker must draw from the same budget and stop together on a 429.
//! - **Token cache** (`auth`): one token; refreshed ahead of expiry (a
//!   quarter of its lifetime or `api.token.refresh_margin_secs`, plus jitter)
//!   by a single request while the others keep using the still-valid token
//!   or wait. Every attempt reads the current token, so a retry never sends
//!   a stale one. A 401 invalidates that token and the request is retried
//!   once; a second 401 is `ClientError::Auth`, fatal for the run.
//! - **Rate governor** (`rate`): a `governor` limiter at the current rate,
//!   a shared pause after each 429 of at least Retry-After (seconds or HTTP
//!   date; 0 or a past date still pauses `api.rate.min_pause_ms`; never
//!   shortened), slow start (×`slow_start_factor` per short period spent
//!   at the limit, until the first 429) and then AIMD: ×`decrease_factor`
//!   per 429 (once per rate step), +`increase_fraction` of the rate (at
//!   least `increase_rps`) per quiet period spent at the limit. Permits are
//!   handed out round-robin across practices, so a huge practice cannot
//!   starve a small one.
//! - **Retries**: 408, 500, 502, 503, 504, connection errors, timeouts and
//!   truncated or unparsable bodies are retried with exponential backoff and
//!   jitter (a 503's Retry-After is a floor), at most `api.retry.max_attempts`
//!   times and never past the deadline (`ApiClient::with_deadline`). 202 is
//!   polled (Retry-After or `not_ready_poll_secs`) until ready or the
//!   deadline. 400, 403, 405, 501 are final and have their own variants.
//! - **Pages** (`pages`): `PageStream` follows continuation tokens; an
//!   expired token (400 `ContinuationTokenExpired`) yields
//!   `PageEvent::Restarted` and starts again from page 0, at most
//!   `api.max_restarts` times. Bodies are read as a stream with a size bound
//!   (`api.max_body_bytes`, checked against Content-Length first), and the
//!   envelope is parsed with the items borrowed as a `RawValue`: a page's
//!   records reach the caller as a `Bytes` slice of the body, never copied.
//! - **Configurable contract**: paths, query-parameter and envelope field
//!   names are `ApiConfig` keys defaulting to `api-contract.md`.
//! - Secrets and tokens are `Secret`s: `Debug`/`Display` print `<redacted>`,
//!   and no log line carries them.
//!
//! ```no_run
//! # async fn demo(config: syncvet_client::ApiConfig) -> Result<(), syncvet_client::ClientError> {
//! use syncvet_client::{ApiClient, PageEvent};
//! let client = ApiClient::new(&config, config.resolve_secret()?)?;
//! for practice in client.practices().await? {
//!     let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
//!     let mut pages = client.batch(&practice.id, "patients", date);
//!     while let Some(event) = pages.next().await {
//!         match event? {
//!             PageEvent::Page(page) => { /* decode page.items */ }
//!             PageEvent::Restarted => { /* drop what was buffered */ }
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

mod auth;
mod body;
mod client;
mod config;
mod error;
mod metrics;
mod pages;
mod rate;
mod retry;

pub use client::ApiClient;
pub use config::{
    ApiConfig, EnvelopeConfig, ParamsConfig, PathsConfig, RateConfig, RetryConfig, Secret,
    TokenConfig,
};
pub use error::ClientError;
pub use metrics::{MetricsSnapshot, StreamStats};
pub use pages::{BatchPage, PageEvent, PageStream, Practice};
