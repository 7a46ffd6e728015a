//! Adding records in bulk, shared by the command line and the web app:
//! collections created by name when missing, small records sealed in
//! chunks, stored locally in one batch, uploaded concurrently and appended
//! with compare-and-swap, so an interruption leaves at most one chunk's
//! uploads unreferenced (and running the same import again completes it).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use vault_core::address::AddressKind;
use vault_core::store::Store;
use vault_core::{
    Checkpoint, CollectionId, Keyring, LogEntry, RecordId, RecordInfo, RecordMetadata,
    RecordSummary, RecordTarget, SecretIdentity, VaultId, VaultState,
};

use zeroize::Zeroizing;

use crate::blob::Wanted;
use crate::error::{ClientError, Result};
use crate::{sync, RelayClient, UploadSource};

/// Records per append (within [`crate::MAX_APPEND_ENTRIES`]): one Synthea
/// patient is usually one append.
pub const RECORDS_PER_APPEND: usize = 512;

/// How long (seconds) entries built while their chunk uploads stay
/// usable: well inside the relay's 30-second future and 300-second past
/// windows.
const BUILT_AHEAD_FOR: u64 = 20;

/// How many batch uploads are in flight at once (a chunk of records is
/// split into this many requests).
const UPLOAD_BATCHES: usize = 4;

/// Largest ciphertext a listing downloads to read a record's title; larger
/// records are listed from their verified metadata until opened.
pub const LIST_FETCH_LIMIT: u64 = 4 * 1024 * 1024;

/// How many batch reads [`fetch_small_blobs`] has in flight at most.
pub const READS_IN_FLIGHT: usize = 4;

/// Splits records to list into those to open (their ciphertext is in the
/// store, or small enough to fetch) and those listed from their verified
/// metadata only (over [`LIST_FETCH_LIMIT`] and not in the store).
pub fn split_for_listing<S: Store + ?Sized>(
    store: &S,
    state: &VaultState,
    records: Vec<RecordSummary>,
) -> Result<(Vec<RecordSummary>, Vec<RecordSummary>)> {
    let mut open = Vec::new();
    let mut metadata_only = Vec::new();
    for r in records {
        // Only a record too large to fetch for a listing asks the store.
        if r.ciphertext_len <= LIST_FETCH_LIMIT
            || store.has_blob(state.record(&r.id)?.metadata().ciphertext_hash())?
        {
            open.push(r);
        } else {
            metadata_only.push(r);
        }
    }
    Ok((open, metadata_only))
}

/// The verified metadata of those `records` whose ciphertext the store
/// lacks.
pub fn missing_blobs<S: Store + ?Sized>(
    store: &S,
    state: &VaultState,
    records: &[RecordId],
) -> Result<Vec<RecordMetadata>> {
    let mut missing = Vec::new();
    for id in records {
        let m = state.record(id)?.metadata().clone();
        if !store.has_blob(m.ciphertext_hash())? {
            missing.push(m);
        }
    }
    Ok(missing)
}

/// Downloads small blobs (whole, into memory) in batch reads
/// ([`crate::batch_reads`]), [`READS_IN_FLIGHT`] requests at a time, each
/// blob checked against its signed
/// length and address, storing each batch as it arrives so memory stays
/// bounded; `on_blob` is called per blob downloaded. Take the metadata from
/// a verified state ([`missing_blobs`]).
pub async fn fetch_small_blobs<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    blobs: &[RecordMetadata],
    on_blob: impl Fn(),
) -> Result<()> {
    // Consecutive blobs of one vault share requests; each is wanted as
    // (address, kind, length).
    let mut groups: Vec<(VaultId, Vec<Wanted>)> = Vec::new();
    for m in blobs {
        let wanted = (*m.ciphertext_hash(), m.address_kind(), m.ciphertext_len());
        match groups.last_mut() {
            Some((vault, list)) if *vault == m.vault() => list.push(wanted),
            _ => groups.push((m.vault(), vec![wanted])),
        }
    }
    let requests: Vec<(VaultId, &[Wanted])> = groups
        .iter()
        .flat_map(|(vault, list)| {
            crate::blob::batch_reads(list)
                .into_iter()
                .filter_map(move |r| list.get(r).map(|w| (*vault, w)))
        })
        .collect();
    let mut answers = stream::iter(requests.into_iter().map(|(vault, wanted)| async move {
        let bytes = client.get_blobs(&vault, wanted).await?;
        Ok::<_, crate::ClientError>((wanted, bytes))
    }))
    .buffered(READS_IN_FLIGHT);
    while let Some(answer) = answers.next().await {
        let (wanted, bytes) = answer?;
        let batch: Vec<([u8; 32], AddressKind, &[u8])> = wanted
            .iter()
            .zip(&bytes)
            .map(|((h, k, _), b)| (*h, *k, b.as_slice()))
            .collect();
        store.put_blobs(&batch)?;
        for _ in wanted {
            on_blob();
        }
    }
    Ok(())
}

