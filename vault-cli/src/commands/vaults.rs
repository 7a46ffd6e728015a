//! `vault create`, `vault vaults`, `vault inbox` and `vault sync`.

use serde_json::json;
use vault_client::sync;
use vault_core::store::Store as _;
use vault_core::{Keyring, Permission, VaultId};

use crate::cli::{InboxArgs, InboxCommand, SyncArgs};
use crate::error::{CliError, Result};
use crate::output::{clean, line, short, table};
use crate::records::collections_by_name;
use crate::session::Session;

/// `vault create`: a new vault owned by you, on the relay and on this device.
pub fn create(session: &mut Session) -> Result<()> {
    let secret = session.unlock()?;
    if secret.public().role() == vault_core::Role::Device {
        return Err(CliError::Usage(
            "this profile is a device of yours, which never owns a vault: your key file's profile (or the web app) adds it with `vault devices add`, and then it reads and writes your vault".into(),
        ));
    }
    let client = session.client()?;
    // Publishing lets clinicians look the patient up by fingerprint.
    session.rt.block_on(client.publish_identity())?;
    let state = session
        .rt
        .block_on(sync::new_vault(&mut session.store, &client, &secret))?;
    if session.out.json {
        return session.out.json(&json!({
            "vault": state.vault().to_hex(),
            "checkpoint": state.head().code(),
        }));
    }
    line(&format!("Created vault {}.", state.vault()))?;
    line("Add records with `vault add FILE -c COLLECTION` or `vault import BUNDLE.json`.")
}

/// `vault vaults`: the vaults this device follows.
pub fn list(session: &mut Session) -> Result<()> {
    let namer = session.namer();
    let me = session.me().fingerprint();
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for (vault, owner) in session.known_vaults()? {
        let state = session.local(&vault)?;
        let owner_fp = owner.fingerprint();
        let who = if owner_fp == me {
            "you".to_owned()
        } else {
            namer.name(&owner_fp, Some(&state))
        };
        rows.push(vec![
            vault.to_hex(),
            who.clone(),
            state.records(None).len().to_string(),
            state.head().code(),
        ]);
        json_rows.push(json!({
            "vault": vault.to_hex(),
            "owner": owner_fp.to_hex(),
            "owner_name": who,
            "records": state.records(None).len(),
            "checkpoint": state.head().code(),
        }));
    }
    if session.out.json {
        return session.out.json(&json_rows);
    }
    if rows.is_empty() {
        session
            .out
            .notice("This device follows no vault yet: `vault create` makes yours, `vault inbox` fetches shared ones.");
        return Ok(());
    }
    table(&["VAULT", "OWNER", "RECORDS", "CHECKPOINT"], &rows)
}

