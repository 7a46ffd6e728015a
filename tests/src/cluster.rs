//! Several relay instances on shared storage, as `scripts/cluster` brings
//! them up (PostgreSQL, a SeaweedFS cluster, three relays of this build,
//! haproxy in front), for the end-to-end tests: started in a temporary
//! directory, stopped (everything the script started) when dropped, and
//! also when the test process dies (the script watches it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_client::{RelayClient, RetryPolicy};
use vault_core::SecretIdentity;

/// A running cluster.
pub struct Cluster {
    child: Option<Child>,
    dir: tempfile::TempDir,
    keep: bool,
    port: u16,
    args: Vec<String>,
    /// Options of `scripts/cluster` itself (`--regions 2`, …).
    script_args: Vec<String>,
    restore: Option<PathBuf>,
    /// The load balancer's URL: the one clients use.
    pub url: String,
    /// Each relay instance's own URL (it accepts requests signed for it
    /// as well as for [`Cluster::url`]).
    pub instances: Vec<String>,
    /// Each relay instance's admin listener (`/healthz`, `/metrics`).
    pub admin: Vec<String>,
}

/// `scripts/cluster` of this checkout.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster")
}

impl Cluster {
    /// Starts one with three relay instances of this build's
    /// `relay-server` (which must have the `postgres` and `s3` features, as
    /// `cargo test --workspace --all-features` builds it), each given
    /// `relay_args`; waits until haproxy answers.
    pub fn start(relay_args: &[&str]) -> Self {
        Self::start_on(None, relay_args)
    }

    /// [`Cluster::start`] with haproxy on `port` (a free one if `None`).
    pub fn start_on(port: Option<u16>, relay_args: &[&str]) -> Self {
        Self::start_with(port, None, &[], relay_args)
    }

    /// [`Cluster::start_on`] on a new state directory restored from
    /// `backup` (`scripts/cluster --restore`, decision 54) before any relay
    /// starts.
    pub fn start_restored(port: u16, backup: &Path, relay_args: &[&str]) -> Self {
        Self::start_with(Some(port), Some(backup.to_path_buf()), &[], relay_args)
    }

    /// [`Cluster::start`] with a second region (`scripts/cluster --regions
    /// 2`, decision 55): a PostgreSQL hot standby, SeaweedFS volume servers
    /// in a second data centre, and relays started at
    /// [`Cluster::failover`]; with `sync_replica`, commits wait for the
    /// standby.
    pub fn start_two_regions(sync_replica: bool, relay_args: &[&str]) -> Self {
        let mut script_args = vec!["--regions", "2"];
        if sync_replica {
            script_args.push("--sync-replica");
        }
        Self::start_with(None, None, &script_args, relay_args)
    }

    fn start_with(
        port: Option<u16>,
        restore: Option<PathBuf>,
        script_args: &[&str],
        relay_args: &[&str],
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vault-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let mut c = Self {
            child: None,
            dir,
            keep: false,
            port: port.unwrap_or_else(crate::free_loopback_port),
            args: relay_args.iter().map(|a| a.to_string()).collect(),
            script_args: script_args.iter().map(|a| a.to_string()).collect(),
            restore,
            url: String::new(),
            instances: Vec::new(),
            admin: Vec::new(),
        };
        c.launch();
        c
    }

