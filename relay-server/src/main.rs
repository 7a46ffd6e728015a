//! `relay-server`: serve, back up or restore a vault relay.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use relay_server::config::{Cli, Command, Config, LogFormat};
use relay_server::{backup, server, Relay};
use tracing_subscriber::EnvFilter;

/// mimalloc: an append costs about 5% less CPU than with the system
/// allocator (decision 61; `benches/append_cpu.rs` allocates with it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether text logs may carry colour: only on a terminal, and not when
/// `NO_COLOR` is set (logs written to a file or a pipe stay plain text).
fn log_colours(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_logs(config: &Config) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let colours = log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    // Before the relay allocates much (see the function); where it cannot
    // be done, the relay runs as it would have.
    let _ = relay_server::process::without_huge_pages();
    let cli = Cli::parse();
    let config = match Config::resolve(&cli.serve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relay-server: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if !matches!(command, Command::Serve) && !config.storage.is_embedded() {
        return backup_postgres(&config, command);
    }
    match command {
        Command::Serve => serve(config),
        Command::Backup { output } => match backup::backup(&config.data_dir, &output) {
            Ok(s) => {
                println!(
                    "backup written to {}: {} vaults, {} log entries, {} blobs ({} bytes); it holds ciphertext only",
                    output.display(),
                    s.vaults,
                    s.entries,
                    s.blobs,
                    s.blob_bytes
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("relay-server backup: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Restore { input } => match backup::restore(&input, &config.data_dir) {
            Ok(s) => {
                println!(
                    "restored into {}: {} vaults, {} log entries, {} blobs, every log and blob verified",
                    config.data_dir.display(),
                    s.vaults,
                    s.entries,
                    s.blobs
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("relay-server restore: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `backup` and `restore` of a relay on PostgreSQL (decision 54).
#[cfg(feature = "postgres")]
fn backup_postgres(config: &Config, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Serve => ExitCode::FAILURE,
        Command::Backup { output } => {
            match runtime.block_on(relay_server::backup_pg::backup(config, &output)) {
                Ok(s) => {
                    println!(
                        "backup written to {}: {} vaults, {} log entries, {} blobs ({} bytes), one consistent snapshot; it holds ciphertext only",
                        output.display(),
                        s.vaults,
                        s.entries,
                        s.blobs,
                        s.blob_bytes
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("relay-server backup: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Restore { input } => {
            match runtime.block_on(relay_server::backup_pg::restore(config, &input)) {
                Ok(s) => {
                    println!(
                        "restored: {} vaults, {} log entries, {} blobs, every log and blob verified; start the relays",
                        s.vaults, s.entries, s.blobs
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("relay-server restore: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(not(feature = "postgres"))]
fn backup_postgres(_config: &Config, _command: Command) -> ExitCode {
    eprintln!(
        "relay-server: this build has no PostgreSQL support (feature postgres); backup and restore of the embedded storage need neither --database nor --blobs"
    );
    ExitCode::from(2)
}

fn serve(config: Config) -> ExitCode {
    init_logs(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut config = config;
        let listen = config.listen;
        let data_dir = config.data_dir.clone();
        let web_dir = config.web_dir.clone();
        let admin_listen = config.admin_listen;
        // Bind first: with port 0 the loopback origins accepted in signed
        // requests are those of the port chosen here.
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "relay-server: cannot listen on {listen}: {e} (choose another with --listen)"
                );
                return ExitCode::FAILURE;
            }
        };
        config.listen = listener.local_addr().unwrap_or(listen);
        let origins: Vec<String> = config.relay_origins().iter().map(|o| o.to_string()).collect();
        tracing::info!(origins = %origins.join(", "), "accepting requests signed for these relay origins");
        let relay = match Relay::connect(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("relay-server: {e}");
                return ExitCode::FAILURE;
            }
        };
        let admin_router = relay.admin_router();
        let addr = listener.local_addr().unwrap_or(listen);
        tracing::info!(%addr, data_dir = %data_dir.display(), storage = %relay.storage, "relay listening");
        // SIGTERM is caught from here on (see `shutdown_signal`).
        let shutdown = server::shutdown_signal();
        let admin = match admin_listen {
            None => None,
            Some(at) => match tokio::net::TcpListener::bind(at).await {
                Ok(l) => {
                    let addr = l.local_addr().unwrap_or(at);
                    println!("relay-server admin (metrics) on http://{addr}/metrics");
                    Some(tokio::spawn(async move {
                        axum::serve(l, admin_router).await
                    }))
                }
                Err(e) => {
                    eprintln!(
                        "relay-server: cannot listen on the admin address {at}: {e} (choose another with --admin-listen)"
                    );
                    return ExitCode::FAILURE;
                }
            },
        };
        // A machine-readable line for scripts and tests.
        println!("relay-server listening on http://{addr}");
        match web_dir.map(|d| (std::fs::read(d.join("index.html")), d)) {
            Some((Ok(index), _)) => {
                use sha2::Digest;
                println!(
                    "patient web app: open http://{addr}/ in a browser (bundle hash {})",
                    hex::encode(sha2::Sha256::digest(&index))
                );
            }
            Some((Err(_), dir)) => eprintln!(
                "relay-server: warning: {} has no readable index.html (build the web app with scripts/build-web)",
                dir.display()
            ),
            None => {}
        }
        let served = relay.serve(listener, shutdown).await;
        if let Some(admin) = admin {
            admin.abort();
        }
        match served {
            Ok(()) => {
                tracing::info!("relay stopped cleanly");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("relay-server: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::log_colours;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(!log_colours(false, None));
        assert!(!log_colours(true, Some("1".into())));
        assert!(log_colours(true, Some("".into())));
    }
}
