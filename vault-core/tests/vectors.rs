//! Deterministic vectors for vault's own formats (`docs/format.md`),
//! checked in under `tests/vectors/`, so a format change is a visible diff.
//!
//! Identities come from fixed seeds and are fully deterministic. The other
//! randomness of the formats (ids, keys, nonces, salts, scrypt salts) was
//! drawn once when the vectors were generated; the bytes are checked in and
//! this test verifies them: every object parses, re-encodes byte for byte,
//! verifies, and decrypts with the seed identities to the expected
//! plaintext. `formats.json` holds a version-1 log (written before entry
//! version 2; it shows that version 1 still reads), `log-v2.json` the same
//! kinds of entries as version 2 writes them, whole and redacted. For a
//! deliberate format change, delete a file and run
//! `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --test vectors`:
//! only missing files are written.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use secrecy::SecretString;
use serde_json::{json, Value};
use vault_core::{
    keyfile, Checkpoint, EntryBody, Grant, IdentityInfo, Keyring, LogEntry, Permission,
    PublicIdentity, RecordInfo, RecordMetadata, Role, SecretIdentity, VaultState, WrappedDataKey,
};

const NOW: u64 = 1_700_000_000;
const PASSPHRASE: &str = "vector passphrase";
const BODY: &[u8] = b"Hemoglobin A1c: 6.1 % (2023-11-14)";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn identities() -> [(u8, SecretIdentity); 2] {
    let make = |seed: u8, name: &str, role, registration: Option<&str>| {
        let id = SecretIdentity::from_seed(
            &[seed; 32],
            &IdentityInfo {
                display_name: name.into(),
                role,
                registration: registration.map(Into::into),
                created_at: NOW,
            },
        )
        .unwrap();
        (seed, id)
    };
    [
        make(1, "Pat Example", Role::Patient, None),
        make(2, "Dr Ada Example", Role::Clinician, Some("GMC 7654321")),
    ]
}

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

/// A vector file's `log`: each entry's kind, encoding and hash.
fn log_json(log: &[LogEntry]) -> Value {
    log.iter()
        .map(|e| {
            json!({
                "kind": e.body().kind_name(),
                "entry": h(e.to_bytes()),
                "hash": h(e.hash()),
            })
        })
        .collect()
}

/// A vector file's `checkpoint`: its encoding and the code people compare.
fn checkpoint_json(head: &Checkpoint) -> Value {
    json!({ "bytes": h(&head.to_bytes()), "code": head.code() })
}

fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

/// A small vault exercising every entry kind, as the current writers
/// build it.
struct Built {
    state: VaultState,
    log: Vec<LogEntry>,
    meta: RecordMetadata,
    ciphertext: Vec<u8>,
    info: RecordInfo,
}

fn build() -> Built {
    let [(_, patient), (_, clinician)] = identities();
    let (mut state, genesis) = VaultState::create(&patient, NOW).unwrap();
    let mut log = vec![genesis];
    let push = |state: &mut VaultState, e: LogEntry, log: &mut Vec<LogEntry>| {
        state.apply(&e).unwrap();
        log.push(e);
    };
    let (labs, e) = state.create_collection(&patient, "labs", NOW).unwrap();
    push(&mut state, e, &mut log);
    let info = RecordInfo {
        content_type: "text/plain".into(),
        title: "HbA1c".into(),
        created_at: NOW,
        effective_at: Some(1_699_920_000),
    };
    let mut ciphertext = Vec::new();
    let (meta, e) = state
        .put_record(
            &mut Keyring::new(&patient, NOW),
            &labs,
            None,
            &info,
            vault_core::RecordBody::new(BODY, BODY.len() as u64),
            &mut ciphertext,
        )
        .unwrap();
    push(&mut state, e, &mut log);
    let e = state
        .share_collection(
            &mut Keyring::new(&patient, NOW + 1),
            &labs,
            clinician.public(),
            Permission::ReadWrite,
            Some(NOW + 86_400),
        )
        .unwrap();
    push(&mut state, e, &mut log);
    let e = state
        .share_record(
            &mut Keyring::new(&patient, NOW + 2),
            &meta.record(),
            clinician.public(),
            None,
        )
        .unwrap();
    push(&mut state, e, &mut log);
    let e = state
        .revoke_record_grant(&patient, &meta.record(), &clinician.fingerprint(), NOW + 3)
        .unwrap();
    push(&mut state, e, &mut log);
    let e = state
        .revoke(
            &mut Keyring::new(&patient, NOW + 4),
            &labs,
            &[clinician.fingerprint()],
        )
        .unwrap();
    push(&mut state, e, &mut log);
    let (other, e) = state
        .put_record(
            &mut Keyring::new(&patient, NOW + 5),
            &labs,
            None,
            &info,
            vault_core::RecordBody::new(BODY, BODY.len() as u64),
            std::io::sink(),
        )
        .unwrap();
    push(&mut state, e, &mut log);
    let e = state
        .delete_record(&patient, &other.record(), NOW + 6)
        .unwrap();
    push(&mut state, e, &mut log);
    Built {
        state,
        log,
        meta,
        ciphertext,
        info,
    }
}

