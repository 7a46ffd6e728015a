//! Property tests: sealed records round-trip at every size that matters and
//! refuse every alteration of their ciphertext without releasing
//! unauthenticated plaintext; every format parses only canonical bytes.

use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::Index;

use super::fixture::*;
use crate::error::Error;
use crate::identity::{PublicIdentity, Role, SecretIdentity};
use crate::ids::{CollectionId, RecordId, VaultId};
use crate::keys::{CollectionKey, WrappedDataKey};
use crate::log::{Checkpoint, EntryBody, LogEntry};
use crate::record::{self, KeySource, OpenedRecord, RecordMetadata, VerifiedRecord};
use crate::{ciphertext_len, padded_len, Grant, Keyring, Permission, CHUNK_LEN};

/// One ciphertext chunk: a full plaintext chunk and its tag.
const CT_CHUNK: usize = CHUNK_LEN + 16;

fn author() -> &'static SecretIdentity {
    static AUTHOR: OnceLock<SecretIdentity> = OnceLock::new();
    AUTHOR.get_or_init(|| identity(1, "Pat Patient", Role::Patient))
}

/// A deterministic body of `len` bytes (no two chunks alike).
fn body_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ ((i >> 8) as u8) ^ seed)
        .collect()
}

/// A record version sealed under a fresh collection key.
struct Sealed {
    key: CollectionKey,
    meta: RecordMetadata,
    body: Vec<u8>,
    ct: Vec<u8>,
}

impl Sealed {
    fn new(body: Vec<u8>) -> Self {
        let key = CollectionKey::generate(VaultId::random(), CollectionId::random(), 0);
        Self::with_key(key, body)
    }

    fn with_key(key: CollectionKey, body: Vec<u8>) -> Self {
        let mut ct = Vec::new();
        let meta = record::seal(
            author(),
            record::SealTo::Collection(&key),
            RecordId::random(),
            1,
            &info("t"),
            crate::RecordBody::new(body.as_slice(), body.len() as u64),
            &mut ct,
        )
        .unwrap();
        Self {
            key,
            meta,
            body,
            ct,
        }
    }

    /// Opens `ct` as this record: the outcome, and every byte released to
    /// the output (even when opening fails).
    fn open(&self, ct: &[u8]) -> (crate::Result<OpenedRecord>, Vec<u8>) {
        let verified = VerifiedRecord {
            metadata: &self.meta,
            key_source: KeySource {
                epoch: self.meta.epoch,
                seal: &self.meta.wrapped_key,
            },
            seq: 1,
        };
        let mut out = Vec::new();
        let result = verified
            .data_key(&self.key)
            .and_then(|k| verified.open_with(&k, ct, &mut out));
        (result, out)
    }

    /// The body bytes carried by the first `chunks` chunks: all a reader may
    /// release when a later chunk fails.
    fn body_in_chunks(&self, chunks: usize) -> &[u8] {
        let n = (chunks * CHUNK_LEN).saturating_sub(header_len());
        &self.body[..n.min(self.body.len())]
    }

    fn chunks(&self) -> usize {
        self.ct.len().div_ceil(CT_CHUNK)
    }

    fn chunk(&self, i: usize) -> &[u8] {
        &self.ct[i * CT_CHUNK..((i + 1) * CT_CHUNK).min(self.ct.len())]
    }

    /// Opens altered ciphertext, expecting [`Error::CiphertextMismatch`]
    /// with exactly the body of the first `authentic_chunks` chunks
    /// released.
    fn assert_refused(&self, ct: &[u8], authentic_chunks: usize) {
        let (result, out) = self.open(ct);
        assert!(
            matches!(result, Err(Error::CiphertextMismatch)),
            "{result:?}"
        );
        assert!(
            out == self.body_in_chunks(authentic_chunks),
            "released {} bytes, expected only the {} of {authentic_chunks} authentic chunks",
            out.len(),
            self.body_in_chunks(authentic_chunks).len()
        );
    }
}

/// The length of a record's plaintext header (with the title "t"), found
/// from the padding: the smallest body that pads past the 512-byte floor
/// makes header + body 513 bytes.
fn header_len() -> usize {
    static LEN: OnceLock<usize> = OnceLock::new();
    *LEN.get_or_init(|| {
        let padded = |n: usize| Sealed::new(vec![0; n]).meta.padded_len;
        let (mut lo, mut hi) = (0, 512);
        assert_eq!(padded(lo), 512);
        assert!(padded(hi) > 512);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if padded(mid) > 512 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        513 - hi
    })
}

