//! `[api]`: everything the client needs to know about the upstream API.
//!
//! Every path, query-parameter name and envelope field name of the contract
//! is a key here (defaults = `api-contract.md`), so a deployment against the
//! real API adapts without a code change. `validate` is pure; reading the
//! secret (environment, file) is the separate `resolve_secret`.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::ClientError;

/// The `[api]` section: how to reach and authenticate against the SyncVet
/// Consumer API, and how hard to push it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Base URL of the API; endpoint paths are joined onto it (a missing
    /// trailing `/` is added).
    pub base_url: String,
    /// OAuth2 token endpoint (client-credentials grant).
    pub token_url: String,
    /// OAuth2 scope requested with every token.
    pub scope: String,
    /// OAuth2 client id.
    pub client_id: String,
    /// The client secret itself. Prefer `client_secret_env` or
    /// `client_secret_file` so that the secret stays out of config files.
    /// When several are set, the first found of value, environment
    /// variable, file wins.
    pub client_secret: Option<SecretString>,
    /// Name of the environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// Path of a file holding the client secret (surrounding whitespace is
    /// trimmed), e.g. a mounted Kubernetes secret.
    pub client_secret_file: Option<PathBuf>,
    /// Records per batch page requested (`pageSize`); the contract allows
    /// 1..=5000. A server that refuses the size with a 400 before any page
    /// came back gets smaller ones (2000, 1000, 500, 200, 100) until one works.
    pub page_size: u32,
    /// Time limit of one HTTP request, from sending to the last body byte, in seconds.
    pub request_timeout_secs: u64,
    /// Time limit to establish a TCP/TLS connection, in seconds.
    pub connect_timeout_secs: u64,
    /// Largest response body accepted, in bytes. A bigger `Content-Length`
    /// is refused before reading; a body that grows past it is cut off
    /// (`BodyTooLarge`), so memory stays bounded whatever the server sends.
    pub max_body_bytes: u64,
    /// How many times one page stream may start over after its continuation
    /// token expired before giving up.
    pub max_restarts: u32,
    /// Most pages one batch may take. A guard against a server that hands
    /// out new continuation tokens forever; the chain checks (a token or a
    /// page served twice, more records than `totalCount`) catch the rest.
    pub max_pages_per_batch: u64,
    /// Endpoint paths, relative to `base_url`.
    pub paths: PathsConfig,
    /// Query-parameter names.
    pub params: ParamsConfig,
    /// JSON field names of the page envelope and of error bodies.
    pub envelope: EnvelopeConfig,
    /// Token cache settings.
    pub token: TokenConfig,
    /// `[api.rate]`: the rate governor.
    pub rate: RateConfig,
    /// `[api.retry]`: retries, backoff and polling of batches not ready yet.
    pub retry: RetryConfig,
}

/// Endpoint paths relative to `base_url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    /// The list of data sources readable by this consumer.
    pub practices: String,
    /// One page of a nightly batch; `{practiceId}` and `{entity}` are
    /// replaced (percent-encoded).
    pub batch: String,
}

/// Query-parameter names.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParamsConfig {
    /// The batch date (`YYYY-MM-DD`).
    pub date: String,
    /// The page size.
    pub page_size: String,
    /// The continuation token of the next page.
    pub continuation_token: String,
}

/// JSON field names of the page envelope and of error bodies.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvelopeConfig {
    /// The array of records of a page.
    pub items: String,
    /// The token of the next page (`null` or absent on the last page).
    pub continuation_token: String,
    /// The number of records in the whole batch (optional).
    pub total_count: String,
    /// The error code in an error body.
    pub error: String,
    /// The human-readable text in an error body.
    pub message: String,
    /// The error code meaning "continuation token expired, start over".
    pub continuation_expired_code: String,
}

/// Token cache settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Refresh a token this many seconds before it expires (at most a
    /// quarter of its lifetime, plus up to 50% random jitter so that many
    /// processes do not refresh in step).
    pub refresh_margin_secs: u64,
}

