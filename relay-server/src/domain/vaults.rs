//! Vaults: creating one from its genesis entry, and reading its head and
//! log (members only, in pages).

use std::net::IpAddr;
use std::sync::Arc;

use vault_core::{Fingerprint, LogEntry, VaultId, VaultState};

use crate::admission::CreationLimited;
use crate::domain::access::{self, AccessError};
use crate::domain::Failure;
use crate::state::AppState;
use crate::storage::{CreateOutcome, Head, StoredEntry};

/// Most entries in one log page.
pub const MAX_PAGE: u64 = 1000;
/// Most entry bytes in one log page (a page may hold fewer entries than
/// asked for; it always holds at least one).
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// Why a vault was not created or its log not read.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The genesis entry does not verify (`index` is 0).
    #[error("entry {index} of the request was refused: {source}")]
    InvalidEntry {
        /// Which entry of the request.
        index: usize,
        /// vault-core's reason.
        source: vault_core::Error,
    },
    /// The signer is not the owner the genesis entry names.
    #[error("a vault can only be created by the owner its genesis entry names")]
    NotOwner,
    /// The genesis entry is dated after the skew window of the relay's
    /// clock.
    #[error("entry {index} is dated more than {skew} seconds from the relay's clock; check the device clock")]
    EntryTimeOutOfRange {
        /// Which entry of the request.
        index: usize,
        /// The window, seconds either way.
        skew: u64,
        /// The relay's clock, Unix seconds.
        server_time: u64,
    },
    /// The source address created too many identities and vaults this hour.
    #[error(transparent)]
    CreationLimited(#[from] CreationLimited),
    /// The genesis entry would take the owner over their quota.
    #[error("your storage quota on this relay would be exceeded; delete data or ask the operator for more")]
    QuotaExceeded,
    /// Another vault with this id (a different genesis) is stored.
    #[error("another vault with this id exists on this relay; create a new vault")]
    VaultExists,
    /// The caller may not read this vault (or it does not exist).
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The relay failed.
    #[error(transparent)]
    Failure(#[from] Failure),
}

/// A vault created (or found already stored with exactly this genesis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    /// The vault's id (from its genesis).
    pub vault: VaultId,
    /// The genesis entry's head.
    pub head: Head,
    /// `false` if exactly this genesis was already stored.
    pub new: bool,
}

/// One page of a vault's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    /// The stored head when the page was read.
    pub head: Head,
    /// Entry encodings in order, from the requested sequence number.
    pub entries: Vec<Vec<u8>>,
}

/// The log entry as stored: its encoding and the fields indexed.
pub(crate) fn stored(entry: &LogEntry) -> StoredEntry {
    StoredEntry {
        seq: entry.seq(),
        hash: *entry.hash(),
        bytes: entry.to_bytes().to_vec(),
    }
}

/// Whether an entry's claimed time is within `skew` seconds of `now`
/// either way (`docs/relay-api.md`: entry times near the relay clock).
pub(crate) fn time_in_window(entry: &LogEntry, now: u64, skew: u64) -> bool {
    entry.time().abs_diff(now) <= skew
}

/// Creating vaults and reading their logs.
pub struct Vaults {
    app: Arc<AppState>,
}

impl Vaults {
    /// The service over the relay's state.
    pub fn new(app: Arc<AppState>) -> Self {
        Self { app }
    }

