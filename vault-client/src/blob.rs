//! Blob transfer: chunked, resumable uploads and resumable, verified
//! downloads (`docs/relay-api.md`, "Blobs").

use std::io::{Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};
use vault_core::address::AddressKind;
use vault_core::VaultId;

use crate::client::{Answer, Body, Mode, RelayClient, Req, MAX_SMALL_ANSWER};
use crate::error::{ClientError, Result};
use crate::wire::{self, parse_content_range, UploadStatus};

/// Consecutive upload rounds without progress (offset mismatches, corrupted
/// chunks) tolerated before giving up.
const MAX_UPLOAD_STALLS: u32 = 4;

fn blob_path(vault: &VaultId, hash: &[u8; 32]) -> String {
    format!("/v1/vaults/{}/blobs/{}", vault.to_hex(), hex::encode(hash))
}

fn header(name: &'static str, value: u64) -> (HeaderName, HeaderValue) {
    (HeaderName::from_static(name), HeaderValue::from(value))
}

/// Where an upload reads its bytes: a chunk at a time, from any offset (a
/// resumed upload starts mid-way, a refused chunk is read again).
/// [`Seekable`] serves any file or cursor; the web app reads the chunks of
/// a sealed file from the browser's disk with it, so a blob need not fit
/// in memory.
pub trait UploadSource {
    /// Bytes `start..start + len` of the blob: exactly `len` of them, or
    /// an error.
    fn read_chunk(
        &mut self,
        start: u64,
        len: usize,
    ) -> impl std::future::Future<Output = std::io::Result<Vec<u8>>>;
}

/// An [`UploadSource`] over a seekable reader (a file, a cursor, or a
/// `&mut` of one), read synchronously.
pub struct Seekable<R>(pub R);

impl<R: Read + Seek> UploadSource for Seekable<R> {
    fn read_chunk(
        &mut self,
        start: u64,
        len: usize,
    ) -> impl std::future::Future<Output = std::io::Result<Vec<u8>>> {
        let mut chunk = vec![0u8; len];
        let read = self
            .0
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.0.read_exact(&mut chunk))
            .map(|()| chunk);
        std::future::ready(read)
    }
}

/// Where a download writes its bytes, front to back, each write awaited.
/// [`Written`] serves any writer; the web app writes a record larger than
/// memory to a spool file on the browser's disk with it.
pub trait DownloadSink {
    /// Appends all of `bytes`.
    fn write_all(&mut self, bytes: &[u8])
        -> impl std::future::Future<Output = std::io::Result<()>>;
    /// Makes every byte written so far durable where the sink can (called
    /// once the last byte arrived, before the hash is judged).
    fn flush(&mut self) -> impl std::future::Future<Output = std::io::Result<()>>;
}

/// A [`DownloadSink`] over a writer (a file, a vector, or a `&mut` of
/// one), written synchronously.
pub struct Written<W>(pub W);

impl<W: Write> DownloadSink for Written<W> {
    fn write_all(
        &mut self,
        bytes: &[u8],
    ) -> impl std::future::Future<Output = std::io::Result<()>> {
        std::future::ready(self.0.write_all(bytes))
    }

    fn flush(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> {
        std::future::ready(self.0.flush())
    }
}

/// What the relay's answer to one chunk means for the upload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkOutcome {
    /// The blob is stored whole.
    Done,
    /// Continue from this offset.
    Continue(u64),
}

/// Interprets a successful chunk answer (`stored`, `offset`) for an upload of
/// `total` bytes that sent bytes from `sent_from`.
pub(crate) fn chunk_outcome(stored: bool, offset: u64, total: u64) -> Result<ChunkOutcome> {
    if offset > total {
        return Err(ClientError::Protocol(format!(
            "the relay claims {offset} bytes of a {total}-byte blob"
        )));
    }
    match (stored, offset == total) {
        (true, true) => Ok(ChunkOutcome::Done),
        (true, false) => Err(ClientError::Protocol(format!(
            "the relay claims the blob is stored but holds only {offset} of {total} bytes"
        ))),
        (false, true) if total > 0 => Err(ClientError::Protocol(
            "the relay holds every byte of the blob but did not store it".into(),
        )),
        (false, _) => Ok(ChunkOutcome::Continue(offset)),
    }
}

