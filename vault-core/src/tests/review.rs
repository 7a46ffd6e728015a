//! The security review's findings at the level of the log's rules: a
//! read-write member who poisons a record cannot make themselves
//! unrevocable, a collection never grows past what one rotation carries,
//! replaced versions stay readable to those who held their key (the owner
//! always), and a member granted later cannot open what was replaced or
//! deleted before.

use super::fixture::*;
use crate::error::Error;
use crate::keys::CollectionKey;
use crate::log::{EntryBody, LogEntry};
use crate::vault::{MAX_COLLECTION_MEMBERS, MAX_COLLECTION_RECORDS};
use crate::{Keyring, Permission, RecordId};

/// A record whose wrapped data key does not unwrap under the collection's
/// key: sealed by a read-write member (alice) under a key of her own making
/// for the same collection and epoch, and signed by her. Nothing can tell
/// it apart before someone tries to unwrap it.
fn poisoned_record(f: &mut Fixture) -> RecordId {
    let epoch = f
        .state
        .collections()
        .into_iter()
        .find(|c| c.id == f.labs)
        .unwrap()
        .epoch;
    let own_key = CollectionKey::generate(f.state.vault(), f.labs, epoch);
    let record = RecordId::from_bytes([0x5a; 16]);
    let m = f.seal_with(1, &own_key, record, 1, b"unreadable");
    let e = f.forge(&f.alice, EntryBody::RecordPut { metadata: m });
    f.append(e);
    record
}

#[test]
fn a_poisoned_record_does_not_make_its_writer_unrevocable() {
    let mut f = Fixture::new();
    let honest = f.put_as(0, f.labs, None, "CBC", b"haemoglobin 13.5");
    f.share(1, f.labs, Permission::ReadWrite, None);
    let poisoned = poisoned_record(&mut f);
    assert!(matches!(
        f.open_as(0, &poisoned),
        Err(Error::DecryptionFailed)
    ));

    // The owner's revocation goes through and drops the poisoned record in
    // the same entry.
    let mut keyring = Keyring::new(&f.patient, NOW);
    let e = f
        .state
        .revoke(&mut keyring, &f.labs, &[f.alice.fingerprint()])
        .unwrap();
    let EntryBody::Rotation(r) = e.body() else {
        panic!("not a rotation")
    };
    assert_eq!(r.dropped, vec![poisoned]);
    assert_eq!(r.rewraps.len(), 1);
    f.append(e.clone());

    // The kind-8 entry survives encoding and verification from genesis.
    assert_eq!(LogEntry::from_bytes(e.to_bytes()).unwrap(), e);
    f.reverify().unwrap();
    assert!(matches!(
        f.state.record(&poisoned),
        Err(Error::Missing { .. })
    ));
    assert_eq!(
        f.open_as(0, &honest.record()).unwrap().1,
        b"haemoglobin 13.5"
    );

    // Alice is out: she cannot write, nor open new records.
    let refused = f.put_entry(1, f.labs, None, "after", b"x");
    assert!(matches!(refused, Err(Error::AccessDenied(_))));
    let later = f.put_as(0, f.labs, None, "later", b"new result");
    assert!(f.open_as(1, &later.record()).is_err());
}

#[test]
fn a_rotation_accounts_for_every_live_record_exactly_once() {
    let mut f = Fixture::new();
    let a = f.put_as(0, f.labs, None, "A", b"a");
    f.put_as(0, f.labs, None, "B", b"b");
    f.share(1, f.labs, Permission::ReadWrite, None);
    let mut keyring = Keyring::new(&f.patient, NOW);
    let e = f
        .state
        .revoke(&mut keyring, &f.labs, &[f.alice.fingerprint()])
        .unwrap();
    let EntryBody::Rotation(r) = e.body().clone() else {
        panic!("not a rotation")
    };
    // An owner (or a forger holding the owner's key) may drop a record, but
    // not re-wrap and drop it at once, and not drop what is not live.
    let mut twice = r.clone();
    twice.dropped = vec![a.record()];
    let mut unknown = r.clone();
    unknown.dropped = vec![RecordId::from_bytes([0xee; 16])];
    for bad in [twice, unknown] {
        let e = f.forge(&f.patient, EntryBody::Rotation(bad));
        assert!(matches!(
            f.refuse(&e),
            Error::InvalidEntry { reason, .. }
                if reason == "rotation must re-wrap or drop every live record of the collection, each once"
        ));
    }
    // Dropping an honest record is the owner's right (a deletion).
    let mut drop_a = r;
    drop_a.rewraps.retain(|rw| rw.record != a.record());
    drop_a.dropped = vec![a.record()];
    let e = f.forge(&f.patient, EntryBody::Rotation(drop_a));
    f.append(e);
    assert!(f.state.record(&a.record()).is_err());
}

