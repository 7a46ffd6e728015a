//! A stranger floods a clinician's inbox, against the real relay and the
//! real `vault` command: Mallory shares vault after vault with Dr Ada, who
//! never accepted her. The relay lists only a few of them (its per-owner
//! cap for strangers) and counts the rest; `vault inbox` and `vault sync`
//! keep working and still show the share from Ada's patient, a contact,
//! whose shares the CLI accepts on the relay by itself. Accepting Mallory
//! lists all of hers; forgetting her caps them again. Dr Dee's laptop
//! reads the inbox for her: her patient is never a stranger to it, whoever
//! floods the laptop's public document, and the laptop changes Dee's one
//! accepted list.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;

use vault_client::sync;
use vault_core::store::MemoryStore;
use vault_core::{Fingerprint, Keyring, Permission, Role, SecretIdentity, VaultState};
use vault_tests::{principal, CliProfile, RelayProcess};

const FLOOD: usize = 7;
const CAP: usize = 2;

#[test]
fn a_strangers_flood_is_capped_and_an_accepted_owner_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let relay = capped_relay(dir.path());
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

    let mallory = flood(&relay, &a_fp, FLOOD);

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
    assert_eq!(owned_by(&all, &m_fp), FLOOD, "{all}");
    let s = ada.json(&["inbox", "--strangers"]);
    assert!(s["vaults"].as_array().unwrap().is_empty(), "{s}");

    // Forgetting her caps her again.
    ada.json(&["inbox", "forget", &m_fp]);
    let s = ada.json(&["inbox", "--strangers"]);
    assert_eq!(s["vaults"].as_array().unwrap().len(), CAP, "{s}");
}

/// How many rows of what `vault --json inbox` printed are `owner`'s vaults.
fn owned_by(rows: &serde_json::Value, owner: &str) -> usize {
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["owner"] == owner)
        .count()
}

/// A relay in `dir/relay` listing at most [`CAP`] vaults per stranger.
fn capped_relay(dir: &std::path::Path) -> RelayProcess {
    RelayProcess::start(
        &dir.join("relay"),
        &["--inbox-strangers-per-owner", &CAP.to_string()],
    )
}

/// A runtime, and a client of `relay` for `who`, whose identity it
/// published.
fn published(
    relay: &RelayProcess,
    who: &Arc<SecretIdentity>,
) -> (tokio::runtime::Runtime, vault_client::RelayClient) {
    let client = relay.client(who);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client.publish_identity()).unwrap();
    (rt, client)
}

/// Mallory, published, sharing `n` vaults of hers (a collection each) with
/// `target`.
fn flood(relay: &RelayProcess, target: &str, n: usize) -> Arc<SecretIdentity> {
    let mallory = principal(66, "Mallory", Role::Patient);
    let (rt, client) = published(relay, &mallory);
    let target = rt
        .block_on(client.lookup_identity(&Fingerprint::from_hex(target).unwrap()))
        .unwrap();
    for i in 0..n {
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
                let g = next.share_collection(&mut kr, &c, &target, Permission::Read, None)?;
                Ok(vec![e, g])
            },
        ))
        .unwrap();
    }
    mallory
}

