//! End-to-end load benchmark of the relay: the real [`relay_server::Relay`]
//! (SQLite group commit, fsync'd blobs, signed requests) served in-process on
//! a loopback TCP port and driven over HTTP by many concurrent reqwest tasks.
//!
//! Run it (release build):
//!
//! ```text
//! cargo bench -p relay-server --bench relay              # full run
//! cargo bench -p relay-server --bench relay -- --quick   # a short run
//! cargo bench -p relay-server --bench relay -- --connections 16 --appends 100
//! ```
//!
//! Options (flags or environment variables):
//! - `--connections N` / `RELAY_BENCH_CONNECTIONS` (default 64): concurrent
//!   client tasks, one HTTP connection, one identity and one vault each.
//! - `--appends N` / `RELAY_BENCH_APPENDS` (default 300; 15 with `--quick`):
//!   appends per connection.
//! - `--quick` / `RELAY_BENCH_QUICK=1`: fewer appends, smaller large blobs.
//! - `--server-nodelay` / `RELAY_BENCH_SERVER_NODELAY=1` (diagnostic): serve
//!   `Relay::router()` (and the bare handler) with `axum::serve` on a
//!   listener that sets `TCP_NODELAY` on accepted sockets, instead of
//!   `Relay::serve` (which leaves Nagle's algorithm on), to show its effect.
//! - `RELAY_BENCH_PERF_CTL=<fifo>` (with optional `RELAY_BENCH_PERF_ACK=<fifo>`)
//!   and `RELAY_BENCH_PERF_PHASE=append|bare|blob-get|head-get|ingest|download`: write
//!   `enable`/`disable` to a `perf record -D -1 --control fifo:<ctl>,<ack>`
//!   control fifo around that one phase, to profile it alone.
//! - `RELAY_BENCH_DIR`: where the temporary data directory is made (default:
//!   the system temporary directory; it must be a real disk for the fsync
//!   figures to mean anything, not tmpfs).
//!
//! What it measures, in one run:
//! 1. signed, durable small-record appends (`POST /v1/vaults/{v}/log`, one
//!    ~1 KiB record-put per request, each connection appending to its own
//!    vault so there is no compare-and-swap contention): rate, p50, p99;
//! 2. signed small GETs (the blobs of those records, then log heads);
//! 3. large-blob ingest and download throughput (chunked, resumable uploads);
//! 4. the same append requests, byte for byte, against a bare axum handler
//!    (no auth, no verification, no fsync: the body goes into a `HashMap`),
//!    and the relay's append rate as a ratio of it (the bare phase is short,
//!    so it runs three times and the median pass is kept);
//! 5. group-commit batch sizes, scraped from `GET /metrics` on the admin
//!    listener.
//!
//! Entries and request signatures are made in an untimed setup phase (the
//! relay requires each record's blob before its record-put entry, so the
//! blobs are uploaded there too); the timed phases only send. Entry times
//! and request timestamps use the real clock: the relay refuses them more
//! than 300 s away from its clock, so the append phase starts right after
//! setup. Targets (from the issue) are printed as PASS/MISS, never asserted.
//! The client and the server share this machine's cores: per-thread CPU
//! time of each phase is printed so the split can be read (`srv-worker`:
//! the server runtime's workers, `srv-blocking`: its blocking pool (SQLite
//! reads, file I/O), `relay-commit`: the group-commit thread,
//! `bench-client`/`bench-main`: the load generator).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::serve::ListenerExt;
use bytes::Bytes;
use futures_util::StreamExt;
use relay_server::{Config, Relay};
use serde_json::json;
use vault_core::request::{body_digest, RelayOrigin, RequestAuth};
use vault_core::{IdentityInfo, Keyring, RecordInfo, Role, SecretIdentity, VaultState};

/// Size of each small record's plaintext.
const RECORD_BYTES: usize = 1024;
/// Target: relay append rate ≥ this × the bare handler's.
const TARGET_RATIO: f64 = 0.5;
/// Target: append p99 at most this many milliseconds.
const TARGET_P99_MS: f64 = 20.0;

// ---------------------------------------------------------------- options

