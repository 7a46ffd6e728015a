//! The inbox rules: whose shares a person's inbox lists, and how far
//! strangers can fill it.
//!
//! Anyone can share with any published fingerprint (a grant is the owner's
//! entry in the owner's own log), so the relay cannot refuse a share; it
//! decides only what the inbox *lists*. A person may publish the owners
//! they accept shares from (`PUT /v1/inbox/accepted`). Every other owner is
//! a stranger, and strangers are capped: at most
//! [`StrangerLimits::vaults_per_owner`] vaults per stranger owner, at most
//! [`StrangerLimits::vaults_total`] strangers' vaults in all, and at most
//! [`StrangerLimits::shares_per_vault`] collections and records listed per
//! stranger's vault. Whatever is held back is counted, so the person is
//! told. A person who never set a list has accepted nobody, and the caps
//! still leave room for every ordinary share; accepting an owner lifts
//! them for that owner. Nothing here changes what a vault's log says:
//! joining a vault reads and verifies its log, whatever the inbox listed.
//!
//! A device reads its inbox for its person (a [`Reader`] with a `person`)
//! once the person's current list in the relay's directory names it: the
//! person's own vaults and the owners in the person's accepted list then
//! count as accepted for the device, and the device reads and changes
//! that one list (its own list is not consulted), so every device of a
//! person sees the same list and a flood of shares to a device's public
//! document cannot hide its person's patients.

use std::sync::Arc;

use vault_core::{Checkpoint, CollectionAccess, CollectionId, Fingerprint, RecordId, VaultId};

use crate::domain::access::AccessError;
use crate::domain::device_lists::{DeviceDirectory, DeviceListError};
use crate::domain::Failure;
use crate::state::AppState;
use crate::storage::{AcceptedOwners, InboxEntry};

/// Most owners one accepted list holds.
pub const MAX_ACCEPTED_OWNERS: usize = 1000;

/// How far strangers' shares are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrangerLimits {
    /// Vaults listed per stranger owner (the lowest vault ids first).
    pub vaults_per_owner: usize,
    /// Strangers' vaults listed in all.
    pub vaults_total: usize,
    /// Collections, and separately single-record shares, listed per
    /// stranger's vault.
    pub shares_per_vault: usize,
}

impl Default for StrangerLimits {
    fn default() -> Self {
        Self {
            vaults_per_owner: 16,
            vaults_total: 1000,
            shares_per_vault: 64,
        }
    }
}

/// Which part of the inbox a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Accepted owners' vaults and strangers' within the caps.
    #[default]
    All,
    /// Only the caller's own vaults and accepted owners'.
    Accepted,
    /// Only strangers' vaults, within the caps.
    Strangers,
}

impl View {
    /// Parses the `view` query parameter.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(Self::All),
            "accepted" => Some(Self::Accepted),
            "strangers" => Some(Self::Strangers),
            _ => None,
        }
    }
}

/// One vault an inbox lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// The vault and its owner.
    pub entry: InboxEntry,
    /// Whether its owner is the caller or one the caller accepted.
    pub accepted: bool,
}

/// What an inbox lists, before pagination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The vaults listed, in vault-id order.
    pub listed: Vec<Listed>,
    /// Strangers' vaults held back by the caps (counted whatever the view).
    pub strangers_held_back: u64,
    /// Strangers' vaults left out because the view asked for accepted
    /// owners only.
    pub strangers_not_asked: u64,
}

/// Who reads an inbox: the identity that signed the request, and the
/// person it reads for when it is a device of that person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    /// The signer of the request: its index is what the inbox lists, and
    /// each vault's verified state decides its access.
    pub caller: Fingerprint,
    /// The person whose current device list in the relay's directory names
    /// the caller ([`reader`] checked it); `None` for a person reading for
    /// itself.
    pub person: Option<Fingerprint>,
}

impl Reader {
    /// A person (or a device) reading for itself alone.
    pub fn own(caller: Fingerprint) -> Self {
        Self {
            caller,
            person: None,
        }
    }

    /// Whose accepted list the reader reads and changes: its person's, or
    /// its own.
    pub fn list_holder(&self) -> Fingerprint {
        self.person.unwrap_or(self.caller)
    }

    /// Whether `owner` is the reader itself or its person.
    fn is_self(&self, owner: &Fingerprint) -> bool {
        *owner == self.caller || Some(*owner) == self.person
    }
}

