//! `vault_client::links::resolve` (the viewer with no account) against a
//! small hostile host: every bad answer the issue names is refused with a
//! clear error, and nothing is fetched from another host.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use vault_client::links::resolve;
use vault_client::ClientError;
use vault_shl::{jwe, Compression, Flags, LinkKey, Payload, ShlError};

/// What the host answers to a manifest request.
#[derive(Clone)]
enum Answer {
    Manifest(Value),
    Status(StatusCode, Value),
}

struct Host {
    base: String,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
    file_requests: Arc<AtomicUsize>,
    file: Arc<Mutex<String>>,
}

async fn host() -> Host {
    let answer = Arc::new(Mutex::new(Answer::Manifest(json!({"files": []}))));
    let requests = Arc::new(AtomicUsize::new(0));
    let file_requests = Arc::new(AtomicUsize::new(0));
    let file = Arc::new(Mutex::new(String::new()));
    let (a, r, fr, f) = (
        answer.clone(),
        requests.clone(),
        file_requests.clone(),
        file.clone(),
    );
    let app = Router::new()
        .route(
            "/v1/shl/{id}",
            post(move || {
                let (a, r) = (a.clone(), r.clone());
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    let answer = a.lock().unwrap().clone();
                    match answer {
                        Answer::Manifest(v) => axum::Json(v).into_response(),
                        Answer::Status(s, v) => (s, axum::Json(v)).into_response(),
                    }
                }
            }),
        )
        .route(
            "/v1/shl/files/{t}",
            get(move || {
                let (fr, f) = (fr.clone(), f.clone());
                async move {
                    fr.fetch_add(1, Ordering::SeqCst);
                    let body = f.lock().unwrap().clone();
                    Response::builder()
                        .header("content-type", "application/jose")
                        .body(axum::body::Body::from(body))
                        .unwrap()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Host {
        base,
        answer,
        requests,
        file_requests,
        file,
    }
}

fn link(host: &Host, key: &LinkKey, passcode: bool, exp: Option<u64>) -> String {
    Payload {
        url: format!("{}/v1/shl/{}", host.base, vault_shl::new_link_id().unwrap()),
        key: key.clone(),
        exp,
        flags: Flags {
            long_term: false,
            passcode,
            direct: false,
        },
        label: Some("test".into()),
    }
    .to_shlink()
    .unwrap()
    .to_string()
}

fn now() -> u64 {
    vault_client::system_now()
}

fn set(host: &Host, a: Answer) {
    *host.answer.lock().unwrap() = a;
}

fn embedded(jwe: &str) -> Value {
    json!({"files": [{"contentType": "application/fhir+json", "embedded": jwe}]})
}

#[tokio::test]
async fn a_good_link_resolves() {
    let h = host().await;
    let key = LinkKey::generate().unwrap();
    let small = jwe::encrypt(
        &key,
        "application/fhir+json",
        br#"{"resourceType":"Bundle"}"#,
        Compression::Deflate,
    )
    .unwrap();
    *h.file.lock().unwrap() = jwe::encrypt(
        &key,
        "application/fhir+json",
        b"{\"n\":2}",
        Compression::None,
    )
    .unwrap();
    set(
        &h,
        Answer::Manifest(json!({"files": [
            {"contentType": "application/fhir+json", "embedded": small},
            {"contentType": "application/fhir+json", "location": format!("{}/v1/shl/files/abc", h.base)},
        ]})),
    );
    let r = resolve(&link(&h, &key, false, None), "Dr A", None, now())
        .await
        .unwrap();
    assert_eq!(r.files.len(), 2);
    assert_eq!(r.files[0].plaintext, br#"{"resourceType":"Bundle"}"#);
    assert_eq!(r.files[1].plaintext, b"{\"n\":2}");
    assert_eq!(r.payload.label.as_deref(), Some("test"));
}

#[tokio::test]
async fn hostile_answers_are_refused() {
    let h = host().await;
    let key = LinkKey::generate().unwrap();
    let l = link(&h, &key, false, None);
    let err = |e: ClientError| e.to_string();

    // A file location on another host: refused, never fetched.
    set(
        &h,
        Answer::Manifest(json!({"files": [{"contentType": "application/fhir+json",
            "location": "http://127.0.0.2:9/v1/shl/files/x"}]})),
    );
    let e = resolve(&l, "Dr A", None, now()).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Link(ShlError::MalformedManifest(_))),
        "{e}"
    );
    assert!(err(e).contains("another host"));
    assert_eq!(h.file_requests.load(Ordering::SeqCst), 0);

    // Another algorithm, a wrong tag, a cty that is not the manifest's.
    let other = format!(
        "{}..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA",
        base64_url(br#"{"alg":"RSA-OAEP","enc":"A256GCM","cty":"application/fhir+json"}"#)
    );
    set(&h, Answer::Manifest(embedded(&other)));
    let e = resolve(&l, "Dr A", None, now()).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Link(ShlError::UnsupportedAlgorithm(_))),
        "{e}"
    );
    let good = jwe::encrypt(&key, "application/fhir+json", b"{}", Compression::None).unwrap();
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    set(&h, Answer::Manifest(embedded(&tampered)));
    let e = resolve(&l, "Dr A", None, now()).await.unwrap_err();
    assert!(matches!(e, ClientError::Link(_)), "{e}");
    let card = jwe::encrypt(
        &key,
        "application/smart-health-card",
        b"{}",
        Compression::None,
    )
    .unwrap();
    set(&h, Answer::Manifest(embedded(&card)));
    let e = resolve(&l, "Dr A", None, now()).await.unwrap_err();
    assert!(err(e).contains("cty"));

    // A zip bomb: 40 MiB of zeros in a few KiB, past the 32 MiB limit.
    let bomb = jwe::encrypt(
        &key,
        "application/fhir+json",
        &vec![0u8; 40 << 20],
        Compression::Deflate,
    )
    .unwrap();
    assert!(bomb.len() < 200_000);
    set(&h, Answer::Manifest(embedded(&bomb)));
    let e = resolve(&l, "Dr A", None, now()).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Link(ShlError::TooLarge { .. })),
        "{e}"
    );

    // Not a manifest.
    set(&h, Answer::Manifest(json!({"files": "none"})));
    assert!(matches!(
        resolve(&l, "Dr A", None, now()).await.unwrap_err(),
        ClientError::Link(ShlError::MalformedManifest(_))
    ));
}

