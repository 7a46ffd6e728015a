//! The real relay binary on loopback with real clients: a patient and a
//! clinician sync the same vault concurrently (compare-and-swap races
//! resolved by re-reading and retrying), every record verifies and opens on
//! both devices, a revoked clinician is cut off, and the relay shuts down
//! gracefully and comes back with everything.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use vault_client::sync;
use vault_client::{ClientError, RelayClient};
use vault_core::store::{SqliteStore, Store};
use vault_core::{Keyring, Permission, RecordInfo, Role, SecretIdentity, VaultState};
use vault_tests::{principal, RelayProcess};

fn info(title: &str, now: u64) -> RecordInfo {
    RecordInfo {
        content_type: "text/plain".into(),
        title: title.into(),
        created_at: now,
        effective_at: None,
    }
}

/// Writes `n` records as `who`, concurrently with whoever else writes.
async fn write_records(
    client: RelayClient,
    mut store: SqliteStore,
    vault: vault_core::VaultId,
    collection: vault_core::CollectionId,
    who: Arc<SecretIdentity>,
    n: usize,
) -> SqliteStore {
    for i in 0..n {
        let title = format!("{} #{i}", who.public().display_name());
        let body = format!("{title}: {}", "x".repeat(i * 97));
        let mut spool = Cursor::new(Vec::new());
        let now = client.now();
        let who2 = who.clone();
        sync::push_record(&mut store, &client, &vault, &mut spool, |state, out| {
            let mut kr = Keyring::new(&who2, now);
            Ok(state.put_record(
                &mut kr,
                &collection,
                None,
                &info(&title, now),
                vault_core::RecordBody::new(body.as_bytes(), body.len() as u64),
                out,
            )?)
        })
        .await
        .unwrap();
    }
    store
}

/// The patient's vault with a collection "labs", shared read-write with
/// `doctor` and read-only with `nurse` (who have published identities).
async fn shared_labs(
    pstore: &mut SqliteStore,
    pc: &RelayClient,
    patient: &SecretIdentity,
    doctor: &SecretIdentity,
    nurse: &SecretIdentity,
) -> (vault_core::VaultId, vault_core::CollectionId) {
    let (state, genesis) = VaultState::create(patient, pc.now()).unwrap();
    let vault = state.vault();
    sync::create_vault(pstore, pc, &genesis).await.unwrap();
    let mut labs = None;
    sync::push_with_retry(pstore, pc, &vault, |s| {
        let (id, e) = s.create_collection(patient, "labs", pc.now())?;
        labs = Some(id);
        Ok(vec![e])
    })
    .await
    .unwrap();
    let labs = labs.unwrap();
    for (member, perm) in [(doctor, Permission::ReadWrite), (nurse, Permission::Read)] {
        let identity = pc.lookup_identity(&member.fingerprint()).await.unwrap();
        sync::push_with_retry(pstore, pc, &vault, |s| {
            let mut kr = Keyring::new(patient, pc.now());
            Ok(vec![
                s.share_collection(&mut kr, &labs, &identity, perm, None)?
            ])
        })
        .await
        .unwrap();
    }
    (vault, labs)
}