/// The collections `keyring` can open, with their names (made safe to
/// display with [`vault_fhir::clean`]: they come from the vault's
/// owner), in the log's order. Two collections may carry the same name.
pub fn collection_names(state: &VaultState, keyring: &mut Keyring) -> Vec<(String, CollectionId)> {
    state
        .collections()
        .into_iter()
        .filter_map(|c| {
            state
                .collection_name(keyring, &c.id)
                .ok()
                .map(|n| (vault_fhir::clean(&n), c.id))
        })
        .collect()
}

/// The readable collections by name (the first of any duplicate name).
pub fn collections_by_name(
    state: &VaultState,
    keyring: &mut Keyring,
) -> BTreeMap<String, CollectionId> {
    let mut map = BTreeMap::new();
    for (name, id) in collection_names(state, keyring) {
        map.entry(name).or_insert(id);
    }
    map
}

/// The collections among `names` that `me` may deposit into at `now`,
/// named by their id: a write-only depositor cannot open a collection's
/// name (it is sealed under the collection key), so it names the
/// collection by the id its grant shows (all 32 hex digits, or a prefix of
/// at least 8 that only one of its deposit collections has).
pub fn deposit_targets(
    state: &VaultState,
    me: &SecretIdentity,
    now: u64,
    names: &[&str],
) -> BTreeMap<String, CollectionId> {
    let deposits: Vec<CollectionId> = state
        .access(&me.fingerprint(), now)
        .collections
        .into_iter()
        .filter(|(_, a)| a.permission == vault_core::Permission::Deposit)
        .map(|(id, _)| id)
        .collect();
    names
        .iter()
        .filter(|n| n.len() >= 8 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .filter_map(|n| {
            let lower = n.to_ascii_lowercase();
            let mut found = deposits.iter().filter(|id| id.to_hex().starts_with(&lower));
            match (found.next(), found.next()) {
                (Some(id), None) => Some(((*n).to_owned(), *id)),
                _ => None,
            }
        })
        .collect()
}

/// What [`ensure_collections`] found and did.
#[derive(Debug)]
pub struct Collections {
    /// The vault after the (possible) append.
    pub state: VaultState,
    /// Every collection the caller can read, by name.
    pub by_name: BTreeMap<String, CollectionId>,
    /// The names this call created.
    pub created: Vec<String>,
    /// The collections re-keyed before the write (decision 74): a device
    /// removed from the vault held their key.
    pub rekeyed: crate::devices::Rekeying,
}

/// Refuses a writer identity that is not the relay client's: re-keying
/// signs as the client, and the checks before a write read the writer.
fn same_writer(client: &RelayClient, secret: &SecretIdentity) -> Result<()> {
    if secret.fingerprint() == client.identity().fingerprint() {
        Ok(())
    } else {
        Err(ClientError::Config(
            "the writer's identity is not the relay client's: make the client with it".into(),
        ))
    }
}

/// Makes the named collections ready to be written into: creates those
/// that do not exist yet, in one append (what exists is decided again on
/// each attempt, so a collection another device created meanwhile is not
/// created twice), and first re-keys those a removed device still holds
/// the key of ([`crate::devices::rekey_before_writing`]). Only the owner
/// creates collections: for anyone else a missing one is
/// [`vault_core::Error::AccessDenied`].
pub async fn ensure_collections<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    secret: &Arc<SecretIdentity>,
    vault: &VaultId,
    names: &[&str],
) -> Result<Collections> {
    same_writer(client, secret)?;
    let state = sync::pull(store, client, vault).await?;
    let missing = |known: &BTreeMap<String, CollectionId>| -> Vec<String> {
        names
            .iter()
            .filter(|n| !known.contains_key(**n))
            .map(|n| (*n).to_owned())
            .collect()
    };
    let mut by_name = collections_by_name(&state, &mut Keyring::new(secret, client.now()));
    by_name.extend(deposit_targets(&state, secret, client.now(), names));
    // A rotation keeps a collection's id and name.
    let existing: Vec<CollectionId> = names
        .iter()
        .filter_map(|n| by_name.get(*n).copied())
        .collect();
    let (state, rekeyed) =
        crate::devices::rekey_before_writing(store, client, state, &existing).await?;
    if missing(&by_name).is_empty() {
        return Ok(Collections {
            state,
            by_name,
            created: Vec::new(),
            rekeyed,
        });
    }
    if !state.is_owner(&secret.fingerprint()) {
        return Err(vault_core::Error::AccessDenied(
            "no such collection that you can write to in this vault; ask the patient to share it with write access",
        )
        .into());
    }
    let mut created: Vec<String> = Vec::new();
    let state = sync::push_with_retry(store, client, vault, |state| {
        created = missing(&collections_by_name(
            state,
            &mut Keyring::new(secret, client.now()),
        ));
        let mut next = state.clone();
        let mut entries = Vec::new();
        for name in &created {
            let (_, entry) = next.create_collection(secret, name, client.now())?;
            next.apply(&entry)?;
            entries.push(entry);
        }
        Ok(entries)
    })
    .await?;
    let by_name = collections_by_name(&state, &mut Keyring::new(secret, client.now()));
    Ok(Collections {
        state,
        by_name,
        created,
        rekeyed,
    })
}

