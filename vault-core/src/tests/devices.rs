//! Device lists (`docs/format.md` §3.7): a person's root key certifies
//! the devices acting for it; each listed device opens the person's key
//! generations; removing one starts a new generation it cannot open; only
//! the root or a listed device signs a version, a device only the next
//! one; the root overrides.

use super::fixture::*;
use crate::devices::{recovery_secret, x25519_public, DeviceList, NO_PRIOR};
use crate::error::Error;
use crate::identity::{Role, SecretIdentity};

/// Where the current generation's public key starts in an encoded list:
/// version, person, serial, prev, issued_at, recovery_public, generation.
const ENC_PUBLIC_AT: usize = 1 + 32 + 4 + 32 + 8 + 32 + 4;

fn device(seed: u8, name: &str) -> SecretIdentity {
    identity(seed, name, Role::Device)
}

/// Pat's root (seed 1) and three devices: a phone (20), a laptop (21), a
/// browser (22).
fn people() -> (SecretIdentity, [SecretIdentity; 3]) {
    (
        identity(1, "Pat Patient", Role::Patient),
        [
            device(20, "phone"),
            device(21, "laptop"),
            device(22, "browser"),
        ],
    )
}

#[test]
fn the_root_lists_a_device_which_opens_every_generation() {
    let (root, [phone, laptop, _]) = people();
    let (list, keys) = DeviceList::first(&root, &[phone.public().clone()], NOW).unwrap();
    assert_eq!((list.serial(), list.generation()), (1, 1));
    list.accept(root.public(), None).unwrap();
    let opened = list.open(&phone).unwrap();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened.current_public(), list.enc_public());
    // The first generation has no prior: generation 0, the root document's
    // own key, is never handed to a device (decision 67).
    assert_eq!(list.prior_public(), &NO_PRIOR);
    assert!(opened.secret_for(root.public().x25519_public()).is_none());
    assert_ne!(
        opened.secret_for(list.enc_public()),
        Some(&*root.x25519_secret_copy())
    );
    assert_eq!(
        opened.secret_for(list.enc_public()),
        keys.secret_for(list.enc_public())
    );
    assert_eq!(
        &x25519_public(opened.secret_for(list.enc_public()).unwrap()),
        list.enc_public()
    );
    // A device not listed opens nothing.
    assert!(matches!(list.open(&laptop), Err(Error::AccessDenied(_))));
    // The root key file opens it too, through the recovery box.
    let recovered = list.open_recovery(&root).unwrap();
    recovered.check_against(&list).unwrap();
    // Parsing is strict and canonical.
    let again = DeviceList::from_bytes(list.to_bytes()).unwrap();
    assert_eq!(again, list);
    let mut trailing = list.to_bytes().to_vec();
    trailing.push(0);
    assert!(DeviceList::from_bytes(&trailing).is_err());
    // Only device documents are listed.
    assert!(DeviceList::first(
        &root,
        &[identity(4, "Dr X", Role::Clinician).public().clone()],
        NOW
    )
    .is_err());
    assert!(DeviceList::first(&root, &[], NOW).is_err());
}

