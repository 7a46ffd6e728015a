//! The `vault` command line for patients and clinicians: identities,
//! contacts with pinned keys, vaults, FHIR import, sharing, revocation,
//! export and verification, over vault-core and the sync client.
//!
//! The binary is a thin wrapper over [`main`]; the modules are public so
//! the end-to-end tests and benches can drive the same code.
#![forbid(unsafe_code)]

#[cfg(unix)]
pub mod agent;
pub mod cli;
pub mod commands;
pub mod contacts;
pub mod error;
pub mod gateway;
pub mod home;
pub mod output;
pub mod passphrase;
pub mod records;
pub mod session;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::error::CliError;
use crate::output::Output;

/// Parses the command line, runs the command and returns its exit code.
/// Errors are printed on stderr (as JSON with `--json`).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                error::exit::USAGE
            } else {
                0
            });
        }
    };
    let out = Output {
        json: cli.global.json,
        quiet: cli.global.quiet,
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&out, &e);
            ExitCode::from(e.exit_code())
        }
    }
}

fn report(out: &Output, e: &CliError) {
    if out.json {
        let v = serde_json::json!({ "error": { "code": e.code(), "message": e.to_string() } });
        eprintln!("{v}");
    } else {
        eprintln!("error: {e}");
        // The underlying causes (a refused connection, a DNS failure...),
        // when the message does not already say them.
        let mut source = std::error::Error::source(e);
        let mut shown = e.to_string();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !shown.contains(&text) {
                eprintln!("  caused by: {text}");
                shown.push_str(&text);
            }
            source = cause.source();
        }
    }
}
