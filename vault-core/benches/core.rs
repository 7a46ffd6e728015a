#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! vault-core benchmarks: seal and open beside raw ChaCha20-Poly1305 on the
//! same buffer, small records, grants and revocation.
//!
//! `cargo bench -p vault-core --bench core` runs the criterion groups, then
//! prints a summary of throughput ratios against raw ChaCha20-Poly1305
//! measured in the same run (targets: seal ≥ 0.9×, open ≥ 0.85×).

use std::hint::black_box;
use std::time::Duration;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

mod common;
use common::{identity, info, median, NOW};
use vault_core::address::{AddressKind, EitherHasher};
use vault_core::{
    CollectionId, Keyring, LogEntry, Permission, RecordId, Role, SecretIdentity, VaultState,
};

const MIB: usize = 1024 * 1024;

/// A vault with one collection.
struct Bench {
    owner: SecretIdentity,
    state: VaultState,
    coll: CollectionId,
}

impl Bench {
    fn new() -> Self {
        let owner = identity(1, Role::Patient);
        let (mut state, _) = VaultState::create(&owner, NOW).expect("vault");
        let (coll, e) = state
            .create_collection(&owner, "bench", NOW)
            .expect("collection");
        state.apply(&e).expect("apply");
        Self { owner, state, coll }
    }

    fn seal(&self, keyring: &mut Keyring, body: &[u8], out: &mut Vec<u8>) -> LogEntry {
        out.clear();
        self.state
            .put_record(
                keyring,
                &self.coll,
                None,
                &info(),
                vault_core::RecordBody::new(body, body.len() as u64),
                out,
            )
            .expect("seal")
            .1
    }

    fn put(&mut self, body: &[u8]) -> (RecordId, Vec<u8>) {
        let mut ct = Vec::new();
        let mut keyring = Keyring::new(&self.owner, NOW);
        let e = self.seal(&mut keyring, body, &mut ct);
        self.state.apply(&e).expect("apply");
        let vault_core::EntryBody::RecordPut { metadata } = e.body() else {
            unreachable!("put_record returns a RecordPut")
        };
        (metadata.record(), ct)
    }
}

fn raw_encrypt(cipher: &ChaCha20Poly1305, buf: &mut [u8]) {
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&[0; 12]), &[], buf)
        .expect("raw encrypt");
    black_box(tag);
}

fn seal_open(c: &mut Criterion) {
    let mut b = Bench::new();
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[7; 32]));
    for size in [MIB, 100 * MIB] {
        let body = vec![0x5au8; size];
        let (record, ct) = b.put(&body);
        let mut group = c.benchmark_group(format!("payload_{}MiB", size / MIB));
        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(10);
        let mut out = Vec::with_capacity(size + size / 8);
        group.bench_function("seal", |bch| {
            let mut keyring = Keyring::new(&b.owner, NOW);
            bch.iter(|| b.seal(&mut keyring, &body, &mut out))
        });
        group.bench_function("open", |bch| {
            let mut keyring = Keyring::new(&b.owner, NOW);
            let verified = b.state.record(&record).expect("record");
            bch.iter(|| {
                keyring
                    .open(&b.state, &verified, ct.as_slice(), std::io::sink())
                    .expect("open")
            })
        });
        let mut raw = body.clone();
        group.bench_function("raw_chacha20poly1305", |bch| {
            bch.iter(|| raw_encrypt(&cipher, &mut raw))
        });
        group.finish();
    }
}

fn small_records(c: &mut Criterion) {
    let b = Bench::new();
    let mut group = c.benchmark_group("seal_record");
    for size in [4 * 1024, 50 * 1024] {
        let body = vec![1u8; size];
        let mut out = Vec::new();
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}KiB", size / 1024)),
            &body,
            |bch, body| {
                let mut keyring = Keyring::new(&b.owner, NOW);
                bch.iter(|| b.seal(&mut keyring, body, &mut out))
            },
        );
    }
    group.finish();
}

