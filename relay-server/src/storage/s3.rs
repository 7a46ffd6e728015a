//! Blobs in S3-compatible object storage ([`S3Blobs`]), through the
//! `object_store` crate (request signing, retries): the same contract as
//! [`super::files::FileBlobs`].
//!
//! - **Keys** are content addresses: `[prefix/]blobs/<64 hex>`. A blob
//!   that fits one part is written with one `PUT` carrying
//!   `If-None-Match: *`; a store that already holds the address answers
//!   412, which is the same outcome (the bytes are the same).
//! - **Chunked uploads** become multipart uploads whose state lives in
//!   PostgreSQL (`s3_uploads`, `s3_upload_parts`; migration 2): the
//!   store's upload id, the parts uploaded so far (each [`PART_SIZE`]
//!   bytes; S3 wants at least 5 MiB but the last), the acknowledged bytes
//!   after the last part (`tail`, at most one part), and the running
//!   SHA-256 and BLAKE3 of everything acknowledged (sha2's
//!   `SerializableState`, `vault_core::address::ResumableBlake3`: a blob
//!   is addressed by either). A
//!   chunk's parts are uploaded while it streams in; the chunk is
//!   acknowledged only once its signed digest matched, its parts are
//!   stored by the store, and the new state is committed: a compare-and-swap
//!   on `acked` by the holder of the upload's lease. A refused or cut-off
//!   chunk leaves the state as it was (parts it uploaded are overwritten
//!   by the next attempt, which reuses their numbers). Any relay sharing
//!   the database can continue an upload, also after a restart.
//! - **One writer per upload**: a chunk first takes the upload's lease (a
//!   row lock would hold a connection for the whole chunk); a second
//!   writer is told the offset. A lease lasts [`LEASE`] and its holder
//!   renews it every [`LEASE_RENEWAL`] while the chunk streams in (a chunk
//!   is given at most [`CHUNK_DEADLINE`]), so a lease does not expire under
//!   a live writer. A lease also names its holder's **presence**: a
//!   session-level advisory lock that each [`S3Blobs`] keeps on a database
//!   connection of its own for as long as it lives (checked every
//!   [`PRESENCE_CHECK`], lost when it closes or does not answer within
//!   [`PRESENCE_TIMEOUT`]). When that session ends (the relay was killed,
//!   or lost its database), the lock is gone at once, and another writer
//!   may take the upload over without waiting for the lease to run out;
//!   a lease whose presence is alive is never taken before it runs out.
//!   The holder fences itself: a chunk stops (with a `503`) as soon as
//!   its relay's presence is lost, and no part is put once it is, so a
//!   writer that lost its session is not streaming when another one
//!   takes over. Should the two still overlap (a part already sent when
//!   the session dropped), the first one's acknowledgement (a
//!   compare-and-swap on its lease) fails, and a part it overwrote no
//!   longer matches the entity tag the ledger holds, which the store's
//!   completion refuses (decision 46).
//! - **Completion**: once the whole blob hashes to its address, a blob of
//!   one part is put conditionally; otherwise the last part is uploaded,
//!   the ledger marks the upload complete (so a crash here finishes on the
//!   next chunk), and the multipart upload is completed unless the address
//!   already exists (object_store's `MultipartStore` cannot send
//!   `If-None-Match` on completion; an overwrite could only write the same
//!   bytes). `Complete` is answered only after the store acknowledged it.
//! - **Downloads** stream ranged `GET`s.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use sha2::Digest as _;
use sha2_resumable::digest::common::hazmat::SerializableState;
use vault_core::address::ResumableBlake3;

use super::backends::{BackendError, S3Credentials, S3Location};
use super::{
    BlobReader, BlobStore, BodyStream, Chunk, ChunkError, ChunkOutcome, StorageError, UploadKey,
};

/// The size of every part but the last (S3's minimum is 5 MiB; the
/// client's default chunk is 8 MiB, so a chunk usually makes one part).
pub const PART_SIZE: usize = 8 << 20;

/// The most parts of one multipart upload (S3's limit).
const MAX_PARTS: i32 = 10_000;

/// How long a writer holds an upload.
pub const LEASE: Duration = Duration::from_secs(20);

/// How often a writer renews its lease while its chunk streams in.
pub const LEASE_RENEWAL: Duration = Duration::from_secs(5);

/// The longest one chunk may take (its lease is renewed meanwhile).
pub const CHUNK_DEADLINE: Duration = Duration::from_secs(540);

/// How often a relay checks that its presence session (the advisory lock
/// its leases name) is still alive.
pub const PRESENCE_CHECK: Duration = Duration::from_millis(500);

/// A presence check that does not answer within this long counts as a
/// lost session. A session the server ended is seen at once (its
/// connection closes); this only bounds a database that stopped
/// answering, so it is generous: a slow answer on a loaded machine must
/// not stop every chunk in flight while the lock is still held.
pub const PRESENCE_TIMEOUT: Duration = Duration::from_secs(3);

