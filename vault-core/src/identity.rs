//! Identities: who a principal is, and how others recognise them
//! (`docs/format.md` §3 and §4).
//!
//! A principal holds an X25519 key pair in age encoding (to receive wrapped
//! keys) and an Ed25519 key pair (to sign what it writes and to authenticate
//! to the relay). Its [`PublicIdentity`] is a small self-signed document; its
//! [`Fingerprint`] is a hash of that document, shown as six groups of five
//! digits that two people can read aloud to each other.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bech32::{Bech32, Hrp};
use ed25519_dalek::{SigningKey, VerifyingKey};
use secrecy::SecretString;
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::ids::to_hex;
use crate::primitives::{self, sha256};

const IDENTITY_VERSION: u8 = 1;
pub(crate) const IDENTITY_SIGNATURE_CONTEXT: &[u8] = b"vault/v1/identity\0";
const FINGERPRINT_CONTEXT: &[u8] = b"vault/v1/fingerprint\0";
const TEXT_PREFIX: &str = "vault-identity:v1:";
const MAX_NAME: usize = 128;
const MAX_REGISTRATION: usize = 64;
/// Largest encoded public identity document we accept.
pub(crate) const MAX_IDENTITY_LEN: usize =
    1 + 1 + 2 + MAX_NAME + 1 + 2 + MAX_REGISTRATION + 32 + 32 + 8 + 64;

/// What kind of principal an identity belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// A patient, who owns vaults.
    Patient,
    /// A clinician, who receives grants.
    Clinician,
    /// An extra device of a principal.
    Device,
    /// An organisation (a hospital, a lab).
    Organisation,
}

impl Role {
    fn to_byte(self) -> u8 {
        match self {
            Role::Patient => 1,
            Role::Clinician => 2,
            Role::Device => 3,
            Role::Organisation => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Role::Patient,
            2 => Role::Clinician,
            3 => Role::Device,
            4 => Role::Organisation,
            _ => return None,
        })
    }

    /// The role's lowercase English name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Clinician => "clinician",
            Role::Device => "device",
            Role::Organisation => "organisation",
        }
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "patient" => Role::Patient,
            "clinician" => Role::Clinician,
            "device" => Role::Device,
            "organisation" | "organization" => Role::Organisation,
            _ => {
                return Err(Error::InvalidInput(
                    "role must be patient, clinician, device or organisation",
                ))
            }
        })
    }
}

/// The SHA-256 fingerprint of a public identity document.
///
/// Equality is constant-time. `Display` shows the form for reading aloud:
/// six groups of five decimal digits (about 100 bits).
#[derive(Clone, Copy, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The fingerprint's 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex of all 32 bytes (for machines and file names).
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses the 64-digit lowercase hex form.
    pub fn from_hex(s: &str) -> Result<Self> {
        crate::ids::parse_hex::<32>(s)
            .map(Self)
            .ok_or(Error::Malformed {
                what: "fingerprint",
                reason: "expected 64 lowercase hex digits",
            })
    }

    /// The six five-digit groups people compare by voice.
    pub fn digit_groups(&self) -> [String; 6] {
        let mut groups: [String; 6] = Default::default();
        for (group, chunk) in groups.iter_mut().zip(self.0.chunks_exact(5)) {
            let mut v: u64 = 0;
            for b in chunk {
                v = (v << 8) | u64::from(*b);
            }
            *group = format!("{:05}", v % 100_000);
        }
        groups
    }

    /// Checks a fingerprint typed or read by a person: the 30 digits (any
    /// spacing or dashes) or the 64-digit hex form.
    pub fn verify_spoken(&self, typed: &str) -> Result<()> {
        let digits: String = typed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        let expected_digits: String = self.digit_groups().concat();
        let ok = primitives::ct_eq(digits.as_bytes(), expected_digits.as_bytes())
            || primitives::ct_eq(digits.as_bytes(), self.to_hex().as_bytes());
        if ok {
            Ok(())
        } else {
            Err(Error::FingerprintMismatch {
                expected: typed.chars().take(80).collect(),
                actual: *self,
            })
        }
    }
}

impl PartialEq for Fingerprint {
    fn eq(&self, other: &Self) -> bool {
        primitives::ct_eq(&self.0, &other.0)
    }
}

impl PartialOrd for Fingerprint {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Fingerprints are public; ordering them is not secret-dependent.
impl Ord for Fingerprint {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl std::hash::Hash for Fingerprint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.digit_groups().join(" "))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self)
    }
}

/// A principal's public, self-signed identity document (`docs/format.md` §3).
///
/// A value of this type has been parsed strictly, its signature verified with
/// its own Ed25519 key, and both public keys checked (no low-order points).
#[derive(Clone)]
pub struct PublicIdentity {
    role: Role,
    display_name: String,
    registration: Option<String>,
    x25519: [u8; 32],
    ed25519: VerifyingKey,
    created_at: u64,
    encoded: Vec<u8>,
    fingerprint: Fingerprint,
}

