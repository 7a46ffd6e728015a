//! The unlock agent: one passphrase (one scrypt) per session instead of
//! one per command, in the manner of `ssh-agent`.
//!
//! `vault unlock` opens the key file, then starts a small process (this
//! binary, `vault agent-serve`) that holds the unlocked identity in memory
//! and answers on a Unix socket in the profile's data directory. Later
//! commands of the same profile ask it for the identity instead of asking
//! for the passphrase. Guarantees:
//! - **Only the same user.** The socket is created owner-only (umask 0177
//!   before `bind`), and the agent answers only peers whose kernel-reported
//!   uid (`SO_PEERCRED`) is its own. As with ssh-agent, any process running
//!   as that user can use it while it is unlocked.
//! - **Nothing secret on disk.** The identity reaches the agent through a
//!   pipe (never argv or the environment), lives in zeroizing buffers, and
//!   the agent marks itself non-dumpable (no core file, no ptrace by other
//!   processes of the user on Linux).
//! - **Forgets.** After the idle timeout without a request, on `vault lock`,
//!   or when its socket disappears, the agent wipes the identity and exits.
//! - **Optional.** Without an agent, or when it does not answer, every
//!   command asks for the passphrase exactly as before; an agent holding a
//!   different identity than the profile's is ignored with a warning.
//!
//! Protocol: one request per connection, a line `get`, `status` or `lock`;
//! the answer to `get` is the key file's plaintext (`docs/format.md` §4.2),
//! to `status` a line `unlocked <fingerprint-hex> <idle-seconds-left>`, to
//! `lock` a line `locked`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vault_core::{Fingerprint, SecretIdentity};
use zeroize::Zeroizing;

use crate::error::{CliError, Result};

/// The socket's file name in the profile's data directory.
pub const SOCKET_NAME: &str = "agent.sock";
/// Default idle timeout.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(15 * 60);
/// Shortest and longest idle timeouts accepted.
pub const IDLE_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));
/// How long a command waits for the agent before asking for the passphrase.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read from an agent (the §4.2 plaintext is at most 4096).
const MAX_ANSWER: u64 = 4096;
/// Unix socket paths are limited to about 108 bytes.
const MAX_SOCKET_PATH: usize = 100;

/// The agent socket of the profile whose data directory is `data_dir`.
pub fn socket_path(data_dir: &Path) -> Result<PathBuf> {
    let path = data_dir.join(SOCKET_NAME);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(CliError::Usage(format!(
            "the agent's socket path {} is longer than Unix sockets allow ({MAX_SOCKET_PATH} bytes); use a shorter VAULT_HOME",
            path.display()
        )));
    }
    Ok(path)
}

/// Parses `--idle`: `90s`, `15min` or `2h`, between one second and a day.
pub fn parse_idle(s: &str) -> Result<Duration> {
    parse_span("--idle", s, IDLE_RANGE)
}

/// Parses the duration flag `flag`: `90s`, `15min` or `2h`, within
/// `range` (the message names the flag and the forms).
pub fn parse_span(flag: &str, s: &str, range: (Duration, Duration)) -> Result<Duration> {
    let bad = || {
        CliError::Usage(format!(
            "{flag} {s:?}: use a duration like 90s, 15min or 2h (at most 24h)"
        ))
    };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "min" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    let d = Duration::from_secs(n.checked_mul(unit).ok_or_else(bad)?);
    if d < range.0 || d > range.1 {
        return Err(bad());
    }
    Ok(d)
}

/// What an agent said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The identity it holds.
    pub fingerprint: Fingerprint,
    /// Seconds until it forgets the identity unless used.
    pub idle_left: u64,
}

fn connect(socket: &Path) -> Option<UnixStream> {
    let stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).ok()?;
    Some(stream)
}

fn ask(socket: &Path, request: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut stream = connect(socket)?;
    stream.write_all(request.as_bytes()).ok()?;
    stream.write_all(b"\n").ok()?;
    let mut answer = Zeroizing::new(Vec::new());
    stream.take(MAX_ANSWER + 1).read_to_end(&mut answer).ok()?;
    (answer.len() as u64 <= MAX_ANSWER).then_some(answer)
}

/// The identity held by the agent at `socket`, if one answers and holds
/// `expected`; `None` otherwise (ask for the passphrase). An agent holding
/// another identity is reported through `warn` and ignored.
pub fn fetch(
    socket: &Path,
    expected: &Fingerprint,
    warn: impl FnOnce(String),
) -> Option<SecretIdentity> {
    if !socket.exists() {
        return None;
    }
    let answer = ask(socket, "get")?;
    let secret = vault_core::keyfile::from_unsealed(&answer).ok()?;
    if secret.fingerprint() != *expected {
        warn(format!(
            "warning: the agent at {} holds another identity than this profile's; ignoring it (run `vault lock`, then `vault unlock`)",
            socket.display()
        ));
        return None;
    }
    Some(secret)
}

/// The status of the agent at `socket`, if one answers.
pub fn status(socket: &Path) -> Option<Status> {
    let answer = ask(socket, "status")?;
    let text = std::str::from_utf8(&answer).ok()?;
    let mut words = text.trim_end().split(' ');
    if words.next()? != "unlocked" {
        return None;
    }
    let fingerprint = Fingerprint::from_hex(words.next()?).ok()?;
    let idle_left = words.next()?.parse().ok()?;
    Some(Status {
        fingerprint,
        idle_left,
    })
}

