//! The OAuth2 client-credentials token cache, shared by every worker.
//!
//! One token at a time. It is refreshed before it expires (a quarter of its
//! lifetime or `refresh_margin_secs` ahead, whichever is less, plus jitter)
//! by a single request under an async lock; workers that arrive meanwhile
//! keep using the old token while it is still valid, or wait for the new
//! one. A 401 invalidates exactly the token that was refused, so a burst of
//! 401s from concurrent workers costs one refresh, not one each.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use tokio::time::Instant;

use crate::body::{Answer, Unanswered, describe_non_json, exchange};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ApiConfig, RetryConfig};
use crate::error::{ClientError, TransientError};
use crate::retry::{Retries, sleep_within};

/// Token responses are small; anything bigger is not a token.
const MAX_TOKEN_BODY_BYTES: u64 = 256 * 1024;

/// A token and when to stop using it.
#[derive(Debug)]
pub(crate) struct CachedToken {
    pub(crate) value: SecretString,
    /// Past this, one worker fetches a new token.
    refresh_at: Instant,
    /// Past this, the token must not be sent.
    expires_at: Instant,
}

impl CachedToken {
    /// Schedules the refresh: `min(margin, ttl/4)` ahead of expiry, plus up
    /// to 50% jitter so that many processes do not refresh in step.
    fn new(value: SecretString, requested_at: Instant, ttl: Duration, margin: Duration) -> Self {
        let ahead = margin
            .min(ttl / 4)
            .mul_f64(1.0 + 0.5 * rand::rng().random::<f64>());
        let expires_at = requested_at + ttl;
        CachedToken {
            value,
            refresh_at: expires_at - ahead.min(ttl / 2),
            expires_at,
        }
    }

    fn is_fresh(&self, now: Instant) -> bool {
        now < self.refresh_at
    }

    fn is_usable(&self, now: Instant) -> bool {
        now + Duration::from_millis(500) < self.expires_at
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Azure AD sends a number; some servers send a string.
    expires_in: serde_json::Value,
}

/// The shared token cache.
pub(crate) struct TokenCache {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    scope: String,
    secret: SecretString,
    margin: Duration,
    retry: RetryConfig,
    current: Mutex<Option<Arc<CachedToken>>>,
    refreshing: tokio::sync::Mutex<()>,
    fetched: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    pub(crate) fn new(http: reqwest::Client, config: &ApiConfig, secret: SecretString) -> Self {
        TokenCache {
            http,
            token_url: config.token_url.clone(),
            client_id: config.client_id.clone(),
            scope: config.scope.clone(),
            secret,
            margin: Duration::from_secs(config.token.refresh_margin_secs),
            retry: config.retry.clone(),
            current: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            fetched: Default::default(),
        }
    }

    /// Tokens fetched so far.
    pub(crate) fn fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cached(&self) -> Option<Arc<CachedToken>> {
        self.current.lock().expect("poisoned").clone()
    }

    /// The current token, fetching a new one when it is due; no retry of
    /// the token request waits past `deadline`.
    pub(crate) async fn get(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Arc<CachedToken>, ClientError> {
        let now = Instant::now();
        if let Some(token) = self.cached().filter(|t| t.is_fresh(now)) {
            return Ok(token);
        }
        let _refresh = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Someone is refreshing: a still-valid token beats waiting.
                if let Some(token) = self.cached().filter(|t| t.is_usable(now)) {
                    return Ok(token);
                }
                self.refreshing.lock().await
            }
        };
        // Re-check under the lock: the refresh we waited for may have done it.
        if let Some(token) = self.cached().filter(|t| t.is_fresh(Instant::now())) {
            return Ok(token);
        }
        let token = Arc::new(self.fetch(deadline).await?);
        *self.current.lock().expect("poisoned") = Some(token.clone());
        Ok(token)
    }

    /// Forgets `refused` (answered 401) unless it was already replaced.
    pub(crate) fn invalidate(&self, refused: &Arc<CachedToken>) {
        let mut current = self.current.lock().expect("poisoned");
        if current.as_ref().is_some_and(|t| Arc::ptr_eq(t, refused)) {
            *current = None;
        }
    }

