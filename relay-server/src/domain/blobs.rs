//! Ciphertext blobs of a vault: resumable chunked uploads, batch uploads of
//! small blobs, upload status, and downloads with their permission check.
//!
//! Uploads are for the owner and members who may write; every byte stored
//! is charged to the uploader's quota (chunks as they are stored, the blob
//! once complete). A download is for the owner, for members who may read a
//! record version the blob holds ([`vault_core::VaultState::may_read_blob`]),
//! and for the uploader while no entry names the blob.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use vault_core::{Fingerprint, VaultId};

use crate::domain::access::{self, AccessError};
use crate::domain::Failure;
use crate::state::AppState;
use crate::storage::{
    AddBlobOutcome, BlobInfo, BlobReader, BodyStream, Chunk, ChunkError, ChunkOutcome, UploadKey,
};

/// Blobs of a batch up to this size are kept in the metadata store rather
/// than in the blob store.
pub const INLINE_BLOB: u64 = 256 * 1024;
/// How many blobs of a batch are looked up or written at once.
const BATCH_WRITES: usize = 16;

/// Why a blob operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The caller may not use this vault (or it does not exist).
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The announced blob is larger than the relay accepts.
    #[error("blobs are limited to {max} bytes on this relay")]
    BlobTooLarge {
        /// The relay's `max_blob`.
        max: u64,
    },
    /// The chunk is larger than the relay accepts, or runs past the blob.
    #[error("a chunk may be at most {max} bytes and must not run past upload-length")]
    ChunkTooLarge {
        /// The relay's `max_chunk`.
        max: u64,
    },
    /// The uploader's quota would be exceeded.
    #[error("your storage quota on this relay would be exceeded; delete data or ask the operator for more")]
    QuotaExceeded,
    /// The chunk does not start where the upload stands (or another chunk
    /// of the same upload is being written).
    #[error("the upload stands at offset {offset}; resume from there")]
    OffsetMismatch {
        /// Where the upload stands.
        offset: u64,
    },
    /// The chunk is not the signed bytes; it was discarded.
    #[error("the chunk does not match the signed x-vault-content-sha256; it was discarded")]
    ChunkDigestMismatch,
    /// The completed blob does not hash to its address; the upload was
    /// discarded and its charges given back.
    #[error(
        "the complete blob does not hash to its address; the upload was discarded, start again"
    )]
    HashMismatch,
    /// A blob of a batch does not hash to its address; nothing was stored.
    #[error("blob {} does not hash to its address; nothing was stored", hex::encode(.hash))]
    BatchHashMismatch {
        /// The address it was sent under.
        hash: [u8; 32],
    },
    /// The request body ended with an error; the chunk was discarded.
    #[error("the request body was cut off ({0}); the chunk was discarded, resume from the upload offset")]
    BodyCutOff(std::io::Error),
    /// A blob of a batch is being uploaded by another request.
    #[error("blob {} is being uploaded by another request; retry", hex::encode(.hash))]
    UploadInProgress {
        /// The blob.
        hash: [u8; 32],
    },
    /// The vault has no such blob (never uploaded, or purged).
    #[error("no blob with this hash is stored in this vault")]
    NotFound,
    /// The caller is a member but may not read any version the blob holds.
    #[error("you have no access to the record this blob belongs to")]
    NotReadable,
    /// The relay failed.
    #[error(transparent)]
    Failure(#[from] Failure),
}

/// One chunk of an upload, as announced by its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkUpload {
    /// Where the chunk starts in the blob.
    pub offset: u64,
    /// The blob's total length.
    pub total: u64,
    /// The chunk's length, if announced (the body is checked as it is
    /// read either way).
    pub declared_len: Option<u64>,
    /// The signed SHA-256 of the chunk.
    pub digest: [u8; 32],
}

/// What became of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkAnswer {
    /// The vault already has the blob (the chunk was not used).
    AlreadyStored {
        /// The blob's length.
        len: u64,
    },
    /// The chunk is stored durably; the upload stands at `offset`.
    Partial {
        /// Bytes stored so far.
        offset: u64,
    },
    /// The blob is complete, hashes to its address, is durable and is
    /// recorded for the vault.
    Complete {
        /// The blob's length.
        len: u64,
    },
}

/// What a batch upload stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAnswer {
    /// Distinct blobs stored by this request.
    pub stored: usize,
    /// Distinct blobs the vault already had.
    pub present: usize,
}

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadStatus {
    /// The blob is complete and recorded for the vault.
    pub stored: bool,
    /// Acknowledged bytes (the blob's length once stored).
    pub offset: u64,
}

