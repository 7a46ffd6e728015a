//! Where the relay keeps what it stores, behind two narrow traits so that a
//! distributed backend (PostgreSQL for metadata, an S3-compatible object
//! store for blobs) can follow the embedded one:
//!
//! - [`MetaStore`]: identities, vault logs, blob records, the inbox index
//!   and per-account usage. Every write is acknowledged only once durable.
//! - [`BlobStore`]: ciphertext bytes, content-addressed, uploaded in
//!   resumable chunks and streamed back.
//!
//! [`sqlite::SqliteMeta`] (SQLite in WAL mode with group commit) and
//! [`files::FileBlobs`] (fsync'd files, renamed into place) are the
//! reference implementations and the default; `postgres::PgMeta`
//! (feature `postgres`) and `s3::S3Blobs` (feature `s3`, its upload state
//! in PostgreSQL) are the scale-out pair; [`backends`] chooses and opens
//! them from the configuration; [`memory`] holds an in-memory pair with the
//! same semantics and no durability (tests), and `conformance` the suite
//! every backend must pass.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use tokio::io::AsyncRead;
use vault_core::{CollectionId, Fingerprint, RecordId, VaultId};

pub mod backends;
#[cfg(feature = "conformance")]
#[doc(hidden)]
pub mod conformance;
pub mod files;
pub mod links;
pub mod memory;
pub mod pairings;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "s3")]
pub mod s3;
pub mod sqlite;

/// A storage failure that is the relay's fault (disk, database).
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage failure: {message}")]
pub struct StorageError {
    /// What failed.
    pub message: String,
    /// The disk (or the account's filesystem quota) is full: the request
    /// may succeed once space returns (HTTP 507).
    pub full: bool,
    /// A remote store (the database, the object store) could not be
    /// reached or is shutting down: nothing was acknowledged, and the same
    /// request may succeed once it is back (HTTP 503 with `retry-after`).
    pub unavailable: bool,
}

impl StorageError {
    /// A failure that is neither the disk being full nor a store being
    /// unreachable.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            full: false,
            unavailable: false,
        }
    }

    /// A store that could not be reached (see [`StorageError::unavailable`]).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            full: false,
            unavailable: true,
        }
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        let full = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull
        );
        Self {
            message: e.to_string(),
            full,
            unavailable: false,
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        // ENOSPC (28) and EDQUOT (122) on Linux.
        let full = e.kind() == std::io::ErrorKind::StorageFull
            || matches!(e.raw_os_error(), Some(28 | 122));
        Self {
            message: e.to_string(),
            full,
            unavailable: false,
        }
    }
}

/// Request nonces remembered in this process, for the stores only one
/// relay process uses (SQLite, memory): exact for them, since no other
/// process accepts requests over the same store. Each nonce is kept until
/// its expiry (inclusive); an insert is O(1), [`LocalNonces::expire`]
/// scans.
#[derive(Default)]
pub struct LocalNonces(std::sync::Mutex<std::collections::HashMap<(Fingerprint, [u8; 16]), u64>>);

impl LocalNonces {
    /// [`MetaStore::claim_nonce`] in this process.
    pub fn claim(&self, claim: NonceClaim) -> bool {
        let NonceClaim {
            signer,
            nonce,
            expires,
            now,
        } = claim;
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&(signer, nonce)) {
            Some(live) if *live >= now => false,
            Some(stale) => {
                *stale = expires;
                true
            }
            None => {
                map.insert((signer, nonce), expires);
                true
            }
        }
    }

    /// [`MetaStore::expire_nonces`] in this process.
    pub fn expire(&self, now: u64) -> u64 {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|_, expires| *expires >= now);
        (before - map.len()) as u64
    }
}

/// The head of a stored log: the last entry's sequence number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Sequence number.
    pub seq: u64,
    /// Entry hash.
    pub hash: [u8; 32],
}

impl Head {
    /// The head of a verified vault state's log.
    pub fn of(state: &vault_core::VaultState) -> Self {
        let checkpoint = state.head();
        Self {
            seq: checkpoint.seq,
            hash: checkpoint.head,
        }
    }
}

/// What an append reads before it is decided
/// ([`MetaStore::append_precheck`]): the account's usage, and for each blob
/// its record-puts name, in order, the blob's record in the vault and
/// whether a record already uses it.
pub type Precheck = (u64, Vec<Option<(BlobInfo, bool)>>);

