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

/// A vault with one collection, its owner, and a plan for a new record of
/// `len` bytes in it.
fn planned(
    len: u64,
) -> (
    vault_core::SecretIdentity,
    vault_core::VaultState,
    vault_core::PlannedRecord,
) {
    use vault_core::{
        IdentityInfo, Keyring, RecordId, RecordInfo, RecordTarget, Role, SecretIdentity, VaultState,
    };
    let now = 1_700_000_000;
    let owner = SecretIdentity::from_seed(
        &[9; 32],
        &IdentityInfo {
            display_name: "Pat".into(),
            role: Role::Patient,
            registration: None,
            created_at: now,
        },
    )
    .unwrap();
    let (mut state, _) = VaultState::create(&owner, now).unwrap();
    let (collection, entry) = state.create_collection(&owner, "scans", now).unwrap();
    state.apply(&entry).unwrap();
    let info = RecordInfo {
        content_type: "application/octet-stream".into(),
        title: "scan".into(),
        created_at: now,
        effective_at: None,
    };
    let plan = state
        .plan_record(
            &Keyring::new(&owner, now),
            &collection,
            RecordTarget::New(RecordId::random()),
            &info,
            len,
        )
        .unwrap();
    (owner, state, plan)
}

/// `read(offset, len)` over `body`, as the worker's `FileReaderSync` gives it.
fn reader(body: Vec<u8>) -> wasm_bindgen::closure::Closure<dyn Fn(f64, f64) -> js_sys::Uint8Array> {
    wasm_bindgen::closure::Closure::new(move |offset: f64, len: f64| {
        let start = (offset as usize).min(body.len());
        let end = (start + len as usize).min(body.len());
        js_sys::Uint8Array::from(&body[start..end])
    })
}

/// Progress reports of one phase, recorded from a JS callback.
struct Reports {
    done: std::rc::Rc<std::cell::RefCell<Vec<f64>>>,
    total: f64,
    callback: wasm_bindgen::closure::Closure<dyn Fn(f64, f64, String)>,
}

impl Reports {
    /// Records reports of `phase`, each against `total`.
    fn new(phase: &'static str, total: f64) -> Self {
        let done = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = done.clone();
        let callback = wasm_bindgen::closure::Closure::<dyn Fn(f64, f64, String)>::new(
            move |d: f64, t: f64, p: String| {
                assert_eq!(p, phase);
                assert_eq!(t, total);
                seen.borrow_mut().push(d);
            },
        );
        Self {
            done,
            total,
            callback,
        }
    }

    /// The callback to hand to vault-wasm.
    fn callback(&self) -> js_sys::Function {
        self.callback
            .as_ref()
            .unchecked_ref::<js_sys::Function>()
            .clone()
    }

    /// At the start, after each 4 MiB (two in 9 MB) and at the end, rising.
    fn assert_rising(&self) {
        let done = self.done.borrow();
        assert!(done.len() >= 4, "progress: {done:?}");
        assert!(done.windows(2).all(|w| w[0] <= w[1]), "progress: {done:?}");
        assert_eq!(done.last(), Some(&self.total));
    }
}

