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
//! - **Rate governor** (`rate`): holds a limit of any shape a gateway
//!   enforces (token bucket of any burst, fixed or sliding window, cap on
//!   requests in flight) with four controls adapted from 429s: the rate
//!   (slow start until the first 429, then a cut to `decrease_factor` ×,
//!   to half when limited again at once, or to a window's own rate when a
//!   long Retry-After points at its end, and a cubic climb back that is
//!   flat near the rate that tripped the limit for `recovery_secs`), the
//!   burst (halved per cut, +1 per quiet period, never refilled by a
//!   pause), a shared pause of at least Retry-After (seconds or any HTTP
//!   date; 0 or a past date still pauses `min_pause_ms`; never shortened),
//!   and the requests in flight (capped at the others in flight when a 429
//!   comes back, raised by one per quiet period). Permits are handed out
//!   round-robin across practices, so a huge practice cannot starve a
//!   small one.
//! - **Retries**: 408, 500, 502, 503, 504, connection errors, timeouts and
//!   truncated bodies are retried with exponential backoff and
//!   jitter (a 503's Retry-After is a floor), at most `api.retry.max_attempts`
//!   times and never past the deadline (`ApiClient::with_deadline`). 202 is
//!   polled (Retry-After or `not_ready_poll_secs`) until ready or the
//!   deadline. 400, 403, 405, 501 are final and have their own variants, as
//!   is a 200 that is not JSON (a proxy's sign-in page: the error names its
//!   content type and first bytes). An answer is read by one pure step
//!   (`client::classify` for pages, `auth::classify_token` for tokens) into
//!   what to do next, and both requests retry through one policy
//!   (`retry::Retries`) within the same run deadline. A transient failure
//!   keeps its cause (`TransientError`, the `source` of `RetriesExhausted`).
//! - **Requests** (`request`): what a GET asks for (the practice list or a
//!   batch, the page size, the continuation token) and its URL under the
//!   configured paths and names. The page stream builds a `PageRequest` and
//!   asks the client to fetch it; the client knows nothing of streams.
//! - **Pages** (`pages`): `PageStream` follows continuation tokens; an
//!   expired token (400 `ContinuationTokenExpired`) yields
//!   `PageEvent::Restarted` and starts again from page 0, at most
//!   `api.max_restarts` times. A chain that cannot end fails the batch
//!   with `ClientError::BrokenPageChain` (naming the batch and the token):
//!   a token served twice, a page repeating the previous one (the server
//!   ignored the continuation parameter), more records than `totalCount`,
//!   more pages than it can need or than `api.max_pages_per_batch`.
//! - **Page size** (`page_size`): `api.page_size` (default 5000, the
//!   contract's maximum: fewest requests under a request-rate limit) until
//!   the API refuses it with a 400 before any page came back; then it steps
//!   down (2000, 1000, …) for every stream, and says so once.
//! - **Bodies** (`body`) are read as a stream with a size bound
//!   (`api.max_body_bytes`, checked against Content-Length first), and the
//!   envelope is found by a structural scan (`scan`: strings and brackets,
//!   no validation of the records, which the decoder parses in full): a
//!   page's records reach the caller as a `Bytes` slice of the body with
//!   each record's range, never copied.
//! - **Configurable contract**: paths, query-parameter and envelope field
//!   names are `ApiConfig` keys defaulting to `api-contract.md`.
//! - Secrets and tokens are `secrecy::SecretString`s: `Debug` prints `[REDACTED]`,
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
mod page_size;
mod pages;
mod rate;
mod request;
mod retry;

pub use client::ApiClient;
pub use config::{
    ApiConfig, EnvelopeConfig, ParamsConfig, PathsConfig, RateConfig, RetryConfig, TokenConfig,
};
pub use error::{ClientError, TransientError};
pub use metrics::{MetricsSnapshot, StreamStats};
pub use pages::{BatchPage, PageEvent, PageStream, Practice};
/// The one secret type (client secret, tokens, storage keys): `Debug`
/// prints `[REDACTED]`, and only `expose_secret` shows the value.
pub use secrecy::{ExposeSecret, SecretString};
