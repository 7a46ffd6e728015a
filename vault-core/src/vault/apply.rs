//! The log's rules (`docs/format.md` §8.2 to §8.7): verifying a log and
//! applying each entry, one function per entry kind.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::grant::{Grant, GrantScope, Permission, VerifiedGrant};
use crate::identity::{Fingerprint, PublicIdentity};
use crate::ids::{CollectionId, RecordId};
use crate::log::{scope_tag, Checkpoint, EntryBody, LogEntry, Rotation};
use crate::record::RecordMetadata;

use super::*;

impl VaultState {
    /// Starts a state from the genesis entry (sequence 0).
    pub fn from_genesis(entry: &LogEntry) -> Result<Self> {
        let EntryBody::Genesis { owner } = entry.body() else {
            return Err(Error::InvalidEntry {
                seq: entry.seq(),
                reason: "the first entry must be a genesis entry",
            });
        };
        if entry.seq() != 0 || *entry.prev() != [0; 32] {
            return Err(Error::InvalidEntry {
                seq: entry.seq(),
                reason: "genesis must have sequence 0 and no previous hash",
            });
        }
        if entry.author() != owner.fingerprint() {
            return Err(Error::Unauthorized {
                seq: 0,
                author: entry.author(),
                reason: "is not the owner named in the genesis entry",
            });
        }
        entry.verify_signature(owner)?;
        let mut identities = HashMap::new();
        identities.insert(owner.fingerprint(), owner.clone());
        Ok(Self {
            vault: entry.vault(),
            owner: owner.clone(),
            hashes: vec![*entry.hash()],
            last_time: entry.time(),
            identities,
            collections: BTreeMap::new(),
            records: HashMap::new(),
            record_grants: HashMap::new(),
            viewer: None,
            entry_version: entry.version(),
            foreign: HashMap::new(),
            relays: None,
            agencies: BTreeMap::new(),
            owner_devices: None,
            member_devices: BTreeSet::new(),
            first_redacted: None,
        })
    }

    /// Sets whose view of the log this state is, read at `now`
    /// (`docs/format.md` §8.8): from now on, entries shown redacted are
    /// accepted where this reader may be shown them redacted, and refused
    /// as withheld ([`Error::Withheld`]) where they concern a collection
    /// the reader holds a grant of in force at `now` (any entry, for the
    /// owner). A state without a viewer (a relay's) refuses every redacted
    /// entry.
    pub fn set_viewer(&mut self, viewer: Fingerprint, now: u64) {
        self.viewer = Some((viewer, now));
    }