/// `[api.rate]`: the process-wide rate governor. The API's limit is not
/// published: with `adaptive` the governor starts at `requests_per_sec`,
/// multiplies it by `slow_start_factor` every `slow_start_period_secs`
/// until the first 429 (slow start), then cuts it multiplicatively on every
/// 429 and raises it by a few percent after quiet periods, so it finds the
/// limit in seconds and holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    /// Starting request rate, requests per second (all workers together).
    pub requests_per_sec: f64,
    /// Requests that may go at once after an idle period, at most (the
    /// adaptive burst halves on a 429 and grows back by one per quiet period).
    pub burst: u32,
    /// Adapt the rate, the burst and the concurrency to 429 answers. When
    /// false they are fixed (429s still pause every worker for Retry-After).
    pub adaptive: bool,
    /// The adaptive rate never goes below this, requests per second.
    pub min_requests_per_sec: f64,
    /// The adaptive rate never goes above this, requests per second.
    pub max_requests_per_sec: f64,
    /// Factor applied to the rate on a 429 (once per rate step: answers to
    /// requests sent at an older rate do not cut it again). In (0, 1).
    pub decrease_factor: f64,
    /// Seconds the rate takes to climb back to the rate that drew the last
    /// 429 (on a cubic curve: fast at first, flat near it), and before the
    /// concurrency is raised again to a level that drew one. Longer when
    /// the limit's own cycle is (a window's length), up to 4×. After it the
    /// rate probes above, ever faster, in case the limit went up.
    pub recovery_secs: f64,
    /// Seconds without a 429, while the governor was the bottleneck,
    /// between two increases of the rate, the burst (+1) or the
    /// concurrency (+1).
    pub quiet_period_secs: f64,
    /// Most requests in flight at once, all workers together (0 = no cap
    /// but the workers'). When adaptive, a 429 that comes back while `n`
    /// other requests are in flight lowers it to `n`.
    pub max_in_flight: u32,
    /// Slow start: until the first 429 the rate is multiplied by this
    /// after each `slow_start_period_secs` spent at the limit, so that a
    /// start far below the API's limit costs seconds, not minutes. The
    /// first 429 ends slow start for good. 1 = no slow start.
    pub slow_start_factor: f64,
    /// Seconds without a 429, while the governor was the bottleneck, before
    /// each slow-start multiplication.
    pub slow_start_period_secs: f64,
    /// Pause after a 429 whose Retry-After is 0, a date in the past or
    /// unparsable, in milliseconds: never a hot loop.
    pub min_pause_ms: u64,
    /// Pause after a 429 without Retry-After, in milliseconds.
    pub default_pause_ms: u64,
    /// Added to every Retry-After so that the next request lands after it
    /// even with coarse server clocks, in milliseconds.
    pub pause_margin_ms: u64,
}

/// `[api.retry]`: retries of transient failures and polling of batches not
/// ready yet. All waits are bounded by the run deadline, if any.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request for transient failures (408, 5xx, connection
    /// errors, timeouts, truncated bodies), the first one included.
    pub max_attempts: u32,
    /// Backoff before the first retry, in milliseconds; doubles each retry.
    pub initial_backoff_ms: u64,
    /// Longest backoff between two attempts, in seconds (a longer
    /// Retry-After on a 503 is still honoured).
    pub max_backoff_secs: u64,
    /// 429 answers tolerated for one request before giving up (each one
    /// has already paused every worker for its Retry-After).
    pub max_rate_limited: u32,
    /// Interval between polls of a batch answering 202 (not ready) without
    /// Retry-After, in seconds.
    pub not_ready_poll_secs: u64,
    /// Longest time to keep polling a batch that is not ready, in seconds,
    /// when no run deadline comes first.
    pub not_ready_max_wait_secs: u64,
}