/// The byte range `[offset, end)` of the next chunk.
pub(crate) fn next_chunk(offset: u64, total: u64, chunk_size: usize) -> (u64, u64) {
    let end = offset.saturating_add(chunk_size as u64).min(total);
    (offset.min(end), end)
}

/// How to use a download answer when `have` bytes are already written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// The body starts at byte `have`: write all of it.
    FromHave,
    /// The body is the whole blob: skip the first `have` bytes.
    Skip(u64),
}

/// Checks a download answer's status and `content-range` against what was
/// asked (`range: bytes=have-` when `have > 0`) and the blob's length.
pub(crate) fn resume_plan(
    status: StatusCode,
    content_range: Option<&str>,
    have: u64,
    expected_len: u64,
) -> Result<Resume> {
    match status {
        StatusCode::OK => Ok(if have == 0 {
            Resume::FromHave
        } else {
            Resume::Skip(have)
        }),
        StatusCode::PARTIAL_CONTENT => {
            let range = content_range.and_then(parse_content_range).ok_or_else(|| {
                ClientError::Protocol("a partial blob answer without a valid content-range".into())
            })?;
            if range.start != have {
                return Err(ClientError::Protocol(format!(
                    "asked for the blob from byte {have}, the relay sent from byte {}",
                    range.start
                )));
            }
            if range.total.is_some_and(|t| t != expected_len) || range.end_inclusive >= expected_len
            {
                return Err(ClientError::Protocol(format!(
                    "the relay's content-range {} does not fit a {expected_len}-byte blob",
                    wire::shorten(content_range.unwrap_or_default())
                )));
            }
            Ok(Resume::FromHave)
        }
        other => Err(ClientError::Protocol(format!(
            "unexpected status {other} for a blob download"
        ))),
    }
}

/// How many downloaded bytes a blob download hashes before it lets the
/// browser's event loop run ([`crate::platform::give_way`]): about 15 ms of
/// SHA-256 in WebAssembly (BLAKE3 takes a quarter as long).
const GIVE_WAY_EVERY: usize = 4 << 20;

/// A blob wanted from the relay: its address, the hash the address is
/// computed with, and its length (all from verified record metadata).
pub type Wanted = ([u8; 32], AddressKind, u64);

/// Largest body of one batch upload (the relay's default JSON limit is
/// 16 MiB; batches stay well under it).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most blobs in one batch upload.
pub const MAX_BATCH_BLOBS: usize = 256;

/// Most blobs one batch read asks for (the relay takes up to 1,024).
pub const MAX_BATCH_READS: usize = 256;
/// Most blob bytes one batch read asks for.
pub const MAX_BATCH_READ_BYTES: u64 = 4 * 1024 * 1024;
/// A batch read's frame header: address, status, length.
const READ_FRAME_HEADER: u64 = 32 + 1 + 4;
/// Batch read statuses (`docs/relay-api.md`).
const READ_SENT: u8 = 0;
const READ_NOT_FOUND: u8 = 1;
const READ_NOT_READABLE: u8 = 2;
const READ_FETCH_ALONE: u8 = 3;

/// Blobs a batch read leaves to be downloaded alone, in flight at once.
const ALONE_IN_FLIGHT: usize = 8;

/// Whether a refusal says the relay has no such route (an older relay):
/// the batch routes then fall back to one request per blob.
fn route_missing(status: u16, e: &crate::error::ErrorBody) -> bool {
    matches!(
        (status, e.code.as_deref()),
        (404, Some("not_found")) | (405, Some("method_not_allowed"))
    )
}

