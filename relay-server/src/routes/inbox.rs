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
use crate::domain::inbox::{self as domain, SetAcceptedError, View};
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
}

/// `GET /v1/inbox?after=<vault id>&limit=N&view=all|accepted|strangers`:
/// the vaults after `after` in vault-id order, at most `limit` (default and
/// maximum [`MAX_INBOX_PAGE`]), as [`crate::domain::inbox`] selects them;
/// `next` is the cursor of the next page, or `null` on the last one.
pub async fn inbox(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<InboxQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::malformed(format!("bad query: {e}")))?;
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
    let page = domain::page(&app, caller.fingerprint(), after, limit, view).await?;
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

fn accepted_json(list: &AcceptedOwners) -> Value {
    json!({
        "version": list.version,
        "owners": list.owners.iter().map(|o| o.to_hex()).collect::<Vec<_>>(),
    })
}

/// `GET /v1/inbox/accepted`: the owners the caller accepts shares from
/// (version 0 and none if it never set a list).
pub async fn accepted(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let list = domain::accepted(&app, caller.fingerprint()).await?;
    Ok(Json(accepted_json(&list)))
}

/// `PUT /v1/inbox/accepted`: replaces the caller's accepted owners if
/// `version` is greater than the stored list's; `409 stale_version` with
/// the stored list otherwise (another device changed it, or the request is
/// a replay).
pub async fn set_accepted(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<Value>> {
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
    match domain::set_accepted(&app, caller.fingerprint(), body.version, owners).await {
        Ok(list) => Ok(Json(accepted_json(&list))),
        Err(e @ SetAcceptedError::Invalid(_)) => Err(ApiError::malformed(e.to_string())),
        Err(SetAcceptedError::Stale(stored)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_version",
            SetAcceptedError::Stale(stored.clone()).to_string(),
        )
        .with("accepted", accepted_json(&stored))),
        Err(SetAcceptedError::Failure(f)) => Err(f.into()),
    }
}
