//! Deterministic identities for the unit tests of device lists.

use vault_core::{IdentityInfo, Role, SecretIdentity};

/// The tests' clock (seconds since the Unix epoch).
pub const NOW: u64 = 1_700_000_000;

/// A deterministic identity of `role` named `name`.
pub fn identity(seed: u8, name: &str, role: Role) -> SecretIdentity {
    let info = IdentityInfo {
        display_name: name.into(),
        role,
        registration: None,
        created_at: NOW - 1000,
    };
    SecretIdentity::from_seed(&[seed; 32], &info).unwrap()
}
