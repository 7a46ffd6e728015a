//! Conformance tests against independent test vectors: the C2SP age test kit
//! and Project Wycheproof (see `shared/conformance/README.md`).
//!
//! The vectors are read at run time from `shared/conformance/` next to the
//! project (never copied in). A missing directory fails the tests: they must
//! not pass vacuously. Every vector runs through our own wrappers
//! (`agefile`, `primitives`) wherever one exists; the few that exercise a
//! library feature we do not wrap say so.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::SecretString;
use serde_json::Value;

use crate::agefile::{decrypt_passphrase, decrypt_x25519};
use crate::error::{Error, Result};
use crate::primitives;

const CONFORMANCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/conformance");

/// A subdirectory of the conformance data; panics if it is missing.
fn conformance_path(sub: &str) -> PathBuf {
    let path = Path::new(CONFORMANCE_DIR).join(sub);
    assert!(
        path.exists(),
        "conformance data missing: {} does not exist (expected the shared \
         conformance directory next to the project, see shared/conformance/README.md)",
        path.display()
    );
    path
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// Counts of executed and skipped vectors for one file, checked against the
/// file's own total so a test cannot pass by skipping everything.
#[derive(Default)]
struct Tally {
    run: usize,
    skipped: usize,
}

impl Tally {
    fn finish(&self, what: &str, total: usize, max_skipped: usize) {
        println!(
            "{what}: {} run, {} skipped, {total} in file",
            self.run, self.skipped
        );
        assert_eq!(
            self.run + self.skipped,
            total,
            "{what}: not every vector was accounted for"
        );
        assert!(self.run > 0, "{what}: no vectors were run");
        assert!(
            self.skipped <= max_skipped,
            "{what}: {} vectors skipped, at most {max_skipped} expected",
            self.skipped
        );
    }
}

// ---------------------------------------------------------------------------
// age test kit
// ---------------------------------------------------------------------------

/// Large enough for every test-kit payload (the longest is 258 chunks of
/// 64 KiB, about 16.5 MiB).
const AGE_MAX_LEN: usize = 32 << 20;

/// Work factor bounds for the vector run. The test kit uses low work factors
/// (log2 N = 10) to stay fast; our key-file policy separately refuses work
/// factors below 15 (see `age_testkit_weak_work_factor_refused_by_policy`).
const TESTKIT_MIN_WORK_FACTOR: u8 = 0;
const TESTKIT_MAX_WORK_FACTOR: u8 = 22;

/// Header keys of the test-kit format (all others mean: skip the file).
const TESTKIT_KEYS: &[&str] = &[
    "expect",
    "payload",
    "file key",
    "identity",
    "passphrase",
    "armored",
    "compressed",
    "comment",
];

/// One test-kit file: its header and the (decompressed) age file.
struct TestkitFile {
    name: String,
    expect: String,
    /// SHA-256 of the plaintext, for `expect: success`.
    payload: Option<Vec<u8>>,
    identities: Vec<String>,
    passphrases: Vec<String>,
    armored: bool,
    unknown_keys: Vec<String>,
    age: Vec<u8>,
}

impl TestkitFile {
    fn parse(name: String, bytes: &[u8]) -> Self {
        let split = bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap_or_else(|| panic!("{name}: no blank line after the header"));
        let header = std::str::from_utf8(&bytes[..split])
            .unwrap_or_else(|_| panic!("{name}: header is not UTF-8"));
        let mut body = bytes[split + 2..].to_vec();
        let mut file = Self {
            name,
            expect: String::new(),
            payload: None,
            identities: Vec::new(),
            passphrases: Vec::new(),
            armored: false,
            unknown_keys: Vec::new(),
            age: Vec::new(),
        };
        for line in header.lines() {
            let (key, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("{}: bad header line {line:?}", file.name));
            match key {
                "expect" => file.expect = value.to_owned(),
                "payload" => file.payload = Some(unhex(value)),
                "identity" => file.identities.push(value.to_owned()),
                "passphrase" => file.passphrases.push(value.to_owned()),
                "armored" => file.armored = value == "yes",
                "compressed" if value == "zlib" => {
                    let mut out = Vec::new();
                    flate2::read::ZlibDecoder::new(body.as_slice())
                        .read_to_end(&mut out)
                        .unwrap_or_else(|e| panic!("{}: bad zlib body: {e}", file.name));
                    body = out;
                }
                _ if TESTKIT_KEYS.contains(&key) && key != "compressed" => {}
                _ => file.unknown_keys.push(format!("{key}: {value}")),
            }
        }
        assert!(!file.expect.is_empty(), "{}: no expect line", file.name);
        file.age = body;
        file
    }

    fn is_post_quantum(&self) -> bool {
        self.identities
            .iter()
            .any(|i| i.starts_with("AGE-SECRET-KEY-PQ-"))
    }

    /// Decrypts the file with each of its keys through our readers: every
    /// X25519 identity with `decrypt_x25519`, every passphrase with
    /// `decrypt_passphrase`. A file with no key at all (e.g. `empty`) is tried
    /// with a fresh identity and an arbitrary passphrase; it can only be a
    /// failure vector.
    fn attempts(&self) -> Vec<Result<zeroize::Zeroizing<Vec<u8>>>> {
        let mut out = Vec::new();
        let mut identities: Vec<age::x25519::Identity> = self
            .identities
            .iter()
            .map(|s| {
                age::x25519::Identity::from_str(s)
                    .unwrap_or_else(|e| panic!("{}: bad identity: {e}", self.name))
            })
            .collect();
        let mut passphrases = self.passphrases.clone();
        if identities.is_empty() && passphrases.is_empty() {
            identities.push(age::x25519::Identity::generate());
            passphrases.push("password".to_owned());
        }
        for identity in &identities {
            out.push(decrypt_x25519(&self.age, identity, AGE_MAX_LEN));
        }
        for passphrase in passphrases {
            out.push(decrypt_passphrase(
                &self.age,
                &SecretString::from(passphrase),
                TESTKIT_MIN_WORK_FACTOR,
                TESTKIT_MAX_WORK_FACTOR,
                AGE_MAX_LEN,
            ));
        }
        out
    }

    /// Checks our readers' outcome; `Err` names the problem.
    fn check(&self, want: Want<'_>) -> std::result::Result<(), String> {
        let attempts = self.attempts();
        for attempt in &attempts {
            if let Err(e) = attempt {
                if !is_age_failure(e) {
                    return Err(format!("unexpected error variant: {e:?}"));
                }
            }
        }
        let mut plaintexts = attempts.iter().flatten();
        match want {
            Want::Plaintext(sha256) => {
                if plaintexts.any(|pt| primitives::sha256(&[pt]).as_slice() == sha256) {
                    Ok(())
                } else if attempts.iter().any(Result::is_ok) {
                    Err("decrypted, but the plaintext's SHA-256 differs from payload".into())
                } else {
                    Err(format!("expected success, got {attempts:?}"))
                }
            }
            Want::Refused if plaintexts.next().is_some() => Err(format!(
                "expected {:?}, but decryption succeeded",
                self.expect
            )),
            Want::Accepted if plaintexts.next().is_none() => Err(format!(
                "known deviation of the age crate no longer happens ({attempts:?}): \
                 remove the file from AGE_LEGACY_STANZA_ACCEPTED"
            )),
            Want::Refused | Want::Accepted => Ok(()),
        }
    }
}

/// What our readers must do with a test-kit file.
enum Want<'a> {
    /// Decrypt to a plaintext with this SHA-256.
    Plaintext(&'a [u8]),
    /// Refuse it.
    Refused,
    /// Decrypt it although the test kit expects a failure (a known,
    /// documented deviation, see [`AGE_LEGACY_STANZA_ACCEPTED`]).
    Accepted,
}

/// Test-kit `header failure` files that the `age` crate (0.12) decrypts: it
/// deliberately still parses the legacy stanza encoding without a final short
/// body line (`age_core::format::read::legacy_age_stanza`), and its own
/// test-kit runner (`age/tests/testkit.rs`) makes the same exception. The
/// header MAC still covers the bytes as read, so this accepts a
/// non-canonical encoding but does not let anyone alter a file. Files we
/// write always end each stanza with a short line.
const AGE_LEGACY_STANZA_ACCEPTED: &[&str] = &["stanza_missing_body", "stanza_missing_final_line"];

/// The errors our age readers may collapse a failure into.
fn is_age_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::DecryptionFailed
            | Error::WrongPassphrase
            | Error::Malformed { .. }
            | Error::WeakKeyFile { .. }
    )
}

