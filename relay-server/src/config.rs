//! Configuration: command-line flags, environment variables and an optional
//! TOML file, in that order of precedence, over safe defaults. A newcomer
//! needs none of it: `relay-server` alone serves on 127.0.0.1:8787 from
//! `./relay-data`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use vault_core::request::RelayOrigin;

use crate::storage::backends::{
    BackendError, BlobBackend, DatabaseUrl, MetaBackend, S3Credentials, S3Location, SecretArg,
    StorageConfig, DEFAULT_DATABASE_POOL,
};

/// The vault blind relay: stores and routes vault ciphertext it cannot read.
///
/// With no arguments it creates `./relay-data` (an embedded SQLite database
/// and a blob directory) and listens on 127.0.0.1:8787. For several relays
/// over shared storage, `--database postgres://…` keeps metadata in
/// PostgreSQL and `--blobs s3://…` keeps blobs in S3-compatible object
/// storage (builds with the `postgres` and `s3` features). Every option can also
/// be set by an environment variable (shown below) or in a TOML file given
/// with `--config` (keys are the long option names with `_` for `-`, for
/// example `max_chunk = "64MiB"`). Flags beat the environment, which beats
/// the file.
#[derive(Debug, Parser)]
#[command(name = "relay-server", version, about, long_about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options (for `serve`, the default).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay (the default).
    Serve,
    /// Write an online backup to one file (a tar of a consistent database
    /// snapshot and every blob it names). Safe while the relay runs. A
    /// backup holds ciphertext only. With --database postgres://… the
    /// snapshot is taken by `pg_dump` (from RELAY_PG_BIN or PATH) and the
    /// blobs are read from the configured blob store.
    Backup {
        /// The backup file to write (refuses to overwrite).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Restore a backup into an empty or absent data directory (or, with
    /// --database, into a database with no tables, with no relay running on
    /// it), checking every blob's hash and every vault log before anything
    /// is left for a relay to serve.
    Restore {
        /// The backup file to read.
        #[arg(long, short)]
        input: PathBuf,
    },
}

