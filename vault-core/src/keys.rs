//! Symmetric keys of the key hierarchy (`docs/format.md` §5).
//!
//! - A [`CollectionKey`] exists per (vault, collection, epoch). It carries its
//!   context, so it can only wrap keys for that context.
//! - A [`DataKey`] is random per record version; it encrypts the payload and is
//!   wrapped under the collection key as a [`WrappedDataKey`].
//!
//! Wrapping uses a key-encryption key derived once per epoch with
//! HKDF-SHA256 (info: context string, vault id, collection id, epoch) and
//! ChaCha20-Poly1305 with a random nonce and the full record context (vault,
//! collection, epoch, record, version) as associated data. A wrapped key moved
//! to any other context fails to open.
//!
//! - Each epoch's collection key also determines a **deposit key pair**
//!   (`docs/format.md` §5.5): an X25519 key pair derived with RFC 9180's
//!   `DeriveKeyPair`. A write-only depositor holds only its public half
//!   ([`DepositPublicKey`]) and seals each record's data key to it with
//!   HPKE ([`DepositSealedKey`]), bound to the same record context; every
//!   holder of the collection key opens it, the depositor cannot.

use std::fmt;

use zeroize::Zeroizing;

use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::ids::{CollectionId, RecordId, VaultId};
use crate::primitives::{self, NONCE_LEN, TAG_LEN};

const WRAP_KEK_INFO: &[u8] = b"vault/v1/wrap-kek\0";
const WRAP_AAD: &[u8] = b"vault/v1/wrap\0";
const NAME_KEY_INFO: &[u8] = b"vault/v1/collection-name\0";
const WRAPPED_VERSION: u8 = 1;
const DEPOSIT_KEY_INFO: &[u8] = b"vault/v1/deposit-key\0";
const DEPOSIT_SEAL_INFO: &[u8] = b"vault/v1/deposit\0";
const DEPOSIT_SEALED_VERSION: u8 = 2;
/// Encoded length of a [`WrappedDataKey`].
pub const WRAPPED_KEY_LEN: usize = 1 + NONCE_LEN + 32 + TAG_LEN;
/// Encoded length of a [`DepositSealedKey`]: version byte, HPKE
/// encapsulated key, sealed data key and tag.
pub const DEPOSIT_SEALED_KEY_LEN: usize = 1 + 32 + 32 + TAG_LEN;

/// HPKE suite of deposits (RFC 9180): DHKEM(X25519, HKDF-SHA256),
/// HKDF-SHA256, ChaCha20-Poly1305, base mode.
type DepositKem = hpke::kem::X25519HkdfSha256;
type DepositKdf = hpke::kdf::HkdfSha256;
type DepositAead = hpke::aead::ChaCha20Poly1305;
const MAX_NAME: usize = 256;

/// Everything a data key is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordContext {
    /// The vault.
    pub vault: VaultId,
    /// The collection the record belongs to.
    pub collection: CollectionId,
    /// The collection epoch whose key wraps the data key.
    pub epoch: u32,
    /// The record.
    pub record: RecordId,
    /// The record version.
    pub version: u32,
}

/// A collection's symmetric key for one epoch, bound to (vault, collection,
/// epoch). Zeroized on drop; never printed.
pub struct CollectionKey {
    vault: VaultId,
    collection: CollectionId,
    epoch: u32,
    secret: Zeroizing<[u8; 32]>,
    kek: Zeroizing<[u8; 32]>,
    /// This epoch's deposit key pair, derived on first use (opening many
    /// deposits, as a rotation does, derives it once).
    deposit: std::sync::OnceLock<DepositKeyPair>,
}

/// A deposit key pair (the private half zeroized on drop by x25519-dalek).
type DepositKeyPair = (
    <DepositKem as hpke::Kem>::PrivateKey,
    <DepositKem as hpke::Kem>::PublicKey,
);

fn epoch_info(prefix: &[u8], vault: &VaultId, collection: &CollectionId, epoch: u32) -> Vec<u8> {
    let mut w = Writer::with_context(prefix);
    w.fixed(vault.as_bytes())
        .fixed(collection.as_bytes())
        .u32(epoch);
    w.into_vec()
}

impl CollectionKey {
    /// A fresh random key for the given context.
    pub(crate) fn generate(vault: VaultId, collection: CollectionId, epoch: u32) -> Self {
        Self::from_secret(
            vault,
            collection,
            epoch,
            Zeroizing::new(primitives::random()),
        )
    }

