//! SMART Health Links (decision 49): the owner's routes (signed:
//! `POST /v1/links`, `GET /v1/links`, `POST /v1/links/{handle}/revoke`,
//! `GET /v1/links/{handle}/log`) and the public routes a viewer uses with
//! no account (`POST /v1/shl/{id}` for the manifest, `GET /v1/shl/{id}`
//! for a direct-file link, `GET /v1/shl/files/{ticket}` for a file
//! location), as the HL7 specification describes them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::auth::Caller;
use crate::domain::links::{self as domain, CreateLink, ManifestAsk, Served};
use crate::error::{ApiError, ApiResult};
use crate::routes::{parse_hash, read_json};
use crate::state::AppState;
use crate::storage::links::{LinkFile, StoredLink};

/// The largest manifest request read.
pub const MAX_MANIFEST_REQUEST: usize = 16 << 10;

/// One file of `POST /v1/links`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    #[serde(rename = "contentType")]
    content_type: String,
    jwe: String,
}

/// Body of `POST /v1/links`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    files: Vec<FileBody>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    passcode: Option<Zeroizing<String>>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    long_term: bool,
    #[serde(default)]
    direct: bool,
}

/// `POST /v1/links`: stores a new link's files (JWE, `alg: dir`,
/// `enc: A256GCM`, `cty` equal to the content type) and rules; answers
/// `201` with the id (the secret path segment of the manifest URL
/// `/v1/shl/{id}`), the owner's `handle` (SHA-256 of the id, hex) and the
/// payload's `flag`.
pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body: CreateBody =
        read_json(&caller.content_sha256, &headers, body, app.config.max_json).await?;
    let req = CreateLink {
        files: body
            .files
            .into_iter()
            .map(|f| LinkFile {
                content_type: f.content_type,
                jwe: f.jwe,
            })
            .collect(),
        expires_at: body.expires_at,
        passcode: body.passcode,
        max_attempts: body.max_attempts,
        long_term: body.long_term,
        direct: body.direct,
    };
    let created = domain::create(&app, caller.fingerprint(), req).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": created.id,
            "path": format!("/v1/shl/{}", created.id),
            "handle": hex::encode(created.handle),
            "flag": created.flag,
        })),
    )
        .into_response())
}

fn status_of(l: &StoredLink, now: u64) -> &'static str {
    if l.revoked_at.is_some() {
        "revoked"
    } else if l.expires_at.is_some_and(|e| now >= e) {
        "expired"
    } else if l.passcode.is_some() && l.failed_attempts >= l.max_attempts {
        "disabled"
    } else {
        "active"
    }
}

/// `GET /v1/links`: the caller's links, newest first.
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let now = app.now();
    let links = domain::list(&app, caller.fingerprint()).await?;
    Ok(Json(json!({
        "links": links.iter().map(|l| json!({
            "handle": hex::encode(l.hash),
            "created_at": l.created_at,
            "expires_at": l.expires_at,
            "revoked_at": l.revoked_at,
            "flag": domain::flag_of(l),
            "status": status_of(l, now),
            "files": l.files,
            "bytes": l.bytes,
            "failed_attempts": l.failed_attempts,
            "max_attempts": l.max_attempts,
            "accesses": l.accesses,
        })).collect::<Vec<_>>(),
    })))
}

/// The body of `POST /v1/links/{handle}/revoke`: `{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// `POST /v1/links/{handle}/revoke`: the link answers 404 from now on; its
/// files are deleted; its access record stays.
pub async fn revoke(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(handle): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let handle = parse_hash(&handle, "the link handle")?;
    // The body is `{}`; it is read so the signed digest is checked.
    let _: EmptyBody = read_json(&caller.content_sha256, &headers, body, 1024).await?;
    domain::revoke(&app, caller.fingerprint(), handle).await?;
    Ok(Json(
        json!({ "handle": hex::encode(handle), "revoked": true }),
    ))
}

/// `GET /v1/links/{handle}/log`: the link's access record, oldest first.
pub async fn log(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(handle): Path<String>,
) -> ApiResult<Json<Value>> {
    let handle = parse_hash(&handle, "the link handle")?;
    let events = domain::access_log(&app, caller.fingerprint(), handle).await?;
    Ok(Json(json!({
        "handle": hex::encode(handle),
        "events": events.iter().map(|e| json!({
            "at": e.at,
            "recipient": e.recipient,
            "outcome": e.outcome.as_str(),
        })).collect::<Vec<_>>(),
    })))
}