#[test]
fn a_device_adds_one_and_removing_one_starts_a_generation_it_cannot_open() {
    let (root, [phone, laptop, browser]) = people();
    let (v1, _) = DeviceList::first(&root, &[phone.public().clone()], NOW).unwrap();
    let keys = v1.open(&phone).unwrap();
    // The phone adds the laptop: same generation.
    let (v2, _) = v1
        .next(&phone, &keys, &[laptop.public().clone()], &[], NOW + 10)
        .unwrap();
    v2.accept(root.public(), Some(&v1)).unwrap();
    assert_eq!((v2.serial(), v2.generation()), (2, 1));
    assert_eq!(
        v2.device(&laptop.fingerprint()).unwrap().added_at(),
        NOW + 10
    );
    assert_eq!(v2.device(&phone.fingerprint()).unwrap().added_at(), NOW);
    let laptop_keys = v2.open(&laptop).unwrap();
    assert_eq!(laptop_keys.len(), 1, "generation 1 has no prior");
    keys.check_against(&v2).unwrap();
    laptop_keys.check_against(&v1).unwrap();
    // The laptop removes the phone (lost) and adds the browser: generation 2.
    let (v3, _) = v2
        .next(
            &laptop,
            &laptop_keys,
            &[browser.public().clone()],
            &[phone.fingerprint()],
            NOW + 20,
        )
        .unwrap();
    v3.accept(root.public(), Some(&v2)).unwrap();
    assert_eq!((v3.serial(), v3.generation()), (3, 2));
    assert_eq!(v3.prior_public(), v2.enc_public());
    assert!(matches!(v3.open(&phone), Err(Error::AccessDenied(_))));
    let mut browser_keys = v3.open(&browser).unwrap();
    assert_eq!(
        browser_keys.secret_for(v1.enc_public()),
        keys.secret_for(v1.enc_public()),
        "the history box carries the generation before"
    );
    assert!(
        keys.check_against(&v3).is_err(),
        "the phone lacks generation 2"
    );
    // Generation 1 has no prior: generation 0, the root's own key, is
    // never reached.
    assert_eq!(browser_keys.len(), 2);
    assert!(!browser_keys.walk_back(&v2).unwrap(), "nothing more to add");
    assert!(!browser_keys.walk_back(&v1).unwrap(), "nothing more to add");
    assert!(browser_keys
        .secret_for(root.public().x25519_public())
        .is_none());
    // The lost phone holds only generation 1: it cannot extend v3, and
    // its own version 3 from v2 (removing the laptop) is refused by whoever
    // accepted v3.
    assert!(v3
        .next(&phone, &keys, &[], &[laptop.fingerprint()], NOW + 30)
        .is_err());
    // Even given the current keys, a device not in the list signs nothing.
    assert!(matches!(
        v3.next(
            &phone,
            &browser_keys,
            &[],
            &[laptop.fingerprint()],
            NOW + 30
        ),
        Err(Error::AccessDenied(_))
    ));
    let (stolen, _) = v2
        .next(&phone, &keys, &[], &[laptop.fingerprint()], NOW + 30)
        .unwrap();
    assert!(matches!(
        stolen.accept(root.public(), Some(&v3)),
        Err(Error::Rollback { .. })
    ));
}

#[test]
fn versions_that_break_the_rules_are_refused() {
    let (root, [phone, laptop, browser]) = people();
    let (v1, _) = DeviceList::first(
        &root,
        &[phone.public().clone(), laptop.public().clone()],
        NOW,
    )
    .unwrap();
    let keys = v1.open(&phone).unwrap();
    // A first version signed by a device.
    let (by_device, _) = v1.next(&phone, &keys, &[], &[], NOW).unwrap();
    assert!(by_device.accept(root.public(), None).is_err());
    // Another person's root.
    let other = identity(9, "Someone Else", Role::Patient);
    assert!(matches!(
        v1.accept(other.public(), None),
        Err(Error::ContextMismatch {
            field: "person",
            ..
        })
    ));
    // A device's removal that keeps the generation.
    let kept = v1
        .next_keeping_generation_for_test(&phone, &keys, &[laptop.fingerprint()], NOW)
        .unwrap();
    assert_eq!(kept.generation(), 1);
    assert!(matches!(
        kept.accept(root.public(), Some(&v1)),
        Err(Error::Malformed { .. })
    ));
    // A device skipping a serial, or extending another version.
    let (v2, _) = v1
        .next(&phone, &keys, &[browser.public().clone()], &[], NOW)
        .unwrap();
    v2.accept(root.public(), Some(&v1)).unwrap();
    let (v3, _) = v2.next(&laptop, &keys, &[], &[], NOW).unwrap();
    assert!(
        v3.accept(root.public(), Some(&v1)).is_err(),
        "a device skipped a serial"
    );
    // A rollback: an older version offered after a newer one.
    assert!(matches!(
        v1.accept(root.public(), Some(&v2)),
        Err(Error::Rollback { .. })
    ));
    // The root's next version extending v2, with the recovery file's keys,
    // follows the same rules as a device's.
    let root_keys = v2.open_recovery(&root).unwrap();
    let (by_root, _) = v2
        .next(&root, &root_keys, &[], &[laptop.fingerprint()], NOW + 5)
        .unwrap();
    by_root.accept(root.public(), Some(&v2)).unwrap();
    assert_eq!(by_root.generation(), 2);
    // A non-canonical X25519 key (the current generation's top bit set).
    let mut bytes = v2.to_bytes().to_vec();
    bytes[ENC_PUBLIC_AT + 31] |= 0x80;
    assert!(matches!(
        DeviceList::from_bytes(&bytes),
        Err(Error::Malformed { .. })
    ));
    // A history box holding a secret that is not the prior generation's:
    // the list is accepted (only its holders can tell), but no device
    // opens it, so no wrong key is ever kept.
    let wrong =
        DeviceList::first_with_wrong_prior_for_test(&root, &[phone.public().clone()], NOW).unwrap();
    wrong.accept(root.public(), None).unwrap();
    assert!(matches!(wrong.open(&phone), Err(Error::DecryptionFailed)));
    assert!(matches!(
        wrong.open_recovery(&root),
        Err(Error::DecryptionFailed)
    ));
    // A tampered signature byte.
    let mut bytes = v2.to_bytes().to_vec();
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    let tampered = DeviceList::from_bytes(&bytes).unwrap();
    assert!(matches!(
        tampered.accept(root.public(), Some(&v1)),
        Err(Error::BadSignature { .. })
    ));
    // The recovery key is the root's alone.
    assert_ne!(
        x25519_public(&recovery_secret(&root)),
        x25519_public(&recovery_secret(&other))
    );
    assert!(matches!(
        v1.open_recovery(&other),
        Err(Error::DecryptionFailed)
    ));
}

