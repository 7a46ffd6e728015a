//! Sealed records (`docs/format.md` §6): the plaintext header, padding,
//! streaming payload encryption, and the author-signed metadata the relay
//! sees.
//!
//! The API enforces the order of checks with a typestate:
//! [`RecordMetadata`] (parsed, *sealed*: nothing can be decrypted with it) →
//! [`VerifiedRecord`] (its signature, author's right to write, context and
//! position in a verified vault log were checked; only
//! [`crate::VaultState`] creates one) → [`OpenedRecord`] (after the payload
//! authenticated and its inner header matched the metadata). There is no way
//! to obtain a data key or plaintext from a [`RecordMetadata`] alone.

use std::io::{Read, Write};

use zeroize::Zeroizing;

use crate::address::AddressKind;
use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::identity::{Fingerprint, PublicIdentity, SecretIdentity};
use crate::ids::{CollectionId, RecordId, VaultId};
use crate::keys::{
    CollectionKey, DataKey, DepositPublicKey, DepositSealedKey, KeySeal, WrappedDataKey,
};
use crate::payload::{self, PayloadFailure, PayloadWriter, CHUNK_LEN};
use crate::primitives;

/// Version 2 adds the data key's commitment; version 1 is still read.
const METADATA_VERSION: u8 = 2;
/// Version 3 is version 2 with a deposit-sealed data key (§5.5).
const DEPOSIT_METADATA_VERSION: u8 = 3;
/// Version 4 is version 2 with a BLAKE3 content address (§6.3).
const BLAKE3_METADATA_VERSION: u8 = 4;
/// Version 5 is version 3 with a BLAKE3 content address.
const BLAKE3_DEPOSIT_METADATA_VERSION: u8 = 5;
const HEADER_VERSION: u8 = 1;
const METADATA_SIGNATURE_CONTEXT: &[u8] = b"vault/v1/record\0";
const PAYLOAD_KEY_INFO: &[u8] = b"vault/v1/payload\0";
const MAX_CONTENT_TYPE: usize = 255;
const MAX_TITLE: usize = 1024;
/// Smallest padded plaintext: small records all look alike.
pub const MIN_PADDED_LEN: u64 = 512;
/// Encoded length of [`RecordMetadata`] as written (version 4, and version
/// 2, still read; version 1, still read, is 32 bytes shorter: it has no key
/// commitment).
pub const METADATA_LEN: usize =
    1 + 16 * 3 + 4 + 4 + 16 + 8 + 32 + crate::keys::WRAPPED_KEY_LEN + 32 + 32 + 64;
/// Encoded length of [`RecordMetadata`] whose data key a write-only
/// depositor sealed (version 5, and version 3, still read): [`METADATA_LEN`] with a
/// [`crate::keys::DEPOSIT_SEALED_KEY_LEN`]-byte sealed key in place of the
/// wrapped one. The longest metadata there is.
pub const DEPOSIT_METADATA_LEN: usize =
    METADATA_LEN - crate::keys::WRAPPED_KEY_LEN + crate::keys::DEPOSIT_SEALED_KEY_LEN;

#[cfg(test)]
thread_local! {
    /// The content address the tests' records are sealed with (new
    /// records use [`AddressKind::CURRENT`]; tests of version 2 and 3
    /// metadata switch to SHA-256 with [`sealing_with`]).
    static TEST_ADDRESS: std::cell::Cell<AddressKind> = const { std::cell::Cell::new(AddressKind::CURRENT) };
}

/// Makes this thread's new records use `kind` until the guard drops (tests
/// of older metadata versions).
#[cfg(test)]
pub(crate) fn sealing_with(kind: AddressKind) -> impl Drop {
    struct Restore(AddressKind);
    impl Drop for Restore {
        fn drop(&mut self) {
            TEST_ADDRESS.with(|c| c.set(self.0));
        }
    }
    Restore(TEST_ADDRESS.with(|c| c.replace(kind)))
}

/// The content address new records are sealed with.
fn new_address() -> AddressKind {
    #[cfg(test)]
    return TEST_ADDRESS.with(|c| c.get());
    #[cfg(not(test))]
    AddressKind::CURRENT
}

/// Padmé padding (Nikitin et al., PETS 2019) with a floor of
/// [`MIN_PADDED_LEN`]: the padded length leaks O(log log n) bits and adds at
/// most 1/16 above the floor (`docs/format.md` §6.2). `None` if the length overflows.
pub fn padded_len(len: u64) -> Option<u64> {
    let len = len.max(MIN_PADDED_LEN);
    let e = 63 - u64::from(len.leading_zeros());
    let s = 64 - u64::from(e.leading_zeros());
    let last_bits = e - s;
    let mask = (1u64 << last_bits) - 1;
    len.checked_add(mask).map(|v| v & !mask)
}

/// The plaintext of one record version: a reader and the exact number of
/// bytes it yields. Sealing fails (and writes no entry) if the reader
/// yields more or fewer bytes than `len`.
pub struct RecordBody<R> {
    reader: R,
    len: u64,
}

