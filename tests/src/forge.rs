//! What an attacker (an outsider, or a member turned malicious) can forge
//! with keys of their own: entries and record metadata signed with an
//! identity whose seed the test knows, byte for byte as `docs/format.md`
//! lays them out.

// Test support: a malformed forgery is a broken test, failing loudly.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use ed25519_dalek::{Signer, SigningKey};
use vault_core::{Fingerprint, VaultId};

/// The Ed25519 key of `principal(seed, ..)` (docs/format.md §3.6): the
/// attacker owns this identity, so it can sign anything with it.
pub fn signing_key(seed: u8) -> SigningKey {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b""), &[seed; 32]);
    let mut okm = [0u8; 32];
    hk.expand(b"vault/v1/seed/ed25519", &mut okm).unwrap();
    SigningKey::from_bytes(&okm)
}

/// An Ed25519 signature over `context || body`.
pub fn sign(key: &SigningKey, context: &[u8], body: &[u8]) -> [u8; 64] {
    key.sign(&[context, body].concat()).to_bytes()
}

/// Offset of the kind byte in an entry (docs/format.md §8.1).
pub const ENTRY_KIND: usize = 97;
/// Offset of the payload in an entry.
pub const ENTRY_PAYLOAD: usize = 102;
/// Offset of the vault id in record metadata (§6.4).
pub const META_VAULT: usize = 1;
/// Offset of the collection id in record metadata.
pub const META_COLLECTION: usize = 17;
/// Offset of the wrapped data key in record metadata.
pub const META_WRAPPED: usize = 113;
/// Length of the signed part of record metadata.
pub const META_SIGNED: usize = vault_core::METADATA_LEN - 64;

/// An entry with the given header fields and payload, signed with `key`.
#[allow(clippy::too_many_arguments)]
pub fn forge_entry(
    key: &SigningKey,
    vault: &VaultId,
    seq: u64,
    prev: &[u8; 32],
    time: u64,
    author: &Fingerprint,
    kind: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = vec![1u8];
    body.extend_from_slice(vault.as_bytes());
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend_from_slice(prev);
    body.extend_from_slice(&time.to_be_bytes());
    body.extend_from_slice(author.as_bytes());
    body.push(kind);
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(payload);
    let sig = sign(key, b"vault/v1/log-entry\0", &body);
    body.extend_from_slice(&sig);
    body
}

/// The payload of an entry's bytes.
pub fn payload_of(entry: &[u8]) -> &[u8] {
    &entry[ENTRY_PAYLOAD..entry.len() - 64]
}

/// `entry` with its payload replaced, the header and signature kept (what
/// a relay that edits an entry in place produces).
pub fn with_payload(entry: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = entry[..ENTRY_PAYLOAD - 4].to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&entry[entry.len() - 64..]);
    out
}
