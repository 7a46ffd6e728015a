//! `vault pull` against a hostile or failing FHIR server (a small axum
//! server in this test): malformed Bundles and NDJSON lines, resources over
//! the size limit, `next` links that loop or leave the host, an export that
//! never finishes, 429 with `Retry-After`, 5xx, truncated downloads. Each
//! is a clear error or a bounded retry; nothing half-parsed is yielded or
//! filed; an interrupted pull resumes by running it again.
//!
//! Most cases drive the fetching half (`vault_client::fhir_pull::FhirPull`)
//! directly; the resume case runs the real `vault` binary and relay.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use vault_client::fhir_pull::{
    Credentials, Cursor, FhirPull, FhirPullError, FhirSource, Limits, Mode, PullOptions,
    PullProgress,
};
use vault_client::RetryPolicy;
use vault_tests::{CliProfile, RelayProcess};

/// What the hostile server does, per test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Act {
    /// Page 1 valid with a next link to page 2, page 2 valid.
    TwoPages,
    /// Page 2 is not JSON.
    BadSecondPage,
    /// A page whose second entry is not a resource.
    BadEntry,
    /// Page 1 → page 2 → page 1.
    LoopingPages,
    /// Page 1's next link is on another host.
    ForeignNext,
    /// A resource larger than the test's limit.
    HugeResource,
    /// 429 with Retry-After: 1 twice, then page 1 alone.
    TooManyRequests,
    /// 503 always.
    Unavailable,
    /// Bulk: an NDJSON file whose second line is garbage.
    BadLine,
    /// Bulk: the status URL answers 202 for ever.
    EndlessExport,
    /// Bulk: the manifest announces 3 lines, the file has 2.
    ShortFile,
    /// Bulk: the connection breaks mid-file.
    BrokenFile,
    /// Bulk: a file on another host.
    ForeignFile,
}

#[derive(Clone)]
struct Server {
    base: Arc<String>,
    act: Arc<Mutex<Act>>,
    hits: Arc<AtomicUsize>,
}

fn resource(i: usize) -> Value {
    json!({
        "resourceType": "Observation",
        "id": format!("obs-{i}"),
        "meta": {"versionId": "1", "lastUpdated": format!("2026-01-0{}T00:00:00Z", 1 + i % 9)},
        "status": "final",
        "code": {"text": format!("Result {i}")},
        "subject": {"reference": "Patient/p1"}
    })
}

fn page(range: std::ops::Range<usize>, next: Option<String>) -> Value {
    let mut b = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": range.map(|i| json!({"resource": resource(i)})).collect::<Vec<_>>(),
    });
    if let Some(n) = next {
        b["link"] = json!([{"relation": "next", "url": n}]);
    }
    b
}

fn fhir_json(v: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/fhir+json")],
        v.to_string(),
    )
        .into_response()
}

async fn everything(
    State(s): State<Server>,
    Path((_id, op)): Path<(String, String)>,
    query: axum::extract::RawQuery,
) -> Response {
    assert_eq!(op, "$everything");
    let n = s.hits.fetch_add(1, Ordering::SeqCst);
    let act = *s.act.lock().unwrap();
    let second = query.0.as_deref().is_some_and(|q| q.contains("page=2"));
    let p2 = format!("{}Patient/p1/$everything?page=2", s.base);
    let p1 = format!("{}Patient/p1/$everything", s.base);
    match act {
        Act::TwoPages if second => fhir_json(&page(3..5, None)),
        Act::TwoPages => fhir_json(&page(0..3, Some(p2))),
        Act::BadSecondPage if second => (
            [(header::CONTENT_TYPE, "application/fhir+json")],
            "{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":",
        )
            .into_response(),
        Act::BadSecondPage => fhir_json(&page(0..3, Some(p2))),
        Act::BadEntry => {
            let mut b = page(0..2, None);
            b["entry"][1]["resource"]["resourceType"] = json!(42);
            fhir_json(&b)
        }
        Act::LoopingPages if second => fhir_json(&page(3..4, Some(p1))),
        Act::LoopingPages => fhir_json(&page(0..3, Some(p2))),
        Act::ForeignNext => fhir_json(&page(0..3, Some("http://elsewhere.example/fhir/p2".into()))),
        Act::HugeResource => {
            let mut b = page(0..1, None);
            b["entry"][0]["resource"]["note"] = json!([{"text": "x".repeat(4096)}]);
            fhir_json(&b)
        }
        Act::TooManyRequests if n < 2 => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "slow down",
        )
            .into_response(),
        Act::TooManyRequests => fhir_json(&page(0..3, None)),
        Act::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn kick_off(State(s): State<Server>, headers: HeaderMap) -> Response {
    assert_eq!(
        headers.get("prefer").and_then(|v| v.to_str().ok()),
        Some("respond-async")
    );
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_LOCATION, format!("{}status/job1", s.base))],
    )
        .into_response()
}

