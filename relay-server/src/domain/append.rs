//! Appending entries to a vault's log: compare-and-swap on the head,
//! verification against the relay's own verified state with vault-core,
//! the vault size cap, the signer's quota, blob usability, purges.
//!
//! The relay's verified state of a vault ([`crate::state::VaultSlot`]) is
//! changed ahead of the commit and must never run ahead of what is stored:
//! every path that leaves it ahead (an entry refused after earlier ones
//! were applied, storage refusing or failing) drops it, so it is rebuilt
//! from the stored log at the next use.

use std::sync::Arc;

use vault_core::{EntryBody, Fingerprint, LogEntry, VaultId, VaultState};

use crate::domain::access::{self, AccessError};
use crate::domain::vaults::{stored, time_in_window};
use crate::domain::Failure;
use crate::state::{AppState, StateWrite, REBUILD_FREE};
use crate::storage::{self, AppendBatch, BlobRef, Head, NonceClaim, StagedAppend};

/// Most entries in one append.
pub const MAX_APPEND: usize = 1024;

/// Why an append was refused; nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The request carries no entry.
    #[error("entries must not be empty")]
    Empty,
    /// The request carries more than [`MAX_APPEND`] entries.
    #[error("at most {max} entries per append")]
    TooMany {
        /// [`MAX_APPEND`].
        max: usize,
    },
    /// An entry does not parse or does not verify against the log.
    #[error("entry {index} of the request was refused: {source}")]
    InvalidEntry {
        /// Which entry of the request.
        index: usize,
        /// vault-core's reason.
        source: vault_core::Error,
    },
    /// An entry is not authored by the signer.
    #[error("entry {index} is not authored by the identity that signed the request")]
    NotAuthor {
        /// Which entry of the request.
        index: usize,
    },
    /// An entry is dated outside the skew window of the relay's clock.
    #[error("entry {index} is dated more than {skew} seconds from the relay's clock; check the device clock")]
    EntryTimeOutOfRange {
        /// Which entry of the request.
        index: usize,
        /// The window, seconds either way.
        skew: u64,
        /// The relay's clock, Unix seconds.
        server_time: u64,
    },
    /// A multi-entry append during the vault's rebuild cooldown.
    #[error("a batch of entries to this vault was refused less than a minute ago, which made the relay rebuild the vault; append one entry per request, or retry the batch in {retry_after} seconds")]
    RebuildCooldown {
        /// Seconds left of the cooldown.
        retry_after: u64,
    },
    /// The signer may not append (or the vault does not exist).
    #[error(transparent)]
    Access(#[from] AccessError),
    /// Compare-and-swap failed: the log's head is not the request's `prev`.
    #[error("the vault log has moved on since your view of it; fetch the new entries, rebuild yours on the new head and retry")]
    HeadMoved(Head),
    /// The log would hold more than `max_vault_entries` entries.
    #[error("this vault's log would exceed {max} entries, the most this relay stores per vault; nothing was appended. Start a new vault, or ask the relay's operator to raise max-vault-entries")]
    VaultFull {
        /// The relay's `max_vault_entries`.
        max: u64,
    },
    /// The entries would take the signer over their quota.
    #[error("your storage quota on this relay would be exceeded; delete data or ask the operator for more")]
    QuotaExceeded,
    /// A record-put names a blob that is not usable: not stored in the
    /// vault, of another length than signed, uploaded by someone else,
    /// already used by another record, or named twice in the request.
    #[error("entry {index} names a ciphertext blob that you have not uploaded to this vault (or that another record already uses); upload the record's ciphertext first")]
    BlobMissing {
        /// Which entry of the request.
        index: usize,
    },
    /// This relay is a mirror of the vault (`docs/format.md` §8.9): the
    /// owner named another relay its home, where writes go.
    #[error("this relay keeps a mirror of this vault; its home relay is {home}: write there (run `vault sync` to learn the vault's relays)")]
    NotHome {
        /// The vault's home relay.
        home: vault_core::request::RelayOrigin,
    },
    /// The request was received already, by this relay or another over
    /// the same store (its nonce is claimed).
    #[error("this request was already received (replayed nonce); sign every request afresh")]
    Replayed,
    /// The relay failed.
    #[error(transparent)]
    Failure(#[from] Failure),
}

/// Checks the number of entries of a request (1 to [`MAX_APPEND`]) before
/// anything else about them.
pub fn check_count(entries: usize) -> Result<(), AppendError> {
    if entries == 0 {
        return Err(AppendError::Empty);
    }
    if entries > MAX_APPEND {
        return Err(AppendError::TooMany { max: MAX_APPEND });
    }
    Ok(())
}

/// Appending entries to vaults.
pub struct Appends {
    app: Arc<AppState>,
    nonce: Option<NonceClaim>,
}

impl Appends {
    /// The service over the relay's state.
    pub fn new(app: Arc<AppState>) -> Self {
        Self { app, nonce: None }
    }

    /// Claims `nonce` (the request's, not yet claimed in a shared store:
    /// [`crate::auth::Caller::unclaimed_nonce`]) in the same round trip as
    /// storage stages the append ([`crate::storage::MetaStore::stage_append`],
    /// decision 61), and before any refusal decided on the vault's state
    /// is given; a replay is refused with [`AppendError::Replayed`]
    /// (decision 59).
    pub fn claiming(mut self, nonce: Option<NonceClaim>) -> Self {
        self.nonce = nonce;
        self
    }

    /// Appends `entries`, signed by `signer`, to `vault` if its head is
    /// `prev`; returns the new head once the entries are durable.
    ///
    /// Checked in this order, each refusal leaving the vault as it was:
    /// entry count ([`check_count`]); each entry authored by `signer`
    /// ([`AppendError::NotAuthor`]) and dated within the skew window
    /// ([`AppendError::EntryTimeOutOfRange`]); no blob named by two
    /// record-puts ([`AppendError::BlobMissing`]); for several entries, no
    /// rebuild cooldown ([`AppendError::RebuildCooldown`]); the vault
    /// exists and `signer` may write ([`AppendError::Access`]); `prev` is
    /// the head ([`AppendError::HeadMoved`]); the log stays within
    /// `max_vault_entries` ([`AppendError::VaultFull`]); the request's
    /// nonce is claimed ([`AppendError::Replayed`]); then, for entries
    /// that continue the log from `prev`, storage stages the batch: the
    /// quota ([`AppendError::QuotaExceeded`]) and each record-put's blob
    /// ([`AppendError::BlobMissing`]); each entry verifies with vault-core
    /// against the relay's state ([`AppendError::InvalidEntry`]). Storage
    /// checks the head, the quota and the blobs again in the commit.
    ///
    /// Once the checks start changing the relay's state the rest runs as
    /// its own task, so a cancelled request (client gone, timeout) cannot
    /// leave the state ahead of storage. After the commit, the bytes of
    /// blobs the entries purged are deleted unless another vault holds
    /// them.
    pub async fn append(
        &self,
        vault: VaultId,
        signer: Fingerprint,
        prev: Head,
        entries: Vec<LogEntry>,
    ) -> Result<Head, AppendError> {
        check_count(entries.len())?;
        let now = self.app.now();
        let skew = self.app.config.clock_skew;
        for (index, e) in entries.iter().enumerate() {
            if e.author() != signer {
                return Err(AppendError::NotAuthor { index });
            }
            if !time_in_window(e, now, skew) {
                return Err(AppendError::EntryTimeOutOfRange {
                    index,
                    skew,
                    server_time: now,
                });
            }
        }
        let (app, nonce) = (self.app.clone(), self.nonce);
        tokio::spawn(async move {
            commit(&app, vault, signer, prev, entries, Mode::Append, nonce).await
        })
        .await
        .map_err(|e| Failure::internal("the append task failed", e))?
    }

    /// Repairs `vault` after a restore or a failover left the relay behind
    /// what a member verified (decision 53): appends `entries`, already
    /// signed by their authors and accepted before, if they follow the
    /// head `prev`. Any current member may push them, whoever wrote them,
    /// and their times are not held to the relay's clock (they were
    /// accepted when written; times still never go down). Everything else
    /// is checked as for [`Appends::append`]: each entry verifies with
    /// vault-core against the relay's state, every record-put's blob must
    /// be stored, the compare-and-swap on the head, the size limits and the
    /// quota (charged to the member who repairs).
    pub async fn repair(
        &self,
        vault: VaultId,
        member: Fingerprint,
        prev: Head,
        entries: Vec<LogEntry>,
    ) -> Result<Head, AppendError> {
        check_count(entries.len())?;
        let (app, nonce) = (self.app.clone(), self.nonce);
        tokio::spawn(async move {
            commit(&app, vault, member, prev, entries, Mode::Repair, nonce).await
        })
        .await
        .map_err(|e| Failure::internal("the repair task failed", e))?
    }
}

/// Whether entries are new (written by the caller) or old ones pushed back
/// by a member (a repair).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Append,
    Repair,
}

