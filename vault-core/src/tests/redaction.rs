//! What members learn from the log (`docs/format.md` §8.8): a relay
//! serves each reader the entries that concern what they hold, and the
//! others redacted; readers verify the whole chain either way and refuse
//! an entry withheld from them.

use super::fixture::*;
use crate::grant::Permission;
use crate::log::{EntryBody, LogEntry};
use crate::{Error, Keyring, VaultState};

fn redacted_count(log: &[LogEntry]) -> usize {
    log.iter().filter(|e| e.is_redacted()).count()
}

/// Labs shared with Alice, medications with Bob, a record in each.
fn two_members() -> Fixture {
    let mut f = Fixture::new();
    f.put_as(0, f.labs, None, "Potassium", b"4.1 mmol/L");
    f.put_as(0, f.meds, None, "Sertraline", b"50 mg daily");
    f.share(1, f.labs, Permission::Read, None);
    f.share(2, f.meds, Permission::ReadWrite, None);
    f.put_as(2, f.meds, None, "Review", b"dose unchanged");
    f
}

#[test]
fn a_member_sees_only_their_collections_and_verifies_the_whole_chain() {
    let f = two_members();
    let alice = f.alice.fingerprint();
    let log = served(&f, &alice);
    // Medications: its creation, record, Bob's grant and Bob's record.
    assert_eq!(redacted_count(&log), 4);
    let state = VaultState::verify_log_as(&alice, NOW, &log, None).unwrap();
    assert_eq!(state.head(), f.state.head(), "same chain, same checkpoint");
    let ids: Vec<_> = state.collections().iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![f.labs]);
    assert!(state.identity(&f.bob.fingerprint()).is_none());
    assert_eq!(state.records(None).len(), 1);
    // Nothing Alice holds is hidden from her: she still opens her record.
    let r = state.records(None)[0].id;
    let v = state.record(&r).unwrap();
    let blob = f.blobs[v.metadata().ciphertext_hash()].clone();
    let mut out = Vec::new();
    Keyring::new(&f.alice, NOW)
        .open(&state, &v, blob.as_slice(), &mut out)
        .unwrap();
    assert_eq!(out, b"4.1 mmol/L");
    // Redacted entries carry no author, time or content.
    for e in log.iter().filter(|e| e.is_redacted()) {
        assert_eq!(e.to_bytes().len(), 122);
        assert_eq!(e.time(), 0);
        assert!(!e
            .to_bytes()
            .windows(32)
            .any(|w| w == f.bob.fingerprint().as_bytes()));
    }
    // The owner and the relay are shown everything.
    assert_eq!(redacted_count(&served(&f, &f.patient.fingerprint())), 0);
}

#[test]
fn an_entry_of_a_held_collection_served_redacted_is_withheld() {
    let f = two_members();
    let alice = f.alice.fingerprint();
    // The relay hides the labs record from Alice.
    let mut log = served(&f, &alice);
    let labs_record = 3;
    assert!(matches!(
        log[labs_record].body(),
        EntryBody::RecordPut { .. }
    ));
    log[labs_record] = log[labs_record].redacted().unwrap();
    // Served before her grant, a redacted labs entry is not yet hers; her
    // grant, shown whole later, shows the gap.
    assert!(matches!(
        VaultState::verify_log_as(&alice, NOW, &log, None),
        Err(Error::Withheld { seq: 5 })
    ));
    // After her grant: refused at once, leaving her state as it was.
    let mut f = f;
    f.put_as(0, f.labs, None, "Sodium", b"140 mmol/L");
    let log = served(&f, &alice);
    let mut state = VaultState::verify_log_as(&alice, NOW, &log[..8], None).unwrap();
    let before = snapshot(&state);
    let hidden = log[8].redacted().unwrap();
    assert!(matches!(
        state.apply(&hidden),
        Err(Error::Withheld { seq: 8 })
    ));
    assert_eq!(snapshot(&state), before);
    state.apply(&log[8]).unwrap();
    // The owner is never shown anything redacted.
    let owner = f.patient.fingerprint();
    let mut log = served(&f, &owner);
    log[4] = log[4].redacted().unwrap();
    assert!(matches!(
        VaultState::verify_log_as(&owner, NOW, &log, None),
        Err(Error::Withheld { seq: 4 })
    ));
    // A state with no viewer (a relay's) accepts no redacted entry.
    assert!(VaultState::verify_log(&log).is_err());
}