/// What a store refuses of `batch` given what [`MetaStore::append_precheck`]
/// read (`found`): the account's quota ([`AppendError::Quota`]: every
/// entry's bytes are charged to `batch.account`), then each blob
/// reference in order ([`AppendError::BlobMissing`]: [`BlobRef::usable`]).
/// The head is not read here: [`MetaStore::append`] checks it.
pub fn refusal(batch: &AppendBatch, (used, blobs): Precheck) -> Option<AppendError> {
    let bytes: u64 = batch.entries.iter().map(|e| e.bytes.len() as u64).sum();
    if used.saturating_add(bytes) > batch.quota {
        return Some(AppendError::Quota);
    }
    batch
        .blob_refs
        .iter()
        .zip(blobs.into_iter().chain(std::iter::repeat(None)))
        .find(|(r, found)| !found.is_some_and(|(info, used)| r.usable(&info, used, &batch.account)))
        .map(|(r, _)| AppendError::BlobMissing(r.entry))
}

/// [`MetaStore::stage_append`] that holds nothing open: claims `claim`
/// (when given), reads what [`MetaStore::append_precheck`] reads, refuses
/// what [`refusal`] refuses, and stores the batch with
/// [`MetaStore::append`] at the commit, which checks it all again. The
/// trait's default; the relay also stages so on any store the batches
/// whose storage writes it would rather not start before the entries
/// verify (decision 61).
pub async fn stage_checked<'a, S: MetaStore + ?Sized>(
    store: &'a S,
    claim: Option<NonceClaim>,
    batch: AppendBatch,
) -> Result<Box<dyn StagedAppend + 'a>, AppendError> {
    if let Some(claim) = claim {
        if !store.claim_nonce(claim).await? {
            return Err(AppendError::Replayed);
        }
    }
    let hashes = batch.blob_refs.iter().map(|r| r.hash).collect();
    let found = store
        .append_precheck(batch.vault, batch.account, hashes)
        .await?;
    if let Some(refused) = refusal(&batch, found) {
        return Err(refused);
    }
    Ok(Box::new(Checked { store, batch }))
}

/// An append staged by [`MetaStore::stage_append`]: checked, not yet
/// durable, and nothing of it visible to readers. Dropping it without
/// [`StagedAppend::commit`] abandons it.
#[async_trait]
pub trait StagedAppend: Send {
    /// Makes the staged batch durable, together with the removal of
    /// `purged` (the vault's blobs whose records the entries purged,
    /// known once the relay applied them: see [`AppendBatch::purged`]);
    /// returns the new head once committed. It may still refuse the
    /// batch (another process moved the head in between, for a store
    /// that checks again), storing nothing.
    async fn commit(self: Box<Self>, purged: Vec<[u8; 32]>) -> Result<Head, AppendError>;
    /// Discards the staged batch: nothing of it is stored (a nonce claimed
    /// with it stays claimed).
    async fn abandon(self: Box<Self>);
}

/// The default [`StagedAppend`]: a batch that passed [`refusal`], stored
/// by [`MetaStore::append`] at the commit (which checks everything
/// again).
struct Checked<'a, S: ?Sized> {
    store: &'a S,
    batch: AppendBatch,
}

#[async_trait]
impl<S: MetaStore + ?Sized> StagedAppend for Checked<'_, S> {
    async fn commit(self: Box<Self>, purged: Vec<[u8; 32]>) -> Result<Head, AppendError> {
        let Self { store, mut batch } = *self;
        batch.purged = purged;
        store.append(batch).await
    }

    async fn abandon(self: Box<Self>) {}
}

/// A signed request's nonce to claim in a shared store
/// ([`MetaStore::claim_nonce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceClaim {
    /// The request's signer.
    pub signer: Fingerprint,
    /// The request's nonce.
    pub nonce: [u8; 16],
    /// Until when it is remembered (Unix seconds, inclusive).
    pub expires: u64,
    /// The time of the claim (Unix seconds): an expired record of the
    /// same nonce does not count.
    pub now: u64,
}

/// One log entry as stored: its encoding plus the fields indexed.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// Sequence number.
    pub seq: u64,
    /// Entry hash.
    pub hash: [u8; 32],
    /// The canonical encoding (`docs/format.md` §8.1).
    pub bytes: Vec<u8>,
}

