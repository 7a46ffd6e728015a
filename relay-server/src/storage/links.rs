//! Storage of SMART Health Links (decision 49): what the relay keeps of a
//! link is its id's SHA-256 (never the id, never the key), its owner, its
//! rules (expiry, flags, the passcode's slow hash, the attempt limit), its
//! files as JWE ciphertext, the failed passcode attempts so far, its access
//! record, and short-lived file tickets (also by hash).
//!
//! [`LinkStore`] is a supertrait of [`super::MetaStore`], so every
//! metadata backend stores links too; `storage::conformance` holds its
//! contracts. Every write is durable when it returns; attempts are counted
//! atomically, so parallel requests cannot try more passcodes than the
//! limit.

use async_trait::async_trait;
use vault_core::Fingerprint;

use super::StorageError;

/// SHA-256 of a link's 32-byte id: how the relay keys, finds and names a
/// link (the owner's handle).
pub type LinkHash = [u8; 32];

/// Access events kept per link; older ones are dropped first.
pub const MAX_ACCESS_EVENTS: usize = 1000;

/// One file of a link, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFile {
    /// The manifest's `contentType` (equal to the JWE's `cty`).
    pub content_type: String,
    /// The compact JWE (ciphertext; the relay cannot read it).
    pub jwe: String,
}

/// A link to store.
#[derive(Debug, Clone)]
pub struct NewLink {
    /// SHA-256 of the id.
    pub hash: LinkHash,
    /// The account that made it (charged for its files).
    pub owner: Fingerprint,
    /// When, Unix seconds.
    pub created_at: u64,
    /// When it stops answering, Unix seconds (`None`: never).
    pub expires_at: Option<u64>,
    /// Flag `L`.
    pub long_term: bool,
    /// Flag `U`.
    pub direct: bool,
    /// The passcode's verifier (a slow hash), with flag `P`.
    pub passcode: Option<Vec<u8>>,
    /// Wrong passcodes allowed over the link's lifetime.
    pub max_attempts: u32,
    /// The files, in manifest order.
    pub files: Vec<LinkFile>,
}

/// A stored link's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    /// SHA-256 of the id.
    pub hash: LinkHash,
    /// Its owner.
    pub owner: Fingerprint,
    /// Created, Unix seconds.
    pub created_at: u64,
    /// Expiry, Unix seconds.
    pub expires_at: Option<u64>,
    /// Flag `L`.
    pub long_term: bool,
    /// Flag `U`.
    pub direct: bool,
    /// The passcode's verifier.
    pub passcode: Option<Vec<u8>>,
    /// Wrong passcodes allowed.
    pub max_attempts: u32,
    /// Wrong passcodes so far (and attempts in flight).
    pub failed_attempts: u32,
    /// When the owner revoked it.
    pub revoked_at: Option<u64>,
    /// How many files.
    pub files: u32,
    /// Their bytes (charged to the owner until revoked).
    pub bytes: u64,
    /// Access events recorded (at most [`MAX_ACCESS_EVENTS`] kept).
    pub accesses: u64,
}

impl StoredLink {
    /// Whether the link answers at `now`: not revoked, not expired, and
    /// not disabled by the passcode attempt limit.
    pub fn active_at(&self, now: u64) -> bool {
        self.revoked_at.is_none()
            && self.expires_at.is_none_or(|e| now < e)
            && (self.passcode.is_none() || self.failed_attempts < self.max_attempts)
    }
}

/// What a manifest or file request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessOutcome {
    /// A manifest was served.
    Manifest,
    /// A file was served directly (flag `U`).
    File,
    /// A wrong passcode was refused.
    WrongPasscode,
}

impl AccessOutcome {
    /// Its stored code.
    pub fn code(self) -> i64 {
        match self {
            Self::Manifest => 1,
            Self::File => 2,
            Self::WrongPasscode => 3,
        }
    }

    /// From its stored code.
    pub fn from_code(c: i64) -> Option<Self> {
        match c {
            1 => Some(Self::Manifest),
            2 => Some(Self::File),
            3 => Some(Self::WrongPasscode),
            _ => None,
        }
    }

    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::File => "file",
            Self::WrongPasscode => "wrong_passcode",
        }
    }
}

