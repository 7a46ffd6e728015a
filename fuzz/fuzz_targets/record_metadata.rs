//! Feeds record metadata (`docs/format.md` §6.4, what the relay sees of a
//! record) to `RecordMetadata::from_bytes`, then offers anything that parses
//! to the fixture vault's `VaultState::check_offered_metadata`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::RecordMetadata;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = RecordMetadata::from_bytes(data) {
        assert_eq!(m.to_bytes(), data);
        let _ = m.ciphertext_len();
        let _ = vault_fuzz_fixture::fixture()
            .state
            .check_offered_metadata(&m);
    }
});
