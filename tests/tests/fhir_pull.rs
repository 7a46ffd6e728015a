//! `vault pull` against a real FHIR R4 server: `sekmet` (PyPI's
//! `sekmet-fhir`), started on loopback and loaded with sample patients from
//! `../shared/fhir-samples/`, and the real relay and `vault` binaries.
//!
//! - `$everything`: every resource filed as `vault import` files it; a
//!   second pull adds nothing; a resource changed on the server becomes a
//!   new version of its record (not a duplicate).
//! - Bulk Data: only the patient's own resources are filed (the export
//!   covers every patient), incrementally with `_since`.
//! - Authentication: a static bearer token (never printed) and SMART
//!   Backend Services (a client assertion signed with an EC P-384 key).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use vault_tests::sekmet::{keys_of, sample, Sekmet};
use vault_tests::{CliProfile, RelayProcess};

/// A patient's CLI profile with a fresh vault.
fn patient(dir: &Path, relay: &RelayProcess) -> CliProfile {
    let p = CliProfile::new(&dir.join("patient"), &relay.url);
    p.init("Patient", "patient");
    p.json(&["create"]);
    p
}

/// The vault's FHIR records: (resource type, id) → (record id, version).
fn fhir_records(p: &CliProfile) -> Vec<(String, String, String, u64)> {
    let list = p.json(&["list"]);
    list.as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let ct = r["content_type"].as_str()?;
            let (t, id) = vault_fhir::resource_key(ct)?;
            Some((
                t,
                id,
                r["record"].as_str()?.to_owned(),
                r["version"].as_u64()?,
            ))
        })
        .collect()
}

fn pull(p: &CliProfile, fhir: &Sekmet, id: &str, extra: &[&str]) -> Value {
    let mut args = vec!["pull", "--fhir", fhir.base.as_str(), "--patient", id];
    args.extend_from_slice(extra);
    p.json(&args)
}

