//! Core-level attacks: what a malicious relay, an impostor, a read-only,
//! expired or revoked member, or a colluding writer can try. Each is
//! refused with a specific error, and the victim's verified state is the
//! same after the refusal as before.

use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use sha2::{Digest, Sha512};

use super::fixture::*;
use crate::error::Error;
use crate::identity::{PublicIdentity, Role, SecretIdentity, IDENTITY_SIGNATURE_CONTEXT};
use crate::ids::{CollectionId, RecordId, VaultId};
use crate::keys::CollectionKey;
use crate::log::{EntryBody, LogEntry, Rotation};
use crate::payload::{self, PayloadWriter};
use crate::primitives::sha256;
use crate::record::{self, KeySource, RecordMetadata, VerifiedRecord};
use crate::store::{self, MemoryStore, Store};
use crate::{Grant, Keyring, Permission, VaultState};

/// Offset of the author fingerprint in an encoded version-2 log entry
/// (version, vault, sequence number, previous hash, scope, form, time,
/// author: `docs/format.md` §8.1).
const ENTRY_AUTHOR_AT: usize = 1 + 16 + 8 + 32 + 32 + 1 + 8;
/// Offset of the payload's length (after the author and the kind byte).
const ENTRY_PAYLOAD_AT: usize = ENTRY_AUTHOR_AT + 32 + 1;

/// A byte string with its `u32` length prefix.
fn framed(bytes: &[u8]) -> Vec<u8> {
    [&(bytes.len() as u32).to_be_bytes(), bytes].concat()
}

/// What a relay can do to a length-prefixed field of an entry's payload:
/// replace it with `new` of any length, fixing the payload's length.
fn replace_in_payload(entry: &LogEntry, old: &[u8], new: &[u8]) -> crate::Result<LogEntry> {
    reencode_with(entry, |b| {
        *b = replace_once(b, &framed(old), &framed(new));
        let len = (b.len() - ENTRY_PAYLOAD_AT - 4 - 64) as u32;
        b[ENTRY_PAYLOAD_AT..ENTRY_PAYLOAD_AT + 4].copy_from_slice(&len.to_be_bytes());
    })
}

/// Asserts that a tombstone for `record` forged by `who` (a fixture index)
/// is refused for lack of write access, leaving the state unchanged.
fn assert_delete_refused(f: &mut Fixture, who: usize, record: &RecordId) {
    let e = f.forge(
        f.who(who),
        EntryBody::RecordDeleted {
            record: *record,
            version: 2,
        },
    );
    assert!(matches!(
        f.refuse(&e),
        Error::Unauthorized {
            reason: "has no write access to this record's collection",
            ..
        }
    ));
}

fn record_put(metadata: RecordMetadata) -> EntryBody {
    EntryBody::RecordPut { metadata }
}

/// The body of an entry the owner would write to revoke `who` from
/// `collection`, and the new epoch's key.
fn revocation(f: &Fixture, who: usize, collection: CollectionId) -> (Rotation, CollectionKey) {
    let mut keyring = Keyring::new(&f.patient, NOW);
    let fp = f.who(who).fingerprint();
    let e = f.state.revoke(&mut keyring, &collection, &[fp]).unwrap();
    let EntryBody::Rotation(r) = e.body() else {
        panic!("not a rotation")
    };
    // The owner's keyring learns the new key from the applied rotation.
    let mut after = f.state.clone();
    after.apply(&e).unwrap();
    let key = keyring
        .collection_key(&after, &collection, r.epoch)
        .unwrap();
    (r.clone(), copy_key(key))
}

/// The (unapplied) entry the owner would write to share `collection` with
/// `who`, and its grant.
fn share_entry(
    f: &Fixture,
    who: usize,
    collection: CollectionId,
    permission: Permission,
) -> (LogEntry, Grant) {
    let member = f.who(who).public().clone();
    let mut keyring = Keyring::new(&f.patient, NOW);
    let e = f
        .state
        .share_collection(&mut keyring, &collection, &member, permission, None)
        .unwrap();
    let EntryBody::GrantAdded { grant, .. } = e.body() else {
        panic!("not a grant")
    };
    let grant = grant.clone();
    (e, grant)
}

// ----- 1. wrapped data keys ---------------------------------------------

#[test]
fn wrapped_key_overwritten_in_a_record_put() {
    let mut f = Fixture::new();
    let (m, genuine) = f.put_entry(0, f.labs, None, "HbA1c", b"6.1 %").unwrap();
    let wrapped = m.wrapped_key.to_bytes();
    let mut corrupted = wrapped.clone();
    corrupted[20] ^= 1;
    let (other, _) = f.put_entry(0, f.labs, None, "LDL", b"2.1").unwrap();
    for replacement in [corrupted, other.wrapped_key.to_bytes()] {
        // Overwritten in transit: the entry's signature no longer verifies.
        let e = reencode_with(&genuine, |b| *b = replace_once(b, &wrapped, &replacement)).unwrap();
        assert!(matches!(
            f.refuse(&e),
            Error::BadSignature { what: "log entry" }
        ));
        // Nor would the metadata's, even in an entry its author signed.
        let EntryBody::RecordPut { metadata } = e.body() else {
            panic!("not a record put")
        };
        let e = f.forge(&f.patient, record_put(metadata.clone()));
        assert!(matches!(
            f.refuse(&e),
            Error::BadSignature {
                what: "record metadata"
            }
        ));
    }
    f.append(genuine);
    assert_eq!(f.open_as(0, &m.record()).unwrap().1, b"6.1 %");
}

