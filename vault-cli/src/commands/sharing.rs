//! `vault share`, `vault revoke`, `vault access`, `vault export` and
//! `vault verify`.

use serde_json::json;
use vault_client::reading;
use vault_core::export::DirectorySink;
use vault_core::{Keyring, Permission, VaultState};

use crate::cli::{ExportArgs, RevokeArgs, ShareArgs, VerifyArgs};
use crate::error::{CliError, Result};
use crate::output::{clean, line, short, table};
use crate::records::{collection_label, find_collection, find_record};
use crate::session::Session;

pub(super) fn require_owner(session: &Session, state: &VaultState, what: &str) -> Result<()> {
    if state.owner().fingerprint() == session.me().fingerprint() {
        Ok(())
    } else {
        Err(vault_core::Error::AccessDenied(match what {
            "name relays" => "only the vault's owner can name its relays",
            _ => "only the vault's owner can do this",
        })
        .into())
    }
}

/// `vault share`.
pub fn share(session: &mut Session, args: &ShareArgs) -> Result<()> {
    let secret = session.unlock()?;
    let contact = session.contacts.get(&session.store, &args.with)?;
    let vault = session.select_vault()?;
    let client = session.client_for(&vault)?;
    let state = session.pull(&vault)?;
    let expires_at = args
        .until
        .as_deref()
        .map(|u| super::parse_until(u, client.now()))
        .transpose()?;
    let member = contact.identity.clone();
    use vault_client::sharing::ShareTarget as Target;
    let (target, what) = if args.record {
        if args.write || args.add_only || args.deposit {
            return Err(CliError::Usage(
                "a single record is shared read-only; share its collection for write access".into(),
            ));
        }
        let record = find_record(&state, &args.what)?;
        (
            Target::Record(record),
            format!("record {}", short(&record.to_hex())),
        )
    } else {
        let collection = find_collection(&state, &secret, client.now(), &args.what)?;
        (
            Target::Collection(collection, share_permission(args)),
            format!("collection {}", args.what),
        )
    };
    let (state, rotated_first) = session.rt.block_on(vault_client::sharing::share(
        &mut session.store,
        &client,
        &vault,
        target,
        &member,
        expires_at,
    ))?;
    // An agent's share without --until lasts as long as its agency.
    let expires_at = match target {
        Target::Collection(collection, _) => state
            .access(&member.fingerprint(), client.now())
            .collections
            .get(&collection)
            .map_or(expires_at, |c| c.expires_at),
        Target::Record(_) => expires_at,
    };
    let permission = share_permission(args).as_str();
    if session.out.json {
        return session.out.json(&json!({
            "shared": what,
            "with": args.with,
            "fingerprint": member.fingerprint().to_hex(),
            "permission": permission,
            "expires_at": expires_at,
            "rotated_first": rotated_first,
        }));
    }
    if rotated_first {
        line("The collection's key was rotated first: versions you replaced or deleted stay closed to them.")?;
    }
    line(&format!(
        "Shared {what} with {} ({}), {permission}{}.",
        args.with,
        clean(member.display_name()),
        expires_at
            .map(|t| format!(" until {}", super::expiry(t, client.now())))
            .unwrap_or_default()
    ))?;
    if args.deposit {
        line(&format!(
            "{} may add records to it and can read nothing in your vault. Their records show them as the author; `vault revoke {}` ends it.",
            args.with, args.with
        ))?;
    }
    line(&format!(
        "{} will find it with `vault inbox` (they need your fingerprint as a verified contact).",
        args.with
    ))
}

/// The permission `vault share`'s flags ask for.
fn share_permission(args: &ShareArgs) -> Permission {
    if args.write {
        Permission::ReadWrite
    } else if args.add_only {
        Permission::Add
    } else if args.deposit {
        Permission::Deposit
    } else {
        Permission::Read
    }
}

