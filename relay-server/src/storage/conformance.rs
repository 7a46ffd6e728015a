//! The storage conformance suite: what every [`MetaStore`] and
//! [`BlobStore`] must do, written against the traits only.
//!
//! Each `pub async fn` is one contract and takes fresh, empty stores; it
//! panics (like a test) when the backend breaks the contract. The suite
//! runs on SQLite + files and on the in-memory backend
//! (`relay-server/tests/storage_conformance.rs`); a new backend
//! (PostgreSQL, S3) passes it by calling [`CONTRACTS`]' functions the same
//! way. Crash consistency (reopening a directory) is backend-specific and
//! lives with each backend's tests.
//!
//! Entries are synthetic: the stores never parse an entry's bytes (the
//! relay verifies entries with vault-core before it stores them), so the
//! contracts only need distinct bytes and hashes.
// Test code kept in the library so that other crates' backends can run
// it: panicking on a broken contract is its purpose.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use vault_core::{CollectionId, Fingerprint, RecordId, VaultId};

use super::{
    AcceptedOwners, AddBlobOutcome, AppendBatch, AppendError, BlobDownload, BlobInfo, BlobRef,
    BlobStore, BodyStream, Chunk, ChunkError, ChunkOutcome, CreateOutcome, DeviceLists, Head,
    InboxEntry, MetaStore, NonceClaim, StagedAppend, StoredEntry, UploadKey,
};

/// A fresh metadata store.
pub type Meta = Arc<dyn MetaStore>;
/// A fresh blob store.
pub type Blobs = Arc<dyn BlobStore>;

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn fp(n: u8) -> Fingerprint {
    Fingerprint::from_bytes([n; 32])
}

fn vault(n: u8) -> VaultId {
    VaultId::from_bytes([n; 16])
}

/// A synthetic entry of `vault` at `seq`.
pub fn entry(vault: u8, seq: u64, tag: &str) -> StoredEntry {
    let bytes = format!("vault {vault} entry {seq} {tag}").into_bytes();
    StoredEntry {
        seq,
        hash: sha(&bytes),
        bytes,
    }
}

fn head_of(e: &StoredEntry) -> Head {
    Head {
        seq: e.seq,
        hash: e.hash,
    }
}

fn batch(v: u8, prev: Head, entries: Vec<StoredEntry>, account: Fingerprint) -> AppendBatch {
    AppendBatch {
        vault: vault(v),
        prev,
        entries,
        blob_refs: Vec::new(),
        inbox: Vec::new(),
        purged: Vec::new(),
        account,
        quota: u64::MAX,
    }
}

/// Creates vault `v` owned by `owner`; returns its genesis.
async fn create(meta: &Meta, v: u8, owner: Fingerprint) -> StoredEntry {
    let g = entry(v, 0, "genesis");
    let outcome = meta
        .create_vault(vault(v), owner, g.clone(), u64::MAX)
        .await
        .unwrap();
    assert_eq!(outcome, CreateOutcome::Created);
    g
}

fn body(parts: &[&[u8]]) -> BodyStream {
    let parts: Vec<Result<Bytes, std::io::Error>> = parts
        .iter()
        .map(|p| Ok(Bytes::copy_from_slice(p)))
        .collect();
    Box::pin(futures_util::stream::iter(parts))
}

fn chunk(offset: u64, total: u64, bytes: &[u8]) -> Chunk {
    Chunk {
        offset,
        total,
        max_chunk: 1 << 20,
        digest: sha(bytes),
    }
}

fn key(v: u8, blob: &[u8]) -> UploadKey {
    UploadKey {
        vault: vault(v),
        hash: sha(blob),
    }
}

async fn read_all(blobs: &Blobs, hash: [u8; 32], start: u64, len: u64) -> Vec<u8> {
    let mut r = blobs.read(hash, start, len).await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    out
}

/// Uploads `blob` to vault `v` in one chunk.
async fn upload(blobs: &Blobs, v: u8, blob: &[u8]) {
    let total = blob.len() as u64;
    let out = blobs
        .write_chunk(key(v, blob), chunk(0, total, blob), body(&[blob]))
        .await
        .unwrap();
    assert_eq!(out, ChunkOutcome::Complete);
}

/// Identities: stored once, charged once to their own account.
pub async fn identities(meta: Meta, _blobs: Blobs) {
    let a = fp(1);
    assert_eq!(meta.identity(a).await.unwrap(), None);
    assert!(meta.put_identity(a, b"doc-a".to_vec()).await.unwrap());
    assert_eq!(meta.usage(a).await.unwrap(), 5);
    // A second publication is not new, keeps the first document and is
    // not charged again.
    assert!(!meta.put_identity(a, b"other".to_vec()).await.unwrap());
    assert_eq!(meta.identity(a).await.unwrap(), Some(b"doc-a".to_vec()));
    assert_eq!(meta.usage(a).await.unwrap(), 5);
    assert_eq!(meta.identity(fp(2)).await.unwrap(), None);
    assert_eq!(meta.stored_bytes().await.unwrap(), 5);
}

/// Vault creation: created, idempotent for the same genesis, a conflict
/// for another, refused over quota; the owner's inbox names it.
pub async fn create_vault(meta: Meta, _blobs: Blobs) {
    let owner = fp(1);
    assert_eq!(meta.head(vault(1)).await.unwrap(), None);
    let g = create(&meta, 1, owner).await;
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&g)));
    assert_eq!(
        meta.entries(vault(1), 0, 10).await.unwrap(),
        vec![g.bytes.clone()]
    );
    assert_eq!(meta.usage(owner).await.unwrap(), g.bytes.len() as u64);
    assert_eq!(inbox_vaults(&meta, owner).await, vec![vault(1)]);
    let again = meta
        .create_vault(vault(1), owner, g.clone(), u64::MAX)
        .await
        .unwrap();
    assert_eq!(again, CreateOutcome::AlreadyStored);
    assert_eq!(meta.usage(owner).await.unwrap(), g.bytes.len() as u64);
    let other = entry(1, 0, "another genesis");
    let conflict = meta
        .create_vault(vault(1), fp(2), other, u64::MAX)
        .await
        .unwrap();
    assert_eq!(conflict, CreateOutcome::Conflict);
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&g)));
    assert_eq!(inbox_vaults(&meta, fp(2)).await, Vec::<VaultId>::new());
    // Quota: the genesis alone exceeds it; nothing is stored or charged.
    let g2 = entry(2, 0, "genesis");
    let len = g2.bytes.len() as u64;
    let refused = meta
        .create_vault(vault(2), fp(3), g2.clone(), len - 1)
        .await
        .unwrap();
    assert_eq!(refused, CreateOutcome::Quota);
    assert_eq!(meta.head(vault(2)).await.unwrap(), None);
    assert_eq!(meta.usage(fp(3)).await.unwrap(), 0);
    assert_eq!(inbox_vaults(&meta, fp(3)).await, Vec::<VaultId>::new());
    // Exactly at quota is allowed.
    let ok = meta.create_vault(vault(2), fp(3), g2, len).await.unwrap();
    assert_eq!(ok, CreateOutcome::Created);
}

/// Appends and reads: the head moves, entries come back in order from
/// `since`, at most `limit`, and are charged to the account.
pub async fn append_and_read(meta: Meta, _blobs: Blobs) {
    let owner = fp(1);
    let g = create(&meta, 1, owner).await;
    let e1 = entry(1, 1, "a");
    let e2 = entry(1, 2, "b");
    let writer = fp(2);
    let head = meta
        .append(batch(1, head_of(&g), vec![e1.clone(), e2.clone()], writer))
        .await
        .unwrap();
    assert_eq!(head, head_of(&e2));
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&e2)));
    let all = meta.entries(vault(1), 0, 100).await.unwrap();
    assert_eq!(
        all,
        vec![g.bytes.clone(), e1.bytes.clone(), e2.bytes.clone()]
    );
    assert_eq!(
        meta.entries(vault(1), 1, 1).await.unwrap(),
        vec![e1.bytes.clone()]
    );
    assert_eq!(
        meta.entries(vault(1), 2, u64::MAX).await.unwrap(),
        vec![e2.bytes.clone()]
    );
    assert!(meta.entries(vault(1), 3, 10).await.unwrap().is_empty());
    assert!(meta
        .entries(vault(1), u64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(meta.entries(vault(1), 0, 0).await.unwrap().is_empty());
    assert!(meta.entries(vault(9), 0, 10).await.unwrap().is_empty());
    assert_eq!(
        meta.usage(writer).await.unwrap(),
        (e1.bytes.len() + e2.bytes.len()) as u64
    );
    assert_eq!(meta.usage(owner).await.unwrap(), g.bytes.len() as u64);
    assert_eq!(
        meta.stored_bytes().await.unwrap(),
        (g.bytes.len() + e1.bytes.len() + e2.bytes.len()) as u64
    );
}

/// Every refusal of an append leaves the vault and the usage as they were.
pub async fn append_refusals(meta: Meta, _blobs: Blobs) {
    let owner = fp(1);
    let g = create(&meta, 1, owner).await;
    let e1 = entry(1, 1, "a");
    // No vault.
    let r = meta
        .append(batch(7, head_of(&g), vec![entry(7, 1, "x")], owner))
        .await;
    assert!(matches!(r, Err(AppendError::NoVault)), "{r:?}");
    assert_eq!(meta.head(vault(7)).await.unwrap(), None);
    // Quota: one byte short.
    let mut b = batch(1, head_of(&g), vec![e1.clone()], fp(2));
    b.quota = e1.bytes.len() as u64 - 1;
    let r = meta.append(b).await;
    assert!(matches!(r, Err(AppendError::Quota)), "{r:?}");
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&g)));
    assert_eq!(meta.usage(fp(2)).await.unwrap(), 0);
    assert_eq!(meta.entries(vault(1), 0, 10).await.unwrap().len(), 1);
    // Exactly at quota passes.
    let mut b = batch(1, head_of(&g), vec![e1.clone()], fp(2));
    b.quota = e1.bytes.len() as u64;
    meta.append(b).await.unwrap();
    // Head moved: the stale prev is refused with the current head, for a
    // wrong hash as for a wrong sequence number.
    let stale = batch(1, head_of(&g), vec![entry(1, 1, "late")], owner);
    match meta.append(stale).await {
        Err(AppendError::HeadMoved(h)) => assert_eq!(h, head_of(&e1)),
        other => panic!("expected HeadMoved, got {other:?}"),
    }
    let wrong_hash = Head {
        seq: 1,
        hash: [0; 32],
    };
    match meta
        .append(batch(1, wrong_hash, vec![entry(1, 2, "x")], owner))
        .await
    {
        Err(AppendError::HeadMoved(h)) => assert_eq!(h, head_of(&e1)),
        other => panic!("expected HeadMoved, got {other:?}"),
    }
    assert_eq!(meta.entries(vault(1), 0, 10).await.unwrap().len(), 2);
    assert_eq!(meta.usage(owner).await.unwrap(), g.bytes.len() as u64);
}

