//! Content addresses (`docs/format.md` §6.3, §6.4, decision 71): new
//! records are addressed by the BLAKE3 of their ciphertext (metadata
//! versions 4 and 5); records written with SHA-256 addresses (versions 1
//! to 3) still verify and open, in the same log.

use sha2::Digest;

use super::fixture::*;
use crate::address::AddressKind;
use crate::keys::CollectionKey;
use crate::record::{sealing_with, RecordMetadata};
use crate::{Keyring, Permission, RecordId};

fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

/// Alice (index 1) reads "labs"; Bob (index 2) deposits into it.
fn lab_vault() -> Fixture {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::Read, None);
    f.share(2, f.labs, Permission::Deposit, None);
    f
}

#[test]
fn new_records_are_addressed_by_blake3_and_sha256_addressed_ones_still_open() {
    let mut f = lab_vault();
    let v4 = f.put_as(0, f.labs, None, "CBC", b"Hb 13.5 g/dL");
    let v5 = f.put_as(2, f.labs, None, "HbA1c", b"48 mmol/mol");
    let (v2, v3) = {
        let _sha = sealing_with(AddressKind::Sha256);
        (
            f.put_as(0, f.labs, None, "old CBC", b"Hb 12.9 g/dL"),
            f.put_as(2, f.labs, None, "old HbA1c", b"51 mmol/mol"),
        )
    };
    for (m, version, kind) in [
        (&v4, 4, AddressKind::Blake3),
        (&v5, 5, AddressKind::Blake3),
        (&v2, 2, AddressKind::Sha256),
        (&v3, 3, AddressKind::Sha256),
    ] {
        let bytes = m.to_bytes();
        assert_eq!(bytes[0], version);
        assert_eq!(m.address_kind(), kind);
        assert_eq!(RecordMetadata::from_bytes(&bytes).unwrap(), *m);
        let ct = &f.blobs[m.ciphertext_hash()];
        assert_eq!(kind.digest(ct), *m.ciphertext_hash(), "version {version}");
        let other = match kind {
            AddressKind::Blake3 => sha256(ct),
            AddressKind::Sha256 => blake3::hash(ct).into(),
        };
        assert_ne!(other, *m.ciphertext_hash());
        // Every reader opens it, from a log re-verified from genesis.
        let (_, body) = f.open_as(1, &m.record()).unwrap();
        assert!(!body.is_empty());
        // The version byte is signed: relabelling the address kind
        // (4 and 2, 5 and 3 have the same layout) breaks the signature.
        let mut relabelled = bytes.clone();
        relabelled[0] = match version {
            4 => 2,
            5 => 3,
            2 => 4,
            _ => 5,
        };
        let forged = RecordMetadata::from_bytes(&relabelled).unwrap();
        assert_ne!(forged.address_kind(), kind);
        assert!(forged
            .verify_signature(f.who(if version % 2 == 0 { 0 } else { 2 }).public())
            .is_err());
    }
    f.reverify().unwrap();
}

/// A reader checks a ciphertext with the hash its metadata's version
/// names, never with the other: an author who signs a version-4 metadata
/// whose address is the SHA-256 of the real ciphertext (or a version-2
/// one whose address is its BLAKE3) gets a record nobody opens, and no
/// relay can serve bytes matching only the other hash.
#[test]
fn a_ciphertext_is_checked_with_the_hash_its_version_names_only() {
    let mut f = lab_vault();
    for kind in [AddressKind::Blake3, AddressKind::Sha256] {
        let (mut m, _) = {
            let _kind = sealing_with(kind);
            f.put_entry(0, f.labs, None, "lipids", b"LDL 2.9 mmol/L")
                .unwrap()
        };
        let ct = f.blobs[m.ciphertext_hash()].clone();
        assert_eq!(m.address_kind(), kind);
        // The other hash of the same bytes, signed by the author.
        m.ciphertext_hash = match kind {
            AddressKind::Blake3 => sha256(&ct),
            AddressKind::Sha256 => blake3::hash(&ct).into(),
        };
        f.resign(0, &mut m);
        let e = f.forge(
            &f.patient,
            crate::EntryBody::RecordPut {
                metadata: m.clone(),
            },
        );
        f.append(e);
        let (result, _) = f.open_bytes_as(1, &m.record(), &ct);
        assert!(
            matches!(result, Err(crate::Error::CiphertextMismatch)),
            "{kind:?}: {result:?}"
        );
        assert!(f.open_bytes_as(0, &m.record(), &ct).0.is_err());
    }
}

