//! `vault gateway` end to end against a real FHIR server (sekmet-fhir, a
//! hospital-system simulator, on loopback) and the relay: three patients
//! grant a trust's gateway deposit rights; the gateway deposits their
//! records; a new lab result and a corrected one on the FHIR server are
//! deposited exactly (a new record, a new version) on the next round; the
//! patient and their GP read them, authored by the gateway; the gateway
//! reads nothing; killed with SIGKILL in the middle of a round and
//! restarted, it deposits every resource exactly once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vault_tests::sekmet::Sekmet;
use vault_tests::{CliProfile, RelayProcess};

fn samples() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fhir-samples");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// Each record of `collection` that `author` wrote, as the patient lists
/// them: (type, FHIR id) → versions.
fn deposited(
    patient: &CliProfile,
    collection: &str,
    author: &str,
) -> BTreeMap<(String, String), Vec<u64>> {
    let mut out: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for r in patient
        .json(&["list", "-c", collection])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["author"] == author)
    {
        let ct = r["content_type"].as_str().unwrap();
        let (t, id) = vault_fhir::resource_key(ct).unwrap_or_else(|| panic!("{ct}"));
        out.entry((t, id))
            .or_default()
            .push(r["version"].as_u64().unwrap());
    }
    out
}

/// A way to read the relay's head of one vault quickly (as its owner).
fn head_reader(relay: &RelayProcess, owner: &CliProfile) -> impl Fn() -> u64 {
    let vault =
        vault_core::VaultId::from_hex(owner.json(&["vaults"])[0]["vault"].as_str().unwrap())
            .unwrap();
    let client = relay.client(&owner.secret());
    let rt = tokio::runtime::Runtime::new().unwrap();
    move || rt.block_on(client.head(&vault)).unwrap().seq
}

struct Enrolled {
    profile: CliProfile,
    fhir_id: String,
    fingerprint: String,
}

