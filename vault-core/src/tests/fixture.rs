//! Test fixture: a patient's vault with clinicians, built through the public
//! API, with helpers to forge what an attacker could.

use std::collections::HashMap;

use zeroize::Zeroizing;

use crate::error::Error;
use crate::identity::{IdentityInfo, Role, SecretIdentity};
use crate::keys::CollectionKey;
use crate::log::{EntryBody, LogEntry};
use crate::record::{self, OpenedRecord, RecordInfo, RecordMetadata, VerifiedRecord};
use crate::vault::{Keyring, VaultState};
use crate::{CollectionId, Fingerprint, Permission, RecordId};

/// A fixed "now" for tests (2023-11-14).
pub const NOW: u64 = 1_700_000_000;

pub fn identity(seed: u8, name: &str, role: Role) -> SecretIdentity {
    SecretIdentity::from_seed(
        &[seed; 32],
        &IdentityInfo {
            display_name: name.into(),
            role,
            registration: None,
            created_at: NOW - 86_400,
        },
    )
    .unwrap()
}

pub fn info(title: &str) -> RecordInfo {
    RecordInfo {
        content_type: "text/plain".into(),
        title: title.into(),
        created_at: NOW,
        effective_at: None,
    }
}

/// A vault as a client and a relay would hold it: the verified state, the
/// log, and the ciphertext blobs by hash.
pub struct Fixture {
    pub patient: SecretIdentity,
    pub alice: SecretIdentity,
    pub bob: SecretIdentity,
    pub mallory: SecretIdentity,
    pub state: VaultState,
    pub log: Vec<LogEntry>,
    pub blobs: HashMap<[u8; 32], Vec<u8>>,
    pub labs: CollectionId,
    pub meds: CollectionId,
}

impl Fixture {
    /// A vault with collections "labs" and "medications", no records.
    pub fn new() -> Self {
        let patient = identity(1, "Pat Patient", Role::Patient);
        let (state, genesis) = VaultState::create(&patient, NOW).unwrap();
        let mut f = Self {
            patient,
            alice: identity(2, "Dr Alice", Role::Clinician),
            bob: identity(3, "Dr Bob", Role::Clinician),
            mallory: identity(4, "Mallory", Role::Clinician),
            state,
            log: vec![genesis],
            blobs: HashMap::new(),
            labs: CollectionId::from_bytes([0; 16]),
            meds: CollectionId::from_bytes([0; 16]),
        };
        let (labs, e) = f.state.create_collection(&f.patient, "labs", NOW).unwrap();
        f.append(e);
        let (meds, e) = f
            .state
            .create_collection(&f.patient, "medications", NOW)
            .unwrap();
        f.append(e);
        f.labs = labs;
        f.meds = meds;
        f
    }

    /// Verifies and appends an entry (as a client does after the relay
    /// accepted it).
    pub fn append(&mut self, e: LogEntry) {
        self.state.apply(&e).unwrap();
        self.log.push(e);
    }

    /// Puts a record as `author` (by index: 0 patient, 1 alice, 2 bob,
    /// 3 mallory) and appends the entry.
    pub fn put_as(
        &mut self,
        who: usize,
        collection: CollectionId,
        record: Option<RecordId>,
        title: &str,
        body: &[u8],
    ) -> RecordMetadata {
        let (m, e) = self
            .put_entry(who, collection, record, title, body)
            .unwrap();
        self.append(e);
        m
    }

    /// Produces (without appending) a record-put entry by `who`.
    pub fn put_entry(
        &mut self,
        who: usize,
        collection: CollectionId,
        record: Option<RecordId>,
        title: &str,
        body: &[u8],
    ) -> crate::Result<(RecordMetadata, LogEntry)> {
        let author = self.who(who);
        let mut keyring = Keyring::new(author, NOW);
        let mut ct = Vec::new();
        let (m, e) = self.state.put_record(
            &mut keyring,
            &collection,
            record,
            &info(title),
            crate::RecordBody::new(body, body.len() as u64),
            &mut ct,
        )?;
        self.blobs.insert(*m.ciphertext_hash(), ct);
        Ok((m, e))
    }

    pub fn who(&self, who: usize) -> &SecretIdentity {
        match who {
            0 => &self.patient,
            1 => &self.alice,
            2 => &self.bob,
            _ => &self.mallory,
        }
    }

