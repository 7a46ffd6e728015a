//! Signature checks collected while a batch of log entries is applied, and
//! verified afterwards on every core.
//!
//! Applying a log entry checks its Ed25519 signatures one by one
//! ([`crate::primitives::verify`]), inside the sequential replay that
//! decides which key each signature must be made with. While a
//! [`Deferral`] is active on a thread, `verify` records the check (key,
//! signed bytes, signature) and answers as if it held; [`Deferral::finish`]
//! then runs every recorded check with the same `verify_strict`, spread
//! over the machine's cores. A replay that ends with every recorded check
//! holding took exactly the path it would have taken with each check made
//! in place, since each check answered what it would have answered. Any
//! failure (a recorded check that does not hold, or the replay's own error)
//! means the caller throws the replayed state away and replays again with
//! every check in place, which gives the exact error: see
//! [`crate::store::accept_entries`].

use std::cell::RefCell;

use ed25519_dalek::{Signature, VerifyingKey};

/// One signature check, recorded.
struct Check {
    key: VerifyingKey,
    signed_bytes: Vec<u8>,
    signature: [u8; 64],
}

impl Check {
    fn holds(&self) -> bool {
        self.key
            .verify_strict(&self.signed_bytes, &Signature::from_bytes(&self.signature))
            .is_ok()
    }
}

thread_local! {
    /// The checks recorded on this thread while a deferral is active.
    static RECORDED: RefCell<Option<Vec<Check>>> = const { RefCell::new(None) };
}

/// Records `(key, signed_bytes, signature)` if a deferral is active on this
/// thread (then the check is answered later by [`Deferral::finish`]);
/// `false` if none is, and the caller must check now.
pub(crate) fn record(key: &VerifyingKey, signed_bytes: &[u8], signature: &[u8; 64]) -> bool {
    RECORDED.with(|r| match r.borrow_mut().as_mut() {
        Some(checks) => {
            checks.push(Check {
                key: *key,
                signed_bytes: signed_bytes.to_vec(),
                signature: *signature,
            });
            true
        }
        None => false,
    })
}

/// Signature checks deferred on this thread until [`Deferral::finish`].
/// Dropping it unfinished (an error, a panic) discards what it recorded
/// and ends the deferral, so no check is ever answered by default.
pub(crate) struct Deferral {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Deferral {
    /// Starts deferring on this thread; `None` if a deferral is already
    /// active here (checks are then made in place, as without one).
    pub(crate) fn start() -> Option<Self> {
        RECORDED.with(|r| {
            let mut r = r.borrow_mut();
            if r.is_some() {
                return None;
            }
            *r = Some(Vec::new());
            Some(Self {
                _not_send: std::marker::PhantomData,
            })
        })
    }

    /// Ends the deferral and runs every recorded check: `true` if all hold.
    pub(crate) fn finish(self) -> bool {
        let checks = RECORDED.with(|r| r.borrow_mut().take()).unwrap_or_default();
        all_hold(&checks)
    }
}

impl Drop for Deferral {
    fn drop(&mut self) {
        RECORDED.with(|r| r.borrow_mut().take());
    }
}

/// Fewer checks than this are run on the calling thread: starting threads
/// costs more than they save.
#[cfg(not(target_arch = "wasm32"))]
const PER_THREAD: usize = 32;

/// Whether every check holds, spread over up to four threads natively.
fn all_hold(checks: &[Check]) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .min(4)
            .min(checks.len() / PER_THREAD)
            .max(1);
        if threads > 1 {
            let per = checks.len().div_ceil(threads);
            return std::thread::scope(|s| {
                let workers: Vec<_> = checks
                    .chunks(per)
                    .map(|part| s.spawn(move || part.iter().all(Check::holds)))
                    .collect();
                // A worker that panicked holds nothing.
                workers.into_iter().all(|w| w.join().unwrap_or(false))
            });
        }
    }
    checks.iter().all(Check::holds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(n: u8, msg: &[u8]) -> (VerifyingKey, [u8; 64]) {
        let key = SigningKey::from_bytes(&[n; 32]);
        (key.verifying_key(), key.sign(msg).to_bytes())
    }

    #[test]
    fn recorded_checks_are_answered_at_the_finish() {
        let (key, sig) = signed(1, b"message");
        assert!(!record(&key, b"message", &sig), "no deferral: check now");
        let deferral = Deferral::start().unwrap();
        assert!(Deferral::start().is_none(), "one deferral per thread");
        for _ in 0..100 {
            assert!(record(&key, b"message", &sig));
        }
        assert!(deferral.finish());
        assert!(!record(&key, b"message", &sig), "the deferral ended");

        // One bad signature among many, on any thread: refused.
        let deferral = Deferral::start().unwrap();
        for i in 0..200 {
            let msg: &[u8] = if i == 150 { b"another" } else { b"message" };
            record(&key, msg, &sig);
        }
        assert!(!deferral.finish());
    }

    #[test]
    fn a_deferral_dropped_unfinished_defers_nothing_after() {
        let (key, sig) = signed(2, b"message");
        let result = std::panic::catch_unwind(|| {
            let _deferral = Deferral::start().unwrap();
            record(&key, b"forged", &sig);
            panic!("the replay failed");
        });
        assert!(result.is_err());
        assert!(
            !record(&key, b"forged", &sig),
            "checks are made in place again"
        );
        assert!(Deferral::start().is_some());
    }
}
