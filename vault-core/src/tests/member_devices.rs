//! Members' devices in the log (`docs/format.md` §8.12, decision 70): a
//! member-devices-listed entry carries a member's device list in one
//! collection, under that collection's scope tag; a device of the
//! member's current list reads and writes there as the member, with the
//! member's grant; grants of the collection to the member go to the
//! member's current generation; a device the member removes is shut out
//! of the log at once and, once the owner re-keys, out of every key
//! sealed afterwards.

use super::fixture::*;
use crate::devices::{DeviceList, GenerationKeys};
use crate::error::Error;
use crate::grant::{Grant, GrantTo};
use crate::identity::{Role, SecretIdentity};
use crate::log::{EntryBody, LogEntry};
use crate::vault::Keyring;
use crate::{Permission, RecordBody, VaultState};

/// Dr Alice's laptop and phone, listed by her key file (serial 1).
struct AliceDevices {
    laptop: SecretIdentity,
    phone: SecretIdentity,
    v1: DeviceList,
    phone_keys: GenerationKeys,
    laptop_keys: GenerationKeys,
}

fn alice_devices(f: &Fixture) -> AliceDevices {
    let laptop = identity(30, "laptop", Role::Device);
    let phone = identity(31, "phone", Role::Device);
    let (v1, _) = DeviceList::first(
        &f.alice,
        &[laptop.public().clone(), phone.public().clone()],
        NOW,
    )
    .unwrap();
    let phone_keys = v1.open(&phone).unwrap();
    let laptop_keys = v1.open(&laptop).unwrap();
    AliceDevices {
        laptop,
        phone,
        v1,
        phone_keys,
        laptop_keys,
    }
}

/// A vault with a record in labs and one in medications, Dr Alice's list
/// carried in labs (appended by the owner, as the owner's client does
/// before sharing) and labs shared with her read-add; medications shared
/// with Dr Bob.
fn shared_with_alice() -> (Fixture, AliceDevices) {
    let mut f = Fixture::new();
    let d = alice_devices(&f);
    f.put_as(0, f.labs, None, "Potassium", b"4.1 mmol/L");
    f.put_as(0, f.meds, None, "Sertraline", b"50 mg daily");
    f.append(carried(
        &f,
        &f.patient,
        &f.labs,
        f.alice.public(),
        std::slice::from_ref(&d.v1),
    ));
    f.share(1, f.labs, Permission::Add, None);
    f.share(2, f.meds, Permission::Read, None);
    (f, d)
}

/// `signer`'s entry carrying `lists` (versions of `person`'s device list)
/// into `collection`, as the log will take it (not appended).
fn carried(
    f: &Fixture,
    signer: &SecretIdentity,
    collection: &crate::CollectionId,
    person: &crate::PublicIdentity,
    lists: &[DeviceList],
) -> LogEntry {
    f.state
        .list_member_devices(signer, collection, person, lists, NOW)
        .unwrap()
}

/// Alice's grant of `collection` as the log's last grant-added or
/// rotation carries it.
fn alice_grant(f: &Fixture, collection: crate::CollectionId) -> Grant {
    let alice = f.alice.fingerprint();
    f.log
        .iter()
        .rev()
        .find_map(|e| match e.body() {
            EntryBody::GrantAdded { grant, .. }
                if grant.member() == alice && grant.scope().collection() == collection =>
            {
                Some(grant.clone())
            }
            EntryBody::Rotation(r) if r.collection == collection => {
                r.grants.iter().find(|g| g.member() == alice).cloned()
            }
            _ => None,
        })
        .unwrap()
}

/// Opens a record's current version as `who`, whose keyring opens its
/// person's generations from the log.
fn open(
    state: &VaultState,
    f: &Fixture,
    who: &SecretIdentity,
    record: &crate::RecordId,
) -> crate::Result<Vec<u8>> {
    let verified = state.record(record)?;
    let blob = f.blobs[verified.metadata().ciphertext_hash()].clone();
    let mut out = Vec::new();
    Keyring::new(who, NOW).open(state, &verified, blob.as_slice(), &mut out)?;
    Ok(out)
}

/// A record-put by `who` into `collection` (not appended).
fn put_entry(
    f: &mut Fixture,
    who: &SecretIdentity,
    collection: crate::CollectionId,
    body: &[u8],
) -> crate::Result<(crate::RecordMetadata, LogEntry)> {
    let mut ct = Vec::new();
    let (m, e) = f.state.put_record(
        &mut Keyring::new(who, NOW),
        &collection,
        None,
        &info("from Alice's device"),
        RecordBody::new(body, body.len() as u64),
        &mut ct,
    )?;
    f.blobs.insert(*m.ciphertext_hash(), ct);
    Ok((m, e))
}

/// The owner's grant-added of `collection` to `member`, read-only,
/// sealed to the member document's own key (generation 0), at the head.
fn grant_to_document(
    f: &Fixture,
    collection: crate::CollectionId,
    member: &crate::PublicIdentity,
) -> LogEntry {
    let grant = Grant::for_collection_to(
        &f.patient,
        &f.key_of(0, collection),
        &GrantTo::document(member),
        Permission::Read,
        None,
        NOW,
        false,
    )
    .unwrap();
    f.forge(
        &f.patient,
        EntryBody::GrantAdded {
            member: member.clone(),
            grant,
        },
    )
}