#[wasm_bindgen_test]
fn the_workers_seal_finishes_into_a_record_that_opens_on_the_page_and_in_the_worker() {
    let body: Vec<u8> = (0..9_000_000u32).map(|i| (i % 251) as u8).collect();
    let (owner, mut state, plan) = planned(body.len() as u64);
    let read = reader(body.clone());
    // Progress: "sealing" reports, rising: at the start, after each 4 MiB
    // read and at the end.
    let sealing = Reports::new("sealing", 9_000_000.0);
    let answer = vault_wasm::worker::seal_payload(
        &js_sys::Uint8Array::from(plan.job().to_bytes().as_slice()),
        read.as_ref().unchecked_ref(),
        Some(sealing.callback()),
    )
    .unwrap();
    sealing.assert_rising();
    let get = |k: &str| {
        js_sys::Reflect::get(&answer, &k.into())
            .unwrap()
            .dyn_into::<js_sys::Uint8Array>()
            .unwrap()
            .to_vec()
    };
    let (ciphertext, hash) = (get("ciphertext"), get("hash"));
    assert_eq!(ciphertext.len() as u64, plan.job().ciphertext_len());
    let mut keyring = vault_core::Keyring::new(&owner, 1_700_000_000);
    let (metadata, entry) = state
        .finish_record(&mut keyring, &plan, hash.try_into().unwrap())
        .unwrap();
    state.apply(&entry).unwrap();
    let verified = state.record(&metadata.record()).unwrap();
    let mut out = Vec::new();
    keyring
        .open(&state, &verified, ciphertext.as_slice(), &mut out)
        .unwrap();
    assert_eq!(out, body);

    // The worker's open gives the same body back; damaged bytes are refused.
    let job = js_sys::Uint8Array::from(
        keyring
            .open_job(&state, &verified)
            .unwrap()
            .to_bytes()
            .as_slice(),
    );
    // Progress: "opening" reports in ciphertext bytes, the same way (the
    // page takes a worker that reports nothing for long for stalled).
    let opening = Reports::new("opening", ciphertext.len() as f64);
    let opened = vault_wasm::worker::open_payload(
        &job,
        &js_sys::Uint8Array::from(ciphertext.as_slice()),
        Some(opening.callback()),
    )
    .unwrap();
    assert_eq!(opened.to_vec(), body);
    opening.assert_rising();
    // Opening from a spool (read from one file, the body written to
    // another, in pieces) gives the same body and the same refusals.
    let pieces = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Vec<u8>>::new()));
    let kept = pieces.clone();
    let write = wasm_bindgen::closure::Closure::<dyn Fn(js_sys::Uint8Array)>::new(
        move |bytes: js_sys::Uint8Array| kept.borrow_mut().push(bytes.to_vec()),
    );
    let spooled = reader(ciphertext.clone());
    let len = vault_wasm::worker::open_payload_from(
        &job,
        spooled.as_ref().unchecked_ref(),
        write.as_ref().unchecked_ref(),
        None,
    )
    .unwrap();
    assert_eq!(len, body.len() as f64);
    assert!(pieces.borrow().len() >= 2);
    assert_eq!(pieces.borrow().concat(), body);
    let mut tampered = ciphertext.clone();
    tampered[5_000_000] ^= 1;
    let tampered = reader(tampered);
    let e = vault_wasm::worker::open_payload_from(
        &job,
        tampered.as_ref().unchecked_ref(),
        write.as_ref().unchecked_ref(),
        None,
    )
    .unwrap_err();
    assert!(
        message(&e).starts_with("ciphertext_mismatch: "),
        "{}",
        message(&e)
    );
    // A full disk while the body is written is `storage_full`.
    let full = js_sys::Function::new_with_args(
        "bytes",
        "throw new DOMException('the quota is used up', 'QuotaExceededError')",
    );
    let e =
        vault_wasm::worker::open_payload_from(&job, spooled.as_ref().unchecked_ref(), &full, None)
            .unwrap_err();
    assert!(
        message(&e).starts_with("storage_full: ") && message(&e).contains("decrypted file"),
        "{}",
        message(&e)
    );
    let mut damaged = ciphertext.clone();
    damaged[1000] ^= 1;
    let e =
        vault_wasm::worker::open_payload(&job, &js_sys::Uint8Array::from(damaged.as_slice()), None)
            .unwrap_err();
    assert!(
        message(&e).starts_with("ciphertext_mismatch: "),
        "{}",
        message(&e)
    );
    let e =
        vault_wasm::worker::open_payload(&job, &js_sys::Uint8Array::from(&ciphertext[1..]), None)
            .unwrap_err();
    assert!(
        message(&e).starts_with("ciphertext_mismatch: "),
        "{}",
        message(&e)
    );
}

