//! The owner's devices, written once for every client (`docs/format.md`
//! §3.7, §8.11, decision 67): listing the owner's devices in a vault's log,
//! adding one, and removing a lost one.
//!
//! Each action appends the list's new version on its own first, so a
//! removed device loses its authority with the first append, then re-keys
//! the collections whose owner grant is not sealed to the current key
//! generation ([`rekey`]), a few per append, each built on the relay's
//! newest state: a vault of any size is re-keyed, a collection that fails
//! is reported and the others go on, and running the action again
//! finishes what an interruption left. The `vault devices` command and the
//! web app's access screen present these.

use vault_core::devices::DeviceList;
use vault_core::store::Store;
use vault_core::{
    CollectionId, Fingerprint, Keyring, LogEntry, PublicIdentity, RecordId, Role, SecretIdentity,
    VaultId, VaultState,
};

use crate::{sync, ClientError, RelayClient};

/// Collections rotated per append while re-keying: small enough that any
/// append fits the relay's request limit (each rotation does alone).
const ROTATIONS_PER_APPEND: usize = 1;

/// What re-keying the owner's collections did ([`rekey`]).
#[derive(Debug, Default)]
pub struct Rekeying {
    /// Collections rotated, so the owner's grant is to the current key
    /// generation.
    pub rotated: Vec<CollectionId>,
    /// Records a rotation dropped because their key did not open (a
    /// faulty writer's; decision 37), by collection.
    pub dropped: Vec<(CollectionId, RecordId)>,
    /// Collections whose rotation could not be built, with why: they still
    /// hold a key the removed device had. Run the action again.
    pub not_rotated: Vec<(CollectionId, String)>,
}

/// What adding a device did ([`add_by_fingerprint`]).
#[derive(Debug)]
pub struct Added {
    /// The device's identity, as the relay published it (its fingerprint
    /// checked).
    pub device: PublicIdentity,
    /// The list version that lists it.
    pub list: DeviceList,
    /// The collections re-keyed (the first listing moves the owner's
    /// grants to generation 1, which devices open).
    pub rekeying: Rekeying,
    /// The relay's directory, the owner's other vaults and the vaults
    /// shared with the owner, brought up to the new version.
    pub elsewhere: crate::member_devices::Propagation,
}

/// What removing a device did ([`remove`]).
#[derive(Debug)]
pub struct Removal {
    /// The list version that removes the device (`None` if it was removed
    /// already: the action only finished the re-keying).
    pub list: Option<DeviceList>,
    /// The collections re-keyed.
    pub rekeying: Rekeying,
    /// Members whose current grant the removed device made: what it
    /// shared stays (as for an agent, decision 60), so the owner reviews
    /// it and revokes whoever should go.
    pub granted_by_it: Vec<(CollectionId, Fingerprint)>,
    /// The relay's directory, the owner's other vaults (re-keyed there
    /// too) and the vaults shared with the owner, brought up to the new
    /// version: the removed device is refused in each.
    pub elsewhere: crate::member_devices::Propagation,
}

/// What taking the device list back with the key file did ([`recover`]).
#[derive(Debug)]
pub struct Recovery {
    /// The key file's version of the list (`None` if the list was taken
    /// back already with these devices: the action only finished the
    /// re-keying).
    pub list: Option<DeviceList>,
    /// The devices the list named before and no longer names.
    pub removed: Vec<PublicIdentity>,
    /// The collections re-keyed. Records only the removed devices' key
    /// generation opened (written after the list was taken from the key
    /// file) are in its `dropped`: the key file cannot open them.
    pub rekeying: Rekeying,
    /// Members whose current grant a device not kept made (any device the
    /// log's lists named, a thief's listed and dropped again included):
    /// what it shared stays, so the owner reviews it and revokes whoever
    /// should go.
    pub granted_by_removed: Vec<(CollectionId, Fingerprint)>,
    /// The relay's directory, the owner's other vaults and the vaults
    /// shared with the owner, brought up to the key file's version.
    pub elsewhere: crate::member_devices::Propagation,
}

