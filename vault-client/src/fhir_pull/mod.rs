//! Pulling a patient's record from a FHIR R4 server (native targets only).
//!
//! Two halves, kept apart so that each can be reused alone:
//!
//! - **Fetching** ([`FhirPull`]): a source that yields complete, parsed
//!   resources in batches and, once exhausted, the [`Cursor`] for the next
//!   incremental pull. Either `Patient/{id}/$everything`, following every
//!   `next` link, or the Bulk Data flow (`Patient/$export` kicked off with
//!   `Prefer: respond-async`, the status URL polled honouring
//!   `Retry-After`, each NDJSON file streamed line by line). It knows
//!   nothing of vaults: a gateway that deposits into many vaults uses it
//!   with its own filing half.
//! - **Filing** ([`filing`]): what the vault already holds ([`filing::Holdings`],
//!   by resource type and id, with `meta.versionId`/`meta.lastUpdated`),
//!   each batch sorted into new records, new versions of existing records,
//!   or nothing, and sealed and appended as `vault import` does; the cursor
//!   kept per source as an encrypted record in the vault
//!   (`docs/decisions/0047-fhir-pull.md`).
//!
//! Every byte from the FHIR server is untrusted. Guarantees of the
//! fetching half:
//! - Only the base URL's origin is ever contacted (links to another
//!   scheme, host or port are refused, redirects are not followed), so the
//!   credentials go nowhere else; credentials over plain http are refused
//!   except on loopback.
//! - Pages, manifests and resources are size-capped ([`Limits`]); `next`
//!   links that repeat a page or exceed [`Limits::max_pages`] stop the
//!   pull; a bulk export still running after [`PullOptions::bulk_wait`]
//!   stops it.
//! - Connection failures and 408, 429, 500, 502, 503, 504 are retried a
//!   bounded number of times with backoff, honouring `Retry-After` up to
//!   the policy's cap.
//! - A batch holds only resources parsed completely: a page is checked
//!   whole before any of its resources is yielded, an NDJSON line whole
//!   before its resource is. A download cut short (a broken connection, or
//!   fewer lines than the manifest announced) is an error, and no cursor is
//!   produced, so running the same pull again resumes it (what was filed
//!   is recognised and skipped).
//! - The bearer token, the SMART key and access tokens are secrets
//!   (`secrecy`): never in `Debug`, errors or logs.

mod error;
pub mod filing;
mod http;
mod smart;
mod source;

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

pub use error::{server_text, FhirPullError};
pub use smart::SmartClient;
pub use source::FhirPull;

use crate::RetryPolicy;

/// A source: a FHIR R4 server's base URL and one patient's id on it.
///
/// Guarantees: the base URL is http or https, has no user name, password,
/// query or fragment, and ends with `/`; the patient id is a valid FHIR id
/// (1 to 64 of `A-Z a-z 0-9 - .`), so it is safe in a URL path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FhirSource {
    base: Url,
    patient: String,
}

