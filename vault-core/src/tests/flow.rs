//! The end-to-end story at the core level: create, share, write back,
//! revoke, export.

use super::fixture::*;
use crate::address::AddressKind;
use crate::error::Error;
use crate::export::{self, ExportSink};
use crate::store::{self, MemoryStore, Store};
use crate::{EntryBody, Permission, RecordMetadata, Role};

#[test]
fn share_write_back_revoke_story() {
    let mut f = Fixture::new();
    let lab = f.put_as(0, f.labs, None, "HbA1c", b"HbA1c 6.1 %");
    let med = f.put_as(0, f.meds, None, "Metformin", b"500 mg twice daily");

    // Nobody but the patient can read before sharing.
    assert_eq!(f.open_as(0, &lab.record()).unwrap().1, b"HbA1c 6.1 %");
    assert!(matches!(
        f.open_as(1, &lab.record()),
        Err(Error::AccessDenied(_))
    ));

    // Share labs with Alice (read-write) and Bob (read-only).
    f.share(1, f.labs, Permission::ReadWrite, None);
    f.share(2, f.labs, Permission::Read, None);
    let (opened, body) = f.open_as(1, &lab.record()).unwrap();
    assert_eq!(body, b"HbA1c 6.1 %");
    assert_eq!(opened.info.title, "HbA1c");
    assert_eq!(opened.author, f.patient.fingerprint());
    assert!(matches!(
        f.open_as(1, &med.record()),
        Err(Error::AccessDenied(_))
    ));

    // Alice writes a result back; the patient sees it, verified as Alice's.
    let result = f.put_as(1, f.labs, None, "Interpretation", b"well controlled");
    let (opened, body) = f.open_as(0, &result.record()).unwrap();
    assert_eq!(body, b"well controlled");
    assert_eq!(opened.author, f.alice.fingerprint());
    assert_eq!(
        f.state.identity(&opened.author).unwrap().display_name(),
        "Dr Alice"
    );

    // Bob, read-only, cannot write.
    assert!(matches!(
        f.put_entry(2, f.labs, None, "x", b"x"),
        Err(Error::AccessDenied(_))
    ));

    // Revoke Alice: new epoch, everything still readable by the patient and
    // Bob, nothing by Alice; new records use the new epoch.
    f.revoke(1, f.labs);
    assert!(matches!(
        f.open_as(1, &lab.record()),
        Err(Error::AccessDenied(_))
    ));
    assert_eq!(f.open_as(0, &lab.record()).unwrap().1, b"HbA1c 6.1 %");
    assert_eq!(
        f.open_as(2, &result.record()).unwrap().1,
        b"well controlled"
    );
    let newer = f.put_as(0, f.labs, None, "LDL", b"LDL 2.1 mmol/L");
    assert_eq!(newer.epoch(), 1);
    assert!(f.open_as(1, &newer.record()).is_err());
    assert!(matches!(
        f.put_entry(1, f.labs, None, "x", b"x"),
        Err(Error::AccessDenied(_))
    ));

    // Updating a record makes a new version; the old one is not current.
    let v2 = f.put_as(0, f.labs, Some(lab.record()), "HbA1c", b"HbA1c 5.9 %");
    assert_eq!(v2.version(), 2);
    assert_eq!(f.open_as(2, &lab.record()).unwrap().1, b"HbA1c 5.9 %");

    // The whole log re-verifies from genesis and gives the same head.
    let again = f.reverify().unwrap();
    assert_eq!(again.head(), f.state.head());
    let code = f.state.head().code();
    again.compare_checkpoint_code(&code).unwrap();
}

#[test]
fn single_record_share() {
    let mut f = Fixture::new();
    let pdf = f.put_as(0, f.meds, None, "Discharge letter", b"%PDF-1.7 ...");
    let other = f.put_as(0, f.meds, None, "Other", b"secret");
    let bob = f.bob.public().clone();
    let mut keyring = crate::Keyring::new(&f.patient, NOW);
    let e = f
        .state
        .share_record(&mut keyring, &pdf.record(), &bob, None)
        .unwrap();
    f.append(e);
    assert_eq!(f.open_as(2, &pdf.record()).unwrap().1, b"%PDF-1.7 ...");
    assert!(matches!(
        f.open_as(2, &other.record()),
        Err(Error::AccessDenied(_))
    ));
    assert_eq!(f.state.record_grants().len(), 1);
    let e = f
        .state
        .revoke_record_grant(&f.patient, &pdf.record(), &f.bob.fingerprint(), NOW)
        .unwrap();
    f.append(e);
    assert!(f.open_as(2, &pdf.record()).is_err());
}

