//! Vaults, sharing and revocation, export and checkpoints in the browser.

use std::io::Write;

use serde_json::{json, Value};
use vault_client::sharing::ShareTarget;
use vault_client::sync;
use vault_core::devices::ListedDevice;
use vault_core::export::ExportSink;
use vault_core::store::Store;
use vault_core::{Fingerprint, Permission, PublicIdentity, VaultId, VaultState};

use crate::failure::{Failure, Result};
use crate::unlocked::{collection_id, record_id, Inner};
use crate::view;

/// This identity's vaults. Its own vaults listed by the relay's inbox are
/// joined (verified from genesis, owner checked against this identity),
/// and for a device, the vaults of `person`, the identity the user pinned
/// as the one this device acts for, once that person lists the device;
/// vaults shared by others are left to the command line, where contacts
/// are pinned. The inbox is read page by page and a flooded one is cut
/// rather than failing; the person is accepted on the relay when the
/// relay lists their vaults as a stranger's or holds strangers back
/// (`vault_client::inbox::listing_trusting`).
pub async fn vaults(s: &mut Inner, person: Option<&Fingerprint>) -> Result<Value> {
    s.publish().await?;
    let me = s.secret.fingerprint();
    // The pinned person's vaults are never a stranger's to this device:
    // it accepts the person when the relay caps them, so a flood of
    // shares to this device's public document cannot hide them.
    let trusted: Vec<Fingerprint> = person.into_iter().copied().collect();
    // Accepting the person is best effort: if it failed, the person's
    // vaults the relay listed are still joined below.
    let read = vault_client::inbox::listing_trusting(&s.client, &trusted).await?;
    for v in read.listing.vaults {
        if !v.is_owner || s.store.head(&v.vault)?.is_some() {
            continue;
        }
        // A vault this identity owns, or, for a device, one owned by the
        // person the user pinned on this device: never a vault whose owner
        // merely lists this device (anyone can list a published device in
        // a vault of their own, to have it write there).
        if v.owner == me || Some(&v.owner) == person {
            sync::join_vault(&mut s.store, &s.client, &v.vault, &v.owner).await?;
        }
    }
    let mut out = Vec::new();
    for v in s.store.vaults()? {
        let state = vault_core::store::load_vault(&s.store, &v)?;
        out.push(json!({
            "id": v.to_hex(),
            "owner": view::identity(state.owner()),
            "mine": state.is_owner(&me),
        }));
    }
    Ok(Value::Array(out))
}

/// Creates a vault owned by this identity.
pub async fn create_vault(s: &mut Inner) -> Result<VaultId> {
    s.publish().await?;
    let state = sync::new_vault(&mut s.store, &s.client, &s.secret).await?;
    Ok(state.vault())
}

fn member(
    state: &VaultState,
    fp: &Fingerprint,
    permission: &str,
    expires_at: Option<u64>,
    powers: Option<vault_core::Powers>,
) -> Value {
    let known = state.identity(fp);
    json!({
        "fingerprint": fp.to_string(),
        "fingerprintHex": fp.to_hex(),
        "name": known.map(|i| vault_fhir::clean(i.display_name())),
        "role": known.map(|i| i.role().as_str()),
        "permission": permission,
        "expiresAt": expires_at,
        "powers": powers.map(|p| p.to_string()),
    })
}

