//! The owner's devices, written once for every client (`docs/format.md`
//! §3.7, §8.11, decision 67): listing the owner's devices in a vault's log,
//! adding one, and removing a lost one.
//!
//! [`list`], [`add`] and [`remove`] perform the action against a relay:
//! they pull, build the entries with [`plan_listing`], [`plan_adding`] or
//! [`plan_removal`], and append them with
//! [`crate::sync::push_with_retry`], which builds them again on the
//! relay's newer state if the head moved. Removing a device appends, in
//! one batch, the list's next version (a new key generation the removed
//! device does not hold) and a rotation of every collection, so nothing
//! sealed to the owner afterwards opens with the removed device's keys.

use vault_core::devices::DeviceList;
use vault_core::store::Store;
use vault_core::{
    CollectionId, Fingerprint, Keyring, LogEntry, PublicIdentity, SecretIdentity, VaultId,
    VaultState,
};

use crate::{sync, RelayClient};

/// What removing a device does.
#[derive(Debug)]
pub struct Removal {
    /// The entries to append, in order: the list's next version, then one
    /// rotation per collection.
    pub entries: Vec<LogEntry>,
    /// The list version that removes the device.
    pub list: DeviceList,
    /// Collections rotated, so the owner's grant is to the new generation.
    pub rotated: Vec<CollectionId>,
    /// Records a rotation dropped because their key did not open (a
    /// faulty writer's; decision 37), by collection.
    pub dropped: Vec<(CollectionId, vault_core::RecordId)>,
}

/// Builds the entries listing the owner's devices for the first time in
/// `state`'s log: `first` is the list's first version (the root's, from
/// [`DeviceList::first`]), written by `me` (the owner's root), then a
/// rotation revoking nobody of every collection. Devices never hold the
/// root's own key (generation 0, decision 67), so the rotations seal the
/// owner's grants to generation 1, which they open; versions replaced
/// before stay readable with the key file only.
pub fn plan_listing(
    state: &VaultState,
    me: &SecretIdentity,
    first: &DeviceList,
    now: u64,
) -> vault_core::Result<Vec<LogEntry>> {
    let mut next = state.clone();
    let listing = next.list_devices(me, std::slice::from_ref(first), now)?;
    next.apply(&listing)?;
    let mut entries = vec![listing];
    entries.extend(rotate_all(&mut next, me, now)?.0);
    Ok(entries)
}

/// A rotation revoking nobody of every collection of `next` (applied to
/// it), so the owner's grants go to the current generation: the entries,
/// the collections, and the records dropped because their key did not
/// open (decision 37).
#[allow(clippy::type_complexity)] // three plain lists
fn rotate_all(
    next: &mut VaultState,
    me: &SecretIdentity,
    now: u64,
) -> vault_core::Result<(
    Vec<LogEntry>,
    Vec<CollectionId>,
    Vec<(CollectionId, vault_core::RecordId)>,
)> {
    let (mut entries, mut rotated, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
    for c in next.collections() {
        let rotation = next.revoke(&mut Keyring::new(me, now), &c.id, &[])?;
        if let vault_core::EntryBody::Rotation(r) = rotation.body() {
            dropped.extend(r.dropped.iter().map(|record| (c.id, *record)));
        }
        next.apply(&rotation)?;
        entries.push(rotation);
        rotated.push(c.id);
    }
    Ok((entries, rotated, dropped))
}

/// Lists the owner's devices in `vault`'s log: see [`plan_listing`].
pub async fn list<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    first: &DeviceList,
) -> crate::Result<VaultState> {
    let me = client.identity().clone();
    sync::push_with_retry(store, client, vault, |state| {
        Ok(plan_listing(state, &me, first, client.now())?)
    })
    .await
}

/// The current list and the keys `me` (a device in it, or the root)
/// opens from it.
fn current(
    state: &VaultState,
    me: &SecretIdentity,
) -> vault_core::Result<(DeviceList, vault_core::devices::GenerationKeys)> {
    let list = state
        .owner_device_list()
        .ok_or(vault_core::Error::InvalidInput(
            "the owner has listed no devices in this vault yet",
        ))?
        .clone();
    let keys = state.open_generations(me)?;
    Ok((list, keys))
}

/// Builds the entry adding `device` (an identity of role device) to the
/// owner's list, signed by `me` (the root, or a device in the list). The
/// generation is kept: nothing needs rotating.
pub fn plan_adding(
    state: &VaultState,
    me: &SecretIdentity,
    device: &PublicIdentity,
    now: u64,
) -> vault_core::Result<(Vec<LogEntry>, DeviceList)> {
    let (list, keys) = current(state, me)?;
    if list.device(&device.fingerprint()).is_some() {
        return Err(vault_core::Error::InvalidInput(
            "that device is already in the owner's list",
        ));
    }
    let (next, _) = list.next(me, &keys, std::slice::from_ref(device), &[], now)?;
    let entry = state.list_devices(me, std::slice::from_ref(&next), now)?;
    Ok((vec![entry], next))
}

/// Adds `device` to the owner's list in `vault`'s log: see
/// [`plan_adding`].
pub async fn add<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    device: &PublicIdentity,
) -> crate::Result<(VaultState, DeviceList)> {
    let me = client.identity().clone();
    let mut added = None;
    let state = sync::push_with_retry(store, client, vault, |state| {
        let (entries, list) = plan_adding(state, &me, device, client.now())?;
        added = Some(list);
        Ok(entries)
    })
    .await?;
    let list = added.ok_or(vault_core::Error::InvalidInput("nothing was added"))?;
    Ok((state, list))
}

/// Builds the entries removing `lost` from the owner's list, signed by
/// `me` (the root, or another device in the list): the next version (a
/// new key generation), then a rotation revoking nobody of every
/// collection, built on the state after the listing so the owner's new
/// grant goes to the new generation. Refuses to remove `me` itself
/// (another device, or the root, does that) and a device not listed. The
/// root may remove the last device: its key file then acts alone.
pub fn plan_removal(
    state: &VaultState,
    me: &SecretIdentity,
    lost: &Fingerprint,
    now: u64,
) -> vault_core::Result<Removal> {
    let (list, keys) = current(state, me)?;
    if *lost == me.fingerprint() {
        return Err(vault_core::Error::InvalidInput(
            "a device does not remove itself here: remove it from another device, or with the recovery key file",
        ));
    }
    if list.device(lost).is_none() {
        return Err(vault_core::Error::InvalidInput(
            "that device is not in the owner's list",
        ));
    }
    let (next_list, _) = list.next(me, &keys, &[], std::slice::from_ref(lost), now)?;
    let mut next = state.clone();
    let listing = next.list_devices(me, std::slice::from_ref(&next_list), now)?;
    next.apply(&listing)?;
    let (rotations, rotated, dropped) = rotate_all(&mut next, me, now)?;
    let mut entries = vec![listing];
    entries.extend(rotations);
    Ok(Removal {
        entries,
        list: next_list,
        rotated,
        dropped,
    })
}

/// Removes `lost` from the owner's list in `vault`'s log and rotates
/// every collection, in one append: see [`plan_removal`].
pub async fn remove<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    lost: &Fingerprint,
) -> crate::Result<(VaultState, Removal)> {
    let me = client.identity().clone();
    let mut plan = None;
    let state = sync::push_with_retry(store, client, vault, |state| {
        let removal = plan_removal(state, &me, lost, client.now())?;
        let entries = removal.entries.clone();
        plan = Some(removal);
        Ok(entries)
    })
    .await?;
    let plan = plan.ok_or(vault_core::Error::InvalidInput("nothing was removed"))?;
    Ok((state, plan))
}
