//! The JSON shapes of the relay API (`docs/relay-api.md`) and their strict
//! conversion into typed values. Every value a relay sends is checked here
//! before the rest of the client sees it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use vault_core::{CollectionId, Fingerprint, LogEntry, Permission, RecordId, VaultId};

use crate::error::{ClientError, Result};

pub use crate::head::Head;
pub(crate) use crate::head::RawHead;

impl RawHead {
    pub fn parse(&self) -> Result<Head> {
        Ok(Head {
            seq: self.seq,
            hash: hex32(&self.hash, "head hash")?,
        })
    }
}

/// Decodes 64 hex digits.
pub(crate) fn hex32(s: &str, what: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| {
        ClientError::Protocol(format!("{what} is not 64 hex digits: {}", shorten(s)))
    })?;
    Ok(out)
}

/// The first characters of a relay-supplied string, for an error message.
pub(crate) fn shorten(s: &str) -> String {
    let short: String = s.chars().take(80).collect();
    crate::error::sanitize_text(&short)
}

/// Base64url without padding, as log entries travel.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding (`what` names it in the error).
pub(crate) fn unb64(s: &str, what: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| ClientError::Protocol(format!("{what} is not unpadded base64url")))
}

/// Parses one log entry as it travels (base64url, then vault-core's strict
/// parser).
pub(crate) fn parse_entry(s: &str) -> Result<LogEntry> {
    let bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| ClientError::Protocol("a log entry is not unpadded base64url".into()))?;
    Ok(LogEntry::from_bytes(&bytes)?)
}

/// Parses a JSON answer into `T`, mapping failures to
/// [`ClientError::Protocol`].
pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| ClientError::Protocol(format!("{what}: {}", shorten(&e.to_string()))))
}

// ----- request bodies ------------------------------------------------------

#[derive(Serialize)]
pub(crate) struct PutIdentity<'a> {
    pub identity: &'a str,
}

#[derive(Serialize)]
pub(crate) struct CreateVault {
    pub genesis: String,
}

#[derive(Serialize)]
pub(crate) struct Append {
    pub prev: RawHead,
    pub entries: Vec<String>,
}

// ----- answers -------------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct IdentityAnswer {
    pub identity: String,
}

#[derive(Deserialize)]
pub(crate) struct DeviceListsAnswer {
    pub lists: Vec<String>,
}

#[derive(Serialize)]
pub(crate) struct DeviceListsBody {
    pub lists: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct FingerprintAnswer {
    pub fingerprint: String,
}

#[derive(Deserialize)]
pub(crate) struct VaultAnswer {
    pub vault: String,
    pub head: RawHead,
}

#[derive(Deserialize)]
pub(crate) struct HeadAnswer {
    pub head: RawHead,
}

#[derive(Deserialize)]
pub(crate) struct LogAnswer {
    pub head: RawHead,
    pub entries: Vec<String>,
}

impl LogAnswer {
    /// The head and the entries, each parsed (not yet verified).
    pub fn parse(&self) -> Result<(Head, Vec<LogEntry>)> {
        let head = self.head.parse()?;
        let entries = self
            .entries
            .iter()
            .map(|e| parse_entry(e))
            .collect::<Result<Vec<_>>>()?;
        Ok((head, entries))
    }
}

#[derive(Deserialize)]
pub(crate) struct UploadAnswer {
    pub stored: bool,
    pub offset: u64,
}

/// Where a blob upload stands on the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    /// The whole blob is stored (and hashed to its address).
    pub stored: bool,
    /// How many bytes the relay holds.
    pub offset: u64,
}

