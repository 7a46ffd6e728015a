//! The owner's devices against the real relay (`docs/format.md` §8.11,
//! decision 67): the patient's root lists a phone and a laptop; the phone
//! writes a record through the relay as the owner and the laptop reads it;
//! the laptop removes the phone (a new generation, and a rotation in the
//! same append); the relay then refuses every request the phone signs,
//! and an entry it signed, while the laptop and a clinician still read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::{Arc, Mutex};

use vault_client::{devices, records, sync, Head, RelayClient};
use vault_core::devices::{DeviceList, GenerationKeys};
use vault_core::store::MemoryStore;
use vault_core::{
    Keyring, LogEntry, Permission, RecordBody, RecordInfo, Role, SecretIdentity, VaultState,
};
use vault_tests::forge::{forge_entry_in, signing_key};
use vault_tests::proxy::{rewrite_entry, rewrite_log, Proxy};
use vault_tests::{principal, RelayProcess};

fn head_of(state: &VaultState) -> Head {
    let h = state.head();
    Head {
        seq: h.seq,
        hash: h.head,
    }
}

/// The verified log as `client` is served it.
async fn fetch(client: &RelayClient, state: &VaultState) -> Result<Vec<LogEntry>, String> {
    let (_, entries) = client
        .fetch_log(&state.vault(), 0, 1000)
        .await
        .map_err(|e| e.code().to_owned())?;
    Ok(entries)
}

/// Seals `body` into `collection` as `who`, uploads it and appends the
/// record-put; returns the record.
async fn add(
    client: &RelayClient,
    state: &mut VaultState,
    keyring: &mut Keyring<'_>,
    collection: &vault_core::CollectionId,
    body: &[u8],
) -> vault_core::RecordId {
    let mut ct = Vec::new();
    let (m, e) = state
        .put_record(
            keyring,
            collection,
            None,
            &RecordInfo {
                content_type: "text/plain".into(),
                title: "note".into(),
                created_at: client.now(),
                effective_at: None,
            },
            RecordBody::new(body, body.len() as u64),
            &mut ct,
        )
        .unwrap();
    client
        .put_blobs(&state.vault(), &[(*m.ciphertext_hash(), ct.as_slice())])
        .await
        .unwrap();
    let prev = head_of(state);
    client
        .append(&state.vault(), prev, std::slice::from_ref(&e))
        .await
        .unwrap();
    state.apply(&e).unwrap();
    m.record()
}

/// Downloads and opens `record` as `keyring`'s identity.
async fn read(
    client: &RelayClient,
    state: &VaultState,
    keyring: &mut Keyring<'_>,
    record: &vault_core::RecordId,
) -> Vec<u8> {
    try_read(client, state, keyring, record).await.unwrap()
}