#[test]
fn wrapped_key_moved_to_another_record_fails_to_unwrap() {
    let mut f = Fixture::new();
    let x1 = f.put_as(0, f.labs, None, "X", b"x1");
    let x2 = f.put_as(0, f.labs, Some(x1.record()), "X", b"x2");
    let y = f.put_as(0, f.labs, None, "Y", b"y");
    let key = f.key_of(0, f.labs);
    key.open_seal(&x1.wrapped_key, &x1.record(), 1).unwrap();
    for (wrapped, record, version) in [
        (&x1.wrapped_key, y.record(), 1),  // another record
        (&x1.wrapped_key, x1.record(), 2), // another version
        (&x2.wrapped_key, x1.record(), 1),
    ] {
        assert!(matches!(
            key.open_seal(wrapped, &record, version),
            Err(Error::DecryptionFailed)
        ));
    }
    // Even a state that pointed record Y at X's wrapped key could not open Y.
    let genuine = f.state.record(&y.record()).unwrap();
    let swapped = VerifiedRecord {
        metadata: genuine.metadata(),
        key_source: KeySource {
            epoch: 0,
            seal: &x2.wrapped_key,
        },
        seq: genuine.seq(),
    };
    let blob = &f.blobs[y.ciphertext_hash()];
    let (result, out) = f.open_verified(0, &swapped, blob);
    assert!(matches!(result, Err(Error::DecryptionFailed)));
    assert!(out.is_empty());
    assert_eq!(f.open_verified(0, &genuine, blob).1, b"y");
}

#[test]
fn grant_age_file_replaced() {
    let mut f = Fixture::new();
    let (genuine, grant) = share_entry(&f, 1, f.labs, Permission::Read);
    // Another valid age file for Alice: a grant of the medications key.
    let meds_key = f.key_of(0, f.meds);
    let other = Grant::for_collection(
        &f.patient,
        &meds_key,
        f.alice.public(),
        Permission::Read,
        None,
        NOW,
    )
    .unwrap();
    let (old_file, new_file) = (grant.age_file(), other.age_file());
    assert_ne!(old_file, new_file);

    // The embedded hash left as it was: refused while parsing.
    let swapped = replace_once(&grant.to_bytes(), &framed(old_file), &framed(new_file));
    assert!(matches!(
        Grant::from_bytes(&swapped),
        Err(Error::ContextMismatch {
            what: "grant key file",
            field: "hash"
        })
    ));
    assert!(matches!(
        replace_in_payload(&genuine, &grant.to_bytes(), &swapped),
        Err(Error::ContextMismatch { field: "hash", .. })
    ));

    // The hash updated too: the owner's signature breaks.
    let rehashed = replace_once(&swapped, &sha256(&[old_file]), &sha256(&[new_file]));
    let forged = Grant::from_bytes(&rehashed).unwrap();
    assert!(matches!(
        forged.verify(f.patient.public()),
        Err(Error::BadSignature { what: "grant" })
    ));
    let e = replace_in_payload(&genuine, &grant.to_bytes(), &rehashed).unwrap();
    assert!(matches!(
        f.refuse(&e),
        Error::BadSignature { what: "log entry" }
    ));
    let e = f.forge(
        &f.patient,
        EntryBody::GrantAdded {
            member: f.alice.public().clone(),
            grant: forged,
        },
    );
    assert!(matches!(
        f.refuse(&e),
        Error::Unauthorized {
            reason: "holds a grant not signed by the vault owner",
            ..
        }
    ));
    f.append(genuine);
}

// ----- 2. metadata and ciphertext moved -------------------------------

#[test]
fn metadata_altered_by_the_relay() {
    let mut f = Fixture::new();
    let lab = f.put_as(0, f.labs, None, "HbA1c", b"6.1 %");
    let (m, genuine) = f.put_entry(0, f.labs, None, "LDL", b"2.1").unwrap();
    let altered = [
        RecordMetadata {
            record: lab.record(),
            ..m.clone()
        },
        RecordMetadata {
            version: 2,
            ..m.clone()
        },
        RecordMetadata {
            collection: f.meds,
            ..m.clone()
        },
        RecordMetadata {
            epoch: 1,
            ..m.clone()
        },
    ];
    for moved in altered {
        let e = reencode_with(&genuine, |b| {
            *b = replace_once(b, &m.to_bytes(), &moved.to_bytes());
        })
        .unwrap();
        assert!(matches!(
            f.refuse(&e),
            Error::BadSignature { what: "log entry" }
        ));
        let e = f.forge(&f.patient, record_put(moved));
        assert!(matches!(
            f.refuse(&e),
            Error::BadSignature {
                what: "record metadata"
            }
        ));
    }
    f.append(genuine);
}

