//! Device lists (`docs/format.md` §3.7, decision 60 §1): a person's root
//! identity certifies the devices that act for it, and hands each of them
//! the person's encryption keys.
//!
//! A person's identity document becomes the **root**; its fingerprint stays
//! the person's fingerprint. The root, or a device of the version it
//! extends, signs each version of the list. Every version carries the
//! person's current **generation** key (an X25519 pair; generation 0 is the
//! root document's own key), sealed to each listed device in an age file,
//! with the secrets of every earlier generation sealed to the current one
//! and the current secret sealed to the **recovery key**, which only the
//! root's key file derives. Removing a device starts a new generation, so
//! a removed device opens nothing sealed to the person afterwards.
//!
//! This module is the format, the acceptance rules and the keys, as a
//! draft: it is not used outside its tests, and decision 60 lists the
//! problems to solve before lists enter vault logs (the root's override
//! of a thief or a fork, the bound on generations, a reader that holds no
//! version yet, checking every generation). Carrying lists in vault logs
//! (kind 11), grants to generations, the relay's directory and pairing
//! come after.

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
/// Longest age file of earlier generations' secrets.
const MAX_HISTORY_BOX: usize = 4096;
/// Longest age file of one generation secret.
const MAX_BOX: usize = 1024;
/// The longest encoded device list.
pub const MAX_DEVICE_LIST_LEN: usize = 32768;
/// The most generations a history box can carry (32 bytes each, within
/// the 4096-byte history box with age's overhead).
pub const MAX_GENERATIONS: u32 = 96;

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

/// The secrets of a person's encryption key generations, index =
/// generation (0: the root document's X25519 secret). What a device opens
/// from a list ([`DeviceList::open`]); zeroised when dropped, never
/// printed.
pub struct GenerationKeys(Vec<Zeroizing<[u8; 32]>>);

impl fmt::Debug for GenerationKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GenerationKeys({} generations)", self.0.len())
    }
}

impl GenerationKeys {
    /// The secret of `generation`, if held.
    pub fn secret(&self, generation: u32) -> Option<&[u8; 32]> {
        self.0.get(usize::try_from(generation).ok()?).map(|s| &**s)
    }

