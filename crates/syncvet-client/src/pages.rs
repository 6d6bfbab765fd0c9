//! Paging: following continuation tokens, restarting when one expires.

use std::collections::HashSet;

use bytes::Bytes;
use serde::Deserialize;

use crate::body::Envelope;
use crate::client::{ApiClient, Fetched};
use crate::error::ClientError;
use crate::metrics::StreamStats;
use crate::request::{PageRequest, Resource};

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

impl ApiClient {
    /// Every data source this consumer may read (all pages).
    pub async fn practices(&self) -> Result<Vec<Practice>, ClientError> {
        let mut stream = PageStream::new(self.clone(), Resource::Practices);
        let mut practices = Vec::new();
        while let Some(event) = stream.next().await {
            match event? {
                PageEvent::Restarted => practices.clear(),
                PageEvent::Page(page) => {
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
            Resource::Batch {
                practice: practice_id.to_string(),
                entity: entity.to_string(),
                date,
            },
        )
    }
}

/// The pages of one batch (or of the practice list), in order. Pull-based:
/// the next request goes out only when the caller asks, so memory holds one
/// page per stream. Ends after the last page or after the first error.
pub struct PageStream {
    client: ApiClient,
    resource: Resource,
    next_number: u32,
    continuation: Option<String>,
    chain: ChainGuard,
    /// Set by `with_page_size`: this stream's own size, never stepped down.
    page_size: Option<u32>,
    finished: bool,
    stats: StreamStats,
}

impl PageStream {
    fn new(client: ApiClient, resource: Resource) -> Self {
        PageStream {
            client,
            resource,
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
            let request = PageRequest {
                resource: &self.resource,
                page_size,
                continuation: self.continuation.as_deref(),
            };
            let fetched = self.client.get_page(request, &mut self.stats).await;
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
                chain: self.resource.to_string(),
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
        tracing::info!(resource = %self.resource, restarts = self.stats.restarts, "continuation token expired: restarting from the first page");
        self.next_number = 0;
        self.continuation = None;
        self.chain = ChainGuard::default();
        Ok(PageEvent::Restarted)
    }

    /// What this stream has cost so far.
    pub fn stats(&self) -> StreamStats {
        self.stats.clone()
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
