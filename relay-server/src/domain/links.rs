//! SMART Health Links at the relay (decision 49): the owner creates,
//! lists and revokes links and reads their access record; anyone holding
//! a link's URL asks for its manifest and files. The relay stores only the
//! files' JWE ciphertext, the SHA-256 of each link id and a slow hash
//! (scrypt) of each passcode; it never sees a link's key.
//!
//! Rules:
//! - A link id is 32 random bytes (base64url in the URL); the relay keeps
//!   and looks up only its SHA-256, compared in constant time. A malformed,
//!   unknown, expired, revoked or disabled link answers 404, the same way.
//! - A wrong passcode answers 401 with `remainingAttempts`. Attempts are
//!   counted over the link's lifetime: each request with a passcode first
//!   reserves an attempt atomically in storage (counted as failed), and
//!   only a right passcode gives it back; at the limit the link is
//!   disabled (404). Parallel requests therefore never try more passcodes
//!   than the limit.
//! - Every manifest request that reaches an active link (and every direct
//!   file request of a `U` link) is recorded for the owner: the relay's
//!   time, the `recipient` string the requester sent, and whether it was
//!   served or refused for a wrong passcode.
//! - Files larger than the requester's `embeddedLengthMax` (or than
//!   [`DEFAULT_EMBED_MAX`] when it sends none) are given as a `location`:
//!   a URL on the relay carrying a fresh 256-bit ticket (kept by hash)
//!   that works for [`TICKET_SECONDS`] while the link is active.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use vault_core::Fingerprint;
use zeroize::Zeroizing;

use crate::domain::Failure;
use crate::state::AppState;
use crate::storage::links::{
    AccessEvent, AccessOutcome, Attempt, CreateLinkOutcome, LinkFile, LinkHash, NewLink,
    StoredLink, Ticket,
};

/// Files a link may hold.
pub const MAX_FILES: usize = 16;
/// Links an owner may have that are not revoked.
pub const MAX_LINKS: usize = 100;
/// Wrong passcodes allowed over a link's lifetime unless the owner asks
/// for fewer (or more, up to [`MAX_ATTEMPTS_LIMIT`]).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// The most wrong passcodes an owner may allow.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Passcode length, in characters.
pub const PASSCODE_CHARS: std::ops::RangeInclusive<usize> = 4..=128;
/// Files up to this many bytes of JWE are embedded when the requester
/// sends no `embeddedLengthMax`.
pub const DEFAULT_EMBED_MAX: u64 = 4 << 20;
/// How long a file `location` works (the specification allows at most an
/// hour).
pub const TICKET_SECONDS: u64 = 15 * 60;
/// The longest expiry accepted: ten years.
pub const MAX_LIFETIME: u64 = 10 * 366 * 86_400;
/// The longest `recipient` kept (longer ones are cut).
pub const MAX_RECIPIENT_CHARS: usize = vault_shl::manifest::MAX_RECIPIENT_CHARS;

/// scrypt work factor of passcode hashes: 2^15 × 8 × 128 bytes = 32 MiB,
/// tens of milliseconds.
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// Passcode hashes computed at once (each takes 32 MiB and a core).
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Why a link request was refused. Messages never carry ids, keys or
/// passcodes.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No active link answers to this URL (unknown, malformed, expired,
    /// revoked, or disabled by wrong passcodes).
    #[error("no active SMART Health Link at this address: it may have expired or been revoked; ask its sharer for a new one")]
    NotFound,
    /// The passcode is wrong or missing.
    #[error("the passcode is wrong or missing; {remaining} attempts remain before this link is disabled")]
    WrongPasscode {
        /// Attempts left.
        remaining: u32,
    },
    /// The request breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The owner's quota would be exceeded.
    #[error("the link's files would exceed your storage quota; revoke old links or share less")]
    QuotaExceeded,
    /// Too many links not revoked.
    #[error(
        "you already have {0} links that are not revoked; revoke some first (vault link revoke)"
    )]
    TooMany(usize),
    /// The owner has no such link.
    #[error("you have no link with this handle (see vault link list)")]
    NoSuchHandle,
    /// The relay failed.
    #[error(transparent)]
    Failure(#[from] Failure),
}

