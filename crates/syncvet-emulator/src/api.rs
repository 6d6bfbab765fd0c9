//! The routes: the API (`/api/practices`, `/api/batch/…`), the token
//! endpoint and the admin endpoints, with the checks every API request goes
//! through in the contract's order: authentication (401), the gateway's
//! limits (429: concurrency, window, token bucket), latency, injected faults
//! (drop, 500, 503, 408), then the request itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde_json::json;
use tokio::time::Instant;

use crate::EmulatorConfig;
use crate::auth;
use crate::limits::InFlight;
use crate::lookahead::PageKey;
use crate::page::{self, TokenProblem};
use crate::plan::EntityPlan;
use crate::sources::{self, parse_source_id};
use crate::state::{Pause, Settings, Shared};
use crate::stats::Fault;
use crate::{EmulatorError, record_count};

/// Marks a response whose connection the server must close unanswered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// Marks a 200 response whose body the server must cut short.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TruncateBody;

/// The router of the whole emulator.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth2/v2.0/token", post(auth::token_endpoint))
        .route("/api/practices", get(practices))
        .route("/api/batch/{practice_id}/{entity}", get(batch))
        .route("/__admin/stats", get(stats))
        .route("/__admin/config", get(show_config).post(patch_config))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "method not allowed on this endpoint",
            )
        })
        .with_state(shared)
}

/// A contract error body: `{"error":"Code","message":"text"}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// A 400-type refusal, small enough to pass around in a `Result`.
struct Refusal {
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.code, &self.message)
    }
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The checks before an API request is served; `Err` is the response to
/// send. `Ok` is the gateway's guard of the request: the handler holds it
/// until its response is built, so that it counts as in flight (latency
/// included) for the concurrency cap.
async fn admit(
    shared: &Shared,
    settings: &Settings,
    headers: &HeaderMap,
) -> Result<InFlight, Response> {
    let config = &settings.config;
    let client = auth::verify(shared.token_key, headers, shared.now_ms()).map_err(|problem| {
        let mut response = error(StatusCode::UNAUTHORIZED, "Unauthorized", problem.message());
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    })?;
    let in_flight = pass_gateway(shared, settings, client)?;
    if config.latency_ms > 0 {
        let jitter = shared.roll(config.seed) * 2.0;
        shared.counters.fault(Fault::Latency);
        tokio::time::sleep(Duration::from_secs_f64(
            config.latency_ms as f64 * jitter / 1000.0,
        ))
        .await;
    }
    match injected_fault(shared, config) {
        Some(response) => Err(response),
        None => Ok(in_flight),
    }
}

/// The gateway's limits (429 with Retry-After), counting an early retry:
/// a request of a client still inside the pause its last 429 gave it.
// A refusal is the handler's response, returned by value as axum wants it.
#[allow(clippy::result_large_err)]
fn pass_gateway(
    shared: &Shared,
    settings: &Settings,
    client: String,
) -> Result<InFlight, Response> {
    let arrival = Instant::now();
    let grace = Duration::from_millis(settings.config.early_retry_grace_ms);
    let mut pauses = shared.pauses.lock().unwrap_or_else(|e| e.into_inner());
    if pauses
        .get(&client)
        .is_some_and(|pause| pause.is_early(arrival, grace))
    {
        shared.counters.early_retries.fetch_add(1, Relaxed);
    }
    let limited = match settings.gateway.admit(&client) {
        Ok(in_flight) => return Ok(in_flight),
        Err(limited) => limited,
    };
    let last = pauses.get(&client).copied();
    pauses.insert(
        client,
        Pause::after(last, Instant::now(), limited.retry_after),
    );
    drop(pauses);
    shared.counters.limited(limited.kind);
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "rate limit exceeded; retry after the Retry-After delay",
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(limited.retry_after.as_secs()),
    );
    Err(response)
}

