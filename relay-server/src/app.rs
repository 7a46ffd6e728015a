//! The router: routes, authentication, timeouts, concurrency limit,
//! metrics and request logs.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::auth::Authenticator;
use crate::error::ApiError;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::routes::{blobs, identities, inbox, links, pairings, vaults};
use crate::state::AppState;
use crate::storage::NonceClaim;

/// The OpenAPI description of this API (checked in; a test keeps it in
/// step with the router).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Builds the relay's router over its state.
pub fn router(app: Arc<AppState>) -> Router {
    let signed = Router::new()
        .route("/v1/identities/{fingerprint}", get(identities::lookup))
        .route(
            "/v1/identities/{fingerprint}/devices",
            get(identities::device_lists).put(identities::publish_device_lists),
        )
        .route("/v1/vaults", post(vaults::create))
        .route("/v1/vaults/{vault}/head", get(vaults::head))
        .route(
            "/v1/vaults/{vault}/log",
            get(vaults::log).post(vaults::append),
        )
        .route("/v1/vaults/{vault}/repair", post(vaults::repair))
        .route("/v1/vaults/{vault}/blobs", post(blobs::put_batch))
        .route("/v1/vaults/{vault}/blobs/read", post(blobs::read_batch))
        .route(
            "/v1/vaults/{vault}/blobs/{hash}",
            put(blobs::put).get(blobs::get),
        )
        .route(
            "/v1/vaults/{vault}/blobs/{hash}/upload",
            get(blobs::upload_status),
        )
        .route("/v1/inbox", get(inbox::inbox))
        .route(
            "/v1/inbox/accepted",
            get(inbox::accepted).put(inbox::set_accepted),
        )
        .route("/v1/links", get(links::list).post(links::create))
        .route("/v1/links/{handle}/revoke", post(links::revoke))
        .route("/v1/links/{handle}/log", get(links::log))
        .route(
            "/v1/pairings/{slot}",
            put(pairings::open)
                .get(pairings::status)
                .delete(pairings::close),
        )
        .route("/v1/pairings/{slot}/join", post(pairings::join))
        .route("/v1/pairings/{slot}/nonce", post(pairings::nonce))
        .route("/v1/pairings/{slot}/reveal", post(pairings::reveal))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));

    let mut api = Router::new()
        .route(
            "/healthz",
            get(|State(app): State<Arc<AppState>>| async move { app.health.report(false) }),
        )
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/identities", put(identities::publish))
        .merge(signed)
        .route_layer(middleware::from_fn(note_route))
        .method_not_allowed_fallback(method_not_allowed);
    api = match &app.config.web_dir {
        Some(dir) => api.fallback(web_app(dir)),
        None => api.fallback(|| async {
            ApiError::not_found("not_found", "no such route; see /v1/openapi.json")
        }),
    };
    // The API's CORS list (`--allow-origin`) covers the API and the web
    // app only: the public link routes answer every origin themselves, as
    // a SMART Health Link's host must for viewers hosted anywhere.
    if !app.config.allow_origin.is_empty() {
        api = api.layer(cors(&app.config.allow_origin));
    }
    let router = Router::new()
        // SMART Health Links' public side: no account, any origin.
        .route(
            "/v1/shl/{id}",
            post(links::manifest)
                .get(links::direct)
                .options(links::preflight),
        )
        .route(
            "/v1/shl/files/{ticket}",
            get(links::file).options(links::preflight),
        )
        .route_layer(middleware::from_fn(note_route))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback_service(api.with_state(app.clone()));
    router
        .layer(middleware::from_fn_with_state(app.clone(), timeout))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(GlobalConcurrencyLimitLayer::new(app.config.concurrency))
        .with_state(app)
}

/// The answer to a method a route does not take.
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

/// Lets the named origins' pages call the API (a web app hosted elsewhere):
/// the signed-request headers may be sent, and the headers clients read
/// (retry, upload position, ranges) may be read. No credentials: requests
/// are authorised by signatures, never cookies.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let names = |list: &[&'static str]| -> Vec<header::HeaderName> {
        list.iter()
            .map(|n| header::HeaderName::from_static(n))
            .collect()
    };
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers(names(&[
            "content-type",
            "range",
            "content-range",
            "upload-length",
            "upload-offset",
            crate::admission::INVITE_HEADER,
            vault_core::request::HEADER_IDENTITY,
            vault_core::request::HEADER_TIMESTAMP,
            vault_core::request::HEADER_NONCE,
            vault_core::request::HEADER_CONTENT_SHA256,
            vault_core::request::HEADER_RELAY,
            vault_core::request::HEADER_SIGNATURE,
        ]))
        .expose_headers(names(&[
            "retry-after",
            "content-range",
            "upload-offset",
            "upload-length",
            "location",
        ]))
        .max_age(std::time::Duration::from_secs(600))
}

