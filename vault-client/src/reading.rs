//! Reading records: which records a principal may read now, opening them
//! from the device's store, listing a vault's readable records for display,
//! and exporting them. The CLI and the web app present these; neither opens
//! a record itself.
//!
//! Downloading the ciphertext is left to the presenter between
//! [`plan_listing`] and [`open_listing`] (the CLI streams large records to
//! disk with a progress bar and honours `--offline`; the browser fetches
//! concurrently): everything before and after is here.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};

use vault_core::export::{ExportSink, ExportSummary};
use vault_core::store::Store;
use vault_core::{
    CollectionId, Fingerprint, Keyring, OpenJob, OpenedRecord, RecordId, RecordSummary,
    SecretIdentity, VaultState,
};

use crate::records::{collection_names, split_for_listing};
use crate::{ClientError, DownloadSink, RelayClient, Result};

/// Largest FHIR body kept in memory by [`open_listing`] for a summary.
pub const KEEP_FHIR_BODY: u64 = 1024 * 1024;

/// What opening `record` elsewhere (the web app's worker, which holds no
/// other secret) needs: its version's [`OpenJob`], for which the caller's
/// key must unwrap (access errors otherwise), and its ciphertext,
/// downloaded into `sink` (resumable and hash-checked as it streams, not
/// put into the store; the job checks the hash again): an array of the
/// record's [`vault_core::RecordMetadata::ciphertext_len`] through
/// [`crate::Written`], or a spool file on disk.
pub async fn download_for_opening<D: DownloadSink + ?Sized>(
    client: &RelayClient,
    state: &VaultState,
    secret: &SecretIdentity,
    record: &RecordId,
    sink: &mut D,
) -> Result<OpenJob> {
    let verified = state.record(record)?;
    let job = Keyring::new(secret, client.now()).open_job(state, &verified)?;
    let m = verified.metadata();
    client
        .get_blob_into(
            &m.vault(),
            m.ciphertext_hash(),
            m.address_kind(),
            m.ciphertext_len(),
            sink,
        )
        .await?;
    Ok(job)
}

/// Opens the current version of `record` into `out` as `secret` (at the
/// client's clock): its ciphertext fetched into the store first unless the
/// store has it (spooled in memory, so for records the caller holds whole
/// anyway, as the web app does), then opened from there as
/// [`open_stored`] does.
pub async fn fetch_and_open<S: Store + ?Sized, W: Write>(
    store: &mut S,
    client: &RelayClient,
    state: &VaultState,
    secret: &SecretIdentity,
    record: &RecordId,
    out: W,
) -> Result<OpenedRecord> {
    let verified = state.record(record)?;
    crate::sync::fetch_record_blob(store, client, &verified, &mut Cursor::new(Vec::new())).await?;
    open_stored(
        store,
        state,
        &mut Keyring::new(secret, client.now()),
        record,
        out,
    )
}

/// The records of `state` (optionally of one collection) that `me` may read
/// at `now`: through a current collection grant or a single-record grant
/// in force.
pub fn readable(
    state: &VaultState,
    me: &Fingerprint,
    now: u64,
    collection: Option<&CollectionId>,
) -> Vec<RecordSummary> {
    let access = state.access(me, now);
    state
        .records(collection)
        .into_iter()
        .filter(|r| access.may_read(&r.collection, &r.id))
        .collect()
}

/// Refuses, before anything is fetched, a record `me` holds no grant in
/// force for at `now`.
pub fn check_readable(
    state: &VaultState,
    me: &Fingerprint,
    now: u64,
    record: &RecordId,
) -> Result<()> {
    let collection = state.record(record)?.metadata().collection();
    if state.access(me, now).may_read(&collection, record) {
        Ok(())
    } else {
        Err(vault_core::Error::AccessDenied(
            "this record is not shared with you (or your access ended); ask the patient to share it",
        )
        .into())
    }
}

/// Collection names by id, for the collections `me` can open at `now`.
pub fn names_by_id(
    state: &VaultState,
    me: &SecretIdentity,
    now: u64,
) -> BTreeMap<CollectionId, String> {
    collection_names(state, &mut Keyring::new(me, now))
        .into_iter()
        .map(|(name, id)| (id, name))
        .collect()
}

/// Opens the current version of `record` from the store into `out`,
/// authenticating every chunk (nothing unauthenticated reaches `out` as
/// final: a failure midway is an error, and `out` must then be discarded).
/// The ciphertext must already be on the device
/// ([`ClientError::NotOnDevice`] otherwise).
pub fn open_stored<S: Store + ?Sized, W: Write>(
    store: &S,
    state: &VaultState,
    keyring: &mut Keyring,
    record: &RecordId,
    out: W,
) -> Result<OpenedRecord> {
    let verified = state.record(record)?;
    let blob = store
        .open_blob(verified.metadata().ciphertext_hash())?
        .ok_or_else(|| ClientError::NotOnDevice(format!("the ciphertext of record {record}")))?;
    Ok(keyring.open(state, &verified, blob, out)?)
}

/// A record opened for listing: where it is and what it says about itself.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The record's verified place in the vault.
    pub summary: RecordSummary,
    /// Its authenticated header.
    pub opened: OpenedRecord,
    /// The body, kept for FHIR records up to [`KEEP_FHIR_BODY`] when asked.
    pub body: Option<Vec<u8>>,
}

