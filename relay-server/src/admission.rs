//! Who may add identities and vaults: invitation tokens and a per-source
//! budget of new identities and vaults per hour (and, with the same
//! [`SourceBudget`], of pairing opens per ten minutes). Identities are free
//! to make, so per-key limits alone bound one key among many; these bound
//! how fast outsiders can add keys and vaults, and open pairings, at all
//! (`docs/relay-api.md`, "Admission").

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;

/// The header that carries an invitation token.
pub const INVITE_HEADER: &str = "x-vault-invite";

/// The shortest token accepted in a tokens file.
pub const MIN_TOKEN_LEN: usize = 16;

/// The invitation tokens of a relay, kept as SHA-256 digests and compared
/// in constant time. Empty: no invitation needed. Its `Debug` shows the
/// count only.
#[derive(Clone, Default)]
pub struct InviteTokens(Arc<Vec<[u8; 32]>>);

impl std::fmt::Debug for InviteTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InviteTokens({} tokens)", self.0.len())
    }
}

impl InviteTokens {
    /// Tokens from their text; each must be at least [`MIN_TOKEN_LEN`]
    /// characters (surrounding whitespace ignored).
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<Self, ConfigError> {
        let mut digests = Vec::new();
        for t in tokens {
            let t = t.trim();
            if t.chars().count() < MIN_TOKEN_LEN {
                return Err(ConfigError::Invalid(format!(
                    "an invitation token is shorter than {MIN_TOKEN_LEN} characters; use long random tokens (for example `openssl rand -hex 16`)"
                )));
            }
            digests.push(Sha256::digest(t.as_bytes()).into());
        }
        Ok(Self(Arc::new(digests)))
    }

    /// Reads a tokens file: one token per line; blank lines and lines
    /// starting with `#` are ignored. A file without any token is an error
    /// (it would close registration by accident).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let tokens = Self::new(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        )?;
        if tokens.0.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "the invitation tokens file {} holds no token",
                path.display()
            )));
        }
        Ok(tokens)
    }

    /// Whether new identities need a token.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `presented` is one of the tokens. Every token is compared,
    /// in constant time, against the presented token's digest: the time
    /// taken does not depend on which token matched or how much of one.
    pub fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        let mut found = subtle::Choice::from(0);
        for t in self.0.iter() {
            found |= t.ct_eq(&digest);
        }
        found.into()
    }
}

/// A source address used up its budget of new identities and vaults for
/// this clock hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this network address has created {per_hour} identities and vaults this hour, the most this relay allows; retry in {retry_after} seconds, or ask the relay's operator")]
pub struct CreationLimited {
    /// The budget per hour.
    pub per_hour: u32,
    /// Seconds until the next clock hour, when the budget is new again.
    pub retry_after: u64,
}

impl From<Spent> for CreationLimited {
    fn from(s: Spent) -> Self {
        Self {
            per_hour: s.allowed,
            retry_after: s.retry_after,
        }
    }
}

/// A source address used up its budget for the current window
/// ([`SourceBudget::take`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// What the budget allows per window.
    pub allowed: u32,
    /// Seconds until the next window, when the budget is new again.
    pub retry_after: u64,
}

/// So many actions per source address per fixed window of the relay's
/// clock (for example new identities and vaults per clock hour; pairing
/// opens per ten minutes). Counted by each relay instance in memory: behind
/// a load balancer of `n` instances a source gets at most `n` times the
/// budget, and a restart forgets what was spent.
pub struct SourceBudget {
    allowed: u32,
    window: u64,
    loopback: bool,
    used: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl SourceBudget {
    /// A budget of `allowed` per `window` seconds (`allowed` 0: unlimited);
    /// loopback sources count only with `loopback`.
    pub fn new(allowed: u32, window: u64, loopback: bool) -> Self {
        Self {
            allowed,
            window: window.max(1),
            loopback,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// The address a source is counted under: IPv4 as is, IPv6 by its
    /// /64 (one host usually holds a whole /64); `None` if not counted.
    fn key(&self, source: Option<IpAddr>) -> Option<IpAddr> {
        let ip = source?;
        // Loopback is judged on the whole address: `::1`'s /64 is `::`.
        let loopback = ip.is_loopback()
            || matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
        if self.allowed == 0 || (loopback && !self.loopback) {
            return None;
        }
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut o = v6.octets();
                    for b in o.iter_mut().skip(8) {
                        *b = 0;
                    }
                    IpAddr::V6(o.into())
                }
            },
            v4 => v4,
        };
        Some(ip)
    }

    /// Takes one action for `source` at `now` (Unix seconds), or refuses
    /// it ([`Spent`]) when the source's budget for this window is spent.
    pub fn take(&self, source: Option<IpAddr>, now: u64) -> Result<(), Spent> {
        let Some(key) = self.key(source) else {
            return Ok(());
        };
        let window = now / self.window;
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let slot = used.entry(key).or_insert((window, 0));
        if slot.0 != window {
            *slot = (window, 0);
        }
        if slot.1 >= self.allowed {
            return Err(Spent {
                allowed: self.allowed,
                retry_after: self.window - now % self.window,
            });
        }
        slot.1 += 1;
        Ok(())
    }

    /// Gives back an action that did not happen (it already existed, or
    /// storing it failed).
    pub fn give_back(&self, source: Option<IpAddr>, now: u64) {
        let Some(key) = self.key(source) else {
            return;
        };
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = used.get_mut(&key) {
            if slot.0 == now / self.window {
                slot.1 = slot.1.saturating_sub(1);
            }
        }
    }

    /// Forgets past windows (call periodically).
    pub fn housekeeping(&self, now: u64) {
        let window = now / self.window;
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (w, _)| *w == window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_budget_is_new_each_window_and_counts_loopback_only_when_asked() {
        let here: Option<IpAddr> = "203.0.113.9".parse().ok();
        let budget = SourceBudget::new(2, 600, false);
        budget.take(here, 1200).unwrap();
        budget.take(here, 1500).unwrap();
        // An action that did not happen gives its place back.
        budget.give_back(here, 1500);
        budget.take(here, 1700).unwrap();
        assert_eq!(
            budget.take(here, 1799),
            Err(Spent {
                allowed: 2,
                retry_after: 1
            })
        );
        // The next window starts afresh; housekeeping forgets the last.
        budget.take(here, 1800).unwrap();
        budget.housekeeping(2400);
        budget.take(here, 2400).unwrap();
        budget.take(here, 2401).unwrap();
        assert!(budget.take(here, 2402).is_err());
        // Loopback (IPv4, IPv6, IPv4-mapped) is exempt unless asked for;
        // 0 is no limit.
        let loopbacks: Vec<Option<IpAddr>> = ["127.0.0.1", "::1", "::ffff:127.0.0.1"]
            .iter()
            .map(|a| a.parse().ok())
            .collect();
        for _ in 0..5 {
            for &lo in &loopbacks {
                budget.take(lo, 2402).unwrap();
            }
            SourceBudget::new(0, 600, true).take(here, 0).unwrap();
        }
        for &lo in &loopbacks {
            let counted = SourceBudget::new(1, 600, true);
            counted.take(lo, 0).unwrap();
            assert!(counted.take(lo, 0).is_err(), "{lo:?}");
        }
        let counted = SourceBudget::new(1, 600, true);
        // A source without an address (a Unix socket, a test) is not counted.
        for _ in 0..5 {
            counted.take(None, 0).unwrap();
        }
    }
}
