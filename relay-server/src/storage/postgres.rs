//! Metadata on PostgreSQL ([`PgMeta`]): the same contract as
//! [`super::sqlite::SqliteMeta`], for relays that share one database.
//!
//! - **Migrations.** [`MIGRATIONS`] are numbered SQL files applied in order
//!   at start, each in its own transaction together with its row in
//!   `relay_migrations`, under a transaction-scoped advisory lock (relays
//!   starting together take turns). A database newer than this relay is
//!   refused. A new table (the inbox allow-list, say) is a new file.
//! - **Appends** are compare-and-swap on the vault's head inside one
//!   transaction: `UPDATE vaults SET head… WHERE vault = $v AND head_seq =
//!   $old AND head_hash = $oldhash` takes the vault's row lock, so
//!   concurrent appends to one vault queue behind it and then see the new
//!   head (and are told [`AppendError::HeadMoved`]); the primary key
//!   `(vault, seq)` of `entries` refuses an entry stored twice whatever
//!   happens. An append is acknowledged only once its transaction
//!   committed (`synchronous_commit` is the server's; keep it `on`).
//! - **Charges** are one upsert each (`… DO UPDATE … WHERE bytes + new <=
//!   quota`), atomic without a read first.
//!
//! Plain TCP only (no TLS to the database yet): run it on a private
//! network or a loopback/Unix socket.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;
use vault_core::{CollectionId, Fingerprint, RecordId, VaultId};

use super::backends::{BackendError, DatabaseUrl};
use super::{
    AcceptedOwners, AddBlobOutcome, AppendBatch, AppendError, BlobDownload, BlobInfo,
    CreateOutcome, DeviceLists, Head, InboxEntry, MetaStore, NonceClaim, Precheck, StagedAppend,
    StorageError, StoredEntry,
};

/// One schema migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number: migrations apply in order, each once.
    pub version: i64,
    /// What it does.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration, in order. Append only: a released migration never
/// changes.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "metadata",
        sql: include_str!("postgres/0001_metadata.sql"),
    },
    Migration {
        version: 2,
        name: "s3 upload state",
        sql: include_str!("postgres/0002_s3_uploads.sql"),
    },
    Migration {
        version: 3,
        name: "accepted owners",
        sql: include_str!("postgres/0003_inbox_accepted.sql"),
    },
    Migration {
        version: 4,
        name: "shared request nonces",
        sql: include_str!("postgres/0004_nonces.sql"),
    },
    Migration {
        version: 5,
        name: "smart health links",
        sql: include_str!("postgres/0005_shl.sql"),
    },
    Migration {
        version: 6,
        name: "s3 upload holders",
        sql: include_str!("postgres/0006_upload_holders.sql"),
    },
    Migration {
        version: 7,
        name: "device lists",
        sql: include_str!("postgres/0007_device_lists.sql"),
    },
    Migration {
        version: 8,
        name: "pairing slots",
        sql: include_str!("postgres/0008_pairings.sql"),
    },
];

mod links;
mod pairings;

/// The advisory lock key under which migrations run ("vaultmig").
const MIGRATION_LOCK: i64 = 0x7661_756c_746d_6967;

/// Parameters of a query.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        // 53100 disk_full.
        let full = e
            .code()
            .is_some_and(|c| *c == tokio_postgres::error::SqlState::DISK_FULL);
        Self {
            message: format!("PostgreSQL: {}", describe(&e)),
            full,
            unavailable: unreachable(&e),
        }
    }
}

/// Whether a PostgreSQL error means the server cannot be reached or is
/// going away (the connection closed or failed, or SQLSTATE class 08
/// connection exception, 57P operator intervention such as a shutdown or
/// a server still starting, 53300 too many connections): the request may
/// succeed later, unlike a refused statement.
fn unreachable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P") || c == "53300"
        }
        // tokio-postgres's error kinds are private; their texts are
        // stable: Connect, Io, Closed and Timeout.
        None => {
            let text = e.to_string();
            e.is_closed()
                || [
                    "error connecting",
                    "error communicating",
                    "connection closed",
                    "timeout waiting",
                ]
                .iter()
                .any(|p| text.starts_with(p))
        }
    }
}

impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StorageError::unavailable(format!("PostgreSQL connection pool: {other}")),
        }
    }
}

/// A tokio-postgres error with the server's message or the I/O cause
/// (its `Display` alone says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn int(v: u64) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError::new(format!("{v} does not fit in PostgreSQL")))
}

fn uint(v: i64) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::new(format!("a negative count ({v}) is stored")))
}

fn array<const N: usize>(v: &[u8]) -> Result<[u8; N], StorageError> {
    v.try_into()
        .map_err(|_| StorageError::new(format!("a stored id is {} bytes, not {N}", v.len())))
}

/// A person's device lists in the directory (serial 0 and none if none).
async fn read_device_lists<C: GenericClient>(
    c: &C,
    person: &Fingerprint,
) -> Result<DeviceLists, StorageError> {
    let row = opt(
        c,
        "SELECT serial, lists FROM device_lists WHERE person = $1",
        &[&person.as_bytes().as_slice()],
    )
    .await?;
    Ok(match row {
        Some(r) => DeviceLists {
            serial: uint(r.try_get::<_, i64>(0)?)?,
            lists: r.try_get(1)?,
        },
        None => DeviceLists::default(),
    })
}