#[test]
fn the_root_overrides_a_thief_and_a_fork() {
    let (root, [phone, laptop, browser]) = people();
    let (v1, _) = DeviceList::first(
        &root,
        &[phone.public().clone(), laptop.public().clone()],
        NOW,
    )
    .unwrap();
    let phone_keys = v1.open(&phone).unwrap();
    let laptop_keys = v1.open(&laptop).unwrap();
    // A fork: the phone (stolen) and the laptop each sign a serial 2, each
    // removing the other, each with its own generation 2.
    let (thief, _) = v1
        .next(&phone, &phone_keys, &[], &[laptop.fingerprint()], NOW + 1)
        .unwrap();
    let (honest, _) = v1
        .next(&laptop, &laptop_keys, &[], &[phone.fingerprint()], NOW + 1)
        .unwrap();
    thief.accept(root.public(), Some(&v1)).unwrap();
    honest.accept(root.public(), Some(&v1)).unwrap();
    assert_eq!((thief.serial(), thief.generation()), (2, 2));
    assert_ne!(thief.enc_public(), honest.enc_public());
    // The thief goes on: it adds and removes throwaway devices, one new
    // generation each time. Nothing bounds the generations, and the list
    // does not grow with them.
    let mut newest = thief.clone();
    let mut newest_keys = newest.open(&phone).unwrap();
    for i in 0..40u8 {
        let throwaway = device(100 + i, "throwaway");
        let (added, k) = newest
            .next(
                &phone,
                &newest_keys,
                &[throwaway.public().clone()],
                &[],
                NOW + 2,
            )
            .unwrap();
        let (removed, k) = added
            .next(&phone, &k, &[], &[throwaway.fingerprint()], NOW + 2)
            .unwrap();
        removed.accept(root.public(), Some(&added)).unwrap();
        newest = removed;
        newest_keys = k;
    }
    assert_eq!(newest.generation(), 42);
    // One device, 42 generations: the size of a one-device list (age's
    // headers vary by a few dozen bytes), where a history of every
    // generation would have added 32 bytes each.
    assert!(
        newest.to_bytes().len() < 1600,
        "{}",
        newest.to_bytes().len()
    );
    // The root builds on v1, which it opens with the recovery key, above
    // everything it has seen: serial and generation. Readers holding the
    // thief's newest version, the honest fork or v1 all accept it.
    let (over, mut over_keys) = v1
        .recover(
            &root,
            std::slice::from_ref(&newest),
            &[browser.public().clone()],
            &[phone.fingerprint()],
            NOW + 3,
        )
        .unwrap();
    assert_eq!(over.serial(), newest.serial() + 1);
    assert_eq!(over.generation(), newest.generation() + 1);
    assert_eq!(over.prev(), v1.hash());
    assert_eq!(over.prior_public(), v1.enc_public());
    for held in [&newest, &honest, &v1] {
        over.accept(root.public(), Some(held)).unwrap();
    }
    over.accept(root.public(), None).unwrap();
    // The phone is gone; the laptop and the new browser open the new
    // generation and reach generation 1 along v1 (never generation 0, nor
    // the thief's).
    assert!(over.open(&phone).is_err());
    let mut browser_keys = over.open(&browser).unwrap();
    assert!(!browser_keys.walk_back(&v1).unwrap(), "v1 has no prior");
    browser_keys.check_against(&v1).unwrap();
    assert!(browser_keys
        .secret_for(root.public().x25519_public())
        .is_none());
    assert!(browser_keys.check_against(&thief).is_err());
    assert!(!over_keys.walk_back(&v1).unwrap());
    // A device never overrides: a device-signed version at a later serial
    // that does not extend the one held is refused, whatever its
    // generation.
    let mut chain = honest.clone();
    let mut chain_keys = honest.open(&laptop).unwrap();
    for _ in 0..2 {
        let (n, k) = chain.next(&laptop, &chain_keys, &[], &[], NOW + 4).unwrap();
        chain = n;
        chain_keys = k;
    }
    assert_eq!(chain.serial(), 4);
    assert!(matches!(
        chain.accept(root.public(), Some(&v1)),
        Err(Error::Malformed { .. })
    ));
    // The root's override of a sibling at the same serial: the laptop's
    // v2 keeps generation 1 (it added the browser), the thief's sibling
    // serial 2 starts generation 2. Built on the laptop's v2 seeing the
    // thief's, the override has the shape of an extension of the laptop's
    // v2 (serial 3, prev its hash) but a generation two above: readers
    // holding either accept it.
    let (sibling, _) = v1
        .next(
            &laptop,
            &laptop_keys,
            &[browser.public().clone()],
            &[],
            NOW + 4,
        )
        .unwrap();
    let (over_sibling, _) = sibling
        .recover(
            &root,
            std::slice::from_ref(&thief),
            &[],
            &[phone.fingerprint()],
            NOW + 4,
        )
        .unwrap();
    assert_eq!((over_sibling.serial(), over_sibling.generation()), (3, 3));
    over_sibling.accept(root.public(), Some(&sibling)).unwrap();
    over_sibling.accept(root.public(), Some(&thief)).unwrap();
    // The maxima split across versions: the highest serial in one, the
    // latest time in another. The override takes each.
    let (late_fork, _) = v1.next(&phone, &phone_keys, &[], &[], NOW + 1_000).unwrap();
    let seen = [newest.clone(), late_fork.clone()];
    let (over_all, _) = v1
        .recover(&root, &seen, &[], &[phone.fingerprint()], NOW + 5)
        .unwrap();
    for held in &seen {
        over_all.accept(root.public(), Some(held)).unwrap();
    }
    let (over_one, _) = v1
        .recover(&root, std::slice::from_ref(&newest), &[], &[], NOW + 5)
        .unwrap();
    assert!(
        matches!(
            over_one.accept(root.public(), Some(&late_fork)),
            Err(Error::Malformed { .. })
        ),
        "issued before the held version"
    );
    // The root's override must pass both the serial and the generation a
    // reader holds: one built seeing only a version at generation 1 has
    // serial 3 and generation 2, which a reader holding the thief's
    // serial 2 (generation 2) refuses.
    let (v2_added, _) = v1
        .next(
            &laptop,
            &laptop_keys,
            &[browser.public().clone()],
            &[],
            NOW + 5,
        )
        .unwrap();
    let (low, _) = v1
        .recover(
            &root,
            std::slice::from_ref(&v2_added),
            &[],
            &[phone.fingerprint()],
            NOW + 5,
        )
        .unwrap();
    assert_eq!((low.serial(), low.generation()), (3, 2));
    low.accept(root.public(), Some(&v2_added)).unwrap();
    assert!(matches!(
        low.accept(root.public(), Some(&thief)),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        low.accept(root.public(), Some(&newest)),
        Err(Error::Rollback { .. })
    ));
    // A version whose recovery box the root cannot open (a thief's may
    // hold anything) is not one to build on.
    assert!(thief.open_recovery(&root).is_ok());
    let other = identity(9, "Someone Else", Role::Patient);
    assert!(matches!(
        thief.recover(&other, std::slice::from_ref(&thief), &[], &[], NOW),
        Err(Error::AccessDenied(_))
    ));
}

