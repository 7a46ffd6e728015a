//! The owner's devices in the log (`docs/format.md` §8.11, decision 67):
//! a devices-listed entry carries the owner's device list; a listed device
//! writes as the owner and opens the owner's grants through the owner's
//! key generations; the owner's grants go to the current generation;
//! removing a device shuts it out of the log and, with a rotation, out of
//! every key sealed afterwards.

use super::fixture::*;
use crate::devices::{DeviceList, GenerationKeys};
use crate::error::Error;
use crate::grant::Grant;
use crate::identity::{Role, SecretIdentity};
use crate::log::EntryBody;
use crate::vault::Keyring;
use crate::{Permission, RecordBody};

fn device(seed: u8, name: &str) -> SecretIdentity {
    identity(seed, name, Role::Device)
}

/// A fixture whose owner listed a phone and a laptop (serial 1, by the
/// root) and rotated both collections to generation 1, with the keys each
/// device opened.
fn with_devices() -> (
    Fixture,
    [SecretIdentity; 2],
    DeviceList,
    [GenerationKeys; 2],
) {
    let mut f = Fixture::new();
    let phone = device(20, "phone");
    let laptop = device(21, "laptop");
    let (v1, _) = DeviceList::first(
        &f.patient,
        &[phone.public().clone(), laptop.public().clone()],
        NOW,
    )
    .unwrap();
    let e = f
        .state
        .list_devices(&f.patient, std::slice::from_ref(&v1), NOW)
        .unwrap();
    f.append(e);
    // Devices never hold generation 0, the root's own key: the root
    // rotates every collection so the owner's grant is to generation 1.
    for c in [f.labs, f.meds] {
        let e = f
            .state
            .revoke(&mut Keyring::new(&f.patient, NOW), &c, &[])
            .unwrap();
        f.append(e);
    }
    let keys = [v1.open(&phone).unwrap(), v1.open(&laptop).unwrap()];
    (f, [phone, laptop], v1, keys)
}

/// Adds a record as `who` with its keys, returning its id.
fn put(
    f: &mut Fixture,
    who: &SecretIdentity,
    keys: &GenerationKeys,
    collection: crate::CollectionId,
    body: &[u8],
) -> crate::RecordId {
    let mut keyring = Keyring::for_device(who, keys, NOW);
    let mut ct = Vec::new();
    let (m, e) = f
        .state
        .put_record(
            &mut keyring,
            &collection,
            None,
            &info("from a device"),
            RecordBody::new(body, body.len() as u64),
            &mut ct,
        )
        .unwrap();
    f.blobs.insert(*m.ciphertext_hash(), ct);
    f.append(e);
    m.record()
}

/// Opens a record's current version as a device of the owner's.
fn open(
    f: &Fixture,
    who: &SecretIdentity,
    keys: &GenerationKeys,
    record: &crate::RecordId,
) -> crate::Result<Vec<u8>> {
    let verified = f.state.record(record)?;
    let blob = f.blobs[verified.metadata().ciphertext_hash()].clone();
    let mut out = Vec::new();
    Keyring::for_device(who, keys, NOW).open(&f.state, &verified, blob.as_slice(), &mut out)?;
    Ok(out)
}

/// Checks, cryptographically and not only by the log's rules, that none
/// of the generations `keys` holds among `publics` opens the owner's grant
/// in the fixture's last entry (a rotation, signed by `signer`).
fn assert_last_owner_grant_shut(
    f: &Fixture,
    signer: &crate::PublicIdentity,
    keys: &GenerationKeys,
    publics: &[&[u8; 32]],
) {
    let last = f.log.last().unwrap();
    let EntryBody::Rotation(r) = last.body() else {
        panic!("not a rotation")
    };
    let owners = r
        .grants
        .iter()
        .find(|g| g.member() == f.patient.fingerprint())
        .unwrap()
        .verify(signer)
        .unwrap();
    assert_eq!(
        owners.generation(),
        f.state.owner_device_list().unwrap().generation()
    );
    let mut tried = 0;
    for public in publics {
        if let Ok(identity) = keys.age_identity(public) {
            tried += 1;
            let key = crate::grant::GrantKey::generation(f.patient.fingerprint(), identity);
            assert!(matches!(
                owners.open_collection_key_as(&key),
                Err(Error::DecryptionFailed)
            ));
        }
    }
    assert!(tried > 0, "no generation of the removed device's was tried");
}