fn assert_round_trip(body: Vec<u8>) {
    let len = body.len();
    let s = Sealed::new(body);
    let expected_padded = padded_len((header_len() + len) as u64).unwrap();
    assert_eq!(s.meta.padded_len, expected_padded, "body of {len} bytes");
    assert_eq!(s.ct.len() as u64, ciphertext_len(expected_padded).unwrap());
    assert_eq!(s.meta.ciphertext_len(), s.ct.len() as u64);
    let (opened, out) = s.open(&s.ct);
    let opened = opened.unwrap();
    assert_eq!(opened.body_len, len as u64);
    assert_eq!(opened.info, info("t"));
    assert!(out == s.body, "body of {len} bytes did not round-trip");
}

#[test]
fn round_trip_at_chunk_boundaries() {
    let h = header_len();
    // The header is 116 bytes plus the title: a sanity check of the probe.
    assert_eq!(h, 117);
    // The plaintext (header + body) exactly fills one and two chunks.
    assert_eq!(
        Sealed::new(vec![1; CHUNK_LEN - h]).meta.padded_len,
        CHUNK_LEN as u64
    );
    assert_eq!(
        Sealed::new(vec![1; 2 * CHUNK_LEN - h]).meta.padded_len,
        2 * CHUNK_LEN as u64
    );
    let mut sizes = vec![0, 1, 512 - h - 1, 512 - h, 512 - h + 1];
    for k in 1..=2 {
        for d in 0..=6 {
            // The body alone, and header + body, around k chunks.
            sizes.push(k * CHUNK_LEN + d - 3);
            sizes.push(k * CHUNK_LEN - h + d - 3);
        }
    }
    for (i, len) in sizes.into_iter().enumerate() {
        assert_round_trip(body_of(len, i as u8));
    }
}

/// A small (one-chunk) record, a two-chunk and a three-chunk record.
fn small() -> &'static Sealed {
    static S: OnceLock<Sealed> = OnceLock::new();
    S.get_or_init(|| Sealed::new(body_of(200, 1)))
}

fn two_chunks() -> &'static Sealed {
    static S: OnceLock<Sealed> = OnceLock::new();
    S.get_or_init(|| {
        let s = Sealed::new(body_of(CHUNK_LEN + 1000, 2));
        assert_eq!(s.chunks(), 2);
        s
    })
}

fn three_chunks() -> &'static Sealed {
    static S: OnceLock<Sealed> = OnceLock::new();
    S.get_or_init(|| {
        let s = Sealed::new(body_of(2 * CHUNK_LEN + 1000, 3));
        assert_eq!(s.chunks(), 3);
        s
    })
}

fn flipped(ct: &[u8], pos: usize, xor: u8) -> Vec<u8> {
    let mut ct = ct.to_vec();
    ct[pos] ^= xor;
    ct
}

#[test]
fn every_byte_flip_of_a_small_record_is_refused() {
    let s = small();
    assert_eq!(s.ct.len(), 512 + 16);
    for pos in 0..s.ct.len() {
        s.assert_refused(&flipped(&s.ct, pos, 0x01), 0);
    }
}

#[test]
fn byte_flips_across_two_chunks_are_refused() {
    let s = two_chunks();
    let last = s.ct.len() - 1;
    let positions = [
        0,
        1,
        CHUNK_LEN / 2,
        CHUNK_LEN - 1,
        CHUNK_LEN,    // chunk 0's tag
        CT_CHUNK - 1, // its last byte
        CT_CHUNK,     // chunk 1's first byte
        CT_CHUNK + 1,
        last - 16, // chunk 1's last data byte
        last - 15, // chunk 1's tag
        last,
    ];
    for pos in positions {
        s.assert_refused(&flipped(&s.ct, pos, 0x80), pos / CT_CHUNK);
    }
}

#[test]
fn truncation_at_chunk_boundaries_is_refused() {
    let s = three_chunks();
    for cut in [0, 1, CT_CHUNK - 16, CT_CHUNK, 2 * CT_CHUNK, s.ct.len() - 1] {
        s.assert_refused(&s.ct[..cut], cut / CT_CHUNK);
    }
}

#[test]
fn reordered_dropped_or_duplicated_chunks_are_refused() {
    let s = three_chunks();
    let [c0, c1, c2] = [s.chunk(0), s.chunk(1), s.chunk(2)];
    // (altered stream, chunks that still authenticate in place)
    let cases: [(Vec<&[u8]>, usize); 6] = [
        (vec![c1, c0, c2], 0),
        (vec![c0, c2, c1], 1),
        (vec![c0, c0, c1, c2], 1),
        (vec![c0, c1, c1, c2], 2),
        (vec![c0, c2], 1),
        (vec![c0, c1, c2, c2], 3),
    ];
    for (stream, authentic) in cases {
        s.assert_refused(&stream.concat(), authentic);
    }
}