/// What a listing found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Records opened and authenticated.
    pub opened: Vec<Listed>,
    /// Readable records larger than
    /// [`LIST_FETCH_LIMIT`](crate::records::LIST_FETCH_LIMIT) whose
    /// ciphertext is not on this device (not downloaded just to list them).
    pub not_downloaded: Vec<RecordSummary>,
    /// Records that failed authentication (their author wrote ciphertext or
    /// a key that does not open), with the reason: shown as failures, never
    /// as content, and never hiding the others.
    pub failed: Vec<(RecordSummary, vault_core::Error)>,
}

/// A listing planned: the readable records to open, whose ciphertext the
/// presenter must make sure is on the device, and those left out because
/// they are large and not downloaded.
#[derive(Debug)]
pub struct ListingPlan {
    /// Records to open once their ciphertext is on the device.
    pub to_open: Vec<RecordSummary>,
    /// Large readable records whose ciphertext is not on this device.
    pub not_downloaded: Vec<RecordSummary>,
}

impl ListingPlan {
    /// The ids of the records to open (what to download first).
    pub fn ids(&self) -> Vec<RecordId> {
        self.to_open.iter().map(|r| r.id).collect()
    }
}

/// Plans a listing of the records `me` may read at `now` (optionally of
/// one collection).
pub fn plan_listing<S: Store + ?Sized>(
    store: &S,
    state: &VaultState,
    me: &Fingerprint,
    now: u64,
    collection: Option<&CollectionId>,
) -> Result<ListingPlan> {
    let (to_open, not_downloaded) =
        split_for_listing(store, state, readable(state, me, now, collection))?;
    Ok(ListingPlan {
        to_open,
        not_downloaded,
    })
}

/// Opens the records of `plan` from the store (their ciphertext must be on
/// the device), keeping FHIR bodies up to [`KEEP_FHIR_BODY`] when
/// `keep_fhir`. A record that fails authentication is listed in
/// [`Listing::failed`]; a version newer than a single-record grant covers
/// is skipped; any other error (a store failure, missing ciphertext) ends
/// the listing.
pub fn open_listing<S: Store + ?Sized>(
    store: &S,
    state: &VaultState,
    me: &SecretIdentity,
    now: u64,
    plan: ListingPlan,
    keep_fhir: bool,
) -> Result<Listing> {
    let mut keyring = Keyring::new(me, now);
    let mut listing = Listing {
        not_downloaded: plan.not_downloaded,
        ..Listing::default()
    };
    for summary in plan.to_open {
        let mut sink = KeepSink {
            keep: keep_fhir,
            buf: Vec::new(),
        };
        match open_stored(store, state, &mut keyring, &summary.id, &mut sink) {
            Ok(opened) => {
                let body = (keep_fhir
                    && vault_core::export::is_fhir(&opened.info.content_type)
                    && opened.body_len <= KEEP_FHIR_BODY)
                    .then_some(sink.buf);
                listing.opened.push(Listed {
                    summary,
                    opened,
                    body,
                });
            }
            // A single-record grant covers one version.
            Err(ClientError::Core(vault_core::Error::AccessDenied(_))) => {}
            Err(ClientError::Core(e)) if e.is_record_failure() => {
                listing.failed.push((summary, e));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(listing)
}

/// Keeps the first [`KEEP_FHIR_BODY`] + 1 bytes when asked, discards the
/// rest.
struct KeepSink {
    keep: bool,
    buf: Vec<u8>,
}

impl Write for KeepSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let limit = usize::try_from(KEEP_FHIR_BODY + 1).unwrap_or(usize::MAX);
        if self.keep && self.buf.len() < limit {
            let room = limit - self.buf.len();
            self.buf
                .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Exports every record `me` can read at `now` into `sink` as standard age
/// files (`vault_core::export`), from the ciphertext on the device (it
/// must all be there: download it first), then `key_file` (the
/// passphrase-sealed identity, as `identity.vault.age`) and the README.
/// Each file is flushed, so a full disk is an error, never a silently
/// short export. Records whose key does not open are skipped and reported
/// in [`ExportSummary::unreadable`]: the caller must tell the user that
/// the export is incomplete.
pub fn export<S: Store + ?Sized>(
    store: &S,
    state: &VaultState,
    me: &SecretIdentity,
    now: u64,
    key_file: &[u8],
    sink: &mut dyn ExportSink,
) -> Result<ExportSummary> {
    let mut keyring = Keyring::new(me, now);
    let summary = vault_core::export::vault(
        state,
        &mut keyring,
        me.public(),
        |m| {
            let mut r =
                store
                    .open_blob(m.ciphertext_hash())?
                    .ok_or(vault_core::Error::Missing {
                        what: format!("the ciphertext of record {}", m.record()),
                    })?;
            let mut bytes = Vec::new();
            r.read_to_end(&mut bytes)?;
            Ok(Box::new(Cursor::new(bytes)) as Box<dyn Read>)
        },
        sink,
    )?;
    for (name, bytes) in [
        (KEY_FILE_NAME, key_file),
        ("README.txt", vault_core::export::README.as_bytes()),
    ] {
        let mut out = sink.create(name)?;
        out.write_all(bytes)?;
        out.flush()?;
    }
    Ok(summary)
}

/// The name of the sealed key file in an export.
pub const KEY_FILE_NAME: &str = "identity.vault.age";
