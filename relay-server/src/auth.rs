//! Authentication of signed requests (`docs/relay-api.md`,
//! "Authentication"): the signature against the caller's published
//! identity, a bounded clock skew, a nonce cache against replay, and a
//! per-key rate limit. No secrets are stored: the relay holds public keys
//! only.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use vault_core::request::{body_digest, RelayOrigin, RequestAuth, HEADER_RELAY, HEADER_SIGNATURE};
use vault_core::{Fingerprint, IdentityInfo, PublicIdentity, Role, SecretIdentity};

use crate::error::ApiError;

/// The authenticated caller of a request, put in the request's extensions.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The caller's fingerprint (its published identity signed the request).
    pub fingerprint: Fingerprint,
    /// The signed body digest, checked once the body is read.
    pub content_sha256: [u8; 32],
    /// The request's nonce when the relay's store is shared and the route
    /// claims it there itself, with what it reads first (an append or a
    /// repair: decision 59); `None` once claimed, or over a store this
    /// relay alone uses (its own cache is exact).
    pub unclaimed: Option<crate::storage::NonceClaim>,
}

impl Caller {
    /// The caller's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The request's nonce, to claim in the shared store (see
    /// [`Caller::unclaimed`]).
    pub fn unclaimed_nonce(&self) -> Option<crate::storage::NonceClaim> {
        self.unclaimed
    }
}

/// Shards of the replay cache: requests of different keys rarely wait for
/// each other's lock.
const NONCE_SHARDS: usize = 64;

/// The live nonces of one key, with their expiry times.
#[derive(Default)]
struct KeyNonces {
    /// Every live nonce of the key.
    seen: HashSet<[u8; 16]>,
    /// The same nonces by expiry (Unix seconds), soonest first.
    by_expiry: BinaryHeap<Reverse<(u64, [u8; 16])>>,
}

impl KeyNonces {
    /// Forgets this key's nonces that expired before `now` (its own only:
    /// the cost is the number forgotten, never the size of the cache).
    fn expire(&mut self, now: u64) {
        while let Some(Reverse((expires, nonce))) = self.by_expiry.peek().copied() {
            if expires >= now {
                break;
            }
            self.by_expiry.pop();
            self.seen.remove(&nonce);
        }
    }

    /// When the soonest of this key's nonces expires.
    fn next_expiry(&self) -> Option<u64> {
        self.by_expiry.peek().map(|Reverse((e, _))| *e)
    }
}

/// What [`NonceCache::insert`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceOutcome {
    /// The nonce is new and is now remembered.
    Fresh,
    /// The nonce is live already: the request is a replay.
    Replayed,
    /// The key already holds its bound of live nonces; one of them expires
    /// in this many seconds (at least 1).
    KeyFull(u64),
}

/// Replay protection: the nonces of each key, each remembered until its
/// request's timestamp plus the past skew (after that the timestamp alone
/// refuses it). Every key has its own bound of live nonces, so no key can
/// push out, or crowd out, another key's nonces; an insert costs
/// O(log n) in the key's own nonces plus the ones of that key that expired,
/// and never scans the cache.
pub struct NonceCache {
    shards: Vec<Mutex<HashMap<Fingerprint, KeyNonces>>>,
    per_key: usize,
}

impl NonceCache {
    /// A cache holding at most `per_key` live nonces for each key.
    pub fn new(per_key: usize) -> Self {
        Self {
            shards: (0..NONCE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            per_key: per_key.max(1),
        }
    }

    /// The bound of live nonces per key.
    pub fn per_key(&self) -> usize {
        self.per_key
    }

    fn shard(&self, fp: &Fingerprint) -> Option<&Mutex<HashMap<Fingerprint, KeyNonces>>> {
        let i = fp.as_bytes().first().copied().unwrap_or(0) as usize % NONCE_SHARDS;
        self.shards.get(i)
    }

    /// Records `nonce` of key `fp`, remembered until `expires` (Unix
    /// seconds, inclusive). Only `fp`'s own nonces are looked at.
    pub fn insert(&self, fp: Fingerprint, nonce: [u8; 16], now: u64, expires: u64) -> NonceOutcome {
        let Some(shard) = self.shard(&fp) else {
            return NonceOutcome::KeyFull(1);
        };
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let key = map.entry(fp).or_default();
        key.expire(now);
        if key.seen.contains(&nonce) {
            return NonceOutcome::Replayed;
        }
        if key.seen.len() >= self.per_key {
            let wait = key
                .next_expiry()
                .map_or(1, |e| e.saturating_sub(now).saturating_add(1));
            return NonceOutcome::KeyFull(wait);
        }
        key.seen.insert(nonce);
        key.by_expiry.push(Reverse((expires, nonce)));
        NonceOutcome::Fresh
    }

    /// Live nonces held for `fp`.
    pub fn live(&self, fp: &Fingerprint, now: u64) -> usize {
        let Some(shard) = self.shard(fp) else {
            return 0;
        };
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(fp).map_or(0, |k| {
            k.expire(now);
            k.seen.len()
        })
    }

    /// Drops keys whose nonces have all expired (call periodically; one
    /// shard locked at a time).
    pub fn housekeeping(&self, now: u64) {
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, k| {
                k.expire(now);
                !k.seen.is_empty()
            });
        }
    }
}

