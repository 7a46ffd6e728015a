//! Opens the fixture vault's live, verified record (`Keyring::open`) with
//! attacker-supplied payload bytes. Selector byte 0: the rest is the
//! ciphertext as is (it must fail authentication or the hash check).
//! Selector 1: the rest is a plaintext, encrypted here under the record's
//! payload key as any reader of the record could (`docs/format.md` §6.3),
//! so the inner header parser (§6.1), the context check and the padding
//! check run on it before the signed hash refuses the forgery. Selector 2:
//! as 1, after the fixed prefix of a well-formed header (version, vault,
//! collection, record, version, author), which a fuzzer cannot guess.
//! Plaintexts are cut or zero-padded to the record's padded length, or
//! kept as they are when the second byte is odd (length mismatches).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::{Error, Keyring};
use vault_fuzz_fixture::{fixture, owner, NOW};

thread_local! {
    /// The owner's keyring, kept so its collection keys are opened once.
    static KEYRING: std::cell::RefCell<Keyring<'static>> =
        std::cell::RefCell::new(Keyring::new(owner(), NOW));
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if rest.len() > 4 * 65_536 {
        return;
    }
    let f = fixture();
    let ciphertext = match selector % 3 {
        0 => rest.to_vec(),
        mode => {
            let mut plain = if mode == 2 {
                f.header_prefix()
            } else {
                Vec::new()
            };
            plain.extend_from_slice(rest);
            if rest.get(0).is_none_or(|b| b % 2 == 0) {
                plain.resize(f.padded_len(), 0);
            }
            f.seal_payload(&plain)
        }
    };
    let record = f.state.record(&f.record).expect("fixture record");
    let mut out = Vec::new();
    let result = KEYRING.with_borrow_mut(|k| k.open(&f.state, &record, &ciphertext[..], &mut out));
    match result {
        Ok(opened) => {
            // Only the author's own bytes may open.
            assert_eq!(
                ciphertext, f.ciphertext,
                "a forged payload opened: {opened:?}"
            );
        }
        Err(Error::Io(_)) => panic!("I/O error from in-memory buffers"),
        Err(_) => {}
    }
});
