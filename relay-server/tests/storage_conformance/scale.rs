//! The scale-out backends beyond the shared suite: helpers that open them
//! on the test services, crash consistency (reopening after a drop, a
//! chunk cut off mid-part), and bad configurations, whose errors must name
//! what to fix, leak no secret and leave nothing behind.
// Helpers of the S3 tests go unused in a build with `postgres` alone.
#![cfg_attr(not(feature = "s3"), allow(unused_imports, dead_code))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use relay_server::storage::backends::{
    self, BackendError, BlobBackend, DatabaseUrl, MetaBackend, StorageConfig,
};
use relay_server::storage::postgres::PgMeta;
use relay_server::storage::{
    conformance, AppendBatch, BlobInfo, BlobStore, Chunk, ChunkOutcome, Head, MetaStore, UploadKey,
};

use super::services::{self, Cluster};

/// A fresh, migrated database of the cluster.
pub async fn pg_meta(cluster: &Cluster) -> Arc<PgMeta> {
    let url = cluster.pg.fresh_database(&cluster.unique("t")).await;
    Arc::new(PgMeta::connect(&url, 24).await.unwrap())
}

/// The test bucket under a fresh prefix.
#[cfg(feature = "s3")]
pub async fn s3_blobs(
    cluster: &Cluster,
    pool: deadpool_postgres::Pool,
) -> Arc<relay_server::storage::s3::S3Blobs> {
    let location = cluster.s3.location(&cluster.unique("p"));
    Arc::new(
        relay_server::storage::s3::S3Blobs::connect(&location, &services::credentials(), pool)
            .await
            .unwrap(),
    )
}

fn sha(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

fn body(parts: Vec<Result<Vec<u8>, std::io::Error>>) -> relay_server::storage::BodyStream {
    Box::pin(futures_util::stream::iter(
        parts.into_iter().map(|p| p.map(bytes::Bytes::from)),
    ))
}

async fn read_all(blobs: &dyn BlobStore, hash: [u8; 32], start: u64, len: u64) -> Vec<u8> {
    let mut r = blobs.read(hash, start, len).await.unwrap();
    let mut out = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut out)
        .await
        .unwrap();
    out
}

/// Deterministic bytes that do not repeat at part boundaries.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761) as u8 ^ (i >> 13) as u8)
        .collect()
}

/// Everything acknowledged survives dropping the stores (a crash: no
/// close) and opening them again on the same database and bucket; an
/// upload continues from its acknowledged offset after a chunk that was
/// cut off mid-part, whatever the relay process; the blob (several
/// multipart parts, a tail kept in PostgreSQL between chunks) reads back
/// whole and by ranges across part boundaries.
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_s3_reopen_keeps_what_was_acknowledged() {
    use relay_server::storage::s3::{S3Blobs, PART_SIZE};
    let cluster = services::cluster().await;
    let url = cluster.pg.fresh_database(&cluster.unique("t")).await;
    let location = cluster.s3.location(&cluster.unique("p"));
    let open = || async {
        let meta = Arc::new(PgMeta::connect(&url, 8).await.unwrap());
        let blobs = S3Blobs::connect(&location, &services::credentials(), meta.pool().clone())
            .await
            .unwrap();
        (meta, blobs)
    };
    let owner = vault_core::Fingerprint::from_bytes([1; 32]);
    let v = vault_core::VaultId::from_bytes([1; 16]);
    let g = conformance::entry(1, 0, "genesis");
    let e1 = conformance::entry(1, 1, "a");
    // Two full parts and a tail: 2.5 parts, sent in chunks of 3 MiB.
    let big = pattern(PART_SIZE * 5 / 2 + 12_345);
    let key = UploadKey {
        vault: v,
        hash: sha(&big),
    };
    let total = big.len() as u64;
    let chunk = |offset: usize, len: usize| Chunk {
        offset: offset as u64,
        total,
        max_chunk: 64 << 20,
        digest: sha(&big[offset..offset + len]),
    };
    const C: usize = 3 << 20;
    let stopped_at;
    {
        let (meta, blobs) = open().await;
        super::write_log(&*meta, owner, v, &g, &e1).await;
        // Three chunks: 9 MiB acknowledged, one part uploaded, 1 MiB of
        // tail in PostgreSQL.
        let mut at = 0;
        for _ in 0..3 {
            let out = blobs
                .write_chunk(key, chunk(at, C), body(vec![Ok(big[at..at + C].to_vec())]))
                .await
                .unwrap();
            at += C;
            assert_eq!(out, ChunkOutcome::Partial(at as u64));
            meta.charge_upload(v, key.hash, owner, C as u64)
                .await
                .unwrap();
        }
        // A chunk cut off after it filled (and uploaded) the next part.
        let cut = body(vec![
            Ok(big[at..at + PART_SIZE].to_vec()),
            Err(std::io::Error::other("client gone")),
        ]);
        let r = blobs.write_chunk(key, chunk(at, PART_SIZE + 1), cut).await;
        assert!(
            matches!(r, Err(relay_server::storage::ChunkError::Body(_))),
            "{r:?}"
        );
        assert_eq!(blobs.upload_offset(key).await.unwrap(), at as u64);
        stopped_at = at;
        // No close: the stores are dropped as a crash would leave them.
    }
    let (meta, blobs) = open().await;
    super::log_survived(&*meta, v, &g, &e1).await;
    assert_eq!(
        meta.usage(owner).await.unwrap(),
        (g.bytes.len() + e1.bytes.len() + 3 * C) as u64
    );
    // The upload continues where it was acknowledged, in uneven chunks.
    assert_eq!(blobs.upload_offset(key).await.unwrap(), stopped_at as u64);
    let mut at = stopped_at;
    while at < big.len() {
        let len = (5 << 20).min(big.len() - at);
        let out = blobs
            .write_chunk(
                key,
                chunk(at, len),
                body(vec![Ok(big[at..at + len].to_vec())]),
            )
            .await
            .unwrap();
        at += len;
        if at < big.len() {
            assert_eq!(out, ChunkOutcome::Partial(at as u64));
        } else {
            assert_eq!(out, ChunkOutcome::Complete);
        }
    }
    meta.add_blob(
        v,
        key.hash,
        BlobInfo {
            len: total,
            uploader: owner,
        },
        u64::MAX,
        None,
    )
    .await
    .unwrap();
    assert_eq!(blobs.upload_offset(key).await.unwrap(), 0);
    assert!(read_all(&blobs, key.hash, 0, total).await == big);
    let across = (PART_SIZE - 10) as u64;
    assert_eq!(
        read_all(&blobs, key.hash, across, 20).await,
        big[PART_SIZE - 10..PART_SIZE + 10]
    );
    assert_eq!(
        read_all(&blobs, key.hash, total - 5, 100).await,
        big[big.len() - 5..]
    );
    // Uploaded again (another vault): the address exists, nothing changes.
    let key2 = UploadKey {
        vault: vault_core::VaultId::from_bytes([2; 16]),
        hash: key.hash,
    };
    let mut at = 0;
    while at < big.len() {
        let len = (PART_SIZE + 1).min(big.len() - at);
        blobs
            .write_chunk(
                key2,
                chunk(at, len),
                body(vec![Ok(big[at..at + len].to_vec())]),
            )
            .await
            .unwrap();
        at += len;
    }
    assert!(read_all(&blobs, key.hash, 0, total).await == big);
    assert_eq!(
        blobs
            .sweep_uploads(std::time::Duration::ZERO)
            .await
            .unwrap(),
        0
    );
}

