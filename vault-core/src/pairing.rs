//! Pairing a new device with an existing one by a compared code
//! (`docs/format.md` §3.8, decision 72).
//!
//! The existing device `E` shows a one-time [`PairingCode`] of 10 digits;
//! the new device `N` types it. The relay only carries the messages, in a
//! slot named by the code's hash ([`PairingCode::slot`]), and may be the
//! attacker: it can answer either side in the other's place. What defeats
//! it is commit-then-reveal: `E` commits to its nonce and the person it
//! pairs for ([`commitment`]) before it sees `N`'s nonce; `N` draws and
//! sends its nonce only after it holds that commitment (its join is
//! answered with it, and the nonce goes in a later request); `E` reveals
//! its nonce only after `N`'s arrived, and binds itself to that device and
//! nonce before it does. Both then show the same
//! [`ComparedCode`] of 8 digits, computed from both nonces, the person and
//! the device; the person compares the two screens and confirms. A relay
//! in the middle had to fix its own nonces before seeing the ones they
//! are combined with, so the screens agree with probability 10⁻⁸ per
//! attempt, and a failure shows.
//!
//! What pairing authenticates, once the screens agree: to `E`, the new
//! device's fingerprint (so `E` lists the right device, §3.7); to `N`,
//! the person's fingerprint (so `N` accepts only that person's list, from
//! its root-signed start).

use std::fmt;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::identity::Fingerprint;
use crate::primitives::{self, sha256};

const SLOT_CONTEXT: &[u8] = b"vault/v1/pairing-slot\0";
const COMMIT_CONTEXT: &[u8] = b"vault/v1/pairing-commit\0";
const CODE_CONTEXT: &[u8] = b"vault/v1/pairing-code\0";

/// Digits of a [`PairingCode`].
pub const PAIRING_CODE_DIGITS: usize = 10;
/// How long a pairing slot stays open at the relay, in seconds.
pub const PAIRING_TTL: u64 = 600;
/// Values of a [`ComparedCode`]: 8 decimal digits.
const COMPARED_CODES: u64 = 100_000_000;
/// Values of a [`PairingCode`]: 10 decimal digits.
const PAIRING_CODES: u64 = 10_000_000_000;

/// The one-time code the existing device shows and the new device types:
/// 10 decimal digits, drawn uniformly. It names the slot where the two
/// meet ([`PairingCode::slot`]); it is not what authenticates them (the
/// [`ComparedCode`] is). It is kept out of `Debug` output all the same:
/// whoever reads it first may join the slot.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode(Zeroizing<[u8; PAIRING_CODE_DIGITS]>);

impl PairingCode {
    /// A fresh code from the system's (or the browser's) CSPRNG.
    pub fn random() -> Self {
        // The largest multiple of 10^10 that fits in a u64: values at or
        // above it are drawn again, so every code is equally likely.
        let limit = u64::MAX - u64::MAX % PAIRING_CODES;
        loop {
            let v = u64::from_be_bytes(primitives::random::<8>());
            if v < limit {
                return Self::from_value(v % PAIRING_CODES);
            }
        }
    }

    fn from_value(mut v: u64) -> Self {
        let mut digits = Zeroizing::new([b'0'; PAIRING_CODE_DIGITS]);
        for d in digits.iter_mut().rev() {
            // `v % 10` is below 10, so the cast cannot truncate.
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        Self(digits)
    }

    /// Parses a code as a person types it: 10 digits, with any spaces or
    /// dashes between them.
    pub fn parse(text: &str) -> Result<Self> {
        let mut digits = Zeroizing::new([0u8; PAIRING_CODE_DIGITS]);
        let mut n = 0usize;
        for c in text.trim().bytes() {
            match c {
                b'0'..=b'9' => {
                    let slot = digits.get_mut(n).ok_or(Error::InvalidInput(
                        "a pairing code is 10 digits: type the one the other device shows",
                    ))?;
                    *slot = c;
                    n += 1;
                }
                b' ' | b'-' => {}
                _ => {
                    return Err(Error::InvalidInput(
                        "a pairing code is 10 digits: type the one the other device shows",
                    ))
                }
            }
        }
        if n != PAIRING_CODE_DIGITS {
            return Err(Error::InvalidInput(
                "a pairing code is 10 digits: type the one the other device shows",
            ));
        }
        Ok(Self(digits))
    }

    /// The code as shown on screen: `12345 67890`.
    pub fn shown(&self) -> String {
        let (a, b) = self.0.split_at(5);
        format!(
            "{} {}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        )
    }

    /// The slot the code names at the relay:
    /// `SHA-256(ctx("pairing-slot") || the 10 ASCII digits)`.
    pub fn slot(&self) -> [u8; 32] {
        sha256(&[SLOT_CONTEXT, self.0.as_slice()])
    }
}

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairingCode(..)")
    }
}

