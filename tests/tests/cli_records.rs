//! The `vault` binary on files and devices: large files stream through in
//! chunks and come back byte for byte, new versions replace old ones, stdin
//! works, whole collections open into a directory, a contact swapped in the
//! contacts file is refused, and ciphertext never fetched is reported as
//! not available offline rather than as empty.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use serde_json::Value;
use vault_tests::{CliProfile, RelayProcess};

/// Deterministic bytes that do not compress (a stand-in for a scan).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn files_versions_stdin_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    patient.init("Pat Example", "patient");
    patient.json(&["create"]);

    // A 12 MiB scan: more than one 8 MiB upload chunk.
    let scan = pseudo_random(12 * 1024 * 1024 + 123, 7);
    let scan_path = dir.path().join("ct-scan.dcm");
    std::fs::write(&scan_path, &scan).unwrap();
    let added = patient.json(&["add", scan_path.to_str().unwrap(), "-c", "imaging"]);
    let scan_id = added[0]["record"].as_str().unwrap().to_owned();
    assert_eq!(added[0]["bytes"], scan.len());
    let back = dir.path().join("scan-back.dcm");
    patient.ok(&["open", &scan_id, "-o", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), scan);
    // An existing file is never overwritten.
    let again = patient.fails(1, &["open", &scan_id, "-o", back.to_str().unwrap()]);
    assert!(again.contains("overwrite"), "{again}");

    // A note from stdin, then a second version of it.
    let r = patient.run_with_stdin(
        &["--json", "add", "-", "-c", "notes", "--title", "Visit note"],
        b"Felt better after the new dose.\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let note: Value = serde_json::from_str(&r.stdout).unwrap();
    let note_id = note[0]["record"].as_str().unwrap().to_owned();
    assert_eq!(note[0]["content_type"], "text/plain");
    let v2 = patient.run_with_stdin(
        &[
            "--json",
            "add",
            "-",
            "-c",
            "notes",
            "--title",
            "Visit note (corrected)",
            "--replace",
            &note_id,
        ],
        b"Felt better after the new dose; no side effects.\n",
    );
    assert_eq!(v2.code, 0, "{}", v2.stderr);
    let v2: Value = serde_json::from_str(&v2.stdout).unwrap();
    assert_eq!(v2[0]["record"], note_id.as_str());
    assert_eq!(v2[0]["version"], 2);
    let shown = patient.json(&["show", &note_id]);
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["title"], "Visit note (corrected)");
    let text = patient.ok(&["open", &note_id]);
    assert_eq!(text, "Felt better after the new dose; no side effects.\n");

    // A whole collection into a directory.
    for i in 0..3 {
        patient.run_with_stdin(
            &[
                "add",
                "-",
                "-c",
                "letters",
                "--title",
                &format!("Letter {i}"),
            ],
            format!("letter {i}").as_bytes(),
        );
    }
    let out = dir.path().join("letters");
    let opened = patient.json(&["open", "-c", "letters", "-o", out.to_str().unwrap()]);
    assert_eq!(opened.as_array().unwrap().len(), 3);
    let mut contents: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    contents.sort();
    assert_eq!(contents, ["letter 0", "letter 1", "letter 2"]);

    // Listings in JSON.
    let vaults = patient.json(&["vaults"]);
    assert_eq!(vaults.as_array().unwrap().len(), 1);
    assert_eq!(vaults[0]["owner_name"], "you");
    let colls = patient.json(&["collections"]);
    let names: Vec<&str> = colls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["collection"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3);
    for n in ["imaging", "notes", "letters"] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(patient.ok(&["completions", "bash"]).contains("vault"));

    // A clinician who joined the vault but never fetched its ciphertext,
    // with the relay gone: "not on this device", not an empty answer.
    let doc = CliProfile::new(&dir.path().join("doc"), &relay.url);
    let doc_id = doc.init("Dr Who", "clinician");
    doc.ok(&["whoami", "--publish", "--no-qr"]);
    let p_fp = patient.json(&["whoami"])["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    patient.json(&[
        "contacts",
        "add",
        "dr-who",
        "--lookup",
        doc_id["fingerprint"].as_str().unwrap(),
    ]);
    patient.json(&["share", "notes", "--with", "dr-who"]);
    patient.json(&["share", "imaging", "--with", "dr-who"]);
    doc.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    let inbox = doc.json(&["inbox"]);
    assert_eq!(inbox[0]["collections"][0]["records"], 1);
    // Listing does not download a 12 MiB scan just for its title.
    let big = doc.json(&["list", "--vault", "pat", "-c", "imaging"]);
    assert_eq!(big[0]["record"], scan_id.as_str());
    assert_eq!(big[0]["downloaded"], false);
    let listed = doc.ok(&["list", "--vault", "pat", "-c", "imaging"]);
    assert!(listed.contains("not on this device"), "{listed}");
    // A clinician never writes into a patient's vault by default.
    let r = doc.run_with_stdin(&["add", "-", "-c", "notes", "--title", "x"], b"x");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--vault"), "{}", r.stderr);
    // "6m" could mean minutes or months: refused.
    patient.fails(2, &["share", "notes", "--with", "dr-who", "--until", "6m"]);
    // Deleting a record.
    let letters = patient.json(&["list", "-c", "letters"]);
    let first = letters[0]["record"].as_str().unwrap().to_owned();
    patient.json(&["delete", &first]);
    assert_eq!(
        patient
            .json(&["list", "-c", "letters"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A member who is no longer a contact is revoked by fingerprint.
    patient.json(&["contacts", "remove", "dr-who"]);
    let doc_hex = doc_id["fingerprint"].as_str().unwrap();
    patient.fails(5, &["revoke", "dr-who"]);
    let revoked = patient.json(&["revoke", &doc_hex[..16]]);
    assert_eq!(revoked["collections"].as_array().unwrap().len(), 2);
    assert!(patient.json(&["access"]).as_array().unwrap().is_empty());

    assert!(relay.stop());
    let offline = doc.run(&["show", &note_id, "--vault", "pat"]);
    assert_eq!(offline.code, 7, "{}\n{}", offline.stdout, offline.stderr);
    assert!(
        offline.stderr.contains("not on this device"),
        "{}",
        offline.stderr
    );

    // A contact whose identity was swapped in contacts.json is refused.
    let contacts_file = doc.home.join("contacts.json");
    let mut book: Value = serde_json::from_slice(&std::fs::read(&contacts_file).unwrap()).unwrap();
    book["pat"]["identity"] = Value::String(doc.ok(&["whoami", "--export"]).trim().to_owned());
    std::fs::write(&contacts_file, serde_json::to_vec(&book).unwrap()).unwrap();
    let swapped = doc.fails(6, &["contacts", "show", "pat"]);
    assert!(swapped.contains("changed"), "{swapped}");
}
