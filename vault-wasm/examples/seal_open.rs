//! Native half of the seal/open benchmark (`web/bench/seal-open.mjs` runs
//! it beside the same fixture in Chromium): seals and opens one record of
//! `MB` megabytes (default 50) `ROUNDS` times (default 5) and prints the
//! best times as JSON.
//!
//! `cargo run --release -p vault-wasm --features bench --example seal_open -- 50 5`
#![allow(clippy::print_stdout)]

use std::time::Instant;

use vault_wasm::bench::SealBench;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mb: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let len = mb * 1_000_000;
    let mut bench = SealBench::create(len).map_err(|e| e.to_string())?;
    let (mut seal, mut open) = (f64::MAX, f64::MAX);
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        bench.seal_once().map_err(|e| e.to_string())?;
        seal = seal.min(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        bench.open_once().map_err(|e| e.to_string())?;
        open = open.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!("{{\"bytes\":{len},\"seal_ms\":{seal:.1},\"open_ms\":{open:.1}}}");
    Ok(())
}