#[test]
fn ciphertext_of_another_record_in_the_collection_is_refused() {
    let a = Sealed::new(body_of(300, 4));
    let b = Sealed::with_key(copy_key(&a.key), body_of(300, 5));
    assert_eq!(a.ct.len(), b.ct.len());
    a.assert_refused(&b.ct, 0);
    b.assert_refused(&a.ct, 0);
    // Each still opens its own ciphertext.
    assert!(a.open(&a.ct).0.is_ok() && b.open(&b.ct).0.is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn round_trip_random_sizes(len in 0usize..300 * 1024, seed in any::<u8>()) {
        assert_round_trip(body_of(len, seed));
    }

    #[test]
    fn random_byte_flips_are_refused(pos in any::<Index>(), xor in 1u8..) {
        let s = two_chunks();
        let pos = pos.index(s.ct.len());
        s.assert_refused(&flipped(&s.ct, pos, xor), pos / CT_CHUNK);
    }

    #[test]
    fn random_truncations_are_refused(cut in any::<Index>()) {
        let s = three_chunks();
        let cut = cut.index(s.ct.len());
        s.assert_refused(&s.ct[..cut], cut / CT_CHUNK);
    }

    #[test]
    fn appended_bytes_are_refused(extra in proptest::collection::vec(any::<u8>(), 1..64)) {
        for s in [small(), two_chunks()] {
            // Every chunk authenticates before the trailing bytes are seen.
            s.assert_refused(&[s.ct.as_slice(), &extra].concat(), s.chunks());
        }
    }
}

// ----- canonical encodings ---------------------------------------------

/// Genuine encodings of every format, from a vault that used every kind of
/// entry.
struct Samples {
    entries: Vec<Vec<u8>>,
    grants: Vec<Vec<u8>>,
    metadata: Vec<Vec<u8>>,
    identities: Vec<Vec<u8>>,
    checkpoints: Vec<Vec<u8>>,
    wrapped: Vec<Vec<u8>>,
}

fn samples() -> &'static Samples {
    static S: OnceLock<Samples> = OnceLock::new();
    S.get_or_init(|| {
        let mut f = Fixture::new();
        let lab = f.put_as(0, f.labs, None, "HbA1c", b"6.1 %");
        let note = f.put_as(0, f.meds, None, "Note", b"note");
        f.share(1, f.labs, Permission::ReadWrite, Some(NOW + 1000));
        f.share(2, f.labs, Permission::Read, None);
        let mallory = f.mallory.public().clone();
        let mut keyring = Keyring::new(&f.patient, NOW);
        let e = f
            .state
            .share_record(&mut keyring, &note.record(), &mallory, None)
            .unwrap();
        f.append(e);
        let e = f
            .state
            .revoke_record_grant(&f.patient, &note.record(), &mallory.fingerprint(), NOW)
            .unwrap();
        f.append(e);
        f.revoke(2, f.labs);
        let e = f
            .state
            .delete_record(&f.patient, &note.record(), NOW)
            .unwrap();
        f.append(e);

        let mut grants = Vec::new();
        let mut wrapped = vec![lab.wrapped_key.to_bytes()];
        for e in &f.log {
            match e.body() {
                EntryBody::CollectionCreated { owner_grant, .. } => grants.push(owner_grant),
                EntryBody::GrantAdded { grant, .. } => grants.push(grant),
                EntryBody::Rotation(r) => {
                    grants.extend(&r.grants);
                    wrapped.extend(r.rewraps.iter().map(|rw| rw.wrapped.to_bytes()));
                }
                _ => {}
            }
        }
        let registered = SecretIdentity::from_seed(
            &[5; 32],
            &crate::IdentityInfo {
                display_name: "Dr Réné".into(),
                role: Role::Clinician,
                registration: Some("GMC 7654321".into()),
                created_at: NOW,
            },
        )
        .unwrap();
        Samples {
            entries: f.log.iter().map(|e| e.to_bytes().to_vec()).collect(),
            grants: grants.into_iter().map(Grant::to_bytes).collect(),
            metadata: vec![lab.to_bytes(), note.to_bytes()],
            identities: [f.patient.public(), f.alice.public(), registered.public()]
                .map(|p| p.to_bytes().to_vec())
                .to_vec(),
            checkpoints: vec![
                f.state.head().to_bytes(),
                f.state.checkpoint_at(0).unwrap().to_bytes(),
            ],
            wrapped,
        }
    })
}

/// One format: how to parse it, and how to encode a parsed value again
/// from its fields.
struct Format {
    name: &'static str,
    samples: fn(&Samples) -> &Vec<Vec<u8>>,
    reencode: fn(&[u8]) -> crate::Result<Vec<u8>>,
}

