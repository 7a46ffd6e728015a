//! `vault link create|list|revoke|log|open`: SMART Health Links, presenting
//! `vault_client::links` (which encrypts, stores and resolves) and
//! `vault_fhir::ips` (which builds the patient summary).

use std::io::{IsTerminal, Write};
use std::path::Path;

use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::cli::{LinkCommand, LinkCreateArgs, LinkOpenArgs};
use crate::error::{CliError, Result};
use crate::output::{clean, line, table, Output};
use crate::records::{find_named, find_record, open_all};
use crate::session::Session;
use vault_client::links::{self, CreatedLink, LinkOptions, ShareFile};
use vault_client::reading::names_by_id;

/// The environment variable a passcode can come from.
pub const PASSCODE_ENV: &str = "VAULT_LINK_PASSCODE";

/// Runs one `vault link` command.
pub fn run(session: impl FnOnce() -> Result<Session>, out: Output, cmd: LinkCommand) -> Result<()> {
    match cmd {
        LinkCommand::Create(args) => create(&mut session()?, &args),
        LinkCommand::List => list(&mut session()?),
        LinkCommand::Revoke { link } => revoke(&mut session()?, &link),
        LinkCommand::Log { link } => log(&mut session()?, &link),
        LinkCommand::Open(args) => open(out, &args),
    }
}

/// A passcode from `file`, else [`PASSCODE_ENV`], else the terminal
/// (twice when `confirm`).
fn passcode(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>> {
    if let Some(path) = file {
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?);
        let first = text.lines().next().unwrap_or_default();
        if first.is_empty() {
            return Err(CliError::Usage(format!(
                "{}: the first line is empty; put the passcode on it",
                path.display()
            )));
        }
        return Ok(Zeroizing::new(first.to_owned()));
    }
    if let Ok(v) = std::env::var(PASSCODE_ENV) {
        if !v.is_empty() {
            return Ok(Zeroizing::new(v));
        }
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "a link passcode is needed but there is no terminal to ask on; use --passcode-file FILE or set {PASSCODE_ENV}"
        )));
    }
    let read = |label: &str| {
        rpassword::prompt_password(label)
            .map(Zeroizing::new)
            .map_err(|e| CliError::Usage(format!("could not read the passcode: {e}")))
    };
    let first = read("Link passcode: ")?;
    if confirm && *read("Repeat it: ")? != *first {
        return Err(CliError::Usage(
            "the two passcodes differ; no link was made, try again".into(),
        ));
    }
    Ok(first)
}

/// The QR code of a link ([`links::qr_code`], error-correction level M),
/// drawn with Unicode half blocks.
pub fn qr(text: &str) -> Result<String> {
    Ok(crate::output::qr_text(&links::qr_code(text)?))
}

/// FHIR resources of the records `what` names, opened and authenticated.
fn gather(session: &mut Session, args: &LinkCreateArgs) -> Result<(Vec<Value>, String)> {
    let me = session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    if !args.records.is_empty() {
        let ids = args
            .records
            .iter()
            .map(|r| find_record(&state, r))
            .collect::<Result<Vec<_>>>()?;
        session.ensure_blobs(&state, &ids)?;
        let out = links::chosen_resources(&session.store, &state, &me, session.now(), &ids)
            .map_err(crate::records::offline)?;
        let what = format!("{} chosen record(s)", out.len());
        return Ok((out, what));
    }
    let collection = match &args.collection {
        Some(name) => Some(find_named(&names_by_id(&state, &me, session.now()), name)?),
        None => None,
    };
    let listing = open_all(session, &state, collection.as_ref(), true)?;
    let out = links::listed_resources(&listing)?;
    if out.is_empty() {
        return Err(CliError::NotFound(
            "no FHIR records to share there: import a FHIR bundle first (vault import)".into(),
        ));
    }
    let what = match &args.collection {
        Some(c) => format!("collection {}", clean(c)),
        None => "a patient summary".into(),
    };
    Ok((out, what))
}

