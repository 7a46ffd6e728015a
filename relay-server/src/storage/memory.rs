//! An in-memory backend: [`MemoryMeta`] and [`MemoryBlobs`], with the
//! observable semantics of [`super::sqlite::SqliteMeta`] and
//! [`super::files::FileBlobs`] but no durability at all.
//!
//! They exist for tests and for the storage conformance suite
//! (`storage::conformance`, feature `conformance`): a second implementation of both traits keeps
//! the suite honest about what is the contract and what is an accident of
//! SQLite or of the filesystem. Never use them to keep data: everything
//! is lost when the value is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use vault_core::{CollectionId, Fingerprint, RecordId, VaultId};

use super::{
    AcceptedOwners, AddBlobOutcome, AppendBatch, AppendError, BlobInfo, BlobReader, BlobStore,
    BodyStream, Chunk, ChunkError, ChunkOutcome, CreateOutcome, DeviceLists, Head, InboxEntry,
    MetaStore, NonceClaim, Precheck, StorageError, StoredEntry, UploadKey,
};

mod links;

type Hash = [u8; 32];
type Fp = [u8; 32];
type Vid = [u8; 16];

#[derive(Default)]
struct Meta {
    identities: HashMap<Fp, Vec<u8>>,
    /// Vault -> head.
    vaults: HashMap<Vid, Head>,
    /// Vault -> seq -> encoding.
    entries: HashMap<Vid, BTreeMap<u64, Vec<u8>>>,
    blobs: HashMap<(Vid, Hash), BlobInfo>,
    /// (vault, hash, record) -> collection (the first one stored wins).
    blob_refs: BTreeMap<(Vid, Hash, [u8; 16]), [u8; 16]>,
    /// (member, vault), ordered as SQLite's primary key orders them.
    inbox: BTreeSet<(Fp, Vid)>,
    usage: HashMap<Fp, u64>,
    small_blobs: HashMap<Hash, Bytes>,
    /// (vault, hash, account) -> (bytes, last charged, unix seconds).
    uploads: BTreeMap<(Vid, Hash, Fp), (u64, u64)>,
    /// Vault -> owner.
    owners: HashMap<Vid, Fp>,
    /// Member -> the owners it accepts shares from.
    accepted: HashMap<Fp, AcceptedOwners>,
    /// Person -> its device lists in the directory.
    device_lists: HashMap<Fp, DeviceLists>,
    /// SMART Health Links.
    links: links::Links,
}

impl Meta {
    /// Charges `bytes` to `account` if the total stays within `quota`.
    fn charge(&mut self, account: &Fingerprint, bytes: u64, quota: u64) -> bool {
        let used = self.usage.get(account.as_bytes()).copied().unwrap_or(0);
        let Some(total) = used.checked_add(bytes).filter(|t| *t <= quota) else {
            return false;
        };
        self.usage.insert(*account.as_bytes(), total);
        true
    }

    /// Gives back `bytes` (never below zero; an account with no usage
    /// stays without).
    fn refund(&mut self, account: &Fp, bytes: u64) {
        if let Some(used) = self.usage.get_mut(account) {
            *used = used.saturating_sub(bytes);
        }
    }

    fn blob_state(&self, vault: &Vid, hash: &Hash) -> Option<(BlobInfo, bool)> {
        let info = *self.blobs.get(&(*vault, *hash))?;
        let used = self
            .blob_refs
            .range((*vault, *hash, [0; 16])..=(*vault, *hash, [0xff; 16]))
            .next()
            .is_some();
        Some((info, used))
    }

