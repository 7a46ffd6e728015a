//! Replays the fuzz corpus that matters (`fuzz/`, issue 6) through the same
//! vault-core parsers the fuzz targets feed, on the stable toolchain, in
//! every `cargo test` run:
//!
//! - `fuzz/seeds/<target>/*`: the committed seed corpus, made from a real
//!   vault; each seed must parse (and round-trip, as the targets assert).
//! - `fuzz/regressions/<target>/*`: inputs that once crashed a target (or
//!   hung it); each must now be handled without a panic. A file whose name
//!   ends in `.ok` must parse; any other must be refused with an `Err`.
//!
//! Targets whose parsers live outside vault-core (`relay_bodies`,
//! `client_answers`) or need the fuzz fixture vault (`record_open`) are
//! replayed by their fuzz binaries: `cargo +nightly fuzz run <target>
//! fuzz/regressions/<target>/*`. The `fhir` target's corpus is replayed by
//! vault-fhir's own `tests/fuzz_regressions.rs`.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use vault_core::request::RequestAuth;
use vault_core::{
    keyfile, Checkpoint, Grant, LogEntry, PublicIdentity, RecordMetadata, VaultState,
    WrappedDataKey,
};

/// The fuzz fixture's key-file passphrase (`fuzz/fixture/src/lib.rs`).
const PASSPHRASE: &str = "correct horse battery staple";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted (none if it is absent).
fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(read) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = read
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Each target's parsing, as its fuzz target does it (without the fixture
/// vault): `Ok(())` if the input parsed, `Err` with the refusal otherwise.
type Feed = fn(&[u8]) -> Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn identity(data: &[u8]) -> Result<(), String> {
    match PublicIdentity::from_bytes(data) {
        Ok(id) => {
            assert_eq!(id.to_bytes(), data);
            PublicIdentity::from_text(&id.to_text()).map_err(err)?;
            Ok(())
        }
        Err(bytes_err) => match std::str::from_utf8(data) {
            Ok(text) => PublicIdentity::from_text(text).map(|_| ()).map_err(err),
            Err(_) => Err(err(bytes_err)),
        },
    }
}

fn record_metadata(data: &[u8]) -> Result<(), String> {
    let m = RecordMetadata::from_bytes(data).map_err(err)?;
    assert_eq!(m.to_bytes(), data);
    Ok(())
}

fn wrapped_key(data: &[u8]) -> Result<(), String> {
    let k = WrappedDataKey::from_bytes(data).map_err(err)?;
    assert_eq!(k.to_bytes(), data);
    Ok(())
}

fn grant(data: &[u8]) -> Result<(), String> {
    let g = Grant::from_bytes(data).map_err(err)?;
    assert_eq!(g.to_bytes(), data);
    Ok(())
}

fn log_entry(data: &[u8]) -> Result<(), String> {
    let e = LogEntry::from_bytes(data).map_err(err)?;
    assert_eq!(e.to_bytes(), data);
    let _ = VaultState::from_genesis(&e);
    Ok(())
}

fn checkpoint(data: &[u8]) -> Result<(), String> {
    let (selector, rest) = data.split_first().ok_or("empty input")?;
    if selector % 2 == 0 {
        let c = Checkpoint::from_bytes(rest).map_err(err)?;
        assert_eq!(c.to_bytes(), rest);
        Checkpoint::parse_code(&c.code()).map_err(err)?;
    } else {
        let code = std::str::from_utf8(rest).map_err(err)?;
        Checkpoint::parse_code(code).map_err(err)?;
    }
    Ok(())
}

fn keyfile(data: &[u8]) -> Result<(), String> {
    keyfile::open(data, &SecretString::from(PASSPHRASE))
        .map(|_| ())
        .map_err(err)
}

fn request_auth(data: &[u8]) -> Result<(), String> {
    const NAMES: [&str; 6] = [
        "x-vault-identity",
        "x-vault-timestamp",
        "x-vault-nonce",
        "x-vault-content-sha256",
        "x-vault-relay",
        "x-vault-signature",
    ];
    let text = std::str::from_utf8(data).map_err(err)?;
    let lines: Vec<&str> = text.split('\n').collect();
    let auth = RequestAuth::from_headers(|name| {
        NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| lines.get(i + 2).copied())
    })
    .map_err(err)?;
    // The seed is signed by the fixture member, whose document is a seed of
    // the identity target.
    if let Some((_, doc)) = inputs("seeds", "identity")
        .into_iter()
        .find(|(n, _)| n == "member")
    {
        let member = PublicIdentity::from_bytes(&doc).unwrap();
        let (method, path) = (lines[0], lines.get(1).copied().unwrap_or(""));
        if auth.identity == member.fingerprint() {
            // The fixture relay (`vault_fuzz_fixture::RELAY`).
            let relay = vault_core::request::RelayOrigin::parse("https://relay.example").unwrap();
            auth.verify(&member, method, path, &relay).map_err(err)?;
        }
    }
    Ok(())
}

const TARGETS: [(&str, Feed); 8] = [
    ("identity", identity),
    ("record_metadata", record_metadata),
    ("wrapped_key", wrapped_key),
    ("grant", grant),
    ("log_entry", log_entry),
    ("checkpoint", checkpoint),
    ("keyfile", keyfile),
    ("request_auth", request_auth),
];

#[test]
fn seeds_parse() {
    let mut seen = 0;
    for (target, feed) in TARGETS {
        for (name, data) in inputs("seeds", target) {
            if let Err(e) = feed(&data) {
                panic!("seed {target}/{name} does not parse: {e}");
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no seeds found under {}", fuzz_dir().display());
}

#[test]
fn regressions_are_handled() {
    for (target, feed) in TARGETS {
        for (name, data) in inputs("regressions", target) {
            let result = feed(&data);
            if name.ends_with(".ok") {
                assert!(result.is_ok(), "{target}/{name}: {result:?}");
            } else {
                assert!(result.is_err(), "{target}/{name} was accepted");
            }
        }
    }
}
