//! SMART Health Links read by implementations this project did not write
//! (`tests/shl-interop/`, installed with `npm ci` from its lockfile):
//! npm `jose` decrypts vault's files and vault decrypts jose's; npm
//! `kill-the-clipboard` resolves links vault made against the real relay
//! on loopback, with and without a passcode, gets the same bundle as
//! vault's own viewer, and fails as the specification says for a wrong
//! passcode, an expired link and a revoked one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::Digest;
use vault_core::Role;
use vault_shl::{jwe, Compression, JweLimits, LinkKey};
use vault_tests::{principal, CliProfile, RelayProcess};

fn interop_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shl-interop");
    assert!(
        dir.join("node_modules/jose").is_dir()
            && dir.join("node_modules/kill-the-clipboard").is_dir(),
        "{}: the npm packages are missing; run `npm ci` there (scripts/test does)",
        dir.display()
    );
    dir
}

/// Runs `node interop.mjs <args>` and parses the one JSON value it prints.
fn node(args: &[&str]) -> Value {
    let dir = interop_dir();
    let out = Command::new("node")
        .arg("interop.mjs")
        .args(args)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run node (the interoperability tests need Node.js): {e}")
        });
    assert!(
        out.status.success(),
        "node interop.mjs {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "node printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// A FHIR Bundle of about `n` bytes.
fn bundle(n: usize) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut i = 0;
    while entries.iter().map(|e: &String| e.len()).sum::<usize>() < n {
        entries.push(format!(
            r#"{{"resource":{{"resourceType":"Observation","id":"o{i}","status":"final","valueQuantity":{{"value":{}}}}}}}"#,
            i * 7 % 1000
        ));
        i += 1;
    }
    format!(
        r#"{{"resourceType":"Bundle","type":"collection","entry":[{}]}}"#,
        entries.join(",")
    )
    .into_bytes()
}

#[test]
fn jose_reads_vault_files_and_vault_reads_jose_files() {
    let key = LinkKey::generate().unwrap();
    let small = bundle(2_000);
    let large = bundle(400_000);
    let cases = [
        (small.clone(), Compression::auto(small.len())),
        (small.clone(), Compression::None),
        (large.clone(), Compression::auto(large.len())),
        // What vault never makes (auto does not compress past 200,000
        // bytes): jose 6.2 refuses DEF content inflating past 250,000.
        (large.clone(), Compression::Deflate),
    ];
    assert_eq!(cases[0].1, Compression::Deflate);
    assert_eq!(cases[2].1, Compression::None);
    let files: Vec<String> = cases
        .iter()
        .map(|(p, c)| jwe::encrypt(&key, vault_shl::FHIR_JSON, p, *c).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("files.json");
    std::fs::write(
        &input,
        serde_json::to_vec(&serde_json::json!({ "key": &*key.to_base64url(), "files": files }))
            .unwrap(),
    )
    .unwrap();
    let results = node(&["jose-decrypt", input.to_str().unwrap()]);
    let results = results.as_array().unwrap();
    for (i, ((plain, c), r)) in cases.iter().zip(results).take(3).enumerate() {
        assert_eq!(r["ok"], true, "file {i}: {r}");
        assert_eq!(r["sha256"], sha(plain), "file {i}");
        assert_eq!(r["cty"], "application/fhir+json");
        assert_eq!(
            (r["alg"].as_str(), r["enc"].as_str()),
            (Some("dir"), Some("A256GCM"))
        );
        assert_eq!(
            r["zip"].as_str() == Some("DEF"),
            *c == Compression::Deflate,
            "file {i}"
        );
    }
    assert_eq!(
        results[3]["ok"], false,
        "jose's default inflate limit: {}",
        results[3]
    );
    println!(
        "jose refused the 400 KB DEF file as documented: {}",
        results[3]
    );

    // And the other way: files jose made, with and without DEF.
    let made = node(&["jose-encrypt", &key.to_base64url()]);
    let made = made.as_array().unwrap();
    assert_eq!(made.len(), 4);
    for m in made {
        let d = jwe::decrypt(&key, m["jwe"].as_str().unwrap(), &JweLimits::default()).unwrap();
        assert_eq!(sha(&d.plaintext), m["sha256"].as_str().unwrap());
        assert_eq!(d.compressed, m["zip"] == true);
        assert_eq!(d.content_type, "application/fhir+json");
        // A wrong key is refused.
        let other = LinkKey::generate().unwrap();
        assert!(jwe::decrypt(&other, m["jwe"].as_str().unwrap(), &JweLimits::default()).is_err());
    }
}

fn sample() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fhir-samples");
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    all.sort();
    all.remove(0)
}