#[test]
fn metadata_signed_for_another_epoch() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::ReadWrite, None);
    f.share(2, f.labs, Permission::Read, None);
    let old_key = f.key_of(1, f.labs);
    f.revoke(2, f.labs);
    // Alice writes with the key of the past epoch...
    let stale = f.seal_with(1, &old_key, RecordId::random(), 1, b"x");
    // ...or names a future epoch.
    let (m, genuine) = f.put_entry(1, f.labs, None, "x", b"x").unwrap();
    assert_eq!(m.epoch(), 1);
    let mut future = RecordMetadata { epoch: 2, ..m };
    f.resign(1, &mut future);
    for moved in [stale, future] {
        let e = f.forge(&f.alice, record_put(moved));
        assert!(matches!(
            f.refuse(&e),
            Error::ContextMismatch {
                what: "record metadata",
                field: "epoch"
            }
        ));
    }
    f.append(genuine);
}

#[test]
fn metadata_moved_to_another_vault() {
    let mut f = Fixture::new();
    // The same patient's other vault: genuinely signed metadata and entries.
    let mut other = Fixture::new();
    let (m, theirs) = other.put_entry(0, other.labs, None, "x", b"x").unwrap();
    assert_ne!(other.state.vault(), f.state.vault());
    let moved = f.forge(&f.patient, record_put(m.clone()));
    assert!(matches!(
        f.refuse(&moved),
        Error::ContextMismatch {
            what: "record metadata",
            field: "vault"
        }
    ));
    assert!(matches!(
        f.refuse(&theirs),
        Error::ContextMismatch {
            what: "log entry",
            field: "vault"
        }
    ));
    // A writer re-signing metadata of this vault for another.
    f.share(1, f.labs, Permission::ReadWrite, None);
    let (m, genuine) = f.put_entry(1, f.labs, None, "x", b"x").unwrap();
    let mut moved = RecordMetadata {
        vault: VaultId::random(),
        ..m
    };
    f.resign(1, &mut moved);
    let e = f.forge(&f.alice, record_put(moved));
    assert!(matches!(
        f.refuse(&e),
        Error::ContextMismatch {
            what: "record metadata",
            field: "vault"
        }
    ));
    f.append(genuine);
    other.append(theirs);
}

#[test]
fn record_moved_to_another_collection() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::ReadWrite, None);
    f.share(1, f.meds, Permission::ReadWrite, None);
    let lab = f.put_as(1, f.labs, None, "HbA1c", b"6.1 %");
    // Alice, who writes to both, seals version 2 of the lab record under
    // the medications key.
    let meds_key = f.key_of(1, f.meds);
    let moved = f.seal_with(1, &meds_key, lab.record(), 2, b"moved");
    let e = f.forge(&f.alice, record_put(moved));
    assert!(matches!(
        f.refuse(&e),
        Error::ContextMismatch {
            what: "record metadata",
            field: "collection"
        }
    ));
}

#[test]
fn ciphertext_of_another_record_or_version_served() {
    let mut f = Fixture::new();
    let a1 = f.put_as(0, f.labs, None, "A", b"aaaa");
    let b = f.put_as(0, f.labs, None, "B", b"bbbb");
    let a2 = f.put_as(0, f.labs, Some(a1.record()), "A", b"aaab");
    assert_eq!(f.state.record(&a1.record()).unwrap().metadata(), &a2);
    for other in [&b, &a1] {
        let (result, out) = f.open_bytes_as(0, &a1.record(), &f.blobs[other.ciphertext_hash()]);
        assert!(matches!(result, Err(Error::CiphertextMismatch)));
        assert!(out.is_empty());
    }
    assert_eq!(f.open_as(0, &a1.record()).unwrap().1, b"aaab");
}

/// What a reader of a record (who can unwrap its data key) can produce: a
/// different plaintext that authenticates under the record's payload key.
fn forge_ciphertext_as_reader(
    f: &Fixture,
    reader: usize,
    record: &RecordId,
    edit: fn(&mut Vec<u8>),
) -> Vec<u8> {
    let verified = f.state.record(record).unwrap();
    let m = verified.metadata();
    let data_key = Keyring::new(f.who(reader), NOW)
        .data_key(&f.state, &verified)
        .unwrap();
    let pkey = record::payload_key(
        &data_key,
        &m.payload_salt,
        &m.vault(),
        &m.collection(),
        &m.record(),
        m.version(),
    );
    let mut plain = Vec::new();
    let (outcome, _) = payload::read_payload(
        &pkey,
        m.padded_len,
        m.address_kind(),
        f.blobs[m.ciphertext_hash()].as_slice(),
        |chunk| {
            plain.extend_from_slice(chunk);
            Ok(())
        },
    );
    assert!(outcome.is_ok());
    edit(&mut plain);
    let mut ct = Vec::new();
    let (written, _) = payload::with_hasher(m.padded_len, m.address_kind(), |hasher| {
        let mut w = PayloadWriter::new(&pkey, m.padded_len, &mut ct, hasher);
        w.write_plain(&plain)?;
        w.finish()
    });
    written.unwrap();
    ct
}

#[test]
fn ciphertext_forged_by_a_reader() {
    let mut f = Fixture::new();
    f.share(2, f.labs, Permission::Read, None);
    let lab = f.put_as(0, f.labs, None, "HbA1c", b"HbA1c 6.1 %");
    let edits: [fn(&mut Vec<u8>); 3] = [
        // Another result.
        |p| *p = replace_once(p, b"6.1 %", b"9.9 %"),
        // Non-zero padding.
        |p| *p.last_mut().unwrap() = 1,
        // Another collection in the inner header.
        |p| p[20] ^= 1,
    ];
    let verified = f.state.record(&lab.record()).unwrap();
    for edit in edits {
        let forged = forge_ciphertext_as_reader(&f, 2, &lab.record(), edit);
        let (result, _) = f.open_verified(0, &verified, &forged);
        assert!(
            matches!(result, Err(Error::CiphertextMismatch)),
            "{result:?}"
        );
    }
}

