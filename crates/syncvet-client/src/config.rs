//! `[api]`: everything the client needs to know about the upstream API.
//!
//! Every path, query-parameter name and envelope field name of the contract
//! is a key here (defaults = `api-contract.md`), so a deployment against the
//! real API adapts without a code change. `validate` is pure; reading the
//! secret (environment, file) is the separate `resolve_secret`.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::ClientError;

/// A secret string (client secret, access token). `Debug` and `Display`
/// print `<redacted>`, so it cannot leak through a log line or a panic.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: call only where it is put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The `[api]` section: how to reach and authenticate against the SyncVet
/// Consumer API, and how hard to push it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Base URL of the API; endpoint paths are joined onto it (a missing
    /// trailing `/` is added).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// OAuth2 token endpoint (client-credentials grant).
    #[serde(default = "default_token_url")]
    pub token_url: String,
    /// OAuth2 scope requested with every token.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// OAuth2 client id.
    #[serde(default)]
    pub client_id: String,
    /// The client secret itself. Prefer `client_secret_env` or
    /// `client_secret_file` so that the secret stays out of config files.
    /// When several are set, the first found of value, environment
    /// variable, file wins.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Name of the environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Path of a file holding the client secret (surrounding whitespace is
    /// trimmed), e.g. a mounted Kubernetes secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Records per batch page requested (`pageSize`); the contract allows
    /// 1..=5000. A server that refuses the size with a 400 before any page
    /// came back gets smaller ones (2000, 1000, 500, 200, 100) until one works.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Time limit of one HTTP request, from sending to the last body byte, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Time limit to establish a TCP/TLS connection, in seconds.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Largest response body accepted, in bytes. A bigger `Content-Length`
    /// is refused before reading; a body that grows past it is cut off
    /// (`BodyTooLarge`), so memory stays bounded whatever the server sends.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// How many times one page stream may start over after its continuation
    /// token expired before giving up.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Most pages one batch may take. A guard against a server that hands
    /// out new continuation tokens forever; the chain checks (a token or a
    /// page served twice, more records than `totalCount`) catch the rest.
    #[serde(default = "default_max_pages_per_batch")]
    pub max_pages_per_batch: u64,
    /// Endpoint paths, relative to `base_url`.
    #[serde(default)]
    pub paths: PathsConfig,
    /// Query-parameter names.
    #[serde(default)]
    pub params: ParamsConfig,
    /// JSON field names of the page envelope and of error bodies.
    #[serde(default)]
    pub envelope: EnvelopeConfig,
    /// Token cache settings.
    #[serde(default)]
    pub token: TokenConfig,
    /// `[api.rate]`: the rate governor.
    #[serde(default)]
    pub rate: RateConfig,
    /// `[api.retry]`: retries, backoff and polling of batches not ready yet.
    #[serde(default)]
    pub retry: RetryConfig,
}

/// Endpoint paths relative to `base_url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// The list of data sources readable by this consumer.
    #[serde(default = "default_practices_path")]
    pub practices: String,
    /// One page of a nightly batch; `{practiceId}` and `{entity}` are
    /// replaced (percent-encoded).
    #[serde(default = "default_batch_path")]
    pub batch: String,
}

/// Query-parameter names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsConfig {
    /// The batch date (`YYYY-MM-DD`).
    #[serde(default = "default_date_param")]
    pub date: String,
    /// The page size.
    #[serde(default = "default_page_size_param")]
    pub page_size: String,
    /// The continuation token of the next page.
    #[serde(default = "default_continuation_param")]
    pub continuation_token: String,
}

/// JSON field names of the page envelope and of error bodies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeConfig {
    /// The array of records of a page.
    #[serde(default = "default_items_field")]
    pub items: String,
    /// The token of the next page (`null` or absent on the last page).
    #[serde(default = "default_continuation_field")]
    pub continuation_token: String,
    /// The number of records in the whole batch (optional).
    #[serde(default = "default_total_count_field")]
    pub total_count: String,
    /// The error code in an error body.
    #[serde(default = "default_error_field")]
    pub error: String,
    /// The human-readable text in an error body.
    #[serde(default = "default_message_field")]
    pub message: String,
    /// The error code meaning "continuation token expired, start over".
    #[serde(default = "default_expired_code")]
    pub continuation_expired_code: String,
}

