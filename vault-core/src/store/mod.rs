//! The local store: what a device keeps so records stay readable offline and
//! so that rollback is detectable (brief §7).
//!
//! A store holds, per vault, the verified log and the highest verified head;
//! a content-addressed ciphertext cache; pinned fingerprints; and sync
//! cursors. [`MemoryStore`] keeps them in memory; `SqliteStore` (feature
//! `sqlite`, native only) keeps them in one SQLite file.
//!
//! Stores check what they are given: entries must chain onto the stored
//! head, blobs must hash to their address, a pin never silently changes.

use std::io::Read;

pub use crate::address::AddressKind;
use crate::error::{Error, Result};
use crate::identity::{Fingerprint, PublicIdentity};
use crate::ids::VaultId;
use crate::log::{Checkpoint, LogEntry};
use crate::primitives;
use crate::vault::VaultState;

mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// Persistent client-side state. Every method is atomic: on error nothing
/// changed.
pub trait Store {
    /// Appends entries (already verified by a [`VaultState`]) to a vault's
    /// log and advances its persisted head to the last of them. The first
    /// entry must follow the stored head (or be genesis for a new vault).
    fn append_entries(&mut self, vault: &VaultId, entries: &[LogEntry]) -> Result<()>;

    /// Replaces stored entries by other forms of the same entries: each of
    /// `entries` must have the sequence number and the hash of a stored
    /// entry, and replaces it (a whole entry for one a relay served
    /// redacted before, `docs/format.md` §8.8). The head does not move.
    fn reveal_entries(&mut self, vault: &VaultId, entries: &[LogEntry]) -> Result<()>;

    /// The stored entries of a vault with sequence numbers `>= since`, in
    /// order.
    fn entries(&self, vault: &VaultId, since: u64) -> Result<Vec<LogEntry>>;

    /// The highest head verified for a vault, if any.
    fn head(&self, vault: &VaultId) -> Result<Option<Checkpoint>>;

    /// Vaults with a stored log.
    fn vaults(&self) -> Result<Vec<VaultId>>;

    /// Stores a blob under its content address `hash`, reading exactly
    /// `len` bytes from `data`; refuses ([`Error::CiphertextMismatch`])
    /// bytes that do not hash to `hash` under `kind` (the record
    /// metadata's [`crate::RecordMetadata::address_kind`]). Storing a blob
    /// already present is a no-op.
    fn put_blob(
        &mut self,
        hash: &[u8; 32],
        kind: AddressKind,
        len: u64,
        data: &mut dyn Read,
    ) -> Result<()>;

    /// Whether a writer uploading a ciphertext of `len` bytes should first
    /// keep a copy here (so opening it later needs no download, and an
    /// interrupted upload resumes from the copy). Yes by default; a store
    /// in memory may decline large ones.
    fn keeps_uploads(&self, len: u64) -> bool {
        let _ = len;
        true
    }

    /// Stores several complete blobs, each checked against its hash like
    /// [`Store::put_blob`]. Atomic as a whole where the store can make it so
    /// (SQLite keeps small blobs in one transaction: one fsync for a batch
    /// of small records instead of one per record); on error, none of the
    /// blobs that failed verification is stored.
    fn put_blobs(&mut self, blobs: &[([u8; 32], AddressKind, &[u8])]) -> Result<()> {
        for (hash, kind, bytes) in blobs {
            let mut data: &[u8] = bytes;
            self.put_blob(hash, *kind, bytes.len() as u64, &mut data)?;
        }
        Ok(())
    }

    /// Whether a blob is stored (without reading it).
    fn has_blob(&self, hash: &[u8; 32]) -> Result<bool> {
        Ok(self.open_blob(hash)?.is_some())
    }

    /// A reader over a stored blob, or `None`.
    fn open_blob(&self, hash: &[u8; 32]) -> Result<Option<Box<dyn Read + '_>>>;

    /// Deletes a blob (a no-op if it is absent): the ciphertext of a
    /// version its vault's owner purged (`docs/format.md` §8.7).
    fn delete_blob(&mut self, hash: &[u8; 32]) -> Result<()>;

    /// Pins `name` to `fingerprint`, or checks an existing pin: a different
    /// fingerprint is refused with [`Error::PinnedKeyChanged`]. Use
    /// [`Store::repin`] after an explicit, verified key change.
    fn pin(&mut self, name: &str, fingerprint: &Fingerprint) -> Result<()>;

    /// Replaces a pin (only after the user verified the new fingerprint).
    fn repin(&mut self, name: &str, fingerprint: &Fingerprint) -> Result<()>;

