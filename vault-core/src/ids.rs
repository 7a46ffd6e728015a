//! Opaque identifiers: 16 random bytes each, shown as lowercase hex.
//!
//! Identifiers are public (the relay sees them) and carry no meaning: a
//! collection id does not reveal the collection's name.

use std::fmt;

use crate::error::{Error, Result};
use crate::primitives::random;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// A fresh random identifier.
            pub fn random() -> Self {
                Self(random())
            }

            /// The identifier from its 16 bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            /// The identifier's 16 bytes.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// Parses the 32-character lowercase hex form.
            pub fn from_hex(s: &str) -> Result<Self> {
                parse_hex16(s).map(Self).ok_or(Error::Malformed {
                    what: $what,
                    reason: "expected 32 lowercase hex digits",
                })
            }

            /// The 32-character lowercase hex form.
            pub fn to_hex(&self) -> String {
                to_hex(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

id_type!(
    /// Identifies a vault (one patient's record store).
    VaultId,
    "vault id"
);
id_type!(
    /// Identifies a collection within a vault.
    CollectionId,
    "collection id"
);
id_type!(
    /// Identifies a record within a vault; stable across its versions.
    RecordId,
    "record id"
);
id_type!(
    /// Identifies an agency within a vault (`docs/format.md` §8.10): one
    /// agent named by the owner, or by another agent, for one or more
    /// collections.
    DelegationId,
    "delegation id"
);

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses exactly `N` bytes of lowercase hex.
pub(crate) fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [hi, lo] => (nibble(*hi)?, nibble(*lo)?),
            _ => return None,
        };
        *o = (hi << 4) | lo;
    }
    Some(out)
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    parse_hex::<16>(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejections() {
        let id = RecordId::from_bytes([0xab; 16]);
        assert_eq!(RecordId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(RecordId::from_hex("AB").is_err());
        assert!(
            RecordId::from_hex(&"AB".repeat(16)).is_err(),
            "uppercase is not canonical"
        );
        assert!(RecordId::from_hex(&"zz".repeat(16)).is_err());
        assert_ne!(VaultId::random(), VaultId::random());
    }
}
