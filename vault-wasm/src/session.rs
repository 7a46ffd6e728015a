//! An unlocked identity talking to one relay: the `Session` class the page
//! holds. Every method returns a promise; operations run one at a time (an
//! async mutex), so two clicks can never interleave on the local store.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::lock::Mutex;
use js_sys::Promise;
use secrecy::SecretString;
use vault_client::RelayClient;
use vault_core::keyfile;
use vault_core::store::MemoryStore;
use wasm_bindgen::prelude::*;

/// Upload chunk size in the browser, half the command line's 8 MiB. Each
/// chunk is hashed and handed to `fetch` on the page's thread, so it
/// bounds how long an upload holds the page; each chunk is also one
/// round trip, so smaller chunks upload more slowly over a distant relay.
const UPLOAD_CHUNK: usize = 4 << 20;
use wasm_bindgen_futures::future_to_promise;

use crate::failure::{Failure, Result};
use crate::progress::Progress;
use crate::unlocked::{collection_id, record_id, vault_id, Inner};
use crate::{links, records, sharing, snapshot, view};

/// An unlocked identity and its verified local state.
#[wasm_bindgen]
pub struct Session {
    inner: Rc<Mutex<Inner>>,
}

/// A JSON value as the string the page parses.
pub(crate) fn json(v: &serde_json::Value) -> JsValue {
    JsValue::from_str(&v.to_string())
}

#[wasm_bindgen]
impl Session {
    /// Opens the passphrase-sealed `key_file` (error `wrong_passphrase`)
    /// and restores the verified local state from `snapshot` (from
    /// [`Session::snapshot`]; every log in it is verified again). `invite`
    /// is the invitation token a relay that admits new identities by
    /// invitation asks for (sent only to the relay, never logged). Resolves
    /// to a `Session`.
    pub fn unlock(
        key_file: Vec<u8>,
        passphrase: String,
        relay_url: String,
        snapshot: Option<Vec<u8>>,
        invite: Option<String>,
    ) -> Promise {
        let passphrase = SecretString::from(passphrase);
        future_to_promise(async move {
            let open = || -> Result<Session> {
                let secret = Arc::new(keyfile::open(&key_file, &passphrase)?);
                let mut client =
                    RelayClient::new(&relay_url, secret.clone())?.with_chunk_size(UPLOAD_CHUNK);
                if let Some(token) = invite.as_deref().filter(|t| !t.trim().is_empty()) {
                    client = client.with_invite(token)?;
                }
                // Uploads larger than a listing fetches are not copied into
                // the in-memory store: that copy (and its hash check) would
                // hold the page for the whole size of a large file.
                let store = match &snapshot {
                    Some(bytes) if !bytes.is_empty() => {
                        snapshot::restore(bytes, &secret.fingerprint(), client.now())?
                    }
                    _ => MemoryStore::new(),
                }
                .with_upload_limit(vault_client::records::LIST_FETCH_LIMIT);
                Ok(Session {
                    inner: Rc::new(Mutex::new(Inner {
                        secret,
                        client,
                        store,
                        key_file,
                        published: false,
                    })),
                })
            };
            open().map(JsValue::from).map_err(Failure::into_js)
        })
    }

