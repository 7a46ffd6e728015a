//! The verified state of a vault: the log replayed under its rules
//! (`docs/format.md` §8.2), and the operations that produce new entries.
//!
//! A [`VaultState`] exists only for a log that verified from genesis (or
//! from a trusted checkpoint): every entry's signature, chain link, author
//! and right to write. Everything a client reads (who is a member, which
//! version of a record is current, which wrapped key opens it) comes from
//! here, never from what a relay says beside the log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::grant::{Grant, GrantScope, Permission, VerifiedGrant};
use crate::identity::{Fingerprint, PublicIdentity, SecretIdentity};
use crate::ids::{CollectionId, RecordId, VaultId};
use crate::keys::{CollectionKey, WrappedDataKey};
use crate::log::{Checkpoint, EntryBody, LogEntry, Rewrap, Rotation};
use crate::record::{self, KeySource, OpenedRecord, RecordInfo, RecordMetadata, VerifiedRecord};

/// The most live records one collection may hold (`docs/format.md` §8.2):
/// with [`MAX_COLLECTION_MEMBERS`], it keeps every rotation of the
/// collection within one entry ([`crate::log::MAX_ROTATION_LEN`]), so the
/// owner can always revoke.
pub const MAX_COLLECTION_RECORDS: usize = 100_000;

/// The most members (the owner included) one collection may have
/// (`docs/format.md` §8.2); see [`MAX_COLLECTION_RECORDS`].
pub const MAX_COLLECTION_MEMBERS: usize = 256;

/// One collection as the log defines it.
#[derive(Clone, Debug)]
struct Collection {
    epoch: u32,
    sealed_name: Vec<u8>,
    /// Grants of the current epoch's key, by member (the owner included).
    grants: BTreeMap<Fingerprint, VerifiedGrant>,
    /// Grants of every earlier epoch (index = epoch), kept so that those
    /// who held an epoch's key can still open the versions sealed under it.
    history: Vec<BTreeMap<Fingerprint, VerifiedGrant>>,
    /// Live (not deleted) records.
    records: BTreeSet<RecordId>,
    /// A version whose key is wrapped under the current epoch was replaced
    /// or deleted since the epoch began: a new member granted this epoch's
    /// key could open it ([`VaultState::needs_rotation_before_grant`]).
    dirty: bool,
}

impl Collection {
    /// The grants of `epoch`, current or past.
    fn grants_of(&self, epoch: u32) -> Option<&BTreeMap<Fingerprint, VerifiedGrant>> {
        if epoch == self.epoch {
            Some(&self.grants)
        } else {
            self.history.get(usize::try_from(epoch).ok()?)
        }
    }
}

/// One record as the log defines it.
#[derive(Clone, Debug)]
struct RecordState {
    collection: CollectionId,
    /// Every version written, in order (index = version - 1), with the
    /// sequence number of its entry; `None` for a tombstone.
    versions: Vec<(Option<RecordMetadata>, u64)>,
    /// The current version's data key, re-wrapped by rotations.
    key_epoch: u32,
    wrapped: Option<WrappedDataKey>,
    /// For replaced versions that a rotation had re-wrapped: the last
    /// re-wrap (its epoch and wrapped key), by version. The members of that
    /// epoch could open the version while it was current and still can.
    last_wraps: BTreeMap<u32, (u32, WrappedDataKey)>,
    /// Versions up to this one were purged (0: none).
    purged_through: u32,
}

impl RecordState {
    fn current_version(&self) -> u32 {
        u32::try_from(self.versions.len()).unwrap_or(u32::MAX)
    }
    fn is_deleted(&self) -> bool {
        matches!(self.versions.last(), Some((None, _)))
    }

    /// The current version stops being current: its key source is kept for
    /// those who held it, and the live wrapped key is cleared.
    fn retire_current(&mut self) {
        let version = self.current_version();
        if let (Some((Some(m), _)), Some(w)) = (self.versions.last(), self.wrapped.take()) {
            if m.epoch() != self.key_epoch {
                self.last_wraps.insert(version, (self.key_epoch, w));
            }
        }
    }

    /// The epoch whose key opens `version` (its last re-wrap, or the epoch
    /// it was written in); `None` for a tombstone or unknown version.
    fn key_epoch_of(&self, version: u32) -> Option<u32> {
        if version == self.current_version() && self.wrapped.is_some() {
            return Some(self.key_epoch);
        }
        if let Some((epoch, _)) = self.last_wraps.get(&version) {
            return Some(*epoch);
        }
        let idx = usize::try_from(version.checked_sub(1)?).ok()?;
        match self.versions.get(idx) {
            Some((Some(m), _)) => Some(m.epoch()),
            _ => None,
        }
    }
}

/// A summary of one collection for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectionSummary {
    /// The collection.
    pub id: CollectionId,
    /// Its current epoch.
    pub epoch: u32,
    /// Number of live records.
    pub records: usize,
    /// Members holding the current key (owner included), with their
    /// permission and expiry.
    pub members: Vec<(Fingerprint, Permission, Option<u64>)>,
}

/// One principal's rights in one collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollectionAccess {
    /// The collection's current epoch (the grant is for it).
    pub epoch: u32,
    /// Read, or read and write.
    pub permission: Permission,
    /// When the grant expires, if it does.
    pub expires_at: Option<u64>,
}

/// What one principal may do in a vault at one time
/// ([`VaultState::access`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// The principal owns the vault (and may do everything).
    pub owner: bool,
    /// Collections it holds a current, unexpired grant for.
    pub collections: BTreeMap<CollectionId, CollectionAccess>,
    /// Records it holds a current, unexpired single-record grant for.
    pub records: BTreeSet<RecordId>,
}

impl Access {
    /// Whether it may read anything in the vault, and so the log.
    pub fn is_member(&self) -> bool {
        self.owner || !self.collections.is_empty() || !self.records.is_empty()
    }

    /// Whether it may append entries at all (the log's rules decide which).
    pub fn may_write(&self) -> bool {
        self.owner || self.collections.values().any(|c| c.permission.may_add())
    }

    /// Whether it may read the ciphertext of `record` in `collection`.
    pub fn may_read(&self, collection: &CollectionId, record: &RecordId) -> bool {
        self.owner || self.collections.contains_key(collection) || self.records.contains(record)
    }
}

/// A record's verified place in the vault, for listings (no decryption).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSummary {
    /// The record.
    pub id: RecordId,
    /// Its collection.
    pub collection: CollectionId,
    /// Its current version.
    pub version: u32,
    /// The author of the current version.
    pub author: Fingerprint,
    /// Sequence number of the entry that wrote it.
    pub seq: u64,
    /// Ciphertext length (what the relay stores).
    pub ciphertext_len: u64,
}

