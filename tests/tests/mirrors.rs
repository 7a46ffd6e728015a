//! Mirror relays run by different operators (issue 15, decision 57),
//! against real relays and the real `vault` command: the owner names two
//! mirrors, the devices keep them current, the home relay is lost and the
//! clinician reads from a mirror (passing over one that lags, and naming
//! it), the owner moves the home to a mirror and writing goes on there;
//! and a mirror whose log was forked (a stale copy of the owner's device
//! writing there) is detected and named, never read from.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use vault_tests::{patient_and_clinician, relay_tool, CliProfile, RelayProcess};

fn listen(relay: &RelayProcess) -> String {
    relay.url.trim_start_matches("http://").to_owned()
}

fn statuses(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn reads_continue_from_a_mirror_when_the_home_is_lost_and_the_home_moves_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut home = RelayProcess::start(&dir.path().join("home"), &[]);
    // Clients try mirrors in the order of their origins: M1 first.
    let (mut m1, m2) = {
        let a = RelayProcess::start(&dir.path().join("m1"), &[]);
        let b = RelayProcess::start(&dir.path().join("m2"), &[]);
        if a.url < b.url {
            (a, b)
        } else {
            (b, a)
        }
    };
    let (patient, doc) = patient_and_clinician(dir.path(), &home.url);
    let first = patient.add_lab("Potassium", "4.1 mmol/L");
    patient.json(&["share", "labs", "--with", "dr"]);
    doc.json(&["inbox"]);

    // The owner names two mirrors; each receives the vault at once.
    let named = patient.json(&["relays", "set", "--mirror", &m1.url, "--mirror", &m2.url]);
    assert_eq!(
        statuses(&named["mirrors"]),
        ["up_to_date", "up_to_date"],
        "{named}"
    );
    assert!(
        named["mirrors"][0]["sent_entries"].as_u64().unwrap() >= 4,
        "{named}"
    );
    // M1's operator takes a backup, which will be all it has later.
    let backup = dir.path().join("m1.tar");
    relay_tool(
        &m1.data_dir,
        &["backup", "--output", backup.to_str().unwrap()],
    );

    // Life goes on at the home; syncs keep the mirrors current.
    let second = patient.add_lab("Sodium", "140 mmol/L");
    let synced = patient.json(&["sync"]);
    assert_eq!(
        statuses(&synced[0]["mirrors"]),
        ["up_to_date", "up_to_date"],
        "{synced}"
    );
    assert_eq!(synced[0]["mirrors"][1]["sent_entries"], 1, "{synced}");
    assert_eq!(synced[0]["mirrors"][1]["sent_records"], 1, "{synced}");
    doc.json(&["sync"]);
    let shown = doc.json(&["relays", "--vault", "pat"]);
    assert_eq!(
        statuses(&shown["relays"]),
        ["up_to_date", "up_to_date", "up_to_date"],
        "{shown}"
    );
    assert_eq!(shown["relays"][0]["role"], "home");
    // A record the clinician has not fetched yet.
    let third = patient.add_lab("Glucose", "5.1 mmol/L");
    patient.json(&["sync"]);

    // M1 is restored from its older backup (it lags), and the home is lost.
    m1.stop();
    let m1_dir = dir.path().join("m1-restored");
    relay_tool(&m1_dir, &["restore", "--input", backup.to_str().unwrap()]);
    let _m1 = RelayProcess::start_on(&m1_dir, &listen(&m1), &[]);
    home.stop();

    // The clinician reads from the mirror that holds everything, naming
    // the one that lags, and opens every record, the new one's ciphertext
    // coming from the mirror.
    let r = doc.run(&["sync"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&m1.url) && r.stderr.contains("lags"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(&format!("read from the mirror {}", m2.url)),
        "{}",
        r.stderr
    );
    for (record, body) in [
        (&first, "4.1 mmol/L"),
        (&second, "140 mmol/L"),
        (&third, "5.1 mmol/L"),
    ] {
        assert_eq!(doc.ok(&["open", record, "--vault", "pat"]).trim(), body);
    }
    // The clinician cannot write to a mirror (and has no write access).
    // The owner moves the home to M2; M1 is brought up to date on the way.
    let moved = patient.json(&["relays", "set", "--home", &m2.url, "--mirror", &m1.url]);
    assert_eq!(moved["home"], m2.url.as_str(), "{moved}");
    assert_eq!(statuses(&moved["mirrors"]), ["up_to_date"], "{moved}");
    assert!(
        moved["mirrors"][0]["sent_entries"].as_u64().unwrap() >= 3,
        "{moved}"
    );

    // Writing goes on at the new home, and the clinician follows the move.
    let fourth = patient.add_lab("Chloride", "101 mmol/L");
    doc.json(&["sync"]);
    assert_eq!(
        doc.ok(&["open", &fourth, "--vault", "pat"]).trim(),
        "101 mmol/L"
    );
    let code = patient.checkpoint(&[]);
    doc.json(&["verify", "--vault", "pat", "--compare", &code]);
    let shown = doc.json(&["relays", "--vault", "pat"]);
    assert_eq!(shown["relays"][0]["relay"], m2.url.as_str(), "{shown}");
    assert_eq!(statuses(&shown["relays"])[0], "up_to_date", "{shown}");
}

#[test]
fn a_forked_mirror_is_named_and_never_read_from() {
    let dir = tempfile::tempdir().unwrap();
    let mut home = RelayProcess::start(&dir.path().join("home"), &[]);
    let mut m1 = RelayProcess::start(&dir.path().join("m1"), &[]);
    let (patient, doc) = patient_and_clinician(dir.path(), &home.url);
    patient.add_lab("Potassium", "4.1 mmol/L");
    patient.json(&["share", "labs", "--with", "dr"]);
    doc.json(&["inbox"]);
    patient.json(&["relays", "set", "--mirror", &m1.url]);
    // A copy of the patient's device as it is now (a stolen or stale one).
    let copy_home = patient.copy_device(&dir.path().join("patient-copy"));
    // M1 is down while the patient writes; the sync says so.
    m1.stop();
    patient.add_lab("Sodium", "140 mmol/L");
    let r = patient.run(&["sync"]);
    assert!(
        r.stderr.contains(&m1.url) && r.stderr.contains("unavailable"),
        "{}",
        r.stderr
    );
    doc.json(&["sync"]);
    // The home is lost; M1 comes back, and the stale copy writes there a
    // history of its own (it names M1 the home, which M1 accepts from the
    // owner's key).
    home.stop();
    let m1 = RelayProcess::start_on(&m1.data_dir, &listen(&m1), &[]);
    let copy = CliProfile::new(&copy_home, &home.url);
    copy.json(&["relays", "set", "--home", &m1.url]);

    // The clinician's device refuses the forked mirror and names it.
    let r = doc.run(&["sync"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&m1.url) && r.stderr.contains("forked"),
        "{}",
        r.stderr
    );
    let shown = doc.json(&["relays", "--vault", "pat"]);
    assert_eq!(shown["relays"][1]["relay"], m1.url.as_str(), "{shown}");
    assert_eq!(shown["relays"][1]["status"], "forked", "{shown}");
    // The patient's own device agrees: the mirror is not "repaired".
    let shown = patient.json(&["relays"]);
    assert_eq!(shown["relays"][1]["status"], "forked", "{shown}");
}
