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
use crate::domain::inbox::{self as domain, View};
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
    let me = caller.fingerprint();
    let entries = app
        .meta
        .inbox(me)
        .await
        .map_err(|e| ApiError::storage("reading the inbox", &e))?;
    let accepted = app
        .meta
        .accepted_owners(me)
        .await
        .map_err(|e| ApiError::storage("reading the accepted owners", &e))?;
    let limits = app.config.inbox_limits();
    let selection = domain::select(&entries, &me, &accepted, view, &limits);
    let mut out = Vec::new();
    let mut next = None;
    let mut listed_up_to = None;
    let page = selection
        .listed
        .iter()
        .filter(|l| after.is_none_or(|a| l.entry.vault.as_bytes() > a.as_bytes()));
    for listed in page {
        if out.len() >= limit {
            next = listed_up_to.map(|v: VaultId| v.to_hex());
            break;
        }
        let vault = listed.entry.vault;
        listed_up_to = Some(vault);
        let guard = app.read_state(vault).await?;
        let Some(state) = guard.as_ref() else {
            continue;
        };
        let access = state.access(&me, app.now());
        if !access.is_member() {
            continue;
        }
        let cap = if listed.accepted {
            usize::MAX
        } else {
            limits.shares_per_vault
        };
        let collections: Vec<Value> = access
            .collections
            .iter()
            .take(cap)
            .map(|(id, c)| {
                json!({
                    "collection": id.to_hex(),
                    "epoch": c.epoch,
                    "permission": c.permission.as_str(),
                    "expires_at": c.expires_at,
                })
            })
            .collect();
        let records: Vec<String> = access
            .records
            .iter()
            .take(cap)
            .map(|r| r.to_hex())
            .collect();
        let truncated = access.collections.len() > cap || access.records.len() > cap;
        out.push(json!({
            "vault": vault.to_hex(),
            "owner": state.owner().fingerprint().to_hex(),
            "is_owner": access.owner,
            "accepted": listed.accepted,
            "truncated": truncated,
            "head": HeadJson::from(state.head()),
            "collections": collections,
            "records": records,
        }));
    }
    Ok(Json(json!({
        "vaults": out,
        "next": next,
        "strangers_held_back": selection.strangers_held_back,
        "strangers_not_listed": selection.strangers_not_asked,
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
    let list = app
        .meta
        .accepted_owners(caller.fingerprint())
        .await
        .map_err(|e| ApiError::storage("reading the accepted owners", &e))?;
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
    let list = domain::normalise(body.version, owners).map_err(ApiError::malformed)?;
    match app
        .meta
        .set_accepted_owners(caller.fingerprint(), list.clone())
        .await
        .map_err(|e| ApiError::storage("storing the accepted owners", &e))?
    {
        Ok(()) => Ok(Json(accepted_json(&list))),
        Err(stored) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_version",
            format!(
                "a list of version {} is stored (set from another device, or this request is a replay); apply your change to it and send version {}",
                stored.version,
                stored.version.saturating_add(1)
            ),
        )
        .with("accepted", accepted_json(&stored))),
    }
}
