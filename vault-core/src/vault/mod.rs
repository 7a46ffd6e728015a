//! The verified state of a vault: the log replayed under its rules
//! (`docs/format.md` §8.2), and the operations that produce new entries.
//!
//! A [`VaultState`] exists only for a log that verified from genesis (or
//! from a trusted checkpoint): every entry's signature, chain link, author
//! and right to write. Everything a client reads (who is a member, which
//! version of a record is current, which wrapped key opens it) comes from
//! here, never from what a relay says beside the log.
//!
//! By role: this module holds the state's types; [`apply`](self) the
//! log's rules, one function per entry kind (`apply.rs`); the views a
//! client reads (`views.rs`, with freshness checks); the builders of new
//! entries (`issue.rs`); and the [`Keyring`] (`keyring.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::grant::{Permission, VerifiedGrant};
use crate::identity::{Fingerprint, PublicIdentity};
use crate::ids::{CollectionId, RecordId, VaultId};
use crate::keys::KeySeal;
use crate::log::Relays;
use crate::record::RecordMetadata;

mod agents;
mod apply;
mod devices;
mod issue;
mod keyring;
mod views;

pub use agents::AgencySummary;
pub use issue::UNOPENED_NAME;
pub use keyring::Keyring;

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
    /// Who made each current member's grant: the key that signed the
    /// grant-added entry giving the member its access (a device of the
    /// owner's, an agent, or the owner's root). Rotations re-seal grants
    /// without changing it, so a device that rotated is not taken for the
    /// one that shared (decision 68).
    granted_by: BTreeMap<Fingerprint, Fingerprint>,
    /// Grants of every earlier epoch (index = epoch), kept so that those
    /// who held an epoch's key can still open the versions sealed under it.
    history: Vec<BTreeMap<Fingerprint, VerifiedGrant>>,
    /// The name sealed under each earlier epoch's key (index = epoch): an
    /// owner whose key of the current epoch does not open (an agent's
    /// rotation sealed it wrongly) rotates from an earlier one.
    names: Vec<Vec<u8>>,
    /// Live (not deleted) records.
    records: BTreeSet<RecordId>,
    /// A version whose key is wrapped under the current epoch was replaced
    /// or deleted since the epoch began: a new member granted this epoch's
    /// key could open it ([`VaultState::needs_rotation_before_grant`]).
    dirty: bool,
    /// Members removed by a rotation, with the sequence number of the last
    /// rotation that removed them: a relay shows them the collection's
    /// entries whole up to it, redacted after (`docs/format.md` §8.8).
    left: BTreeMap<Fingerprint, u64>,
    /// The first entry of this collection that this reader was shown
    /// redacted (after the reader left it): later whole entries of the
    /// collection cannot be verified without those, so the log must be
    /// verified again from the start ([`crate::Error::ViewChanged`]).
    hidden_since: Option<u64>,
    /// Members' device lists carried in this collection (kind 14,
    /// `docs/format.md` §8.12), by person: a device in the current version
    /// acts for its person here, and grants of this collection to the
    /// person are sealed to its current generation.
    people: BTreeMap<Fingerprint, devices::PersonDevices>,
    /// Everyone who signed an entry of this collection that this reader
    /// applied whole (people and devices): a device that wrote here is
    /// never handed to another member by a claim (§8.12 rule 4).
    signers: std::collections::BTreeSet<Fingerprint>,
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
    wrapped: Option<KeySeal>,
    /// For replaced versions that a rotation had re-wrapped: the last
    /// re-wrap (its epoch and wrapped key), by version. The members of that
    /// epoch could open the version while it was current and still can.
    last_wraps: BTreeMap<u32, (u32, KeySeal)>,
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

/// Which record a new version goes to ([`VaultState::put_record_to`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordTarget {
    /// A new record with this identifier (which must not exist yet): its
    /// version 1.
    New(RecordId),
    /// The next version of this existing record.
    Next(RecordId),
}

impl RecordTarget {
    /// The record this targets.
    pub fn record(&self) -> RecordId {
        match self {
            RecordTarget::New(id) | RecordTarget::Next(id) => *id,
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
    /// Read, read-write, read-add, or deposit (write-only).
    pub permission: Permission,
    /// When the grant expires, if it does.
    pub expires_at: Option<u64>,
    /// The powers it holds as an agent of the owner here, if it is one
    /// (`docs/format.md` §8.10).
    pub agent: Option<crate::agency::Powers>,
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

    /// Whether it may append entries at all (the log's rules decide
    /// which): the owner, a member who may add, or an agent who may share
    /// or name agents.
    pub fn may_write(&self) -> bool {
        self.owner
            || self.collections.values().any(|c| {
                c.permission.may_add() || c.agent.is_some_and(|p| p.shares() || p.names_agents())
            })
    }

    /// Whether it may upload blobs: the owner, or a member who may add
    /// records (an agent who only shares or names agents uploads nothing).
    pub fn may_upload(&self) -> bool {
        self.owner || self.collections.values().any(|c| c.permission.may_add())
    }

    /// Whether it may read the ciphertext of `record` in `collection` (a
    /// write-only depositor may not).
    pub fn may_read(&self, collection: &CollectionId, record: &RecordId) -> bool {
        self.owner
            || self
                .collections
                .get(collection)
                .is_some_and(|c| c.permission.may_read())
            || self.records.contains(record)
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
    /// Whose view of the log this is, and the time it is read at
    /// (`docs/format.md` §8.8): `None` for a relay, which must hold every
    /// entry whole.
    viewer: Option<(Fingerprint, u64)>,
    /// The version of the last entry applied: versions never go down.
    entry_version: u8,
    /// Record versions of collections this reader does not follow, shown
    /// whole because the reader holds a single-record grant for them. Their
    /// author's signature is not checked (the author may be unknown to the
    /// reader); they open only with a grant whose owner-signed key
    /// commitment matches.
    foreign: HashMap<RecordId, BTreeMap<u32, (RecordMetadata, u64)>>,
    /// The relays the owner named last (`docs/format.md` §8.9).
    relays: Option<Relays>,
    /// Agencies named in the log, in force or ended (`docs/format.md`
    /// §8.10).
    agencies: BTreeMap<crate::ids::DelegationId, agents::Agency>,
    /// The owner's device list, once the log carries one
    /// (`docs/format.md` §8.11).
    owner_devices: Option<devices::PersonDevices>,
    /// Every device a member's list in any collection of this log named
    /// (kind 14, `docs/format.md` §8.12): never granted, nor named an
    /// agent, afterwards.
    member_devices: BTreeSet<Fingerprint>,
    /// The first entry this reader accepted redacted: a viewer that turns
    /// out to be a device of the owner's is shown every entry whole, so
    /// such an entry was withheld from it (`docs/format.md` §8.11).
    first_redacted: Option<u64>,
}
