//! SMART Health Links, both ends, written once for the CLI and the browser
//! (decision 49):
//!
//! - the sharer's side ([`create`], [`RelayClient::links`],
//!   [`RelayClient::revoke_link`], [`RelayClient::link_access_log`]):
//!   files are encrypted here under a fresh link key ([`vault_shl::jwe`],
//!   `alg: dir`, `enc: A256GCM`), only their ciphertext goes to the relay,
//!   and the key exists only in the link this function returns;
//! - the viewer's side ([`resolve`]): no account; the link is parsed, its
//!   manifest requested with the `recipient` and passcode, every file
//!   fetched (from the link's own origin only), decrypted and checked
//!   (`cty` equal to the manifest's `contentType`), within size limits.
//!
//! The link key is a bearer secret: whoever holds the link reads the
//! files (with the passcode, if it has one).

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use vault_core::store::Store;
use vault_core::{Keyring, RecordId, SecretIdentity, VaultState};

use crate::client::{read_capped, Body, Mode, Req, MAX_SMALL_ANSWER};
use crate::error::{ClientError, Result};
use crate::reading::{self, Listing};
use crate::wire::parse_json;
use crate::RelayClient;
use vault_shl::{jwe, Compression, Flags, JweLimits, LinkKey, Manifest, ManifestRequest, Payload};

/// The largest manifest a viewer reads.
pub const MAX_MANIFEST_ANSWER: u64 = 64 << 20;
/// The largest file (JWE text) a viewer reads, and the largest plaintext it
/// accepts after decompression.
pub const MAX_FILE: usize = 32 << 20;

/// One file to share: its content type (one of
/// [`vault_shl::CONTENT_TYPES`]) and its plaintext.
#[derive(Clone)]
pub struct ShareFile {
    /// `application/fhir+json` for FHIR.
    pub content_type: String,
    /// The plaintext (encrypted before it leaves the device).
    pub plaintext: Vec<u8>,
}

impl std::fmt::Debug for ShareFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareFile")
            .field("content_type", &self.content_type)
            .field("bytes", &self.plaintext.len())
            .finish()
    }
}

impl ShareFile {
    /// A FHIR resource (a Bundle, for vault's links) as JSON.
    pub fn fhir(resource: &Value) -> Result<Self> {
        Ok(Self {
            content_type: vault_shl::FHIR_JSON.into(),
            plaintext: serde_json::to_vec(resource)
                .map_err(|e| ClientError::Config(format!("could not encode the bundle: {e}")))?,
        })
    }
}

/// A record's body as FHIR JSON, or [`ClientError::NotShareable`].
fn fhir_json(body: &[u8], record: &RecordId) -> Result<Value> {
    serde_json::from_slice(body)
        .map_err(|_| ClientError::NotShareable(format!("record {record} is not FHIR JSON")))
}

/// The FHIR JSON of the chosen records, each opened and authenticated from
/// `store` as `me` at `now` (their ciphertext must be on the device,
/// [`ClientError::NotOnDevice`] otherwise). A record that is not FHIR is
/// [`ClientError::NotShareable`]: nothing is shared then.
pub fn chosen_resources<S: Store + ?Sized>(
    store: &S,
    state: &VaultState,
    me: &SecretIdentity,
    now: u64,
    ids: &[RecordId],
) -> Result<Vec<Value>> {
    let mut keyring = Keyring::new(me, now);
    ids.iter()
        .map(|id| {
            let mut body = Vec::new();
            let opened = reading::open_stored(store, state, &mut keyring, id, &mut body)?;
            if !vault_fhir::is_fhir(&opened.info.content_type) {
                return Err(ClientError::NotShareable(format!(
                    "record {id} is {}, not FHIR JSON",
                    vault_fhir::clean(&opened.info.content_type)
                )));
            }
            fhir_json(&body, id)
        })
        .collect()
}

/// The FHIR JSON of a listing's FHIR records (a listing opened with FHIR
/// bodies kept, [`reading::open_listing`]); other records are left out. A
/// FHIR record whose body was not kept (too large) is
/// [`ClientError::NotShareable`].
pub fn listed_resources(listing: &Listing) -> Result<Vec<Value>> {
    listing
        .opened
        .iter()
        .filter(|l| vault_fhir::is_fhir(&l.opened.info.content_type))
        .map(|l| {
            let body = l.body.as_deref().ok_or_else(|| {
                ClientError::NotShareable(format!(
                    "FHIR record {} is too large to share in a link",
                    l.summary.id
                ))
            })?;
            fhir_json(body, &l.summary.id)
        })
        .collect()
}