struct Opts {
    connections: usize,
    appends: usize,
    quick: bool,
    server_nodelay: bool,
    big_blobs: usize,
    big_blob_bytes: usize,
    chunk_bytes: usize,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn parse_opts() -> Opts {
    let mut quick = std::env::var("RELAY_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let mut server_nodelay =
        std::env::var("RELAY_BENCH_SERVER_NODELAY").is_ok_and(|v| v != "0" && !v.is_empty());
    let mut connections = env_usize("RELAY_BENCH_CONNECTIONS");
    let mut appends = env_usize("RELAY_BENCH_APPENDS");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let value = |i: usize, name: &str| -> usize {
        args.get(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number"))
    };
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--quick" => quick = true,
            "--server-nodelay" => server_nodelay = true,
            "--connections" => {
                i += 1;
                connections = Some(value(i, a));
            }
            "--appends" => {
                i += 1;
                appends = Some(value(i, a));
            }
            _ => {
                if let Some(v) = a.strip_prefix("--connections=") {
                    connections = Some(v.parse().expect("--connections=N"));
                } else if let Some(v) = a.strip_prefix("--appends=") {
                    appends = Some(v.parse().expect("--appends=N"));
                }
                // Anything else (cargo passes `--bench`) is ignored.
            }
        }
        i += 1;
    }
    let connections = connections.unwrap_or(64).max(1);
    let appends = appends.unwrap_or(if quick { 15 } else { 300 }).max(1);
    let (big_blobs, big_blob_bytes) = if quick { (2, 16 << 20) } else { (4, 64 << 20) };
    Opts {
        connections,
        appends,
        quick,
        server_nodelay,
        big_blobs: big_blobs.min(connections),
        big_blob_bytes,
        chunk_bytes: 8 << 20,
    }
}

// ---------------------------------------------------------------- helpers

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The origin in-process relays accept: the loopback origin of the default
/// listen address (`Config::for_data_dir`).
fn origin() -> RelayOrigin {
    RelayOrigin::parse("http://127.0.0.1:8787").unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn head_json(state: &VaultState) -> serde_json::Value {
    let h = state.head();
    json!({ "seq": h.seq, "hash": hex::encode(h.head) })
}

/// A request ready to send: signed, body included.
#[derive(Clone)]
struct Prepared {
    method: reqwest::Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

fn prepare(
    me: &SecretIdentity,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> Prepared {
    let auth = RequestAuth::sign(me, method, path, &origin(), now(), body_digest(&body)).unwrap();
    let mut headers = HeaderMap::new();
    for (k, v) in auth.headers() {
        headers.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    if let Some(ct) = content_type {
        headers.insert("content-type", HeaderValue::from_str(ct).unwrap());
    }
    Prepared {
        method: method.parse().unwrap(),
        path: path.to_string(),
        headers,
        body,
    }
}

fn prepare_json(me: &SecretIdentity, method: &str, path: &str, v: &serde_json::Value) -> Prepared {
    prepare(
        me,
        method,
        path,
        Some("application/json"),
        Bytes::from(serde_json::to_vec(v).unwrap()),
    )
}

fn blob_put(
    me: &SecretIdentity,
    path: &str,
    total: usize,
    offset: usize,
    chunk: Bytes,
) -> Prepared {
    let mut p = prepare(me, "PUT", path, Some("application/octet-stream"), chunk);
    p.headers
        .insert("upload-length", HeaderValue::from(total as u64));
    p.headers
        .insert("upload-offset", HeaderValue::from(offset as u64));
    p
}

async fn send(client: &reqwest::Client, base: &str, p: &Prepared) -> reqwest::Response {
    client
        .request(p.method.clone(), format!("{base}{}", p.path))
        .headers(p.headers.clone())
        .body(p.body.clone())
        .send()
        .await
        .unwrap()
}

/// Sends and expects one of `ok`; returns the body.
async fn send_ok(client: &reqwest::Client, base: &str, p: &Prepared, ok: &[u16]) -> Bytes {
    let resp = send(client, base, p).await;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    assert!(
        ok.contains(&status),
        "{} {} -> {status}: {}",
        p.method,
        p.path,
        String::from_utf8_lossy(&body)
    );
    body
}

/// A fast deterministic filler for large blobs (xorshift64*).
fn fill_random(buf: &mut [u8], mut seed: u64) {
    seed |= 1;
    for chunk in buf.chunks_mut(8) {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let v = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

// ---------------------------------------------------------------- stats

struct LoadResult {
    latencies_us: Vec<u64>,
    elapsed: Duration,
    errors: usize,
    first_error: Option<String>,
}

impl LoadResult {
    fn ok(&self) -> usize {
        self.latencies_us.len()
    }
    fn rate(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64()
    }
    fn pct_ms(&self, p: f64) -> f64 {
        let v = &self.latencies_us;
        if v.is_empty() {
            return f64::NAN;
        }
        let idx = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[idx] as f64 / 1000.0
    }
    fn line(&self, what: &str) -> String {
        let mut s = format!(
            "{what:<34} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   ({} ok in {:.2} s",
            self.rate(),
            self.pct_ms(0.50),
            self.pct_ms(0.99),
            self.pct_ms(1.0),
            self.ok(),
            self.elapsed.as_secs_f64()
        );
        if self.errors > 0 {
            s.push_str(&format!(
                ", {} FAILED; first: {}",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        s.push(')');
        s
    }
}

/// Runs one task per connection, each sending its requests in order (the
/// next only after the previous answered); a task stops at its first
/// failure (its later appends would chain onto a head that never landed).
async fn run_load(
    client: &reqwest::Client,
    base: &str,
    per_task: &[Vec<Prepared>],
    expect_len: Option<&[Vec<usize>]>,
) -> LoadResult {
    let start_gate = Arc::new(tokio::sync::Barrier::new(per_task.len() + 1));
    let mut handles = Vec::new();
    for (t, reqs) in per_task.iter().enumerate() {
        let client = client.clone();
        let base = base.to_string();
        let reqs = reqs.clone();
        let lens = expect_len.map(|l| l[t].clone());
        let gate = start_gate.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(reqs.len());
            let mut err: Option<String> = None;
            gate.wait().await;
            for (i, p) in reqs.iter().enumerate() {
                let t0 = Instant::now();
                let resp = send(&client, &base, p).await;
                let status = resp.status();
                let body = resp.bytes().await;
                let dt = t0.elapsed();
                match body {
                    Ok(b) if status.is_success() => {
                        if let Some(l) = &lens {
                            if b.len() != l[i] {
                                err = Some(format!("{} returned {} bytes", p.path, b.len()));
                                break;
                            }
                        }
                        lat.push(dt.as_micros() as u64);
                    }
                    Ok(b) => {
                        err = Some(format!("{status}: {}", String::from_utf8_lossy(&b)));
                        break;
                    }
                    Err(e) => {
                        err = Some(e.to_string());
                        break;
                    }
                }
            }
            (lat, err)
        }));
    }
    start_gate.wait().await;
    let t0 = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for h in handles {
        let (lat, err) = h.await.unwrap();
        all.extend(lat);
        if let Some(e) = err {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    let elapsed = t0.elapsed();
    all.sort_unstable();
    LoadResult {
        latencies_us: all,
        elapsed,
        errors,
        first_error,
    }
}

// ---------------------------------------------------------------- metrics scrape

#[derive(Default, Clone)]
struct BatchHist {
    sum: f64,
    count: f64,
    buckets: BTreeMap<String, f64>,
}

async fn scrape_batches(client: &reqwest::Client, base: &str) -> BatchHist {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut h = BatchHist::default();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if name == "relay_group_commit_batch_size_sum" {
            h.sum = v;
        } else if name == "relay_group_commit_batch_size_count" {
            h.count = v;
        } else if let Some(le) = name
            .strip_prefix("relay_group_commit_batch_size_bucket{le=\"")
            .and_then(|r| r.strip_suffix("\"}"))
        {
            h.buckets.insert(le.to_string(), v);
        }
    }
    h
}

fn print_batches(label: &str, before: &BatchHist, after: &BatchHist) {
    let sum = after.sum - before.sum;
    let count = after.count - before.count;
    let mean = if count > 0.0 { sum / count } else { 0.0 };
    println!(
        "  group commit ({label}): {sum:.0} writes in {count:.0} fsync'd commits, mean batch {mean:.1}"
    );
    // Cumulative buckets → per-bucket counts.
    let mut rows: Vec<(f64, String, f64)> = after
        .buckets
        .iter()
        .map(|(le, v)| {
            let b = before.buckets.get(le).copied().unwrap_or(0.0);
            let key = le.parse::<f64>().unwrap_or(f64::INFINITY);
            (key, le.clone(), v - b)
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut prev = 0.0;
    let mut lo = 0.0;
    let mut parts = Vec::new();
    for (key, le, cum) in rows {
        let n = cum - prev;
        if n > 0.0 {
            let hi = if le == "+Inf" {
                "inf".to_string()
            } else {
                format!("{key:.0}")
            };
            parts.push(format!("({lo:.0},{hi}]: {n:.0}"));
        }
        prev = cum;
        lo = key;
    }
    println!("    commits by batch size: {}", parts.join(", "));
}

// ---------------------------------------------------------------- CPU accounting

/// CPU seconds of every thread of this process, by thread id (Linux only:
/// `se.sum_exec_runtime` of `/proc/self/task/*/sched`, which is exact,
/// else the tick counts of `stat`).
fn thread_ticks() -> HashMap<u32, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let exact = std::fs::read_to_string(e.path().join("sched"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("se.sum_exec_runtime"))
                    .and_then(|l| l.rsplit(':').next())
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .map(|ms| ms / 1000.0);
        let secs = exact.unwrap_or_else(|| {
            // utime and stime, in USER_HZ (100 on Linux) ticks.
            let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let t = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            (t(11) + t(12)) as f64 / 100.0
        });
        out.insert(tid, (comm, secs));
    }
    out
}

/// The whole machine's CPU ticks (`/proc/stat`: user, nice, system, idle,
/// iowait, irq, softirq, steal), to see what else ran during a phase.
fn machine_ticks() -> Option<[u64; 8]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let mut out = [0u64; 8];
    for (o, x) in out.iter_mut().zip(line.split_whitespace()) {
        *o = x.parse().ok()?;
    }
    Some(out)
}

/// CPU use of this process's threads and of the machine.
struct CpuSnap {
    threads: HashMap<u32, (String, f64)>,
    machine: Option<[u64; 8]>,
}

fn cpu_snap() -> CpuSnap {
    CpuSnap {
        threads: thread_ticks(),
        machine: machine_ticks(),
    }
}

/// Prints CPU seconds spent by each thread group since `before`.
fn print_cpu(before: &CpuSnap, wall: Duration, requests: usize) {
    println!("{}", cpu_report(before, &cpu_snap(), wall, requests));
}

/// CPU seconds spent by each thread group between two snapshots.
fn cpu_report(before: &CpuSnap, after: &CpuSnap, wall: Duration, requests: usize) -> String {
    let machine = match (before.machine, after.machine) {
        (Some(a), Some(b)) => {
            let d: Vec<f64> = a
                .iter()
                .zip(b)
                .map(|(x, y)| y.saturating_sub(*x) as f64)
                .collect();
            let total: f64 = d.iter().sum();
            if total > 0.0 {
                let pct = |v: f64| 100.0 * v / total;
                format!(
                    "; whole machine (tick-sampled) {:.0}% busy: user {:.0}%, system {:.0}%, softirq {:.0}%, iowait {:.0}%, steal {:.0}%",
                    pct(total - d[3] - d[4]),
                    pct(d[0] + d[1]),
                    pct(d[2]),
                    pct(d[5] + d[6]),
                    pct(d[4]),
                    pct(d[7])
                )
            } else {
                String::new()
            }
        }
        _ => String::new(),
    };
    let before = &before.threads;
    let after = &after.threads;
    if after.is_empty() {
        return String::new();
    }
    let main_tid = std::process::id();
    let mut groups: BTreeMap<String, f64> = BTreeMap::new();
    for (tid, (comm, secs)) in after {
        let b = before.get(tid).map(|x| x.1).unwrap_or(0.0);
        let d = secs - b;
        if d > 0.0005 {
            // The main thread drives the client runtime (`block_on`).
            let name = if *tid == main_tid {
                "bench-main"
            } else {
                comm.as_str()
            };
            *groups.entry(name.to_string()).or_default() += d;
        }
    }
    let total: f64 = groups.values().sum();
    let parts: Vec<String> = groups.iter().map(|(k, v)| format!("{k} {v:.2}s")).collect();
    let per = if requests > 0 {
        format!(", {:.0} µs CPU/request", total * 1e6 / requests as f64)
    } else {
        String::new()
    };
    format!(
        "    CPU: {total:.2}s over {:.2}s wall ({:.0}% of a core{per}{machine}): {}",
        wall.as_secs_f64(),
        100.0 * total / wall.as_secs_f64(),
        parts.join(", ")
    )
}

// ---------------------------------------------------------------- perf control

/// Enables or disables a `perf record --control` session around `phase` if
/// `RELAY_BENCH_PERF_PHASE` names it.
fn perf_ctl(phase: &str, cmd: &str) {
    use std::io::{Read, Write};
    if std::env::var("RELAY_BENCH_PERF_PHASE").ok().as_deref() != Some(phase) {
        return;
    }
    let Some(ctl) = std::env::var_os("RELAY_BENCH_PERF_CTL") else {
        return;
    };
    let mut f = std::fs::OpenOptions::new().write(true).open(ctl).unwrap();
    writeln!(f, "{cmd}").unwrap();
    drop(f);
    if let Some(ack) = std::env::var_os("RELAY_BENCH_PERF_ACK") {
        let mut buf = [0u8; 5];
        let _ = std::fs::File::open(ack).unwrap().read(&mut buf);
    }
}

// ---------------------------------------------------------------- setup

/// One connection's identity, vault, and prepared requests.
struct Conn {
    me: Arc<SecretIdentity>,
    vault: String,
    appends: Vec<Prepared>,
    blobs: Vec<(String, usize)>,
    built_at: Instant,
}

async fn setup_conn(client: reqwest::Client, base: String, index: usize, appends: usize) -> Conn {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    seed[8..16].copy_from_slice(&now().to_le_bytes());
    let me = Arc::new(
        SecretIdentity::from_seed(
            &seed,
            &IdentityInfo {
                display_name: format!("Bench Patient {index}"),
                role: Role::Patient,
                registration: None,
                created_at: now() - 1000,
            },
        )
        .unwrap(),
    );
    // Publish the identity, create a vault and a collection.
    send_ok(
        &client,
        &base,
        &prepare_json(
            &me,
            "PUT",
            "/v1/identities",
            &json!({ "identity": me.public().to_text() }),
        ),
        &[200, 201],
    )
    .await;
    let (mut state, genesis) = VaultState::create(&me, now()).unwrap();
    send_ok(
        &client,
        &base,
        &prepare_json(
            &me,
            "POST",
            "/v1/vaults",
            &json!({ "genesis": b64(genesis.to_bytes()) }),
        ),
        &[201],
    )
    .await;
    let vault = state.vault().to_hex();
    let log_path = format!("/v1/vaults/{vault}/log");
    let (labs, e) = state.create_collection(&me, "labs", now()).unwrap();
    send_ok(
        &client,
        &base,
        &prepare_json(
            &me,
            "POST",
            &log_path,
            &json!({ "prev": head_json(&state), "entries": [b64(e.to_bytes())] }),
        ),
        &[200],
    )
    .await;
    state.apply(&e).unwrap();

    // Build the chain of record-puts locally (CPU work, off the runtime).
    let me2 = me.clone();
    let (blobs, bodies) = tokio::task::spawn_blocking(move || {
        let me = me2;
        let mut kr = Keyring::new(&me, now());
        let mut blobs = Vec::with_capacity(appends);
        let mut bodies = Vec::with_capacity(appends);
        let mut plain = vec![0u8; RECORD_BYTES];
        for k in 0..appends {
            fill_random(&mut plain, (index as u64) << 32 | k as u64);
            let info = RecordInfo {
                content_type: "fhir+Observation".into(),
                title: format!("result {k}"),
                created_at: now(),
                effective_at: None,
            };
            let mut ct = Vec::new();
            let (meta, entry) = state
                .put_record(
                    &mut kr,
                    &labs,
                    None,
                    &info,
                    vault_core::RecordBody::new(plain.as_slice(), plain.len() as u64),
                    &mut ct,
                )
                .unwrap();
            let body = json!({ "prev": head_json(&state), "entries": [b64(entry.to_bytes())] });
            state.apply(&entry).unwrap();
            // A sealed record's blob is addressed as its metadata says.
            blobs.push((*meta.ciphertext_hash(), ct));
            bodies.push(body);
        }
        (blobs, bodies)
    })
    .await
    .unwrap();
    let built_at = Instant::now();

    // Upload every blob (the relay wants a record's blob before its entry).
    let mut blob_list = Vec::with_capacity(blobs.len());
    for (address, ct) in blobs {
        let path = format!("/v1/vaults/{vault}/blobs/{}", hex::encode(address));
        let len = ct.len();
        send_ok(
            &client,
            &base,
            &blob_put(&me, &path, len, 0, Bytes::from(ct)),
            &[201],
        )
        .await;
        blob_list.push((path, len));
    }
    let appends = bodies
        .iter()
        .map(|b| prepare_json(&me, "POST", &log_path, b))
        .collect();
    Conn {
        me,
        vault,
        appends,
        blobs: blob_list,
        built_at,
    }
}

// ---------------------------------------------------------------- bare handler

type BareStore = Arc<Mutex<HashMap<String, Vec<Bytes>>>>;

async fn bare_append(
    State(store): State<BareStore>,
    Path(vault): Path<String>,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let n = {
        let mut map = store.lock().unwrap();
        let v = map.entry(vault).or_default();
        v.push(body);
        v.len()
    };
    axum::Json(json!({ "stored": n }))
}

// ---------------------------------------------------------------- main

fn main() {
    let opts = parse_opts();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The server runtime (relay and bare handler). Workers and blocking
    // threads get different names so the CPU split can be printed.
    let workers = cores;
    let started = Arc::new(AtomicUsize::new(0));
    let server_rt = {
        let started = started.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name_fn(move || {
                if started.fetch_add(1, Ordering::SeqCst) < workers {
                    "srv-worker".into()
                } else {
                    "srv-blocking".into()
                }
            })
            .thread_keep_alive(Duration::from_secs(3600))
            .enable_all()
            .build()
            .unwrap()
    };
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name("bench-client")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .unwrap();

    let parent = std::env::var_os("RELAY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("relay-bench-")
        .tempdir_in(&parent)
        .unwrap();
    let config = Config {
        rate: 1_000_000,
        burst: 1_000_000,
        ..Config::for_data_dir(dir.path())
    };
    let relay = Relay::open(config).unwrap();
    let nodelay = opts.server_nodelay;

    let (relay_addr, bare_addr, admin_addr, stop_tx, servers) = server_rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Metrics are served on the admin listener only.
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr: SocketAddr = admin_listener.local_addr().unwrap();
        let admin_app = relay.admin_router();
        tokio::spawn(async move { axum::serve(admin_listener, admin_app).await });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr: SocketAddr = listener.local_addr().unwrap();
        let mut rx = stop_rx.clone();
        let shutdown = async move {
            let _ = rx.changed().await;
        };
        let relay_task = if nodelay {
            // Diagnostic: the relay's router on a TCP_NODELAY listener.
            let app = relay.router();
            tokio::spawn(async move {
                let listener = listener.tap_io(|t| {
                    let _ = t.set_nodelay(true);
                });
                let r = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown)
                .await;
                drop(relay);
                r
            })
        } else {
            tokio::spawn(relay.serve(listener, shutdown))
        };
        let store: BareStore = Arc::default();
        let bare = axum::Router::new()
            .route("/v1/vaults/{vault}/log", axum::routing::post(bare_append))
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .with_state(store);
        let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare_addr: SocketAddr = bare_listener.local_addr().unwrap();
        let mut rx = stop_rx.clone();
        let bare_task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.changed().await;
            };
            if nodelay {
                let listener = bare_listener.tap_io(|t| {
                    let _ = t.set_nodelay(true);
                });
                axum::serve(listener, bare)
                    .with_graceful_shutdown(shutdown)
                    .await
            } else {
                axum::serve(bare_listener, bare)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        });
        (
            relay_addr,
            bare_addr,
            admin_addr,
            stop_tx,
            (relay_task, bare_task),
        )
    });

    println!(
        "relay load benchmark{}",
        if opts.quick { " (--quick)" } else { "" }
    );
    println!(
        "  {cores} cores; server runtime {workers} workers, client runtime {cores} workers (same machine)"
    );
    println!(
        "  relay on {relay_addr}, bare handler on {bare_addr}, data in {}",
        dir.path().display()
    );
    println!(
        "  {} connections × {} appends of a {} B record; {} large blobs of {} MiB in {} MiB chunks",
        opts.connections,
        opts.appends,
        RECORD_BYTES,
        opts.big_blobs,
        opts.big_blob_bytes >> 20,
        opts.chunk_bytes >> 20
    );

    client_rt.block_on(bench(opts, relay_addr, bare_addr, admin_addr));

    let _ = stop_tx.send(true);
    server_rt.block_on(async {
        let _ = servers.0.await;
        let _ = servers.1.await;
    });
    drop(dir);
}

async fn bench(opts: Opts, relay_addr: SocketAddr, bare_addr: SocketAddr, admin_addr: SocketAddr) {
    let relay = format!("http://{relay_addr}");
    let admin = format!("http://{admin_addr}");
    let bare = format!("http://{bare_addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.connections * 2)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // ---- setup (untimed)
    let t_setup = Instant::now();
    let mut handles = Vec::new();
    for i in 0..opts.connections {
        handles.push(tokio::spawn(setup_conn(
            client.clone(),
            relay.clone(),
            i,
            opts.appends,
        )));
    }
    let mut conns = Vec::new();
    for h in handles {
        conns.push(h.await.unwrap());
    }
    let blob_len = conns[0].blobs[0].1;
    println!(
        "\nsetup: {} identities, vaults and {} small blobs ({blob_len} B ciphertext each) uploaded in {:.1} s",
        conns.len(),
        conns.len() * opts.appends,
        t_setup.elapsed().as_secs_f64()
    );
    let oldest = conns.iter().map(|c| c.built_at).min().unwrap();
    if oldest.elapsed() > Duration::from_secs(200) {
        println!(
            "  WARNING: entries were built {:.0} s ago; the relay refuses entries more than 300 s old",
            oldest.elapsed().as_secs_f64()
        );
    }

    // ---- 1. signed durable appends against the relay
    println!(
        "\n1. signed small-record appends, {} connections",
        opts.connections
    );
    let appends: Vec<Vec<Prepared>> = conns.iter().map(|c| c.appends.clone()).collect();
    let b0 = scrape_batches(&client, &admin).await;
    let cpu0 = cpu_snap();
    perf_ctl("append", "enable");
    let relay_appends = run_load(&client, &relay, &appends, None).await;
    perf_ctl("append", "disable");
    print_cpu(&cpu0, relay_appends.elapsed, relay_appends.ok());
    let b1 = scrape_batches(&client, &admin).await;
    println!("  {}", relay_appends.line("relay append (durable)"));
    print_batches("append phase", &b0, &b1);

    // ---- 4. the same requests against the bare handler
    // Warm the bare server's connections first (the relay's were warmed
    // by setup).
    let mut warm = Vec::new();
    for _ in 0..opts.connections {
        let c = client.clone();
        let url = format!("{bare}/healthz");
        warm.push(tokio::spawn(async move {
            c.get(url).send().await.unwrap().bytes().await.unwrap();
        }));
    }
    for w in warm {
        w.await.unwrap();
    }
    // The bare phase is short: run it three times (it checks nothing, so
    // the same requests can be replayed) and keep the median pass.
    let mut passes = Vec::new();
    for _ in 0..3 {
        let cpu0 = cpu_snap();
        perf_ctl("bare", "enable");
        let r = run_load(&client, &bare, &appends, None).await;
        perf_ctl("bare", "disable");
        let cpu = cpu_report(&cpu0, &cpu_snap(), r.elapsed, r.ok());
        passes.push((r, cpu));
    }
    let rates: Vec<String> = passes
        .iter()
        .map(|p| format!("{:.0}", p.0.rate()))
        .collect();
    passes.sort_by(|a, b| a.0.rate().total_cmp(&b.0.rate()));
    let (bare_appends, bare_cpu) = passes.swap_remove(1);
    println!("  {}", bare_appends.line("bare handler (same requests)"));
    println!("    (median of 3 passes: {} req/s)", rates.join(", "));
    println!("{bare_cpu}");

    // ---- 2. small signed GETs
    println!("\n2. signed small GETs, {} connections", opts.connections);
    let gets: Vec<Vec<Prepared>> = conns
        .iter()
        .map(|c| {
            c.blobs
                .iter()
                .map(|(path, _)| prepare(&c.me, "GET", path, None, Bytes::new()))
                .collect()
        })
        .collect();
    let lens: Vec<Vec<usize>> = conns
        .iter()
        .map(|c| c.blobs.iter().map(|b| b.1).collect())
        .collect();
    let cpu0 = cpu_snap();
    perf_ctl("blob-get", "enable");
    let blob_gets = run_load(&client, &relay, &gets, Some(&lens)).await;
    perf_ctl("blob-get", "disable");
    println!("  {}", blob_gets.line("relay blob GET (small)"));
    print_cpu(&cpu0, blob_gets.elapsed, blob_gets.ok());
    let heads: Vec<Vec<Prepared>> = conns
        .iter()
        .map(|c| {
            let path = format!("/v1/vaults/{}/head", c.vault);
            (0..opts.appends)
                .map(|_| prepare(&c.me, "GET", &path, None, Bytes::new()))
                .collect()
        })
        .collect();
    let cpu0 = cpu_snap();
    perf_ctl("head-get", "enable");
    let head_gets = run_load(&client, &relay, &heads, None).await;
    perf_ctl("head-get", "disable");
    println!("  {}", head_gets.line("relay head GET"));
    print_cpu(&cpu0, head_gets.elapsed, head_gets.ok());

    // ---- 3. large blobs
    println!(
        "\n3. large blobs: {} × {} MiB, {} MiB chunks, {} uploads at once",
        opts.big_blobs,
        opts.big_blob_bytes >> 20,
        opts.chunk_bytes >> 20,
        opts.big_blobs
    );
    let mut big = Vec::new();
    for (i, c) in conns.iter().take(opts.big_blobs).enumerate() {
        let mut data = vec![0u8; opts.big_blob_bytes];
        fill_random(&mut data, 0xB16_B10B ^ i as u64);
        // Addressed as clients address a record's ciphertext (BLAKE3).
        let hash = hex::encode(vault_core::address::AddressKind::CURRENT.digest(&data));
        let path = format!("/v1/vaults/{}/blobs/{hash}", c.vault);
        big.push((c.me.clone(), path, Bytes::from(data)));
    }
    let cpu0 = cpu_snap();
    perf_ctl("ingest", "enable");
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for (me, path, data) in big.clone() {
        let client = client.clone();
        let relay = relay.clone();
        let chunk = opts.chunk_bytes;
        handles.push(tokio::spawn(async move {
            let total = data.len();
            let mut offset = 0;
            while offset < total {
                let end = (offset + chunk).min(total);
                let p = blob_put(&me, &path, total, offset, data.slice(offset..end));
                let want: &[u16] = if end == total { &[201] } else { &[202] };
                send_ok(&client, &relay, &p, want).await;
                offset = end;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let up = t0.elapsed();
    perf_ctl("ingest", "disable");
    let total_bytes = opts.big_blobs * opts.big_blob_bytes;
    print_throughput("ingest:  ", total_bytes, up, "");
    print_cpu(&cpu0, up, 0);

    // Downloads are fast (the blobs are in the page cache): each blob is
    // read several times so the phase lasts long enough to time.
    let reads = if opts.quick { 1 } else { 4 };
    let cpu0 = cpu_snap();
    perf_ctl("download", "enable");
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for (me, path, data) in big.clone() {
        let client = client.clone();
        let relay = relay.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..reads {
                let p = prepare(&me, "GET", &path, None, Bytes::new());
                let resp = send(&client, &relay, &p).await;
                assert_eq!(resp.status().as_u16(), 200);
                let mut n = 0usize;
                let mut stream = resp.bytes_stream();
                while let Some(piece) = stream.next().await {
                    n += piece.unwrap().len();
                }
                assert_eq!(n, data.len(), "short download");
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let down = t0.elapsed();
    perf_ctl("download", "disable");
    print_throughput(
        "download:",
        total_bytes * reads,
        down,
        &format!(": each blob read {reads}×, {} at once", opts.big_blobs),
    );
    print_cpu(&cpu0, down, 0);

    // ---- summary
    let ratio = relay_appends.rate() / bare_appends.rate();
    let p99 = relay_appends.pct_ms(0.99);
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let b_end = scrape_batches(&client, &admin).await;
    println!("\nsummary ({} connections)", opts.connections);
    println!(
        "  relay durable appends {:.0}/s vs bare handler {:.0}/s: ratio {ratio:.2}× (target ≥ {TARGET_RATIO}×): {}",
        relay_appends.rate(),
        bare_appends.rate(),
        verdict(ratio >= TARGET_RATIO && relay_appends.errors == 0)
    );
    println!(
        "  relay append p99 {p99:.2} ms (target ≤ {TARGET_P99_MS} ms): {}",
        verdict(p99 <= TARGET_P99_MS && relay_appends.errors == 0)
    );
    print_batches("whole run", &BatchHist::default(), &b_end);
}

/// Prints `bytes` moved in `took` as MB/s and MiB/s.
fn print_throughput(label: &str, bytes: usize, took: Duration, note: &str) {
    let secs = took.as_secs_f64();
    println!(
        "  {label} {:>8.1} MB/s ({:.1} MiB/s; {} MiB in {secs:.2} s{note})",
        bytes as f64 / secs / 1e6,
        bytes as f64 / secs / (1 << 20) as f64,
        bytes >> 20,
    );
}
