//! Members' devices, written once for every client (`docs/format.md`
//! §3.7, §8.12, decision 70): a person's device list published in the
//! relay's directory, carried into each collection shared with the person,
//! so that a grant reaches every device of the person and a removed device
//! is shut out.
//!
//! - Sharing a collection ([`crate::sharing::share`]) fetches the member's
//!   list from the directory ([`fetch`]), verified from the version its root
//!   signed, and appends it before the grant ([`plan_listing`]), so the
//!   grant is sealed to the generation every device of the member opens.
//! - The person adds or removes a device ([`change`]): its key file or one
//!   of its devices signs the next version, publishes it, and carries it
//!   into every collection of the vaults this client follows that carries
//!   an older one ([`carry`]); the key file also into collections shared
//!   with the person before it listed devices. The owner of each vault then
//!   re-keys ([`crate::devices::rekey`]: a collection whose member grant is
//!   at an older generation than the member's list is rotated, revoking
//!   nobody), so a removed device holds no key sealed afterwards.

use vault_core::devices::DeviceList;
use vault_core::store::Store;
use vault_core::{
    CollectionId, Fingerprint, LogEntry, Permission, PublicIdentity, SecretIdentity, VaultId,
    VaultState,
};

use crate::{sync, ClientError, RelayClient};

/// Checks versions of `person`'s list as a directory serves them: each
/// accepted (§3.7) after the one before, the first signed by the person's
/// root (a reader holding no version accepts only that).
pub fn verify_served(person: &PublicIdentity, versions: &[DeviceList]) -> vault_core::Result<()> {
    let mut held: Option<&DeviceList> = None;
    for v in versions {
        v.accept(person, held)?;
        held = Some(v);
    }
    Ok(())
}

/// `person`'s device lists from the relay's directory, verified
/// ([`verify_served`]); empty if the person published none (grants to it
/// then go to its document's own key, as before devices).
pub async fn fetch(
    client: &RelayClient,
    person: &PublicIdentity,
) -> crate::Result<Vec<DeviceList>> {
    let versions = client.device_lists(&person.fingerprint()).await?;
    verify_served(person, &versions)?;
    Ok(versions)
}

/// The versions among `versions` newer than the list `state` carries for
/// `person` in `collection` (all of them if it carries none).
pub fn newer_than_carried(
    state: &VaultState,
    collection: &CollectionId,
    person: &Fingerprint,
    versions: &[DeviceList],
) -> Vec<DeviceList> {
    let held = state
        .member_device_list(collection, person)
        .map_or(0, DeviceList::serial);
    versions
        .iter()
        .filter(|v| v.serial() > held)
        .cloned()
        .collect()
}

/// The entry carrying `versions` of `member`'s list into `collection`
/// before the owner (`me`) grants it to the member, or none when the
/// collection carries them already, the member listed no device, or the
/// grant is a deposit (a depositor stays one key). An agent may not carry
/// a member's list (`docs/format.md` §8.12): none when the collection
/// carries no list of the member's (the agent's grant goes to the
/// member's key file), and a refusal when it carries one older than the
/// directory's (a grant to it would reach a device the member removed
/// since: the owner shares instead).
pub fn plan_listing(
    state: &VaultState,
    me: &SecretIdentity,
    collection: &CollectionId,
    member: &PublicIdentity,
    permission: Permission,
    versions: &[DeviceList],
    now: u64,
) -> vault_core::Result<Option<LogEntry>> {
    if permission == Permission::Deposit {
        return Ok(None);
    }
    check_not_behind(state, &member.fingerprint(), versions)?;
    let newer = newer_than_carried(state, collection, &member.fingerprint(), versions);
    if newer.is_empty() {
        return Ok(None);
    }
    if !state.may_list_member_devices(&me.fingerprint(), collection, &member.fingerprint()) {
        if state
            .member_device_list(collection, &member.fingerprint())
            .is_some()
        {
            return Err(vault_core::Error::AccessDenied(
                "this collection carries an older device list of this member's than the relay's directory, which only the vault's owner or the member can bring up to date (a grant now could reach a device the member removed): ask the vault's owner to share it",
            ));
        }
        return Ok(None);
    }
    state
        .list_member_devices(me, collection, member, &newer, now)
        .map(Some)
}