impl<R: Read> RecordBody<R> {
    /// A body of exactly `len` bytes read from `reader`.
    pub fn new(reader: R, len: u64) -> Self {
        Self { reader, len }
    }

    /// The number of plaintext bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The reader, which must yield exactly [`RecordBody::len`] bytes.
    pub(crate) fn into_reader(self) -> R {
        self.reader
    }
}

impl<'b> From<&'b [u8]> for RecordBody<&'b [u8]> {
    fn from(bytes: &'b [u8]) -> Self {
        Self::new(bytes, bytes.len() as u64)
    }
}

impl<R> std::fmt::Debug for RecordBody<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBody")
            .field("len", &self.len)
            .finish()
    }
}

/// What a record says about itself, sealed inside its ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// A FHIR resource type (`fhir+Observation`) or a MIME type
    /// (`application/pdf`); at most 255 bytes.
    pub content_type: String,
    /// A human title; at most 1024 bytes.
    pub title: String,
    /// When this version was written, seconds since the Unix epoch.
    pub created_at: u64,
    /// The clinical date the record is about, if any (seconds since the Unix
    /// epoch; may be before 1970 as a negative number).
    pub effective_at: Option<i64>,
}

impl RecordInfo {
    fn check(&self) -> Result<()> {
        if self.content_type.is_empty()
            || self.content_type.len() > MAX_CONTENT_TYPE
            || self.content_type.chars().any(char::is_control)
        {
            return Err(Error::InvalidInput(
                "content type must be 1 to 255 bytes without control characters",
            ));
        }
        if self.title.len() > MAX_TITLE || self.title.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "title must be at most 1024 bytes without control characters",
            ));
        }
        Ok(())
    }
}

/// The inner header: the record's context repeated inside the ciphertext,
/// plus its info and the body length.
struct InnerHeader {
    vault: VaultId,
    collection: CollectionId,
    record: RecordId,
    version: u32,
    author: Fingerprint,
    info: RecordInfo,
    body_len: u64,
}

impl InnerHeader {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(HEADER_VERSION)
            .fixed(self.vault.as_bytes())
            .fixed(self.collection.as_bytes())
            .fixed(self.record.as_bytes())
            .u32(self.version)
            .fixed(self.author.as_bytes())
            .u64(self.info.created_at)
            .option(self.info.effective_at, |w, t| {
                w.u64(t as u64);
            })
            .text(&self.info.content_type)
            .text(&self.info.title)
            .u64(self.body_len);
        w.into_vec()
    }

    /// Parses the header at the start of the plaintext; returns it and its
    /// length.
    fn parse(plain: &[u8]) -> Result<(Self, usize)> {
        let mut r = Reader::new(plain, "record header");
        r.version(HEADER_VERSION)?;
        let vault = VaultId::from_bytes(r.array()?);
        let collection = CollectionId::from_bytes(r.array()?);
        let record = RecordId::from_bytes(r.array()?);
        let version = r.u32()?;
        let author = Fingerprint::from_bytes(r.array()?);
        let created_at = r.u64()?;
        let effective_at = r.option(|r| r.u64().map(|t| t as i64))?;
        let content_type = r.text(MAX_CONTENT_TYPE)?.to_owned();
        let title = r.text(MAX_TITLE)?.to_owned();
        let body_len = r.u64()?;
        let used = plain.len() - r.remaining();
        let info = RecordInfo {
            content_type,
            title,
            created_at,
            effective_at,
        };
        info.check()
            .map_err(|_| r.malformed("invalid content type or title"))?;
        Ok((
            Self {
                vault,
                collection,
                record,
                version,
                author,
                info,
                body_len,
            },
            used,
        ))
    }
}

/// A record version's signed metadata: everything the relay sees of it
/// (`docs/format.md` §6.4). Parsed strictly; its signature is checked only
/// when a [`crate::VaultState`] accepts the log entry carrying it.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub(crate) vault: VaultId,
    pub(crate) collection: CollectionId,
    pub(crate) record: RecordId,
    pub(crate) version: u32,
    pub(crate) epoch: u32,
    pub(crate) payload_salt: [u8; 16],
    pub(crate) padded_len: u64,
    pub(crate) ciphertext_hash: [u8; 32],
    /// How `ciphertext_hash` is computed: SHA-256 in versions 1 to 3,
    /// BLAKE3 in versions 4 and 5.
    pub(crate) address: AddressKind,
    /// The data key, wrapped (versions 1, 2 and 4) or deposit-sealed (3
    /// and 5).
    pub(crate) wrapped_key: KeySeal,
    pub(crate) author: Fingerprint,
    /// The data key's commitment (§6.4; `None` in version-1 metadata).
    pub(crate) key_commitment: Option<[u8; 32]>,
    pub(crate) signature: [u8; 64],
}

/// The context a record version's data key is committed in: vault,
/// collection, record and version.
fn data_key_context(
    vault: &VaultId,
    collection: &CollectionId,
    record: &RecordId,
    version: u32,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.fixed(b"data-key")
        .fixed(vault.as_bytes())
        .fixed(collection.as_bytes())
        .fixed(record.as_bytes())
        .u32(version);
    w.into_vec()
}