fn storage(context: &'static str) -> impl FnOnce(crate::storage::StorageError) -> LinkError {
    move |e| LinkError::Failure(Failure::storage(context, e))
}

/// SHA-256 of a link id.
pub fn hash_id(id: &[u8; 32]) -> LinkHash {
    vault_core::request::body_digest(id)
}

/// Parses a link id from a URL (43 base64url characters, 32 bytes) and
/// returns its hash; anything else is [`LinkError::NotFound`].
pub fn parse_id(s: &str) -> Result<LinkHash, LinkError> {
    use base64::Engine;
    if s.len() != 43 {
        return Err(LinkError::NotFound);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| LinkError::NotFound)?;
    let id: [u8; 32] = bytes.try_into().map_err(|_| LinkError::NotFound)?;
    Ok(hash_id(&id))
}

/// A link of `hash` active at `now`, compared in constant time with the
/// hash looked up.
async fn active_link(app: &AppState, hash: &LinkHash, now: u64) -> Result<StoredLink, LinkError> {
    let link = app
        .meta
        .link(*hash)
        .await
        .map_err(|e| Failure::internal("reading a link", e))?
        .ok_or(LinkError::NotFound)?;
    if !bool::from(link.hash.ct_eq(hash)) || !link.active_at(now) {
        return Err(LinkError::NotFound);
    }
    Ok(link)
}

/// What an owner asks for.
pub struct CreateLink {
    /// The files (content type, JWE).
    pub files: Vec<LinkFile>,
    /// Expiry, Unix seconds.
    pub expires_at: Option<u64>,
    /// The passcode (flag `P`).
    pub passcode: Option<Zeroizing<String>>,
    /// Wrong passcodes allowed.
    pub max_attempts: Option<u32>,
    /// Flag `L`.
    pub long_term: bool,
    /// Flag `U`.
    pub direct: bool,
}

/// A created link.
pub struct Created {
    /// The id, base64url (the secret part of the manifest URL).
    pub id: String,
    /// SHA-256 of the id, the owner's handle.
    pub handle: LinkHash,
    /// The payload's `flag` (letters in alphabetical order).
    pub flag: Option<String>,
}

/// The payload's flags of a stored link.
pub fn flag_of(l: &StoredLink) -> Option<String> {
    vault_shl::Flags {
        long_term: l.long_term,
        passcode: l.passcode.is_some(),
        direct: l.direct,
    }
    .encode()
    .ok()
    .flatten()
}

fn hash_passcode(passcode: &str, salt: &[u8; 16]) -> Result<[u8; 32], Failure> {
    let params = scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, 32)
        .map_err(|e| Failure::internal("scrypt parameters", e))?;
    let mut out = [0u8; 32];
    scrypt::scrypt(passcode.as_bytes(), salt, &params, &mut out)
        .map_err(|e| Failure::internal("hashing a passcode", e))?;
    Ok(out)
}

/// A passcode's verifier: log N, r, p, a 16-byte salt, the 32-byte hash.
async fn make_verifier(passcode: Zeroizing<String>) -> Result<Vec<u8>, Failure> {
    let random = vault_shl::random_32().map_err(|e| Failure::internal("random salt", e))?;
    let mut salt = [0u8; 16];
    salt.copy_from_slice(random.get(..16).unwrap_or(&[0; 16]));
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| Failure::internal("passcode hashing", e))?;
    let hash = tokio::task::spawn_blocking(move || hash_passcode(&passcode, &salt))
        .await
        .map_err(|e| Failure::internal("passcode hashing", e))??;
    let mut v = vec![SCRYPT_LOG_N];
    v.extend_from_slice(&SCRYPT_R.to_be_bytes());
    v.extend_from_slice(&SCRYPT_P.to_be_bytes());
    v.extend_from_slice(&salt);
    v.extend_from_slice(&hash);
    Ok(v)
}

