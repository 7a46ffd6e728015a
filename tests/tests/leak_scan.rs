//! A leaked relay reveals nothing: every Synthea patient in
//! `../shared/fhir-samples/` is imported through the real `vault` binary
//! (plus a PDF and a note naming the patient), then every byte the relay
//! wrote (database, WAL, blob files, its debug log, an online backup) is
//! scanned for each patient's names, identifiers, birth date, address,
//! clinical codes and display texts, record titles and FHIR resource type
//! names. There must be no hit. Also reports how many distinct ciphertext
//! sizes the records fall into (padding).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use vault_tests::{files_below, relay_binary, CliProfile, RelayProcess};

fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fhir-samples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

/// Shortest needle searched for: shorter strings (a 5-digit code, "male")
/// occur by chance in megabytes of ciphertext and say nothing.
const MIN_NEEDLE: usize = 7;

fn add(needles: &mut BTreeSet<String>, s: &str) {
    let s = s.trim();
    if s.len() >= MIN_NEEDLE {
        needles.insert(s.to_owned());
    }
}

/// Everything sensitive in one bundle.
fn needles_of(bundle: &Value) -> BTreeSet<String> {
    let mut n = BTreeSet::new();
    for e in bundle["entry"].as_array().unwrap() {
        let r = &e["resource"];
        let rt = r["resourceType"].as_str().unwrap();
        add(&mut n, rt);
        if rt == "Patient" {
            for name in r["name"].as_array().into_iter().flatten() {
                add(&mut n, name["family"].as_str().unwrap_or(""));
                for g in name["given"].as_array().into_iter().flatten() {
                    add(&mut n, g.as_str().unwrap_or(""));
                }
            }
            for id in r["identifier"].as_array().into_iter().flatten() {
                add(&mut n, id["value"].as_str().unwrap_or(""));
            }
            add(&mut n, r["birthDate"].as_str().unwrap_or(""));
            for a in r["address"].as_array().into_iter().flatten() {
                for l in a["line"].as_array().into_iter().flatten() {
                    add(&mut n, l.as_str().unwrap_or(""));
                }
                add(&mut n, a["city"].as_str().unwrap_or(""));
                add(&mut n, a["postalCode"].as_str().unwrap_or(""));
            }
            for t in r["telecom"].as_array().into_iter().flatten() {
                add(&mut n, t["value"].as_str().unwrap_or(""));
            }
        }
        // Codes (SNOMED, LOINC, RxNorm...) and their display texts.
        collect_codings(r, &mut n);
    }
    n
}

fn collect_codings(v: &Value, n: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            if let (Some(code), Some(_system)) = (o.get("code"), o.get("system")) {
                add(n, code.as_str().unwrap_or(""));
                if let Some(d) = o.get("display").and_then(Value::as_str) {
                    add(n, d);
                }
            }
            if let Some(t) = o.get("text").and_then(Value::as_str) {
                add(n, t);
            }
            for x in o.values() {
                collect_codings(x, n);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_codings(x, n)),
        _ => {}
    }
}

/// Whether `haystack` (ASCII-lowercased text) contains `needle`,
/// ASCII-case-insensitively (`str::contains` is a fast two-way search).
fn contains(haystack: &str, needle: &str) -> bool {
    haystack.contains(&needle.to_ascii_lowercase())
}

/// Bytes as lowercased text for searching (invalid UTF-8 becomes U+FFFD,
/// which no needle contains).
fn searchable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes.to_ascii_lowercase()).into_owned()
}

