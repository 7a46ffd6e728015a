//! Cross-crate end-to-end tests for vault. The tests are in `tests/`; this
//! library holds what they share: starting the real `relay-server` binary on
//! an ephemeral loopback port with a temporary data directory, killing and
//! restarting it, and making principals and clients.
#![forbid(unsafe_code)]
// Test support: failing loudly, with the reason, is what it is for.
#![allow(clippy::panic)]

pub mod cluster;
pub mod forge;
pub mod proxy;
pub mod sekmet;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_client::{RelayClient, RetryPolicy};
use vault_core::{IdentityInfo, PublicIdentity, Role, SecretIdentity};

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
    workspace_binary("relay-server", "relay-server")
}

/// Runs `relay-server --data-dir DIR ARGS…` (an offline command such as
/// `backup` or `restore`); panics with its error output if it fails.
pub fn relay_tool(data_dir: &Path, args: &[&str]) {
    let out = Command::new(relay_binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("relay-server {args:?}: {e}"));
    assert!(
        out.status.success(),
        "relay-server {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A patient "Pat Example" with a vault and a clinician "Dr Dee", each a
/// `vault` profile under `dir` on `relay`, who have added each other as
/// contacts by fingerprint (the patient names the clinician "dr", the
/// clinician the patient "pat"). Nothing is shared yet.
pub fn patient_and_clinician(dir: &Path, relay: &str) -> (CliProfile, CliProfile) {
    let patient = CliProfile::new(&dir.join("patient"), relay);
    let doc = CliProfile::new(&dir.join("doc"), relay);
    let p_fp = fingerprint_in(&patient.init("Pat Example", "patient"));
    patient.json(&["create"]);
    let d_fp = fingerprint_in(&doc.init("Dr Dee", "clinician"));
    doc.ok(&["whoami", "--publish", "--no-qr"]);
    patient.json(&["contacts", "add", "dr", "--lookup", &d_fp]);
    doc.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    (patient, doc)
}

/// The `fingerprint` field of what `vault --json init` or `whoami`
/// printed.
pub fn fingerprint_in(v: &serde_json::Value) -> String {
    v.get("fingerprint")
        .and_then(|f| f.as_str())
        .unwrap_or_else(|| panic!("no fingerprint in {v}"))
        .to_owned()
}

/// A new profile of role device, `name`, in `dir/name`, its identity
/// published on the relay (so another device can add or pair it), and its
/// fingerprint.
pub fn published_device(dir: &Path, relay: &str, name: &str) -> (CliProfile, String) {
    let device = CliProfile::new(&dir.join(name), relay);
    let fp = fingerprint_in(&device.init(name, "device"));
    device.ok(&["whoami", "--publish", "--no-qr"]);
    (device, fp)
}

/// A second clinician, `name` (a contact of that name on the patient's
/// side, the patient as `pat` on its own), whom the patient (made by
/// [`patient_and_clinician`]) shares labs with, read-only, and who
/// follows the patient's vault.
pub fn clinician_reading_labs(
    dir: &Path,
    relay: &str,
    patient: &CliProfile,
    name: &str,
) -> CliProfile {
    let clinician = CliProfile::new(&dir.join(name), relay);
    let c_fp = fingerprint_in(&clinician.init(name, "clinician"));
    clinician.ok(&["whoami", "--publish", "--no-qr"]);
    let p_fp = fingerprint_in(&patient.json(&["whoami"]));
    clinician.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    patient.json(&["contacts", "add", name, "--lookup", &c_fp]);
    patient.json(&["share", "labs", "--with", name]);
    clinician.json(&["inbox"]);
    clinician
}

/// Where cargo put the `vault` command-line binary of this build.
pub fn vault_binary() -> PathBuf {
    workspace_binary("vault", "vault-cli")
}

/// A binary of this workspace, next to the test executable's directory.
fn workspace_binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        panic!(
            "{} is missing: build it first (`cargo build -p {package}`, or run the whole suite with `cargo test --workspace`)",
            bin.display()
        );
    }
    bin
}

/// What a [`RelayProcess`] runs.
enum Running {
    /// One `relay-server` process.
    Process(Child),
    /// `scripts/cluster` (`VAULT_TEST_RELAY=cluster`); `None` once stopped.
    Cluster(Option<Box<cluster::Cluster>>),
}

