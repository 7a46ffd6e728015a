//! The filing half: pulled resources into a vault the caller can read and
//! write, as `vault import` files them (one record per resource, sorted
//! into collections by category), with changed resources as new versions
//! of their records, and the per-source cursor kept as an encrypted record
//! in the vault (`docs/decisions/0047-fhir-pull.md`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ring::digest;
use serde::{Deserialize, Serialize};
use vault_core::store::Store;
use vault_core::{
    CollectionId, Keyring, RecordId, RecordInfo, RecordTarget, SecretIdentity, VaultId, VaultState,
};

use super::{
    Credentials, Cursor, FhirPull, FhirPullError, FhirSource, Mode, PullOptions, PullProgress,
};
use crate::reading::Listing;
use crate::records::{add_records, ensure_collections, NewRecord};
use crate::{sync, ClientError, RelayClient};

/// The collection that holds the pull cursors (created on the first pull).
pub const SOURCES_COLLECTION: &str = "pull-sources";

/// The content type of a cursor record.
pub const CURSOR_CONTENT_TYPE: &str = "application/vnd.vault.fhir-pull-cursor+json";

/// Largest cursor record read.
const MAX_CURSOR_BODY: u64 = 64 * 1024;

/// A FHIR resource the vault holds: its record and what identifies its
/// version.
#[derive(Clone, Debug)]
struct Held {
    record: RecordId,
    collection: CollectionId,
    version_id: Option<String>,
    last_updated: Option<String>,
    digest: [u8; 32],
}

/// What the vault already holds, by (resource type, id): the FHIR records
/// the caller could open, with each current version's `meta.versionId`,
/// `meta.lastUpdated` and a digest of its body.
#[derive(Debug, Default)]
pub struct Holdings {
    by_key: HashMap<(String, String), Held>,
    /// FHIR records whose body was not kept (larger than
    /// [`crate::reading::KEEP_FHIR_BODY`]): recognised, never updated.
    opaque: HashMap<(String, String), RecordId>,
}

/// What to do with one pulled resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Not in the vault: a new record.
    New,
    /// In the vault as `record`, and the pulled one is newer: a new
    /// version of that record (in its collection).
    NewVersion {
        /// The record.
        record: RecordId,
        /// Its collection.
        collection: CollectionId,
    },
    /// In the vault already, same or older version: nothing to do.
    Unchanged,
}

/// The digest a resource's body is compared by: SHA-256 of its compact
/// JSON (keys sorted, as [`vault_fhir::Resource::json`] holds it), so the
/// same resource served twice has the same digest.
pub fn resource_digest(b: &[u8]) -> [u8; 32] {
    sha256(b)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, b).as_ref());
    out
}

/// `meta.versionId` and `meta.lastUpdated` of a resource's JSON.
pub fn meta_of(json: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return (None, None);
    };
    let meta = v.get("meta");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(|x| x.as_str())
            .map(str::to_owned)
    };
    (field("versionId"), field("lastUpdated"))
}

impl Holdings {
    /// The FHIR records of a listing opened with FHIR bodies kept
    /// (`reading::open_listing(…, keep_fhir = true)`).
    pub fn from_listing(listing: &Listing) -> Self {
        let mut h = Holdings::default();
        for l in &listing.opened {
            let Some(key) = vault_fhir::resource_key(&l.opened.info.content_type) else {
                continue;
            };
            match &l.body {
                Some(body) => {
                    let (version_id, last_updated) = meta_of(body);
                    h.by_key.insert(
                        key,
                        Held {
                            record: l.summary.id,
                            collection: l.summary.collection,
                            version_id,
                            last_updated,
                            digest: sha256(body),
                        },
                    );
                }
                None => {
                    h.opaque.insert(key, l.summary.id);
                }
            }
        }
        h
    }

    /// How many FHIR resources the vault holds.
    pub fn len(&self) -> usize {
        self.by_key.len() + self.opaque.len()
    }

