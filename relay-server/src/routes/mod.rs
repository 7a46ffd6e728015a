//! The HTTP API (`docs/relay-api.md`): one module per resource, and the
//! helpers they share for reading untrusted input.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vault_core::request::body_digest;
use vault_core::{Checkpoint, VaultId};

use crate::error::{ApiError, ApiResult};
use crate::storage::Head;

pub mod blobs;
pub mod identities;
pub mod inbox;
pub mod links;
pub mod pairings;
pub mod vaults;

/// A log head on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeadJson {
    /// Sequence number of the last entry.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
}

impl From<Head> for HeadJson {
    fn from(h: Head) -> Self {
        Self {
            seq: h.seq,
            hash: hex::encode(h.hash),
        }
    }
}

impl From<Checkpoint> for HeadJson {
    fn from(c: Checkpoint) -> Self {
        Self {
            seq: c.seq,
            hash: hex::encode(c.head),
        }
    }
}

impl HeadJson {
    /// Parses the hash.
    pub fn to_head(&self) -> ApiResult<Head> {
        Ok(Head {
            seq: self.seq,
            hash: parse_hash(&self.hash, "head hash")?,
        })
    }
}

/// Parses 64 hex digits.
pub fn parse_hash(s: &str, what: &str) -> ApiResult<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64
        || s.bytes().any(|b| b.is_ascii_uppercase())
        || hex::decode_to_slice(s, &mut out).is_err()
    {
        return Err(ApiError::malformed(format!(
            "{what} must be 64 lowercase hex digits"
        )));
    }
    Ok(out)
}

/// A request's query, parsed, or `400 malformed_request` saying why (an
/// unknown parameter included, for query types that deny them).
pub fn query<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<T> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::malformed(format!("bad query: {e}")))?;
    Ok(q)
}

/// Parses a vault id from the path.
pub fn parse_vault(s: &str) -> ApiResult<VaultId> {
    VaultId::from_hex(s).map_err(|_| ApiError::malformed("the vault id must be 32 hex digits"))
}

/// Reads a JSON body: checks the content type, the size limit and the
/// signed digest, then parses. Nothing is acted on before all pass.
pub async fn read_json<T: DeserializeOwned>(
    signed_digest: &[u8; 32],
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> ApiResult<T> {
    let bytes = read_body(signed_digest, headers, body, limit, "application/json").await?;
    parse_json_body(&bytes)
}

/// Parses a JSON body already read and checked by [`read_body`].
pub(crate) fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    // serde would read a struct from an array too: the API takes objects
    // only (checked on the bytes, so duplicate fields are still refused).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_json("the body must be a JSON object"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_json(format!("the body is not the expected JSON: {e}")))
}

/// Reads a whole body of content type `content_type`: checks the type, the
/// size limit and the signed digest. Nothing is acted on before all pass.
pub async fn read_body(
    signed_digest: &[u8; 32],
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    content_type: &'static str,
) -> ApiResult<bytes::Bytes> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(content_type) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send this body with content-type: {content_type}"),
        ));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::too_large(format!("the body is larger than {limit} bytes"))
            } else {
                ApiError::malformed("the request body could not be read")
            }
        })?
        .to_bytes();
    if body_digest(&bytes) != *signed_digest {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "body_digest_mismatch",
            "the body does not match the signed x-vault-content-sha256",
        ));
    }
    Ok(bytes)
}

/// Decodes base64url (no padding).
pub fn b64(s: &str, what: &str) -> ApiResult<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| ApiError::bad_json(format!("{what} is not base64url without padding")))
}

/// Encodes base64url (no padding).
pub fn to_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
