//! Signed relay requests (`docs/relay-api.md`, "Authentication").
//!
//! Every request to the relay carries six headers: the caller's
//! fingerprint, a timestamp, a random nonce, the SHA-256 of the body, the
//! origin of the relay the request is meant for, and an Ed25519 signature by
//! the caller over all of them plus the method and the path with its query.
//! The relay checks that the signed origin is one it is reachable at (so a
//! request signed for one relay is refused by every other), looks the
//! fingerprint up in its identity directory, verifies the signature, checks
//! the timestamp against its clock and the nonce against a replay cache.
//! Nothing secret is stored on the relay. Both halves live here so the
//! client and the server cannot disagree on the bytes that are signed.

use sha2::{Digest, Sha256};

use crate::encoding::Writer;
use crate::error::{Error, Result};
use crate::identity::{verify_with_context, Fingerprint, PublicIdentity, SecretIdentity};
use crate::primitives;

/// The signature context of a relay request (outside the `vault/v1/`
/// namespace of stored formats, so a request signature can never pass for
/// a log entry, grant, record or identity signature, nor the reverse).
pub const REQUEST_CONTEXT: &[u8] = b"vault-relay/v1/request\0";

/// The version of the signed request bytes. Version 2 added the relay's
/// origin; version-1 signatures (which named no relay) verify nowhere.
pub const REQUEST_VERSION: u8 = 2;

/// Header carrying the origin of the relay the request is signed for, in
/// the normalised form of [`RelayOrigin`] (for example
/// `https://relay.example`).
pub const HEADER_RELAY: &str = "x-vault-relay";
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

/// The longest relay origin, bytes.
pub const MAX_ORIGIN_LEN: usize = 300;

/// The origin of a relay (`scheme://host[:port]`), as a request signs it.
///
/// Normalised so that a client and a relay configured with differently
/// spelled URLs of the same relay agree: the scheme (`http` or `https`) and
/// the host are lowercase, an IPv6 host is in brackets in its compressed
/// form, the port is omitted when it is the scheme's default (80, 443), and
/// there is no path, query, fragment or user information (one trailing `/`
/// is accepted and dropped). Hosts are ASCII (write an internationalised
/// name in its `xn--` form).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelayOrigin(String);

impl RelayOrigin {
    /// Parses and normalises a relay URL such as `HTTPS://Relay.Example:443/`
    /// (→ `https://relay.example`). Anything but scheme, host and port is
    /// refused with [`Error::InvalidInput`].
    pub fn parse(url: &str) -> Result<Self> {
        const ERR: &str = "a relay origin is http:// or https://, a host and an optional port, and nothing else (for example https://relay.example or http://127.0.0.1:8787)";
        let url = url.trim();
        if url.len() > MAX_ORIGIN_LEN {
            return Err(Error::InvalidInput(
                "a relay origin is at most 300 characters",
            ));
        }
        let (scheme, rest) = url.split_once("://").ok_or(Error::InvalidInput(ERR))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(Error::InvalidInput(ERR)),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (ip, tail) = bracketed.split_once(']').ok_or(Error::InvalidInput(ERR))?;
            let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| Error::InvalidInput(ERR))?;
            (format!("[{ip}]"), tail)
        } else {
            let (host, tail) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            let valid = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(Error::InvalidInput(ERR));
            }
            (host.to_ascii_lowercase(), tail)
        };
        let port = match port {
            "" => None,
            tail => {
                let digits = tail.strip_prefix(':').ok_or(Error::InvalidInput(ERR))?;
                if digits.is_empty()
                    || digits.len() > 5
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(Error::InvalidInput(ERR));
                }
                Some(
                    digits
                        .parse::<u16>()
                        .map_err(|_| Error::InvalidInput(ERR))?,
                )
            }
        };
        Ok(Self(match port {
            Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
            _ => format!("{scheme}://{host}"),
        }))
    }

    /// The three loopback origins of a relay listening on `port` of a
    /// loopback address: `http://127.0.0.1:P`, `http://localhost:P` and
    /// `http://[::1]:P`.
    pub fn loopback(port: u16) -> [Self; 3] {
        let at = |host: &str| match port {
            80 => Self(format!("http://{host}")),
            p => Self(format!("http://{host}:{p}")),
        };
        [at("127.0.0.1"), at("localhost"), at("[::1]")]
    }

    /// The normalised text, as signed and sent in [`HEADER_RELAY`].
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RelayOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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
    /// The relay the request is for: a relay refuses a request signed for
    /// another origin than its own.
    pub relay: RelayOrigin,
    /// Ed25519 over [`REQUEST_CONTEXT`] and the canonical request.
    pub signature: [u8; 64],
}

