//! Write-only deposits (`docs/format.md` §5.5): a depositor adds records to
//! one collection and opens nothing in the vault, not even its own
//! deposits; every reader of the collection opens them; rotation moves the
//! deposit key with the collection key; a revoked depositor is refused.

use super::fixture::*;
use crate::error::Error;
use crate::grant::GrantScope;
use crate::keys::{CollectionKey, KeySeal, DEPOSIT_SEALED_KEY_LEN};
use crate::log::EntryBody;
use crate::record::{self, RecordMetadata, SealTo, DEPOSIT_METADATA_LEN};
use crate::{Keyring, Permission, RecordId};

/// Bob (index 2) is St Mary's lab's gateway: a depositor of "labs". Alice
/// (index 1) reads "labs".
fn lab_vault() -> Fixture {
    let mut f = Fixture::new();
    f.put_as(0, f.labs, None, "CBC", b"the patient's own result");
    f.share(1, f.labs, Permission::Read, None);
    f.share(2, f.labs, Permission::Deposit, None);
    f
}

/// A deposit Bob seals himself (not through his client) to `key`, for
/// `record` at `version`: what a depositor could send bypassing the
/// client's checks.
fn bobs_deposit(
    f: &Fixture,
    key: &crate::DepositPublicKey,
    record: RecordId,
    version: u32,
) -> RecordMetadata {
    record::seal(
        &f.bob,
        SealTo::Deposit(key),
        record,
        version,
        &info("forged"),
        crate::RecordBody::new(&b"x"[..], 1),
        &mut Vec::new(),
    )
    .unwrap()
}

fn every_record(f: &Fixture) -> Vec<RecordId> {
    f.state.records(None).into_iter().map(|r| r.id).collect()
}

#[test]
fn a_deposit_opens_for_every_reader_and_never_for_its_depositor() {
    let mut f = lab_vault();
    let deposit = f.put_as(2, f.labs, None, "HbA1c", b"48 mmol/mol");
    assert!(deposit.is_deposit());
    assert_eq!(deposit.to_bytes().len(), DEPOSIT_METADATA_LEN);
    assert_eq!(deposit.key_seal().to_bytes().len(), DEPOSIT_SEALED_KEY_LEN);
    assert_eq!(
        RecordMetadata::from_bytes(&deposit.to_bytes()).unwrap(),
        deposit
    );
    assert_eq!(
        deposit.author(),
        f.bob.fingerprint(),
        "the verified author is the depositor"
    );

    // The owner and the reader open it.
    assert_eq!(f.open_as(0, &deposit.record()).unwrap().1, b"48 mmol/mol");
    assert_eq!(f.open_as(1, &deposit.record()).unwrap().1, b"48 mmol/mol");

    // The depositor opens nothing: not its own deposit, not the patient's
    // record, not the collection key, not any grant's key.
    for id in every_record(&f) {
        assert!(
            matches!(f.open_as(2, &id), Err(Error::AccessDenied(_))),
            "the depositor opened {id}"
        );
        let blob = *f.state.record(&id).unwrap().metadata().ciphertext_hash();
        assert!(!f.state.may_read_blob(&f.bob.fingerprint(), &id, &blob, NOW));
        let mut keyring = Keyring::new(&f.bob, NOW);
        assert!(keyring
            .check_key(&f.state, &f.state.record(&id).unwrap())
            .is_err());
    }
    let access = f.state.access(&f.bob.fingerprint(), NOW);
    assert!(access.is_member() && access.may_write());
    assert!(!access.may_read(&f.labs, &deposit.record()));
    let mut keyring = Keyring::new(&f.bob, NOW);
    assert!(matches!(
        keyring.collection_key(&f.state, &f.labs, 0),
        Err(Error::AccessDenied(_))
    ));
    // Every grant in the log: only its own opens, and gives a public key.
    for g in f.log.iter().filter_map(|e| match e.body() {
        EntryBody::GrantAdded { grant, .. } => Some(grant.clone()),
        EntryBody::CollectionCreated { owner_grant, .. } => Some(owner_grant.clone()),
        _ => None,
    }) {
        let g = g.verify(f.patient.public()).unwrap();
        assert!(g.open_collection_key(&f.bob).is_err());
        if g.member() == f.bob.fingerprint() {
            let public = g.open_deposit_key(&f.bob).unwrap();
            assert_eq!(public, f.key_of(0, f.labs).deposit_public());
        } else {
            assert!(g.open_deposit_key(&f.bob).is_err());
        }
    }
    f.reverify().unwrap();
}

