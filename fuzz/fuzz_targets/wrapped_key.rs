//! Feeds a wrapped data key (`docs/format.md` §5.2) to
//! `WrappedDataKey::from_bytes`; a parsed key must re-encode to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::WrappedDataKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = WrappedDataKey::from_bytes(data) {
        assert_eq!(k.to_bytes(), data);
    }
});
