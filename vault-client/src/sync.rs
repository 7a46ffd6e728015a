//! Synchronising a local [`Store`] with a relay.
//!
//! Everything the relay delivers goes through vault-core before it is
//! persisted or used: log entries through [`store::accept_entries`] (which
//! verifies each entry against the vault's rules and detects rollback and
//! forks against the persisted head), blobs through [`Store::put_blob`]
//! (which checks the hash). Open record ciphertext only from the store
//! ([`Store::open_blob`]), never from bytes straight off the network.
//!
//! The functions take any store, including `&mut dyn Store` (pass
//! `&mut *boxed`). Their futures are `Send` when the store, the readers and
//! writers and the closures are.

use std::io::{Read, Seek, SeekFrom, Write};

use vault_core::address::AddressKind;
use vault_core::store::{self, Store};
use vault_core::{
    Checkpoint, EntryBody, Fingerprint, LogEntry, PublicIdentity, RecordMetadata, VaultId,
    VaultState, VerifiedRecord,
};

use crate::blob::UploadSource;
use crate::client::{RelayClient, MAX_LOG_PAGE};
use crate::error::{ClientError, Result};
use crate::wire::Head;

/// How many times [`push_with_retry`] and [`push_record`] rebuild on a
/// moved head before giving up with [`ClientError::HeadMoved`].
pub const MAX_PUSH_ATTEMPTS: u32 = 16;

/// Creates a new vault owned by `owner` (a fresh random vault id, genesis
/// entry signed at the relay-corrected time) on the relay and then on this
/// device. Publish the owner's identity first, so clinicians can look the
/// patient up by fingerprint.
pub async fn new_vault<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    owner: &vault_core::SecretIdentity,
) -> Result<VaultState> {
    let (_, genesis) = VaultState::create(owner, client.now())?;
    create_vault(store, client, &genesis).await
}

/// Creates a vault: sends its genesis entry to the relay, then records it in
/// the local store (only once the relay accepted it). Returns the verified
/// state, caught up with the relay (if the vault already existed with this
/// genesis, it may have more entries).
///
/// The genesis comes from [`VaultState::create`].
pub async fn create_vault<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    genesis: &LogEntry,
) -> Result<VaultState> {
    let state = VaultState::from_genesis(genesis)?;
    let vault = state.vault();
    if store.head(&vault)?.is_some() {
        // Already known locally: it must be this very genesis.
        let known = load(store, &vault)?;
        if known.checkpoint_at(0).map(|c| c.head) != Some(*genesis.hash()) {
            return Err(vault_core::Error::Fork { seq: 0 }.into());
        }
        client.create_vault(genesis).await?;
        return pull(store, client, &vault).await;
    }
    client.create_vault(genesis).await?;
    store.append_entries(&vault, std::slice::from_ref(genesis))?;
    let mut state = state;
    state.set_viewer(client.identity().fingerprint(), client.now());
    catch_up(store, client, &mut state).await?;
    Ok(state)
}

/// Starts following a vault this device has not stored yet (one shared with
/// the caller, or the caller's own on a new device): fetches and verifies
/// its log from genesis. `owner` is the owner's fingerprint as the caller
/// verified it (in person, or pinned earlier), never the inbox's claim: a
/// genesis naming anyone else is refused with
/// [`vault_core::Error::PinnedKeyChanged`] before anything is stored.
///
/// If the vault is already stored, checks its owner and pulls.
pub async fn join_vault<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    owner: &Fingerprint,
) -> Result<VaultState> {
    if store.head(vault)?.is_some() {
        load(store, vault)?.expect_owner(owner)?;
        return pull(store, client, vault).await;
    }
    let (remote, entries) = client.fetch_log(vault, 0, MAX_LOG_PAGE).await?;
    let mut it = entries.iter();
    let genesis = it.next().ok_or_else(|| vault_core::Error::Missing {
        what: format!("the genesis entry of vault {vault} (the relay sent an empty log)"),
    })?;
    if genesis.vault() != *vault {
        return Err(vault_core::Error::ContextMismatch {
            what: "genesis entry",
            field: "vault",
        }
        .into());
    }
    let mut state = VaultState::from_genesis(genesis)?;
    state.set_viewer(client.identity().fingerprint(), client.now());
    state.expect_owner(owner)?;
    state.check_remote_head(remote.seq)?;
    store.append_entries(vault, std::slice::from_ref(genesis))?;
    let rest: Vec<LogEntry> = it.cloned().collect();
    if !rest.is_empty() {
        accept(store, &mut state, &rest)?;
    }
    // The first page reached the head the relay claimed (as for any log
    // of up to a page): no need to ask for the empty page after it.
    if !at_claimed_head(&state, &remote)? {
        catch_up(store, client, &mut state).await?;
    }
    Ok(state)
}