/// Why an inbox request for a person was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// The person's current list in the directory does not name the
    /// caller.
    #[error("this device is not on that person's current device list in this relay's directory: the person removed it, or published no list here. A device reads its person's inbox only while listed (with `vault`: run `vault devices confirm` once the person lists it again, or delete the `person` lines from the device's config)")]
    NotTheirDevice,
    /// The relay failed.
    #[error(transparent)]
    Failure(#[from] Failure),
}

/// The reader of a request signed by `caller` that asks to read for
/// `person`: refused unless `person` is the caller or its current list in
/// the relay's directory (verified against the person's root when it was
/// published) names the caller. A device the person removed is refused
/// from the version that removed it.
pub async fn reader(
    app: &Arc<AppState>,
    caller: Fingerprint,
    person: Option<Fingerprint>,
) -> Result<Reader, ReaderError> {
    let Some(person) = person.filter(|p| *p != caller) else {
        return Ok(Reader::own(caller));
    };
    let listed = match DeviceDirectory::new(app.clone()).current(person).await {
        Ok(current) => current.is_some_and(|list| list.device(&caller).is_some()),
        Err(DeviceListError::Failure(f)) => return Err(f.into()),
        Err(e) => return Err(Failure::internal("reading a person's device list", e).into()),
    };
    if !listed {
        return Err(ReaderError::NotTheirDevice);
    }
    Ok(Reader {
        caller,
        person: Some(person),
    })
}

/// Whether `owner` counts as accepted by `reader`, given the owners it
/// accepts.
pub fn is_accepted(reader: &Reader, accepted: &AcceptedOwners, owner: &Fingerprint) -> bool {
    reader.is_self(owner)
        || accepted
            .owners
            .binary_search_by_key(owner.as_bytes(), |o| *o.as_bytes())
            .is_ok()
}

/// Selects what `reader`'s inbox lists from the caller's index (`entries`,
/// in vault-id order), applying the stranger caps over the whole index so
/// that pages are consistent.
pub fn select(
    entries: &[InboxEntry],
    reader: &Reader,
    accepted: &AcceptedOwners,
    view: View,
    limits: &StrangerLimits,
) -> Selection {
    let mut per_owner: std::collections::HashMap<[u8; 32], usize> =
        std::collections::HashMap::new();
    let mut strangers = 0usize;
    let mut out = Selection::default();
    for entry in entries {
        let ok = is_accepted(reader, accepted, &entry.owner);
        if ok {
            if view != View::Strangers {
                out.listed.push(Listed {
                    entry: *entry,
                    accepted: true,
                });
            }
            continue;
        }
        let n = per_owner.entry(*entry.owner.as_bytes()).or_default();
        if *n >= limits.vaults_per_owner || strangers >= limits.vaults_total {
            out.strangers_held_back += 1;
            continue;
        }
        *n += 1;
        strangers += 1;
        if view == View::Accepted {
            out.strangers_not_asked += 1;
        } else {
            out.listed.push(Listed {
                entry: *entry,
                accepted: false,
            });
        }
    }
    out
}

/// One vault of an inbox page, from the relay's verified copy of its log.
#[derive(Debug, Clone)]
pub struct PageVault {
    /// The vault.
    pub vault: VaultId,
    /// Its owner.
    pub owner: Fingerprint,
    /// Whether the caller owns it.
    pub is_owner: bool,
    /// Whether the owner is the caller or one it accepted.
    pub accepted: bool,
    /// Whether `collections` or `records` were cut at the stranger cap.
    pub truncated: bool,
    /// The vault's head.
    pub head: Checkpoint,
    /// Collections the caller holds a current grant for.
    pub collections: Vec<(CollectionId, CollectionAccess)>,
    /// Records the caller holds a single-record grant for.
    pub records: Vec<RecordId>,
}

/// One page of an inbox.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The vaults, in vault-id order.
    pub vaults: Vec<PageVault>,
    /// The cursor of the next page, `None` on the last one.
    pub next: Option<VaultId>,
    /// See [`Selection::strangers_held_back`].
    pub strangers_held_back: u64,
    /// See [`Selection::strangers_not_asked`].
    pub strangers_not_listed: u64,
}

