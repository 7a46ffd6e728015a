//! The client against a small in-process mock of the relay API
//! (`docs/relay-api.md`), with fault injection: transient failures, clock
//! skew, dropped downloads, interrupted uploads, races on the log head, and
//! hostile answers. The mock verifies every request signature over the exact
//! request line, so these tests also pin the signing contract. The real
//! relay is exercised from the `tests` crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use vault_client::{sync, ClientError, Head, RelayClient, RetryPolicy};
use vault_core::request::{body_digest, RelayOrigin, RequestAuth};
use vault_core::store::{MemoryStore, Store};
use vault_core::{
    Fingerprint, IdentityInfo, Keyring, LogEntry, Permission, PublicIdentity, RecordInfo, Role,
    SecretIdentity, VaultId, VaultState,
};

const SKEW_WINDOW: i64 = 300;

#[derive(Default)]
struct Upload {
    total: u64,
    data: Vec<u8>,
    stored: bool,
}

#[derive(Default)]
struct Mock {
    /// This mock's origin (signed requests must name it).
    origin: Option<RelayOrigin>,
    identities: HashMap<Fingerprint, PublicIdentity>,
    vaults: HashMap<VaultId, (Vec<LogEntry>, VaultState)>,
    blobs: HashMap<(VaultId, [u8; 32]), Upload>,
    /// Answer this many requests with 503.
    fail_next: u32,
    /// Answer this many requests with 429 and `retry-after: 0`.
    rate_limit_next: u32,
    /// Answer the next request with 429 and `retry-after` this many
    /// seconds (a per-source budget spent for the window).
    budget_spent_for: Option<u64>,
    /// The mock's clock minus the real one, in seconds.
    skew: i64,
    /// Cut the next blob download after this many bytes.
    drop_download_after: Option<usize>,
    /// Ignore `range` (always send the whole blob).
    ignore_range: bool,
    /// Refuse blob PUTs with 500 after this many chunks were stored.
    fail_puts_after: Option<usize>,
    /// Append this entry just before handling the next append (a racing
    /// writer).
    inject_before_append: Option<LogEntry>,
    /// Entries per log page at most.
    page: usize,
    /// Inbox pages: `Some(false)` a cursor that always moves on (an
    /// endless, flooded inbox), `Some(true)` one that never moves.
    inbox_cursor: Option<bool>,
    /// Serve this instead of the stored log's length (rollback/withholding).
    serve_log_len: Option<usize>,
    /// Claim this head instead of the real one.
    claim_head: Option<(u64, [u8; 32])>,
    /// Answer the next request with exactly this.
    canned: Option<(u16, Vec<u8>)>,
    /// Serve this identity document for every lookup.
    substitute_identity: Option<PublicIdentity>,
    /// (method, path and query, upload-offset) of every request.
    seen: Vec<(String, String, Option<u64>)>,
    puts_stored: usize,
}