/// A record-put's link from a blob to the record it holds, for access checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef {
    /// The blob (ciphertext hash).
    pub hash: [u8; 32],
    /// Its length, as signed in the metadata.
    pub len: u64,
    /// Its collection.
    pub collection: CollectionId,
    /// Its record.
    pub record: RecordId,
    /// Which entry of the batch names it.
    pub entry: usize,
    /// Besides the batch's account, who may have uploaded it: the
    /// record's author, when a member pushes back entries after a restore
    /// (a repair, decision 53) and the relay kept the author's blob.
    pub also_uploaded_by: Option<Fingerprint>,
}

impl BlobRef {
    /// Whether the stored blob `info` (and whether a record already names
    /// it, `used`) may be linked by this reference in a batch charged to
    /// `account` ([`blob_usable`]).
    pub fn usable(&self, info: &BlobInfo, used: bool, account: &Fingerprint) -> bool {
        blob_usable(
            info,
            used,
            self.len,
            account,
            self.also_uploaded_by.as_ref(),
        )
    }
}

/// The rule for a record-put's blob, the same in the domain's precheck and
/// in every store's commit: stored in the vault with the signed length
/// `len`, named by no record yet, and uploaded by the account the batch is
/// charged to or, in a repair, by the record's author (`also`).
pub fn blob_usable(
    info: &BlobInfo,
    used: bool,
    len: u64,
    account: &Fingerprint,
    also: Option<&Fingerprint>,
) -> bool {
    info.len == len && !used && (info.uploader == *account || also == Some(&info.uploader))
}

/// A verified append, ready to store.
#[derive(Debug, Clone)]
pub struct AppendBatch {
    /// The vault.
    pub vault: VaultId,
    /// The head the entries chain onto (compare-and-swap).
    pub prev: Head,
    /// The entries, in order.
    pub entries: Vec<StoredEntry>,
    /// Blob links from record-put entries.
    pub blob_refs: Vec<BlobRef>,
    /// Principals granted something by these entries (the inbox index).
    pub inbox: Vec<Fingerprint>,
    /// Blobs of this vault whose record versions the entries purged
    /// (`docs/format.md` §8.7): their records go, and their charge is
    /// given back, in the same transaction.
    pub purged: Vec<[u8; 32]>,
    /// The account charged for the bytes.
    pub account: Fingerprint,
    /// The account's quota.
    pub quota: u64,
}

/// One vault of a principal's inbox index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxEntry {
    /// The vault.
    pub vault: VaultId,
    /// Its owner.
    pub owner: Fingerprint,
}

/// The owners a principal accepts shares from (`PUT /v1/inbox/accepted`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptedOwners {
    /// Increases with every change; a list is stored only over an older
    /// one.
    pub version: u64,
    /// The accepted owners, sorted, without repeats.
    pub owners: Vec<Fingerprint>,
}

/// A person's device lists as the directory holds them (`PUT
/// /v1/identities/{fingerprint}/devices`, decision 70): the versions from
/// the newest one the person's root signed to the current one, encoded as
/// `docs/format.md` §3.7 lists each prefixed by its `u32` length. Storage
/// does not parse them; the domain verifies them before they are stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLists {
    /// The current version's serial; a segment is stored only over a
    /// smaller one (0: none stored).
    pub serial: u64,
    /// The encoded versions, oldest first.
    pub lists: Vec<u8>,
}

/// Why an append was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The log moved on: its head is not the batch's `prev`.
    #[error("the log head moved")]
    HeadMoved(Head),
    /// The vault does not exist.
    #[error("no such vault")]
    NoVault,
    /// The account's quota would be exceeded.
    #[error("quota exceeded")]
    Quota,
    /// A record-put names a blob not stored in the vault with its signed
    /// length, not uploaded by the entry's author, or already used by
    /// another record (the batch entry's index).
    #[error("entry {0} names a blob that is not stored")]
    BlobMissing(usize),
    /// The nonce claimed with the append ([`MetaStore::stage_append`]) was
    /// already claimed: the request is a replay.
    #[error("the request's nonce was already used")]
    Replayed,
    /// The relay failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The outcome of creating a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored.
    Created,
    /// Exactly this genesis was already stored.
    AlreadyStored,
    /// Another vault with this id exists.
    Conflict,
    /// The owner's quota would be exceeded by the genesis entry.
    Quota,
}

