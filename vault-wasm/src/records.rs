//! Records in the browser: listing (ciphertext fetched concurrently, every
//! record authenticated before anything of it is shown), opening, adding
//! files and importing FHIR bundles.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use vault_client::reading::{self, Listed, Listing};
use vault_client::records::{
    add_records, add_sealed_elsewhere, ensure_collections, fetch_small_blobs, missing_blobs,
    FhirImport, LIST_FETCH_LIMIT,
};
use vault_client::{sync, DownloadSink, UploadSource, Written};
use vault_core::store::Store;
use vault_core::{CollectionId, RecordId, RecordInfo, VaultId, VaultState};
use vault_fhir as fhir;
use wasm_bindgen::{JsCast, JsValue};

use crate::failure::{Failure, Result};
use crate::progress::Progress;
use crate::unlocked::Inner;
use crate::view;
use crate::worker;

/// Downloads (concurrently, hash-checked) the ciphertext of `records` that
/// the store lacks.
pub(crate) async fn ensure_blobs(
    s: &mut Inner,
    state: &VaultState,
    records: &[RecordId],
) -> Result<()> {
    let missing = missing_blobs(&s.store, state, records)?;
    fetch_small_blobs(&mut s.store, &s.client, &missing, || {}).await?;
    Ok(())
}

/// Opens every record the caller can read (optionally of one collection),
/// fetching missing ciphertext first except for records over
/// [`vault_client::records::LIST_FETCH_LIMIT`].
pub(crate) async fn open_readable(
    s: &mut Inner,
    state: &VaultState,
    collection: Option<&CollectionId>,
) -> Result<Listing> {
    let me = s.secret.clone();
    let plan = reading::plan_listing(
        &s.store,
        state,
        &me.fingerprint(),
        s.client.now(),
        collection,
    )?;
    ensure_blobs(s, state, &plan.ids()).await?;
    Ok(reading::open_listing(
        &s.store,
        state,
        &me,
        s.client.now(),
        plan,
        true,
    )?)
}

/// The JSON the page shows for one record.
fn record_view(
    state: &VaultState,
    names: &BTreeMap<CollectionId, String>,
    me: &vault_core::Fingerprint,
    listed: &Listed,
    json: Option<&Value>,
) -> Value {
    let info = &listed.opened.info;
    let summary: Vec<Value> = json
        .map(|v| {
            fhir::summary(v)
                .into_iter()
                .map(|(k, v)| json!([fhir::clean(&k), fhir::clean(&v)]))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "id": listed.summary.id.to_hex(),
        "collection": listed.summary.collection.to_hex(),
        "collectionName": names.get(&listed.summary.collection).cloned().unwrap_or_default(),
        "version": listed.opened.version,
        "title": fhir::clean(&info.title),
        "contentType": fhir::clean(&info.content_type),
        "resourceType": fhir::resource_type_of(&info.content_type),
        "createdAt": info.created_at,
        "effectiveAt": info.effective_at,
        "author": view::author(
            state,
            &listed.opened.author,
            me,
            &listed.summary.collection,
            listed.summary.seq,
        ),
        "bodyLen": listed.opened.body_len,
        "ciphertextLen": listed.summary.ciphertext_len,
        "downloaded": true,
        "summary": summary,
    })
}

/// Lists the readable records (JSON `{records, failed, health}`), newest
/// first; `health` is the vault's health overview
/// ([`vault_fhir::health::overview`]) when no collection is chosen.
pub async fn list(
    s: &mut Inner,
    vault: &VaultId,
    collection: Option<&CollectionId>,
) -> Result<Value> {
    s.publish().await?;
    let state = sync::pull(&mut s.store, &s.client, vault).await?;
    let listing = open_readable(s, &state, collection).await?;
    let secret = s.secret.clone();
    let names = reading::names_by_id(&state, &secret, s.client.now());
    let me = secret.fingerprint();
    // Each kept body parsed once, for its summary and for the overview.
    let parsed: Vec<Option<Value>> = listing
        .opened
        .iter()
        .map(|l| serde_json::from_slice(l.body.as_deref()?).ok())
        .collect();
    let mut records: Vec<Value> = listing
        .opened
        .iter()
        .zip(&parsed)
        .map(|(l, v)| record_view(&state, &names, &me, l, v.as_ref()))
        .collect();
    for r in &listing.not_downloaded {
        records.push(json!({
            "id": r.id.to_hex(),
            "collection": r.collection.to_hex(),
            "collectionName": names.get(&r.collection).cloned().unwrap_or_default(),
            "version": r.version,
            "title": "Large file (not downloaded yet)",
            "contentType": "application/octet-stream",
            "resourceType": null,
            "createdAt": 0,
            "effectiveAt": null,
            "author": view::author(&state, &r.author, &me, &r.collection, r.seq),
            "bodyLen": null,
            "ciphertextLen": r.ciphertext_len,
            "downloaded": false,
            "summary": [],
        }));
    }
    let failed: Vec<Value> = listing
        .failed
        .into_iter()
        .map(|(r, e)| {
            let f = Failure::from(e);
            json!({"id": r.id.to_hex(), "code": f.code, "message": f.message})
        })
        .collect();
    // The health overview, over the whole vault (not one collection).
    let health = if collection.is_none() {
        let resources: Vec<(String, &Value)> = listing
            .opened
            .iter()
            .zip(&parsed)
            .filter(|(l, _)| fhir::is_fhir(&l.opened.info.content_type))
            .filter_map(|(l, v)| Some((l.summary.id.to_hex(), v.as_ref()?)))
            .collect();
        fhir::health::overview(resources.iter().map(|(id, v)| (id.as_str(), *v)))
    } else {
        Value::Null
    };
    Ok(json!({ "records": records, "failed": failed, "health": health }))
}

