//! Records: sealing files and FHIR resources into a vault (uploaded
//! concurrently, appended in batches), and opening them again.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};

use indicatif::ProgressBar;
use vault_client::{reading, sync, ClientError};
use vault_core::store::Store;
use vault_core::{
    CollectionId, Keyring, OpenedRecord, RecordId, RecordInfo, RecordMetadata, SecretIdentity,
    VaultId, VaultState,
};

use crate::error::{CliError, Result};
use crate::session::Session;

pub use vault_client::records::{collection_names, collections_by_name, NewRecord};

/// A collection as people read it: its name among `names` (from
/// `vault_client::reading::names_by_id`), or "collection" and the first
/// digits of its id where this reader cannot open the name.
pub fn collection_label(
    names: &std::collections::BTreeMap<CollectionId, String>,
    id: &CollectionId,
) -> String {
    names
        .get(id)
        .cloned()
        .unwrap_or_else(|| format!("collection {}", crate::output::short(&id.to_hex())))
}

/// Finds a collection by name (or id prefix) among those `me` can read at
/// `now`; a name two collections share is refused as ambiguous.
pub fn find_collection(
    state: &VaultState,
    me: &SecretIdentity,
    now: u64,
    name: &str,
) -> Result<CollectionId> {
    find_named(&vault_client::reading::names_by_id(state, me, now), name)
}