type Shared = Arc<Mutex<Mock>>;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn answer(status: u16, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn refuse(status: u16, code: &str, extra: Value) -> Response {
    let mut body = json!({"error": {"code": code, "message": format!("mock says {code}")}});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    answer(status, body)
}

fn head_json(entries: &[LogEntry]) -> Value {
    let last = entries.last().unwrap();
    json!({"seq": last.seq(), "hash": hex::encode(last.hash())})
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

async fn handle(State(mock): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 128 << 20).await.unwrap();
    let method = parts.method.clone();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut m = mock.lock().unwrap();
    m.seen.push((
        method.to_string(),
        pq.clone(),
        header_u64(&parts.headers, "upload-offset"),
    ));
    if let Some((status, bytes)) = m.canned.take() {
        return Response::builder()
            .status(status)
            .body(Body::from(bytes))
            .unwrap();
    }
    if m.fail_next > 0 {
        m.fail_next -= 1;
        return refuse(503, "unavailable", json!({}));
    }
    if m.rate_limit_next > 0 {
        m.rate_limit_next -= 1;
        let mut r = refuse(429, "rate_limited", json!({}));
        r.headers_mut().insert("retry-after", "0".parse().unwrap());
        return r;
    }
    if let Some(wait) = m.budget_spent_for.take() {
        let mut r = refuse(429, "pairings_limited", json!({}));
        r.headers_mut()
            .insert("retry-after", wait.to_string().parse().unwrap());
        return r;
    }

    // Authentication, in the documented order.
    let auth =
        match RequestAuth::from_headers(|k| parts.headers.get(k).and_then(|v| v.to_str().ok())) {
            Ok(a) => a,
            Err(_) => return refuse(401, "missing_auth", json!({})),
        };
    let publishing = method == Method::PUT && pq == "/v1/identities";
    let signer = if publishing {
        let doc: Value = serde_json::from_slice(&body).unwrap();
        PublicIdentity::from_text(doc["identity"].as_str().unwrap()).unwrap()
    } else {
        match m.identities.get(&auth.identity) {
            Some(i) => i.clone(),
            None => return refuse(401, "unknown_identity", json!({})),
        }
    };
    let Some(origin) = m.origin.clone().filter(|o| *o == auth.relay) else {
        return refuse(401, "wrong_relay", json!({}));
    };
    if auth.verify(&signer, method.as_str(), &pq, &origin).is_err() {
        return refuse(401, "bad_signature", json!({}));
    }
    let server_time = now() + m.skew;
    if (auth.timestamp as i64 - server_time).abs() > SKEW_WINDOW {
        return refuse(401, "stale_timestamp", json!({"server_time": server_time}));
    }
    if body_digest(&body) != auth.content_sha256 {
        return refuse(400, "body_digest_mismatch", json!({}));
    }
    if !body.is_empty() {
        let ct = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let wanted = if pq.contains("/blobs/") {
            "application/octet-stream"
        } else {
            "application/json"
        };
        if ct != wanted {
            return refuse(415, "unsupported_media_type", json!({}));
        }
    }

    let (path, query) = pq.split_once('?').unwrap_or((&pq, ""));
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("PUT", ["v1", "identities"]) => {
            let new = m
                .identities
                .insert(signer.fingerprint(), signer.clone())
                .is_none();
            answer(
                if new { 201 } else { 200 },
                json!({"fingerprint": signer.fingerprint().to_hex()}),
            )
        }
        ("GET", ["v1", "identities", fp]) => {
            let fp = Fingerprint::from_hex(fp).unwrap();
            if let Some(sub) = &m.substitute_identity {
                return answer(200, json!({"identity": sub.to_text()}));
            }
            match m.identities.get(&fp) {
                Some(i) => answer(200, json!({"identity": i.to_text()})),
                None => refuse(404, "identity_not_found", json!({})),
            }
        }
        ("POST", ["v1", "vaults"]) => {
            let doc: Value = serde_json::from_slice(&body).unwrap();
            let bytes = URL_SAFE_NO_PAD
                .decode(doc["genesis"].as_str().unwrap())
                .unwrap();
            let genesis = LogEntry::from_bytes(&bytes).unwrap();
            let state = VaultState::from_genesis(&genesis).unwrap();
            let vault = genesis.vault();
            match m.vaults.get(&vault) {
                Some((log, _)) if log[0] == genesis => answer(
                    200,
                    json!({"vault": vault.to_hex(), "head": head_json(log)}),
                ),
                Some(_) => refuse(409, "vault_exists", json!({})),
                None => {
                    let log = vec![genesis];
                    let head = head_json(&log);
                    m.vaults.insert(vault, (log, state));
                    answer(201, json!({"vault": vault.to_hex(), "head": head}))
                }
            }
        }
        ("GET", ["v1", "vaults", v, "head"]) => {
            let vault = VaultId::from_hex(v).unwrap();
            let (log, _) = &m.vaults[&vault];
            answer(200, json!({"head": head_json(log)}))
        }
        ("GET", ["v1", "vaults", v, "log"]) => {
            let vault = VaultId::from_hex(v).unwrap();
            let mut since = 0usize;
            let mut limit = 1000usize;
            for kv in query.split('&').filter(|s| !s.is_empty()) {
                let (k, val) = kv.split_once('=').unwrap();
                match k {
                    "since" => since = val.parse().unwrap(),
                    "limit" => limit = val.parse().unwrap(),
                    _ => return refuse(400, "malformed_request", json!({})),
                }
            }
            let page = if m.page == 0 { 1000 } else { m.page };
            let serve_len = m.serve_log_len;
            let claim = m.claim_head;
            let (log, _) = &m.vaults[&vault];
            let served = &log[..serve_len.unwrap_or(log.len()).min(log.len())];
            let entries: Vec<String> = served
                .iter()
                .skip(since)
                .take(limit.min(page))
                .map(|e| URL_SAFE_NO_PAD.encode(e.to_bytes()))
                .collect();
            let head = match claim {
                Some((seq, hash)) => json!({"seq": seq, "hash": hex::encode(hash)}),
                None => head_json(served),
            };
            answer(200, json!({"head": head, "entries": entries}))
        }
        ("POST", ["v1", "vaults", v, "log"]) => {
            let vault = VaultId::from_hex(v).unwrap();
            let doc: Value = serde_json::from_slice(&body).unwrap();
            if let Some(e) = m.inject_before_append.take() {
                let (log, state) = m.vaults.get_mut(&vault).unwrap();
                state.apply(&e).unwrap();
                log.push(e);
            }
            let (log, state) = m.vaults.get_mut(&vault).unwrap();
            let head = head_json(log);
            if doc["prev"] != head {
                return refuse(409, "head_moved", json!({ "head": head }));
            }
            let mut next = state.clone();
            let mut new = Vec::new();
            for e in doc["entries"].as_array().unwrap() {
                let e = LogEntry::from_bytes(&URL_SAFE_NO_PAD.decode(e.as_str().unwrap()).unwrap())
                    .unwrap();
                if e.author() != auth.identity {
                    return refuse(403, "not_author", json!({}));
                }
                if (e.time() as i64 - server_time).abs() > SKEW_WINDOW {
                    return refuse(
                        422,
                        "entry_time_out_of_range",
                        json!({ "server_time": server_time }),
                    );
                }
                if let Err(err) = next.apply(&e) {
                    return refuse(422, "invalid_entry", json!({"detail": err.code()}));
                }
                new.push(e);
            }
            *state = next;
            log.extend(new);
            answer(200, json!({"head": head_json(log)}))
        }
        ("GET", ["v1", "vaults", v, "blobs", h, "upload"]) => {
            let key = (VaultId::from_hex(v).unwrap(), hex_hash(h));
            match m.blobs.get(&key) {
                Some(u) => answer(200, json!({"stored": u.stored, "offset": u.data.len()})),
                None => answer(200, json!({"stored": false, "offset": 0})),
            }
        }
        ("PUT", ["v1", "vaults", v, "blobs", h]) => {
            let key = (VaultId::from_hex(v).unwrap(), hex_hash(h));
            let total = header_u64(&parts.headers, "upload-length").unwrap();
            let offset = header_u64(&parts.headers, "upload-offset").unwrap_or(0);
            if m.fail_puts_after.is_some_and(|n| m.puts_stored >= n) {
                return refuse(500, "internal", json!({}));
            }
            let u = m.blobs.entry(key).or_default();
            if u.stored {
                return answer(200, json!({"stored": true, "offset": u.total}));
            }
            u.total = total;
            if offset != u.data.len() as u64 {
                let at = u.data.len();
                return refuse(409, "upload_offset_mismatch", json!({ "offset": at }));
            }
            u.data.extend_from_slice(&body);
            let len = u.data.len() as u64;
            if len > total {
                m.blobs.remove(&key);
                return refuse(413, "too_large", json!({}));
            }
            m.puts_stored += 1;
            let u = m.blobs.get_mut(&key).unwrap();
            if len == total {
                if vault_core::address::address_matches(&key.1, &u.data).is_none() {
                    m.blobs.remove(&key);
                    return refuse(422, "hash_mismatch", json!({}));
                }
                u.stored = true;
                return answer(201, json!({"stored": true, "offset": total}));
            }
            answer(202, json!({"stored": false, "offset": len}))
        }
        ("GET", ["v1", "vaults", v, "blobs", h]) => {
            let key = (VaultId::from_hex(v).unwrap(), hex_hash(h));
            let drop_after = m.drop_download_after.take();
            let ignore_range = m.ignore_range;
            let Some(u) = m.blobs.get(&key).filter(|u| u.stored) else {
                return refuse(404, "blob_not_found", json!({}));
            };
            let total = u.data.len();
            let from = parts
                .headers
                .get("range")
                .and_then(|v| v.to_str().ok())
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|r| r.parse::<usize>().ok())
                .filter(|_| !ignore_range);
            let start = from.unwrap_or(0);
            let mut bytes = u.data[start..].to_vec();
            let mut builder = Response::builder();
            builder = match from {
                Some(a) => builder
                    .status(206)
                    .header("content-range", format!("bytes {a}-{}/{total}", total - 1)),
                None => builder.status(200),
            };
            let body = match drop_after {
                Some(n) => {
                    bytes.truncate(n);
                    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
                        Ok(bytes.into()),
                        Err(std::io::Error::other("mock cut the connection")),
                    ];
                    Body::from_stream(futures_util::stream::iter(chunks))
                }
                None => {
                    builder = builder.header("content-length", bytes.len());
                    Body::from(bytes)
                }
            };
            builder.body(body).unwrap()
        }
        ("GET", ["v1", "inbox"]) => {
            let mut vaults = Vec::new();
            for (id, (log, state)) in &m.vaults {
                let access = state.access(&auth.identity, server_time as u64);
                if !access.is_member() {
                    continue;
                }
                vaults.push(json!({
                    "vault": id.to_hex(),
                    "owner": state.owner().fingerprint().to_hex(),
                    "is_owner": access.owner,
                    "head": head_json(log),
                    "collections": access.collections.iter().map(|(c, a)| json!({
                        "collection": c.to_hex(), "epoch": a.epoch,
                        "permission": a.permission.as_str(), "expires_at": a.expires_at,
                    })).collect::<Vec<_>>(),
                    "records": access.records.iter().map(|r| r.to_hex()).collect::<Vec<_>>(),
                }));
            }
            let after = pq
                .split_once("after=")
                .map(|(_, a)| u128::from_str_radix(a, 16).unwrap());
            match m.inbox_cursor {
                None => answer(200, json!({ "vaults": vaults })),
                Some(stuck) => {
                    // The real vaults on the first page only.
                    if after.is_some() {
                        vaults.clear();
                    }
                    let next = if stuck { 7 } else { after.unwrap_or(0) + 1 };
                    answer(
                        200,
                        json!({ "vaults": vaults, "next": format!("{next:032x}") }),
                    )
                }
            }
        }
        _ => refuse(404, "not_found", json!({})),
    }
}

