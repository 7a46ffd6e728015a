//! The client's error type, and parsing of the relay's error bodies.
//!
//! Everything a relay sends is untrusted: error bodies are parsed
//! defensively, and the strings they carry are truncated and stripped of
//! control characters before they reach a terminal or a log.

use serde::Deserialize;

use crate::head::{Head, RawHead};

/// An error from the sync client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The relay refused the request with a JSON error body
    /// (`docs/relay-api.md`, "Errors").
    #[error("the relay refused the request ({status} {code}): {message}{}", detail.as_deref().map(|d| format!(" (detail: {d})")).unwrap_or_default())]
    Relay {
        /// The HTTP status.
        status: u16,
        /// The relay's stable error code (`forbidden`, `vault_not_found`, …),
        /// or `http_<status>` when the answer carried no JSON error body
        /// (for example from a proxy in front of the relay).
        code: String,
        /// The relay's message for people (truncated, control characters
        /// removed).
        message: String,
        /// The extra `detail` field (vault-core's error code for
        /// `invalid_entry`), if any.
        detail: Option<String>,
    },

    /// Compare-and-swap failed: the vault log moved on since the head this
    /// client appended to. Pull, rebuild the entries on the new head and
    /// append again ([`crate::sync::push_with_retry`] does this).
    #[error("the vault log moved on (the relay's head is entry {}): pull the new entries, rebuild on them and append again", head.seq)]
    HeadMoved {
        /// The relay's head at the time of the refusal (a claim, verified
        /// only by pulling the log).
        head: Head,
    },

    /// The relay could not be reached, or the connection failed (after the
    /// retries of the [`crate::RetryPolicy`]).
    #[error("could not talk to the relay: {0}; check the relay address and the network connection, then try again")]
    Transport(#[source] reqwest::Error),

    /// vault-core refused something: a log entry, identity or blob from the
    /// relay failed verification, or the local store failed.
    #[error(transparent)]
    Core(#[from] vault_core::Error),

    /// The relay answered something that does not follow the relay API
    /// (malformed JSON, base64 or hex, inconsistent values). The relay is
    /// faulty or hostile, or is not a vault relay.
    #[error("the relay's answer is malformed: {0}; the relay is faulty, misconfigured or not a vault relay")]
    Protocol(String),

    /// An answer was larger than this client accepts.
    #[error("the relay's answer to {what} exceeds the {limit}-byte limit of this client; the relay is faulty or hostile")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// The limit, in bytes.
        limit: u64,
    },

    /// The client was configured wrongly (for example a malformed relay
    /// address).
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// Reading or writing a local stream failed.
    #[error("local I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// What was asked for needs data this device does not hold (for
    /// example a record's ciphertext that was never downloaded).
    #[error("{0} is not on this device; connect to the relay and try again")]
    NotOnDevice(String),

    /// A collection's key was rotated (someone's access was revoked) while
    /// records were being added to it. What was added before stays; the
    /// rest was not sealed under the old key.
    #[error("a collection's key was rotated (someone's access was revoked) while records were being added; run the same command again: what was already added is kept and skipped")]
    CollectionRotated,

    /// A collection being written into must be re-keyed first: a device
    /// list change (a device removed, or the first one listed) left its key
    /// behind (decision 74). Re-keying it failed, or the list changed while
    /// the write was under way. Nothing more was written under that key.
    #[error("a collection being written into must be re-keyed first, because a device list changed ({why}); nothing more was written. Run the same command again: it re-keys first. If it keeps failing, run `vault sync` (or refresh the web app) and read what it reports")]
    NotRekeyed {
        /// What happened: the rotation that could not be built, or the
        /// removal met mid-write.
        why: String,
    },

    /// A SMART Health Link, its manifest or one of its files was refused
    /// (malformed, another algorithm, a wrong tag, too large, a location
    /// on another host).
    #[error(transparent)]
    Link(#[from] vault_shl::ShlError),

    /// A SMART Health Link's passcode is missing or wrong.
    #[error("{}", match remaining {
        Some(n) => format!("the passcode is wrong; {n} attempts remain before the link is disabled for good"),
        None => "this link needs a passcode: ask the person who shared it".into(),
    })]
    LinkPasscode {
        /// Attempts left, as the link's host said.
        remaining: Option<u64>,
    },

    /// A record cannot go into a SMART Health Link: it is not FHIR JSON,
    /// or too large to have been kept for sharing.
    #[error("{0}; a link shares FHIR records only")]
    NotShareable(String),

    /// A SMART Health Link no longer answers.
    #[error("this SMART Health Link is no longer active ({0}); ask the person who shared it for a new one")]
    LinkNotActive(String),

    /// Pairing a device did not complete (the code expired, the other side
    /// answered with something it had not committed to, or the identity
    /// at the other end is not what pairing needs). Nothing was added.
    #[error("pairing failed: {0}")]
    Pairing(&'static str),
    /// This client reads the inbox for its person
    /// ([`crate::RelayClient::with_person`]) and the relay cannot: it
    /// predates decision 76 (it refused the `person` parameter, or
    /// answered with someone else's accepted list). A change made through
    /// [`crate::inbox`] reads the list first, so it stops here before
    /// anything is sent.
    #[error("this relay does not read a device's inbox for its person (it predates decision 76): update the relay; until then the device reads its own inbox without its person (with `vault`: delete the `person` lines from the device's config)")]
    PersonNotServed,
}