/// Every byte an empty relay writes (database, log, a backup), searchable.
fn baseline_bytes(dir: &Path) -> String {
    let data = dir.join("empty-relay");
    let mut relay = RelayProcess::start(&data, &["--log", "debug"]);
    assert!(relay.stop());
    let backup = dir.join("empty.backup");
    let out = std::process::Command::new(relay_binary())
        .args(["--data-dir", data.to_str().unwrap(), "backup", "--output"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut files = files_below(&data);
    files.push(data.with_extension("log"));
    files.push(backup);
    let mut all = Vec::new();
    for f in files {
        all.extend(std::fs::read(f).unwrap_or_default());
        all.push(0);
    }
    searchable(&all)
}

#[test]
fn a_leaked_relay_reveals_no_patient_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let relay = RelayProcess::start(&data, &["--log", "debug"]);
    let mut needles: BTreeSet<String> = BTreeSet::new();
    let mut titles: BTreeSet<String> = BTreeSet::new();
    let mut records = 0usize;
    for (i, sample) in samples().iter().enumerate() {
        let bundle: Value = serde_json::from_slice(&std::fs::read(sample).unwrap()).unwrap();
        needles.extend(needles_of(&bundle));
        let patient = CliProfile::new(&dir.path().join(format!("p{i}")), &relay.url);
        let name = sample
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .rsplit_once('_')
            .unwrap()
            .0
            .replace('_', " ");
        patient.init(&name, "patient");
        patient.json(&["create"]);
        patient.json(&["import", sample.to_str().unwrap()]);
        // A PDF and a note that name the patient, titled with their name.
        let pdf = dir.path().join(format!("letter-{i}.pdf"));
        std::fs::write(
            &pdf,
            format!("%PDF-1.4\n% Discharge letter for {name}, confidential\n%%EOF\n"),
        )
        .unwrap();
        let title = format!("Discharge letter {name}");
        patient.json(&[
            "add",
            pdf.to_str().unwrap(),
            "-c",
            "documents",
            "--title",
            &title,
        ]);
        titles.insert(title);
        let r = patient.run_with_stdin(
            &[
                "add",
                "-",
                "-c",
                "notes",
                "--title",
                &format!("Note about {name}"),
            ],
            format!("{name} reports feeling better; follow up in two weeks.").as_bytes(),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        titles.insert(format!("Note about {name}"));
        needles.insert(name.clone());
        let listed = patient.json(&["list"]);
        for rec in listed.as_array().unwrap() {
            titles.insert(rec["title"].as_str().unwrap().to_owned());
        }
        records += listed.as_array().unwrap().len();
        // Collection names are sealed too.
        for c in ["conditions", "medications", "immunizations", "encounters"] {
            needles.insert(c.to_owned());
        }
    }
    for t in &titles {
        add(&mut needles, t);
    }
    // "Patient" is what every patient's identity is published as (their
    // name stays on their device), so the relay does see that word.
    needles.remove("Patient");
    // Words the relay writes whatever its data (SQLite's schema says
    // "PRIMARY KEY") are measured on an empty relay and left out.
    let software = baseline_bytes(dir.path());
    let vocabulary: Vec<String> = needles
        .iter()
        .filter(|n| contains(&software, n))
        .cloned()
        .collect();
    for v in &vocabulary {
        needles.remove(v);
    }

    // An online backup, like an operator would keep.
    let backup = dir.path().join("relay.backup");
    let out = std::process::Command::new(relay_binary())
        .args(["--data-dir", data.to_str().unwrap(), "backup", "--output"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every byte the relay wrote.
    let mut files = files_below(&data);
    files.push(data.with_extension("log"));
    files.push(backup);
    let mut hits: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut scanned = 0u64;
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        scanned += bytes.len() as u64;
        let lower = searchable(&bytes);
        for n in &needles {
            if contains(&lower, n) {
                hits.entry(n.clone())
                    .or_default()
                    .push(f.display().to_string());
            }
        }
    }

    // Padding: the distinct ciphertext sizes the relay saw.
    let db = rusqlite::Connection::open_with_flags(
        data.join("relay.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let sizes: Vec<i64> = db
        .prepare("SELECT len FROM blobs")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let distinct: BTreeSet<i64> = sizes.iter().copied().collect();
    println!(
        "leak scan: {} patients, {records} records, {} needles ({} words an empty relay also writes left out: {vocabulary:?}), {} files, {scanned} bytes scanned, {} hits; \
         {} blobs in {} distinct sizes (smallest {}, largest {})",
        samples().len(),
        needles.len(),
        vocabulary.len(),
        files.len(),
        hits.len(),
        sizes.len(),
        distinct.len(),
        distinct.first().unwrap(),
        distinct.last().unwrap()
    );
    assert!(
        hits.is_empty(),
        "plaintext found on the relay: {:?}\n{hits:#?}",
        hits.keys().collect::<Vec<_>>()
    );
    assert!(needles.len() > 500, "the scan must look for something");
    assert!(vocabulary.len() < 10, "too much left out: {vocabulary:?}");
    assert_eq!(sizes.len(), records);
    assert!(
        distinct.len() * 20 < sizes.len(),
        "{} records in {} sizes: padding leaks too much",
        sizes.len(),
        distinct.len()
    );
    drop(relay);
}