/// A blob known to a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    /// Length in bytes.
    pub len: u64,
    /// Who uploaded it to this vault.
    pub uploader: Fingerprint,
}

/// What the permission check of a download needs to know of one blob,
/// read with others at once ([`MetaStore::blobs_for_download`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDownload {
    /// The blob's record in the vault.
    pub info: BlobInfo,
    /// The records (collection, record) whose record-puts name it.
    pub refs: Vec<(CollectionId, RecordId)>,
}

/// The outcome of recording a completed blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddBlobOutcome {
    /// Recorded (and charged to the uploader).
    Added,
    /// The vault already had it.
    Existed,
    /// The uploader's quota would be exceeded.
    Quota,
}

/// Metadata storage. Every write returns only once it is durable. Every
/// backend stores SMART Health Links too ([`links::LinkStore`]), and
/// pairing slots ([`pairings::PairingStore`]).
#[async_trait]
pub trait MetaStore: links::LinkStore + pairings::PairingStore + Send + Sync + 'static {
    /// Publishes an identity document; `true` if it was new (then its
    /// bytes are charged to its own account).
    async fn put_identity(&self, fp: Fingerprint, document: Vec<u8>) -> Result<bool, StorageError>;
    /// A published identity document.
    async fn identity(&self, fp: Fingerprint) -> Result<Option<Vec<u8>>, StorageError>;
    /// Creates a vault from its (verified) genesis entry, charging the
    /// entry's bytes to the owner within `quota`.
    async fn create_vault(
        &self,
        vault: VaultId,
        owner: Fingerprint,
        genesis: StoredEntry,
        quota: u64,
    ) -> Result<CreateOutcome, StorageError>;
    /// A vault's head, if the vault exists.
    async fn head(&self, vault: VaultId) -> Result<Option<Head>, StorageError>;
    /// Entry encodings with `seq >= since`, at most `limit`, in order.
    async fn entries(
        &self,
        vault: VaultId,
        since: u64,
        limit: u64,
    ) -> Result<Vec<Vec<u8>>, StorageError>;
    /// Appends a verified batch if the head is still `batch.prev` and every
    /// blob it names is stored in the vault with its signed length.
    async fn append(&self, batch: AppendBatch) -> Result<Head, AppendError>;
    /// A blob of a vault.
    async fn blob(&self, vault: VaultId, hash: [u8; 32]) -> Result<Option<BlobInfo>, StorageError>;
    /// What an append needs to know before it is verified: the account's
    /// usage, and for each blob a record-put names, the blob's record in
    /// the vault and whether a record already uses it.
    async fn append_precheck(
        &self,
        vault: VaultId,
        account: Fingerprint,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Precheck, StorageError>;
    /// A blob of a vault with the records (collection, record) whose
    /// record-puts name it: what a download's access check needs, in one
    /// read.
    async fn blob_with_refs(
        &self,
        vault: VaultId,
        hash: [u8; 32],
    ) -> Result<Option<(BlobInfo, Vec<(CollectionId, RecordId)>)>, StorageError>;
    /// Records a completed blob for a vault, charging the uploader and
    /// releasing what the upload's chunks were charged. With
    /// `inline`, the blob's bytes are kept in the metadata store, in the
    /// same transaction (no blob file: one commit for many small blobs).
    async fn add_blob(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        info: BlobInfo,
        quota: u64,
        inline: Option<bytes::Bytes>,
    ) -> Result<AddBlobOutcome, StorageError>;
    /// The bytes of a blob kept in the metadata store itself (small blobs
    /// of batch uploads), if it is one.
    async fn small_blob(&self, hash: [u8; 32]) -> Result<Option<bytes::Bytes>, StorageError>;
    /// For each of `hashes` of `vault`, in order, what the permission check
    /// of a download needs: what [`MetaStore::blob_with_refs`] answers for
    /// it (`None` if the vault has no such blob), never the blob's bytes. A
    /// backend reads them all at once where it can; the default asks one
    /// blob at a time.
    async fn blobs_for_download(
        &self,
        vault: VaultId,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Vec<Option<BlobDownload>>, StorageError> {
        let mut out = Vec::with_capacity(hashes.len());
        for hash in hashes {
            let found = self
                .blob_with_refs(vault, hash)
                .await?
                .map(|(info, refs)| BlobDownload { info, refs });
            out.push(found);
        }
        Ok(out)
    }
    /// For each of `hashes`, in order, what [`MetaStore::small_blob`]
    /// answers. A backend reads them all at once where it can; the default
    /// asks one blob at a time. Ask only for blobs already found small and
    /// allowed: every byte asked for is read into memory.
    async fn small_blobs(
        &self,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Vec<Option<bytes::Bytes>>, StorageError> {
        let mut out = Vec::with_capacity(hashes.len());
        for hash in hashes {
            out.push(self.small_blob(hash).await?);
        }
        Ok(out)
    }
    /// Charges `bytes` just stored of an unfinished upload of `hash` to
    /// `vault` to `account` (kept until the blob is recorded, the upload is
    /// discarded, or it is released as abandoned).
    async fn charge_upload(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        account: Fingerprint,
        bytes: u64,
    ) -> Result<(), StorageError>;
    /// Gives back every charge of an unfinished upload that was discarded.
    async fn release_upload(&self, vault: VaultId, hash: [u8; 32]) -> Result<(), StorageError>;
    /// Gives back the charges of uploads not charged anything for `idle`
    /// seconds (abandoned: their files are swept after the same time);
    /// returns how many accounts' charges were released.
    async fn release_stale_uploads(&self, idle: u64) -> Result<usize, StorageError>;
    /// Vaults whose logs grant `member` something (or that it owns), each
    /// with its owner, in vault-id order (bytewise).
    async fn inbox(&self, member: Fingerprint) -> Result<Vec<InboxEntry>, StorageError>;
    /// The owners `member` accepted shares from (version 0 and no owners
    /// if it never set a list).
    async fn accepted_owners(&self, member: Fingerprint) -> Result<AcceptedOwners, StorageError>;
    /// Replaces `member`'s accepted owners if `list.version` is greater
    /// than the stored version; otherwise stores nothing and returns the
    /// stored list (a list from another device, or replayed, never undoes a
    /// newer one).
    async fn set_accepted_owners(
        &self,
        member: Fingerprint,
        list: AcceptedOwners,
    ) -> Result<Result<(), AcceptedOwners>, StorageError>;
    /// The device lists the directory holds for `person` (serial 0 and
    /// no bytes if none).
    async fn device_lists(&self, person: Fingerprint) -> Result<DeviceLists, StorageError>;
    /// Replaces `person`'s device lists if the stored serial is still
    /// `expected` (0: none stored), the one the new lists were verified
    /// against, and `lists.serial` is greater; otherwise stores nothing and
    /// returns what is stored (two devices racing, or a replay, never go
    /// backwards nor replace a version they did not build on).
    async fn set_device_lists(
        &self,
        person: Fingerprint,
        expected: u64,
        lists: DeviceLists,
    ) -> Result<Result<(), DeviceLists>, StorageError>;
    /// Whether any vault still has a blob record for `hash` (a purged
    /// blob's bytes are deleted only when none has).
    async fn blob_in_use(&self, hash: [u8; 32]) -> Result<bool, StorageError>;
    /// Bytes charged to an account.
    async fn usage(&self, account: Fingerprint) -> Result<u64, StorageError>;
    /// The sum of every account's charges ([`MetaStore::usage`]), for
    /// metrics: identity documents, log entries (genesis included),
    /// complete blobs (once per vault that records them, inline or not)
    /// and the charged chunks of unfinished uploads. It approximates the
    /// bytes held rather than measuring them: a blob recorded by several
    /// vaults is kept once but counted for each, and a chunk stored but not
    /// yet charged (see [`MetaStore::charge_upload`]) is not counted.
    async fn stored_bytes(&self) -> Result<u64, StorageError>;
    /// Whether other relay processes may write this store at the same time
    /// (PostgreSQL). The relay then treats what it keeps in memory as a
    /// cache of the store: it brings a vault's state up to the stored log
    /// before every decision, and records request nonces with
    /// [`MetaStore::claim_nonce`]. `false` (the default) for stores one
    /// process owns (SQLite in its data directory, memory), whose
    /// in-process state is exact.
    fn is_shared(&self) -> bool {
        false
    }
    /// Records the nonce of a signed request of `claim.signer`,
    /// remembered until `claim.expires` (Unix seconds, inclusive): `true`
    /// if it was not live (first use, or only an expired record of it at
    /// `claim.now`), `false` if a request with this key and nonce was
    /// already recorded and has not expired (a replay). Exact across every
    /// process sharing the store.
    async fn claim_nonce(&self, claim: NonceClaim) -> Result<bool, StorageError>;
    /// Stages `batch` (the checks and writes of [`MetaStore::append`],
    /// not yet durable), claiming `claim` first when given: a replay is
    /// refused with [`AppendError::Replayed`], and the claim stands
    /// whatever the append's outcome. A refusal (`Replayed`, `NoVault`,
    /// `HeadMoved`, `Quota`, `BlobMissing`) stores nothing of the batch.
    ///
    /// The relay stages an append before it verifies the entries with
    /// vault-core, and then either commits the staged batch with the
    /// blobs the entries purged ([`StagedAppend::commit`]) or abandons it
    /// ([`StagedAppend::abandon`]); dropping it abandons it too. A shared
    /// store sends the claim, the checks and the writes in one round trip
    /// and holds its transaction open until then (decision 61), so that a
    /// verified append costs two round trips; the default is
    /// [`stage_checked`].
    async fn stage_append<'a>(
        &'a self,
        claim: Option<NonceClaim>,
        batch: AppendBatch,
    ) -> Result<Box<dyn StagedAppend + 'a>, AppendError> {
        stage_checked(self, claim, batch).await
    }
    /// Forgets nonces that expired before `now`; returns how many (call
    /// periodically).
    async fn expire_nonces(&self, now: u64) -> Result<u64, StorageError>;
    /// Checks that the store answers (a round trip to a remote store; a
    /// no-op for embedded ones). Errors with
    /// [`StorageError::unavailable`] set when it cannot be reached.
    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A request body as a stream of chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A blob being read.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// Identifies an upload in progress: a blob being uploaded to a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadKey {
    /// The vault.
    pub vault: VaultId,
    /// The blob's address.
    pub hash: [u8; 32],
}

