//! Vaults and their logs: create, read the head, read the log, append with
//! compare-and-swap.
//!
//! Appends are verified with vault-core against the relay's own verified
//! copy of the log before anything is stored, so the relay refuses what no
//! client would accept; clients still verify everything themselves.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use vault_core::{EntryBody, LogEntry, VaultId, VaultState};

use crate::auth::{unix_now, Caller};
use crate::error::{ApiError, ApiResult};
use crate::routes::{b64, parse_vault, read_json, to_b64, HeadJson};
use crate::state::{vault_not_found, AppState, REBUILD_FREE};
use crate::storage::{AppendBatch, AppendError, BlobRef, CreateOutcome, Head, StoredEntry};

/// Most entries in one append.
pub const MAX_APPEND: usize = 1024;
/// Most entries in one log page.
pub const MAX_PAGE: u64 = 1000;
/// Most entry bytes in one log page (a page may hold fewer entries than
/// asked for; it always holds at least one).
pub const MAX_PAGE_BYTES: usize = 8 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    pub(crate) genesis: String,
}

fn invalid_entry(index: usize, e: &vault_core::Error) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_entry",
        format!("entry {index} of the request was refused: {e}"),
    )
    .with("detail", json!(e.code()))
    .with("index", json!(index))
}

fn stored(entry: &LogEntry) -> StoredEntry {
    StoredEntry {
        seq: entry.seq(),
        hash: *entry.hash(),
        bytes: entry.to_bytes().to_vec(),
    }
}

fn check_time(app: &AppState, index: usize, entry: &LogEntry) -> ApiResult<()> {
    let skew = app.auth.skew();
    let now = unix_now();
    if entry.time().abs_diff(now) > skew {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "entry_time_out_of_range",
            format!(
                "entry {index} is dated more than {skew} seconds from the relay's clock; check the device clock"
            ),
        )
        .with("server_time", json!(now)));
    }
    Ok(())
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
    let genesis =
        LogEntry::from_bytes(&b64(&req.genesis, "genesis")?).map_err(|e| invalid_entry(0, &e))?;
    let state = VaultState::from_genesis(&genesis).map_err(|e| invalid_entry(0, &e))?;
    if state.owner().fingerprint() != caller.fingerprint() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_author",
            "a vault can only be created by the owner its genesis entry names",
        ));
    }
    check_time(&app, 0, &genesis)?;
    let vault = genesis.vault();
    // A new vault counts against its source's budget of new identities
    // and vaults (given back if it turns out not to be new).
    let source = source.map(|Extension(ConnectInfo(a))| a.ip());
    let now = unix_now();
    app.new_budget.take(source, now)?;
    let outcome = app
        .meta
        .create_vault(
            vault,
            caller.fingerprint(),
            stored(&genesis),
            app.config.quota,
        )
        .await
        .map_err(|e| ApiError::storage("creating a vault", &e));
    if !matches!(outcome, Ok(CreateOutcome::Created)) {
        app.new_budget.give_back(source, now);
    }
    let outcome = outcome?;
    let body = json!({ "vault": vault.to_hex(), "head": HeadJson::from(state.head()) });
    match outcome {
        CreateOutcome::Created => Ok((StatusCode::CREATED, Json(body))),
        CreateOutcome::AlreadyStored => Ok((StatusCode::OK, Json(body))),
        CreateOutcome::Quota => Err(quota_exceeded()),
        CreateOutcome::Conflict => Err(ApiError::new(
            StatusCode::CONFLICT,
            "vault_exists",
            "another vault with this id exists on this relay; create a new vault",
        )),
    }
}

/// `GET /v1/vaults/{vault}/head`.
pub async fn head(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(vault): Path<String>,
) -> ApiResult<Json<Value>> {
    let vault = parse_vault(&vault)?;
    app.member_access(vault, &caller.fingerprint()).await?;
    let head = stored_head(&app, vault).await?;
    Ok(Json(json!({ "head": HeadJson::from(head) })))
}

/// The head as stored (`404` if the vault does not exist).
async fn stored_head(app: &AppState, vault: VaultId) -> ApiResult<Head> {
    app.meta
        .head(vault)
        .await
        .map_err(|e| ApiError::internal("reading a head", e))?
        .ok_or_else(vault_not_found)
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
    let Query(q) = query.map_err(|e| ApiError::malformed(format!("bad query: {e}")))?;
    let vault = parse_vault(&vault)?;
    app.member_access(vault, &caller.fingerprint()).await?;
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let since = q.since.unwrap_or(0);
    let head = stored_head(&app, vault).await?;
    let entries = app
        .meta
        .entries(vault, since, limit)
        .await
        .map_err(|e| ApiError::internal("reading a log", e))?;
    let entries: Vec<String> = page(&entries, MAX_PAGE_BYTES)
        .iter()
        .map(|e| to_b64(e))
        .collect();
    Ok(Json(
        json!({ "head": HeadJson::from(head), "entries": entries }),
    ))
}