fn hex_hash(h: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(h, &mut out).unwrap();
    out
}

async fn start() -> (String, Shared) {
    let mock: Shared = Arc::default();
    let app = Router::new().fallback(handle).with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    mock.lock().unwrap().origin = Some(RelayOrigin::parse(&format!("http://{addr}")).unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), mock)
}

fn person(seed: u8, name: &str, role: Role) -> Arc<SecretIdentity> {
    let info = IdentityInfo {
        display_name: name.into(),
        role,
        registration: None,
        created_at: 1_700_000_000,
    };
    Arc::new(SecretIdentity::from_seed(&[seed; 32], &info).unwrap())
}

/// A fast retry policy, so tests do not sleep long.
fn quick() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: std::time::Duration::from_millis(1),
        max_backoff: std::time::Duration::from_millis(5),
        max_retry_after: std::time::Duration::from_millis(5),
    }
}

async fn client(url: &str, who: &Arc<SecretIdentity>) -> RelayClient {
    let c = RelayClient::new(url, who.clone())
        .unwrap()
        .with_retry_policy(quick());
    c.publish_identity().await.unwrap();
    c
}

/// A vault with one collection, owned by `owner`, in `store`.
async fn vault_with_collection(
    store: &mut MemoryStore,
    c: &RelayClient,
    owner: &Arc<SecretIdentity>,
) -> (VaultState, vault_core::CollectionId) {
    let (_, genesis) = VaultState::create(owner, c.now()).unwrap();
    let state = sync::create_vault(store, c, &genesis).await.unwrap();
    let mut collection = None;
    let state = sync::push_with_retry(store, c, &state.vault(), |s| {
        let (id, e) = s.create_collection(owner, "Labs", c.now())?;
        collection = Some(id);
        Ok(vec![e])
    })
    .await
    .unwrap();
    (state, collection.unwrap())
}

