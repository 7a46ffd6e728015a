//! Device lists (`docs/format.md` §3.7, decisions 60 and 66): a person's
//! root identity certifies the devices that act for it, and hands each of
//! them the person's encryption keys.
//!
//! A person's identity document becomes the **root**; its fingerprint stays
//! the person's fingerprint. The root, or a device of the version it
//! extends, signs each version of the list. Every version carries the
//! person's current **generation** key (an X25519 pair; generation 0 is the
//! root document's own key), sealed to each listed device in an age file,
//! and sealed to the **recovery key**, which only the root's key file
//! derives. Its history box holds the secret of the generation before it
//! (its `prior`), so earlier generations are reached one version at a time
//! along the chain ([`GenerationKeys::walk_back`]) and a list never grows
//! with the number of generations. Removing a device starts a new
//! generation, so a removed device opens nothing sealed to the person
//! afterwards. The root overrides a thief or a fork with any later serial
//! and generation ([`DeviceList::recover`]).
//!
//! Keys are known by their public keys: a secret is kept only after it was
//! checked against the public key a signed version names, so a wrong
//! secret in a box is refused when opened, never used later.
//!
//! Carrying lists in vault logs (kind 11), grants to generations, the
//! relay's directory and pairing come after this module.

use std::fmt;

use zeroize::Zeroizing;

use crate::agefile;
use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::identity::{Fingerprint, PublicIdentity, Role, SecretIdentity, MAX_IDENTITY_LEN};
use crate::primitives::{self, sha256};

const DEVICE_LIST_VERSION: u8 = 1;
const SIGNATURE_CONTEXT: &[u8] = b"vault/v1/device-list\0";
const HASH_CONTEXT: &[u8] = b"vault/v1/device-list-hash\0";
const RECOVERY_CONTEXT: &[u8] = b"vault/v1/recovery-key\0";
/// The most devices one list names.
pub const MAX_DEVICES: usize = 16;
/// `prior_public` of a version with no prior generation: the first, and
/// those keeping its generation. Generation 0, the root document's own key,
/// is never carried in a list (decision 67): devices never hold it.
pub const NO_PRIOR: [u8; 32] = [0; 32];
/// Longest age file of one generation secret (the history, recovery and
/// device boxes).
const MAX_BOX: usize = 1024;
/// The longest encoded device list.
pub const MAX_DEVICE_LIST_LEN: usize = 32768;

/// One listed device: its identity document (role device) and when it was
/// added, with its box holding the list's generation secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ListedDevice {
    document: PublicIdentity,
    added_at: u64,
    device_box: Vec<u8>,
}

impl ListedDevice {
    /// The device's identity document.
    pub fn document(&self) -> &PublicIdentity {
        &self.document
    }
    /// When it was added to the person's list (seconds since the Unix
    /// epoch), as the version that added it says.
    pub fn added_at(&self) -> u64 {
        self.added_at
    }
}

impl fmt::Debug for ListedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListedDevice")
            .field("device", &self.document.fingerprint())
            .field("added_at", &self.added_at)
            .finish_non_exhaustive()
    }
}

/// One version of a person's device list, parsed strictly (not yet
/// accepted: see [`DeviceList::accept`]).
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceList {
    person: Fingerprint,
    serial: u32,
    prev: [u8; 32],
    issued_at: u64,
    recovery_public: [u8; 32],
    generation: u32,
    enc_public: [u8; 32],
    prior_public: [u8; 32],
    history_box: Vec<u8>,
    recovery_box: Vec<u8>,
    devices: Vec<ListedDevice>,
    signer: Fingerprint,
    signature: [u8; 64],
    encoded: Vec<u8>,
    hash: [u8; 32],
}

impl fmt::Debug for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceList")
            .field("person", &self.person)
            .field("serial", &self.serial)
            .field("generation", &self.generation)
            .field("devices", &self.devices)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// Generation secrets of a person, each known by its X25519 public key
/// (what a grant's generation names through the list that carried it).
/// Every secret here was checked against the public key a signed version
/// names before it was kept. Each secret lives in its own zeroised heap
/// cell, so growing the set leaves no copy behind; never printed.
pub struct GenerationKeys {
    current: [u8; 32],
    keys: Vec<HeldGeneration>,
}

