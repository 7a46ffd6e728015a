//! Designated agents end to end (`docs/format.md` §8.10, decision 65),
//! against the real relay and the real `vault` command: the patient names
//! Jane Doe an agent in "labs" who may add and share; Jane shares "labs"
//! with Dr Dee, who reads it, adds a note shown as written on the
//! patient's behalf, and is refused what her agency does not give; the
//! patient ends the agency, and Jane is refused while what she did stays.
//! A second agent, who may add but not share, forges a share bypassing
//! its client: the relay refuses it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use serde_json::Value;
use vault_client::sync;
use vault_core::store::MemoryStore;
use vault_core::{EntryBody, Fingerprint, LogEntry, Role, VaultId};
use vault_tests::forge::{agent_grant, forge_entry, grant_added_payload, signing_key};
use vault_tests::{patient_and_clinician, principal, CliProfile, RelayProcess};

fn fingerprint(v: &Value) -> String {
    v["fingerprint"].as_str().unwrap().to_owned()
}

/// Adds a "Call notes" record to the patient's labs as `who`; returns its
/// id.
fn call_notes(who: &CliProfile, body: &[u8]) -> String {
    let note = who.run_with_stdin(
        &[
            "--json",
            "add",
            "-",
            "-c",
            "labs",
            "--vault",
            "pat",
            "--title",
            "Call notes",
        ],
        body,
    );
    assert_eq!(note.code, 0, "{}", note.stderr);
    serde_json::from_str::<Value>(&note.stdout).unwrap()[0]["record"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A relay, the patient and Dr Dee (`patient_and_clinician`), and Jane
/// Doe, published and a contact of the patient's, with fingerprints.
struct People {
    relay: RelayProcess,
    patient: CliProfile,
    doc: CliProfile,
    jane: CliProfile,
    p_fp: String,
    d_fp: String,
    j_fp: String,
}

fn people(dir: &std::path::Path) -> People {
    let relay = RelayProcess::start(&dir.join("relay"), &[]);
    let (patient, doc) = patient_and_clinician(dir, &relay.url);
    let p_fp = fingerprint(&patient.json(&["whoami"]));
    let d_fp = fingerprint(&doc.json(&["whoami"]));
    let jane = CliProfile::new(&dir.join("jane"), &relay.url);
    let j_fp = fingerprint(&jane.init("Jane Doe", "patient"));
    jane.ok(&["whoami", "--publish", "--no-qr"]);
    patient.json(&["contacts", "add", "jane", "--lookup", &j_fp]);
    People {
        relay,
        patient,
        doc,
        jane,
        p_fp,
        d_fp,
        j_fp,
    }
}

#[test]
fn an_agent_acts_for_the_patient_within_its_powers_until_the_agency_ends() {
    let dir = tempfile::tempdir().unwrap();
    // The relay runs until `_relay` is dropped, at the end.
    let People {
        relay: _relay,
        patient,
        doc,
        jane,
        p_fp,
        d_fp,
        j_fp,
    } = people(dir.path());
    jane.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    jane.json(&["contacts", "add", "dr", "--lookup", &d_fp]);
    let lab = patient.add_lab("HbA1c", "48 mmol/mol");
    let meds = patient.run_with_stdin(
        &[
            "--json",
            "add",
            "-",
            "-c",
            "medications",
            "--title",
            "Metformin",
        ],
        b"500 mg twice daily",
    );
    assert_eq!(meds.code, 0, "{}", meds.stderr);

    // The patient names Jane in labs: she may add and share, for 30 days.
    let named = patient.json(&[
        "agents",
        "name",
        "jane",
        "-c",
        "labs",
        "--powers",
        "add,share",
        "--until",
        "30d",
    ]);
    assert_eq!(named["powers"], "read,add,share");
    let listed = patient.json(&["agents", "list"]);
    assert_eq!(listed[0]["agent"], j_fp.as_str());
    assert_eq!(listed[0]["collections"][0], "labs");
    let access = patient.json(&["access"]);
    assert_eq!(access[0]["agent_powers"], "read,add,share", "{access}");

    // Jane reads labs, and only labs.
    let inbox = jane.json(&["inbox"]);
    assert_eq!(inbox[0]["verified"], true, "{inbox}");
    let seen = jane.json(&["list", "--vault", "pat"]);
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["record"], lab.as_str());
    jane.fails(5, &["list", "--vault", "pat", "-c", "medications"]);

    // Beyond her powers, her client refuses before anything is sent.
    for (args, why) in [
        (
            vec!["share", "labs", "--with", "dr", "--write", "--vault", "pat"],
            "read-write",
        ),
        (
            vec![
                "share",
                "labs",
                "--with",
                "dr",
                "--deposit",
                "--vault",
                "pat",
            ],
            "deposit",
        ),
        (
            vec!["share", "labs", "--with", "pat", "--vault", "pat"],
            "the owner",
        ),
        (
            vec!["agents", "name", "dr", "-c", "labs", "--vault", "pat"],
            "an agent",
        ),
    ] {
        let r = jane.refused(&args);
        assert_eq!(
            (r.exit, r.code.as_str()),
            (4, "access_denied"),
            "{why}: {r:#?}"
        );
    }
    // Within them, she shares labs with Dr Dee, who reads it.
    jane.json(&["share", "labs", "--with", "dr", "--vault", "pat"]);
    let dee_sees = doc.json(&["list", "--vault", "pat"]);
    assert_eq!(dee_sees[0]["record"], lab.as_str(), "{dee_sees}");

    // Jane adds a note: every reader sees it written on the patient's
    // behalf.
    let note_id = call_notes(&jane, b"Spoke with the GP about the HbA1c.");
    let shown = patient.json(&["show", &note_id]);
    assert_eq!(shown["author"], j_fp.as_str());
    assert_eq!(shown["author_name"], "jane on behalf of you");
    let shown = doc.ok(&["show", &note_id, "--vault", "pat"]);
    assert!(shown.contains("on behalf of pat"), "{shown}");

    // The patient ends the agency: the key is rotated in the same append.
    let ended = patient.json(&["agents", "end", "jane"]);
    assert_eq!(ended["ended"][0]["collection"], "labs", "{ended}");
    assert_eq!(ended["rotated"][0], "labs");
    let refused = jane.fails(4, &["list", "--vault", "pat"]);
    assert!(
        refused.contains("403") || refused.contains("access"),
        "{refused}"
    );
    let r = jane.refused(&["share", "labs", "--with", "dr", "--vault", "pat"]);
    assert_eq!(r.exit, 4, "an ended agent shared: {r:#?}");

    // What she did stays: Dr Dee reads what the patient adds afterwards,
    // and her note is still shown as written on the patient's behalf.
    let later = patient.add_lab("Glucose", "5.1 mmol/L");
    let dee_sees = doc.json(&["list", "--vault", "pat"]);
    let ids: Vec<&str> = dee_sees
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&later.as_str()) && ids.contains(&note_id.as_str()),
        "{dee_sees}"
    );
    let shown = patient.json(&["show", &note_id]);
    assert_eq!(shown["author_name"], "jane on behalf of you");
    let listed = patient.json(&["agents", "list"]);
    assert_eq!(listed[0]["collections"].as_array().unwrap().len(), 0);
    assert_eq!(listed[0]["ended_in"][0], "labs");
    // Both the patient's and Dr Dee's devices verify the log from genesis
    // and agree on it.
    let code = patient.checkpoint(&[]);
    doc.json(&["sync"]);
    doc.json(&["verify", "--vault", "pat", "--compare", &code]);
}

