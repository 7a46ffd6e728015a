//! The owner's devices in a vault's log (`docs/format.md` §3.7, §8.11,
//! decision 67): kind 11, devices-listed, carries versions of the owner's
//! device list; a device in the current version writes as the owner; the
//! owner's grants go to the owner's current key generation.
//!
//! Members' device lists are not carried yet: a member is one key, as
//! before, and a kind 11 naming anyone but the owner is refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::devices::{DeviceList, GenerationKeys, ListedDevice};
use crate::error::{Error, Result};
use crate::grant::{GrantKey, GrantTo};
use crate::identity::{Fingerprint, PublicIdentity, SecretIdentity};
use crate::log::{EntryBody, LogEntry, MAX_LISTED_VERSIONS};

use super::apply::Applying;
use super::VaultState;

/// The owner's device list as this log carries it.
#[derive(Clone, Debug)]
pub(super) struct OwnerDevices {
    /// The last version applied: its devices write as the owner.
    current: DeviceList,
    /// The X25519 public key of each generation a version applied here
    /// named, current or prior (0: the owner document's own key).
    generations: BTreeMap<u32, [u8; 32]>,
    /// Every version applied here, oldest first: the chain a device walks
    /// back to reach earlier generations. Shared, so that cloning a state
    /// (or applying the next list) does not copy them.
    versions: Vec<Arc<DeviceList>>,
    /// Every device any version applied here listed, removed ones too (as
    /// the last version naming it lists it): for naming the authors of
    /// earlier entries and the devices the key file may keep, never for
    /// authority.
    ever_listed: BTreeMap<Fingerprint, ListedDevice>,
}

impl VaultState {
    /// The identity document that signs as `fp` here: a member's (or the
    /// owner's root), or a device in the owner's current device list. A
    /// device removed from the list is no longer one.
    pub(super) fn author_document(&self, fp: &Fingerprint) -> Option<&PublicIdentity> {
        self.identities.get(fp).or_else(|| {
            self.owner_devices
                .as_ref()
                .and_then(|d| d.current.device(fp))
                .map(|d| d.document())
        })
    }

    /// The person `fp` signs for: the owner for a device in the owner's
    /// current device list, else `fp` itself.
    pub fn person_of(&self, fp: &Fingerprint) -> Fingerprint {
        match &self.owner_devices {
            Some(d) if d.current.device(fp).is_some() => self.owner.fingerprint(),
            _ => *fp,
        }
    }

    /// The document of a device the owner's lists in this log ever named
    /// (removed ones too), to name the author of what it wrote; never a
    /// member's or an agent's (§8.11 rule 4).
    pub fn listed_device(&self, fp: &Fingerprint) -> Option<&PublicIdentity> {
        self.owner_devices
            .as_ref()?
            .ever_listed
            .get(fp)
            .map(ListedDevice::document)
    }

    /// The current grants (collection, member) that `device` made: the
    /// grant-added entry giving the member its current access was signed
    /// by it (a rotation re-sealing the grant does not count). What a
    /// device of the owner's shared stays when the device is removed
    /// (decision 60: what was done stays), so the owner reviews it.
    pub fn shared_by(&self, device: &Fingerprint) -> Vec<(crate::CollectionId, Fingerprint)> {
        self.collections
            .iter()
            .flat_map(|(id, c)| {
                c.granted_by
                    .iter()
                    .filter(|(m, by)| *by == device && c.grants.contains_key(*m))
                    .map(move |(m, _)| (*id, *m))
            })
            .filter(|(_, m)| *m != self.owner.fingerprint())
            .collect()
    }

