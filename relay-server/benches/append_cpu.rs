//! CPU per signed, verified, durable append, as a ratio of its mandatory
//! work (issue 14: "at most 2× the CPU of its mandatory work").
//!
//! Run it (release build):
//!
//! ```text
//! cargo bench -p relay-server --bench append_cpu
//! cargo bench -p relay-server --bench append_cpu -- --appends 500 --writers 1
//! RELAY_BENCH_DATABASE=postgres://… cargo bench -p relay-server --features postgres --bench append_cpu
//! ```
//!
//! Options (flags or environment variables):
//! - `--appends N` / `RELAY_BENCH_APPENDS` (default 1000): appends per writer.
//! - `--writers N` / `RELAY_BENCH_WRITERS` (default 8): writers appending at
//!   once, each to its own vault (one writer: every append is its own
//!   group commit, so its own fsync).
//! - `--passes N` / `RELAY_BENCH_PASSES` (default 3): passes of the full
//!   append, each by writers of its own to vaults of their own (every pass
//!   starts from the same state); the median pass is kept (on a shared
//!   machine one pass can be disturbed).
//! - `RELAY_BENCH_DATABASE=postgres://…` (feature `postgres`): metadata on
//!   that PostgreSQL database instead of SQLite (blobs stay files).
//! - `RELAY_BENCH_PERF_CTL=<fifo>` (with optional `RELAY_BENCH_PERF_ACK=<fifo>`)
//!   and `RELAY_BENCH_PERF_PHASE=baseline|full`: write `enable`/`disable` to
//!   a `perf record -D -1 --control fifo:<ctl>,<ack>` control fifo around
//!   that phase, to profile it alone.
//! - `RELAY_BENCH_DIR`: where the temporary data directory is made (a real
//!   disk, not tmpfs, for the fsyncs to mean anything).
//!
//! Both handlers are driven in process through `tower::ServiceExt::oneshot`
//! (no TCP, no client in the measured process time: requests are built and
//! signed before the clock starts), and CPU is the whole process's
//! (`CLOCK_PROCESS_CPUTIME_ID`: every thread, the group-commit thread and
//! the kernel time of its fsyncs included), never wall time.
//!
//! - **Baseline** (the mandatory work, as an axum handler): parse the
//!   signed-request headers and verify the request signature (Ed25519 #1),
//!   parse the JSON body, decode the entry's base64 and parse the entry
//!   (`LogEntry::from_bytes`), verify the entry's signature (Ed25519 #2)
//!   and its record metadata's signature (Ed25519 #3). The same request
//!   bytes are replayed several times; the median pass is kept.
//! - **Full**: the same requests through `Relay::router()` (every
//!   middleware, authentication with its nonce cache and rate limit, the
//!   route, `domain::append`, SQLite's group commit): each answered 200
//!   only once durable.
//!
//! The target is printed as PASS/MISS, never asserted.
//!
//! The process allocates with mimalloc, the relay binary's allocator
//! (decision 61), in both handlers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The relay binary's allocator (`relay-server/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use relay_server::{Config, Relay};
use serde_json::json;
use tower::ServiceExt;
use vault_core::request::{body_digest, RelayOrigin, RequestAuth};
use vault_core::{
    EntryBody, IdentityInfo, Keyring, LogEntry, PublicIdentity, RecordInfo, Role, SecretIdentity,
    VaultState,
};

/// Size of each record's plaintext.
const RECORD_BYTES: usize = 1024;
/// Target: a full append costs at most this many times the baseline.
const TARGET_RATIO: f64 = 2.0;
/// Passes of the baseline (the median is kept).
const BASELINE_PASSES: usize = 5;

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// `--name N` or `--name=N` from the arguments, else the variable.
fn opt(args: &[String], name: &str, var: &str, default: usize) -> usize {
    let flag = format!("--{name}");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == flag {
            if let Some(v) = it.next().and_then(|v| v.parse().ok()) {
                return v;
            }
        } else if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            if let Ok(v) = v.parse() {
                return v;
            }
        }
    }
    env_usize(var).unwrap_or(default)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// CPU time of the whole process (every thread), kernel time included.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap(),
        u32::try_from(t.tv_nsec).unwrap(),
    )
}