fn grants(c: &mut Criterion) {
    let mut b = Bench::new();
    let member = identity(2, Role::Clinician);
    c.bench_function("grant_one_member", |bch| {
        let mut keyring = Keyring::new(&b.owner, NOW);
        bch.iter(|| {
            b.state
                .share_collection(
                    &mut keyring,
                    &b.coll,
                    member.public(),
                    Permission::Read,
                    None,
                )
                .expect("grant")
        })
    });
    // The same grant made by an agent of the owner who may share (a
    // version-3 grant, docs/format.md §8.10).
    let agent = identity(4, Role::Patient);
    let mut keyring = Keyring::new(&b.owner, NOW);
    let (_, e) = b
        .state
        .name_agent(
            &mut keyring,
            &b.coll,
            agent.public(),
            vault_core::Powers::new(false, true, false),
            None,
            None,
        )
        .expect("name agent");
    b.state.apply(&e).expect("apply");
    c.bench_function("grant_one_member_by_an_agent", |bch| {
        let mut keyring = Keyring::new(&agent, NOW);
        bch.iter(|| {
            b.state
                .share_collection(
                    &mut keyring,
                    &b.coll,
                    member.public(),
                    Permission::Read,
                    None,
                )
                .expect("grant")
        })
    });
}

/// A person's device list of five devices (docs/format.md §3.7): the cost
/// of a version removing one (a new generation: six age boxes and a
/// signature), and of accepting and opening a version.
fn device_lists(c: &mut Criterion) {
    use vault_core::devices::DeviceList;
    let root = identity(1, Role::Patient);
    let devices: Vec<SecretIdentity> = (20..25).map(|s| identity(s, Role::Device)).collect();
    let publics: Vec<_> = devices.iter().map(|d| d.public().clone()).collect();
    let (list, _) = DeviceList::first(&root, &publics, NOW).expect("list");
    let keys = list.open(&devices[0]).expect("open");
    let mut group = c.benchmark_group("device_list_of_5");
    group.bench_function("remove_one", |bch| {
        bch.iter(|| {
            list.next(&devices[0], &keys, &[], &[devices[4].fingerprint()], NOW)
                .expect("next")
        })
    });
    let (next, _) = list
        .next(&devices[0], &keys, &[], &[devices[4].fingerprint()], NOW)
        .expect("next");
    group.bench_function("accept_and_open", |bch| {
        bch.iter(|| {
            next.accept(root.public(), Some(&list)).expect("accept");
            next.open(&devices[1]).expect("open")
        })
    });
    group.finish();
}

/// A collection of 10,000 records shared with two members.
fn big_collection() -> (Bench, SecretIdentity) {
    let mut b = Bench::new();
    let member = identity(2, Role::Clinician);
    let other = identity(3, Role::Clinician);
    for m in [&member, &other] {
        let mut keyring = Keyring::new(&b.owner, NOW);
        let e = b
            .state
            .share_collection(&mut keyring, &b.coll, m.public(), Permission::Read, None)
            .expect("share");
        b.state.apply(&e).expect("apply");
    }
    for _ in 0..10_000 {
        b.put(b"tiny");
    }
    (b, member)
}

fn revocation(c: &mut Criterion) {
    let (b, member) = big_collection();
    let mut group = c.benchmark_group("revoke");
    group.sample_size(10);
    group.bench_function("10000_records", |bch| {
        bch.iter(|| {
            let mut keyring = Keyring::new(&b.owner, NOW);
            b.state
                .revoke(&mut keyring, &b.coll, &[member.fingerprint()])
                .expect("revoke")
        })
    });
    group.finish();
}

/// Removing one of the owner's five devices from a vault of 10,000
/// records (docs/format.md §8.11): the list's next version (a new
/// generation), its devices-listed entry, and the rotation that seals the
/// owner's new grant to the new generation, all by a remaining device.
fn device_revocation(c: &mut Criterion) {
    use vault_core::devices::DeviceList;
    let (mut b, _) = big_collection();
    let devices: Vec<SecretIdentity> = (20..25).map(|s| identity(s, Role::Device)).collect();
    let publics: Vec<_> = devices.iter().map(|d| d.public().clone()).collect();
    let (v1, _) = DeviceList::first(&b.owner, &publics, NOW).expect("list");
    let e = b
        .state
        .list_devices(&b.owner, std::slice::from_ref(&v1), NOW)
        .expect("listed");
    b.state.apply(&e).expect("apply");
    // Devices never hold the root's own key: listing them rotates the
    // collection to generation 1 (vault-client's plan_listing).
    let e = b
        .state
        .revoke(&mut Keyring::new(&b.owner, NOW), &b.coll, &[])
        .expect("rotation");
    b.state.apply(&e).expect("apply");
    let keys = v1.open(&devices[0]).expect("open");
    let lost = devices[4].fingerprint();
    let (v2, mut keys2) = v1
        .next(&devices[0], &keys, &[], &[lost], NOW)
        .expect("next");
    keys2.walk_back(&v1).expect("walk back");
    let mut after = b.state.clone();
    let e = after
        .list_devices(&devices[0], std::slice::from_ref(&v2), NOW)
        .expect("listed");
    after.apply(&e).expect("apply");
    let mut group = c.benchmark_group("revoke");
    group.sample_size(10);
    group.bench_function("one_device_of_5_10000_records", |bch| {
        bch.iter(|| {
            let (next, mut k) = v1
                .next(&devices[0], &keys, &[], &[lost], NOW)
                .expect("next");
            k.walk_back(&v1).expect("walk back");
            let listed = b
                .state
                .list_devices(&devices[0], std::slice::from_ref(&next), NOW)
                .expect("listed");
            // The rotation is built on the state after the listing (its
            // cost does not depend on which new generation it is).
            let mut keyring = Keyring::for_device(&devices[0], &keys2, NOW);
            let rotation = after.revoke(&mut keyring, &b.coll, &[]).expect("rotation");
            (listed, rotation)
        })
    });
    group.finish();
}

