//! Feeds a grant (`docs/format.md` §7) to `Grant::from_bytes`, then
//! `Grant::verify` against the fixture vault's owner and, for the member it
//! names when that is the fixture member, `open_collection_key` (an age
//! decryption of the attacker's age file, reached only with a valid owner
//! signature, so in practice only by seeds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::Grant;
use vault_fuzz_fixture::{member, owner, NOW};

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Grant::from_bytes(data) else {
        return;
    };
    assert_eq!(g.to_bytes(), data);
    let _ = (g.scope(), g.is_valid_at(NOW), g.age_file().len());
    if let Ok(v) = g.verify(owner().public()) {
        for me in [owner(), member()] {
            if v.member() == me.fingerprint() {
                let _ = v.open_collection_key(me);
            }
        }
    }
});