fn info(c: &RelayClient) -> RecordInfo {
    RecordInfo {
        content_type: "application/pdf".into(),
        title: "Scan".into(),
        created_at: c.now(),
        effective_at: None,
    }
}

#[tokio::test]
async fn identities_publish_and_lookup_is_checked() {
    let (url, mock) = start().await;
    let alice = person(1, "Alice", Role::Patient);
    let bob = person(2, "Dr Bob", Role::Clinician);
    let a = RelayClient::new(&url, alice.clone()).unwrap();
    assert!(a.publish_identity().await.unwrap());
    assert!(!a.publish_identity().await.unwrap());
    let b = client(&url, &bob).await;
    let got = b.lookup_identity(&alice.fingerprint()).await.unwrap();
    assert_eq!(got, *alice.public());

    // A relay substituting another key for the fingerprint is caught.
    mock.lock().unwrap().substitute_identity = Some(bob.public().clone());
    let err = b.lookup_identity(&alice.fingerprint()).await.unwrap_err();
    assert_eq!(err.code(), "fingerprint_mismatch", "{err}");

    // An unknown identity is the relay's 404, not retried.
    mock.lock().unwrap().substitute_identity = None;
    let carol = person(3, "Carol", Role::Patient);
    let err = b.lookup_identity(&carol.fingerprint()).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Relay { status: 404, code, .. } if code == "identity_not_found"),
        "{err}"
    );
    // An unpublished signer is refused.
    let c = RelayClient::new(&url, carol).unwrap();
    assert_eq!(c.inbox().await.unwrap_err().code(), "unknown_identity");
}

#[tokio::test]
async fn records_round_trip_with_chunked_upload_and_resumed_download() {
    let (url, mock) = start().await;
    let owner = person(1, "Alice", Role::Patient);
    let doctor = person(2, "Dr Bob", Role::Clinician);
    let c = client(&url, &owner).await.with_chunk_size(1000);
    let d = client(&url, &doctor).await;
    let mut store = MemoryStore::new();
    let (state, coll) = vault_with_collection(&mut store, &c, &owner).await;
    let vault = state.vault();

    // Share with the doctor, then write a record of several chunks.
    let state = sync::push_with_retry(&mut store, &c, &vault, |s| {
        let mut kr = Keyring::new(&owner, c.now());
        Ok(vec![s.share_collection(
            &mut kr,
            &coll,
            doctor.public(),
            Permission::Read,
            None,
        )?])
    })
    .await
    .unwrap();
    assert_eq!(state.head().seq, 2);
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut spool = Cursor::new(Vec::new());
    let (state, metadata) = sync::push_record(&mut store, &c, &vault, &mut spool, |s, out| {
        let mut kr = Keyring::new(&owner, c.now());
        Ok(s.put_record(
            &mut kr,
            &coll,
            None,
            &info(&c),
            vault_core::RecordBody::new(&body[..], body.len() as u64),
            out,
        )?)
    })
    .await
    .unwrap();
    assert_eq!(state.head().seq, 3);
    // The owner's store caches the ciphertext it uploaded.
    assert!(store
        .open_blob(metadata.ciphertext_hash())
        .unwrap()
        .is_some());
    let offsets: Vec<u64> = mock
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p.contains("/blobs/"))
        .map(|(_, _, o)| o.unwrap())
        .collect();
    let len = metadata.ciphertext_len();
    assert_eq!(offsets, (0..len).step_by(1000).collect::<Vec<_>>());

    // The doctor finds the vault in the inbox, joins it with the owner's
    // verified fingerprint, and downloads the record over a connection
    // that drops half-way.
    let inbox = d.inbox().await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].vault, vault);
    assert!(!inbox[0].is_owner);
    assert_eq!(inbox[0].collections[0].permission, Permission::Read);
    let mut dstore = MemoryStore::new();
    let err = sync::join_vault(&mut dstore, &d, &vault, &doctor.fingerprint())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "pinned_key_changed", "{err}");
    assert!(dstore.vaults().unwrap().is_empty());
    let dstate = sync::join_vault(&mut dstore, &d, &vault, &owner.fingerprint())
        .await
        .unwrap();
    assert_eq!(dstate.head(), state.head());
    let rid = dstate.records(None)[0].id;
    mock.lock().unwrap().drop_download_after = Some(1500);
    let record = dstate.record(&rid).unwrap();
    sync::fetch_record_blob(&mut dstore, &d, &record, &mut Cursor::new(Vec::new()))
        .await
        .unwrap();
    let ranges: Vec<String> = mock
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|(m, p, _)| m == "GET" && p.contains("/blobs/") && !p.ends_with("/upload"))
        .map(|(_, p, _)| p.clone())
        .collect();
    assert_eq!(ranges.len(), 2, "one dropped download, one resumed");
    let mut out = Vec::new();
    let mut kr = Keyring::new(&doctor, d.now());
    let ct = dstore
        .open_blob(metadata.ciphertext_hash())
        .unwrap()
        .unwrap();
    let opened = kr.open(&dstate, &record, ct, &mut out).unwrap();
    assert_eq!(out, body);
    assert_eq!(opened.author, owner.fingerprint());

    // A relay ignoring `range` after a drop still yields the right bytes.
    let mut raw = Vec::new();
    {
        let mut m = mock.lock().unwrap();
        m.drop_download_after = Some(700);
        m.ignore_range = true;
    }
    d.get_blob(
        &vault,
        metadata.ciphertext_hash(),
        metadata.address_kind(),
        len,
        &mut raw,
    )
    .await
    .unwrap();
    assert_eq!(raw.len() as u64, len);

    // A blob that does not hash to its address is refused.
    let mut raw = Vec::new();
    let mut wrong = *metadata.ciphertext_hash();
    wrong[0] ^= 1;
    mock.lock().unwrap().blobs.insert(
        (vault, wrong),
        Upload {
            total: len,
            data: vec![7; len as usize],
            stored: true,
        },
    );
    let err = d
        .get_blob(&vault, &wrong, metadata.address_kind(), len, &mut raw)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ciphertext_mismatch", "{err}");
    // And one longer than expected.
    let err = d
        .get_blob(
            &vault,
            metadata.ciphertext_hash(),
            metadata.address_kind(),
            len - 1,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err}");
}

