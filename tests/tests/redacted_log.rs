//! What a member learns from the log, against the real relay and the real
//! `vault` command (`docs/format.md` §8.8): a clinician given "labs"
//! receives and stores nothing of another collection's members, verifies
//! the whole chain to the same checkpoint as the patient, and, once given
//! that collection too, verifies the log again and reads it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use vault_tests::{files_below, CliProfile, RelayProcess};

/// Whether any file of a profile holds `needle` (the local store included).
fn profile_holds(profile: &CliProfile, needle: &[u8]) -> bool {
    files_below(&profile.home).iter().any(|f| {
        std::fs::read(f)
            .unwrap_or_default()
            .windows(needle.len())
            .any(|w| w == needle)
    })
}

#[test]
fn a_clinician_given_labs_learns_nothing_of_psychiatry_until_given_it() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    let alice = CliProfile::new(&dir.path().join("alice"), &relay.url);
    let carol = CliProfile::new(&dir.path().join("carol"), &relay.url);
    let p_fp = patient.init("Pat Example", "patient")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    patient.json(&["create"]);
    for (who, name, handle) in [
        (&alice, "Dr Alice", "alice"),
        (&carol, "Dr Carol Psychiatry", "carol"),
    ] {
        let fp = who.init(name, "clinician")["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned();
        who.ok(&["whoami", "--publish", "--no-qr"]);
        patient.json(&["contacts", "add", handle, "--lookup", &fp]);
        who.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    }
    let add = |collection: &str, title: &str, body: &str| {
        let r = patient.run_with_stdin(
            &["--json", "add", "-", "-c", collection, "--title", title],
            body.as_bytes(),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    add("labs", "Potassium", "4.1 mmol/L");
    add("psychiatry", "Assessment", "seen in clinic");
    patient.json(&["share", "psychiatry", "--with", "carol"]);
    patient.json(&["share", "labs", "--with", "alice"]);
    add("psychiatry", "Follow-up", "seen again");

    alice.json(&["inbox"]);
    let listed = alice.json(&["--vault", "pat", "list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let code = patient.json(&["verify"])["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.json(&["verify", "--vault", "pat", "--compare", &code]);
    assert!(
        !profile_holds(&alice, b"Dr Carol Psychiatry"),
        "Carol's identity reached Alice's device"
    );
    assert!(
        profile_holds(&patient, b"Dr Carol Psychiatry"),
        "the scan must be able to find the name where it is"
    );

    // Given psychiatry too, Alice's device verifies the log again from the
    // start and reads both collections; the checkpoint is unchanged.
    patient.json(&["share", "psychiatry", "--with", "alice"]);
    alice.json(&["--vault", "pat", "sync"]);
    let listed = alice.json(&["--vault", "pat", "list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    let code = patient.json(&["verify"])["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.json(&["verify", "--vault", "pat", "--compare", &code]);
    assert!(profile_holds(&alice, b"Dr Carol Psychiatry"));
}