    fn release_uploads(&mut self, vault: &Vid, hash: &Hash) -> usize {
        let keys: Vec<(Vid, Hash, Fp)> = self
            .uploads
            .range((*vault, *hash, [0; 32])..=(*vault, *hash, [0xff; 32]))
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            if let Some((bytes, _)) = self.uploads.remove(k) {
                self.refund(&k.2, bytes);
            }
        }
        keys.len()
    }

    fn forget_blob(&mut self, vault: &Vid, hash: &Hash) {
        let Some(info) = self.blobs.remove(&(*vault, *hash)) else {
            return;
        };
        self.blob_refs
            .retain(|(v, h, _), _| !(v == vault && h == hash));
        self.refund(info.uploader.as_bytes(), info.len);
        if !self.blobs.keys().any(|(_, h)| h == hash) {
            self.small_blobs.remove(hash);
        }
    }

    fn append(&mut self, b: &AppendBatch) -> Result<Head, AppendError> {
        let vid = *b.vault.as_bytes();
        let Some(current) = self.vaults.get(&vid).copied() else {
            return Err(AppendError::NoVault);
        };
        if current != b.prev {
            return Err(AppendError::HeadMoved(current));
        }
        for r in &b.blob_refs {
            let usable = self
                .blob_state(&vid, &r.hash)
                .is_some_and(|(info, used)| r.usable(&info, used, &b.account));
            if !usable {
                return Err(AppendError::BlobMissing(r.entry));
            }
        }
        // SQLite refuses a sequence number stored twice (primary key): the
        // whole append fails as a storage error and nothing is kept.
        let log = self.entries.get(&vid);
        let mut seqs = BTreeSet::new();
        for e in &b.entries {
            if !seqs.insert(e.seq) || log.is_some_and(|l| l.contains_key(&e.seq)) {
                return Err(StorageError::new(format!(
                    "entry {} of the vault is already stored",
                    e.seq
                ))
                .into());
            }
        }
        let bytes: u64 = b.entries.iter().map(|e| e.bytes.len() as u64).sum();
        if !self.charge(&b.account, bytes, b.quota) {
            return Err(AppendError::Quota);
        }
        let mut last = current;
        let log = self.entries.entry(vid).or_default();
        for e in &b.entries {
            log.insert(e.seq, e.bytes.clone());
            last = Head {
                seq: e.seq,
                hash: e.hash,
            };
        }
        self.vaults.insert(vid, last);
        for r in &b.blob_refs {
            self.blob_refs
                .entry((vid, r.hash, *r.record.as_bytes()))
                .or_insert(*r.collection.as_bytes());
        }
        for m in &b.inbox {
            self.inbox.insert((*m.as_bytes(), vid));
        }
        for hash in &b.purged {
            self.forget_blob(&vid, hash);
        }
        Ok(last)
    }
}

/// Metadata in memory, with [`super::sqlite::SqliteMeta`]'s semantics
/// (every operation atomic, in one critical section) and **no durability**:
/// for tests and the conformance suite only.
#[derive(Default)]
pub struct MemoryMeta {
    state: Mutex<Meta>,
    nonces: super::LocalNonces,
    pairings: super::pairings::LocalPairings,
}

impl MemoryMeta {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Meta) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

super::pairings::local_pairings!(MemoryMeta, pairings);

#[async_trait]
impl MetaStore for MemoryMeta {
    async fn put_identity(&self, fp: Fingerprint, document: Vec<u8>) -> Result<bool, StorageError> {
        Ok(self.with(|m| {
            if m.identities.contains_key(fp.as_bytes()) {
                return false;
            }
            let len = document.len() as u64;
            m.identities.insert(*fp.as_bytes(), document);
            m.charge(&fp, len, u64::MAX);
            true
        }))
    }

