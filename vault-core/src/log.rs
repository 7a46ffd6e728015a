//! The vault log (`docs/format.md` §8 and §9): signed, hash-chained entries,
//! and checkpoints that name a point in the chain.
//!
//! This module is the wire format only. Which entries are allowed, by whom
//! and in what order is decided by [`crate::VaultState`].

use std::fmt;

use crate::agency::AgentNamed;
use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::grant::Grant;
use crate::identity::{Fingerprint, PublicIdentity, SecretIdentity, MAX_IDENTITY_LEN};
use crate::ids::{CollectionId, DelegationId, RecordId, VaultId};
use crate::keys::WrappedDataKey;
use crate::primitives::{self, sha256};
use crate::record::{RecordMetadata, DEPOSIT_METADATA_LEN};
use crate::request::RelayOrigin;

/// Version 1 entries: the payload is signed and hashed as it is, and
/// every reader sees every entry whole (read only since version 2).
const ENTRY_VERSION_1: u8 = 1;
/// Version 2 entries (`docs/format.md` §8.1): the signature and the chain
/// cover a digest of the payload, so a relay can serve an entry redacted.
const ENTRY_VERSION_2: u8 = 2;
const ENTRY_SIGNATURE_CONTEXT: &[u8] = b"vault/v1/log-entry\0";
const ENTRY_HASH_CONTEXT: &[u8] = b"vault/v1/entry-hash\0";
const ENTRY_PAYLOAD_CONTEXT: &[u8] = b"vault/v1/entry-payload\0";
const ENTRY_BODY_CONTEXT: &[u8] = b"vault/v1/entry-body\0";
const ENTRY_SCOPE_CONTEXT: &[u8] = b"vault/v1/entry-scope\0";
const FORM_REDACTED: u8 = 0;
const FORM_FULL: u8 = 1;

const CHECKPOINT_VERSION: u8 = 1;
const CHECKPOINT_CODE_CONTEXT: &[u8] = b"vault/v1/checkpoint-code\0";
/// Largest entry payload accepted. The collection limits of
/// [`crate::MAX_COLLECTION_RECORDS`] and [`crate::MAX_COLLECTION_MEMBERS`]
/// keep the largest possible rotation ([`MAX_ROTATION_LEN`]) below it.
pub const MAX_PAYLOAD_LEN: usize = 16 * 1024 * 1024;
/// Longest grant an entry carries.
pub(crate) const MAX_GRANT_LEN: usize = 8192;
const MAX_SEALED_NAME: usize = 1024;
const REWRAP_LEN: usize = 16 + 4 + crate::keys::WRAPPED_KEY_LEN;
/// The most device-list versions one devices-listed entry carries.
pub const MAX_LISTED_VERSIONS: usize = 64;

/// The largest rotation payload the collection limits allow
/// (`docs/format.md` §8.6): every live record re-wrapped, every member
/// granted with a grant of the largest size. Below the 16 MiB payload limit, and
/// below 12 MiB so that the relay's default 16 MiB request body holds it in
/// base64.
pub const MAX_ROTATION_LEN: usize = 16
    + 4
    + 4
    + (4 + MAX_SEALED_NAME)
    + 4
    + crate::MAX_COLLECTION_MEMBERS * (32 + 4 + MAX_GRANT_LEN)
    + 4
    + crate::MAX_COLLECTION_RECORDS * REWRAP_LEN
    + 4;
const _: () = assert!(MAX_ROTATION_LEN < 12 * 1024 * 1024);

/// One re-wrapped data key in a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrap {
    /// The record.
    pub record: RecordId,
    /// Its current version.
    pub version: u32,
    /// Its data key wrapped under the new epoch's key.
    pub wrapped: WrappedDataKey,
}

/// A key rotation of a collection (revocation, `docs/format.md` §8.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The collection.
    pub collection: CollectionId,
    /// The new epoch (previous + 1).
    pub epoch: u32,
    /// Members removed, strictly ascending.
    pub revoked: Vec<Fingerprint>,
    /// The collection name sealed under the new key.
    pub sealed_name: Vec<u8>,
    /// One grant of the new key per remaining member (the owner included),
    /// strictly ascending by member.
    pub grants: Vec<Grant>,
    /// Every live record re-wrapped, strictly ascending by record, except
    /// those in `dropped`.
    pub rewraps: Vec<Rewrap>,
    /// Live records whose data key the owner could not unwrap (a faulty or
    /// malicious writer's), deleted by this rotation, strictly ascending.
    /// Encoded as kind 8; a rotation that drops nothing is kind 6.
    pub dropped: Vec<RecordId>,
}

/// Most mirror relays a vault names (`docs/format.md` §8.9).
pub const MAX_MIRRORS: usize = 8;
/// Longest relay origin in a relays-named entry, in bytes.
const MAX_ORIGIN_LEN: usize = 255;

/// The relays that keep a vault (`docs/format.md` §8.9): its home, where
/// writes go, and mirrors, which hold copies that clients read from when
/// the home does not answer. Always valid: the home is not a mirror, the
/// mirrors are distinct (kept in ascending order) and at most
/// [`MAX_MIRRORS`], every origin is normalised ([`RelayOrigin`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relays {
    home: RelayOrigin,
    mirrors: Vec<RelayOrigin>,
}