    /// The token request, retried on transient failures by the client's
    /// one retry loop.
    async fn fetch(&self, deadline: Option<Instant>) -> Result<CachedToken, ClientError> {
        let mut retries = Retries::new(&self.retry);
        loop {
            let requested_at = Instant::now();
            let form = [
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.secret.expose_secret()),
                ("scope", self.scope.as_str()),
                ("grant_type", "client_credentials"),
            ];
            let request = self
                .http
                .post(&self.token_url)
                .header(http::header::ACCEPT, "application/json")
                .form(&form);
            let (failure, retry_after) =
                match classify_token(exchange(request, MAX_TOKEN_BODY_BYTES).await) {
                    TokenStep::Token(response) => return self.accept(response, requested_at),
                    TokenStep::Refused(error) => return Err(error),
                    TokenStep::Transient(failure, retry_after) => (failure, retry_after),
                };
            let delay = retries.after(&"the token endpoint", failure, retry_after)?;
            sleep_within(deadline, delay, "backing off before a token request").await?;
        }
    }

    fn accept(
        &self,
        response: TokenResponse,
        requested_at: Instant,
    ) -> Result<CachedToken, ClientError> {
        let ttl_secs = match &response.expires_in {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| ClientError::Auth {
            message: "token response without a positive expires_in".into(),
        })?;
        self.fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(expires_in_secs = ttl_secs, "fetched an access token");
        Ok(CachedToken::new(
            SecretString::from(response.access_token),
            requested_at,
            Duration::from_secs_f64(ttl_secs),
            self.margin,
        ))
    }
}

/// What one token-endpoint answer calls for.
enum TokenStep {
    Token(TokenResponse),
    /// The credentials (or the answer) are refused: fatal for the run.
    Refused(ClientError),
    /// Worth another attempt (a Retry-After is a floor).
    Transient(TransientError, Option<Duration>),
}

/// Reads one token-endpoint answer (or the lack of one): the pure step the
/// retry loop acts on.
fn classify_token(answer: Result<Answer, Unanswered>) -> TokenStep {
    let answer = match answer {
        Ok(answer) => answer,
        Err(Unanswered::Failed(failure)) => return TokenStep::Transient(failure, None),
        Err(Unanswered::TooLarge) => {
            return TokenStep::Refused(ClientError::Auth {
                message: format!(
                    "the token endpoint sent more than {MAX_TOKEN_BODY_BYTES} bytes: not a token"
                ),
            });
        }
    };
    let status = answer.status;
    if (200..300).contains(&status) {
        if let Some(what) = describe_non_json(answer.content_type.as_deref(), &answer.body) {
            return TokenStep::Refused(ClientError::Auth {
                message: format!("token endpoint sent {what}"),
            });
        }
        return match serde_json::from_slice::<TokenResponse>(&answer.body) {
            Ok(token) => TokenStep::Token(token),
            Err(e) => TokenStep::Transient(
                TransientError::Unparsable(format!("token response: {e}")),
                None,
            ),
        };
    }
    if status >= 500 || status == 408 || status == 429 {
        return TokenStep::Transient(TransientError::Status { status }, answer.retry_after);
    }
    TokenStep::Refused(ClientError::Auth {
        message: describe_refusal(status, &answer.body),
    })
}

/// The Azure-AD style `error: error_description`, never the request itself.
fn describe_refusal(status: u16, body: &[u8]) -> String {
    let status = http::StatusCode::from_u16(status)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| status.to_string());
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |k: &str| {
        value
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (error, description) = (text("error"), text("error_description"));
    match (error.is_empty(), description.is_empty()) {
        (true, true) => format!("token endpoint answered {status}"),
        _ => format!("token endpoint answered {status}: {error} {description}")
            .trim_end()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refresh_is_early_and_jittered_but_not_too_early() {
        let ttl = Duration::from_secs(3600);
        for _ in 0..50 {
            let start = Instant::now();
            let token = CachedToken::new(
                SecretString::from("t"),
                start,
                ttl,
                Duration::from_secs(300),
            );
            let ahead = token.expires_at - token.refresh_at;
            assert!(
                ahead >= Duration::from_secs(300) && ahead <= Duration::from_secs(450),
                "{ahead:?}"
            );
        }
        // A short-lived token (the emulator's 3 s) is refreshed in its last quarter-ish.
        let start = Instant::now();
        let token = CachedToken::new(
            SecretString::from("t"),
            start,
            Duration::from_secs(3),
            Duration::from_secs(300),
        );
        assert!(token.is_fresh(start));
        tokio::time::advance(Duration::from_millis(1800)).await;
        assert!(token.is_fresh(Instant::now()));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(
            !token.is_fresh(Instant::now()),
            "due for refresh at 2.3 s of 3 s"
        );
        assert!(token.is_usable(Instant::now()));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(
            !token.is_usable(Instant::now()),
            "too close to expiry to send"
        );
    }

    #[test]
    fn refusals_are_described_without_secrets() {
        let body = br#"{"error":"invalid_client","error_description":"bad secret"}"#;
        assert_eq!(
            describe_refusal(401, body),
            "token endpoint answered 401 Unauthorized: invalid_client bad secret"
        );
    }
}
