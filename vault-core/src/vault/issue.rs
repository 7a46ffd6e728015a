//! Issuing new entries: each builder checks the author's rights against
//! the verified state and returns a signed entry for the caller to append
//! and apply.

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::grant::{Grant, Permission};
use crate::identity::{Fingerprint, PublicIdentity, SecretIdentity};
use crate::ids::{CollectionId, RecordId, VaultId};
use crate::keys::CollectionKey;
use crate::log::{EntryBody, LogEntry, Relays, Rewrap, Rotation};
use crate::record::{PlannedRecord, RecordBody, RecordInfo, RecordMetadata, SealTo};

use super::*;

/// The name a rotation gives a collection whose name no key the owner
/// holds opens (decision 68).
pub const UNOPENED_NAME: &str = "A collection your keys could not open";

impl VaultState {
    // ----- writing ------------------------------------------------------

    pub(super) fn next_entry(
        &self,
        author: &SecretIdentity,
        now: u64,
        body: EntryBody,
    ) -> Result<LogEntry> {
        let head = self.head();
        let collection = self.entry_collection(&body);
        LogEntry::sign(
            author,
            self.vault,
            head.seq.saturating_add(1),
            head.head,
            now.max(self.last_time),
            body,
            collection.as_ref(),
        )
    }

    /// Re-issues an already sealed record version as a record-put entry on
    /// the current head, for a writer whose append lost a race: the
    /// ciphertext, its signed metadata and the uploaded blob stay valid as
    /// long as nobody wrote another version of the record and the
    /// collection did not rotate in between. Checks exactly what
    /// [`VaultState::apply`] will; on error (for example
    /// [`Error::StaleVersion`], or a [`Error::ContextMismatch`] on the
    /// epoch), seal the record again with [`VaultState::put_record`].
    pub fn record_put_entry(
        &self,
        author: &SecretIdentity,
        metadata: &RecordMetadata,
        now: u64,
    ) -> Result<LogEntry> {
        let entry = self.record_put(author, metadata, now)?;
        let is_owner = self.is_owner(&author.fingerprint());
        self.check_record_put(&entry, metadata, author.public(), is_owner, true)?;
        Ok(entry)
    }

    /// [`VaultState::record_put_entry`] followed by [`VaultState::apply`],
    /// checking once: issues a record-put entry for already sealed
    /// `metadata` on the current head and applies it (every check
    /// [`VaultState::apply`] makes, signatures included). On error the
    /// state is unchanged. For writers appending many records in one
    /// batch.
    pub fn issue_record_put(
        &mut self,
        author: &SecretIdentity,
        metadata: &RecordMetadata,
        now: u64,
    ) -> Result<LogEntry> {
        let entry = self.record_put(author, metadata, now)?;
        self.apply(&entry)?;
        Ok(entry)
    }

    /// [`VaultState::issue_record_put`] for several sealed versions at
    /// once: a record-put entry for each of `metadata`, in order, each on
    /// the head the one before made, and the state they lead to (this state
    /// is not changed). Every check [`VaultState::apply`] makes is made;
    /// the signature checks (each entry's and its metadata's) are made
    /// together on every core (decision 63). If anything is refused, the
    /// entries are issued again one by one, so the error is exactly the one
    /// [`VaultState::issue_record_put`] in turn gives.
    pub fn issue_record_puts(
        &self,
        author: &SecretIdentity,
        metadata: &[RecordMetadata],
        now: u64,
    ) -> Result<(Vec<LogEntry>, VaultState)> {
        let issue = |next: &mut VaultState| -> Result<Vec<LogEntry>> {
            metadata
                .iter()
                .map(|m| next.issue_record_put(author, m, now))
                .collect()
        };
        let mut next = self.clone();
        let together = {
            let deferral = crate::deferred::Deferral::start();
            match issue(&mut next) {
                Ok(entries) => deferral.finish().then_some(entries),
                // The deferral ends here, unfinished: nothing it recorded
                // is answered.
                Err(_) => None,
            }
        };
        if let Some(entries) = together {
            return Ok((entries, next));
        }
        let mut next = self.clone();
        let entries = issue(&mut next)?;
        Ok((entries, next))
    }

