//! The operator's listener: `/metrics` (Prometheus text) and `/healthz`,
//! served only on `--admin-listen` and never on the public listener, since
//! request counts and latencies tell an observer when people use the relay.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// The admin router: `GET /metrics` and `GET /healthz`; anything else is
/// `404 not_found`. It has no authentication of its own: bind it to a
/// private address (loopback, or a monitoring network).
pub fn admin_router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|State(app): State<Arc<AppState>>| async move { app.health.report(true) }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "the admin listener serves /metrics and /healthz only",
            )
        })
        .with_state(app)
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    if let Ok(bytes) = app.meta.stored_bytes().await {
        app.metrics
            .bytes_stored
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    let mut resp = app.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
