//! The storage conformance suite (`relay_server::storage::conformance`)
//! on SQLite + files (in a temporary directory) and on the in-memory
//! backend, plus the crash-consistency expectations of SQLite + files.
//! With the `postgres` feature also on PostgreSQL + files, and with `s3`
//! on PostgreSQL + S3 and SQLite + S3 (the S3 store's upload state in
//! PostgreSQL), against private services started on loopback
//! (`tests/services`), plus crash consistency and bad configurations of
//! those backends (`tests/storage_conformance/scale.rs`).

#[cfg(feature = "postgres")]
#[path = "storage_conformance/scale.rs"]
mod scale;
#[cfg(feature = "postgres")]
mod services;

use std::sync::Arc;

use relay_server::storage::conformance::{self, Blobs, Meta};
use relay_server::storage::files::FileBlobs;
use relay_server::storage::memory::{MemoryBlobs, MemoryMeta};
use relay_server::storage::sqlite::SqliteMeta;
use relay_server::storage::{
    AppendBatch, BlobInfo, BlobStore, Chunk, ChunkError, ChunkOutcome, CreateOutcome, Head,
    MetaStore, StoredEntry, UploadKey,
};

#[allow(clippy::unwrap_used)] // test helper
fn open_disk(dir: &std::path::Path) -> (Arc<SqliteMeta>, Arc<FileBlobs>) {
    let meta = SqliteMeta::open(dir, 64, Arc::new(|_| {})).unwrap();
    (Arc::new(meta), Arc::new(FileBlobs::open(dir).unwrap()))
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite_files {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let (meta, blobs) = open_disk(dir.path());
                    conformance::$name(meta as Meta, blobs as Blobs).await;
                }
            )*
        }
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let meta: Meta = Arc::new(MemoryMeta::new());
                    let blobs: Blobs = Arc::new(MemoryBlobs::new());
                    conformance::$name(meta, blobs).await;
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres_files {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let cluster = services::cluster().await;
                    let dir = tempfile::tempdir().unwrap();
                    let meta = scale::pg_meta(&cluster).await;
                    let blobs = Arc::new(FileBlobs::open(dir.path()).unwrap());
                    conformance::$name(meta as Meta, blobs as Blobs).await;
                }
            )*
        }
        #[cfg(feature = "s3")]
        mod postgres_s3 {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let cluster = services::cluster().await;
                    let meta = scale::pg_meta(&cluster).await;
                    let blobs = scale::s3_blobs(&cluster, meta.pool().clone()).await;
                    conformance::$name(meta as Meta, blobs as Blobs).await;
                }
            )*
        }
        #[cfg(feature = "s3")]
        mod sqlite_s3 {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let cluster = services::cluster().await;
                    let dir = tempfile::tempdir().unwrap();
                    let (meta, _) = open_disk(dir.path());
                    // The S3 store's upload state in its own database.
                    let ledger = scale::pg_meta(&cluster).await;
                    let blobs = scale::s3_blobs(&cluster, ledger.pool().clone()).await;
                    conformance::$name(meta as Meta, blobs as Blobs).await;
                }
            )*
        }
        #[test]
        fn every_contract_is_run() {
            let ran = [$(stringify!($name)),*];
            let all: Vec<&str> = conformance::CONTRACTS.iter().map(|c| c.0).collect();
            assert_eq!(all, ran, "add new contracts to the suite! list");
        }
    };
}

