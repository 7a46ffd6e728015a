//! Crash test of the relay: `kill -9` the real `relay-server` while clients
//! append concurrently, restart it on the same data directory and port, and
//! check that every acknowledged entry and blob is present and verifies, and
//! that nothing unacknowledged is half-visible.
//!
//! One relay process runs for the whole test. Each cycle starts writer tasks
//! (the patient and a read-write clinician on one vault, so their
//! compare-and-swap appends race; a second patient on a second vault, so
//! group commits batch across vaults), each sealing records of a few hundred
//! bytes to ~300 KiB (uploaded in 64 KiB chunks), uploading the blob and
//! appending the record-put. Every acknowledgement is written down the
//! moment it arrives. After a random 100–700 ms the relay is killed with
//! SIGKILL, the writers are stopped, and the relay restarted. Then, with
//! fresh clients and stores:
//!
//! - each vault's whole log is fetched and verified by vault-core
//!   (`sync::join_vault`: chain, signatures, rules), and a store kept since
//!   the previous cycle pulls without rollback or fork (so do the writers'
//!   stores, at the start of the next cycle);
//! - every entry acknowledged so far is in the log at its sequence number
//!   with its hash;
//! - every blob acknowledged in the cycle downloads, with its length and
//!   hash (also those no entry names: a lost race, or a kill between upload
//!   and append);
//! - every record-put the log gained has its blob (no dangling entry), and
//!   a few older ones are downloaded again;
//! - a blob whose upload was in flight at the kill is either absent or
//!   exactly right, never other bytes, and its upload resumes to completion
//!   with `RelayClient::put_blob`;
//! - the relay accepts new records (one per vault).
//!
//! After the last cycle every acknowledged blob and every record-put's blob
//! is downloaded once more.
//!
//! With `VAULT_TEST_RELAY=cluster` the relay is a whole `scripts/cluster`
//! (PostgreSQL, SeaweedFS, three relays behind haproxy): the writers go
//! through haproxy, every instance is killed at once, the script starts
//! them again, and an upload cut by the kill resumes at once on any
//! instance (its S3 lease's holder session closed with the process,
//! decision 46). After the kill, haproxy's own `503 unavailable` counts
//! as the relay gone, like a refused connection.
//!
//! `VAULT_CRASH_CYCLES` sets the number of cycles (default 20),
//! `VAULT_CRASH_SEED` the random seed (printed; the kill times and record
//! sizes follow from it, the exact interleaving does not).
//! `VAULT_CRASH_KEEP_GOING=1` runs every cycle and reports all violations
//! at the end instead of stopping at the first cycle with one. Run with
//! `--nocapture` to see one line per cycle. On failure the data directory
//! is kept and its path printed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vault_client::{sync, ClientError, RelayClient, RetryPolicy};
use vault_core::store::{MemoryStore, Store};
use vault_core::{
    CollectionId, EntryBody, Keyring, Permission, RecordInfo, Role, SecretIdentity, VaultId,
    VaultState,
};
use vault_tests::{principal, RelayProcess, Rng};

/// Upload chunk of the writers: blobs over 64 KiB take several requests.
const CHUNK: usize = 64 * 1024;
/// Older record-put blobs re-downloaded per cycle (all are, at the end).
const SAMPLE_OLD: usize = 4;
/// Blob downloads in flight at once while checking.
const PARALLEL_DOWNLOADS: usize = 8;

/// A record body size: mostly small, one in four spanning several upload
/// chunks.
fn body_size(rng: &mut Rng) -> u64 {
    if rng.next_u64() % 4 == 0 {
        rng.range(64 * 1024, 300 * 1024)
    } else {
        rng.range(200, 8 * 1024)
    }
}

// ----- what the writers were told --------------------------------------------

/// An append the relay acknowledged (`200` with the entry as head).
#[derive(Clone)]
struct AckedEntry {
    vault: VaultId,
    seq: u64,
    hash: [u8; 32],
    blob: [u8; 32],
    blob_len: u64,
    cycle: u32,
}

/// A blob upload the relay acknowledged (stored: `201` or `200`).
#[derive(Clone)]
struct AckedBlob {
    vault: VaultId,
    hash: [u8; 32],
    len: u64,
    cycle: u32,
}

/// A blob upload started and not (yet) acknowledged.
#[derive(Clone)]
struct Pending {
    vault: VaultId,
    hash: [u8; 32],
    uploader: Arc<SecretIdentity>,
    ciphertext: Arc<Vec<u8>>,
}