#[test]
fn metadata_offered_beside_the_log() {
    let mut f = Fixture::new();
    let a = f.put_as(0, f.labs, None, "A", b"a");
    let b = f.put_as(0, f.labs, None, "B", b"b");
    assert_eq!(f.state.check_offered_metadata(&a).unwrap().metadata(), &a);
    let moved = [
        (
            RecordMetadata {
                record: a.record(),
                ..b.clone()
            },
            "record",
        ),
        (
            RecordMetadata {
                collection: f.meds,
                ..a.clone()
            },
            "collection",
        ),
        (
            RecordMetadata {
                epoch: 1,
                ..a.clone()
            },
            "epoch",
        ),
        (
            RecordMetadata {
                vault: VaultId::random(),
                ..a.clone()
            },
            "vault",
        ),
    ];
    for (m, expected) in moved {
        assert!(matches!(
            f.state.check_offered_metadata(&m),
            Err(Error::ContextMismatch { field, .. }) if field == expected
        ));
    }
}

// ----- 3. replayed versions ---------------------------------------------

#[test]
fn older_version_replayed_as_newer() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::ReadWrite, None);
    let v1 = f.put_as(0, f.labs, None, "HbA1c", b"6.1 %");
    let v2 = f.put_as(0, f.labs, Some(v1.record()), "HbA1c", b"5.9 %");
    // The genuine metadata re-sequenced at the head by its author, and
    // version 1 adopted by another writer.
    let mut adopted = v1.clone();
    f.resign(1, &mut adopted);
    for (author, old) in [(0, &v1), (0, &v2), (1, &adopted)] {
        let e = f.forge(f.who(author), record_put(old.clone()));
        assert!(matches!(
            f.refuse(&e),
            Error::StaleVersion { current: 2, offered } if offered == old.version()
        ));
    }
    assert!(matches!(
        f.state.check_offered_metadata(&v1),
        Err(Error::StaleVersion {
            current: 2,
            offered: 1
        })
    ));
    assert_eq!(f.open_as(0, &v1.record()).unwrap().1, b"5.9 %");
}

// ----- 4. the log truncated, reordered, forked ------------------------

#[test]
fn truncated_log_is_a_rollback() {
    let mut f = Fixture::new();
    f.put_as(0, f.labs, None, "A", b"a");
    f.put_as(0, f.labs, None, "B", b"b");
    let head = f.state.head();
    let vault = f.state.vault();
    let short_log = &f.log[..f.log.len() - 2];
    let mut short = VaultState::verify_log(short_log).unwrap();
    assert!(matches!(
        short.check_persisted(&head),
        Err(Error::Rollback { verified, offered }) if verified == head.seq && offered == head.seq - 2
    ));
    assert!(matches!(
        VaultState::verify_log_from(short_log, Some(&head)),
        Err(Error::Rollback { .. })
    ));
    assert!(matches!(
        f.state.check_remote_head(head.seq - 1),
        Err(Error::Rollback { .. })
    ));
    f.state.check_remote_head(head.seq).unwrap();

    // A device that persisted the full head is served the short log.
    let mut s = MemoryStore::new();
    s.append_entries(&vault, &f.log).unwrap();
    let before = snapshot(&short);
    assert!(matches!(
        store::accept_entries(&mut s, &mut short, &[]),
        Err(Error::Rollback { .. })
    ));
    assert_eq!(snapshot(&short), before);
    assert_eq!(s.head(&vault).unwrap(), Some(head));
}

#[test]
fn reordered_log_is_refused() {
    let mut f = Fixture::new();
    let a = f.put_as(0, f.labs, None, "A", b"a");
    f.put_as(0, f.labs, None, "B", b"b");
    f.put_as(0, f.labs, None, "C", b"c");
    let n = f.log.len();
    let mut swapped = f.log.clone();
    swapped.swap(n - 3, n - 2);
    assert!(matches!(
        VaultState::verify_log(&swapped),
        Err(Error::Missing { .. })
    ));
    // A device behind the relay is handed an entry from further on.
    let mut behind = VaultState::verify_log(&f.log[..n - 3]).unwrap();
    let before = snapshot(&behind);
    assert!(matches!(
        behind.apply(&f.log[n - 2]),
        Err(Error::Missing { .. })
    ));
    assert_eq!(snapshot(&behind), before);
    behind.apply(&f.log[n - 3]).unwrap();
    // An author numbers an entry as the next one but chains it elsewhere.
    let head = f.state.head();
    let e = LogEntry::sign(
        &f.patient,
        head.vault,
        head.seq + 1,
        *f.log[n - 2].hash(),
        NOW,
        EntryBody::RecordDeleted {
            record: a.record(),
            version: 2,
        },
        Some(&a.collection()),
    )
    .unwrap();
    assert!(matches!(f.refuse(&e), Error::ChainBroken { seq } if seq == head.seq + 1));
}