    /// Collections whose owner grant is not sealed to the owner's current
    /// key generation: after a device was listed for the first time or
    /// removed, each must be rotated (a rotation revoking nobody) before a
    /// removed device stops holding its key, and before the owner's
    /// devices can read it.
    pub fn collections_to_rekey(&self) -> Vec<crate::CollectionId> {
        let owner = self.owner.fingerprint();
        let current = self.expected_generation(&owner);
        self.collections
            .iter()
            .filter(|(_, c)| {
                c.grants
                    .get(&owner)
                    .is_some_and(|g| g.generation() != current)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether `fp` is the owner or one of the owner's current devices.
    pub fn is_owner(&self, fp: &Fingerprint) -> bool {
        self.person_of(fp) == self.owner.fingerprint()
    }

    /// The owner's device list as the log carries it (the last version
    /// applied), if the owner has listed devices.
    pub fn owner_device_list(&self) -> Option<&DeviceList> {
        self.owner_devices.as_ref().map(|d| &d.current)
    }

    /// The key generation a grant to `member` is sealed to now: the
    /// owner's current generation once the owner has listed devices, else
    /// the member document's own key (generation 0).
    pub(crate) fn grant_to(&self, member: &PublicIdentity) -> GrantTo {
        match self.list_of(&member.fingerprint()) {
            Some(list) => GrantTo {
                member: member.fingerprint(),
                public: *list.enc_public(),
                generation: list.generation(),
            },
            None => GrantTo::document(member),
        }
    }

    /// The current device list of `member`, whose generation grants to it
    /// are sealed to: the owner's, once listed (members' lists are not
    /// carried yet).
    fn list_of(&self, member: &Fingerprint) -> Option<&DeviceList> {
        self.owner_devices
            .as_ref()
            .filter(|_| *member == self.owner.fingerprint())
            .map(|d| &d.current)
    }

    /// Whether a grant signed by `signer` names it (version 3): every
    /// signer but the owner's root (an agent, or a device of the owner's).
    pub(super) fn names_signer(&self, signer: &SecretIdentity) -> bool {
        signer.fingerprint() != self.owner.fingerprint()
    }

    /// The generation a grant to `member` must name at this point of the
    /// log (`docs/format.md` §7.3): the owner's current one, or 0.
    pub(super) fn expected_generation(&self, member: &Fingerprint) -> u32 {
        self.list_of(member).map_or(0, DeviceList::generation)
    }

    /// The owner's key generations `me` opens from the lists this log
    /// carries: a device from the newest version listing it (a removed
    /// device only what it held), the root from the newest version whose
    /// recovery box opens (a thief's device may seal anything there); then
    /// every earlier generation on the chain, walking
    /// back through the versions applied (a version whose history box does
    /// not open is skipped: its holders learn nothing from it).
    pub fn open_generations(&self, me: &SecretIdentity) -> Result<GenerationKeys> {
        let (d, _, mut keys) = self.newest_opened(me)?;
        loop {
            let mut grew = false;
            for v in d.versions.iter().rev() {
                grew |= keys.walk_back(v).unwrap_or(false);
            }
            if !grew {
                return Ok(keys);
            }
        }
    }

    /// The owner's devices, the newest version `me` opens a box of (a
    /// device the one listing it, the root the one whose recovery box
    /// opens; one sealed wrongly by another device, or a thief's recovery
    /// box, is passed over), and the keys it opened from it.
    fn newest_opened(
        &self,
        me: &SecretIdentity,
    ) -> Result<(&OwnerDevices, &DeviceList, GenerationKeys)> {
        let d = self.owner_devices.as_ref().ok_or(Error::AccessDenied(
            "the vault owner has listed no devices, so there are no key generations to open",
        ))?;
        let fp = me.fingerprint();
        let root = fp == self.owner.fingerprint();
        let open = |v: &DeviceList| {
            if root {
                v.open_recovery(me)
            } else {
                v.open(me)
            }
        };
        let mut candidates = d
            .versions
            .iter()
            .rev()
            .filter(|v| root || v.device(&fp).is_some());
        let newest = candidates.next().ok_or(Error::AccessDenied(
            "this device was never in the owner's device list",
        ))?;
        match open(newest) {
            Ok(keys) => Ok((d, newest, keys)),
            Err(e) => candidates
                .find_map(|v| open(v).ok().map(|keys| (d, &**v, keys)))
                .ok_or(e),
        }
    }

    /// Every version of the owner's device list this log carries, oldest
    /// first (none if the owner listed no devices).
    pub fn owner_device_versions(&self) -> impl Iterator<Item = &DeviceList> {
        self.owner_devices
            .iter()
            .flat_map(|d| d.versions.iter().map(|v| &**v))
    }

    /// Every device the owner's lists in this log ever named, removed ones
    /// too, once each, by fingerprint: the devices the key file may keep
    /// when it takes the list back ([`VaultState::recover_devices`]).
    pub fn ever_listed_devices(&self) -> impl Iterator<Item = &ListedDevice> {
        self.owner_devices
            .iter()
            .flat_map(|d| d.ever_listed.values())
    }

    /// The entry by which the owner's key file takes its device list back
    /// (`vault devices recover`, `docs/format.md` §3.7, decision 68), and
    /// the version it carries: built by `root` on the newest version whose
    /// recovery box opens for it (a thief's device may have sealed anything
    /// in later ones), above the serial, generation and issue time of
    /// every version this log carries, listing exactly the devices `keep`
    /// (each one the log's lists ever named; none leaves the key file
    /// acting alone), with a fresh key generation no other device holds.
    /// The collections are re-keyed next, as after a removal.
    pub fn recover_devices(
        &self,
        root: &SecretIdentity,
        keep: &[Fingerprint],
        now: u64,
    ) -> Result<(LogEntry, DeviceList)> {
        if root.fingerprint() != self.owner.fingerprint() {
            return Err(Error::AccessDenied(
                "only the owner's key file takes the device list back: on a device, remove the lost one instead",
            ));
        }
        let (d, base, _) = self.newest_opened(root).map_err(|e| match e {
            Error::AccessDenied(_) => Error::InvalidInput(
                "the owner has listed no devices in this vault: there is no list to take back",
            ),
            e => e,
        })?;
        let mut add = Vec::new();
        for fp in keep {
            let listed = d.ever_listed.get(fp).ok_or_else(|| Error::Missing {
                what: format!("device {fp} in the owner's device lists of this vault"),
            })?;
            if base.device(fp).is_none() {
                add.push(listed.document().clone());
            }
        }
        let remove: Vec<Fingerprint> = base
            .devices()
            .iter()
            .map(|l| l.document().fingerprint())
            .filter(|fp| !keep.contains(fp))
            .collect();
        let seen: Vec<DeviceList> = d.versions.iter().map(|v| (**v).clone()).collect();
        let (list, _) = base.recover(root, &seen, &add, &remove, now)?;
        let entry = self.list_devices(root, std::slice::from_ref(&list), now)?;
        Ok((entry, list))
    }

    /// The key that opens the owner's grants of `generation` for `me`: the
    /// root document's own key for generation 0, which only the root holds
    /// (devices never do, decision 67), else the generation whose public
    /// key this log's lists name, from `keys`.
    pub(crate) fn grant_key(
        &self,
        me: &SecretIdentity,
        keys: Option<&crate::devices::GenerationKeys>,
        generation: u32,
    ) -> Result<GrantKey> {
        let person = self.person_of(&me.fingerprint());
        if person == me.fingerprint() && generation == 0 {
            return GrantKey::document(me);
        }
        let public = if generation == 0 {
            return Err(Error::AccessDenied(
                "this key was sealed to the owner's key file itself (before this device was listed, or shared with the owner as a member): open it with the key file",
            ));
        } else {
            *self
                .owner_devices
                .as_ref()
                .and_then(|d| d.generations.get(&generation))
                .ok_or(Error::AccessDenied(
                    "this grant is sealed to a key generation this vault's log does not name",
                ))?
        };
        let keys = keys.ok_or(Error::AccessDenied(
            "this grant is sealed to a key generation of your device list: open the list first",
        ))?;
        // A generation the log names that `me` does not reach along its
        // chain (a thief's, replaced by the key file's override, decision
        // 68) opens nothing for it (`decryption_failed`), so readers fall
        // back to the key a record was written with.
        Ok(GrantKey::generation(person, keys.age_identity(&public)?))
    }

    /// Kind 11 (`docs/format.md` §8.11): versions of the owner's device
    /// list, written by the owner's root or a device of its current list,
    /// each accepted from the one before (the first one this log carries
    /// must be signed by the root).
    pub(super) fn apply_devices_listed(
        &mut self,
        ctx: &Applying,
        person: &PublicIdentity,
        lists: &[DeviceList],
    ) -> Result<()> {
        if !ctx.is_owner {
            return Err(ctx.unauthorized(
                "is not the owner or one of the owner's devices, so may not list devices",
            ));
        }
        let accepted = self.accept_lists(person, lists).map_err(|e| match e {
            Error::Rollback { .. } | Error::BadSignature { .. } => e,
            Error::InvalidInput(reason) => ctx.invalid(reason),
            _ => ctx.invalid("a device list version is not accepted (docs/format.md §3.7)"),
        })?;
        // A viewer that is now one of the owner's devices is shown the
        // whole log: an entry it accepted redacted was withheld from it.
        let viewer = self.viewer.map(|(v, _)| v);
        if let (Some(v), Some(seq)) = (viewer, self.first_redacted) {
            if accepted.current.device(&v).is_some() {
                return Err(Error::Withheld { seq });
            }
        }
        self.owner_devices = Some(accepted);
        Ok(())
    }

    /// The owner's devices after `lists` (§8.11 rules 2 and 3), without
    /// changing this state.
    fn accept_lists(&self, person: &PublicIdentity, lists: &[DeviceList]) -> Result<OwnerDevices> {
        if person.to_bytes() != self.owner.to_bytes() {
            return Err(Error::InvalidInput(
                "a devices-listed entry lists the owner's devices only, under the owner's identity",
            ));
        }
        if lists.is_empty() || lists.len() > MAX_LISTED_VERSIONS {
            return Err(Error::InvalidInput(
                "a devices-listed entry carries 1 to 64 versions",
            ));
        }
        let mut held = self.owner_devices.clone();
        for list in lists {
            list.accept(&self.owner, held.as_ref().map(|h| &h.current))?;
            if list
                .devices()
                .iter()
                .any(|d| self.identities.contains_key(&d.document().fingerprint()))
            {
                return Err(Error::InvalidInput(
                    "a member or agent of this vault cannot be listed as a device of the owner's",
                ));
            }
            let (mut generations, mut ever_listed, mut versions) = match held {
                Some(h) => (h.generations, h.ever_listed, h.versions),
                None => (
                    BTreeMap::from([(0, *self.owner.x25519_public())]),
                    BTreeMap::new(),
                    Vec::new(),
                ),
            };
            versions.push(Arc::new(list.clone()));
            generations.insert(list.generation(), *list.enc_public());
            for d in list.devices() {
                ever_listed.insert(d.document().fingerprint(), d.clone());
            }
            held = Some(OwnerDevices {
                current: list.clone(),
                generations,
                versions,
                ever_listed,
            });
        }
        held.ok_or(Error::InvalidInput("no device list version"))
    }

    /// An entry carrying `lists` (versions of the owner's device list, in
    /// serial order, each extending or overriding the one before; the
    /// first extending what this log holds, or signed by the root), signed
    /// by `me`: the owner's root or a device of the owner's current list.
    /// The versions are checked as [`VaultState::apply`] will check them.
    pub fn list_devices(
        &self,
        me: &SecretIdentity,
        lists: &[DeviceList],
        now: u64,
    ) -> Result<LogEntry> {
        if !self.is_owner(&me.fingerprint()) {
            return Err(Error::AccessDenied(
                "only the vault owner or one of the owner's devices lists devices",
            ));
        }
        self.accept_lists(&self.owner, lists)?;
        self.next_entry(
            me,
            now,
            EntryBody::DevicesListed {
                person: self.owner.clone(),
                lists: lists.to_vec(),
            },
        )
    }
}