/// Downloads `record` (as `client`) and opens it with `keyring`.
async fn try_read(
    client: &RelayClient,
    state: &VaultState,
    keyring: &mut Keyring<'_>,
    record: &vault_core::RecordId,
) -> vault_core::Result<Vec<u8>> {
    let verified = state.record(record).unwrap();
    let mut ct = Vec::new();
    client
        .get_blob(
            &state.vault(),
            verified.metadata().ciphertext_hash(),
            verified.metadata().address_kind(),
            verified.metadata().ciphertext_len(),
            &mut ct,
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    keyring.open(state, &verified, ct.as_slice(), &mut out)?;
    Ok(out)
}

/// A relay in `dir`, the patient (one lab result, labs shared with Dr Dee
/// to read) and Dr Dee as `vault` profiles, the patient's fingerprint and
/// the lab's record id.
fn patient_sharing_labs(
    dir: &std::path::Path,
) -> (
    RelayProcess,
    vault_tests::CliProfile,
    vault_tests::CliProfile,
    String,
    String,
) {
    let relay = RelayProcess::start(&dir.join("relay"), &[]);
    let (patient, doc) = vault_tests::patient_and_clinician(dir, &relay.url);
    let p_fp = patient.json(&["whoami"])["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let lab = patient.add_lab("HbA1c", "48 mmol/mol");
    patient.json(&["share", "labs", "--with", "dr"]);
    (relay, patient, doc, p_fp, lab)
}

/// Writes a note titled `title` into the patient's labs from `laptop`, a
/// device of the patient's; returns the record id.
fn laptop_writes(laptop: &vault_tests::CliProfile, title: &str) -> String {
    let note = laptop.run_with_stdin(
        &[
            "--json", "add", "-", "-c", "labs", "--title", title, "--vault", "pat",
        ],
        b"written on the laptop",
    );
    assert_eq!(note.code, 0, "{}", note.stderr);
    let v: serde_json::Value = serde_json::from_str(&note.stdout).unwrap();
    v[0]["record"].as_str().unwrap().to_owned()
}

/// Checks that the relay refuses `device`, a removed device of the
/// patient's, writing into the patient's labs (`403 forbidden`).
fn refused_writing(device: &vault_tests::CliProfile) {
    let after = device.run_with_stdin(
        &[
            "add", "-", "-c", "labs", "--title", "Stolen", "--vault", "pat",
        ],
        b"x",
    );
    assert_ne!(after.code, 0, "a removed device wrote: {}", after.stdout);
    assert!(after.stderr.contains("403 forbidden"), "{}", after.stderr);
}

#[test]
fn the_relay_serves_the_owners_devices_and_refuses_a_removed_one() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let root = principal(1, "Pat Patient", Role::Patient);
    let doc = principal(2, "Dr Dee", Role::Clinician);
    let phone = principal(20, "phone", Role::Device);
    let laptop = principal(21, "laptop", Role::Device);
    let client = |who: &Arc<SecretIdentity>| RelayClient::new(&relay.url, who.clone()).unwrap();
    let (c_root, c_doc, c_phone, c_laptop) =
        (client(&root), client(&doc), client(&phone), client(&laptop));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for c in [&c_root, &c_doc, &c_phone, &c_laptop] {
            c.publish_identity().await.unwrap();
        }
        let now = c_root.now();
        // The patient's vault, a "labs" collection shared with Dr Dee, and
        // the root's first device list: the phone and the laptop.
        let (mut state, genesis) = VaultState::create(&root, now).unwrap();
        c_root.create_vault(&genesis).await.unwrap();
        let (labs, created) = state.create_collection(&root, "labs", now).unwrap();
        state.apply(&created).unwrap();
        let shared = state
            .share_collection(
                &mut Keyring::new(&root, now),
                &labs,
                doc.public(),
                Permission::Read,
                None,
            )
            .unwrap();
        state.apply(&shared).unwrap();
        let (v1, _) = DeviceList::first(
            &root,
            &[phone.public().clone(), laptop.public().clone()],
            now,
        )
        .unwrap();
        // Listing the devices rotates every collection: devices never hold
        // the root's own key, so the owner's grants move to generation 1.
        let listing = devices::plan_listing(&state, &root, &v1, now).unwrap();
        assert_eq!(listing.len(), 1);
        for e in &listing {
            state.apply(e).unwrap();
        }
        assert_eq!(state.collections_to_rekey(), vec![labs]);
        let (rotations, rekeyed) = devices::plan_rekeying(&state, &root, now, usize::MAX);
        assert_eq!(rekeyed.rotated, vec![labs]);
        for e in &rotations {
            state.apply(e).unwrap();
        }
        assert!(state.collections_to_rekey().is_empty());
        let mut batch = vec![created, shared];
        batch.extend(listing);
        batch.extend(rotations);
        c_root
            .append(
                &state.vault(),
                vault_client::Head {
                    seq: 0,
                    hash: *genesis.hash(),
                },
                &batch,
            )
            .await
            .unwrap();

        // The phone finds the vault in its inbox, as its owner.
        let inbox = c_phone.inbox().await.unwrap();
        assert!(
            inbox.iter().any(|v| v.vault == state.vault() && v.is_owner),
            "{inbox:?}"
        );
        // The phone reads the log as the owner and writes through the relay.
        let served = fetch(&c_phone, &state).await.unwrap();
        assert!(
            served.iter().all(|e| !e.is_redacted()),
            "the owner sees all"
        );
        let mut phone_state = VaultState::verify_log(&served).unwrap();
        let phone_keys: GenerationKeys = v1.open(&phone).unwrap();
        let record = add(
            &c_phone,
            &mut phone_state,
            &mut Keyring::for_device(&phone, &phone_keys, now),
            &labs,
            b"written on the phone",
        )
        .await;
        // The phone shares labs with Dr Eve, as the owner: a version-3 grant
        // naming the phone.
        let eve = principal(3, "Dr Eve", Role::Clinician);
        client(&eve).publish_identity().await.unwrap();
        let share = phone_state
            .share_collection(
                &mut Keyring::for_device(&phone, &phone_keys, now),
                &labs,
                eve.public(),
                Permission::Read,
                None,
            )
            .unwrap();
        let prev = head_of(&phone_state);
        c_phone
            .append(&phone_state.vault(), prev, std::slice::from_ref(&share))
            .await
            .unwrap();
        phone_state.apply(&share).unwrap();
        let served = fetch(&c_laptop, &state).await.unwrap();
        let laptop_state = VaultState::verify_log(&served).unwrap();
        assert_eq!(
            laptop_state.record(&record).unwrap().metadata().author(),
            phone.fingerprint()
        );
        let laptop_keys = v1.open(&laptop).unwrap();
        assert_eq!(
            read(
                &c_laptop,
                &laptop_state,
                &mut Keyring::for_device(&laptop, &laptop_keys, now),
                &record
            )
            .await,
            b"written on the phone"
        );

        // The phone is lost: the laptop removes it with vault-client's
        // action, which lists version 2 without it (a new generation) and
        // rotates labs in the same append.
        let mut store = MemoryStore::new();
        sync::join_vault(&mut store, &c_laptop, &state.vault(), &root.fingerprint())
            .await
            .unwrap();
        let (laptop_state, removal) =
            devices::remove(&mut store, &c_laptop, &state.vault(), &phone.fingerprint())
                .await
                .unwrap();
        assert_eq!(removal.rekeying.rotated, vec![labs]);
        assert!(removal.rekeying.not_rotated.is_empty());
        assert!(removal.rekeying.dropped.is_empty());
        assert_eq!(
            removal.granted_by_it,
            vec![(labs, eve.fingerprint())],
            "what the phone shared is reported, and stays"
        );
        let v2 = removal.list.clone().unwrap();
        assert_eq!((v2.serial(), v2.generation()), (2, 2));
        assert_eq!(laptop_state.owner_device_list(), Some(&v2));
        // Removing it again only finishes the re-keying (nothing left);
        // the laptop removing itself is refused before anything is sent.
        let (_, again) =
            devices::remove(&mut store, &c_laptop, &state.vault(), &phone.fingerprint())
                .await
                .unwrap();
        assert!(again.list.is_none() && again.rekeying.rotated.is_empty());
        let own = devices::remove(&mut store, &c_laptop, &state.vault(), &laptop.fingerprint())
            .await
            .unwrap_err();
        assert_eq!(own.code(), "invalid_input", "{own}");
        let keys2 = laptop_state.open_generations(&laptop).unwrap();
        keys2.check_against(&v2).unwrap();

        // The relay now refuses the phone: reading the log, and an entry it
        // signed (it would delete the record).
        assert_eq!(fetch(&c_phone, &state).await.unwrap_err(), "forbidden");
        let inbox = c_phone.inbox().await.unwrap();
        assert!(inbox.iter().all(|v| v.vault != state.vault()), "{inbox:?}");
        // A record-deleted entry signed by the phone (forged past its
        // client, which would refuse to build it), scope-tagged to labs.
        let mut payload = record.as_bytes().to_vec();
        payload.extend_from_slice(&2u32.to_be_bytes());
        let delete = LogEntry::from_bytes(&forge_entry_in(
            &signing_key(20),
            &laptop_state.vault(),
            laptop_state.head().seq + 1,
            &laptop_state.head().head,
            now,
            &phone.fingerprint(),
            4,
            &payload,
            Some(labs.as_bytes()),
        ))
        .unwrap();
        let refused = c_phone
            .append(&laptop_state.vault(), head_of(&laptop_state), &[delete])
            .await
            .unwrap_err();
        assert_eq!(refused.status(), Some(403), "{refused}");
        // The laptop, the root (through the recovery box) and Dr Dee still
        // read the record, re-wrapped under the new epoch.
        assert_eq!(
            read(
                &c_laptop,
                &laptop_state,
                &mut Keyring::for_device(&laptop, &keys2, now),
                &record
            )
            .await,
            b"written on the phone"
        );
        let served = fetch(&c_doc, &state).await.unwrap();
        let doc_state = VaultState::verify_log_as(&doc.fingerprint(), now, &served, None).unwrap();
        assert_eq!(
            read(&c_doc, &doc_state, &mut Keyring::new(&doc, now), &record).await,
            b"written on the phone"
        );
        let recovered = v2.open_recovery(&root).unwrap();
        assert_eq!(
            read(
                &c_root,
                &laptop_state,
                &mut Keyring::for_device(&root, &recovered, now),
                &record
            )
            .await,
            b"written on the phone"
        );
    });
}

