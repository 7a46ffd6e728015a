//! `vault agents name`, `vault agents list` and `vault agents end`: the
//! CLI's presentation of [`vault_client::agents`].

use serde_json::json;
use vault_core::Powers;

use crate::cli::{AgentEndArgs, AgentNameArgs, AgentsCommand};
use crate::error::{CliError, Result};
use crate::output::{clean, line, table};
use crate::records::{collection_label, find_collection};
use crate::session::Session;

/// Runs one `vault agents` subcommand.
pub fn run(session: &mut Session, cmd: AgentsCommand) -> Result<()> {
    match cmd {
        AgentsCommand::Name(args) => name(session, &args),
        AgentsCommand::List => list(session),
        AgentsCommand::End(args) => end(session, &args),
    }
}

/// `vault agents name`.
fn name(session: &mut Session, args: &AgentNameArgs) -> Result<()> {
    let powers = Powers::parse(&args.powers)?;
    let secret = session.unlock()?;
    let contact = session.contacts.get(&session.store, &args.contact)?;
    let vault = session.select_vault()?;
    let client = session.client_for(&vault)?;
    let state = session.pull(&vault)?;
    let expires_at = args
        .until
        .as_deref()
        .map(|u| super::parse_until(u, client.now()))
        .transpose()?;
    let collections = args
        .collection
        .iter()
        .map(|c| find_collection(&state, &secret, client.now(), c))
        .collect::<Result<Vec<_>>>()?;
    let agent = contact.identity.clone();
    let (_, naming) = session.rt.block_on(vault_client::agents::name(
        &mut session.store,
        &client,
        &vault,
        &collections,
        &agent,
        powers,
        expires_at,
    ))?;
    if session.out.json {
        return session.out.json(&json!({
            "agent": args.contact,
            "fingerprint": agent.fingerprint().to_hex(),
            "delegation": naming.delegation.to_hex(),
            "collections": args.collection,
            "powers": powers.to_string(),
            "expires_at": expires_at,
            "rotated_first": naming.rotated_first.len(),
        }));
    }
    if !naming.rotated_first.is_empty() {
        line("The collection's key was rotated first: versions you replaced or deleted stay closed to your agent.")?;
    }
    line(&format!(
        "Named {} ({}) your agent in {}: {}{}.",
        args.contact,
        clean(agent.display_name()),
        args.collection.join(", "),
        describe(powers),
        expires_at
            .map(|t| format!(", until {}", super::expiry(t, client.now())))
            .unwrap_or_default()
    ))?;
    line(&format!(
        "What they do there is shown as done on your behalf. `vault agents end {}` ends it at once.",
        args.contact
    ))
}

/// The powers in words.
fn describe(powers: Powers) -> String {
    let mut can = vec!["read"];
    if powers.adds() {
        can.push("add records");
    }
    if powers.shares() {
        can.push("share and revoke");
    }
    if powers.names_agents() {
        can.push("name further agents");
    }
    can.join(", ")
}