/// The FHIR JSON of the chosen records of a listing opened with FHIR
/// bodies kept ([`reading::open_listing`]), in the order of `ids`. A
/// chosen record the listing does not hold (not readable, or failed its
/// checks), one that is not FHIR, or one whose body was not kept is
/// [`ClientError::NotShareable`]: nothing is shared then.
pub fn chosen_listed(listing: &Listing, ids: &[RecordId]) -> Result<Vec<Value>> {
    ids.iter()
        .map(|id| {
            let l = listing
                .opened
                .iter()
                .find(|l| &l.summary.id == id)
                .ok_or_else(|| {
                    ClientError::NotShareable(format!(
                        "record {id} is not one you can read in this vault"
                    ))
                })?;
            if !vault_fhir::is_fhir(&l.opened.info.content_type) {
                return Err(ClientError::NotShareable(format!(
                    "record {id} is {}, not FHIR JSON",
                    vault_fhir::clean(&l.opened.info.content_type)
                )));
            }
            let body = l.body.as_deref().ok_or_else(|| {
                ClientError::NotShareable(format!("record {id} is too large to share in a link"))
            })?;
            fhir_json(body, id)
        })
        .collect()
}

/// What a link carries: the FHIR Bundle made of `resources`, either an
/// International Patient Summary document (`summary`, made at `now`, Unix
/// seconds; [`vault_fhir::ips::patient_summary`] says what counts as
/// current) or a `collection` Bundle of the resources as they are. Nothing
/// to share is [`ClientError::NotShareable`].
pub fn bundle(resources: &[Value], summary: bool, now: u64) -> Result<Value> {
    if resources.is_empty() {
        return Err(ClientError::NotShareable(
            "there are no FHIR records to share there: import a FHIR bundle first".into(),
        ));
    }
    if !summary {
        return Ok(vault_fhir::ips::collection_bundle(resources));
    }
    let options = vault_fhir::ips::SummaryOptions {
        now: i64::try_from(now).unwrap_or(i64::MAX),
        document_uuid: new_uuid()?,
    };
    vault_fhir::ips::patient_summary(resources, &options)
        .map_err(|e| ClientError::NotShareable(e.to_string()))
}

/// A link's settings.
#[derive(Clone, Default)]
pub struct LinkOptions {
    /// A passcode the viewer must give (flag `P`); the relay keeps a slow
    /// hash of it and allows [`LinkOptions::max_attempts`] wrong ones.
    pub passcode: Option<Zeroizing<String>>,
    /// Wrong passcodes allowed over the link's lifetime (relay default 10).
    pub max_attempts: Option<u32>,
    /// Expiry, Unix seconds (also written as the payload's `exp`).
    pub expires_at: Option<u64>,
    /// At most 80 characters, in the link only (the relay never sees it).
    pub label: Option<String>,
    /// Flag `L`: long-term use.
    pub long_term: bool,
    /// Flag `U`: the link's URL is the single file itself (fetched with
    /// `GET ?recipient=…`, no manifest). Needs exactly one file and no
    /// passcode; some viewers (and QR scanners' browsers) read it with one
    /// request.
    pub direct: bool,
}

impl std::fmt::Debug for LinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkOptions")
            .field("passcode", &self.passcode.as_ref().map(|_| "<secret>"))
            .field("max_attempts", &self.max_attempts)
            .field("expires_at", &self.expires_at)
            .field("label", &self.label)
            .field("long_term", &self.long_term)
            .field("direct", &self.direct)
            .finish()
    }
}

/// A link just made. `Debug` leaves the key out.
#[derive(Clone)]
pub struct CreatedLink {
    /// The payload (holds the key).
    pub payload: Payload,
    /// The bare link, `shlink:/…` (holds the key).
    pub shlink: Zeroizing<String>,
    /// The link behind the relay's web app as viewer,
    /// `https://relay/#shlink:/…` (holds the key; the part after `#` never
    /// reaches a server).
    pub viewer_link: Zeroizing<String>,
    /// The relay's handle of the link (64 hex digits), for list, revoke and
    /// the access record.
    pub handle: String,
    /// Bytes of encrypted files stored at the relay.
    pub stored_bytes: u64,
}

