//! A relay that admits new identities by invitation, with the real `vault`
//! command: without the token its identity is refused with a message that
//! says what to do; with `--invite` (or `VAULT_INVITE`) it is published.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use vault_tests::{CliProfile, RelayProcess};

#[test]
fn a_relay_that_requires_invitations_admits_only_invited_identities() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("invites");
    std::fs::write(&tokens, "# one per line\nwelcome-to-st-elsewhere-2026\n").unwrap();
    let relay = RelayProcess::start(
        &dir.path().join("relay"),
        &["--invite-tokens-file", tokens.to_str().unwrap()],
    );
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    patient.init("Pat Example", "patient");

    let refused = patient.refused(&["create"]);
    assert_eq!(refused.code, "invite_required", "{refused:?}");
    assert!(refused.message.contains("invit"), "{refused:?}");

    let wrong = patient.refused(&["--invite", "welcome-to-st-elsewhere-2025", "create"]);
    assert_eq!(wrong.code, "invite_required", "{wrong:?}");

    let created = patient.json(&["--invite", "welcome-to-st-elsewhere-2026", "create"]);
    assert!(created["vault"].as_str().is_some(), "{created}");
    // Once published, the identity needs no token any more.
    patient.json(&["vaults"]);
}