/// `vault agents list`.
fn list(session: &mut Session) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    let names = vault_client::reading::names_by_id(&state, &secret, session.now());
    let name_of = |id: &vault_core::CollectionId| collection_label(&names, id);
    let namer = session.namer();
    let now = session.now();
    let agencies = state.agencies();
    if session.out.json {
        let rows: Vec<_> = agencies
            .iter()
            .map(|a| {
                json!({
                    "delegation": a.delegation.to_hex(),
                    "agent": a.agent.to_hex(),
                    "name": namer.name(&a.agent, Some(&state)),
                    "named_by": a.named_by.to_hex(),
                    "parent": a.parent.map(|p| p.to_hex()),
                    "powers": a.powers.to_string(),
                    "expires_at": a.expires_at,
                    "collections": a.collections.iter().map(&name_of).collect::<Vec<_>>(),
                    "ended_in": a.ended.iter().map(&name_of).collect::<Vec<_>>(),
                })
            })
            .collect();
        return session.out.json(&rows);
    }
    if agencies.is_empty() {
        return line("No agents in this vault (that you can see).");
    }
    let rows: Vec<Vec<String>> = agencies
        .iter()
        .map(|a| {
            let status = match a.expires_at {
                Some(t) if t <= now => "expired".to_owned(),
                Some(t) if !a.collections.is_empty() => {
                    format!(
                        "until {}",
                        super::date(i64::try_from(t).unwrap_or(i64::MAX))
                    )
                }
                _ if a.collections.is_empty() => "ended".to_owned(),
                _ => "in force".to_owned(),
            };
            let in_force: Vec<String> = a.collections.iter().map(&name_of).collect();
            let ended: Vec<String> = a.ended.iter().map(&name_of).collect();
            vec![
                namer.name(&a.agent, Some(&state)),
                if in_force.is_empty() {
                    "-".into()
                } else {
                    in_force.join(", ")
                },
                a.powers.to_string(),
                status,
                namer.name(&a.named_by, Some(&state)),
                if ended.is_empty() {
                    "-".into()
                } else {
                    ended.join(", ")
                },
            ]
        })
        .collect();
    table(
        &[
            "AGENT", "ACTS IN", "POWERS", "STATUS", "NAMED BY", "ENDED IN",
        ],
        &rows,
    )
}

/// `vault agents end`.
fn end(session: &mut Session, args: &AgentEndArgs) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let client = session.client_for(&vault)?;
    let state = session.pull(&vault)?;
    let agent = super::sharing::revoke_target(session, &state, &args.agent)?;
    let only = args
        .collection
        .as_deref()
        .map(|c| find_collection(&state, &secret, client.now(), c))
        .transpose()?;
    let (state, ending) = session.rt.block_on(vault_client::agents::end(
        &mut session.store,
        &client,
        &vault,
        &agent,
        only.as_ref(),
    ))?;
    if ending.is_empty() {
        return Err(CliError::NotFound(format!(
            "{} is not an agent{} of this vault; see `vault agents list`",
            args.agent,
            args.collection
                .as_deref()
                .map(|c| format!(" in {c}"))
                .unwrap_or_default()
        )));
    }
    let names = vault_client::reading::names_by_id(&state, &secret, session.now());
    let name_of = |id: &vault_core::CollectionId| collection_label(&names, id);
    if session.out.json {
        return session.out.json(&json!({
            "agent": args.agent,
            "ended": ending.ended.iter().map(|(d, c)| json!({
                "delegation": d.to_hex(),
                "collection": name_of(c),
            })).collect::<Vec<_>>(),
            "rotated": ending.rotated.iter().map(&name_of).collect::<Vec<_>>(),
            "not_rotated": ending.not_rotated.iter().map(|(c, e)| json!({
                "collection": name_of(c),
                "error": e.code(),
                "message": e.to_string(),
            })).collect::<Vec<_>>(),
            "checkpoint": state.head().code(),
        }));
    }
    for (_, c) in &ending.ended {
        line(&format!(
            "Ended {}'s agency in {}{}.",
            args.agent,
            name_of(c),
            if ending.rotated.contains(c) {
                ": its key was rotated, so new records are sealed under a key they never had"
            } else {
                ""
            }
        ))?;
    }
    for (c, e) in &ending.not_rotated {
        session.out.warn(format!(
            "warning: the key of {} could not be rotated ({e}); the agency ended all the same. Revoking anyone there rotates it",
            name_of(c)
        ));
    }
    for c in ending
        .rotated
        .iter()
        .filter(|c| !ending.ended.iter().any(|(_, e)| e == *c))
    {
        line(&format!(
            "Rotated the key of {}, which {} had sealed wrongly for you: it opens again.",
            name_of(c),
            args.agent
        ))?;
    }
    line("What they did stays: see `vault access` for the people they shared with, and `vault revoke` anyone who should go too.")
}
