//! What one unlocked session works with: the identity, the relay client and
//! the verified local store, and the parsers of ids the page sends. The
//! `Session` class (`session`) owns it; the operations (`records`,
//! `sharing`) borrow it, so neither depends on the class.

use std::sync::Arc;

use vault_client::RelayClient;
use vault_core::store::MemoryStore;
use vault_core::{CollectionId, RecordId, SecretIdentity, VaultId};

use crate::failure::{Failure, Result};

/// What a session holds: the unlocked identity, the relay client and the
/// verified local store (in memory; the page persists [`crate::Session::snapshot`]).
pub(crate) struct Inner {
    pub secret: Arc<SecretIdentity>,
    pub client: RelayClient,
    pub store: MemoryStore,
    /// The passphrase-sealed key file, as unlocked (exports carry a copy).
    pub key_file: Vec<u8>,
    pub(crate) published: bool,
}

impl Inner {
    /// Publishes this identity on the relay once per session (signed
    /// requests from an identity the relay does not know are refused).
    pub async fn publish(&mut self) -> Result<()> {
        if !self.published {
            self.client.publish_identity().await?;
            self.published = true;
        }
        Ok(())
    }
}

/// Parses a vault id from the page.
pub(crate) fn vault_id(s: &str) -> Result<VaultId> {
    VaultId::from_hex(s).map_err(|_| Failure::input(format!("{s:?} is not a vault id")))
}

/// Parses a collection id from the page.
pub(crate) fn collection_id(s: &str) -> Result<CollectionId> {
    CollectionId::from_hex(s).map_err(|_| Failure::input(format!("{s:?} is not a collection id")))
}

/// Parses a record id from the page.
pub(crate) fn record_id(s: &str) -> Result<RecordId> {
    RecordId::from_hex(s).map_err(|_| Failure::input(format!("{s:?} is not a record id")))
}
