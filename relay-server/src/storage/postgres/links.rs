//! [`LinkStore`] for [`PgMeta`] (migration 5): each write one transaction;
//! a passcode attempt is reserved by one conditional `UPDATE … WHERE failed
//! < max_attempts RETURNING`, atomic across relays sharing the database.

use async_trait::async_trait;
use vault_core::Fingerprint;

use super::{array, exec, int, opt, refund, rows, uint, PgMeta};
use crate::storage::links::{
    AccessEvent, AccessOutcome, Attempt, CreateLinkOutcome, LinkFile, LinkHash, LinkStore, NewLink,
    StoredLink, Ticket, MAX_ACCESS_EVENTS,
};
use crate::storage::StorageError;

const LINK_COLUMNS: &str = "hash, owner, created_at, expires_at, long_term, direct, passcode, \
     max_attempts, failed, revoked_at, files, bytes, accesses";

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn link_row(r: &tokio_postgres::Row) -> Result<StoredLink, StorageError> {
    Ok(StoredLink {
        hash: array(r.try_get::<_, &[u8]>(0)?)?,
        owner: Fingerprint::from_bytes(array(r.try_get::<_, &[u8]>(1)?)?),
        created_at: uint(r.try_get(2)?)?,
        expires_at: r.try_get::<_, Option<i64>>(3)?.map(uint).transpose()?,
        long_term: r.try_get(4)?,
        direct: r.try_get(5)?,
        passcode: r.try_get(6)?,
        max_attempts: u32_of(r.try_get(7)?),
        failed_attempts: u32_of(r.try_get(8)?),
        revoked_at: r.try_get::<_, Option<i64>>(9)?.map(uint).transpose()?,
        files: u32_of(r.try_get(10)?),
        bytes: uint(r.try_get(11)?)?,
        accesses: uint(r.try_get(12)?)?,
    })
}

async fn read_link<C: deadpool_postgres::GenericClient>(
    c: &C,
    hash: &LinkHash,
) -> Result<Option<StoredLink>, StorageError> {
    opt(
        c,
        &format!("SELECT {LINK_COLUMNS} FROM shl_links WHERE hash = $1"),
        &[&hash.as_slice()],
    )
    .await?
    .map(|r| link_row(&r))
    .transpose()
}

