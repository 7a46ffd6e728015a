//! The web app's sealing worker (decision 56): a record version's payload
//! sealed from a [`PayloadJob`] alone, away from the page's thread.
//!
//! The worker holds one record version's payload key and nothing else: the
//! page plans the version ([`vault_core::VaultState::plan_record`]), posts
//! the job's bytes and the file, and finishes the version with the hash
//! the worker returns ([`vault_core::VaultState::finish_record`]). The
//! passphrase, the identity's keys, the collection keys and the data key
//! never leave the page. Without workers, the page calls
//! [`seal_payload`] itself: one sealing code either way.

use std::io::{Read, Write};

use js_sys::{Function, Object, Reflect, Uint8Array};
use vault_core::PayloadJob;
use wasm_bindgen::prelude::*;
use zeroize::Zeroizing;

use crate::failure::{Failure, Result};
use crate::progress::Progress;

/// How much of the file one call to the page's or worker's `read` asks for.
const READ_AHEAD: usize = 1 << 20;
/// How often (in plaintext bytes read) sealing reports its progress.
const PROGRESS_EVERY: u64 = 4 << 20;

/// Seals the payload described by `job` (the bytes of
/// [`PayloadJob::to_bytes`]) from a file of exactly the job's body length,
/// read through `read(offset, length)` (a synchronous function returning a
/// `Uint8Array`: `FileReaderSync` in the worker, a slice of the file's bytes
/// on the page), reporting `(done, total, "sealing")` to `progress`.
///
/// Returns `{ciphertext: Uint8Array, hash: Uint8Array}`: the ciphertext in
/// JavaScript memory (nothing of the file is kept in the module's memory
/// beyond one 64 KiB chunk), and its SHA-256. Throws `length_mismatch` if
/// the file changed size while it was read.
#[wasm_bindgen(js_name = sealPayload)]
pub fn seal_payload(
    job: &[u8],
    read: &Function,
    progress: Option<Function>,
) -> std::result::Result<Object, JsValue> {
    seal(job, read, Progress::new(progress)).map_err(Failure::into_js)
}

fn seal(job: &[u8], read: &Function, progress: Progress) -> Result<Object> {
    let job = PayloadJob::from_bytes(job)?;
    let len = u32::try_from(job.ciphertext_len())
        .map_err(|_| Failure::new("too_large", "this file is too large to seal in the browser"))?;
    let ciphertext = Uint8Array::new_with_length(len);
    let total = job.body_len();
    // Larger reads than the sealer's 64 KiB: each crosses into JavaScript
    // and slices the file once.
    let body = std::io::BufReader::with_capacity(
        READ_AHEAD,
        FileReader {
            read,
            offset: 0,
            total,
            progress: &progress,
            reported: 0,
        },
    );
    let out = JsBuffer {
        array: &ciphertext,
        at: 0,
    };
    progress.report(0, total, "sealing");
    let hash = job.seal(body, out)?;
    progress.report(total, total, "sealing");
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

/// The file, read through the page's or the worker's `read(offset, len)`.
struct FileReader<'a> {
    read: &'a Function,
    offset: u64,
    total: u64,
    progress: &'a Progress,
    reported: u64,
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
            .map_err(|e| std::io::Error::other(js_message(&e)))?;
        let chunk: Uint8Array = chunk
            .dyn_into()
            .map_err(|_| std::io::Error::other("the file reader did not return bytes"))?;
        let n = (chunk.length() as usize).min(buf.len());
        let dest = buf
            .get_mut(..n)
            .ok_or_else(|| std::io::Error::other("short buffer"))?;
        chunk.subarray(0, n as u32).copy_to(dest);
        self.offset += n as u64;
        if self.offset - self.reported >= PROGRESS_EVERY {
            self.reported = self.offset;
            self.progress
                .report(self.offset.min(self.total), self.total, "sealing");
        }
        Ok(n)
    }
}

/// Ciphertext written into a JavaScript array of its exact length.
struct JsBuffer<'a> {
    array: &'a Uint8Array,
    at: u32,
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
            .ok_or_else(|| std::io::Error::other("more ciphertext than the job announced"))?;
        self.array.subarray(self.at, self.at + n).copy_from(buf);
        self.at += n;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A thrown JS value's message, for an error.
fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "the file could not be read".to_owned())
}

/// The page's side: a payload sealed by the JS `sealer(job)` (a function
/// returning a promise of `{ciphertext, hash}`, from the worker or from
/// [`seal_payload`] on the page). The job's bytes are zeroized here once
/// the sealer returned; the sealer zeroizes its copy.
pub(crate) async fn seal_elsewhere(
    sealer: &Function,
    job: &PayloadJob,
) -> Result<(Uint8Array, [u8; 32])> {
    let bytes: Zeroizing<Vec<u8>> = job.to_bytes();
    let arg = Uint8Array::from(bytes.as_slice());
    let called = sealer.call1(&JsValue::NULL, &arg);
    let answer = match called {
        Ok(promise) => {
            let promise: js_sys::Promise = promise
                .dyn_into()
                .map_err(|_| Failure::new("internal", "the sealer did not return a promise"))?;
            wasm_bindgen_futures::JsFuture::from(promise).await
        }
        Err(e) => Err(e),
    };
    arg.fill(0, 0, arg.length());
    let answer = answer.map_err(|e| {
        let text = js_message(&e);
        // The worker passes the module's "code: message" errors through.
        match text.split_once(": ") {
            Some((code, message)) if code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                Failure::new(code, message)
            }
            _ => Failure::new("internal", format!("sealing failed: {text}")),
        }
    })?;
    let get = |key: &str| Reflect::get(&answer, &JsValue::from_str(key)).ok();
    let ciphertext: Uint8Array = get("ciphertext")
        .and_then(|v| v.dyn_into().ok())
        .ok_or_else(|| Failure::new("internal", "the sealer returned no ciphertext"))?;
    let hash: [u8; 32] = get("hash")
        .and_then(|v| v.dyn_into::<Uint8Array>().ok())
        .and_then(|h| h.to_vec().try_into().ok())
        .ok_or_else(|| Failure::new("internal", "the sealer returned no hash"))?;
    if u64::from(ciphertext.length()) != job.ciphertext_len() {
        return Err(Failure::new(
            "internal",
            "the sealer returned a ciphertext of the wrong length",
        ));
    }
    Ok((ciphertext, hash))
}