/// Options of the server (all optional; see [`Config`] for the defaults).
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long, env = "RELAY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8787].
    #[arg(long, env = "RELAY_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Data directory, created if absent [default: ./relay-data].
    #[arg(long, env = "RELAY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Keep metadata in this PostgreSQL database instead of SQLite in the
    /// data directory: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
    /// Prefer the environment to the command line, where `ps` shows it (a
    /// password may also come from PGPASSWORD); it is never logged.
    /// Migrations are applied at start. Plain TCP or a Unix socket (no TLS
    /// yet). Needs the `postgres` feature [default: SQLite in the data
    /// directory].
    #[arg(long, env = "RELAY_DATABASE", hide_env_values = true, global = true)]
    pub database: Option<SecretArg>,
    /// Most connections to PostgreSQL [default: 16].
    #[arg(long, env = "RELAY_DATABASE_POOL", global = true)]
    pub database_pool: Option<usize>,
    /// Keep blobs in S3-compatible object storage instead of files in the
    /// data directory:
    /// `s3://BUCKET[/PREFIX]?endpoint=https://HOST[:PORT]&region=REGION`
    /// (no endpoint: AWS; the bucket must exist). Credentials come from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)
    /// or from --blobs-credentials, never from the URL. Needs --database
    /// (uploads in progress are tracked in PostgreSQL) and the `s3`
    /// feature [default: files in the data directory].
    #[arg(long, env = "RELAY_BLOBS", global = true)]
    pub blobs: Option<String>,
    /// A file with the object store's credentials in the AWS
    /// shared-credentials format: a `[default]` section with
    /// `aws_access_key_id` and `aws_secret_access_key` [default: the
    /// AWS_* variables].
    #[arg(long, env = "RELAY_BLOBS_CREDENTIALS", global = true)]
    pub blobs_credentials: Option<PathBuf>,
    /// Directory of the patient web app to serve at `/` [default: none].
    #[arg(long, env = "RELAY_WEB_DIR", global = true)]
    pub web_dir: Option<PathBuf>,
    /// An origin (`https://app.example.org`) whose pages may call this
    /// relay's API: for a web app hosted elsewhere than this relay.
    /// Repeatable; comma-separated in the environment [default: none, only
    /// the app this relay serves].
    #[arg(long, env = "RELAY_ALLOW_ORIGIN", value_delimiter = ',', global = true)]
    pub allow_origin: Vec<String>,
    /// A URL clients use to reach this relay (`https://relay.example.org`):
    /// requests are signed for the origin of the URL a client is configured
    /// with, and this relay refuses requests signed for any other, so a
    /// request cannot be replayed from one relay to another. Repeatable;
    /// comma-separated in the environment [default: when listening on a
    /// loopback address, `http://127.0.0.1:PORT`, `http://localhost:PORT`
    /// and `http://[::1]:PORT`; required when listening on any other
    /// address].
    #[arg(long, env = "RELAY_PUBLIC_URL", value_delimiter = ',', global = true)]
    pub public_url: Vec<String>,
    /// Largest JSON request body [default: 16MiB].
    #[arg(long, env = "RELAY_MAX_JSON", value_parser = parse_size, global = true)]
    pub max_json: Option<u64>,
    /// Largest blob upload chunk (one request) [default: 64MiB].
    #[arg(long, env = "RELAY_MAX_CHUNK", value_parser = parse_size, global = true)]
    pub max_chunk: Option<u64>,
    /// Largest blob [default: 16GiB].
    #[arg(long, env = "RELAY_MAX_BLOB", value_parser = parse_size, global = true)]
    pub max_blob: Option<u64>,
    /// Storage quota per account (signing identity) [default: 20GiB].
    #[arg(long, env = "RELAY_QUOTA", value_parser = parse_size, global = true)]
    pub quota: Option<u64>,
    /// Sustained requests per second per key [default: 1000]. One request
    /// per record: a clinician opening a 1,000-record collection makes
    /// about 1,000 requests.
    #[arg(long, env = "RELAY_RATE", global = true)]
    pub rate: Option<u32>,
    /// Burst of requests per key above the rate [default: 4000].
    #[arg(long, env = "RELAY_BURST", global = true)]
    pub burst: Option<u32>,
    /// Request timeout in seconds (until the response starts) [default: 60].
    #[arg(long, env = "RELAY_TIMEOUT", global = true)]
    pub timeout: Option<u64>,
    /// Requests handled at once; more wait [default: 1024].
    #[arg(long, env = "RELAY_CONCURRENCY", global = true)]
    pub concurrency: Option<usize>,
    /// How far in the past a signed request, and how far either way an
    /// entry, may be dated, seconds [default: 300].
    #[arg(long, env = "RELAY_CLOCK_SKEW", global = true)]
    pub clock_skew: Option<u64>,
    /// How far in the future a signed request may be dated, seconds; at
    /// most `clock-skew` [default: 30].
    #[arg(long, env = "RELAY_FUTURE_SKEW", global = true)]
    pub future_skew: Option<u64>,
    /// Serve `/metrics` (Prometheus) and `/healthz` on this separate
    /// address, for the operator's monitoring only; keep it private (for
    /// example 127.0.0.1:9090) [default: none, metrics are not served].
    #[arg(long, env = "RELAY_ADMIN_LISTEN", global = true)]
    pub admin_listen: Option<SocketAddr>,
    /// A file of invitation tokens, one per line (blank lines and lines
    /// starting with `#` ignored, each at least 16 characters). When set,
    /// publishing a new identity needs one of them in the `x-vault-invite`
    /// header [default: none, anyone may publish].
    #[arg(long, env = "RELAY_INVITE_TOKENS_FILE", global = true)]
    pub invite_tokens_file: Option<PathBuf>,
    /// New identities plus new vaults one source address may create per
    /// hour (IPv6 counted per /64); 0 turns the limit off [default: 60].
    #[arg(long, env = "RELAY_NEW_PER_HOUR", global = true)]
    pub new_per_hour: Option<u32>,
    /// Pairing codes one source address may open per 10 minutes, the life
    /// of a code (IPv6 counted per /64), whatever number of identities it
    /// made: so no one source fills the relay's 10,000 live codes; 0
    /// turns the limit off [default: 30].
    #[arg(long, env = "RELAY_PAIRINGS_PER_SOURCE", global = true)]
    pub pairings_per_source: Option<u32>,
    /// Apply the per-source limits (`new-per-hour`, `pairings-per-source`)
    /// to loopback addresses too (by default they are exempt: local tools
    /// and tests; set this when a reverse proxy on the same host forwards
    /// the public's requests) [default: false].
    #[arg(long, env = "RELAY_NEW_PER_HOUR_LOOPBACK", global = true)]
    pub new_per_hour_loopback: Option<bool>,
    /// The address of a load balancer that opens each connection with a
    /// PROXY protocol v2 header naming the client (haproxy's
    /// `send-proxy-v2`), so per-source limits count clients, not the
    /// balancer. Connections from it without a valid header are closed;
    /// connections from other addresses are served as usual, keyed by
    /// their own address. Repeatable; comma-separated in the environment
    /// [default: none, no header is read].
    #[arg(
        long,
        env = "RELAY_PROXY_PROTOCOL_FROM",
        value_delimiter = ',',
        global = true
    )]
    pub proxy_protocol_from: Vec<IpAddr>,
    /// Most entries in one vault's log, genesis included [default: 100000].
    #[arg(long, env = "RELAY_MAX_VAULT_ENTRIES", global = true)]
    pub max_vault_entries: Option<u64>,
    /// Vaults a person's inbox lists per owner they have not accepted (a
    /// stranger; see `PUT /v1/inbox/accepted`); strangers' vaults beyond
    /// it are counted, not listed [default: 16].
    #[arg(long, env = "RELAY_INBOX_STRANGERS_PER_OWNER", global = true)]
    pub inbox_strangers_per_owner: Option<usize>,
    /// Most vault states kept in memory (idle ones beyond it are dropped,
    /// cheapest to reload first) [default: 10000].
    #[arg(long, env = "RELAY_VAULT_CACHE", global = true)]
    pub vault_cache: Option<usize>,
    /// Most writes committed in one fsync'd transaction [default: 1024].
    #[arg(long, env = "RELAY_MAX_BATCH", global = true)]
    pub max_batch: Option<usize>,
    /// Log filter, as RUST_LOG (e.g. `info`, `relay_server=debug`) [default: info].
    #[arg(long, env = "RELAY_LOG", global = true)]
    pub log: Option<String>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "RELAY_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The TOML file: the same keys as the long options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database: Option<SecretArg>,
    database_pool: Option<usize>,
    blobs: Option<String>,
    blobs_credentials: Option<PathBuf>,
    web_dir: Option<PathBuf>,
    allow_origin: Option<Vec<String>>,
    public_url: Option<Vec<String>>,
    max_json: Option<SizeValue>,
    max_chunk: Option<SizeValue>,
    max_blob: Option<SizeValue>,
    quota: Option<SizeValue>,
    rate: Option<u32>,
    burst: Option<u32>,
    timeout: Option<u64>,
    concurrency: Option<usize>,
    clock_skew: Option<u64>,
    future_skew: Option<u64>,
    admin_listen: Option<SocketAddr>,
    invite_tokens_file: Option<PathBuf>,
    new_per_hour: Option<u32>,
    pairings_per_source: Option<u32>,
    new_per_hour_loopback: Option<bool>,
    proxy_protocol_from: Option<Vec<IpAddr>>,
    max_vault_entries: Option<u64>,
    inbox_strangers_per_owner: Option<usize>,
    vault_cache: Option<usize>,
    max_batch: Option<usize>,
    log: Option<String>,
    log_format: Option<LogFormat>,
}

