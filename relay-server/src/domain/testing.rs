//! A small world for the domain services' unit tests: a relay state over
//! the in-memory backend (`storage::memory`) with a manual clock, a
//! patient who owns a vault with a "labs" collection, and the client's own
//! verified copy of the log.

use std::sync::Arc;

use bytes::Bytes;
use vault_core::{
    CollectionId, IdentityInfo, Keyring, LogEntry, Permission, RecordInfo, Role, SecretIdentity,
    VaultId, VaultState,
};

use crate::config::Config;
use crate::domain::append::{AppendError, Appends};
use crate::domain::blobs::{BlobError, Blobs, ChunkAnswer, ChunkUpload};
use crate::domain::identities::Directory;
use crate::domain::vaults::Vaults;
use crate::domain::ManualClock;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::storage::memory::{MemoryBlobs, MemoryMeta};
use crate::storage::{BodyStream, Head};

/// A deterministic identity (a clinician's).
pub(crate) fn ident(seed: u8, name: &str, now: u64) -> SecretIdentity {
    ident_as(seed, name, Role::Clinician, now)
}

/// A deterministic identity of `role`.
pub(crate) fn ident_as(seed: u8, name: &str, role: Role, now: u64) -> SecretIdentity {
    SecretIdentity::from_seed(
        &[seed; 32],
        &IdentityInfo {
            display_name: name.into(),
            role,
            registration: None,
            created_at: now - 1000,
        },
    )
    .unwrap()
}

/// A body of one piece.
pub(crate) fn body(bytes: &[u8]) -> BodyStream {
    let bytes = Bytes::copy_from_slice(bytes);
    Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
}

/// SHA-256 (a chunk's signed body digest, and the address of the tests'
/// synthetic blobs).
pub(crate) fn sha(bytes: &[u8]) -> [u8; 32] {
    vault_core::request::body_digest(bytes)
}

/// The content address of a sealed record's ciphertext (BLAKE3).
pub(crate) fn address(ct: &[u8]) -> [u8; 32] {
    vault_core::address::AddressKind::CURRENT.digest(ct)
}

/// A relay state over the in-memory backend, with a manual clock set to
/// the system's time.
pub(crate) struct Relay {
    pub app: Arc<AppState>,
    pub meta: Arc<MemoryMeta>,
    pub blobs: Arc<MemoryBlobs>,
    pub clock: Arc<ManualClock>,
    pub now: u64,
}

impl Relay {
    /// A relay running `edit`ed defaults.
    pub fn with(edit: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        edit(&mut config);
        let now = crate::auth::unix_now();
        let meta = Arc::new(MemoryMeta::new());
        let blobs = Arc::new(MemoryBlobs::new());
        let clock = Arc::new(ManualClock::new(now));
        let app = Arc::new(
            AppState::new(
                config,
                meta.clone(),
                blobs.clone(),
                Arc::new(Metrics::new()),
            )
            .with_clock(clock.clone()),
        );
        Self {
            app,
            meta,
            blobs,
            clock,
            now,
        }
    }
}

pub(crate) struct World {
    pub app: Arc<AppState>,
    pub meta: Arc<MemoryMeta>,
    pub blobs: Arc<MemoryBlobs>,
    pub clock: Arc<ManualClock>,
    pub now: u64,
    pub patient: Arc<SecretIdentity>,
    /// The patient's verified copy of the log (what a client holds).
    pub state: VaultState,
    pub labs: CollectionId,
}

impl World {
    /// A world with the default configuration.
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// A world whose relay runs `edit`ed defaults.
    pub async fn with(edit: impl FnOnce(&mut Config)) -> Self {
        let Relay {
            app,
            meta,
            blobs,
            clock,
            now,
        } = Relay::with(edit);
        let patient = Arc::new(ident(1, "Pat Patient", now));
        let (state, genesis) = VaultState::create(&patient, now).unwrap();
        Directory::new(app.clone())
            .publish(patient.fingerprint(), patient.public(), None, None)
            .await
            .unwrap();
        let created = Vaults::new(app.clone())
            .create(patient.fingerprint(), &genesis, None)
            .await
            .unwrap();
        assert!(created.new);
        let (labs, e) = state.create_collection(&patient, "labs", now).unwrap();
        let mut w = Self {
            app,
            meta,
            blobs,
            clock,
            now,
            patient,
            state,
            labs,
        };
        w.append(&w.patient.clone(), vec![e]).await.unwrap();
        w
    }