    /// Whether the vault holds no FHIR resource.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What to do with `r`: new, a new version of the record holding the
    /// same type and id (when the pulled `meta.versionId` is higher, or
    /// else its `meta.lastUpdated` later, or, with neither to compare, the
    /// content differs), or nothing.
    pub fn classify(&self, r: &vault_fhir::Resource) -> Disposition {
        let Some(id) = &r.id else {
            return Disposition::New;
        };
        let key = (r.resource_type.clone(), id.clone());
        if self.opaque.contains_key(&key) {
            return Disposition::Unchanged;
        }
        let Some(held) = self.by_key.get(&key) else {
            return Disposition::New;
        };
        if held.digest == sha256(&r.json) {
            return Disposition::Unchanged;
        }
        let (version_id, last_updated) = meta_of(&r.json);
        if is_newer(
            (version_id.as_deref(), last_updated.as_deref()),
            (held.version_id.as_deref(), held.last_updated.as_deref()),
        ) {
            Disposition::NewVersion {
                record: held.record,
                collection: held.collection,
            }
        } else {
            Disposition::Unchanged
        }
    }

    fn note(&mut self, r: &vault_fhir::Resource, record: RecordId, collection: CollectionId) {
        let Some(id) = &r.id else {
            return;
        };
        let (version_id, last_updated) = meta_of(&r.json);
        self.by_key.insert(
            (r.resource_type.clone(), id.clone()),
            Held {
                record,
                collection,
                version_id,
                last_updated,
                digest: sha256(&r.json),
            },
        );
    }
}

/// Whether a pulled version (versionId, lastUpdated) is newer than the
/// held one: a larger numeric `versionId`, or else a later `lastUpdated`.
/// Differing content is assumed newer only when neither side carries
/// anything to compare (compare digests first: [`resource_digest`]).
pub fn is_newer(pulled: (Option<&str>, Option<&str>), held: (Option<&str>, Option<&str>)) -> bool {
    if let (Some(p), Some(h)) = (pulled.0, held.0) {
        if let (Ok(p), Ok(h)) = (p.parse::<u64>(), h.parse::<u64>()) {
            return p > h;
        }
        if p == h {
            return false;
        }
    }
    if let (Some(p), Some(h)) = (pulled.1, held.1) {
        return match (vault_fhir::parse_date(p), vault_fhir::parse_date(h)) {
            (Some(pt), Some(ht)) if pt != ht => pt > ht,
            // Same second (or unparsable): the same server writes the
            // same format, so the text orders the fractions.
            _ => p > h,
        };
    }
    pulled == (None, None) && held == (None, None)
}

/// What filing did so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Filed {
    /// New records.
    pub added: usize,
    /// New versions of records the vault held.
    pub updated: usize,
    /// Pulled resources the vault already held (same or older version, or
    /// repeated within the pull).
    pub unchanged: usize,
    /// Records added or updated per collection name.
    pub collections: BTreeMap<String, usize>,
}

/// One record to seal: new, or a new version of `replace`.
struct Item<'a> {
    collection: CollectionId,
    collection_name: String,
    replace: Option<RecordId>,
    info: RecordInfo,
    resource: &'a vault_fhir::Resource,
}

