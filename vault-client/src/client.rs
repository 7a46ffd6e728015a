//! [`RelayClient`]: signed requests to one relay, with retries, clock-skew
//! correction, and strict parsing of every answer.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use url::Url;
use vault_core::devices::DeviceList;
use vault_core::request::{body_digest, RelayOrigin, RequestAuth};
use vault_core::{Fingerprint, LogEntry, PublicIdentity, SecretIdentity, VaultId};

use crate::error::{ClientError, ErrorBody, Result};
use crate::platform;
use crate::retry::{is_transient_status, is_transient_transport, parse_retry_after, RetryPolicy};
use crate::wire::{self, AcceptedOwners, Head, InboxVault};

/// The most entries one log page may ask for (the relay's maximum).
pub const MAX_LOG_PAGE: u32 = 1000;
/// The most entries one append may carry (the relay's maximum).
pub const MAX_APPEND_ENTRIES: usize = 1024;
/// The default blob upload chunk: 8 MiB.
pub const DEFAULT_CHUNK_SIZE: usize = 8 * 1024 * 1024;
/// The largest upload chunk this client sends (the relay's default
/// `max_chunk`).
pub const MAX_CHUNK_SIZE: usize = 64 * 1024 * 1024;

/// The largest log page answer buffered.
pub(crate) const MAX_LOG_ANSWER: u64 = 64 * 1024 * 1024;
/// The largest inbox answer (one page) buffered.
const MAX_INBOX_ANSWER: u64 = 16 * 1024 * 1024;
/// The most inbox pages [`RelayClient::inbox_listing`] reads (the relay's
/// pages hold up to 500 vaults: 20,000 vaults in all).
pub const MAX_INBOX_PAGES: usize = 40;

/// Which part of the inbox to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InboxView {
    /// Accepted owners' vaults, and strangers' within the relay's caps.
    #[default]
    All,
    /// The caller's own vaults and accepted owners' only.
    Accepted,
    /// Strangers' vaults only, within the caps.
    Strangers,
}

impl InboxView {
    fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Accepted => "accepted",
            Self::Strangers => "strangers",
        }
    }
}

/// The caller's inbox as read page by page: what was listed, and whether
/// the listing stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxListing {
    /// The vaults listed, in the relay's (vault-id) order.
    pub vaults: Vec<InboxVault>,
    /// `true` when the inbox has more than [`MAX_INBOX_PAGES`] pages (for
    /// example when someone floods it with shares): `vaults` holds the
    /// first pages only.
    pub truncated: bool,
    /// Vaults of owners the caller has not accepted that the relay's caps
    /// on strangers left out.
    pub strangers_held_back: u64,
    /// Strangers' vaults left out because only accepted owners were asked
    /// for.
    pub strangers_not_listed: u64,
}
/// The largest answer buffered for the other JSON routes.
pub(crate) const MAX_SMALL_ANSWER: u64 = 1024 * 1024;

/// The largest device-list answer read: 64 versions of at most 32 KiB,
/// in base64.
const MAX_DEVICE_LISTS_ANSWER: u64 = 4 * 1024 * 1024;
/// The largest error body read.
const MAX_ERROR_ANSWER: u64 = 64 * 1024;

const JSON: &str = "application/json";
pub(crate) const OCTETS: &str = "application/octet-stream";

/// A client of one relay, signing every request as one identity.
///
/// Cloning is cheap (the identity, the HTTP connection pool and the clock
/// offset are shared). Every request is signed with
/// [`RequestAuth::sign`] over the method, the exact path and query of the
/// request line, the origin of the configured relay URL (so no other relay
/// can replay it), the relay-adjusted time and the body's SHA-256. Transient
/// failures are retried according to the [`RetryPolicy`]; a
/// `401 stale_timestamp` answer adjusts the clock offset from the relay's
/// `server_time` and the request is retried once.
///
/// Everything the relay answers is untrusted: it is parsed strictly, sizes
/// are capped, and log entries, identities and blobs are verified against
/// what the caller asked for. Verifying a log against a vault's rules is
/// [`crate::sync`]'s job (through vault-core).
#[derive(Clone)]
pub struct RelayClient {
    base: Arc<Url>,
    origin: Arc<RelayOrigin>,
    identity: Arc<SecretIdentity>,
    http: reqwest::Client,
    retry: RetryPolicy,
    chunk_size: usize,
    clock_offset: Arc<AtomicI64>,
    /// The invitation token a relay may ask new identities for (never in
    /// `Debug` output).
    invite: Option<Arc<HeaderValue>>,
    /// The person this device reads its inbox for
    /// ([`RelayClient::with_person`]).
    person: Option<Fingerprint>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("base", &self.base.as_str())
            .field("identity", &self.identity.fingerprint())
            .field("retry", &self.retry)
            .field("chunk_size", &self.chunk_size)
            .field("clock_offset", &self.clock_offset())
            .field("invite", &self.invite.as_ref().map(|_| "[redacted]"))
            .field("person", &self.person)
            .finish_non_exhaustive()
    }
}

/// The body of a request.
#[derive(Clone)]
pub(crate) enum Body {
    Empty,
    Json(Bytes),
    Octets(Bytes),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::Json(b) | Body::Octets(b) => b,
        }
    }
}