impl From<UploadAnswer> for UploadStatus {
    fn from(a: UploadAnswer) -> Self {
        Self {
            stored: a.stored,
            offset: a.offset,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct InboxAnswer {
    pub vaults: Vec<RawInboxVault>,
    /// The cursor of the next page (absent from relays without pages).
    #[serde(default)]
    pub next: Option<String>,
    /// Strangers' vaults the relay's caps left out (absent from older
    /// relays).
    #[serde(default)]
    pub strangers_held_back: u64,
    /// Strangers' vaults `view=accepted` left out.
    #[serde(default)]
    pub strangers_not_listed: u64,
}

/// `GET` and `PUT /v1/inbox/accepted`.
#[derive(Deserialize, Serialize)]
pub(crate) struct RawAccepted {
    pub version: u64,
    pub owners: Vec<String>,
    /// Whose list it is (answers only; relays before decision 76 leave
    /// it out).
    #[serde(default, skip_serializing)]
    pub holder: Option<String>,
}

impl RawAccepted {
    pub fn parse(self) -> Result<AcceptedOwners> {
        if self.owners.len() > 1000 {
            return Err(ClientError::Protocol(
                "the relay's accepted list holds more than 1,000 owners".into(),
            ));
        }
        Ok(AcceptedOwners {
            version: self.version,
            owners: self
                .owners
                .iter()
                .map(|o| {
                    Fingerprint::from_hex(o).map_err(|_| {
                        ClientError::Protocol(format!(
                            "an accepted owner is not a 64-digit fingerprint: {}",
                            shorten(o)
                        ))
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

/// The owners a person accepts shares from, as the relay stores them
/// (`GET /v1/inbox/accepted`). Strangers' shares are capped in the inbox;
/// accepted owners' are listed in full.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcceptedOwners {
    /// Increases with every change (0: never set).
    pub version: u64,
    /// The accepted owners.
    pub owners: Vec<Fingerprint>,
}

#[derive(Deserialize)]
pub(crate) struct RawInboxVault {
    pub vault: String,
    pub owner: String,
    pub is_owner: bool,
    /// Absent from older relays, which listed every owner in full.
    #[serde(default = "yes")]
    pub accepted: bool,
    #[serde(default)]
    pub truncated: bool,
    pub head: RawHead,
    #[serde(default)]
    pub collections: Vec<RawInboxCollection>,
    #[serde(default)]
    pub records: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawInboxCollection {
    pub collection: String,
    pub epoch: u32,
    pub permission: String,
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// One vault of the caller's inbox ([`crate::RelayClient::inbox`]). This is
/// the relay's index, a convenience: everything in it is a claim until the
/// vault's log is pulled and verified (and its owner compared with a pinned
/// fingerprint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxVault {
    /// The vault.
    pub vault: VaultId,
    /// Its owner, as the relay claims.
    pub owner: Fingerprint,
    /// Whether the caller owns it.
    pub is_owner: bool,
    /// The relay's head.
    pub head: Head,
    /// Collections the caller holds a current grant for.
    pub collections: Vec<InboxCollection>,
    /// Records the caller holds a single-record grant for.
    pub records: Vec<RecordId>,
    /// Whether the owner is the caller or one it accepted; a stranger's
    /// vault is listed within the relay's caps.
    pub accepted: bool,
    /// Whether the relay cut `collections` or `records` at its cap for
    /// strangers (joining the vault reads its whole log either way).
    pub truncated: bool,
}

fn yes() -> bool {
    true
}

/// A collection grant in the inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxCollection {
    /// The collection.
    pub collection: CollectionId,
    /// The epoch the grant is for.
    pub epoch: u32,
    /// Read, or read and write.
    pub permission: Permission,
    /// When the grant expires (Unix seconds), if it does.
    pub expires_at: Option<u64>,
}

impl RawInboxVault {
    pub fn parse(self) -> Result<InboxVault> {
        let id = |s: &str, what: &str| {
            ClientError::Protocol(format!(
                "inbox {what} id is not 32 hex digits: {}",
                shorten(s)
            ))
        };
        Ok(InboxVault {
            vault: VaultId::from_hex(&self.vault).map_err(|_| id(&self.vault, "vault"))?,
            owner: Fingerprint::from_hex(&self.owner).map_err(|_| {
                ClientError::Protocol(format!(
                    "inbox owner is not a 64-digit fingerprint: {}",
                    shorten(&self.owner)
                ))
            })?,
            is_owner: self.is_owner,
            accepted: self.accepted,
            truncated: self.truncated,
            head: self.head.parse()?,
            collections: self
                .collections
                .into_iter()
                .map(|c| {
                    Ok(InboxCollection {
                        collection: CollectionId::from_hex(&c.collection)
                            .map_err(|_| id(&c.collection, "collection"))?,
                        epoch: c.epoch,
                        permission: Permission::from_name(&c.permission).ok_or_else(|| {
                            ClientError::Protocol(format!(
                                "inbox permission is not \"read\", \"read-write\", \"read-add\" or \"deposit\": {}",
                                shorten(&c.permission)
                            ))
                        })?,
                        expires_at: c.expires_at,
                    })
                })
                .collect::<Result<_>>()?,
            records: self
                .records
                .iter()
                .map(|r| RecordId::from_hex(r).map_err(|_| id(r, "record")))
                .collect::<Result<_>>()?,
        })
    }
}

// ----- ranges --------------------------------------------------------------

/// A parsed `content-range: bytes a-b/t` header (`t` may be `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ContentRange {
    pub start: u64,
    pub end_inclusive: u64,
    pub total: Option<u64>,
}

/// Parses `bytes a-b/t` strictly (decimal digits only, `a <= b`, `b < t`).
pub(crate) fn parse_content_range(v: &str) -> Option<ContentRange> {
    fn num(s: &str) -> Option<u64> {
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    }
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let start = num(a)?;
    let end_inclusive = num(b)?;
    let total = if total == "*" {
        None
    } else {
        Some(num(total)?)
    };
    if start > end_inclusive || total.is_some_and(|t| end_inclusive >= t) {
        return None;
    }
    Some(ContentRange {
        start,
        end_inclusive,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_strict() {
        let ok: RawHead =
            serde_json::from_str(&format!(r#"{{"seq": 3, "hash": "{}"}}"#, "ab".repeat(32)))
                .unwrap();
        assert_eq!(
            ok.parse().unwrap(),
            Head {
                seq: 3,
                hash: [0xab; 32]
            }
        );
        for bad in [
            r#"{"seq": 3, "hash": "abab"}"#.to_owned(),
            format!(r#"{{"seq": 3, "hash": "{}"}}"#, "zz".repeat(32)),
            format!(r#"{{"seq": -3, "hash": "{}"}}"#, "ab".repeat(32)),
            format!(r#"{{"seq": 3.5, "hash": "{}"}}"#, "ab".repeat(32)),
            format!(r#"{{"seq": "3", "hash": "{}"}}"#, "ab".repeat(32)),
            r#"{"seq": 3}"#.to_owned(),
        ] {
            let parsed = serde_json::from_str::<RawHead>(&bad)
                .map_err(|e| ClientError::Protocol(e.to_string()))
                .and_then(|h| h.parse());
            assert!(parsed.is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_must_be_canonical_base64url() {
        assert!(matches!(
            parse_entry("not base64!"),
            Err(ClientError::Protocol(_))
        ));
        // Padding is refused, as are standard-alphabet characters.
        assert!(matches!(parse_entry("AA=="), Err(ClientError::Protocol(_))));
        assert!(matches!(parse_entry("A+/A"), Err(ClientError::Protocol(_))));
        // Well-formed base64 of garbage is a vault-core parse error.
        assert!(matches!(parse_entry("AAAA"), Err(ClientError::Core(_))));
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 10-19/20"),
            Some(ContentRange {
                start: 10,
                end_inclusive: 19,
                total: Some(20)
            })
        );
        assert_eq!(
            parse_content_range("bytes 0-0/*"),
            Some(ContentRange {
                start: 0,
                end_inclusive: 0,
                total: None
            })
        );
        for bad in [
            "bytes 10-9/20",
            "bytes 10-20/20",
            "bytes -5/20",
            "bytes 1-2",
            "items 1-2/3",
            "bytes +1-2/3",
            "bytes 1-2/3/4",
            "bytes 99999999999999999999999-1/2",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn inbox_is_checked() {
        let good = serde_json::json!({
            "vault": "00".repeat(16), "owner": "11".repeat(32), "is_owner": false,
            "head": {"seq": 0, "hash": "22".repeat(32)},
            "collections": [{"collection": "33".repeat(16), "epoch": 2,
                             "permission": "read-write", "expires_at": null}],
            "records": ["44".repeat(16)]
        });
        let v: RawInboxVault = serde_json::from_value(good.clone()).unwrap();
        let v = v.parse().unwrap();
        assert_eq!(v.collections[0].permission, Permission::ReadWrite);
        assert_eq!(v.records.len(), 1);
        let mut bad = good;
        bad["collections"][0]["permission"] = "admin".into();
        let v: RawInboxVault = serde_json::from_value(bad).unwrap();
        assert!(matches!(v.parse(), Err(ClientError::Protocol(_))));
    }
}
