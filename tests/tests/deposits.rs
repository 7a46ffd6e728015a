//! Write-only deposits end to end, through the `vault` binary against the
//! relay (`docs/format.md` §5.5): a patient grants a hospital lab's gateway
//! deposit rights on one collection; the gateway adds a result it can then
//! not read back; the patient and a clinician reading that collection open
//! it, authored by the gateway; the relay refuses the gateway every
//! ciphertext; the gateway cannot write elsewhere or share; once revoked it
//! is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use serde_json::Value;
use vault_core::{Keyring, RecordId, VaultState};
use vault_tests::{CliProfile, RelayProcess};

fn records(list: &Value) -> Vec<Value> {
    list.as_array().unwrap().clone()
}

#[test]
fn a_gateway_deposits_results_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    let lab = CliProfile::new(&dir.path().join("lab"), &relay.url);
    let gp = CliProfile::new(&dir.path().join("gp"), &relay.url);
    let p_fp = patient.init("Pat Patient", "patient")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let lab_fp = lab.init("St Mary's lab", "clinician")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let gp_fp = gp.init("Dr Gill Practice", "clinician")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    patient.json(&["create"]);
    for who in [&lab, &gp] {
        who.ok(&["whoami", "--publish", "--no-qr"]);
        who.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    }
    patient.json(&["contacts", "add", "st-marys", "--lookup", &lab_fp]);
    patient.json(&["contacts", "add", "dr-gill", "--lookup", &gp_fp]);

    // The patient's own records, one in the collection the lab will write to.
    let note = dir.path().join("note.txt");
    std::fs::write(&note, b"my own note about the clinic").unwrap();
    let own = patient.json(&["add", note.to_str().unwrap(), "-c", "from-hospital"]);
    let own_id = own[0]["record"].as_str().unwrap().to_owned();
    patient.json(&["add", note.to_str().unwrap(), "-c", "diary"]);

    let shared = patient.json(&["share", "from-hospital", "--with", "st-marys", "--deposit"]);
    assert_eq!(shared["permission"], "deposit");
    assert_eq!(shared["rotated_first"], false);
    patient.json(&["share", "from-hospital", "--with", "dr-gill"]);

    // The gateway sees one write-only collection, named by its id.
    let inbox = lab.json(&["inbox"]);
    let coll = &inbox[0]["collections"][0];
    assert_eq!(coll["permission"], "deposit", "{inbox}");
    let coll_id = coll["id"]
        .as_str()
        .or_else(|| coll["collection"].as_str())
        .unwrap()
        .to_owned();

    // It deposits a lab result.
    let result = dir.path().join("hba1c.json");
    std::fs::write(
        &result,
        r#"{"resourceType":"Observation","id":"lab-hba1c-1","status":"final",
            "code":{"text":"HbA1c"},"effectiveDateTime":"2026-11-30",
            "valueQuantity":{"value":48,"unit":"mmol/mol"}}"#,
    )
    .unwrap();
    // The lab's `vault add` of the result into `collection` of the
    // patient's vault, refused: what it reported.
    let refused_add = |collection: &str, extra: &[&str]| {
        let mut args = vec![
            "add",
            result.to_str().unwrap(),
            "--vault",
            "pat",
            "-c",
            collection,
        ];
        args.extend_from_slice(extra);
        lab.refused(&args)
    };
    let added = lab.json(&[
        "add",
        result.to_str().unwrap(),
        "--vault",
        "pat",
        "-c",
        &coll_id[..12],
    ]);
    let deposit_id = added[0]["record"].as_str().unwrap().to_owned();

    // The patient and the GP read it, authored by the lab.
    let listed = records(&patient.json(&["list", "-c", "from-hospital"]));
    let row = listed
        .iter()
        .find(|r| r["record"] == deposit_id.as_str())
        .unwrap_or_else(|| panic!("deposit not listed: {listed:?}"));
    assert_eq!(row["author"], lab_fp.as_str(), "{row}");
    assert_eq!(row["author_name"], "st-marys", "{row}");
    let shown = patient.json(&["show", &deposit_id]);
    assert_eq!(shown["resource"]["valueQuantity"]["value"], 48);
    let gp_shown = gp.json(&["show", &deposit_id, "--vault", "pat"]);
    assert_eq!(gp_shown["resource"]["id"], "lab-hba1c-1");

    // The gateway reads nothing: not its deposit, not the patient's record.
    for id in [&deposit_id, &own_id] {
        let refused = lab.refused(&["show", id, "--vault", "pat"]);
        assert_eq!(refused.code, "access_denied", "{refused:?}");
    }
    let listed = lab.run(&["--json", "list", "--vault", "pat"]);
    let visible: Value = serde_json::from_str(&listed.stdout).unwrap_or(Value::Null);
    assert!(
        listed.code != 0 || visible.as_array().is_none_or(|a| a.is_empty()),
        "the depositor listed records: {}",
        listed.stdout
    );
    // ...and the relay serves it no ciphertext, its own deposit included.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lab_client = relay.client(&lab.secret());
    let vault_id = vault_core::VaultId::from_hex(
        shared["vault"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| {
                patient.json(&["vaults"])[0]["vault"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .as_str(),
    )
    .unwrap();
    let (_, log) = rt
        .block_on(lab_client.fetch_log(&vault_id, 0, 1000))
        .expect("a depositor reads the log");
    // Verified as the depositor sees the log (format.md §8.8).
    let state =
        VaultState::verify_log_as(&lab.secret().fingerprint(), lab_client.now(), &log, None)
            .unwrap();
    for id in [&deposit_id, &own_id] {
        let record = state.record(&RecordId::from_hex(id).unwrap()).unwrap();
        let m = record.metadata();
        let mut sink = Vec::new();
        let got = rt.block_on(lab_client.get_blob(
            &vault_id,
            m.ciphertext_hash(),
            m.address_kind(),
            m.ciphertext_len(),
            &mut sink,
        ));
        assert!(got.is_err(), "the relay served the depositor {id}");
        assert!(sink.is_empty());
        // Nor does any key it holds open it.
        let secret = lab.secret();
        let mut keyring = Keyring::new(&secret, vault_tests::now());
        assert!(keyring.check_key(&state, &record).is_err());
    }
    assert!(state
        .record(&RecordId::from_hex(&deposit_id).unwrap())
        .unwrap()
        .metadata()
        .is_deposit());

    // It cannot write elsewhere, replace the patient's record, or share.
    let diary = records(&patient.json(&["list", "-c", "diary"]))[0]["collection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for target in ["diary", diary.as_str()] {
        let elsewhere = refused_add(target, &[]);
        assert_eq!(elsewhere.code, "not_found", "{elsewhere:?}");
        assert!(elsewhere.message.contains("write access"), "{elsewhere:?}");
    }
    let replace = refused_add(&coll_id, &["--replace", &own_id]);
    assert_eq!(replace.code, "access_denied", "{replace:?}");
    assert!(replace.message.contains("not replace"), "{replace:?}");

    // Revoked, it is refused; what it deposited stays with the patient.
    patient.json(&["revoke", "st-marys"]);
    let after = refused_add(&coll_id, &[]);
    assert_eq!(after.code, "forbidden", "{after:?}");
    let shown = patient.json(&["show", &deposit_id]);
    assert_eq!(shown["resource"]["valueQuantity"]["value"], 48);
    let gp_shown = gp.json(&["show", &deposit_id, "--vault", "pat"]);
    assert_eq!(gp_shown["resource"]["id"], "lab-hba1c-1");
    patient.ok(&["verify"]);
}
