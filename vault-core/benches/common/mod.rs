//! What the vault-core benches share: fixed identities, record info and
//! medians.

use std::time::{Duration, Instant};

use vault_core::{IdentityInfo, RecordInfo, Role, SecretIdentity};

/// The time every bench entry claims.
pub const NOW: u64 = 1_700_000_000;

/// A bench identity from a fixed seed.
pub fn identity(seed: u8, role: Role) -> SecretIdentity {
    SecretIdentity::from_seed(
        &[seed; 32],
        &IdentityInfo {
            display_name: format!("bench {seed}"),
            role,
            registration: None,
            created_at: NOW,
        },
    )
    .expect("identity")
}

/// The record info every bench record carries.
pub fn info() -> RecordInfo {
    RecordInfo {
        content_type: "application/octet-stream".into(),
        title: "bench".into(),
        created_at: NOW,
        effective_at: None,
    }
}

/// The median of `runs` timings of `f`.
pub fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}
