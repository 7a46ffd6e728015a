//! Device lists (`docs/format.md` §3.7): a person's root key certifies
//! the devices acting for it; each listed device opens the person's key
//! generations; removing one starts a new generation it cannot open; only
//! the root or a listed device signs a version, a device only the next
//! one; the root overrides.

use super::fixture::*;
use crate::devices::{recovery_secret, x25519_public, DeviceList};
use crate::error::Error;
use crate::identity::{Role, SecretIdentity};

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
    let opened = list.open(&phone, root.public()).unwrap();
    assert_eq!(opened.current(), 1);
    // Generation 0 is the root document's own key: grants sealed before
    // the list existed still open.
    assert_eq!(
        &x25519_public(opened.secret(0).unwrap()),
        root.public().x25519_public()
    );
    assert_eq!(opened.secret(1), keys.secret(1));
    assert_eq!(&x25519_public(opened.secret(1).unwrap()), list.enc_public());
    // A device not listed opens nothing.
    assert!(matches!(
        list.open(&laptop, root.public()),
        Err(Error::AccessDenied(_))
    ));
    // The root key file opens it too, through the recovery box.
    let recovered = list.open_recovery(&root).unwrap();
    assert_eq!(recovered.secret(1), keys.secret(1));
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
    let keys = v1.open(&phone, root.public()).unwrap();
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
    let laptop_keys = v2.open(&laptop, root.public()).unwrap();
    assert_eq!(laptop_keys.secret(1), keys.secret(1));
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
    assert!(matches!(
        v3.open(&phone, root.public()),
        Err(Error::AccessDenied(_))
    ));
    let browser_keys = v3.open(&browser, root.public()).unwrap();
    assert_eq!(browser_keys.current(), 2);
    assert_eq!(
        browser_keys.secret(1),
        keys.secret(1),
        "the history box carries earlier generations"
    );
    assert_ne!(browser_keys.secret(2), keys.secret(1));
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
    let keys = v1.open(&phone, root.public()).unwrap();
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
    // The root overrides a fork: any later serial, signed by the root,
    // with the recovery file's keys.
    let root_keys = v2.open_recovery(&root).unwrap();
    let (fork, _) = v1
        .next(&laptop, &keys, &[], &[phone.fingerprint()], NOW)
        .unwrap();
    fork.accept(root.public(), Some(&v1)).unwrap();
    let (over, _) = v2
        .next(&root, &root_keys, &[], &[laptop.fingerprint()], NOW + 5)
        .unwrap();
    over.accept(root.public(), Some(&v2)).unwrap();
    assert_eq!(over.generation(), 2);
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

/// The device-list vector (`tests/vectors/devices.json`, `docs/format.md`
/// §3.7): Pat's root (seed 1) and four devices (seeds 20 to 23): serial 1
/// by the root lists the phone; serial 2 by the phone adds the laptop;
/// serial 3 by the laptop removes the phone and adds the browser
/// (generation 2); serial 4 by the root removes the laptop and adds the
/// tablet (generation 3). Regenerate (only for a deliberate format change)
/// with `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --lib devices_vector`.
#[test]
fn devices_vector() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/devices.json");
    let (root, [phone, laptop, browser]) = people();
    let tablet = device(23, "tablet");
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
        let (v1, _) = DeviceList::first(&root, &[phone.public().clone()], NOW).unwrap();
        let k1 = v1.open(&phone, root.public()).unwrap();
        let (v2, _) = v1
            .next(&phone, &k1, &[laptop.public().clone()], &[], NOW + 1)
            .unwrap();
        let k2 = v2.open(&laptop, root.public()).unwrap();
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
        let lists: Vec<_> = [&v1, &v2, &v3, &v4]
            .iter()
            .map(|l| {
                serde_json::json!({
                    "list": hex::encode(l.to_bytes()),
                    "hash": hex::encode(l.hash()),
                    "serial": l.serial(),
                    "generation": l.generation(),
                    "enc_public": hex::encode(l.enc_public()),
                    "signer": l.signer().to_hex(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "description": "docs/format.md §3.7 and §3.9: Pat's root identity (seed [1;32], role patient, as in vault-core's test fixture) and devices from seeds [20;32] phone, [21;32] laptop, [22;32] browser, [23;32] tablet (role device, created_at 1699913600). Serial 1 by the root lists the phone; 2 by the phone adds the laptop; 3 by the laptop removes the phone and adds the browser (generation 2); 4 by the root removes the laptop and adds the tablet (generation 3). Each list must parse, re-encode byte for byte, hash to `hash`, and be accepted given the one before; each listed device opens every generation secret, whose X25519 public keys are the lists' enc_public (generation 0: the root's own key); the recovery key derived from the root opens each list's recovery box. recovery_public is X25519(HKDF-SHA256(ikm = root Ed25519 seed, salt empty, info = ctx(\"recovery-key\") || person)).",
            "person": root.fingerprint().to_hex(),
            "recovery_public": hex::encode(x25519_public(&recovery_secret(&root))),
            "lists": lists,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
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
            list
        })
        .collect();
    let mut held: Option<&DeviceList> = None;
    for l in &lists {
        l.accept(root.public(), held).unwrap();
        held = Some(l);
    }
    // Who opens what: every listed device, every generation so far.
    let holders: [(&DeviceList, &SecretIdentity); 4] = [
        (&lists[0], &phone),
        (&lists[1], &laptop),
        (&lists[2], &browser),
        (&lists[3], &tablet),
    ];
    for (list, dev) in holders {
        let keys = list.open(dev, root.public()).unwrap();
        for earlier in lists.iter().filter(|e| e.serial() <= list.serial()) {
            keys.check_against(earlier).unwrap();
        }
        assert_eq!(
            keys.secret(0).map(x25519_public).as_ref(),
            Some(root.public().x25519_public())
        );
        list.open_recovery(&root)
            .unwrap()
            .check_against(list)
            .unwrap();
    }
    // Removed devices open nothing later; skipping or going back is refused.
    assert!(lists[2].open(&phone, root.public()).is_err());
    assert!(lists[3].open(&laptop, root.public()).is_err());
    assert!(lists[2].accept(root.public(), Some(&lists[0])).is_err());
    assert!(matches!(
        lists[1].accept(root.public(), Some(&lists[2])),
        Err(Error::Rollback { .. })
    ));
}