#[test]
fn a_depositor_adds_only_to_its_collection_and_only_its_own_versions() {
    let mut f = lab_vault();
    let patients = f.state.records(None)[0].id;
    let mine = f.put_as(2, f.labs, None, "HbA1c", b"48");
    // A corrected result: a new version of its own deposit.
    let v2 = f.put_as(2, f.labs, Some(mine.record()), "HbA1c", b"47");
    assert_eq!(v2.version(), 2);
    assert_eq!(f.open_as(1, &mine.record()).unwrap().1, b"47");

    // Not the patient's record, not another collection: its client refuses
    // and a forged entry is refused by every verifier.
    assert!(matches!(
        f.put_entry(2, f.labs, Some(patients), "CBC", b"overwritten"),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        f.put_entry(2, f.meds, None, "x", b"x"),
        Err(Error::AccessDenied(_))
    ));
    let deposit_key = f.key_of(0, f.labs).deposit_public();
    for (record, version) in [(patients, 2), (RecordId::random(), 1)] {
        let m = bobs_deposit(&f, &deposit_key, record, version);
        if version == 1 {
            // Well formed and its own: accepted (checked, not applied).
            let e = f.forge(&f.bob, EntryBody::RecordPut { metadata: m });
            f.state.clone().apply(&e).unwrap();
        } else {
            let e = f.forge(&f.bob, EntryBody::RecordPut { metadata: m });
            assert!(matches!(f.refuse(&e), Error::Unauthorized { .. }));
        }
    }
    let meds_key = f.key_of(0, f.meds).deposit_public();
    let m = bobs_deposit(&f, &meds_key, RecordId::random(), 1);
    let e = f.forge(&f.bob, EntryBody::RecordPut { metadata: m });
    assert!(matches!(f.refuse(&e), Error::Unauthorized { .. }));

    // A depositor's record must be a deposit: one wrapped under a key of
    // its own making is refused.
    let own = CollectionKey::generate(f.state.vault(), f.labs, 0);
    let m = f.seal_with(2, &own, RecordId::random(), 1, b"x");
    let e = f.forge(&f.bob, EntryBody::RecordPut { metadata: m });
    assert!(matches!(f.refuse(&e), Error::Unauthorized { .. }));

    // No deletion, no sharing, no rotation.
    let del = f.forge(
        &f.bob,
        EntryBody::RecordDeleted {
            record: mine.record(),
            version: 3,
        },
    );
    assert!(matches!(f.refuse(&del), Error::Unauthorized { .. }));
    let mut keyring = Keyring::new(&f.bob, NOW);
    assert!(f
        .state
        .share_collection(
            &mut keyring,
            &f.labs,
            f.mallory.public(),
            Permission::Read,
            None
        )
        .is_err());
    assert!(f
        .state
        .revoke(&mut keyring, &f.labs, &[f.alice.fingerprint()])
        .is_err());
    f.reverify().unwrap();
}

