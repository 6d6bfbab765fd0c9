//! `ApiClient`: one GET of one page, with every rule of the contract
//! (governor, token, retries, 202 polling, 401 refresh, status mapping).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::auth::TokenCache;
use crate::body::{
    BodyError, Envelope, EnvelopeError, error_chain, parse_envelope, parse_error_body, read_body,
};
use crate::config::{ApiConfig, Secret};
use crate::error::ClientError;
use crate::metrics::{Metrics, MetricsSnapshot, StreamStats};
use crate::pages::{PageStream, Practice, Target};
use crate::rate::RateGovernor;
use crate::retry::{Backoff, parse_retry_after};

/// The SyncVet Consumer API client. Cheap to clone: every clone shares one
/// token cache, one rate governor and one set of metrics (the API's limit
/// is per consumer, so there must be exactly one governor per process).
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
    deadline: Option<Instant>,
}

struct Inner {
    config: ApiConfig,
    base_url: reqwest::Url,
    http: reqwest::Client,
    tokens: TokenCache,
    governor: RateGovernor,
    metrics: Metrics,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.inner.base_url.as_str())
            .field("client_id", &self.inner.config.client_id)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// How one failed attempt is handled.
enum Failure {
    /// Worth another attempt after backoff (or at least Retry-After).
    Transient {
        what: String,
        retry_after: Option<Duration>,
    },
    /// Final.
    Fatal(ClientError),
}