/// Splits blobs to download `(address, length)` into the ranges
/// [`RelayClient::get_blobs`] asks for one request at a time: at most
/// [`MAX_BATCH_READS`] blobs and [`MAX_BATCH_READ_BYTES`] bytes each (a
/// larger blob gets a range of its own and is downloaded alone).
pub fn batch_reads(wanted: &[Wanted]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0usize;
    let mut bytes = 0u64;
    for (i, (_, _, len)) in wanted.iter().enumerate() {
        let full =
            i - start == MAX_BATCH_READS || bytes.saturating_add(*len) > MAX_BATCH_READ_BYTES;
        if i > start && full {
            ranges.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(*len);
    }
    if start < wanted.len() {
        ranges.push(start..wanted.len());
    }
    ranges
}

/// One frame of a batch read's answer at `at`: the address, the status,
/// the bytes, and where the next frame starts.
fn read_frame(body: &[u8], at: usize) -> Result<([u8; 32], u8, &[u8], usize)> {
    let cut = || ClientError::Protocol("the relay's batch read answer is cut off".into());
    let rest = body.get(at..).ok_or_else(cut)?;
    let (hash, rest) = rest.split_first_chunk::<32>().ok_or_else(cut)?;
    let (status, rest) = rest.split_first().ok_or_else(cut)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(cut)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| cut())?;
    let bytes = rest.get(..len).ok_or_else(cut)?;
    Ok((*hash, *status, bytes, body.len() - (rest.len() - len)))
}

impl RelayClient {
    /// Uploads complete small blobs in as few requests as possible
    /// (`POST /v1/vaults/{vault}/blobs`, framed: each blob's address, its
    /// length as a big-endian u32, its bytes; at most
    /// [`MAX_BATCH_BLOBS`] blobs and [`MAX_BATCH_BYTES`] per request). A
    /// blob too large for a batch, or a relay without the batch route,
    /// goes through [`RelayClient::put_blob`]. The relay checks every hash
    /// and stores each batch durably before it answers.
    pub async fn put_blobs(&self, vault: &VaultId, blobs: &[([u8; 32], &[u8])]) -> Result<()> {
        let mut batch: Vec<u8> = Vec::new();
        let mut count = 0usize;
        let mut batched: Vec<([u8; 32], &[u8])> = Vec::new();
        for (hash, bytes) in blobs {
            let frame_len = 36 + bytes.len();
            if frame_len > MAX_BATCH_BYTES || u32::try_from(bytes.len()).is_err() {
                let mut reader = std::io::Cursor::new(*bytes);
                self.put_blob(vault, hash, bytes.len() as u64, &mut reader)
                    .await?;
                continue;
            }
            if count == MAX_BATCH_BLOBS || batch.len() + frame_len > MAX_BATCH_BYTES {
                self.send_batch(vault, std::mem::take(&mut batch), &batched)
                    .await?;
                batched.clear();
                count = 0;
            }
            batch.extend_from_slice(hash);
            batch.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            batch.extend_from_slice(bytes);
            batched.push((*hash, bytes));
            count += 1;
        }
        if count > 0 {
            self.send_batch(vault, batch, &batched).await?;
        }
        Ok(())
    }