/// Deletes a record, and with `purge` destroys every version of it for
/// good (owner only): the relay and this device delete the ciphertext.
pub async fn delete(
    s: &mut Inner,
    vault: &VaultId,
    record: &RecordId,
    purge: bool,
) -> Result<serde_json::Value> {
    s.publish().await?;
    let state =
        vault_client::records::delete(&mut s.store, &s.client, vault, record, purge).await?;
    Ok(serde_json::json!({
        "deleted": record.to_hex(),
        "purgedVersions": state.purged_ciphertexts(record).len(),
    }))
}

/// Decrypts one record the caller can read. Records larger than a listing
/// fetches ([`vault_client::records::LIST_FETCH_LIMIT`]) and not stored
/// are downloaded and opened by `opener(job, ciphertext)` (the worker: the
/// page stays responsive): into the spool `spooler(len)` makes (a promise
/// of `{write(bytes), close()}`, or null: the page decides, spooling
/// records over 64 MiB, decision 64; the worker then opens them from disk
/// into a second file), else into JavaScript memory. The others are
/// opened here from the store. Resolves to the body: a `Uint8Array`, or a
/// `Blob` on the browser's disk for a spooled record.
pub async fn open(
    s: &mut Inner,
    vault: &VaultId,
    record: &RecordId,
    opener: Option<&js_sys::Function>,
    spooler: Option<&js_sys::Function>,
) -> Result<JsValue> {
    s.publish().await?;
    let state = sync::pull(&mut s.store, &s.client, vault).await?;
    reading::check_readable(&state, &s.secret.fingerprint(), s.client.now(), record)?;
    let verified = state.record(record)?;
    let m = verified.metadata();
    let (hash, len) = (*m.ciphertext_hash(), m.ciphertext_len());
    let elsewhere = opener.filter(|_| len > LIST_FETCH_LIMIT);
    if let Some(opener) = elsewhere.filter(|_| !s.store.has_blob(&hash).unwrap_or(false)) {
        let spool = match spooler {
            Some(spooler) => settle(spooler.call1(&JsValue::NULL, &JsValue::from_f64(len as f64)))
                .await
                .map_err(|e| worker::elsewhere_failure(&e, "making room for the download"))?,
            None => JsValue::NULL,
        };
        if !spool.is_null() && !spool.is_undefined() {
            let mut sink = SpoolSink::new(spool.clone());
            let downloaded =
                reading::download_for_opening(&s.client, &state, &s.secret, record, &mut sink)
                    .await
                    .map_err(Failure::from);
            let job = sink.thrown.or(downloaded)?;
            let closed = sink.call("close", None).await.map_err(Failure::from);
            sink.thrown.or(closed)?;
            return worker::open_elsewhere(opener, &job, &spool).await;
        }
        let ciphertext = js_sys::Uint8Array::new_with_length(worker::js_len(len, "this record")?);
        let job = reading::download_for_opening(
            &s.client,
            &state,
            &s.secret,
            record,
            &mut Written(worker::JsBuffer::new(&ciphertext)),
        )
        .await?;
        return worker::open_elsewhere(opener, &job, &ciphertext.into()).await;
    }
    let mut body = Vec::new();
    reading::fetch_and_open(
        &mut s.store,
        &s.client,
        &state,
        &s.secret,
        record,
        &mut body,
    )
    .await?;
    Ok(js_sys::Uint8Array::from(body.as_slice()).into())
}

/// How much of a download is written to the spool at a time.
const SPOOL_WRITE: usize = 4 << 20;