/// `vault revoke`: every grant of a contact (or one collection's) ends;
/// each collection's key is rotated, so what is added afterwards is sealed
/// under a key the contact never had.
pub fn revoke(session: &mut Session, args: &RevokeArgs) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let client = session.client_for(&vault)?;
    let state = session.pull(&vault)?;
    let member = revoke_target(session, &state, &args.contact)?;
    let only = args
        .collection
        .as_deref()
        .map(|c| find_collection(&state, &secret, client.now(), c))
        .transpose()?;
    let (state, plan) = session.rt.block_on(vault_client::sharing::revoke(
        &mut session.store,
        &client,
        &vault,
        &member,
        only.as_ref(),
    ))?;
    if plan.is_empty() {
        return Err(CliError::NotFound(format!(
            "{} has no access to revoke{}",
            args.contact,
            args.collection
                .as_deref()
                .map(|c| format!(" in {c}"))
                .unwrap_or_default()
        )));
    }
    let name_of = |r: &vault_client::sharing::RotatedCollection| {
        r.name.clone().unwrap_or_else(|| r.collection.to_hex())
    };
    let author_of = |fp: &vault_core::Fingerprint| {
        state
            .identity(fp)
            .map(|i| format!("{} ({})", clean(i.display_name()), short(&fp.to_hex())))
            .unwrap_or_else(|| fp.to_hex())
    };
    if session.out.json {
        return session.out.json(&json!({
            "contact": args.contact,
            "collections": plan.rotated.iter().map(|r| json!({
                "collection": name_of(r),
                "epoch": r.epoch,
                "dropped": r.dropped.iter().map(|d| json!({
                    "record": d.record.to_hex(),
                    "author": d.author.to_hex(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "record_grants": plan.record_grants,
            "checkpoint": state.head().code(),
        }));
    }
    for r in &plan.rotated {
        line(&format!(
            "Revoked {} from {}: its key was rotated (epoch {}); new records are sealed under a key they never had.",
            args.contact,
            name_of(r),
            r.epoch
        ))?;
        for d in &r.dropped {
            line(&format!(
                "warning: record {} could not be opened with the collection's key (written by {}); the rotation deleted it. Nobody could read it.",
                short(&d.record.to_hex()),
                author_of(&d.author)
            ))?;
        }
    }
    if plan.record_grants > 0 {
        line(&format!(
            "Withdrew {} single-record share(s) from {}.",
            plan.record_grants, args.contact
        ))?;
    }
    line("Anything they already downloaded stays with them; they can no longer fetch or decrypt what is stored.")
}

/// Whom `vault revoke WHO` means: a contact's name, or the fingerprint (64
/// hex digits, or a unique prefix of at least 8) of anyone holding a grant
/// in the vault, which also reaches members who are not contacts and a
/// contact's key that was replaced.
pub(super) fn revoke_target(
    session: &Session,
    state: &VaultState,
    who: &str,
) -> Result<vault_core::Fingerprint> {
    match session.contacts.get(&session.store, who) {
        Ok(c) => return Ok(c.identity.fingerprint()),
        Err(CliError::UnknownContact(_)) => {}
        Err(e) => return Err(e),
    }
    let lower = who.to_ascii_lowercase();
    if lower.len() < 8 || !lower.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::UnknownContact(who.to_owned()));
    }
    let mut members: Vec<vault_core::Fingerprint> = state
        .collections()
        .into_iter()
        .flat_map(|c| c.members.into_iter().map(|(fp, _, _)| fp))
        .chain(state.record_grants().into_iter().map(|(_, fp, _)| fp))
        .filter(|fp| *fp != state.owner().fingerprint() && fp.to_hex().starts_with(&lower))
        .collect();
    members.sort_by_key(|f| *f.as_bytes());
    members.dedup();
    match members.as_slice() {
        [one] => Ok(*one),
        [] => Err(CliError::NotFound(format!(
            "nobody with a fingerprint starting {who} has access to this vault; see `vault access`"
        ))),
        _ => Err(CliError::Usage(format!(
            "{who} matches several members; give more digits"
        ))),
    }
}

/// `vault access`: who has access to what (for the owner), or what you
/// have (for a member).
pub fn access(session: &mut Session) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    let names = vault_client::reading::names_by_id(&state, &secret, session.now());
    let name_of = |id: &vault_core::CollectionId| collection_label(&names, id);
    let namer = session.namer();
    let owner = state.owner().fingerprint();
    let now = session.now();
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    let until = |e: Option<u64>| {
        e.map(|t| {
            let d = super::date(i64::try_from(t).unwrap_or(i64::MAX));
            if t <= now {
                format!("{d} (expired)")
            } else {
                d
            }
        })
        .unwrap_or_else(|| "-".into())
    };
    for c in state.collections() {
        for (fp, permission, expires) in &c.members {
            if *fp == owner {
                continue;
            }
            let who = namer.name(fp, Some(&state));
            let agent = state.agency_of(fp, &c.id, now).map(|(_, p)| p);
            rows.push(vec![
                who.clone(),
                name_of(&c.id),
                match agent {
                    Some(p) => format!("agent: {p}"),
                    None => permission.as_str().to_owned(),
                },
                until(*expires),
            ]);
            json_rows.push(json!({
                "member": fp.to_hex(), "name": who, "collection": name_of(&c.id),
                "permission": permission.as_str(), "expires_at": expires,
                "agent_powers": agent.map(|p| p.to_string()),
            }));
        }
    }
    for (record, fp, expires) in state.record_grants() {
        let who = namer.name(&fp, Some(&state));
        rows.push(vec![
            who.clone(),
            format!("record {}", short(&record.to_hex())),
            "read".into(),
            until(expires),
        ]);
        json_rows.push(json!({
            "member": fp.to_hex(), "name": who, "record": record.to_hex(),
            "permission": "read", "expires_at": expires,
        }));
    }
    if session.out.json {
        return session.out.json(&json_rows);
    }
    line(&format!(
        "Vault {} owned by {}.",
        short(&vault.to_hex()),
        namer.name(&owner, Some(&state))
    ))?;
    if rows.is_empty() {
        return line("Nobody else has access.");
    }
    table(&["WHO", "WHAT", "PERMISSION", "UNTIL"], &rows)
}

/// `vault export`: standard age files for your own key, a FHIR bundle and
/// a manifest, plus a copy of your passphrase-sealed key file.
pub fn export(session: &mut Session, args: &ExportArgs) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    if state.owner().fingerprint() != secret.fingerprint() {
        return Err(vault_core::Error::AccessDenied(
            "only the vault's owner can export it; save what was shared with you with `vault open -c COLLECTION -o DIR`",
        )
        .into());
    }
    if args.dir.exists()
        && std::fs::read_dir(&args.dir)
            .map_err(|e| CliError::file(&args.dir, e))?
            .next()
            .is_some()
    {
        return Err(CliError::Usage(format!(
            "{} is not empty; export into a new directory",
            args.dir.display()
        )));
    }
    let ids = session.readable_records(&state);
    session.ensure_blobs(&state, &ids)?;
    let created_dir = !args.dir.exists();
    crate::home::create_private_dir(&args.dir)?;
    let result = export_into(session, &state, &secret, args);
    if result.is_err() && created_dir {
        // A failed export leaves nothing half-written behind.
        let _ = std::fs::remove_dir_all(&args.dir);
    }
    let unreadable = result?;
    if unreadable.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unreadable
        .iter()
        .map(|u| {
            format!(
                "{} (written by {}: {})",
                u.record.to_hex(),
                state
                    .identity(&u.author)
                    .map(|i| format!("{} {}", clean(i.display_name()), short(&u.author.to_hex())))
                    .unwrap_or_else(|| u.author.to_hex()),
                u.code
            )
        })
        .collect();
    Err(CliError::Incomplete(format!(
        "the export in {} is complete except for {} record(s) that could not be opened, listed in its manifest: {}. Nobody can read them; `vault revoke` the writer if you do not trust them",
        args.dir.display(),
        unreadable.len(),
        list.join("; ")
    )))
}

fn export_into(
    session: &Session,
    state: &VaultState,
    secret: &vault_core::SecretIdentity,
    args: &ExportArgs,
) -> Result<Vec<vault_core::export::UnreadableRecord>> {
    let mut sink = DirectorySink::new(&args.dir);
    let key = std::fs::read(session.home.key_file())
        .map_err(|e| CliError::file(session.home.key_file(), e))?;
    let summary = reading::export(
        &session.store,
        state,
        secret,
        session.now(),
        &key,
        &mut sink,
    )?;
    if session.out.json {
        session.out.json(&json!({
            "dir": args.dir.display().to_string(),
            "records": summary.records,
            "fhir_resources": summary.fhir_resources,
            "files": summary.files,
            "unreadable": summary.unreadable.iter().map(|u| json!({
                "record": u.record.to_hex(),
                "author": u.author.to_hex(),
                "error": u.code,
            })).collect::<Vec<_>>(),
            "checkpoint": state.head().code(),
        }))?;
        return Ok(summary.unreadable);
    }
    line(&format!(
        "Exported {} records ({} FHIR resources in fhir-bundle.json.age) to {}.",
        summary.records,
        summary.fhir_resources,
        args.dir.display()
    ))?;
    line("Every file decrypts with the standard age tool; see README.txt in the export.")?;
    Ok(summary.unreadable)
}

/// `vault verify`: re-verifies the whole log from genesis, checks every
/// readable record's ciphertext, and prints the checkpoint code.
pub fn verify(session: &mut Session, args: &VerifyArgs) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let synced = session.refresh(&vault)?;
    let entries = vault_core::store::Store::entries(&session.store, &vault, 0)?;
    let state = VaultState::verify_log_as(&secret.fingerprint(), session.now(), &entries, None)?;
    if state.head() != synced.head() {
        return Err(vault_core::Error::CheckpointMismatch {
            reason:
                "re-verifying the stored log from genesis gives another head than the synced state",
        }
        .into());
    }
    let ids = session.readable_records(&state);
    session.ensure_blobs(&state, &ids)?;
    let mut keyring = Keyring::new(&secret, session.now());
    let mut opened = 0usize;
    for id in &ids {
        match crate::records::open_record(&session.store, &state, &mut keyring, id, std::io::sink())
        {
            Ok(_) => opened += 1,
            Err(CliError::Core(vault_core::Error::AccessDenied(_))) => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(code) = &args.compare {
        state.compare_checkpoint_code(code)?;
    }
    let code = state.head().code();
    if session.out.json {
        return session.out.json(&json!({
            "vault": vault.to_hex(),
            "entries": entries.len(),
            "records_verified": opened,
            "checkpoint": code,
            "compared": args.compare.is_some(),
        }));
    }
    line(&format!(
        "Verified vault {}: {} log entries signed and chained from genesis, {} records decrypted and authenticated.",
        short(&vault.to_hex()),
        entries.len(),
        opened
    ))?;
    if args.compare.is_some() {
        line("The checkpoint you gave matches this device's history.")?;
    }
    line(&format!("Checkpoint: {code}"))?;
    line("Compare this code with other devices or people who see this vault: the same entry number must give the same code.")
}
