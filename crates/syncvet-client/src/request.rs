//! What one GET asks for: the resource, the page size, the continuation
//! token, and the URL they make under the configured paths and names.

use std::fmt;

use crate::config::ApiConfig;
use crate::error::ClientError;

/// What a page stream reads.
#[derive(Debug, Clone)]
pub(crate) enum Resource {
    Practices,
    Batch {
        practice: String,
        entity: String,
        date: chrono::NaiveDate,
    },
}

impl Resource {
    /// Requests are queued fairly per practice.
    pub(crate) fn fairness_key(&self) -> &str {
        match self {
            Resource::Practices => "",
            Resource::Batch { practice, .. } => practice,
        }
    }

    pub(crate) fn practice(&self) -> Option<&str> {
        match self {
            Resource::Practices => None,
            Resource::Batch { practice, .. } => Some(practice),
        }
    }

    pub(crate) fn not_ready(&self) -> ClientError {
        match self {
            Resource::Practices => ClientError::DeadlineExceeded {
                during: "waiting for the practice list (202)".into(),
            },
            Resource::Batch {
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

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Practices => f.write_str("practices"),
            Resource::Batch {
                practice,
                entity,
                date,
            } => write!(f, "{practice}/{entity}/{date}"),
        }
    }
}

/// One page's request, as the page stream asks the client for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageRequest<'a> {
    pub resource: &'a Resource,
    pub page_size: u32,
    /// `None` for the first page of a chain.
    pub continuation: Option<&'a str>,
}

impl PageRequest<'_> {
    /// The URL under `base` (which ends in `/`), with the configured path
    /// and query-parameter names.
    pub(crate) fn url(&self, base: &reqwest::Url, config: &ApiConfig) -> reqwest::Url {
        let path = match self.resource {
            Resource::Practices => config.paths.practices.clone(),
            Resource::Batch {
                practice, entity, ..
            } => config
                .paths
                .batch
                .replace("{practiceId}", &encode_segment(practice))
                .replace("{entity}", &encode_segment(entity)),
        };
        let mut url = base
            .join(path.trim_start_matches('/'))
            .expect("a relative path joins onto a valid base URL");
        {
            let mut query = url.query_pairs_mut();
            if let Resource::Batch { date, .. } = self.resource {
                query.append_pair(&config.params.date, &date.to_string());
            }
            query.append_pair(&config.params.page_size, &self.page_size.to_string());
            if let Some(token) = self.continuation {
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

    #[test]
    fn the_url_carries_the_configured_names() {
        let config = ApiConfig::default();
        let base = reqwest::Url::parse("http://127.0.0.1:9/v1/").unwrap();
        let batch = Resource::Batch {
            practice: "p 1".into(),
            entity: "patients".into(),
            date: chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
        };
        let url = PageRequest {
            resource: &batch,
            page_size: 500,
            continuation: Some("t&1"),
        }
        .url(&base, &config);
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(url.path().contains("p%201"), "{url}");
        assert!(url.path().contains("patients"), "{url}");
        assert!(
            query.contains(&(config.params.continuation_token.clone(), "t&1".into())),
            "{url}"
        );
        assert!(query.contains(&(config.params.page_size.clone(), "500".into())));
        assert!(query.contains(&(config.params.date.clone(), "2026-11-27".into())));
    }
}