/// `vault link create`.
fn create(session: &mut Session, args: &LinkCreateArgs) -> Result<()> {
    let now = session.now();
    let expires_at = args
        .expires
        .as_deref()
        .map(|e| super::parse_until(e, now).map_err(|_| CliError::Usage(format!(
            "--expires {e:?}: use a duration like 90min, 12h, 30d, 2w, 6mo or 1y, or a future date like 2027-01-31"
        ))))
        .transpose()?;
    if let Some(label) = &args.label {
        if label.chars().count() > vault_shl::payload::MAX_LABEL_CHARS {
            return Err(CliError::Usage(
                "--label: at most 80 characters (it travels inside the link)".into(),
            ));
        }
    }
    let passcode = if args.passcode || args.passcode_file.is_some() {
        Some(passcode(args.passcode_file.as_deref(), true)?)
    } else {
        None
    };
    let (resources, what) = gather(session, args)?;
    let count = resources.len();
    let bundle = links::bundle(&resources, args.summary, now)?;
    let file = ShareFile::fhir(&bundle)?;
    let options = LinkOptions {
        passcode,
        max_attempts: Some(args.max_attempts),
        expires_at,
        label: args.label.clone(),
        long_term: args.long_term,
        direct: args.direct,
    };
    let client = session.client()?;
    let created: CreatedLink = session
        .rt
        .block_on(links::create(&client, &[file], &options))?;
    let short = created
        .handle
        .get(..12)
        .unwrap_or(&created.handle)
        .to_string();
    if session.out.json {
        return session.out.json(&json!({
            "link": created.viewer_link.as_str(),
            "shlink": created.shlink.as_str(),
            "handle": created.handle,
            "shares": what,
            "resources": count,
            "expires_at": expires_at,
            "passcode": options.passcode.is_some(),
            "max_attempts": options.passcode.as_ref().map(|_| args.max_attempts),
            "label": args.label,
            "encrypted_bytes": created.stored_bytes,
        }));
    }
    line(&format!(
        "Link {short} made: {what} ({count} FHIR resources), {} bytes encrypted at the relay.",
        created.stored_bytes
    ))?;
    line(&format!(
        "Passcode: {}. Expires: {}.",
        if options.passcode.is_some() {
            format!("required ({} wrong attempts allowed)", args.max_attempts)
        } else {
            "none".into()
        },
        expires_at
            .map(|t| super::expiry(t, now))
            .unwrap_or_else(|| "never (revoke it when done)".into())
    ))?;
    line("")?;
    line(&created.viewer_link)?;
    if !args.no_qr {
        line("")?;
        line(&qr(&created.viewer_link)?)?;
    }
    line(&format!(
        "Anyone holding this link{} can read what it shares: give it only to the person it is for. \
         See who fetched it with `vault link log {short}`; stop it with `vault link revoke {short}`.",
        if options.passcode.is_some() { " and the passcode" } else { "" }
    ))
}

/// The full handle of `link`: a link's own, or the one of the caller's
/// links that `link` is a unique prefix of.
fn resolve_handle(session: &mut Session, link: &str) -> Result<String> {
    let link = link.trim();
    if link.contains("shlink:/") {
        let payload = vault_shl::Payload::parse(link).map_err(vault_client::ClientError::from)?;
        return Ok(links::handle_of(&payload)?);
    }
    let prefix = link.to_ascii_lowercase();
    if prefix.len() < 6 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::Usage(format!(
            "{link:?} is not a link handle: give the first 6+ hex digits `vault link list` shows, or the link itself"
        )));
    }
    let client = session.client()?;
    let all = session.rt.block_on(client.links())?;
    let found: Vec<String> = all
        .into_iter()
        .map(|l| l.handle)
        .filter(|h| h.starts_with(&prefix))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CliError::NotFound(format!(
            "you have no link whose handle starts with {prefix} (see vault link list)"
        ))),
        _ => Err(CliError::Usage(format!(
            "{prefix} is the start of several links' handles; give more digits"
        ))),
    }
}

