//! Which storage a relay runs on, and opening it.
//!
//! By default metadata lives in SQLite and blobs in files, both under the
//! data directory. `--database postgres://…` moves metadata to PostgreSQL
//! (`storage::postgres`, feature `postgres`); `--blobs s3://bucket…` moves
//! blobs to S3-compatible object storage (`storage::s3`, feature `s3`),
//! which keeps the state of its multipart uploads in the same PostgreSQL
//! database. Everything here parses and checks before anything is opened,
//! and every error says what to fix; no password or secret key is ever
//! printed (their `Debug` and `Display` are redacted).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{BlobStore, MetaStore, StorageError};

/// A PostgreSQL connection URL (`postgres://user:password@host:port/db`).
/// Its `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Checks the form (`postgres://` or `postgresql://`); the full syntax
    /// is checked when the database is opened.
    pub fn parse(text: &str) -> Result<Self, BackendError> {
        let text = text.trim();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(BackendError::DatabaseUrl {
                url: redact_url(text),
                reason: "it must start with postgres:// (only PostgreSQL is supported; leave --database unset for the embedded SQLite database)".into(),
            });
        }
        Ok(Self(text.to_owned()))
    }

    /// The URL with its password, for connecting only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", redact_url(&self.0))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// A value given on the command line or in the environment that may hold
/// a secret (a database URL with a password): `Debug` never shows it, and
/// it is checked in [`crate::config::Config::resolve`], whose errors are
/// redacted too (clap's own errors would echo the value).
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretArg(pub String);

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretArg({})", redact_url(&self.0))
    }
}

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Replaces the password of a URL's user information, and the value of
/// any `password=` query parameter, with `***`.
pub fn redact_url(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (url, None),
    };
    let mut out = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => before_query.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Where blobs go in S3-compatible object storage:
/// `s3://bucket[/prefix]?endpoint=https://host:port&region=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket (it must exist).
    pub bucket: String,
    /// A key prefix inside the bucket (no leading or trailing `/`), so
    /// that several relays or tests can share one bucket.
    pub prefix: String,
    /// The store's endpoint, `http(s)://host[:port]`; `None` for AWS.
    pub endpoint: Option<String>,
    /// The region the requests are signed for.
    pub region: String,
}

impl S3Location {
    /// Parses `s3://bucket[/prefix][?endpoint=…&region=…]`.
    pub fn parse(text: &str) -> Result<Self, BackendError> {
        let bad = |reason: &str| BackendError::BlobsUrl {
            url: text.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = text.trim().strip_prefix("s3://").ok_or_else(|| {
            bad("it must start with s3:// (leave --blobs unset for files in the data directory)")
        })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            return Err(bad("the bucket name must be 3 to 63 lowercase letters, digits, dots or hyphens (s3://my-bucket)"));
        }
        let prefix = prefix.trim_matches('/').to_owned();
        if prefix.split('/').any(|s| s == "." || s == "..")
            || prefix.contains("//")
            || prefix.bytes().any(|b| b.is_ascii_control())
        {
            return Err(bad(
                "the key prefix after the bucket must be plain path segments",
            ));
        }
        let mut endpoint = None;
        let mut region = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or_else(|| bad("a query value has a bad %-escape"))?;
            match k {
                "endpoint" => {
                    let host = v
                        .strip_prefix("https://")
                        .or_else(|| v.strip_prefix("http://"))
                        .unwrap_or("");
                    let host = host.trim_end_matches('/');
                    if host.is_empty() || host.contains(['/', '?', '#', '@']) {
                        return Err(bad(
                            "endpoint must be http(s)://host[:port], for example endpoint=http://127.0.0.1:8333",
                        ));
                    }
                    endpoint = Some(v.trim_end_matches('/').to_owned());
                }
                "region" if !v.is_empty() => region = Some(v),
                "region" => return Err(bad("region must not be empty")),
                other => {
                    return Err(bad(&format!(
                        "unknown parameter `{other}` (known: endpoint, region; credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or --blobs-credentials, never from the URL)"
                    )))
                }
            }
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix,
            endpoint,
            region: region.unwrap_or_else(|| "us-east-1".into()),
        })
    }

    /// Where the store is, for messages: the endpoint, or AWS.
    pub fn endpoint_name(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 ({})", self.region))
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}", self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        write!(f, " at {}", self.endpoint_name())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Credentials for the object store. `Debug` shows the key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// The access key id (not secret).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            access_key_id,
            secret_access_key: _,
            session_token,
        } = self;
        f.debug_struct("S3Credentials")
            .field("access_key_id", access_key_id)
            .field("secret_access_key", &"***")
            .field("session_token", &session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl S3Credentials {
    /// From the standard variables `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and (optional) `AWS_SESSION_TOKEN`, if the
    /// first two are set.
    pub fn from_env() -> Result<Option<Self>, BackendError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Ok(Some(Self {
                access_key_id: id.trim().to_owned(),
                secret_access_key: secret.trim().to_owned(),
                session_token: get("AWS_SESSION_TOKEN").map(|t| t.trim().to_owned()),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(BackendError::Credentials(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both".into(),
            )),
            (None, Some(_)) => Err(BackendError::Credentials(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: set both".into(),
            )),
        }
    }

    /// From a file in the AWS shared-credentials format: the `[default]`
    /// section (or keys before any section) with `aws_access_key_id`,
    /// `aws_secret_access_key` and optionally `aws_session_token`.
    pub fn from_file(path: &Path) -> Result<Self, BackendError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            BackendError::Credentials(format!(
                "cannot read the credentials file {} ({e}); check --blobs-credentials",
                path.display()
            ))
        })?;
        let mut section = String::from("default");
        let (mut id, mut secret, mut token) = (None, None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_owned();
                continue;
            }
            if section != "default" {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(BackendError::Credentials(format!(
                    "the credentials file {} has a line that is not `key = value` (in [default])",
                    path.display()
                )));
            };
            let v = Some(v.trim().to_owned()).filter(|v| !v.is_empty());
            match k.trim() {
                "aws_access_key_id" => id = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
        let missing = |key: &str| {
            BackendError::Credentials(format!(
                "the credentials file {} has no {key} in its [default] section",
                path.display()
            ))
        };
        Ok(Self {
            access_key_id: id.ok_or_else(|| missing("aws_access_key_id"))?,
            secret_access_key: secret.ok_or_else(|| missing("aws_secret_access_key"))?,
            session_token: token,
        })
    }
}