/// The entry listing the owner's devices for the first time in `state`'s
/// log: `first` is the list's first version (the root's, from
/// [`DeviceList::first`]), written by `me` (the owner's root). The
/// collections are re-keyed next ([`rekey`]): devices never hold the
/// root's own key (generation 0, decision 67).
pub fn plan_listing(
    state: &VaultState,
    me: &SecretIdentity,
    first: &DeviceList,
    now: u64,
) -> vault_core::Result<Vec<LogEntry>> {
    if state.owner_device_list().is_some() {
        return Err(vault_core::Error::InvalidInput(
            "the owner's devices are listed already: add one to the list",
        ));
    }
    Ok(vec![state.list_devices(
        me,
        std::slice::from_ref(first),
        now,
    )?])
}

/// Up to `max` rotations (revoking nobody) of the collections whose
/// owner grant is not at the current generation, built on `state` as `me`
/// (the root or a listed device): the entries, and the rekeying they do.
/// A collection whose rotation cannot be built is reported, not fatal.
pub fn plan_rekeying(
    state: &VaultState,
    me: &SecretIdentity,
    now: u64,
    max: usize,
) -> (Vec<LogEntry>, Rekeying) {
    let mut next = state.clone();
    let mut keyring = Keyring::new(me, now);
    let mut entries = Vec::new();
    let mut done = Rekeying::default();
    for c in state.collections_to_rekey() {
        if entries.len() >= max {
            break;
        }
        let rotation = next
            .revoke(&mut keyring, &c, &[])
            .and_then(|r| next.apply(&r).map(|()| r));
        match rotation {
            Ok(r) => {
                if let vault_core::EntryBody::Rotation(rot) = r.body() {
                    done.dropped
                        .extend(rot.dropped.iter().map(|record| (c, *record)));
                }
                entries.push(r);
                done.rotated.push(c);
            }
            Err(e) => done.not_rotated.push((c, e.to_string())),
        }
    }
    (entries, done)
}

/// Re-keys, a few per append, every collection of `vault` whose owner
/// grant is not at the owner's current key generation (after a device
/// was listed for the first time, or removed), as the client's identity.
/// Stops when none is left, or when only collections that fail remain.
pub async fn rekey<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
) -> crate::Result<(VaultState, Rekeying)> {
    let me = client.identity().clone();
    let mut total = Rekeying::default();
    loop {
        let mut round = None;
        let state = sync::push_with_retry(store, client, vault, |state| {
            let (entries, done) = plan_rekeying(state, &me, client.now(), ROTATIONS_PER_APPEND);
            round = Some(done);
            Ok(entries)
        })
        .await?;
        let done = round.unwrap_or_default();
        let progressed = !done.rotated.is_empty();
        total.rotated.extend(done.rotated);
        total.dropped.extend(done.dropped);
        if !progressed {
            total.not_rotated = done.not_rotated;
            return Ok((state, total));
        }
    }
}

/// The owner's duty after a device list changed (decision 70): whether
/// `me` owns the vault and some collection's grant is not sealed to its
/// person's current key generation (a member removed a device, or the
/// owner listed a first one or removed one), so [`rekey`] is due: until
/// then a removed device holds the key of what is written next.
pub fn rekey_is_due(state: &VaultState, me: &Fingerprint) -> bool {
    state.is_owner(me) && !state.collections_to_rekey().is_empty()
}

/// [`rekey`] when it is due for the client's identity
/// ([`rekey_is_due`]); `None` when it is not (no request is made). The web
/// app runs it at every refresh, as `vault sync` does.
pub async fn rekey_if_due<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    state: &VaultState,
) -> crate::Result<Option<(VaultState, Rekeying)>> {
    if !rekey_is_due(state, &client.identity().fingerprint()) {
        return Ok(None);
    }
    rekey(store, client, &state.vault()).await.map(Some)
}