/// A running `relay-server` process, or, with `VAULT_TEST_RELAY=cluster`
/// in the environment, a whole `scripts/cluster` (three relays of this
/// build over PostgreSQL and SeaweedFS, haproxy in front; the relay
/// arguments go to every instance; [`RelayProcess::url`] is haproxy's, the
/// data directory holds only what the test puts there). In cluster mode
/// [`RelayProcess::kill9`] kills every instance, [`RelayProcess::restart`]
/// waits until they serve again (or brings a stopped cluster back on the
/// same state), and [`RelayProcess::pid`] is the first instance's.
pub struct RelayProcess {
    running: Running,
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    args: Vec<String>,
}

/// Every regular file below `dir`, recursively (symbolic links and sockets
/// are not followed or listed; a directory that cannot be read is skipped).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// A loopback port that was free a moment ago (bound, read and released):
/// for a process that must be told its own URL before it starts.
pub fn free_loopback_port() -> u16 {
    // Never the same port twice in one test process: the kernel may offer
    // a port again once its probe socket is closed.
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free loopback port: {e}"));
        if GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
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

    /// Starts the relay listening on `listen` (for example
    /// `127.0.0.1:8787`, see [`free_loopback_port`]) with `data_dir` and
    /// extra arguments, and waits until it listens: for a relay whose URL
    /// must be known before it starts (a `--public-url` naming itself).
    pub fn start_on(data_dir: &Path, listen: &str, args: &[&str]) -> Self {
        Self::spawn(
            data_dir,
            args.iter().map(|s| s.to_string()).collect(),
            listen,
        )
    }

    /// Whether `VAULT_TEST_RELAY=cluster` asks for the cluster.
    pub fn cluster_mode() -> bool {
        std::env::var("VAULT_TEST_RELAY").is_ok_and(|v| v == "cluster")
    }

    fn spawn(data_dir: &Path, args: Vec<String>, listen: &str) -> Self {
        if Self::cluster_mode() {
            let _ = std::fs::create_dir_all(data_dir);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let port = listen
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .filter(|p| *p != 0);
            let c = cluster::Cluster::start_on(port, &refs);
            return Self {
                url: c.url.clone(),
                running: Running::Cluster(Some(Box::new(c))),
                data_dir: data_dir.to_path_buf(),
                args,
            };
        }
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
            running: Running::Process(child),
            url,
            data_dir: data_dir.to_path_buf(),
            args,
        }
    }

    /// The process id (in cluster mode, the first relay instance's).
    pub fn pid(&self) -> u32 {
        match &self.running {
            Running::Process(child) => child.id(),
            Running::Cluster(Some(c)) => c.relay_pid(1),
            Running::Cluster(None) => 0,
        }
    }

    /// `kill -9`: no chance to flush or finish anything (in cluster mode,
    /// every relay instance; the cluster starts them again).
    pub fn kill9(&mut self) {
        match &mut self.running {
            Running::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::Cluster(Some(c)) => {
                for i in 1..=c.instances.len() {
                    c.kill9_relay(i);
                }
            }
            Running::Cluster(None) => {}
        }
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited 0
    /// (in cluster mode: stops the whole cluster, keeping its state).
    pub fn stop(&mut self) -> bool {
        match &mut self.running {
            Running::Process(child) => {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
                child.wait().map(|s| s.success()).unwrap_or(false)
            }
            Running::Cluster(c) => c.as_mut().is_some_and(|c| c.stop()),
        }
    }

    /// Starts a new process on the same data directory, port and arguments
    /// (in cluster mode: waits until every instance serves again, or
    /// starts a stopped cluster again on its state and port).
    pub fn restart(&mut self) {
        if let Running::Cluster(Some(c)) = &mut self.running {
            c.restart();
            return;
        }
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
        if let Running::Process(child) = &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Peak resident memory (VmHWM) from a `/proc/<pid>/status` file, bytes.
pub fn peak_rss_of(status_file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_file).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One `vault` command-line profile (its own `VAULT_HOME`), driven as a
/// user would drive it: by running the real binary.
#[derive(Clone, Debug)]
pub struct CliProfile {
    /// The profile directory.
    pub home: PathBuf,
    /// The relay URL passed as `VAULT_RELAY` (`None`: unset).
    pub relay: Option<String>,
    /// The passphrase passed as `VAULT_PASSPHRASE`.
    pub passphrase: String,
}

/// What one command printed and how it exited.
#[derive(Debug)]
pub struct CliRun {
    /// Exit code (`-1` if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A `vault` command driven as a person would at a terminal
/// ([`CliProfile::interactive`]).
pub struct Interactive {
    what: String,
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Interactive {
    /// Waits (at most `timeout`) for a line of stderr that `pred` accepts,
    /// and returns it; panics with everything printed so far otherwise.
    pub fn wait_for(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "`vault {}` did not print what was awaited; it printed:\n{}",
                    self.what,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Types `text` and Enter.
    pub fn answer(&mut self, text: &str) {
        use std::io::Write;
        if let Some(input) = self.child.stdin.as_mut() {
            let _ = writeln!(input, "{text}");
            let _ = input.flush();
        }
    }

    /// Presses Ctrl-C: sends the command SIGINT (with `kill -INT`).
    pub fn interrupt(&self) {
        let sent = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "could not send SIGINT to `vault {}`",
            self.what
        );
    }

    /// Waits for the command to finish; returns how it exited, its stdout,
    /// and all of its stderr.
    pub fn finish(mut self) -> CliRun {
        drop(self.child.stdin.take());
        let out = self
            .child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("vault did not finish: {e}"));
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.seen.extend(self.lines.try_iter());
        CliRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: self.seen.join("\n"),
        }
    }
}

impl CliProfile {
    /// A profile in `home`, talking to `relay`.
    pub fn new(home: &Path, relay: &str) -> Self {
        Self {
            home: home.to_path_buf(),
            relay: Some(relay.to_owned()),
            passphrase: "correct-horse-battery-staple".into(),
        }
    }

    /// `vault <args>` for this profile: its home, passphrase and relay,
    /// with every stream piped.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(vault_binary());
        cmd.args(args)
            .env("VAULT_HOME", &self.home)
            .env("VAULT_PASSPHRASE", &self.passphrase)
            .env_remove("VAULT_RELAY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(r) = &self.relay {
            cmd.env("VAULT_RELAY", r);
        }
        cmd
    }

    /// Runs `vault <args>` with `stdin` as input.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> CliRun {
        use std::io::Write;
        let mut child = self
            .command(args)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run vault: {e}"));
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin);
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("vault did not finish: {e}"));
        CliRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `vault <args>` in the background (output discarded), for a
    /// test that kills it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run vault: {e}"))
    }

    /// Starts `vault <args>` to be driven as a person would at a terminal:
    /// its stderr read line by line as it comes ([`Interactive::wait_for`]),
    /// its stdin answered ([`Interactive::answer`]).
    pub fn interactive(&self, args: &[&str]) -> Interactive {
        let mut child = self
            .command(args)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run vault: {e}"));
        let stderr = child.stderr.take().map(BufReader::new);
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stderr.into_iter().flat_map(|r| r.lines()) {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Interactive {
            what: args.join(" "),
            child,
            lines,
            seen: Vec::new(),
            reader: Some(reader),
        }
    }

    /// Runs `vault <args>`.
    pub fn run(&self, args: &[&str]) -> CliRun {
        self.run_with_stdin(args, b"")
    }

    /// Runs `vault <args>`, which must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        if r.code != 0 {
            panic!(
                "`vault {}` failed with {}:\n{}\n{}",
                args.join(" "),
                r.code,
                r.stdout,
                r.stderr
            );
        }
        r.stdout
    }

    /// A copy of this profile's directory at `to`, as it is now (a stale
    /// or stolen copy of the device); returns `to`. Use it with
    /// [`CliProfile::new`] once the copy should talk to a relay.
    pub fn copy_device(&self, to: &Path) -> PathBuf {
        let status = Command::new("cp")
            .arg("-a")
            .arg(&self.home)
            .arg(to)
            .status()
            .unwrap_or_else(|e| panic!("cp -a {}: {e}", self.home.display()));
        assert!(status.success(), "cp -a {} failed", self.home.display());
        to.to_path_buf()
    }

    /// `vault add -` of `body` into the collection "labs" titled `title`,
    /// which must succeed; returns the new record's id.
    pub fn add_lab(&self, title: &str, body: &str) -> String {
        let r = self.run_with_stdin(
            &["--json", "add", "-", "-c", "labs", "--title", title],
            body.as_bytes(),
        );
        assert_eq!(r.code, 0, "vault add: {}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("vault add printed no JSON ({e}): {}", r.stdout));
        v.get(0)
            .and_then(|r| r.get("record"))
            .and_then(|r| r.as_str())
            .unwrap_or_else(|| panic!("vault add named no record: {v}"))
            .to_owned()
    }

    /// Runs `vault sync`; returns how many collections it re-keyed, over
    /// every vault, and its JSON.
    pub fn sync_rekeyed(&self) -> (usize, serde_json::Value) {
        let synced = self.json(&["sync"]);
        let rekeyed = synced
            .as_array()
            .map(|vaults| {
                vaults
                    .iter()
                    .map(|v| v["rekeyed"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or_else(|| panic!("vault sync printed no list: {synced}"));
        (rekeyed, synced)
    }

    /// The checkpoint code of `vault verify <args>`.
    pub fn checkpoint(&self, args: &[&str]) -> String {
        let mut all = vec!["verify"];
        all.extend_from_slice(args);
        self.json(&all)
            .get("checkpoint")
            .and_then(|c| c.as_str())
            .unwrap_or_else(|| panic!("vault verify printed no checkpoint"))
            .to_owned()
    }

    /// Runs `vault --json <args>`, which must succeed; returns the parsed
    /// output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "`vault {}` printed invalid JSON ({e}):\n{out}",
                all.join(" ")
            )
        })
    }

    /// `vault init` with the fastest key-file work factor tests allow;
    /// returns the new identity as JSON.
    pub fn init(&self, name: &str, role: &str) -> serde_json::Value {
        self.json(&[
            "init",
            "--name",
            name,
            "--role",
            role,
            "--work-factor",
            "15",
        ])
    }

    /// Runs `vault <args>`, which must fail with exit code `code`; returns
    /// its stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let r = self.run(args);
        if r.code != code {
            panic!(
                "`vault {}` exited with {} instead of {code}:\n{}\n{}",
                args.join(" "),
                r.code,
                r.stdout,
                r.stderr
            );
        }
        r.stderr
    }
}