impl Relays {
    /// The home `home` with `mirrors` (any order; sorted here). Refuses
    /// the home among the mirrors, a mirror named twice, or more than
    /// [`MAX_MIRRORS`], with [`Error::InvalidInput`].
    pub fn new(home: RelayOrigin, mut mirrors: Vec<RelayOrigin>) -> Result<Self> {
        mirrors.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Self::checked(home, mirrors).map_err(Error::InvalidInput)
    }

    /// The rules of `docs/format.md` §8.9 on a mirror list already in
    /// ascending order: each mirror once, at most [`MAX_MIRRORS`], the
    /// home not among them. One place for [`Relays::new`] and the reader.
    fn checked(
        home: RelayOrigin,
        mirrors: Vec<RelayOrigin>,
    ) -> std::result::Result<Self, &'static str> {
        if mirrors.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
            return Err("a mirror relay is named twice");
        }
        if mirrors.contains(&home) {
            return Err("the home relay cannot also be one of its mirrors");
        }
        if mirrors.len() > MAX_MIRRORS {
            return Err("a vault names at most 8 mirror relays");
        }
        Ok(Self { home, mirrors })
    }

    /// The home relay: where writes go.
    pub fn home(&self) -> &RelayOrigin {
        &self.home
    }

    /// The mirror relays, in ascending order.
    pub fn mirrors(&self) -> &[RelayOrigin] {
        &self.mirrors
    }

    /// Whether `origin` is the home or a mirror.
    pub fn names(&self, origin: &RelayOrigin) -> bool {
        self.home == *origin || self.mirrors.contains(origin)
    }
}

fn write_origin(w: &mut Writer, origin: &RelayOrigin) {
    w.text(origin.as_str());
}

/// Reads an origin that must already be in normalised form.
fn read_origin(r: &mut Reader<'_>) -> Result<RelayOrigin> {
    let text = r.text(MAX_ORIGIN_LEN)?;
    let origin = RelayOrigin::parse(text).map_err(|_| r.malformed("not a relay origin"))?;
    if origin.as_str() != text {
        return Err(r.malformed("relay origin not in normalised form"));
    }
    Ok(origin)
}

/// What a log entry does.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // entries are parsed one by one; boxing buys nothing
pub enum EntryBody {
    /// Entry 0: creates the vault and names its owner.
    Genesis {
        /// The owner's identity.
        owner: PublicIdentity,
    },
    /// Creates a collection, granting its first key to the owner.
    CollectionCreated {
        /// The new collection.
        collection: CollectionId,
        /// Its name, sealed under the epoch-0 key.
        sealed_name: Vec<u8>,
        /// The owner's grant of the epoch-0 key.
        owner_grant: Grant,
    },
    /// Adds a record or a new version of one.
    RecordPut {
        /// The author-signed metadata.
        metadata: RecordMetadata,
    },
    /// Deletes a record (a tombstone version).
    RecordDeleted {
        /// The record.
        record: RecordId,
        /// The tombstone's version (current + 1).
        version: u32,
    },
    /// Shares a collection or a record with a member.
    GrantAdded {
        /// The member's identity (so every client can verify what they write).
        member: PublicIdentity,
        /// The grant.
        grant: Grant,
    },
    /// Rotates a collection's key, removing members.
    Rotation(Rotation),
    /// Withdraws a single-record grant.
    RecordGrantRevoked {
        /// The record.
        record: RecordId,
        /// The member.
        member: Fingerprint,
    },
    /// Purges a record's versions up to `through` for good: nobody may
    /// fetch or open them any more, and relays and devices delete their
    /// ciphertext (`docs/format.md` §8.7).
    RecordPurged {
        /// The record.
        record: RecordId,
        /// The last version purged (every earlier one is purged too).
        through: u32,
    },
    /// Names the vault's home relay and its mirrors (`docs/format.md`
    /// §8.9), replacing any earlier naming. Owner only; every reader sees
    /// it whole.
    RelaysNamed(Relays),
    /// Carries versions of the owner's device list (`docs/format.md`
    /// §3.7, §8.11), in serial order, each accepted from the one before:
    /// which devices act for the owner, and the owner's key generation.
    DevicesListed {
        /// The person's root identity document (the vault owner's).
        person: PublicIdentity,
        /// The versions, oldest first (1 to 64).
        lists: Vec<crate::devices::DeviceList>,
    },
    /// Names an agent for the owner in one collection (`docs/format.md`
    /// §8.10), with the agent's grant of it.
    AgentNamed(AgentNamed),
    /// Carries versions of a member's device list in one collection
    /// (`docs/format.md` §8.12, decision 70), in serial order, each
    /// accepted from the one before: which devices act for the member
    /// there, and the key generation grants to the member are sealed to.
    /// Under the collection's scope tag: only its readers see it whole.
    MemberDevicesListed {
        /// The collection whose readers it concerns.
        collection: CollectionId,
        /// The member's root identity document.
        person: PublicIdentity,
        /// The versions, oldest first (1 to 64).
        lists: Vec<crate::devices::DeviceList>,
    },
    /// Ends an agency in one collection, and every agency named under it
    /// there (`docs/format.md` §8.10).
    AgencyEnded {
        /// The agency.
        delegation: DelegationId,
        /// The collection it ends in.
        collection: CollectionId,
    },
    /// A version-2 entry served redacted (`docs/format.md` §8.1): its
    /// author, time, kind and payload are hidden from this reader, who
    /// checks only its place in the hash chain.
    Redacted,
}