/// Re-keys before a write into `collections` (decision 74): when the
/// client's identity owns the vault (its key file or a listed device) and
/// one of `collections` is due ([`rekey_is_due`]'s rule), [`rekey`] runs
/// first, so what is written next is sealed under a key no removed device
/// holds. Returns the state to write on and what was re-keyed (nothing,
/// without a request, when nothing written into is due). Refuses with
/// [`ClientError::NotRekeyed`] when one of `collections` is still due
/// afterwards. A member cannot rotate: its writes go on as before.
pub async fn rekey_before_writing<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    state: VaultState,
    collections: &[CollectionId],
) -> crate::Result<(VaultState, Rekeying)> {
    let me = client.identity().fingerprint();
    if due_before_writing(&state, &me, collections).is_none() {
        return Ok((state, Rekeying::default()));
    }
    let (state, rekeying) = rekey(store, client, &state.vault()).await?;
    if let Some(c) = due_before_writing(&state, &me, collections) {
        let why = rekeying
            .not_rotated
            .iter()
            .find(|(n, _)| *n == c)
            .map_or_else(
                || "re-keying it did not finish".to_owned(),
                |(_, why)| format!("re-keying it failed: {why}"),
            );
        return Err(ClientError::NotRekeyed { why });
    }
    Ok((state, rekeying))
}

/// The first of `collections` that `me` must re-key before writing into
/// it (decision 74): `me` owns the vault and the collection is due
/// ([`rekey_is_due`]'s rule). `None` for anyone else: a member cannot
/// rotate.
pub fn due_before_writing(
    state: &VaultState,
    me: &Fingerprint,
    collections: &[CollectionId],
) -> Option<CollectionId> {
    if !state.is_owner(me) {
        return None;
    }
    let due = state.collections_to_rekey();
    collections.iter().find(|c| due.contains(c)).copied()
}

/// Refuses a write into `collections` built on `state` (each attempt of an
/// append, on the head it meets) when one of them became due while the
/// write was under way: a device was removed after the write re-keyed
/// ([`rekey_before_writing`]), and what is sealed now would open with its
/// key. Running the action again re-keys first.
pub fn check_not_due(
    state: &VaultState,
    me: &Fingerprint,
    collections: &[CollectionId],
) -> crate::Result<()> {
    match due_before_writing(state, me, collections) {
        None => Ok(()),
        Some(_) => Err(ClientError::NotRekeyed {
            why: "the list changed while this was being written".into(),
        }),
    }
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

/// Adds the device whose identity `vault`'s relay publishes under
/// `fingerprint` (its whole fingerprint, read off the device's own
/// screen) to the owner's devices, as the client's identity: the first
/// time, the owner's key file lists it (and the collections are re-keyed
/// to generation 1, which devices open); afterwards the list's next
/// version, signed by the key file or a listed device. Refuses an
/// identity that is not of role device. Adding a listed device again
/// only finishes the re-keying.
pub async fn add_by_fingerprint<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    fingerprint: &Fingerprint,
) -> crate::Result<(VaultState, Added)> {
    let device = published_device(client, fingerprint).await?;
    let me = client.identity().clone();
    // The owner never changes: the local copy names it, without a round trip.
    let owner = match sync::load(store, vault) {
        Ok(state) => state.owner().fingerprint(),
        Err(_) => sync::pull(store, client, vault)
            .await?
            .owner()
            .fingerprint(),
    };
    // The person's list is one chain in all the person's vaults: taken from
    // the newest list another vault of the person's that this device
    // verified carries (never from the relay's directory, which may serve
    // an old version that still lists a removed device).
    let chain = owned_chain(store, &owner, vault);
    let mut listed = None;
    sync::push_with_retry(store, client, vault, |state| {
        let (entries, list) = plan_adding_to_chain(state, &me, &device, &chain, client.now())?;
        listed = Some(list);
        Ok(entries)
    })
    .await?;
    let list = listed.ok_or(vault_core::Error::InvalidInput("nothing was listed"))?;
    let (state, rekeying) = rekey(store, client, vault).await?;
    let elsewhere = spread(store, client, &state).await;
    Ok((
        state,
        Added {
            device,
            list,
            rekeying,
            elsewhere,
        },
    ))
}