    /// Shares a collection with `who` and appends the grant.
    pub fn share(
        &mut self,
        who: usize,
        collection: CollectionId,
        permission: Permission,
        expires_at: Option<u64>,
    ) {
        let member = self.who(who).public().clone();
        let mut keyring = Keyring::new(&self.patient, NOW);
        let e = self
            .state
            .share_collection(&mut keyring, &collection, &member, permission, expires_at)
            .unwrap();
        self.append(e);
    }

    /// Revokes `who` from a collection.
    pub fn revoke(&mut self, who: usize, collection: CollectionId) {
        let fp = self.who(who).fingerprint();
        let mut keyring = Keyring::new(&self.patient, NOW);
        let e = self.state.revoke(&mut keyring, &collection, &[fp]).unwrap();
        self.append(e);
    }

    /// Rotates a collection as the owner, revoking nobody (the owner's
    /// re-keying after a device list changed), and appends it.
    pub fn rekey(&mut self, collection: CollectionId) {
        let mut keyring = Keyring::new(&self.patient, NOW);
        let e = self.state.revoke(&mut keyring, &collection, &[]).unwrap();
        self.append(e);
    }

    /// Opens a record's current version as `who`, from the stored blob.
    pub fn open_as(&self, who: usize, record: &RecordId) -> crate::Result<(OpenedRecord, Vec<u8>)> {
        let verified = self.state.record(record)?;
        let blob = self
            .blobs
            .get(verified.metadata().ciphertext_hash())
            .cloned()
            .unwrap_or_default();
        let mut keyring = Keyring::new(self.who(who), NOW);
        let mut out = Vec::new();
        let opened = keyring.open(&self.state, &verified, blob.as_slice(), &mut out)?;
        Ok((opened, out))
    }

    /// Opens a record's current version as `who` from explicit ciphertext
    /// bytes (as served by a relay): the outcome, and every byte released to
    /// the output even if opening failed.
    pub fn open_bytes_as(
        &self,
        who: usize,
        record: &RecordId,
        ciphertext: &[u8],
    ) -> (crate::Result<OpenedRecord>, Vec<u8>) {
        self.open_verified(who, &self.state.record(record).unwrap(), ciphertext)
    }

    /// [`Fixture::open_bytes_as`] for a given verified record.
    pub fn open_verified(
        &self,
        who: usize,
        verified: &VerifiedRecord<'_>,
        ciphertext: &[u8],
    ) -> (crate::Result<OpenedRecord>, Vec<u8>) {
        let mut keyring = Keyring::new(self.who(who), NOW);
        let mut out = Vec::new();
        let result = keyring.open(&self.state, verified, ciphertext, &mut out);
        (result, out)
    }

    /// Re-verifies the whole log from genesis.
    pub fn reverify(&self) -> crate::Result<VaultState> {
        VaultState::verify_log(&self.log)
    }

    /// Signs an arbitrary entry as `author` at the head (what a malicious
    /// member or an impostor could produce).
    pub fn forge(&self, author: &SecretIdentity, body: EntryBody) -> LogEntry {
        self.forge_at(author, NOW, body)
    }

    /// [`Fixture::forge`] with an author-claimed time.
    pub fn forge_at(&self, author: &SecretIdentity, time: u64, body: EntryBody) -> LogEntry {
        let head = self.state.head();
        let collection = self.state.entry_collection(&body);
        LogEntry::sign(
            author,
            self.state.vault(),
            head.seq + 1,
            head.head,
            time,
            body,
            collection.as_ref(),
        )
        .unwrap()
    }

    /// Applies `entry` to the victim's verified state expecting a refusal,
    /// checks that the refusal left the state exactly as it was, and returns
    /// the error.
    pub fn refuse(&mut self, entry: &LogEntry) -> Error {
        let before = snapshot(&self.state);
        let err = self
            .state
            .apply(entry)
            .expect_err("the forged entry was accepted");
        assert_eq!(
            snapshot(&self.state),
            before,
            "a refused entry changed the verified state"
        );
        err
    }

    /// An owned copy of the current key of `collection`, as `who` unlocks
    /// it from their grant.
    pub fn key_of(&self, who: usize, collection: CollectionId) -> CollectionKey {
        let epoch = self
            .state
            .collections()
            .into_iter()
            .find(|c| c.id == collection)
            .unwrap()
            .epoch;
        let mut keyring = Keyring::new(self.who(who), NOW);
        let key = keyring
            .collection_key(&self.state, &collection, epoch)
            .unwrap();
        copy_key(key)
    }

