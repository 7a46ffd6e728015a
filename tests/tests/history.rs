//! Replaced and deleted versions against the real relay and the real
//! `vault` command: a clinician granted a collection after the patient
//! replaced a record (a redaction) or deleted one cannot fetch nor open
//! what was there before, while the patient still opens every version.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use vault_client::{sync, ClientError, RelayClient};
use vault_core::store::MemoryStore;
use vault_core::{Fingerprint, RecordId, VaultId};
use vault_tests::{CliProfile, RelayProcess};

#[test]
fn a_member_granted_later_cannot_fetch_replaced_or_deleted_versions() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    let doc = CliProfile::new(&dir.path().join("doc"), &relay.url);
    let p_fp = patient.init("Pat Example", "patient")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let vault = VaultId::from_hex(patient.json(&["create"])["vault"].as_str().unwrap()).unwrap();
    let d_fp = doc.init("Dr Dee", "clinician")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    doc.ok(&["whoami", "--publish", "--no-qr"]);
    patient.json(&["contacts", "add", "dr", "--lookup", &d_fp]);

    let add = |body: &str, replace: Option<&str>| -> String {
        let mut args = vec!["--json", "add", "-", "-c", "labs", "--title", "HIV test"];
        if let Some(r) = replace {
            args.extend(["--replace", r]);
        }
        let r = patient.run_with_stdin(&args, body.as_bytes());
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        v[0]["record"].as_str().unwrap().to_owned()
    };
    let record = add("positive (entered in error)", None);
    add("negative", Some(&record));
    let deleted = add("a note to delete", None);
    patient.json(&["delete", &deleted]);

    // The share re-keys the collection first.
    let shared = patient.json(&["share", "labs", "--with", "dr"]);
    assert_eq!(shared["rotated_first"], true, "{shared}");
    doc.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    doc.json(&["inbox"]);
    assert_eq!(
        doc.ok(&["open", &record, "--vault", "pat"]).trim(),
        "negative"
    );

    // The relay serves the clinician the current version's blob only.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = RelayClient::new(&relay.url, doc.secret()).unwrap();
    let mut store = MemoryStore::new();
    let state = rt
        .block_on(sync::join_vault(
            &mut store,
            &client,
            &vault,
            &Fingerprint::from_hex(&p_fp).unwrap(),
        ))
        .unwrap();
    let record = RecordId::from_hex(&record).unwrap();
    let deleted = RecordId::from_hex(&deleted).unwrap();
    let fetch = |id: &RecordId, version: u32| {
        let m = state
            .record_version(id, version)
            .unwrap()
            .metadata()
            .clone();
        let mut out = Vec::new();
        rt.block_on(client.get_blob(
            &vault,
            m.ciphertext_hash(),
            m.address_kind(),
            m.ciphertext_len(),
            &mut out,
        ))
    };
    fetch(&record, 2).expect("the current version is served");
    for (id, version) in [(&record, 1), (&deleted, 1)] {
        match fetch(id, version) {
            Err(ClientError::Relay { status: 403, .. }) => {}
            other => panic!("version {version} of {id} was served: {other:?}"),
        }
    }

    // The patient keeps the whole history.
    let owner = RelayClient::new(&relay.url, patient.secret()).unwrap();
    let m = state.record_version(&record, 1).unwrap().metadata().clone();
    let mut out = Vec::new();
    rt.block_on(owner.get_blob(
        &vault,
        m.ciphertext_hash(),
        m.address_kind(),
        m.ciphertext_len(),
        &mut out,
    ))
    .expect("the owner fetches every version");
}
