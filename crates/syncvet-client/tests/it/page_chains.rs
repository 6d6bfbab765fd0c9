//! Page chains that cannot end, page sizes a server refuses, and 200s that
//! are not JSON, from small servers that misbehave on purpose.

use std::sync::atomic::Ordering;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use syncvet_client::ClientError;

use crate::misbehaving::{client_for, page_json, serve};
use crate::support::{date, fetch_all};

fn page(ids: std::ops::Range<u32>, total: Option<u32>, token: Option<String>) -> String {
    let items: Vec<_> = ids.map(|i| json!({"id": format!("r{i}")})).collect();
    let mut envelope = json!({"items": items, "continuationToken": token});
    if let Some(total) = total {
        envelope["totalCount"] = json!(total);
    }
    envelope.to_string()
}

fn broken_chain(err: &ClientError) -> (&str, &str, &str) {
    match err {
        ClientError::BrokenPageChain {
            chain,
            token,
            problem,
        } => (chain, token, problem),
        other => panic!("not a broken chain: {other:?}"),
    }
}

#[tokio::test]
async fn a_token_served_twice_ends_the_batch_naming_it() {
    // Every page is new records but the same next token.
    let server =
        serve(|n, _, _| page_json(page(n * 2..n * 2 + 2, None, Some("same".into())))).await;
    let client = client_for(&server, |_| {});
    let err = fetch_all(&client, "p-1", "patients", date())
        .await
        .unwrap_err();
    let (chain, token, problem) = broken_chain(&err);
    assert_eq!(chain, "p-1/patients/2026-11-27");
    assert_eq!(token, "same");
    assert!(problem.contains("a second time"), "{problem}");
    assert!(err.to_string().contains("p-1/patients/2026-11-27"), "{err}");
    assert_eq!(
        server.calls.load(Ordering::SeqCst),
        2,
        "stopped at the repeat"
    );
}

#[tokio::test]
async fn a_continuation_parameter_the_server_ignores_is_named_with_its_key() {
    // The server reads `continuationToken`; the client was told `continuation`.
    let server = serve(|_, _, query| {
        let offset: u32 = query
            .get("continuationToken")
            .map_or(0, |t| t.parse().unwrap());
        let next = (offset + 3 < 9).then(|| (offset + 3).to_string());
        page_json(page(offset..offset + 3, Some(9), next))
    })
    .await;
    let client = client_for(&server, |c| {
        c.params.continuation_token = "continuation".into()
    });
    let err = fetch_all(&client, "p-1", "patients", date())
        .await
        .unwrap_err();
    let (_, token, problem) = broken_chain(&err);
    assert_eq!(token, "3");
    assert!(
        problem.contains("repeats the previous page")
            && problem.contains("`continuation`")
            && problem.contains("api.params.continuation_token"),
        "{problem}"
    );
    assert_eq!(server.calls.load(Ordering::SeqCst), 2);

    // The same server with the right key: the whole batch, once.
    let client = client_for(&server, |_| {});
    let fetched = fetch_all(&client, "p-1", "patients", date()).await.unwrap();
    assert_eq!(fetched.records, 9);
}

#[tokio::test]
async fn a_chain_longer_than_its_total_count_can_need_fails() {
    // New records and tokens forever, but the batch says it holds 5.
    let server =
        serve(|n, _, _| page_json(page(n * 2..n * 2 + 2, Some(5), Some(format!("t{n}"))))).await;
    let client = client_for(&server, |_| {});
    let err = fetch_all(&client, "p-1", "patients", date())
        .await
        .unwrap_err();
    let (_, token, problem) = broken_chain(&err);
    assert_eq!(token, "t1");
    assert!(
        problem.contains("more than its totalCount of 5"),
        "{problem}"
    );
    assert_eq!(server.calls.load(Ordering::SeqCst), 3);

    // Empty pages with fresh tokens and a totalCount of 2: no more than 3 pages.
    let server = serve(|n, _, _| page_json(page(0..0, Some(2), Some(format!("e{n}"))))).await;
    let client = client_for(&server, |_| {});
    let err = fetch_all(&client, "p-1", "patients", date())
        .await
        .unwrap_err();
    assert!(
        broken_chain(&err)
            .2
            .contains("longer than totalCount can need"),
        "{err}"
    );
    assert_eq!(server.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn without_a_total_count_the_page_cap_ends_an_endless_chain() {
    let server = serve(|n, _, _| page_json(page(n..n + 1, None, Some(format!("t{n}"))))).await;
    let client = client_for(&server, |c| c.max_pages_per_batch = 40);
    let err = fetch_all(&client, "p-1", "patients", date())
        .await
        .unwrap_err();
    assert!(
        broken_chain(&err).2.contains("api.max_pages_per_batch"),
        "{err}"
    );
    assert_eq!(server.calls.load(Ordering::SeqCst), 41);
}

#[tokio::test]
async fn a_refused_page_size_steps_down_once_for_the_whole_client() {
    let server = serve(|_, _, query| {
        let size: u32 = query["pageSize"].parse().unwrap();
        if size > 1000 {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "InvalidPageSize", "message": "at most 1000"})),
            )
                .into_response();
        }
        page_json(page(0..3, Some(3), None))
    })
    .await;
    let client = client_for(&server, |c| c.page_size = 5000);
    let fetched = fetch_all(&client, "p-1", "patients", date()).await.unwrap();
    assert_eq!(fetched.records, 3);
    // 5000 and 2000 refused, 1000 served.
    assert_eq!(server.calls.load(Ordering::SeqCst), 3);
    fetch_all(&client, "p-2", "patients", date()).await.unwrap();
    assert_eq!(
        server.calls.load(Ordering::SeqCst),
        4,
        "the next batch asks 1000 at once"
    );
}

#[tokio::test]
async fn a_bad_request_after_a_size_worked_is_not_a_size_problem() {
    let server = serve(|n, _, _| {
        if n == 0 {
            return page_json(page(0..1, Some(1), None));
        }
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "UnknownEntity", "message": "no such entity"})),
        )
            .into_response()
    })
    .await;
    let client = client_for(&server, |c| c.page_size = 5000);
    fetch_all(&client, "p-1", "patients", date()).await.unwrap();
    let err = fetch_all(&client, "p-1", "nonsense", date())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::BadRequest { .. }), "{err:?}");
    assert!(err.to_string().contains("UnknownEntity"), "{err}");
    assert_eq!(server.calls.load(Ordering::SeqCst), 2, "no size probing");
}

#[tokio::test]
async fn a_sign_in_page_instead_of_json_names_its_content_type() {
    let server = serve(|_, _, _| {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!DOCTYPE html><html><title>Sign in to your account</title>",
        )
            .into_response()
    })
    .await;
    let client = client_for(&server, |_| {});
    let err = fetch_all(&client, "p-1", "patients", date())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClientError::Protocol { .. }), "{err:?}");
    assert!(
        text.contains("Content-Type: text/html; charset=utf-8")
            && text.contains("<!DOCTYPE html><html><title>Sign in"),
        "{text}"
    );
    assert!(!text.contains("expected value"), "{text}");
    assert_eq!(server.calls.load(Ordering::SeqCst), 1, "not retried");
}