/// Whether `state`'s verified head is the head `remote` the relay claims.
/// The same entry number with another hash is [`vault_core::Error::Fork`];
/// a claim further on is `false` (what is missing is still to fetch).
fn at_claimed_head(state: &VaultState, remote: &Head) -> Result<bool> {
    let ours = state.head();
    if ours.seq == remote.seq && ours.head != remote.hash {
        return Err(vault_core::Error::Fork { seq: ours.seq }.into());
    }
    Ok(ours.seq == remote.seq)
}

/// Brings a stored vault up to date: loads and re-verifies it from the
/// store, fetches the log after the persisted head in pages, verifies and
/// persists every entry ([`store::accept_entries`]), and checks the relay's
/// claimed head against the verified log (a shorter log is
/// [`vault_core::Error::Rollback`], a different one
/// [`vault_core::Error::Fork`], entries it claims but withholds
/// [`vault_core::Error::Missing`]).
///
/// A vault not yet in the store is an error: use [`join_vault`] (with the
/// owner's verified fingerprint) or [`create_vault`] first.
pub async fn pull<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
) -> Result<VaultState> {
    if store.head(vault)?.is_none() {
        return Err(vault_core::Error::Missing {
            what: format!(
                "vault {vault} in the local store (start following it with join_vault and the owner's verified fingerprint)"
            ),
        }
        .into());
    }
    let mut state = load(store, vault)?;
    state.set_viewer(client.identity().fingerprint(), client.now());
    catch_up(store, client, &mut state).await?;
    Ok(state)
}

/// Fetches and accepts pages until the verified state reaches the relay's
/// head.
async fn catch_up<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    state: &mut VaultState,
) -> Result<()> {
    let vault = state.vault();
    let mut limit = MAX_LOG_PAGE;
    let mut reverified = false;
    loop {
        let since = state.head().seq.saturating_add(1);
        let (remote, entries) = match client.fetch_log(&vault, since, limit).await {
            // A page of large entries can exceed the answer cap: ask for
            // fewer (one entry always fits).
            Err(ClientError::TooLarge { .. }) if limit > 1 => {
                limit = (limit / 2).max(1);
                continue;
            }
            other => other?,
        };
        state.check_remote_head(remote.seq)?;
        let full = entries.len() >= limit as usize;
        if !entries.is_empty() {
            match accept(store, state, &entries) {
                Err(ClientError::Core(vault_core::Error::ViewChanged { .. })) if !reverified => {
                    reverified = true;
                    reverify_from_start(store, client, state).await?;
                    continue;
                }
                other => other?,
            }
        }
        let ours = state.head();
        if ours.seq < remote.seq {
            if entries.is_empty() {
                return Err(vault_core::Error::Missing {
                    what: format!(
                        "vault log entries {since} to {} (the relay claims them but does not send them)",
                        remote.seq
                    ),
                }
                .into());
            }
            continue;
        }
        at_claimed_head(state, &remote)?;
        if !full {
            return Ok(());
        }
    }
}