/// The response of the fault the dice chose (drop, 500, 503, 408), if any.
fn injected_fault(shared: &Shared, config: &EmulatorConfig) -> Option<Response> {
    let roll = shared.roll(config.seed);
    let mut threshold = 0.0;
    for (rate, fault) in [
        (config.drop_rate, Fault::Drop),
        (config.error_rate_500, Fault::Error500),
        (config.error_rate_503, Fault::Error503),
        (config.error_rate_408, Fault::Error408),
    ] {
        threshold += rate;
        if roll < threshold {
            shared.counters.fault(fault);
            return Some(match fault {
                Fault::Drop => {
                    let mut response = Response::new(Body::empty());
                    response.extensions_mut().insert(DropConnection);
                    response
                }
                Fault::Error500 => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "injected fault",
                ),
                Fault::Error503 => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "injected fault",
                ),
                _ => error(
                    StatusCode::REQUEST_TIMEOUT,
                    "RequestTimeout",
                    "agent timeout (injected fault)",
                ),
            });
        }
    }
    None
}

fn page_size(query: &HashMap<String, String>, max: u32) -> Result<u64, Refusal> {
    let Some(text) = query.get("pageSize") else {
        return Ok(1000.min(u64::from(max)));
    };
    match text.parse::<u64>() {
        Ok(n) if (1..=u64::from(max)).contains(&n) => Ok(n),
        _ => Err(Refusal::new(
            "InvalidPageSize",
            format!("pageSize must be a whole number from 1 to {max}"),
        )),
    }
}

fn offset(
    shared: &Shared,
    settings: &Settings,
    scope: u64,
    query: &HashMap<String, String>,
) -> Result<u64, Refusal> {
    let Some(token) = query.get("continuationToken").filter(|t| !t.is_empty()) else {
        return Ok(0);
    };
    page::decode_token(
        scope,
        token,
        settings.config.continuation_ttl_secs,
        shared.now_ms(),
    )
    .map_err(|problem| match problem {
        TokenProblem::Expired => Refusal::new(
            "ContinuationTokenExpired",
            "the continuation token has expired; read the entity again from the first page",
        ),
        TokenProblem::Invalid => Refusal::new(
            "InvalidContinuationToken",
            "the continuation token is not one of this listing",
        ),
    })
}

/// The token of the page after `end`, or `None` on the last page.
fn next_token(
    shared: &Shared,
    settings: &Settings,
    scope: u64,
    end: u64,
    total: u64,
) -> Option<String> {
    let issued = if settings.config.continuation_ttl_secs > 0 {
        shared.now_ms()
    } else {
        0
    };
    (end < total).then(|| page::encode_token(scope, end, issued))
}

fn bad_query(rejection: QueryRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "InvalidQuery",
        &rejection.body_text(),
    )
}

async fn practices(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let settings = shared.settings();
    let _in_flight = match admit(&shared, &settings, &headers).await {
        Ok(in_flight) => in_flight,
        Err(response) => return response,
    };
    let query = match query {
        Ok(Query(q)) => q,
        Err(rejection) => return bad_query(rejection),
    };
    let config = &settings.config;
    let scope = page::practices_hash(config);
    let (size, start) = match (
        page_size(&query, config.max_page_size),
        offset(&shared, &settings, scope, &query),
    ) {
        (Ok(size), Ok(start)) => (size, start),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let all = sources::sources(config);
    let total = all.len() as u64;
    if start > total {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidContinuationToken",
            "the continuation token is past the end",
        );
    }
    let end = start.saturating_add(size).min(total);
    let token = next_token(&shared, &settings, scope, end, total);
    json_bytes(
        StatusCode::OK,
        page::render_practices_page(&all[start as usize..end as usize], token.as_deref()),
    )
}