#[test]
fn the_relay_refuses_a_share_by_an_agent_who_may_not_share() {
    const AGENT: u8 = 78;
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let (patient, doc) = patient_and_clinician(dir.path(), &relay.url);
    let p_fp = Fingerprint::from_hex(&fingerprint(&patient.json(&["whoami"]))).unwrap();
    let dee = doc.public();
    let vault = VaultId::from_hex(patient.json(&["vaults"])[0]["vault"].as_str().unwrap()).unwrap();
    patient.add_lab("HbA1c", "48 mmol/mol");

    // The agent may add records, not share.
    let agent = principal(AGENT, "Ann Agent", Role::Patient);
    let client = relay.client(&agent);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client.publish_identity()).unwrap();
    let a_fp = agent.fingerprint().to_hex();
    patient.json(&["contacts", "add", "ann", "--lookup", &a_fp]);
    patient.json(&["agents", "name", "ann", "-c", "labs", "--powers", "add"]);
    let mut store = MemoryStore::new();
    let state = rt
        .block_on(sync::join_vault(&mut store, &client, &vault, &p_fp))
        .unwrap();
    let labs = state.collections()[0].id;

    // Her client refuses to share.
    let mut keyring = vault_core::Keyring::new(&agent, client.now());
    let refused = state
        .share_collection(
            &mut keyring,
            &labs,
            &dee,
            vault_core::Permission::Read,
            None,
        )
        .unwrap_err();
    assert_eq!(refused.code(), "access_denied", "{refused}");

    // She forges one: the owner's grant to her, turned into a version-3
    // grant to Dr Dee that she signs, in a grant-added entry she signs.
    let her_grant = vault_core::store::Store::entries(&store, &vault, 0)
        .unwrap()
        .into_iter()
        .find_map(|e| match e.body() {
            EntryBody::AgentNamed(n) => Some(n.grant.to_bytes()),
            _ => None,
        })
        .expect("the entry naming her");
    let key = signing_key(AGENT);
    let grant = agent_grant(&her_grant, &dee.fingerprint(), &agent.fingerprint(), &key);
    assert!(
        vault_core::Grant::from_bytes(&grant).is_ok(),
        "a well-formed grant"
    );
    let payload = grant_added_payload(dee.to_bytes(), &grant);
    let head = state.head();
    let forged = forge_entry(
        &key,
        &vault,
        head.seq + 1,
        &head.head,
        client.now(),
        &agent.fingerprint(),
        5,
        &payload,
    );
    let forged = LogEntry::from_bytes(&forged).unwrap();
    let prev = rt.block_on(client.head(&vault)).unwrap();
    let err = rt
        .block_on(client.append(&vault, prev, std::slice::from_ref(&forged)))
        .expect_err("the relay stored a share by an agent who may not share");
    assert!(err.to_string().contains("may not share"), "{err}");
    // Dr Dee was given nothing.
    let r = doc.run(&["list", "--vault", "pat"]);
    assert_ne!(r.code, 0, "Dr Dee reads: {}", r.stdout);

    // An agent who may share but not add stores nothing on the relay: it
    // appends entries, never blobs.
    let sharer = principal(AGENT + 1, "Sam Sharer", Role::Patient);
    let sharer_client = relay.client(&sharer);
    rt.block_on(sharer_client.publish_identity()).unwrap();
    patient.json(&[
        "contacts",
        "add",
        "sam",
        "--lookup",
        &sharer.fingerprint().to_hex(),
    ]);
    patient.json(&["agents", "name", "sam", "-c", "labs", "--powers", "share"]);
    let bytes = b"not a record".to_vec();
    let hash = vault_core::request::body_digest(&bytes);
    let err = rt
        .block_on(sharer_client.put_blobs(&vault, &[(hash, &bytes[..])]))
        .expect_err("the relay stored a blob from an agent who may not add");
    assert!(err.to_string().contains("read-only"), "{err}");
    // Ann, who may add, uploads.
    rt.block_on(client.put_blobs(&vault, &[(hash, &bytes[..])]))
        .unwrap();
}

