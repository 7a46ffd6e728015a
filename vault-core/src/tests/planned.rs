//! A record version planned on one side and sealed on another (the web
//! app's worker): [`crate::VaultState::plan_record`], [`crate::PayloadJob`]
//! as bytes, [`crate::VaultState::finish_record`]; and opened there from an
//! [`crate::OpenJob`].

use super::fixture::*;
use crate::error::Error;
use crate::vault::{Keyring, RecordTarget};
use crate::{PayloadJob, Permission, RecordId};

/// Plans a new record of `len` bytes in labs as `who`.
fn plan_new(f: &Fixture, who: usize, len: u64) -> crate::PlannedRecord {
    f.state
        .plan_record(
            &Keyring::new(f.who(who), NOW),
            &f.labs,
            RecordTarget::New(RecordId::random()),
            &info("scan"),
            len,
        )
        .unwrap()
}

/// Plans a new record in labs as `who`, seals its job after a round trip
/// through bytes, and returns the plan with its ciphertext and hash.
fn plan_and_seal(
    f: &Fixture,
    who: usize,
    body: &[u8],
) -> (crate::PlannedRecord, Vec<u8>, [u8; 32]) {
    let plan = plan_new(f, who, body.len() as u64);
    let job = PayloadJob::from_bytes(&plan.job().to_bytes()).unwrap();
    let mut ct = Vec::new();
    let hash = job.seal(body, &mut ct).unwrap();
    assert_eq!(ct.len() as u64, plan.job().ciphertext_len());
    (plan, ct, hash)
}

#[test]
fn a_payload_sealed_from_the_jobs_bytes_finishes_into_a_record_every_reader_opens() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::Read, None);
    let body = vec![7u8; 100_000];
    let (plan, ct, hash) = plan_and_seal(&f, 0, &body);
    let mut keyring = Keyring::new(&f.patient, NOW);
    let (m, e) = f.state.finish_record(&mut keyring, &plan, hash).unwrap();
    assert_eq!(m.record(), plan.record());
    assert_eq!(m.ciphertext_hash(), &hash);
    f.blobs.insert(hash, ct);
    f.append(e);
    for who in [0, 1] {
        let (opened, out) = f.open_as(who, &plan.record()).unwrap();
        assert_eq!(out, body);
        assert_eq!(opened.info.title, "scan");
    }
    f.reverify().unwrap();
}

#[test]
fn a_plan_sealed_before_a_rotation_finishes_under_the_new_epoch() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::ReadWrite, None);
    f.share(2, f.labs, Permission::Read, None);
    let (plan, ct, hash) = plan_and_seal(&f, 1, b"written while bob was revoked");
    let before = f.key_of(0, f.labs).epoch();
    let bobs_key = f.key_of(2, f.labs);
    f.revoke(2, f.labs);
    assert_eq!(f.key_of(0, f.labs).epoch(), before + 1);
    let mut keyring = Keyring::new(&f.alice, NOW);
    let (m, e) = f.state.finish_record(&mut keyring, &plan, hash).unwrap();
    assert_eq!(m.epoch(), before + 1);
    f.blobs.insert(hash, ct);
    f.append(e);
    assert_eq!(
        f.open_as(0, &plan.record()).unwrap().1,
        b"written while bob was revoked"
    );
    // Bob, revoked before the version was finished, holds no key to it:
    // not even the collection key he held, which sealed nothing of it.
    assert!(f.open_as(2, &plan.record()).is_err());
    let verified = f.state.record(&plan.record()).unwrap();
    assert!(verified.data_key(&bobs_key).is_err());
}

#[test]
fn a_plan_is_refused_when_its_version_was_taken_or_its_writer_lost_access() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::ReadWrite, None);
    let (plan, _, hash) = plan_and_seal(&f, 1, b"first");
    // Someone else created a record with the same identifier meanwhile (as
    // the same plan finishing twice would).
    let mut keyring = Keyring::new(&f.alice, NOW);
    let (_, e) = f.state.finish_record(&mut keyring, &plan, hash).unwrap();
    f.append(e);
    let mut keyring = Keyring::new(&f.alice, NOW);
    assert!(matches!(
        f.state.finish_record(&mut keyring, &plan, hash),
        Err(Error::InvalidInput(_))
    ));

    // A next version planned, then another next version lands first.
    let keyring = Keyring::new(&f.alice, NOW);
    let next = f
        .state
        .plan_record(
            &keyring,
            &f.labs,
            RecordTarget::Next(plan.record()),
            &info("v2"),
            2,
        )
        .unwrap();
    assert_eq!(next.version(), 2);
    f.put_as(0, f.labs, Some(plan.record()), "v2 by the owner", b"v2");
    let mut keyring = Keyring::new(&f.alice, NOW);
    let err = f
        .state
        .finish_record(&mut keyring, &next, [0; 32])
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput(m) if m.contains("meanwhile")),
        "{err:?}"
    );

    // The writer is revoked between planning and finishing.
    let (plan, _, hash) = plan_and_seal(&f, 1, b"late");
    f.revoke(1, f.labs);
    let mut keyring = Keyring::new(&f.alice, NOW);
    assert!(matches!(
        f.state.finish_record(&mut keyring, &plan, hash),
        Err(Error::AccessDenied(_))
    ));
    // Another identity cannot finish someone else's plan.
    let (plan, _, hash) = plan_and_seal(&f, 0, b"the owner's");
    f.share(2, f.labs, Permission::ReadWrite, None);
    let mut keyring = Keyring::new(&f.bob, NOW);
    assert!(matches!(
        f.state.finish_record(&mut keyring, &plan, hash),
        Err(Error::ContextMismatch {
            field: "author",
            ..
        })
    ));
}

