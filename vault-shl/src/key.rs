//! The link key: 32 random bytes that encrypt every file of one link. It
//! is a bearer secret (whoever holds the link holds it), so it is zeroized
//! on drop, compared in constant time and never printed.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{b64d, b64e, ShlError};

/// A link's AES-256-GCM key. `Debug` shows no key material.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LinkKey([u8; 32]);

impl LinkKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, ShlError> {
        Ok(Self(crate::random_32()?))
    }

    /// A key from its 32 bytes (test vectors, stored keys).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the payload's `key`: exactly 43 base64url characters that
    /// decode to 32 bytes ([`ShlError::BadKey`] otherwise).
    pub fn from_base64url(s: &str) -> Result<Self, ShlError> {
        if s.len() != 43 {
            return Err(ShlError::BadKey);
        }
        let bytes = Zeroizing::new(b64d(s).ok_or(ShlError::BadKey)?);
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| ShlError::BadKey)?;
        Ok(Self(arr))
    }

    /// The key as the payload carries it (43 base64url characters).
    pub fn to_base64url(&self) -> Zeroizing<String> {
        Zeroizing::new(b64e(&self.0))
    }

    /// The raw bytes (for the cipher only).
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for LinkKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for LinkKey {}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let k = LinkKey::generate().unwrap();
        let s = k.to_base64url();
        assert_eq!(s.len(), 43);
        assert_eq!(LinkKey::from_base64url(&s).unwrap(), k);
        assert_eq!(format!("{k:?}"), "LinkKey(<secret>)");
        // 42 or 44 characters, padding, standard alphabet, stray bits.
        for bad in [
            &s[..42],
            &format!("{}A", &*s),
            "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7+",
            "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7R",
        ] {
            assert_eq!(LinkKey::from_base64url(bad), Err(ShlError::BadKey), "{bad}");
        }
    }
}