/// A download the caller may make: only this module creates one, after
/// the permission check ([`Blobs::authorize_download`], [`Blobs::read_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Download {
    hash: [u8; 32],
    len: u64,
}

impl Download {
    /// The blob's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The bytes of a download.
pub enum BlobBody {
    /// Held in memory (a small blob kept in the metadata store).
    Bytes(Bytes),
    /// Streamed from the blob store.
    Stream(BlobReader),
}

/// One blob of a batch read ([`Blobs::read_batch`]), in the order asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchRead {
    /// The blob's bytes (it was authorized, as [`Blobs::authorize_download`]
    /// authorizes a download, and is small enough for a batch).
    Bytes(Bytes),
    /// The vault has no such blob (never uploaded, or purged): what a
    /// download answers [`BlobError::NotFound`].
    NotFound,
    /// The caller may not read it: what a download answers
    /// [`BlobError::NotReadable`].
    NotReadable,
    /// Not sent in this answer: larger than [`INLINE_BLOB`], or over the
    /// answer's byte budget. Download it alone.
    FetchAlone,
}

/// `bytes` read of a blob whose record says `len`: a stored blob of
/// another length is the relay's failure, never sent.
fn of_length(bytes: Bytes, len: u64) -> Result<Bytes, BlobError> {
    if bytes.len() as u64 == len {
        Ok(bytes)
    } else {
        Err(Failure::internal(
            "reading a blob",
            "a stored blob is not as long as its record",
        )
        .into())
    }
}

/// Whether member `who`, not the owner, may download blob `hash` stored
/// as `info` and named by the record-puts of `refs`: while no record-put
/// names it, only its uploader; after, a member who may read a version it
/// holds ([`vault_core::VaultState::may_read_blob`]).
fn may_download(
    state: &vault_core::VaultState,
    who: &Fingerprint,
    hash: &[u8; 32],
    info: &BlobInfo,
    refs: &[(vault_core::CollectionId, vault_core::RecordId)],
    now: u64,
) -> bool {
    if refs.is_empty() {
        info.uploader == *who
    } else {
        refs.iter()
            .any(|(_, record)| state.may_read_blob(who, record, hash, now))
    }
}

/// Uploading and downloading blobs.
pub struct Blobs {
    app: Arc<AppState>,
}

impl Blobs {
    /// The service over the relay's state.
    pub fn new(app: Arc<AppState>) -> Self {
        Self { app }
    }

    /// Stores one chunk of `vault`'s blob `hash` from `uploader`.
    ///
    /// Checked in this order: the blob's and the chunk's announced sizes
    /// ([`BlobError::BlobTooLarge`], [`BlobError::ChunkTooLarge`]); write
    /// access; a blob the vault already has is answered
    /// [`ChunkAnswer::AlreadyStored`] without reading the body; the quota
    /// for what is left of the blob ([`BlobError::QuotaExceeded`]); then
    /// the body as it is stored (see [`crate::storage::BlobStore::write_chunk`]).
    /// A stored chunk is charged to `uploader` at once; a completed blob is
    /// recorded and charged in place of its chunks.
    pub async fn put_chunk(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        uploader: Fingerprint,
        chunk: ChunkUpload,
        body: BodyStream,
    ) -> Result<ChunkAnswer, BlobError> {
        let app = &self.app;
        let ChunkUpload {
            offset,
            total,
            declared_len,
            digest,
        } = chunk;
        let max_chunk = app.config.max_chunk;
        if total > app.config.max_blob {
            return Err(BlobError::BlobTooLarge {
                max: app.config.max_blob,
            });
        }
        if let Some(len) = declared_len {
            if len > max_chunk || offset.saturating_add(len) > total {
                return Err(BlobError::ChunkTooLarge { max: max_chunk });
            }
        }
        access::uploader_access(app, vault, &uploader).await?;
        if let Some(b) = self.record(vault, hash).await? {
            return Ok(ChunkAnswer::AlreadyStored { len: b.len });
        }
        let used = self.usage(uploader).await?;
        // What is already stored of this upload is charged already.
        if used.saturating_add(total.saturating_sub(offset)) > app.config.quota {
            return Err(BlobError::QuotaExceeded);
        }
        // Every vault's copy of a blob is uploaded and hashed in full, even
        // if the same bytes are stored for another vault: holding the
        // address is not holding the bytes.
        let chunk = Chunk {
            offset,
            total,
            max_chunk,
            digest,
        };
        match app
            .blobs
            .write_chunk(UploadKey { vault, hash }, chunk, body)
            .await
        {
            Ok(ChunkOutcome::Partial(at)) => {
                // Unfinished uploads take space too: the chunk is charged
                // now, and released when the blob is recorded or the
                // upload discarded or abandoned. The chunk is durable
                // whatever happens here: if charging it fails, the answer
                // still says so, and the chunk stays uncharged until the
                // blob is recorded or the upload swept.
                if let Err(e) = app
                    .meta
                    .charge_upload(vault, hash, uploader, at.saturating_sub(offset))
                    .await
                {
                    tracing::warn!(error = %e, "charging a stored chunk failed");
                }
                Ok(ChunkAnswer::Partial { offset: at })
            }
            Ok(ChunkOutcome::Complete) => {
                if self.add(vault, hash, total, uploader, None).await? {
                    Ok(ChunkAnswer::Complete { len: total })
                } else {
                    Ok(ChunkAnswer::AlreadyStored { len: total })
                }
            }
            Err(ChunkError::OffsetMismatch(offset)) => Err(BlobError::OffsetMismatch { offset }),
            Err(ChunkError::TooLarge) => Err(BlobError::ChunkTooLarge { max: max_chunk }),
            Err(ChunkError::DigestMismatch) => Err(BlobError::ChunkDigestMismatch),
            Err(ChunkError::HashMismatch) => {
                // The upload is gone either way; a charge not given back
                // now is given back with abandoned uploads' after 24 hours.
                if let Err(e) = app.meta.release_upload(vault, hash).await {
                    tracing::warn!(error = %e, "releasing a discarded upload's charge failed");
                }
                Err(BlobError::HashMismatch)
            }
            Err(ChunkError::Body(e)) => Err(BlobError::BodyCutOff(e)),
            Err(ChunkError::Storage(e)) => Err(Failure::storage("writing a blob chunk", e).into()),
        }
    }

