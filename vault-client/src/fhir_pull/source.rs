//! The fetching half: a pull that yields complete resources in batches,
//! then a cursor.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use reqwest::Method;
use serde_json::Value;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;
use url::Url;

use super::error::{server_text, FhirPullError};
use super::http::{header_text, read_limited, FhirHttp};
use super::{Credentials, Cursor, FhirSource, Limits, Mode, PullOptions, PullProgress};

/// Resources per batch from a bulk export file.
const BULK_BATCH: usize = 256;

/// Largest bulk manifest, in bytes.
const MAX_MANIFEST: u64 = 16 * 1024 * 1024;

/// The default poll interval when the server gives no `Retry-After`.
const DEFAULT_POLL: Duration = Duration::from_secs(2);

/// The longest wait between polls, whatever `Retry-After` says.
const MAX_POLL: Duration = Duration::from_secs(60);

const FHIR_JSON: &str = "application/fhir+json";

type Lines =
    FramedRead<StreamReader<BoxStream<'static, std::io::Result<Bytes>>, Bytes>, LinesCodec>;

/// One file of a bulk export's manifest.
struct OutputFile {
    resource_type: String,
    url: Url,
    count: Option<u64>,
}

/// An NDJSON file being read.
struct OpenFile {
    name: String,
    lines: Lines,
    expected: Option<u64>,
    read: u64,
}

/// Where the pull is.
enum State {
    Everything {
        next: Option<Url>,
        visited: HashSet<String>,
        pages: u32,
    },
    Bulk {
        status_url: Url,
        files: VecDeque<OutputFile>,
        total: usize,
        current: Option<OpenFile>,
        transaction_time: Option<Cursor>,
    },
    Done,
}

/// A pull in progress: call [`FhirPull::next_batch`] until it returns
/// `None`, then [`FhirPull::cursor`].
///
/// Guarantees: every resource yielded was parsed completely
/// ([`vault_fhir::Resource`]: a valid type, a FHIR id or none, compact JSON
/// of at most [`Limits::max_resource_bytes`]); `OperationOutcome`s are
/// not yielded; with [`Mode::Bulk`] only the patient and resources that
/// reference `Patient/{id}` are yielded. The cursor exists only once the
/// source is exhausted without error.
pub struct FhirPull {
    http: FhirHttp,
    source: FhirSource,
    limits: Limits,
    state: State,
    yielded: u64,
    newest: Option<(i64, String)>,
    exhausted: bool,
}

impl std::fmt::Debug for FhirPull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirPull")
            .field("source", &self.source)
            .field("yielded", &self.yielded)
            .field("exhausted", &self.exhausted)
            .finish_non_exhaustive()
    }
}

impl FhirPull {
    /// Starts a pull of `source`: for `$everything` nothing is fetched yet;
    /// for Bulk Data the export is kicked off and polled until its manifest
    /// is ready (reporting progress), at most [`PullOptions::bulk_wait`].
    ///
    /// # Errors
    ///
    /// Any [`FhirPullError`]; the kick-off or manifest failing files
    /// nothing.
    pub async fn start(
        source: FhirSource,
        credentials: Credentials,
        options: PullOptions,
        progress: &mut dyn FnMut(PullProgress),
    ) -> Result<Self, FhirPullError> {
        if let Some(g) = &options.bulk_group {
            if !vault_fhir::is_fhir_id(g) {
                return Err(FhirPullError::Config(format!(
                    "{:?} is not a FHIR id (1 to 64 letters, digits, '-' or '.'); give the Group's id",
                    server_text(g)
                )));
            }
        }
        let mut http = FhirHttp::new(source.base().clone(), credentials, options.retry.clone())?;
        let since = options.since.as_ref().map(|c| c.as_str().to_owned());
        let state = match options.mode {
            Mode::Everything => {
                let mut url = http
                    .base()
                    .join(&format!("Patient/{}/$everything", source.patient()))
                    .map_err(|_| FhirPullError::Config("cannot form the $everything URL".into()))?;
                if let Some(s) = &since {
                    url.query_pairs_mut().append_pair("_since", s);
                }
                State::Everything {
                    next: Some(url),
                    visited: HashSet::new(),
                    pages: 0,
                }
            }
            Mode::Bulk => {
                let path = match &options.bulk_group {
                    Some(g) => format!("Group/{g}/$export"),
                    None => "Patient/$export".to_owned(),
                };
                kick_off(
                    &mut http,
                    &path,
                    since.as_deref(),
                    &options.limits,
                    options.bulk_wait,
                    progress,
                )
                .await?
            }
        };
        Ok(Self {
            http,
            source,
            limits: options.limits,
            state,
            yielded: 0,
            newest: None,
            exhausted: false,
        })
    }

