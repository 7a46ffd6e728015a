//! A stranger floods a clinician's inbox, against the real relay and the
//! real `vault` command: Mallory shares vault after vault with Dr Ada, who
//! never accepted her. The relay lists only a few of them (its per-owner
//! cap for strangers) and counts the rest; `vault inbox` and `vault sync`
//! keep working and still show the share from Ada's patient, a contact,
//! whose shares the CLI accepts on the relay by itself. Accepting Mallory
//! lists all of hers; forgetting her caps them again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use vault_client::sync;
use vault_core::store::MemoryStore;
use vault_core::{Keyring, Permission, Role, VaultState};
use vault_tests::{principal, CliProfile, RelayProcess};

const FLOOD: usize = 7;
const CAP: usize = 2;

#[test]
fn a_strangers_flood_is_capped_and_an_accepted_owner_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(
        &dir.path().join("relay"),
        &["--inbox-strangers-per-owner", &CAP.to_string()],
    );
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    let ada = CliProfile::new(&dir.path().join("ada"), &relay.url);
    let p_fp = patient.init("Pat Example", "patient")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_fp = ada.init("Dr Ada", "clinician")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    ada.ok(&["whoami", "--publish"]);
    patient.json(&["create"]);
    patient.run_with_stdin(
        &["add", "-", "-c", "labs", "--title", "HbA1c"],
        b"48 mmol/mol",
    );
    patient.json(&["contacts", "add", "dr-ada", "--lookup", &a_fp]);
    patient.json(&["share", "labs", "--with", "dr-ada"]);
    ada.json(&["contacts", "add", "patient", "--lookup", &p_fp]);

    // Mallory: a vault per share, each sharing one collection with Ada.
    let mallory = principal(66, "Mallory", Role::Patient);
    let client = relay.client(&mallory);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client.publish_identity()).unwrap();
    let ada_id = rt
        .block_on(client.lookup_identity(&vault_core::Fingerprint::from_hex(&a_fp).unwrap()))
        .unwrap();
    for i in 0..FLOOD {
        let mut store = MemoryStore::new();
        let state = rt
            .block_on(sync::new_vault(&mut store, &client, &mallory))
            .unwrap();
        rt.block_on(sync::push_with_retry(
            &mut store,
            &client,
            &state.vault(),
            |s| {
                let mut next: VaultState = s.clone();
                let (c, e) =
                    next.create_collection(&mallory, &format!("urgent {i}"), client.now())?;
                next.apply(&e)?;
                let mut kr = Keyring::new(&mallory, client.now());
                let g = next.share_collection(&mut kr, &c, &ada_id, Permission::Read, None)?;
                Ok(vec![e, g])
            },
        ))
        .unwrap();
    }

    // Ada's inbox: her patient's vault (verified), and only CAP of
    // Mallory's (a stranger, unverified), with the rest counted.
    let run = ada.run(&["--json", "inbox"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let listed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let rows = listed.as_array().unwrap();
    let verified: Vec<_> = rows.iter().filter(|r| r["verified"] == true).collect();
    assert_eq!(verified.len(), 1, "{listed}");
    assert_eq!(verified[0]["owner"], p_fp);
    let strangers = rows.iter().filter(|r| r["verified"] == false).count();
    assert_eq!(strangers, CAP, "{listed}");
    assert!(
        run.stderr
            .contains(&format!("{} more vault(s)", FLOOD - CAP)),
        "{}",
        run.stderr
    );
    // The patient, a contact, is now accepted on the relay.
    let accepted = ada.json(&["inbox", "accepted"]);
    let owners: Vec<&str> = accepted["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(owners, vec![p_fp.as_str()]);
    let list = ada.json(&["list", "--vault", "patient"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let sync = ada.run(&["sync"]);
    assert_eq!(sync.code, 0, "{}", sync.stderr);

    // Strangers on request; accepting Mallory lists all of hers.
    let s = ada.json(&["inbox", "--strangers"]);
    assert_eq!(s["vaults"].as_array().unwrap().len(), CAP, "{s}");
    assert_eq!(s["held_back"], (FLOOD - CAP) as u64);
    let m_fp = mallory.fingerprint().to_hex();
    ada.json(&["inbox", "accept", &m_fp]);
    let all = ada.json(&["inbox"]);
    let from_mallory = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["owner"] == m_fp.as_str())
        .count();
    assert_eq!(from_mallory, FLOOD, "{all}");
    let s = ada.json(&["inbox", "--strangers"]);
    assert!(s["vaults"].as_array().unwrap().is_empty(), "{s}");

    // Forgetting her caps her again.
    ada.json(&["inbox", "forget", &m_fp]);
    let s = ada.json(&["inbox", "--strangers"]);
    assert_eq!(s["vaults"].as_array().unwrap().len(), CAP, "{s}");
}
