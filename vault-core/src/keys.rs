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
/// Encoded length of a [`WrappedDataKey`].
pub const WRAPPED_KEY_LEN: usize = 1 + NONCE_LEN + 32 + TAG_LEN;
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
}

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
        let mut w = Writer::with_context(WRAP_AAD);
        w.fixed(self.vault.as_bytes())
            .fixed(self.collection.as_bytes())
            .u32(self.epoch)
            .fixed(record.as_bytes())
            .u32(version);
        w.into_vec()
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