#[test]
fn a_listed_device_writes_as_the_owner_and_reads_the_owners_grants() {
    let (mut f, [phone, laptop], v1, [phone_keys, laptop_keys]) = with_devices();
    assert_eq!(f.state.owner_device_list(), Some(&v1));
    assert!(f.state.is_owner(&phone.fingerprint()));
    assert!(f.state.access(&phone.fingerprint(), NOW).owner);
    assert_eq!(
        f.state.person_of(&laptop.fingerprint()),
        f.patient.fingerprint()
    );
    // Labs was created before the list and rotated after it: the owner's
    // grant is to generation 1, which the devices open.
    let labs = f.labs;
    let record = put(&mut f, &phone, &phone_keys, labs, b"from the phone");
    assert_eq!(
        open(&f, &laptop, &laptop_keys, &record).unwrap(),
        b"from the phone"
    );
    assert_eq!(f.open_as(0, &record).unwrap().1, b"from the phone");
    assert_eq!(
        f.state.record(&record).unwrap().metadata().author(),
        phone.fingerprint(),
        "the metadata names the device that wrote it"
    );
    // A collection created by a device: the owner's grant is version 3,
    // signed by the phone, to generation 1, which the root's own key does
    // not open but the recovery file's does.
    let (imaging, e) = f.state.create_collection(&phone, "imaging", NOW).unwrap();
    let EntryBody::CollectionCreated { owner_grant, .. } = e.body() else {
        panic!("not a collection")
    };
    assert_eq!(owner_grant.signer(), Some(phone.fingerprint()));
    assert_eq!(owner_grant.generation(), 1);
    f.append(e);
    let scan = put(&mut f, &laptop, &laptop_keys, imaging, b"a scan");
    assert_eq!(open(&f, &phone, &phone_keys, &scan).unwrap(), b"a scan");
    let recovered = v1.open_recovery(&f.patient).unwrap();
    assert_eq!(open(&f, &f.patient, &recovered, &scan).unwrap(), b"a scan");
    // A keyring made without the keys opens them from the log's lists
    // when first needed: the root through the recovery box, a device
    // through its own box.
    assert_eq!(f.open_as(0, &scan).unwrap().1, b"a scan");
    let mut out = Vec::new();
    let verified = f.state.record(&scan).unwrap();
    let blob = f.blobs[verified.metadata().ciphertext_hash()].clone();
    Keyring::new(&phone, NOW)
        .open(&f.state, &verified, blob.as_slice(), &mut out)
        .unwrap();
    assert_eq!(out, b"a scan");
    // A stranger's keyring opens nothing.
    assert!(f.state.open_generations(&f.bob).is_err());
    // A device shares as the owner: the member's grant is version 3 naming
    // the device, to the member's own key.
    let mut keyring = Keyring::for_device(&phone, &phone_keys, NOW);
    let e = f
        .state
        .share_collection(
            &mut keyring,
            &imaging,
            f.alice.public(),
            Permission::Read,
            None,
        )
        .unwrap();
    f.append(e);
    assert_eq!(f.open_as(1, &scan).unwrap().1, b"a scan");
    // Alice is shown the owner's list whole, as every reader is.
    let listed = &f.log[3];
    assert!(matches!(listed.body(), EntryBody::DevicesListed { .. }));
    assert!(f.state.shows_in_full(listed, &f.alice.fingerprint()));
    // The whole log verifies from genesis, for anyone.
    f.reverify().unwrap();
}

