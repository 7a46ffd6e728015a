//! Load on the real relay (release build) over loopback: 200 concurrent
//! clients, each its own identity, on `LOAD_VAULTS` vaults (default 100) of
//! `LOAD_MEMBERS` members each (default 2: the patient and a read-write
//! clinician, as vaults are used; `LOAD_VAULTS=20 LOAD_MEMBERS=10` makes
//! ten writers race on each vault's compare-and-swap), for `LOAD_SECONDS`
//! seconds (default 60; `-- --quick`: 10). At most 255 clients (identities
//! come from one-byte seeds).
//!
//! Each client loops over a mix: 70% reads (a third each: the head, a page
//! of the log from a random point, a blob download of a record already in
//! the vault) and 30% writes (seal a 0.5–8 KiB record, upload its blob,
//! append its record-put with compare-and-swap, sealing again on the new
//! head when another member got there first).
//!
//! Prints throughput by kind of operation, p50/p99/max latency, the
//! compare-and-swap retries (expected, not errors) and every error (any
//! other failure); exits non-zero if there was any error.
//!
//! Run: `cargo build --release -p relay-server && cargo bench -p vault-tests --bench load [-- --quick]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vault_client::{sync, ClientError, RelayClient, RetryPolicy};
use vault_core::store::MemoryStore;
use vault_core::{
    CollectionId, Keyring, LogEntry, Permission, RecordInfo, Role, SecretIdentity, VaultId,
    VaultState,
};
use vault_tests::{principal, RelayProcess, Rng};

/// A positive count from the environment, or `default`.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

struct Vault {
    id: VaultId,
    owner: Arc<SecretIdentity>,
    labs: CollectionId,
    /// Blobs named by record-puts: (hash, length).
    blobs: Mutex<Vec<([u8; 32], u64)>>,
}

#[derive(Default)]
struct Stats {
    /// Latencies in microseconds by kind.
    lat: BTreeMap<&'static str, Vec<u64>>,
    cas_retries: u64,
    errors: Vec<String>,
}

fn info(now: u64) -> RecordInfo {
    RecordInfo {
        content_type: "text/plain".into(),
        title: "load".into(),
        created_at: now,
        effective_at: None,
    }
}

fn client(relay: &RelayProcess, who: &Arc<SecretIdentity>) -> RelayClient {
    // No retries: any failure is counted, not hidden by a retry.
    relay.client(who).with_retry_policy(RetryPolicy::none())
}

/// Seals a record of `len` bytes as the client's identity on `state`.
fn seal(
    me: &Arc<SecretIdentity>,
    state: &VaultState,
    labs: &CollectionId,
    len: usize,
    now: u64,
) -> (Vec<u8>, [u8; 32], LogEntry) {
    let body = vec![0x42u8; len];
    let mut ct = Vec::new();
    let (meta, e) = state
        .put_record(
            &mut Keyring::new(me, now),
            labs,
            None,
            &info(now),
            vault_core::RecordBody::new(&body[..], len as u64),
            &mut ct,
        )
        .unwrap();
    (ct, *meta.ciphertext_hash(), e)
}

