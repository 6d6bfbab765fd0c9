//! `ApiClient`: one GET of one page, with every rule of the contract
//! (governor, token, retries, 202 polling, 401 refresh, status mapping).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::TokenCache;

use crate::body::{
    Answer, Envelope, EnvelopeError, Unanswered, describe_non_json, exchange, parse_envelope,
    parse_error_body,
};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ApiConfig, EnvelopeConfig};
use crate::error::{ClientError, TransientError};
use crate::metrics::{Metrics, MetricsSnapshot, StreamStats};
use crate::page_size::PageSizer;
use crate::rate::RateGovernor;
use crate::request::{PageRequest, Resource};
use crate::retry::{Retries, sleep_within};

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
    page_sizer: PageSizer,
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

/// What one attempt calls for: the pure reading of an answer (or of a
/// transport failure) that `get_page`'s loop acts on.
enum Step {
    /// A page.
    Page(Envelope),
    /// 400 ContinuationTokenExpired: the chain must start over.
    ContinuationExpired,
    /// 202: the batch is not ready; poll again (Retry-After, if any).
    NotReady(Option<Duration>),
    /// 401: the token was refused.
    Unauthorized,
    /// 429: every worker pauses (Retry-After, if any).
    RateLimited(Option<Duration>),
    /// Worth another attempt after backoff (a Retry-After is a floor).
    Transient(TransientError, Option<Duration>),
    /// Final.
    Fatal(ClientError),
}

/// What `get_page` got.
pub(crate) enum Fetched {
    Page(Envelope),
    /// The continuation token expired: read the batch again from page 0.
    ContinuationExpired,
}

