//! People's devices in a vault's log (`docs/format.md` §3.7, §8.11,
//! §8.12, decisions 67 and 70): kind 11, devices-listed, carries versions
//! of the owner's device list, and kind 14, member-devices-listed, a
//! member's in one collection; a device in a current version writes as
//! its person (the owner's everywhere, a member's in that collection); a
//! person's grants go to its current key generation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::devices::{DeviceList, GenerationKeys, ListedDevice};
use crate::error::{Error, Result};
use crate::grant::{GrantKey, GrantTo};
use crate::identity::{Fingerprint, PublicIdentity, SecretIdentity};
use crate::log::{EntryBody, LogEntry, MAX_LISTED_VERSIONS};

use super::apply::Applying;
use super::VaultState;

/// A person's device list as this log carries it: the owner's (kind 11)
/// or a member's in one collection (kind 14).
#[derive(Clone, Debug)]
pub(super) struct PersonDevices {
    /// The last version applied: its devices write as the person.
    current: DeviceList,
    /// The X25519 public key of each generation a version applied here
    /// named, current or prior (0: the person document's own key).
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
    /// The devices that signed a version applied here: each signature is
    /// the device's own consent to act for the person (its **claim**,
    /// §8.12 rule 4), which nobody else can give for it.
    claimed: BTreeSet<Fingerprint>,
}

impl PersonDevices {
    /// The person's key generations `me` opens from these lists: a device
    /// from the newest version listing it (a removed device only what it
    /// held), the person's root from the newest version whose recovery box
    /// opens (a thief's device may seal anything there); then every
    /// earlier generation on the chain, walking back through the versions
    /// applied (a version whose history box does not open is skipped: its
    /// holders learn nothing from it).
    fn open_generations(
        &self,
        person: &Fingerprint,
        me: &SecretIdentity,
    ) -> Result<GenerationKeys> {
        let (_, mut keys) = self.newest_opened(person, me)?;
        loop {
            let mut grew = false;
            for v in self.versions.iter().rev() {
                grew |= keys.walk_back(v).unwrap_or(false);
            }
            if !grew {
                return Ok(keys);
            }
        }
    }

    /// The newest version `me` opens a box of (a device the one listing
    /// it, the root the one whose recovery box opens; one sealed wrongly by
    /// another device, or a thief's recovery box, is passed over), and the
    /// keys it opened from it.
    fn newest_opened(
        &self,
        person: &Fingerprint,
        me: &SecretIdentity,
    ) -> Result<(&DeviceList, GenerationKeys)> {
        let fp = me.fingerprint();
        let root = fp == *person;
        let open = |v: &DeviceList| {
            if root {
                v.open_recovery(me)
            } else {
                v.open(me)
            }
        };
        let mut candidates = self
            .versions
            .iter()
            .rev()
            .filter(|v| root || v.device(&fp).is_some());
        let newest = candidates.next().ok_or(Error::AccessDenied(
            "this device was never in the person's device list",
        ))?;
        match open(newest) {
            Ok(keys) => Ok((newest, keys)),
            Err(e) => candidates
                .find_map(|v| open(v).ok().map(|keys| (&**v, keys)))
                .ok_or(e),
        }
    }

