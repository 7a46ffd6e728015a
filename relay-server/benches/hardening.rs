//! Costs behind the §4 hardening of the relay (`cargo bench -p relay-server
//! --bench hardening`; `-- --quick` for a smaller vault). Prints:
//!
//! 1. the replay cache: one insert for a third key while two keys hold
//!    their whole bound of live nonces (the attack of issue 12 §4a), next
//!    to an insert into an empty cache;
//! 2. what a multi-entry append used to pay before it was applied in place:
//!    a copy of the vault's verified state, at N entries;
//! 3. what a refusal half-way through a batch costs now: rebuilding that
//!    state from storage (the relay's `AppState::load`), at N entries, the
//!    bound being `max_vault_entries`;
//! 4. a two-entry append to that vault through the router (signature,
//!    verification, durable commit).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use relay_server::auth::{NonceCache, NonceOutcome};
use relay_server::{Config, Relay};
use serde_json::json;
use tower::ServiceExt;
use vault_core::request::{body_digest, RelayOrigin, RequestAuth};
use vault_core::{Fingerprint, IdentityInfo, LogEntry, Role, SecretIdentity, VaultState};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn signed(me: &SecretIdentity, method: &str, pq: &str, body: Vec<u8>) -> Request<Body> {
    let origin = RelayOrigin::parse("http://127.0.0.1:8787").unwrap();
    let auth = RequestAuth::sign(me, method, pq, &origin, now(), body_digest(&body)).unwrap();
    let mut b = Request::builder().method(method).uri(pq);
    for (k, v) in auth.headers() {
        b = b.header(k, v);
    }
    b.header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

fn nonce_bytes(i: u64) -> [u8; 16] {
    let mut n = [0u8; 16];
    n[..8].copy_from_slice(&i.to_le_bytes());
    n
}

fn replay_cache() {
    let per_key = 330_000u64; // rate 1000/s × (300 + 30) s, the defaults
    let t = now();
    let inserts = 200_000u64;
    let time_inserts = |cache: &NonceCache| {
        let key = Fingerprint::from_bytes([3; 32]);
        let start = Instant::now();
        for i in 0..inserts {
            assert_eq!(
                cache.insert(key, nonce_bytes(i), t, t + 300),
                NonceOutcome::Fresh
            );
        }
        start.elapsed() / u32::try_from(inserts).unwrap()
    };
    let empty = NonceCache::new(per_key as usize);
    let baseline = time_inserts(&empty);
    let full = NonceCache::new(per_key as usize);
    for k in [1u8, 2] {
        let key = Fingerprint::from_bytes([k; 32]);
        for i in 0..per_key {
            // Dated 30 s ahead: they live longest.
            assert_eq!(
                full.insert(key, nonce_bytes(i), t, t + 330),
                NonceOutcome::Fresh
            );
        }
        assert!(matches!(
            full.insert(key, nonce_bytes(per_key), t, t + 330),
            NonceOutcome::KeyFull(_)
        ));
    }
    let attacked = time_inserts(&full);
    println!(
        "replay cache: insert for a third key {:?} with two keys at their bound of {per_key} live nonces each, {:?} into an empty cache ({inserts} inserts)",
        attacked, baseline
    );
}

fn vault(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::open(Config {
            rate: 1_000_000,
            burst: 1_000_000,
            max_vault_entries: n as u64 + 100,
            ..Config::for_data_dir(dir.path())
        })
        .unwrap();
        let router = relay.router();
        let owner = SecretIdentity::from_seed(
            &[1; 32],
            &IdentityInfo {
                display_name: "Pat".into(),
                role: Role::Patient,
                registration: None,
                created_at: now() - 1000,
            },
        )
        .unwrap();
        let call = |req: Request<Body>| {
            let router = router.clone();
            async move { router.oneshot(req).await.unwrap().status() }
        };
        let publish = serde_json::to_vec(&json!({ "identity": owner.public().to_text() })).unwrap();
        assert_eq!(
            call(signed(&owner, "PUT", "/v1/identities", publish)).await,
            StatusCode::CREATED
        );
        let (mut state, genesis) = VaultState::create(&owner, now()).unwrap();
        let body = serde_json::to_vec(&json!({ "genesis": b64(genesis.to_bytes()) })).unwrap();
        assert_eq!(
            call(signed(&owner, "POST", "/v1/vaults", body)).await,
            StatusCode::CREATED
        );
        let vault = state.vault();
        let path = format!("/v1/vaults/{}/log", vault.to_hex());
        let append = |state: &VaultState, entries: &[LogEntry]| {
            let h = state.head();
            let body = serde_json::to_vec(&json!({
                "prev": { "seq": h.seq, "hash": hex::encode(h.head) },
                "entries": entries.iter().map(|e| b64(e.to_bytes())).collect::<Vec<_>>(),
            }))
            .unwrap();
            signed(&owner, "POST", &path, body)
        };
        let mut made = 1usize;
        while made < n {
            let mut s = state.clone();
            let k = (n - made).min(1024);
            let batch: Vec<LogEntry> = (0..k)
                .map(|i| {
                    let (_, e) = s
                        .create_collection(&owner, &format!("c{}", made + i), now())
                        .unwrap();
                    s.apply(&e).unwrap();
                    e
                })
                .collect();
            assert_eq!(call(append(&state, &batch)).await, StatusCode::OK);
            state = s;
            made += k;
        }
        let copies: Vec<Duration> = (0..11)
            .map(|_| {
                let start = Instant::now();
                let c = std::hint::black_box(state.clone());
                let d = start.elapsed();
                drop(c);
                d
            })
            .collect();
        let mut reloads = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let loaded = relay.state.load(vault).await.unwrap();
            reloads.push(start.elapsed());
            assert_eq!(loaded.head().seq, state.head().seq);
        }
        let mut appends = Vec::new();
        for round in 0..21 {
            let mut s = state.clone();
            let batch: Vec<LogEntry> = (0..2)
                .map(|i| {
                    let (_, e) = s
                        .create_collection(&owner, &format!("x{round}-{i}"), now())
                        .unwrap();
                    s.apply(&e).unwrap();
                    e
                })
                .collect();
            let req = append(&state, &batch);
            let start = Instant::now();
            assert_eq!(call(req).await, StatusCode::OK);
            appends.push(start.elapsed());
            state = s;
        }
        println!(
            "vault of {n} entries: a copy of its verified state (paid by every multi-entry append before) {:?}; rebuilding it from storage (a refusal half-way through a batch) {:?}; a two-entry append through the router, durable {:?} (medians)",
            median(copies),
            median(reloads),
            median(appends)
        );
    });
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    replay_cache();
    vault(if quick { 5_000 } else { 50_000 });
}