    /// Runs the script on this cluster's directory and port until it is
    /// ready.
    fn launch(&mut self) {
        let mut command = Command::new("bash");
        command
            .arg(script())
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--port")
            .arg(self.port.to_string());
        // Restored once: a restart runs on the restored state.
        if let Some(backup) = self.restore.take() {
            command.arg("--restore").arg(backup);
        }
        let mut child = command
            .args(&self.script_args)
            .arg("--")
            .args(&self.args)
            .env("RELAY_BIN", crate::relay_binary())
            .env("CLUSTER_EXIT_WITH", std::process::id().to_string())
            .env("RELAY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run scripts/cluster: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut reader = BufReader::new(stdout);
        let (mut instances, mut admin, mut url) = (Vec::new(), Vec::new(), None);
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut line = String::new();
        while url.is_none() {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                let _ = child.kill();
                self.keep = true;
                panic!(
                    "scripts/cluster did not come up (logs in {}/logs)",
                    self.dir.path().display()
                );
            }
            print!("cluster: {line}");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["relay", _, "on", addr, "(metrics", "on", metrics] => {
                    instances.push(format!("http://{addr}"));
                    admin.push(format!("http://{}", metrics.trim_end_matches(')')));
                }
                ["vault", "cluster", "ready:", "clients", "use", u] => url = Some(u.to_string()),
                _ => {}
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        self.child = Some(child);
        self.url = url.unwrap_or_default();
        self.instances = instances;
        self.admin = admin;
    }

    /// Stops everything the script started (SIGTERM to it), keeping the
    /// state; whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Starts a stopped cluster again on its state and port, or waits until
    /// every instance of a running one serves (after [`Cluster::kill9_relay`])
    /// and haproxy sends requests to them again.
    pub fn restart(&mut self) {
        if self.child.is_none() {
            self.launch();
            return;
        }
        for i in 1..=self.instances.len() {
            assert!(
                self.wait_healthy(i, Duration::from_secs(60)),
                "relay instance {i} did not come back"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = format!("{}/healthz", self.url);
        while http_get(&health).is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "haproxy does not serve again");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The load balancer's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A setting of the running cluster from its `cluster.env` (`PG_PORT`,
    /// `S3_PORT`, `PG_BIN`, …).
    pub fn setting(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("cluster.env"))
            .unwrap_or_else(|e| panic!("cluster.env: {e}"));
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('\'').to_owned())
            .unwrap_or_else(|| panic!("no {name} in cluster.env"))
    }

    /// The state and logs directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the state and logs directory when the cluster is dropped (for
    /// a failed test); returns its path.
    pub fn keep(&mut self) -> PathBuf {
        self.keep = true;
        self.dir.path().to_path_buf()
    }

    /// Runs `scripts/cluster ctl DIR ACTION…`; panics if it fails.
    pub fn ctl(&self, action: &[&str]) {
        self.ctl_output(action);
    }

    /// Region A lost, region B takes over (`scripts/cluster ctl DIR
    /// failover`, a cluster of [`Cluster::start_two_regions`]): returns
    /// the script's report of how long each step took.
    pub fn failover(&self) -> String {
        self.ctl_output(&["failover"])
    }

    /// [`Cluster::ctl`], returning what it printed.
    pub fn ctl_output(&self, action: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(script())
            .arg("ctl")
            .arg(self.dir.path())
            .args(action)
            .output()
            .unwrap_or_else(|e| panic!("scripts/cluster ctl: {e}"));
        assert!(
            out.status.success(),
            "scripts/cluster ctl {action:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pid of relay instance `i` (1-based) now.
    pub fn relay_pid(&self, i: usize) -> u32 {
        // The script rewrites the file when it restarts an instance: wait
        // for it a few seconds rather than reading it mid-restart.
        let path = self.dir.path().join(format!("pids/relay{i}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            match pid {
                Some(pid) => return pid,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                None => panic!("no pid for relay {i}"),
            }
        }
    }

    /// `kill -9` relay instance `i`; returns the pid killed. The script
    /// starts it again.
    pub fn kill9_relay(&self, i: usize) -> u32 {
        let pid = self.relay_pid(i);
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        pid
    }

    /// Waits until relay instance `i` answers `/healthz` with 200 directly
    /// (up to `within`); whether it did.
    pub fn wait_healthy(&self, i: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let url = format!("{}/healthz", self.instance(i));
        while Instant::now() < deadline {
            if http_get(&url).is_some_and(|(s, _)| s == 200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Relay instance `i`'s URL (1-based).
    fn instance(&self, i: usize) -> &str {
        i.checked_sub(1)
            .and_then(|i| self.instances.get(i))
            .unwrap_or_else(|| panic!("no relay instance {i}"))
    }

    /// A client through the load balancer for `who`, with `retry`.
    pub fn client(&self, who: &Arc<SecretIdentity>, retry: RetryPolicy) -> RelayClient {
        RelayClient::new(&self.url, who.clone())
            .unwrap_or_else(|e| panic!("client: {e}"))
            .with_retry_policy(retry)
    }

    /// A client connected to relay instance `i` (1-based) directly.
    pub fn instance_client(&self, i: usize, who: &Arc<SecretIdentity>) -> RelayClient {
        RelayClient::new(self.instance(i), who.clone())
            .unwrap_or_else(|e| panic!("client: {e}"))
            .with_retry_policy(RetryPolicy::with_attempts(3))
    }
}

/// A plain HTTP GET on loopback: status and body, if anything answered.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "cluster state and logs kept in {}",
                self.dir.path().display()
            );
        }
        self.stop();
    }
}
