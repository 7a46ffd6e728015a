//! [`LinkStore`] for [`SqliteMeta`]: writes through the commit thread
//! (each in its savepoint, so a reservation is one atomic
//! `UPDATE … WHERE failed < max_attempts`), reads on the read pool.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use vault_core::Fingerprint;

use super::{array32, exec, row, unexpected, SqliteMeta, WriteOp, WriteReply};
use crate::storage::links::{
    AccessEvent, AccessOutcome, Attempt, CreateLinkOutcome, LinkFile, LinkHash, LinkStore, NewLink,
    StoredLink, Ticket, MAX_ACCESS_EVENTS,
};
use crate::storage::StorageError;

/// The link tables (schema 5).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shl_links (
    hash BLOB PRIMARY KEY,
    owner BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    long_term INTEGER NOT NULL,
    direct INTEGER NOT NULL,
    passcode BLOB,
    max_attempts INTEGER NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0,
    revoked_at INTEGER,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    accesses INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shl_links_owner ON shl_links (owner);
CREATE TABLE IF NOT EXISTS shl_files (
    hash BLOB NOT NULL,
    idx INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    jwe TEXT NOT NULL,
    PRIMARY KEY (hash, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shl_access (
    hash BLOB NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    recipient TEXT NOT NULL,
    outcome INTEGER NOT NULL,
    PRIMARY KEY (hash, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shl_tickets (
    ticket BLOB PRIMARY KEY,
    hash BLOB NOT NULL,
    idx INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shl_tickets_expiry ON shl_tickets (expires_at);
";

/// A link write, run by the commit thread.
pub(super) enum LinkOp {
    Create {
        link: NewLink,
        quota: u64,
        max_links: usize,
    },
    Reserve {
        hash: LinkHash,
        now: u64,
    },
    Record {
        hash: LinkHash,
        event: AccessEvent,
        refund: bool,
        tickets: Vec<Ticket>,
    },
    Revoke {
        owner: Fingerprint,
        hash: LinkHash,
        now: u64,
    },
    Retire {
        now: u64,
    },
}

/// A link write's answer.
pub(super) enum LinkReply {
    Created(CreateLinkOutcome),
    Attempt(Attempt),
    Done,
    Revoked(bool),
    Retired(u64),
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

const LINK_COLUMNS: &str = "hash, owner, created_at, expires_at, long_term, direct, passcode, \
     max_attempts, failed, revoked_at, files, bytes, accesses";

fn link_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredLink> {
    Ok(StoredLink {
        hash: array32(r.get(0)?)?,
        owner: Fingerprint::from_bytes(array32(r.get(1)?)?),
        created_at: u(r.get(2)?),
        expires_at: r.get::<_, Option<i64>>(3)?.map(u),
        long_term: r.get(4)?,
        direct: r.get(5)?,
        passcode: r.get(6)?,
        max_attempts: u32_of(r.get(7)?),
        failed_attempts: u32_of(r.get(8)?),
        revoked_at: r.get::<_, Option<i64>>(9)?.map(u),
        files: u32_of(r.get(10)?),
        bytes: u(r.get(11)?),
        accesses: u(r.get(12)?),
    })
}

fn read_link(conn: &Connection, hash: &LinkHash) -> rusqlite::Result<Option<StoredLink>> {
    row(
        conn,
        &format!("SELECT {LINK_COLUMNS} FROM shl_links WHERE hash = ?1"),
        [hash.as_slice()],
        link_row,
    )
    .optional()
}

/// Runs one link write inside the commit thread's savepoint.
pub(super) fn apply(conn: &Connection, op: &LinkOp) -> rusqlite::Result<WriteReply> {
    let reply = match op {
        LinkOp::Create {
            link,
            quota,
            max_links,
        } => LinkReply::Created(create(conn, link, *quota, *max_links)?),
        LinkOp::Reserve { hash, now } => {
            let Some(l) = read_link(conn, hash)? else {
                return Ok(WriteReply::Links(LinkReply::Attempt(Attempt::Inactive)));
            };
            if !l.active_at(*now) {
                LinkReply::Attempt(Attempt::Inactive)
            } else {
                // One statement, under the commit thread: atomic.
                let n = exec(
                    conn,
                    "UPDATE shl_links SET failed = failed + 1 WHERE hash = ?1 AND failed < max_attempts",
                    [hash.as_slice()],
                )?;
                if n == 1 {
                    LinkReply::Attempt(Attempt::Reserved {
                        remaining: l.max_attempts.saturating_sub(l.failed_attempts + 1),
                    })
                } else {
                    LinkReply::Attempt(Attempt::Inactive)
                }
            }
        }
        LinkOp::Record {
            hash,
            event,
            refund,
            tickets,
        } => {
            record(conn, hash, event, *refund, tickets)?;
            LinkReply::Done
        }
        LinkOp::Revoke { owner, hash, now } => LinkReply::Revoked(revoke(conn, owner, hash, *now)?),
        LinkOp::Retire { now } => LinkReply::Retired(retire(conn, *now)?),
    };
    Ok(WriteReply::Links(reply))
}

fn create(
    conn: &Connection,
    link: &NewLink,
    quota: u64,
    max_links: usize,
) -> rusqlite::Result<CreateLinkOutcome> {
    if read_link(conn, &link.hash)?.is_some() {
        return Ok(CreateLinkOutcome::Exists);
    }
    let live: i64 = row(
        conn,
        "SELECT COUNT(*) FROM shl_links WHERE owner = ?1 AND revoked_at IS NULL AND files > 0",
        [link.owner.as_bytes().as_slice()],
        |r| r.get(0),
    )?;
    if u(live) >= max_links as u64 {
        return Ok(CreateLinkOutcome::TooMany(max_links));
    }
    let bytes: u64 = link.files.iter().map(|f| f.jwe.len() as u64).sum();
    if !super::charge(conn, &link.owner, bytes, quota)? {
        return Ok(CreateLinkOutcome::Quota);
    }
    exec(
        conn,
        "INSERT INTO shl_links (hash, owner, created_at, expires_at, long_term, direct, passcode,
             max_attempts, failed, revoked_at, files, bytes, accesses)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, NULL, ?9, ?10, 0)",
        params![
            link.hash.as_slice(),
            link.owner.as_bytes().as_slice(),
            i(link.created_at),
            link.expires_at.map(i),
            link.long_term,
            link.direct,
            link.passcode,
            i64::from(link.max_attempts),
            i(link.files.len() as u64),
            i(bytes),
        ],
    )?;
    for (idx, f) in link.files.iter().enumerate() {
        exec(
            conn,
            "INSERT INTO shl_files (hash, idx, content_type, jwe) VALUES (?1, ?2, ?3, ?4)",
            params![link.hash.as_slice(), i(idx as u64), f.content_type, f.jwe],
        )?;
    }
    Ok(CreateLinkOutcome::Created)
}

fn record(
    conn: &Connection,
    hash: &LinkHash,
    event: &AccessEvent,
    refund: bool,
    tickets: &[Ticket],
) -> rusqlite::Result<()> {
    let n = exec(
        conn,
        "UPDATE shl_links SET accesses = accesses + 1,
             failed = CASE WHEN ?2 AND failed > 0 THEN failed - 1 ELSE failed END
         WHERE hash = ?1",
        params![hash.as_slice(), refund],
    )?;
    if n == 0 {
        return Ok(());
    }
    let seq: i64 = row(
        conn,
        "SELECT COALESCE(MAX(seq), -1) + 1 FROM shl_access WHERE hash = ?1",
        [hash.as_slice()],
        |r| r.get(0),
    )?;
    exec(
        conn,
        "INSERT INTO shl_access (hash, seq, at, recipient, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            hash.as_slice(),
            seq,
            i(event.at),
            event.recipient,
            event.outcome.code()
        ],
    )?;
    exec(
        conn,
        "DELETE FROM shl_access WHERE hash = ?1 AND seq <= ?2",
        params![hash.as_slice(), seq - MAX_ACCESS_EVENTS as i64],
    )?;
    exec(
        conn,
        "DELETE FROM shl_tickets WHERE expires_at <= ?1",
        [i(event.at)],
    )?;
    for t in tickets {
        exec(
            conn,
            "INSERT OR REPLACE INTO shl_tickets (ticket, hash, idx, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![t.hash.as_slice(), hash.as_slice(), i64::from(t.file), i(t.expires_at)],
        )?;
    }
    Ok(())
}

fn revoke(
    conn: &Connection,
    owner: &Fingerprint,
    hash: &LinkHash,
    now: u64,
) -> rusqlite::Result<bool> {
    let Some(l) = read_link(conn, hash)?.filter(|l| l.owner == *owner) else {
        return Ok(false);
    };
    if l.revoked_at.is_some() {
        return Ok(true);
    }
    exec(
        conn,
        "UPDATE shl_links SET revoked_at = ?2 WHERE hash = ?1",
        params![hash.as_slice(), i(now)],
    )?;
    drop_files(conn, hash, owner.as_bytes(), l.bytes)?;
    Ok(true)
}

/// Deletes a link's files and tickets and gives their charge back to its
/// owner (revoking and retiring a link).
fn drop_files(
    conn: &Connection,
    hash: &LinkHash,
    owner: &[u8; 32],
    bytes: u64,
) -> rusqlite::Result<()> {
    exec(
        conn,
        "DELETE FROM shl_files WHERE hash = ?1",
        [hash.as_slice()],
    )?;
    exec(
        conn,
        "DELETE FROM shl_tickets WHERE hash = ?1",
        [hash.as_slice()],
    )?;
    exec(
        conn,
        "UPDATE usage SET bytes = MAX(bytes - ?2, 0) WHERE account = ?1",
        params![owner.as_slice(), i(bytes)],
    )?;
    Ok(())
}

/// Retires expired links (see [`LinkStore::retire_links`]).
fn retire(conn: &Connection, now: u64) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(
        "SELECT hash, owner, bytes FROM shl_links
         WHERE revoked_at IS NULL AND files > 0 AND expires_at IS NOT NULL AND expires_at <= ?1",
    )?;
    let gone = stmt
        .query_map([i(now)], |r| {
            Ok((
                array32(r.get(0)?)?,
                array32(r.get(1)?)?,
                u(r.get::<_, i64>(2)?),
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (hash, owner, bytes) in &gone {
        exec(
            conn,
            "UPDATE shl_links SET files = 0, bytes = 0 WHERE hash = ?1",
            [hash.as_slice()],
        )?;
        drop_files(conn, hash, owner, *bytes)?;
    }
    Ok(gone.len() as u64)
}

impl SqliteMeta {
    async fn link_write(&self, op: LinkOp) -> Result<LinkReply, StorageError> {
        match self.write(WriteOp::Links(op)).await? {
            WriteReply::Links(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }
}

#[async_trait]
impl LinkStore for SqliteMeta {
    async fn create_link(
        &self,
        link: NewLink,
        quota: u64,
        max_links: usize,
    ) -> Result<CreateLinkOutcome, StorageError> {
        match self
            .link_write(LinkOp::Create {
                link,
                quota,
                max_links,
            })
            .await?
        {
            LinkReply::Created(o) => Ok(o),
            _ => Err(unexpected()),
        }
    }

    async fn link(&self, hash: LinkHash) -> Result<Option<StoredLink>, StorageError> {
        self.read(move |c| read_link(c, &hash)).await
    }

    async fn link_files(&self, hash: LinkHash) -> Result<Vec<LinkFile>, StorageError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT content_type, jwe FROM shl_files WHERE hash = ?1 ORDER BY idx",
            )?;
            let rows = stmt.query_map([hash.as_slice()], |r| {
                Ok(LinkFile {
                    content_type: r.get(0)?,
                    jwe: r.get(1)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn reserve_attempt(&self, hash: LinkHash, now: u64) -> Result<Attempt, StorageError> {
        match self.link_write(LinkOp::Reserve { hash, now }).await? {
            LinkReply::Attempt(a) => Ok(a),
            _ => Err(unexpected()),
        }
    }

    async fn record_access(
        &self,
        hash: LinkHash,
        event: AccessEvent,
        refund: bool,
        tickets: Vec<Ticket>,
    ) -> Result<(), StorageError> {
        match self
            .link_write(LinkOp::Record {
                hash,
                event,
                refund,
                tickets,
            })
            .await?
        {
            LinkReply::Done => Ok(()),
            _ => Err(unexpected()),
        }
    }

    async fn ticket(
        &self,
        ticket: [u8; 32],
        now: u64,
    ) -> Result<Option<(LinkHash, u32)>, StorageError> {
        self.read(move |c| {
            row(
                c,
                "SELECT hash, idx FROM shl_tickets WHERE ticket = ?1 AND expires_at > ?2",
                params![ticket.as_slice(), i(now)],
                |r| Ok((array32(r.get(0)?)?, u32_of(r.get(1)?))),
            )
            .optional()
        })
        .await
    }

    async fn links_of(&self, owner: Fingerprint) -> Result<Vec<StoredLink>, StorageError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {LINK_COLUMNS} FROM shl_links WHERE owner = ?1 ORDER BY created_at DESC, hash"
            ))?;
            let rows = stmt.query_map([owner.as_bytes().as_slice()], link_row)?;
            rows.collect()
        })
        .await
    }

    async fn access_log(
        &self,
        owner: Fingerprint,
        hash: LinkHash,
    ) -> Result<Option<Vec<AccessEvent>>, StorageError> {
        self.read(move |c| {
            if read_link(c, &hash)?.filter(|l| l.owner == owner).is_none() {
                return Ok(None);
            }
            let mut stmt = c.prepare_cached(
                "SELECT at, recipient, outcome FROM shl_access WHERE hash = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([hash.as_slice()], |r| {
                Ok(AccessEvent {
                    at: u(r.get(0)?),
                    recipient: r.get(1)?,
                    outcome: AccessOutcome::from_code(r.get(2)?)
                        .ok_or(rusqlite::Error::InvalidQuery)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map(Some)
        })
        .await
    }

    async fn revoke_link(
        &self,
        owner: Fingerprint,
        hash: LinkHash,
        now: u64,
    ) -> Result<bool, StorageError> {
        match self.link_write(LinkOp::Revoke { owner, hash, now }).await? {
            LinkReply::Revoked(b) => Ok(b),
            _ => Err(unexpected()),
        }
    }

    async fn retire_links(&self, now: u64) -> Result<u64, StorageError> {
        match self.link_write(LinkOp::Retire { now }).await? {
            LinkReply::Retired(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }
}
