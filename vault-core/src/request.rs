//! Signed relay requests (`docs/relay-api.md`, "Authentication").
//!
//! Every request to the relay carries five headers: the caller's
//! fingerprint, a timestamp, a random nonce, the SHA-256 of the body, and an
//! Ed25519 signature by the caller over all of them plus the method and the
//! path with its query. The relay looks the fingerprint up in its identity
//! directory, verifies the signature, checks the timestamp against its clock
//! and the nonce against a replay cache. Nothing secret is stored on the
//! relay. Both halves live here so the client and the server cannot disagree
//! on the bytes that are signed.

use sha2::{Digest, Sha256};

use crate::encoding::Writer;
use crate::error::{Error, Result};
use crate::identity::{verify_with_context, Fingerprint, PublicIdentity, SecretIdentity};
use crate::primitives;

/// The signature context of a relay request (outside the `vault/v1/`
/// namespace of stored formats, so a request signature can never pass for
/// a log entry, grant, record or identity signature, nor the reverse).
pub const REQUEST_CONTEXT: &[u8] = b"vault-relay/v1/request\0";

/// Header carrying the caller's fingerprint (64 lowercase hex digits).
pub const HEADER_IDENTITY: &str = "x-vault-identity";
/// Header carrying the request time, Unix seconds.
pub const HEADER_TIMESTAMP: &str = "x-vault-timestamp";
/// Header carrying 16 random bytes, 32 lowercase hex digits.
pub const HEADER_NONCE: &str = "x-vault-nonce";
/// Header carrying the SHA-256 of the request body, 64 lowercase hex digits.
pub const HEADER_CONTENT_SHA256: &str = "x-vault-content-sha256";
/// Header carrying the Ed25519 signature, 128 lowercase hex digits.
pub const HEADER_SIGNATURE: &str = "x-vault-signature";

/// The longest method plus path-and-query a request may sign.
pub const MAX_TARGET_LEN: usize = 4096;

/// SHA-256 of a request body, as signed in [`HEADER_CONTENT_SHA256`].
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// An incremental [`body_digest`], for bodies that are streamed.
#[derive(Clone, Default)]
pub struct BodyDigest(Sha256);

impl BodyDigest {
    /// Starts a digest of an empty body.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds the next bytes of the body.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The digest of everything fed so far.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

impl std::fmt::Debug for BodyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyDigest")
    }
}

/// The authentication headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAuth {
    /// Who signed the request.
    pub identity: Fingerprint,
    /// When, in Unix seconds (the relay allows a bounded skew).
    pub timestamp: u64,
    /// Random, so two requests never sign the same bytes (the relay keeps a
    /// replay cache of nonces within its skew window).
    pub nonce: [u8; 16],
    /// SHA-256 of the body.
    pub content_sha256: [u8; 32],
    /// Ed25519 over [`REQUEST_CONTEXT`] and the canonical request.
    pub signature: [u8; 64],
}

fn signed_message(
    method: &str,
    path_and_query: &str,
    identity: &Fingerprint,
    timestamp: u64,
    nonce: &[u8; 16],
    content_sha256: &[u8; 32],
) -> Result<Vec<u8>> {
    if method.len() + path_and_query.len() > MAX_TARGET_LEN {
        return Err(Error::InvalidInput("request path is too long to sign"));
    }
    let mut w = Writer::new();
    w.u8(1)
        .text(method)
        .text(path_and_query)
        .fixed(identity.as_bytes())
        .u64(timestamp)
        .fixed(nonce)
        .fixed(content_sha256);
    Ok(w.into_vec())
}

impl RequestAuth {
    /// Signs a request as `me`. `path_and_query` is exactly what goes on
    /// the request line (for example `/v1/vaults/ab…/log?since=3`).
    pub fn sign(
        me: &SecretIdentity,
        method: &str,
        path_and_query: &str,
        timestamp: u64,
        content_sha256: [u8; 32],
    ) -> Result<Self> {
        let identity = me.fingerprint();
        let nonce = primitives::random::<16>();
        let message = signed_message(
            method,
            path_and_query,
            &identity,
            timestamp,
            &nonce,
            &content_sha256,
        )?;
        let signature = me.sign_with_context(REQUEST_CONTEXT, &message)?;
        Ok(Self {
            identity,
            timestamp,
            nonce,
            content_sha256,
            signature,
        })
    }

    /// Verifies the signature against the caller's published identity
    /// (which must be the one the request names) and the request line. The
    /// timestamp window, the nonce cache and the body digest are the
    /// relay's to check.
    pub fn verify(
        &self,
        signer: &PublicIdentity,
        method: &str,
        path_and_query: &str,
    ) -> Result<()> {
        if signer.fingerprint() != self.identity {
            return Err(Error::FingerprintMismatch {
                expected: self.identity.to_string(),
                actual: signer.fingerprint(),
            });
        }
        let message = signed_message(
            method,
            path_and_query,
            &self.identity,
            self.timestamp,
            &self.nonce,
            &self.content_sha256,
        )?;
        verify_with_context(signer, REQUEST_CONTEXT, &message, &self.signature)
    }