impl ApiClient {
    /// Builds the client (no I/O; the first request fetches a token).
    /// The config is validated first.
    pub fn new(config: &ApiConfig, secret: SecretString) -> Result<ApiClient, ClientError> {
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
            .map_err(ClientError::Setup)?;
        Ok(ApiClient {
            inner: Arc::new(Inner {
                tokens: TokenCache::new(http.clone(), config, secret),
                governor: RateGovernor::new(&config.rate),
                page_sizer: PageSizer::new(config.page_size),
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
        self.inner.tokens.get(self.deadline).await.map(drop)
    }

    /// Process-wide counters (all clones).
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner
            .metrics
            .snapshot(self.inner.governor.settings(), self.inner.tokens.fetched())
    }

    pub(crate) fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    pub(crate) fn page_sizer(&self) -> &PageSizer {
        &self.inner.page_sizer
    }

    async fn before_deadline<F: Future>(
        &self,
        during: &str,
        work: F,
    ) -> Result<F::Output, ClientError> {
        match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, work).await.map_err(|_| {
                ClientError::DeadlineExceeded {
                    during: during.to_string(),
                }
            }),
            None => Ok(work.await),
        }
    }

    /// GETs one page, retrying and polling as the contract says.
    pub(crate) async fn get_page(
        &self,
        request: PageRequest<'_>,
        stats: &mut StreamStats,
    ) -> Result<Fetched, ClientError> {
        let inner = &*self.inner;
        let resource = request.resource;
        let url = request.url(&inner.base_url, &inner.config);
        let mut retries = Retries::new(&inner.config.retry);
        let mut rate_limited = 0u32;
        let mut refreshed_after_401 = false;
        let mut not_ready_since: Option<Instant> = None;
        loop {
            let (permit, waited) = self
                .before_deadline(
                    "waiting for the rate governor",
                    inner.governor.acquire(resource.fairness_key()),
                )
                .await?
                .map_err(|_| ClientError::Closed)?;
            stats.throttled += waited;
            inner.metrics.throttled(waited);
            // Every attempt reads the current token: a retry never re-sends a stale one.
            let token = self
                .before_deadline("fetching a token", inner.tokens.get(self.deadline))
                .await??;
            if inner
                .governor
                .paused_until()
                .is_some_and(|until| until > Instant::now())
            {
                // A 429 came in while the token was fetched: going now
                // would be an early retry.
                continue;
            }
            stats.requests += 1;
            let get = inner
                .http
                .get(url.clone())
                .bearer_auth(token.value.expose_secret())
                .header(http::header::ACCEPT, "application/json");
            let answer = self
                .before_deadline(
                    "waiting for a response",
                    exchange(get, inner.config.max_body_bytes),
                )
                .await?;
            match &answer {
                Ok(answer) => {
                    stats.bytes += answer.body.len() as u64;
                    inner.metrics.response(answer.status, answer.body.len());
                    if answer.status != 429 {
                        // Answered: that many requests in flight are let through.
                        inner.governor.on_success(&permit);
                    }
                }
                Err(_) => inner.metrics.transport_error(),
            }
            let (failure, retry_after) = match classify(answer, &inner.config, resource) {
                Step::Page(envelope) => return Ok(Fetched::Page(envelope)),
                Step::ContinuationExpired => return Ok(Fetched::ContinuationExpired),
                Step::Fatal(error) => return Err(error),
                Step::NotReady(retry_after) => {
                    // A poll waits without holding a slot of the concurrency cap.
                    drop(permit);
                    stats.not_ready_polls += 1;
                    let since = *not_ready_since.get_or_insert_with(Instant::now);
                    self.poll_not_ready(resource, since, retry_after).await?;
                    continue;
                }
                Step::Unauthorized if !refreshed_after_401 => {
                    tracing::info!(resource = %resource, "401: refreshing the token once");
                    refreshed_after_401 = true;
                    inner.tokens.invalidate(&token);
                    continue;
                }
                Step::Unauthorized => {
                    return Err(ClientError::Auth {
                        message: format!("401 twice for {resource}, even with a fresh token"),
                    });
                }
                Step::RateLimited(retry_after) => {
                    stats.rate_limited += 1;
                    rate_limited += 1;
                    let pause = inner.governor.on_rate_limited(&permit, retry_after);
                    if rate_limited >= inner.config.retry.max_rate_limited {
                        return Err(ClientError::RateLimited {
                            times: rate_limited,
                            last_pause: pause,
                        });
                    }
                    if self.deadline.is_some_and(|d| Instant::now() + pause > d) {
                        return Err(ClientError::DeadlineExceeded {
                            during: "paused by a 429".into(),
                        });
                    }
                    // The governor holds this request (and every other) until the pause ends.
                    continue;
                }
                Step::Transient(failure, retry_after) => (failure, retry_after),
            };
            drop(permit);
            let delay = retries.after(resource, failure, retry_after)?;
            stats.retries += 1;
            inner.metrics.retry();
            sleep_within(self.deadline, delay, "backing off before a retry").await?;
        }
    }

    /// Waits before polling a batch that answered 202 (its Retry-After, or
    /// `api.retry.not_ready_poll_secs`), or gives up when the wait would end
    /// past `api.retry.not_ready_max_wait_secs` or the run's deadline.
    async fn poll_not_ready(
        &self,
        resource: &Resource,
        since: Instant,
        retry_after: Option<Duration>,
    ) -> Result<(), ClientError> {
        let config = &self.inner.config;
        let delay = retry_after
            .unwrap_or(Duration::from_secs(config.retry.not_ready_poll_secs))
            .max(Duration::from_millis(config.rate.min_pause_ms));
        let give_up = since + Duration::from_secs(config.retry.not_ready_max_wait_secs);
        if Instant::now() + delay > give_up {
            return Err(resource.not_ready());
        }
        tracing::debug!(resource = %resource, delay_ms = delay.as_millis() as u64, "batch not ready (202), polling");
        sleep_within(self.deadline, delay, "polling a batch that is not ready")
            .await
            .map_err(|_| resource.not_ready())
    }
}

/// Reads one answer (or the lack of one) as the contract says: the pure
/// step `get_page`'s loop acts on.
fn classify(answer: Result<Answer, Unanswered>, config: &ApiConfig, resource: &Resource) -> Step {
    let Answer {
        status,
        retry_after,
        content_type,
        body,
    } = match answer {
        Ok(answer) => answer,
        Err(Unanswered::Failed(failure)) => return Step::Transient(failure, None),
        Err(Unanswered::TooLarge) => {
            return Step::Fatal(ClientError::BodyTooLarge {
                limit: config.max_body_bytes,
            });
        }
    };
    let names: &EnvelopeConfig = &config.envelope;
    match status {
        200 => {
            if let Some(what) = describe_non_json(content_type.as_deref(), &body) {
                return Step::Fatal(ClientError::Protocol {
                    message: format!("{resource}: {what}"),
                });
            }
            match parse_envelope(&body, names) {
                Ok(envelope) => Step::Page(envelope),
                Err(EnvelopeError::Unparsable(e)) => {
                    Step::Transient(TransientError::Unparsable(e), None)
                }
                Err(EnvelopeError::Protocol(message)) => {
                    Step::Fatal(ClientError::Protocol { message })
                }
            }
        }
        202 => Step::NotReady(retry_after),
        401 => Step::Unauthorized,
        429 => Step::RateLimited(retry_after),
        408 | 500 | 502 | 503 | 504 => Step::Transient(
            TransientError::Status { status },
            if status == 503 { retry_after } else { None },
        ),
        _ => {
            let (code, message) = parse_error_body(&body, names);
            match status {
                400 if code.as_deref() == Some(names.continuation_expired_code.as_str()) => {
                    Step::ContinuationExpired
                }
                400 => Step::Fatal(ClientError::BadRequest {
                    message: format!("{resource}: {message}"),
                }),
                403 => Step::Fatal(ClientError::Forbidden {
                    practice: resource.practice().unwrap_or("(practice list)").to_string(),
                    message,
                }),
                405 => Step::Fatal(ClientError::MethodNotAllowed {
                    message: format!("{resource}: {message}"),
                }),
                501 => Step::Fatal(ClientError::NotImplemented {
                    message: format!("{resource}: {message}"),
                }),
                _ => Step::Fatal(ClientError::UnexpectedStatus {
                    status,
                    message: format!("{resource}: {message}"),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ApiClient {
        let config = ApiConfig {
            client_id: "demo-client".into(),
            client_secret: Some(SecretString::from("demo-secret")),
            ..ApiConfig::default()
        };
        ApiClient::new(&config, SecretString::from("demo-secret")).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_runs_past_the_deadline() {
        let start = Instant::now();
        let client = client().with_deadline(start + Duration::from_secs(10));
        sleep_within(client.deadline, Duration::from_secs(4), "backing off")
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        // 4 + 7 > 10: fail now instead of sleeping into the deadline.
        let err = sleep_within(client.deadline, Duration::from_secs(7), "backing off")
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