/// `vault inbox`: what was shared with you.
pub fn inbox(session: &mut Session, args: &InboxArgs) -> Result<()> {
    match &args.action {
        Some(InboxCommand::Accept { who }) => return accepted_change(session, who, true),
        Some(InboxCommand::Forget { who }) => return accepted_change(session, who, false),
        Some(InboxCommand::Accepted) => return show_accepted(session),
        None if args.strangers => return strangers(session),
        None => {}
    }
    let secret = session.unlock()?;
    let joined = session.join_shared()?;
    let (inbox, unknown) = (&joined.inbox, &joined.unknown);
    let namer = session.namer();
    let me = secret.fingerprint();
    let mut json_rows = Vec::new();
    let mut printed = false;
    for v in inbox.iter().filter(|v| !v.is_owner) {
        if unknown.iter().any(|u| u.vault == v.vault)
            || joined.rejected.iter().any(|(r, _)| *r == v.vault)
        {
            continue;
        }
        let state = session.local(&v.vault)?;
        let mut keyring = Keyring::new(&secret, session.now());
        let names = collections_by_name(&state, &mut keyring);
        let access = state.access(&me, session.now());
        let owner = namer.name(&state.owner().fingerprint(), Some(&state));
        let mut colls = Vec::new();
        for (name, id) in &names {
            if let Some(a) = access.collections.get(id) {
                let count = state.records(Some(id)).len();
                colls.push(json!({
                    "collection": name,
                    "id": id.to_hex(),
                    "permission": a.permission.as_str(),
                    "expires_at": a.expires_at,
                    "records": count,
                }));
            }
        }
        // Write-only collections: their names are sealed under a key a
        // depositor never holds, so they are named by id.
        for (id, a) in access
            .collections
            .iter()
            .filter(|(_, a)| a.permission == Permission::Deposit)
        {
            colls.push(json!({
                "collection": id.to_hex(),
                "id": id.to_hex(),
                "permission": a.permission.as_str(),
                "expires_at": a.expires_at,
                "records": state.records(Some(id)).len(),
            }));
        }
        let records: Vec<String> = access.records.iter().map(|r| r.to_hex()).collect();
        if !session.out.json {
            line(&format!(
                "{} — vault {} (checkpoint {})",
                owner,
                short(&v.vault.to_hex()),
                state.head().code()
            ))?;
            for c in &colls {
                line(&format!(
                    "  {:<16} {:>5} records  {}{}",
                    c["collection"].as_str().unwrap_or_default(),
                    c["records"],
                    c["permission"].as_str().unwrap_or_default(),
                    c["expires_at"]
                        .as_i64()
                        .map(|t| format!(", until {}", super::date(t)))
                        .unwrap_or_default()
                ))?;
            }
            for r in &records {
                line(&format!("  record {}  read", short(r)))?;
            }
            printed = true;
        }
        json_rows.push(json!({
            "vault": v.vault.to_hex(),
            "owner": state.owner().fingerprint().to_hex(),
            "owner_name": owner,
            "verified": true,
            "collections": colls,
            "records": records,
        }));
    }
    for u in unknown {
        if !session.out.json {
            line(&format!(
                "vault {} was shared by someone who is not one of your contacts (the relay claims their fingerprint begins {}). Ask the patient for their fingerprint, add them with `vault contacts add NAME --lookup <the 64 hex digits they give you>`, then run `vault inbox` again",
                short(&u.vault.to_hex()),
                u.owner.digit_groups().first().cloned().unwrap_or_default(),
            ))?;
            printed = true;
        }
        json_rows.push(json!({
            "vault": u.vault.to_hex(),
            "owner": u.owner.to_hex(),
            "verified": false,
        }));
    }
    if session.out.json {
        session.out.json(&json_rows)?;
    } else if !printed && joined.rejected.is_empty() {
        session.out.notice("Nothing has been shared with you yet.");
    }
    // A vault the relay lied about was reported above; the command still
    // fails with the first such error, so a script sees it.
    match joined.rejected.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Owners named as contact names or 64-hex fingerprints.
fn owners(session: &Session, who: &[String]) -> Result<Vec<vault_core::Fingerprint>> {
    who.iter()
        .map(|w| {
            let hex: String = w.chars().filter(|c| !c.is_whitespace()).collect();
            match vault_core::Fingerprint::from_hex(&hex.to_ascii_lowercase()) {
                Ok(fp) => Ok(fp),
                Err(_) => Ok(session
                    .contacts
                    .get(&session.store, w)?
                    .identity
                    .fingerprint()),
            }
        })
        .collect()
}

/// `vault inbox accept|forget WHO...`.
fn accepted_change(session: &mut Session, who: &[String], accept: bool) -> Result<()> {
    let fps = owners(session, who)?;
    let client = session.client()?;
    let changed = if accept {
        session
            .rt
            .block_on(vault_client::inbox::accept(&client, &fps))
    } else {
        session
            .rt
            .block_on(vault_client::inbox::forget(&client, &fps))
    };
    let list = changed.map_err(|e| session.person_error(e))?;
    if session.out.json {
        return session.out.json(&accepted_json(session, &list)?);
    }
    line(&format!(
        "{} {} owner(s); {} shares in full from {} owner(s).",
        if accept { "Accepted" } else { "Forgot" },
        fps.len(),
        whose(session)?,
        list.owners.len()
    ))
}

/// Who the accepted list is of: "you", or the person this device reads
/// for (decision 76), named.
fn whose(session: &Session) -> Result<String> {
    Ok(match session.person()? {
        Some(p) => format!(
            "{} (the person this device acts for) now accepts",
            session.namer().name(&p, None)
        ),
        None => "you now accept".to_owned(),
    })
}

fn accepted_json(
    session: &Session,
    list: &vault_client::AcceptedOwners,
) -> Result<serde_json::Value> {
    let namer = session.namer();
    Ok(json!({
        "version": list.version,
        "person": session.person()?.map(|p| p.to_hex()),
        "owners": list.owners.iter().map(|o| json!({
            "fingerprint": o.to_hex(),
            "name": namer.name(o, None),
        })).collect::<Vec<_>>(),
    }))
}

/// `vault inbox accepted`.
fn show_accepted(session: &mut Session) -> Result<()> {
    let client = session.client()?;
    let list = session
        .rt
        .block_on(client.accepted_owners())
        .map_err(|e| session.person_error(e))?;
    if session.out.json {
        return session.out.json(&accepted_json(session, &list)?);
    }
    if let Some(p) = session.person()? {
        session.out.notice(format!(
            "The accepted owners of {}, the person this device acts for (every device of theirs reads this list):",
            session.namer().name(&p, None)
        ));
    }
    if list.owners.is_empty() {
        session.out.notice(
            "You accept nobody's shares in full yet: everyone's are listed within the limits for strangers. Your contacts are accepted when you run `vault inbox` or `vault sync`.",
        );
        return Ok(());
    }
    let namer = session.namer();
    for o in &list.owners {
        line(&format!("{}  {}", short(&o.to_hex()), namer.name(o, None)))?;
    }
    Ok(())
}

/// `vault inbox --strangers`: what the relay lists from people not
/// accepted (claims only: nothing is joined or verified).
fn strangers(session: &mut Session) -> Result<()> {
    let listing = session.reading_for_person(|client| async move {
        client.inbox_view(vault_client::InboxView::Strangers).await
    })?;
    if session.out.json {
        return session.out.json(&json!({
            "vaults": listing.vaults.iter().map(|v| json!({
                "vault": v.vault.to_hex(),
                "owner": v.owner.to_hex(),
                "collections": v.collections.len(),
                "records": v.records.len(),
                "truncated": v.truncated,
            })).collect::<Vec<_>>(),
            "held_back": listing.strangers_held_back,
        }));
    }
    for v in &listing.vaults {
        line(&format!(
            "vault {} from {} (not accepted, unverified): {} collection(s), {} record(s){}",
            short(&v.vault.to_hex()),
            v.owner.digit_groups().first().cloned().unwrap_or_default(),
            v.collections.len(),
            v.records.len(),
            if v.truncated {
                " (more not listed)"
            } else {
                ""
            }
        ))?;
    }
    if listing.vaults.is_empty() {
        session
            .out
            .notice("No shares from people you have not accepted.");
    }
    if listing.strangers_held_back > 0 {
        session.out.notice(format!(
            "{} more vault(s) from people you have not accepted are not listed (the relay's limit for strangers).",
            listing.strangers_held_back
        ));
    }
    Ok(())
}

/// `vault sync`: every vault brought up to date, shared vaults of verified
/// contacts joined, and the ciphertext of every readable record cached for
/// offline reading.
pub fn sync(session: &mut Session, args: &SyncArgs) -> Result<()> {
    session.unlock()?;
    // Repairs first: until the relay holds what this device verified, every
    // read of the vault (the inbox's join included) is a rollback.
    let mut repairs = std::collections::BTreeMap::new();
    let mut failed: Option<CliError> = None;
    if args.repair {
        for vault in session.store.vaults()? {
            match session.repair(&vault) {
                Ok(r) => {
                    if r.entries > 0 || r.stopped.is_some() {
                        session.out.notice(format!(
                            "vault {}: repaired the relay from entry {} to {} ({} entries, {} records uploaded again){}",
                            short(&vault.to_hex()),
                            r.before.seq,
                            r.after.seq,
                            r.entries,
                            r.blobs,
                            r.stopped
                                .as_deref()
                                .map(|why| format!("; stopped: {why}"))
                                .unwrap_or_default()
                        ));
                    }
                    repairs.insert(vault, r);
                }
                Err(e) if e.is_unreachable() => return Err(e),
                Err(e) => {
                    session.out.warn(format!(
                        "warning: vault {}: not repaired: {e}",
                        short(&vault.to_hex())
                    ));
                    failed = Some(e);
                }
            }
        }
    }
    // The relay may be down while the vaults' mirrors answer: the vaults
    // are then read from those, and shares are looked for next time.
    let (unknown, rejected) = match session.join_shared() {
        Ok(joined) => (joined.unknown, joined.rejected),
        Err(e) if e.is_unreachable() => {
            session.out.notice(format!(
                "notice: the relay at {} is unreachable; new shares are not looked for, and vaults whose owner named mirror relays are read from those",
                session.relay_url().unwrap_or_default()
            ));
            (Vec::new(), Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut summary = Vec::new();
    let vaults: Vec<VaultId> = session.store.vaults()?;
    failed = failed.or(rejected.into_iter().next().map(|(_, e)| e));
    for vault in vaults {
        // One vault failing (access ended, a lying relay) must not stop the
        // others from syncing.
        let repaired = repairs.remove(&vault);
        let state = match session.pull(&vault) {
            Ok(state) => state,
            Err(e) if e.is_unreachable() => return Err(e),
            Err(CliError::Client(vault_client::ClientError::Relay { status: 403, .. })) => {
                session.out.notice(format!(
                    "vault {}: no longer shared with you (access ended); kept as it was",
                    short(&vault.to_hex())
                ));
                continue;
            }
            Err(e) => {
                let hint = if e.code() == "rollback" {
                    "; if the relay was restored from a backup or failed over, `vault sync --repair` pushes back what this device holds"
                } else {
                    ""
                };
                session.out.warn(format!(
                    "warning: vault {}: {e}{hint}",
                    short(&vault.to_hex())
                ));
                failed = Some(e);
                continue;
            }
        };
        // The owner's duty (decision 70): a member removed a device, so the
        // member's grant is at a generation that device holds; rotating the
        // collection (revoking nobody) shuts it out of what comes next.
        let secret = session.unlock()?;
        let mut rekeyed = Vec::new();
        let state = if vault_client::devices::rekey_is_due(&state, &secret.fingerprint()) {
            let client = session.client_for(&vault)?;
            match session.rt.block_on(vault_client::devices::rekey(
                &mut session.store,
                &client,
                &vault,
            )) {
                Ok((state, done)) => {
                    for (c, why) in &done.not_rotated {
                        session.out.warn(format!(
                            "warning: vault {}: collection {} was not re-keyed: {why}",
                            short(&vault.to_hex()),
                            short(&c.to_hex())
                        ));
                    }
                    if !done.rotated.is_empty() {
                        session.out.notice(format!(
                            "vault {}: re-keyed {} collection(s) after a device list changed: a removed device holds no key sealed from now on",
                            short(&vault.to_hex()),
                            done.rotated.len()
                        ));
                    }
                    rekeyed = done.rotated;
                    state
                }
                Err(e) => {
                    let e = CliError::from(e);
                    if e.is_unreachable() {
                        return Err(e);
                    }
                    session.out.warn(format!(
                        "warning: vault {}: not re-keyed: {e}",
                        short(&vault.to_hex())
                    ));
                    state
                }
            }
        } else {
            state
        };
        let readable = session.readable_records(&state);
        session.ensure_blobs(&state, &readable)?;
        // The mirrors the owner named get what they lack of this copy.
        let mirrored = session.push_mirrors(&state);
        for r in mirrored
            .iter()
            .filter(|r| super::relays::is_trouble(&r.status))
        {
            session.out.warn(format!(
                "warning: vault {}: mirror {}: {}",
                short(&vault.to_hex()),
                r.relay,
                super::relays::status_text(&r.status)
            ));
        }
        let unopenable =
            vault_client::records::unopenable(&state, &secret, session.now(), &readable);
        for (record, author) in &unopenable {
            session.out.warn(format!(
                "warning: vault {}: record {} cannot be opened: its writer, {}, sealed it with a key that does not open. Nobody can read it; the owner's next revocation of that collection removes it",
                short(&vault.to_hex()),
                short(&record.to_hex()),
                state
                    .identity(author)
                    .map(|i| format!("{} ({})", clean(i.display_name()), short(&author.to_hex())))
                    .unwrap_or_else(|| author.to_hex())
            ));
        }
        let withheld = vault_client::agents::withheld_keys(&state, &secret, session.now());
        for (collection, signer) in &withheld {
            let who = state
                .identity(signer)
                .map(|i| format!("{} ({})", clean(i.display_name()), short(&signer.to_hex())))
                .unwrap_or_else(|| signer.to_hex());
            session.out.warn(format!(
                "warning: vault {}: your key of collection {} does not open: {who} sealed it wrongly when rotating it. `vault agents end` them: their agency ends and the key is rotated from the keys you hold",
                short(&vault.to_hex()),
                short(&collection.to_hex()),
            ));
        }
        summary.push(json!({
            "vault": vault.to_hex(),
            "rekeyed": rekeyed.iter().map(|c| c.to_hex()).collect::<Vec<_>>(),
            "withheld_keys": withheld.iter().map(|(c, s)| json!({
                "collection": c.to_hex(),
                "signer": s.to_hex(),
            })).collect::<Vec<_>>(),
            "repaired": repaired.map(|r| json!({
                "entries": r.entries,
                "blobs": r.blobs,
                "from": r.before.seq,
                "to": r.after.seq,
                "stopped": r.stopped,
            })),
            "records": readable.len(),
            "mirrors": super::relays::reports_json(&mirrored),
            "unopenable": unopenable.iter().map(|(r, a)| json!({
                "record": r.to_hex(),
                "author": a.to_hex(),
            })).collect::<Vec<_>>(),
            "checkpoint": state.head().code(),
        }));
        if !session.out.json {
            line(&format!(
                "vault {}: {} readable records, checkpoint {}",
                short(&vault.to_hex()),
                readable.len(),
                state.head().code()
            ))?;
        }
    }
    for u in &unknown {
        session.out.notice(format!(
            "notice: vault {} was shared by {}, who is not a verified contact; see `vault inbox`",
            short(&u.vault.to_hex()),
            clean(&u.owner.digit_groups().join(" "))
        ));
    }
    if session.out.json {
        session.out.json(&summary)?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
