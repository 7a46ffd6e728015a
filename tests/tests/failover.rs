//! The region failover drill (issue 15, decision 55), against the real
//! PostgreSQL streaming replication, SeaweedFS across two data centres and
//! haproxy of `scripts/cluster --regions 2`, and the real `vault` command:
//! a patient writes continuously through the load balancer; region A's
//! relays are killed and its PostgreSQL crashes; the standby is promoted
//! and region B's relays take over; the patient's device carries on after
//! retrying. With synchronous replication no acknowledged record is
//! missing; with asynchronous replication the test counts the
//! acknowledged records missing after the failover (the data-loss window)
//! and the patient's `vault sync --repair` restores every one. Either way
//! the clinician's device then opens every acknowledged record. The
//! recovery time (from the loss of region A to the first acknowledged
//! write after it) and the loss are printed.
//!
//! Needs PostgreSQL, SeaweedFS and haproxy (`scripts/services install`)
//! and a relay-server built with the `postgres` and `s3` features.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vault_tests::cluster::Cluster;
use vault_tests::{patient_and_clinician, CliProfile};

/// What the writer saw: each acknowledged record with when it was
/// acknowledged, and whether a write was refused as a rollback (the relay
/// lost entries the device had verified).
#[derive(Default)]
struct Writes {
    acked: Vec<(String, f64)>,
    rolled_back: bool,
}

/// Seconds since the Unix epoch (the failover report's clock).
fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Adds records one after another until told to stop or a rollback stops
/// it; a failed add (the relay or the load balancer unavailable) is
/// retried after a short pause, as a person would.
fn writer(patient: CliProfile, stop: Arc<AtomicBool>, writes: Arc<Mutex<Writes>>) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let body = format!("{n}.{n} mmol/L");
        let r = patient.run_with_stdin(
            &[
                "--json",
                "add",
                "-",
                "-c",
                "labs",
                "--title",
                &format!("Result {n}"),
            ],
            body.as_bytes(),
        );
        if r.code == 0 {
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            let id = v[0]["record"].as_str().unwrap().to_owned();
            writes.lock().unwrap().acked.push((id, epoch()));
        } else if r.stderr.contains("rollback") {
            writes.lock().unwrap().rolled_back = true;
            return;
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The records the clinician's device lists in the patient's "labs",
/// after bringing the vault up to date (joining it the first time).
fn listed(doc: &CliProfile) -> BTreeSet<String> {
    doc.json(&["inbox"]);
    doc.json(&["sync"]);
    doc.json(&["--vault", "pat", "list", "-c", "labs"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"].as_str().unwrap().to_owned())
        .collect()
}

fn drill(sync_replica: bool) {
    let mode = if sync_replica {
        "synchronous"
    } else {
        "asynchronous"
    };
    let cluster = Cluster::start_two_regions(sync_replica, &["--rate", "1000000"]);
    let dir = tempfile::tempdir().unwrap();
    // The clinician, granted "labs" before the drill; the device first
    // reads the vault after the failover.
    let (patient, doc) = patient_and_clinician(dir.path(), &cluster.url);
    patient.add_lab("Baseline", "4.1 mmol/L");
    patient.json(&["share", "labs", "--with", "dr"]);

    // Writes run through region A.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Writes::default()));
    let thread = {
        let (p, s, w) = (patient.clone(), stop.clone(), writes.clone());
        std::thread::spawn(move || writer(p, s, w))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while writes.lock().unwrap().acked.len() < 6 {
        assert!(Instant::now() < deadline, "the writer made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Asynchronous: the link between the regions is cut for a while, so
    // what is acknowledged meanwhile reaches region A only.
    if !sync_replica {
        cluster.ctl(&["pause-replication"]);
        let cut = writes.lock().unwrap().acked.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while writes.lock().unwrap().acked.len() < cut + 3 {
            assert!(Instant::now() < deadline, "the writer made no progress");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Region A is lost mid-writes; region B takes over.
    let report = cluster.failover();
    let lost_at: f64 = report
        .split_whitespace()
        .nth(2)
        .and_then(|t| t.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no time in the failover report: {report}"));
    let before = writes
        .lock()
        .unwrap()
        .acked
        .iter()
        .filter(|(_, at)| *at < lost_at)
        .count();
    // The writer carries on (or stops at a rollback): wait for three more
    // acknowledged writes, or the rollback.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let w = writes.lock().unwrap();
        if w.rolled_back || w.acked.len() >= before + 3 {
            break;
        }
        drop(w);
        assert!(
            Instant::now() < deadline,
            "no write succeeded after the failover"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    thread.join().unwrap();
    let (acked, rolled_back, first_after) = {
        let w = writes.lock().unwrap();
        let first_after = w
            .acked
            .iter()
            .find(|(_, at)| *at > lost_at)
            .map(|(_, at)| at - lost_at);
        let acked: BTreeSet<String> = w.acked.iter().map(|(id, _)| id.clone()).collect();
        (acked, w.rolled_back, first_after)
    };

    // What region B holds of what was acknowledged, before any repair.
    let present = listed(&doc);
    let missing: Vec<&String> = acked.difference(&present).collect();
    let mut repaired_after = None;
    if sync_replica {
        assert!(
            missing.is_empty(),
            "synchronous replication lost acknowledged records: {missing:?}"
        );
        assert!(!rolled_back, "no device should see a rollback");
    } else {
        // Three records were acknowledged while the link was cut: the
        // promoted standby never received them.
        assert!(missing.len() >= 3, "{} missing: {missing:?}", missing.len());
        assert!(rolled_back, "the patient's device must see the rollback");
        // The patient's device holds what the relay lost: it repairs.
        let repaired = patient.json(&["sync", "--repair"]);
        assert!(
            repaired[0]["repaired"]["entries"].as_u64().unwrap() >= missing.len() as u64,
            "{repaired}"
        );
        assert!(repaired[0]["repaired"]["stopped"].is_null(), "{repaired}");
        repaired_after = Some(epoch() - lost_at);
        // And writes go on.
        patient.add_lab("After repair", "5.0 mmol/L");
    }

    // The clinician's device opens every acknowledged record.
    let now_present = listed(&doc);
    let still_missing: Vec<&String> = acked.difference(&now_present).collect();
    assert!(
        still_missing.is_empty(),
        "acknowledged records missing after the drill: {still_missing:?}"
    );
    for id in &acked {
        let text = doc.ok(&["open", id, "--vault", "pat"]);
        assert!(text.trim().ends_with("mmol/L"), "{id}: {text}");
    }
    let code = patient.json(&["verify"])["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    doc.json(&["verify", "--vault", "pat", "--compare", &code]);
    println!(
        "failover drill ({mode} replication): {} writes acknowledged before the loss of region A, {} in all; \
         {} acknowledged but missing after the failover{}; first acknowledged write {} after the loss of region A{}; \
         script: {}",
        before,
        acked.len(),
        missing.len(),
        if rolled_back { " (the device saw the rollback)" } else { "" },
        first_after.map_or_else(
            || "none before the repair".to_owned(),
            |d| format!("{d:.2} s")
        ),
        repaired_after.map_or_else(String::new, |d| format!(
            "; the patient's device repaired the relay {d:.2} s after the loss"
        )),
        report.trim()
    );
}

/// Both drills, one after the other: two clusters of two regions at once
/// are more than a 2-core machine starts in time.
#[test]
fn failover_loses_no_acknowledged_write_synchronously_and_nothing_the_devices_repair_asynchronously(
) {
    drill(true);
    drill(false);
}