/// One record: upload, then append with CAS retries. Returns the upload
/// and append latencies.
async fn write_record(
    c: &RelayClient,
    store: &mut MemoryStore,
    v: &Vault,
    len: usize,
    stats: &Mutex<Stats>,
) -> Result<(Duration, Duration), ClientError> {
    let me = c.identity().clone();
    let mut upload = Duration::ZERO;
    let t_append = Instant::now();
    loop {
        let state = sync::pull(store, c, &v.id).await?;
        let now = c.now();
        let (ct, hash, e) = seal(&me, &state, &v.labs, len, now);
        let t = Instant::now();
        c.put_blob(&v.id, &hash, ct.len() as u64, &mut Cursor::new(&ct[..]))
            .await?;
        upload += t.elapsed();
        match c
            .append(&v.id, state.head().into(), std::slice::from_ref(&e))
            .await
        {
            Ok(_) => {
                v.blobs.lock().unwrap().push((hash, ct.len() as u64));
                return Ok((upload, t_append.elapsed().saturating_sub(upload)));
            }
            Err(ClientError::HeadMoved { .. }) => stats.lock().unwrap().cas_retries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 10 } else { 60 });
    let (vault_count, member_count) = (env_count("LOAD_VAULTS", 100), env_count("LOAD_MEMBERS", 2));
    assert!(
        vault_count * member_count <= 255,
        "at most 255 clients (LOAD_VAULTS × LOAD_MEMBERS)"
    );
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    println!(
        "load: {} clients on {vault_count} vaults × {member_count} members, {seconds} s, relay {}",
        vault_count * member_count,
        relay.url
    );

    // Setup: identities, vaults, shares, a few records per vault.
    let t_setup = Instant::now();
    let mut vaults = Vec::new();
    let mut people: Vec<(Arc<SecretIdentity>, usize)> = Vec::new();
    for v in 0..vault_count {
        let owner = principal((v * member_count + 1) as u8, "Owner", Role::Patient);
        let oc = client(&relay, &owner);
        oc.publish_identity().await.unwrap();
        let members: Vec<Arc<SecretIdentity>> = (1..member_count)
            .map(|m| {
                principal(
                    (v * member_count + 1 + m) as u8,
                    "Clinician",
                    Role::Clinician,
                )
            })
            .collect();
        for m in &members {
            client(&relay, m).publish_identity().await.unwrap();
        }
        let mut store = MemoryStore::new();
        let (_, genesis) = VaultState::create(&owner, oc.now()).unwrap();
        let id = genesis.vault();
        sync::create_vault(&mut store, &oc, &genesis).await.unwrap();
        let mut labs = None;
        sync::push_with_retry(&mut store, &oc, &id, |s| {
            let now = oc.now();
            let (cid, e) = s.create_collection(&owner, "labs", now)?;
            labs = Some(cid);
            let mut next = s.clone();
            next.apply(&e)?;
            let mut out = vec![e];
            let mut kr = Keyring::new(&owner, now);
            for m in &members {
                let share =
                    next.share_collection(&mut kr, &cid, m.public(), Permission::ReadWrite, None)?;
                next.apply(&share)?;
                out.push(share);
            }
            Ok(out)
        })
        .await
        .unwrap();
        let vault = Arc::new(Vault {
            id,
            owner: owner.clone(),
            labs: labs.unwrap(),
            blobs: Mutex::new(Vec::new()),
        });
        let dummy = Mutex::new(Stats::default());
        for i in 0..4 {
            write_record(&oc, &mut store, &vault, 512 + i * 1024, &dummy)
                .await
                .unwrap();
        }
        people.push((owner, v));
        for m in members {
            people.push((m, v));
        }
        vaults.push(vault);
    }
    println!(
        "setup: {} identities, {} vaults in {:.1} s",
        people.len(),
        vaults.len(),
        t_setup.elapsed().as_secs_f64()
    );

    // Each client joins its vault (verifying the log) before the clock starts.
    let stats = Arc::new(Mutex::new(Stats::default()));
    let ops = Arc::new(AtomicU64::new(0));
    let start_gate = Arc::new(tokio::sync::Barrier::new(people.len() + 1));
    let go = Arc::new(tokio::sync::Barrier::new(people.len() + 1));
    let deadline = Arc::new(Mutex::new(None::<Instant>));
    let mut tasks = Vec::new();
    for (i, (who, v)) in people.into_iter().enumerate() {
        let c = client(&relay, &who);
        let vault = vaults[v].clone();
        let (stats, ops, gate, go, deadline) = (
            stats.clone(),
            ops.clone(),
            start_gate.clone(),
            go.clone(),
            deadline.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut store = MemoryStore::new();
            sync::join_vault(&mut store, &c, &vault.id, &vault.owner.fingerprint())
                .await
                .unwrap();
            let mut rng = Rng::new(0x5eed ^ (i as u64) << 20);
            let mut local: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
            let mut errors = Vec::new();
            gate.wait().await;
            go.wait().await;
            let end = deadline.lock().unwrap().unwrap();
            while Instant::now() < end {
                let roll = rng.below(100);
                let t = Instant::now();
                let (kind, r): (&'static str, Result<(), ClientError>) = if roll < 70 {
                    match roll % 3 {
                        0 => ("head", c.head(&vault.id).await.map(|_| ())),
                        1 => {
                            let head = store_head(&store, &vault.id);
                            let since = rng.below(head + 1);
                            (
                                "log_page",
                                c.fetch_log(&vault.id, since, 100).await.map(|_| ()),
                            )
                        }
                        _ => {
                            let pick = {
                                let b = vault.blobs.lock().unwrap();
                                b[rng.below(b.len() as u64) as usize]
                            };
                            let mut out = Vec::with_capacity(pick.1 as usize);
                            (
                                "blob_get",
                                c.get_blob(
                                    &vault.id,
                                    &pick.0,
                                    vault_core::address::AddressKind::CURRENT,
                                    pick.1,
                                    &mut out,
                                )
                                .await,
                            )
                        }
                    }
                } else {
                    let len = 512 + rng.below(7 * 1024 + 512) as usize;
                    match write_record(&c, &mut store, &vault, len, &stats).await {
                        Ok((up, app)) => {
                            local
                                .entry("blob_put")
                                .or_default()
                                .push(up.as_micros() as u64);
                            local
                                .entry("append(+cas)")
                                .or_default()
                                .push(app.as_micros() as u64);
                            ("record_write", Ok(()))
                        }
                        Err(e) => ("record_write", Err(e)),
                    }
                };
                let us = t.elapsed().as_micros() as u64;
                ops.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(()) => local.entry(kind).or_default().push(us),
                    Err(e) => errors.push(format!("{kind}: {} ({e})", e.code())),
                }
            }
            let mut s = stats.lock().unwrap();
            for (k, v) in local {
                s.lat.entry(k).or_default().extend(v);
            }
            s.errors.extend(errors);
        }));
    }
    // Every client joins first; the clock starts when all have.
    start_gate.wait().await;
    let t0 = Instant::now();
    *deadline.lock().unwrap() = Some(t0 + Duration::from_secs(seconds));
    go.wait().await;
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let peak = relay.peak_rss().unwrap_or(0);

    let s = stats.lock().unwrap();
    println!(
        "\n{:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "operation", "count", "ops/s", "p50 ms", "p99 ms", "max ms"
    );
    let mut total = 0usize;
    for (kind, v) in &s.lat {
        let mut v = v.clone();
        v.sort_unstable();
        if !matches!(*kind, "blob_put" | "append(+cas)") {
            total += v.len();
        }
        println!(
            "{:<14} {:>9} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
            kind,
            v.len(),
            v.len() as f64 / elapsed,
            pct(&v, 0.50) as f64 / 1000.0,
            pct(&v, 0.99) as f64 / 1000.0,
            v.last().copied().unwrap_or(0) as f64 / 1000.0
        );
    }
    println!(
        "total: {total} successful operations in {elapsed:.1} s = {:.0} ops/s ({} attempted); \
         CAS retries (head_moved, expected): {}; errors: {}; relay peak RSS {} MiB",
        total as f64 / elapsed,
        ops.load(Ordering::Relaxed),
        s.cas_retries,
        s.errors.len(),
        peak >> 20
    );
    if !s.errors.is_empty() {
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &s.errors {
            *by.entry(e.as_str()).or_default() += 1;
        }
        for (e, n) in by.iter().take(20) {
            println!("  error ×{n}: {e}");
        }
        std::process::exit(1);
    }
}

fn store_head(store: &MemoryStore, vault: &VaultId) -> u64 {
    use vault_core::store::Store;
    store.head(vault).ok().flatten().map(|h| h.seq).unwrap_or(0)
}