impl RecordMetadata {
    /// Checks a data key against the commitment this metadata signs
    /// (version 2); a key that does not match is refused as
    /// [`Error::DecryptionFailed`], like a key that does not unwrap.
    pub(crate) fn check_key(&self, key: DataKey) -> Result<DataKey> {
        let Some(expected) = self.key_commitment else {
            return Ok(key);
        };
        let actual = primitives::key_commitment(
            &key.0,
            &data_key_context(&self.vault, &self.collection, &self.record, self.version),
        );
        if primitives::ct_eq(&actual, &expected) {
            Ok(key)
        } else {
            Err(Error::DecryptionFailed)
        }
    }

    fn write_body(&self, w: &mut Writer) {
        w.u8(
            match (
                self.address,
                self.wrapped_key.is_deposit(),
                self.key_commitment.is_some(),
            ) {
                (AddressKind::Blake3, true, _) => BLAKE3_DEPOSIT_METADATA_VERSION,
                (AddressKind::Blake3, false, _) => BLAKE3_METADATA_VERSION,
                (AddressKind::Sha256, true, _) => DEPOSIT_METADATA_VERSION,
                (AddressKind::Sha256, false, true) => METADATA_VERSION,
                (AddressKind::Sha256, false, false) => 1,
            },
        )
        .fixed(self.vault.as_bytes())
        .fixed(self.collection.as_bytes())
        .fixed(self.record.as_bytes())
        .u32(self.version)
        .u32(self.epoch)
        .fixed(&self.payload_salt)
        .u64(self.padded_len)
        .fixed(&self.ciphertext_hash);
        self.wrapped_key.write(w);
        w.fixed(self.author.as_bytes());
        if let Some(c) = &self.key_commitment {
            w.fixed(c);
        }
    }

    /// Verifies the metadata's signature with `author`'s key (the key of
    /// the identity the metadata names as author; [`crate::VaultState`]
    /// calls this when it applies the record-put carrying it).
    pub fn verify_signature(&self, author: &PublicIdentity) -> Result<()> {
        primitives::verify_in_batch(
            author.verifying_key(),
            &self.signed_bytes(),
            &self.signature,
            "record metadata",
        )
    }

    pub(crate) fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_context(METADATA_SIGNATURE_CONTEXT);
        self.write_body(&mut w);
        w.into_vec()
    }

    /// The canonical encoding ([`METADATA_LEN`] bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write_body(&mut w);
        w.fixed(&self.signature);
        w.into_vec()
    }

    /// Parses encoded metadata strictly (no signature check: see the module
    /// documentation).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "record metadata");
        let format = r.u8()?;
        if !matches!(
            format,
            1 | METADATA_VERSION
                | DEPOSIT_METADATA_VERSION
                | BLAKE3_METADATA_VERSION
                | BLAKE3_DEPOSIT_METADATA_VERSION
        ) {
            return Err(Error::UnsupportedVersion {
                what: "record metadata",
                version: format,
            });
        }
        let m = Self {
            vault: VaultId::from_bytes(r.array()?),
            collection: CollectionId::from_bytes(r.array()?),
            record: RecordId::from_bytes(r.array()?),
            version: r.u32()?,
            epoch: r.u32()?,
            payload_salt: r.array()?,
            padded_len: r.u64()?,
            ciphertext_hash: r.array()?,
            address: if format >= BLAKE3_METADATA_VERSION {
                AddressKind::Blake3
            } else {
                AddressKind::Sha256
            },
            wrapped_key: if matches!(
                format,
                DEPOSIT_METADATA_VERSION | BLAKE3_DEPOSIT_METADATA_VERSION
            ) {
                KeySeal::Deposited(DepositSealedKey::read(&mut r)?)
            } else {
                KeySeal::Wrapped(WrappedDataKey::read(&mut r)?)
            },
            author: Fingerprint::from_bytes(r.array()?),
            key_commitment: if format != 1 { Some(r.array()?) } else { None },
            signature: r.array()?,
        };
        r.finish()?;
        if m.version == 0 {
            return Err(Error::Malformed {
                what: "record metadata",
                reason: "version 0",
            });
        }
        if padded_len(m.padded_len) != Some(m.padded_len) {
            return Err(Error::Malformed {
                what: "record metadata",
                reason: "length is not a padded length",
            });
        }
        Ok(m)
    }

    /// The vault.
    pub fn vault(&self) -> VaultId {
        self.vault
    }
    /// The collection.
    pub fn collection(&self) -> CollectionId {
        self.collection
    }
    /// The record.
    pub fn record(&self) -> RecordId {
        self.record
    }
    /// The record version (1 for the first).
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The collection epoch the data key was first wrapped under (or, for
    /// a deposit, whose deposit key it was sealed to).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    /// Whether a write-only depositor wrote this version: its data key is
    /// sealed to the epoch's deposit key (metadata version 3).
    pub fn is_deposit(&self) -> bool {
        self.wrapped_key.is_deposit()
    }
    /// The data key as sealed in this metadata (opaque bytes).
    pub fn key_seal(&self) -> &KeySeal {
        &self.wrapped_key
    }
    /// The author's fingerprint.
    pub fn author(&self) -> Fingerprint {
        self.author
    }
    /// The padded plaintext length (what sizes leak).
    pub fn padded_len(&self) -> u64 {
        self.padded_len
    }
    /// The exact ciphertext length.
    pub fn ciphertext_len(&self) -> u64 {
        payload::ciphertext_len(self.padded_len).unwrap_or(u64::MAX)
    }
    /// The ciphertext's hash, the blob's content address: its BLAKE3
    /// (metadata versions 4 and 5) or SHA-256 (1 to 3), as
    /// [`RecordMetadata::address_kind`] says.
    pub fn ciphertext_hash(&self) -> &[u8; 32] {
        &self.ciphertext_hash
    }

    /// How [`RecordMetadata::ciphertext_hash`] is computed (SHA-256 in
    /// metadata versions 1 to 3, BLAKE3 in 4 and 5): a reader checks the
    /// ciphertext with it.
    pub fn address_kind(&self) -> AddressKind {
        self.address
    }
}