/// Opens every live record through the store, returning title → body.
async fn read_all(
    store: &mut SqliteStore,
    client: &RelayClient,
    me: &SecretIdentity,
    vault: &vault_core::VaultId,
) -> BTreeMap<String, String> {
    let state = sync::pull(store, client, vault).await.unwrap();
    let mut out = BTreeMap::new();
    for summary in state.records(None) {
        let record = state.record(&summary.id).unwrap();
        let mut spool = Cursor::new(Vec::new());
        sync::fetch_record_blob(store, client, &record, &mut spool)
            .await
            .unwrap();
        let mut body = Vec::new();
        let opened = {
            let blob = store
                .open_blob(record.metadata().ciphertext_hash())
                .unwrap()
                .unwrap();
            Keyring::new(me, client.now())
                .open(&state, &record, blob, &mut body)
                .unwrap()
        };
        out.insert(opened.info.title.clone(), String::from_utf8(body).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_sync_one_vault_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = principal(1, "Pat Patient", Role::Patient);
    let doctor = principal(2, "Dr Alice", Role::Clinician);
    let nurse = principal(3, "Nurse Bob", Role::Clinician);
    let pc = relay.client(&patient);
    let dc = relay.client(&doctor);
    let nc = relay.client(&nurse);
    for c in [&pc, &dc, &nc] {
        c.publish_identity().await.unwrap();
    }

    // The patient's device: a vault with a collection, shared read-write
    // with the doctor and read-only with the nurse.
    let mut pstore = SqliteStore::open(dir.path().join("patient")).unwrap();
    let (vault, labs) = shared_labs(&mut pstore, &pc, &patient, &doctor, &nurse).await;

    // The doctor finds the vault in the inbox and joins it, pinning the
    // owner it verified.
    let inbox = dc.inbox().await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].vault, vault);
    let mut dstore = SqliteStore::open(dir.path().join("doctor")).unwrap();
    sync::join_vault(&mut dstore, &dc, &vault, &patient.fingerprint())
        .await
        .unwrap();

    // Both write at the same time.
    let n = 12;
    let a = tokio::spawn(write_records(
        pc.clone(),
        pstore,
        vault,
        labs,
        patient.clone(),
        n,
    ));
    let b = tokio::spawn(write_records(
        dc.clone(),
        dstore,
        vault,
        labs,
        doctor.clone(),
        n,
    ));
    let mut pstore = a.await.unwrap();
    let mut dstore = b.await.unwrap();

    // Both devices converge on the same verified head and read everything.
    let ps = sync::pull(&mut pstore, &pc, &vault).await.unwrap();
    let ds = sync::pull(&mut dstore, &dc, &vault).await.unwrap();
    assert_eq!(ps.head(), ds.head());
    assert_eq!(ps.head().seq, 3 + 2 * n as u64);
    assert_eq!(ps.head().code(), ds.head().code());
    let from_patient = read_all(&mut pstore, &pc, &patient, &vault).await;
    let from_doctor = read_all(&mut dstore, &dc, &doctor, &vault).await;
    assert_eq!(from_patient.len(), 2 * n);
    assert_eq!(from_patient, from_doctor);
    assert!(from_patient["Dr Alice #3"].starts_with("Dr Alice #3: xxx"));

    // The read-only nurse reads, but cannot write.
    let mut nstore = SqliteStore::open(dir.path().join("nurse")).unwrap();
    sync::join_vault(&mut nstore, &nc, &vault, &patient.fingerprint())
        .await
        .unwrap();
    assert_eq!(
        read_all(&mut nstore, &nc, &nurse, &vault).await,
        from_patient
    );

    // Revoking the nurse: the relay stops serving her.
    sync::push_with_retry(&mut pstore, &pc, &vault, |s| {
        let mut kr = Keyring::new(&patient, pc.now());
        Ok(vec![s.revoke(&mut kr, &labs, &[nurse.fingerprint()])?])
    })
    .await
    .unwrap();
    let err = nc.fetch_log(&vault, 0, 10).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let some = ps.records(None)[0].id;
    let rec = ps.record(&some).unwrap();
    let err = nc
        .get_blob(
            &vault,
            rec.metadata().ciphertext_hash(),
            rec.metadata().address_kind(),
            rec.metadata().ciphertext_len(),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Relay { status: 403, .. }),
        "{err}"
    );

    // A graceful stop, a restart, and everything is still there.
    assert!(relay.stop(), "the relay exits 0 on SIGTERM");
    relay.restart();
    let pc = relay.client(&patient);
    let again = sync::pull(&mut pstore, &pc, &vault).await.unwrap();
    assert_eq!(again.head().seq, ps.head().seq + 1);
}

/// SIGTERM while an upload is in flight: the relay finishes it, answers,
/// and only then exits (0); the blob is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    use vault_core::request::{body_digest, RequestAuth};

    let dir = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = principal(1, "Pat Patient", Role::Patient);
    let pc = relay.client(&patient);
    pc.publish_identity().await.unwrap();
    let (_, genesis) = VaultState::create(&patient, pc.now()).unwrap();
    let vault = genesis.vault();
    pc.create_vault(&genesis).await.unwrap();

    // A 4 MiB blob sent slowly, in 16 pieces over about a second.
    let blob: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let hash = body_digest(&blob);
    let pq = format!("/v1/vaults/{}/blobs/{}", vault.to_hex(), hex::encode(hash));
    let auth = RequestAuth::sign(&patient, "PUT", &pq, pc.origin(), pc.now(), hash).unwrap();
    let pieces: Vec<Vec<u8>> = blob.chunks(256 << 10).map(<[u8]>::to_vec).collect();
    let body = futures_stream(pieces);
    let mut req = reqwest::Client::new()
        .put(format!("{}{pq}", relay.url))
        .header("content-type", "application/octet-stream")
        .header("upload-length", blob.len().to_string())
        .body(reqwest::Body::wrap_stream(body));
    for (k, v) in auth.headers() {
        req = req.header(k, v);
    }
    let upload = tokio::spawn(req.send());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopped = tokio::task::spawn_blocking(move || {
        let ok = relay.stop();
        (ok, relay)
    });
    let resp = upload.await.unwrap().unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let (ok, mut relay) = stopped.await.unwrap();
    assert!(ok, "the relay exits 0 after finishing the upload");

    relay.restart();
    let pc = relay.client(&patient);
    let mut back = Vec::new();
    pc.get_blob(
        &vault,
        &hash,
        vault_core::address::AddressKind::Sha256,
        blob.len() as u64,
        &mut back,
    )
    .await
    .unwrap();
    assert_eq!(back, blob);
}