/// Files one batch of pulled resources into `vault`: new resources as new
/// records in their category's collection (created if missing, owner
/// only), newer versions as new versions of their records, the rest
/// skipped; sealed, uploaded and appended in chunks of at most
/// [`crate::records::RECORDS_PER_APPEND`] (compare-and-swap, rebuilt on a moved head).
/// `holdings` learns what was filed, so a resource repeated later in the
/// pull is skipped. Returns the vault's state afterwards.
///
/// # Errors
///
/// [`ClientError`] from the relay or vault-core; what earlier chunks
/// appended stays, and running the pull again skips it.
#[allow(clippy::too_many_arguments)]
pub async fn file_batch<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    secret: &Arc<SecretIdentity>,
    vault: &VaultId,
    holdings: &mut Holdings,
    resources: &[vault_fhir::Resource],
    filed: &mut Filed,
) -> Result<Option<VaultState>, ClientError> {
    let mut plan: Vec<(&vault_fhir::Resource, Disposition)> = Vec::new();
    let mut in_batch = std::collections::HashSet::new();
    for r in resources {
        if let Some(id) = &r.id {
            if !in_batch.insert((r.resource_type.clone(), id.clone())) {
                filed.unchanged += 1;
                continue;
            }
        }
        match holdings.classify(r) {
            Disposition::Unchanged => filed.unchanged += 1,
            d => plan.push((r, d)),
        }
    }
    if plan.is_empty() {
        return Ok(None);
    }
    let mut names: Vec<&str> = plan
        .iter()
        .filter(|(_, d)| *d == Disposition::New)
        .map(|(r, _)| r.category.collection_name())
        .collect();
    names.sort_unstable();
    names.dedup();
    let collections = ensure_collections(store, client, secret, vault, &names).await?;
    let state = collections.state;
    let names_by_id: HashMap<CollectionId, String> = collections
        .by_name
        .iter()
        .map(|(n, id)| (*id, n.clone()))
        .collect();
    let now = client.now();
    let mut items = Vec::with_capacity(plan.len());
    for (r, d) in &plan {
        let (collection, replace) = match d {
            Disposition::NewVersion { record, collection } => (*collection, Some(*record)),
            _ => {
                let name = r.category.collection_name();
                let id = *collections.by_name.get(name).ok_or_else(|| {
                    ClientError::Core(vault_core::Error::Missing {
                        what: format!("collection {name:?}"),
                    })
                })?;
                (id, None)
            }
        };
        items.push(Item {
            collection,
            collection_name: names_by_id
                .get(&collection)
                .cloned()
                .unwrap_or_else(|| r.category.collection_name().to_owned()),
            replace,
            info: RecordInfo {
                content_type: vault_fhir::content_type(&r.resource_type, r.id.as_deref()),
                title: r.title.clone(),
                created_at: now,
                effective_at: r.effective_at,
            },
            resource: r,
        });
    }
    // Sealed, uploaded and appended in chunks, as `vault import` does.
    let records: Vec<NewRecord> = items
        .iter()
        .map(|i| NewRecord {
            target: i.replace.map(RecordTarget::Next),
            collection: i.collection,
            info: i.info.clone(),
            body: i.resource.json.clone(),
        })
        .collect();
    let (state, ids) = add_records(store, client, secret, state, &records, |_| {}).await?;
    for (item, id) in items.iter().zip(ids) {
        holdings.note(item.resource, id, item.collection);
        if item.replace.is_some() {
            filed.updated += 1;
        } else {
            filed.added += 1;
        }
        *filed
            .collections
            .entry(item.collection_name.clone())
            .or_default() += 1;
    }
    Ok(Some(state))
}

/// The body of a cursor record: one source, and where its next pull
/// starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRecord {
    /// The FHIR base URL (without the trailing `/`).
    pub base: String,
    /// The patient's id on that server.
    pub patient: String,
    /// Ask for changes since this instant next time.
    pub since: Cursor,
    /// When the pull that wrote it ran (Unix seconds, this device's clock).
    pub pulled_at: u64,
}

/// A cursor found in the vault.
#[derive(Clone, Debug)]
pub struct SavedCursor {
    /// Its record.
    pub record: RecordId,
    /// What it says.
    pub cursor: CursorRecord,
}

/// The cursor record for `source` among a listing's records, opened from
/// the store (the listing's records' ciphertext is on the device). With
/// several (two devices that pulled at once), the newest pull's.
///
/// # Errors
///
/// A store failure; a cursor record that does not open or parse is
/// ignored.
pub fn find_cursor<S: Store + ?Sized>(
    store: &S,
    state: &VaultState,
    me: &SecretIdentity,
    now: u64,
    listing: &Listing,
    source: &FhirSource,
) -> Result<Option<SavedCursor>, ClientError> {
    let mut keyring = Keyring::new(me, now);
    let mut best: Option<SavedCursor> = None;
    for l in &listing.opened {
        if l.opened.info.content_type != CURSOR_CONTENT_TYPE || l.opened.body_len > MAX_CURSOR_BODY
        {
            continue;
        }
        let mut body = Vec::new();
        if crate::reading::open_stored(store, state, &mut keyring, &l.summary.id, &mut body)
            .is_err()
        {
            continue;
        }
        let Ok(cursor) = serde_json::from_slice::<CursorRecord>(&body) else {
            continue;
        };
        if cursor.base != source.base_text() || cursor.patient != source.patient() {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|b| cursor.pulled_at > b.cursor.pulled_at)
        {
            best = Some(SavedCursor {
                record: l.summary.id,
                cursor,
            });
        }
    }
    Ok(best)
}