/// Where metadata is kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MetaBackend {
    /// SQLite in the data directory (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database.
    Postgres(DatabaseUrl),
}

/// Where blobs are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BlobBackend {
    /// Files in the data directory (the default).
    #[default]
    Files,
    /// An S3-compatible bucket.
    S3 {
        /// Bucket, prefix, endpoint and region.
        location: S3Location,
        /// Credentials.
        credentials: S3Credentials,
    },
}

/// The storage of a relay: both backends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StorageConfig {
    /// Metadata.
    pub meta: MetaBackend,
    /// Blobs.
    pub blobs: BlobBackend,
    /// Most connections to PostgreSQL.
    pub database_pool: usize,
}

/// The default most connections to PostgreSQL.
pub const DEFAULT_DATABASE_POOL: usize = 16;

impl StorageConfig {
    /// Checks the combination: S3 blobs keep the state of their multipart
    /// uploads in PostgreSQL, so they need `--database`.
    pub fn check(&self) -> Result<(), BackendError> {
        if matches!(self.blobs, BlobBackend::S3 { .. }) && self.meta == MetaBackend::Sqlite {
            return Err(BackendError::Combination);
        }
        Ok(())
    }

    /// Whether this is the embedded storage (SQLite and files).
    pub fn is_embedded(&self) -> bool {
        self.meta == MetaBackend::Sqlite && self.blobs == BlobBackend::Files
    }
}