/// A FHIR import planned against what a vault already holds: resources the
/// vault has (by resource type and id) and repeats within the input are
/// skipped, so an interrupted import is simply run again.
#[derive(Debug)]
pub struct FhirImport {
    /// The resources to add, in input order.
    pub fresh: Vec<vault_fhir::Resource>,
    /// Resources skipped.
    pub skipped: usize,
    /// Resources to add per collection name.
    pub per_collection: BTreeMap<String, usize>,
}

impl FhirImport {
    /// Plans importing `resources` into a vault holding `existing` (resource
    /// type, id) pairs ([`vault_fhir::resource_key`] of its records).
    pub fn plan(
        resources: Vec<vault_fhir::Resource>,
        existing: BTreeSet<(String, String)>,
    ) -> Self {
        let total = resources.len();
        let mut seen = existing;
        let fresh: Vec<vault_fhir::Resource> = resources
            .into_iter()
            .filter(|r| match &r.id {
                Some(id) => seen.insert((r.resource_type.clone(), id.clone())),
                None => true,
            })
            .collect();
        let mut per_collection: BTreeMap<String, usize> = BTreeMap::new();
        for r in &fresh {
            *per_collection
                .entry(r.category.collection_name().to_owned())
                .or_default() += 1;
        }
        Self {
            skipped: total - fresh.len(),
            fresh,
            per_collection,
        }
    }

    /// The collections the fresh resources go to.
    pub fn collection_names(&self) -> Vec<&str> {
        self.per_collection.keys().map(String::as_str).collect()
    }

    /// The records to add (created at `now`), given the vault's collections
    /// by name ([`ensure_collections`] of [`FhirImport::collection_names`]).
    pub fn records(
        &self,
        collections: &BTreeMap<String, CollectionId>,
        now: u64,
    ) -> Result<Vec<NewRecord>> {
        self.fresh
            .iter()
            .map(|r| {
                let name = r.category.collection_name();
                let collection =
                    *collections
                        .get(name)
                        .ok_or_else(|| vault_core::Error::Missing {
                            what: format!("collection {name:?}"),
                        })?;
                Ok(NewRecord::fhir(r, collection, now))
            })
            .collect()
    }
}

