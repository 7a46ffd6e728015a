//! An intercepting proxy: a hostile relay in front of the real one.
//!
//! [`Proxy::start`] listens on an ephemeral loopback port and forwards every
//! request, unchanged (headers, signed path and body), to the real
//! `relay-server`, then hands the answer back. While an attack is set
//! ([`Proxy::attack`]), a [`Tamper`] may answer a request itself (the relay
//! lies, withholds or fabricates) or rewrite the relay's answer (it
//! corrupts, swaps, truncates or splices); [`Proxy::honest`] goes back to
//! plain forwarding. The proxy cannot sign anything as a client: what it
//! forges, it forges with its own keys or with data it has seen, exactly as
//! a compromised relay could.
//!
//! Bodies are buffered whole (tests use small blobs), which lets a tamper
//! see and rewrite them freely.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use vault_core::LogEntry;

/// A request as a client sent it.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path with its query, exactly as on the request line (this is
    /// what the client signed).
    pub path: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of a header (name in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The signing identity's fingerprint (hex), from `x-vault-identity`.
    pub fn signer(&self) -> Option<&str> {
        self.header("x-vault-identity")
    }

    /// The path without the query.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// A query parameter.
    pub fn query(&self, key: &str) -> Option<&str> {
        let (_, q) = self.path.split_once('?')?;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then_some(v)
        })
    }

    /// Whether this is `GET /v1/vaults/{vault}/log` (of any vault).
    pub fn is_log_read(&self) -> bool {
        self.method == "GET"
            && self.route().starts_with("/v1/vaults/")
            && self.route().ends_with("/log")
    }

    /// Whether this is `POST /v1/vaults/{vault}/log` (an append).
    pub fn is_append(&self) -> bool {
        self.method == "POST"
            && self.route().starts_with("/v1/vaults/")
            && self.route().ends_with("/log")
    }

    /// The blob hash (hex) of `GET /v1/vaults/{vault}/blobs/{hash}`.
    pub fn blob_read(&self) -> Option<&str> {
        if self.method != "GET" {
            return None;
        }
        let rest = self.route().strip_prefix("/v1/vaults/")?;
        let (_, hash) = rest.split_once("/blobs/")?;
        (hash.len() == 64 && !hash.contains('/')).then_some(hash)
    }

    /// Whether this is `POST /v1/vaults/{vault}/blobs/read` (a batch read
    /// of small blobs).
    pub fn is_blob_batch_read(&self) -> bool {
        self.method == "POST"
            && self.route().starts_with("/v1/vaults/")
            && self.route().ends_with("/blobs/read")
    }

    /// The fingerprint (hex) of `GET /v1/identities/{fingerprint}`.
    pub fn identity_lookup(&self) -> Option<&str> {
        if self.method != "GET" {
            return None;
        }
        self.route().strip_prefix("/v1/identities/")
    }
}

/// An answer, from the relay or made up by a tamper.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// Header names (lowercase) and values, without `content-length`
    /// (recomputed) and hop-by-hop headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, value: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    /// A relay error answer (`docs/relay-api.md`, "Errors").
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &json!({"error": {"code": code, "message": message}}),
        )
    }

    /// Raw bytes (`application/octet-stream`).
    pub fn octets(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body,
        }
    }

    /// The body parsed as JSON.
    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Replaces the body with `value` as JSON.
    pub fn set_json(&mut self, value: &Value) {
        self.body = value.to_string().into_bytes();
    }
}

/// What a hostile relay does to the traffic.
pub trait Tamper: Send + Sync {
    /// Answers `req` without asking the relay (`None`: forward it).
    fn intercept(&self, _req: &Request) -> Option<Reply> {
        None
    }

    /// Rewrites the relay's answer to `req`; returns whether it changed
    /// anything.
    fn rewrite(&self, _req: &Request, _reply: &mut Reply) -> bool {
        false
    }
}

struct Intercept<F>(F);

impl<F: Fn(&Request) -> Option<Reply> + Send + Sync> Tamper for Intercept<F> {
    fn intercept(&self, req: &Request) -> Option<Reply> {
        (self.0)(req)
    }
}

struct Rewrite<F>(F);

impl<F: Fn(&Request, &mut Reply) -> bool + Send + Sync> Tamper for Rewrite<F> {
    fn rewrite(&self, req: &Request, reply: &mut Reply) -> bool {
        (self.0)(req, reply)
    }
}

/// A tamper that answers some requests itself.
pub fn intercept(f: impl Fn(&Request) -> Option<Reply> + Send + Sync + 'static) -> Arc<dyn Tamper> {
    Arc::new(Intercept(f))
}

/// A tamper that rewrites the relay's answers.
pub fn rewrite(
    f: impl Fn(&Request, &mut Reply) -> bool + Send + Sync + 'static,
) -> Arc<dyn Tamper> {
    Arc::new(Rewrite(f))
}