/// The vault, pulled and verified: checkpoint, collections with their
/// members, and single-record shares; and `rekeyed` ([`view::rekeying`], or
/// `null`) when the owner's collections were re-keyed on the way, after a
/// member's (or the owner's) device list changed.
pub async fn overview(s: &mut Inner, vault: &VaultId) -> Result<Value> {
    s.publish().await?;
    let pulled = sync::pull(&mut s.store, &s.client, vault).await?;
    // The owner's duty after a member removed a device (decision 70), done
    // on its own as `vault sync` does. A relay's refusal is reported and
    // the vault shown as this device now holds it (rounds before the
    // refusal stay appended); anything else (unreachable, a rollback or a
    // fork seen on the way) fails the overview as a pull would.
    let (state, rekeyed) =
        match vault_client::devices::rekey_if_due(&mut s.store, &s.client, &pulled).await {
            Ok(None) => (pulled, Value::Null),
            Ok(Some((state, done))) => {
                let shown = view::rekeying(&done, None);
                (state, shown)
            }
            Err(e @ vault_client::ClientError::Relay { .. }) => {
                let why = e.to_string();
                let state = vault_core::store::load_vault(&s.store, vault)?;
                let shown = view::rekeying(&vault_client::devices::Rekeying::default(), Some(&why));
                (state, shown)
            }
            Err(e) => return Err(e.into()),
        };
    let secret = s.secret.clone();
    let now = s.client.now();
    let names = vault_client::reading::names_by_id(&state, &secret, now);
    let owner = state.owner().fingerprint();
    // Collections whose current key an agent's rotation withheld from the
    // owner (decision 65): the page names the agent to end.
    let withheld: Vec<Value> = vault_client::agents::withheld_keys(&state, &secret, now)
        .into_iter()
        .map(|(c, signer)| {
            json!({
                "collection": c.to_hex(),
                "signer": member(&state, &signer, "agent", None, None),
            })
        })
        .collect();
    let collections: Vec<Value> = state
        .collections()
        .into_iter()
        .filter_map(|c| {
            let name = names.get(&c.id)?.clone();
            let members: Vec<Value> = c
                .members
                .iter()
                .map(|(fp, p, exp)| {
                    let agent = state.agency_of(fp, &c.id, now).map(|(_, p)| p);
                    let permission = if *fp == owner {
                        "owner"
                    } else if agent.is_some() {
                        "agent"
                    } else if *p == Permission::ReadWrite {
                        "write"
                    } else if *p == Permission::Add {
                        "add"
                    } else if *p == Permission::Deposit {
                        "deposit"
                    } else {
                        "read"
                    };
                    member(&state, fp, permission, *exp, agent)
                })
                .collect();
            Some(json!({
                "id": c.id.to_hex(),
                "name": name,
                "epoch": c.epoch,
                "records": c.records,
                "members": members,
            }))
        })
        .collect();
    let shares: Vec<Value> = state
        .record_grants()
        .into_iter()
        .map(|(record, fp, exp)| {
            json!({
                "record": record.to_hex(),
                "title": null,
                "who": member(&state, &fp, "read", exp, None),
            })
        })
        .collect();
    let me = secret.fingerprint();
    let device = |d: &ListedDevice| {
        let fp = d.document().fingerprint();
        json!({
            "fingerprintHex": fp.to_hex(),
            "fingerprint": fp.to_string(),
            "name": d.document().display_name(),
            "addedAt": d.added_at(),
            "thisDevice": fp == me,
        })
    };
    let current = state.owner_device_list();
    let devices: Vec<Value> = current
        .map(|list| list.devices().iter().map(device).collect())
        .unwrap_or_default();
    // Devices an earlier version listed and the current one does not: the
    // key file may keep them when it takes the list back.
    let former: Vec<Value> = state
        .ever_listed_devices()
        .filter(|d| current.is_none_or(|l| l.device(&d.document().fingerprint()).is_none()))
        .map(device)
        .collect();
    Ok(json!({
        "id": vault.to_hex(),
        "owner": view::identity(state.owner()),
        "checkpoint": state.head().code(),
        "seq": state.head().seq,
        "collections": collections,
        "recordShares": shares,
        "withheldKeys": withheld,
        "devices": devices,
        "formerDevices": former,
        "keyFileIsMe": state.owner().fingerprint() == me,
        "rekeyed": rekeyed,
    }))
}

