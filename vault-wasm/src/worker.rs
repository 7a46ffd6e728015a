//! The web app's worker (decision 56): a record version's payload sealed
//! from a [`PayloadJob`], or opened from an [`OpenJob`], away from the
//! page's thread.
//!
//! The worker holds one record version's payload key and nothing else. To
//! seal, the page has vault-client plan the version and finish it with the
//! hash the worker returns (`vault_client::records::add_sealed_elsewhere`),
//! posting the job's bytes and the file between. To open, vault-client
//! unwraps the record's key into its job and downloads the ciphertext
//! (`vault_client::reading::download_for_opening`), and the page posts both.
//! The passphrase, the identity's keys, the collection keys and the data key
//! never leave the page. Without workers, the page calls [`seal_payload`]
//! and [`open_payload`] itself: one code either way.

use std::io::{Read, Write};

use js_sys::{Function, Object, Reflect, Uint8Array};
use vault_core::{OpenJob, PayloadJob};
use wasm_bindgen::prelude::*;
use zeroize::Zeroizing;

use crate::failure::{Failure, Result};
use crate::progress::Progress;

/// How much one call into JavaScript reads (the file's `read`, or a
/// ciphertext array): each call crosses the boundary and makes a view.
/// Measured when `read` went through `FileReaderSync`: 1 MiB reads sealed
/// a 50 MB file in 494 ms, 8 MiB reads in 398 ms.
const READ_AHEAD: usize = 8 << 20;
/// How often (in bytes read) sealing and opening report their progress:
/// the page takes a worker that reports nothing for a while for stalled
/// (`web/src/payloads.ts`).
const PROGRESS_EVERY: u64 = 4 << 20;

/// Seals the payload described by `job` (the bytes of
/// [`PayloadJob::to_bytes`]) from a file of exactly the job's body length,
/// read through `read(offset, length)` (a synchronous function returning a
/// `Uint8Array`: a slice of the file's bytes, or `FileReaderSync` where the
/// file is not held whole), reporting `(done, total, "sealing")` to
/// `progress`.
///
/// Returns `{ciphertext: Uint8Array, hash: Uint8Array}`: the ciphertext in
/// JavaScript memory (nothing of the file is kept in the module's memory
/// beyond one read and one 64 KiB chunk), and its SHA-256. Throws `length_mismatch` if
/// the file changed size while it was read.
#[wasm_bindgen(js_name = sealPayload)]
pub fn seal_payload(
    job: &Uint8Array,
    read: &Function,
    progress: Option<Function>,
) -> std::result::Result<Object, JsValue> {
    seal(&secret_bytes(job), read, Progress::new(progress)).map_err(Failure::into_js)
}

/// A job's bytes copied into the module's memory, zeroized when dropped
/// (a `&[u8]` argument would leave a copy of the key in freed memory).
fn secret_bytes(array: &Uint8Array) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(vec![0u8; array.length() as usize]);
    array.copy_to(&mut bytes);
    bytes
}

/// `len` as a JavaScript array length, or `too_large` for `what`.
pub(crate) fn js_len(len: u64, what: &str) -> Result<u32> {
    u32::try_from(len)
        .map_err(|_| Failure::new("too_large", format!("{what} is too large for the browser")))
}

fn seal(job: &[u8], read: &Function, progress: Progress) -> Result<Object> {
    let job = PayloadJob::from_bytes(job)?;
    let len = js_len(job.ciphertext_len(), "this file")?;
    let ciphertext = Uint8Array::new_with_length(len);
    let thrown = Thrown::default();
    let hash = thrown.or(seal_into(
        &job,
        read,
        JsBuffer::new(&ciphertext),
        &progress,
        &thrown,
    ))?;
    let answer = Object::new();
    let set = |key: &str, value: &JsValue| {
        Reflect::set(&answer, &JsValue::from_str(key), value)
            .map(|_| ())
            .map_err(|_| Failure::new("internal", "could not build the sealing answer"))
    };
    set("ciphertext", &ciphertext)?;
    set("hash", &Uint8Array::from(hash.as_slice()))?;
    Ok(answer)
}

