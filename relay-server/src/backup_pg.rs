//! Backup and restore of a relay whose metadata lives in PostgreSQL, with
//! its blobs in S3-compatible object storage or in files (decision 54).
//!
//! A backup is one tar file, like the embedded storage's ([`crate::backup`]):
//! `vault-relay-backup.json` (the manifest, version 2, `"metadata":
//! "postgresql"`), `metadata.pgdump` (PostgreSQL's own `pg_dump`, custom
//! format) and `blobs/<2 hex>/<64 hex>` for every complete blob.
//!
//! **Consistency.** One repeatable-read transaction exports its snapshot;
//! `pg_dump` dumps exactly that snapshot (`--snapshot`), and the list of
//! blobs to copy is read in the same transaction. A blob is recorded only
//! once its bytes are durable and is immutable from then on, so copying the
//! listed blobs after the snapshot gives every blob any log entry of the
//! dump names. A blob purged while the backup runs makes it fail with a
//! message to run it again. Uploads in progress, their charges and the
//! request-nonce cache are left out (their tables are dumped empty): an
//! interrupted upload starts again, and a request signed before the backup
//! is too old to be replayed after a restore.
//!
//! **Restore** goes into a database with no tables (a new `createdb`), with
//! no relay serving it: every blob in the archive is checked against its
//! address while it is unpacked; `pg_restore` loads the dump in one
//! transaction; every vault log is verified from genesis with vault-core
//! and must end at its recorded head; every small blob must hash to its
//! address and every other blob the database names must be in the archive;
//! only then are migrations applied and the blobs written to the configured
//! blob store (through its upload path, which checks each blob's hash
//! again). If any check fails, the restored tables are dropped: nothing is
//! left for a relay to serve.
//!
//! `pg_dump` and `pg_restore` come from `RELAY_PG_BIN` if set, else from
//! `PATH`; their version must be at least the server's. The connection
//! settings reach them in the environment (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGDATABASE`, `PGPASSWORD`), never on a command line `ps` shows.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_postgres::config::Host;

use crate::backup::{
    blob_in_archive, blob_rel, check_log, check_small_blob, extract_blob, io, BackupError,
    BackupSummary, MANIFEST,
};
use crate::config::Config;
use crate::storage::backends::{BlobBackend, DatabaseUrl, MetaBackend};
use crate::storage::postgres::PgMeta;
use crate::storage::{BlobStore, Chunk, ChunkOutcome, UploadKey};

/// The dump's name inside the archive.
const DUMP: &str = "metadata.pgdump";

/// Tables whose rows are transient and not backed up (their definitions
/// are): uploads in progress and their charges, and request nonces.
const TRANSIENT: &[&str] = &["uploads", "s3_uploads", "s3_upload_parts", "relay_nonces"];

/// Chunk size for writing restored blobs (the clients' default).
const RESTORE_CHUNK: u64 = 8 * 1024 * 1024;

fn refused(text: impl Into<String>) -> BackupError {
    BackupError::Refused(text.into())
}

fn db(what: &str) -> impl FnOnce(tokio_postgres::Error) -> BackupError + '_ {
    move |e| refused(format!("PostgreSQL, {what}: {e}"))
}

fn database_url(config: &Config) -> Result<&DatabaseUrl, BackupError> {
    match &config.storage.meta {
        MetaBackend::Postgres(url) => Ok(url),
        MetaBackend::Sqlite => Err(refused(
            "this relay keeps its metadata in SQLite: use the embedded backup",
        )),
    }
}

/// The libpq environment for `pg_dump`/`pg_restore`, from the relay's
/// database URL (the password travels here, never in arguments).
fn pg_env(url: &DatabaseUrl) -> Result<Vec<(&'static str, String)>, BackupError> {
    let parsed: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| refused(format!("the database URL {url}: {e}")))?;
    let mut env = Vec::new();
    if let Some(host) = parsed.get_hosts().first() {
        env.push((
            "PGHOST",
            match host {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            },
        ));
    }
    if let Some(port) = parsed.get_ports().first() {
        env.push(("PGPORT", port.to_string()));
    }
    if let Some(user) = parsed.get_user() {
        env.push(("PGUSER", user.to_owned()));
    }
    if let Some(name) = parsed.get_dbname() {
        env.push(("PGDATABASE", name.to_owned()));
    }
    if let Some(pw) = parsed.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(pw).into_owned()));
    } else if let Ok(pw) = std::env::var("PGPASSWORD") {
        env.push(("PGPASSWORD", pw));
    }
    Ok(env)
}