suite!(
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

fn sha(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// Creates vault `v` of `owner` from `g` and appends `e1`, which shares
/// something with principal 2 (the log a reopen test checks with
/// [`log_survived`]).
#[allow(clippy::unwrap_used)] // test helper
async fn write_log(
    meta: &dyn MetaStore,
    owner: vault_core::Fingerprint,
    v: vault_core::VaultId,
    g: &StoredEntry,
    e1: &StoredEntry,
) {
    let created = meta
        .create_vault(v, owner, g.clone(), u64::MAX)
        .await
        .unwrap();
    assert_eq!(created, CreateOutcome::Created);
    meta.append(AppendBatch {
        vault: v,
        prev: Head {
            seq: 0,
            hash: g.hash,
        },
        entries: vec![e1.clone()],
        blob_refs: vec![],
        inbox: vec![vault_core::Fingerprint::from_bytes([2; 32])],
        purged: vec![],
        account: owner,
        quota: u64::MAX,
    })
    .await
    .unwrap();
}

/// The log [`write_log`] wrote, read back after a reopen: head, entries
/// and the inbox index.
#[allow(clippy::unwrap_used)] // test helper
async fn log_survived(
    meta: &dyn MetaStore,
    v: vault_core::VaultId,
    g: &StoredEntry,
    e1: &StoredEntry,
) {
    assert_eq!(
        meta.head(v).await.unwrap(),
        Some(Head {
            seq: 1,
            hash: e1.hash
        })
    );
    assert_eq!(
        meta.entries(v, 0, 10).await.unwrap(),
        vec![g.bytes.clone(), e1.bytes.clone()]
    );
    assert_eq!(
        meta.inbox(vault_core::Fingerprint::from_bytes([2; 32]))
            .await
            .unwrap()
            .iter()
            .map(|e| e.vault)
            .collect::<Vec<_>>(),
        vec![v]
    );
}

/// Everything acknowledged survives dropping the stores and reopening the
/// directory; the bytes of a chunk written but never acknowledged (a crash
/// between writing and acknowledging) are not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_reopen_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let owner = vault_core::Fingerprint::from_bytes([1; 32]);
    let v = vault_core::VaultId::from_bytes([1; 16]);
    let g = conformance::entry(1, 0, "genesis");
    let e1 = conformance::entry(1, 1, "a");
    let blob = b"a blob uploaded in two chunks".as_slice();
    let key = UploadKey {
        vault: v,
        hash: sha(blob),
    };
    let done = b"complete blob".as_slice();
    {
        let (meta, blobs) = open_disk(dir.path());
        write_log(&*meta, owner, v, &g, &e1).await;
        let info = BlobInfo {
            len: done.len() as u64,
            uploader: owner,
        };
        let body: relay_server::storage::BodyStream =
            Box::pin(futures_util::stream::iter(vec![Ok(
                bytes::Bytes::copy_from_slice(done),
            )]));
        let chunk = Chunk {
            offset: 0,
            total: done.len() as u64,
            max_chunk: 1 << 20,
            digest: sha(done),
        };
        let r = blobs
            .write_chunk(
                UploadKey {
                    vault: v,
                    hash: sha(done),
                },
                chunk,
                body,
            )
            .await
            .unwrap();
        assert_eq!(r, ChunkOutcome::Complete);
        meta.add_blob(v, sha(done), info, u64::MAX, None)
            .await
            .unwrap();
        let first = blob.get(..10).unwrap();
        let body: relay_server::storage::BodyStream =
            Box::pin(futures_util::stream::iter(vec![Ok(
                bytes::Bytes::copy_from_slice(first),
            )]));
        let chunk = Chunk {
            offset: 0,
            total: blob.len() as u64,
            max_chunk: 1 << 20,
            digest: sha(first),
        };
        assert_eq!(
            blobs.write_chunk(key, chunk, body).await.unwrap(),
            ChunkOutcome::Partial(10)
        );
        meta.charge_upload(v, key.hash, owner, 10).await.unwrap();
        meta.close();
    }
    // A crash after writing more bytes but before acknowledging them.
    let part =
        dir.path()
            .join("uploads")
            .join(format!("{}-{}.part", v.to_hex(), hex::encode(key.hash)));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .unwrap();
        f.write_all(b"unacknowledged").unwrap();
    }
    let (meta, blobs) = open_disk(dir.path());
    log_survived(&*meta, v, &g, &e1).await;
    assert!(meta.blob(v, sha(done)).await.unwrap().is_some());
    let charged = (g.bytes.len() + e1.bytes.len() + done.len() + 10) as u64;
    assert_eq!(meta.usage(owner).await.unwrap(), charged);
    let mut r = blobs.read(sha(done), 0, 100).await.unwrap();
    let mut got = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got)
        .await
        .unwrap();
    assert_eq!(got, done);
    // The unacknowledged bytes are not counted, and are cut off when the
    // upload continues.
    assert_eq!(blobs.upload_offset(key).await.unwrap(), 10);
    let rest = blob.get(10..).unwrap();
    let body: relay_server::storage::BodyStream = Box::pin(futures_util::stream::iter(vec![Ok(
        bytes::Bytes::copy_from_slice(rest),
    )]));
    let chunk = Chunk {
        offset: 10,
        total: blob.len() as u64,
        max_chunk: 1 << 20,
        digest: sha(rest),
    };
    assert_eq!(
        blobs.write_chunk(key, chunk, body).await.unwrap(),
        ChunkOutcome::Complete
    );
}

/// An upload addressed by BLAKE3 (what clients write, decision 71) resumed
/// after the store was reopened: the running hash was lost with the
/// process, the file store reads the acknowledged part back once and
/// completes it; the same resumed upload with a wrong last chunk is
/// refused and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_resume_a_blake3_upload_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault_core::VaultId::from_bytes([1; 16]);
    let blob = b"a blob addressed by BLAKE3, in two chunks".as_slice();
    let key = UploadKey {
        vault: v,
        hash: vault_core::address::AddressKind::Blake3.digest(blob),
    };
    let chunk_of = |offset: usize, bytes: &[u8]| {
        let body: relay_server::storage::BodyStream =
            Box::pin(futures_util::stream::iter(vec![Ok(
                bytes::Bytes::copy_from_slice(bytes),
            )]));
        let chunk = Chunk {
            offset: offset as u64,
            total: blob.len() as u64,
            max_chunk: 1 << 20,
            digest: sha(bytes),
        };
        (chunk, body)
    };
    for last in [b"WRONG".as_slice(), blob.get(10..).unwrap()] {
        let dir = tempfile::tempdir_in(dir.path()).unwrap();
        {
            let (meta, blobs) = open_disk(dir.path());
            let (chunk, body) = chunk_of(0, blob.get(..10).unwrap());
            assert_eq!(
                blobs.write_chunk(key, chunk, body).await.unwrap(),
                ChunkOutcome::Partial(10)
            );
            meta.close();
        }
        let (_meta, blobs) = open_disk(dir.path());
        assert_eq!(blobs.upload_offset(key).await.unwrap(), 10);
        let mut padded = last.to_vec();
        padded.resize(blob.len() - 10, b'!');
        let (chunk, body) = chunk_of(10, &padded);
        let outcome = blobs.write_chunk(key, chunk, body).await;
        if last == b"WRONG" {
            assert!(
                matches!(outcome, Err(ChunkError::HashMismatch)),
                "{outcome:?}"
            );
            assert!(blobs.read(key.hash, 0, 1).await.is_err());
        } else {
            assert_eq!(outcome.unwrap(), ChunkOutcome::Complete);
            let mut r = blobs.read(key.hash, 0, blob.len() as u64).await.unwrap();
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got)
                .await
                .unwrap();
            assert_eq!(got, blob);
        }
    }
}