#[test]
fn a_trusts_gateway_deposits_each_resource_version_once() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let fhir = Sekmet::start(&dir.path().join("fhir"));
    let gateway = CliProfile::new(&dir.path().join("gateway"), &relay.url);
    let gw_fp = gateway.init("St Mary's Hospital gateway", "clinician")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    gateway.ok(&["whoami", "--publish", "--no-qr"]);
    let gp = CliProfile::new(&dir.path().join("gp"), &relay.url);
    let gp_fp = gp.init("Dr Gill Practice", "clinician")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    gp.ok(&["whoami", "--publish", "--no-qr"]);

    // Three patients on the trust's FHIR server, each with a vault that
    // grants the gateway deposit rights on "from-hospital".
    let files = samples();
    let mut patients = Vec::new();
    for (i, file) in files.iter().take(3).enumerate() {
        let fhir_id = fhir.load(file);
        let profile = CliProfile::new(&dir.path().join(format!("patient-{i}")), &relay.url);
        let fingerprint = profile.init(&format!("Patient {i}"), "patient")["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned();
        profile.json(&["create"]);
        profile.json(&["contacts", "add", "st-marys", "--lookup", &gw_fp]);
        profile.json(&["contacts", "add", "dr-gill", "--lookup", &gp_fp]);
        let note = dir.path().join(format!("note-{i}.txt"));
        std::fs::write(&note, b"the patient's own note").unwrap();
        profile.json(&["add", note.to_str().unwrap(), "-c", "from-hospital"]);
        profile.json(&["share", "from-hospital", "--with", "st-marys", "--deposit"]);
        patients.push(Enrolled {
            profile,
            fhir_id,
            fingerprint,
        });
    }
    let p0 = &patients[0];
    p0.profile
        .json(&["share", "from-hospital", "--with", "dr-gill"]);
    gp.json(&["contacts", "add", "pat", "--lookup", &p0.fingerprint]);

    let config = dir.path().join("gateway.toml");
    let mut text = format!("fhir = \"{}\"\ninterval = 1\n", fhir.base);
    for p in &patients {
        text.push_str(&format!(
            "\n[[patient]]\nfhir_id = \"{}\"\nowner = \"{}\"\n",
            p.fhir_id, p.fingerprint
        ));
    }
    std::fs::write(&config, text).unwrap();
    let status = dir.path().join("status.json");
    let round = || {
        gateway.json(&[
            "gateway",
            "--config",
            config.to_str().unwrap(),
            "--once",
            "--status",
            status.to_str().unwrap(),
        ])
    };

    // First round: everything each patient has on the server.
    let first = round();
    for (p, report) in patients.iter().zip(first["patients"].as_array().unwrap()) {
        let expected = fhir.everything_keys(&p.fhir_id);
        assert_eq!(report["error"], Value::Null, "{report}");
        assert_eq!(report["added"].as_u64().unwrap() as usize, expected.len());
        let got = deposited(&p.profile, "from-hospital", &gw_fp);
        assert_eq!(got.len(), expected.len(), "one record per resource");
        assert!(got.values().all(|v| v == &vec![1]));
        for key in &expected {
            assert!(got.contains_key(key), "{key:?} not deposited");
        }
    }
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&status).unwrap()).unwrap();
    assert_eq!(on_disk["round"], 1);
    let status_text = std::fs::read_to_string(&status).unwrap();
    assert!(
        !status_text.contains("Observation") && !status_text.contains(&patients[0].fingerprint),
        "the status file carries no clinical content"
    );

    // Nothing changed: a second round adds nothing.
    let second = round();
    assert_eq!(second["added"], 0);
    assert_eq!(second["updated"], 0);

    // A new result and a corrected one for patient 0.
    let (status, created) = fhir.request(
        reqwest::Method::POST,
        "Observation",
        Some(
            json!({
                "resourceType": "Observation", "status": "final",
                "code": {"text": "HbA1c"},
                "subject": {"reference": format!("Patient/{}", p0.fhir_id)},
                "effectiveDateTime": "2026-12-01",
                "valueQuantity": {"value": 48, "unit": "mmol/mol"}
            })
            .to_string()
            .into_bytes(),
        ),
    );
    assert_eq!(status, 201, "{created}");
    let new_id = created["id"].as_str().unwrap().to_owned();
    let (obs_type, obs_id) = fhir
        .everything_keys(&p0.fhir_id)
        .into_iter()
        .find(|(t, id)| t == "Observation" && *id != new_id)
        .unwrap();
    let (_, mut corrected) =
        fhir.request(reqwest::Method::GET, &format!("{obs_type}/{obs_id}"), None);
    corrected["status"] = json!("amended");
    fhir.put(&corrected);

    let third = round();
    let r0 = &third["patients"][0];
    assert_eq!(
        (r0["added"].as_u64(), r0["updated"].as_u64()),
        (Some(1), Some(1)),
        "{r0}"
    );
    assert_eq!(third["patients"][1]["added"], 0);
    let got = deposited(&p0.profile, "from-hospital", &gw_fp);
    assert_eq!(got[&("Observation".to_owned(), new_id.clone())], vec![1]);
    assert_eq!(got[&(obs_type.clone(), obs_id.clone())], vec![2]);

    // The patient and the GP read the new result, authored by the gateway.
    let listed = p0.profile.json(&["list", "-c", "from-hospital"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["content_type"].as_str().unwrap().contains(&new_id))
        .unwrap()
        .clone();
    assert_eq!(row["author"], gw_fp.as_str());
    assert_eq!(row["author_name"], "st-marys");
    let record = row["record"].as_str().unwrap();
    let shown = p0.profile.json(&["show", record]);
    assert_eq!(shown["resource"]["valueQuantity"]["value"], 48);
    let gp_shown = gp.json(&["show", record, "--vault", "pat"]);
    assert_eq!(gp_shown["resource"]["id"], new_id.as_str());
    // The gateway is refused when it tries to read.
    gateway.json(&["contacts", "add", "pat0", "--lookup", &p0.fingerprint]);
    let refused = gateway.refused(&["show", record, "--vault", "pat0"]);
    assert_eq!(refused.code, "access_denied", "{refused:?}");

    // Killed mid-round and restarted: every resource once. A fresh
    // patient with many resources makes the round long enough to kill.
    let big = files
        .iter()
        .skip(3)
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    let fhir_id = fhir.load(big);
    let profile = CliProfile::new(&dir.path().join("patient-big"), &relay.url);
    let fingerprint = profile.init("Patient Big", "patient")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    profile.json(&["create"]);
    profile.json(&["contacts", "add", "st-marys", "--lookup", &gw_fp]);
    let note = dir.path().join("note-big.txt");
    std::fs::write(&note, b"the patient's own note").unwrap();
    profile.json(&["add", note.to_str().unwrap(), "-c", "from-hospital"]);
    profile.json(&["share", "from-hospital", "--with", "st-marys", "--deposit"]);
    let big_config = dir.path().join("big.toml");
    std::fs::write(
        &big_config,
        format!(
            "fhir = \"{}\"\n[[patient]]\nfhir_id = \"{fhir_id}\"\nowner = \"{fingerprint}\"\n",
            fhir.base
        ),
    )
    .unwrap();
    let expected = fhir.everything_keys(&fhir_id);
    assert!(expected.len() > 200, "{} resources", expected.len());
    // Killed as soon as its first deposits reached the relay, three times:
    // each restart settles what the killed round left pending.
    let relay_head = head_reader(&relay, &profile);
    let mut partial = Vec::new();
    for _ in 0..3 {
        let before = relay_head();
        let mut child = gateway.spawn(&[
            "gateway",
            "--config",
            big_config.to_str().unwrap(),
            "--once",
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            std::thread::sleep(Duration::from_millis(20));
            if relay_head() > before || child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the gateway made no progress");
        }
        child.kill().unwrap();
        let _ = child.wait();
        partial.push(deposited(&profile, "from-hospital", &gw_fp).len());
    }
    eprintln!(
        "deposited after each kill: {partial:?} of {}",
        expected.len()
    );
    assert!(
        partial.iter().any(|n| *n > 0 && *n < expected.len()),
        "no kill landed in the middle of the deposits: {partial:?}"
    );
    let last = gateway.json(&[
        "gateway",
        "--config",
        big_config.to_str().unwrap(),
        "--once",
    ]);
    assert_eq!(last["patients"][0]["error"], Value::Null, "{last}");
    let got = deposited(&profile, "from-hospital", &gw_fp);
    assert_eq!(got.len(), expected.len(), "every resource, once");
    assert!(
        got.values().all(|v| v == &vec![1]),
        "no resource deposited twice"
    );
    assert_eq!(
        last["patients"][0]["total"].as_u64().unwrap() as usize,
        expected.len()
    );
    profile.ok(&["verify"]);
}