/// Why the configured storage cannot be used. Each message names the
/// setting to fix; none carries a password or a secret key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// `--database` is not a PostgreSQL URL.
    #[error("--database (RELAY_DATABASE) `{url}` is not usable: {reason}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")]
    DatabaseUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// PostgreSQL could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL at {url}: {reason}; check --database (RELAY_DATABASE): host, port, database name, user and password, and that the server is running")]
    DatabaseConnect {
        /// The URL, redacted.
        url: String,
        /// The server's or the network's answer.
        reason: String,
    },
    /// Applying the schema failed.
    #[error("preparing the PostgreSQL database {url} failed: {reason}")]
    DatabaseSchema {
        /// The URL, redacted.
        url: String,
        /// What failed (nothing of the failed migration is kept).
        reason: String,
    },
    /// `--blobs` is not an S3 URL.
    #[error("--blobs (RELAY_BLOBS) `{url}` is not usable: {reason}; expected s3://BUCKET[/PREFIX]?endpoint=https://HOST[:PORT]&region=REGION")]
    BlobsUrl {
        /// The URL (it holds no secret).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The object store's credentials are missing or unreadable.
    #[error("object store credentials: {0}")]
    Credentials(String),
    /// The bucket does not exist.
    #[error("the bucket `{bucket}` does not exist at {endpoint}: create it, or fix the bucket name in --blobs (RELAY_BLOBS)")]
    BucketMissing {
        /// The bucket.
        bucket: String,
        /// The store.
        endpoint: String,
    },
    /// The store refused the credentials.
    #[error("the object store at {endpoint} refused the credentials for bucket `{bucket}` ({reason}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --blobs-credentials), and that the key may read and write the bucket")]
    Denied {
        /// The bucket.
        bucket: String,
        /// The store.
        endpoint: String,
        /// The store's answer.
        reason: String,
    },
    /// The store did not answer, or answered with an error.
    #[error("cannot use the object store at {endpoint}: {reason}; check the endpoint and region in --blobs (RELAY_BLOBS) and that the store is running")]
    Unreachable {
        /// The store.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// The session that holds S3 upload leases could not be opened.
    #[error("cannot open the PostgreSQL session that holds this relay's S3 upload leases: {reason}; check that the database (--database, RELAY_DATABASE) is running and accepts one more connection per relay")]
    LeaseSession {
        /// What happened.
        reason: String,
    },
    /// S3 blobs without PostgreSQL.
    #[error("--blobs s3://… needs --database postgres://… too: the state of multipart uploads lives in PostgreSQL")]
    Combination,
    /// The binary lacks the feature.
    #[error("{setting} needs a relay-server built with the `{feature}` feature: cargo build --release -p relay-server --features {feature}")]
    NotBuilt {
        /// The setting.
        setting: &'static str,
        /// The cargo feature.
        feature: &'static str,
    },
    /// The embedded storage failed to open.
    #[error("cannot open the data directory {dir}: {source}")]
    Embedded {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        source: StorageError,
    },
}

/// Opened storage, and how to close it.
pub struct Opened {
    /// Metadata.
    pub meta: Arc<dyn MetaStore>,
    /// Blobs.
    pub blobs: Arc<dyn BlobStore>,
    /// Closes the metadata store (waits for the SQLite commit thread;
    /// closes the PostgreSQL pool).
    pub close: Box<dyn Fn() + Send + Sync>,
    /// What was opened, for the log (no secrets).
    pub description: String,
}

/// Opens the configured storage: connects, applies migrations, checks the
/// bucket. Nothing is written to a remote store if any check fails.
pub async fn open(
    storage: &StorageConfig,
    data_dir: &Path,
    max_batch: usize,
    observer: super::sqlite::BatchObserver,
) -> Result<Opened, BackendError> {
    storage.check()?;
    let embedded = |source| BackendError::Embedded {
        dir: data_dir.to_path_buf(),
        source,
    };
    match (&storage.meta, &storage.blobs) {
        (MetaBackend::Sqlite, BlobBackend::Files) => {
            let meta = Arc::new(
                super::sqlite::SqliteMeta::open(data_dir, max_batch, observer).map_err(embedded)?,
            );
            let blobs = Arc::new(super::files::FileBlobs::open(data_dir).map_err(embedded)?);
            let closing = meta.clone();
            Ok(Opened {
                meta,
                blobs,
                close: Box::new(move || closing.close()),
                description: format!("SQLite and files in {}", data_dir.display()),
            })
        }
        (MetaBackend::Postgres(url), blobs) => {
            open_postgres(url, blobs, storage.database_pool, data_dir).await
        }
        (MetaBackend::Sqlite, BlobBackend::S3 { .. }) => Err(BackendError::Combination),
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(
    url: &DatabaseUrl,
    blobs: &BlobBackend,
    pool: usize,
    data_dir: &Path,
) -> Result<Opened, BackendError> {
    // Every check first, then the migrations: a bad setting writes nothing.
    let meta = Arc::new(super::postgres::PgMeta::connect_unmigrated(url, pool).await?);
    let (blobs, where_blobs): (Arc<dyn BlobStore>, String) = match blobs {
        BlobBackend::Files => (
            Arc::new(super::files::FileBlobs::open(data_dir).map_err(|source| {
                BackendError::Embedded {
                    dir: data_dir.to_path_buf(),
                    source,
                }
            })?),
            format!("files in {}", data_dir.display()),
        ),
        #[cfg(feature = "s3")]
        BlobBackend::S3 {
            location,
            credentials,
        } => (
            Arc::new(
                super::s3::S3Blobs::connect(location, credentials, meta.pool().clone()).await?,
            ),
            location.to_string(),
        ),
        #[cfg(not(feature = "s3"))]
        BlobBackend::S3 { .. } => {
            return Err(BackendError::NotBuilt {
                setting: "--blobs s3://…",
                feature: "s3",
            })
        }
    };
    meta.migrate().await?;
    let closing = meta.clone();
    Ok(Opened {
        description: format!("PostgreSQL at {url}, blobs in {where_blobs}"),
        meta,
        blobs,
        close: Box::new(move || closing.close()),
    })
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(
    _url: &DatabaseUrl,
    _blobs: &BlobBackend,
    _pool: usize,
    _data_dir: &Path,
) -> Result<Opened, BackendError> {
    Err(BackendError::NotBuilt {
        setting: "--database postgres://…",
        feature: "postgres",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://relay:s3cret@db.example:5432/vault?sslmode=disable"),
            "postgres://relay:***@db.example:5432/vault?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://relay@db/vault?password=s3cret&x=1"),
            "postgres://relay@db/vault?password=***&x=1"
        );
        assert_eq!(redact_url("postgres://db/vault"), "postgres://db/vault");
        let url = DatabaseUrl::parse("postgres://relay:s3cret@db/vault").unwrap();
        assert!(!format!("{url:?} {url}").contains("s3cret"));
        let arg = SecretArg("postgres://u:s3cret@h/d".into());
        assert!(!format!("{arg:?}").contains("s3cret"));
        let err = DatabaseUrl::parse("mysql://u:s3cret@h/d")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("postgres://") && !err.contains("s3cret"),
            "{err}"
        );
        let creds = S3Credentials {
            access_key_id: "AKIA".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
        };
        let shown = format!("{creds:?}");
        assert!(
            shown.contains("AKIA") && !shown.contains("secret\""),
            "{shown}"
        );
        assert!(!shown.contains("very-secret") && !shown.contains("token-secret"));
    }

    #[test]
    fn s3_urls_parse() {
        let l = S3Location::parse(
            "s3://vault-blobs/relay/one?endpoint=http://127.0.0.1:8333&region=eu-west-1",
        )
        .unwrap();
        assert_eq!(l.bucket, "vault-blobs");
        assert_eq!(l.prefix, "relay/one");
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(l.region, "eu-west-1");
        let l = S3Location::parse("s3://bucket").unwrap();
        assert_eq!(
            (l.prefix.as_str(), l.endpoint, l.region.as_str()),
            ("", None, "us-east-1")
        );
        let l = S3Location::parse("s3://bucket?endpoint=https%3A%2F%2Fs3.example").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("https://s3.example"));
        for (bad, says) in [
            ("http://bucket", "s3://"),
            ("s3://B", "bucket name"),
            ("s3://bucket?endpoint=ftp://x", "endpoint"),
            ("s3://bucket?secret=x", "unknown parameter `secret`"),
            ("s3://bucket/../x", "prefix"),
            ("s3://bucket?region=", "region"),
        ] {
            let err = S3Location::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_files_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[other]\naws_access_key_id = NO\n[default]\naws_access_key_id = AKIA\naws_secret_access_key = s3cret\n",
        )
        .unwrap();
        let c = S3Credentials::from_file(&path).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKIA", "s3cret")
        );
        std::fs::write(&path, "[default]\naws_access_key_id = AKIA\n").unwrap();
        let err = S3Credentials::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("aws_secret_access_key"), "{err}");
        let err = S3Credentials::from_file(&dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--blobs-credentials"), "{err}");
    }

    #[test]
    fn s3_blobs_need_postgres() {
        let storage = StorageConfig {
            meta: MetaBackend::Sqlite,
            blobs: BlobBackend::S3 {
                location: S3Location::parse("s3://bucket").unwrap(),
                credentials: S3Credentials {
                    access_key_id: "a".into(),
                    secret_access_key: "b".into(),
                    session_token: None,
                },
            },
            database_pool: DEFAULT_DATABASE_POOL,
        };
        let err = storage.check().unwrap_err().to_string();
        assert!(err.contains("--database"), "{err}");
    }
}
