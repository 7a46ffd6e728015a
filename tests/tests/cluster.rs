//! Several relay instances on shared storage (`scripts/cluster`:
//! PostgreSQL, a SeaweedFS cluster of three volume servers in three racks
//! with replication 010, three relays of this build, haproxy in front),
//! driven by real clients. One cluster, in phases; after each, a fresh
//! client joins the vault (its whole log verified from genesis by
//! vault-core), a follower kept since the start pulls without rollback or
//! fork, every acknowledged entry is in the log at its place and every
//! acknowledged blob downloads with its hash:
//!
//! 1. **race**: writers connected to different instances directly race
//!    compare-and-swap appends on one vault; the instances caught up from
//!    the database (their `relay_vault_catch_ups` counters moved), and a
//!    request accepted by one instance is refused as a replay by another;
//! 2. **kill -9**: writers through haproxy while one relay instance after
//!    another is killed with SIGKILL (`VAULT_CLUSTER_KILLS`, default 20)
//!    and started again by the script;
//! 3. **PostgreSQL restart** during writes;
//! 4. **a volume server stopped** during writes (and started again);
//! 5. **database down**: `/healthz` turns `503 degraded` naming the
//!    database, `/metrics` shows `relay_backend_up{backend="database"} 0`,
//!    requests get `503` with `retry-after`, directly and through haproxy;
//!    once it is back, writes resume.
//!
//! After phases 2 to 5 the writers must have been acknowledged again
//! (service resumed). Needs PostgreSQL, SeaweedFS and haproxy
//! (`scripts/services install`) and a relay-server built with the
//! `postgres` and `s3` features (`cargo test --workspace --all-features`
//! builds it). `--nocapture` prints one line per phase.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vault_client::{sync, ClientError, RelayClient, RetryPolicy};
use vault_core::request::{body_digest, RelayOrigin, RequestAuth};
use vault_core::store::{MemoryStore, Store};
use vault_core::{
    CollectionId, EntryBody, Keyring, Permission, RecordInfo, Role, SecretIdentity, VaultId,
    VaultState,
};
use vault_tests::cluster::{http_get, Cluster};
use vault_tests::{principal, Rng};

/// Upload chunk: larger records take several requests.
const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Ledger {
    /// Acknowledged appends: (seq, entry hash).
    entries: Vec<(u64, [u8; 32])>,
    /// Acknowledged blobs: (hash, length).
    blobs: Vec<([u8; 32], u64)>,
    /// Requests that failed without an acknowledgement (a relay killed,
    /// the database restarting): allowed, counted.
    failures: usize,
    /// Compare-and-swap refusals (a writer lost a race).
    conflicts: usize,
    /// The last unacknowledged failure, for the report.
    last_failure: Option<String>,
    /// Findings: an integrity failure seen by a writer.
    violations: Vec<String>,
}

fn lock(l: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

struct Setting {
    vault: VaultId,
    owner: Arc<SecretIdentity>,
    collection: CollectionId,
}

fn body(rng: &mut Rng) -> Vec<u8> {
    let len = if rng.next_u64() % 8 == 0 {
        rng.range(70 * 1024, 140 * 1024)
    } else {
        rng.range(200, 4 * 1024)
    };
    let salt = rng.next_u64();
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ salt.rotate_left((i % 64) as u32)) as u8)
        .collect()
}

