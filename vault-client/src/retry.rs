//! When and how long to retry transient failures.

use std::time::Duration;

use reqwest::StatusCode;

/// How the client retries transient failures: connection errors and the
/// statuses 408, 429, 500 and 503 (`docs/relay-api.md`). Other 4xx answers
/// are never retried, and neither is an answer whose `retry-after` asks for
/// a longer wait than `max_retry_after` (a per-source budget spent until
/// the end of its window: retrying sooner would be refused alike, so the
/// caller is told at once, with the relay's message saying when to retry).
///
/// Retry `n` (1 for the first retry) waits a random time between half and
/// all of `min(initial_backoff × 2^(n-1), max_backoff)` ("equal jitter"), or
/// what a 429's `retry-after` asks if that is longer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 disables retries; 0 is
    /// treated as 1).
    pub max_attempts: u32,
    /// The base delay before the first retry.
    pub initial_backoff: Duration,
    /// The longest base delay.
    pub max_backoff: Duration,
    /// The longest `retry-after` waited for; an answer asking for longer
    /// is final (not retried).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts: 100 ms doubling to at most 5 s between them.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (one attempt): for tests that want to see every
    /// failure.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// `attempts` attempts with the default delays.
    pub fn with_attempts(attempts: u32) -> Self {
        Self {
            max_attempts: attempts,
            ..Self::default()
        }
    }

    /// Attempts in all (at least 1).
    pub fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// The base delay (before jitter) of retry `retry` (1 for the first).
    pub fn base_delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }

    /// The delay of retry `retry` with jitter `fraction` in `[0, 1)`, and a
    /// relay's `retry-after`, if any.
    pub(crate) fn delay_with(
        &self,
        retry: u32,
        fraction: f64,
        retry_after: Option<Duration>,
    ) -> Duration {
        let base = self.base_delay(retry);
        let half = base / 2;
        let jittered = half + half.mul_f64(fraction.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => jittered.max(ra.min(self.max_retry_after)),
            None => jittered,
        }
    }

    /// Whether a relay's `retry-after` asks for longer than this policy
    /// waits: the answer is final, not retried.
    pub(crate) fn waits_longer(&self, retry_after: Option<Duration>) -> bool {
        retry_after.is_some_and(|ra| ra > self.max_retry_after)
    }

    /// The delay of retry `retry`, with random jitter.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        self.delay_with(retry, crate::platform::random_fraction(), retry_after)
    }
}

/// Whether an answer with this status is worth retrying.
pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 503)
}

/// Whether a transport error is worth retrying: connection failures,
/// timeouts and dropped connections, but not errors in building the request
/// or following redirects.
pub(crate) fn is_transient_transport(e: &reqwest::Error) -> bool {
    !(e.is_builder() || e.is_redirect() || e.is_status() || e.is_decode())
}

/// Parses `retry-after` as delta-seconds (the HTTP-date form is ignored:
/// the backoff applies).
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    (!v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse::<u64>().ok())
        .flatten()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let p = RetryPolicy::default();
        let ms: Vec<u128> = (1..=9).map(|n| p.base_delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // No overflow for absurd retry counts.
        assert_eq!(p.base_delay(u32::MAX), Duration::from_secs(5));
        assert_eq!(p.base_delay(0), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let p = RetryPolicy::default();
        for n in 1..10 {
            let base = p.base_delay(n);
            assert_eq!(p.delay_with(n, 0.0, None), base / 2);
            assert!(p.delay_with(n, 0.999_999, None) <= base);
            for _ in 0..50 {
                let d = p.delay(n, None);
                assert!(d >= base / 2 && d <= base, "{d:?} {base:?}");
            }
        }
        // Out-of-range fractions are clamped.
        assert!(p.delay_with(3, 7.0, None) <= p.base_delay(3));
        assert_eq!(
            p.delay_with(3, f64::NAN.max(-1.0), None),
            p.base_delay(3) / 2
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay_with(1, 0.0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay_with(1, 0.0, Some(Duration::from_secs(86_400))),
            p.max_retry_after
        );
        // A short retry-after does not shorten the backoff.
        assert_eq!(
            p.delay_with(7, 0.0, Some(Duration::from_secs(0))),
            Duration::from_millis(2500)
        );
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        for bad in [
            "",
            "-1",
            "1.5",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "99999999999",
        ] {
            assert_eq!(parse_retry_after(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_documented_statuses_are_transient() {
        for s in [408, 429, 500, 503] {
            assert!(is_transient_status(StatusCode::from_u16(s).unwrap()));
        }
        for s in [400, 401, 403, 404, 409, 413, 415, 416, 422, 501, 502, 504] {
            assert!(
                !is_transient_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn none_means_one_attempt() {
        assert_eq!(RetryPolicy::none().attempts(), 1);
        assert_eq!(RetryPolicy::with_attempts(0).attempts(), 1);
        assert_eq!(RetryPolicy::with_attempts(3).attempts(), 3);
    }
}