/// Refuses `versions` (a directory's) when `state` already carries a
/// newer version of `person`'s list in some collection, or another version
/// under a serial they hold: the directory (or the relay serving it) is
/// rolling the list back to a version a removed device holds the keys of,
/// or serving a fork.
pub fn check_not_behind(
    state: &VaultState,
    person: &Fingerprint,
    versions: &[DeviceList],
) -> vault_core::Result<()> {
    let served = versions.last().map_or(0, DeviceList::serial);
    for carried in state.member_lists_carried(person) {
        if carried.serial() > served {
            return Err(vault_core::Error::InvalidInput(
                "the relay's directory serves an older device list for this member than this vault already carries (a rollback, which would seal the grant to keys a removed device may hold): ask the member to publish their list again from one of their devices",
            ));
        }
        if versions
            .iter()
            .any(|v| v.serial() == carried.serial() && v.hash() != carried.hash())
        {
            return Err(vault_core::Error::InvalidInput(
                "the relay's directory serves a device list for this member that differs from the one this vault carries under the same version (a fork): ask the member to take the list back with their key file",
            ));
        }
    }
    Ok(())
}

/// The entries carrying `versions` of `person`'s list into every
/// collection of `state` where the person holds a current grant that can
/// carry one (not a deposit grant), and which carries an older version; or
/// none yet, when `me` is the person's key file (a device is no one in a
/// collection that does not list it). Returns the entries, and where they
/// go: a collection whose list does not accept them (it carries a version
/// on another chain, a fork; or they are more than one entry carries) is
/// left out and named in [`Carried::refused`] with why.
pub fn plan_carrying(
    state: &VaultState,
    me: &SecretIdentity,
    person: &PublicIdentity,
    versions: &[DeviceList],
    now: u64,
) -> (Vec<LogEntry>, Carried) {
    let fp = person.fingerprint();
    let root = me.fingerprint() == fp;
    let mut next = state.clone();
    let mut entries = Vec::new();
    let mut carried = Carried::default();
    for c in state.collections() {
        let holds = c
            .members
            .iter()
            .any(|(m, p, _)| *m == fp && *p != Permission::Deposit);
        if !holds || (!root && state.member_device_list(&c.id, &fp).is_none()) {
            continue;
        }
        let newer = newer_than_carried(&next, &c.id, &fp, versions);
        if newer.is_empty() {
            continue;
        }
        let entry = next
            .list_member_devices(me, &c.id, person, &newer, now)
            .and_then(|e| next.apply(&e).map(|()| e));
        match entry {
            Ok(e) => {
                entries.push(e);
                carried.into.push(c.id);
            }
            Err(e) => carried.refused.push((c.id, e.to_string())),
        }
    }
    (entries, carried)
}

/// Where a person's list went in one vault ([`plan_carrying`], [`carry`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Carried {
    /// The collections it was carried into.
    pub into: Vec<CollectionId>,
    /// The collections it could not be carried into, with why: their list
    /// is on another chain (a fork the relay or a removed device made), or
    /// the versions are more than one entry carries. Running again does
    /// not change that; the person's key file takes the list back
    /// (`vault devices recover`), or the vault's owner shares again.
    pub refused: Vec<(CollectionId, String)>,
}

/// Carries `versions` of `person`'s list into `vault` ([`plan_carrying`])
/// as the client's identity. Returns where they went.
pub async fn carry<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    vault: &VaultId,
    person: &PublicIdentity,
    versions: &[DeviceList],
) -> crate::Result<Carried> {
    let me = client.identity().clone();
    let mut carried = Carried::default();
    sync::push_with_retry(store, client, vault, |state| {
        let (entries, planned) = plan_carrying(state, &me, person, versions, client.now());
        carried = planned;
        Ok(entries)
    })
    .await?;
    Ok(carried)
}

/// What adding or removing a device of a member did ([`change`]).
#[derive(Debug)]
pub struct MemberChange {
    /// The added device's identity, as the relay published it.
    pub device: Option<PublicIdentity>,
    /// The person's list as now published.
    pub list: DeviceList,
    /// Whether this change signed a new version (`false`: the list held
    /// the change already, and only what was missing was carried).
    pub published: bool,
    /// Where the new version went in the vaults beyond the directory
    /// ([`Propagation`]; `not_published` stays `None`: a list the
    /// directory refuses fails the action). A vault not reached: run the
    /// action again (it publishes nothing new, and carries what is
    /// missing).
    pub elsewhere: Propagation,
}