/// The origin file locations are given on: the relay origin the request's
/// `Host` names (so a viewer gets locations on the origin it asked), else
/// the first configured one.
fn origin_for(app: &AppState, headers: &HeaderMap) -> String {
    let origins = app.config.relay_origins();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let names: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
    names
        .iter()
        .find(|o| {
            o.split_once("://")
                .is_some_and(|(_, h)| h.eq_ignore_ascii_case(host))
        })
        .or_else(|| names.first())
        .cloned()
        .unwrap_or_else(|| format!("http://{host}"))
}

/// Headers of every public answer: any origin may read it (viewers are
/// web apps elsewhere), nothing is cached.
fn public(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn public_err(e: impl Into<ApiError>) -> Response {
    public(e.into().into_response())
}

async fn read_manifest_request(headers: &HeaderMap, body: Body) -> Result<ManifestAsk, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the manifest request with content-type: application/json",
        ));
    }
    let bytes = Zeroizing::new(
        http_body_util::Limited::new(body, MAX_MANIFEST_REQUEST)
            .collect()
            .await
            .map_err(|_| ApiError::too_large("the manifest request is larger than 16 KiB"))?
            .to_bytes()
            .to_vec(),
    );
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::bad_json("the manifest request is not JSON"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::bad_json("the manifest request must be a JSON object"))?;
    let recipient =
        match obj.get("recipient") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => return Err(ApiError::bad_json(
                "the manifest request needs a \"recipient\": who is asking, shown to the sharer",
            )),
        };
    let passcode = match obj.get("passcode") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Zeroizing::new(s.clone())),
        Some(_) => return Err(ApiError::bad_json("\"passcode\" must be a string")),
    };
    let embedded_length_max = match obj.get("embeddedLengthMax") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            ApiError::bad_json("\"embeddedLengthMax\" must be a non-negative whole number")
        })?),
    };
    Ok(ManifestAsk {
        recipient,
        passcode,
        embedded_length_max,
    })
}

/// `POST /v1/shl/{id}`: the manifest (`{"files": [...]}`); `401` with
/// `remainingAttempts` for a wrong or missing passcode; `404` for a link
/// that is not active.
pub async fn manifest(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let hash = match domain::parse_id(&id) {
        Ok(h) => h,
        Err(e) => return public_err(e),
    };
    let ask = match read_manifest_request(&headers, body).await {
        Ok(a) => a,
        Err(e) => return public_err(e),
    };
    let origin = origin_for(&app, &headers);
    match domain::manifest(&app, hash, ask).await {
        Ok(files) => {
            let files: Vec<Value> = files
                .into_iter()
                .map(|(ct, s)| match s {
                    Served::Embedded(jwe) => json!({"contentType": ct, "embedded": jwe}),
                    Served::Location(t) => json!({
                        "contentType": ct,
                        "location": format!("{origin}/v1/shl/files/{t}"),
                    }),
                })
                .collect();
            public(Json(json!({ "files": files })).into_response())
        }
        Err(e) => public_err(e),
    }
}

fn jose(file: LinkFile) -> Response {
    let mut resp = file.jwe.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jose"),
    );
    public(resp)
}

/// Query of `GET /v1/shl/{id}`.
#[derive(Deserialize)]
pub struct DirectQuery {
    recipient: Option<String>,
}

/// `GET /v1/shl/{id}?recipient=…`: the single file of a direct-file link
/// (flag `U`), `application/jose`.
pub async fn direct(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<DirectQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let hash = match domain::parse_id(&id) {
        Ok(h) => h,
        Err(e) => return public_err(e),
    };
    let recipient = match query {
        Ok(Query(DirectQuery { recipient: Some(r) })) if !r.trim().is_empty() => r,
        _ => {
            return public_err(ApiError::malformed(
                "a direct file request needs ?recipient=…: who is asking, shown to the sharer",
            ))
        }
    };
    match domain::direct_file(&app, hash, &recipient).await {
        Ok(f) => jose(f),
        Err(e) => public_err(e),
    }
}

/// `GET /v1/shl/files/{ticket}`: a file a manifest gave as a `location`,
/// `application/jose`, for [`domain::TICKET_SECONDS`] while its link is
/// active.
pub async fn file(State(app): State<Arc<AppState>>, Path(ticket): Path<String>) -> Response {
    match domain::ticket_file(&app, &ticket).await {
        Ok(f) => jose(f),
        Err(e) => public_err(e),
    }
}

/// `OPTIONS` on the public routes: any origin may `POST` JSON to them.
pub async fn preflight() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    resp
}