    /// The source being pulled.
    pub fn source(&self) -> &FhirSource {
        &self.source
    }

    /// The next batch of complete resources (possibly empty), or `None`
    /// when the source is exhausted.
    ///
    /// # Errors
    ///
    /// Any [`FhirPullError`]; after an error the pull is over (start it
    /// again to resume).
    pub async fn next_batch(
        &mut self,
        progress: &mut dyn FnMut(PullProgress),
    ) -> Result<Option<Vec<vault_fhir::Resource>>, FhirPullError> {
        let result = self.step(progress).await;
        match &result {
            Ok(None) => self.exhausted = true,
            Err(_) => self.state = State::Done,
            Ok(Some(_)) => {}
        }
        let batch = result?;
        if let Some(b) = &batch {
            self.yielded += b.len() as u64;
            if self.yielded > self.limits.max_resources {
                self.state = State::Done;
                return Err(FhirPullError::TooLarge {
                    what: format!("more than {} resources", self.limits.max_resources),
                    limit: self.limits.max_resources,
                });
            }
            for r in b {
                self.note_last_updated(r);
            }
        }
        Ok(batch)
    }

    /// Where the next incremental pull should start: once the source is
    /// exhausted, the bulk export's `transactionTime`, or the newest
    /// `meta.lastUpdated` seen (`None` if nothing carried one, or the pull
    /// is not finished).
    pub fn cursor(&self) -> Option<Cursor> {
        if !self.exhausted {
            return None;
        }
        match &self.state {
            State::Bulk {
                transaction_time: Some(t),
                ..
            } => Some(t.clone()),
            _ => self.newest.as_ref().and_then(|(_, s)| Cursor::parse(s)),
        }
    }

    /// Resources yielded so far.
    pub fn yielded(&self) -> u64 {
        self.yielded
    }

    fn note_last_updated(&mut self, r: &vault_fhir::Resource) {
        let Some(lu) = last_updated(&r.json) else {
            return;
        };
        let Some(t) = vault_fhir::parse_date(&lu) else {
            return;
        };
        let newer = match &self.newest {
            None => true,
            Some((nt, ns)) => (t, lu.as_str()) > (*nt, ns.as_str()),
        };
        if newer && Cursor::parse(&lu).is_some() {
            self.newest = Some((t, lu));
        }
    }

    async fn step(
        &mut self,
        progress: &mut dyn FnMut(PullProgress),
    ) -> Result<Option<Vec<vault_fhir::Resource>>, FhirPullError> {
        match &mut self.state {
            State::Done => Ok(None),
            State::Everything {
                next,
                visited,
                pages,
            } => {
                let Some(url) = next.take() else {
                    return Ok(None);
                };
                if !visited.insert(url.as_str().to_owned()) {
                    return Err(FhirPullError::Paging(
                        "lead back to a page already read".into(),
                    ));
                }
                *pages += 1;
                if *pages > self.limits.max_pages {
                    return Err(FhirPullError::Paging(format!(
                        "go on for more than {} pages",
                        self.limits.max_pages
                    )));
                }
                let number = *pages;
                let resp = self
                    .http
                    .send(Method::GET, &url, FHIR_JSON, &[], progress)
                    .await?;
                let what = format!("page {number} of $everything");
                let body = read_limited(resp, self.limits.max_page_bytes, &what).await?;
                let (resources, link) = parse_page(&body, &what, &self.limits)?;
                if let Some(link) = link {
                    *next = Some(self.http.same_origin("next", &link)?);
                }
                progress(PullProgress::Page {
                    number,
                    resources: resources.len(),
                });
                Ok(Some(resources))
            }
            State::Bulk { .. } => self.bulk_step(progress).await,
        }
    }

