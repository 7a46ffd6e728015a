//! What a client reads from a verified state: freshness checks against
//! persisted and remote heads (§9.3), members, access, records and their
//! verified versions.

use crate::error::{Error, Result};
use crate::grant::GrantScope;
use crate::identity::{Fingerprint, PublicIdentity};
use crate::ids::{CollectionId, RecordId, VaultId};
use crate::log::{Checkpoint, EntryBody, LogEntry, Relays};
use crate::record::{KeySource, RecordMetadata, VerifiedRecord};

#[cfg(test)]
use crate::grant::Grant;

use super::*;

impl VaultState {
    // ----- freshness ----------------------------------------------------

    /// The current head as a checkpoint.
    pub fn head(&self) -> Checkpoint {
        Checkpoint {
            vault: self.vault,
            seq: self.head_seq(),
            head: self.hashes.last().copied().unwrap_or([0; 32]),
        }
    }

    /// The checkpoint at an earlier sequence number, if the log reaches it.
    pub fn checkpoint_at(&self, seq: u64) -> Option<Checkpoint> {
        let head = *self.hashes.get(usize::try_from(seq).ok()?)?;
        Some(Checkpoint {
            vault: self.vault,
            seq,
            head,
        })
    }

    /// Checks this state against a head this device persisted earlier:
    /// the state must reach it ([`Error::Rollback`] otherwise) and contain
    /// exactly it ([`Error::Fork`] otherwise).
    pub fn check_persisted(&self, persisted: &Checkpoint) -> Result<()> {
        if persisted.vault != self.vault {
            return Err(Error::ContextMismatch {
                what: "checkpoint",
                field: "vault",
            });
        }
        match self.checkpoint_at(persisted.seq) {
            None => Err(Error::Rollback {
                verified: persisted.seq,
                offered: self.head_seq(),
            }),
            Some(c) if crate::primitives::ct_eq(&c.head, &persisted.head) => Ok(()),
            Some(_) => Err(Error::Fork { seq: persisted.seq }),
        }
    }

    /// Checks a relay's claim about its head (sequence number) against this
    /// verified state: a relay whose log is shorter is rolling back.
    pub fn check_remote_head(&self, remote_seq: u64) -> Result<()> {
        if remote_seq < self.head_seq() {
            return Err(Error::Rollback {
                verified: self.head_seq(),
                offered: remote_seq,
            });
        }
        Ok(())
    }

    /// Compares a checkpoint code read out by someone else (see
    /// [`Checkpoint::code`]) with this device's log at the same point.
    pub fn compare_checkpoint_code(&self, code: &str) -> Result<()> {
        let (seq, _) = Checkpoint::parse_code(code)?;
        let ours = self.checkpoint_at(seq).ok_or(Error::CheckpointMismatch {
            reason:
                "the other device has seen entries this device has not: sync, then compare again",
        })?;
        let (_, theirs) = Checkpoint::parse_code(code)?;
        let (_, mine) = Checkpoint::parse_code(&ours.code())?;
        if crate::primitives::ct_eq(theirs.as_bytes(), mine.as_bytes()) {
            Ok(())
        } else {
            Err(Error::CheckpointMismatch {
                reason: "the codes differ at the same entry",
            })
        }
    }

    // ----- reading ------------------------------------------------------

    /// The vault id.
    pub fn vault(&self) -> VaultId {
        self.vault
    }

    /// The relays the owner named last (`docs/format.md` §8.9): `None`
    /// until the owner names any, and then the vault's home is the relay
    /// it was created on.
    pub fn relays(&self) -> Option<&Relays> {
        self.relays.as_ref()
    }

    /// The owner's identity (compare its fingerprint with the pinned one).
    pub fn owner(&self) -> &PublicIdentity {
        &self.owner
    }

    /// Checks that the owner is the principal the caller pinned.
    pub fn expect_owner(&self, pinned: &Fingerprint) -> Result<()> {
        if self.owner.fingerprint() == *pinned {
            Ok(())
        } else {
            Err(Error::PinnedKeyChanged {
                name: "the vault owner".into(),
                pinned: *pinned,
                presented: self.owner.fingerprint(),
            })
        }
    }

    /// The identity of a member (or the owner), or of a device the owner's
    /// device lists named (removed ones too), known from the log: to name
    /// who wrote what. Whether it may write is [`VaultState::access`].
    pub fn identity(&self, fp: &Fingerprint) -> Option<&PublicIdentity> {
        self.identities
            .get(fp)
            .or_else(|| self.listed_device(fp))
            .or_else(|| {
                self.collections
                    .keys()
                    .find_map(|c| self.member_device(c, fp).map(|(_, d)| d))
            })
    }

