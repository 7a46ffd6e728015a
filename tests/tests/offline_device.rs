//! A device keeps a vault in its on-disk store, closes, reopens and still
//! reads its records offline, with rollback detected against the persisted
//! head.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use vault_core::store::{self, SqliteStore, Store};
use vault_core::{
    keyfile, Error, IdentityInfo, Keyring, RecordInfo, Role, SecretIdentity, VaultState,
};

const NOW: u64 = 1_700_000_000;

#[test]
fn vault_survives_restart_and_detects_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let patient = SecretIdentity::generate(&IdentityInfo {
        display_name: "Pat".into(),
        role: Role::Patient,
        registration: None,
        created_at: NOW,
    })
    .unwrap();
    let pass = secrecy::SecretString::from("a long passphrase");
    let key_file = keyfile::seal(&patient, &pass, keyfile::MIN_WORK_FACTOR).unwrap();

    let (mut state, genesis) = VaultState::create(&patient, NOW).unwrap();
    let mut log = vec![genesis];
    let (coll, e) = state.create_collection(&patient, "notes", NOW).unwrap();
    state.apply(&e).unwrap();
    log.push(e);
    let mut ct = Vec::new();
    let body = b"Allergic to penicillin";
    let (meta, e) = state
        .put_record(
            &mut Keyring::new(&patient, NOW),
            &coll,
            None,
            &RecordInfo {
                content_type: "text/plain".into(),
                title: "Allergy".into(),
                created_at: NOW,
                effective_at: None,
            },
            vault_core::RecordBody::new(&body[..], body.len() as u64),
            &mut ct,
        )
        .unwrap();
    state.apply(&e).unwrap();
    log.push(e);
    {
        let mut s = SqliteStore::open(dir.path()).unwrap();
        s.append_entries(&state.vault(), &log).unwrap();
        s.put_blob(
            meta.ciphertext_hash(),
            meta.address_kind(),
            ct.len() as u64,
            &mut ct.as_slice(),
        )
        .unwrap();
    }

    // Restart: unlock the key file, load and read offline.
    let me = keyfile::open(&key_file, &pass).unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    let vault = s.vaults().unwrap()[0];
    let loaded = store::load_vault(&s, &vault).unwrap();
    let verified = loaded.record(&meta.record()).unwrap();
    let mut out = Vec::new();
    let blob = s.open_blob(meta.ciphertext_hash()).unwrap().unwrap();
    let opened = Keyring::new(&me, NOW)
        .open(&loaded, &verified, blob, &mut out)
        .unwrap();
    assert_eq!(out, body);
    assert_eq!(opened.info.title, "Allergy");

    // A relay offering only the first two entries is rolling back.
    let short = VaultState::verify_log(&log[..2]).unwrap();
    assert!(matches!(
        short.check_persisted(&s.head(&vault).unwrap().unwrap()),
        Err(Error::Rollback {
            verified: 2,
            offered: 1
        })
    ));
}