#[test]
fn forked_log_is_detected() {
    let mut f = Fixture::new();
    f.put_as(0, f.labs, None, "A", b"a");
    let common = f.state.head();
    // Two entries at the same sequence number, both signed by the owner.
    let (_, a) = f.put_entry(0, f.labs, None, "B", b"b").unwrap();
    let (_, b) = f.put_entry(0, f.meds, None, "C", b"c").unwrap();
    assert_eq!(a.seq(), b.seq());
    let mut other = f.state.clone();
    other.apply(&b).unwrap();
    f.append(a.clone());

    assert!(matches!(f.refuse(&b), Error::Fork { seq } if seq == a.seq()));
    assert!(matches!(
        other.check_persisted(&f.state.head()),
        Err(Error::Fork { seq }) if seq == a.seq()
    ));
    assert!(matches!(
        f.state.compare_checkpoint_code(&other.head().code()),
        Err(Error::CheckpointMismatch { .. })
    ));
    f.state.compare_checkpoint_code(&common.code()).unwrap();
    let other_log: Vec<LogEntry> = f.log[..f.log.len() - 1]
        .iter()
        .chain([&b])
        .cloned()
        .collect();
    assert!(matches!(
        VaultState::verify_log_from(&other_log, Some(&f.state.head())),
        Err(Error::Fork { .. })
    ));

    // A device that persisted branch A is served branch B.
    let vault = f.state.vault();
    let mut s = MemoryStore::new();
    s.append_entries(&vault, &f.log).unwrap();
    let before = snapshot(&other);
    assert!(matches!(
        store::accept_entries(&mut s, &mut other, &[]),
        Err(Error::Fork { .. })
    ));
    assert_eq!(snapshot(&other), before);
    assert_eq!(s.head(&vault).unwrap(), Some(f.state.head()));
}

#[test]
fn duplicate_entry_is_refused() {
    let mut f = Fixture::new();
    f.put_as(0, f.labs, None, "A", b"a");
    for i in [f.log.len() - 1, 0] {
        let e = f.log[i].clone();
        assert!(matches!(
            f.refuse(&e),
            Error::InvalidEntry { seq, reason: "duplicate of an entry already applied" }
                if seq == i as u64
        ));
    }
}

// ----- 5. entries by someone without the right ---------------------------

#[test]
fn record_put_by_a_non_member() {
    let mut f = Fixture::new();
    // Mallory makes up a key for the collection and writes with it.
    let key = CollectionKey::generate(f.state.vault(), f.labs, 0);
    let m = f.seal_with(3, &key, RecordId::random(), 1, b"forged");
    let e = f.forge(&f.mallory, record_put(m.clone()));
    let mallory = f.mallory.fingerprint();
    assert!(matches!(
        f.refuse(&e),
        Error::Unauthorized { author, reason: "is not the owner or a member of this vault", .. }
            if author == mallory
    ));
    // Known to the vault through a single-record grant, but not a member of
    // the collection.
    let note = f.put_as(0, f.meds, None, "Note", b"note");
    let mut keyring = Keyring::new(&f.patient, NOW);
    let grant = f
        .state
        .share_record(&mut keyring, &note.record(), f.mallory.public(), None)
        .unwrap();
    f.append(grant);
    let e = f.forge(&f.mallory, record_put(m));
    assert!(matches!(
        f.refuse(&e),
        Error::Unauthorized {
            reason: "is not a member of this record's collection",
            ..
        }
    ));
}

#[test]
fn record_put_by_a_read_only_member() {
    let mut f = Fixture::new();
    let lab = f.put_as(0, f.labs, None, "A", b"a");
    f.share(2, f.labs, Permission::Read, None);
    let key = f.key_of(2, f.labs);
    let m = f.seal_with(2, &key, RecordId::random(), 1, b"x");
    let e = f.forge(&f.bob, record_put(m));
    assert!(matches!(
        f.refuse(&e),
        Error::Unauthorized { reason, .. } if reason.contains("read-only")
    ));
    assert_delete_refused(&mut f, 2, &lab.record());
}

#[test]
fn record_put_after_the_grant_expired() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::ReadWrite, Some(NOW + 10));
    let key = f.key_of(1, f.labs);
    let m = f.seal_with(1, &key, RecordId::random(), 1, b"x");
    // Accepted just before the expiry...
    let mut before_expiry = f.state.clone();
    before_expiry
        .apply(&f.forge_at(&f.alice, NOW + 9, record_put(m.clone())))
        .unwrap();
    // ...refused from it on.
    for time in [NOW + 10, NOW + 1000] {
        let e = f.forge_at(&f.alice, time, record_put(m.clone()));
        assert!(matches!(
            f.refuse(&e),
            Error::Unauthorized {
                reason: "wrote after their grant expired",
                ..
            }
        ));
    }
}

#[test]
fn revoked_member_writes_after_rotation() {
    let mut f = Fixture::new();
    let lab = f.put_as(0, f.labs, None, "A", b"a");
    f.share(1, f.labs, Permission::ReadWrite, None);
    let old_key = f.key_of(1, f.labs);
    f.revoke(1, f.labs);
    let m = f.seal_with(1, &old_key, RecordId::random(), 1, b"x");
    let e = f.forge(&f.alice, record_put(m));
    assert!(matches!(
        f.refuse(&e),
        Error::Unauthorized {
            reason: "is not a member of this record's collection",
            ..
        }
    ));
    assert_delete_refused(&mut f, 1, &lab.record());
}