/// The relay now shows whole some entries it showed this device redacted
/// (a collection or record was shared with the user since,
/// `docs/format.md` §8.8): fetches the log up to the verified head again,
/// verifies it from genesis as this user sees it, checks that it is the
/// history verified before (same head at the same point, so no rollback or
/// fork slips in), and stores the whole entries in place of the redacted
/// ones.
async fn reverify_from_start<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    state: &mut VaultState,
) -> Result<()> {
    let vault = state.vault();
    let verified = state.head();
    let mut entries: Vec<LogEntry> = Vec::new();
    let mut limit = MAX_LOG_PAGE;
    while entries.len() as u64 <= verified.seq {
        let since = entries.len() as u64;
        let want = u32::try_from(verified.seq - since + 1).map_or(limit, |n| limit.min(n));
        let (_, page) = match client.fetch_log(&vault, since, want).await {
            Err(ClientError::TooLarge { .. }) if limit > 1 => {
                limit = (limit / 2).max(1);
                continue;
            }
            other => other?,
        };
        if page.is_empty() {
            return Err(vault_core::Error::Rollback {
                verified: verified.seq,
                offered: since.saturating_sub(1),
            }
            .into());
        }
        entries.extend(page.into_iter().filter(|e| e.seq() <= verified.seq));
    }
    let fresh = VaultState::verify_log_as(
        &client.identity().fingerprint(),
        client.now(),
        &entries,
        None,
    )?;
    fresh.check_persisted(&verified)?;
    store.reveal_entries(&vault, &entries)?;
    *state = fresh;
    Ok(())
}

/// What [`repair`] pushed back to a relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// The relay's head before the repair.
    pub before: Head,
    /// The relay's head after it.
    pub after: Head,
    /// Entries pushed back.
    pub entries: u64,
    /// Record ciphertexts uploaded again from this device.
    pub blobs: u64,
    /// Why the repair stopped before this device's head, if it did (an
    /// entry this device holds only redacted, or a record whose ciphertext
    /// it does not hold): another member's device, the owner's first, can
    /// continue.
    pub stopped: Option<String>,
}

/// Repairs a relay that lost entries this device verified (restored from
/// an older backup, or failed over to a replica that lagged; decision 53),
/// with the user's consent: the relay's log must be a prefix of this
/// device's verified log ([`vault_core::Error::Fork`] otherwise, and
/// nothing is sent: a relay whose history differs is not "repaired").
/// Pushes back the missing entries in order, after uploading again the
/// ciphertext of each record they add, from this device's store; the relay
/// verifies them as any append. Stops at an entry this device holds only
/// redacted (`docs/format.md` §8.8) or a record whose ciphertext it does
/// not hold, and says so in [`Repaired::stopped`]. A relay at or ahead of
/// this device needs no repair ([`Repaired::entries`] 0): pull it.
pub async fn repair<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
) -> Result<Repaired> {
    let state = load(store, vault)?;
    let ours = state.head();
    let remote = client.head(vault).await?;
    let mut report = Repaired {
        before: remote,
        after: remote,
        entries: 0,
        blobs: 0,
        stopped: None,
    };
    if remote.seq >= ours.seq {
        return Ok(report);
    }
    if state.checkpoint_at(remote.seq).map(|c| c.head) != Some(remote.hash) {
        return Err(vault_core::Error::Fork { seq: remote.seq }.into());
    }
    let mut push = Vec::new();
    for e in store.entries(vault, remote.seq.saturating_add(1))? {
        if e.is_redacted() {
            report.stopped = Some(format!(
                "entry {} reached this device redacted (it concerns what you do not hold): the owner's device must repair from there",
                e.seq()
            ));
            break;
        }
        if let EntryBody::RecordPut { metadata } = e.body() {
            let hash = *metadata.ciphertext_hash();
            let Some(mut blob) = store.open_blob(&hash)? else {
                report.stopped = Some(format!(
                    "entry {} adds a record whose ciphertext this device does not hold: a device that holds it must repair from there",
                    e.seq()
                ));
                break;
            };
            let mut bytes = Vec::new();
            blob.read_to_end(&mut bytes)?;
            client
                .put_blob(
                    vault,
                    &hash,
                    checked_len(metadata)?,
                    &mut std::io::Cursor::new(bytes),
                )
                .await?;
            report.blobs += 1;
        }
        push.push(e);
    }
    for chunk in push.chunks(crate::client::MAX_APPEND_ENTRIES) {
        report.after = client.repair(vault, report.after, chunk).await?;
        report.entries += chunk.len() as u64;
    }
    Ok(report)
}