/// Whether `passcode` matches `verifier` (constant-time comparison).
async fn verify(passcode: Zeroizing<String>, verifier: Vec<u8>) -> Result<bool, Failure> {
    let bad = || Failure::internal("a stored passcode hash", "does not parse");
    if verifier.len() != 1 + 4 + 4 + 16 + 32 {
        return Err(bad());
    }
    let log_n = *verifier.first().ok_or_else(bad)?;
    let r = u32::from_be_bytes(
        verifier
            .get(1..5)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?,
    );
    let p = u32::from_be_bytes(
        verifier
            .get(5..9)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?,
    );
    let salt: [u8; 16] = verifier
        .get(9..25)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(bad)?;
    let expected: [u8; 32] = verifier
        .get(25..57)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(bad)?;
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| Failure::internal("passcode hashing", e))?;
    tokio::task::spawn_blocking(move || {
        let params = scrypt::Params::new(log_n, r, p, 32)
            .map_err(|e| Failure::internal("stored scrypt parameters", e))?;
        let mut out = Zeroizing::new([0u8; 32]);
        scrypt::scrypt(passcode.as_bytes(), &salt, &params, out.as_mut())
            .map_err(|e| Failure::internal("hashing a passcode", e))?;
        Ok(bool::from(out.ct_eq(&expected)))
    })
    .await
    .map_err(|e| Failure::internal("passcode hashing", e))?
}

/// Creates a link for `owner` (see the module documentation for the
/// rules checked).
pub async fn create(
    app: &AppState,
    owner: Fingerprint,
    req: CreateLink,
) -> Result<Created, LinkError> {
    let now = app.now();
    let invalid = |m: &str| Err(LinkError::Invalid(m.into()));
    if req.files.is_empty() || req.files.len() > MAX_FILES {
        return invalid("a link holds 1 to 16 files");
    }
    let limits = vault_shl::JweLimits {
        max_jwe: usize::try_from(app.config.max_json).unwrap_or(usize::MAX),
        max_plaintext: 0,
    };
    for (i, f) in req.files.iter().enumerate() {
        if !vault_shl::is_content_type(&f.content_type) {
            return Err(LinkError::Invalid(format!(
                "file {i}: the content type must be one of {}",
                vault_shl::CONTENT_TYPES.join(", ")
            )));
        }
        let header = vault_shl::jwe::inspect(&f.jwe, &limits)
            .map_err(|e| LinkError::Invalid(format!("file {i}: {e}")))?;
        if header.cty.as_deref() != Some(f.content_type.as_str()) {
            return Err(LinkError::Invalid(format!(
                "file {i}: the JWE's cty header must equal its content type"
            )));
        }
    }
    if let Some(exp) = req.expires_at {
        if exp <= now {
            return invalid("the expiry is in the past");
        }
        if exp - now > MAX_LIFETIME {
            return invalid("the expiry is more than ten years away");
        }
    }
    if req.direct && (req.passcode.is_some() || req.files.len() != 1) {
        return invalid("a direct-file link (flag U) has exactly one file and no passcode");
    }
    let max_attempts = req.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
        return invalid("max_attempts must be 1 to 100");
    }
    let passcode = match req.passcode {
        Some(p) => {
            if !PASSCODE_CHARS.contains(&p.chars().count()) {
                return invalid("a passcode has 4 to 128 characters");
            }
            Some(make_verifier(p).await?)
        }
        None => None,
    };
    let id = vault_shl::random_32().map_err(|e| Failure::internal("random link id", e))?;
    let hash = hash_id(&id);
    let link = NewLink {
        hash,
        owner,
        created_at: now,
        expires_at: req.expires_at,
        long_term: req.long_term,
        direct: req.direct,
        passcode,
        max_attempts,
        files: req.files,
    };
    let flag = vault_shl::Flags {
        long_term: link.long_term,
        passcode: link.passcode.is_some(),
        direct: link.direct,
    }
    .encode()
    .map_err(|e| LinkError::Invalid(e.to_string()))?;
    match app
        .meta
        .create_link(link, app.config.quota, MAX_LINKS)
        .await
        .map_err(storage("storing a link"))?
    {
        CreateLinkOutcome::Created => {}
        CreateLinkOutcome::Quota => return Err(LinkError::QuotaExceeded),
        CreateLinkOutcome::TooMany(n) => return Err(LinkError::TooMany(n)),
        CreateLinkOutcome::Exists => {
            return Err(Failure::internal("storing a link", "a random id collided").into())
        }
    }
    use base64::Engine;
    Ok(Created {
        id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id),
        handle: hash,
        flag,
    })
}