    async fn bulk_step(
        &mut self,
        progress: &mut dyn FnMut(PullProgress),
    ) -> Result<Option<Vec<vault_fhir::Resource>>, FhirPullError> {
        let State::Bulk {
            status_url,
            files,
            total,
            current,
            ..
        } = &mut self.state
        else {
            return Ok(None);
        };
        if current.is_none() {
            let Some(file) = files.pop_front() else {
                // Done: the export's files may be deleted (one attempt).
                let url = status_url.clone();
                self.http.discard(&url).await;
                return Ok(None);
            };
            let index = *total - files.len();
            progress(PullProgress::File {
                resource_type: file.resource_type.clone(),
                index,
                total: *total,
                count: file.count,
            });
            let resp = self
                .http
                .send(
                    Method::GET,
                    &file.url,
                    "application/fhir+ndjson",
                    &[],
                    progress,
                )
                .await?;
            let stream: BoxStream<'static, std::io::Result<Bytes>> =
                resp.bytes_stream().map_err(std::io::Error::other).boxed();
            let max = usize::try_from(self.limits.max_resource_bytes).unwrap_or(usize::MAX);
            // The State borrow ends before the file is stored.
            let open = OpenFile {
                name: format!("the {} file", server_text(&file.resource_type)),
                lines: FramedRead::new(
                    StreamReader::new(stream),
                    LinesCodec::new_with_max_length(max),
                ),
                expected: file.count,
                read: 0,
            };
            if let State::Bulk { current, .. } = &mut self.state {
                *current = Some(open);
            }
        }
        let patient = self.source.patient().to_owned();
        let State::Bulk { current, .. } = &mut self.state else {
            return Ok(None);
        };
        let Some(file) = current.as_mut() else {
            return Ok(Some(Vec::new()));
        };
        let mut batch = Vec::new();
        while batch.len() < BULK_BATCH {
            match file.lines.next().await {
                None => {
                    if let Some(n) = file.expected {
                        if n != file.read {
                            return Err(FhirPullError::Truncated {
                                what: file.name.clone(),
                                reason: format!(
                                    "{} lines where the manifest announced {n}",
                                    file.read
                                ),
                            });
                        }
                    }
                    *current = None;
                    break;
                }
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    return Err(FhirPullError::TooLarge {
                        what: format!("a resource in {}", file.name),
                        limit: self.limits.max_resource_bytes,
                    })
                }
                Some(Err(LinesCodecError::Io(e))) => {
                    return Err(if e.kind() == std::io::ErrorKind::InvalidData {
                        FhirPullError::malformed(
                            format!("{}, line {}", file.name, file.read + 1),
                            "not UTF-8",
                        )
                    } else {
                        FhirPullError::Truncated {
                            what: file.name.clone(),
                            reason: format!("the connection broke after {} lines", file.read),
                        }
                    })
                }
                Some(Ok(line)) => {
                    file.read += 1;
                    if line.trim().is_empty() {
                        // A blank line is not a resource; it does not count.
                        file.read -= 1;
                        continue;
                    }
                    let what = format!("{}, line {}", file.name, file.read);
                    if let Some(r) = parse_line(line.as_bytes(), &what, &patient)? {
                        batch.push(r);
                    }
                }
            }
        }
        Ok(Some(batch))
    }
}

/// Kicks off `path` (`Patient/$export` or `Group/{id}/$export`) and polls
/// until the manifest is ready.
async fn kick_off(
    http: &mut FhirHttp,
    path: &str,
    since: Option<&str>,
    limits: &Limits,
    wait: Duration,
    progress: &mut dyn FnMut(PullProgress),
) -> Result<State, FhirPullError> {
    let mut url = http
        .base()
        .join(path)
        .map_err(|_| FhirPullError::Config("cannot form the $export URL".into()))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("_outputFormat", "application/fhir+ndjson");
        if let Some(s) = since {
            q.append_pair("_since", s);
        }
    }
    let resp = http
        .send(
            Method::GET,
            &url,
            FHIR_JSON,
            &[("prefer", "respond-async")],
            progress,
        )
        .await?;
    if resp.status().as_u16() != 202 {
        return Err(FhirPullError::malformed(
            "the bulk export kick-off",
            format!(
                "answered {} instead of 202 Accepted; the server may not support Bulk Data (pull without --bulk)",
                resp.status().as_u16()
            ),
        ));
    }
    let location = header_text(resp.headers(), "content-location").ok_or_else(|| {
        FhirPullError::malformed("the bulk export kick-off", "no Content-Location header")
    })?;
    let status_url = http.same_origin("bulk status", &location)?;
    progress(PullProgress::ExportStarted);
    let started = Instant::now();
    let manifest = loop {
        let resp = http
            .send(Method::GET, &status_url, "application/json", &[], progress)
            .await?;
        if resp.status().as_u16() == 200 {
            break read_limited(resp, MAX_MANIFEST, "the bulk export manifest").await?;
        }
        // 202 (or another 2xx): still running.
        let hinted = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::retry::parse_retry_after);
        let x_progress = header_text(resp.headers(), "x-progress");
        let elapsed = started.elapsed();
        if elapsed >= wait {
            return Err(FhirPullError::ExportTimeout { waited: elapsed });
        }
        let next_poll = hinted
            .unwrap_or(DEFAULT_POLL)
            .clamp(Duration::from_millis(200), MAX_POLL)
            .min(wait.saturating_sub(elapsed).max(Duration::from_millis(200)));
        progress(PullProgress::ExportWaiting {
            progress: x_progress,
            next_poll,
        });
        crate::platform::sleep(next_poll).await;
    };
    parse_manifest(http, &manifest, limits, status_url)
}