#[test]
fn member_shares_rotates_or_revokes() {
    let mut f = Fixture::new();
    let note = f.put_as(0, f.labs, None, "A", b"a");
    f.share(1, f.labs, Permission::ReadWrite, None);
    f.share(2, f.labs, Permission::Read, None);
    let key = f.key_of(1, f.labs);
    let own_grant = Grant::for_collection(
        &f.alice,
        &key,
        f.mallory.public(),
        Permission::ReadWrite,
        None,
        NOW,
    )
    .unwrap();
    let (_, owners_grant) = share_entry(&f, 3, f.labs, Permission::Read);
    let (rotation, _) = revocation(&f, 2, f.labs);
    let bodies = [
        (
            EntryBody::GrantAdded {
                member: f.mallory.public().clone(),
                grant: own_grant,
            },
            "is not the owner, nor an agent of the owner in this collection",
        ),
        (
            EntryBody::GrantAdded {
                member: f.mallory.public().clone(),
                grant: owners_grant,
            },
            "is not the owner, nor an agent of the owner in this collection",
        ),
        (
            EntryBody::Rotation(rotation),
            "is not the owner, nor an agent of the owner in this collection",
        ),
        (
            EntryBody::RecordGrantRevoked {
                record: note.record(),
                member: f.bob.fingerprint(),
            },
            "is not the owner, so may not revoke",
        ),
    ];
    for (body, expected) in bodies {
        let e = f.forge(&f.alice, body);
        assert!(matches!(
            f.refuse(&e),
            Error::Unauthorized { reason, .. } if reason == expected
        ));
    }
}

#[test]
fn non_owner_creates_a_collection() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::ReadWrite, None);
    let collection = CollectionId::random();
    let key = CollectionKey::generate(f.state.vault(), collection, 0);
    let body = EntryBody::CollectionCreated {
        collection,
        sealed_name: key.seal_name("alice's").unwrap(),
        owner_grant: Grant::for_collection(
            &f.alice,
            &key,
            f.alice.public(),
            Permission::ReadWrite,
            None,
            NOW,
        )
        .unwrap(),
    };
    let e = f.forge(&f.alice, body);
    assert!(matches!(
        f.refuse(&e),
        Error::Unauthorized {
            reason: "is not the owner, so may not create collections",
            ..
        }
    ));
}

// ----- 6. grants not signed by the owner -------------------------------

/// Mallory's grant to herself of a key she made up for `labs`, signed by
/// her as if she were the owner.
fn mallorys_grant(f: &Fixture) -> EntryBody {
    let key = CollectionKey::generate(f.state.vault(), f.labs, 0);
    EntryBody::GrantAdded {
        member: f.mallory.public().clone(),
        grant: Grant::for_collection(
            &f.mallory,
            &key,
            f.mallory.public(),
            Permission::ReadWrite,
            None,
            NOW,
        )
        .unwrap(),
    }
}

#[test]
fn entry_claiming_the_owner_signed_by_mallory() {
    let mut f = Fixture::new();
    let by_mallory = f.forge(&f.mallory, mallorys_grant(&f));
    assert!(matches!(f.refuse(&by_mallory), Error::Unauthorized { .. }));
    let owner = f.patient.fingerprint();
    let e = reencode_with(&by_mallory, |b| {
        b[ENTRY_AUTHOR_AT..ENTRY_AUTHOR_AT + 32].copy_from_slice(owner.as_bytes());
    })
    .unwrap();
    assert_eq!(e.author(), owner);
    assert!(matches!(
        f.refuse(&e),
        Error::BadSignature { what: "log entry" }
    ));
}

#[test]
fn owner_entry_carrying_a_grant_signed_by_another() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::ReadWrite, None);
    f.share(2, f.labs, Permission::Read, None);
    // A genuine rotation whose grant to Alice is replaced by one she signed.
    let (mut rotation, new_key) = revocation(&f, 2, f.labs);
    let alice = f.alice.fingerprint();
    for g in rotation.grants.iter_mut().filter(|g| g.member() == alice) {
        *g = Grant::for_collection(
            &f.alice,
            &new_key,
            f.alice.public(),
            Permission::ReadWrite,
            None,
            NOW,
        )
        .unwrap();
    }
    let collection = CollectionId::random();
    let key = CollectionKey::generate(f.state.vault(), collection, 0);
    let created = EntryBody::CollectionCreated {
        collection,
        sealed_name: key.seal_name("imaging").unwrap(),
        owner_grant: Grant::for_collection(
            &f.mallory,
            &key,
            f.patient.public(),
            Permission::ReadWrite,
            None,
            NOW,
        )
        .unwrap(),
    };
    for body in [mallorys_grant(&f), EntryBody::Rotation(rotation), created] {
        let e = f.forge(&f.patient, body);
        assert!(matches!(
            f.refuse(&e),
            Error::Unauthorized {
                reason: "holds a grant not signed by the vault owner",
                ..
            }
        ));
    }
}

#[test]
fn grant_received_outside_the_log_not_signed_by_the_owner() {
    let f = Fixture::new();
    let EntryBody::GrantAdded { grant, .. } = mallorys_grant(&f) else {
        panic!("not a grant")
    };
    assert!(matches!(
        grant.verify(f.patient.public()),
        Err(Error::BadSignature { what: "grant" })
    ));
    let (_, genuine) = share_entry(&f, 3, f.labs, Permission::Read);
    genuine.verify(f.patient.public()).unwrap();
}