impl std::fmt::Debug for CreatedLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedLink")
            .field("payload", &self.payload)
            .field("handle", &self.handle)
            .field("stored_bytes", &self.stored_bytes)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct CreateBody<'a> {
    files: Vec<FileBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    passcode: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    long_term: bool,
    direct: bool,
}

#[derive(serde::Serialize)]
struct FileBody {
    #[serde(rename = "contentType")]
    content_type: String,
    jwe: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatedWire {
    id: String,
    path: String,
    handle: String,
    #[allow(dead_code)]
    flag: Option<String>,
}

/// The relay's handle of a link: SHA-256 of its id (the last path segment
/// of its `url`), 64 hex digits.
pub fn handle_of(payload: &Payload) -> Result<String> {
    use base64::Engine;
    let id = payload
        .url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| {
            ClientError::Config("this link's URL does not end in a vault link id".into())
        })?;
    Ok(hex::encode(vault_core::request::body_digest(&bytes)))
}

/// Makes a link on the relay for `files`: each encrypted here under a
/// fresh key (DEFLATE for plaintexts up to
/// [`vault_shl::jwe::AUTO_DEFLATE_MAX`], none above, so every reader
/// handles them), then stored at the relay with the options' rules. The
/// returned link holds the key; nothing else does.
pub async fn create(
    client: &RelayClient,
    files: &[ShareFile],
    options: &LinkOptions,
) -> Result<CreatedLink> {
    let key = LinkKey::generate()?;
    let flags = Flags {
        long_term: options.long_term,
        passcode: options.passcode.is_some(),
        direct: options.direct,
    };
    // Checked here, before anything is encrypted or sent: U excludes P,
    // and a direct link is one file.
    flags.encode()?;
    if options.direct && files.len() != 1 {
        return Err(vault_shl::ShlError::InvalidSettings(
            "a direct-file link (flag U) carries exactly one file".into(),
        )
        .into());
    }
    if let Some(label) = &options.label {
        if label.chars().count() > vault_shl::payload::MAX_LABEL_CHARS {
            return Err(vault_shl::ShlError::InvalidSettings(
                "the label is longer than 80 characters".into(),
            )
            .into());
        }
    }
    let mut body_files = Vec::with_capacity(files.len());
    let mut stored_bytes = 0u64;
    for f in files {
        let jwe = jwe::encrypt(
            &key,
            &f.content_type,
            &f.plaintext,
            Compression::auto(f.plaintext.len()),
        )?;
        stored_bytes += jwe.len() as u64;
        body_files.push(FileBody {
            content_type: f.content_type.clone(),
            jwe,
        });
    }
    let body = CreateBody {
        files: body_files,
        expires_at: options.expires_at,
        passcode: options.passcode.as_deref().map(|s| s.as_str()),
        max_attempts: options.max_attempts,
        long_term: options.long_term,
        direct: options.direct,
    };
    let bytes = Zeroizing::new(
        serde_json::to_vec(&body)
            .map_err(|e| ClientError::Protocol(format!("could not encode the request: {e}")))?,
    );
    let mut req = Req::new(Method::POST, "/v1/links".into(), "creating a link");
    req.body = Body::Json(Bytes::copy_from_slice(&bytes));
    let (_, answer) = client
        .exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER))
        .await?
        .ok_body()?;
    let created: CreatedWire = parse_json(&answer, "the created link")?;
    if created.path != format!("/v1/shl/{}", created.id) || created.id.len() != 43 {
        return Err(ClientError::Protocol(
            "the relay answered a link path that is not /v1/shl/<43 characters>".into(),
        ));
    }
    let url = client
        .base_url()
        .join(&created.path)
        .map_err(|e| ClientError::Protocol(format!("the link path: {e}")))?;
    let payload = Payload {
        url: url.to_string(),
        key,
        exp: options.expires_at,
        flags,
        label: options.label.clone(),
    };
    // The relay's handle must be the hash of the id it gave.
    if handle_of(&payload)? != created.handle {
        return Err(ClientError::Protocol(
            "the relay's link handle is not the hash of its id".into(),
        ));
    }
    let mut viewer = client.base_url().clone();
    viewer.set_path("/");
    viewer.set_query(None);
    let viewer_link = payload.to_viewer_link(&format!("{viewer}#"))?;
    Ok(CreatedLink {
        shlink: payload.to_shlink()?,
        viewer_link,
        handle: created.handle,
        payload,
        stored_bytes,
    })
}