#[test]
fn a_device_reads_its_persons_inbox_where_her_patients_are_never_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let relay = capped_relay(dir.path());
    let (patient, dee) = vault_tests::patient_and_clinician(dir.path(), &relay.url);
    let p_fp = vault_tests::fingerprint_in(&patient.json(&["whoami"]));
    let d_fp = vault_tests::fingerprint_in(&dee.json(&["whoami"]));
    patient.add_lab("HbA1c", "48 mmol/mol");
    patient.json(&["share", "labs", "--with", "dr"]);
    // Dee's key file accepts her patient (a contact) on reading her inbox.
    dee.json(&["inbox"]);

    // Dee's laptop, listed by her key file, confirms: it reads for Dee.
    let (laptop, l_fp) = vault_tests::published_device(dir.path(), &relay.url, "laptop");
    laptop.json(&["contacts", "add", "me", "--lookup", &d_fp]);
    dee.json(&["devices", "add", &l_fp]);
    laptop.json(&["devices", "confirm"]);
    let config = std::fs::read_to_string(dir.path().join("laptop/config.toml")).unwrap();
    assert!(config.contains(&format!("person = \"{d_fp}\"")), "{config}");

    // Mallory floods the laptop's public document.
    let mallory = flood(&relay, &l_fp, FLOOD);
    let m_fp = mallory.fingerprint().to_hex();

    // The patient, accepted by Dee, is no stranger to the laptop: her
    // vault is in its inbox, and only Mallory's are strangers', capped.
    let rows = laptop.json(&["inbox"]);
    assert_eq!(owned_by(&rows, &p_fp), 1, "{rows}");
    let s = laptop.json(&["inbox", "--strangers"]);
    let owners: Vec<&str> = s["vaults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, vec![m_fp.as_str(); CAP], "{s}");
    assert_eq!(s["held_back"], (FLOOD - CAP) as u64, "{s}");
    let accepted = laptop.json(&["inbox", "accepted"]);
    let owners: Vec<&str> = accepted["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(owners, vec![p_fp.as_str()], "Dee's list: {accepted}");

    // Accepting Mallory on the laptop changes Dee's one list.
    laptop.json(&["inbox", "accept", &m_fp]);
    let on_dee = dee.json(&["inbox", "accepted"]);
    assert_eq!(on_dee["owners"].as_array().unwrap().len(), 2, "{on_dee}");
    let s = laptop.json(&["inbox", "--strangers"]);
    assert!(s["vaults"].as_array().unwrap().is_empty(), "{s}");
    // The same relay spelled with a trailing slash is the same relay.
    let slash = format!("{}/", relay.url);
    let shown = laptop.json(&["--relay", &slash, "inbox", "accepted"]);
    assert_eq!(shown["person"], d_fp.as_str(), "{shown}");

    // Dee removes the laptop: it reads its own inbox again, and says why;
    // Dee's list is neither shown nor changed in its own's place.
    dee.json(&["devices", "remove", &l_fp]);
    for args in [
        &["--json", "inbox"][..],
        &["--json", "inbox", "--strangers"],
    ] {
        let run = laptop.run(args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stderr
                .contains("not on its person's current device list"),
            "{}",
            run.stderr
        );
    }
    let refused = laptop.fails(2, &["inbox", "accepted"]);
    assert!(refused.contains("vault devices confirm"), "{refused}");
    // A confirmation that fails (the patient's list, which she never
    // published, does not name the laptop) leaves the config as it was.
    laptop.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    let confirm = laptop.run(&["devices", "confirm", "--contact", "pat"]);
    assert_ne!(confirm.code, 0, "{}", confirm.stdout);
    let config = std::fs::read_to_string(dir.path().join("laptop/config.toml")).unwrap();
    assert!(config.contains(&format!("person = \"{d_fp}\"")), "{config}");
}

/// An owner's device (the web app's case: its list lives in the owner's
/// vault, not in the relay's directory) trusts the person it was paired
/// to: `listing_trusting` accepts the owner on the device's own list once
/// the relay counts the owner's vault as a stranger's.
#[test]
fn an_owners_device_accepts_its_owner_when_the_relay_caps_her() {
    let dir = tempfile::tempdir().unwrap();
    let relay = capped_relay(dir.path());
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    let p_fp = vault_tests::fingerprint_in(&patient.init("Pat Example", "patient"));
    let vault = patient.json(&["create"]);
    let tablet = principal(67, "tablet", Role::Device);
    let (rt, client) = published(&relay, &tablet);
    patient.json(&["devices", "add", &tablet.fingerprint().to_hex()]);
    flood(&relay, &tablet.fingerprint().to_hex(), FLOOD);

    let owner = Fingerprint::from_hex(&p_fp).unwrap();
    let plain = rt.block_on(client.inbox_listing()).unwrap();
    let hers = |l: &vault_client::InboxListing| {
        l.vaults
            .iter()
            .filter(|v| v.owner == owner)
            .map(|v| (v.vault.to_hex(), v.accepted))
            .collect::<Vec<_>>()
    };
    let id = vault["vault"].as_str().unwrap().to_owned();
    assert_eq!(
        hers(&plain),
        vec![(id.clone(), false)],
        "a stranger's at first"
    );
    assert_eq!(plain.strangers_held_back, (FLOOD - CAP) as u64);
    let trusted = rt
        .block_on(vault_client::inbox::listing_trusting(&client, &[owner]))
        .unwrap();
    assert!(trusted.not_accepted.is_none(), "{:?}", trusted.not_accepted);
    assert_eq!(hers(&trusted.listing), vec![(id, true)]);
    let list = rt.block_on(client.accepted_owners()).unwrap();
    assert_eq!(list.owners, vec![owner]);
    // Trusting only oneself accepts nobody.
    let me = tablet.fingerprint();
    rt.block_on(vault_client::inbox::listing_trusting(&client, &[me]))
        .unwrap();
    assert_eq!(rt.block_on(client.accepted_owners()).unwrap(), list);
}