#[test]
fn expired_grant_refuses_reading() {
    let mut f = Fixture::new();
    let lab = f.put_as(0, f.labs, None, "HbA1c", b"x");
    f.share(1, f.labs, Permission::Read, Some(NOW + 10));
    assert!(f.open_as(1, &lab.record()).is_ok());
    let verified = f.state.record(&lab.record()).unwrap();
    let mut later = crate::Keyring::new(&f.alice, NOW + 11);
    let blob = f.blobs[verified.metadata().ciphertext_hash()].clone();
    assert!(matches!(
        later.open(&f.state, &verified, blob.as_slice(), Vec::new()),
        Err(Error::Expired { .. })
    ));
}

#[test]
fn collection_names_and_listing() {
    let mut f = Fixture::new();
    f.put_as(0, f.labs, None, "a", b"a");
    let mut keyring = crate::Keyring::new(&f.patient, NOW);
    assert_eq!(
        f.state.collection_name(&mut keyring, &f.labs).unwrap(),
        "labs"
    );
    let colls = f.state.collections();
    assert_eq!(colls.len(), 2);
    assert_eq!(f.state.records(Some(&f.labs)).len(), 1);
    assert_eq!(f.state.records(None).len(), 1);
}

pub(super) struct MemSink(pub(super) std::collections::BTreeMap<String, Vec<u8>>);
struct MemFile<'a>(&'a mut Vec<u8>);
impl std::io::Write for MemFile<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl ExportSink for MemSink {
    fn create(&mut self, path: &str) -> crate::Result<Box<dyn std::io::Write + '_>> {
        Ok(Box::new(MemFile(
            self.0.entry(path.to_owned()).or_default(),
        )))
    }
}

