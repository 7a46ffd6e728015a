//! [`PairingStore`] for [`PgMeta`] (migration 8): a join and a reveal are
//! each one conditional `UPDATE … RETURNING`, atomic across relays sharing
//! the database; opening counts live slots under an advisory lock.

use async_trait::async_trait;
use vault_core::Fingerprint;

use super::{array, exec, int, opt, rows, uint, PgMeta};
use crate::storage::pairings::{OpenOutcome, PairingSlot, PairingStore, StepOutcome};
use crate::storage::StorageError;

const COLUMNS: &str =
    "slot, opener, commit, expires_at, joiner, joiner_nonce, person, opener_nonce";

/// The advisory lock under which slots are opened ("pairing").
const OPEN_LOCK: i64 = 0x0070_6169_7269_6e67;

fn fp(v: &[u8]) -> Result<Fingerprint, StorageError> {
    array(v).map(Fingerprint::from_bytes)
}

fn opt32(v: Option<&[u8]>) -> Result<Option<[u8; 32]>, StorageError> {
    v.map(array).transpose()
}

fn pair(
    a: Option<&[u8]>,
    b: Option<&[u8]>,
) -> Result<Option<(Fingerprint, [u8; 32])>, StorageError> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((fp(a)?, array(b)?))),
        (None, None) => Ok(None),
        _ => Err(StorageError::new("a pairing slot is stored half set")),
    }
}

fn slot_row(r: &tokio_postgres::Row) -> Result<PairingSlot, StorageError> {
    Ok(PairingSlot {
        slot: array(r.try_get::<_, &[u8]>(0)?)?,
        opener: fp(r.try_get::<_, &[u8]>(1)?)?,
        commit: array(r.try_get::<_, &[u8]>(2)?)?,
        expires_at: uint(r.try_get(3)?)?,
        joined: r.try_get::<_, Option<&[u8]>>(4)?.map(fp).transpose()?,
        device_nonce: opt32(r.try_get(5)?)?,
        revealed: pair(r.try_get(6)?, r.try_get(7)?)?,
    })
}

impl PgMeta {
    /// Runs one conditional `UPDATE … RETURNING` of a slot: the slot as
    /// changed, or why it was not (refused as it is, or not found).
    async fn step(
        &self,
        sql: &str,
        params: super::Params<'_>,
        slot: [u8; 32],
        now: u64,
    ) -> Result<StepOutcome, StorageError> {
        let updated = {
            let c = self.client().await?;
            opt(&c, sql, params).await?
        };
        if let Some(r) = updated {
            return Ok(StepOutcome::Done(slot_row(&r)?));
        }
        Ok(match self.pairing(slot, now).await? {
            Some(s) => StepOutcome::Refused(s),
            None => StepOutcome::NotFound,
        })
    }
}