    /// Stores several complete blobs `(address, bytes)` of `vault` from
    /// `uploader`, all or nothing as far as the caller can tell: every blob
    /// must hash to its address ([`BlobError::BatchHashMismatch`], checked
    /// before anything else), the uploader must have write access, blobs
    /// the vault has are skipped, and the rest must fit the quota as a
    /// whole ([`BlobError::QuotaExceeded`]). Blobs up to [`INLINE_BLOB`]
    /// bytes are kept in the metadata store. Durable when it returns.
    pub async fn put_batch(
        &self,
        vault: VaultId,
        uploader: Fingerprint,
        mut frames: Vec<([u8; 32], Bytes)>,
    ) -> Result<BatchAnswer, BlobError> {
        for (hash, bytes) in &frames {
            if vault_core::address::address_matches(hash, bytes).is_none() {
                return Err(BlobError::BatchHashMismatch { hash: *hash });
            }
        }
        access::uploader_access(&self.app, vault, &uploader).await?;
        frames.sort_by_key(|(h, _)| *h);
        frames.dedup_by_key(|(h, _)| *h);
        let distinct = frames.len();
        // Which blobs the vault lacks (looked up concurrently).
        let lookups =
            futures_util::stream::iter(frames.into_iter().map(|(hash, bytes)| async move {
                let known = self.record(vault, hash).await?.is_some();
                Ok::<_, BlobError>((!known).then_some((hash, bytes)))
            }))
            .buffer_unordered(BATCH_WRITES)
            .try_collect::<Vec<_>>()
            .await?;
        let fresh: Vec<([u8; 32], Bytes)> = lookups.into_iter().flatten().collect();
        let present = distinct - fresh.len();
        let used = self.usage(uploader).await?;
        let adding: u64 = fresh.iter().map(|(_, b)| b.len() as u64).sum();
        if used.saturating_add(adding) > self.app.config.quota {
            return Err(BlobError::QuotaExceeded);
        }
        let stored = fresh.len();
        futures_util::stream::iter(
            fresh
                .into_iter()
                .map(|(hash, bytes)| self.store_whole(vault, hash, uploader, bytes)),
        )
        .buffer_unordered(BATCH_WRITES)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(BatchAnswer { stored, present })
    }

