//! The streaming payload encryption (`docs/format.md` §6.3): STREAM
//! (Hoang, Reyhanitabar, Rogaway and Vizár 2015) over ChaCha20-Poly1305 in
//! 64 KiB chunks, exactly as the age payload format uses it: the nonce is an
//! 11-byte big-endian chunk counter followed by a byte that is 1 for the last
//! chunk and 0 otherwise. We use the `aead` crate's `StreamBE32` with an
//! all-zero 7-byte prefix, which produces those nonces for the first 2^32
//! chunks (256 TiB).
//!
//! The payload key is unique per record version (a fresh random data key and
//! a fresh random salt), so the fixed nonce prefix is never reused with a key.
//! Reading and writing hold one chunk in memory.

use std::io::{Read, Write};

use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{ChaCha20Poly1305, Key};
#[cfg(not(target_arch = "wasm32"))]
use sha2::{Digest, Sha256};

use crate::address::{AddressHasher, AddressKind};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::primitives::TAG_LEN;

/// Plaintext bytes per chunk.
pub const CHUNK_LEN: usize = 64 * 1024;
const CHUNK_LEN_U64: u64 = CHUNK_LEN as u64;

/// Number of chunks for a plaintext of `len` bytes (at least one).
pub(crate) fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK_LEN_U64).max(1)
}

/// Ciphertext length for a plaintext of `len` bytes, or `None` on overflow.
pub fn ciphertext_len(len: u64) -> Option<u64> {
    len.checked_add(chunk_count(len).checked_mul(TAG_LEN as u64)?)
}

fn cipher(key: &Zeroizing<[u8; 32]>) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
}

/// SHA-256-addressed payloads at least this long hash their ciphertext on
/// a second thread (where threads exist), overlapping SHA-256 with
/// encryption. BLAKE3 addresses are hashed inline: at about a quarter of
/// the cipher's cost, a hand-off to another thread costs more than it
/// overlaps.
#[cfg(not(target_arch = "wasm32"))]
const PIPELINE_MIN_LEN: u64 = 1024 * 1024;
/// Chunks in flight to the hashing thread (bounds memory to a few chunks).
#[cfg(not(target_arch = "wasm32"))]
const PIPELINE_DEPTH: usize = 4;

/// Whether this process may run on more than one core (its CPU affinity
/// and cgroup quota, read once). On one core the hashing thread only takes
/// turns with the cipher, and the hand-off costs more than it overlaps: a
/// one-core seal ran at 0.40x the raw cipher with it.
#[cfg(not(target_arch = "wasm32"))]
fn second_core() -> bool {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from)) > 1
}

/// The content address of a ciphertext stream, computed inline or, for
/// large SHA-256-addressed payloads on native targets, on a scoped helper
/// thread fed through a bounded channel.
pub(crate) enum Hasher {
    Inline(AddressHasher),
    #[cfg(not(target_arch = "wasm32"))]
    Threaded {
        chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
        spare: std::sync::mpsc::Receiver<Vec<u8>>,
    },
}

impl Hasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Inline(h) => h.update(data),
            #[cfg(not(target_arch = "wasm32"))]
            Hasher::Threaded { chunks, spare } => {
                let mut buf = spare.try_recv().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(data);
                if let Some(tx) = chunks {
                    // A send fails only if the hashing thread is gone; the
                    // digest then cannot match, which the caller detects.
                    let _ = tx.send(buf);
                }
            }
        }
    }
}

/// Runs `f` with a [`Hasher`] of `kind` suited to a payload of `len` bytes
/// and returns its result with the address of everything `f` fed the
/// hasher.
pub(crate) fn with_hasher<T>(
    len: u64,
    kind: AddressKind,
    f: impl FnOnce(&mut Hasher) -> T,
) -> (T, [u8; 32]) {
    #[cfg(not(target_arch = "wasm32"))]
    if kind == AddressKind::Sha256 && len >= PIPELINE_MIN_LEN && second_core() {
        return std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPELINE_DEPTH);
            let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let worker = scope.spawn(move || {
                let mut h = Sha256::new();
                for chunk in rx {
                    h.update(&chunk);
                    let _ = spare_tx.send(chunk);
                }
                <[u8; 32]>::from(h.finalize())
            });
            let mut hasher = Hasher::Threaded {
                chunks: Some(tx),
                spare: spare_rx,
            };
            let out = f(&mut hasher);
            drop(hasher);
            // The worker only hashes; if it died, an all-zero digest makes
            // every comparison with a signed hash fail.
            (out, worker.join().unwrap_or([0; 32]))
        });
    }
    let _ = len;
    let mut hasher = Hasher::Inline(kind.hasher());
    let out = f(&mut hasher);
    let digest = match hasher {
        Hasher::Inline(h) => h.finalize(),
        #[cfg(not(target_arch = "wasm32"))]
        Hasher::Threaded { .. } => [0; 32],
    };
    (out, digest)
}

/// Encrypts a plaintext of known length to `out`, hashing the ciphertext.
pub(crate) struct PayloadWriter<'h, W: Write> {
    enc: Option<EncryptorBE32<ChaCha20Poly1305>>,
    out: W,
    buf: Zeroizing<Vec<u8>>,
    remaining: u64,
    hasher: &'h mut Hasher,
}

