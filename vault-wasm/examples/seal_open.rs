//! Native half of the seal/open benchmark (`web/bench/seal-open.mjs` runs
//! it beside the same fixture in Chromium): seals and opens one record of
//! `MB` megabytes (default 50; fractions allowed, 0.004 is 4 KB) `ROUNDS`
//! times (default 5), times the raw primitives over the same bytes
//! (ChaCha20-Poly1305, SHA-256, BLAKE3), and prints the best time per
//! operation, in milliseconds, as JSON. Small sizes repeat each operation
//! within a round so that a round lasts long enough to time.
//!
//! `cargo run --release -p vault-wasm --features bench --example seal_open -- 50 5`
#![allow(clippy::print_stdout)]

use std::time::Instant;

use vault_wasm::bench::SealBench;

/// Best time per operation over `rounds` rounds of `reps` repetitions.
fn best(
    rounds: usize,
    reps: usize,
    mut op: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    let mut best = f64::MAX;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        for _ in 0..reps {
            op()?;
        }
        best = best.min(t.elapsed().as_secs_f64() * 1000.0 / reps as f64);
    }
    Ok(best)
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mb: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50.0);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let len = (mb * 1_000_000.0) as usize;
    let reps = (20_000_000 / len.max(1)).max(1);
    let mut bench = SealBench::create(len).map_err(|e| e.to_string())?;
    let seal = best(rounds, reps, || {
        bench.seal_once().map(drop).map_err(|e| e.to_string())
    })?;
    let open = best(rounds, reps, || {
        bench.open_once().map(drop).map_err(|e| e.to_string())
    })?;
    let sha256 = best(rounds, reps, || {
        std::hint::black_box(bench.sha256_once());
        Ok(())
    })?;
    let blake3 = best(rounds, reps, || {
        std::hint::black_box(bench.blake3_once());
        Ok(())
    })?;
    let chacha = best(rounds, reps, || {
        std::hint::black_box(bench.chacha_once());
        Ok(())
    })?;
    println!(
        "{{\"bytes\":{len},\"seal_ms\":{seal:.4},\"open_ms\":{open:.4},\"chacha_ms\":{chacha:.4},\"sha256_ms\":{sha256:.4},\"blake3_ms\":{blake3:.4}}}"
    );
    Ok(())
}
