//! Thin, documented wrappers over the standard primitives vault uses, so the
//! rest of the crate calls each primitive one way (`docs/format.md` §2).
//!
//! - SHA-256 (FIPS 180-4) for hashes and fingerprints.
//! - HKDF-SHA256 (RFC 5869) to derive purpose- and context-bound keys.
//! - ChaCha20-Poly1305 (RFC 8439) for wrapping keys and sealing small values.
//! - Ed25519 (RFC 8032), verified with `verify_strict` (no malleable or
//!   small-order signatures or keys).
//! - X25519 (RFC 7748), refusing low-order points and all-zero shared secrets.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of a ChaCha20-Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;
/// Length of a ChaCha20-Poly1305 nonce.
pub(crate) const NONCE_LEN: usize = 12;

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Fills a fresh array from the operating system's (or browser's) CSPRNG.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

/// HKDF-SHA256 with the given salt and info, producing a 32-byte key.
pub(crate) fn hkdf32(ikm: &[u8], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32 bytes, so
    // `expand` cannot fail; we still map the error rather than panic.
    if hk.expand(info, okm.as_mut()).is_err() {
        okm.fill(0);
    }
    okm
}

/// A commitment to a 32-byte key in a named context (`docs/format.md`
/// §5.4): HKDF-SHA256 with the key as input and
/// `vault/v1/key-commitment\0 || context` as info. Public: it reveals
/// nothing of the key, and a second key with the same commitment cannot be
/// found, so what is signed over it names exactly one key.
pub(crate) fn key_commitment(key: &[u8; 32], context: &[u8]) -> [u8; 32] {
    let info = [KEY_COMMITMENT_CONTEXT, context].concat();
    *hkdf32(key, &[], &info)
}

const KEY_COMMITMENT_CONTEXT: &[u8] = b"vault/v1/key-commitment\0";

/// ChaCha20-Poly1305 encryption of `plaintext` with associated data `aad`.
pub(crate) fn aead_seal(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    cipher
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // Encryption fails only for inputs longer than 256 GiB.
        .unwrap_or_default()
}

/// ChaCha20-Poly1305 decryption; every failure is [`Error::DecryptionFailed`].
pub(crate) fn aead_open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::DecryptionFailed)
}

/// Signs `context || message` with Ed25519.
pub(crate) fn sign(key: &SigningKey, signed_bytes: &[u8]) -> [u8; 64] {
    key.sign(signed_bytes).to_bytes()
}

/// Verifies an Ed25519 signature strictly (RFC 8032 with canonical `S`,
/// rejecting small-order `R` and keys), now.
pub(crate) fn verify(
    key: &VerifyingKey,
    signed_bytes: &[u8],
    signature: &[u8; 64],
    what: &'static str,
) -> Result<()> {
    let sig = Signature::from_bytes(signature);
    key.verify_strict(signed_bytes, &sig)
        .map_err(|_| Error::BadSignature { what })
}

/// [`verify`], or, while a [`crate::deferred::Deferral`] is active on this
/// thread, recorded to be checked with the rest of its batch. Only the
/// signatures a log entry carries (the entry's, its record metadata's, its
/// grants') are checked this way; every other check is made at once.
pub(crate) fn verify_in_batch(
    key: &VerifyingKey,
    signed_bytes: &[u8],
    signature: &[u8; 64],
    what: &'static str,
) -> Result<()> {
    if crate::deferred::record(key, signed_bytes, signature) {
        return Ok(());
    }
    verify(key, signed_bytes, signature, what)
}

/// Parses an Ed25519 public key, refusing non-canonical and small-order
/// encodings.
pub(crate) fn ed25519_public(bytes: &[u8; 32]) -> Result<VerifyingKey> {
    let key =
        VerifyingKey::from_bytes(bytes).map_err(|_| Error::WeakPublicKey { what: "Ed25519" })?;
    if key.is_weak() {
        return Err(Error::WeakPublicKey { what: "Ed25519" });
    }
    Ok(key)
}

/// Refuses X25519 public keys whose shared secret with any clamped scalar is
/// all-zero: the low-order points and their non-canonical encodings
/// (RFC 7748 §6.1, age spec "X25519 recipient type").
///
/// A clamped scalar is a multiple of the cofactor 8, so the product with a
/// point whose order divides 8 is the identity, whose u-coordinate is zero.
pub(crate) fn check_x25519_public(bytes: &[u8; 32]) -> Result<()> {
    // Any fixed scalar works; this one is arbitrary and public.
    let probe = x25519_dalek::StaticSecret::from([0x5a; 32]);
    let shared = probe.diffie_hellman(&x25519_dalek::PublicKey::from(*bytes));
    if shared.was_contributory() {
        Ok(())
    } else {
        Err(Error::WeakPublicKey { what: "X25519" })
    }
}

/// X25519 key agreement that refuses an all-zero shared secret. Our code
/// reaches X25519 only through age (which refuses all-zero secrets too);
/// this wrapper exists so the Wycheproof vectors pin that behaviour.
#[cfg(test)]
pub(crate) fn x25519(secret: &[u8; 32], public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
    let secret = x25519_dalek::StaticSecret::from(*secret);
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(Error::WeakPublicKey { what: "X25519" });
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// Constant-time equality for hashes used as authenticators and key material.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