/// A fresh 32-byte pairing nonce (one per side, per attempt).
pub fn nonce() -> [u8; 32] {
    primitives::random()
}

/// The existing device's commitment, posted when it opens the slot and
/// before it sees the new device's nonce:
/// `SHA-256(ctx("pairing-commit") || slot || person || nonce_e)`.
pub fn commitment(slot: &[u8; 32], person: &Fingerprint, nonce_e: &[u8; 32]) -> [u8; 32] {
    sha256(&[COMMIT_CONTEXT, slot, person.as_bytes(), nonce_e])
}

/// Checks, on the new device, that what the existing device revealed
/// (`person`, `nonce_e`) is what it committed to in `commit`. A mismatch
/// means someone other than the device that opened the slot answered:
/// [`Error::ContextMismatch`].
pub fn check_commitment(
    commit: &[u8; 32],
    slot: &[u8; 32],
    person: &Fingerprint,
    nonce_e: &[u8; 32],
) -> Result<()> {
    if primitives::ct_eq(&commitment(slot, person, nonce_e), commit) {
        Ok(())
    } else {
        Err(Error::ContextMismatch {
            what: "the pairing's revealed nonce",
            field: "commitment",
        })
    }
}

/// The code both devices show once both nonces are known, for the person
/// to compare: 8 decimal digits, the first 8 bytes (big-endian) of
/// `SHA-256(ctx("pairing-code") || slot || person || device || nonce_e ||
/// nonce_n)` modulo 10⁸.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ComparedCode(u32);

impl ComparedCode {
    /// The code of one pairing: `person` pairs `device`, with the existing
    /// device's nonce `nonce_e` and the new device's `nonce_n`.
    pub fn of(
        slot: &[u8; 32],
        person: &Fingerprint,
        device: &Fingerprint,
        nonce_e: &[u8; 32],
        nonce_n: &[u8; 32],
    ) -> Self {
        let h = sha256(&[
            CODE_CONTEXT,
            slot,
            person.as_bytes(),
            device.as_bytes(),
            nonce_e,
            nonce_n,
        ]);
        let mut first = [0u8; 8];
        first.copy_from_slice(h.get(..8).unwrap_or(&[0; 8]));
        // Below 10^8, so it fits in a u32.
        Self((u64::from_be_bytes(first) % COMPARED_CODES) as u32)
    }

    /// Its value, below 10⁸.
    pub fn value(self) -> u32 {
        self.0
    }

    /// Parses 8 digits as a person types them (spaces allowed).
    pub fn parse(text: &str) -> Result<Self> {
        let digits: String = text.chars().filter(|c| *c != ' ').collect();
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidInput(
                "the compared code is 8 digits, as both screens show it",
            ));
        }
        digits
            .parse()
            .map(Self)
            .map_err(|_| Error::InvalidInput("the compared code is 8 digits"))
    }
}

impl fmt::Display for ComparedCode {
    /// `1234 5678`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04} {:04}", self.0 / 10_000, self.0 % 10_000)
    }
}