/// `vault link list`.
fn list(session: &mut Session) -> Result<()> {
    session.unlock()?;
    let client = session.client()?;
    let all = session.rt.block_on(client.links())?;
    let now = session.now();
    if session.out.json {
        let v = serde_json::to_value(&all)
            .map_err(|e| CliError::Usage(format!("could not encode the list: {e}")))?;
        return session.out.json(&v);
    }
    if all.is_empty() {
        session
            .out
            .notice("You have no links. Make one with `vault link create --summary`.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|l| {
            vec![
                l.handle.get(..12).unwrap_or(&l.handle).to_string(),
                clean(&l.status),
                super::date(i64::try_from(l.created_at).unwrap_or(0)),
                l.expires_at
                    .map(|t| super::expiry(t, now))
                    .unwrap_or_else(|| "never".into()),
                l.flag
                    .clone()
                    .map(|f| clean(&f))
                    .unwrap_or_else(|| "-".into()),
                l.accesses.to_string(),
                if l.flag.as_deref().is_some_and(|f| f.contains('P')) {
                    format!("{}/{}", l.failed_attempts, l.max_attempts)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    table(
        &[
            "LINK",
            "STATUS",
            "CREATED",
            "EXPIRES",
            "FLAGS",
            "FETCHES",
            "WRONG PASSCODES",
        ],
        &rows,
    )
}

/// `vault link revoke`.
fn revoke(session: &mut Session, link: &str) -> Result<()> {
    session.unlock()?;
    let handle = resolve_handle(session, link)?;
    let client = session.client()?;
    session.rt.block_on(client.revoke_link(&handle))?;
    if session.out.json {
        return session
            .out
            .json(&json!({ "handle": handle, "revoked": true }));
    }
    line(&format!(
        "Link {} revoked: it no longer opens, and its encrypted files were deleted at the relay. \
         Copies a recipient already saved stay with them.",
        handle.get(..12).unwrap_or(&handle)
    ))
}

/// `vault link log`.
fn log(session: &mut Session, link: &str) -> Result<()> {
    session.unlock()?;
    let handle = resolve_handle(session, link)?;
    let client = session.client()?;
    let events = session.rt.block_on(client.link_access_log(&handle))?;
    if session.out.json {
        let v: Vec<Value> = events
            .iter()
            .map(|e| json!({ "at": e.at, "recipient": e.recipient, "outcome": e.outcome }))
            .collect();
        return session.out.json(&v);
    }
    if events.is_empty() {
        session.out.notice("Nobody has fetched this link yet.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let t = i64::try_from(e.at).unwrap_or(0);
            vec![
                format!(
                    "{} {:02}:{:02} UTC",
                    super::date(t),
                    t.rem_euclid(86_400) / 3600,
                    t.rem_euclid(3600) / 60
                ),
                clean(&e.recipient),
                match e.outcome.as_str() {
                    "manifest" | "file" => "opened".to_string(),
                    "wrong_passcode" => "wrong passcode".to_string(),
                    other => clean(other),
                },
            ]
        })
        .collect();
    table(&["TIME", "RECIPIENT (as they said)", "OUTCOME"], &rows)?;
    line("The recipient is what the requester typed; the relay cannot check it.")
}

/// `vault link open`: no identity, no profile.
fn open(out: Output, args: &LinkOpenArgs) -> Result<()> {
    let payload = vault_shl::Payload::parse(&args.link).map_err(vault_client::ClientError::from)?;
    let pass = if payload.flags.passcode {
        Some(passcode(args.passcode_file.as_deref(), false)?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("could not start: {e}")))?;
    let resolved = rt.block_on(links::resolve(
        &args.link,
        &args.recipient,
        pass,
        vault_client::system_now(),
    ))?;
    if let Some(path) = &args.output {
        if let [only] = resolved.files.as_slice() {
            std::fs::write(path, &only.plaintext).map_err(|e| CliError::file(path, e))?;
        } else {
            crate::home::create_private_dir(path)?;
            for (i, f) in resolved.files.iter().enumerate() {
                let p = path.join(format!("file-{}.json", i + 1));
                std::fs::write(&p, &f.plaintext).map_err(|e| CliError::file(&p, e))?;
            }
        }
    } else {
        let mut stdout = std::io::stdout().lock();
        for f in &resolved.files {
            stdout
                .write_all(&f.plaintext)
                .map_err(|e| CliError::file(Path::new("stdout"), e))?;
            stdout
                .write_all(b"\n")
                .map_err(|e| CliError::file(Path::new("stdout"), e))?;
        }
    }
    if !out.quiet {
        eprintln!(
            "Opened {}: {} file(s){}.",
            resolved
                .payload
                .label
                .as_deref()
                .map(clean)
                .unwrap_or_else(|| "a SMART Health Link".into()),
            resolved.files.len(),
            args.output
                .as_ref()
                .map(|p| format!(", written to {}", p.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}