/// One small record to add: its collection, info and body.
#[derive(Debug)]
pub struct NewRecord {
    /// Which record it becomes: `None` for a new record with a random
    /// identifier, or an explicit [`RecordTarget`] (a new record under an
    /// identifier chosen beforehand, or the next version of one).
    pub target: Option<RecordTarget>,
    /// The collection.
    pub collection: CollectionId,
    /// Content type, title and dates.
    pub info: RecordInfo,
    /// The body.
    pub body: Vec<u8>,
}

impl NewRecord {
    /// A FHIR resource as a new record of `collection` (created at `now`):
    /// its content type names the resource type and id, its title and
    /// clinical date are the resource's, its body the resource's JSON.
    pub fn fhir(r: &vault_fhir::Resource, collection: CollectionId, now: u64) -> Self {
        Self {
            target: None,
            collection,
            info: RecordInfo {
                content_type: vault_fhir::content_type(&r.resource_type, r.id.as_deref()),
                title: r.title.clone(),
                created_at: now,
                effective_at: r.effective_at,
            },
            body: r.json.clone(),
        }
    }
}

/// Seals small records and adds them in chunks of at most
/// [`RECORDS_PER_APPEND`]: each chunk is sealed, stored locally in one
/// batch, uploaded concurrently and appended (compare-and-swap, rebuilt on a
/// moved head). `state` is the vault as just pulled (for example by
/// [`ensure_collections`]); each append pulls again before it is built.
/// `on_chunk` is told how many records each finished chunk held. Returns
/// the final state and the new records' ids, in input order.
///
/// A collection rotated while records are added fails the chunk with
/// [`ClientError::CollectionRotated`]: what was added before is kept, and
/// running the same import again completes it.
pub async fn add_records<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    secret: &Arc<SecretIdentity>,
    state: VaultState,
    items: &[NewRecord],
    mut on_chunk: impl FnMut(usize),
) -> Result<(VaultState, Vec<RecordId>)> {
    same_writer(client, secret)?;
    let vault = state.vault();
    // Every collection written into, re-keyed first where a device list
    // change left its key behind (decision 74): new versions of existing
    // records too, whose collections the caller did not name.
    let mut written: Vec<CollectionId> = items.iter().map(|i| i.collection).collect();
    written.sort_unstable_by_key(|c| *c.as_bytes());
    written.dedup();
    let (mut state, _) =
        crate::devices::rekey_before_writing(store, client, state, &written).await?;
    let mut ids = Vec::with_capacity(items.len());
    for chunk in items.chunks(RECORDS_PER_APPEND) {
        let now = client.now();
        let mut keyring = Keyring::new(secret, now);
        let mut metadata: Vec<RecordMetadata> = Vec::with_capacity(chunk.len());
        let mut ciphertexts: Vec<Vec<u8>> = Vec::with_capacity(chunk.len());
        for item in chunk {
            let mut ciphertext = Vec::new();
            let target = item
                .target
                .unwrap_or_else(|| RecordTarget::New(RecordId::random()));
            let (m, _) = state.put_record_to(
                &mut keyring,
                &item.collection,
                target,
                &item.info,
                vault_core::RecordBody::new(item.body.as_slice(), item.body.len() as u64),
                &mut ciphertext,
            )?;
            metadata.push(m);
            ciphertexts.push(ciphertext);
        }
        let kept: Vec<([u8; 32], AddressKind, &[u8])> = metadata
            .iter()
            .zip(&ciphertexts)
            .map(|(m, c)| (*m.ciphertext_hash(), m.address_kind(), c.as_slice()))
            .collect();
        store.put_blobs(&kept)?;
        let blobs: Vec<([u8; 32], &[u8])> = kept.iter().map(|(h, _, c)| (*h, *c)).collect();
        let per = blobs.len().div_ceil(UPLOAD_BATCHES).max(1);
        let uploads = stream::iter(blobs.chunks(per).map(|part| client.put_blobs(&vault, part)))
            .buffer_unordered(UPLOAD_BATCHES)
            .try_collect::<Vec<()>>();
        // The chunk's entries are built (signed, and every signature
        // checked) while its ciphertexts upload.
        let (ahead, uploaded) = futures_util::join!(
            BuiltAhead::build(state, Arc::clone(secret), metadata, client.now()),
            uploads
        );
        uploaded?;
        let mut ahead = ahead?;
        let written: Vec<CollectionId> = chunk.iter().map(|item| item.collection).collect();
        state = sync::push_applied(store, client, &vault, |state| {
            // A device removed since the chunk was sealed: its key opens it.
            crate::devices::check_not_due(state, &secret.fingerprint(), &written)?;
            match ahead.take_for(state, client.now()) {
                Some(built) => Ok(built?),
                None => Ok(state.issue_record_puts(secret, &ahead.metadata, client.now())?),
            }
        })
        .await
        .map_err(|e| match e {
            ClientError::Core(vault_core::Error::ContextMismatch { field: "epoch", .. }) => {
                ClientError::CollectionRotated
            }
            other => other,
        })?;
        let metadata = ahead.metadata;
        ids.extend(metadata.iter().map(RecordMetadata::record));
        on_chunk(chunk.len());
    }
    Ok((state, ids))
}