/// A member's accepted owners (version 0 and none if never set).
async fn read_accepted<C: GenericClient>(
    c: &C,
    member: &Fingerprint,
) -> Result<AcceptedOwners, StorageError> {
    let Some(r) = opt(
        c,
        "SELECT version, owners FROM inbox_accepted WHERE member = $1",
        &[&member.as_bytes().as_slice()],
    )
    .await?
    else {
        return Ok(AcceptedOwners::default());
    };
    let owners: &[u8] = r.try_get(1)?;
    Ok(AcceptedOwners {
        version: uint(r.try_get::<_, i64>(0)?)?,
        owners: owners
            .chunks_exact(32)
            .map(|c| array(c).map(Fingerprint::from_bytes))
            .collect::<Result<_, _>>()?,
    })
}

/// A quota as a bigint: above 2^63 - 1 is the same as no quota.
fn quota(q: u64) -> i64 {
    i64::try_from(q).unwrap_or(i64::MAX)
}

async fn rows<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<tokio_postgres::Row>, StorageError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, params).await?)
}

async fn opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<tokio_postgres::Row>, StorageError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&st, params).await?)
}

async fn exec<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> Result<u64, StorageError> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, params).await?)
}

/// Charges `bytes` to `account` if its usage stays within `limit`.
async fn charge<C: GenericClient>(
    c: &C,
    account: &Fingerprint,
    bytes: u64,
    limit: u64,
) -> Result<bool, StorageError> {
    if bytes > limit {
        return Ok(false);
    }
    let added = opt(
        c,
        CHARGE_SQL,
        &[&account.as_bytes().as_slice(), &int(bytes)?, &quota(limit)],
    )
    .await?;
    Ok(added.is_some())
}

/// Gives back `bytes` (never below zero).
async fn refund<C: GenericClient>(c: &C, account: &[u8], bytes: i64) -> Result<(), StorageError> {
    exec(
        c,
        "UPDATE usage SET bytes = GREATEST(bytes - $2, 0) WHERE account = $1",
        &[&account, &bytes],
    )
    .await?;
    Ok(())
}

/// Forgets the unfinished upload of `hash` to `vault`, refunding each
/// account what its chunks were charged; returns how many accounts.
async fn release_uploads<C: GenericClient>(
    c: &C,
    vault: &[u8],
    hash: &[u8],
) -> Result<usize, StorageError> {
    let released = rows(
        c,
        "DELETE FROM uploads WHERE vault = $1 AND hash = $2 RETURNING account, bytes",
        &[&vault, &hash],
    )
    .await?;
    for r in &released {
        refund(c, r.try_get::<_, &[u8]>(0)?, r.try_get(1)?).await?;
    }
    Ok(released.len())
}

/// A blob's record in a vault, and whether a record-put names it.
async fn blob_state<C: GenericClient>(
    c: &C,
    vault: &[u8],
    hash: &[u8],
) -> Result<Option<(BlobInfo, bool)>, StorageError> {
    opt(c, BLOB_STATE_SQL, &[&vault, &hash])
        .await?
        .as_ref()
        .map(blob_state_row)
        .transpose()
}