#[test]
fn removing_a_device_shuts_it_out_of_the_log_and_of_every_later_key() {
    let (mut f, [phone, laptop], v1, [phone_keys, laptop_keys]) = with_devices();
    f.share(1, f.labs, Permission::Read, None);
    let labs = f.labs;
    let record = put(&mut f, &phone, &phone_keys, labs, b"before");
    // The phone is lost: the laptop signs the next version without it (a
    // new generation), lists it, and rotates every collection.
    let (v2, laptop_new) = v1
        .next(&laptop, &laptop_keys, &[], &[phone.fingerprint()], NOW + 1)
        .unwrap();
    let mut laptop_keys2 = laptop_new;
    laptop_keys2.walk_back(&v1).unwrap();
    let e = f
        .state
        .list_devices(&laptop, std::slice::from_ref(&v2), NOW + 1)
        .unwrap();
    f.append(e);
    assert!(!f.state.is_owner(&phone.fingerprint()));
    assert!(!f.state.access(&phone.fingerprint(), NOW).owner);
    for c in [f.labs, f.meds] {
        let mut keyring = Keyring::for_device(&laptop, &laptop_keys2, NOW + 1);
        let e = f.state.revoke(&mut keyring, &c, &[]).unwrap();
        let EntryBody::Rotation(r) = e.body() else {
            panic!("not a rotation")
        };
        let own = r
            .grants
            .iter()
            .find(|g| g.member() == f.patient.fingerprint())
            .unwrap();
        assert_eq!(
            own.generation(),
            2,
            "the owner's new grant is to generation 2"
        );
        f.append(e);
    }
    // The laptop and the member still read; the phone opens nothing new.
    assert_eq!(
        open(&f, &laptop, &laptop_keys2, &record).unwrap(),
        b"before"
    );
    assert_eq!(f.open_as(1, &record).unwrap().1, b"before");
    assert!(matches!(
        open(&f, &phone, &phone_keys, &record),
        Err(Error::AccessDenied(_))
    ));
    // Opening its keys from the log gives the removed phone only what it
    // held (generation 1 and 0), never generation 2.
    let held = f.state.open_generations(&phone).unwrap();
    assert!(held.check_against(&v1).is_ok());
    assert!(held.check_against(&v2).is_err());
    let verified = f.state.record(&record).unwrap();
    assert!(matches!(
        Keyring::new(&phone, NOW).open(
            &f.state,
            &verified,
            f.blobs[verified.metadata().ciphertext_hash()].as_slice(),
            std::io::sink()
        ),
        Err(Error::AccessDenied(_))
    ));
    // The laptop's keyring made without keys walks back to generation 1,
    // never to generation 0 (the root's own key).
    let laptop_all = f.state.open_generations(&laptop).unwrap();
    laptop_all.check_against(&v1).unwrap();
    assert!(laptop_all
        .secret_for(f.patient.public().x25519_public())
        .is_none());
    assert_eq!(laptop_all.len(), 2);
    // Cryptographically, not only by the log's rules: none of the phone's
    // secrets opens the owner's new grant (of medications, rotated last).
    assert_last_owner_grant_shut(
        &f,
        laptop.public(),
        &phone_keys,
        &[v1.enc_public(), f.patient.public().x25519_public()],
    );
    // Anything the phone signs now is refused: it is no longer a device of
    // the owner's, and no member.
    let mut keyring = Keyring::for_device(&phone, &phone_keys, NOW + 2);
    let mut ct = Vec::new();
    assert!(matches!(
        f.state.put_record(
            &mut keyring,
            &f.labs,
            None,
            &info("stolen"),
            RecordBody::new(&b"x"[..], 1),
            &mut ct,
        ),
        Err(Error::AccessDenied(_))
    ));
    let forged = f.forge_at(
        &phone,
        NOW + 2,
        EntryBody::RecordDeleted { record, version: 2 },
    );
    let err = f.refuse(&forged);
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    // Its own version removing the laptop, from v1, is a rollback now.
    let (stolen, _) = v1
        .next(&phone, &phone_keys, &[], &[laptop.fingerprint()], NOW + 2)
        .unwrap();
    let forged = f.forge_at(
        &f.patient,
        NOW + 2,
        EntryBody::DevicesListed {
            person: f.patient.public().clone(),
            lists: vec![stolen],
        },
    );
    assert!(matches!(f.refuse(&forged), Error::Rollback { .. }));
    // The phone's earlier entries stay valid: the log verifies from
    // genesis.
    f.reverify().unwrap();
}

