//! Pairing slots (`docs/format.md` §3.8): open, join, answer, read and
//! close. The rules are in [`crate::domain::pairings`]; these handlers
//! parse, authenticate, call and render.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use vault_core::Fingerprint;

use crate::auth::Caller;
use crate::domain::pairings::Pairings;
use crate::error::{ApiError, ApiResult};
use crate::routes::{parse_hash, read_json};
use crate::state::AppState;
use crate::storage::pairings::PairingSlot;

/// The largest body a pairing route reads.
pub const MAX_PAIRING_BODY: u64 = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    commit: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NonceBody {
    nonce: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevealBody {
    person: String,
    nonce: String,
}

/// A slot as the API shows it: what is set, hex.
fn slot_json(s: &PairingSlot) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    v.insert("opener".into(), json!(s.opener.to_hex()));
    v.insert("commit".into(), json!(hex::encode(s.commit)));
    v.insert("expires_at".into(), json!(s.expires_at));
    if let Some(device) = &s.joined {
        v.insert("device".into(), json!(device.to_hex()));
    }
    if let Some(nonce) = &s.device_nonce {
        v.insert("device_nonce".into(), json!(hex::encode(nonce)));
    }
    if let Some((person, nonce)) = &s.revealed {
        v.insert("person".into(), json!(person.to_hex()));
        v.insert("opener_nonce".into(), json!(hex::encode(nonce)));
    }
    serde_json::Value::Object(v)
}

/// A 32-byte value of the body, 64 lowercase hex digits (`bad_json`
/// otherwise, as for any body of the wrong shape).
fn body_hash(text: &str, what: &str) -> ApiResult<[u8; 32]> {
    parse_hash(text, what)
        .map_err(|_| ApiError::bad_json(format!("{what} must be 64 lowercase hex digits")))
}

/// `PUT /v1/pairings/{slot}`: opens a slot with the caller's commitment
/// (`201`, with its expiry); `409 pairing_code_in_use` if a live slot has
/// this code; `429 pairings_limited` if the caller's address opened its
/// budget of codes in this window.
pub async fn open(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    source: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(slot): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let slot = parse_hash(&slot, "the pairing slot")?;
    let body: OpenBody =
        read_json(&caller.content_sha256, &headers, body, MAX_PAIRING_BODY).await?;
    let commit = body_hash(&body.commit, "commit")?;
    let source = source.map(|Extension(ConnectInfo(a))| a.ip());
    let expires_at = Pairings::new(app)
        .open(caller.fingerprint(), slot, commit, source)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "expires_at": expires_at })),
    ))
}

/// `GET /v1/pairings/{slot}`: the slot, for its opener or the device that
/// joined it.
pub async fn status(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(slot): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let slot = parse_hash(&slot, "the pairing slot")?;
    let s = Pairings::new(app)
        .status(caller.fingerprint(), slot)
        .await?;
    Ok(Json(slot_json(&s)))
}

/// `DELETE /v1/pairings/{slot}`: closes the caller's slot.
pub async fn close(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(slot): Path<String>,
) -> ApiResult<StatusCode> {
    let slot = parse_hash(&slot, "the pairing slot")?;
    Pairings::new(app).close(caller.fingerprint(), slot).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/pairings/{slot}/join` with `{}`: the caller (a device
/// identity) joins; answers the slot, whose commitment the device holds
/// before it sends its nonce.
pub async fn join(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(slot): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let slot = parse_hash(&slot, "the pairing slot")?;
    let JoinBody {} = read_json(&caller.content_sha256, &headers, body, MAX_PAIRING_BODY).await?;
    let s = Pairings::new(app).join(caller.fingerprint(), slot).await?;
    Ok(Json(slot_json(&s)))
}

/// `POST /v1/pairings/{slot}/nonce`: the device that joined sends its
/// nonce, once.
pub async fn nonce(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(slot): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let slot = parse_hash(&slot, "the pairing slot")?;
    let body: NonceBody =
        read_json(&caller.content_sha256, &headers, body, MAX_PAIRING_BODY).await?;
    let nonce = body_hash(&body.nonce, "nonce")?;
    let s = Pairings::new(app)
        .nonce(caller.fingerprint(), slot, nonce)
        .await?;
    Ok(Json(slot_json(&s)))
}

/// `POST /v1/pairings/{slot}/reveal`: the opener reveals the person and
/// its nonce, once the joined device sent its nonce.
pub async fn reveal(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(slot): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<serde_json::Value>> {
    let slot = parse_hash(&slot, "the pairing slot")?;
    let body: RevealBody =
        read_json(&caller.content_sha256, &headers, body, MAX_PAIRING_BODY).await?;
    let person = Fingerprint::from_bytes(body_hash(&body.person, "person")?);
    let nonce = body_hash(&body.nonce, "nonce")?;
    let s = Pairings::new(app)
        .reveal(caller.fingerprint(), slot, person, nonce)
        .await?;
    Ok(Json(slot_json(&s)))
}