impl EntryBody {
    fn kind(&self) -> u8 {
        match self {
            EntryBody::Genesis { .. } => 1,
            EntryBody::CollectionCreated { .. } => 2,
            EntryBody::RecordPut { .. } => 3,
            EntryBody::RecordDeleted { .. } => 4,
            EntryBody::GrantAdded { .. } => 5,
            EntryBody::Rotation(r) if r.dropped.is_empty() => 6,
            EntryBody::Rotation(_) => 8,
            EntryBody::RecordGrantRevoked { .. } => 7,
            EntryBody::RecordPurged { .. } => 9,
            EntryBody::RelaysNamed(_) => 10,
            EntryBody::DevicesListed { .. } => 11,
            EntryBody::AgentNamed(_) => 12,
            EntryBody::MemberDevicesListed { .. } => 14,
            EntryBody::AgencyEnded { .. } => 13,
            EntryBody::Redacted => 0,
        }
    }

    /// A short name of the entry kind, for listings.
    pub fn kind_name(&self) -> &'static str {
        match self {
            EntryBody::Genesis { .. } => "genesis",
            EntryBody::CollectionCreated { .. } => "collection-created",
            EntryBody::RecordPut { .. } => "record-put",
            EntryBody::RecordDeleted { .. } => "record-deleted",
            EntryBody::GrantAdded { .. } => "grant-added",
            EntryBody::Rotation(_) => "rotation",
            EntryBody::RecordGrantRevoked { .. } => "record-grant-revoked",
            EntryBody::RecordPurged { .. } => "record-purged",
            EntryBody::RelaysNamed(_) => "relays-named",
            EntryBody::DevicesListed { .. } => "devices-listed",
            EntryBody::AgentNamed(_) => "agent-named",
            EntryBody::MemberDevicesListed { .. } => "member-devices-listed",
            EntryBody::AgencyEnded { .. } => "agency-ended",
            EntryBody::Redacted => "redacted",
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            EntryBody::Genesis { owner } => {
                w.bytes(owner.to_bytes());
            }
            EntryBody::CollectionCreated {
                collection,
                sealed_name,
                owner_grant,
            } => {
                w.fixed(collection.as_bytes())
                    .bytes(sealed_name)
                    .bytes(&owner_grant.to_bytes());
            }
            EntryBody::RecordPut { metadata } => {
                w.fixed(&metadata.to_bytes());
            }
            EntryBody::RecordDeleted { record, version } => {
                w.fixed(record.as_bytes()).u32(*version);
            }
            EntryBody::GrantAdded { member, grant } => {
                w.bytes(member.to_bytes()).bytes(&grant.to_bytes());
            }
            EntryBody::Rotation(r) => {
                w.fixed(r.collection.as_bytes())
                    .u32(r.epoch)
                    .u32(len32(r.revoked.len()));
                for fp in &r.revoked {
                    w.fixed(fp.as_bytes());
                }
                w.bytes(&r.sealed_name).u32(len32(r.grants.len()));
                for g in &r.grants {
                    w.bytes(&g.to_bytes());
                }
                w.u32(len32(r.rewraps.len()));
                for rw in &r.rewraps {
                    w.fixed(rw.record.as_bytes()).u32(rw.version);
                    rw.wrapped.write(&mut w);
                }
                if !r.dropped.is_empty() {
                    w.u32(len32(r.dropped.len()));
                    for id in &r.dropped {
                        w.fixed(id.as_bytes());
                    }
                }
            }
            EntryBody::RecordGrantRevoked { record, member } => {
                w.fixed(record.as_bytes()).fixed(member.as_bytes());
            }
            EntryBody::RecordPurged { record, through } => {
                w.fixed(record.as_bytes()).u32(*through);
            }
            EntryBody::RelaysNamed(relays) => {
                write_origin(&mut w, &relays.home);
                w.u32(len32(relays.mirrors.len()));
                for m in &relays.mirrors {
                    write_origin(&mut w, m);
                }
            }
            EntryBody::DevicesListed { person, lists } => write_lists(&mut w, person, lists),
            EntryBody::MemberDevicesListed {
                collection,
                person,
                lists,
            } => {
                w.fixed(collection.as_bytes());
                write_lists(&mut w, person, lists);
            }
            EntryBody::AgentNamed(named) => named.write(&mut w),
            EntryBody::AgencyEnded {
                delegation,
                collection,
            } => {
                w.fixed(delegation.as_bytes()).fixed(collection.as_bytes());
            }
            EntryBody::Redacted => {}
        }
        w.into_vec()
    }

    /// The collection an entry concerns, when its payload names it
    /// (record deletions, purges and record-grant withdrawals name only a
    /// record: the vault state maps it to its collection).
    pub fn named_collection(&self) -> Option<CollectionId> {
        match self {
            EntryBody::CollectionCreated { collection, .. } => Some(*collection),
            EntryBody::RecordPut { metadata } => Some(metadata.collection()),
            EntryBody::GrantAdded { grant, .. } => Some(grant.scope().collection()),
            EntryBody::Rotation(r) => Some(r.collection),
            EntryBody::AgentNamed(named) => Some(named.grant.scope().collection()),
            EntryBody::AgencyEnded { collection, .. }
            | EntryBody::MemberDevicesListed { collection, .. } => Some(*collection),
            EntryBody::Genesis { .. }
            | EntryBody::RecordDeleted { .. }
            | EntryBody::RecordGrantRevoked { .. }
            | EntryBody::RecordPurged { .. }
            | EntryBody::RelaysNamed(_)
            | EntryBody::DevicesListed { .. }
            | EntryBody::Redacted => None,
        }
    }

    fn decode(kind: u8, payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload, "log entry payload");
        let body = match kind {
            1 => EntryBody::Genesis {
                owner: PublicIdentity::from_bytes(r.bytes(MAX_IDENTITY_LEN)?)?,
            },
            2 => EntryBody::CollectionCreated {
                collection: CollectionId::from_bytes(r.array()?),
                sealed_name: r.bytes(MAX_SEALED_NAME)?.to_vec(),
                owner_grant: Grant::from_bytes(r.bytes(MAX_GRANT_LEN)?)?,
            },
            3 => EntryBody::RecordPut {
                metadata: RecordMetadata::from_bytes(
                    r.take(r.remaining().min(DEPOSIT_METADATA_LEN))?,
                )?,
            },
            4 => EntryBody::RecordDeleted {
                record: RecordId::from_bytes(r.array()?),
                version: r.u32()?,
            },
            5 => EntryBody::GrantAdded {
                member: PublicIdentity::from_bytes(r.bytes(MAX_IDENTITY_LEN)?)?,
                grant: Grant::from_bytes(r.bytes(MAX_GRANT_LEN)?)?,
            },
            6 | 8 => {
                let collection = CollectionId::from_bytes(r.array()?);
                let epoch = r.u32()?;
                let revoked = read_list(&mut r, 32, |r| Ok(Fingerprint::from_bytes(r.array()?)))?;
                let sealed_name = r.bytes(MAX_SEALED_NAME)?.to_vec();
                let grants = read_list(&mut r, 4, |r| Grant::from_bytes(r.bytes(MAX_GRANT_LEN)?))?;
                let rewraps = read_list(&mut r, REWRAP_LEN, |r| {
                    Ok(Rewrap {
                        record: RecordId::from_bytes(r.array()?),
                        version: r.u32()?,
                        wrapped: WrappedDataKey::read(r)?,
                    })
                })?;
                let dropped = if kind == 8 {
                    let dropped = read_list(&mut r, 16, |r| Ok(RecordId::from_bytes(r.array()?)))?;
                    if dropped.is_empty() {
                        return Err(r.malformed("a kind-8 rotation drops no record"));
                    }
                    dropped
                } else {
                    Vec::new()
                };
                ascending(&revoked, |f| *f.as_bytes())?;
                ascending(&grants, |g| *g.member().as_bytes())?;
                ascending(&rewraps, |rw| *rw.record.as_bytes())?;
                ascending(&dropped, |id| *id.as_bytes())?;
                EntryBody::Rotation(Rotation {
                    collection,
                    epoch,
                    revoked,
                    sealed_name,
                    grants,
                    rewraps,
                    dropped,
                })
            }
            7 => EntryBody::RecordGrantRevoked {
                record: RecordId::from_bytes(r.array()?),
                member: Fingerprint::from_bytes(r.array()?),
            },
            9 => EntryBody::RecordPurged {
                record: RecordId::from_bytes(r.array()?),
                through: r.u32()?,
            },
            10 => {
                let home = read_origin(&mut r)?;
                // The count is bounded before any origin is parsed.
                let n = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
                if n > MAX_MIRRORS {
                    return Err(r.malformed("a vault names at most 8 mirror relays"));
                }
                let mirrors = (0..n)
                    .map(|_| read_origin(&mut r))
                    .collect::<Result<Vec<_>>>()?;
                // One canonical encoding: the list in ascending order.
                if !mirrors
                    .windows(2)
                    .all(|w| matches!(w, [a, b] if a.as_str() <= b.as_str()))
                {
                    return Err(r.malformed("mirror relays not in ascending order"));
                }
                EntryBody::RelaysNamed(Relays::checked(home, mirrors).map_err(|e| r.malformed(e))?)
            }
            11 => {
                let (person, lists) = read_lists(&mut r)?;
                EntryBody::DevicesListed { person, lists }
            }
            12 => EntryBody::AgentNamed(AgentNamed::read(&mut r)?),
            13 => EntryBody::AgencyEnded {
                delegation: DelegationId::from_bytes(r.array()?),
                collection: CollectionId::from_bytes(r.array()?),
            },
            14 => {
                let collection = CollectionId::from_bytes(r.array()?);
                let (person, lists) = read_lists(&mut r)?;
                EntryBody::MemberDevicesListed {
                    collection,
                    person,
                    lists,
                }
            }
            _ => return Err(r.malformed("unknown entry kind")),
        };
        r.finish()?;
        Ok(body)
    }
}