impl std::fmt::Debug for RecordMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordMetadata")
            .field("vault", &self.vault)
            .field("collection", &self.collection)
            .field("record", &self.record)
            .field("version", &self.version)
            .field("epoch", &self.epoch)
            .field("padded_len", &self.padded_len)
            .field("author", &self.author)
            .finish_non_exhaustive()
    }
}

pub(crate) fn payload_key(
    data_key: &DataKey,
    salt: &[u8; 16],
    vault: &VaultId,
    collection: &CollectionId,
    record: &RecordId,
    version: u32,
) -> Zeroizing<[u8; 32]> {
    let mut info = Writer::with_context(PAYLOAD_KEY_INFO);
    info.fixed(vault.as_bytes())
        .fixed(collection.as_bytes())
        .fixed(record.as_bytes())
        .u32(version);
    primitives::hkdf32(data_key.0.as_ref(), salt, info.as_slice())
}

/// What a new record version's data key is sealed to.
pub(crate) enum SealTo<'k> {
    /// Wrapped under the collection key (a reader-writer's record).
    Collection(&'k CollectionKey),
    /// Sealed to the epoch's deposit key (a write-only depositor's record).
    Deposit(&'k DepositPublicKey),
}

impl SealTo<'_> {
    fn context(&self) -> (VaultId, CollectionId, u32) {
        match self {
            SealTo::Collection(k) => (k.vault(), k.collection(), k.epoch()),
            SealTo::Deposit(k) => k.context(),
        }
    }

    fn seal(&self, data_key: &DataKey, record: &RecordId, version: u32) -> Result<KeySeal> {
        Ok(match self {
            SealTo::Collection(k) => KeySeal::Wrapped(k.wrap(data_key, record, version)),
            SealTo::Deposit(k) => KeySeal::Deposited(k.seal(data_key, record, version)?),
        })
    }
}

/// Seals a record version: streams `body` through padding and encryption
/// into `out`, and returns the signed metadata (the tests' shortcut through
/// [`PlannedRecord`]).
#[cfg(test)]
pub(crate) fn seal<R: Read, W: Write>(
    author: &SecretIdentity,
    key: SealTo<'_>,
    record: RecordId,
    version: u32,
    info: &RecordInfo,
    body: RecordBody<R>,
    out: W,
) -> Result<RecordMetadata> {
    let (vault, collection, _) = key.context();
    let plan = PlannedRecord::new(
        author.fingerprint(),
        vault,
        collection,
        record,
        version,
        info,
        body.len,
    )?;
    let ciphertext_hash = plan.job().seal(body.reader, out)?;
    plan.finish(author, key, ciphertext_hash)
}

/// A record version chosen but not sealed yet: its place (vault, collection,
/// record, version), its author, a fresh data key and salt, and the
/// [`PayloadJob`] that seals its payload. Made by
/// [`crate::VaultState::plan_record`]; once the job's ciphertext hash is
/// known, [`crate::VaultState::finish_record`] wraps the data key and signs.
///
/// The payload does not depend on the collection's epoch, so a plan sealed
/// before a rotation still finishes after it, under the new epoch's key.
pub struct PlannedRecord {
    vault: VaultId,
    collection: CollectionId,
    record: RecordId,
    version: u32,
    author: Fingerprint,
    data_key: DataKey,
    salt: [u8; 16],
    job: PayloadJob,
}

