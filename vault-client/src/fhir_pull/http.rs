//! HTTP to one FHIR server: same-origin links only, no redirects, bounded
//! retries honouring `Retry-After`, capped bodies, and the credentials
//! attached only to requests for the server's own origin.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::error::{server_text, FhirPullError};
use super::smart;
use super::{Credentials, PullProgress};
use crate::retry::{parse_retry_after, RetryPolicy};

/// Largest error body read for its diagnostics.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// How the requests authenticate.
enum Auth {
    None,
    Bearer(SecretString),
    Smart {
        client: smart::SmartClient,
        token: Option<(SecretString, Instant)>,
    },
}

/// One FHIR server: its base URL and origin, the HTTP client, the
/// credentials and the retry policy.
pub(crate) struct FhirHttp {
    client: reqwest::Client,
    base: Url,
    auth: Auth,
    retry: RetryPolicy,
}

/// Whether `url`'s host is this machine (plain http is acceptable there).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An origin for messages: scheme, host and port, nothing else.
pub(crate) fn origin_text(url: &Url) -> String {
    server_text(&url.origin().ascii_serialization())
}

impl FhirHttp {
    /// A client for the server at `base` (already checked by
    /// `FhirSource::new`). Credentials over plain http to another machine
    /// are refused.
    pub(crate) fn new(
        base: Url,
        credentials: Credentials,
        retry: RetryPolicy,
    ) -> Result<Self, FhirPullError> {
        if !matches!(credentials, Credentials::None)
            && base.scheme() != "https"
            && !is_loopback(&base)
        {
            return Err(FhirPullError::Config(format!(
                "refusing to send credentials over plain http to {}; use an https:// base URL",
                origin_text(&base)
            )));
        }
        let client = reqwest::Client::builder()
            // A redirect could carry the token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("vault/", env!("CARGO_PKG_VERSION"), " (FHIR pull)"))
            .build()
            .map_err(|e| FhirPullError::Config(format!("cannot build the HTTP client: {e}")))?;
        let auth = match credentials {
            Credentials::None => Auth::None,
            Credentials::Bearer(t) => Auth::Bearer(t),
            Credentials::Smart(c) => Auth::Smart {
                client: c,
                token: None,
            },
        };
        Ok(Self {
            client,
            base,
            auth,
            retry,
        })
    }

    /// The base URL (ending in `/`).
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// `link` (absolute, or relative to the base) if it is on the base
    /// URL's origin; [`FhirPullError::ForeignLink`] otherwise.
    pub(crate) fn same_origin(&self, what: &'static str, link: &str) -> Result<Url, FhirPullError> {
        let url = self
            .base
            .join(link.trim())
            .map_err(|_| FhirPullError::malformed(format!("the {what} link"), "not a URL"))?;
        if url.origin() != self.base.origin() {
            return Err(FhirPullError::ForeignLink {
                what,
                found: origin_text(&url),
            });
        }
        Ok(url)
    }

    /// A description of a request for messages: method and path, no query.
    fn describe(method: &Method, url: &Url) -> String {
        server_text(&format!("{method} {}", url.path()))
    }

    /// The bearer token to send, fetching a SMART access token first when
    /// there is none or it is about to expire.
    async fn bearer(&mut self) -> Result<Option<SecretString>, FhirPullError> {
        match &mut self.auth {
            Auth::None => Ok(None),
            Auth::Bearer(t) => Ok(Some(t.clone())),
            Auth::Smart { client, token } => {
                let fresh = token
                    .as_ref()
                    .is_some_and(|(_, until)| Instant::now() + Duration::from_secs(30) < *until);
                if !fresh {
                    *token = Some(smart::access_token(&self.client, &self.base, client).await?);
                }
                Ok(token.as_ref().map(|(t, _)| t.clone()))
            }
        }
    }

    /// Sends `method url` with `Accept: accept` and `extra` headers,
    /// retrying connection failures and 408, 429, 500, 502, 503 and 504
    /// with backoff (a `Retry-After` of up to the policy's cap is
    /// honoured). Returns the answer if it is 2xx; a SMART token refused
    /// with 401 is fetched again once.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        url: &Url,
        accept: &str,
        extra: &[(&str, &str)],
        progress: &mut dyn FnMut(PullProgress),
    ) -> Result<Response, FhirPullError> {
        let what = Self::describe(&method, url);
        let attempts = self.retry.attempts();
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.bearer().await?;
            let mut req: RequestBuilder = self
                .client
                .request(method.clone(), url.clone())
                .header(ACCEPT, accept);
            for (k, v) in extra {
                req = req.header(*k, *v);
            }
            if let Some(t) = &token {
                req = req.header(AUTHORIZATION, format!("Bearer {}", t.expose_secret()));
            }
            let (status, retry_after) = match req.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    if status == StatusCode::UNAUTHORIZED
                        && !refreshed
                        && matches!(self.auth, Auth::Smart { .. })
                    {
                        // The access token may have expired early: one new token.
                        refreshed = true;
                        if let Auth::Smart { token, .. } = &mut self.auth {
                            *token = None;
                        }
                        continue;
                    }
                    if !is_transient(status) || attempt >= attempts {
                        return Err(refusal(status, &what, resp).await);
                    }
                    (Some(status.as_u16()), retry_after)
                }
                Err(e) => {
                    if !(e.is_connect() || e.is_timeout() || e.is_request()) || attempt >= attempts
                    {
                        return Err(self.transport(&e));
                    }
                    (None, None)
                }
            };
            let delay = self.retry.delay(attempt, retry_after);
            progress(PullProgress::Retrying {
                what: what.clone(),
                status,
                delay,
            });
            crate::platform::sleep(delay).await;
        }
    }

    /// Sends one `DELETE url` (a finished export's files), ignoring the
    /// answer and any failure: the server cleans up on its own otherwise.
    pub(crate) async fn discard(&mut self, url: &Url) {
        let Ok(token) = self.bearer().await else {
            return;
        };
        let mut req = self.client.delete(url.clone());
        if let Some(t) = &token {
            req = req.header(AUTHORIZATION, format!("Bearer {}", t.expose_secret()));
        }
        let _ = req.send().await;
    }

    /// A transport failure, described without the URL's query or headers.
    pub(crate) fn transport(&self, e: &reqwest::Error) -> FhirPullError {
        transport_error(&self.base, e)
    }
}