    /// Collections, with their members and sizes.
    pub fn collections(&self) -> Vec<CollectionSummary> {
        self.collections
            .iter()
            .map(|(id, c)| CollectionSummary {
                id: *id,
                epoch: c.epoch,
                records: c.records.len(),
                members: c
                    .grants
                    .values()
                    .map(|g| (g.member(), g.permission(), g.expires_at()))
                    .collect(),
            })
            .collect()
    }

    /// Who signed `member`'s grant of `collection`'s current epoch: the
    /// owner, or the agent whose rotation or share issued it (`None` if
    /// `member` holds no such grant).
    pub fn grant_signer(
        &self,
        collection: &CollectionId,
        member: &Fingerprint,
    ) -> Option<Fingerprint> {
        let grant = self.collections.get(collection)?.grants.get(member)?;
        Some(self.person_in(
            &grant.signer().unwrap_or(self.owner.fingerprint()),
            Some(collection),
        ))
    }

    /// Direct single-record grants in force: (record, member, expiry).
    pub fn record_grants(&self) -> Vec<(RecordId, Fingerprint, Option<u64>)> {
        let mut v: Vec<_> = self
            .record_grants
            .iter()
            .map(|((r, m), g)| (*r, *m, g.expires_at()))
            .collect();
        v.sort_by_key(|(r, m, _)| (*r, *m.as_bytes()));
        v
    }

    /// What `who` may do in this vault at time `now`, from the verified log:
    /// the relay's access check (brief P3), and a member's own view of its
    /// rights. Expired grants give nothing; a revoked member holds no grant
    /// of the current epoch, so gets nothing either. A device of a person's
    /// current list has its person's access: the owner's everywhere, a
    /// member's in each collection carrying the member's list.
    pub fn access(&self, who: &Fingerprint, now: u64) -> Access {
        let owner = self.is_owner(who);
        let device = *who;
        let who = &self.person_of(who);
        let collections = self
            .collections
            .iter()
            .filter_map(|(id, c)| {
                let who = &self.person_in(&device, Some(id));
                let g = c.grants.get(who)?;
                g.is_valid_at(now).then_some((
                    *id,
                    CollectionAccess {
                        epoch: c.epoch,
                        permission: g.permission(),
                        expires_at: g.expires_at(),
                        agent: self.agency_of(who, id, now).map(|(_, p)| p),
                    },
                ))
            })
            .collect();
        let records = self
            .record_grants
            .iter()
            .filter(|((_, m), g)| m == who && g.is_valid_at(now))
            .map(|((r, _), _)| *r)
            .collect();
        Access {
            owner,
            collections,
            records,
        }
    }

    /// Live records of a collection (or of all collections), in id order.
    pub fn records(&self, collection: Option<&CollectionId>) -> Vec<RecordSummary> {
        let mut out: Vec<RecordSummary> = self
            .collections
            .iter()
            .filter(|(id, _)| collection.is_none_or(|c| c == *id))
            .flat_map(|(_, c)| c.records.iter())
            .filter_map(|id| {
                let rs = self.records.get(id)?;
                let (m, seq) = rs.versions.last()?;
                let m = m.as_ref()?;
                Some(RecordSummary {
                    id: *id,
                    collection: rs.collection,
                    version: m.version(),
                    author: m.author(),
                    seq: *seq,
                    ciphertext_len: m.ciphertext_len(),
                })
            })
            .collect();
        out.extend(
            self.foreign
                .iter()
                .filter(|(id, versions)| {
                    self.records.get(id).is_none_or(|rs| {
                        versions
                            .keys()
                            .next_back()
                            .is_some_and(|v| *v > rs.current_version())
                    })
                })
                .filter_map(|(id, versions)| {
                    let (m, seq) = versions.values().next_back()?;
                    collection
                        .is_none_or(|c| *c == m.collection())
                        .then(|| RecordSummary {
                            id: *id,
                            collection: m.collection(),
                            version: m.version(),
                            author: m.author(),
                            seq: *seq,
                            ciphertext_len: m.ciphertext_len(),
                        })
                }),
        );
        // A record known from a collection this reader left, and newer
        // through a single-record grant: listed once, as the newer.
        out.sort_by_key(|r| (r.id, std::cmp::Reverse(r.version)));
        out.dedup_by_key(|r| r.id);
        out
    }

    /// Whether a new member granted `collection`'s current key could open a
    /// version that was replaced or deleted during this epoch. If so, the
    /// owner's client rotates the key (a rotation that revokes nobody)
    /// before granting it, so deleted and replaced versions stay closed to
    /// those granted later (`docs/format.md` §8.6).
    pub fn needs_rotation_before_grant(&self, collection: &CollectionId) -> bool {
        self.collections.get(collection).is_some_and(|c| c.dirty)
    }

