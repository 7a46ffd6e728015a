//! Online backup and restore.
//!
//! A backup is one tar file: `vault-relay-backup.json` (a small manifest),
//! `relay.sqlite3` (a consistent snapshot taken with SQLite's online backup
//! API, safe while the relay runs) and `blobs/<2 hex>/<64 hex>` for every
//! blob the snapshot names (blobs are immutable once named, so copying them
//! after the snapshot is consistent). It holds ciphertext, public
//! identities and signed logs only, so it can be stored anywhere.
//!
//! Restore refuses a non-empty target, rejects any unexpected path in the
//! archive, checks every blob against its address and every vault log with
//! vault-core, and only then moves the result into place.
//!
//! Both are specific to the embedded storage ([`crate::storage::sqlite`]
//! and [`crate::storage::files`]): they read and write the data directory
//! directly, not through the storage traits. A distributed backend
//! (PostgreSQL, S3) is backed up with its own tools.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use vault_core::{LogEntry, VaultState};

use crate::storage::sqlite::DB_FILE;

pub(crate) const MANIFEST: &str = "vault-relay-backup.json";

/// A backup or restore failure, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// File system trouble.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Database trouble.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The input is not a sound backup, or the target is not usable.
    #[error("{0}")]
    Refused(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// What a backup contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSummary {
    /// Vaults.
    pub vaults: u64,
    /// Log entries.
    pub entries: u64,
    /// Distinct blobs.
    pub blobs: u64,
    /// Bytes of blobs.
    pub blob_bytes: u64,
}

pub(crate) fn blob_rel(hash_hex: &str) -> String {
    format!("blobs/{}/{}", hash_hex.get(..2).unwrap_or("00"), hash_hex)
}

fn summary(conn: &Connection) -> Result<BackupSummary, BackupError> {
    let count =
        |sql: &str| -> Result<u64, BackupError> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    Ok(BackupSummary {
        vaults: count("SELECT COUNT(*) FROM vaults")?,
        entries: count("SELECT COUNT(*) FROM entries")?,
        blobs: count("SELECT COUNT(DISTINCT hash) FROM blobs")?,
        blob_bytes: count(
            "SELECT COALESCE(SUM(len), 0) FROM (SELECT hash, MAX(len) AS len FROM blobs GROUP BY hash)",
        )?,
    })
}