/// Runs PostgreSQL's `program` (from `RELAY_PG_BIN` or `PATH`).
fn pg_tool(program: &str, args: &[String], env: &[(&str, String)]) -> Result<(), BackupError> {
    let path = match std::env::var_os("RELAY_PG_BIN") {
        Some(dir) => PathBuf::from(dir).join(program),
        None => PathBuf::from(program),
    };
    let out = Command::new(&path)
        .args(args)
        .env_remove("PGSERVICE")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| {
            refused(format!(
                "cannot run {}: {e} (install PostgreSQL's client programs or set RELAY_PG_BIN to their directory)",
                path.display()
            ))
        })?;
    if !out.status.success() {
        return Err(refused(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The configured blob store, opened without migrating the database.
async fn blob_store(config: &Config, meta: &PgMeta) -> Result<Box<dyn BlobStore>, BackupError> {
    match &config.storage.blobs {
        BlobBackend::Files => Ok(Box::new(
            crate::storage::files::FileBlobs::open(&config.data_dir)
                .map_err(|e| refused(format!("the blob directory: {e}")))?,
        )),
        #[cfg(feature = "s3")]
        BlobBackend::S3 {
            location,
            credentials,
        } => Ok(Box::new(
            crate::storage::s3::S3Blobs::connect(location, credentials, meta.pool().clone())
                .await
                .map_err(|e| refused(e.to_string()))?,
        )),
        #[cfg(not(feature = "s3"))]
        BlobBackend::S3 { .. } => {
            let _ = meta;
            Err(refused(
                "this relay-server was built without the s3 feature",
            ))
        }
    }
}

fn hash32(bytes: &[u8]) -> Result<[u8; 32], BackupError> {
    bytes
        .try_into()
        .map_err(|_| refused("a blob address in the database is not 32 bytes"))
}

/// Writes a backup of the relay's PostgreSQL metadata and its blobs to
/// `output` (which must not exist). Safe while the relays run.
pub async fn backup(config: &Config, output: &Path) -> Result<BackupSummary, BackupError> {
    if output.exists() {
        return Err(refused(format!(
            "{} already exists; choose a new file name",
            output.display()
        )));
    }
    let url = database_url(config)?;
    let env = pg_env(url)?;
    let meta = PgMeta::connect_unmigrated(url, 2)
        .await
        .map_err(|e| refused(e.to_string()))?;
    let blobs = blob_store(config, &meta).await?;
    let work = tempfile::Builder::new()
        .prefix(".relay-backup-")
        .tempdir_in(
            output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .map_err(io("creating a working directory beside the output"))?;

    // One snapshot for the dump and the list of blobs.
    let mut client = meta
        .pool()
        .get()
        .await
        .map_err(|e| refused(format!("PostgreSQL: {e}")))?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db("starting the snapshot"))?;
    let snapshot: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(db("exporting the snapshot"))?
        .get(0);
    let count = |sql: &'static str| {
        let tx = &tx;
        async move {
            let n: i64 = tx.query_one(sql, &[]).await.map_err(db("counting"))?.get(0);
            Ok::<u64, BackupError>(u64::try_from(n).unwrap_or(0))
        }
    };
    let vaults = count("SELECT COUNT(*) FROM vaults").await?;
    let entries = count("SELECT COUNT(*) FROM entries").await?;
    let rows = tx
        .query(
            "SELECT hash, MAX(len) FROM blobs b \
             WHERE NOT EXISTS (SELECT 1 FROM small_blobs s WHERE s.hash = b.hash) \
             GROUP BY hash ORDER BY hash",
            &[],
        )
        .await
        .map_err(db("listing the blobs"))?;
    let listed: Vec<([u8; 32], u64)> = rows
        .iter()
        .map(|r| {
            let len: i64 = r.get(1);
            Ok((
                hash32(r.get::<_, &[u8]>(0))?,
                u64::try_from(len).unwrap_or(0),
            ))
        })
        .collect::<Result<_, BackupError>>()?;
    let small = count("SELECT COUNT(*) FROM small_blobs").await?;
    let dump = work.path().join(DUMP);
    let mut args = vec![
        "--format=custom".to_owned(),
        "--no-owner".to_owned(),
        "--no-privileges".to_owned(),
        format!("--snapshot={snapshot}"),
        format!("--file={}", dump.display()),
    ];
    args.extend(
        TRANSIENT
            .iter()
            .map(|t| format!("--exclude-table-data={t}")),
    );
    let dumped = {
        let env = env.clone();
        tokio::task::spawn_blocking(move || pg_tool("pg_dump", &args, &env))
            .await
            .map_err(|e| refused(format!("pg_dump: {e}")))?
    };
    // The snapshot only had to live until pg_dump had taken it.
    tx.rollback().await.map_err(db("ending the snapshot"))?;
    dumped?;

    let partial = work.path().join("backup.tar");
    let file = File::create(&partial).map_err(io("creating the backup file"))?;
    let mut tar = tar::Builder::new(file);
    let blob_bytes: u64 = listed.iter().map(|(_, len)| len).sum();
    let summary = BackupSummary {
        vaults,
        entries,
        blobs: listed.len() as u64 + small,
        blob_bytes,
    };
    let manifest = serde_json::json!({
        "format": "vault-relay-backup",
        "version": 2,
        "metadata": "postgresql",
        "created_at": crate::auth::unix_now(),
        "vaults": summary.vaults,
        "entries": summary.entries,
        "blobs": summary.blobs,
        "blob_bytes": summary.blob_bytes,
    })
    .to_string();
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, manifest.as_bytes())
        .map_err(io("writing the manifest"))?;
    tar.append_path_with_name(&dump, DUMP)
        .map_err(io("writing the database dump"))?;
    // Each blob through a file of its own (blobs may be larger than
    // memory), checked against its address on the way.
    let spool = work.path().join("blob.part");
    for (hash, len) in listed {
        let hex = hex::encode(hash);
        let mut reader = blobs.read(hash, 0, len).await.map_err(|e| {
            refused(format!(
                "blob {hex} is named by the snapshot but cannot be read ({e}); if it was purged while the backup ran, run the backup again"
            ))
        })?;
        let mut out = File::create(&spool).map_err(io("spooling a blob"))?;
        let mut h = vault_core::address::EitherHasher::default();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(io(format!("reading blob {hex}")))?;
            if n == 0 {
                break;
            }
            let piece = buf.get(..n).unwrap_or_default();
            h.update(piece);
            out.write_all(piece).map_err(io("spooling a blob"))?;
            got += n as u64;
        }
        drop(out);
        if got != len || h.matches(&hash).is_none() {
            return Err(refused(format!(
                "blob {hex} in the blob store does not hash to its address (or has the wrong length); the store is damaged: restore it from an earlier backup, or let a client repair it"
            )));
        }
        tar.append_path_with_name(&spool, blob_rel(&hex))
            .map_err(io(format!("copying blob {hex}")))?;
    }
    let mut file = tar.into_inner().map_err(io("finishing the archive"))?;
    file.flush().map_err(io("writing the backup"))?;
    file.sync_all().map_err(io("syncing the backup"))?;
    drop(file);
    std::fs::rename(&partial, output).map_err(io("moving the backup into place"))?;
    meta.close();
    Ok(summary)
}

