//! An in-memory [`Store`] (tests, and the web app before it persists).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use super::{check_continues, copy_verified, AddressKind, Store};
use crate::error::{Error, Result};
use crate::identity::Fingerprint;
use crate::ids::VaultId;
use crate::log::{Checkpoint, LogEntry};

/// A [`Store`] in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    logs: BTreeMap<VaultId, Vec<LogEntry>>,
    blobs: HashMap<[u8; 32], Vec<u8>>,
    pins: BTreeMap<String, Fingerprint>,
    cursors: HashMap<String, u64>,
    /// Largest upload kept ([`Store::keeps_uploads`]); `None`: all.
    upload_limit: Option<u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// This store, declining to keep copies of uploads larger than `limit`
    /// bytes ([`Store::keeps_uploads`]): the web app holds its store in
    /// memory, where a large record's ciphertext would only double what
    /// the upload already holds (it is downloaded again if opened).
    pub fn with_upload_limit(mut self, limit: u64) -> Self {
        self.upload_limit = Some(limit);
        self
    }
}

impl Store for MemoryStore {
    fn append_entries(&mut self, vault: &VaultId, entries: &[LogEntry]) -> Result<()> {
        let head = self.head(vault)?;
        check_continues(head.as_ref(), vault, entries)?;
        self.logs
            .entry(*vault)
            .or_default()
            .extend_from_slice(entries);
        Ok(())
    }

    fn reveal_entries(&mut self, vault: &VaultId, entries: &[LogEntry]) -> Result<()> {
        let log = self.logs.get_mut(vault).ok_or(Error::Missing {
            what: format!("vault {vault} in the local store"),
        })?;
        let mut next = log.clone();
        for e in entries {
            let slot = usize::try_from(e.seq())
                .ok()
                .and_then(|i| next.get_mut(i))
                .filter(|s| s.hash() == e.hash())
                .ok_or(Error::Store(
                    "a revealed entry is not one of the stored entries".into(),
                ))?;
            *slot = e.clone();
        }
        *log = next;
        Ok(())
    }

    fn entries(&self, vault: &VaultId, since: u64) -> Result<Vec<LogEntry>> {
        Ok(self
            .logs
            .get(vault)
            .map(|l| l.iter().filter(|e| e.seq() >= since).cloned().collect())
            .unwrap_or_default())
    }

    fn head(&self, vault: &VaultId) -> Result<Option<Checkpoint>> {
        Ok(self
            .logs
            .get(vault)
            .and_then(|l| l.last())
            .map(|e| Checkpoint {
                vault: *vault,
                seq: e.seq(),
                head: *e.hash(),
            }))
    }

    fn vaults(&self) -> Result<Vec<VaultId>> {
        Ok(self.logs.keys().copied().collect())
    }

    fn delete_blob(&mut self, hash: &[u8; 32]) -> Result<()> {
        self.blobs.remove(hash);
        Ok(())
    }

    fn keeps_uploads(&self, len: u64) -> bool {
        self.upload_limit.is_none_or(|limit| len <= limit)
    }

    fn put_blob(
        &mut self,
        hash: &[u8; 32],
        kind: AddressKind,
        len: u64,
        data: &mut dyn Read,
    ) -> Result<()> {
        if self.blobs.contains_key(hash) {
            return Ok(());
        }
        let mut bytes = Vec::new();
        copy_verified(hash, kind, len, data, |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })?;
        self.blobs.insert(*hash, bytes);
        Ok(())
    }

    fn open_blob(&self, hash: &[u8; 32]) -> Result<Option<Box<dyn Read + '_>>> {
        Ok(self
            .blobs
            .get(hash)
            .map(|b| Box::new(b.as_slice()) as Box<dyn Read>))
    }

    fn pin(&mut self, name: &str, fingerprint: &Fingerprint) -> Result<()> {
        match self.pins.get(name) {
            Some(p) if p == fingerprint => Ok(()),
            Some(p) => Err(Error::PinnedKeyChanged {
                name: name.to_owned(),
                pinned: *p,
                presented: *fingerprint,
            }),
            None => {
                self.pins.insert(name.to_owned(), *fingerprint);
                Ok(())
            }
        }
    }

    fn repin(&mut self, name: &str, fingerprint: &Fingerprint) -> Result<()> {
        self.pins.insert(name.to_owned(), *fingerprint);
        Ok(())
    }

    fn pinned(&self, name: &str) -> Result<Option<Fingerprint>> {
        Ok(self.pins.get(name).copied())
    }

    fn pins(&self) -> Result<Vec<(String, Fingerprint)>> {
        Ok(self.pins.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }

    fn cursor(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.cursors.get(name).copied())
    }

    fn set_cursor(&mut self, name: &str, value: u64) -> Result<()> {
        self.cursors.insert(name.to_owned(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_keeps_every_upload_unless_given_a_limit() {
        let store = MemoryStore::new();
        assert!(store.keeps_uploads(u64::MAX));
        let limited = MemoryStore::new().with_upload_limit(4 << 20);
        assert!(limited.keeps_uploads(4 << 20));
        assert!(!limited.keeps_uploads((4 << 20) + 1));
        // Blobs put explicitly (downloads) are kept whatever their size.
        let mut limited = limited;
        let bytes = vec![3u8; (4 << 20) + 1];
        let hash = crate::primitives::sha256(&[&bytes]);
        limited
            .put_blob(
                &hash,
                AddressKind::Sha256,
                bytes.len() as u64,
                &mut bytes.as_slice(),
            )
            .unwrap();
        assert!(limited.has_blob(&hash).unwrap());
    }
}