/// Writes a backup of `data_dir` to `output` (which must not exist).
pub fn backup(data_dir: &Path, output: &Path) -> Result<BackupSummary, BackupError> {
    if output.exists() {
        return Err(BackupError::Refused(format!(
            "{} already exists; choose a new file name",
            output.display()
        )));
    }
    let db = data_dir.join(DB_FILE);
    if !db.exists() {
        return Err(BackupError::Refused(format!(
            "{} has no relay database; is this the relay's data directory?",
            data_dir.display()
        )));
    }
    let work = tempfile::Builder::new()
        .prefix(".relay-backup-")
        .tempdir_in(
            output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .map_err(io("creating a working directory beside the output"))?;
    let snapshot = work.path().join(DB_FILE);
    {
        let src = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut dst = Connection::open(&snapshot)?;
        let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
        b.run_to_completion(1024, std::time::Duration::from_millis(5), None)?;
    }
    let conn = Connection::open_with_flags(&snapshot, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let sum = summary(&conn)?;
    let hashes: Vec<Vec<u8>> = {
        // Small blobs kept in the database travel inside the snapshot.
        let mut st = conn.prepare(
            "SELECT DISTINCT hash FROM blobs WHERE hash NOT IN (SELECT hash FROM small_blobs) ORDER BY hash",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    drop(conn);

    let partial = work.path().join("backup.tar");
    let file = File::create(&partial).map_err(io("creating the backup file"))?;
    let mut tar = tar::Builder::new(file);
    let manifest = serde_json::json!({
        "format": "vault-relay-backup",
        "version": 1,
        "created_at": crate::auth::unix_now(),
        "vaults": sum.vaults,
        "entries": sum.entries,
        "blobs": sum.blobs,
        "blob_bytes": sum.blob_bytes,
    })
    .to_string();
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, manifest.as_bytes())
        .map_err(io("writing the manifest"))?;
    tar.append_path_with_name(&snapshot, DB_FILE)
        .map_err(io("writing the database snapshot"))?;
    for h in hashes {
        let hex = hex::encode(h);
        let rel = blob_rel(&hex);
        tar.append_path_with_name(data_dir.join(&rel), &rel)
            .map_err(io(format!("copying blob {hex}")))?;
    }
    let mut file = tar.into_inner().map_err(io("finishing the archive"))?;
    file.flush().map_err(io("writing the backup"))?;
    file.sync_all().map_err(io("syncing the backup"))?;
    drop(file);
    std::fs::rename(&partial, output).map_err(io("moving the backup into place"))?;
    Ok(sum)
}

/// Restores `input` into `data_dir` (absent or empty).
pub fn restore(input: &Path, data_dir: &Path) -> Result<BackupSummary, BackupError> {
    if data_dir.exists() {
        let mut it = std::fs::read_dir(data_dir).map_err(io("reading the target directory"))?;
        if it.next().is_some() {
            return Err(BackupError::Refused(format!(
                "{} is not empty; restore into a new directory (restore never overwrites data)",
                data_dir.display()
            )));
        }
    }
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&parent).map_err(io("creating the target's parent"))?;
    let work = tempfile::Builder::new()
        .prefix(".relay-restore-")
        .tempdir_in(&parent)
        .map_err(io("creating a working directory"))?;
    let file = File::open(input).map_err(io(format!("opening {}", input.display())))?;
    let mut archive = tar::Archive::new(file);
    let mut saw_db = false;
    for entry in archive.entries().map_err(io("reading the archive"))? {
        let mut entry = entry.map_err(io("reading the archive"))?;
        let path: PathBuf = entry
            .path()
            .map_err(io("reading the archive"))?
            .into_owned();
        let name = path.to_string_lossy().to_string();
        if name == MANIFEST {
            continue;
        }
        if name == DB_FILE {
            let mut out =
                File::create(work.path().join(DB_FILE)).map_err(io("writing the database"))?;
            std::io::copy(&mut entry, &mut out).map_err(io("writing the database"))?;
            out.sync_all().map_err(io("syncing the database"))?;
            saw_db = true;
            continue;
        }
        let hex = blob_in_archive(&name)?;
        extract_blob(&mut entry, &work.path().join(blob_rel(&hex)), &hex)?;
    }
    if !saw_db {
        return Err(BackupError::Refused(
            "the backup has no database; it is not a relay backup".into(),
        ));
    }
    let sum = verify_restored(work.path())?;
    std::fs::create_dir_all(work.path().join("uploads")).map_err(io("creating uploads/"))?;
    let work = work.keep();
    if data_dir.exists() {
        std::fs::remove_dir(data_dir).map_err(io("replacing the empty target directory"))?;
    }
    std::fs::rename(&work, data_dir).map_err(io("moving the restored data into place"))?;
    File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing the target's parent"))?;
    Ok(sum)
}

fn verify_restored(dir: &Path) -> Result<BackupSummary, BackupError> {
    let conn = Connection::open(dir.join(DB_FILE))?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(BackupError::Refused(format!(
            "the database in the backup is damaged ({check})"
        )));
    }
    // A backup from an older relay is brought to this schema; one from a
    // newer relay is refused.
    crate::storage::sqlite::init_schema(&conn)
        .map_err(|e| BackupError::Refused(format!("the backup's database: {}", e.message)))?;
    let vaults: Vec<(Vec<u8>, u64, Vec<u8>)> = {
        let mut st = conn.prepare("SELECT vault, head_seq, head_hash FROM vaults")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (vault, head_seq, head_hash) in vaults {
        let mut st = conn.prepare("SELECT bytes FROM entries WHERE vault = ?1 ORDER BY seq")?;
        let raw: Vec<Vec<u8>> = st
            .query_map([&vault], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        check_log(&raw, head_seq, &head_hash)?;
    }
    // Small blobs inside the database must hash to their addresses too.
    {
        let mut st = conn.prepare("SELECT hash, bytes FROM small_blobs")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        for row in rows {
            let (hash, bytes) = row?;
            check_small_blob(&hash, &bytes)?;
        }
    }
    let hashes: Vec<Vec<u8>> = {
        let mut st = conn.prepare(
            "SELECT DISTINCT hash FROM blobs WHERE hash NOT IN (SELECT hash FROM small_blobs)",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for h in hashes {
        let hex = hex::encode(&h);
        if !dir.join(blob_rel(&hex)).exists() {
            return Err(BackupError::Refused(format!(
                "blob {hex} is named by the database but missing from the backup"
            )));
        }
    }
    summary(&conn)
}

/// The lowercase hex address of a blob's path in an archive
/// (`blobs/<2 hex>/<64 hex>`); any other path is refused.
pub(crate) fn blob_in_archive(name: &str) -> Result<String, BackupError> {
    name.strip_prefix("blobs/")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(pre, h)| {
            h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) && h.get(..2) == Some(*pre)
        })
        .map(|(_, h)| h.to_ascii_lowercase())
        .ok_or_else(|| {
            BackupError::Refused(format!(
                "unexpected path {name:?} in the backup; refusing it"
            ))
        })
}

/// Copies a blob out of an archive to `dest`, synced, and checks that it
/// hashes to its address `hex`; returns its length.
pub(crate) fn extract_blob(
    entry: &mut impl Read,
    dest: &Path,
    hex: &str,
) -> Result<u64, BackupError> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating a blob directory"))?;
    }
    let mut out = File::create(dest).map_err(io("writing a blob"))?;
    let mut h = vault_core::address::EitherHasher::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(io("reading a blob"))?;
        if n == 0 {
            break;
        }
        let piece = buf.get(..n).unwrap_or_default();
        h.update(piece);
        out.write_all(piece).map_err(io("writing a blob"))?;
        len += n as u64;
    }
    out.sync_all().map_err(io("syncing a blob"))?;
    let address = hex::decode(hex)
        .ok()
        .and_then(|a| <[u8; 32]>::try_from(a).ok());
    if address.is_none_or(|a| h.matches(&a).is_none()) {
        return Err(BackupError::Refused(format!(
            "blob {hex} in the backup does not hash to its address; the backup is corrupt"
        )));
    }
    Ok(len)
}

