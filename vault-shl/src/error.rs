//! The one error type of this crate. No variant carries a key, a passcode
//! or file contents.

/// Why a link, a manifest or a file was refused. Messages say what was
/// wrong and what the user can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShlError {
    /// The text is not a SMART Health Link.
    #[error(
        "this is not a SMART Health Link ({0}); check that the whole link was copied or scanned"
    )]
    MalformedLink(String),
    /// The link needs a newer viewer.
    #[error("this SMART Health Link is version {0}; this viewer reads version 1 only: open it with a newer viewer")]
    UnsupportedVersion(u64),
    /// The link or its settings break a rule of the specification.
    #[error("invalid SMART Health Link settings: {0}")]
    InvalidSettings(String),
    /// The key is not 32 bytes in base64url (43 characters).
    #[error("the link's key is not 43 base64url characters (32 bytes); check that the whole link was copied")]
    BadKey,
    /// The file is not a JWE this specification allows.
    #[error("the shared file is not a valid SMART Health Links file: {0}")]
    MalformedJwe(String),
    /// The file uses another algorithm than `dir` with `A256GCM`.
    #[error("the shared file uses {0}; SMART Health Links files use alg \"dir\" with enc \"A256GCM\" only")]
    UnsupportedAlgorithm(String),
    /// Decryption failed: wrong key, or the file was altered.
    #[error("the shared file does not decrypt with this link's key: the link is wrong or the file was altered")]
    Decrypt,
    /// The file is larger than the reader allows.
    #[error("the shared file is larger than {limit} bytes{what}; refused")]
    TooLarge {
        /// The limit.
        limit: usize,
        /// What was too large (for the message).
        what: &'static str,
    },
    /// The manifest is not what the specification describes.
    #[error("the link's manifest is not valid: {0}")]
    MalformedManifest(String),
    /// The operating system's random number generator failed.
    #[error("the system's random number generator failed; try again")]
    Random,
}
