//! Backup and restore of the cluster (issue 15, decision 54), against the
//! real PostgreSQL, SeaweedFS and haproxy of `scripts/cluster` and the real
//! `vault` command: a backup taken while the relays serve, the region
//! lost, a new cluster restored from the backup (every log and blob
//! verified before a relay starts), and the patient's device repairing
//! what the backup missed. A damaged backup is refused and leaves nothing
//! to serve; a restore never overwrites a database in use.
//!
//! Needs PostgreSQL, SeaweedFS and haproxy (`scripts/services install`)
//! and a relay-server built with the `postgres` and `s3` features.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;
use std::process::{Command, Output};

use vault_tests::cluster::Cluster;
use vault_tests::{relay_binary, CliProfile};

/// `psql` on the cluster's database server.
fn psql(c: &Cluster, database: &str, sql: &str) -> String {
    let password = std::fs::read_to_string(c.dir().join("pg/password")).unwrap();
    let out = Command::new(Path::new(&c.setting("PG_BIN")).join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &c.setting("PG_PORT"),
            "-U",
            "vault",
        ])
        .args(["-d", database, "-qtAc", sql])
        .env("PGPASSWORD", password.trim())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `relay-server restore` of `backup` into `database` of the cluster's
/// server, blobs under `prefix` in its bucket.
fn restore_into(c: &Cluster, database: &str, prefix: &str, backup: &Path) -> Output {
    let password = std::fs::read_to_string(c.dir().join("pg/password")).unwrap();
    let work = tempfile::tempdir().unwrap();
    Command::new(relay_binary())
        .args(["restore", "--input", backup.to_str().unwrap()])
        .arg("--data-dir")
        .arg(work.path())
        .arg("--blobs")
        .arg(format!(
            "s3://vault/{prefix}?endpoint=http://127.0.0.1:{}&region=us-east-1",
            c.setting("S3_PORT")
        ))
        .arg("--blobs-credentials")
        .arg(c.dir().join("weed/credentials"))
        .env(
            "RELAY_DATABASE",
            format!(
                "postgres://vault:{}@127.0.0.1:{}/{database}",
                password.trim(),
                c.setting("PG_PORT")
            ),
        )
        .env("RELAY_PG_BIN", c.setting("PG_BIN"))
        .output()
        .unwrap()
}

/// A copy of `backup` without its first blob.
fn copy_without_a_blob(backup: &Path, to: &Path) {
    let mut archive = tar::Archive::new(std::fs::File::open(backup).unwrap());
    let mut out = tar::Builder::new(std::fs::File::create(to).unwrap());
    let mut skipped = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !skipped && entry.path().unwrap().starts_with("blobs") {
            skipped = true;
            continue;
        }
        let mut header = entry.header().clone();
        let path = entry.path().unwrap().into_owned();
        out.append_data(&mut header, path, &mut entry).unwrap();
    }
    assert!(skipped, "the backup holds no blob");
    out.finish().unwrap();
}

/// A copy of `backup` with one byte of its first blob flipped.
fn damaged_copy(backup: &Path, to: &Path) {
    let offset = {
        let mut archive = tar::Archive::new(std::fs::File::open(backup).unwrap());
        archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().starts_with("blobs"))
            .expect("the backup holds no blob")
            .raw_file_position()
    };
    let mut bytes = std::fs::read(backup).unwrap();
    bytes[usize::try_from(offset).unwrap()] ^= 1;
    std::fs::write(to, bytes).unwrap();
}

#[test]
fn a_cluster_restored_from_its_backup_and_repaired_by_a_device_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Cluster::start(&[]);
    let port = a.port();
    let patient = CliProfile::new(&dir.path().join("patient"), &a.url);
    let doc = CliProfile::new(&dir.path().join("doc"), &a.url);
    let p_fp = patient.init("Pat Example", "patient")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    patient.json(&["create"]);
    let d_fp = doc.init("Dr Dee", "clinician")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    doc.ok(&["whoami", "--publish", "--no-qr"]);
    patient.json(&["contacts", "add", "dr", "--lookup", &d_fp]);
    doc.json(&["contacts", "add", "pat", "--lookup", &p_fp]);
    // Records larger than the relay keeps inside the database (256 KiB),
    // so that they live in the object store and travel as blobs in the
    // backup.
    let big = |tag: &str| format!("{tag} {}", "x".repeat(300_000));
    let first = patient.add_lab("Potassium", &big("4.1 mmol/L"));
    patient.json(&["share", "labs", "--with", "dr"]);
    doc.json(&["inbox"]);

    // The nightly backup, taken while the relays serve; then the day goes on.
    let backup = dir.path().join("cluster.tar");
    a.ctl(&["backup", backup.to_str().unwrap()]);
    let second = patient.add_lab("Sodium", &big("140 mmol/L"));
    let third = patient.add_lab("Glucose", "5.1 mmol/L");
    doc.json(&["--vault", "pat", "sync"]);
    let before = patient.checkpoint(&[]);

    // The region is lost: every store and relay with it.
    assert!(a.stop(), "the first cluster did not stop cleanly");
    drop(a);

    // A new cluster restored from the backup, on the address clients use.
    let b = Cluster::start_restored(port, &backup, &[]);
    let restored = std::fs::read_to_string(b.dir().join("logs/restore.log")).unwrap();
    assert!(
        restored.contains("every log and blob verified"),
        "{restored}"
    );

    // The clinician's device sees the rollback; the patient's repairs it.
    let r = doc.run(&["sync"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("rollback"), "{}", r.stderr);
    let repaired = patient.json(&["sync", "--repair"]);
    assert_eq!(repaired[0]["repaired"]["entries"], 2, "{repaired}");
    assert!(repaired[0]["repaired"]["stopped"].is_null(), "{repaired}");
    assert_eq!(patient.checkpoint(&[]), before);
    doc.json(&["sync"]);
    doc.json(&["verify", "--vault", "pat", "--compare", &before]);
    for (record, body) in [
        (&first, big("4.1 mmol/L")),
        (&second, big("140 mmol/L")),
        (&third, "5.1 mmol/L".to_owned()),
    ] {
        assert_eq!(doc.ok(&["open", record, "--vault", "pat"]).trim(), body);
        assert_eq!(patient.ok(&["open", record]).trim(), body);
    }

    // A restore never overwrites a database in use.
    let out = restore_into(&b, "vault", "again", &backup);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already has tables"), "{err}");
    assert_eq!(psql(&b, "vault", "SELECT COUNT(*) FROM vaults"), "1");

    // A damaged backup is refused and leaves its target empty.
    let bad = dir.path().join("damaged.tar");
    damaged_copy(&backup, &bad);
    psql(&b, "postgres", "CREATE DATABASE vault_bad");
    let out = restore_into(&b, "vault_bad", "bad", &bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not hash to its address"), "{err}");
    let tables = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'";
    assert_eq!(psql(&b, "vault_bad", tables), "0");

    // A backup whose database names a blob it lacks is loaded, found
    // incomplete, and dropped again: nothing is left for a relay to serve.
    let short = dir.path().join("incomplete.tar");
    copy_without_a_blob(&backup, &short);
    let out = restore_into(&b, "vault_bad", "short", &short);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing from the backup"), "{err}");
    assert_eq!(psql(&b, "vault_bad", tables), "0");
}