/// Seals the payload described by `job` (as [`seal_payload`]) from a file
/// read through `read(offset, length)`, handing the ciphertext to
/// `write(bytes)` front to back, in pieces of up to 8 MiB (the worker
/// writes them to its spool file on the browser's disk, so neither the
/// file nor its ciphertext need fit in memory). Returns the ciphertext's
/// SHA-256 as a `Uint8Array`. Throws `length_mismatch` if the file changed
/// size while it was read, and `io` if `write` throws (a full disk, say);
/// what was written is then incomplete and must be thrown away.
#[wasm_bindgen(js_name = sealPayloadInto)]
pub fn seal_payload_into(
    job: &Uint8Array,
    read: &Function,
    write: &Function,
    progress: Option<Function>,
) -> std::result::Result<Uint8Array, JsValue> {
    let sealed = || -> Result<[u8; 32]> {
        let job = PayloadJob::from_bytes(&secret_bytes(job))?;
        let thrown = Thrown::default();
        let out = std::io::BufWriter::with_capacity(
            READ_AHEAD,
            JsSink {
                write,
                what: "encrypted file",
                thrown: &thrown,
            },
        );
        thrown.or(seal_into(
            &job,
            read,
            out,
            &Progress::new(progress),
            &thrown,
        ))
    };
    sealed()
        .map(|hash| Uint8Array::from(hash.as_slice()))
        .map_err(Failure::into_js)
}

/// Seals `job`'s payload from `read` into `out`, reporting progress;
/// returns the ciphertext's hash.
fn seal_into<W: Write>(
    job: &PayloadJob,
    read: &Function,
    out: W,
    progress: &Progress,
    thrown: &Thrown,
) -> Result<[u8; 32]> {
    let total = job.body_len();
    let body = js_source(read, total, "file", "sealing", progress, thrown);
    progress.report(0, total, "sealing");
    let hash = job.seal(body, out)?;
    progress.report(total, total, "sealing");
    Ok(hash)
}

/// `total` bytes read through the JS `read(offset, length)` (`what`, for
/// errors, which `thrown` keeps), in reads larger than the sealer's or
/// opener's 64 KiB (each crosses into JavaScript once), reporting
/// `(done, total, phase)` as they are consumed: every PROGRESS_EVERY
/// bytes, not every READ_AHEAD.
fn js_source<'a>(
    read: &'a Function,
    total: u64,
    what: &'static str,
    phase: &'static str,
    progress: &'a Progress,
    thrown: &'a Thrown,
) -> Reported<'a, std::io::BufReader<FileReader<'a>>> {
    Reported::new(
        std::io::BufReader::with_capacity(
            READ_AHEAD,
            FileReader {
                read,
                offset: 0,
                total,
                what,
                thrown,
            },
        ),
        total,
        phase,
        progress,
    )
}

/// Bytes handed to a JavaScript `write(bytes)`, each write a copy;
/// `what` names them in an error, which `thrown` keeps.
struct JsSink<'a> {
    write: &'a Function,
    what: &'static str,
    thrown: &'a Thrown,
}

/// The first failure JavaScript threw during a seal or an open (the file's
/// `read`, the spool's `write`), which vault-core sees only as an I/O
/// error: reported instead, with its own code (`length_mismatch` from the
/// worker's reader, `storage_full` for a full disk).
#[derive(Default)]
pub(crate) struct Thrown(std::cell::RefCell<Option<Failure>>);

impl Thrown {
    /// Keeps the failure `e` (the first one only), writing `what`, and
    /// returns the I/O error for vault-core.
    pub(crate) fn note(&self, e: &JsValue, what: &str) -> std::io::Error {
        let failure = js_failure(e, what);
        let error = std::io::Error::other(failure.message.clone());
        self.0.borrow_mut().get_or_insert(failure);
        error
    }

    /// `result`, its error replaced by the failure JavaScript threw, if any.
    pub(crate) fn or<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|e| self.0.borrow_mut().take().unwrap_or(e))
    }
}

/// A JS exception as a failure: a full disk is `storage_full`; a
/// `"code: message"` error keeps its code; anything else is `io`.
fn js_failure(e: &JsValue, what: &str) -> Failure {
    let name = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.name()))
        .unwrap_or_default();
    if name == "QuotaExceededError" {
        return Failure::new(
            "storage_full",
            format!("the browser's storage is full, so the {what} could not be written. Free disk space, or use the vault command line"),
        );
    }
    let text = js_message(e);
    coded(&text).unwrap_or_else(|| {
        Failure::new(
            "io",
            format!("reading or writing the {what} failed: {text}"),
        )
    })
}