/// Restores `input` into the relay's PostgreSQL database (which must hold
/// no tables) and blob store, verifying every log and blob before anything
/// is left for a relay to serve. Run it with no relay on that database.
pub async fn restore(config: &Config, input: &Path) -> Result<BackupSummary, BackupError> {
    let url = database_url(config)?;
    let env = pg_env(url)?;
    let meta = PgMeta::connect_unmigrated(url, 2)
        .await
        .map_err(|e| refused(e.to_string()))?;
    let tables: i64 = meta
        .pool()
        .get()
        .await
        .map_err(|e| refused(format!("PostgreSQL: {e}")))?
        .query_one(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()",
            &[],
        )
        .await
        .map_err(db("looking at the target database"))?
        .get(0);
    if tables != 0 {
        return Err(refused(format!(
            "the database at {url} already has tables; restore into a new, empty database (createdb) and point the relays at it once the restore has finished (restore never overwrites data)"
        )));
    }

    // The blob store answers before anything is written anywhere.
    let blobs = blob_store(config, &meta).await?;

    // Unpack, checking every blob against its address.
    let work = tempfile::Builder::new()
        .prefix(".relay-restore-")
        .tempdir()
        .map_err(io("creating a working directory"))?;
    let file = File::open(input).map_err(io(format!("opening {}", input.display())))?;
    let mut archive = tar::Archive::new(file);
    let mut saw_dump = false;
    let mut saw_manifest = false;
    let mut archived: BTreeMap<[u8; 32], u64> = BTreeMap::new();
    for entry in archive.entries().map_err(io("reading the archive"))? {
        let mut entry = entry.map_err(io("reading the archive"))?;
        let name = entry
            .path()
            .map_err(io("reading the archive"))?
            .to_string_lossy()
            .to_string();
        if name == MANIFEST {
            let mut text = String::new();
            entry
                .take(64 * 1024)
                .read_to_string(&mut text)
                .map_err(io("reading the manifest"))?;
            let m: serde_json::Value = serde_json::from_str(&text)
                .map_err(|_| refused("the backup's manifest is not JSON"))?;
            let field = |k: &str| m.get(k).cloned().unwrap_or_default();
            if field("format") != "vault-relay-backup" || field("metadata") != "postgresql" {
                return Err(refused(
                    "this backup is not of a PostgreSQL relay; an embedded relay's backup restores with --data-dir and no --database",
                ));
            }
            if field("version") != 2 {
                return Err(refused(format!(
                    "backup format version {} is not one this relay reads (2)",
                    field("version")
                )));
            }
            saw_manifest = true;
            continue;
        }
        if name == DUMP {
            let mut out = File::create(work.path().join(DUMP)).map_err(io("writing the dump"))?;
            std::io::copy(&mut entry, &mut out).map_err(io("writing the dump"))?;
            out.sync_all().map_err(io("syncing the dump"))?;
            saw_dump = true;
            continue;
        }
        let hex = blob_in_archive(&name)?;
        let len = extract_blob(&mut entry, &work.path().join(blob_rel(&hex)), &hex)?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&hex, &mut hash).map_err(|_| refused("a blob address"))?;
        archived.insert(hash, len);
    }
    if !saw_manifest || !saw_dump {
        return Err(refused(
            "the backup has no manifest or no database dump; it is not a PostgreSQL relay's backup",
        ));
    }

    // Load the dump, then check it; drop it all if anything is wrong.
    let args = vec![
        "--no-owner".to_owned(),
        "--no-privileges".to_owned(),
        "--single-transaction".to_owned(),
        "--exit-on-error".to_owned(),
        format!(
            "--dbname={}",
            env.iter()
                .find(|(k, _)| *k == "PGDATABASE")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        ),
        work.path().join(DUMP).display().to_string(),
    ];
    {
        let env = env.clone();
        tokio::task::spawn_blocking(move || pg_tool("pg_restore", &args, &env))
            .await
            .map_err(|e| refused(format!("pg_restore: {e}")))??;
    }
    let checked = check_restored(&meta, &archived).await;
    let summary = match checked {
        Ok(s) => s,
        Err(e) => {
            drop_everything(&meta).await;
            return Err(e);
        }
    };
    let written = async {
        meta.migrate().await.map_err(|e| refused(e.to_string()))?;
        let client = meta
            .pool()
            .get()
            .await
            .map_err(|e| refused(format!("PostgreSQL: {e}")))?;
        for (hash, len) in &archived {
            let vault: Vec<u8> = client
                .query_one(
                    "SELECT vault FROM blobs WHERE hash = $1 LIMIT 1",
                    &[&hash.as_slice()],
                )
                .await
                .map_err(db("finding a blob's vault"))?
                .get(0);
            let vault = vault_core::VaultId::from_bytes(
                vault
                    .as_slice()
                    .try_into()
                    .map_err(|_| refused("a vault id in the database is not 16 bytes"))?,
            );
            write_blob(
                blobs.as_ref(),
                UploadKey { vault, hash: *hash },
                *len,
                &work.path().join(blob_rel(&hex::encode(hash))),
            )
            .await?;
        }
        Ok::<(), BackupError>(())
    }
    .await;
    if let Err(e) = written {
        drop_everything(&meta).await;
        return Err(e);
    }
    meta.close();
    Ok(summary)
}