/// The longest prefix of `entries` within `max_bytes`, and never less than
/// one entry: a client asks again from where a page ends.
fn page(entries: &[Vec<u8>], max_bytes: usize) -> &[Vec<u8>] {
    let mut total = 0usize;
    let n = entries
        .iter()
        .take_while(|e| {
            let first = total == 0;
            total = total.saturating_add(e.len());
            first || total <= max_bytes
        })
        .count();
    entries.get(..n).unwrap_or(entries)
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
    let vault = parse_vault(&vault)?;
    let req: AppendRequest =
        read_json(&caller.content_sha256, &headers, body, app.config.max_json).await?;
    if req.entries.is_empty() {
        return Err(ApiError::bad_json("entries must not be empty"));
    }
    if req.entries.len() > MAX_APPEND {
        return Err(ApiError::too_large(format!(
            "at most {MAX_APPEND} entries per append"
        )));
    }
    let prev = req.prev.to_head()?;
    let entries = req
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            LogEntry::from_bytes(&b64(e, "an entry")?).map_err(|err| invalid_entry(i, &err))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let me = caller.fingerprint();
    for (i, e) in entries.iter().enumerate() {
        if e.author() != me {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_author",
                format!("entry {i} is not authored by the identity that signed the request"),
            ));
        }
        check_time(&app, i, e)?;
    }

    // From here on the relay's in-memory state is changed ahead of the
    // commit. Run it as its own task so that a cancelled request (client
    // gone, timeout) cannot stop between the two and leave the state ahead
    // of storage: the append completes (or fails and is undone) either way.
    let app2 = app.clone();
    tokio::spawn(async move { commit_append(&app2, vault, prev, me, entries).await })
        .await
        .map_err(|e| ApiError::internal("the append task failed", e))?
}

/// Checks rights and the compare-and-swap, applies the entries to the
/// relay's state and stores them, keeping the state equal to storage.
async fn commit_append(
    app: &AppState,
    vault: VaultId,
    prev: Head,
    me: vault_core::Fingerprint,
    entries: Vec<LogEntry>,
) -> ApiResult<Json<Value>> {
    if entries.len() > 1 {
        if let Some(wait) = app.rebuild_cooldown(vault) {
            return Err(rebuild_cooldown(wait));
        }
    }
    let mut guard = app.write_state(vault).await?;
    let Some(state) = guard.as_mut() else {
        return Err(vault_not_found());
    };
    let access = state.access(&me, unix_now());
    if !access.may_write() {
        return Err(ApiError::forbidden(if access.is_member() {
            "you have read-only access to this vault; ask the owner for write access"
        } else {
            "you are not a member of this vault (or your access was revoked or expired)"
        }));
    }
    let head = state.head();
    let current = Head {
        seq: head.seq,
        hash: head.head,
    };
    if current != prev {
        return Err(head_moved(current));
    }
    let size = head.seq.saturating_add(1);
    let max = app.config.max_vault_entries;
    let count = u64::try_from(entries.len()).unwrap_or(u64::MAX);
    if head.seq.saturating_add(1).saturating_add(count) > max {
        return Err(vault_full(max));
    }

    // Refuse what storage would refuse before changing anything: the
    // quota, and blobs that are missing, of another length, uploaded by
    // someone else, or already used by another record.
    let puts: Vec<(usize, [u8; 32], u64)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e.body() {
            EntryBody::RecordPut { metadata } => {
                Some((i, *metadata.ciphertext_hash(), metadata.ciphertext_len()))
            }
            _ => None,
        })
        .collect();
    let (used, blobs) = app
        .meta
        .append_precheck(vault, me, puts.iter().map(|(_, h, _)| *h).collect())
        .await
        .map_err(|e| ApiError::internal("checking an append", e))?;
    let bytes: u64 = entries.iter().map(|e| e.to_bytes().len() as u64).sum();
    if used.saturating_add(bytes) > app.config.quota {
        return Err(quota_exceeded());
    }
    for (n, (i, hash, len)) in puts.iter().enumerate() {
        let twice = puts.iter().filter(|(_, h, _)| h == hash).count() > 1;
        let usable = blobs
            .get(n)
            .copied()
            .flatten()
            .is_some_and(|(info, used)| info.len == *len && info.uploader == me && !used);
        if twice || !usable {
            return Err(blob_missing(*i));
        }
    }

    // Verify and apply every entry on the relay's own state, in place: no
    // copy of the state, whatever its size. `VaultState::apply` changes
    // nothing when it refuses, so a refusal of the first entry leaves the
    // state as it was; a refusal further on (or storage refusing the
    // batch) leaves earlier entries applied, so the state is dropped and
    // rebuilt from storage at the next use, at a cost bounded by
    // `max_vault_entries`. Only a writer of this vault can cause that.
    let mut blob_refs = Vec::new();
    let mut inbox = Vec::new();
    let mut purged = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if let Err(err) = prepare(state, e, i, &mut blob_refs, &mut inbox, &mut purged) {
            if i > 0 {
                *guard = None;
                if size > REBUILD_FREE {
                    app.start_rebuild_cooldown(vault);
                }
            }
            return Err(err);
        }
    }
    let batch = AppendBatch {
        vault,
        prev,
        entries: entries.iter().map(stored).collect(),
        blob_refs,
        inbox,
        purged: purged.clone(),
        account: me,
        quota: app.config.quota,
    };
    match app.meta.append(batch).await {
        Ok(head) => {
            app.note_len(vault, head.seq.saturating_add(1));
            // The purged blobs' records are gone with the commit; their
            // bytes go now, unless another vault holds the same blob. A
            // crash here leaves unreferenced bytes that nobody can fetch.
            for hash in purged {
                if !app.meta.blob_in_use(hash).await.unwrap_or(true) {
                    if let Err(e) = app.blobs.delete(hash).await {
                        tracing::warn!(error = %e, "deleting a purged blob's bytes");
                    }
                }
            }
            Ok(Json(json!({ "head": HeadJson::from(head) })))
        }
        Err(e) => {
            // The entries were applied ahead of storage: rebuild from
            // storage on the next request.
            *guard = None;
            if size > REBUILD_FREE {
                app.start_rebuild_cooldown(vault);
            }
            Err(match e {
                AppendError::HeadMoved(h) => head_moved(h),
                AppendError::NoVault => vault_not_found(),
                AppendError::Quota => quota_exceeded(),
                AppendError::BlobMissing(i) => blob_missing(i),
                AppendError::Storage(s) => ApiError::storage("appending entries", &s),
            })
        }
    }
}