#[test]
fn device_lists_in_the_log_that_break_the_rules_are_refused() {
    let mut f = Fixture::new();
    let phone = device(20, "phone");
    let (v1, _) = DeviceList::first(&f.patient, &[phone.public().clone()], NOW).unwrap();
    let keys = v1.open(&phone).unwrap();
    let (v2, _) = v1.next(&phone, &keys, &[], &[], NOW).unwrap();
    let owner = f.patient.public().clone();
    let listed = |lists: Vec<DeviceList>| EntryBody::DevicesListed {
        person: owner.clone(),
        lists,
    };
    // A member lists the owner's devices.
    f.share(1, f.labs, Permission::ReadWrite, None);
    let e = f.forge(&f.alice, listed(vec![v1.clone()]));
    assert!(matches!(f.refuse(&e), Error::Unauthorized { .. }));
    // The first version the log holds signed by a device.
    let e = f.forge(&f.patient, listed(vec![v2.clone()]));
    assert!(matches!(f.refuse(&e), Error::InvalidEntry { .. }));
    // Another person's list, under the owner's entry.
    let (alice_list, _) = DeviceList::first(&f.alice, &[phone.public().clone()], NOW).unwrap();
    let e = f.forge(
        &f.patient,
        EntryBody::DevicesListed {
            person: f.alice.public().clone(),
            lists: vec![alice_list],
        },
    );
    assert!(matches!(f.refuse(&e), Error::InvalidEntry { .. }));
    // Both versions in one entry are accepted in order; a device not yet
    // listed may not write the first.
    let e = f.forge(&phone, listed(vec![v1.clone(), v2.clone()]));
    assert!(matches!(f.refuse(&e), Error::Unauthorized { .. }));
    let e = f.state.list_devices(&f.patient, &[v1, v2], NOW).unwrap();
    f.append(e);
    // Once the owner has a list, a grant to the owner sealed to the root's
    // own key (generation 0) is refused: the owner's grants go to the
    // current generation, which the phone holds.
    let key =
        crate::keys::CollectionKey::generate(f.state.vault(), crate::CollectionId::random(), 0);
    let stale = Grant::for_collection(
        &f.patient,
        &key,
        f.patient.public(),
        Permission::ReadWrite,
        None,
        NOW,
    )
    .unwrap();
    let e = f.forge(
        &f.patient,
        EntryBody::CollectionCreated {
            collection: key.collection(),
            sealed_name: key.seal_name("old key").unwrap(),
            owner_grant: stale,
        },
    );
    assert!(matches!(f.refuse(&e), Error::InvalidEntry { .. }));
    // The builder seals it right, even for the root.
    let (_, e) = f.state.create_collection(&f.patient, "new", NOW).unwrap();
    f.append(e);
    f.reverify().unwrap();
}