impl ApiClient {
    /// Builds the client (no I/O; the first request fetches a token).
    /// The config is validated first.
    pub fn new(config: &ApiConfig, secret: Secret) -> Result<ApiClient, ClientError> {
        config.validate()?;
        let mut base = config.base_url.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        let base_url = reqwest::Url::parse(&base).map_err(|e| ClientError::Config {
            key: "api.base_url".into(),
            problem: e.to_string(),
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .user_agent(concat!("syncvet-etl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Setup {
                message: error_chain(&e),
            })?;
        Ok(ApiClient {
            inner: Arc::new(Inner {
                tokens: TokenCache::new(http.clone(), config, secret),
                governor: RateGovernor::new(&config.rate),
                metrics: Metrics::default(),
                config: config.clone(),
                base_url,
                http,
            }),
            deadline: None,
        })
    }

    /// The same client (shared token, governor, metrics) with a run
    /// deadline: no retry, backoff, pause or 202 poll goes past it.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Fetches a token now: checks the credentials before any work.
    pub async fn check_auth(&self) -> Result<(), ClientError> {
        self.inner.tokens.get().await.map(drop)
    }

    /// Every data source this consumer may read (all pages).
    pub async fn practices(&self) -> Result<Vec<Practice>, ClientError> {
        let mut stream = PageStream::new(self.clone(), Target::Practices);
        let mut practices = Vec::new();
        while let Some(event) = stream.next().await {
            match event? {
                crate::PageEvent::Restarted => practices.clear(),
                crate::PageEvent::Page(page) => {
                    let mut batch: Vec<Practice> =
                        serde_json::from_slice(&page.items).map_err(|e| ClientError::Protocol {
                            message: format!("practice list: {e}"),
                        })?;
                    practices.append(&mut batch);
                }
            }
        }
        Ok(practices)
    }

    /// The pages of the nightly batch of one entity of one source.
    pub fn batch(&self, practice_id: &str, entity: &str, date: chrono::NaiveDate) -> PageStream {
        PageStream::new(
            self.clone(),
            Target::Batch {
                practice: practice_id.to_string(),
                entity: entity.to_string(),
                date,
            },
        )
    }

    /// Process-wide counters (all clones).
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot(
            self.inner.governor.current_rate(),
            self.inner.tokens.fetched(),
        )
    }

    pub(crate) fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    pub(crate) fn base_url(&self) -> &reqwest::Url {
        &self.inner.base_url
    }

    fn deadline_error(during: &str) -> ClientError {
        ClientError::DeadlineExceeded {
            during: during.to_string(),
        }
    }

    /// Sleeps unless that would end past the deadline.
    async fn wait(&self, delay: Duration, during: &str) -> Result<(), ClientError> {
        if self.deadline.is_some_and(|d| Instant::now() + delay > d) {
            return Err(Self::deadline_error(during));
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn before_deadline<F: Future>(
        &self,
        during: &str,
        work: F,
    ) -> Result<F::Output, ClientError> {
        match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, work)
                .await
                .map_err(|_| Self::deadline_error(during)),
            None => Ok(work.await),
        }
    }

    /// GETs one page, retrying and polling as the contract says.
    pub(crate) async fn get_page(
        &self,
        url: &reqwest::Url,
        target: &Target,
        stats: &mut StreamStats,
    ) -> Result<Envelope, ClientError> {
        let inner = &*self.inner;
        let retry = &inner.config.retry;
        let mut backoff = Backoff::new(retry);
        let mut attempts = 0u32;
        let mut rate_limited = 0u32;
        let mut refreshed_after_401 = false;
        let mut not_ready_since: Option<Instant> = None;
        loop {
            let (permit, waited) = self
                .before_deadline(
                    "waiting for the rate governor",
                    inner.governor.acquire(target.fairness_key()),
                )
                .await?
                .map_err(|_| ClientError::Setup {
                    message: "rate governor stopped".into(),
                })?;
            stats.throttled += waited;
            inner.metrics.throttled(waited);
            // Every attempt reads the current token: a retry never re-sends a stale one.
            let token = self
                .before_deadline("fetching a token", inner.tokens.get())
                .await??;
            stats.requests += 1;
            let sent = self
                .before_deadline("waiting for a response", self.send(url, &token.value))
                .await??;
            let failure = match sent {
                Err(what) => {
                    inner.metrics.transport_error();
                    Failure::Transient {
                        what,
                        retry_after: None,
                    }
                }
                Ok((status, retry_after, body)) => {
                    stats.bytes += body.len() as u64;
                    inner.metrics.response(status, body.len());
                    match status {
                        200 => match parse_envelope(&body, &inner.config.envelope) {
                            Ok(envelope) => return Ok(envelope),
                            Err(EnvelopeError::Unparsable(e)) => Failure::Transient {
                                what: format!("unparsable or truncated body: {e}"),
                                retry_after: None,
                            },
                            Err(EnvelopeError::Protocol(message)) => {
                                Failure::Fatal(ClientError::Protocol { message })
                            }
                        },
                        202 => {
                            stats.not_ready_polls += 1;
                            let since = *not_ready_since.get_or_insert_with(Instant::now);
                            let delay = retry_after
                                .unwrap_or(Duration::from_secs(retry.not_ready_poll_secs))
                                .max(Duration::from_millis(inner.config.rate.min_pause_ms));
                            let give_up =
                                since + Duration::from_secs(retry.not_ready_max_wait_secs);
                            let now = Instant::now();
                            if now + delay > give_up
                                || self.deadline.is_some_and(|d| now + delay > d)
                            {
                                return Err(target.not_ready());
                            }
                            tracing::debug!(target = %target, delay_ms = delay.as_millis() as u64, "batch not ready (202), polling");
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                        401 if !refreshed_after_401 => {
                            tracing::info!(target = %target, "401: refreshing the token once");
                            refreshed_after_401 = true;
                            inner.tokens.invalidate(&token);
                            continue;
                        }
                        401 => Failure::Fatal(ClientError::Auth {
                            message: format!("401 twice for {target}, even with a fresh token"),
                        }),
                        429 => {
                            stats.rate_limited += 1;
                            rate_limited += 1;
                            let pause = inner.governor.on_rate_limited(permit, retry_after);
                            if rate_limited >= retry.max_rate_limited {
                                return Err(ClientError::RateLimited {
                                    times: rate_limited,
                                    last_pause: pause,
                                });
                            }
                            if self.deadline.is_some_and(|d| Instant::now() + pause > d) {
                                return Err(Self::deadline_error("paused by a 429"));
                            }
                            // The governor holds this request (and every other) until the pause ends.
                            continue;
                        }
                        408 | 500 | 502 | 503 | 504 => Failure::Transient {
                            what: format!("HTTP {status}"),
                            retry_after: if status == 503 { retry_after } else { None },
                        },
                        _ => Failure::Fatal(self.refusal(status, &body, target)),
                    }
                }
            };
            match failure {
                Failure::Fatal(error) => return Err(error),
                Failure::Transient { what, retry_after } => {
                    attempts += 1;
                    if attempts >= retry.max_attempts {
                        return Err(ClientError::RetriesExhausted {
                            attempts,
                            last: what,
                        });
                    }
                    let delay = backoff.next_delay().max(retry_after.unwrap_or_default());
                    tracing::debug!(target = %target, attempts, delay_ms = delay.as_millis() as u64, failure = %what, "retrying");
                    stats.retries += 1;
                    inner.metrics.retry();
                    self.wait(delay, "backing off before a retry").await?;
                }
            }
        }
    }

    /// One HTTP exchange: status, Retry-After and the (bounded) body, or
    /// a transport failure. `BodyTooLarge` is final, hence the nesting.
    async fn send(
        &self,
        url: &reqwest::Url,
        token: &Secret,
    ) -> Result<Result<(u16, Option<Duration>, bytes::Bytes), String>, ClientError> {
        let response = match self
            .inner
            .http
            .get(url.clone())
            .bearer_auth(token.expose())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => return Ok(Err(error_chain(&e))),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        match read_body(response, self.inner.config.max_body_bytes).await {
            Ok(body) => Ok(Ok((status, retry_after, body))),
            Err(BodyError::TooLarge) => Err(ClientError::BodyTooLarge {
                limit: self.inner.config.max_body_bytes,
            }),
            Err(BodyError::Transport(e)) => Ok(Err(format!("HTTP {status}, body cut short: {e}"))),
        }
    }

    /// Maps a final (non-retried) status onto its error variant.
    fn refusal(&self, status: u16, body: &[u8], target: &Target) -> ClientError {
        let envelope = &self.inner.config.envelope;
        let (code, message) = parse_error_body(body, envelope);
        match status {
            400 if code.as_deref() == Some(envelope.continuation_expired_code.as_str()) => {
                ClientError::ContinuationExpired { restarts: 0 }
            }
            400 => ClientError::BadRequest {
                message: format!("{target}: {message}"),
            },
            403 => ClientError::Forbidden {
                practice: target.practice().unwrap_or("(practice list)").to_string(),
                message,
            },
            405 => ClientError::MethodNotAllowed {
                message: format!("{target}: {message}"),
            },
            501 => ClientError::NotImplemented {
                message: format!("{target}: {message}"),
            },
            _ => ClientError::UnexpectedStatus {
                status,
                message: format!("{target}: {message}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ApiClient {
        let config = ApiConfig {
            client_id: "demo-client".into(),
            client_secret: Some(Secret::new("demo-secret")),
            ..ApiConfig::default()
        };
        ApiClient::new(&config, Secret::new("demo-secret")).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_runs_past_the_deadline() {
        let start = Instant::now();
        let client = client().with_deadline(start + Duration::from_secs(10));
        client
            .wait(Duration::from_secs(4), "backing off")
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        // 4 + 7 > 10: fail now instead of sleeping into the deadline.
        let err = client
            .wait(Duration::from_secs(7), "backing off")
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::DeadlineExceeded { .. }),
            "{err:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        // Work that outlives the deadline is cut at the deadline.
        let err = client
            .before_deadline("sending", tokio::time::sleep(Duration::from_secs(60)))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::DeadlineExceeded { .. }));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!("{:?}", client());
        assert!(
            shown.contains("demo-client") && !shown.contains("demo-secret"),
            "{shown}"
        );
    }
}