/// The answer to a request that is not signed by a published identity
/// with a valid signature: the same whether the identity is unknown or the
/// signature is wrong, so it does not tell whether a fingerprint is
/// published here.
pub fn not_authenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        "the request signature does not verify for this identity, method, path and headers",
    )
}

/// The answer to a request whose nonce was already received (by this
/// relay, or by another over the same database).
pub fn replayed() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "replayed_nonce",
        "this request was already received (replayed nonce); sign every request afresh",
    )
}

/// The verification settings of an [`Authenticator`].
#[derive(Debug, Clone, Copy)]
pub struct AuthLimits {
    /// How far in the past a request may be dated, seconds (also how long
    /// its nonce is remembered after its timestamp).
    pub past_skew: u64,
    /// How far in the future a request may be dated, seconds.
    pub future_skew: u64,
    /// Sustained requests per second per key.
    pub rate: u32,
    /// Burst of requests per key above the rate.
    pub burst: u32,
}

impl AuthLimits {
    /// The bound of live nonces per key: `rate × (past_skew +
    /// future_skew)`, the most a key sending at its sustained rate can hold
    /// (a nonce lives at most that long), and at least 1.
    pub fn nonces_per_key(&self) -> usize {
        let window = self.past_skew.saturating_add(self.future_skew).max(1);
        let n = u64::from(self.rate.max(1)).saturating_mul(window);
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

/// Checks signed requests.
pub struct Authenticator {
    limits: AuthLimits,
    /// The origins signed requests may name (this relay's own).
    origins: Vec<RelayOrigin>,
    nonces: NonceCache,
    limiter: DefaultKeyedRateLimiter<Fingerprint>,
    /// Verified against when the signer is unknown, so that answer costs
    /// what a bad signature costs.
    decoy: Option<PublicIdentity>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    /// An authenticator with its skew window and per-key rate.
    pub fn new(limits: AuthLimits) -> Self {
        let rate = NonZeroU32::new(limits.rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limits,
            origins: Vec::new(),
            nonces: NonceCache::new(limits.nonces_per_key()),
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            decoy: decoy_identity(),
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
        self.limits.past_skew
    }

    /// The replay cache.
    pub fn nonces(&self) -> &NonceCache {
        &self.nonces
    }

    /// Refuses a request whose signer is not published, exactly as a bad
    /// signature is refused (same status, code and message), after
    /// verifying its signature against a decoy key so that the answer
    /// takes about as long as a real check.
    pub fn refuse_unknown(
        &self,
        auth: &RequestAuth,
        method: &str,
        path_and_query: &str,
    ) -> ApiError {
        // A request for another relay is refused as such whether or not its
        // signer is known here, so that answer tells nothing either.
        let relay = match self.signed_relay(auth) {
            Ok(relay) => relay,
            Err(e) => return e,
        };
        if let Some(decoy) = &self.decoy {
            let mut probe = auth.clone();
            probe.identity = decoy.fingerprint();
            // Always refused, whatever the outcome.
            let _ = std::hint::black_box(probe.verify(decoy, method, path_and_query, relay));
        }
        not_authenticated()
    }

    /// The relay origin a request is signed for, if it is one of this
    /// relay's (`401 wrong_relay` otherwise).
    fn signed_relay(&self, auth: &RequestAuth) -> Result<&RelayOrigin, ApiError> {
        self
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
            })
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
        let relay = self.signed_relay(auth)?;
        auth.verify(signer, method, path_and_query, relay)
            .map_err(|_| {
                ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "the request signature does not verify for this identity, method, path and headers",
            )
            })?;
        let now = unix_now();
        let AuthLimits {
            past_skew,
            future_skew,
            ..
        } = self.limits;
        if auth.timestamp.saturating_add(past_skew) < now
            || auth.timestamp > now.saturating_add(future_skew)
        {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "stale_timestamp",
                format!(
                    "the request time must be at most {past_skew} seconds before and {future_skew} seconds after the relay's clock; check the device clock and retry"
                ),
            )
            .with("server_time", json!(now)));
        }
        let fp = signer.fingerprint();
        // Rate first: refused requests must not fill the replay cache.
        if self.limiter.check_key(&fp).is_err() {
            return Err(over_rate());
        }
        // Remembered until the timestamp can no longer pass the check above.
        let expires = auth.timestamp.saturating_add(past_skew);
        match self.nonces.insert(fp, auth.nonce, now, expires) {
            NonceOutcome::Fresh => {}
            NonceOutcome::Replayed => return Err(replayed()),
            NonceOutcome::KeyFull(wait) => {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "this key has sent {} requests within the replay window, the most one key may; retry in {wait} seconds (other keys are not affected)",
                        self.nonces.per_key()
                    ),
                )
                .retry_after(wait))
            }
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
            unclaimed: None,
        })
    }

    /// Counts `n` more requests against `signer`'s rate, for a request
    /// that does the work of several (a batch read answers up to 1,024
    /// blobs, each of which would otherwise be a request of its own).
    /// Nothing is counted when they are refused: `429 rate_limited` when
    /// they do not fit now, `413 too_large` when they could never fit this
    /// relay's burst (the request must ask for less).
    pub fn take_more(&self, signer: &Fingerprint, n: usize) -> Result<(), ApiError> {
        if n == 0 {
            return Ok(());
        }
        let never = || {
            ApiError::too_large(format!(
                "this relay counts each blob of a batch read as a request and allows a key at most {} at once; ask for fewer blobs",
                self.limits.burst.max(1)
            ))
        };
        let n = u32::try_from(n)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(never)?;
        match self.limiter.check_key_n(signer, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(over_rate()),
            Err(_) => Err(never()),
        }
    }

    /// Forgets rate-limiter state of idle keys (call periodically).
    pub fn housekeeping(&self) {
        self.nonces.housekeeping(unix_now());
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The answer to a key over its request rate.
fn over_rate() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests for this key; slow down and retry",
    )
    .retry_after(1)
}