// The defaults of every key. Each section is `#[serde(default)]`, so a key
// left out of the config file takes its value from here and `Default` equals
// "nothing configured".
impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            base_url: "https://consumerapi.sync.vet/api/".into(),
            token_url: "https://login.microsoftonline.com/37d2016b-9350-4cc7-bb6e-0d2507211ecd/oauth2/v2.0/token"
                .into(),
            scope: "https://consumerapi.sync.vet/.default".into(),
            client_id: String::new(),
            client_secret: None,
            client_secret_env: None,
            client_secret_file: None,
            // The contract's maximum: under a request-rate limit a night takes as
            // many seconds as requests, so the fewest pages finish it fastest.
            page_size: 5000,
            request_timeout_secs: 60,
            connect_timeout_secs: 10,
            max_body_bytes: 64 * 1024 * 1024,
            max_restarts: 3,
            max_pages_per_batch: 100_000,
            paths: PathsConfig::default(),
            params: ParamsConfig::default(),
            envelope: EnvelopeConfig::default(),
            token: TokenConfig::default(),
            rate: RateConfig::default(),
            retry: RetryConfig::default(),
        }
    }
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            practices: "practices".into(),
            batch: "batch/{practiceId}/{entity}".into(),
        }
    }
}

impl Default for ParamsConfig {
    fn default() -> Self {
        ParamsConfig {
            date: "date".into(),
            page_size: "pageSize".into(),
            continuation_token: "continuationToken".into(),
        }
    }
}

impl Default for EnvelopeConfig {
    fn default() -> Self {
        EnvelopeConfig {
            items: "items".into(),
            continuation_token: "continuationToken".into(),
            total_count: "totalCount".into(),
            error: "error".into(),
            message: "message".into(),
            continuation_expired_code: "ContinuationTokenExpired".into(),
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            refresh_margin_secs: 300,
        }
    }
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            requests_per_sec: 10.0,
            burst: 10,
            adaptive: true,
            min_requests_per_sec: 0.5,
            max_requests_per_sec: 500.0,
            decrease_factor: 0.85,
            recovery_secs: 30.0,
            quiet_period_secs: 1.0,
            max_in_flight: 0,
            slow_start_factor: 1.5,
            slow_start_period_secs: 1.0,
            min_pause_ms: 1000,
            default_pause_ms: 1000,
            pause_margin_ms: 50,
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 6,
            initial_backoff_ms: 200,
            max_backoff_secs: 30,
            max_rate_limited: 100,
            not_ready_poll_secs: 30,
            not_ready_max_wait_secs: 4 * 3600,
        }
    }
}

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
    pub fn resolve_secret(&self) -> Result<SecretString, ClientError> {
        if let Some(secret) = &self.client_secret {
            return non_empty("api.client_secret", secret.expose_secret().to_owned());
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

fn non_empty(key: &str, value: String) -> Result<SecretString, ClientError> {
    if value.is_empty() {
        return Err(config_error(key, "the secret is empty"));
    }
    Ok(SecretString::from(value))
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
            client_secret: Some(SecretString::from("demo-secret")),
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
    fn an_empty_section_is_the_default() {
        let parsed: ApiConfig = toml::from_str("").unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", ApiConfig::default()));
        let parsed: ApiConfig = toml::from_str("rate = { burst = 3 }").unwrap();
        assert_eq!(parsed.rate.burst, 3);
        assert_eq!(
            parsed.rate.decrease_factor, 0.85,
            "the rest keep their defaults"
        );
        assert_eq!(parsed.retry.max_attempts, 6);
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
        let shown = format!("{cfg:?} {:?}", cfg.client_secret.as_ref().unwrap());
        assert!(!shown.contains("demo-secret"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
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
        assert_eq!(cfg.resolve_secret().unwrap().expose_secret(), "s3cret");
        // An unset variable falls through to the file.
        let layered = ApiConfig {
            client_secret_env: Some("SYNCVET_TEST_SURELY_UNSET_VAR".into()),
            ..cfg.clone()
        };
        assert_eq!(layered.resolve_secret().unwrap().expose_secret(), "s3cret");
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
