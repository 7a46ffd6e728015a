//! Replays the `fhir` fuzz target's corpus (`fuzz/`, issue 6) through the
//! same calls the target makes, on the stable toolchain, in every
//! `cargo test` run (vault-core's `tests/fuzz_regressions.rs` does the same
//! for the vault-core targets):
//!
//! - `fuzz/seeds/fhir/*`: the committed seeds; each must parse.
//! - `fuzz/regressions/fhir/*`: inputs that once crashed the target (or hung
//!   it); each must now be handled without a panic. A file whose name ends
//!   in `.ok` must parse; any other must be refused with an `Err`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/fhir/`, sorted (none if it is absent).
fn inputs(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join("fhir");
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

/// The fuzz target's parsing: `Ok(())` if the input parsed, `Err` with the
/// refusal otherwise.
fn fhir_bundle(data: &[u8]) -> Result<(), String> {
    for r in vault_fhir::split_bundle(data).map_err(|e| e.to_string())? {
        let value: serde_json::Value = serde_json::from_slice(&r.json).unwrap();
        let _ = vault_fhir::categorize(&value);
        assert!(!vault_fhir::title(&value).is_empty());
        let _ = vault_fhir::effective_at(&value);
        let _ = vault_fhir::summary(&value);
    }
    Ok(())
}

#[test]
fn seeds_parse() {
    let mut seen = 0;
    for (name, data) in inputs("seeds") {
        if let Err(e) = fhir_bundle(&data) {
            panic!("seed fhir/{name} does not parse: {e}");
        }
        seen += 1;
    }
    assert!(seen > 0, "no seeds found under {}", fuzz_dir().display());
}

#[test]
fn regressions_are_handled() {
    for (name, data) in inputs("regressions") {
        let result = fhir_bundle(&data);
        if name.ends_with(".ok") {
            assert!(result.is_ok(), "fhir/{name}: {result:?}");
        } else {
            assert!(result.is_err(), "fhir/{name} was accepted");
        }
    }
}
