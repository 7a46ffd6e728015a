//! Snapshot tests of the `vault` command line: help texts and the main
//! error messages with their exit codes. The cases live in `tests/cmd/`;
//! regenerate them with `TRYCMD=overwrite cargo test -p vault-cli --test cli`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[test]
fn cli_snapshots() {
    // The user's own profile, relay and passphrase must never leak into the
    // cases: `.toml` cases also list them in `env.remove`, but `.trycmd`
    // stories cannot, so they are removed from this process (inherited by
    // every command). Only this test runs in this binary.
    for var in ["VAULT_HOME", "VAULT_RELAY", "VAULT_PASSPHRASE"] {
        std::env::remove_var(var);
    }
    trycmd::TestCases::new()
        .register_bin(
            "vault",
            std::path::PathBuf::from(env!("CARGO_BIN_EXE_vault")),
        )
        // Help is wrapped to the terminal width (clap's `wrap_help`): fix it.
        .env("COLUMNS", "100")
        // No colours, whatever the user's terminal settings.
        .env("NO_COLOR", "1")
        .env("CLICOLOR_FORCE", "0")
        // The "relay unreachable" cases must not go through a proxy.
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .case("tests/cmd/*.toml")
        .case("tests/cmd/*.trycmd");
}
