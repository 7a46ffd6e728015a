//! The embedded metadata store: SQLite in WAL mode with
//! `synchronous = FULL`, written by one thread with group commit.
//!
//! Writers send their operation to the commit thread and wait. The thread
//! takes every operation waiting (up to `max_batch`), runs each inside its
//! own savepoint (one failing operation does not undo the others), commits
//! once, which fsyncs the WAL, and only then answers all of them. One fsync
//! thus acknowledges a whole batch: durability without paying an fsync per
//! request. Reads use a small pool of read-only connections, which WAL lets
//! run beside the writer.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;
use vault_core::{CollectionId, Fingerprint, RecordId, VaultId};

use super::{
    AcceptedOwners, AddBlobOutcome, AppendBatch, AppendError, BlobDownload, BlobInfo,
    CreateOutcome, DeviceLists, Head, InboxEntry, MetaStore, NonceClaim, Precheck, StorageError,
    StoredEntry,
};

/// 2 added `small_blobs` (blobs kept in the database); 3 added `uploads`
/// (bytes of unfinished uploads, charged to their uploaders) and charges
/// identity documents and genesis entries to their accounts; 4 added
/// `inbox_accepted` (the owners each member accepts shares from); 5 added
/// the SMART Health Links tables (`links::SCHEMA`); 6 added
/// `device_lists` (the directory of people's device lists, decision 70);
/// 7 keeps `small_blobs` in a rowid table (decision 73: in a `WITHOUT
/// ROWID` table a row of more than about 1,000 bytes, a typical record's
/// ciphertext, takes an overflow page of its own).
const SCHEMA_VERSION: i64 = 7;