/// A size in a TOML file: a number of bytes or a string such as `"64MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn bytes(&self) -> Result<u64, ConfigError> {
        match self {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => parse_size(t).map_err(ConfigError::Invalid),
        }
    }
}

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this program.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The storage settings are not usable.
    #[error(transparent)]
    Storage(#[from] BackendError),
}

/// Checks CORS origins: each exactly `http(s)://host[:port]` (no path, no
/// wildcard: a relay trusts named web apps only).
fn check_origins(origins: Vec<String>) -> Result<Vec<String>, ConfigError> {
    origins
        .into_iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .map(|o| {
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .unwrap_or("");
            let valid = !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
                && axum::http::HeaderValue::from_str(&o).is_ok();
            if valid {
                Ok(o)
            } else {
                Err(ConfigError::Invalid(format!(
                    "allow-origin `{o}` is not an origin like https://app.example.org (scheme, host and port only)"
                )))
            }
        })
        .collect()
}

/// Parses `--public-url` values into normalised origins.
fn check_public_urls(urls: Vec<String>) -> Result<Vec<RelayOrigin>, ConfigError> {
    let mut out: Vec<RelayOrigin> = Vec::new();
    for url in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
        let origin = RelayOrigin::parse(url).map_err(|e| {
            ConfigError::Invalid(format!("public-url `{url}` is not a relay URL: {e}"))
        })?;
        if !out.contains(&origin) {
            out.push(origin);
        }
    }
    Ok(out)
}

