//! Feeds a secret key file (`docs/format.md` §4: a passphrase age file) to
//! `vault_core::keyfile::open` with the fixture passphrase. A file that gets
//! past the age header costs an scrypt run (work factor 15 to 20), so this
//! target is slow (about 170 executions per second) and run with a larger
//! `-timeout`; inputs are capped at 8 KiB.
//!
//! Found by this target: work factors 21 and 22, which §4.1 allowed, made
//! scrypt allocate 2 and 4 GiB (`128 · r · N`) in one go; the maximum is
//! now 20, refused before any allocation
//! (`fuzz/regressions/keyfile/work-factor-22`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

fuzz_target!(|data: &[u8]| {
    if data.len() > 8192 {
        return;
    }
    let pass = SecretString::from(vault_fuzz_fixture::PASSPHRASE);
    if let Ok(id) = vault_core::keyfile::open(data, &pass) {
        let _ = id.fingerprint();
    }
});
