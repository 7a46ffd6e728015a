//! Feeds a public identity document (`docs/format.md` §3) to
//! `PublicIdentity::from_bytes`, and the same bytes, when UTF-8, to
//! `PublicIdentity::from_text` (the `vault-id1…` text form); a parsed
//! document must re-encode to the same bytes and fingerprint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::PublicIdentity;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = PublicIdentity::from_bytes(data) {
        assert_eq!(id.to_bytes(), data);
        let again = PublicIdentity::from_text(&id.to_text()).expect("text round trip");
        assert_eq!(again.fingerprint(), id.fingerprint());
        let _ = (id.age_recipient(), id.fingerprint().digit_groups());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = PublicIdentity::from_text(text) {
            let _ = id.display_name();
        }
    }
});
