//! Vaults and their logs: create, read the head, read the log, append with
//! compare-and-swap. The rules are in [`crate::domain::vaults`] and
//! [`crate::domain::append`]; these handlers parse, call and render.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::LogEntry;

use crate::auth::Caller;
use crate::domain::append::{self, AppendError, Appends};
use crate::domain::vaults::{VaultError, Vaults};
use crate::error::ApiResult;
use crate::routes::{b64, parse_vault, read_json, to_b64, HeadJson};
use crate::state::AppState;

pub use crate::domain::append::MAX_APPEND;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    pub(crate) genesis: String,
}

/// `POST /v1/vaults`.
pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    source: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: CreateRequest =
        read_json(&caller.content_sha256, &headers, body, app.config.max_json).await?;
    let genesis = LogEntry::from_bytes(&b64(&req.genesis, "genesis")?)
        .map_err(|source| VaultError::InvalidEntry { index: 0, source })?;
    let source = source.map(|Extension(ConnectInfo(a))| a.ip());
    let created = Vaults::new(app)
        .create(caller.fingerprint(), &genesis, source)
        .await?;
    let status = if created.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "vault": created.vault.to_hex(), "head": HeadJson::from(created.head) })),
    ))
}

/// `GET /v1/vaults/{vault}/head`.
pub async fn head(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(vault): Path<String>,
) -> ApiResult<Json<Value>> {
    let vault = parse_vault(&vault)?;
    let head = Vaults::new(app).head(vault, &caller.fingerprint()).await?;
    Ok(Json(json!({ "head": HeadJson::from(head) })))
}

/// Query of `GET /v1/vaults/{vault}/log`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    since: Option<u64>,
    limit: Option<u64>,
}

/// `GET /v1/vaults/{vault}/log?since=S&limit=L`.
pub async fn log(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(vault): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = crate::routes::query(query)?;
    let vault = parse_vault(&vault)?;
    let page = Vaults::new(app)
        .read_log(vault, &caller.fingerprint(), q.since, q.limit)
        .await?;
    let entries: Vec<String> = page.entries.iter().map(|e| to_b64(e)).collect();
    Ok(Json(
        json!({ "head": HeadJson::from(page.head), "entries": entries }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendRequest {
    pub(crate) prev: HeadJson,
    pub(crate) entries: Vec<String>,
}

/// `POST /v1/vaults/{vault}/log`: compare-and-swap append, acknowledged
/// once durable.
pub async fn append(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(vault): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let (vault, prev, entries) = entries_request(&app, &caller, &vault, &headers, body).await?;
    let head = Appends::new(app)
        .claiming(caller.unclaimed_nonce())
        .append(vault, caller.fingerprint(), prev, entries)
        .await?;
    Ok(Json(json!({ "head": HeadJson::from(head) })))
}

/// `POST /v1/vaults/{vault}/repair`: a member pushes back entries the
/// relay lost (a restore, a failover), signed by their authors; checked
/// as an append, with compare-and-swap on the head (decision 53).
pub async fn repair(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(vault): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let (vault, prev, entries) = entries_request(&app, &caller, &vault, &headers, body).await?;
    let head = Appends::new(app)
        .claiming(caller.unclaimed_nonce())
        .repair(vault, caller.fingerprint(), prev, entries)
        .await?;
    Ok(Json(json!({ "head": HeadJson::from(head) })))
}

/// The vault, head and entries of an append or repair request.
async fn entries_request(
    app: &AppState,
    caller: &Caller,
    vault: &str,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(vault_core::VaultId, crate::storage::Head, Vec<LogEntry>)> {
    let vault = parse_vault(vault)?;
    let req: AppendRequest =
        read_json(&caller.content_sha256, headers, body, app.config.max_json).await?;
    append::check_count(req.entries.len())?;
    let prev = req.prev.to_head()?;
    Ok((vault, prev, parse_entries(&req.entries)?))
}

/// The entries of an append or repair request, parsed.
fn parse_entries(entries: &[String]) -> ApiResult<Vec<LogEntry>> {
    entries
        .iter()
        .enumerate()
        .map(|(index, e)| {
            LogEntry::from_vec(b64(e, "an entry")?)
                .map_err(|source| AppendError::InvalidEntry { index, source }.into())
        })
        .collect()
}