impl Write for JsSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write
            .call1(&JsValue::NULL, &Uint8Array::from(buf))
            .map_err(|e| self.thrown.note(&e, self.what))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Opens the payload described by `job` (the bytes of
/// [`OpenJob::to_bytes`]) from `ciphertext`, checking its hash against the
/// signed one and every chunk's authentication, reporting
/// `(done, total, "opening")` in ciphertext bytes to `progress`, and
/// returns the body: a `Uint8Array` in JavaScript memory (a view of a
/// buffer of the record's padded length). Throws `ciphertext_mismatch` for
/// bytes that are not the author's, `decryption_failed` or `malformed` for
/// a damaged payload.
#[wasm_bindgen(js_name = openPayload)]
pub fn open_payload(
    job: &Uint8Array,
    ciphertext: &Uint8Array,
    progress: Option<Function>,
) -> std::result::Result<Uint8Array, JsValue> {
    open(&secret_bytes(job), ciphertext, Progress::new(progress)).map_err(Failure::into_js)
}

fn open(job: &[u8], ciphertext: &Uint8Array, progress: Progress) -> Result<Uint8Array> {
    let job = OpenJob::from_bytes(job)?;
    if u64::from(ciphertext.length()) != job.ciphertext_len() {
        return Err(vault_core::Error::CiphertextMismatch.into());
    }
    let len = js_len(job.padded_len(), "this record")?;
    let body = Uint8Array::new_with_length(len);
    let mut out = JsBuffer::new(&body);
    let total = job.ciphertext_len();
    let source = Reported::new(
        std::io::BufReader::with_capacity(READ_AHEAD, JsCursor::new(ciphertext.clone())),
        total,
        "opening",
        &progress,
    );
    progress.report(0, total, "opening");
    job.open(source, &mut out)?;
    progress.report(total, total, "opening");
    Ok(body.subarray(0, out.at))
}

/// Opens the payload described by `job` (as [`open_payload`]) from a
/// ciphertext read through `read(offset, length)` (the worker's spool file
/// of the download, on the browser's disk), handing the body to
/// `write(bytes)` front to back in pieces of up to 8 MiB (the worker
/// writes them to a second spool file), so neither need fit in memory.
/// Returns the body's length. The same checks and errors as
/// [`open_payload`], and `io` if `write` throws; on any error what was
/// written must be thrown away (chunks are written as they authenticate,
/// the signed hash is judged at the end).
#[wasm_bindgen(js_name = openPayloadFrom)]
pub fn open_payload_from(
    job: &Uint8Array,
    read: &Function,
    write: &Function,
    progress: Option<Function>,
) -> std::result::Result<f64, JsValue> {
    let thrown = Thrown::default();
    let opened = || -> Result<f64> {
        let job = OpenJob::from_bytes(&secret_bytes(job))?;
        let total = job.ciphertext_len();
        let progress = Progress::new(progress);
        let source = js_source(
            read,
            total,
            "downloaded record",
            "opening",
            &progress,
            &thrown,
        );
        let out = std::io::BufWriter::with_capacity(
            READ_AHEAD,
            JsSink {
                write,
                what: "decrypted file",
                thrown: &thrown,
            },
        );
        progress.report(0, total, "opening");
        let opened = job.open(source, out)?;
        progress.report(total, total, "opening");
        Ok(opened.body_len as f64)
    };
    thrown.or(opened()).map_err(Failure::into_js)
}

/// A read cursor over a JavaScript array (a ciphertext downloaded or
/// sealed into JavaScript memory), copied into the module a read at a time.
pub(crate) struct JsCursor {
    array: Uint8Array,
    at: u32,
}

impl JsCursor {
    /// A cursor at the start of `array`.
    pub(crate) fn new(array: Uint8Array) -> Self {
        Self { array, at: 0 }
    }
}

impl Read for JsCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.array.length().saturating_sub(self.at);
        let n = left.min(u32::try_from(buf.len()).unwrap_or(u32::MAX));
        if let Some(dest) = buf.get_mut(..n as usize) {
            self.array.subarray(self.at, self.at + n).copy_to(dest);
        }
        self.at += n;
        Ok(n as usize)
    }
}

