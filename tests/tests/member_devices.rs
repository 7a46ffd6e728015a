//! A member's devices against the real relay, through the `vault`
//! command (`docs/format.md` §8.12, decision 70): Dr Dee, a clinician who
//! owns no vault, lists a laptop and a phone from her key file (the list is
//! published in the relay's directory); the patient shares labs with her
//! and the grant reaches both devices; the laptop writes a result back as
//! Dr Dee; the phone removes the laptop, and the relay refuses it at once;
//! the patient's next sync rotates labs, and what comes next opens on the
//! phone and the key file only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use vault_tests::{CliProfile, RelayProcess};

fn fingerprint(v: &serde_json::Value) -> String {
    v["fingerprint"].as_str().unwrap().to_owned()
}

/// `device` writes a result back into the patient's labs: the record's
/// id, and its row in the patient's `vault list`.
fn write_back(device: &CliProfile, patient: &CliProfile) -> (String, serde_json::Value) {
    let written = device.run_with_stdin(
        &[
            "--json", "add", "-", "-c", "labs", "--title", "Ferritin", "--vault", "pat",
        ],
        b"ferritin 30 ug/L",
    );
    assert_eq!(written.code, 0, "{}", written.stderr);
    let written: serde_json::Value = serde_json::from_str(&written.stdout).unwrap();
    let note = written[0]["record"].as_str().unwrap().to_owned();
    let listed = patient.json(&["list"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["record"] == note.as_str())
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    (note, row)
}

#[test]
fn a_grant_reaches_every_device_of_a_clinician_and_a_removed_one_is_shut_out() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let (patient, doc) = vault_tests::patient_and_clinician(dir.path(), &relay.url);
    let p_fp = fingerprint(&patient.json(&["whoami"]));
    let lab = patient.add_lab("HbA1c", "48 mmol/mol");
    let device = |name: &str| {
        let (profile, fp) = vault_tests::published_device(dir.path(), &relay.url, name);
        profile.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
        (profile, fp)
    };
    let (laptop, l_fp) = device("laptop");
    let (phone, ph_fp) = device("phone");

    // Dr Dee owns no vault: her key file lists her devices in the relay's
    // directory.
    let added = doc.json(&["devices", "add", &l_fp]);
    assert_eq!(
        (added["serial"].as_u64(), added["generation"].as_u64()),
        (Some(1), Some(1)),
        "{added}"
    );
    let added = doc.json(&["devices", "add", &ph_fp]);
    assert_eq!(
        (added["serial"].as_u64(), added["generation"].as_u64()),
        (Some(2), Some(1)),
        "{added}"
    );
    let listed = doc.json(&["devices", "list"]);
    assert_eq!(listed["devices"].as_array().unwrap().len(), 2, "{listed}");

    // The patient shares labs: the list goes into labs first, and the
    // grant to Dr Dee's generation 1, which each device opens.
    patient.json(&["share", "labs", "--with", "dr", "--add-only"]);
    for d in [&laptop, &phone] {
        d.json(&["inbox"]);
        assert_eq!(
            d.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
            "48 mmol/mol"
        );
    }
    doc.json(&["inbox"]);
    assert_eq!(
        doc.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );

    // The laptop writes a result back, as Dr Dee: the patient reads it and
    // sees which device wrote it.
    let (note, row) = write_back(&laptop, &patient);
    assert_eq!(
        patient.ok(&["open", &note[..8], "-o", "-"]),
        "ferritin 30 ug/L"
    );
    assert_eq!(row["author"], l_fp.as_str(), "{row}");
    assert_eq!(row["author_name"], "laptop (dr's device)", "{row}");

    // The phone removes the laptop (a new generation), carrying the list
    // into labs: the relay refuses the laptop there at once.
    let removed = phone.json(&["devices", "remove", &l_fp[..8]]);
    assert_eq!(removed["generation"], 2, "{removed}");
    assert_eq!(removed["carried"].as_array().unwrap().len(), 1, "{removed}");
    let refused = laptop.run(&["sync"]);
    assert!(
        refused.stderr.contains("no longer shared with you"),
        "the laptop still reads: {} {}",
        refused.stdout,
        refused.stderr
    );
    let refused = laptop.run_with_stdin(
        &[
            "add", "-", "-c", "labs", "--title", "late", "--vault", "pat",
        ],
        b"late",
    );
    assert_ne!(
        refused.code, 0,
        "the relay took the removed laptop's record"
    );

    // The patient's sync rotates labs, revoking nobody: Dr Dee's grant goes
    // to generation 2, which the laptop does not hold.
    let (rekeyed, synced) = patient.sync_rekeyed();
    assert_eq!(rekeyed, 1, "{synced}");
    let sodium = patient.add_lab("Sodium", "139 mmol/L");
    for who in [&phone, &doc] {
        assert_eq!(
            who.ok(&["open", &sodium[..8], "--vault", "pat", "-o", "-"]),
            "139 mmol/L"
        );
        assert_eq!(
            who.ok(&["open", &note[..8], "--vault", "pat", "-o", "-"]),
            "ferritin 30 ug/L"
        );
    }
    let refused = laptop.run(&["open", &sodium[..8], "--vault", "pat", "-o", "-"]);
    assert_ne!(
        refused.code, 0,
        "the removed laptop opened {}",
        refused.stdout
    );
    patient.ok(&["verify"]);
}

