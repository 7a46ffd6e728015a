//! Several relay instances against one: signed appends and GETs per second
//! on the release relay over SQLite (one node, the default), then on
//! `scripts/cluster` (PostgreSQL, SeaweedFS, relays over them) with 1, 2
//! and 3 instances taking the load, each as a ratio of the SQLite node
//! measured in the same run, and the server-side CPU time per signed
//! append (every relay process, plus PostgreSQL's and SeaweedFS's for the
//! cluster). On a 2-core machine the instances, the database, the object
//! store and this load generator share the cores, so the CPU figure says
//! more than the rates.
//!
//! ```text
//! cargo build --release -p relay-server --features postgres,s3
//! cargo bench -p vault-tests --bench cluster [-- --quick]
//! ```
//!
//! `CLUSTER_BENCH_CONNECTIONS` (default 16) clients, each with its own
//! identity and vault, send `CLUSTER_BENCH_APPENDS` (default 100, 25 with
//! `--quick`) appends each (one collection-created entry per request,
//! chained, prepared before the clock starts) and then as many
//! `GET /v1/vaults/{v}/head` (p50 and p99 of each request's latency), then
//! upload `CLUSTER_BENCH_BLOBS` (default 2, 1 with `--quick`) distinct
//! blobs of `CLUSTER_BENCH_BLOB_MIB` MiB (default 4) each and download
//! them again (MB/s, 10^6 bytes, all clients together). Clients talk to
//! the instances directly, spread evenly (the load balancer's own cost is
//! left out). Nothing is asserted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_client::{RelayClient, RetryPolicy};
use vault_core::{LogEntry, Role, SecretIdentity, VaultId, VaultState};
use vault_tests::cluster::Cluster;
use vault_tests::{principal, RelayProcess};

/// Clock ticks per second of /proc (USER_HZ; 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) of a process and, with `children`, of the
/// processes whose parent it is (PostgreSQL's backends).
fn cpu_of(pid: u32, children: bool) -> f64 {
    let stat = |p: &str| -> Option<(u32, f64)> {
        let text = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = text.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some((ppid, ticks / TICKS))
    };
    let mut total = stat(&pid.to_string()).map_or(0.0, |s| s.1);
    if children {
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some((ppid, t)) = stat(&name) {
                if ppid == pid {
                    total += t;
                }
            }
        }
    }
    total
}

/// One client's vault and its prepared appends.
struct Conn {
    client: RelayClient,
    vault: VaultId,
    start: vault_client::Head,
    entries: Vec<LogEntry>,
}

async fn prepare(client: RelayClient, who: Arc<SecretIdentity>, appends: usize) -> Conn {
    client.publish_identity().await.unwrap();
    let (state, genesis) = VaultState::create(&who, client.now()).unwrap();
    client.create_vault(&genesis).await.unwrap();
    let start = state.head().into();
    let mut scratch = state;
    let entries = (0..appends)
        .map(|i| {
            let (_, e) = scratch
                .create_collection(&who, &format!("c{i}"), client.now())
                .unwrap();
            scratch.apply(&e).unwrap();
            e
        })
        .collect();
    Conn {
        client,
        vault: scratch.vault(),
        start,
        entries,
    }
}

struct Figures {
    appends_per_s: f64,
    gets_per_s: f64,
    cpu_us_per_append: f64,
    /// p50 and p99 of one append's latency, milliseconds.
    append_ms: (f64, f64),
    /// p50 and p99 of one GET's latency, milliseconds.
    get_ms: (f64, f64),
    upload_mb_s: f64,
    download_mb_s: f64,
}

/// The p50 and p99 of `times`, milliseconds.
fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    (at(0.50), at(0.99))
}

/// Blob sizes and counts of the blob phase.
#[derive(Clone, Copy)]
struct BlobLoad {
    per_client: usize,
    bytes: usize,
}

/// A blob's address and bytes.
type Blob = ([u8; 32], Arc<Vec<u8>>);