/// The signed bytes after [`REQUEST_CONTEXT`] (`docs/relay-api.md`,
/// "Authentication"): version, method, path and query, relay origin,
/// fingerprint, timestamp, nonce, body digest.
fn signed_message(
    method: &str,
    path_and_query: &str,
    relay: &RelayOrigin,
    identity: &Fingerprint,
    timestamp: u64,
    nonce: &[u8; 16],
    content_sha256: &[u8; 32],
) -> Result<Vec<u8>> {
    if method.len() + path_and_query.len() > MAX_TARGET_LEN {
        return Err(Error::InvalidInput("request path is too long to sign"));
    }
    let mut w = Writer::new();
    w.u8(REQUEST_VERSION)
        .text(method)
        .text(path_and_query)
        .text(relay.as_str())
        .fixed(identity.as_bytes())
        .u64(timestamp)
        .fixed(nonce)
        .fixed(content_sha256);
    Ok(w.into_vec())
}

impl RequestAuth {
    /// Signs a request as `me` for the relay at `relay`. `path_and_query`
    /// is exactly what goes on the request line (for example
    /// `/v1/vaults/ab…/log?since=3`). A fresh random nonce is drawn.
    pub fn sign(
        me: &SecretIdentity,
        method: &str,
        path_and_query: &str,
        relay: &RelayOrigin,
        timestamp: u64,
        content_sha256: [u8; 32],
    ) -> Result<Self> {
        Self::sign_with_nonce(
            me,
            method,
            path_and_query,
            relay,
            timestamp,
            primitives::random::<16>(),
            content_sha256,
        )
    }