    /// A record-put entry for `metadata` on the current head (unchecked).
    pub(super) fn record_put(
        &self,
        author: &SecretIdentity,
        metadata: &RecordMetadata,
        now: u64,
    ) -> Result<LogEntry> {
        self.next_entry(
            author,
            now,
            EntryBody::RecordPut {
                metadata: metadata.clone(),
            },
        )
    }

    pub(super) fn require_owner(&self, who: &SecretIdentity) -> Result<()> {
        if self.is_owner(&who.fingerprint()) {
            Ok(())
        } else {
            Err(Error::AccessDenied("only the vault owner can do this"))
        }
    }

    /// Creates a new vault owned by `owner`: its state and genesis entry.
    pub fn create(owner: &SecretIdentity, now: u64) -> Result<(Self, LogEntry)> {
        let entry = LogEntry::sign(
            owner,
            VaultId::random(),
            0,
            [0; 32],
            now,
            EntryBody::Genesis {
                owner: owner.public().clone(),
            },
            None,
        )?;
        Ok((Self::from_genesis(&entry)?, entry))
    }

    /// An entry creating a collection named `name` (the name is sealed).
    pub fn create_collection(
        &self,
        owner: &SecretIdentity,
        name: &str,
        now: u64,
    ) -> Result<(CollectionId, LogEntry)> {
        self.require_owner(owner)?;
        let collection = CollectionId::random();
        let key = CollectionKey::generate(self.vault, collection, 0);
        let body = EntryBody::CollectionCreated {
            collection,
            sealed_name: key.seal_name(name)?,
            owner_grant: Grant::for_collection_to(
                owner,
                &key,
                &self.grant_to(&self.owner, None),
                Permission::ReadWrite,
                None,
                now,
                self.names_signer(owner),
            )?,
        };
        Ok((collection, self.next_entry(owner, now, body)?))
    }

    /// An entry adding a record (`record: None`) or a new version of one to
    /// `collection`, sealing `body` (exactly `body_len` bytes) into
    /// `ciphertext`. The author must be the owner or a member with write
    /// access; the returned entry is not yet applied.
    pub fn put_record<R: Read, W: Write>(
        &self,
        keyring: &mut Keyring,
        collection: &CollectionId,
        record: Option<RecordId>,
        info: &RecordInfo,
        body: RecordBody<R>,
        ciphertext: W,
    ) -> Result<(RecordMetadata, LogEntry)> {
        let target = match record {
            None => RecordTarget::New(RecordId::random()),
            Some(id) => RecordTarget::Next(id),
        };
        self.put_record_to(keyring, collection, target, info, body, ciphertext)
    }

    /// [`VaultState::put_record`] to an explicit [`RecordTarget`]: a new
    /// record under an identifier the writer chose (so a writer that must
    /// add each item exactly once, such as a gateway, can record the
    /// identifier before the append and recognise it in the log after a
    /// crash), or the next version of an existing one.
    pub fn put_record_to<R: Read, W: Write>(
        &self,
        keyring: &mut Keyring,
        collection: &CollectionId,
        target: RecordTarget,
        info: &RecordInfo,
        body: RecordBody<R>,
        ciphertext: W,
    ) -> Result<(RecordMetadata, LogEntry)> {
        let plan = self.plan_record(keyring, collection, target, info, body.len())?;
        let ciphertext_hash = plan.job().seal(body.into_reader(), ciphertext)?;
        self.finish_record(keyring, &plan, ciphertext_hash)
    }

