//! A [`Store`] on disk: an SQLite database (WAL, `synchronous = FULL`) for
//! logs, pins, cursors and small blobs (up to [`SMALL_BLOB`] bytes, so a
//! batch of small records costs one fsync), and a directory of
//! content-addressed blob files for larger ones (written to a temporary
//! file, fsync'd, then renamed, so a crash never leaves a partial blob under
//! its address and blobs of any size stream in constant memory).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use super::{check_continues, copy_verified, AddressKind, Store};
use crate::error::{Error, Result};
use crate::identity::Fingerprint;
use crate::ids::{to_hex, VaultId};
use crate::log::{Checkpoint, LogEntry};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    vault BLOB NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (vault, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pins (name TEXT PRIMARY KEY, fingerprint BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS small_blobs (hash BLOB NOT NULL PRIMARY KEY, bytes BLOB NOT NULL);
";

/// The schema this build writes (`PRAGMA user_version`). Version 1 keeps
/// `small_blobs` in an ordinary (rowid) table: in a `WITHOUT ROWID` table
/// (version 0) a row of more than about 1,000 bytes (a typical record's
/// ciphertext) spills onto an overflow page of its own, which multiplied
/// the pages each stored blob wrote and read (decision 73).
const SCHEMA_VERSION: i64 = 1;

/// Moves version 0's `small_blobs` into a rowid table, keeping every blob.
const MIGRATE_1: &str = "
CREATE TABLE small_blobs_rowid (hash BLOB NOT NULL PRIMARY KEY, bytes BLOB NOT NULL);
INSERT INTO small_blobs_rowid (hash, bytes) SELECT hash, bytes FROM small_blobs;
DROP TABLE small_blobs;
ALTER TABLE small_blobs_rowid RENAME TO small_blobs;
";

/// Blobs up to this size are kept inside the database.
pub const SMALL_BLOB: u64 = 256 * 1024;

/// A [`Store`] in a directory: `store.sqlite3` and `blobs/`.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    blobs: PathBuf,
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

/// The store's schema version; a store written by a newer build is
/// refused before anything (even the journal mode) is changed.
fn schema_version(conn: &Connection) -> Result<i64> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err)?;
    if version > SCHEMA_VERSION {
        return Err(Error::Store(format!(
            "this device's store has schema version {version}, newer than this build of vault understands ({SCHEMA_VERSION}); upgrade vault"
        )));
    }
    Ok(version)
}

