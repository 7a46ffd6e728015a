//! `vault`: the command-line client for patients and clinicians.
//!
//! This is a skeleton: the commands (identity, vaults, records, sharing,
//! sync) arrive with the CLI issue, on top of vault-core and the relay. It
//! parses `--help` and `--version` and says so plainly for anything else.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// vault: your end-to-end encrypted health records.
///
/// No commands are available in this build yet: identity, vault, record,
/// sharing and sync commands arrive with the CLI release.
#[derive(Debug, Parser)]
#[command(name = "vault", version, about, long_about)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("vault: no commands are available in this build yet; see `vault --help`");
    ExitCode::from(2)
}