    /// These lists after `lists` (§3.7 acceptance, each version given the
    /// one before), `held` being what the log carried before them. Each
    /// device the person's lists name here for the first time, or that
    /// claims the person for the first time (signed one of these
    /// versions), is judged by `conflict`, given its [`Naming`]: a
    /// reason to refuse the entry, or none. A device listed
    /// before is not judged again for being carried, so a version naming
    /// it is never refused for a claim made since by someone else (the
    /// claim decides whom it acts for).
    fn accept(
        held: Option<&PersonDevices>,
        person: &PublicIdentity,
        lists: &[DeviceList],
        conflict: impl Fn(&Fingerprint, Naming) -> Option<&'static str>,
    ) -> Result<PersonDevices> {
        if lists.is_empty() || lists.len() > MAX_LISTED_VERSIONS {
            return Err(Error::InvalidInput(
                "a devices-listed entry carries 1 to 64 versions",
            ));
        }
        let before = held;
        let mut held = held.cloned();
        for list in lists {
            list.accept(person, held.as_ref().map(|h| &h.current))?;
            let (mut generations, mut ever_listed, mut versions, mut claimed) = match held {
                Some(h) => (h.generations, h.ever_listed, h.versions, h.claimed),
                None => (
                    BTreeMap::from([(0, *person.x25519_public())]),
                    BTreeMap::new(),
                    Vec::new(),
                    BTreeSet::new(),
                ),
            };
            versions.push(Arc::new(list.clone()));
            generations.insert(list.generation(), *list.enc_public());
            for d in list.devices() {
                ever_listed.insert(d.document().fingerprint(), d.clone());
            }
            // The person's root signs as the person; a device signs only
            // a version extending one that lists it (§3.7 rule 2).
            if list.signer() != person.fingerprint() {
                claimed.insert(list.signer());
            }
            held = Some(PersonDevices {
                current: list.clone(),
                generations,
                versions,
                ever_listed,
                claimed,
            });
        }
        let accepted = held.ok_or(Error::InvalidInput("no device list version"))?;
        let listed_before =
            |fp: &Fingerprint| before.is_some_and(|b| b.ever_listed.contains_key(fp));
        let claimed_before = |fp: &Fingerprint| before.is_some_and(|b| b.claimed.contains(fp));
        let newly_listed = accepted.ever_listed.keys().filter(|fp| !listed_before(fp));
        let newly_claimed = accepted.claimed.iter().filter(|fp| !claimed_before(fp));
        if let Some(reason) = newly_listed.chain(newly_claimed).find_map(|fp| {
            let naming = Naming {
                claims: accepted.claimed.contains(fp),
                listed_before: listed_before(fp),
            };
            conflict(fp, naming)
        }) {
            return Err(Error::InvalidInput(reason));
        }
        Ok(accepted)
    }
}

/// What [`PersonDevices::accept`] tells its conflict check of a device
/// the person's lists name for the first time, or that claims the person
/// for the first time.
#[derive(Clone, Copy)]
struct Naming {
    /// The device signed one of the person's versions held here (its
    /// claim, §8.12 rule 4).
    claims: bool,
    /// The person's lists here named the device before these versions.
    listed_before: bool,
}

/// Why a member's list may not name (or be claimed by) a device another
/// member's lists in the collection named.
const ANOTHER_MEMBERS: &str = "a device acts for one person: another member listed it in this collection first (a device's own signature on its person's list outranks a listing it did not sign, unless it wrote there or signed the other's: pair the device, or run `vault devices confirm` on it, then carry the list from the person's key file)";

