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

use vault_tests::{patient_and_clinician, relay_tool, CliProfile, RelayProcess};

#[test]
fn a_relay_restored_from_an_older_backup_is_repaired_by_the_patients_device() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let listen = relay.url.trim_start_matches("http://").to_owned();
    let (patient, doc) = patient_and_clinician(dir.path(), &relay.url);
    let first = patient.add_lab("Potassium", "4.1 mmol/L");
    patient.json(&["share", "labs", "--with", "dr"]);
    doc.json(&["inbox"]);

    // The operator's nightly backup; then the day goes on.
    let backup = dir.path().join("relay.tar");
    relay_tool(
        &relay.data_dir,
        &["backup", "--output", backup.to_str().unwrap()],
    );
    let second = patient.add_lab("Sodium", "140 mmol/L");
    let third = patient.add_lab("Glucose", "5.1 mmol/L");
    doc.json(&["--vault", "pat", "sync"]);
    let before = patient.checkpoint(&[]);

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
    assert_eq!(patient.checkpoint(&[]), before);

    // Everyone converges, and every record opens, on both devices.
    doc.json(&["sync"]);
    let code = patient.checkpoint(&[]);
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
    patient.add_lab("Potassium", "4.1 mmol/L");
    let backup = dir.path().join("relay.tar");
    relay_tool(
        &relay.data_dir,
        &["backup", "--output", backup.to_str().unwrap()],
    );
    // A copy of the patient's device from the time of the backup.
    let copy_home = patient.copy_device(&dir.path().join("patient-copy"));
    patient.add_lab("Sodium", "140 mmol/L");
    relay.stop();
    let restored = dir.path().join("restored");
    relay_tool(&restored, &["restore", "--input", backup.to_str().unwrap()]);
    let relay2 = RelayProcess::start_on(&restored, &listen, &[]);
    // The stale copy writes a different entry at the same place.
    let copy = CliProfile::new(&copy_home, &relay2.url);
    copy.add_lab("Chloride", "101 mmol/L");
    let head_before = patient.run(&["sync"]);
    assert_ne!(head_before.code, 0);
    let r = patient.run(&["--json", "sync", "--repair"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("fork"), "{}", r.stderr);
    // The relay kept its own history: the copy still reads what it wrote.
    let listed = copy.json(&["list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
}