/// The device-list vector (`tests/vectors/devices.json`, `docs/format.md`
/// §3.7): Pat's root (seed 1) and four devices (seeds 20 to 23): serial 1
/// by the root lists the phone; serial 2 by the phone adds the laptop;
/// serial 3 by the laptop removes the phone and adds the browser
/// (generation 2); serial 4 by the root removes the laptop and adds the
/// tablet (generation 3); serial 5 by the tablet, stolen, removes the
/// browser (generation 4); serial 6 is the root's override built on
/// serial 4, removing the tablet (generation 5). Regenerate (only for a
/// deliberate format change) with
/// `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --lib devices_vector`.
#[test]
fn devices_vector() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/devices.json");
    let (root, [phone, laptop, browser]) = people();
    let tablet = device(23, "tablet");
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
        let (v1, _) = DeviceList::first(&root, &[phone.public().clone()], NOW).unwrap();
        let k1 = v1.open(&phone).unwrap();
        let (v2, _) = v1
            .next(&phone, &k1, &[laptop.public().clone()], &[], NOW + 1)
            .unwrap();
        let k2 = v2.open(&laptop).unwrap();
        let (v3, _) = v2
            .next(
                &laptop,
                &k2,
                &[browser.public().clone()],
                &[phone.fingerprint()],
                NOW + 2,
            )
            .unwrap();
        let k3 = v3.open_recovery(&root).unwrap();
        let (v4, _) = v3
            .next(
                &root,
                &k3,
                &[tablet.public().clone()],
                &[laptop.fingerprint()],
                NOW + 3,
            )
            .unwrap();
        let k4 = v4.open(&tablet).unwrap();
        let (v5, _) = v4
            .next(&tablet, &k4, &[], &[browser.fingerprint()], NOW + 4)
            .unwrap();
        let (v6, _) = v4
            .recover(
                &root,
                std::slice::from_ref(&v5),
                &[],
                &[tablet.fingerprint()],
                NOW + 5,
            )
            .unwrap();
        let lists: Vec<_> = [&v1, &v2, &v3, &v4, &v5, &v6]
            .iter()
            .map(|l| {
                serde_json::json!({
                    "list": hex::encode(l.to_bytes()),
                    "hash": hex::encode(l.hash()),
                    "serial": l.serial(),
                    "generation": l.generation(),
                    "enc_public": hex::encode(l.enc_public()),
                    "prior_public": hex::encode(l.prior_public()),
                    "signer": l.signer().to_hex(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "description": "docs/format.md §3.7 and §3.9: Pat's root identity (seed [1;32], role patient, as in vault-core's test fixture) and devices from seeds [20;32] phone, [21;32] laptop, [22;32] browser, [23;32] tablet (role device, created_at 1699913600). Serial 1 by the root lists the phone; 2 by the phone adds the laptop; 3 by the laptop removes the phone and adds the browser (generation 2); 4 by the root removes the laptop and adds the tablet (generation 3); 5 by the tablet, stolen, removes the browser (generation 4); 6 is the root's override built on 4 (prev = list 4's hash) removing the tablet (generation 5). Each list must parse, re-encode byte for byte, hash to `hash`, and be accepted given the one before (6 given 5, as an override). A device listed in a version opens its current secret (X25519 public key enc_public) and, from the history box, its prior (prior_public; all zero and an empty history box for none, as in lists 1 and 2); walking back along prev reaches generation 1, never generation 0 (the root's own key, which no list carries). The browser in list 6 never opens generation 4. recovery_public is X25519(HKDF-SHA256(ikm = root Ed25519 seed, salt empty, info = ctx(\"recovery-key\") || person)); the recovery key opens each list's recovery box.",
            "person": root.fingerprint().to_hex(),
            "recovery_public": hex::encode(x25519_public(&recovery_secret(&root))),
            "lists": lists,
        });
        save_vector(&path, &v);
    }
    let v = load_vector(&path);
    assert_eq!(v["person"], root.fingerprint().to_hex());
    assert_eq!(
        v["recovery_public"],
        hex::encode(x25519_public(&recovery_secret(&root)))
    );
    let lists: Vec<DeviceList> = v["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let bytes = hex::decode(l["list"].as_str().unwrap()).unwrap();
            let list = DeviceList::from_bytes(&bytes).unwrap();
            assert_eq!(list.to_bytes(), &bytes[..]);
            assert_eq!(hex::encode(list.hash()), l["hash"].as_str().unwrap());
            assert_eq!(
                u64::from(list.generation()),
                l["generation"].as_u64().unwrap()
            );
            assert_eq!(
                hex::encode(list.enc_public()),
                l["enc_public"].as_str().unwrap()
            );
            assert_eq!(
                hex::encode(list.prior_public()),
                l["prior_public"].as_str().unwrap()
            );
            list
        })
        .collect();
    assert_eq!(lists.len(), 6);
    let mut held: Option<&DeviceList> = None;
    for l in &lists {
        l.accept(root.public(), held).unwrap();
        held = Some(l);
    }
    assert_eq!(lists[5].prev(), lists[3].hash());
    lists[5].accept(root.public(), Some(&lists[3])).unwrap();
    // Who opens what: every listed device its version's generation and,
    // walking back along prev, every generation before it on the chain.
    let holders: [(usize, &SecretIdentity); 6] = [
        (0, &phone),
        (1, &laptop),
        (2, &browser),
        (3, &tablet),
        (4, &tablet),
        (5, &browser),
    ];
    for (at, dev) in holders {
        let list = &lists[at];
        let mut keys = list.open(dev).unwrap();
        let mut step = Some(list);
        while let Some(l) = step {
            keys.walk_back(l).unwrap();
            keys.check_against(l).unwrap();
            step = lists.iter().find(|e| e.hash() == l.prev());
        }
        assert!(keys.secret_for(root.public().x25519_public()).is_none());
        list.open_recovery(&root)
            .unwrap()
            .check_against(list)
            .unwrap();
        if at == 5 {
            assert!(
                keys.check_against(&lists[4]).is_err(),
                "the thief's generation"
            );
        }
    }
    // Removed devices open nothing later; skipping or going back is refused.
    assert!(lists[2].open(&phone).is_err());
    assert!(lists[3].open(&laptop).is_err());
    assert!(lists[5].open(&tablet).is_err());
    assert!(lists[2].accept(root.public(), Some(&lists[0])).is_err());
    assert!(matches!(
        lists[1].accept(root.public(), Some(&lists[2])),
        Err(Error::Rollback { .. })
    ));
}