/// A `GET /log` answer, decoded: the relay's claimed head and the entries'
/// bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPage {
    /// The claimed head's sequence number.
    pub head_seq: u64,
    /// The claimed head's entry hash.
    pub head_hash: [u8; 32],
    /// The entries, as bytes.
    pub entries: Vec<Vec<u8>>,
}

impl LogPage {
    /// Decodes a log answer body (`None` if it is not one).
    pub fn parse(body: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let head_seq = v.get("head")?.get("seq")?.as_u64()?;
        let hash = hex::decode(v.get("head")?.get("hash")?.as_str()?).ok()?;
        let head_hash: [u8; 32] = hash.try_into().ok()?;
        let entries = v
            .get("entries")?
            .as_array()?
            .iter()
            .map(|e| URL_SAFE_NO_PAD.decode(e.as_str()?).ok())
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            head_seq,
            head_hash,
            entries,
        })
    }

    /// The page whose head is `entry`.
    pub fn set_head(&mut self, entry: &LogEntry) {
        self.head_seq = entry.seq();
        self.head_hash = *entry.hash();
    }

    /// The entry with sequence number `seq`, if on this page.
    pub fn position(&self, seq: u64) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| LogEntry::from_bytes(e).is_ok_and(|e| e.seq() == seq))
    }

    /// Encodes the page as a relay's log answer.
    pub fn to_json(&self) -> Value {
        json!({
            "head": {"seq": self.head_seq, "hash": hex::encode(self.head_hash)},
            "entries": self.entries.iter().map(|e| URL_SAFE_NO_PAD.encode(e)).collect::<Vec<_>>(),
        })
    }

    /// As a `200` answer.
    pub fn reply(&self) -> Reply {
        Reply::json(200, &self.to_json())
    }
}

/// A tamper that edits `GET /log` answers (of every vault, to every
/// client): `f` gets the request and the decoded page and returns whether
/// it changed it.
pub fn rewrite_log(
    f: impl Fn(&Request, &mut LogPage) -> bool + Send + Sync + 'static,
) -> Arc<dyn Tamper> {
    rewrite(move |req, reply| {
        if !req.is_log_read() || reply.status != 200 {
            return false;
        }
        let Some(mut page) = LogPage::parse(&reply.body) else {
            return false;
        };
        if !f(req, &mut page) {
            return false;
        }
        reply.set_json(&page.to_json());
        true
    })
}

/// A tamper that edits the bytes of the entry with sequence number `seq`
/// wherever a log answer carries it.
pub fn rewrite_entry(
    seq: u64,
    f: impl Fn(&mut Vec<u8>) + Send + Sync + 'static,
) -> Arc<dyn Tamper> {
    rewrite_log(move |_, page| match page.position(seq) {
        Some(i) => match page.entries.get_mut(i) {
            Some(e) => {
                f(e);
                true
            }
            None => false,
        },
        None => false,
    })
}

/// One frame of a batch read's answer (`docs/relay-api.md`, "Blobs").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFrame {
    /// The blob's address.
    pub hash: [u8; 32],
    /// 0: bytes sent; 1: not found; 2: not readable; 3: fetch alone.
    pub status: u8,
    /// The bytes (status 0).
    pub bytes: Vec<u8>,
}

impl ReadFrame {
    /// Decodes a batch read's answer (`None` if it is not one).
    pub fn parse(mut body: &[u8]) -> Option<Vec<Self>> {
        let mut frames = Vec::new();
        while !body.is_empty() {
            let hash: [u8; 32] = body.get(..32)?.try_into().ok()?;
            let status = *body.get(32)?;
            let len = u32::from_be_bytes(body.get(33..37)?.try_into().ok()?) as usize;
            let bytes = body.get(37..37 + len)?.to_vec();
            frames.push(Self {
                hash,
                status,
                bytes,
            });
            body = body.get(37 + len..)?;
        }
        Some(frames)
    }

    /// Encodes frames as a batch read's answer body.
    pub fn encode(frames: &[Self]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&f.hash);
            out.push(f.status);
            out.extend_from_slice(&(f.bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&f.bytes);
        }
        out
    }
}

/// A tamper that edits the frames of batch read answers: `f` gets them
/// decoded and returns whether it changed any.
pub fn rewrite_batch_reads(
    f: impl Fn(&mut Vec<ReadFrame>) -> bool + Send + Sync + 'static,
) -> Arc<dyn Tamper> {
    rewrite(move |req, reply| {
        if !req.is_blob_batch_read() || reply.status != 200 {
            return false;
        }
        let Some(mut frames) = ReadFrame::parse(&reply.body) else {
            return false;
        };
        if !f(&mut frames) {
            return false;
        }
        reply.body = ReadFrame::encode(&frames);
        true
    })
}

