//! The `vault` command: see `vault --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vault_cli::main()
}