/// Appends entries built on the current state, with compare-and-swap:
/// pulls, calls `build` on the verified state, verifies the entries
/// locally, appends them; if the log moved on meanwhile, pulls again and
/// calls `build` again on the new state (at most [`MAX_PUSH_ATTEMPTS`]
/// times). Once the relay has accepted them, the entries are persisted in
/// the store. Returns the new state. `build` returning no entries ends the
/// push with the pulled state.
///
/// Give new entries the relay's time ([`RelayClient::now`]): the relay
/// refuses entries outside its clock's skew window (once, the push then
/// rebuilds them with the corrected clock). A record-put entry's
/// blob must be uploaded first (the relay refuses it with `blob_missing`
/// otherwise): use [`push_record`] for records.
///
/// If an earlier attempt's answer was lost but the relay stored the entries,
/// the next pull finds them and the push ends there, without duplicates.
pub async fn push_with_retry<S, F>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    mut build: F,
) -> Result<VaultState>
where
    S: Store + ?Sized,
    F: FnMut(&VaultState) -> Result<Vec<LogEntry>>,
{
    push_applied(store, client, vault, |state| {
        let entries = build(state)?;
        let mut next = state.clone();
        for e in &entries {
            next.apply(e)?;
        }
        Ok((entries, next))
    })
    .await
}

/// [`push_with_retry`] for a `build` that already applied its entries:
/// it returns them with the state they lead to (each entry verified by
/// [`VaultState::apply`] on a clone of the state it was given), so a
/// large batch is not verified twice. The returned state must end at the
/// last entry, or the push is refused before anything is sent.
pub async fn push_applied<S, F>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    mut build: F,
) -> Result<VaultState>
where
    S: Store + ?Sized,
    F: FnMut(&VaultState) -> Result<(Vec<LogEntry>, VaultState)>,
{
    let mut pending: Vec<LogEntry> = Vec::new();
    let mut moved = None;
    let mut retimed = false;
    for attempt in 0..MAX_PUSH_ATTEMPTS {
        if moved.is_some() {
            contention_pause(attempt).await;
        }
        let state = pull(store, client, vault).await?;
        if landed(&state, &pending) {
            return Ok(state);
        }
        let (entries, next) = build(&state)?;
        if entries.is_empty() {
            return Ok(state);
        }
        let ends_there = entries.last().is_some_and(|last| {
            let head = next.head();
            head.seq == last.seq() && head.head == *last.hash() && next.vault() == *vault
        });
        if !ends_there {
            return Err(vault_core::Error::InvalidInput(
                "push_applied: the built state does not end at the built entries",
            )
            .into());
        }
        match append_applied(store, client, &state, next, &entries).await {
            Ok(Pushed::Done(state)) => return Ok(*state),
            Ok(Pushed::Moved(head)) => {
                moved = Some(head);
                pending = entries;
            }
            Err(e) if is_time_refusal(&e) && !retimed => retimed = true,
            Err(e) => return Err(e),
        }
    }
    Err(gave_up(moved))
}

/// Adds a record (or a record version) with compare-and-swap, uploading its
/// ciphertext first. Each attempt pulls, calls `seal` with the verified
/// state and `spool` (rewound to its start) to seal the record into it, for
/// example with [`VaultState::put_record`] (sealing needs the current
/// head, and a version after a concurrent one gets a new data key, so a
/// moved head means sealing again); stores the ciphertext in the local blob
/// cache ([`upload_blob`]), uploads it, then appends the entry. Returns the
/// new state and the record's metadata.
///
/// `spool` holds one sealed ciphertext at a time: a temporary file on
/// native targets, or a `std::io::Cursor<Vec<u8>>`. A payload sealed
/// beforehand goes through [`push_sealed`] instead.
pub async fn push_record<S, W, F>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    spool: &mut W,
    seal: F,
) -> Result<(VaultState, RecordMetadata)>
where
    S: Store + ?Sized,
    W: Read + Write + Seek + ?Sized,
    F: FnMut(&VaultState, &mut W) -> Result<(RecordMetadata, LogEntry)>,
{
    push_sealing(store, client, vault, &mut IntoSpool { spool, seal }).await
}