/// A chunk's record-put entries built on the vault as this writer last
/// knew it, while the chunk's ciphertexts upload. The append pulls first:
/// if the vault is still at that head, its state is the one they were
/// built on (a head names its whole log) and they are used as they are;
/// if another writer moved it, they are built again on the new head.
struct BuiltAhead {
    /// The head the entries were built on.
    on: Checkpoint,
    /// When they were built (the relay's clock, as the client knows it):
    /// their entries carry this time.
    at: u64,
    /// The sealed versions the entries put.
    metadata: Vec<RecordMetadata>,
    /// [`VaultState::issue_record_puts`]'s answer, until taken.
    built: Option<vault_core::Result<(Vec<LogEntry>, VaultState)>>,
}

impl BuiltAhead {
    /// Builds the entries putting `metadata` on `state`, off the calling
    /// thread where there is another ([`crate::platform::off_thread`]).
    async fn build(
        state: VaultState,
        secret: Arc<SecretIdentity>,
        metadata: Vec<RecordMetadata>,
        now: u64,
    ) -> Result<Self> {
        crate::platform::off_thread(move || {
            let built = state.issue_record_puts(&secret, &metadata, now);
            Self {
                on: state.head(),
                at: now,
                metadata,
                built: Some(built),
            }
        })
        .await
    }

    /// The entries built ahead, once, if `state` is at the head they were
    /// built on and `now` is within [`BUILT_AHEAD_FOR`] of their time;
    /// `None` if not (build them again on `state`: a slow upload, or a
    /// clock corrected meanwhile, would date them outside the relay's
    /// window) or they were taken already.
    fn take_for(
        &mut self,
        state: &VaultState,
        now: u64,
    ) -> Option<vault_core::Result<(Vec<LogEntry>, VaultState)>> {
        if state.head() == self.on && now.abs_diff(self.at) <= BUILT_AHEAD_FOR {
            self.built.take()
        } else {
            None
        }
    }
}

/// Adds one new record of `len` bytes to `collection` whose payload is
/// sealed elsewhere (the web app's worker, which holds no other secret):
/// pulls, plans the version ([`VaultState::plan_record`]), has `seal`
/// seal the plan's job (its bytes, [`vault_core::PayloadJob::to_bytes`],
/// and the ciphertext length it must produce) and return where the
/// ciphertext can be read (in memory, or a file larger than memory) with
/// its hash, then uploads it a chunk at a time and appends the version
/// through [`sync::push_sealed`], finished on whatever head the append
/// meets ([`VaultState::finish_record`]: the current epoch's key, the
/// writer's right checked again). Returns the new version's metadata.
#[allow(clippy::too_many_arguments)] // the record's place and content, and the sealer
pub async fn add_sealed_elsewhere<S, U, F, Fut, E>(
    store: &mut S,
    client: &RelayClient,
    secret: &Arc<SecretIdentity>,
    vault: &VaultId,
    collection: &CollectionId,
    info: &RecordInfo,
    len: u64,
    seal: F,
) -> std::result::Result<RecordMetadata, E>
where
    S: Store + ?Sized,
    U: UploadSource,
    F: FnOnce(Zeroizing<Vec<u8>>, u64) -> Fut,
    Fut: Future<Output = std::result::Result<(U, [u8; 32]), E>>,
    E: From<ClientError>,
{
    let state = sync::pull(store, client, vault).await?;
    let plan = state
        .plan_record(
            &Keyring::new(secret, client.now()),
            collection,
            RecordTarget::New(RecordId::random()),
            info,
            len,
        )
        .map_err(ClientError::from)?;
    drop(state);
    let (mut ciphertext, hash) = seal(plan.job().to_bytes(), plan.job().ciphertext_len()).await?;
    let (_, metadata) = sync::push_sealed(store, client, vault, &mut ciphertext, |state| {
        let mut keyring = Keyring::new(secret, client.now());
        Ok(state.finish_record(&mut keyring, &plan, hash)?)
    })
    .await?;
    Ok(metadata)
}

