//! The whole story through the real `vault` binary against the real relay
//! binary: a patient imports a Synthea bundle and a PDF, shares labs with
//! clinician A (read-write) and only the PDF with clinician B; A reads the
//! labs and is refused the medications; B reads only the PDF; A writes a
//! result back and the patient sees it verified as A's; the patient
//! revokes A, A is refused and new labs are sealed under a new epoch; the
//! relay stops and the patient still reads offline; the export decrypts
//! with the stock `rage` binary and its FHIR bundle holds the original
//! resources.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vault_tests::{CliProfile, RelayProcess};

const SAMPLE: &str = "Brady_Kuhlman_79ef6ec3-e86a-441b-bb6b-c15936ee8be9.json";

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fhir-samples")
        .join(SAMPLE)
}

/// (resourceType, id) of every resource in a bundle.
fn resources(bundle: &Value) -> BTreeSet<(String, String)> {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let r = &e["resource"];
            (
                r["resourceType"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The stock `rage` binary: `$VAULT_RAGE`, else `rage` on the PATH.
fn rage() -> PathBuf {
    if let Some(p) = std::env::var_os("VAULT_RAGE") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("rage"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("the stock `rage` binary is needed: `cargo install --locked rage --version 0.11.1` (or set VAULT_RAGE)")
    })
}

/// A pinentry program for rage that answers with `passphrase` (rage asks
/// a pinentry when `PINENTRY_PROGRAM` is set; this is how a script feeds a
/// passphrase to stock age tools without a terminal).
fn fake_pinentry(dir: &Path, passphrase: &str) -> PathBuf {
    let path = dir.join("pinentry");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho 'OK ready'\nwhile read -r cmd rest; do\n  case \"$cmd\" in\n    GETPIN) echo 'D {passphrase}'; echo OK ;;\n    BYE) echo OK; exit 0 ;;\n    *) echo OK ;;\n  esac\ndone\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn rage_decrypt(args: &[&str], pinentry: Option<&Path>) -> Vec<u8> {
    let mut cmd = Command::new(rage());
    cmd.arg("-d").args(args);
    if let Some(p) = pinentry {
        cmd.env("PINENTRY_PROGRAM", p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "rage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn find(list: &Value, pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|v| pred(v))
        .collect()
}

#[test]
fn patient_and_clinicians_story() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    let a = CliProfile::new(&dir.path().join("dr-a"), &relay.url);
    let b = CliProfile::new(&dir.path().join("dr-b"), &relay.url);

    // Identities.
    let p_id = patient.init("Brady Kuhlman", "patient");
    let a_id = a.init("Dr Ada Adams", "clinician");
    let b_id = b.init("Dr Bo Baker", "clinician");
    let p_fp = p_id["fingerprint"].as_str().unwrap().to_owned();
    let a_fp = a_id["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(a.json(&["whoami"])["fingerprint"], a_id["fingerprint"]);

    // The patient's vault, the bundle and a PDF.
    patient.json(&["create"]);
    let original: Value = serde_json::from_slice(&std::fs::read(sample_path()).unwrap()).unwrap();
    let original_resources = resources(&original);
    let imported = patient.json(&["import", sample_path().to_str().unwrap()]);
    assert_eq!(
        imported["added"].as_u64().unwrap() as usize,
        original_resources.len()
    );
    // Importing again adds nothing (resumable, no duplicates).
    let again = patient.json(&["import", sample_path().to_str().unwrap()]);
    assert_eq!(again["added"], 0);
    assert_eq!(
        again["skipped"].as_u64().unwrap() as usize,
        original_resources.len()
    );

    let pdf_bytes = b"%PDF-1.4\n% discharge letter for the story test\n%%EOF\n".repeat(50);
    let pdf = dir.path().join("discharge-letter.pdf");
    std::fs::write(&pdf, &pdf_bytes).unwrap();
    let added = patient.json(&["add", pdf.to_str().unwrap(), "-c", "documents"]);
    let pdf_id = added[0]["record"].as_str().unwrap().to_owned();
    assert_eq!(added[0]["content_type"], "application/pdf");

    let all = patient.json(&["list"]);
    let labs = find(&all, |r| r["collection"] == "labs");
    let meds = find(&all, |r| r["collection"] == "medications");
    assert!(labs.len() > 20, "labs: {}", labs.len());
    assert!(!meds.is_empty());
    assert!(labs.iter().all(|r| r["epoch"] == 0));
    let med_id = meds[0]["record"].as_str().unwrap().to_owned();
    let lab_id = labs[0]["record"].as_str().unwrap().to_owned();
    // Readable summaries of FHIR resources.
    let shown = patient.ok(&["show", &lab_id[..12]]);
    assert!(shown.contains("signature verified"), "{shown}");

    // Contacts: A by relay lookup of its fingerprint, B from its identity
    // file with the grouped digits read out to the patient.
    a.ok(&["whoami", "--publish", "--no-qr"]);
    patient.json(&["contacts", "add", "dr-a", "--lookup", &a_fp]);
    let b_file = dir.path().join("b.id");
    std::fs::write(&b_file, b.ok(&["whoami", "--export"])).unwrap();
    let b_digits = b_id["fingerprint_digits"].as_str().unwrap();
    // A wrong fingerprint is refused, and nothing is pinned.
    let wrong = patient.fails(
        6,
        &[
            "contacts",
            "add",
            "dr-b",
            "--file",
            b_file.to_str().unwrap(),
            "--verify",
            &a_fp,
        ],
    );
    assert!(wrong.contains("fingerprint mismatch"), "{wrong}");
    patient.json(&[
        "contacts",
        "add",
        "dr-b",
        "--file",
        b_file.to_str().unwrap(),
        "--verify",
        b_digits,
    ]);
    // A changed key under a pinned name is refused loudly.
    let changed = patient.fails(6, &["contacts", "add", "dr-b", "--lookup", &a_fp]);
    assert!(changed.contains("changed"), "{changed}");

    // Shares.
    patient.json(&[
        "share", "labs", "--with", "dr-a", "--write", "--until", "30d",
    ]);
    patient.json(&["share", &pdf_id, "--record", "--with", "dr-b"]);
    let access = patient.json(&["access"]);
    assert_eq!(find(&access, |g| g["name"] == "dr-a").len(), 1);
    assert_eq!(find(&access, |g| g["name"] == "dr-b").len(), 1);

    // Clinician A: verifies the patient, sees the inbox, reads the labs.
    a.json(&["contacts", "add", "brady", "--lookup", &p_fp]);
    let inbox = a.json(&["inbox"]);
    assert_eq!(inbox[0]["verified"], true);
    assert_eq!(inbox[0]["collections"][0]["collection"], "labs");
    assert_eq!(inbox[0]["collections"][0]["permission"], "read-write");
    let a_list = a.json(&["list", "--vault", "brady"]);
    assert_eq!(a_list.as_array().unwrap().len(), labs.len());
    assert!(a_list
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["collection"] == "labs"));
    let a_lab = a.json(&["show", &lab_id, "--vault", "brady"]);
    assert_eq!(a_lab["resource"]["resourceType"], "Observation");
    // ...and does not even learn the medications exist: their entries
    // reach A's device redacted (format.md §8.8).
    let refused = a.fails(5, &["show", &med_id, "--vault", "brady"]);
    assert!(refused.contains("no record"), "{refused}");
    a.fails(5, &["list", "--vault", "brady", "-c", "medications"]);

    // Clinician B: sees only the PDF.
    b.json(&["contacts", "add", "brady", "--lookup", &p_fp]);
    let b_list = b.json(&["list", "--vault", "brady"]);
    assert_eq!(b_list.as_array().unwrap().len(), 1);
    assert_eq!(b_list[0]["record"], pdf_id.as_str());
    let b_out = dir.path().join("b-letter.pdf");
    b.ok(&[
        "open",
        &pdf_id,
        "--vault",
        "brady",
        "-o",
        b_out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&b_out).unwrap(), pdf_bytes);
    let refused = b.fails(5, &["show", &lab_id, "--vault", "brady"]);
    assert!(refused.contains("no record"), "{refused}");

    // A writes a result back into the labs.
    let result = dir.path().join("result.json");
    std::fs::write(
        &result,
        r#"{"resourceType":"Observation","id":"a-result-1","status":"final",
            "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],
            "code":{"coding":[{"system":"http://loinc.org","code":"4548-4","display":"Hemoglobin A1c"}],"text":"Hemoglobin A1c"},
            "effectiveDateTime":"2026-11-20T09:30:00Z",
            "valueQuantity":{"value":5.4,"unit":"%"}}"#,
    )
    .unwrap();
    let written = a.json(&[
        "add",
        result.to_str().unwrap(),
        "-c",
        "labs",
        "--vault",
        "brady",
    ]);
    let result_id = written[0]["record"].as_str().unwrap().to_owned();
    // The patient sees it, verified as A's.
    let seen = patient.json(&["show", &result_id]);
    assert_eq!(seen["author"], a_fp.as_str());
    assert_eq!(seen["author_name"], "dr-a");
    assert_eq!(seen["author_verified"], true);
    assert_eq!(seen["resource"]["id"], "a-result-1");
    let text = patient.ok(&["show", &result_id]);
    assert!(text.contains("5.4 %"), "{text}");

    // Revocation: A is refused from then on; new labs use a new epoch.
    let revoked = patient.json(&["revoke", "dr-a"]);
    assert_eq!(revoked["collections"][0]["collection"], "labs");
    assert_eq!(revoked["collections"][0]["epoch"], 1);
    let denied = a.fails(4, &["list", "--vault", "brady"]);
    assert!(
        denied.contains("403") || denied.contains("access"),
        "{denied}"
    );
    // Syncing is not an error for A: the vault is reported as no longer
    // shared.
    let synced = a.run(&["sync"]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert!(
        synced.stderr.contains("no longer shared"),
        "{}",
        synced.stderr
    );
    let note = dir.path().join("new-lab.json");
    std::fs::write(
        &note,
        r#"{"resourceType":"Observation","id":"after-revoke","status":"final",
            "category":[{"coding":[{"code":"laboratory"}]}],
            "code":{"text":"Glucose"},"valueQuantity":{"value":5.1,"unit":"mmol/L"}}"#,
    )
    .unwrap();
    let new_lab = patient.json(&["add", note.to_str().unwrap(), "-c", "labs"]);
    let new_lab_id = new_lab[0]["record"].as_str().unwrap().to_owned();
    let labs_now = patient.json(&["list", "-c", "labs"]);
    let entry = find(&labs_now, |r| r["record"] == new_lab_id.as_str());
    assert_eq!(entry[0]["epoch"], 1);
    let colls = patient.json(&["collections"]);
    assert_eq!(find(&colls, |c| c["collection"] == "labs")[0]["epoch"], 1);

    // Checkpoints agree between the patient and B.
    let code = patient.json(&["verify"])["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    b.json(&["sync"]);
    b.json(&["verify", "--vault", "brady", "--compare", &code]);
    let bad_code = format!("{}:0000-0000-0000", code.split(':').next().unwrap());
    b.fails(6, &["verify", "--vault", "brady", "--compare", &bad_code]);

    // The relay goes away: the patient still reads, with a notice.
    assert!(relay.stop());
    let offline = patient.run(&["list", "-c", "labs"]);
    assert_eq!(offline.code, 0, "{}", offline.stderr);
    assert!(offline.stderr.contains("unreachable"), "{}", offline.stderr);
    assert!(offline.stdout.contains("Hemoglobin A1c"));
    patient.ok(&["show", &pdf_id]);

    // Export; the stock rage decrypts it.
    let export = dir.path().join("export");
    let summary = patient.json(&["--offline", "export", export.to_str().unwrap()]);
    let pinentry = fake_pinentry(dir.path(), &patient.passphrase);
    let identity = dir.path().join("identity.txt");
    let key = rage_decrypt(
        &[export.join("identity.vault.age").to_str().unwrap()],
        Some(&pinentry),
    );
    std::fs::write(&identity, &key).unwrap();
    let bundle: Value = serde_json::from_slice(&rage_decrypt(
        &[
            "-i",
            identity.to_str().unwrap(),
            export.join("fhir-bundle.json.age").to_str().unwrap(),
        ],
        None,
    ))
    .unwrap();
    let mut expected = original_resources.clone();
    expected.insert(("Observation".into(), "a-result-1".into()));
    expected.insert(("Observation".into(), "after-revoke".into()));
    assert_eq!(resources(&bundle), expected);
    let files: Vec<String> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    // File names reveal no collection names or titles.
    for f in &files {
        let lower = f.to_lowercase();
        for word in ["labs", "documents", "discharge", "hemoglobin", "medication"] {
            assert!(!lower.contains(word), "{f} names {word}");
        }
    }
    let pdf_file = files
        .iter()
        .find(|f| f.contains(&pdf_id) && f.ends_with(".pdf.age"))
        .expect("the PDF in the export");
    let pdf_back = rage_decrypt(
        &[
            "-i",
            identity.to_str().unwrap(),
            export.join(pdf_file).to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(pdf_back, pdf_bytes);
}
