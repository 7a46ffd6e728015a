//! A principal's inbox: every vault where it currently holds access, from
//! the grants in the vaults' logs (one indexed query, then each vault's
//! verified state decides what is still in force), within the stranger
//! caps of [`crate::domain::inbox`]; and the owners it accepts shares from.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::{Fingerprint, VaultId};

use crate::auth::Caller;
use crate::domain::inbox::{self as domain, Reader, ReaderError, SetAcceptedError, View};
use crate::error::{ApiError, ApiResult};
use crate::routes::{read_json, HeadJson};
use crate::state::AppState;
use crate::storage::AcceptedOwners;

/// The most vaults one inbox page lists (and its default size): one page
/// stays far below the clients' answer limit, whoever floods the inbox.
pub const MAX_INBOX_PAGE: usize = 500;

/// Query of `GET /v1/inbox`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxQuery {
    after: Option<String>,
    limit: Option<u64>,
    view: Option<String>,
    person: Option<String>,
}

/// Query of `GET` and `PUT /v1/inbox/accepted`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedQuery {
    person: Option<String>,
}

impl From<ReaderError> for ApiError {
    fn from(e: ReaderError) -> Self {
        match e {
            ReaderError::NotTheirDevice => {
                ApiError::new(StatusCode::FORBIDDEN, "not_their_device", e.to_string())
            }
            ReaderError::Failure(f) => f.into(),
        }
    }
}

/// The reader a request names with `person=<fingerprint>` (a device reading
/// for its person), checked against the relay's directory; the caller
/// alone without it.
async fn reader_of(
    app: &Arc<AppState>,
    caller: &Caller,
    person: Option<&str>,
) -> ApiResult<Reader> {
    let person = person
        .map(|p| {
            Fingerprint::from_hex(p).map_err(|_| {
                ApiError::malformed("`person` must be a fingerprint (64 lowercase hex digits)")
            })
        })
        .transpose()?;
    Ok(domain::reader(app, caller.fingerprint(), person).await?)
}

/// `GET /v1/inbox?after=<vault id>&limit=N&view=all|accepted|strangers&person=<fingerprint>`:
/// the vaults after `after` in vault-id order, at most `limit` (default and
/// maximum [`MAX_INBOX_PAGE`]), as [`crate::domain::inbox`] selects them
/// (for the caller's person too, with `person`); `next` is the cursor of
/// the next page, or `null` on the last one.
pub async fn inbox(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<InboxQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = crate::routes::query(query)?;
    let after = q
        .after
        .map(|a| {
            VaultId::from_hex(&a).map_err(|_| {
                ApiError::malformed(
                    "`after` must be a vault id (32 hex digits), the `next` of the previous page",
                )
            })
        })
        .transpose()?;
    let view = match q.view.as_deref() {
        None => View::All,
        Some(v) => View::parse(v).ok_or_else(|| {
            ApiError::malformed("`view` must be `all`, `accepted` or `strangers`")
        })?,
    };
    let limit = usize::try_from(q.limit.unwrap_or(MAX_INBOX_PAGE as u64))
        .unwrap_or(MAX_INBOX_PAGE)
        .clamp(1, MAX_INBOX_PAGE);
    let reader = reader_of(&app, &caller, q.person.as_deref()).await?;
    let page = domain::page(&app, reader, after, limit, view).await?;
    let vaults: Vec<Value> = page
        .vaults
        .iter()
        .map(|v| {
            json!({
                "vault": v.vault.to_hex(),
                "owner": v.owner.to_hex(),
                "is_owner": v.is_owner,
                "accepted": v.accepted,
                "truncated": v.truncated,
                "head": HeadJson::from(v.head),
                "collections": v.collections.iter().map(|(id, c)| json!({
                    "collection": id.to_hex(),
                    "epoch": c.epoch,
                    "permission": c.permission.as_str(),
                    "expires_at": c.expires_at,
                })).collect::<Vec<_>>(),
                "records": v.records.iter().map(|r| r.to_hex()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "vaults": vaults,
        "next": page.next.map(|v| v.to_hex()),
        "strangers_held_back": page.strangers_held_back,
        "strangers_not_listed": page.strangers_not_listed,
    })))
}

/// Body of `PUT /v1/inbox/accepted` and answer of both accepted routes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedBody {
    version: u64,
    owners: Vec<String>,
}

/// An accepted list as answered: its version, owners and whose list it is
/// (`holder`: the caller, or the person a device reads for), so that a
/// client reading for a person knows the relay honoured `person`.
fn accepted_json(holder: &Fingerprint, list: &AcceptedOwners) -> Value {
    json!({
        "version": list.version,
        "owners": list.owners.iter().map(|o| o.to_hex()).collect::<Vec<_>>(),
        "holder": holder.to_hex(),
    })
}

/// `GET /v1/inbox/accepted?person=<fingerprint>`: the owners the caller
/// accepts shares from, or with `person` (a device of that person's) the
/// person's (version 0 and none if never set).
pub async fn accepted(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<AcceptedQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = crate::routes::query(query)?;
    let reader = reader_of(&app, &caller, q.person.as_deref()).await?;
    let list = domain::accepted(&app, reader).await?;
    Ok(Json(accepted_json(&reader.list_holder(), &list)))
}

/// `PUT /v1/inbox/accepted?person=<fingerprint>`: replaces the caller's
/// accepted owners (with `person`, a device of that person's replaces the
/// person's) if `version` is greater than the stored list's;
/// `409 stale_version` with the stored list otherwise (another device
/// changed it, or the request is a replay).
pub async fn set_accepted(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<AcceptedQuery>, axum::extract::rejection::QueryRejection>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<Value>> {
    let q = crate::routes::query(query)?;
    let reader = reader_of(&app, &caller, q.person.as_deref()).await?;
    let body: AcceptedBody =
        read_json(&caller.content_sha256, &headers, body, app.config.max_json).await?;
    if body.owners.len() > domain::MAX_ACCEPTED_OWNERS {
        return Err(ApiError::too_large(
            "an accepted list holds at most 1,000 owners",
        ));
    }
    let owners = body
        .owners
        .iter()
        .map(|o| {
            Fingerprint::from_hex(o).map_err(|_| {
                ApiError::malformed("every owner must be a fingerprint (64 hex digits)")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    match domain::set_accepted(&app, reader, body.version, owners).await {
        Ok(list) => Ok(Json(accepted_json(&reader.list_holder(), &list))),
        Err(e @ SetAcceptedError::Invalid(_)) => Err(ApiError::malformed(e.to_string())),
        Err(SetAcceptedError::Stale(stored)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_version",
            SetAcceptedError::Stale(stored.clone()).to_string(),
        )
        .with("accepted", accepted_json(&reader.list_holder(), &stored))),
        Err(SetAcceptedError::Failure(f)) => Err(f.into()),
    }
}
