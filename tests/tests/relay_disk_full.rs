//! The real relay on a data directory that runs out of space, then
//! recovers.
//!
//! The data directory is a small tmpfs mounted for the test (the tests run
//! as root, so `chmod` would not stop writes; a size-limited tmpfs answers
//! `ENOSPC` exactly as a full disk does). A read-only remount is not
//! tested: the kernel refuses it (`EBUSY`) while the relay holds its
//! database open for writing. The test needs `mount` (root, or
//! `unshare -rm`); it says so and fails if it cannot mount.
//!
//! 1. Records are written and acknowledged.
//! 2. A filler file takes every free byte. Every kind of write is tried
//!    (chunked blob upload, batch blob upload, appends, a new vault, a new
//!    identity): each is either acknowledged (then it must be durable) or
//!    refused with `507 insufficient_storage` (a JSON error the client
//!    surfaces as a relay error), never a dropped connection; the relay keeps running and keeps
//!    serving reads.
//! 3. Space returns (the filler is removed): new writes
//!    succeed without a restart; after a restart, every acknowledged entry
//!    is in the log, which verifies from genesis on a fresh store
//!    (`sync::join_vault`), and every acknowledged blob downloads with its
//!    hash.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vault_client::{sync, ClientError, RelayClient, RetryPolicy};
use vault_core::store::MemoryStore;
use vault_core::{
    CollectionId, Keyring, LogEntry, RecordInfo, Role, SecretIdentity, VaultId, VaultState,
};
use vault_tests::{principal, RelayProcess};

/// Size of the tmpfs holding the data directory.
const FS_SIZE: &str = "24m";

/// A tmpfs mounted for the test, unmounted on drop.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    fn tmpfs(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={FS_SIZE},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs as the relay's data directory and needs root \
             (or CAP_SYS_ADMIN): mount said {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes zeros to `path` until the file system is full; returns how many
/// bytes fitted.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(
                    e.raw_os_error(),
                    Some(28),
                    "filling the file system: expected ENOSPC, got {e}"
                );
                break;
            }
        }
    }
    // Small writes, to take the last partial block too.
    loop {
        match f.write(&[0u8; 512]) {
            Ok(n) if n > 0 => written += n as u64,
            _ => break,
        }
    }
    written
}

/// Whether the process runs (and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

fn info(now: u64) -> RecordInfo {
    RecordInfo {
        content_type: "text/plain".into(),
        title: "result".into(),
        created_at: now,
        effective_at: None,
    }
}

/// What was acknowledged: entries (seq, hash) and blobs (hash, bytes).
#[derive(Default)]
struct Ledger {
    entries: Vec<(u64, [u8; 32])>,
    blobs: Vec<([u8; 32], Arc<Vec<u8>>)>,
}

struct Writer {
    client: RelayClient,
    store: MemoryStore,
    vault: VaultId,
    labs: CollectionId,
}

impl Writer {
    fn me(&self) -> Arc<SecretIdentity> {
        self.client.identity().clone()
    }

    /// Seals a record of `len` bytes on the current head.
    async fn seal(&mut self, len: usize, tag: u8) -> (VaultState, Vec<u8>, LogEntry) {
        let state = sync::pull(&mut self.store, &self.client, &self.vault)
            .await
            .unwrap();
        let me = self.me();
        let now = self.client.now();
        let body = vec![tag; len];
        let mut ct = Vec::new();
        let (_, e) = state
            .put_record(
                &mut Keyring::new(&me, now),
                &self.labs,
                None,
                &info(now),
                vault_core::RecordBody::new(&body[..], body.len() as u64),
                &mut ct,
            )
            .unwrap();
        (state, ct, e)
    }