    /// Seals a record version as `who` with any collection key (whatever an
    /// attacker holding a key can produce), keeping the ciphertext.
    pub fn seal_with(
        &mut self,
        who: usize,
        key: &CollectionKey,
        record: RecordId,
        version: u32,
        body: &[u8],
    ) -> RecordMetadata {
        let mut ct = Vec::new();
        let m = record::seal(
            self.who(who),
            record::SealTo::Collection(key),
            record,
            version,
            &info("forged"),
            crate::RecordBody::new(body, body.len() as u64),
            &mut ct,
        )
        .unwrap();
        self.blobs.insert(*m.ciphertext_hash(), ct);
        m
    }

    /// Signs (possibly altered) metadata as `who`, making them its author:
    /// what a colluding writer can do, and a relay cannot.
    pub fn resign(&self, who: usize, m: &mut RecordMetadata) {
        let author = self.who(who);
        m.author = author.fingerprint();
        m.signature = author.sign(&m.signed_bytes());
    }
}

/// The log as an honest relay serves it to `reader` (`docs/format.md`
/// §8.8).
pub fn served(f: &Fixture, reader: &Fingerprint) -> Vec<LogEntry> {
    f.log
        .iter()
        .map(|e| {
            if f.state.shows_in_full(e, reader) {
                e.clone()
            } else {
                e.redacted().expect("version-2 entries redact")
            }
        })
        .collect()
}

/// Everything a verified state holds (including the wrapped keys its
/// `Debug` hides), for before/after comparisons.
pub fn snapshot(state: &VaultState) -> String {
    let keys: Vec<Vec<u8>> = state
        .records(None)
        .iter()
        .map(|r| state.record(&r.id).unwrap().wrapped().1.to_bytes())
        .collect();
    format!("{state:?} {keys:?}")
}

/// An owned copy of a collection key.
pub fn copy_key(key: &CollectionKey) -> CollectionKey {
    CollectionKey::from_secret(
        key.vault(),
        key.collection(),
        key.epoch(),
        Zeroizing::new(*key.secret()),
    )
}

/// What a relay can do to an entry in transit: edit its bytes and
/// re-parse them.
pub fn reencode_with(entry: &LogEntry, edit: impl FnOnce(&mut Vec<u8>)) -> crate::Result<LogEntry> {
    let mut bytes = entry.to_bytes().to_vec();
    edit(&mut bytes);
    LogEntry::from_bytes(&bytes)
}

/// Replaces the one occurrence of `old` in `bytes` with `new`.
pub fn replace_once(bytes: &[u8], old: &[u8], new: &[u8]) -> Vec<u8> {
    let at: Vec<usize> = bytes
        .windows(old.len())
        .enumerate()
        .filter(|(_, w)| *w == old)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "expected exactly one occurrence");
    [&bytes[..at[0]], new, &bytes[at[0] + old.len()..]].concat()
}

/// Writes a vector file (pretty JSON, ending in a newline): only when
/// regenerating, for a deliberate format change.
pub fn save_vector(path: &std::path::Path, v: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap() + "\n").unwrap();
}

/// Reads a vector file.
pub fn load_vector(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `log` of a JSON test vector: each entry parsed and checked to
/// re-encode byte for byte.
pub fn vector_log(v: &serde_json::Value) -> Vec<LogEntry> {
    v["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let bytes = hex::decode(h.as_str().unwrap()).unwrap();
            let e = LogEntry::from_bytes(&bytes).unwrap();
            assert_eq!(e.to_bytes(), bytes.as_slice(), "re-encodes byte for byte");
            e
        })
        .collect()
}

/// Checks a vector's `negative` cases (`expected` of them): each entry is
/// refused, with its error code, after the log's prefix up to `after_seq`.
pub fn check_negative_cases(v: &serde_json::Value, log: &[LogEntry], expected: usize) {
    let negative = v["negative"].as_array().unwrap();
    assert_eq!(negative.len(), expected);
    for case in negative {
        let after = usize::try_from(case["after_seq"].as_u64().unwrap()).unwrap();
        let mut prefix = VaultState::verify_log(&log[..=after]).unwrap();
        let entry =
            LogEntry::from_bytes(&hex::decode(case["entry"].as_str().unwrap()).unwrap()).unwrap();
        let err = prefix.apply(&entry).unwrap_err();
        assert_eq!(
            err.code(),
            case["error"].as_str().unwrap(),
            "{}",
            case["description"]
        );
    }
}