    /// Stores one complete blob of a batch: in the metadata store if small,
    /// else written to the blob store in one chunk, then recorded.
    async fn store_whole(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        uploader: Fingerprint,
        bytes: Bytes,
    ) -> Result<(), BlobError> {
        let len = bytes.len() as u64;
        self.app.metrics.blob_bytes_in.inc_by(len);
        if len <= INLINE_BLOB {
            // Kept in the database: committed with the other writes of
            // its group, no file and no fsync of its own.
            self.add(vault, hash, len, uploader, Some(bytes)).await?;
            return Ok(());
        }
        let chunk = Chunk {
            offset: 0,
            total: len,
            max_chunk: len,
            digest: hash,
        };
        let stream = futures_util::stream::once(async move { Ok(bytes) });
        match self
            .app
            .blobs
            .write_chunk(UploadKey { vault, hash }, chunk, Box::pin(stream))
            .await
        {
            Ok(ChunkOutcome::Complete) => {}
            Ok(ChunkOutcome::Partial(_)) | Err(ChunkError::OffsetMismatch(_)) => {
                // Another upload of the same blob is under way.
                return Err(BlobError::UploadInProgress { hash });
            }
            Err(ChunkError::Storage(e)) => return Err(Failure::storage("writing a blob", e).into()),
            Err(e) => return Err(Failure::internal("writing a blob", e).into()),
        }
        self.add(vault, hash, len, uploader, None).await?;
        Ok(())
    }

    /// Where the upload of `vault`'s blob `hash` stands, for a writer
    /// (acknowledged chunks only).
    pub async fn upload_status(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        who: &Fingerprint,
    ) -> Result<UploadStatus, BlobError> {
        access::uploader_access(&self.app, vault, who).await?;
        if let Some(b) = self.record(vault, hash).await? {
            return Ok(UploadStatus {
                stored: true,
                offset: b.len,
            });
        }
        let offset = self
            .app
            .blobs
            .upload_offset(UploadKey { vault, hash })
            .await
            .map_err(|e| Failure::storage("reading an upload", e))?;
        Ok(UploadStatus {
            stored: false,
            offset,
        })
    }

    /// Checks that `who` may download `vault`'s blob `hash`: a member
    /// ([`AccessError`]) of a vault that has the blob
    /// ([`BlobError::NotFound`], also for a purged blob), and either the
    /// owner, or the uploader while no record-put names the blob, or a
    /// member who may read a version it holds
    /// ([`vault_core::VaultState::may_read_blob`]; [`BlobError::NotReadable`]
    /// otherwise). Membership and the version check are read from one
    /// state of the vault, under one read lock.
    pub async fn authorize_download(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        who: &Fingerprint,
    ) -> Result<Download, BlobError> {
        let guard = self.app.read_state(vault).await?;
        let state = guard.as_ref().ok_or(AccessError::NotMember)?;
        let now = self.app.now();
        let access = access::member(state, who, now)?;
        let (info, refs) = self
            .app
            .meta
            .blob_with_refs(vault, hash)
            .await
            .map_err(|e| Failure::storage("reading a blob record", e))?
            .ok_or(BlobError::NotFound)?;
        let allowed = access.owner || may_download(state, who, &hash, &info, &refs, now);
        drop(guard);
        if !allowed {
            return Err(BlobError::NotReadable);
        }
        Ok(Download {
            hash,
            len: info.len,
        })
    }

