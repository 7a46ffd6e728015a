//! [`LinkStore`] for [`MemoryMeta`]: the same semantics as SQLite's, in
//! maps under the store's one lock (so attempts are atomic).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use vault_core::Fingerprint;

use super::MemoryMeta;
use crate::storage::links::{
    AccessEvent, Attempt, CreateLinkOutcome, LinkFile, LinkHash, LinkStore, NewLink, StoredLink,
    Ticket, MAX_ACCESS_EVENTS,
};
use crate::storage::StorageError;

/// The link tables.
#[derive(Default)]
pub(super) struct Links {
    links: HashMap<LinkHash, StoredLink>,
    files: HashMap<LinkHash, Vec<LinkFile>>,
    access: HashMap<LinkHash, BTreeMap<u64, AccessEvent>>,
    next_seq: u64,
    tickets: HashMap<[u8; 32], (LinkHash, u32, u64)>,
}

#[async_trait]
impl LinkStore for MemoryMeta {
    async fn create_link(
        &self,
        link: NewLink,
        quota: u64,
        max_links: usize,
    ) -> Result<CreateLinkOutcome, StorageError> {
        Ok(self.with(|m| {
            if m.links.links.contains_key(&link.hash) {
                return CreateLinkOutcome::Exists;
            }
            let live = m
                .links
                .links
                .values()
                .filter(|l| l.owner == link.owner && l.revoked_at.is_none() && l.files > 0)
                .count();
            if live >= max_links {
                return CreateLinkOutcome::TooMany(max_links);
            }
            let bytes: u64 = link.files.iter().map(|f| f.jwe.len() as u64).sum();
            if !m.charge(&link.owner, bytes, quota) {
                return CreateLinkOutcome::Quota;
            }
            let stored = StoredLink {
                hash: link.hash,
                owner: link.owner,
                created_at: link.created_at,
                expires_at: link.expires_at,
                long_term: link.long_term,
                direct: link.direct,
                passcode: link.passcode,
                max_attempts: link.max_attempts,
                failed_attempts: 0,
                revoked_at: None,
                files: u32::try_from(link.files.len()).unwrap_or(u32::MAX),
                bytes,
                accesses: 0,
            };
            m.links.links.insert(link.hash, stored);
            m.links.files.insert(link.hash, link.files);
            CreateLinkOutcome::Created
        }))
    }

    async fn link(&self, hash: LinkHash) -> Result<Option<StoredLink>, StorageError> {
        Ok(self.with(|m| m.links.links.get(&hash).cloned()))
    }

    async fn link_files(&self, hash: LinkHash) -> Result<Vec<LinkFile>, StorageError> {
        Ok(self.with(|m| m.links.files.get(&hash).cloned().unwrap_or_default()))
    }

    async fn reserve_attempt(&self, hash: LinkHash, now: u64) -> Result<Attempt, StorageError> {
        Ok(self.with(|m| match m.links.links.get_mut(&hash) {
            Some(l) if l.active_at(now) => {
                l.failed_attempts = l.failed_attempts.saturating_add(1);
                Attempt::Reserved {
                    remaining: l.max_attempts.saturating_sub(l.failed_attempts),
                }
            }
            _ => Attempt::Inactive,
        }))
    }

    async fn record_access(
        &self,
        hash: LinkHash,
        event: AccessEvent,
        refund: bool,
        tickets: Vec<Ticket>,
    ) -> Result<(), StorageError> {
        self.with(|m| {
            let now = event.at;
            let Some(l) = m.links.links.get_mut(&hash) else {
                return;
            };
            if refund {
                l.failed_attempts = l.failed_attempts.saturating_sub(1);
            }
            l.accesses = l.accesses.saturating_add(1);
            let seq = m.links.next_seq;
            m.links.next_seq += 1;
            let log = m.links.access.entry(hash).or_default();
            log.insert(seq, event);
            while log.len() > MAX_ACCESS_EVENTS {
                log.pop_first();
            }
            m.links.tickets.retain(|_, t| t.2 > now);
            for t in tickets {
                m.links.tickets.insert(t.hash, (hash, t.file, t.expires_at));
            }
        });
        Ok(())
    }

    async fn ticket(
        &self,
        ticket: [u8; 32],
        now: u64,
    ) -> Result<Option<(LinkHash, u32)>, StorageError> {
        Ok(self.with(|m| {
            m.links
                .tickets
                .get(&ticket)
                .filter(|t| t.2 > now)
                .map(|t| (t.0, t.1))
        }))
    }

    async fn links_of(&self, owner: Fingerprint) -> Result<Vec<StoredLink>, StorageError> {
        Ok(self.with(|m| {
            let mut v: Vec<StoredLink> = m
                .links
                .links
                .values()
                .filter(|l| l.owner == owner)
                .cloned()
                .collect();
            v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.hash.cmp(&b.hash)));
            v
        }))
    }

    async fn access_log(
        &self,
        owner: Fingerprint,
        hash: LinkHash,
    ) -> Result<Option<Vec<AccessEvent>>, StorageError> {
        Ok(self.with(|m| {
            let l = m.links.links.get(&hash).filter(|l| l.owner == owner)?;
            let _ = l;
            Some(
                m.links
                    .access
                    .get(&hash)
                    .map(|log| log.values().cloned().collect())
                    .unwrap_or_default(),
            )
        }))
    }

    async fn revoke_link(
        &self,
        owner: Fingerprint,
        hash: LinkHash,
        now: u64,
    ) -> Result<bool, StorageError> {
        Ok(self.with(|m| {
            let Some(l) = m.links.links.get_mut(&hash).filter(|l| l.owner == owner) else {
                return false;
            };
            if l.revoked_at.is_some() {
                return true;
            }
            l.revoked_at = Some(now);
            let bytes = l.bytes;
            m.links.files.remove(&hash);
            m.links.tickets.retain(|_, t| t.0 != hash);
            m.refund(owner.as_bytes(), bytes);
            true
        }))
    }

    async fn retire_links(&self, now: u64) -> Result<u64, StorageError> {
        Ok(self.with(|m| {
            let gone: Vec<(LinkHash, Fingerprint, u64)> = m
                .links
                .links
                .values_mut()
                .filter(|l| {
                    l.revoked_at.is_none() && l.files > 0 && l.expires_at.is_some_and(|e| e <= now)
                })
                .map(|l| {
                    let charged = l.bytes;
                    l.files = 0;
                    l.bytes = 0;
                    (l.hash, l.owner, charged)
                })
                .collect();
            for (hash, owner, bytes) in &gone {
                m.links.files.remove(hash);
                m.links.tickets.retain(|_, t| t.0 != *hash);
                m.refund(owner.as_bytes(), *bytes);
            }
            gone.len() as u64
        }))
    }
}
