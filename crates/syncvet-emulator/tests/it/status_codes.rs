//! Every status code path of the contract.

use reqwest::StatusCode;
use serde_json::json;
use syncvet_emulator::EmulatorConfig;

use crate::common::{DATE, start, token_request};

fn form<'a>(secret: &'a str, grant: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", "demo-client"),
        ("client_secret", secret),
        ("scope", scope),
        ("grant_type", grant),
    ]
}

const SCOPE: &str = "https://consumerapi.sync.vet/.default";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_checks_every_field() {
    let h = start(EmulatorConfig::default()).await;
    let url = h.emulator.token_url();

    let ok = token_request(
        &h.http,
        &url,
        &form("demo-secret", "client_credentials", SCOPE),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let body = ok.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert!(body["access_token"].as_str().unwrap().len() > 20);

    let wrong_secret =
        token_request(&h.http, &url, &form("nope", "client_credentials", SCOPE)).await;
    assert_eq!(wrong_secret.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_secret.json()["error"], "invalid_client");
    assert!(wrong_secret.json()["error_description"].is_string());

    let wrong_grant = token_request(&h.http, &url, &form("demo-secret", "password", SCOPE)).await;
    assert_eq!(wrong_grant.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_grant.json()["error"], "unsupported_grant_type");

    let wrong_scope = token_request(
        &h.http,
        &url,
        &form("demo-secret", "client_credentials", "other"),
    )
    .await;
    assert_eq!(wrong_scope.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_scope.json()["error"], "invalid_scope");

    let no_client = token_request(&h.http, &url, &[("grant_type", "client_credentials")]).await;
    assert_eq!(no_client.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_client.json()["error"], "invalid_request");

    let json_body = h
        .http
        .post(&url)
        .body("{}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), StatusCode::BAD_REQUEST);

    let get = h.http.get(&url).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);

    assert_eq!(
        h.emulator.stats().tokens_issued,
        2,
        "the harness's token and the one above"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_need_a_valid_token() {
    let h = start(EmulatorConfig::default()).await;
    let url = format!("{}practices", h.emulator.base_url());
    let missing = h.http.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let forged = h
        .http
        .get(&url)
        .bearer_auth(format!("{}x", h.token))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = serde_json::from_slice(&forged.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"], "Unauthorized");
    assert_eq!(h.get("practices").await.status, StatusCode::OK);
    // A token of another emulator run is refused.
    let other = start(EmulatorConfig::default()).await;
    let foreign = h
        .http
        .get(&url)
        .bearer_auth(&other.token)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn practices_are_listed_and_paged() {
    let h = start(EmulatorConfig {
        pims_sources: 3,
        supplier_sources: 2,
        ..EmulatorConfig::default()
    })
    .await;
    let first = h.get("practices?pageSize=2").await;
    assert_eq!(first.status, StatusCode::OK);
    let page = first.json();
    assert_eq!(page["items"][0]["practiceId"], "p-0001");
    assert_eq!(page["items"][0]["dataSourceType"], "PIMS");
    assert_eq!(page["items"][0]["batchSyncEnabled"], true);
    assert!(page["items"][0]["pimsName"].is_string());
    assert!(page["items"][0]["timeZone"].is_string());
    let mut ids: Vec<String> = Vec::new();
    let mut token = None::<String>;
    loop {
        let path = match &token {
            None => "practices?pageSize=2".to_owned(),
            Some(t) => format!("practices?pageSize=2&continuationToken={t}"),
        };
        let page = h.get(&path).await.json();
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["practiceId"].as_str().unwrap().to_owned()),
        );
        match page["continuationToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids, ["p-0001", "p-0002", "p-0003", "s-0001", "s-0002"]);
    let supplier = h.get("practices?pageSize=5").await.json();
    assert_eq!(supplier["items"][4]["dataSourceType"], "Supplier");
    assert_eq!(supplier["continuationToken"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_requests_are_validated() {
    let h = start(EmulatorConfig {
        forbidden_sources: vec!["p-0002".into()],
        ..EmulatorConfig::default()
    })
    .await;
    let code = |path: &'static str| {
        let h = &h;
        async move {
            let reply = h.get(path).await;
            let error = if reply.status == StatusCode::OK {
                String::new()
            } else {
                reply.json()["error"].as_str().unwrap().to_owned()
            };
            (reply.status, error)
        }
    };
    assert_eq!(
        code("batch/p-0001/patients?date=2026-11-27").await.0,
        StatusCode::OK
    );
    assert_eq!(
        code("batch/s-0001/supplier_products?date=2026-11-27")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        code("batch/p-0001/spaceships?date=2026-11-27").await,
        (StatusCode::BAD_REQUEST, "UnknownEntity".into())
    );
    assert_eq!(
        code("batch/p-0001/supplier_products?date=2026-11-27").await,
        (StatusCode::BAD_REQUEST, "EntityNotServed".into())
    );
    assert_eq!(
        code("batch/s-0001/patients?date=2026-11-27").await,
        (StatusCode::BAD_REQUEST, "EntityNotServed".into())
    );
    assert_eq!(
        code("batch/p-0001/patients?date=2026-02-30").await,
        (StatusCode::BAD_REQUEST, "InvalidDate".into())
    );
    assert_eq!(
        code("batch/p-0001/patients").await,
        (StatusCode::BAD_REQUEST, "InvalidDate".into())
    );
    assert_eq!(
        code("batch/p-0001/patients?date=2026-11-27&pageSize=5001").await,
        (StatusCode::BAD_REQUEST, "InvalidPageSize".into())
    );
    assert_eq!(
        code("batch/p-0001/patients?date=2026-11-27&pageSize=0").await,
        (StatusCode::BAD_REQUEST, "InvalidPageSize".into())
    );
    assert_eq!(
        code("batch/p-0001/patients?date=2026-11-27&pageSize=5000")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        code("batch/p-0001/patients?date=2026-11-27&continuationToken=1-0-deadbeef").await,
        (StatusCode::BAD_REQUEST, "InvalidContinuationToken".into())
    );
    assert_eq!(
        code("batch/p-0009/patients?date=2026-11-27").await,
        (StatusCode::NOT_FOUND, "PracticeNotFound".into())
    );
    assert_eq!(
        code("batch/p-0002/patients?date=2026-11-27").await,
        (StatusCode::FORBIDDEN, "Forbidden".into())
    );
    assert_eq!(code("nothing/here").await.0, StatusCode::NOT_FOUND);

    // A token of one batch is not valid for another.
    let page = h
        .get("batch/p-0001/invoice_lines?date=2026-11-27&pageSize=1")
        .await
        .json();
    let token = page["continuationToken"]
        .as_str()
        .expect("more than one line")
        .to_owned();
    let other = h
        .get(&format!(
            "batch/p-0003/invoice_lines?date=2026-11-27&pageSize=1&continuationToken={token}"
        ))
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);

    let post = h
        .http
        .post(format!(
            "{}batch/p-0001/patients?date={DATE}",
            h.emulator.base_url()
        ))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);

    let stats = h.emulator.stats();
    assert_eq!(stats.by_status["400"], 9);
    assert_eq!(stats.by_status["404"], 2);
    assert_eq!(stats.by_status["403"], 1);
    assert_eq!(stats.by_status["405"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_answer_202_until_ready() {
    let h = start(EmulatorConfig {
        not_ready_polls: 2,
        ..EmulatorConfig::default()
    })
    .await;
    let path = format!("batch/p-0001/patients?date={DATE}");
    for _ in 0..2 {
        let reply = h.get(&path).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(reply.json()["status"], "Processing");
    }
    assert_eq!(h.get(&path).await.status, StatusCode::OK);
    assert_eq!(
        h.get(&path).await.status,
        StatusCode::OK,
        "ready stays ready"
    );
    // Another batch has its own count.
    assert_eq!(
        h.get(&format!("batch/p-0001/clients?date={DATE}"))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(h.emulator.stats().not_ready, 3);
    assert_eq!(h.emulator.stats().by_status["202"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_answer_500_503_408() {
    let h = start(EmulatorConfig::default()).await;
    let path = format!("batch/p-0001/patients?date={DATE}");
    for (switch, status, code) in [
        ("error_rate_500", StatusCode::INTERNAL_SERVER_ERROR, "500"),
        ("error_rate_503", StatusCode::SERVICE_UNAVAILABLE, "503"),
        ("error_rate_408", StatusCode::REQUEST_TIMEOUT, "408"),
    ] {
        h.emulator.update(json!({switch: 1.0})).unwrap();
        let reply = h.get(&path).await;
        assert_eq!(reply.status, status);
        assert!(reply.json()["error"].is_string());
        h.emulator.update(json!({switch: 0.0})).unwrap();
        assert_eq!(h.get(&path).await.status, StatusCode::OK);
        let stats = h.emulator.stats();
        assert_eq!(stats.faults[code], 1);
        assert_eq!(stats.by_status[code], 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_changes_switches_and_names_unknown_keys() {
    let h = start(EmulatorConfig::default()).await;
    let admin = format!("{}/__admin/config", h.emulator.url());
    let ok = h
        .http
        .post(&admin)
        .body(r#"{"forbidden_sources":["p-0001"],"latency_ms":0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let shown: serde_json::Value = serde_json::from_slice(&ok.bytes().await.unwrap()).unwrap();
    assert_eq!(shown["client_secret"], "<redacted>");
    assert_eq!(
        h.get(&format!("batch/p-0001/patients?date={DATE}"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let unknown = h
        .http
        .post(&admin)
        .body(r#"{"drop_rat":0.5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let body = String::from_utf8(unknown.bytes().await.unwrap().to_vec()).unwrap();
    assert!(
        body.contains("drop_rat") && body.contains("UnknownSetting"),
        "{body}"
    );

    let out_of_range = h
        .http
        .post(&admin)
        .body(r#"{"drop_rate":3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(out_of_range.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        h.emulator.config().drop_rate,
        0.0,
        "a rejected patch changes nothing"
    );

    let stats: serde_json::Value = serde_json::from_slice(
        &h.http
            .get(format!("{}/__admin/stats", h.emulator.url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    for key in [
        "requests",
        "by_status",
        "faults",
        "tokens_issued",
        "early_retries",
    ] {
        assert!(stats.get(key).is_some(), "{key} missing from {stats}");
    }
    assert_eq!(stats["by_status"]["403"], 1);
}

/// Token and continuation-token expiry share one short real-time wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_continuation_tokens_expire() {
    let h = start(EmulatorConfig {
        token_ttl_secs: 1,
        continuation_ttl_secs: 1,
        ..EmulatorConfig::default()
    })
    .await;
    let first = h
        .get(&format!(
            "batch/p-0001/invoice_lines?date={DATE}&pageSize=1"
        ))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let token = first.json()["continuationToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = h
        .get(&format!(
            "batch/p-0001/invoice_lines?date={DATE}&pageSize=1"
        ))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    // With a TTL, two reads of a page differ in the token only.
    let (a, b) = (first.json(), again.json());
    assert_eq!(a["items"], b["items"]);
    let fresh = h
        .get(&format!(
            "batch/p-0001/invoice_lines?date={DATE}&pageSize=1&continuationToken={token}"
        ))
        .await;
    assert_eq!(fresh.status, StatusCode::OK);

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let expired = h.get("practices").await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&expired.body).contains("expired"));

    let h2 = crate::common::Harness {
        token: crate::common::fetch_token(&h.http, &h.emulator).await,
        ..h
    };
    let stale = h2
        .get(&format!(
            "batch/p-0001/invoice_lines?date={DATE}&pageSize=1&continuationToken={token}"
        ))
        .await;
    assert_eq!(stale.status, StatusCode::BAD_REQUEST);
    assert_eq!(stale.json()["error"], "ContinuationTokenExpired");
}