/// A body stream yielding `pieces` one every ~60 ms.
fn futures_stream(
    pieces: Vec<Vec<u8>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(pieces.into_iter(), |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        Some((Ok(next), it))
    })
}

/// An upload source as the web app's spool file on the browser's disk is:
/// each chunk read on its own and awaited (it yields first), the reads
/// noted.
struct Spooled {
    bytes: Vec<u8>,
    reads: Arc<std::sync::Mutex<Vec<(u64, usize)>>>,
}

impl vault_client::UploadSource for Spooled {
    async fn read_chunk(&mut self, start: u64, len: usize) -> std::io::Result<Vec<u8>> {
        tokio::task::yield_now().await;
        self.reads.lock().unwrap().push((start, len));
        let at = usize::try_from(start).unwrap();
        self.bytes
            .get(at..at + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::Error::other("read past the end"))
    }
}

/// The web app's path against the real relay
/// (`records::add_sealed_elsewhere`): a record planned on one state, its
/// payload sealed "elsewhere" while a rotation lands, then finished on the
/// new head from a store that keeps no copy of uploads, its ciphertext read
/// back a chunk at a time as from the browser's disk. It lands under the
/// new epoch, the store holds no copy, every chunk was read once in order,
/// and the owner's device opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_sealed_elsewhere_is_finished_after_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = principal(1, "Pat Patient", Role::Patient);
    let doctor = principal(2, "Dr Alice", Role::Clinician);
    let nurse = principal(3, "Nurse Bob", Role::Clinician);
    const CHUNK: usize = 128 << 10;
    let (pc, dc, nc) = (
        relay.client(&patient),
        relay.client(&doctor).with_chunk_size(CHUNK),
        relay.client(&nurse),
    );
    for c in [&pc, &dc, &nc] {
        c.publish_identity().await.unwrap();
    }
    let mut pstore = SqliteStore::open(dir.path().join("patient")).unwrap();
    let (vault, labs) = shared_labs(&mut pstore, &pc, &patient, &doctor, &nurse).await;
    let mut dstore = vault_core::store::MemoryStore::new().with_upload_limit(0);
    let reads = Arc::new(std::sync::Mutex::new(Vec::new()));
    sync::join_vault(&mut dstore, &dc, &vault, &patient.fingerprint())
        .await
        .unwrap();

    // The doctor adds a record whose payload is sealed "elsewhere"; while
    // it is being sealed, the patient revokes the nurse: a new epoch.
    let epoch_before = sync::pull(&mut dstore, &dc, &vault)
        .await
        .unwrap()
        .collections()
        .into_iter()
        .find(|c| c.id == labs)
        .unwrap()
        .epoch;
    let body = b"scan, sealed in a worker".repeat(40_000);
    let mut sealed_hash = None;
    let mut sealed_len = 0;
    let metadata = vault_client::records::add_sealed_elsewhere(
        &mut dstore,
        &dc,
        &doctor,
        &vault,
        &labs,
        &info("scan", dc.now()),
        body.len() as u64,
        |job, ciphertext_len| {
            let (body, pstore, pc, patient, nurse) = (&body, &mut pstore, &pc, &patient, &nurse);
            let (sealed_hash, sealed_len, reads) =
                (&mut sealed_hash, &mut sealed_len, reads.clone());
            async move {
                let job = vault_core::PayloadJob::from_bytes(&job)?;
                let mut spool = Cursor::new(Vec::new());
                let hash = job.seal(body.as_slice(), &mut spool)?;
                assert_eq!(spool.get_ref().len() as u64, ciphertext_len);
                *sealed_hash = Some(hash);
                *sealed_len = ciphertext_len;
                sync::push_with_retry(pstore, pc, &vault, |s| {
                    let mut kr = Keyring::new(patient, pc.now());
                    Ok(vec![s.revoke(&mut kr, &labs, &[nurse.fingerprint()])?])
                })
                .await?;
                let bytes = spool.into_inner();
                Ok::<_, ClientError>((Spooled { bytes, reads }, hash))
            }
        },
    )
    .await
    .unwrap();
    let hash = sealed_hash.unwrap();
    assert_eq!(metadata.ciphertext_hash(), &hash);
    assert_eq!(metadata.epoch(), epoch_before + 1);
    assert!(
        !dstore.has_blob(&hash).unwrap(),
        "the store kept a copy of the upload"
    );
    let expected: Vec<(u64, usize)> = (0..sealed_len)
        .step_by(CHUNK)
        .map(|at| (at, CHUNK.min((sealed_len - at) as usize)))
        .collect();
    assert!(expected.len() > 5, "{expected:?}");
    assert_eq!(
        *reads.lock().unwrap(),
        expected,
        "each chunk read once, in order"
    );

    // The patient's device downloads it from the relay and opens it.
    let opened = read_all(&mut pstore, &pc, &patient, &vault).await;
    assert_eq!(opened["scan"].as_bytes(), body.as_slice());
    drop(relay);
}