    pub(crate) fn from_secret(
        vault: VaultId,
        collection: CollectionId,
        epoch: u32,
        secret: Zeroizing<[u8; 32]>,
    ) -> Self {
        let kek = primitives::hkdf32(
            secret.as_ref(),
            b"",
            &epoch_info(WRAP_KEK_INFO, &vault, &collection, epoch),
        );
        Self {
            vault,
            collection,
            epoch,
            secret,
            kek,
            deposit: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The vault this key belongs to.
    pub fn vault(&self) -> VaultId {
        self.vault
    }

    /// The collection this key belongs to.
    pub fn collection(&self) -> CollectionId {
        self.collection
    }

    /// The epoch of this key.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    fn aad(&self, record: &RecordId, version: u32) -> Vec<u8> {
        record_info(WRAP_AAD, &self.record_context(record, version))
    }

    fn record_context(&self, record: &RecordId, version: u32) -> RecordContext {
        RecordContext {
            vault: self.vault,
            collection: self.collection,
            epoch: self.epoch,
            record: *record,
            version,
        }
    }

    /// Wraps a data key for (this key's context, record, version).
    pub(crate) fn wrap(&self, key: &DataKey, record: &RecordId, version: u32) -> WrappedDataKey {
        let nonce = primitives::random::<NONCE_LEN>();
        let ct = primitives::aead_seal(
            &self.kek,
            &nonce,
            &self.aad(record, version),
            key.0.as_ref(),
        );
        WrappedDataKey { nonce, ct }
    }

    /// Unwraps a data key; fails with [`Error::DecryptionFailed`] if the
    /// wrapped key was made for any other context or was altered.
    pub(crate) fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        record: &RecordId,
        version: u32,
    ) -> Result<DataKey> {
        let pt = primitives::aead_open(
            &self.kek,
            &wrapped.nonce,
            &self.aad(record, version),
            &wrapped.ct,
        )?;
        let bytes: [u8; 32] = pt
            .as_slice()
            .try_into()
            .map_err(|_| Error::DecryptionFailed)?;
        Ok(DataKey(Zeroizing::new(bytes)))
    }

    /// This epoch's deposit key pair (`docs/format.md` §5.5): RFC 9180
    /// `DeriveKeyPair` of an HKDF output of the collection key bound to
    /// (vault, collection, epoch).
    fn deposit_keypair(&self) -> &DepositKeyPair {
        self.deposit.get_or_init(|| {
            let ikm = primitives::hkdf32(
                self.secret.as_ref(),
                b"",
                &epoch_info(DEPOSIT_KEY_INFO, &self.vault, &self.collection, self.epoch),
            );
            <DepositKem as hpke::Kem>::derive_keypair(ikm.as_ref())
        })
    }

    /// The public half of this epoch's deposit key, which write-only
    /// depositors seal data keys to.
    pub fn deposit_public(&self) -> DepositPublicKey {
        use hpke::Serializable;
        let (_, public) = self.deposit_keypair();
        DepositPublicKey {
            vault: self.vault,
            collection: self.collection,
            epoch: self.epoch,
            bytes: public.to_bytes().into(),
        }
    }