/// Adds the device whose identity the relay publishes under `device`
/// (its whole fingerprint, read off its screen) to the owner's devices
/// ([`vault_client::devices::add_by_fingerprint`]). JSON `{name, serial,
/// generation, rekeyed, notRekeyed, elsewhere}` (`elsewhere`:
/// [`view::propagation`]).
pub async fn add_device(s: &mut Inner, vault: &VaultId, device: &Fingerprint) -> Result<Value> {
    s.publish().await?;
    let (_, added) =
        vault_client::devices::add_by_fingerprint(&mut s.store, &s.client, vault, device).await?;
    Ok(json!({
        "name": added.device.display_name(),
        "serial": added.list.serial(),
        "generation": added.list.generation(),
        "rekeyed": added.rekeying.rotated.len(),
        "notRekeyed": added.rekeying.not_rotated.len(),
        "elsewhere": view::propagation(&added.elsewhere),
    }))
}

/// Removes one of the owner's devices: the list's next version without it,
/// then a rotation of every collection ([`vault_client::devices::remove`]).
/// JSON `{rotated, notRotated, dropped, elsewhere, sharedByIt}`
/// (`elsewhere`: [`view::propagation`]; `sharedByIt`: the members whose
/// grant it signed, who keep their access).
pub async fn remove_device(s: &mut Inner, vault: &VaultId, device: &Fingerprint) -> Result<Value> {
    s.publish().await?;
    let (state, removal) =
        vault_client::devices::remove(&mut s.store, &s.client, vault, device).await?;
    Ok(json!({
        "rotated": removal.rekeying.rotated.len(),
        "notRotated": removal.rekeying.not_rotated.len(),
        "dropped": removal.rekeying.dropped.len(),
        "elsewhere": view::propagation(&removal.elsewhere),
        "sharedByIt": removal
            .granted_by_it
            .iter()
            .map(|(_, m)| member(&state, m, "read", None, None))
            .collect::<Vec<_>>(),
    }))
}

/// Takes the owner's device list back with the key file this session
/// holds, keeping the devices `keep` ([`vault_client::devices::recover`]).
/// JSON `{kept, removed, alreadyRecovered, rotated, notRotated, dropped,
/// elsewhere, sharedByRemoved}` (`removed`: names; `elsewhere`:
/// [`view::propagation`]; `sharedByRemoved`: the members whose grant a
/// removed device signed, who keep their access).
pub async fn recover_devices(
    s: &mut Inner,
    vault: &VaultId,
    keep: &[Fingerprint],
) -> Result<Value> {
    s.publish().await?;
    let (state, recovery) =
        vault_client::devices::recover(&mut s.store, &s.client, vault, keep).await?;
    Ok(json!({
        "kept": state
            .owner_device_list()
            .map(|l| l.devices().iter().map(|d| d.document().display_name().to_owned()).collect::<Vec<_>>())
            .unwrap_or_default(),
        "removed": recovery.removed.iter().map(|d| d.display_name().to_owned()).collect::<Vec<_>>(),
        "alreadyRecovered": recovery.list.is_none(),
        "rotated": recovery.rekeying.rotated.len(),
        "notRotated": recovery.rekeying.not_rotated.len(),
        "dropped": recovery.rekeying.dropped.len(),
        "elsewhere": view::propagation(&recovery.elsewhere),
        "sharedByRemoved": recovery
            .granted_by_removed
            .iter()
            .map(|(_, m)| member(&state, m, "read", None, None))
            .collect::<Vec<_>>(),
    }))
}

/// Names the identity in `identity_text` an agent of the owner in
/// `collection` (a collection id) with `powers` (comma-separated: `add`,
/// `share`, `name-agents`; read is implied), until `expires_at` (Unix
/// seconds) if given ([`vault_client::agents::name`]). JSON
/// `{delegation, rotatedFirst}`.
pub async fn name_agent(
    s: &mut Inner,
    vault: &VaultId,
    collection: &str,
    identity_text: &str,
    powers: &str,
    expires_at: Option<f64>,
) -> Result<Value> {
    let agent = PublicIdentity::from_text(identity_text.trim())?;
    let powers = vault_core::Powers::parse(powers)?;
    let expires_at = future_time(expires_at, s.client.now())?;
    let collection = collection_id(collection)?;
    s.publish().await?;
    let (_, naming) = vault_client::agents::name(
        &mut s.store,
        &s.client,
        vault,
        &[collection],
        &agent,
        powers,
        expires_at,
    )
    .await?;
    Ok(json!({
        "delegation": naming.delegation.to_hex(),
        "rotatedFirst": !naming.rotated_first.is_empty(),
    }))
}