#[test]
fn a_grant_reaches_every_device_of_a_member_and_a_device_writes_as_the_member() {
    let (mut f, d) = shared_with_alice();
    let (alice, labs, meds) = (f.alice.fingerprint(), f.labs, f.meds);
    // The grant goes to Alice's generation 1, which both devices open.
    let grant = alice_grant(&f, f.labs);
    assert_eq!(grant.generation(), d.v1.generation());
    assert_eq!(grant.generation(), 1);
    assert_eq!(f.state.member_device_list(&f.labs, &alice), Some(&d.v1));
    let labs_record = f.state.records(Some(&f.labs))[0].id;
    for device in [&d.laptop, &d.phone] {
        assert_eq!(
            f.state.person_in(&device.fingerprint(), Some(&f.labs)),
            alice
        );
        let access = f.state.access(&device.fingerprint(), NOW);
        assert!(!access.owner);
        assert_eq!(
            access.collections.keys().copied().collect::<Vec<_>>(),
            vec![f.labs]
        );
        assert_eq!(
            open(&f.state, &f, device, &labs_record).unwrap(),
            b"4.1 mmol/L"
        );
    }
    // Alice's key file opens it too, through the list's recovery box.
    assert_eq!(
        open(&f.state, &f, &f.alice, &labs_record).unwrap(),
        b"4.1 mmol/L"
    );

    // The laptop writes a result back as Alice: the metadata names the
    // laptop; the log judges it with Alice's read-add grant.
    let (m, e) = put_entry(&mut f, &d.laptop, labs, b"ferritin 30 ug/L").unwrap();
    f.append(e);
    assert_eq!(m.author(), d.laptop.fingerprint());
    assert_eq!(
        f.state.member_device(&f.labs, &m.author()).unwrap().0,
        alice
    );
    assert_eq!(
        f.state.identity(&d.laptop.fingerprint()),
        Some(d.laptop.public())
    );
    assert_eq!(
        open(&f.state, &f, &f.patient, &m.record()).unwrap(),
        b"ferritin 30 ug/L"
    );
    assert_eq!(
        open(&f.state, &f, &d.phone, &m.record()).unwrap(),
        b"ferritin 30 ug/L"
    );

    // A device acts for Alice only where the collection carries her list:
    // granted medications without it, her devices get nothing there.
    f.share(1, f.meds, Permission::Add, None);
    assert_eq!(alice_grant(&f, f.meds).generation(), 0);
    assert!(!f
        .state
        .access(&d.laptop.fingerprint(), NOW)
        .collections
        .contains_key(&f.meds));
    assert!(matches!(
        put_entry(&mut f, &d.laptop, meds, b"x"),
        Err(Error::AccessDenied(_))
    ));
    let meds_record = f.state.records(Some(&f.meds))[0].id;
    assert!(open(&f.state, &f, &d.laptop, &meds_record).is_err());
    assert_eq!(
        open(&f.state, &f, &f.alice, &meds_record).unwrap(),
        b"50 mg daily"
    );

    // The whole log verifies from genesis.
    f.reverify().unwrap();
}

#[test]
fn a_members_list_is_shown_to_that_collections_readers_only() {
    let (mut f, d) = shared_with_alice();
    let sodium = f.put_as(0, f.labs, None, "Sodium", b"139 mmol/L").record();
    // Bob (medications) is shown Alice's list redacted and verifies.
    let bob_log = served(&f, &f.bob.fingerprint());
    let listed = |log: &[LogEntry]| {
        log.iter()
            .any(|e| matches!(e.body(), EntryBody::MemberDevicesListed { .. }))
    };
    assert!(!listed(&bob_log));
    let bob_state = VaultState::verify_log_as(&f.bob.fingerprint(), NOW, &bob_log, None).unwrap();
    assert!(bob_state.identity(&d.laptop.fingerprint()).is_none());
    // Alice's laptop is shown labs whole, as Alice is, and reads from the
    // log it verified itself.
    let laptop = d.laptop.fingerprint();
    let laptop_log = served(&f, &laptop);
    assert!(listed(&laptop_log));
    let state = VaultState::verify_log_as(&laptop, NOW, &laptop_log, None).unwrap();
    // Records list by id (random): pick the first lab by what it is not.
    let r = state
        .records(Some(&f.labs))
        .into_iter()
        .find(|r| r.id != sodium)
        .unwrap()
        .id;
    assert_eq!(open(&state, &f, &d.laptop, &r).unwrap(), b"4.1 mmol/L");
    // Withholding a labs entry written after Alice's grant from the
    // laptop is seen, as it would be from Alice.
    let mut withheld = laptop_log.clone();
    let i = withheld
        .iter()
        .rposition(|e| matches!(e.body(), EntryBody::RecordPut { .. }) && !e.is_redacted())
        .unwrap();
    withheld[i] = withheld[i].redacted().unwrap();
    assert!(matches!(
        VaultState::verify_log_as(&laptop, NOW, &withheld, None),
        Err(Error::Withheld { .. })
    ));
}