/// A member with five devices (docs/format.md §8.12): the grant of a
/// collection to the member once the collection carries the member's list
/// (one grant to the member's generation key, however many devices), and
/// removing one of the five from a collection of 10,000 records: the
/// list's next version by a remaining device, its member-devices-listed
/// entry, and the owner's rotation moving the member's grant to the new
/// generation.
fn member_devices(c: &mut Criterion) {
    use vault_core::devices::DeviceList;
    let (mut b, _) = big_collection();
    let member = identity(4, Role::Clinician);
    let devices: Vec<SecretIdentity> = (30..35).map(|s| identity(s, Role::Device)).collect();
    let publics: Vec<_> = devices.iter().map(|d| d.public().clone()).collect();
    let (v1, _) = DeviceList::first(&member, &publics, NOW).expect("list");
    let e = b
        .state
        .list_member_devices(
            &b.owner,
            &b.coll,
            member.public(),
            std::slice::from_ref(&v1),
            NOW,
        )
        .expect("listed");
    b.state.apply(&e).expect("apply");
    c.bench_function("grant_one_member_of_5_devices", |bch| {
        let mut keyring = Keyring::new(&b.owner, NOW);
        bch.iter(|| {
            b.state
                .share_collection(
                    &mut keyring,
                    &b.coll,
                    member.public(),
                    Permission::Read,
                    None,
                )
                .expect("grant")
        })
    });
    let mut keyring = Keyring::new(&b.owner, NOW);
    let e = b
        .state
        .share_collection(
            &mut keyring,
            &b.coll,
            member.public(),
            Permission::Read,
            None,
        )
        .expect("grant");
    b.state.apply(&e).expect("apply");
    let keys = v1.open(&devices[0]).expect("open");
    let lost = devices[4].fingerprint();
    let (v2, _) = v1
        .next(&devices[0], &keys, &[], &[lost], NOW)
        .expect("next");
    let mut after = b.state.clone();
    let e = after
        .list_member_devices(
            &devices[0],
            &b.coll,
            member.public(),
            std::slice::from_ref(&v2),
            NOW,
        )
        .expect("listed");
    after.apply(&e).expect("apply");
    let mut group = c.benchmark_group("revoke");
    group.sample_size(10);
    group.bench_function("one_member_device_of_5_10000_records", |bch| {
        bch.iter(|| {
            let (next, _) = v1
                .next(&devices[0], &keys, &[], &[lost], NOW)
                .expect("next");
            let listed = b
                .state
                .list_member_devices(
                    &devices[0],
                    &b.coll,
                    member.public(),
                    std::slice::from_ref(&next),
                    NOW,
                )
                .expect("listed");
            // The owner's rotation on the state after the listing.
            let mut keyring = Keyring::new(&b.owner, NOW);
            let rotation = after.revoke(&mut keyring, &b.coll, &[]).expect("rotation");
            (listed, rotation)
        })
    });
    group.finish();
}