impl PlannedRecord {
    pub(crate) fn new(
        author: Fingerprint,
        vault: VaultId,
        collection: CollectionId,
        record: RecordId,
        version: u32,
        info: &RecordInfo,
        body_len: u64,
    ) -> Result<Self> {
        info.check()?;
        let header = InnerHeader {
            vault,
            collection,
            record,
            version,
            author,
            info: info.clone(),
            body_len,
        }
        .encode();
        let padded_len = body_len
            .checked_add(header.len() as u64)
            .and_then(padded_len)
            .ok_or(Error::InvalidInput("record too large"))?;
        let data_key = DataKey::generate();
        let salt = primitives::random::<16>();
        let key = payload_key(&data_key, &salt, &vault, &collection, &record, version);
        Ok(Self {
            vault,
            collection,
            record,
            version,
            author,
            data_key,
            salt,
            job: PayloadJob {
                key,
                header,
                body_len,
                padded_len,
                address: new_address(),
            },
        })
    }

    /// The sealing of the payload, for this process or a worker.
    pub fn job(&self) -> &PayloadJob {
        &self.job
    }

    /// The record this version belongs to.
    pub fn record(&self) -> RecordId {
        self.record
    }

    /// The version number this plan writes.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The collection the record goes to.
    pub fn collection(&self) -> CollectionId {
        self.collection
    }

    /// The signed metadata of the sealed payload whose hash is
    /// `ciphertext_hash`, its data key sealed by `key` (which must be of
    /// this plan's vault and collection) and signed by `author` (this
    /// plan's author).
    pub(crate) fn finish(
        &self,
        author: &SecretIdentity,
        key: SealTo<'_>,
        ciphertext_hash: [u8; 32],
    ) -> Result<RecordMetadata> {
        let (vault, collection, epoch) = key.context();
        let differs = [
            ("vault", vault != self.vault),
            ("collection", collection != self.collection),
            ("author", author.fingerprint() != self.author),
        ]
        .into_iter()
        .find_map(|(field, differs)| differs.then_some(field));
        if let Some(field) = differs {
            return Err(Error::ContextMismatch {
                what: "planned record",
                field,
            });
        }
        let mut metadata = RecordMetadata {
            vault,
            collection,
            record: self.record,
            version: self.version,
            epoch,
            payload_salt: self.salt,
            padded_len: self.job.padded_len,
            ciphertext_hash,
            address: self.job.address,
            wrapped_key: key.seal(&self.data_key, &self.record, self.version)?,
            author: self.author,
            key_commitment: Some(primitives::key_commitment(
                &self.data_key.0,
                &data_key_context(&vault, &collection, &self.record, self.version),
            )),
            signature: [0; 64],
        };
        metadata.signature = author.sign(&metadata.signed_bytes());
        Ok(metadata)
    }
}

impl std::fmt::Debug for PlannedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedRecord")
            .field("vault", &self.vault)
            .field("collection", &self.collection)
            .field("record", &self.record)
            .field("version", &self.version)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

/// Version byte of [`PayloadJob::to_bytes`] (2: with the address kind).
const PAYLOAD_JOB_VERSION: u8 = 2;
/// Longest inner header a [`PayloadJob`] carries: every field at its
/// maximum length, with room to spare.
const MAX_JOB_HEADER: usize = 4096;

/// The sealing of one record version's payload, handed to code that holds
/// no other secret (the web app's worker): the payload key, the encoded
/// inner header, the body's length and the padded length (`docs/format.md`
/// §6). Whoever holds it can seal this one version's payload (and, from the
/// same ciphertext, open it); it opens nothing else, and signs nothing.
///
/// The key is zeroized on drop and never printed. [`PayloadJob::to_bytes`]
/// is a message between two parts of one build (the page and its worker),
/// never stored or sent over the network.
pub struct PayloadJob {
    key: Zeroizing<[u8; 32]>,
    header: Vec<u8>,
    body_len: u64,
    padded_len: u64,
    address: AddressKind,
}

impl PayloadJob {
    /// The exact number of plaintext bytes [`PayloadJob::seal`] reads.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// The length of the ciphertext [`PayloadJob::seal`] writes.
    pub fn ciphertext_len(&self) -> u64 {
        payload::ciphertext_len(self.padded_len).unwrap_or(u64::MAX)
    }

