//! Entry points for the fuzz targets in `fuzz/` (not a stable API; hidden
//! from the documentation). Each function runs the relay's own parsing of
//! one kind of untrusted request input, after the body has been read and
//! its digest checked, and before any state is touched.

use axum::http::HeaderMap;
use vault_core::{LogEntry, PublicIdentity};

use crate::error::ApiResult;
use crate::routes::{b64, blobs, identities, vaults};
use crate::storage::Head;

/// The body of `POST /v1/vaults`: the genesis entry, parsed.
pub fn create_body(body: &[u8]) -> ApiResult<LogEntry> {
    let req: vaults::CreateRequest = crate::routes::parse_json_body(body)?;
    LogEntry::from_bytes(&b64(&req.genesis, "genesis")?)
        .map_err(|e| crate::error::ApiError::malformed(e.to_string()))
}

/// The body of `POST /v1/vaults/{vault}/log`: `prev` and the entries, parsed.
pub fn append_body(body: &[u8]) -> ApiResult<(Head, Vec<LogEntry>)> {
    let req: vaults::AppendRequest = crate::routes::parse_json_body(body)?;
    let prev = req.prev.to_head()?;
    let entries = req
        .entries
        .iter()
        .map(|e| {
            LogEntry::from_bytes(&b64(e, "an entry")?)
                .map_err(|e| crate::error::ApiError::malformed(e.to_string()))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok((prev, entries))
}

/// The body of `PUT /v1/identities`: the identity document, parsed.
pub fn publish_body(body: &[u8]) -> ApiResult<PublicIdentity> {
    let req: identities::PublishRequest = crate::routes::parse_json_body(body)?;
    identities::parse_identity(&req.identity)
}

/// The framed body of `POST /v1/vaults/{vault}/blobs`: `(hash, length)` of
/// each frame.
pub fn batch_frames(body: &[u8]) -> ApiResult<Vec<([u8; 32], usize)>> {
    let body = bytes::Bytes::copy_from_slice(body);
    Ok(blobs::parse_frames(&body, blobs::MAX_BATCH_BLOBS)?
        .into_iter()
        .map(|(h, b)| (h, b.len()))
        .collect())
}

/// The numeric upload headers (`upload-length`, `upload-offset`,
/// `content-length`) as the chunk upload route reads them.
pub fn upload_header(headers: &HeaderMap, name: &str) -> ApiResult<Option<u64>> {
    blobs::header_u64(headers, name)
}

/// A download's `range` header against a blob of `len` bytes: `(start,
/// count)`, or `None` when the relay ignores it.
pub fn range_header(value: &str, len: u64) -> Option<(u64, u64)> {
    blobs::parse_range(value, len).ok()
}