/// Ends every agency of `agent` in the vault and rotates the collections
/// it acted in, and those whose key it withheld from the owner
/// ([`vault_client::agents::end`]). JSON `{ended, rotated, notRotated}`.
pub async fn end_agency(s: &mut Inner, vault: &VaultId, agent: &Fingerprint) -> Result<Value> {
    s.publish().await?;
    let (_, ending) =
        vault_client::agents::end(&mut s.store, &s.client, vault, agent, None).await?;
    if ending.is_empty() {
        return Err(Failure::new(
            "not_found",
            "this person is not an agent in this vault",
        ));
    }
    Ok(json!({
        "ended": ending.ended.len(),
        "rotated": ending.rotated.len(),
        "notRotated": ending.not_rotated.iter().map(|(c, e)| json!({
            "collection": c.to_hex(),
            "message": e.to_string(),
        })).collect::<Vec<_>>(),
    }))
}

/// An expiry the page gave (Unix seconds), checked to be in the future.
fn future_time(t: Option<f64>, now: u64) -> Result<Option<u64>> {
    match t {
        None => Ok(None),
        Some(t) if t.is_finite() && t > now as f64 && t < 1e12 => Ok(Some(t as u64)),
        Some(_) => Err(Failure::input("the expiry must be a date in the future")),
    }
}

/// A share the page asks for.
pub struct Share<'a> {
    /// A collection id, or a record id with `is_record`.
    pub target: &'a str,
    /// Whether `target` is a record.
    pub is_record: bool,
    /// The member's identity, as they gave it (`vault-identity:v1:…`).
    pub identity_text: &'a str,
    /// `"read"`, `"write"` (add, replace and delete any record) or `"add"`
    /// (add records and new versions of their own); collections only for
    /// the last two.
    pub permission: &'a str,
    /// Unix seconds.
    pub expires_at: Option<f64>,
}

/// Grants a collection or a record to a member.
pub async fn share(s: &mut Inner, vault: &VaultId, share: Share<'_>) -> Result<Value> {
    let member = PublicIdentity::from_text(share.identity_text.trim())?;
    let expires_at = future_time(share.expires_at, s.client.now())?;
    let permission = match share.permission {
        "read" => Permission::Read,
        "write" => Permission::ReadWrite,
        "add" => Permission::Add,
        "deposit" => Permission::Deposit,
        _ => {
            return Err(Failure::input(
                "the permission must be \"read\", \"write\", \"add\" or \"deposit\"",
            ))
        }
    };
    if share.is_record && permission != Permission::Read {
        return Err(Failure::input(
            "a single record is shared read-only; share its collection to let someone write",
        ));
    }
    s.publish().await?;
    let target = if share.is_record {
        ShareTarget::Record(record_id(share.target)?)
    } else {
        ShareTarget::Collection(collection_id(share.target)?, permission)
    };
    let (_, rotated_first) =
        vault_client::sharing::share(&mut s.store, &s.client, vault, target, &member, expires_at)
            .await?;
    Ok(json!({ "rotatedFirst": rotated_first }))
}