async fn status(State(s): State<Server>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let act = *s.act.lock().unwrap();
    if act == Act::EndlessExport {
        return (
            StatusCode::ACCEPTED,
            [("x-progress", "still working (40%)"), ("retry-after", "1")],
        )
            .into_response();
    }
    let url = if act == Act::ForeignFile {
        "http://elsewhere.example/file.ndjson".to_owned()
    } else {
        format!("{}files/Observation.ndjson", s.base)
    };
    let count = if act == Act::ShortFile { 3 } else { 2 };
    Json(json!({
        "transactionTime": "2026-12-01T00:00:00Z",
        "request": format!("{}Patient/$export", s.base),
        "requiresAccessToken": true,
        "output": [{"type": "Observation", "url": url, "count": count}],
        "error": []
    }))
    .into_response()
}

async fn file(State(s): State<Server>) -> Response {
    let act = *s.act.lock().unwrap();
    let line = |i| format!("{}\n", resource(i));
    match act {
        Act::BadLine => format!("{}{{\"resourceType\":\"Observ\n", line(0)).into_response(),
        Act::HugeResource => format!(
            "{}\n",
            json!({"resourceType":"Observation","id":"big","subject":{"reference":"Patient/p1"},"note":[{"text":"x".repeat(4096)}]})
        )
        .into_response(),
        Act::BrokenFile => {
            // The first line goes out (flushed), then the connection breaks.
            let first = line(0);
            let chunks = futures_util::stream::unfold(0u8, move |step| {
                let first = first.clone();
                async move {
                    match step {
                        0 => Some((Ok(Bytes::from(first)), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Some((Err(std::io::Error::other("connection cut")), 2))
                        }
                        _ => None,
                    }
                }
            });
            Body::from_stream(chunks).into_response()
        }
        _ => format!("{}{}", line(0), line(1)).into_response(),
    }
}

/// Starts the hostile server doing `act`; returns it and the runtime it
/// runs on (which also drives the pulls).
fn start(act: Act) -> (Server, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server {
        base: Arc::new(format!("http://{addr}/fhir/")),
        act: Arc::new(Mutex::new(act)),
        hits: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route("/fhir/Patient/{id}/{op}", get(everything))
        .route("/fhir/Patient/$export", get(kick_off))
        .route(
            "/fhir/status/job1",
            get(status).delete(|| async { StatusCode::ACCEPTED }),
        )
        .route("/fhir/files/Observation.ndjson", get(file))
        .with_state(server.clone());
    rt.spawn(async move { axum::serve(listener, app).await });
    (server, rt)
}

fn options(mode: Mode) -> PullOptions {
    let mut o = PullOptions::new(mode);
    o.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
    };
    o.bulk_wait = Duration::from_secs(3);
    o.limits = Limits {
        max_resource_bytes: 2048,
        ..Limits::default()
    };
    o
}

/// Pulls until done or an error: the resources yielded, the outcome (the
/// cursor, or the error) and the progress reported.
fn drain(
    server: &Server,
    rt: &tokio::runtime::Runtime,
    options: PullOptions,
) -> (
    Vec<String>,
    Result<Option<Cursor>, FhirPullError>,
    Vec<PullProgress>,
) {
    let source = FhirSource::new(&server.base, "p1").unwrap();
    let mut events = Vec::new();
    let mut ids = Vec::new();
    let outcome = rt.block_on(async {
        let mut pull =
            FhirPull::start(source, Credentials::None, options, &mut |p| events.push(p)).await?;
        while let Some(batch) = pull.next_batch(&mut |p| events.push(p)).await? {
            ids.extend(batch.into_iter().filter_map(|r| r.id));
        }
        Ok(pull.cursor())
    });
    (ids, outcome, events)
}

#[test]
fn malformed_pages_and_lines_are_refused_whole() {
    // A page cut off mid-JSON: the first page's resources came, none of
    // the second's.
    let (server, rt) = start(Act::BadSecondPage);
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Everything));
    assert_eq!(ids, ["obs-0", "obs-1", "obs-2"]);
    let e = outcome.unwrap_err();
    assert!(matches!(e, FhirPullError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("page 2"), "{e}");

    // One bad entry spoils its page: nothing of it is yielded.
    *server.act.lock().unwrap() = Act::BadEntry;
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Everything));
    assert!(ids.is_empty());
    assert!(matches!(outcome, Err(FhirPullError::Malformed { .. })));

    // A garbage NDJSON line: the good line before it is not yielded either.
    *server.act.lock().unwrap() = Act::BadLine;
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Bulk));
    assert!(ids.is_empty(), "{ids:?}");
    let e = outcome.unwrap_err();
    assert!(matches!(e, FhirPullError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn resources_over_the_limit_are_refused() {
    let (server, rt) = start(Act::HugeResource);
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Everything));
    assert!(ids.is_empty());
    assert!(matches!(
        outcome,
        Err(FhirPullError::TooLarge { limit: 2048, .. })
    ));
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Bulk));
    assert!(ids.is_empty());
    assert!(matches!(
        outcome,
        Err(FhirPullError::TooLarge { limit: 2048, .. })
    ));
}