/// A person's root document and 1 to 64 versions of its device list, as
/// kinds 11 and 14 carry them.
fn write_lists(w: &mut Writer, person: &PublicIdentity, lists: &[crate::devices::DeviceList]) {
    w.bytes(person.to_bytes()).u32(len32(lists.len()));
    for l in lists {
        w.bytes(l.to_bytes());
    }
}

/// Reads what [`write_lists`] writes; the count is bounded before any
/// list is parsed.
fn read_lists(r: &mut Reader) -> Result<(PublicIdentity, Vec<crate::devices::DeviceList>)> {
    let person = PublicIdentity::from_bytes(r.bytes(MAX_IDENTITY_LEN)?)?;
    let n = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
    if n == 0 || n > MAX_LISTED_VERSIONS {
        return Err(r.malformed("a devices-listed entry carries 1 to 64 versions"));
    }
    let lists = (0..n)
        .map(|_| {
            crate::devices::DeviceList::from_bytes(r.bytes(crate::devices::MAX_DEVICE_LIST_LEN)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((person, lists))
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Reads a `u32` count and that many items, refusing counts the remaining
/// bytes could not hold (each item is at least `min_item` bytes).
fn read_list<T>(
    r: &mut Reader<'_>,
    min_item: usize,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let n = usize::try_from(r.u32()?).map_err(|_| r.malformed("count overflow"))?;
    if n.saturating_mul(min_item) > r.remaining() {
        return Err(r.malformed("count exceeds payload"));
    }
    (0..n).map(|_| item(r)).collect()
}

/// Lists in rotations are strictly ascending: one canonical order, no
/// duplicates.
fn ascending<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> Result<()> {
    if items.windows(2).all(|w| match w {
        [a, b] => key(a) < key(b),
        _ => true,
    }) {
        Ok(())
    } else {
        Err(Error::Malformed {
            what: "rotation",
            reason: "list not strictly ascending",
        })
    }
}

/// The scope tag of an entry of version 2 (`docs/format.md` §8.1): all
/// zero for the genesis entry, which every reader sees; otherwise a hash of
/// the collection the entry concerns, bound to the vault and the entry's
/// sequence number. A reader who knows a collection recognises its
/// entries, even redacted; tags of collections a reader does not know
/// cannot be linked to each other.
pub fn scope_tag(vault: &VaultId, seq: u64, collection: Option<&CollectionId>) -> [u8; 32] {
    match collection {
        None => [0; 32],
        Some(c) => sha256(&[
            ENTRY_SCOPE_CONTEXT,
            vault.as_bytes(),
            &seq.to_be_bytes(),
            c.as_bytes(),
        ]),
    }
}

/// A signed, hash-chained vault log entry (`docs/format.md` §8), whole or
/// (version 2 only) redacted.
///
/// A redacted entry carries only its place in the chain: vault, sequence
/// number, previous hash, scope tag and the digest of everything else. Its
/// [`body`](Self::body) is [`EntryBody::Redacted`], its
/// [`time`](Self::time) 0 and its [`author`](Self::author) all zero; its
/// [`hash`](Self::hash) is the hash of the whole entry, so the chain and
/// checkpoints are the same whichever form a reader holds.
#[derive(Clone, PartialEq, Eq)]
pub struct LogEntry {
    version: u8,
    vault: VaultId,
    seq: u64,
    prev: [u8; 32],
    scope: [u8; 32],
    time: u64,
    author: Fingerprint,
    body: EntryBody,
    signature: [u8; 64],
    /// Version 2, whole: the digest of the payload (what is signed).
    payload_digest: [u8; 32],
    /// Version 2: the digest of time, author, kind, payload digest and
    /// signature (what a redacted entry carries instead of them).
    body_digest: [u8; 32],
    encoded: Vec<u8>,
    hash: [u8; 32],
}

/// The fields of an entry before its signature.
struct Unsigned<'a> {
    vault: &'a VaultId,
    seq: u64,
    prev: &'a [u8; 32],
    scope: &'a [u8; 32],
    time: u64,
    author: &'a Fingerprint,
    kind: u8,
}

impl Unsigned<'_> {
    /// Version 1: the signed body, payload included.
    fn v1_body(&self, payload: &[u8]) -> Writer {
        let mut w = Writer::new();
        w.u8(ENTRY_VERSION_1)
            .fixed(self.vault.as_bytes())
            .u64(self.seq)
            .fixed(self.prev)
            .u64(self.time)
            .fixed(self.author.as_bytes())
            .u8(self.kind)
            .bytes(payload);
        w
    }

    /// Version 2: the head every reader sees.
    fn v2_head(&self) -> Writer {
        let mut w = Writer::new();
        w.u8(ENTRY_VERSION_2)
            .fixed(self.vault.as_bytes())
            .u64(self.seq)
            .fixed(self.prev)
            .fixed(self.scope);
        w
    }

    /// Version 2: the signed bytes (head, then time, author, kind and the
    /// payload's digest).
    fn v2_signed(&self, payload_digest: &[u8; 32]) -> Vec<u8> {
        let mut w = self.v2_head();
        w.u64(self.time)
            .fixed(self.author.as_bytes())
            .u8(self.kind)
            .fixed(payload_digest);
        w.into_vec()
    }

    /// Version 2: the full encoding.
    fn v2_full(&self, payload: &[u8], signature: &[u8; 64]) -> Vec<u8> {
        let mut w = self.v2_head();
        w.u8(FORM_FULL)
            .u64(self.time)
            .fixed(self.author.as_bytes())
            .u8(self.kind)
            .bytes(payload)
            .fixed(signature);
        w.into_vec()
    }
}

fn payload_digest(payload: &[u8]) -> [u8; 32] {
    sha256(&[ENTRY_PAYLOAD_CONTEXT, payload])
}

fn body_digest(
    time: u64,
    author: &Fingerprint,
    kind: u8,
    payload_digest: &[u8; 32],
    signature: &[u8; 64],
) -> [u8; 32] {
    sha256(&[
        ENTRY_BODY_CONTEXT,
        &time.to_be_bytes(),
        author.as_bytes(),
        &[kind],
        payload_digest,
        signature,
    ])
}

fn v2_hash(head: &[u8], body_digest: &[u8; 32]) -> [u8; 32] {
    sha256(&[ENTRY_HASH_CONTEXT, head, body_digest])
}

/// Length of a version-2 head: version, vault, seq, prev, scope.
const V2_HEAD_LEN: usize = 1 + 16 + 8 + 32 + 32;

impl LogEntry {
    /// Creates and signs a version-2 entry. `collection` is the collection
    /// the entry concerns (`None` only for the genesis entry); it sets the
    /// scope tag ([`scope_tag`]).
    pub(crate) fn sign(
        author: &SecretIdentity,
        vault: VaultId,
        seq: u64,
        prev: [u8; 32],
        time: u64,
        body: EntryBody,
        collection: Option<&CollectionId>,
    ) -> Result<Self> {
        if matches!(body, EntryBody::Redacted) {
            return Err(Error::InvalidInput("a redacted entry cannot be signed"));
        }
        let payload = body.encode();
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::InvalidInput("log entry too large"));
        }
        let fp = author.fingerprint();
        let scope = scope_tag(&vault, seq, collection);
        let kind = body.kind();
        let fields = Unsigned {
            vault: &vault,
            seq,
            prev: &prev,
            scope: &scope,
            time,
            author: &fp,
            kind,
        };
        let pd = payload_digest(&payload);
        let signature = author.sign(&[ENTRY_SIGNATURE_CONTEXT, &fields.v2_signed(&pd)].concat());
        let bd = body_digest(time, &fp, kind, &pd, &signature);
        let hash = v2_hash(fields.v2_head().as_slice(), &bd);
        let encoded = fields.v2_full(&payload, &signature);
        Ok(Self {
            version: ENTRY_VERSION_2,
            vault,
            seq,
            prev,
            scope,
            time,
            author: fp,
            body,
            signature,
            payload_digest: pd,
            body_digest: bd,
            encoded,
            hash,
        })
    }

    /// Creates and signs a version-1 entry (read only since version 2:
    /// for tests of what older clients wrote).
    #[doc(hidden)]
    pub fn sign_v1_for_tests(
        author: &SecretIdentity,
        vault: VaultId,
        seq: u64,
        prev: [u8; 32],
        time: u64,
        body: EntryBody,
    ) -> Result<Self> {
        let payload = body.encode();
        let fp = author.fingerprint();
        let fields = Unsigned {
            vault: &vault,
            seq,
            prev: &prev,
            scope: &[0; 32],
            time,
            author: &fp,
            kind: body.kind(),
        };
        let mut encoded = fields.v1_body(&payload).into_vec();
        let signature = author.sign(&[ENTRY_SIGNATURE_CONTEXT, &encoded].concat());
        encoded.extend_from_slice(&signature);
        Self::from_vec(encoded)
    }

    /// Parses an entry strictly, whole or redacted. The signature is
    /// checked by [`crate::VaultState`], which knows the author's key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::parse(bytes, <[u8]>::to_vec)
    }

    /// [`LogEntry::from_bytes`], keeping `bytes` as the entry's encoding
    /// instead of copying them.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self> {
        let mut entry = Self::parse(&bytes, |_| Vec::new())?;
        entry.encoded = bytes;
        Ok(entry)
    }

    fn parse(bytes: &[u8], keep: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<Self> {
        match bytes.first() {
            Some(&ENTRY_VERSION_2) => Self::parse_v2(bytes, keep),
            _ => Self::parse_v1(bytes, keep),
        }
    }

    fn parse_v1(bytes: &[u8], keep: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<Self> {
        let mut r = Reader::new(bytes, "log entry");
        r.version(ENTRY_VERSION_1)?;
        let (vault, seq, prev) = (VaultId::from_bytes(r.array()?), r.u64()?, r.array()?);
        let time = r.u64()?;
        let author = Fingerprint::from_bytes(r.array()?);
        let kind = r.u8()?;
        let payload = r.bytes(MAX_PAYLOAD_LEN)?;
        let signature = r.array()?;
        r.finish()?;
        Ok(Self {
            version: ENTRY_VERSION_1,
            vault,
            seq,
            prev,
            scope: [0; 32],
            time,
            author,
            body: EntryBody::decode(kind, payload)?,
            signature,
            payload_digest: [0; 32],
            body_digest: [0; 32],
            hash: sha256(&[ENTRY_HASH_CONTEXT, bytes]),
            encoded: keep(bytes),
        })
    }

    fn parse_v2(bytes: &[u8], keep: impl FnOnce(&[u8]) -> Vec<u8>) -> Result<Self> {
        let mut r = Reader::new(bytes, "log entry");
        r.version(ENTRY_VERSION_2)?;
        let (vault, seq, prev) = (VaultId::from_bytes(r.array()?), r.u64()?, r.array()?);
        let scope = r.array()?;
        let head = bytes.get(..V2_HEAD_LEN).unwrap_or_default();
        // Whole: time, author, body, signature, payload digest; redacted:
        // none of them, only the body digest.
        let (time, author, body, signature, pd, bd) = match r.u8()? {
            FORM_REDACTED => {
                let bd = r.array()?;
                r.finish()?;
                let nobody = Fingerprint::from_bytes([0; 32]);
                (0, nobody, EntryBody::Redacted, [0; 64], [0; 32], bd)
            }
            FORM_FULL => {
                let time = r.u64()?;
                let author = Fingerprint::from_bytes(r.array()?);
                let kind = r.u8()?;
                let payload = r.bytes(MAX_PAYLOAD_LEN)?;
                let signature = r.array()?;
                r.finish()?;
                let body = EntryBody::decode(kind, payload)?;
                let pd = payload_digest(payload);
                let bd = body_digest(time, &author, kind, &pd, &signature);
                (time, author, body, signature, pd, bd)
            }
            _ => return Err(r.malformed("unknown entry form")),
        };
        Ok(Self {
            version: ENTRY_VERSION_2,
            vault,
            seq,
            prev,
            scope,
            time,
            author,
            body,
            signature,
            payload_digest: pd,
            body_digest: bd,
            hash: v2_hash(head, &bd),
            encoded: keep(bytes),
        })
    }

    fn unsigned(&self) -> Unsigned<'_> {
        Unsigned {
            vault: &self.vault,
            seq: self.seq,
            prev: &self.prev,
            scope: &self.scope,
            time: self.time,
            author: &self.author,
            kind: self.body.kind(),
        }
    }

    /// Verifies the entry's signature with `author`'s key (the key of the
    /// identity the entry names as author; [`crate::VaultState`] looks it
    /// up and calls this when it applies the entry). A redacted entry has
    /// no signature to check ([`Error::BadSignature`]).
    pub fn verify_signature(&self, author: &PublicIdentity) -> Result<()> {
        let signed = match (self.version, &self.body) {
            (_, EntryBody::Redacted) => {
                return Err(Error::BadSignature {
                    what: "log entry (redacted)",
                })
            }
            (ENTRY_VERSION_1, _) => {
                let signed_len = self.encoded.len().saturating_sub(64);
                self.encoded.get(..signed_len).unwrap_or_default().to_vec()
            }
            _ => self.unsigned().v2_signed(&self.payload_digest),
        };
        primitives::verify_in_batch(
            author.verifying_key(),
            &[ENTRY_SIGNATURE_CONTEXT, &signed].concat(),
            &self.signature,
            "log entry",
        )
    }

    /// The canonical encoding (whole, or redacted for a redacted entry).
    pub fn to_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// The canonical encoding, taken out of the entry.
    pub fn into_bytes(self) -> Vec<u8> {
        self.encoded
    }

    /// The redacted encoding of a version-2 entry (`docs/format.md` §8.1):
    /// what a relay serves a reader the entry does not concern. `None` for
    /// a version-1 entry, which cannot be redacted.
    pub fn redacted_bytes(&self) -> Option<Vec<u8>> {
        if self.version != ENTRY_VERSION_2 {
            return None;
        }
        let mut w = self.unsigned().v2_head();
        w.u8(FORM_REDACTED).fixed(&self.body_digest);
        Some(w.into_vec())
    }

    /// The redacted form of this entry ([`Self::redacted_bytes`]).
    pub fn redacted(&self) -> Option<Self> {
        Self::from_vec(self.redacted_bytes()?).ok()
    }

    /// Whether this is a redacted entry.
    pub fn is_redacted(&self) -> bool {
        matches!(self.body, EntryBody::Redacted)
    }

    /// The entry's format version (1 or 2).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The scope tag (version 2; all zero for version 1 and for genesis).
    pub fn scope(&self) -> &[u8; 32] {
        &self.scope
    }

    /// The encoding rebuilt from the parsed fields (not the bytes kept from
    /// parsing): tests check that only canonical bytes parse.
    #[cfg(test)]
    pub(crate) fn reencode(&self) -> Vec<u8> {
        let payload = self.body.encode();
        match (self.version, &self.body) {
            (_, EntryBody::Redacted) => self.redacted_bytes().unwrap_or_default(),
            (ENTRY_VERSION_1, _) => {
                let mut w = self.unsigned().v1_body(&payload);
                w.fixed(&self.signature);
                w.into_vec()
            }
            _ => self.unsigned().v2_full(&payload, &self.signature),
        }
    }
    /// SHA-256 entry hash (what the next entry's `prev` names).
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
    /// The vault.
    pub fn vault(&self) -> VaultId {
        self.vault
    }
    /// Sequence number (0 for genesis).
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Hash of the previous entry (all zero for genesis).
    pub fn prev(&self) -> &[u8; 32] {
        &self.prev
    }
    /// Author-claimed time, seconds since the Unix epoch (0 for a redacted
    /// entry).
    pub fn time(&self) -> u64 {
        self.time
    }
    /// The author's fingerprint (all zero for a redacted entry).
    pub fn author(&self) -> Fingerprint {
        self.author
    }
    /// What the entry does.
    pub fn body(&self) -> &EntryBody {
        &self.body
    }
}