/// Adds a record version whose payload was sealed beforehand (by the web
/// app's worker, from [`VaultState::plan_record`]) with compare-and-swap,
/// as [`push_record`] does: each attempt pulls and calls `finish` with the
/// verified state ([`VaultState::finish_record`], which holds across a
/// moved head: the payload does not depend on it); the ciphertext is read
/// from `ciphertext` a chunk at a time ([`RelayClient::put_blob_from`]),
/// kept in the local blob cache if the store keeps uploads that large
/// (which checks its hash), and uploaded before the entry is appended.
/// Returns the new state and the record's metadata.
pub async fn push_sealed<S, U, F>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    ciphertext: &mut U,
    finish: F,
) -> Result<(VaultState, RecordMetadata)>
where
    S: Store + ?Sized,
    U: UploadSource + ?Sized,
    F: FnMut(&VaultState) -> Result<(RecordMetadata, LogEntry)>,
{
    push_sealing(store, client, vault, &mut Sealed { ciphertext, finish }).await
}

/// How [`push_sealing`] comes by a record version for a head, and uploads
/// its ciphertext: sealed into a spool ([`push_record`]) or sealed
/// beforehand ([`push_sealed`]).
trait Sealing<S: ?Sized> {
    /// The version's metadata and its record-put entry on `state`.
    fn seal(&mut self, state: &VaultState) -> Result<(RecordMetadata, LogEntry)>;
    /// Keeps the ciphertext in `store` if it keeps uploads that large, and
    /// uploads it.
    async fn upload(
        &mut self,
        store: &mut S,
        client: &RelayClient,
        metadata: &RecordMetadata,
    ) -> Result<()>;
}

/// [`push_record`]'s sealing: into a spool, rewound first.
struct IntoSpool<'a, W: ?Sized, F> {
    spool: &'a mut W,
    seal: F,
}

impl<S, W, F> Sealing<S> for IntoSpool<'_, W, F>
where
    S: Store + ?Sized,
    W: Read + Write + Seek + ?Sized,
    F: FnMut(&VaultState, &mut W) -> Result<(RecordMetadata, LogEntry)>,
{
    fn seal(&mut self, state: &VaultState) -> Result<(RecordMetadata, LogEntry)> {
        self.spool.seek(SeekFrom::Start(0))?;
        let sealed = (self.seal)(state, self.spool)?;
        self.spool.flush()?;
        Ok(sealed)
    }

    async fn upload(
        &mut self,
        store: &mut S,
        client: &RelayClient,
        metadata: &RecordMetadata,
    ) -> Result<()> {
        upload_blob(store, client, metadata, self.spool).await
    }
}

/// [`push_sealed`]'s: a ciphertext sealed beforehand, only finished.
struct Sealed<'a, U: ?Sized, F> {
    ciphertext: &'a mut U,
    finish: F,
}

impl<S, U, F> Sealing<S> for Sealed<'_, U, F>
where
    S: Store + ?Sized,
    U: UploadSource + ?Sized,
    F: FnMut(&VaultState) -> Result<(RecordMetadata, LogEntry)>,
{
    fn seal(&mut self, state: &VaultState) -> Result<(RecordMetadata, LogEntry)> {
        (self.finish)(state)
    }

    async fn upload(
        &mut self,
        store: &mut S,
        client: &RelayClient,
        metadata: &RecordMetadata,
    ) -> Result<()> {
        let hash = *metadata.ciphertext_hash();
        let len = checked_len(metadata)?;
        if store.keeps_uploads(len) {
            let whole = usize::try_from(len)
                .map_err(|_| ClientError::Protocol("a ciphertext too large to keep".into()))?;
            let bytes = self.ciphertext.read_chunk(0, whole).await?;
            store.put_blob(&hash, metadata.address_kind(), len, &mut bytes.as_slice())?;
        }
        client
            .put_blob_from(&metadata.vault(), &hash, len, self.ciphertext)
            .await?;
        Ok(())
    }
}

