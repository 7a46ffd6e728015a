//! `vault devices list`, `vault devices add` and `vault devices remove`:
//! the CLI's presentation of [`vault_client::devices`] (the owner's
//! devices, `docs/format.md` §8.11).

use serde_json::json;
use vault_core::devices::DeviceList;
use vault_core::{Fingerprint, Role};

use crate::cli::{DeviceArgs, DevicesCommand};
use crate::error::{CliError, Result};
use crate::output::{clean, line, table};
use crate::session::Session;

/// Runs one `vault devices` subcommand.
pub fn run(session: &mut Session, cmd: DevicesCommand) -> Result<()> {
    match cmd {
        DevicesCommand::List => list(session),
        DevicesCommand::Add(args) => add(session, &args),
        DevicesCommand::Remove(args) => remove(session, &args),
    }
}

/// `vault devices list`.
fn list(session: &mut Session) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    let me = secret.fingerprint();
    let Some(current) = state.owner_device_list() else {
        if session.out.json {
            return session.out.json(&json!([]));
        }
        return line(
            "The owner of this vault has listed no devices: only the owner's key file writes as the owner. Add one with `vault devices add FINGERPRINT`.",
        );
    };
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
                fp.to_string(),
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

/// `vault devices add`.
fn add(session: &mut Session, args: &DeviceArgs) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let client = session.client_for(&vault)?;
    let state = session.pull(&vault)?;
    if !state.is_owner(&secret.fingerprint()) {
        return Err(CliError::Usage(
            "only the vault's owner (its key file, or one of its devices) adds devices".into(),
        ));
    }
    let fp = Fingerprint::from_hex(args.device.trim()).map_err(|_| {
        CliError::Usage(
            "give the new device's whole fingerprint, as `vault whoami` prints it on that device"
                .into(),
        )
    })?;
    let device = session
        .rt
        .block_on(client.lookup_identity(&fp))
        .map_err(|e| {
            CliError::NotFound(format!(
                "the relay has no identity {fp}: on the new device, run `vault init --role device` and `vault whoami --publish` first ({e})"
            ))
        })?;
    if device.role() != Role::Device {
        return Err(CliError::Usage(format!(
            "{} is not a device identity (it is a {}); create one on the new device with `vault init --role device`",
            fp,
            device.role().as_str()
        )));
    }
    let list = if state.owner_device_list().is_none() {
        if secret.fingerprint() != state.owner().fingerprint() {
            return Err(CliError::Usage(
                "the first device is listed with the owner's key file".into(),
            ));
        }
        let (first, _) = DeviceList::first(&secret, std::slice::from_ref(&device), client.now())?;
        session.rt.block_on(vault_client::devices::list(
            &mut session.store,
            &client,
            &vault,
            &first,
        ))?;
        first
    } else {
        let (_, list) = session.rt.block_on(vault_client::devices::add(
            &mut session.store,
            &client,
            &vault,
            &device,
        ))?;
        list
    };
    if session.out.json {
        return session.out.json(&json!({
            "device": fp.to_hex(),
            "name": device.display_name(),
            "serial": list.serial(),
            "generation": list.generation(),
        }));
    }
    line(&format!(
        "Added {} ({}) to your devices: it now reads and writes this vault as you.",
        clean(device.display_name()),
        fp
    ))?;
    line("Check that this fingerprint is the one `vault whoami` shows on that device. `vault devices remove` takes it away again.")
}

/// `vault devices remove`.
fn remove(session: &mut Session, args: &DeviceArgs) -> Result<()> {
    session.unlock()?;
    let vault = session.select_vault()?;
    let client = session.client_for(&vault)?;
    let state = session.pull(&vault)?;
    let current = state.owner_device_list().ok_or_else(|| {
        CliError::NotFound("the owner of this vault has listed no devices".into())
    })?;
    let wanted = args.device.trim().to_ascii_lowercase();
    let matches: Vec<Fingerprint> = current
        .devices()
        .iter()
        .map(|d| d.document().fingerprint())
        .filter(|fp| fp.to_hex().starts_with(&wanted) && wanted.len() >= 4)
        .collect();
    let lost = match matches.as_slice() {
        [one] => *one,
        [] => {
            return Err(CliError::NotFound(format!(
                "no device of this vault's owner has a fingerprint starting {:?}; see `vault devices list`",
                args.device
            )))
        }
        _ => {
            return Err(CliError::Usage(
                "several devices match; give more of the fingerprint".into(),
            ))
        }
    };
    let name = current
        .device(&lost)
        .map(|d| clean(d.document().display_name()))
        .unwrap_or_default();
    let (_, removal) = session.rt.block_on(vault_client::devices::remove(
        &mut session.store,
        &client,
        &vault,
        &lost,
    ))?;
    if session.out.json {
        return session.out.json(&json!({
            "removed": lost.to_hex(),
            "serial": removal.list.serial(),
            "generation": removal.list.generation(),
            "rotated": removal.rotated.len(),
            "dropped": removal.dropped.len(),
        }));
    }
    line(&format!(
        "Removed {name} ({lost}): the relay refuses it from now on, and {} collection key(s) were rotated, so nothing written from now on opens with its keys.",
        removal.rotated.len()
    ))?;
    if !removal.dropped.is_empty() {
        line(&format!(
            "{} record(s) whose key did not open were dropped from the rotated collections.",
            removal.dropped.len()
        ))?;
    }
    line("What it could read before stays readable to whoever holds it: treat those records as seen.")
}