/// One chunk of an upload.
#[derive(Debug, Clone, Copy)]
pub struct Chunk {
    /// Where it starts.
    pub offset: u64,
    /// The blob's total length.
    pub total: u64,
    /// The longest chunk accepted.
    pub max_chunk: u64,
    /// The signed SHA-256 of the chunk.
    pub digest: [u8; 32],
}

/// What happened to a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Stored durably; the upload stands at this offset.
    Partial(u64),
    /// The blob is complete, hashes to its address, and is durable.
    Complete,
}

/// Why a chunk was refused (the upload is as it was, except for
/// [`ChunkError::HashMismatch`], which discards it).
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The upload stands elsewhere (or another chunk is being written).
    #[error("the upload stands at offset {0}")]
    OffsetMismatch(u64),
    /// The chunk is longer than allowed or overruns the blob.
    #[error("chunk too large")]
    TooLarge,
    /// The chunk's digest is not the signed one.
    #[error("chunk digest mismatch")]
    DigestMismatch,
    /// The complete blob does not hash to its address.
    #[error("blob hash mismatch")]
    HashMismatch,
    /// The body ended with an error (client gone, timeout).
    #[error("the body was cut off: {0}")]
    Body(std::io::Error),
    /// The relay failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Blob storage: content-addressed, written in resumable chunks, complete
