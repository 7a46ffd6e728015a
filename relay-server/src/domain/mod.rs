//! The relay's rules, one service per domain concept, over the storage
//! traits ([`crate::storage::MetaStore`], [`crate::storage::BlobStore`], as
//! held by [`crate::state::AppState`]) and a [`Clock`]:
//!
//! - [`access`]: who may read or write a vault, from the relay's verified
//!   copy of its log;
//! - [`vaults`]: creating a vault from its genesis entry, and reading its
//!   head and log;
//! - [`append`]: appending entries (compare-and-swap on the head,
//!   verification with vault-core, the vault size cap, quota, blob
//!   usability, purges);
//! - [`blobs`]: chunked and batch uploads, upload status, and downloads with
//!   their permission check;
//! - [`identities`]: publishing and looking up identity documents, with
//!   admission (invitations, the per-source budget);
//! - [`device_lists`]: the directory of people's device lists, each
//!   version verified against the person's document before it is stored;
//! - [`pairings`]: slots where an existing device and a new one pair by a
//!   compared code;
//! - [`links`]: SMART Health Links (create, list, revoke, access record;
//!   manifests and files for whoever holds a link).
//!
//! Services return typed errors whose messages are the ones the API shows;
//! [`crate::error`] is the one place that turns them into an HTTP status,
//! a stable code and a JSON body. The route handlers in [`crate::routes`]
//! only parse and authenticate requests, call one service and render its
//! answer.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::StorageError;

pub mod access;
pub mod append;
pub mod blobs;
pub mod device_lists;
pub mod identities;
pub mod inbox;
pub mod links;
pub mod pairings;
pub mod vaults;

/// The relay's clock, in Unix seconds: entry times are checked against it,
/// and access (grant expiry) and rebuild cooldowns are evaluated at it.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        crate::auth::unix_now()
    }
}

/// A clock that reads what it was last set to (tests, simulations): it
/// never moves by itself.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock that reads `now` until [`ManualClock::set`] is called.
    pub fn new(now: u64) -> Self {
        Self(AtomicU64::new(now))
    }

    /// Sets the time it reads.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The relay failed to do its part: storage failed, or something it
/// stored does not read back. Never the caller's fault, and nothing was
/// acknowledged. Its text is for the operator's log; callers are told only
/// that the relay failed (or, for [`Failure::Storage`] on a full disk, that
/// its storage is full).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Storage failed; if the disk (or a filesystem quota) is full, or a
    /// remote store cannot be reached, the caller is told so and may retry
    /// (507, or 503 with `retry-after`).
    #[error("{context}: {source}")]
    Storage {
        /// What the relay was doing.
        context: &'static str,
        /// The storage error.
        source: StorageError,
    },
    /// Anything else: a read failed, a stored value does not parse, a task
    /// died, or an invariant did not hold.
    #[error("{context}: {detail}")]
    Internal {
        /// What the relay was doing.
        context: &'static str,
        /// What went wrong (for the log only).
        detail: String,
    },
}

impl Failure {
    /// A failed storage operation (see [`Failure::Storage`]).
    pub fn storage(context: &'static str, source: StorageError) -> Self {
        Self::Storage { context, source }
    }

    /// Any other failure (see [`Failure::Internal`]).
    pub fn internal(context: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Internal {
            context,
            detail: detail.to_string(),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;
