//! Pairing slots (`docs/format.md` §3.8, decision 72): where an existing
//! device and a new one exchange a commitment, two nonces and their
//! fingerprints to pair by a compared code. The relay keeps a slot for
//! [`vault_core::pairing::PAIRING_TTL`] seconds and never learns anything
//! that lets it pass the comparison.
//!
//! [`PairingStore`] is a supertrait of [`super::MetaStore`], so every
//! backend keeps slots. The stores one relay process owns (SQLite, memory)
//! keep them in that process ([`LocalPairings`]): exact, since no other
//! process serves the same store, and a restart loses only slots whose
//! devices start again. PostgreSQL keeps them in a table, so any instance
//! behind a load balancer serves any step.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use vault_core::Fingerprint;

use super::StorageError;

/// One pairing slot, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingSlot {
    /// The slot: the SHA-256 of the pairing code (§3.8).
    pub slot: [u8; 32],
    /// The existing device that opened it (the only one that may reveal
    /// or close it).
    pub opener: Fingerprint,
    /// The opener's commitment to the person and its nonce.
    pub commit: [u8; 32],
    /// When it stops answering, Unix seconds (it answers until then,
    /// inclusive).
    pub expires_at: u64,
    /// The new device that joined (first come, only one).
    pub joined: Option<Fingerprint>,
    /// The joined device's nonce, sent after its join was answered with
    /// the commitment (so that nobody chooses a commitment knowing it).
    pub device_nonce: Option<[u8; 32]>,
    /// The person and the opener's nonce, revealed after a join.
    pub revealed: Option<(Fingerprint, [u8; 32])>,
}

impl PairingSlot {
    /// A slot just opened: nobody joined, nothing revealed.
    pub fn opened(slot: [u8; 32], opener: Fingerprint, commit: [u8; 32], expires_at: u64) -> Self {
        Self {
            slot,
            opener,
            commit,
            expires_at,
            joined: None,
            device_nonce: None,
            revealed: None,
        }
    }

    /// Whether it still answers at `now`.
    pub fn live_at(&self, now: u64) -> bool {
        now <= self.expires_at
    }
}

/// The outcome of opening a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenOutcome {
    /// Opened.
    Opened,
    /// A live slot of this code exists (the opener draws another code).
    Taken,
    /// The opener has this many live slots already.
    TooManyOfOpener(usize),
    /// The relay holds this many live slots already.
    TooMany(usize),
}

/// The outcome of a join or a reveal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Stored; the slot as it now is.
    Done(PairingSlot),
    /// No live slot of this code.
    NotFound,
    /// The step does not apply to the slot as it is (another device joined
    /// first, a nonce from another device than the one that joined or
    /// twice, the reveal before the device's nonce or twice, or from
    /// another device than the opener); the slot as it is.
    Refused(PairingSlot),
}

/// Pairing slots. Each operation is atomic: of concurrent joins of one
/// slot exactly one wins, and a slot is revealed at most once.
#[async_trait]
pub trait PairingStore: Send + Sync {
    /// Opens `slot` unless a live slot of its code exists, the opener has
    /// `per_opener` live slots, or the relay has `total` live slots (an
    /// expired slot of the same code is replaced).
    async fn open_pairing(
        &self,
        slot: PairingSlot,
        per_opener: usize,
        total: usize,
        now: u64,
    ) -> Result<OpenOutcome, StorageError>;

    /// The live slot of this code, if any.
    async fn pairing(&self, slot: [u8; 32], now: u64) -> Result<Option<PairingSlot>, StorageError>;

    /// Records `device` as the slot's one joiner, unless it opened the
    /// slot or someone else joined already (the same device joining again
    /// before it sent its nonce is done again: a retried request whose
    /// answer was lost).
    async fn join_pairing(
        &self,
        slot: [u8; 32],
        device: Fingerprint,
        now: u64,
    ) -> Result<StepOutcome, StorageError>;

    /// Records the joined device's nonce, sent by that device, once (the
    /// same nonce sent again is done again: a retried request).
    async fn pairing_nonce(
        &self,
        slot: [u8; 32],
        device: Fingerprint,
        nonce: [u8; 32],
        now: u64,
    ) -> Result<StepOutcome, StorageError>;

    /// Records the person and the opener's nonce, sent by `opener`, once
    /// the joined device sent its nonce, and only once.
    async fn reveal_pairing(
        &self,
        slot: [u8; 32],
        opener: Fingerprint,
        person: Fingerprint,
        nonce: [u8; 32],
        now: u64,
    ) -> Result<StepOutcome, StorageError>;

    /// Closes the slot if `opener` opened it; `true` if one was closed.
    async fn close_pairing(
        &self,
        slot: [u8; 32],
        opener: Fingerprint,
    ) -> Result<bool, StorageError>;

    /// Forgets slots expired at `now`; returns how many.
    async fn expire_pairings(&self, now: u64) -> Result<u64, StorageError>;
}

/// Pairing slots kept in this process, for the stores one relay process
/// owns (SQLite, memory): the same semantics as a shared table, under one
/// lock.
#[derive(Default)]
pub struct LocalPairings(Mutex<HashMap<[u8; 32], PairingSlot>>);