#[test]
fn a_rotation_moves_the_deposit_key_and_keeps_deposits_readable() {
    let mut f = lab_vault();
    let before = f.put_as(2, f.labs, None, "HbA1c", b"48");
    let old_key = f.key_of(0, f.labs).deposit_public();
    // Alice leaves: a new epoch. Bob's new grant carries the new deposit key.
    f.revoke(1, f.labs);
    let new_key = f.key_of(0, f.labs).deposit_public();
    assert_ne!(old_key.as_bytes(), new_key.as_bytes());
    assert_eq!(new_key.epoch(), 1);
    let mut keyring = Keyring::new(&f.bob, NOW);
    assert_eq!(keyring.deposit_key(&f.state, &f.labs).unwrap(), new_key);

    // The old deposit was re-wrapped: the owner still opens it.
    assert_eq!(f.open_as(0, &before.record()).unwrap().1, b"48");
    assert!(matches!(
        f.state.record(&before.record()).unwrap().wrapped().1,
        KeySeal::Wrapped(_)
    ));
    let after = f.put_as(2, f.labs, None, "HbA1c", b"46");
    assert_eq!(after.epoch(), 1);
    assert_eq!(f.open_as(0, &after.record()).unwrap().1, b"46");

    // A deposit sealed to the previous epoch's key is refused.
    let m = bobs_deposit(&f, &old_key, RecordId::random(), 1);
    let e = f.forge(&f.bob, EntryBody::RecordPut { metadata: m });
    assert!(matches!(f.refuse(&e), Error::ContextMismatch { .. }));

    // Revoking the depositor: it is refused from then on.
    f.revoke(2, f.labs);
    assert!(matches!(
        f.put_entry(2, f.labs, None, "x", b"x"),
        Err(Error::AccessDenied(_))
    ));
    let m = bobs_deposit(&f, &new_key, RecordId::random(), 1);
    let e = f.forge(&f.bob, EntryBody::RecordPut { metadata: m });
    assert!(f.state.clone().apply(&e).is_err());
    assert!(!f.state.access(&f.bob.fingerprint(), NOW).may_write());
    f.reverify().unwrap();
}