mod links;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS identities (
    fingerprint BLOB PRIMARY KEY,
    document BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vaults (
    vault BLOB PRIMARY KEY,
    owner BLOB NOT NULL,
    head_seq INTEGER NOT NULL,
    head_hash BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    vault BLOB NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (vault, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    vault BLOB NOT NULL,
    hash BLOB NOT NULL,
    len INTEGER NOT NULL,
    uploader BLOB NOT NULL,
    PRIMARY KEY (vault, hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_refs (
    vault BLOB NOT NULL,
    hash BLOB NOT NULL,
    record BLOB NOT NULL,
    collection BLOB NOT NULL,
    PRIMARY KEY (vault, hash, record)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    member BLOB NOT NULL,
    vault BLOB NOT NULL,
    PRIMARY KEY (member, vault)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_accepted (
    member BLOB PRIMARY KEY,
    version INTEGER NOT NULL,
    owners BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_lists (
    person BLOB PRIMARY KEY,
    serial INTEGER NOT NULL,
    lists BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    account BLOB PRIMARY KEY,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS small_blobs (
    hash BLOB NOT NULL PRIMARY KEY,
    bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    vault BLOB NOT NULL,
    hash BLOB NOT NULL,
    account BLOB NOT NULL,
    bytes INTEGER NOT NULL,
    touched INTEGER NOT NULL,
    PRIMARY KEY (vault, hash, account)
) WITHOUT ROWID;
";

/// From schema 2 to 3: identity documents are charged to their own
/// accounts and genesis entries to their vaults' owners, as new ones are.
const MIGRATE_3: &str = "
INSERT INTO usage (account, bytes)
    SELECT fingerprint, length(document) FROM identities WHERE true
    ON CONFLICT(account) DO UPDATE SET bytes = bytes + excluded.bytes;
INSERT INTO usage (account, bytes)
    SELECT v.owner, length(e.bytes) FROM vaults v JOIN entries e ON e.vault = v.vault AND e.seq = 0 WHERE true
    ON CONFLICT(account) DO UPDATE SET bytes = bytes + excluded.bytes;
";

/// From schema 2..=6 to 7: `small_blobs` moves into a rowid table, every
/// blob kept. Runs before [`SCHEMA`], whose `IF NOT EXISTS` then finds the
/// new table.
const MIGRATE_7: &str = "
CREATE TABLE small_blobs_rowid (
    hash BLOB NOT NULL PRIMARY KEY,
    bytes BLOB NOT NULL
);
INSERT INTO small_blobs_rowid (hash, bytes) SELECT hash, bytes FROM small_blobs;
DROP TABLE small_blobs;
ALTER TABLE small_blobs_rowid RENAME TO small_blobs;
";

/// The database file name inside the data directory.
pub const DB_FILE: &str = "relay.sqlite3";

/// Opens a connection with the relay's settings.
fn connect(path: &Path, read_only: bool) -> Result<Connection, StorageError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Savepoints of a batch stay in memory, not in temporary files.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Checkpoints run on their own thread (see `checkpoint_loop`); this
        // is only the safety net should that thread fall behind.
        conn.pragma_update(None, "wal_autocheckpoint", 16384)?;
    }
    Ok(conn)
}

/// `execute` through the statement cache (no re-parsing per write).
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the statement cache.
fn row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// A member's accepted owners (version 0 and none if never set).
fn read_accepted(conn: &Connection, member: &Fingerprint) -> rusqlite::Result<AcceptedOwners> {
    let stored: Option<(i64, Vec<u8>)> = row(
        conn,
        "SELECT version, owners FROM inbox_accepted WHERE member = ?1",
        [member.as_bytes()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?;
    let Some((version, owners)) = stored else {
        return Ok(AcceptedOwners::default());
    };
    let owners = owners
        .chunks_exact(32)
        .map(|c| {
            let mut fp = [0u8; 32];
            fp.copy_from_slice(c);
            Fingerprint::from_bytes(fp)
        })
        .collect();
    Ok(AcceptedOwners {
        version: u64::try_from(version).unwrap_or(0),
        owners,
    })
}

/// A person's device lists in the directory (serial 0 and none if none).
fn read_device_lists(conn: &Connection, person: &Fingerprint) -> rusqlite::Result<DeviceLists> {
    let stored: Option<(i64, Vec<u8>)> = row(
        conn,
        "SELECT serial, lists FROM device_lists WHERE person = ?1",
        [person.as_bytes()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?;
    Ok(
        stored.map_or_else(DeviceLists::default, |(serial, lists)| DeviceLists {
            serial: u64::try_from(serial).unwrap_or(0),
            lists,
        }),
    )
}

/// Creates or checks the schema.
pub fn init_schema(conn: &Connection) -> Result<(), StorageError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StorageError::new(format!(
            "the database has schema version {version}, newer than this relay ({SCHEMA_VERSION}); upgrade relay-server"
        )));
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let migrated = (|| {
        if (2..7).contains(&version) {
            conn.execute_batch(MIGRATE_7)?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(links::SCHEMA)?;
        if (1..3).contains(&version) {
            conn.execute_batch(MIGRATE_3)?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        conn.execute_batch("COMMIT")
    })();
    if let Err(e) = migrated {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.into());
    }
    Ok(())
}

enum WriteOp {
    PutIdentity {
        fp: Fingerprint,
        document: Vec<u8>,
    },
    CreateVault {
        vault: VaultId,
        owner: Fingerprint,
        genesis: StoredEntry,
        quota: u64,
    },
    Append(AppendBatch),
    ChargeUpload {
        vault: VaultId,
        hash: [u8; 32],
        account: Fingerprint,
        bytes: u64,
        now: u64,
    },
    ReleaseUploads {
        vault: VaultId,
        hash: [u8; 32],
    },
    ReleaseStale {
        before: u64,
    },
    AddBlob {
        vault: VaultId,
        hash: [u8; 32],
        info: BlobInfo,
        quota: u64,
        inline: Option<bytes::Bytes>,
    },
    SetAccepted {
        member: Fingerprint,
        list: AcceptedOwners,
    },
    SetDeviceLists {
        person: Fingerprint,
        expected: u64,
        lists: DeviceLists,
    },
    Links(links::LinkOp),
}

enum WriteReply {
    Identity(bool),
    Created(CreateOutcome),
    Appended(Result<Head, AppendError>),
    Blob(AddBlobOutcome),
    Released(usize),
    Accepted(Result<(), AcceptedOwners>),
    DeviceLists(Result<(), DeviceLists>),
    Links(links::LinkReply),
}

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteReply, StorageError>>,
}

/// Called with the size of every committed batch (for metrics).
pub type BatchObserver = Arc<dyn Fn(usize) + Send + Sync>;

/// The SQLite metadata store.
pub struct SqliteMeta {
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    read_permits: tokio::sync::Semaphore,
    stop_checkpoints: Arc<std::sync::atomic::AtomicBool>,
    path: std::path::PathBuf,
    /// Request nonces: one relay process owns the database, so they are
    /// kept in memory (see [`super::LocalNonces`]); the relay does not
    /// call this store for them (it is not [`MetaStore::is_shared`]).
    nonces: super::LocalNonces,
    /// Pairing slots, kept in this process for the same reason.
    pairings: super::pairings::LocalPairings,
}

/// Read connections kept (and reads run at once).
const READERS: usize = 8;

/// Most rows an append's precheck looks up on the calling thread
/// ([`SqliteMeta::read_short`]); more go to the blocking pool.
const SHORT_READ_ROWS: usize = 16;

/// Copies the WAL into the database every so often, off the commit path,
/// so the commit thread does not stall on a checkpoint's fsyncs.
fn checkpoint_loop(path: std::path::PathBuf, stop: Arc<std::sync::atomic::AtomicBool>) {
    let Ok(conn) = connect(&path, false) else {
        tracing::warn!(
            "checkpoint thread could not open the database; relying on auto-checkpoints"
        );
        return;
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(250));
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "background checkpoint failed");
        }
    }
}

impl SqliteMeta {
    /// Opens (creating) `relay.sqlite3` in `data_dir` and starts the commit
    /// thread.
    pub fn open(
        data_dir: &Path,
        max_batch: usize,
        observer: BatchObserver,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let conn = connect(&path, false)?;
        init_schema(&conn)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("relay-commit".into())
            .spawn(move || commit_loop(conn, rx, max_batch.max(1), observer))?;
        let stop_checkpoints = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (path, stop) = (path.clone(), stop_checkpoints.clone());
            std::thread::Builder::new()
                .name("relay-checkpoint".into())
                .spawn(move || checkpoint_loop(path, stop))?;
        }
        Ok(Self {
            writer: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            readers: Mutex::new(Vec::new()),
            read_permits: tokio::sync::Semaphore::new(READERS),
            stop_checkpoints,
            path,
            nonces: super::LocalNonces::default(),
            pairings: super::pairings::LocalPairings::default(),
        })
    }

    /// Stops accepting writes, lets the commit thread finish what it has,
    /// and waits for it.
    pub fn close(&self) {
        self.stop_checkpoints
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let sender = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(sender);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    async fn write(&self, op: WriteOp) -> Result<WriteReply, StorageError> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let tx = guard
                .as_ref()
                .ok_or_else(|| StorageError::new("the relay is shutting down"))?;
            tx.send(Job { op, reply })
                .map_err(|_| StorageError::new("the commit thread stopped"))?;
        }
        rx.await
            .map_err(|_| StorageError::new("the commit thread stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StorageError> {
        // At most READERS reads at once, each on a kept connection: no
        // connection churn under load.
        let _permit = self
            .read_permits
            .acquire()
            .await
            .map_err(|_| StorageError::new("the store is closed"))?;
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let path = self.path.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match pooled {
                Some(c) => c,
                None => connect(&path, true)?,
            };
            let r = f(&conn);
            Ok::<_, StorageError>((conn, r))
        })
        .await
        .map_err(|e| StorageError::new(e.to_string()))??;
        self.give_back(conn);
        Ok(result?)
    }

    /// Returns a read connection to the pool, unless a read left it inside
    /// a transaction (a rollback that failed): it would serve an old
    /// snapshot, so it is closed instead.
    fn give_back(&self, conn: Connection) {
        if conn.is_autocommit() {
            self.readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }

    /// A short read (a few point lookups by primary key, their pages in
    /// SQLite's or the kernel's cache) run on the calling thread with a
    /// kept read connection, not on the blocking pool: the hop to a
    /// blocking thread and back (two thread wake-ups) costs an append more
    /// CPU than the read itself (decision 51). Reads whose size a client
    /// chooses (logs, pages, blobs) stay on [`SqliteMeta::read`].
    async fn read_short<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StorageError> {
        let _permit = self
            .read_permits
            .acquire()
            .await
            .map_err(|_| StorageError::new("the store is closed"))?;
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => connect(&self.path, true)?,
        };
        let result = f(&conn);
        self.give_back(conn);
        Ok(result?)
    }
}

impl Drop for SqliteMeta {
    fn drop(&mut self) {
        self.close();
    }
}

fn commit_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    max_batch: usize,
    observer: BatchObserver,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let n = jobs.len();
        let results = run_batch(&mut conn, &jobs);
        observer(n);
        match results {
            Ok(replies) => {
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let _ = job.reply.send(reply);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = n, "group commit failed");
                let e = StorageError::from(e);
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Runs a batch in one transaction; each job in its own savepoint.
#[allow(clippy::type_complexity)]
fn run_batch(
    conn: &mut Connection,
    jobs: &[Job],
) -> Result<Vec<Result<WriteReply, StorageError>>, rusqlite::Error> {
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut sp = tx.savepoint()?;
        let r = apply(&sp, &job.op);
        match &r {
            Ok(WriteReply::Appended(Err(_))) | Err(_) => sp.rollback()?,
            _ => {}
        }
        sp.commit()?;
        replies.push(r.map_err(StorageError::from));
    }
    tx.commit()?;
    Ok(replies)
}

fn charge(
    conn: &Connection,
    account: &Fingerprint,
    bytes: u64,
    quota: u64,
) -> Result<bool, rusqlite::Error> {
    let used: u64 = row(
        conn,
        "SELECT bytes FROM usage WHERE account = ?1",
        [account.as_bytes()],
        |r| r.get(0),
    )
    .optional()?
    .unwrap_or(0);
    let Some(total) = used.checked_add(bytes).filter(|t| *t <= quota) else {
        return Ok(false);
    };
    exec(
        conn,
        "INSERT INTO usage (account, bytes) VALUES (?1, ?2)
         ON CONFLICT(account) DO UPDATE SET bytes = excluded.bytes",
        params![account.as_bytes(), total],
    )?;
    Ok(true)
}

fn apply(conn: &Connection, op: &WriteOp) -> Result<WriteReply, rusqlite::Error> {
    match op {
        WriteOp::Links(op) => links::apply(conn, op),
        WriteOp::SetAccepted { member, list } => {
            let stored = read_accepted(conn, member)?;
            if list.version <= stored.version {
                return Ok(WriteReply::Accepted(Err(stored)));
            }
            let owners: Vec<u8> = list.owners.iter().flat_map(|o| *o.as_bytes()).collect();
            exec(
                conn,
                "INSERT INTO inbox_accepted (member, version, owners) VALUES (?1, ?2, ?3)
                 ON CONFLICT(member) DO UPDATE SET version = excluded.version, owners = excluded.owners",
                params![member.as_bytes(), i64::try_from(list.version).unwrap_or(i64::MAX), owners],
            )?;
            Ok(WriteReply::Accepted(Ok(())))
        }
        WriteOp::SetDeviceLists {
            person,
            expected,
            lists,
        } => {
            let stored = read_device_lists(conn, person)?;
            if stored.serial != *expected || lists.serial <= *expected {
                return Ok(WriteReply::DeviceLists(Err(stored)));
            }
            exec(
                conn,
                "INSERT INTO device_lists (person, serial, lists) VALUES (?1, ?2, ?3)
                 ON CONFLICT(person) DO UPDATE SET serial = excluded.serial, lists = excluded.lists",
                params![
                    person.as_bytes(),
                    i64::try_from(lists.serial).unwrap_or(i64::MAX),
                    lists.lists
                ],
            )?;
            Ok(WriteReply::DeviceLists(Ok(())))
        }
        WriteOp::PutIdentity { fp, document } => {
            let n = exec(
                conn,
                "INSERT OR IGNORE INTO identities (fingerprint, document) VALUES (?1, ?2)",
                params![fp.as_bytes(), document],
            )?;
            if n == 1 {
                // Every stored byte is charged; one document (at most
                // 64 KiB) is never refused for it.
                charge(conn, fp, document.len() as u64, u64::MAX)?;
            }
            Ok(WriteReply::Identity(n == 1))
        }
        WriteOp::CreateVault {
            vault,
            owner,
            genesis,
            quota,
        } => {
            let existing: Option<Vec<u8>> = row(
                conn,
                "SELECT bytes FROM entries WHERE vault = ?1 AND seq = 0",
                [vault.as_bytes()],
                |r| r.get(0),
            )
            .optional()?;
            if let Some(bytes) = existing {
                return Ok(WriteReply::Created(if bytes == genesis.bytes {
                    CreateOutcome::AlreadyStored
                } else {
                    CreateOutcome::Conflict
                }));
            }
            if !charge(conn, owner, genesis.bytes.len() as u64, *quota)? {
                return Ok(WriteReply::Created(CreateOutcome::Quota));
            }
            exec(
                conn,
                "INSERT INTO vaults (vault, owner, head_seq, head_hash) VALUES (?1, ?2, 0, ?3)",
                params![vault.as_bytes(), owner.as_bytes(), genesis.hash],
            )?;
            exec(
                conn,
                "INSERT INTO entries (vault, seq, hash, bytes) VALUES (?1, 0, ?2, ?3)",
                params![vault.as_bytes(), genesis.hash, genesis.bytes],
            )?;
            exec(
                conn,
                "INSERT OR IGNORE INTO inbox (member, vault) VALUES (?1, ?2)",
                params![owner.as_bytes(), vault.as_bytes()],
            )?;
            Ok(WriteReply::Created(CreateOutcome::Created))
        }
        WriteOp::Append(b) => {
            let head: Option<(u64, Vec<u8>)> = row(
                conn,
                "SELECT head_seq, head_hash FROM vaults WHERE vault = ?1",
                [b.vault.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
            let Some((seq, hash)) = head else {
                return Ok(WriteReply::Appended(Err(AppendError::NoVault)));
            };
            let current = Head {
                seq,
                hash: hash.try_into().unwrap_or([0; 32]),
            };
            if current != b.prev {
                return Ok(WriteReply::Appended(Err(AppendError::HeadMoved(current))));
            }
            for r in &b.blob_refs {
                let usable = blob_state(conn, &b.vault, &r.hash)?
                    .is_some_and(|(info, used)| r.usable(&info, used, &b.account));
                if !usable {
                    return Ok(WriteReply::Appended(Err(AppendError::BlobMissing(r.entry))));
                }
            }
            let bytes: u64 = b.entries.iter().map(|e| e.bytes.len() as u64).sum();
            if !charge(conn, &b.account, bytes, b.quota)? {
                return Ok(WriteReply::Appended(Err(AppendError::Quota)));
            }
            let mut last = current;
            for e in &b.entries {
                exec(
                    conn,
                    "INSERT INTO entries (vault, seq, hash, bytes) VALUES (?1, ?2, ?3, ?4)",
                    params![b.vault.as_bytes(), e.seq, e.hash, e.bytes],
                )?;
                last = Head {
                    seq: e.seq,
                    hash: e.hash,
                };
            }
            exec(
                conn,
                "UPDATE vaults SET head_seq = ?2, head_hash = ?3 WHERE vault = ?1",
                params![b.vault.as_bytes(), last.seq, last.hash],
            )?;
            for r in &b.blob_refs {
                exec(conn,
                    "INSERT OR IGNORE INTO blob_refs (vault, hash, record, collection) VALUES (?1, ?2, ?3, ?4)",
                    params![b.vault.as_bytes(), r.hash, r.record.as_bytes(), r.collection.as_bytes()],
                )?;
            }
            for m in &b.inbox {
                exec(
                    conn,
                    "INSERT OR IGNORE INTO inbox (member, vault) VALUES (?1, ?2)",
                    params![m.as_bytes(), b.vault.as_bytes()],
                )?;
            }
            for hash in &b.purged {
                forget_blob(conn, &b.vault, hash)?;
            }
            Ok(WriteReply::Appended(Ok(last)))
        }
        WriteOp::AddBlob {
            vault,
            hash,
            info,
            quota,
            inline,
        } => {
            let exists: Option<i64> = row(
                conn,
                "SELECT 1 FROM blobs WHERE vault = ?1 AND hash = ?2",
                params![vault.as_bytes(), hash],
                |r| r.get(0),
            )
            .optional()?;
            // The chunks of the upload were charged as they were stored:
            // the complete blob's charge replaces theirs.
            release_uploads(conn, vault, hash)?;
            if exists.is_some() {
                return Ok(WriteReply::Blob(AddBlobOutcome::Existed));
            }
            if !charge(conn, &info.uploader, info.len, *quota)? {
                return Ok(WriteReply::Blob(AddBlobOutcome::Quota));
            }
            exec(
                conn,
                "INSERT INTO blobs (vault, hash, len, uploader) VALUES (?1, ?2, ?3, ?4)",
                params![vault.as_bytes(), hash, info.len, info.uploader.as_bytes()],
            )?;
            if let Some(bytes) = inline {
                exec(
                    conn,
                    "INSERT OR IGNORE INTO small_blobs (hash, bytes) VALUES (?1, ?2)",
                    params![hash, bytes.as_ref()],
                )?;
            }
            Ok(WriteReply::Blob(AddBlobOutcome::Added))
        }
        WriteOp::ChargeUpload {
            vault,
            hash,
            account,
            bytes,
            now,
        } => {
            charge(conn, account, *bytes, u64::MAX)?;
            exec(
                conn,
                "INSERT INTO uploads (vault, hash, account, bytes, touched) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(vault, hash, account) DO UPDATE SET bytes = bytes + excluded.bytes, touched = excluded.touched",
                params![vault.as_bytes(), hash, account.as_bytes(), bytes, now],
            )?;
            Ok(WriteReply::Released(0))
        }
        WriteOp::ReleaseUploads { vault, hash } => {
            Ok(WriteReply::Released(release_uploads(conn, vault, hash)?))
        }
        WriteOp::ReleaseStale { before } => {
            let stale: Vec<(Vec<u8>, Vec<u8>)> = {
                let mut st = conn.prepare_cached(
                    "SELECT DISTINCT vault, hash FROM uploads WHERE touched <= ?1",
                )?;
                let rows = st.query_map([before], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut n = 0;
            for (vault, hash) in stale {
                let vault = VaultId::from_bytes(array16(vault)?);
                n += release_uploads(conn, &vault, &array32(hash)?)?;
            }
            Ok(WriteReply::Released(n))
        }
    }
}

/// Gives back what the unfinished upload of `hash` to `vault` was charged,
/// to each account that stored chunks of it, and forgets it; returns how
/// many accounts were refunded.
/// Removes a purged blob's records from one vault and gives its charge
/// back to its uploader; its small-blob bytes go too once no vault has it.
fn forget_blob(conn: &Connection, vault: &VaultId, hash: &[u8; 32]) -> rusqlite::Result<()> {
    let Some((info, _)) = blob_state(conn, vault, hash)? else {
        return Ok(());
    };
    exec(
        conn,
        "DELETE FROM blob_refs WHERE vault = ?1 AND hash = ?2",
        params![vault.as_bytes(), hash],
    )?;
    exec(
        conn,
        "DELETE FROM blobs WHERE vault = ?1 AND hash = ?2",
        params![vault.as_bytes(), hash],
    )?;
    exec(
        conn,
        "UPDATE usage SET bytes = max(bytes - ?2, 0) WHERE account = ?1",
        params![info.uploader.as_bytes(), info.len],
    )?;
    exec(
        conn,
        "DELETE FROM small_blobs WHERE hash = ?1 AND NOT EXISTS (SELECT 1 FROM blobs WHERE hash = ?1)",
        params![hash],
    )?;
    Ok(())
}

fn release_uploads(conn: &Connection, vault: &VaultId, hash: &[u8; 32]) -> rusqlite::Result<usize> {
    let charged: Vec<(Vec<u8>, u64)> = {
        let mut st = conn
            .prepare_cached("SELECT account, bytes FROM uploads WHERE vault = ?1 AND hash = ?2")?;
        let rows = st.query_map(params![vault.as_bytes(), hash], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (account, bytes) in &charged {
        exec(
            conn,
            "UPDATE usage SET bytes = max(bytes - ?2, 0) WHERE account = ?1",
            params![account, bytes],
        )?;
    }
    exec(
        conn,
        "DELETE FROM uploads WHERE vault = ?1 AND hash = ?2",
        params![vault.as_bytes(), hash],
    )?;
    Ok(charged.len())
}

/// A blob's record in a vault.
fn blob_info(
    conn: &Connection,
    vault: &VaultId,
    hash: &[u8; 32],
) -> rusqlite::Result<Option<BlobInfo>> {
    row(
        conn,
        "SELECT len, uploader FROM blobs WHERE vault = ?1 AND hash = ?2",
        params![vault.as_bytes(), hash],
        |r| {
            Ok(BlobInfo {
                len: r.get(0)?,
                uploader: Fingerprint::from_bytes(array32(r.get(1)?)?),
            })
        },
    )
    .optional()
}

/// A blob's record in a vault with the records whose record-puts name it,
/// if the vault has it.
fn blob_download(
    conn: &Connection,
    vault: &VaultId,
    hash: &[u8; 32],
) -> rusqlite::Result<Option<BlobDownload>> {
    let Some(info) = blob_info(conn, vault, hash)? else {
        return Ok(None);
    };
    let mut st = conn.prepare_cached(
        "SELECT collection, record FROM blob_refs WHERE vault = ?1 AND hash = ?2",
    )?;
    let refs = st
        .query_map(params![vault.as_bytes(), hash], |r| {
            Ok((
                CollectionId::from_bytes(array16(r.get(0)?)?),
                RecordId::from_bytes(array16(r.get(1)?)?),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(BlobDownload { info, refs }))
}

/// The bytes of a blob kept in the database (a small blob), if it is one.
fn small_blob_bytes(conn: &Connection, hash: &[u8; 32]) -> rusqlite::Result<Option<bytes::Bytes>> {
    row(
        conn,
        "SELECT bytes FROM small_blobs WHERE hash = ?1",
        params![hash],
        |r| r.get::<_, Vec<u8>>(0),
    )
    .optional()
    .map(|b| b.map(bytes::Bytes::from))
}

/// A blob's record in a vault, and whether a record-put already names it.
fn blob_state(
    conn: &Connection,
    vault: &VaultId,
    hash: &[u8; 32],
) -> rusqlite::Result<Option<(BlobInfo, bool)>> {
    row(
        conn,
        "SELECT len, uploader, EXISTS (SELECT 1 FROM blob_refs r WHERE r.vault = b.vault AND r.hash = b.hash)
         FROM blobs b WHERE b.vault = ?1 AND b.hash = ?2",
        params![vault.as_bytes(), hash],
        |r| {
            Ok((
                BlobInfo {
                    len: r.get(0)?,
                    uploader: Fingerprint::from_bytes(array32(r.get(1)?)?),
                },
                r.get::<_, bool>(2)?,
            ))
        },
    )
    .optional()
}

fn unexpected() -> StorageError {
    StorageError::new("the commit thread answered a different operation")
}

fn array32(v: Vec<u8>) -> Result<[u8; 32], rusqlite::Error> {
    v.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, "hash".into(), rusqlite::types::Type::Blob)
    })
}

fn array16(v: Vec<u8>) -> Result<[u8; 16], rusqlite::Error> {
    v.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, "id".into(), rusqlite::types::Type::Blob)
    })
}

super::pairings::local_pairings!(SqliteMeta, pairings);

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn put_identity(&self, fp: Fingerprint, document: Vec<u8>) -> Result<bool, StorageError> {
        match self.write(WriteOp::PutIdentity { fp, document }).await? {
            WriteReply::Identity(new) => Ok(new),
            _ => Err(unexpected()),
        }
    }

    async fn identity(&self, fp: Fingerprint) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(move |c| {
            row(
                c,
                "SELECT document FROM identities WHERE fingerprint = ?1",
                [fp.as_bytes()],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn create_vault(
        &self,
        vault: VaultId,
        owner: Fingerprint,
        genesis: StoredEntry,
        quota: u64,
    ) -> Result<CreateOutcome, StorageError> {
        match self
            .write(WriteOp::CreateVault {
                vault,
                owner,
                genesis,
                quota,
            })
            .await?
        {
            WriteReply::Created(o) => Ok(o),
            _ => Err(unexpected()),
        }
    }

    async fn head(&self, vault: VaultId) -> Result<Option<Head>, StorageError> {
        self.read(move |c| {
            row(
                c,
                "SELECT head_seq, head_hash FROM vaults WHERE vault = ?1",
                [vault.as_bytes()],
                |r| {
                    Ok(Head {
                        seq: r.get(0)?,
                        hash: array32(r.get(1)?)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn entries(
        &self,
        vault: VaultId,
        since: u64,
        limit: u64,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        // SQLite integers are signed 64-bit.
        let since = since.min(i64::MAX as u64);
        let limit = limit.min(i64::MAX as u64);
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT bytes FROM entries WHERE vault = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = st.query_map(params![vault.as_bytes(), since, limit], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn append(&self, batch: AppendBatch) -> Result<Head, AppendError> {
        match self.write(WriteOp::Append(batch)).await? {
            WriteReply::Appended(r) => r,
            _ => Err(unexpected().into()),
        }
    }

    async fn blob_in_use(&self, hash: [u8; 32]) -> Result<bool, StorageError> {
        self.read(move |c| {
            row(
                c,
                "SELECT 1 FROM blobs WHERE hash = ?1 LIMIT 1",
                [hash],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|r| r.is_some())
        })
        .await
    }

    async fn blob(&self, vault: VaultId, hash: [u8; 32]) -> Result<Option<BlobInfo>, StorageError> {
        self.read(move |c| blob_info(c, &vault, &hash)).await
    }

    async fn append_precheck(
        &self,
        vault: VaultId,
        account: Fingerprint,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Precheck, StorageError> {
        let short = hashes.len() <= SHORT_READ_ROWS;
        let check = move |c: &Connection| {
            let used: u64 = row(
                c,
                "SELECT bytes FROM usage WHERE account = ?1",
                [account.as_bytes()],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
            let blobs = hashes
                .iter()
                .map(|h| blob_state(c, &vault, h))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((used, blobs))
        };
        // An append naming a few blobs (almost every append) looks up a
        // few rows: on this thread. Larger batches go to the blocking pool.
        if short {
            self.read_short(check).await
        } else {
            self.read(check).await
        }
    }

    async fn blob_with_refs(
        &self,
        vault: VaultId,
        hash: [u8; 32],
    ) -> Result<Option<(BlobInfo, Vec<(CollectionId, RecordId)>)>, StorageError> {
        self.read(move |c| Ok(blob_download(c, &vault, &hash)?.map(|d| (d.info, d.refs))))
            .await
    }

    async fn blobs_for_download(
        &self,
        vault: VaultId,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Vec<Option<BlobDownload>>, StorageError> {
        // One read transaction, one trip to the blocking pool, for all.
        self.read(move |c| {
            let tx = c.unchecked_transaction()?;
            let mut out = Vec::with_capacity(hashes.len());
            for hash in &hashes {
                out.push(blob_download(&tx, &vault, hash)?);
            }
            tx.finish()?;
            Ok(out)
        })
        .await
    }

    async fn small_blobs(
        &self,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Vec<Option<bytes::Bytes>>, StorageError> {
        self.read(move |c| {
            hashes
                .iter()
                .map(|hash| small_blob_bytes(c, hash))
                .collect()
        })
        .await
    }

    async fn small_blob(&self, hash: [u8; 32]) -> Result<Option<bytes::Bytes>, StorageError> {
        self.read(move |c| small_blob_bytes(c, &hash)).await
    }

    async fn add_blob(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        info: BlobInfo,
        quota: u64,
        inline: Option<bytes::Bytes>,
    ) -> Result<AddBlobOutcome, StorageError> {
        match self
            .write(WriteOp::AddBlob {
                vault,
                hash,
                info,
                quota,
                inline,
            })
            .await?
        {
            WriteReply::Blob(o) => Ok(o),
            _ => Err(unexpected()),
        }
    }

    async fn charge_upload(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        account: Fingerprint,
        bytes: u64,
    ) -> Result<(), StorageError> {
        let now = crate::auth::unix_now();
        match self
            .write(WriteOp::ChargeUpload {
                vault,
                hash,
                account,
                bytes,
                now,
            })
            .await?
        {
            WriteReply::Released(_) => Ok(()),
            _ => Err(unexpected()),
        }
    }

    async fn release_upload(&self, vault: VaultId, hash: [u8; 32]) -> Result<(), StorageError> {
        match self.write(WriteOp::ReleaseUploads { vault, hash }).await? {
            WriteReply::Released(_) => Ok(()),
            _ => Err(unexpected()),
        }
    }

    async fn release_stale_uploads(&self, idle: u64) -> Result<usize, StorageError> {
        let before = crate::auth::unix_now().saturating_sub(idle);
        match self.write(WriteOp::ReleaseStale { before }).await? {
            WriteReply::Released(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    async fn inbox(&self, member: Fingerprint) -> Result<Vec<InboxEntry>, StorageError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT i.vault, v.owner FROM inbox i JOIN vaults v ON v.vault = i.vault
                 WHERE i.member = ?1 ORDER BY i.vault",
            )?;
            let rows = st.query_map([member.as_bytes()], |r| {
                Ok(InboxEntry {
                    vault: VaultId::from_bytes(array16(r.get(0)?)?),
                    owner: Fingerprint::from_bytes(array32(r.get(1)?)?),
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn accepted_owners(&self, member: Fingerprint) -> Result<AcceptedOwners, StorageError> {
        self.read(move |c| read_accepted(c, &member)).await
    }

    async fn set_accepted_owners(
        &self,
        member: Fingerprint,
        list: AcceptedOwners,
    ) -> Result<Result<(), AcceptedOwners>, StorageError> {
        match self.write(WriteOp::SetAccepted { member, list }).await? {
            WriteReply::Accepted(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn device_lists(&self, person: Fingerprint) -> Result<DeviceLists, StorageError> {
        self.read(move |c| read_device_lists(c, &person)).await
    }

    async fn set_device_lists(
        &self,
        person: Fingerprint,
        expected: u64,
        lists: DeviceLists,
    ) -> Result<Result<(), DeviceLists>, StorageError> {
        match self
            .write(WriteOp::SetDeviceLists {
                person,
                expected,
                lists,
            })
            .await?
        {
            WriteReply::DeviceLists(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn usage(&self, account: Fingerprint) -> Result<u64, StorageError> {
        self.read(move |c| {
            row(
                c,
                "SELECT bytes FROM usage WHERE account = ?1",
                [account.as_bytes()],
                |r| r.get(0),
            )
            .optional()
            .map(|v| v.unwrap_or(0))
        })
        .await
    }

    async fn stored_bytes(&self) -> Result<u64, StorageError> {
        self.read(|c| {
            row(c, "SELECT COALESCE(SUM(bytes), 0) FROM usage", [], |r| {
                r.get(0)
            })
        })
        .await
    }

    async fn claim_nonce(&self, claim: NonceClaim) -> Result<bool, StorageError> {
        Ok(self.nonces.claim(claim))
    }

    async fn expire_nonces(&self, now: u64) -> Result<u64, StorageError> {
        Ok(self.nonces.expire(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_blobs_sql(conn: &Connection) -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'small_blobs'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn schema_6_small_blobs_move_to_a_rowid_table_with_every_blob() {
        let dir = tempfile::tempdir().unwrap();
        let conn = connect(&dir.path().join(DB_FILE), false).unwrap();
        init_schema(&conn).unwrap();
        assert!(!small_blobs_sql(&conn).contains("WITHOUT ROWID"));
        // As schema 6 left it.
        conn.execute_batch(
            "DROP TABLE small_blobs;
             CREATE TABLE small_blobs (hash BLOB PRIMARY KEY, bytes BLOB NOT NULL) WITHOUT ROWID;
             PRAGMA user_version = 6;",
        )
        .unwrap();
        let blobs: Vec<([u8; 32], Vec<u8>)> = (0u8..20)
            .map(|i| ([i; 32], vec![i; 900 + 100 * usize::from(i)]))
            .collect();
        for (hash, bytes) in &blobs {
            exec(
                &conn,
                "INSERT INTO small_blobs (hash, bytes) VALUES (?1, ?2)",
                params![hash, bytes],
            )
            .unwrap();
        }
        init_schema(&conn).unwrap();
        assert!(!small_blobs_sql(&conn).contains("WITHOUT ROWID"));
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        for (hash, bytes) in &blobs {
            let got = small_blob_bytes(&conn, hash).unwrap().unwrap();
            assert_eq!(got.as_ref(), bytes.as_slice());
        }
        // Opening again changes nothing.
        init_schema(&conn).unwrap();
        assert_eq!(
            small_blob_bytes(&conn, &[3; 32]).unwrap().unwrap().len(),
            1200
        );
    }
}