// ----- 7. a pinned principal's key changed ----------------------------

#[test]
fn pinned_principal_presents_another_key() {
    let f = Fixture::new();
    let mut s = MemoryStore::new();
    store::pin_identity(&mut s, "Dr Alice", f.alice.public()).unwrap();
    let impostor = identity(9, "Dr Alice", Role::Clinician);
    assert_eq!(impostor.public().display_name(), "Dr Alice");
    let (alice, presented) = (f.alice.fingerprint(), impostor.fingerprint());
    assert!(matches!(
        store::pin_identity(&mut s, "Dr Alice", impostor.public()),
        Err(Error::PinnedKeyChanged { name, pinned, presented: p })
            if name == "Dr Alice" && pinned == alice && p == presented
    ));
    assert_eq!(s.pinned("Dr Alice").unwrap(), Some(alice));
}

#[test]
fn vault_owner_differs_from_the_pinned_one() {
    let f = Fixture::new();
    let pinned = f.patient.fingerprint();
    f.state.expect_owner(&pinned).unwrap();
    let impostor = identity(8, "Pat Patient", Role::Patient);
    // A vault of the impostor's, and a genesis naming the impostor for the
    // victim's own vault id.
    let (theirs, _) = VaultState::create(&impostor, NOW).unwrap();
    let genesis = LogEntry::sign(
        &impostor,
        f.state.vault(),
        0,
        [0; 32],
        NOW,
        EntryBody::Genesis {
            owner: impostor.public().clone(),
        },
        None,
    )
    .unwrap();
    let swapped = VaultState::from_genesis(&genesis).unwrap();
    for state in [&theirs, &swapped] {
        assert!(matches!(
            state.expect_owner(&pinned),
            Err(Error::PinnedKeyChanged { pinned: p, presented, .. })
                if p == pinned && presented == impostor.fingerprint()
        ));
    }
    assert!(matches!(
        swapped.check_persisted(&f.state.checkpoint_at(0).unwrap()),
        Err(Error::Fork { seq: 0 })
    ));
}

/// Another valid document with `id`'s fingerprint: the same body signed
/// again with another nonce (only the key holder can make one).
fn twin_document(id: &SecretIdentity) -> PublicIdentity {
    let doc = id.public().to_bytes();
    let body = &doc[..doc.len() - 64];
    let mut expanded = [0u8; 64];
    expanded.copy_from_slice(&Sha512::digest(*id.ed25519_seed()));
    expanded[32..].fill(0x42);
    let sig = raw_sign::<Sha512>(
        &ExpandedSecretKey::from_bytes(&expanded),
        &[IDENTITY_SIGNATURE_CONTEXT, body].concat(),
        id.public().verifying_key(),
    );
    PublicIdentity::from_bytes(&[body, &sig.to_bytes()].concat()).unwrap()
}

#[test]
fn grant_attaches_another_document_for_a_member() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::Read, None);
    let alice = f.alice.public().clone();
    let (genuine, grant) = share_entry(&f, 1, f.meds, Permission::Read);
    // An impostor's document (same name and role) swapped in transit.
    let impostor = identity(9, "Dr Alice", Role::Clinician);
    let e = reencode_with(&genuine, |b| {
        *b = replace_once(b, alice.to_bytes(), impostor.public().to_bytes());
    })
    .unwrap();
    assert!(matches!(
        f.refuse(&e),
        Error::BadSignature { what: "log entry" }
    ));
    // The owner attaching it.
    let twin = twin_document(&f.alice);
    assert_eq!(twin.fingerprint(), alice.fingerprint());
    assert_ne!(twin, alice);
    for (member, expected) in [
        (
            impostor.public().clone(),
            "the grant is for another identity than the one attached",
        ),
        (twin, "a different document for a known member"),
    ] {
        let e = f.forge(
            &f.patient,
            EntryBody::GrantAdded {
                member,
                grant: grant.clone(),
            },
        );
        assert!(matches!(
            f.refuse(&e),
            Error::InvalidEntry { reason, .. } if reason == expected
        ));
    }
    f.append(genuine);
}

// ----- 8. low-order X25519 points -----------------------------------------

/// The X25519 points of order 1, 2, 4 and 8 and their non-canonical
/// encodings (p - 1, p, p + 1), as libsodium lists them.
const LOW_ORDER: [&str; 7] = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

/// `id`'s document with another X25519 key, validly self-signed.
fn document_with_x25519(id: &SecretIdentity, x25519: &[u8; 32]) -> Vec<u8> {
    let p = id.public();
    let body = PublicIdentity::body(
        p.role(),
        p.display_name(),
        p.registration(),
        x25519,
        p.verifying_key(),
        p.created_at(),
    );
    let sig = id.sign(&[IDENTITY_SIGNATURE_CONTEXT, body.as_slice()].concat());
    [body.as_slice(), &sig].concat()
}

