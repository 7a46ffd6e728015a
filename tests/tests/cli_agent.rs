//! The unlock agent through the real `vault` binary: after `vault unlock`,
//! commands need no passphrase; `vault lock` and the idle timeout make them
//! ask again; the socket is owner-only; no secret reaches the profile's
//! files, the agent's command line or its environment; an agent holding
//! another identity is ignored.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use vault_tests::{files_below, CliProfile, RelayProcess};

/// Locks the profiles' agents even when an assertion fails, so no agent
/// outlives the test.
struct LockOnDrop(Vec<CliProfile>);

impl Drop for LockOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = p.run(&["lock"]);
        }
    }
}

/// A profile that knows no passphrase (a command that needs the identity
/// must get it from the agent, or fail with exit code 3).
fn without_passphrase(p: &CliProfile) -> CliProfile {
    let mut q = p.clone();
    q.passphrase = "not-the-passphrase".into();
    q
}

fn wait_gone(path: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !path.exists()
}

/// Every process whose command line names `needle`, as (cmdline, environ).
fn processes_naming(needle: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            let environ = std::fs::read(dir.join("environ"))
                .map(|e| String::from_utf8_lossy(&e).replace('\0', "\n"))
                .unwrap_or_default();
            found.push((cmdline, environ));
        }
    }
    found
}

#[test]
fn unlock_once_then_lock_and_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let alice = CliProfile::new(&dir.path().join("a"), &relay.url);
    let bob = CliProfile::new(&dir.path().join("b"), &relay.url);
    let _guard = LockOnDrop(vec![alice.clone(), bob.clone()]);
    alice.init("Alice", "patient");
    bob.init("Bob", "clinician");
    let alice_locked = without_passphrase(&alice);
    let socket = alice.home.join("agent.sock");

    // Without an agent, a command needing the identity asks for the
    // passphrase, exactly as before.
    alice_locked.fails(3, &["create"]);

    let unlocked = alice.json(&["unlock", "--idle", "60s"]);
    assert_eq!(unlocked["unlocked"], true);
    assert_eq!(unlocked["already"], false);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the agent socket must be owner-only");

    // Now commands need no passphrase.
    let created = alice_locked.json(&["create"]);
    let vault = created["vault"].as_str().unwrap().to_owned();
    let note = dir.path().join("note.txt");
    std::fs::write(&note, "blood pressure 120/80").unwrap();
    alice_locked.ok(&["add", note.to_str().unwrap(), "--collection", "notes"]);
    let listed = alice_locked.json(&["list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let again = alice_locked.json(&["unlock"]);
    assert_eq!(again["already"], true);

    // Nothing secret in the profile's files, the agent's command line or
    // its environment.
    for entry in files_below(&alice.home) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("AGE-SECRET-KEY-") && !text.contains("# ed25519: "),
            "{} holds secret key material",
            entry.display()
        );
    }
    let agents = processes_naming(&socket.display().to_string());
    assert!(!agents.is_empty(), "no agent process found");
    for (cmdline, environ) in &agents {
        assert!(!cmdline.contains(&alice.passphrase), "{cmdline}");
        assert!(
            !environ.contains("VAULT_PASSPHRASE"),
            "{cmdline}: {environ}"
        );
    }

    // `vault lock` forgets: commands ask for the passphrase again.
    let locked = alice.json(&["lock"]);
    assert_eq!(locked["agent_was_running"], true);
    assert!(wait_gone(&socket, Duration::from_secs(5)));
    alice_locked.fails(3, &["--vault", &vault, "list"]);
    assert_eq!(alice.json(&["lock"])["agent_was_running"], false);

    // The idle timeout forgets too.
    alice.ok(&["unlock", "--idle", "1s"]);
    alice_locked.ok(&["--vault", &vault, "list"]);
    assert!(
        wait_gone(&socket, Duration::from_secs(10)),
        "the agent outlived its idle timeout"
    );
    alice_locked.fails(3, &["--vault", &vault, "list"]);

    // An agent holding another identity is ignored, with a warning.
    bob.ok(&["unlock", "--idle", "60s"]);
    std::os::unix::fs::symlink(bob.home.join("agent.sock"), &socket).unwrap();
    let refused = alice_locked.fails(3, &["--vault", &vault, "list"]);
    assert!(refused.contains("another identity"), "{refused}");
    std::fs::remove_file(&socket).unwrap();
    assert_eq!(bob.json(&["lock"])["agent_was_running"], true);
}