/// Checks the restored metadata: every vault log verifies and ends at its
/// head, every small blob hashes to its address, every other blob is in
/// the archive with its recorded length.
async fn check_restored(
    meta: &PgMeta,
    archived: &BTreeMap<[u8; 32], u64>,
) -> Result<BackupSummary, BackupError> {
    let client = meta
        .pool()
        .get()
        .await
        .map_err(|e| refused(format!("PostgreSQL: {e}")))?;
    let vaults = client
        .query("SELECT vault, head_seq, head_hash FROM vaults", &[])
        .await
        .map_err(db("reading the vaults"))?;
    let mut entries = 0u64;
    for v in &vaults {
        let vault: &[u8] = v.get(0);
        let head_seq: i64 = v.get(1);
        let head_hash: &[u8] = v.get(2);
        let raw: Vec<Vec<u8>> = client
            .query(
                "SELECT bytes FROM entries WHERE vault = $1 ORDER BY seq",
                &[&vault],
            )
            .await
            .map_err(db("reading a log"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        entries += raw.len() as u64;
        check_log(&raw, u64::try_from(head_seq).unwrap_or(u64::MAX), head_hash)?;
    }
    let small = client
        .query("SELECT hash, bytes FROM small_blobs", &[])
        .await
        .map_err(db("reading the small blobs"))?;
    for r in &small {
        check_small_blob(r.get(0), r.get(1))?;
    }
    let named = client
        .query(
            "SELECT DISTINCT hash, len FROM blobs b \
             WHERE NOT EXISTS (SELECT 1 FROM small_blobs s WHERE s.hash = b.hash)",
            &[],
        )
        .await
        .map_err(db("reading the blobs"))?;
    let mut blob_bytes = 0u64;
    for r in &named {
        let hash = hash32(r.get::<_, &[u8]>(0))?;
        let len = u64::try_from(r.get::<_, i64>(1)).unwrap_or(u64::MAX);
        if archived.get(&hash) != Some(&len) {
            return Err(refused(format!(
                "blob {} is named by the database but missing from the backup (or of another length); the backup is incomplete",
                hex::encode(hash)
            )));
        }
        blob_bytes += len;
    }
    Ok(BackupSummary {
        vaults: vaults.len() as u64,
        entries,
        blobs: archived.len() as u64 + small.len() as u64,
        blob_bytes,
    })
}

/// Writes one restored blob through the store's upload path, which checks
/// every chunk's digest and the whole blob's address.
async fn write_blob(
    blobs: &dyn BlobStore,
    key: UploadKey,
    len: u64,
    path: &Path,
) -> Result<(), BackupError> {
    let hex = hex::encode(key.hash);
    let mut file = File::open(path).map_err(io(format!("reading blob {hex}")))?;
    let mut offset = 0u64;
    loop {
        let n = RESTORE_CHUNK.min(len - offset);
        let mut chunk = vec![0u8; usize::try_from(n).unwrap_or(0)];
        file.read_exact(&mut chunk)
            .map_err(io(format!("reading blob {hex}")))?;
        let digest: [u8; 32] = Sha256::digest(&chunk).into();
        let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(chunk)) });
        let outcome = blobs
            .write_chunk(
                key,
                Chunk {
                    offset,
                    total: len,
                    max_chunk: RESTORE_CHUNK,
                    digest,
                },
                Box::pin(body),
            )
            .await
            .map_err(|e| refused(format!("writing blob {hex} to the blob store: {e}")))?;
        match outcome {
            ChunkOutcome::Complete => return Ok(()),
            ChunkOutcome::Partial(at) if at == offset + n && at < len => offset = at,
            ChunkOutcome::Partial(at) => {
                return Err(refused(format!(
                    "writing blob {hex}: the blob store stands at {at}, expected {}",
                    offset + n
                )))
            }
        }
    }
}

/// Drops every table of the (formerly empty) target database after a
/// failed restore, so that no relay serves half of a backup.
async fn drop_everything(meta: &PgMeta) {
    let Ok(client) = meta.pool().get().await else {
        return;
    };
    let Ok(rows) = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
            &[],
        )
        .await
    else {
        return;
    };
    for r in rows {
        let table: String = r.get(0);
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        if let Err(e) = client
            .batch_execute(&format!("DROP TABLE IF EXISTS {quoted} CASCADE"))
            .await
        {
            tracing::warn!(error = %e, "dropping a table of a failed restore");
        }
    }
}
