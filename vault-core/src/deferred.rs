//! Signature checks collected while a batch of log entries is applied, and
//! verified afterwards on every core.
//!
//! Applying a log entry checks the signatures it carries (the entry's, its
//! record metadata's, its grants') one by one, through
//! [`crate::primitives::verify_in_batch`], inside the sequential replay
//! that decides which key each signature must be made with; no other check
//! is ever deferred. While a [`Deferral`] is active on a thread, those
//! checks are recorded (key, signed bytes, signature) and answered as if
//! they held; [`Deferral::finish`] then runs every recorded check with the
//! same `verify_strict`, spread over the machine's cores. A replay that
//! ends with every recorded check holding took exactly the path it would
//! have taken with each check made in place, since each check answered
//! what it would have answered. Any failure (a recorded check that does
//! not hold, or the replay's own error) means the caller throws the
//! replayed state away and replays again with every check in place, which
//! gives the exact error: see [`crate::store::accept_entries`].

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
/// and ends the deferral, so no check is ever answered by default. A
/// deferral started inside another collects its own checks and, when it
/// ends, gives the thread back to the outer one.
pub(crate) struct Deferral {
    /// The outer deferral's checks (or none), put back when this one ends.
    outer: Option<Vec<Check>>,
    /// Whether [`Deferral::finish`] ended it.
    done: bool,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Deferral {
    /// Starts deferring the checks of [`crate::primitives::verify_in_batch`]
    /// on this thread.
    pub(crate) fn start() -> Self {
        let outer = RECORDED.with(|r| r.borrow_mut().replace(Vec::new()));
        Self {
            outer,
            done: false,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Ends the deferral and runs every recorded check: `true` if all hold.
    pub(crate) fn finish(mut self) -> bool {
        self.done = true;
        let outer = self.outer.take();
        let checks = RECORDED.with(|r| std::mem::replace(&mut *r.borrow_mut(), outer));
        #[cfg(test)]
        FINISHED.with(|f| f.set(f.get() + 1));
        // No list means this deferral's checks were lost: none holds.
        checks.is_some_and(|c| all_hold(&c))
    }
}

impl Drop for Deferral {
    fn drop(&mut self) {
        // Ended unfinished: this deferral's checks are discarded, and the
        // outer deferral's (if any) put back.
        if !self.done {
            let outer = self.outer.take();
            RECORDED.with(|r| *r.borrow_mut() = outer);
        }
    }
}

#[cfg(test)]
thread_local! {
    /// How many deferrals finished on this thread (tests only).
    pub(crate) static FINISHED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
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
                let mut here = Vec::new();
                let workers: Vec<_> = checks
                    .chunks(per)
                    .filter_map(|part| {
                        let spawned = std::thread::Builder::new()
                            .spawn_scoped(s, move || part.iter().all(Check::holds));
                        // No thread to be had: checked on this one.
                        spawned.map_err(|_| here.push(part)).ok()
                    })
                    .collect();
                let here_hold = here.iter().all(|part| part.iter().all(Check::holds));
                // A worker that panicked holds nothing.
                let all = workers.into_iter().all(|w| w.join().unwrap_or(false));
                here_hold && all
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
        let deferral = Deferral::start();
        for _ in 0..100 {
            assert!(record(&key, b"message", &sig));
        }
        assert!(deferral.finish());
        assert!(!record(&key, b"message", &sig), "the deferral ended");

        // One bad signature among many, on any thread: refused.
        let deferral = Deferral::start();
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
            let _deferral = Deferral::start();
            record(&key, b"forged", &sig);
            panic!("the replay failed");
        });
        assert!(result.is_err());
        assert!(
            !record(&key, b"forged", &sig),
            "checks are made in place again"
        );
    }

    #[test]
    fn a_deferral_inside_another_keeps_its_own_checks() {
        let (key, sig) = signed(3, b"message");
        let outer = Deferral::start();
        record(&key, b"forged", &sig);
        // The inner deferral's checks hold; the outer's forged one is not
        // the inner's, and is still the outer's when the inner ends.
        let inner = Deferral::start();
        record(&key, b"message", &sig);
        assert!(inner.finish());
        // Dropped unfinished, an inner deferral gives the outer one back.
        {
            let _inner = Deferral::start();
            record(&key, b"message", &sig);
        }
        assert!(
            record(&key, b"message", &sig),
            "the outer deferral is active"
        );
        assert!(!outer.finish(), "the outer deferral kept its forged check");
        assert!(!record(&key, b"message", &sig));
    }
}