    /// Streams `body` (exactly [`PayloadJob::body_len`] bytes) through the
    /// inner header, padding and encryption into `out`, and returns the
    /// ciphertext's content address (its BLAKE3 for new records, §6.3).
    ///
    /// Seal a job once: sealing another body under the same job reuses its
    /// key and nonces, so at most one of its outputs may ever leave (the
    /// one the record is finished with).
    ///
    /// Errors: [`Error::LengthMismatch`] if `body` yields more or fewer
    /// bytes; [`Error::Io`] if reading or writing fails. Either way what
    /// was written to `out` must be thrown away.
    pub fn seal<R: Read, W: Write>(&self, mut body: R, out: W) -> Result<[u8; 32]> {
        let (written, ciphertext_hash) =
            payload::with_hasher(self.padded_len, self.address, |hasher| {
                let mut writer = PayloadWriter::new(&self.key, self.padded_len, out, hasher);
                writer.write_plain(&self.header)?;
                let mut buf = Zeroizing::new(vec![0u8; CHUNK_LEN]);
                let mut read: u64 = 0;
                loop {
                    let n = match body.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e.into()),
                    };
                    if n == 0 {
                        break;
                    }
                    read += n as u64;
                    if read > self.body_len {
                        return Err(Error::LengthMismatch {
                            declared: self.body_len,
                            actual: read,
                        });
                    }
                    writer.write_plain(buf.get(..n).unwrap_or_default())?;
                }
                if read != self.body_len {
                    return Err(Error::LengthMismatch {
                        declared: self.body_len,
                        actual: read,
                    });
                }
                buf.fill(0);
                let mut padding = self.padded_len - self.body_len - self.header.len() as u64;
                while padding > 0 {
                    let n = padding.min(CHUNK_LEN as u64) as usize;
                    writer.write_plain(buf.get(..n).unwrap_or_default())?;
                    padding -= n as u64;
                }
                writer.finish()
            });
        written?;
        Ok(ciphertext_hash)
    }

    /// The job as bytes for the worker: version, address kind (1 SHA-256,
    /// 2 BLAKE3), key, body length, padded length, inner header. Secret:
    /// zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(2 + 32 + 16 + self.header.len()));
        out.push(PAYLOAD_JOB_VERSION);
        out.push(address_byte(self.address));
        out.extend_from_slice(self.key.as_ref());
        out.extend_from_slice(&self.body_len.to_be_bytes());
        out.extend_from_slice(&self.padded_len.to_be_bytes());
        out.extend_from_slice(&self.header);
        out
    }

    /// Parses [`PayloadJob::to_bytes`]. The lengths must agree with each
    /// other (the padded length is the one §6.2 gives for the header and
    /// body), else [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |reason| Error::Malformed {
            what: "payload job",
            reason,
        };
        let (version, rest) = bytes.split_first().ok_or(bad("empty"))?;
        if *version != PAYLOAD_JOB_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "payload job",
                version: *version,
            });
        }
        let (address, rest) = rest.split_first().ok_or(bad("truncated"))?;
        let address = address_kind(*address).ok_or(bad("unknown address kind"))?;
        let (key, rest) = rest.split_first_chunk::<32>().ok_or(bad("truncated"))?;
        let (body_len, rest) = rest.split_first_chunk::<8>().ok_or(bad("truncated"))?;
        let (padded, header) = rest.split_first_chunk::<8>().ok_or(bad("truncated"))?;
        let body_len = u64::from_be_bytes(*body_len);
        let padded_len = u64::from_be_bytes(*padded);
        if header.is_empty() || header.len() > MAX_JOB_HEADER {
            return Err(bad("bad header length"));
        }
        if body_len
            .checked_add(header.len() as u64)
            .and_then(crate::record::padded_len)
            != Some(padded_len)
            || payload::ciphertext_len(padded_len).is_none()
        {
            return Err(bad("lengths do not agree"));
        }
        Ok(Self {
            key: Zeroizing::new(*key),
            header: header.to_vec(),
            body_len,
            padded_len,
            address,
        })
    }
}

impl std::fmt::Debug for PayloadJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadJob")
            .field("body_len", &self.body_len)
            .field("padded_len", &self.padded_len)
            .finish_non_exhaustive()
    }
}

/// Where a verified record's data key comes from: the seal (wrapped, or
/// deposit-sealed) that the collection key of `epoch` opens. For a version
/// a rotation re-wrapped, the latest re-wrap.
pub(crate) struct KeySource<'a> {
    pub(crate) epoch: u32,
    pub(crate) seal: &'a KeySeal,
}

/// A record version whose metadata was verified in a vault log: signature,
/// author's right to write, context, and position (it is the version the log
/// says is current, or the exact version asked for). Only
/// [`crate::VaultState`] creates these.
pub struct VerifiedRecord<'a> {
    pub(crate) metadata: &'a RecordMetadata,
    pub(crate) key_source: KeySource<'a>,
    pub(crate) seq: u64,
}

impl<'a> VerifiedRecord<'a> {
    /// The verified metadata.
    pub fn metadata(&self) -> &RecordMetadata {
        self.metadata
    }

    /// The log sequence number of the entry that wrote this version.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The sealed key and the epoch whose collection key opens it.
    pub(crate) fn wrapped(&self) -> (u32, &KeySeal) {
        (self.key_source.epoch, self.key_source.seal)
    }

    /// Unwraps the data key with `key`, which must be the collection key of
    /// the epoch the record is currently wrapped under.
    pub(crate) fn data_key(&self, key: &CollectionKey) -> Result<DataKey> {
        let (epoch, wrapped) = self.wrapped();
        if key.vault() != self.metadata.vault {
            return Err(Error::ContextMismatch {
                what: "collection key",
                field: "vault",
            });
        }
        if key.collection() != self.metadata.collection {
            return Err(Error::ContextMismatch {
                what: "collection key",
                field: "collection",
            });
        }
        if key.epoch() != epoch {
            return Err(Error::ContextMismatch {
                what: "collection key",
                field: "epoch",
            });
        }
        self.metadata.check_key(key.open_seal(
            wrapped,
            &self.metadata.record,
            self.metadata.version,
        )?)
    }