/// A command that failed, as it reported itself with `--json`.
#[derive(Debug)]
pub struct Refusal {
    /// Exit code.
    pub exit: i32,
    /// The stable error code (`bad_signature`, `rollback`, ...).
    pub code: String,
    /// The message a person reads.
    pub message: String,
    /// Everything printed on stderr (warnings and notices too).
    pub stderr: String,
}

impl CliProfile {
    /// Runs `vault --json <args>`, which must fail; returns what it
    /// reported (the JSON error object on the last stderr line).
    pub fn refused(&self, args: &[&str]) -> Refusal {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let r = self.run(&all);
        if r.code == 0 {
            panic!(
                "`vault {}` succeeded but should have been refused:\n{}\n{}",
                all.join(" "),
                r.stdout,
                r.stderr
            );
        }
        let error = r
            .stderr
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v.get("error").cloned())
            .unwrap_or_else(|| {
                panic!(
                    "`vault {}` printed no JSON error:\n{}",
                    all.join(" "),
                    r.stderr
                )
            });
        let text = |k: &str| {
            error
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        Refusal {
            exit: r.code,
            code: text("code"),
            message: text("message"),
            stderr: r.stderr,
        }
    }

    /// This profile's public identity (from its `identity.pub`).
    pub fn public(&self) -> PublicIdentity {
        let path = vault_cli::home::Home::at(&self.home).public_file();
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        PublicIdentity::from_text(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// This profile's secret identity, unlocked from its key file with its
    /// passphrase (what a test needs to act as this user without the CLI).
    pub fn secret(&self) -> Arc<SecretIdentity> {
        let path = vault_cli::home::Home::at(&self.home).key_file();
        let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let pass = secrecy::SecretString::from(self.passphrase.clone());
        Arc::new(
            vault_core::keyfile::open(&file, &pass)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
    }
}

/// A small deterministic generator (SplitMix64) for tests and benches whose
/// runs must be reproducible from a printed seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (`lo` if `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % hi.saturating_sub(lo).saturating_add(1)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