impl ClientError {
    /// A stable, machine-readable code: the relay's code for
    /// [`ClientError::Relay`], vault-core's for [`ClientError::Core`], and
    /// `head_moved`, `transport`, `protocol`, `too_large`, `config`, `io`,
    /// `not_on_device`, `rotated`, `invalid_link`, `wrong_passcode`,
    /// `link_not_found`, `not_shareable`, `pairing_failed` or
    /// `person_not_served` otherwise.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Relay { code, .. } => code,
            ClientError::HeadMoved { .. } => "head_moved",
            ClientError::Transport(_) => "transport",
            ClientError::Core(e) => e.code(),
            ClientError::Protocol(_) => "protocol",
            ClientError::TooLarge { .. } => "too_large",
            ClientError::Config(_) => "config",
            ClientError::Io(_) => "io",
            ClientError::NotOnDevice(_) => "not_on_device",
            ClientError::CollectionRotated => "rotated",
            ClientError::NotRekeyed { .. } => "not_rekeyed",
            ClientError::Link(_) => "invalid_link",
            ClientError::LinkPasscode { .. } => "wrong_passcode",
            ClientError::LinkNotActive(_) => "link_not_found",
            ClientError::NotShareable(_) => "not_shareable",
            ClientError::Pairing(_) => "pairing_failed",
            ClientError::PersonNotServed => "person_not_served",
        }
    }

    /// The HTTP status, for [`ClientError::Relay`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Relay { status, .. } => Some(*status),
            ClientError::HeadMoved { .. } => Some(409),
            _ => None,
        }
    }
}

/// Shorthand for results in vault-client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The longest relay error code kept.
const MAX_CODE_LEN: usize = 64;
/// The longest relay error message (or detail) kept, in characters.
const MAX_MESSAGE_CHARS: usize = 512;

/// A relay error body, parsed leniently: every field is optional, because a
/// proxy or a faulty relay may send anything.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    /// `error.code`, sanitised.
    pub code: Option<String>,
    /// `error.message`, sanitised.
    pub message: Option<String>,
    /// Extra `detail` (for `invalid_entry`).
    pub detail: Option<String>,
    /// Extra `head` (for `head_moved`), if well formed.
    pub head: Option<Head>,
    /// Extra `offset` (for `upload_offset_mismatch`).
    pub offset: Option<u64>,
    /// Extra `server_time` (for `stale_timestamp`).
    pub server_time: Option<u64>,
}

#[derive(Deserialize)]
struct RawErrorBody {
    #[serde(default)]
    error: Option<RawError>,
    #[serde(default)]
    head: Option<serde_json::Value>,
    #[serde(default)]
    offset: Option<serde_json::Value>,
    #[serde(default)]
    server_time: Option<serde_json::Value>,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<serde_json::Value>,
}

impl ErrorBody {
    /// Parses an error body; anything that is not the documented JSON gives
    /// an empty [`ErrorBody`] (never an error, never a panic).
    pub fn parse(body: &[u8]) -> Self {
        let Ok(raw) = serde_json::from_slice::<RawErrorBody>(body) else {
            return Self::default();
        };
        let text = |v: Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        };
        let (code, message) = match raw.error {
            Some(e) => (text(e.code), text(e.message)),
            None => (None, None),
        };
        Self {
            code: code.and_then(|c| sanitize_code(&c)),
            message: message.map(|m| sanitize_text(&m)),
            detail: text(raw.detail).map(|d| sanitize_text(&d)),
            head: raw
                .head
                .and_then(|h| serde_json::from_value::<RawHead>(h).ok())
                .and_then(|h| h.decode()),
            offset: raw.offset.and_then(|v| v.as_u64()),
            server_time: raw.server_time.and_then(|v| v.as_u64()),
        }
    }

    /// The error code, or `http_<status>` when the body had none.
    pub fn code_or(&self, status: u16) -> String {
        self.code
            .clone()
            .unwrap_or_else(|| format!("http_{status}"))
    }

    /// The [`ClientError::Relay`] for this body.
    pub fn into_error(self, status: u16) -> ClientError {
        let code = self.code_or(status);
        let message = self.message.unwrap_or_else(|| {
            format!("the relay answered HTTP {status} without a vault error body")
        });
        ClientError::Relay {
            status,
            code,
            message,
            detail: self.detail,
        }
    }
}