/// One record: pull, seal, upload, append (again on a moved head).
async fn write_one(
    client: &RelayClient,
    store: &mut MemoryStore,
    s: &Setting,
    ledger: &Mutex<Ledger>,
    rng: &mut Rng,
) -> Result<(), ClientError> {
    let me = client.identity().clone();
    let body = body(rng);
    loop {
        let state = sync::pull(store, client, &s.vault).await?;
        let now = client.now();
        let mut ciphertext = Vec::new();
        let (metadata, entry) = state.put_record(
            &mut Keyring::new(&me, now),
            &s.collection,
            None,
            &RecordInfo {
                content_type: "fhir+Observation".into(),
                title: "cluster test".into(),
                created_at: now,
                effective_at: None,
            },
            vault_core::RecordBody::new(&body[..], body.len() as u64),
            &mut ciphertext,
        )?;
        let hash = *metadata.ciphertext_hash();
        let len = ciphertext.len() as u64;
        let status = client
            .put_blob(&s.vault, &hash, len, &mut Cursor::new(&ciphertext[..]))
            .await?;
        assert!(status.stored && status.offset == len, "{status:?}");
        lock(ledger).blobs.push((hash, len));
        match client
            .append(&s.vault, state.head().into(), std::slice::from_ref(&entry))
            .await
        {
            Ok(_) => {
                lock(ledger).entries.push((entry.seq(), *entry.hash()));
                return Ok(());
            }
            Err(ClientError::HeadMoved { .. }) => lock(ledger).conflicts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Writes until `stop`; failures without an acknowledgement are counted,
/// integrity failures are findings.
async fn writer(
    client: RelayClient,
    mut store: MemoryStore,
    s: Arc<Setting>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) -> MemoryStore {
    while !stop.load(Ordering::Relaxed) {
        match write_one(&client, &mut store, &s, &ledger, &mut rng).await {
            Ok(()) => {}
            // A resumed upload that made no progress: its lease was still
            // held by an instance killed mid-chunk (it runs out within
            // 20 s). Not acknowledged, so not a finding; a new record is
            // written instead.
            Err(ClientError::Protocol(p)) if p.contains("made no progress") => {
                let mut l = lock(&ledger);
                l.failures += 1;
                l.last_failure = Some(format!("a stuck upload: {p}"));
            }
            Err(e @ (ClientError::Core(_) | ClientError::Protocol(_))) => {
                lock(&ledger).violations.push(format!(
                    "a writer saw an integrity failure: {e} ({})",
                    e.code()
                ));
                return store;
            }
            Err(e) => {
                {
                    let mut l = lock(&ledger);
                    l.failures += 1;
                    l.last_failure = Some(format!("{e} ({})", e.code()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    store
}

/// Writers running in the background.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<MemoryStore>>,
}

impl Writers {
    fn start(
        rt: &tokio::runtime::Runtime,
        clients: Vec<RelayClient>,
        stores: Vec<MemoryStore>,
        s: &Arc<Setting>,
        ledger: &Arc<Mutex<Ledger>>,
        rng: &mut Rng,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = clients
            .into_iter()
            .zip(stores)
            .map(|(c, st)| {
                rt.spawn(writer(
                    c,
                    st,
                    s.clone(),
                    ledger.clone(),
                    stop.clone(),
                    Rng::new(rng.next_u64()),
                ))
            })
            .collect();
        Self { stop, tasks }
    }

    fn stop(self, rt: &tokio::runtime::Runtime) -> Vec<MemoryStore> {
        self.stop.store(true, Ordering::Relaxed);
        rt.block_on(async {
            let mut out = Vec::new();
            for t in self.tasks {
                out.push(t.await.unwrap());
            }
            out
        })
    }
}

/// Everything acknowledged so far is there: the log verifies from genesis
/// for a fresh client, the follower pulls onto it, every acknowledged
/// entry is at its place, every acknowledged blob and every record-put's
/// blob downloads.
async fn verify(
    client: &RelayClient,
    s: &Setting,
    follower: &mut MemoryStore,
    ledger: &Mutex<Ledger>,
    phase: &str,
) -> Vec<String> {
    let mut found: Vec<String> = lock(ledger)
        .violations
        .drain(..)
        .map(|v| format!("{phase}: {v}"))
        .collect();
    let mut fresh = MemoryStore::new();
    let state = match sync::join_vault(&mut fresh, client, &s.vault, &s.owner.fingerprint()).await {
        Ok(st) => st,
        Err(e) => {
            found.push(format!(
                "{phase}: the log does not verify from genesis: {e}"
            ));
            return found;
        }
    };
    match sync::pull(follower, client, &s.vault).await {
        Ok(f) if f.head() == state.head() => {}
        Ok(f) => found.push(format!(
            "{phase}: the follower reached {} while a fresh join reached {}",
            f.head().seq,
            state.head().seq
        )),
        Err(e) => found.push(format!("{phase}: the follower's pull failed: {e}")),
    }
    let (entries, blobs) = {
        let l = lock(ledger);
        (l.entries.clone(), l.blobs.clone())
    };
    for (seq, hash) in &entries {
        if state.checkpoint_at(*seq).map(|c| c.head) != Some(*hash) {
            found.push(format!(
                "{phase}: acknowledged entry {seq} is not in the log"
            ));
        }
    }
    let mut wanted: std::collections::BTreeMap<[u8; 32], u64> = blobs.into_iter().collect();
    for e in fresh.entries(&s.vault, 0).unwrap() {
        if let EntryBody::RecordPut { metadata } = e.body() {
            wanted.insert(*metadata.ciphertext_hash(), metadata.ciphertext_len());
        }
    }
    for (hash, len) in wanted {
        let mut out = Vec::new();
        match client
            .get_blob(
                &s.vault,
                &hash,
                vault_core::address::AddressKind::CURRENT,
                len,
                &mut out,
            )
            .await
        {
            Ok(()) if vault_core::address::AddressKind::CURRENT.digest(&out) == hash => {}
            Ok(()) => found.push(format!(
                "{phase}: blob {} has other bytes",
                hex::encode(hash)
            )),
            Err(e) => found.push(format!(
                "{phase}: acknowledged blob {} ({len} bytes) does not download: {e}",
                hex::encode(hash)
            )),
        }
    }
    found
}

/// The sum of a counter over every instance's `/metrics`.
fn metric_sum(cluster: &Cluster, name: &str) -> f64 {
    cluster
        .admin
        .iter()
        .filter_map(|a| http_get(&format!("{a}/metrics")))
        .flat_map(|(_, text)| {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Waits until `cond` holds (up to `within`); whether it did.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}

fn acked(ledger: &Mutex<Ledger>) -> usize {
    lock(ledger).entries.len()
}

/// The writers' state, for a failure message.
fn status(ledger: &Mutex<Ledger>) -> String {
    let l = lock(ledger);
    format!(
        "{} entries acknowledged, {} failures (last: {:?}), findings: {:?}",
        l.entries.len(),
        l.failures,
        l.last_failure,
        l.violations
    )
}

#[test]
fn several_instances_converge_and_survive_failures() {
    let kills: usize = std::env::var("VAULT_CLUSTER_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("VAULT_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(vault_tests::now);
    println!("cluster test: VAULT_CLUSTER_SEED={seed}, {kills} kills");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let cluster = Cluster::start(&["--rate", "1000000", "--burst", "1000000"]);
    println!(
        "cluster up in {:.1} s: {} via {:?}",
        started.elapsed().as_secs_f64(),
        cluster.url,
        cluster.instances
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let patient = principal(61, "Pat Cluster", Role::Patient);
    let clinician = principal(62, "Dr Cluster", Role::Clinician);
    let through_lb = |who: &Arc<SecretIdentity>| {
        cluster
            .client(who, RetryPolicy::default())
            .with_chunk_size(CHUNK)
    };

    // The vault, shared read-write with the clinician.
    let setting = rt.block_on(async {
        for who in [&patient, &clinician] {
            through_lb(who).publish_identity().await.unwrap();
        }
        let client = through_lb(&patient);
        let mut store = MemoryStore::new();
        let (_, genesis) = VaultState::create(&patient, client.now()).unwrap();
        let state = sync::create_vault(&mut store, &client, &genesis)
            .await
            .unwrap();
        let vault = state.vault();
        let mut collection = None;
        sync::push_with_retry(&mut store, &client, &vault, |st| {
            let (c, e) = st.create_collection(&patient, "Observations", client.now())?;
            collection = Some(c);
            Ok(vec![e])
        })
        .await
        .unwrap();
        let collection = collection.unwrap();
        sync::push_with_retry(&mut store, &client, &vault, |st| {
            let now = client.now();
            Ok(vec![st.share_collection(
                &mut Keyring::new(&patient, now),
                &collection,
                clinician.public(),
                Permission::ReadWrite,
                None,
            )?])
        })
        .await
        .unwrap();
        Arc::new(Setting {
            vault,
            owner: patient.clone(),
            collection,
        })
    });
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let owner_lb = through_lb(&patient);
    let mut follower = MemoryStore::new();
    rt.block_on(sync::join_vault(
        &mut follower,
        &owner_lb,
        &setting.vault,
        &patient.fingerprint(),
    ))
    .unwrap();
    let joined = |who: &Arc<SecretIdentity>, client: &RelayClient| {
        let mut st = MemoryStore::new();
        rt.block_on(sync::join_vault(
            &mut st,
            client,
            &setting.vault,
            &setting.owner.fingerprint(),
        ))
        .unwrap_or_else(|e| panic!("{} joins: {e}", who.fingerprint()));
        st
    };
    let mut found: Vec<String> = Vec::new();
    let check = |found: &mut Vec<String>, follower: &mut MemoryStore, phase: &str| {
        found.extend(rt.block_on(verify(&owner_lb, &setting, follower, &ledger, phase)));
        let l = lock(&ledger);
        println!(
            "{phase}: {} entries and {} blobs acknowledged so far ({} CAS conflicts, {} unacknowledged failures), {:.0} s in; {} findings",
            l.entries.len(),
            l.blobs.len(),
            l.conflicts,
            l.failures,
            started.elapsed().as_secs_f64(),
            found.len()
        );
    };

    // 1. Race: four writers, each on an instance of its own (two on the
    // first), appending to one vault.
    let plan = [
        (&patient, 1),
        (&clinician, 2),
        (&patient, 3),
        (&clinician, 1),
    ];
    let clients: Vec<RelayClient> = plan
        .iter()
        .map(|(who, i)| cluster.instance_client(*i, who).with_chunk_size(CHUNK))
        .collect();
    let stores = plan
        .iter()
        .zip(&clients)
        .map(|((who, _), c)| joined(who, c))
        .collect();
    let writers = Writers::start(&rt, clients, stores, &setting, &ledger, &mut rng);
    std::thread::sleep(Duration::from_secs(6));
    writers.stop(&rt);
    let race_acked = acked(&ledger);
    check(&mut found, &mut follower, "race");
    assert!(race_acked > 0, "no append acknowledged in the race");
    let catch_ups = metric_sum(&cluster, "relay_vault_catch_ups_total");
    assert!(
        catch_ups > 0.0,
        "instances never caught up on entries another stored: {catch_ups}"
    );
    // A request accepted by one instance is a replay at another.
    rt.block_on(async {
        let origin = RelayOrigin::parse(&cluster.url).unwrap();
        let pq = format!("/v1/vaults/{}/head", setting.vault.to_hex());
        let auth = RequestAuth::sign(
            &patient,
            "GET",
            &pq,
            &origin,
            vault_tests::now(),
            body_digest(b""),
        )
        .unwrap();
        let http = reqwest::Client::new();
        let mut statuses = Vec::new();
        let mut codes = Vec::new();
        for base in [&cluster.instances[0], &cluster.instances[1]] {
            let mut req = http.get(format!("{base}{pq}"));
            for (k, v) in auth.headers() {
                req = req.header(k, v);
            }
            let resp = req.send().await.unwrap();
            statuses.push(resp.status().as_u16());
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            codes.push(body["error"]["code"].as_str().unwrap_or("").to_owned());
        }
        assert_eq!(statuses, [200, 401], "{codes:?}");
        assert_eq!(codes[1], "replayed_nonce");
    });

    // 2. kill -9 one instance after another during writes through haproxy.
    let lb_clients = || {
        vec![
            through_lb(&patient),
            through_lb(&clinician),
            through_lb(&patient),
        ]
    };
    let lb_stores = |clients: &[RelayClient]| {
        [&patient, &clinician, &patient]
            .iter()
            .zip(clients)
            .map(|(who, c)| joined(who, c))
            .collect::<Vec<_>>()
    };
    let clients = lb_clients();
    let stores = lb_stores(&clients);
    let writers = Writers::start(&rt, clients, stores, &setting, &ledger, &mut rng);
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.range(150, 600)));
        let i = k % cluster.instances.len() + 1;
        let pid = cluster.kill9_relay(i);
        // The script starts it again; wait until it serves.
        let back = eventually(Duration::from_secs(30), || {
            cluster.relay_pid(i) != pid && cluster.wait_healthy(i, Duration::from_millis(500))
        });
        assert!(back, "relay {i} did not come back after kill -9 {k}");
    }
    let before = acked(&ledger);
    assert!(
        eventually(Duration::from_secs(20), || acked(&ledger) > before),
        "no write acknowledged after the last kill: {}",
        status(&ledger)
    );
    writers.stop(&rt);
    check(&mut found, &mut follower, "kill -9");

    // 3. PostgreSQL restarts during writes.
    let clients = lb_clients();
    let stores = lb_stores(&clients);
    let writers = Writers::start(&rt, clients, stores, &setting, &ledger, &mut rng);
    std::thread::sleep(Duration::from_secs(2));
    cluster.ctl(&["restart-postgres"]);
    let before = acked(&ledger);
    assert!(
        eventually(Duration::from_secs(30), || acked(&ledger) > before),
        "no write acknowledged after PostgreSQL restarted: {}",
        status(&ledger)
    );
    writers.stop(&rt);
    check(&mut found, &mut follower, "PostgreSQL restart");

    // 4. One volume server stops during writes.
    let clients = lb_clients();
    let stores = lb_stores(&clients);
    let writers = Writers::start(&rt, clients, stores, &setting, &ledger, &mut rng);
    std::thread::sleep(Duration::from_secs(2));
    cluster.ctl(&["stop-volume", "2"]);
    let before = acked(&ledger);
    assert!(
        eventually(Duration::from_secs(60), || acked(&ledger) > before + 3),
        "writes did not go on with one volume server stopped: {}",
        status(&ledger)
    );
    writers.stop(&rt);
    check(&mut found, &mut follower, "volume server stopped");
    cluster.ctl(&["start-volume", "2"]);

    // 5. The database down: degraded, 503 with retry-after; then back.
    cluster.ctl(&["stop-postgres"]);
    // Every instance notices within its probes (two failures a second
    // apart), haproxy within its checks.
    let degraded = eventually(Duration::from_secs(15), || {
        cluster.admin.iter().all(|a| {
            http_get(&format!("{a}/healthz"))
                .is_some_and(|(s, b)| s == 503 && b.contains("\"database\""))
        })
    });
    let metrics = http_get(&format!("{}/metrics", cluster.admin[0]))
        .map(|(_, b)| b)
        .unwrap_or_default();
    let unsigned_head = |base: &str| {
        let url = format!("{base}/v1/vaults/{}/head", setting.vault.to_hex());
        rt.block_on(async {
            let resp = reqwest::get(url).await.unwrap();
            (
                resp.status().as_u16(),
                resp.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            )
        })
    };
    let direct = unsigned_head(&cluster.instances[0]);
    let mut via_lb = unsigned_head(&cluster.url);
    eventually(Duration::from_secs(10), || {
        via_lb = unsigned_head(&cluster.url);
        via_lb.0 == 503
    });
    cluster.ctl(&["start-postgres"]);
    assert!(degraded, "/healthz did not report the database down");
    assert!(
        metrics.contains("relay_backend_up{backend=\"database\"} 0"),
        "/metrics does not say the database is down:\n{metrics}"
    );
    assert_eq!(
        direct.0, 503,
        "a relay answered {direct:?} without its database"
    );
    assert!(direct.1.is_some(), "no retry-after from the relay");
    assert_eq!(
        via_lb.0, 503,
        "haproxy answered {via_lb:?} without a database"
    );
    assert!(via_lb.1.is_some(), "no retry-after through haproxy");
    assert!(
        eventually(Duration::from_secs(30), || (1..=3)
            .all(|i| cluster.wait_healthy(i, Duration::from_millis(200)))),
        "the relays did not become healthy again"
    );
    let clients = lb_clients();
    let stores = lb_stores(&clients);
    let writers = Writers::start(&rt, clients, stores, &setting, &ledger, &mut rng);
    let before = acked(&ledger);
    let resumed = eventually(Duration::from_secs(30), || acked(&ledger) > before);
    writers.stop(&rt);
    assert!(
        resumed,
        "no write acknowledged once the database was back: {}",
        status(&ledger)
    );
    check(&mut found, &mut follower, "database back");

    if !found.is_empty() {
        let mut cluster = cluster;
        panic!(
            "cluster test: {} finding(s) (VAULT_CLUSTER_SEED={seed}; logs in {}/logs, kept)\n  {}",
            found.len(),
            cluster.keep().display(),
            found.join("\n  ")
        );
    }
    println!(
        "cluster test: passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
