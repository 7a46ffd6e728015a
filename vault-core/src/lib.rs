//! vault-core: the cryptography, formats, verification and local storage of
//! vault, a client-side end-to-end encrypted health-record vault.
//!
//! Everything here runs on the patient's or clinician's device and does no
//! network I/O. `docs/format.md` at the repository root is the normative
//! byte-level specification of every format this crate reads and writes;
//! `ARCHITECTURE.md` explains the key hierarchy and data flow.
//!
//! The main types, in the order data flows through them:
//! - [`SecretIdentity`] / [`PublicIdentity`] / [`Fingerprint`]: who a
//!   principal is ([`keyfile`] seals secrets with a passphrase).
//! - [`VaultState`]: a vault's log, verified entry by entry; it produces new
//!   entries (create collections, put records, share, revoke) and hands out
//!   [`VerifiedRecord`]s.
//! - [`Keyring`]: the keys one principal unlocks from verified grants; it
//!   opens verified records into plaintext ([`OpenedRecord`]).
//! - [`export`]: standard age files and FHIR R4 bundles for the patient.
//! - [`store`]: the local store trait, in memory and (feature `sqlite`) on
//!   disk.
#![forbid(unsafe_code)]

pub mod address;
mod agefile;
mod agency;
mod deferred;
pub mod devices;
mod encoding;
mod error;
pub mod export;
mod grant;
mod identity;
mod ids;
pub mod keyfile;
mod keys;
mod log;
pub mod pairing;
mod payload;
mod primitives;
mod record;
pub mod request;
pub mod store;
mod vault;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod conformance;

pub use agency::{AgentNamed, Powers, MAX_AGENCY_CHAIN};
pub use error::{Error, Result};
pub use grant::{Grant, GrantScope, Permission, VerifiedGrant};
pub use identity::{
    verify_with_context, Fingerprint, IdentityInfo, PublicIdentity, Role, SecretIdentity,
};
pub use ids::{CollectionId, DelegationId, RecordId, VaultId};
pub use keys::{
    CollectionKey, DepositPublicKey, DepositSealedKey, KeySeal, WrappedDataKey,
    DEPOSIT_SEALED_KEY_LEN, WRAPPED_KEY_LEN,
};
pub use log::{
    Checkpoint, EntryBody, LogEntry, Relays, Rewrap, Rotation, MAX_LISTED_VERSIONS, MAX_MIRRORS,
    MAX_ROTATION_LEN,
};
pub use payload::{ciphertext_len, CHUNK_LEN};
pub use record::{
    padded_len, OpenJob, OpenedRecord, PayloadJob, PlannedRecord, RecordBody, RecordInfo,
    RecordMetadata, VerifiedRecord, DEPOSIT_METADATA_LEN, METADATA_LEN, MIN_PADDED_LEN,
};
pub use vault::{
    Access, AgencySummary, CollectionAccess, CollectionSummary, Keyring, RecordSummary,
    RecordTarget, VaultState, MAX_COLLECTION_MEMBERS, MAX_COLLECTION_RECORDS, UNOPENED_NAME,
};