type Sha256State = sha2_resumable::Sha256;

/// The running hashes of an upload, saved in `s3_uploads.hash_state`
/// between its chunks: SHA-256 (sha2's serialized state) followed by
/// BLAKE3 ([`ResumableBlake3`]), since a blob is addressed by either
/// (`vault_core::address`). A state of the SHA-256 part alone was saved by
/// a relay from before BLAKE3 addresses: such an upload can complete only
/// under a SHA-256 address.
struct Running {
    sha256: Sha256State,
    blake3: Option<ResumableBlake3>,
}

impl Running {
    fn new() -> Self {
        Self {
            sha256: Sha256State::default(),
            blake3: Some(ResumableBlake3::default()),
        }
    }

    /// The running hashes saved after `acked` bytes; a BLAKE3 state of
    /// another length is refused (a damaged row), never continued.
    fn restore(saved: &[u8], acked: u64) -> Result<Self, StorageError> {
        type Saved = sha2_resumable::digest::common::hazmat::SerializedState<Sha256State>;
        let len = std::mem::size_of::<Saved>();
        let (sha, b3) = saved
            .split_at_checked(len)
            .ok_or_else(|| StorageError::new("an upload's saved hash has the wrong length"))?;
        let sha = <&Saved>::try_from(sha)
            .map_err(|_| StorageError::new("an upload's saved hash has the wrong length"))?;
        Ok(Self {
            sha256: Sha256State::deserialize(sha)
                .map_err(|_| StorageError::new("an upload's saved hash is corrupt"))?,
            blake3: if b3.is_empty() {
                None
            } else {
                let b3 = ResumableBlake3::from_bytes(b3).map_err(|e| {
                    StorageError::new(format!("an upload's saved BLAKE3 state is corrupt: {e}"))
                })?;
                if b3.len() != acked {
                    return Err(StorageError::new(
                        "an upload's saved BLAKE3 state is not of the acknowledged bytes",
                    ));
                }
                Some(b3)
            },
        })
    }

    fn update(&mut self, piece: &[u8]) {
        sha2_resumable::Digest::update(&mut self.sha256, piece);
        if let Some(b3) = self.blake3.as_mut() {
            b3.update(piece);
        }
    }

    fn save(&self) -> Vec<u8> {
        let mut out = self.sha256.serialize().as_slice().to_vec();
        if let Some(b3) = &self.blake3 {
            out.extend_from_slice(&b3.to_bytes());
        }
        out
    }

    /// Whether everything hashed is the blob `address` names.
    fn matches(self, address: &[u8; 32]) -> bool {
        let sha: [u8; 32] = sha2_resumable::Digest::finalize(self.sha256).into();
        sha == *address || self.blake3.is_some_and(|b3| b3.finalize() == *address)
    }
}

