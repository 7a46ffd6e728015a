//! The relay's shared state: storage, the verified state of each vault it
//! serves, the identity cache, authentication and metrics.
//!
//! The relay keeps its own verified copy of every vault's log (a
//! `vault_core::VaultState`), so it refuses entries no client would accept
//! and knows, from the log alone, who is a member with which rights.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use vault_core::{Access, Fingerprint, LogEntry, PublicIdentity, VaultId, VaultState};

use crate::auth::{unix_now, Authenticator};
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::storage::{BlobStore, MetaStore};

/// One vault's verified state; `None` until loaded (or after a failed
/// write, so it is reloaded from storage). Appends hold the write lock from
/// verification until the entries are durable.
pub type VaultSlot = tokio::sync::RwLock<Option<VaultState>>;

/// A vault's state, loaded, locked for reading.
pub type StateRead = tokio::sync::OwnedRwLockReadGuard<Option<VaultState>>;

/// A vault's state, loaded, locked for writing.
pub type StateWrite = tokio::sync::OwnedRwLockWriteGuard<Option<VaultState>>;

/// Everything a handler needs.
pub struct AppState {
    /// Configuration.
    pub config: Config,
    /// Metadata storage.
    pub meta: Arc<dyn MetaStore>,
    /// Blob storage.
    pub blobs: Arc<dyn BlobStore>,
    /// Request authentication.
    pub auth: Authenticator,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    identities: Mutex<HashMap<Fingerprint, Arc<PublicIdentity>>>,
    vaults: Mutex<HashMap<VaultId, Arc<VaultSlot>>>,
}

/// Most vault states kept in memory before idle ones are dropped.
const VAULT_CACHE: usize = 10_000;

impl AppState {
    /// State over the given storage.
    pub fn new(
        config: Config,
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let auth = Authenticator::new(config.clock_skew, config.rate, config.burst)
            .with_origins(config.relay_origins());
        Self {
            config,
            meta,
            blobs,
            auth,
            metrics,
            identities: Mutex::new(HashMap::new()),
            vaults: Mutex::new(HashMap::new()),
        }
    }

    /// A published identity (cached: documents are immutable, since the
    /// fingerprint is their hash).
    pub async fn identity(&self, fp: Fingerprint) -> ApiResult<Option<Arc<PublicIdentity>>> {
        if let Some(id) = self
            .identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fp)
        {
            return Ok(Some(id.clone()));
        }
        let Some(bytes) = self
            .meta
            .identity(fp)
            .await
            .map_err(|e| ApiError::internal("reading an identity", e))?
        else {
            return Ok(None);
        };
        let id = Arc::new(
            PublicIdentity::from_bytes(&bytes)
                .map_err(|e| ApiError::internal("a stored identity does not parse", e))?,
        );
        let mut cache = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(fp, id.clone());
        Ok(Some(id))
    }

    /// The slot of a vault (whether or not it exists).
    pub fn slot(&self, vault: VaultId) -> Arc<VaultSlot> {
        let mut map = self.vaults.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= VAULT_CACHE && !map.contains_key(&vault) {
            map.retain(|_, s| Arc::strong_count(s) > 1);
        }
        map.entry(vault)
            .or_insert_with(|| Arc::new(VaultSlot::new(None)))
            .clone()
    }

    /// Drops a vault's slot if nobody is using it (requests for vaults that
    /// do not exist must not push real vaults out of the cache).
    pub fn forget(&self, vault: VaultId) {
        let mut map = self.vaults.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&vault).is_some_and(|s| Arc::strong_count(s) == 1) {
            map.remove(&vault);
        }
    }

    /// Loads a vault's state from storage, verifying its log.
    pub async fn load(&self, vault: VaultId) -> ApiResult<VaultState> {
        let Some(head) = self
            .meta
            .head(vault)
            .await
            .map_err(|e| ApiError::internal("reading a vault head", e))?
        else {
            return Err(vault_not_found());
        };
        let raw = self
            .meta
            .entries(vault, 0, u64::MAX)
            .await
            .map_err(|e| ApiError::internal("reading a vault log", e))?;
        let entries = raw
            .iter()
            .map(|b| LogEntry::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::internal("a stored entry does not parse", e))?;
        // Stored entries were verified when appended; the chain is
        // re-checked up to the stored head, signatures are not.
        let trusted = vault_core::Checkpoint {
            vault,
            seq: head.seq,
            head: head.hash,
        };
        VaultState::verify_log_from(entries.iter(), Some(&trusted))
            .map_err(|e| ApiError::internal("a stored vault log does not verify", e))
    }

    /// A vault's verified state, loaded from storage if needed, locked for
    /// writing (`404` if there is no such vault; its slot is then dropped,
    /// so requests for absent vaults do not push real ones out of the cache).
    pub async fn write_state(&self, vault: VaultId) -> ApiResult<StateWrite> {
        let mut guard = self.slot(vault).write_owned().await;
        if guard.is_none() {
            match self.load(vault).await {
                Ok(state) => *guard = Some(state),
                Err(e) => {
                    drop(guard);
                    self.forget(vault);
                    return Err(e);
                }
            }
        }
        Ok(guard)
    }

    /// [`AppState::write_state`], locked for reading.
    pub async fn read_state(&self, vault: VaultId) -> ApiResult<StateRead> {
        let guard = self.slot(vault).read_owned().await;
        if guard.is_some() {
            return Ok(guard);
        }
        drop(guard);
        Ok(self.write_state(vault).await?.downgrade())
    }

    /// The caller's access to a vault, now (`404` if there is no such
    /// vault, `403` if the caller is not a member).
    pub async fn member_access(&self, vault: VaultId, who: &Fingerprint) -> ApiResult<Access> {
        let guard = self.read_state(vault).await?;
        check_member(
            guard
                .as_ref()
                .map(|s| s.access(who, unix_now()))
                .unwrap_or_default(),
        )
    }
}

fn check_member(access: Access) -> ApiResult<Access> {
    if access.is_member() {
        Ok(access)
    } else {
        Err(ApiError::forbidden(
            "you are not a member of this vault (or your access was revoked or expired)",
        ))
    }
}

/// 404 `vault_not_found`.
pub fn vault_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "vault_not_found",
        "no vault with this id is stored on this relay",
    )
}