/// Token cache settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Refresh a token this many seconds before it expires (at most a
    /// quarter of its lifetime, plus up to 50% random jitter so that many
    /// processes do not refresh in step).
    #[serde(default = "default_refresh_margin_secs")]
    pub refresh_margin_secs: u64,
}

/// `[api.rate]`: the process-wide rate governor. The API's limit is not
/// published: with `adaptive` the governor starts at `requests_per_sec`,
/// multiplies it by `slow_start_factor` every `slow_start_period_secs`
/// until the first 429 (slow start), then cuts it multiplicatively on every
/// 429 and raises it by a few percent after quiet periods, so it finds the
/// limit in seconds and holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Starting request rate, requests per second (all workers together).
    #[serde(default = "default_requests_per_sec")]
    pub requests_per_sec: f64,
    /// Requests that may go at once after an idle period, at most (the
    /// adaptive burst halves on a 429 and grows back by one per quiet period).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Adapt the rate, the burst and the concurrency to 429 answers. When
    /// false they are fixed (429s still pause every worker for Retry-After).
    #[serde(default = "default_adaptive")]
    pub adaptive: bool,
    /// The adaptive rate never goes below this, requests per second.
    #[serde(default = "default_min_requests_per_sec")]
    pub min_requests_per_sec: f64,
    /// The adaptive rate never goes above this, requests per second.
    #[serde(default = "default_max_requests_per_sec")]
    pub max_requests_per_sec: f64,
    /// Factor applied to the rate on a 429 (once per rate step: answers to
    /// requests sent at an older rate do not cut it again). In (0, 1).
    #[serde(default = "default_decrease_factor")]
    pub decrease_factor: f64,
    /// Seconds the rate takes to climb back to the rate that drew the last
    /// 429 (on a cubic curve: fast at first, flat near it), and before the
    /// concurrency is raised again to a level that drew one. Longer when
    /// the limit's own cycle is (a window's length), up to 4×. After it the
    /// rate probes above, ever faster, in case the limit went up.
    #[serde(default = "default_recovery_secs")]
    pub recovery_secs: f64,
    /// Seconds without a 429, while the governor was the bottleneck,
    /// between two increases of the rate, the burst (+1) or the
    /// concurrency (+1).
    #[serde(default = "default_quiet_period_secs")]
    pub quiet_period_secs: f64,
    /// Most requests in flight at once, all workers together (0 = no cap
    /// but the workers'). When adaptive, a 429 that comes back while `n`
    /// other requests are in flight lowers it to `n`.
    #[serde(default)]
    pub max_in_flight: u32,
    /// Slow start: until the first 429 the rate is multiplied by this
    /// after each `slow_start_period_secs` spent at the limit, so that a
    /// start far below the API's limit costs seconds, not minutes. The
    /// first 429 ends slow start for good. 1 = no slow start.
    #[serde(default = "default_slow_start_factor")]
    pub slow_start_factor: f64,
    /// Seconds without a 429, while the governor was the bottleneck, before
    /// each slow-start multiplication.
    #[serde(default = "default_slow_start_period_secs")]
    pub slow_start_period_secs: f64,
    /// Pause after a 429 whose Retry-After is 0, a date in the past or
    /// unparsable, in milliseconds: never a hot loop.
    #[serde(default = "default_min_pause_ms")]
    pub min_pause_ms: u64,
    /// Pause after a 429 without Retry-After, in milliseconds.
    #[serde(default = "default_pause_ms")]
    pub default_pause_ms: u64,
    /// Added to every Retry-After so that the next request lands after it
    /// even with coarse server clocks, in milliseconds.
    #[serde(default = "default_pause_margin_ms")]
    pub pause_margin_ms: u64,
}