#[test]
fn a_job_reads_exactly_its_body_length() {
    let f = Fixture::new();
    let plan = plan_new(&f, 0, 10);
    for body in [&b"123456789"[..], b"12345678901"] {
        assert!(matches!(
            plan.job().seal(body, Vec::new()),
            Err(Error::LengthMismatch { declared: 10, .. })
        ));
    }
}

#[test]
fn a_job_from_bytes_is_refused_unless_its_lengths_agree_and_its_key_never_prints() {
    let f = Fixture::new();
    let plan = plan_new(&f, 0, 1000);
    let bytes = plan.job().to_bytes();
    let key_hex = hex::encode(bytes.get(2..34).unwrap());
    for text in [format!("{:?}", plan.job()), format!("{plan:?}")] {
        assert!(!text.contains(&key_hex), "{text}");
    }
    assert!(PayloadJob::from_bytes(&bytes).is_ok());
    let mut other_version = bytes.to_vec();
    other_version[0] = 1;
    assert!(matches!(
        PayloadJob::from_bytes(&other_version),
        Err(Error::UnsupportedVersion { .. })
    ));
    // An address kind no metadata version names.
    for kind in [0u8, 3, 255] {
        let mut other_kind = bytes.to_vec();
        other_kind[1] = kind;
        assert!(matches!(
            PayloadJob::from_bytes(&other_kind),
            Err(Error::Malformed { .. })
        ));
    }
    // A body length the padded length does not fit.
    let mut longer = bytes.to_vec();
    longer[34..42].copy_from_slice(&1_000_000u64.to_be_bytes());
    assert!(matches!(
        PayloadJob::from_bytes(&longer),
        Err(Error::Malformed { .. })
    ));
    for cut in [0, 1, 2, 34, 49, 50] {
        assert!(
            matches!(
                PayloadJob::from_bytes(&bytes[..cut]),
                Err(Error::Malformed { .. })
            ),
            "cut at {cut}"
        );
    }
}

#[test]
fn an_open_job_from_bytes_opens_exactly_what_the_keyring_opens_and_nothing_swapped() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::Read, None);
    let body = vec![5u8; 70_000];
    let first = f.put_as(0, f.labs, None, "scan", &body);
    let other = f.put_as(0, f.labs, None, "other", b"another record");
    let verified = f.state.record(&first.record()).unwrap();
    let ciphertext = f.blobs[first.ciphertext_hash()].clone();
    let mut keyring = Keyring::new(&f.alice, NOW);
    let job = keyring.open_job(&f.state, &verified).unwrap();
    assert_eq!(job.ciphertext_len(), ciphertext.len() as u64);
    let job = crate::OpenJob::from_bytes(&job.to_bytes()).unwrap();
    let mut out = Vec::new();
    let opened = job.open(ciphertext.as_slice(), &mut out).unwrap();
    assert_eq!(out, body);
    let (expected, _) = f.open_as(1, &first.record()).unwrap();
    assert_eq!(opened, expected);
    // Another record's ciphertext, even one the same reader may open, is refused.
    let swapped = &f.blobs[other.ciphertext_hash()];
    assert!(matches!(
        job.open(swapped.as_slice(), Vec::new()),
        Err(Error::CiphertextMismatch)
    ));
    // A job naming another place than the inner header is refused.
    let mut bytes = job.to_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the author
    let other_author = crate::OpenJob::from_bytes(&bytes).unwrap();
    assert!(matches!(
        other_author.open(ciphertext.as_slice(), Vec::new()),
        Err(Error::ContextMismatch {
            field: "author",
            ..
        })
    ));
    // Someone the record is not shared with gets no job.
    let mut keyring = Keyring::new(&f.bob, NOW);
    assert!(keyring.open_job(&f.state, &verified).is_err());
}

#[test]
fn an_open_job_from_bytes_is_refused_unless_whole_and_its_key_never_prints() {
    let mut f = Fixture::new();
    let m = f.put_as(0, f.labs, None, "scan", b"body");
    let verified = f.state.record(&m.record()).unwrap();
    let job = Keyring::new(&f.patient, NOW)
        .open_job(&f.state, &verified)
        .unwrap();
    let bytes = job.to_bytes();
    let key_hex = hex::encode(bytes.get(2..34).unwrap());
    assert!(!format!("{job:?}").contains(&key_hex));
    for cut in [0, 1, 40, bytes.len() - 1] {
        assert!(
            matches!(
                crate::OpenJob::from_bytes(&bytes[..cut]),
                Err(Error::Malformed { .. })
            ),
            "cut at {cut}"
        );
    }
    let mut other = bytes.to_vec();
    other[0] = 9;
    assert!(matches!(
        crate::OpenJob::from_bytes(&other),
        Err(Error::UnsupportedVersion { .. })
    ));
    // An address kind no version names.
    let mut kind = bytes.to_vec();
    kind[1] = 3;
    assert!(matches!(
        crate::OpenJob::from_bytes(&kind),
        Err(Error::Malformed { .. })
    ));
    // A padded length §6.2 never gives.
    let mut odd = bytes.to_vec();
    odd[34..42].copy_from_slice(&1_000_001u64.to_be_bytes());
    assert!(matches!(
        crate::OpenJob::from_bytes(&odd),
        Err(Error::Malformed { .. })
    ));
}
