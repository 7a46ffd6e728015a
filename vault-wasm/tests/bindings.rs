//! The bindings as JavaScript sees them, run in a real JS engine:
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
//! cargo test -p vault-wasm --target wasm32-unknown-unknown` (under node;
//! `scripts/test` runs it). Randomness comes from the engine's
//! `crypto.getRandomValues`, time from `Date.now()`, errors are JS `Error`s
//! with a stable code. Relay traffic is covered by the browser story
//! (`web/e2e/story.mjs`).
#![cfg(target_arch = "wasm32")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use vault_wasm::{create_identity, describe_identity, fingerprint_of, version, Session};
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;

const PASSPHRASE: &str = "correct horse battery";

/// The message of a thrown JS error.
fn message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_default()
}

fn view(json: &str) -> serde_json::Value {
    serde_json::from_str(json).unwrap()
}

#[wasm_bindgen_test]
fn a_new_identity_is_sealed_random_and_described() {
    let a = create_identity("Pat", "patient", PASSPHRASE.into(), 15).unwrap();
    let b = create_identity("Pat", "patient", PASSPHRASE.into(), 15).unwrap();
    let (va, vb) = (view(&a.identity()), view(&b.identity()));
    assert_eq!(va["name"], "Pat");
    assert_eq!(va["role"], "patient");
    // Fresh keys from the engine's CSPRNG each time.
    assert_ne!(va["fingerprintHex"], vb["fingerprintHex"]);
    // The key file is an age file (binary header), not the identity in clear.
    let key = a.key_file();
    assert!(key.starts_with(b"age-encryption.org/v1\n"));
    let text = va["identityText"].as_str().unwrap();
    assert_eq!(fingerprint_of(text).unwrap(), va["fingerprint"]);
    assert_eq!(
        view(&describe_identity(text).unwrap())["fingerprintHex"],
        va["fingerprintHex"]
    );
    assert!(!version().is_empty());
}

#[wasm_bindgen_test]
fn bad_input_is_a_js_error_with_a_stable_code() {
    let short = create_identity("Pat", "patient", "short".into(), 15)
        .err()
        .unwrap();
    assert!(
        message(&short).starts_with("invalid_input: "),
        "{}",
        message(&short)
    );
    let weak = create_identity("Pat", "patient", PASSPHRASE.into(), 10)
        .err()
        .unwrap();
    assert!(
        message(&weak).starts_with("invalid_input: "),
        "{}",
        message(&weak)
    );
    let garbage = describe_identity("hello").err().unwrap();
    assert!(
        message(&garbage).starts_with("malformed: "),
        "{}",
        message(&garbage)
    );
    // One character changed in a valid identity: the signature or the
    // encoding no longer verifies.
    let id = create_identity("Pat", "patient", PASSPHRASE.into(), 15).unwrap();
    let text = view(&id.identity())["identityText"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tampered = text.into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let err = fingerprint_of(std::str::from_utf8(&tampered).unwrap())
        .err()
        .unwrap();
    let code = message(&err);
    assert!(
        code.starts_with("bad_signature: ") || code.starts_with("malformed: "),
        "{code}"
    );
}

#[wasm_bindgen_test]
async fn unlocking_checks_the_passphrase_and_the_snapshot() {
    let id = create_identity("Pat", "patient", PASSPHRASE.into(), 15).unwrap();
    let relay = "http://127.0.0.1:9".to_owned();
    let wrong = JsFuture::from(Session::unlock(
        id.key_file(),
        "not the passphrase".into(),
        relay.clone(),
        None,
        None,
    ))
    .await
    .err()
    .unwrap();
    assert!(
        message(&wrong).starts_with("wrong_passphrase: "),
        "{}",
        message(&wrong)
    );
    let damaged = JsFuture::from(Session::unlock(
        id.key_file(),
        PASSPHRASE.into(),
        relay.clone(),
        Some(b"{\"format\":\"something else\"}".to_vec()),
        None,
    ))
    .await
    .err()
    .unwrap();
    assert!(
        message(&damaged).starts_with("local_state: "),
        "{}",
        message(&damaged)
    );
    // The promise resolves to the wasm object itself.
    let resolved = JsFuture::from(Session::unlock(
        id.key_file(),
        PASSPHRASE.into(),
        relay,
        None,
        None,
    ))
    .await
    .unwrap();
    let session = Session::try_from_js_value(resolved).unwrap();
    assert_eq!(
        view(&session.me().unwrap())["fingerprintHex"],
        view(&id.identity())["fingerprintHex"]
    );
    // A fresh session's snapshot holds no vault and restores.
    let snap = session.snapshot().unwrap();
    assert!(!snap.is_empty());
    // The relay at port 9 is unreachable: a clear `transport` error.
    let err = JsFuture::from(session.create_vault()).await.err().unwrap();
    assert!(
        message(&err).starts_with("transport: "),
        "{}",
        message(&err)
    );
    let unknown = session
        .compare_checkpoint("00".repeat(16), "1:0000-0000-0000".into())
        .err()
        .unwrap();
    assert!(
        message(&unknown).starts_with("missing_or_withheld: "),
        "{}",
        message(&unknown)
    );
}