/// The content-address vector (`tests/vectors/content-address.json`): a
/// vault log whose record (metadata version 4) and deposit (version 5)
/// are addressed by BLAKE3, with their ciphertexts, keys and plaintexts.
/// Regenerate (only for a deliberate format change) with
/// `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --lib content_address_vector`.
#[test]
fn content_address_vector() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/content-address.json");
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
        let mut f = lab_vault();
        let own = f.put_as(0, f.labs, None, "CBC", b"Hb 13.5 g/dL");
        let deposit = f.put_as(2, f.labs, None, "HbA1c", b"48 mmol/mol");
        let key = f.key_of(0, f.labs);
        let record = |m: &RecordMetadata, plaintext: &str| {
            let data_key = Keyring::new(&f.patient, NOW)
                .data_key(&f.state, &f.state.record(&m.record()).unwrap())
                .unwrap();
            let ct = &f.blobs[m.ciphertext_hash()];
            serde_json::json!({
                "record": m.record().to_hex(),
                "metadata": hex::encode(m.to_bytes()),
                "ciphertext": hex::encode(ct),
                "blake3": hex::encode(blake3::hash(ct).as_bytes()),
                "sha256_not_the_address": hex::encode(sha256(ct)),
                "data_key": hex::encode(*data_key.0),
                "plaintext": plaintext,
            })
        };
        let v = serde_json::json!({
            "description": "docs/format.md §6.3 and §6.4: a vault log (patient seed [1;32], Dr Alice seed [2;32] reading, Dr Bob seed [3;32] depositing, as in vault-core's test fixture) with a record the patient wrote (metadata version 4) and one Dr Bob deposited (version 5). Each record's ciphertext_hash (the metadata's bytes 81..113) is the BLAKE3 of its ciphertext; the SHA-256 is given to show it is not. collection_key is the collection's key at epoch 0; data_key is what each record's sealed key opens to.",
            "log": f.log.iter().map(|e| hex::encode(e.to_bytes())).collect::<Vec<_>>(),
            "vault": f.state.vault().to_hex(),
            "collection": f.labs.to_hex(),
            "collection_key": hex::encode(key.secret()),
            "records": [record(&own, "Hb 13.5 g/dL"), record(&deposit, "48 mmol/mol")],
        });
        save_vector(&path, &v);
    }
    let v = load_vector(&path);
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap().to_owned();
    let log = vector_log(&v);
    let state = crate::VaultState::verify_log(&log).unwrap();
    let vault = crate::VaultId::from_hex(&s(&v, "vault")).unwrap();
    let collection = crate::CollectionId::from_hex(&s(&v, "collection")).unwrap();
    let secret: [u8; 32] = hex::decode(s(&v, "collection_key"))
        .unwrap()
        .try_into()
        .unwrap();
    let key = CollectionKey::from_secret(vault, collection, 0, zeroize::Zeroizing::new(secret));
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    for (r, version) in records.iter().zip([4u8, 5]) {
        let record = RecordId::from_hex(&s(r, "record")).unwrap();
        let verified = state.record(&record).unwrap();
        let m = verified.metadata();
        assert_eq!(hex::encode(m.to_bytes()), s(r, "metadata"));
        assert_eq!(m.to_bytes()[0], version);
        assert_eq!(m.address_kind(), AddressKind::Blake3);
        let ct = hex::decode(s(r, "ciphertext")).unwrap();
        assert_eq!(hex::encode(m.ciphertext_hash()), s(r, "blake3"));
        assert_eq!(hex::encode(&m.to_bytes()[81..113]), s(r, "blake3"));
        assert_eq!(hex::encode(blake3::hash(&ct).as_bytes()), s(r, "blake3"));
        assert_eq!(hex::encode(sha256(&ct)), s(r, "sha256_not_the_address"));
        let data_key = verified.data_key(&key).unwrap();
        assert_eq!(hex::encode(*data_key.0), s(r, "data_key"));
        let mut out = Vec::new();
        verified
            .open_with(&data_key, ct.as_slice(), &mut out)
            .unwrap();
        assert_eq!(out, s(r, "plaintext").as_bytes());
        // The same bytes one bit off do not open.
        let mut flipped = ct.clone();
        flipped[0] ^= 1;
        assert!(matches!(
            verified.open_with(&data_key, flipped.as_slice(), Vec::new()),
            Err(crate::Error::CiphertextMismatch)
        ));
    }
}
