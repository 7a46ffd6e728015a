//! A read-write member turned malicious, against the real relay and the
//! real `vault` command: the patient (CLI) shares a collection for writing
//! with Mallory, whose client (vault-client with keys of her own) appends a
//! record whose wrapped data key does not unwrap. Every client and the
//! relay accept it (nobody but a key holder can tell). The patient's
//! `vault sync` flags it with its author, `vault export` writes everything
//! else and fails listing it, and `vault revoke` still goes through: the
//! rotation drops the record, and Mallory's next write is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use serde_json::Value;
use vault_client::sync;
use vault_core::store::MemoryStore;
use vault_core::{Keyring, LogEntry, RecordId, RecordInfo, Role, VaultId};
use vault_tests::forge::{forge_entry, sign, signing_key, META_SIGNED, META_WRAPPED};
use vault_tests::{now, principal, CliProfile, RelayProcess};

const MALLORY: u8 = 77;

#[test]
fn a_poisoned_record_does_not_make_a_writer_unrevocable() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    let p_fp = vault_core::Fingerprint::from_hex(
        patient.init("Pat Example", "patient")["fingerprint"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let vault = VaultId::from_hex(patient.json(&["create"])["vault"].as_str().unwrap()).unwrap();
    let honest = patient.run_with_stdin(
        &["--json", "add", "-", "-c", "notes", "--title", "Visit"],
        b"Felt fine.",
    );
    assert_eq!(honest.code, 0, "{}", honest.stderr);

    // Mallory publishes herself; the patient verifies her and shares
    // "notes" for writing.
    let mallory = principal(MALLORY, "Mallory", Role::Clinician);
    let client = relay.client(&mallory);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client.publish_identity()).unwrap();
    let m_fp = mallory.fingerprint().to_hex();
    patient.json(&["contacts", "add", "mal", "--lookup", &m_fp]);
    patient.json(&["share", "notes", "--with", "mal", "--write"]);

    // Mallory seals a record honestly, then corrupts its wrapped key and
    // signs it again with her own key: a valid signature over a key that
    // opens for nobody.
    let mut store = MemoryStore::new();
    let state = rt
        .block_on(sync::join_vault(&mut store, &client, &vault, &p_fp))
        .unwrap();
    let notes = state.collections()[0].id;
    let mut keyring = Keyring::new(&mallory, client.now());
    let mut ciphertext = Vec::new();
    let body = b"unreadable by design";
    let (metadata, honest_entry) = state
        .put_record(
            &mut keyring,
            &notes,
            None,
            &RecordInfo {
                content_type: "text/plain".into(),
                title: "Poison".into(),
                created_at: now(),
                effective_at: None,
            },
            vault_core::RecordBody::new(&body[..], body.len() as u64),
            &mut ciphertext,
        )
        .unwrap();
    let record: RecordId = metadata.record();
    let mut meta = metadata.to_bytes();
    for b in &mut meta[META_WRAPPED + 13..META_WRAPPED + 45] {
        *b ^= 0x5a;
    }
    let key = signing_key(MALLORY);
    let sig = sign(&key, b"vault/v1/record\0", &meta[..META_SIGNED]);
    meta[META_SIGNED..].copy_from_slice(&sig);
    let head = state.head();
    let poisoned = forge_entry(
        &key,
        &vault,
        head.seq + 1,
        &head.head,
        honest_entry.time(),
        &mallory.fingerprint(),
        3,
        &meta,
    );
    let poisoned = LogEntry::from_bytes(&poisoned).unwrap();
    rt.block_on(client.put_blobs(&vault, &[(*metadata.ciphertext_hash(), &ciphertext[..])]))
        .unwrap();
    let prev = rt.block_on(client.head(&vault)).unwrap();
    rt.block_on(client.append(&vault, prev, std::slice::from_ref(&poisoned)))
        .expect("the relay cannot tell a poisoned key from a good one");

    // The patient's sync flags it, naming Mallory.
    let synced = patient.run(&["--json", "sync"]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert!(
        synced.stderr.contains(&record.to_hex()[..8]) && synced.stderr.contains("Mallory"),
        "sync does not flag the poisoned record with its author: {}",
        synced.stderr
    );
    let v: Value = serde_json::from_str(&synced.stdout).unwrap();
    assert_eq!(v[0]["unopenable"][0]["record"], record.to_hex());
    assert_eq!(v[0]["unopenable"][0]["author"], m_fp);

    // The export writes everything else, lists the record and fails.
    let export = dir.path().join("export");
    let r = patient.run(&["--json", "export", export.to_str().unwrap()]);
    assert_eq!(r.code, 6, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&record.to_hex()), "{}", r.stderr);
    let summary: Value = serde_json::Deserializer::from_str(&r.stdout)
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(summary["records"], 1);
    assert_eq!(summary["unreadable"][0]["record"], record.to_hex());
    assert!(export.join("manifest.json.age").exists());

    // Revocation goes through and reports the dropped record.
    let revoked = patient.json(&["revoke", "mal"]);
    let dropped = &revoked["collections"][0]["dropped"];
    assert_eq!(dropped[0]["record"], record.to_hex(), "{revoked}");
    assert_eq!(dropped[0]["author"], m_fp);

    // Mallory is out: the relay no longer lets her read the log, and
    // refuses a write built on what she knew.
    match rt.block_on(client.head(&vault)) {
        Err(vault_client::ClientError::Relay { status: 403, .. }) => {}
        other => panic!("Mallory still reads the vault's head: {other:?}"),
    }
    let mut keyring = Keyring::new(&mallory, client.now());
    let (_, late) = state
        .put_record(
            &mut keyring,
            &notes,
            None,
            &RecordInfo {
                content_type: "text/plain".into(),
                title: "Again".into(),
                created_at: now(),
                effective_at: None,
            },
            vault_core::RecordBody::new(&b"x"[..], 1),
            &mut Vec::new(),
        )
        .unwrap();
    match rt.block_on(client.append(&vault, prev, &[late])) {
        Err(vault_client::ClientError::Relay { status: 403, .. }) => {}
        other => panic!("the relay did not refuse the revoked writer: {other:?}"),
    }

    // The patient's vault verifies and the export is now complete.
    patient.json(&["verify"]);
    let export2 = dir.path().join("export2");
    patient.json(&["export", export2.to_str().unwrap()]);
}