impl FhirSource {
    /// Checks and normalises a base URL and patient id.
    ///
    /// # Errors
    ///
    /// [`FhirPullError::Config`] saying what to fix.
    pub fn new(base: &str, patient: &str) -> Result<Self, FhirPullError> {
        let mut url = Url::parse(base.trim()).map_err(|e| {
            FhirPullError::Config(format!(
                "{:?} is not a URL ({e}); give the FHIR server's base URL, such as https://fhir.example.org/r4",
                server_text(base)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(FhirPullError::Config(
                "the FHIR base URL must be an http:// or https:// URL with a host".into(),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FhirPullError::Config(
                "the FHIR base URL must not carry a user name or password; give a token with --token-file or --token-env".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(FhirPullError::Config(
                "the FHIR base URL must not have a query (?…) or fragment (#…)".into(),
            ));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        if !vault_fhir::is_fhir_id(patient) {
            return Err(FhirPullError::Config(format!(
                "{:?} is not a FHIR id (1 to 64 letters, digits, '-' or '.'); give the patient's id on that server",
                server_text(patient)
            )));
        }
        Ok(Self {
            base: url,
            patient: patient.to_owned(),
        })
    }

    /// The base URL, ending with `/`.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The base URL as people write it (without the trailing `/`).
    pub fn base_text(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// The patient's id on the server.
    pub fn patient(&self) -> &str {
        &self.patient
    }
}

/// How a pull authenticates to the FHIR server.
///
/// Guarantees: `Debug` names the kind only; the token and key are kept in
/// `secrecy` types and zeroized when dropped.
pub enum Credentials {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(SecretString),
    /// An access token from SMART Backend Services (client credentials
    /// with a signed JWT assertion), fetched before the first request and
    /// again when it expires.
    Smart(SmartClient),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("Credentials::None"),
            Credentials::Bearer(_) => f.write_str("Credentials::Bearer([redacted])"),
            Credentials::Smart(c) => write!(f, "Credentials::Smart({c:?})"),
        }
    }
}

/// Which FHIR interaction fetches the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `Patient/{id}/$everything`, every `next` page.
    Everything,
    /// Bulk Data: `Patient/$export` (or `Group/{id}/$export` with
    /// [`PullOptions::bulk_group`]), the status URL polled, each NDJSON
    /// file streamed; only the patient's compartment is kept.
    Bulk,
}

/// Caps on what the server may send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest single resource (an NDJSON line, or one resource of a page),
    /// in bytes.
    pub max_resource_bytes: u64,
    /// Largest `$everything` page, in bytes.
    pub max_page_bytes: u64,
    /// Most `$everything` pages.
    pub max_pages: u32,
    /// Most resources in one pull.
    pub max_resources: u64,
    /// Most files in a bulk export manifest.
    pub max_files: usize,
}

impl Default for Limits {
    /// 16 MiB per resource, 256 MiB per page, 10,000 pages, a million
    /// resources, 1,000 files.
    fn default() -> Self {
        Self {
            max_resource_bytes: 16 * 1024 * 1024,
            max_page_bytes: 256 * 1024 * 1024,
            max_pages: 10_000,
            max_resources: 1_000_000,
            max_files: 1_000,
        }
    }
}

/// How to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// `$everything` or Bulk Data.
    pub mode: Mode,
    /// Ask only for what changed since this cursor (`_since`).
    pub since: Option<Cursor>,
    /// Size and count caps.
    pub limits: Limits,
    /// Retries of failed requests.
    pub retry: RetryPolicy,
    /// How long to wait for a bulk export to complete.
    pub bulk_wait: Duration,
    /// Export this Group (a valid FHIR id) instead of every patient: a
    /// server's group of the patient's records exports less of other
    /// patients' data.
    pub bulk_group: Option<String>,
}

impl PullOptions {
    /// Defaults for `mode`: no cursor, default limits, six attempts per
    /// request, and half an hour for a bulk export.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            since: None,
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            bulk_wait: Duration::from_secs(30 * 60),
            bulk_group: None,
        }
    }
}

/// Where the next incremental pull starts: a FHIR instant the server gave
/// (a bulk export's `transactionTime`, or the newest `meta.lastUpdated`
/// of what `$everything` returned), sent back as `_since`.
///
/// Guarantees: at most 40 characters of digits, `-`, `:`, `.`, `+`, `T`
/// and `Z` that parse as a date ([`Cursor::parse`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cursor(String);

impl Cursor {
    /// A cursor from a FHIR instant, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 40
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b"-:.+TZ".contains(&b))
            && vault_fhir::parse_date(s).is_some();
        ok.then(|| Self(s.to_owned()))
    }

    /// The instant as the server wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Cursor {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Cursor::parse(&s).ok_or_else(|| "not a FHIR instant".to_owned())
    }
}

impl From<Cursor> for String {
    fn from(c: Cursor) -> String {
        c.0
    }
}

/// What a pull is doing, for a progress display. Server text in it is
/// cleaned ([`server_text`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PullProgress {
    /// A `$everything` page was read.
    Page {
        /// 1 for the first page.
        number: u32,
        /// Resources on it.
        resources: usize,
    },
    /// A bulk export was kicked off.
    ExportStarted,
    /// The bulk export is still running.
    ExportWaiting {
        /// The server's `X-Progress`, if any.
        progress: Option<String>,
        /// How long until the next poll.
        next_poll: Duration,
    },
    /// A bulk export file is being read.
    File {
        /// The resource type it holds (as the manifest says).
        resource_type: String,
        /// 1-based position among the files.
        index: usize,
        /// How many files.
        total: usize,
        /// Lines the manifest announces, if it does.
        count: Option<u64>,
    },
    /// A request failed and is retried after `delay`.
    Retrying {
        /// Method and path.
        what: String,
        /// The status, or `None` for a connection failure.
        status: Option<u16>,
        /// The wait before the next attempt.
        delay: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_checked_and_normalised() {
        let s = FhirSource::new("https://fhir.example/r4", "p-1").unwrap();
        assert_eq!(s.base().as_str(), "https://fhir.example/r4/");
        assert_eq!(s.base_text(), "https://fhir.example/r4");
        for (base, patient) in [
            ("ftp://fhir.example/", "p"),
            ("https://user:pw@fhir.example/", "p"),
            ("https://fhir.example/?a=b", "p"),
            ("https://fhir.example/", "../x"),
            ("https://fhir.example/", ""),
            ("not a url", "p"),
        ] {
            assert!(FhirSource::new(base, patient).is_err(), "{base} {patient}");
        }
    }

    #[test]
    fn cursors_are_fhir_instants() {
        assert!(Cursor::parse("2026-12-04T19:00:00.123+00:00").is_some());
        assert!(Cursor::parse("2026-12-04T19:00:00Z").is_some());
        for bad in ["", "yesterday", "2026-12-04T19:00:00Z&_count=1"] {
            assert!(Cursor::parse(bad).is_none(), "{bad}");
        }
        let debug = format!(
            "{:?}",
            Credentials::Bearer(SecretString::from("hunter2".to_owned()))
        );
        assert!(!debug.contains("hunter2"));
    }
}