/// A request signed by this client for someone else to send
/// ([`crate::pairing::Offer::close_request`]): its URL, method and signature
/// headers (a signature is not a secret; it authorises only this request,
/// once, within the relay's timestamp window).
/// Serialised, it is the JSON `{url, method, headers: {name: value}}` a
/// page hands to `fetch`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DetachedRequest {
    /// The absolute URL.
    pub url: String,
    /// The HTTP method.
    pub method: String,
    /// The signature headers, by name.
    pub headers: std::collections::BTreeMap<String, String>,
}

/// One request, as many times as it is attempted (each attempt is signed
/// afresh: new timestamp, new nonce).
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub body: Body,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What the request is, for error messages.
    pub what: &'static str,
}

impl Req {
    pub fn new(method: Method, path: String, what: &'static str) -> Self {
        Self {
            method,
            path,
            body: Body::Empty,
            headers: Vec::new(),
            what,
        }
    }

    pub(crate) fn json(mut self, value: &impl serde::Serialize) -> Result<Self> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| ClientError::Protocol(format!("could not encode the request: {e}")))?;
        self.body = Body::Json(bytes.into());
        Ok(self)
    }
}

/// How an exchange wants the answer.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    /// Read a successful answer whole, up to this many bytes.
    Buffer(u64),
    /// Hand a successful answer back unread, to be streamed.
    Stream,
}

/// The final answer of an exchange, after retries.
pub(crate) enum Answer {
    /// A 2xx answer, read whole.
    Body(StatusCode, Bytes),
    /// A 2xx answer, unread.
    Stream(Response),
    /// A non-2xx answer (its body parsed as an error body).
    Refused(u16, ErrorBody),
}

impl Answer {
    /// The body of a successful answer; a refusal becomes
    /// [`ClientError::Relay`].
    pub(crate) fn ok_body(self) -> Result<(StatusCode, Bytes)> {
        match self {
            Answer::Body(s, b) => Ok((s, b)),
            Answer::Refused(status, e) => Err(e.into_error(status)),
            Answer::Stream(_) => Err(ClientError::Protocol(
                "an unexpected streamed answer".into(),
            )),
        }
    }
}

impl RelayClient {
    /// A client of the relay at `base_url` (for example
    /// `https://relay.example:8443`), signing as `identity`, with the
    /// default [`RetryPolicy`] and an 8 MiB upload chunk.
    ///
    /// The relay must be served at the root of `base_url`: the signed path
    /// is the path on the request line, `/v1/…`.
    pub fn new(base_url: &str, identity: Arc<SecretIdentity>) -> Result<Self> {
        Self::with_http_client(base_url, identity, default_http_client()?)
    }