pub(super) fn age_decrypt(file: &[u8], id: &crate::SecretIdentity) -> Vec<u8> {
    use secrecy::ExposeSecret;
    use std::io::Read;
    use std::str::FromStr;
    let identity = age::x25519::Identity::from_str(id.age_secret_key().expose_secret()).unwrap();
    let dec = age::Decryptor::new(file).unwrap();
    let mut r = dec
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn export_is_standard_age_and_fhir() {
    let mut f = Fixture::new();
    let obs = br#"{"resourceType":"Observation","id":"0d7c4f0e-0000-4000-8000-000000000001","status":"final"}"#;
    let (m, e) = {
        let mut keyring = crate::Keyring::new(&f.patient, NOW);
        let mut ct = Vec::new();
        let info = crate::RecordInfo {
            content_type: export::FHIR_CONTENT_TYPE.into(),
            title: "Observation".into(),
            created_at: NOW,
            effective_at: Some(-86_400),
        };
        let r = f
            .state
            .put_record(
                &mut keyring,
                &f.labs,
                None,
                &info,
                crate::RecordBody::new(&obs[..], obs.len() as u64),
                &mut ct,
            )
            .unwrap();
        f.blobs.insert(*r.0.ciphertext_hash(), ct);
        r
    };
    f.append(e);
    f.put_as(0, f.meds, None, "../../etc/passwd", b"plain note");

    let mut sink = MemSink(Default::default());
    let mut keyring = crate::Keyring::new(&f.patient, NOW);
    let blobs = f.blobs.clone();
    let summary = export::vault(
        &f.state,
        &mut keyring,
        f.patient.public(),
        |meta| {
            Ok(Box::new(std::io::Cursor::new(
                blobs[meta.ciphertext_hash()].clone(),
            )))
        },
        &mut sink,
    )
    .unwrap();
    assert_eq!(summary.records, 2);
    assert_eq!(summary.fhir_resources, 1);
    assert!(summary
        .files
        .iter()
        .all(|p| !p.contains("..") || !p.contains("/../")));
    assert!(summary
        .files
        .iter()
        .all(|p| p.split('/').all(|c| c != ".." && !c.starts_with('.'))));
    let bundle: serde_json::Value =
        serde_json::from_slice(&age_decrypt(&sink.0["fhir-bundle.json.age"], &f.patient)).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(
        bundle["entry"][0]["resource"]["resourceType"],
        "Observation"
    );
    let note_path = summary
        .files
        .iter()
        .find(|p| p.ends_with(".txt.age"))
        .unwrap();
    assert_eq!(age_decrypt(&sink.0[note_path], &f.patient), b"plain note");
    let _ = m;

    // The single-record export helper streams too.
    let rec = f.state.records(Some(&f.meds))[0].id;
    let verified = f.state.record(&rec).unwrap();
    let mut out = Vec::new();
    export::record_to_age(
        &f.state,
        &mut keyring,
        &rec,
        f.blobs[verified.metadata().ciphertext_hash()].as_slice(),
        f.patient.public(),
        &mut out,
    )
    .unwrap();
    assert_eq!(age_decrypt(&out, &f.patient), b"plain note");
}

fn exercise_store(s: &mut dyn Store) {
    let mut f = Fixture::new();
    let lab = f.put_as(0, f.labs, None, "a", b"body");
    let vault = f.state.vault();
    s.append_entries(&vault, &f.log[..2]).unwrap();
    let mut state = crate::VaultState::verify_log(&f.log[..2]).unwrap();
    store::accept_entries(s, &mut state, &f.log[2..]).unwrap();
    assert_eq!(s.head(&vault).unwrap(), Some(f.state.head()));
    assert_eq!(store::load_vault(s, &vault).unwrap().head(), f.state.head());
    assert_eq!(s.vaults().unwrap(), vec![vault]);
    assert_eq!(s.entries(&vault, 1).unwrap().len(), f.log.len() - 1);
    // Re-appending an old entry is refused and changes nothing.
    assert!(s.append_entries(&vault, &f.log[1..2]).is_err());
    assert_eq!(s.head(&vault).unwrap(), Some(f.state.head()));

    // Blobs are content-addressed and verified.
    let blob = f.blobs[lab.ciphertext_hash()].clone();
    let mut wrong = blob.clone();
    wrong[10] ^= 1;
    assert!(matches!(
        s.put_blob(
            lab.ciphertext_hash(),
            lab.address_kind(),
            wrong.len() as u64,
            &mut wrong.as_slice()
        ),
        Err(Error::CiphertextMismatch)
    ));
    // The right bytes under the other kind of address are refused too.
    assert_eq!(lab.address_kind(), AddressKind::Blake3);
    assert!(matches!(
        s.put_blob(
            lab.ciphertext_hash(),
            AddressKind::Sha256,
            blob.len() as u64,
            &mut blob.as_slice()
        ),
        Err(Error::CiphertextMismatch)
    ));
    assert!(s.open_blob(lab.ciphertext_hash()).unwrap().is_none());
    assert!(s
        .put_blob(
            lab.ciphertext_hash(),
            lab.address_kind(),
            blob.len() as u64 + 1,
            &mut blob.as_slice()
        )
        .is_err());
    s.put_blob(
        lab.ciphertext_hash(),
        lab.address_kind(),
        blob.len() as u64,
        &mut blob.as_slice(),
    )
    .unwrap();
    let mut back = Vec::new();
    s.open_blob(lab.ciphertext_hash())
        .unwrap()
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, blob);

    // Batches: each blob checked under its own kind of address; a wrong
    // one is refused and not stored; small and large (file-backed in
    // SQLite) blobs read back.
    let small = b"a small blob".to_vec();
    let large = vec![7u8; 300 * 1024];
    let (ks, kl) = (AddressKind::Sha256, AddressKind::Blake3);
    let (hs, hl) = (ks.digest(&small), kl.digest(&large));
    assert!(matches!(
        s.put_blobs(&[(hs, ks, b"not the small blob".as_slice())]),
        Err(Error::CiphertextMismatch)
    ));
    assert!(s.open_blob(&hs).unwrap().is_none());
    s.put_blobs(&[(hs, ks, small.as_slice()), (hl, kl, large.as_slice())])
        .unwrap();
    s.put_blobs(&[(hs, ks, small.as_slice())]).unwrap();
    for (h, b) in [(hs, &small), (hl, &large)] {
        let mut back = Vec::new();
        s.open_blob(&h)
            .unwrap()
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(&back, b);
    }

    // A purge accepted from a relay deletes the purged ciphertext, small
    // and file-backed alike; deleting an absent blob is a no-op.
    let v2 = f.put_as(0, f.labs, Some(lab.record()), "a", b"body 2");
    let purge = f
        .state
        .purge_record(&f.patient, &lab.record(), NOW)
        .unwrap();
    f.append(purge);
    let n = f.log.len();
    store::accept_entries(s, &mut state, &f.log[n - 2..]).unwrap();
    assert!(!s.has_blob(lab.ciphertext_hash()).unwrap());
    let _ = v2;
    s.delete_blob(&hl).unwrap();
    s.delete_blob(&hl).unwrap();
    assert!(!s.has_blob(&hl).unwrap());
    assert!(s.has_blob(&hs).unwrap());

    // Pins: first use pins, a changed key is refused, repin replaces.
    let alice = identity(2, "Dr Alice", Role::Clinician);
    let impostor = identity(9, "Dr Alice", Role::Clinician);
    store::pin_identity(s, "alice", alice.public()).unwrap();
    store::pin_identity(s, "alice", alice.public()).unwrap();
    assert!(matches!(
        store::pin_identity(s, "alice", impostor.public()),
        Err(Error::PinnedKeyChanged { .. })
    ));
    assert_eq!(s.pinned("alice").unwrap(), Some(alice.fingerprint()));
    s.repin("alice", &impostor.fingerprint()).unwrap();
    assert_eq!(s.pins().unwrap().len(), 1);

    s.set_cursor("relay", 7).unwrap();
    s.set_cursor("relay", 8).unwrap();
    assert_eq!(s.cursor("relay").unwrap(), Some(8));
    assert_eq!(s.cursor("none").unwrap(), None);
    use std::io::Read;
}