#[test]
fn a_removed_device_is_shut_out_and_the_owner_rekeys_to_the_new_generation() {
    let (mut f, d) = shared_with_alice();
    let (alice, labs) = (f.alice.fingerprint(), f.labs);
    let first = f.state.records(Some(&labs))[0].id;
    // Written before the removal, appended after: refused.
    let (late, _) = put_entry(&mut f, &d.laptop, labs, b"late").unwrap();

    // Alice's phone removes the stolen laptop: generation 2.
    let (v2, _) =
        d.v1.next(&d.phone, &d.phone_keys, &[], &[d.laptop.fingerprint()], NOW)
            .unwrap();
    assert_eq!(v2.generation(), 2);
    f.append(carried(
        &f,
        &d.phone,
        &f.labs,
        f.alice.public(),
        std::slice::from_ref(&v2),
    ));
    assert_eq!(
        f.state.person_in(&d.laptop.fingerprint(), Some(&f.labs)),
        d.laptop.fingerprint()
    );
    assert!(f
        .state
        .access(&d.laptop.fingerprint(), NOW)
        .collections
        .is_empty());
    let err = f.refuse(&f.forge(&d.laptop, EntryBody::RecordPut { metadata: late }));
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    // A rollback to the version listing the laptop is refused.
    let rollback = f.forge(
        &d.laptop,
        EntryBody::MemberDevicesListed {
            collection: f.labs,
            person: f.alice.public().clone(),
            lists: vec![d.v1.clone()],
        },
    );
    assert!(matches!(f.refuse(&rollback), Error::Unauthorized { .. }));
    let rollback = f
        .state
        .list_member_devices(
            &f.patient,
            &f.labs,
            f.alice.public(),
            std::slice::from_ref(&d.v1),
            NOW,
        )
        .unwrap_err();
    assert!(matches!(rollback, Error::Rollback { .. }), "{rollback:?}");

    // Alice's grant is at generation 1, which the laptop holds: the owner
    // rotates labs, revoking nobody, and Alice's grant goes to generation 2.
    assert_eq!(f.state.collections_to_rekey(), vec![f.labs]);
    f.rekey(f.labs);
    assert!(f.state.collections_to_rekey().is_empty());
    let grant = alice_grant(&f, f.labs);
    assert_eq!(grant.generation(), 2);
    // Cryptographically shut: the laptop's generation does not open it,
    // and it does not hold generation 2.
    let verified = grant.verify(f.patient.public()).unwrap();
    let laptop_gen1 = d.laptop_keys.age_identity(d.v1.enc_public()).unwrap();
    assert!(matches!(
        verified.open_collection_key_as(&crate::grant::GrantKey::generation(alice, laptop_gen1)),
        Err(Error::DecryptionFailed)
    ));
    assert!(d.laptop_keys.age_identity(v2.enc_public()).is_err());

    // The phone and Alice's key file read what was there and what comes.
    let m = f.put_as(0, f.labs, None, "Sodium", b"139 mmol/L");
    for who in [&d.phone, &f.alice] {
        assert_eq!(open(&f.state, &f, who, &m.record()).unwrap(), b"139 mmol/L");
    }
    assert_eq!(open(&f.state, &f, &d.phone, &first).unwrap(), b"4.1 mmol/L");
    assert!(open(&f.state, &f, &d.laptop, &m.record()).is_err());
    f.reverify().unwrap();
}

/// A member whose list the collection carries, made a write-only
/// depositor: the deposit grant is sealed to the member's document
/// (generation 0), and the collection is not due for re-keying (before,
/// it stayed due for ever, and every re-keying rotated it again).
#[test]
fn a_depositor_whose_list_is_carried_is_not_due_for_rekeying() {
    let (mut f, _) = shared_with_alice();
    assert!(f.state.collections_to_rekey().is_empty());
    f.revoke(1, f.labs);
    f.share(1, f.labs, Permission::Deposit, None);
    assert_eq!(alice_grant(&f, f.labs).generation(), 0);
    assert!(
        f.state.collections_to_rekey().is_empty(),
        "a deposit grant at generation 0 is where it belongs"
    );
    f.reverify().unwrap();
}

#[test]
fn member_device_lists_that_a_reader_must_refuse() {
    let (mut f, d) = shared_with_alice();
    let list = |person: &SecretIdentity, lists: Vec<DeviceList>, collection| {
        EntryBody::MemberDevicesListed {
            collection,
            person: person.public().clone(),
            lists,
        }
    };
    // An outsider, or another member, lists Alice's devices.
    let e = f.forge(&f.mallory, list(&f.alice, vec![d.v1.clone()], f.labs));
    assert!(matches!(f.refuse(&e), Error::Unauthorized { .. }));
    let e = f.forge(&f.bob, list(&f.alice, vec![d.v1.clone()], f.meds));
    assert!(matches!(f.refuse(&e), Error::Unauthorized { .. }));
    // The owner's devices are listed by kind 11, never as a member's.
    let (own, _) = DeviceList::first(
        &f.patient,
        &[identity(40, "tablet", Role::Device).public().clone()],
        NOW,
    )
    .unwrap();
    let e = f.forge(&f.patient, list(&f.patient, vec![own], f.labs));
    assert!(matches!(f.refuse(&e), Error::InvalidEntry { .. }));
    // One of Alice's devices cannot act for Bob as well where Alice's
    // list names it.
    let (bobs, _) = DeviceList::first(&f.bob, &[d.laptop.public().clone()], NOW).unwrap();
    let e = f.forge(&f.patient, list(&f.bob, vec![bobs.clone()], f.labs));
    assert!(matches!(f.refuse(&e), Error::InvalidEntry { .. }));
    // Bob lists devices only where he reads: not in labs.
    let e = f.forge(&f.bob, list(&f.bob, vec![bobs], f.labs));
    assert!(matches!(f.refuse(&e), Error::Unauthorized { .. }));
    // A list version not signed by Alice's root, first in a collection.
    let (v2, _) =
        d.v1.next(&d.phone, &d.phone_keys, &[], &[d.laptop.fingerprint()], NOW)
            .unwrap();
    let e = f.forge(&f.patient, list(&f.alice, vec![v2], f.meds));
    assert!(matches!(f.refuse(&e), Error::InvalidEntry { .. }));
    // Once labs carries Alice's list, a grant of labs to her document's
    // own key (generation 0) is refused, and her device is never granted.
    for member in [f.alice.public().clone(), d.phone.public().clone()] {
        let e = grant_to_document(&f, f.labs, &member);
        assert!(matches!(f.refuse(&e), Error::InvalidEntry { .. }));
    }
    // A depositor's grant stays sealed to its document (generation 0)
    // where the collection carries its list, through rotations too: its
    // key file deposits as before.
    let gateway = identity(41, "Gateway", Role::Organisation);
    let (gw, _) = DeviceList::first(
        &gateway,
        &[identity(42, "gw-1", Role::Device).public().clone()],
        NOW,
    )
    .unwrap();
    f.append(carried(&f, &f.patient, &f.meds, gateway.public(), &[gw]));
    let e = f
        .state
        .share_collection(
            &mut Keyring::new(&f.patient, NOW),
            &f.meds,
            gateway.public(),
            Permission::Deposit,
            None,
        )
        .unwrap();
    f.append(e);
    f.rekey(f.meds);
    let EntryBody::Rotation(r) = f.log.last().unwrap().body() else {
        panic!("not a rotation")
    };
    let deposit = r
        .grants
        .iter()
        .find(|g| g.member() == gateway.fingerprint())
        .unwrap();
    assert_eq!(deposit.generation(), 0);
    Keyring::new(&gateway, NOW)
        .deposit_key(&f.state, &f.meds)
        .unwrap();
    f.reverify().unwrap();
}