#[test]
fn links_that_loop_or_leave_the_host_are_not_followed() {
    let (server, rt) = start(Act::LoopingPages);
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Everything));
    assert_eq!(ids.len(), 4, "both pages once");
    assert!(matches!(outcome, Err(FhirPullError::Paging(_))));
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "page 1 not fetched again"
    );

    *server.act.lock().unwrap() = Act::ForeignNext;
    let (_, outcome, _) = drain(&server, &rt, options(Mode::Everything));
    let e = outcome.unwrap_err();
    assert!(
        matches!(e, FhirPullError::ForeignLink { what: "next", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("elsewhere.example"));

    *server.act.lock().unwrap() = Act::ForeignFile;
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Bulk));
    assert!(ids.is_empty());
    assert!(matches!(
        outcome,
        Err(FhirPullError::ForeignLink {
            what: "bulk file",
            ..
        })
    ));
}

#[test]
fn an_export_that_never_finishes_is_abandoned() {
    let (server, rt) = start(Act::EndlessExport);
    let (ids, outcome, events) = drain(&server, &rt, options(Mode::Bulk));
    assert!(ids.is_empty());
    assert!(matches!(outcome, Err(FhirPullError::ExportTimeout { .. })));
    // Polled as Retry-After asked, a bounded number of times, with the
    // server's progress text shown.
    let polls = server.hits.load(Ordering::SeqCst);
    assert!((2..=5).contains(&polls), "{polls} polls in a 3 s wait");
    let waiting: Vec<&PullProgress> = events
        .iter()
        .filter(|e| matches!(e, PullProgress::ExportWaiting { .. }))
        .collect();
    assert!(!waiting.is_empty());
    for e in waiting {
        if let PullProgress::ExportWaiting {
            progress,
            next_poll,
        } = e
        {
            assert_eq!(progress.as_deref(), Some("still working (40%)"));
            assert!(*next_poll <= Duration::from_secs(1));
        }
    }
}