/// The records among `ids` whose data key does not unwrap for `me` (at
/// `now`) although `me` may read them: sealed wrongly by their writer (a
/// faulty or malicious member). Each with the author of its current version
/// from the verified log, so the patient sees who wrote it. Records this
/// holder may not read are not listed.
pub fn unopenable(
    state: &VaultState,
    me: &SecretIdentity,
    now: u64,
    ids: &[RecordId],
) -> Vec<(RecordId, vault_core::Fingerprint)> {
    let mut keyring = Keyring::new(me, now);
    ids.iter()
        .filter_map(|id| {
            let verified = state.record(id).ok()?;
            match keyring.check_key(state, &verified) {
                Err(vault_core::Error::DecryptionFailed) => {
                    Some((*id, verified.metadata().author()))
                }
                _ => None,
            }
        })
        .collect()
}

/// Deletes `record` in `vault` as the client's identity, and with `purge`
/// destroys every version of it for good ([`deletion`]). Returns the
/// vault's new state.
pub async fn delete<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    record: &RecordId,
    purge: bool,
) -> Result<VaultState> {
    let me = client.identity().clone();
    sync::push_with_retry(store, client, vault, |state| {
        Ok(deletion(state, &me, record, purge, client.now())?)
    })
    .await
}

/// Destroys every version of `record` but the current one for good, as the
/// vault's owner (`VaultState::purge_record`). Returns the vault's new
/// state.
pub async fn purge<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    record: &RecordId,
) -> Result<VaultState> {
    let me = client.identity().clone();
    sync::push_with_retry(store, client, vault, |state| {
        Ok(vec![state.purge_record(&me, record, client.now())?])
    })
    .await
}

