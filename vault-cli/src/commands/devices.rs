//! `vault devices list`, `vault devices add` and `vault devices remove`:
//! the CLI's presentation of [`vault_client::devices`] (the owner's
//! devices, `docs/format.md` §8.11) and, for a person who owns no vault,
//! of [`vault_client::member_devices`] (a member's devices, §8.12: the
//! list lives in the relay's directory and in the collections shared with
//! the person).

use serde_json::json;
use vault_core::Fingerprint;

use crate::cli::{DeviceArgs, DevicesCommand, RecoverArgs};
use crate::error::{CliError, Result};
use crate::output::{clean, line, table};
use crate::session::{Acting, Session};

/// Runs one `vault devices` subcommand.
pub fn run(session: &mut Session, cmd: DevicesCommand) -> Result<()> {
    match cmd {
        DevicesCommand::List => list(session),
        DevicesCommand::Pair => super::pairing::pair(session),
        DevicesCommand::Join(args) => super::pairing::join(session, &args),
        DevicesCommand::Add(args) => add(session, &args),
        DevicesCommand::Remove(args) => remove(session, &args),
        DevicesCommand::Recover(args) => recover(session, &args),
        DevicesCommand::Confirm(args) => confirm_command(session, &args.contact),
    }
}

/// The person whose device list `vault devices` changes in the relay's
/// directory, when this profile owns no vault (a member): the key file's
/// own identity, or, for a device, the member whose list in a vault this
/// profile follows names it. `None` for a vault owner (its list lives in
/// its vault's log) and for a device nobody lists.
pub(super) fn member_person(
    session: &mut Session,
    secret: &vault_core::SecretIdentity,
) -> Result<Option<vault_core::PublicIdentity>> {
    let me = secret.fingerprint();
    let known = session.known_vaults()?;
    if known.iter().any(|(_, owner)| owner.fingerprint() == me) {
        return Ok(None);
    }
    if secret.public().role() != vault_core::Role::Device {
        return Ok(Some(secret.public().clone()));
    }
    // A device of the owner's anywhere acts on its owner's list, whatever
    // order the vaults come in.
    let states = known
        .iter()
        .map(|(vault, _)| session.local(vault))
        .collect::<Result<Vec<_>>>()?;
    if states.iter().any(|s| s.is_owner(&me)) {
        return Ok(None);
    }
    Ok(states.iter().find_map(|state| {
        state
            .member_device_collections(&me)
            .first()
            .and_then(|(_, p)| state.identity(p).cloned())
    }))
}

/// `vault devices list` for a member: the list the relay's directory
/// holds, verified.
fn list_member(
    session: &mut Session,
    secret: &vault_core::SecretIdentity,
    person: &vault_core::PublicIdentity,
) -> Result<()> {
    let client = session.client()?;
    let versions = session
        .rt
        .block_on(vault_client::member_devices::fetch(&client, person))?;
    let me = secret.fingerprint();
    let Some(current) = versions.last() else {
        if session.out.json {
            return session
                .out
                .json(&json!({"serial": null, "generation": null, "devices": []}));
        }
        return line("You have listed no devices: only your key file reads what is shared with you. Add one with `vault devices add FINGERPRINT`.");
    };
    devices_table(session, current, &me)
}

/// `vault devices list`.
fn list(session: &mut Session) -> Result<()> {
    let secret = session.unlock()?;
    if let Some(person) = member_person(session, &secret)? {
        return list_member(session, &secret, &person);
    }
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    let me = secret.fingerprint();
    let Some(current) = state.owner_device_list() else {
        if session.out.json {
            return session
                .out
                .json(&json!({"serial": null, "generation": null, "devices": []}));
        }
        return line(if state.is_owner(&me) {
            "You have listed no devices: only your key file writes as you. Add one with `vault devices add FINGERPRINT`."
        } else {
            "The owner of this vault has listed no devices."
        });
    };
    devices_table(session, current, &me)
}