/// A removal interrupted before its re-keying (the list's new version is
/// appended, no rotation yet): the next write into the collection, through
/// the vault-client action every client uses, re-keys it first (decision
/// 74), so the removed phone's keys do not open what is written.
#[test]
fn a_write_after_an_interrupted_removal_is_sealed_under_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let root = principal(1, "Pat Patient", Role::Patient);
    let phone = principal(20, "phone", Role::Device);
    let laptop = principal(21, "laptop", Role::Device);
    let tablet = principal(22, "tablet", Role::Device);
    let client = |who: &Arc<SecretIdentity>| RelayClient::new(&relay.url, who.clone()).unwrap();
    let (c_root, c_phone, c_laptop) = (client(&root), client(&phone), client(&laptop));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for c in [&c_root, &c_phone, &c_laptop, &client(&tablet)] {
            c.publish_identity().await.unwrap();
        }
        let now = c_root.now();
        // The vault, "labs", and the root's list of the phone, the laptop
        // and the tablet, re-keyed to generation 1.
        let (mut state, genesis) = VaultState::create(&root, now).unwrap();
        c_root.create_vault(&genesis).await.unwrap();
        let (labs, created) = state.create_collection(&root, "labs", now).unwrap();
        state.apply(&created).unwrap();
        let (v1, _) = DeviceList::first(
            &root,
            &[
                phone.public().clone(),
                laptop.public().clone(),
                tablet.public().clone(),
            ],
            now,
        )
        .unwrap();
        let mut batch = devices::plan_listing(&state, &root, &v1, now).unwrap();
        for e in &batch {
            state.apply(e).unwrap();
        }
        let (rotations, _) = devices::plan_rekeying(&state, &root, now, usize::MAX);
        for e in &rotations {
            state.apply(e).unwrap();
        }
        batch.insert(0, created);
        batch.extend(rotations);
        let vault = state.vault();
        let genesis_head = Head {
            seq: 0,
            hash: *genesis.hash(),
        };
        c_root.append(&vault, genesis_head, &batch).await.unwrap();
        let phone_keys = v1.open(&phone).unwrap();

        // The laptop removes the phone and is interrupted before
        // re-keying: only the list's new version is appended.
        let mut store = MemoryStore::new();
        sync::join_vault(&mut store, &c_laptop, &vault, &root.fingerprint())
            .await
            .unwrap();
        let removed = sync::push_with_retry(&mut store, &c_laptop, &vault, |state| {
            let (entry, _) =
                devices::plan_removal(state, &laptop, &phone.fingerprint(), c_laptop.now())?;
            Ok(vec![entry])
        })
        .await
        .unwrap();
        assert_eq!(removed.collections_to_rekey(), vec![labs]);

        // The laptop adds a record to labs: labs is re-keyed first.
        let found = records::ensure_collections(&mut store, &c_laptop, &laptop, &vault, &["labs"])
            .await
            .unwrap();
        assert_eq!(found.rekeyed.rotated, vec![labs]);
        assert!(found.state.collections_to_rekey().is_empty());
        let item = records::NewRecord {
            target: None,
            collection: labs,
            info: RecordInfo {
                content_type: "text/plain".into(),
                title: "after".into(),
                created_at: c_laptop.now(),
                effective_at: None,
            },
            body: b"written after the removal".to_vec(),
        };
        // The root removes the tablet while the laptop is writing (after
        // its re-keying, before its append): the write is refused, as it
        // was sealed under a key the tablet holds.
        let mut root_store = MemoryStore::new();
        sync::join_vault(&mut root_store, &c_root, &vault, &root.fingerprint())
            .await
            .unwrap();
        sync::push_with_retry(&mut root_store, &c_root, &vault, |state| {
            let (entry, _) =
                devices::plan_removal(state, &root, &tablet.fingerprint(), c_root.now())?;
            Ok(vec![entry])
        })
        .await
        .unwrap();
        let refused = records::add_records(
            &mut store,
            &c_laptop,
            &laptop,
            found.state,
            std::slice::from_ref(&item),
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), "not_rekeyed", "{refused}");
        // Run again: it re-keys first, and the record goes in.
        let found = records::ensure_collections(&mut store, &c_laptop, &laptop, &vault, &["labs"])
            .await
            .unwrap();
        assert_eq!(found.rekeyed.rotated, vec![labs]);
        let (state, ids) =
            records::add_records(&mut store, &c_laptop, &laptop, found.state, &[item], |_| {})
                .await
                .unwrap();
        let keys = state.open_generations(&laptop).unwrap();
        assert_eq!(
            read(
                &c_laptop,
                &state,
                &mut Keyring::for_device(&laptop, &keys, now),
                &ids[0]
            )
            .await,
            b"written after the removal"
        );
        // What the phone holds is generation 1 (the same for every device
        // of v1): given only that, even a listed device's keyring does not
        // open the record (the relay, which refuses the phone, and the
        // membership check are left out of the question).
        let with_the_phones_keys = try_read(
            &c_laptop,
            &state,
            &mut Keyring::for_device(&laptop, &phone_keys, now),
            &ids[0],
        )
        .await;
        assert!(
            with_the_phones_keys.is_err(),
            "the removed phone's keys open a record written after its removal"
        );
        // Nothing is due any more: a second write re-keys nothing.
        let again = records::ensure_collections(&mut store, &c_laptop, &laptop, &vault, &["labs"])
            .await
            .unwrap();
        assert!(again.rekeyed.rotated.is_empty());
    });
}