/// A read-only transaction that sees one snapshot of the database.
async fn snapshot(
    c: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, StorageError> {
    Ok(c.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// Removes a purged blob's records from one vault and gives its charge
/// back; its small-blob bytes go too once no vault has it.
async fn forget_blob<C: GenericClient>(
    c: &C,
    vault: &[u8],
    hash: &[u8],
) -> Result<(), StorageError> {
    let Some(gone) = opt(
        c,
        "DELETE FROM blobs WHERE vault = $1 AND hash = $2 RETURNING uploader, len",
        &[&vault, &hash],
    )
    .await?
    else {
        return Ok(());
    };
    exec(
        c,
        "DELETE FROM blob_refs WHERE vault = $1 AND hash = $2",
        &[&vault, &hash],
    )
    .await?;
    refund(c, gone.try_get::<_, &[u8]>(0)?, gone.try_get(1)?).await?;
    // Lock the inline bytes first, so that of two vaults purging the
    // same blob at once, the second sees the first's purge committed.
    opt(
        c,
        "SELECT 1 FROM small_blobs WHERE hash = $1 FOR UPDATE",
        &[&hash],
    )
    .await?;
    exec(
        c,
        "DELETE FROM small_blobs WHERE hash = $1 AND NOT EXISTS (SELECT 1 FROM blobs WHERE hash = $1)",
        &[&hash],
    )
    .await?;
    Ok(())
}

/// The PostgreSQL metadata store: a pool of connections.
pub struct PgMeta {
    pool: Pool,
    /// The URL, redacted, for messages.
    shown: String,
}

impl PgMeta {
    /// Connects with at most `pool_size` connections, checks the server
    /// answers, and applies [`MIGRATIONS`].
    pub async fn connect(url: &DatabaseUrl, pool_size: usize) -> Result<Self, BackendError> {
        let meta = Self::connect_unmigrated(url, pool_size).await?;
        meta.migrate().await?;
        Ok(meta)
    }

    /// Connects and checks the server answers, writing nothing: call
    /// [`PgMeta::migrate`] before use (after every other check passed).
    pub async fn connect_unmigrated(
        url: &DatabaseUrl,
        pool_size: usize,
    ) -> Result<Self, BackendError> {
        let shown = url.to_string();
        let mut config: tokio_postgres::Config =
            url.expose()
                .parse()
                .map_err(|e: tokio_postgres::Error| BackendError::DatabaseUrl {
                    // The parser's message quotes no value.
                    url: shown.clone(),
                    reason: e.to_string(),
                })?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(BackendError::DatabaseUrl {
                url: shown,
                reason: "sslmode=require: this relay does not speak TLS to PostgreSQL yet; use a private network or a Unix socket".into(),
            });
        }
        if config.get_password().is_none() {
            if let Ok(password) = std::env::var("PGPASSWORD") {
                config.password(password);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        config.application_name("vault-relay");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(std::time::Duration::from_secs(15)))
            .build()
            .map_err(|e| BackendError::DatabaseConnect {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        let client = pool
            .get()
            .await
            .map_err(|e| BackendError::DatabaseConnect {
                url: shown.clone(),
                reason: match e {
                    deadpool_postgres::PoolError::Backend(e) => describe(&e),
                    deadpool_postgres::PoolError::Timeout(_) => "no answer in time".into(),
                    other => other.to_string(),
                },
            })?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| BackendError::DatabaseConnect {
                url: shown.clone(),
                reason: describe(&e),
            })?;
        drop(client);
        Ok(Self { pool, shown })
    }

    /// Applies the [`MIGRATIONS`] the database lacks.
    pub async fn migrate(&self) -> Result<(), BackendError> {
        let schema = |reason| BackendError::DatabaseSchema {
            url: self.shown.clone(),
            reason,
        };
        let mut client = self.pool.get().await.map_err(|e| schema(e.to_string()))?;
        migrate(&mut client).await.map_err(schema)
    }

    /// The connection pool (the S3 blob store keeps its upload state in
    /// the same database).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes the pool: connections in use finish, no new ones are made.
    pub fn close(&self) {
        self.pool.close();
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        Ok(self.pool.get().await?)
    }
}

/// Applies the migrations this database lacks; returns the error text.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), String> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    for m in MIGRATIONS {
        let tx = client.transaction().await.map_err(|e| describe(&e))?;
        let applied: Result<bool, tokio_postgres::Error> = async {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS relay_migrations (
                    version bigint PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )",
            )
            .await?;
            let current: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM relay_migrations",
                    &[],
                )
                .await?
                .try_get(0)?;
            if current > known {
                return Ok(false);
            }
            if current < m.version {
                tx.batch_execute(m.sql).await?;
                tx.execute(
                    "INSERT INTO relay_migrations (version, name) VALUES ($1, $2)",
                    &[&m.version, &m.name],
                )
                .await?;
                tracing::info!(
                    version = m.version,
                    name = m.name,
                    "applied a database migration"
                );
            }
            Ok(true)
        }
        .await;
        match applied {
            Ok(true) => tx.commit().await.map_err(|e| describe(&e))?,
            Ok(false) => {
                return Err(format!(
                    "the database has a schema newer than this relay knows (migration {known}); upgrade relay-server"
                ))
            }
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(format!(
                    "migration {} ({}) failed and was rolled back: {}",
                    m.version,
                    m.name,
                    describe(&e)
                ));
            }
        }
    }
    Ok(())
}

impl Drop for PgMeta {
    fn drop(&mut self) {
        self.pool.close();
    }
}

/// What an append found, inside its transaction.
enum AppendOutcome {
    Stored(Head),
    Refused(AppendError),
}

/// Opens an append's transaction. A staged append keeps it open while the
/// relay verifies the entry (decision 61), holding the vault's and the
/// account's row locks; should the relay stop answering meanwhile (a
/// frozen machine keeps its connections open), PostgreSQL ends the session
/// after ten seconds idle in the transaction, which rolls it back and frees
/// the locks for the other relays. Verifying one entry takes about 0.1 ms.
const BEGIN_SQL: &str = "BEGIN; SET LOCAL idle_in_transaction_session_timeout = '10s'";
const CAS_SQL: &str = "UPDATE vaults SET head_seq = $4, head_hash = $5
     WHERE vault = $1 AND head_seq = $2 AND head_hash = $3";
const BLOB_STATE_SQL: &str = "SELECT len, uploader, EXISTS (SELECT 1 FROM blob_refs r WHERE r.vault = b.vault AND r.hash = b.hash)
     FROM blobs b WHERE b.vault = $1 AND b.hash = $2";
const CHARGE_SQL: &str = "INSERT INTO usage (account, bytes) VALUES ($1, $2)
     ON CONFLICT (account) DO UPDATE SET bytes = usage.bytes + excluded.bytes
     WHERE usage.bytes + excluded.bytes <= $3
     RETURNING bytes";
const ENTRY_SQL: &str = "INSERT INTO entries (vault, seq, hash, bytes) VALUES ($1, $2, $3, $4)";
const BLOB_REF_SQL: &str =
    "INSERT INTO blob_refs (vault, hash, record, collection) VALUES ($1, $2, $3, $4)
     ON CONFLICT DO NOTHING";
const INBOX_SQL: &str = "INSERT INTO inbox (member, vault) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// A blob state row ([`BLOB_STATE_SQL`]) as (info, named by a record).
fn blob_state_row(r: &tokio_postgres::Row) -> Result<(BlobInfo, bool), StorageError> {
    Ok((
        BlobInfo {
            len: uint(r.try_get(0)?)?,
            uploader: Fingerprint::from_bytes(array(r.try_get::<_, &[u8]>(1)?)?),
        },
        r.try_get(2)?,
    ))
}

/// A `blob_refs` row whose first two columns are the collection and the
/// record.
fn ref_row(r: &tokio_postgres::Row) -> Result<(CollectionId, RecordId), StorageError> {
    Ok((
        CollectionId::from_bytes(array(r.try_get::<_, &[u8]>(0)?)?),
        RecordId::from_bytes(array(r.try_get::<_, &[u8]>(1)?)?),
    ))
}

