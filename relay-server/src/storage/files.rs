//! Blobs as files: `blobs/<2 hex>/<64 hex>` for complete blobs,
//! `uploads/<vault>-<hash>.part` for uploads in progress.
//!
//! A chunk is appended to the upload file and fsync'd before it is
//! acknowledged; a chunk that fails (digest mismatch, cut-off body) is
//! truncated away, so the upload stands where it stood. A complete upload
//! is hashed, fsync'd and renamed to its address (then the directory is
//! fsync'd): a crash never leaves a partial blob under an address. Uploads
//! untouched for a day are swept away.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use vault_core::address::{AddressHasher, AddressKind, EitherHasher};

use super::{
    BlobReader, BlobStore, BodyStream, Chunk, ChunkError, ChunkOutcome, StorageError, UploadKey,
};

/// The running BLAKE3 of an upload (the address clients write), kept
/// between its chunks so completing a large blob does not re-read it
/// (after a restart it is recomputed). A blob addressed by its SHA-256
/// (older metadata) is read back once at completion instead.
#[derive(Default)]
struct Progress {
    running: Option<(u64, AddressHasher)>,
}

/// Truncates an upload file back to `len` (removing it if `len` is 0)
/// when dropped armed.
struct Rollback {
    path: PathBuf,
    len: u64,
    armed: bool,
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.len == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&self.path) {
            let _ = f.set_len(self.len);
            let _ = f.sync_data();
        }
    }
}

/// Blob files under a data directory.
pub struct FileBlobs {
    blobs: PathBuf,
    uploads: PathBuf,
    progress: Mutex<HashMap<UploadKey, Arc<tokio::sync::Mutex<Progress>>>>,
}

fn hex32(h: &[u8; 32]) -> String {
    hex::encode(h)
}

/// fsyncs a directory so a rename or a new file in it is durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl FileBlobs {
    /// Opens (creating) `blobs/` and `uploads/` under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let blobs = data_dir.join("blobs");
        let uploads = data_dir.join("uploads");
        std::fs::create_dir_all(&blobs)?;
        std::fs::create_dir_all(&uploads)?;
        Ok(Self {
            blobs,
            uploads,
            progress: Mutex::new(HashMap::new()),
        })
    }

    /// Where a complete blob lives.
    pub fn blob_path(&self, hash: &[u8; 32]) -> PathBuf {
        let h = hex32(hash);
        self.blobs.join(h.get(..2).unwrap_or("00")).join(h)
    }

    /// The acknowledged length of an upload: a small file written (to a
    /// temporary name, fsync'd, renamed) after a chunk is durable and before
    /// it is acknowledged. Bytes in the part file beyond it were never
    /// acknowledged (a crash between writing and acknowledging) and are cut
    /// off before the upload continues. If the rename itself is lost in a
    /// crash, the older, smaller value is found: the client resends a chunk.
    fn ack_path(&self, key: &UploadKey) -> PathBuf {
        self.upload_path(key).with_extension("ack")
    }

    async fn acked(&self, key: &UploadKey) -> Result<u64, StorageError> {
        let len = match tokio::fs::metadata(self.upload_path(key)).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let acked = match tokio::fs::read_to_string(self.ack_path(key)).await {
            Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(acked.min(len))
    }

    async fn write_ack(&self, key: &UploadKey, len: u64) -> Result<(), StorageError> {
        let ack = self.ack_path(key);
        let tmp = ack.with_extension("ack-tmp");
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(len.to_string().as_bytes()).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, &ack).await?;
        Ok(())
    }

    fn upload_path(&self, key: &UploadKey) -> PathBuf {
        self.uploads
            .join(format!("{}-{}.part", key.vault.to_hex(), hex32(&key.hash)))
    }

    fn progress(&self, key: UploadKey) -> Arc<tokio::sync::Mutex<Progress>> {
        let mut map = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().clone()
    }

    fn forget(&self, key: &UploadKey) {
        let mut map = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }

    /// Hands the bytes of the file at `path` to `f`, a MiB at a time.
    async fn read_file(path: &Path, mut f: impl FnMut(&[u8])) -> Result<(), StorageError> {
        let mut file = tokio::fs::File::open(path).await?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            f(buf.get(..n).unwrap_or_default());
        }
    }

    /// Whether the complete upload at `path` hashes to `address` under
    /// BLAKE3 or SHA-256 (`vault_core::address`): the BLAKE3 `streamed`
    /// while it came in decides alone when it matches; otherwise the file
    /// is read back for its SHA-256 (and its BLAKE3 too, when a restart
    /// lost the streamed one).
    async fn hashes_to(
        path: &Path,
        address: &[u8; 32],
        streamed: Option<[u8; 32]>,
    ) -> Result<bool, StorageError> {
        match streamed {
            Some(b3) if b3 == *address => Ok(true),
            Some(_) => {
                let mut sha = AddressKind::Sha256.hasher();
                Self::read_file(path, |piece| sha.update(piece)).await?;
                Ok(sha.finalize() == *address)
            }
            None => {
                let mut either = EitherHasher::default();
                Self::read_file(path, |piece| either.update(piece)).await?;
                Ok(either.matches(address).is_some())
            }
        }
    }

    /// Moves a complete upload into place if it hashes to its address
    /// ([`FileBlobs::hashes_to`]).
    async fn finish(&self, key: &UploadKey, part: &Path, matches: bool) -> Result<(), ChunkError> {
        if !matches {
            let _ = tokio::fs::remove_file(part).await;
            let _ = tokio::fs::remove_file(self.ack_path(key)).await;
            return Err(ChunkError::HashMismatch);
        }
        let dest = self.blob_path(&key.hash);
        let part = part.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = dest.parent().unwrap_or(Path::new("."));
            let new_dir = !dir.exists();
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&part, &dest)?;
            sync_dir(dir)?;
            if new_dir {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
            }
            if let Some(up) = part.parent() {
                sync_dir(up)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::new(e.to_string()))?
        .map_err(StorageError::from)?;
        let _ = tokio::fs::remove_file(self.ack_path(key)).await;
        Ok(())
    }
}