/// Prints seal/open throughput as a ratio of raw ChaCha20-Poly1305 on the
/// same buffer, measured now, in this process.
fn summary() {
    let mut b = Bench::new();
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[7; 32]));
    println!("\nsummary (medians; ratio = raw time / vault time, higher is better)");
    for (size, runs) in [(MIB, 101), (100 * MIB, 11)] {
        let body = vec![0x5au8; size];
        let (record, ct) = b.put(&body);
        let mut raw = body.clone();
        let mut out = Vec::with_capacity(size + size / 8);
        let mut keyring = Keyring::new(&b.owner, NOW);
        let raw_t = median(runs, || raw_encrypt(&cipher, &mut raw));
        let seal_t = median(runs, || {
            b.seal(&mut keyring, &body, &mut out);
        });
        let verified = b.state.record(&record).expect("record");
        let open_t = median(runs, || {
            keyring
                .open(&b.state, &verified, ct.as_slice(), std::io::sink())
                .expect("open");
        });
        let gbs = |d: Duration| size as f64 / d.as_secs_f64() / 1e9;
        println!(
            "{:>4} MiB  raw {:.2} GB/s  seal {:.2} GB/s ({:.2}x raw, target >= 0.90)  open {:.2} GB/s ({:.2}x raw, target >= 0.85)",
            size / MIB,
            gbs(raw_t),
            gbs(seal_t),
            raw_t.as_secs_f64() / seal_t.as_secs_f64(),
            gbs(open_t),
            raw_t.as_secs_f64() / open_t.as_secs_f64(),
        );
        // The content address alone (§6.3): each kind, and both at once as
        // the relay checks an upload whose kind it does not know.
        let sha_t = median(runs, || {
            black_box(AddressKind::Sha256.digest(&ct));
        });
        let b3_t = median(runs, || {
            black_box(AddressKind::Blake3.digest(&ct));
        });
        let either_t = median(runs, || {
            let mut h = EitherHasher::default();
            h.update(&ct);
            black_box(h.matches(&[0; 32]));
        });
        println!(
            "{:>4} MiB  address: SHA-256 {:.2} GB/s ({:.2}x raw's time), BLAKE3 {:.2} GB/s ({:.2}x), both (the relay's upload check) {:.2} GB/s",
            size / MIB,
            gbs(sha_t),
            sha_t.as_secs_f64() / raw_t.as_secs_f64(),
            gbs(b3_t),
            b3_t.as_secs_f64() / raw_t.as_secs_f64(),
            gbs(either_t),
        );
    }
    let (b, member) = big_collection();
    let revoke_t = median(11, || {
        let mut keyring = Keyring::new(&b.owner, NOW);
        black_box(
            b.state
                .revoke(&mut keyring, &b.coll, &[member.fingerprint()])
                .expect("revoke"),
        );
    });
    println!(
        "revoke 1 of 3 members, 10,000 records: {:.1} ms (target <= 100 ms)",
        revoke_t.as_secs_f64() * 1e3
    );
    deposits_summary(revoke_t);
}

/// A write-only depositor's record beside a member's (HPKE to the deposit
/// key vs a symmetric wrap), and the first revocation of a collection of
/// 10,000 deposits (each data key opened with an X25519 agreement, then
/// re-wrapped symmetrically) beside that of 10,000 wrapped records.
fn deposits_summary(revoke_wrapped: Duration) {
    let mut b = Bench::new();
    let gateway = identity(4, Role::Clinician);
    let writer = identity(5, Role::Clinician);
    for (m, p) in [
        (&gateway, Permission::Deposit),
        (&writer, Permission::ReadWrite),
    ] {
        let mut keyring = Keyring::new(&b.owner, NOW);
        let e = b
            .state
            .share_collection(&mut keyring, &b.coll, m.public(), p, None)
            .expect("share");
        b.state.apply(&e).expect("apply");
    }
    let body = vec![1u8; 4 * 1024];
    let mut out = Vec::new();
    let mut as_writer = Keyring::new(&writer, NOW);
    let wrapped_t = median(201, || {
        b.seal(&mut as_writer, &body, &mut out);
    });
    let mut as_gateway = Keyring::new(&gateway, NOW);
    let deposit_t = median(201, || {
        b.seal(&mut as_gateway, &body, &mut out);
    });
    println!(
        "4 KiB record: member {:.1} us, depositor {:.1} us ({:.2}x)",
        wrapped_t.as_secs_f64() * 1e6,
        deposit_t.as_secs_f64() * 1e6,
        deposit_t.as_secs_f64() / wrapped_t.as_secs_f64()
    );
    for _ in 0..10_000 {
        let e = b.seal(&mut as_gateway, b"tiny", &mut out);
        b.state.apply(&e).expect("apply");
    }
    let revoke_t = median(5, || {
        let mut keyring = Keyring::new(&b.owner, NOW);
        black_box(
            b.state
                .revoke(&mut keyring, &b.coll, &[writer.fingerprint()])
                .expect("revoke"),
        );
    });
    println!(
        "first revocation over 10,000 deposits: {:.1} ms ({:.2}x the 10,000 wrapped records above)",
        revoke_t.as_secs_f64() * 1e3,
        revoke_t.as_secs_f64() / revoke_wrapped.as_secs_f64()
    );
}

criterion_group!(
    benches,
    seal_open,
    small_records,
    grants,
    device_lists,
    revocation,
    device_revocation,
    member_devices
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