/// Prints a device list (or its JSON).
fn devices_table(
    session: &mut Session,
    current: &vault_core::devices::DeviceList,
    me: &Fingerprint,
) -> Result<()> {
    let me = *me;
    if session.out.json {
        let rows: Vec<_> = current
            .devices()
            .iter()
            .map(|d| {
                json!({
                    "fingerprint": d.document().fingerprint().to_hex(),
                    "name": d.document().display_name(),
                    "added_at": d.added_at(),
                    "this_device": d.document().fingerprint() == me,
                })
            })
            .collect();
        return session.out.json(&json!({
            "serial": current.serial(),
            "generation": current.generation(),
            "devices": rows,
        }));
    }
    let rows: Vec<Vec<String>> = current
        .devices()
        .iter()
        .map(|d| {
            let fp = d.document().fingerprint();
            vec![
                clean(d.document().display_name()),
                fp.to_hex(),
                super::date(i64::try_from(d.added_at()).unwrap_or(i64::MAX)),
                if fp == me {
                    "this device".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    table(&["DEVICE", "FINGERPRINT", "ADDED", ""], &rows)?;
    line(&format!(
        "List version {}, key generation {}.",
        current.serial(),
        current.generation()
    ))
}

/// A fingerprint as typed: spaces dropped, lower case.
fn typed_hex(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The unlocked identity, the selected vault, its relay client and its
/// state pulled from the relay, if this profile is the vault's owner (its
/// key file or one of its devices); a usage error naming what only the
/// owner `does` otherwise.
pub(super) fn as_owner(
    session: &mut Session,
    does: &str,
) -> Result<(
    std::sync::Arc<vault_core::SecretIdentity>,
    vault_core::VaultId,
    vault_client::RelayClient,
    vault_core::VaultState,
)> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let client = session.client_for(&vault)?;
    let state = session.pull(&vault)?;
    if !state.is_owner(&secret.fingerprint()) {
        return Err(CliError::Usage(format!(
            "only the vault's owner (its key file, or one of its devices) {does} devices"
        )));
    }
    Ok((secret, vault, client, state))
}

/// The one device among `candidates` whose fingerprint starts with the
/// hex digits `typed` (at least 8); usage and not-found errors, the latter
/// starting `none`, otherwise.
fn pick<'a>(
    candidates: impl Iterator<Item = &'a vault_core::PublicIdentity>,
    typed: &str,
    none: &str,
) -> Result<Fingerprint> {
    let wanted = typed_hex(typed);
    if wanted.len() < 8 || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::Usage(
            "give at least 8 hex digits of the device's fingerprint, as `vault devices list` shows them".into(),
        ));
    }
    let matches: Vec<Fingerprint> = candidates
        .map(|d| d.fingerprint())
        .filter(|fp| fp.to_hex().starts_with(&wanted))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(CliError::NotFound(format!(
            "{none} {wanted}; see `vault devices list`"
        ))),
        _ => Err(CliError::Usage(
            "several devices match; give more of the fingerprint".into(),
        )),
    }
}

/// A member's device list changed in the relay's directory and carried
/// into the collections shared with the member: the report.
fn report_member_change(
    session: &mut Session,
    what: &str,
    fp: &Fingerprint,
    change: &vault_client::member_devices::MemberChange,
    claim: Option<&Claim>,
) -> Result<()> {
    let e = &change.elsewhere;
    let collections: usize = e.carried.iter().map(|(_, c)| c.len()).sum();
    if session.out.json {
        let mut doc = carried_json(e);
        doc.insert("device".into(), json!(fp.to_hex()));
        doc.insert(
            "name".into(),
            json!(change.device.as_ref().map(|d| d.display_name().to_owned())),
        );
        doc.insert("serial".into(), json!(change.list.serial()));
        doc.insert("generation".into(), json!(change.list.generation()));
        doc.insert("signed_new_version".into(), json!(change.published));
        if let Some(claim) = claim {
            doc.insert("claim".into(), claim.to_json());
        }
        return session.out.json(&serde_json::Value::Object(doc));
    }
    line(&format!(
        "{what} Your list (version {}, key generation {}) is published on the relay, and was carried into {collections} collection(s) of {} vault(s) shared with you.",
        change.list.serial(),
        change.list.generation(),
        e.carried.len()
    ))?;
    warn_not_carried(e);
    if let Some(claim) = claim {
        claim.report(fp)?;
    }
    Ok(())
}

