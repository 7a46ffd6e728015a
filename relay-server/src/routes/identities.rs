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
use vault_core::devices::{DeviceList, MAX_DEVICE_LIST_LEN};
use vault_core::{Fingerprint, PublicIdentity};

use crate::admission::INVITE_HEADER;
use crate::auth::{Authenticator, Caller};
use crate::domain::device_lists::{DeviceDirectory, DeviceListError, MAX_STORED_VERSIONS};
use crate::domain::identities::{Directory, IdentityError};
use crate::error::{ApiError, ApiResult};
use crate::routes::{b64, read_json};
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

/// A `{fingerprint}` path parameter: 64 lower-case hex digits.
fn fingerprint_param(text: &str) -> ApiResult<Fingerprint> {
    Fingerprint::from_hex(text)
        .map_err(|_| ApiError::malformed("the fingerprint must be 64 hex digits"))
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
    let fp = fingerprint_param(&fp)?;
    let id = Directory::new(app).lookup(fp).await?;
    Ok(Json(json!({ "identity": id.to_text() })))
}

/// The largest body `PUT /v1/identities/{fingerprint}/devices` reads: 64
/// versions of at most 32 KiB each, in base64, and room for the JSON.
pub const MAX_DEVICE_LISTS_BODY: u64 =
    ((MAX_STORED_VERSIONS * MAX_DEVICE_LIST_LEN).div_ceil(3) * 4 + 64 * 1024) as u64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceListsBody {
    /// The versions, oldest first, each base64url (no padding) of its
    /// encoding (`docs/format.md` §3.7).
    pub(crate) lists: Vec<String>,
}

fn lists_json(lists: &[DeviceList]) -> serde_json::Value {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    json!({
        "serial": lists.last().map_or(0, DeviceList::serial),
        "lists": lists.iter().map(|l| b64.encode(l.to_bytes())).collect::<Vec<_>>(),
    })
}

/// `GET /v1/identities/{fingerprint}/devices`: the person's device lists,
/// the chain since the root's last override (none if it published none).
pub async fn device_lists(
    State(app): State<Arc<AppState>>,
    Extension(_caller): Extension<Caller>,
    Path(fp): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let fp = fingerprint_param(&fp)?;
    let lists = DeviceDirectory::new(app).lookup(fp).await?;
    Ok(Json(lists_json(&lists)))
}

/// `PUT /v1/identities/{fingerprint}/devices`: publishes versions of the
/// person's device list extending the one the directory holds, signed by
/// the person's key file or one of its devices; `409 stale_list` when
/// another version was published first.
pub async fn publish_device_lists(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(fp): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let person = fingerprint_param(&fp)?;
    let body: DeviceListsBody = read_json(
        &caller.content_sha256,
        &headers,
        body,
        MAX_DEVICE_LISTS_BODY,
    )
    .await?;
    if body.lists.is_empty() || body.lists.len() > MAX_STORED_VERSIONS {
        return Err(ApiError::malformed("send 1 to 64 versions of the list"));
    }
    let lists = body
        .lists
        .iter()
        .map(|l| {
            DeviceList::from_bytes(&b64(l, "a device list")?)
                .map_err(|e| ApiError::from(DeviceListError::Invalid(e)))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let dir = DeviceDirectory::new(app);
    dir.publish(caller.fingerprint(), person, &lists).await?;
    Ok(Json(lists_json(&dir.lookup(person).await?)))
}