#[test]
fn memory_store_contract() {
    exercise_store(&mut MemoryStore::new());
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_store_contract_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = crate::store::SqliteStore::open(dir.path()).unwrap();
        exercise_store(&mut s);
    }
    let s = crate::store::SqliteStore::open(dir.path()).unwrap();
    let vaults = s.vaults().unwrap();
    assert_eq!(vaults.len(), 1);
    assert!(store::load_vault(&s, &vaults[0]).is_ok());
    assert_eq!(s.cursor("relay").unwrap(), Some(8));
}

/// A writer whose record-put lost a race re-issues the same sealed version
/// on the new head, unless the race made it stale.
#[test]
fn a_sealed_version_is_reissued_on_a_moved_head() {
    let mut f = Fixture::new();
    let (m, lost) = f.put_entry(0, f.labs, None, "K+", b"4.1").unwrap();
    f.put_as(0, f.meds, None, "other", b"meanwhile");
    assert!(matches!(
        f.refuse(&lost),
        Error::ChainBroken { .. } | Error::Fork { .. }
    ));
    let again = f.state.record_put_entry(&f.patient, &m, NOW).unwrap();
    f.append(again);
    assert_eq!(f.open_as(0, &m.record()).unwrap().1, b"4.1");

    // Two new versions of one record sealed on the same head: the loser is
    // stale and must be sealed again.
    let (v2a, ea) = f
        .put_entry(0, f.labs, Some(m.record()), "K+", b"4.2")
        .unwrap();
    let (v2b, _) = f
        .put_entry(0, f.labs, Some(m.record()), "K+", b"4.3")
        .unwrap();
    f.append(ea);
    let _ = v2a;
    assert!(matches!(
        f.state.record_put_entry(&f.patient, &v2b, NOW),
        Err(Error::StaleVersion { .. })
    ));
    // After a rotation, the old epoch's metadata no longer fits.
    let (v3, _) = f
        .put_entry(0, f.labs, Some(m.record()), "K+", b"4.4")
        .unwrap();
    f.share(1, f.labs, Permission::Read, None);
    f.revoke(1, f.labs);
    assert!(matches!(
        f.state.record_put_entry(&f.patient, &v3, NOW),
        Err(Error::ContextMismatch { field: "epoch", .. })
    ));
}