impl std::io::Seek for JsCursor {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        use std::io::SeekFrom;
        let total = i64::from(self.array.length());
        let at = match pos {
            SeekFrom::Start(n) => i64::try_from(n).unwrap_or(i64::MAX),
            SeekFrom::End(d) => total.saturating_add(d),
            SeekFrom::Current(d) => i64::from(self.at).saturating_add(d),
        };
        if !(0..=total).contains(&at) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek outside the array",
            ));
        }
        self.at = u32::try_from(at).unwrap_or(0);
        Ok(at as u64)
    }
}

/// A reader reporting `(done, total, phase)` every [`PROGRESS_EVERY`]
/// bytes read through it.
struct Reported<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    total: u64,
    phase: &'static str,
    progress: &'a Progress,
}

impl<'a, R> Reported<'a, R> {
    fn new(inner: R, total: u64, phase: &'static str, progress: &'a Progress) -> Self {
        Self {
            inner,
            done: 0,
            reported: 0,
            total,
            phase,
            progress,
        }
    }
}

impl<R: Read> Read for Reported<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done = self.done.saturating_add(n as u64);
        if self.done - self.reported >= PROGRESS_EVERY {
            self.reported = self.done;
            self.progress
                .report(self.done.min(self.total), self.total, self.phase);
        }
        Ok(n)
    }
}

/// The file's bytes, read through `read(offset, len)` (slices of the file
/// held whole, in the worker or on the page).
struct FileReader<'a> {
    read: &'a Function,
    offset: u64,
    total: u64,
    /// What is read, for an error.
    what: &'static str,
    thrown: &'a Thrown,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte past the declared end, so a file that grew is noticed.
        let want = (self.total + 1)
            .saturating_sub(self.offset)
            .min(buf.len() as u64);
        if want == 0 {
            return Ok(0);
        }
        let chunk = self
            .read
            .call2(
                &JsValue::NULL,
                &JsValue::from_f64(self.offset as f64),
                &JsValue::from_f64(want as f64),
            )
            .map_err(|e| self.thrown.note(&e, self.what))?;
        let chunk: Uint8Array = chunk
            .dyn_into()
            .map_err(|_| std::io::Error::other("the file reader did not return bytes"))?;
        let n = (chunk.length() as usize).min(buf.len());
        let dest = buf
            .get_mut(..n)
            .ok_or_else(|| std::io::Error::other("short buffer"))?;
        chunk.subarray(0, n as u32).copy_to(dest);
        self.offset += n as u64;
        Ok(n)
    }
}

/// Bytes written into a JavaScript array, front to back; more than it
/// holds is an error.
pub(crate) struct JsBuffer<'a> {
    array: &'a Uint8Array,
    at: u32,
}

impl<'a> JsBuffer<'a> {
    /// Writes into `array` from its start.
    pub(crate) fn new(array: &'a Uint8Array) -> Self {
        Self { array, at: 0 }
    }
}

impl Write for JsBuffer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = u32::try_from(buf.len())
            .ok()
            .filter(|n| {
                self.at
                    .checked_add(*n)
                    .is_some_and(|end| end <= self.array.length())
            })
            .ok_or_else(|| std::io::Error::other("more bytes than announced"))?;
        self.array.subarray(self.at, self.at + n).copy_from(buf);
        self.at += n;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A thrown JS value's message, for an error.
pub(crate) fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "the file could not be read".to_owned())
}

/// A failure thrown or rejected by the worker's side: the module's
/// `"code: message"` errors pass through, anything else is `internal`.
pub(crate) fn elsewhere_failure(e: &JsValue, doing: &str) -> Failure {
    let text = js_message(e);
    coded(&text).unwrap_or_else(|| Failure::new("internal", format!("{doing} failed: {text}")))
}