    pub fn vault(&self) -> VaultId {
        self.state.vault()
    }

    /// The client's head.
    pub fn head(&self) -> Head {
        Head::of(&self.state)
    }

    /// The head the relay has stored.
    pub async fn stored_head(&self) -> Head {
        use crate::storage::MetaStore;
        self.meta.head(self.vault()).await.unwrap().unwrap()
    }

    /// Appends on the client's head as `who`; on success the client
    /// applies the entries too.
    pub async fn append(
        &mut self,
        who: &SecretIdentity,
        entries: Vec<LogEntry>,
    ) -> Result<Head, AppendError> {
        let head = Appends::new(self.app.clone())
            .append(
                self.vault(),
                who.fingerprint(),
                self.head(),
                entries.clone(),
            )
            .await?;
        for e in &entries {
            self.state.apply(e).unwrap();
        }
        Ok(head)
    }

    /// Shares "labs" with `member`.
    pub async fn share(&mut self, member: &SecretIdentity, permission: Permission) {
        let mut kr = Keyring::new(&self.patient, self.now);
        let e = self
            .state
            .share_collection(&mut kr, &self.labs, member.public(), permission, None)
            .unwrap();
        self.append(&self.patient.clone(), vec![e]).await.unwrap();
    }

    /// Seals a record (a new one, or a new version of `record`) as
    /// `author`: its ciphertext and record-put entry, nothing sent.
    pub fn seal(
        &self,
        author: &SecretIdentity,
        record: Option<vault_core::RecordId>,
        text: &[u8],
    ) -> (Vec<u8>, LogEntry) {
        let mut kr = Keyring::new(author, self.now);
        let info = RecordInfo {
            content_type: "text/plain".into(),
            title: "result".into(),
            created_at: self.now,
            effective_at: None,
        };
        let mut ct = Vec::new();
        let (_, e) = self
            .state
            .put_record(
                &mut kr,
                &self.labs,
                record,
                &info,
                vault_core::RecordBody::new(text, text.len() as u64),
                &mut ct,
            )
            .unwrap();
        (ct, e)
    }

    /// Uploads `ct` whole, in one chunk, as `who`.
    pub async fn upload(&self, who: &SecretIdentity, ct: &[u8]) -> Result<ChunkAnswer, BlobError> {
        let chunk = ChunkUpload {
            offset: 0,
            total: ct.len() as u64,
            declared_len: Some(ct.len() as u64),
            digest: sha(ct),
        };
        Blobs::new(self.app.clone())
            .put_chunk(
                self.vault(),
                address(ct),
                who.fingerprint(),
                chunk,
                body(ct),
            )
            .await
    }

    /// Seals, uploads and appends a record as `who`: its ciphertext.
    pub async fn put_record(
        &mut self,
        who: &SecretIdentity,
        record: Option<vault_core::RecordId>,
        text: &[u8],
    ) -> Vec<u8> {
        let (ct, e) = self.seal(who, record, text);
        self.upload(who, &ct).await.unwrap();
        self.append(who, vec![e]).await.unwrap();
        ct
    }

    /// The whole of a sealed record's ciphertext as `who` downloads it.
    pub async fn download(&self, who: &SecretIdentity, ct: &[u8]) -> Result<Vec<u8>, BlobError> {
        self.download_at(who, address(ct)).await
    }

    /// The whole of the blob at `hash` as `who` downloads it.
    pub async fn download_at(
        &self,
        who: &SecretIdentity,
        hash: [u8; 32],
    ) -> Result<Vec<u8>, BlobError> {
        use tokio::io::AsyncReadExt;
        let blobs = Blobs::new(self.app.clone());
        let d = blobs
            .authorize_download(self.vault(), hash, &who.fingerprint())
            .await?;
        match blobs.read(&d, 0, d.len()).await? {
            crate::domain::blobs::BlobBody::Bytes(b) => Ok(b.to_vec()),
            crate::domain::blobs::BlobBody::Stream(mut r) => {
                let mut out = Vec::new();
                r.read_to_end(&mut out).await.unwrap();
                Ok(out)
            }
        }
    }
}