/// An agent's own device (decision 70's lists, for an agent): Jane lists a
/// tablet from her key file; naming her in labs carries her list there,
/// so the agency's grant reaches the tablet; the tablet reads labs, shares
/// it with Dr Dee as Jane (the relay takes the share, and Dee reads) and
/// adds a note the patient sees written by Jane's tablet on the patient's
/// behalf; Jane removes the tablet, and the relay refuses it from then on.
#[test]
fn an_agents_device_acts_for_the_agent_until_the_agent_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let People {
        relay,
        patient,
        doc,
        jane,
        p_fp,
        d_fp,
        j_fp: _,
    } = people(dir.path());
    let (tablet, t_fp) = vault_tests::published_device(dir.path(), &relay.url, "tablet");
    tablet.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    tablet.json(&["contacts", "add", "dr", "--lookup", &d_fp]);
    let lab = patient.add_lab("HbA1c", "48 mmol/mol");

    // Jane lists the tablet (her list goes to the relay's directory); the
    // patient names her in labs, carrying the list there.
    jane.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    jane.json(&["devices", "add", &t_fp]);
    patient.json(&[
        "agents",
        "name",
        "jane",
        "-c",
        "labs",
        "--powers",
        "add,share",
    ]);

    // The tablet finds the vault, reads labs, and shares it as Jane.
    tablet.json(&["inbox"]);
    assert_eq!(
        tablet.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );
    tablet.json(&["share", "labs", "--with", "dr", "--vault", "pat"]);
    doc.json(&["inbox"]);
    assert_eq!(
        doc.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );
    let note_id = call_notes(&tablet, b"Spoke with the GP.");
    let shown = patient.json(&["show", &note_id]);
    assert_eq!(shown["author"], t_fp.as_str(), "{shown}");
    assert!(
        shown["author_name"]
            .as_str()
            .is_some_and(|n| n.contains("on behalf of you")),
        "{shown}"
    );

    // Jane removes the tablet from her key file, which never opened the
    // patient's vault (only the tablet did). Its owner is not yet one she
    // accepts shares from, so the change does not download that stranger's
    // log: it says so, and the tablet still acts there.
    let removed = jane.json(&["devices", "remove", &t_fp[..8]]);
    assert_eq!(removed["carried"].as_array().unwrap().len(), 0, "{removed}");
    assert_eq!(removed["strangers_not_reached"], 1, "{removed}");
    tablet.json(&["sync"]);
    // She accepts the patient (without opening the vault) and runs it
    // again: nothing new is published, and the list is carried into labs
    // from the relay's inbox; the relay refuses the tablet there.
    jane.json(&["inbox", "accept", "pat"]);
    let removed = jane.json(&["devices", "remove", &t_fp]);
    assert_eq!(removed["carried"].as_array().unwrap().len(), 1, "{removed}");
    assert_eq!(removed["strangers_not_reached"], 0, "{removed}");
    let refused = tablet.run(&["sync"]);
    assert!(
        refused.stderr.contains("no longer shared with you"),
        "the tablet still reads: {} {}",
        refused.stdout,
        refused.stderr
    );
    let r = tablet.refused(&["share", "labs", "--with", "dr", "--vault", "pat"]);
    assert_ne!(r.exit, 0, "a removed device shared: {r:#?}");
    // The patient's next sync re-keys labs (Jane's agency grant moves to
    // her generation 2); the log verifies from genesis.
    let (rekeyed, synced) = patient.sync_rekeyed();
    assert_eq!(rekeyed, 1, "{synced}");
    patient.ok(&["verify"]);
}