/// Parses a byte size: `1048576`, `512KiB`, `64MiB`, `2GiB`, `1TiB` (also
/// `KB`/`MB`/`GB` as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 1048576, 64MiB, 2GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit (use KiB, MiB, GiB or TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// The effective configuration of a relay.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory (database and blobs).
    pub data_dir: PathBuf,
    /// Where metadata and blobs are kept (SQLite and files in
    /// [`Config::data_dir`] by default).
    pub storage: StorageConfig,
    /// Static web app directory served at `/`, if any.
    pub web_dir: Option<PathBuf>,
    /// Origins allowed to call the API from a browser (CORS), each
    /// `scheme://host[:port]`.
    pub allow_origin: Vec<String>,
    /// The origins clients reach this relay at (`--public-url`), normalised;
    /// empty means the loopback origins of [`Config::listen`]'s port.
    pub public_url: Vec<RelayOrigin>,
    /// Largest JSON body, bytes.
    pub max_json: u64,
    /// Largest upload chunk, bytes.
    pub max_chunk: u64,
    /// Largest blob, bytes.
    pub max_blob: u64,
    /// Storage quota per account, bytes.
    pub quota: u64,
    /// Requests per second per key.
    pub rate: u32,
    /// Burst per key.
    pub burst: u32,
    /// Request timeout.
    pub timeout: Duration,
    /// Concurrent requests.
    pub concurrency: usize,
    /// How far in the past a request (and either way an entry) may be
    /// dated, seconds.
    pub clock_skew: u64,
    /// How far in the future a request may be dated, seconds (at most
    /// `clock_skew`).
    pub future_skew: u64,
    /// Where `/metrics` and `/healthz` are served for the operator, if
    /// anywhere (never on the public listener).
    pub admin_listen: Option<SocketAddr>,
    /// The invitation tokens file; when set, new identities need a token.
    pub invite_tokens_file: Option<PathBuf>,
    /// The invitation tokens (read from `invite_tokens_file`); empty: new
    /// identities need none.
    pub invite_tokens: crate::admission::InviteTokens,
    /// New identities plus vaults per source address per hour (0: no limit).
    pub new_per_hour: u32,
    /// Pairing opens per source address per 10 minutes (0: no limit).
    pub pairings_per_source: u32,
    /// Whether loopback sources count against `new_per_hour` and
    /// `pairings_per_source`.
    pub new_per_hour_loopback: bool,
    /// Load balancers whose connections begin with a PROXY protocol v2
    /// header naming the client (see [`crate::proxy`]); empty: none.
    pub proxy_protocol_from: Vec<IpAddr>,
    /// Most entries in one vault's log.
    pub max_vault_entries: u64,
    /// Vaults an inbox lists per stranger owner.
    pub inbox_strangers_per_owner: usize,
    /// Most vault states kept in memory.
    pub vault_cache: usize,
    /// Most writes per group commit.
    pub max_batch: usize,
    /// Log filter.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            data_dir: PathBuf::from("relay-data"),
            storage: StorageConfig {
                database_pool: DEFAULT_DATABASE_POOL,
                ..StorageConfig::default()
            },
            web_dir: None,
            allow_origin: Vec::new(),
            public_url: Vec::new(),
            max_json: 16 << 20,
            max_chunk: 64 << 20,
            max_blob: 16 << 30,
            quota: 20 << 30,
            rate: 1000,
            burst: 4000,
            timeout: Duration::from_secs(60),
            concurrency: 1024,
            clock_skew: 300,
            future_skew: 30,
            admin_listen: None,
            invite_tokens_file: None,
            invite_tokens: crate::admission::InviteTokens::default(),
            new_per_hour: 60,
            pairings_per_source: 30,
            new_per_hour_loopback: false,
            proxy_protocol_from: Vec::new(),
            max_vault_entries: 100_000,
            inbox_strangers_per_owner: 16,
            vault_cache: 10_000,
            max_batch: 1024,
            log: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// How far strangers' shares are listed in an inbox.
    pub fn inbox_limits(&self) -> crate::domain::inbox::StrangerLimits {
        crate::domain::inbox::StrangerLimits {
            vaults_per_owner: self.inbox_strangers_per_owner,
            ..Default::default()
        }
    }

    /// A configuration for tests: defaults with the given data directory.
    pub fn for_data_dir(dir: &Path) -> Self {
        Self {
            data_dir: dir.to_path_buf(),
            ..Self::default()
        }
    }

    /// Merges flags and environment (already in `args`) over the file over
    /// the defaults, and checks the result.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let d = Config::default();
        let size = |flag: Option<u64>, file: &Option<SizeValue>, default: u64| match (flag, file) {
            (Some(v), _) => Ok(v),
            (None, Some(v)) => v.bytes(),
            (None, None) => Ok(default),
        };
        let storage = resolve_storage(args, &file)?;
        let c = Config {
            storage,
            listen: args.listen.or(file.listen).unwrap_or(d.listen),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(d.data_dir),
            web_dir: args.web_dir.clone().or(file.web_dir),
            allow_origin: check_origins(if args.allow_origin.is_empty() {
                file.allow_origin.unwrap_or_default()
            } else {
                args.allow_origin.clone()
            })?,
            public_url: check_public_urls(if args.public_url.is_empty() {
                file.public_url.unwrap_or_default()
            } else {
                args.public_url.clone()
            })?,
            max_json: size(args.max_json, &file.max_json, d.max_json)?,
            max_chunk: size(args.max_chunk, &file.max_chunk, d.max_chunk)?,
            max_blob: size(args.max_blob, &file.max_blob, d.max_blob)?,
            quota: size(args.quota, &file.quota, d.quota)?,
            rate: args.rate.or(file.rate).unwrap_or(d.rate),
            burst: args.burst.or(file.burst).unwrap_or(d.burst),
            timeout: args
                .timeout
                .or(file.timeout)
                .map(Duration::from_secs)
                .unwrap_or(d.timeout),
            concurrency: args
                .concurrency
                .or(file.concurrency)
                .unwrap_or(d.concurrency),
            clock_skew: args.clock_skew.or(file.clock_skew).unwrap_or(d.clock_skew),
            future_skew: args
                .future_skew
                .or(file.future_skew)
                .unwrap_or(d.future_skew),
            admin_listen: args.admin_listen.or(file.admin_listen),
            invite_tokens: match args
                .invite_tokens_file
                .as_ref()
                .or(file.invite_tokens_file.as_ref())
            {
                Some(path) => crate::admission::InviteTokens::load(path)?,
                None => crate::admission::InviteTokens::default(),
            },
            invite_tokens_file: args.invite_tokens_file.clone().or(file.invite_tokens_file),
            new_per_hour: args
                .new_per_hour
                .or(file.new_per_hour)
                .unwrap_or(d.new_per_hour),
            pairings_per_source: args
                .pairings_per_source
                .or(file.pairings_per_source)
                .unwrap_or(d.pairings_per_source),
            new_per_hour_loopback: args
                .new_per_hour_loopback
                .or(file.new_per_hour_loopback)
                .unwrap_or(d.new_per_hour_loopback),
            proxy_protocol_from: if args.proxy_protocol_from.is_empty() {
                file.proxy_protocol_from.unwrap_or_default()
            } else {
                args.proxy_protocol_from.clone()
            },
            max_vault_entries: args
                .max_vault_entries
                .or(file.max_vault_entries)
                .unwrap_or(d.max_vault_entries),
            inbox_strangers_per_owner: args
                .inbox_strangers_per_owner
                .or(file.inbox_strangers_per_owner)
                .unwrap_or(d.inbox_strangers_per_owner),
            vault_cache: args
                .vault_cache
                .or(file.vault_cache)
                .unwrap_or(d.vault_cache),
            max_batch: args.max_batch.or(file.max_batch).unwrap_or(d.max_batch),
            log: args.log.clone().or(file.log).unwrap_or(d.log),
            log_format: args.log_format.or(file.log_format).unwrap_or(d.log_format),
        };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        self.storage.check()?;
        if self.storage.database_pool < 2 {
            return bad("database_pool must be at least 2");
        }
        if self.rate == 0 || self.burst == 0 {
            return bad("rate and burst must be at least 1");
        }
        if self.concurrency == 0 || self.max_batch == 0 {
            return bad("concurrency and max_batch must be at least 1");
        }
        if self.max_chunk == 0 || self.max_json < 1024 {
            return bad("max_chunk must be positive and max_json at least 1KiB");
        }
        if self.max_json < MIN_MAX_JSON {
            return Err(ConfigError::Invalid(format!(
                "max_json must be at least {MIN_MAX_JSON} bytes: the largest rotation (a revocation) must fit in one append, or an owner could be unable to revoke"
            )));
        }
        if self.timeout.is_zero() {
            return bad("timeout must be at least 1 second");
        }
        if self.future_skew > self.clock_skew {
            return bad("future_skew must not be larger than clock_skew");
        }
        if self.max_vault_entries < 2 || self.vault_cache == 0 {
            return bad("max_vault_entries must be at least 2 and vault_cache at least 1");
        }
        if self.public_url.is_empty() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "listening on {}, which is not a loopback address, needs --public-url (RELAY_PUBLIC_URL, or public_url in the file) set to the URL clients use to reach this relay, for example --public-url https://relay.example.org: requests are signed for that URL, and the relay cannot learn it safely from the request",
                self.listen
            )));
        }
        Ok(())
    }

    /// The origins this relay accepts in signed requests: the
    /// `--public-url` origins, or, when none is set, the three loopback
    /// origins of the port in [`Config::listen`] (set it to the bound
    /// address when listening on port 0). Empty when neither applies (a
    /// non-loopback address without public URLs, which [`Config::resolve`]
    /// refuses): every signed request is then refused.
    pub fn relay_origins(&self) -> Vec<RelayOrigin> {
        if !self.public_url.is_empty() {
            self.public_url.clone()
        } else if self.listen.ip().is_loopback() {
            RelayOrigin::loopback(self.listen.port()).to_vec()
        } else {
            Vec::new()
        }
    }
}