/// A fixed identity nobody signs as: the unknown-signer path verifies
/// against it. Its secret is derivable from the source, which is harmless:
/// a request checked against it is refused whatever the outcome.
fn decoy_identity() -> Option<PublicIdentity> {
    SecretIdentity::from_seed(
        &[0x5a; 32],
        &IdentityInfo {
            display_name: "relay decoy".into(),
            role: Role::Clinician,
            registration: None,
            created_at: 0,
        },
    )
    .ok()
    .map(|s| s.public().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint::from_bytes([b; 32])
    }

    #[test]
    fn nonces_are_bounded_and_expire_per_key() {
        let cache = NonceCache::new(3);
        let now = 1_000;
        // Key 1 fills its bound with nonces that live until now + 10.
        for n in 0..3u8 {
            assert_eq!(
                cache.insert(fp(1), [n; 16], now, now + 10),
                NonceOutcome::Fresh
            );
        }
        assert_eq!(
            cache.insert(fp(1), [0; 16], now, now + 10),
            NonceOutcome::Replayed
        );
        assert_eq!(
            cache.insert(fp(1), [9; 16], now, now + 10),
            NonceOutcome::KeyFull(11)
        );
        // Another key, even in the same shard, is not affected.
        let same_shard = Fingerprint::from_bytes({
            let mut b = [2u8; 32];
            b[0] = 1;
            b
        });
        for k in [fp(2), same_shard] {
            for n in 0..3u8 {
                assert_eq!(cache.insert(k, [n; 16], now, now + 10), NonceOutcome::Fresh);
            }
        }
        // Once key 1's nonces expire, it may send again; replays of expired
        // nonces are the timestamp check's to refuse.
        assert_eq!(cache.live(&fp(1), now + 10), 3);
        assert_eq!(
            cache.insert(fp(1), [9; 16], now + 11, now + 21),
            NonceOutcome::Fresh
        );
        assert_eq!(cache.live(&fp(1), now + 11), 1);
        assert_eq!(cache.live(&fp(2), now + 5), 3);
        cache.housekeeping(now + 30);
        assert_eq!(cache.live(&fp(2), now + 5), 0);
    }

    #[test]
    fn the_bound_per_key_is_rate_times_the_window() {
        let limits = AuthLimits {
            past_skew: 300,
            future_skew: 30,
            rate: 1000,
            burst: 4000,
        };
        assert_eq!(limits.nonces_per_key(), 330_000);
        let tiny = AuthLimits {
            past_skew: 0,
            future_skew: 0,
            rate: 0,
            burst: 1,
        };
        assert_eq!(tiny.nonces_per_key(), 1);
    }
}