/// One access of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    /// When, Unix seconds (the relay's clock).
    pub at: u64,
    /// The `recipient` the requester sent (its word only).
    pub recipient: String,
    /// What happened.
    pub outcome: AccessOutcome,
}

/// A file ticket: a `location` URL's secret, by hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// SHA-256 of the ticket.
    pub hash: [u8; 32],
    /// The file's index in its link.
    pub file: u32,
    /// When it stops working, Unix seconds.
    pub expires_at: u64,
}

/// The outcome of storing a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateLinkOutcome {
    /// Stored, its files charged to the owner.
    Created,
    /// The owner's quota would be exceeded.
    Quota,
    /// The owner already has this many links not revoked.
    TooMany(usize),
    /// A link with this hash exists (never, with random ids).
    Exists,
}

/// The outcome of reserving a passcode attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// No such link, or it is revoked, expired or disabled.
    Inactive,
    /// One attempt reserved (counted as failed until refunded); this many
    /// remain after it.
    Reserved {
        /// Attempts left if this one fails.
        remaining: u32,
    },
}

/// Link storage (see the module documentation).
#[async_trait]
pub trait LinkStore: Send + Sync + 'static {
    /// Stores a new link and its files, charging their bytes to the owner
    /// within `quota`, if the owner has fewer than `max_links` links
    /// neither revoked nor retired ([`LinkStore::retire_links`]).
    async fn create_link(
        &self,
        link: NewLink,
        quota: u64,
        max_links: usize,
    ) -> Result<CreateLinkOutcome, StorageError>;
    /// A link's state, by hash.
    async fn link(&self, hash: LinkHash) -> Result<Option<StoredLink>, StorageError>;
    /// A link's files, in order (none once revoked).
    async fn link_files(&self, hash: LinkHash) -> Result<Vec<LinkFile>, StorageError>;
    /// Atomically reserves one passcode attempt of an active link at
    /// `now`: counts it as failed, so that parallel requests never try
    /// more than the limit. [`LinkStore::record_access`] refunds it when
    /// the passcode was right.
    async fn reserve_attempt(&self, hash: LinkHash, now: u64) -> Result<Attempt, StorageError>;
    /// Records an access of a link (keeping at most
    /// [`MAX_ACCESS_EVENTS`]), refunds a reserved attempt with `refund`,
    /// and stores file tickets, in one transaction. Nothing is stored for
    /// an unknown link.
    async fn record_access(
        &self,
        hash: LinkHash,
        event: AccessEvent,
        refund: bool,
        tickets: Vec<Ticket>,
    ) -> Result<(), StorageError>;
    /// The link and file of a ticket not expired at `now` (expired
    /// tickets are deleted as new ones are stored).
    async fn ticket(
        &self,
        ticket: [u8; 32],
        now: u64,
    ) -> Result<Option<(LinkHash, u32)>, StorageError>;
    /// An owner's links, newest first.
    async fn links_of(&self, owner: Fingerprint) -> Result<Vec<StoredLink>, StorageError>;
    /// A link's access record, oldest first, if `owner` owns it.
    async fn access_log(
        &self,
        owner: Fingerprint,
        hash: LinkHash,
    ) -> Result<Option<Vec<AccessEvent>>, StorageError>;
    /// Revokes an owner's link at `now`: it answers 404 from then on, its
    /// files and tickets are deleted and their charge given back; its
    /// access record stays. `false` if `owner` has no such link; revoking
    /// twice is a no-op that returns `true`.
    async fn revoke_link(
        &self,
        owner: Fingerprint,
        hash: LinkHash,
        now: u64,
    ) -> Result<bool, StorageError>;
    /// Retires the links whose expiry has passed at `now` and whose files
    /// are still stored: their files and tickets are deleted, their charge
    /// given back, and their file count and bytes set to 0; the link (listed
    /// as expired) and its access record stay. A retired link no longer
    /// counts towards the owner's link limit. Links disabled by wrong
    /// passcodes are left to their owner (a right passcode may be in
    /// flight while the limit is reached). Returns how many were retired;
    /// a second call at the same time retires none.
    async fn retire_links(&self, now: u64) -> Result<u64, StorageError>;
}