    /// Several small blobs of `vault` for `who` in one answer, one
    /// [`BatchRead`] per address in the order given (an address asked twice
    /// is answered twice, its bytes read once). Each blob is allowed or
    /// refused exactly as [`Blobs::authorize_download`] allows one download,
    /// all against one state of the vault read under one read lock, with
    /// what the store knows of every blob read at once
    /// ([`crate::storage::MetaStore::blobs_for_download`]); bytes are read
    /// only after that, and only of the blobs sent. A caller who is not a
    /// member of the vault is refused as a whole ([`BlobError::Access`]),
    /// and so is any failure of the relay. A blob larger than
    /// [`INLINE_BLOB`] is never sent here, and once a blob does not fit
    /// what is left of `budget` (bytes sent), neither it nor any later blob
    /// is: all are [`BatchRead::FetchAlone`].
    pub async fn read_batch(
        &self,
        vault: VaultId,
        who: &Fingerprint,
        hashes: &[[u8; 32]],
        budget: u64,
    ) -> Result<Vec<BatchRead>, BlobError> {
        let mut distinct = hashes.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        // Each distinct blob's verdict: its length if it may be sent.
        let verdicts: HashMap<[u8; 32], Result<u64, BatchRead>> = {
            let guard = self.app.read_state(vault).await?;
            let state = guard.as_ref().ok_or(AccessError::NotMember)?;
            let now = self.app.now();
            let access = access::member(state, who, now)?;
            let found = self
                .app
                .meta
                .blobs_for_download(vault, distinct.clone())
                .await
                .map_err(|e| Failure::storage("reading blob records", e))?;
            distinct
                .iter()
                .zip(found)
                .map(|(hash, found)| {
                    let verdict = match found {
                        None => Err(BatchRead::NotFound),
                        Some(d)
                            if access.owner
                                || may_download(state, who, hash, &d.info, &d.refs, now) =>
                        {
                            Ok(d.info.len)
                        }
                        Some(_) => Err(BatchRead::NotReadable),
                    };
                    (*hash, verdict)
                })
                .collect()
        };
        // What is sent: in order, until the first blob over the budget.
        let mut left = Some(budget);
        let mut plan: Vec<Result<Download, BatchRead>> = Vec::with_capacity(hashes.len());
        for hash in hashes {
            plan.push(match verdicts.get(hash) {
                Some(Ok(len)) if *len > INLINE_BLOB => Err(BatchRead::FetchAlone),
                Some(Ok(len)) => match left.and_then(|l| l.checked_sub(*len)) {
                    Some(rest) => {
                        left = Some(rest);
                        Ok(Download {
                            hash: *hash,
                            len: *len,
                        })
                    }
                    None => {
                        left = None;
                        Err(BatchRead::FetchAlone)
                    }
                },
                Some(Err(refusal)) => Err(refusal.clone()),
                None => Err(BatchRead::NotFound),
            });
        }
        let mut sent: Vec<Download> = plan
            .iter()
            .filter_map(|p| p.as_ref().ok().copied())
            .collect();
        sent.sort_unstable_by_key(|d| d.hash);
        sent.dedup();
        let bytes = self.read_small(&sent).await?;
        Ok(plan
            .into_iter()
            .map(|p| match p {
                Ok(d) => bytes
                    .get(&d.hash)
                    .cloned()
                    .map_or(BatchRead::FetchAlone, BatchRead::Bytes),
                Err(refusal) => refusal,
            })
            .collect())
    }

    /// The bytes of small, allowed blobs (distinct), each exactly as long as
    /// its download says: those the metadata store keeps in one read, the
    /// others from the blob store.
    async fn read_small(
        &self,
        downloads: &[Download],
    ) -> Result<HashMap<[u8; 32], Bytes>, BlobError> {
        let inline = self
            .app
            .meta
            .small_blobs(downloads.iter().map(|d| d.hash).collect())
            .await
            .map_err(|e| Failure::storage("reading blobs", e))?;
        let mut out = HashMap::with_capacity(downloads.len());
        let mut elsewhere = Vec::new();
        for (d, bytes) in downloads.iter().zip(inline) {
            match bytes {
                Some(b) => {
                    out.insert(d.hash, of_length(b, d.len)?);
                }
                None => elsewhere.push(*d),
            }
        }
        let read: Vec<([u8; 32], Bytes)> = futures_util::stream::iter(
            elsewhere
                .into_iter()
                .map(|d| async move { Ok::<_, BlobError>((d.hash, self.read_stored(&d).await?)) }),
        )
        .buffered(BATCH_WRITES)
        .try_collect()
        .await?;
        out.extend(read);
        Ok(out)
    }