/// The same with the `vault` command: the patient adds a laptop profile
/// (role device) as a device; the laptop finds the vault in its inbox,
/// reads it and writes into it as the patient; the patient removes it, and
/// the laptop is refused while Dr Dee still reads.
#[test]
fn the_cli_adds_a_device_which_writes_as_the_patient_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, patient, doc, p_fp, lab) = patient_sharing_labs(dir.path());
    let fp = |v: serde_json::Value| v["fingerprint"].as_str().unwrap().to_owned();
    let (laptop, l_fp) = vault_tests::published_device(dir.path(), &relay.url, "laptop");
    assert_eq!(
        patient.json(&["devices", "list"])["devices"],
        serde_json::json!([]),
        "no devices yet"
    );
    // A device profile never owns a vault.
    let refused = laptop.fails(2, &["create"]);
    assert!(refused.contains("never owns a vault"), "{refused}");
    // A clinician's fingerprint is refused: only device identities.
    let d_fp = fp(doc.json(&["whoami"]));
    let refused = patient.fails(2, &["devices", "add", &d_fp]);
    assert!(refused.contains("not a device's"), "{refused}");
    let added = patient.json(&["devices", "add", &l_fp]);
    assert_eq!(
        (added["serial"].as_u64(), added["generation"].as_u64()),
        (Some(1), Some(1))
    );
    let listed = patient.json(&["devices", "list"]);
    assert_eq!(
        listed["devices"][0]["fingerprint"],
        l_fp.as_str(),
        "{listed}"
    );

    // The laptop reads and writes the patient's vault as the patient.
    laptop.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    let seen = laptop.json(&["list", "--vault", "pat"]);
    assert!(
        seen.as_array()
            .unwrap()
            .iter()
            .any(|r| r["record"] == lab.as_str()),
        "{seen}"
    );
    let opened = laptop.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]);
    assert_eq!(opened, "48 mmol/mol");
    laptop_writes(&laptop, "From the laptop");
    let mine = laptop.json(&["devices", "list", "--vault", "pat"]);
    assert_eq!(mine["devices"][0]["this_device"], true, "{mine}");
    let records = patient.json(&["list"]);
    assert_eq!(records.as_array().unwrap().len(), 2, "{records}");
    let by_laptop = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["author"] == l_fp.as_str())
        .unwrap_or_else(|| panic!("no record by the laptop: {records}"));
    assert_eq!(
        by_laptop["author_name"], "laptop (your device)",
        "{records}"
    );

    // The laptop is lost: the patient removes it. Its keys open nothing
    // written afterwards and the relay refuses it; Dr Dee still reads.
    let removed = patient.json(&["devices", "remove", &l_fp[..8]]);
    assert_eq!(removed["generation"], 2, "{removed}");
    assert!(removed["rotated"].as_u64().unwrap() >= 1, "{removed}");
    refused_writing(&laptop);
    // Named again (as after an interruption), the removal only finishes:
    // nothing new is listed, nothing is left to re-key, and it says so.
    let again = patient.json(&["devices", "remove", &l_fp[..8]]);
    assert_eq!(
        (&again["serial"], &again["rotated"]),
        (&serde_json::Value::Null, &serde_json::json!(0)),
        "{again}"
    );
    let said = patient.ok(&["devices", "remove", &l_fp[..8]]);
    assert!(
        said.contains("was removed from your devices in this vault already"),
        "{said}"
    );
    assert_eq!(
        doc.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );
    assert_eq!(patient.ok(&["open", &lab[..8], "-o", "-"]), "48 mmol/mol");
    patient.ok(&["verify"]);
}

