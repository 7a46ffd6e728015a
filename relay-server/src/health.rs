//! Whether the relay can reach its storage: a probe every
//! [`PROBE_INTERVAL`] pings the database and the object store
//! ([`crate::storage::MetaStore::ping`], [`crate::storage::BlobStore::ping`];
//! no-ops for SQLite and files). A store that failed [`FAILURES_TO_DOWN`]
//! probes in a row is *down*: `/healthz` answers `503` with `"status":
//! "degraded"` (so a load balancer takes the instance out of rotation),
//! `/metrics` shows `relay_backend_up{backend=…} 0` and counts the failures
//! by reason, and requests that need the store are answered `503
//! unavailable` with `retry-after` at once, before anything is done. One
//! successful probe brings it back. Nothing is acknowledged while a store
//! is down, so nothing acknowledged can be lost.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::metrics::{BackendFailureLabels, BackendLabels, Metrics};
use crate::storage::{BlobStore, MetaStore, StorageError};

/// Time between two probes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The longest one ping may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Failed probes in a row that make a store *down*.
pub const FAILURES_TO_DOWN: u32 = 2;

/// One store's health.
#[derive(Default)]
struct Store {
    down: AtomicBool,
    failures: AtomicU32,
    reason: Mutex<Option<String>>,
}

impl Store {
    fn record(&self, name: &'static str, outcome: Result<(), Failed>, metrics: &Metrics) {
        let labels = BackendLabels { backend: name };
        match outcome {
            Ok(()) => {
                self.failures.store(0, Ordering::Relaxed);
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::warn!(backend = name, "storage reachable again; serving");
                }
                *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = None;
                metrics.backend_up.get_or_create(&labels).set(1);
            }
            Err(failed) => {
                metrics
                    .backend_failures
                    .get_or_create(&BackendFailureLabels {
                        backend: name,
                        reason: failed.kind(),
                    })
                    .inc();
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                let text = failed.to_string();
                if n >= FAILURES_TO_DOWN {
                    if !self.down.swap(true, Ordering::Relaxed) {
                        tracing::error!(backend = name, reason = %text, "storage unreachable; answering 503 until it is back");
                    }
                    metrics.backend_up.get_or_create(&labels).set(0);
                }
                *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
            }
        }
    }

    fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("no answer within {} seconds", PROBE_TIMEOUT.as_secs())]
    Timeout,
    #[error("{0}")]
    Error(StorageError),
}

impl Failed {
    /// The metric label: `timeout`, `unreachable` or `error`.
    fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Error(e) if e.unavailable => "unreachable",
            Self::Error(_) => "error",
        }
    }
}

/// The relay's view of its storage's health (see the module doc).
#[derive(Default)]
pub struct Health {
    database: Store,
    blobs: Store,
}

impl Health {
    /// Everything assumed up until a probe says otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pings both stores once (each within [`PROBE_TIMEOUT`]) and records
    /// the outcome.
    pub async fn probe(&self, meta: &dyn MetaStore, blobs: &dyn BlobStore, metrics: &Metrics) {
        let (m, b) = tokio::join!(
            tokio::time::timeout(PROBE_TIMEOUT, meta.ping()),
            tokio::time::timeout(PROBE_TIMEOUT, blobs.ping()),
        );
        let outcome = |r: Result<Result<(), StorageError>, tokio::time::error::Elapsed>| match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failed::Error(e)),
            Err(_) => Err(Failed::Timeout),
        };
        self.database.record("database", outcome(m), metrics);
        self.blobs.record("blobs", outcome(b), metrics);
    }

    /// Whether the database is down (failed [`FAILURES_TO_DOWN`] probes in
    /// a row, and none succeeded since).
    pub fn database_down(&self) -> bool {
        self.database.down.load(Ordering::Relaxed)
    }

    /// Whether the blob store is down.
    pub fn blobs_down(&self) -> bool {
        self.blobs.down.load(Ordering::Relaxed)
    }

    /// The stores that are down, by name (`database`, `blobs`).
    pub fn down(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.database_down() {
            out.push("database");
        }
        if self.blobs_down() {
            out.push("blobs");
        }
        out
    }

    /// The `/healthz` answer: `200 {"status":"ok"}`, or `503
    /// {"status":"degraded","unavailable":[…]}` with `retry-after`; with
    /// `detail` (the admin listener only), each failing store's last error
    /// (no credentials: storage errors never carry them).
    pub fn report(&self, detail: bool) -> axum::response::Response {
        use axum::http::{header, HeaderValue, StatusCode};
        use axum::response::IntoResponse;
        let down = self.down();
        if down.is_empty() {
            return axum::Json(serde_json::json!({"status": "ok"})).into_response();
        }
        let body = if detail {
            serde_json::json!({
                "status": "degraded",
                "unavailable": down,
                "reasons": {
                    "database": self.database.reason(),
                    "blobs": self.blobs.reason(),
                },
            })
        } else {
            serde_json::json!({"status": "degraded", "unavailable": down})
        };
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::error::STORAGE_RETRY_AFTER),
        );
        resp
    }
}