/// A download's sink when the page spools it: the JS spool object
/// `{write(bytes), close()}` (`web/src/payloads.ts`), written
/// [`SPOOL_WRITE`] bytes at a time. The first failure the spool threw is
/// kept with its code (`storage_full` for a full disk), which the download
/// sees only as an I/O error.
struct SpoolSink {
    spool: JsValue,
    pending: Vec<u8>,
    thrown: worker::Thrown,
}

impl SpoolSink {
    fn new(spool: JsValue) -> Self {
        Self {
            spool,
            pending: Vec::new(),
            thrown: worker::Thrown::default(),
        }
    }

    /// Calls the spool's `method` (with `arg`) and awaits it.
    async fn call(&self, method: &str, arg: Option<&JsValue>) -> std::io::Result<()> {
        let f: js_sys::Function = js_sys::Reflect::get(&self.spool, &JsValue::from_str(method))
            .ok()
            .and_then(|f| f.dyn_into().ok())
            .ok_or_else(|| std::io::Error::other(format!("the spool has no {method}")))?;
        let called = match arg {
            Some(a) => f.call1(&self.spool, a),
            None => f.call0(&self.spool),
        };
        settle(called)
            .await
            .map(|_| ())
            .map_err(|e| self.thrown.note(&e, "downloaded record"))
    }

    async fn write_pending(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let bytes = js_sys::Uint8Array::from(self.pending.as_slice());
            self.pending.clear();
            self.call("write", Some(&bytes)).await?;
        }
        Ok(())
    }
}

impl DownloadSink for SpoolSink {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= SPOOL_WRITE {
            self.write_pending().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.write_pending().await
    }
}

/// A JS call's result, awaited if it is a promise; the thrown or rejected
/// value otherwise.
async fn settle(
    called: std::result::Result<JsValue, JsValue>,
) -> std::result::Result<JsValue, JsValue> {
    wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(&called?)).await
}

/// A file the page adds.
pub struct NewFile<'a> {
    /// The collection's name (created if missing, for the owner).
    pub collection: &'a str,
    /// The record's title.
    pub title: &'a str,
    /// Its MIME type (empty: `application/octet-stream`).
    pub content_type: &'a str,
    /// Its length in bytes.
    pub len: u64,
    /// Seals the payload: `sealer(job)` returns a promise of
    /// `{ciphertext, hash}` ([`crate::worker`]), from the worker holding
    /// the file or from [`crate::worker::seal_payload`] on the page.
    pub sealer: &'a js_sys::Function,
}

/// Plans one file's record version, has `file.sealer` seal its payload
/// (in a worker: the page stays responsive), then uploads the ciphertext
/// (resumable chunks) and appends the version, reporting progress.
pub async fn add_file(
    s: &mut Inner,
    vault: &VaultId,
    file: NewFile<'_>,
    progress: &Progress,
) -> Result<RecordId> {
    let name = file.collection.trim();
    if name.is_empty() {
        return Err(Failure::input("choose a collection"));
    }
    s.publish().await?;
    let secret = s.secret.clone();
    let found = ensure_collections(&mut s.store, &s.client, &secret, vault, &[name]).await?;
    let collection = *found
        .by_name
        .get(name)
        .ok_or_else(|| Failure::new("not_found", format!("no collection {name:?}")))?;
    let info = RecordInfo {
        content_type: if file.content_type.trim().is_empty() {
            "application/octet-stream".to_owned()
        } else {
            file.content_type.trim().to_owned()
        },
        title: fhir::clean(file.title.trim()),
        created_at: s.client.now(),
        effective_at: None,
    };
    let metadata = add_sealed_elsewhere(
        &mut s.store,
        &s.client,
        &secret,
        vault,
        &collection,
        &info,
        file.len,
        |job, ciphertext_len| async move {
            let (ciphertext, hash) =
                worker::seal_elsewhere(file.sealer, &job, ciphertext_len).await?;
            let source = SealedSource {
                ciphertext,
                progress,
            };
            Ok::<_, Failure>((source, hash))
        },
    )
    .await?;
    progress.report(file.len, file.len, "done");
    Ok(metadata.record())
}

/// The upload's source: a ciphertext sealed elsewhere, in JavaScript
/// memory or in the worker's spool file on the browser's disk (read a
/// chunk at a time, so a file larger than memory uploads); each chunk read
/// reports progress.
struct SealedSource<'a> {
    ciphertext: worker::SealedCiphertext,
    progress: &'a Progress,
}