fn blob_ref(blob: &[u8], len: u64, entry: usize, record: u8) -> BlobRef {
    BlobRef {
        hash: sha(blob),
        len,
        collection: CollectionId::from_bytes([0xc0; 16]),
        record: RecordId::from_bytes([record; 16]),
        entry,
        also_uploaded_by: None,
    }
}

/// A record-put's blob must be recorded in the vault with its signed
/// length, uploaded by the appending account (or, in a repair, by the
/// account the reference names), and not used by another record; the
/// refusal names the entry and stores nothing.
pub async fn append_blob_checks(meta: Meta, _blobs: Blobs) {
    let owner = fp(1);
    let g = create(&meta, 1, owner).await;
    let blob = b"ciphertext".as_slice();
    let len = blob.len() as u64;
    let info = BlobInfo {
        len,
        uploader: owner,
    };
    let refused = |r: Result<Head, AppendError>, want: usize| match r {
        Err(AppendError::BlobMissing(i)) => assert_eq!(i, want),
        other => panic!("expected BlobMissing({want}), got {other:?}"),
    };
    // Not recorded at all (entry index 1 of the batch).
    let mut b = batch(
        1,
        head_of(&g),
        vec![entry(1, 1, "x"), entry(1, 2, "y")],
        owner,
    );
    b.blob_refs = vec![blob_ref(blob, len, 1, 1)];
    refused(meta.append(b).await, 1);
    // Recorded in another vault only.
    let g2 = create(&meta, 2, owner).await;
    let added = meta
        .add_blob(vault(2), sha(blob), info, u64::MAX, None)
        .await
        .unwrap();
    assert_eq!(added, AddBlobOutcome::Added);
    let mut b = batch(1, head_of(&g), vec![entry(1, 1, "x")], owner);
    b.blob_refs = vec![blob_ref(blob, len, 0, 1)];
    refused(meta.append(b).await, 0);
    meta.add_blob(vault(1), sha(blob), info, u64::MAX, None)
        .await
        .unwrap();
    // Wrong length.
    let mut b = batch(1, head_of(&g), vec![entry(1, 1, "x")], owner);
    b.blob_refs = vec![blob_ref(blob, len + 1, 0, 1)];
    refused(meta.append(b).await, 0);
    // Wrong uploader.
    let mut b = batch(1, head_of(&g), vec![entry(1, 1, "x")], fp(2));
    b.blob_refs = vec![blob_ref(blob, len, 0, 1)];
    refused(meta.append(b).await, 0);
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&g)));
    let usage_before = meta.usage(owner).await.unwrap();
    let (used, states) = meta
        .append_precheck(vault(1), owner, vec![sha(blob), sha(b"none")])
        .await
        .unwrap();
    assert_eq!(used, usage_before);
    assert_eq!(states, vec![Some((info, false)), None]);
    // Usable: stored, with the link.
    let e1 = entry(1, 1, "x");
    let mut b = batch(1, head_of(&g), vec![e1.clone()], owner);
    b.blob_refs = vec![blob_ref(blob, len, 0, 1)];
    meta.append(b).await.unwrap();
    let (got, refs) = meta
        .blob_with_refs(vault(1), sha(blob))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, info);
    assert_eq!(
        refs,
        vec![(
            CollectionId::from_bytes([0xc0; 16]),
            RecordId::from_bytes([1; 16])
        )]
    );
    let (_, states) = meta
        .append_precheck(vault(1), owner, vec![sha(blob)])
        .await
        .unwrap();
    assert_eq!(states, vec![Some((info, true))]);
    // Already used by a record: refused.
    let mut b = batch(1, head_of(&e1), vec![entry(1, 2, "y")], owner);
    b.blob_refs = vec![blob_ref(blob, len, 0, 2)];
    refused(meta.append(b).await, 0);
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&e1)));
    // The other vault's record is independent.
    let (_, refs2) = meta
        .blob_with_refs(vault(2), sha(blob))
        .await
        .unwrap()
        .unwrap();
    assert!(refs2.is_empty());
    assert_eq!(
        meta.blob_with_refs(vault(3), sha(blob)).await.unwrap(),
        None
    );
    // A repair charged to another member may use the blob its record's
    // author uploaded, when the batch says so; nobody else's.
    let g3 = create(&meta, 3, owner).await;
    meta.add_blob(vault(3), sha(blob), info, u64::MAX, None)
        .await
        .unwrap();
    let mut b = batch(3, head_of(&g3), vec![entry(3, 1, "x")], fp(2));
    b.blob_refs = vec![BlobRef {
        also_uploaded_by: Some(fp(3)),
        ..blob_ref(blob, len, 0, 1)
    }];
    refused(meta.append(b).await, 0);
    let mut b = batch(3, head_of(&g3), vec![entry(3, 1, "x")], fp(2));
    b.blob_refs = vec![BlobRef {
        also_uploaded_by: Some(owner),
        ..blob_ref(blob, len, 0, 1)
    }];
    meta.append(b).await.unwrap();
    let (_, states) = meta
        .append_precheck(vault(3), fp(2), vec![sha(blob)])
        .await
        .unwrap();
    assert_eq!(states, vec![Some((info, true))]);
    let _ = g2;
}

/// Commits a staged append without purges, or passes its refusal on.
async fn finish(
    staged: Result<Box<dyn StagedAppend + '_>, AppendError>,
) -> Result<Head, AppendError> {
    staged?.commit(Vec::new()).await
}

/// A staged append ([`MetaStore::stage_append`]) claims the request's
/// nonce first and refuses a replay; it is invisible until committed,
/// and an abandoned or dropped one leaves nothing, the store still
/// serving; its refusals store nothing of the batch, the claim standing;
/// a commit stores it with the purges given then.
pub async fn staged_appends(meta: Meta, _blobs: Blobs) {
    let owner = fp(1);
    let g = create(&meta, 1, owner).await;
    let usage = meta.usage(owner).await.unwrap();
    let claim = |n: u8| nonce(owner, [n; 16], 2_000_000, 1_000_000);
    let e1 = entry(1, 1, "a");
    // The first entry after genesis, staged with claim `n`.
    let stage_first = |n: u8| {
        meta.stage_append(
            Some(claim(n)),
            batch(1, head_of(&g), vec![e1.clone()], owner),
        )
    };

    // Staged, then abandoned: nothing stored, nothing charged.
    let staged = stage_first(1).await.unwrap();
    staged.abandon().await;
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&g)));
    assert_eq!(meta.entries(vault(1), 0, 10).await.unwrap().len(), 1);
    assert_eq!(meta.usage(owner).await.unwrap(), usage);
    // The claim stands: the same nonce again is a replay.
    let r = stage_first(1).await;
    assert!(matches!(r, Err(AppendError::Replayed)), "{:?}", r.err());
    assert!(!meta.claim_nonce(claim(1)).await.unwrap());

    // Staged, then dropped unfinished: nothing stored, and the store
    // still serves (a shared store's connection is not reused inside the
    // transaction).
    let staged = stage_first(2).await.unwrap();
    drop(staged);
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&g)));
    assert_eq!(meta.usage(owner).await.unwrap(), usage);

    // Staged, then committed: invisible until the commit, then stored
    // and charged.
    let staged = stage_first(3).await.unwrap();
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&g)));
    assert_eq!(meta.entries(vault(1), 0, 10).await.unwrap().len(), 1);
    assert_eq!(meta.usage(owner).await.unwrap(), usage);
    assert_eq!(staged.commit(Vec::new()).await.unwrap(), head_of(&e1));
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&e1)));
    assert_eq!(
        meta.entries(vault(1), 1, 10).await.unwrap(),
        vec![e1.bytes.clone()]
    );
    assert_eq!(
        meta.usage(owner).await.unwrap(),
        usage + e1.bytes.len() as u64
    );
    // Its replay on the new head: refused as a replay, not stored.
    let r = meta
        .stage_append(
            Some(claim(3)),
            batch(1, head_of(&e1), vec![entry(1, 2, "b")], owner),
        )
        .await;
    assert!(matches!(r, Err(AppendError::Replayed)), "{:?}", r.err());
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&e1)));

    // Refusals store nothing and keep the claim: a stale head (refused
    // with the stored one) and no vault, when staging or at the latest at
    // the commit; the quota and a missing blob when staging.
    let r = meta
        .stage_append(
            Some(claim(4)),
            batch(1, head_of(&g), vec![entry(1, 1, "late")], owner),
        )
        .await;
    match finish(r).await {
        Err(AppendError::HeadMoved(h)) => assert_eq!(h, head_of(&e1)),
        other => panic!("expected HeadMoved, got {other:?}"),
    }
    let e2 = entry(1, 2, "b");
    let mut b = batch(1, head_of(&e1), vec![e2.clone()], fp(2));
    b.quota = e2.bytes.len() as u64 - 1;
    let r = meta.stage_append(Some(claim(5)), b).await;
    assert!(matches!(r, Err(AppendError::Quota)), "{:?}", r.err());
    // Over the quota with what the account already holds.
    let held = meta.usage(owner).await.unwrap();
    let mut b = batch(1, head_of(&e1), vec![e2.clone()], owner);
    b.quota = held + e2.bytes.len() as u64 - 1;
    let r = meta.stage_append(Some(claim(8)), b).await;
    assert!(matches!(r, Err(AppendError::Quota)), "{:?}", r.err());
    // The quota is refused before a missing blob.
    let mut b = batch(1, head_of(&e1), vec![e2.clone()], owner);
    b.quota = held;
    b.blob_refs = vec![blob_ref(b"not uploaded", 12, 0, 1)];
    let r = meta.stage_append(Some(claim(9)), b).await;
    assert!(matches!(r, Err(AppendError::Quota)), "{:?}", r.err());
    let mut b = batch(1, head_of(&e1), vec![e2.clone()], owner);
    b.blob_refs = vec![blob_ref(b"not uploaded", 12, 0, 1)];
    let r = meta.stage_append(Some(claim(6)), b).await;
    assert!(
        matches!(r, Err(AppendError::BlobMissing(0))),
        "{:?}",
        r.err()
    );
    assert_eq!(meta.usage(owner).await.unwrap(), held);
    let r = meta
        .stage_append(
            Some(claim(7)),
            batch(7, head_of(&g), vec![entry(7, 1, "x")], owner),
        )
        .await;
    let r = finish(r).await;
    assert!(matches!(r, Err(AppendError::NoVault)), "{r:?}");
    for n in 4..=9 {
        assert!(!meta.claim_nonce(claim(n)).await.unwrap(), "claim {n}");
    }
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&e1)));
    assert_eq!(meta.usage(fp(2)).await.unwrap(), 0);
    assert_eq!(meta.head(vault(7)).await.unwrap(), None);

    // Without a claim, and with a purge given at the commit: the purged
    // blob's record goes in the same commit.
    let blob = b"purged ciphertext".as_slice();
    let info = BlobInfo {
        len: blob.len() as u64,
        uploader: owner,
    };
    meta.add_blob(vault(1), sha(blob), info, u64::MAX, None)
        .await
        .unwrap();
    assert_eq!(meta.blob(vault(1), sha(blob)).await.unwrap(), Some(info));
    let staged = meta
        .stage_append(None, batch(1, head_of(&e1), vec![e2.clone()], owner))
        .await
        .unwrap();
    assert_eq!(staged.commit(vec![sha(blob)]).await.unwrap(), head_of(&e2));
    assert_eq!(meta.blob(vault(1), sha(blob)).await.unwrap(), None);
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(head_of(&e2)));
}

