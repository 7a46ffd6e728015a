//! The gateway's ledger: what it deposited, for whom, as which record, and
//! what it is about to deposit.
//!
//! A gateway cannot read the vaults it writes to, so it cannot ask them
//! what they already hold: this ledger is its memory. It is one SQLite file
//! (WAL, `synchronous=FULL`) in the gateway's state directory, holding no
//! clinical content: FHIR resource types, ids and versions, record
//! identifiers, and per-patient cursors.
//!
//! **Exactly once.** Before a batch is appended, each of its records is
//! written here as *pending*: (patient, resource type, id, version) → (the
//! record identifier chosen for it, the record version it will get). After
//! the relay acknowledged the append, the pending rows become *deposited*
//! in one transaction. A gateway killed in between finds the pending rows
//! at its next start and settles each against the vault's verified log
//! ([`Ledger::settle`]): a record at that version, written by the gateway,
//! means the append landed (the row becomes deposited); otherwise it did
//! not (the row is dropped and the resource deposited again). Either way
//! each (resource type, id, version) ends up in the vault once.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use vault_core::{Fingerprint, RecordId, VaultState};

use crate::error::{CliError, Result};

/// One resource version the gateway deposits (or deposited) as one record
/// version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The FHIR resource type.
    pub resource_type: String,
    /// The FHIR resource id.
    pub resource_id: String,
    /// The resource's `meta.versionId`, if the server gave one.
    pub version_id: Option<String>,
    /// The resource's `meta.lastUpdated`, if the server gave one.
    pub last_updated: Option<String>,
    /// [`vault_client::fhir_pull::filing::resource_digest`] of its JSON.
    pub digest: [u8; 32],
    /// The vault record it is (or becomes).
    pub record: RecordId,
    /// The record version it is (or becomes).
    pub record_version: u32,
}

/// The gateway's ledger (see the module documentation).
pub struct Ledger {
    db: Connection,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> CliError + '_ {
    move |e| {
        CliError::Usage(format!(
            "the gateway ledger {} cannot be used ({e}); check the state directory's permissions and free space",
            path.display()
        ))
    }
}

fn sql(e: rusqlite::Error) -> CliError {
    CliError::Usage(format!(
        "the gateway ledger failed ({e}); check the state directory's free space"
    ))
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Connection::open(path).map_err(db_error(path))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS deposited (
                 patient TEXT NOT NULL, rtype TEXT NOT NULL, rid TEXT NOT NULL,
                 version_id TEXT, last_updated TEXT, digest BLOB NOT NULL,
                 record BLOB NOT NULL, record_version INTEGER NOT NULL,
                 PRIMARY KEY (patient, rtype, rid));
             CREATE TABLE IF NOT EXISTS pending (
                 patient TEXT NOT NULL, rtype TEXT NOT NULL, rid TEXT NOT NULL,
                 version_id TEXT, last_updated TEXT, digest BLOB NOT NULL,
                 record BLOB NOT NULL, record_version INTEGER NOT NULL,
                 PRIMARY KEY (patient, rtype, rid));
             CREATE TABLE IF NOT EXISTS cursors (
                 patient TEXT PRIMARY KEY, since TEXT NOT NULL);",
        )
        .map_err(db_error(path))?;
        Ok(Self { db })
    }

    /// What was deposited of (patient, resource type, id): the newest
    /// version, if any.
    pub fn deposited(&self, patient: &str, rtype: &str, rid: &str) -> Result<Option<Entry>> {
        self.db
            .query_row(
                &format!("SELECT {COLUMNS} FROM deposited WHERE patient = ?1 AND rtype = ?2 AND rid = ?3"),
                params![patient, rtype, rid],
                Row::read,
            )
            .optional()
            .map_err(sql)?
            .map(Row::entry)
            .transpose()
    }

    /// How many resources were deposited for `patient`.
    pub fn count(&self, patient: &str) -> Result<u64> {
        self.db
            .query_row(
                "SELECT COUNT(*) FROM deposited WHERE patient = ?1",
                params![patient],
                |row| row.get(0),
            )
            .map_err(sql)
    }

    /// Records `entries` as about to be appended for `patient` (one
    /// transaction; replaces older pending rows of the same resources).
    pub fn begin(&mut self, patient: &str, entries: &[Entry]) -> Result<()> {
        let tx = self.db.transaction().map_err(sql)?;
        for e in entries {
            insert(&tx, INSERT_PENDING, patient, e)?;
        }
        tx.commit().map_err(sql)
    }

    /// Marks `entries` of `patient` deposited (the relay acknowledged their
    /// append): one transaction.
    pub fn commit(&mut self, patient: &str, entries: &[Entry]) -> Result<()> {
        let tx = self.db.transaction().map_err(sql)?;
        for e in entries {
            Self::commit_one(&tx, patient, e)?;
        }
        tx.commit().map_err(sql)
    }

    fn commit_one(tx: &rusqlite::Transaction<'_>, patient: &str, e: &Entry) -> Result<()> {
        insert(tx, INSERT_DEPOSITED, patient, e)?;
        tx.execute(
            "DELETE FROM pending WHERE patient = ?1 AND rtype = ?2 AND rid = ?3",
            params![patient, e.resource_type, e.resource_id],
        )
        .map_err(sql)?;
        Ok(())
    }

    /// Settles `patient`'s pending rows against the vault's verified
    /// `state`: a row whose record version is in the log, written by `me`,
    /// was appended (it becomes deposited); any other row was not (it is
    /// dropped, and the resource will be deposited again). Returns how many
    /// landed and how many did not.
    pub fn settle(
        &mut self,
        patient: &str,
        state: &VaultState,
        me: &Fingerprint,
    ) -> Result<(usize, usize)> {
        let pending: Vec<Entry> = {
            let mut stmt = self
                .db
                .prepare(&format!("SELECT {COLUMNS} FROM pending WHERE patient = ?1"))
                .map_err(sql)?;
            let rows = stmt.query_map(params![patient], Row::read).map_err(sql)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(sql)?.entry()?);
            }
            out
        };
        let (mut landed, mut lost) = (0, 0);
        let tx = self.db.transaction().map_err(sql)?;
        for e in &pending {
            let in_log = state
                .record_version(&e.record, e.record_version)
                .is_ok_and(|r| r.metadata().author() == *me);
            if in_log {
                Self::commit_one(&tx, patient, e)?;
                landed += 1;
            } else {
                tx.execute(
                    "DELETE FROM pending WHERE patient = ?1 AND rtype = ?2 AND rid = ?3",
                    params![patient, e.resource_type, e.resource_id],
                )
                .map_err(sql)?;
                lost += 1;
            }
        }
        tx.commit().map_err(sql)?;
        Ok((landed, lost))
    }

    /// The cursor the next fetch for `patient` starts from.
    pub fn cursor(&self, patient: &str) -> Result<Option<String>> {
        self.db
            .query_row(
                "SELECT since FROM cursors WHERE patient = ?1",
                params![patient],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql)
    }

    /// Remembers where the next fetch for `patient` starts (after
    /// everything before it was deposited).
    pub fn set_cursor(&mut self, patient: &str, since: &str) -> Result<()> {
        self.db
            .execute(
                "INSERT OR REPLACE INTO cursors VALUES (?1, ?2)",
                params![patient, since],
            )
            .map(drop)
            .map_err(sql)
    }
}

