//! `vault relays`: a vault's home relay and its mirrors (`docs/format.md`
//! §8.9, decision 57).

use serde_json::{json, Map, Value};
use vault_client::mirrors::{self, MirrorReport, MirrorStatus};
use vault_core::request::RelayOrigin;
use vault_core::{Relays, VaultState};

use crate::cli::{RelaysArgs, RelaysCommand};
use crate::error::{CliError, Result};
use crate::output::{line, short};
use crate::session::Session;

/// Runs `vault relays` and its subcommands.
pub fn run(session: &mut Session, args: &RelaysArgs) -> Result<()> {
    match &args.action {
        None => show(session),
        Some(RelaysCommand::Set { home, mirrors }) => set(session, home.as_deref(), mirrors),
    }
}

fn origin(url: &str) -> Result<RelayOrigin> {
    RelayOrigin::parse(url).map_err(|e| {
        CliError::Usage(format!(
            "`{url}` is not a relay URL like https://relay.example.org (scheme, host and port only): {e}"
        ))
    })
}

/// The home named in the vault, else the profile's relay.
fn current_home(session: &Session, state: &VaultState) -> Result<RelayOrigin> {
    match state.relays() {
        Some(r) => Ok(r.home().clone()),
        None => origin(&session.relay_url()?),
    }
}

/// `vault relays`: each relay's state against this device's verified copy.
fn show(session: &mut Session) -> Result<()> {
    session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    let home = current_home(session, &state)?;
    let mirrors: Vec<RelayOrigin> = state
        .relays()
        .map(|r| r.mirrors().to_vec())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for (role, relay) in
        std::iter::once(("home", &home)).chain(mirrors.iter().map(|m| ("mirror", m)))
    {
        let status = match session.relay_client(relay) {
            Ok(client) => session.rt.block_on(mirrors::status_of(&state, &client)),
            Err(e) => MirrorStatus::Unavailable(e.to_string()),
        };
        rows.push((role, relay.clone(), status));
    }
    if session.out.json {
        return session.out.json(&json!({
            "vault": vault.to_hex(),
            "checkpoint": state.head().code(),
            "relays": rows.iter().map(|(role, relay, status)| {
                let mut v = status_json(status);
                v.insert("relay".into(), json!(relay.as_str()));
                v.insert("role".into(), json!(role));
                Value::Object(v)
            }).collect::<Vec<_>>(),
        }));
    }
    line(&format!(
        "vault {}: verified on this device up to entry {} (checkpoint {})",
        short(&vault.to_hex()),
        state.head().seq,
        state.head().code()
    ))?;
    for (role, relay, status) in &rows {
        line(&format!("  {role:<6} {relay}: {}", status_text(status)))?;
    }
    if mirrors.is_empty() {
        line("  no mirrors: `vault relays set --mirror URL` names one (owner)")?;
    }
    Ok(())
}

/// `vault relays set`: names the home and the mirrors, moving the home if
/// asked, then sends every mirror what it lacks.
fn set(session: &mut Session, home: Option<&str>, mirror_urls: &[String]) -> Result<()> {
    session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.pull(&vault)?;
    super::sharing::require_owner(session, &state, "name relays")?;
    let home = match home {
        Some(url) => origin(url)?,
        None => current_home(session, &state)?,
    };
    let mirror_origins = mirror_urls
        .iter()
        .map(|u| origin(u))
        .collect::<Result<Vec<_>>>()?;
    let relays = Relays::new(home.clone(), mirror_origins)?;
    let target = session.relay_client(&home)?;
    // The new home must hold everything first (nothing to send if it is
    // the current home and up to date); a home whose log differs is a fork
    // and is refused.
    let sent = session
        .rt
        .block_on(mirrors::push_to(&mut session.store, &target, &vault))?;
    if sent.entries > 0 {
        session.out.notice(format!(
            "sent {} entries ({} encrypted records) to {home} before naming it the home",
            sent.entries, sent.blobs
        ));
    }
    if let Some(why) = sent.stopped {
        return Err(CliError::Usage(format!(
            "{home} cannot be made the home yet: {why}"
        )));
    }
    let state = session.rt.block_on(mirrors::name_relays(
        &mut session.store,
        &target,
        &vault,
        relays,
    ))?;
    session.note_home(&state);
    let reports = session.push_mirrors(&state);
    if session.out.json {
        return session.out.json(&json!({
            "vault": vault.to_hex(),
            "home": home.as_str(),
            "checkpoint": state.head().code(),
            "mirrors": reports_json(&reports),
        }));
    }
    line(&format!(
        "vault {}: home {home}, {} mirror(s); checkpoint {}",
        short(&vault.to_hex()),
        reports.len(),
        state.head().code()
    ))?;
    print_reports(&reports)
}

/// Prints one line per mirror after a push.
pub fn print_reports(reports: &[MirrorReport]) -> Result<()> {
    for r in reports {
        line(&format!("  mirror {}: {}", r.relay, status_text(&r.status)))?;
    }
    Ok(())
}

/// The reports as JSON.
pub fn reports_json(reports: &[MirrorReport]) -> Vec<Value> {
    reports
        .iter()
        .map(|r| {
            let mut v = status_json(&r.status);
            v.insert("relay".into(), json!(r.relay.as_str()));
            Value::Object(v)
        })
        .collect()
}

/// Whether a report calls for the user's attention (a warning).
pub fn is_trouble(status: &MirrorStatus) -> bool {
    !matches!(status, MirrorStatus::UpToDate { .. })
}

/// A status for people.
pub fn status_text(status: &MirrorStatus) -> String {
    match status {
        MirrorStatus::UpToDate { pushed: 0, .. } => "up to date".into(),
        MirrorStatus::UpToDate { pushed, blobs } => {
            format!("up to date (sent {pushed} entries, {blobs} encrypted records)")
        }
        MirrorStatus::Behind {
            at,
            verified,
            reason,
        } => format!(
            "behind: holds entries up to {at} of {verified}; {reason}"
        ),
        MirrorStatus::Forked { seq } => format!(
            "FORKED: its log differs from the one this device verified (at entry {seq}); do not use it, and tell its operator"
        ),
        MirrorStatus::Ahead { at, verified } => format!(
            "has entries up to {at}, this device verified up to {verified}: run `vault sync`"
        ),
        MirrorStatus::NoVault => "does not hold this vault yet (the owner's `vault sync` sends it)".into(),
        MirrorStatus::Unavailable(why) => format!("unavailable: {why}"),
    }
}

fn status_json(status: &MirrorStatus) -> Map<String, Value> {
    let v = match status {
        MirrorStatus::UpToDate { pushed, blobs } => {
            json!({"status": "up_to_date", "sent_entries": pushed, "sent_records": blobs})
        }
        MirrorStatus::Behind {
            at,
            verified,
            reason,
        } => json!({"status": "behind", "at": at, "verified": verified, "reason": reason}),
        MirrorStatus::Forked { seq } => json!({"status": "forked", "at": seq}),
        MirrorStatus::Ahead { at, verified } => {
            json!({"status": "ahead", "at": at, "verified": verified})
        }
        MirrorStatus::NoVault => json!({"status": "no_vault"}),
        MirrorStatus::Unavailable(why) => json!({"status": "unavailable", "reason": why}),
    };
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