#[test]
fn the_owners_lists_take_precedence_over_a_members() {
    let (mut f, _) = shared_with_alice();
    // Bob (medications, read) lists the owner's new tablet, a public
    // document, as his own device in medications before the owner does.
    let tablet = identity(44, "tablet", Role::Device);
    let (bobs, _) = DeviceList::first(&f.bob, std::slice::from_ref(tablet.public()), NOW).unwrap();
    f.append(carried(
        &f,
        &f.bob,
        &f.meds,
        f.bob.public(),
        std::slice::from_ref(&bobs),
    ));
    assert_eq!(
        f.state.person_in(&tablet.fingerprint(), Some(&f.meds)),
        f.bob.fingerprint()
    );
    // The owner still lists it, and from then on it acts as the owner.
    let (own, _) =
        DeviceList::first(&f.patient, std::slice::from_ref(tablet.public()), NOW).unwrap();
    let e = f
        .state
        .list_devices(&f.patient, std::slice::from_ref(&own), NOW)
        .unwrap();
    f.append(e);
    assert_eq!(
        f.state.person_in(&tablet.fingerprint(), Some(&f.meds)),
        f.patient.fingerprint()
    );
    assert!(f.state.is_owner(&tablet.fingerprint()));
    // Bob's later versions may go on naming it (a device is judged when
    // first named): they are taken, and the tablet stays the owner's.
    let spare = identity(46, "spare", Role::Device);
    let (bobs_next, _) = bobs
        .next(
            &f.bob,
            &bobs.open_recovery(&f.bob).unwrap(),
            std::slice::from_ref(spare.public()),
            &[],
            NOW,
        )
        .unwrap();
    f.append(carried(
        &f,
        &f.bob,
        &f.meds,
        f.bob.public(),
        std::slice::from_ref(&bobs_next),
    ));
    assert!(f.state.is_owner(&tablet.fingerprint()));
    assert_eq!(
        f.state.person_in(&spare.fingerprint(), Some(&f.meds)),
        f.bob.fingerprint()
    );
    // A version of Bob's the tablet signs (it claims him) is taken too: it
    // competes with no other member, and the owner's lists still decide.
    let (bobs_claimed, _) = bobs_next
        .next(&tablet, &bobs_next.open(&tablet).unwrap(), &[], &[], NOW)
        .unwrap();
    f.append(carried(
        &f,
        &f.bob,
        &f.meds,
        f.bob.public(),
        std::slice::from_ref(&bobs_claimed),
    ));
    assert!(f.state.is_owner(&tablet.fingerprint()));
    // The owner removes the tablet (stolen): it acts for nobody, not for
    // Bob, whose lists named it first and still do.
    let (own_v2, _) = own
        .next(
            &f.patient,
            &own.open_recovery(&f.patient).unwrap(),
            &[],
            &[tablet.fingerprint()],
            NOW,
        )
        .unwrap();
    let e = f.state.list_devices(&f.patient, &[own_v2], NOW).unwrap();
    f.append(e);
    assert!(!f.state.is_owner(&tablet.fingerprint()));
    assert_eq!(
        f.state.person_in(&tablet.fingerprint(), Some(&f.meds)),
        tablet.fingerprint()
    );
    assert!(f
        .state
        .member_device_collections(&tablet.fingerprint())
        .is_empty());
    // What Bob's devices may do there (carry his list) is refused to it.
    let (bobs_last, _) = bobs_claimed
        .next(
            &f.bob,
            &bobs_claimed.open_recovery(&f.bob).unwrap(),
            &[],
            &[spare.fingerprint()],
            NOW,
        )
        .unwrap();
    let by_tablet = f.forge(
        &tablet,
        EntryBody::MemberDevicesListed {
            collection: f.meds,
            person: f.bob.public().clone(),
            lists: vec![bobs_last],
        },
    );
    assert!(
        matches!(f.refuse(&by_tablet), Error::Unauthorized { .. }),
        "the tablet the owner removed acted for Bob"
    );
    f.reverify().unwrap();
}