/// Keeps a relay error code only if it looks like one (`[a-z0-9_]`, short).
fn sanitize_code(code: &str) -> Option<String> {
    (!code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
    .then(|| code.to_owned())
}

/// Truncates relay-supplied text and replaces control characters (which
/// could rewrite a terminal) with spaces.
pub(crate) fn sanitize_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_MESSAGE_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_body_parses() {
        let body = br#"{"error":{"code":"head_moved","message":"the vault log has moved on"},
            "head":{"seq":7,"hash":"0101010101010101010101010101010101010101010101010101010101010101"}}"#;
        let e = ErrorBody::parse(body);
        assert_eq!(e.code.as_deref(), Some("head_moved"));
        assert_eq!(e.message.as_deref(), Some("the vault log has moved on"));
        assert_eq!(
            e.head,
            Some(Head {
                seq: 7,
                hash: [1; 32]
            })
        );
        let e = ErrorBody::parse(
            br#"{"error":{"code":"stale_timestamp","message":"m"},"server_time":1700000000}"#,
        );
        assert_eq!(e.server_time, Some(1_700_000_000));
        let e = ErrorBody::parse(
            br#"{"error":{"code":"upload_offset_mismatch","message":"m"},"offset":8388608}"#,
        );
        assert_eq!(e.offset, Some(8_388_608));
        let e = ErrorBody::parse(
            br#"{"error":{"code":"invalid_entry","message":"m"},"detail":"bad_signature"}"#,
        );
        assert_eq!(e.detail.as_deref(), Some("bad_signature"));
    }

    #[test]
    fn hostile_or_malformed_bodies_never_panic() {
        let deep = "[".repeat(100_000);
        let long_code = format!(r#"{{"error":{{"code":"{}"}}}}"#, "a".repeat(10_000));
        let bodies: Vec<&[u8]> = vec![
            b"",
            b"<html>502 Bad Gateway</html>",
            b"null",
            b"[]",
            b"{}",
            b"{\"error\":null}",
            b"{\"error\":\"oops\"}",
            b"{\"error\":{\"code\":5,\"message\":[1,2]}}",
            b"{\"error\":{\"code\":\"Head-Moved\"}}",
            b"{\"head\":{\"seq\":-1,\"hash\":\"zz\"}}",
            b"{\"head\":{\"seq\":1,\"hash\":\"0101\"}}",
            b"{\"offset\":-5,\"server_time\":1e300}",
            b"{\"offset\":18446744073709551616}",
            b"\xff\xfe\x00",
            deep.as_bytes(),
            long_code.as_bytes(),
        ];
        for b in bodies {
            let e = ErrorBody::parse(b);
            assert!(e.head.is_none());
            assert!(e.offset.is_none());
            assert!(e.server_time.is_none());
            assert!(e.code.is_none(), "{:?}", e.code);
            let err = e.into_error(502);
            assert_eq!(err.code(), "http_502");
            assert!(err.to_string().contains("502"));
        }
    }

    #[test]
    fn relay_text_is_sanitised() {
        let msg = format!("evil\u{1b}[2J\r\n{}", "x".repeat(2000));
        let body = serde_json::json!({"error": {"code": "forbidden", "message": msg}}).to_string();
        let e = ErrorBody::parse(body.as_bytes());
        let m = e.message.unwrap_or_default();
        assert!(!m.chars().any(char::is_control));
        assert!(m.chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert!(m.ends_with('…'));
        assert!(m.starts_with("evil [2J  x"));
    }

    #[test]
    fn codes_are_stable() {
        let e =
            ErrorBody::parse(br#"{"error":{"code":"forbidden","message":"no"}}"#).into_error(403);
        assert_eq!(e.code(), "forbidden");
        assert_eq!(e.status(), Some(403));
        assert!(e.to_string().contains("forbidden"));
        let e = ClientError::Core(vault_core::Error::CiphertextMismatch);
        assert_eq!(e.code(), "ciphertext_mismatch");
    }
}