#[async_trait]
impl BlobStore for FileBlobs {
    async fn upload_offset(&self, key: UploadKey) -> Result<u64, StorageError> {
        self.acked(&key).await
    }

    async fn write_chunk(
        &self,
        key: UploadKey,
        chunk: Chunk,
        mut body: BodyStream,
    ) -> Result<ChunkOutcome, ChunkError> {
        let progress = self.progress(key);
        // One writer per upload: a concurrent chunk is told where it stands.
        let Ok(mut progress) = progress.try_lock() else {
            let at = self.upload_offset(key).await?;
            return Err(ChunkError::OffsetMismatch(at));
        };
        let path = self.upload_path(&key);
        let current = self.upload_offset(key).await?;
        if chunk.offset != current {
            return Err(ChunkError::OffsetMismatch(current));
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .await
            .map_err(StorageError::from)?;
        // Cut off anything beyond the acknowledged length (left by a crash).
        file.set_len(current).await.map_err(StorageError::from)?;
        file.seek(SeekFrom::Start(current))
            .await
            .map_err(StorageError::from)?;
        let mut running = match progress.running.take() {
            Some((at, h)) if at == current => Some(h),
            _ if current == 0 => Some(AddressKind::Blake3.hasher()),
            _ => None,
        };
        let before = running.clone();
        // Until the chunk is verified and durable, dropping this (an error,
        // or the request being cancelled by a timeout or a disconnect)
        // truncates the upload back to where it stood.
        let mut rollback = Rollback {
            path: path.clone(),
            len: current,
            armed: true,
        };
        let mut digest = Sha256::new();
        let mut written: u64 = 0;
        let result: Result<(), ChunkError> = async {
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(ChunkError::Body)?;
                written = written.saturating_add(piece.len() as u64);
                if written > chunk.max_chunk || current.saturating_add(written) > chunk.total {
                    return Err(ChunkError::TooLarge);
                }
                digest.update(&piece);
                if let Some(h) = running.as_mut() {
                    h.update(&piece);
                }
                file.write_all(&piece).await.map_err(StorageError::from)?;
            }
            if <[u8; 32]>::from(digest.finalize()) != chunk.digest {
                return Err(ChunkError::DigestMismatch);
            }
            file.flush().await.map_err(StorageError::from)?;
            file.sync_data().await.map_err(StorageError::from)?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = result {
            // Discard the chunk: the upload stands where it stood.
            progress.running = before.map(|h| (current, h));
            drop(rollback);
            return Err(e);
        }
        rollback.armed = false;
        let now_at = current + written;
        if now_at < chunk.total {
            self.write_ack(&key, now_at).await?;
            progress.running = running.map(|h| (now_at, h));
            return Ok(ChunkOutcome::Partial(now_at));
        }
        let streamed = running.map(AddressHasher::finalize);
        let matches = Self::hashes_to(&path, &key.hash, streamed).await?;
        let done = self.finish(&key, &path, matches).await;
        drop(progress);
        self.forget(&key);
        done.map(|()| ChunkOutcome::Complete)
    }

    async fn sweep_uploads(&self, older_than: std::time::Duration) -> Result<usize, StorageError> {
        let dir = self.uploads.clone();
        // An upload being written holds a second reference to its progress.
        let busy: Vec<PathBuf> = {
            let map = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            map.iter()
                .filter(|(_, p)| Arc::strong_count(p) > 1)
                .map(|(k, _)| self.upload_path(k))
                .collect()
        };
        let removed = tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
            let mut removed = 0;
            for entry in std::fs::read_dir(&dir)? {
                // A file renamed or removed meanwhile is simply skipped.
                let Ok(entry) = entry else { continue };
                let path = entry.path();
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > older_than);
                // An upload is its part file plus the files beside it (its
                // acknowledged length): it is counted once, by its part.
                let part = path.with_extension("part");
                if stale
                    && !busy.contains(&part)
                    && std::fs::remove_file(&path).is_ok()
                    && path == part
                {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| StorageError::new(e.to_string()))?
        .map_err(StorageError::from)?;
        let mut map = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, p| Arc::strong_count(p) > 1 || self.upload_path(k).exists());
        Ok(removed)
    }

    async fn read(&self, hash: [u8; 32], start: u64, len: u64) -> Result<BlobReader, StorageError> {
        let mut f = tokio::fs::File::open(self.blob_path(&hash)).await?;
        f.seek(SeekFrom::Start(start)).await?;
        Ok(Box::pin(f.take(len)))
    }

    async fn delete(&self, hash: [u8; 32]) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.blob_path(&hash)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