    async fn send_batch(
        &self,
        vault: &VaultId,
        body: Vec<u8>,
        blobs: &[([u8; 32], &[u8])],
    ) -> Result<()> {
        let mut req = Req::new(
            Method::POST,
            format!("/v1/vaults/{}/blobs", vault.to_hex()),
            "uploading blobs",
        );
        req.body = Body::Octets(Bytes::from(body));
        match self.exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER)).await? {
            Answer::Body(..) => Ok(()),
            // A relay without the batch route: one request per blob.
            Answer::Refused(status, e) if route_missing(status, &e) => {
                for (hash, bytes) in blobs {
                    let mut reader = std::io::Cursor::new(*bytes);
                    self.put_blob(vault, hash, bytes.len() as u64, &mut reader)
                        .await?;
                }
                Ok(())
            }
            Answer::Refused(status, e) => Err(e.into_error(status)),
            Answer::Stream(_) => Err(ClientError::Protocol("unexpected stream".into())),
        }
    }

    /// Downloads small blobs `(address, length)` of `vault` in one request
    /// (`POST /v1/vaults/{vault}/blobs/read`), at most
    /// [`MAX_BATCH_READS`] of them; group a longer list with
    /// [`batch_reads`]. Returns their bytes in the order asked, each
    /// checked against its length and address
    /// ([`vault_core::Error::CiphertextMismatch`] otherwise), exactly as
    /// [`RelayClient::get_blob`] checks one. A blob the relay does not send
    /// in the batch (too large, over its budget, missing or not readable),
    /// and every blob on a relay without the batch route or whose rate
    /// limit cannot count this many at once (`413`), is fetched with
    /// [`RelayClient::get_blob`] (eight at a time), so each
    /// one fails or succeeds as it would alone. Every frame of the answer
    /// is checked before anything is fetched alone.
    pub async fn get_blobs(&self, vault: &VaultId, wanted: &[Wanted]) -> Result<Vec<Vec<u8>>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        if wanted.len() > MAX_BATCH_READS {
            return Err(ClientError::Config(format!(
                "a batch read asks for at most {MAX_BATCH_READS} blobs"
            )));
        }
        let names: Vec<String> = wanted.iter().map(|(h, _, _)| hex::encode(h)).collect();
        let req = Req::new(
            Method::POST,
            format!("/v1/vaults/{}/blobs/read", vault.to_hex()),
            "downloading blobs",
        )
        .json(&serde_json::json!({ "blobs": names }))?;
        let limit = wanted
            .iter()
            .map(|(_, _, len)| len.saturating_add(READ_FRAME_HEADER))
            .fold(0u64, u64::saturating_add);
        let body = match self.exchange(&req, Mode::Buffer(limit)).await? {
            Answer::Body(_, body) => body,
            // A relay without the batch route, or whose rate limit counts
            // more blobs than this request asks for: one request per blob.
            Answer::Refused(status, e) if route_missing(status, &e) || status == 413 => {
                return self.get_each(vault, wanted).await;
            }
            Answer::Refused(status, e) => return Err(e.into_error(status)),
            Answer::Stream(_) => return Err(ClientError::Protocol("unexpected stream".into())),
        };
        // Every frame is checked before anything is fetched alone.
        let mut sent: Vec<Option<Vec<u8>>> = Vec::with_capacity(wanted.len());
        let mut at = 0usize;
        for (hash, kind, len) in wanted {
            let (frame_hash, status, bytes, next) = read_frame(&body, at)?;
            if frame_hash != *hash {
                return Err(ClientError::Protocol(
                    "the relay answered a batch read with blobs out of order".into(),
                ));
            }
            at = next;
            match status {
                READ_SENT => {
                    if bytes.len() as u64 != *len {
                        return Err(ClientError::Protocol(format!(
                            "the relay sent {} bytes of a blob of {len}",
                            bytes.len()
                        )));
                    }
                    if kind.digest(bytes) != *hash {
                        return Err(vault_core::Error::CiphertextMismatch.into());
                    }
                    sent.push(Some(bytes.to_vec()));
                }
                READ_NOT_FOUND | READ_NOT_READABLE | READ_FETCH_ALONE => sent.push(None),
                other => {
                    return Err(ClientError::Protocol(format!(
                        "the relay answered a batch read with an unknown status {other}"
                    )))
                }
            }
        }
        if at != body.len() {
            return Err(ClientError::Protocol(
                "the relay's batch read answer has bytes after its last blob".into(),
            ));
        }
        let alone: Vec<Wanted> = wanted
            .iter()
            .zip(&sent)
            .filter(|(_, s)| s.is_none())
            .map(|(w, _)| *w)
            .collect();
        let mut fetched = self.get_each(vault, &alone).await?.into_iter();
        sent.into_iter()
            .map(|s| {
                s.or_else(|| fetched.next()).ok_or_else(|| {
                    ClientError::Protocol("a blob fetched alone went missing".into())
                })
            })
            .collect()
    }

    /// Blobs `(address, kind, length)` downloaded one request each
    /// ([`RelayClient::get_blob`]), [`ALONE_IN_FLIGHT`] at a time, in order.
    async fn get_each(&self, vault: &VaultId, wanted: &[Wanted]) -> Result<Vec<Vec<u8>>> {
        futures_util::stream::iter(
            wanted
                .iter()
                .map(|(hash, kind, len)| self.get_one(vault, hash, *kind, *len)),
        )
        .buffered(ALONE_IN_FLIGHT)
        .try_collect()
        .await
    }

    /// One blob whole, through [`RelayClient::get_blob`].
    async fn get_one(
        &self,
        vault: &VaultId,
        hash: &[u8; 32],
        kind: AddressKind,
        len: u64,
    ) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_blob(vault, hash, kind, len, &mut buf).await?;
        Ok(buf)
    }

    /// Where an upload of a blob stands on the relay
    /// (`GET /v1/vaults/{vault}/blobs/{hash}/upload`).
    pub async fn upload_status(&self, vault: &VaultId, hash: &[u8; 32]) -> Result<UploadStatus> {
        let req = Req::new(
            Method::GET,
            format!("{}/upload", blob_path(vault, hash)),
            "reading an upload's progress",
        );
        let (_, body) = match self.exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER)).await? {
            Answer::Body(s, b) => (s, b),
            Answer::Refused(status, e) => return Err(e.into_error(status)),
            Answer::Stream(_) => return Err(ClientError::Protocol("unexpected stream".into())),
        };
        let answer: wire::UploadAnswer = wire::parse_json(&body, "upload status answer")?;
        Ok(answer.into())
    }

    /// [`RelayClient::upload_status`], or "nothing uploaded yet" without
    /// asking when `skip`.
    async fn upload_status_unless(
        &self,
        skip: bool,
        vault: &VaultId,
        hash: &[u8; 32],
    ) -> Result<UploadStatus> {
        if skip {
            Ok(UploadStatus {
                stored: false,
                offset: 0,
            })
        } else {
            self.upload_status(vault, hash).await
        }
    }

    /// Uploads a blob of `total_len` bytes, read from `reader` (positioned
    /// anywhere: it is sought to each chunk), addressed by `hash` (its
    /// BLAKE3 or SHA-256, `docs/format.md` §6.3): [`RelayClient::put_blob_from`] with the reader as its
    /// source.
    pub async fn put_blob<R: Read + Seek + ?Sized>(
        &self,
        vault: &VaultId,
        hash: &[u8; 32],
        total_len: u64,
        reader: &mut R,
    ) -> Result<UploadStatus> {
        self.put_blob_from(vault, hash, total_len, &mut Seekable(reader))
            .await
    }

    /// Uploads a blob of `total_len` bytes, read a chunk at a time from
    /// `source`, addressed by `hash` (its BLAKE3 or SHA-256), in chunks of
    /// [`RelayClient::chunk_size`] (`PUT /v1/vaults/{vault}/blobs/{hash}`
    /// with `upload-offset` and `upload-length`). At most one chunk is in
    /// memory at a time, so a blob larger than memory uploads as well.
    ///
    /// A blob larger than one chunk first asks where an earlier upload
    /// stands and resumes from there (or does nothing if the blob is
    /// stored), so calling it again after a failure continues the upload; a
    /// single-chunk blob is sent at once and the relay's answer says the
    /// same. Within a call, an
    /// `upload_offset_mismatch` answer re-synchronises to the relay's
    /// offset. The relay checks the hash once the blob is complete
    /// (`422 hash_mismatch` discards it).
    pub async fn put_blob_from<S: UploadSource + ?Sized>(
        &self,
        vault: &VaultId,
        hash: &[u8; 32],
        total_len: u64,
        source: &mut S,
    ) -> Result<UploadStatus> {
        // A blob that fits one chunk is sent at once (a stored one is
        // answered "stored", a partial upload with its offset, and the loop
        // below resumes from there): one request per small record instead
        // of two. Larger blobs ask first, to resume an earlier upload.
        let single_chunk = total_len <= self.chunk_size() as u64;
        let mut offset = match self.upload_status_unless(single_chunk, vault, hash).await {
            Ok(s) if s.stored => return Ok(s),
            Ok(s) => match chunk_outcome(false, s.offset, total_len)? {
                ChunkOutcome::Continue(o) => o,
                ChunkOutcome::Done => total_len,
            },
            Err(ClientError::Relay { code, .. }) if code == "blob_not_found" => 0,
            Err(e) => return Err(e),
        };
        let path = blob_path(vault, hash);
        let mut stalls = 0u32;
        loop {
            let (start, end) = next_chunk(offset, total_len, self.chunk_size());
            let len = usize::try_from(end - start)
                .map_err(|_| ClientError::Protocol("chunk too large".into()))?;
            let chunk = source.read_chunk(start, len).await?;
            if chunk.len() != len {
                return Err(ClientError::Protocol(format!(
                    "the upload's source gave {} bytes for a chunk of {len}",
                    chunk.len()
                )));
            }
            let mut req = Req::new(Method::PUT, path.clone(), "uploading a blob");
            req.body = Body::Octets(Bytes::from(chunk));
            req.headers = vec![
                header("upload-length", total_len),
                header("upload-offset", start),
            ];
            let before = offset;
            match self.exchange(&req, Mode::Buffer(MAX_SMALL_ANSWER)).await? {
                Answer::Body(_, body) => {
                    let a: wire::UploadAnswer = wire::parse_json(&body, "upload answer")?;
                    match chunk_outcome(a.stored, a.offset, total_len)? {
                        ChunkOutcome::Done => return Ok(a.into()),
                        ChunkOutcome::Continue(o) => offset = o,
                    }
                }
                Answer::Refused(409, e) if e.code.as_deref() == Some("upload_offset_mismatch") => {
                    let at = match e.offset {
                        Some(o) => o,
                        None => {
                            let s = self.upload_status(vault, hash).await?;
                            if s.stored {
                                return Ok(s);
                            }
                            s.offset
                        }
                    };
                    match chunk_outcome(false, at, total_len)? {
                        ChunkOutcome::Continue(o) => offset = o,
                        ChunkOutcome::Done => return self.upload_status(vault, hash).await,
                    }
                }
                Answer::Refused(400, e) if e.code.as_deref() == Some("body_digest_mismatch") => {
                    tracing::warn!("a blob chunk was corrupted in transit; sending it again");
                }
                Answer::Refused(status, e) => return Err(e.into_error(status)),
                Answer::Stream(_) => return Err(ClientError::Protocol("unexpected stream".into())),
            }
            if offset > before {
                stalls = 0;
            } else {
                stalls += 1;
                if stalls > MAX_UPLOAD_STALLS {
                    return Err(ClientError::Protocol(format!(
                        "the blob upload made no progress after {stalls} rounds (stuck at byte {offset} of {total_len})"
                    )));
                }
            }
        }
    }

    /// Downloads a blob of `expected_len` bytes into `sink`
    /// (`GET /v1/vaults/{vault}/blobs/{hash}`), streaming. A dropped
    /// connection resumes with `range: bytes=N-` from the bytes already
    /// written (the retry budget resets whenever bytes arrive). The bytes
    /// are hashed as they stream, and the download fails with
    /// [`vault_core::Error::CiphertextMismatch`] unless they hash to `hash`
    /// under `kind` (the record metadata's
    /// [`vault_core::RecordMetadata::address_kind`]); more bytes than
    /// `expected_len` are refused.
    ///
    /// `sink` sees unverified bytes before the check: decrypt only what
    /// [`crate::sync::fetch_blob`] put into the local store, which verifies
    /// the hash again.
    pub async fn get_blob<W: Write + ?Sized>(
        &self,
        vault: &VaultId,
        hash: &[u8; 32],
        kind: AddressKind,
        expected_len: u64,
        sink: &mut W,
    ) -> Result<()> {
        self.get_blob_into(vault, hash, kind, expected_len, &mut Written(sink))
            .await
    }

    /// [`RelayClient::get_blob`] into a [`DownloadSink`] whose writes are
    /// awaited (the web app's spool file on the browser's disk, for a
    /// record larger than memory). The same checks: `sink` sees unverified
    /// bytes, and the call succeeds only if they hash to `hash` under
    /// `kind`.
    pub async fn get_blob_into<D: DownloadSink + ?Sized>(
        &self,
        vault: &VaultId,
        hash: &[u8; 32],
        kind: AddressKind,
        expected_len: u64,
        sink: &mut D,
    ) -> Result<()> {
        let path = blob_path(vault, hash);
        let mut have = 0u64;
        let mut digest = kind.hasher();
        let mut failures = 0u32;
        loop {
            let mut req = Req::new(Method::GET, path.clone(), "downloading a blob");
            if have > 0 {
                let range = HeaderValue::from_str(&format!("bytes={have}-"))
                    .map_err(|e| ClientError::Config(e.to_string()))?;
                req.headers.push((RANGE, range));
            }
            let resp = match self.exchange(&req, Mode::Stream).await? {
                Answer::Stream(r) => r,
                // The caller asks only for blobs the verified log names: a
                // relay without one lost or withholds it, which is an
                // integrity failure, not an ordinary "not found".
                Answer::Refused(404, e) if e.code.as_deref() == Some("blob_not_found") => {
                    return Err(vault_core::Error::Missing {
                        what: format!(
                            "the ciphertext {} that the vault's log names (the relay answered 404)",
                            hex::encode(hash)
                        ),
                    }
                    .into())
                }
                Answer::Refused(status, e) => return Err(e.into_error(status)),
                Answer::Body(..) => {
                    return Err(ClientError::Protocol("unexpected buffered answer".into()))
                }
            };
            let content_range = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut skip =
                match resume_plan(resp.status(), content_range.as_deref(), have, expected_len)? {
                    Resume::FromHave => 0,
                    Resume::Skip(n) => n,
                };
            let before = have;
            let mut stream = std::pin::pin!(resp.bytes_stream());
            let mut dropped = None;
            let mut since_give_way = 0usize;
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        dropped = Some(e);
                        break;
                    }
                };
                let mut bytes: &[u8] = &chunk;
                if skip > 0 {
                    let n = usize::try_from(skip).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = bytes.get(n..).unwrap_or_default();
                    skip -= n as u64;
                }
                if have.saturating_add(bytes.len() as u64) > expected_len {
                    return Err(ClientError::Protocol(format!(
                        "the relay sent more than the blob's {expected_len} bytes"
                    )));
                }
                sink.write_all(bytes).await?;
                digest.update(bytes);
                have += bytes.len() as u64;
                since_give_way += bytes.len();
                if since_give_way >= GIVE_WAY_EVERY {
                    since_give_way = 0;
                    crate::platform::give_way().await;
                }
            }
            if have == expected_len {
                sink.flush().await?;
                return if digest.finalize() == *hash {
                    Ok(())
                } else {
                    Err(vault_core::Error::CiphertextMismatch.into())
                };
            }
            if have > before {
                failures = 0;
            }
            failures += 1;
            let why = match &dropped {
                Some(_) => "the connection dropped during a blob download",
                None => "the relay ended a blob download early",
            };
            if failures >= self.retry_policy().attempts() {
                return Err(match dropped {
                    Some(e) => ClientError::Transport(e),
                    None => ClientError::Protocol(format!(
                        "the relay ended the blob after {have} of {expected_len} bytes"
                    )),
                });
            }
            tracing::debug!(have, expected_len, why, "resuming a blob download");
            crate::platform::sleep(self.retry_policy().delay(failures, None)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_reads_are_bounded_by_count_and_bytes() {
        let small = |n: usize| vec![([0u8; 32], AddressKind::Blake3, 1_000u64); n];
        assert!(batch_reads(&[]).is_empty());
        assert_eq!(
            batch_reads(&small(1)),
            vec![std::ops::Range { start: 0, end: 1 }]
        );
        assert_eq!(batch_reads(&small(600)), [0..256, 256..512, 512..600]);
        let mib = 1024 * 1024;
        let sizes: Vec<Wanted> = [3 * mib, 2 * mib, 5 * mib, 1, 1]
            .iter()
            .map(|len| ([0u8; 32], AddressKind::Blake3, *len))
            .collect();
        // 3 + 2 MiB pass the 4 MiB budget; a blob over it goes alone.
        assert_eq!(batch_reads(&sizes), [0..1, 1..2, 2..3, 3..5]);
    }

    #[test]
    fn batch_read_frames_are_parsed_and_bounded() {
        let mut body = vec![7u8; 32];
        body.push(0);
        body.extend_from_slice(&3u32.to_be_bytes());
        body.extend_from_slice(b"abc");
        body.extend_from_slice(&[8u8; 32]);
        body.push(3);
        body.extend_from_slice(&0u32.to_be_bytes());
        let (hash, status, bytes, next) = read_frame(&body, 0).unwrap();
        assert_eq!((hash, status, bytes), ([7u8; 32], 0, &b"abc"[..]));
        let (hash, status, bytes, end) = read_frame(&body, next).unwrap();
        assert_eq!(
            (hash, status, bytes, end),
            ([8u8; 32], 3, &b""[..], body.len())
        );
        assert!(read_frame(&body, end).is_err(), "nothing left");
        assert!(read_frame(&body[..next - 1], 0).is_err(), "bytes cut off");
        assert!(read_frame(&body[..20], 0).is_err(), "header cut off");
        let mut huge = vec![0u8; 33];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_frame(&huge, 0).is_err(), "a length past the body");
    }

    #[test]
    fn chunks_cover_the_blob() {
        let mut offset = 0;
        let mut chunks = Vec::new();
        while offset < 20 {
            let (a, b) = next_chunk(offset, 20, 8);
            chunks.push((a, b));
            offset = b;
        }
        assert_eq!(chunks, [(0, 8), (8, 16), (16, 20)]);
        assert_eq!(next_chunk(0, 0, 8), (0, 0));
        assert_eq!(
            next_chunk(u64::MAX - 1, u64::MAX, usize::MAX),
            (u64::MAX - 1, u64::MAX)
        );
        // An offset past the end (never produced: chunk_outcome refuses it)
        // still gives an empty range.
        assert_eq!(next_chunk(30, 20, 8), (20, 20));
    }

    #[test]
    fn chunk_answers_are_checked() {
        assert_eq!(chunk_outcome(true, 20, 20).unwrap(), ChunkOutcome::Done);
        assert_eq!(
            chunk_outcome(false, 8, 20).unwrap(),
            ChunkOutcome::Continue(8)
        );
        assert_eq!(
            chunk_outcome(false, 0, 0).unwrap(),
            ChunkOutcome::Continue(0)
        );
        assert!(chunk_outcome(false, 21, 20).is_err());
        assert!(chunk_outcome(true, 8, 20).is_err());
        assert!(chunk_outcome(false, 20, 20).is_err());
    }

    #[test]
    fn resume_plans() {
        let ok = StatusCode::OK;
        let partial = StatusCode::PARTIAL_CONTENT;
        assert_eq!(resume_plan(ok, None, 0, 10).unwrap(), Resume::FromHave);
        // A relay ignoring the range sends everything again: skip it.
        assert_eq!(resume_plan(ok, None, 4, 10).unwrap(), Resume::Skip(4));
        assert_eq!(
            resume_plan(partial, Some("bytes 4-9/10"), 4, 10).unwrap(),
            Resume::FromHave
        );
        assert_eq!(
            resume_plan(partial, Some("bytes 4-9/*"), 4, 10).unwrap(),
            Resume::FromHave
        );
        for (range, have) in [
            (None, 4),
            (Some("bytes 3-9/10"), 4),
            (Some("bytes 4-9/11"), 4),
            (Some("bytes 4-10/*"), 4),
            (Some("garbage"), 4),
        ] {
            assert!(resume_plan(partial, range, have, 10).is_err(), "{range:?}");
        }
        assert!(resume_plan(StatusCode::NO_CONTENT, None, 0, 10).is_err());
    }
}