/// A vault's head, if the vault exists.
async fn read_head<C: GenericClient>(c: &C, vault: &[u8]) -> Result<Option<Head>, StorageError> {
    opt(
        c,
        "SELECT head_seq, head_hash FROM vaults WHERE vault = $1",
        &[&vault],
    )
    .await?
    .map(|r| {
        Ok(Head {
            seq: uint(r.try_get(0)?)?,
            hash: array(r.try_get::<_, &[u8]>(1)?)?,
        })
    })
    .transpose()
}

/// Runs an append's checks and writes inside one transaction, pipelined:
/// `BEGIN`, the compare-and-swap on the head (which takes the vault's row
/// lock, so appends to one vault queue there), the blob states, the
/// charge and every insert go to the server in one write and come back in
/// one read (tokio-postgres sends requests in the order they are first
/// polled; `join!` and `join_all` poll in order). The checks are read
/// afterwards: a refused append's writes are rolled back, never committed.
/// On `Stored` the transaction is open and the caller commits; on
/// `Refused` it has been rolled back; on an error the caller rolls back.
async fn append_pipelined(
    c: &deadpool_postgres::Object,
    b: &AppendBatch,
) -> Result<AppendOutcome, StorageError> {
    let vault = b.vault.as_bytes().as_slice();
    let last = b.entries.last().map_or(b.prev, |e| Head {
        seq: e.seq,
        hash: e.hash,
    });
    let bytes: u64 = b.entries.iter().map(|e| e.bytes.len() as u64).sum();
    if bytes > b.quota {
        return Ok(AppendOutcome::Refused(AppendError::Quota));
    }
    // Prepared once per connection, then cached: no round trip here.
    let cas = c.prepare_cached(CAS_SQL).await?;
    let blob_state = c.prepare_cached(BLOB_STATE_SQL).await?;
    let charge = c.prepare_cached(CHARGE_SQL).await?;
    let entry = c.prepare_cached(ENTRY_SQL).await?;
    let blob_ref = c.prepare_cached(BLOB_REF_SQL).await?;
    let inbox = c.prepare_cached(INBOX_SQL).await?;
    let (prev_seq, last_seq) = (int(b.prev.seq)?, int(last.seq)?);
    let seqs = b
        .entries
        .iter()
        .map(|e| int(e.seq))
        .collect::<Result<Vec<_>, _>>()?;
    let (bytes, limit) = (int(bytes)?, quota(b.quota));
    let account = b.account.as_bytes().as_slice();
    let (blob_state, entry, blob_ref, inbox) = (&blob_state, &entry, &blob_ref, &inbox);
    let (begun, swapped, states, charged, entries, refs, members) =
        futures_util::join!(
            c.batch_execute(BEGIN_SQL),
            async {
                c.execute(
                    &cas,
                    &[
                        &vault,
                        &prev_seq,
                        &b.prev.hash.as_slice(),
                        &last_seq,
                        &last.hash.as_slice(),
                    ],
                )
                .await
            },
            futures_util::future::join_all(b.blob_refs.iter().map(|r| async move {
                c.query_opt(blob_state, &[&vault, &r.hash.as_slice()]).await
            })),
            async { c.query_opt(&charge, &[&account, &bytes, &limit]).await },
            futures_util::future::join_all(b.entries.iter().zip(&seqs).map(
                |(e, seq)| async move {
                    c.execute(entry, &[&vault, seq, &e.hash.as_slice(), &e.bytes])
                        .await
                }
            )),
            futures_util::future::join_all(b.blob_refs.iter().map(|r| async move {
                c.execute(
                    blob_ref,
                    &[
                        &vault,
                        &r.hash.as_slice(),
                        &r.record.as_bytes().as_slice(),
                        &r.collection.as_bytes().as_slice(),
                    ],
                )
                .await
            })),
            futures_util::future::join_all(b.inbox.iter().map(|m| async move {
                c.execute(inbox, &[&m.as_bytes().as_slice(), &vault]).await
            })),
        );
    begun?;
    // The first refusal in the order the checks were sent; the inserts'
    // errors count only when every check passed (after a moved head, ours
    // collide with the entries another append stored).
    if swapped? == 0 {
        // The head is read once the transaction is over (our inserts may
        // have aborted it).
        c.batch_execute("ROLLBACK").await?;
        return Ok(AppendOutcome::Refused(match read_head(c, vault).await? {
            None => AppendError::NoVault,
            Some(head) => AppendError::HeadMoved(head),
        }));
    }
    // The quota, then each blob in order, as `storage::refusal` decides.
    let mut refusal = charged?.is_none().then_some(AppendError::Quota);
    for (r, state) in b.blob_refs.iter().zip(states) {
        let state = state?.as_ref().map(blob_state_row).transpose()?;
        if refusal.is_none() && !state.is_some_and(|(info, used)| r.usable(&info, used, &b.account))
        {
            refusal = Some(AppendError::BlobMissing(r.entry));
        }
    }
    if let Some(refused) = refusal {
        c.batch_execute("ROLLBACK").await?;
        return Ok(AppendOutcome::Refused(refused));
    }
    for done in entries.into_iter().chain(refs).chain(members) {
        done?;
    }
    Ok(AppendOutcome::Stored(last))
}