/// A vault's log, verified and replayed.
#[derive(Clone, Debug)]
pub struct VaultState {
    vault: VaultId,
    owner: PublicIdentity,
    hashes: Vec<[u8; 32]>,
    last_time: u64,
    identities: HashMap<Fingerprint, PublicIdentity>,
    collections: BTreeMap<CollectionId, Collection>,
    records: HashMap<RecordId, RecordState>,
    record_grants: HashMap<(RecordId, Fingerprint), VerifiedGrant>,
}

impl VaultState {
    // ----- verification -------------------------------------------------

    /// Starts a state from the genesis entry (sequence 0).
    pub fn from_genesis(entry: &LogEntry) -> Result<Self> {
        let EntryBody::Genesis { owner } = entry.body() else {
            return Err(Error::InvalidEntry {
                seq: entry.seq(),
                reason: "the first entry must be a genesis entry",
            });
        };
        if entry.seq() != 0 || *entry.prev() != [0; 32] {
            return Err(Error::InvalidEntry {
                seq: entry.seq(),
                reason: "genesis must have sequence 0 and no previous hash",
            });
        }
        if entry.author() != owner.fingerprint() {
            return Err(Error::Unauthorized {
                seq: 0,
                author: entry.author(),
                reason: "is not the owner named in the genesis entry",
            });
        }
        entry.verify_signature(owner)?;
        let mut identities = HashMap::new();
        identities.insert(owner.fingerprint(), owner.clone());
        Ok(Self {
            vault: entry.vault(),
            owner: owner.clone(),
            hashes: vec![*entry.hash()],
            last_time: entry.time(),
            identities,
            collections: BTreeMap::new(),
            records: HashMap::new(),
            record_grants: HashMap::new(),
        })
    }