/// Where the fields of an encoded list start (version, person, serial,
/// prev, issued_at, recovery_public, generation, enc_public, prior_public).
const ISSUED_AT: usize = 1 + 32 + 4 + 32;
const RECOVERY_AT: usize = ISSUED_AT + 8;
const PRIOR_AT: usize = ENC_PUBLIC_AT + 32;

#[test]
fn every_acceptance_rule_refuses_what_breaks_it() {
    let (root, [phone, laptop, _]) = people();
    let (v1, _) = DeviceList::first(&root, &[phone.public().clone()], NOW + 100).unwrap();
    let keys = v1.open(&phone).unwrap();
    let (v2, _) = v1
        .next(&phone, &keys, &[laptop.public().clone()], &[], NOW + 100)
        .unwrap();
    v2.accept(root.public(), Some(&v1)).unwrap();
    let malformed = |r: crate::error::Result<()>| matches!(r, Err(Error::Malformed { .. }));
    // Time going back from the version held (every device still dated
    // before the version, so only that rule can refuse it).
    let (later, later_keys) = v1.next(&phone, &keys, &[], &[], NOW + 300).unwrap();
    let (after, _) = later
        .next(&phone, &later_keys, &[], &[], NOW + 400)
        .unwrap();
    after.accept(root.public(), Some(&later)).unwrap();
    let earlier = after
        .resigned_for_test(&phone, |b| {
            b[ISSUED_AT..ISSUED_AT + 8].copy_from_slice(&(NOW + 200).to_be_bytes())
        })
        .unwrap();
    assert!(matches!(
        earlier.accept(root.public(), Some(&later)),
        Err(Error::Malformed {
            reason: "a version is issued before the one it follows",
            ..
        })
    ));
    // Another recovery key.
    let other_recovery = x25519_public(&[9; 32]);
    let moved = v2
        .resigned_for_test(&phone, |b| {
            b[RECOVERY_AT..RECOVERY_AT + 32].copy_from_slice(&other_recovery)
        })
        .unwrap();
    assert!(malformed(moved.accept(root.public(), Some(&v1))));
    // The root's override reusing the held generation's key.
    let (v3, _) = v2
        .next(&phone, &keys, &[], &[laptop.fingerprint()], NOW + 100)
        .unwrap();
    let (over, _) = v1
        .recover(&root, std::slice::from_ref(&v3), &[], &[], NOW + 200)
        .unwrap();
    over.accept(root.public(), Some(&v3)).unwrap();
    let reused = over
        .resigned_for_test(&root, |b| {
            b[ENC_PUBLIC_AT..ENC_PUBLIC_AT + 32].copy_from_slice(v3.enc_public())
        })
        .unwrap();
    assert!(malformed(reused.accept(root.public(), Some(&v3))));
    // A device extending with a generation two above the held one: not an
    // extension, and only the root overrides.
    let skipped = v3
        .resigned_for_test(&phone, |b| {
            b[ENC_PUBLIC_AT - 4..ENC_PUBLIC_AT].copy_from_slice(&3u32.to_be_bytes())
        })
        .unwrap();
    assert!(malformed(skipped.accept(root.public(), Some(&v2))));
    // A generation that is its own prior, and keys that are not canonical
    // (at least 2^255 - 19) or of low order, do not parse.
    let mut same = over.to_bytes().to_vec();
    let enc = *over.enc_public();
    same[PRIOR_AT..PRIOR_AT + 32].copy_from_slice(&enc);
    assert!(DeviceList::from_bytes(&same).is_err());
    let mut big = over.to_bytes().to_vec();
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    big[ENC_PUBLIC_AT..ENC_PUBLIC_AT + 32].copy_from_slice(&p);
    assert!(matches!(
        DeviceList::from_bytes(&big),
        Err(Error::Malformed { .. })
    ));
    let mut low = over.to_bytes().to_vec();
    low[ENC_PUBLIC_AT..ENC_PUBLIC_AT + 32].copy_from_slice(&[0; 32]);
    assert!(matches!(
        DeviceList::from_bytes(&low),
        Err(Error::WeakPublicKey { .. })
    ));
    // A first version with a prior but no prev, and a version with no
    // prior but a history box, are refused.
    let with_prior = v1.resigned_for_test(&root, |b| {
        b[PRIOR_AT..PRIOR_AT + 32].copy_from_slice(&x25519_public(&[3; 32]))
    });
    assert!(with_prior.is_err(), "a prior needs its history box");
    // A version with no prev and a prior is refused by a reader holding no
    // version: a list starting afresh has no prior generation.
    let afresh = DeviceList::first_with_wrong_prior_for_test(&root, &[phone.public().clone()], NOW)
        .unwrap()
        .resigned_for_test(&root, |b| b[1 + 32 + 4..1 + 32 + 4 + 32].fill(0))
        .unwrap();
    assert!(matches!(
        afresh.accept(root.public(), None),
        Err(Error::Malformed {
            reason: "a list starting afresh has no prior generation",
            ..
        })
    ));
}
