//! What differs between native targets and `wasm32-unknown-unknown`: the
//! wall clock, sleeping, randomness for backoff jitter, and CPU work run
//! beside network waits.

use std::time::Duration;

/// Seconds since the Unix epoch from the local clock (0 if the clock is
/// before 1970).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch from the browser's clock
/// (`SystemTime::now` panics on `wasm32-unknown-unknown`).
#[cfg(target_arch = "wasm32")]
pub(crate) fn unix_now() -> u64 {
    let ms = js_sys::Date::now();
    if ms.is_finite() && ms > 0.0 {
        // Saturating float-to-integer conversion.
        (ms / 1000.0) as u64
    } else {
        0
    }
}

/// Waits for `d` (tokio's timer on native targets).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Waits for `d` (a browser timer on wasm32).
#[cfg(target_arch = "wasm32")]
pub(crate) async fn sleep(d: Duration) {
    gloo_timers::future::sleep(d).await;
}

/// Lets the browser's event loop run (input, rendering, timers) before
/// going on: a zero-delay timer. A response already buffered is read in
/// promise continuations that never give way, so a long read must. Nothing
/// on native targets, where tasks run on their own threads.
#[cfg(target_arch = "wasm32")]
pub(crate) async fn give_way() {
    gloo_timers::future::sleep(Duration::ZERO).await;
}

/// See the wasm32 version: nothing to do here.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn give_way() {}

/// Runs `work` on tokio's blocking pool, so the caller's network requests
/// go on meanwhile (the command line runs a single-threaded runtime); in
/// place when called outside a tokio runtime. A panic in `work` is resumed
/// here, as if it had run in place; a runtime shutting down before `work`
/// ran is an I/O error (nothing was done).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn off_thread<T, F>(work: F) -> crate::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Ok(work());
    };
    match runtime.spawn_blocking(work).await {
        Ok(done) => Ok(done),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(std::io::Error::other(format!(
                "the program is stopping and did not finish its work ({e}); run the command again"
            ))
            .into()),
        },
    }
}

/// Runs `work` in place: a browser page has no second thread (the
/// network requests it is joined with start after it).
#[cfg(target_arch = "wasm32")]
pub(crate) async fn off_thread<T, F>(work: F) -> crate::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    Ok(work())
}

/// A random number in `[0, 1)`, for jitter (0.5 if the system has no
/// randomness, which only makes the jitter predictable).
pub(crate) fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        return 0.5;
    }
    // 53 random bits make a uniformly distributed double in [0, 1).
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}