    /// Whether `who` may fetch the ciphertext of `version` of `record` at
    /// `now`: the owner always; a holder of a single-record grant of that
    /// version; a current member of the record's collection if the version
    /// is current, or if it was replaced or deleted while they held the key
    /// of the epoch it was wrapped under. A member granted after a version
    /// was replaced or deleted (after the rotation that precedes such a
    /// grant) may not, and a write-only depositor never may.
    pub fn may_read_version(
        &self,
        who: &Fingerprint,
        record: &RecordId,
        version: u32,
        now: u64,
    ) -> bool {
        let Some(rs) = self.records.get(record) else {
            return false;
        };
        if version <= rs.purged_through {
            return false;
        }
        if self.is_owner(who) {
            return true;
        }
        if let Some(g) = self.record_grants.get(&(*record, *who)) {
            if g.is_valid_at(now)
                && matches!(g.scope(), GrantScope::Record { version: v, .. } if v == version)
            {
                return true;
            }
        }
        let Some(coll) = self.collections.get(&rs.collection) else {
            return false;
        };
        let who = &self.person_in(who, Some(&rs.collection));
        if !coll
            .grants
            .get(who)
            .is_some_and(|g| g.is_valid_at(now) && g.permission().may_read())
        {
            return false;
        }
        rs.key_epoch_of(version)
            .and_then(|epoch| coll.grants_of(epoch))
            .is_some_and(|grants| grants.contains_key(who))
    }

    /// Whether `who` may fetch the blob `ciphertext_hash`, which the log
    /// names as the ciphertext of some version of `record`
    /// ([`Self::may_read_version`] for each such version).
    pub fn may_read_blob(
        &self,
        who: &Fingerprint,
        record: &RecordId,
        ciphertext_hash: &[u8; 32],
        now: u64,
    ) -> bool {
        let Some(rs) = self.records.get(record) else {
            return false;
        };
        rs.versions.iter().any(|(m, _)| {
            m.as_ref().is_some_and(|m| {
                m.ciphertext_hash() == ciphertext_hash
                    && self.may_read_version(who, record, m.version(), now)
            })
        })
    }

    /// The current grant of `member` in `collection`, for tests.
    #[cfg(test)]
    pub(crate) fn collections_grant_for_test(
        &self,
        collection: &CollectionId,
        member: &Fingerprint,
    ) -> Grant {
        self.collections
            .get(collection)
            .and_then(|c| c.grants.get(member))
            .map(|g| (**g).clone())
            .unwrap_or_else(|| panic!("no grant"))
    }

    /// Pads `collection` with placeholder records and members up to the
    /// given counts, to test the limits without writing 100,000 records.
    #[cfg(test)]
    pub(crate) fn fill_collection_for_test(
        &mut self,
        collection: &CollectionId,
        records: usize,
        members: usize,
    ) {
        let owner = self.owner.fingerprint();
        if let Some(c) = self.collections.get_mut(collection) {
            let mut n: u128 = 1 << 100;
            while c.records.len() < records {
                c.records.insert(RecordId::from_bytes(n.to_be_bytes()));
                n += 1;
            }
            let grant = c.grants.get(&owner).cloned();
            let mut m: u8 = 0;
            while let Some(g) = grant.clone().filter(|_| c.grants.len() < members) {
                c.grants.insert(Fingerprint::from_bytes([m; 32]), g);
                m = m.wrapping_add(1);
            }
        }
    }

    /// Whether a relay shows `entry` whole to `reader`, or redacted
    /// (`docs/format.md` §8.8). Whole: every version-1 entry; the genesis
    /// entry; every relays-named entry; every entry to the owner; the entries of a collection to its
    /// current members (those written while their grant is in force: all
    /// of them for a grant without expiry), and to a removed member up to
    /// the rotation that removed them; a single-record grant, its withdrawal and the record
    /// version it names, to its holder. This state must be the relay's own
    /// (every entry whole), at or after `entry`.
    pub fn shows_in_full(&self, entry: &LogEntry, reader: &Fingerprint) -> bool {
        if entry.version() < 2 || entry.seq() == 0 || self.is_owner(reader) {
            return true;
        }
        let body = entry.body();
        let collection = self.entry_collection(body);
        if let Some(coll) = collection.and_then(|c| self.collections.get(&c)) {
            // A member's device is shown what its member is, in the
            // collections carrying the member's current list.
            let person = self.person_in(reader, collection.as_ref());
            if coll
                .grants
                .get(&person)
                .is_some_and(|g| g.is_valid_at(entry.time()))
                || coll.left.get(&person).is_some_and(|s| entry.seq() <= *s)
            {
                return true;
            }
        }
        match body {
            EntryBody::GrantAdded { grant, .. } => {
                grant.member() == *reader && matches!(grant.scope(), GrantScope::Record { .. })
            }
            EntryBody::RecordGrantRevoked { member, .. } => member == reader,
            EntryBody::RelaysNamed(_) | EntryBody::DevicesListed { .. } => true,
            EntryBody::RecordPut { metadata } => self
                .record_grants
                .get(&(metadata.record(), *reader))
                .is_some_and(|g| {
                    matches!(g.scope(), GrantScope::Record { version, .. } if version == metadata.version())
                }),
            _ => false,
        }
    }

