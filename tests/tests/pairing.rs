//! Pairing a device by a compared code (`docs/format.md` §3.8, decision
//! 72) against the real relay: through the `vault` command, driven as a
//! person at two terminals would (the patient's laptop, a clinician's
//! tablet, and two screens that disagree), and through `vault_client` with
//! a hostile relay in the middle, which cannot make the screens agree.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use vault_client::pairing::{Joining, Offer};
use vault_core::pairing::{self, ComparedCode, PairingCode};
use vault_core::Role;
use vault_tests::proxy::{self, Proxy, Reply};
use vault_tests::{CliProfile, Interactive, RelayProcess};

const WAIT: Duration = Duration::from_secs(60);

/// The code `vault devices pair` shows (`    vault devices join 12345 67890`).
fn shown_code(pair: &mut Interactive) -> String {
    let line = pair.wait_for(|l| l.trim_start().starts_with("vault devices join "), WAIT);
    line.trim()
        .trim_start_matches("vault devices join ")
        .to_owned()
}

/// The 8 digits a side shows (`This device shows:  1234 5678`).
fn shown_digits(side: &mut Interactive) -> String {
    let line = side.wait_for(|l| l.starts_with("This device shows:"), WAIT);
    line.trim_start_matches("This device shows:")
        .trim()
        .to_owned()
}

/// Pairs `device` (a profile of role device) from `existing`; `answers`
/// turns what each screen shows into what the person types on the other.
fn pair(
    existing: &CliProfile,
    device: &CliProfile,
    answers: impl Fn(&str, &str) -> (String, String),
) -> (vault_tests::CliRun, vault_tests::CliRun) {
    pair_as(&["devices", "pair"], existing, device, answers)
}

/// [`pair`], with `vault` run as `args` on the existing device.
fn pair_as(
    args: &[&str],
    existing: &CliProfile,
    device: &CliProfile,
    answers: impl Fn(&str, &str) -> (String, String),
) -> (vault_tests::CliRun, vault_tests::CliRun) {
    let mut e = existing.interactive(args);
    let code = shown_code(&mut e);
    let mut n = device.interactive(&["--json", "devices", "join", &code]);
    let (on_e, on_n) = (shown_digits(&mut e), shown_digits(&mut n));
    let (type_on_e, type_on_n) = answers(&on_e, &on_n);
    e.answer(&type_on_e);
    n.answer(&type_on_n);
    (e.finish(), n.finish())
}

/// `vault devices pair` stopped with Ctrl-C, while it waits for the new
/// device or at its prompt once the device joined, closes its code on the
/// relay before it exits (130): the code no longer works, and as the relay
/// keeps at most three codes open per identity, a fourth pairing after
/// three stopped ones still opens, and pairs.
#[test]
fn a_pairing_stopped_with_ctrl_c_closes_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let (patient, _doc) = vault_tests::patient_and_clinician(dir.path(), &relay.url);
    let device = |name: &str| {
        let profile = CliProfile::new(&dir.path().join(name), &relay.url);
        profile.init(name, "device");
        profile
    };
    // Ctrl-C, then the command's word that it closed the code, before its
    // input is closed (which at the prompt would answer it).
    let stop = |mut pair: Interactive| {
        pair.interrupt();
        pair.wait_for(|l| l.contains("cancelled: the code no longer works"), WAIT);
        let run = pair.finish();
        assert_eq!(run.code, 130, "{}\n{}", run.stdout, run.stderr);
    };
    let refused = |device: &CliProfile, code: &str| {
        let run = device.run(&["devices", "join", code]);
        assert_ne!(run.code, 0, "{}", run.stdout);
        assert!(
            run.stderr.contains("no pairing with this code is open"),
            "{}",
            run.stderr
        );
    };

    // Stopped while waiting for the new device, twice.
    let phone = device("phone");
    for _ in 0..2 {
        let mut e = patient.interactive(&["devices", "pair"]);
        let code = shown_code(&mut e);
        stop(e);
        refused(&phone, &code);
    }

    // Stopped at the prompt, after the phone joined: nothing is added, and
    // the code is closed (open, another device would be told the phone
    // already joined it).
    let mut e = patient.interactive(&["devices", "pair"]);
    let code = shown_code(&mut e);
    let mut n = phone.interactive(&["devices", "join", &code]);
    shown_digits(&mut e);
    shown_digits(&mut n);
    stop(e);
    let n = n.finish();
    assert_ne!(n.code, 0, "{}\n{}", n.stdout, n.stderr);
    refused(&device("tablet"), &code);
    let listed = patient.json(&["devices", "list"]);
    assert_eq!(listed["devices"].as_array().unwrap().len(), 0, "{listed}");

    // A fourth pairing: none of the three is still open.
    let laptop = device("laptop");
    let (e, n) = pair(&patient, &laptop, |on_e, on_n| {
        (on_n.to_owned(), on_e.to_owned())
    });
    assert_eq!(e.code, 0, "{}\n{}", e.stdout, e.stderr);
    assert!(e.stdout.contains("Added laptop"), "{}", e.stdout);
    assert_eq!(n.code, 0, "{}\n{}", n.stdout, n.stderr);
}