/// The inbox index: the owner, and every principal an append names, once.
pub async fn inbox_index(meta: Meta, _blobs: Blobs) {
    let owner = fp(1);
    let g = create(&meta, 1, owner).await;
    let g2 = create(&meta, 2, fp(5)).await;
    let mut b = batch(1, head_of(&g), vec![entry(1, 1, "share")], owner);
    b.inbox = vec![fp(2), fp(3)];
    let h = meta.append(b).await.unwrap();
    let mut b = batch(1, h, vec![entry(1, 2, "share again")], owner);
    b.inbox = vec![fp(2)];
    meta.append(b).await.unwrap();
    let mut b = batch(2, head_of(&g2), vec![entry(2, 1, "share")], fp(5));
    b.inbox = vec![fp(2)];
    meta.append(b).await.unwrap();
    // In vault-id order, each with its owner.
    assert_eq!(
        meta.inbox(fp(2)).await.unwrap(),
        vec![
            InboxEntry {
                vault: vault(1),
                owner
            },
            InboxEntry {
                vault: vault(2),
                owner: fp(5)
            }
        ]
    );
    assert_eq!(inbox_vaults(&meta, fp(3)).await, vec![vault(1)]);
    assert_eq!(inbox_vaults(&meta, owner).await, vec![vault(1)]);
    assert!(inbox_vaults(&meta, fp(9)).await.is_empty());
    // A refused append indexes nobody.
    let mut b = batch(1, head_of(&g), vec![entry(1, 1, "late")], owner);
    b.inbox = vec![fp(4)];
    assert!(meta.append(b).await.is_err());
    assert!(inbox_vaults(&meta, fp(4)).await.is_empty());
}

/// The vault ids of `member`'s inbox index.
async fn inbox_vaults(meta: &Meta, member: Fingerprint) -> Vec<VaultId> {
    meta.inbox(member)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.vault)
        .collect()
}

/// The accepted owners: none until set; a list replaces the stored one only
/// with a greater version (a stale or replayed list changes nothing and
/// gets the stored one back); lists are per member.
pub async fn accepted_owners(meta: Meta, _blobs: Blobs) {
    assert_eq!(
        meta.accepted_owners(fp(1)).await.unwrap(),
        AcceptedOwners::default()
    );
    let v1 = AcceptedOwners {
        version: 1,
        owners: vec![fp(2), fp(3)],
    };
    meta.set_accepted_owners(fp(1), v1.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.accepted_owners(fp(1)).await.unwrap(), v1);
    let v2 = AcceptedOwners {
        version: 2,
        owners: vec![fp(3)],
    };
    meta.set_accepted_owners(fp(1), v2.clone())
        .await
        .unwrap()
        .unwrap();
    // The old list again (a replay), and one of the same version: refused
    // with the stored list.
    assert_eq!(
        meta.set_accepted_owners(fp(1), v1.clone()).await.unwrap(),
        Err(v2.clone())
    );
    let same = AcceptedOwners {
        version: 2,
        owners: vec![],
    };
    assert_eq!(
        meta.set_accepted_owners(fp(1), same).await.unwrap(),
        Err(v2.clone())
    );
    assert_eq!(meta.accepted_owners(fp(1)).await.unwrap(), v2);
    assert_eq!(
        meta.accepted_owners(fp(2)).await.unwrap(),
        AcceptedOwners::default()
    );
    // An empty list is a list.
    let empty = AcceptedOwners {
        version: 3,
        owners: vec![],
    };
    meta.set_accepted_owners(fp(1), empty.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.accepted_owners(fp(1)).await.unwrap(), empty);
}