/// A tamper that rewrites every blob served, by a download or inside a
/// batch read: `f` gets the blob's hash (hex) and the bytes served (of a
/// download, possibly a range of them).
pub fn rewrite_blob(
    f: impl Fn(&str, &mut Vec<u8>) -> bool + Send + Sync + 'static,
) -> Arc<dyn Tamper> {
    let f = Arc::new(f);
    let in_batch = f.clone();
    let batch = rewrite_batch_reads(move |frames| {
        let mut changed = false;
        for frame in frames.iter_mut().filter(|fr| fr.status == 0) {
            changed |= in_batch(&hex::encode(frame.hash), &mut frame.bytes);
        }
        changed
    });
    rewrite(move |req, reply| match req.blob_read() {
        Some(hash) if reply.status == 200 || reply.status == 206 => f(hash, &mut reply.body),
        _ => batch.rewrite(req, reply),
    })
}

/// `inner`, on a relay that offers no batch reads (it answers them
/// `404 not_found`, as a relay without the route does): clients then
/// download every blob alone, where `inner`'s edits of downloads apply.
pub fn without_batch_reads(inner: Arc<dyn Tamper>) -> Arc<dyn Tamper> {
    Arc::new(WithoutBatchReads(inner))
}

struct WithoutBatchReads(Arc<dyn Tamper>);

impl Tamper for WithoutBatchReads {
    fn intercept(&self, req: &Request) -> Option<Reply> {
        if req.is_blob_batch_read() {
            return Some(Reply::error(404, "not_found", "no such route"));
        }
        self.0.intercept(req)
    }

    fn rewrite(&self, req: &Request, reply: &mut Reply) -> bool {
        self.0.rewrite(req, reply)
    }
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    tamper: Mutex<Option<Arc<dyn Tamper>>>,
    tampered: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

impl Shared {
    fn current(&self) -> Option<Arc<dyn Tamper>> {
        self.tamper
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The intercepting proxy, running on its own threads until dropped.
pub struct Proxy {
    /// Its base URL (`http://127.0.0.1:<port>`): give it to clients as the
    /// relay.
    pub url: String,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts a relay with its data in `data_dir` and this proxy in front
    /// of it. Clients sign for the proxy's origin, so the relay is told
    /// that it is reachable there, and at its own address (`relay.url`,
    /// for clients that go around the proxy).
    pub fn in_front_of_a_relay(data_dir: &std::path::Path) -> (Self, crate::RelayProcess) {
        let port = crate::free_loopback_port();
        let relay_url = format!("http://127.0.0.1:{port}");
        let proxy = Self::start(&relay_url);
        let relay = crate::RelayProcess::start_on(
            data_dir,
            &format!("127.0.0.1:{port}"),
            &["--public-url", &proxy.url, "--public-url", &relay_url],
        );
        (proxy, relay)
    }

    /// Starts a proxy in front of the relay at `upstream`. It accepts
    /// connections as soon as this returns (the socket is bound and
    /// listening).
    pub fn start(upstream: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("proxy runtime: {e}"));
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| panic!("proxy HTTP client: {e}"));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http,
            tamper: Mutex::new(None),
            tampered: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy address: {e}"));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            shared,
            runtime: Some(runtime),
        }
    }

    /// From now on, traffic goes through `tamper` (the counter of tampered
    /// exchanges starts again from zero).
    pub fn attack(&self, tamper: Arc<dyn Tamper>) {
        let mut t = self
            .shared
            .tamper
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared.tampered.store(0, Ordering::SeqCst);
        *t = Some(tamper);
    }

    /// From now on, plain forwarding.
    pub fn honest(&self) {
        *self
            .shared
            .tamper
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// How many exchanges the current attack answered itself or rewrote
    /// (so a test can check that its attack really happened).
    pub fn tampered(&self) -> usize {
        self.shared.tampered.load(Ordering::SeqCst)
    }

    /// Every request so far, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Headers that describe one hop, not the message.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
    )
}

async fn handle(State(shared): State<Arc<Shared>>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b.to_vec(),
        Err(e) => return respond(Reply::error(400, "proxy", &format!("body: {e}"))),
    };
    let request = Request {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| parts.uri.path().to_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("{} {}", request.method, request.path));
    let tamper = shared.current();
    if let Some(t) = &tamper {
        if let Some(reply) = t.intercept(&request) {
            shared.tampered.fetch_add(1, Ordering::SeqCst);
            return respond(reply);
        }
    }
    let mut reply = match forward(&shared, &request).await {
        Ok(r) => r,
        Err(e) => return respond(Reply::error(502, "proxy", &e)),
    };
    if let Some(t) = &tamper {
        if t.rewrite(&request, &mut reply) {
            shared.tampered.fetch_add(1, Ordering::SeqCst);
        }
    }
    respond(reply)
}

async fn forward(shared: &Shared, req: &Request) -> Result<Reply, String> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut rb = shared
        .http
        .request(method, format!("{}{}", shared.upstream, req.path));
    for (name, value) in &req.headers {
        if !hop_by_hop(name) {
            rb = rb.header(name.as_str(), value.as_str());
        }
    }
    let resp = rb
        .body(req.body.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter(|(n, _)| !hop_by_hop(n.as_str()))
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn respond(reply: Reply) -> Response {
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
