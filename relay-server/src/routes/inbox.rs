//! A principal's inbox: every vault where it currently holds access, from
//! the grants in the vaults' logs (one indexed query, then each vault's
//! verified state decides what is still in force).

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::auth::{unix_now, Caller};
use crate::error::{ApiError, ApiResult};
use crate::routes::HeadJson;
use crate::state::AppState;

/// `GET /v1/inbox`.
pub async fn inbox(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let me = caller.fingerprint();
    let vaults = app
        .meta
        .inbox(me)
        .await
        .map_err(|e| ApiError::internal("reading the inbox", e))?;
    let mut out = Vec::new();
    for vault in vaults {
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
    Ok(Json(json!({ "vaults": out })))
}