#[derive(Default)]
struct Ledger {
    entries: Vec<AckedEntry>,
    blobs: Vec<AckedBlob>,
    /// Per writer, the upload in flight (this cycle).
    in_flight: HashMap<usize, Pending>,
    /// Compare-and-swap refusals seen by the writers (this cycle).
    cas_conflicts: usize,
    /// Writer failures other than a transport error (this cycle).
    errors: Vec<String>,
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

// ----- the setting -------------------------------------------------------------

struct Vault {
    name: &'static str,
    id: VaultId,
    owner: Arc<SecretIdentity>,
    collection: CollectionId,
}

struct Writer {
    who: Arc<SecretIdentity>,
    vault: usize,
    /// The writer's local store, kept across cycles: after a restart its
    /// first pull also checks the relay did not roll back what it saw.
    store: Arc<tokio::sync::Mutex<MemoryStore>>,
}

fn info(now: u64) -> RecordInfo {
    RecordInfo {
        content_type: "fhir+Observation".into(),
        title: "crash-test observation".into(),
        created_at: now,
        effective_at: None,
    }
}

fn body(rng: &mut Rng) -> Vec<u8> {
    let len = body_size(rng);
    let salt = rng.next_u64();
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ salt.rotate_left((i % 64) as u32)) as u8)
        .collect()
}

fn writer_client(relay: &RelayProcess, who: &Arc<SecretIdentity>) -> RelayClient {
    // No retries: once the relay is killed, the writers stop at once.
    relay
        .client(who)
        .with_retry_policy(RetryPolicy::none())
        .with_chunk_size(CHUNK)
}

/// One writer task of one cycle.
struct Job {
    id: usize,
    client: RelayClient,
    vault: VaultId,
    collection: CollectionId,
    ledger: Arc<Mutex<Ledger>>,
    cycle: u32,
    /// Set just before the kill: from then on, a load balancer's `503
    /// unavailable` (in cluster mode haproxy answers so once no instance
    /// is left) means the relay went away, as a failed connection does.
    killed: Arc<std::sync::atomic::AtomicBool>,
}

impl Job {
    /// Writes records until the relay goes away.
    async fn run(self, store: Arc<tokio::sync::Mutex<MemoryStore>>, mut rng: Rng) {
        let mut store = store.lock().await;
        let err = loop {
            if let Err(e) = self.write_one(&mut store, &mut rng).await {
                break e;
            }
        };
        // The relay was killed: anything but a failed connection (or,
        // after the kill, the load balancer's 503) is a finding (a
        // rollback or fork seen by the writer's pull, a refusal, a 500).
        let gone = matches!(err, ClientError::Transport(_))
            || (self.killed.load(std::sync::atomic::Ordering::SeqCst)
                && err.code() == "unavailable");
        if !gone {
            lock(&self.ledger)
                .errors
                .push(format!("writer {} ({}): {err}", self.id, err.code()));
        }
    }