    /// The fingerprint pinned for `name`.
    fn pinned(&self, name: &str) -> Result<Option<Fingerprint>>;

    /// All pins, sorted by name.
    fn pins(&self) -> Result<Vec<(String, Fingerprint)>>;

    /// A named sync cursor.
    fn cursor(&self, name: &str) -> Result<Option<u64>>;

    /// Sets a named sync cursor.
    fn set_cursor(&mut self, name: &str, value: u64) -> Result<()>;
}

/// Checks that `entries` continue from `head` (or start a vault at genesis).
pub(crate) fn check_continues(
    head: Option<&Checkpoint>,
    vault: &VaultId,
    entries: &[LogEntry],
) -> Result<()> {
    let mut expected_seq = head.map_or(0, |h| h.seq.saturating_add(1));
    let mut expected_prev = head.map_or([0; 32], |h| h.head);
    for e in entries {
        if e.vault() != *vault {
            return Err(Error::ContextMismatch {
                what: "log entry",
                field: "vault",
            });
        }
        if e.seq() != expected_seq {
            return Err(Error::Store(format!(
                "entry {} does not follow the stored head (expected {expected_seq})",
                e.seq()
            )));
        }
        if !primitives::ct_eq(e.prev(), &expected_prev) {
            return Err(Error::Fork { seq: e.seq() });
        }
        expected_seq = expected_seq.saturating_add(1);
        expected_prev = *e.hash();
    }
    Ok(())
}

/// Reads `len` bytes from `data` in chunks, hashing them under `kind` and
/// handing each chunk to `sink`; fails if the stream is shorter or longer,
/// or if the address differs from `hash`.
pub(crate) fn copy_verified(
    hash: &[u8; 32],
    kind: AddressKind,
    len: u64,
    data: &mut dyn Read,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut hasher = kind.hasher();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = match data.read(chunk) {
            Ok(0) => return Err(Error::CiphertextMismatch),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let got = chunk.get(..n).unwrap_or_default();
        hasher.update(got);
        sink(got)?;
        left -= n as u64;
    }
    let mut extra = [0u8; 1];
    if matches!(data.read(&mut extra), Ok(n) if n > 0) {
        return Err(Error::CiphertextMismatch);
    }
    let got = hasher.finalize();
    if primitives::ct_eq(&got, hash) {
        Ok(())
    } else {
        Err(Error::CiphertextMismatch)
    }
}

/// Loads and re-verifies a vault from a store. Entries up to the persisted
/// head were verified before, so their signatures are not checked again,
/// but the chain must reach exactly that head.
pub fn load_vault(store: &dyn Store, vault: &VaultId) -> Result<VaultState> {
    let head = store.head(vault)?.ok_or(Error::Missing {
        what: format!("vault {vault} in the local store"),
    })?;
    let entries = store.entries(vault, 0)?;
    VaultState::verify_log_from(&entries, Some(&head))
}

/// Verifies entries fetched from a relay against the stored vault and
/// persists them: they must extend the persisted head (a shorter log is a
/// rollback, a different one a fork), and each must verify. Returns the new
/// state. On error the store is unchanged.
pub fn accept_entries(
    store: &mut dyn Store,
    state: &mut VaultState,
    entries: &[LogEntry],
) -> Result<()> {
    if let Some(head) = store.head(&state.vault())? {
        state.check_persisted(&head)?;
    }
    // Signatures are checked together, on every core; if anything fails,
    // the entries are applied again one by one, for the exact error.
    let mut next = state.clone();
    if !next.apply_deferred(entries) {
        next = state.clone();
        for e in entries {
            next.apply(e)?;
        }
    }
    store.append_entries(&state.vault(), entries)?;
    *state = next;
    forget_purged(store, state, entries)
}

/// Deletes from the store the ciphertext of every version that
/// `entries` (already applied to `state` and persisted) purged.
pub fn forget_purged(
    store: &mut dyn Store,
    state: &VaultState,
    entries: &[LogEntry],
) -> Result<()> {
    for e in entries {
        if let crate::log::EntryBody::RecordPurged { record, .. } = e.body() {
            for hash in state.purged_ciphertexts(record) {
                store.delete_blob(&hash)?;
            }
        }
    }
    Ok(())
}

/// Pins a principal on first use, and refuses a changed key afterwards.
pub fn pin_identity(store: &mut dyn Store, name: &str, identity: &PublicIdentity) -> Result<()> {
    store.pin(name, &identity.fingerprint())
}
