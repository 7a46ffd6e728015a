//! Ciphertext blobs: resumable chunked upload, content-addressed, streamed
//! in and out without buffering whole bodies.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use vault_core::VaultId;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::routes::vaults::quota_exceeded;
use crate::routes::{parse_hash, parse_vault};
use crate::state::AppState;
use crate::storage::{AddBlobOutcome, BlobInfo, Chunk, ChunkError, ChunkOutcome, UploadKey};

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

/// A blob's record in a vault, if it is stored there.
async fn blob_record(
    app: &AppState,
    vault: VaultId,
    hash: [u8; 32],
) -> ApiResult<Option<BlobInfo>> {
    app.meta
        .blob(vault, hash)
        .await
        .map_err(|e| ApiError::internal("reading a blob record", e))
}

fn blob_not_found() -> ApiError {
    ApiError::not_found(
        "blob_not_found",
        "no blob with this hash is stored in this vault",
    )
}

async fn writer_access(app: &AppState, vault: VaultId, caller: &Caller) -> ApiResult<()> {
    let access = app.member_access(vault, &caller.fingerprint()).await?;
    if !access.may_write() {
        return Err(ApiError::forbidden(
            "you have read-only access to this vault; ask the owner for write access",
        ));
    }
    Ok(())
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
    if total > app.config.max_blob {
        return Err(ApiError::too_large(format!(
            "blobs are limited to {} bytes on this relay",
            app.config.max_blob
        )));
    }
    if let Some(len) = header_u64(&headers, "content-length")? {
        if len > app.config.max_chunk || offset.saturating_add(len) > total {
            return Err(ApiError::too_large(format!(
                "a chunk may be at most {} bytes and must not run past upload-length",
                app.config.max_chunk
            )));
        }
    }
    writer_access(&app, vault, &caller).await?;
    let me = caller.fingerprint();
    if let Some(b) = blob_record(&app, vault, hash).await? {
        return Ok((
            StatusCode::OK,
            Json(json!({ "stored": true, "offset": b.len })),
        )
            .into_response());
    }
    let used = app
        .meta
        .usage(me)
        .await
        .map_err(|e| ApiError::internal("reading usage", e))?;
    // What is already stored of this upload is charged already.
    if used.saturating_add(total.saturating_sub(offset)) > app.config.quota {
        return Err(quota_exceeded());
    }
    // Every vault's copy of a blob is uploaded and hashed in full, even if
    // the same bytes are stored for another vault: holding the address is
    // not holding the bytes.
    let key = UploadKey { vault, hash };
    let metrics = app.metrics.clone();
    let stream = body
        .into_data_stream()
        .map_ok(move |b| {
            metrics.blob_bytes_in.inc_by(b.len() as u64);
            b
        })
        .map_err(std::io::Error::other);
    let chunk = Chunk {
        offset,
        total,
        max_chunk: app.config.max_chunk,
        digest: caller.content_sha256,
    };
    match app.blobs.write_chunk(key, chunk, Box::pin(stream)).await {
        Ok(ChunkOutcome::Partial(at)) => {
            // Unfinished uploads take disk too: the chunk is charged now,
            // and released when the blob is recorded or the upload
            // discarded or abandoned.
            // The chunk is durable whatever happens here: if charging it
            // fails, the answer still says so, and the chunk stays
            // uncharged until the blob is recorded or the upload swept.
            if let Err(e) = app
                .meta
                .charge_upload(vault, hash, me, at.saturating_sub(offset))
                .await
            {
                tracing::warn!(error = %e, "charging a stored chunk failed");
            }
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "stored": false, "offset": at })),
            )
                .into_response())
        }
        Ok(ChunkOutcome::Complete) => {
            record_blob(&app, vault, hash, total, me, StatusCode::CREATED, None).await
        }
        Err(ChunkError::OffsetMismatch(at)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "upload_offset_mismatch",
            format!("the upload stands at offset {at}; resume from there"),
        )
        .with("offset", json!(at))),
        Err(ChunkError::TooLarge) => Err(ApiError::too_large(format!(
            "a chunk may be at most {} bytes and must not run past upload-length",
            app.config.max_chunk
        ))),
        Err(ChunkError::DigestMismatch) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "body_digest_mismatch",
            "the chunk does not match the signed x-vault-content-sha256; it was discarded",
        )),
        Err(ChunkError::HashMismatch) => {
            // The upload is gone either way; a charge not given back now
            // is given back with abandoned uploads' after 24 hours.
            if let Err(e) = app.meta.release_upload(vault, hash).await {
                tracing::warn!(error = %e, "releasing a discarded upload's charge failed");
            }
            Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "hash_mismatch",
            "the complete blob does not hash to its address; the upload was discarded, start again",
            ))
        }
        Err(ChunkError::Body(e)) => Err(ApiError::malformed(format!(
            "the request body was cut off ({e}); the chunk was discarded, resume from the upload offset"
        ))),
        Err(ChunkError::Storage(e)) => Err(ApiError::storage("writing a blob chunk", &e)),
    }
}