/// What Dave's claim-less listing of Alice's tablet leaves: Dave, his
/// list (the tablet), Alice's version adding the tablet (by her key file)
/// and the next one, unchanged, signed by the tablet (its claim).
struct DaveListedFirst {
    dave: SecretIdentity,
    dave_v1: DeviceList,
    v2: DeviceList,
    v3: DeviceList,
}

/// The tablet's seed.
const TABLET: u8 = 45;

/// Dave, whose fingerprint sorts before Alice's (so nothing depends on the
/// order in which the log keeps people), from the first seed at 50 or
/// above that gives one.
fn dave_seed(alice: &SecretIdentity) -> u8 {
    (50u8..)
        .find(|s| identity(*s, "Dave", Role::Clinician).fingerprint() < alice.fingerprint())
        .unwrap()
}

/// In [`shared_with_alice`]'s vault: the owner grants Dave medications
/// (read), and Dave lists Alice's new tablet, a public document, as his
/// own device there before Alice's list reaches it. Alice's next two
/// versions are built, not appended.
fn dave_lists_alices_tablet_first(f: &mut Fixture, d: &AliceDevices) -> DaveListedFirst {
    let meds = f.meds;
    let tablet = identity(TABLET, "tablet", Role::Device);
    let dave = identity(dave_seed(&f.alice), "Dave", Role::Clinician);
    let e = f
        .state
        .share_collection(
            &mut Keyring::new(&f.patient, NOW),
            &meds,
            dave.public(),
            Permission::Read,
            None,
        )
        .unwrap();
    f.append(e);
    let (dave_v1, _) =
        DeviceList::first(&dave, std::slice::from_ref(tablet.public()), NOW).unwrap();
    f.append(carried(
        f,
        &dave,
        &meds,
        dave.public(),
        std::slice::from_ref(&dave_v1),
    ));
    let alice_keys = d.v1.open_recovery(&f.alice).unwrap();
    let (v2, _) =
        d.v1.next(
            &f.alice,
            &alice_keys,
            std::slice::from_ref(tablet.public()),
            &[],
            NOW,
        )
        .unwrap();
    let (v3, _) = v2
        .next(&tablet, &v2.open(&tablet).unwrap(), &[], &[], NOW)
        .unwrap();
    DaveListedFirst {
        dave,
        dave_v1,
        v2,
        v3,
    }
}

/// The owner's entry carrying Alice's `lists` into medications (not
/// checked: the log judges it).
fn alices_lists_in_meds(f: &Fixture, lists: Vec<DeviceList>) -> LogEntry {
    f.forge(
        &f.patient,
        EntryBody::MemberDevicesListed {
            collection: f.meds,
            person: f.alice.public().clone(),
            lists,
        },
    )
}

#[test]
fn a_device_that_signed_its_persons_list_acts_for_that_person_where_another_listed_it_first() {
    let (mut f, d) = shared_with_alice();
    let meds = f.meds;
    let tablet = identity(TABLET, "tablet", Role::Device);
    let spare = identity(46, "spare", Role::Device);
    let DaveListedFirst {
        dave,
        dave_v1,
        v2,
        v3,
    } = dave_lists_alices_tablet_first(&mut f, &d);
    assert_eq!(
        f.state.person_in(&tablet.fingerprint(), Some(&meds)),
        dave.fingerprint()
    );
    // Alice's key file added the tablet, which has signed nothing yet:
    // refused, as the tablet would act for two people.
    let unclaimed = alices_lists_in_meds(&f, vec![d.v1.clone(), v2.clone()]);
    assert!(
        matches!(f.refuse(&unclaimed), Error::InvalidEntry { .. }),
        "a listing the tablet did not sign outranked Dave's"
    );
    // The tablet signs the next version, unchanged: its own claim.
    assert_eq!(
        (v3.generation(), v3.signer()),
        (v2.generation(), tablet.fingerprint())
    );
    f.append(alices_lists_in_meds(&f, vec![d.v1.clone(), v2, v3]));
    f.share(1, meds, Permission::Add, None);
    assert_eq!(
        f.state.person_in(&tablet.fingerprint(), Some(&meds)),
        f.alice.fingerprint()
    );
    assert_eq!(
        f.state
            .member_device(&meds, &tablet.fingerprint())
            .map(|(p, _)| p),
        Some(f.alice.fingerprint())
    );
    assert!(f
        .state
        .member_device_collections(&tablet.fingerprint())
        .contains(&(meds, f.alice.fingerprint())));
    // Nor can anyone else list the claimed tablet now, even with
    // its signature (a second claim: the tablet's key in a thief's hands
    // signing Dave's next version, or Carol's).
    let (dave_v2, _) = dave_v1
        .next(&tablet, &dave_v1.open(&tablet).unwrap(), &[], &[], NOW)
        .unwrap();
    let carol = identity(47, "Carol", Role::Clinician);
    let (carol_v1, _) =
        DeviceList::first(&carol, std::slice::from_ref(tablet.public()), NOW).unwrap();
    let (carol_v2, _) = carol_v1
        .next(&tablet, &carol_v1.open(&tablet).unwrap(), &[], &[], NOW)
        .unwrap();
    for (who, lists) in [
        (dave.public(), vec![dave_v2]),
        (carol.public(), vec![carol_v1.clone()]),
        (carol.public(), vec![carol_v1, carol_v2]),
    ] {
        let e = f
            .state
            .list_member_devices(&f.patient, &meds, who, &lists, NOW)
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput(r) if r.contains("another member listed it")),
            "{e:?}"
        );
    }
    // It writes there as Alice, with her grant (Dave's is read-only).
    let (_, e) = put_entry(&mut f, &tablet, meds, b"from the tablet").unwrap();
    f.append(e);
    // Dave's lists may go on naming it (a version carrying it is not
    // refused), to no effect: it never acts for him again.
    let (dave_v2, _) = dave_v1
        .next(
            &dave,
            &dave_v1.open_recovery(&dave).unwrap(),
            std::slice::from_ref(spare.public()),
            &[],
            NOW,
        )
        .unwrap();
    f.append(carried(
        &f,
        &dave,
        &meds,
        dave.public(),
        std::slice::from_ref(&dave_v2),
    ));
    assert_eq!(
        f.state.person_in(&tablet.fingerprint(), Some(&meds)),
        f.alice.fingerprint()
    );
    assert_eq!(
        f.state.person_in(&spare.fingerprint(), Some(&meds)),
        dave.fingerprint()
    );
    f.reverify().unwrap();
}