    /// Opens a data key a depositor sealed to this epoch's deposit key;
    /// fails with [`Error::DecryptionFailed`] if it was sealed for any other
    /// context or key, or was altered.
    pub(crate) fn open_deposit(
        &self,
        sealed: &DepositSealedKey,
        record: &RecordId,
        version: u32,
    ) -> Result<DataKey> {
        use hpke::Deserializable;
        let (private, _) = self.deposit_keypair();
        let encapped = <DepositKem as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc)
            .map_err(|_| Error::DecryptionFailed)?;
        let info = record_info(DEPOSIT_SEAL_INFO, &self.record_context(record, version));
        let pt = Zeroizing::new(
            hpke::single_shot_open::<DepositAead, DepositKdf, DepositKem>(
                &hpke::OpModeR::Base,
                private,
                &encapped,
                &info,
                &sealed.ct,
                b"",
            )
            .map_err(|_| Error::DecryptionFailed)?,
        );
        let bytes: [u8; 32] = pt
            .as_slice()
            .try_into()
            .map_err(|_| Error::DecryptionFailed)?;
        Ok(DataKey(Zeroizing::new(bytes)))
    }

    /// Opens a data key under this key, whichever way it was sealed:
    /// wrapped (§5.2) or deposited (§5.5).
    pub(crate) fn open_seal(
        &self,
        seal: &KeySeal,
        record: &RecordId,
        version: u32,
    ) -> Result<DataKey> {
        match seal {
            KeySeal::Wrapped(w) => self.unwrap(w, record, version),
            KeySeal::Deposited(d) => self.open_deposit(d, record, version),
        }
    }

    fn name_key(&self) -> Zeroizing<[u8; 32]> {
        primitives::hkdf32(
            self.secret.as_ref(),
            b"",
            &epoch_info(NAME_KEY_INFO, &self.vault, &self.collection, self.epoch),
        )
    }

    /// Encrypts the collection's name so the relay never sees it.
    pub(crate) fn seal_name(&self, name: &str) -> Result<Vec<u8>> {
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "collection name must be 1 to 256 bytes without control characters",
            ));
        }
        let nonce = primitives::random::<NONCE_LEN>();
        let mut out = nonce.to_vec();
        // Pad names to a multiple of 32 bytes so their length leaks little.
        let mut padded = Writer::new();
        padded.text(name);
        let mut padded = padded.into_vec();
        padded.resize(padded.len().div_ceil(32) * 32, 0);
        out.extend(primitives::aead_seal(
            &self.name_key(),
            &nonce,
            b"",
            &padded,
        ));
        Ok(out)
    }

    /// Decrypts a name sealed with [`CollectionKey::seal_name`].
    pub(crate) fn open_name(&self, sealed: &[u8]) -> Result<String> {
        let (nonce, ct) = sealed
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(Error::DecryptionFailed)?;
        let pt = primitives::aead_open(&self.name_key(), nonce, b"", ct)?;
        let mut r = Reader::new(&pt, "collection name");
        let name = r.text(MAX_NAME)?.to_owned();
        if !r.take(r.remaining())?.iter().all(|b| *b == 0) {
            return Err(r.malformed("non-zero padding"));
        }
        Ok(name)
    }
}

impl fmt::Debug for CollectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            vault,
            collection,
            epoch,
            secret: _,
            kek: _,
            deposit: _,
        } = self;
        f.debug_struct("CollectionKey")
            .field("vault", vault)
            .field("collection", collection)
            .field("epoch", epoch)
            .finish_non_exhaustive()
    }
}

/// A record version's random payload key. Zeroized on drop; never printed;
/// obtainable only by unwrapping for a verified record.
pub struct DataKey(pub(crate) Zeroizing<[u8; 32]>);

impl DataKey {
    pub(crate) fn generate() -> Self {
        Self(Zeroizing::new(primitives::random()))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A data key wrapped under a collection key (`docs/format.md` §5.2):
/// version byte, 12-byte nonce, 48 bytes of ciphertext and tag.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    nonce: [u8; NONCE_LEN],
    ct: Vec<u8>,
}

impl WrappedDataKey {
    /// The canonical encoding ([`WRAPPED_KEY_LEN`] bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(WRAPPED_VERSION).fixed(&self.nonce).fixed(&self.ct);
        w.into_vec()
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u8(WRAPPED_VERSION).fixed(&self.nonce).fixed(&self.ct);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        r.version(WRAPPED_VERSION)?;
        let nonce = r.array()?;
        let ct = r.take(32 + TAG_LEN)?.to_vec();
        Ok(Self { nonce, ct })
    }

    /// Parses an encoded wrapped key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "wrapped data key");
        let k = Self::read(&mut r)?;
        r.finish()?;
        Ok(k)
    }
}

impl fmt::Debug for WrappedDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WrappedDataKey(..)")
    }
}

/// A context string followed by the full record context: the associated
/// data of a wrapped key (§5.2) and the HPKE `info` of a deposit (§5.5).
fn record_info(prefix: &[u8], ctx: &RecordContext) -> Vec<u8> {
    let mut w = Writer::with_context(prefix);
    w.fixed(ctx.vault.as_bytes())
        .fixed(ctx.collection.as_bytes())
        .u32(ctx.epoch)
        .fixed(ctx.record.as_bytes())
        .u32(ctx.version);
    w.into_vec()
}