#[test]
fn the_cli_pairs_a_laptop_and_a_clinicians_tablet_by_a_compared_code() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let (patient, doc) = vault_tests::patient_and_clinician(dir.path(), &relay.url);
    let lab = patient.add_lab("HbA1c", "48 mmol/mol");
    let device = |name: &str| {
        let profile = CliProfile::new(&dir.path().join(name), &relay.url);
        profile.init(name, "device");
        profile
    };

    // The patient's laptop: both screens show the same digits, typed on
    // each; the laptop reads the vault as the patient's device.
    let laptop = device("laptop");
    let (e, n) = pair(&patient, &laptop, |on_e, on_n| {
        assert_eq!(on_e, on_n, "both screens show the same digits");
        (on_n.to_owned(), on_e.to_owned())
    });
    assert_eq!(e.code, 0, "{}\n{}", e.stdout, e.stderr);
    assert!(e.stdout.contains("Added laptop"), "{}", e.stdout);
    assert_eq!(n.code, 0, "{}\n{}", n.stdout, n.stderr);
    let joined: serde_json::Value = serde_json::from_str(&n.stdout).unwrap();
    let p_fp = patient.json(&["whoami"])["fingerprint"].clone();
    assert_eq!(joined["person"], p_fp, "{joined}");
    assert_eq!(joined["listed"], "owner", "{joined}");
    assert_eq!(joined["contact"], "me", "{joined}");
    assert_eq!(
        laptop.ok(&["open", &lab[..8], "--vault", "me", "-o", "-"]),
        "48 mmol/mol"
    );
    let listed = patient.json(&["devices", "list"]);
    assert_eq!(listed["devices"].as_array().unwrap().len(), 1, "{listed}");

    // A second device whose screens disagree (the person typed what does
    // not match): nothing is added on either side.
    let phone = device("phone");
    let (e, n) = pair(&patient, &phone, |on_e, _| {
        let wrong = (ComparedCode::parse(on_e).unwrap().value() + 1) % 100_000_000;
        let wrong = format!("{wrong:08}");
        (wrong.clone(), wrong)
    });
    assert_ne!(e.code, 0, "{}", e.stdout);
    assert!(e.stderr.contains("different digits"), "{}", e.stderr);
    assert_ne!(n.code, 0, "{}", n.stdout);
    assert!(n.stderr.contains("different digits"), "{}", n.stderr);
    let listed = patient.json(&["devices", "list"]);
    assert_eq!(listed["devices"].as_array().unwrap().len(), 1, "{listed}");
    assert_ne!(
        phone
            .run(&["open", &lab[..8], "--vault", "me", "-o", "-"])
            .code,
        0
    );
    // A profile that is not a device cannot join.
    let refused = doc.fails(2, &["devices", "join", "01234", "56789"]);
    assert!(refused.contains("not a device"), "{refused}");

    // Dr Dee owns no vault: her key file pairs a tablet, listed in the
    // relay's directory; what the patient shares next reaches it.
    let tablet = device("tablet");
    let (e, n) = pair_as(
        &["--json", "devices", "pair"],
        &doc,
        &tablet,
        |on_e, on_n| (on_n.to_owned(), on_e.to_owned()),
    );
    assert_eq!(e.code, 0, "{}\n{}", e.stdout, e.stderr);
    assert_eq!(n.code, 0, "{}\n{}", n.stdout, n.stderr);
    // One JSON document on the key file's side, the tablet's claim in it.
    let added: serde_json::Value = serde_json::from_str(&e.stdout).unwrap();
    assert_eq!(added["serial"], 1, "{added}");
    assert_eq!(added["claim"]["signed"], true, "{added}");
    let joined: serde_json::Value = serde_json::from_str(&n.stdout).unwrap();
    assert_eq!(joined["listed"], "member", "{joined}");
    // Listed by her key file (version 1), the tablet then signed her list
    // itself (version 2): its claim, which outranks anyone else listing it.
    assert_eq!(joined["serial"], 2, "{joined}");
    assert_eq!(joined["confirm_error"], serde_json::Value::Null, "{joined}");
    patient.json(&["share", "labs", "--with", "dr", "--add-only"]);
    let p_fp = p_fp.as_str().unwrap();
    tablet.json(&["contacts", "add", "pat", "--lookup", p_fp]);
    tablet.json(&["inbox"]);
    assert_eq!(
        tablet.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );
}

