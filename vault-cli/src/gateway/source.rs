//! Where the gateway's resources come from: the trust's FHIR server.

use std::path::Path;

use secrecy::SecretString;

use crate::error::{CliError, Result};

/// What changed for one patient since a cursor.
#[derive(Debug, Default)]
pub struct Changes {
    /// The resources new or changed since the cursor (possibly several
    /// versions of one resource; the gateway keeps the newest).
    pub resources: Vec<vault_fhir::Resource>,
    /// The cursor the next fetch starts from, if the server gave one.
    pub next: Option<String>,
}

/// A source of FHIR resources per patient.
pub(crate) trait Source {
    /// The resources of `patient` new or changed since `since` (all of them
    /// for `None`), and the cursor to ask from next time. Nothing
    /// half-parsed is returned: a malformed response is an error.
    async fn changes(&self, patient: &str, since: Option<&str>) -> Result<Changes>;
}

/// The largest bearer-token file read.
const MAX_TOKEN: u64 = 64 * 1024;

/// Reads a bearer token from a file (surrounding whitespace removed),
/// keeping it out of logs and errors.
pub fn read_token(path: &Path) -> Result<SecretString> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::file(path, e))?;
    if meta.len() > MAX_TOKEN {
        return Err(CliError::Usage(format!(
            "{} is too large to be a bearer token",
            path.display()
        )));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?,
    );
    let token = text.trim();
    if token.is_empty() || token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(CliError::Usage(format!(
            "{} does not hold a bearer token (one line without spaces)",
            path.display()
        )));
    }
    Ok(SecretString::from(token.to_owned()))
}

/// The most pages one fetch follows (a `next` chain longer than this is
/// refused as a loop).
const MAX_PAGES: usize = 10_000;
/// The largest page read, bytes.
const MAX_PAGE: usize = 32 * 1024 * 1024;
/// How many times one page is retried after 429 or 5xx.
const RETRIES: u32 = 4;
/// The longest `Retry-After` honoured, seconds.
const MAX_RETRY_AFTER: u64 = 120;

/// A FHIR R4 server, read with `Patient/ID/$everything` (and `_since` from
/// the patient's cursor), following every `next` link on the same origin.
pub struct FhirServer {
    base: reqwest::Url,
    token: Option<SecretString>,
    http: reqwest::Client,
}

impl std::fmt::Debug for FhirServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirServer")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

fn fetch_error(what: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("the FHIR server: {what}"))
}

impl FhirServer {
    /// A server at `base` (its FHIR base URL), with an optional bearer
    /// token.
    pub fn new(base: &str, token: Option<SecretString>) -> Result<Self> {
        let base = reqwest::Url::parse(&format!("{}/", base.trim_end_matches('/')))
            .map_err(|e| CliError::Usage(format!("fhir = {base:?} is not a URL: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(fetch_error)?;
        Ok(Self { base, token, http })
    }

    /// One page, retried on 429 and 5xx as the server asks (bounded).
    async fn page(&self, url: &reqwest::Url) -> Result<Vec<u8>> {
        use secrecy::ExposeSecret;
        let mut attempt = 0;
        loop {
            let mut req = self
                .http
                .get(url.clone())
                .header(reqwest::header::ACCEPT, "application/fhir+json");
            if let Some(t) = &self.token {
                req = req.bearer_auth(t.expose_secret());
            }
            let resp = req.send().await.map_err(|e| {
                fetch_error(format!(
                    "{} is unreachable ({e})",
                    self.base.origin().ascii_serialization()
                ))
            })?;
            let status = resp.status();
            if status.is_success() {
                if resp.content_length().is_some_and(|l| l > MAX_PAGE as u64) {
                    return Err(fetch_error("a page is larger than 32 MiB"));
                }
                let mut body = Vec::new();
                let mut resp = resp;
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| fetch_error(format!("a page was cut short ({e})")))?
                {
                    if body.len() + chunk.len() > MAX_PAGE {
                        return Err(fetch_error("a page is larger than 32 MiB"));
                    }
                    body.extend_from_slice(&chunk);
                }
                return Ok(body);
            }
            let retryable =
                status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if !retryable || attempt >= RETRIES {
                return Err(fetch_error(format!(
                    "{} answered {status}{}",
                    url.path(),
                    if status == reqwest::StatusCode::UNAUTHORIZED
                        || status == reqwest::StatusCode::FORBIDDEN
                    {
                        " (check token_file)"
                    } else {
                        ""
                    }
                )));
            }
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1u64 << attempt)
                .min(MAX_RETRY_AFTER);
            attempt += 1;
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
        }
    }
}

impl Source for FhirServer {
    async fn changes(&self, patient: &str, since: Option<&str>) -> Result<Changes> {
        let mut url = self
            .base
            .join(&format!("Patient/{patient}/$everything"))
            .map_err(fetch_error)?;
        if let Some(s) = since {
            url.query_pairs_mut().append_pair("_since", s);
        }
        let origin = self.base.origin();
        let mut seen = std::collections::BTreeSet::new();
        let mut changes = Changes::default();
        let mut first = true;
        loop {
            if !seen.insert(url.to_string()) || seen.len() > MAX_PAGES {
                return Err(fetch_error("its `next` links loop"));
            }
            let body = self.page(&url).await?;
            let bundle: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| fetch_error(format!("a page is not JSON ({e})")))?;
            if first {
                // The server's time of the search: what changes after it
                // comes with the next `_since`.
                changes.next = bundle
                    .pointer("/meta/lastUpdated")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned);
                first = false;
            }
            let resources = vault_fhir::split_bundle(&body)
                .map_err(|e| fetch_error(format!("a page is not a FHIR Bundle ({e})")))?;
            changes.resources.extend(resources);
            let next = bundle
                .get("link")
                .and_then(serde_json::Value::as_array)
                .and_then(|links| {
                    links.iter().find(|l| {
                        l.get("relation").and_then(serde_json::Value::as_str) == Some("next")
                    })
                })
                .and_then(|l| l.get("url"))
                .and_then(serde_json::Value::as_str);
            let Some(next) = next else {
                return Ok(changes);
            };
            let next = self
                .base
                .join(next)
                .map_err(|e| fetch_error(format!("a `next` link is not a URL ({e})")))?;
            if next.origin() != origin {
                return Err(fetch_error(format!(
                    "a `next` link points to another host ({}); refused",
                    next.origin().ascii_serialization()
                )));
            }
            url = next;
        }
    }
}