/// A stolen phone takes the list over (it removes the laptop, so no other
/// device can remove it); the patient's key file takes the list back with
/// `vault devices recover`, keeping the laptop: the phone is refused from
/// then on, the laptop reads and writes again, and nothing is lost (the
/// thief's client sealed its generation to the key file too).
#[test]
fn the_key_file_takes_the_list_back_from_a_stolen_phone() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, patient, doc, p_fp, lab) = patient_sharing_labs(dir.path());
    let device = |name: &str| vault_tests::published_device(dir.path(), &relay.url, name);
    let (phone, ph_fp) = device("phone");
    let (laptop, l_fp) = device("laptop");
    // Nothing to take back before any device is listed.
    let refused = patient.fails(5, &["devices", "recover"]);
    assert!(refused.contains("no list to take back"), "{refused}");
    patient.json(&["devices", "add", &ph_fp]);
    patient.json(&["devices", "add", &l_fp]);
    for d in [&phone, &laptop] {
        d.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    }
    let note = laptop_writes(&laptop, "Laptop note");

    // The thief removes the laptop from the stolen phone.
    let taken = phone.json(&["devices", "remove", &l_fp[..8], "--vault", "pat"]);
    assert_eq!(taken["generation"], 2, "{taken}");
    let refused = laptop.run(&["list", "--vault", "pat"]);
    assert_ne!(
        refused.code, 0,
        "the laptop still reads: {}",
        refused.stdout
    );
    // A device does not take the list back: only the key file.
    let refused = phone.fails(2, &["devices", "recover", "--vault", "pat"]);
    assert!(refused.contains("only the owner's key file"), "{refused}");
    let refused = patient.fails(5, &["devices", "recover", "--keep", "00000000"]);
    assert!(refused.contains("no device ever listed"), "{refused}");

    let recovered = patient.json(&["devices", "recover", "--keep", &l_fp[..8]]);
    assert_eq!(recovered["generation"], 3, "{recovered}");
    assert_eq!(
        recovered["kept"],
        serde_json::json!([l_fp.as_str()]),
        "{recovered}"
    );
    assert_eq!(
        recovered["removed"],
        serde_json::json!([ph_fp.as_str()]),
        "{recovered}"
    );
    assert_eq!(recovered["dropped"], 0, "{recovered}");
    // The phone's re-keying re-sealed Dr Dee's grant, but the key file made
    // it: the phone shared with nobody.
    assert_eq!(
        recovered["shared_by_removed"],
        serde_json::json!([]),
        "{recovered}"
    );
    assert!(recovered["rotated"].as_u64().unwrap() >= 1, "{recovered}");
    assert_eq!(recovered["already_recovered"], false, "{recovered}");
    let listed = patient.json(&["devices", "list"]);
    assert_eq!(listed["devices"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["devices"][0]["fingerprint"], l_fp.as_str());

    // The phone is refused; the laptop, Dr Dee and the key file read.
    refused_writing(&phone);
    assert_eq!(
        laptop.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );
    let note = note.as_str();
    assert_eq!(
        laptop.ok(&["open", &note[..8], "--vault", "pat", "-o", "-"]),
        "written on the laptop"
    );
    assert_eq!(
        doc.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );
    assert_eq!(
        patient.ok(&["open", &note[..8], "-o", "-"]),
        "written on the laptop"
    );
    // Running it again changes nothing but says so.
    let again = patient.json(&["devices", "recover", "--keep", &l_fp[..8]]);
    assert_eq!(again["already_recovered"], true, "{again}");
    assert_eq!(again["generation"], 3, "{again}");
    patient.ok(&["verify"]);
}