/// What vault's own viewer reads from `link` (as JSON).
fn vault_opens(profile: &CliProfile, dir: &Path, link: &str, passcode: Option<&Path>) -> Value {
    let out = dir.join(format!("opened-{}.json", sha(link.as_bytes())));
    let mut args = vec![
        "link",
        "open",
        link,
        "--recipient",
        "vault viewer",
        "-o",
        out.to_str().unwrap(),
    ];
    if let Some(p) = passcode {
        args.extend(["--passcode-file", p.to_str().unwrap()]);
    }
    profile.ok(&args);
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

#[test]
fn kill_the_clipboard_resolves_vault_links_on_the_real_relay() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = CliProfile::new(&dir.path().join("patient"), &relay.url);
    patient.init("Pat Patient", "patient");
    patient.ok(&["create"]);
    patient.ok(&["import", sample().to_str().unwrap()]);

    // 1. A summary link without a passcode.
    let made = patient.json(&[
        "link",
        "create",
        "--summary",
        "--label",
        "My summary",
        "--expires",
        "1d",
    ]);
    let link = made["link"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{}/#shlink:/", relay.url)),
        "{link}"
    );
    let ktc = node(&["ktc-resolve", link, "KTC viewer, ED"]);
    assert_eq!(ktc["ok"], true, "{ktc}");
    assert_eq!(ktc["label"], "My summary");
    let ours = vault_opens(&patient, dir.path(), link, None);
    assert_eq!(ours["type"], "document");
    assert_eq!(ours["entry"][0]["resource"]["resourceType"], "Composition");
    assert_eq!(
        ktc["fhirResources"],
        serde_json::json!([ours]),
        "the same bundle"
    );

    // 1b. The same summary as a direct-file link (flag U): one GET, no
    // manifest. Both readers get the same document; U with a passcode is
    // refused before anything is stored.
    let made = patient.json(&["link", "create", "--summary", "--direct"]);
    let ulink = made["link"].as_str().unwrap();
    let ktc = node(&["ktc-resolve", ulink, "KTC viewer, U"]);
    assert_eq!(ktc["ok"], true, "{ktc}");
    assert_eq!(ktc["flag"], "U", "{ktc}");
    let ours_u = vault_opens(&patient, dir.path(), ulink, None);
    assert_eq!(ours_u["type"], "document");
    assert_eq!(ktc["fhirResources"], serde_json::json!([ours_u]));
    let listed = patient.json(&["link", "list"]);
    let before = listed.as_array().unwrap().len();
    let r = patient.run(&["link", "create", "--summary", "--direct", "--passcode"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
    assert_eq!(
        patient.json(&["link", "list"]).as_array().unwrap().len(),
        before
    );

    // 2. A collection link with a passcode.
    let pass = dir.path().join("passcode.txt");
    std::fs::write(&pass, "4711-lemon\n").unwrap();
    let made = patient.json(&[
        "link",
        "create",
        "--collection",
        "conditions",
        "--passcode-file",
        pass.to_str().unwrap(),
        "--max-attempts",
        "5",
    ]);
    let plink = made["link"].as_str().unwrap();
    let handle = made["handle"].as_str().unwrap();
    let ours = vault_opens(&patient, dir.path(), plink, Some(&pass));
    assert_eq!(ours["type"], "collection");
    let ktc = node(&["ktc-resolve", plink, "KTC viewer", "4711-lemon"]);
    assert_eq!(ktc["ok"], true, "{ktc}");
    assert_eq!(ktc["fhirResources"], serde_json::json!([ours]));
    // Without the passcode, and with a wrong one.
    let ktc = node(&["ktc-resolve", plink, "KTC viewer"]);
    assert_eq!(ktc["error"], "SHLInvalidPasscodeError", "{ktc}");
    let ktc = node(&["ktc-resolve", plink, "Mallory", "1234-guess"]);
    assert_eq!(ktc["error"], "SHLInvalidPasscodeError", "{ktc}");
    let payload = vault_shl::Payload::parse(plink).unwrap();
    let raw = node(&["raw-manifest", &payload.url, "Mallory", "0000-guess"]);
    assert_eq!(raw["status"], 401);
    assert_eq!(raw["body"]["remainingAttempts"], 3, "{raw}");
    // The owner sees who asked.
    let log = patient.json(&["link", "log", handle]);
    let seen: Vec<(&str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["recipient"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("vault viewer", "manifest"),
            ("KTC viewer", "manifest"),
            ("Mallory", "wrong_passcode"),
            ("Mallory", "wrong_passcode")
        ]
    );
    // Brute force stops at the limit: 3 more wrong ones, then 404 even for
    // the right passcode.
    for left in [2, 1, 0] {
        let raw = node(&["raw-manifest", &payload.url, "Mallory", "9999-guess"]);
        assert_eq!(raw["body"]["remainingAttempts"], left, "{raw}");
    }
    let ktc = node(&["ktc-resolve", plink, "KTC viewer", "4711-lemon"]);
    assert_eq!(ktc["error"], "SHLManifestNotFoundError", "{ktc}");

    // 3. An expired link: made to expire two seconds from now (by the
    // relay's clock, the same system clock), read after that.
    let owner = principal(42, "Expiring owner", Role::Patient);
    let client = relay.client(&owner);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(client.publish_identity()).unwrap();
    let exp = vault_client::system_now() + 2;
    let file = vault_client::links::ShareFile::fhir(
        &serde_json::json!({"resourceType": "Bundle", "type": "collection"}),
    )
    .unwrap();
    let options = vault_client::links::LinkOptions {
        expires_at: Some(exp),
        ..Default::default()
    };
    let expiring = rt
        .block_on(vault_client::links::create(&client, &[file], &options))
        .unwrap();
    let ktc = node(&["ktc-resolve", &expiring.viewer_link, "KTC viewer"]);
    assert_eq!(ktc["ok"], true, "before its expiry: {ktc}");
    while vault_client::system_now() <= exp {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let ktc = node(&["ktc-resolve", &expiring.viewer_link, "KTC viewer"]);
    assert_eq!(ktc["error"], "SHLExpiredError", "{ktc}");
    // Past the viewer's own check, the relay answers 404.
    let ktc = node(&["ktc-manifest", &expiring.viewer_link, "KTC viewer"]);
    assert_eq!(ktc["error"], "SHLManifestNotFoundError", "{ktc}");

    // 4. A revoked link.
    patient.ok(&["link", "revoke", link]);
    let ktc = node(&["ktc-resolve", link, "KTC viewer"]);
    assert_eq!(ktc["error"], "SHLManifestNotFoundError", "{ktc}");
    let r = patient.run(&["link", "open", link, "--recipient", "vault viewer"]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("no longer active"), "{}", r.stderr);
}