fn check_text(value: &str, max: usize, what: &'static str) -> Result<()> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Error::Malformed {
            what,
            reason: "empty, too long, or contains control characters",
        });
    }
    Ok(())
}

impl PublicIdentity {
    /// The signed body of a document (tests forge documents with it).
    pub(crate) fn body(
        role: Role,
        display_name: &str,
        registration: Option<&str>,
        x25519: &[u8; 32],
        ed25519: &VerifyingKey,
        created_at: u64,
    ) -> Writer {
        let mut w = Writer::new();
        w.u8(IDENTITY_VERSION)
            .u8(role.to_byte())
            .text(display_name)
            .option(registration, |w, r| {
                w.text(r);
            })
            .fixed(x25519)
            .fixed(ed25519.as_bytes())
            .u64(created_at);
        w
    }

    /// Parses and verifies an encoded identity document.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let what = "identity document";
        if bytes.len() > MAX_IDENTITY_LEN {
            return Err(Error::Malformed {
                what,
                reason: "too long",
            });
        }
        let mut r = Reader::new(bytes, what);
        r.version(IDENTITY_VERSION)?;
        let role = Role::from_byte(r.u8()?).ok_or(r.malformed("unknown role"))?;
        let display_name = r.text(MAX_NAME)?.to_owned();
        let registration = r.option(|r| r.text(MAX_REGISTRATION).map(str::to_owned))?;
        let x25519: [u8; 32] = r.array()?;
        let ed25519_bytes: [u8; 32] = r.array()?;
        let created_at = r.u64()?;
        let body_len = bytes.len() - r.remaining();
        let signature: [u8; 64] = r.array()?;
        r.finish()?;

        check_text(&display_name, MAX_NAME, what)?;
        if let Some(reg) = &registration {
            check_text(reg, MAX_REGISTRATION, what)?;
        }
        primitives::check_x25519_public(&x25519)?;
        let ed25519 = primitives::ed25519_public(&ed25519_bytes)?;
        let body = bytes.get(..body_len).ok_or(Error::Malformed {
            what,
            reason: "truncated",
        })?;
        let signed = [IDENTITY_SIGNATURE_CONTEXT, body].concat();
        primitives::verify(&ed25519, &signed, &signature, what)?;
        Ok(Self {
            role,
            display_name,
            registration,
            x25519,
            ed25519,
            created_at,
            fingerprint: Fingerprint(sha256(&[FINGERPRINT_CONTEXT, body])),
            encoded: bytes.to_vec(),
        })
    }

    /// The canonical encoded document (what is hashed, stored and sent).
    pub fn to_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// A copy-and-paste text form: `vault-identity:v1:` and unpadded
    /// URL-safe base64 of the document.
    pub fn to_text(&self) -> String {
        format!("{TEXT_PREFIX}{}", URL_SAFE_NO_PAD.encode(&self.encoded))
    }

    /// Parses [`PublicIdentity::to_text`] output (surrounding whitespace is
    /// ignored; the base64 must be canonical).
    pub fn from_text(text: &str) -> Result<Self> {
        let malformed = Error::Malformed {
            what: "identity text",
            reason: "expected vault-identity:v1: followed by base64url",
        };
        let b64 = text.trim().strip_prefix(TEXT_PREFIX).ok_or(malformed)?;
        let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| Error::Malformed {
            what: "identity text",
            reason: "invalid base64url",
        })?;
        Self::from_bytes(&bytes)
    }

    /// The fingerprint of this document.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The principal's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The display name chosen by the principal (self-asserted).
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// The professional registration number, if any (self-asserted).
    pub fn registration(&self) -> Option<&str> {
        self.registration.as_deref()
    }

    /// Creation time, seconds since the Unix epoch.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// The raw X25519 public key.
    pub fn x25519_public(&self) -> &[u8; 32] {
        &self.x25519
    }

    /// The age recipient string (`age1…`) of the X25519 key.
    pub fn age_recipient(&self) -> String {
        let hrp = Hrp::parse_unchecked("age");
        bech32::encode_lower::<Bech32>(hrp, &self.x25519).unwrap_or_default()
    }

    /// The age recipient, for encrypting to this principal.
    pub(crate) fn recipient(&self) -> Result<age::x25519::Recipient> {
        crate::agefile::x25519_recipient(&self.x25519)
    }

    /// The Ed25519 key that verifies this principal's signatures.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.ed25519
    }
}