/// A change to a person's device list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add the device whose identity the relay publishes under this
    /// fingerprint; the key generation is kept.
    Add(Fingerprint),
    /// Remove this device; a new key generation starts, which it does not
    /// hold.
    Remove(Fingerprint),
    /// This device (the client's identity, listed) signs the next version,
    /// unchanged: its own consent to act for the person, its **claim**
    /// (`docs/format.md` §8.12 rule 4). A device that signed a version of
    /// its person's list acts for that person even in a collection where
    /// another member listed it first (a device document is public, so
    /// anyone may list it), and nobody else may list it there afterwards.
    /// A device that signed one already publishes nothing.
    Confirm,
}

/// Changes `person`'s device list in the relay's directory as the
/// client's identity (the person's key file, or one of its listed
/// devices), then carries the new version into every vault this client
/// follows, or the relay's inbox names for it, where the person is a
/// member ([`carry`]). The first version is
/// the key file's. Adding a listed device, or removing one no longer
/// listed, publishes nothing and only carries what is missing.
pub async fn change<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    person: &PublicIdentity,
    change: Change,
) -> crate::Result<MemberChange> {
    let me = client.identity().clone();
    let fp = person.fingerprint();
    let held = fetch(client, person).await?;
    let mut versions = held.clone();
    let mut device = None;
    let current = versions.last().cloned();
    let next = match (change, &current) {
        (Change::Add(d), _) => {
            let doc = crate::devices::published_device(client, &d).await?;
            let listed = current.as_ref().is_some_and(|c| c.device(&d).is_some());
            device = Some(doc.clone());
            match &current {
                _ if listed => None,
                None if me.fingerprint() == fp => Some(DeviceList::first(&me, &[doc], client.now())?.0),
                None => {
                    return Err(vault_core::Error::AccessDenied(
                        "your device list starts with your key file: add the first device from the key file's profile",
                    )
                    .into())
                }
                Some(c) => Some(c.next(&me, &keys_for(c, &me, &fp)?, &[doc], &[], client.now())?.0),
            }
        }
        (Change::Remove(lost), Some(c)) if c.device(&lost).is_some() => {
            if lost == me.fingerprint() {
                return Err(vault_core::Error::InvalidInput(
                    "a device does not remove itself here: remove it from another device, or with the key file",
                )
                .into());
            }
            Some(
                c.next(&me, &keys_for(c, &me, &fp)?, &[], &[lost], client.now())?
                    .0,
            )
        }
        (Change::Remove(_), Some(_)) => None,
        (Change::Remove(_), None) => {
            return Err(vault_core::Error::InvalidInput(
                "you have published no device list: there is no device to remove",
            )
            .into())
        }
        (Change::Confirm, Some(c)) if c.device(&me.fingerprint()).is_some() => {
            if versions.iter().any(|v| v.signer() == me.fingerprint()) {
                None
            } else {
                Some(c.next(&me, &keys_for(c, &me, &fp)?, &[], &[], client.now())?.0)
            }
        }
        (Change::Confirm, _) => {
            return Err(vault_core::Error::AccessDenied(
                "only a device in the person's current device list confirms it: add this device from another of the person's devices first",
            )
            .into())
        }
    };
    let published = next.is_some();
    if let Some(next) = next {
        // An extension: the collections behind take every version since
        // theirs.
        versions.push(next);
    }
    let list = versions
        .last()
        .cloned()
        .ok_or(vault_core::Error::InvalidInput("no device list"))?;
    // A member's list lives in the directory first: if the relay does not
    // take it, nothing is changed.
    publish_after(client, person, &held, &versions).await?;
    let elsewhere = reach_vaults(store, client, person, &versions, None).await;
    Ok(MemberChange {
        device,
        list,
        published,
        elsewhere,
    })
}