/// The public half of one epoch's deposit key (`docs/format.md` §5.5),
/// bound to its (vault, collection, epoch). A write-only depositor receives
/// it in its grant and can seal data keys to it, nothing more: it opens
/// nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct DepositPublicKey {
    vault: VaultId,
    collection: CollectionId,
    epoch: u32,
    bytes: [u8; 32],
}

impl DepositPublicKey {
    /// A deposit key received for (vault, collection, epoch), as the 32
    /// bytes of an X25519 public key.
    pub(crate) fn from_parts(
        vault: VaultId,
        collection: CollectionId,
        epoch: u32,
        bytes: [u8; 32],
    ) -> Self {
        Self {
            vault,
            collection,
            epoch,
            bytes,
        }
    }

    /// The 32 bytes of the X25519 public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The epoch of this key.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The vault, collection and epoch this key belongs to.
    pub(crate) fn context(&self) -> (VaultId, CollectionId, u32) {
        (self.vault, self.collection, self.epoch)
    }

    /// Seals a data key to this deposit key for (record, version): HPKE
    /// base mode, `info` naming the full record context.
    pub(crate) fn seal(
        &self,
        key: &DataKey,
        record: &RecordId,
        version: u32,
    ) -> Result<DepositSealedKey> {
        use hpke::{Deserializable, Serializable};
        let public = <DepositKem as hpke::Kem>::PublicKey::from_bytes(&self.bytes)
            .map_err(|_| Error::InvalidInput("the deposit key is not an X25519 public key"))?;
        let info = record_info(
            DEPOSIT_SEAL_INFO,
            &RecordContext {
                vault: self.vault,
                collection: self.collection,
                epoch: self.epoch,
                record: *record,
                version,
            },
        );
        let (encapped, ct) = hpke::single_shot_seal::<DepositAead, DepositKdf, DepositKem, _>(
            &hpke::OpModeS::Base,
            &public,
            &info,
            key.0.as_ref(),
            b"",
            &mut rand_core::OsRng,
        )
        .map_err(|_| Error::InvalidInput("the deposit key is not a usable X25519 public key"))?;
        Ok(DepositSealedKey {
            enc: encapped.to_bytes().into(),
            ct,
        })
    }
}

impl fmt::Debug for DepositPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DepositPublicKey")
            .field("vault", &self.vault)
            .field("collection", &self.collection)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// A data key a depositor sealed to a deposit key (`docs/format.md` §5.5):
/// version byte `0x02`, the 32-byte HPKE encapsulated key, 48 bytes of
/// ciphertext and tag.
#[derive(Clone, PartialEq, Eq)]
pub struct DepositSealedKey {
    enc: [u8; 32],
    ct: Vec<u8>,
}

impl DepositSealedKey {
    pub(crate) fn write(&self, w: &mut Writer) {
        w.u8(DEPOSIT_SEALED_VERSION)
            .fixed(&self.enc)
            .fixed(&self.ct);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        r.version(DEPOSIT_SEALED_VERSION)?;
        let enc = r.array()?;
        let ct = r.take(32 + TAG_LEN)?.to_vec();
        Ok(Self { enc, ct })
    }
}

impl fmt::Debug for DepositSealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DepositSealedKey(..)")
    }
}

/// How a record version's data key is sealed in its metadata: wrapped under
/// the collection key (§5.2), or sealed to the epoch's deposit key by a
/// write-only depositor (§5.5). A rotation re-wraps either kind.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KeySeal {
    /// Wrapped under the collection key's KEK.
    Wrapped(WrappedDataKey),
    /// Sealed to the deposit key with HPKE.
    Deposited(DepositSealedKey),
}

