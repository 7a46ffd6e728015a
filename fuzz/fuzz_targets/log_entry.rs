//! Feeds a vault log entry (`docs/format.md` §8.1) to `LogEntry::from_bytes`,
//! then applies what parses to a copy of the fixture vault's state after
//! genesis and after its whole log (`VaultState::apply`, §8.2), and tries it
//! as a genesis entry (`VaultState::from_genesis`). A version-2 entry is
//! also redacted (`LogEntry::redacted`, §8.1), which must keep its hash,
//! and applied as a member sees the log (`VaultState::set_viewer`, §8.8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::{LogEntry, VaultState};

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = LogEntry::from_bytes(data) else {
        return;
    };
    assert_eq!(entry.to_bytes(), data);
    let _ = entry.body().kind_name();
    if let Some(redacted) = entry.redacted() {
        assert_eq!(redacted.hash(), entry.hash());
        assert!(redacted.is_redacted());
    }
    let f = vault_fuzz_fixture::fixture();
    let _ = VaultState::from_genesis(&entry);
    for state in [&f.genesis_state, &f.state] {
        let mut s = state.clone();
        if s.apply(&entry).is_ok() {
            let _ = (s.head(), s.collections(), s.records(None));
        }
        let mut member = state.clone();
        member.set_viewer(entry.author(), entry.time());
        if member.apply(&entry).is_ok() {
            let _ = (member.head(), member.collections(), member.records(None));
        }
    }
});