/// The format vectors (`formats.json`; its log is of version 1, written
/// before version 2 and kept to show that version 1 still reads).
fn generate() -> Value {
    let [(_, patient), _] = identities();
    let Built {
        state,
        log,
        meta,
        ciphertext,
        info,
    } = build();
    let key_file = keyfile::seal(
        &patient,
        &SecretString::from(PASSPHRASE),
        keyfile::MIN_WORK_FACTOR,
    )
    .unwrap();
    let head = state.head();
    json!({
        "comment": "Generated by vault-core/tests/vectors.rs; see docs/format.md. Hex throughout.",
        "identities": identities().iter().map(|(seed, id)| json!({
            "seed_byte": seed,
            "document": h(id.public().to_bytes()),
            "text": id.public().to_text(),
            "fingerprint": id.fingerprint().to_hex(),
            "fingerprint_digits": id.fingerprint().to_string(),
            "age_recipient": id.public().age_recipient(),
        })).collect::<Vec<_>>(),
        "key_file": { "passphrase": PASSPHRASE, "age_file": h(&key_file) },
        "record": {
            "metadata": h(&meta.to_bytes()),
            "wrapped_key": h(&RecordMetadata::from_bytes(&meta.to_bytes()).unwrap().to_bytes()[113..174]),
            "ciphertext": h(&ciphertext),
            "body": h(BODY),
            "title": info.title,
            "content_type": info.content_type,
        },
        "log": log_json(&log),
        "checkpoint": checkpoint_json(&head),
    })
}

/// The version-2 log vectors (`log-v2.json`): every entry whole and
/// redacted, its scope tag and hash, and whether a relay shows it whole to
/// the clinician (granted, then revoked).
fn generate_v2() -> Value {
    let [_, (_, clinician)] = identities();
    let Built { state, log, .. } = build();
    let head = state.head();
    json!({
        "comment": "Generated by vault-core/tests/vectors.rs; see docs/format.md §8.1 and §8.8. Hex throughout. Identities as in formats.json.",
        "log": log.iter().map(|e| json!({
            "kind": e.body().kind_name(),
            "entry": h(e.to_bytes()),
            "redacted": h(&e.redacted_bytes().unwrap()),
            "scope": h(e.scope()),
            "hash": h(e.hash()),
            "whole_to_clinician": state.shows_in_full(e, &clinician.fingerprint()),
        })).collect::<Vec<_>>(),
        "checkpoint": checkpoint_json(&head),
    })
}

fn load() -> Value {
    load_file("formats.json", generate)
}

