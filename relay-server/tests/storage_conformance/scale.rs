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
    conformance, AppendBatch, BlobInfo, BlobStore, Chunk, ChunkOutcome, CreateOutcome, Head,
    MetaStore, UploadKey,
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
        assert_eq!(
            meta.create_vault(v, owner, g.clone(), u64::MAX)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        meta.append(AppendBatch {
            vault: v,
            prev: Head {
                seq: 0,
                hash: g.hash,
            },
            entries: vec![e1.clone()],
            blob_refs: vec![],
            inbox: vec![vault_core::Fingerprint::from_bytes([2; 32])],
            purged: vec![],
            account: owner,
            quota: u64::MAX,
        })
        .await
        .unwrap();
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
    assert_eq!(
        meta.head(v).await.unwrap(),
        Some(Head {
            seq: 1,
            hash: e1.hash
        })
    );
    assert_eq!(
        meta.entries(v, 0, 10).await.unwrap(),
        vec![g.bytes.clone(), e1.bytes.clone()]
    );
    assert_eq!(
        meta.inbox(vault_core::Fingerprint::from_bytes([2; 32]))
            .await
            .unwrap(),
        vec![v]
    );
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