/// Issue 17's malicious-relay cases for device lists, against the `vault`
/// command through an intercepting proxy playing the relay: a device added
/// to the owner's list by the relay (it rewrites the devices-listed entry),
/// the list's entry withheld, and the list rolled back to before a
/// removal. Each is refused with exit 6 and the stable error code; with
/// the proxy honest again, the same command succeeds.
#[test]
fn a_hostile_relay_cannot_add_a_device_withhold_the_list_or_roll_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, _relay) = Proxy::in_front_of_a_relay(&dir.path().join("relay"));
    let (patient, doc) = vault_tests::patient_and_clinician(dir.path(), &proxy.url);
    let lab = patient.add_lab("HbA1c", "48 mmol/mol");
    patient.json(&["share", "labs", "--with", "dr"]);
    assert_eq!(
        doc.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );
    let (_laptop, l_fp) = vault_tests::published_device(dir.path(), &proxy.url, "laptop");
    let head = |who: &vault_tests::CliProfile, vault: Option<&str>| {
        let mut args = vec!["verify"];
        if let Some(v) = vault {
            args.extend(["--vault", v]);
        }
        who.json(&args)["entries"].as_u64().unwrap() - 1
    };
    let listing = head(&patient, None) + 1;
    patient.json(&["devices", "add", &l_fp]);

    // 1. The relay adds a device of its own to the list it serves Dr Dee:
    // any byte of the devices-listed entry changed breaks its signature.
    proxy.attack(rewrite_entry(listing, |bytes| {
        let at = bytes.len() - 200;
        bytes[at] ^= 1;
    }));
    let r = doc.refused(&["verify", "--vault", "pat"]);
    assert_eq!((r.exit, r.code.as_str()), (6, "bad_signature"), "{r:?}");
    assert!(proxy.tampered() > 0);

    // 2. The relay withholds the list's entry (drops it from the page).
    proxy.attack(rewrite_log(move |_, page| {
        let before = page.entries.len();
        page.entries
            .retain(|e| LogEntry::from_bytes(e).is_ok_and(|e| e.seq() != listing));
        page.entries.len() != before
    }));
    let r = doc.refused(&["verify", "--vault", "pat"]);
    assert_eq!(r.exit, 6, "{r:?}");
    assert!(
        ["chain_broken", "missing_or_withheld"].contains(&r.code.as_str()),
        "{r:?}"
    );
    // Honest again, Dr Dee verifies; the proxy keeps a copy of the
    // patient's head entry as it passes (what a rolling-back relay serves).
    let before_removal = head(&patient, None);
    let kept: Arc<Mutex<Option<LogEntry>>> = Arc::default();
    let keep = kept.clone();
    proxy.attack(rewrite_log(move |_, page| {
        for e in &page.entries {
            if let Ok(e) = LogEntry::from_bytes(e) {
                if e.seq() == before_removal {
                    *keep.lock().unwrap() = Some(e);
                }
            }
        }
        false
    }));
    doc.ok(&["verify", "--vault", "pat"]);
    proxy.honest();
    let old_head = kept.lock().unwrap().clone().expect("the head entry passed");

    // 3. The patient removes the laptop; the relay then serves Dr Dee the
    // log as it was before the removal, so the laptop would still be the
    // owner's device in her view: a rollback of what she verified.
    patient.json(&["devices", "remove", &l_fp[..8]]);
    doc.ok(&["verify", "--vault", "pat"]);
    proxy.attack(rewrite_log(move |_, page| {
        page.entries
            .retain(|e| LogEntry::from_bytes(e).is_ok_and(|e| e.seq() <= old_head.seq()));
        page.set_head(&old_head);
        true
    }));
    let r = doc.refused(&["verify", "--vault", "pat"]);
    assert_eq!((r.exit, r.code.as_str()), (6, "rollback"), "{r:?}");
    proxy.honest();
    assert_eq!(
        doc.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );
}