impl PartialEq for PublicIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.encoded == other.encoded
    }
}
impl Eq for PublicIdentity {}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicIdentity")
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// What a new identity says about its holder.
#[derive(Clone, Debug)]
pub struct IdentityInfo {
    /// Display name (1 to 128 bytes, no control characters).
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Professional registration number (1 to 64 bytes), if any.
    pub registration: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
}

/// A principal's secret keys and public identity.
///
/// The secrets are zeroized on drop, and neither `Debug` nor any error ever
/// shows them.
pub struct SecretIdentity {
    x25519_secret: Zeroizing<[u8; 32]>,
    signing: SigningKey,
    public: PublicIdentity,
}

impl SecretIdentity {
    /// Creates a new identity with fresh random keys.
    pub fn generate(info: &IdentityInfo) -> Result<Self> {
        let seed = Zeroizing::new(primitives::random::<32>());
        Self::from_seed(&seed, info)
    }

    /// Derives an identity deterministically from a 32-byte seed (for test
    /// vectors and reproducible fixtures; real identities use
    /// [`SecretIdentity::generate`]).
    pub fn from_seed(seed: &[u8; 32], info: &IdentityInfo) -> Result<Self> {
        let x = primitives::hkdf32(seed, b"", b"vault/v1/seed/x25519");
        let e = primitives::hkdf32(seed, b"", b"vault/v1/seed/ed25519");
        Self::from_secrets(x, SigningKey::from_bytes(&e), info)
    }

    fn from_secrets(
        x25519_secret: Zeroizing<[u8; 32]>,
        signing: SigningKey,
        info: &IdentityInfo,
    ) -> Result<Self> {
        check_text(&info.display_name, MAX_NAME, "display name")?;
        if let Some(reg) = &info.registration {
            check_text(reg, MAX_REGISTRATION, "registration number")?;
        }
        let x25519_public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*x25519_secret))
                .to_bytes();
        let verifying = signing.verifying_key();
        let body = PublicIdentity::body(
            info.role,
            &info.display_name,
            info.registration.as_deref(),
            &x25519_public,
            &verifying,
            info.created_at,
        );
        let signed = [IDENTITY_SIGNATURE_CONTEXT, body.as_slice()].concat();
        let signature = primitives::sign(&signing, &signed);
        let mut encoded = body.into_vec();
        encoded.extend_from_slice(&signature);
        let public = PublicIdentity::from_bytes(&encoded)?;
        Ok(Self {
            x25519_secret,
            signing,
            public,
        })
    }

    /// Rebuilds an identity from its secret parts and its public document,
    /// checking that they belong together.
    pub(crate) fn from_parts(
        x25519_secret: Zeroizing<[u8; 32]>,
        ed25519_seed: Zeroizing<[u8; 32]>,
        public: PublicIdentity,
    ) -> Result<Self> {
        let signing = SigningKey::from_bytes(&ed25519_seed);
        let x25519_public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*x25519_secret))
                .to_bytes();
        if signing.verifying_key() != public.ed25519
            || !primitives::ct_eq(&x25519_public, &public.x25519)
        {
            return Err(Error::Malformed {
                what: "key file",
                reason: "secret keys do not match the identity document",
            });
        }
        Ok(Self {
            x25519_secret,
            signing,
            public,
        })
    }

    /// The public identity document.
    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    /// The fingerprint of the public identity.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint
    }

    /// The age secret key string (`AGE-SECRET-KEY-1…`), for use with stock
    /// age tools on exports.
    pub fn age_secret_key(&self) -> SecretString {
        let hrp = Hrp::parse_unchecked("age-secret-key-");
        let mut s =
            bech32::encode_upper::<Bech32>(hrp, self.x25519_secret.as_ref()).unwrap_or_default();
        let out = SecretString::from(s.clone());
        s.zeroize();
        out
    }

    /// The age identity, for decrypting grants and exports.
    pub(crate) fn age_identity(&self) -> Result<age::x25519::Identity> {
        crate::agefile::x25519_identity(&self.x25519_secret)
    }

    /// A copy of the X25519 secret, for tests.
    #[cfg(test)]
    pub(crate) fn x25519_secret_copy(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.x25519_secret)
    }

    pub(crate) fn ed25519_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// Signs `context || body` (contexts are the fixed strings of
    /// `docs/format.md`).
    pub(crate) fn sign(&self, signed_bytes: &[u8]) -> [u8; 64] {
        primitives::sign(&self.signing, signed_bytes)
    }

    /// Signs an arbitrary message under a caller-chosen context, for
    /// protocols layered on vault-core (the relay's request signatures). The
    /// context must be a fixed string ending in a NUL byte and distinct from
    /// every context in `docs/format.md`, which all start with `vault/v1/`.
    pub fn sign_with_context(&self, context: &[u8], message: &[u8]) -> Result<[u8; 64]> {
        if context.starts_with(b"vault/v1/") || context.last() != Some(&0) {
            return Err(Error::InvalidInput(
                "signing context must end in NUL and not use the vault/v1/ namespace",
            ));
        }
        Ok(self.sign(&[context, message].concat()))
    }
}

