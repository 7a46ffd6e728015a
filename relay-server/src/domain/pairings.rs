//! Pairing a new device with an existing one (`docs/format.md` §3.8,
//! decision 72): the relay keeps a slot per code where the existing device
//! commits, the new device joins (and is answered the commitment), then
//! sends its nonce, and the existing device reveals the person and its
//! nonce. The relay only carries these; the two
//! devices' compared code is what authenticates them, so nothing the relay
//! does here can pair a device the person did not see on both screens.
//!
//! Bounds, so that nobody exhausts the relay with slots: a slot lives
//! [`PAIRING_TTL`] seconds, an identity holds at most [`PER_OPENER`] live
//! slots, a source address opens at most `--pairings-per-source` in each
//! [`PAIRING_TTL`] window (identities are free to make, so without it one
//! address holding many could fill the relay), and the relay holds at most
//! [`MAX_LIVE`]; one device joins a slot, and only its opener reveals or
//! closes it.

use std::net::IpAddr;
use std::sync::Arc;

use vault_core::pairing::PAIRING_TTL;
use vault_core::{Fingerprint, Role};

use crate::domain::Failure;
use crate::state::AppState;
use crate::storage::pairings::{OpenOutcome, PairingSlot, StepOutcome};

/// Live slots one identity may hold at once.
pub const PER_OPENER: usize = 3;
/// Live slots the relay holds at once (a guessed code then finds a slot
/// with odds of 10⁻⁶, and the comparison catches it).
pub const MAX_LIVE: usize = 10_000;

/// Why a pairing step was refused.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    /// No live slot of this code that the caller may see.
    #[error("no pairing with this code is open: check the code, or start again on the other device (a code works for 10 minutes)")]
    NotFound,
    /// Another device joined first.
    #[error("another device already joined with this code: start again on the other device, and pair only if both screens show the same code")]
    Taken,
    /// A live slot of this code exists (the opener draws another code).
    #[error("a pairing with this code is already open: draw another code")]
    CodeInUse,
    /// The caller holds too many live slots.
    #[error("you have {0} pairings open: finish or cancel one, or wait 10 minutes")]
    TooManyOfYours(usize),
    /// The caller's network address opened its budget of slots in this
    /// window.
    #[error("this network address has opened {allowed} pairings in the last 10 minutes, the most this relay allows; retry in {retry_after} seconds, or ask the relay's operator")]
    TooManyFromSource {
        /// Opens allowed per source per window.
        allowed: u32,
        /// Seconds until the next window.
        retry_after: u64,
    },
    /// The relay holds too many live slots.
    #[error("this relay has too many pairings open: try again in a few minutes")]
    TooMany,
    /// The reveal came before the joined device sent its nonce.
    #[error("no device has joined this pairing and sent its nonce yet: wait for it")]
    NotJoined,
    /// The joined device sent its nonce twice.
    #[error("this device already sent its nonce for this pairing: start again to pair once more")]
    NonceSent,
    /// The reveal came twice.
    #[error("this pairing was already answered: start again to pair another device")]
    AlreadyRevealed,
    /// The joiner is not a device identity.
    #[error("only a device identity joins a pairing (`vault init --role device`)")]
    NotADevice,
    /// The opener joined its own slot.
    #[error("a device cannot pair with itself: type the code on the new device")]
    OwnSlot,
    /// The revealed person is not published here.
    #[error("no identity with this fingerprint is published on this relay; publish it first (`vault whoami --publish`)")]
    PersonNotFound,
    /// The relay failed.
    #[error(transparent)]
    Failure(#[from] Failure),
}

fn storage(context: &'static str) -> impl FnOnce(crate::storage::StorageError) -> Failure {
    move |e| Failure::storage(context, e)
}

/// The pairing service.
pub struct Pairings {
    app: Arc<AppState>,
}

impl Pairings {
    /// The service over the relay's state.
    pub fn new(app: Arc<AppState>) -> Self {
        Self { app }
    }