/// The owner-devices vector (`tests/vectors/owner-devices.json`,
/// `docs/format.md` §8.11). Regenerate (only for a deliberate format
/// change) with
/// `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --lib owner_devices_vector`.
#[test]
fn owner_devices_vector() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/owner-devices.json");
    let phone = device(20, "phone");
    let laptop = device(21, "laptop");
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
        let (mut f, _, v1, [phone_keys, laptop_keys]) = with_devices();
        let labs = f.labs;
        let record = put(&mut f, &phone, &phone_keys, labs, b"48 mmol/mol");
        let mut keyring = Keyring::for_device(&phone, &phone_keys, NOW);
        let e = f
            .state
            .share_collection(
                &mut keyring,
                &labs,
                f.alice.public(),
                Permission::Read,
                None,
            )
            .unwrap();
        f.append(e);
        let (v2, mut laptop_keys2) = v1
            .next(&laptop, &laptop_keys, &[], &[phone.fingerprint()], NOW)
            .unwrap();
        laptop_keys2.walk_back(&v1).unwrap();
        let e = f.state.list_devices(&laptop, &[v2], NOW).unwrap();
        f.append(e);
        let mut keyring = Keyring::for_device(&laptop, &laptop_keys2, NOW);
        let e = f.state.revoke(&mut keyring, &labs, &[]).unwrap();
        f.append(e);
        let mut negative = Vec::new();
        let mut refused = |f: &mut Fixture, what: &str, entry: crate::LogEntry, code: &str| {
            assert_eq!(f.refuse(&entry).code(), code, "{what}");
            negative.push(serde_json::json!({
                "description": what,
                "after_seq": f.state.head().seq,
                "entry": hex::encode(entry.to_bytes()),
                "error": code,
            }));
        };
        let by_phone = f.forge(&phone, EntryBody::RecordDeleted { record, version: 2 });
        refused(
            &mut f,
            "an entry by a device removed from the owner's list",
            by_phone,
            "unauthorized_author",
        );
        let (stolen, _) = v1
            .next(&phone, &phone_keys, &[], &[laptop.fingerprint()], NOW)
            .unwrap();
        let rollback = f.forge(
            &f.patient,
            EntryBody::DevicesListed {
                person: f.patient.public().clone(),
                lists: vec![stolen],
            },
        );
        refused(
            &mut f,
            "a device list version older than the one the log holds",
            rollback,
            "rollback",
        );
        let (alice_lists, _) =
            DeviceList::first(&f.patient, &[laptop.public().clone()], NOW).unwrap();
        let by_member = f.forge(
            &f.alice,
            EntryBody::DevicesListed {
                person: f.patient.public().clone(),
                lists: vec![alice_lists],
            },
        );
        refused(
            &mut f,
            "a member lists the owner's devices",
            by_member,
            "unauthorized_author",
        );
        let key =
            crate::keys::CollectionKey::generate(f.state.vault(), crate::CollectionId::random(), 0);
        let stale = f.forge(
            &f.patient,
            EntryBody::CollectionCreated {
                collection: key.collection(),
                sealed_name: key.seal_name("old key").unwrap(),
                owner_grant: Grant::for_collection(
                    &f.patient,
                    &key,
                    f.patient.public(),
                    Permission::ReadWrite,
                    None,
                    NOW,
                )
                .unwrap(),
            },
        );
        refused(
            &mut f,
            "the owner's grant sealed to generation 0 once the owner lists devices",
            stale,
            "invalid_entry",
        );
        let v = serde_json::json!({
            "description": "docs/format.md §8.11: a vault log (patient seed [1;32], Dr Alice [2;32], devices phone [20;32] and laptop [21;32] of role device, as in vault-core's test fixture). Seq 1 and 2 create labs and medications (the owner's grants to generation 0); seq 3 lists the phone and the laptop (serial 1, by the root); seq 4 and 5 are the root's rotations of labs and medications, the owner's grants to generation 1 (devices never hold generation 0); seq 6 is a record put by the phone into labs; seq 7 the phone's version-3 grant of labs to Dr Alice; seq 8 the laptop's version 2 removing the phone (generation 2); seq 9 the laptop's rotation of labs, the owner's grant to generation 2. Dr Alice, and the laptop with the keys it opens from the list at seq 6, open the record with the plaintext given; the phone is not a device of the owner's after seq 6. Each negative entry must be refused after the log's prefix up to after_seq, with the error code given.",
            "log": f.log.iter().map(|e| hex::encode(e.to_bytes())).collect::<Vec<_>>(),
            "record": record.to_hex(),
            "ciphertext": hex::encode(&f.blobs[f.state.record(&record).unwrap().metadata().ciphertext_hash()]),
            "plaintext": "48 mmol/mol",
            "negative": negative,
        });
        save_vector(&path, &v);
    }
    let v = load_vector(&path);
    let log = vector_log(&v);
    let state = crate::VaultState::verify_log(&log).unwrap();
    let owner = state.owner().fingerprint();
    assert_eq!(log[6].author(), phone.fingerprint());
    assert_eq!(log[8].author(), laptop.fingerprint());
    let list = state.owner_device_list().unwrap();
    assert_eq!((list.serial(), list.generation()), (2, 2));
    assert!(state.is_owner(&laptop.fingerprint()));
    assert!(!state.is_owner(&phone.fingerprint()));
    assert_eq!(state.person_of(&laptop.fingerprint()), owner);
    let record = crate::RecordId::from_hex(v["record"].as_str().unwrap()).unwrap();
    let verified = state.record(&record).unwrap();
    let ciphertext = hex::decode(v["ciphertext"].as_str().unwrap()).unwrap();
    let mut keys = list.open(&laptop).unwrap();
    let EntryBody::DevicesListed { lists, .. } = log[3].body() else {
        panic!("seq 3 lists no devices")
    };
    keys.walk_back(&lists[0]).unwrap();
    for who in [0, 1] {
        let mut out = Vec::new();
        let alice = identity(2, "Dr Alice", Role::Clinician);
        let mut keyring = if who == 0 {
            Keyring::for_device(&laptop, &keys, NOW)
        } else {
            Keyring::new(&alice, NOW)
        };
        keyring
            .open(&state, &verified, ciphertext.as_slice(), &mut out)
            .unwrap();
        assert_eq!(out, v["plaintext"].as_str().unwrap().as_bytes());
    }
    check_negative_cases(&v, &log, 4);
}