/// After this client (the person's key file, or one of its devices) added
/// `device` to `person`'s list (a pairing), waits up to `timeout` for the
/// device's claim, a version it signed (`docs/format.md` §8.12 rule 4), to
/// reach the relay's directory, then carries the chain into the vaults
/// this client follows or the relay's inbox names for it, as [`change`]
/// does. The new device cannot carry its claim there itself: it follows
/// none of the vaults shared with the person yet, and where another
/// member listed it first, the version adding it was refused. `None`: the
/// device signed nothing in time (it keeps the first-come rule until it
/// does, and `change` run again carries its claim); an error: the relay
/// did not answer when the time was up, or refused.
pub async fn carry_claim<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    person: &PublicIdentity,
    device: &Fingerprint,
    timeout: std::time::Duration,
) -> crate::Result<Option<Propagation>> {
    let deadline = crate::platform::unix_now().saturating_add(timeout.as_secs());
    let mut first = true;
    loop {
        if !first {
            if crate::platform::unix_now() >= deadline {
                return Ok(None);
            }
            crate::platform::sleep(crate::pairing::POLL_INTERVAL).await;
        }
        first = false;
        let versions = match fetch(client, person).await {
            Ok(v) => v,
            // The relay unreachable for a moment: keep waiting, unless
            // the time is up, when the relay's silence is the answer.
            Err(e)
                if matches!(e, ClientError::Transport(_))
                    || e.status().is_some_and(|s| s >= 500) =>
            {
                if crate::platform::unix_now() >= deadline {
                    return Err(e);
                }
                tracing::debug!(error = %e, "waiting for a device's claim: the relay did not answer");
                continue;
            }
            Err(e) => return Err(e),
        };
        if versions.iter().any(|v| v.signer() == *device) {
            return Ok(Some(
                reach_vaults(store, client, person, &versions, None).await,
            ));
        }
    }
}

/// Where a change to a person's device list went beyond the vault at hand
/// ([`propagate`]).
#[derive(Debug, Default)]
pub struct Propagation {
    /// Why the relay's directory does not hold the new version (`None`: it
    /// does, or held it already).
    pub not_published: Option<String>,
    /// Other vaults the person owns whose log took the new versions
    /// (devices-listed), with the collections re-keyed there.
    pub owned: Vec<(VaultId, usize)>,
    /// Vaults shared with the person, with the collections the new
    /// versions were carried into.
    pub carried: Vec<(VaultId, Vec<CollectionId>)>,
    /// Vaults not reached, with why: run the action again to finish.
    pub not_reached: Vec<(VaultId, String)>,
    /// Why the relay's inbox could not be read (`None`: it was), so the
    /// vaults this client does not follow were not reached: run the
    /// action again to finish.
    pub inbox_not_read: Option<String>,
    /// Vaults shared with the person by owners it has not accepted
    /// (strangers), which this client does not follow: not reached, so
    /// their logs are not downloaded for a stranger's share. Accept the
    /// owner and run the action again to reach them.
    pub strangers_not_reached: u64,
    /// Collections of vaults shared with the person that refused the new
    /// versions ([`Carried::refused`]), with why: running again does not
    /// help.
    pub refused: Vec<(VaultId, CollectionId, String)>,
}

/// Brings everything this client follows, and every vault the relay's
/// inbox names for it, up to `chain` (versions of
/// `person`'s list, oldest first, ending at the current one), as the
/// client's identity: the relay's directory takes the versions it lacks
/// (with none held, from the last one the root signed: only the key file
/// publishes then); every other vault the person owns that carries an
/// older version of the chain takes the newer ones in one devices-listed
/// entry and is re-keyed (a removed device then holds no key there
/// either); every vault shared with the person takes them in each
/// collection ([`carry`]). `except` is the vault the action was made in.
/// A vault that fails is reported and the others go on.
pub async fn propagate<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    person: &PublicIdentity,
    chain: &[DeviceList],
    except: Option<&VaultId>,
) -> Propagation {
    // Every failure is reported, never returned: the action it follows
    // already happened in its own vault.
    let not_published = publish_newer(client, person, chain)
        .await
        .err()
        .map(|e| e.to_string());
    Propagation {
        not_published,
        ..reach_vaults(store, client, person, chain, except).await
    }
}