/// The directory's device lists: none until set; a compare-and-swap on
/// the serial read (a replay, a stale device, or one that built on a
/// version replaced since, changes nothing and gets the stored lists
/// back), never backwards, bytes kept exactly; per person; two writers
/// racing on one serial store one of them.
pub async fn device_lists(meta: Meta, _blobs: Blobs) {
    assert_eq!(
        meta.device_lists(fp(1)).await.unwrap(),
        DeviceLists::default()
    );
    let at = |serial: u64, byte: u8| DeviceLists {
        serial,
        lists: vec![byte; 40_000],
    };
    // Expecting a stored version where none is: refused.
    assert_eq!(
        meta.set_device_lists(fp(1), 1, at(2, 2)).await.unwrap(),
        Err(DeviceLists::default())
    );
    meta.set_device_lists(fp(1), 0, at(1, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.device_lists(fp(1)).await.unwrap(), at(1, 1));
    // Built on nothing, though serial 1 is stored now.
    assert_eq!(
        meta.set_device_lists(fp(1), 0, at(5, 5)).await.unwrap(),
        Err(at(1, 1))
    );
    meta.set_device_lists(fp(1), 1, at(3, 3))
        .await
        .unwrap()
        .unwrap();
    // Built on serial 1, replaced since; not newer than what it expects.
    assert_eq!(
        meta.set_device_lists(fp(1), 1, at(4, 4)).await.unwrap(),
        Err(at(3, 3))
    );
    assert_eq!(
        meta.set_device_lists(fp(1), 3, at(3, 4)).await.unwrap(),
        Err(at(3, 3))
    );
    assert_eq!(meta.device_lists(fp(1)).await.unwrap(), at(3, 3));
    assert_eq!(
        meta.device_lists(fp(2)).await.unwrap(),
        DeviceLists::default()
    );
    let (a, b) = tokio::join!(
        meta.set_device_lists(fp(1), 3, at(4, 5)),
        meta.set_device_lists(fp(1), 3, at(4, 6))
    );
    let stored = [a.unwrap(), b.unwrap()];
    assert_eq!(stored.iter().filter(|r| r.is_ok()).count(), 1);
    let kept = meta.device_lists(fp(1)).await.unwrap();
    assert_eq!(kept.serial, 4);
    assert!(kept == at(4, 5) || kept == at(4, 6));
}

/// Recording blobs: added and charged once, `Existed` without a second
/// charge, refused over quota; small blobs kept inline.
pub async fn add_blob(meta: Meta, _blobs: Blobs) {
    let up = fp(1);
    create(&meta, 1, fp(9)).await;
    let h = sha(b"blob");
    let info = BlobInfo {
        len: 100,
        uploader: up,
    };
    assert_eq!(meta.blob(vault(1), h).await.unwrap(), None);
    assert!(!meta.blob_in_use(h).await.unwrap());
    let refused = meta.add_blob(vault(1), h, info, 99, None).await.unwrap();
    assert_eq!(refused, AddBlobOutcome::Quota);
    assert_eq!(meta.blob(vault(1), h).await.unwrap(), None);
    assert_eq!(meta.usage(up).await.unwrap(), 0);
    let added = meta.add_blob(vault(1), h, info, 100, None).await.unwrap();
    assert_eq!(added, AddBlobOutcome::Added);
    assert_eq!(meta.blob(vault(1), h).await.unwrap(), Some(info));
    assert!(meta.blob_in_use(h).await.unwrap());
    assert_eq!(meta.usage(up).await.unwrap(), 100);
    assert_eq!(meta.small_blob(h).await.unwrap(), None);
    let again = meta.add_blob(vault(1), h, info, 100, None).await.unwrap();
    assert_eq!(again, AddBlobOutcome::Existed);
    assert_eq!(meta.usage(up).await.unwrap(), 100);
    // Inline: the bytes are kept in the metadata store.
    let small = Bytes::from_static(b"tiny");
    let hs = sha(&small);
    let info_s = BlobInfo {
        len: 4,
        uploader: up,
    };
    let added = meta
        .add_blob(vault(1), hs, info_s, u64::MAX, Some(small.clone()))
        .await
        .unwrap();
    assert_eq!(added, AddBlobOutcome::Added);
    assert_eq!(meta.small_blob(hs).await.unwrap(), Some(small));
    assert_eq!(meta.usage(up).await.unwrap(), 104);
    assert_eq!(meta.blob(vault(2), hs).await.unwrap(), None);
}

/// What downloads of several blobs need, read at once: for each address
/// in order (an address asked twice is answered twice), exactly what
/// `blob_with_refs` says of it (no bytes), and `None` for a blob the vault
/// does not have (also when another vault has it); and the bytes of
/// several small blobs at once, exactly as `small_blob` answers each.
pub async fn downloads_at_once(meta: Meta, _blobs: Blobs) {
    let owner = fp(1);
    let g = create(&meta, 1, owner).await;
    create(&meta, 2, owner).await;
    let named = b"named by a record".as_slice();
    let inline = Bytes::from_static(b"kept inline");
    let elsewhere = b"in vault 2 only".as_slice();
    let info = |len: usize| BlobInfo {
        len: len as u64,
        uploader: owner,
    };
    for (v, blob, bytes) in [
        (1, named, None),
        (1, &inline[..], Some(inline.clone())),
        (2, elsewhere, None),
    ] {
        let added = meta
            .add_blob(vault(v), sha(blob), info(blob.len()), u64::MAX, bytes)
            .await
            .unwrap();
        assert_eq!(added, AddBlobOutcome::Added);
    }
    let mut b = batch(1, head_of(&g), vec![entry(1, 1, "x")], owner);
    b.blob_refs = vec![blob_ref(named, named.len() as u64, 0, 1)];
    meta.append(b).await.unwrap();

    assert_eq!(
        meta.blobs_for_download(vault(1), Vec::new()).await.unwrap(),
        Vec::new()
    );
    let asked = vec![
        sha(named),
        sha(b"never stored"),
        sha(&inline),
        sha(elsewhere),
        sha(named),
    ];
    let got = meta
        .blobs_for_download(vault(1), asked.clone())
        .await
        .unwrap();
    assert_eq!(got.len(), asked.len());
    let sorted = |d: Option<BlobDownload>| {
        d.map(|mut d| {
            d.refs.sort();
            d
        })
    };
    for (hash, got) in asked.iter().zip(&got) {
        let want = meta
            .blob_with_refs(vault(1), *hash)
            .await
            .unwrap()
            .map(|(info, refs)| BlobDownload { info, refs });
        assert_eq!(
            sorted(got.clone()),
            sorted(want),
            "blob {}",
            hex::encode(hash)
        );
    }
    let named_got = got[0].as_ref().expect("the named blob is found");
    assert_eq!(named_got.info, info(named.len()));
    assert_eq!(
        named_got.refs,
        vec![(
            CollectionId::from_bytes([0xc0; 16]),
            RecordId::from_bytes([1; 16])
        )]
    );
    assert_eq!(got[1], None);
    let inline_got = got[2].as_ref().expect("the inline blob is found");
    assert!(inline_got.refs.is_empty());
    assert_eq!(got[3], None, "a blob of another vault is not this vault's");
    assert_eq!(got[4], got[0]);

    // Small blobs' bytes, several at once.
    assert_eq!(meta.small_blobs(Vec::new()).await.unwrap(), Vec::new());
    let asked = vec![sha(&inline), sha(named), sha(b"never stored"), sha(&inline)];
    let got = meta.small_blobs(asked.clone()).await.unwrap();
    for (hash, got) in asked.iter().zip(&got) {
        assert_eq!(*got, meta.small_blob(*hash).await.unwrap());
    }
    assert_eq!(
        got,
        vec![Some(inline.clone()), None, None, Some(inline.clone())]
    );
}

/// Unfinished uploads: chunks charged as stored, released when the blob
/// is recorded (replaced by the blob's charge), discarded, or stale.
pub async fn upload_charges(meta: Meta, _blobs: Blobs) {
    let up = fp(1);
    let other = fp(2);
    let h = sha(b"big");
    meta.charge_upload(vault(1), h, up, 10).await.unwrap();
    meta.charge_upload(vault(1), h, up, 15).await.unwrap();
    meta.charge_upload(vault(1), h, other, 5).await.unwrap();
    assert_eq!(meta.usage(up).await.unwrap(), 25);
    assert_eq!(meta.usage(other).await.unwrap(), 5);
    // Unfinished uploads count against the quota of an append.
    let (used, _) = meta.append_precheck(vault(1), up, vec![]).await.unwrap();
    assert_eq!(used, 25);
    let info = BlobInfo {
        len: 30,
        uploader: up,
    };
    let r = meta
        .add_blob(vault(1), h, info, u64::MAX, None)
        .await
        .unwrap();
    assert_eq!(r, AddBlobOutcome::Added);
    assert_eq!(meta.usage(up).await.unwrap(), 30);
    assert_eq!(meta.usage(other).await.unwrap(), 0);
    // Discarded: given back.
    let h2 = sha(b"discarded");
    meta.charge_upload(vault(1), h2, up, 7).await.unwrap();
    assert_eq!(meta.usage(up).await.unwrap(), 37);
    meta.release_upload(vault(1), h2).await.unwrap();
    assert_eq!(meta.usage(up).await.unwrap(), 30);
    meta.release_upload(vault(1), h2).await.unwrap();
    assert_eq!(meta.usage(up).await.unwrap(), 30);
    // Stale: nothing is older than an hour; everything is older than 0 s.
    let h3 = sha(b"abandoned");
    meta.charge_upload(vault(1), h3, up, 8).await.unwrap();
    meta.charge_upload(vault(1), h3, other, 2).await.unwrap();
    meta.charge_upload(vault(2), h3, other, 3).await.unwrap();
    assert_eq!(meta.release_stale_uploads(3600).await.unwrap(), 0);
    assert_eq!(meta.usage(up).await.unwrap(), 38);
    assert_eq!(meta.release_stale_uploads(0).await.unwrap(), 3);
    assert_eq!(meta.usage(up).await.unwrap(), 30);
    assert_eq!(meta.usage(other).await.unwrap(), 0);
    assert_eq!(meta.release_stale_uploads(0).await.unwrap(), 0);
    // A refused (over-quota) blob still releases its chunk charges.
    let h4 = sha(b"too big");
    meta.charge_upload(vault(1), h4, up, 50).await.unwrap();
    let r = meta
        .add_blob(
            vault(1),
            h4,
            BlobInfo {
                len: 50,
                uploader: up,
            },
            60,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r, AddBlobOutcome::Quota);
    assert_eq!(meta.usage(up).await.unwrap(), 30);
}

/// A purge removes the blob's record and links in its vault and gives
/// the charge back; `blob_in_use` stays true while another vault has it,
/// and so do its inline bytes.
pub async fn purge(meta: Meta, _blobs: Blobs) {
    let owner = fp(1);
    let g1 = create(&meta, 1, owner).await;
    let g2 = create(&meta, 2, owner).await;
    let small = Bytes::from_static(b"shared small blob");
    let h = sha(&small);
    let len = small.len() as u64;
    let info = BlobInfo {
        len,
        uploader: owner,
    };
    for v in [1, 2] {
        let r = meta
            .add_blob(vault(v), h, info, u64::MAX, Some(small.clone()))
            .await
            .unwrap();
        assert_eq!(r, AddBlobOutcome::Added);
    }
    let e1 = entry(1, 1, "put");
    let mut b = batch(1, head_of(&g1), vec![e1.clone()], owner);
    b.blob_refs = vec![blob_ref(&small, len, 0, 1)];
    meta.append(b).await.unwrap();
    let before = meta.usage(owner).await.unwrap();
    let e2 = entry(1, 2, "purge");
    let mut b = batch(1, head_of(&e1), vec![e2.clone()], owner);
    b.purged = vec![h, sha(b"never stored")];
    meta.append(b).await.unwrap();
    assert_eq!(meta.blob(vault(1), h).await.unwrap(), None);
    assert_eq!(meta.blob_with_refs(vault(1), h).await.unwrap(), None);
    assert_eq!(
        meta.usage(owner).await.unwrap(),
        before + e2.bytes.len() as u64 - len
    );
    assert!(meta.blob_in_use(h).await.unwrap());
    assert_eq!(meta.small_blob(h).await.unwrap(), Some(small.clone()));
    // The last vault purges it: no longer in use, inline bytes gone.
    let e = entry(2, 1, "purge");
    let mut b = batch(2, head_of(&g2), vec![e.clone()], owner);
    b.purged = vec![h];
    meta.append(b).await.unwrap();
    assert!(!meta.blob_in_use(h).await.unwrap());
    assert_eq!(meta.small_blob(h).await.unwrap(), None);
    // The blob may be uploaded and used again afterwards.
    let r = meta
        .add_blob(vault(1), h, info, u64::MAX, None)
        .await
        .unwrap();
    assert_eq!(r, AddBlobOutcome::Added);
    let mut b = batch(1, head_of(&e2), vec![entry(1, 3, "put again")], owner);
    b.blob_refs = vec![blob_ref(&small, len, 0, 1)];
    meta.append(b).await.unwrap();
}

/// N concurrent appends with the same `prev`: exactly one wins, every
/// other one is told the winner's head; then N writers that retry on
/// `HeadMoved` all get in, and the log has no gap and no duplicate.
pub async fn concurrent_appends(meta: Meta, _blobs: Blobs) {
    const N: u8 = 16;
    let owner = fp(1);
    let g = create(&meta, 1, owner).await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let meta = meta.clone();
        let prev = head_of(&g);
        tasks.push(tokio::spawn(async move {
            let e = entry(1, 1, &format!("writer {i}"));
            (
                head_of(&e),
                meta.append(batch(1, prev, vec![e], owner)).await,
            )
        }));
    }
    let mut winners = Vec::new();
    let mut moved = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (mine, Ok(h)) => {
                assert_eq!(h, mine);
                winners.push(h);
            }
            (_, Err(AppendError::HeadMoved(h))) => moved.push(h),
            (_, Err(e)) => panic!("unexpected refusal {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one append wins");
    assert_eq!(moved.len(), usize::from(N) - 1);
    assert!(moved.iter().all(|h| *h == winners[0]));
    assert_eq!(meta.head(vault(1)).await.unwrap(), Some(winners[0]));
    // Retrying writers.
    let mut tasks = Vec::new();
    for i in 0..N {
        let meta = meta.clone();
        let mut prev = winners[0];
        tasks.push(tokio::spawn(async move {
            loop {
                let e = entry(1, prev.seq + 1, &format!("retrying writer {i}"));
                match meta.append(batch(1, prev, vec![e], owner)).await {
                    Ok(h) => return h,
                    Err(AppendError::HeadMoved(h)) => prev = h,
                    Err(e) => panic!("unexpected refusal {e:?}"),
                }
            }
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=u64::from(N) + 1).collect::<Vec<_>>());
    let log = meta.entries(vault(1), 0, 1000).await.unwrap();
    assert_eq!(log.len(), usize::from(N) + 2);
    for (seq, bytes) in log.iter().enumerate() {
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(&format!("vault 1 entry {seq} ")), "{text}");
    }
    let head = meta.head(vault(1)).await.unwrap().unwrap();
    assert_eq!(head.seq, u64::from(N) + 1);
    assert_eq!(
        head.hash,
        sha(log.last().unwrap()),
        "the head is the last stored entry"
    );
}

/// A blob in one chunk: complete, readable whole and by range, deletable.
pub async fn blob_roundtrip(_meta: Meta, blobs: Blobs) {
    let blob = b"0123456789abcdef".as_slice();
    let h = sha(blob);
    assert_eq!(blobs.upload_offset(key(1, blob)).await.unwrap(), 0);
    assert!(blobs.read(h, 0, 1).await.is_err(), "no blob yet");
    upload(&blobs, 1, blob).await;
    assert_eq!(blobs.upload_offset(key(1, blob)).await.unwrap(), 0);
    assert_eq!(read_all(&blobs, h, 0, 16).await, blob);
    assert_eq!(read_all(&blobs, h, 4, 3).await, b"456");
    assert_eq!(read_all(&blobs, h, 10, 100).await, b"abcdef");
    assert_eq!(read_all(&blobs, h, 16, 10).await, b"");
    assert_eq!(read_all(&blobs, h, 3, 0).await, b"");
    // Uploading the same blob again (another vault) keeps it intact.
    upload(&blobs, 2, blob).await;
    assert_eq!(read_all(&blobs, h, 0, 16).await, blob);
    blobs.delete(h).await.unwrap();
    assert!(blobs.read(h, 0, 1).await.is_err(), "deleted");
    blobs.delete(h).await.unwrap();
    // The empty blob.
    upload(&blobs, 1, b"").await;
    assert_eq!(read_all(&blobs, sha(b""), 0, 10).await, b"");
}

/// Chunked uploads and every refusal of a chunk; a refused chunk leaves
/// the upload where it stood, a hash mismatch discards it.
pub async fn chunk_refusals(_meta: Meta, blobs: Blobs) {
    let blob = b"first-second-third".as_slice();
    let total = blob.len() as u64;
    let k = key(1, blob);
    let (a, rest) = blob.split_at(6);
    let (b, c) = rest.split_at(7);
    // Wrong offset on a new upload.
    match blobs.write_chunk(k, chunk(6, total, b), body(&[b])).await {
        Err(ChunkError::OffsetMismatch(0)) => {}
        other => panic!("expected OffsetMismatch(0), got {other:?}"),
    }
    // Digest mismatch on the first chunk: nothing stored.
    let mut bad = chunk(0, total, a);
    bad.digest = sha(b"something else");
    let r = blobs.write_chunk(k, bad, body(&[a])).await;
    assert!(matches!(r, Err(ChunkError::DigestMismatch)), "{r:?}");
    assert_eq!(blobs.upload_offset(k).await.unwrap(), 0);
    let r = blobs
        .write_chunk(k, chunk(0, total, a), body(&[a]))
        .await
        .unwrap();
    assert_eq!(r, ChunkOutcome::Partial(6));
    assert_eq!(blobs.upload_offset(k).await.unwrap(), 6);
    // Replaying an acknowledged chunk is told where the upload stands.
    match blobs.write_chunk(k, chunk(0, total, a), body(&[a])).await {
        Err(ChunkError::OffsetMismatch(6)) => {}
        other => panic!("expected OffsetMismatch(6), got {other:?}"),
    }
    // Longer than max_chunk.
    let mut big = chunk(6, total, b);
    big.max_chunk = 6;
    let r = blobs.write_chunk(k, big, body(&[b])).await;
    assert!(matches!(r, Err(ChunkError::TooLarge)), "{r:?}");
    // Overrunning the blob's total.
    let over = [rest, b"!"].concat();
    let r = blobs
        .write_chunk(k, chunk(6, total, &over), body(&[&over]))
        .await;
    assert!(matches!(r, Err(ChunkError::TooLarge)), "{r:?}");
    // Wrong digest after a good chunk.
    let mut bad = chunk(6, total, b);
    bad.digest = sha(a);
    let r = blobs.write_chunk(k, bad, body(&[b])).await;
    assert!(matches!(r, Err(ChunkError::DigestMismatch)), "{r:?}");
    // A body cut off midway.
    let cut: BodyStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::copy_from_slice(&b[..3])),
        Err(std::io::Error::other("client gone")),
    ]));
    let r = blobs.write_chunk(k, chunk(6, total, b), cut).await;
    assert!(matches!(r, Err(ChunkError::Body(_))), "{r:?}");
    assert_eq!(blobs.upload_offset(k).await.unwrap(), 6);
    // The upload continues where it stood, in several body pieces.
    let r = blobs
        .write_chunk(k, chunk(6, total, b), body(&[&b[..2], &b[2..]]))
        .await
        .unwrap();
    assert_eq!(r, ChunkOutcome::Partial(13));
    let r = blobs
        .write_chunk(k, chunk(13, total, c), body(&[c]))
        .await
        .unwrap();
    assert_eq!(r, ChunkOutcome::Complete);
    assert_eq!(read_all(&blobs, sha(blob), 0, total).await, blob);
    assert_eq!(blobs.upload_offset(k).await.unwrap(), 0);
    // A complete blob that does not hash to its address is discarded.
    let k2 = UploadKey {
        vault: vault(1),
        hash: sha(b"the address"),
    };
    let r = blobs
        .write_chunk(k2, chunk(0, 5, b"other"), body(&[b"other"]))
        .await;
    assert!(matches!(r, Err(ChunkError::HashMismatch)), "{r:?}");
    assert_eq!(blobs.upload_offset(k2).await.unwrap(), 0);
    assert!(blobs.read(k2.hash, 0, 5).await.is_err());
    let r = blobs
        .write_chunk(k2, chunk(0, 10, b"other"), body(&[b"other"]))
        .await
        .unwrap();
    assert_eq!(r, ChunkOutcome::Partial(5));
    let r = blobs
        .write_chunk(k2, chunk(5, 10, b"stuff"), body(&[b"stuff"]))
        .await;
    assert!(matches!(r, Err(ChunkError::HashMismatch)), "{r:?}");
    assert_eq!(blobs.upload_offset(k2).await.unwrap(), 0);
}