    /// Like [`RelayClient::new`] with a caller-built `reqwest::Client`
    /// (custom roots, proxies, timeouts). It should not follow redirects:
    /// a redirected request's signature does not match its new path.
    pub fn with_http_client(
        base_url: &str,
        identity: Arc<SecretIdentity>,
        http: reqwest::Client,
    ) -> Result<Self> {
        let base = parse_base_url(base_url)?;
        let origin = RelayOrigin::parse(&base.origin().ascii_serialization()).map_err(|e| {
            ClientError::Config(format!(
                "the relay address {base_url:?} has no origin requests can be signed for: {e}"
            ))
        })?;
        Ok(Self {
            base: Arc::new(base),
            origin: Arc::new(origin),
            identity,
            http,
            retry: RetryPolicy::default(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            clock_offset: Arc::new(AtomicI64::new(0)),
            invite: None,
            person: None,
        })
    }

    /// The same client presenting `token` (`x-vault-invite`) when it
    /// publishes its identity, for relays that admit new identities by
    /// invitation (`docs/relay-api.md`, "Admission"). Refused if the token
    /// cannot be a header value.
    pub fn with_invite(mut self, token: &str) -> Result<Self> {
        let mut value = HeaderValue::from_str(token.trim()).map_err(|_| {
            ClientError::Config(
                "the invitation token has characters a header cannot carry; paste it exactly as the relay's operator gave it".into(),
            )
        })?;
        value.set_sensitive(true);
        self.invite = Some(Arc::new(value));
        Ok(self)
    }

    /// The same client reading the inbox and the accepted owners of
    /// `person`, whose device this client's identity is
    /// (`person=<fingerprint>` on `/v1/inbox` and `/v1/inbox/accepted`):
    /// the person's own vaults and the owners the person accepted are then
    /// listed in full, and an accepted-owners change reaches every device
    /// of the person. The relay refuses (`403 not_their_device`) unless the
    /// person's current list in its directory names this device.
    pub fn with_person(mut self, person: Fingerprint) -> Self {
        self.person = (person != self.identity.fingerprint()).then_some(person);
        self
    }

    /// The same client reading the inbox for its own identity alone.
    pub fn without_person(&self) -> Self {
        Self {
            person: None,
            ..self.clone()
        }
    }

    /// The person this client reads the inbox for, if any
    /// ([`RelayClient::with_person`]).
    pub fn person(&self) -> Option<Fingerprint> {
        self.person
    }

    /// `path` with the `person` this client reads for, if any.
    fn for_person(&self, path: &str) -> String {
        match &self.person {
            None => path.to_owned(),
            Some(p) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}person={}", p.to_hex())
            }
        }
    }

    /// The same client with another retry policy.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same client with another blob upload chunk size (clamped to
    /// 1 byte … 64 MiB; the relay refuses chunks over its `max_chunk`).
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes.clamp(1, MAX_CHUNK_SIZE);
        self
    }

    /// The relay's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The relay origin requests are signed for (the base URL's
    /// normalised origin).
    pub fn origin(&self) -> &RelayOrigin {
        &self.origin
    }

    /// The identity requests are signed as.
    pub fn identity(&self) -> &Arc<SecretIdentity> {
        &self.identity
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The blob upload chunk size, in bytes.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Seconds added to the local clock to match the relay's (learned from
    /// `stale_timestamp` answers; shared by clones).
    pub fn clock_offset(&self) -> i64 {
        self.clock_offset.load(Ordering::Relaxed)
    }

    /// Sets the clock offset (for example one persisted from an earlier
    /// session).
    pub fn set_clock_offset(&self, seconds: i64) {
        self.clock_offset.store(seconds, Ordering::Relaxed);
    }

    /// The current time in Unix seconds by the relay's clock, as far as
    /// this client knows it: use it for the time of new log entries, which
    /// the relay refuses outside its skew window.
    pub fn now(&self) -> u64 {
        platform::unix_now().saturating_add_signed(self.clock_offset())
    }

    // ----- identities ---------------------------------------------------

    /// Publishes the caller's identity document (`PUT /v1/identities`).
    /// Returns `true` if the relay did not have it before, `false` if it
    /// was already published.
    pub async fn publish_identity(&self) -> Result<bool> {
        let text = self.identity.public().to_text();
        let mut req = Req::new(
            Method::PUT,
            "/v1/identities".into(),
            "publishing the identity",
        )
        .json(&wire::PutIdentity { identity: &text })?;
        if let Some(invite) = &self.invite {
            req.headers.push((
                HeaderName::from_static("x-vault-invite"),
                (**invite).clone(),
            ));
        }
        let (status, body) = self
            .exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER))
            .await?
            .ok_body()?;
        let answer: wire::FingerprintAnswer = wire::parse_json(&body, "identity answer")?;
        let fp = Fingerprint::from_hex(&answer.fingerprint).map_err(|_| {
            ClientError::Protocol(format!(
                "identity answer: the fingerprint is not 64 hex digits: {}",
                wire::shorten(&answer.fingerprint)
            ))
        })?;
        if fp != self.identity.fingerprint() {
            return Err(ClientError::Protocol(format!(
                "the relay acknowledged publishing {fp}, not this identity ({})",
                self.identity.fingerprint()
            )));
        }
        Ok(status == StatusCode::CREATED)
    }

    /// Looks up a published identity (`GET /v1/identities/{fingerprint}`)
    /// and checks that the document has exactly the fingerprint asked for
    /// (so a relay cannot substitute a key). The directory is a convenience:
    /// pin the fingerprint you verified, not what a relay says.
    pub async fn lookup_identity(&self, fingerprint: &Fingerprint) -> Result<PublicIdentity> {
        let req = Req::new(
            Method::GET,
            format!("/v1/identities/{}", fingerprint.to_hex()),
            "looking up an identity",
        );
        let (_, body) = self
            .exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER))
            .await?
            .ok_body()?;
        let answer: wire::IdentityAnswer = wire::parse_json(&body, "identity lookup answer")?;
        let identity = PublicIdentity::from_text(&answer.identity)?;
        if identity.fingerprint() != *fingerprint {
            return Err(vault_core::Error::FingerprintMismatch {
                expected: fingerprint.to_string(),
                actual: identity.fingerprint(),
            }
            .into());
        }
        Ok(identity)
    }

    /// The device lists the relay's directory holds for `person`
    /// (`GET /v1/identities/{fingerprint}/devices`), oldest first, as
    /// served: verify them ([`crate::member_devices::fetch`] does). Empty
    /// if the person published none.
    pub async fn device_lists(&self, person: &Fingerprint) -> Result<Vec<DeviceList>> {
        let req = Req::new(
            Method::GET,
            format!("/v1/identities/{}/devices", person.to_hex()),
            "looking up a person's device list",
        );
        let (_, body) = self
            .exchange(&req, Mode::Buffer(MAX_DEVICE_LISTS_ANSWER))
            .await?
            .ok_body()?;
        let answer: wire::DeviceListsAnswer = wire::parse_json(&body, "device list answer")?;
        if answer.lists.len() > vault_core::MAX_LISTED_VERSIONS {
            return Err(vault_core::Error::InvalidInput(
                "the relay served more than 64 versions of a device list",
            )
            .into());
        }
        answer
            .lists
            .iter()
            .map(|l| Ok(DeviceList::from_bytes(&wire::unb64(l, "a device list")?)?))
            .collect()
    }

    /// Publishes `versions` of `person`'s device list, extending what the
    /// directory holds (`PUT /v1/identities/{fingerprint}/devices`), signed
    /// by this client's identity (the person's key file or one of its
    /// devices). A relay holding a newer version answers `409 stale_list`.
    pub async fn publish_device_lists(
        &self,
        person: &Fingerprint,
        versions: &[DeviceList],
    ) -> Result<()> {
        let req = Req::new(
            Method::PUT,
            format!("/v1/identities/{}/devices", person.to_hex()),
            "publishing your device list",
        )
        .json(&wire::DeviceListsBody {
            lists: versions.iter().map(|v| wire::b64(v.to_bytes())).collect(),
        })?;
        self.exchange(&req, Mode::Buffer(MAX_DEVICE_LISTS_ANSWER))
            .await?
            .ok_body()?;
        Ok(())
    }

    // ----- vaults and logs ----------------------------------------------

    /// Creates a vault on the relay from its genesis entry
    /// (`POST /v1/vaults`); succeeds too if exactly this genesis is already
    /// stored. Returns the relay's head. Use [`crate::sync::create_vault`]
    /// to also record the vault in the local store.
    pub async fn create_vault(&self, genesis: &LogEntry) -> Result<Head> {
        let req = Req::new(Method::POST, "/v1/vaults".into(), "creating a vault").json(
            &wire::CreateVault {
                genesis: wire::b64(genesis.to_bytes()),
            },
        )?;
        let (_, body) = self
            .exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER))
            .await?
            .ok_body()?;
        let answer: wire::VaultAnswer = wire::parse_json(&body, "vault creation answer")?;
        let vault = VaultId::from_hex(&answer.vault).map_err(|_| {
            ClientError::Protocol(format!(
                "vault creation answer: the vault id is not 32 hex digits: {}",
                wire::shorten(&answer.vault)
            ))
        })?;
        if vault != genesis.vault() {
            return Err(ClientError::Protocol(format!(
                "the relay created vault {vault}, not {}",
                genesis.vault()
            )));
        }
        answer.head.parse()
    }

    /// The relay's head of a vault (`GET /v1/vaults/{vault}/head`). A
    /// claim: [`crate::sync::pull`] checks it against the verified log.
    pub async fn head(&self, vault: &VaultId) -> Result<Head> {
        let req = Req::new(
            Method::GET,
            format!("/v1/vaults/{}/head", vault.to_hex()),
            "reading the vault head",
        );
        let (_, body) = self
            .exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER))
            .await?
            .ok_body()?;
        let answer: wire::HeadAnswer = wire::parse_json(&body, "head answer")?;
        answer.head.parse()
    }

    /// One page of a vault's log (`GET /v1/vaults/{vault}/log`): the
    /// relay's head and up to `limit` (1 to 1000) entries from sequence
    /// number `since`, each parsed strictly. The entries are *not*
    /// verified here: hand them to [`vault_core::store::accept_entries`]
    /// (as [`crate::sync::pull`] does).
    pub async fn fetch_log(
        &self,
        vault: &VaultId,
        since: u64,
        limit: u32,
    ) -> Result<(Head, Vec<LogEntry>)> {
        let limit = limit.clamp(1, MAX_LOG_PAGE);
        let req = Req::new(
            Method::GET,
            format!(
                "/v1/vaults/{}/log?since={since}&limit={limit}",
                vault.to_hex()
            ),
            "reading the vault log",
        );
        let (_, body) = self
            .exchange(&req, Mode::Buffer(MAX_LOG_ANSWER))
            .await?
            .ok_body()?;
        let answer: wire::LogAnswer = wire::parse_json(&body, "log answer")?;
        if answer.entries.len() > limit as usize {
            return Err(ClientError::Protocol(format!(
                "the relay sent {} log entries where at most {limit} were asked for",
                answer.entries.len()
            )));
        }
        answer.parse()
    }

    /// Appends entries (1 to 1024, consecutive, the first following `prev`)
    /// to a vault's log with compare-and-swap (`POST /v1/vaults/{vault}/log`).
    /// Returns the new head. If the log moved on since `prev`, fails with
    /// [`ClientError::HeadMoved`]: pull, rebuild and try again
    /// ([`crate::sync::push_with_retry`]). If the relay refuses an entry's
    /// time (`entry_time_out_of_range`), the clock offset is adjusted from
    /// its `server_time` before the error is returned, so entries rebuilt
    /// with [`RelayClient::now`] are accepted.
    pub async fn append(&self, vault: &VaultId, prev: Head, entries: &[LogEntry]) -> Result<Head> {
        self.post_entries(vault, prev, entries, "log", "appending to the vault log")
            .await
    }

    /// Pushes back to a relay that lost them (a restore, a failover)
    /// entries this member verified before, signed by their authors
    /// (`POST /v1/vaults/{vault}/repair`, decision 53): 1 to 1024,
    /// consecutive, the first following the relay's head `prev`. Checked
    /// by the relay as an append; compare-and-swap as
    /// [`RelayClient::append`]. Use [`crate::sync::repair`], which checks
    /// first that the relay's log is a prefix of this device's.
    pub async fn repair(&self, vault: &VaultId, prev: Head, entries: &[LogEntry]) -> Result<Head> {
        self.post_entries(vault, prev, entries, "repair", "repairing the vault log")
            .await
    }

    async fn post_entries(
        &self,
        vault: &VaultId,
        prev: Head,
        entries: &[LogEntry],
        endpoint: &str,
        doing: &'static str,
    ) -> Result<Head> {
        let last = match entries.last() {
            Some(last) if entries.len() <= MAX_APPEND_ENTRIES => last,
            _ => {
                return Err(vault_core::Error::InvalidInput(
                    "an append carries 1 to 1024 log entries",
                )
                .into())
            }
        };
        let req = Req::new(
            Method::POST,
            format!("/v1/vaults/{}/{endpoint}", vault.to_hex()),
            doing,
        )
        .json(&wire::Append {
            prev: prev.into(),
            entries: entries.iter().map(|e| wire::b64(e.to_bytes())).collect(),
        })?;
        match self.exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER)).await? {
            Answer::Refused(422, e) if e.code.as_deref() == Some("entry_time_out_of_range") => {
                // Learn the relay's clock, so entries rebuilt with
                // `now()` fall inside its window.
                if let Some(server_time) = e.server_time {
                    self.adjust_clock(server_time);
                }
                Err(e.into_error(422))
            }
            Answer::Refused(409, e) if e.code.as_deref() == Some("head_moved") => match e.head {
                Some(head) => Err(ClientError::HeadMoved { head }),
                None => Err(ClientError::Protocol(
                    "the relay refused the append with head_moved but sent no valid head".into(),
                )),
            },
            answer => {
                let (_, body) = answer.ok_body()?;
                let answer: wire::HeadAnswer = wire::parse_json(&body, "append answer")?;
                let head = answer.head.parse()?;
                let expected = Head::of_entry(last);
                if head != expected {
                    return Err(ClientError::Protocol(format!(
                        "the relay acknowledged the append with head {head:?}, not the last appended entry {expected:?}"
                    )));
                }
                Ok(head)
            }
        }
    }

    /// The caller's inbox (`GET /v1/inbox`): every vault where it has
    /// access, from the relay's index. Claims until verified: pull a vault
    /// (after checking its owner's fingerprint) before trusting anything.
    ///
    /// Reads the inbox page by page ([`RelayClient::inbox_listing`]); a
    /// listing longer than [`MAX_INBOX_PAGES`] pages is cut there (with a
    /// warning in the log) rather than failing.
    pub async fn inbox(&self) -> Result<Vec<InboxVault>> {
        let listing = self.inbox_listing().await?;
        if listing.truncated {
            tracing::warn!(
                listed = listing.vaults.len(),
                "the inbox has more vaults than this client lists; showing the first ones"
            );
        }
        Ok(listing.vaults)
    }

    /// The caller's inbox, following the relay's pages
    /// (`GET /v1/inbox?after=…`) up to [`MAX_INBOX_PAGES`]; beyond that it
    /// keeps what it got and says so in [`InboxListing::truncated`]. A
    /// relay whose cursor does not move forward is a protocol error.
    pub async fn inbox_listing(&self) -> Result<InboxListing> {
        self.inbox_view(InboxView::All).await
    }

    /// [`RelayClient::inbox_listing`] of one part of the inbox: accepted
    /// owners' vaults only, strangers' only, or both.
    pub async fn inbox_view(&self, view: InboxView) -> Result<InboxListing> {
        let mut vaults = Vec::new();
        let mut after: Option<VaultId> = None;
        let (mut held_back, mut not_listed) = (0, 0);
        for _ in 0..MAX_INBOX_PAGES {
            // `view=all` is the default, left out so that relays from
            // before views (which refuse unknown parameters) still answer.
            let mut params = Vec::new();
            if view != InboxView::All {
                params.push(format!("view={}", view.as_str()));
            }
            if let Some(a) = &after {
                params.push(format!("after={}", a.to_hex()));
            }
            let path = if params.is_empty() {
                "/v1/inbox".to_owned()
            } else {
                format!("/v1/inbox?{}", params.join("&"))
            };
            let path = self.for_person(&path);
            let req = Req::new(Method::GET, path, "reading the inbox");
            let (_, body) = self
                .exchange(&req, Mode::Buffer(MAX_INBOX_ANSWER))
                .await?
                .ok_body()
                .map_err(|e| self.person_refused(e))?;
            let answer: wire::InboxAnswer = wire::parse_json(&body, "inbox answer")?;
            (held_back, not_listed) = (answer.strangers_held_back, answer.strangers_not_listed);
            for raw in answer.vaults {
                vaults.push(wire::RawInboxVault::parse(raw)?);
            }
            match answer.next {
                None => {
                    return Ok(InboxListing {
                        vaults,
                        truncated: false,
                        strangers_held_back: held_back,
                        strangers_not_listed: not_listed,
                    })
                }
                Some(next) => {
                    let next = VaultId::from_hex(&next).map_err(|_| {
                        ClientError::Protocol("the relay's inbox cursor is not a vault id".into())
                    })?;
                    if after.is_some_and(|a| a.as_bytes() >= next.as_bytes()) {
                        return Err(ClientError::Protocol(
                            "the relay's inbox cursor did not move forward".into(),
                        ));
                    }
                    after = Some(next);
                }
            }
        }
        Ok(InboxListing {
            vaults,
            truncated: true,
            strangers_held_back: held_back,
            strangers_not_listed: not_listed,
        })
    }

    /// The owners the caller accepts shares from
    /// (`GET /v1/inbox/accepted`): its person's, with
    /// [`RelayClient::with_person`].
    pub async fn accepted_owners(&self) -> Result<AcceptedOwners> {
        let req = Req::new(
            Method::GET,
            self.for_person("/v1/inbox/accepted"),
            "reading your accepted owners",
        );
        let (_, body) = self
            .exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER))
            .await?
            .ok_body()
            .map_err(|e| self.person_refused(e))?;
        self.accepted_answer(&body)
    }

    /// An accepted list the relay answered, checked to be the list asked
    /// for: with a person, a relay that answers with another holder's (or
    /// names none: it predates decision 76) is refused.
    fn accepted_answer(&self, body: &[u8]) -> Result<AcceptedOwners> {
        let raw = wire::parse_json::<wire::RawAccepted>(body, "accepted owners")?;
        if let Some(person) = &self.person {
            if raw.holder.as_deref() != Some(person.to_hex().as_str()) {
                return Err(ClientError::PersonNotServed);
            }
        }
        raw.parse()
    }

    /// `e`, or [`ClientError::PersonNotServed`] when this client reads for
    /// a person and the relay refused the `person` parameter as unknown.
    fn person_refused(&self, e: ClientError) -> ClientError {
        match &e {
            ClientError::Relay {
                status: 400,
                message,
                ..
            } if self.person.is_some()
                && e.code() == "malformed_request"
                && message.contains("unknown field `person`") =>
            {
                ClientError::PersonNotServed
            }
            _ => e,
        }
    }

    /// Replaces the caller's accepted owners (`PUT /v1/inbox/accepted`),
    /// or its person's, with [`RelayClient::with_person`]. With a person,
    /// read the list with [`RelayClient::accepted_owners`] first, as
    /// [`crate::inbox`] does: a relay from before decision 76 would store
    /// the change as this device's own list, and only its answer (refused
    /// here as [`ClientError::PersonNotServed`]) would show it.
    /// `list.version` must be greater than the stored list's: a relay with
    /// a newer list answers `409 stale_version`
    /// ([`ClientError::Relay`]); read it again and retry
    /// ([`crate::inbox`] does).
    pub async fn set_accepted_owners(&self, list: &AcceptedOwners) -> Result<()> {
        let req = Req::new(
            Method::PUT,
            self.for_person("/v1/inbox/accepted"),
            "storing your accepted owners",
        )
        .json(&wire::RawAccepted {
            version: list.version,
            owners: list.owners.iter().map(|o| o.to_hex()).collect(),
            holder: None,
        })?;
        let (_, body) = self
            .exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER))
            .await?
            .ok_body()
            .map_err(|e| self.person_refused(e))?;
        self.accepted_answer(&body)?;
        Ok(())
    }

    // ----- the exchange -------------------------------------------------

    /// The URL of `path_and_query` on the relay; fails unless the request
    /// line will carry exactly `path_and_query` (which is what is signed).
    pub(crate) fn target(&self, path_and_query: &str) -> Result<Url> {
        let url = self
            .base
            .join(path_and_query)
            .map_err(|e| ClientError::Config(format!("bad request path {path_and_query}: {e}")))?;
        let mut on_the_wire = url.path().to_owned();
        if let Some(q) = url.query() {
            on_the_wire.push('?');
            on_the_wire.push_str(q);
        }
        if on_the_wire != path_and_query || url.origin() != self.base.origin() {
            return Err(ClientError::Config(format!(
                "the request path {path_and_query} would not be sent as signed"
            )));
        }
        Ok(url)
    }

    /// Where `req` goes, and its signature for this attempt (a new
    /// timestamp and nonce each time).
    fn sign(&self, req: &Req) -> Result<(Url, RequestAuth)> {
        let url = self.target(&req.path)?;
        let auth = RequestAuth::sign(
            &self.identity,
            req.method.as_str(),
            &req.path,
            &self.origin,
            self.now(),
            body_digest(req.body.bytes()),
        )?;
        Ok((url, auth))
    }

    /// `req` (which has no body) signed now, for a sender that cannot wait
    /// for an answer: a page being left sends it with `fetch`'s
    /// `keepalive`, which outlives the page. It is sent once, unretried,
    /// and must be sent within the relay's timestamp window.
    pub(crate) fn detached(&self, req: &Req) -> Result<DetachedRequest> {
        if !matches!(req.body, Body::Empty) || !req.headers.is_empty() {
            return Err(ClientError::Config(format!(
                "{} cannot be sent detached: only a request without a body can",
                req.what
            )));
        }
        let (url, auth) = self.sign(req)?;
        Ok(DetachedRequest {
            url: url.to_string(),
            method: req.method.as_str().to_owned(),
            headers: auth
                .headers()
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        })
    }

    /// Sends one attempt of `req`, signed now.
    async fn send_once(&self, req: &Req) -> Result<Response> {
        let (url, auth) = self.sign(req)?;
        let mut rb = self.http.request(req.method.clone(), url);
        for (name, value) in auth.headers() {
            rb = rb.header(name, value);
        }
        match &req.body {
            Body::Empty => {}
            Body::Json(b) => rb = rb.header(CONTENT_TYPE, JSON).body(b.clone()),
            Body::Octets(b) => rb = rb.header(CONTENT_TYPE, OCTETS).body(b.clone()),
        }
        for (name, value) in &req.headers {
            rb = rb.header(name.clone(), value.clone());
        }
        rb.send().await.map_err(ClientError::Transport)
    }

    /// Waits before retry `retry`.
    async fn backoff(&self, req: &Req, retry: u32, retry_after: Option<Duration>, why: &str) {
        let delay = self.retry.delay(retry, retry_after);
        tracing::debug!(
            what = req.what,
            retry,
            delay_ms = delay.as_millis() as u64,
            why,
            "retrying a relay request"
        );
        platform::sleep(delay).await;
    }

    /// Sends `req` until it gets a final answer: retries transient failures
    /// with backoff, and a `stale_timestamp` refusal once after adjusting
    /// the clock offset.
    pub(crate) async fn exchange(&self, req: &Req, mode: Mode) -> Result<Answer> {
        let attempts = self.retry.attempts();
        let mut attempt = 0u32;
        let mut clock_adjusted = false;
        loop {
            attempt = attempt.saturating_add(1);
            let last = attempt >= attempts;
            let resp = match self.send_once(req).await {
                Ok(r) => r,
                Err(ClientError::Transport(e)) if !last && is_transient_transport(&e) => {
                    self.backoff(req, attempt, None, "connection failed").await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = resp.status();
            if status.is_redirection() {
                let to = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(wire::shorten)
                    .unwrap_or_default();
                return Err(ClientError::Config(format!(
                    "the relay redirected {} to {to:?}; configure the final relay address (signed requests cannot follow redirects)",
                    req.what
                )));
            }
            if status.is_success() {
                if let Mode::Stream = mode {
                    return Ok(Answer::Stream(resp));
                }
            }
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let cap = match mode {
                Mode::Buffer(cap) if status.is_success() => cap,
                _ => MAX_ERROR_ANSWER,
            };
            let body = match read_capped(resp, cap, req.what).await {
                Ok(b) => b,
                Err(ClientError::Transport(e)) if !last && is_transient_transport(&e) => {
                    self.backoff(req, attempt, None, "connection dropped").await;
                    continue;
                }
                Err(ClientError::TooLarge { .. }) if !status.is_success() => Bytes::new(),
                Err(e) => return Err(e),
            };
            if status.is_success() {
                return Ok(Answer::Body(status, body));
            }
            let error = ErrorBody::parse(&body);
            if status == StatusCode::UNAUTHORIZED
                && error.code.as_deref() == Some("stale_timestamp")
                && !clock_adjusted
            {
                if let Some(server_time) = error.server_time {
                    self.adjust_clock(server_time);
                    clock_adjusted = true;
                    // The corrected retry does not use up an attempt.
                    attempt = attempt.saturating_sub(1);
                    continue;
                }
            }
            if !last && is_transient_status(status) && !self.retry.waits_longer(retry_after) {
                self.backoff(req, attempt, retry_after, status.as_str())
                    .await;
                continue;
            }
            return Ok(Answer::Refused(status.as_u16(), error));
        }
    }

    /// Sets the clock offset so that local time plus offset is the relay's
    /// `server_time`.
    fn adjust_clock(&self, server_time: u64) {
        let local = i128::from(platform::unix_now());
        let offset =
            (i128::from(server_time) - local).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        let offset = i64::try_from(offset).unwrap_or(0);
        // A relay is not a time authority: follow it only within a day of
        // the device clock, so a hostile relay cannot date our entries far
        // into the future (entry times must not decrease in a log, so that
        // would freeze every other writer of the vault).
        if offset.unsigned_abs() > MAX_CLOCK_OFFSET {
            tracing::warn!(
                offset,
                "the relay's clock is more than a day from this device's; not following it"
            );
            return;
        }
        tracing::info!(offset, "adjusting to the relay's clock");
        self.set_clock_offset(offset);
    }
}

/// The largest clock offset (seconds) the client accepts from a relay.
pub const MAX_CLOCK_OFFSET: u64 = 86_400;

/// The default HTTP client: no redirects (a redirected request's signature
/// would not match), connection and read timeouts on native targets.
fn default_http_client() -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder();
    #[cfg(not(target_arch = "wasm32"))]
    let builder = builder
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("vault-client/", env!("CARGO_PKG_VERSION")));
    builder
        .build()
        .map_err(|e| ClientError::Config(format!("could not set up the HTTP client: {e}")))
}