impl KeySeal {
    /// The canonical encoding ([`WRAPPED_KEY_LEN`] or
    /// [`DEPOSIT_SEALED_KEY_LEN`] bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_vec()
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        match self {
            KeySeal::Wrapped(k) => k.write(w),
            KeySeal::Deposited(k) => k.write(w),
        }
    }

    /// Whether a depositor sealed it.
    pub fn is_deposit(&self) -> bool {
        matches!(self, KeySeal::Deposited(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_is_bound_to_every_context_field() {
        let vault = VaultId::from_bytes([1; 16]);
        let coll = CollectionId::from_bytes([2; 16]);
        let rec = RecordId::from_bytes([3; 16]);
        let key = CollectionKey::generate(vault, coll, 0);
        let dk = DataKey::generate();
        let wrapped = key.wrap(&dk, &rec, 1);
        assert_eq!(
            WrappedDataKey::from_bytes(&wrapped.to_bytes()).unwrap(),
            wrapped
        );
        assert_eq!(*key.unwrap(&wrapped, &rec, 1).unwrap().0, *dk.0);

        let same_secret =
            |v, c, e| CollectionKey::from_secret(v, c, e, Zeroizing::new(*key.secret()));
        let other = RecordId::from_bytes([4; 16]);
        assert!(matches!(
            key.unwrap(&wrapped, &other, 1),
            Err(Error::DecryptionFailed)
        ));
        assert!(key.unwrap(&wrapped, &rec, 2).is_err());
        assert!(same_secret(vault, coll, 1)
            .unwrap(&wrapped, &rec, 1)
            .is_err());
        assert!(same_secret(VaultId::from_bytes([9; 16]), coll, 0)
            .unwrap(&wrapped, &rec, 1)
            .is_err());
        assert!(same_secret(vault, CollectionId::from_bytes([9; 16]), 0)
            .unwrap(&wrapped, &rec, 1)
            .is_err());
        let mut bytes = wrapped.to_bytes();
        for i in 1..bytes.len() {
            bytes[i] ^= 0x80;
            let w = WrappedDataKey::from_bytes(&bytes).unwrap();
            assert!(key.unwrap(&w, &rec, 1).is_err(), "flip at {i} accepted");
            bytes[i] ^= 0x80;
        }
        assert!(format!("{key:?}").starts_with("CollectionKey { vault"));
        assert_eq!(format!("{dk:?}"), "DataKey(..)");
    }

    #[test]
    fn deposits_open_with_the_collection_key_only_in_their_context() {
        let vault = VaultId::from_bytes([1; 16]);
        let coll = CollectionId::from_bytes([2; 16]);
        let rec = RecordId::from_bytes([3; 16]);
        let key = CollectionKey::generate(vault, coll, 4);
        let public = key.deposit_public();
        assert_eq!(public, key.deposit_public(), "derived, not random");
        assert_eq!(public.context(), (vault, coll, 4));
        let dk = DataKey::generate();
        let sealed = public.seal(&dk, &rec, 1).unwrap();
        let seal = KeySeal::Deposited(sealed.clone());
        assert_eq!(seal.to_bytes().len(), DEPOSIT_SEALED_KEY_LEN);
        assert_eq!(*key.open_seal(&seal, &rec, 1).unwrap().0, *dk.0);
        let same_secret =
            |v, c, e| CollectionKey::from_secret(v, c, e, Zeroizing::new(*key.secret()));
        for (k, r, v) in [
            (same_secret(vault, coll, 5), rec, 1),
            (same_secret(VaultId::from_bytes([9; 16]), coll, 4), rec, 1),
            (
                same_secret(vault, CollectionId::from_bytes([9; 16]), 4),
                rec,
                1,
            ),
            (
                same_secret(vault, coll, 4),
                RecordId::from_bytes([9; 16]),
                1,
            ),
            (same_secret(vault, coll, 4), rec, 2),
            (CollectionKey::generate(vault, coll, 4), rec, 1),
        ] {
            assert!(matches!(
                k.open_deposit(&sealed, &r, v),
                Err(Error::DecryptionFailed)
            ));
        }
        let mut bytes = seal.to_bytes();
        for i in 1..bytes.len() {
            bytes[i] ^= 0x01;
            let mut r = Reader::new(&bytes, "t");
            let d = DepositSealedKey::read(&mut r).unwrap();
            assert!(
                key.open_deposit(&d, &rec, 1).is_err(),
                "flip at {i} accepted"
            );
            bytes[i] ^= 0x01;
        }
        assert_eq!(format!("{sealed:?}"), "DepositSealedKey(..)");
        assert!(!format!("{public:?}").contains(&hex::encode(public.as_bytes())));
    }

    #[test]
    fn names_are_sealed_and_padded() {
        let key = CollectionKey::generate(VaultId::random(), CollectionId::random(), 0);
        let a = key.seal_name("labs").unwrap();
        let b = key.seal_name("medications").unwrap();
        assert_eq!(a.len(), b.len());
        assert_eq!(key.open_name(&a).unwrap(), "labs");
        let other = CollectionKey::generate(key.vault(), key.collection(), 0);
        assert!(other.open_name(&a).is_err());
        assert!(key.seal_name("").is_err());
    }
}