/// A clinician's tablet paired after another member listed it (its
/// identity is public) acts for the clinician all the same
/// (`docs/format.md` §8.12 rule 4): Mallory, who reads labs, lists Dr
/// Dee's tablet as hers there first, so the version adding it is refused
/// in labs; the tablet signs Dr Dee's list once listed, and her key file,
/// which follows the patient's vault, waits for that signature and
/// carries both versions, which labs then takes. After the patient's
/// re-keying, the tablet reads labs and writes there as Dr Dee.
#[test]
fn a_paired_tablet_acts_for_its_clinician_where_another_member_listed_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let (patient, doc) = vault_tests::patient_and_clinician(dir.path(), &relay.url);
    let lab = patient.add_lab("HbA1c", "48 mmol/mol");
    let fp_of = |v: serde_json::Value| v["fingerprint"].as_str().unwrap().to_owned();
    let p_fp = fp_of(patient.json(&["whoami"]));
    patient.json(&["share", "labs", "--with", "dr", "--add-only"]);
    doc.json(&["inbox"]);

    let mallory = vault_tests::clinician_reading_labs(dir.path(), &relay.url, &patient, "mallory");

    let (tablet, t_fp) = vault_tests::published_device(dir.path(), &relay.url, "tablet");
    let squatted = mallory.json(&["devices", "add", &t_fp]);
    assert_eq!(
        squatted["carried"].as_array().unwrap().len(),
        1,
        "{squatted}"
    );

    let (e, n) = pair(&doc, &tablet, |on_e, on_n| {
        (on_n.to_owned(), on_e.to_owned())
    });
    assert_eq!(e.code, 0, "{}\n{}", e.stdout, e.stderr);
    assert_eq!(n.code, 0, "{}\n{}", n.stdout, n.stderr);
    assert!(
        e.stderr.contains("another member listed it"),
        "the version adding the tablet was not refused in labs: {}",
        e.stderr
    );
    assert!(
        e.stdout
            .contains("The device signed your device list; carried into 1 collection(s)"),
        "{}\n{}",
        e.stdout,
        e.stderr
    );
    let joined: serde_json::Value = serde_json::from_str(&n.stdout).unwrap();
    assert_eq!(joined["serial"], 2, "{joined}");
    // The tablet reads Dr Dee's inbox from now on (decision 76).
    let d_fp = fp_of(doc.json(&["whoami"]));
    let config = std::fs::read_to_string(dir.path().join("tablet/config.toml")).unwrap();
    assert!(config.contains(&format!("person = \"{d_fp}\"")), "{config}");

    let (rekeyed, synced) = patient.sync_rekeyed();
    assert_eq!(rekeyed, 1, "{synced}");
    tablet.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    tablet.json(&["inbox"]);
    assert_eq!(
        tablet.ok(&["open", &lab[..8], "--vault", "pat", "-o", "-"]),
        "48 mmol/mol"
    );
    let written = tablet.run_with_stdin(
        &[
            "add", "-", "-c", "labs", "--title", "Ferritin", "--vault", "pat",
        ],
        b"ferritin 30 ug/L",
    );
    assert_eq!(written.code, 0, "{}", written.stderr);
    let listed = patient.json(&["list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["title"] == "Ferritin" && r["author_name"] == "tablet (dr's device)"),
        "{listed}"
    );
    patient.ok(&["verify"]);

    // Removed, the tablet pairs again: its join does not wait on the
    // inbox of a person whose list no longer names it.
    doc.json(&["devices", "remove", &t_fp]);
    let (e, n) = pair(&doc, &tablet, |on_e, on_n| {
        (on_n.to_owned(), on_e.to_owned())
    });
    assert_eq!(e.code, 0, "{}\n{}", e.stdout, e.stderr);
    assert_eq!(n.code, 0, "{}\n{}", n.stdout, n.stderr);
    let config = std::fs::read_to_string(dir.path().join("tablet/config.toml")).unwrap();
    assert!(config.contains(&format!("person = \"{d_fp}\"")), "{config}");
    let inbox = tablet.run(&["--json", "inbox"]);
    assert_eq!(inbox.code, 0, "{}", inbox.stderr);
    assert!(!inbox.stderr.contains("warning"), "{}", inbox.stderr);
}

/// The vault_client side, two devices and a relay that lies: a device
/// that read the code joins first (the real device is refused, and the
/// screens cannot agree); a relay that answers the new device in the
/// existing one's place, with a person and nonce of its own, gets a
/// different code on each screen; and one that reveals another person
/// than the one committed to is refused outright.
#[test]
fn a_relay_in_the_middle_cannot_make_the_screens_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, relay) = Proxy::in_front_of_a_relay(&dir.path().join("relay"));
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(in_the_middle(&relay, &proxy));
}