async fn record_blob(
    app: &AppState,
    vault: VaultId,
    hash: [u8; 32],
    len: u64,
    uploader: vault_core::Fingerprint,
    status: StatusCode,
    inline: Option<bytes::Bytes>,
) -> ApiResult<Response> {
    let outcome = app
        .meta
        .add_blob(
            vault,
            hash,
            BlobInfo { len, uploader },
            app.config.quota,
            inline,
        )
        .await
        .map_err(|e| ApiError::storage("recording a blob", &e))?;
    match outcome {
        AddBlobOutcome::Added => {
            Ok((status, Json(json!({ "stored": true, "offset": len }))).into_response())
        }
        AddBlobOutcome::Existed => Ok((
            StatusCode::OK,
            Json(json!({ "stored": true, "offset": len })),
        )
            .into_response()),
        AddBlobOutcome::Quota => Err(quota_exceeded()),
    }
}

/// Frame header of a batch upload: the blob's SHA-256 and its length.
const FRAME_HEADER: usize = 32 + 4;
/// Blobs of a batch up to this size are kept in the metadata database
/// rather than in files.
pub const INLINE_BLOB: u64 = 256 * 1024;
/// Most blobs in one batch upload (the body limit bounds their bytes).
pub const MAX_BATCH_BLOBS: usize = 1024;
/// How many blobs of a batch are written at once.
const BATCH_WRITES: usize = 16;

/// Splits a batch body into `(hash, bytes)` frames: each frame is the
/// blob's SHA-256 (32 bytes), its length (u32, big-endian) and its bytes.
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
    let mut frames = parse_frames(&body, MAX_BATCH_BLOBS)?;
    for (hash, bytes) in &frames {
        if vault_core::request::body_digest(bytes) != *hash {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "hash_mismatch",
                format!(
                    "blob {} does not hash to its address; nothing was stored",
                    hex::encode(hash)
                ),
            ));
        }
    }
    writer_access(&app, vault, &caller).await?;
    let me = caller.fingerprint();
    frames.sort_by_key(|(h, _)| *h);
    frames.dedup_by_key(|(h, _)| *h);
    let distinct = frames.len();
    // Which blobs the vault lacks (looked up concurrently).
    let lookups = futures_util::stream::iter(frames.into_iter().map(|(hash, bytes)| {
        let app = app.clone();
        async move {
            let known = blob_record(&app, vault, hash).await?.is_some();
            Ok::<_, ApiError>((!known).then_some((hash, bytes)))
        }
    }))
    .buffer_unordered(BATCH_WRITES)
    .try_collect::<Vec<_>>()
    .await?;
    let fresh: Vec<([u8; 32], bytes::Bytes)> = lookups.into_iter().flatten().collect();
    let present = distinct - fresh.len();
    let used = app
        .meta
        .usage(me)
        .await
        .map_err(|e| ApiError::internal("reading usage", e))?;
    let adding: u64 = fresh.iter().map(|(_, b)| b.len() as u64).sum();
    if used.saturating_add(adding) > app.config.quota {
        return Err(quota_exceeded());
    }
    let stored = fresh.len();
    let writes = futures_util::stream::iter(fresh.into_iter().map(|(hash, bytes)| {
        let app = app.clone();
        async move {
            let len = bytes.len() as u64;
            app.metrics.blob_bytes_in.inc_by(len);
            if len <= INLINE_BLOB {
                // Kept in the database: committed with the other writes of
                // its group, no file and no fsync of its own.
                return record_blob(&app, vault, hash, len, me, StatusCode::CREATED, Some(bytes))
                    .await
                    .map(|_| ());
            }
            let chunk = Chunk {
                offset: 0,
                total: len,
                max_chunk: len,
                digest: hash,
            };
            let stream = futures_util::stream::once(async move { Ok(bytes) });
            match app
                .blobs
                .write_chunk(UploadKey { vault, hash }, chunk, Box::pin(stream))
                .await
            {
                Ok(ChunkOutcome::Complete) => {}
                Ok(ChunkOutcome::Partial(_)) | Err(ChunkError::OffsetMismatch(_)) => {
                    // Another upload of the same blob is under way.
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "upload_in_progress",
                        format!(
                            "blob {} is being uploaded by another request; retry",
                            hex::encode(hash)
                        ),
                    ));
                }
                Err(ChunkError::Storage(e)) => return Err(ApiError::storage("writing a blob", &e)),
                Err(e) => return Err(ApiError::internal("writing a blob", e)),
            }
            record_blob(&app, vault, hash, len, me, StatusCode::CREATED, None)
                .await
                .map(|_| ())
        }
    }))
    .buffer_unordered(BATCH_WRITES)
    .try_collect::<Vec<()>>();
    writes.await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "stored": stored, "present": present })),
    )
        .into_response())
}