    /// Verifies a whole log from genesis.
    pub fn verify_log<'a>(entries: impl IntoIterator<Item = &'a LogEntry>) -> Result<Self> {
        Self::verify_log_from(entries, None)
    }

    /// Verifies a whole log, trusting the prefix up to `trusted` (a
    /// checkpoint this device verified before): entries up to it are
    /// replayed without re-checking signatures, but the chain must reach
    /// exactly the trusted head, and everything after it is fully verified.
    pub fn verify_log_from<'a>(
        entries: impl IntoIterator<Item = &'a LogEntry>,
        trusted: Option<&Checkpoint>,
    ) -> Result<Self> {
        let mut it = entries.into_iter();
        let genesis = it.next().ok_or(Error::Missing {
            what: "the vault log (no genesis entry)".into(),
        })?;
        let mut state = Self::from_genesis(genesis)?;
        for entry in it {
            let trusted_prefix = trusted.is_some_and(|t| entry.seq() <= t.seq);
            state.apply_inner(entry, !trusted_prefix)?;
        }
        if let Some(t) = trusted {
            state.check_persisted(t)?;
        }
        Ok(state)
    }

    /// Verifies and applies the next entry. Every check runs before any
    /// change, so on error the state is exactly as it was.
    pub fn apply(&mut self, entry: &LogEntry) -> Result<()> {
        self.apply_inner(entry, true)
    }

    fn head_seq(&self) -> u64 {
        (self.hashes.len() as u64).saturating_sub(1)
    }

    fn apply_inner(&mut self, entry: &LogEntry, check_signature: bool) -> Result<()> {
        let seq = entry.seq();
        let next = self.hashes.len() as u64;
        if entry.vault() != self.vault {
            return Err(Error::ContextMismatch {
                what: "log entry",
                field: "vault",
            });
        }
        if seq < next {
            let ours = usize::try_from(seq).ok().and_then(|i| self.hashes.get(i));
            return Err(match ours {
                Some(h) if h == entry.hash() => Error::InvalidEntry {
                    seq,
                    reason: "duplicate of an entry already applied",
                },
                _ => Error::Fork { seq },
            });
        }
        if seq > next {
            return Err(Error::Missing {
                what: format!("vault log entries {next} to {}", seq - 1),
            });
        }
        if Some(entry.prev()) != self.hashes.last() {
            return Err(Error::ChainBroken { seq });
        }
        if entry.time() < self.last_time {
            return Err(Error::InvalidEntry {
                seq,
                reason: "its time is before the previous entry's",
            });
        }
        let author = self
            .identities
            .get(&entry.author())
            .ok_or(Error::Unauthorized {
                seq,
                author: entry.author(),
                reason: "is not the owner or a member of this vault",
            })?
            .clone();
        if check_signature {
            entry.verify_signature(&author)?;
        }
        let is_owner = author.fingerprint() == self.owner.fingerprint();
        let unauthorized = |reason| Error::Unauthorized {
            seq,
            author: entry.author(),
            reason,
        };
        let invalid = |reason| Error::InvalidEntry { seq, reason };

        match entry.body() {
            EntryBody::Genesis { .. } => return Err(invalid("a second genesis entry")),
            EntryBody::CollectionCreated {
                collection,
                sealed_name,
                owner_grant,
            } => {
                if !is_owner {
                    return Err(unauthorized(
                        "is not the owner, so may not create collections",
                    ));
                }
                if self.collections.contains_key(collection) {
                    return Err(invalid("the collection already exists"));
                }
                let grant = self.verify_grant(owner_grant, seq)?;
                if grant.scope()
                    != (GrantScope::Collection {
                        collection: *collection,
                        epoch: 0,
                    })
                    || grant.member() != self.owner.fingerprint()
                    || grant.permission() != Permission::ReadWrite
                    || grant.expires_at().is_some()
                {
                    return Err(invalid("the owner grant does not match the new collection"));
                }
                let mut grants = BTreeMap::new();
                grants.insert(grant.member(), grant);
                self.collections.insert(
                    *collection,
                    Collection {
                        epoch: 0,
                        sealed_name: sealed_name.clone(),
                        grants,
                        history: Vec::new(),
                        records: BTreeSet::new(),
                        dirty: false,
                    },
                );
            }
            EntryBody::RecordPut { metadata } => {
                self.check_record_put(entry, metadata, &author, is_owner)?;
                let coll = self
                    .collections
                    .get_mut(&metadata.collection())
                    .ok_or(invalid("unknown collection"))?;
                if !coll.records.insert(metadata.record()) {
                    coll.dirty = true;
                }
                let rs = self
                    .records
                    .entry(metadata.record())
                    .or_insert(RecordState {
                        collection: metadata.collection(),
                        versions: Vec::new(),
                        key_epoch: metadata.epoch(),
                        wrapped: None,
                        last_wraps: BTreeMap::new(),
                        purged_through: 0,
                    });
                rs.retire_current();
                rs.versions.push((Some(metadata.clone()), seq));
                rs.key_epoch = metadata.epoch();
                rs.wrapped = Some(metadata.wrapped_key.clone());
            }
            EntryBody::RecordDeleted { record, version } => {
                let rs = self.records.get(record).ok_or(invalid("unknown record"))?;
                if rs.is_deleted() {
                    return Err(invalid("the record is already deleted"));
                }
                if *version != rs.current_version().saturating_add(1) {
                    return Err(Error::StaleVersion {
                        current: rs.current_version(),
                        offered: *version,
                    });
                }
                let collection = rs.collection;
                if !is_owner && !self.may_write(&collection, &entry.author(), entry.time()) {
                    return Err(unauthorized(
                        "has no write access to this record's collection",
                    ));
                }
                if let Some(rs) = self.records.get_mut(record) {
                    rs.retire_current();
                    rs.versions.push((None, seq));
                }
                if let Some(c) = self.collections.get_mut(&collection) {
                    c.records.remove(record);
                    c.dirty = true;
                }
            }
            EntryBody::GrantAdded { member, grant } => {
                if !is_owner {
                    return Err(unauthorized("is not the owner, so may not share"));
                }
                if member.fingerprint() != grant.member() {
                    return Err(invalid(
                        "the grant is for another identity than the one attached",
                    ));
                }
                if grant.member() == self.owner.fingerprint() {
                    return Err(invalid(
                        "the owner cannot be granted access to their own vault",
                    ));
                }
                if let Some(known) = self.identities.get(&member.fingerprint()) {
                    if known != member {
                        return Err(invalid("a different document for a known member"));
                    }
                }
                let grant = self.verify_grant(grant, seq)?;
                match grant.scope() {
                    GrantScope::Collection { collection, epoch } => {
                        let coll = self
                            .collections
                            .get_mut(&collection)
                            .ok_or(invalid("grant for an unknown collection"))?;
                        if epoch != coll.epoch {
                            return Err(invalid("grant for a past or future epoch"));
                        }
                        if !coll.grants.contains_key(&grant.member())
                            && coll.grants.len() >= MAX_COLLECTION_MEMBERS
                        {
                            return Err(invalid(
                                "the collection already has the maximum number of members",
                            ));
                        }
                        coll.grants.insert(grant.member(), grant);
                    }
                    GrantScope::Record {
                        collection,
                        record,
                        version,
                    } => {
                        let rs = self
                            .records
                            .get(&record)
                            .ok_or(invalid("grant for an unknown record"))?;
                        if rs.collection != collection
                            || rs.is_deleted()
                            || version != rs.current_version()
                        {
                            return Err(invalid(
                                "record grant does not name the record's current version",
                            ));
                        }
                        self.record_grants.insert((record, grant.member()), grant);
                    }
                }
                self.identities.insert(member.fingerprint(), member.clone());
            }
            EntryBody::Rotation(rotation) => {
                if !is_owner {
                    return Err(unauthorized("is not the owner, so may not rotate keys"));
                }
                self.apply_rotation(rotation, seq)?;
            }
            EntryBody::RecordPurged { record, through } => {
                if !is_owner {
                    return Err(unauthorized("is not the owner, so may not purge"));
                }
                let rs = self
                    .records
                    .get_mut(record)
                    .ok_or(invalid("unknown record"))?;
                if *through <= rs.purged_through {
                    return Err(invalid("those versions are already purged"));
                }
                if *through >= rs.current_version() {
                    return Err(invalid(
                        "a purge must leave the current version (delete the record first)",
                    ));
                }
                rs.purged_through = *through;
                rs.last_wraps.retain(|v, _| *v > *through);
                let through = *through;
                self.record_grants.retain(|(r, _), g| {
                    *r != *record
                        || !matches!(g.scope(), GrantScope::Record { version, .. } if version <= through)
                });
            }
            EntryBody::RecordGrantRevoked { record, member } => {
                if !is_owner {
                    return Err(unauthorized("is not the owner, so may not revoke"));
                }
                if self.record_grants.remove(&(*record, *member)).is_none() {
                    return Err(invalid("no such record grant"));
                }
            }
        }
        self.hashes.push(*entry.hash());
        self.last_time = entry.time();
        Ok(())
    }

    fn verify_grant(&self, grant: &Grant, seq: u64) -> Result<VerifiedGrant> {
        if grant.vault() != self.vault {
            return Err(Error::ContextMismatch {
                what: "grant",
                field: "vault",
            });
        }
        grant.verify(&self.owner).map_err(|_| Error::Unauthorized {
            seq,
            author: grant.member(),
            reason: "holds a grant not signed by the vault owner",
        })
    }

    /// Whether `who` may delete or replace any record of `collection` at
    /// `at` (a read-write grant in force; a read-add grant may not).
    fn may_write(&self, collection: &CollectionId, who: &Fingerprint, at: u64) -> bool {
        self.collections
            .get(collection)
            .and_then(|c| c.grants.get(who))
            .is_some_and(|g| g.permission() == Permission::ReadWrite && g.is_valid_at(at))
    }

    fn check_record_put(
        &self,
        entry: &LogEntry,
        m: &RecordMetadata,
        author: &PublicIdentity,
        is_owner: bool,
    ) -> Result<()> {
        let seq = entry.seq();
        if m.vault() != self.vault {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "vault",
            });
        }
        if m.author() != entry.author() {
            return Err(Error::InvalidEntry {
                seq,
                reason: "record metadata names another author than the entry",
            });
        }
        crate::primitives::verify(
            author.verifying_key(),
            &m.signed_bytes(),
            &m.signature,
            "record metadata",
        )?;
        let coll = self
            .collections
            .get(&m.collection())
            .ok_or(Error::InvalidEntry {
                seq,
                reason: "record in an unknown collection",
            })?;
        if !is_owner {
            let grant = coll
                .grants
                .get(&entry.author())
                .ok_or(Error::Unauthorized {
                    seq,
                    author: entry.author(),
                    reason: "is not a member of this record's collection",
                })?;
            if !grant.permission().may_add() {
                return Err(Error::Unauthorized {
                    seq,
                    author: entry.author(),
                    reason: "is a read-only member of this record's collection",
                });
            }
            if grant.permission() == Permission::Add
                && self
                    .records
                    .get(&m.record())
                    .and_then(|rs| rs.versions.first())
                    .and_then(|(first, _)| first.as_ref())
                    .is_some_and(|first| first.author() != entry.author())
            {
                return Err(Error::Unauthorized {
                    seq,
                    author: entry.author(),
                    reason: "may add records but not replace one someone else created",
                });
            }
            if !grant.is_valid_at(entry.time()) {
                return Err(Error::Unauthorized {
                    seq,
                    author: entry.author(),
                    reason: "wrote after their grant expired",
                });
            }
        }
        if m.epoch() != coll.epoch {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "epoch",
            });
        }
        match self.records.get(&m.record()) {
            None if coll.records.len() >= MAX_COLLECTION_RECORDS => Err(Error::InvalidEntry {
                seq,
                reason: "the collection already holds the maximum number of records",
            }),
            None if m.version() == 1 => Ok(()),
            None => Err(Error::InvalidEntry {
                seq,
                reason: "a new record must start at version 1",
            }),
            Some(rs) if rs.collection != m.collection() => Err(Error::ContextMismatch {
                what: "record metadata",
                field: "collection",
            }),
            Some(rs) if rs.is_deleted() => Err(Error::InvalidEntry {
                seq,
                reason: "the record was deleted",
            }),
            Some(rs) if m.version() != rs.current_version().saturating_add(1) => {
                Err(Error::StaleVersion {
                    current: rs.current_version(),
                    offered: m.version(),
                })
            }
            Some(_) => Ok(()),
        }
    }

    fn apply_rotation(&mut self, r: &Rotation, seq: u64) -> Result<()> {
        let invalid = |reason| Error::InvalidEntry { seq, reason };
        let coll = self
            .collections
            .get(&r.collection)
            .ok_or(invalid("rotation of an unknown collection"))?;
        if r.epoch != coll.epoch.saturating_add(1) {
            return Err(invalid("rotation must move to the next epoch"));
        }
        let owner = self.owner.fingerprint();
        if r.revoked.contains(&owner) {
            return Err(invalid("the owner cannot be revoked"));
        }
        if r.revoked.iter().any(|m| !coll.grants.contains_key(m)) {
            return Err(invalid("revokes someone who is not a member"));
        }
        let remaining: BTreeSet<Fingerprint> = coll
            .grants
            .keys()
            .filter(|m| !r.revoked.contains(m))
            .copied()
            .collect();
        let granted: BTreeSet<Fingerprint> = r.grants.iter().map(Grant::member).collect();
        if remaining != granted || granted.len() != r.grants.len() {
            return Err(invalid(
                "new grants must go to exactly the remaining members",
            ));
        }
        let mut grants = BTreeMap::new();
        for g in &r.grants {
            let g = self.verify_grant(g, seq)?;
            if g.scope()
                != (GrantScope::Collection {
                    collection: r.collection,
                    epoch: r.epoch,
                })
            {
                return Err(invalid("a new grant is not for the new epoch"));
            }
            if g.member() == owner
                && (g.permission() != Permission::ReadWrite || g.expires_at().is_some())
            {
                return Err(invalid(
                    "the owner's new grant must be read-write without expiry",
                ));
            }
            grants.insert(g.member(), g);
        }
        let mut accounted: Vec<RecordId> = r
            .rewraps
            .iter()
            .map(|rw| rw.record)
            .chain(r.dropped.iter().copied())
            .collect();
        accounted.sort_unstable_by_key(|id| *id.as_bytes());
        if accounted.len() != coll.records.len() || !accounted.iter().eq(coll.records.iter()) {
            return Err(invalid(
                "rotation must re-wrap or drop every live record of the collection, each once",
            ));
        }
        for rw in &r.rewraps {
            let current = self
                .records
                .get(&rw.record)
                .map(RecordState::current_version);
            if current != Some(rw.version) {
                return Err(invalid("a re-wrap names a stale record version"));
            }
        }
        for rw in &r.rewraps {
            if let Some(rs) = self.records.get_mut(&rw.record) {
                rs.key_epoch = r.epoch;
                rs.wrapped = Some(rw.wrapped.clone());
            }
        }
        for id in &r.dropped {
            if let Some(rs) = self.records.get_mut(id) {
                rs.retire_current();
                rs.versions.push((None, seq));
            }
        }
        if let Some(coll) = self.collections.get_mut(&r.collection) {
            for id in &r.dropped {
                coll.records.remove(id);
            }
            let previous = std::mem::replace(&mut coll.grants, grants);
            coll.history.push(previous);
            coll.epoch = r.epoch;
            coll.sealed_name = r.sealed_name.clone();
            coll.dirty = false;
        }
        Ok(())
    }

    // ----- freshness ----------------------------------------------------

    /// The current head as a checkpoint.
    pub fn head(&self) -> Checkpoint {
        Checkpoint {
            vault: self.vault,
            seq: self.head_seq(),
            head: self.hashes.last().copied().unwrap_or([0; 32]),
        }
    }

    /// The checkpoint at an earlier sequence number, if the log reaches it.
    pub fn checkpoint_at(&self, seq: u64) -> Option<Checkpoint> {
        let head = *self.hashes.get(usize::try_from(seq).ok()?)?;
        Some(Checkpoint {
            vault: self.vault,
            seq,
            head,
        })
    }

    /// Checks this state against a head this device persisted earlier:
    /// the state must reach it ([`Error::Rollback`] otherwise) and contain
    /// exactly it ([`Error::Fork`] otherwise).
    pub fn check_persisted(&self, persisted: &Checkpoint) -> Result<()> {
        if persisted.vault != self.vault {
            return Err(Error::ContextMismatch {
                what: "checkpoint",
                field: "vault",
            });
        }
        match self.checkpoint_at(persisted.seq) {
            None => Err(Error::Rollback {
                verified: persisted.seq,
                offered: self.head_seq(),
            }),
            Some(c) if crate::primitives::ct_eq(&c.head, &persisted.head) => Ok(()),
            Some(_) => Err(Error::Fork { seq: persisted.seq }),
        }
    }

    /// Checks a relay's claim about its head (sequence number) against this
    /// verified state: a relay whose log is shorter is rolling back.
    pub fn check_remote_head(&self, remote_seq: u64) -> Result<()> {
        if remote_seq < self.head_seq() {
            return Err(Error::Rollback {
                verified: self.head_seq(),
                offered: remote_seq,
            });
        }
        Ok(())
    }

    /// Compares a checkpoint code read out by someone else (see
    /// [`Checkpoint::code`]) with this device's log at the same point.
    pub fn compare_checkpoint_code(&self, code: &str) -> Result<()> {
        let (seq, _) = Checkpoint::parse_code(code)?;
        let ours = self.checkpoint_at(seq).ok_or(Error::CheckpointMismatch {
            reason:
                "the other device has seen entries this device has not: sync, then compare again",
        })?;
        let (_, theirs) = Checkpoint::parse_code(code)?;
        let (_, mine) = Checkpoint::parse_code(&ours.code())?;
        if crate::primitives::ct_eq(theirs.as_bytes(), mine.as_bytes()) {
            Ok(())
        } else {
            Err(Error::CheckpointMismatch {
                reason: "the codes differ at the same entry",
            })
        }
    }

    // ----- reading ------------------------------------------------------

    /// The vault id.
    pub fn vault(&self) -> VaultId {
        self.vault
    }

    /// The owner's identity (compare its fingerprint with the pinned one).
    pub fn owner(&self) -> &PublicIdentity {
        &self.owner
    }

    /// Checks that the owner is the principal the caller pinned.
    pub fn expect_owner(&self, pinned: &Fingerprint) -> Result<()> {
        if self.owner.fingerprint() == *pinned {
            Ok(())
        } else {
            Err(Error::PinnedKeyChanged {
                name: "the vault owner".into(),
                pinned: *pinned,
                presented: self.owner.fingerprint(),
            })
        }
    }

    /// The identity of a member (or the owner) known from the log.
    pub fn identity(&self, fp: &Fingerprint) -> Option<&PublicIdentity> {
        self.identities.get(fp)
    }

    /// Collections, with their members and sizes.
    pub fn collections(&self) -> Vec<CollectionSummary> {
        self.collections
            .iter()
            .map(|(id, c)| CollectionSummary {
                id: *id,
                epoch: c.epoch,
                records: c.records.len(),
                members: c
                    .grants
                    .values()
                    .map(|g| (g.member(), g.permission(), g.expires_at()))
                    .collect(),
            })
            .collect()
    }

    /// Direct single-record grants in force: (record, member, expiry).
    pub fn record_grants(&self) -> Vec<(RecordId, Fingerprint, Option<u64>)> {
        let mut v: Vec<_> = self
            .record_grants
            .iter()
            .map(|((r, m), g)| (*r, *m, g.expires_at()))
            .collect();
        v.sort_by_key(|(r, m, _)| (*r, *m.as_bytes()));
        v
    }

    /// What `who` may do in this vault at time `now`, from the verified log:
    /// the relay's access check (brief P3), and a member's own view of its
    /// rights. Expired grants give nothing; a revoked member holds no grant
    /// of the current epoch, so gets nothing either.
    pub fn access(&self, who: &Fingerprint, now: u64) -> Access {
        let owner = *who == self.owner.fingerprint();
        let collections = self
            .collections
            .iter()
            .filter_map(|(id, c)| {
                let g = c.grants.get(who)?;
                g.is_valid_at(now).then_some((
                    *id,
                    CollectionAccess {
                        epoch: c.epoch,
                        permission: g.permission(),
                        expires_at: g.expires_at(),
                    },
                ))
            })
            .collect();
        let records = self
            .record_grants
            .iter()
            .filter(|((_, m), g)| m == who && g.is_valid_at(now))
            .map(|((r, _), _)| *r)
            .collect();
        Access {
            owner,
            collections,
            records,
        }
    }

    /// Live records of a collection (or of all collections), in id order.
    pub fn records(&self, collection: Option<&CollectionId>) -> Vec<RecordSummary> {
        let mut out: Vec<RecordSummary> = self
            .collections
            .iter()
            .filter(|(id, _)| collection.is_none_or(|c| c == *id))
            .flat_map(|(_, c)| c.records.iter())
            .filter_map(|id| {
                let rs = self.records.get(id)?;
                let (m, seq) = rs.versions.last()?;
                let m = m.as_ref()?;
                Some(RecordSummary {
                    id: *id,
                    collection: rs.collection,
                    version: m.version(),
                    author: m.author(),
                    seq: *seq,
                    ciphertext_len: m.ciphertext_len(),
                })
            })
            .collect();
        out.sort_by_key(|r| r.id);
        out
    }

    /// Whether a new member granted `collection`'s current key could open a
    /// version that was replaced or deleted during this epoch. If so, the
    /// owner's client rotates the key (a rotation that revokes nobody)
    /// before granting it, so deleted and replaced versions stay closed to
    /// those granted later (`docs/format.md` §8.6).
    pub fn needs_rotation_before_grant(&self, collection: &CollectionId) -> bool {
        self.collections.get(collection).is_some_and(|c| c.dirty)
    }

    /// Whether `who` may fetch the ciphertext of `version` of `record` at
    /// `now`: the owner always; a holder of a single-record grant of that
    /// version; a current member of the record's collection if the version
    /// is current, or if it was replaced or deleted while they held the key
    /// of the epoch it was wrapped under. A member granted after a version
    /// was replaced or deleted (after the rotation that precedes such a
    /// grant) may not.
    pub fn may_read_version(
        &self,
        who: &Fingerprint,
        record: &RecordId,
        version: u32,
        now: u64,
    ) -> bool {
        let Some(rs) = self.records.get(record) else {
            return false;
        };
        if version <= rs.purged_through {
            return false;
        }
        if *who == self.owner.fingerprint() {
            return true;
        }
        if let Some(g) = self.record_grants.get(&(*record, *who)) {
            if g.is_valid_at(now)
                && matches!(g.scope(), GrantScope::Record { version: v, .. } if v == version)
            {
                return true;
            }
        }
        let Some(coll) = self.collections.get(&rs.collection) else {
            return false;
        };
        if !coll.grants.get(who).is_some_and(|g| g.is_valid_at(now)) {
            return false;
        }
        rs.key_epoch_of(version)
            .and_then(|epoch| coll.grants_of(epoch))
            .is_some_and(|grants| grants.contains_key(who))
    }

    /// Whether `who` may fetch the blob `ciphertext_hash`, which the log
    /// names as the ciphertext of some version of `record`
    /// ([`Self::may_read_version`] for each such version).
    pub fn may_read_blob(
        &self,
        who: &Fingerprint,
        record: &RecordId,
        ciphertext_hash: &[u8; 32],
        now: u64,
    ) -> bool {
        let Some(rs) = self.records.get(record) else {
            return false;
        };
        rs.versions.iter().any(|(m, _)| {
            m.as_ref().is_some_and(|m| {
                m.ciphertext_hash() == ciphertext_hash
                    && self.may_read_version(who, record, m.version(), now)
            })
        })
    }

    /// The current grant of `member` in `collection`, for tests.
    #[cfg(test)]
    pub(crate) fn collections_grant_for_test(
        &self,
        collection: &CollectionId,
        member: &Fingerprint,
    ) -> Grant {
        self.collections
            .get(collection)
            .and_then(|c| c.grants.get(member))
            .map(|g| (**g).clone())
            .unwrap_or_else(|| panic!("no grant"))
    }

    /// Pads `collection` with placeholder records and members up to the
    /// given counts, to test the limits without writing 100,000 records.
    #[cfg(test)]
    pub(crate) fn fill_collection_for_test(
        &mut self,
        collection: &CollectionId,
        records: usize,
        members: usize,
    ) {
        let owner = self.owner.fingerprint();
        if let Some(c) = self.collections.get_mut(collection) {
            let mut n: u128 = 1 << 100;
            while c.records.len() < records {
                c.records.insert(RecordId::from_bytes(n.to_be_bytes()));
                n += 1;
            }
            let grant = c.grants.get(&owner).cloned();
            let mut m: u8 = 0;
            while let Some(g) = grant.clone().filter(|_| c.grants.len() < members) {
                c.grants.insert(Fingerprint::from_bytes([m; 32]), g);
                m = m.wrapping_add(1);
            }
        }
    }

    /// The current version of a record, verified.
    pub fn record(&self, id: &RecordId) -> Result<VerifiedRecord<'_>> {
        let rs = self.records.get(id).ok_or(Error::Missing {
            what: format!("record {id}"),
        })?;
        match rs.versions.last() {
            Some((Some(m), seq)) => Ok(VerifiedRecord {
                metadata: m,
                key_source: match &rs.wrapped {
                    Some(w) => KeySource::Wrapped {
                        epoch: rs.key_epoch,
                        wrapped: w,
                    },
                    None => {
                        return Err(Error::Missing {
                            what: format!("data key of record {id}"),
                        })
                    }
                },
                seq: *seq,
            }),
            _ => Err(Error::Missing {
                what: format!("record {id} (deleted)"),
            }),
        }
    }

    /// A specific version of a record, verified. A version older than the
    /// current one is opened through a single-record grant for it, or with
    /// the key of the epoch it was last wrapped under while current (the
    /// last rotation's re-wrap, or else the epoch it was written in): those
    /// who held that epoch's key, the owner always, can open it.
    pub fn record_version(&self, id: &RecordId, version: u32) -> Result<VerifiedRecord<'_>> {
        let rs = self.records.get(id).ok_or(Error::Missing {
            what: format!("record {id}"),
        })?;
        if version == rs.current_version() && !rs.is_deleted() {
            return self.record(id);
        }
        if version <= rs.purged_through {
            return Err(Error::Missing {
                what: format!("record {id} version {version} (purged by the owner)"),
            });
        }
        let idx = usize::try_from(version.saturating_sub(1)).unwrap_or(usize::MAX);
        match rs.versions.get(idx) {
            Some((Some(m), seq)) if version > 0 => Ok(VerifiedRecord {
                metadata: m,
                key_source: match rs.last_wraps.get(&version) {
                    Some((epoch, wrapped)) => KeySource::Wrapped {
                        epoch: *epoch,
                        wrapped,
                    },
                    None => KeySource::Wrapped {
                        epoch: m.epoch(),
                        wrapped: &m.wrapped_key,
                    },
                },
                seq: *seq,
            }),
            _ => Err(Error::Missing {
                what: format!("record {id} version {version}"),
            }),
        }
    }

    /// Checks that a record's metadata offered by a relay is the one this
    /// verified log names for that version ([`Error::StaleVersion`] for an
    /// old version offered as current, [`Error::ContextMismatch`] for
    /// metadata moved from elsewhere).
    pub fn check_offered_metadata(&self, offered: &RecordMetadata) -> Result<VerifiedRecord<'_>> {
        if offered.vault() != self.vault {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "vault",
            });
        }
        let current = self.record(&offered.record())?;
        let m = current.metadata();
        if offered.version() < m.version() {
            return Err(Error::StaleVersion {
                current: m.version(),
                offered: offered.version(),
            });
        }
        if offered.collection() != m.collection() {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "collection",
            });
        }
        if offered.epoch() != m.epoch() {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "epoch",
            });
        }
        if offered != m {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "record",
            });
        }
        Ok(current)
    }

    // ----- writing ------------------------------------------------------

    fn next_entry(&self, author: &SecretIdentity, now: u64, body: EntryBody) -> Result<LogEntry> {
        let head = self.head();
        LogEntry::sign(
            author,
            self.vault,
            head.seq.saturating_add(1),
            head.head,
            now.max(self.last_time),
            body,
        )
    }

    /// Re-issues an already sealed record version as a record-put entry on
    /// the current head, for a writer whose append lost a race: the
    /// ciphertext, its signed metadata and the uploaded blob stay valid as
    /// long as nobody wrote another version of the record and the
    /// collection did not rotate in between. Checks exactly what
    /// [`VaultState::apply`] will; on error (for example
    /// [`Error::StaleVersion`], or a [`Error::ContextMismatch`] on the
    /// epoch), seal the record again with [`VaultState::put_record`].
    pub fn record_put_entry(
        &self,
        author: &SecretIdentity,
        metadata: &RecordMetadata,
        now: u64,
    ) -> Result<LogEntry> {
        let entry = self.record_put(author, metadata, now)?;
        let is_owner = author.fingerprint() == self.owner.fingerprint();
        self.check_record_put(&entry, metadata, author.public(), is_owner)?;
        Ok(entry)
    }

    /// [`VaultState::record_put_entry`] followed by [`VaultState::apply`],
    /// checking once: issues a record-put entry for already sealed
    /// `metadata` on the current head and applies it (every check
    /// [`VaultState::apply`] makes, signatures included). On error the
    /// state is unchanged. For writers appending many records in one
    /// batch.
    pub fn issue_record_put(
        &mut self,
        author: &SecretIdentity,
        metadata: &RecordMetadata,
        now: u64,
    ) -> Result<LogEntry> {
        let entry = self.record_put(author, metadata, now)?;
        self.apply(&entry)?;
        Ok(entry)
    }

    /// A record-put entry for `metadata` on the current head (unchecked).
    fn record_put(
        &self,
        author: &SecretIdentity,
        metadata: &RecordMetadata,
        now: u64,
    ) -> Result<LogEntry> {
        self.next_entry(
            author,
            now,
            EntryBody::RecordPut {
                metadata: metadata.clone(),
            },
        )
    }

    fn require_owner(&self, who: &SecretIdentity) -> Result<()> {
        if who.fingerprint() == self.owner.fingerprint() {
            Ok(())
        } else {
            Err(Error::AccessDenied("only the vault owner can do this"))
        }
    }

    /// Creates a new vault owned by `owner`: its state and genesis entry.
    pub fn create(owner: &SecretIdentity, now: u64) -> Result<(Self, LogEntry)> {
        let entry = LogEntry::sign(
            owner,
            VaultId::random(),
            0,
            [0; 32],
            now,
            EntryBody::Genesis {
                owner: owner.public().clone(),
            },
        )?;
        Ok((Self::from_genesis(&entry)?, entry))
    }

    /// An entry creating a collection named `name` (the name is sealed).
    pub fn create_collection(
        &self,
        owner: &SecretIdentity,
        name: &str,
        now: u64,
    ) -> Result<(CollectionId, LogEntry)> {
        self.require_owner(owner)?;
        let collection = CollectionId::random();
        let key = CollectionKey::generate(self.vault, collection, 0);
        let body = EntryBody::CollectionCreated {
            collection,
            sealed_name: key.seal_name(name)?,
            owner_grant: Grant::for_collection(
                owner,
                &key,
                owner.public(),
                Permission::ReadWrite,
                None,
                now,
            )?,
        };
        Ok((collection, self.next_entry(owner, now, body)?))
    }

    /// An entry adding a record (`record: None`) or a new version of one to
    /// `collection`, sealing `body` (exactly `body_len` bytes) into
    /// `ciphertext`. The author must be the owner or a member with write
    /// access; the returned entry is not yet applied.
    #[allow(clippy::too_many_arguments)]
    pub fn put_record<R: Read, W: Write>(
        &self,
        author: &SecretIdentity,
        keyring: &mut Keyring,
        collection: &CollectionId,
        record: Option<RecordId>,
        info: &RecordInfo,
        body: R,
        body_len: u64,
        ciphertext: W,
        now: u64,
    ) -> Result<(RecordMetadata, LogEntry)> {
        let coll = self.collections.get(collection).ok_or(Error::Missing {
            what: format!("collection {collection}"),
        })?;
        let is_owner = author.fingerprint() == self.owner.fingerprint();
        let permission = self
            .collections
            .get(collection)
            .and_then(|c| c.grants.get(&author.fingerprint()))
            .filter(|g| g.is_valid_at(now))
            .map(|g| g.permission());
        if !is_owner && !permission.is_some_and(Permission::may_add) {
            return Err(Error::AccessDenied(
                "you have no write access to this collection",
            ));
        }
        let (record, version) = match record {
            None => (RecordId::random(), 1),
            Some(id) => {
                let rs = self.records.get(&id).ok_or(Error::Missing {
                    what: format!("record {id}"),
                })?;
                if rs.collection != *collection {
                    return Err(Error::InvalidInput("the record is in another collection"));
                }
                if rs.is_deleted() {
                    return Err(Error::InvalidInput("the record was deleted"));
                }
                let first_author = rs
                    .versions
                    .first()
                    .and_then(|(m, _)| m.as_ref())
                    .map(RecordMetadata::author);
                if !is_owner
                    && permission == Some(Permission::Add)
                    && first_author != Some(author.fingerprint())
                {
                    return Err(Error::AccessDenied(
                        "you may add records to this collection, not replace one someone else created",
                    ));
                }
                (id, rs.current_version().saturating_add(1))
            }
        };
        let key = keyring.collection_key(self, collection, coll.epoch)?;
        let metadata = record::seal(
            author, key, record, version, info, body, body_len, ciphertext,
        )?;
        let entry = self.next_entry(
            author,
            now,
            EntryBody::RecordPut {
                metadata: metadata.clone(),
            },
        )?;
        Ok((metadata, entry))
    }

    /// An entry deleting a record.
    pub fn delete_record(
        &self,
        author: &SecretIdentity,
        record: &RecordId,
        now: u64,
    ) -> Result<LogEntry> {
        let rs = self.records.get(record).ok_or(Error::Missing {
            what: format!("record {record}"),
        })?;
        if rs.is_deleted() {
            return Err(Error::InvalidInput("the record is already deleted"));
        }
        if author.fingerprint() != self.owner.fingerprint()
            && !self.may_write(&rs.collection, &author.fingerprint(), now)
        {
            return Err(Error::AccessDenied(
                "you have no write access to this record",
            ));
        }
        let body = EntryBody::RecordDeleted {
            record: *record,
            version: rs.current_version().saturating_add(1),
        };
        self.next_entry(author, now, body)
    }

    /// An entry purging every version of `record` but the current one (all
    /// of them if the record is deleted) for good: relays delete their
    /// ciphertext and nobody, the owner included, can fetch them again.
    /// Owner only.
    pub fn purge_record(
        &self,
        owner: &SecretIdentity,
        record: &RecordId,
        now: u64,
    ) -> Result<LogEntry> {
        self.require_owner(owner)?;
        let rs = self.records.get(record).ok_or(Error::Missing {
            what: format!("record {record}"),
        })?;
        let through = rs.current_version().saturating_sub(1);
        if through <= rs.purged_through {
            return Err(Error::InvalidInput(
                "this record has no earlier versions to purge",
            ));
        }
        self.next_entry(
            owner,
            now,
            EntryBody::RecordPurged {
                record: *record,
                through,
            },
        )
    }

    /// The ciphertext addresses of `record`'s purged versions: what relays
    /// and devices delete once the purge is applied.
    pub fn purged_ciphertexts(&self, record: &RecordId) -> Vec<[u8; 32]> {
        self.records
            .get(record)
            .map(|rs| {
                rs.versions
                    .iter()
                    .take(usize::try_from(rs.purged_through).unwrap_or(usize::MAX))
                    .filter_map(|(m, _)| m.as_ref().map(|m| *m.ciphertext_hash()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An entry sharing a collection with `member` (one grant, whatever the
    /// collection's size).
    #[allow(clippy::too_many_arguments)]
    pub fn share_collection(
        &self,
        owner: &SecretIdentity,
        keyring: &mut Keyring,
        collection: &CollectionId,
        member: &PublicIdentity,
        permission: Permission,
        expires_at: Option<u64>,
        now: u64,
    ) -> Result<LogEntry> {
        self.require_owner(owner)?;
        if member.fingerprint() == owner.fingerprint() {
            return Err(Error::InvalidInput(
                "you already have access to your own vault",
            ));
        }
        let epoch = self
            .collections
            .get(collection)
            .ok_or(Error::Missing {
                what: format!("collection {collection}"),
            })?
            .epoch;
        let key = keyring.collection_key(self, collection, epoch)?;
        let grant = Grant::for_collection(owner, key, member, permission, expires_at, now)?;
        self.next_entry(
            owner,
            now,
            EntryBody::GrantAdded {
                member: member.clone(),
                grant,
            },
        )
    }

    /// An entry sharing one record's current version with `member`
    /// (read-only).
    pub fn share_record(
        &self,
        owner: &SecretIdentity,
        keyring: &mut Keyring,
        record: &RecordId,
        member: &PublicIdentity,
        expires_at: Option<u64>,
        now: u64,
    ) -> Result<LogEntry> {
        self.require_owner(owner)?;
        let verified = self.record(record)?;
        let data_key = keyring.data_key(self, &verified)?;
        let m = verified.metadata();
        let grant = Grant::for_record(
            owner,
            self.vault,
            m.collection(),
            m.record(),
            m.version(),
            &data_key,
            member,
            expires_at,
            now,
        )?;
        self.next_entry(
            owner,
            now,
            EntryBody::GrantAdded {
                member: member.clone(),
                grant,
            },
        )
    }

    /// An entry revoking `members` from a collection: a new epoch, a fresh
    /// key granted to the remaining members, and every live record's data
    /// key re-wrapped (payloads untouched).
    pub fn revoke(
        &self,
        owner: &SecretIdentity,
        keyring: &mut Keyring,
        collection: &CollectionId,
        members: &[Fingerprint],
        now: u64,
    ) -> Result<LogEntry> {
        self.require_owner(owner)?;
        let coll = self.collections.get(collection).ok_or(Error::Missing {
            what: format!("collection {collection}"),
        })?;
        let mut revoked: Vec<Fingerprint> = members.to_vec();
        revoked.sort_by_key(|f| *f.as_bytes());
        revoked.dedup();
        if revoked
            .iter()
            .any(|m| !coll.grants.contains_key(m) || *m == owner.fingerprint())
        {
            return Err(Error::InvalidInput(
                "can only revoke current members other than yourself",
            ));
        }
        let old_epoch = coll.epoch;
        let new_epoch = old_epoch
            .checked_add(1)
            .ok_or(Error::InvalidInput("epoch overflow"))?;
        let old_key = keyring.collection_key(self, collection, old_epoch)?;
        let name = old_key.open_name(&coll.sealed_name)?;
        let new_key = CollectionKey::generate(self.vault, *collection, new_epoch);
        let mut rewraps = Vec::with_capacity(coll.records.len());
        let mut dropped = Vec::new();
        for id in &coll.records {
            let verified = self.record(id)?;
            let version = verified.metadata().version();
            match verified.data_key(old_key) {
                Ok(data_key) => rewraps.push(Rewrap {
                    record: *id,
                    version,
                    wrapped: new_key.wrap(&data_key, id, version),
                }),
                // A key that does not unwrap under the owner's own epoch key
                // was written by a faulty or malicious writer: nobody can
                // open the record, and it must not block the revocation.
                Err(Error::DecryptionFailed) => dropped.push(*id),
                Err(e) => return Err(e),
            }
        }
        let mut grants = Vec::new();
        for (member, g) in &coll.grants {
            if revoked.contains(member) {
                continue;
            }
            let identity = self.identities.get(member).ok_or(Error::Missing {
                what: "a member's identity".into(),
            })?;
            grants.push(Grant::for_collection(
                owner,
                &new_key,
                identity,
                g.permission(),
                g.expires_at(),
                now,
            )?);
        }
        grants.sort_by_key(|g| *g.member().as_bytes());
        let body = EntryBody::Rotation(Rotation {
            collection: *collection,
            epoch: new_epoch,
            revoked,
            sealed_name: new_key.seal_name(&name)?,
            grants,
            rewraps,
            dropped,
        });
        self.next_entry(owner, now, body)
    }

    /// An entry withdrawing a single-record grant.
    pub fn revoke_record_grant(
        &self,
        owner: &SecretIdentity,
        record: &RecordId,
        member: &Fingerprint,
        now: u64,
    ) -> Result<LogEntry> {
        self.require_owner(owner)?;
        if !self.record_grants.contains_key(&(*record, *member)) {
            return Err(Error::InvalidInput("no such record grant"));
        }
        self.next_entry(
            owner,
            now,
            EntryBody::RecordGrantRevoked {
                record: *record,
                member: *member,
            },
        )
    }

    /// The collection's name, decrypted with the caller's key.
    pub fn collection_name(
        &self,
        keyring: &mut Keyring,
        collection: &CollectionId,
    ) -> Result<String> {
        let coll = self.collections.get(collection).ok_or(Error::Missing {
            what: format!("collection {collection}"),
        })?;
        let key = keyring.collection_key(self, collection, coll.epoch)?;
        key.open_name(&coll.sealed_name)
    }
}

/// The keys one principal can unlock in one vault, opened lazily from the
/// verified grants and cached (one age decryption per collection epoch).
pub struct Keyring<'a> {
    me: &'a SecretIdentity,
    now: u64,
    keys: HashMap<(CollectionId, u32), CollectionKey>,
}

impl std::fmt::Debug for Keyring<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("me", &self.me.fingerprint())
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Keyring<'a> {
    /// A keyring for `me`; grants are checked for expiry against `now`
    /// (seconds since the Unix epoch).
    pub fn new(me: &'a SecretIdentity, now: u64) -> Self {
        Self {
            me,
            now,
            keys: HashMap::new(),
        }
    }

    /// The collection key of `epoch`, from this principal's verified grant.
    pub fn collection_key(
        &mut self,
        state: &VaultState,
        collection: &CollectionId,
        epoch: u32,
    ) -> Result<&CollectionKey> {
        use std::collections::hash_map::Entry;
        match self.keys.entry((*collection, epoch)) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(v) => {
                let coll = state.collections.get(collection).ok_or(Error::Missing {
                    what: format!("collection {collection}"),
                })?;
                let grants = coll.grants_of(epoch).ok_or(Error::Missing {
                    what: format!("key epoch {epoch} of collection {collection}"),
                })?;
                let grant = grants.get(&self.me.fingerprint()).ok_or(if epoch == coll.epoch {
                    Error::AccessDenied(
                        "you are not a member of this collection (or your access was revoked)",
                    )
                } else {
                    Error::AccessDenied(
                        "this version was sealed under a key you were never given (it was replaced or deleted before you were granted the collection)",
                    )
                })?;
                if let Some(e) = grant.expires_at().filter(|e| self.now >= *e) {
                    return Err(Error::Expired { expired_at: e });
                }
                Ok(v.insert(grant.open_collection_key(self.me)?))
            }
        }
    }

    /// The data key of a verified record, through a collection grant or a
    /// single-record grant.
    pub(crate) fn data_key(
        &mut self,
        state: &VaultState,
        record: &VerifiedRecord<'_>,
    ) -> Result<crate::keys::DataKey> {
        let m = record.metadata();
        let (epoch, _) = record.wrapped();
        let collection_error = match self.collection_key(state, &m.collection(), epoch) {
            Ok(key) => return record.data_key(key),
            Err(e) => e,
        };
        match state
            .record_grants
            .get(&(m.record(), self.me.fingerprint()))
        {
            Some(g)
                if g.scope()
                    == (GrantScope::Record {
                        collection: m.collection(),
                        record: m.record(),
                        version: m.version(),
                    }) =>
            {
                if let Some(e) = g.expires_at().filter(|e| self.now >= *e) {
                    return Err(Error::Expired { expired_at: e });
                }
                m.check_key(g.open_data_key(self.me)?)
            }
            _ => Err(collection_error),
        }
    }

    /// Checks that this principal can unwrap a verified record's data key,
    /// without decrypting anything else: [`Error::DecryptionFailed`] means
    /// its writer sealed it with a key that does not open (a faulty or
    /// malicious writer's); access errors as for [`Self::open`].
    pub fn check_key(&mut self, state: &VaultState, record: &VerifiedRecord<'_>) -> Result<()> {
        self.data_key(state, record).map(drop)
    }

    /// Opens a verified record: decrypts `ciphertext` to `out` and returns
    /// its inner header (see [`VerifiedRecord`] for the errors).
    pub fn open<R: Read, W: Write>(
        &mut self,
        state: &VaultState,
        record: &VerifiedRecord<'_>,
        ciphertext: R,
        out: W,
    ) -> Result<OpenedRecord> {
        let key = self.data_key(state, record)?;
        record.open_with(&key, ciphertext, out)
    }
}
