//! A principal's inbox: every vault where it currently holds access, from
//! the grants in the vaults' logs (one indexed query, then each vault's
//! verified state decides what is still in force).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::VaultId;

use crate::auth::{unix_now, Caller};
use crate::error::{ApiError, ApiResult};
use crate::routes::HeadJson;
use crate::state::AppState;

/// The most vaults one inbox page lists (and its default size): one page
/// stays far below the clients' answer limit, whoever floods the inbox.
pub const MAX_INBOX_PAGE: usize = 500;

/// Query of `GET /v1/inbox`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxQuery {
    after: Option<String>,
    limit: Option<u64>,
}

/// `GET /v1/inbox?after=<vault id>&limit=N`: the vaults after `after` in
/// vault-id order, at most `limit` (default and maximum
/// [`MAX_INBOX_PAGE`]); `next` is the cursor of the next page, or `null`
/// on the last one.
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
    let limit = usize::try_from(q.limit.unwrap_or(MAX_INBOX_PAGE as u64))
        .unwrap_or(MAX_INBOX_PAGE)
        .clamp(1, MAX_INBOX_PAGE);
    let me = caller.fingerprint();
    let mut vaults = app
        .meta
        .inbox(me)
        .await
        .map_err(|e| ApiError::internal("reading the inbox", e))?;
    vaults.sort_unstable_by_key(|v| *v.as_bytes());
    vaults.dedup();
    if let Some(after) = after {
        vaults.retain(|v| v.as_bytes() > after.as_bytes());
    }
    let mut out = Vec::new();
    let mut next = None;
    let mut listed_up_to = None;
    for vault in vaults {
        if out.len() >= limit {
            next = listed_up_to.map(|v: VaultId| v.to_hex());
            break;
        }
        listed_up_to = Some(vault);
        let guard = app.read_state(vault).await?;
        let Some(state) = guard.as_ref() else {
            continue;
        };
        let access = state.access(&me, unix_now());
        if !access.is_member() {
            continue;
        }
        let collections: Vec<Value> = access
            .collections
            .iter()
            .map(|(id, c)| {
                json!({
                    "collection": id.to_hex(),
                    "epoch": c.epoch,
                    "permission": c.permission.as_str(),
                    "expires_at": c.expires_at,
                })
            })
            .collect();
        let records: Vec<String> = access.records.iter().map(|r| r.to_hex()).collect();
        out.push(json!({
            "vault": vault.to_hex(),
            "owner": state.owner().fingerprint().to_hex(),
            "is_owner": access.owner,
            "head": HeadJson::from(state.head()),
            "collections": collections,
            "records": records,
        }));
    }
    Ok(Json(json!({ "vaults": out, "next": next })))
}