/// The Content-Security-Policy of the patient web app: its own scripts,
/// styles and WebAssembly only, requests to this origin only, no frames,
/// no forms, no plugins. With the Subresource Integrity the page pins its
/// scripts by, a script injected into or swapped in the bundle does not
/// run (see SECURITY.md on what a tampering relay can still do).
pub const WEB_CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; worker-src blob:; \
object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// Serves the web app's static files from `dir` with its security headers;
/// every response is revalidated (`no-cache`), so a redeployed bundle is
/// picked up at the next load.
fn web_app(dir: &std::path::Path) -> axum::routing::MethodRouter<Arc<AppState>> {
    use tower_http::set_header::SetResponseHeaderLayer;
    let headers = [
        (header::CONTENT_SECURITY_POLICY, WEB_CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ),
    ];
    let mut service = axum::routing::get_service(
        tower_http::services::ServeDir::new(dir).append_index_html_on_directories(true),
    );
    for (name, value) in headers {
        service = service.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    // Unknown API paths stay JSON errors; everything else is the app.
    service.layer(middleware::from_fn(|req: Request, next: Next| async move {
        if req.uri().path().starts_with("/v1/") {
            ApiError::not_found("not_found", "no such route; see /v1/openapi.json").into_response()
        } else {
            next.run(req).await
        }
    }))
}

async fn openapi() -> Response {
    let mut resp = OPENAPI.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The routes (method POST) whose handler claims the request's nonce in a
/// shared store itself, in the same round trip as what it reads before
/// deciding (`domain::append`, decision 59): the append and the repair.
/// Every other request's nonce is claimed by [`authenticate`].
const CLAIMED_BY_ROUTE: [&str; 2] = ["/v1/vaults/{vault}/log", "/v1/vaults/{vault}/repair"];

/// Verifies the signature and puts the [`crate::auth::Caller`] in the
/// request's extensions.
async fn authenticate(State(app): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let parsed = Authenticator::parse(req.headers());
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let method = req.method().clone();
    let claimed_by_route = method == Method::POST
        && req
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| CLAIMED_BY_ROUTE.contains(&p.as_str()));
    // A store known to be down: answer at once, before any work.
    if app.health.database_down() || (app.health.blobs_down() && pq.contains("/blobs")) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the relay cannot reach its storage just now; nothing was done. Retry after the delay in retry-after",
        )
        .retry_after(crate::error::STORAGE_RETRY_AFTER)
        .into_response();
    }
    let result = async {
        let auth = parsed?;
        let Some(signer) = app.identity(auth.identity).await? else {
            return Err(app.auth.refuse_unknown(&auth, method.as_str(), &pq));
        };
        // GET, HEAD and DELETE carry no body: their digest is checked
        // against the empty body right away.
        let has_body = !matches!(method, Method::GET | Method::HEAD | Method::DELETE);
        let mut caller = app
            .auth
            .check(&auth, &signer, method.as_str(), &pq, has_body)?;
        // Other relays over the same database accept requests too: the
        // nonce must be new to all of them (this relay's own cache above
        // refused replays to itself already, without a round trip).
        if app.meta.is_shared() {
            let claim = NonceClaim {
                signer: caller.fingerprint,
                nonce: auth.nonce,
                expires: auth.timestamp.saturating_add(app.auth.skew()),
                now: crate::auth::unix_now(),
            };
            if claimed_by_route {
                caller.unclaimed = Some(claim);
            } else {
                match app.meta.claim_nonce(claim).await {
                    Ok(true) => {}
                    Ok(false) => return Err(crate::auth::replayed()),
                    Err(e) => return Err(ApiError::storage("recording a request nonce", &e)),
                }
            }
        }
        Ok(caller)
    }
    .await;
    match result {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Answers `408 timeout` when the response does not start in time.
async fn timeout(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(app.config.timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took too long; retry (send large blobs in smaller chunks)",
        )
        .into_response(),
    }
}

/// The route template that served a request, passed out on its response:
/// the API is the outer router's fallback, so only a layer inside the
/// router that matched sees the template.
#[derive(Clone)]
struct RouteTemplate(String);

/// Notes the matched route's template on the response, for [`observe`].
async fn note_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut resp = next.run(req).await;
    if let Some(route) = route {
        resp.extensions_mut().insert(RouteTemplate(route));
    }
    resp
}

/// Metrics and a log line per request (route template, status, latency;
/// never bodies, keys or signatures). A request no route matched, or one
/// cut off by the timeout, counts under `other`.
async fn observe(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let route = resp
        .extensions()
        .get::<RouteTemplate>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| "other".into());
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method: method.clone(),
            status,
        })
        .inc();
    app.metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "relay_server::request",
        %method,
        %route,
        status,
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    resp
}