#[async_trait]
impl LinkStore for PgMeta {
    async fn create_link(
        &self,
        link: NewLink,
        quota: u64,
        max_links: usize,
    ) -> Result<CreateLinkOutcome, StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let owner = link.owner.as_bytes().as_slice();
        // Serialises one owner's creations (the link count below).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(encode($1, 'hex'), 49))",
            &[&owner],
        )
        .await?;
        if read_link(&tx, &link.hash).await?.is_some() {
            return Ok(CreateLinkOutcome::Exists);
        }
        let live: i64 = rows(
            &tx,
            "SELECT COUNT(*) FROM shl_links WHERE owner = $1 AND revoked_at IS NULL AND files > 0",
            &[&owner],
        )
        .await?
        .first()
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
        if uint(live)? >= max_links as u64 {
            return Ok(CreateLinkOutcome::TooMany(max_links));
        }
        let bytes: u64 = link.files.iter().map(|f| f.jwe.len() as u64).sum();
        if !super::charge(&tx, &link.owner, bytes, quota).await? {
            return Ok(CreateLinkOutcome::Quota);
        }
        exec(
            &tx,
            "INSERT INTO shl_links (hash, owner, created_at, expires_at, long_term, direct, passcode,
                 max_attempts, failed, revoked_at, files, bytes, accesses)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, NULL, $9, $10, 0)",
            &[
                &link.hash.as_slice(),
                &owner,
                &int(link.created_at)?,
                &link.expires_at.map(int).transpose()?,
                &link.long_term,
                &link.direct,
                &link.passcode,
                &i64::from(link.max_attempts),
                &int(link.files.len() as u64)?,
                &int(bytes)?,
            ],
        )
        .await?;
        for (idx, f) in link.files.iter().enumerate() {
            exec(
                &tx,
                "INSERT INTO shl_files (hash, idx, content_type, jwe) VALUES ($1, $2, $3, $4)",
                &[
                    &link.hash.as_slice(),
                    &int(idx as u64)?,
                    &f.content_type,
                    &f.jwe,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(CreateLinkOutcome::Created)
    }

    async fn link(&self, hash: LinkHash) -> Result<Option<StoredLink>, StorageError> {
        let c = self.client().await?;
        read_link(&c, &hash).await
    }

    async fn link_files(&self, hash: LinkHash) -> Result<Vec<LinkFile>, StorageError> {
        let c = self.client().await?;
        rows(
            &c,
            "SELECT content_type, jwe FROM shl_files WHERE hash = $1 ORDER BY idx",
            &[&hash.as_slice()],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(LinkFile {
                content_type: r.try_get(0)?,
                jwe: r.try_get(1)?,
            })
        })
        .collect()
    }

    async fn reserve_attempt(&self, hash: LinkHash, now: u64) -> Result<Attempt, StorageError> {
        let c = self.client().await?;
        let now = int(now)?;
        let r = opt(
            &c,
            "UPDATE shl_links SET failed = failed + 1
             WHERE hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR $2 < expires_at)
               AND failed < max_attempts
             RETURNING max_attempts - failed",
            &[&hash.as_slice(), &now],
        )
        .await?;
        Ok(match r {
            Some(r) => Attempt::Reserved {
                remaining: u32_of(r.try_get(0)?),
            },
            None => Attempt::Inactive,
        })
    }

    async fn record_access(
        &self,
        hash: LinkHash,
        event: AccessEvent,
        refund_attempt: bool,
        tickets: Vec<Ticket>,
    ) -> Result<(), StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let h = hash.as_slice();
        // Locks the link's row: access sequence numbers are taken in turn.
        let n = exec(
            &tx,
            "UPDATE shl_links SET accesses = accesses + 1,
                 failed = CASE WHEN $2 AND failed > 0 THEN failed - 1 ELSE failed END
             WHERE hash = $1",
            &[&h, &refund_attempt],
        )
        .await?;
        if n == 0 {
            return Ok(());
        }
        let seq: i64 = rows(
            &tx,
            "SELECT COALESCE(MAX(seq), -1) + 1 FROM shl_access WHERE hash = $1",
            &[&h],
        )
        .await?
        .first()
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
        let at = int(event.at)?;
        exec(
            &tx,
            "INSERT INTO shl_access (hash, seq, at, recipient, outcome) VALUES ($1, $2, $3, $4, $5)",
            &[
                &h,
                &seq,
                &at,
                &event.recipient,
                &i16::try_from(event.outcome.code()).unwrap_or(0),
            ],
        )
        .await?;
        exec(
            &tx,
            "DELETE FROM shl_access WHERE hash = $1 AND seq <= $2",
            &[&h, &(seq - MAX_ACCESS_EVENTS as i64)],
        )
        .await?;
        exec(
            &tx,
            "DELETE FROM shl_tickets WHERE expires_at <= $1",
            &[&at],
        )
        .await?;
        for t in tickets {
            exec(
                &tx,
                "INSERT INTO shl_tickets (ticket, hash, idx, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (ticket) DO NOTHING",
                &[
                    &t.hash.as_slice(),
                    &h,
                    &i64::from(t.file),
                    &int(t.expires_at)?,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ticket(
        &self,
        ticket: [u8; 32],
        now: u64,
    ) -> Result<Option<(LinkHash, u32)>, StorageError> {
        let c = self.client().await?;
        opt(
            &c,
            "SELECT hash, idx FROM shl_tickets WHERE ticket = $1 AND expires_at > $2",
            &[&ticket.as_slice(), &int(now)?],
        )
        .await?
        .map(|r| Ok((array(r.try_get::<_, &[u8]>(0)?)?, u32_of(r.try_get(1)?))))
        .transpose()
    }

    async fn links_of(&self, owner: Fingerprint) -> Result<Vec<StoredLink>, StorageError> {
        let c = self.client().await?;
        rows(
            &c,
            &format!(
                "SELECT {LINK_COLUMNS} FROM shl_links WHERE owner = $1 ORDER BY created_at DESC, hash"
            ),
            &[&owner.as_bytes().as_slice()],
        )
        .await?
        .iter()
        .map(link_row)
        .collect()
    }

    async fn access_log(
        &self,
        owner: Fingerprint,
        hash: LinkHash,
    ) -> Result<Option<Vec<AccessEvent>>, StorageError> {
        let c = self.client().await?;
        if read_link(&c, &hash)
            .await?
            .filter(|l| l.owner == owner)
            .is_none()
        {
            return Ok(None);
        }
        rows(
            &c,
            "SELECT at, recipient, outcome FROM shl_access WHERE hash = $1 ORDER BY seq",
            &[&hash.as_slice()],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(AccessEvent {
                at: uint(r.try_get(0)?)?,
                recipient: r.try_get(1)?,
                outcome: AccessOutcome::from_code(i64::from(r.try_get::<_, i16>(2)?))
                    .ok_or_else(|| StorageError::new("an unknown access outcome is stored"))?,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
    }

    async fn revoke_link(
        &self,
        owner: Fingerprint,
        hash: LinkHash,
        now: u64,
    ) -> Result<bool, StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let h = hash.as_slice();
        let Some(r) = opt(
            &tx,
            "SELECT owner, revoked_at, bytes FROM shl_links WHERE hash = $1 FOR UPDATE",
            &[&h],
        )
        .await?
        else {
            return Ok(false);
        };
        let stored_owner: &[u8] = r.try_get(0)?;
        if stored_owner != owner.as_bytes().as_slice() {
            return Ok(false);
        }
        if r.try_get::<_, Option<i64>>(1)?.is_some() {
            return Ok(true);
        }
        let bytes: i64 = r.try_get(2)?;
        exec(
            &tx,
            "UPDATE shl_links SET revoked_at = $2 WHERE hash = $1",
            &[&h, &int(now)?],
        )
        .await?;
        drop_files(&tx, h, owner.as_bytes().as_slice(), bytes).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn retire_links(&self, now: u64) -> Result<u64, StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Locked in a stable order, so two instances sweeping at once
        // queue instead of deadlocking; the second finds nothing left.
        let gone = rows(
            &tx,
            "SELECT hash, owner, bytes FROM shl_links
             WHERE revoked_at IS NULL AND files > 0 AND expires_at IS NOT NULL AND expires_at <= $1
             ORDER BY hash FOR UPDATE",
            &[&int(now)?],
        )
        .await?;
        for r in &gone {
            let hash: &[u8] = r.try_get(0)?;
            let owner: &[u8] = r.try_get(1)?;
            let bytes: i64 = r.try_get(2)?;
            exec(
                &tx,
                "UPDATE shl_links SET files = 0, bytes = 0 WHERE hash = $1",
                &[&hash],
            )
            .await?;
            drop_files(&tx, hash, owner, bytes).await?;
        }
        tx.commit().await?;
        Ok(gone.len() as u64)
    }
}

/// Deletes a link's files and tickets and gives their charge back to its
/// owner, in the caller's transaction (revoking and retiring a link).
async fn drop_files<C: deadpool_postgres::GenericClient>(
    c: &C,
    hash: &[u8],
    owner: &[u8],
    bytes: i64,
) -> Result<(), StorageError> {
    exec(c, "DELETE FROM shl_files WHERE hash = $1", &[&hash]).await?;
    exec(c, "DELETE FROM shl_tickets WHERE hash = $1", &[&hash]).await?;
    refund(c, owner, bytes).await
}