#[test]
fn busy_and_failing_servers_get_bounded_retries() {
    // 429 twice with Retry-After: 1, then the page.
    let (server, rt) = start(Act::TooManyRequests);
    let (ids, outcome, events) = drain(&server, &rt, options(Mode::Everything));
    assert_eq!(ids.len(), 3);
    assert!(outcome.is_ok());
    let retries: Vec<(Option<u16>, Duration)> = events
        .iter()
        .filter_map(|e| match e {
            PullProgress::Retrying { status, delay, .. } => Some((*status, *delay)),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 2);
    assert!(retries
        .iter()
        .all(|(s, d)| *s == Some(429) && *d >= Duration::from_secs(1)));

    // 503 for ever: the policy's three attempts, then a clear error.
    *server.act.lock().unwrap() = Act::Unavailable;
    server.hits.store(0, Ordering::SeqCst);
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Everything));
    assert!(ids.is_empty());
    let e = outcome.unwrap_err();
    assert!(
        matches!(e, FhirPullError::Status { status: 503, .. }),
        "{e}"
    );
    assert!(e.is_transient());
    assert!(e.to_string().contains("try again later"), "{e}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
}

#[test]
fn truncated_downloads_are_errors_and_leave_no_cursor() {
    let (server, rt) = start(Act::ShortFile);
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Bulk));
    // The file as a whole is short: none of its batch is yielded.
    assert!(ids.is_empty());
    let e = outcome.unwrap_err();
    assert!(matches!(e, FhirPullError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("announced 3"), "{e}");

    *server.act.lock().unwrap() = Act::BrokenFile;
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Bulk));
    assert!(
        ids.is_empty(),
        "the complete line before the break is not yielded alone"
    );
    assert!(
        matches!(outcome, Err(FhirPullError::Truncated { .. })),
        "{outcome:?}"
    );

    // A whole export: its transactionTime is the cursor.
    *server.act.lock().unwrap() = Act::TwoPages;
    let (ids, outcome, _) = drain(&server, &rt, options(Mode::Bulk));
    assert_eq!(ids.len(), 2);
    assert_eq!(
        outcome.unwrap().map(|c| c.as_str().to_owned()).as_deref(),
        Some("2026-12-01T00:00:00Z")
    );
}

#[test]
fn an_interrupted_pull_files_only_whole_pages_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let (server, _rt) = start(Act::BadSecondPage);
    let p = CliProfile::new(&dir.path().join("patient"), &relay.url);
    p.init("Patient", "patient");
    p.json(&["create"]);
    let base = server.base.trim_end_matches('/').to_owned();
    let args = ["pull", "--fhir", base.as_str(), "--patient", "p1"];

    let r = p.refused(&args);
    assert_eq!(r.code, "fhir_malformed");
    assert!(
        r.message.contains("nothing from it was filed"),
        "{}",
        r.message
    );
    let ids = |p: &CliProfile| -> Vec<String> {
        let mut v: Vec<String> = p
            .json(&["list"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| vault_fhir::resource_key(r["content_type"].as_str()?))
            .map(|(_, id)| id)
            .collect();
        v.sort();
        v
    };
    // Page 1 was whole and is filed; page 2 was not; no cursor yet.
    assert_eq!(ids(&p), ["obs-0", "obs-1", "obs-2"]);
    assert!(p.run(&["list", "-c", "pull-sources"]).code != 0);

    // The server is fixed: the same command resumes, adding only page 2.
    *server.act.lock().unwrap() = Act::TwoPages;
    let report = p.json(&args);
    assert_eq!(report["added"], 2);
    assert_eq!(report["unchanged"], 3);
    assert_eq!(ids(&p), ["obs-0", "obs-1", "obs-2", "obs-3", "obs-4"]);
    assert_eq!(report["cursor"], "2026-01-05T00:00:00Z");
}