/// Blobs addressed by BLAKE3 (record metadata versions 4 and 5,
/// `vault_core::address`): stored whole and in chunks whose running hashes
/// are kept between them (saved and restored by a shared store), and
/// discarded when they hash to neither their SHA-256 nor their BLAKE3
/// address.
pub async fn blake3_addresses(_meta: Meta, blobs: Blobs) {
    use vault_core::address::AddressKind;
    let b3 = |bytes: &[u8]| AddressKind::Blake3.digest(bytes);
    // Whole.
    let small = b"a small blake3-addressed blob".as_slice();
    let k = UploadKey {
        vault: vault(1),
        hash: b3(small),
    };
    let total = small.len() as u64;
    let r = blobs
        .write_chunk(k, chunk(0, total, small), body(&[small]))
        .await
        .unwrap();
    assert_eq!(r, ChunkOutcome::Complete);
    assert_eq!(read_all(&blobs, b3(small), 0, total).await, small);
    // In uneven chunks of several body pieces, longer than BLAKE3's
    // 1 KiB chunks and than one of the tests' object-store parts.
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let total = blob.len() as u64;
    let k = UploadKey {
        vault: vault(1),
        hash: b3(&blob),
    };
    let mut at = 0usize;
    for len in [1_023usize, 100_001, 150_000, 48_976] {
        let part = &blob[at..at + len];
        let r = blobs
            .write_chunk(
                k,
                chunk(at as u64, total, part),
                body(&[&part[..len / 2], &part[len / 2..]]),
            )
            .await
            .unwrap();
        at += len;
        if at < blob.len() {
            assert_eq!(r, ChunkOutcome::Partial(at as u64));
        } else {
            assert_eq!(r, ChunkOutcome::Complete);
        }
    }
    assert_eq!(read_all(&blobs, b3(&blob), 0, total).await, blob);
    assert_eq!(
        read_all(&blobs, b3(&blob), 299_990, 10).await,
        &blob[299_990..]
    );
    // Bytes that hash to neither address are discarded, whole or chunked.
    let k2 = UploadKey {
        vault: vault(1),
        hash: b3(b"the address"),
    };
    let r = blobs
        .write_chunk(k2, chunk(0, 5, b"other"), body(&[b"other"]))
        .await;
    assert!(matches!(r, Err(ChunkError::HashMismatch)), "{r:?}");
    let r = blobs
        .write_chunk(k2, chunk(0, 2_000, &blob[..1_500]), body(&[&blob[..1_500]]))
        .await
        .unwrap();
    assert_eq!(r, ChunkOutcome::Partial(1_500));
    let r = blobs
        .write_chunk(
            k2,
            chunk(1_500, 2_000, &blob[1_500..2_000]),
            body(&[&blob[1_500..2_000]]),
        )
        .await;
    assert!(matches!(r, Err(ChunkError::HashMismatch)), "{r:?}");
    assert_eq!(blobs.upload_offset(k2).await.unwrap(), 0);
    assert!(blobs.read(k2.hash, 0, 5).await.is_err());
}