#[tokio::test]
async fn an_interrupted_upload_resumes_where_it_stopped() {
    let (url, mock) = start().await;
    let owner = person(1, "Alice", Role::Patient);
    let c = client(&url, &owner)
        .await
        .with_chunk_size(100)
        .with_retry_policy(RetryPolicy::none());
    let mut store = MemoryStore::new();
    let (_, genesis) = VaultState::create(&owner, c.now()).unwrap();
    let state = sync::create_vault(&mut store, &c, &genesis).await.unwrap();
    let blob: Vec<u8> = (0..950u32).map(|i| (i * 7) as u8).collect();
    let hash = body_digest(&blob);
    mock.lock().unwrap().fail_puts_after = Some(4);
    let err = c
        .put_blob(&state.vault(), &hash, 950, &mut Cursor::new(&blob))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Relay { status: 500, .. }),
        "{err}"
    );
    let status = c.upload_status(&state.vault(), &hash).await.unwrap();
    assert_eq!((status.stored, status.offset), (false, 400));
    {
        let mut m = mock.lock().unwrap();
        m.fail_puts_after = None;
        m.seen.clear();
    }
    let done = c
        .put_blob(&state.vault(), &hash, 950, &mut Cursor::new(&blob))
        .await
        .unwrap();
    assert!(done.stored);
    let offsets: Vec<u64> = mock
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter(|(m, _, _)| m == "PUT")
        .map(|(_, _, o)| o.unwrap())
        .collect();
    assert_eq!(offsets, [400, 500, 600, 700, 800, 900]);
    // Uploading again is a no-op.
    mock.lock().unwrap().seen.clear();
    c.put_blob(&state.vault(), &hash, 950, &mut Cursor::new(&blob))
        .await
        .unwrap();
    assert_eq!(mock.lock().unwrap().seen.len(), 1, "only the status query");

    // Bytes that do not hash to the address are discarded by the relay.
    let err = c
        .put_blob(&state.vault(), &[9; 32], 950, &mut Cursor::new(&blob))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "hash_mismatch", "{err}");
}

#[tokio::test]
async fn a_moved_head_rebuilds_and_a_lost_answer_is_not_duplicated() {
    let (url, mock) = start().await;
    let owner = person(1, "Alice", Role::Patient);
    let c = client(&url, &owner).await;
    let mut store = MemoryStore::new();
    let (state, _) = vault_with_collection(&mut store, &c, &owner).await;
    let vault = state.vault();

    // A plain append on a stale head is HeadMoved with the relay's head.
    let (_, stale) = state.create_collection(&owner, "X", c.now()).unwrap();
    let (_, racing) = state.create_collection(&owner, "Racing", c.now()).unwrap();
    let genesis_head = Head::from(state.checkpoint_at(0).unwrap());
    match c.append(&vault, genesis_head, &[stale]).await.unwrap_err() {
        ClientError::HeadMoved { head } => assert_eq!(head, Head::from(state.head())),
        other => panic!("{other}"),
    }

    // Another writer appends between our pull and our append: we rebuild.
    mock.lock().unwrap().inject_before_append = Some(racing);
    let mut builds = 0;
    let state = sync::push_with_retry(&mut store, &c, &vault, |s| {
        builds += 1;
        let (_, e) = s.create_collection(&owner, "Imaging", c.now())?;
        Ok(vec![e])
    })
    .await
    .unwrap();
    assert_eq!(builds, 2);
    assert_eq!(state.collections().len(), 3);
    assert_eq!(store.head(&vault).unwrap().unwrap(), state.head());

    // Nothing to do: no append at all.
    let before = mock.lock().unwrap().seen.len();
    let same = sync::push_with_retry(&mut store, &c, &vault, |_| Ok(vec![]))
        .await
        .unwrap();
    assert_eq!(same.head(), state.head());
    let appends = mock.lock().unwrap().seen[before..]
        .iter()
        .filter(|(m, _, _)| m == "POST")
        .count();
    assert_eq!(appends, 0);

    // Entries the vault would refuse are never sent.
    let mallory = person(9, "Mallory", Role::Patient);
    let err = sync::push_with_retry(&mut store, &c, &vault, |s| {
        Ok(vec![s.create_collection(&mallory, "Evil", c.now())?.1])
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), "access_denied", "{err}");
}