/// Rolls back `c`'s transaction before the connection goes back to the
/// pool; a connection that cannot is taken out of the pool instead
/// (closing it ends the transaction on the server).
async fn roll_back(c: deadpool_postgres::Object) {
    if c.batch_execute("ROLLBACK").await.is_err() {
        drop(deadpool_postgres::Object::take(c));
    }
}

/// An append staged inside its open transaction
/// ([`MetaStore::stage_append`]), on the connection that holds it.
/// Dropped unfinished, the connection is taken out of the pool and closed,
/// which rolls the transaction back: a connection never goes back to the
/// pool inside a transaction.
struct PgStaged {
    c: Option<deadpool_postgres::Object>,
    vault: VaultId,
    head: Head,
}

#[async_trait]
impl StagedAppend for PgStaged {
    async fn commit(mut self: Box<Self>, purged: Vec<[u8; 32]>) -> Result<Head, AppendError> {
        // The connection stays in `self` until the transaction is over: a
        // panic or a cancellation on the way drops it out of the pool.
        let c = self
            .c
            .as_ref()
            .ok_or_else(|| StorageError::new("the staged append was already finished"))?;
        let vault = self.vault.as_bytes().as_slice();
        let done = async {
            // Purges are rare: their dependent steps run one after the
            // other, inside the transaction.
            for hash in &purged {
                forget_blob(c, vault, hash).await?;
            }
            // Acknowledged only once committed.
            c.batch_execute("COMMIT").await?;
            Ok::<_, StorageError>(())
        }
        .await;
        let c = self.c.take();
        match (done, c) {
            (Err(e), Some(c)) => {
                roll_back(c).await;
                Err(e.into())
            }
            (done, _) => done.map(|()| self.head).map_err(AppendError::from),
        }
    }

    async fn abandon(mut self: Box<Self>) {
        if let Some(c) = self.c.take() {
            roll_back(c).await;
        }
    }
}

impl Drop for PgStaged {
    fn drop(&mut self) {
        if let Some(c) = self.c.take() {
            drop(deadpool_postgres::Object::take(c));
        }
    }
}

/// The claim of a request's nonce ([`MetaStore::claim_nonce`]) as one
/// simple query, committed asynchronously: the nonce reaches the disk with
/// the next synchronous commit at the latest, so any write the request
/// makes (each committed synchronously after it) is durable only with its
/// nonce; a server crash loses at most the nonces of the last fraction of
/// a second of reads, which then could be replayed within the skew window
/// (a read reveals nothing to someone who cannot see its answer).
/// Parameters cannot go in a multi-statement simple query: the values are
/// hex digits and integers formatted here, never text from the request.
fn nonce_claim_sql(claim: &NonceClaim) -> Result<String, StorageError> {
    Ok(format!(
        "BEGIN; SET LOCAL synchronous_commit TO OFF; \
         INSERT INTO relay_nonces (identity, nonce, expires) \
         VALUES ('\\x{}'::bytea, '\\x{}'::bytea, {}) \
         ON CONFLICT (identity, nonce) DO UPDATE SET expires = excluded.expires \
         WHERE relay_nonces.expires < {}; COMMIT",
        hex::encode(claim.signer.as_bytes()),
        hex::encode(claim.nonce),
        int(claim.expires)?,
        int(claim.now)?,
    ))
}

/// Whether the answer to [`nonce_claim_sql`] (BEGIN, SET, INSERT, COMMIT)
/// reports the nonce inserted: the third command's row count.
fn nonce_claimed(messages: &[tokio_postgres::SimpleQueryMessage]) -> Result<bool, StorageError> {
    let inserted = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .nth(2)
        .ok_or_else(|| StorageError::new("PostgreSQL did not report the nonce insert"))?;
    Ok(inserted == 1)
}

