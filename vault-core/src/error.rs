//! The one error type of vault-core.
//!
//! Every variant says what went wrong and what the user can do. No variant
//! carries key material or plaintext. All authenticated-decryption failures
//! collapse into [`Error::DecryptionFailed`], so nothing reveals which check
//! failed. [`Error::code`] gives a stable machine-readable code for the CLI's
//! `--json` output, the relay and the web app.

use crate::identity::Fingerprint;

/// An error from vault-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that do not follow the format in `docs/format.md`.
    #[error("malformed {what}: {reason}; the data is corrupt or was not produced by vault")]
    Malformed {
        /// The object being parsed.
        what: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },

    /// A format version this build does not read (or refuses as a downgrade).
    #[error("unsupported {what} format version {version}; this build of vault does not read it: upgrade vault, or the data was tampered with")]
    UnsupportedVersion {
        /// The object being parsed.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },

    /// Authenticated decryption failed: wrong key, corruption or tampering.
    #[error(
        "decryption failed: the data is corrupted, was tampered with, or is not meant for this key"
    )]
    DecryptionFailed,

    /// Ciphertext that is not the one its author signed.
    #[error("the ciphertext does not match its signed metadata: it was swapped, replaced, reordered or truncated by the relay or in storage")]
    CiphertextMismatch,

    /// A signature did not verify.
    #[error("invalid signature on {what}: the data was forged or altered in transit or storage")]
    BadSignature {
        /// The signed object.
        what: &'static str,
    },

    /// Authentic data presented in the wrong place (another vault, collection,
    /// epoch, record or version than the one it was made for).
    #[error("{what} is bound to a different {field}: it was moved or swapped, refusing it")]
    ContextMismatch {
        /// The object that was moved.
        what: &'static str,
        /// Which context field differs.
        field: &'static str,
    },

    /// A public key that is a low-order point (or otherwise unusable), which
    /// would let an attacker force a known shared secret.
    #[error("the {what} public key is a low-order point and cannot be used; the identity is malicious or corrupt")]
    WeakPublicKey {
        /// Which key.
        what: &'static str,
    },

    /// A principal's key differs from the one pinned earlier.
    #[error("the key for {name} changed: pinned fingerprint {pinned}, presented {presented}. Refusing it. Verify the new fingerprint with {name} in person or by phone before trusting it")]
    PinnedKeyChanged {
        /// The pinned name.
        name: String,
        /// The pinned fingerprint.
        pinned: Fingerprint,
        /// The fingerprint now presented.
        presented: Fingerprint,
    },

    /// A fingerprint typed or read aloud did not match.
    #[error("fingerprint mismatch: expected {expected}, the identity has {actual}; do not trust this identity")]
    FingerprintMismatch {
        /// What the user expected.
        expected: String,
        /// The identity's fingerprint.
        actual: Fingerprint,
    },

    /// A log entry or grant by someone without the right to make it.
    #[error("entry {seq} was written by {author}, who {reason}; the vault log was tampered with")]
    Unauthorized {
        /// Sequence number of the offending entry.
        seq: u64,
        /// Its claimed author.
        author: Fingerprint,
        /// Why the author may not write it.
        reason: &'static str,
    },

    /// A log entry that breaks the rules of the log (`docs/format.md` §8).
    #[error("vault log entry {seq} is invalid: {reason}")]
    InvalidEntry {
        /// Sequence number of the offending entry.
        seq: u64,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// The log does not chain: an entry was dropped, reordered or altered.
    #[error("vault log is broken at entry {seq}: it does not follow the previous entry (entries were dropped, reordered or altered)")]
    ChainBroken {
        /// Sequence number where the chain breaks.
        seq: u64,
    },

    /// The relay offered a log that ends before a head this client already
    /// verified.
    #[error("rollback detected: this device already verified the vault up to entry {verified}, but was offered only up to entry {offered}; the relay is serving an old state")]
    Rollback {
        /// The verified head.
        verified: u64,
        /// The head offered.
        offered: u64,
    },

    /// The relay offered a history that differs from one already verified.
    #[error("fork detected at entry {seq}: the relay is showing this device a different history than it showed before. Compare checkpoint codes with the vault owner")]
    Fork {
        /// The first sequence number whose entry differs.
        seq: u64,
    },

    /// A checkpoint given out of band does not match this device's log.
    #[error("checkpoint mismatch: {reason}. Two devices see different histories of this vault; the relay may be forking it")]
    CheckpointMismatch {
        /// What differs.
        reason: &'static str,
    },

    /// An older version of a record was offered as current.
    #[error("stale record: version {offered} offered where version {current} is current; refusing an old version replayed as new")]
    StaleVersion {
        /// The current verified version.
        current: u32,
        /// The version offered.
        offered: u32,
    },

    /// Data the log says exists was not delivered.
    #[error("{what} is missing or withheld: the vault log references it but it was not delivered")]
    Missing {
        /// What is missing.
        what: String,
    },

    /// The relay served an entry redacted that concerns a collection this
    /// reader holds (or, to the owner, any entry redacted).
    #[error("log entry {seq} (or an earlier entry of the same collection) was withheld: the relay served it redacted, but it concerns a collection or record you hold. The relay is faulty or malicious; report it to its operator")]
    Withheld {
        /// The entry's sequence number.
        seq: u64,
    },

    /// The relay now shows whole an entry of a collection or record whose
    /// earlier entries it showed this reader redacted (access was granted
    /// since): the log must be verified again from the start.
    #[error("log entry {seq} concerns a collection or record whose earlier entries this device was shown redacted (you were granted access since): verify the vault's log again from the start (`vault sync` does this by itself)")]
    ViewChanged {
        /// The entry's sequence number.
        seq: u64,
    },

    /// The caller has no key or right for the operation.
    #[error("access denied: {0}")]
    AccessDenied(&'static str),

    /// A grant or permission that has expired.
    #[error("the grant expired at {expired_at} (unix time); ask the patient to share again")]
    Expired {
        /// Expiry time, seconds since the Unix epoch.
        expired_at: u64,
    },

    /// The passphrase does not open the key file.
    #[error("wrong passphrase, or the file is not a vault key file")]
    WrongPassphrase,

    /// A key file sealed with parameters weaker than we accept.
    #[error("the key file uses scrypt work factor 2^{found}, below the minimum 2^{minimum}; it was weakened or tampered with. Refusing it")]
    WeakKeyFile {
        /// Work factor (log2 N) found.
        found: u8,
        /// Minimum accepted.
        minimum: u8,
    },

    /// Invalid input from the caller (not from the network or a file).
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),

    /// A streamed body produced a different length than declared.
    #[error("the input was {actual} bytes, but {declared} were declared; the file changed while it was being read")]
    LengthMismatch {
        /// Declared length.
        declared: u64,
        /// Length actually read.
        actual: u64,
    },

    /// The local store failed.
    #[error("local store error: {0}")]
    Store(String),

    /// Reading or writing a stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether this error, from opening one record, concerns that record's
    /// own bytes (its ciphertext or header failed to authenticate or
    /// parse), not the vault, the store or the caller: a listing reports
    /// such a record and goes on with the others.
    pub fn is_record_failure(&self) -> bool {
        matches!(
            self,
            Error::DecryptionFailed
                | Error::CiphertextMismatch
                | Error::ContextMismatch { .. }
                | Error::Malformed { .. }
        )
    }

    /// A stable, machine-readable code for this error (never changes meaning
    /// between releases).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Malformed { .. } => "malformed",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::DecryptionFailed => "decryption_failed",
            Error::CiphertextMismatch => "ciphertext_mismatch",
            Error::BadSignature { .. } => "bad_signature",
            Error::ContextMismatch { .. } => "context_mismatch",
            Error::WeakPublicKey { .. } => "weak_public_key",
            Error::PinnedKeyChanged { .. } => "pinned_key_changed",
            Error::FingerprintMismatch { .. } => "fingerprint_mismatch",
            Error::Unauthorized { .. } => "unauthorized_author",
            Error::InvalidEntry { .. } => "invalid_entry",
            Error::ChainBroken { .. } => "chain_broken",
            Error::Rollback { .. } => "rollback",
            Error::Fork { .. } => "fork",
            Error::CheckpointMismatch { .. } => "checkpoint_mismatch",
            Error::StaleVersion { .. } => "stale_version",
            Error::Missing { .. } | Error::Withheld { .. } => "missing_or_withheld",
            Error::ViewChanged { .. } => "view_changed",
            Error::AccessDenied(_) => "access_denied",
            Error::Expired { .. } => "expired",
            Error::WrongPassphrase => "wrong_passphrase",
            Error::WeakKeyFile { .. } => "weak_key_file",
            Error::InvalidInput(_) => "invalid_input",
            Error::LengthMismatch { .. } => "length_mismatch",
            Error::Store(_) => "store",
            Error::Io(_) => "io",
        }
    }
}

/// Shorthand for results in vault-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
