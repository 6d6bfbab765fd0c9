//! The one error type of the crate.

use std::time::Duration;

/// What went wrong talking to the API. Variants map onto what the caller
/// must do: `is_fatal_for_run` stops the run, `Forbidden` fails one source,
/// the rest fail one (source, entity, date) job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A config value is wrong; `key` is the dotted key to fix.
    #[error("config key {key}: {problem}")]
    Config {
        /// The dotted config key, e.g. `api.page_size`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The token endpoint refused the credentials, or the API answered 401
    /// twice in a row despite a fresh token. Fatal for the run.
    #[error("authentication failed: {message}")]
    Auth {
        /// The server's explanation (never contains the secret or a token).
        message: String,
    },
    /// 403: this consumer may not read this source (or its batch sync is off).
    #[error("practice {practice} is forbidden: {message}")]
    Forbidden {
        /// The source id.
        practice: String,
        /// The server's message.
        message: String,
    },
    /// 400: a bad parameter, an unknown entity, an entity not served by the source.
    #[error("bad request: {message}")]
    BadRequest {
        /// The server's error code and message.
        message: String,
    },
    /// 400 ContinuationTokenExpired more often than `api.max_restarts` allows.
    #[error("continuation token expired {restarts} times, giving up")]
    ContinuationExpired {
        /// Restarts already made.
        restarts: u32,
    },
    /// A continuation chain that cannot end: a token served twice, a page
    /// repeating the previous one (the server ignored the continuation
    /// parameter), or more pages or records than the batch can hold.
    /// Nothing of the batch may be committed.
    #[error("broken page chain for {chain} at continuation token {token}: {problem}")]
    BrokenPageChain {
        /// The batch (`source/entity/date`) or `practices`.
        chain: String,
        /// The continuation token sent for the offending page (shortened).
        token: String,
        /// What is wrong with the chain.
        problem: String,
    },
    /// 405: the client used a method the API does not allow. A bug; fatal.
    #[error("method not allowed: {message}")]
    MethodNotAllowed {
        /// The server's message.
        message: String,
    },
    /// 501: the API does not implement this (e.g. the entity for this source).
    #[error("not implemented: {message}")]
    NotImplemented {
        /// The server's message.
        message: String,
    },
    /// Any other status the contract does not describe (e.g. 404), not retried.
    #[error("unexpected HTTP status {status}: {message}")]
    UnexpectedStatus {
        /// The HTTP status code.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The batch still answered 202 (not ready) when the deadline or
    /// `api.retry.not_ready_max_wait_secs` came.
    #[error("batch {practice}/{entity}/{date} not ready before the deadline")]
    NotReady {
        /// The source id.
        practice: String,
        /// The entity.
        entity: String,
        /// The batch date.
        date: chrono::NaiveDate,
    },
    /// The run deadline came while waiting (backoff, Retry-After) or sending.
    #[error("run deadline exceeded while {during}")]
    DeadlineExceeded {
        /// What the client was doing.
        during: String,
    },
    /// A transient failure kept happening for `api.retry.max_attempts` attempts.
    #[error("gave up on {what} after {attempts} attempts")]
    RetriesExhausted {
        /// The request (`source/entity/date`, `practices` or `the token endpoint`).
        what: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: TransientError,
    },
    /// One request was answered 429 `api.retry.max_rate_limited` times.
    #[error("rate limited {times} times for one request (last Retry-After {last_pause:?})")]
    RateLimited {
        /// 429 answers received for this request.
        times: u32,
        /// The last pause honoured.
        last_pause: Duration,
    },
    /// The response body is bigger than `api.max_body_bytes`.
    #[error("response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A well-formed 200 answer that does not follow the contract (e.g.
    /// `items` is not an array). Not retried: the same bytes would come back.
    #[error("protocol violation: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
    /// The HTTP client could not be built (TLS backend, bad header value).
    #[error("HTTP client setup failed")]
    Setup(#[source] reqwest::Error),
    /// The client's rate governor has stopped: the runtime is shutting down.
    #[error("the client is shutting down")]
    Closed,
}

impl ClientError {
    /// True when no other job of the run can succeed either: bad config,
    /// credentials refused, 405 (a client bug).
    pub fn is_fatal_for_run(&self) -> bool {
        matches!(
            self,
            ClientError::Config { .. }
                | ClientError::Auth { .. }
                | ClientError::MethodNotAllowed { .. }
                | ClientError::Setup(_)
                | ClientError::Closed
        )
    }
}

/// A failure worth another attempt (after backoff, within the deadline).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransientError {
    /// No answer: connection refused or reset, timeout, DNS.
    #[error("no answer")]
    NoAnswer(#[source] reqwest::Error),
    /// An answer whose body was cut short.
    #[error("HTTP {status}, body cut short")]
    BodyCutShort {
        /// The answer's status.
        status: u16,
        /// Why the body ended.
        #[source]
        source: reqwest::Error,
    },
    /// A status that says "try again" (408, 429 at the token endpoint, 5xx).
    #[error("HTTP {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// A 200 answer that is not (whole) JSON: cut short, or garbled.
    #[error("unparsable or truncated body: {0}")]
    Unparsable(String),
}