/// One of the caller's links, as the relay lists it (and as `vault link
/// list --json` and the web app show it, field names unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct LinkInfo {
    /// The handle (64 hex digits).
    pub handle: String,
    /// Created, Unix seconds (the relay's clock).
    pub created_at: u64,
    /// Expiry.
    pub expires_at: Option<u64>,
    /// When revoked.
    pub revoked_at: Option<u64>,
    /// The payload's flag.
    pub flag: Option<String>,
    /// `active`, `expired`, `revoked` or `disabled` (passcode attempts
    /// used up).
    pub status: String,
    /// Files.
    pub files: u32,
    /// Encrypted bytes stored.
    pub bytes: u64,
    /// Wrong passcodes so far.
    pub failed_attempts: u32,
    /// Wrong passcodes allowed.
    pub max_attempts: u32,
    /// Accesses recorded.
    pub accesses: u64,
}

/// One access of a link, as the relay recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessEvent {
    /// The relay's time, Unix seconds.
    pub at: u64,
    /// What the requester said it is (its own word; shown cleaned).
    pub recipient: String,
    /// `manifest`, `file` or `wrong_passcode`.
    pub outcome: String,
}

#[derive(Deserialize)]
struct LinksWire {
    links: Vec<LinkInfo>,
}

#[derive(Deserialize)]
struct LogWire {
    handle: String,
    events: Vec<AccessEvent>,
}

fn check_handle(handle: &str) -> Result<()> {
    if handle.len() != 64
        || !handle
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ClientError::Config(
            "a link handle is 64 lowercase hex digits (see vault link list)".into(),
        ));
    }
    Ok(())
}

impl RelayClient {
    /// The caller's links, newest first (`GET /v1/links`).
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let req = Req::new(Method::GET, "/v1/links".into(), "listing your links");
        let (_, body) = self
            .exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER))
            .await?
            .ok_body()?;
        Ok(parse_json::<LinksWire>(&body, "the link list")?.links)
    }

    /// Revokes the caller's link `handle`: it answers 404 from now on and
    /// its files are deleted at the relay.
    pub async fn revoke_link(&self, handle: &str) -> Result<()> {
        check_handle(handle)?;
        let mut req = Req::new(
            Method::POST,
            format!("/v1/links/{handle}/revoke"),
            "revoking a link",
        );
        req.body = Body::Json(Bytes::from_static(b"{}"));
        self.exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER))
            .await?
            .ok_body()?;
        Ok(())
    }

    /// The access record of the caller's link `handle`, oldest first.
    pub async fn link_access_log(&self, handle: &str) -> Result<Vec<AccessEvent>> {
        check_handle(handle)?;
        let req = Req::new(
            Method::GET,
            format!("/v1/links/{handle}/log"),
            "reading a link's access record",
        );
        let (_, body) = self
            .exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER))
            .await?
            .ok_body()?;
        let log: LogWire = parse_json(&body, "the access record")?;
        if log.handle != handle {
            return Err(ClientError::Protocol(
                "the relay answered the record of another link".into(),
            ));
        }
        Ok(log.events)
    }
}

/// A resolved link: its payload and its files, decrypted.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The payload (label, expiry, flags).
    pub payload: Payload,
    /// The files, in manifest order.
    pub files: Vec<vault_shl::Decrypted>,
}

fn http_client() -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder();
    #[cfg(not(target_arch = "wasm32"))]
    let builder = builder
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("vault-client/", env!("CARGO_PKG_VERSION")));
    builder
        .build()
        .map_err(|e| ClientError::Config(format!("could not set up the HTTP client: {e}")))
}