#[test]
fn a_deposit_grant_is_collection_scoped_and_version_2() {
    let f = lab_vault();
    let grant = f
        .log
        .iter()
        .rev()
        .find_map(|e| match e.body() {
            EntryBody::GrantAdded { grant, .. } => Some(grant.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(grant.permission(), Permission::Deposit);
    assert!(matches!(grant.scope(), GrantScope::Collection { .. }));
    let bytes = grant.to_bytes();
    // As version 1 (no commitment) the same grant is malformed.
    let mut v1 = bytes.clone();
    v1[0] = 1;
    let commitment_at = 1 + 16 + 1 + 16 + 4 + 32 + 1 + 1 + 8;
    v1.drain(commitment_at..commitment_at + 32);
    assert!(matches!(
        crate::grant::Grant::from_bytes(&v1),
        Err(Error::Malformed { .. })
    ));
    // An unknown permission byte is refused.
    let mut unknown = bytes.clone();
    unknown[1 + 16 + 1 + 16 + 4 + 32] = 5;
    assert!(crate::grant::Grant::from_bytes(&unknown).is_err());
}

/// The deposit vector (`tests/vectors/deposit.json`): a collection key and
/// its deposit public key (deterministic, RFC 9180 `DeriveKeyPair`), a data
/// key sealed to it that must open, and a log whose last entry is a
/// depositor's record. Regenerate (only for a deliberate format change)
/// with `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --lib deposit_vector`.
#[test]
fn deposit_vector() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/deposit.json");
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
        let mut f = lab_vault();
        let m = f.put_as(2, f.labs, None, "HbA1c", b"48 mmol/mol");
        let key = f.key_of(0, f.labs);
        let mut keyring = Keyring::new(&f.patient, NOW);
        let data_key = keyring
            .data_key(&f.state, &f.state.record(&m.record()).unwrap())
            .unwrap();
        let v = serde_json::json!({
            "description": "docs/format.md §5.5: a vault log (patient seed [1;32], Dr Alice seed [2;32] reading, Dr Bob seed [3;32] depositing, as in vault-core's test fixture) whose last entry is Dr Bob's deposit (metadata version 3). collection_key is the owner's key of the collection at epoch 0; deposit_public is its deposit public key; sealed_key (the metadata's key field) opens with collection_key to data_key for (vault, collection, epoch 0, record, version 1).",
            "log": f.log.iter().map(|e| hex::encode(e.to_bytes())).collect::<Vec<_>>(),
            "vault": f.state.vault().to_hex(),
            "collection": f.labs.to_hex(),
            "record": m.record().to_hex(),
            "collection_key": hex::encode(key.secret()),
            "deposit_public": hex::encode(key.deposit_public().as_bytes()),
            "sealed_key": hex::encode(m.key_seal().to_bytes()),
            "data_key": hex::encode(*data_key.0),
            "ciphertext": hex::encode(&f.blobs[m.ciphertext_hash()]),
            "plaintext": "48 mmol/mol",
        });
        save_vector(&path, &v);
    }
    let v = load_vector(&path);
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    let log = vector_log(&v);
    let state = crate::VaultState::verify_log(&log).unwrap();
    let vault = crate::VaultId::from_hex(&s("vault")).unwrap();
    let collection = crate::CollectionId::from_hex(&s("collection")).unwrap();
    let record = RecordId::from_hex(&s("record")).unwrap();
    let secret: [u8; 32] = hex::decode(s("collection_key"))
        .unwrap()
        .try_into()
        .unwrap();
    let key = CollectionKey::from_secret(vault, collection, 0, zeroize::Zeroizing::new(secret));
    assert_eq!(
        hex::encode(key.deposit_public().as_bytes()),
        s("deposit_public")
    );
    let verified = state.record(&record).unwrap();
    assert!(verified.metadata().is_deposit());
    assert_eq!(
        hex::encode(verified.metadata().key_seal().to_bytes()),
        s("sealed_key")
    );
    let data_key = verified.data_key(&key).unwrap();
    assert_eq!(hex::encode(*data_key.0), s("data_key"));
    let mut out = Vec::new();
    verified
        .open_with(
            &data_key,
            hex::decode(s("ciphertext")).unwrap().as_slice(),
            &mut out,
        )
        .unwrap();
    assert_eq!(out, s("plaintext").as_bytes());
}

#[test]
fn a_writer_may_choose_a_new_records_identifier_once() {
    let mut f = lab_vault();
    let chosen = RecordId::from_bytes([0x42; 16]);
    let bob = identity(3, "Dr Bob", crate::Role::Clinician);
    assert_eq!(bob.fingerprint(), f.bob.fingerprint());
    let mut keyring = Keyring::new(&bob, NOW);
    let mut ct = Vec::new();
    let (m, e) = f
        .state
        .put_record_to(
            &mut keyring,
            &f.labs,
            crate::RecordTarget::New(chosen),
            &info("HbA1c"),
            crate::RecordBody::new(&b"48"[..], 2),
            &mut ct,
        )
        .unwrap();
    assert_eq!((m.record(), m.version()), (chosen, 1));
    f.blobs.insert(*m.ciphertext_hash(), ct);
    f.append(e);
    // The same identifier again is refused; its next version is not.
    let mut ct = Vec::new();
    assert!(matches!(
        f.state.put_record_to(
            &mut keyring,
            &f.labs,
            crate::RecordTarget::New(chosen),
            &info("HbA1c"),
            crate::RecordBody::new(&b"47"[..], 2),
            &mut ct,
        ),
        Err(Error::InvalidInput(_))
    ));
    let (m, _) = f
        .state
        .put_record_to(
            &mut keyring,
            &f.labs,
            crate::RecordTarget::Next(chosen),
            &info("HbA1c"),
            crate::RecordBody::new(&b"47"[..], 2),
            &mut ct,
        )
        .unwrap();
    assert_eq!((m.record(), m.version()), (chosen, 2));
}