    /// One record: chunked upload (or a batch), then the append. Each
    /// acknowledgement goes to the ledger as it arrives.
    async fn record(
        &mut self,
        len: usize,
        tag: u8,
        batch: bool,
        ledger: &mut Ledger,
    ) -> Result<(), ClientError> {
        let (state, ct, e) = self.seal(len, tag).await;
        let hash = vault_core::address::AddressKind::CURRENT.digest(&ct);
        if batch {
            self.client
                .put_blobs(&self.vault, &[(hash, &ct[..])])
                .await?;
        } else {
            let st = self
                .client
                .put_blob(
                    &self.vault,
                    &hash,
                    ct.len() as u64,
                    &mut Cursor::new(&ct[..]),
                )
                .await?;
            assert!(st.stored, "{st:?}");
        }
        ledger.blobs.push((hash, Arc::new(ct)));
        self.client
            .append(&self.vault, state.head().into(), std::slice::from_ref(&e))
            .await?;
        ledger.entries.push((e.seq(), *e.hash()));
        Ok(())
    }
}

/// A write refused because of the disk must be the relay's `507
/// insufficient_storage` (a JSON answer the client parsed), not a dropped
/// connection, a generic 500 or a 4xx blaming the client.
fn assert_clean_refusal(what: &str, r: Result<(), ClientError>, outcomes: &mut Vec<String>) {
    match r {
        Ok(()) => outcomes.push(format!("{what}: acknowledged")),
        Err(ClientError::Relay {
            status,
            code,
            message,
            ..
        }) => {
            assert_eq!(
                (status, code.as_str()),
                (507, "insufficient_storage"),
                "{what}: refused with {status} {code} ({message}): a full disk is the relay's \
                 failure, reported as such"
            );
            outcomes.push(format!("{what}: {status} {code} ({message})"));
        }
        Err(e) => panic!("{what}: the client did not get a clean error from the relay: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_cleanly_and_loses_nothing() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    let _mount = Mount::tmpfs(&data);
    let mut relay = RelayProcess::start(&data, &["--max-chunk", "64KiB"]);
    let patient = principal(1, "Pat Patient", Role::Patient);
    let nurse = principal(2, "Nurse Nia", Role::Clinician);
    let newcomer = principal(3, "Dr New", Role::Clinician);
    let client = |who: &Arc<SecretIdentity>, relay: &RelayProcess| {
        relay
            .client(who)
            .with_retry_policy(RetryPolicy::none())
            .with_chunk_size(64 * 1024)
    };
    let pc = client(&patient, &relay);
    pc.publish_identity().await.unwrap();
    client(&nurse, &relay).publish_identity().await.unwrap();

    // 1. A vault with acknowledged records.
    let mut store = MemoryStore::new();
    let (_, genesis) = VaultState::create(&patient, pc.now()).unwrap();
    let vault = genesis.vault();
    sync::create_vault(&mut store, &pc, &genesis).await.unwrap();
    let mut labs = None;
    sync::push_with_retry(&mut store, &pc, &vault, |s| {
        let (id, e) = s.create_collection(&patient, "labs", pc.now())?;
        labs = Some(id);
        Ok(vec![e])
    })
    .await
    .unwrap();
    let mut w = Writer {
        client: pc,
        store,
        vault,
        labs: labs.unwrap(),
    };
    let mut ledger = Ledger::default();
    for i in 0..12u8 {
        let batch = i % 3 == 0;
        w.record(if batch { 2_000 } else { 150_000 }, i, batch, &mut ledger)
            .await
            .unwrap();
    }
    let acked_before = ledger.entries.len();

    // 2. The disk fills up.
    let filler = data.join("filler");
    let filled = fill(&filler);
    let mut outcomes = Vec::new();
    for (i, (len, batch)) in [
        (300_000usize, false),
        (150_000, false),
        (3_000, true),
        (200, true),
    ]
    .into_iter()
    .enumerate()
    {
        let r = w.record(len, 100 + i as u8, batch, &mut ledger).await;
        assert_clean_refusal(
            &format!("disk full: {len}-byte record (batch: {batch})"),
            r,
            &mut outcomes,
        );
    }
    // Metadata-only writes: an append with no blob, a vault, an identity.
    let r = async {
        let state = sync::pull(&mut w.store, &w.client, &w.vault).await?;
        let (_, e) = state.create_collection(&patient, "imaging", w.client.now())?;
        w.client
            .append(&w.vault, state.head().into(), std::slice::from_ref(&e))
            .await?;
        ledger.entries.push((e.seq(), *e.hash()));
        Ok(())
    }
    .await;
    assert_clean_refusal("disk full: collection-created append", r, &mut outcomes);
    let (_, g2) = VaultState::create(&patient, w.client.now()).unwrap();
    let r = w.client.create_vault(&g2).await.map(|_| ());
    let second_vault_acked = r.is_ok();
    assert_clean_refusal("disk full: a new vault", r, &mut outcomes);
    let r = client(&newcomer, &relay)
        .publish_identity()
        .await
        .map(|_| ());
    let newcomer_acked = r.is_ok();
    assert_clean_refusal("disk full: a new identity", r, &mut outcomes);
    assert!(alive(relay.pid()), "the relay died on a full disk");
    // Reads still work.
    let head = w.client.head(&w.vault).await.unwrap();
    assert!(head.seq as usize >= acked_before);
    let (h, ct) = &ledger.blobs[1];
    let mut out = Vec::new();
    w.client
        .get_blob(
            &w.vault,
            h,
            vault_core::address::AddressKind::CURRENT,
            ct.len() as u64,
            &mut out,
        )
        .await
        .unwrap();
    assert_eq!(&out, &**ct);
    assert!(
        outcomes.iter().any(|o| !o.ends_with("acknowledged")),
        "nothing was refused on a full disk (filler took {filled} bytes): {outcomes:#?}"
    );

    // Space returns.
    std::fs::remove_file(&filler).unwrap();

    // 3. Writes resume without a restart.
    let mut resumed = Vec::new();
    for i in 0..3u8 {
        let r = w.record(100_000, 140 + i, i == 1, &mut ledger).await;
        resumed.push(format!("{:?}", r.as_ref().map_err(|e| e.to_string())));
        if let Err(e) = r {
            outcomes.push(format!("after space returned, no restart: refused: {e}"));
        }
    }
    println!("disk-full outcomes (filler took {filled} bytes):");
    for o in &outcomes {
        println!("  {o}");
    }
    println!("writes after space returned, no restart: {resumed:?}");
    assert!(
        resumed.iter().all(|r| r.starts_with("Ok")),
        "writes did not resume once space returned (without a restart): {resumed:?}"
    );

    // ... and after a restart nothing acknowledged is lost.
    assert!(relay.stop(), "the relay did not exit cleanly on SIGTERM");
    relay.restart();
    let fresh = client(&patient, &relay);
    let mut verify = MemoryStore::new();
    let state = sync::join_vault(&mut verify, &fresh, &vault, &patient.fingerprint())
        .await
        .unwrap();
    let (_, entries) = fresh.fetch_log(&vault, 0, 1000).await.unwrap();
    for (seq, hash) in &ledger.entries {
        let e = entries
            .iter()
            .find(|e| e.seq() == *seq)
            .unwrap_or_else(|| panic!("acknowledged entry {seq} is missing"));
        assert_eq!(e.hash(), hash, "acknowledged entry {seq} changed");
    }
    for (hash, ct) in &ledger.blobs {
        let mut out = Vec::new();
        fresh
            .get_blob(
                &vault,
                hash,
                vault_core::address::AddressKind::CURRENT,
                ct.len() as u64,
                &mut out,
            )
            .await
            .unwrap_or_else(|e| panic!("acknowledged blob {} lost: {e}", hex::encode(hash)));
        assert_eq!(&out, &**ct);
    }
    if second_vault_acked {
        fresh.head(&g2.vault()).await.unwrap();
    }
    if newcomer_acked {
        fresh
            .lookup_identity(&newcomer.fingerprint())
            .await
            .unwrap();
    }
    let mut w = Writer {
        client: fresh,
        store: verify,
        vault,
        labs: w.labs,
    };
    w.record(50_000, 200, false, &mut ledger).await.unwrap();
    println!(
        "after restart: log verified to seq {}, {} acknowledged entries and {} acknowledged blobs intact, new write ok",
        state.head().seq,
        ledger.entries.len(),
        ledger.blobs.len()
    );
    drop(relay);
}