/// Checks rights and the compare-and-swap, applies the entries to the
/// relay's state and stores them, keeping the state equal to storage.
async fn commit(
    app: &AppState,
    vault: VaultId,
    me: Fingerprint,
    prev: Head,
    entries: Vec<LogEntry>,
    mode: Mode,
    nonce: Option<NonceClaim>,
) -> Result<Head, AppendError> {
    // A blob named by two record-puts of one request: refused on the
    // request alone, before anything is read.
    if let Some(index) = named_twice(&entries) {
        return Err(AppendError::BlobMissing { index });
    }
    if entries.len() > 1 {
        if let Some(retry_after) = app.rebuild_cooldown(vault) {
            return Err(AppendError::RebuildCooldown { retry_after });
        }
    }
    // Over a shared store, the state is read from the store only when
    // its cached head is not `prev` (decision 59): the compare-and-swap in
    // the commit refuses an append if another relay moved the head since,
    // and a refusal decided on the cached state is checked against the
    // stored head before it is given.
    let (mut guard, unread) = app.write_state_following(vault, prev).await?;
    let decided = store(app, &mut guard, vault, me, prev, entries, mode, nonce).await;
    match decided {
        Err(refused)
            if unread && !matches!(refused, AppendError::HeadMoved(_) | AppendError::Replayed) =>
        {
            Err(match app.meta.head(vault).await {
                Ok(Some(head)) if head != prev => AppendError::HeadMoved(head),
                _ => refused,
            })
        }
        decided => decided,
    }
}