impl UploadSource for SealedSource<'_> {
    async fn read_chunk(&mut self, start: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let end = start.saturating_add(len as u64);
        let chunk = match &self.ciphertext {
            worker::SealedCiphertext::Memory(array) => {
                let (start, end) = (js_offset(start)?, js_offset(end)?);
                if end > array.length() {
                    return Err(std::io::Error::other("read past the ciphertext's end"));
                }
                array.subarray(start, end).to_vec()
            }
            worker::SealedCiphertext::File(blob) => {
                let part = blob
                    .slice_with_f64_and_f64(start as f64, end as f64)
                    .map_err(|_| std::io::Error::other("the sealed file could not be sliced"))?;
                let bytes = wasm_bindgen_futures::JsFuture::from(part.array_buffer())
                    .await
                    .map_err(|_| {
                        std::io::Error::other(
                            "the sealed file could not be read back from the browser's storage",
                        )
                    })?;
                js_sys::Uint8Array::new(&bytes).to_vec()
            }
        };
        let total = match &self.ciphertext {
            worker::SealedCiphertext::Memory(array) => u64::from(array.length()),
            worker::SealedCiphertext::File(blob) => blob.size() as u64,
        };
        self.progress.report(end.min(total), total, "uploading");
        Ok(chunk)
    }
}

/// An offset into a JavaScript array.
fn js_offset(at: u64) -> std::io::Result<u32> {
    u32::try_from(at).map_err(|_| std::io::Error::other("an offset past the array"))
}

/// Imports a FHIR Bundle or resource; resources already in the vault (by
/// type and id) and repeats within the bundle are skipped.
pub async fn import_fhir(
    s: &mut Inner,
    vault: &VaultId,
    bytes: &[u8],
    progress: &Progress,
) -> Result<Value> {
    let resources = fhir::split_bundle(bytes)?;
    s.publish().await?;
    progress.report(0, resources.len() as u64, "checking");
    let state = sync::pull(&mut s.store, &s.client, vault).await?;
    let listing = open_readable(s, &state, None).await?;
    let existing: BTreeSet<(String, String)> = listing
        .opened
        .iter()
        .filter_map(|l| fhir::resource_key(&l.opened.info.content_type))
        .collect();
    let plan = FhirImport::plan(resources, existing);
    if !plan.fresh.is_empty() {
        let secret = s.secret.clone();
        let found = ensure_collections(
            &mut s.store,
            &s.client,
            &secret,
            vault,
            &plan.collection_names(),
        )
        .await?;
        let items = plan.records(&found.by_name, s.client.now())?;
        let count = items.len() as u64;
        let mut done = 0u64;
        progress.report(0, count, "importing");
        add_records(&mut s.store, &s.client, &secret, found.state, &items, |n| {
            done += n as u64;
            progress.report(done, count, "importing");
        })
        .await?;
    }
    Ok(json!({
        "added": plan.per_collection.values().sum::<usize>(),
        "skipped": plan.skipped,
        "collections": plan.per_collection,
    }))
}

#[cfg(all(test, target_arch = "wasm32"))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    /// A JS spool object whose writes are kept in `globalThis[key]`, or
    /// that throws `throws` from its third write on.
    fn spool(key: &str, throws: &str) -> JsValue {
        let fail = if throws.is_empty() {
            String::new()
        } else {
            format!("if (w.length >= 2) throw {throws};")
        };
        js_sys::Function::new_no_args(&format!(
            "globalThis.{key} = []; const w = globalThis.{key}; return {{ name: 'x', \
             write: async (b) => {{ {fail} w.push(b.length); }}, \
             close: async () => {{ w.push('closed'); }} }};"
        ))
        .call0(&JsValue::NULL)
        .unwrap()
    }

    fn kept(key: &str) -> String {
        js_sys::JSON::stringify(&js_sys::Reflect::get(&js_sys::global(), &key.into()).unwrap())
            .unwrap()
            .into()
    }

    #[wasm_bindgen_test]
    async fn a_spooled_download_is_written_4_mib_at_a_time_and_its_tail_before_close() {
        let mut sink = SpoolSink::new(spool("__spoolA", ""));
        let piece = vec![7u8; 64 << 10];
        for _ in 0..160 {
            sink.write_all(&piece).await.unwrap();
        }
        sink.flush().await.unwrap();
        sink.call("close", None).await.unwrap();
        assert_eq!(kept("__spoolA"), "[4194304,4194304,2097152,\"closed\"]");
    }

    #[wasm_bindgen_test]
    async fn a_full_disk_during_a_download_is_storage_full() {
        let mut sink = SpoolSink::new(spool(
            "__spoolB",
            "new DOMException('the quota is used up', 'QuotaExceededError')",
        ));
        let piece = vec![7u8; 4 << 20];
        let mut failed = None;
        for _ in 0..4 {
            if let Err(e) = sink.write_all(&piece).await {
                failed = Some(e);
                break;
            }
        }
        let io = failed.expect("the third write fails");
        let e = sink.thrown.or::<()>(Err(Failure::from(io))).unwrap_err();
        assert_eq!(e.code, "storage_full", "{}", e.message);
        assert!(e.message.contains("downloaded record"), "{}", e.message);
    }
}