/// One generation secret, boxed so that it never moves, with its public
/// key.
type HeldGeneration = ([u8; 32], Box<Zeroizing<[u8; 32]>>);

impl fmt::Debug for GenerationKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GenerationKeys({} generations)", self.keys.len())
    }
}

impl GenerationKeys {
    /// Keys holding one checked secret, `current` (whose public key is
    /// `expected`), or `decryption_failed`.
    fn with_current(current: Zeroizing<[u8; 32]>, expected: &[u8; 32]) -> Result<Self> {
        let mut keys = Self {
            current: *expected,
            keys: Vec::new(),
        };
        keys.insert(current, expected)?;
        Ok(keys)
    }

    /// Keeps `secret` if its public key is `expected`; `decryption_failed`
    /// otherwise (a box that held a wrong secret).
    fn insert(&mut self, secret: Zeroizing<[u8; 32]>, expected: &[u8; 32]) -> Result<()> {
        let public = x25519_public(&secret);
        if !primitives::ct_eq(&public, expected) {
            return Err(Error::DecryptionFailed);
        }
        if self.secret_for(&public).is_none() {
            self.keys.push((public, Box::new(secret)));
        }
        Ok(())
    }

    /// The secret whose X25519 public key is `public`, if held.
    pub fn secret_for(&self, public: &[u8; 32]) -> Option<&[u8; 32]> {
        self.keys
            .iter()
            .find(|(p, _)| p == public)
            .map(|(_, s)| &***s)
    }

    /// The public key of the generation these keys were opened at (the
    /// newest one held).
    pub fn current_public(&self) -> &[u8; 32] {
        &self.current
    }

    /// How many generations are held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no generation is held (never, for keys a list opened).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks that these keys hold `list`'s generation; `decryption_failed`
    /// if not.
    pub fn check_against(&self, list: &DeviceList) -> Result<()> {
        self.secret_for(&list.enc_public)
            .map(|_| ())
            .ok_or(Error::DecryptionFailed)
    }

    /// One step back along the chain: if these keys hold `older`'s
    /// generation, opens its history box and keeps the generation before
    /// it (checked against `older`'s `prior_public`). Returns whether a
    /// generation was added. `older` must be a version the caller
    /// accepted; a wrong secret in its box is `decryption_failed`.
    pub fn walk_back(&mut self, older: &DeviceList) -> Result<bool> {
        if older.prior_public == NO_PRIOR || self.secret_for(&older.prior_public).is_some() {
            return Ok(false);
        }
        let Some(secret) = self.secret_for(&older.enc_public) else {
            return Ok(false);
        };
        let prior = open_secret(&older.history_box, &agefile::x25519_identity(secret)?)?;
        self.insert(prior, &older.prior_public)?;
        Ok(true)
    }

    /// The age identity of the generation whose public key is `public`, to
    /// open what was sealed to it; `decryption_failed` if these keys do not
    /// hold it (nothing sealed to it opens with them).
    pub fn age_identity(&self, public: &[u8; 32]) -> Result<age::x25519::Identity> {
        let secret = self.secret_for(public).ok_or(Error::DecryptionFailed)?;
        agefile::x25519_identity(secret)
    }
}

/// Why a device list version is not accepted.
fn invalid(reason: &'static str) -> Error {
    Error::Malformed {
        what: "device list",
        reason,
    }
}

/// The X25519 recovery secret a root key file derives (`docs/format.md`
/// §3.9): devices never hold the root's seed, so never this key.
pub fn recovery_secret(root: &SecretIdentity) -> Zeroizing<[u8; 32]> {
    let person = root.fingerprint();
    primitives::hkdf32(
        root.ed25519_seed().as_ref(),
        b"",
        &[RECOVERY_CONTEXT, person.as_bytes()].concat(),
    )
}