    /// The first half of [`VaultState::put_record_to`], for a payload
    /// sealed elsewhere (the web app's worker): checks that the keyring's
    /// identity may write `target` in `collection`, and plans the version
    /// (a fresh data key, the inner header, the padded length of a body of
    /// `body_len` bytes). Seal its [`PlannedRecord::job`], then call
    /// [`VaultState::finish_record`] with the ciphertext's hash.
    pub fn plan_record(
        &self,
        keyring: &Keyring,
        collection: &CollectionId,
        target: RecordTarget,
        info: &RecordInfo,
        body_len: u64,
    ) -> Result<PlannedRecord> {
        let author = keyring.identity().fingerprint();
        let (record, version, _, _) =
            self.record_slot(&author, keyring.now(), collection, target)?;
        PlannedRecord::new(
            author,
            self.vault,
            *collection,
            record,
            version,
            info,
            body_len,
        )
    }

    /// The second half of [`VaultState::put_record_to`]: the signed
    /// metadata of `plan`'s payload, whose ciphertext hashes to
    /// `ciphertext_hash`, and the entry adding it. The checks of
    /// [`VaultState::plan_record`] are made again against this state, which
    /// may be newer than the one that planned (an append lost a race): the
    /// data key is wrapped under the collection's current epoch, and the
    /// planned version must still be the next one
    /// ([`Error::InvalidInput`] if another version landed in between).
    pub fn finish_record(
        &self,
        keyring: &mut Keyring,
        plan: &PlannedRecord,
        ciphertext_hash: [u8; 32],
    ) -> Result<(RecordMetadata, LogEntry)> {
        let author = keyring.identity();
        let now = keyring.now();
        let collection = plan.collection();
        let target = if plan.version() == 1 {
            RecordTarget::New(plan.record())
        } else {
            RecordTarget::Next(plan.record())
        };
        let (_, version, deposit, epoch) =
            self.record_slot(&author.fingerprint(), now, &collection, target)?;
        if version != plan.version() {
            return Err(Error::InvalidInput(
                "another version of this record was written meanwhile; add yours again",
            ));
        }
        let metadata = if deposit {
            let key = keyring.deposit_key(self, &collection)?;
            plan.finish(author, SealTo::Deposit(&key), ciphertext_hash)?
        } else {
            let key = keyring.collection_key(self, &collection, epoch)?;
            plan.finish(author, SealTo::Collection(key), ciphertext_hash)?
        };
        let entry = self.next_entry(
            author,
            now,
            EntryBody::RecordPut {
                metadata: metadata.clone(),
            },
        )?;
        Ok((metadata, entry))
    }

    /// Where `author` may write a version of `target` in `collection` at
    /// `now`: the record, the version number, whether the author is a
    /// write-only depositor (whose data key is sealed to the deposit key),
    /// and the collection's current epoch.
    fn record_slot(
        &self,
        author: &Fingerprint,
        now: u64,
        collection: &CollectionId,
        target: RecordTarget,
    ) -> Result<(RecordId, u32, bool, u32)> {
        let coll = self.collections.get(collection).ok_or(Error::Missing {
            what: format!("collection {collection}"),
        })?;
        let is_owner = self.is_owner(author);
        let person = self.person_in(author, Some(collection));
        let permission = coll
            .grants
            .get(&person)
            .filter(|g| g.is_valid_at(now))
            .map(|g| g.permission());
        if !is_owner && !permission.is_some_and(Permission::may_add) {
            return Err(Error::AccessDenied(
                "you have no write access to this collection",
            ));
        }
        let (record, version) = match target {
            RecordTarget::New(id) => {
                if self.records.contains_key(&id) {
                    return Err(Error::InvalidInput(
                        "a record with this identifier exists already",
                    ));
                }
                (id, 1)
            }
            RecordTarget::Next(id) => {
                let rs = self.records.get(&id).ok_or(Error::Missing {
                    what: format!("record {id}"),
                })?;
                if rs.collection != *collection {
                    return Err(Error::InvalidInput("the record is in another collection"));
                }
                if rs.is_deleted() {
                    return Err(Error::InvalidInput("the record was deleted"));
                }
                let first_author = rs
                    .versions
                    .first()
                    .and_then(|(m, _)| m.as_ref())
                    .map(|m| self.writer_person(collection, &m.author()));
                if !is_owner
                    && permission.is_some_and(Permission::own_records_only)
                    && first_author != Some(person)
                {
                    return Err(Error::AccessDenied(
                        "you may add records to this collection, not replace one someone else created",
                    ));
                }
                (id, rs.current_version().saturating_add(1))
            }
        };
        let deposit = !is_owner && permission == Some(Permission::Deposit);
        Ok((record, version, deposit, coll.epoch))
    }

