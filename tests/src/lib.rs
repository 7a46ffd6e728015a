//! Cross-crate end-to-end tests for vault. The tests are in `tests/`; this
//! library holds what they share: starting the real `relay-server` binary on
//! an ephemeral loopback port with a temporary data directory, killing and
//! restarting it, and making principals and clients.
#![forbid(unsafe_code)]
// Test support: failing loudly, with the reason, is what it is for.
#![allow(clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_client::{RelayClient, RetryPolicy};
use vault_core::{IdentityInfo, Role, SecretIdentity};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A principal from a fixed seed (fast; no key-file scrypt).
pub fn principal(seed: u8, name: &str, role: Role) -> Arc<SecretIdentity> {
    let id = SecretIdentity::from_seed(
        &[seed; 32],
        &IdentityInfo {
            display_name: name.into(),
            role,
            registration: None,
            created_at: now().saturating_sub(1000),
        },
    );
    Arc::new(id.unwrap_or_else(|e| panic!("identity: {e}")))
}

/// Where cargo put the `relay-server` binary of this build.
pub fn relay_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>/relay-server
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir.join(format!("relay-server{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        panic!(
            "{} is missing: build it first (`cargo build -p relay-server`, or run the whole suite with `cargo test --workspace`)",
            bin.display()
        );
    }
    bin
}

/// A running `relay-server` process.
pub struct RelayProcess {
    child: Child,
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    args: Vec<String>,
}

impl RelayProcess {
    /// Starts the relay on an ephemeral port with `data_dir` and extra
    /// arguments, and waits until it listens.
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        Self::spawn(
            data_dir,
            args.iter().map(|s| s.to_string()).collect(),
            "127.0.0.1:0",
        )
    }

    fn spawn(data_dir: &Path, args: Vec<String>, listen: &str) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"));
        let stderr = match log {
            Ok(f) => Stdio::from(f),
            Err(_) => Stdio::null(),
        };
        let mut child = Command::new(relay_binary())
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(&args)
            .env("RELAY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start relay-server: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut reader = BufReader::new(stdout);
        while !line.contains("listening on") {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "relay-server did not start (see {})",
                    data_dir.with_extension("log").display()
                );
            }
        }
        let url = line
            .split("listening on ")
            .nth(1)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            args,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to flush or finish anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Starts a new process on the same data directory, port and arguments.
    pub fn restart(&mut self) {
        let listen = self.url.trim_start_matches("http://").to_string();
        let next = Self::spawn(&self.data_dir, self.args.clone(), &listen);
        *self = next;
    }

    /// Peak resident memory of the process so far, in bytes (Linux).
    pub fn peak_rss(&self) -> Option<u64> {
        peak_rss_of(&format!("/proc/{}/status", self.pid()))
    }

    /// A client for `who`, with a short retry policy.
    pub fn client(&self, who: &Arc<SecretIdentity>) -> RelayClient {
        RelayClient::new(&self.url, who.clone())
            .unwrap_or_else(|e| panic!("client: {e}"))
            .with_retry_policy(RetryPolicy::with_attempts(3))
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory (VmHWM) from a `/proc/<pid>/status` file, bytes.
pub fn peak_rss_of(status_file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_file).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
