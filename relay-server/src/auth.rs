//! Authentication of signed requests (`docs/relay-api.md`,
//! "Authentication"): the signature against the caller's published
//! identity, a bounded clock skew, a nonce cache against replay, and a
//! per-key rate limit. No secrets are stored: the relay holds public keys
//! only.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use vault_core::request::{body_digest, RelayOrigin, RequestAuth, HEADER_RELAY, HEADER_SIGNATURE};
use vault_core::{Fingerprint, PublicIdentity};

use crate::error::ApiError;

/// The authenticated caller of a request, put in the request's extensions.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The caller's fingerprint (its published identity signed the request).
    pub fingerprint: Fingerprint,
    /// The signed body digest, checked once the body is read.
    pub content_sha256: [u8; 32],
}

impl Caller {
    /// The caller's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

/// Replay protection: nonces seen within the skew window, per key.
pub struct NonceCache {
    seen: Mutex<HashMap<(Fingerprint, [u8; 16]), u64>>,
    max: usize,
}

impl NonceCache {
    /// A cache holding at most `max` live nonces.
    pub fn new(max: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// Records a nonce that stays replayable until `expires` (Unix seconds);
    /// `false` if it was already seen.
    fn insert(
        &self,
        key: (Fingerprint, [u8; 16]),
        now: u64,
        expires: u64,
    ) -> Result<bool, ApiError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(&key).is_some_and(|e| *e >= now) {
            return Ok(false);
        }
        if seen.len() >= self.max {
            seen.retain(|_, e| *e >= now);
            if seen.len() >= self.max {
                return Err(ApiError::unavailable(
                    "the relay's replay cache is full; retry in a few seconds",
                ));
            }
        }
        seen.insert(key, expires);
        Ok(true)
    }
}

/// Checks signed requests.
pub struct Authenticator {
    /// The origins signed requests may name (this relay's own).
    origins: Vec<RelayOrigin>,
    skew: u64,
    nonces: NonceCache,
    limiter: DefaultKeyedRateLimiter<Fingerprint>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    /// An authenticator with a skew window (seconds) and a per-key rate.
    pub fn new(skew: u64, rate: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            origins: Vec::new(),
            skew,
            nonces: NonceCache::new(1_000_000),
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// The same authenticator accepting requests signed for `origins` (this
    /// relay's own: [`crate::config::Config::relay_origins`]); with none,
    /// every request is refused.
    pub fn with_origins(mut self, origins: Vec<RelayOrigin>) -> Self {
        self.origins = origins;
        self
    }

    /// The origins signed requests may name.
    pub fn origins(&self) -> &[RelayOrigin] {
        &self.origins
    }

    /// The allowed clock skew, seconds.
    pub fn skew(&self) -> u64 {
        self.skew
    }

    /// Parses the authentication headers (`401 missing_auth`; `401
    /// unsupported_request_version` for a version-1 request, which is
    /// signed but names no relay).
    pub fn parse(headers: &HeaderMap) -> Result<RequestAuth, ApiError> {
        if headers.contains_key(HEADER_SIGNATURE) && !headers.contains_key(HEADER_RELAY) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unsupported_request_version",
                "this request is signed in version 1, which does not name the relay (no x-vault-relay header); this relay accepts request signatures version 2 only: update the client",
            ));
        }
        RequestAuth::from_headers(|k| headers.get(k).and_then(|v| v.to_str().ok()))
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "missing_auth", e.to_string()))
    }

    /// Verifies a parsed request against the signer's identity: the signed
    /// relay is this one, signature, timestamp, rate, nonce, and (for
    /// requests without a body) the digest.
    pub fn check(
        &self,
        auth: &RequestAuth,
        signer: &PublicIdentity,
        method: &str,
        path_and_query: &str,
        has_body: bool,
    ) -> Result<Caller, ApiError> {
        let relay = self
            .origins
            .iter()
            .find(|o| **o == auth.relay)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "wrong_relay",
                    format!(
                        "the request is signed for the relay at {}, not this one; configure the client with this relay's URL",
                        auth.relay
                    ),
                )
                .with(
                    "relay_origins",
                    json!(self.origins.iter().map(RelayOrigin::as_str).collect::<Vec<_>>()),
                )
            })?;
        auth.verify(signer, method, path_and_query, relay)
            .map_err(|_| {
                ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "the request signature does not verify for this identity, method, path and headers",
            )
            })?;
        let now = unix_now();
        if auth.timestamp.abs_diff(now) > self.skew {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "stale_timestamp",
                format!(
                    "the request time is more than {} seconds from the relay's clock; check the device clock and retry",
                    self.skew
                ),
            )
            .with("server_time", json!(now)));
        }
        let fp = signer.fingerprint();
        // Rate first: refused requests must not fill the replay cache.
        if self.limiter.check_key(&fp).is_err() {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this key; slow down and retry",
            )
            .retry_after(1));
        }
        if !self.nonces.insert(
            (fp, auth.nonce),
            now,
            auth.timestamp.saturating_add(self.skew),
        )? {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "replayed_nonce",
                "this request was already received (replayed nonce); sign every request afresh",
            ));
        }
        if !has_body && auth.content_sha256 != body_digest(b"") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_digest_mismatch",
                "a request without a body must sign the digest of the empty body",
            ));
        }
        Ok(Caller {
            fingerprint: fp,
            content_sha256: auth.content_sha256,
        })
    }

    /// Forgets rate-limiter state of idle keys (call periodically).
    pub fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