/// `text` as a failure if it is a `"code: message"` error.
fn coded(text: &str) -> Option<Failure> {
    text.split_once(": ")
        .filter(|(code, _)| {
            !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .map(|(code, message)| Failure::new(code, message))
}

/// Calls the JS `f(job, extra)` and awaits the promise it returns; the
/// job's bytes given to it are zeroized once it settled.
async fn call_elsewhere(f: &Function, job: &[u8], extra: &JsValue, doing: &str) -> Result<JsValue> {
    let arg = Uint8Array::from(job);
    let called = f.call2(&JsValue::NULL, &arg, extra);
    let answer = match called {
        Ok(promise) => match promise.dyn_into::<js_sys::Promise>() {
            Ok(promise) => wasm_bindgen_futures::JsFuture::from(promise).await,
            Err(_) => Err(JsValue::from_str("internal: not a promise")),
        },
        Err(e) => Err(e),
    };
    arg.fill(0, 0, arg.length());
    answer.map_err(|e| elsewhere_failure(&e, doing))
}

/// The page's side of opening: the body of a verified record, opened by
/// the JS `opener(job, ciphertext)` (a function returning a promise of the
/// body, from the worker or from [`open_payload`] on the page).
/// `ciphertext` is a `Uint8Array`, or the spool object the download was
/// written to (the worker opens it from disk); the body is a `Uint8Array`,
/// or a `Blob` (a file on the browser's disk) for a spooled one.
pub(crate) async fn open_elsewhere(
    opener: &Function,
    job: &OpenJob,
    ciphertext: &JsValue,
) -> Result<JsValue> {
    let answer = call_elsewhere(opener, &job.to_bytes(), ciphertext, "opening").await?;
    if answer.is_instance_of::<Uint8Array>() || answer.is_instance_of::<web_sys::Blob>() {
        Ok(answer)
    } else {
        Err(Failure::new("internal", "the opener returned no body"))
    }
}

/// A ciphertext sealed elsewhere, where the page reads it for the upload.
#[derive(Debug)]
pub(crate) enum SealedCiphertext {
    /// In JavaScript memory.
    Memory(Uint8Array),
    /// In a file on the browser's disk (the worker's spool in the origin's
    /// private file system), read a chunk at a time: a file larger than
    /// memory.
    File(web_sys::Blob),
}

/// The page's side: a payload sealed by the JS `sealer(job)` (a function
/// returning a promise of `{ciphertext, hash}`, from the worker or from
/// [`seal_payload`] on the page; `ciphertext` a `Uint8Array`, or a `Blob`
/// when the worker spooled it to disk), given `job` (the bytes of
/// `vault_core::PayloadJob::to_bytes`); its ciphertext must be
/// `ciphertext_len` bytes. The JS copy of the job is zeroized once the
/// sealer settled; the sealer zeroizes its own.
pub(crate) async fn seal_elsewhere(
    sealer: &Function,
    job: &[u8],
    ciphertext_len: u64,
) -> Result<(SealedCiphertext, [u8; 32])> {
    let answer = call_elsewhere(sealer, job, &JsValue::UNDEFINED, "sealing").await?;
    let get = |key: &str| Reflect::get(&answer, &JsValue::from_str(key)).ok();
    let (ciphertext, len) = match get("ciphertext") {
        Some(v) if v.is_instance_of::<Uint8Array>() => {
            let array = Uint8Array::from(v);
            let len = u64::from(array.length());
            (SealedCiphertext::Memory(array), len)
        }
        Some(v) if v.is_instance_of::<web_sys::Blob>() => {
            let blob = web_sys::Blob::from(v);
            let len = blob.size() as u64;
            (SealedCiphertext::File(blob), len)
        }
        _ => {
            return Err(Failure::new(
                "internal",
                "the sealer returned no ciphertext",
            ))
        }
    };
    let hash: [u8; 32] = get("hash")
        .and_then(|v| v.dyn_into::<Uint8Array>().ok())
        .and_then(|h| h.to_vec().try_into().ok())
        .ok_or_else(|| Failure::new("internal", "the sealer returned no hash"))?;
    if len != ciphertext_len {
        return Err(Failure::new(
            "internal",
            "the sealer returned a ciphertext of the wrong length",
        ));
    }
    Ok((ciphertext, hash))
}

#[cfg(all(test, target_arch = "wasm32"))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::io::{Seek, SeekFrom};

    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    #[wasm_bindgen_test]
    fn a_cursor_reads_its_array_and_never_seeks_outside_it() {
        let array = Uint8Array::from(&(0u8..100).collect::<Vec<_>>()[..]);
        let mut cursor = JsCursor::new(array.clone());
        let mut buf = [0u8; 64];
        assert_eq!(cursor.read(&mut buf).unwrap(), 64);
        assert_eq!(cursor.read(&mut buf).unwrap(), 36);
        assert_eq!(buf.get(..36), Some(&(64u8..100).collect::<Vec<_>>()[..]));
        assert_eq!(cursor.read(&mut buf).unwrap(), 0);
        assert_eq!(cursor.at, 100);
        assert_eq!(cursor.seek(SeekFrom::End(-1)).unwrap(), 99);
        assert_eq!(cursor.read(&mut buf).unwrap(), 1);
        assert_eq!(buf.first(), Some(&99));
        for outside in [
            SeekFrom::Start(101),
            SeekFrom::End(1),
            SeekFrom::Current(-101),
        ] {
            assert!(cursor.seek(outside).is_err(), "{outside:?}");
        }
        assert_eq!(cursor.at, 100, "a refused seek moves nothing");
        assert_eq!(cursor.seek(SeekFrom::Start(0)).unwrap(), 0);
    }

    #[wasm_bindgen_test]
    fn a_buffer_takes_no_more_than_its_array_holds() {
        let array = Uint8Array::new_with_length(10);
        let mut out = JsBuffer::new(&array);
        out.write_all(&[7; 6]).unwrap();
        assert!(out.write(&[8; 5]).is_err());
        out.write_all(&[9; 4]).unwrap();
        assert_eq!(array.to_vec(), [7, 7, 7, 7, 7, 7, 9, 9, 9, 9]);
        assert!(out.write(&[1]).is_err());
    }

    #[wasm_bindgen_test]
    async fn a_sealer_answer_of_the_wrong_length_or_a_code_is_a_failure() {
        let job = PayloadJob::from_bytes(&test_job()).unwrap();
        let (bytes, len) = (job.to_bytes(), job.ciphertext_len());
        let short = Function::new_with_args(
            "job",
            "return Promise.resolve({ ciphertext: new Uint8Array(3), hash: new Uint8Array(32) })",
        );
        let e = seal_elsewhere(&short, &bytes, len).await.unwrap_err();
        assert_eq!(e.code, "internal");
        assert!(e.message.contains("wrong length"), "{}", e.message);
        // A spooled ciphertext comes back as a Blob (a File of the private
        // file system), held to the same length.
        let spooled = |n: u64| {
            Function::new_with_args(
                "job",
                &format!("return Promise.resolve({{ ciphertext: new Blob([new Uint8Array({n})]), hash: new Uint8Array(32) }})"),
            )
        };
        let (ciphertext, _) = seal_elsewhere(&spooled(len), &bytes, len).await.unwrap();
        assert!(matches!(ciphertext, SealedCiphertext::File(ref b) if b.size() as u64 == len));
        let e = seal_elsewhere(&spooled(len + 1), &bytes, len)
            .await
            .unwrap_err();
        assert!(e.message.contains("wrong length"), "{}", e.message);
        // The worker's "code: message" errors pass through; the job's bytes
        // given to the sealer are zeroed once it settled.
        let failing = Function::new_with_args(
            "job",
            "globalThis.__job = job; return Promise.reject(new Error('length_mismatch: the file changed'))",
        );
        let e = seal_elsewhere(&failing, &bytes, len).await.unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("length_mismatch", "the file changed")
        );
        let given: Uint8Array = Reflect::get(&js_sys::global(), &"__job".into())
            .unwrap()
            .dyn_into()
            .unwrap();
        assert!(given.length() > 33 && given.to_vec().iter().all(|b| *b == 0));
    }

    /// A job's bytes for a 10-byte body under a 32-byte header, any key.
    fn test_job() -> Vec<u8> {
        let header_len = 32u64;
        let padded = vault_core::padded_len(10 + header_len).unwrap();
        // Version 2, BLAKE3 addresses (kind 2), then the key.
        let mut bytes = vec![2u8, 2];
        bytes.extend_from_slice(&[5; 32]);
        bytes.extend_from_slice(&10u64.to_be_bytes());
        bytes.extend_from_slice(&padded.to_be_bytes());
        bytes.extend_from_slice(&[0; 32]);
        bytes
    }
}
