//! `relay-server`: the blind relay that stores and routes vault ciphertext.
//!
//! This is a skeleton: the server (HTTP API, embedded SQLite, signed
//! requests, sync) arrives with the relay issue. It parses `--help` and
//! `--version` and refuses to pretend to serve anything.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// The vault blind relay.
///
/// Not functional in this build: the server arrives with the relay release.
#[derive(Debug, Parser)]
#[command(name = "relay-server", version, about, long_about)]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    eprintln!("relay-server: the relay is not implemented in this build yet; nothing was started");
    ExitCode::from(2)
}
