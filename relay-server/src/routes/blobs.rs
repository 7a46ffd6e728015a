//! Ciphertext blobs: resumable chunked upload, content-addressed, streamed
//! in and out without buffering whole bodies. The rules are in
//! [`crate::domain::blobs`]; these handlers parse headers and bodies, call
//! it and render (ranges are HTTP's, so they are read here).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::TryStreamExt;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::domain::blobs::{BatchRead, BlobBody, Blobs, ChunkAnswer, ChunkUpload};
use crate::error::{ApiError, ApiResult};
use crate::routes::{parse_hash, parse_vault, read_json};
use crate::state::AppState;

pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> ApiResult<Option<u64>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::malformed(format!("the {name} header must be a decimal number"))
            }),
    }
}

/// `PUT /v1/vaults/{vault}/blobs/{hash}`: one chunk of an upload.
pub async fn put(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((vault, hash)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let vault = parse_vault(&vault)?;
    let hash = parse_hash(&hash, "the blob address")?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.eq_ignore_ascii_case("application/octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send blob bytes with content-type: application/octet-stream",
        ));
    }
    let total = header_u64(&headers, "upload-length")?.ok_or_else(|| {
        ApiError::malformed("the upload-length header (the blob's total size) is required")
    })?;
    let offset = header_u64(&headers, "upload-offset")?.unwrap_or(0);
    let declared_len = header_u64(&headers, "content-length")?;
    let metrics = app.metrics.clone();
    let stream = body
        .into_data_stream()
        .map_ok(move |b| {
            metrics.blob_bytes_in.inc_by(b.len() as u64);
            b
        })
        .map_err(std::io::Error::other);
    let chunk = ChunkUpload {
        offset,
        total,
        declared_len,
        digest: caller.content_sha256,
    };
    let answer = Blobs::new(app)
        .put_chunk(vault, hash, caller.fingerprint(), chunk, Box::pin(stream))
        .await?;
    let (status, stored, offset) = match answer {
        ChunkAnswer::AlreadyStored { len } => (StatusCode::OK, true, len),
        ChunkAnswer::Partial { offset } => (StatusCode::ACCEPTED, false, offset),
        ChunkAnswer::Complete { len } => (StatusCode::CREATED, true, len),
    };
    Ok((status, Json(json!({ "stored": stored, "offset": offset }))).into_response())
}

/// Frame header of a batch upload: the blob's address and its length.
const FRAME_HEADER: usize = 32 + 4;
/// Most blobs in one batch upload (the body limit bounds their bytes).
pub const MAX_BATCH_BLOBS: usize = 1024;

/// Splits a batch body into `(hash, bytes)` frames: each frame is the
/// blob's address (32 bytes: its BLAKE3 or SHA-256), its length (u32,
/// big-endian) and its bytes.
pub(crate) fn parse_frames(
    body: &bytes::Bytes,
    max: usize,
) -> ApiResult<Vec<([u8; 32], bytes::Bytes)>> {
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        let header = body
            .get(at..at + FRAME_HEADER)
            .ok_or_else(|| ApiError::malformed("a blob frame is cut off in its header"))?;
        let (hash, len) = header.split_at(32);
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| ApiError::malformed("a blob frame header is malformed"))?;
        let len = u32::from_be_bytes(
            len.try_into()
                .map_err(|_| ApiError::malformed("a blob frame header is malformed"))?,
        ) as usize;
        let start = at + FRAME_HEADER;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= body.len())
            .ok_or_else(|| ApiError::malformed("a blob frame is cut off in its bytes"))?;
        frames.push((hash, body.slice(start..end)));
        if frames.len() > max {
            return Err(ApiError::too_large(format!(
                "a batch carries at most {max} blobs"
            )));
        }
        at = end;
    }
    if frames.is_empty() {
        return Err(ApiError::malformed("the batch carries no blob"));
    }
    Ok(frames)
}

/// `POST /v1/vaults/{vault}/blobs`: several complete small blobs in one
/// request (framed; see `docs/relay-api.md`). Every blob must hash to its
/// address or nothing is stored; blobs the vault already has are skipped;
/// the rest are stored durably before the answer.
pub async fn put_batch(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(vault): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let vault = parse_vault(&vault)?;
    let body = crate::routes::read_body(
        &caller.content_sha256,
        &headers,
        body,
        app.config.max_json,
        "application/octet-stream",
    )
    .await?;
    let frames = parse_frames(&body, MAX_BATCH_BLOBS)?;
    let answer = Blobs::new(app)
        .put_batch(vault, caller.fingerprint(), frames)
        .await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "stored": answer.stored, "present": answer.present })),
    )
        .into_response())
}

/// Most blobs one batch read may ask for.
pub const MAX_BATCH_READS: usize = 1024;
/// A batch read answer's frame header: address, status, length.
const READ_FRAME_HEADER: usize = 32 + 1 + 4;

/// What a batch read asks for.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchReadRequest {
    /// The blobs' addresses (lowercase hex), answered in this order.
    blobs: Vec<String>,
}

/// The status byte of a batch read's frame.
fn read_status(read: &BatchRead) -> u8 {
    match read {
        BatchRead::Bytes(_) => 0,
        BatchRead::NotFound => 1,
        BatchRead::NotReadable => 2,
        BatchRead::FetchAlone => 3,
    }
}

