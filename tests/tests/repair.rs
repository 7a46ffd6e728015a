//! Repairing a relay restored from an older backup (issue 15, decision
//! 53), against the real relay and the real `vault` command: the devices
//! that hold newer verified entries report the rollback, the patient's
//! device pushes back what the relay lost (entries and record ciphertexts),
//! and every device converges on one checkpoint and opens every record. A
//! relay whose history differs from a device's is not "repaired".
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;
use std::process::Command;

use vault_tests::{relay_binary, CliProfile, RelayProcess};

fn relay_tool(data_dir: &Path, args: &[&str]) {
    let out = Command::new(relay_binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "relay-server {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn add(p: &CliProfile, title: &str, body: &str) -> String {
    let r = p.run_with_stdin(
        &["--json", "add", "-", "-c", "labs", "--title", title],
        body.as_bytes(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v[0]["record"].as_str().unwrap().to_owned()
}

fn checkpoint(p: &CliProfile, vault: &[&str]) -> String {
    let mut args = vec!["verify"];
    args.extend_from_slice(vault);
    p.json(&args)["checkpoint"].as_str().unwrap().to_owned()
}

#[test]
fn a_relay_restored_from_an_older_backup_is_repaired_by_the_patients_device() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let listen = relay.url.trim_start_matches("http://").to_owned();
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    let doc = CliProfile::new(&dir.path().join("doc"), &relay.url);
    let p_fp = patient.init("Pat Example", "patient")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    patient.json(&["create"]);
    let d_fp = doc.init("Dr Dee", "clinician")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    doc.ok(&["whoami", "--publish", "--no-qr"]);
    patient.json(&["contacts", "add", "dr", "--lookup", &d_fp]);
    doc.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    let first = add(&patient, "Potassium", "4.1 mmol/L");
    patient.json(&["share", "labs", "--with", "dr"]);
    doc.json(&["inbox"]);

    // The operator's nightly backup; then the day goes on.
    let backup = dir.path().join("relay.tar");
    relay_tool(
        &relay.data_dir,
        &["backup", "--output", backup.to_str().unwrap()],
    );
    let second = add(&patient, "Sodium", "140 mmol/L");
    let third = add(&patient, "Glucose", "5.1 mmol/L");
    doc.json(&["--vault", "pat", "sync"]);
    let before = checkpoint(&patient, &[]);

    // The relay is lost and restored from the backup, on the same address.
    relay.stop();
    let restored = dir.path().join("restored");
    relay_tool(&restored, &["restore", "--input", backup.to_str().unwrap()]);
    let _relay = RelayProcess::start_on(&restored, &listen, &[]);

    // Both devices see the rollback; the hint names the repair.
    let r = doc.run(&["sync"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("rollback"), "{}", r.stderr);
    assert!(r.stderr.contains("vault sync --repair"), "{}", r.stderr);

    // The patient's device repairs it.
    let repaired = patient.json(&["sync", "--repair"]);
    assert_eq!(repaired[0]["repaired"]["entries"], 2, "{repaired}");
    assert_eq!(repaired[0]["repaired"]["blobs"], 2, "{repaired}");
    assert!(repaired[0]["repaired"]["stopped"].is_null(), "{repaired}");
    assert_eq!(checkpoint(&patient, &[]), before);

    // Everyone converges, and every record opens, on both devices.
    doc.json(&["sync"]);
    let code = checkpoint(&patient, &[]);
    doc.json(&["verify", "--vault", "pat", "--compare", &code]);
    for (record, body) in [
        (&first, "4.1 mmol/L"),
        (&second, "140 mmol/L"),
        (&third, "5.1 mmol/L"),
    ] {
        assert_eq!(doc.ok(&["open", record, "--vault", "pat"]).trim(), body);
        assert_eq!(patient.ok(&["open", record]).trim(), body);
    }
    // A second repair has nothing to do.
    let again = patient.json(&["sync", "--repair"]);
    assert_eq!(again[0]["repaired"]["entries"], 0, "{again}");
}

#[test]
fn a_relay_whose_history_differs_is_not_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let listen = relay.url.trim_start_matches("http://").to_owned();
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    patient.init("Pat Example", "patient");
    patient.json(&["create"]);
    add(&patient, "Potassium", "4.1 mmol/L");
    let backup = dir.path().join("relay.tar");
    relay_tool(
        &relay.data_dir,
        &["backup", "--output", backup.to_str().unwrap()],
    );
    // A copy of the patient's device from the time of the backup.
    let copy_home = dir.path().join("patient-copy");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&patient.home)
        .arg(&copy_home)
        .status()
        .unwrap();
    assert!(status.success());
    add(&patient, "Sodium", "140 mmol/L");
    relay.stop();
    let restored = dir.path().join("restored");
    relay_tool(&restored, &["restore", "--input", backup.to_str().unwrap()]);
    let relay2 = RelayProcess::start_on(&restored, &listen, &[]);
    // The stale copy writes a different entry at the same place.
    let copy = CliProfile::new(&copy_home, &relay2.url);
    add(&copy, "Chloride", "101 mmol/L");
    let head_before = patient.run(&["sync"]);
    assert_ne!(head_before.code, 0);
    let r = patient.run(&["--json", "sync", "--repair"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("fork"), "{}", r.stderr);
    // The relay kept its own history: the copy still reads what it wrote.
    let listed = copy.json(&["list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
}
