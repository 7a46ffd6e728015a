//! A relay's head of a vault log, and the form it travels in. Kept apart
//! from `wire` so that `error` (which carries the head of a `409
//! head_moved`) and `wire` (which returns errors) do not depend on each
//! other.

use serde::{Deserialize, Serialize};
use vault_core::{Checkpoint, LogEntry, VaultId};

/// A relay's head of a vault log: the sequence number and hash of its last
/// entry. What a relay *claims*; only a verified log makes it a
/// [`Checkpoint`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Head {
    /// The sequence number of the last entry (0 for a vault with only its
    /// genesis entry).
    pub seq: u64,
    /// The hash of the last entry ([`LogEntry::hash`]).
    pub hash: [u8; 32],
}

impl Head {
    /// The head as a checkpoint of `vault`.
    pub fn checkpoint(&self, vault: VaultId) -> Checkpoint {
        Checkpoint {
            vault,
            seq: self.seq,
            head: self.hash,
        }
    }

    /// The head that `entry` makes when it is the last entry.
    pub fn of_entry(entry: &LogEntry) -> Self {
        Self {
            seq: entry.seq(),
            hash: *entry.hash(),
        }
    }
}

impl From<Checkpoint> for Head {
    fn from(c: Checkpoint) -> Self {
        Self {
            seq: c.seq,
            hash: c.head,
        }
    }
}

impl From<&Checkpoint> for Head {
    fn from(c: &Checkpoint) -> Self {
        Self::from(*c)
    }
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Head({}, {})", self.seq, hex::encode(self.hash))
    }
}

/// A head as it travels: `{"seq": n, "hash": "<hex>"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RawHead {
    pub seq: u64,
    pub hash: String,
}

impl RawHead {
    /// The head, if its hash is 64 hex digits (see `wire` for the checked
    /// parse that reports why not).
    pub fn decode(&self) -> Option<Head> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&self.hash, &mut hash).ok()?;
        Some(Head {
            seq: self.seq,
            hash,
        })
    }
}

impl From<Head> for RawHead {
    fn from(h: Head) -> Self {
        Self {
            seq: h.seq,
            hash: hex::encode(h.hash),
        }
    }
}