    /// Creates the vault `genesis` starts, signed by `signer` from
    /// `source`. Checked in this order: the genesis verifies
    /// ([`VaultError::InvalidEntry`]), `signer` is the owner it names
    /// ([`VaultError::NotOwner`]), its time is not after the skew window
    /// ([`VaultError::EntryTimeOutOfRange`]; an older genesis is accepted:
    /// a mirror's copy, or a vault a restore lost), `source` has budget left
    /// ([`VaultError::CreationLimited`], given back unless the vault is
    /// new), then storage: the owner's quota ([`VaultError::QuotaExceeded`])
    /// and the id ([`VaultError::VaultExists`] for another genesis; exactly
    /// this one is answered as created, with `new: false`). Durable when it
    /// returns.
    pub async fn create(
        &self,
        signer: Fingerprint,
        genesis: &LogEntry,
        source: Option<IpAddr>,
    ) -> Result<Created, VaultError> {
        let app = &self.app;
        let state = VaultState::from_genesis(genesis)
            .map_err(|source| VaultError::InvalidEntry { index: 0, source })?;
        if state.owner().fingerprint() != signer {
            return Err(VaultError::NotOwner);
        }
        let now = app.now();
        let skew = app.config.clock_skew;
        // An older genesis is a vault its owner created elsewhere or
        // earlier: a mirror's copy, or one a restore lost (decision 57).
        // Only its owner can create it, and its later entries follow it.
        if genesis.time() > now.saturating_add(skew) {
            return Err(VaultError::EntryTimeOutOfRange {
                index: 0,
                skew,
                server_time: now,
            });
        }
        let vault = genesis.vault();
        app.new_budget
            .take(source, now)
            .map_err(CreationLimited::from)?;
        let outcome = app
            .meta
            .create_vault(vault, signer, stored(genesis), app.config.quota)
            .await
            .map_err(|e| Failure::storage("creating a vault", e));
        if !matches!(outcome, Ok(CreateOutcome::Created)) {
            app.new_budget.give_back(source, now);
        }
        let head = Head::of(&state);
        match outcome? {
            CreateOutcome::Created => Ok(Created {
                vault,
                head,
                new: true,
            }),
            CreateOutcome::AlreadyStored => Ok(Created {
                vault,
                head,
                new: false,
            }),
            CreateOutcome::Quota => Err(VaultError::QuotaExceeded),
            CreateOutcome::Conflict => Err(VaultError::VaultExists),
        }
    }

    /// The stored head of `vault`, for a member.
    pub async fn head(&self, vault: VaultId, who: &Fingerprint) -> Result<Head, VaultError> {
        access::member_access(&self.app, vault, who).await?;
        self.stored_head(vault).await
    }

    /// A page of `vault`'s log for a member: entries from `since` (default
    /// 0), at most `limit` (default and at most [`MAX_PAGE`]; at least 1)
    /// and about [`MAX_PAGE_BYTES`] (always at least one entry if any),
    /// up to the head of the relay's verified state. Each entry is served
    /// whole or redacted, as [`VaultState::shows_in_full`] decides for
    /// `who` (`docs/format.md` §8.8): a member reads what concerns the
    /// collections and records they hold, and only the place in the chain
    /// of everything else.
    pub async fn read_log(
        &self,
        vault: VaultId,
        who: &Fingerprint,
        since: Option<u64>,
        limit: Option<u64>,
    ) -> Result<LogPage, VaultError> {
        let guard = self.app.read_state(vault).await?;
        let state = guard.as_ref().ok_or(AccessError::NotMember)?;
        access::member(state, who, self.app.now())?;
        let head = Head::of(state);
        let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        let since = since.unwrap_or(0);
        let limit = limit.min(head.seq.saturating_add(1).saturating_sub(since));
        let mut entries = if limit == 0 {
            Vec::new()
        } else {
            self.app
                .meta
                .entries(vault, since, limit)
                .await
                .map_err(|e| Failure::storage("reading a log", e))?
        };
        for bytes in &mut entries {
            redact_for(state, who, bytes)?;
        }
        entries.truncate(page_len(&entries, MAX_PAGE_BYTES));
        Ok(LogPage { head, entries })
    }

    /// The head as stored ([`AccessError::VaultNotFound`] if the vault does
    /// not exist).
    async fn stored_head(&self, vault: VaultId) -> Result<Head, VaultError> {
        self.app
            .meta
            .head(vault)
            .await
            .map_err(|e| Failure::storage("reading a head", e))?
            .ok_or(VaultError::Access(AccessError::VaultNotFound))
    }
}