#[tokio::test]
async fn transient_failures_are_retried_and_others_are_not() {
    let (url, mock) = start().await;
    let owner = person(1, "Alice", Role::Patient);
    let c = client(&url, &owner).await;
    mock.lock().unwrap().fail_next = 3;
    assert!(c.inbox().await.unwrap().is_empty());
    mock.lock().unwrap().rate_limit_next = 2;
    assert!(c.inbox().await.unwrap().is_empty());

    // A 429 asking for a longer wait than the policy honours is reported
    // at once (its message says when to retry), not waited out in vain.
    mock.lock().unwrap().seen.clear();
    mock.lock().unwrap().budget_spent_for = Some(600);
    let err = c.inbox().await.unwrap_err();
    assert_eq!(err.code(), "pairings_limited");
    assert_eq!(mock.lock().unwrap().seen.len(), 1);

    // Out of attempts: the last refusal is reported.
    mock.lock().unwrap().fail_next = 10;
    let err = c.inbox().await.unwrap_err();
    assert!(matches!(&err, ClientError::Relay { status: 503, code, .. } if code == "unavailable"));
    mock.lock().unwrap().fail_next = 0;

    // No retries with RetryPolicy::none().
    let once = c.clone().with_retry_policy(RetryPolicy::none());
    mock.lock().unwrap().fail_next = 1;
    assert_eq!(once.inbox().await.unwrap_err().status(), Some(503));
    assert!(once.inbox().await.is_ok());

    // A 4xx is not retried.
    mock.lock().unwrap().seen.clear();
    mock.lock().unwrap().canned = Some((
        403,
        br#"{"error":{"code":"forbidden","message":"not a member"}}"#.to_vec(),
    ));
    let err = c.inbox().await.unwrap_err();
    assert_eq!(err.code(), "forbidden");
    assert_eq!(mock.lock().unwrap().seen.len(), 1);

    // Connection refused is a transport error after the retries.
    let dead = RelayClient::new("http://127.0.0.1:1", owner.clone())
        .unwrap()
        .with_retry_policy(quick());
    assert_eq!(dead.inbox().await.unwrap_err().code(), "transport");
}

#[tokio::test]
async fn clock_skew_is_corrected_once() {
    let (url, mock) = start().await;
    let owner = person(1, "Alice", Role::Patient);
    let c = client(&url, &owner).await;
    mock.lock().unwrap().skew = 10_000;
    c.inbox().await.unwrap();
    assert!(
        (9_990..=10_010).contains(&c.clock_offset()),
        "{}",
        c.clock_offset()
    );
    // Entries are stamped with the relay's time: an append goes through.
    let mut store = MemoryStore::new();
    let (_, genesis) = VaultState::create(&owner, c.now()).unwrap();
    sync::create_vault(&mut store, &c, &genesis).await.unwrap();
}

#[tokio::test]
async fn an_entry_dated_outside_the_relays_window_is_rebuilt_once() {
    let (url, _mock) = start().await;
    let owner = person(1, "Alice", Role::Patient);
    let c = client(&url, &owner).await;
    let mut store = MemoryStore::new();
    let (state, _) = vault_with_collection(&mut store, &c, &owner).await;
    let mut times = Vec::new();
    let state = sync::push_with_retry(&mut store, &c, &state.vault(), |s| {
        // The first build uses a clock an hour ahead.
        let now = if times.is_empty() {
            c.now() + 3600
        } else {
            c.now()
        };
        times.push(now);
        Ok(vec![s.create_collection(&owner, "Later", now)?.1])
    })
    .await
    .unwrap();
    assert_eq!(times.len(), 2);
    assert_eq!(state.collections().len(), 2);
    // A clock that stays wrong is reported after one rebuild.
    let err = sync::push_with_retry(&mut store, &c, &state.vault(), |s| {
        Ok(vec![
            s.create_collection(&owner, "Never", c.now() + 7200)?.1,
        ])
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), "entry_time_out_of_range", "{err}");
}