/// One writer per upload: a chunk arriving while another is being
/// written is refused with the current offset, and the first completes.
pub async fn concurrent_chunks(_meta: Meta, blobs: Blobs) {
    let blob = b"slowly written".as_slice();
    let total = blob.len() as u64;
    let k = key(1, blob);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let slow: BodyStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let writer = {
        let blobs = blobs.clone();
        tokio::spawn(async move { blobs.write_chunk(k, chunk(0, total, blob), slow).await })
    };
    tx.send(Ok(Bytes::copy_from_slice(&blob[..4])))
        .await
        .unwrap();
    // Let the writer take the upload.
    tokio::time::sleep(Duration::from_millis(100)).await;
    match blobs
        .write_chunk(k, chunk(0, total, blob), body(&[blob]))
        .await
    {
        Err(ChunkError::OffsetMismatch(0)) => {}
        other => panic!("expected OffsetMismatch(0) while busy, got {other:?}"),
    }
    // The busy upload is not swept.
    blobs.sweep_uploads(Duration::ZERO).await.unwrap();
    tx.send(Ok(Bytes::copy_from_slice(&blob[4..])))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(writer.await.unwrap().unwrap(), ChunkOutcome::Complete);
    assert_eq!(read_all(&blobs, sha(blob), 0, total).await, blob);
}

