//! The keys one principal can unlock in one vault.

use std::collections::HashMap;
use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::grant::GrantScope;
use crate::identity::SecretIdentity;
use crate::ids::CollectionId;
use crate::keys::CollectionKey;
use crate::record::{OpenedRecord, VerifiedRecord};

use super::*;

/// The keys one principal can unlock in one vault, opened lazily from the
/// verified grants and cached (one age decryption per collection epoch).
///
/// A keyring is also the **author context** of the entries that need keys
/// (`put_record`, `share_collection`, `share_record`, `revoke`): whose key
/// signs them ([`Keyring::identity`]), the keys they hold, and the time they
/// claim ([`Keyring::now`]), so the three can never disagree.
pub struct Keyring<'a> {
    me: &'a SecretIdentity,
    /// The owner's key generations, for a device of the owner's
    /// (`docs/format.md` §3.7): the owner's grants are sealed to them.
    /// Given, or opened from the log's device lists when first needed.
    generations: Option<&'a crate::devices::GenerationKeys>,
    opened: Option<crate::devices::GenerationKeys>,
    /// How many versions of the owner's list the log carried when
    /// `opened` was opened: a keyring outliving a list change opens again.
    opened_versions: usize,
    /// A member's key generations, opened from the member's device lists
    /// in each collection (`docs/format.md` §8.12) when first needed, with
    /// the serial of the current version they were opened at: a keyring
    /// outliving a list change opens again.
    member_generations: HashMap<CollectionId, (u32, crate::devices::GenerationKeys)>,
    now: u64,
    keys: HashMap<(CollectionId, u32), CollectionKey>,
    /// Deposit public keys opened from deposit grants (one age decryption
    /// per collection epoch, however many records are deposited).
    deposits: HashMap<(CollectionId, u32), crate::keys::DepositPublicKey>,
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
            generations: None,
            opened: None,
            opened_versions: 0,
            member_generations: HashMap::new(),
            now,
            keys: HashMap::new(),
            deposits: HashMap::new(),
        }
    }

    /// A keyring for `me`, a device of the vault owner's, holding the
    /// owner's key `generations` it opened from the owner's device list
    /// (`docs/format.md` §3.7): it reads the owner's grants and signs
    /// entries as that device, which the log judges as the owner. A
    /// keyring made with [`Keyring::new`] for a device (or the owner's
    /// root) opens them itself from the log's lists when first needed
    /// ([`VaultState::open_generations`]).
    pub fn for_device(
        me: &'a SecretIdentity,
        generations: &'a crate::devices::GenerationKeys,
        now: u64,
    ) -> Self {
        Self {
            generations: Some(generations),
            ..Self::new(me, now)
        }
    }

    /// The principal whose keys these are, and who signs the entries
    /// issued with this keyring.
    pub fn identity(&self) -> &'a SecretIdentity {
        self.me
    }

    /// The time this keyring checks grant expiry against, and the time
    /// entries issued with it claim (seconds since the Unix epoch).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The collection key of `epoch`, from this principal's verified grant.
    pub fn collection_key(
        &mut self,
        state: &VaultState,
        collection: &CollectionId,
        epoch: u32,
    ) -> Result<&CollectionKey> {
        let slot = (*collection, epoch);
        if !self.keys.contains_key(&slot) {
            let coll = state.collections.get(collection).ok_or(Error::Missing {
                what: format!("collection {collection}"),
            })?;
            let grants = coll.grants_of(epoch).ok_or(Error::Missing {
                what: format!("key epoch {epoch} of collection {collection}"),
            })?;
            let person = state.person_in(&self.me.fingerprint(), Some(collection));
            let grant = grants.get(&person).ok_or(if epoch == coll.epoch {
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
            let key = self.grant_key(state, collection, grant.generation())?;
            let opened = grant.open_collection_key_as(&key)?;
            self.keys.insert(slot, opened);
        }
        self.keys.get(&slot).ok_or(Error::Missing {
            what: format!("key epoch {epoch} of collection {collection}"),
        })
    }

    /// The key that opens a grant of `collection` to this keyring's
    /// person of `generation`, opening the person's key generations from
    /// the log first if they are needed and were not given.
    fn grant_key(
        &mut self,
        state: &VaultState,
        collection: &CollectionId,
        generation: u32,
    ) -> Result<crate::grant::GrantKey> {
        let me = self.me;
        let person = state.person_in(&me.fingerprint(), Some(collection));
        let keys = if generation == 0 && person == me.fingerprint() {
            None
        } else if state.is_owner(&person) {
            Some(self.owner_generations(state)?)
        } else {
            Some(self.member_generations(state, collection, &person)?)
        };
        state.grant_key(me, keys, collection, generation)
    }

    /// The key generations of `member` (this keyring's person) that its
    /// lists in `collection` give this keyring: opened when first needed,
    /// and again once the collection carries a newer version.
    fn member_generations(
        &mut self,
        state: &VaultState,
        collection: &CollectionId,
        member: &crate::Fingerprint,
    ) -> Result<&crate::devices::GenerationKeys> {
        let serial = state
            .member_device_list(collection, member)
            .map(crate::devices::DeviceList::serial)
            .ok_or(Error::AccessDenied(
                "this grant is sealed to a key generation of your device list, which this collection does not carry",
            ))?;
        let stale = self
            .member_generations
            .get(collection)
            .is_none_or(|(at, _)| *at != serial);
        if stale {
            let keys = state.open_member_generations(self.me, collection, member)?;
            self.member_generations.insert(*collection, (serial, keys));
        }
        self.member_generations
            .get(collection)
            .map(|(_, keys)| keys)
            .ok_or(Error::AccessDenied(
                "your keys do not open your device list in this collection",
            ))
    }

    /// The owner's key generations this keyring holds: given, or opened
    /// from the log's device lists (again whenever the log carries another
    /// version than when they were opened, so a keyring outliving a list
    /// change never takes a generation it has not opened yet for one it
    /// cannot reach).
    fn owner_generations(&mut self, state: &VaultState) -> Result<&crate::devices::GenerationKeys> {
        if let Some(given) = self.generations {
            return Ok(given);
        }
        let versions = state.owner_device_versions().count();
        if self.opened.is_none() || self.opened_versions != versions {
            self.opened = Some(state.open_generations(self.me)?);
            self.opened_versions = versions;
        }
        self.opened.as_ref().ok_or(Error::AccessDenied(
            "the vault owner has listed no devices, so there are no key generations to open",
        ))
    }

    /// Checks that this keyring, the owner's root or one of the owner's
    /// devices, holds the generation of the owner's current device list.
    /// One that does not (the key file, when a thief's device hid its
    /// generation from the recovery box; a device whose box another sealed
    /// wrongly) must not rotate: it would drop every record sealed under
    /// that generation (decision 68). Nothing to check for anyone else, or
    /// before the owner lists devices.
    pub(crate) fn check_current_generation(&mut self, state: &VaultState) -> Result<()> {
        let Some(current) = state.owner_device_list() else {
            return Ok(());
        };
        if !state.is_owner(&self.me.fingerprint()) {
            return Ok(());
        }
        self.owner_generations(state)
            .and_then(|keys| keys.check_against(current))
            .map_err(|_| {
                Error::AccessDenied(
                    "your keys do not open your current device list (a device may have changed it without you): take the list back with your key file (`vault devices recover`) first",
                )
            })
    }

    /// The public deposit key of `collection`'s current epoch, from this
    /// principal's verified deposit grant (`docs/format.md` §5.5): what a
    /// write-only depositor seals new records to.
    pub fn deposit_key(
        &mut self,
        state: &VaultState,
        collection: &CollectionId,
    ) -> Result<crate::keys::DepositPublicKey> {
        let coll = state.collections.get(collection).ok_or(Error::Missing {
            what: format!("collection {collection}"),
        })?;
        let grant = coll
            .grants
            .get(&self.me.fingerprint())
            .ok_or(Error::AccessDenied(
                "you are not a member of this collection (or your access was revoked)",
            ))?;
        if let Some(e) = grant.expires_at().filter(|e| self.now >= *e) {
            return Err(Error::Expired { expired_at: e });
        }
        use std::collections::hash_map::Entry;
        match self.deposits.entry((*collection, coll.epoch)) {
            Entry::Occupied(e) => Ok(e.get().clone()),
            Entry::Vacant(v) => Ok(v.insert(grant.open_deposit_key(self.me)?).clone()),
        }
    }

    /// The data key of a verified record, through a collection grant or a
    /// single-record grant. Where the wrap a rotation made does not open
    /// (the rotation's key withheld from this reader, or the re-wrap
    /// itself wrong: a malicious agent's rotation, decision 65), the wrap
    /// the record was written with opens it for a current member who holds
    /// the key of the epoch it was written in.
    pub(crate) fn data_key(
        &mut self,
        state: &VaultState,
        record: &VerifiedRecord<'_>,
    ) -> Result<crate::keys::DataKey> {
        let m = record.metadata();
        let (epoch, _) = record.wrapped();
        let current = self
            .collection_key(state, &m.collection(), epoch)
            .and_then(|key| record.data_key(key));
        let collection_error = match current {
            Ok(key) => return Ok(key),
            Err(e) => e,
        };
        // Only a reader whose key or re-wrap does not open falls back, never
        // one who holds no grant of the current epoch (a revoked member).
        if epoch != m.epoch() && matches!(collection_error, Error::DecryptionFailed) {
            let original = self
                .collection_key(state, &m.collection(), m.epoch())
                .and_then(|key| {
                    m.check_key(key.open_seal(&m.wrapped_key, &m.record(), m.version())?)
                });
            if let Ok(key) = original {
                return Ok(key);
            }
        }
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
                m.check_key(g.open_data_key(&crate::grant::GrantKey::document(self.me)?)?)
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
        self.open_job(state, record)?.open(ciphertext, out)
    }

    /// What [`Self::open`] does before it reads the ciphertext: unwraps the
    /// data key (access errors as for [`Self::open`]) and derives the
    /// opening of this one version's payload, for a worker that holds no
    /// other secret (the web app's).
    pub fn open_job(
        &mut self,
        state: &VaultState,
        record: &VerifiedRecord<'_>,
    ) -> Result<crate::OpenJob> {
        let key = self.data_key(state, record)?;
        Ok(record.open_job(&key))
    }
}