async fn in_the_middle(relay: &RelayProcess, proxy: &Proxy) {
    let via_proxy = |who: &Arc<vault_core::SecretIdentity>| {
        vault_client::RelayClient::new(&proxy.url, who.clone()).unwrap()
    };
    let patient = vault_tests::principal(1, "Pat", Role::Patient);
    let mallory = vault_tests::principal(2, "Mallory", Role::Patient);
    let laptop = vault_tests::principal(3, "laptop", Role::Device);
    let thief = vault_tests::principal(4, "not a laptop", Role::Device);
    for p in [&patient, &mallory, &thief] {
        relay.client(p).publish_identity().await.unwrap();
    }
    let e = via_proxy(&patient);
    let n = via_proxy(&laptop);

    // Honest: both sides compute the same code, for the right device and
    // person.
    let offer = Offer::open(&e, &patient.fingerprint()).await.unwrap();
    assert!(offer.poll(&e).await.unwrap().is_none(), "nobody joined yet");
    let joining = Joining::join(&n, offer.code()).await.unwrap();
    let joined = offer.wait(&e).await.unwrap();
    let revealed = joining.wait(&n).await.unwrap();
    assert_eq!(joined.device.fingerprint(), laptop.fingerprint());
    assert_eq!(revealed.person.fingerprint(), patient.fingerprint());
    assert_eq!(joined.compared, revealed.compared);
    offer.close(&e).await.unwrap();
    let gone = Joining::join(&n, offer.code()).await.unwrap_err();
    assert_eq!(gone.code(), "pairing_not_found", "{gone}");

    // Someone who read the code (or a relay that found it from the slot's
    // hash) joins first: the real device is refused at its join, so it
    // never shows digits to compare, and the existing device shows the
    // thief's device, named as such. Once it answered, it answers for that
    // device and nonce only: a relay showing it another device afterwards
    // changes nothing.
    let offer = Offer::open(&e, &patient.fingerprint()).await.unwrap();
    let _thief = Joining::join(&relay.client(&thief), offer.code())
        .await
        .unwrap();
    let taken = Joining::join(&n, offer.code()).await.unwrap_err();
    assert_eq!(taken.code(), "pairing_taken", "{taken}");
    // The patient's answer is lost once (the relay acted on it); then the
    // relay shows another device and nonce. The offer answers again for
    // the device and nonce it bound itself to first.
    let status_path = format!("/v1/pairings/{}", hex::encode(offer.code().slot()));
    let reveal_path = format!("{status_path}/reveal");
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (lost_in, laptop_fp) = (lost.clone(), laptop.fingerprint().to_hex());
    proxy.attack(proxy::rewrite(move |req, reply| {
        use std::sync::atomic::Ordering;
        if req.route() == reveal_path && !lost_in.swap(true, Ordering::SeqCst) {
            *reply = Reply::error(500, "internal", "the answer was lost");
            return true;
        }
        if req.route() != status_path || req.method != "GET" || !lost_in.load(Ordering::SeqCst) {
            return false;
        }
        let Some(mut v) = reply.json_body() else {
            return false;
        };
        v["device"] = json!(laptop_fp);
        v["device_nonce"] = json!(hex::encode([0x77u8; 32]));
        reply.set_json(&v);
        true
    }));
    let once = via_proxy(&patient).with_retry_policy(vault_client::RetryPolicy::with_attempts(1));
    let failed = offer.poll(&once).await.unwrap_err();
    assert_eq!(failed.status(), Some(500), "{failed}");
    assert!(lost.load(std::sync::atomic::Ordering::SeqCst));
    let joined = offer.wait(&e).await.unwrap();
    assert_eq!(joined.device.fingerprint(), thief.fingerprint());
    assert_eq!(joined.device.display_name(), "not a laptop");
    let again = offer.poll(&e).await.unwrap().unwrap();
    assert_eq!(again.device.fingerprint(), thief.fingerprint());
    assert_eq!(again.compared, joined.compared);
    proxy.honest();
    offer.close(&e).await.unwrap();

    // A relay in the middle: it joins the patient's slot with a device of
    // its own, and answers the laptop itself, as if Mallory's device had
    // opened the slot: its own commitment, then Mallory and its nonce. It
    // must answer the laptop's join with a commitment before the laptop
    // sends its nonce (the join carries none), so its nonce cannot be
    // chosen to match the patient's screen.
    let offer = Offer::open(&e, &patient.fingerprint()).await.unwrap();
    let slot = offer.code().slot();
    let slot_path = format!("/v1/pairings/{}", hex::encode(slot));
    let fake_nonce = [0x66u8; 32];
    let fake_commit = pairing::commitment(&slot, &mallory.fingerprint(), &fake_nonce);
    // What the relay saw from the laptop, in order.
    let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let (log, laptop_fp) = (seen.clone(), laptop.fingerprint().to_hex());
    let (mallory_fp, thief_fp) = (mallory.fingerprint().to_hex(), thief.fingerprint().to_hex());
    proxy.attack(proxy::intercept(move |req| {
        if req.signer() != Some(laptop_fp.as_str()) || !req.route().starts_with(&slot_path) {
            return None;
        }
        let step = req.route().trim_start_matches(&slot_path).to_owned();
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        log.lock().unwrap().push((step.clone(), body));
        if step == "/join" {
            // The join's answer is held back a while: nothing of the
            // laptop's may arrive meanwhile.
            std::thread::sleep(Duration::from_millis(300));
            log.lock()
                .unwrap()
                .push(("/join answered".into(), serde_json::Value::Null));
        }
        let log = log.lock().unwrap();
        let device_nonce = log
            .iter()
            .find(|(s, _)| s == "/nonce")
            .and_then(|(_, b)| b["nonce"].as_str().map(str::to_owned));
        let mut v = json!({
            "opener": thief_fp,
            "commit": hex::encode(fake_commit),
            "expires_at": vault_tests::now() + 600,
            "device": laptop_fp,
        });
        if let Some(nonce) = device_nonce {
            v["device_nonce"] = json!(nonce);
        }
        if step.is_empty() {
            v["person"] = json!(mallory_fp);
            v["opener_nonce"] = json!(hex::encode(fake_nonce));
        }
        Some(Reply::json(200, &v))
    }));
    let _relays = Joining::join(&relay.client(&thief), offer.code())
        .await
        .unwrap();
    let joined = offer.wait(&e).await.unwrap();
    let joining = Joining::join(&n, offer.code()).await.unwrap();
    let revealed = joining.wait(&n).await.unwrap();
    {
        let seen = seen.lock().unwrap();
        let steps: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            steps.get(..3),
            Some(&["/join", "/join answered", "/nonce"][..]),
            "the laptop's requests: {seen:?}"
        );
        assert_eq!(seen[0].1, json!({}), "the join carries no nonce");
        assert!(seen[2].1["nonce"].is_string(), "{seen:?}");
    }
    assert_eq!(revealed.person.fingerprint(), mallory.fingerprint());
    assert_ne!(
        joined.compared, revealed.compared,
        "a relay in the middle matched the screens (odds 1 in 10^8)"
    );
    proxy.honest();
    offer.close(&e).await.unwrap();

    // A relay that forwards the real slot but reveals another person to
    // the new device than the one committed to: refused.
    let offer = Offer::open(&e, &patient.fingerprint()).await.unwrap();
    let slot_path = format!("/v1/pairings/{}", hex::encode(offer.code().slot()));
    let mallory_fp = mallory.fingerprint().to_hex();
    let laptop_fp = laptop.fingerprint().to_hex();
    proxy.attack(proxy::rewrite(move |req, reply| {
        if req.route() != slot_path || req.signer() != Some(laptop_fp.as_str()) {
            return false;
        }
        let Some(mut v) = reply.json_body() else {
            return false;
        };
        if v.get("person").is_none() {
            return false;
        }
        v["person"] = json!(mallory_fp);
        reply.set_json(&v);
        true
    }));
    let joining = Joining::join(&n, offer.code()).await.unwrap();
    offer.wait(&e).await.unwrap();
    let refused = joining.wait(&n).await.unwrap_err();
    assert_eq!(refused.code(), "pairing_failed", "{refused}");
    assert!(refused.to_string().contains("committed"), "{refused}");
    proxy.honest();
    offer.close(&e).await.unwrap();

    // A typed code is 10 digits.
    assert!(PairingCode::parse("12345").is_err());
}