/// Where a member's list went beyond the directory, as JSON: the vaults
/// and collections it was carried into, those not reached, and the
/// collections that refused it.
fn carried_json(
    e: &vault_client::member_devices::Propagation,
) -> serde_json::Map<String, serde_json::Value> {
    let mut doc = serde_json::Map::new();
    let carried = e.carried.iter().map(|(v, c)| {
        json!({
            "vault": v.to_hex(),
            "collections": c.iter().map(|c| c.to_hex()).collect::<Vec<_>>(),
        })
    });
    let not_carried = e
        .not_reached
        .iter()
        .map(|(v, why)| json!({"vault": v.to_hex(), "error": why}));
    doc.insert("carried".into(), carried.collect());
    doc.insert("not_carried".into(), not_carried.collect());
    doc.insert("inbox_not_read".into(), json!(e.inbox_not_read));
    doc.insert(
        "strangers_not_reached".into(),
        json!(e.strangers_not_reached),
    );
    doc.insert("refused".into(), refused_json(e));
    doc
}

/// What became of a paired device's claim on the person's list
/// (`docs/format.md` §3.8 step 6): the pairing stands whatever it is.
pub(super) enum Claim {
    /// The device signed the list, and the chain was carried where the
    /// list goes.
    Carried(vault_client::member_devices::Propagation),
    /// The device signed nothing within [`CLAIM_WAIT`].
    NotSigned,
    /// Waiting for it failed.
    Failed(String),
}

impl Claim {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Carried(e) => {
                let mut doc = carried_json(e);
                doc.insert("signed".into(), json!(true));
                serde_json::Value::Object(doc)
            }
            Self::NotSigned => json!({"signed": false}),
            Self::Failed(why) => json!({"signed": null, "error": why}),
        }
    }

    fn report(&self, device: &Fingerprint) -> Result<()> {
        let later = format!(
            "run `vault devices confirm` on it, then `vault devices add {}` here to carry it",
            device.to_hex()
        );
        match self {
            Self::Carried(e) => {
                let collections: usize = e.carried.iter().map(|(_, c)| c.len()).sum();
                line(&format!(
                    "The device signed your device list; carried into {collections} collection(s) of {} vault(s) shared with you.",
                    e.carried.len()
                ))?;
                warn_not_carried(e);
            }
            Self::NotSigned => eprintln!(
                "warning: the device did not sign your device list within {} seconds: where someone else listed it first it does not act for you; {later}.",
                CLAIM_WAIT.as_secs()
            ),
            Self::Failed(why) => eprintln!(
                "warning: waiting for the device to sign your device list failed ({why}): where someone else listed it first it does not act for you; {later}."
            ),
        }
        Ok(())
    }
}

/// Warns of the vaults a list was not carried into (run again to finish),
/// the collections that refused it (running again does not help), and the
/// vaults this client does not follow that it did not reach.
fn warn_not_carried(e: &vault_client::member_devices::Propagation) {
    for (vault, why) in &e.not_reached {
        eprintln!(
            "warning: vault {}: your list was not carried there: {why}; run the command again to finish",
            vault.to_hex()
        );
    }
    for (vault, collection, why) in &e.refused {
        eprintln!(
            "warning: vault {}, collection {}: your list was refused there: {why}",
            vault.to_hex(),
            crate::output::short(&collection.to_hex())
        );
    }
    warn_unfollowed_not_reached(e);
}

