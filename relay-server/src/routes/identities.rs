//! The identity directory: publish a self-signed identity document, look
//! one up. A convenience, never an authority: clients pin fingerprints.

use std::sync::Arc;

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use vault_core::{Fingerprint, PublicIdentity};

use crate::admission::{invite_required, INVITE_HEADER};
use crate::auth::{unix_now, Authenticator, Caller};
use crate::error::{ApiError, ApiResult};
use crate::routes::read_json;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    pub(crate) identity: String,
}

/// `PUT /v1/identities`: authenticated by the document being published
/// (this route is outside the authentication middleware).
pub async fn publish(
    State(app): State<Arc<AppState>>,
    source: Option<Extension<ConnectInfo<SocketAddr>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let auth = Authenticator::parse(&headers)?;
    // The signer may not be published yet: the document in the body names
    // its key. The body is bound to the signature by its digest, and nothing
    // is stored before both check out.
    let req: PublishRequest = read_json(&auth.content_sha256, &headers, body, 64 * 1024).await?;
    let id = parse_identity(&req.identity)?;
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let caller = app.auth.check(&auth, &id, method.as_str(), pq, true)?;
    if caller.fingerprint() != id.fingerprint() {
        return Err(ApiError::forbidden(
            "an identity can only be published by itself",
        ));
    }
    // Publishing again what is published is always allowed; a new
    // identity may need an invitation, and counts against its source's
    // budget of new identities and vaults.
    if app.identity(id.fingerprint()).await?.is_some() {
        return store(&app, &caller, id).await;
    }
    let tokens = &app.config.invite_tokens;
    if tokens.required() {
        let presented = headers
            .get(INVITE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !tokens.accepts(presented) {
            return Err(invite_required());
        }
    }
    let source = source.map(|Extension(ConnectInfo(a))| a.ip());
    let now = unix_now();
    app.new_budget.take(source, now)?;
    let stored = store(&app, &caller, id).await;
    if !matches!(&stored, Ok((StatusCode::CREATED, _))) {
        app.new_budget.give_back(source, now);
    }
    stored
}

pub(crate) fn parse_identity(text: &str) -> ApiResult<PublicIdentity> {
    PublicIdentity::from_text(text.trim()).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_identity",
            format!("the identity document is not valid: {e}"),
        )
    })
}

async fn store(
    app: &AppState,
    caller: &Caller,
    id: PublicIdentity,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if caller.fingerprint() != id.fingerprint() {
        return Err(ApiError::forbidden(
            "an identity can only be published by itself",
        ));
    }
    let fp = id.fingerprint();
    let new = app
        .meta
        .put_identity(fp, id.to_bytes().to_vec())
        .await
        .map_err(|e| ApiError::storage("storing an identity", &e))?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "fingerprint": fp.to_hex() }))))
}

/// `GET /v1/identities/{fingerprint}`.
pub async fn lookup(
    State(app): State<Arc<AppState>>,
    Extension(_caller): Extension<Caller>,
    Path(fp): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let fp = Fingerprint::from_hex(&fp)
        .map_err(|_| ApiError::malformed("the fingerprint must be 64 hex digits"))?;
    let id = app.identity(fp).await?.ok_or_else(|| {
        ApiError::not_found(
            "identity_not_found",
            "no identity with this fingerprint is published on this relay",
        )
    })?;
    Ok(Json(json!({ "identity": id.to_text() })))
}