/// An object store error; everything but a refusal of the request itself
/// (absent object, denied, bad key, unsupported) counts as the store being
/// unavailable: the client's retries already ran out, and the same request
/// may succeed once the store is back.
fn store_error(e: object_store::Error) -> StorageError {
    use object_store::Error as E;
    let refused = matches!(
        e,
        E::NotFound { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::NotImplemented
            | E::Precondition { .. }
            | E::AlreadyExists { .. }
    );
    let message = format!("object store: {e}");
    if refused {
        StorageError::new(message)
    } else {
        StorageError::unavailable(message)
    }
}

fn db_error(e: tokio_postgres::Error) -> StorageError {
    StorageError::from(e)
}

/// The blob store over one bucket (and key prefix).
pub struct S3Blobs {
    store: Arc<AmazonS3>,
    /// The same bucket without retries and with short timeouts: the
    /// health probe ([`BlobStore::ping`]).
    probe: Arc<AmazonS3>,
    prefix: String,
    pool: Pool,
    part_size: usize,
    /// The advisory lock key of this relay's presence session, `None`
    /// while it has none (see the module documentation).
    presence: tokio::sync::watch::Receiver<Option<i64>>,
    /// Keeps the presence session; stopped when the store is dropped.
    _presence_task: PresenceTask,
}

/// The task that keeps a relay's presence session, aborted on drop.
struct PresenceTask(tokio::task::JoinHandle<()>);

impl Drop for PresenceTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Takes a connection out of the pool for good (closed when dropped, so
/// its advisory lock never goes back to the pool) and a session-level
/// advisory lock on a fresh random key under it.
async fn open_presence(
    pool: &Pool,
) -> Result<(deadpool_postgres::ClientWrapper, i64), StorageError> {
    let c = deadpool_postgres::Object::take(pool.get().await?);
    // Positive keys only: `holder >> 32` then fits pg_locks' `classid`.
    let row = c
        .query_opt(
            "SELECT k FROM (SELECT (random() * 9.2e18)::bigint AS k) AS r
             WHERE pg_try_advisory_lock(k)",
            &[],
        )
        .await
        .map_err(db_error)?
        .ok_or_else(|| StorageError::new("a presence lock key was taken; trying another"))?;
    let key: i64 = row.try_get(0).map_err(db_error)?;
    Ok((c, key))
}

/// Keeps this relay's presence: a session holding an advisory lock,
/// published in `tx` while it answers, withdrawn (`None`) the moment it
/// does not, then opened again under a new key.
async fn keep_presence(pool: Pool, tx: tokio::sync::watch::Sender<Option<i64>>) {
    loop {
        match open_presence(&pool).await {
            Ok((client, key)) => {
                tx.send_replace(Some(key));
                loop {
                    tokio::time::sleep(PRESENCE_CHECK).await;
                    let alive = !client.is_closed()
                        && tokio::time::timeout(PRESENCE_TIMEOUT, client.simple_query(""))
                            .await
                            .is_ok_and(|r| r.is_ok());
                    if !alive {
                        break;
                    }
                }
                tx.send_replace(None);
                tracing::warn!("the database session that holds this relay's upload leases was lost; chunks in flight stop, and a new session is opened");
            }
            Err(e) => {
                tracing::warn!(error = %e, "opening the database session for upload leases failed");
                tokio::time::sleep(PRESENCE_CHECK).await;
            }
        }
    }
}

/// An upload's state, as claimed.
struct Claimed {
    token: String,
    multipart_id: Option<String>,
    acked: u64,
    parts: i32,
    tail: Vec<u8>,
    hash_state: Option<Vec<u8>>,
    complete: bool,
}

/// Gives an upload's lease back when dropped without [`Lease::done`] (the
/// request may be cancelled mid-chunk), forgetting the upload if nothing
/// of it was kept.
struct Lease {
    pool: Pool,
    key: UploadKey,
    token: String,
    armed: bool,
    /// Renews the lease every [`LEASE_RENEWAL`] until the lease is dropped.
    renewal: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// A lease just claimed, renewed from now on.
    fn new(pool: Pool, key: UploadKey, token: String) -> Self {
        let renewal = {
            let (pool, token) = (pool.clone(), token.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LEASE_RENEWAL).await;
                    let renewed: Result<u64, StorageError> = async {
                        let c = pool.get().await?;
                        c.execute(
                            "UPDATE s3_uploads SET lease_until = now() + make_interval(secs => $4)
                             WHERE vault = $1 AND hash = $2 AND lease = $3",
                            &[
                                &key.vault.as_bytes().as_slice(),
                                &key.hash.as_slice(),
                                &token,
                                &LEASE.as_secs_f64(),
                            ],
                        )
                        .await
                        .map_err(db_error)
                    }
                    .await;
                    match renewed {
                        Ok(1) => {}
                        // Given back, or taken over after a long outage:
                        // the acknowledgement will tell.
                        Ok(_) => return,
                        Err(e) => tracing::warn!(error = %e, "renewing an upload's lease failed"),
                    }
                }
            })
        };
        Self {
            pool,
            key,
            token,
            armed: true,
            renewal,
        }
    }

    async fn release(mut self) {
        self.armed = false;
        self.renewal.abort();
        release(&self.pool, &self.key, &self.token).await;
    }

    fn done(mut self) {
        self.armed = false;
        self.renewal.abort();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        if !self.armed {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (pool, key, token) = (self.pool.clone(), self.key, self.token.clone());
            rt.spawn(async move { release(&pool, &key, &token).await });
        }
    }
}

async fn release(pool: &Pool, key: &UploadKey, token: &str) {
    let result: Result<(), StorageError> = async {
        let c = pool.get().await?;
        let (v, h) = (key.vault.as_bytes().as_slice(), key.hash.as_slice());
        c.execute(
            "DELETE FROM s3_uploads WHERE vault = $1 AND hash = $2 AND lease = $3
             AND acked = 0 AND multipart_id IS NULL AND NOT complete",
            &[&v, &h, &token],
        )
        .await
        .map_err(db_error)?;
        c.execute(
            "UPDATE s3_uploads SET lease = NULL, lease_until = NULL
             WHERE vault = $1 AND hash = $2 AND lease = $3",
            &[&v, &h, &token],
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "releasing an upload's lease failed; it runs out by itself");
    }
}

fn build(
    location: &S3Location,
    credentials: &S3Credentials,
    retry: RetryConfig,
    client: ClientOptions,
) -> Result<AmazonS3, BackendError> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&location.bucket)
        .with_region(&location.region)
        .with_access_key_id(&credentials.access_key_id)
        .with_secret_access_key(&credentials.secret_access_key)
        .with_virtual_hosted_style_request(false)
        .with_retry(retry)
        .with_client_options(client);
    if let Some(token) = &credentials.session_token {
        b = b.with_token(token);
    }
    if let Some(endpoint) = &location.endpoint {
        b = b
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    b.build().map_err(|e| BackendError::BlobsUrl {
        url: location.to_string(),
        reason: e.to_string(),
    })
}

