//! Who may use a vault: read its log and blobs (members), or append and
//! upload (the owner and members with write or read-add access). Rights
//! come from the relay's verified copy of the vault's log
//! ([`vault_core::VaultState::access`]), evaluated at the relay's clock;
//! the relay keeps no accounts of its own.

use vault_core::{Access, Fingerprint, VaultId, VaultState};

use crate::domain::Failure;
use crate::state::AppState;

/// Why a caller may not use a vault (or why its state is not available).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No vault with this id is stored.
    #[error("no vault with this id is stored on this relay")]
    VaultNotFound,
    /// The caller holds no current access (never had, revoked or expired).
    #[error("you are not a member of this vault (or your access was revoked or expired)")]
    NotMember,
    /// The caller is a member without write (or read-add) access.
    #[error("you have read-only access to this vault; ask the owner for write access")]
    ReadOnly,
    /// The relay failed to load the vault's state.
    #[error(transparent)]
    Failure(#[from] Failure),
}

/// `who`'s access to the vault of `state` at `now`, if it is a member
/// ([`AccessError::NotMember`] otherwise).
pub fn member(state: &VaultState, who: &Fingerprint, now: u64) -> Result<Access, AccessError> {
    let access = state.access(who, now);
    if access.is_member() {
        Ok(access)
    } else {
        Err(AccessError::NotMember)
    }
}

/// `who`'s access to the vault of `state` at `now`, if it may append
/// entries and upload blobs ([`AccessError::ReadOnly`] for a member who may
/// not, [`AccessError::NotMember`] for anyone else).
pub fn writer(state: &VaultState, who: &Fingerprint, now: u64) -> Result<Access, AccessError> {
    let access = member(state, who, now)?;
    if access.may_write() {
        Ok(access)
    } else {
        Err(AccessError::ReadOnly)
    }
}

/// `who`'s access to the vault of `state` at `now`, if it may upload blobs
/// (a member who may add records; [`AccessError::ReadOnly`] for any other
/// member, an agent who only shares included).
pub fn uploader(state: &VaultState, who: &Fingerprint, now: u64) -> Result<Access, AccessError> {
    let access = member(state, who, now)?;
    if access.may_upload() {
        Ok(access)
    } else {
        Err(AccessError::ReadOnly)
    }
}

/// [`member`] on `vault`'s current verified state (loaded if needed;
/// [`AccessError::VaultNotFound`] if there is no such vault).
pub async fn member_access(
    app: &AppState,
    vault: VaultId,
    who: &Fingerprint,
) -> Result<Access, AccessError> {
    on_state(app, vault, who, member).await
}

/// [`uploader`] on `vault`'s current verified state (loaded if needed;
/// [`AccessError::VaultNotFound`] if there is no such vault).
pub async fn uploader_access(
    app: &AppState,
    vault: VaultId,
    who: &Fingerprint,
) -> Result<Access, AccessError> {
    on_state(app, vault, who, uploader).await
}

/// `check` on `vault`'s current verified state, at the relay's time.
async fn on_state(
    app: &AppState,
    vault: VaultId,
    who: &Fingerprint,
    check: fn(&VaultState, &Fingerprint, u64) -> Result<Access, AccessError>,
) -> Result<Access, AccessError> {
    let guard = app.read_state(vault).await?;
    let state = guard.as_ref().ok_or(AccessError::NotMember)?;
    check(state, who, app.now())
}
