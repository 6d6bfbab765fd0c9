//! `ApiClient`: one GET of one page, with every rule of the contract
//! (governor, token, retries, 202 polling, 401 refresh, status mapping).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::auth::TokenCache;

use crate::body::{
    BodyError, Envelope, EnvelopeError, answer_headers, describe_non_json, error_chain,
    parse_envelope, parse_error_body, read_body,
};
use crate::config::{ApiConfig, EnvelopeConfig, Secret};
use crate::error::ClientError;
use crate::metrics::{Metrics, MetricsSnapshot, StreamStats};
use crate::page_size::PageSizer;
use crate::pages::{PageStream, Practice, Target};
use crate::rate::RateGovernor;
use crate::retry::{Backoff, sleep_within};

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

/// One HTTP answer, its body read in full (within `api.max_body_bytes`).
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    content_type: Option<String>,
    body: Bytes,
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
    Transient {
        what: String,
        retry_after: Option<Duration>,
    },
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

    pub(crate) fn base_url(&self) -> &reqwest::Url {
        &self.inner.base_url
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
        url: &reqwest::Url,
        target: &Target,
        stats: &mut StreamStats,
    ) -> Result<Fetched, ClientError> {
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
            let answer = self
                .before_deadline("waiting for a response", self.send(url, &token.value))
                .await??;
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
            let (what, retry_after) = match classify(answer, &inner.config.envelope, target) {
                Step::Page(envelope) => return Ok(Fetched::Page(envelope)),
                Step::ContinuationExpired => return Ok(Fetched::ContinuationExpired),
                Step::Fatal(error) => return Err(error),
                Step::NotReady(retry_after) => {
                    // A poll waits without holding a slot of the concurrency cap.
                    drop(permit);
                    stats.not_ready_polls += 1;
                    let since = *not_ready_since.get_or_insert_with(Instant::now);
                    let delay = retry_after
                        .unwrap_or(Duration::from_secs(retry.not_ready_poll_secs))
                        .max(Duration::from_millis(inner.config.rate.min_pause_ms));
                    let give_up = since + Duration::from_secs(retry.not_ready_max_wait_secs);
                    if Instant::now() + delay > give_up {
                        return Err(target.not_ready());
                    }
                    tracing::debug!(target = %target, delay_ms = delay.as_millis() as u64, "batch not ready (202), polling");
                    sleep_within(self.deadline, delay, "polling a batch that is not ready")
                        .await
                        .map_err(|_| target.not_ready())?;
                    continue;
                }
                Step::Unauthorized if !refreshed_after_401 => {
                    tracing::info!(target = %target, "401: refreshing the token once");
                    refreshed_after_401 = true;
                    inner.tokens.invalidate(&token);
                    continue;
                }
                Step::Unauthorized => {
                    return Err(ClientError::Auth {
                        message: format!("401 twice for {target}, even with a fresh token"),
                    });
                }
                Step::RateLimited(retry_after) => {
                    stats.rate_limited += 1;
                    rate_limited += 1;
                    let pause = inner.governor.on_rate_limited(&permit, retry_after);
                    if rate_limited >= retry.max_rate_limited {
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
                Step::Transient { what, retry_after } => (what, retry_after),
            };
            drop(permit);
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
            sleep_within(self.deadline, delay, "backing off before a retry").await?;
        }
    }

    /// One HTTP exchange: the answer with its (bounded) body, or a
    /// transport failure. `BodyTooLarge` is final, hence the nesting.
    async fn send(
        &self,
        url: &reqwest::Url,
        token: &Secret,
    ) -> Result<Result<Answer, String>, ClientError> {
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
        let (retry_after, content_type) = answer_headers(&response);
        match read_body(response, self.inner.config.max_body_bytes).await {
            Ok(body) => Ok(Ok(Answer {
                status,
                retry_after,
                content_type,
                body,
            })),
            Err(BodyError::TooLarge) => Err(ClientError::BodyTooLarge {
                limit: self.inner.config.max_body_bytes,
            }),
            Err(BodyError::Transport(e)) => Ok(Err(format!("HTTP {status}, body cut short: {e}"))),
        }
    }
}

/// Reads one answer (or transport failure) as the contract says.
fn classify(answer: Result<Answer, String>, names: &EnvelopeConfig, target: &Target) -> Step {
    let answer = match answer {
        Ok(answer) => answer,
        Err(what) => {
            return Step::Transient {
                what,
                retry_after: None,
            };
        }
    };
    let Answer {
        status,
        retry_after,
        content_type,
        body,
    } = answer;
    match status {
        200 => {
            if let Some(what) = describe_non_json(content_type.as_deref(), &body) {
                return Step::Fatal(ClientError::Protocol {
                    message: format!("{target}: {what}"),
                });
            }
            match parse_envelope(&body, names) {
                Ok(envelope) => Step::Page(envelope),
                Err(EnvelopeError::Unparsable(e)) => Step::Transient {
                    what: format!("unparsable or truncated body: {e}"),
                    retry_after: None,
                },
                Err(EnvelopeError::Protocol(message)) => {
                    Step::Fatal(ClientError::Protocol { message })
                }
            }
        }
        202 => Step::NotReady(retry_after),
        401 => Step::Unauthorized,
        429 => Step::RateLimited(retry_after),
        408 | 500 | 502 | 503 | 504 => Step::Transient {
            what: format!("HTTP {status}"),
            retry_after: if status == 503 { retry_after } else { None },
        },
        _ => {
            let (code, message) = parse_error_body(&body, names);
            match status {
                400 if code.as_deref() == Some(names.continuation_expired_code.as_str()) => {
                    Step::ContinuationExpired
                }
                400 => Step::Fatal(ClientError::BadRequest {
                    message: format!("{target}: {message}"),
                }),
                403 => Step::Fatal(ClientError::Forbidden {
                    practice: target.practice().unwrap_or("(practice list)").to_string(),
                    message,
                }),
                405 => Step::Fatal(ClientError::MethodNotAllowed {
                    message: format!("{target}: {message}"),
                }),
                501 => Step::Fatal(ClientError::NotImplemented {
                    message: format!("{target}: {message}"),
                }),
                _ => Step::Fatal(ClientError::UnexpectedStatus {
                    status,
                    message: format!("{target}: {message}"),
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
            client_secret: Some(Secret::new("demo-secret")),
            ..ApiConfig::default()
        };
        ApiClient::new(&config, Secret::new("demo-secret")).unwrap()
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