#[async_trait]
impl PairingStore for PgMeta {
    async fn open_pairing(
        &self,
        slot: PairingSlot,
        per_opener: usize,
        total: usize,
        now: u64,
    ) -> Result<OpenOutcome, StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&OPEN_LOCK])
            .await?;
        let now_i = int(now)?;
        exec(
            &tx,
            "DELETE FROM pairings WHERE slot = $1 AND expires_at < $2",
            &[&slot.slot.as_slice(), &now_i],
        )
        .await?;
        if opt(
            &tx,
            "SELECT 1 FROM pairings WHERE slot = $1",
            &[&slot.slot.as_slice()],
        )
        .await?
        .is_some()
        {
            return Ok(OpenOutcome::Taken);
        }
        let count = |r: Vec<tokio_postgres::Row>| -> Result<u64, StorageError> {
            uint(r.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
        };
        let mine = count(
            rows(
                &tx,
                "SELECT COUNT(*) FROM pairings WHERE opener = $1 AND expires_at >= $2",
                &[&slot.opener.as_bytes().as_slice(), &now_i],
            )
            .await?,
        )?;
        if mine >= per_opener as u64 {
            return Ok(OpenOutcome::TooManyOfOpener(per_opener));
        }
        let all = count(
            rows(
                &tx,
                "SELECT COUNT(*) FROM pairings WHERE expires_at >= $1",
                &[&now_i],
            )
            .await?,
        )?;
        if all >= total as u64 {
            return Ok(OpenOutcome::TooMany(total));
        }
        exec(
            &tx,
            "INSERT INTO pairings (slot, opener, commit, expires_at) VALUES ($1, $2, $3, $4)",
            &[
                &slot.slot.as_slice(),
                &slot.opener.as_bytes().as_slice(),
                &slot.commit.as_slice(),
                &int(slot.expires_at)?,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(OpenOutcome::Opened)
    }

    async fn pairing(&self, slot: [u8; 32], now: u64) -> Result<Option<PairingSlot>, StorageError> {
        let c = self.client().await?;
        opt(
            &c,
            &format!("SELECT {COLUMNS} FROM pairings WHERE slot = $1 AND expires_at >= $2"),
            &[&slot.as_slice(), &int(now)?],
        )
        .await?
        .map(|r| slot_row(&r))
        .transpose()
    }

    async fn join_pairing(
        &self,
        slot: [u8; 32],
        device: Fingerprint,
        now: u64,
    ) -> Result<StepOutcome, StorageError> {
        self.step(
            &format!(
                "UPDATE pairings SET joiner = $2
                 WHERE slot = $1 AND expires_at >= $3 AND opener <> $2
                   AND (joiner IS NULL OR (joiner = $2 AND joiner_nonce IS NULL))
                 RETURNING {COLUMNS}"
            ),
            &[&slot.as_slice(), &device.as_bytes().as_slice(), &int(now)?],
            slot,
            now,
        )
        .await
    }

    async fn pairing_nonce(
        &self,
        slot: [u8; 32],
        device: Fingerprint,
        nonce: [u8; 32],
        now: u64,
    ) -> Result<StepOutcome, StorageError> {
        self.step(
            &format!(
                "UPDATE pairings SET joiner_nonce = $3
                 WHERE slot = $1 AND joiner = $2 AND expires_at >= $4
                   AND (joiner_nonce IS NULL OR joiner_nonce = $3)
                 RETURNING {COLUMNS}"
            ),
            &[
                &slot.as_slice(),
                &device.as_bytes().as_slice(),
                &nonce.as_slice(),
                &int(now)?,
            ],
            slot,
            now,
        )
        .await
    }

    async fn reveal_pairing(
        &self,
        slot: [u8; 32],
        opener: Fingerprint,
        person: Fingerprint,
        nonce: [u8; 32],
        now: u64,
    ) -> Result<StepOutcome, StorageError> {
        self.step(
            &format!(
                "UPDATE pairings SET person = $3, opener_nonce = $4
                 WHERE slot = $1 AND opener = $2 AND expires_at >= $5
                   AND joiner_nonce IS NOT NULL AND person IS NULL
                 RETURNING {COLUMNS}"
            ),
            &[
                &slot.as_slice(),
                &opener.as_bytes().as_slice(),
                &person.as_bytes().as_slice(),
                &nonce.as_slice(),
                &int(now)?,
            ],
            slot,
            now,
        )
        .await
    }

    async fn close_pairing(
        &self,
        slot: [u8; 32],
        opener: Fingerprint,
    ) -> Result<bool, StorageError> {
        let c = self.client().await?;
        Ok(exec(
            &c,
            "DELETE FROM pairings WHERE slot = $1 AND opener = $2",
            &[&slot.as_slice(), &opener.as_bytes().as_slice()],
        )
        .await?
            == 1)
    }

    async fn expire_pairings(&self, now: u64) -> Result<u64, StorageError> {
        let c = self.client().await?;
        exec(
            &c,
            "DELETE FROM pairings WHERE expires_at < $1",
            &[&int(now)?],
        )
        .await
    }
}