/// `POST /v1/vaults/{vault}/blobs/read`: several small blobs in one answer
/// (see `docs/relay-api.md`). The body is `{"blobs": [address, …]}`; the
/// answer is one frame per address, in order: the address (32 bytes), a
/// status byte, the length (u32, big-endian) and, for status 0, the bytes.
/// Each address counts against the signer's request rate as a download
/// of its own would.
pub async fn read_batch(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(vault): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let vault = parse_vault(&vault)?;
    let req: BatchReadRequest =
        read_json(&caller.content_sha256, &headers, body, app.config.max_json).await?;
    if req.blobs.is_empty() {
        return Err(ApiError::bad_json("name at least one blob in \"blobs\""));
    }
    if req.blobs.len() > MAX_BATCH_READS {
        return Err(ApiError::too_large(format!(
            "a batch read names at most {MAX_BATCH_READS} blobs"
        )));
    }
    let hashes = req
        .blobs
        .iter()
        .map(|h| parse_hash(h, "a blob address"))
        .collect::<ApiResult<Vec<_>>>()?;
    // The request itself was counted when it was authenticated.
    app.auth
        .take_more(&caller.fingerprint(), hashes.len().saturating_sub(1))?;
    let reads = Blobs::new(app.clone())
        .read_batch(vault, &caller.fingerprint(), &hashes, app.config.max_json)
        .await?;
    // The answer is the frames' headers and the blobs' own bytes, sent
    // without copying them into one buffer.
    let mut parts: Vec<bytes::Bytes> = Vec::with_capacity(reads.len() * 2);
    let mut len = 0u64;
    for (hash, read) in hashes.iter().zip(reads) {
        let status = read_status(&read);
        let bytes = match read {
            BatchRead::Bytes(b) => b,
            _ => bytes::Bytes::new(),
        };
        let mut header = Vec::with_capacity(READ_FRAME_HEADER);
        header.extend_from_slice(hash);
        header.push(status);
        // Bytes sent are at most INLINE_BLOB long: their length fits a u32.
        header.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        len += (READ_FRAME_HEADER + bytes.len()) as u64;
        parts.push(header.into());
        if !bytes.is_empty() {
            parts.push(bytes);
        }
    }
    let body = Body::from_stream(futures_util::stream::iter(
        parts.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(resp)
}

/// `GET /v1/vaults/{vault}/blobs/{hash}/upload`.
pub async fn upload_status(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((vault, hash)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let vault = parse_vault(&vault)?;
    let hash = parse_hash(&hash, "the blob address")?;
    let status = Blobs::new(app)
        .upload_status(vault, hash, &caller.fingerprint())
        .await?;
    Ok(Json(
        json!({ "stored": status.stored, "offset": status.offset }),
    ))
}

/// Parses `bytes=a-` or `bytes=a-b` against a length.
pub(crate) fn parse_range(v: &str, len: u64) -> Result<(u64, u64), ()> {
    let spec = v.strip_prefix("bytes=").ok_or(())?;
    let (a, b) = spec.split_once('-').ok_or(())?;
    let start: u64 = a.parse().map_err(|_| ())?;
    let end: u64 = if b.is_empty() {
        len.checked_sub(1).ok_or(())?
    } else {
        b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
    };
    if start >= len || end < start {
        return Err(());
    }
    Ok((start, end - start + 1))
}

/// `GET /v1/vaults/{vault}/blobs/{hash}`, with optional `range`.
pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((vault, hash)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let vault = parse_vault(&vault)?;
    let hash = parse_hash(&hash, "the blob address")?;
    let blobs = Blobs::new(app);
    let download = blobs
        .authorize_download(vault, hash, &caller.fingerprint())
        .await?;
    let total = download.len();
    let (start, len, status) = match headers.get(header::RANGE) {
        None => (0, total, StatusCode::OK),
        Some(v) => {
            let parsed = v
                .to_str()
                .map_err(|_| ())
                .and_then(|s| parse_range(s, total));
            match parsed {
                Ok((s, l)) => (s, l, StatusCode::PARTIAL_CONTENT),
                Err(()) => {
                    return Err(ApiError::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "range_not_satisfiable",
                        format!("the range must be bytes=a- or bytes=a-b within {total} bytes"),
                    ))
                }
            }
        }
    };
    let body = match blobs.read(&download, start, len).await? {
        BlobBody::Bytes(bytes) => Body::from(bytes),
        BlobBody::Stream(reader) => Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            reader,
            256 * 1024,
        )),
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) =
            HeaderValue::from_str(&format!("bytes {}-{}/{}", start, start + len - 1, total))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Ok((0, 10)));
        assert_eq!(parse_range("bytes=4-", 10), Ok((4, 6)));
        assert_eq!(parse_range("bytes=4-5", 10), Ok((4, 2)));
        assert_eq!(parse_range("bytes=4-500", 10), Ok((4, 6)));
        assert!(parse_range("bytes=10-", 10).is_err());
        assert!(parse_range("bytes=5-4", 10).is_err());
        assert!(parse_range("bytes=-5", 10).is_err());
        assert!(parse_range("items=0-", 10).is_err());
        assert!(parse_range("bytes=0-", 0).is_err());
    }
}