impl LocalPairings {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], PairingSlot>> {
        // A panic while holding this lock leaves the map consistent (every
        // change is one insert or remove), so a poisoned lock is used as is.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`PairingStore::open_pairing`].
    pub fn open(
        &self,
        slot: PairingSlot,
        per_opener: usize,
        total: usize,
        now: u64,
    ) -> OpenOutcome {
        let mut slots = self.slots();
        if slots.get(&slot.slot).is_some_and(|s| s.live_at(now)) {
            return OpenOutcome::Taken;
        }
        let live = slots.values().filter(|s| s.live_at(now));
        let (mine, all) = live.fold((0, 0), |(m, a), s| {
            (m + usize::from(s.opener == slot.opener), a + 1)
        });
        if mine >= per_opener {
            return OpenOutcome::TooManyOfOpener(per_opener);
        }
        if all >= total {
            return OpenOutcome::TooMany(total);
        }
        slots.insert(slot.slot, slot);
        OpenOutcome::Opened
    }

    /// [`PairingStore::pairing`].
    pub fn get(&self, slot: [u8; 32], now: u64) -> Option<PairingSlot> {
        self.slots().get(&slot).filter(|s| s.live_at(now)).cloned()
    }

    /// Applies `change` to the live slot `slot`: [`StepOutcome::Done`] if
    /// it changed it (it returns `true`), [`StepOutcome::Refused`] if not.
    fn step(
        &self,
        slot: [u8; 32],
        now: u64,
        change: impl FnOnce(&mut PairingSlot) -> bool,
    ) -> StepOutcome {
        let mut slots = self.slots();
        let Some(s) = slots.get_mut(&slot).filter(|s| s.live_at(now)) else {
            return StepOutcome::NotFound;
        };
        if change(s) {
            StepOutcome::Done(s.clone())
        } else {
            StepOutcome::Refused(s.clone())
        }
    }

    /// [`PairingStore::join_pairing`].
    pub fn join(&self, slot: [u8; 32], device: Fingerprint, now: u64) -> StepOutcome {
        self.step(slot, now, |s| {
            s.opener != device
                && (s.joined.is_none() || (s.joined == Some(device) && s.device_nonce.is_none()))
                && {
                    s.joined = Some(device);
                    true
                }
        })
    }

    /// [`PairingStore::pairing_nonce`].
    pub fn nonce(
        &self,
        slot: [u8; 32],
        device: Fingerprint,
        nonce: [u8; 32],
        now: u64,
    ) -> StepOutcome {
        self.step(slot, now, |s| {
            s.joined == Some(device) && s.device_nonce.is_none_or(|n| n == nonce) && {
                s.device_nonce = Some(nonce);
                true
            }
        })
    }

    /// [`PairingStore::reveal_pairing`].
    pub fn reveal(
        &self,
        slot: [u8; 32],
        opener: Fingerprint,
        person: Fingerprint,
        nonce: [u8; 32],
        now: u64,
    ) -> StepOutcome {
        self.step(slot, now, |s| {
            s.opener == opener && s.device_nonce.is_some() && s.revealed.is_none() && {
                s.revealed = Some((person, nonce));
                true
            }
        })
    }

    /// [`PairingStore::close_pairing`].
    pub fn close(&self, slot: [u8; 32], opener: Fingerprint) -> bool {
        let mut slots = self.slots();
        if slots.get(&slot).is_some_and(|s| s.opener == opener) {
            slots.remove(&slot);
            true
        } else {
            false
        }
    }

    /// [`PairingStore::expire_pairings`].
    pub fn expire(&self, now: u64) -> u64 {
        let mut slots = self.slots();
        let before = slots.len();
        slots.retain(|_, s| s.live_at(now));
        (before - slots.len()) as u64
    }
}

/// Implements [`PairingStore`] for a store holding a [`LocalPairings`] in
/// the named field.
macro_rules! local_pairings {
    ($store:ty, $field:ident) => {
        #[async_trait::async_trait]
        impl $crate::storage::pairings::PairingStore for $store {
            async fn open_pairing(
                &self,
                slot: $crate::storage::pairings::PairingSlot,
                per_opener: usize,
                total: usize,
                now: u64,
            ) -> Result<$crate::storage::pairings::OpenOutcome, $crate::storage::StorageError> {
                Ok(self.$field.open(slot, per_opener, total, now))
            }

            async fn pairing(
                &self,
                slot: [u8; 32],
                now: u64,
            ) -> Result<Option<$crate::storage::pairings::PairingSlot>, $crate::storage::StorageError>
            {
                Ok(self.$field.get(slot, now))
            }

                        async fn join_pairing(
                &self,
                slot: [u8; 32],
                device: vault_core::Fingerprint,
                now: u64,
            ) -> Result<$crate::storage::pairings::StepOutcome, $crate::storage::StorageError> {
                Ok(self.$field.join(slot, device, now))
            }

            async fn pairing_nonce(
                &self,
                slot: [u8; 32],
                device: vault_core::Fingerprint,
                nonce: [u8; 32],
                now: u64,
            ) -> Result<$crate::storage::pairings::StepOutcome, $crate::storage::StorageError> {
                Ok(self.$field.nonce(slot, device, nonce, now))
            }

            async fn reveal_pairing(
                &self,
                slot: [u8; 32],
                opener: vault_core::Fingerprint,
                person: vault_core::Fingerprint,
                nonce: [u8; 32],
                now: u64,
            ) -> Result<$crate::storage::pairings::StepOutcome, $crate::storage::StorageError> {
                Ok(self.$field.reveal(slot, opener, person, nonce, now))
            }

            async fn close_pairing(
                &self,
                slot: [u8; 32],
                opener: vault_core::Fingerprint,
            ) -> Result<bool, $crate::storage::StorageError> {
                Ok(self.$field.close(slot, opener))
            }

            async fn expire_pairings(&self, now: u64) -> Result<u64, $crate::storage::StorageError> {
                Ok(self.$field.expire(now))
            }
        }
    };
}
pub(crate) use local_pairings;