/// Every test-kit file, sorted by name.
fn testkit_files() -> Vec<TestkitFile> {
    let dir = conformance_path("age-testkit");
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            TestkitFile::parse(name, &bytes)
        })
        .collect()
}

/// Number of files in the test kit (C2SP CCTV commit 1e3d2860).
const TESTKIT_FILES: usize = 143;
/// Binary, non-post-quantum files, run through our readers.
const TESTKIT_MIN_RUN: usize = 92;

#[test]
fn age_testkit() {
    let files = testkit_files();
    assert_eq!(files.len(), TESTKIT_FILES, "test kit file count");
    let (mut run, mut armored, mut pq, mut unknown) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for file in &files {
        if !file.unknown_keys.is_empty() {
            println!(
                "skip {}: unknown header keys {:?}",
                file.name, file.unknown_keys
            );
            unknown += 1;
            continue;
        }
        if file.is_post_quantum() {
            pq += 1;
            continue;
        }
        // Our readers never accept ASCII armor: for every armored file
        // (including `expect: success` ones) refusing it is the expected
        // outcome for our code.
        let want = if file.armored {
            armored += 1;
            Want::Refused
        } else if AGE_LEGACY_STANZA_ACCEPTED.contains(&file.name.as_str()) {
            run += 1;
            Want::Accepted
        } else if file.expect == "success" {
            run += 1;
            Want::Plaintext(
                file.payload
                    .as_deref()
                    .expect("success vector without payload"),
            )
        } else {
            run += 1;
            Want::Refused
        };
        if let Err(problem) = file.check(want) {
            problems.push(format!(
                "{} (expect: {}{}): {problem}",
                file.name,
                file.expect,
                if file.armored { ", armored" } else { "" }
            ));
        }
    }
    println!(
        "age test kit: {run} run, {armored} armored (refused by our binary readers, as \
         expected), skipped {} ({pq} post-quantum, {unknown} unknown header keys)",
        pq + unknown
    );
    assert!(
        problems.is_empty(),
        "age test kit failures:\n{}",
        problems.join("\n")
    );
    assert_eq!(run + armored + pq + unknown, files.len());
    assert!(
        run >= TESTKIT_MIN_RUN,
        "only {run} test-kit vectors run, expected at least {TESTKIT_MIN_RUN}"
    );
    assert!(armored > 0, "no armored files checked");
}