#[test]
fn a_claim_never_takes_over_a_device_that_wrote_in_the_collection() {
    let (mut f, d) = shared_with_alice();
    let labs = f.labs;
    // Alice's laptop and phone are listed in labs by her key file: neither
    // has signed her list. The phone writes there as Alice.
    let dave = identity(dave_seed(&f.alice), "Dave", Role::Clinician);
    let e = f
        .state
        .share_collection(
            &mut Keyring::new(&f.patient, NOW),
            &labs,
            dave.public(),
            Permission::Read,
            None,
        )
        .unwrap();
    f.append(e);
    let (_, e) = put_entry(&mut f, &d.phone, labs, b"from the phone").unwrap();
    f.append(e);
    // Whoever holds the phone's key (a thief) signs Dave's list with it:
    // the phone, still on Alice's list, is not handed to Dave, and what it
    // wrote stays Alice's.
    let (dave_v1, _) =
        DeviceList::first(&dave, std::slice::from_ref(d.phone.public()), NOW).unwrap();
    let (dave_v2, _) = dave_v1
        .next(&d.phone, &dave_v1.open(&d.phone).unwrap(), &[], &[], NOW)
        .unwrap();
    let e = f
        .state
        .list_member_devices(&f.patient, &labs, dave.public(), &[dave_v1, dave_v2], NOW)
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidInput(r) if r.contains("another member listed it")),
        "{e:?}"
    );
    assert_eq!(
        f.state
            .member_device(&labs, &d.phone.fingerprint())
            .map(|(p, _)| p),
        Some(f.alice.fingerprint()),
        "what the phone wrote stays Alice's"
    );
    f.reverify().unwrap();
}

#[test]
fn a_listing_its_author_removed_does_not_block_a_claim() {
    let (mut f, d) = shared_with_alice();
    let meds = f.meds;
    // Dave lists Alice's new tablet in medications, then removes it again:
    // his lists named it, his current one does not.
    let DaveListedFirst {
        dave,
        dave_v1,
        v2,
        v3,
    } = dave_lists_alices_tablet_first(&mut f, &d);
    let tablet = identity(TABLET, "tablet", Role::Device);
    let (dave_v2, _) = dave_v1
        .next(
            &dave,
            &dave_v1.open_recovery(&dave).unwrap(),
            &[],
            &[tablet.fingerprint()],
            NOW,
        )
        .unwrap();
    f.append(carried(&f, &dave, &meds, dave.public(), &[dave_v2]));
    assert_eq!(
        f.state.person_in(&tablet.fingerprint(), Some(&meds)),
        tablet.fingerprint()
    );
    // Alice's list still needs the tablet's claim, and with it is taken:
    // the tablet acts for her.
    let unclaimed = alices_lists_in_meds(&f, vec![d.v1.clone(), v2.clone()]);
    assert!(matches!(f.refuse(&unclaimed), Error::InvalidEntry { .. }));
    f.append(alices_lists_in_meds(&f, vec![d.v1.clone(), v2, v3]));
    assert_eq!(
        f.state.person_in(&tablet.fingerprint(), Some(&meds)),
        f.alice.fingerprint()
    );
    f.reverify().unwrap();
}