/// 429 `rate_limited`: multi-entry appends to this vault wait out a
/// rebuild cooldown.
fn rebuild_cooldown(wait: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "an append to this vault was refused part-way through less than a minute ago, which makes the relay rebuild the vault; append one entry per request, or retry the batch in {wait} seconds"
        ),
    )
    .retry_after(wait)
}

/// 413 `vault_full`: the vault's log would pass `max_vault_entries`.
pub fn vault_full(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "vault_full",
        format!(
            "this vault's log would exceed {max} entries, the most this relay stores per vault; nothing was appended. Start a new vault, or ask the relay's operator to raise max-vault-entries"
        ),
    )
}

fn blob_missing(i: usize) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "blob_missing",
        format!(
            "entry {i} names a ciphertext blob that you have not uploaded to this vault (or that another record already uses); upload the record's ciphertext first"
        ),
    )
}

/// Applies one entry to the state, collecting the blobs it names (the
/// commit checks they are stored) and the principals it grants to.
fn prepare(
    state: &mut VaultState,
    e: &LogEntry,
    i: usize,
    blob_refs: &mut Vec<BlobRef>,
    inbox: &mut Vec<vault_core::Fingerprint>,
    purged: &mut Vec<[u8; 32]>,
) -> ApiResult<()> {
    state.apply(e).map_err(|err| invalid_entry(i, &err))?;
    match e.body() {
        EntryBody::RecordPut { metadata } => blob_refs.push(BlobRef {
            hash: *metadata.ciphertext_hash(),
            len: metadata.ciphertext_len(),
            collection: metadata.collection(),
            record: metadata.record(),
            entry: i,
        }),
        EntryBody::GrantAdded { member, .. } => inbox.push(member.fingerprint()),
        EntryBody::Rotation(r) => inbox.extend(r.grants.iter().map(|g| g.member())),
        EntryBody::RecordPurged { record, .. } => purged.extend(state.purged_ciphertexts(record)),
        _ => {}
    }
    Ok(())
}

fn head_moved(head: Head) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "head_moved",
        "the vault log has moved on since your view of it; fetch the new entries, rebuild yours on the new head and retry",
    )
    .with("head", json!(HeadJson::from(head)))
}

/// 413 `quota_exceeded`.
pub fn quota_exceeded() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "quota_exceeded",
        "your storage quota on this relay would be exceeded; delete data or ask the operator for more",
    )
}

#[cfg(test)]
mod tests {
    use super::page;

    #[test]
    fn pages_stop_at_the_byte_budget_but_hold_one_entry() {
        let entries = vec![vec![0u8; 400], vec![0u8; 400], vec![0u8; 400]];
        assert_eq!(page(&entries, 1000).len(), 2);
        assert_eq!(page(&entries, 800).len(), 2);
        assert_eq!(page(&entries, 799).len(), 1);
        assert_eq!(page(&entries, 10).len(), 1);
        assert_eq!(page(&entries, usize::MAX).len(), 3);
        assert!(page(&[], 10).is_empty());
    }
}