/// Decides an append on `guard`'s state and stores it: rights, the head
/// and the size limits on the relay's state; then storage stages the
/// batch (the request's nonce claimed, the head's compare-and-swap, the
/// quota, the blobs); then vault-core verifies each entry, applied to the
/// state in place (a batch with its signature checks made together,
/// decision 63); then storage commits. The nonce is claimed before any
/// refusal is given (decision 59), and the batch is staged before the
/// state changes, so that what storage refuses never leaves the state
/// ahead of it (decision 61).
#[allow(clippy::too_many_arguments)]
async fn store(
    app: &AppState,
    guard: &mut StateWrite,
    vault: VaultId,
    me: Fingerprint,
    prev: Head,
    entries: Vec<LogEntry>,
    mode: Mode,
    nonce: Option<NonceClaim>,
) -> Result<Head, AppendError> {
    if let Err(refused) = decide(app, guard, me, prev, &entries, mode) {
        claim(app, nonce).await?;
        return Err(refused);
    }
    let size = prev.seq.saturating_add(1);
    // Entries that do not continue the log from `prev` are not staged
    // (storage would find them colliding with stored entries): vault-core
    // refuses them below, naming the first that breaks the chain.
    let chained = follows(prev, &entries);
    let staged = if chained.is_ok() {
        let batch = AppendBatch {
            vault,
            prev,
            entries: entries.iter().map(stored).collect(),
            blob_refs: blob_refs(&entries, mode),
            inbox: granted(&entries),
            purged: Vec::new(),
            account: me,
            quota: app.config.quota,
        };
        // A single new entry is staged with its storage writes (one round
        // trip fewer on a shared store); a batch, or a repair (which any
        // member may send), is only checked until its entries verify, so
        // that entries that will not verify never start a write
        // transaction (decision 61).
        let staging = if mode == Mode::Append && entries.len() == 1 {
            app.meta.stage_append(nonce, batch).await
        } else {
            storage::stage_checked(&*app.meta, nonce, batch).await
        };
        match staging {
            Ok(staged) => Some(staged),
            Err(e) => {
                if matches!(e, storage::AppendError::HeadMoved(_)) {
                    // Another relay over the same store moved the head:
                    // the cached state is behind, and is read again next
                    // time.
                    **guard = None;
                }
                return Err(refused_by_storage(e));
            }
        }
    } else {
        claim(app, nonce).await?;
        None
    };
    let Some(state) = guard.as_mut() else {
        abandon(staged).await;
        return Err(AccessError::VaultNotFound.into());
    };

    // Verify and apply every entry on the relay's own state, in place: no
    // copy of the state, whatever its size. `VaultState::apply` changes
    // nothing when it refuses, so a single entry refused leaves the state
    // as it was; a batch refused (its signatures checked together), an
    // entry refused after another, or storage refusing the batch leaves
    // the state meaningless or ahead, so it is dropped and rebuilt from
    // storage, at a cost bounded by `max_vault_entries`. Only a writer of
    // this vault can cause that.
    let drop_state = |guard: &mut Option<VaultState>| {
        *guard = None;
        if size > REBUILD_FREE {
            app.start_rebuild_cooldown(vault);
        }
    };
    let mut purged = Vec::new();
    if together(&entries) {
        // A batch (an import, a repair) has its signatures checked
        // together on every core (decision 63). If anything is refused,
        // the state is dropped and the exact refusal found one by one.
        if !state.apply_deferred(&entries) {
            abandon(staged).await;
            drop_state(guard);
            return Err(refused_one_by_one(app, guard, vault, prev, &entries).await);
        }
    } else {
        for (index, e) in entries.iter().enumerate() {
            if let Err(source) = state.apply(e) {
                abandon(staged).await;
                if index > 0 {
                    drop_state(guard);
                }
                return Err(AppendError::InvalidEntry { index, source });
            }
            if let EntryBody::RecordPurged { record, .. } = e.body() {
                purged.extend(state.purged_ciphertexts(record));
            }
        }
    }
    if mode == Mode::Append && names_relays(&entries) {
        if let Some(home) = elsewhere(app, state) {
            abandon(staged).await;
            drop_state(guard);
            return Err(AppendError::NotHome { home });
        }
    }
    let (Ok(()), Some(staged)) = (chained, staged) else {
        drop_state(guard);
        return Err(Failure::internal(
            "an append vault-core accepted does not follow the head",
            format!("entry {} of the request", chained.err().unwrap_or(0)),
        )
        .into());
    };
    match staged.commit(purged.clone()).await {
        Ok(head) => {
            app.note_len(vault, head.seq.saturating_add(1));
            // The purged blobs' records are gone with the commit; their
            // bytes go now, unless another vault holds the same blob. A
            // crash here leaves unreferenced bytes that nobody can fetch.
            for hash in purged {
                if !app.meta.blob_in_use(hash).await.unwrap_or(true) {
                    if let Err(e) = app.blobs.delete(hash).await {
                        tracing::warn!(error = %e, "deleting a purged blob's bytes");
                    }
                }
            }
            Ok(head)
        }
        Err(e) => {
            // The entries were applied ahead of storage: rebuild from
            // storage on the next request. A head moved in storage (another
            // relay over the same database stored an append in between) is
            // a race, not a refused batch: no rebuild cooldown.
            if matches!(e, storage::AppendError::HeadMoved(_)) {
                **guard = None;
            } else {
                drop_state(guard);
            }
            Err(refused_by_storage(e))
        }
    }
}

/// Whether `entries` have their signatures checked together
/// ([`VaultState::apply_deferred`]): a batch of several, none of them a
/// purge (whose purged ciphertexts are read from the state right after it
/// applies).
fn together(entries: &[LogEntry]) -> bool {
    entries.len() > 1
        && !entries
            .iter()
            .any(|e| matches!(e.body(), EntryBody::RecordPurged { .. }))
}