/// The web app's path again, with a device removed while the payload is
/// sealed (decision 74): the removal lands between the write's plan and
/// its append, so the finished version would be sealed under a key the
/// removed phone holds. The append refuses it (`not_rekeyed`) and nothing
/// is appended; the next write re-keys labs first and goes in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_sealed_while_a_device_is_removed_is_refused_until_rekeyed() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = principal(1, "Pat Patient", Role::Patient);
    let phone = principal(20, "phone", Role::Device);
    let (pc, phc) = (relay.client(&patient), relay.client(&phone));
    for c in [&pc, &phc] {
        c.publish_identity().await.unwrap();
    }
    let mut pstore = vault_core::store::MemoryStore::new();
    let vault = sync::new_vault(&mut pstore, &pc, &patient)
        .await
        .unwrap()
        .vault();
    let labs =
        vault_client::records::ensure_collections(&mut pstore, &pc, &patient, &vault, &["labs"])
            .await
            .unwrap()
            .by_name["labs"];
    vault_client::devices::add_by_fingerprint(&mut pstore, &pc, &vault, &phone.fingerprint())
        .await
        .unwrap();
    let mut wstore = vault_core::store::MemoryStore::new();
    sync::join_vault(&mut wstore, &pc, &vault, &patient.fingerprint())
        .await
        .unwrap();
    let head_before = sync::pull(&mut wstore, &pc, &vault).await.unwrap().head();
    let body = b"scan, sealed in a worker".repeat(1_000);
    let w = Writer {
        client: &pc,
        patient: &patient,
        vault,
        labs,
        body: &body,
    };
    let removal = Some((&mut pstore, &*phone));
    let refused = w.add(&mut wstore, removal).await.unwrap_err();
    assert_eq!(refused.code(), "not_rekeyed", "{refused}");
    let state = sync::pull(&mut wstore, &pc, &vault).await.unwrap();
    assert_eq!(
        state.head().seq,
        head_before.seq + 1,
        "only the removal was appended"
    );
    assert_eq!(state.collections_to_rekey(), vec![labs]);
    // The next write, as the app makes it: its collections made ready
    // (re-keyed), then the payload.
    let ready =
        vault_client::records::ensure_collections(&mut wstore, &pc, &patient, &vault, &["labs"])
            .await
            .unwrap();
    assert_eq!(ready.rekeyed.rotated, vec![labs]);
    let metadata = w.add(&mut wstore, None).await.unwrap();
    let state = sync::pull(&mut wstore, &pc, &vault).await.unwrap();
    assert!(state.record(&metadata.record()).is_ok());
    assert!(state.collections_to_rekey().is_empty());
}

/// The owner adding a payload sealed elsewhere, for the test above.
struct Writer<'a> {
    client: &'a RelayClient,
    patient: &'a Arc<SecretIdentity>,
    vault: vault_core::VaultId,
    labs: vault_core::CollectionId,
    body: &'a [u8],
}

impl Writer<'_> {
    /// Adds the body to labs from `wstore`; with `removal`, removes that
    /// device (from the other store) while the payload is sealed.
    async fn add(
        &self,
        wstore: &mut vault_core::store::MemoryStore,
        removal: Option<(&mut vault_core::store::MemoryStore, &SecretIdentity)>,
    ) -> Result<vault_core::RecordMetadata, ClientError> {
        let (pc, patient, vault, body) = (self.client, self.patient, self.vault, self.body);
        vault_client::records::add_sealed_elsewhere(
            wstore,
            pc,
            patient,
            &vault,
            &self.labs,
            &info("scan", pc.now()),
            body.len() as u64,
            |job, _| async move {
                let job = vault_core::PayloadJob::from_bytes(&job)?;
                let mut spool = Cursor::new(Vec::new());
                let hash = job.seal(body, &mut spool)?;
                if let Some((pstore, device)) = removal {
                    sync::push_with_retry(pstore, pc, &vault, |s| {
                        let (entry, _) = vault_client::devices::plan_removal(
                            s,
                            patient,
                            &device.fingerprint(),
                            pc.now(),
                        )?;
                        Ok(vec![entry])
                    })
                    .await?;
                }
                let reads = Arc::new(std::sync::Mutex::new(Vec::new()));
                Ok::<_, ClientError>((
                    Spooled {
                        bytes: spool.into_inner(),
                        reads,
                    },
                    hash,
                ))
            },
        )
        .await
    }
}