/// The versions of `owner`'s list, oldest first, that the vault of the
/// person's (other than `except`) whose verified log carries the newest
/// one holds: the person's one chain, as far as this device knows it.
pub fn owned_chain<S: Store + ?Sized>(
    store: &mut S,
    owner: &Fingerprint,
    except: &VaultId,
) -> Vec<DeviceList> {
    let vaults = store.vaults().unwrap_or_default();
    vaults
        .iter()
        .filter(|v| *v != except)
        .filter_map(|v| sync::load(store, v).ok())
        .filter(|s| s.owner().fingerprint() == *owner)
        .filter_map(|s| {
            let serial = s.owner_device_list()?.serial();
            Some((
                serial,
                s.owner_device_versions().cloned().collect::<Vec<_>>(),
            ))
        })
        .max_by_key(|(serial, _)| *serial)
        .map(|(_, chain)| chain)
        .unwrap_or_default()
}

/// The versions of `chain` after `held` when `held` is on it (same
/// version, compared by hash); `None` when it is not (another chain, or a
/// fork: nothing of it may be appended after `held`).
pub(crate) fn after_on_chain(chain: &[DeviceList], held: &DeviceList) -> Option<Vec<DeviceList>> {
    let at = chain.iter().position(|v| v.hash() == held.hash())?;
    Some(chain.get(at + 1..).unwrap_or_default().to_vec())
}

/// The entry adding `device` to the owner's list in `state`, as `me` (the
/// root, or a device of the chain's current version), on the person's one
/// chain (`chain`: the versions another vault of the person's carries,
/// [`owned_chain`]): the versions of it beyond this vault's come first
/// when this vault's current one is on it. A vault listing no device yet
/// takes the chain from its last root-signed version (only the key file
/// lists the first devices of a vault), or a fresh first version when
/// there is none. No entry if the device is listed already.
pub fn plan_adding_to_chain(
    state: &VaultState,
    me: &SecretIdentity,
    device: &PublicIdentity,
    chain: &[DeviceList],
    now: u64,
) -> vault_core::Result<(Vec<LogEntry>, DeviceList)> {
    let owner = state.owner().fingerprint();
    let held = state.owner_device_list();
    let mut chain: Vec<DeviceList> = match held {
        Some(h) => after_on_chain(chain, h).unwrap_or_default(),
        None => chain
            .iter()
            .rposition(|v| v.signer() == owner)
            .and_then(|at| chain.get(at..))
            .unwrap_or_default()
            .to_vec(),
    };
    // A chain this vault does not accept is not taken.
    if !chain.is_empty() && state.list_devices(me, &chain, now).is_err() {
        chain.clear();
    }
    let base = chain.last().or(held).cloned();
    let Some(base) = base else {
        let (first, _) = DeviceList::first(me, std::slice::from_ref(device), now)?;
        return Ok((plan_listing(state, me, &first, now)?, first));
    };
    if base.device(&device.fingerprint()).is_none() {
        let keys = if me.fingerprint() == owner {
            base.open_recovery(me)?
        } else {
            base.open(me)?
        };
        let (next, _) = base.next(me, &keys, std::slice::from_ref(device), &[], now)?;
        chain.push(next);
    }
    let Some(list) = chain.last().cloned() else {
        return Ok((Vec::new(), base));
    };
    if chain.len() > vault_core::MAX_LISTED_VERSIONS {
        return Err(vault_core::Error::InvalidInput(
            "more than 64 versions of your device list to carry into this vault at once: take the list back with your key file (`vault devices recover`)",
        ));
    }
    Ok((vec![state.list_devices(me, &chain, now)?], list))
}

/// Brings the relay's directory, the owner's other vaults and the vaults
/// shared with the owner up to the owner's list as `state` carries it
/// ([`crate::member_devices::propagate`]); nothing when the owner listed
/// no device.
async fn spread<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    state: &VaultState,
) -> crate::member_devices::Propagation {
    let chain: Vec<DeviceList> = state.owner_device_versions().cloned().collect();
    if chain.is_empty() {
        return Default::default();
    }
    crate::member_devices::propagate(store, client, state.owner(), &chain, Some(&state.vault()))
        .await
}