    /// A record version shown to this reader through a single-record grant
    /// only (`docs/format.md` §8.8), checked against that grant: the
    /// owner-signed grant names the record, version and collection, and
    /// its key commitment is checked when the key opens.
    fn foreign_version(&self, id: &RecordId, version: Option<u32>) -> Result<VerifiedRecord<'_>> {
        let missing = || Error::Missing {
            what: format!("record {id}"),
        };
        let versions = self.foreign.get(id).ok_or_else(missing)?;
        let (m, seq) = match version {
            Some(v) => versions.get(&v),
            None => versions.values().next_back(),
        }
        .ok_or_else(missing)?;
        Ok(VerifiedRecord {
            metadata: m,
            key_source: KeySource {
                epoch: m.epoch(),
                seal: &m.wrapped_key,
            },
            seq: *seq,
        })
    }

    /// The current version of a record, verified.
    pub fn record(&self, id: &RecordId) -> Result<VerifiedRecord<'_>> {
        let newer_foreign = |rs: &RecordState| {
            self.foreign
                .get(id)
                .and_then(|v| v.keys().next_back())
                .is_some_and(|v| *v > rs.current_version())
        };
        let Some(rs) = self.records.get(id).filter(|rs| !newer_foreign(rs)) else {
            return self.foreign_version(id, None);
        };
        match rs.versions.last() {
            Some((Some(m), seq)) => Ok(VerifiedRecord {
                metadata: m,
                key_source: match &rs.wrapped {
                    Some(w) => KeySource {
                        epoch: rs.key_epoch,
                        seal: w,
                    },
                    None => {
                        return Err(Error::Missing {
                            what: format!("data key of record {id}"),
                        })
                    }
                },
                seq: *seq,
            }),
            _ => Err(Error::Missing {
                what: format!("record {id} (deleted)"),
            }),
        }
    }

    /// A specific version of a record, verified. A version older than the
    /// current one is opened through a single-record grant for it, or with
    /// the key of the epoch it was last wrapped under while current (the
    /// last rotation's re-wrap, or else the epoch it was written in): those
    /// who held that epoch's key, the owner always, can open it.
    pub fn record_version(&self, id: &RecordId, version: u32) -> Result<VerifiedRecord<'_>> {
        let foreign = self
            .foreign
            .get(id)
            .is_some_and(|v| v.contains_key(&version));
        let Some(rs) = self.records.get(id).filter(|_| !foreign) else {
            return self.foreign_version(id, Some(version));
        };
        if version == rs.current_version() && !rs.is_deleted() {
            return self.record(id);
        }
        if version <= rs.purged_through {
            return Err(Error::Missing {
                what: format!("record {id} version {version} (purged by the owner)"),
            });
        }
        let idx = usize::try_from(version.saturating_sub(1)).unwrap_or(usize::MAX);
        match rs.versions.get(idx) {
            Some((Some(m), seq)) if version > 0 => Ok(VerifiedRecord {
                metadata: m,
                key_source: match rs.last_wraps.get(&version) {
                    Some((epoch, seal)) => KeySource {
                        epoch: *epoch,
                        seal,
                    },
                    None => KeySource {
                        epoch: m.epoch(),
                        seal: &m.wrapped_key,
                    },
                },
                seq: *seq,
            }),
            _ => Err(Error::Missing {
                what: format!("record {id} version {version}"),
            }),
        }
    }

    /// Checks that a record's metadata offered by a relay is the one this
    /// verified log names for that version ([`Error::StaleVersion`] for an
    /// old version offered as current, [`Error::ContextMismatch`] for
    /// metadata moved from elsewhere).
    pub fn check_offered_metadata(&self, offered: &RecordMetadata) -> Result<VerifiedRecord<'_>> {
        if offered.vault() != self.vault {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "vault",
            });
        }
        let current = self.record(&offered.record())?;
        let m = current.metadata();
        if offered.version() < m.version() {
            return Err(Error::StaleVersion {
                current: m.version(),
                offered: offered.version(),
            });
        }
        if offered.collection() != m.collection() {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "collection",
            });
        }
        if offered.epoch() != m.epoch() {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "epoch",
            });
        }
        if offered != m {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "record",
            });
        }
        Ok(current)
    }
}