/// The device-claims vector (`tests/vectors/member-device-claims.json`,
/// `docs/format.md` §8.12 rule 4). Regenerate (only for a deliberate
/// format change) with
/// `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --lib member_device_claims_vector`.
#[test]
fn member_device_claims_vector() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/member-device-claims.json");
    let tablet = identity(TABLET, "tablet", Role::Device);
    let alice = identity(2, "Dr Alice", Role::Clinician);
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
        let (mut f, d) = shared_with_alice();
        let meds = f.meds;
        let DaveListedFirst {
            dave,
            dave_v1,
            v2,
            v3,
        } = dave_lists_alices_tablet_first(&mut f, &d);
        let unclaimed = alices_lists_in_meds(&f, vec![d.v1.clone(), v2.clone()]);
        assert_eq!(f.refuse(&unclaimed).code(), "invalid_entry");
        let mut negative = vec![serde_json::json!({
            "description": "Dr Alice's list naming the tablet, which Dave listed first in medications, without a version the tablet signed",
            "after_seq": f.state.head().seq,
            "entry": hex::encode(unclaimed.to_bytes()),
            "error": "invalid_entry",
        })];
        f.append(alices_lists_in_meds(&f, vec![d.v1.clone(), v2, v3]));
        f.share(1, meds, Permission::Add, None);
        // Each refusal is recorded after the prefix it is judged on.
        let mut refused = |f: &mut Fixture, what: &str, lists: Vec<DeviceList>| {
            let e = f.forge(
                &f.patient,
                EntryBody::MemberDevicesListed {
                    collection: meds,
                    person: dave.public().clone(),
                    lists,
                },
            );
            assert_eq!(f.refuse(&e).code(), "invalid_entry", "{what}");
            negative.push(serde_json::json!({
                "description": what,
                "after_seq": f.state.head().seq,
                "entry": hex::encode(e.to_bytes()),
                "error": "invalid_entry",
            }));
        };
        // The tablet's key (a thief's) signs Dave's next version before
        // the tablet wrote anything: a second claim.
        let (again, _) = dave_v1
            .next(&tablet, &dave_v1.open(&tablet).unwrap(), &[], &[], NOW)
            .unwrap();
        refused(
            &mut f,
            "a second claim: Dave's next version signed by the tablet, which claimed Dr Alice (before the tablet wrote in medications)",
            vec![again],
        );
        let (m, e) = put_entry(&mut f, &tablet, meds, b"from the tablet").unwrap();
        f.append(e);
        let (_, e) = put_entry(&mut f, &d.phone, meds, b"from the phone").unwrap();
        f.append(e);
        // The phone's key signs a list of Dave's naming it: it wrote in
        // medications as Alice, unclaimed.
        let (with_phone, _) = dave_v1
            .next(
                &dave,
                &dave_v1.open_recovery(&dave).unwrap(),
                std::slice::from_ref(d.phone.public()),
                &[],
                NOW,
            )
            .unwrap();
        let (phone_claim, _) = with_phone
            .next(&d.phone, &with_phone.open(&d.phone).unwrap(), &[], &[], NOW)
            .unwrap();
        refused(
            &mut f,
            "Dave's versions adding Dr Alice's phone, which wrote in medications, then signed by it",
            vec![with_phone, phone_claim],
        );
        let v = serde_json::json!({
            "description": "docs/format.md §8.12 rule 4: a vault log (patient seed [1;32], Dr Alice [2;32], Dave [dave_seed;32] of role clinician, whose fingerprint sorts before Dr Alice's; Dr Alice's devices laptop [30;32], phone [31;32] and tablet [45;32] of role device, as in vault-core's test fixture). Seq 0 to 2: genesis, labs and medications; seq 3 and 4: the patient's records in labs and medications; seq 5: the owner's member-devices-listed entry carrying Dr Alice's version 1 (laptop, phone) in labs; seq 6: her grant of labs (add); seq 7: Dr Bob's grant of medications (read). Then: the owner grants Dave medications (read); Dave's member-devices-listed entry lists the tablet as his device (serial 1, by his root); the owner's member-devices-listed entry carries Dr Alice's versions 1 (laptop, phone), 2 (her root adds the tablet) and 3 (signed by the tablet, unchanged: its claim); the owner grants Dr Alice medications (add); the tablet puts a record into medications, judged as Dr Alice's (Dave's grant only reads), and so does her phone. The tablet acts for Dr Alice in medications, not for Dave. Each negative entry (the owner's member-devices-listed entries: Dr Alice's versions 1 and 2 before the tablet signed, refused after Dave's listing; a second claim by the tablet on Dave's list, refused after Dr Alice's grant, before the tablet writes; Dave's list adding the phone, which wrote in medications, and signed by it, refused after the phone's record) must be refused after the log's prefix up to after_seq, with the error code given.",
            "dave_seed": dave_seed(&f.alice),
            "log": f.log.iter().map(|e| hex::encode(e.to_bytes())).collect::<Vec<_>>(),
            "record": m.record().to_hex(),
            "negative": negative,
        });
        save_vector(&path, &v);
    }
    let v = load_vector(&path);
    let log = vector_log(&v);
    let state = VaultState::verify_log(&log).unwrap();
    let dave = identity(
        u8::try_from(v["dave_seed"].as_u64().unwrap()).unwrap(),
        "Dave",
        Role::Clinician,
    );
    // The tablet's record put, then the phone's.
    let tablet_put = &log[log.len() - 2];
    let meds = match tablet_put.body() {
        EntryBody::RecordPut { metadata } => metadata.collection(),
        _ => panic!("the tablet's entry is not a record put"),
    };
    assert_eq!(tablet_put.author(), tablet.fingerprint());
    assert_eq!(
        state.person_in(&tablet.fingerprint(), Some(&meds)),
        alice.fingerprint()
    );
    assert!(state
        .member_device_list(&meds, &dave.fingerprint())
        .and_then(|l| l.device(&tablet.fingerprint()))
        .is_some());
    let record = crate::RecordId::from_hex(v["record"].as_str().unwrap()).unwrap();
    state.record(&record).unwrap();
    check_negative_cases(&v, &log, 3);
}