fn reencode_identity(p: &PublicIdentity) -> Vec<u8> {
    let doc = p.to_bytes();
    let mut body = PublicIdentity::body(
        p.role(),
        p.display_name(),
        p.registration(),
        p.x25519_public(),
        p.verifying_key(),
        p.created_at(),
    )
    .into_vec();
    body.extend_from_slice(&doc[doc.len() - 64..]);
    body
}

const FORMATS: [Format; 6] = [
    Format {
        name: "log entry",
        samples: |s| &s.entries,
        reencode: |b| LogEntry::from_bytes(b).map(|e| e.reencode()),
    },
    Format {
        name: "grant",
        samples: |s| &s.grants,
        reencode: |b| Grant::from_bytes(b).map(|g| g.to_bytes()),
    },
    Format {
        name: "record metadata",
        samples: |s| &s.metadata,
        reencode: |b| RecordMetadata::from_bytes(b).map(|m| m.to_bytes()),
    },
    Format {
        name: "identity",
        samples: |s| &s.identities,
        reencode: |b| PublicIdentity::from_bytes(b).map(|p| reencode_identity(&p)),
    },
    Format {
        name: "checkpoint",
        samples: |s| &s.checkpoints,
        reencode: |b| Checkpoint::from_bytes(b).map(|c| c.to_bytes()),
    },
    Format {
        name: "wrapped key",
        samples: |s| &s.wrapped,
        reencode: |b| WrappedDataKey::from_bytes(b).map(|w| w.to_bytes()),
    },
];

/// Parses `bytes` as `format`: an error, or a value whose encoding is
/// exactly `bytes`. Returns whether it parsed.
fn parses_canonically(format: &Format, bytes: &[u8]) -> Result<bool, TestCaseError> {
    match (format.reencode)(bytes) {
        Ok(again) => {
            prop_assert!(
                again == bytes,
                "{}: {} input bytes parsed to a value encoded differently",
                format.name,
                bytes.len()
            );
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    Append(u8),
    Insert(Index, u8),
    Remove(Index),
}

impl Mutation {
    fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        let mut b = bytes.to_vec();
        if b.is_empty() {
            b.push(0);
            return b;
        }
        let len = b.len();
        match self {
            Mutation::Flip(i, x) => b[i.index(len)] ^= x,
            Mutation::Truncate(i) => b.truncate(i.index(len)),
            Mutation::Append(x) => b.push(*x),
            Mutation::Insert(i, x) => b.insert(i.index(len + 1), *x),
            Mutation::Remove(i) => {
                b.remove(i.index(len));
            }
        }
        b
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => any::<u8>().prop_map(Mutation::Append),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, x)| Mutation::Insert(i, x)),
        1 => any::<Index>().prop_map(Mutation::Remove),
    ]
}

#[test]
fn genuine_encodings_are_canonical() {
    for format in &FORMATS {
        let samples = (format.samples)(samples());
        assert!(!samples.is_empty(), "{}", format.name);
        for bytes in samples {
            assert!(
                parses_canonically(format, bytes).unwrap(),
                "{}: a genuine encoding did not parse",
                format.name
            );
        }
    }
}

/// At every position of every sample: the low and the high bit flipped,
/// and the byte set to 0, 1, 2 and 255 (every version, kind, tag and
/// permission byte to its neighbours); every truncation; a trailing byte.
#[test]
fn every_small_mutation_is_refused_or_canonical() {
    for format in &FORMATS {
        let mut parsed = 0;
        for bytes in (format.samples)(samples()) {
            let edits = (0..bytes.len()).flat_map(|i| {
                let b = bytes[i];
                [b ^ 0x01, b ^ 0x80, 0, 1, 2, 0xff]
                    .into_iter()
                    .filter(move |v| *v != b)
                    .map(move |v| flipped(bytes, i, b ^ v))
            });
            let truncations = (0..bytes.len()).map(|n| bytes[..n].to_vec());
            let extension = [bytes.as_slice(), &[0]].concat();
            for v in edits.chain(truncations).chain([extension]) {
                parsed += usize::from(parses_canonically(format, &v).unwrap());
            }
        }
        // Only identity documents check a signature while parsing: the other
        // formats parse most edits, so the canonicality assertion really ran.
        if format.name != "identity" {
            assert!(
                parsed > 100,
                "{}: only {parsed} variants parsed",
                format.name
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_encodings_are_refused_or_canonical(
        format in 0..FORMATS.len(),
        sample in any::<Index>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let format = &FORMATS[format];
        let samples = (format.samples)(samples());
        let mut bytes = samples[sample.index(samples.len())].clone();
        for m in &mutations {
            bytes = m.apply(&bytes);
        }
        parses_canonically(format, &bytes)?;
    }
}