/// The storage settings: flags and environment over the file.
fn resolve_storage(args: &ServeArgs, file: &FileConfig) -> Result<StorageConfig, ConfigError> {
    let database = args
        .database
        .clone()
        .or_else(|| file.database.clone())
        .filter(|d| !d.0.trim().is_empty());
    let meta = match database {
        Some(url) => MetaBackend::Postgres(DatabaseUrl::parse(&url.0)?),
        None => MetaBackend::Sqlite,
    };
    let blobs = args
        .blobs
        .clone()
        .or_else(|| file.blobs.clone())
        .filter(|b| !b.trim().is_empty());
    let blobs = match blobs {
        None => BlobBackend::Files,
        Some(url) => {
            let location = S3Location::parse(&url)?;
            let credentials = match args
                .blobs_credentials
                .as_ref()
                .or(file.blobs_credentials.as_ref())
            {
                Some(path) => S3Credentials::from_file(path)?,
                None => S3Credentials::from_env()?.ok_or_else(|| {
                    BackendError::Credentials(
                        "--blobs s3://… needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --blobs-credentials FILE".into(),
                    )
                })?,
            };
            BlobBackend::S3 {
                location,
                credentials,
            }
        }
    };
    Ok(StorageConfig {
        meta,
        blobs,
        database_pool: args
            .database_pool
            .or(file.database_pool)
            .unwrap_or(DEFAULT_DATABASE_POOL),
    })
}