    /// The newest generation held.
    pub fn current(&self) -> u32 {
        u32::try_from(self.0.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// Checks that these keys hold `list`'s generation with its public key
    /// (a reader holding the person's earlier versions checks each of them
    /// so, which checks every secret of the history box).
    pub fn check_against(&self, list: &DeviceList) -> Result<()> {
        match self.secret(list.generation) {
            Some(s) if primitives::ct_eq(&x25519_public(s), &list.enc_public) => Ok(()),
            _ => Err(Error::DecryptionFailed),
        }
    }

    /// The age identity of `generation`, to open what was sealed to it.
    pub fn age_identity(&self, generation: u32) -> Result<age::x25519::Identity> {
        let secret = self.secret(generation).ok_or(Error::AccessDenied(
            "this device does not hold that key generation",
        ))?;
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
    /// The current generation's secret, and all earlier ones.
    keys: &'a GenerationKeys,
    devices: Vec<(PublicIdentity, u64)>,
}

impl DeviceList {
    /// The first version of `root`'s list (serial 1, generation 1, signed
    /// by the root) naming `devices` (each of role device), and the
    /// generation keys every listed device opens from it.
    pub fn first(
        root: &SecretIdentity,
        devices: &[PublicIdentity],
        now: u64,
    ) -> Result<(Self, GenerationKeys)> {
        let keys = GenerationKeys(vec![
            root.x25519_secret_copy(),
            Zeroizing::new(primitives::random::<32>()),
        ]);
        let recovery = recovery_secret(root);
        let list = Draft {
            person: root.fingerprint(),
            serial: 1,
            prev: [0; 32],
            issued_at: now,
            recovery_public: x25519_public(&recovery),
            keys: &keys,
            devices: devices.iter().map(|d| (d.clone(), now)).collect(),
        }
        .seal_and_sign(root)?;
        Ok((list, keys))
    }

    /// The next version of this list, signed by `signer` (the root, or a
    /// device listed in this version), with `add` added and `remove`
    /// removed. `keys` are the generations the signer holds (a device's
    /// from [`DeviceList::open`], the root's from
    /// [`DeviceList::open_recovery`]). Removing a device starts a new
    /// generation; adding only keeps it. Returns the version and the keys
    /// of its devices.
    pub fn next(
        &self,
        signer: &SecretIdentity,
        keys: &GenerationKeys,
        add: &[PublicIdentity],
        remove: &[Fingerprint],
        now: u64,
    ) -> Result<(Self, GenerationKeys)> {
        self.next_version(signer, keys, add, remove, now, false)
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
        Ok(self.next_version(signer, keys, &[], remove, now, true)?.0)
    }

    fn next_version(
        &self,
        signer: &SecretIdentity,
        keys: &GenerationKeys,
        add: &[PublicIdentity],
        remove: &[Fingerprint],
        now: u64,
        keep_generation: bool,
    ) -> Result<(Self, GenerationKeys)> {
        if keys.current() != self.generation {
            return Err(Error::InvalidInput(
                "the keys given are not this list's current generation",
            ));
        }
        if signer.fingerprint() != self.person && self.device(&signer.fingerprint()).is_none() {
            return Err(Error::AccessDenied(
                "only the person's root key or a device in the list signs its next version",
            ));
        }
        let issued_at = now.max(self.issued_at);
        let mut devices: Vec<(PublicIdentity, u64)> = self
            .devices
            .iter()
            .filter(|d| !remove.contains(&d.document.fingerprint()))
            .map(|d| (d.document.clone(), d.added_at))
            .collect();
        for d in add {
            if !devices
                .iter()
                .any(|(x, _)| x.fingerprint() == d.fingerprint())
            {
                devices.push((d.clone(), issued_at));
            }
        }
        let removed = self
            .devices
            .iter()
            .any(|d| remove.contains(&d.document.fingerprint()));
        let mut next: Vec<Zeroizing<[u8; 32]>> = Vec::with_capacity(keys.0.len().saturating_add(1));
        next.extend(keys.0.iter().map(|k| Zeroizing::new(**k)));
        if removed && !keep_generation {
            next.push(Zeroizing::new(primitives::random::<32>()));
        }
        let keys = GenerationKeys(next);
        let list = Draft {
            person: self.person,
            serial: self
                .serial
                .checked_add(1)
                .ok_or(invalid("serial overflow"))?,
            prev: self.hash,
            issued_at,
            recovery_public: self.recovery_public,
            keys: &keys,
            devices,
        }
        .seal_and_sign(signer)?;
        Ok((list, keys))
    }

    /// Checks this version against the person's `root` document and the
    /// version `held` (the one this reader accepted last, or none), by the
    /// rules of `docs/format.md` §3.7: the root may sign any later serial
    /// (it overrides a thief or a fork), a device of `held` only the next
    /// one extending it; removing a device starts a new generation; the
    /// recovery key never changes; carried devices keep their documents
    /// and dates, new ones are dated at this version. Every failure is
    /// `malformed`, `bad_signature`, `context_mismatch` or `rollback`.
    pub fn accept(&self, root: &PublicIdentity, held: Option<&DeviceList>) -> Result<()> {
        if self.person != root.fingerprint() {
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
                "the first version of a device list must be signed by the person's root key",
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
        let Some(h) = held else {
            return Ok(());
        };
        if h.person != self.person {
            return Err(Error::ContextMismatch {
                what: "device list",
                field: "person",
            });
        }
        if !primitives::ct_eq(&self.recovery_public, &h.recovery_public) {
            return Err(invalid("the recovery key changed"));
        }
        let removed = h
            .devices
            .iter()
            .any(|d| self.device(&d.document.fingerprint()).is_none());
        if root_signed {
            if self.generation < h.generation || (removed && self.generation == h.generation) {
                return Err(invalid(
                    "a version removing a device must start a new key generation",
                ));
            }
            if self.generation > h.generation.saturating_add(1)
                || (self.generation == h.generation && self.enc_public != h.enc_public)
            {
                return Err(invalid(
                    "a version keeps the key generation, or starts the next one",
                ));
            }
        } else {
            if self.serial != h.serial.saturating_add(1) || self.prev != h.hash {
                return Err(invalid(
                    "a device signs only the next version of the list it extends",
                ));
            }
            let kept = self.generation == h.generation && self.enc_public == h.enc_public;
            let next = self.generation == h.generation.saturating_add(1)
                && self.enc_public != h.enc_public;
            if (removed && !next) || (!removed && !kept) {
                return Err(invalid(
                    "a device keeps the key generation, or starts the next one when it removes a device",
                ));
            }
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

    /// Opens, as `device` (listed here), every generation secret this
    /// version carries: the current one from the device's box, the earlier
    /// ones from the history box. Each is checked against its public key
    /// where this version names it (the current generation's, and
    /// generation 0's: the root document's X25519 key);
    /// `decryption_failed` otherwise.
    pub fn open(&self, device: &SecretIdentity, root: &PublicIdentity) -> Result<GenerationKeys> {
        let listed = self
            .device(&device.fingerprint())
            .ok_or(Error::AccessDenied(
                "this device is not in the person's device list",
            ))?;
        let current = open_secret(&listed.device_box, &device.age_identity()?)?;
        self.with_history(current, root)
    }

    /// Opens this version's generation secrets with the person's root key
    /// file, through the recovery box: what `vault devices recover` and a
    /// new device enrolled with the recovery file hold.
    pub fn open_recovery(&self, root: &SecretIdentity) -> Result<GenerationKeys> {
        let recovery = recovery_secret(root);
        if !primitives::ct_eq(&x25519_public(&recovery), &self.recovery_public) {
            return Err(Error::DecryptionFailed);
        }
        let current = open_secret(&self.recovery_box, &agefile::x25519_identity(&recovery)?)?;
        self.with_history(current, root.public())
    }

    fn with_history(
        &self,
        current: Zeroizing<[u8; 32]>,
        root: &PublicIdentity,
    ) -> Result<GenerationKeys> {
        if !primitives::ct_eq(&x25519_public(&current), &self.enc_public) {
            return Err(Error::DecryptionFailed);
        }
        let identity = agefile::x25519_identity(&current)?;
        let history = agefile::decrypt_x25519(&self.history_box, &identity, MAX_HISTORY_BOX)?;
        let count = usize::try_from(self.generation).map_err(|_| Error::DecryptionFailed)?;
        if history.len() != count.saturating_mul(32) {
            return Err(Error::DecryptionFailed);
        }
        // Room for every generation up front: growing would leave earlier
        // secrets in a freed buffer.
        let mut keys: Vec<Zeroizing<[u8; 32]>> = Vec::with_capacity(count.saturating_add(1));
        keys.extend(history.chunks_exact(32).map(|c| {
            let mut k = Zeroizing::new([0u8; 32]);
            k.copy_from_slice(c);
            k
        }));
        match keys.first() {
            Some(g0) if primitives::ct_eq(&x25519_public(g0), root.x25519_public()) => {}
            _ => return Err(Error::DecryptionFailed),
        }
        keys.push(current);
        Ok(GenerationKeys(keys))
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
    /// least 1 (and at most [`MAX_GENERATIONS`]), 1 to [`MAX_DEVICES`]
    /// devices in strictly ascending fingerprint order, each a valid
    /// identity document of role device that is not the person, box sizes,
    /// no trailing bytes. The signature is checked by
    /// [`DeviceList::accept`].
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
        let history_box = r.bytes(MAX_HISTORY_BOX)?.to_vec();
        let recovery_box = r.bytes(MAX_BOX)?.to_vec();
        let n = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if n == 0 || n > MAX_DEVICES {
            return Err(r.malformed("a device list names 1 to 16 devices"));
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
        if serial == 0 || generation == 0 || generation > MAX_GENERATIONS {
            return Err(invalid("serial and generation start at 1"));
        }
        primitives::check_x25519_public(&recovery_public)?;
        primitives::check_x25519_public(&enc_public)?;
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
        if self.devices.is_empty() || self.devices.len() > MAX_DEVICES {
            return Err(Error::InvalidInput("a device list names 1 to 16 devices"));
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
        let generation = self.keys.current();
        if generation == 0 || generation > MAX_GENERATIONS {
            return Err(Error::InvalidInput("too many key generations"));
        }
        let current = self
            .keys
            .secret(generation)
            .ok_or(Error::InvalidInput("no current generation"))?;
        let enc_public = x25519_public(current);
        let mut history = Zeroizing::new(Vec::with_capacity(32 * self.keys.0.len()));
        for k in self.keys.0.iter().take(self.keys.0.len() - 1) {
            history.extend_from_slice(&**k);
        }
        let history_box = agefile::encrypt(&agefile::x25519_recipient(&enc_public)?, &history)?;
        let recovery_box =
            agefile::encrypt(&agefile::x25519_recipient(&self.recovery_public)?, current)?;
        let mut w = Writer::new();
        w.u8(DEVICE_LIST_VERSION)
            .fixed(self.person.as_bytes())
            .u32(self.serial)
            .fixed(&self.prev)
            .u64(self.issued_at)
            .fixed(&self.recovery_public)
            .u32(generation)
            .fixed(&enc_public)
            .bytes(&history_box)
            .bytes(&recovery_box)
            .u32(u32::try_from(self.devices.len()).unwrap_or(u32::MAX));
        for (d, added_at) in &self.devices {
            let device_box = agefile::encrypt(&d.recipient()?, current)?;
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