    /// [`RequestAuth::sign`] with a given nonce: for test vectors only. A
    /// nonce must never be reused (the relay refuses a repeated nonce
    /// within its skew window).
    pub fn sign_with_nonce(
        me: &SecretIdentity,
        method: &str,
        path_and_query: &str,
        relay: &RelayOrigin,
        timestamp: u64,
        nonce: [u8; 16],
        content_sha256: [u8; 32],
    ) -> Result<Self> {
        let identity = me.fingerprint();
        let message = signed_message(
            method,
            path_and_query,
            relay,
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
            relay: relay.clone(),
            signature,
        })
    }

    /// Verifies the signature against the caller's published identity
    /// (which must be the one the request names), the request line, and
    /// `relay`, the origin of the relay checking it (which must be the one
    /// the request names: a request signed for another relay fails). The
    /// timestamp window, the nonce cache and the body digest are the
    /// relay's to check.
    pub fn verify(
        &self,
        signer: &PublicIdentity,
        method: &str,
        path_and_query: &str,
        relay: &RelayOrigin,
    ) -> Result<()> {
        if signer.fingerprint() != self.identity {
            return Err(Error::FingerprintMismatch {
                expected: self.identity.to_string(),
                actual: signer.fingerprint(),
            });
        }
        if *relay != self.relay {
            return Err(Error::InvalidInput(
                "the request is signed for another relay",
            ));
        }
        let message = signed_message(
            method,
            path_and_query,
            relay,
            &self.identity,
            self.timestamp,
            &self.nonce,
            &self.content_sha256,
        )?;
        verify_with_context(signer, REQUEST_CONTEXT, &message, &self.signature)
    }

    /// The six headers, names and values.
    pub fn headers(&self) -> [(&'static str, String); 6] {
        [
            (HEADER_IDENTITY, self.identity.to_hex()),
            (HEADER_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_NONCE, hex::encode(self.nonce)),
            (HEADER_CONTENT_SHA256, hex::encode(self.content_sha256)),
            (HEADER_RELAY, self.relay.as_str().to_owned()),
            (HEADER_SIGNATURE, hex::encode(self.signature)),
        ]
    }

    /// Parses the six headers; `get` returns a header's value by
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
            relay: get(HEADER_RELAY)
                .and_then(|v| RelayOrigin::parse(v).ok().filter(|o| o.as_str() == v))
                .ok_or(Error::InvalidInput(
                    "missing or malformed x-vault-relay header (the relay's normalised origin, such as https://relay.example)",
                ))?,
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

    fn relay() -> RelayOrigin {
        RelayOrigin::parse("https://relay.example").unwrap()
    }

    #[test]
    fn round_trip_through_headers() {
        let me = me();
        let auth = RequestAuth::sign(
            &me,
            "POST",
            "/v1/x?y=1",
            &relay(),
            1_700_000_000,
            body_digest(b"{}"),
        )
        .unwrap();
        let headers: HashMap<_, _> = auth.headers().into_iter().collect();
        let parsed = RequestAuth::from_headers(|k| headers.get(k).map(String::as_str)).unwrap();
        assert_eq!(parsed, auth);
        parsed
            .verify(me.public(), "POST", "/v1/x?y=1", &relay())
            .unwrap();
    }

    #[test]
    fn every_signed_field_is_bound() {
        let me = me();
        let auth = RequestAuth::sign(
            &me,
            "POST",
            "/v1/x?y=1",
            &relay(),
            1_700_000_000,
            body_digest(b"a"),
        )
        .unwrap();
        assert!(auth
            .verify(me.public(), "PUT", "/v1/x?y=1", &relay())
            .is_err());
        assert!(auth
            .verify(me.public(), "POST", "/v1/x?y=2", &relay())
            .is_err());
        assert!(auth.verify(me.public(), "POST", "/v1/x", &relay()).is_err());
        let mut a = auth.clone();
        a.timestamp += 1;
        assert!(a
            .verify(me.public(), "POST", "/v1/x?y=1", &relay())
            .is_err());
        let mut a = auth.clone();
        a.nonce[0] ^= 1;
        assert!(a
            .verify(me.public(), "POST", "/v1/x?y=1", &relay())
            .is_err());
        let mut a = auth.clone();
        a.content_sha256 = body_digest(b"b");
        assert!(a
            .verify(me.public(), "POST", "/v1/x?y=1", &relay())
            .is_err());
        let other =
            SecretIdentity::from_seed(&[8; 32], &info("Dr Other", Role::Clinician)).unwrap();
        assert!(matches!(
            auth.verify(other.public(), "POST", "/v1/x?y=1", &relay()),
            Err(Error::FingerprintMismatch { .. })
        ));
        // The relay is bound: a request signed for one relay fails at
        // another, even if the other relay's origin is put in the header.
        let elsewhere = RelayOrigin::parse("https://other.example").unwrap();
        assert!(auth
            .verify(me.public(), "POST", "/v1/x?y=1", &elsewhere)
            .is_err());
        let mut a = auth.clone();
        a.relay = elsewhere.clone();
        assert!(a
            .verify(me.public(), "POST", "/v1/x?y=1", &elsewhere)
            .is_err());
    }

    #[test]
    fn origins_are_normalised() {
        for (input, want) in [
            ("https://relay.example", "https://relay.example"),
            ("HTTPS://Relay.EXAMPLE:443/", "https://relay.example"),
            ("http://relay.example:80", "http://relay.example"),
            ("http://relay.example:443", "http://relay.example:443"),
            ("https://relay.example:8443", "https://relay.example:8443"),
            (" http://127.0.0.1:8787 ", "http://127.0.0.1:8787"),
            ("http://[0:0:0:0:0:0:0:1]:8787", "http://[::1]:8787"),
            ("http://[::1]", "http://[::1]"),
        ] {
            assert_eq!(RelayOrigin::parse(input).unwrap().as_str(), want, "{input}");
        }
        for bad in [
            "relay.example",
            "ftp://relay.example",
            "https://",
            "https://relay.example/v1",
            "https://relay.example?x",
            "https://user@relay.example",
            "https://relay.example:",
            "https://relay.example:99999",
            "https://relay.example:+1",
            "https://[::1",
            "https://[zz]:1",
            "https://réseau.example",
            "https://relay.example:80:80",
        ] {
            assert!(RelayOrigin::parse(bad).is_err(), "{bad}");
        }
        let [a, b, c] = RelayOrigin::loopback(8787);
        assert_eq!(
            [a.as_str(), b.as_str(), c.as_str()],
            [
                "http://127.0.0.1:8787",
                "http://localhost:8787",
                "http://[::1]:8787"
            ]
        );
        assert_eq!(RelayOrigin::loopback(80)[0].as_str(), "http://127.0.0.1");
    }

    #[test]
    fn malformed_headers_are_named() {
        let me = me();
        let auth = RequestAuth::sign(&me, "GET", "/", &relay(), 1, body_digest(b"")).unwrap();
        for (drop, word) in [
            (HEADER_IDENTITY, "identity"),
            (HEADER_TIMESTAMP, "timestamp"),
            (HEADER_NONCE, "nonce"),
            (HEADER_CONTENT_SHA256, "sha256"),
            (HEADER_RELAY, "relay"),
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
        // The relay header must be in normalised form.
        let mut headers: HashMap<_, _> = auth.headers().into_iter().collect();
        headers.insert(HEADER_RELAY, "HTTPS://relay.example:443".into());
        assert!(RequestAuth::from_headers(|k| headers.get(k).map(String::as_str)).is_err());
    }
}