#[test]
fn everything_is_filed_once_and_a_change_becomes_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let fhir = Sekmet::start(&dir.path().join("sekmet"));
    let brady = fhir.load(&sample("Brady_Kuhlman"));
    let other = fhir.load(&sample("Jacki_Feil"));
    let p = patient(dir.path(), &relay);

    let everything = fhir.everything(&brady);
    let expected = keys_of(&everything);
    let first = pull(&p, &fhir, &brady, &[]);
    assert_eq!(first["mode"], "everything");
    assert_eq!(first["fetched"].as_u64(), Some(expected.len() as u64));
    assert_eq!(first["added"].as_u64(), Some(expected.len() as u64));
    assert_eq!(first["updated"], 0);
    assert_eq!(first["cursor_saved"], true);
    assert!(first["cursor"].is_string());
    // Filed as `vault import` files it: one record per resource, keyed by
    // type and id, and nothing of the other patient.
    let records = fhir_records(&p);
    let filed: BTreeSet<(String, String)> = records
        .iter()
        .map(|(t, i, _, _)| (t.clone(), i.clone()))
        .collect();
    assert_eq!(filed, expected);
    assert!(!filed.contains(&("Patient".to_owned(), other.clone())));
    // The cursor is a record of the vault, in its own collection.
    let list = p.json(&["list", "-c", "pull-sources"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let checkpoint = first["checkpoint"].as_str().unwrap().to_owned();

    // Twice: nothing added, the vault's log does not move.
    let second = pull(&p, &fhir, &brady, &[]);
    assert_eq!(second["since"], first["cursor"]);
    assert_eq!(second["added"], 0);
    assert_eq!(second["updated"], 0);
    assert_eq!(second["unchanged"].as_u64(), Some(expected.len() as u64));
    assert_eq!(second["cursor_saved"], false);
    assert_eq!(second["checkpoint"].as_str(), Some(checkpoint.as_str()));

    // A lab result amended on the server: a new version of its record.
    let obs = everything["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .find(|r| r["resourceType"] == "Observation")
        .unwrap();
    let obs_id = obs["id"].as_str().unwrap().to_owned();
    let mut amended = obs.clone();
    amended["status"] = Value::from("amended");
    amended.as_object_mut().unwrap().remove("meta");
    fhir.put(&amended);
    let third = pull(&p, &fhir, &brady, &[]);
    assert_eq!(third["added"], 0);
    assert_eq!(third["updated"], 1);
    assert_eq!(third["collections"].as_object().unwrap().len(), 1);
    let after = fhir_records(&p);
    assert_eq!(after.len(), records.len(), "no duplicate record");
    let (_, _, record, version) = after
        .iter()
        .find(|(t, i, _, _)| t == "Observation" && *i == obs_id)
        .unwrap();
    assert_eq!(*version, 2);
    let opened: Value = serde_json::from_str(&p.ok(&["open", record])).unwrap();
    assert_eq!(opened["status"], "amended");
    assert_eq!(opened["meta"]["versionId"], "2");

    // And once more: nothing.
    let fourth = pull(&p, &fhir, &brady, &[]);
    assert_eq!(
        (fourth["added"].as_u64(), fourth["updated"].as_u64()),
        (Some(0), Some(0))
    );
    // --full fetches everything again and still files nothing new.
    let full = pull(&p, &fhir, &brady, &["--full"]);
    assert_eq!(full["since"], Value::Null);
    assert_eq!(
        (full["added"].as_u64(), full["updated"].as_u64()),
        (Some(0), Some(0))
    );
}

#[test]
fn bulk_export_files_only_the_patients_own_resources_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let fhir = Sekmet::start(&dir.path().join("sekmet"));
    let dennis = fhir.load(&sample("Dennis_Durgan"));
    let other = fhir.load(&sample("Reba_Nolan"));
    let p = patient(dir.path(), &relay);

    // The patient's compartment: $everything without the practitioners
    // and organisations it adds by reference.
    let compartment: BTreeSet<(String, String)> = keys_of(&fhir.everything(&dennis))
        .into_iter()
        .filter(|(t, _)| !matches!(t.as_str(), "Practitioner" | "Organization" | "Location"))
        .collect();
    let first = pull(&p, &fhir, &dennis, &["--bulk", "--bulk-wait", "2min"]);
    assert_eq!(first["mode"], "bulk");
    assert_eq!(first["added"].as_u64(), Some(compartment.len() as u64));
    let filed: BTreeSet<(String, String)> = fhir_records(&p)
        .into_iter()
        .map(|(t, i, _, _)| (t, i))
        .collect();
    assert_eq!(filed, compartment);
    assert!(!filed.contains(&("Patient".to_owned(), other)));

    // Incremental: the export's transactionTime is the next _since.
    let second = pull(&p, &fhir, &dennis, &["--bulk", "--bulk-wait", "2min"]);
    assert_eq!(second["since"], first["cursor"]);
    assert_eq!(
        (second["added"].as_u64(), second["updated"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(second["checkpoint"], first["checkpoint"]);

    // A changed condition comes back alone, as a new version.
    let condition = fhir.everything(&dennis)["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .find(|r| r["resourceType"] == "Condition")
        .unwrap();
    let mut changed = condition.clone();
    changed["clinicalStatus"]["coding"][0]["code"] = Value::from("resolved");
    changed.as_object_mut().unwrap().remove("meta");
    fhir.put(&changed);
    let third = pull(&p, &fhir, &dennis, &["--bulk", "--bulk-wait", "2min"]);
    assert_eq!(third["fetched"], 1);
    assert_eq!(third["updated"], 1);
    assert_eq!(third["added"], 0);

    // A Group of the patient: the group-level kick-off, the same records.
    let group = serde_json::json!({
        "resourceType": "Group", "id": "g-dennis", "type": "person", "actual": true,
        "member": [{"entity": {"reference": format!("Patient/{dennis}")}}]
    });
    fhir.put(&group);
    let q = CliProfile::new(&dir.path().join("second-vault"), &relay.url);
    q.init("Patient", "patient");
    q.json(&["create"]);
    let grouped = pull(&q, &fhir, &dennis, &["--bulk", "--group", "g-dennis"]);
    // The Group itself references the patient, so it is kept too.
    assert_eq!(
        grouped["added"].as_u64(),
        Some(compartment.len() as u64 + 1)
    );
    assert!(fhir_records(&q)
        .iter()
        .any(|(t, i, _, _)| t == "Group" && i == "g-dennis"));

    // $everything on the same vault adds only what bulk left out (the
    // referenced practitioners and organisations): same identities.
    let everything = pull(&p, &fhir, &dennis, &[]);
    assert_eq!(
        everything["added"].as_u64(),
        Some((keys_of(&fhir.everything(&dennis)).len() - compartment.len()) as u64)
    );
    assert_eq!(everything["updated"], 0);
}

/// An EC P-384 key pair as PKCS#8 and SubjectPublicKeyInfo PEM files, made
/// with openssl.
fn p384_key(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join("client.pem");
    let public = dir.join("client.pub.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
        ])
        .arg(&key)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "openssl genpkey failed (is openssl installed?)");
    let ok = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "openssl pkey -pubout failed");
    (key, public)
}

#[test]
fn bearer_tokens_and_smart_backend_services_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let (key, public) = p384_key(dir.path());
    let token = "static-bearer-token-5f1e9c";
    let fhir = Sekmet::start_with(
        &dir.path().join("sekmet"),
        &format!(
            "server_auth:\n  types: [bearer, smart]\n  tokens: [{token}]\n  smart_clients:\n    - client_id: vault-test\n      public_key_path: {}\n      scopes: \"system/*.read\"\n",
            public.display()
        ),
    );
    // Loading needs credentials too: the static token.
    let mut fhir = fhir;
    fhir.token = Some(token.to_owned());
    let mario = fhir.load(&sample("Mario_Dietrich"));
    let p = patient(dir.path(), &relay);

    // No credentials: refused, exit code 4.
    let refused = p.refused(&["pull", "--fhir", &fhir.base, "--patient", &mario]);
    assert_eq!(refused.code, "fhir_unauthorized");
    assert_eq!(refused.exit, 4);

    // A wrong token from a file: refused, and the token is printed nowhere.
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "wrong-token-a8d2e\n").unwrap();
    let r = p.refused(&[
        "pull",
        "--fhir",
        &fhir.base,
        "--patient",
        &mario,
        "--token-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(r.code, "fhir_unauthorized");
    assert!(!r.stderr.contains("wrong-token-a8d2e"), "{}", r.stderr);

    // The right token from the environment.
    let mut cmd = std::process::Command::new(vault_tests::vault_binary());
    let out = cmd
        .args(["--json", "pull", "--fhir", &fhir.base, "--patient", &mario])
        .args(["--token-env", "HOSPITAL_TOKEN"])
        .env("HOSPITAL_TOKEN", token)
        .env("VAULT_HOME", &p.home)
        .env("VAULT_PASSPHRASE", &p.passphrase)
        .env("VAULT_RELAY", &relay.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["added"].as_u64().unwrap() > 10);
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!all.contains(token));

    // SMART Backend Services: a client assertion signed with the key,
    // exchanged for an access token at the discovered token endpoint.
    let smart = p.json(&[
        "pull",
        "--fhir",
        &fhir.base,
        "--patient",
        &mario,
        "--full",
        "--smart-client-id",
        "vault-test",
        "--smart-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(smart["added"], 0);
    assert_eq!(smart["unchanged"], report["fetched"]);
    // An unregistered client is refused by the token endpoint.
    let r = p.refused(&[
        "pull",
        "--fhir",
        &fhir.base,
        "--patient",
        &mario,
        "--smart-client-id",
        "someone-else",
        "--smart-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(r.code, "fhir_unauthorized");
    assert!(r.message.contains("token endpoint"), "{}", r.message);
}
