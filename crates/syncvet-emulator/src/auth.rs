//! The OAuth2 client-credentials token endpoint and bearer-token checks.
//!
//! Tokens are self-contained (`svt1.{client id hex}.{expiry ms hex}.{check}`)
//! so checking one needs no lookup and no lock; the check is keyed per
//! emulator start.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::hash::{combine, hash_str};
use crate::state::Shared;

fn check(key: u64, client_id: &str, expires_ms: u64) -> u64 {
    combine(combine(key, hash_str(client_id)), expires_ms)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// A new access token for `client_id`, valid until `expires_ms`.
pub(crate) fn issue(key: u64, client_id: &str, expires_ms: u64) -> String {
    let mac = check(key, client_id, expires_ms);
    format!(
        "svt1.{}.{expires_ms:x}.{mac:016x}",
        hex(client_id.as_bytes())
    )
}

/// Why a request is not authenticated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthProblem {
    Missing,
    Invalid,
    Expired,
}

impl AuthProblem {
    pub(crate) fn message(&self) -> &'static str {
        match self {
            AuthProblem::Missing => "no bearer token in the Authorization header",
            AuthProblem::Invalid => "the access token is not valid",
            AuthProblem::Expired => "the access token has expired",
        }
    }
}

/// The client id of a valid bearer token in `headers`.
pub(crate) fn verify(key: u64, headers: &HeaderMap, now_ms: u64) -> Result<String, AuthProblem> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthProblem::Missing)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(AuthProblem::Missing)?
        .trim();
    let mut parts = token.split('.');
    let (Some("svt1"), Some(client), Some(expires), Some(mac), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(AuthProblem::Invalid);
    };
    let client_id = unhex(client).ok_or(AuthProblem::Invalid)?;
    let expires_ms = u64::from_str_radix(expires, 16).map_err(|_| AuthProblem::Invalid)?;
    if format!("{:016x}", check(key, &client_id, expires_ms)) != mac {
        return Err(AuthProblem::Invalid);
    }
    if now_ms >= expires_ms {
        return Err(AuthProblem::Expired);
    }
    Ok(client_id)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /oauth2/v2.0/token`: client credentials, checked field by field.
pub(crate) async fn token_endpoint(
    State(shared): State<Arc<Shared>>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    };
    let settings = shared.settings();
    let config = &settings.config;
    let field = |name: &str| form.get(name).map(String::as_str);
    match field("grant_type") {
        Some("client_credentials") => {}
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing",
            );
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
    }
    let Some(client_id) = field("client_id") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id is missing",
        );
    };
    if client_id != config.client_id
        || field("client_secret") != Some(config.client_secret.as_str())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "invalid client id or client secret",
        );
    }
    if field("scope") != Some(config.scope.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the scope is missing or not the API's",
        );
    }
    let ttl = config.token_ttl_secs;
    let token = issue(shared.token_key, client_id, shared.now_ms() + ttl * 1000);
    shared.counters.tokens_issued.fetch_add(1, Relaxed);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "token_type": "Bearer",
            "expires_in": ttl,
            "ext_expires_in": ttl,
            "access_token": token,
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_expire_on_the_emulator_clock() {
        let shared = crate::state::Shared::new(crate::EmulatorConfig::default());
        let token = issue(shared.token_key, "demo-client", shared.now_ms() + 10_000);
        assert!(verify(shared.token_key, &bearer(&token), shared.now_ms()).is_ok());
        tokio::time::advance(std::time::Duration::from_millis(9_900)).await;
        assert!(verify(shared.token_key, &bearer(&token), shared.now_ms()).is_ok());
        tokio::time::advance(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            verify(shared.token_key, &bearer(&token), shared.now_ms()),
            Err(AuthProblem::Expired)
        );
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_their_key() {
        let token = issue(11, "demo-client", 5_000);
        assert_eq!(
            verify(11, &bearer(&token), 4_999),
            Ok("demo-client".to_owned())
        );
        assert_eq!(
            verify(11, &bearer(&token), 5_000),
            Err(AuthProblem::Expired)
        );
        assert_eq!(verify(12, &bearer(&token), 1), Err(AuthProblem::Invalid));
        let forged = token.replace(&format!("{:x}", 5_000), &format!("{:x}", 9_000));
        assert_eq!(
            verify(11, &bearer(&forged), 6_000),
            Err(AuthProblem::Invalid)
        );
        assert_eq!(verify(11, &HeaderMap::new(), 1), Err(AuthProblem::Missing));
        assert_eq!(
            verify(11, &bearer("nonsense"), 1),
            Err(AuthProblem::Invalid)
        );
    }
}