/// The files of a bulk export manifest, checked.
fn parse_manifest(
    http: &FhirHttp,
    body: &[u8],
    limits: &Limits,
    status_url: Url,
) -> Result<State, FhirPullError> {
    let what = "the bulk export manifest";
    let v: Value =
        serde_json::from_slice(body).map_err(|e| FhirPullError::malformed(what, e.to_string()))?;
    let transaction_time = v
        .get("transactionTime")
        .and_then(Value::as_str)
        .ok_or_else(|| FhirPullError::malformed(what, "no transactionTime"))?;
    let transaction_time = Cursor::parse(transaction_time)
        .ok_or_else(|| FhirPullError::malformed(what, "transactionTime is not a FHIR instant"))?;
    let output = v
        .get("output")
        .and_then(Value::as_array)
        .ok_or_else(|| FhirPullError::malformed(what, "no output list"))?;
    if output.len() > limits.max_files {
        return Err(FhirPullError::TooLarge {
            what: format!("a manifest of more than {} files", limits.max_files),
            limit: limits.max_files as u64,
        });
    }
    let mut files = VecDeque::new();
    for (i, o) in output.iter().enumerate() {
        let bad = |r: &str| FhirPullError::malformed(format!("{what}, output[{i}]"), r);
        let resource_type = o
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no type"))?;
        let link = o
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no url"))?;
        let count = match o.get("count") {
            None | Some(Value::Null) => None,
            Some(c) => Some(c.as_u64().ok_or_else(|| bad("count is not a number"))?),
        };
        files.push_back(OutputFile {
            resource_type: resource_type.to_owned(),
            url: http.same_origin("bulk file", link)?,
            count,
        });
    }
    Ok(State::Bulk {
        status_url,
        total: files.len(),
        files,
        current: None,
        transaction_time: Some(transaction_time),
    })
}

/// The resources of one `$everything` page and its `next` link. The page
/// is checked whole first: a Bundle whose every entry is a valid resource
/// of at most the size limit.
fn parse_page(
    body: &[u8],
    what: &str,
    limits: &Limits,
) -> Result<(Vec<vault_fhir::Resource>, Option<String>), FhirPullError> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| FhirPullError::malformed(what, e.to_string()))?;
    match root.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => {}
        Some("OperationOutcome") => {
            let detail = super::http::outcome_text(body).unwrap_or_default();
            return Err(FhirPullError::malformed(
                what,
                format!("an OperationOutcome instead of a Bundle: {detail}"),
            ));
        }
        _ => return Err(FhirPullError::malformed(what, "not a Bundle")),
    }
    let mut next = None;
    if let Some(links) = root.get("link") {
        let links = links
            .as_array()
            .ok_or_else(|| FhirPullError::malformed(what, "link is not a list"))?;
        for l in links {
            if l.get("relation").and_then(Value::as_str) == Some("next") {
                let url = l
                    .get("url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| FhirPullError::malformed(what, "a next link without a url"))?;
                if next.replace(url.to_owned()).is_some() {
                    return Err(FhirPullError::malformed(what, "two next links"));
                }
            }
        }
    }
    drop(root);
    let resources = vault_fhir::split_bundle(body)
        .map_err(|e| FhirPullError::malformed(what, e.to_string()))?;
    let mut out = Vec::with_capacity(resources.len());
    for r in resources {
        if r.json.len() as u64 > limits.max_resource_bytes {
            return Err(FhirPullError::TooLarge {
                what: format!("a {} resource on {what}", server_text(&r.resource_type)),
                limit: limits.max_resource_bytes,
            });
        }
        if r.resource_type != "OperationOutcome" {
            out.push(r);
        }
    }
    Ok((out, next))
}