/// The refusal of a batch refused with its signatures checked together:
/// the entries applied one by one to a copy of the vault's state as
/// stored, which gives exactly the refusal applying them one by one in
/// place would have given (or, if another relay over the same store moved
/// the head meanwhile, that). The state as stored goes back into `guard`,
/// so the refusal costs one rebuild from storage, as a refusal part-way
/// through a batch always did.
async fn refused_one_by_one(
    app: &AppState,
    guard: &mut StateWrite,
    vault: VaultId,
    prev: Head,
    entries: &[LogEntry],
) -> AppendError {
    if let Err(e) = app.reload(vault, guard).await {
        return e.into();
    }
    let Some(stored) = guard.as_ref() else {
        return AccessError::VaultNotFound.into();
    };
    let head = Head::of(stored);
    if head != prev {
        return AppendError::HeadMoved(head);
    }
    let mut state = stored.clone();
    entries
        .iter()
        .enumerate()
        .find_map(|(index, e)| {
            state
                .apply(e)
                .err()
                .map(|source| AppendError::InvalidEntry { index, source })
        })
        .unwrap_or_else(|| {
            Failure::internal(
                "a batch refused with its signatures checked together applies one by one",
                format!("{} entries after {}", entries.len(), prev.seq),
            )
            .into()
        })
}

/// Abandons a staged append, if there is one.
async fn abandon(staged: Option<Box<dyn StagedAppend + '_>>) {
    if let Some(staged) = staged {
        staged.abandon().await;
    }
}

/// Claims the request's nonce (when given) before a refusal is given
/// without staging the append: a replay is refused as a replay whatever
/// the first request's outcome (decision 59).
async fn claim(app: &AppState, nonce: Option<NonceClaim>) -> Result<(), AppendError> {
    let Some(claim) = nonce else {
        return Ok(());
    };
    let claimed = app
        .meta
        .claim_nonce(claim)
        .await
        .map_err(|e| Failure::storage("claiming the request's nonce", e))?;
    if claimed {
        Ok(())
    } else {
        Err(AppendError::Replayed)
    }
}

/// The checks decided on the relay's state of the vault before storage is
/// asked: the vault exists and `me` may write (or, in a repair, is a
/// member), this relay is the vault's home (unless an entry names the
/// relays), `prev` is the head, and the log stays within
/// `max_vault_entries`.
fn decide(
    app: &AppState,
    guard: &StateWrite,
    me: Fingerprint,
    prev: Head,
    entries: &[LogEntry],
    mode: Mode,
) -> Result<(), AppendError> {
    let Some(state) = guard.as_ref() else {
        return Err(AccessError::VaultNotFound.into());
    };
    match mode {
        // A member of any permission (or one of its devices) carries its
        // own device list into the collections it reads (`docs/format.md`
        // §8.12): vault-core decides whether the author may.
        Mode::Append if lists_member_devices_only(entries) => {
            access::member(state, &me, app.now())?
        }
        Mode::Append => access::writer(state, &me, app.now())?,
        Mode::Repair => access::member(state, &me, app.now())?,
    };
    // A mirror takes new entries only through repair, so that the home
    // alone orders writes; an append may still make this relay the home
    // (the owner moving it here), checked once applied.
    if mode == Mode::Append && !names_relays(entries) {
        if let Some(home) = elsewhere(app, state) {
            return Err(AppendError::NotHome { home });
        }
    }
    let current = Head::of(state);
    if current != prev {
        return Err(AppendError::HeadMoved(current));
    }
    let max = app.config.max_vault_entries;
    let count = u64::try_from(entries.len()).unwrap_or(u64::MAX);
    if current.seq.saturating_add(1).saturating_add(count) > max {
        return Err(AppendError::VaultFull { max });
    }
    Ok(())
}

/// The domain's answer to a refusal by storage.
fn refused_by_storage(e: storage::AppendError) -> AppendError {
    match e {
        storage::AppendError::HeadMoved(h) => AppendError::HeadMoved(h),
        storage::AppendError::NoVault => AccessError::VaultNotFound.into(),
        storage::AppendError::Quota => AppendError::QuotaExceeded,
        storage::AppendError::BlobMissing(index) => AppendError::BlobMissing { index },
        storage::AppendError::Replayed => AppendError::Replayed,
        storage::AppendError::Storage(s) => Failure::storage("appending entries", s).into(),
    }
}

/// The vault's home relay when the owner named one that is not this relay
/// (`docs/format.md` §8.9); `None` when this relay is the home.
fn elsewhere(app: &AppState, state: &VaultState) -> Option<vault_core::request::RelayOrigin> {
    let home = state.relays()?.home();
    (!app.auth.origins().contains(home)).then(|| home.clone())
}

/// The blob links of `entries`' record-puts, in order: storage checks
/// each blob is usable ([`storage::blob_usable`]). In a repair the blob
/// may also be the one the record's author uploaded (a restore kept the
/// blob and lost the entry).
fn blob_refs(entries: &[LogEntry], mode: Mode) -> Vec<BlobRef> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(entry, e)| match e.body() {
            EntryBody::RecordPut { metadata } => Some(BlobRef {
                hash: *metadata.ciphertext_hash(),
                len: metadata.ciphertext_len(),
                collection: metadata.collection(),
                record: metadata.record(),
                entry,
                also_uploaded_by: (mode == Mode::Repair).then(|| e.author()),
            }),
            _ => None,
        })
        .collect()
}

/// The first record-put of `entries` whose blob another record-put of
/// them names too: one blob holds one record version.
fn named_twice(entries: &[LogEntry]) -> Option<usize> {
    let puts: Vec<(usize, &[u8; 32])> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e.body() {
            EntryBody::RecordPut { metadata } => Some((i, metadata.ciphertext_hash())),
            _ => None,
        })
        .collect();
    let mut named = std::collections::HashMap::<&[u8; 32], usize>::new();
    for (_, hash) in &puts {
        *named.entry(hash).or_default() += 1;
    }
    puts.iter()
        .find(|(_, hash)| named.get(hash).is_some_and(|n| *n > 1))
        .map(|(i, _)| *i)
}

