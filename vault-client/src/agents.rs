//! Designated agents, written once for every client (`docs/format.md`
//! §8.10): naming an agent who acts for the owner in chosen collections,
//! and ending an agency. The `vault agents` command presents these.
//!
//! [`name`] and [`end`] perform the action against a relay: they pull,
//! build the entries with [`plan_naming`] or [`plan_ending`], and append
//! them with [`crate::sync::push_with_retry`], which builds them again on
//! the relay's newer state if the head moved.

use vault_core::store::Store;
use vault_core::{
    CollectionId, DelegationId, Fingerprint, Keyring, LogEntry, Powers, PublicIdentity,
    SecretIdentity, VaultId, VaultState,
};

use crate::{sync, RelayClient};

/// What naming an agent does.
#[derive(Debug)]
pub struct Naming {
    /// The entries to append, in order.
    pub entries: Vec<LogEntry>,
    /// The agency (one id for every collection it covers).
    pub delegation: DelegationId,
    /// Collections whose key was rotated before the agent's grant, so that
    /// versions replaced or deleted under the current key stay closed to
    /// the agent.
    pub rotated_first: Vec<CollectionId>,
}

/// Names `agent` an agent in `collections` of `vault` as the client's
/// identity (the owner, or an agent who may name agents there), with
/// `powers` until `expires_at`: see [`plan_naming`].
pub async fn name<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    collections: &[CollectionId],
    agent: &PublicIdentity,
    powers: Powers,
    expires_at: Option<u64>,
) -> crate::Result<(VaultState, Naming)> {
    let me = client.identity().clone();
    let delegation = DelegationId::random();
    // The agent's devices, so the agency reaches each of them (decision
    // 70), as a share's grant does.
    let devices = crate::member_devices::fetch(client, agent).await?;
    let mut plan = None;
    let state = sync::push_with_retry(store, client, vault, |state| {
        let naming = plan_naming(
            state,
            &me,
            Named {
                collections,
                agent,
                devices: &devices,
            },
            powers,
            expires_at,
            delegation,
            client.now(),
        )?;
        let entries = naming.entries.clone();
        plan = Some(naming);
        Ok(entries)
    })
    .await?;
    let plan = plan.ok_or(vault_core::Error::InvalidInput("nothing was named"))?;
    Ok((state, plan))
}

/// Who is named an agent, where, and the agent's device lists.
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    /// The collections the agent acts in.
    pub collections: &'a [CollectionId],
    /// The agent.
    pub agent: &'a PublicIdentity,
    /// The agent's device lists, verified
    /// ([`crate::member_devices::fetch`]; empty if it listed none).
    pub devices: &'a [vault_core::devices::DeviceList],
}

/// Builds the entries naming `named.agent` in each of its collections
/// under one agency `delegation`. The agent's device list versions a
/// collection does not carry yet are appended there first, so the
/// agency's grant is sealed to the generation each of the agent's devices
/// opens, as for a member ([`crate::member_devices::plan_listing`]). A
/// collection whose current key could open replaced or deleted versions
/// is rotated first (a rotation revoking nobody), as for any new member
/// ([`crate::sharing::plan_share`]).
pub fn plan_naming(
    state: &VaultState,
    me: &SecretIdentity,
    named: Named<'_>,
    powers: Powers,
    expires_at: Option<u64>,
    delegation: DelegationId,
    now: u64,
) -> vault_core::Result<Naming> {
    let Named {
        collections,
        agent,
        devices,
    } = named;
    if collections.is_empty() {
        return Err(vault_core::Error::InvalidInput(
            "name at least one collection the agent acts in",
        ));
    }
    let mut next = state.clone();
    let mut naming = Naming {
        entries: Vec::new(),
        delegation,
        rotated_first: Vec::new(),
    };
    for collection in collections {
        let listed = crate::member_devices::plan_listing(
            &next,
            me,
            collection,
            agent,
            powers.permission(),
            devices,
            now,
        )?;
        if let Some(entry) = listed {
            next.apply(&entry)?;
            naming.entries.push(entry);
        }
        let mut keyring = Keyring::new(me, now);
        if next.needs_rotation_before_grant(collection) {
            let rotation = next.revoke(&mut keyring, collection, &[])?;
            next.apply(&rotation)?;
            naming.entries.push(rotation);
            naming.rotated_first.push(*collection);
        }
        let (_, entry) = next.name_agent(
            &mut keyring,
            collection,
            agent,
            powers,
            expires_at,
            Some(delegation),
        )?;
        next.apply(&entry)?;
        naming.entries.push(entry);
    }
    Ok(naming)
}