/// Every object is kept on two volume servers in different racks: the
/// master reports the bucket's volumes with replication 010, each on two
/// of the three racks.
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_keeps_every_object_on_two_racks() {
    let cluster = services::cluster().await;
    let status: serde_json::Value = serde_json::from_str(&cluster.s3.placement()).unwrap();
    let topology = &status["Topology"];
    let layouts = topology["Layouts"].as_array().unwrap();
    let bucket = layouts
        .iter()
        .find(|l| l["collection"] == services::BUCKET)
        .expect("the bucket has volumes");
    assert_eq!(bucket["replication"], "010", "{bucket}");
    let racks = topology["DataCenters"][0]["Racks"].as_array().unwrap();
    assert_eq!(racks.len(), 3, "three racks");
    let writable: Vec<u64> = bucket["writables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(!writable.is_empty());
    let on_rack = |rack: &serde_json::Value, id: u64| {
        rack["DataNodes"].as_array().unwrap().iter().any(|n| {
            n["VolumeIds"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .any(|r| match r.split_once('-') {
                    Some((a, b)) => {
                        (a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap()).contains(&id)
                    }
                    None => r.parse::<u64>().ok() == Some(id),
                })
        })
    };
    for id in writable {
        let copies = racks.iter().filter(|r| on_rack(r, id)).count();
        assert_eq!(copies, 2, "volume {id} is on {copies} racks: {status}");
    }
}

fn expect_err(r: Result<backends::Opened, BackendError>) -> String {
    match r {
        Ok(_) => panic!("a bad configuration was accepted"),
        Err(e) => e.to_string(),
    }
}

async fn open(storage: StorageConfig) -> Result<backends::Opened, BackendError> {
    let dir = tempfile::tempdir().unwrap();
    backends::open(&storage, dir.path(), 64, Arc::new(|_| {})).await
}

fn pg(url: &str) -> StorageConfig {
    StorageConfig {
        meta: MetaBackend::Postgres(DatabaseUrl::parse(url).unwrap()),
        blobs: BlobBackend::Files,
        database_pool: 4,
    }
}

/// A database URL that does not parse, a server that is not there, a
/// database that does not exist and a wrong password: each error names
/// `--database` and what is wrong, and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_database_settings_say_what_to_fix() {
    let cluster = services::cluster().await;
    let port = cluster.pg.port;
    let err = expect_err(open(pg("postgres://vault:hunter22@127.0.0.1:notaport/x")).await);
    assert!(err.contains("--database") && err.contains("port"), "{err}");
    assert!(!err.contains("hunter22"), "{err}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = expect_err(
        open(pg(&format!(
            "postgres://vault:hunter22@127.0.0.1:{closed}/x"
        )))
        .await,
    );
    assert!(
        err.contains("cannot connect to PostgreSQL") && err.contains("--database"),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains("hunter22"), "{err}");
    let err = expect_err(
        open(pg(&format!(
            "postgres://vault:{}@127.0.0.1:{port}/no_such_db",
            services::PG_PASSWORD
        )))
        .await,
    );
    assert!(
        err.contains("no_such_db") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains(services::PG_PASSWORD), "{err}");
    let err = expect_err(
        open(pg(&format!(
            "postgres://vault:hunter22@127.0.0.1:{port}/postgres"
        )))
        .await,
    );
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        err.contains("--database") && !err.contains("hunter22"),
        "{err}"
    );
    // TLS is refused up front, not half-way.
    let err = expect_err(
        open(pg(&format!(
            "postgres://vault@127.0.0.1:{port}/postgres?sslmode=require"
        )))
        .await,
    );
    assert!(err.contains("sslmode=require"), "{err}");
}