/// The compare-and-swap loop of [`push_record`] and [`push_sealed`].
async fn push_sealing<S, P>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    sealing: &mut P,
) -> Result<(VaultState, RecordMetadata)>
where
    S: Store + ?Sized,
    P: Sealing<S>,
{
    let mut pending: Option<(RecordMetadata, LogEntry)> = None;
    let mut moved = None;
    let mut retimed = false;
    for attempt in 0..MAX_PUSH_ATTEMPTS {
        if moved.is_some() {
            contention_pause(attempt).await;
        }
        let state = pull(store, client, vault).await?;
        // After a lost race the sealed version usually still fits the new
        // head: re-issue its entry, keeping the uploaded ciphertext.
        let reissued = match pending.take() {
            Some((metadata, entry)) => {
                if landed(&state, std::slice::from_ref(&entry)) {
                    return Ok((state, metadata));
                }
                state
                    .record_put_entry(client.identity(), &metadata, client.now())
                    .ok()
                    .map(|entry| (metadata, entry))
            }
            None => None,
        };
        let fresh = reissued.is_none();
        let (metadata, entry) = match reissued {
            Some(sealed) => sealed,
            None => {
                let (metadata, entry) = sealing.seal(&state)?;
                match entry.body() {
                    EntryBody::RecordPut { metadata: m } if *m == metadata => {}
                    _ => return Err(vault_core::Error::InvalidInput(
                        "push_record: seal must return a record-put entry carrying the returned metadata",
                    )
                    .into()),
                }
                (metadata, entry)
            }
        };
        // On every head, the re-issued version's included: a collection
        // whose key a device list change left behind is re-keyed before
        // anything sealed under that key is sent (decision 74).
        crate::devices::check_not_due(
            &state,
            &client.identity().fingerprint(),
            &[metadata.collection()],
        )?;
        if fresh {
            sealing.upload(store, client, &metadata).await?;
        }
        match append_verified(store, client, state, std::slice::from_ref(&entry)).await {
            Ok(Pushed::Done(state)) => return Ok((*state, metadata)),
            Ok(Pushed::Moved(head)) => {
                moved = Some(head);
                pending = Some((metadata, entry));
            }
            Err(e) if is_time_refusal(&e) && !retimed => retimed = true,
            Err(e) => return Err(e),
        }
    }
    Err(gave_up(moved))
}

/// Puts a freshly sealed record version's ciphertext into the local blob
/// cache (which checks it hashes to the signed `ciphertext_hash`, so a
/// wrong file is caught before anything is sent), unless the store declines
/// copies that large ([`Store::keeps_uploads`]; the relay then refuses a
/// wrong file at the upload's end), and uploads it to the relay,
/// resumably. Do this before appending the record-put entry: the
/// relay refuses a record-put whose blob it does not have. `ciphertext` is
/// read from its start.
pub async fn upload_blob<S, R>(
    store: &mut S,
    client: &RelayClient,
    metadata: &RecordMetadata,
    ciphertext: &mut R,
) -> Result<()>
where
    S: Store + ?Sized,
    R: Read + Seek + ?Sized,
{
    let hash = *metadata.ciphertext_hash();
    let len = checked_len(metadata)?;
    if store.keeps_uploads(len) {
        ciphertext.seek(SeekFrom::Start(0))?;
        store.put_blob(
            &hash,
            metadata.address_kind(),
            len,
            &mut (&mut *ciphertext).take(len),
        )?;
    }
    client
        .put_blob(&metadata.vault(), &hash, len, ciphertext)
        .await?;
    Ok(())
}

/// Makes a verified record version's ciphertext available in the local
/// store: does nothing if the store has it, otherwise downloads it into
/// `spool` (rewound first; resumable, hash-checked) and puts it into the
/// store, which checks the hash again. Then open it with
/// [`Store::open_blob`] and [`vault_core::Keyring::open`].
///
/// `spool`: a temporary file on native targets, or a
/// `std::io::Cursor<Vec<u8>>`.
pub async fn fetch_record_blob<S, W>(
    store: &mut S,
    client: &RelayClient,
    record: &VerifiedRecord<'_>,
    spool: &mut W,
) -> Result<()>
where
    S: Store + ?Sized,
    W: Read + Write + Seek + ?Sized,
{
    let metadata = record.metadata();
    let (vault, hash, len) = (
        metadata.vault(),
        *metadata.ciphertext_hash(),
        checked_len(metadata)?,
    );
    fetch_blob(
        store,
        client,
        &vault,
        &hash,
        metadata.address_kind(),
        len,
        spool,
    )
    .await
}