/// The test kit's scrypt vectors use a low work factor; the key-file policy
/// (minimum 15) must refuse them before running scrypt.
#[test]
fn age_testkit_weak_work_factor_refused_by_policy() {
    let file = testkit_files()
        .into_iter()
        .find(|f| f.name == "scrypt")
        .expect("test kit file `scrypt`");
    let passphrase = SecretString::from(file.passphrases[0].clone());
    assert!(decrypt_passphrase(&file.age, &passphrase, 0, 22, AGE_MAX_LEN).is_ok());
    match decrypt_passphrase(&file.age, &passphrase, 15, 22, AGE_MAX_LEN) {
        Err(Error::WeakKeyFile {
            found: 10,
            minimum: 15,
        }) => {}
        other => panic!("expected WeakKeyFile {{ found: 10, minimum: 15 }}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Wycheproof
// ---------------------------------------------------------------------------

/// A Wycheproof file (testvectors_v1 schema).
struct Wycheproof {
    name: &'static str,
    json: Value,
}

/// One test case with its group.
struct Case<'a> {
    group: &'a Value,
    test: &'a Value,
}

impl Wycheproof {
    fn load(name: &'static str) -> Self {
        let path = conformance_path("wycheproof").join(name);
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        Self { name, json }
    }

    fn total(&self) -> usize {
        let n = self.json["numberOfTests"].as_u64().expect("numberOfTests");
        usize::try_from(n).unwrap()
    }

    fn cases(&self) -> impl Iterator<Item = Case<'_>> {
        self.json["testGroups"]
            .as_array()
            .expect("testGroups")
            .iter()
            .flat_map(|group| {
                group["tests"]
                    .as_array()
                    .expect("tests")
                    .iter()
                    .map(move |test| Case { group, test })
            })
    }
}

impl Case<'_> {
    fn id(&self) -> u64 {
        self.test["tcId"].as_u64().expect("tcId")
    }

    fn str(&self, field: &str) -> &str {
        self.test[field]
            .as_str()
            .unwrap_or_else(|| panic!("tcId {}: no field {field}", self.id()))
    }

    fn bytes(&self, field: &str) -> Vec<u8> {
        unhex(self.str(field))
    }

    /// `valid`, `invalid` or `acceptable`.
    fn result(&self) -> &str {
        self.str("result")
    }

    fn label(&self) -> String {
        format!(
            "tcId {} ({}, {})",
            self.id(),
            self.result(),
            self.test["comment"].as_str().unwrap_or("")
        )
    }
}