#[async_trait]
impl MetaStore for PgMeta {
    async fn put_identity(&self, fp: Fingerprint, document: Vec<u8>) -> Result<bool, StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "INSERT INTO identities (fingerprint, document) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&fp.as_bytes().as_slice(), &document],
        )
        .await?;
        if n == 1 {
            charge(&tx, &fp, document.len() as u64, u64::MAX).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn identity(&self, fp: Fingerprint) -> Result<Option<Vec<u8>>, StorageError> {
        let c = self.client().await?;
        let r = opt(
            &c,
            "SELECT document FROM identities WHERE fingerprint = $1",
            &[&fp.as_bytes().as_slice()],
        )
        .await?;
        Ok(r.map(|r| r.try_get(0)).transpose()?)
    }

    async fn create_vault(
        &self,
        vault: VaultId,
        owner: Fingerprint,
        genesis: StoredEntry,
        quota: u64,
    ) -> Result<CreateOutcome, StorageError> {
        let v = vault.as_bytes().as_slice();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Inserting first takes the key: a concurrent creation of the same
        // vault waits here, then finds it.
        let created = exec(
            &tx,
            "INSERT INTO vaults (vault, owner, head_seq, head_hash) VALUES ($1, $2, 0, $3)
             ON CONFLICT DO NOTHING",
            &[&v, &owner.as_bytes().as_slice(), &genesis.hash.as_slice()],
        )
        .await?;
        if created == 0 {
            let existing = opt(
                &tx,
                "SELECT bytes FROM entries WHERE vault = $1 AND seq = 0",
                &[&v],
            )
            .await?;
            let same = match existing {
                Some(r) => r.try_get::<_, &[u8]>(0)? == genesis.bytes.as_slice(),
                None => false,
            };
            tx.rollback().await?;
            return Ok(if same {
                CreateOutcome::AlreadyStored
            } else {
                CreateOutcome::Conflict
            });
        }
        if !charge(&tx, &owner, genesis.bytes.len() as u64, quota).await? {
            tx.rollback().await?;
            return Ok(CreateOutcome::Quota);
        }
        exec(
            &tx,
            "INSERT INTO entries (vault, seq, hash, bytes) VALUES ($1, 0, $2, $3)",
            &[&v, &genesis.hash.as_slice(), &genesis.bytes],
        )
        .await?;
        exec(
            &tx,
            "INSERT INTO inbox (member, vault) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&owner.as_bytes().as_slice(), &v],
        )
        .await?;
        tx.commit().await?;
        Ok(CreateOutcome::Created)
    }

    async fn head(&self, vault: VaultId) -> Result<Option<Head>, StorageError> {
        let c = self.client().await?;
        read_head(&c, vault.as_bytes()).await
    }

    async fn entries(
        &self,
        vault: VaultId,
        since: u64,
        limit: u64,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let c = self.client().await?;
        let found = rows(
            &c,
            "SELECT bytes FROM entries WHERE vault = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
            &[&vault.as_bytes().as_slice(), &quota(since), &quota(limit)],
        )
        .await?;
        Ok(found
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?)
    }

    async fn append(&self, mut batch: AppendBatch) -> Result<Head, AppendError> {
        let purged = std::mem::take(&mut batch.purged);
        self.stage_append(None, batch).await?.commit(purged).await
    }

    async fn blob(&self, vault: VaultId, hash: [u8; 32]) -> Result<Option<BlobInfo>, StorageError> {
        let c = self.client().await?;
        Ok(blob_state(&c, vault.as_bytes(), &hash)
            .await?
            .map(|(info, _)| info))
    }

    async fn append_precheck(
        &self,
        vault: VaultId,
        account: Fingerprint,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Precheck, StorageError> {
        let c = self.client().await?;
        // One round trip: the usage and every blob state pipelined.
        let usage = c
            .prepare_cached("SELECT bytes FROM usage WHERE account = $1")
            .await?;
        let blob_state = c.prepare_cached(BLOB_STATE_SQL).await?;
        let vault = vault.as_bytes().as_slice();
        let account = account.as_bytes().as_slice();
        let (used, states) = futures_util::join!(
            async { c.query_opt(&usage, &[&account]).await },
            futures_util::future::join_all(hashes.iter().map(|h| {
                let blob_state = &blob_state;
                let c = &c;
                async move { c.query_opt(blob_state, &[&vault, &h.as_slice()]).await }
            })),
        );
        let used = used?
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
            .map_or(Ok(0), uint)?;
        let blobs = states
            .into_iter()
            .map(|r| r?.as_ref().map(blob_state_row).transpose())
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok((used, blobs))
    }

    async fn stage_append<'a>(
        &'a self,
        claim: Option<NonceClaim>,
        batch: AppendBatch,
    ) -> Result<Box<dyn StagedAppend + 'a>, AppendError> {
        let sql = claim.as_ref().map(nonce_claim_sql).transpose()?;
        // The connection is held by the staged append from the start: a
        // panic or a cancellation before the transaction is over drops it
        // out of the pool.
        let mut staged = PgStaged {
            c: Some(self.client().await?),
            vault: batch.vault,
            head: batch.prev,
        };
        let c = staged
            .c
            .as_ref()
            .ok_or_else(|| StorageError::new("no connection for the append"))?;
        // One round trip (decision 61): the claim's own transaction, then
        // the append's checks and writes in a transaction left open, sent
        // in that order on one connection.
        let (claimed, outcome) = futures_util::join!(
            async {
                match &sql {
                    Some(sql) => c.simple_query(sql).await.map(Some),
                    None => Ok(None),
                }
            },
            append_pipelined(c, &batch)
        );
        let claimed = match claimed {
            Ok(None) => Ok(true),
            Ok(Some(messages)) => nonce_claimed(&messages),
            Err(e) => Err(StorageError::from(e)),
        };
        match (claimed, outcome) {
            (Ok(true), Ok(AppendOutcome::Stored(head))) => {
                staged.head = head;
                Ok(Box::new(staged))
            }
            (Ok(claimed), Ok(AppendOutcome::Refused(refused))) => {
                // The claim committed, and a refusal rolled its own
                // transaction back: the connection goes back to the pool.
                drop(staged.c.take());
                Err(if claimed {
                    refused
                } else {
                    AppendError::Replayed
                })
            }
            (claimed, outcome) => {
                // A replay whose writes are staged, or an error of either
                // part: nothing of the append stays.
                if let Some(c) = staged.c.take() {
                    roll_back(c).await;
                }
                Err(match (claimed, outcome) {
                    (Err(e), _) | (_, Err(e)) => e.into(),
                    _ => AppendError::Replayed,
                })
            }
        }
    }

    async fn blob_with_refs(
        &self,
        vault: VaultId,
        hash: [u8; 32],
    ) -> Result<Option<(BlobInfo, Vec<(CollectionId, RecordId)>)>, StorageError> {
        let mut c = self.client().await?;
        // One snapshot for the blob and its links.
        let tx = snapshot(&mut c).await?;
        let Some((info, _)) = blob_state(&tx, vault.as_bytes(), &hash).await? else {
            return Ok(None);
        };
        let refs = rows(
            &tx,
            "SELECT collection, record FROM blob_refs WHERE vault = $1 AND hash = $2",
            &[&vault.as_bytes().as_slice(), &hash.as_slice()],
        )
        .await?
        .iter()
        .map(ref_row)
        .collect::<Result<Vec<_>, StorageError>>()?;
        tx.commit().await?;
        Ok(Some((info, refs)))
    }

    async fn add_blob(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        info: BlobInfo,
        quota: u64,
        inline: Option<bytes::Bytes>,
    ) -> Result<AddBlobOutcome, StorageError> {
        let v = vault.as_bytes().as_slice();
        let h = hash.as_slice();
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The chunks of the upload were charged as they were stored: the
        // complete blob's charge replaces theirs, whatever the outcome.
        release_uploads(&tx, v, h).await?;
        let added = exec(
            &tx,
            "INSERT INTO blobs (vault, hash, len, uploader) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[
                &v,
                &h,
                &int(info.len)?,
                &info.uploader.as_bytes().as_slice(),
            ],
        )
        .await?;
        let outcome = if added == 0 {
            AddBlobOutcome::Existed
        } else if !charge(&tx, &info.uploader, info.len, quota).await? {
            exec(
                &tx,
                "DELETE FROM blobs WHERE vault = $1 AND hash = $2",
                &[&v, &h],
            )
            .await?;
            AddBlobOutcome::Quota
        } else {
            if let Some(bytes) = &inline {
                exec(
                    &tx,
                    "INSERT INTO small_blobs (hash, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&h, &bytes.as_ref()],
                )
                .await?;
            }
            AddBlobOutcome::Added
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn blobs_for_download(
        &self,
        vault: VaultId,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Vec<Option<BlobDownload>>, StorageError> {
        let mut c = self.client().await?;
        // One snapshot, two queries, whatever the number of blobs.
        let tx = snapshot(&mut c).await?;
        let v = vault.as_bytes().as_slice();
        let keys: Vec<&[u8]> = hashes.iter().map(|h| h.as_slice()).collect();
        let mut found: HashMap<[u8; 32], BlobDownload> = HashMap::new();
        for r in rows(
            &tx,
            "SELECT hash, len, uploader FROM blobs WHERE vault = $1 AND hash = ANY($2)",
            &[&v, &keys],
        )
        .await?
        {
            let info = BlobInfo {
                len: uint(r.try_get(1)?)?,
                uploader: Fingerprint::from_bytes(array(r.try_get::<_, &[u8]>(2)?)?),
            };
            found.insert(
                array(r.try_get::<_, &[u8]>(0)?)?,
                BlobDownload {
                    info,
                    refs: Vec::new(),
                },
            );
        }
        for r in rows(
            &tx,
            "SELECT collection, record, hash FROM blob_refs WHERE vault = $1 AND hash = ANY($2)",
            &[&v, &keys],
        )
        .await?
        {
            if let Some(d) = found.get_mut(&array::<32>(r.try_get::<_, &[u8]>(2)?)?) {
                d.refs.push(ref_row(&r)?);
            }
        }
        tx.commit().await?;
        Ok(hashes.iter().map(|h| found.get(h).cloned()).collect())
    }

    async fn small_blobs(
        &self,
        hashes: Vec<[u8; 32]>,
    ) -> Result<Vec<Option<bytes::Bytes>>, StorageError> {
        let c = self.client().await?;
        let keys: Vec<&[u8]> = hashes.iter().map(|h| h.as_slice()).collect();
        let mut found: HashMap<[u8; 32], bytes::Bytes> = HashMap::new();
        for r in rows(
            &c,
            "SELECT hash, bytes FROM small_blobs WHERE hash = ANY($1)",
            &[&keys],
        )
        .await?
        {
            found.insert(
                array(r.try_get::<_, &[u8]>(0)?)?,
                bytes::Bytes::from(r.try_get::<_, Vec<u8>>(1)?),
            );
        }
        Ok(hashes.iter().map(|h| found.get(h).cloned()).collect())
    }

    async fn small_blob(&self, hash: [u8; 32]) -> Result<Option<bytes::Bytes>, StorageError> {
        let c = self.client().await?;
        let r = opt(
            &c,
            "SELECT bytes FROM small_blobs WHERE hash = $1",
            &[&hash.as_slice()],
        )
        .await?;
        Ok(r.map(|r| r.try_get::<_, Vec<u8>>(0))
            .transpose()?
            .map(bytes::Bytes::from))
    }

    async fn charge_upload(
        &self,
        vault: VaultId,
        hash: [u8; 32],
        account: Fingerprint,
        bytes: u64,
    ) -> Result<(), StorageError> {
        let now = int(crate::auth::unix_now())?;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        charge(&tx, &account, bytes, u64::MAX).await?;
        exec(
            &tx,
            "INSERT INTO uploads (vault, hash, account, bytes, touched) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (vault, hash, account)
             DO UPDATE SET bytes = uploads.bytes + excluded.bytes, touched = excluded.touched",
            &[
                &vault.as_bytes().as_slice(),
                &hash.as_slice(),
                &account.as_bytes().as_slice(),
                &int(bytes)?,
                &now,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_upload(&self, vault: VaultId, hash: [u8; 32]) -> Result<(), StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        release_uploads(&tx, vault.as_bytes(), &hash).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_stale_uploads(&self, idle: u64) -> Result<usize, StorageError> {
        let before = int(crate::auth::unix_now().saturating_sub(idle))?;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let released = rows(
            &tx,
            "DELETE FROM uploads WHERE (vault, hash) IN
                (SELECT vault, hash FROM uploads WHERE touched <= $1)
             RETURNING account, bytes",
            &[&before],
        )
        .await?;
        for r in &released {
            refund(&tx, r.try_get::<_, &[u8]>(0)?, r.try_get(1)?).await?;
        }
        tx.commit().await?;
        Ok(released.len())
    }

    async fn inbox(&self, member: Fingerprint) -> Result<Vec<InboxEntry>, StorageError> {
        let c = self.client().await?;
        rows(
            &c,
            "SELECT i.vault, v.owner FROM inbox i JOIN vaults v ON v.vault = i.vault
             WHERE i.member = $1 ORDER BY i.vault",
            &[&member.as_bytes().as_slice()],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(InboxEntry {
                vault: VaultId::from_bytes(array(r.try_get::<_, &[u8]>(0)?)?),
                owner: Fingerprint::from_bytes(array(r.try_get::<_, &[u8]>(1)?)?),
            })
        })
        .collect()
    }

    async fn accepted_owners(&self, member: Fingerprint) -> Result<AcceptedOwners, StorageError> {
        let c = self.client().await?;
        read_accepted(&c, &member).await
    }

    async fn set_accepted_owners(
        &self,
        member: Fingerprint,
        list: AcceptedOwners,
    ) -> Result<Result<(), AcceptedOwners>, StorageError> {
        let c = self.client().await?;
        let owners: Vec<u8> = list.owners.iter().flat_map(|o| *o.as_bytes()).collect();
        let version = i64::try_from(list.version)
            .map_err(|_| StorageError::new("an accepted list's version above 2^63 - 1"))?;
        // One statement: stored only over a smaller version, so two relays
        // (or two devices) racing cannot go backwards.
        let n = exec(
            &c,
            "INSERT INTO inbox_accepted (member, version, owners) VALUES ($1, $2, $3)
             ON CONFLICT (member) DO UPDATE SET version = excluded.version, owners = excluded.owners
             WHERE inbox_accepted.version < excluded.version",
            &[&member.as_bytes().as_slice(), &version, &owners],
        )
        .await?;
        if n == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(read_accepted(&c, &member).await?))
        }
    }

    async fn device_lists(&self, person: Fingerprint) -> Result<DeviceLists, StorageError> {
        let c = self.client().await?;
        read_device_lists(&c, &person).await
    }

    async fn set_device_lists(
        &self,
        person: Fingerprint,
        expected: u64,
        lists: DeviceLists,
    ) -> Result<Result<(), DeviceLists>, StorageError> {
        let c = self.client().await?;
        let too_big = |_| StorageError::new("a device list's serial above 2^63 - 1");
        let serial = i64::try_from(lists.serial).map_err(too_big)?;
        let expected_i = i64::try_from(expected).map_err(too_big)?;
        if lists.serial <= expected {
            return Ok(Err(read_device_lists(&c, &person).await?));
        }
        // One statement each: a compare-and-swap on the serial read, so two
        // relays (or two devices) racing cannot go backwards nor replace a
        // version the other did not build on.
        let n = if expected == 0 {
            exec(
                &c,
                "INSERT INTO device_lists (person, serial, lists) VALUES ($1, $2, $3)
                 ON CONFLICT (person) DO NOTHING",
                &[&person.as_bytes().as_slice(), &serial, &lists.lists],
            )
            .await?
        } else {
            exec(
                &c,
                "UPDATE device_lists SET serial = $2, lists = $3 WHERE person = $1 AND serial = $4",
                &[
                    &person.as_bytes().as_slice(),
                    &serial,
                    &lists.lists,
                    &expected_i,
                ],
            )
            .await?
        };
        if n == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(read_device_lists(&c, &person).await?))
        }
    }

    async fn blob_in_use(&self, hash: [u8; 32]) -> Result<bool, StorageError> {
        let c = self.client().await?;
        Ok(opt(
            &c,
            "SELECT 1 FROM blobs WHERE hash = $1 LIMIT 1",
            &[&hash.as_slice()],
        )
        .await?
        .is_some())
    }

    async fn usage(&self, account: Fingerprint) -> Result<u64, StorageError> {
        let c = self.client().await?;
        opt(
            &c,
            "SELECT bytes FROM usage WHERE account = $1",
            &[&account.as_bytes().as_slice()],
        )
        .await?
        .map(|r| r.try_get::<_, i64>(0))
        .transpose()?
        .map_or(Ok(0), uint)
    }

    async fn stored_bytes(&self) -> Result<u64, StorageError> {
        let c = self.client().await?;
        let r = opt(&c, "SELECT COALESCE(SUM(bytes), 0)::bigint FROM usage", &[]).await?;
        r.map(|r| r.try_get::<_, i64>(0))
            .transpose()?
            .map_or(Ok(0), uint)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn claim_nonce(&self, claim: NonceClaim) -> Result<bool, StorageError> {
        let sql = nonce_claim_sql(&claim)?;
        let c = self.client().await?;
        match c.simple_query(&sql).await {
            Ok(messages) => nonce_claimed(&messages),
            Err(e) => {
                // Never hand the connection back inside a failed
                // transaction.
                roll_back(c).await;
                Err(e.into())
            }
        }
    }

    async fn expire_nonces(&self, now: u64) -> Result<u64, StorageError> {
        let c = self.client().await?;
        exec(
            &c,
            "DELETE FROM relay_nonces WHERE expires < $1",
            &[&int(now)?],
        )
        .await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        let c = self.client().await?;
        c.simple_query("SELECT 1").await?;
        Ok(())
    }
}