/// [`fetch_record_blob`] by address: downloads the blob `hash` (computed
/// with `kind`) of `len` bytes of `vault` into the store unless it is
/// there. Take `hash`, `kind` and `len` from verified metadata only
/// ([`VaultState::record`]).
pub async fn fetch_blob<S, W>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    hash: &[u8; 32],
    kind: AddressKind,
    len: u64,
    spool: &mut W,
) -> Result<()>
where
    S: Store + ?Sized,
    W: Read + Write + Seek + ?Sized,
{
    if store.has_blob(hash)? {
        return Ok(());
    }
    spool.seek(SeekFrom::Start(0))?;
    client.get_blob(vault, hash, kind, len, spool).await?;
    spool.seek(SeekFrom::Start(0))?;
    store.put_blob(hash, kind, len, &mut (&mut *spool).take(len))?;
    Ok(())
}

/// Looks up an identity on the relay and pins it under `name` in the store
/// (first use), or checks it against the existing pin
/// ([`vault_core::Error::PinnedKeyChanged`] if it changed). The relay
/// cannot substitute a key for a fingerprint the caller verified.
pub async fn lookup_and_pin<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    name: &str,
    fingerprint: &Fingerprint,
) -> Result<PublicIdentity> {
    let identity = client.lookup_identity(fingerprint).await?;
    store.pin(name, &identity.fingerprint())?;
    Ok(identity)
}

// ----- helpers ---------------------------------------------------------------

enum Pushed {
    Done(Box<VaultState>),
    Moved(Head),
}

/// Verifies `entries` on top of `state` (so nothing the log would refuse is
/// sent), appends them (at most [`crate::MAX_APPEND_ENTRIES`], atomically)
/// with `state`'s head as `prev`, and on success persists them.
async fn append_verified<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    state: VaultState,
    entries: &[LogEntry],
) -> Result<Pushed> {
    let mut next = state.clone();
    for e in entries {
        next.apply(e)?;
    }
    append_applied(store, client, &state, next, entries).await
}

/// Appends `entries`, which lead from `state` to the verified `next`, with
/// `state`'s head as `prev`; on success persists them and returns `next`.
async fn append_applied<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    state: &VaultState,
    next: VaultState,
    entries: &[LogEntry],
) -> Result<Pushed> {
    match client
        .append(&state.vault(), state.head().into(), entries)
        .await
    {
        Ok(_) => {
            // `next` verified exactly these entries on top of `state`:
            // persist them without verifying them a second time.
            store.append_entries(&state.vault(), entries)?;
            store::forget_purged(&mut StoreRef(store), &next, entries)?;
            Ok(Pushed::Done(Box::new(next)))
        }
        Err(ClientError::HeadMoved { head }) => Ok(Pushed::Moved(head)),
        Err(e) => Err(e),
    }
}

/// Whether every entry of `entries` is in the verified state (an append
/// whose answer was lost).
fn landed(state: &VaultState, entries: &[LogEntry]) -> bool {
    !entries.is_empty()
        && entries.iter().all(|e| {
            state
                .checkpoint_at(e.seq())
                .is_some_and(|c: Checkpoint| c.head == *e.hash())
        })
}

/// The relay refused an entry's time (the client has adjusted its clock
/// offset: a rebuilt entry will carry the relay's time).
fn is_time_refusal(e: &ClientError) -> bool {
    matches!(e, ClientError::Relay { code, .. } if code == "entry_time_out_of_range")
}

/// A random pause before rebuilding on a moved head, growing with the
/// attempt ("full jitter"), so writers that keep colliding spread out
/// instead of colliding again in lockstep.
async fn contention_pause(attempt: u32) {
    let cap_ms = 10u64 << attempt.min(5);
    let ms = (cap_ms as f64 * crate::platform::random_fraction()) as u64;
    crate::platform::sleep(std::time::Duration::from_millis(ms)).await;
}