/// The smallest `max_json` that still carries the largest rotation the
/// collection limits allow (`vault_core::MAX_ROTATION_LEN`, base64 inside
/// a JSON append, with room for the entry's header and signature), so an
/// owner can always revoke (`docs/format.md` §8.2).
pub const MIN_MAX_JSON: u64 = ((vault_core::MAX_ROTATION_LEN as u64 + 4096) / 3 + 1) * 4 + 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let ok = check_origins(vec![
            "https://app.example.org/".into(),
            "http://127.0.0.1:5173".into(),
            " ".into(),
        ]);
        assert_eq!(
            ok.ok(),
            Some(vec![
                "https://app.example.org".to_owned(),
                "http://127.0.0.1:5173".to_owned()
            ])
        );
        for bad in [
            "*",
            "app.example.org",
            "https://a.org/path",
            "ftp://a.org",
            "https://",
        ] {
            assert!(check_origins(vec![bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("3kb"), Ok(3000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "rate = 7\nmax_chunk = \"1MiB\"\nlisten = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            rate: Some(9),
            ..ServeArgs::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.rate, 9);
        assert_eq!(c.max_chunk, 1 << 20);
        assert_eq!(c.listen.port(), 9);
        assert_eq!(c.quota, Config::default().quota);

        std::fs::write(&path, "rate = 7\nmystery = 1\n").unwrap();
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("mystery"), "{err}");
        let args = ServeArgs {
            rate: Some(0),
            ..ServeArgs::default()
        };
        assert!(Config::resolve(&args).is_err());
    }

    #[test]
    fn hardening_options_resolve_and_are_checked() {
        let d = Config::default();
        assert_eq!(
            (
                d.future_skew,
                d.admin_listen,
                d.new_per_hour,
                d.pairings_per_source,
                d.new_per_hour_loopback
            ),
            (30, None, 60, 30, false)
        );
        assert!(!d.invite_tokens.required());
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            "# ops
abcdefghijklmnopqrstuvwxyz
",
        )
        .unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            format!(
                "future_skew = 10\nadmin_listen = \"127.0.0.1:9090\"\nnew_per_hour = 5\npairings_per_source = 4\nmax_vault_entries = 50\nvault_cache = 7\ninvite_tokens_file = {:?}\n",
                tokens.display().to_string()
            ),
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.future_skew, 10);
        assert_eq!(c.admin_listen.map(|a| a.port()), Some(9090));
        assert_eq!(
            (
                c.new_per_hour,
                c.pairings_per_source,
                c.max_vault_entries,
                c.vault_cache
            ),
            (5, 4, 50, 7)
        );
        assert!(c.invite_tokens.required());
        assert!(c.invite_tokens.accepts("abcdefghijklmnopqrstuvwxyz"));
        assert!(!c.invite_tokens.accepts("abcdefghijklmnopqrstuvwxy"));
        // Requests may not be dated further ahead than behind.
        let args = ServeArgs {
            clock_skew: Some(20),
            future_skew: Some(21),
            ..ServeArgs::default()
        };
        assert!(Config::resolve(&args).is_err());
        let args = ServeArgs {
            invite_tokens_file: Some(dir.path().join("absent")),
            ..ServeArgs::default()
        };
        assert!(Config::resolve(&args).is_err());
    }

    #[test]
    fn storage_settings_resolve_and_never_show_secrets() {
        use crate::storage::backends::{BlobBackend, MetaBackend};
        let d = Config::resolve(&ServeArgs::default()).unwrap();
        assert!(d.storage.is_embedded());
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = very-secret-key\n",
        )
        .unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            format!(
                "database = \"postgres://relay:db-password@db.internal/vault\"\ndatabase_pool = 8\nblobs = \"s3://vault-blobs/one?endpoint=http://127.0.0.1:8333\"\nblobs_credentials = {:?}\n",
                creds.display().to_string()
            ),
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert!(matches!(c.storage.meta, MetaBackend::Postgres(_)));
        assert_eq!(c.storage.database_pool, 8);
        match &c.storage.blobs {
            BlobBackend::S3 {
                location,
                credentials,
            } => {
                assert_eq!(
                    (location.bucket.as_str(), location.prefix.as_str()),
                    ("vault-blobs", "one")
                );
                assert_eq!(credentials.secret_access_key, "very-secret-key");
            }
            other => panic!("{other:?}"),
        }
        let shown = format!("{c:?} {args:?}");
        assert!(!shown.contains("db-password"), "{shown}");
        assert!(!shown.contains("very-secret-key"), "{shown}");
        // A flag beats the file, and a bad one names the setting without
        // echoing its password.
        let args = ServeArgs {
            config: Some(path),
            database: Some(SecretArg("mysql://root:db-password@h/d".into())),
            ..ServeArgs::default()
        };
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(
            err.contains("--database") && !err.contains("db-password"),
            "{err}"
        );
        // S3 blobs without PostgreSQL.
        let args = ServeArgs {
            blobs: Some("s3://vault-blobs".into()),
            blobs_credentials: Some(creds),
            ..ServeArgs::default()
        };
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("--database"), "{err}");
    }

    #[test]
    fn max_json_always_carries_the_largest_rotation() {
        // The default holds the largest rotation in base64 with room to spare.
        assert!(Config::default().max_json >= MIN_MAX_JSON);
        const { assert!(MIN_MAX_JSON < 16 << 20) };
        let mut c = Config {
            max_json: MIN_MAX_JSON - 1,
            ..Config::default()
        };
        assert!(c.check().is_err());
        c.max_json = MIN_MAX_JSON;
        assert!(c.check().is_ok());
    }

    #[test]
    fn relay_origins_are_public_urls_or_loopback() {
        // The default: loopback, the loopback origins of the port.
        let c = Config::resolve(&ServeArgs::default()).unwrap();
        let names: Vec<String> = c.relay_origins().iter().map(|o| o.to_string()).collect();
        assert_eq!(
            names,
            [
                "http://127.0.0.1:8787",
                "http://localhost:8787",
                "http://[::1]:8787"
            ]
        );
        // Any other address needs --public-url, and says so.
        let args = ServeArgs {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            ..ServeArgs::default()
        };
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("--public-url"), "{err}");
        // Public URLs are normalised and replace the loopback origins.
        let args = ServeArgs {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            public_url: vec![
                "HTTPS://Relay.Example:443/".into(),
                "https://relay.example".into(),
                "http://10.0.0.5:8787".into(),
            ],
            ..ServeArgs::default()
        };
        let c = Config::resolve(&args).unwrap();
        let names: Vec<String> = c.relay_origins().iter().map(|o| o.to_string()).collect();
        assert_eq!(names, ["https://relay.example", "http://10.0.0.5:8787"]);
        for bad in ["relay.example", "https://relay.example/v1", "ftp://x"] {
            let args = ServeArgs {
                public_url: vec![bad.into()],
                ..ServeArgs::default()
            };
            let err = Config::resolve(&args).unwrap_err().to_string();
            assert!(err.contains("public-url"), "{bad}: {err}");
        }
        // And from the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:8787\"\npublic_url = [\"https://relay.example.org\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.relay_origins()[0].as_str(), "https://relay.example.org");
    }

    #[test]
    fn proxy_protocol_addresses_come_from_the_file_or_the_flags() {
        assert!(Config::default().proxy_protocol_from.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "proxy_protocol_from = [\"127.0.0.9\", \"::1\"]\n").unwrap();
        let mut args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(
            c.proxy_protocol_from,
            vec![
                "127.0.0.9".parse::<IpAddr>().unwrap(),
                "::1".parse::<IpAddr>().unwrap()
            ]
        );
        args.proxy_protocol_from = vec!["10.0.0.1".parse().unwrap()];
        let c = Config::resolve(&args).unwrap();
        assert_eq!(
            c.proxy_protocol_from,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        std::fs::write(&path, "proxy_protocol_from = [\"not an address\"]\n").unwrap();
        args.proxy_protocol_from.clear();
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("proxy_protocol_from"), "{err}");
    }
}