fn origin() -> RelayOrigin {
    RelayOrigin::parse("http://127.0.0.1:8787").unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// A signed request, ready to send.
#[derive(Clone)]
struct Prepared {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    content_type: Option<&'static str>,
    body: Bytes,
}

impl Prepared {
    fn request(&self) -> Request<Body> {
        let mut b = Request::builder().method(self.method).uri(&self.path);
        for (k, v) in &self.headers {
            b = b.header(*k, v);
        }
        if let Some(ct) = self.content_type {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(self.body.clone())).unwrap()
    }
}

fn prepare(
    me: &SecretIdentity,
    method: &'static str,
    path: &str,
    content_type: Option<&'static str>,
    body: Bytes,
) -> Prepared {
    let auth = RequestAuth::sign(me, method, path, &origin(), now(), body_digest(&body)).unwrap();
    Prepared {
        method,
        path: path.to_string(),
        headers: auth.headers().to_vec(),
        content_type,
        body,
    }
}

fn prepare_json(
    me: &SecretIdentity,
    method: &'static str,
    path: &str,
    v: &serde_json::Value,
) -> Prepared {
    prepare(
        me,
        method,
        path,
        Some("application/json"),
        Bytes::from(serde_json::to_vec(v).unwrap()),
    )
}

async fn send(router: &axum::Router, p: &Prepared) -> (StatusCode, Bytes) {
    let resp = router.clone().oneshot(p.request()).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

async fn send_ok(router: &axum::Router, p: &Prepared, ok: &[u16]) {
    let (status, body) = send(router, p).await;
    assert!(
        ok.contains(&status.as_u16()),
        "{} {} -> {status}: {}",
        p.method,
        p.path,
        String::from_utf8_lossy(&body)
    );
}

fn head_json(state: &VaultState) -> serde_json::Value {
    let h = state.head();
    json!({ "seq": h.seq, "hash": hex::encode(h.head) })
}

/// A deterministic filler (xorshift64*).
fn fill(buf: &mut [u8], mut seed: u64) {
    seed |= 1;
    for chunk in buf.chunks_mut(8) {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let v = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// One writer: its identity, and its appends (record-puts of one vault,
/// chained, each blob uploaded in setup).
struct Writer {
    me: PublicIdentity,
    appends: Vec<Prepared>,
}

async fn setup_writer(router: axum::Router, index: usize, appends: usize) -> Writer {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    seed[8..16].copy_from_slice(&now().to_le_bytes());
    let me = SecretIdentity::from_seed(
        &seed,
        &IdentityInfo {
            display_name: format!("CPU bench {index}"),
            role: Role::Patient,
            registration: None,
            created_at: now() - 1000,
        },
    )
    .unwrap();
    send_ok(
        &router,
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
        &router,
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
        &router,
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

    let mut kr = Keyring::new(&me, now());
    let mut prepared = Vec::with_capacity(appends);
    let mut plain = vec![0u8; RECORD_BYTES];
    for k in 0..appends {
        fill(&mut plain, ((index as u64) << 32) | k as u64);
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
        let address = *meta.ciphertext_hash();
        let path = format!("/v1/vaults/{vault}/blobs/{}", hex::encode(address));
        let len = ct.len();
        let mut put = prepare(
            &me,
            "PUT",
            &path,
            Some("application/octet-stream"),
            Bytes::from(ct),
        );
        put.headers.push(("upload-length", len.to_string()));
        put.headers.push(("upload-offset", "0".to_string()));
        send_ok(&router, &put, &[201]).await;
        prepared.push(prepare_json(&me, "POST", &log_path, &body));
    }
    Writer {
        me: me.public().clone(),
        appends: prepared,
    }
}

// ---------------------------------------------------------------- baseline

/// What the baseline handler knows: the signers' published identities and
/// this relay's origin.
struct Baseline {
    identities: std::collections::HashMap<vault_core::Fingerprint, PublicIdentity>,
    origin: RelayOrigin,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct AppendBody {
    prev: serde_json::Value,
    entries: Vec<String>,
}

/// The mandatory work of an append and nothing else: the request
/// signature, the entry parsed, its two signatures.
async fn baseline_append(
    State(b): State<Arc<Baseline>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Ok(auth) = RequestAuth::from_headers(|k| headers.get(k).and_then(|v| v.to_str().ok()))
    else {
        return StatusCode::UNAUTHORIZED;
    };
    let Some(signer) = b.identities.get(&auth.identity) else {
        return StatusCode::UNAUTHORIZED;
    };
    if auth.verify(signer, "POST", uri.path(), &b.origin).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(req) = serde_json::from_slice::<AppendBody>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    for e in &req.entries {
        let Some(bytes) = b64_decode(e) else {
            return StatusCode::BAD_REQUEST;
        };
        let Ok(entry) = LogEntry::from_bytes(&bytes) else {
            return StatusCode::BAD_REQUEST;
        };
        if entry.verify_signature(signer).is_err() {
            return StatusCode::BAD_REQUEST;
        }
        if let EntryBody::RecordPut { metadata } = entry.body() {
            if metadata.verify_signature(signer).is_err() {
                return StatusCode::BAD_REQUEST;
            }
        }
    }
    StatusCode::OK
}

// ---------------------------------------------------------------- driving

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

/// Sends every writer's appends (requests built before the clock starts),
/// writers at once, each in order; returns the process CPU and wall time
/// spent, and the count answered 200.
async fn run(router: &axum::Router, writers: &[Vec<Prepared>]) -> (Duration, Duration, usize) {
    let built: Vec<Vec<Request<Body>>> = writers
        .iter()
        .map(|reqs| reqs.iter().map(Prepared::request).collect())
        .collect();
    let gate = Arc::new(tokio::sync::Barrier::new(built.len() + 1));
    let mut tasks = Vec::new();
    for reqs in built {
        let router = router.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let mut ok = 0usize;
            for req in reqs {
                let resp = router.clone().oneshot(req).await.unwrap();
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                ok += 1;
            }
            ok
        }));
    }
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    gate.wait().await;
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    (process_cpu() - cpu0, t0.elapsed(), ok)
}

fn us_per(cpu: Duration, n: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / n.max(1) as f64
}

fn main() {
    // As the relay binary does at its start.
    relay_server::process::without_huge_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let appends = opt(&args, "appends", "RELAY_BENCH_APPENDS", 1000).max(1);
    let writers = opt(&args, "writers", "RELAY_BENCH_WRITERS", 8).max(1);
    let full_passes = opt(&args, "passes", "RELAY_BENCH_PASSES", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .unwrap();
    let parent = std::env::var_os("RELAY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("relay-append-cpu-")
        .tempdir_in(&parent)
        .unwrap();
    let config = Config {
        rate: 1_000_000,
        burst: 1_000_000,
        ..Config::for_data_dir(dir.path())
    };
    rt.block_on(async move {
        let (relay, backend) = open(config).await;
        let router = relay.router();
        println!("append CPU benchmark: {backend}; {writers} writers × {appends} appends of a {RECORD_BYTES} B record (one record-put entry per request), {full_passes} passes");

        let t = Instant::now();
        let mut setups = Vec::new();
        for i in 0..writers * full_passes {
            setups.push(tokio::spawn(setup_writer(router.clone(), i, appends)));
        }
        let mut all = Vec::new();
        for s in setups {
            all.push(s.await.unwrap());
        }
        println!("  setup (untimed): {:.1} s", t.elapsed().as_secs_f64());

        let baseline = Arc::new(Baseline {
            identities: all.iter().map(|w| (w.me.fingerprint(), w.me.clone())).collect(),
            origin: origin(),
        });
        let base_router = axum::Router::new()
            .route(
                "/v1/vaults/{vault}/log",
                axum::routing::post(baseline_append),
            )
            .with_state(baseline);
        // Each pass has writers of its own, each with a vault of its own:
        // every pass starts from the same state.
        let pass_reqs: Vec<Vec<Vec<Prepared>>> = all
            .chunks(writers)
            .map(|pass| pass.iter().map(|w| w.appends.clone()).collect())
            .collect();
        let reqs = &pass_reqs[0];
        let n = writers * appends;

        let mut passes = Vec::new();
        for _ in 0..BASELINE_PASSES {
            perf_ctl("baseline", "enable");
            let (cpu, _, ok) = run(&base_router, reqs).await;
            perf_ctl("baseline", "disable");
            assert_eq!(ok, n);
            passes.push(us_per(cpu, n));
        }
        let shown: Vec<String> = passes.iter().map(|p| format!("{p:.1}")).collect();
        passes.sort_by(f64::total_cmp);
        let base = passes[passes.len() / 2];
        println!(
            "  baseline (mandatory work: request signature, JSON, entry parse, entry and metadata signatures): {base:.1} µs CPU/append (median of {BASELINE_PASSES} passes: {})",
            shown.join(", ")
        );

        let mut fulls = Vec::new();
        for reqs in &pass_reqs {
            perf_ctl("full", "enable");
            let (cpu, wall, ok) = run(&router, reqs).await;
            perf_ctl("full", "disable");
            assert_eq!(ok, n);
            fulls.push((us_per(cpu, n), cpu, wall));
        }
        let shown: Vec<String> = fulls.iter().map(|f| format!("{:.1}", f.0)).collect();
        fulls.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (full, cpu, wall) = fulls[fulls.len() / 2];
        println!(
            "  full append (durable, through Relay::router): {full:.1} µs CPU/append (median of {full_passes} passes: {}; that pass: {n} appends in {:.2} s wall, {:.0}/s, {:.0}% of a core)",
            shown.join(", "),
            wall.as_secs_f64(),
            n as f64 / wall.as_secs_f64(),
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
        );
        let ratio = full / base;
        println!(
            "  ratio full / baseline: {ratio:.2}× (target ≤ {TARGET_RATIO}×): {}",
            if ratio <= TARGET_RATIO { "PASS" } else { "MISS" }
        );
        drop(router);
        drop(relay);
    });
    drop(dir);
}

/// Opens the relay on SQLite, or on `RELAY_BENCH_DATABASE` (feature
/// `postgres`).
async fn open(config: Config) -> (Relay, String) {
    if let Ok(url) = std::env::var("RELAY_BENCH_DATABASE") {
        #[cfg(feature = "postgres")]
        {
            use relay_server::storage::backends::{DatabaseUrl, MetaBackend};
            let mut config = config;
            config.storage.meta = MetaBackend::Postgres(DatabaseUrl::parse(&url).unwrap());
            let relay = Relay::connect(config).await.unwrap();
            return (relay, "PostgreSQL metadata, file blobs".to_string());
        }
        #[cfg(not(feature = "postgres"))]
        panic!("RELAY_BENCH_DATABASE={url} needs --features postgres");
    }
    (
        Relay::open(config).unwrap(),
        "SQLite metadata, file blobs".to_string(),
    )
}