/// The page of `reader`'s inbox after `after` (at most `limit` vaults), in
/// `view`: the caller's index and the accepted owners read from storage
/// (its person's list, or its own), the stranger caps applied by
/// [`select`], and each listed vault's access decided by the relay's
/// verified state of it, for the caller, at the relay's time (a vault
/// where the access ended is skipped).
pub async fn page(
    app: &AppState,
    reader: Reader,
    after: Option<VaultId>,
    limit: usize,
    view: View,
) -> Result<Page, AccessError> {
    let me = reader.caller;
    let entries = app
        .meta
        .inbox(me)
        .await
        .map_err(|e| Failure::storage("reading the inbox", e))?;
    let accepted = accepted(app, reader).await?;
    let limits = app.config.inbox_limits();
    let selection = select(&entries, &reader, &accepted, view, &limits);
    let mut page = Page {
        strangers_held_back: selection.strangers_held_back,
        strangers_not_listed: selection.strangers_not_asked,
        ..Page::default()
    };
    let mut listed_up_to = None;
    let candidates = selection
        .listed
        .iter()
        .filter(|l| after.is_none_or(|a| l.entry.vault.as_bytes() > a.as_bytes()));
    for listed in candidates {
        if page.vaults.len() >= limit {
            page.next = listed_up_to;
            break;
        }
        let vault = listed.entry.vault;
        listed_up_to = Some(vault);
        let guard = app.read_state(vault).await?;
        let Some(state) = guard.as_ref() else {
            continue;
        };
        let access = state.access(&me, app.now());
        if !access.is_member() {
            continue;
        }
        let cap = if listed.accepted {
            usize::MAX
        } else {
            limits.shares_per_vault
        };
        page.vaults.push(PageVault {
            vault,
            owner: state.owner().fingerprint(),
            is_owner: access.owner,
            accepted: listed.accepted,
            truncated: access.collections.len() > cap || access.records.len() > cap,
            head: state.head(),
            collections: access
                .collections
                .iter()
                .take(cap)
                .map(|(id, c)| (*id, *c))
                .collect(),
            records: access.records.iter().take(cap).copied().collect(),
        });
    }
    Ok(page)
}

/// The owners `reader` accepts shares from: its person's list, or its own.
pub async fn accepted(app: &AppState, reader: Reader) -> Result<AcceptedOwners, Failure> {
    accepted_owners(app, reader.list_holder()).await
}

async fn accepted_owners(app: &AppState, holder: Fingerprint) -> Result<AcceptedOwners, Failure> {
    app.meta
        .accepted_owners(holder)
        .await
        .map_err(|e| Failure::storage("reading the accepted owners", e))
}