#[test]
fn a_kind_8_rotation_must_drop_something() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::Read, None);
    f.revoke(1, f.labs);
    let e = f.log.last().unwrap().clone();
    // A plain rotation is kind 6, byte for byte as before; relabelled kind
    // 8 it lacks the dropped list; with an empty list it is refused.
    let mut bytes = e.to_bytes().to_vec();
    let kind_at = 1 + 16 + 8 + 32 + 32 + 1 + 8 + 32;
    assert_eq!(bytes[kind_at], 6);
    bytes[kind_at] = 8;
    assert!(LogEntry::from_bytes(&bytes).is_err());
}

#[test]
fn a_collection_never_outgrows_one_rotation() {
    let mut f = Fixture::new();
    let first = f.put_as(0, f.labs, None, "first", b"1");
    f.state
        .fill_collection_for_test(&f.labs, MAX_COLLECTION_RECORDS, MAX_COLLECTION_MEMBERS);
    let (_, e) = f.put_entry(0, f.labs, None, "one too many", b"x").unwrap();
    assert!(matches!(
        f.refuse(&e),
        Error::InvalidEntry { reason, .. }
            if reason == "the collection already holds the maximum number of records"
    ));
    // A new version of a record already there is fine.
    f.put_as(0, f.labs, Some(first.record()), "first", b"1b");
    let member = f.bob.public().clone();
    let mut keyring = Keyring::new(&f.patient, NOW);
    let e = f
        .state
        .share_collection(&mut keyring, &f.labs, &member, Permission::Read, None)
        .unwrap();
    assert!(matches!(
        f.refuse(&e),
        Error::InvalidEntry { reason, .. }
            if reason == "the collection already has the maximum number of members"
    ));
}

#[test]
fn replaced_versions_open_after_a_rotation_for_those_who_held_the_key() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::Read, None);
    f.share(2, f.labs, Permission::Read, None);
    let v1 = f.put_as(0, f.labs, None, "report", b"first draft");
    f.revoke(2, f.labs); // epoch 1: v1 re-wrapped
    f.put_as(0, f.labs, Some(v1.record()), "report", b"final"); // v2
    f.revoke(1, f.labs); // epoch 2

    for who in [0, 1] {
        let verified = f.state.record_version(&v1.record(), 1).unwrap();
        let blob = f.blobs[v1.ciphertext_hash()].clone();
        let (opened, body) = f.open_verified(who, &verified, &blob);
        if who == 0 {
            opened.unwrap();
            assert_eq!(body, b"first draft");
        } else {
            // Alice held epoch 1's key, but she is no longer a member: the
            // relay does not serve her the ciphertext.
            assert!(!f
                .state
                .may_read_version(&f.alice.fingerprint(), &v1.record(), 1, NOW));
        }
    }
    assert!(f
        .state
        .may_read_version(&f.patient.fingerprint(), &v1.record(), 1, NOW));
}

#[test]
fn a_member_granted_later_cannot_open_what_was_replaced_or_deleted_before() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::Read, None);
    let a = f.put_as(0, f.labs, None, "HIV test", b"positive (entered in error)");
    f.put_as(0, f.labs, Some(a.record()), "HIV test", b"redacted");
    let b = f.put_as(0, f.labs, None, "note", b"to be deleted");
    let del = f.state.delete_record(&f.patient, &b.record(), NOW).unwrap();
    f.append(del);

    // Granting the current key now would hand bob the key that opens the
    // replaced and deleted versions: the owner's client rotates first.
    assert!(f.state.needs_rotation_before_grant(&f.labs));
    let mut keyring = Keyring::new(&f.patient, NOW);
    let rekey = f.state.revoke(&mut keyring, &f.labs, &[]).unwrap();
    f.append(rekey);
    assert!(!f.state.needs_rotation_before_grant(&f.labs));
    f.share(2, f.labs, Permission::Read, None);

    let bob = f.bob.fingerprint();
    assert!(f.state.may_read_version(&bob, &a.record(), 2, NOW));
    assert!(!f.state.may_read_version(&bob, &a.record(), 1, NOW));
    assert!(!f.state.may_read_version(&bob, &b.record(), 1, NOW));
    assert!(!f
        .state
        .may_read_blob(&bob, &a.record(), a.ciphertext_hash(), NOW));
    let old = f.state.record_version(&a.record(), 1).unwrap();
    let (opened, body) = f.open_verified(2, &old, &f.blobs[a.ciphertext_hash()]);
    assert!(matches!(opened, Err(Error::AccessDenied(_))));
    assert!(body.is_empty());
    assert_eq!(f.open_as(2, &a.record()).unwrap().1, b"redacted");

    // Alice, a member when the first version was current, still may.
    let alice = f.alice.fingerprint();
    assert!(f.state.may_read_version(&alice, &a.record(), 1, NOW));
    let (opened, body) = f.open_verified(1, &old, &f.blobs[a.ciphertext_hash()]);
    opened.unwrap();
    assert_eq!(body, b"positive (entered in error)");
}