/// The device identity the relay publishes under `fingerprint` (its
/// fingerprint checked): refuses one that is not of role device.
pub(crate) async fn published_device(
    client: &RelayClient,
    fingerprint: &Fingerprint,
) -> crate::Result<PublicIdentity> {
    let device = client
        .lookup_identity(fingerprint)
        .await
        .map_err(|e| match e.status() {
            Some(404) => ClientError::Core(vault_core::Error::Missing {
                what: format!(
                    "a published identity {fingerprint} (on the new device, run `vault init --role device` and `vault whoami --publish` first)"
                ),
            }),
            _ => e,
        })?;
    if device.role() != Role::Device {
        return Err(vault_core::Error::InvalidInput(
            "that fingerprint is a person's identity, not a device's: on the new device, create one with `vault init --role device`",
        )
        .into());
    }
    Ok(device)
}

/// The entry removing `lost` from the owner's list, signed by `me` (the
/// root, or another device in the list), and the version: a new key
/// generation `lost` does not hold. Refuses to remove `me` itself
/// (another device, or the key file, does that) and a device not listed.
/// The root may remove the last device: its key file then acts alone.
pub fn plan_removal(
    state: &VaultState,
    me: &SecretIdentity,
    lost: &Fingerprint,
    now: u64,
) -> vault_core::Result<(LogEntry, DeviceList)> {
    let (list, keys) = current(state, me)?;
    if *lost == me.fingerprint() {
        return Err(vault_core::Error::InvalidInput(
            "a device does not remove itself here: remove it from another device, or with the key file",
        ));
    }
    if list.device(lost).is_none() {
        return Err(vault_core::Error::InvalidInput(
            "that device is not in the owner's list",
        ));
    }
    let (next, _) = list.next(me, &keys, &[], std::slice::from_ref(lost), now)?;
    let entry = state.list_devices(me, std::slice::from_ref(&next), now)?;
    Ok((entry, next))
}

/// Removes `lost` from the owner's list in `vault`'s log (one append: from
/// then on the relay refuses it and every client its entries), then
/// re-keys every collection ([`rekey`]). If `lost` was removed already,
/// only finishes the re-keying. Reports the members whose grant `lost`
/// signed: what it shared stays.
pub async fn remove<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    lost: &Fingerprint,
) -> crate::Result<(VaultState, Removal)> {
    let me = client.identity().clone();
    let mut removed = None;
    let mut granted_by_it = Vec::new();
    sync::push_with_retry(store, client, vault, |state| {
        granted_by_it = state.shared_by(lost);
        let listed = state
            .owner_device_list()
            .is_some_and(|l| l.device(lost).is_some());
        let ever = state.listed_device(lost).is_some();
        if !listed && ever {
            // Removed already (an earlier run, or another device).
            removed = None;
            return Ok(Vec::new());
        }
        let (entry, list) = plan_removal(state, &me, lost, client.now())?;
        removed = Some(list);
        Ok(vec![entry])
    })
    .await?;
    let (state, rekeying) = rekey(store, client, vault).await?;
    let elsewhere = spread(store, client, &state).await;
    Ok((
        state,
        Removal {
            list: removed,
            rekeying,
            granted_by_it,
            elsewhere,
        },
    ))
}