#[test]
fn a_device_is_shown_the_whole_log_and_never_granted() {
    let mut f = Fixture::new();
    let meds = f.meds;
    f.put_as(0, meds, None, "before the devices", b"x");
    let tablet = device(22, "tablet");
    // A device identity that is already a member cannot be listed.
    f.share(1, f.labs, Permission::Read, None);
    let e = f
        .state
        .share_collection(
            &mut Keyring::new(&f.patient, NOW),
            &f.labs,
            tablet.public(),
            Permission::Read,
            None,
        )
        .unwrap();
    f.append(e);
    let phone = device(20, "phone");
    let (with_member, _) = DeviceList::first(&f.patient, &[tablet.public().clone()], NOW).unwrap();
    assert!(matches!(
        f.state
            .list_devices(&f.patient, std::slice::from_ref(&with_member), NOW),
        Err(Error::InvalidInput(_))
    ));
    let (v1, _) = DeviceList::first(&f.patient, &[phone.public().clone()], NOW).unwrap();
    let e = f
        .state
        .list_devices(&f.patient, std::slice::from_ref(&v1), NOW)
        .unwrap();
    f.append(e);
    // A listed device is never granted (it acts as the owner), nor named
    // an agent.
    let grant = f.state.share_collection(
        &mut Keyring::new(&f.patient, NOW),
        &f.labs,
        phone.public(),
        Permission::ReadWrite,
        None,
    );
    let e = grant.unwrap();
    assert!(matches!(f.refuse(&e), Error::InvalidEntry { .. }));
    let named = f.state.name_agent(
        &mut Keyring::new(&f.patient, NOW),
        &f.labs,
        phone.public(),
        crate::Powers::parse("share").unwrap(),
        None,
        None,
    );
    assert!(
        matches!(named, Err(Error::InvalidEntry { .. })),
        "{named:?}"
    );
    // The phone is shown the whole log; served with the record of seq 3
    // redacted (as a relay might, to hide it), its verification refuses
    // the log once the phone is listed.
    crate::VaultState::verify_log_as(&phone.fingerprint(), NOW, &f.log, None).unwrap();
    let mut served = f.log.clone();
    served[3] = crate::LogEntry::from_bytes(&served[3].redacted_bytes().unwrap()).unwrap();
    assert!(matches!(
        crate::VaultState::verify_log_as(&phone.fingerprint(), NOW, &served, None),
        Err(Error::Withheld { seq: 3 })
    ));
    // Dr Alice may be shown it redacted: she does not follow medications.
    crate::VaultState::verify_log_as(&f.alice.fingerprint(), NOW, &served, None).unwrap();
}

/// The thief's phone of [`the_key_file_takes_the_list_back_from_a_thief`]
/// took the list over: it removed the laptop in a version whose recovery
/// box hides its generation from the key file, re-keyed every collection
/// to that generation, wrote a record under it, created a collection of
/// its own with a record, and shared medications with Dr Bob. Returns the
/// fixture, the devices, the version the key file last opens, the thief's
/// version and keys, the records written before the theft and the two the
/// thief wrote.
#[allow(clippy::type_complexity)]
fn stolen_by_the_phone() -> (
    Fixture,
    [SecretIdentity; 2],
    DeviceList,
    (DeviceList, GenerationKeys),
    [crate::RecordId; 2],
    [crate::RecordId; 2],
) {
    let (mut f, [phone, laptop], v1, [phone_keys, laptop_keys]) = with_devices();
    f.share(1, f.labs, Permission::Read, None);
    let (labs, meds) = (f.labs, f.meds);
    let by_laptop = put(&mut f, &laptop, &laptop_keys, labs, b"before the theft");
    let by_root = f
        .put_as(0, meds, None, "by the key file", b"prescription")
        .record();
    let (stolen, thief_keys) = v1
        .next(&phone, &phone_keys, &[], &[laptop.fingerprint()], NOW)
        .unwrap();
    let stolen = stolen.hiding_from_recovery_for_test(&phone).unwrap();
    let e = f
        .state
        .list_devices(&phone, std::slice::from_ref(&stolen), NOW)
        .unwrap();
    f.append(e);
    for c in [labs, meds] {
        let mut keyring = Keyring::for_device(&phone, &thief_keys, NOW);
        let e = f.state.revoke(&mut keyring, &c, &[]).unwrap();
        f.append(e);
    }
    let planted = put(&mut f, &phone, &thief_keys, labs, b"planted by the thief");
    // It creates a collection of its own, writes into it, and shares
    // medications with Dr Bob.
    let (own, e) = f.state.create_collection(&phone, "thief's", NOW).unwrap();
    f.append(e);
    let hidden = put(&mut f, &phone, &thief_keys, own, b"the thief's own");
    let e = f
        .state
        .share_collection(
            &mut Keyring::for_device(&phone, &thief_keys, NOW),
            &meds,
            f.bob.public(),
            Permission::Read,
            None,
        )
        .unwrap();
    f.append(e);
    (
        f,
        [phone, laptop],
        v1,
        (stolen, thief_keys),
        [by_laptop, by_root],
        [planted, hidden],
    )
}