    /// An entry deleting a record.
    pub fn delete_record(
        &self,
        author: &SecretIdentity,
        record: &RecordId,
        now: u64,
    ) -> Result<LogEntry> {
        let rs = self.records.get(record).ok_or(Error::Missing {
            what: format!("record {record}"),
        })?;
        if rs.is_deleted() {
            return Err(Error::InvalidInput("the record is already deleted"));
        }
        let person = self.person_in(&author.fingerprint(), Some(&rs.collection));
        if !self.is_owner(&author.fingerprint()) && !self.may_write(&rs.collection, &person, now) {
            return Err(Error::AccessDenied(
                "you have no write access to this record",
            ));
        }
        let body = EntryBody::RecordDeleted {
            record: *record,
            version: rs.current_version().saturating_add(1),
        };
        self.next_entry(author, now, body)
    }

    /// An entry purging every version of `record` but the current one (all
    /// of them if the record is deleted) for good: relays delete their
    /// ciphertext and nobody, the owner included, can fetch them again.
    /// Owner only.
    pub fn purge_record(
        &self,
        owner: &SecretIdentity,
        record: &RecordId,
        now: u64,
    ) -> Result<LogEntry> {
        self.require_owner(owner)?;
        let rs = self.records.get(record).ok_or(Error::Missing {
            what: format!("record {record}"),
        })?;
        let through = rs.current_version().saturating_sub(1);
        if through <= rs.purged_through {
            return Err(Error::InvalidInput(
                "this record has no earlier versions to purge",
            ));
        }
        self.next_entry(
            owner,
            now,
            EntryBody::RecordPurged {
                record: *record,
                through,
            },
        )
    }

    /// An entry naming the vault's home relay and its mirrors
    /// (`docs/format.md` §8.9), replacing any earlier naming. Owner only;
    /// naming the relays already named is refused as having no effect.
    pub fn name_relays(
        &self,
        owner: &SecretIdentity,
        relays: Relays,
        now: u64,
    ) -> Result<LogEntry> {
        self.require_owner(owner)?;
        if self.relays.as_ref() == Some(&relays) {
            return Err(Error::InvalidInput(
                "the vault already names exactly these relays",
            ));
        }
        self.next_entry(owner, now, EntryBody::RelaysNamed(relays))
    }