/// `vault devices confirm`: this device signs the list of the person
/// pinned as `contact`.
fn confirm_command(session: &mut Session, contact: &str) -> Result<()> {
    let secret = session.unlock()?;
    if secret.public().role() != vault_core::Role::Device {
        return Err(CliError::Usage(
            "only a device confirms its person's list: this profile is a key file, which signs as the person".into(),
        ));
    }
    if owners_device(session, &secret.fingerprint())? {
        return Err(CliError::Usage(
            "this device acts for a vault owner, whose device list takes precedence in the owner's vaults: there is nothing to confirm".into(),
        ));
    }
    let person = session.contacts.get(&session.store, contact)?.identity;
    let me = secret.fingerprint();
    // The confirmation reads for this person (it carries the list into
    // the vaults the person's inbox names); the config file records the
    // person only once it succeeded, so a failure changes nothing there.
    let own = match session.person()? {
        None => session.own_accepted(),
        Some(_) => Vec::new(),
    };
    session.act(Acting::For(person.fingerprint()));
    let change = match confirm(session, &person) {
        Ok(change) => change,
        Err(e) => {
            session.act(Acting::AsConfigured);
            return Err(e);
        }
    };
    session.set_person(Some(person.fingerprint()))?;
    session.carry_own_accepted(&own);
    let what = if change.published {
        format!(
            "This device signed {}'s device list (version {}): it acts for them wherever the list is carried, even where someone else listed it first. Into a collection where someone else listed this device first, this device cannot carry the list itself: `vault devices add {}` from the key file (or another device) carries it, as does the next share.",
            clean(person.display_name()),
            change.list.serial(),
            me.to_hex()
        )
    } else {
        format!(
            "This device had signed {}'s device list already (it is at version {}).",
            clean(person.display_name()),
            change.list.serial()
        )
    };
    report_member_change(session, &what, &me, &change, None)
}