    async fn identity(&self, fp: Fingerprint) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.with(|m| m.identities.get(fp.as_bytes()).cloned()))
    }

    async fn create_vault(
        &self,
        vault: VaultId,
        owner: Fingerprint,
        genesis: StoredEntry,
        quota: u64,
    ) -> Result<CreateOutcome, StorageError> {
        let vid = *vault.as_bytes();
        Ok(self.with(|m| {
            if let Some(existing) = m.entries.get(&vid).and_then(|l| l.get(&0)) {
                return if *existing == genesis.bytes {
                    CreateOutcome::AlreadyStored
                } else {
                    CreateOutcome::Conflict
                };
            }
            if !m.charge(&owner, genesis.bytes.len() as u64, quota) {
                return CreateOutcome::Quota;
            }
            m.vaults.insert(
                vid,
                Head {
                    seq: 0,
                    hash: genesis.hash,
                },
            );
            m.entries.entry(vid).or_default().insert(0, genesis.bytes);
            m.owners.insert(vid, *owner.as_bytes());
            m.inbox.insert((*owner.as_bytes(), vid));
            CreateOutcome::Created
        }))
    }

    async fn head(&self, vault: VaultId) -> Result<Option<Head>, StorageError> {
        Ok(self.with(|m| m.vaults.get(vault.as_bytes()).copied()))
    }

    async fn entries(
        &self,
        vault: VaultId,
        since: u64,
        limit: u64,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(self.with(|m| {
            m.entries
                .get(vault.as_bytes())
                .map(|l| {
                    l.range(since..)
                        .take(limit)
                        .map(|(_, b)| b.clone())
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    async fn append(&self, batch: AppendBatch) -> Result<Head, AppendError> {
        self.with(|m| m.append(&batch))
    }

    async fn blob(&self, vault: VaultId, hash: [u8; 32]) -> Result<Option<BlobInfo>, StorageError> {
        Ok(self.with(|m| m.blobs.get(&(*vault.as_bytes(), hash)).copied()))
    }

    async fn append_precheck(
        &self,
        vault: VaultId,
        account: Fingerprint,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Precheck, StorageError> {
        Ok(self.with(|m| {
            let used = m.usage.get(account.as_bytes()).copied().unwrap_or(0);
            let blobs = hashes
                .iter()
                .map(|h| m.blob_state(vault.as_bytes(), h))
                .collect();
            (used, blobs)
        }))
    }

    async fn blob_with_refs(
        &self,
        vault: VaultId,
        hash: [u8; 32],
    ) -> Result<Option<(BlobInfo, Vec<(CollectionId, RecordId)>)>, StorageError> {
        let vid = *vault.as_bytes();
        Ok(self.with(|m| {
            let info = *m.blobs.get(&(vid, hash))?;
            let refs = m
                .blob_refs
                .range((vid, hash, [0; 16])..=(vid, hash, [0xff; 16]))
                .map(|((_, _, record), collection)| {
                    (
                        CollectionId::from_bytes(*collection),
                        RecordId::from_bytes(*record),
                    )
                })
                .collect();
            Some((info, refs))
        }))
    }

    async fn add_blob(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        info: BlobInfo,
        quota: u64,
        inline: Option<Bytes>,
    ) -> Result<AddBlobOutcome, StorageError> {
        let vid = *vault.as_bytes();
        Ok(self.with(|m| {
            let exists = m.blobs.contains_key(&(vid, hash));
            // As in SQLite: the upload's chunk charges are released first,
            // whatever the outcome.
            m.release_uploads(&vid, &hash);
            if exists {
                return AddBlobOutcome::Existed;
            }
            if !m.charge(&info.uploader, info.len, quota) {
                return AddBlobOutcome::Quota;
            }
            m.blobs.insert((vid, hash), info);
            if let Some(bytes) = inline {
                m.small_blobs.entry(hash).or_insert(bytes);
            }
            AddBlobOutcome::Added
        }))
    }

    async fn small_blob(&self, hash: [u8; 32]) -> Result<Option<Bytes>, StorageError> {
        Ok(self.with(|m| m.small_blobs.get(&hash).cloned()))
    }

    async fn charge_upload(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        account: Fingerprint,
        bytes: u64,
    ) -> Result<(), StorageError> {
        let now = crate::auth::unix_now();
        self.with(|m| {
            m.charge(&account, bytes, u64::MAX);
            let e = m
                .uploads
                .entry((*vault.as_bytes(), hash, *account.as_bytes()))
                .or_insert((0, now));
            e.0 = e.0.saturating_add(bytes);
            e.1 = now;
        });
        Ok(())
    }

    async fn release_upload(&self, vault: VaultId, hash: [u8; 32]) -> Result<(), StorageError> {
        self.with(|m| m.release_uploads(vault.as_bytes(), &hash));
        Ok(())
    }

    async fn release_stale_uploads(&self, idle: u64) -> Result<usize, StorageError> {
        let before = crate::auth::unix_now().saturating_sub(idle);
        Ok(self.with(|m| {
            let stale: BTreeSet<(Vid, Hash)> = m
                .uploads
                .iter()
                .filter(|(_, (_, touched))| *touched <= before)
                .map(|((v, h, _), _)| (*v, *h))
                .collect();
            stale.iter().map(|(v, h)| m.release_uploads(v, h)).sum()
        }))
    }

    async fn inbox(&self, member: Fingerprint) -> Result<Vec<InboxEntry>, StorageError> {
        let fp = *member.as_bytes();
        Ok(self.with(|m| {
            m.inbox
                .range((fp, [0; 16])..=(fp, [0xff; 16]))
                .filter_map(|(_, v)| {
                    Some(InboxEntry {
                        vault: VaultId::from_bytes(*v),
                        owner: Fingerprint::from_bytes(*m.owners.get(v)?),
                    })
                })
                .collect()
        }))
    }

    async fn accepted_owners(&self, member: Fingerprint) -> Result<AcceptedOwners, StorageError> {
        Ok(self.with(|m| {
            m.accepted
                .get(member.as_bytes())
                .cloned()
                .unwrap_or_default()
        }))
    }

    async fn set_accepted_owners(
        &self,
        member: Fingerprint,
        list: AcceptedOwners,
    ) -> Result<Result<(), AcceptedOwners>, StorageError> {
        Ok(self.with(|m| {
            let stored = m.accepted.entry(*member.as_bytes()).or_default();
            if list.version <= stored.version {
                return Err(stored.clone());
            }
            *stored = list;
            Ok(())
        }))
    }

    async fn device_lists(&self, person: Fingerprint) -> Result<DeviceLists, StorageError> {
        Ok(self.with(|m| {
            m.device_lists
                .get(person.as_bytes())
                .cloned()
                .unwrap_or_default()
        }))
    }

    async fn set_device_lists(
        &self,
        person: Fingerprint,
        expected: u64,
        lists: DeviceLists,
    ) -> Result<Result<(), DeviceLists>, StorageError> {
        Ok(self.with(|m| {
            let stored = m.device_lists.entry(*person.as_bytes()).or_default();
            if stored.serial != expected || lists.serial <= expected {
                return Err(stored.clone());
            }
            *stored = lists;
            Ok(())
        }))
    }

    async fn blob_in_use(&self, hash: [u8; 32]) -> Result<bool, StorageError> {
        Ok(self.with(|m| m.blobs.keys().any(|(_, h)| *h == hash)))
    }

    async fn usage(&self, account: Fingerprint) -> Result<u64, StorageError> {
        Ok(self.with(|m| m.usage.get(account.as_bytes()).copied().unwrap_or(0)))
    }

    async fn stored_bytes(&self) -> Result<u64, StorageError> {
        Ok(self.with(|m| m.usage.values().fold(0u64, |a, b| a.saturating_add(*b))))
    }

    async fn claim_nonce(&self, claim: NonceClaim) -> Result<bool, StorageError> {
        Ok(self.nonces.claim(claim))
    }

    async fn expire_nonces(&self, now: u64) -> Result<u64, StorageError> {
        Ok(self.nonces.expire(now))
    }
}

struct Upload {
    /// The acknowledged bytes.
    data: Vec<u8>,
    /// The last chunk attempt.
    touched: Instant,
    /// A chunk is being written.
    busy: bool,
}

#[derive(Default)]
struct Blobs {
    complete: HashMap<Hash, Bytes>,
    uploads: HashMap<UploadKey, Upload>,
}

/// Blobs in memory, with [`super::files::FileBlobs`]'s semantics (one
/// writer per upload, a refused chunk leaves the upload where it stood, a
/// complete blob appears under its address only once it hashes to it) and
/// **no durability**: for tests and the conformance suite only.
#[derive(Default)]
pub struct MemoryBlobs {
    state: Mutex<Blobs>,
}

impl MemoryBlobs {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Blobs) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

/// Clears an upload's busy mark when dropped (the request may be
/// cancelled mid-body), dropping the upload if it has no bytes.
struct Busy<'a> {
    store: &'a MemoryBlobs,
    key: UploadKey,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.store.with(|b| {
            let empty = match b.uploads.get_mut(&self.key) {
                Some(u) => {
                    u.busy = false;
                    u.data.is_empty()
                }
                None => false,
            };
            if empty {
                b.uploads.remove(&self.key);
            }
        });
    }
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn upload_offset(&self, key: UploadKey) -> Result<u64, StorageError> {
        Ok(self.with(|b| b.uploads.get(&key).map_or(0, |u| u.data.len() as u64)))
    }

    async fn write_chunk(
        &self,
        key: UploadKey,
        chunk: Chunk,
        mut body: BodyStream,
    ) -> Result<ChunkOutcome, ChunkError> {
        let current = self.with(|b| {
            let u = b.uploads.entry(key).or_insert_with(|| Upload {
                data: Vec::new(),
                touched: Instant::now(),
                busy: false,
            });
            let at = u.data.len() as u64;
            if u.busy || chunk.offset != at {
                return Err(ChunkError::OffsetMismatch(at));
            }
            u.busy = true;
            u.touched = Instant::now();
            Ok(at)
        });
        let current = match current {
            Ok(at) => at,
            Err(e) => {
                // Do not leave an empty upload behind a refused chunk.
                self.with(|b| {
                    if b.uploads
                        .get(&key)
                        .is_some_and(|u| !u.busy && u.data.is_empty())
                    {
                        b.uploads.remove(&key);
                    }
                });
                return Err(e);
            }
        };
        let busy = Busy { store: self, key };
        let mut digest = Sha256::new();
        let mut piece_bytes = Vec::new();
        let mut written: u64 = 0;
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(ChunkError::Body)?;
            written = written.saturating_add(piece.len() as u64);
            if written > chunk.max_chunk || current.saturating_add(written) > chunk.total {
                return Err(ChunkError::TooLarge);
            }
            digest.update(&piece);
            piece_bytes.extend_from_slice(&piece);
        }
        if <[u8; 32]>::from(digest.finalize()) != chunk.digest {
            return Err(ChunkError::DigestMismatch);
        }
        let now_at = current.saturating_add(written);
        let outcome = self.with(|b| {
            let Some(u) = b.uploads.get_mut(&key) else {
                return Err(ChunkError::Storage(StorageError::new(
                    "the upload vanished while a chunk was written",
                )));
            };
            u.data.extend_from_slice(&piece_bytes);
            u.touched = Instant::now();
            if now_at < chunk.total {
                return Ok(ChunkOutcome::Partial(now_at));
            }
            let data = b.uploads.remove(&key).map(|u| u.data).unwrap_or_default();
            if vault_core::address::address_matches(&key.hash, &data).is_none() {
                return Err(ChunkError::HashMismatch);
            }
            b.complete.insert(key.hash, Bytes::from(data));
            Ok(ChunkOutcome::Complete)
        });
        drop(busy);
        outcome
    }

    async fn sweep_uploads(&self, older_than: Duration) -> Result<usize, StorageError> {
        Ok(self.with(|b| {
            let before = b.uploads.len();
            b.uploads
                .retain(|_, u| u.busy || u.touched.elapsed() <= older_than);
            before.saturating_sub(b.uploads.len())
        }))
    }

    async fn read(&self, hash: [u8; 32], start: u64, len: u64) -> Result<BlobReader, StorageError> {
        let data = self
            .with(|b| b.complete.get(&hash).cloned())
            .ok_or_else(|| StorageError::new("no such blob"))?;
        let total = data.len();
        let from = usize::try_from(start).unwrap_or(usize::MAX).min(total);
        let to = from
            .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
            .min(total);
        Ok(Box::pin(std::io::Cursor::new(data.slice(from..to))))
    }

    async fn delete(&self, hash: [u8; 32]) -> Result<(), StorageError> {
        self.with(|b| b.complete.remove(&hash));
        Ok(())
    }
}