/// [`propagate`] without the directory: the other vaults this client
/// follows, then the vaults of the person's own and of accepted owners
/// that the relay's inbox names for this identity, where it holds
/// something, and that it does not follow (joined in memory for the
/// change only, so a device removed where only it was used is refused
/// there too; strangers' are counted, not joined), each failure reported.
async fn reach_vaults<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    person: &PublicIdentity,
    chain: &[DeviceList],
    except: Option<&VaultId>,
) -> Propagation {
    let mut done = Propagation::default();
    let followed = store.vaults().unwrap_or_default();
    for vault in &followed {
        if except == Some(vault) {
            continue;
        }
        let reached = async {
            let state = sync::pull(store, client, vault).await?;
            reach_one(store, client, person, chain, state).await
        }
        .await;
        done.note(*vault, reached);
    }
    // The vaults this client does not follow: the lost device may have
    // been the only one that used them. The person's own and accepted
    // owners' only, where it holds something: a stranger's log is not
    // downloaded for it (a flood of shares would cost every change).
    // A relay from before decision 76 cannot read for the person: this
    // device's own inbox is what it could read before.
    let listing = match client.inbox_listing().await {
        Err(ClientError::PersonNotServed) => {
            // Said, for the person's own inbox may list vaults this one
            // does not, and their patients count here as strangers.
            done.inbox_not_read = Some(
                "this relay predates decision 76, so only this device's own inbox was read, not its person's; run the change from the key file to reach the rest".into(),
            );
            client.without_person().inbox_listing().await
        }
        other => other,
    };
    let unfollowed: Vec<crate::InboxVault> = match listing {
        Ok(listing) => {
            if listing.truncated {
                done.inbox_not_read = Some(format!(
                    "it lists more vaults than this client reads; the first {} were reached",
                    listing.vaults.len()
                ));
            }
            let (accepted, strangers): (Vec<_>, Vec<_>) = listing
                .vaults
                .into_iter()
                .filter(|v| except != Some(&v.vault) && !followed.contains(&v.vault))
                .filter(|v| v.is_owner || !v.collections.is_empty())
                .partition(|v| v.is_owner || v.accepted);
            done.strangers_not_reached =
                (strangers.len() as u64).saturating_add(listing.strangers_held_back);
            accepted
        }
        Err(e) => {
            done.inbox_not_read = Some(e.to_string());
            Vec::new()
        }
    };
    for v in unfollowed {
        let mut memory = vault_core::store::MemoryStore::new();
        let reached = async {
            let state = sync::join_vault(&mut memory, client, &v.vault, &v.owner).await?;
            reach_one(&mut memory, client, person, chain, state).await
        }
        .await;
        done.note(v.vault, reached);
    }
    done
}

/// What reaching one vault did ([`reach_one`]).
enum Reached {
    /// Nothing to do: a vault of the person's that lists no devices, or
    /// is up to date.
    Nothing,
    /// A vault shared with the person: where the list was carried.
    Shared(Carried),
    /// A vault the person owns: how many collections were re-keyed.
    Owned(usize),
}

/// Brings one vault (`state`, just pulled) up to `chain`: a vault shared
/// with the person takes it in each collection ([`carry`]); a vault the
/// person owns takes the newer versions along the same chain and is
/// re-keyed.
async fn reach_one<S: Store + ?Sized>(
    store: &mut S,
    client: &RelayClient,
    person: &PublicIdentity,
    chain: &[DeviceList],
    state: VaultState,
) -> crate::Result<Reached> {
    let vault = state.vault();
    if !state.is_owner(&person.fingerprint()) {
        let carried = carry(store, client, &vault, person, chain).await?;
        return Ok(Reached::Shared(carried));
    }
    let Some(held) = state.owner_device_list() else {
        return Ok(Reached::Nothing);
    };
    // Only along the same chain: a vault whose list is not on it (its own
    // chain, or a thief's branch) is reported, never overridden from here.
    let newer = crate::devices::after_on_chain(chain, held).ok_or(
        vault_core::Error::InvalidInput(
            "this vault carries another device list of yours (started apart, or changed by another device): change it there with --vault, or take it back with your key file",
        ),
    )?;
    let me = client.identity().clone();
    let state = if newer.is_empty() {
        state
    } else {
        sync::push_with_retry(store, client, &vault, |state| {
            Ok(vec![state.list_devices(&me, &newer, client.now())?])
        })
        .await?
    };
    // Re-keying also finishes what an earlier run left.
    if newer.is_empty() && state.collections_to_rekey().is_empty() {
        return Ok(Reached::Nothing);
    }
    let (_, rekeying) = crate::devices::rekey(store, client, &vault).await?;
    if let Some((_, why)) = rekeying.not_rotated.first() {
        return Err(ClientError::Protocol(format!(
            "the list was updated, but {} collection(s) were not re-keyed ({why}): run the command again",
            rekeying.not_rotated.len()
        )));
    }
    Ok(Reached::Owned(rekeying.rotated.len()))
}