/// The member `device` is a device of in `collection`: the one whose list
/// it signed there (its own claim, §8.12 rule 4), else the one whose lists
/// there named it (at most one of each: a later listing by another member
/// is refused unless the device claims that member, and a second claim is
/// refused), with its lists. A device its claimed member removed acts for
/// nobody there, whoever else still names it.
fn member_of_device<'a>(
    collection: &'a super::Collection,
    device: &Fingerprint,
) -> Option<(&'a Fingerprint, &'a PersonDevices)> {
    let people = &collection.people;
    people
        .iter()
        .find(|(_, p)| p.claimed.contains(device))
        .or_else(|| {
            people
                .iter()
                .find(|(_, p)| p.ever_listed.contains_key(device))
        })
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

    /// The identity document that signs as `fp` in `collection`: as
    /// [`Self::author_document`], or a device in the current list a member
    /// has there (kind 14): a member's device acts for it only in the
    /// collections that carry its list.
    pub(super) fn author_document_in(
        &self,
        fp: &Fingerprint,
        collection: Option<&crate::CollectionId>,
    ) -> Option<&PublicIdentity> {
        self.author_document(fp).or_else(|| {
            self.member_acting(self.collections.get(collection?)?, fp)?
                .1
                .current
                .device(fp)
                .map(|d| d.document())
        })
    }

    /// The member `fp` acts for in `collection` now, with its lists: the
    /// one [`member_of_device`] finds, if its current list there names the
    /// device, and never for a device any of the owner's lists named (the
    /// owner's lists take precedence, and a device the owner removed acts
    /// for nobody: a member who listed it first does not get it back).
    fn member_acting<'a>(
        &self,
        collection: &'a super::Collection,
        fp: &Fingerprint,
    ) -> Option<(&'a Fingerprint, &'a PersonDevices)> {
        if self.listed_device(fp).is_some() {
            return None;
        }
        member_of_device(collection, fp).filter(|(_, p)| p.current.device(fp).is_some())
    }

    /// The person `fp` signs for: the owner for a device in the owner's
    /// current device list, else `fp` itself. A member's device acts for
    /// its person only within a collection ([`Self::person_in`]).
    pub fn person_of(&self, fp: &Fingerprint) -> Fingerprint {
        match &self.owner_devices {
            Some(d) if d.current.device(fp).is_some() => self.owner.fingerprint(),
            _ => *fp,
        }
    }

    /// The person `fp` signs for in `collection`: the owner for a device
    /// of the owner's current list, the member for a device of the
    /// member's current list in that collection (kind 14) that no list of
    /// the owner's named (`member_acting`), else `fp`.
    pub fn person_in(
        &self,
        fp: &Fingerprint,
        collection: Option<&crate::CollectionId>,
    ) -> Fingerprint {
        let person = self.person_of(fp);
        if person != *fp {
            return person;
        }
        collection
            .and_then(|c| self.collections.get(c))
            .and_then(|c| self.member_acting(c, fp))
            .map_or(*fp, |(person, _)| *person)
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

    /// The person who wrote as `fp` in `collection`, whenever it did: the
    /// owner for a device any of the owner's lists named, a member for a
    /// device its lists in that collection named (removed ones too), else
    /// `fp`. "Records they created" compares persons.
    pub(super) fn writer_person(
        &self,
        collection: &crate::CollectionId,
        fp: &Fingerprint,
    ) -> Fingerprint {
        if self.listed_device(fp).is_some() {
            return self.owner.fingerprint();
        }
        self.member_device(collection, fp)
            .map_or(*fp, |(person, _)| person)
    }

    /// The document of a device a member's list in `collection` ever named
    /// (removed ones too), and the member it was listed for: to name the
    /// author of what it wrote there, never for authority.
    pub fn member_device(
        &self,
        collection: &crate::CollectionId,
        fp: &Fingerprint,
    ) -> Option<(Fingerprint, &PublicIdentity)> {
        let (person, p) = member_of_device(self.collections.get(collection)?, fp)?;
        Some((*person, p.ever_listed.get(fp)?.document()))
    }

    /// A member's device list as `collection` carries it (the last version
    /// applied), if the member listed devices there.
    pub fn member_device_list(
        &self,
        collection: &crate::CollectionId,
        member: &Fingerprint,
    ) -> Option<&DeviceList> {
        self.collections
            .get(collection)?
            .people
            .get(member)
            .map(|p| &p.current)
    }

    /// The current lists of `member` that the collections of this log
    /// carry (one per collection carrying one): a directory serving an
    /// older version than one of these is rolling the list back.
    pub fn member_lists_carried<'a>(
        &'a self,
        member: &'a Fingerprint,
    ) -> impl Iterator<Item = &'a DeviceList> + 'a {
        self.collections
            .values()
            .filter_map(move |c| c.people.get(member).map(|p| &p.current))
    }

    /// The collections in which `device` is in the current list of a
    /// member's, and that member (`member_acting`: never for a
    /// device the owner's lists named): where it acts for the member (the
    /// CLI finds a device's person by it).
    pub fn member_device_collections(
        &self,
        device: &Fingerprint,
    ) -> Vec<(crate::CollectionId, Fingerprint)> {
        self.collections
            .iter()
            .filter_map(|(id, c)| {
                self.member_acting(c, device)
                    .map(|(person, _)| (*id, *person))
            })
            .collect()
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

    /// Collections with a grant not sealed to its person's current key
    /// generation: the owner's, after the owner listed a device for the
    /// first time or removed one; a member's, after the member's list in
    /// the collection changed generation (a device removed). Each must be
    /// rotated (a rotation revoking nobody) before a removed device stops
    /// holding its key, and before the person's devices can read it.
    pub fn collections_to_rekey(&self) -> Vec<crate::CollectionId> {
        self.collections
            .iter()
            .filter(|(id, c)| {
                c.grants.iter().any(|(m, g)| {
                    // A deposit grant is sealed to the member's document
                    // (generation 0), as the log checks it.
                    let scope = (g.permission() != crate::Permission::Deposit).then_some(*id);
                    g.generation() != self.expected_generation(m, scope)
                })
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

    /// The key generation a grant to `member` of `collection` (`None`: of
    /// one record, or a deposit grant) is sealed to now: the owner's
    /// current generation once the owner has listed devices, a member's
    /// current one in that collection once it listed devices there, else
    /// the member document's own key (generation 0).
    pub(crate) fn grant_to(
        &self,
        member: &PublicIdentity,
        collection: Option<&crate::CollectionId>,
    ) -> GrantTo {
        match self.list_of(&member.fingerprint(), collection) {
            Some(list) => GrantTo {
                member: member.fingerprint(),
                public: *list.enc_public(),
                generation: list.generation(),
            },
            None => GrantTo::document(member),
        }
    }

    /// The device lists of `member` whose generations grants to it of
    /// `collection` are sealed to: the owner's everywhere, once listed; a
    /// member's in that collection only (a grant of one record goes to the
    /// member's document: its reader is not shown the collection's lists).
    fn devices_of(
        &self,
        member: &Fingerprint,
        collection: Option<&crate::CollectionId>,
    ) -> Option<&PersonDevices> {
        if *member == self.owner.fingerprint() {
            return self.owner_devices.as_ref();
        }
        self.collections.get(collection?)?.people.get(member)
    }

    /// The current device list of `member` for grants of `collection`
    /// ([`Self::devices_of`]).
    fn list_of(
        &self,
        member: &Fingerprint,
        collection: Option<&crate::CollectionId>,
    ) -> Option<&DeviceList> {
        self.devices_of(member, collection).map(|d| &d.current)
    }

    /// Whether a grant signed by `signer` names it (version 3): every
    /// signer but the owner's root (an agent, or a device of the owner's).
    pub(super) fn names_signer(&self, signer: &SecretIdentity) -> bool {
        signer.fingerprint() != self.owner.fingerprint()
    }

    /// The generation a grant to `member` of `collection` (`None`: of one
    /// record) must name at this point of the log (`docs/format.md` §7.3):
    /// its person's current one, or 0.
    pub(super) fn expected_generation(
        &self,
        member: &Fingerprint,
        collection: Option<&crate::CollectionId>,
    ) -> u32 {
        self.list_of(member, collection)
            .map_or(0, DeviceList::generation)
    }

    /// The owner's key generations `me` (the owner's root or a device the
    /// owner's lists named) opens from the lists this log carries: from
    /// the newest version `me` opens, then back along the chain.
    pub fn open_generations(&self, me: &SecretIdentity) -> Result<GenerationKeys> {
        self.owner_devices
            .as_ref()
            .ok_or(Error::AccessDenied(
                "the vault owner has listed no devices, so there are no key generations to open",
            ))?
            .open_generations(&self.owner.fingerprint(), me)
    }

    /// A member's key generations `me` (the member's root, or a device its
    /// lists in `collection` named) opens from the lists `collection`
    /// carries for `member`.
    pub fn open_member_generations(
        &self,
        me: &SecretIdentity,
        collection: &crate::CollectionId,
        member: &Fingerprint,
    ) -> Result<GenerationKeys> {
        self.devices_of(member, Some(collection))
            .ok_or(Error::AccessDenied(
                "the member has listed no devices in this collection, so there are no key generations to open",
            ))?
            .open_generations(member, me)
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
        let d = self.owner_devices.as_ref().ok_or(Error::InvalidInput(
            "the owner has listed no devices in this vault: there is no list to take back",
        ))?;
        let (base, _) = d.newest_opened(&self.owner.fingerprint(), root)?;
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

    /// The key that opens a grant of `collection` of `generation` to
    /// `me`'s person: the person document's own key for generation 0,
    /// which only its root holds (devices never do, decision 67), else the
    /// generation whose public key this log's lists for the person name
    /// (the owner's, or the member's in that collection), from `keys`.
    pub(crate) fn grant_key(
        &self,
        me: &SecretIdentity,
        keys: Option<&crate::devices::GenerationKeys>,
        collection: &crate::CollectionId,
        generation: u32,
    ) -> Result<GrantKey> {
        let person = self.person_in(&me.fingerprint(), Some(collection));
        if person == me.fingerprint() && generation == 0 {
            return GrantKey::document(me);
        }
        let public = if generation == 0 {
            return Err(Error::AccessDenied(
                "this key was sealed to your key file itself (before this device was listed, or by someone who did not know your devices): open it with the key file",
            ));
        } else {
            *self
                .devices_of(&person, Some(collection))
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

    /// The owner's devices after `lists` (§8.11 rules 2 to 4), without
    /// changing this state.
    fn accept_lists(&self, person: &PublicIdentity, lists: &[DeviceList]) -> Result<PersonDevices> {
        if person.to_bytes() != self.owner.to_bytes() {
            return Err(Error::InvalidInput(
                "a devices-listed entry lists the owner's devices only, under the owner's identity",
            ));
        }
        // A device a member's list names may still be the owner's: the
        // owner's lists take precedence ([`VaultState::person_in`]), so a
        // member cannot keep the owner from listing a device by listing it
        // first (a device document is public, and listing needs no consent).
        PersonDevices::accept(self.owner_devices.as_ref(), person, lists, |fp, _| {
            self.identities.contains_key(fp).then_some(
                "a member or agent of this vault cannot be listed as a device of the owner's",
            )
        })
    }

    /// Kind 14 (`docs/format.md` §8.12): versions of a member's device
    /// list in `collection`, written by the owner (for a member about to
    /// be granted the collection, or to carry a newer version), the
    /// member's root, or a device of the member's current list there; each
    /// accepted from the one before (the first one the collection carries
    /// for the member must be signed by the member's root).
    pub(super) fn apply_member_devices_listed(
        &mut self,
        ctx: &Applying,
        collection: &crate::CollectionId,
        person: &PublicIdentity,
        lists: &[DeviceList],
    ) -> Result<()> {
        let member = person.fingerprint();
        if !ctx.is_owner && ctx.author != member {
            return Err(ctx.unauthorized(
                "is neither the owner nor the member or one of its devices, so may not list the member's devices",
            ));
        }
        // A member lists its devices only where it reads: a current grant
        // of the collection that is not a deposit, in force.
        let reads = self
            .collections
            .get(collection)
            .and_then(|c| c.grants.get(&member))
            .is_some_and(|g| g.permission().may_read() && g.is_valid_at(ctx.time));
        if !ctx.is_owner && !reads {
            return Err(ctx.unauthorized(
                "holds no current grant to read this collection, so may not list devices in it",
            ));
        }
        let accepted = self
            .accept_member_lists(collection, person, lists)
            .map_err(|e| match e {
                Error::Rollback { .. } | Error::BadSignature { .. } => e,
                Error::InvalidInput(reason) => ctx.invalid(reason),
                _ => ctx.invalid("a device list version is not accepted (docs/format.md §3.7)"),
            })?;
        self.member_devices
            .extend(accepted.ever_listed.keys().copied());
        if let Some(c) = self.collections.get_mut(collection) {
            c.people.insert(member, accepted);
        }
        Ok(())
    }

    /// A member's devices in `collection` after `lists` (§8.12 rules 2 to
    /// 4), without changing this state.
    fn accept_member_lists(
        &self,
        collection: &crate::CollectionId,
        person: &PublicIdentity,
        lists: &[DeviceList],
    ) -> Result<PersonDevices> {
        let member = person.fingerprint();
        let coll = self.collections.get(collection).ok_or(Error::InvalidInput(
            "a member-devices-listed entry names a collection this vault does not have",
        ))?;
        if member == self.owner.fingerprint() {
            return Err(Error::InvalidInput(
                "the owner's devices are listed by a devices-listed entry, not a member's",
            ));
        }
        if person.role() == crate::identity::Role::Device
            || self.member_devices.contains(&member)
            || self.listed_device(&member).is_some()
        {
            return Err(Error::InvalidInput(
                "a member-devices-listed entry names a person, not a device",
            ));
        }
        if self
            .identities
            .get(&member)
            .is_some_and(|known| known.to_bytes() != person.to_bytes())
        {
            return Err(Error::InvalidInput(
                "a member's identity document differs from the one this vault knows",
            ));
        }
        // Conflicts are judged in this collection only. A device document
        // is public, so a member may list another's device as its own; the
        // device's own signature on a version of its person's list (its
        // claim) outranks a listing it did not sign, which then does
        // nothing: the device acts for the person it claimed.
        PersonDevices::accept(coll.people.get(&member), person, lists, |fp, naming| {
            // Another member's listing of `fp` gives way only to this
            // member's claim, and only when the device did not claim that
            // member and wrote nothing here: a claim never re-attributes
            // what a device wrote (whom an applied entry was judged as
            // stays), and two claims never compete.
            let outranked = |d: &PersonDevices| {
                naming.claims && !d.claimed.contains(fp) && !coll.signers.contains(fp)
            };
            let listed_by_another =
                |d: &PersonDevices| d.ever_listed.contains_key(fp) && !outranked(d);
            let by_another = || {
                coll.people
                    .iter()
                    .any(|(p, d)| *p != member && listed_by_another(d))
            };
            // A device this member listed before, claiming it now, was
            // judged when first named: only a competing member matters.
            if naming.listed_before {
                return by_another().then_some(ANOTHER_MEMBERS);
            }
            if self.identities.contains_key(fp) || *fp == self.owner.fingerprint() {
                Some("a member, an agent or the owner cannot be listed as a member's device")
            } else if self.listed_device(fp).is_some() {
                Some("a device of the owner's cannot be listed as a member's device")
            } else if by_another() {
                Some(ANOTHER_MEMBERS)
            } else {
                None
            }
        })
    }

    /// Whether `signer` may carry `member`'s list into `collection`: the
    /// owner (or one of its devices), or the member (its key file or a
    /// device of its current list there), as the log's rule says
    /// (`docs/format.md` §8.12). An agent may not.
    pub fn may_list_member_devices(
        &self,
        signer: &Fingerprint,
        collection: &crate::CollectionId,
        member: &Fingerprint,
    ) -> bool {
        let by = self.person_in(signer, Some(collection));
        self.is_owner(&by) || by == *member
    }

    /// An entry carrying `lists` (versions of `person`'s device list, in
    /// serial order, the first extending what `collection` carries for the
    /// person, or signed by the person's root), signed by `me`: the owner
    /// (or one of its devices), the person's root, or a device of the
    /// person's current list there. The versions are checked as
    /// [`VaultState::apply`] will check them. The owner appends it before
    /// granting the person the collection, so the grant goes to the
    /// person's current generation, which every listed device opens.
    pub fn list_member_devices(
        &self,
        me: &SecretIdentity,
        collection: &crate::CollectionId,
        person: &PublicIdentity,
        lists: &[DeviceList],
        now: u64,
    ) -> Result<LogEntry> {
        if !self.may_list_member_devices(&me.fingerprint(), collection, &person.fingerprint()) {
            return Err(Error::AccessDenied(
                "only the vault owner, or the member and its devices, list a member's devices",
            ));
        }
        self.accept_member_lists(collection, person, lists)?;
        self.next_entry(
            me,
            now,
            EntryBody::MemberDevicesListed {
                collection: *collection,
                person: person.clone(),
                lists: lists.to_vec(),
            },
        )
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