const INSERT_PENDING: &str =
    "INSERT OR REPLACE INTO pending VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const INSERT_DEPOSITED: &str =
    "INSERT OR REPLACE INTO deposited VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
/// The columns an [`Entry`] is read from, in [`Row::read`]'s order.
const COLUMNS: &str = "rtype, rid, version_id, last_updated, digest, record, record_version";

/// One ledger row as stored.
struct Row {
    resource_type: String,
    resource_id: String,
    version_id: Option<String>,
    last_updated: Option<String>,
    digest: Vec<u8>,
    record: Vec<u8>,
    record_version: u32,
}

impl Row {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            resource_type: row.get(0)?,
            resource_id: row.get(1)?,
            version_id: row.get(2)?,
            last_updated: row.get(3)?,
            digest: row.get(4)?,
            record: row.get(5)?,
            record_version: row.get(6)?,
        })
    }

    fn entry(self) -> Result<Entry> {
        Ok(Entry {
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            version_id: self.version_id,
            last_updated: self.last_updated,
            digest: self.digest.as_slice().try_into().map_err(|_| malformed())?,
            record: record_id(&self.record)?,
            record_version: self.record_version,
        })
    }
}

fn malformed() -> CliError {
    CliError::Usage(
        "the gateway ledger holds a malformed row; it was not written by this gateway".into(),
    )
}

/// Writes one entry of `patient` with `statement` (pending or deposited).
fn insert(db: &Connection, statement: &str, patient: &str, e: &Entry) -> Result<()> {
    db.execute(
        statement,
        params![
            patient,
            e.resource_type,
            e.resource_id,
            e.version_id,
            e.last_updated,
            e.digest.as_slice(),
            e.record.as_bytes().as_slice(),
            e.record_version
        ],
    )
    .map(drop)
    .map_err(sql)
}

fn record_id(bytes: &[u8]) -> Result<RecordId> {
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| {
        CliError::Usage(
            "the gateway ledger holds a malformed record id; it was not written by this gateway"
                .into(),
        )
    })?;
    Ok(RecordId::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rid: &str, v: &str, record: RecordId, rv: u32) -> Entry {
        Entry {
            resource_type: "Observation".into(),
            resource_id: rid.into(),
            version_id: Some(v.into()),
            last_updated: None,
            digest: [7; 32],
            record,
            record_version: rv,
        }
    }

    #[test]
    fn pending_rows_become_deposited_on_commit_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let r = RecordId::random();
        {
            let mut l = Ledger::open(&path).unwrap();
            l.begin("p1", &[entry("a", "1", r, 1)]).unwrap();
            assert_eq!(l.deposited("p1", "Observation", "a").unwrap(), None);
            l.commit("p1", &[entry("a", "1", r, 1)]).unwrap();
            l.set_cursor("p1", "2026-12-01T00:00:00Z").unwrap();
        }
        let l = Ledger::open(&path).unwrap();
        assert_eq!(
            l.deposited("p1", "Observation", "a").unwrap(),
            Some(entry("a", "1", r, 1))
        );
        assert_eq!(l.deposited("p2", "Observation", "a").unwrap(), None);
        assert_eq!(l.count("p1").unwrap(), 1);
        assert_eq!(
            l.cursor("p1").unwrap().as_deref(),
            Some("2026-12-01T00:00:00Z")
        );
    }
}