/// The member-devices vector (`tests/vectors/member-devices.json`,
/// `docs/format.md` §8.12). Regenerate (only for a deliberate format
/// change) with
/// `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --lib member_devices_vector`.
#[test]
fn member_devices_vector() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/member-devices.json");
    let laptop = identity(30, "laptop", Role::Device);
    let phone = identity(31, "phone", Role::Device);
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
        let mut f = Fixture::new();
        let d = alice_devices(&f);
        let labs = f.labs;
        f.append(carried(
            &f,
            &f.patient,
            &labs,
            f.alice.public(),
            std::slice::from_ref(&d.v1),
        ));
        f.share(1, labs, Permission::Add, None);
        let (m, e) = put_entry(&mut f, &d.laptop, labs, b"ferritin 30 ug/L").unwrap();
        f.append(e);
        let (late, _) = put_entry(&mut f, &d.laptop, labs, b"late").unwrap();
        let (v2, _) =
            d.v1.next(&d.phone, &d.phone_keys, &[], &[d.laptop.fingerprint()], NOW)
                .unwrap();
        f.append(carried(&f, &d.phone, &labs, f.alice.public(), &[v2]));
        let e = f
            .state
            .revoke(&mut Keyring::new(&f.patient, NOW), &labs, &[])
            .unwrap();
        f.append(e);
        let mut negative = Vec::new();
        let mut refused = |f: &mut Fixture, what: &str, entry: LogEntry, code: &str| {
            assert_eq!(f.refuse(&entry).code(), code, "{what}");
            negative.push(serde_json::json!({
                "description": what,
                "after_seq": f.state.head().seq,
                "entry": hex::encode(entry.to_bytes()),
                "error": code,
            }));
        };
        let by_laptop = f.forge(&d.laptop, EntryBody::RecordPut { metadata: late });
        refused(
            &mut f,
            "an entry by a device removed from the member's list",
            by_laptop,
            "unauthorized_author",
        );
        let by_outsider = f.forge(
            &f.mallory,
            EntryBody::MemberDevicesListed {
                collection: labs,
                person: f.alice.public().clone(),
                lists: vec![d.v1.clone()],
            },
        );
        refused(
            &mut f,
            "someone neither the owner nor the member lists the member's devices",
            by_outsider,
            "unauthorized_author",
        );
        let to_document = grant_to_document(&f, labs, f.alice.public());
        refused(
            &mut f,
            "a grant of the collection to the member's generation 0 once the collection carries the member's list",
            to_document,
            "invalid_entry",
        );
        let (own, _) = DeviceList::first(
            &f.patient,
            &[identity(40, "tablet", Role::Device).public().clone()],
            NOW,
        )
        .unwrap();
        let owner_as_member = f.forge(
            &f.patient,
            EntryBody::MemberDevicesListed {
                collection: labs,
                person: f.patient.public().clone(),
                lists: vec![own],
            },
        );
        refused(
            &mut f,
            "the owner's devices listed as a member's",
            owner_as_member,
            "invalid_entry",
        );
        let v = serde_json::json!({
            "description": "docs/format.md §8.12: a vault log (patient seed [1;32], Dr Alice [2;32], Mallory [4;32], Dr Alice's devices laptop [30;32] and phone [31;32] of role device, as in vault-core's test fixture). Seq 1 and 2 create labs and medications; seq 3 is the owner's member-devices-listed entry carrying Dr Alice's list in labs (serial 1, by her root: laptop and phone, generation 1); seq 4 the owner's grant of labs to Dr Alice (add), sealed to her generation 1; seq 5 a record put by the laptop into labs, judged with Dr Alice's grant; seq 6 the phone's member-devices-listed entry carrying version 2, which removes the laptop (generation 2); seq 7 the owner's rotation of labs revoking nobody, Dr Alice's grant to generation 2. The phone, with the keys it opens from version 2, and Dr Alice's root open the record with the plaintext given; the laptop is not Dr Alice's device after seq 6. Each negative entry must be refused after the log's prefix up to after_seq, with the error code given.",
            "log": f.log.iter().map(|e| hex::encode(e.to_bytes())).collect::<Vec<_>>(),
            "record": m.record().to_hex(),
            "ciphertext": hex::encode(&f.blobs[m.ciphertext_hash()]),
            "plaintext": "ferritin 30 ug/L",
            "negative": negative,
        });
        save_vector(&path, &v);
    }
    let v = load_vector(&path);
    let log = vector_log(&v);
    let state = VaultState::verify_log(&log).unwrap();
    let alice = identity(2, "Dr Alice", Role::Clinician);
    let labs = match log[3].body() {
        EntryBody::MemberDevicesListed { collection, .. } => *collection,
        _ => panic!("seq 3 lists no member's devices"),
    };
    assert_eq!(log[5].author(), laptop.fingerprint());
    assert_eq!(log[6].author(), phone.fingerprint());
    let list = state
        .member_device_list(&labs, &alice.fingerprint())
        .unwrap();
    assert_eq!((list.serial(), list.generation()), (2, 2));
    assert_eq!(
        state.person_in(&phone.fingerprint(), Some(&labs)),
        alice.fingerprint()
    );
    assert_eq!(
        state.person_in(&laptop.fingerprint(), Some(&labs)),
        laptop.fingerprint()
    );
    let record = crate::RecordId::from_hex(v["record"].as_str().unwrap()).unwrap();
    let verified = state.record(&record).unwrap();
    let ciphertext = hex::decode(v["ciphertext"].as_str().unwrap()).unwrap();
    for who in [&phone, &alice] {
        let mut out = Vec::new();
        Keyring::new(who, NOW)
            .open(&state, &verified, ciphertext.as_slice(), &mut out)
            .unwrap();
        assert_eq!(out, v["plaintext"].as_str().unwrap().as_bytes());
    }
    let mut out = Vec::new();
    assert!(Keyring::new(&laptop, NOW)
        .open(&state, &verified, ciphertext.as_slice(), &mut out)
        .is_err());
    check_negative_cases(&v, &log, 4);
}