/// Verifies one vault's stored log (entry bytes in order) with vault-core
/// from genesis, and that it ends at the recorded head.
pub(crate) fn check_log(
    raw: &[Vec<u8>],
    head_seq: u64,
    head_hash: &[u8],
) -> Result<(), BackupError> {
    let entries = raw
        .iter()
        .map(|b| LogEntry::from_bytes(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BackupError::Refused(format!("a log entry in the backup is invalid: {e}")))?;
    let state = VaultState::verify_log(entries.iter()).map_err(|e| {
        BackupError::Refused(format!("a vault log in the backup does not verify: {e}"))
    })?;
    let head = state.head();
    if head.seq != head_seq || head.head.as_slice() != head_hash {
        return Err(BackupError::Refused(
            "a vault's recorded head does not match its log; the backup is corrupt".into(),
        ));
    }
    Ok(())
}

/// Checks that a small blob kept in the database hashes to its address.
pub(crate) fn check_small_blob(hash: &[u8], bytes: &[u8]) -> Result<(), BackupError> {
    let address = <[u8; 32]>::try_from(hash).unwrap_or([0; 32]);
    if hash.len() != 32 || vault_core::address::address_matches(&address, bytes).is_none() {
        return Err(BackupError::Refused(format!(
            "blob {} in the backup's database does not hash to its address; the backup is corrupt",
            hex::encode(hash)
        )));
    }
    Ok(())
}