#[test]
fn wycheproof_x25519() {
    let file = Wycheproof::load("x25519_test.json");
    let mut tally = Tally::default();
    let mut zero = 0;
    for case in file.cases() {
        let label = case.label();
        let (Ok(public), Ok(private)) = (
            <[u8; 32]>::try_from(case.bytes("public")),
            <[u8; 32]>::try_from(case.bytes("private")),
        ) else {
            // Our X25519 takes fixed 32-byte keys: other sizes cannot be
            // expressed (this file has none).
            tally.skipped += 1;
            continue;
        };
        tally.run += 1;
        let shared = case.bytes("shared");
        let got = primitives::x25519(&private, &public);
        if shared.iter().all(|b| *b == 0) {
            // Low-order public keys (flags ZeroSharedSecret / LowOrderPublic)
            // must be refused, as the age spec requires.
            zero += 1;
            assert!(
                matches!(got, Err(Error::WeakPublicKey { .. })),
                "{label}: all-zero shared secret accepted by x25519"
            );
            assert!(
                primitives::check_x25519_public(&public).is_err(),
                "{label}: low-order public key accepted by check_x25519_public"
            );
        } else if case.result() == "invalid" {
            assert!(got.is_err(), "{label}: invalid case accepted");
        } else {
            // `valid`, and `acceptable` cases with a non-zero result
            // (non-canonical or twist points, which RFC 7748 computes).
            let got = got.unwrap_or_else(|e| panic!("{label}: {e:?}"));
            assert_eq!(
                got.as_slice(),
                shared.as_slice(),
                "{label}: wrong shared secret"
            );
            assert!(
                primitives::check_x25519_public(&public).is_ok(),
                "{label}: public key with a non-zero shared secret refused"
            );
        }
    }
    println!("x25519: {zero} all-zero shared secrets refused");
    assert!(zero > 0, "no all-zero shared-secret cases found");
    tally.finish(file.name, file.total(), 0);
}

/// Runs a Wycheproof AEAD file through `seal` / `open` for nonces of
/// `nonce_len` bytes; cases with other nonce sizes (the `InvalidNonceSize`
/// cases) cannot be expressed with fixed-size nonce types and are skipped.
fn run_aead(
    file: &Wycheproof,
    nonce_len: usize,
    seal: impl Fn(&[u8; 32], &[u8], &[u8], &[u8]) -> Vec<u8>,
    open: impl Fn(&[u8; 32], &[u8], &[u8], &[u8]) -> Option<Vec<u8>>,
) {
    let mut tally = Tally::default();
    for case in file.cases() {
        let label = case.label();
        let nonce = case.bytes("iv");
        let Ok(key) = <[u8; 32]>::try_from(case.bytes("key")) else {
            tally.skipped += 1;
            continue;
        };
        if nonce.len() != nonce_len {
            assert_eq!(case.result(), "invalid", "{label}: skipped a valid case");
            tally.skipped += 1;
            continue;
        }
        tally.run += 1;
        let (aad, msg) = (case.bytes("aad"), case.bytes("msg"));
        let mut sealed = case.bytes("ct");
        sealed.extend(case.bytes("tag"));
        let opened = open(&key, &nonce, &aad, &sealed);
        if case.result() == "valid" {
            assert_eq!(seal(&key, &nonce, &aad, &msg), sealed, "{label}: seal");
            assert_eq!(opened.as_deref(), Some(msg.as_slice()), "{label}: open");
        } else {
            assert!(opened.is_none(), "{label}: invalid ciphertext opened");
        }
    }
    tally.finish(file.name, file.total(), 9);
}