/// Saves `cursor` for its source: a new version of `previous` (in its
/// collection), or a new record in [`SOURCES_COLLECTION`].
pub async fn save_cursor<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    secret: &Arc<SecretIdentity>,
    vault: &VaultId,
    previous: Option<RecordId>,
    cursor: &CursorRecord,
) -> Result<VaultState, ClientError> {
    let body = serde_json::to_vec(cursor)
        .map_err(|e| ClientError::Protocol(format!("cannot encode the cursor: {e}")))?;
    let info = RecordInfo {
        content_type: CURSOR_CONTENT_TYPE.to_owned(),
        title: vault_fhir::clean(&format!(
            "FHIR pull cursor: Patient/{} at {}",
            cursor.patient, cursor.base
        ))
        .chars()
        .take(vault_fhir::MAX_TITLE_CHARS)
        .collect(),
        created_at: client.now(),
        effective_at: None,
    };
    let (state, collection) = match previous {
        Some(record) => {
            let state = sync::pull(store, client, vault).await?;
            let collection = state.record(&record)?.metadata().collection();
            (state, collection)
        }
        None => {
            let c = ensure_collections(store, client, secret, vault, &[SOURCES_COLLECTION]).await?;
            let id = *c.by_name.get(SOURCES_COLLECTION).ok_or_else(|| {
                ClientError::Core(vault_core::Error::Missing {
                    what: format!("collection {SOURCES_COLLECTION:?}"),
                })
            })?;
            (c.state, id)
        }
    };
    let record = NewRecord {
        target: previous.map(RecordTarget::Next),
        collection,
        info,
        body,
    };
    let (state, _) = add_records(store, client, secret, state, &[record], |_| {}).await?;
    Ok(state)
}

/// A pull into a vault failed: fetching, or filing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultPullError {
    /// The FHIR server side.
    #[error(transparent)]
    Fhir(#[from] FhirPullError),
    /// The vault side (relay, verification, store).
    #[error(transparent)]
    Vault(#[from] ClientError),
}

/// Progress of a pull into a vault.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum VaultPullProgress {
    /// The fetching half.
    Fetch(PullProgress),
    /// A batch was filed; the totals so far.
    Filed {
        /// Resources fetched so far.
        fetched: u64,
        /// New records so far.
        added: usize,
        /// New versions so far.
        updated: usize,
        /// Skipped so far.
        unchanged: usize,
    },
}

/// What a pull into a vault did.
#[derive(Clone, Debug, Serialize)]
pub struct PullReport {
    /// The FHIR base URL.
    pub source: String,
    /// The patient's id there.
    pub patient: String,
    /// `everything` or `bulk`.
    pub mode: Mode,
    /// The `_since` asked (`None`: everything).
    pub since: Option<String>,
    /// Resources the server sent for this patient.
    pub fetched: u64,
    /// What was filed.
    #[serde(flatten)]
    pub filed: Filed,
    /// The cursor the next pull starts from (`None`: no cursor yet).
    pub cursor: Option<String>,
    /// Whether this pull saved a new cursor in the vault.
    pub cursor_saved: bool,
    /// The vault's checkpoint code afterwards.
    pub checkpoint: String,
}