/// Finds a collection by name (or id prefix) among `readable`, the names of
/// the collections one can read (from `vault_client::reading::names_by_id`);
/// a name two collections share is refused as ambiguous.
pub fn find_named(
    readable: &std::collections::BTreeMap<CollectionId, String>,
    name: &str,
) -> Result<CollectionId> {
    let mut names: Vec<(String, CollectionId)> =
        readable.iter().map(|(id, n)| (n.clone(), *id)).collect();
    names.sort();
    let by_name: Vec<CollectionId> = names
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, id)| *id)
        .collect();
    match by_name.as_slice() {
        [one] => return Ok(*one),
        [] => {}
        several => {
            return Err(CliError::Usage(format!(
                "{} collections are named {name:?}; name one by its id ({})",
                several.len(),
                several
                    .iter()
                    .map(|id| id.to_hex())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
    let lower = name.to_ascii_lowercase();
    let by_id: Vec<CollectionId> = names
        .iter()
        .map(|(_, id)| *id)
        .filter(|id| lower.len() >= 4 && id.to_hex().starts_with(&lower))
        .collect();
    match by_id.as_slice() {
        [one] => Ok(*one),
        _ => Err(CliError::NotFound(format!(
            "no collection {name:?} that you can read in this vault{}",
            if names.is_empty() {
                String::new()
            } else {
                format!(
                    " (yours: {})",
                    names
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ))),
    }
}

/// Finds a live record by id or unique id prefix (at least 4 hex digits).
pub fn find_record(state: &VaultState, prefix: &str) -> Result<RecordId> {
    let lower = prefix.trim().to_ascii_lowercase();
    if lower.len() < 4 || !lower.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::Usage(format!(
            "{prefix:?} is not a record id: use the id (or its first 4+ hex digits) that `vault list` shows"
        )));
    }
    let found: Vec<RecordId> = state
        .records(None)
        .into_iter()
        .map(|r| r.id)
        .filter(|id| id.to_hex().starts_with(&lower))
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(CliError::NotFound(format!(
            "no record {prefix:?} in this vault; see `vault list`"
        ))),
        _ => Err(CliError::Usage(format!(
            "{prefix:?} matches {} records; give more digits",
            found.len()
        ))),
    }
}

/// Creates the named collections that do not exist yet (owner only; see
/// [`vault_client::records::ensure_collections`]) and re-keys those a
/// removed device held the key of, with a notice for each.
/// Returns the state and every readable collection by name.
pub fn ensure_collections(
    session: &mut Session,
    vault: &VaultId,
    names: &[&str],
) -> Result<(VaultState, BTreeMap<String, CollectionId>)> {
    let secret = session.unlock()?;
    let client = session.client_for(vault)?;
    let done = session
        .rt
        .block_on(vault_client::records::ensure_collections(
            &mut session.store,
            &client,
            &secret,
            vault,
            names,
        ))
        .map_err(|e| match e {
            vault_client::ClientError::Core(vault_core::Error::AccessDenied(_)) => {
                CliError::NotFound(format!(
                    "no collection {:?} that you can write to in this vault; ask the patient to share it with write access",
                    names.first().copied().unwrap_or_default()
                ))
            }
            other => other.into(),
        })?;
    for name in &done.created {
        session.out.notice(format!("Created collection {name}."));
    }
    for (name, _) in done
        .by_name
        .iter()
        .filter(|(_, id)| done.rekeyed.rotated.contains(id))
    {
        session.out.notice(format!(
            "Re-keyed collection {name} first: a device removed from this vault held its key."
        ));
    }
    Ok((done.state, done.by_name))
}

/// Seals small records and adds them in chunks
/// ([`vault_client::records::add_records`]), moving `bar` by records.
pub fn add_records(
    session: &mut Session,
    state: VaultState,
    items: Vec<NewRecord>,
    bar: &ProgressBar,
) -> Result<(VaultState, Vec<RecordId>)> {
    let secret = session.unlock()?;
    let client = session.client_for(&state.vault())?;
    session
        .rt
        .block_on(vault_client::records::add_records(
            &mut session.store,
            &client,
            &secret,
            state,
            &items,
            |n| bar.inc(n as u64),
        ))
        .map_err(CliError::from)
}

/// Adds one record of any size from a stream, sealing it into a temporary
/// file and uploading it in resumable chunks, with progress on `bar`
/// (bytes). `replace` adds a new version of that record instead.
#[allow(clippy::too_many_arguments)]
pub fn add_stream(
    session: &mut Session,
    vault: &VaultId,
    collection: &CollectionId,
    replace: Option<RecordId>,
    info: &RecordInfo,
    body: &mut dyn FnMut() -> std::io::Result<Box<dyn Read>>,
    body_len: u64,
    bar: &ProgressBar,
) -> Result<(VaultState, RecordMetadata)> {
    let secret = session.unlock()?;
    let client = session.client_for(vault)?;
    let spool = tempfile::tempfile().map_err(|e| CliError::file(std::env::temp_dir(), e))?;
    let mut spool = ProgressSpool {
        inner: spool,
        bar: bar.clone(),
        reading: false,
    };
    let (state, metadata) = session.rt.block_on(sync::push_record(
        &mut session.store,
        &client,
        vault,
        &mut spool,
        |state, spool| {
            // Before sealing: a large file is not sealed only to be
            // refused (the append checks again, re-issued versions too).
            vault_client::devices::check_not_due(
                state,
                &secret.fingerprint(),
                std::slice::from_ref(collection),
            )?;
            let mut keyring = Keyring::new(&secret, client.now());
            spool.bar.set_message("sealing");
            spool.reading = false;
            let reader = body().map_err(vault_core::Error::Io)?;
            Ok(state.put_record(
                &mut keyring,
                collection,
                replace,
                info,
                vault_core::RecordBody::new(reader, body_len),
                &mut *spool,
            )?)
        },
    ))?;
    Ok((state, metadata))
}

/// The sealing spool: a temporary file whose reads and writes move a
/// progress bar (writes while sealing, reads while storing and uploading).
struct ProgressSpool {
    inner: std::fs::File,
    bar: ProgressBar,
    reading: bool,
}

impl Write for ProgressSpool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Read for ProgressSpool {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.reading {
            self.reading = true;
            self.bar.set_message("uploading");
        }
        let n = self.inner.read(buf)?;
        if let Ok(pos) = self.inner.stream_position() {
            self.bar.set_position(pos);
        }
        Ok(n)
    }
}

impl Seek for ProgressSpool {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let p = self.inner.seek(pos)?;
        self.bar.set_position(p);
        Ok(p)
    }
}

/// Refuses, before anything is fetched, a record the caller holds no
/// current grant for.
pub fn check_readable(session: &Session, state: &VaultState, id: &RecordId) -> Result<()> {
    Ok(reading::check_readable(
        state,
        &session.me().fingerprint(),
        session.now(),
        id,
    )?)
}

/// Opens a record from the local store into `out` (the ciphertext must be
/// there: [`Session::ensure_blobs`]).
pub fn open_record<W: Write>(
    store: &dyn Store,
    state: &VaultState,
    keyring: &mut Keyring,
    id: &RecordId,
    out: W,
) -> Result<OpenedRecord> {
    reading::open_stored(store, state, keyring, id, out).map_err(offline)
}

/// Ciphertext missing from the device is [`CliError::NotOffline`] (run
/// `vault sync` online); other errors as they are.
pub(crate) fn offline(e: ClientError) -> CliError {
    match e {
        ClientError::NotOnDevice(what) => CliError::NotOffline(what),
        other => other.into(),
    }
}

pub use vault_client::reading::{Listed, Listing};
pub use vault_client::records::LIST_FETCH_LIMIT;

/// Opens every record the caller may read (optionally of one collection)
/// from the local store, fetching missing ciphertext first, except records
/// larger than [`LIST_FETCH_LIMIT`] (see [`Listing::not_downloaded`]).
/// Records that fail verification are reported on stderr and left out;
/// they never hide the others.
pub fn open_all(
    session: &mut Session,
    state: &VaultState,
    collection: Option<&CollectionId>,
    keep_fhir: bool,
) -> Result<Listing> {
    let me = session.unlock()?;
    let plan = reading::plan_listing(
        &session.store,
        state,
        &me.fingerprint(),
        session.now(),
        collection,
    )?;
    session.ensure_blobs(state, &plan.ids())?;
    let listing = reading::open_listing(&session.store, state, &me, session.now(), plan, keep_fhir)
        .map_err(offline)?;
    for (summary, e) in &listing.failed {
        let digits = summary
            .author
            .digit_groups()
            .first()
            .cloned()
            .unwrap_or_default();
        let author = match state.identity(&summary.author) {
            Some(i) => format!("{} {digits}", crate::output::clean(i.display_name())),
            None => digits,
        };
        session.out.warn(format!(
            "warning: record {} (written by {author}) failed verification and is not shown: {e}",
            summary.id
        ));
    }
    Ok(listing)
}