#[test]
fn a_redacted_entry_cannot_be_altered_or_moved() {
    let f = two_members();
    let alice = f.alice.fingerprint();
    let log = served(&f, &alice);
    let i = log.iter().position(LogEntry::is_redacted).unwrap();
    // Altering its digest breaks the next entry's link.
    let mut bytes = log[i].to_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let mut forged = log.clone();
    forged[i] = LogEntry::from_bytes(&bytes).unwrap();
    assert!(matches!(
        VaultState::verify_log_as(&alice, NOW, &forged, None),
        Err(Error::ChainBroken { .. })
    ));
    // Relabelling a whole entry's scope breaks its signature.
    let whole = &f.log[3];
    let mut bytes = whole.to_bytes().to_vec();
    bytes[1 + 16 + 8 + 32] ^= 1;
    let mut forged = f.log.clone();
    forged[3] = LogEntry::from_bytes(&bytes).unwrap();
    assert!(matches!(
        VaultState::verify_log(&forged),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn a_revoked_member_stops_seeing_the_collection_and_a_regrant_refetches() {
    let mut f = two_members();
    let alice = f.alice.fingerprint();
    f.revoke(1, f.labs);
    f.put_as(0, f.labs, None, "Sodium", b"140 mmol/L");
    f.share(2, f.labs, Permission::Read, None);
    let log = served(&f, &alice);
    // Up to the rotation that removed her, whole; after, redacted.
    let rotation = f.log.len() - 3;
    assert!(!log[rotation].is_redacted());
    assert!(log[rotation + 1..].iter().all(LogEntry::is_redacted));
    let mut state = VaultState::verify_log_as(&alice, NOW, &log, None).unwrap();
    assert_eq!(state.records(Some(&f.labs)).len(), 1, "no later record");
    assert!(state.identity(&f.bob.fingerprint()).is_none());

    // Re-granted, she is shown everything of labs again: entries she holds
    // redacted cannot be completed incrementally.
    f.share(1, f.labs, Permission::Read, None);
    let log = served(&f, &alice);
    let regrant = log.last().unwrap();
    assert!(matches!(
        state.apply(regrant),
        Err(Error::ViewChanged { .. })
    ));
    // From the start, with the checkpoint she verified before, it verifies.
    let before = state.head();
    let state = VaultState::verify_log_as(&alice, NOW, &log, None).unwrap();
    assert_eq!(state.checkpoint_at(before.seq), Some(before));
    assert_eq!(state.records(Some(&f.labs)).len(), 2);
}

#[test]
fn a_collection_shared_later_refetches_and_then_verifies() {
    let mut f = two_members();
    let alice = f.alice.fingerprint();
    let (imaging, e) = f
        .state
        .create_collection(&f.patient, "imaging", NOW)
        .unwrap();
    f.append(e);
    let mut state = VaultState::verify_log_as(&alice, NOW, &served(&f, &alice), None).unwrap();
    f.share(1, imaging, Permission::Read, None);
    let log = served(&f, &alice);
    assert!(matches!(
        state.apply(log.last().unwrap()),
        Err(Error::ViewChanged { .. })
    ));
    let state = VaultState::verify_log_as(&alice, NOW, &log, None).unwrap();
    assert_eq!(state.collections().len(), 2);
}

#[test]
fn a_single_record_grant_shows_that_record_and_nothing_else() {
    let mut f = two_members();
    let mallory = f.mallory.fingerprint();
    // Bob's record in medications, shared alone with Mallory.
    let bobs = f
        .state
        .records(Some(&f.meds))
        .into_iter()
        .find(|r| r.author == f.bob.fingerprint())
        .unwrap();
    let mut keyring = Keyring::new(&f.patient, NOW);
    let e = f
        .state
        .share_record(&mut keyring, &bobs.id, f.mallory.public(), None)
        .unwrap();
    f.append(e);
    let log = served(&f, &mallory);
    let whole: Vec<&str> = log
        .iter()
        .filter(|e| !e.is_redacted())
        .map(|e| e.body().kind_name())
        .collect();
    assert_eq!(whole, ["genesis", "record-put", "grant-added"]);
    let state = VaultState::verify_log_as(&mallory, NOW, &log, None).unwrap();
    assert!(state.collections().is_empty());
    assert!(state.identity(&f.bob.fingerprint()).is_none());
    let listed = state.records(None);
    assert_eq!(listed.len(), 1);
    let v = state.record(&bobs.id).unwrap();
    let blob = f.blobs[v.metadata().ciphertext_hash()].clone();
    let mut out = Vec::new();
    Keyring::new(&f.mallory, NOW)
        .open(&state, &v, blob.as_slice(), &mut out)
        .unwrap();
    assert_eq!(out, b"dose unchanged");
    // Replayed from the device's store (trusted up to its verified head,
    // no viewer named), the same view.
    let replayed = VaultState::verify_log_from(&log, Some(&state.head())).unwrap();
    assert_eq!(replayed.records(None), state.records(None));

    // The record version is not signed by anyone Mallory knows, but the
    // owner's later grant chains onto it: a relay that swaps it breaks the
    // chain.
    let mut log2 = log.clone();
    let put = log2
        .iter()
        .position(|e| matches!(e.body(), EntryBody::RecordPut { .. }))
        .unwrap();
    log2[put] = f.log[4].clone(); // the patient's medications record instead
    assert!(VaultState::verify_log_as(&mallory, NOW, &log2, None).is_err());
}

#[test]
fn after_a_grant_expires_its_collection_is_shown_redacted() {
    let mut f = Fixture::new();
    let alice = f.alice.fingerprint();
    f.share(1, f.labs, Permission::Read, Some(NOW + 100));
    f.share(1, f.meds, Permission::Read, None);
    f.put_as(0, f.labs, None, "Potassium", b"4.1 mmol/L");
    // Written after Alice's labs grant expired.
    let mut keyring = Keyring::new(&f.patient, NOW + 200);
    let (_, late) = f
        .state
        .put_record(
            &mut keyring,
            &f.labs,
            None,
            &info("Sodium"),
            crate::RecordBody::new(&b"140 mmol/L"[..], 10),
            std::io::sink(),
        )
        .unwrap();
    f.append(late);
    let log = served(&f, &alice);
    assert!(!log[log.len() - 2].is_redacted(), "written while in force");
    assert!(log[log.len() - 1].is_redacted(), "written after the expiry");
    let state = VaultState::verify_log_as(&alice, NOW + 200, &log, None).unwrap();
    assert_eq!(state.records(Some(&f.labs)).len(), 1);
    // Read while her grant is in force, a redacted labs entry is withheld.
    assert!(matches!(
        VaultState::verify_log_as(&alice, NOW + 50, &log, None),
        Err(Error::Withheld { .. })
    ));
}

#[test]
fn a_revoked_member_can_be_given_one_record_of_the_collection_they_left() {
    let mut f = two_members();
    let alice = f.alice.fingerprint();
    f.revoke(1, f.labs);
    let m = f.put_as(0, f.labs, None, "Sodium", b"140 mmol/L");
    let mut keyring = Keyring::new(&f.patient, NOW);
    let e = f
        .state
        .share_record(&mut keyring, &m.record(), f.alice.public(), None)
        .unwrap();
    f.append(e);
    let log = served(&f, &alice);
    // Served at once, and extended from what she held before.
    let state = VaultState::verify_log_as(&alice, NOW, &log, None).unwrap();
    let mut earlier = VaultState::verify_log_as(&alice, NOW, &log[..log.len() - 2], None).unwrap();
    for e in &log[log.len() - 2..] {
        earlier.apply(e).unwrap();
    }
    assert_eq!(earlier.records(None), state.records(None));
    let listed = state.records(Some(&f.labs));
    assert_eq!(listed.len(), 2, "the record she saw, and the one shared");
    let v = state.record(&m.record()).unwrap();
    let blob = f.blobs[v.metadata().ciphertext_hash()].clone();
    let mut out = Vec::new();
    Keyring::new(&f.alice, NOW)
        .open(&state, &v, blob.as_slice(), &mut out)
        .unwrap();
    assert_eq!(out, b"140 mmol/L");
}
