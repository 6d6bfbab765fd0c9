//! Backoff between attempts and reading `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::config::RetryConfig;
use crate::error::{ClientError, TransientError};

/// The one retry policy, shared by the page and the token requests: counts
/// the attempts that failed transiently and says how long to back off
/// before the next one (the caller sleeps within the run's deadline).
#[derive(Debug)]
pub(crate) struct Retries {
    backoff: Backoff,
    failed: u32,
    max_attempts: u32,
}

impl Retries {
    pub(crate) fn new(config: &RetryConfig) -> Self {
        Retries {
            backoff: Backoff::new(config),
            failed: 0,
            max_attempts: config.max_attempts,
        }
    }

    /// After a transient failure of a request for `what`: the backoff
    /// before the next attempt (a Retry-After is its floor), or
    /// `RetriesExhausted` when the attempts are used up.
    pub(crate) fn after(
        &mut self,
        what: &dyn std::fmt::Display,
        failure: TransientError,
        retry_after: Option<Duration>,
    ) -> Result<Duration, ClientError> {
        self.failed += 1;
        if self.failed >= self.max_attempts {
            return Err(ClientError::RetriesExhausted {
                what: what.to_string(),
                attempts: self.failed,
                last: failure,
            });
        }
        let delay = self
            .backoff
            .next_delay()
            .max(retry_after.unwrap_or_default());
        tracing::debug!(%what, attempts = self.failed, delay_ms = delay.as_millis() as u64, failure = %failure, "retrying");
        Ok(delay)
    }
}

/// Exponential backoff with "equal jitter": the n-th wait is drawn from
/// `[d/2, d)` with `d = initial × 2ⁿ` capped at the maximum, so waits grow
/// quickly, never collapse to zero, and many workers do not retry in step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    retries: u32,
}

impl Backoff {
    pub(crate) fn new(config: &RetryConfig) -> Self {
        Backoff {
            initial: Duration::from_millis(config.initial_backoff_ms),
            max: Duration::from_secs(config.max_backoff_secs)
                .max(Duration::from_millis(config.initial_backoff_ms)),
            retries: 0,
        }
    }

    /// The wait before the next retry.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.retries.min(20);
        self.retries += 1;
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// Sleeps for `delay` unless that would end past `deadline`: then fails at
/// once, naming what was being waited for, instead of sleeping into it.
pub(crate) async fn sleep_within(
    deadline: Option<tokio::time::Instant>,
    delay: Duration,
    during: &str,
) -> Result<(), ClientError> {
    if deadline.is_some_and(|d| tokio::time::Instant::now() + delay > d) {
        return Err(ClientError::DeadlineExceeded {
            during: during.to_string(),
        });
    }
    tokio::time::sleep(delay).await;
    Ok(())
}

/// Reads a `Retry-After` value: delta-seconds or an HTTP date in any of the
/// three formats HTTP allows (IMF-fixdate, RFC 850, asctime). A date in the
/// past gives zero (the caller turns that into its minimum pause); an
/// unparsable value gives `None`.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        // Not HTTP, but some servers send it; never negative.
        return secs
            .is_finite()
            .then(|| Duration::from_secs_f64(secs.max(0.0)));
    }
    // httpdate reads the three HTTP formats but only with `GMT`; RFC 2822
    // stays as the fallback because some servers send a numeric offset
    // (`+0000`), which was accepted before and costs nothing to keep.
    let at = match httpdate::parse_http_date(value) {
        Ok(at) => at,
        Err(_) => {
            let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            SystemTime::from(date.with_timezone(&chrono::Utc))
        }
    };
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let cfg = RetryConfig {
            initial_backoff_ms: 100,
            max_backoff_secs: 1,
            ..RetryConfig::default()
        };
        let mut backoff = Backoff::new(&cfg);
        let bounds = [
            (50, 100),
            (100, 200),
            (200, 400),
            (400, 800),
            (500, 1000),
            (500, 1000),
        ];
        for (low, high) in bounds {
            let d = backoff.next_delay();
            assert!(
                d >= Duration::from_millis(low) && d < Duration::from_millis(high),
                "{d:?} not in [{low}, {high}) ms"
            );
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-3", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-0.5", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);

        // The three date formats of RFC 9110 section 5.6.7, 12 s ahead.
        for ahead in [
            "Sun, 06 Nov 1994 08:49:49 GMT",  // IMF-fixdate
            "Sunday, 06-Nov-94 08:49:49 GMT", // RFC 850
            "Sun Nov  6 08:49:49 1994",       // asctime
        ] {
            assert_eq!(
                parse_retry_after(ahead, now),
                Some(Duration::from_secs(12)),
                "{ahead}"
            );
        }
        // The same formats in the past: no wait.
        for past in [
            "Sun, 06 Nov 1994 08:00:00 GMT",
            "Sunday, 06-Nov-94 08:00:00 GMT",
            "Sun Nov  6 08:00:00 1994",
        ] {
            assert_eq!(parse_retry_after(past, now), Some(Duration::ZERO), "{past}");
        }
        // A numeric offset is not HTTP but is still read (RFC 2822).
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 09:49:49 +0100", now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 25:00:00 GMT", now),
            None
        );
    }
}