/// Verifies a signature made with [`SecretIdentity::sign_with_context`].
pub fn verify_with_context(
    signer: &PublicIdentity,
    context: &[u8],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<()> {
    primitives::verify(
        signer.verifying_key(),
        &[context, message].concat(),
        signature,
        "request",
    )
}

impl fmt::Debug for SecretIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            x25519_secret: _,
            signing: _,
            public,
        } = self;
        f.debug_struct("SecretIdentity")
            .field("public", public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    pub(crate) fn info(name: &str, role: Role) -> IdentityInfo {
        IdentityInfo {
            display_name: name.into(),
            role,
            registration: None,
            created_at: 1_700_000_000,
        }
    }

    #[test]
    fn document_round_trips_and_is_strict() {
        let id = SecretIdentity::from_seed(&[7; 32], &info("Dr Ada", Role::Clinician)).unwrap();
        let doc = id.public().to_bytes().to_vec();
        let parsed = PublicIdentity::from_bytes(&doc).unwrap();
        assert_eq!(&parsed, id.public());
        assert_eq!(parsed.fingerprint(), id.fingerprint());
        assert_eq!(
            PublicIdentity::from_text(&parsed.to_text()).unwrap(),
            parsed
        );

        let mut trailing = doc.clone();
        trailing.push(0);
        assert!(PublicIdentity::from_bytes(&trailing).is_err());
        for i in 0..doc.len() {
            let mut bad = doc.clone();
            bad[i] ^= 1;
            assert!(
                PublicIdentity::from_bytes(&bad).is_err(),
                "flip at {i} accepted"
            );
        }
        let mut v2 = doc.clone();
        v2[0] = 2;
        assert!(matches!(
            PublicIdentity::from_bytes(&v2),
            Err(Error::UnsupportedVersion { version: 2, .. })
        ));
    }

    #[test]
    fn fingerprint_is_spoken_as_digits() {
        let id = SecretIdentity::from_seed(&[1; 32], &info("Pat", Role::Patient)).unwrap();
        let fp = id.fingerprint();
        let shown = fp.to_string();
        assert_eq!(shown.len(), 6 * 5 + 5);
        assert!(shown
            .split(' ')
            .all(|g| g.len() == 5 && g.chars().all(|c| c.is_ascii_digit())));
        fp.verify_spoken(&shown).unwrap();
        fp.verify_spoken(&shown.replace(' ', "-")).unwrap();
        fp.verify_spoken(&fp.to_hex()).unwrap();
        let mut wrong = shown.into_bytes();
        wrong[0] = if wrong[0] == b'9' { b'0' } else { wrong[0] + 1 };
        assert!(fp
            .verify_spoken(std::str::from_utf8(&wrong).unwrap())
            .is_err());
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let id = SecretIdentity::from_seed(&[3; 32], &info("Pat", Role::Patient)).unwrap();
        let dbg = format!("{id:?}");
        let sk = id.age_secret_key();
        assert!(!dbg.contains(sk.expose_secret()));
        assert!(!dbg.contains(&to_hex(&*id.ed25519_seed())));
        assert!(dbg.starts_with("SecretIdentity { public: PublicIdentity { display_name: \"Pat\""));
    }

    #[test]
    fn age_encodings_are_standard() {
        let id = SecretIdentity::from_seed(&[9; 32], &info("Pat", Role::Patient)).unwrap();
        let age_id = id.age_identity().unwrap();
        assert_eq!(age_id.to_public().to_string(), id.public().age_recipient());
        assert!(id.public().age_recipient().starts_with("age1"));
        assert!(id
            .age_secret_key()
            .expose_secret()
            .starts_with("AGE-SECRET-KEY-1"));
    }

    #[test]
    fn low_order_x25519_key_is_refused() {
        let id = SecretIdentity::from_seed(&[5; 32], &info("Mallory", Role::Clinician)).unwrap();
        // Re-sign a document carrying the all-zero (low-order) X25519 point.
        let body = PublicIdentity::body(
            Role::Clinician,
            "Mallory",
            None,
            &[0u8; 32],
            &id.signing.verifying_key(),
            1,
        );
        let sig = id.sign(&[IDENTITY_SIGNATURE_CONTEXT, body.as_slice()].concat());
        let mut doc = body.into_vec();
        doc.extend_from_slice(&sig);
        assert!(matches!(
            PublicIdentity::from_bytes(&doc),
            Err(Error::WeakPublicKey { what: "X25519" })
        ));
    }
}