/// The entries deleting `record`, and with `purge` also destroying every
/// version of it for good (`docs/format.md` §8.7: relays and devices delete
/// the ciphertext; nobody, the owner included, can fetch it again). Purging
/// is the owner's alone.
pub fn deletion(
    state: &VaultState,
    author: &SecretIdentity,
    record: &RecordId,
    purge: bool,
    now: u64,
) -> vault_core::Result<Vec<LogEntry>> {
    let delete = state.delete_record(author, record, now)?;
    if !purge {
        return Ok(vec![delete]);
    }
    let mut next = state.clone();
    next.apply(&delete)?;
    let purge = next.purge_record(author, record, now)?;
    Ok(vec![delete, purge])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_skips_what_the_vault_holds_and_repeats() {
        let bundle = br#"{"resourceType":"Bundle","type":"collection","entry":[
            {"resource":{"resourceType":"Observation","id":"a","status":"final","code":{"text":"HbA1c"},"category":[{"coding":[{"code":"laboratory"}]}]}},
            {"resource":{"resourceType":"Observation","id":"a","status":"final","code":{"text":"HbA1c"}}},
            {"resource":{"resourceType":"Condition","id":"c","code":{"text":"Asthma"}}},
            {"resource":{"resourceType":"Immunization","id":"i","vaccineCode":{"text":"Flu"}}}
        ]}"#;
        let resources = vault_fhir::split_bundle(bundle).unwrap_or_default();
        assert_eq!(resources.len(), 4);
        let existing = BTreeSet::from([("Immunization".to_owned(), "i".to_owned())]);
        let plan = FhirImport::plan(resources, existing);
        // The repeated Observation and the Immunization the vault has.
        assert_eq!(plan.skipped, 2);
        assert_eq!(plan.fresh.len(), 2);
        assert_eq!(plan.per_collection.values().sum::<usize>(), 2);
        let names = plan.collection_names();
        assert_eq!(names.len(), 2);
        // Records need every collection to exist.
        let mut collections: BTreeMap<String, CollectionId> = BTreeMap::new();
        assert!(plan.records(&collections, 7).is_err());
        for n in &names {
            collections.insert((*n).to_owned(), CollectionId::random());
        }
        let records = plan.records(&collections, 7).unwrap_or_default();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.info.created_at == 7));
        assert_eq!(
            vault_fhir::resource_key(&records[0].info.content_type),
            Some(("Observation".to_owned(), "a".to_owned()))
        );
    }

    /// Entries built while a chunk uploads are used only on the head they
    /// were built on, soon after, and only once; after another writer's
    /// entry, or too long after, they are built again.
    #[cfg(not(target_arch = "wasm32"))]
    #[tokio::test]
    async fn entries_built_ahead_are_used_only_on_their_own_head() {
        use crate::test_support::{identity, NOW};
        let owner = Arc::new(identity(1, "Owner", vault_core::Role::Patient));
        let (mut state, _) = VaultState::create(&owner, NOW).unwrap();
        let (coll, e) = state.create_collection(&owner, "all", NOW).unwrap();
        state.apply(&e).unwrap();
        let mut keyring = Keyring::new(&owner, NOW);
        let info = RecordInfo {
            content_type: "text/plain".into(),
            title: "Note".into(),
            created_at: NOW,
            effective_at: None,
        };
        let (metadata, _) = state
            .put_record_to(
                &mut keyring,
                &coll,
                RecordTarget::New(RecordId::random()),
                &info,
                vault_core::RecordBody::new(&b"note"[..], 4),
                Vec::new(),
            )
            .unwrap();
        let mut ahead = BuiltAhead::build(state.clone(), Arc::clone(&owner), vec![metadata], NOW)
            .await
            .unwrap();
        assert_eq!(ahead.on, state.head());

        // Another writer's entry moved the head: build again.
        let (_, moved) = state.create_collection(&owner, "labs", NOW).unwrap();
        let mut elsewhere = state.clone();
        elsewhere.apply(&moved).unwrap();
        assert!(ahead.take_for(&elsewhere, NOW).is_none());
        // Too long after (or, the clock corrected, before) their time.
        for later in [NOW + BUILT_AHEAD_FOR + 1, NOW - BUILT_AHEAD_FOR - 1] {
            assert!(ahead.take_for(&state, later).is_none());
        }

        // On its own head, in time: the entries, which lead on from it, once.
        let (entries, next) = ahead
            .take_for(&state, NOW + BUILT_AHEAD_FOR)
            .unwrap()
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].prev(), &state.head().head);
        assert_eq!(next.head().seq, state.head().seq + 1);
        assert!(ahead.take_for(&state, NOW).is_none());
    }

    /// vault-core's export and vault-fhir each know the FHIR content type
    /// (vault-core does not depend on vault-fhir): the records an import
    /// writes must be the ones an export gathers into its FHIR bundle.
    #[test]
    fn the_export_recognises_imported_fhir_records() {
        use vault_core::export;
        assert_eq!(export::FHIR_CONTENT_TYPE, vault_fhir::FHIR_CONTENT_TYPE);
        let imported = vault_fhir::content_type("Observation", Some("a"));
        assert!(export::is_fhir(&imported));
        assert_eq!(export::extension(&imported), "json");
        for ct in [
            imported.as_str(),
            "application/fhir+json",
            " application/fhir+json ; resourceType=Patient",
            "application/json",
            "fhir+Observation",
            "application/fhir+jsonx",
            "",
        ] {
            assert_eq!(export::is_fhir(ct), vault_fhir::is_fhir(ct), "{ct:?}");
        }
    }
}