#[test]
fn the_largest_rotation_is_the_one_format_md_states() {
    // docs/format.md §8.2 "Collection limits" gives this figure.
    assert_eq!(crate::log::MAX_ROTATION_LEN, 10_207_432);
}

/// The kind-8 vector (`tests/vectors/rotation-dropped.json`): a log whose
/// last entry is a rotation dropping a poisoned record. Regenerate (only
/// for a deliberate format change) with
/// `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --lib rotation_dropped_vector`.
#[test]
fn rotation_dropped_vector() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/rotation-dropped.json");
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
        let mut f = Fixture::new();
        f.put_as(0, f.labs, None, "CBC", b"haemoglobin 13.5");
        f.share(1, f.labs, Permission::ReadWrite, None);
        let poisoned = poisoned_record(&mut f);
        f.revoke(1, f.labs);
        let v = serde_json::json!({
            "description": "docs/format.md §8.6: a vault log (patient seed [1;32], Dr Alice seed [2;32], as in vault-core's test fixture) whose last entry is a kind-8 rotation revoking Dr Alice and dropping the record she sealed with a key of her own",
            "log": f.log.iter().map(|e| hex::encode(e.to_bytes())).collect::<Vec<_>>(),
            "dropped": [poisoned.to_hex()],
        });
        save_vector(&path, &v);
    }
    let v = load_vector(&path);
    let log = vector_log(&v);
    let state = crate::VaultState::verify_log(&log).unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.to_bytes()[1 + 16 + 8 + 32 + 8 + 32], 8, "kind 8");
    let EntryBody::Rotation(r) = last.body() else {
        panic!("not a rotation")
    };
    let dropped = RecordId::from_hex(v["dropped"][0].as_str().unwrap()).unwrap();
    assert_eq!(r.dropped, vec![dropped]);
    assert!(state.record(&dropped).is_err());
}

#[test]
fn an_add_only_member_adds_but_never_replaces_or_deletes() {
    let mut f = Fixture::new();
    let patients = f.put_as(0, f.labs, None, "CBC", b"the patient's own");
    f.share(1, f.labs, Permission::Add, None);
    // Alice adds a result and a corrected version of it.
    let hers = f.put_as(1, f.labs, None, "ECG", b"sinus rhythm");
    f.put_as(
        1,
        f.labs,
        Some(hers.record()),
        "ECG",
        b"sinus rhythm, corrected",
    );
    // She may not replace the patient's record: her client refuses, and a
    // forged entry is refused by every verifier...
    assert!(matches!(
        f.put_entry(1, f.labs, Some(patients.record()), "CBC", b"overwritten"),
        Err(Error::AccessDenied(_))
    ));
    let key = f.key_of(1, f.labs);
    let m = f.seal_with(1, &key, patients.record(), 2, b"overwritten");
    let e = f.forge(&f.alice, EntryBody::RecordPut { metadata: m });
    assert!(matches!(
        f.refuse(&e),
        Error::Unauthorized { reason, .. }
            if reason == "may add records but not replace one someone else created"
    ));
    // ...nor delete anything, her own included.
    for record in [patients.record(), hers.record()] {
        assert!(matches!(
            f.state.delete_record(&f.alice, &record, NOW),
            Err(Error::AccessDenied(_))
        ));
        let version = f.state.record(&record).unwrap().metadata().version() + 1;
        let e = f.forge(&f.alice, EntryBody::RecordDeleted { record, version });
        assert!(matches!(f.refuse(&e), Error::Unauthorized { .. }));
    }
    // The permission survives the grant's encoding and a rotation.
    f.share(2, f.labs, Permission::Read, None);
    f.revoke(2, f.labs);
    let access = f.state.access(&f.alice.fingerprint(), NOW);
    assert_eq!(access.collections[&f.labs].permission, Permission::Add);
    f.reverify().unwrap();
}