/// Parses and checks a relay base URL.
pub(crate) fn parse_base_url(base_url: &str) -> Result<Url> {
    let url = Url::parse(base_url.trim()).map_err(|e| {
        ClientError::Config(format!(
            "the relay address {base_url:?} is not a URL ({e}); expected for example https://relay.example"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Config(format!(
            "the relay address {base_url:?} must start with https:// (or http:// for a local relay)"
        )));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(ClientError::Config(format!(
            "the relay address {base_url:?} has no host"
        )));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::Config(format!(
            "the relay address {base_url:?} must not have a path, query or fragment: the relay API is served at the root (/v1/…)"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::Config(format!(
            "the relay address {base_url:?} must not carry a user name or password"
        )));
    }
    Ok(url)
}

/// Reads a whole answer body, refusing more than `cap` bytes.
pub(crate) async fn read_capped(resp: Response, cap: u64, what: &'static str) -> Result<Bytes> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(ClientError::TooLarge { what, limit: cap });
    }
    let mut out = Vec::new();
    let mut stream = std::pin::pin!(resp.bytes_stream());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ClientError::Transport)?;
        if (out.len() as u64).saturating_add(chunk.len() as u64) > cap {
            return Err(ClientError::TooLarge { what, limit: cap });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::request::{HEADER_CONTENT_SHA256, HEADER_IDENTITY, HEADER_RELAY};
    use vault_core::{IdentityInfo, Role};

    fn me() -> Arc<SecretIdentity> {
        let info = IdentityInfo {
            display_name: "Test Patient".into(),
            role: Role::Patient,
            registration: None,
            created_at: 1_700_000_000,
        };
        Arc::new(SecretIdentity::from_seed(&[3; 32], &info).unwrap())
    }

    /// A detached request carries exactly the signature the relay checks
    /// for its method, path and relay; a request with a body is refused.
    #[test]
    fn a_detached_request_is_signed_for_its_method_path_and_relay() {
        let client = RelayClient::new("http://127.0.0.1:8080", me()).unwrap();
        let path = format!("/v1/pairings/{}", "ab".repeat(32));
        let d = client
            .detached(&Req::new(Method::DELETE, path.clone(), "closing a pairing"))
            .unwrap();
        assert_eq!(d.url, format!("http://127.0.0.1:8080{path}"));
        assert_eq!(d.method, "DELETE");
        let header = |name: &str| d.headers.get(name).map(String::as_str);
        // The JSON a page hands to `fetch`: headers by name.
        let shown = serde_json::to_value(&d).unwrap();
        assert_eq!(shown["method"], "DELETE");
        assert_eq!(
            shown["headers"][HEADER_IDENTITY],
            client.identity().fingerprint().to_hex()
        );
        let auth = RequestAuth::from_headers(header).unwrap();
        let public = client.identity().public();
        auth.verify(public, "DELETE", &path, client.origin())
            .unwrap();
        assert!(auth.verify(public, "GET", &path, client.origin()).is_err());
        assert!(auth
            .verify(public, "DELETE", "/v1/inbox", client.origin())
            .is_err());
        let with_body =
            Req::new(Method::POST, path, "joining a pairing").json(&serde_json::json!({}));
        assert!(matches!(
            client.detached(&with_body.unwrap()),
            Err(ClientError::Config(_))
        ));
    }

    #[test]
    fn base_urls_are_checked() {
        for good in [
            "http://127.0.0.1:8080",
            "https://relay.example/",
            " https://relay.example:8443 ",
        ] {
            assert!(parse_base_url(good).is_ok(), "{good}");
        }
        for bad in [
            "relay.example",
            "ftp://relay.example",
            "https://relay.example/prefix",
            "https://relay.example/?x=1",
            "https://relay.example/#f",
            "https://user:pw@relay.example",
            "data:text/plain,hi",
            "",
        ] {
            assert!(
                matches!(parse_base_url(bad), Err(ClientError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_signed_target_is_the_request_line() {
        let c = RelayClient::new("http://127.0.0.1:9", me()).unwrap();
        let url = c.target("/v1/vaults/00/log?since=3&limit=10").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v1/vaults/00/log?since=3&limit=10"
        );
        // Paths the URL parser would rewrite are refused rather than signed
        // wrongly.
        for bad in ["/v1/a/../b", "/v1/a b", "//evil.example/v1", "v1/relative"] {
            assert!(c.target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_sign_the_request() {
        let me = me();
        let digest = body_digest(b"{}");
        let c = RelayClient::new("HTTPS://Relay.Example:443", me.clone()).unwrap();
        assert_eq!(c.origin().as_str(), "https://relay.example");
        let auth = RequestAuth::sign(&me, "POST", "/v1/vaults", c.origin(), 1_700_000_000, digest)
            .unwrap();
        let headers: std::collections::HashMap<_, _> = auth.headers().into_iter().collect();
        assert_eq!(headers[HEADER_IDENTITY], me.fingerprint().to_hex());
        assert_eq!(headers[HEADER_CONTENT_SHA256], hex::encode(digest));
        assert_eq!(headers[HEADER_RELAY], "https://relay.example");
        let parsed = RequestAuth::from_headers(|k| headers.get(k).map(String::as_str)).unwrap();
        parsed
            .verify(me.public(), "POST", "/v1/vaults", c.origin())
            .unwrap();
        for (url, origin) in [
            ("http://127.0.0.1:8787/", "http://127.0.0.1:8787"),
            ("http://[::1]:80", "http://[::1]"),
            ("https://bücher.example", "https://xn--bcher-kva.example"),
        ] {
            let c = RelayClient::new(url, me.clone()).unwrap();
            assert_eq!(c.origin().as_str(), origin, "{url}");
        }
        // Every header name is a valid HTTP header name.
        for (name, value) in auth.headers() {
            HeaderName::from_static(name);
            HeaderValue::from_str(&value).unwrap();
        }
    }

    #[test]
    fn clock_offset_follows_the_relay() {
        let c = RelayClient::new("http://127.0.0.1:9", me()).unwrap();
        let clone = c.clone();
        let local = platform::unix_now();
        c.adjust_clock(local + 3600);
        let off = clone.clock_offset();
        assert!((3599..=3601).contains(&off), "{off}");
        assert!(clone.now() >= local + 3599);
        // A relay claiming a time more than a day away is not followed.
        c.adjust_clock(0);
        assert!((3599..=3601).contains(&c.clock_offset()));
        c.adjust_clock(local + 3 * 86_400);
        assert!((3599..=3601).contains(&c.clock_offset()));
        c.adjust_clock(local - 600);
        assert!((-601..=-599).contains(&c.clock_offset()));
        c.set_clock_offset(i64::MIN);
        assert_eq!(c.now(), 0);
        c.set_clock_offset(i64::MAX);
        assert_eq!(c.now(), local.saturating_add_signed(i64::MAX));
    }

    #[test]
    fn chunk_size_is_clamped() {
        let c = RelayClient::new("http://127.0.0.1:9", me()).unwrap();
        assert_eq!(c.chunk_size(), DEFAULT_CHUNK_SIZE);
        assert_eq!(c.clone().with_chunk_size(0).chunk_size(), 1);
        assert_eq!(c.with_chunk_size(usize::MAX).chunk_size(), MAX_CHUNK_SIZE);
    }
}
