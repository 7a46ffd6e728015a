//! SMART Health Links over HTTP, in process: the owner's signed routes and
//! the public routes exactly as a viewer of the HL7 specification calls
//! them (status codes, `remainingAttempts`, content types, CORS), with
//! refusals that change nothing. The rules under the relay's clock
//! (expiry, ticket lifetime, parallel guesses) are tested in
//! `domain::links`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use relay_server::{Config, Relay};
use serde_json::{json, Value};
use tower::ServiceExt;
use vault_core::request::{body_digest, RelayOrigin, RequestAuth};
use vault_core::{IdentityInfo, Role, SecretIdentity};
use vault_shl::{jwe, Compression, JweLimits, LinkKey, Manifest};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn origin() -> RelayOrigin {
    RelayOrigin::parse("http://127.0.0.1:8787").unwrap()
}

fn ident(seed: u8, name: &str) -> SecretIdentity {
    SecretIdentity::from_seed(
        &[seed; 32],
        &IdentityInfo {
            display_name: name.into(),
            role: Role::Patient,
            registration: None,
            created_at: now() - 1000,
        },
    )
    .unwrap()
}

struct T {
    router: Router,
    _relay: Relay,
    _dir: tempfile::TempDir,
    patient: SecretIdentity,
    other: SecretIdentity,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn signed(me: &SecretIdentity, method: &str, pq: &str, body: Option<Value>) -> Request<Body> {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    let digest = body_digest(bytes.as_deref().unwrap_or(&[]));
    let auth = RequestAuth::sign(me, method, pq, &origin(), now(), digest).unwrap();
    let mut b = Request::builder().method(method).uri(pq);
    for (k, v) in auth.headers() {
        b = b.header(k, v);
    }
    match bytes {
        Some(bytes) => b
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

fn public(method: &str, pq: &str, ct: Option<&str>, body: &[u8]) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(pq)
        .header("host", "127.0.0.1:8787");
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    b.body(Body::from(body.to_vec())).unwrap()
}

fn manifest_req(id: &str, body: Value) -> Request<Body> {
    public(
        "POST",
        &format!("/v1/shl/{id}"),
        Some("application/json"),
        &serde_json::to_vec(&body).unwrap(),
    )
}

impl T {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_data_dir(dir.path());
        f(&mut config);
        let relay = Relay::open(config).unwrap();
        let t = Self {
            router: relay.router(),
            _relay: relay,
            _dir: dir,
            patient: ident(1, "Pat"),
            other: ident(2, "Other"),
        };
        for me in [&t.patient, &t.other] {
            let a = t
                .call(signed(
                    me,
                    "PUT",
                    "/v1/identities",
                    Some(json!({ "identity": me.public().to_text() })),
                ))
                .await;
            assert!(a.status.is_success(), "{:?}", a.json());
        }
        t
    }

    async fn call(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn create(&self, body: Value) -> Answer {
        self.call(signed(&self.patient, "POST", "/v1/links", Some(body)))
            .await
    }

    async fn list(&self) -> Value {
        let a = self
            .call(signed(&self.patient, "GET", "/v1/links", None))
            .await;
        assert_eq!(a.status, StatusCode::OK);
        a.json()
    }
}

fn file(key: &LinkKey, text: &str) -> Value {
    json!({
        "contentType": "application/fhir+json",
        "jwe": jwe::encrypt(key, "application/fhir+json", text.as_bytes(), Compression::Deflate).unwrap(),
    })
}

#[tokio::test]
async fn a_viewer_gets_the_manifest_and_files_as_the_specification_says() {
    let t = T::new().await;
    let key = LinkKey::generate().unwrap();
    let big = format!(
        r#"{{"resourceType":"Bundle","note":"{}"}}"#,
        "x".repeat(5000)
    );
    let a = t
        .create(json!({
            "files": [file(&key, r#"{"resourceType":"Bundle"}"#), file(&key, &big)],
            "passcode": "open sesame",
            "max_attempts": 3,
            "expires_at": now() + 3600,
        }))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.json());
    let created = a.json();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 43);
    assert_eq!(created["flag"], "P");
    assert_eq!(created["path"], format!("/v1/shl/{id}"));
    let handle = created["handle"].as_str().unwrap().to_string();

    // Wrong passcode: 401 with remainingAttempts, CORS open.
    let a = t
        .call(manifest_req(
            &id,
            json!({"recipient": "Dr A", "passcode": "nope"}),
        ))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["remainingAttempts"], 2);
    assert_eq!(a.headers["access-control-allow-origin"], "*");
    // Right passcode, small embeddedLengthMax: one embedded, one location.
    let small_jwe = jwe::encrypt(
        &key,
        "application/fhir+json",
        br#"{"resourceType":"Bundle"}"#,
        Compression::Deflate,
    )
    .unwrap()
    .len();
    let a = t
        .call(manifest_req(
            &id,
            json!({"recipient": "Dr B", "passcode": "open sesame", "embeddedLengthMax": small_jwe + 10, "unknown": true}),
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(a.headers["cache-control"], "no-store");
    let url = format!("http://127.0.0.1:8787/v1/shl/{id}");
    let m = Manifest::parse(&a.body, &url).unwrap();
    assert_eq!(m.files.len(), 2);
    let embedded = m.files[0].embedded.as_ref().unwrap();
    let d = jwe::decrypt(&key, embedded, &JweLimits::default()).unwrap();
    assert_eq!(d.plaintext, br#"{"resourceType":"Bundle"}"#);
    let location = m.files[1].location.as_ref().unwrap();
    let path = location.strip_prefix("http://127.0.0.1:8787").unwrap();
    let f = t.call(public("GET", path, None, b"")).await;
    assert_eq!(f.status, StatusCode::OK);
    assert_eq!(f.headers["content-type"], "application/jose");
    let d = jwe::decrypt(
        &key,
        std::str::from_utf8(&f.body).unwrap(),
        &JweLimits::default(),
    )
    .unwrap();
    assert_eq!(d.plaintext, big.as_bytes());
    // The right passcode did not use up an attempt.
    let listed = t.list().await;
    assert_eq!(listed["links"][0]["failed_attempts"], 1);
    assert_eq!(listed["links"][0]["status"], "active");
    // The access record.
    let log = t
        .call(signed(
            &t.patient,
            "GET",
            &format!("/v1/links/{handle}/log"),
            None,
        ))
        .await
        .json();
    let events: Vec<(String, String)> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["recipient"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("Dr A".into(), "wrong_passcode".into()),
            ("Dr B".into(), "manifest".into())
        ]
    );
    // Another account sees neither the record nor can revoke.
    let a = t
        .call(signed(
            &t.other,
            "GET",
            &format!("/v1/links/{handle}/log"),
            None,
        ))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = t
        .call(signed(
            &t.other,
            "POST",
            &format!("/v1/links/{handle}/revoke"),
            Some(json!({})),
        ))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // Two more wrong passcodes: the link is disabled (404 afterwards).
    for remaining in [1, 0] {
        let a = t
            .call(manifest_req(
                &id,
                json!({"recipient": "Eve", "passcode": "guess"}),
            ))
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.json()["remainingAttempts"], remaining);
    }
    let a = t
        .call(manifest_req(
            &id,
            json!({"recipient": "Dr B", "passcode": "open sesame"}),
        ))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["error"]["code"], "link_not_found");
    assert_eq!(t.list().await["links"][0]["status"], "disabled");
    // The location given earlier no longer works either.
    assert_eq!(
        t.call(public("GET", path, None, b"")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn revoked_guessed_and_malformed_requests() {
    let t = T::new().await;
    let key = LinkKey::generate().unwrap();
    let created = t.create(json!({"files": [file(&key, "{}")]})).await.json();
    let id = created["id"].as_str().unwrap().to_string();
    let handle = created["handle"].as_str().unwrap().to_string();
    assert_eq!(created["flag"], Value::Null);
    // Without a passcode: served.
    let a = t
        .call(manifest_req(&id, json!({"recipient": "Dr C"})))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // Bad requests: refused before anything is recorded.
    for (body, ct, status) in [
        (
            b"{}".to_vec(),
            Some("application/json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            br#"{"recipient": ""}"#.to_vec(),
            Some("application/json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            br#"{"recipient": 5}"#.to_vec(),
            Some("application/json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            br#"{"recipient": "x", "passcode": 1234}"#.to_vec(),
            Some("application/json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            br#"{"recipient": "x", "embeddedLengthMax": -1}"#.to_vec(),
            Some("application/json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            b"[1]".to_vec(),
            Some("application/json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            b"not json".to_vec(),
            Some("application/json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            br#"{"recipient": "x"}"#.to_vec(),
            Some("text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            br#"{"recipient": "x"}"#.to_vec(),
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            vec![b' '; 20_000],
            Some("application/json"),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let a = t
            .call(public("POST", &format!("/v1/shl/{id}"), ct, &body))
            .await;
        assert_eq!(
            a.status,
            status,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
    }
    // Guessed and malformed ids: 404, as for an inactive link.
    let guess = vault_shl::new_link_id().unwrap();
    for bad in [guess.as_str(), &id[..42], "x", &format!("{id}A")] {
        let a = t.call(manifest_req(bad, json!({"recipient": "Eve"}))).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{bad}");
    }
    assert_eq!(
        t.call(public("GET", &format!("/v1/shl/files/{guess}"), None, b""))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Not a direct-file link: GET is 404.
    let a = t
        .call(public(
            "GET",
            &format!("/v1/shl/{id}?recipient=x"),
            None,
            b"",
        ))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let log = t
        .call(signed(
            &t.patient,
            "GET",
            &format!("/v1/links/{handle}/log"),
            None,
        ))
        .await
        .json();
    assert_eq!(log["events"].as_array().unwrap().len(), 1, "{log}");
    // Revoked: 404; listed as revoked; the charge is given back.
    let a = t
        .call(signed(
            &t.patient,
            "POST",
            &format!("/v1/links/{handle}/revoke"),
            Some(json!({})),
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = t
        .call(manifest_req(&id, json!({"recipient": "Dr C"})))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(t.list().await["links"][0]["status"], "revoked");
    // CORS preflight from any origin.
    let a = t
        .call(public("OPTIONS", &format!("/v1/shl/{id}"), None, b""))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.headers["access-control-allow-origin"], "*");
}

/// A relay that lets one web-app origin call its API (`--allow-origin`)
/// still serves SMART Health Links to viewers on every origin, as the
/// specification expects of a link's host: the API's CORS list applies to
/// the API, not to the public link routes.
#[tokio::test]
async fn links_answer_every_origin_when_the_api_allows_one() {
    let t = T::with(|c| c.allow_origin = vec!["https://app.example.org".into()]).await;
    let key = LinkKey::generate().unwrap();
    let created = t
        .create(json!({"files": [file(&key, r#"{"resourceType":"Bundle"}"#)]}))
        .await
        .json();
    let id = created["id"].as_str().unwrap();
    let from = |method: &str, body: &[u8]| {
        let mut r = public(
            method,
            &format!("/v1/shl/{id}"),
            Some("application/json"),
            body,
        );
        r.headers_mut().insert(
            "origin",
            axum::http::HeaderValue::from_static("https://viewer.elsewhere.example"),
        );
        r
    };
    let mut pre = from("OPTIONS", b"");
    pre.headers_mut().insert(
        "access-control-request-method",
        axum::http::HeaderValue::from_static("POST"),
    );
    pre.headers_mut().insert(
        "access-control-request-headers",
        axum::http::HeaderValue::from_static("content-type"),
    );
    let a = t.call(pre).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.headers["access-control-allow-origin"], "*");
    let a = t
        .call(from("POST", br#"{"recipient":"Elsewhere viewer"}"#))
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{:?}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.headers["access-control-allow-origin"], "*");
    // The API itself still answers only the allowed origin's preflight.
    let mut api = public("OPTIONS", "/v1/links", None, b"");
    api.headers_mut().insert(
        "origin",
        axum::http::HeaderValue::from_static("https://viewer.elsewhere.example"),
    );
    api.headers_mut().insert(
        "access-control-request-method",
        axum::http::HeaderValue::from_static("GET"),
    );
    let a = t.call(api).await;
    assert!(a.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_direct_file_link_and_refused_creations() {
    let t = T::new().await;
    let key = LinkKey::generate().unwrap();
    let created = t
        .create(json!({"files": [file(&key, r#"{"resourceType":"Bundle"}"#)], "direct": true, "long_term": true}))
        .await
        .json();
    assert_eq!(created["flag"], "LU");
    let id = created["id"].as_str().unwrap();
    let a = t
        .call(public("GET", &format!("/v1/shl/{id}"), None, b""))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "recipient is required");
    let a = t
        .call(public(
            "GET",
            &format!("/v1/shl/{id}?recipient=Dr%20U"),
            None,
            b"",
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/jose");
    let d = jwe::decrypt(
        &key,
        std::str::from_utf8(&a.body).unwrap(),
        &JweLimits::default(),
    )
    .unwrap();
    assert_eq!(d.plaintext, br#"{"resourceType":"Bundle"}"#);
    // Refused creations store nothing.
    let before = t.list().await["links"].as_array().unwrap().len();
    let other_alg = format!(
        "{}..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA",
        base64_url(br#"{"alg":"A256KW","enc":"A256GCM","cty":"application/fhir+json"}"#)
    );
    for (body, code) in [
        (json!({"files": []}), "invalid_link"),
        (
            json!({"files": [{"contentType": "application/fhir+json", "jwe": other_alg}]}),
            "invalid_link",
        ),
        (
            json!({"files": [file(&key, "{}")], "expires_at": 5}),
            "invalid_link",
        ),
        (
            json!({"files": [file(&key, "{}")], "passcode": "abc"}),
            "invalid_link",
        ),
        (
            json!({"files": [file(&key, "{}")], "passcode": "abcd", "direct": true}),
            "invalid_link",
        ),
        (
            json!({"files": [file(&key, "{}"), file(&key, "{}")], "direct": true}),
            "invalid_link",
        ),
        (
            json!({"files": [file(&key, "{}")], "surprise": 1}),
            "bad_json",
        ),
    ] {
        let a = t.create(body).await;
        assert!(a.status.is_client_error(), "{:?}", a.json());
        assert_eq!(a.json()["error"]["code"], code, "{:?}", a.json());
    }
    assert_eq!(t.list().await["links"].as_array().unwrap().len(), before);
    // Unsigned owner routes are refused.
    let a = t.call(public("GET", "/v1/links", None, b"")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