/// A transport failure, described without the URL's query or headers.
pub(crate) fn transport_error(base: &Url, e: &reqwest::Error) -> FhirPullError {
    // reqwest's kind, then its causes (its own text would name the URL).
    let mut reason = kind_of(e).to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    FhirPullError::Transport {
        host: server_text(base.host_str().unwrap_or("?")),
        reason: server_text(&reason),
    }
}

fn kind_of(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the answer's body broke off"
    } else {
        "request failed"
    }
}

/// Statuses worth retrying from a FHIR server.
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The error for a refused request, with the OperationOutcome's text if
/// the body has one.
async fn refusal(status: StatusCode, what: &str, resp: Response) -> FhirPullError {
    let body = read_limited(resp, MAX_ERROR_BODY, what).await.ok();
    let detail = body.as_deref().and_then(outcome_text);
    if matches!(status.as_u16(), 401 | 403) {
        return FhirPullError::Unauthorized(format!(
            "{} to {what}{}",
            status.as_u16(),
            detail.map(|d| format!(": {d}")).unwrap_or_default()
        ));
    }
    if status.is_redirection() {
        return FhirPullError::Status {
            status: status.as_u16(),
            what: what.to_owned(),
            detail: Some("a redirect, which is not followed (check the base URL)".into()),
        };
    }
    FhirPullError::Status {
        status: status.as_u16(),
        what: what.to_owned(),
        detail,
    }
}

/// The diagnostics of an OperationOutcome body, cleaned.
pub(crate) fn outcome_text(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if v.get("resourceType")?.as_str()? != "OperationOutcome" {
        return None;
    }
    let text: Vec<String> = v
        .get("issue")?
        .as_array()?
        .iter()
        .filter_map(|i| {
            i.get("diagnostics")
                .or_else(|| i.get("details").and_then(|d| d.get("text")))
                .and_then(|d| d.as_str())
                .map(str::to_owned)
        })
        .take(3)
        .collect();
    (!text.is_empty()).then(|| server_text(&text.join("; ")))
}

/// Reads a whole body of at most `limit` bytes.
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, FhirPullError> {
    let too_large = || FhirPullError::TooLarge {
        what: what.to_owned(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() as u64 + chunk.len() as u64 > limit {
                    return Err(too_large());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(FhirPullError::Truncated {
                    what: what.to_owned(),
                    reason: kind_of(&e).to_owned(),
                })
            }
        }
    }
}

/// A header's value as cleaned text.
pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(server_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_need_https_or_loopback() {
        let url = |s: &str| Url::parse(s).unwrap();
        let bearer = || Credentials::Bearer(SecretString::from("t".to_owned()));
        assert!(FhirHttp::new(url("http://fhir.example/"), bearer(), RetryPolicy::none()).is_err());
        assert!(FhirHttp::new(url("http://127.0.0.1:9/"), bearer(), RetryPolicy::none()).is_ok());
        assert!(FhirHttp::new(url("https://fhir.example/"), bearer(), RetryPolicy::none()).is_ok());
        assert!(FhirHttp::new(
            url("http://fhir.example/"),
            Credentials::None,
            RetryPolicy::none()
        )
        .is_ok());
    }

    #[test]
    fn links_must_stay_on_the_origin() {
        let http = FhirHttp::new(
            Url::parse("https://fhir.example/r4/").unwrap(),
            Credentials::None,
            RetryPolicy::none(),
        )
        .unwrap();
        assert!(http
            .same_origin("next", "https://fhir.example/r4/p2")
            .is_ok());
        assert!(http.same_origin("next", "Patient?page=2").is_ok());
        for bad in [
            "https://evil.example/r4/p2",
            "http://fhir.example/r4/p2",
            "https://fhir.example:444/r4",
            "//evil.example/x",
        ] {
            assert!(
                matches!(
                    http.same_origin("next", bad),
                    Err(FhirPullError::ForeignLink { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn outcome_diagnostics_are_read() {
        let body = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","diagnostics":"Patient/x not found"}]}"#;
        assert_eq!(outcome_text(body).as_deref(), Some("Patient/x not found"));
        assert_eq!(outcome_text(b"<html>"), None);
    }
}