/// A database newer than the relay is refused; a migration applied
/// twice is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_refuse_a_newer_schema() {
    let cluster = services::cluster().await;
    let url = cluster.pg.fresh_database(&cluster.unique("t")).await;
    // Two relays starting at once take turns.
    let (a, b) = tokio::join!(PgMeta::connect(&url, 2), PgMeta::connect(&url, 2));
    let (a, _b) = (a.unwrap(), b.unwrap());
    let c = a.pool().get().await.unwrap();
    let versions: Vec<i64> = c
        .query("SELECT version FROM relay_migrations ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known: Vec<i64> = relay_server::storage::postgres::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, known);
    c.execute(
        "INSERT INTO relay_migrations (version, name) VALUES (999, 'from the future')",
        &[],
    )
    .await
    .unwrap();
    let err = match PgMeta::connect(&url, 2).await {
        Ok(_) => panic!("a newer schema was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("upgrade relay-server"), "{err}");
}

/// A bucket that does not exist, wrong credentials, a store that is not
/// there, and a store without PostgreSQL: each error names what to fix,
/// and the database is left untouched (no migration applied).
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_object_store_settings_say_what_to_fix_and_leave_nothing() {
    use relay_server::storage::backends::{S3Credentials, S3Location};
    let cluster = services::cluster().await;
    let url = cluster.pg.fresh_database(&cluster.unique("t")).await;
    let with = |location: S3Location, credentials: S3Credentials| StorageConfig {
        meta: MetaBackend::Postgres(url.clone()),
        blobs: BlobBackend::S3 {
            location,
            credentials,
        },
        database_pool: 4,
    };
    let endpoint = cluster.s3.endpoint();
    let missing = S3Location::parse(&format!("s3://no-such-bucket?endpoint={endpoint}")).unwrap();
    let err = expect_err(open(with(missing, services::credentials())).await);
    assert!(
        err.contains("no-such-bucket") && err.contains("does not exist") && err.contains("--blobs"),
        "{err}"
    );
    let wrong = S3Credentials {
        access_key_id: services::ACCESS_KEY.into(),
        secret_access_key: "not-the-secret".into(),
        session_token: None,
    };
    let err = expect_err(open(with(cluster.s3.location("x"), wrong)).await);
    assert!(
        err.contains("refused the credentials") && err.contains("AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "{err}");
    let unknown = S3Credentials {
        access_key_id: "nobody".into(),
        secret_access_key: "nothing".into(),
        session_token: None,
    };
    let err = expect_err(open(with(cluster.s3.location("x"), unknown)).await);
    assert!(err.contains("refused the credentials"), "{err}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let nowhere = S3Location::parse(&format!(
        "s3://{}?endpoint=http://127.0.0.1:{closed}",
        services::BUCKET
    ))
    .unwrap();
    let began = std::time::Instant::now();
    let err = expect_err(open(with(nowhere, services::credentials())).await);
    assert!(
        err.contains(&format!("127.0.0.1:{closed}")) && err.contains("--blobs"),
        "{err}"
    );
    assert!(
        began.elapsed() < std::time::Duration::from_secs(30),
        "fails fast"
    );
    // Nothing was written to the database by any of these.
    let meta = PgMeta::connect_unmigrated(&url, 2).await.unwrap();
    let c = meta.pool().get().await.unwrap();
    let tables: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "no partial state");
    // And a good configuration opens, through the same path the relay
    // binary takes.
    let ok = open(with(
        cluster.s3.location(&cluster.unique("p")),
        services::credentials(),
    ))
    .await
    .unwrap();
    assert!(
        ok.description.contains("PostgreSQL at") && !ok.description.contains(services::PG_PASSWORD)
    );
    (ok.close)();
}

/// The whole relay over PostgreSQL + S3, through its HTTP API in process:
/// publish, create a vault, upload a record's 10 MiB blob in signed 4 MiB
/// chunks (multipart parts and a tail between them), append its
/// record-put, download it whole and by a range across a part boundary;
/// then a second relay on the same storage serves the same head and blob.
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_serves_from_postgres_and_s3() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use relay_server::{Config, Relay};
    use serde_json::{json, Value};
    use tower::ServiceExt;
    use vault_core::request::{body_digest, RelayOrigin, RequestAuth};
    use vault_core::{IdentityInfo, Keyring, RecordInfo, Role, SecretIdentity, VaultState};

    let cluster = services::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path());
    config.storage = StorageConfig {
        meta: MetaBackend::Postgres(cluster.pg.fresh_database(&cluster.unique("t")).await),
        blobs: BlobBackend::S3 {
            location: cluster.s3.location(&cluster.unique("p")),
            credentials: services::credentials(),
        },
        database_pool: 16,
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let origin = RelayOrigin::parse("http://127.0.0.1:8787").unwrap();
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let me = SecretIdentity::from_seed(
        &[7; 32],
        &IdentityInfo {
            display_name: "Pat Patient".into(),
            role: Role::Patient,
            registration: None,
            created_at: now() - 1000,
        },
    )
    .unwrap();
    let request = |method: &str, pq: &str, body: Vec<u8>, extra: &[(&str, String)]| {
        let auth = RequestAuth::sign(&me, method, pq, &origin, now(), body_digest(&body)).unwrap();
        let mut b = Request::builder().method(method).uri(pq);
        for (k, v) in auth.headers() {
            b = b.header(k, v);
        }
        for (k, v) in extra {
            b = b.header(*k, v.as_str());
        }
        b.body(Body::from(body)).unwrap()
    };
    let call = |router: axum::Router, req: Request<Body>| async move {
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        (
            status,
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    };
    let json_of = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
    let jbody = |v: Value| serde_json::to_vec(&v).unwrap();
    let ct_json = [("content-type", "application/json".to_owned())];

    let relay = Relay::connect(config.clone()).await.unwrap();
    let router = relay.router();
    let (s, b) = call(
        router.clone(),
        request(
            "PUT",
            "/v1/identities",
            jbody(json!({"identity": me.public().to_text()})),
            &ct_json,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", json_of(&b));
    let (mut state, genesis) = VaultState::create(&me, now()).unwrap();
    let (s, b) = call(
        router.clone(),
        request(
            "POST",
            "/v1/vaults",
            jbody(json!({"genesis": b64(genesis.to_bytes())})),
            &ct_json,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", json_of(&b));
    let vault = state.vault().to_hex();
    let append = |state: &VaultState, e: &vault_core::LogEntry| {
        let h = state.head();
        request(
            "POST",
            &format!("/v1/vaults/{vault}/log"),
            jbody(json!({
                "prev": {"seq": h.seq, "hash": hex::encode(h.head)},
                "entries": [b64(e.to_bytes())],
            })),
            &ct_json,
        )
    };
    let (labs, e) = state.create_collection(&me, "labs", now()).unwrap();
    let (s, b) = call(router.clone(), append(&state, &e)).await;
    assert_eq!(s, StatusCode::OK, "{}", json_of(&b));
    state.apply(&e).unwrap();
    // A 10 MiB record: its blob spans two parts.
    let body = pattern(10 << 20);
    let mut kr = Keyring::new(&me, now());
    let mut ct = Vec::new();
    let (_, put) = state
        .put_record(
            &mut kr,
            &labs,
            None,
            &RecordInfo {
                content_type: "application/octet-stream".into(),
                title: "scan".into(),
                created_at: now(),
                effective_at: None,
            },
            vault_core::RecordBody::new(body.as_slice(), body.len() as u64),
            &mut ct,
        )
        .unwrap();
    let blob = format!(
        "/v1/vaults/{vault}/blobs/{}",
        hex::encode(vault_core::address::AddressKind::CURRENT.digest(&ct))
    );
    let mut at = 0;
    while at < ct.len() {
        let piece = ct[at..(at + (4 << 20)).min(ct.len())].to_vec();
        let n = piece.len();
        let (s, b) = call(
            router.clone(),
            request(
                "PUT",
                &blob,
                piece,
                &[
                    ("content-type", "application/octet-stream".to_owned()),
                    ("upload-length", ct.len().to_string()),
                    ("upload-offset", at.to_string()),
                ],
            ),
        )
        .await;
        at += n;
        let want = if at < ct.len() {
            StatusCode::ACCEPTED
        } else {
            StatusCode::CREATED
        };
        assert_eq!(s, want, "{}", json_of(&b));
    }
    let (s, b) = call(router.clone(), append(&state, &put)).await;
    assert_eq!(s, StatusCode::OK, "{}", json_of(&b));
    state.apply(&put).unwrap();
    let (s, got) = call(router.clone(), request("GET", &blob, Vec::new(), &[])).await;
    assert_eq!(s, StatusCode::OK);
    assert!(got == ct, "the blob reads back whole");
    let from = (8 << 20) - 8;
    let range = [("range", format!("bytes={from}-{}", from + 15))];
    let (s, got) = call(router.clone(), request("GET", &blob, Vec::new(), &range)).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(got, ct[from..from + 16]);
    // A second relay on the same storage.
    let other = Relay::connect(config).await.unwrap();
    let (s, b) = call(
        other.router(),
        request("GET", &format!("/v1/vaults/{vault}/head"), Vec::new(), &[]),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        json_of(&b)["head"]["seq"],
        state.head().seq,
        "{}",
        json_of(&b)
    );
    let (s, got) = call(other.router(), request("GET", &blob, Vec::new(), &range)).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(got, ct[from..from + 16]);
}

/// In-process calls to relays: signed requests, answers as status,
/// headers and JSON.
mod inproc {
    use axum::body::Body;
    use axum::http::{HeaderMap, Request};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;
    use vault_core::request::{body_digest, RelayOrigin, RequestAuth};
    use vault_core::{IdentityInfo, Role, SecretIdentity};

    pub fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    pub fn origin() -> RelayOrigin {
        RelayOrigin::parse("http://127.0.0.1:8787").unwrap()
    }

    pub fn person(seed: u8, role: Role) -> SecretIdentity {
        SecretIdentity::from_seed(
            &[seed; 32],
            &IdentityInfo {
                display_name: format!("person {seed}"),
                role,
                registration: None,
                created_at: now() - 1000,
            },
        )
        .unwrap()
    }

    pub fn b64(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    /// A signed request (JSON body if `body` is not null).
    pub fn signed(me: &SecretIdentity, method: &str, pq: &str, body: &Value) -> Request<Body> {
        twice(me, method, pq, body).0
    }

    /// Sends a request; status, headers and JSON body (null if none).
    pub async fn call(router: &axum::Router, req: Request<Body>) -> (u16, HeaderMap, Value) {
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Copies a request (to send the same signed bytes twice).
    pub fn twice(
        me: &SecretIdentity,
        method: &str,
        pq: &str,
        body: &Value,
    ) -> (Request<Body>, Request<Body>) {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(body).unwrap()
        };
        let auth =
            RequestAuth::sign(me, method, pq, &origin(), now(), body_digest(&bytes)).unwrap();
        let build = || {
            let mut b = Request::builder().method(method).uri(pq);
            for (k, v) in auth.headers() {
                b = b.header(k, v);
            }
            if !bytes.is_empty() {
                b = b.header("content-type", "application/json");
            }
            b.body(Body::from(bytes.clone())).unwrap()
        };
        (build(), build())
    }
}

/// Two relays over one database (as behind a load balancer): each decides
/// on the stored head, not on its cached state. A member added through one
/// relay is a member at the other, which had the vault cached before; an
/// append through the first, chained on an entry stored through the
/// second, is accepted (the first caught up from the database); a stale
/// head is refused with the stored head; and a request received by one
/// relay is refused as a replay by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_on_one_database_decide_on_the_stored_head() {
    use inproc::*;
    use relay_server::{Config, Relay};
    use serde_json::{json, Value};
    use vault_core::{Keyring, Permission, Role, VaultState};

    let cluster = services::cluster().await;
    let url = cluster.pg.fresh_database(&cluster.unique("t")).await;
    let relay = |dir: &std::path::Path| {
        let mut config = Config::for_data_dir(dir);
        config.storage = StorageConfig {
            meta: MetaBackend::Postgres(url.clone()),
            blobs: BlobBackend::Files,
            database_pool: 8,
        };
        Relay::connect(config)
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = relay(da.path()).await.unwrap();
    let b = relay(db.path()).await.unwrap();
    let (ra, rb) = (a.router(), b.router());
    let pat = person(31, Role::Patient);
    let doc = person(32, Role::Clinician);
    for (who, r) in [(&pat, &ra), (&doc, &rb)] {
        let (s, _, body) = call(
            r,
            signed(
                who,
                "PUT",
                "/v1/identities",
                &json!({"identity": who.public().to_text()}),
            ),
        )
        .await;
        assert_eq!(s, 201, "{body}");
    }
    let (mut state, genesis) = VaultState::create(&pat, now()).unwrap();
    let (s, _, body) = call(
        &ra,
        signed(
            &pat,
            "POST",
            "/v1/vaults",
            &json!({"genesis": b64(genesis.to_bytes())}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let vault = state.vault().to_hex();
    let log = format!("/v1/vaults/{vault}/log");
    let append = |state: &VaultState, e: &vault_core::LogEntry| {
        let h = state.head();
        json!({
            "prev": {"seq": h.seq, "hash": hex::encode(h.head)},
            "entries": [b64(e.to_bytes())],
        })
    };
    let (labs, e) = state.create_collection(&pat, "labs", now()).unwrap();
    let (s, _, body) = call(&ra, signed(&pat, "POST", &log, &append(&state, &e))).await;
    assert_eq!(s, 200, "{body}");
    let stale = state.clone();
    state.apply(&e).unwrap();
    // Relay A has the vault cached; the clinician is no member yet.
    let (s, _, body) = call(&ra, signed(&doc, "GET", &log, &Value::Null)).await;
    assert_eq!(s, 403, "{body}");
    // Shared through relay B.
    let share = state
        .share_collection(
            &mut Keyring::new(&pat, now()),
            &labs,
            doc.public(),
            Permission::ReadWrite,
            None,
        )
        .unwrap();
    let (s, _, body) = call(&rb, signed(&pat, "POST", &log, &append(&state, &share))).await;
    assert_eq!(s, 200, "{body}");
    state.apply(&share).unwrap();
    let at_share = state.clone();
    let catch_ups = a.state.vault_catch_ups();
    // Relay A now lets the clinician read: it caught up.
    let (s, _, body) = call(&ra, signed(&doc, "GET", &log, &Value::Null)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["head"]["seq"], json!(state.head().seq));
    assert!(a.state.vault_catch_ups() > catch_ups);
    // An append through A on the head B stored.
    let (_, e2) = state.create_collection(&pat, "notes", now()).unwrap();
    let (s, _, body) = call(&ra, signed(&pat, "POST", &log, &append(&state, &e2))).await;
    assert_eq!(s, 200, "{body}");
    state.apply(&e2).unwrap();
    // B's cached state is still at the share. An append following it is
    // decided there without reading the store (decision 59): a refusal is
    // checked against the stored head, and a batch it accepts is refused
    // by the store's compare-and-swap; both answer with the head A stored.
    let b_catch_ups = b.state.vault_catch_ups();
    let (_, misfit) = stale.create_collection(&pat, "misfit", now()).unwrap();
    let (_, late) = at_share.create_collection(&pat, "late", now()).unwrap();
    for e in [&misfit, &late] {
        let (s, _, body) = call(&rb, signed(&pat, "POST", &log, &append(&at_share, e))).await;
        assert_eq!(s, 409, "{body}");
        assert_eq!(body["head"]["seq"], json!(state.head().seq), "{body}");
    }
    assert_eq!(
        b.state.vault_catch_ups(),
        b_catch_ups,
        "no read before deciding"
    );
    // A stale head is refused at B with the stored head.
    let (_, old) = stale.create_collection(&pat, "late", now()).unwrap();
    let (s, _, body) = call(&rb, signed(&pat, "POST", &log, &append(&stale, &old))).await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["head"]["seq"], json!(state.head().seq), "{body}");
    // One signed request, sent to A then to B.
    let (first, again) = twice(
        &pat,
        "GET",
        &format!("/v1/vaults/{vault}/head"),
        &Value::Null,
    );
    let (s, _, body) = call(&ra, first).await;
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = call(&rb, again).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("replayed_nonce")),
        "{body}"
    );
    // An append claims its nonce with its precheck, before anything is
    // decided on the vault (decision 59): its replay at the other relay
    // is refused as a replay, whether the first was accepted or refused.
    let (_, e3) = state.create_collection(&pat, "third", now()).unwrap();
    let (_, behind) = at_share.create_collection(&pat, "behind", now()).unwrap();
    for (e, on, first_status) in [(&e3, &state, 200), (&behind, &at_share, 409)] {
        let (first, again) = twice(&pat, "POST", &log, &append(on, e));
        let (s, _, body) = call(&ra, first).await;
        assert_eq!(s, first_status, "{body}");
        let (s, _, body) = call(&rb, again).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (401, Some("replayed_nonce")),
            "{body}"
        );
    }
    state.apply(&e3).unwrap();
    // Both relays' logs verify from genesis and agree.
    for r in [&ra, &rb] {
        let (s, _, body) = call(r, signed(&pat, "GET", &log, &Value::Null)).await;
        assert_eq!(s, 200);
        let entries: Vec<vault_core::LogEntry> = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(e.as_str().unwrap())
                    .unwrap();
                vault_core::LogEntry::from_bytes(&bytes).unwrap()
            })
            .collect();
        let verified = VaultState::verify_log_from(entries.iter(), None).unwrap();
        assert_eq!(verified.head(), state.head());
    }
}

/// The database going away while a relay runs: requests fail with `503
/// unavailable` and `retry-after` (at once, when a pooled connection
/// breaks; and before any work once the health probe marked the database
/// down), `/healthz` says `degraded` naming the database, the metrics say
/// `relay_backend_up{backend="database"} 0` and count the failed probes as
/// `unreachable`; once it is back, the probe clears it and requests are
/// served again. Nothing is acknowledged meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_503_with_retry_after_and_degraded_health() {
    use inproc::*;
    use relay_server::{Config, Relay};
    use serde_json::{json, Value};
    use vault_core::{Role, VaultState};

    // A PostgreSQL of its own: this test stops it.
    let watchdog = services::Watchdog::start();
    let pg = tokio::task::spawn_blocking(move || {
        let pg = services::Postgres::start(&watchdog);
        (pg, watchdog)
    })
    .await
    .unwrap();
    let (pg, _watchdog) = pg;
    let url = pg.fresh_database("outage").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path());
    config.storage = StorageConfig {
        meta: MetaBackend::Postgres(url),
        blobs: BlobBackend::Files,
        database_pool: 4,
    };
    let relay = Relay::connect(config).await.unwrap();
    let (router, admin, state) = (relay.router(), relay.admin_router(), relay.state.clone());
    let probe = || async {
        state
            .health
            .probe(&*state.meta, &*state.blobs, &state.metrics)
            .await
    };
    let pat = person(41, Role::Patient);
    let (s, _, _) = call(
        &router,
        signed(
            &pat,
            "PUT",
            "/v1/identities",
            &json!({"identity": pat.public().to_text()}),
        ),
    )
    .await;
    assert_eq!(s, 201);
    let (vs, genesis) = VaultState::create(&pat, now()).unwrap();
    let (s, _, _) = call(
        &router,
        signed(
            &pat,
            "POST",
            "/v1/vaults",
            &json!({"genesis": b64(genesis.to_bytes())}),
        ),
    )
    .await;
    assert_eq!(s, 201);
    let head = format!("/v1/vaults/{}/head", vs.vault().to_hex());
    probe().await;
    let healthz = || async {
        let req = axum::http::Request::get("/healthz")
            .body(axum::body::Body::empty())
            .unwrap();
        call(&admin, req).await
    };
    assert_eq!(healthz().await.0, 200);

    pg.stop();
    // Before any probe noticed: the broken connection is a 503.
    let (s, h, body) = call(&router, signed(&pat, "GET", &head, &Value::Null)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert!(h.contains_key("retry-after"));
    for _ in 0..relay_server::health::FAILURES_TO_DOWN {
        probe().await;
    }
    let (s, h, body) = healthz().await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["unavailable"], json!(["database"]));
    assert!(body["reasons"]["database"].is_string(), "{body}");
    assert!(h.contains_key("retry-after"));
    let metrics = state.metrics.render();
    assert!(
        metrics.contains("relay_backend_up{backend=\"database\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "relay_backend_probe_failures_total{backend=\"database\",reason=\"unreachable\"}"
        ),
        "{metrics}"
    );
    // Refused before any work.
    let (s, h, body) = call(&router, signed(&pat, "GET", &head, &Value::Null)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert!(h.contains_key("retry-after"));

    pg.start_again();
    probe().await;
    assert_eq!(healthz().await.0, 200);
    assert!(state
        .metrics
        .render()
        .contains("relay_backend_up{backend=\"database\"} 1"));
    let (s, _, body) = call(&router, signed(&pat, "GET", &head, &Value::Null)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["head"]["seq"], json!(0));
}

/// An S3 upload's lease (decision 46): renewed while its chunk streams in,
/// so a chunk slower than [`LEASE`] keeps it and a second writer is told
/// the upload is busy; and a lease nobody renews (its relay died
/// mid-chunk) runs out, after which any relay continues the upload.
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_leases_are_renewed_by_live_writers_and_run_out_for_dead_ones() {
    use std::time::Duration;

    use relay_server::storage::s3::{LEASE, LEASE_RENEWAL};
    use relay_server::storage::ChunkError;

    let cluster = services::cluster().await;
    let meta = pg_meta(&cluster).await;
    let blobs = s3_blobs(&cluster, meta.pool().clone()).await;
    let vault = vault_core::VaultId::from_bytes([5; 16]);
    let chunk_of = |blob: &[u8]| Chunk {
        offset: 0,
        total: blob.len() as u64,
        max_chunk: 1 << 20,
        digest: sha(blob),
    };

    // A live writer whose chunk takes longer than a lease.
    let slow = pattern(4000);
    let key = UploadKey {
        vault,
        hash: sha(&slow),
    };
    let (first, rest) = slow.split_at(1000);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let pause = LEASE + LEASE_RENEWAL;
    let stream: relay_server::storage::BodyStream = Box::pin(futures_util::StreamExt::then(
        futures_util::stream::iter(vec![(Duration::ZERO, first), (pause, rest)]),
        |(wait, part)| async move {
            tokio::time::sleep(wait).await;
            Ok(bytes::Bytes::from(part))
        },
    ));
    let writer = {
        let (blobs, chunk) = (blobs.clone(), chunk_of(&slow));
        tokio::spawn(async move { blobs.write_chunk(key, chunk, stream).await })
    };
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    let second = blobs
        .write_chunk(key, chunk_of(&slow), body(vec![Ok(slow.clone())]))
        .await;
    assert!(
        matches!(second, Err(ChunkError::OffsetMismatch(0))),
        "a second writer got {second:?} while the first still streams past its first lease"
    );
    assert_eq!(
        writer.await.unwrap().unwrap(),
        ChunkOutcome::Complete,
        "the slow writer kept its lease"
    );
    assert_eq!(read_all(&*blobs, key.hash, 0, 4000).await, slow);

    // A dead writer: its lease claimed (as a claim writes it) and never
    // renewed or given back; here it runs out in 2 s instead of LEASE.
    let orphan = pattern(3000);
    let key = UploadKey {
        vault,
        hash: sha(&orphan),
    };
    let c = meta.pool().get().await.unwrap();
    c.execute(
        "INSERT INTO s3_uploads (vault, hash, lease, lease_until)
         VALUES ($1, $2, 'a relay that died', now() + interval '2 seconds')",
        &[&vault.as_bytes().as_slice(), &key.hash.as_slice()],
    )
    .await
    .unwrap();
    let refused = blobs
        .write_chunk(key, chunk_of(&orphan), body(vec![Ok(orphan.clone())]))
        .await;
    assert!(
        matches!(refused, Err(ChunkError::OffsetMismatch(0))),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let taken = blobs
        .write_chunk(key, chunk_of(&orphan), body(vec![Ok(orphan.clone())]))
        .await
        .unwrap();
    assert_eq!(taken, ChunkOutcome::Complete);
    assert_eq!(read_all(&*blobs, key.hash, 0, 3000).await, orphan);
}

/// An upload whose holder's database session ended (its relay was killed,
/// or lost the database) is taken over at once by another relay, without
/// waiting for the lease to run out; the holder, if it still lives, stops
/// its chunk instead of streaming beside the new writer, and serves again
/// under a new session (decision 46).
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_whose_holder_lost_its_session_is_taken_over_at_once() {
    use std::time::{Duration, Instant};

    use relay_server::storage::s3::LEASE;
    use relay_server::storage::ChunkError;

    let cluster = services::cluster().await;
    let meta = pg_meta(&cluster).await;
    // Two relays' blob stores over one database and bucket.
    let location = cluster.s3.location(&cluster.unique("p"));
    let credentials = services::credentials();
    let connect = || {
        relay_server::storage::s3::S3Blobs::connect(&location, &credentials, meta.pool().clone())
    };
    let a = Arc::new(connect().await.unwrap());
    let b = Arc::new(connect().await.unwrap());
    let vault = vault_core::VaultId::from_bytes([6; 16]);
    let blob = pattern(5000);
    let key = UploadKey {
        vault,
        hash: sha(&blob),
    };
    let chunk = Chunk {
        offset: 0,
        total: blob.len() as u64,
        max_chunk: 1 << 20,
        digest: sha(&blob),
    };

    // Relay A takes the upload and stalls mid-chunk.
    let first = blob[..1000].to_vec();
    let stream: relay_server::storage::BodyStream = Box::pin(futures_util::StreamExt::chain(
        futures_util::stream::iter(vec![Ok(bytes::Bytes::from(first))]),
        futures_util::stream::pending(),
    ));
    let stalled = {
        let a = a.clone();
        tokio::spawn(async move { a.write_chunk(key, chunk, stream).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = b
        .write_chunk(key, chunk, body(vec![Ok(blob.clone())]))
        .await;
    assert!(
        matches!(busy, Err(ChunkError::OffsetMismatch(0))),
        "a live holder's upload was not refused to another writer: {busy:?}"
    );

    // A's session ends, as when its process is killed: the server closes
    // the session and its advisory lock goes with it.
    let c = meta.pool().get().await.unwrap();
    let ended = c
        .execute(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l, s3_uploads u
              WHERE u.vault = $1 AND u.hash = $2 AND l.locktype = 'advisory' AND l.granted
                AND l.classid::bigint = (u.holder >> 32)
                AND l.objid::bigint = (u.holder & 4294967295)",
            &[&vault.as_bytes().as_slice(), &key.hash.as_slice()],
        )
        .await
        .unwrap();
    assert_eq!(ended, 1, "the holder's presence session was not found");

    // B takes over at once, long before the lease would have run out.
    let started = Instant::now();
    let taken = loop {
        match b
            .write_chunk(key, chunk, body(vec![Ok(blob.clone())]))
            .await
        {
            Err(ChunkError::OffsetMismatch(0)) if started.elapsed() < LEASE / 2 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    assert_eq!(
        taken.unwrap(),
        ChunkOutcome::Complete,
        "the upload was not taken over"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "taking over took {:?}",
        started.elapsed()
    );
    assert_eq!(read_all(&*b, key.hash, 0, 5000).await, blob);

    // A fenced itself: its chunk stopped (unavailable), it did not stream on.
    let stopped = tokio::time::timeout(Duration::from_secs(5), stalled)
        .await
        .expect("the holder kept streaming after losing its session")
        .unwrap();
    match stopped {
        Err(ChunkError::Storage(e)) => assert!(e.unavailable, "{e}"),
        other => panic!("the holder's chunk ended with {other:?}"),
    }

    // A serves again under a new session.
    let again = pattern(2000);
    let key2 = UploadKey {
        vault,
        hash: sha(&again),
    };
    let chunk2 = Chunk {
        offset: 0,
        total: again.len() as u64,
        max_chunk: 1 << 20,
        digest: sha(&again),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let written = loop {
        match a
            .write_chunk(key2, chunk2, body(vec![Ok(again.clone())]))
            .await
        {
            Err(ChunkError::Storage(e)) if e.unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };
    assert_eq!(written.unwrap(), ChunkOutcome::Complete);
}

/// A staged append whose relay stops answering (a frozen machine keeps its
/// connection open) does not hold the vault for ever: PostgreSQL ends the
/// session after ten seconds idle in the transaction, another relay's
/// append to the same vault then goes through, and the stalled one cannot
/// commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_staged_append_is_ended_by_the_database() {
    let cluster = services::cluster().await;
    let url = cluster.pg.fresh_database(&cluster.unique("t")).await;
    let stalled_relay = PgMeta::connect(&url, 4).await.unwrap();
    let other_relay = PgMeta::connect(&url, 4).await.unwrap();
    let owner = vault_core::Fingerprint::from_bytes([1; 32]);
    let v = vault_core::VaultId::from_bytes([1; 16]);
    let g = conformance::entry(1, 0, "genesis");
    stalled_relay
        .create_vault(v, owner, g.clone(), u64::MAX)
        .await
        .unwrap();
    let batch = |tag: &str| AppendBatch {
        vault: v,
        prev: Head {
            seq: 0,
            hash: g.hash,
        },
        entries: vec![conformance::entry(1, 1, tag)],
        blob_refs: Vec::new(),
        inbox: Vec::new(),
        purged: Vec::new(),
        account: owner,
        quota: u64::MAX,
    };
    let stalled = stalled_relay
        .stage_append(None, batch("stalled"))
        .await
        .unwrap();
    // The other relay's append waits for the vault's row lock until the
    // database ends the stalled session; without that it would wait for
    // ever (the minute here is the test's bound, not the relay's).
    let other = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        other_relay.append(batch("other")),
    )
    .await
    .expect("the stalled transaction still holds the vault after a minute")
    .unwrap();
    assert_eq!(other.seq, 1);
    assert!(stalled.commit(Vec::new()).await.is_err());
    assert_eq!(stalled_relay.head(v).await.unwrap(), Some(other));
    assert_eq!(
        other_relay.entries(v, 1, 10).await.unwrap(),
        vec![conformance::entry(1, 1, "other").bytes]
    );
}