/// `GET /v1/vaults/{vault}/blobs/{hash}/upload`.
pub async fn upload_status(
    State(app): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((vault, hash)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let vault = parse_vault(&vault)?;
    let hash = parse_hash(&hash, "the blob address")?;
    writer_access(&app, vault, &caller).await?;
    if let Some(b) = blob_record(&app, vault, hash).await? {
        return Ok(Json(json!({ "stored": true, "offset": b.len })));
    }
    let at = app
        .blobs
        .upload_offset(UploadKey { vault, hash })
        .await
        .map_err(|e| ApiError::internal("reading an upload", e))?;
    Ok(Json(json!({ "stored": false, "offset": at })))
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
    let me = caller.fingerprint();
    let access = app.member_access(vault, &me).await?;
    let (info, refs) = app
        .meta
        .blob_with_refs(vault, hash)
        .await
        .map_err(|e| ApiError::internal("reading a blob record", e))?
        .ok_or_else(blob_not_found)?;
    let allowed = access.owner
        || if refs.is_empty() {
            info.uploader == me
        } else {
            let records: Vec<_> = refs.iter().map(|(_, r)| *r).collect();
            app.may_read_blob(vault, &me, &records, &hash).await?
        };
    if !allowed {
        return Err(ApiError::forbidden(
            "you have no access to the record this blob belongs to",
        ));
    }
    let (start, len, status) = match headers.get(header::RANGE) {
        None => (0, info.len, StatusCode::OK),
        Some(v) => {
            let parsed = v
                .to_str()
                .map_err(|_| ())
                .and_then(|s| parse_range(s, info.len));
            match parsed {
                Ok((s, l)) => (s, l, StatusCode::PARTIAL_CONTENT),
                Err(()) => {
                    return Err(ApiError::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "range_not_satisfiable",
                        format!(
                            "the range must be bytes=a- or bytes=a-b within {} bytes",
                            info.len
                        ),
                    ))
                }
            }
        }
    };
    let inline = if info.len <= INLINE_BLOB {
        app.meta
            .small_blob(hash)
            .await
            .map_err(|e| ApiError::internal("reading a blob", e))?
    } else {
        None
    };
    let body = match inline {
        Some(bytes) => {
            let end = usize::try_from(start + len).unwrap_or(usize::MAX);
            let start = usize::try_from(start).unwrap_or(usize::MAX);
            if end > bytes.len() || start > end {
                return Err(ApiError::internal(
                    "reading a blob",
                    crate::storage::StorageError::new("a stored blob is shorter than its record"),
                ));
            }
            Body::from(bytes.slice(start..end))
        }
        None => {
            let reader = app
                .blobs
                .read(hash, start, len)
                .await
                .map_err(|e| ApiError::internal("opening a blob", e))?;
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                reader,
                256 * 1024,
            ))
        }
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
            HeaderValue::from_str(&format!("bytes {}-{}/{}", start, start + len - 1, info.len))
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