/// Tells the agent at `socket` to forget the identity and exit. Returns
/// whether one was running. A socket nobody answers on is removed.
pub fn lock(socket: &Path) -> Result<bool> {
    if !socket.exists() {
        return Ok(false);
    }
    let locked = ask(socket, "lock").is_some_and(|a| a.as_slice() == b"locked\n");
    if !locked {
        // A stale socket (the agent died): nothing holds the key.
        std::fs::remove_file(socket)
            .or_else(ignore_missing)
            .map_err(|e| CliError::file(socket, e))?;
        return Ok(false);
    }
    Ok(true)
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Starts an agent for `secret` at `socket` (this binary, detached from
/// the terminal's process group so Ctrl-C in the shell does not stop it),
/// and waits until it answers. The identity goes through the child's
/// standard input.
pub fn start(socket: &Path, secret: &SecretIdentity, idle: Duration) -> Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(|e| {
        CliError::Usage(format!(
            "cannot find the vault program to start the agent: {e}"
        ))
    })?;
    let mut child = Command::new(exe)
        .arg("agent-serve")
        .arg("--socket")
        .arg(socket)
        .arg("--idle-seconds")
        .arg(idle.as_secs().to_string())
        .env_remove(crate::passphrase::ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| CliError::Usage(format!("cannot start the agent: {e}")))?;
    {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| CliError::Usage("cannot start the agent: no pipe".into()))?;
        let plain = vault_core::keyfile::unsealed(secret);
        stdin
            .write_all(plain.as_bytes())
            .map_err(|e| CliError::Usage(format!("cannot hand the key to the agent: {e}")))?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if status(socket).is_some_and(|s| s.fingerprint == secret.fingerprint()) {
            return Ok(());
        }
        if let Ok(Some(code)) = child.try_wait() {
            return Err(CliError::Usage(format!(
                "the agent stopped at once ({code}); check that {} is writable",
                socket.display()
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(CliError::Usage(
                "the agent did not start within 5 seconds".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The agent process (`vault agent-serve`): reads the identity from
/// standard input, serves it at `socket` until idle for `idle`, locked, or
/// its socket is removed, then wipes it and returns.
pub fn serve(socket: &Path, idle: Duration) -> Result<()> {
    harden();
    let mut plain = Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(MAX_ANSWER + 1)
        .read_to_end(&mut plain)
        .map_err(|e| CliError::Usage(format!("the agent could not read the key: {e}")))?;
    let secret = vault_core::keyfile::from_unsealed(&plain)?;
    let fingerprint = secret.fingerprint();
    drop(secret);
    // Owner-only from the start: no window where the socket is open to
    // others.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let _ = std::fs::remove_file(socket);
    let bound = UnixListener::bind(socket);
    rustix::process::umask(old);
    let listener = bound.map_err(|e| CliError::file(socket, e))?;
    let held = Arc::new(Mutex::new(Some(plain)));
    let last_use = Arc::new(Mutex::new(Instant::now()));
    let me = rustix::process::getuid();
    {
        // The watchdog: forgets the key once idle or when the socket is
        // gone (another agent replaced it, or the profile was removed).
        let held = held.clone();
        let last_use = last_use.clone();
        let socket = socket.to_path_buf();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let idle_for = last_use.lock().map(|t| t.elapsed()).unwrap_or(idle);
            if idle_for >= idle || !socket.exists() {
                forget(&held);
                let _ = std::fs::remove_file(&socket);
                std::process::exit(0);
            }
        });
    }
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let same_user = rustix::net::sockopt::socket_peercred(&stream).is_ok_and(|c| c.uid == me);
        if !same_user {
            continue;
        }
        let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
        let mut line = String::new();
        if BufReader::new((&stream).take(16))
            .read_line(&mut line)
            .is_err()
        {
            continue;
        }
        match line.trim_end() {
            "get" => {
                if let Ok(mut t) = last_use.lock() {
                    *t = Instant::now();
                }
                if let Ok(guard) = held.lock() {
                    if let Some(plain) = guard.as_ref() {
                        let _ = stream.write_all(plain);
                    }
                }
            }
            "status" => {
                let left = last_use
                    .lock()
                    .map(|t| idle.saturating_sub(t.elapsed()).as_secs())
                    .unwrap_or(0);
                let _ = writeln!(stream, "unlocked {} {left}", fingerprint.to_hex());
            }
            "lock" => {
                forget(&held);
                let _ = std::fs::remove_file(socket);
                let _ = stream.write_all(b"locked\n");
                return Ok(());
            }
            _ => {}
        }
    }
    forget(&held);
    Ok(())
}

/// Wipes the held plaintext.
fn forget(held: &Mutex<Option<Zeroizing<Vec<u8>>>>) {
    if let Ok(mut guard) = held.lock() {
        guard.take();
    }
}

/// No core dumps of the agent, and no ptrace from other processes of the
/// user (Linux); elsewhere a no-op.
fn harden() {
    #[cfg(target_os = "linux")]
    {
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_durations() {
        assert_eq!(parse_idle("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_idle("15min").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_idle("2h").unwrap(), Duration::from_secs(7200));
        for bad in ["", "0s", "25h", "15m", "h", "-1s", "99999999999999999999h"] {
            assert!(parse_idle(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn long_socket_paths_are_refused() {
        let long = PathBuf::from(format!("/tmp/{}", "d".repeat(120)));
        assert!(socket_path(&long).is_err());
        assert!(socket_path(Path::new("/tmp/p")).is_ok());
    }
}