#[tokio::test]
async fn rollback_withholding_and_forks_are_detected() {
    let (url, mock) = start().await;
    let owner = person(1, "Alice", Role::Patient);
    let c = client(&url, &owner).await;
    let mut store = MemoryStore::new();
    let (state, _) = vault_with_collection(&mut store, &c, &owner).await;
    let vault = state.vault();
    for name in ["B", "C", "D"] {
        sync::push_with_retry(&mut store, &c, &vault, |s| {
            Ok(vec![s.create_collection(&owner, name, c.now())?.1])
        })
        .await
        .unwrap();
    }
    assert_eq!(store.head(&vault).unwrap().unwrap().seq, 4);

    // Paging: a second device pulls the whole log three entries at a time.
    mock.lock().unwrap().page = 3;
    let mut other = MemoryStore::new();
    let s2 = sync::join_vault(&mut other, &c, &vault, &owner.fingerprint())
        .await
        .unwrap();
    assert_eq!(s2.head().seq, 4);

    // The relay serves an older log: rollback.
    mock.lock().unwrap().serve_log_len = Some(3);
    let err = sync::pull(&mut store, &c, &vault).await.unwrap_err();
    assert_eq!(err.code(), "rollback", "{err}");

    // The relay claims entries it does not send.
    {
        let mut m = mock.lock().unwrap();
        m.serve_log_len = None;
        m.claim_head = Some((9, [1; 32]));
    }
    let err = sync::pull(&mut store, &c, &vault).await.unwrap_err();
    assert_eq!(err.code(), "missing_or_withheld", "{err}");

    // The relay claims our head's sequence number with another hash.
    mock.lock().unwrap().claim_head = Some((4, [1; 32]));
    let err = sync::pull(&mut store, &c, &vault).await.unwrap_err();
    assert_eq!(err.code(), "fork", "{err}");

    // A vault never joined is a clear error.
    mock.lock().unwrap().claim_head = None;
    let err = sync::pull(&mut MemoryStore::new(), &c, &vault)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("join_vault"), "{err}");
}

#[tokio::test]
async fn hostile_answers_are_errors_not_panics() {
    let (url, mock) = start().await;
    let owner = person(1, "Alice", Role::Patient);
    let c = client(&url, &owner)
        .await
        .with_retry_policy(RetryPolicy::none());
    let vault = VaultId::from_bytes([5; 16]);
    let big = vec![b' '; 17 << 20];
    let cases: Vec<(u16, Vec<u8>, &str)> = vec![
        (200, b"not json".to_vec(), "protocol"),
        (
            200,
            br#"{"vaults": [{"vault": "zz"}]}"#.to_vec(),
            "protocol",
        ),
        (200, br#"{"vaults": 5}"#.to_vec(), "protocol"),
        (200, big, "too_large"),
        (502, b"<html>bad gateway</html>".to_vec(), "http_502"),
        (
            418,
            br#"{"error":{"code":"teapot","message":"\u001b[31m"}}"#.to_vec(),
            "teapot",
        ),
    ];
    for (status, body, code) in cases {
        mock.lock().unwrap().canned = Some((status, body));
        let err = c.inbox().await.unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        assert!(!err.to_string().contains('\u{1b}'));
    }
    let head = |h: &str| format!(r#"{{"head": {{"seq": 1, "hash": "{h}"}}, "entries": ["AAAA"]}}"#);
    // Well-formed base64 of bytes that are no log entry: vault-core's parser
    // refuses them.
    mock.lock().unwrap().canned = Some((200, head(&"00".repeat(32)).into_bytes()));
    let err = c.fetch_log(&vault, 0, 10).await.unwrap_err();
    assert!(matches!(err, ClientError::Core(_)), "{err}");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (head("00").into_bytes(), "protocol"),
        (
            br#"{"head": {"seq": 1, "hash": "x"}, "entries": [1]}"#.to_vec(),
            "protocol",
        ),
        (
            format!(
                r#"{{"head": {{"seq": 1, "hash": "{}"}}, "entries": ["!!"]}}"#,
                "00".repeat(32)
            )
            .into_bytes(),
            "protocol",
        ),
    ];
    for (body, code) in cases {
        mock.lock().unwrap().canned = Some((200, body));
        let err = c.fetch_log(&vault, 0, 10).await.unwrap_err();
        assert_eq!(err.code(), code, "{err}");
    }
    // More entries than asked for.
    let many = format!(
        r#"{{"head": {{"seq": 1, "hash": "{}"}}, "entries": ["a", "b", "c"]}}"#,
        "00".repeat(32)
    );
    mock.lock().unwrap().canned = Some((200, many.into_bytes()));
    assert_eq!(
        c.fetch_log(&vault, 0, 2).await.unwrap_err().code(),
        "protocol"
    );
    // A redirect is not followed.
    mock.lock().unwrap().canned = Some((307, Vec::new()));
    assert_eq!(c.inbox().await.unwrap_err().code(), "config");
}

#[test]
fn sync_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let owner = person(1, "Alice", Role::Patient);
    let c = RelayClient::new("http://127.0.0.1:1", owner).unwrap();
    let mut store = MemoryStore::new();
    let vault = VaultId::from_bytes([0; 16]);
    send(sync::pull(&mut store, &c, &vault));
    send(sync::push_with_retry(&mut store, &c, &vault, |_| {
        Ok(vec![])
    }));
    let mut spool = Cursor::new(Vec::new());
    send(sync::fetch_blob(
        &mut store,
        &c,
        &vault,
        &[0; 32],
        vault_core::address::AddressKind::CURRENT,
        1,
        &mut spool,
    ));
    send(c.get_blob(
        &vault,
        &[0; 32],
        vault_core::address::AddressKind::CURRENT,
        1,
        &mut Vec::new(),
    ));
    send(c.put_blob(&vault, &[0; 32], 1, &mut Cursor::new(vec![0u8])));
    // A `dyn Store` works too (its futures are not Send).
    let boxed: &mut dyn Store = &mut store;
    drop(sync::pull(boxed, &c, &vault));
}

