//! SMART Health Links, as the HL7 SMART Health Cards and Links
//! implementation guide (STU 1) specifies them, for both ends of a link:
//!
//! - [`payload`]: the link itself, a minified JSON payload (`url`, `key`,
//!   `exp`, `flag`, `label`, `v`) base64url-encoded after `shlink:/`,
//!   optionally behind a viewer URL ending in `#` so the key never reaches
//!   a server log;
//! - [`manifest`]: the manifest request (`recipient`, `passcode`,
//!   `embeddedLengthMax`) and the manifest (`files` with `contentType`
//!   and `embedded` or `location`), with a reader that refuses a file
//!   location on another origin than the manifest's;
//! - [`jwe`]: the files, JWE compact serialisation with `alg: dir`,
//!   `enc: A256GCM`, a `cty` header and optional `zip: DEF`, read back
//!   within size and decompression limits;
//! - [`key`]: the link key, 32 random bytes, zeroized on drop and never
//!   printed.
//!
//! Everything read here is untrusted: each parser checks before it acts,
//! returns a [`ShlError`] whose message says what was wrong and what to do,
//! and never panics. No network I/O: the HTTP side lives in vault-client
//! (the sharer's and viewer's) and relay-server (the host's).

#![forbid(unsafe_code)]

pub mod error;
pub mod jwe;
pub mod key;
pub mod manifest;
pub mod payload;

pub use error::ShlError;
pub use jwe::{Compression, Decrypted, JweHeader, JweLimits};
pub use key::LinkKey;
pub use manifest::{Manifest, ManifestFile, ManifestRequest};
pub use payload::{Flags, Payload};

/// `application/fhir+json`: a FHIR resource (vault shares Bundles).
pub const FHIR_JSON: &str = "application/fhir+json";
/// `application/smart-health-card`: a file of SMART Health Card JWSs.
pub const SMART_HEALTH_CARD: &str = "application/smart-health-card";
/// `application/smart-api-access`: a SMART access token response.
pub const SMART_API_ACCESS: &str = "application/smart-api-access";

/// The content types a manifest file may have (the specification's fixed
/// list); anything else is refused.
pub const CONTENT_TYPES: [&str; 3] = [FHIR_JSON, SMART_HEALTH_CARD, SMART_API_ACCESS];

/// Whether `ct` is one of [`CONTENT_TYPES`].
pub fn is_content_type(ct: &str) -> bool {
    CONTENT_TYPES.contains(&ct)
}

/// Base64url without padding, the only encoding these formats use.
pub(crate) fn b64e(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding (canonical: no padding, no stray
/// trailing bits).
pub(crate) fn b64d(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// 32 random bytes from the operating system (the browser's
/// `crypto.getRandomValues` on wasm32).
pub fn random_32() -> Result<[u8; 32], ShlError> {
    let mut out = [0u8; 32];
    getrandom::getrandom(&mut out).map_err(|_| ShlError::Random)?;
    Ok(out)
}

/// A new link id for a manifest URL: 32 random bytes, base64url (43
/// characters), the 256 bits of entropy the specification asks of a
/// manifest URL.
pub fn new_link_id() -> Result<String, ShlError> {
    Ok(b64e(&random_32()?))
}