fn gave_up(moved: Option<Head>) -> ClientError {
    match moved {
        Some(head) => ClientError::HeadMoved { head },
        None => ClientError::Protocol("the push made no attempt".into()),
    }
}

fn checked_len(metadata: &RecordMetadata) -> Result<u64> {
    match metadata.ciphertext_len() {
        u64::MAX => Err(vault_core::Error::Malformed {
            what: "record metadata",
            reason: "the padded length is too large",
        }
        .into()),
        len => Ok(len),
    }
}

/// [`store::load_vault`] for any store.
pub(crate) fn load<S: Store + ?Sized>(store: &mut S, vault: &VaultId) -> Result<VaultState> {
    Ok(store::load_vault(&StoreRef(store), vault)?)
}

/// [`store::accept_entries`] for any store.
fn accept<S: Store + ?Sized>(
    store: &mut S,
    state: &mut VaultState,
    entries: &[LogEntry],
) -> Result<()> {
    Ok(store::accept_entries(&mut StoreRef(store), state, entries)?)
}

/// A sized handle on a possibly unsized store, so it coerces to
/// `&mut dyn Store` for vault-core's functions.
struct StoreRef<'a, S: Store + ?Sized>(&'a mut S);

impl<S: Store + ?Sized> Store for StoreRef<'_, S> {
    fn append_entries(&mut self, vault: &VaultId, entries: &[LogEntry]) -> vault_core::Result<()> {
        self.0.append_entries(vault, entries)
    }
    fn entries(&self, vault: &VaultId, since: u64) -> vault_core::Result<Vec<LogEntry>> {
        self.0.entries(vault, since)
    }
    fn reveal_entries(&mut self, vault: &VaultId, entries: &[LogEntry]) -> vault_core::Result<()> {
        self.0.reveal_entries(vault, entries)
    }
    fn head(&self, vault: &VaultId) -> vault_core::Result<Option<Checkpoint>> {
        self.0.head(vault)
    }
    fn vaults(&self) -> vault_core::Result<Vec<VaultId>> {
        self.0.vaults()
    }
    fn delete_blob(&mut self, hash: &[u8; 32]) -> vault_core::Result<()> {
        self.0.delete_blob(hash)
    }
    fn put_blob(
        &mut self,
        hash: &[u8; 32],
        kind: AddressKind,
        len: u64,
        data: &mut dyn Read,
    ) -> vault_core::Result<()> {
        self.0.put_blob(hash, kind, len, data)
    }
    fn put_blobs(&mut self, blobs: &[([u8; 32], AddressKind, &[u8])]) -> vault_core::Result<()> {
        self.0.put_blobs(blobs)
    }
    fn keeps_uploads(&self, len: u64) -> bool {
        self.0.keeps_uploads(len)
    }
    fn open_blob(&self, hash: &[u8; 32]) -> vault_core::Result<Option<Box<dyn Read + '_>>> {
        self.0.open_blob(hash)
    }
    fn has_blob(&self, hash: &[u8; 32]) -> vault_core::Result<bool> {
        self.0.has_blob(hash)
    }
    fn pin(&mut self, name: &str, fingerprint: &Fingerprint) -> vault_core::Result<()> {
        self.0.pin(name, fingerprint)
    }
    fn repin(&mut self, name: &str, fingerprint: &Fingerprint) -> vault_core::Result<()> {
        self.0.repin(name, fingerprint)
    }
    fn pinned(&self, name: &str) -> vault_core::Result<Option<Fingerprint>> {
        self.0.pinned(name)
    }
    fn pins(&self) -> vault_core::Result<Vec<(String, Fingerprint)>> {
        self.0.pins()
    }
    fn cursor(&self, name: &str) -> vault_core::Result<Option<u64>> {
        self.0.cursor(name)
    }
    fn set_cursor(&mut self, name: &str, value: u64) -> vault_core::Result<()> {
        self.0.set_cursor(name, value)
    }
}