/// Takes the owner's device list back with the key file (`vault devices
/// recover`, decision 68), when a lost or stolen device may have changed
/// it: the client's identity must be the owner's key file. The new
/// version, built on the newest one the key file opens and above every
/// version the log carries, lists exactly `keep` (devices the log's lists
/// ever named), with a key generation no removed device holds; then every
/// collection is re-keyed ([`rekey`]). Running it again with the same
/// devices after an interruption only finishes the re-keying.
pub async fn recover<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    keep: &[Fingerprint],
) -> crate::Result<(VaultState, Recovery)> {
    let me = client.identity().clone();
    let mut keep = keep.to_vec();
    keep.sort_by_key(|fp| *fp.as_bytes());
    keep.dedup();
    let mut outcome = None;
    sync::push_with_retry(store, client, vault, |state| {
        let current = state
            .owner_device_list()
            .ok_or(vault_core::Error::InvalidInput(
                "the owner has listed no devices in this vault: there is no list to take back",
            ))?;
        let removed: Vec<PublicIdentity> = current
            .devices()
            .iter()
            .map(|d| d.document().clone())
            .filter(|d| !keep.contains(&d.fingerprint()))
            .collect();
        // What any device not kept shared, the ones a thief listed and
        // dropped again included; by who made each grant, not who last
        // re-sealed it, so a second run reports the same.
        let granted_by_removed = state
            .ever_listed_devices()
            .map(|d| d.document().fingerprint())
            .filter(|fp| !keep.contains(fp))
            .flat_map(|d| state.shared_by(&d))
            .collect();
        let done = current.signer() == me.fingerprint()
            && current.devices().len() == keep.len()
            && keep.iter().all(|k| current.device(k).is_some())
            && current.open_recovery(&me).is_ok();
        let (entries, list) = if done {
            (Vec::new(), None)
        } else {
            let (entry, list) = state.recover_devices(&me, &keep, client.now())?;
            (vec![entry], Some(list))
        };
        outcome = Some((list, removed, granted_by_removed));
        Ok(entries)
    })
    .await?;
    let (list, removed, granted_by_removed) =
        outcome.ok_or(vault_core::Error::InvalidInput("nothing was recovered"))?;
    let (state, rekeying) = rekey(store, client, vault).await?;
    let elsewhere = spread(store, client, &state).await;
    Ok((
        state,
        Recovery {
            list,
            removed,
            rekeying,
            granted_by_removed,
            elsewhere,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{identity, NOW};

    /// A vault whose list is on another chain of the person's than the one
    /// given (started apart, or a thief's branch) is never moved onto it:
    /// the root-signed versions of that chain would be accepted there as
    /// an override, to generations that vault's grants are not sealed to.
    #[test]
    fn a_list_on_another_chain_is_extended_not_overridden() {
        let pat = identity(1, "Pat", Role::Patient);
        let laptop = identity(20, "laptop", Role::Device);
        let phone = identity(21, "phone", Role::Device);
        let tablet = identity(22, "tablet", Role::Device);
        // Vault B's own chain.
        let (mut b, _) = VaultState::create(&pat, NOW).unwrap();
        let (own, _) = DeviceList::first(&pat, std::slice::from_ref(phone.public()), NOW).unwrap();
        let e = b
            .list_devices(&pat, std::slice::from_ref(&own), NOW)
            .unwrap();
        b.apply(&e).unwrap();
        // Another vault's chain: the laptop, then removed.
        let (v1, _) = DeviceList::first(&pat, std::slice::from_ref(laptop.public()), NOW).unwrap();
        let keys = v1.open_recovery(&pat).unwrap();
        let (v2, _) = v1
            .next(&pat, &keys, &[], &[laptop.fingerprint()], NOW)
            .unwrap();
        let other = [v1.clone(), v2];
        assert!(after_on_chain(&other, &own).is_none());
        assert_eq!(after_on_chain(&other, &v1).unwrap().len(), 1);
        let (entries, list) = plan_adding_to_chain(&b, &pat, tablet.public(), &other, NOW).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(list.prev(), own.hash(), "built on the vault's own chain");
        assert_eq!(list.serial(), 2);
        assert!(list.device(&phone.fingerprint()).is_some());
        // A vault listing no device takes the other vault's chain from its
        // last root-signed version.
        let (empty, _) = VaultState::create(&pat, NOW).unwrap();
        let (entries, list) =
            plan_adding_to_chain(&empty, &pat, tablet.public(), &other, NOW).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(list.serial(), 3);
        assert!(list.device(&laptop.fingerprint()).is_none());
    }
}