/// Revokes `member` from every collection they hold (or only `only`),
/// rotating each collection's key, and withdraws their record shares.
pub async fn revoke(
    s: &mut Inner,
    vault: &VaultId,
    member: &Fingerprint,
    only: Option<&vault_core::CollectionId>,
) -> Result<Value> {
    s.publish().await?;
    let (state, plan) =
        vault_client::sharing::revoke(&mut s.store, &s.client, vault, member, only).await?;
    if plan.is_empty() {
        return Err(Failure::new(
            "not_found",
            "this person has no access to revoke here",
        ));
    }
    let dropped: Vec<Value> = plan
        .rotated
        .iter()
        .flat_map(|r| {
            r.dropped.iter().map(|d| {
                json!({
                    "record": d.record.to_hex(),
                    "collection": r.collection.to_hex(),
                    "author": d.author.to_hex(),
                    "authorName": state.identity(&d.author).map(|i| i.display_name().to_owned()),
                })
            })
        })
        .collect();
    Ok(json!({
        "rotated": plan.rotated.len(),
        "recordSharesWithdrawn": plan.record_grants,
        "dropped": dropped,
    }))
}

/// Export files collected in memory, then written as one tar archive.
#[derive(Default)]
struct TarSink {
    files: Vec<(String, Vec<u8>)>,
}

impl ExportSink for TarSink {
    fn create(&mut self, path: &str) -> vault_core::Result<Box<dyn Write + '_>> {
        self.files.push((path.to_owned(), Vec::new()));
        match self.files.last_mut() {
            Some((_, bytes)) => Ok(Box::new(bytes)),
            None => Err(vault_core::Error::InvalidInput("export sink")),
        }
    }
}

impl TarSink {
    fn into_tar(self, mtime: u64) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, bytes) in &self.files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(mtime);
            header.set_cksum();
            tar.append_data(
                &mut header,
                format!("vault-export/{path}"),
                bytes.as_slice(),
            )?;
        }
        Ok(tar.into_inner()?)
    }
}

/// Pushes back to a relay restored from an older backup (or failed over
/// to a replica that lagged) the entries this device verified and the
/// record ciphertexts it holds ([`sync::repair`], decision 53), with the
/// patient's consent given on the page. The relay verifies them as any
/// append; a relay whose history differs is refused (`fork`) and nothing is
/// sent. JSON: `before` and `after` (the relay's entry numbers), `entries`,
/// `blobs`, and `stopped` (why it stopped short, or null): this browser
/// keeps only the ciphertexts up to 4 MiB it added or opened since it was
/// unlocked (larger ones go through the worker and are not kept, decision
/// 56), so a device that holds more (the command line keeps every record it
/// synced) may have to continue.
pub async fn repair(s: &mut Inner, vault: &VaultId) -> Result<Value> {
    let r = sync::repair(&mut s.store, &s.client, vault).await?;
    Ok(json!({
        "before": r.before.seq,
        "after": r.after.seq,
        "entries": r.entries,
        "blobs": r.blobs,
        "stopped": r.stopped,
    }))
}

/// Exports the vault (owner only) as a tar archive: standard age files for
/// the owner's key, the FHIR bundle and manifest, the passphrase-sealed key
/// file and the README.
pub async fn export(s: &mut Inner, vault: &VaultId) -> Result<Vec<u8>> {
    s.publish().await?;
    let state = sync::pull(&mut s.store, &s.client, vault).await?;
    if state.owner().fingerprint() != s.secret.fingerprint() {
        return Err(Failure::new(
            "access_denied",
            "only the vault's owner can export it",
        ));
    }
    let ids: Vec<_> = state.records(None).iter().map(|r| r.id).collect();
    crate::records::ensure_blobs(s, &state, &ids).await?;
    let mut sink = TarSink::default();
    let summary = vault_client::reading::export(
        &s.store,
        &state,
        &s.secret,
        s.client.now(),
        &s.key_file,
        &mut sink,
    )?;
    if !summary.unreadable.is_empty() {
        // Ids and fingerprints only: the archive's listing is not
        // encrypted. The manifest names the collections.
        let mut text = String::from(
            "These records could not be opened and are not in this export (nobody can read them):\n",
        );
        for u in &summary.unreadable {
            text.push_str(&format!(
                "record {} written by {} ({})\n",
                u.record.to_hex(),
                u.author.to_hex(),
                u.code
            ));
        }
        sink.files
            .push(("UNREADABLE.txt".to_owned(), text.into_bytes()));
    }
    sink.into_tar(s.client.now())
}