    /// Opens the slot `slot` for `opener`, connected from `source`, with
    /// its commitment; returns the slot's expiry (Unix seconds). Durable
    /// (for its lifetime) when it returns. An open that does not happen
    /// gives its place in the source's budget back.
    pub async fn open(
        &self,
        opener: Fingerprint,
        slot: [u8; 32],
        commit: [u8; 32],
        source: Option<IpAddr>,
    ) -> Result<u64, PairingError> {
        let now = self.app.now();
        let budget = &self.app.pairing_budget;
        budget
            .take(source, now)
            .map_err(|s| PairingError::TooManyFromSource {
                allowed: s.allowed,
                retry_after: s.retry_after,
            })?;
        let expires_at = now.saturating_add(PAIRING_TTL);
        let opened = PairingSlot::opened(slot, opener, commit, expires_at);
        let outcome = self
            .app
            .meta
            .open_pairing(opened, PER_OPENER, MAX_LIVE, now)
            .await
            .map_err(storage("opening a pairing"));
        if !matches!(outcome, Ok(OpenOutcome::Opened)) {
            budget.give_back(source, now);
        }
        match outcome? {
            OpenOutcome::Opened => Ok(expires_at),
            OpenOutcome::Taken => Err(PairingError::CodeInUse),
            OpenOutcome::TooManyOfOpener(n) => Err(PairingError::TooManyOfYours(n)),
            OpenOutcome::TooMany(_) => Err(PairingError::TooMany),
        }
    }

    /// Joins `device` (the caller, a device identity) to the slot; the
    /// first join wins (and the same device may repeat it until it sent its
    /// nonce). Returns the slot: its commitment is what the device
    /// checks the reveal against, and it sends its nonce only after it
    /// holds it ([`Pairings::nonce`]).
    pub async fn join(
        &self,
        device: Fingerprint,
        slot: [u8; 32],
    ) -> Result<PairingSlot, PairingError> {
        let id = self
            .app
            .identity(device)
            .await?
            .ok_or(PairingError::NotADevice)?;
        if id.role() != Role::Device {
            return Err(PairingError::NotADevice);
        }
        let now = self.app.now();
        match self
            .app
            .meta
            .join_pairing(slot, device, now)
            .await
            .map_err(storage("joining a pairing"))?
        {
            StepOutcome::Done(s) => Ok(s),
            StepOutcome::Refused(s) if s.opener == device => Err(PairingError::OwnSlot),
            StepOutcome::Refused(_) => Err(PairingError::Taken),
            StepOutcome::NotFound => Err(PairingError::NotFound),
        }
    }

    /// Records the nonce of the device that joined (the caller), once (the
    /// same nonce again is answered alike).
    pub async fn nonce(
        &self,
        device: Fingerprint,
        slot: [u8; 32],
        nonce: [u8; 32],
    ) -> Result<PairingSlot, PairingError> {
        match self
            .app
            .meta
            .pairing_nonce(slot, device, nonce, self.app.now())
            .await
            .map_err(storage("sending a pairing nonce"))?
        {
            StepOutcome::Done(s) => Ok(s),
            StepOutcome::Refused(s) if s.joined == Some(device) => Err(PairingError::NonceSent),
            StepOutcome::Refused(_) | StepOutcome::NotFound => Err(PairingError::NotFound),
        }
    }

    /// Reveals `person` and the opener's nonce, from the opener, once the
    /// joined device sent its nonce.
    pub async fn reveal(
        &self,
        opener: Fingerprint,
        slot: [u8; 32],
        person: Fingerprint,
        nonce: [u8; 32],
    ) -> Result<PairingSlot, PairingError> {
        if self.app.identity(person).await?.is_none() {
            return Err(PairingError::PersonNotFound);
        }
        match self
            .app
            .meta
            .reveal_pairing(slot, opener, person, nonce, self.app.now())
            .await
            .map_err(storage("answering a pairing"))?
        {
            StepOutcome::Done(s) => Ok(s),
            StepOutcome::NotFound => Err(PairingError::NotFound),
            StepOutcome::Refused(s) if s.opener != opener => Err(PairingError::NotFound),
            StepOutcome::Refused(s) if s.device_nonce.is_none() => Err(PairingError::NotJoined),
            StepOutcome::Refused(_) => Err(PairingError::AlreadyRevealed),
        }
    }

    /// The slot as it is, for its opener or the device that joined it (to
    /// anyone else it does not exist).
    pub async fn status(
        &self,
        caller: Fingerprint,
        slot: [u8; 32],
    ) -> Result<PairingSlot, PairingError> {
        let s = self
            .app
            .meta
            .pairing(slot, self.app.now())
            .await
            .map_err(storage("reading a pairing"))?
            .ok_or(PairingError::NotFound)?;
        if s.opener == caller || s.joined == Some(caller) {
            Ok(s)
        } else {
            Err(PairingError::NotFound)
        }
    }

    /// Closes the slot, for its opener.
    pub async fn close(&self, opener: Fingerprint, slot: [u8; 32]) -> Result<(), PairingError> {
        if self
            .app
            .meta
            .close_pairing(slot, opener)
            .await
            .map_err(storage("closing a pairing"))?
        {
            Ok(())
        } else {
            Err(PairingError::NotFound)
        }
    }
}