/// What ending an agent's agencies does.
#[derive(Debug, Default)]
pub struct Ending {
    /// The entries to append, in order.
    pub entries: Vec<LogEntry>,
    /// The agencies ended, with the collection each ended in (agencies
    /// named under them end with them).
    pub ended: Vec<(DelegationId, CollectionId)>,
    /// Collections whose key was rotated after the agency ended, so the
    /// key the agent held opens nothing written afterwards.
    pub rotated: Vec<CollectionId>,
    /// Collections whose key could not be rotated, with why: the agency
    /// ended there all the same, and the next revocation rotates it.
    pub not_rotated: Vec<(CollectionId, vault_core::Error)>,
}

impl Ending {
    /// Whether `agent` held no agency to end.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Ends every agency of `agent` in `vault` (or only in `only`) as the
/// client's identity: see [`plan_ending`].
pub async fn end<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    agent: &Fingerprint,
    only: Option<&CollectionId>,
) -> crate::Result<(VaultState, Ending)> {
    let me = client.identity().clone();
    let mut plan = Ending::default();
    let state = sync::push_with_retry(store, client, vault, |state| {
        plan = plan_ending(state, &me, agent, only, client.now())?;
        Ok(plan.entries.clone())
    })
    .await?;
    Ok((state, plan))
}

/// Builds the entries ending each agency of `agent` that is named and not
/// ended in a collection (or only in `only`), as `me`: the owner, the
/// agent itself (resigning), or an agent above it. Where `me` may rotate
/// the collection's key afterwards (the owner, or an agent who may share
/// there), a rotation revoking nobody follows in the same append. For the
/// owner, a collection whose key `agent` withheld ([`withheld_keys`]) is
/// rotated too, even where its agency already ended.
pub fn plan_ending(
    state: &VaultState,
    me: &SecretIdentity,
    agent: &Fingerprint,
    only: Option<&CollectionId>,
    now: u64,
) -> vault_core::Result<Ending> {
    let mut next = state.clone();
    let mut ending = Ending::default();
    for agency in state.agencies() {
        if agency.agent != *agent {
            continue;
        }
        for collection in &agency.collections {
            if only.is_some_and(|o| o != collection) {
                continue;
            }
            end_in(
                &mut next,
                me,
                agency.delegation,
                collection,
                now,
                &mut ending,
            )?;
        }
    }
    for (collection, signer) in withheld_keys(&next, me, now) {
        if signer != *agent || only.is_some_and(|o| *o != collection) {
            continue;
        }
        let (rotation, _) = crate::sharing::rotate_in(&next, me, &collection, &[], now)?;
        next.apply(&rotation)?;
        ending.entries.push(rotation);
        ending.rotated.push(collection);
    }
    Ok(ending)
}

/// Ends agency `delegation` in `collection` on `next`, and rotates the
/// collection's key after it where `me` may.
pub(crate) fn end_in(
    next: &mut VaultState,
    me: &SecretIdentity,
    delegation: DelegationId,
    collection: &CollectionId,
    now: u64,
    ending: &mut Ending,
) -> vault_core::Result<()> {
    let entry = next.end_agency(me, &delegation, collection, now)?;
    next.apply(&entry)?;
    ending.entries.push(entry);
    ending.ended.push((delegation, *collection));
    let may_rotate = next.is_owner(&me.fingerprint())
        || next
            .agency_of(&me.fingerprint(), collection, now)
            .is_some_and(|(_, powers)| powers.shares());
    if may_rotate {
        // Ending the agency matters more than re-keying: if the rotation
        // cannot be built, the agency still ends, and the caller says so.
        match crate::sharing::rotate_in(next, me, collection, &[], now) {
            Ok((rotation, _)) => {
                next.apply(&rotation)?;
                ending.entries.push(rotation);
                ending.rotated.push(*collection);
            }
            Err(e) => ending.not_rotated.push((*collection, e)),
        }
    }
    Ok(())
}

/// The collections whose current key `me`, the owner, cannot open (or
/// whose name does not open under it), each with who signed the owner's
/// grant of it: an agent whose rotation sealed them wrongly (the log
/// cannot check an age file; decision 65). Ending that agent's agency
/// ([`end`]) rotates the collection from the keys the owner holds of
/// earlier epochs. Empty for anyone but the owner.
pub fn withheld_keys(
    state: &VaultState,
    me: &SecretIdentity,
    now: u64,
) -> Vec<(CollectionId, Fingerprint)> {
    if !state.is_owner(&me.fingerprint()) {
        return Vec::new();
    }
    let mut keyring = Keyring::new(me, now);
    state
        .collections()
        .into_iter()
        .filter(|c| state.collection_name(&mut keyring, &c.id).is_err())
        .filter_map(|c| {
            Some((
                c.id,
                state.grant_signer(&c.id, &state.owner().fingerprint())?,
            ))
        })
        .collect()
}
