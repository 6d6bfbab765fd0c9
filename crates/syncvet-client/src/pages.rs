//! Paging: following continuation tokens, restarting when one expires.

use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;

use crate::body::Envelope;
use crate::client::{ApiClient, Fetched};
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
    chain: ChainGuard,
    /// Set by `with_page_size`: this stream's own size, never stepped down.
    page_size: Option<u32>,
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
            chain: ChainGuard::default(),
            page_size: None,
            finished: false,
            stats: StreamStats::default(),
        }
    }

    /// The same stream with pages of `records` (1..=5000), e.g. small
    /// pages to see the continuation work on a small batch.
    pub fn with_page_size(mut self, records: u32) -> Self {
        self.page_size = Some(records.clamp(1, 5000));
        self
    }

    /// The next page, a restart notice, an error (then `None`), or `None`
    /// after the last page.
    pub async fn next(&mut self) -> Option<Result<PageEvent, ClientError>> {
        if self.finished {
            return None;
        }
        loop {
            let page_size = self
                .page_size
                .unwrap_or_else(|| self.client.page_sizer().current());
            let url = self.url(page_size);
            let fetched = self
                .client
                .get_page(&url, &self.target, &mut self.stats)
                .await;
            return Some(match fetched {
                Ok(Fetched::Page(envelope)) => {
                    if self.page_size.is_none() {
                        self.client.page_sizer().accepted(page_size);
                    }
                    self.page(envelope)
                }
                Ok(Fetched::ContinuationExpired) => self.restart(),
                Err(ClientError::BadRequest { message }) => {
                    let smaller = match (&self.continuation, self.page_size) {
                        (None, None) => self.client.page_sizer().refused(page_size, &message),
                        _ => None,
                    };
                    if smaller.is_some() {
                        continue;
                    }
                    self.finished = true;
                    Err(ClientError::BadRequest { message })
                }
                Err(error) => {
                    self.finished = true;
                    Err(error)
                }
            });
        }
    }

    fn page(&mut self, envelope: Envelope) -> Result<PageEvent, ClientError> {
        if let Err(problem) = self.chain.check(&envelope, self.client.config()) {
            self.finished = true;
            return Err(ClientError::BrokenPageChain {
                chain: self.target.to_string(),
                token: shorten(self.continuation.as_deref().unwrap_or("(first page)")),
                problem,
            });
        }
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
        Ok(PageEvent::Page(page))
    }

    /// The continuation token expired: start over, or give up after
    /// `api.max_restarts`.
    fn restart(&mut self) -> Result<PageEvent, ClientError> {
        if self.stats.restarts >= self.client.config().max_restarts {
            self.finished = true;
            return Err(ClientError::ContinuationExpired {
                restarts: self.stats.restarts,
            });
        }
        self.stats.restarts += 1;
        tracing::info!(target = %self.target, restarts = self.stats.restarts, "continuation token expired: restarting from the first page");
        self.next_number = 0;
        self.continuation = None;
        self.chain = ChainGuard::default();
        Ok(PageEvent::Restarted)
    }

    /// What this stream has cost so far.
    pub fn stats(&self) -> StreamStats {
        self.stats.clone()
    }

    fn url(&self, page_size: u32) -> reqwest::Url {
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
            query.append_pair(&config.params.page_size, &page_size.to_string());
            if let Some(token) = &self.continuation {
                query.append_pair(&config.params.continuation_token, token);
            }
        }
        url
    }
}

/// What a chain has served so far, to tell a chain that cannot end (a
/// server that repeats a token or a page, or ignores the continuation
/// parameter) from a long one: each check fails the batch at once instead
/// of landing copies of the same records until the deadline.
#[derive(Debug, Default)]
struct ChainGuard {
    /// Every continuation token handed out in this chain.
    tokens: HashSet<String>,
    /// The previous page's items (a refcounted slice of its body, not a copy).
    previous_items: Option<Bytes>,
    records: u64,
    pages: u64,
}

impl ChainGuard {
    /// Checks the page just received; `Err` says what is wrong.
    fn check(&mut self, page: &Envelope, config: &crate::ApiConfig) -> Result<(), String> {
        self.pages += 1;
        self.records += page.records.len() as u64;
        if !page.records.is_empty() && self.previous_items.as_ref() == Some(&page.items) {
            return Err(format!(
                "page {} repeats the previous page record for record: the server ignored \
                 the continuation parameter `{}` (check `api.params.continuation_token`)",
                self.pages, config.params.continuation_token
            ));
        }
        if let Some(total) = page.total_count {
            if self.records > total {
                return Err(format!(
                    "the chain has served {} records, more than its totalCount of {total}",
                    self.records
                ));
            }
            // Even one record a page, plus a last empty page, needs no more.
            if self.pages > total + 1 {
                return Err(format!(
                    "page {} of a batch of {total} records: longer than totalCount can need",
                    self.pages
                ));
            }
        }
        if self.pages > config.max_pages_per_batch {
            return Err(format!(
                "more than {} pages (`api.max_pages_per_batch`)",
                config.max_pages_per_batch
            ));
        }
        if let Some(next) = &page.continuation_token
            && !self.tokens.insert(next.clone())
        {
            return Err(format!(
                "page {} hands out continuation token `{}` a second time",
                self.pages,
                shorten(next)
            ));
        }
        self.previous_items = Some(page.items.clone());
        Ok(())
    }
}

/// An opaque token, cut for an error message (tokens can be kilobytes).
fn shorten(token: &str) -> String {
    const MAX_CHARS: usize = 80;
    match token.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &token[..cut]),
        None => token.to_string(),
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
