//! Prometheus metrics: requests by route and status, latency, bytes stored,
//! group-commit batch sizes, storage health and vault-state catch-ups. Labels are route templates
//! (`/v1/vaults/{vault}/log`), never ids, keys or bodies.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Response status.
    pub status: u16,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
}

/// Labels of a storage backend's health.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `database` or `blobs`.
    pub backend: &'static str,
}

/// Labels of a failed health probe.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendFailureLabels {
    /// `database` or `blobs`.
    pub backend: &'static str,
    /// `unreachable` (connection refused or lost, shutting down),
    /// `timeout` (no answer in time) or `error` (it answered with an
    /// error).
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The relay's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Latency until the response starts, seconds, by route.
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Bytes charged to accounts ([`crate::storage::MetaStore::stored_bytes`]:
    /// identities, log entries, blobs and unfinished uploads), refreshed on
    /// scrape.
    pub bytes_stored: Gauge,
    /// Writes per group commit.
    pub batch_sizes: Histogram,
    /// Blob bytes received.
    pub blob_bytes_in: Counter,
    /// 1 while a storage backend answers its health probe, 0 while it is
    /// down ([`crate::health`]).
    pub backend_up: Family<BackendLabels, Gauge>,
    /// Failed health probes by backend and reason.
    pub backend_failures: Family<BackendFailureLabels, Counter>,
    /// Cached vault states brought up to entries another relay stored
    /// (several relays over one database).
    pub vault_catch_ups: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("relay");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let bytes_stored = Gauge::default();
        let batch_sizes = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let blob_bytes_in = Counter::default();
        let backend_up = Family::<BackendLabels, Gauge>::default();
        let backend_failures = Family::<BackendFailureLabels, Counter>::default();
        let vault_catch_ups = Counter::default();
        registry.register(
            "backend_up",
            "1 while the storage backend answers its health probe, 0 while it is down",
            backend_up.clone(),
        );
        registry.register(
            "backend_probe_failures",
            "Failed storage health probes, by backend and reason",
            backend_failures.clone(),
        );
        registry.register(
            "vault_catch_ups",
            "Cached vault states brought up to entries another relay stored",
            vault_catch_ups.clone(),
        );
        registry.register("requests", "HTTP requests", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time until the response starts",
            latency.clone(),
        );
        registry.register(
            "stored_bytes",
            "Bytes charged to accounts (identities, log entries, blobs, unfinished uploads)",
            bytes_stored.clone(),
        );
        registry.register(
            "group_commit_batch_size",
            "Writes made durable by one fsync'd commit",
            batch_sizes.clone(),
        );
        registry.register(
            "blob_received_bytes",
            "Blob bytes received",
            blob_bytes_in.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            bytes_stored,
            batch_sizes,
            blob_bytes_in,
            backend_up,
            backend_failures,
            vault_catch_ups,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
