//! The identity directory: publish a self-signed identity document, look
//! one up. The rules (self-publication, admission) are in
//! [`crate::domain::identities`]; these handlers parse, authenticate, call
//! and render.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use vault_core::{Fingerprint, PublicIdentity};

use crate::admission::INVITE_HEADER;
use crate::auth::{Authenticator, Caller};
use crate::domain::identities::{Directory, IdentityError};
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
    let invite = headers.get(INVITE_HEADER).and_then(|v| v.to_str().ok());
    let source = source.map(|Extension(ConnectInfo(a))| a.ip());
    let published = Directory::new(app)
        .publish(caller.fingerprint(), &id, invite, source)
        .await?;
    let status = if published.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "fingerprint": published.fingerprint.to_hex() })),
    ))
}

pub(crate) fn parse_identity(text: &str) -> ApiResult<PublicIdentity> {
    Ok(PublicIdentity::from_text(text.trim()).map_err(IdentityError::Invalid)?)
}

/// `GET /v1/identities/{fingerprint}`.
pub async fn lookup(
    State(app): State<Arc<AppState>>,
    Extension(_caller): Extension<Caller>,
    Path(fp): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let fp = Fingerprint::from_hex(&fp)
        .map_err(|_| ApiError::malformed("the fingerprint must be 64 hex digits"))?;
    let id = Directory::new(app).lookup(fp).await?;
    Ok(Json(json!({ "identity": id.to_text() })))
}
