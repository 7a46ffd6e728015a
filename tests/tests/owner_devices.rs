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

use std::sync::Arc;

use vault_client::{devices, sync, Head, RelayClient};
use vault_core::devices::{DeviceList, GenerationKeys};
use vault_core::store::MemoryStore;
use vault_core::{
    Keyring, LogEntry, Permission, RecordBody, RecordInfo, Role, SecretIdentity, VaultState,
};
use vault_tests::forge::{forge_entry_in, signing_key};
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
    let verified = state.record(record).unwrap();
    let mut ct = Vec::new();
    client
        .get_blob(
            &state.vault(),
            verified.metadata().ciphertext_hash(),
            verified.metadata().ciphertext_len(),
            &mut ct,
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    keyring
        .open(state, &verified, ct.as_slice(), &mut out)
        .unwrap();
    out
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
        let listed = state
            .list_devices(&root, std::slice::from_ref(&v1), now)
            .unwrap();
        state.apply(&listed).unwrap();
        c_root
            .append(
                &state.vault(),
                vault_client::Head {
                    seq: 0,
                    hash: *genesis.hash(),
                },
                &[created, shared, listed],
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
        assert_eq!(removal.rotated, vec![labs]);
        assert_eq!(removal.entries.len(), 2);
        assert!(removal.dropped.is_empty());
        let v2 = removal.list.clone();
        assert_eq!((v2.serial(), v2.generation()), (2, 2));
        assert_eq!(laptop_state.owner_device_list(), Some(&v2));
        // Removing it again, or the laptop itself, or the last device, is
        // refused before anything is sent.
        for (who, lost) in [
            (&c_laptop, phone.fingerprint()),
            (&c_laptop, laptop.fingerprint()),
        ] {
            assert!(devices::remove(&mut store, who, &state.vault(), &lost)
                .await
                .is_err());
        }
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