impl<'h, W: Write> PayloadWriter<'h, W> {
    /// `len` is the exact number of plaintext bytes that will be written.
    pub(crate) fn new(key: &Zeroizing<[u8; 32]>, len: u64, out: W, hasher: &'h mut Hasher) -> Self {
        Self {
            enc: Some(EncryptorBE32::from_aead(cipher(key), &Default::default())),
            out,
            buf: Zeroizing::new(Vec::with_capacity(CHUNK_LEN + TAG_LEN)),
            remaining: len,
            hasher,
        }
    }

    fn emit(&mut self) -> Result<()> {
        self.hasher.update(self.buf.as_slice());
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Adds plaintext; fails if more than the declared length is written.
    pub(crate) fn write_plain(&mut self, mut data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        if len > self.remaining {
            return Err(Error::InvalidInput("payload longer than declared"));
        }
        self.remaining -= len;
        while !data.is_empty() {
            let room = CHUNK_LEN - self.buf.len();
            let (now, later) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(now);
            data = later;
            // A full chunk is sealed as a middle chunk only once we know more
            // plaintext follows; the final chunk is sealed by `finish`.
            if self.buf.len() == CHUNK_LEN && (!data.is_empty() || self.remaining > 0) {
                let enc = self
                    .enc
                    .as_mut()
                    .ok_or(Error::InvalidInput("payload finished"))?;
                enc.encrypt_next_in_place(&[], &mut *self.buf)
                    .map_err(|_| Error::InvalidInput("payload too long"))?;
                self.emit()?;
            }
        }
        Ok(())
    }

    /// Seals the last chunk (the hash is returned by [`with_hasher`]).
    pub(crate) fn finish(mut self) -> Result<()> {
        if self.remaining != 0 {
            return Err(Error::InvalidInput("payload shorter than declared"));
        }
        let enc = self
            .enc
            .take()
            .ok_or(Error::InvalidInput("payload finished"))?;
        enc.encrypt_last_in_place(&[], &mut *self.buf)
            .map_err(|_| Error::InvalidInput("payload too long"))?;
        self.emit()?;
        self.out.flush()?;
        Ok(())
    }
}

/// Why reading a payload stopped.
pub(crate) enum PayloadFailure {
    /// A chunk failed to authenticate, the stream was short or long.
    Crypto,
    /// The caller's sink refused the plaintext.
    Sink(Error),
    /// Reading the input failed.
    Io(std::io::Error),
}

/// Decrypts a payload of `plain_len` plaintext bytes from `input`, handing
/// each authenticated chunk to `sink`. Returns the `kind` address of the
/// ciphertext read. On an authentication failure or a sink error the rest of the input
/// is still read and hashed (the hash, compared with signed metadata, then
/// tells the caller whether the ciphertext was swapped).
pub(crate) fn read_payload<R: Read>(
    key: &Zeroizing<[u8; 32]>,
    plain_len: u64,
    kind: AddressKind,
    input: R,
    sink: impl FnMut(&[u8]) -> Result<()>,
) -> (Result<(), PayloadFailure>, [u8; 32]) {
    with_hasher(plain_len, kind, |hasher| {
        read_chunks(key, plain_len, input, sink, hasher)
    })
}

fn read_chunks<R: Read>(
    key: &Zeroizing<[u8; 32]>,
    plain_len: u64,
    mut input: R,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
    hasher: &mut Hasher,
) -> Result<(), PayloadFailure> {
    let mut dec = Some(DecryptorBE32::from_aead(cipher(key), &Default::default()));
    let mut buf: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(CHUNK_LEN + TAG_LEN));
    let chunks = chunk_count(plain_len);
    let mut left = plain_len;
    let mut outcome = Ok(());
    for i in 0..chunks {
        let this = usize::try_from(left.min(CHUNK_LEN_U64)).unwrap_or(CHUNK_LEN);
        left -= this as u64;
        buf.clear();
        buf.resize(this + TAG_LEN, 0);
        if let Err(e) = read_full(&mut input, &mut buf) {
            outcome = Err(e);
            break;
        }
        hasher.update(buf.as_slice());
        let ok = if i + 1 == chunks {
            dec.take()
                .map(|d| d.decrypt_last_in_place(&[], &mut *buf).is_ok())
                .unwrap_or(false)
        } else {
            dec.as_mut()
                .map(|d| d.decrypt_next_in_place(&[], &mut *buf).is_ok())
                .unwrap_or(false)
        };
        if !ok {
            outcome = Err(PayloadFailure::Crypto);
            break;
        }
        if let Err(e) = sink(&buf) {
            outcome = Err(PayloadFailure::Sink(e));
            break;
        }
    }
    // Whatever happened, hash the rest so the caller can compare the whole
    // stream with the signed hash; any trailing byte is a failure.
    let mut rest = [0u8; 8192];
    loop {
        match input.read(&mut rest) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(rest.get(..n).unwrap_or_default());
                if outcome.is_ok() {
                    outcome = Err(PayloadFailure::Crypto);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Without the whole stream the hash says nothing, so a
                // sink's error can no longer be told from a swap.
                if matches!(outcome, Ok(()) | Err(PayloadFailure::Sink(_))) {
                    outcome = Err(PayloadFailure::Io(e));
                }
                break;
            }
        }
    }
    outcome
}

/// Reads exactly `buf.len()` bytes; a short stream is a crypto failure (the
/// ciphertext was truncated).
fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<(), PayloadFailure> {
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        match input.read(rest) {
            Ok(0) => return Err(PayloadFailure::Crypto),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PayloadFailure::Io(e)),
        }
    }
    Ok(())
}