async fn batch(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((practice_id, entity)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let settings = shared.settings();
    let _in_flight = match admit(&shared, &settings, &headers).await {
        Ok(in_flight) => in_flight,
        Err(response) => return response,
    };
    let config = &settings.config;
    let plan = match served_entity(&shared, config, &practice_id, &entity) {
        Ok(plan) => plan,
        Err(response) => return response,
    };
    let query = match query {
        Ok(Query(q)) => q,
        Err(rejection) => return bad_query(rejection),
    };
    let Some(date) = query
        .get("date")
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidDate",
            "date must be given as YYYY-MM-DD",
        );
    };
    let scope = page::batch_hash(config, &practice_id, &entity, date);
    let (size, start) = match (
        page_size(&query, config.max_page_size),
        offset(&shared, &settings, scope, &query),
    ) {
        (Ok(size), Ok(start)) => (size, start),
        (Err(r), _) | (_, Err(r)) => return r.into_response(),
    };
    let total = record_count(config, &practice_id, &entity, date);
    if start > total {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidContinuationToken",
            "the continuation token is past the end",
        );
    }
    if not_ready_yet(&shared, config, &practice_id, &entity, date) {
        return (StatusCode::ACCEPTED, Json(json!({"status": "Processing"}))).into_response();
    }
    let end = start.saturating_add(size).min(total);
    let key = PageKey {
        scope,
        offset: start,
        size,
    };
    let mut page = match shared.lookahead.take(key, &settings).await {
        Some(page) => page,
        None => page::render_batch_records(config, plan, &practice_id, date, start, size, total),
    };
    if end < total {
        let (plan, settings_ahead) = (plan.clone(), settings.clone());
        let next = PageKey { offset: end, ..key };
        shared.lookahead.start(next, settings.clone(), move || {
            let config = &settings_ahead.config;
            page::render_batch_records(config, &plan, &practice_id, date, end, size, total)
        });
    }
    let token = next_token(&shared, &settings, scope, end, total);
    page::finish_batch_page(&mut page, token.as_deref());
    shared.counters.served(&page.tally, page.body.len());
    let mut response = json_bytes(StatusCode::OK, page.body);
    if config.truncate_rate > 0.0 && shared.roll(config.seed) < config.truncate_rate {
        response.extensions_mut().insert(TruncateBody);
    }
    response
}

/// The entity's plan, when this source may be read, exists and serves the
/// entity; else the refusal (403, 404, 400).
#[allow(clippy::result_large_err)]
fn served_entity<'a>(
    shared: &'a Shared,
    config: &EmulatorConfig,
    practice_id: &str,
    entity: &str,
) -> Result<&'a Arc<EntityPlan>, Response> {
    if config.forbidden_sources.iter().any(|id| id == practice_id) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("this consumer is not authorized for batch sync of {practice_id}"),
        ));
    }
    let Some((source_type, _)) = parse_source_id(config, practice_id) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "PracticeNotFound",
            &format!("no practice {practice_id}"),
        ));
    };
    let Some(plan) = shared.plans.get(entity) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "UnknownEntity",
            &format!("no entity {entity}"),
        ));
    };
    if plan.source_type != source_type {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "EntityNotServed",
            &format!("{practice_id} is a {source_type} source and does not serve {entity}"),
        ));
    }
    Ok(plan)
}

/// Whether this batch still answers 202 (`not_ready_polls` times each).
fn not_ready_yet(
    shared: &Shared,
    config: &EmulatorConfig,
    practice_id: &str,
    entity: &str,
    date: NaiveDate,
) -> bool {
    if config.not_ready_polls == 0 {
        return false;
    }
    let key = (
        practice_id.to_owned(),
        entity.to_owned(),
        page::days_since_epoch(date),
    );
    let mut polls = shared.polls.lock().unwrap_or_else(|e| e.into_inner());
    let seen = polls.entry(key).or_insert(0);
    if *seen >= config.not_ready_polls {
        return false;
    }
    *seen += 1;
    shared.counters.not_ready.fetch_add(1, Relaxed);
    true
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.counters.snapshot()).into_response()
}

async fn show_config(State(shared): State<Arc<Shared>>) -> Response {
    let mut value = serde_json::to_value(&shared.settings().config).unwrap_or_default();
    value["client_secret"] = json!("<redacted>");
    Json(value).into_response()
}

async fn patch_config(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let patch: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "InvalidJson", &e.to_string()),
    };
    match shared.apply_patch(&patch) {
        Ok(()) => show_config(State(shared)).await,
        Err(e) => {
            let code = match e {
                EmulatorError::UnknownSetting { .. } => "UnknownSetting",
                _ => "InvalidSetting",
            };
            error(StatusCode::BAD_REQUEST, code, &e.to_string())
        }
    }
}