/// Sweeping removes uploads untouched for longer than asked, not others.
pub async fn sweep(_meta: Meta, blobs: Blobs) {
    let blob = b"abandoned upload".as_slice();
    let total = blob.len() as u64;
    let k = key(1, blob);
    let r = blobs
        .write_chunk(k, chunk(0, total, &blob[..8]), body(&[&blob[..8]]))
        .await
        .unwrap();
    assert_eq!(r, ChunkOutcome::Partial(8));
    assert_eq!(
        blobs
            .sweep_uploads(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(blobs.upload_offset(k).await.unwrap(), 8);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // One upload, however many files or objects the backend keeps for it.
    assert_eq!(blobs.sweep_uploads(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(blobs.upload_offset(k).await.unwrap(), 0);
    // A swept upload starts again from 0.
    upload(&blobs, 1, blob).await;
    assert_eq!(blobs.sweep_uploads(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(read_all(&blobs, sha(blob), 0, total).await, blob);
}

/// The claim of `signer`'s request `nonce`, until `expires`, made at `now`.
fn nonce(signer: Fingerprint, nonce: [u8; 16], expires: u64, now: u64) -> NonceClaim {
    NonceClaim {
        signer,
        nonce,
        expires,
        now,
    }
}

/// Request nonces ([`MetaStore::claim_nonce`]): a key's nonce is claimed
/// once while live (its expiry inclusive), another key may use the same
/// nonce, an expired one may be claimed again, and
/// [`MetaStore::expire_nonces`] forgets only expired ones. Of concurrent
/// claims of one nonce, exactly one wins.
pub async fn nonces(meta: Meta, _blobs: Blobs) {
    let (a, b) = (fp(1), fp(2));
    let now = 1_000_000;
    assert!(meta
        .claim_nonce(nonce(a, [1; 16], now + 10, now))
        .await
        .unwrap());
    assert!(!meta
        .claim_nonce(nonce(a, [1; 16], now + 10, now))
        .await
        .unwrap());
    // Still live at its expiry time.
    assert!(!meta
        .claim_nonce(nonce(a, [1; 16], now + 20, now + 10))
        .await
        .unwrap());
    assert!(meta
        .claim_nonce(nonce(b, [1; 16], now + 10, now))
        .await
        .unwrap());
    assert!(meta
        .claim_nonce(nonce(a, [2; 16], now + 30, now))
        .await
        .unwrap());
    // Expired: may be claimed again, and is then live until its new expiry.
    assert!(meta
        .claim_nonce(nonce(a, [1; 16], now + 40, now + 11))
        .await
        .unwrap());
    assert!(!meta
        .claim_nonce(nonce(a, [1; 16], now + 40, now + 12))
        .await
        .unwrap());
    // At now + 35, b's (until now + 10) and a's second (until now + 30)
    // have expired; a's first (until now + 40) has not.
    assert_eq!(meta.expire_nonces(now + 35).await.unwrap(), 2);
    assert_eq!(meta.expire_nonces(now + 35).await.unwrap(), 0);
    assert!(!meta
        .claim_nonce(nonce(a, [1; 16], now + 50, now + 35))
        .await
        .unwrap());
    assert!(meta
        .claim_nonce(nonce(b, [1; 16], now + 50, now + 35))
        .await
        .unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let m = meta.clone();
            tokio::spawn(async move { m.claim_nonce(nonce(fp(3), [9; 16], now + 10, now)).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "one of eight concurrent claims of a nonce wins");
}

/// A contract: its name and its function.
pub type Contract = (
    &'static str,
    fn(Meta, Blobs) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
);

macro_rules! contracts {
    ($($name:ident),* $(,)?) => {
        /// Every contract, by name.
        pub const CONTRACTS: &[Contract] = &[
            $((stringify!($name), |m, b| Box::pin($name(m, b)))),*
        ];
    };
}

contracts!(
    identities,
    create_vault,
    append_and_read,
    append_refusals,
    append_blob_checks,
    staged_appends,
    inbox_index,
    accepted_owners,
    device_lists,
    add_blob,
    downloads_at_once,
    upload_charges,
    purge,
    concurrent_appends,
    nonces,
    blob_roundtrip,
    chunk_refusals,
    blake3_addresses,
    concurrent_chunks,
    sweep,
    links_lifecycle,
    link_attempts,
    concurrent_link_attempts,
    link_access_log,
    link_retirement,
    pairings,
);

// ----- SMART Health Links (storage::links) ---------------------------------

use super::links::{
    AccessEvent, AccessOutcome, Attempt, CreateLinkOutcome, LinkFile, NewLink, Ticket,
    MAX_ACCESS_EVENTS,
};

fn new_link(n: u8, owner: u8, passcode: bool, expires_at: Option<u64>) -> NewLink {
    NewLink {
        hash: sha(&[b'L', n]),
        owner: fp(owner),
        created_at: 1_000 + u64::from(n),
        expires_at,
        long_term: n % 2 == 0,
        direct: false,
        passcode: passcode.then(|| vec![9; 57]),
        max_attempts: 3,
        files: vec![
            LinkFile {
                content_type: "application/fhir+json".into(),
                jwe: format!("jwe one of link {n}"),
            },
            LinkFile {
                content_type: "application/fhir+json".into(),
                jwe: format!("jwe two of link {n}, longer"),
            },
        ],
    }
}

fn event(at: u64, who: &str, outcome: AccessOutcome) -> AccessEvent {
    AccessEvent {
        at,
        recipient: who.into(),
        outcome,
    }
}

/// A link is stored with its files and charged to its owner; listed
/// newest first; found by hash only; revoked by its owner only, which
/// deletes its files and tickets and gives the charge back, keeps the
/// record, and is idempotent; the owner's count of links not revoked is
/// capped; the quota holds.
pub async fn links_lifecycle(meta: Meta, _blobs: Blobs) {
    let a = new_link(1, 1, false, None);
    let bytes: u64 = a.files.iter().map(|f| f.jwe.len() as u64).sum();
    assert_eq!(
        meta.create_link(a.clone(), bytes - 1, 10).await.unwrap(),
        CreateLinkOutcome::Quota
    );
    assert!(meta.link(a.hash).await.unwrap().is_none());
    assert_eq!(meta.usage(fp(1)).await.unwrap(), 0);
    assert_eq!(
        meta.create_link(a.clone(), bytes, 10).await.unwrap(),
        CreateLinkOutcome::Created
    );
    assert_eq!(meta.usage(fp(1)).await.unwrap(), bytes);
    assert_eq!(
        meta.create_link(a.clone(), u64::MAX, 10).await.unwrap(),
        CreateLinkOutcome::Exists
    );
    let stored = meta.link(a.hash).await.unwrap().unwrap();
    assert_eq!(stored.owner, fp(1));
    assert_eq!(stored.files, 2);
    assert_eq!(stored.bytes, bytes);
    assert_eq!(stored.failed_attempts, 0);
    assert!(stored.active_at(5_000));
    assert_eq!(meta.link_files(a.hash).await.unwrap(), a.files);
    assert!(meta.link(sha(b"other")).await.unwrap().is_none());
    // Cap on links not revoked.
    let b = new_link(2, 1, true, Some(9_000));
    assert_eq!(
        meta.create_link(b.clone(), u64::MAX, 1).await.unwrap(),
        CreateLinkOutcome::TooMany(1)
    );
    assert_eq!(
        meta.create_link(b.clone(), u64::MAX, 2).await.unwrap(),
        CreateLinkOutcome::Created
    );
    let listed = meta.links_of(fp(1)).await.unwrap();
    assert_eq!(
        listed.iter().map(|l| l.hash).collect::<Vec<_>>(),
        [b.hash, a.hash]
    );
    assert!(meta.links_of(fp(2)).await.unwrap().is_empty());
    // A ticket to a's second file.
    let t = Ticket {
        hash: sha(b"ticket"),
        file: 1,
        expires_at: 2_000,
    };
    meta.record_access(
        a.hash,
        event(1_500, "Dr A", AccessOutcome::Manifest),
        false,
        vec![t],
    )
    .await
    .unwrap();
    assert_eq!(meta.ticket(t.hash, 1_999).await.unwrap(), Some((a.hash, 1)));
    assert_eq!(meta.ticket(t.hash, 2_000).await.unwrap(), None);
    // Only the owner revokes.
    assert!(!meta.revoke_link(fp(2), a.hash, 1_600).await.unwrap());
    assert!(meta
        .link(a.hash)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    assert!(meta.revoke_link(fp(1), a.hash, 1_600).await.unwrap());
    let revoked = meta.link(a.hash).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(1_600));
    assert!(!revoked.active_at(1_601));
    assert!(meta.link_files(a.hash).await.unwrap().is_empty());
    assert_eq!(meta.ticket(t.hash, 1_700).await.unwrap(), None);
    let b_bytes: u64 = b.files.iter().map(|f| f.jwe.len() as u64).sum();
    assert_eq!(meta.usage(fp(1)).await.unwrap(), b_bytes);
    // Idempotent; the record stays; the cap counts only links not revoked.
    assert!(meta.revoke_link(fp(1), a.hash, 1_700).await.unwrap());
    assert_eq!(meta.usage(fp(1)).await.unwrap(), b_bytes);
    assert_eq!(
        meta.access_log(fp(1), a.hash).await.unwrap().unwrap().len(),
        1
    );
    let c = new_link(3, 1, false, None);
    assert_eq!(
        meta.create_link(c, u64::MAX, 2).await.unwrap(),
        CreateLinkOutcome::Created
    );
    assert!(!meta
        .revoke_link(fp(1), sha(b"nothing"), 1_800)
        .await
        .unwrap());
}

/// Expired links are retired: files and tickets deleted, the charge given
/// back, files and bytes 0, the record kept; revoked, unexpired and
/// never-expiring links are untouched; retiring twice retires nothing; a
/// retired link leaves the owner's link cap.
pub async fn link_retirement(meta: Meta, _blobs: Blobs) {
    let size = |l: &NewLink| l.files.iter().map(|f| f.jwe.len() as u64).sum::<u64>();
    let expiring = new_link(20, 5, false, Some(2_000));
    let later = new_link(21, 5, true, Some(9_000));
    let forever = new_link(22, 5, false, None);
    let revoked = new_link(23, 6, false, Some(1_500));
    for l in [&expiring, &later, &forever, &revoked] {
        assert_eq!(
            meta.create_link(l.clone(), u64::MAX, 10).await.unwrap(),
            CreateLinkOutcome::Created
        );
    }
    let t = Ticket {
        hash: sha(b"retired ticket"),
        file: 0,
        expires_at: 5_000,
    };
    meta.record_access(
        expiring.hash,
        event(1_900, "Dr R", AccessOutcome::Manifest),
        false,
        vec![t],
    )
    .await
    .unwrap();
    assert!(meta.revoke_link(fp(6), revoked.hash, 1_400).await.unwrap());
    assert_eq!(meta.usage(fp(6)).await.unwrap(), 0);
    let all = size(&expiring) + size(&later) + size(&forever);
    assert_eq!(meta.usage(fp(5)).await.unwrap(), all);
    // Before its expiry, nothing is retired.
    assert_eq!(meta.retire_links(1_999).await.unwrap(), 0);
    assert_eq!(meta.link_files(expiring.hash).await.unwrap().len(), 2);
    // At its expiry, only the expired link, not the revoked one again.
    assert_eq!(meta.retire_links(2_000).await.unwrap(), 1);
    let gone = meta.link(expiring.hash).await.unwrap().unwrap();
    assert_eq!((gone.files, gone.bytes), (0, 0));
    assert!(gone.revoked_at.is_none());
    assert!(meta.link_files(expiring.hash).await.unwrap().is_empty());
    assert_eq!(meta.ticket(t.hash, 2_001).await.unwrap(), None);
    assert_eq!(
        meta.usage(fp(5)).await.unwrap(),
        size(&later) + size(&forever)
    );
    assert_eq!(
        meta.access_log(fp(5), expiring.hash)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(meta.link_files(later.hash).await.unwrap().len(), 2);
    assert_eq!(meta.link_files(forever.hash).await.unwrap().len(), 2);
    assert_eq!(meta.retire_links(2_000).await.unwrap(), 0);
    // Revoking a retired link gives nothing back twice.
    assert!(meta.revoke_link(fp(5), expiring.hash, 2_100).await.unwrap());
    assert_eq!(
        meta.usage(fp(5)).await.unwrap(),
        size(&later) + size(&forever)
    );
    // Two live links of owner 5 remain: a cap of 3 admits one more.
    assert_eq!(
        meta.create_link(new_link(24, 5, false, None), u64::MAX, 3)
            .await
            .unwrap(),
        CreateLinkOutcome::Created
    );
    assert_eq!(
        meta.create_link(new_link(25, 5, false, None), u64::MAX, 3)
            .await
            .unwrap(),
        CreateLinkOutcome::TooMany(3)
    );
    // Later, the other expiring link goes too.
    assert_eq!(meta.retire_links(9_000).await.unwrap(), 1);
    assert!(meta.link_files(later.hash).await.unwrap().is_empty());
}

/// Passcode attempts: each reservation counts as failed until a refund;
/// at the limit the link is disabled; revoked and expired links reserve
/// nothing.
pub async fn link_attempts(meta: Meta, _blobs: Blobs) {
    let l = new_link(4, 1, true, Some(10_000));
    meta.create_link(l.clone(), u64::MAX, 10).await.unwrap();
    // A right passcode: reserved, then refunded.
    assert_eq!(
        meta.reserve_attempt(l.hash, 2_000).await.unwrap(),
        Attempt::Reserved { remaining: 2 }
    );
    meta.record_access(
        l.hash,
        event(2_000, "ok", AccessOutcome::Manifest),
        true,
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(meta.link(l.hash).await.unwrap().unwrap().failed_attempts, 0);
    // Three wrong ones: the link is disabled.
    for remaining in [2, 1, 0] {
        assert_eq!(
            meta.reserve_attempt(l.hash, 2_001).await.unwrap(),
            Attempt::Reserved { remaining }
        );
        meta.record_access(
            l.hash,
            event(2_001, "guess", AccessOutcome::WrongPasscode),
            false,
            vec![],
        )
        .await
        .unwrap();
    }
    let stored = meta.link(l.hash).await.unwrap().unwrap();
    assert_eq!(stored.failed_attempts, 3);
    assert!(!stored.active_at(2_002));
    assert_eq!(
        meta.reserve_attempt(l.hash, 2_002).await.unwrap(),
        Attempt::Inactive
    );
    assert_eq!(meta.link(l.hash).await.unwrap().unwrap().failed_attempts, 3);
    // Expired and revoked links, and unknown ones.
    let e = new_link(5, 1, true, Some(3_000));
    meta.create_link(e.clone(), u64::MAX, 10).await.unwrap();
    assert_eq!(
        meta.reserve_attempt(e.hash, 3_000).await.unwrap(),
        Attempt::Inactive
    );
    assert!(matches!(
        meta.reserve_attempt(e.hash, 2_999).await.unwrap(),
        Attempt::Reserved { .. }
    ));
    meta.revoke_link(fp(1), e.hash, 2_999).await.unwrap();
    assert_eq!(
        meta.reserve_attempt(e.hash, 2_999).await.unwrap(),
        Attempt::Inactive
    );
    assert_eq!(
        meta.reserve_attempt(sha(b"none"), 1).await.unwrap(),
        Attempt::Inactive
    );
}

/// Many parallel reservations never exceed the limit.
pub async fn concurrent_link_attempts(meta: Meta, _blobs: Blobs) {
    let l = new_link(6, 1, true, None);
    meta.create_link(l.clone(), u64::MAX, 10).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let meta = meta.clone();
        let h = l.hash;
        tasks.push(tokio::spawn(async move {
            meta.reserve_attempt(h, 2_000).await.unwrap()
        }));
    }
    let mut reserved = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Attempt::Reserved { .. }) {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 3, "exactly max_attempts reservations succeed");
    assert_eq!(meta.link(l.hash).await.unwrap().unwrap().failed_attempts, 3);
}

/// The access record: in order, only for the owner, capped at
/// MAX_ACCESS_EVENTS (the oldest dropped), each event as recorded.
pub async fn link_access_log(meta: Meta, _blobs: Blobs) {
    let l = new_link(7, 1, false, None);
    meta.create_link(l.clone(), u64::MAX, 10).await.unwrap();
    assert_eq!(meta.access_log(fp(1), l.hash).await.unwrap(), Some(vec![]));
    assert_eq!(meta.access_log(fp(2), l.hash).await.unwrap(), None);
    assert_eq!(meta.access_log(fp(1), sha(b"none")).await.unwrap(), None);
    // Recording for an unknown link stores nothing.
    meta.record_access(
        sha(b"none"),
        event(1, "x", AccessOutcome::Manifest),
        false,
        vec![],
    )
    .await
    .unwrap();
    let n = MAX_ACCESS_EVENTS + 5;
    for i in 0..n {
        let outcome = if i % 3 == 0 {
            AccessOutcome::WrongPasscode
        } else {
            AccessOutcome::Manifest
        };
        meta.record_access(
            l.hash,
            event(10_000 + i as u64, &format!("Dr {i} ✓"), outcome),
            false,
            vec![],
        )
        .await
        .unwrap();
    }
    let log = meta.access_log(fp(1), l.hash).await.unwrap().unwrap();
    assert_eq!(log.len(), MAX_ACCESS_EVENTS);
    assert_eq!(log[0].recipient, "Dr 5 ✓");
    assert_eq!(log[0].at, 10_005);
    assert_eq!(log.last().unwrap().recipient, format!("Dr {} ✓", n - 1));
    assert_eq!(log[1].outcome, AccessOutcome::WrongPasscode);
    assert_eq!(meta.link(l.hash).await.unwrap().unwrap().accesses, n as u64);
}

// ----- pairing slots (storage::pairings) ------------------------------------

use super::pairings::{OpenOutcome, PairingSlot, StepOutcome};

/// A pairing slot opens once per code while live; it is capped per opener
/// and in all; one device other than its opener joins it (of eight racing,
/// exactly one, the others refused) and then sends its nonce, once; only its opener
/// reveals, once, after that nonce; it answers until its expiry
/// (inclusive), then an open of the same code replaces it; only its opener
/// closes it; [`super::pairings::PairingStore::expire_pairings`] forgets
/// expired slots only.
pub async fn pairings(meta: Meta, _blobs: Blobs) {
    let now = 1_000_000;
    let (e, n, m) = (fp(1), fp(2), fp(3));
    let open = |slot: u8, opener: Fingerprint, expires: u64| {
        PairingSlot::opened([slot; 32], opener, [slot ^ 0xff; 32], expires)
    };
    assert_eq!(meta.pairing([1; 32], now).await.unwrap(), None);
    assert_eq!(
        meta.open_pairing(open(1, e, now + 600), 2, 4, now)
            .await
            .unwrap(),
        OpenOutcome::Opened
    );
    assert_eq!(
        meta.open_pairing(open(1, m, now + 600), 2, 4, now)
            .await
            .unwrap(),
        OpenOutcome::Taken
    );
    assert_eq!(
        meta.open_pairing(open(2, e, now + 10), 2, 4, now)
            .await
            .unwrap(),
        OpenOutcome::Opened
    );
    assert_eq!(
        meta.open_pairing(open(3, e, now + 600), 2, 4, now)
            .await
            .unwrap(),
        OpenOutcome::TooManyOfOpener(2)
    );
    assert_eq!(
        meta.open_pairing(open(3, m, now + 600), 2, 3, now)
            .await
            .unwrap(),
        OpenOutcome::Opened
    );
    assert_eq!(
        meta.open_pairing(open(4, fp(4), now + 600), 2, 3, now)
            .await
            .unwrap(),
        OpenOutcome::TooMany(3)
    );
    let stored = meta.pairing([1; 32], now).await.unwrap().unwrap();
    assert_eq!(stored, open(1, e, now + 600));

    // Its opener cannot join it.
    assert!(matches!(
        meta.join_pairing([1; 32], e, now).await.unwrap(),
        StepOutcome::Refused(_)
    ));
    // Reveal before a join: refused; joins: one wins, the others are
    // refused.
    assert!(matches!(
        meta.reveal_pairing([1; 32], e, fp(9), [5; 32], now)
            .await
            .unwrap(),
        StepOutcome::Refused(_)
    ));
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let m = meta.clone();
            tokio::spawn(async move { m.join_pairing([1; 32], fp(20 + i), now).await })
        })
        .collect();
    let mut winner = None;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            StepOutcome::Done(s) => {
                assert!(winner.is_none(), "two joins won");
                assert_eq!(s.device_nonce, None);
                winner = s.joined;
            }
            StepOutcome::Refused(_) => {}
            other => panic!("a losing join: {other:?}"),
        }
    }
    let joiner = winner.expect("one of eight joins wins");
    // The winner's join again (a retry whose answer was lost): done again.
    assert!(matches!(
        meta.join_pairing([1; 32], joiner, now).await.unwrap(),
        StepOutcome::Done(_)
    ));
    match meta.join_pairing([1; 32], n, now).await.unwrap() {
        StepOutcome::Refused(s) => assert_eq!(s.joined, Some(joiner)),
        other => panic!("a second join: {other:?}"),
    }
    assert_eq!(
        meta.join_pairing([7; 32], n, now).await.unwrap(),
        StepOutcome::NotFound
    );
    // The joined device sends its nonce, once; nobody else does. Before
    // it, the opener cannot reveal.
    assert!(matches!(
        meta.reveal_pairing([1; 32], e, fp(9), [5; 32], now)
            .await
            .unwrap(),
        StepOutcome::Refused(_)
    ));
    assert!(matches!(
        meta.pairing_nonce([1; 32], n, [6; 32], now).await.unwrap(),
        StepOutcome::Refused(_)
    ));
    match meta
        .pairing_nonce([1; 32], joiner, [6; 32], now)
        .await
        .unwrap()
    {
        StepOutcome::Done(s) => assert_eq!(s.device_nonce, Some([6; 32])),
        other => panic!("the joiner's nonce: {other:?}"),
    }
    // The same nonce again is done again (a retry); another is refused,
    // and so is a join once the nonce is in.
    assert!(matches!(
        meta.pairing_nonce([1; 32], joiner, [6; 32], now)
            .await
            .unwrap(),
        StepOutcome::Done(_)
    ));
    assert!(matches!(
        meta.pairing_nonce([1; 32], joiner, [7; 32], now)
            .await
            .unwrap(),
        StepOutcome::Refused(_)
    ));
    assert!(matches!(
        meta.join_pairing([1; 32], joiner, now).await.unwrap(),
        StepOutcome::Refused(_)
    ));
    assert_eq!(
        meta.pairing_nonce([7; 32], joiner, [6; 32], now)
            .await
            .unwrap(),
        StepOutcome::NotFound
    );
    // Only the opener reveals, once.
    assert!(matches!(
        meta.reveal_pairing([1; 32], m, fp(9), [5; 32], now)
            .await
            .unwrap(),
        StepOutcome::Refused(_)
    ));
    match meta
        .reveal_pairing([1; 32], e, fp(9), [5; 32], now)
        .await
        .unwrap()
    {
        StepOutcome::Done(s) => assert_eq!(s.revealed, Some((fp(9), [5; 32]))),
        other => panic!("the opener's reveal: {other:?}"),
    }
    assert!(matches!(
        meta.reveal_pairing([1; 32], e, fp(8), [4; 32], now)
            .await
            .unwrap(),
        StepOutcome::Refused(_)
    ));
    let stored = meta.pairing([1; 32], now).await.unwrap().unwrap();
    assert_eq!(stored.revealed, Some((fp(9), [5; 32])));

    // Slot 2 answers at its expiry, not after; then its code opens again.
    assert!(meta.pairing([2; 32], now + 10).await.unwrap().is_some());
    assert_eq!(meta.pairing([2; 32], now + 11).await.unwrap(), None);
    assert_eq!(
        meta.join_pairing([2; 32], n, now + 11).await.unwrap(),
        StepOutcome::NotFound
    );
    assert_eq!(
        meta.open_pairing(open(2, m, now + 700), 2, 3, now + 11)
            .await
            .unwrap(),
        OpenOutcome::Opened
    );
    assert_eq!(
        meta.pairing([2; 32], now + 11)
            .await
            .unwrap()
            .unwrap()
            .opener,
        m
    );

    // Closed by its opener only.
    assert!(!meta.close_pairing([2; 32], e).await.unwrap());
    assert!(meta.close_pairing([2; 32], m).await.unwrap());
    assert_eq!(meta.pairing([2; 32], now + 11).await.unwrap(), None);
    assert!(!meta.close_pairing([2; 32], m).await.unwrap());

    // Every step is taken at a slot's expiry (inclusive), none after it.
    let opened = PairingSlot::opened([8; 32], m, [8; 32], now + 50);
    assert_eq!(
        meta.open_pairing(opened, 3, 10, now).await.unwrap(),
        OpenOutcome::Opened
    );
    let at = now + 50;
    assert!(matches!(
        meta.join_pairing([8; 32], n, at).await.unwrap(),
        StepOutcome::Done(_)
    ));
    assert_eq!(
        meta.pairing_nonce([8; 32], n, [1; 32], at + 1)
            .await
            .unwrap(),
        StepOutcome::NotFound
    );
    assert!(matches!(
        meta.pairing_nonce([8; 32], n, [1; 32], at).await.unwrap(),
        StepOutcome::Done(_)
    ));
    assert_eq!(
        meta.reveal_pairing([8; 32], m, fp(9), [2; 32], at + 1)
            .await
            .unwrap(),
        StepOutcome::NotFound
    );
    assert!(matches!(
        meta.reveal_pairing([8; 32], m, fp(9), [2; 32], at)
            .await
            .unwrap(),
        StepOutcome::Done(_)
    ));
    assert_eq!(
        meta.join_pairing([8; 32], n, at + 1).await.unwrap(),
        StepOutcome::NotFound
    );
    assert!(meta.close_pairing([8; 32], m).await.unwrap());

    // Slots 1 and 3 expire at now + 600.
    assert_eq!(meta.expire_pairings(now + 600).await.unwrap(), 0);
    assert_eq!(meta.expire_pairings(now + 601).await.unwrap(), 2);
    assert_eq!(meta.pairing([1; 32], now + 100).await.unwrap(), None);
}