/// Whether `entries` only carry members' device lists (kind 14).
fn lists_member_devices_only(entries: &[LogEntry]) -> bool {
    !entries.is_empty()
        && entries
            .iter()
            .all(|e| matches!(e.body(), EntryBody::MemberDevicesListed { .. }))
}

/// Whether `entries` name the vault's relays (an append may then move the
/// vault's home to this relay).
fn names_relays(entries: &[LogEntry]) -> bool {
    entries
        .iter()
        .any(|e| matches!(e.body(), EntryBody::RelaysNamed(_)))
}

/// The principals `entries` grant something, and the devices they list
/// (the owner's, or a member's in a collection: the inbox index).
fn granted(entries: &[LogEntry]) -> Vec<Fingerprint> {
    let mut members = Vec::new();
    for e in entries {
        match e.body() {
            EntryBody::GrantAdded { member, .. } => members.push(member.fingerprint()),
            EntryBody::Rotation(r) => members.extend(r.grants.iter().map(|g| g.member())),
            EntryBody::AgentNamed(named) => members.push(named.agent.fingerprint()),
            // The owner's devices see the owner's vault in their inbox, a
            // member's devices the vaults sharing with the member.
            EntryBody::DevicesListed { lists, .. }
            | EntryBody::MemberDevicesListed { lists, .. } => members.extend(
                lists
                    .last()
                    .into_iter()
                    .flat_map(|l| l.devices().iter().map(|d| d.document().fingerprint())),
            ),
            _ => {}
        }
    }
    members
}