/// A writer's sealed versions issued together
/// (`VaultState::issue_record_puts`): the entries and head one by one
/// gives; a forged metadata signature is refused with its own error.
#[test]
fn sealed_versions_issued_together_match_one_by_one_and_a_forged_one_gives_its_own_error() {
    let mut f = Fixture::new();
    // 40 versions sealed on the same head (new records), not yet issued.
    let metadata: Vec<RecordMetadata> = (0..40)
        .map(|i| {
            f.put_entry(0, f.labs, None, &format!("record {i}"), b"body")
                .unwrap()
                .0
        })
        .collect();
    let before = f.state.head();

    let finished = crate::deferred::FINISHED.with(|f| f.get());
    let (entries, next) = f
        .state
        .issue_record_puts(&f.patient, &metadata, NOW)
        .unwrap();
    assert_eq!(
        crate::deferred::FINISHED.with(|f| f.get()),
        finished + 1,
        "the versions went through a deferral"
    );
    assert_eq!(f.state.head(), before, "the state itself is not changed");
    assert_eq!(entries.len(), metadata.len());
    // Exactly what applying them one by one accepts, to the same head.
    let mut one_by_one = f.state.clone();
    for e in &entries {
        one_by_one.apply(e).unwrap();
    }
    assert_eq!(one_by_one.head(), next.head());
    for (e, m) in entries.iter().zip(&metadata) {
        assert!(matches!(e.body(), EntryBody::RecordPut { metadata: got } if got == m));
    }

    // A version whose metadata signature is forged (its last byte
    // flipped), at the end and in the middle: the error is the one issuing
    // one by one gives, and nothing changes.
    for at in [39, 20] {
        let mut forged = metadata.clone();
        let mut bytes = forged[at].to_bytes();
        let end = bytes.len() - 1;
        bytes[end] ^= 1;
        forged[at] = RecordMetadata::from_bytes(&bytes).unwrap();
        let mut one_by_one = f.state.clone();
        let want = forged
            .iter()
            .try_for_each(|m| one_by_one.issue_record_put(&f.patient, m, NOW).map(drop))
            .unwrap_err();
        assert!(matches!(want, Error::BadSignature { .. }), "{want}");
        let got = f
            .state
            .issue_record_puts(&f.patient, &forged, NOW)
            .unwrap_err();
        assert_eq!(got.to_string(), want.to_string());
        assert_eq!(f.state.head(), before);
    }
}

/// A batch of entries is checked with its signatures deferred and run
/// together (`crate::deferred`): a forged signature that only the deferred
/// check sees (the last entry's: nothing after it links to it) is refused
/// with the error applying one by one gives, and nothing is stored.
#[test]
fn a_batch_with_a_forged_signature_is_refused_as_one_by_one_and_stores_nothing() {
    let mut f = Fixture::new();
    for i in 0..40 {
        f.put_as(0, f.labs, None, &format!("record {i}"), b"body");
    }
    let vault = f.state.vault();
    let mut s = MemoryStore::new();
    s.append_entries(&vault, &f.log[..2]).unwrap();
    let base = crate::VaultState::verify_log(&f.log[..2]).unwrap();
    // `f.log` with entry `i`'s signature forged (its last byte flipped),
    // and the error applying it one by one gives (a bad signature).
    let forge = |i: usize| {
        let mut forged = f.log.clone();
        let mut bytes = forged[i].to_bytes().to_vec();
        let end = bytes.len() - 1;
        bytes[end] ^= 1;
        forged[i] = crate::LogEntry::from_bytes(&bytes).unwrap();
        let mut one_by_one = base.clone();
        let want = forged[2..]
            .iter()
            .try_for_each(|e| one_by_one.apply(e))
            .unwrap_err();
        assert!(matches!(want, Error::BadSignature { .. }), "{want}");
        (forged, want.to_string())
    };

    let (forged, want) = forge(f.log.len() - 1);
    let mut state = base.clone();
    let finished = crate::deferred::FINISHED.with(|f| f.get());
    let got = store::accept_entries(&mut s, &mut state, &forged[2..]).unwrap_err();
    assert_eq!(got.to_string(), want);
    assert_eq!(state.head(), base.head());
    assert_eq!(s.head(&vault).unwrap(), Some(base.head()));
    assert_eq!(
        crate::deferred::FINISHED.with(|f| f.get()),
        finished + 1,
        "the batch went through a deferral"
    );

    // A forged signature in the middle: the deferred replay stops at the
    // next entry (its link no longer matches), and the error is still the
    // forged entry's own, as one by one.
    let (forged, want) = forge(20);
    let got = store::accept_entries(&mut s, &mut state, &forged[2..]).unwrap_err();
    assert_eq!(got.to_string(), want);
    assert_eq!(s.head(&vault).unwrap(), Some(base.head()));

    // The honest batch is accepted whole.
    store::accept_entries(&mut s, &mut state, &f.log[2..]).unwrap();
    assert_eq!(state.head(), f.state.head());
    assert_eq!(s.head(&vault).unwrap(), Some(f.state.head()));
}