    /// The whole of a small, authorized blob that the blob store (not the
    /// metadata store) holds, in memory (the caller bounds its length).
    async fn read_stored(&self, download: &Download) -> Result<Bytes, BlobError> {
        use tokio::io::AsyncReadExt;
        let Download { hash, len } = *download;
        let mut reader = self
            .app
            .blobs
            .read(hash, 0, len)
            .await
            .map_err(|e| Failure::storage("opening a blob", e))?;
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        (&mut reader)
            .take(len)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Failure::storage("reading a blob", e.into()))?;
        of_length(Bytes::from(buf), len)
    }

    /// `count` bytes of an authorized download from `start` (within the
    /// blob: the caller clamps ranges to [`Download::len`]).
    pub async fn read(
        &self,
        download: &Download,
        start: u64,
        count: u64,
    ) -> Result<BlobBody, BlobError> {
        let Download { hash, len } = *download;
        let inline = if len <= INLINE_BLOB {
            self.app
                .meta
                .small_blob(hash)
                .await
                .map_err(|e| Failure::storage("reading a blob", e))?
        } else {
            None
        };
        if let Some(bytes) = inline {
            let end = usize::try_from(start.saturating_add(count)).unwrap_or(usize::MAX);
            let start = usize::try_from(start).unwrap_or(usize::MAX);
            return match bytes.get(start..end) {
                Some(_) => Ok(BlobBody::Bytes(bytes.slice(start..end))),
                None => Err(Failure::internal(
                    "reading a blob",
                    "a stored blob is shorter than its record",
                )
                .into()),
            };
        }
        let reader = self
            .app
            .blobs
            .read(hash, start, count)
            .await
            .map_err(|e| Failure::storage("opening a blob", e))?;
        Ok(BlobBody::Stream(reader))
    }

    /// A blob's record in a vault, if it is stored there.
    async fn record(&self, vault: VaultId, hash: [u8; 32]) -> Result<Option<BlobInfo>, BlobError> {
        Ok(self
            .app
            .meta
            .blob(vault, hash)
            .await
            .map_err(|e| Failure::storage("reading a blob record", e))?)
    }

    /// Bytes charged to `account`.
    async fn usage(&self, account: Fingerprint) -> Result<u64, BlobError> {
        Ok(self
            .app
            .meta
            .usage(account)
            .await
            .map_err(|e| Failure::storage("reading usage", e))?)
    }

    /// Records a complete blob for `vault` and charges it to `uploader`
    /// (releasing its chunks' charges); `false` if the vault already had
    /// it.
    async fn add(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        len: u64,
        uploader: Fingerprint,
        inline: Option<Bytes>,
    ) -> Result<bool, BlobError> {
        let outcome = self
            .app
            .meta
            .add_blob(
                vault,
                hash,
                BlobInfo { len, uploader },
                self.app.config.quota,
                inline,
            )
            .await
            .map_err(|e| Failure::storage("recording a blob", e))?;
        match outcome {
            AddBlobOutcome::Added => Ok(true),
            AddBlobOutcome::Existed => Ok(false),
            AddBlobOutcome::Quota => Err(BlobError::QuotaExceeded),
        }
    }
}

#[cfg(test)]
mod tests {
    use vault_core::Permission;

    use super::*;
    use crate::domain::testing::{body, ident, sha, World};
    use crate::storage::{BlobStore, MetaStore};

    fn chunk(ct: &[u8], offset: usize, len: usize) -> (ChunkUpload, BodyStream) {
        let piece = &ct[offset..offset + len];
        (
            ChunkUpload {
                offset: offset as u64,
                total: ct.len() as u64,
                declared_len: Some(len as u64),
                digest: sha(piece),
            },
            body(piece),
        )
    }

    #[tokio::test]
    async fn a_non_member_cannot_download_even_an_existing_blob() {
        let mut w = World::new().await;
        let patient = w.patient.clone();
        let bob = ident(3, "Dr Bob", w.now);
        let ct = w.put_record(&patient, None, b"result").await;
        let err = w.download(&bob, &ct).await.unwrap_err();
        assert!(
            matches!(err, BlobError::Access(AccessError::NotMember)),
            "{err:?}"
        );
        // Not even whether the blob exists: a missing one is refused alike.
        let err = w.download(&bob, b"no such blob").await.unwrap_err();
        assert!(
            matches!(err, BlobError::Access(AccessError::NotMember)),
            "{err:?}"
        );
        assert_eq!(w.download(&patient, &ct).await.unwrap().len(), ct.len());
    }

    #[tokio::test]
    async fn a_member_granted_later_cannot_download_versions_replaced_before() {
        let mut w = World::new().await;
        let patient = w.patient.clone();
        let alice = ident(2, "Dr Alice", w.now);
        let v1 = w.put_record(&patient, None, b"first").await;
        let record = w.state.records(None)[0].id;
        let v2 = w.put_record(&patient, Some(record), b"second").await;
        // A new epoch (a member revoked), then Alice joins: she never held
        // the key of the epoch v1 was current in.
        let bob = ident(3, "Dr Bob", w.now);
        w.share(&bob, Permission::Read).await;
        let mut kr = vault_core::Keyring::new(&patient, w.now);
        let rotation = w
            .state
            .revoke(&mut kr, &w.labs, &[bob.fingerprint()])
            .unwrap();
        w.append(&patient, vec![rotation]).await.unwrap();
        w.share(&alice, Permission::Read).await;
        assert_eq!(w.download(&alice, &v2).await.unwrap().len(), v2.len());
        let err = w.download(&alice, &v1).await.unwrap_err();
        assert!(matches!(err, BlobError::NotReadable), "{err:?}");
        // The owner reads every version.
        assert_eq!(w.download(&patient, &v1).await.unwrap().len(), v1.len());
    }