/// Sorts a failed start-up request into what the operator must fix.
fn classify(location: &S3Location, e: &object_store::Error) -> BackendError {
    let text = e.to_string();
    let endpoint = location.endpoint_name();
    let denied = || BackendError::Denied {
        bucket: location.bucket.clone(),
        endpoint: endpoint.clone(),
        reason: text.clone(),
    };
    match e {
        _ if text.contains("NoSuchBucket") => BackendError::BucketMissing {
            bucket: location.bucket.clone(),
            endpoint: endpoint.clone(),
        },
        object_store::Error::NotFound { .. } => BackendError::BucketMissing {
            bucket: location.bucket.clone(),
            endpoint: endpoint.clone(),
        },
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => denied(),
        _ if [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
        ]
        .iter()
        .any(|c| text.contains(c)) =>
        {
            denied()
        }
        _ => BackendError::Unreachable {
            endpoint: endpoint.clone(),
            reason: text,
        },
    }
}

impl S3Blobs {
    /// Connects to the bucket and checks, before anything is written, that
    /// it exists and that the credentials may list it and start (then
    /// abort) a multipart upload. The upload state lives in `pool`'s
    /// database (migration 2 of [`super::postgres::MIGRATIONS`]).
    pub async fn connect(
        location: &S3Location,
        credentials: &S3Credentials,
        pool: Pool,
    ) -> Result<Self, BackendError> {
        // The check fails fast: one retry, short timeouts.
        let probe = build(
            location,
            credentials,
            RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 1,
                retry_timeout: Duration::from_secs(10),
            },
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(15)),
        )?;
        let prefix = if location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", location.prefix)
        };
        probe
            .list_paginated(
                Some(&prefix),
                PaginatedListOptions {
                    max_keys: Some(1),
                    ..PaginatedListOptions::default()
                },
            )
            .await
            .map_err(|e| classify(location, &e))?;
        let probe_key =
            ObjPath::parse(format!("{prefix}uploads/relay-start-check")).map_err(|e| {
                BackendError::BlobsUrl {
                    url: location.to_string(),
                    reason: e.to_string(),
                }
            })?;
        let id = probe
            .create_multipart(&probe_key)
            .await
            .map_err(|e| classify(location, &e))?;
        probe
            .abort_multipart(&probe_key, &id)
            .await
            .map_err(|e| classify(location, &e))?;
        // Serving: retries for transient failures; no overall request
        // timeout, since a download streams for as long as it takes.
        let store = build(
            location,
            credentials,
            RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 5,
                retry_timeout: Duration::from_secs(60),
            },
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout_disabled(),
        )?;
        let health = build(
            location,
            credentials,
            RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 0,
                retry_timeout: Duration::from_secs(3),
            },
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(3)),
        )?;
        let (tx, mut presence) = tokio::sync::watch::channel(None);
        let task = PresenceTask(tokio::spawn(keep_presence(pool.clone(), tx)));
        // The first presence session, before any upload is served.
        let first =
            tokio::time::timeout(Duration::from_secs(10), presence.wait_for(|p| p.is_some()))
                .await
                .is_ok_and(|r| r.is_ok());
        if !first {
            return Err(BackendError::LeaseSession {
                reason: "no session with its presence lock within 10 s".into(),
            });
        }
        Ok(Self {
            store: Arc::new(store),
            probe: Arc::new(health),
            prefix,
            pool,
            part_size: PART_SIZE,
            presence,
            _presence_task: task,
        })
    }

    /// Uses parts of `bytes` (at least 5 MiB on AWS; tests use smaller
    /// parts on stores that allow them).
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    fn path(&self, hash: &[u8; 32]) -> Result<ObjPath, StorageError> {
        ObjPath::parse(format!("{}blobs/{}", self.prefix, hex::encode(hash)))
            .map_err(|e| StorageError::new(format!("object store key: {e}")))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        Ok(self.pool.get().await?)
    }

    /// Takes the upload's lease, creating its row if needed; `Err(at)`
    /// when another writer holds it.
    ///
    /// A lease held by another writer is taken over only once it ran out
    /// or its holder's presence lock is gone (no session holds it).
    async fn claim(
        &self,
        key: &UploadKey,
        holder: i64,
    ) -> Result<Result<Claimed, u64>, StorageError> {
        let c = self.client().await?;
        let (v, h) = (key.vault.as_bytes().as_slice(), key.hash.as_slice());
        let row = c
            .query_opt(
                "INSERT INTO s3_uploads (vault, hash, lease, lease_until, holder)
                 VALUES ($1, $2, gen_random_uuid()::text, now() + make_interval(secs => $3), $4)
                 ON CONFLICT (vault, hash) DO UPDATE
                   SET lease = excluded.lease, lease_until = excluded.lease_until,
                       holder = excluded.holder, touched = now()
                   WHERE s3_uploads.lease IS NULL OR s3_uploads.lease_until < now()
                      OR (s3_uploads.holder IS NOT NULL AND NOT EXISTS (
                            SELECT 1 FROM pg_locks l
                             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                               AND l.database = (SELECT oid FROM pg_database
                                                  WHERE datname = current_database())
                               AND l.classid::bigint = (s3_uploads.holder >> 32)
                               AND l.objid::bigint = (s3_uploads.holder & 4294967295)))
                 RETURNING lease, multipart_id, acked, parts, tail, hash_state, complete",
                &[&v, &h, &LEASE.as_secs_f64(), &holder],
            )
            .await
            .map_err(db_error)?;
        let Some(r) = row else {
            let at = c
                .query_opt(
                    "SELECT acked FROM s3_uploads WHERE vault = $1 AND hash = $2",
                    &[&v, &h],
                )
                .await
                .map_err(db_error)?
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()
                .map_err(db_error)?
                .unwrap_or(0);
            return Ok(Err(u64::try_from(at).unwrap_or(0)));
        };
        let acked: i64 = r.try_get(2).map_err(db_error)?;
        Ok(Ok(Claimed {
            token: r.try_get(0).map_err(db_error)?,
            multipart_id: r.try_get(1).map_err(db_error)?,
            acked: u64::try_from(acked).map_err(|_| StorageError::new("negative upload offset"))?,
            parts: r.try_get(3).map_err(db_error)?,
            tail: r.try_get(4).map_err(db_error)?,
            hash_state: r.try_get(5).map_err(db_error)?,
            complete: r.try_get(6).map_err(db_error)?,
        }))
    }

    /// The parts committed so far, in order.
    async fn committed_parts(&self, key: &UploadKey) -> Result<Vec<PartId>, StorageError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT idx, etag FROM s3_upload_parts WHERE vault = $1 AND hash = $2 ORDER BY idx",
                &[&key.vault.as_bytes().as_slice(), &key.hash.as_slice()],
            )
            .await
            .map_err(db_error)?;
        let mut parts = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let idx: i32 = r.try_get(0).map_err(db_error)?;
            if usize::try_from(idx).ok() != Some(i) {
                return Err(StorageError::new(format!(
                    "upload {} lacks part {i}",
                    hex::encode(key.hash)
                )));
            }
            parts.push(PartId {
                content_id: r.try_get(1).map_err(db_error)?,
            });
        }
        Ok(parts)
    }

    /// Forgets an upload held under `token` and aborts its multipart
    /// upload.
    async fn discard(&self, key: &UploadKey, token: &str, multipart_id: Option<&str>) {
        let path = self.path(&key.hash);
        if let Err(e) = self.forget(key, token).await {
            tracing::warn!(error = %e, "forgetting a discarded upload failed; it is swept later");
        }
        if let (Some(id), Ok(path)) = (multipart_id, path) {
            if let Err(e) = self.store.abort_multipart(&path, &id.to_owned()).await {
                tracing::debug!(error = %e, "aborting a multipart upload failed");
            }
        }
    }

    /// The store's multipart upload for this upload, created (and
    /// remembered) on first use.
    async fn multipart(
        &self,
        key: &UploadKey,
        token: &str,
        id: &mut Option<String>,
    ) -> Result<String, ChunkError> {
        if let Some(id) = id {
            return Ok(id.clone());
        }
        let path = self.path(&key.hash)?;
        let new = self
            .store
            .create_multipart(&path)
            .await
            .map_err(store_error)?;
        let c = self.client().await?;
        let kept = c
            .execute(
                "UPDATE s3_uploads SET multipart_id = $4 WHERE vault = $1 AND hash = $2 AND lease = $3",
                &[&key.vault.as_bytes().as_slice(), &key.hash.as_slice(), &token, &new],
            )
            .await
            .map_err(db_error)?;
        if kept == 0 {
            let _ = self.store.abort_multipart(&path, &new).await;
            return Err(StorageError::new("lost the upload's lease").into());
        }
        *id = Some(new.clone());
        Ok(new)
    }

    async fn put_part(
        &self,
        key: &UploadKey,
        id: &str,
        idx: i32,
        data: Vec<u8>,
    ) -> Result<PartId, ChunkError> {
        if idx >= MAX_PARTS {
            return Err(StorageError::new(format!(
                "a blob may have at most {MAX_PARTS} parts of {} bytes",
                self.part_size
            ))
            .into());
        }
        let path = self.path(&key.hash)?;
        let part_idx = usize::try_from(idx).map_err(|_| StorageError::new("bad part number"))?;
        Ok(self
            .store
            .put_part(&path, &id.to_owned(), part_idx, PutPayload::from(data))
            .await
            .map_err(store_error)?)
    }

    /// Completes a verified upload whose parts are all in `parts`
    /// (recorded in the ledger, marked complete).
    async fn finish_multipart(
        &self,
        key: &UploadKey,
        id: &str,
        parts: Vec<PartId>,
    ) -> Result<(), StorageError> {
        let path = self.path(&key.hash)?;
        match self.store.head(&path).await {
            Ok(_) => {
                // The address is stored already (another vault's upload,
                // or this one before a crash): the same bytes.
                let _ = self.store.abort_multipart(&path, &id.to_owned()).await;
                return Ok(());
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_error(e)),
        }
        self.store
            .complete_multipart(&path, &id.to_owned(), parts)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn forget(&self, key: &UploadKey, token: &str) -> Result<(), StorageError> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM s3_uploads WHERE vault = $1 AND hash = $2 AND lease = $3",
            &[
                &key.vault.as_bytes().as_slice(),
                &key.hash.as_slice(),
                &token,
            ],
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn write_leased(
        &self,
        key: UploadKey,
        chunk: Chunk,
        mut body: BodyStream,
        state: Claimed,
    ) -> Result<ChunkOutcome, ChunkError> {
        let token = state.token.as_str();
        if state.complete {
            // A crash after the whole blob was verified: finish it.
            let id = state
                .multipart_id
                .clone()
                .ok_or_else(|| StorageError::new("a complete upload without its multipart id"))?;
            let parts = self.committed_parts(&key).await?;
            if let Err(e) = self.finish_multipart(&key, &id, parts).await {
                self.discard(&key, token, Some(&id)).await;
                return Err(StorageError::new(format!(
                    "an interrupted upload could not be completed ({e}); start it again"
                ))
                .into());
            }
            self.forget(&key, token).await?;
            return Ok(ChunkOutcome::Complete);
        }
        let current = state.acked;
        if chunk.offset != current {
            return Err(ChunkError::OffsetMismatch(current));
        }
        let mut running = match &state.hash_state {
            Some(saved) => Running::restore(saved, current)?,
            None if current == 0 => Running::new(),
            None => return Err(StorageError::new("an upload's saved hash is missing").into()),
        };
        let mut digest = sha2::Sha256::new();
        let mut buf = state.tail;
        let mut multipart_id = state.multipart_id;
        let mut next = state.parts;
        let mut new_parts: Vec<(i32, PartId)> = Vec::new();
        let mut written: u64 = 0;
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(ChunkError::Body)?;
            written = written.saturating_add(piece.len() as u64);
            if written > chunk.max_chunk || current.saturating_add(written) > chunk.total {
                return Err(ChunkError::TooLarge);
            }
            digest.update(&piece);
            running.update(&piece);
            buf.extend_from_slice(&piece);
            while buf.len() >= self.part_size {
                let rest = buf.split_off(self.part_size);
                let part = std::mem::replace(&mut buf, rest);
                let id = self.multipart(&key, token, &mut multipart_id).await?;
                let part_id = self.put_part(&key, &id, next, part).await?;
                new_parts.push((next, part_id));
                next += 1;
            }
        }
        if <[u8; 32]>::from(digest.finalize()) != chunk.digest {
            return Err(ChunkError::DigestMismatch);
        }
        let now_at = current + written;
        if now_at < chunk.total {
            let saved = running.save();
            return self
                .commit(&key, token, current, now_at, next, &buf, &saved, &new_parts)
                .await;
        }
        if !running.matches(&key.hash) {
            self.discard(&key, token, multipart_id.as_deref()).await;
            return Err(ChunkError::HashMismatch);
        }
        if next == 0 {
            // One part: one conditional put.
            let path = self.path(&key.hash)?;
            let put = self
                .store
                .put_opts(
                    &path,
                    PutPayload::from(buf),
                    PutOptions {
                        mode: PutMode::Create,
                        ..PutOptions::default()
                    },
                )
                .await;
            match put {
                Ok(_)
                | Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {}
                Err(e) => return Err(store_error(e).into()),
            }
            if let Some(id) = &multipart_id {
                let _ = self.store.abort_multipart(&path, id).await;
            }
        } else {
            let id = self.multipart(&key, token, &mut multipart_id).await?;
            if !buf.is_empty() {
                let part_id = self.put_part(&key, &id, next, buf).await?;
                new_parts.push((next, part_id));
                next += 1;
            }
            // Recorded before completing: a crash from here on finishes
            // the upload on the next chunk.
            self.commit_complete(&key, token, current, next, &new_parts)
                .await?;
            let parts = self.committed_parts(&key).await?;
            self.finish_multipart(&key, &id, parts).await?;
        }
        self.forget(&key, token).await?;
        Ok(ChunkOutcome::Complete)
    }

    /// Acknowledges a chunk: the compare-and-swap on `acked` by the lease
    /// holder, with the new parts, tail and hash state, in one
    /// transaction.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        key: &UploadKey,
        token: &str,
        from: u64,
        to: u64,
        parts: i32,
        tail: &[u8],
        hash_state: &[u8],
        new_parts: &[(i32, PartId)],
    ) -> Result<ChunkOutcome, ChunkError> {
        let (v, h) = (key.vault.as_bytes().as_slice(), key.hash.as_slice());
        let (from_i, to_i) = (
            i64::try_from(from).map_err(|_| StorageError::new("offset too large"))?,
            i64::try_from(to).map_err(|_| StorageError::new("offset too large"))?,
        );
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_error)?;
        let swapped = tx
            .execute(
                "UPDATE s3_uploads SET acked = $5, parts = $6, tail = $7, hash_state = $8,
                     lease = NULL, lease_until = NULL, touched = now()
                 WHERE vault = $1 AND hash = $2 AND lease = $3 AND acked = $4",
                &[&v, &h, &token, &from_i, &to_i, &parts, &tail, &hash_state],
            )
            .await
            .map_err(db_error)?;
        if swapped == 0 {
            let _ = tx.rollback().await;
            let at = tx_free_offset(&self.pool, key).await?;
            return Err(ChunkError::OffsetMismatch(at));
        }
        insert_parts(&tx, v, h, new_parts).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(ChunkOutcome::Partial(to))
    }

    async fn commit_complete(
        &self,
        key: &UploadKey,
        token: &str,
        from: u64,
        parts: i32,
        new_parts: &[(i32, PartId)],
    ) -> Result<(), ChunkError> {
        let (v, h) = (key.vault.as_bytes().as_slice(), key.hash.as_slice());
        let from_i = i64::try_from(from).map_err(|_| StorageError::new("offset too large"))?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_error)?;
        let swapped = tx
            .execute(
                "UPDATE s3_uploads SET parts = $5, tail = '\\x', complete = true, touched = now()
                 WHERE vault = $1 AND hash = $2 AND lease = $3 AND acked = $4",
                &[&v, &h, &token, &from_i, &parts],
            )
            .await
            .map_err(db_error)?;
        if swapped == 0 {
            let _ = tx.rollback().await;
            let at = tx_free_offset(&self.pool, key).await?;
            return Err(ChunkError::OffsetMismatch(at));
        }
        insert_parts(&tx, v, h, new_parts).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }
}