/// Opens a SMART Health Link as a viewer with no account: parses it
/// (refusing a malformed or truncated link, `v` other than 1, `U` with
/// `P`), refuses it if its `exp` has passed at `now`, asks for its
/// manifest as `recipient` (with `passcode` for flag `P`; a wrong one is
/// [`ClientError::LinkPasscode`] with the attempts left, an inactive link
/// [`ClientError::LinkNotActive`]), fetches each file (embedded, or from
/// a location on the link's own origin), and decrypts it within
/// [`MAX_FILE`], checking that its `cty` equals the manifest's
/// `contentType`.
pub async fn resolve(
    link: &str,
    recipient: &str,
    passcode: Option<Zeroizing<String>>,
    now: u64,
) -> Result<Resolved> {
    let payload = Payload::parse(link)?;
    if payload.expired_at(now) {
        return Err(ClientError::LinkNotActive(
            "the link's expiry time has passed".into(),
        ));
    }
    if payload.flags.passcode && passcode.is_none() {
        return Err(ClientError::LinkPasscode { remaining: None });
    }
    if recipient.trim().is_empty() {
        return Err(ClientError::Config(
            "say who you are (the recipient): the sharer sees it in the link's access record"
                .into(),
        ));
    }
    let http = http_client()?;
    let limits = JweLimits {
        max_jwe: MAX_FILE,
        max_plaintext: MAX_FILE,
    };
    let fetch_file =
        |url: String| {
            let http = http.clone();
            async move {
                let resp = http
                    .get(&url)
                    .send()
                    .await
                    .map_err(ClientError::Transport)?;
                match resp.status() {
                    s if s.is_success() => {}
                    StatusCode::NOT_FOUND => return Err(ClientError::LinkNotActive(
                        "a file of the link is gone (expired, revoked or its location timed out)"
                            .into(),
                    )),
                    s => {
                        return Err(ClientError::Protocol(format!(
                            "the link's host answered {s} for a file"
                        )))
                    }
                }
                let bytes = read_capped(resp, MAX_FILE as u64, "a shared file").await?;
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| ClientError::Protocol("a shared file is not text".into()))
            }
        };
    let mut files = Vec::new();
    if payload.flags.direct {
        let mut url = url::Url::parse(&payload.url)
            .map_err(|_| ClientError::Config("the link's url is not a URL".into()))?;
        url.query_pairs_mut().append_pair("recipient", recipient);
        let jwe_text = fetch_file(url.to_string()).await?;
        files.push(jwe::decrypt(&payload.key, &jwe_text, &limits)?);
        return Ok(Resolved { payload, files });
    }
    let request = ManifestRequest {
        recipient: recipient.to_string(),
        passcode,
        embedded_length_max: None,
    };
    let body = request.to_json();
    let resp = http
        .post(&payload.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(ClientError::Transport)?;
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        let bytes = read_capped(resp, 64 << 10, "a passcode refusal").await?;
        let remaining = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("remainingAttempts").and_then(Value::as_u64));
        return Err(ClientError::LinkPasscode { remaining });
    }
    if status == StatusCode::NOT_FOUND {
        return Err(ClientError::LinkNotActive(
            "its host answers 404: expired, revoked, or disabled after wrong passcodes".into(),
        ));
    }
    if !status.is_success() {
        return Err(ClientError::Protocol(format!(
            "the link's host answered {status} to the manifest request"
        )));
    }
    let bytes = read_capped(resp, MAX_MANIFEST_ANSWER, "the link's manifest").await?;
    let manifest = Manifest::parse(&bytes, &payload.url)?;
    for (i, f) in manifest.files.iter().enumerate() {
        let text = match (&f.embedded, &f.location) {
            (Some(e), _) => e.clone(),
            (None, Some(loc)) => fetch_file(loc.clone()).await?,
            (None, None) => return Err(ClientError::Protocol(format!("file {i} has no content"))),
        };
        let d = jwe::decrypt(&payload.key, &text, &limits)?;
        if d.content_type != f.content_type {
            return Err(vault_shl::ShlError::MalformedManifest(format!(
                "file {i}'s cty ({}) differs from the manifest's contentType",
                d.content_type.chars().take(64).collect::<String>()
            ))
            .into());
        }
        files.push(d);
    }
    Ok(Resolved { payload, files })
}

/// The QR code of a link at error-correction level M, what the SMART
/// Health Links specification recommends; callers draw it (the CLI as
/// text, the web app as SVG). A link too long for a QR code is
/// [`ClientError::Config`].
pub fn qr_code(link: &str) -> Result<qrcode::QrCode> {
    qrcode::QrCode::with_error_correction_level(link.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| ClientError::Config(format!("cannot draw the link's QR code: {e}")))
}

/// A random (version 4) UUID, for a new document's identifier.
pub fn new_uuid() -> Result<String> {
    let mut b = vault_shl::random_32()?;
    if let Some(x) = b.get_mut(6) {
        *x = (*x & 0x0f) | 0x40;
    }
    if let Some(x) = b.get_mut(8) {
        *x = (*x & 0x3f) | 0x80;
    }
    let h = hex::encode(b.get(..16).unwrap_or(&[0; 16]));
    Ok(format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or(""),
        h.get(8..12).unwrap_or(""),
        h.get(12..16).unwrap_or(""),
        h.get(16..20).unwrap_or(""),
        h.get(20..32).unwrap_or("")
    ))
}