/// One NDJSON line: a single resource (not a Bundle), kept only if it is in
/// `patient`'s compartment.
fn parse_line(
    line: &[u8],
    what: &str,
    patient: &str,
) -> Result<Option<vault_fhir::Resource>, FhirPullError> {
    let v: Value =
        serde_json::from_slice(line).map_err(|e| FhirPullError::malformed(what, e.to_string()))?;
    let rt = v.get("resourceType").and_then(Value::as_str);
    if rt == Some("Bundle") {
        return Err(FhirPullError::malformed(
            what,
            "a Bundle where a resource was expected",
        ));
    }
    if rt == Some("OperationOutcome") || !in_compartment(&v, patient) {
        return Ok(None);
    }
    drop(v);
    let mut resources = vault_fhir::split_bundle(line)
        .map_err(|e| FhirPullError::malformed(what, e.to_string()))?;
    match (resources.pop(), resources.is_empty()) {
        (Some(r), true) => Ok(Some(r)),
        _ => Err(FhirPullError::malformed(what, "not exactly one resource")),
    }
}

/// Whether `resource` belongs to `patient`'s record: the Patient itself, or
/// a resource that references `Patient/{id}` (relative, absolute or
/// versioned). Other patients' resources are left out.
fn in_compartment(resource: &Value, patient: &str) -> bool {
    if resource.get("resourceType").and_then(Value::as_str) == Some("Patient") {
        return resource.get("id").and_then(Value::as_str) == Some(patient);
    }
    let target = format!("Patient/{patient}");
    references(resource, &target)
}

fn references(v: &Value, target: &str) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| {
            (k == "reference" && v.as_str().is_some_and(|s| is_reference_to(s, target)))
                || references(v, target)
        }),
        Value::Array(a) => a.iter().any(|v| references(v, target)),
        _ => false,
    }
}

fn is_reference_to(reference: &str, target: &str) -> bool {
    let r = reference.split("/_history/").next().unwrap_or(reference);
    r == target || r.ends_with(&format!("/{target}"))
}

/// `meta.lastUpdated` of a resource's JSON.
pub(crate) fn last_updated(json: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(json).ok()?;
    v.get("meta")?
        .get("lastUpdated")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_checked_whole() {
        let limits = Limits::default();
        let page = br#"{"resourceType":"Bundle","type":"searchset","link":[{"relation":"self","url":"a"},{"relation":"next","url":"https://h/p2"}],
            "entry":[{"resource":{"resourceType":"Patient","id":"p"}},{"resource":{"resourceType":"OperationOutcome","issue":[]}}]}"#;
        let (r, next) = parse_page(page, "p1", &limits).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(next.as_deref(), Some("https://h/p2"));
        let bad_entry = br#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"p"}},{"resource":{"resourceType":7}}]}"#;
        assert!(parse_page(bad_entry, "p1", &limits).is_err());
        assert!(parse_page(
            br#"{"resourceType":"Bundle","entry":[{"resource":"#,
            "p1",
            &limits
        )
        .is_err());
        assert!(parse_page(br#"{"resourceType":"Patient","id":"p"}"#, "p1", &limits).is_err());
        let tiny = Limits {
            max_resource_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse_page(page, "p1", &tiny),
            Err(FhirPullError::TooLarge { .. })
        ));
    }

    #[test]
    fn only_the_patients_compartment_is_kept() {
        let line = |s: &str| parse_line(s.as_bytes(), "l", "p1");
        assert!(line(r#"{"resourceType":"Patient","id":"p1"}"#)
            .unwrap()
            .is_some());
        assert!(line(r#"{"resourceType":"Patient","id":"p2"}"#)
            .unwrap()
            .is_none());
        assert!(line(
            r#"{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/p1"}}"#
        )
        .unwrap()
        .is_some());
        assert!(line(r#"{"resourceType":"Observation","id":"o","subject":{"reference":"https://h/fhir/Patient/p1/_history/2"}}"#)
            .unwrap()
            .is_some());
        assert!(line(
            r#"{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/p10"}}"#
        )
        .unwrap()
        .is_none());
        assert!(line(r#"{"resourceType":"Bundle","entry":[]}"#).is_err());
        assert!(line(
            r#"{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/p1"}"#
        )
        .is_err());
    }
}