    /// One record: seal, upload the blob, append with compare-and-swap
    /// (sealing again on a moved head). Acknowledgements go to the ledger
    /// as they arrive.
    async fn write_one(&self, store: &mut MemoryStore, rng: &mut Rng) -> Result<(), ClientError> {
        let (client, vault, ledger) = (&self.client, self.vault, &*self.ledger);
        let me = client.identity().clone();
        let body = body(rng);
        loop {
            let state = sync::pull(store, client, &vault).await?;
            let now = client.now();
            let mut ciphertext = Vec::new();
            let (metadata, entry) = state.put_record(
                &mut Keyring::new(&me, now),
                &self.collection,
                None,
                &info(now),
                vault_core::RecordBody::new(&body[..], body.len() as u64),
                &mut ciphertext,
            )?;
            let hash = *metadata.ciphertext_hash();
            let len = ciphertext.len() as u64;
            assert_eq!(len, metadata.ciphertext_len());
            let ciphertext = Arc::new(ciphertext);
            lock(ledger).in_flight.insert(
                self.id,
                Pending {
                    vault,
                    hash,
                    uploader: me.clone(),
                    ciphertext: ciphertext.clone(),
                },
            );
            let status = client
                .put_blob(&vault, &hash, len, &mut Cursor::new(&ciphertext[..]))
                .await?;
            assert!(status.stored && status.offset == len, "{status:?}");
            {
                let mut l = lock(ledger);
                l.in_flight.remove(&self.id);
                l.blobs.push(AckedBlob {
                    vault,
                    hash,
                    len,
                    cycle: self.cycle,
                });
            }
            match client
                .append(&vault, state.head().into(), std::slice::from_ref(&entry))
                .await
            {
                Ok(_) => {
                    lock(ledger).entries.push(AckedEntry {
                        vault,
                        seq: entry.seq(),
                        hash: *entry.hash(),
                        blob: hash,
                        blob_len: len,
                        cycle: self.cycle,
                    });
                    return Ok(());
                }
                // Another writer got there first: seal again on the new
                // head (the uploaded blob stays, acknowledged and
                // unreferenced).
                Err(ClientError::HeadMoved { .. }) => lock(ledger).cas_conflicts += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

// ----- checking ------------------------------------------------------------------

/// Downloads a blob as `who`; `Ok(None)` if the relay does not have it (the
/// client reports a `404 blob_not_found` as `missing_or_withheld`).
async fn download(
    client: &RelayClient,
    vault: &VaultId,
    hash: &[u8; 32],
    len: u64,
) -> Result<Option<Vec<u8>>, ClientError> {
    let mut out = Vec::new();
    match client
        .get_blob(
            vault,
            hash,
            vault_core::address::AddressKind::CURRENT,
            len,
            &mut out,
        )
        .await
    {
        Ok(()) => Ok(Some(out)),
        Err(ClientError::Core(vault_core::Error::Missing { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks a blob that must be stored: it downloads, has `len` bytes and
/// hashes to its address (`get_blob` checks the hash; checked again here).
async fn check_blob(
    client: &RelayClient,
    vault: &VaultId,
    hash: &[u8; 32],
    len: u64,
    what: &str,
) -> Option<String> {
    match download(client, vault, hash, len).await {
        Ok(Some(bytes))
            if bytes.len() as u64 == len
                && vault_core::address::AddressKind::CURRENT.digest(&bytes) == *hash =>
        {
            None
        }
        Ok(Some(bytes)) => Some(format!(
            "{what} blob {} came back with {} bytes hashing to {} (expected {len} bytes)",
            hex::encode(hash),
            bytes.len(),
            hex::encode(vault_core::address::AddressKind::CURRENT.digest(&bytes))
        )),
        Ok(None) => Some(format!(
            "{what} blob {} ({len} bytes) is missing: blob_not_found",
            hex::encode(hash)
        )),
        Err(e) => Some(format!(
            "{what} blob {} ({len} bytes) does not download: {e}",
            hex::encode(hash)
        )),
    }
}

/// [`check_blob`] for many blobs, a few downloads at a time.
async fn check_blobs(
    client: &RelayClient,
    vault: VaultId,
    wanted: BTreeMap<[u8; 32], (u64, String)>,
    violations: &mut Vec<String>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (hash, (len, what)) in wanted {
        if tasks.len() >= PARALLEL_DOWNLOADS {
            if let Some(found) = tasks.join_next().await.unwrap().unwrap() {
                violations.push(found);
            }
        }
        let client = client.clone();
        tasks.spawn(async move { check_blob(&client, &vault, &hash, len, &what).await });
    }
    while let Some(done) = tasks.join_next().await {
        if let Some(found) = done.unwrap() {
            violations.push(found);
        }
    }
}

/// The record-put blobs (seq, hash, length) of a stored log from `since`.
fn record_blobs(store: &MemoryStore, vault: &VaultId, since: u64) -> Vec<(u64, [u8; 32], u64)> {
    store
        .entries(vault, since)
        .unwrap()
        .iter()
        .filter_map(|e| match e.body() {
            EntryBody::RecordPut { metadata } => Some((
                e.seq(),
                *metadata.ciphertext_hash(),
                metadata.ciphertext_len(),
            )),
            _ => None,
        })
        .collect()
}

struct CycleReport {
    heads: Vec<u64>,
    in_flight: usize,
    in_flight_visible: usize,
    downloaded: usize,
}

/// Everything checked after a restart. Findings go to `violations`.
#[allow(clippy::too_many_arguments)]
async fn verify(
    relay: &RelayProcess,
    vaults: &[Vault],
    followers: &mut [MemoryStore],
    checked_upto: &mut [u64],
    ledger: &Mutex<Ledger>,
    cycle: u32,
    rng: &mut Rng,
    violations: &mut Vec<String>,
) -> CycleReport {
    let (acked_entries, acked_blobs, in_flight): (Vec<AckedEntry>, Vec<AckedBlob>, Vec<Pending>) = {
        let l = lock(ledger);
        (
            l.entries.clone(),
            l.blobs
                .iter()
                .filter(|b| b.cycle == cycle)
                .cloned()
                .collect(),
            l.in_flight.values().cloned().collect(),
        )
    };
    let mut report = CycleReport {
        heads: Vec::new(),
        in_flight: in_flight.len(),
        in_flight_visible: 0,
        downloaded: 0,
    };
    for (i, v) in vaults.iter().enumerate() {
        let owner = relay.client(&v.owner);
        // The whole log, from genesis, verified by vault-core.
        let mut fresh = MemoryStore::new();
        let state = match sync::join_vault(&mut fresh, &owner, &v.id, &v.owner.fingerprint()).await
        {
            Ok(s) => s,
            Err(e) => {
                violations.push(format!(
                    "vault {}: the log does not verify after the restart: {e} ({})",
                    v.name,
                    e.code()
                ));
                report.heads.push(u64::MAX);
                continue;
            }
        };
        let head = state.head();
        report.heads.push(head.seq);
        let mut wanted: BTreeMap<[u8; 32], (u64, String)> = BTreeMap::new();
        // A store kept since the previous cycle: no rollback, no fork.
        match sync::pull(&mut followers[i], &owner, &v.id).await {
            Ok(s) if s.head() == head => {}
            Ok(s) => violations.push(format!(
                "vault {}: the follower reached entry {} while a fresh join reached {}",
                v.name,
                s.head().seq,
                head.seq
            )),
            Err(e) => violations.push(format!(
                "vault {}: pulling onto the log verified in the previous cycle failed: {e} ({})",
                v.name,
                e.code()
            )),
        }
        // Every acknowledged entry, at its place.
        for a in acked_entries.iter().filter(|a| a.vault == v.id) {
            match state.checkpoint_at(a.seq) {
                Some(c) if c.head == a.hash => {}
                Some(c) => violations.push(format!(
                    "vault {}: acknowledged entry {} (cycle {}) was {}, the log has {} there",
                    v.name,
                    a.seq,
                    a.cycle,
                    hex::encode(a.hash),
                    hex::encode(c.head)
                )),
                None => violations.push(format!(
                    "vault {}: acknowledged entry {} (cycle {}, {}) is lost: the log ends at {}",
                    v.name,
                    a.seq,
                    a.cycle,
                    hex::encode(a.hash),
                    head.seq
                )),
            }
            if a.cycle == cycle {
                wanted.entry(a.blob).or_insert((
                    a.blob_len,
                    format!("vault {}: acknowledged entry {}'s", v.name, a.seq),
                ));
            }
        }
        // Every blob acknowledged this cycle (also those no entry names:
        // the append lost a race or never happened).
        for b in acked_blobs.iter().filter(|b| b.vault == v.id) {
            wanted
                .entry(b.hash)
                .or_insert((b.len, format!("vault {}: acknowledged", v.name)));
        }
        // No dangling entry: every record-put the log gained since the last
        // check (acknowledged or not) has its blob; plus a few older ones.
        let new = record_blobs(&fresh, &v.id, checked_upto[i] + 1);
        let old = record_blobs(&fresh, &v.id, 0);
        let old: Vec<_> = old
            .iter()
            .filter(|(seq, ..)| *seq <= checked_upto[i])
            .collect();
        let mut sample = Vec::new();
        for _ in 0..SAMPLE_OLD.min(old.len()) {
            sample.push(*old[(rng.next_u64() % old.len() as u64) as usize]);
        }
        for (seq, hash, len) in new.iter().chain(sample.iter()) {
            let (want_len, _) = wanted
                .entry(*hash)
                .or_insert((*len, format!("vault {}: entry {seq}'s", v.name)));
            if *want_len != *len {
                violations.push(format!(
                    "vault {}: entry {seq} names blob {} of {len} bytes, acknowledged with {want_len}",
                    v.name,
                    hex::encode(hash)
                ));
            }
        }
        // Each blob once: it downloads, with its length and hash.
        report.downloaded += wanted.len();
        check_blobs(&owner, v.id, wanted, violations).await;
        checked_upto[i] = head.seq;
    }
    // Uploads in flight at the kill: absent, or complete and exactly right
    // (never a prefix, never other bytes); and they resume to completion.
    for p in &in_flight {
        let v = vaults.iter().find(|v| v.id == p.vault).unwrap();
        let owner = relay.client(&v.owner);
        let len = p.ciphertext.len() as u64;
        let name = format!(
            "vault {}: unacknowledged upload {} ({len} bytes)",
            v.name,
            hex::encode(p.hash)
        );
        match download(&owner, &p.vault, &p.hash, len).await {
            Ok(None) => {}
            Ok(Some(bytes)) if bytes == *p.ciphertext => report.in_flight_visible += 1,
            Ok(Some(bytes)) => violations.push(format!(
                "{name} is visible with {} wrong bytes",
                bytes.len()
            )),
            Err(e) => violations.push(format!("{name}: downloading it failed: {e}")),
        }
        let uploader = relay.client(&p.uploader).with_chunk_size(CHUNK);
        let status = match uploader.upload_status(&p.vault, &p.hash).await {
            Ok(s) if s.offset <= len => format!("{s:?}"),
            Ok(s) => {
                violations.push(format!("{name} stands at offset {}", s.offset));
                continue;
            }
            Err(e) => {
                violations.push(format!("{name}: its upload status failed: {e}"));
                continue;
            }
        };
        // The interrupted upload resumes to completion from wherever the
        // relay says it stands.
        match uploader
            .put_blob(&p.vault, &p.hash, len, &mut Cursor::new(&p.ciphertext[..]))
            .await
        {
            Ok(s) if s.stored => {
                violations.extend(check_blob(&owner, &p.vault, &p.hash, len, "resumed").await);
                lock(ledger).blobs.push(AckedBlob {
                    vault: p.vault,
                    hash: p.hash,
                    len,
                    cycle,
                });
            }
            Ok(s) => violations.push(format!("{name}: resuming ended with {s:?}")),
            Err(e) => violations.push(format!(
                "{name}: resuming the upload after the restart failed (upload status after the restart: {status}): {e}"
            )),
        }
    }
    report
}

/// After the restart the relay still takes writes: one record per vault,
/// through `sync::push_record` (the clinician on the shared vault).
async fn append_after_restart(
    relay: &RelayProcess,
    vault: &Vault,
    author: &Arc<SecretIdentity>,
    ledger: &Mutex<Ledger>,
    cycle: u32,
    rng: &mut Rng,
    violations: &mut Vec<String>,
) {
    let client = relay.client(author).with_chunk_size(CHUNK);
    let mut store = MemoryStore::new();
    let body = body(rng);
    let pushed = async {
        sync::join_vault(&mut store, &client, &vault.id, &vault.owner.fingerprint()).await?;
        sync::push_record(
            &mut store,
            &client,
            &vault.id,
            &mut Cursor::new(Vec::new()),
            |state, spool| {
                let now = client.now();
                Ok(state.put_record(
                    &mut Keyring::new(author, now),
                    &vault.collection,
                    None,
                    &info(now),
                    vault_core::RecordBody::new(&body[..], body.len() as u64),
                    spool,
                )?)
            },
        )
        .await
    }
    .await;
    match pushed {
        Ok((state, metadata)) => {
            let head = state.head();
            assert!(state.record(&metadata.record()).is_ok());
            let hash = *metadata.ciphertext_hash();
            let len = metadata.ciphertext_len();
            let mut l = lock(ledger);
            l.entries.push(AckedEntry {
                vault: vault.id,
                seq: head.seq,
                hash: head.head,
                blob: hash,
                blob_len: len,
                cycle,
            });
            l.blobs.push(AckedBlob {
                vault: vault.id,
                hash,
                len,
                cycle,
            });
        }
        Err(e) => violations.push(format!(
            "vault {}: the relay refused a new record after the restart: {e}",
            vault.name
        )),
    }
}

/// The final sweep: every blob ever acknowledged, and every record-put's
/// blob in every log.
async fn sweep(relay: &RelayProcess, vaults: &[Vault], ledger: &Mutex<Ledger>) -> Vec<String> {
    let mut violations = Vec::new();
    let blobs = lock(ledger).blobs.clone();
    for v in vaults {
        let owner = relay.client(&v.owner);
        let mut store = MemoryStore::new();
        if let Err(e) = sync::join_vault(&mut store, &owner, &v.id, &v.owner.fingerprint()).await {
            violations.push(format!("vault {}: final log check: {e}", v.name));
            continue;
        }
        let mut wanted = BTreeMap::new();
        for (seq, hash, len) in record_blobs(&store, &v.id, 0) {
            wanted.insert(
                hash,
                (len, format!("final: vault {} entry {seq}'s", v.name)),
            );
        }
        for b in blobs.iter().filter(|b| b.vault == v.id) {
            wanted
                .entry(b.hash)
                .or_insert((b.len, format!("final: vault {}: acknowledged", v.name)));
        }
        check_blobs(&owner, v.id, wanted, &mut violations).await;
    }
    violations
}

// ----- the test ----------------------------------------------------------------------

fn fail(dir: tempfile::TempDir, seed: u64, violations: &[String]) -> ! {
    let kept = dir.keep();
    panic!(
        "relay crash test: {} violation(s) (VAULT_CRASH_SEED={seed}); data directory kept at {} (relay log: {})\n  {}",
        violations.len(),
        kept.join("relay").display(),
        kept.join("relay.log").display(),
        violations.join("\n  ")
    );
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let cycles: u32 = std::env::var("VAULT_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("VAULT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    // Set to run every cycle and report every violation at the end (the
    // data directory then shows the state after the last cycle).
    let keep_going = std::env::var_os("VAULT_CRASH_KEEP_GOING").is_some();
    println!("relay crash test: {cycles} cycles, VAULT_CRASH_SEED={seed}");
    let mut found: Vec<String> = Vec::new();
    let started = Instant::now();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("relay");
    std::fs::create_dir_all(&data_dir).unwrap();
    // No rate limit in the way: a 429 is not what this test is about.
    let mut relay = RelayProcess::start(&data_dir, &["--rate", "1000000", "--burst", "1000000"]);

    let patient = principal(41, "Pat Crash", Role::Patient);
    let clinician = principal(42, "Dr Crash", Role::Clinician);
    let other = principal(43, "Quinn Crash", Role::Patient);

    // Setup: identities, two vaults with one collection each, the first
    // shared read-write with the clinician.
    let vaults: Vec<Vault> = rt.block_on(async {
        for who in [&patient, &clinician, &other] {
            relay.client(who).publish_identity().await.unwrap();
        }
        let mut vaults = Vec::new();
        for (name, owner) in [("A", &patient), ("B", &other)] {
            let client = relay.client(owner);
            let mut store = MemoryStore::new();
            let (_, genesis) = VaultState::create(owner, client.now()).unwrap();
            let state = sync::create_vault(&mut store, &client, &genesis)
                .await
                .unwrap();
            let id = state.vault();
            let mut collection = None;
            sync::push_with_retry(&mut store, &client, &id, |state| {
                let (c, e) = state.create_collection(owner, "Observations", client.now())?;
                collection = Some(c);
                Ok(vec![e])
            })
            .await
            .unwrap();
            let collection = collection.unwrap();
            if name == "A" {
                sync::push_with_retry(&mut store, &client, &id, |state| {
                    let now = client.now();
                    Ok(vec![state.share_collection(
                        &mut Keyring::new(owner, now),
                        &collection,
                        clinician.public(),
                        Permission::ReadWrite,
                        None,
                    )?])
                })
                .await
                .unwrap();
            }
            vaults.push(Vault {
                name,
                id,
                owner: owner.clone(),
                collection,
            });
        }
        vaults
    });

    // Writers: patient ×2 and clinician ×2 racing on vault A, the other
    // patient ×2 on vault B.
    let plan: [(&Arc<SecretIdentity>, usize); 6] = [
        (&patient, 0),
        (&clinician, 0),
        (&patient, 0),
        (&clinician, 0),
        (&other, 1),
        (&other, 1),
    ];
    let writers: Vec<Writer> = rt.block_on(async {
        let mut writers = Vec::new();
        for (who, vault) in plan {
            let v = &vaults[vault];
            let mut store = MemoryStore::new();
            sync::join_vault(
                &mut store,
                &relay.client(who),
                &v.id,
                &v.owner.fingerprint(),
            )
            .await
            .unwrap();
            writers.push(Writer {
                who: who.clone(),
                vault,
                store: Arc::new(tokio::sync::Mutex::new(store)),
            });
        }
        writers
    });
    let mut followers: Vec<MemoryStore> = rt.block_on(async {
        let mut out = Vec::new();
        for v in &vaults {
            let mut store = MemoryStore::new();
            sync::join_vault(
                &mut store,
                &relay.client(&v.owner),
                &v.id,
                &v.owner.fingerprint(),
            )
            .await
            .unwrap();
            out.push(store);
        }
        out
    });
    let mut checked_upto: Vec<u64> = followers
        .iter()
        .zip(&vaults)
        .map(|(s, v)| s.head(&v.id).unwrap().unwrap().seq)
        .collect();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut writer_acked = 0usize;

    for cycle in 1..=cycles {
        let mut rng = Rng::new(seed ^ u64::from(cycle).wrapping_mul(0xa076_1d64_78bd_642f));
        let delay = Duration::from_millis(rng.range(100, 700));
        let entries_before = lock(&ledger).entries.len();
        let blobs_before = lock(&ledger).blobs.len();
        {
            let mut l = lock(&ledger);
            l.in_flight.clear();
            l.cas_conflicts = 0;
            l.errors.clear();
        }

        // Write concurrently, then kill the relay mid-flight.
        let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(id, w)| {
                let v = &vaults[w.vault];
                let job = Job {
                    id,
                    client: writer_client(&relay, &w.who),
                    vault: v.id,
                    collection: v.collection,
                    ledger: ledger.clone(),
                    cycle,
                    killed: killed.clone(),
                };
                rt.spawn(job.run(w.store.clone(), Rng::new(rng.next_u64())))
            })
            .collect();
        std::thread::sleep(delay);
        killed.store(true, std::sync::atomic::Ordering::SeqCst);
        relay.kill9();
        rt.block_on(async {
            for h in handles {
                h.abort();
                if let Err(e) = h.await {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
        });
        let (acked_entries, acked_blobs, cas, writer_errors) = {
            let l = lock(&ledger);
            (
                l.entries.len() - entries_before,
                l.blobs.len() - blobs_before,
                l.cas_conflicts,
                l.errors.clone(),
            )
        };

        writer_acked += acked_entries;
        let restart = Instant::now();
        relay.restart();
        let restarted_ms = restart.elapsed().as_millis();

        let mut violations = writer_errors;
        let report = rt.block_on(async {
            let report = verify(
                &relay,
                &vaults,
                &mut followers,
                &mut checked_upto,
                &ledger,
                cycle,
                &mut rng,
                &mut violations,
            )
            .await;
            append_after_restart(
                &relay,
                &vaults[0],
                &clinician,
                &ledger,
                cycle,
                &mut rng,
                &mut violations,
            )
            .await;
            append_after_restart(
                &relay,
                &vaults[1],
                &other,
                &ledger,
                cycle,
                &mut rng,
                &mut violations,
            )
            .await;
            report
        });
        println!(
            "cycle {cycle:>2}/{cycles}: killed after {:>3} ms; acked {acked_entries:>2} entries, {acked_blobs:>2} blobs ({cas} CAS conflicts); {} uploads in flight ({} visible and complete); heads after restart A={} B={}; restart {restarted_ms} ms, checks {} ms ({} blobs downloaded); {} violations",
            delay.as_millis(),
            report.in_flight,
            report.in_flight_visible,
            report.heads[0],
            report.heads[1],
            restart.elapsed().as_millis() - restarted_ms,
            report.downloaded,
            violations.len()
        );
        found.extend(violations.iter().map(|v| format!("cycle {cycle}: {v}")));
        if !found.is_empty() && !keep_going {
            drop(relay);
            fail(dir, seed, &found);
        }
    }

    found.extend(rt.block_on(sweep(&relay, &vaults, &ledger)));
    let (entries, blobs) = {
        let l = lock(&ledger);
        (l.entries.len(), l.blobs.len())
    };
    println!(
        "relay crash test: {cycles} cycles in {:.1} s; {entries} acknowledged entries and {blobs} acknowledged blobs checked after the last restart; {} violations",
        started.elapsed().as_secs_f64(),
        found.len()
    );
    if !found.is_empty() {
        drop(relay);
        fail(dir, seed, &found);
    }
    // The writers did write: the test exercised something.
    assert!(
        writer_acked > 0,
        "no writer append was acknowledged in {cycles} cycles"
    );
}