/// Pulls `source` into `vault`: fetches ([`FhirPull`]) and files each
/// batch as it arrives ([`file_batch`]), then saves the new cursor if
/// anything was filed (or there was none), so running the same pull again
/// adds nothing. `holdings` and `saved` come from a listing of the vault
/// the caller made (its ciphertext downloaded by the presenter); `full`
/// ignores the saved cursor (everything is fetched again, and still only
/// what changed is filed).
///
/// # Errors
///
/// [`VaultPullError`]; what was filed before the error stays in the vault
/// and the cursor is not moved, so the same pull resumes.
#[allow(clippy::too_many_arguments)]
pub async fn pull_into_vault<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    secret: &Arc<SecretIdentity>,
    vault: &VaultId,
    mut holdings: Holdings,
    saved: Option<SavedCursor>,
    full: bool,
    source: FhirSource,
    credentials: Credentials,
    mut options: PullOptions,
    progress: &mut dyn FnMut(VaultPullProgress),
) -> Result<PullReport, VaultPullError> {
    if options.since.is_none() && !full {
        options.since = saved.as_ref().map(|s| s.cursor.since.clone());
    }
    let since = options.since.as_ref().map(|c| c.as_str().to_owned());
    let mode = options.mode;
    let mut pull = FhirPull::start(source.clone(), credentials, options, &mut |p| {
        progress(VaultPullProgress::Fetch(p))
    })
    .await?;
    let mut filed = Filed::default();
    let mut state = None;
    while let Some(batch) = pull
        .next_batch(&mut |p| progress(VaultPullProgress::Fetch(p)))
        .await?
    {
        if let Some(s) = file_batch(
            store,
            client,
            secret,
            vault,
            &mut holdings,
            &batch,
            &mut filed,
        )
        .await?
        {
            state = Some(s);
        }
        progress(VaultPullProgress::Filed {
            fetched: pull.yielded(),
            added: filed.added,
            updated: filed.updated,
            unchanged: filed.unchanged,
        });
    }
    let new_cursor = pull.cursor();
    let changed = filed.added + filed.updated > 0;
    let mut cursor_saved = false;
    let mut cursor = saved.as_ref().map(|s| s.cursor.since.clone());
    if let Some(c) = new_cursor {
        let differs = cursor.as_ref() != Some(&c);
        if differs && (changed || saved.is_none()) {
            let record = CursorRecord {
                base: source.base_text(),
                patient: source.patient().to_owned(),
                since: c.clone(),
                pulled_at: crate::platform::unix_now(),
            };
            state = Some(
                save_cursor(
                    store,
                    client,
                    secret,
                    vault,
                    saved.as_ref().map(|s| s.record),
                    &record,
                )
                .await?,
            );
            cursor = Some(c);
            cursor_saved = true;
        }
    }
    let state = match state {
        Some(s) => s,
        None => sync::pull(store, client, vault).await?,
    };
    Ok(PullReport {
        source: source.base_text(),
        patient: source.patient().to_owned(),
        mode,
        since,
        fetched: pull.yielded(),
        filed,
        cursor: cursor.map(|c| c.as_str().to_owned()),
        cursor_saved,
        checkpoint: state.head().code(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(json: &str) -> vault_fhir::Resource {
        vault_fhir::split_bundle(json.as_bytes())
            .unwrap()
            .pop()
            .unwrap()
    }

    #[test]
    fn versions_decide_what_is_newer() {
        assert!(is_newer((Some("2"), None), (Some("1"), None)));
        assert!(!is_newer((Some("1"), None), (Some("2"), None)));
        assert!(!is_newer((Some("10"), None), (Some("10"), None)));
        assert!(is_newer(
            (Some("b"), Some("2026-01-02T00:00:00Z")),
            (Some("a"), Some("2026-01-01T00:00:00Z"))
        ));
        assert!(is_newer(
            (None, Some("2026-01-01T00:00:00.200Z")),
            (None, Some("2026-01-01T00:00:00.100Z"))
        ));
        assert!(!is_newer(
            (None, Some("2025-01-01T00:00:00Z")),
            (None, Some("2026-01-01T00:00:00Z"))
        ));
        // Nothing to compare: different content is the server's newer state.
        assert!(is_newer((None, None), (None, None)));
        // One side has a version, the other not: not provably newer.
        assert!(!is_newer((Some("2"), None), (None, None)));
    }

    #[test]
    fn holdings_classify_new_changed_and_same() {
        let v1 = resource(
            r#"{"resourceType":"Observation","id":"o1","meta":{"versionId":"1"},"status":"final"}"#,
        );
        let v2 = resource(
            r#"{"resourceType":"Observation","id":"o1","meta":{"versionId":"2"},"status":"amended"}"#,
        );
        let other = resource(r#"{"resourceType":"Observation","id":"o2"}"#);
        let mut h = Holdings::default();
        let record = RecordId::random();
        let collection = CollectionId::random();
        h.note(&v1, record, collection);
        assert_eq!(h.classify(&v1), Disposition::Unchanged);
        assert_eq!(
            h.classify(&v2),
            Disposition::NewVersion { record, collection }
        );
        assert_eq!(h.classify(&other), Disposition::New);
        h.note(&v2, record, collection);
        // The older version pulled again is not filed over the newer.
        assert_eq!(h.classify(&v1), Disposition::Unchanged);
    }
}