impl Propagation {
    /// Records what reaching `vault` did.
    fn note(&mut self, vault: VaultId, reached: crate::Result<Reached>) {
        match reached {
            Ok(Reached::Nothing) => {}
            Ok(Reached::Owned(rekeyed)) => self.owned.push((vault, rekeyed)),
            Ok(Reached::Shared(carried)) => {
                if !carried.into.is_empty() {
                    self.carried.push((vault, carried.into));
                }
                self.refused.extend(
                    carried
                        .refused
                        .into_iter()
                        .map(|(collection, why)| (vault, collection, why)),
                );
            }
            Err(e) => self.not_reached.push((vault, e.to_string())),
        }
    }
}

/// Publishes the versions of `chain` newer than what the relay's directory
/// holds for `person` (with none held, from the last one the root signed),
/// as the client's identity. Nothing to do when the directory holds the
/// chain's current version.
pub async fn publish_newer(
    client: &RelayClient,
    person: &PublicIdentity,
    chain: &[DeviceList],
) -> crate::Result<()> {
    let held = fetch(client, person).await?;
    publish_after(client, person, &held, chain).await
}

/// [`publish_newer`] given what the directory holds (`held`, verified).
async fn publish_after(
    client: &RelayClient,
    person: &PublicIdentity,
    held: &[DeviceList],
    chain: &[DeviceList],
) -> crate::Result<()> {
    let fp = person.fingerprint();
    let from = match held.last() {
        Some(h) => {
            // The directory's current version must be on this chain (not a
            // fork, nor a thief's versions beyond it).
            let on_chain = chain
                .iter()
                .position(|v| v.hash() == h.hash())
                .ok_or(vault_core::Error::InvalidInput(
                    "the relay's directory holds another version of your device list than this vault (a fork, or a device changed it elsewhere): take the list back with your key file",
                ))?;
            Some(on_chain + 1)
        }
        None => chain.iter().rposition(|v| v.signer() == fp),
    };
    let Some(from) = from else {
        return Ok(());
    };
    let newer = chain.get(from..).unwrap_or_default();
    if newer.is_empty() {
        return Ok(());
    }
    client.publish_device_lists(&fp, newer).await
}