/// Whether `me` is a device of the owner of a vault this profile follows.
/// A vault whose local copy does not load is passed over: the relay's
/// directory decides the rest.
fn owners_device(session: &mut Session, me: &Fingerprint) -> Result<bool> {
    for (vault, _) in session.known_vaults()? {
        if session.local(&vault).is_ok_and(|s| s.is_owner(me)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Signs `person`'s device list, unchanged, as this device (its claim,
/// `docs/format.md` §8.12 rule 4), publishes it and carries it where the
/// list goes; nothing new when the device signed a version already.
pub(super) fn confirm(
    session: &mut Session,
    person: &vault_core::PublicIdentity,
) -> Result<vault_client::member_devices::MemberChange> {
    let client = session.client()?;
    Ok(session.rt.block_on(vault_client::member_devices::change(
        &mut session.store,
        &client,
        person,
        vault_client::member_devices::Change::Confirm,
    ))?)
}

/// After pairing `device` for `person` (a member): waits for the device to
/// sign the list (its claim), then carries it into the vaults shared with
/// the person, which the new device does not follow yet.
fn wait_for_claim(
    session: &mut Session,
    person: &vault_core::PublicIdentity,
    device: &Fingerprint,
) -> Claim {
    if !session.out.json {
        eprintln!("Waiting for the device to sign your device list…");
    }
    let client = match session.client() {
        Ok(c) => c,
        Err(e) => return Claim::Failed(e.to_string()),
    };
    match session
        .rt
        .block_on(vault_client::member_devices::carry_claim(
            &mut session.store,
            &client,
            person,
            device,
            CLAIM_WAIT,
        )) {
        Ok(Some(e)) => Claim::Carried(e),
        Ok(None) => Claim::NotSigned,
        Err(e) => Claim::Failed(e.to_string()),
    }
}

/// How long [`wait_for_claim`] waits for the new device's signature.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `vault devices add` for a member ([`member_person`]).
fn add_member(
    session: &mut Session,
    person: &vault_core::PublicIdentity,
    fp: Fingerprint,
    paired: bool,
) -> Result<()> {
    let client = session.client()?;
    let change = session.rt.block_on(vault_client::member_devices::change(
        &mut session.store,
        &client,
        person,
        vault_client::member_devices::Change::Add(fp),
    ))?;
    let name = change
        .device
        .as_ref()
        .map(|d| clean(d.display_name()))
        .unwrap_or_default();
    // A paired device signs the list once listed (its claim): carry that
    // where the new device cannot yet, into the vaults shared with the
    // person.
    // Told at once as text (the wait may take a minute); one JSON
    // document, the claim in it, once the wait is over.
    let what = format!("Added {name} ({fp}) to your devices: it reads (and, where you may, writes) what is shared with you from now on.");
    if session.out.json {
        let claim = paired.then(|| wait_for_claim(session, person, &fp));
        return report_member_change(session, &what, &fp, &change, claim.as_ref());
    }
    report_member_change(session, &what, &fp, &change, None)?;
    line("What was shared with you before you listed devices opens on them once each owner's app re-keys it (their next `vault sync`, or their web app's next refresh).")?;
    if paired {
        wait_for_claim(session, person, &fp).report(&fp)?;
    }
    Ok(())
}

/// `vault devices add`.
fn add(session: &mut Session, args: &DeviceArgs) -> Result<()> {
    let typed = typed_hex(&args.device);
    let fp = Fingerprint::from_hex(&typed).map_err(|_| {
        CliError::Usage(
            "give the new device's whole fingerprint in hex (64 digits 0-9 and a-f), as `vault whoami --json` prints it on that device".into(),
        )
    })?;
    let to = ListOf::resolve(session)?;
    add_device(session, &to, fp, false)
}

/// The list a device is added to: that of the person this profile is or
/// acts for.
pub(super) enum ListOf {
    /// A member's (a person who owns no vault), in the relay's directory.
    Member(vault_core::PublicIdentity),
    /// The owner's, in the selected vault's log.
    Owner {
        /// The vault.
        vault: vault_core::VaultId,
        /// Its relay.
        client: vault_client::RelayClient,
        /// Its owner.
        owner: vault_core::PublicIdentity,
    },
}

impl ListOf {
    /// Whose list this profile adds to (the owner's is checked as
    /// [`owner_adding`] does).
    pub(super) fn resolve(session: &mut Session) -> Result<Self> {
        let secret = session.unlock()?;
        if let Some(person) = member_person(session, &secret)? {
            return Ok(Self::Member(person));
        }
        let (_, vault, client, state) = owner_adding(session)?;
        Ok(Self::Owner {
            vault,
            client,
            owner: state.owner().clone(),
        })
    }

    /// The person whose list it is.
    pub(super) fn person(&self) -> &vault_core::PublicIdentity {
        match self {
            Self::Member(person) | Self::Owner { owner: person, .. } => person,
        }
    }
}

/// Adds the device `fp` to the list `to`.
/// `paired`: the device was just paired, and signs a member's list once
/// listed ([`wait_for_claim`]).
pub(super) fn add_device(
    session: &mut Session,
    to: &ListOf,
    fp: Fingerprint,
    paired: bool,
) -> Result<()> {
    let (vault, client) = match to {
        ListOf::Member(person) => return add_member(session, person, fp, paired),
        ListOf::Owner { vault, client, .. } => (vault, client),
    };
    let (_, added) = session
        .rt
        .block_on(vault_client::devices::add_by_fingerprint(
            &mut session.store,
            client,
            vault,
            &fp,
        ))?;
    let name = clean(added.device.display_name());
    if session.out.json {
        return session.out.json(&json!({
            "device": fp.to_hex(),
            "name": added.device.display_name(),
            "serial": added.list.serial(),
            "generation": added.list.generation(),
            "rekeyed": added.rekeying.rotated.len(),
            "not_rekeyed": added.rekeying.not_rotated.len(),
            "elsewhere": elsewhere_json(&added.elsewhere),
        }));
    }
    line(&format!(
        "Added {name} ({fp}) to your devices: it now reads and writes this vault as you."
    ))?;
    if !added.rekeying.rotated.is_empty() {
        line(&format!(
            "{} collection key(s) were rotated so that your devices open them (they never hold your key file's own key).",
            added.rekeying.rotated.len()
        ))?;
    }
    report_not_rekeyed(&added.rekeying)?;
    report_elsewhere(&added.elsewhere)?;
    line("`vault devices remove` takes it away again.")
}

/// [`as_owner`] for adding a device: the first device is listed with the
/// owner's key file.
pub(super) fn owner_adding(
    session: &mut Session,
) -> Result<(
    std::sync::Arc<vault_core::SecretIdentity>,
    vault_core::VaultId,
    vault_client::RelayClient,
    vault_core::VaultState,
)> {
    let (secret, vault, client, state) = as_owner(session, "adds")?;
    if state.owner_device_list().is_none() && secret.fingerprint() != state.owner().fingerprint() {
        return Err(CliError::Usage(
            "the first device is listed with the owner's key file".into(),
        ));
    }
    Ok((secret, vault, client, state))
}

/// Warns of the vaults this device does not follow that a change did not
/// reach: the relay's inbox could not be read, or they are strangers'.
fn warn_unfollowed_not_reached(e: &vault_client::member_devices::Propagation) {
    if let Some(why) = &e.inbox_not_read {
        eprintln!("warning: the relay's inbox could not be read ({why}), so vaults shared with you that this device does not follow were not brought up to date (a removed device may still act there): run the command again to finish");
    }
    if e.strangers_not_reached > 0 {
        eprintln!("warning: {} vault(s) shared with you by people you have not accepted were not brought up to date (a removed device may still act there): `vault inbox` accepts your contacts, `vault inbox accept FINGERPRINT` anyone else; then run the command again", e.strangers_not_reached);
    }
}

/// Where the change went beyond this vault, as JSON.
fn elsewhere_json(e: &vault_client::member_devices::Propagation) -> serde_json::Value {
    json!({
        "published": e.not_published.is_none(),
        "not_published": e.not_published,
        "owned": e.owned.iter().map(|(v, n)| json!({"vault": v.to_hex(), "rekeyed": n})).collect::<Vec<_>>(),
        "carried": e.carried.iter().map(|(v, c)| json!({
            "vault": v.to_hex(),
            "collections": c.iter().map(|c| c.to_hex()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "not_reached": e.not_reached.iter().map(|(v, why)| json!({"vault": v.to_hex(), "error": why})).collect::<Vec<_>>(),
        "inbox_not_read": e.inbox_not_read,
        "strangers_not_reached": e.strangers_not_reached,
        "refused": refused_json(e),
    })
}

/// The collections that refused a list, as JSON.
fn refused_json(e: &vault_client::member_devices::Propagation) -> serde_json::Value {
    e.refused
        .iter()
        .map(|(v, c, why)| json!({"vault": v.to_hex(), "collection": c.to_hex(), "error": why}))
        .collect()
}

/// Where the change went beyond this vault: the relay's directory, your
/// other vaults, the vaults shared with you; and what it did not reach.
fn report_elsewhere(e: &vault_client::member_devices::Propagation) -> Result<()> {
    if !e.owned.is_empty() {
        line(&format!(
            "Your other vault(s) took the same list, re-keyed where a device was removed: {}.",
            e.owned
                .iter()
                .map(|(v, _)| crate::output::short(&v.to_hex()))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
    }
    if !e.carried.is_empty() {
        line(&format!(
            "Carried into {} vault(s) shared with you, so their owners' grants reach your devices.",
            e.carried.len()
        ))?;
    }
    if let Some(why) = &e.not_published {
        eprintln!("warning: the relay's directory did not take your list ({why}); people sharing with you next will grant your key file only: run the command again, or from your key file");
    }
    for (vault, why) in &e.not_reached {
        eprintln!(
            "warning: vault {}: your list was not brought up to date there: {why}; run the command again to finish",
            vault.to_hex()
        );
    }
    warn_unfollowed_not_reached(e);
    for (vault, collection, why) in &e.refused {
        eprintln!(
            "warning: vault {}, collection {}: your list was not carried there: {why}; it carries another list of yours (a fork): take your list back with `vault devices recover` from your key file, or ask the vault's owner to share the collection again",
            vault.to_hex(),
            collection.to_hex()
        );
    }
    Ok(())
}

/// After a removal's or a recovery's re-keying: the collections that
/// failed, the records `dropped_why` (counted), and the members `shared`
/// (named) whom `who` had shared with, who keep their access.
fn report_rekeying(
    rekeying: &vault_client::devices::Rekeying,
    dropped_why: &str,
    shared: &[String],
    who: &str,
) -> Result<()> {
    report_not_rekeyed(rekeying)?;
    if !rekeying.dropped.is_empty() {
        line(&format!(
            "{} record(s) {dropped_why}.",
            rekeying.dropped.len()
        ))?;
    }
    if !shared.is_empty() {
        line(&format!(
            "{who} shared with: {}. They keep their access; `vault revoke` whoever should go.",
            shared.join(", ")
        ))?;
    }
    Ok(())
}

/// Collections whose rotation failed: say so and how to finish.
fn report_not_rekeyed(rekeying: &vault_client::devices::Rekeying) -> Result<()> {
    if rekeying.not_rotated.is_empty() {
        return Ok(());
    }
    eprintln!(
        "warning: {} collection key(s) could not be rotated ({}); run the command again to finish",
        rekeying.not_rotated.len(),
        rekeying
            .not_rotated
            .iter()
            .map(|(_, e)| e.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(())
}

/// `vault devices remove` for a member ([`member_person`]).
fn remove_member(
    session: &mut Session,
    person: &vault_core::PublicIdentity,
    args: &DeviceArgs,
) -> Result<()> {
    let client = session.client()?;
    let versions = session
        .rt
        .block_on(vault_client::member_devices::fetch(&client, person))?;
    if versions.is_empty() {
        return Err(CliError::NotFound(
            "you have published no device list: there is no device to remove".into(),
        ));
    }
    // A device the published versions ever listed: one removed already
    // is named again to finish carrying its removal (nothing new is
    // published).
    let ever: std::collections::BTreeMap<Fingerprint, &vault_core::PublicIdentity> = versions
        .iter()
        .flat_map(|v| v.devices())
        .map(|d| (d.document().fingerprint(), d.document()))
        .collect();
    let lost = pick(
        ever.values().copied(),
        &args.device,
        "none of your devices has a fingerprint starting",
    )?;
    let name = ever
        .get(&lost)
        .map(|d| clean(d.display_name()))
        .unwrap_or_default();
    let listed_now = versions.last().is_some_and(|v| v.device(&lost).is_some());
    let change = session.rt.block_on(vault_client::member_devices::change(
        &mut session.store,
        &client,
        person,
        vault_client::member_devices::Change::Remove(lost),
    ))?;
    report_member_change(
        session,
        &if listed_now {
            format!("Removed {name} ({lost}) from your devices: the relay refuses it in the collections your list was carried into.")
        } else {
            format!("{name} ({lost}) was removed from your devices already: its removal was carried where it was missing.")
        },
        &lost,
        &change,
        None,
    )?;
    if !session.out.json {
        line("Each vault's owner re-keys at their next `vault sync` (or their web app's next refresh), so nothing shared with you afterwards opens with its keys; what it could read until now, treat as seen.")?;
    }
    Ok(())
}

/// `vault devices remove`.
fn remove(session: &mut Session, args: &DeviceArgs) -> Result<()> {
    let secret = session.unlock()?;
    if let Some(person) = member_person(session, &secret)? {
        return remove_member(session, &person, args);
    }
    let (_, vault, client, state) = as_owner(session, "removes")?;
    if state.owner_device_list().is_none() {
        return Err(CliError::NotFound(
            "the owner of this vault has listed no devices".into(),
        ));
    }
    // Any device the log's lists ever named: one removed already is named
    // again to finish what an interruption left (re-keying, and carrying
    // the list elsewhere).
    let lost = pick(
        state.ever_listed_devices().map(|d| d.document()),
        &args.device,
        "no device of this vault's owner has a fingerprint starting",
    )?;
    let name = state
        .ever_listed_devices()
        .find(|d| d.document().fingerprint() == lost)
        .map(|d| clean(d.document().display_name()))
        .unwrap_or_default();
    let (state, removal) = session.rt.block_on(vault_client::devices::remove(
        &mut session.store,
        &client,
        &vault,
        &lost,
    ))?;
    let namer = session.namer();
    let shared: Vec<String> = removal
        .granted_by_it
        .iter()
        .map(|(_, m)| namer.name(m, Some(&state)))
        .collect();
    if session.out.json {
        return session.out.json(&json!({
            "removed": lost.to_hex(),
            "serial": removal.list.as_ref().map(|l| l.serial()),
            "generation": removal.list.as_ref().map(|l| l.generation()),
            "rotated": removal.rekeying.rotated.len(),
            "not_rotated": removal.rekeying.not_rotated.len(),
            "dropped": removal.rekeying.dropped.len(),
            "shared_by_it": removal.granted_by_it.iter().map(|(_, m)| m.to_hex()).collect::<Vec<_>>(),
            "elsewhere": elsewhere_json(&removal.elsewhere),
        }));
    }
    if removal.list.is_some() {
        line(&format!(
            "Removed {name} ({}) from your devices in this vault: the relay refuses it here from now on, and {} collection key(s) were rotated, so nothing written from now on opens with its keys.",
            lost.to_hex(),
            removal.rekeying.rotated.len()
        ))?;
    } else {
        line(&format!(
            "{name} ({}) was removed from your devices in this vault already: {} collection key(s) were rotated to finish the re-keying, and the removal was carried where it was missing.",
            lost.to_hex(),
            removal.rekeying.rotated.len()
        ))?;
    }
    report_rekeying(
        &removal.rekeying,
        "whose key did not open were dropped from the rotated collections",
        &shared,
        "It had",
    )?;
    report_elsewhere(&removal.elsewhere)?;
    line("It held the keys of every record in this vault until now: treat those records as seen.")
}

/// `vault devices recover`.
fn recover(session: &mut Session, args: &RecoverArgs) -> Result<()> {
    let (secret, vault, client, state) = as_owner(session, "takes back the list of")?;
    if secret.fingerprint() != state.owner().fingerprint() {
        return Err(CliError::Usage(
            "only the owner's key file takes the device list back; on a device, `vault devices remove` the lost one (that keeps every record)".into(),
        ));
    }
    if state.owner_device_list().is_none() {
        return Err(CliError::NotFound(
            "you have listed no devices in this vault: there is no list to take back".into(),
        ));
    }
    let mut keep = Vec::new();
    for typed in &args.keep {
        keep.push(pick(
            state.ever_listed_devices().map(|d| d.document()),
            typed,
            "no device ever listed in this vault has a fingerprint starting",
        )?);
    }
    keep.sort_by_key(|fp| *fp.as_bytes());
    keep.dedup();
    let (state, recovery) = session.rt.block_on(vault_client::devices::recover(
        &mut session.store,
        &client,
        &vault,
        &keep,
    ))?;
    let namer = session.namer();
    let current = state.owner_device_list();
    let kept: Vec<String> = current
        .map(|l| {
            l.devices()
                .iter()
                .map(|d| clean(d.document().display_name()))
                .collect()
        })
        .unwrap_or_default();
    let removed: Vec<String> = recovery
        .removed
        .iter()
        .map(|d| format!("{} ({})", clean(d.display_name()), d.fingerprint().to_hex()))
        .collect();
    let shared: Vec<String> = recovery
        .granted_by_removed
        .iter()
        .map(|(_, m)| namer.name(m, Some(&state)))
        .collect();
    if session.out.json {
        return session.out.json(&json!({
            "serial": current.map(|l| l.serial()),
            "generation": current.map(|l| l.generation()),
            "kept": keep.iter().map(|fp| fp.to_hex()).collect::<Vec<_>>(),
            "removed": recovery.removed.iter().map(|d| d.fingerprint().to_hex()).collect::<Vec<_>>(),
            "already_recovered": recovery.list.is_none(),
            "rotated": recovery.rekeying.rotated.len(),
            "not_rotated": recovery.rekeying.not_rotated.len(),
            "dropped": recovery.rekeying.dropped.len(),
            "shared_by_removed": recovery.granted_by_removed.iter().map(|(_, m)| m.to_hex()).collect::<Vec<_>>(),
            "elsewhere": elsewhere_json(&recovery.elsewhere),
        }));
    }
    if recovery.list.is_none() {
        line("Your key file had taken the list back already with these devices; this run only finished rotating the collection keys.")?;
    } else if kept.is_empty() {
        line("Your key file took your device list back: no device acts for you in this vault now, only the key file.")?;
    } else {
        line(&format!(
            "Your key file took your device list back: only {} act(s) for you in this vault now.",
            kept.join(", ")
        ))?;
    }
    if !removed.is_empty() {
        line(&format!(
            "Removed: {}. The relay refuses them here from now on.",
            removed.join(", ")
        ))?;
    }
    line(&format!(
        "{} collection key(s) were rotated to a key generation no removed device holds.",
        recovery.rekeying.rotated.len()
    ))?;
    report_rekeying(
        &recovery.rekeying,
        "sealed only under the keys the removed devices held (written after your list was taken from you) could not be opened with your key file and were dropped",
        &shared,
        "The removed devices had",
    )?;
    report_elsewhere(&recovery.elsewhere)?;
    line("The removed devices held the keys of every record in this vault until now: treat those records as seen.")
}