/// What one version of a list will say, before its boxes are sealed and
/// it is signed.
struct Draft<'a> {
    person: Fingerprint,
    serial: u32,
    prev: [u8; 32],
    issued_at: u64,
    recovery_public: [u8; 32],
    generation: u32,
    /// This generation's secret.
    current: &'a [u8; 32],
    prior_public: [u8; 32],
    /// The history box: sealed afresh from the prior secret, or carried
    /// from the version extended when the generation is kept.
    history: History<'a>,
    devices: Vec<(PublicIdentity, u64)>,
}

/// Where a version's history box comes from.
enum History<'a> {
    /// Seal this prior secret to the generation's public key.
    Seal(&'a [u8; 32]),
    /// The generation is kept: the box of the version extended already
    /// holds the prior secret, sealed to the same key.
    Carry(&'a [u8]),
}

/// What a version does to the list it builds on.
struct Change<'a> {
    add: &'a [PublicIdentity],
    remove: &'a [Fingerprint],
}

impl DeviceList {
    /// The first version of `root`'s list (serial 1, generation 1, signed
    /// by the root) naming `devices` (each of role device), and the
    /// generation keys every listed device opens from it. Its prior
    /// generation is generation 0, the root document's own key.
    pub fn first(
        root: &SecretIdentity,
        devices: &[PublicIdentity],
        now: u64,
    ) -> Result<(Self, GenerationKeys)> {
        if devices.is_empty() {
            return Err(Error::InvalidInput("list at least one device"));
        }
        let current = Zeroizing::new(primitives::random::<32>());
        let recovery = recovery_secret(root);
        let list = Draft {
            person: root.fingerprint(),
            serial: 1,
            prev: [0; 32],
            issued_at: now,
            recovery_public: x25519_public(&recovery),
            generation: 1,
            current: &current,
            prior_public: NO_PRIOR,
            history: History::Carry(&[]),
            devices: devices.iter().map(|d| (d.clone(), now)).collect(),
        }
        .seal_and_sign(root)?;
        let keys = GenerationKeys::with_current(current, &list.enc_public)?;
        Ok((list, keys))
    }

    /// The next version of this list, signed by `signer` (the root, or a
    /// device listed in this version), with `add` added and `remove`
    /// removed. `keys` must hold this version's generation (a device's
    /// from [`DeviceList::open`], the root's from
    /// [`DeviceList::open_recovery`]). Removing a device starts a new
    /// generation whose prior is this one; adding only keeps it. Returns
    /// the version and the keys its devices open from it.
    pub fn next(
        &self,
        signer: &SecretIdentity,
        keys: &GenerationKeys,
        add: &[PublicIdentity],
        remove: &[Fingerprint],
        now: u64,
    ) -> Result<(Self, GenerationKeys)> {
        self.next_version(signer, keys, Change { add, remove }, now, false)
    }

    /// [`DeviceList::next`] that keeps the generation even when it removes
    /// a device: what a thief's device might sign, for tests.
    #[cfg(test)]
    pub(crate) fn next_keeping_generation_for_test(
        &self,
        signer: &SecretIdentity,
        keys: &GenerationKeys,
        remove: &[Fingerprint],
        now: u64,
    ) -> Result<Self> {
        let change = Change { add: &[], remove };
        Ok(self.next_version(signer, keys, change, now, true)?.0)
    }

    /// A root-signed version (built on a version the reader does not hold)
    /// whose history box holds a secret that is not the prior
    /// generation's: what a careless or malicious signer might seal, for
    /// tests.
    #[cfg(test)]
    pub(crate) fn first_with_wrong_prior_for_test(
        root: &SecretIdentity,
        devices: &[PublicIdentity],
        now: u64,
    ) -> Result<Self> {
        let current = Zeroizing::new(primitives::random::<32>());
        let wrong = Zeroizing::new(primitives::random::<32>());
        Draft {
            person: root.fingerprint(),
            serial: 1,
            prev: [7; 32],
            issued_at: now,
            recovery_public: x25519_public(&recovery_secret(root)),
            generation: 2,
            current: &current,
            prior_public: x25519_public(&primitives::random::<32>()),
            history: History::Seal(&wrong),
            devices: devices.iter().map(|d| (d.clone(), now)).collect(),
        }
        .seal_and_sign(root)
    }