fn load_file(name: &str, generate: fn() -> Value) -> Value {
    let path = dir().join(name);
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() && !path.exists() {
        std::fs::create_dir_all(dir()).unwrap();
        let v = generate();
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with VAULT_REGENERATE_VECTORS=1",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// The whole entries of a vector file's `log`, each checked: it parses,
/// re-encodes byte for byte, and has the recorded hash and kind.
fn log_of(v: &Value) -> Vec<LogEntry> {
    v["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let bytes = unh(&e["entry"]);
            let entry = LogEntry::from_bytes(&bytes).unwrap();
            assert_eq!(
                entry.to_bytes(),
                bytes,
                "entry does not re-encode canonically"
            );
            assert_eq!(h(entry.hash()), e["hash"].as_str().unwrap());
            assert_eq!(entry.body().kind_name(), e["kind"].as_str().unwrap());
            entry
        })
        .collect()
}

/// The vector file's checkpoint re-encodes, is `state`'s head, and has the
/// recorded code.
fn assert_checkpoint(state: &VaultState, v: &Value) {
    let bytes = unh(&v["checkpoint"]["bytes"]);
    let cp = Checkpoint::from_bytes(&bytes).unwrap();
    assert_eq!(cp.to_bytes(), bytes);
    assert_eq!(state.head(), cp);
    assert_eq!(cp.code(), v["checkpoint"]["code"].as_str().unwrap());
}

#[test]
fn identity_vectors_are_deterministic() {
    let v = load();
    for ((seed, id), want) in identities().iter().zip(v["identities"].as_array().unwrap()) {
        assert_eq!(want["seed_byte"], json!(seed));
        assert_eq!(
            h(id.public().to_bytes()),
            want["document"].as_str().unwrap(),
            "identity document changed"
        );
        let parsed = PublicIdentity::from_bytes(&unh(&want["document"])).unwrap();
        assert_eq!(parsed.to_bytes(), unh(&want["document"]));
        assert_eq!(
            PublicIdentity::from_text(want["text"].as_str().unwrap()).unwrap(),
            parsed
        );
        assert_eq!(
            parsed.fingerprint().to_hex(),
            want["fingerprint"].as_str().unwrap()
        );
        assert_eq!(
            parsed.fingerprint().to_string(),
            want["fingerprint_digits"].as_str().unwrap()
        );
        assert_eq!(
            parsed.age_recipient(),
            want["age_recipient"].as_str().unwrap()
        );
    }
}

#[test]
fn key_file_vector_opens_to_the_seed_identity() {
    let v = load();
    let [(_, patient), _] = identities();
    let file = unh(&v["key_file"]["age_file"]);
    let id = keyfile::open(
        &file,
        &SecretString::from(v["key_file"]["passphrase"].as_str().unwrap().to_owned()),
    )
    .unwrap();
    assert_eq!(id.public(), patient.public());
}

#[test]
fn log_vectors_verify_and_reencode() {
    let v = load();
    let entries = log_of(&v);
    let kinds: Vec<&str> = entries.iter().map(|e| e.body().kind_name()).collect();
    for kind in [
        "genesis",
        "collection-created",
        "record-put",
        "grant-added",
        "rotation",
        "record-grant-revoked",
        "record-deleted",
    ] {
        assert!(kinds.contains(&kind), "vectors lack a {kind} entry");
    }
    let state = VaultState::verify_log(&entries).unwrap();
    assert_checkpoint(&state, &v);

    for e in &entries {
        match e.body() {
            EntryBody::GrantAdded { grant, .. } => {
                let bytes = grant.to_bytes();
                assert_eq!(Grant::from_bytes(&bytes).unwrap().to_bytes(), bytes);
                grant.verify(state.owner()).unwrap();
            }
            EntryBody::RecordPut { metadata } => {
                let bytes = metadata.to_bytes();
                assert_eq!(
                    RecordMetadata::from_bytes(&bytes).unwrap().to_bytes(),
                    bytes
                );
            }
            _ => {}
        }
    }
}

#[test]
fn log_v2_vectors_verify_redact_and_reencode() {
    let v = load_file("log-v2.json", generate_v2);
    let [_, (_, clinician)] = identities();
    let mut whole = Vec::new();
    let mut served = Vec::new();
    for e in v["log"].as_array().unwrap() {
        let bytes = unh(&e["entry"]);
        let entry = LogEntry::from_bytes(&bytes).unwrap();
        assert_eq!(entry.version(), 2);
        assert_eq!(entry.to_bytes(), bytes);
        assert_eq!(h(entry.hash()), e["hash"].as_str().unwrap());
        assert_eq!(h(entry.scope()), e["scope"].as_str().unwrap());
        assert_eq!(entry.body().kind_name(), e["kind"].as_str().unwrap());
        let redacted_bytes = unh(&e["redacted"]);
        assert_eq!(entry.redacted_bytes().unwrap(), redacted_bytes);
        let redacted = LogEntry::from_bytes(&redacted_bytes).unwrap();
        assert_eq!(redacted.to_bytes(), redacted_bytes);
        assert_eq!(redacted.hash(), entry.hash(), "both forms hash alike");
        assert!(redacted.is_redacted());
        served.push(if e["whole_to_clinician"].as_bool().unwrap() {
            entry.clone()
        } else {
            redacted
        });
        whole.push(entry);
    }
    let state = VaultState::verify_log(&whole).unwrap();
    let cp = Checkpoint::from_bytes(&unh(&v["checkpoint"]["bytes"])).unwrap();
    assert_eq!(state.head(), cp);
    assert_eq!(cp.code(), v["checkpoint"]["code"].as_str().unwrap());
    for (e, s) in whole.iter().zip(&served) {
        assert_eq!(
            state.shows_in_full(e, &clinician.fingerprint()),
            !s.is_redacted()
        );
    }
    // The clinician, revoked in this log, verifies the chain as served.
    let theirs = VaultState::verify_log_as(&clinician.fingerprint(), NOW, &served, None).unwrap();
    assert_eq!(theirs.head(), cp);
    assert!(served.iter().any(LogEntry::is_redacted));
}

#[test]
fn record_vector_opens_to_the_expected_plaintext() {
    let v = load();
    let [(_, patient), (_, clinician)] = identities();
    let entries: Vec<LogEntry> = v["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| LogEntry::from_bytes(&unh(&e["entry"])).unwrap())
        .collect();
    let state = VaultState::verify_log(&entries).unwrap();
    let meta = RecordMetadata::from_bytes(&unh(&v["record"]["metadata"])).unwrap();
    assert_eq!(meta.to_bytes(), unh(&v["record"]["metadata"]));
    let wrapped = unh(&v["record"]["wrapped_key"]);
    assert_eq!(
        WrappedDataKey::from_bytes(&wrapped).unwrap().to_bytes(),
        wrapped
    );
    let verified = state.check_offered_metadata(&meta).unwrap();
    let mut out = Vec::new();
    let opened = Keyring::new(&patient, NOW)
        .open(
            &state,
            &verified,
            unh(&v["record"]["ciphertext"]).as_slice(),
            &mut out,
        )
        .unwrap();
    assert_eq!(out, unh(&v["record"]["body"]));
    assert_eq!(opened.info.title, v["record"]["title"].as_str().unwrap());
    assert_eq!(
        opened.info.content_type,
        v["record"]["content_type"].as_str().unwrap()
    );
    // The clinician was revoked in the vectors' log: refused.
    assert!(Keyring::new(&clinician, NOW)
        .open(
            &state,
            &verified,
            unh(&v["record"]["ciphertext"]).as_slice(),
            std::io::sink()
        )
        .is_err());
}

/// The request-signature vector of `docs/relay-api.md` ("Test vector"):
/// the signed bytes are built here independently of `vault_core::request`,
/// byte by byte as the document describes them, and must be what the
/// library signs; the file and the document carry the same values.
fn request_vector() -> Value {
    let [(seed, patient), _] = identities();
    let method = "POST";
    let path = "/v1/vaults/00112233445566778899aabbccddeeff/log?since=3";
    let origin_input = "HTTPS://Relay.Example:443/";
    let origin = vault_core::request::RelayOrigin::parse(origin_input).unwrap();
    let timestamp = NOW;
    let nonce: [u8; 16] = core::array::from_fn(|i| i as u8);
    let body = br#"{"prev":null}"#;
    let digest = vault_core::request::body_digest(body);
    let auth = vault_core::request::RequestAuth::sign_with_nonce(
        &patient, method, path, &origin, timestamp, nonce, digest,
    )
    .unwrap();

    let mut signed = Vec::new();
    signed.extend_from_slice(b"vault-relay/v1/request\0");
    signed.push(2);
    for text in [method, path, origin.as_str()] {
        signed.extend_from_slice(&(text.len() as u16).to_be_bytes());
        signed.extend_from_slice(text.as_bytes());
    }
    signed.extend_from_slice(patient.fingerprint().as_bytes());
    signed.extend_from_slice(&timestamp.to_be_bytes());
    signed.extend_from_slice(&nonce);
    signed.extend_from_slice(&digest);
    vault_core::verify_with_context(patient.public(), b"", &signed, &auth.signature).unwrap();

    let headers: serde_json::Map<String, Value> = auth
        .headers()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    json!({
        "seed": h(&[seed; 32]),
        "identity": patient.public().to_text(),
        "fingerprint": patient.fingerprint().to_hex(),
        "method": method,
        "path_and_query": path,
        "relay_url": origin_input,
        "relay_origin": origin.as_str(),
        "timestamp": timestamp,
        "nonce": h(&nonce),
        "body": String::from_utf8(body.to_vec()).unwrap(),
        "signed_bytes": h(&signed),
        "headers": Value::Object(headers),
    })
}

#[test]
fn request_signature_vector_matches_the_document() {
    let path = dir().join("request.json");
    let generated = request_vector();
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&generated).unwrap() + "\n",
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with VAULT_REGENERATE_VECTORS=1",
            path.display()
        )
    });
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stored, generated, "the request vector changed");
    // The checked-in headers parse and verify for the vector's relay only.
    let headers = stored["headers"].as_object().unwrap();
    let auth =
        vault_core::request::RequestAuth::from_headers(|k| headers.get(k).and_then(Value::as_str))
            .unwrap();
    let signer = PublicIdentity::from_text(stored["identity"].as_str().unwrap()).unwrap();
    let origin =
        vault_core::request::RelayOrigin::parse(stored["relay_origin"].as_str().unwrap()).unwrap();
    let method = stored["method"].as_str().unwrap();
    let pq = stored["path_and_query"].as_str().unwrap();
    auth.verify(&signer, method, pq, &origin).unwrap();
    let other = vault_core::request::RelayOrigin::parse("https://other.example").unwrap();
    assert!(auth.verify(&signer, method, pq, &other).is_err());
    // The document quotes this very file's values.
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/relay-api.md"),
    )
    .unwrap();
    // The signed bytes are quoted as lines of hex, each with a comment.
    let hex_lines: String = doc
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|t| t.len() % 2 == 0 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    let signed = stored["signed_bytes"].as_str().unwrap();
    assert!(
        hex_lines.contains(signed),
        "docs/relay-api.md does not quote the vector's signed bytes {signed}"
    );
    for key in ["fingerprint", "nonce", "identity", "path_and_query"] {
        let value = stored[key].as_str().unwrap();
        assert!(
            doc.contains(value),
            "docs/relay-api.md does not quote the vector's {key} {value}"
        );
    }
    for (name, value) in headers {
        let line = format!("{name}: {}", value.as_str().unwrap());
        assert!(doc.contains(&line), "docs/relay-api.md lacks `{line}`");
    }
}

