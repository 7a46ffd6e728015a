//! Sharing and revoking, written once for every client (the `vault`
//! command and the web app present what these return).
//!
//! [`share`] and [`revoke`] perform a user action against a relay: they
//! pull, build the entries with [`plan_share`] or [`plan_revocation`] (which
//! apply them to a copy as they go, so that several entries chain), and
//! append them with [`crate::sync::push_with_retry`], which builds them again
//! on the relay's newer state if the head moved.

use vault_core::store::Store;
use vault_core::{
    CollectionId, EntryBody, Fingerprint, Keyring, LogEntry, Permission, PublicIdentity, RecordId,
    SecretIdentity, VaultId, VaultState,
};

use crate::{sync, RelayClient};

/// Shares `target` with `member` in `vault` as the client's identity (the
/// owner, or an agent of the owner who may share it), rotating the collection's key first where needed
/// ([`plan_share`]). Returns the vault's new state and whether the key was
/// rotated first.
pub async fn share<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    target: ShareTarget,
    member: &PublicIdentity,
    expires_at: Option<u64>,
) -> crate::Result<(VaultState, bool)> {
    let me = client.identity().clone();
    let mut rotated_first = false;
    // The member's devices, so the grant reaches each of them (decision
    // 70); a grant of one record goes to the member's key file.
    let devices = match target {
        ShareTarget::Collection(_, p) if p != Permission::Deposit => {
            crate::member_devices::fetch(client, member).await?
        }
        _ => Vec::new(),
    };
    let state = sync::push_with_retry(store, client, vault, |state| {
        let plan = plan_share(
            state,
            &me,
            target,
            member,
            &devices,
            expires_at,
            client.now(),
        )?;
        rotated_first = plan.rotated_first;
        Ok(plan.entries)
    })
    .await?;
    Ok((state, rotated_first))
}

/// Revokes `member` in `vault` as the client's identity (the owner, or an
/// agent of the owner who may share): see [`plan_revocation`]. Returns the
/// vault's new state and what was done (empty if `member` held nothing to
/// revoke).
pub async fn revoke<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    member: &Fingerprint,
    only: Option<&CollectionId>,
) -> crate::Result<(VaultState, Revocation)> {
    let me = client.identity().clone();
    let mut plan = Revocation::default();
    let state = sync::push_with_retry(store, client, vault, |state| {
        plan = plan_revocation(state, &me, member, only, client.now())?;
        Ok(plan.entries.clone())
    })
    .await?;
    Ok((state, plan))
}

/// What to share with a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareTarget {
    /// A collection: its current key (read, read-write, read-add), or for
    /// [`Permission::Deposit`] its deposit key only (write-only).
    Collection(CollectionId, Permission),
    /// One record's current version, read-only.
    Record(RecordId),
}

/// The entries of a share, and whether the collection's key was rotated
/// first.
#[derive(Debug)]
pub struct SharePlan {
    /// The entries to append, in order.
    pub entries: Vec<LogEntry>,
    /// The collection's key was rotated before the grant, because versions
    /// replaced or deleted under the current key must stay closed to the
    /// new member ([`VaultState::needs_rotation_before_grant`]).
    pub rotated_first: bool,
}

/// Builds the entries sharing `target` with `member`. A collection whose
/// current key could open replaced or deleted versions is rotated first
/// (a rotation that revokes nobody), so a member granted now never reads
/// what the owner deleted or replaced before. A member who reads the
/// collection and is made a write-only depositor is revoked in that
/// rotation first, so they hold no readable key of the new epoch.
/// `devices` are the member's device lists, verified
/// ([`crate::member_devices::fetch`]): the versions the collection does
/// not carry yet are appended first, so the grant is sealed to the
/// generation each of the member's devices opens.
pub fn plan_share(
    state: &VaultState,
    owner: &SecretIdentity,
    target: ShareTarget,
    member: &PublicIdentity,
    devices: &[vault_core::devices::DeviceList],
    expires_at: Option<u64>,
    now: u64,
) -> vault_core::Result<SharePlan> {
    let mut keyring = Keyring::new(owner, now);
    match target {
        ShareTarget::Record(record) => Ok(SharePlan {
            entries: vec![state.share_record(&mut keyring, &record, member, expires_at)?],
            rotated_first: false,
        }),
        ShareTarget::Collection(collection, permission) => {
            let mut entries = Vec::new();
            let listed = crate::member_devices::plan_listing(
                state,
                owner,
                &collection,
                member,
                permission,
                devices,
                now,
            )?;
            let mut with_list = None;
            if let Some(entry) = listed {
                let mut next = state.clone();
                next.apply(&entry)?;
                entries.push(entry);
                with_list = Some(next);
            }
            let state = with_list.as_ref().unwrap_or(state);
            let mut next = None;
            // A reader made a depositor already holds the current key: the
            // key is rotated away from them first, so the deposit grant is
            // all they hold from now on.
            let reader_now = state
                .collections()
                .into_iter()
                .find(|c| c.id == collection)
                .is_some_and(|c| {
                    c.members
                        .iter()
                        .any(|(fp, p, _)| *fp == member.fingerprint() && p.may_read())
                });
            let downgrade = permission == Permission::Deposit && reader_now;
            // A depositor receives no key that opens anything: nothing to
            // close before granting it.
            if downgrade
                || (permission.may_read() && state.needs_rotation_before_grant(&collection))
            {
                let revoked = if downgrade {
                    vec![member.fingerprint()]
                } else {
                    Vec::new()
                };
                let rotation = state.revoke(&mut keyring, &collection, &revoked)?;
                let mut rotated = state.clone();
                rotated.apply(&rotation)?;
                entries.push(rotation);
                next = Some(rotated);
            }
            let base = next.as_ref().unwrap_or(state);
            let mut keyring = Keyring::new(owner, now);
            entries.push(base.share_collection(
                &mut keyring,
                &collection,
                member,
                permission,
                expires_at,
            )?);
            Ok(SharePlan {
                rotated_first: entries
                    .iter()
                    .any(|e| matches!(e.body(), EntryBody::Rotation(_))),
                entries,
            })
        }
    }
}