    /// The session's state for a synchronous call, or `busy` while an
    /// operation runs.
    fn idle(&self) -> std::result::Result<futures_util::lock::MutexGuard<'_, Inner>, JsValue> {
        self.inner.try_lock().ok_or_else(|| {
            Failure::new(
                "busy",
                "another operation is running; try again when it finishes",
            )
            .into_js()
        })
    }

    fn run<F, Fut>(&self, op: F) -> Promise
    where
        F: FnOnce(Rc<Mutex<Inner>>) -> Fut,
        Fut: Future<Output = Result<JsValue>> + 'static,
    {
        let fut = op(self.inner.clone());
        future_to_promise(async move { fut.await.map_err(Failure::into_js) })
    }

    /// This identity (JSON: name, role, fingerprint, fingerprintHex,
    /// identityText).
    pub fn me(&self) -> std::result::Result<String, JsValue> {
        let inner = self.idle()?;
        Ok(view::identity(inner.secret.public()).to_string())
    }

    /// The verified logs and pins, for the page to keep in IndexedDB (no
    /// secret, no record content). Throws `busy` while an operation runs.
    pub fn snapshot(&self) -> std::result::Result<Vec<u8>, JsValue> {
        let inner = self.idle()?;
        snapshot::save(&inner.store).map_err(Failure::into_js)
    }

    /// Publishes this identity on the relay (so others can look it up).
    pub fn publish(&self) -> Promise {
        self.run(|inner| async move {
            let mut s = inner.lock().await;
            s.published = false;
            s.publish().await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// This identity's vaults (JSON list of id, owner, mine),
    /// joining on this device any of its own vaults that it does not have
    /// yet, and for a device, those of the person whose 64-hex fingerprint
    /// `person_hex` the user pinned, once that person lists the device.
    pub fn vaults(&self, person_hex: Option<String>) -> Promise {
        self.run(|inner| async move {
            let person = person_hex
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(crate::fingerprint)
                .transpose()?;
            let mut s = inner.lock().await;
            Ok(json(&sharing::vaults(&mut s, person.as_ref()).await?))
        })
    }

    /// Creates a vault on the relay; resolves to its id.
    #[wasm_bindgen(js_name = createVault)]
    pub fn create_vault(&self) -> Promise {
        self.run(|inner| async move {
            let mut s = inner.lock().await;
            let id = sharing::create_vault(&mut s).await?;
            Ok(JsValue::from_str(&id.to_hex()))
        })
    }

    /// The vault brought up to date: checkpoint, collections with members,
    /// single-record shares (JSON), re-keyed first where the owner's duty
    /// after a device list changed is due (`rekeyed`, decision 70).
    pub fn overview(&self, vault: String) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let mut s = inner.lock().await;
            Ok(json(&sharing::overview(&mut s, &vault).await?))
        })
    }

    /// The records this identity can read (optionally of one collection),
    /// decrypted and verified, with FHIR summaries (JSON `{records,
    /// failed}`).
    pub fn records(&self, vault: String, collection: Option<String>) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let collection = collection.as_deref().map(collection_id).transpose()?;
            let mut s = inner.lock().await;
            Ok(json(
                &records::list(&mut s, &vault, collection.as_ref()).await?,
            ))
        })
    }

    /// Makes a SMART Health Link in `vault`. `request` is JSON: `what`
    /// (`summary`, `collection` or `records`), `collection`, `records`,
    /// `label`, `expiresAt`, `maxAttempts`, `longTerm`, `direct`;
    /// `passcode` adds flag `P`. Resolves to JSON `{link, shlink, handle,
    /// qrSvg, resources, encryptedBytes, what}`; the key is only in the
    /// link.
    #[wasm_bindgen(js_name = createLink)]
    pub fn create_link(&self, vault: String, request: String, passcode: Option<String>) -> Promise {
        let passcode = passcode
            .filter(|p| !p.is_empty())
            .map(zeroize::Zeroizing::new);
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let request: links::LinkRequest = serde_json::from_str(&request)
                .map_err(|e| Failure::input(format!("the link request: {e}")))?;
            let mut s = inner.lock().await;
            Ok(json(
                &links::create(&mut s, &vault, request, passcode).await?,
            ))
        })
    }

    /// This identity's links (JSON list, newest first).
    pub fn links(&self) -> Promise {
        self.run(|inner| async move {
            let mut s = inner.lock().await;
            Ok(json(&links::list(&mut s).await?))
        })
    }

    /// Revokes the link `handle` (64 hex digits).
    #[wasm_bindgen(js_name = revokeLink)]
    pub fn revoke_link(&self, handle: String) -> Promise {
        self.run(|inner| async move {
            let mut s = inner.lock().await;
            links::revoke(&mut s, &handle).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Who fetched the link `handle` (JSON list of `{at, recipient,
    /// outcome}`, oldest first).
    #[wasm_bindgen(js_name = linkLog)]
    pub fn link_log(&self, handle: String) -> Promise {
        self.run(|inner| async move {
            let mut s = inner.lock().await;
            Ok(json(&links::access_log(&mut s, &handle).await?))
        })
    }

    /// Deletes a record (a signed deletion; its versions stay readable to
    /// those who held them), and with `purge` destroys every version for
    /// good (owner only). JSON `{deleted, purgedVersions}`.
    #[wasm_bindgen(js_name = deleteRecord)]
    pub fn delete_record(&self, vault: String, record: String, purge: bool) -> Promise {
        self.run(|inner| async move {
            let (vault, record) = (vault_id(&vault)?, record_id(&record)?);
            let mut s = inner.lock().await;
            Ok(json(
                &records::delete(&mut s, &vault, &record, purge).await?,
            ))
        })
    }

    /// One record's body, decrypted and authenticated: a `Uint8Array`, or a
    /// `Blob` on the browser's disk for a record opened from a spool.
    /// `opener(job, ciphertext)`, if given, opens large records away from
    /// the page and resolves to the body: `web/src/payloads.ts` runs
    /// [`crate::worker::open_payload`] (or, from a spool,
    /// [`crate::worker::open_payload_from`]) in a worker. `spooler(len)`, if
    /// given, makes the spool a record over 64 MiB is
    /// downloaded into (decision 64).
    #[wasm_bindgen(js_name = openRecord)]
    pub fn open_record(
        &self,
        vault: String,
        record: String,
        opener: Option<js_sys::Function>,
        spooler: Option<js_sys::Function>,
    ) -> Promise {
        self.run(|inner| async move {
            let (vault, record) = (vault_id(&vault)?, record_id(&record)?);
            let mut s = inner.lock().await;
            records::open(&mut s, &vault, &record, opener.as_ref(), spooler.as_ref()).await
        })
    }

    /// Seals one file of `len` bytes into the named collection (created if
    /// missing, for the owner) and uploads it, reporting progress as
    /// `progress(done, total, phase)`; resolves to the new record's id.
    /// `sealer(job)` seals the payload and resolves to `{ciphertext, hash}`:
    /// `web/src/payloads.ts` runs [`crate::worker::seal_payload`] in a
    /// worker holding the file (or on the page without workers).
    #[wasm_bindgen(js_name = addFile)]
    #[allow(clippy::too_many_arguments)] // one per JS argument of `addFile`
    pub fn add_file(
        &self,
        vault: String,
        collection: String,
        title: String,
        content_type: String,
        len: f64,
        sealer: js_sys::Function,
        progress: Option<js_sys::Function>,
    ) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            if !(len >= 0.0 && len.fract() == 0.0 && len < 9_007_199_254_740_992.0) {
                return Err(Failure::input(
                    "the file's length is not a whole number of bytes",
                ));
            }
            let mut s = inner.lock().await;
            let file = records::NewFile {
                collection: &collection,
                title: &title,
                content_type: &content_type,
                len: len as u64,
                sealer: &sealer,
            };
            let id = records::add_file(&mut s, &vault, file, &Progress::new(progress)).await?;
            Ok(JsValue::from_str(&id.to_hex()))
        })
    }

    /// Imports a FHIR R4 Bundle (or one resource): every resource becomes a
    /// record, sorted into collections; resources already in the vault are
    /// skipped (JSON `{added, skipped, collections}`).
    #[wasm_bindgen(js_name = importFhir)]
    pub fn import_fhir(
        &self,
        vault: String,
        bytes: Vec<u8>,
        progress: Option<js_sys::Function>,
    ) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let mut s = inner.lock().await;
            Ok(json(
                &records::import_fhir(&mut s, &vault, &bytes, &Progress::new(progress)).await?,
            ))
        })
    }

    /// Looks an identity up by its 64-hex fingerprint; the relay can only
    /// return the identity that hashes to it (JSON identity).
    #[wasm_bindgen(js_name = lookupIdentity)]
    pub fn lookup_identity(&self, fingerprint_hex: String) -> Promise {
        self.run(|inner| async move {
            let fp = crate::fingerprint(&fingerprint_hex)?;
            let mut s = inner.lock().await;
            s.publish().await?;
            let id = s.client.lookup_identity(&fp).await?;
            Ok(json(&view::identity(&id)))
        })
    }

    /// Shares a collection (`target` a collection id) or one record
    /// (`is_record`, read-only) with the identity in `identity_text`, until
    /// `expires_at` (Unix seconds) if given.
    pub fn share(
        &self,
        vault: String,
        target: String,
        is_record: bool,
        identity_text: String,
        permission: String,
        expires_at: Option<f64>,
    ) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let mut s = inner.lock().await;
            let share = sharing::Share {
                target: &target,
                is_record,
                identity_text: &identity_text,
                permission: &permission,
                expires_at,
            };
            Ok(json(&sharing::share(&mut s, &vault, share).await?))
        })
    }

    /// Names the identity in `identity_text` an agent of the owner in
    /// `collection` with `powers` (comma-separated: `add`, `share`,
    /// `name-agents`; read is implied), until `expires_at` (Unix seconds)
    /// if given (JSON `{delegation, rotatedFirst}`). Revoking an agent
    /// ends its agency.
    #[wasm_bindgen(js_name = nameAgent)]
    pub fn name_agent(
        &self,
        vault: String,
        collection: String,
        identity_text: String,
        powers: String,
        expires_at: Option<f64>,
    ) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let mut s = inner.lock().await;
            Ok(json(
                &sharing::name_agent(
                    &mut s,
                    &vault,
                    &collection,
                    &identity_text,
                    &powers,
                    expires_at,
                )
                .await?,
            ))
        })
    }

    /// Adds a device (by its 64-hex fingerprint, published on the relay) to
    /// the owner's devices (JSON `{name, serial, generation}`): it then
    /// reads and writes the vault as the owner.
    #[wasm_bindgen(js_name = addDevice)]
    pub fn add_device(&self, vault: String, fingerprint_hex: String) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let device = crate::fingerprint(&fingerprint_hex)?;
            let mut s = inner.lock().await;
            Ok(json(&sharing::add_device(&mut s, &vault, &device).await?))
        })
    }

    /// Opens a pairing for a new device of the vault's owner (`docs/format.md`
    /// §3.8): resolves to a [`crate::pairing::PairingOffer`] whose code the
    /// page shows. Add the device (`addDevice`) only after
    /// `PairingOffer.confirm`.
    #[wasm_bindgen(js_name = openPairing)]
    pub fn open_pairing(&self, vault: String) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let (client, owner) = {
                let mut s = inner.lock().await;
                s.publish().await?;
                let s = &mut *s;
                let state = vault_client::sync::pull(&mut s.store, &s.client, &vault).await?;
                (s.client.clone(), state.owner().fingerprint())
            };
            Ok(crate::pairing::open(client, owner).await?.into())
        })
    }

    /// Joins, as this device identity, the pairing of the 10-digit `code`
    /// another device of the person shows: resolves to a
    /// [`crate::pairing::PairingJoin`].
    #[wasm_bindgen(js_name = joinPairing)]
    pub fn join_pairing(&self, code: String) -> Promise {
        self.run(|inner| async move {
            let client = {
                let mut s = inner.lock().await;
                s.publish().await?;
                s.client.clone()
            };
            Ok(crate::pairing::join(client, &code).await?.into())
        })
    }

    /// Removes one of the owner's devices (by 64-hex fingerprint) and
    /// re-keys every collection (JSON `{rotated, dropped}`).
    #[wasm_bindgen(js_name = removeDevice)]
    pub fn remove_device(&self, vault: String, fingerprint_hex: String) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let device = crate::fingerprint(&fingerprint_hex)?;
            let mut s = inner.lock().await;
            Ok(json(
                &sharing::remove_device(&mut s, &vault, &device).await?,
            ))
        })
    }

    /// Takes the owner's device list back with this session's key file,
    /// keeping the devices whose 64-hex fingerprints `keep_hex` lists
    /// (comma-separated; empty keeps none), and re-keys every collection
    /// (JSON `{kept, removed, alreadyRecovered, rotated, notRotated,
    /// dropped, sharedByRemoved}`).
    #[wasm_bindgen(js_name = recoverDevices)]
    pub fn recover_devices(&self, vault: String, keep_hex: String) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let keep = keep_hex
                .split(',')
                .filter(|k| !k.trim().is_empty())
                .map(crate::fingerprint)
                .collect::<Result<Vec<_>>>()?;
            let mut s = inner.lock().await;
            Ok(json(
                &sharing::recover_devices(&mut s, &vault, &keep).await?,
            ))
        })
    }

    /// Ends every agency of an agent (by 64-hex fingerprint) and rotates
    /// the collections it acted in, and any whose key it withheld from the
    /// owner (JSON `{ended, rotated, notRotated}`).
    #[wasm_bindgen(js_name = endAgency)]
    pub fn end_agency(&self, vault: String, fingerprint_hex: String) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let agent = crate::fingerprint(&fingerprint_hex)?;
            let mut s = inner.lock().await;
            Ok(json(&sharing::end_agency(&mut s, &vault, &agent).await?))
        })
    }

    /// Revokes a member (by 64-hex fingerprint) everywhere, or in one
    /// collection: rotates the keys of every collection they held and
    /// withdraws their single-record shares (JSON `{rotated,
    /// recordSharesWithdrawn, dropped}`; `dropped` lists the records the
    /// rotation deleted because their key did not open, with their author).
    pub fn revoke(
        &self,
        vault: String,
        fingerprint_hex: String,
        collection: Option<String>,
    ) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let member = crate::fingerprint(&fingerprint_hex)?;
            let only = collection.as_deref().map(collection_id).transpose()?;
            let mut s = inner.lock().await;
            Ok(json(
                &sharing::revoke(&mut s, &vault, &member, only.as_ref()).await?,
            ))
        })
    }

    /// Repairs a relay that is behind this device (`rollback`): pushes back
    /// the verified entries and held ciphertexts it lost (JSON: before,
    /// after, entries, blobs, stopped). Refused with `fork` if the relay's
    /// history differs; call only with the patient's consent.
    pub fn repair(&self, vault: String) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let mut s = inner.lock().await;
            Ok(json(&sharing::repair(&mut s, &vault).await?))
        })
    }

    /// The whole vault as a tar archive of standard age files, the
    /// passphrase-sealed key file and a README (owner only).
    #[wasm_bindgen(js_name = exportVault)]
    pub fn export_vault(&self, vault: String) -> Promise {
        self.run(|inner| async move {
            let vault = vault_id(&vault)?;
            let mut s = inner.lock().await;
            let tar = sharing::export(&mut s, &vault).await?;
            Ok(js_sys::Uint8Array::from(tar.as_slice()).into())
        })
    }

    /// Compares the vault's checkpoint, as this device verified it, with a
    /// code read from another device; throws `checkpoint_mismatch` if they
    /// differ (two different histories: a forking relay).
    #[wasm_bindgen(js_name = compareCheckpoint)]
    pub fn compare_checkpoint(
        &self,
        vault: String,
        code: String,
    ) -> std::result::Result<(), JsValue> {
        let inner = self.idle()?;
        let check = || -> Result<()> {
            let state = vault_core::store::load_vault(&inner.store, &vault_id(&vault)?)?;
            state.compare_checkpoint_code(code.trim())?;
            Ok(())
        };
        check().map_err(Failure::into_js)
    }
}