#[test]
fn the_key_file_takes_the_list_back_from_a_thief() {
    let (mut f, [phone, laptop], v1, (stolen, thief_keys), [by_laptop, by_root], planted) =
        stolen_by_the_phone();
    // Until the list is taken back, the key file does not rotate: it would
    // drop what it cannot open.
    assert!(matches!(
        f.state
            .revoke(&mut Keyring::new(&f.patient, NOW), &f.labs, &[]),
        Err(Error::AccessDenied(_))
    ));
    // What the phone shared is told by who made the grant: Dr Bob, not Dr
    // Alice, whose grant its rotations only re-sealed.
    assert_eq!(
        f.state.shared_by(&phone.fingerprint()),
        vec![(f.meds, f.bob.fingerprint())]
    );
    // The key file does not reach the thief's generation: it cannot build
    // the list's next version, only override it.
    let root_keys = f.state.open_generations(&f.patient).unwrap();
    assert!(root_keys.check_against(&v1).is_ok());
    assert!(matches!(
        root_keys.check_against(&stolen),
        Err(Error::DecryptionFailed)
    ));
    assert!(stolen
        .next(&f.patient, &root_keys, &[], &[phone.fingerprint()], NOW)
        .is_err());
    // Nobody but the key file takes the list back.
    assert!(matches!(
        f.state.recover_devices(&phone, &[], NOW),
        Err(Error::AccessDenied(_))
    ));
    let stranger = device(23, "stranger");
    assert!(matches!(
        f.state
            .recover_devices(&f.patient, &[stranger.fingerprint()], NOW),
        Err(Error::Missing { .. })
    ));
    // Keeping the laptop (which the thief removed): built on v1, the
    // newest version the key file opens, above the thief's serial and
    // generation.
    let (e, v3) = f
        .state
        .recover_devices(&f.patient, &[laptop.fingerprint()], NOW)
        .unwrap();
    assert_eq!((v3.serial(), v3.generation()), (3, 3));
    assert_eq!(v3.prior_public(), v1.enc_public());
    assert_eq!(v3.prev(), v1.hash());
    assert_eq!(v3.devices().len(), 1);
    assert!(v3.device(&laptop.fingerprint()).is_some());
    f.append(e);
    assert!(!f.state.is_owner(&phone.fingerprint()));
    assert!(f.state.is_owner(&laptop.fingerprint()));
    // Re-keying as the key file: a record the thief re-wrapped opens with
    // the key it was written with; the one only the thief's generation
    // opens is dropped (no honest reader can open it from the key file).
    let mut dropped = Vec::new();
    let to_rekey = f.state.collections_to_rekey();
    assert_eq!(to_rekey.len(), 3);
    for c in to_rekey {
        let e = f
            .state
            .revoke(&mut Keyring::new(&f.patient, NOW), &c, &[])
            .unwrap();
        let EntryBody::Rotation(r) = e.body() else {
            panic!("not a rotation")
        };
        dropped.extend(r.dropped.iter().copied());
        f.append(e);
    }
    dropped.sort_by_key(|r| *r.as_bytes());
    let mut expected = planted.to_vec();
    expected.sort_by_key(|r| *r.as_bytes());
    assert_eq!(dropped, expected);
    assert!(f.state.collections_to_rekey().is_empty());
    // The thief's collection, whose name no key the key file holds opens,
    // is named so; the others keep their names.
    let mut keyring = Keyring::new(&f.patient, NOW);
    let names: Vec<String> = f
        .state
        .collections()
        .iter()
        .map(|c| f.state.collection_name(&mut keyring, &c.id).unwrap())
        .collect();
    assert!(
        names.contains(&crate::UNOPENED_NAME.to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&"labs".to_owned()), "{names:?}");
    // The laptop, back in the list, the key file and the member read
    // what was written before the theft.
    let laptop_keys = f.state.open_generations(&laptop).unwrap();
    laptop_keys.check_against(&v3).unwrap();
    assert!(laptop_keys.check_against(&stolen).is_err());
    for (record, body) in [
        (by_laptop, &b"before the theft"[..]),
        (by_root, b"prescription"),
    ] {
        assert_eq!(open(&f, &laptop, &laptop_keys, &record).unwrap(), body);
        assert_eq!(f.open_as(0, &record).unwrap().1, body);
    }
    assert_eq!(f.open_as(1, &by_laptop).unwrap().1, b"before the theft");
    // None of the thief's secrets opens the owner's new grant.
    assert_last_owner_grant_shut(
        &f,
        f.patient.public(),
        &thief_keys,
        &[stolen.enc_public(), v1.enc_public()],
    );
    // The phone signs nothing valid any more; the log verifies from
    // genesis.
    let forged = f.forge(
        &phone,
        EntryBody::RecordDeleted {
            record: by_laptop,
            version: 1,
        },
    );
    assert!(matches!(f.refuse(&forged), Error::Unauthorized { .. }));
    f.reverify().unwrap();
}