async fn insert_parts(
    tx: &deadpool_postgres::Transaction<'_>,
    v: &[u8],
    h: &[u8],
    new_parts: &[(i32, PartId)],
) -> Result<(), StorageError> {
    for (idx, part) in new_parts {
        let st = tx
            .prepare_cached(
                "INSERT INTO s3_upload_parts (vault, hash, idx, etag) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (vault, hash, idx) DO UPDATE SET etag = excluded.etag",
            )
            .await
            .map_err(db_error)?;
        tx.execute(&st, &[&v, &h, idx, &part.content_id])
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

async fn tx_free_offset(pool: &Pool, key: &UploadKey) -> Result<u64, StorageError> {
    let c = pool.get().await?;
    let at = c
        .query_opt(
            "SELECT acked FROM s3_uploads WHERE vault = $1 AND hash = $2",
            &[&key.vault.as_bytes().as_slice(), &key.hash.as_slice()],
        )
        .await
        .map_err(db_error)?
        .map(|r| r.try_get::<_, i64>(0))
        .transpose()
        .map_err(db_error)?
        .unwrap_or(0);
    Ok(u64::try_from(at).unwrap_or(0))
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn upload_offset(&self, key: UploadKey) -> Result<u64, StorageError> {
        tx_free_offset(&self.pool, &key).await
    }

    async fn write_chunk(
        &self,
        key: UploadKey,
        chunk: Chunk,
        body: BodyStream,
    ) -> Result<ChunkOutcome, ChunkError> {
        let lost = || {
            StorageError::unavailable(
                "this relay lost the database session that holds its upload leases; retry the chunk",
            )
        };
        let mut presence = self.presence.clone();
        let Some(holder) = *presence.borrow_and_update() else {
            return Err(lost().into());
        };
        let state = match self.claim(&key, holder).await? {
            Ok(state) => state,
            Err(at) => return Err(ChunkError::OffsetMismatch(at)),
        };
        let lease = Lease::new(self.pool.clone(), key, state.token.clone());
        // The chunk stops the moment this relay's presence is lost: another
        // relay may then take the upload over.
        let fenced = async move {
            let _ = presence.wait_for(|p| *p != Some(holder)).await;
        };
        let written = tokio::select! {
            w = tokio::time::timeout(CHUNK_DEADLINE, self.write_leased(key, chunk, body, state)) => w,
            () = fenced => {
                lease.release().await;
                return Err(lost().into());
            }
        };
        match written {
            Ok(Ok(outcome)) => {
                // Committed (which gave the lease back) or forgotten.
                lease.done();
                Ok(outcome)
            }
            Ok(Err(e)) => {
                lease.release().await;
                Err(e)
            }
            Err(_) => {
                lease.release().await;
                Err(StorageError::new(format!(
                    "a chunk took longer than {} s; resume from the upload offset",
                    CHUNK_DEADLINE.as_secs()
                ))
                .into())
            }
        }
    }

    async fn sweep_uploads(&self, older_than: Duration) -> Result<usize, StorageError> {
        let c = self.client().await?;
        let gone = c
            .query(
                "DELETE FROM s3_uploads
                 WHERE touched < now() - make_interval(secs => $1)
                   AND (lease IS NULL OR lease_until < now())
                 RETURNING hash, multipart_id",
                &[&older_than.as_secs_f64()],
            )
            .await
            .map_err(db_error)?;
        for r in &gone {
            let hash: &[u8] = r.try_get(0).map_err(db_error)?;
            let id: Option<String> = r.try_get(1).map_err(db_error)?;
            if let (Some(id), Ok(hash)) = (id, <[u8; 32]>::try_from(hash)) {
                let path = self.path(&hash)?;
                if let Err(e) = self.store.abort_multipart(&path, &id).await {
                    tracing::debug!(error = %e, "aborting an abandoned multipart upload failed");
                }
            }
        }
        Ok(gone.len())
    }

    async fn read(&self, hash: [u8; 32], start: u64, len: u64) -> Result<BlobReader, StorageError> {
        let path = self.path(&hash)?;
        let empty = || -> BlobReader { Box::pin(std::io::Cursor::new(Vec::new())) };
        if len == 0 {
            self.store.head(&path).await.map_err(store_error)?;
            return Ok(empty());
        }
        let end = start.saturating_add(len);
        let got = self
            .store
            .get_opts(
                &path,
                GetOptions {
                    range: Some(GetRange::Bounded(start..end)),
                    ..GetOptions::default()
                },
            )
            .await;
        let got = match got {
            Ok(g) => g,
            Err(e @ object_store::Error::NotFound { .. }) => return Err(store_error(e)),
            Err(e) => {
                // A range starting at or past the end is refused by the
                // store (416): that is an empty read of a stored blob.
                let meta = self.store.head(&path).await.map_err(store_error)?;
                if start >= meta.size {
                    return Ok(empty());
                }
                return Err(store_error(e));
            }
        };
        let stream = got
            .into_stream()
            .map_err(|e| std::io::Error::other(store_error(e)));
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    async fn delete(&self, hash: [u8; 32]) -> Result<(), StorageError> {
        match self.store.delete(&self.path(&hash)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn ping(&self) -> Result<(), StorageError> {
        // A HEAD of a key nobody writes: "not found" is an answer.
        let key = ObjPath::parse(format!("{}health-check", self.prefix))
            .map_err(|e| StorageError::new(format!("object store key: {e}")))?;
        match self.probe.head(&key).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::unavailable(format!("object store: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::Running;
    use vault_core::address::AddressKind;

    /// The running hashes survive being saved after every chunk and match
    /// the blob's address under either kind; a state saved by a relay from
    /// before BLAKE3 addresses (SHA-256 alone) still completes a SHA-256
    /// upload and refuses a BLAKE3 one; a state that is not of the
    /// acknowledged bytes, or whose BLAKE3 part is damaged, is refused.
    #[test]
    fn running_hashes_are_saved_between_chunks_and_checked_on_restore() {
        let blob: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let mut running = Running::new();
        let mut acked = 0u64;
        for piece in blob.chunks(7_777) {
            running = Running::restore(&running.save(), acked).unwrap();
            running.update(piece);
            acked += piece.len() as u64;
        }
        let saved = running.save();
        for kind in [AddressKind::Sha256, AddressKind::Blake3] {
            let restored = Running::restore(&saved, acked).unwrap();
            assert!(restored.matches(&kind.digest(&blob)), "{kind:?}");
        }
        assert!(!Running::restore(&saved, acked).unwrap().matches(&[7; 32]));
        // Restored after another number of bytes than it holds.
        assert!(Running::restore(&saved, acked - 1).is_err());
        // A damaged BLAKE3 part (its length field).
        let sha_len = saved.len() - running.blake3.as_ref().unwrap().to_bytes().len();
        let mut damaged = saved.clone();
        damaged[sha_len] = 9;
        assert!(Running::restore(&damaged, acked).is_err());
        // An older relay's state: SHA-256 alone.
        let legacy = &saved[..sha_len];
        assert!(Running::restore(legacy, acked)
            .unwrap()
            .matches(&AddressKind::Sha256.digest(&blob)));
        assert!(!Running::restore(legacy, acked)
            .unwrap()
            .matches(&AddressKind::Blake3.digest(&blob)));
        assert!(Running::restore(&saved[..sha_len - 1], acked).is_err());
    }
}