/// `[api.retry]`: retries of transient failures and polling of batches not
/// ready yet. All waits are bounded by the run deadline, if any.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request for transient failures (408, 5xx, connection
    /// errors, timeouts, truncated bodies), the first one included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the first retry, in milliseconds; doubles each retry.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest backoff between two attempts, in seconds (a longer
    /// Retry-After on a 503 is still honoured).
    #[serde(default = "default_max_backoff_secs")]
    pub max_backoff_secs: u64,
    /// 429 answers tolerated for one request before giving up (each one
    /// has already paused every worker for its Retry-After).
    #[serde(default = "default_max_rate_limited")]
    pub max_rate_limited: u32,
    /// Interval between polls of a batch answering 202 (not ready) without
    /// Retry-After, in seconds.
    #[serde(default = "default_not_ready_poll_secs")]
    pub not_ready_poll_secs: u64,
    /// Longest time to keep polling a batch that is not ready, in seconds,
    /// when no run deadline comes first.
    #[serde(default = "default_not_ready_max_wait_secs")]
    pub not_ready_max_wait_secs: u64,
}

fn default_base_url() -> String {
    "https://consumerapi.sync.vet/api/".into()
}
fn default_token_url() -> String {
    "https://login.microsoftonline.com/37d2016b-9350-4cc7-bb6e-0d2507211ecd/oauth2/v2.0/token"
        .into()
}
fn default_scope() -> String {
    "https://consumerapi.sync.vet/.default".into()
}
fn default_page_size() -> u32 {
    // The contract's maximum: under a request-rate limit a night takes as
    // many seconds as requests, so the fewest pages finish it fastest.
    5000
}
fn default_request_timeout_secs() -> u64 {
    60
}
fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_max_body_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_restarts() -> u32 {
    3
}
fn default_max_pages_per_batch() -> u64 {
    100_000
}
fn default_practices_path() -> String {
    "practices".into()
}
fn default_batch_path() -> String {
    "batch/{practiceId}/{entity}".into()
}
fn default_date_param() -> String {
    "date".into()
}
fn default_page_size_param() -> String {
    "pageSize".into()
}
fn default_continuation_param() -> String {
    "continuationToken".into()
}
fn default_items_field() -> String {
    "items".into()
}
fn default_continuation_field() -> String {
    "continuationToken".into()
}
fn default_total_count_field() -> String {
    "totalCount".into()
}
fn default_error_field() -> String {
    "error".into()
}
fn default_message_field() -> String {
    "message".into()
}
fn default_expired_code() -> String {
    "ContinuationTokenExpired".into()
}
fn default_refresh_margin_secs() -> u64 {
    300
}
fn default_requests_per_sec() -> f64 {
    10.0
}
fn default_burst() -> u32 {
    10
}
fn default_adaptive() -> bool {
    true
}
fn default_min_requests_per_sec() -> f64 {
    0.5
}
fn default_max_requests_per_sec() -> f64 {
    500.0
}
fn default_decrease_factor() -> f64 {
    0.85
}
fn default_recovery_secs() -> f64 {
    30.0
}
fn default_quiet_period_secs() -> f64 {
    1.0
}
fn default_slow_start_factor() -> f64 {
    1.5
}
fn default_slow_start_period_secs() -> f64 {
    1.0
}
fn default_min_pause_ms() -> u64 {
    1000
}
fn default_pause_ms() -> u64 {
    1000
}
fn default_pause_margin_ms() -> u64 {
    50
}
fn default_max_attempts() -> u32 {
    6
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_secs() -> u64 {
    30
}
fn default_max_rate_limited() -> u32 {
    100
}
fn default_not_ready_poll_secs() -> u64 {
    30
}
fn default_not_ready_max_wait_secs() -> u64 {
    4 * 3600
}

/// Every section defaults from `{}` so that `Default` equals "nothing configured".
macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                serde_json::from_str("{}").expect("all fields have defaults")
            }
        }
    )*};
}
default_from_serde!(
    ApiConfig,
    PathsConfig,
    ParamsConfig,
    EnvelopeConfig,
    TokenConfig,
    RateConfig,
    RetryConfig
);

