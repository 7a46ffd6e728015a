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

/// Offset of the scope tag in a version-2 entry (docs/format.md §8.1).
pub const ENTRY_SCOPE: usize = 57;
/// Offset of the author in a whole version-2 entry.
pub const ENTRY_AUTHOR: usize = 98;
/// Offset of the kind byte in a whole version-2 entry.
pub const ENTRY_KIND: usize = 130;
/// Offset of the payload in a whole version-2 entry (after its length).
pub const ENTRY_PAYLOAD: usize = 135;
/// Offset of the vault id in record metadata (§6.4).
pub const META_VAULT: usize = 1;
/// Offset of the collection id in record metadata.
pub const META_COLLECTION: usize = 17;
/// Offset of the wrapped data key in record metadata.
pub const META_WRAPPED: usize = 113;
/// Length of the signed part of record metadata.
pub const META_SIGNED: usize = vault_core::METADATA_LEN - 64;

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The collection a payload of `kind` names (§8.1: collection-created,
/// record-put, grant-added, rotations, agent-named, agency-ended).
fn named_collection(kind: u8, payload: &[u8]) -> Option<[u8; 16]> {
    let at = match kind {
        2 | 6 | 8 => 0,
        3 => META_COLLECTION,
        5 => {
            // u32 length + identity document, u32 length + grant; the
            // grant's collection follows version, vault and scope bytes.
            let doc = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) as usize;
            4 + doc + 4 + 1 + 16 + 1
        }
        12 => {
            // delegation, option(parent), powers, option(expiry), then as
            // kind 5: the agent's document and its grant.
            let parent = 1 + if *payload.get(16)? == 1 { 16 } else { 0 };
            let expiry_at = 16 + parent + 1;
            let at = expiry_at + 1 + if *payload.get(expiry_at)? == 1 { 8 } else { 0 };
            let doc = u32::from_be_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
            at + 4 + doc + 4 + 1 + 16 + 1
        }
        13 => 16,
        _ => return None,
    };
    payload.get(at..at + 16)?.try_into().ok()
}

/// The scope tag of entry `seq` concerning `collection` (§8.1).
pub fn scope_tag(vault: &VaultId, seq: u64, collection: Option<&[u8; 16]>) -> [u8; 32] {
    match collection {
        None => [0; 32],
        Some(c) => sha256(&[
            b"vault/v1/entry-scope\0",
            vault.as_bytes(),
            &seq.to_be_bytes(),
            c,
        ]),
    }
}

/// A whole version-2 entry with the given header fields and payload,
/// signed with `key`. Its scope tag names the collection the payload names
/// (genesis, and kinds that name only a record, take `forge_entry_in`).
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
    let collection = named_collection(kind, payload);
    forge_entry_in(
        key,
        vault,
        seq,
        prev,
        time,
        author,
        kind,
        payload,
        collection.as_ref(),
    )
}

/// [`forge_entry`] with the collection of the scope tag given.
#[allow(clippy::too_many_arguments)]
pub fn forge_entry_in(
    key: &SigningKey,
    vault: &VaultId,
    seq: u64,
    prev: &[u8; 32],
    time: u64,
    author: &Fingerprint,
    kind: u8,
    payload: &[u8],
    collection: Option<&[u8; 16]>,
) -> Vec<u8> {
    let mut head = vec![2u8];
    head.extend_from_slice(vault.as_bytes());
    head.extend_from_slice(&seq.to_be_bytes());
    head.extend_from_slice(prev);
    head.extend_from_slice(&scope_tag(vault, seq, collection));
    let mut signed = head.clone();
    signed.extend_from_slice(&time.to_be_bytes());
    signed.extend_from_slice(author.as_bytes());
    signed.push(kind);
    signed.extend_from_slice(&sha256(&[b"vault/v1/entry-payload\0", payload]));
    let sig = sign(key, b"vault/v1/log-entry\0", &signed);
    let mut out = head;
    out.push(1);
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(author.as_bytes());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&sig);
    out
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

/// A version-3 grant (docs/format.md §7.1) to `member`, signed with `key`
/// as `signer`, made from a collection grant of version 2 (`grant`, for
/// example an agent's own grant in its agent-named entry): same vault,
/// collection, epoch, permission, expiry, issue time, key commitment and
/// age file (which stays sealed to the original member). What an agent
/// signs when it shares, whether or not its agency allows it.
pub fn agent_grant(
    grant: &[u8],
    member: &Fingerprint,
    signer: &Fingerprint,
    key: &SigningKey,
) -> Vec<u8> {
    assert_eq!(grant[0], 2, "a version-2 grant");
    assert_eq!(grant[17], 1, "a collection grant");
    // version, vault, scope, collection, epoch, then the member.
    let member_at = 1 + 16 + 1 + 16 + 4;
    let expiry_at = member_at + 32 + 1;
    let fields_end = expiry_at + if grant[expiry_at] == 1 { 9 } else { 1 } + 8 + 32;
    let mut fields = grant[..fields_end].to_vec();
    fields[0] = 3;
    fields[member_at..member_at + 32].copy_from_slice(member.as_bytes());
    fields.extend_from_slice(signer.as_bytes());
    fields.extend_from_slice(&0u32.to_be_bytes());
    // The age file's hash, the length-prefixed file; then the signature.
    let rest = &grant[fields_end..grant.len() - 64];
    let mut signed = fields.clone();
    signed.extend_from_slice(&rest[..32]);
    let mut out = fields;
    out.extend_from_slice(rest);
    out.extend_from_slice(&sign(key, b"vault/v1/grant\0", &signed));
    out
}

/// A grant-added payload (kind 5): the member's identity document and the
/// grant, each length-prefixed.
pub fn grant_added_payload(member: &[u8], grant: &[u8]) -> Vec<u8> {
    let mut p = (member.len() as u32).to_be_bytes().to_vec();
    p.extend_from_slice(member);
    p.extend_from_slice(&(grant.len() as u32).to_be_bytes());
    p.extend_from_slice(grant);
    p
}