/// The owner's links, newest first.
pub async fn list(app: &AppState, owner: Fingerprint) -> Result<Vec<StoredLink>, LinkError> {
    app.meta
        .links_of(owner)
        .await
        .map_err(|e| Failure::internal("listing links", e).into())
}

/// Revokes the owner's link `handle`.
pub async fn revoke(app: &AppState, owner: Fingerprint, handle: LinkHash) -> Result<(), LinkError> {
    if app
        .meta
        .revoke_link(owner, handle, app.now())
        .await
        .map_err(storage("revoking a link"))?
    {
        Ok(())
    } else {
        Err(LinkError::NoSuchHandle)
    }
}

/// The access record of the owner's link `handle`, oldest first.
pub async fn access_log(
    app: &AppState,
    owner: Fingerprint,
    handle: LinkHash,
) -> Result<Vec<AccessEvent>, LinkError> {
    app.meta
        .access_log(owner, handle)
        .await
        .map_err(|e| Failure::internal("reading an access record", e))?
        .ok_or(LinkError::NoSuchHandle)
}

/// A manifest request, parsed.
pub struct ManifestAsk {
    /// Who asks.
    pub recipient: String,
    /// The passcode, if any.
    pub passcode: Option<Zeroizing<String>>,
    /// The longest embedded JWE wanted.
    pub embedded_length_max: Option<u64>,
}

/// One manifest entry: a file embedded, or where to fetch it.
pub enum Served {
    /// The JWE.
    Embedded(String),
    /// A ticket (base64url) for the file route.
    Location(String),
}

/// Cuts a recipient to [`MAX_RECIPIENT_CHARS`].
fn cut(recipient: &str) -> String {
    recipient.chars().take(MAX_RECIPIENT_CHARS).collect()
}

/// Answers a manifest request for link `hash`: the files, embedded or as
/// tickets, in order, with their content types.
pub async fn manifest(
    app: &Arc<AppState>,
    hash: LinkHash,
    ask: ManifestAsk,
) -> Result<Vec<(String, Served)>, LinkError> {
    let now = app.now();
    let link = active_link(app, &hash, now).await?;
    let mut refund = false;
    if let Some(verifier) = link.passcode.clone() {
        let Some(passcode) = ask.passcode else {
            return Err(LinkError::WrongPasscode {
                remaining: link.max_attempts.saturating_sub(link.failed_attempts),
            });
        };
        let remaining = match app
            .meta
            .reserve_attempt(hash, now)
            .await
            .map_err(storage("counting a passcode attempt"))?
        {
            Attempt::Inactive => return Err(LinkError::NotFound),
            Attempt::Reserved { remaining } => remaining,
        };
        if !verify(passcode, verifier).await? {
            let event = AccessEvent {
                at: now,
                recipient: cut(&ask.recipient),
                outcome: AccessOutcome::WrongPasscode,
            };
            app.meta
                .record_access(hash, event, false, Vec::new())
                .await
                .map_err(storage("recording an access"))?;
            return Err(LinkError::WrongPasscode { remaining });
        }
        refund = true;
    }
    let files = app
        .meta
        .link_files(hash)
        .await
        .map_err(|e| Failure::internal("reading a link's files", e))?;
    let embed_max = ask.embedded_length_max.unwrap_or(DEFAULT_EMBED_MAX);
    let mut served = Vec::with_capacity(files.len());
    let mut tickets = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        if (f.jwe.len() as u64) <= embed_max {
            served.push((f.content_type, Served::Embedded(f.jwe)));
        } else {
            let t = vault_shl::random_32().map_err(|e| Failure::internal("random ticket", e))?;
            tickets.push(Ticket {
                hash: vault_core::request::body_digest(&t),
                file: u32::try_from(i).unwrap_or(u32::MAX),
                expires_at: now.saturating_add(TICKET_SECONDS),
            });
            use base64::Engine;
            served.push((
                f.content_type,
                Served::Location(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)),
            ));
        }
    }
    let event = AccessEvent {
        at: now,
        recipient: cut(&ask.recipient),
        outcome: AccessOutcome::Manifest,
    };
    app.meta
        .record_access(hash, event, refund, tickets)
        .await
        .map_err(storage("recording an access"))?;
    Ok(served)
}

