//! The command line's errors: each says what went wrong and what to do, and
//! maps to a documented exit code.

use std::path::PathBuf;

use vault_client::ClientError;

/// An error from a `vault` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No identity on this device yet.
    #[error("no identity on this device (looked in {0}); create one with `vault init --name \"Your Name\"`, or set VAULT_HOME to the profile you meant")]
    NoIdentity(PathBuf),

    /// `vault init` on a profile that already has an identity.
    #[error("an identity already exists at {0}; refusing to overwrite it. Use another profile (VAULT_HOME=...) or move the file away first")]
    IdentityExists(PathBuf),

    /// No relay address configured.
    #[error(
        "no relay configured: pass --relay URL, set VAULT_RELAY, or put `relay = \"URL\"` in {0}"
    )]
    NoRelay(PathBuf),

    /// The passphrase could not be obtained.
    #[error("{0}")]
    Passphrase(String),

    /// A contact name that is not known.
    #[error(
        "no contact named {0:?}; see `vault contacts list`, or add one with `vault contacts add`"
    )]
    UnknownContact(String),

    /// A contact's key is not the one pinned for it.
    #[error("the key for contact {name} changed: pinned fingerprint {pinned}, presented {presented}. Refusing it. If {name} really has a new key, compare the new fingerprint with them in person or by phone, then add it with `vault contacts add {name} ... --replace`")]
    KeyChanged {
        /// The contact.
        name: String,
        /// The pinned fingerprint.
        pinned: vault_core::Fingerprint,
        /// The one presented.
        presented: vault_core::Fingerprint,
    },

    /// The user's input was wrong.
    #[error("{0}")]
    Usage(String),

    /// Something the user asked for does not exist.
    #[error("{0}")]
    NotFound(String),

    /// Reading needs data this device does not have and the relay is not
    /// reachable.
    #[error("{0} is not on this device and the relay is unreachable; run `vault sync` once you are online")]
    NotOffline(String),

    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },

    /// The work was done except for the parts listed, which could not be:
    /// the result is incomplete (for example an export that left out
    /// records nobody can open).
    #[error("{0}")]
    Incomplete(String),

    /// The person stopped the command (Ctrl-C) while it waited; what it
    /// had opened on the relay (a pairing code) was closed first.
    #[error("{0}")]
    Interrupted(String),

    /// vault-core refused something.
    #[error(transparent)]
    Core(#[from] vault_core::Error),

    /// The sync client failed (relay refusal, network, verification).
    #[error(transparent)]
    Client(#[from] ClientError),

    /// Pulling from a FHIR server failed (`vault pull`).
    #[error(transparent)]
    FhirPull(#[from] vault_client::fhir_pull::FhirPullError),
}

/// Exit codes (also listed in `vault --help`).
pub mod exit {
    /// Generic failure.
    pub const ERROR: u8 = 1;
    /// Wrong usage (clap's own errors also exit 2).
    pub const USAGE: u8 = 2;
    /// Wrong passphrase, or no identity.
    pub const AUTH: u8 = 3;
    /// Access denied (by the vault's rules or the relay).
    pub const DENIED: u8 = 4;
    /// Something named does not exist.
    pub const NOT_FOUND: u8 = 5;
    /// Integrity or security failure: tampering, rollback, fork, a changed
    /// key.
    pub const SECURITY: u8 = 6;
    /// The relay could not be reached.
    pub const UNREACHABLE: u8 = 7;
    /// Stopped by Ctrl-C (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

impl CliError {
    /// Wraps an I/O error with the path it concerns.
    pub fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::File {
            path: path.into(),
            source,
        }
    }

    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NoIdentity(_) | CliError::Passphrase(_) => exit::AUTH,
            CliError::IdentityExists(_) | CliError::NoRelay(_) | CliError::Usage(_) => exit::USAGE,
            CliError::UnknownContact(_) | CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::NotOffline(_) => exit::UNREACHABLE,
            CliError::File { .. } => exit::ERROR,
            CliError::Incomplete(_) => exit::SECURITY,
            CliError::Interrupted(_) => exit::INTERRUPTED,
            CliError::KeyChanged { .. } => exit::SECURITY,
            CliError::Core(e) => core_exit(e),
            CliError::FhirPull(e) => {
                use vault_client::fhir_pull::FhirPullError as F;
                match e {
                    F::Config(_) => exit::USAGE,
                    F::Unauthorized(_) => exit::DENIED,
                    F::Transport { .. } => exit::UNREACHABLE,
                    F::Status { status: 404, .. } => exit::NOT_FOUND,
                    // A link that would carry the credentials elsewhere.
                    F::ForeignLink { .. } => exit::SECURITY,
                    _ => exit::ERROR,
                }
            }
            CliError::Client(e) => match e {
                ClientError::Core(e) => core_exit(e),
                ClientError::Transport(_) => exit::UNREACHABLE,
                ClientError::Relay { status: 401, .. } | ClientError::Relay { status: 403, .. } => {
                    exit::DENIED
                }
                ClientError::Relay { status: 404, .. } => exit::NOT_FOUND,
                ClientError::Protocol(_) | ClientError::TooLarge { .. } => exit::SECURITY,
                ClientError::NotOnDevice(_) => exit::UNREACHABLE,
                ClientError::CollectionRotated | ClientError::NotShareable(_) => exit::USAGE,
                ClientError::LinkPasscode { .. } => exit::DENIED,
                ClientError::LinkNotActive(_) => exit::NOT_FOUND,
                ClientError::Link(_) => exit::SECURITY,
                _ => exit::ERROR,
            },
        }
    }

    /// Whether the relay could not be reached (reading falls back to the
    /// local copy).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, CliError::Client(ClientError::Transport(_)))
    }

    /// A stable machine-readable code, for `--json` error output.
    pub fn code(&self) -> String {
        match self {
            CliError::NoIdentity(_) => "no_identity".into(),
            CliError::IdentityExists(_) => "identity_exists".into(),
            CliError::NoRelay(_) => "no_relay".into(),
            CliError::Passphrase(_) => "passphrase".into(),
            CliError::UnknownContact(_) => "unknown_contact".into(),
            CliError::Usage(_) => "usage".into(),
            CliError::NotFound(_) => "not_found".into(),
            CliError::NotOffline(_) => "not_offline".into(),
            CliError::File { .. } => "file".into(),
            CliError::Incomplete(_) => "incomplete".into(),
            CliError::Interrupted(_) => "interrupted".into(),
            CliError::KeyChanged { .. } => "pinned_key_changed".into(),
            CliError::Core(e) => e.code().into(),
            CliError::Client(e) => e.code().into(),
            CliError::FhirPull(e) => e.code().into(),
        }
    }
}

fn core_exit(e: &vault_core::Error) -> u8 {
    use vault_core::Error as E;
    match e {
        E::WrongPassphrase | E::WeakKeyFile { .. } => exit::AUTH,
        E::AccessDenied(_) | E::Expired { .. } => exit::DENIED,
        E::InvalidInput(_) | E::LengthMismatch { .. } => exit::USAGE,
        E::Io(_) | E::Store(_) => exit::ERROR,
        E::Missing { .. } => exit::SECURITY,
        _ => exit::SECURITY,
    }
}

/// Result with [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;