#[wasm_bindgen_test]
fn sealing_into_a_spool_writes_the_same_ciphertext_in_pieces_and_a_failed_write_is_an_error() {
    let body: Vec<u8> = (0..9_000_000u32).map(|i| (i % 241) as u8).collect();
    let (_, _, plan) = planned(body.len() as u64);
    let job = js_sys::Uint8Array::from(plan.job().to_bytes().as_slice());
    let read = reader(body.clone());
    let whole =
        vault_wasm::worker::seal_payload(&job, read.as_ref().unchecked_ref(), None).unwrap();
    let get = |k: &str| {
        js_sys::Reflect::get(&whole, &k.into())
            .unwrap()
            .dyn_into::<js_sys::Uint8Array>()
            .unwrap()
            .to_vec()
    };
    // The spool's `write(bytes)`: every piece kept, in order.
    let pieces = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Vec<u8>>::new()));
    let kept = pieces.clone();
    let write = wasm_bindgen::closure::Closure::<dyn Fn(js_sys::Uint8Array)>::new(
        move |bytes: js_sys::Uint8Array| kept.borrow_mut().push(bytes.to_vec()),
    );
    let sealing = Reports::new("sealing", 9_000_000.0);
    let hash = vault_wasm::worker::seal_payload_into(
        &job,
        read.as_ref().unchecked_ref(),
        write.as_ref().unchecked_ref(),
        Some(sealing.callback()),
    )
    .unwrap();
    sealing.assert_rising();
    assert_eq!(hash.to_vec(), get("hash"));
    let pieces = pieces.borrow();
    assert!(pieces.len() >= 2, "{} pieces", pieces.len());
    assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= 8 << 20));
    assert_eq!(pieces.concat(), get("ciphertext"));

    // A write that fails on a full disk fails the seal as `storage_full`;
    // a reader's own coded error keeps its code (vault-core sees both as
    // I/O errors).
    let full = js_sys::Function::new_with_args(
        "bytes",
        "throw new DOMException('the quota is used up', 'QuotaExceededError')",
    );
    let e = vault_wasm::worker::seal_payload_into(&job, read.as_ref().unchecked_ref(), &full, None)
        .unwrap_err();
    assert!(
        message(&e).starts_with("storage_full: the browser's storage is full"),
        "{}",
        message(&e)
    );
    let changed = js_sys::Function::new_with_args(
        "offset, len",
        "throw new Error('length_mismatch: the file changed while it was read; add it again')",
    );
    let e =
        vault_wasm::worker::seal_payload_into(&job, &changed, write.as_ref().unchecked_ref(), None)
            .unwrap_err();
    assert_eq!(
        message(&e),
        "length_mismatch: the file changed while it was read; add it again"
    );
}

#[wasm_bindgen_test]
fn the_workers_seal_refuses_a_file_that_changed_size_and_a_damaged_job() {
    let (_, _, plan) = planned(100_000);
    for len in [99_999, 100_001] {
        let read = reader(vec![1; len]);
        let e = vault_wasm::worker::seal_payload(
            &js_sys::Uint8Array::from(plan.job().to_bytes().as_slice()),
            read.as_ref().unchecked_ref(),
            None,
        )
        .unwrap_err();
        assert!(
            message(&e).starts_with("length_mismatch: "),
            "{}",
            message(&e)
        );
    }
    let read = reader(vec![1; 100_000]);
    let mut job = plan.job().to_bytes().to_vec();
    job.truncate(40);
    let e = vault_wasm::worker::seal_payload(
        &js_sys::Uint8Array::from(job.as_slice()),
        read.as_ref().unchecked_ref(),
        None,
    )
    .unwrap_err();
    assert!(message(&e).starts_with("malformed: "), "{}", message(&e));
}
