//! Feeds checkpoints (`docs/format.md` §9): selector byte 0 gives the rest
//! to `Checkpoint::from_bytes` and checks what parses against the fixture
//! vault (`check_persisted`); selector 1 gives the rest, as UTF-8, to
//! `Checkpoint::parse_code` and `VaultState::compare_checkpoint_code`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let state = &vault_fuzz_fixture::fixture().state;
    match selector % 2 {
        0 => {
            if let Ok(c) = Checkpoint::from_bytes(rest) {
                assert_eq!(c.to_bytes(), rest);
                let _ = Checkpoint::parse_code(&c.code()).expect("own code parses");
                let _ = state.check_persisted(&c);
                let _ = state.check_remote_head(c.seq);
            }
        }
        _ => {
            if let Ok(code) = std::str::from_utf8(rest) {
                let _ = Checkpoint::parse_code(code);
                let _ = state.compare_checkpoint_code(code);
            }
        }
    }
});