    /// The five headers, names and values.
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            (HEADER_IDENTITY, self.identity.to_hex()),
            (HEADER_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_NONCE, hex::encode(self.nonce)),
            (HEADER_CONTENT_SHA256, hex::encode(self.content_sha256)),
            (HEADER_SIGNATURE, hex::encode(self.signature)),
        ]
    }

    /// Parses the five headers; `get` returns a header's value by
    /// (lowercase) name. A missing or malformed header is
    /// [`Error::InvalidInput`] naming it.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self> {
        fn hex_array<const N: usize>(v: Option<&str>, err: &'static str) -> Result<[u8; N]> {
            let mut out = [0u8; N];
            let v = v.ok_or(Error::InvalidInput(err))?;
            hex::decode_to_slice(v, &mut out).map_err(|_| Error::InvalidInput(err))?;
            Ok(out)
        }
        let identity = get(HEADER_IDENTITY)
            .ok_or(Error::InvalidInput("missing x-vault-identity header"))
            .and_then(|v| {
                Fingerprint::from_hex(v)
                    .map_err(|_| Error::InvalidInput("malformed x-vault-identity header"))
            })?;
        let timestamp = get(HEADER_TIMESTAMP)
            .and_then(|v| {
                (!v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| v.parse::<u64>().ok())
                    .flatten()
            })
            .ok_or(Error::InvalidInput(
                "missing or malformed x-vault-timestamp header (Unix seconds)",
            ))?;
        Ok(Self {
            identity,
            timestamp,
            nonce: hex_array(
                get(HEADER_NONCE),
                "missing or malformed x-vault-nonce header (32 hex digits)",
            )?,
            content_sha256: hex_array(
                get(HEADER_CONTENT_SHA256),
                "missing or malformed x-vault-content-sha256 header (64 hex digits)",
            )?,
            signature: hex_array(
                get(HEADER_SIGNATURE),
                "missing or malformed x-vault-signature header (128 hex digits)",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IdentityInfo, Role};
    use std::collections::HashMap;

    fn info(name: &str, role: Role) -> IdentityInfo {
        IdentityInfo {
            display_name: name.into(),
            role,
            registration: None,
            created_at: 1_700_000_000,
        }
    }

    fn me() -> SecretIdentity {
        SecretIdentity::from_seed(&[7; 32], &info("Dr Request", Role::Clinician)).unwrap()
    }

    #[test]
    fn round_trip_through_headers() {
        let me = me();
        let auth =
            RequestAuth::sign(&me, "POST", "/v1/x?y=1", 1_700_000_000, body_digest(b"{}")).unwrap();
        let headers: HashMap<_, _> = auth.headers().into_iter().collect();
        let parsed = RequestAuth::from_headers(|k| headers.get(k).map(String::as_str)).unwrap();
        assert_eq!(parsed, auth);
        parsed.verify(me.public(), "POST", "/v1/x?y=1").unwrap();
    }

    #[test]
    fn every_signed_field_is_bound() {
        let me = me();
        let auth =
            RequestAuth::sign(&me, "POST", "/v1/x?y=1", 1_700_000_000, body_digest(b"a")).unwrap();
        assert!(auth.verify(me.public(), "PUT", "/v1/x?y=1").is_err());
        assert!(auth.verify(me.public(), "POST", "/v1/x?y=2").is_err());
        assert!(auth.verify(me.public(), "POST", "/v1/x").is_err());
        let mut a = auth.clone();
        a.timestamp += 1;
        assert!(a.verify(me.public(), "POST", "/v1/x?y=1").is_err());
        let mut a = auth.clone();
        a.nonce[0] ^= 1;
        assert!(a.verify(me.public(), "POST", "/v1/x?y=1").is_err());
        let mut a = auth.clone();
        a.content_sha256 = body_digest(b"b");
        assert!(a.verify(me.public(), "POST", "/v1/x?y=1").is_err());
        let other =
            SecretIdentity::from_seed(&[8; 32], &info("Dr Other", Role::Clinician)).unwrap();
        assert!(matches!(
            auth.verify(other.public(), "POST", "/v1/x?y=1"),
            Err(Error::FingerprintMismatch { .. })
        ));
    }

    #[test]
    fn malformed_headers_are_named() {
        let me = me();
        let auth = RequestAuth::sign(&me, "GET", "/", 1, body_digest(b"")).unwrap();
        for (drop, word) in [
            (HEADER_IDENTITY, "identity"),
            (HEADER_TIMESTAMP, "timestamp"),
            (HEADER_NONCE, "nonce"),
            (HEADER_CONTENT_SHA256, "sha256"),
            (HEADER_SIGNATURE, "signature"),
        ] {
            let headers: HashMap<_, _> = auth.headers().into_iter().collect();
            let err = RequestAuth::from_headers(|k| {
                (k != drop)
                    .then(|| headers.get(k).map(String::as_str))
                    .flatten()
            })
            .unwrap_err();
            assert!(err.to_string().contains(word), "{err}");
        }
        let mut headers: HashMap<_, _> = auth.headers().into_iter().collect();
        headers.insert(HEADER_TIMESTAMP, "+12".into());
        assert!(RequestAuth::from_headers(|k| headers.get(k).map(String::as_str)).is_err());
    }
}