#[test]
fn low_order_x25519_points_in_identities() {
    let f = Fixture::new();
    let own = f.mallory.public();
    assert_eq!(
        document_with_x25519(&f.mallory, own.x25519_public()),
        own.to_bytes()
    );
    let (share, _) = share_entry(&f, 3, f.labs, Permission::Read);
    for encoded in LOW_ORDER {
        let mut point: [u8; 32] = hex::decode(encoded).unwrap().try_into().unwrap();
        // The top bit is ignored by X25519: set, it is the same point.
        for top_bit in [0, 0x80] {
            point[31] |= top_bit;
            let doc = document_with_x25519(&f.mallory, &point);
            assert!(
                matches!(
                    PublicIdentity::from_bytes(&doc),
                    Err(Error::WeakPublicKey { what: "X25519" })
                ),
                "{encoded} (top bit {top_bit:#x}) accepted"
            );
            assert!(matches!(
                reencode_with(&share, |b| *b = replace_once(b, own.to_bytes(), &doc)),
                Err(Error::WeakPublicKey { what: "X25519" })
            ));
        }
    }
}

// ----- collection names and rotations ---------------------------------

#[test]
fn tampered_collection_name() {
    let mut f = Fixture::new();
    let (_, genuine) = f
        .state
        .create_collection(&f.patient, "imaging", NOW)
        .unwrap();
    let EntryBody::CollectionCreated { sealed_name, .. } = genuine.body() else {
        panic!("not a collection")
    };
    let mut tampered = sealed_name.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let e = reencode_with(&genuine, |b| *b = replace_once(b, sealed_name, &tampered)).unwrap();
    assert!(matches!(
        f.refuse(&e),
        Error::BadSignature { what: "log entry" }
    ));
    // A name moved from another collection, or altered, does not open.
    let labs_key = f.key_of(0, f.labs);
    let sealed = |i: usize| match f.log[i].body() {
        EntryBody::CollectionCreated { sealed_name, .. } => sealed_name.clone(),
        _ => panic!("not a collection"),
    };
    let (labs_name, meds_name) = (sealed(1), sealed(2));
    assert_eq!(labs_key.open_name(&labs_name).unwrap(), "labs");
    let mut altered = labs_name.clone();
    altered[0] ^= 1;
    for name in [meds_name, altered] {
        assert!(matches!(
            labs_key.open_name(&name),
            Err(Error::DecryptionFailed)
        ));
    }
    f.append(genuine);
}

#[test]
fn rotation_omitting_a_rewrap() {
    let mut f = Fixture::new();
    let a = f.put_as(0, f.labs, None, "A", b"a");
    f.put_as(0, f.labs, None, "B", b"b");
    f.put_as(0, f.labs, Some(a.record()), "A", b"a2");
    f.share(1, f.labs, Permission::ReadWrite, None);
    let (rotation, _) = revocation(&f, 1, f.labs);
    assert_eq!(rotation.rewraps.len(), 2);
    let mut omitted = rotation.clone();
    omitted.rewraps.pop();
    let mut stale = rotation;
    for rw in stale
        .rewraps
        .iter_mut()
        .filter(|rw| rw.record == a.record())
    {
        rw.version = 1;
    }
    for (r, expected) in [
        (
            omitted,
            "rotation must re-wrap or drop every live record of the collection, each once",
        ),
        (stale, "a re-wrap names a stale record version"),
    ] {
        let e = f.forge(&f.patient, EntryBody::Rotation(r));
        assert!(matches!(
            f.refuse(&e),
            Error::InvalidEntry { reason, .. } if reason == expected
        ));
    }
    f.revoke(1, f.labs);
}

#[test]
fn rotation_granting_the_revoked_member() {
    let mut f = Fixture::new();
    f.share(1, f.labs, Permission::ReadWrite, None);
    f.share(2, f.labs, Permission::Read, None);
    let (rotation, new_key) = revocation(&f, 1, f.labs);
    let mut regranted = rotation.clone();
    regranted.grants.push(
        Grant::for_collection(
            &f.patient,
            &new_key,
            f.alice.public(),
            Permission::ReadWrite,
            None,
            NOW,
        )
        .unwrap(),
    );
    regranted.grants.sort_by_key(|g| *g.member().as_bytes());
    // And one that drops a remaining member.
    let mut dropped = rotation;
    let bob = f.bob.fingerprint();
    dropped.grants.retain(|g| g.member() != bob);
    for r in [regranted, dropped] {
        let e = f.forge(&f.patient, EntryBody::Rotation(r));
        assert!(matches!(
            f.refuse(&e),
            Error::InvalidEntry {
                reason: "new grants must go to exactly the remaining members",
                ..
            }
        ));
    }
    f.revoke(1, f.labs);
}

#[test]
fn rotation_weakening_the_owners_own_grant() {
    let mut f = Fixture::new();
    f.share(2, f.labs, Permission::Read, None);
    f.share(1, f.labs, Permission::ReadWrite, None);
    let (rotation, new_key) = revocation(&f, 1, f.labs);
    let owner = f.patient.fingerprint();
    for (permission, expiry) in [
        (Permission::ReadWrite, Some(NOW + 60)),
        (Permission::Read, None),
    ] {
        let mut weakened = rotation.clone();
        weakened.grants.retain(|g| g.member() != owner);
        weakened.grants.push(
            Grant::for_collection(
                &f.patient,
                &new_key,
                f.patient.public(),
                permission,
                expiry,
                NOW,
            )
            .unwrap(),
        );
        weakened.grants.sort_by_key(|g| *g.member().as_bytes());
        let e = f.forge(&f.patient, EntryBody::Rotation(weakened));
        assert!(matches!(
            f.refuse(&e),
            Error::InvalidEntry {
                reason: "the owner's new grant must be read-write without expiry",
                ..
            }
        ));
    }
    f.revoke(1, f.labs);
}