/// blobs immutable.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Where an upload stands (0 if none).
    async fn upload_offset(&self, key: UploadKey) -> Result<u64, StorageError>;
    /// Writes one chunk (see [`ChunkOutcome`], [`ChunkError`]).
    async fn write_chunk(
        &self,
        key: UploadKey,
        chunk: Chunk,
        body: BodyStream,
    ) -> Result<ChunkOutcome, ChunkError>;
    /// Removes uploads untouched for `older_than` (abandoned by their
    /// clients); returns how many uploads (not files or objects) it
    /// removed.
    async fn sweep_uploads(&self, older_than: std::time::Duration) -> Result<usize, StorageError>;
    /// Reads `len` bytes of a complete blob from `start`.
    async fn read(&self, hash: [u8; 32], start: u64, len: u64) -> Result<BlobReader, StorageError>;
    /// Deletes a complete blob's bytes for good (a no-op if absent). Called
    /// only once no vault's records name the blob any more
    /// ([`MetaStore::blob_in_use`]).
    async fn delete(&self, hash: [u8; 32]) -> Result<(), StorageError>;
    /// Checks that the store answers (a request to a remote object store;
    /// a no-op for the files in the data directory). Errors with
    /// [`StorageError::unavailable`] set when it cannot be reached.
    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