/// The relays-named vectors (`relays.json`, `docs/format.md` §8.9): a
/// vault whose owner names a home and two mirrors, then moves the home to
/// one of them.
fn generate_relays() -> Value {
    let [(_, patient), _] = identities();
    let (mut state, genesis) = VaultState::create(&patient, NOW).unwrap();
    let mut log = vec![genesis];
    for (home, mirrors) in relay_namings() {
        let e = state
            .name_relays(&patient, relays(home, mirrors), NOW + 60)
            .unwrap();
        state.apply(&e).unwrap();
        log.push(e);
    }
    let head = state.head();
    json!({
        "comment": "Generated by vault-core/tests/vectors.rs; see docs/format.md §8.9. Hex throughout. Identities as in formats.json. The second relays-named entry moves the home to a former mirror.",
        "log": log_json(&log),
        "checkpoint": checkpoint_json(&head),
    })
}

type Naming = (&'static str, &'static [&'static str]);

fn relay_namings() -> [Naming; 2] {
    [
        (
            "https://relay.nhs.example",
            &[
                "https://mirror.eu.example",
                "https://mirror.uk.example:8443",
            ],
        ),
        (
            "https://mirror.uk.example:8443",
            &["https://mirror.eu.example", "https://relay.nhs.example"],
        ),
    ]
}

fn relays(home: &str, mirrors: &[&str]) -> vault_core::Relays {
    let origin = |s: &str| vault_core::request::RelayOrigin::parse(s).unwrap();
    vault_core::Relays::new(origin(home), mirrors.iter().map(|m| origin(m)).collect()).unwrap()
}

#[test]
fn relays_vectors_verify_and_name_the_home() {
    let v = load_file("relays.json", generate_relays);
    let [_, (_, clinician)] = identities();
    let entries = log_of(&v);
    let state = VaultState::verify_log(&entries).unwrap();
    assert_checkpoint(&state, &v);
    let [_, (home, mirrors)] = relay_namings();
    assert_eq!(state.relays(), Some(&relays(home, mirrors)));
    for e in &entries[1..] {
        assert_eq!(e.body().kind_name(), "relays-named");
        assert_eq!(*e.scope(), [0; 32], "every reader sees the relays");
        assert!(state.shows_in_full(e, &clinician.fingerprint()));
    }
}

/// The record-purged vectors (`purge.json`, `docs/format.md` §8.7): a
/// record put, replaced by a second version, then purged through its
/// first; the file records the purged version's ciphertext address.
fn generate_purge() -> Value {
    let [(_, patient), _] = identities();
    let (mut state, genesis) = VaultState::create(&patient, NOW).unwrap();
    let mut log = vec![genesis];
    let (labs, e) = state.create_collection(&patient, "labs", NOW).unwrap();
    state.apply(&e).unwrap();
    log.push(e);
    let info = RecordInfo {
        content_type: "text/plain".into(),
        title: "HbA1c".into(),
        created_at: NOW,
        effective_at: None,
    };
    let mut record = None;
    for at in [NOW + 1, NOW + 2] {
        let (meta, e) = state
            .put_record(
                &mut Keyring::new(&patient, at),
                &labs,
                record,
                &info,
                vault_core::RecordBody::new(BODY, BODY.len() as u64),
                std::io::sink(),
            )
            .unwrap();
        state.apply(&e).unwrap();
        log.push(e);
        record = Some(meta.record());
    }
    let record = record.unwrap();
    let e = state.purge_record(&patient, &record, NOW + 3).unwrap();
    state.apply(&e).unwrap();
    log.push(e);
    let head = state.head();
    json!({
        "comment": "Generated by vault-core/tests/vectors.rs; see docs/format.md §8.7. Hex throughout. Identities as in formats.json. Version 1 of the record is purged; version 2 stays.",
        "log": log_json(&log),
        "record": record.to_hex(),
        "purged_ciphertexts": state.purged_ciphertexts(&record).iter().map(|c| h(c)).collect::<Vec<_>>(),
        "checkpoint": checkpoint_json(&head),
    })
}

#[test]
fn purge_vectors_verify_and_purge_the_first_version() {
    let v = load_file("purge.json", generate_purge);
    let [(_, patient), _] = identities();
    let entries = log_of(&v);
    let state = VaultState::verify_log(&entries).unwrap();
    assert_checkpoint(&state, &v);
    let kinds: Vec<&str> = entries.iter().map(|e| e.body().kind_name()).collect();
    assert_eq!(
        kinds,
        [
            "genesis",
            "collection-created",
            "record-put",
            "record-put",
            "record-purged"
        ]
    );
    // What is purged is the first put's ciphertext, as recorded.
    let first = match entries[2].body() {
        EntryBody::RecordPut { metadata } => *metadata.ciphertext_hash(),
        other => panic!("not a record-put: {}", other.kind_name()),
    };
    let record = match entries[4].body() {
        EntryBody::RecordPurged { record, through } => {
            assert_eq!(*through, 1);
            *record
        }
        other => panic!("not a record-purged: {}", other.kind_name()),
    };
    assert_eq!(record.to_hex(), v["record"].as_str().unwrap());
    assert_eq!(state.purged_ciphertexts(&record), vec![first]);
    let recorded: Vec<String> = v["purged_ciphertexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recorded, vec![h(&first)]);
    // Purging the same versions again is refused (§8.7).
    assert!(state.purge_record(&patient, &record, NOW + 4).is_err());
}