    /// Decrypts the payload from `ciphertext`, writing the body to `out`
    /// chunk by chunk (each chunk only after it authenticated), and returns
    /// the record's inner header: [`OpenJob::open`] with this version's job
    /// (the tests' shortcut).
    #[cfg(test)]
    pub(crate) fn open_with<R: Read, W: Write>(
        &self,
        data_key: &DataKey,
        ciphertext: R,
        out: W,
    ) -> Result<OpenedRecord> {
        self.open_job(data_key).open(ciphertext, out)
    }

    /// The opening of this version's payload under `data_key` (which
    /// [`VerifiedRecord::data_key`] or a grant gave).
    pub(crate) fn open_job(&self, data_key: &DataKey) -> OpenJob {
        let m = self.metadata;
        OpenJob {
            key: payload_key(
                data_key,
                &m.payload_salt,
                &m.vault,
                &m.collection,
                &m.record,
                m.version,
            ),
            padded_len: m.padded_len,
            ciphertext_hash: m.ciphertext_hash,
            address: m.address,
            vault: m.vault,
            collection: m.collection,
            record: m.record,
            version: m.version,
            author: m.author,
        }
    }
}

/// Version byte of [`OpenJob::to_bytes`] (2: with the address kind).
const OPEN_JOB_VERSION: u8 = 2;
/// Length of [`OpenJob::to_bytes`].
const OPEN_JOB_LEN: usize = 1 + 1 + 32 + 8 + 32 + 16 * 3 + 4 + 32;

/// The address kind's byte in a job's bytes.
fn address_byte(kind: AddressKind) -> u8 {
    match kind {
        AddressKind::Sha256 => 1,
        AddressKind::Blake3 => 2,
    }
}

/// The address kind a job's byte names.
fn address_kind(byte: u8) -> Option<AddressKind> {
    match byte {
        1 => Some(AddressKind::Sha256),
        2 => Some(AddressKind::Blake3),
        _ => None,
    }
}

/// The opening of one verified record version's payload, handed to code
/// that holds no other secret (the web app's worker): the payload key, the
/// signed padded length and ciphertext hash, and the place the inner header
/// must name. Made by [`crate::Keyring::open_job`] from a verified record
/// only; whoever holds it can open this one version, nothing else.
///
/// The key is zeroized on drop and never printed. [`OpenJob::to_bytes`] is
/// a message between two parts of one build, never stored or sent.
pub struct OpenJob {
    key: Zeroizing<[u8; 32]>,
    padded_len: u64,
    ciphertext_hash: [u8; 32],
    address: AddressKind,
    vault: VaultId,
    collection: CollectionId,
    record: RecordId,
    version: u32,
    author: Fingerprint,
}

impl OpenJob {
    /// The exact ciphertext length [`OpenJob::open`] reads.
    pub fn ciphertext_len(&self) -> u64 {
        payload::ciphertext_len(self.padded_len).unwrap_or(u64::MAX)
    }

    /// The padded plaintext length: an upper bound of the body's length.
    pub fn padded_len(&self) -> u64 {
        self.padded_len
    }

    /// Decrypts the payload from `ciphertext`, writing the body to `out`
    /// chunk by chunk (each chunk only after it authenticated), and returns
    /// the record's inner header.
    ///
    /// Errors: [`Error::CiphertextMismatch`] if the bytes are not the
    /// ciphertext the author signed (swapped, truncated, reordered, extended);
    /// [`Error::DecryptionFailed`] if they are but do not decrypt;
    /// [`Error::ContextMismatch`] if the inner header names another context.
    /// On any error, what was written to `out` must be thrown away.
    pub fn open<R: Read, W: Write>(&self, ciphertext: R, mut out: W) -> Result<OpenedRecord> {
        let mut header: Option<InnerHeader> = None;
        let mut body_left: u64 = 0;
        let mut padding_left: u64 = 0;
        let (result, hash) = payload::read_payload(
            &self.key,
            self.padded_len,
            self.address,
            ciphertext,
            |mut chunk| {
                if header.is_none() {
                    let (h, used) = InnerHeader::parse(chunk)?;
                    self.check_inner(&h)?;
                    let total = (used as u64)
                        .checked_add(h.body_len)
                        .filter(|t| padded_len(*t) == Some(self.padded_len))
                        .ok_or(Error::Malformed {
                            what: "record header",
                            reason: "body length does not match padded length",
                        })?;
                    body_left = h.body_len;
                    padding_left = self.padded_len - total;
                    header = Some(h);
                    chunk = chunk.get(used..).unwrap_or_default();
                }
                let n = usize::try_from(body_left.min(chunk.len() as u64)).unwrap_or(0);
                let (body, pad) = chunk.split_at(n);
                out.write_all(body)?;
                body_left -= n as u64;
                if pad.iter().any(|b| *b != 0) {
                    return Err(Error::Malformed {
                        what: "record payload",
                        reason: "non-zero padding",
                    });
                }
                padding_left = padding_left.saturating_sub(pad.len() as u64);
                Ok(())
            },
        );
        let hash_ok = primitives::ct_eq(&hash, &self.ciphertext_hash);
        match result {
            Err(PayloadFailure::Io(e)) => return Err(e.into()),
            // Chunks authenticate under a key every reader of the record can
            // derive, so a reader can forge them (and make the header or
            // padding checks fail): only the signed hash says the bytes are
            // the author's, so it is checked before the sink's error.
            _ if !hash_ok => return Err(Error::CiphertextMismatch),
            Err(PayloadFailure::Sink(e)) => return Err(e),
            Err(PayloadFailure::Crypto) => return Err(Error::DecryptionFailed),
            Ok(()) => {}
        }
        out.flush()?;
        let h = header.ok_or(Error::DecryptionFailed)?;
        if body_left != 0 || padding_left != 0 {
            return Err(Error::Malformed {
                what: "record payload",
                reason: "length mismatch",
            });
        }
        Ok(OpenedRecord {
            record: h.record,
            collection: h.collection,
            version: h.version,
            author: h.author,
            body_len: h.body_len,
            info: h.info,
        })
    }