impl fmt::Debug for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogEntry")
            .field("vault", &self.vault)
            .field("seq", &self.seq)
            .field("kind", &self.body.kind_name())
            .field("author", &self.author)
            .finish_non_exhaustive()
    }
}

/// A point in a vault's history: (vault, sequence number, entry hash)
/// (`docs/format.md` §9).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Checkpoint {
    /// The vault.
    pub vault: VaultId,
    /// The sequence number of the head entry.
    pub seq: u64,
    /// The head entry's hash.
    pub head: [u8; 32],
}

impl Checkpoint {
    /// The canonical 57-byte encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(CHECKPOINT_VERSION)
            .fixed(self.vault.as_bytes())
            .u64(self.seq)
            .fixed(&self.head);
        w.into_vec()
    }

    /// Parses a checkpoint strictly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "checkpoint");
        r.version(CHECKPOINT_VERSION)?;
        let c = Self {
            vault: VaultId::from_bytes(r.array()?),
            seq: r.u64()?,
            head: r.array()?,
        };
        r.finish()?;
        Ok(c)
    }

    /// The short code people compare to detect a fork: the sequence number
    /// and twelve digits derived from the checkpoint, e.g. `42:0193-5521-7730`.
    pub fn code(&self) -> String {
        let h = sha256(&[CHECKPOINT_CODE_CONTEXT, &self.to_bytes()]);
        let mut v: u64 = 0;
        for b in h.iter().take(8) {
            v = (v << 8) | u64::from(*b);
        }
        let d = format!("{:012}", v % 1_000_000_000_000);
        format!("{}:{}-{}-{}", self.seq, &d[..4], &d[4..8], &d[8..])
    }

    /// Parses a code produced by [`Checkpoint::code`] into its sequence number
    /// and digits (whitespace and dashes in the digits are ignored).
    pub fn parse_code(code: &str) -> Result<(u64, String)> {
        let bad = Error::Malformed {
            what: "checkpoint code",
            reason: "expected SEQ:DDDD-DDDD-DDDD",
        };
        let (seq, digits) = code.trim().split_once(':').ok_or(bad)?;
        let seq: u64 = seq.trim().parse().map_err(|_| Error::Malformed {
            what: "checkpoint code",
            reason: "invalid sequence number",
        })?;
        let digits: String = digits
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        if digits.len() != 12 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::Malformed {
                what: "checkpoint code",
                reason: "expected twelve digits",
            });
        }
        Ok((seq, digits))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod relays_tests {
    use super::*;

    fn payload(home: &str, mirrors: &[&str]) -> Vec<u8> {
        let mut w = Writer::new();
        w.text(home).u32(len32(mirrors.len()));
        for m in mirrors {
            w.text(m);
        }
        w.into_vec()
    }

    #[test]
    fn relays_named_round_trips_and_refuses_non_canonical_payloads() {
        let good = payload(
            "https://a.example",
            &["https://b.example", "https://c.example"],
        );
        let body = EntryBody::decode(10, &good).unwrap();
        assert_eq!(body.encode(), good);
        assert_eq!(body.kind(), 10);
        for (bad, why) in [
            (
                payload(
                    "https://a.example",
                    &["https://c.example", "https://b.example"],
                ),
                "mirrors out of order",
            ),
            (
                payload(
                    "https://a.example",
                    &["https://b.example", "https://b.example"],
                ),
                "a mirror twice",
            ),
            (
                payload("https://a.example", &["https://a.example"]),
                "the home as a mirror",
            ),
            (payload("HTTPS://A.example", &[]), "not normalised"),
            (payload("https://a.example/path", &[]), "not an origin"),
            (payload("https://a.example:443", &[]), "default port kept"),
            (
                payload(
                    "https://a.example",
                    &(0..9)
                        .map(|i| format!("https://m{i}.example"))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                ),
                "nine mirrors",
            ),
        ] {
            assert!(EntryBody::decode(10, &bad).is_err(), "accepted {why}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(EntryBody::decode(10, &trailing).is_err());
        let mut huge_count = payload("https://a.example", &[]);
        let n = huge_count.len();
        huge_count[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(EntryBody::decode(10, &huge_count).is_err());
    }

    #[test]
    fn relays_new_sorts_and_refuses_what_a_reader_would() {
        let o = |s: &str| RelayOrigin::parse(s).unwrap();
        let r = Relays::new(
            o("https://a.example"),
            vec![o("https://c.example"), o("https://b.example")],
        )
        .unwrap();
        assert_eq!(
            r.mirrors(),
            &[o("https://b.example"), o("https://c.example")]
        );
        assert!(r.names(&o("https://c.example")) && !r.names(&o("https://d.example")));
        assert!(Relays::new(o("https://a.example"), vec![o("https://a.example")]).is_err());
        assert!(Relays::new(
            o("https://a.example"),
            vec![o("https://b.example"), o("https://b.example")]
        )
        .is_err());
        let nine = (0..9)
            .map(|i| o(&format!("https://m{i}.example")))
            .collect();
        assert!(Relays::new(o("https://a.example"), nine).is_err());
    }
}