/// Distinct bytes for blob `n` of a run (content-addressed: equal blobs
/// would be stored once).
fn blob_bytes(tag: u64, len: usize) -> Vec<u8> {
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs the load over `urls` (clients spread evenly); `cpu` reads the
/// server side's CPU seconds.
fn run(
    rt: &tokio::runtime::Runtime,
    urls: &[String],
    connections: usize,
    appends: usize,
    blobs: BlobLoad,
    seed: u8,
    cpu: &dyn Fn() -> f64,
) -> Figures {
    let conns: Vec<Conn> = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..connections {
            let who = principal(seed.wrapping_add(i as u8), "bench", Role::Patient);
            let client = RelayClient::new(&urls[i % urls.len()], who.clone())
                .unwrap()
                .with_retry_policy(RetryPolicy::none());
            tasks.push(tokio::spawn(prepare(client, who, appends)));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let total = connections * appends;
    let cpu0 = cpu();
    let began = Instant::now();
    let conns = rt.block_on(async {
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|c| {
                tokio::spawn(async move {
                    let mut prev = c.start;
                    let mut times = Vec::with_capacity(c.entries.len());
                    for e in &c.entries {
                        let t = Instant::now();
                        prev = c
                            .client
                            .append(&c.vault, prev, std::slice::from_ref(e))
                            .await
                            .unwrap();
                        times.push(t.elapsed());
                    }
                    (c, times)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let (conns, append_times): (Vec<Conn>, Vec<Vec<Duration>>) = conns.into_iter().unzip();
    let append_took = began.elapsed();
    let cpu1 = cpu();
    let began = Instant::now();
    let (conns, get_times): (Vec<Conn>, Vec<Vec<Duration>>) = rt.block_on(async {
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|c| {
                tokio::spawn(async move {
                    let mut times = Vec::with_capacity(c.entries.len());
                    for _ in 0..c.entries.len() {
                        let t = Instant::now();
                        c.client.head(&c.vault).await.unwrap();
                        times.push(t.elapsed());
                    }
                    (c, times)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out.into_iter().unzip()
    });
    let get_took = began.elapsed();

    // Blobs: prepared before the clock starts, uploaded, then downloaded.
    let prepared: Vec<Vec<Blob>> = (0..conns.len())
        .map(|i| {
            (0..blobs.per_client)
                .map(|j| {
                    let tag = (u64::from(seed) << 32) | ((i as u64) << 16) | j as u64;
                    let bytes = blob_bytes(tag, blobs.bytes);
                    (vault_core::request::body_digest(&bytes), Arc::new(bytes))
                })
                .collect()
        })
        .collect();
    let blob_total = (conns.len() * blobs.per_client * blobs.bytes) as f64;
    let conns: Vec<Arc<Conn>> = conns.into_iter().map(Arc::new).collect();
    let began = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = conns
            .iter()
            .zip(&prepared)
            .map(|(c, mine)| {
                let (c, mine) = (c.clone(), mine.clone());
                tokio::spawn(async move {
                    for (hash, bytes) in &mine {
                        c.client
                            .put_blob(
                                &c.vault,
                                hash,
                                bytes.len() as u64,
                                &mut Cursor::new(&bytes[..]),
                            )
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let upload_took = began.elapsed();
    let began = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = conns
            .iter()
            .zip(&prepared)
            .map(|(c, mine)| {
                let (c, mine) = (c.clone(), mine.clone());
                tokio::spawn(async move {
                    for (hash, bytes) in &mine {
                        let mut out = Vec::with_capacity(bytes.len());
                        c.client
                            .get_blob(
                                &c.vault,
                                hash,
                                vault_core::address::AddressKind::Sha256,
                                bytes.len() as u64,
                                &mut out,
                            )
                            .await
                            .unwrap();
                        assert_eq!(out.len(), bytes.len());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let download_took = began.elapsed();
    Figures {
        appends_per_s: total as f64 / append_took.as_secs_f64(),
        gets_per_s: total as f64 / get_took.as_secs_f64(),
        cpu_us_per_append: (cpu1 - cpu0) * 1e6 / total as f64,
        append_ms: percentiles(append_times.concat()),
        get_ms: percentiles(get_times.concat()),
        upload_mb_s: blob_total / 1e6 / upload_took.as_secs_f64(),
        download_mb_s: blob_total / 1e6 / download_took.as_secs_f64(),
    }
}

/// One result line; `base` is SQLite's, for the ratios.
fn report(name: &str, f: &Figures, base: Option<&Figures>) {
    println!(
        "{name:<22} {:>7.0} appends/s (p50 {:.1} ms, p99 {:.1} ms) {:>7.0} GETs/s (p50 {:.1} ms, p99 {:.1} ms) {:>6.1} MB/s up {:>6.1} MB/s down {:>6.0} µs CPU/append",
        f.appends_per_s,
        f.append_ms.0,
        f.append_ms.1,
        f.gets_per_s,
        f.get_ms.0,
        f.get_ms.1,
        f.upload_mb_s,
        f.download_mb_s,
        f.cpu_us_per_append,
    );
    if let Some(b) = base {
        println!(
            "{:<22} ratios to SQLite: appends/s {:.2}, GETs/s {:.2}, up {:.2}, down {:.2}; append p50 {:.2}, p99 {:.2}; GET p50 {:.2}, p99 {:.2}; CPU/append {:.2}",
            "",
            f.appends_per_s / b.appends_per_s,
            f.gets_per_s / b.gets_per_s,
            f.upload_mb_s / b.upload_mb_s,
            f.download_mb_s / b.download_mb_s,
            f.append_ms.0 / b.append_ms.0,
            f.append_ms.1 / b.append_ms.1,
            f.get_ms.0 / b.get_ms.0,
            f.get_ms.1 / b.get_ms.1,
            f.cpu_us_per_append / b.cpu_us_per_append,
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let connections = env("CLUSTER_BENCH_CONNECTIONS", 16);
    let appends = env("CLUSTER_BENCH_APPENDS", if quick { 25 } else { 100 });
    let blobs = BlobLoad {
        per_client: env("CLUSTER_BENCH_BLOBS", if quick { 1 } else { 2 }),
        bytes: env("CLUSTER_BENCH_BLOB_MIB", 4) << 20,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let no_limits = ["--rate", "1000000", "--burst", "1000000"];
    println!(
        "cluster bench: {connections} clients × {appends} signed appends (one entry each), then as many GET head, then {} blob(s) of {} MiB each up and down; CPU is the server side's (user + system)",
        blobs.per_client,
        blobs.bytes >> 20
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    std::fs::create_dir_all(&data).unwrap();
    let single = RelayProcess::start(&data, &no_limits);
    let pid = single.pid();
    let base = run(
        &rt,
        std::slice::from_ref(&single.url),
        connections,
        appends,
        blobs,
        100,
        &|| cpu_of(pid, false),
    );
    drop(single);
    report("SQLite, one node", &base, None);

    let cluster = Cluster::start(&no_limits);
    let pid_file = |name: &str| -> Option<u32> {
        std::fs::read_to_string(cluster.dir().join("pids").join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let postmaster = std::fs::read_to_string(cluster.dir().join("pg/data/postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok());
    let server_cpu = || {
        let mut t = 0.0;
        for name in [
            "relay1", "relay2", "relay3", "master", "volume1", "volume2", "volume3", "filer",
        ] {
            if let Some(p) = pid_file(name) {
                t += cpu_of(p, false);
            }
        }
        if let Some(p) = postmaster {
            t += cpu_of(p, true);
        }
        t
    };
    for n in 1..=cluster.instances.len() {
        let f = run(
            &rt,
            &cluster.instances[..n],
            connections,
            appends,
            blobs,
            (n as u8) * 40,
            &server_cpu,
        );
        report(
            &format!("cluster, {n} instance{}", if n == 1 { "" } else { "s" }),
            &f,
            Some(&base),
        );
    }
}