/// Why an accepted list was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SetAcceptedError {
    /// The list is malformed (see [`normalise`]).
    #[error("{0}")]
    Invalid(&'static str),
    /// A list of the same or a greater version is stored (returned).
    #[error("a list of version {} is stored (set from another device, or this request is a replay); apply your change to it and send version {}", .0.version, .0.version.saturating_add(1))]
    Stale(AcceptedOwners),
    /// The relay failed.
    #[error(transparent)]
    Failure(#[from] Failure),
}

/// Stores `reader`'s accepted owners (its person's list, or its own) if
/// `version` is greater than the stored list's; returns the list as stored
/// (owners sorted).
pub async fn set_accepted(
    app: &AppState,
    reader: Reader,
    version: u64,
    owners: Vec<Fingerprint>,
) -> Result<AcceptedOwners, SetAcceptedError> {
    let list = normalise(version, owners).map_err(SetAcceptedError::Invalid)?;
    match app
        .meta
        .set_accepted_owners(reader.list_holder(), list.clone())
        .await
        .map_err(|e| Failure::storage("storing the accepted owners", e))?
    {
        Ok(()) => Ok(list),
        Err(stored) => Err(SetAcceptedError::Stale(stored)),
    }
}

/// Checks and normalises an accepted list a person sends: at most
/// [`MAX_ACCEPTED_OWNERS`] distinct owners, version at least 1. Returns
/// the list sorted.
pub fn normalise(version: u64, owners: Vec<Fingerprint>) -> Result<AcceptedOwners, &'static str> {
    if version == 0 {
        return Err("`version` must be at least 1 (one more than the stored list's)");
    }
    if owners.len() > MAX_ACCEPTED_OWNERS {
        return Err("an accepted list holds at most 1,000 owners");
    }
    let mut owners = owners;
    owners.sort_by_key(|o| *o.as_bytes());
    let before = owners.len();
    owners.dedup();
    if owners.len() != before {
        return Err("an owner is listed twice");
    }
    Ok(AcceptedOwners { version, owners })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::VaultId;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint::from_bytes([b; 32])
    }

    fn entry(v: u8, owner: u8) -> InboxEntry {
        InboxEntry {
            vault: VaultId::from_bytes([v; 16]),
            owner: fp(owner),
        }
    }

    #[test]
    fn strangers_are_capped_per_owner_and_in_all_accepted_owners_are_not() {
        let me = Reader::own(fp(1));
        // Owner 9 floods with 10 vaults; owner 2 shares 3; I own one.
        let mut entries: Vec<InboxEntry> = (10..20).map(|v| entry(v, 9)).collect();
        entries.extend([entry(30, 2), entry(31, 2), entry(32, 2), entry(40, 1)]);
        entries.sort_by_key(|e| *e.vault.as_bytes());
        let limits = StrangerLimits {
            vaults_per_owner: 4,
            vaults_total: 6,
            shares_per_vault: 8,
        };
        let none = AcceptedOwners::default();
        let s = select(&entries, &me, &none, View::All, &limits);
        // 4 of owner 9, then 2 of owner 2 (total 6), and my own vault.
        assert_eq!(s.listed.len(), 7);
        assert_eq!(s.strangers_held_back, 7);
        assert!(s
            .listed
            .iter()
            .any(|l| l.entry.owner == me.caller && l.accepted));

        let accepted = normalise(1, vec![fp(2)]).unwrap();
        let s = select(&entries, &me, &accepted, View::All, &limits);
        assert_eq!(s.listed.iter().filter(|l| l.accepted).count(), 4);
        assert_eq!(s.listed.iter().filter(|l| !l.accepted).count(), 4);
        assert_eq!(s.strangers_held_back, 6);

        let s = select(&entries, &me, &accepted, View::Accepted, &limits);
        assert!(s.listed.iter().all(|l| l.accepted));
        assert_eq!(s.strangers_not_asked, 4);
        let s = select(&entries, &me, &accepted, View::Strangers, &limits);
        assert!(s.listed.iter().all(|l| !l.accepted));
        assert_eq!(s.listed.len(), 4);
    }

    #[test]
    fn a_device_reading_for_its_person_accepts_the_persons_vaults_and_owners() {
        // A phone (50) of Dr Dee (2): a flood from 9, Dee's own vault (40),
        // a patient Dee accepted (3), and one the phone accepted on its
        // own list before (4), which Dee's list also holds.
        let mut entries: Vec<InboxEntry> = (10..20).map(|v| entry(v, 9)).collect();
        entries.extend([entry(40, 2), entry(30, 3), entry(31, 3), entry(35, 4)]);
        entries.sort_by_key(|e| *e.vault.as_bytes());
        let limits = StrangerLimits {
            vaults_per_owner: 1,
            vaults_total: 2,
            shares_per_vault: 8,
        };
        let own = normalise(1, vec![fp(4)]).unwrap();
        // Dee's list, which `page` reads for the phone reading for her.
        let deps = normalise(1, vec![fp(3), fp(4)]).unwrap();
        let accepted = |l: &Selection| -> Vec<u8> {
            l.listed
                .iter()
                .filter(|l| l.accepted)
                .map(|l| l.entry.vault.as_bytes()[0])
                .collect()
        };
        // For itself, the phone's person and her patient are strangers.
        let alone = select(&entries, &Reader::own(fp(50)), &own, View::All, &limits);
        assert_eq!(accepted(&alone), vec![35]);
        assert_eq!(alone.strangers_held_back, 11, "Dee's own vault among them");
        let phone = Reader {
            caller: fp(50),
            person: Some(fp(2)),
        };
        assert_eq!(phone.list_holder(), fp(2));
        let s = select(&entries, &phone, &deps, View::All, &limits);
        assert_eq!(accepted(&s), vec![30, 31, 35, 40]);
        assert_eq!(s.strangers_held_back, 9, "the flood stays capped");
    }

    #[test]
    fn accepted_lists_are_checked() {
        assert!(normalise(0, vec![fp(1)]).is_err());
        assert!(normalise(1, vec![fp(1), fp(1)]).is_err());
        assert!(normalise(
            1,
            (0..=MAX_ACCEPTED_OWNERS)
                .map(|i| {
                    let mut b = [0u8; 32];
                    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    Fingerprint::from_bytes(b)
                })
                .collect()
        )
        .is_err());
        let l = normalise(3, vec![fp(5), fp(2)]).unwrap();
        assert_eq!(l.owners, vec![fp(2), fp(5)]);
    }
}