/// One device list for all of a person's vaults: the patient's laptop,
/// added in one vault, is listed in the second from the published chain;
/// removed in the first, it is removed (and the keys rotated) in the
/// second too, and the relay refuses it in both.
#[test]
fn a_device_removed_in_one_vault_is_removed_in_every_vault_of_the_person() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let (patient, _doc) = vault_tests::patient_and_clinician(dir.path(), &relay.url);
    let p_fp = fingerprint(&patient.json(&["whoami"]));
    let first = patient.json(&["vaults"])[0]["vault"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = patient.json(&["create"])["vault"]
        .as_str()
        .unwrap()
        .to_owned();
    let add = |vault: &str, title: &str, body: &str| {
        let r = patient.run_with_stdin(
            &[
                "--json", "add", "-", "-c", "labs", "--title", title, "--vault", vault,
            ],
            body.as_bytes(),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        v[0]["record"].as_str().unwrap().to_owned()
    };
    let in_first = add(&first, "HbA1c", "48 mmol/mol");
    let in_second = add(&second, "Sodium", "139 mmol/L");
    let (laptop, l_fp) = vault_tests::published_device(dir.path(), &relay.url, "laptop");
    laptop.json(&["contacts", "add", "pat", "--lookup", &p_fp]);

    let added = patient.json(&["devices", "add", &l_fp, "--vault", &first]);
    assert_eq!(added["elsewhere"]["published"], true, "{added}");
    // The second vault takes the published chain: the same version.
    let again = patient.json(&["devices", "add", &l_fp, "--vault", &second]);
    assert_eq!(
        (&again["serial"], &again["generation"]),
        (&added["serial"], &added["generation"]),
        "{again}"
    );
    laptop.json(&["inbox"]);
    assert_eq!(
        laptop.ok(&["open", &in_first[..8], "--vault", &first, "-o", "-"]),
        "48 mmol/mol"
    );
    assert_eq!(
        laptop.ok(&["open", &in_second[..8], "--vault", &second, "-o", "-"]),
        "139 mmol/L"
    );

    // Removed in the first vault: the second takes the new version and is
    // re-keyed in the same command.
    let removed = patient.json(&["devices", "remove", &l_fp[..8], "--vault", &first]);
    let owned = removed["elsewhere"]["owned"].as_array().unwrap();
    assert_eq!(owned.len(), 1, "{removed}");
    assert_eq!(owned[0]["vault"], second.as_str(), "{removed}");
    assert!(owned[0]["rekeyed"].as_u64().unwrap() >= 1, "{removed}");
    let listed = patient.json(&["devices", "list", "--vault", &second]);
    assert_eq!(listed["devices"].as_array().unwrap().len(), 0, "{listed}");
    assert_eq!(listed["generation"], removed["generation"], "{listed}");
    let refused = laptop.run(&["sync"]);
    assert_eq!(
        refused.stderr.matches("no longer shared with you").count(),
        2,
        "{}",
        refused.stderr
    );
    patient.ok(&["verify", "--vault", &second]);
}

/// A device's own signature on its person's list outranks a listing it did
/// not sign (`docs/format.md` §8.12 rule 4): Mallory, who reads labs,
/// lists Dr Dee's new tablet (its identity is public) as her own device
/// there first. The patient's share of labs with Dr Dee is then refused,
/// as the tablet would act for two people. Once the tablet signs Dr Dee's
/// list (`vault devices confirm`, which `vault devices join` runs), the
/// share goes through, the tablet reads and writes labs as Dr Dee, and
/// Mallory's listing does nothing.
#[test]
fn a_device_that_signed_its_clinicians_list_outranks_a_member_who_listed_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let (patient, doc) = vault_tests::patient_and_clinician(dir.path(), &relay.url);
    let p_fp = fingerprint(&patient.json(&["whoami"]));
    let d_fp = fingerprint(&doc.json(&["whoami"]));
    let lab = patient.add_lab("HbA1c", "48 mmol/mol");

    // Mallory, a clinician the patient shares labs with (read).
    let mallory = vault_tests::clinician_reading_labs(dir.path(), &relay.url, &patient, "mallory");

    // Dr Dee's key file adds her tablet by fingerprint: listed, but the
    // tablet has signed nothing.
    let (tablet, t_fp) = vault_tests::published_device(dir.path(), &relay.url, "tablet");
    tablet.json(&["contacts", "add", "me", "--lookup", &d_fp]);
    tablet.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    doc.json(&["devices", "add", &t_fp]);

    // Mallory lists the tablet as hers, and carries that into labs.
    let listed = mallory.json(&["devices", "add", &t_fp]);
    assert_eq!(listed["carried"].as_array().unwrap().len(), 1, "{listed}");

    // The share with Dr Dee would make the tablet act for two people.
    let refused = patient.run(&["share", "labs", "--with", "dr", "--add-only"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("another member listed it"),
        "{}",
        refused.stderr
    );

    // The tablet signs Dr Dee's list; a second confirmation adds nothing.
    let confirmed = tablet.json(&["devices", "confirm"]);
    assert_eq!(
        (&confirmed["serial"], &confirmed["signed_new_version"]),
        (&serde_json::json!(2), &serde_json::json!(true)),
        "{confirmed}"
    );
    let again = tablet.json(&["devices", "confirm"]);
    assert_eq!(
        (&again["serial"], &again["signed_new_version"]),
        (&serde_json::json!(2), &serde_json::json!(false)),
        "{again}"
    );
    // Mallory's key file cannot confirm a list for the tablet.
    let not_a_device = mallory.fails(2, &["devices", "confirm"]);
    assert!(not_a_device.contains("only a device"), "{not_a_device}");

    // Now the share goes through: the tablet reads labs, and writes there
    // as Dr Dee, not as Mallory (whose grant only reads).
    patient.json(&["share", "labs", "--with", "dr", "--add-only"]);
    tablet.json(&["inbox"]);
    assert_eq!(
        tablet.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );
    let (_, row) = write_back(&tablet, &patient);
    assert_eq!(row["author_name"], "tablet (dr's device)", "{row}");
    patient.ok(&["verify"]);
    mallory.json(&["sync"]);
    mallory.ok(&["verify", "--vault", "pat"]);
}