impl fmt::Debug for ComparedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ComparedCode({self})")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn codes_parse_as_typed_and_show_grouped() {
        let c = PairingCode::parse(" 01234-56789 ").unwrap();
        assert_eq!(c.shown(), "01234 56789");
        assert_eq!(PairingCode::parse("0123456789").unwrap(), c);
        for bad in [
            "",
            "123456789",
            "12345678901",
            "01234 5678x",
            "０１２３４５６７８９",
        ] {
            assert!(PairingCode::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format!("{c:?}"), "PairingCode(..)");
        let r = PairingCode::random();
        assert_eq!(PairingCode::parse(&r.shown()).unwrap(), r);
        assert_ne!(r.slot(), c.slot());
    }

    #[test]
    fn random_codes_use_every_digit_position() {
        // 200 codes: each position takes several values (a fixed digit
        // would show as one).
        let codes: Vec<_> = (0..200).map(|_| PairingCode::random()).collect();
        for i in 0..PAIRING_CODE_DIGITS {
            let seen: std::collections::BTreeSet<u8> = codes.iter().map(|c| c.0[i]).collect();
            assert!(seen.len() >= 5, "position {i}: {seen:?}");
        }
    }

    #[test]
    fn the_commitment_binds_the_person_and_nonce() {
        let slot = PairingCode::parse("0123456789").unwrap().slot();
        let person = Fingerprint::from_bytes([1; 32]);
        let c = commitment(&slot, &person, &[7; 32]);
        check_commitment(&c, &slot, &person, &[7; 32]).unwrap();
        assert!(check_commitment(&c, &slot, &person, &[8; 32]).is_err());
        assert!(check_commitment(&c, &slot, &Fingerprint::from_bytes([2; 32]), &[7; 32]).is_err());
        assert!(check_commitment(&c, &[0; 32], &person, &[7; 32]).is_err());
    }

    #[test]
    fn compared_codes_change_with_every_input() {
        let slot = [3; 32];
        let (p, d) = (
            Fingerprint::from_bytes([1; 32]),
            Fingerprint::from_bytes([2; 32]),
        );
        let base = ComparedCode::of(&slot, &p, &d, &[7; 32], &[8; 32]);
        assert!(base.value() < 100_000_000);
        for other in [
            ComparedCode::of(&[4; 32], &p, &d, &[7; 32], &[8; 32]),
            ComparedCode::of(&slot, &d, &p, &[7; 32], &[8; 32]),
            ComparedCode::of(
                &slot,
                &p,
                &Fingerprint::from_bytes([9; 32]),
                &[7; 32],
                &[8; 32],
            ),
            ComparedCode::of(
                &slot,
                &Fingerprint::from_bytes([9; 32]),
                &d,
                &[7; 32],
                &[8; 32],
            ),
            ComparedCode::of(&slot, &p, &d, &[8; 32], &[7; 32]),
            ComparedCode::of(&slot, &p, &d, &[7; 32], &[9; 32]),
        ] {
            assert_ne!(other, base);
        }
        assert_eq!(ComparedCode::parse(&base.to_string()).unwrap(), base);
        assert_eq!(ComparedCode(1234).to_string(), "0000 1234");
        assert!(ComparedCode::parse("1234 567").is_err());
    }

    /// The pairing vector (`tests/vectors/pairing.json`): a code, its slot,
    /// the commitment and the compared code of fixed fingerprints and
    /// nonces. Regenerate (only for a deliberate format change) with
    /// `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --lib pairing_vector`.
    #[test]
    fn pairing_vector() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/pairing.json");
        let h = |b: &[u8]| hex::encode(b);
        if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
            let code = PairingCode::parse("0123456789").unwrap();
            let slot = code.slot();
            let (person, device) = (
                Fingerprint::from_bytes([0x11; 32]),
                Fingerprint::from_bytes([0x22; 32]),
            );
            let (nonce_e, nonce_n) = ([0x0e; 32], [0x0a; 32]);
            let v = serde_json::json!({
                "description": "docs/format.md §3.8: the pairing code 0123456789, the slot it names, the existing device's commitment, and the code both screens show, for the person and device fingerprints and the nonces given",
                "code": "0123456789",
                "slot": h(&slot),
                "person": person.to_hex(),
                "device": device.to_hex(),
                "nonce_e": h(&nonce_e),
                "nonce_n": h(&nonce_n),
                "commit": h(&commitment(&slot, &person, &nonce_e)),
                "compared": ComparedCode::of(&slot, &person, &device, &nonce_e, &nonce_n).to_string(),
            });
            std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
        }
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        let b32 = |k: &str| -> [u8; 32] { hex::decode(s(k)).unwrap().try_into().unwrap() };
        let code = PairingCode::parse(&s("code")).unwrap();
        assert_eq!(h(&code.slot()), s("slot"));
        let (person, device) = (
            Fingerprint::from_bytes(b32("person")),
            Fingerprint::from_bytes(b32("device")),
        );
        let slot = b32("slot");
        assert_eq!(h(&commitment(&slot, &person, &b32("nonce_e"))), s("commit"));
        check_commitment(&b32("commit"), &slot, &person, &b32("nonce_e")).unwrap();
        assert_eq!(
            ComparedCode::of(&slot, &person, &device, &b32("nonce_e"), &b32("nonce_n")).to_string(),
            s("compared")
        );
    }
}