    #[tokio::test]
    async fn an_unreferenced_blob_is_for_its_uploader_and_the_owner_only() {
        let mut w = World::new().await;
        let patient = w.patient.clone();
        let alice = ident(2, "Dr Alice", w.now);
        let carol = ident(4, "Dr Carol", w.now);
        w.share(&alice, Permission::ReadWrite).await;
        w.share(&carol, Permission::ReadWrite).await;
        let (ct, _) = w.seal(&alice, None, b"not yet appended");
        assert!(matches!(
            w.upload(&alice, &ct).await.unwrap(),
            ChunkAnswer::Complete { .. }
        ));
        assert_eq!(w.download(&alice, &ct).await.unwrap(), ct);
        assert_eq!(w.download(&patient, &ct).await.unwrap(), ct);
        let err = w.download(&carol, &ct).await.unwrap_err();
        assert!(matches!(err, BlobError::NotReadable), "{err:?}");
    }

    #[tokio::test]
    async fn uploads_need_write_access() {
        let mut w = World::new().await;
        let alice = ident(2, "Dr Alice", w.now);
        let bob = ident(3, "Dr Bob", w.now);
        w.share(&alice, Permission::Read).await;
        let (ct, _) = w.seal(&w.patient.clone(), None, b"x");
        let err = w.upload(&alice, &ct).await.unwrap_err();
        assert!(
            matches!(err, BlobError::Access(AccessError::ReadOnly)),
            "{err:?}"
        );
        let err = w.upload(&bob, &ct).await.unwrap_err();
        assert!(
            matches!(err, BlobError::Access(AccessError::NotMember)),
            "{err:?}"
        );
        assert_eq!(
            w.blobs
                .upload_offset(UploadKey {
                    vault: w.vault(),
                    hash: crate::domain::testing::address(&ct)
                })
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn chunks_are_charged_as_stored_and_refused_past_the_quota() {
        let w = World::with(|c| c.quota = 64 * 1024).await;
        let me = w.patient.fingerprint();
        let used = w.meta.usage(me).await.unwrap();
        let blobs = Blobs::new(w.app.clone());
        let room = 64 * 1024 - used as usize;

        // A blob one byte over what is left is refused before any byte.
        let big = vec![7u8; room + 1];
        let (c, b) = chunk(&big, 0, 100);
        let err = blobs
            .put_chunk(w.vault(), sha(&big), me, c, b)
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::QuotaExceeded), "{err:?}");
        assert_eq!(w.meta.usage(me).await.unwrap(), used);

        // One that fits: its first chunk is charged at once, the whole blob
        // once complete (in place of the chunks).
        let fits = vec![8u8; room];
        let (c, b) = chunk(&fits, 0, 100);
        let answer = blobs
            .put_chunk(w.vault(), sha(&fits), me, c, b)
            .await
            .unwrap();
        assert_eq!(answer, ChunkAnswer::Partial { offset: 100 });
        assert_eq!(w.meta.usage(me).await.unwrap(), used + 100);
        // A chunk that does not start where the upload stands.
        let (c, b) = chunk(&fits, 150, 10);
        let err = blobs
            .put_chunk(w.vault(), sha(&fits), me, c, b)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BlobError::OffsetMismatch { offset: 100 }),
            "{err:?}"
        );
        let (c, b) = chunk(&fits, 100, room - 100);
        let answer = blobs
            .put_chunk(w.vault(), sha(&fits), me, c, b)
            .await
            .unwrap();
        assert_eq!(answer, ChunkAnswer::Complete { len: room as u64 });
        assert_eq!(w.meta.usage(me).await.unwrap(), 64 * 1024);
        // Uploading it again is answered as stored, without a byte read.
        let (c, b) = chunk(&fits, 0, 1);
        let answer = blobs
            .put_chunk(w.vault(), sha(&fits), me, c, b)
            .await
            .unwrap();
        assert_eq!(answer, ChunkAnswer::AlreadyStored { len: room as u64 });
    }

    #[tokio::test]
    async fn announced_sizes_are_checked_first() {
        let w = World::with(|c| {
            c.max_blob = 1000;
            c.max_chunk = 100;
        })
        .await;
        let blobs = Blobs::new(w.app.clone());
        let bob = ident(3, "Dr Bob", w.now);
        let ct = vec![1u8; 1001];
        // Before access: sizes are refused whoever asks.
        let (c, b) = chunk(&ct, 0, 10);
        let err = blobs
            .put_chunk(w.vault(), sha(&ct), bob.fingerprint(), c, b)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BlobError::BlobTooLarge { max: 1000 }),
            "{err:?}"
        );
        let ct = vec![1u8; 1000];
        let (c, b) = chunk(&ct, 0, 101);
        let err = blobs
            .put_chunk(w.vault(), sha(&ct), bob.fingerprint(), c, b)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BlobError::ChunkTooLarge { max: 100 }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_complete_blob_that_does_not_hash_to_its_address_is_discarded() {
        let w = World::new().await;
        let me = w.patient.fingerprint();
        let used = w.meta.usage(me).await.unwrap();
        let blobs = Blobs::new(w.app.clone());
        let ct = vec![3u8; 200];
        let wrong = sha(b"something else");
        let (c, b) = chunk(&ct, 0, 100);
        blobs.put_chunk(w.vault(), wrong, me, c, b).await.unwrap();
        let (c, b) = chunk(&ct, 100, 100);
        let err = blobs
            .put_chunk(w.vault(), wrong, me, c, b)
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::HashMismatch), "{err:?}");
        assert_eq!(w.meta.usage(me).await.unwrap(), used, "charges given back");
        let status = blobs.upload_status(w.vault(), wrong, &me).await.unwrap();
        assert_eq!(
            status,
            UploadStatus {
                stored: false,
                offset: 0
            }
        );
    }

    #[tokio::test]
    async fn a_batch_is_refused_whole_if_one_blob_does_not_hash_to_its_address() {
        let w = World::new().await;
        let me = w.patient.fingerprint();
        let blobs = Blobs::new(w.app.clone());
        // One batch holds blobs of both kinds of address: the small one
        // by BLAKE3, the large one by SHA-256.
        let address = crate::domain::testing::address;
        let small = Bytes::from_static(b"small blob");
        let large = Bytes::from(vec![5u8; INLINE_BLOB as usize + 1]);
        let bad = (sha(b"not this"), Bytes::from_static(b"this"));
        let err = blobs
            .put_batch(w.vault(), me, vec![(address(&small), small.clone()), bad])
            .await
            .unwrap_err();
        assert!(
            matches!(err, BlobError::BatchHashMismatch { hash } if hash == sha(b"not this")),
            "{err:?}"
        );
        assert!(w
            .meta
            .blob(w.vault(), address(&small))
            .await
            .unwrap()
            .is_none());

        let frames = vec![
            (address(&small), small.clone()),
            (sha(&large), large.clone()),
            (address(&small), small.clone()),
        ];
        let answer = blobs
            .put_batch(w.vault(), me, frames.clone())
            .await
            .unwrap();
        assert_eq!(
            answer,
            BatchAnswer {
                stored: 2,
                present: 0
            }
        );
        let answer = blobs.put_batch(w.vault(), me, frames).await.unwrap();
        assert_eq!(
            answer,
            BatchAnswer {
                stored: 0,
                present: 2
            }
        );
        // The small one lives in the metadata store, the large one in the
        // blob store; both are served.
        assert!(w.meta.small_blob(address(&small)).await.unwrap().is_some());
        assert!(w.meta.small_blob(sha(&large)).await.unwrap().is_none());
        assert_eq!(
            w.download(&w.patient, &small).await.unwrap(),
            small.to_vec()
        );
        assert_eq!(
            w.download_at(&w.patient, sha(&large)).await.unwrap(),
            large.to_vec()
        );
    }

    #[tokio::test]
    async fn ranges_read_part_of_a_blob() {
        let w = World::new().await;
        let me = w.patient.fingerprint();
        let blobs = Blobs::new(w.app.clone());
        let small = Bytes::from_static(b"0123456789");
        let large = Bytes::from(
            (0..=255u8)
                .cycle()
                .take(INLINE_BLOB as usize + 10)
                .collect::<Vec<_>>(),
        );
        blobs
            .put_batch(
                w.vault(),
                me,
                vec![(sha(&small), small.clone()), (sha(&large), large.clone())],
            )
            .await
            .unwrap();
        let d = blobs
            .authorize_download(w.vault(), sha(&small), &me)
            .await
            .unwrap();
        assert_eq!(d.len(), 10);
        match blobs.read(&d, 3, 4).await.unwrap() {
            BlobBody::Bytes(b) => assert_eq!(&b[..], b"3456"),
            BlobBody::Stream(_) => panic!("a small blob is read from the metadata store"),
        }
        let d = blobs
            .authorize_download(w.vault(), sha(&large), &me)
            .await
            .unwrap();
        match blobs.read(&d, 300, 5).await.unwrap() {
            BlobBody::Stream(mut r) => {
                use tokio::io::AsyncReadExt;
                let mut out = Vec::new();
                r.read_to_end(&mut out).await.unwrap();
                assert_eq!(out, large[300..305].to_vec());
            }
            BlobBody::Bytes(_) => panic!("a large blob is streamed from the blob store"),
        }
    }
}