    /// The ciphertext addresses of `record`'s purged versions: what relays
    /// and devices delete once the purge is applied.
    pub fn purged_ciphertexts(&self, record: &RecordId) -> Vec<[u8; 32]> {
        self.records
            .get(record)
            .map(|rs| {
                rs.versions
                    .iter()
                    .take(usize::try_from(rs.purged_through).unwrap_or(usize::MAX))
                    .filter_map(|(m, _)| m.as_ref().map(|m| *m.ciphertext_hash()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An entry sharing a collection with `member` (one grant, whatever the
    /// collection's size), as the keyring's identity: the owner, or an agent
    /// of the owner who may share it (`docs/format.md` §8.10), whose share
    /// without an expiry lasts until its own agency's expiry.
    pub fn share_collection(
        &self,
        keyring: &mut Keyring,
        collection: &CollectionId,
        member: &PublicIdentity,
        permission: Permission,
        expires_at: Option<u64>,
    ) -> Result<LogEntry> {
        let me = keyring.identity();
        let now = keyring.now();
        let as_agent = self.sharing_as_agent(me, collection, now)?;
        if member.fingerprint() == me.fingerprint() {
            return Err(Error::InvalidInput(
                "you already have access to this collection",
            ));
        }
        // An agent shares for no longer than its own agency: by default,
        // until it ends.
        let expires_at = match expires_at {
            None if as_agent => self.agency_expiry(&me.fingerprint(), collection, now),
            given => given,
        };
        let key = self.current_key(keyring, collection)?;
        let grant = Grant::for_collection_to(
            me,
            key,
            &self.grant_to(
                member,
                (permission != Permission::Deposit).then_some(collection),
            ),
            permission,
            expires_at,
            now,
            self.names_signer(me),
        )?;
        let entry = self.next_entry(
            me,
            now,
            EntryBody::GrantAdded {
                member: member.clone(),
                grant,
            },
        )?;
        if let (true, EntryBody::GrantAdded { grant, .. }) = (as_agent, entry.body()) {
            self.check_agent_grant(&self.applying(&entry), grant)
                .map_err(|_| {
                    Error::AccessDenied(
                        "as an agent you may share read (or read-add, if you add) access, \
                         no longer than your own, with someone who is not yet a member",
                    )
                })?;
        }
        Ok(entry)
    }

    /// An entry sharing one record's current version with `member`
    /// (read-only).
    pub fn share_record(
        &self,
        keyring: &mut Keyring,
        record: &RecordId,
        member: &PublicIdentity,
        expires_at: Option<u64>,
    ) -> Result<LogEntry> {
        let owner = keyring.identity();
        let now = keyring.now();
        self.require_owner(owner)?;
        let verified = self.record(record)?;
        let data_key = keyring.data_key(self, &verified)?;
        let names_signer = self.names_signer(owner);
        let grant = Grant::for_record(
            owner,
            &verified,
            &data_key,
            member,
            expires_at,
            now,
            names_signer,
        )?;
        self.next_entry(
            owner,
            now,
            EntryBody::GrantAdded {
                member: member.clone(),
                grant,
            },
        )
    }

    /// An entry revoking `members` from a collection: a new epoch, a fresh
    /// key granted to the remaining members, and every live record's data
    /// key re-wrapped (payloads untouched).
    pub fn revoke(
        &self,
        keyring: &mut Keyring,
        collection: &CollectionId,
        members: &[Fingerprint],
    ) -> Result<LogEntry> {
        let me = keyring.identity();
        let now = keyring.now();
        let as_agent = self.sharing_as_agent(me, collection, now)?;
        let coll = self.collections.get(collection).ok_or(Error::Missing {
            what: format!("collection {collection}"),
        })?;
        let mut revoked: Vec<Fingerprint> = members.to_vec();
        revoked.sort_by_key(|f| *f.as_bytes());
        revoked.dedup();
        if revoked.iter().any(|m| {
            !coll.grants.contains_key(m)
                || self.person_in(&me.fingerprint(), Some(collection)) == *m
                || *m == self.owner.fingerprint()
        }) {
            return Err(Error::InvalidInput(
                "can only revoke current members other than yourself and the owner",
            ));
        }
        if revoked.iter().any(|m| self.is_agent_in(m, collection, now)) {
            return Err(Error::InvalidInput(
                "an agent is not revoked but its agency ended (vault agents end)",
            ));
        }
        let old_epoch = coll.epoch;
        let new_epoch = old_epoch
            .checked_add(1)
            .ok_or(Error::InvalidInput("epoch overflow"))?;
        // The owner's grant of the current epoch, or the name sealed under
        // it, may not open: an agent's rotation sealed it wrongly (the log
        // cannot check it, decision 65). The owner then takes the name from
        // an earlier epoch, and each record's key from the wrap it was
        // written with ([`Keyring::data_key`]).
        if !as_agent {
            keyring.check_current_generation(self)?;
        }
        let current_name = keyring
            .collection_key(self, collection, old_epoch)
            .and_then(|k| k.open_name(&coll.sealed_name));
        let name = match current_name {
            Ok(name) => name,
            Err(Error::DecryptionFailed) if !as_agent => {
                match self.earlier_name(keyring, collection) {
                    Ok(name) => name,
                    // No epoch's key opens for the owner: each was sealed
                    // to keys it never held (a collection a thief's device
                    // created, decision 68). It is rotated under a name
                    // saying so; its records, which no key the owner holds
                    // opens, are dropped below.
                    Err(Error::DecryptionFailed) => UNOPENED_NAME.to_owned(),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let new_key = CollectionKey::generate(self.vault, *collection, new_epoch);
        let mut rewraps = Vec::with_capacity(coll.records.len());
        let mut dropped = Vec::new();
        for id in &coll.records {
            let verified = self.record(id)?;
            let version = verified.metadata().version();
            match keyring.data_key(self, &verified) {
                Ok(data_key) => rewraps.push(Rewrap {
                    record: *id,
                    version,
                    wrapped: new_key.wrap(&data_key, id, version),
                }),
                // A key that does not unwrap under the owner's own epoch key
                // was written by a faulty or malicious writer: nobody can
                // open the record, and it must not block the revocation.
                // An agent deletes nothing (docs/format.md §8.10): it leaves
                // such a record to the owner's revocation.
                Err(Error::DecryptionFailed) if !as_agent => dropped.push(*id),
                Err(Error::DecryptionFailed) => {
                    return Err(Error::AccessDenied(
                        "a record of this collection does not open with its key; only the owner's revocation can remove it",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        let mut grants = Vec::new();
        for (member, g) in &coll.grants {
            if revoked.contains(member) {
                continue;
            }
            let identity = self.identities.get(member).ok_or(Error::Missing {
                what: "a member's identity".into(),
            })?;
            grants.push(Grant::for_collection_to(
                me,
                &new_key,
                &self.grant_to(
                    identity,
                    (g.permission() != Permission::Deposit).then_some(collection),
                ),
                g.permission(),
                g.expires_at(),
                now,
                self.names_signer(me),
            )?);
        }
        grants.sort_by_key(|g| *g.member().as_bytes());
        let body = EntryBody::Rotation(Rotation {
            collection: *collection,
            epoch: new_epoch,
            revoked,
            sealed_name: new_key.seal_name(&name)?,
            grants,
            rewraps,
            dropped,
        });
        self.next_entry(me, now, body)
    }

    /// The collection's name, opened from the latest earlier epoch whose
    /// key the keyring's identity holds.
    fn earlier_name(&self, keyring: &mut Keyring, collection: &CollectionId) -> Result<String> {
        let coll = self.collections.get(collection).ok_or(Error::Missing {
            what: format!("collection {collection}"),
        })?;
        for (epoch, sealed) in coll.names.iter().enumerate().rev() {
            let Ok(epoch) = u32::try_from(epoch) else {
                continue;
            };
            if let Ok(name) = keyring
                .collection_key(self, collection, epoch)
                .and_then(|k| k.open_name(sealed))
            {
                return Ok(name);
            }
        }
        Err(Error::DecryptionFailed)
    }

    /// The keyring identity's key of `collection`'s current epoch.
    pub(super) fn current_key<'k>(
        &self,
        keyring: &'k mut Keyring,
        collection: &CollectionId,
    ) -> Result<&'k CollectionKey> {
        let epoch = self
            .collections
            .get(collection)
            .ok_or(Error::Missing {
                what: format!("collection {collection}"),
            })?
            .epoch;
        keyring.collection_key(self, collection, epoch)
    }

    /// An entry withdrawing a single-record grant.
    pub fn revoke_record_grant(
        &self,
        owner: &SecretIdentity,
        record: &RecordId,
        member: &Fingerprint,
        now: u64,
    ) -> Result<LogEntry> {
        self.require_owner(owner)?;
        if !self.record_grants.contains_key(&(*record, *member)) {
            return Err(Error::InvalidInput("no such record grant"));
        }
        self.next_entry(
            owner,
            now,
            EntryBody::RecordGrantRevoked {
                record: *record,
                member: *member,
            },
        )
    }

    /// The collection's name, decrypted with the caller's key.
    pub fn collection_name(
        &self,
        keyring: &mut Keyring,
        collection: &CollectionId,
    ) -> Result<String> {
        let coll = self.collections.get(collection).ok_or(Error::Missing {
            what: format!("collection {collection}"),
        })?;
        let key = keyring.collection_key(self, collection, coll.epoch)?;
        key.open_name(&coll.sealed_name)
    }
}