fn config_error(key: &str, problem: impl Into<String>) -> ClientError {
    ClientError::Config {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn check_url(key: &str, value: &str) -> Result<(), ClientError> {
    let url =
        reqwest::Url::parse(value).map_err(|e| config_error(key, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(config_error(key, "must be an http:// or https:// URL"));
    }
    Ok(())
}

impl ApiConfig {
    /// Checks every value without any I/O; the error names the key to fix.
    pub fn validate(&self) -> Result<(), ClientError> {
        check_url("api.base_url", &self.base_url)?;
        check_url("api.token_url", &self.token_url)?;
        if self.client_id.trim().is_empty() {
            return Err(config_error("api.client_id", "must be set"));
        }
        if self.client_secret.is_none()
            && self.client_secret_env.is_none()
            && self.client_secret_file.is_none()
        {
            return Err(config_error(
                "api.client_secret_env",
                "set one of client_secret, client_secret_env, client_secret_file",
            ));
        }
        if !(1..=5000).contains(&self.page_size) {
            return Err(config_error("api.page_size", "must be within 1..=5000"));
        }
        for (key, v) in [
            ("api.request_timeout_secs", self.request_timeout_secs),
            ("api.connect_timeout_secs", self.connect_timeout_secs),
            ("api.max_body_bytes", self.max_body_bytes),
            ("api.max_pages_per_batch", self.max_pages_per_batch),
        ] {
            if v == 0 {
                return Err(config_error(key, "must be greater than 0"));
            }
        }
        if !self.paths.batch.contains("{practiceId}") || !self.paths.batch.contains("{entity}") {
            return Err(config_error(
                "api.paths.batch",
                "must contain {practiceId} and {entity}",
            ));
        }
        for (key, v) in [
            ("api.params.date", &self.params.date),
            ("api.params.page_size", &self.params.page_size),
            (
                "api.params.continuation_token",
                &self.params.continuation_token,
            ),
            ("api.envelope.items", &self.envelope.items),
            (
                "api.envelope.continuation_token",
                &self.envelope.continuation_token,
            ),
            ("api.envelope.total_count", &self.envelope.total_count),
            ("api.envelope.error", &self.envelope.error),
        ] {
            if v.is_empty() {
                return Err(config_error(key, "must not be empty"));
            }
        }
        self.rate.validate()?;
        self.retry.validate()
    }

    /// Reads the client secret: the first of `client_secret`,
    /// `client_secret_env` (if the variable is set), `client_secret_file`
    /// (if readable) wins, so an override can layer over a config file.
    /// The error names the key that could not be read.
    pub fn resolve_secret(&self) -> Result<Secret, ClientError> {
        if let Some(secret) = &self.client_secret {
            return non_empty("api.client_secret", secret.0.clone());
        }
        let mut problem = None;
        if let Some(var) = &self.client_secret_env {
            match std::env::var(var) {
                Ok(value) => return non_empty("api.client_secret_env", value),
                Err(_) => {
                    problem = Some(config_error(
                        "api.client_secret_env",
                        format!("environment variable {var} is not set"),
                    ))
                }
            }
        }
        if let Some(path) = &self.client_secret_file {
            return match std::fs::read_to_string(path) {
                Ok(value) => non_empty("api.client_secret_file", value.trim().to_string()),
                Err(e) => Err(config_error(
                    "api.client_secret_file",
                    format!("cannot read {}: {e}", path.display()),
                )),
            };
        }
        Err(problem.unwrap_or_else(|| {
            config_error(
                "api.client_secret_env",
                "set one of client_secret, client_secret_env, client_secret_file",
            )
        }))
    }
}

fn non_empty(key: &str, value: String) -> Result<Secret, ClientError> {
    if value.is_empty() {
        return Err(config_error(key, "the secret is empty"));
    }
    Ok(Secret(value))
}

impl RateConfig {
    fn validate(&self) -> Result<(), ClientError> {
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(config_error(key, "must be a number greater than 0"))
            }
        };
        positive("api.rate.requests_per_sec", self.requests_per_sec)?;
        positive("api.rate.min_requests_per_sec", self.min_requests_per_sec)?;
        positive("api.rate.max_requests_per_sec", self.max_requests_per_sec)?;
        positive("api.rate.recovery_secs", self.recovery_secs)?;
        positive("api.rate.quiet_period_secs", self.quiet_period_secs)?;
        positive(
            "api.rate.slow_start_period_secs",
            self.slow_start_period_secs,
        )?;
        if !(self.slow_start_factor.is_finite() && self.slow_start_factor >= 1.0) {
            return Err(config_error(
                "api.rate.slow_start_factor",
                "must be a number of at least 1 (1 = no slow start)",
            ));
        }
        if self.burst == 0 {
            return Err(config_error("api.rate.burst", "must be at least 1"));
        }
        if self.min_requests_per_sec > self.max_requests_per_sec {
            return Err(config_error(
                "api.rate.min_requests_per_sec",
                "must not exceed max_requests_per_sec",
            ));
        }
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            return Err(config_error(
                "api.rate.decrease_factor",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if self.min_pause_ms == 0 {
            return Err(config_error(
                "api.rate.min_pause_ms",
                "must be greater than 0 (a zero pause would allow a hot retry loop)",
            ));
        }
        Ok(())
    }
}

impl RetryConfig {
    fn validate(&self) -> Result<(), ClientError> {
        if self.max_attempts == 0 {
            return Err(config_error("api.retry.max_attempts", "must be at least 1"));
        }
        if self.initial_backoff_ms == 0 {
            return Err(config_error(
                "api.retry.initial_backoff_ms",
                "must be greater than 0",
            ));
        }
        if self.not_ready_poll_secs == 0 {
            return Err(config_error(
                "api.retry.not_ready_poll_secs",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ApiConfig {
        ApiConfig {
            client_id: "demo-client".into(),
            client_secret: Some(Secret::new("demo-secret")),
            ..ApiConfig::default()
        }
    }

    #[test]
    fn defaults_are_the_contract() {
        let cfg = ApiConfig::default();
        assert_eq!(cfg.page_size, 5000, "the contract's maximum");
        assert_eq!(cfg.paths.batch, "batch/{practiceId}/{entity}");
        assert_eq!(cfg.params.continuation_token, "continuationToken");
        assert_eq!(cfg.envelope.total_count, "totalCount");
        assert_eq!(cfg.scope, "https://consumerapi.sync.vet/.default");
        valid().validate().unwrap();
    }

    #[test]
    fn validate_names_the_key() {
        let key_of = |cfg: ApiConfig| match cfg.validate() {
            Err(ClientError::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(
            key_of(ApiConfig {
                page_size: 5001,
                ..valid()
            }),
            "api.page_size"
        );
        assert_eq!(
            key_of(ApiConfig {
                base_url: "ftp://x".into(),
                ..valid()
            }),
            "api.base_url"
        );
        let mut cfg = valid();
        cfg.rate.decrease_factor = 1.0;
        assert_eq!(key_of(cfg), "api.rate.decrease_factor");
        let mut cfg = valid();
        cfg.rate.slow_start_factor = 0.5;
        assert_eq!(key_of(cfg), "api.rate.slow_start_factor");
        let mut cfg = valid();
        cfg.rate.recovery_secs = f64::NAN;
        assert_eq!(key_of(cfg), "api.rate.recovery_secs");
        let cfg = ApiConfig {
            client_secret: None,
            ..valid()
        };
        assert_eq!(key_of(cfg), "api.client_secret_env");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            toml::from_str::<ApiConfig>("client_id = \"a\"\nrate = { requests_per_second = 3 }")
                .unwrap_err();
        assert!(err.to_string().contains("requests_per_second"), "{err}");
    }

    #[test]
    fn secret_never_prints() {
        let cfg = valid();
        let shown = format!("{cfg:?} {}", cfg.client_secret.as_ref().unwrap());
        assert!(!shown.contains("demo-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn secret_from_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let cfg = ApiConfig {
            client_secret: None,
            client_secret_file: Some(path),
            ..valid()
        };
        assert_eq!(cfg.resolve_secret().unwrap().expose(), "s3cret");
        // An unset variable falls through to the file.
        let layered = ApiConfig {
            client_secret_env: Some("SYNCVET_TEST_SURELY_UNSET_VAR".into()),
            ..cfg.clone()
        };
        assert_eq!(layered.resolve_secret().unwrap().expose(), "s3cret");
        let missing = ApiConfig {
            client_secret: None,
            client_secret_env: Some("SYNCVET_TEST_SURELY_UNSET_VAR".into()),
            ..valid()
        };
        assert!(matches!(
            missing.resolve_secret(),
            Err(ClientError::Config { key, .. }) if key == "api.client_secret_env"
        ));
    }
}