/// Issue 12 §5 (a): a flooded inbox (here an endless chain of pages) no
/// longer fails: the client reads at most `MAX_INBOX_PAGES` pages, keeps
/// what it got and reports the listing as truncated; a cursor that does not
/// move forward is a protocol error, not a loop.
#[tokio::test]
async fn a_flooded_inbox_is_truncated_not_fatal() {
    let (url, mock) = start().await;
    let owner = person(1, "Alice", Role::Patient);
    let c = client(&url, &owner).await;
    let (_, genesis) = VaultState::create(&owner, c.now()).unwrap();
    c.create_vault(&genesis).await.unwrap();

    mock.lock().unwrap().inbox_cursor = Some(false);
    let before = mock.lock().unwrap().seen.len();
    let listing = c.inbox_listing().await.unwrap();
    assert!(listing.truncated);
    assert_eq!(listing.vaults.len(), 1);
    assert_eq!(listing.vaults[0].vault, genesis.vault());
    let pages: Vec<String> = mock.lock().unwrap().seen[before..]
        .iter()
        .filter(|(m, p, _)| m == "GET" && p.starts_with("/v1/inbox"))
        .map(|(_, p, _)| p.clone())
        .collect();
    assert_eq!(pages.len(), vault_client::MAX_INBOX_PAGES);
    assert_eq!(pages[0], "/v1/inbox");
    assert_eq!(pages[1], format!("/v1/inbox?after={:032x}", 1));
    // `inbox` degrades the same way.
    assert_eq!(c.inbox().await.unwrap().len(), 1);

    mock.lock().unwrap().inbox_cursor = Some(true);
    let err = c.inbox_listing().await.unwrap_err();
    assert!(err.to_string().contains("did not move forward"), "{err}");

    // A relay without pages (no `next`): one request, not truncated.
    mock.lock().unwrap().inbox_cursor = None;
    let listing = c.inbox_listing().await.unwrap();
    assert!(!listing.truncated);
    assert_eq!(listing.vaults.len(), 1);
}

/// Decision 76: a client reading for its person names the person in its
/// inbox and accepted-list requests, and refuses a relay that did not
/// honour it (an answer naming another holder, or none; a `400` naming the
/// unknown parameter) rather than act on the device's own list.
#[tokio::test]
async fn a_client_reading_for_its_person_refuses_a_relay_that_ignores_it() {
    let (url, mock) = start().await;
    let phone = person(30, "phone", Role::Device);
    let dee = person(31, "Dr Dee", Role::Clinician).fingerprint();
    let c = client(&url, &phone).await.with_person(dee);
    assert_eq!(c.person(), Some(dee));
    let can = |status: u16, body: Value| {
        mock.lock().unwrap().canned = Some((status, body.to_string().into_bytes()));
    };
    let not_served = |r: vault_client::Result<()>| {
        assert!(matches!(r, Err(ClientError::PersonNotServed)), "{r:?}");
    };
    can(200, json!({"version": 1, "owners": []}));
    not_served(c.accepted_owners().await.map(drop));
    can(
        200,
        json!({"version": 1, "owners": [], "holder": phone.fingerprint().to_hex()}),
    );
    not_served(c.accepted_owners().await.map(drop));
    can(
        200,
        json!({"version": 1, "owners": [], "holder": dee.to_hex()}),
    );
    assert_eq!(c.accepted_owners().await.unwrap().version, 1);
    let last = mock.lock().unwrap().seen.last().unwrap().1.clone();
    assert_eq!(last, format!("/v1/inbox/accepted?person={}", dee.to_hex()));

    // A change reads the list first: against a relay that ignores the
    // person, nothing is sent.
    can(200, json!({"version": 1, "owners": []}));
    let before = mock.lock().unwrap().seen.len();
    not_served(vault_client::inbox::accept(&c, &[dee]).await.map(drop));
    let sent: Vec<String> = mock.lock().unwrap().seen[before..]
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        sent,
        vec![format!("GET /v1/inbox/accepted?person={}", dee.to_hex())]
    );

    let unknown = json!({"error": {
        "code": "malformed_request",
        "message": "bad query: unknown field `person`, expected one of `after`, `limit`, `view`",
    }});
    can(400, unknown.clone());
    not_served(c.inbox_listing().await.map(drop));
    // Without a person, the same answer is the relay's own refusal.
    let alone = client(&url, &phone).await;
    can(400, unknown);
    let e = alone.inbox_listing().await.unwrap_err();
    assert_eq!(e.code(), "malformed_request", "{e}");
    // A person's own fingerprint is no person at all.
    let own = client(&url, &phone).await.with_person(phone.fingerprint());
    assert_eq!(own.person(), None);
}