/// Answers a direct file request (flag `U`) for link `hash`.
pub async fn direct_file(
    app: &AppState,
    hash: LinkHash,
    recipient: &str,
) -> Result<LinkFile, LinkError> {
    let now = app.now();
    let link = active_link(app, &hash, now).await?;
    if !link.direct || link.passcode.is_some() {
        return Err(LinkError::NotFound);
    }
    let file = app
        .meta
        .link_files(hash)
        .await
        .map_err(|e| Failure::internal("reading a link's files", e))?
        .into_iter()
        .next()
        .ok_or(LinkError::NotFound)?;
    let event = AccessEvent {
        at: now,
        recipient: cut(recipient),
        outcome: AccessOutcome::File,
    };
    app.meta
        .record_access(hash, event, false, Vec::new())
        .await
        .map_err(storage("recording an access"))?;
    Ok(file)
}

/// The file of a ticket from a manifest, while the ticket and its link
/// are active.
pub async fn ticket_file(app: &AppState, ticket: &str) -> Result<LinkFile, LinkError> {
    use base64::Engine;
    let now = app.now();
    let t: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(ticket)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(LinkError::NotFound)?;
    let (hash, idx) = app
        .meta
        .ticket(vault_core::request::body_digest(&t), now)
        .await
        .map_err(|e| Failure::internal("reading a ticket", e))?
        .ok_or(LinkError::NotFound)?;
    active_link(app, &hash, now).await?;
    app.meta
        .link_files(hash)
        .await
        .map_err(|e| Failure::internal("reading a link's files", e))?
        .into_iter()
        .nth(usize::try_from(idx).unwrap_or(usize::MAX))
        .ok_or(LinkError::NotFound)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use crate::domain::testing::Relay;
    use vault_shl::{Compression, LinkKey};

    fn jwe(key: &LinkKey, text: &str) -> String {
        vault_shl::jwe::encrypt(
            key,
            vault_shl::FHIR_JSON,
            text.as_bytes(),
            Compression::None,
        )
        .unwrap()
    }

    fn ask(passcode: Option<&str>) -> ManifestAsk {
        ManifestAsk {
            recipient: "Dr Example, ED".into(),
            passcode: passcode.map(|p| Zeroizing::new(p.to_string())),
            embedded_length_max: None,
        }
    }

    fn id_hash(id: &str) -> LinkHash {
        parse_id(id).unwrap()
    }

    async fn make(r: &Relay, passcode: Option<&str>, expires_at: Option<u64>) -> (String, LinkKey) {
        let key = LinkKey::generate().unwrap();
        let created = create(
            &r.app,
            Fingerprint::from_bytes([1; 32]),
            CreateLink {
                files: vec![LinkFile {
                    content_type: vault_shl::FHIR_JSON.into(),
                    jwe: jwe(&key, r#"{"resourceType":"Bundle"}"#),
                }],
                expires_at,
                passcode: passcode.map(|p| Zeroizing::new(p.into())),
                max_attempts: Some(5),
                long_term: false,
                direct: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(created.handle, id_hash(&created.id));
        (created.id, key)
    }

    #[tokio::test]
    async fn expiry_is_enforced_by_the_relay_clock() {
        let r = Relay::with(|_| {});
        let (id, key) = make(&r, None, Some(r.now + 60)).await;
        let files = manifest(&r.app, id_hash(&id), ask(None)).await.unwrap();
        let Served::Embedded(j) = &files[0].1 else {
            panic!("embedded")
        };
        let d = vault_shl::jwe::decrypt(&key, j, &vault_shl::JweLimits::default()).unwrap();
        assert_eq!(d.plaintext, br#"{"resourceType":"Bundle"}"#);
        r.clock.set(r.now + 60);
        assert!(matches!(
            manifest(&r.app, id_hash(&id), ask(None)).await,
            Err(LinkError::NotFound)
        ));
        // Refused at creation: an expiry not in the future.
        let past = create(
            &r.app,
            Fingerprint::from_bytes([1; 32]),
            CreateLink {
                files: vec![LinkFile {
                    content_type: vault_shl::FHIR_JSON.into(),
                    jwe: jwe(&key, "{}"),
                }],
                expires_at: Some(r.now),
                passcode: None,
                max_attempts: None,
                long_term: false,
                direct: false,
            },
        )
        .await;
        assert!(matches!(past, Err(LinkError::Invalid(_))));
    }

    #[tokio::test]
    async fn brute_force_stops_at_the_limit_and_the_right_passcode_is_not_counted() {
        let r = Relay::with(|_| {});
        let (id, _) = make(&r, Some("correct horse"), None).await;
        let h = id_hash(&id);
        // The right passcode, twice: nothing counted.
        for _ in 0..2 {
            manifest(&r.app, h, ask(Some("correct horse")))
                .await
                .unwrap();
        }
        // No passcode: 401, not counted.
        assert!(matches!(
            manifest(&r.app, h, ask(None)).await,
            Err(LinkError::WrongPasscode { remaining: 5 })
        ));
        for remaining in (0..5).rev() {
            match manifest(&r.app, h, ask(Some("guess"))).await {
                Err(LinkError::WrongPasscode { remaining: n }) => assert_eq!(n, remaining),
                _ => panic!("expected 401"),
            }
        }
        // Disabled: even the right passcode gets 404 now.
        assert!(matches!(
            manifest(&r.app, h, ask(Some("correct horse"))).await,
            Err(LinkError::NotFound)
        ));
        let log = access_log(&r.app, Fingerprint::from_bytes([1; 32]), h)
            .await
            .unwrap();
        let outcomes: Vec<&str> = log.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(
            outcomes,
            [
                "manifest",
                "manifest",
                "wrong_passcode",
                "wrong_passcode",
                "wrong_passcode",
                "wrong_passcode",
                "wrong_passcode"
            ]
        );
        assert!(log.iter().all(|e| e.recipient == "Dr Example, ED"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_guesses_never_exceed_the_limit() {
        let r = Relay::with(|_| {});
        let (id, _) = make(&r, Some("1234"), None).await;
        let h = id_hash(&id);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let app = r.app.clone();
            tasks.push(tokio::spawn(async move {
                manifest(&app, h, ask(Some(&format!("wrong{i}")))).await
            }));
        }
        let mut wrong = 0;
        let mut gone = 0;
        for t in tasks {
            match t.await.unwrap() {
                Err(LinkError::WrongPasscode { .. }) => wrong += 1,
                Err(LinkError::NotFound) => gone += 1,
                _ => panic!("a wrong passcode was served"),
            }
        }
        assert_eq!(wrong, 5, "exactly max_attempts guesses were evaluated");
        assert_eq!(gone, 15);
        let stored = r.app.meta.link(h).await.unwrap().unwrap();
        assert_eq!(stored.failed_attempts, 5);
    }

    #[tokio::test]
    async fn guessed_ids_tickets_and_revocation() {
        let r = Relay::with(|_| {});
        let (id, _) = make(&r, None, None).await;
        // Guessed or malformed ids: 404, nothing recorded.
        let guess = vault_shl::new_link_id().unwrap();
        for bad in [
            guess.as_str(),
            "short",
            &id[..42],
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert!(matches!(
                parse_id(bad).map(|_| ()).or(Err(LinkError::NotFound)),
                Ok(()) | Err(LinkError::NotFound)
            ));
            if let Ok(h) = parse_id(bad) {
                assert!(matches!(
                    manifest(&r.app, h, ask(None)).await,
                    Err(LinkError::NotFound)
                ));
            }
        }
        // A location ticket: works until TICKET_SECONDS, and only while
        // the link is active.
        let h = id_hash(&id);
        let mut small = ask(None);
        small.embedded_length_max = Some(0);
        let files = manifest(&r.app, h, small).await.unwrap();
        let Served::Location(t) = &files[0].1 else {
            panic!("location")
        };
        assert!(ticket_file(&r.app, t).await.is_ok());
        assert!(matches!(
            ticket_file(&r.app, &guess).await,
            Err(LinkError::NotFound)
        ));
        r.clock.set(r.now + TICKET_SECONDS);
        assert!(matches!(
            ticket_file(&r.app, t).await,
            Err(LinkError::NotFound)
        ));
        r.clock.set(r.now);
        let owner = Fingerprint::from_bytes([1; 32]);
        assert!(matches!(
            revoke(&r.app, Fingerprint::from_bytes([2; 32]), h).await,
            Err(LinkError::NoSuchHandle)
        ));
        revoke(&r.app, owner, h).await.unwrap();
        assert!(matches!(
            ticket_file(&r.app, t).await,
            Err(LinkError::NotFound)
        ));
        assert!(matches!(
            manifest(&r.app, h, ask(None)).await,
            Err(LinkError::NotFound)
        ));
        assert_eq!(
            list(&r.app, owner).await.unwrap()[0].revoked_at,
            Some(r.now)
        );
    }

    #[tokio::test]
    async fn creation_checks_files_and_flags() {
        let r = Relay::with(|_| {});
        let key = LinkKey::generate().unwrap();
        let owner = Fingerprint::from_bytes([1; 32]);
        let base = || CreateLink {
            files: vec![LinkFile {
                content_type: vault_shl::FHIR_JSON.into(),
                jwe: jwe(&key, "{}"),
            }],
            expires_at: None,
            passcode: None,
            max_attempts: None,
            long_term: false,
            direct: false,
        };
        let cases: Vec<(&str, CreateLink)> = vec![
            (
                "no files",
                CreateLink {
                    files: vec![],
                    ..base()
                },
            ),
            (
                "cty differs",
                CreateLink {
                    files: vec![LinkFile {
                        content_type: vault_shl::SMART_HEALTH_CARD.into(),
                        jwe: jwe(&key, "{}"),
                    }],
                    ..base()
                },
            ),
            (
                "unknown type",
                CreateLink {
                    files: vec![LinkFile {
                        content_type: "text/html".into(),
                        jwe: jwe(&key, "{}"),
                    }],
                    ..base()
                },
            ),
            (
                "not a JWE",
                CreateLink {
                    files: vec![LinkFile {
                        content_type: vault_shl::FHIR_JSON.into(),
                        jwe: "plain text".into(),
                    }],
                    ..base()
                },
            ),
            (
                "U with P",
                CreateLink {
                    direct: true,
                    passcode: Some(Zeroizing::new("12345".into())),
                    ..base()
                },
            ),
            (
                "short passcode",
                CreateLink {
                    passcode: Some(Zeroizing::new("123".into())),
                    ..base()
                },
            ),
            (
                "zero attempts",
                CreateLink {
                    max_attempts: Some(0),
                    ..base()
                },
            ),
        ];
        for (what, c) in cases {
            assert!(
                matches!(create(&r.app, owner, c).await, Err(LinkError::Invalid(_))),
                "{what}"
            );
        }
        assert!(list(&r.app, owner).await.unwrap().is_empty());
        let direct = create(
            &r.app,
            owner,
            CreateLink {
                direct: true,
                long_term: true,
                ..base()
            },
        )
        .await
        .unwrap();
        assert_eq!(direct.flag.as_deref(), Some("LU"));
        let f = direct_file(&r.app, id_hash(&direct.id), "Dr U")
            .await
            .unwrap();
        assert_eq!(f.content_type, vault_shl::FHIR_JSON);
    }
}
