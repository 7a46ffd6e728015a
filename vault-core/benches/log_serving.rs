#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! What serving members a redacted log costs (`docs/format.md` §8.8), on
//! a vault of two collections of 2,000 small records each, with one member
//! of one of them:
//!
//! - the relay: parsing each stored entry, deciding its form for the
//!   member, and redacting it, against parsing alone (the unit) and
//!   against serving the owner (the stored bytes as they are);
//! - the member's device: verifying the log as served (half of it
//!   redacted) against the owner verifying it whole.
//!
//! `cargo bench -p vault-core --bench log_serving` (prints medians).

use std::hint::black_box;
use std::time::Duration;

use vault_core::VaultState;
use vault_core::{Keyring, LogEntry, Permission, Role};

const RECORDS: usize = 2_000;

mod common;
use common::{identity, median, NOW};

fn main() {
    let owner = identity(1, Role::Patient);
    let member = identity(2, Role::Clinician);
    let (mut state, genesis) = VaultState::create(&owner, NOW).expect("vault");
    let mut log = vec![genesis];
    let mut push = |state: &mut VaultState, e: LogEntry| {
        state.apply(&e).expect("apply");
        log.push(e);
    };
    let mut colls = Vec::new();
    for name in ["labs", "psychiatry"] {
        let (c, e) = state
            .create_collection(&owner, name, NOW)
            .expect("collection");
        push(&mut state, e);
        colls.push(c);
    }
    let info = common::info();
    let mut keyring = Keyring::new(&owner, NOW);
    for i in 0..2 * RECORDS {
        let (_, e) = state
            .put_record(
                &mut keyring,
                &colls[i % 2],
                None,
                &info,
                vault_core::RecordBody::new(&b"x"[..], 1),
                std::io::sink(),
            )
            .expect("put");
        push(&mut state, e);
    }
    let e = state
        .share_collection(
            &mut keyring,
            &colls[0],
            member.public(),
            Permission::Read,
            None,
        )
        .expect("share");
    push(&mut state, e);
    let stored: Vec<Vec<u8>> = log.iter().map(|e| e.to_bytes().to_vec()).collect();
    let who = member.fingerprint();
    let n = stored.len() as f64;

    let parse_t = median(11, || {
        for b in &stored {
            black_box(LogEntry::from_bytes(b).expect("parse"));
        }
    });
    let serve_t = median(11, || {
        for b in &stored {
            let e = LogEntry::from_bytes(b).expect("parse");
            if state.shows_in_full(&e, &who) {
                black_box(b.len());
            } else {
                black_box(e.redacted_bytes());
            }
        }
    });
    let served: Vec<LogEntry> = log
        .iter()
        .map(|e| {
            if state.shows_in_full(e, &who) {
                e.clone()
            } else {
                e.redacted().expect("redact")
            }
        })
        .collect();
    let redacted = served.iter().filter(|e| e.is_redacted()).count();
    let owner_verify_t = median(5, || {
        black_box(VaultState::verify_log(&log).expect("verify"));
    });
    let member_verify_t = median(5, || {
        black_box(VaultState::verify_log_as(&who, NOW, &served, None).expect("verify"));
    });
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    println!(
        "log of {} entries, {redacted} served redacted to the member",
        stored.len()
    );
    println!(
        "relay, per entry: parse {:.2} us; parse + decide + redact for a member {:.2} us ({:.2}x parse); the owner is served stored bytes unparsed",
        us(parse_t),
        us(serve_t),
        serve_t.as_secs_f64() / parse_t.as_secs_f64()
    );
    println!(
        "device, per entry: owner verifies whole {:.2} us; member verifies as served {:.2} us ({:.2}x)",
        us(owner_verify_t),
        us(member_verify_t),
        member_verify_t.as_secs_f64() / owner_verify_t.as_secs_f64()
    );
}