/// The invariant [`crate::storage::MetaStore::append`] relies on and does
/// not check itself: the entries of a batch continue the log from `prev`,
/// each with the next sequence number and naming as previous the hash of
/// the entry before it (`prev.hash` for the first). vault-core enforces it
/// entry by entry when it applies them; this states it for the whole batch
/// and checks it again before anything is stored. `Err` names the first
/// entry that breaks it.
pub fn follows(prev: Head, entries: &[LogEntry]) -> Result<(), usize> {
    let mut head = prev;
    for (index, e) in entries.iter().enumerate() {
        if Some(e.seq()) != head.seq.checked_add(1) || *e.prev() != head.hash {
            return Err(index);
        }
        head = Head {
            seq: e.seq(),
            hash: *e.hash(),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vault_core::Permission;

    use super::*;
    use crate::domain::blobs::BlobError;
    use crate::domain::testing::{ident, sha, World};
    use crate::storage::MetaStore;

    /// `n` collection-created entries by the owner, chained on the
    /// client's head (none applied to `w.state`).
    fn collections(w: &World, n: usize) -> Vec<LogEntry> {
        let mut scratch = w.state.clone();
        (0..n)
            .map(|i| {
                let (_, e) = scratch
                    .create_collection(&w.patient, &format!("c{i}"), w.now)
                    .unwrap();
                scratch.apply(&e).unwrap();
                e
            })
            .collect()
    }

    #[tokio::test]
    async fn a_mirror_refuses_appends_until_the_owner_moves_the_home_to_it() {
        use vault_core::request::RelayOrigin;
        use vault_core::Relays;
        let w = World::new().await;
        let appends = Appends::new(w.app.clone());
        let here = w.app.auth.origins().first().unwrap().clone();
        let elsewhere = RelayOrigin::parse("https://home.example").unwrap();
        let head = w.head();
        let mut scratch = w.state.clone();
        // Naming another relay the home, appended here: refused, nothing
        // stored, the state as it was.
        let away = scratch
            .name_relays(
                &w.patient,
                Relays::new(elsewhere.clone(), vec![here.clone()]).unwrap(),
                w.now,
            )
            .unwrap();
        let err = appends
            .append(w.vault(), w.patient.fingerprint(), head, vec![away.clone()])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AppendError::NotHome { home } if *home == elsewhere),
            "{err:?}"
        );
        assert_eq!(w.stored_head().await, head);
        // Pushed by a member's device (a repair), it is taken: this relay
        // is now a mirror and refuses appends, naming the home.
        let after = appends
            .repair(w.vault(), w.patient.fingerprint(), head, vec![away.clone()])
            .await
            .unwrap();
        scratch.apply(&away).unwrap();
        let (_, meds) = scratch
            .create_collection(&w.patient, "meds", w.now)
            .unwrap();
        let err = appends
            .append(w.vault(), w.patient.fingerprint(), after, vec![meds])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AppendError::NotHome { home } if *home == elsewhere),
            "{err:?}"
        );
        // The owner moves the home here: taken, and appends go on.
        let back = scratch
            .name_relays(&w.patient, Relays::new(here, Vec::new()).unwrap(), w.now)
            .unwrap();
        let moved = appends
            .append(
                w.vault(),
                w.patient.fingerprint(),
                after,
                vec![back.clone()],
            )
            .await
            .unwrap();
        scratch.apply(&back).unwrap();
        let (_, meds) = scratch
            .create_collection(&w.patient, "meds", w.now)
            .unwrap();
        appends
            .append(w.vault(), w.patient.fingerprint(), moved, vec![meds])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_member_repairs_with_entries_of_other_authors_checked_as_any_append() {
        let mut w = World::new().await;
        let alice = ident(2, "Dr Alice", w.now);
        let bob = ident(3, "Dr Bob", w.now);
        w.share(&alice, Permission::Read).await;
        let head = w.head();
        // Entries the owner wrote days ago (outside the clock window).
        let old = w.now - 3 * 86_400;
        let scratch = w.state.clone();
        let (_, e) = scratch.create_collection(&w.patient, "meds", old).unwrap();
        let lost = vec![e];
        let repairs = Appends::new(w.app.clone());
        // Not a member: refused.
        let err = repairs
            .repair(w.vault(), bob.fingerprint(), head, lost.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::Access(_)), "{err:?}");
        // An append by the reader would be refused (not the author), but a
        // repair is checked as the author's entry.
        let err = repairs
            .append(w.vault(), alice.fingerprint(), head, lost.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::NotAuthor { .. }), "{err:?}");
        // A forged entry does not verify.
        let mut forged = lost[0].to_bytes().to_vec();
        let n = forged.len();
        forged[n - 1] ^= 1;
        let err = repairs
            .repair(
                w.vault(),
                alice.fingerprint(),
                head,
                vec![LogEntry::from_bytes(&forged).unwrap()],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::InvalidEntry { .. }), "{err:?}");
        assert_eq!(w.stored_head().await, head);
        // The genuine entry goes in; pushed again, the head has moved.
        let after = repairs
            .repair(w.vault(), alice.fingerprint(), head, lost.clone())
            .await
            .unwrap();
        assert_eq!(after.seq, head.seq + 1);
        let err = repairs
            .repair(w.vault(), alice.fingerprint(), head, lost)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppendError::HeadMoved(h) if h == after),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_stale_prev_is_refused_with_the_relays_head_and_nothing_is_stored() {
        let mut w = World::new().await;
        let stale = w.head();
        let first = collections(&w, 1);
        w.append(&w.patient.clone(), first).await.unwrap();
        let current = w.stored_head().await;
        assert_ne!(current, stale);
        let next = collections(&w, 1);
        let loads = w.app.vault_loads();
        let err = Appends::new(w.app.clone())
            .append(w.vault(), w.patient.fingerprint(), stale, next.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppendError::HeadMoved(h) if h == current),
            "{err:?}"
        );
        assert_eq!(w.stored_head().await, current);
        // On the relay's head the same entry goes in, and the relay's state
        // was never rebuilt: the refusal came before it changed (storage
        // would refuse too, but only after the state ran ahead).
        w.append(&w.patient.clone(), next).await.unwrap();
        assert_eq!(w.app.vault_loads(), loads);
    }

    #[tokio::test]
    async fn the_quota_refuses_an_append_before_anything_changes() {
        let mut w = World::with(|c| c.quota = 8 * 1024).await;
        let me = w.patient.fingerprint();
        let used = w.meta.usage(me).await.unwrap();
        let entries = collections(&w, 40);
        let bytes: u64 = entries.iter().map(|e| e.to_bytes().len() as u64).sum();
        assert!(
            used + bytes > 8 * 1024,
            "the test needs a batch over the quota"
        );
        let loads = w.app.vault_loads();
        let err = w.append(&w.patient.clone(), entries).await.unwrap_err();
        assert!(matches!(err, AppendError::QuotaExceeded), "{err:?}");
        assert_eq!(w.meta.usage(me).await.unwrap(), used);
        assert_eq!(w.stored_head().await, w.head());
        // A batch that fits is charged to the signer.
        let one = collections(&w, 1);
        let len = one[0].to_bytes().len() as u64;
        w.append(&w.patient.clone(), one).await.unwrap();
        assert_eq!(w.meta.usage(me).await.unwrap(), used + len);
        assert_eq!(
            w.app.vault_loads(),
            loads,
            "refused before the state changed"
        );
    }

    #[tokio::test]
    async fn the_vault_size_cap_counts_genesis_and_refuses_past_it() {
        // Genesis and "labs" make two entries.
        let mut w = World::with(|c| c.max_vault_entries = 3).await;
        let two = collections(&w, 2);
        let err = w.append(&w.patient.clone(), two).await.unwrap_err();
        assert!(matches!(err, AppendError::VaultFull { max: 3 }), "{err:?}");
        assert_eq!(w.stored_head().await.seq, 1);
        let one = collections(&w, 1);
        assert_eq!(w.append(&w.patient.clone(), one).await.unwrap().seq, 2);
        let more = collections(&w, 1);
        let err = w.append(&w.patient.clone(), more).await.unwrap_err();
        assert!(matches!(err, AppendError::VaultFull { max: 3 }), "{err:?}");
    }

    #[tokio::test]
    async fn a_record_put_needs_its_blob_uploaded_by_its_author() {
        let mut w = World::new().await;
        let patient = w.patient.clone();
        let alice = ident(2, "Dr Alice", w.now);
        w.share(&alice, Permission::ReadWrite).await;
        let head = w.stored_head().await;
        let loads = w.app.vault_loads();

        // Not uploaded at all.
        let (ct, e) = w.seal(&patient, None, b"result");
        let err = w.append(&patient, vec![e.clone()]).await.unwrap_err();
        assert!(
            matches!(err, AppendError::BlobMissing { index: 0 }),
            "{err:?}"
        );

        // Uploaded by someone else.
        w.upload(&alice, &ct).await.unwrap();
        let err = w.append(&patient, vec![e]).await.unwrap_err();
        assert!(
            matches!(err, AppendError::BlobMissing { index: 0 }),
            "{err:?}"
        );
        assert_eq!(w.stored_head().await, head);

        // The index names the entry of the request.
        let mut batch = collections(&w, 1);
        let mut scratch = w.state.clone();
        scratch.apply(&batch[0]).unwrap();
        let mut kr = vault_core::Keyring::new(&patient, w.now);
        let mut ct = Vec::new();
        let info = vault_core::RecordInfo {
            content_type: "text/plain".into(),
            title: "second".into(),
            created_at: w.now,
            effective_at: None,
        };
        let (_, put) = scratch
            .put_record(
                &mut kr,
                &w.labs,
                None,
                &info,
                vault_core::RecordBody::new(&b"x"[..], 1),
                &mut ct,
            )
            .unwrap();
        batch.push(put);
        let err = w.append(&patient, batch.clone()).await.unwrap_err();
        assert!(
            matches!(err, AppendError::BlobMissing { index: 1 }),
            "{err:?}"
        );
        w.upload(&patient, &ct).await.unwrap();
        w.append(&patient, batch).await.unwrap();
        assert_eq!(
            w.app.vault_loads(),
            loads,
            "refused before the state changed"
        );
        // Once used, the blob is recorded as such.
        let (_, blobs) = w
            .meta
            .append_precheck(
                w.vault(),
                patient.fingerprint(),
                vec![crate::domain::testing::address(&ct)],
            )
            .await
            .unwrap();
        assert!(matches!(blobs[0], Some((_, true))));
    }

    #[tokio::test]
    async fn entries_must_be_the_signers_and_dated_near_the_relay_clock() {
        let mut w = World::new().await;
        let alice = ident(2, "Dr Alice", w.now);
        w.share(&alice, Permission::ReadWrite).await;
        let entries = collections(&w, 1);
        let err = w.append(&alice, entries.clone()).await.unwrap_err();
        assert!(
            matches!(err, AppendError::NotAuthor { index: 0 }),
            "{err:?}"
        );

        let skew = w.app.config.clock_skew;
        w.clock.set(w.now + skew + 1);
        let err = w
            .append(&w.patient.clone(), entries.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppendError::EntryTimeOutOfRange { index: 0, server_time, .. } if server_time == w.now + skew + 1),
            "{err:?}"
        );
        w.clock.set(w.now + skew);
        w.append(&w.patient.clone(), entries).await.unwrap();
    }

    #[tokio::test]
    async fn only_writers_of_an_existing_vault_append() {
        let mut w = World::new().await;
        let alice = ident(2, "Dr Alice", w.now);
        let bob = ident(3, "Dr Bob", w.now);
        w.share(&alice, Permission::Read).await;
        // The entries are the owner's: only the signer's access is checked
        // here (authorship is checked before, in `Appends::append`).
        let one = collections(&w, 1);
        let err = commit(
            &w.app,
            w.vault(),
            alice.fingerprint(),
            w.head(),
            one.clone(),
            Mode::Append,
            None,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, AppendError::Access(AccessError::ReadOnly)),
            "{err:?}"
        );
        let err = commit(
            &w.app,
            w.vault(),
            bob.fingerprint(),
            w.head(),
            one.clone(),
            Mode::Append,
            None,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, AppendError::Access(AccessError::NotMember)),
            "{err:?}"
        );
        let err = commit(
            &w.app,
            VaultId::from_bytes([9; 16]),
            w.patient.fingerprint(),
            w.head(),
            one.clone(),
            Mode::Append,
            None,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, AppendError::Access(AccessError::VaultNotFound)),
            "{err:?}"
        );
        w.append(&w.patient.clone(), one).await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_refused_part_way_leaves_the_relay_state_equal_to_storage() {
        let mut w = World::new().await;
        let head = w.stored_head().await;
        // Two entries both built on the head: the second cannot follow the
        // first, and vault-core refuses it after applying the first.
        let a = collections(&w, 1).remove(0);
        let (_, b) = w
            .state
            .create_collection(&w.patient, "other", w.now)
            .unwrap();
        let loads = w.app.vault_loads();
        let err = w
            .append(&w.patient.clone(), vec![a.clone(), b])
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppendError::InvalidEntry { index: 1, .. }),
            "{err:?}"
        );
        assert_eq!(w.stored_head().await, head);
        // Had the relay kept the first entry applied, its state would be a
        // head ahead of storage and this would be refused as head_moved.
        w.append(&w.patient.clone(), vec![a]).await.unwrap();
        assert_eq!(w.app.vault_loads(), loads + 1, "rebuilt from storage, once");
    }

    #[tokio::test]
    async fn a_batch_checked_together_is_refused_as_one_by_one_would_and_stores_nothing() {
        let mut w = World::new().await;
        let head = w.stored_head().await;
        let honest = collections(&w, 40);
        // Entry 20's signature forged (its last byte flipped): checked
        // together, the replay runs on past it; the refusal is still entry
        // 20's own, as one by one.
        let mut forged = honest.clone();
        let mut bytes = forged[20].to_bytes().to_vec();
        let end = bytes.len() - 1;
        bytes[end] ^= 1;
        forged[20] = LogEntry::from_bytes(&bytes).unwrap();
        let loads = w.app.vault_loads();
        let err = w.append(&w.patient.clone(), forged).await.unwrap_err();
        assert!(
            matches!(
                &err,
                AppendError::InvalidEntry {
                    index: 20,
                    source: vault_core::Error::BadSignature { .. }
                }
            ),
            "{err:?}"
        );
        assert_eq!(w.stored_head().await, head);
        // The honest batch goes through whole, on the state rebuilt from
        // storage once (the refused one was dropped).
        let stored = w.append(&w.patient.clone(), honest).await.unwrap();
        assert_eq!(stored.seq, head.seq + 40);
        assert_eq!(w.stored_head().await, stored);
        assert_eq!(w.app.vault_loads(), loads + 1, "rebuilt from storage, once");
    }

    #[tokio::test]
    async fn a_purge_deletes_the_purged_blobs_after_the_commit_unless_another_vault_holds_them() {
        let mut w = World::new().await;
        let patient = w.patient.clone();
        let v1 = w
            .put_record(&patient, None, b"positive (entered in error)")
            .await;
        let record = w.state.records(None)[0].id;
        let v2 = w.put_record(&patient, Some(record), b"negative").await;
        let kept = w.put_record(&patient, None, b"kept elsewhere").await;
        let kept_record = w
            .state
            .records(None)
            .iter()
            .find(|r| r.id != record)
            .unwrap()
            .id;
        let kept_v2 = w.put_record(&patient, Some(kept_record), b"kept, v2").await;

        // A second vault holds the same bytes as `kept`.
        let (_, genesis) = VaultState::create(&patient, w.now).unwrap();
        let other = genesis.vault();
        crate::domain::vaults::Vaults::new(w.app.clone())
            .create(patient.fingerprint(), &genesis, None)
            .await
            .unwrap();
        let chunk = crate::domain::blobs::ChunkUpload {
            offset: 0,
            total: kept.len() as u64,
            declared_len: None,
            digest: sha(&kept),
        };
        crate::domain::blobs::Blobs::new(w.app.clone())
            .put_chunk(
                other,
                crate::domain::testing::address(&kept),
                patient.fingerprint(),
                chunk,
                crate::domain::testing::body(&kept),
            )
            .await
            .unwrap();

        let used = w.meta.usage(patient.fingerprint()).await.unwrap();
        let p1 = w.state.purge_record(&patient, &record, w.now).unwrap();
        let p1_len = p1.to_bytes().len() as u64;
        w.append(&patient, vec![p1]).await.unwrap();
        let p2 = w.state.purge_record(&patient, &kept_record, w.now).unwrap();
        let p2_len = p2.to_bytes().len() as u64;
        w.append(&patient, vec![p2]).await.unwrap();

        use crate::storage::BlobStore;
        // The purged version is gone for everyone, the owner included, and
        // so are its bytes; the current version stays.
        let err = w.download(&patient, &v1).await.unwrap_err();
        assert!(matches!(err, BlobError::NotFound), "{err:?}");
        let address = crate::domain::testing::address;
        assert!(
            w.blobs.read(address(&v1), 0, 1).await.is_err(),
            "bytes deleted"
        );
        assert_eq!(w.download(&patient, &v2).await.unwrap().len(), v2.len());
        // The blob another vault holds is gone from this vault only.
        let err = w.download(&patient, &kept).await.unwrap_err();
        assert!(matches!(err, BlobError::NotFound), "{err:?}");
        assert!(
            w.blobs.read(address(&kept), 0, 1).await.is_ok(),
            "bytes kept"
        );
        assert_eq!(
            w.download(&patient, &kept_v2).await.unwrap().len(),
            kept_v2.len()
        );
        // Their charges were given back.
        assert_eq!(
            w.meta.usage(patient.fingerprint()).await.unwrap(),
            used + p1_len + p2_len - v1.len() as u64 - kept.len() as u64
        );
    }

    #[tokio::test]
    async fn a_batch_must_follow_the_head() {
        let w = World::new().await;
        let prev = w.head();
        let entries = collections(&w, 2);
        assert_eq!(follows(prev, &entries), Ok(()));
        assert_eq!(follows(prev, &entries[1..]), Err(0));
        assert_eq!(
            follows(prev, &[entries[0].clone(), entries[0].clone()]),
            Err(1)
        );
        let after_first = Head {
            seq: entries[0].seq(),
            hash: *entries[0].hash(),
        };
        assert_eq!(follows(after_first, &entries[1..]), Ok(()));
        assert_eq!(follows(after_first, &entries[..1]), Err(0));
        assert_eq!(follows(prev, &[]), Ok(()));
    }

    #[tokio::test]
    async fn a_blob_named_by_two_record_puts_is_refused_before_anything_is_read() {
        let mut w = World::new().await;
        let patient = w.patient.clone();
        let head = w.stored_head().await;
        let (ct, put) = w.seal(&patient, None, b"result");
        w.upload(&patient, &ct).await.unwrap();
        let (_, other) = w.seal(&patient, None, b"another result");
        let coll = collections(&w, 1).remove(0);
        assert_eq!(
            named_twice(&[coll.clone(), put.clone(), other.clone()]),
            None
        );
        assert_eq!(
            named_twice(&[coll, other.clone(), put.clone(), put.clone()]),
            Some(2)
        );
        // The same put twice: refused with the first's index, even though
        // its blob is uploaded and the batch would not chain anyway.
        let err = w
            .append(&patient, vec![put.clone(), put])
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppendError::BlobMissing { index: 0 }),
            "{err:?}"
        );
        assert_eq!(w.stored_head().await, head);
    }

    #[test]
    fn the_entry_count_is_checked_first() {
        assert!(matches!(check_count(0), Err(AppendError::Empty)));
        assert!(check_count(1).is_ok());
        assert!(check_count(MAX_APPEND).is_ok());
        assert!(matches!(
            check_count(MAX_APPEND + 1),
            Err(AppendError::TooMany { max: MAX_APPEND })
        ));
    }
}