#[test]
fn the_owner_purges_old_versions_for_good() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::ReadWrite, None);
    let v1 = f.put_as(0, f.labs, None, "HIV test", b"positive (entered in error)");
    let v2 = f.put_as(0, f.labs, Some(v1.record()), "HIV test", b"pending");
    let v3 = f.put_as(0, f.labs, Some(v1.record()), "HIV test", b"negative");
    let record = v1.record();

    // A member may not purge; the current version cannot be purged.
    let e = f.forge(&f.alice, EntryBody::RecordPurged { record, through: 1 });
    assert!(matches!(f.refuse(&e), Error::Unauthorized { .. }));
    let e = f.forge(&f.patient, EntryBody::RecordPurged { record, through: 3 });
    assert!(matches!(f.refuse(&e), Error::InvalidEntry { .. }));

    let purge = f.state.purge_record(&f.patient, &record, NOW).unwrap();
    assert_eq!(LogEntry::from_bytes(purge.to_bytes()).unwrap(), purge);
    f.append(purge);
    assert_eq!(
        f.state.purged_ciphertexts(&record),
        vec![*v1.ciphertext_hash(), *v2.ciphertext_hash()]
    );
    for version in [1, 2] {
        assert!(matches!(
            f.state.record_version(&record, version),
            Err(Error::Missing { .. })
        ));
        for who in [&f.patient, &f.alice] {
            assert!(!f
                .state
                .may_read_version(&who.fingerprint(), &record, version, NOW));
        }
    }
    assert!(!f
        .state
        .may_read_blob(&f.patient.fingerprint(), &record, v1.ciphertext_hash(), NOW));
    assert_eq!(f.open_as(1, &record).unwrap().1, b"negative");
    assert!(f
        .state
        .may_read_blob(&f.alice.fingerprint(), &record, v3.ciphertext_hash(), NOW));
    assert!(matches!(
        f.state.purge_record(&f.patient, &record, NOW),
        Err(Error::InvalidInput(_))
    ));

    // A deleted record's versions can all be purged.
    let del = f.state.delete_record(&f.patient, &record, NOW).unwrap();
    f.append(del);
    let purge = f.state.purge_record(&f.patient, &record, NOW).unwrap();
    f.append(purge);
    assert_eq!(f.state.purged_ciphertexts(&record).len(), 3);
    f.reverify().unwrap();
}

/// The owner equivocates: a grant signed over one key's commitment but
/// carrying another key in its age file (what would let an owner show two
/// members different contents for one signed ciphertext).
#[test]
fn a_grant_opens_only_the_key_it_commits_to() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::Read, None);
    let key = f.key_of(1, f.labs);
    let grant = f
        .state
        .collections_grant_for_test(&f.labs, &f.alice.fingerprint());
    let bytes = grant.to_bytes();
    assert_eq!(bytes[0], 2, "grants are written as version 2");
    let age_len = grant.age_file().len();
    let fields_len = bytes.len() - 64 - age_len - 4 - 32;
    let other = CollectionKey::generate(f.state.vault(), f.labs, key.epoch());
    let age_file =
        crate::agefile::encrypt(&f.alice.public().recipient().unwrap(), other.secret()).unwrap();
    let mut forged = bytes[..fields_len].to_vec();
    forged.extend_from_slice(&crate::primitives::sha256(&[&age_file]));
    forged.extend_from_slice(&(age_file.len() as u32).to_be_bytes());
    forged.extend_from_slice(&age_file);
    let mut signed = b"vault/v1/grant\0".to_vec();
    signed.extend_from_slice(&forged[..fields_len + 32]);
    forged.extend_from_slice(&f.patient.sign(&signed[..]));
    let forged = crate::Grant::from_bytes(&forged).unwrap();
    let verified = forged.verify(f.patient.public()).unwrap();
    assert!(matches!(
        verified.open_collection_key(&f.alice),
        Err(Error::DecryptionFailed)
    ));
    // The honest grant opens to the committed key.
    let honest = grant.verify(f.patient.public()).unwrap();
    assert_eq!(
        honest.open_collection_key(&f.alice).unwrap().secret(),
        key.secret()
    );
}

#[test]
fn record_metadata_opens_only_with_the_data_key_it_commits_to() {
    let mut f = Fixture::new();
    let m = f.put_as(0, f.labs, None, "CBC", b"13.5");
    assert_eq!(m.to_bytes()[0], 4, "metadata is written as version 4");
    assert_eq!(m.to_bytes().len(), crate::record::METADATA_LEN);
    let key = f.key_of(0, f.labs);
    let verified = f.state.record(&m.record()).unwrap();
    let dk = verified.data_key(&key).unwrap();
    let other = crate::keys::DataKey::generate();
    assert!(matches!(m.check_key(other), Err(Error::DecryptionFailed)));
    assert!(m.check_key(dk).is_ok());
    // A version-1 encoding (no commitment) still parses and re-encodes.
    let mut v1 = m.clone();
    v1.key_commitment = None;
    v1.address = crate::address::AddressKind::Sha256;
    let bytes = v1.to_bytes();
    assert_eq!(bytes[0], 1);
    assert_eq!(
        crate::RecordMetadata::from_bytes(&bytes)
            .unwrap()
            .to_bytes(),
        bytes
    );
}