    /// Verifies a whole log from genesis.
    pub fn verify_log<'a>(entries: impl IntoIterator<Item = &'a LogEntry>) -> Result<Self> {
        Self::verify_log_from(entries, None)
    }

    /// Verifies a whole log, trusting the prefix up to `trusted` (a
    /// checkpoint this device verified before): entries up to it are
    /// replayed without re-checking signatures, but the chain must reach
    /// exactly the trusted head, and everything after it is fully verified.
    pub fn verify_log_from<'a>(
        entries: impl IntoIterator<Item = &'a LogEntry>,
        trusted: Option<&Checkpoint>,
    ) -> Result<Self> {
        Self::verify(None, entries, trusted)
    }

    /// [`Self::verify_log_from`] as `viewer` sees the log at `now`
    /// ([`Self::set_viewer`]): entries after `trusted` that are redacted
    /// must be ones this reader may be shown redacted.
    pub fn verify_log_as<'a>(
        viewer: &Fingerprint,
        now: u64,
        entries: impl IntoIterator<Item = &'a LogEntry>,
        trusted: Option<&Checkpoint>,
    ) -> Result<Self> {
        Self::verify(Some((*viewer, now)), entries, trusted)
    }

    fn verify<'a>(
        viewer: Option<(Fingerprint, u64)>,
        entries: impl IntoIterator<Item = &'a LogEntry>,
        trusted: Option<&Checkpoint>,
    ) -> Result<Self> {
        let mut it = entries.into_iter();
        let genesis = it.next().ok_or(Error::Missing {
            what: "the vault log (no genesis entry)".into(),
        })?;
        let mut state = Self::from_genesis(genesis)?;
        state.viewer = viewer;
        for entry in it {
            let trusted_prefix = trusted.is_some_and(|t| entry.seq() <= t.seq);
            match state.apply_inner(entry, !trusted_prefix) {
                // Served at once from genesis, a collection's entries are
                // whole up to the point the reader left it and redacted
                // after, never redacted and then whole again: an entry
                // shown redacted before this one was withheld.
                Err(Error::ViewChanged { seq }) if trusted.is_none() => {
                    return Err(Error::Withheld { seq })
                }
                other => other?,
            }
        }
        if let Some(t) = trusted {
            state.check_persisted(t)?;
        }
        Ok(state)
    }

    /// Verifies and applies the next entry. Every check runs before any
    /// change, so on error the state is exactly as it was.
    pub fn apply(&mut self, entry: &LogEntry) -> Result<()> {
        self.apply_inner(entry, true)
    }

    /// Applies `entries` in order with their signature checks deferred and
    /// then run together on every core (decision 63): `true` if
    /// every entry applied and every check held, which is exactly when
    /// [`VaultState::apply`] on each in turn would have succeeded, with the
    /// same result. On `false` this state is meaningless (it may hold
    /// entries whose signatures do not verify): throw it away and apply
    /// the entries one by one to a state as it was before to learn the
    /// error.
    pub fn apply_deferred(&mut self, entries: &[LogEntry]) -> bool {
        let deferral = crate::deferred::Deferral::start();
        if entries.iter().any(|e| self.apply(e).is_err()) {
            return false;
        }
        deferral.finish()
    }

    pub(super) fn head_seq(&self) -> u64 {
        (self.hashes.len() as u64).saturating_sub(1)
    }

    /// With `check_signature` false (replaying a log this device verified
    /// before, up to its persisted head) no signature is checked: neither
    /// the entry's nor those inside its payload (record metadata, grants),
    /// which were checked when the entry arrived and which the entry hash
    /// chain to the persisted head covers.
    pub(super) fn apply_inner(&mut self, entry: &LogEntry, check_signature: bool) -> Result<()> {
        let seq = entry.seq();
        let next = self.hashes.len() as u64;
        if entry.vault() != self.vault {
            return Err(Error::ContextMismatch {
                what: "log entry",
                field: "vault",
            });
        }
        if seq < next {
            let ours = usize::try_from(seq).ok().and_then(|i| self.hashes.get(i));
            return Err(match ours {
                Some(h) if h == entry.hash() => Error::InvalidEntry {
                    seq,
                    reason: "duplicate of an entry already applied",
                },
                _ => Error::Fork { seq },
            });
        }
        if seq > next {
            return Err(Error::Missing {
                what: format!("vault log entries {next} to {}", seq - 1),
            });
        }
        if Some(entry.prev()) != self.hashes.last() {
            return Err(Error::ChainBroken { seq });
        }
        if entry.version() < self.entry_version {
            return Err(Error::InvalidEntry {
                seq,
                reason: "a version-1 entry after a version-2 entry",
            });
        }
        if entry.is_redacted() {
            self.apply_redacted(entry, check_signature)?;
            self.hashes.push(*entry.hash());
            self.entry_version = entry.version();
            return Ok(());
        }
        if entry.time() < self.last_time {
            return Err(Error::InvalidEntry {
                seq,
                reason: "its time is before the previous entry's",
            });
        }
        // The collection the entry concerns, found once: authorship, the
        // scope tag and the kind's rules all go by it.
        let collection = self.entry_collection(entry.body());
        if entry.version() >= 2 && self.apply_outside(entry, collection, check_signature)? {
            self.hashes.push(*entry.hash());
            self.last_time = entry.time();
            self.entry_version = entry.version();
            return Ok(());
        }
        let author = self
            .author_document_in(&entry.author(), collection.as_ref())
            .ok_or(Error::Unauthorized {
                seq,
                author: entry.author(),
                reason: "is not the owner or a member of this vault",
            })?
            .clone();
        if check_signature {
            entry.verify_signature(&author)?;
        }
        if entry.version() >= 2 {
            self.check_scope(entry, collection)?;
        }
        let ctx = Applying {
            check_signatures: check_signature,
            ..self.applying_in(entry, collection)
        };

        match entry.body() {
            EntryBody::Genesis { .. } => Err(ctx.invalid("a second genesis entry")),
            EntryBody::CollectionCreated {
                collection,
                sealed_name,
                owner_grant,
            } => self.apply_collection_created(&ctx, collection, sealed_name, owner_grant),
            EntryBody::RecordPut { metadata } => {
                self.apply_record_put(&ctx, entry, &author, metadata)
            }
            EntryBody::RecordDeleted { record, version } => {
                self.apply_record_deleted(&ctx, record, version)
            }
            EntryBody::GrantAdded { member, grant } => self.apply_grant_added(&ctx, member, grant),
            EntryBody::Rotation(rotation) => self.apply_rotation_entry(&ctx, rotation),
            EntryBody::RecordPurged { record, through } => {
                self.apply_record_purged(&ctx, record, through)
            }
            EntryBody::RecordGrantRevoked { record, member } => {
                self.apply_record_grant_revoked(&ctx, record, member)
            }
            EntryBody::RelaysNamed(relays) => {
                if !ctx.is_owner {
                    return Err(ctx.unauthorized("is not the owner, so may not name relays"));
                }
                self.relays = Some(relays.clone());
                Ok(())
            }
            EntryBody::DevicesListed { person, lists } => {
                self.apply_devices_listed(&ctx, person, lists)
            }
            EntryBody::MemberDevicesListed {
                collection,
                person,
                lists,
            } => self.apply_member_devices_listed(&ctx, collection, person, lists),
            EntryBody::AgentNamed(named) => self.apply_agent_named(&ctx, named),
            EntryBody::AgencyEnded {
                delegation,
                collection,
            } => self.apply_agency_ended(&ctx, delegation, collection),
            EntryBody::Redacted => Err(ctx.invalid("a redacted entry")),
        }?;

        if let Some(c) = collection.and_then(|c| self.collections.get_mut(&c)) {
            c.signers.insert(entry.author());
        }
        self.hashes.push(*entry.hash());
        self.last_time = entry.time();
        self.entry_version = entry.version();
        Ok(())
    }

    /// A redacted entry (`docs/format.md` §8.8): it takes its place in the
    /// chain and changes nothing, if this reader may be shown it redacted.
    fn apply_redacted(&mut self, entry: &LogEntry, check: bool) -> Result<()> {
        let seq = entry.seq();
        let withheld = Error::Withheld { seq };
        if *entry.scope() == [0; 32] {
            return Err(withheld);
        }
        let owner = self.owner.fingerprint();
        let viewer = match self.viewer {
            Some(v) => Some(v),
            // Replaying a log this device verified before: the checks ran
            // when the entry arrived.
            None if !check => None,
            None => {
                return Err(Error::InvalidEntry {
                    seq,
                    reason: "a redacted entry where the whole entry is needed",
                })
            }
        };
        if check && viewer.is_some_and(|(v, _)| self.person_of(&v) == owner) {
            return Err(withheld);
        }
        let vault = self.vault;
        let concerned = self
            .collections
            .keys()
            .find(|id| scope_tag(&vault, seq, Some(id)) == *entry.scope())
            .copied();
        // The viewer reads as its person: a member's device in a collection
        // carrying the member's list is shown what the member is.
        let viewer = viewer.map(|(v, now)| (self.person_in(&v, concerned.as_ref()), now));
        if let Some(coll) = concerned.and_then(|c| self.collections.get_mut(&c)) {
            // A grant in force now: the relay shows this reader every entry
            // of the collection whole. An expired one: entries after its
            // expiry are redacted, and their times are hidden, so any entry
            // may be.
            let holds = |(v, now): (Fingerprint, u64)| {
                coll.grants.get(&v).is_some_and(|g| g.is_valid_at(now))
            };
            if check && viewer.is_some_and(holds) {
                return Err(withheld);
            }
            coll.hidden_since.get_or_insert(seq);
        }
        if check && viewer.is_some() {
            self.first_redacted.get_or_insert(seq);
        }
        Ok(())
    }

    /// The collection an entry concerns (`None` for genesis, or for an
    /// entry naming a record this state does not know).
    pub(crate) fn entry_collection(&self, body: &EntryBody) -> Option<CollectionId> {
        if let Some(c) = body.named_collection() {
            return Some(c);
        }
        let record = match body {
            EntryBody::RecordDeleted { record, .. } | EntryBody::RecordPurged { record, .. } => {
                record
            }
            EntryBody::RecordGrantRevoked { record, member } => {
                if let Some(g) = self.record_grants.get(&(*record, *member)) {
                    return Some(g.scope().collection());
                }
                record
            }
            _ => return None,
        };
        self.records
            .get(record)
            .map(|rs| rs.collection)
            .or_else(|| {
                let (m, _) = self.foreign.get(record)?.values().next()?;
                Some(m.collection())
            })
    }

    /// Checks a whole version-2 entry's scope tag against the collection it
    /// concerns, and that this reader was not shown earlier entries of that
    /// collection redacted.
    fn check_scope(&self, entry: &LogEntry, collection: Option<CollectionId>) -> Result<()> {
        let seq = entry.seq();
        if scope_tag(&self.vault, seq, collection.as_ref()) != *entry.scope() {
            return Err(Error::ContextMismatch {
                what: "log entry",
                field: "scope",
            });
        }
        if collection
            .and_then(|c| self.collections.get(&c))
            .is_some_and(|c| c.hidden_since.is_some())
        {
            return Err(Error::ViewChanged { seq });
        }
        Ok(())
    }

    /// Applies a whole version-2 entry that concerns a collection this
    /// reader does not follow: a record version, grant or grant withdrawal
    /// shown to the holder of a single-record grant (`docs/format.md`
    /// §8.8). Returns whether it applied the entry; `false` for an entry
    /// of a followed collection, left to the kind's own rules.
    fn apply_outside(
        &mut self,
        entry: &LogEntry,
        collection: Option<CollectionId>,
        check: bool,
    ) -> Result<bool> {
        let seq = entry.seq();
        // A collection whose later entries this reader was shown redacted
        // (it left it) is no longer followed: a record of it shared alone
        // with the reader arrives as for any outsider.
        let follows = collection
            .as_ref()
            .and_then(|c| self.collections.get(c))
            .is_some_and(|c| c.hidden_since.is_none())
            || matches!(
                entry.body(),
                EntryBody::CollectionCreated { .. }
                    | EntryBody::Genesis { .. }
                    | EntryBody::RelaysNamed(_)
                    | EntryBody::DevicesListed { .. }
            );
        let view_changed = Error::ViewChanged { seq };
        if follows {
            return Ok(false);
        }
        // Whose view: the viewer's; or, replaying a log this device
        // verified before (as its viewer, whoever that was), anyone's.
        let viewer = match self.viewer {
            Some((v, _)) if self.is_owner(&v) => return Ok(false),
            Some((v, _)) => Some(v),
            None if !check => None,
            None => return Ok(false),
        };
        if collection.is_none() {
            // A record this reader never saw: its entries were shown
            // redacted before and now are not.
            return Err(view_changed);
        }
        let owner = self.owner.clone();
        let by_owner = self.is_owner(&entry.author());
        let unauthorized = |reason| Error::Unauthorized {
            seq,
            author: entry.author(),
            reason,
        };
        let not_owner = if self.author_document(&entry.author()).is_some() {
            unauthorized("is not the owner, so may not share or revoke")
        } else {
            unauthorized("is not the owner or a member of this vault")
        };
        match entry.body() {
            EntryBody::RecordPut { metadata } => {
                if metadata.vault() != self.vault {
                    return Err(Error::ContextMismatch {
                        what: "record metadata",
                        field: "vault",
                    });
                }
                if check {
                    if let Some(author) = self.author_document(&entry.author()) {
                        entry.verify_signature(author)?;
                        metadata.verify_signature(author)?;
                    }
                }
                self.foreign
                    .entry(metadata.record())
                    .or_default()
                    .insert(metadata.version(), (metadata.clone(), seq));
            }
            EntryBody::GrantAdded { member, grant } => {
                if !by_owner {
                    return Err(not_owner);
                }
                if check {
                    let signer = self.author_document(&entry.author()).unwrap_or(&owner);
                    entry.verify_signature(signer)?;
                }
                let grant = self.verify_grant(grant, seq, check, &entry.author())?;
                let GrantScope::Record { record, .. } = grant.scope() else {
                    return Err(view_changed);
                };
                let to = grant.member();
                if viewer.is_some_and(|v| v != to) || member.fingerprint() != to {
                    return Err(view_changed);
                }
                self.record_grants.insert((record, to), grant);
            }
            EntryBody::RecordGrantRevoked { record, member }
                if viewer.is_none_or(|v| v == *member) =>
            {
                if !by_owner {
                    return Err(not_owner);
                }
                if check {
                    let signer = self.author_document(&entry.author()).unwrap_or(&owner);
                    entry.verify_signature(signer)?;
                }
                self.record_grants.remove(&(*record, *member));
            }
            _ => return Err(view_changed),
        }
        if scope_tag(&self.vault, seq, collection.as_ref()) != *entry.scope() {
            return Err(Error::ContextMismatch {
                what: "log entry",
                field: "scope",
            });
        }
        Ok(true)
    }

    /// A grant of this vault carried by an entry signed by `author` (a
    /// member's key, the owner's root, or a device of the owner's), its
    /// signature checked unless `check_signature` is false (replaying a
    /// verified log). A grant is signed by the author of its entry: the
    /// owner root's grants are version 1 or 2 (the owner implied), an
    /// agent's and an owner's device's are version 3 and name it
    /// (`docs/format.md` §7.3). Its key generation is the member's current
    /// one (the owner's, once the owner lists devices; 0 otherwise).
    pub(super) fn verify_grant(
        &self,
        grant: &Grant,
        seq: u64,
        check_signature: bool,
        author: &Fingerprint,
    ) -> Result<VerifiedGrant> {
        if grant.vault() != self.vault {
            return Err(Error::ContextMismatch {
                what: "grant",
                field: "vault",
            });
        }
        let owner = self.owner.fingerprint();
        if grant.signer().unwrap_or(owner) != *author {
            return Err(Error::InvalidEntry {
                seq,
                reason: "a grant is signed by the author of the entry carrying it",
            });
        }
        // A deposit grant carries a deposit key sealed to the member's
        // document, as a grant of one record does: generation 0.
        let collection = match grant.scope() {
            GrantScope::Collection { collection, .. }
                if grant.permission() != Permission::Deposit =>
            {
                Some(collection)
            }
            _ => None,
        };
        if grant.generation() != self.expected_generation(&grant.member(), collection.as_ref()) {
            return Err(Error::InvalidEntry {
                seq,
                reason: "a grant is sealed to its member's current key generation",
            });
        }
        if !check_signature {
            return Ok(grant.verified_before());
        }
        let signer = self
            .author_document_in(author, Some(&grant.scope().collection()))
            .ok_or(Error::Unauthorized {
                seq,
                author: *author,
                reason: "is not the owner or a member of this vault",
            })?;
        grant.verify(signer).map_err(|_| Error::Unauthorized {
            seq,
            author: grant.member(),
            reason: if grant.signer().is_some() {
                "holds a grant not signed by the agent it names"
            } else {
                "holds a grant not signed by the vault owner"
            },
        })
    }

    /// The entry being applied, as the kind-specific rules need it.
    pub(super) fn applying(&self, entry: &LogEntry) -> Applying {
        self.applying_in(entry, self.entry_collection(entry.body()))
    }

    /// [`Self::applying`] for an entry whose collection is known.
    fn applying_in(&self, entry: &LogEntry, collection: Option<CollectionId>) -> Applying {
        Applying {
            seq: entry.seq(),
            author: self.person_in(&entry.author(), collection.as_ref()),
            device: entry.author(),
            time: entry.time(),
            is_owner: self.is_owner(&entry.author()),
            check_signatures: true,
        }
    }

    /// Whether `who` may delete or replace any record of `collection` at
    /// `at` (a read-write grant in force; a read-add grant may not).
    pub(super) fn may_write(&self, collection: &CollectionId, who: &Fingerprint, at: u64) -> bool {
        self.collections
            .get(collection)
            .and_then(|c| c.grants.get(who))
            .is_some_and(|g| g.permission() == Permission::ReadWrite && g.is_valid_at(at))
    }

    pub(super) fn check_record_put(
        &self,
        entry: &LogEntry,
        m: &RecordMetadata,
        author: &PublicIdentity,
        is_owner: bool,
        check_signature: bool,
    ) -> Result<()> {
        let seq = entry.seq();
        if m.vault() != self.vault {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "vault",
            });
        }
        if m.author() != entry.author() {
            return Err(Error::InvalidEntry {
                seq,
                reason: "record metadata names another author than the entry",
            });
        }
        if check_signature {
            m.verify_signature(author)?;
        }
        let coll = self
            .collections
            .get(&m.collection())
            .ok_or(Error::InvalidEntry {
                seq,
                reason: "record in an unknown collection",
            })?;
        // A member's device writes as the member where the collection
        // carries its list: the member's grant decides.
        let person = self.person_in(&entry.author(), Some(&m.collection()));
        if !is_owner {
            let grant = coll.grants.get(&person).ok_or(Error::Unauthorized {
                seq,
                author: entry.author(),
                reason: "is not a member of this record's collection",
            })?;
            if !grant.permission().may_add() {
                return Err(Error::Unauthorized {
                    seq,
                    author: entry.author(),
                    reason: "is a read-only member of this record's collection",
                });
            }
            if grant.permission() == Permission::Deposit && !m.is_deposit() {
                return Err(Error::Unauthorized {
                    seq,
                    author: entry.author(),
                    reason: "is a depositor, whose records must be sealed to the deposit key",
                });
            }
            if grant.permission().own_records_only()
                && self
                    .records
                    .get(&m.record())
                    .and_then(|rs| rs.versions.first())
                    .and_then(|(first, _)| first.as_ref())
                    .is_some_and(|first| {
                        self.writer_person(&m.collection(), &first.author()) != person
                    })
            {
                return Err(Error::Unauthorized {
                    seq,
                    author: entry.author(),
                    reason: "may add records but not replace one someone else created",
                });
            }
            if !grant.is_valid_at(entry.time()) {
                return Err(Error::Unauthorized {
                    seq,
                    author: entry.author(),
                    reason: "wrote after their grant expired",
                });
            }
        }
        if m.epoch() != coll.epoch {
            return Err(Error::ContextMismatch {
                what: "record metadata",
                field: "epoch",
            });
        }
        match self.records.get(&m.record()) {
            None if coll.records.len() >= MAX_COLLECTION_RECORDS => Err(Error::InvalidEntry {
                seq,
                reason: "the collection already holds the maximum number of records",
            }),
            None if m.version() == 1 => Ok(()),
            None => Err(Error::InvalidEntry {
                seq,
                reason: "a new record must start at version 1",
            }),
            Some(rs) if rs.collection != m.collection() => Err(Error::ContextMismatch {
                what: "record metadata",
                field: "collection",
            }),
            Some(rs) if rs.is_deleted() => Err(Error::InvalidEntry {
                seq,
                reason: "the record was deleted",
            }),
            Some(rs) if m.version() != rs.current_version().saturating_add(1) => {
                Err(Error::StaleVersion {
                    current: rs.current_version(),
                    offered: m.version(),
                })
            }
            Some(_) => Ok(()),
        }
    }

    pub(super) fn apply_rotation(
        &mut self,
        r: &Rotation,
        seq: u64,
        check_signatures: bool,
        author: &Fingerprint,
        time: u64,
    ) -> Result<()> {
        let invalid = |reason| Error::InvalidEntry { seq, reason };
        let coll = self
            .collections
            .get(&r.collection)
            .ok_or(invalid("rotation of an unknown collection"))?;
        if r.epoch != coll.epoch.saturating_add(1) {
            return Err(invalid("rotation must move to the next epoch"));
        }
        let owner = self.owner.fingerprint();
        if r.revoked.contains(&owner) {
            return Err(invalid("the owner cannot be revoked"));
        }
        if r.revoked.iter().any(|m| !coll.grants.contains_key(m)) {
            return Err(invalid("revokes someone who is not a member"));
        }
        if r.revoked
            .iter()
            .any(|m| self.is_agent_in(m, &r.collection, time))
        {
            return Err(invalid(
                "revokes an agent in force: end the agency first (an agency-ended entry)",
            ));
        }
        let remaining: BTreeSet<Fingerprint> = coll
            .grants
            .keys()
            .filter(|m| !r.revoked.contains(m))
            .copied()
            .collect();
        let granted: BTreeSet<Fingerprint> = r.grants.iter().map(Grant::member).collect();
        if remaining != granted || granted.len() != r.grants.len() {
            return Err(invalid(
                "new grants must go to exactly the remaining members",
            ));
        }
        let mut grants = BTreeMap::new();
        for g in &r.grants {
            let g = self.verify_grant(g, seq, check_signatures, author)?;
            if g.scope()
                != (GrantScope::Collection {
                    collection: r.collection,
                    epoch: r.epoch,
                })
            {
                return Err(invalid("a new grant is not for the new epoch"));
            }
            if g.member() == owner
                && (g.permission() != Permission::ReadWrite || g.expires_at().is_some())
            {
                return Err(invalid(
                    "the owner's new grant must be read-write without expiry",
                ));
            }
            grants.insert(g.member(), g);
        }
        let mut accounted: Vec<RecordId> = r
            .rewraps
            .iter()
            .map(|rw| rw.record)
            .chain(r.dropped.iter().copied())
            .collect();
        accounted.sort_unstable_by_key(|id| *id.as_bytes());
        if accounted.len() != coll.records.len() || !accounted.iter().eq(coll.records.iter()) {
            return Err(invalid(
                "rotation must re-wrap or drop every live record of the collection, each once",
            ));
        }
        for rw in &r.rewraps {
            let current = self
                .records
                .get(&rw.record)
                .map(RecordState::current_version);
            if current != Some(rw.version) {
                return Err(invalid("a re-wrap names a stale record version"));
            }
        }
        for rw in &r.rewraps {
            if let Some(rs) = self.records.get_mut(&rw.record) {
                rs.key_epoch = r.epoch;
                rs.wrapped = Some(KeySeal::Wrapped(rw.wrapped.clone()));
            }
        }
        for id in &r.dropped {
            if let Some(rs) = self.records.get_mut(id) {
                rs.retire_current();
                rs.versions.push((None, seq));
            }
        }
        if let Some(coll) = self.collections.get_mut(&r.collection) {
            for id in &r.dropped {
                coll.records.remove(id);
            }
            for m in &r.revoked {
                coll.left.insert(*m, seq);
            }
            let previous = std::mem::replace(&mut coll.grants, grants);
            coll.history.push(previous);
            let current = &coll.grants;
            coll.granted_by.retain(|m, _| current.contains_key(m));
            let name = std::mem::replace(&mut coll.sealed_name, r.sealed_name.clone());
            coll.names.push(name);
            coll.epoch = r.epoch;
            coll.dirty = false;
        }
        Ok(())
    }

    fn apply_collection_created(
        &mut self,
        ctx: &Applying,
        collection: &CollectionId,
        sealed_name: &[u8],
        owner_grant: &Grant,
    ) -> Result<()> {
        let (seq, is_owner) = (ctx.seq, ctx.is_owner);
        if !is_owner {
            return Err(ctx.unauthorized("is not the owner, so may not create collections"));
        }
        if self.collections.contains_key(collection) {
            return Err(ctx.invalid("the collection already exists"));
        }
        let grant = self.verify_grant(owner_grant, seq, ctx.check_signatures, &ctx.device)?;
        if grant.scope()
            != (GrantScope::Collection {
                collection: *collection,
                epoch: 0,
            })
            || grant.member() != self.owner.fingerprint()
            || grant.permission() != Permission::ReadWrite
            || grant.expires_at().is_some()
        {
            return Err(ctx.invalid("the owner grant does not match the new collection"));
        }
        let mut grants = BTreeMap::new();
        grants.insert(grant.member(), grant);
        self.collections.insert(
            *collection,
            Collection {
                epoch: 0,
                sealed_name: sealed_name.to_vec(),
                grants,
                granted_by: BTreeMap::new(),
                history: Vec::new(),
                names: Vec::new(),
                records: BTreeSet::new(),
                dirty: false,
                left: BTreeMap::new(),
                hidden_since: None,
                people: BTreeMap::new(),
                signers: std::collections::BTreeSet::new(),
            },
        );
        Ok(())
    }

    fn apply_record_put(
        &mut self,
        ctx: &Applying,
        entry: &LogEntry,
        author: &PublicIdentity,
        metadata: &RecordMetadata,
    ) -> Result<()> {
        let (seq, is_owner) = (ctx.seq, ctx.is_owner);
        self.check_record_put(entry, metadata, author, is_owner, ctx.check_signatures)?;
        let coll = self
            .collections
            .get_mut(&metadata.collection())
            .ok_or(ctx.invalid("unknown collection"))?;
        if !coll.records.insert(metadata.record()) {
            coll.dirty = true;
        }
        let rs = self
            .records
            .entry(metadata.record())
            .or_insert(RecordState {
                collection: metadata.collection(),
                versions: Vec::new(),
                key_epoch: metadata.epoch(),
                wrapped: None,
                last_wraps: BTreeMap::new(),
                purged_through: 0,
            });
        rs.retire_current();
        rs.versions.push((Some(metadata.clone()), seq));
        rs.key_epoch = metadata.epoch();
        rs.wrapped = Some(metadata.wrapped_key.clone());
        Ok(())
    }

    fn apply_record_deleted(
        &mut self,
        ctx: &Applying,
        record: &RecordId,
        version: &u32,
    ) -> Result<()> {
        let (seq, is_owner) = (ctx.seq, ctx.is_owner);
        let rs = self
            .records
            .get(record)
            .ok_or(ctx.invalid("unknown record"))?;
        if rs.is_deleted() {
            return Err(ctx.invalid("the record is already deleted"));
        }
        if *version != rs.current_version().saturating_add(1) {
            return Err(Error::StaleVersion {
                current: rs.current_version(),
                offered: *version,
            });
        }
        let collection = rs.collection;
        if !is_owner && !self.may_write(&collection, &ctx.author, ctx.time) {
            return Err(ctx.unauthorized("has no write access to this record's collection"));
        }
        if let Some(rs) = self.records.get_mut(record) {
            rs.retire_current();
            rs.versions.push((None, seq));
        }
        if let Some(c) = self.collections.get_mut(&collection) {
            c.records.remove(record);
            c.dirty = true;
        }
        Ok(())
    }

    fn apply_grant_added(
        &mut self,
        ctx: &Applying,
        member: &PublicIdentity,
        grant: &Grant,
    ) -> Result<()> {
        let seq = ctx.seq;
        if !ctx.is_owner {
            self.check_agent_grant(ctx, grant)?;
        }
        if member.fingerprint() != grant.member() {
            return Err(ctx.invalid("the grant is for another identity than the one attached"));
        }
        if grant.member() == self.owner.fingerprint() {
            return Err(ctx.invalid("the owner cannot be granted access to their own vault"));
        }
        if self.listed_device(&grant.member()).is_some()
            || self.member_devices.contains(&grant.member())
        {
            return Err(ctx.invalid(
                "a device a person's lists name acts as that person, and is never granted",
            ));
        }
        if let Some(known) = self.identities.get(&member.fingerprint()) {
            if known != member {
                return Err(ctx.invalid("a different document for a known member"));
            }
        }
        let grant = self.verify_grant(grant, seq, ctx.check_signatures, &ctx.device)?;
        match grant.scope() {
            GrantScope::Collection { collection, epoch } => {
                if ctx.is_owner {
                    self.check_owner_grant_to(ctx, &grant.member(), &collection)?;
                }
                let coll = self
                    .collections
                    .get_mut(&collection)
                    .ok_or(ctx.invalid("grant for an unknown collection"))?;
                if epoch != coll.epoch {
                    return Err(ctx.invalid("grant for a past or future epoch"));
                }
                if !coll.grants.contains_key(&grant.member())
                    && coll.grants.len() >= MAX_COLLECTION_MEMBERS
                {
                    return Err(
                        ctx.invalid("the collection already has the maximum number of members")
                    );
                }
                let member = grant.member();
                coll.grants.insert(member, grant);
                coll.granted_by.insert(member, ctx.device);
                self.close_expired_agencies(&member, &collection, seq);
            }
            GrantScope::Record {
                collection,
                record,
                version,
            } => {
                let rs = self
                    .records
                    .get(&record)
                    .ok_or(ctx.invalid("grant for an unknown record"))?;
                if rs.collection != collection || rs.is_deleted() || version != rs.current_version()
                {
                    return Err(
                        ctx.invalid("record grant does not name the record's current version")
                    );
                }
                self.record_grants.insert((record, grant.member()), grant);
            }
        }
        self.identities.insert(member.fingerprint(), member.clone());
        Ok(())
    }

    fn apply_rotation_entry(&mut self, ctx: &Applying, rotation: &Rotation) -> Result<()> {
        if !ctx.is_owner {
            self.check_agent_rotation(ctx, rotation)?;
        }
        self.apply_rotation(
            rotation,
            ctx.seq,
            ctx.check_signatures,
            &ctx.device,
            ctx.time,
        )
    }

    fn apply_record_purged(
        &mut self,
        ctx: &Applying,
        record: &RecordId,
        through: &u32,
    ) -> Result<()> {
        let is_owner = ctx.is_owner;
        if !is_owner {
            return Err(ctx.unauthorized("is not the owner, so may not purge"));
        }
        let rs = self
            .records
            .get_mut(record)
            .ok_or(ctx.invalid("unknown record"))?;
        if *through <= rs.purged_through {
            return Err(ctx.invalid("those versions are already purged"));
        }
        if *through >= rs.current_version() {
            return Err(
                ctx.invalid("a purge must leave the current version (delete the record first)")
            );
        }
        rs.purged_through = *through;
        rs.last_wraps.retain(|v, _| *v > *through);
        let through = *through;
        self.record_grants.retain(|(r, _), g| {
            *r != *record
                || !matches!(g.scope(), GrantScope::Record { version, .. } if version <= through)
        });
        Ok(())
    }

    fn apply_record_grant_revoked(
        &mut self,
        ctx: &Applying,
        record: &RecordId,
        member: &Fingerprint,
    ) -> Result<()> {
        let is_owner = ctx.is_owner;
        if !is_owner {
            return Err(ctx.unauthorized("is not the owner, so may not revoke"));
        }
        if self.record_grants.remove(&(*record, *member)).is_none() {
            return Err(ctx.invalid("no such record grant"));
        }
        Ok(())
    }
}

/// The entry being applied, as the kind-specific rules need it
/// ([`VaultState::applying`]).
pub(super) struct Applying {
    pub(super) seq: u64,
    /// The person the entry is written for: its signer, or the owner for
    /// a device of the owner's.
    pub(super) author: Fingerprint,
    /// The key that signed the entry (a device of the owner's, or the
    /// author itself).
    pub(super) device: Fingerprint,
    pub(super) time: u64,
    pub(super) is_owner: bool,
    /// False when replaying a log this device verified before.
    pub(super) check_signatures: bool,
}

impl Applying {
    pub(super) fn unauthorized(&self, reason: &'static str) -> Error {
        Error::Unauthorized {
            seq: self.seq,
            author: self.author,
            reason,
        }
    }

    pub(super) fn invalid(&self, reason: &'static str) -> Error {
        Error::InvalidEntry {
            seq: self.seq,
            reason,
        }
    }
}