#[tokio::test]
async fn passcodes_expiry_and_inactive_links() {
    let h = host().await;
    let key = LinkKey::generate().unwrap();
    let p = link(&h, &key, true, None);
    // Flag P without a passcode: refused before asking.
    let before = h.requests.load(Ordering::SeqCst);
    assert!(matches!(
        resolve(&p, "Dr A", None, now()).await.unwrap_err(),
        ClientError::LinkPasscode { remaining: None }
    ));
    set(
        &h,
        Answer::Status(StatusCode::UNAUTHORIZED, json!({"remainingAttempts": 3})),
    );
    let e = resolve(&p, "Dr A", Some("nope".to_string().into()), now())
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::LinkPasscode { remaining: Some(3) }),
        "{e}"
    );
    assert!(e.to_string().contains("3 attempts remain"));
    set(&h, Answer::Status(StatusCode::NOT_FOUND, json!({})));
    let e = resolve(&p, "Dr A", Some("x".to_string().into()), now())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::LinkNotActive(_)), "{e}");
    assert_eq!(h.requests.load(Ordering::SeqCst), before + 2);
    // An expired link is not even asked for.
    let old = link(&h, &key, false, Some(now() - 1));
    assert!(matches!(
        resolve(&old, "Dr A", None, now()).await.unwrap_err(),
        ClientError::LinkNotActive(_)
    ));
    assert_eq!(h.requests.load(Ordering::SeqCst), before + 2);
    // Malformed and truncated links.
    for bad in [
        "shlink:/",
        "shlink:/eyJ1cmwi",
        &p[..p.len() - 5],
        "https://x.example/#nothing",
    ] {
        assert!(
            matches!(
                resolve(bad, "Dr A", None, now()).await.unwrap_err(),
                ClientError::Link(_)
            ),
            "{bad}"
        );
    }
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