#[test]
fn taking_the_list_back_keeps_nothing_but_what_is_named() {
    let (mut f, [phone, laptop], _, (stolen, _), _, _) = stolen_by_the_phone();
    // Keeping nothing: the key file acts alone, with a generation no
    // device holds.
    let (e, v3) = f.state.recover_devices(&f.patient, &[], NOW).unwrap();
    assert!(v3.devices().is_empty());
    assert!(v3.generation() > stolen.generation());
    f.append(e);
    for d in [&phone, &laptop] {
        assert!(!f.state.is_owner(&d.fingerprint()));
        let held = f.state.open_generations(d);
        assert!(held.map_or(true, |k| k.check_against(&v3).is_err()));
    }
    // Taking it back again overrides the key file's own version: above it.
    let (e, v4) = f
        .state
        .recover_devices(&f.patient, &[laptop.fingerprint()], NOW)
        .unwrap();
    assert_eq!(v4.prev(), v3.hash(), "built on the newest version it opens");
    assert_eq!(v4.generation(), v3.generation() + 1);
    f.append(e);
    assert!(f.state.is_owner(&laptop.fingerprint()));
    f.reverify().unwrap();
    // Without a list there is nothing to take back.
    let g = Fixture::new();
    assert!(matches!(
        g.state.recover_devices(&g.patient, &[], NOW),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn a_keyring_opens_the_generations_again_when_the_list_changed() {
    let (mut f, [phone, laptop], v1, [_, laptop_keys]) = with_devices();
    let labs = f.labs;
    let before = put(&mut f, &laptop, &laptop_keys, labs, b"before");
    // A keyring made without keys opens generation 1 from the log when it
    // first needs it.
    let mut keyring = Keyring::new(&laptop, NOW);
    let read = |keyring: &mut Keyring<'_>, f: &Fixture, record| {
        let verified = f.state.record(record).unwrap();
        let blob = f.blobs[verified.metadata().ciphertext_hash()].clone();
        let mut out = Vec::new();
        keyring
            .open(&f.state, &verified, blob.as_slice(), &mut out)
            .map(|_| out)
    };
    assert_eq!(read(&mut keyring, &f, &before).unwrap(), b"before");
    // The key file removes the phone (generation 2) and re-keys labs; a
    // record is written under generation 2.
    let root_keys = f.state.open_generations(&f.patient).unwrap();
    let (v2, _) = v1
        .next(&f.patient, &root_keys, &[], &[phone.fingerprint()], NOW)
        .unwrap();
    let e = f
        .state
        .list_devices(&f.patient, std::slice::from_ref(&v2), NOW)
        .unwrap();
    f.append(e);
    let e = f
        .state
        .revoke(&mut Keyring::new(&f.patient, NOW), &labs, &[])
        .unwrap();
    f.append(e);
    let after = f.put_as(0, labs, None, "after", b"after").record();
    // The same keyring, which opened its generations before the change,
    // opens them again: it reads the new record and the old one.
    assert_eq!(read(&mut keyring, &f, &after).unwrap(), b"after");
    assert_eq!(read(&mut keyring, &f, &before).unwrap(), b"before");
}
