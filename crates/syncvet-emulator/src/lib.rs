//! A faithful emulator of the SyncVet Consumer API, for the demo, the tests
//! and the benchmarks. It serves exactly the contract of `api-contract.md`:
//! the OAuth2 token endpoint, `GET /api/practices`, and the paged batch
//! endpoint `GET /api/batch/{practiceId}/{entity}` for every entity of the
//! embedded catalog, plus `GET /__admin/stats` and `POST /__admin/config`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use syncvet_emulator::{EmulatorConfig, RunningEmulator};
//! let emulator = RunningEmulator::start(EmulatorConfig { drop_rate: 0.05, ..Default::default() }, 0).await?;
//! println!("API at {}, tokens at {}", emulator.base_url(), emulator.token_url());
//! emulator.update(serde_json::json!({"rate_limit_rps": 20})).unwrap();
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! - **Data is a function, not a store.** Every value of every record is
//!   derived by hand-written hashing from (seed, source, entity, date,
//!   record index) ([`records`](crate) module), so a page is generated on
//!   demand in time proportional to its size: record 999,000 of a
//!   1,000,000-record batch costs what record 0 costs, nothing is held in
//!   memory, and the same request gives the same bytes whatever the order or
//!   concurrency of requests. Batch sizes ([`record_count`]) spread sources
//!   log-uniformly `spread` apart around `rows_per_day`, weighted per entity
//!   by the catalog's `daily_weight`; each field's values come from its
//!   catalog hints (`sample`, `references`, `range`, listed `values`), never
//!   from its name, so an entity added to the catalog is generated as
//!   realistically as its file says.
//! - **A batch is a day of history.** Each record is new, a changed version
//!   or a deletion of a record created up to `change_lookback_days` before
//!   (`change_rate`, `delete_rate`), drawn from its own hash; a change or
//!   deletion carries the id of a new record of an earlier day, found by a
//!   few hashes and a day size, never by reading that day
//!   ([`record_identity`] gives any record's id, kind and origin, with the
//!   draws the render uses).
//! - **JSON is written by hand** into one buffer per page (itoa, ryu,
//!   escaped strings): no `serde_json::Value` on the hot path, which is what
//!   lets one core serve hundreds of MB/s.
//! - **Faults below HTTP.** axum routes the requests, but connections are
//!   served by our own accept loop over hyper so that a "drop" closes the
//!   connection with no response and a "truncate" announces the full
//!   `Content-Length`, sends half the body, and closes.
//! - **Switches swap whole.** The configuration in force is an
//!   `Arc<EmulatorConfig>` replaced at once by an admin patch; requests in
//!   flight keep the one they started with.
//! - **A gateway's limits, each a switch** ([`limits`] module, pure of
//!   HTTP and driven by tokio's clock, so paused-clock tests can use a
//!   [`Gateway`] directly): a token bucket (`governor`, per client id;
//!   `rate_limit_rps`, `burst`), N calls per T seconds in fixed windows
//!   aligned to the start (`Retry-After` = the rest of the window, rounded
//!   up, as Azure API Management sends) or in a sliding window
//!   (`window_calls`, `window_secs`, `window_sliding`), and a cap on
//!   requests in flight per client (`max_concurrent_requests`). Every limit
//!   set applies; refusals consume nothing. The stats count 429s by kind
//!   (`rate_limited_by`) and early retries: requests that arrive after the
//!   client could have seen a 429 (`early_retry_grace_ms` after it was
//!   sent) and before its `Retry-After` has passed (see [`Stats`]).
//! - **Continuation tokens** are `{offset}-{issued}-{check}` in hex; with
//!   `continuation_ttl_secs = 0` they are a pure function of the position
//!   (and [`continuation_token`] computes them); with a TTL they carry their
//!   issue time, so two reads of a page then differ in the token only.
//!
//! Order of checks for an API request: authentication (401), the limits
//! (429 with `Retry-After`: concurrency, window, token bucket), latency, injected faults (drop, 500, 503, 408),
//! then 403 forbidden source, 404 unknown source, 400 bad entity / date /
//! page size / continuation token, 202 not ready, 200 (maybe truncated).
//! The token and admin endpoints get no faults. See the crate's README for
//! every switch.

mod api;
mod auth;
pub mod cli;
mod config;
mod error;
mod hash;
mod json;
pub mod limits;
mod lineage;
mod lookahead;
mod page;
mod plan;
mod records;
mod server;
mod sources;
mod state;
mod stats;

pub use config::EmulatorConfig;
pub use error::EmulatorError;
pub use limits::{Gateway, GatewayLimits, InFlight, LimitKind, Limited};
pub use lineage::{RecordIdentity, RecordKind, record_identity};
pub use page::continuation_token;
pub use records::DRIFT_KEYS;
pub use server::RunningEmulator;
pub use sources::{Practice, record_count, source, source_id, sources};
pub use stats::Stats;