    /// This version with its signed body edited by `edit` and signed
    /// again by `signer`: what a signer breaking the rules might produce,
    /// for tests. The result is parsed (so must still parse).
    #[cfg(test)]
    pub(crate) fn resigned_for_test(
        &self,
        signer: &SecretIdentity,
        edit: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Self> {
        let mut body = self.body().to_vec();
        edit(&mut body);
        let signature = signer.sign(&[SIGNATURE_CONTEXT, &body].concat());
        body.extend_from_slice(&signature);
        Self::from_bytes(&body)
    }

    /// This version with its recovery box replaced by one that opens to a
    /// wrong secret, signed again by `signer`: what a thief's device might
    /// list to keep the key file out of its generation, for tests.
    #[cfg(test)]
    pub(crate) fn hiding_from_recovery_for_test(&self, signer: &SecretIdentity) -> Result<Self> {
        // Each box is length-prefixed (`bytes`): the box and its prefix are
        // replaced together, whatever length age's random grease gives it.
        let framed = |b: &[u8]| {
            let mut v = u32::try_from(b.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes()
                .to_vec();
            v.extend_from_slice(b);
            v
        };
        let old = framed(&self.recovery_box);
        let wrong = framed(&agefile::encrypt(
            &agefile::x25519_recipient(&self.recovery_public)?,
            &primitives::random::<32>(),
        )?);
        self.resigned_for_test(signer, |body| {
            let at = body
                .windows(old.len())
                .position(|w| w == old.as_slice())
                .expect("the recovery box is in the body");
            body.splice(at..at + old.len(), wrong.iter().copied());
        })
    }

    fn next_version(
        &self,
        signer: &SecretIdentity,
        keys: &GenerationKeys,
        change: Change<'_>,
        now: u64,
        keep_generation: bool,
    ) -> Result<(Self, GenerationKeys)> {
        let current = keys
            .secret_for(&self.enc_public)
            .ok_or(Error::InvalidInput(
                "the keys given do not hold this list's current generation",
            ))?;
        if signer.fingerprint() != self.person && self.device(&signer.fingerprint()).is_none() {
            return Err(Error::AccessDenied(
                "only the person's root key or a device in the list signs its next version",
            ));
        }
        let issued_at = now.max(self.issued_at);
        let removed = self
            .devices
            .iter()
            .any(|d| change.remove.contains(&d.document.fingerprint()));
        let serial = self
            .serial
            .checked_add(1)
            .ok_or(invalid("serial overflow"))?;
        let devices = self.carried(&change, issued_at);
        if removed && !keep_generation {
            let fresh = Zeroizing::new(primitives::random::<32>());
            let list = Draft {
                person: self.person,
                serial,
                prev: self.hash,
                issued_at,
                recovery_public: self.recovery_public,
                generation: self
                    .generation
                    .checked_add(1)
                    .ok_or(invalid("generation overflow"))?,
                current: &fresh,
                prior_public: self.enc_public,
                history: History::Seal(current),
                devices,
            }
            .seal_and_sign(signer)?;
            let mut opened = GenerationKeys::with_current(fresh, &list.enc_public)?;
            opened.insert(Zeroizing::new(*current), &self.enc_public)?;
            return Ok((list, opened));
        }
        let list = Draft {
            person: self.person,
            serial,
            prev: self.hash,
            issued_at,
            recovery_public: self.recovery_public,
            generation: self.generation,
            current,
            prior_public: self.prior_public,
            history: History::Carry(&self.history_box),
            devices,
        }
        .seal_and_sign(signer)?;
        let mut opened = GenerationKeys::with_current(Zeroizing::new(*current), &list.enc_public)?;
        if let Some(prior) = keys.secret_for(&self.prior_public) {
            opened.insert(Zeroizing::new(*prior), &self.prior_public)?;
        }
        Ok((list, opened))
    }

    /// The root's override (`vault devices recover`): a version built on
    /// this one (a version the root trusts and opens with its recovery
    /// key), signed by `root`, with `add` added and `remove` removed, a
    /// serial and a generation above this version's and every one `seen`
    /// (the versions seen for the person, perhaps a thief's or a fork's,
    /// which the root need not open; their maxima may come from different
    /// versions), an issue time not before any of them, and a fresh
    /// generation whose prior
    /// is this version's. Every reader holding this version or any of
    /// `seen` accepts it; nothing sealed to it opens with a key a device
    /// removed since this version held.
    pub fn recover(
        &self,
        root: &SecretIdentity,
        seen: &[DeviceList],
        add: &[PublicIdentity],
        remove: &[Fingerprint],
        now: u64,
    ) -> Result<(Self, GenerationKeys)> {
        if root.fingerprint() != self.person || seen.iter().any(|v| v.person != self.person) {
            return Err(Error::AccessDenied(
                "only the person's root key overrides its device list",
            ));
        }
        let newest_serial = seen.iter().map(|v| v.serial).max().unwrap_or(0);
        let newest_generation = seen.iter().map(|v| v.generation).max().unwrap_or(0);
        let newest_issued = seen.iter().map(|v| v.issued_at).max().unwrap_or(0);
        let base = self.open_recovery(root)?;
        let base_secret = base
            .secret_for(&self.enc_public)
            .ok_or(Error::DecryptionFailed)?;
        let above = |a: u32, b: u32| a.max(b).checked_add(1).ok_or(invalid("serial overflow"));
        let issued_at = now.max(self.issued_at).max(newest_issued);
        let fresh = Zeroizing::new(primitives::random::<32>());
        let list = Draft {
            person: self.person,
            serial: above(self.serial, newest_serial)?,
            prev: self.hash,
            issued_at,
            recovery_public: self.recovery_public,
            generation: above(self.generation, newest_generation)?,
            current: &fresh,
            prior_public: self.enc_public,
            history: History::Seal(base_secret),
            devices: self.carried(&Change { add, remove }, issued_at),
        }
        .seal_and_sign(root)?;
        let mut opened = GenerationKeys::with_current(fresh, &list.enc_public)?;
        opened.insert(Zeroizing::new(*base_secret), &self.enc_public)?;
        Ok((list, opened))
    }

    /// This version's devices after `change`: carried ones keep their
    /// dates, added ones are dated `issued_at`.
    fn carried(&self, change: &Change<'_>, issued_at: u64) -> Vec<(PublicIdentity, u64)> {
        let mut devices: Vec<(PublicIdentity, u64)> = self
            .devices
            .iter()
            .filter(|d| !change.remove.contains(&d.document.fingerprint()))
            .map(|d| (d.document.clone(), d.added_at))
            .collect();
        for d in change.add {
            if !change.remove.contains(&d.fingerprint())
                && !devices
                    .iter()
                    .any(|(x, _)| x.fingerprint() == d.fingerprint())
            {
                devices.push((d.clone(), issued_at));
            }
        }
        devices
    }

    /// Checks this version against the person's `root` document and the
    /// version `held` (the one this reader accepted last, or pinned, or
    /// none), by the rules of `docs/format.md` §3.7. A version
    /// **extending** `held` (the next serial, naming it as `prev`) is
    /// signed by the root or a device of `held`, keeps the generation
    /// unless it removes a device, and then starts the next one whose
    /// prior is `held`'s. Any other later version is the root's
    /// **override**: signed by the root, with a later generation and a new
    /// key. The recovery key never changes and time never goes back.
    /// Every failure is `malformed`, `bad_signature`, `context_mismatch` or
    /// `rollback`.
    pub fn accept(&self, root: &PublicIdentity, held: Option<&DeviceList>) -> Result<()> {
        if self.person != root.fingerprint() || held.is_some_and(|h| h.person != self.person) {
            return Err(Error::ContextMismatch {
                what: "device list",
                field: "person",
            });
        }
        if let Some(h) = held.filter(|h| self.serial <= h.serial) {
            return Err(Error::Rollback {
                verified: u64::from(h.serial),
                offered: u64::from(self.serial),
            });
        }
        let root_signed = self.signer == self.person;
        let signer_key = if root_signed {
            root.clone()
        } else {
            let h = held.ok_or(invalid(
                "the first version of a device list a reader accepts is signed by the person's root key",
            ))?;
            h.device(&self.signer)
                .ok_or(invalid(
                    "signed by a device that is not in the list it extends",
                ))?
                .document
                .clone()
        };
        primitives::verify(
            signer_key.verifying_key(),
            &[SIGNATURE_CONTEXT, self.body()].concat(),
            &self.signature,
            "device list",
        )?;
        if self.devices.iter().any(|d| d.added_at > self.issued_at) {
            return Err(invalid("a device is dated after the version listing it"));
        }
        let Some(h) = held else {
            if self.prev == [0; 32] && self.prior_public != NO_PRIOR {
                return Err(invalid("a list starting afresh has no prior generation"));
            }
            return Ok(());
        };
        if !primitives::ct_eq(&self.recovery_public, &h.recovery_public) {
            return Err(invalid("the recovery key changed"));
        }
        if self.issued_at < h.issued_at {
            return Err(invalid("a version is issued before the one it follows"));
        }
        let extends = self.prev == h.hash && Some(self.serial) == h.serial.checked_add(1);
        let removed = h
            .devices
            .iter()
            .any(|d| self.device(&d.document.fingerprint()).is_none());
        let kept = self.generation == h.generation
            && self.enc_public == h.enc_public
            && self.prior_public == h.prior_public;
        let next = Some(self.generation) == h.generation.checked_add(1)
            && self.prior_public == h.enc_public
            && self.enc_public != h.enc_public
            && self.enc_public != h.prior_public;
        let extension = extends && (next || (kept && !removed));
        if !extension {
            // Anything else is the root's override: built on a version
            // this reader may not hold (its sibling at the same serial
            // included), above the held serial and generation.
            if !root_signed {
                return Err(invalid(
                    "a device signs only the next version of the list it extends, keeping the key generation or starting the next one (as it must when it removes a device)",
                ));
            }
            if self.generation <= h.generation || self.enc_public == h.enc_public {
                return Err(invalid(
                    "the root's override starts a later key generation with a new key",
                ));
            }
            return Ok(());
        }
        for d in &self.devices {
            match h.device(&d.document.fingerprint()) {
                Some(old) if old.document != d.document || old.added_at != d.added_at => {
                    return Err(invalid(
                        "a device carried over changed its document or date",
                    ))
                }
                Some(_) => {}
                None if d.added_at != self.issued_at => {
                    return Err(invalid("a new device is dated at the version adding it"))
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Opens, as `device` (listed here), this version's generation secret
    /// from the device's box and the prior one from the history box, each
    /// checked against the public key this version names for it
    /// (`decryption_failed` otherwise). Earlier generations come one
    /// version at a time with [`GenerationKeys::walk_back`].
    pub fn open(&self, device: &SecretIdentity) -> Result<GenerationKeys> {
        let listed = self
            .device(&device.fingerprint())
            .ok_or(Error::AccessDenied(
                "this device is not in the person's device list",
            ))?;
        let current = open_secret(&listed.device_box, &device.age_identity()?)?;
        self.with_prior(current)
    }

    /// Opens this version's generation secrets with the person's root key
    /// file, through the recovery box: what `vault devices recover` and a
    /// new device enrolled with the recovery file hold. A box the root
    /// cannot open (a thief's version may carry one) is
    /// `decryption_failed`: the root then builds on an earlier version.
    pub fn open_recovery(&self, root: &SecretIdentity) -> Result<GenerationKeys> {
        let recovery = recovery_secret(root);
        if !primitives::ct_eq(&x25519_public(&recovery), &self.recovery_public) {
            return Err(Error::DecryptionFailed);
        }
        let current = open_secret(&self.recovery_box, &agefile::x25519_identity(&recovery)?)?;
        self.with_prior(current)
    }

    fn with_prior(&self, current: Zeroizing<[u8; 32]>) -> Result<GenerationKeys> {
        let mut keys = GenerationKeys::with_current(current, &self.enc_public)?;
        keys.walk_back(self)?;
        Ok(keys)
    }

    /// The listed device with this fingerprint.
    pub fn device(&self, fp: &Fingerprint) -> Option<&ListedDevice> {
        self.devices
            .iter()
            .find(|d| d.document.fingerprint() == *fp)
    }

    /// The listed devices, ascending by fingerprint.
    pub fn devices(&self) -> &[ListedDevice] {
        &self.devices
    }
    /// The person (the root document's fingerprint).
    pub fn person(&self) -> Fingerprint {
        self.person
    }
    /// The version's serial number (1 for the first).
    pub fn serial(&self) -> u32 {
        self.serial
    }
    /// The current key generation (1 for the first version).
    pub fn generation(&self) -> u32 {
        self.generation
    }
    /// The current generation's X25519 public key, which grants to the
    /// person are sealed to.
    pub fn enc_public(&self) -> &[u8; 32] {
        &self.enc_public
    }
    /// The public key of the generation before this one on the chain (the
    /// root document's X25519 key for the first version), whose secret the
    /// history box holds.
    pub fn prior_public(&self) -> &[u8; 32] {
        &self.prior_public
    }
    /// The list hash of the version this one extends or, for the root's
    /// override, builds on; zero for none.
    pub fn prev(&self) -> &[u8; 32] {
        &self.prev
    }
    /// When this version was issued (seconds since the Unix epoch, as its
    /// signer's clock said; never before the version it follows).
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
    /// Who signed it: the person (the root) or one of its devices.
    pub fn signer(&self) -> Fingerprint {
        self.signer
    }
    /// `SHA-256(ctx("device-list-hash") || list)`: what the next version's
    /// `prev` names and what devices and contacts pin.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
    /// The canonical encoding.
    pub fn to_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// The signed body: the encoding without the signature.
    fn body(&self) -> &[u8] {
        self.encoded
            .get(..self.encoded.len().saturating_sub(64))
            .unwrap_or_default()
    }

    /// Parses one version strictly: version byte, serial and generation at
    /// least 1, X25519 keys canonical and not of low order, the current
    /// and prior keys distinct, 1 to [`MAX_DEVICES`] devices in strictly
    /// ascending fingerprint order (none: the root's key file alone acts
    /// for the person), each a valid identity document of role
    /// device that is not the person, box sizes, no trailing bytes. The
    /// signature is checked by [`DeviceList::accept`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_DEVICE_LIST_LEN {
            return Err(invalid("longer than 32768 bytes"));
        }
        let mut r = Reader::new(bytes, "device list");
        r.version(DEVICE_LIST_VERSION)?;
        let person = Fingerprint::from_bytes(r.array()?);
        let serial = r.u32()?;
        let prev = r.array()?;
        let issued_at = r.u64()?;
        let recovery_public: [u8; 32] = r.array()?;
        let generation = r.u32()?;
        let enc_public: [u8; 32] = r.array()?;
        let prior_public: [u8; 32] = r.array()?;
        let history_box = r.bytes(MAX_BOX)?.to_vec();
        let recovery_box = r.bytes(MAX_BOX)?.to_vec();
        let n = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if n > MAX_DEVICES {
            return Err(r.malformed("a device list names at most 16 devices"));
        }
        let mut devices = Vec::with_capacity(n);
        for _ in 0..n {
            let document = PublicIdentity::from_bytes(r.bytes(MAX_IDENTITY_LEN)?)?;
            let added_at = r.u64()?;
            let device_box = r.bytes(MAX_BOX)?.to_vec();
            devices.push(ListedDevice {
                document,
                added_at,
                device_box,
            });
        }
        let signer = Fingerprint::from_bytes(r.array()?);
        let signature = r.array()?;
        r.finish()?;
        if serial == 0 || generation == 0 {
            return Err(invalid("serial and generation start at 1"));
        }
        for key in [&recovery_public, &enc_public] {
            check_canonical_x25519(key)?;
        }
        if prior_public == NO_PRIOR {
            if !history_box.is_empty() {
                return Err(invalid("a version with no prior generation has no history"));
            }
        } else {
            check_canonical_x25519(&prior_public)?;
            if history_box.is_empty() {
                return Err(invalid(
                    "a version with a prior generation carries its secret",
                ));
            }
        }
        if enc_public == prior_public {
            return Err(invalid("a generation is not its own prior"));
        }
        if devices
            .iter()
            .any(|d| d.document.role() != Role::Device || d.document.fingerprint() == person)
        {
            return Err(invalid(
                "every listed device is a device document, not the person",
            ));
        }
        if !devices.windows(2).all(|w| match w {
            [a, b] => a.document.fingerprint().as_bytes() < b.document.fingerprint().as_bytes(),
            _ => true,
        }) {
            return Err(invalid(
                "devices not in strictly ascending fingerprint order",
            ));
        }
        Ok(Self {
            person,
            serial,
            prev,
            issued_at,
            recovery_public,
            generation,
            enc_public,
            prior_public,
            history_box,
            recovery_box,
            devices,
            signer,
            signature,
            hash: sha256(&[HASH_CONTEXT, bytes]),
            encoded: bytes.to_vec(),
        })
    }
}

impl Draft<'_> {
    /// Seals the boxes of this version and signs it as `signer`.
    fn seal_and_sign(mut self, signer: &SecretIdentity) -> Result<DeviceList> {
        if self.devices.len() > MAX_DEVICES {
            return Err(Error::InvalidInput(
                "a device list names at most 16 devices",
            ));
        }
        if self
            .devices
            .iter()
            .any(|(d, _)| d.role() != Role::Device || d.fingerprint() == self.person)
        {
            return Err(Error::InvalidInput(
                "only device identities can be listed as a person's devices",
            ));
        }
        self.devices
            .sort_by(|(a, _), (b, _)| a.fingerprint().as_bytes().cmp(b.fingerprint().as_bytes()));
        self.devices
            .dedup_by(|(a, _), (b, _)| a.fingerprint() == b.fingerprint());
        let enc_public = x25519_public(self.current);
        let history_box = match self.history {
            History::Seal(prior) => {
                agefile::encrypt(&agefile::x25519_recipient(&enc_public)?, prior)?
            }
            History::Carry(sealed) => sealed.to_vec(),
        };
        let recovery_box = agefile::encrypt(
            &agefile::x25519_recipient(&self.recovery_public)?,
            self.current,
        )?;
        let mut w = Writer::new();
        w.u8(DEVICE_LIST_VERSION)
            .fixed(self.person.as_bytes())
            .u32(self.serial)
            .fixed(&self.prev)
            .u64(self.issued_at)
            .fixed(&self.recovery_public)
            .u32(self.generation)
            .fixed(&enc_public)
            .fixed(&self.prior_public)
            .bytes(&history_box)
            .bytes(&recovery_box)
            .u32(u32::try_from(self.devices.len()).unwrap_or(u32::MAX));
        for (d, added_at) in &self.devices {
            let device_box = agefile::encrypt(&d.recipient()?, self.current)?;
            w.bytes(d.to_bytes()).u64(*added_at).bytes(&device_box);
        }
        w.fixed(signer.fingerprint().as_bytes());
        let mut encoded = w.into_vec();
        let signature = signer.sign(&[SIGNATURE_CONTEXT, &encoded].concat());
        encoded.extend_from_slice(&signature);
        DeviceList::from_bytes(&encoded)
    }
}

/// The X25519 public key of `secret`.
pub(crate) fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

/// Refuses an X25519 public key that is not canonical (its top bit set, or
/// a value of at least 2^255 - 19), so that keys compare by their bytes, or
/// that is of low order (`weak_public_key`).
fn check_canonical_x25519(key: &[u8; 32]) -> Result<()> {
    // Little-endian: the values from 2^255 - 19 to 2^255 - 1 are
    // ed ff .. ff 7f to ff ff .. ff 7f.
    let top_bit = key[31] & 0x80 != 0;
    let at_least_p = key[31] == 0x7f && key[1..31].iter().all(|b| *b == 0xff) && key[0] >= 0xed;
    if top_bit || at_least_p {
        return Err(invalid("an X25519 key is not canonically encoded"));
    }
    primitives::check_x25519_public(key)
}

/// A 32-byte secret from its box.
fn open_secret(file: &[u8], identity: &age::x25519::Identity) -> Result<Zeroizing<[u8; 32]>> {
    let plain = agefile::decrypt_x25519(file, identity, 32)?;
    let mut out = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err(Error::DecryptionFailed);
    }
    out.copy_from_slice(&plain);
    Ok(out)
}