/// Creates the schema, or brings a store at an older `version` (from
/// [`schema_version`]) up to [`SCHEMA_VERSION`] in one transaction (a
/// failure changes nothing).
fn init_schema(conn: &Connection, version: i64) -> Result<()> {
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let migrated = (|| {
        // A version 0 store made before this migration has a
        // `WITHOUT ROWID` small_blobs table; a new store has none yet.
        let old_blobs: Option<String> = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'small_blobs'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if old_blobs.is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID")) {
            conn.execute_batch(MIGRATE_1)?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        conn.execute_batch("COMMIT")
    })();
    if let Err(e) = migrated {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(db_err(e));
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) a store in `dir`, bringing a store an
    /// older build wrote up to this build's schema (keeping everything in
    /// it); a store from a newer build is refused unchanged.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        // Owner-only on Unix: the store holds who shares with whom.
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir.join("blobs"))?;
        let conn = Connection::open(dir.join("store.sqlite3")).map_err(db_err)?;
        let version = schema_version(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err)?;
        init_schema(&conn, version)?;
        Ok(Self {
            conn,
            blobs: dir.join("blobs"),
        })
    }

    fn blob_path(&self, hash: &[u8; 32]) -> PathBuf {
        self.blobs.join(to_hex(hash))
    }

    fn small_blob(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT bytes FROM small_blobs WHERE hash = ?1")
            .and_then(|mut s| {
                s.query_row(params![hash.as_slice()], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
            })
            .map_err(db_err)
    }

    /// Verifies and inserts small blobs in one transaction.
    fn insert_small(&mut self, blobs: &[(&[u8; 32], AddressKind, &[u8])]) -> Result<()> {
        for (hash, kind, bytes) in blobs {
            let mut data: &[u8] = bytes;
            copy_verified(hash, *kind, bytes.len() as u64, &mut data, |_| Ok(()))?;
        }
        let tx = self.conn.transaction().map_err(db_err)?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO small_blobs (hash, bytes) VALUES (?1, ?2)")
                .map_err(db_err)?;
            for (hash, _, bytes) in blobs {
                stmt.execute(params![hash.as_slice(), bytes])
                    .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }
}

impl Store for SqliteStore {
    fn append_entries(&mut self, vault: &VaultId, entries: &[LogEntry]) -> Result<()> {
        let head = self.head(vault)?;
        check_continues(head.as_ref(), vault, entries)?;
        let tx = self.conn.transaction().map_err(db_err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO entries (vault, seq, hash, bytes) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db_err)?;
            for e in entries {
                let seq = i64::try_from(e.seq())
                    .map_err(|_| Error::Store("sequence number too large".into()))?;
                stmt.execute(params![
                    vault.as_bytes().as_slice(),
                    seq,
                    e.hash().as_slice(),
                    e.to_bytes()
                ])
                .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    fn reveal_entries(&mut self, vault: &VaultId, entries: &[LogEntry]) -> Result<()> {
        let tx = self.conn.transaction().map_err(db_err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE entries SET bytes = ?4 WHERE vault = ?1 AND seq = ?2 AND hash = ?3",
                )
                .map_err(db_err)?;
            for e in entries {
                let seq = i64::try_from(e.seq())
                    .map_err(|_| Error::Store("sequence number too large".into()))?;
                let changed = stmt
                    .execute(params![
                        vault.as_bytes().as_slice(),
                        seq,
                        e.hash().as_slice(),
                        e.to_bytes()
                    ])
                    .map_err(db_err)?;
                if changed != 1 {
                    return Err(Error::Store(
                        "a revealed entry is not one of the stored entries".into(),
                    ));
                }
            }
        }
        tx.commit().map_err(db_err)
    }

    fn entries(&self, vault: &VaultId, since: u64) -> Result<Vec<LogEntry>> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT bytes FROM entries WHERE vault = ?1 AND seq >= ?2 ORDER BY seq")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![vault.as_bytes().as_slice(), since], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .map_err(db_err)?;
        rows.map(|r| LogEntry::from_bytes(&r.map_err(db_err)?))
            .collect()
    }

    fn head(&self, vault: &VaultId) -> Result<Option<Checkpoint>> {
        self.conn
            .query_row(
                "SELECT seq, hash FROM entries WHERE vault = ?1 ORDER BY seq DESC LIMIT 1",
                params![vault.as_bytes().as_slice()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map_err(db_err)?
            .map(|(seq, hash)| {
                Ok(Checkpoint {
                    vault: *vault,
                    seq: u64::try_from(seq)
                        .map_err(|_| Error::Store("corrupt sequence number".into()))?,
                    head: hash
                        .try_into()
                        .map_err(|_| Error::Store("corrupt entry hash".into()))?,
                })
            })
            .transpose()
    }

    fn vaults(&self) -> Result<Vec<VaultId>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT vault FROM entries ORDER BY vault")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(db_err)?;
        rows.map(|r| {
            let bytes: [u8; 16] = r
                .map_err(db_err)?
                .try_into()
                .map_err(|_| Error::Store("corrupt vault id".into()))?;
            Ok(VaultId::from_bytes(bytes))
        })
        .collect()
    }

    fn put_blob(
        &mut self,
        hash: &[u8; 32],
        kind: AddressKind,
        len: u64,
        data: &mut dyn Read,
    ) -> Result<()> {
        let path = self.blob_path(hash);
        if self.has_blob(hash)? {
            return Ok(());
        }
        if len <= SMALL_BLOB {
            let mut bytes = Vec::new();
            copy_verified(hash, kind, len, data, |chunk| {
                bytes.extend_from_slice(chunk);
                Ok(())
            })?;
            return self.insert_small(&[(hash, kind, &bytes)]);
        }
        let tmp = self.blobs.join(format!(".{}.partial", to_hex(hash)));
        let result = (|| {
            let mut file = File::create(&tmp)?;
            copy_verified(hash, kind, len, data, |chunk| Ok(file.write_all(chunk)?))?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            // Make the rename itself durable.
            File::open(&self.blobs)?.sync_all()?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn put_blobs(&mut self, blobs: &[([u8; 32], AddressKind, &[u8])]) -> Result<()> {
        let (small, large): (Vec<_>, Vec<_>) = blobs
            .iter()
            .partition(|(_, _, b)| b.len() as u64 <= SMALL_BLOB);
        let small: Vec<(&[u8; 32], AddressKind, &[u8])> =
            small.iter().map(|(h, k, b)| (h, *k, *b)).collect();
        self.insert_small(&small)?;
        for (hash, kind, bytes) in large {
            let mut data: &[u8] = bytes;
            self.put_blob(&hash, kind, bytes.len() as u64, &mut data)?;
        }
        Ok(())
    }

    fn has_blob(&self, hash: &[u8; 32]) -> Result<bool> {
        let small = self
            .conn
            .prepare_cached("SELECT 1 FROM small_blobs WHERE hash = ?1")
            .and_then(|mut s| s.exists(params![hash.as_slice()]))
            .map_err(db_err)?;
        Ok(small || self.blob_path(hash).exists())
    }

    fn delete_blob(&mut self, hash: &[u8; 32]) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM small_blobs WHERE hash = ?1",
                params![hash.as_slice()],
            )
            .map_err(db_err)?;
        match fs::remove_file(self.blob_path(hash)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn open_blob(&self, hash: &[u8; 32]) -> Result<Option<Box<dyn Read + '_>>> {
        if let Some(bytes) = self.small_blob(hash)? {
            return Ok(Some(Box::new(std::io::Cursor::new(bytes))));
        }
        match File::open(self.blob_path(hash)) {
            Ok(f) => Ok(Some(Box::new(std::io::BufReader::new(f)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn pin(&mut self, name: &str, fingerprint: &Fingerprint) -> Result<()> {
        let tx = self.conn.transaction().map_err(db_err)?;
        let existing: Option<Vec<u8>> = tx
            .query_row(
                "SELECT fingerprint FROM pins WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        match existing {
            Some(bytes) => {
                let pinned = Fingerprint::from_bytes(
                    bytes
                        .try_into()
                        .map_err(|_| Error::Store("corrupt pin".into()))?,
                );
                if pinned != *fingerprint {
                    return Err(Error::PinnedKeyChanged {
                        name: name.to_owned(),
                        pinned,
                        presented: *fingerprint,
                    });
                }
            }
            None => {
                tx.execute(
                    "INSERT INTO pins (name, fingerprint) VALUES (?1, ?2)",
                    params![name, fingerprint.as_bytes().as_slice()],
                )
                .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    fn repin(&mut self, name: &str, fingerprint: &Fingerprint) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO pins (name, fingerprint) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET fingerprint = excluded.fingerprint",
                params![name, fingerprint.as_bytes().as_slice()],
            )
            .map_err(db_err)?;
        Ok(())
    }

    fn pinned(&self, name: &str) -> Result<Option<Fingerprint>> {
        self.conn
            .query_row(
                "SELECT fingerprint FROM pins WHERE name = ?1",
                params![name],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map_err(db_err)?
            .map(|b| {
                Ok(Fingerprint::from_bytes(
                    b.try_into()
                        .map_err(|_| Error::Store("corrupt pin".into()))?,
                ))
            })
            .transpose()
    }

    fn pins(&self) -> Result<Vec<(String, Fingerprint)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, fingerprint FROM pins ORDER BY name")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(db_err)?;
        rows.map(|r| {
            let (name, b) = r.map_err(db_err)?;
            Ok((
                name,
                Fingerprint::from_bytes(
                    b.try_into()
                        .map_err(|_| Error::Store("corrupt pin".into()))?,
                ),
            ))
        })
        .collect()
    }

    fn cursor(&self, name: &str) -> Result<Option<u64>> {
        self.conn
            .query_row(
                "SELECT value FROM cursors WHERE name = ?1",
                params![name],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(db_err)
            .map(|v| v.and_then(|v| u64::try_from(v).ok()))
    }

    fn set_cursor(&mut self, name: &str, value: u64) -> Result<()> {
        let value = i64::try_from(value).map_err(|_| Error::InvalidInput("cursor too large"))?;
        self.conn
            .execute(
                "INSERT INTO cursors (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema of stores written before version 1.
    const SCHEMA_0: &str = "
CREATE TABLE entries (vault BLOB NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
    bytes BLOB NOT NULL, PRIMARY KEY (vault, seq)) WITHOUT ROWID;
CREATE TABLE pins (name TEXT PRIMARY KEY, fingerprint BLOB NOT NULL);
CREATE TABLE cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE small_blobs (hash BLOB PRIMARY KEY, bytes BLOB NOT NULL) WITHOUT ROWID;
";

    fn table_sql(dir: &Path, table: &str) -> String {
        Connection::open(dir.join("store.sqlite3"))
            .unwrap()
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn user_version(dir: &Path) -> i64 {
        Connection::open(dir.join("store.sqlite3"))
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_version_0_store_keeps_its_blobs_in_a_rowid_table_after_opening() {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Vec<([u8; 32], Vec<u8>)> = (0u8..20)
            .map(|i| ([i; 32], vec![i; 900 + 100 * usize::from(i)]))
            .collect();
        {
            let conn = Connection::open(dir.path().join("store.sqlite3")).unwrap();
            conn.execute_batch(SCHEMA_0).unwrap();
            for (hash, bytes) in &blobs {
                conn.execute(
                    "INSERT INTO small_blobs (hash, bytes) VALUES (?1, ?2)",
                    params![hash.as_slice(), bytes],
                )
                .unwrap();
            }
            conn.execute("INSERT INTO cursors (name, value) VALUES ('relay', 7)", [])
                .unwrap();
        }
        assert!(table_sql(dir.path(), "small_blobs").contains("WITHOUT ROWID"));

        for _ in 0..2 {
            let store = SqliteStore::open(dir.path()).unwrap();
            for (hash, bytes) in &blobs {
                assert!(store.has_blob(hash).unwrap());
                let mut got = Vec::new();
                store
                    .open_blob(hash)
                    .unwrap()
                    .unwrap()
                    .read_to_end(&mut got)
                    .unwrap();
                assert_eq!(&got, bytes);
            }
            assert_eq!(store.cursor("relay").unwrap(), Some(7));
            drop(store);
            assert!(!table_sql(dir.path(), "small_blobs").contains("WITHOUT ROWID"));
            assert_eq!(user_version(dir.path()), SCHEMA_VERSION);
        }
        // The log's table is left as it was.
        assert!(table_sql(dir.path(), "entries").contains("WITHOUT ROWID"));
    }

    #[test]
    fn a_new_store_is_made_at_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        assert_eq!(user_version(dir.path()), SCHEMA_VERSION);
        assert!(!table_sql(dir.path(), "small_blobs").contains("WITHOUT ROWID"));
    }

    #[test]
    fn a_store_from_a_newer_build_is_refused_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("store.sqlite3")).unwrap();
            conn.execute_batch(SCHEMA_0).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let e = SqliteStore::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("upgrade vault"), "{e}");
        assert_eq!(user_version(dir.path()), SCHEMA_VERSION + 1);
        assert!(table_sql(dir.path(), "small_blobs").contains("WITHOUT ROWID"));
        let journal: String = Connection::open(dir.path().join("store.sqlite3"))
            .unwrap()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "delete", "the journal mode is left as it was");
    }
}
