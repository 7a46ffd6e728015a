//! A 256 MiB record streams through the real relay with bounded memory on
//! both sides: sealed to a spool file, uploaded in chunks, downloaded into
//! another device's store and opened, while neither the relay process nor
//! this test process (the clients) ever holds more than a small fraction of
//! it in memory. Its own test binary, so the peak memory measured here is
//! this test's alone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};

use vault_client::sync;
use vault_core::store::{SqliteStore, Store};
use vault_core::{Keyring, Permission, RecordInfo, Role, VaultState};
use vault_tests::{peak_rss_of, principal, RelayProcess};

const BODY_LEN: u64 = 256 << 20;
const MIB: u64 = 1 << 20;

/// Checks every plaintext byte without keeping any.
struct Check {
    len: u64,
    bad: u64,
}

impl Write for Check {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bad += buf.iter().filter(|b| **b != 0x5a).count() as u64;
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_record_streams_through_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let patient = principal(1, "Pat Patient", Role::Patient);
    let radiologist = principal(2, "Dr Rad", Role::Clinician);
    let pc = relay.client(&patient).with_chunk_size(8 << 20);
    let rc = relay.client(&radiologist);
    pc.publish_identity().await.unwrap();
    rc.publish_identity().await.unwrap();

    let mut pstore = SqliteStore::open(dir.path().join("patient")).unwrap();
    let (_, genesis) = VaultState::create(&patient, pc.now()).unwrap();
    let vault = genesis.vault();
    sync::create_vault(&mut pstore, &pc, &genesis)
        .await
        .unwrap();
    let mut imaging = None;
    sync::push_with_retry(&mut pstore, &pc, &vault, |s| {
        let (id, e) = s.create_collection(&patient, "imaging", pc.now())?;
        imaging = Some(id);
        let mut kr = Keyring::new(&patient, pc.now());
        let mut next = s.clone();
        next.apply(&e)?;
        let share =
            next.share_collection(&mut kr, &id, radiologist.public(), Permission::Read, None)?;
        Ok(vec![e, share])
    })
    .await
    .unwrap();
    let imaging = imaging.unwrap();

    // Seal 256 MiB to a spool file, upload it, append its record-put.
    let mut spool = tempfile::tempfile().unwrap();
    let (state, metadata) = sync::push_record(&mut pstore, &pc, &vault, &mut spool, |s, out| {
        let mut kr = Keyring::new(&patient, pc.now());
        let info = RecordInfo {
            content_type: "application/dicom".into(),
            title: "CT thorax".into(),
            created_at: pc.now(),
            effective_at: None,
        };
        Ok(s.put_record(
            &mut kr,
            &imaging,
            None,
            &info,
            vault_core::RecordBody::new(std::io::repeat(0x5a).take(BODY_LEN), BODY_LEN),
            out,
        )?)
    })
    .await
    .unwrap();
    assert!(metadata.ciphertext_len() > BODY_LEN);
    drop(spool);

    // The radiologist's device downloads it into its store and opens it.
    let mut rstore = SqliteStore::open(dir.path().join("radiologist")).unwrap();
    let rstate = sync::join_vault(&mut rstore, &rc, &vault, &patient.fingerprint())
        .await
        .unwrap();
    assert_eq!(rstate.head(), state.head());
    let record = rstate.record(&metadata.record()).unwrap();
    let mut spool = tempfile::tempfile().unwrap();
    sync::fetch_record_blob(&mut rstore, &rc, &record, &mut spool)
        .await
        .unwrap();
    drop(spool);
    let mut check = Check { len: 0, bad: 0 };
    let opened = {
        let blob = rstore
            .open_blob(metadata.ciphertext_hash())
            .unwrap()
            .unwrap();
        Keyring::new(&radiologist, rc.now())
            .open(&rstate, &record, blob, &mut check)
            .unwrap()
    };
    assert_eq!(opened.body_len, BODY_LEN);
    assert_eq!((check.len, check.bad), (BODY_LEN, 0));

    // Memory stayed bounded on both sides: far below the blob's size.
    let relay_peak = relay.peak_rss().unwrap();
    let client_peak = peak_rss_of("/proc/self/status").unwrap();
    println!(
        "peak memory: relay {} MiB, clients {} MiB, for a {} MiB blob",
        relay_peak / MIB,
        client_peak / MIB,
        metadata.ciphertext_len() / MIB
    );
    assert!(relay_peak < 96 * MIB, "relay peak {relay_peak} bytes");
    assert!(client_peak < 128 * MIB, "client peak {client_peak} bytes");
}