/// Replaces a stored entry's encoding with its redacted form if `state`
/// does not show it whole to `who`. Version-1 entries (first byte 1) are
/// always whole and are not parsed.
fn redact_for(
    state: &VaultState,
    who: &Fingerprint,
    bytes: &mut Vec<u8>,
) -> Result<(), VaultError> {
    if bytes.first() == Some(&1) || state.owner().fingerprint() == *who {
        return Ok(());
    }
    let entry = LogEntry::from_bytes(bytes)
        .map_err(|e| Failure::internal("a stored log entry does not parse", e))?;
    if !state.shows_in_full(&entry, who) {
        if let Some(redacted) = entry.redacted_bytes() {
            *bytes = redacted;
        }
    }
    Ok(())
}

/// How many of `entries` make the longest prefix within `max_bytes`, and
/// never less than one entry: a client asks again from where a page ends.
fn page_len(entries: &[Vec<u8>], max_bytes: usize) -> usize {
    let mut total = 0usize;
    entries
        .iter()
        .take_while(|e| {
            let first = total == 0;
            total = total.saturating_add(e.len());
            first || total <= max_bytes
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::page_len;

    #[test]
    fn pages_stop_at_the_byte_budget_but_hold_one_entry() {
        let entries = vec![vec![0u8; 400], vec![0u8; 400], vec![0u8; 400]];
        assert_eq!(page_len(&entries, 1000), 2);
        assert_eq!(page_len(&entries, 800), 2);
        assert_eq!(page_len(&entries, 799), 1);
        assert_eq!(page_len(&entries, 10), 1);
        assert_eq!(page_len(&entries, usize::MAX), 3);
        assert_eq!(page_len(&[], 10), 0);
    }
}

#[cfg(test)]
mod service_tests {
    use vault_core::Permission;

    use super::*;
    use crate::domain::testing::{ident, Relay, World};
    use crate::storage::MetaStore;

    #[tokio::test]
    async fn a_vault_is_created_by_the_owner_its_genesis_names_once() {
        let w = World::new().await;
        let vaults = Vaults::new(w.app.clone());
        let alice = ident(2, "Dr Alice", w.now);
        let (state, genesis) = VaultState::create(&alice, w.now).unwrap();
        let err = vaults
            .create(w.patient.fingerprint(), &genesis, None)
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::NotOwner), "{err:?}");
        // Dated after the window: refused. Dated before it (a mirror's or
        // a restored copy of an older vault): accepted, below.
        w.clock.set(w.now - w.app.config.clock_skew - 1);
        let err = vaults
            .create(alice.fingerprint(), &genesis, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, VaultError::EntryTimeOutOfRange { index: 0, .. }),
            "{err:?}"
        );
        w.clock.set(w.now + 30 * 86_400);
        let created = vaults
            .create(alice.fingerprint(), &genesis, None)
            .await
            .unwrap();
        assert_eq!(created.vault, state.vault());
        assert!(created.new);
        assert_eq!(created.head.hash, state.head().head);
        let again = vaults
            .create(alice.fingerprint(), &genesis, None)
            .await
            .unwrap();
        assert_eq!(
            again,
            Created {
                new: false,
                ..created
            }
        );
    }

    #[tokio::test]
    async fn the_genesis_is_charged_to_the_owners_quota_and_a_refusal_costs_no_budget() {
        let source = Some(std::net::IpAddr::from([192, 0, 2, 1]));
        let r = Relay::with(|c| {
            c.quota = 64;
            c.new_per_hour = 1;
        });
        let alice = ident(2, "Dr Alice", r.now);
        let (_, genesis) = VaultState::create(&alice, r.now).unwrap();
        assert!(genesis.to_bytes().len() > 64);
        let err = Vaults::new(r.app.clone())
            .create(alice.fingerprint(), &genesis, source)
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::QuotaExceeded), "{err:?}");
        assert!(r.meta.head(genesis.vault()).await.unwrap().is_none());
        // The source's one creation of the hour is still there.
        crate::domain::identities::Directory::new(r.app.clone())
            .publish(alice.fingerprint(), alice.public(), None, source)
            .await
            .unwrap();
        let err = Vaults::new(r.app.clone())
            .create(alice.fingerprint(), &genesis, source)
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::CreationLimited(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_member_reads_other_collections_redacted_and_verifies_the_chain() {
        let mut w = World::new().await;
        let alice = ident(2, "Dr Alice", w.now);
        let carol = ident(3, "Dr Carol, Psychiatry", w.now);
        w.share(&alice, Permission::Read).await;
        let (psych, e) = w
            .state
            .create_collection(&w.patient, "psychiatry", w.now)
            .unwrap();
        w.append(&w.patient.clone(), vec![e]).await.unwrap();
        let mut kr = vault_core::Keyring::new(&w.patient, w.now);
        let e = w
            .state
            .share_collection(&mut kr, &psych, carol.public(), Permission::Read, None)
            .unwrap();
        w.append(&w.patient.clone(), vec![e]).await.unwrap();
        let vaults = Vaults::new(w.app.clone());
        let page = vaults
            .read_log(w.vault(), &alice.fingerprint(), None, None)
            .await
            .unwrap();
        let entries: Vec<LogEntry> = page
            .entries
            .iter()
            .map(|b| LogEntry::from_bytes(b).unwrap())
            .collect();
        // Psychiatry's creation and Carol's grant: redacted, and nothing of
        // Carol's identity in the bytes Alice receives.
        assert_eq!(entries.iter().filter(|e| e.is_redacted()).count(), 2);
        for bytes in &page.entries {
            assert!(!bytes.windows(5).any(|w| w == b"Carol"));
        }
        let theirs =
            VaultState::verify_log_as(&alice.fingerprint(), w.now, &entries, None).unwrap();
        assert_eq!(theirs.head(), w.state.head());
        assert_eq!(theirs.collections().len(), 1);
        // The owner reads every entry whole.
        let page = vaults
            .read_log(w.vault(), &w.patient.fingerprint(), None, None)
            .await
            .unwrap();
        assert!(page
            .entries
            .iter()
            .all(|b| !LogEntry::from_bytes(b).unwrap().is_redacted()));
    }

    #[tokio::test]
    async fn members_read_the_log_in_pages() {
        let mut w = World::new().await;
        let alice = ident(2, "Dr Alice", w.now);
        let bob = ident(3, "Dr Bob", w.now);
        w.share(&alice, Permission::Read).await;
        let vaults = Vaults::new(w.app.clone());
        let err = vaults
            .read_log(w.vault(), &bob.fingerprint(), None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, VaultError::Access(AccessError::NotMember)),
            "{err:?}"
        );
        let err = vaults
            .head(w.vault(), &bob.fingerprint())
            .await
            .unwrap_err();
        assert!(
            matches!(err, VaultError::Access(AccessError::NotMember)),
            "{err:?}"
        );
        let page = vaults
            .read_log(w.vault(), &alice.fingerprint(), Some(1), Some(1))
            .await
            .unwrap();
        assert_eq!(page.head, w.stored_head().await);
        assert_eq!(page.entries.len(), 1);
        assert_eq!(
            LogEntry::from_bytes(&page.entries[0]).unwrap().seq(),
            1,
            "from `since`"
        );
        let page = vaults
            .read_log(w.vault(), &alice.fingerprint(), None, Some(0))
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 1, "a limit of 0 is 1");
        let all = vaults
            .read_log(w.vault(), &alice.fingerprint(), None, None)
            .await
            .unwrap();
        assert_eq!(all.entries.len() as u64, all.head.seq + 1);
        assert_eq!(
            vaults.head(w.vault(), &alice.fingerprint()).await.unwrap(),
            all.head
        );
    }
}