/// The keys of `list`'s generation `me` holds: a listed device's from its
/// box, the person's key file's from the recovery box.
fn keys_for(
    list: &DeviceList,
    me: &SecretIdentity,
    person: &Fingerprint,
) -> vault_core::Result<vault_core::devices::GenerationKeys> {
    if me.fingerprint() == *person {
        list.open_recovery(me)
    } else if list.device(&me.fingerprint()).is_some() {
        list.open(me)
    } else {
        Err(vault_core::Error::AccessDenied(
            "this device is not in the person's current device list: another device removed it",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{identity, NOW};
    use vault_core::devices::GenerationKeys;
    use vault_core::Role;

    /// Dr Dee's device lists as these tests use them: `v1` (her key file's)
    /// lists her laptop and phone; in `v2` the phone removed the laptop
    /// (`phone_keys` are v2's); `fork` is the laptop's own next version of
    /// `v1`, removing the phone instead.
    struct DeeLists {
        dee: SecretIdentity,
        laptop: SecretIdentity,
        v1: DeviceList,
        v2: DeviceList,
        phone: SecretIdentity,
        phone_keys: GenerationKeys,
        fork: DeviceList,
    }

    fn dee_lists() -> DeeLists {
        let dee = identity(40, "Dr Dee", Role::Clinician);
        let laptop = identity(42, "laptop", Role::Device);
        let phone = identity(43, "phone", Role::Device);
        let (v1, _) = DeviceList::first(
            &dee,
            &[laptop.public().clone(), phone.public().clone()],
            NOW,
        )
        .unwrap();
        let (v2, phone_keys) = v1
            .next(
                &phone,
                &v1.open(&phone).unwrap(),
                &[],
                &[laptop.fingerprint()],
                NOW,
            )
            .unwrap();
        let (fork, _) = v1
            .next(
                &laptop,
                &v1.open(&laptop).unwrap(),
                &[],
                &[phone.fingerprint()],
                NOW,
            )
            .unwrap();
        DeeLists {
            dee,
            laptop,
            v1,
            v2,
            phone,
            phone_keys,
            fork,
        }
    }

    /// Naming an agent who listed devices carries the agent's list into
    /// the collection first, so the agency's grant reaches each device;
    /// the agent, sharing in turn with a member who listed devices, may
    /// not carry that member's list (only the owner and the member do):
    /// the share goes through, to the member's key file.
    #[test]
    fn an_agents_list_is_carried_when_named_and_an_agents_share_needs_no_list() {
        let pat = identity(1, "Pat", Role::Patient);
        let jane = identity(5, "Jane", Role::Patient);
        let tablet = identity(45, "tablet", Role::Device);
        let DeeLists { dee, v1, v2, .. } = dee_lists();
        let (jane_v1, _) = DeviceList::first(&jane, &[tablet.public().clone()], NOW).unwrap();
        let (mut state, _) = VaultState::create(&pat, NOW).unwrap();
        let (labs, e) = state.create_collection(&pat, "labs", NOW).unwrap();
        state.apply(&e).unwrap();
        let share = vault_core::Powers::new(false, true, false);
        let named = crate::agents::plan_naming(
            &state,
            &pat,
            crate::agents::Named {
                collections: &[labs],
                agent: jane.public(),
                devices: std::slice::from_ref(&jane_v1),
            },
            share,
            None,
            vault_core::DelegationId::random(),
            NOW,
        )
        .unwrap();
        assert!(matches!(
            named.entries[0].body(),
            vault_core::EntryBody::MemberDevicesListed { .. }
        ));
        for e in &named.entries {
            state.apply(e).unwrap();
        }
        assert_eq!(
            state.member_device_list(&labs, &jane.fingerprint()),
            Some(&jane_v1)
        );
        assert!(state.collections_to_rekey().is_empty());
        assert_eq!(
            state.person_in(&tablet.fingerprint(), Some(&labs)),
            jane.fingerprint()
        );
        // `by` shares labs with Dr Dee, the directory serving `served`.
        let share_with_dee = |state: &VaultState, by: &SecretIdentity, served: &[DeviceList]| {
            crate::sharing::plan_share(
                state,
                by,
                crate::sharing::ShareTarget::Collection(labs, Permission::Read),
                dee.public(),
                served,
                None,
                NOW,
            )
        };
        // Jane's tablet shares labs with Dr Dee, who listed devices: no
        // listing entry, and the grant goes to Dee's key file.
        for by in [&jane, &tablet] {
            let plan = share_with_dee(&state, by, std::slice::from_ref(&v1)).unwrap();
            assert_eq!(plan.entries.len(), 1);
            let vault_core::EntryBody::GrantAdded { grant, .. } = plan.entries[0].body() else {
                panic!("not a grant")
            };
            assert_eq!(grant.generation(), 0);
            let mut next = state.clone();
            next.apply(&plan.entries[0]).unwrap();
        }
        // Once labs carries Dee's v1 (the owner listed it), Jane may share
        // on v1 as the directory serves it, and never past a newer
        // version she cannot carry: the grant would reach the laptop the
        // phone removed in v2.
        let listed = state
            .list_member_devices(&pat, &labs, dee.public(), std::slice::from_ref(&v1), NOW)
            .unwrap();
        let mut carrying = state.clone();
        carrying.apply(&listed).unwrap();
        let plan = share_with_dee(&carrying, &tablet, std::slice::from_ref(&v1)).unwrap();
        let vault_core::EntryBody::GrantAdded { grant, .. } = plan.entries[0].body() else {
            panic!("not a grant")
        };
        assert_eq!(grant.generation(), v1.generation());
        let refused = share_with_dee(&carrying, &tablet, &[v1.clone(), v2.clone()]).unwrap_err();
        assert!(
            matches!(refused, vault_core::Error::AccessDenied(_)),
            "{refused:?}"
        );
        // The owner's share carries Dee's list first.
        let plan = share_with_dee(&state, &pat, std::slice::from_ref(&v1)).unwrap();
        assert!(matches!(
            plan.entries[0].body(),
            vault_core::EntryBody::MemberDevicesListed { .. }
        ));
    }

    /// What a hostile directory may serve instead of the person's list:
    /// a chain not starting with the root's version, another person's
    /// list, a version whose bytes changed, versions out of order. Each is
    /// refused before any grant is sealed to it.
    #[test]
    fn a_served_list_is_verified_from_the_roots_version() {
        let DeeLists {
            dee,
            laptop,
            v1,
            v2,
            ..
        } = dee_lists();
        let mallory = identity(41, "Mallory", Role::Clinician);
        verify_served(dee.public(), &[v1.clone(), v2.clone()]).unwrap();
        verify_served(dee.public(), &[]).unwrap();
        // The device's version alone: a reader holding none takes only the
        // root's.
        assert!(verify_served(dee.public(), std::slice::from_ref(&v2)).is_err());
        assert!(verify_served(dee.public(), &[v2.clone(), v1.clone()]).is_err());
        // Mallory's list served as Dee's.
        let (theirs, _) = DeviceList::first(&mallory, &[laptop.public().clone()], NOW).unwrap();
        assert!(verify_served(dee.public(), &[theirs]).is_err());
        // A version whose bytes a relay changed no longer parses or verifies.
        let mut bytes = v1.to_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        // Refused either as it parses or as it is verified.
        assert!(
            DeviceList::from_bytes(&bytes).map_or(true, |tampered| verify_served(
                dee.public(),
                &[tampered]
            )
            .is_err())
        );
    }

    /// A collection carrying a version of the person's list on another
    /// chain (the laptop's fork) refuses the next versions of this chain:
    /// the plan names it, with why, instead of leaving it out silently; a
    /// collection on this chain takes them.
    #[test]
    fn a_collection_on_another_chain_is_named_not_skipped() {
        let pat = identity(1, "Pat", Role::Patient);
        let tablet = identity(44, "tablet", Role::Device);
        let DeeLists {
            dee,
            v1,
            v2,
            phone,
            phone_keys,
            fork,
            ..
        } = dee_lists();
        let (v3, _) = v2
            .next(&phone, &phone_keys, &[tablet.public().clone()], &[], NOW)
            .unwrap();
        let (mut state, _) = VaultState::create(&pat, NOW).unwrap();
        let mut ids = Vec::new();
        for (name, carried) in [("labs", [&v1, &v2]), ("notes", [&v1, &fork])] {
            let (c, e) = state.create_collection(&pat, name, NOW).unwrap();
            state.apply(&e).unwrap();
            let versions: Vec<DeviceList> = carried.into_iter().cloned().collect();
            let e = state
                .list_member_devices(&pat, &c, dee.public(), &versions, NOW)
                .unwrap();
            state.apply(&e).unwrap();
            let e = state
                .share_collection(
                    &mut vault_core::Keyring::new(&pat, NOW),
                    &c,
                    dee.public(),
                    Permission::Read,
                    None,
                )
                .unwrap();
            state.apply(&e).unwrap();
            ids.push(c);
        }
        let (entries, carried) = plan_carrying(&state, &dee, dee.public(), &[v1, v2, v3], NOW);
        assert_eq!(entries.len(), 1);
        assert_eq!(carried.into, vec![ids[0]]);
        assert_eq!(carried.refused.len(), 1, "{:?}", carried.refused);
        assert_eq!(carried.refused[0].0, ids[1]);
        assert!(!carried.refused[0].1.is_empty());
        for e in entries {
            state.apply(&e).unwrap();
        }
        assert_eq!(
            state
                .member_device_list(&ids[0], &dee.fingerprint())
                .map(DeviceList::serial),
            Some(3)
        );
        assert_eq!(
            state
                .member_device_list(&ids[1], &dee.fingerprint())
                .map(DeviceList::serial),
            Some(2)
        );
    }

    /// A directory serving an older version than a vault carries (a
    /// rollback to a version a removed device holds the keys of), or
    /// another version under a serial it carries (a fork), is refused
    /// before a share builds on it.
    #[test]
    fn a_directory_behind_the_vault_is_refused() {
        let pat = identity(1, "Pat", Role::Patient);
        let DeeLists {
            dee, v1, v2, fork, ..
        } = dee_lists();
        let (mut state, _) = VaultState::create(&pat, NOW).unwrap();
        let (labs, e) = state.create_collection(&pat, "labs", NOW).unwrap();
        state.apply(&e).unwrap();
        let e = state
            .list_member_devices(&pat, &labs, dee.public(), &[v1.clone(), v2.clone()], NOW)
            .unwrap();
        state.apply(&e).unwrap();
        let fp = dee.fingerprint();
        check_not_behind(&state, &fp, &[v1.clone(), v2.clone()]).unwrap();
        assert!(check_not_behind(&state, &fp, std::slice::from_ref(&v1)).is_err());
        assert!(check_not_behind(&state, &fp, &[v1.clone(), fork]).is_err());
        // The share's plan refuses it too: no grant to the old generation.
        assert!(plan_listing(
            &state,
            &pat,
            &labs,
            dee.public(),
            Permission::Read,
            std::slice::from_ref(&v1),
            NOW
        )
        .is_err());
    }
}