    fn check_inner(&self, h: &InnerHeader) -> Result<()> {
        let field = if h.vault != self.vault {
            "vault"
        } else if h.collection != self.collection {
            "collection"
        } else if h.record != self.record {
            "record"
        } else if h.version != self.version {
            "version"
        } else if h.author != self.author {
            "author"
        } else {
            return Ok(());
        };
        Err(Error::ContextMismatch {
            what: "record ciphertext",
            field,
        })
    }

    /// The job as bytes for the worker: version, address kind, key, padded
    /// length, ciphertext hash, vault, collection, record, version, author.
    /// Secret: zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(OPEN_JOB_LEN));
        out.push(OPEN_JOB_VERSION);
        out.push(address_byte(self.address));
        out.extend_from_slice(self.key.as_ref());
        out.extend_from_slice(&self.padded_len.to_be_bytes());
        out.extend_from_slice(&self.ciphertext_hash);
        out.extend_from_slice(self.vault.as_bytes());
        out.extend_from_slice(self.collection.as_bytes());
        out.extend_from_slice(self.record.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(self.author.as_bytes());
        out
    }

    /// Parses [`OpenJob::to_bytes`]: [`Error::Malformed`] unless it is
    /// exactly that long and its padded length is one §6.2 gives.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |reason| Error::Malformed {
            what: "open job",
            reason,
        };
        let (version, rest) = bytes.split_first().ok_or(bad("empty"))?;
        if *version != OPEN_JOB_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "open job",
                version: *version,
            });
        }
        if bytes.len() != OPEN_JOB_LEN {
            return Err(bad("wrong length"));
        }
        let mut r = Reader::new(rest, "open job");
        let address = address_kind(r.u8()?).ok_or(bad("unknown address kind"))?;
        let key = Zeroizing::new(r.array::<32>()?);
        let padded = r.u64()?;
        let ciphertext_hash = r.array::<32>()?;
        let vault = VaultId::from_bytes(r.array::<16>()?);
        let collection = CollectionId::from_bytes(r.array::<16>()?);
        let record = RecordId::from_bytes(r.array::<16>()?);
        let record_version = r.u32()?;
        let author = Fingerprint::from_bytes(r.array::<32>()?);
        if padded_len(padded) != Some(padded) || payload::ciphertext_len(padded).is_none() {
            return Err(bad("not a padded length"));
        }
        Ok(Self {
            key,
            padded_len: padded,
            ciphertext_hash,
            address,
            vault,
            collection,
            record,
            version: record_version,
            author,
        })
    }
}

impl std::fmt::Debug for OpenJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenJob")
            .field("record", &self.record)
            .field("version", &self.version)
            .field("padded_len", &self.padded_len)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for VerifiedRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedRecord")
            .field("metadata", self.metadata)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// A record whose payload was decrypted and authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedRecord {
    /// The record.
    pub record: RecordId,
    /// Its collection.
    pub collection: CollectionId,
    /// Its version.
    pub version: u32,
    /// Its author (verified: the log entry and the metadata are signed by
    /// this identity, and the inner header names it).
    pub author: Fingerprint,
    /// The body's length in bytes.
    pub body_len: u64,
    /// Content type, title and dates.
    pub info: RecordInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_bounds() {
        assert_eq!(padded_len(0), Some(512));
        assert_eq!(padded_len(512), Some(512));
        let mut prev = 0;
        for len in (1..5_000_000u64).step_by(9973) {
            let p = padded_len(len).unwrap();
            assert!(p >= len && p >= prev);
            assert!(
                p - len <= len / 8 + 1 || p == MIN_PADDED_LEN,
                "{len} -> {p}"
            );
            assert_eq!(padded_len(p), Some(p), "padded lengths are fixed points");
            prev = p;
        }
        assert_eq!(padded_len(u64::MAX), None);
    }
}
