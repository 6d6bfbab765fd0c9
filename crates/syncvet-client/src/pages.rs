//! Paging: following continuation tokens, restarting when one expires.

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;

use crate::client::ApiClient;
use crate::error::ClientError;
use crate::metrics::StreamStats;

/// A data source readable by this consumer (`GET practices`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Practice {
    /// The source id (`practiceId`), used in batch paths.
    #[serde(rename = "practiceId")]
    pub id: String,
    /// Display name (`practiceName`).
    #[serde(rename = "practiceName", default)]
    pub name: String,
    /// `PIMS` or `Supplier`: which entity catalog the source serves.
    pub data_source_type: String,
    /// The PIMS product, for PIMS sources.
    #[serde(default)]
    pub pims_name: Option<String>,
    /// IANA time zone of the practice, when known.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Whether nightly batches are served for this source (absent = true).
    #[serde(default = "enabled")]
    pub batch_sync_enabled: bool,
}

fn enabled() -> bool {
    true
}

/// One page of a batch.
#[derive(Debug, Clone)]
pub struct BatchPage {
    /// Page number from 0, counted again from 0 after a restart.
    pub number: u32,
    /// The raw JSON text of the envelope's items array (`[...]`): a
    /// zero-copy slice of the response body.
    pub items: Bytes,
    /// The byte range of each record in `items`, in order (the envelope
    /// parse finds them while it checks the page is whole JSON).
    pub records: Vec<std::ops::Range<usize>>,
    /// Records in the whole batch, when the API says.
    pub total_count: Option<u64>,
    /// Size of the whole response body, in bytes.
    pub body_bytes: usize,
}

/// What a page stream yields.
#[derive(Debug, Clone)]
pub enum PageEvent {
    /// The next page.
    Page(BatchPage),
    /// The continuation token expired: the caller drops what it buffered
    /// from this stream; pages start again at 0.
    Restarted,
}

/// What a stream reads.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Practices,
    Batch {
        practice: String,
        entity: String,
        date: chrono::NaiveDate,
    },
}

impl Target {
    /// Requests are queued fairly per practice.
    pub(crate) fn fairness_key(&self) -> &str {
        match self {
            Target::Practices => "",
            Target::Batch { practice, .. } => practice,
        }
    }

    pub(crate) fn practice(&self) -> Option<&str> {
        match self {
            Target::Practices => None,
            Target::Batch { practice, .. } => Some(practice),
        }
    }

    pub(crate) fn not_ready(&self) -> ClientError {
        match self {
            Target::Practices => ClientError::DeadlineExceeded {
                during: "waiting for the practice list (202)".into(),
            },
            Target::Batch {
                practice,
                entity,
                date,
            } => ClientError::NotReady {
                practice: practice.clone(),
                entity: entity.clone(),
                date: *date,
            },
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Practices => f.write_str("practices"),
            Target::Batch {
                practice,
                entity,
                date,
            } => write!(f, "{practice}/{entity}/{date}"),
        }
    }
}

/// The pages of one batch (or of the practice list), in order. Pull-based:
/// the next request goes out only when the caller asks, so memory holds one
/// page per stream. Ends after the last page or after the first error.
pub struct PageStream {
    client: ApiClient,
    target: Target,
    next_number: u32,
    continuation: Option<String>,
    finished: bool,
    stats: StreamStats,
}

impl PageStream {
    pub(crate) fn new(client: ApiClient, target: Target) -> Self {
        PageStream {
            client,
            target,
            next_number: 0,
            continuation: None,
            finished: false,
            stats: StreamStats::default(),
        }
    }

    /// The next page, a restart notice, an error (then `None`), or `None`
    /// after the last page.
    pub async fn next(&mut self) -> Option<Result<PageEvent, ClientError>> {
        if self.finished {
            return None;
        }
        let url = self.url();
        match self
            .client
            .get_page(&url, &self.target, &mut self.stats)
            .await
        {
            Ok(envelope) => {
                let page = BatchPage {
                    number: self.next_number,
                    items: envelope.items,
                    records: envelope.records,
                    total_count: envelope.total_count,
                    body_bytes: envelope.body_bytes,
                };
                self.next_number += 1;
                self.continuation = envelope.continuation_token;
                self.finished = self.continuation.is_none();
                Some(Ok(PageEvent::Page(page)))
            }
            Err(ClientError::ContinuationExpired { .. })
                if self.stats.restarts < self.client.config().max_restarts =>
            {
                self.stats.restarts += 1;
                tracing::info!(target = %self.target, restarts = self.stats.restarts, "continuation token expired: restarting from the first page");
                self.next_number = 0;
                self.continuation = None;
                Some(Ok(PageEvent::Restarted))
            }
            Err(ClientError::ContinuationExpired { .. }) => {
                self.finished = true;
                Some(Err(ClientError::ContinuationExpired {
                    restarts: self.stats.restarts,
                }))
            }
            Err(error) => {
                self.finished = true;
                Some(Err(error))
            }
        }
    }

    /// What this stream has cost so far.
    pub fn stats(&self) -> StreamStats {
        self.stats.clone()
    }

    fn url(&self) -> reqwest::Url {
        let config = self.client.config();
        let path = match &self.target {
            Target::Practices => config.paths.practices.clone(),
            Target::Batch {
                practice, entity, ..
            } => config
                .paths
                .batch
                .replace("{practiceId}", &encode_segment(practice))
                .replace("{entity}", &encode_segment(entity)),
        };
        let mut url = self
            .client
            .base_url()
            .join(path.trim_start_matches('/'))
            .expect("a relative path joins onto a valid base URL");
        {
            let mut query = url.query_pairs_mut();
            if let Target::Batch { date, .. } = &self.target {
                query.append_pair(&config.params.date, &date.to_string());
            }
            query.append_pair(&config.params.page_size, &config.page_size.to_string());
            if let Some(token) = &self.continuation {
                query.append_pair(&config.params.continuation_token, token);
            }
        }
        url
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so an id
/// can never add a path segment or a query.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_their_segment() {
        assert_eq!(encode_segment("p-0001"), "p-0001");
        assert_eq!(encode_segment("a/b?c=d"), "a%2Fb%3Fc%3Dd");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