#[test]
fn wycheproof_chacha20_poly1305() {
    let nonce = |n: &[u8]| <[u8; primitives::NONCE_LEN]>::try_from(n).unwrap();
    run_aead(
        &Wycheproof::load("chacha20_poly1305_test.json"),
        primitives::NONCE_LEN,
        |key, n, aad, msg| primitives::aead_seal(key, &nonce(n), aad, msg),
        |key, n, aad, ct| {
            primitives::aead_open(key, &nonce(n), aad, ct)
                .map(|pt| pt.to_vec())
                .map_err(|e| assert!(matches!(e, Error::DecryptionFailed), "{e:?}"))
                .ok()
        },
    );
}

/// vault-core does not use XChaCha20-Poly1305 itself; this pins the behaviour
/// of the `chacha20poly1305` crate we depend on, directly.
#[test]
fn wycheproof_xchacha20_poly1305() {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};
    run_aead(
        &Wycheproof::load("xchacha20_poly1305_test.json"),
        24,
        |key, nonce, aad, msg| {
            XChaCha20Poly1305::new(key.into())
                .encrypt(XNonce::from_slice(nonce), Payload { msg, aad })
                .unwrap()
        },
        |key, nonce, aad, msg| {
            XChaCha20Poly1305::new(key.into())
                .decrypt(XNonce::from_slice(nonce), Payload { msg, aad })
                .ok()
        },
    );
}

#[test]
fn wycheproof_hkdf_sha256() {
    let file = Wycheproof::load("hkdf_sha256_test.json");
    let mut tally = Tally::default();
    let (mut ours, mut too_large) = (0, 0);
    for case in file.cases() {
        let label = case.label();
        tally.run += 1;
        let (ikm, salt, info) = (case.bytes("ikm"), case.bytes("salt"), case.bytes("info"));
        let size = usize::try_from(case.test["size"].as_u64().expect("size")).unwrap();
        let valid = case.result() == "valid";
        if size == 32 {
            // Our wrapper: fixed 32-byte output.
            ours += 1;
            assert!(valid, "{label}: invalid 32-byte case");
            let okm = primitives::hkdf32(&ikm, &salt, &info);
            assert_eq!(okm.as_slice(), case.bytes("okm").as_slice(), "{label}");
            continue;
        }
        // Other sizes: the `hkdf` crate directly.
        let mut okm = vec![0u8; size];
        let got = hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &ikm).expand(&info, &mut okm);
        if size > 255 * 32 {
            too_large += 1;
            assert!(got.is_err(), "{label}: expand accepted {size} bytes");
            assert!(!valid, "{label}: oversize case marked valid");
        } else if valid {
            assert!(got.is_ok(), "{label}: {got:?}");
            assert_eq!(okm, case.bytes("okm"), "{label}");
        } else {
            assert!(got.is_err(), "{label}: invalid case accepted");
        }
    }
    println!("hkdf: {ours} through hkdf32, {too_large} oversize refused");
    assert!(ours > 0 && too_large > 0);
    tally.finish(file.name, file.total(), 0);
}

/// `valid` Wycheproof Ed25519 cases that our strict verification refuses.
/// Empty: with this vector set, `verify_strict` plus our small-order key
/// check accept every valid case.
const ED25519_STRICT_REFUSES: &[u64] = &[];

#[test]
fn wycheproof_ed25519() {
    let file = Wycheproof::load("ed25519_test.json");
    let mut tally = Tally::default();
    for case in file.cases() {
        let label = case.label();
        tally.run += 1;
        let pk = unhex(
            case.group["publicKey"]["pk"]
                .as_str()
                .expect("publicKey.pk"),
        );
        let outcome = <[u8; 32]>::try_from(pk)
            .map_err(|_| "public key length")
            .and_then(|pk| primitives::ed25519_public(&pk).map_err(|_| "public key"))
            .and_then(|key| {
                // A signature of the wrong length cannot be expressed.
                let sig =
                    <[u8; 64]>::try_from(case.bytes("sig")).map_err(|_| "signature length")?;
                primitives::verify(&key, &case.bytes("msg"), &sig, "test").map_err(|_| "signature")
            });
        match case.result() {
            "valid" if ED25519_STRICT_REFUSES.contains(&case.id()) => {
                assert!(outcome.is_err(), "{label}: allow-listed but accepted");
            }
            "valid" => assert_eq!(outcome, Ok(()), "{label}"),
            _ => assert!(outcome.is_err(), "{label}: invalid signature accepted"),
        }
    }
    tally.finish(file.name, file.total(), 0);
}
