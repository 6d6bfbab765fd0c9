//! Servers that break the contract, on 127.0.0.1:0: a second 401, huge or
//! endless bodies, items that are not an array, 503 with Retry-After.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use syncvet_client::{ApiClient, ClientError, SecretString};

use crate::support::{config_for, date};

pub(crate) struct Server {
    pub(crate) base_url: String,
    pub(crate) token_url: String,
    pub(crate) tokens: Arc<AtomicU32>,
    pub(crate) calls: Arc<AtomicU32>,
}

/// The query parameters of a request.
pub(crate) type Query = HashMap<String, String>;

/// Serves a token endpoint and `batch/{p}/{e}` answered by
/// `page(call_number, headers, query)`.
pub(crate) async fn serve<F>(page: F) -> Server
where
    F: Fn(u32, &HeaderMap, &Query) -> Response + Clone + Send + Sync + 'static,
{
    let tokens = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let (t, c) = (tokens.clone(), calls.clone());
    let app = Router::new()
        .route(
            "/token",
            post(move || {
                let n = t.fetch_add(1, Ordering::SeqCst);
                async move {
                    axum::Json(serde_json::json!({
                        "token_type": "Bearer", "expires_in": 3599, "access_token": format!("tok-{n}")
                    }))
                }
            }),
        )
        .route(
            "/api/batch/{practice}/{entity}",
            get(move |headers: HeaderMap, query: axum::extract::Query<Query>| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let response = page(n, &headers, &query);
                async move { response }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        base_url: format!("http://{addr}/api/"),
        token_url: format!("http://{addr}/token"),
        tokens,
        calls,
    }
}

pub(crate) fn client_for(
    server: &Server,
    tune: impl FnOnce(&mut syncvet_client::ApiConfig),
) -> ApiClient {
    let mut config = config_for(&server.base_url, &server.token_url);
    tune(&mut config);
    ApiClient::new(&config, SecretString::from("demo-secret")).unwrap()
}

pub(crate) fn page_json(body: impl Into<Body>) -> Response {
    let body: Body = body.into();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[tokio::test]
async fn a_second_401_is_fatal_after_one_refresh_with_a_new_token() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let server = serve(move |_, headers, _| {
        log.lock()
            .unwrap()
            .push(headers[header::AUTHORIZATION].to_str().unwrap().to_string());
        (StatusCode::UNAUTHORIZED, "{}").into_response()
    })
    .await;
    let client = client_for(&server, |_| {});
    let err = client
        .batch("p-1", "patients", date())
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ClientError::Auth { .. }), "{err:?}");
    assert!(err.is_fatal_for_run());
    assert_eq!(server.tokens.load(Ordering::SeqCst), 2, "one refresh");
    assert_eq!(
        *seen.lock().unwrap(),
        ["Bearer tok-0", "Bearer tok-1"],
        "the retry carries the new token"
    );
    assert!(
        !format!("{err} {err:?} {client:?}").contains("tok-"),
        "no token in messages"
    );
}

#[tokio::test]
async fn a_401_then_success_refreshes_once() {
    let server = serve(|n, _, _| {
        if n == 0 {
            (StatusCode::UNAUTHORIZED, "{}").into_response()
        } else {
            page_json(r#"{"items":[{"id":"a"}],"continuationToken":null}"#)
        }
    })
    .await;
    let client = client_for(&server, |_| {});
    let fetched = crate::support::fetch_all(&client, "p-1", "patients", date())
        .await
        .unwrap();
    assert_eq!(fetched.records, 1);
    assert_eq!(server.tokens.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn huge_or_endless_bodies_fail_cleanly() {
    // Announces 10 GB.
    let server = serve(|_, _, _| {
        Response::builder()
            .header(header::CONTENT_LENGTH, "10000000000")
            .body(Body::from_stream(futures::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b' '; 65536]))
            })))
            .unwrap()
    })
    .await;
    let client = client_for(&server, |c| c.max_body_bytes = 1 << 20);
    let err = client
        .batch("p-1", "patients", date())
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, ClientError::BodyTooLarge { limit } if limit == 1 << 20),
        "{err:?}"
    );

    // Never ends, no length announced.
    let server = serve(|_, _, _| {
        Body::from_stream(futures::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b' '; 65536]))
        }))
        .into_response()
    })
    .await;
    let client = client_for(&server, |c| c.max_body_bytes = 1 << 20);
    let started = Instant::now();
    let err = client
        .batch("p-1", "patients", date())
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ClientError::BodyTooLarge { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.calls.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test]
async fn items_must_be_an_array() {
    let server =
        serve(|_, _, _| page_json(r#"{"items":{"id":"a"},"continuationToken":null}"#)).await;
    let client = client_for(&server, |_| {});
    let err = client
        .batch("p-1", "patients", date())
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ClientError::Protocol { .. }), "{err:?}");
    assert_eq!(server.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_503_retry_after_is_honoured_and_failures_are_bounded() {
    let server = serve(|n, _, _| {
        if n == 0 {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "busy",
            )
                .into_response()
        } else {
            page_json(
                r#"{"items":[{"id":"a"},{"id":"b"}],"totalCount":2,"continuationToken":null}"#,
            )
        }
    })
    .await;
    let client = client_for(&server, |_| {});
    let started = Instant::now();
    let fetched = crate::support::fetch_all(&client, "p-1", "patients", date())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited Retry-After, not the 20 ms backoff"
    );
    assert_eq!((fetched.records, fetched.stats.retries), (2, 1));

    let server = serve(|_, _, _| (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response()).await;
    let client = client_for(&server, |c| c.retry.max_attempts = 3);
    let err = client
        .batch("p-1", "patients", date())
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, ClientError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(server.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn refused_credentials_are_an_auth_error_without_the_secret() {
    let app = Router::new().route(
        "/token",
        post(|| async {
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"error": "invalid_client", "error_description": "AADSTS7000215"})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = config_for(
        &format!("http://{addr}/api/"),
        &format!("http://{addr}/token"),
    );
    let client = ApiClient::new(&config, SecretString::from("demo-secret")).unwrap();
    let err = client.check_auth().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Auth { .. }) && err.is_fatal_for_run(),
        "{err:?}"
    );
    assert!(err.to_string().contains("invalid_client"));
    assert!(!format!("{err} {err:?}").contains("demo-secret"));
}