/// A rotation of `collection` on `state` as `me` (the owner, or an agent
/// who may share there) revoking `revoked`, and the records it drops
/// (whose data key does not unwrap: the owner's revocation deletes them,
/// with their author).
pub(crate) fn rotate_in(
    state: &VaultState,
    me: &SecretIdentity,
    collection: &CollectionId,
    revoked: &[Fingerprint],
    now: u64,
) -> vault_core::Result<(LogEntry, Vec<DroppedRecord>)> {
    let mut keyring = Keyring::new(me, now);
    let entry = state.revoke(&mut keyring, collection, revoked)?;
    let dropped = match entry.body() {
        EntryBody::Rotation(r) => r
            .dropped
            .iter()
            .filter_map(|id| {
                let author = state.record(id).ok()?.metadata().author();
                Some(DroppedRecord {
                    record: *id,
                    author,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok((entry, dropped))
}

/// A record a rotation deleted because its data key did not unwrap under
/// the collection's key: its writer sealed it wrongly, by fault or on
/// purpose. Nobody could open it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedRecord {
    /// The record.
    pub record: RecordId,
    /// The author of its last version, as the verified log names them.
    pub author: Fingerprint,
}

/// One collection a revocation rotated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotatedCollection {
    /// The collection.
    pub collection: CollectionId,
    /// Its name, opened with the owner's key (`None` if it did not open).
    pub name: Option<String>,
    /// Its new key epoch.
    pub epoch: u32,
    /// Records deleted by the rotation because nobody could open them.
    pub dropped: Vec<DroppedRecord>,
}

/// What a revocation does.
#[derive(Debug, Default)]
pub struct Revocation {
    /// The entries to append, in order.
    pub entries: Vec<LogEntry>,
    /// The collections whose key was rotated.
    pub rotated: Vec<RotatedCollection>,
    /// How many single-record grants were withdrawn.
    pub record_grants: usize,
}

impl Revocation {
    /// Whether there was nothing of `member`'s to revoke.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Builds the entries revoking `member` from every collection they hold
/// (or only `only`), rotating each collection's key, and withdrawing their
/// single-record grants (of `only`'s records, if given). An agent of the
/// owner is not revoked but its agency ended there (`docs/format.md`
/// §8.10), followed by a rotation revoking nobody.
///
/// `me` is the owner, or an agent who may share (it then withdraws no
/// single-record grant: those are the owner's).
///
/// Revocation always succeeds for the owner: a live record whose data key
/// does not unwrap (written by a faulty or malicious member) is deleted by
/// the same rotation and reported in [`RotatedCollection::dropped`] with
/// its author, instead of blocking the revocation.
pub fn plan_revocation(
    state: &VaultState,
    me: &SecretIdentity,
    member: &Fingerprint,
    only: Option<&CollectionId>,
    now: u64,
) -> vault_core::Result<Revocation> {
    let mut next = state.clone();
    let mut out = Revocation::default();
    for c in state.collections() {
        if only.is_some_and(|o| *o != c.id) || !c.members.iter().any(|(m, _, _)| m == member) {
            continue;
        }
        // An agent revokes only where it may share.
        let may_rotate = state.is_owner(&me.fingerprint())
            || state
                .agency_of(&me.fingerprint(), &c.id, now)
                .is_some_and(|(_, p)| p.shares());
        if !may_rotate {
            continue;
        }
        let name = state
            .collection_name(&mut Keyring::new(me, now), &c.id)
            .ok();
        // An agent is not revoked but its agency ended (decision 65): the
        // agent's grant leaves, and a rotation revoking nobody follows.
        let agency = state
            .agencies()
            .into_iter()
            .find(|a| a.agent == *member && a.collections.contains(&c.id));
        let revoked = match agency {
            Some(agency) => {
                let end = next.end_agency(me, &agency.delegation, &c.id, now)?;
                next.apply(&end)?;
                out.entries.push(end);
                Vec::new()
            }
            None => vec![*member],
        };
        let (entry, dropped) = rotate_in(&next, me, &c.id, &revoked, now)?;
        next.apply(&entry)?;
        out.entries.push(entry);
        out.rotated.push(RotatedCollection {
            collection: c.id,
            name,
            epoch: c.epoch.saturating_add(1),
            dropped,
        });
    }
    // Single-record grants are the owner's alone to withdraw.
    if !state.is_owner(&me.fingerprint()) {
        return Ok(out);
    }
    for (record, m, _) in state.record_grants() {
        let in_scope = only.is_none_or(|o| {
            state
                .record(&record)
                .map(|r| r.metadata().collection())
                .ok()
                == Some(*o)
        });
        if m != *member || !in_scope {
            continue;
        }
        let entry = next.revoke_record_grant(me, &record, member, now)?;
        next.apply(&entry)?;
        out.entries.push(entry);
        out.record_grants += 1;
    }
    Ok(out)
}
