//! `vault collections`, `vault list`, `vault show` and `vault open`.

use std::io::{IsTerminal, Write};
use std::path::Path;

use serde_json::{json, Value};
use vault_core::{Keyring, RecordId, VaultState};

use crate::cli::{ListArgs, OpenArgs, ShowArgs};
use crate::error::{CliError, Result};
use crate::home::create_private_dir;
use crate::output::{clean, line, short, table};
use crate::records::{
    check_readable, find_collection, find_named, find_record, open_all, open_record, Listed,
};
use crate::session::{Namer, Session};
use vault_client::reading::names_by_id;
use vault_fhir as fhir;

/// `vault collections`.
pub fn collections(session: &mut Session) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    let names = names_by_id(&state, &secret, session.now());
    let namer = session.namer();
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for c in state.collections() {
        let Some(name) = names.get(&c.id) else {
            continue;
        };
        let members: Vec<String> = c
            .members
            .iter()
            .filter(|(fp, _, _)| *fp != state.owner().fingerprint())
            .map(|(fp, p, _)| format!("{} ({})", namer.name(fp, Some(&state)), p.as_str()))
            .collect();
        rows.push(vec![
            name.clone(),
            c.records.to_string(),
            c.epoch.to_string(),
            if members.is_empty() {
                "-".into()
            } else {
                members.join(", ")
            },
        ]);
        json_rows.push(json!({
            "collection": name,
            "id": c.id.to_hex(),
            "records": c.records,
            "epoch": c.epoch,
            "members": c.members.iter().map(|(fp, p, e)| json!({
                "fingerprint": fp.to_hex(),
                "name": namer.name(fp, Some(&state)),
                "permission": p.as_str(),
                "expires_at": e,
            })).collect::<Vec<_>>(),
        }));
    }
    if session.out.json {
        return session.out.json(&json_rows);
    }
    if rows.is_empty() {
        session
            .out
            .notice("No collections you can read in this vault.");
        return Ok(());
    }
    table(&["COLLECTION", "RECORDS", "EPOCH", "SHARED WITH"], &rows)
}

fn record_type(content_type: &str) -> String {
    fhir::resource_type_of(content_type)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
}

fn listed_json(l: &Listed, coll: &str, namer: &Namer, state: &VaultState) -> Value {
    json!({
        "record": l.summary.id.to_hex(),
        "version": l.summary.version,
        "epoch": state.record(&l.summary.id).map(|r| r.metadata().epoch()).ok(),
        "collection": coll,
        "collection_id": l.summary.collection.to_hex(),
        "title": l.opened.info.title,
        "content_type": l.opened.info.content_type,
        "type": record_type(&l.opened.info.content_type),
        "effective_at": l.opened.info.effective_at,
        "created_at": l.opened.info.created_at,
        "author": l.opened.author.to_hex(),
        "author_name": namer.author(&l.opened.author, state, &l.summary.collection, l.summary.seq),
        "bytes": l.opened.body_len,
        "downloaded": true,
    })
}

/// `vault list`.
pub fn list(session: &mut Session, args: &ListArgs) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    let names = names_by_id(&state, &secret, session.now());
    let collection = args
        .collection
        .as_deref()
        .map(|c| find_named(&names, c))
        .transpose()?;
    let listing = open_all(session, &state, collection.as_ref(), false)?;
    let mut listed = listing.opened;
    let not_downloaded = if args.content_type.is_some() {
        if !listing.not_downloaded.is_empty() {
            session.out.notice(format!(
                "notice: {} large record(s) not on this device could not be filtered by type; `vault sync` fetches them",
                listing.not_downloaded.len()
            ));
        }
        Vec::new()
    } else {
        listing.not_downloaded
    };
    if let Some(t) = &args.content_type {
        let t = t.to_ascii_lowercase();
        listed.retain(|l| l.opened.info.content_type.to_ascii_lowercase().contains(&t));
    }
    let when = |l: &Listed| {
        l.opened
            .info
            .effective_at
            .unwrap_or(i64::try_from(l.opened.info.created_at).unwrap_or(i64::MAX))
    };
    listed.sort_by_key(|l| {
        (
            names
                .get(&l.summary.collection)
                .cloned()
                .unwrap_or_default(),
            when(l),
        )
    });
    if args.newest {
        listed.sort_by_key(|l| std::cmp::Reverse(when(l)));
    }
    let namer = session.namer();
    let shared = "(shared record)".to_owned();
    if session.out.json {
        let mut v: Vec<Value> = listed
            .iter()
            .map(|l| {
                let coll = names.get(&l.summary.collection).unwrap_or(&shared);
                listed_json(l, coll, &namer, &state)
            })
            .collect();
        v.extend(not_downloaded.iter().map(|r| {
            json!({
                "record": r.id.to_hex(),
                "version": r.version,
                "collection": names.get(&r.collection).unwrap_or(&shared),
                "collection_id": r.collection.to_hex(),
                "author": r.author.to_hex(),
                "author_name": namer.author(&r.author, &state, &r.collection, r.seq),
                "ciphertext_bytes": r.ciphertext_len,
                "downloaded": false,
            })
        }));
        return session.out.json(&v);
    }
    if listed.is_empty() && not_downloaded.is_empty() {
        session.out.notice("No records you can read here.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|l| {
            vec![
                short(&l.summary.id.to_hex()),
                super::date(when(l)),
                names.get(&l.summary.collection).unwrap_or(&shared).clone(),
                clean(&record_type(&l.opened.info.content_type)),
                clean(&l.opened.info.title),
                namer.author(
                    &l.opened.author,
                    &state,
                    &l.summary.collection,
                    l.summary.seq,
                ),
            ]
        })
        .collect();
    let mut rows = rows;
    rows.extend(not_downloaded.iter().map(|r| {
        vec![
            short(&r.id.to_hex()),
            "?".into(),
            names.get(&r.collection).unwrap_or(&shared).clone(),
            "?".into(),
            format!(
                "(large record, {} MiB, not on this device: `vault open {}` or `vault sync`)",
                r.ciphertext_len.div_ceil(1024 * 1024),
                short(&r.id.to_hex())
            ),
            namer.author(&r.author, &state, &r.collection, r.seq),
        ]
    }));
    table(
        &["ID", "DATE", "COLLECTION", "TYPE", "TITLE", "AUTHOR"],
        &rows,
    )
}

/// `vault show`.
pub fn show(session: &mut Session, args: &ShowArgs) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    let id = find_record(&state, &args.record)?;
    check_readable(session, &state, &id)?;
    session.ensure_blobs(&state, &[id])?;
    let names = names_by_id(&state, &secret, session.now());
    let mut keyring = Keyring::new(&secret, session.now());
    let mut body = Vec::new();
    let opened = {
        let mut sink = LimitSink {
            buf: &mut body,
            limit: 16 * 1024 * 1024,
        };
        open_record(&session.store, &state, &mut keyring, &id, &mut sink)?
    };
    let namer = session.namer();
    let author = state.identity(&opened.author);
    let seq = state.record(&id).map(|r| r.seq()).unwrap_or_default();
    let author_name = namer.author(&opened.author, &state, &opened.collection, seq);
    let fhir_value: Option<Value> = fhir::resource_type_of(&opened.info.content_type)
        .and_then(|_| serde_json::from_slice(&body).ok());
    let collection = names
        .get(&opened.collection)
        .cloned()
        .unwrap_or_else(|| "(shared record)".into());
    if session.out.json {
        return session.out.json(&json!({
            "record": id.to_hex(),
            "version": opened.version,
            "collection": collection,
            "title": opened.info.title,
            "content_type": opened.info.content_type,
            "effective_at": opened.info.effective_at,
            "created_at": opened.info.created_at,
            "author": opened.author.to_hex(),
            "author_name": author_name,
            "author_role": author.map(|a| a.role().as_str()),
            "author_verified": true,
            "bytes": opened.body_len,
            "summary": fhir_value.as_ref().map(|v| fhir::summary(v).into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()),
            "resource": fhir_value,
        }));
    }
    line(&clean(&opened.info.title))?;
    line(&format!(
        "  Record      {} (version {})",
        id, opened.version
    ))?;
    line(&format!("  Collection  {collection}"))?;
    line(&format!(
        "  Type        {}",
        clean(&opened.info.content_type)
    ))?;
    if let Some(t) = opened.info.effective_at {
        line(&format!("  Date        {}", super::date(t)))?;
    }
    line(&format!(
        "  Written     {} by {}{} — signature verified",
        super::date(i64::try_from(opened.info.created_at).unwrap_or(0)),
        author_name,
        author
            .map(|a| format!(" ({}, {})", clean(a.display_name()), a.role().as_str()))
            .unwrap_or_default()
    ))?;
    line(&format!(
        "  Author key  {}",
        opened.author.digit_groups().join(" ")
    ))?;
    line(&format!("  Size        {} bytes", opened.body_len))?;
    match &fhir_value {
        Some(v) => {
            line("")?;
            for (k, val) in fhir::summary(v) {
                line(&format!("  {:<18} {}", clean(&k), clean(&val)))?;
            }
            if args.full {
                line("")?;
                line(&serde_json::to_string_pretty(v).unwrap_or_default())?;
            }
        }
        None if opened.info.content_type.starts_with("text/") && opened.body_len <= 64 * 1024 => {
            line("")?;
            line(&clean_text(&String::from_utf8_lossy(&body)))?;
        }
        None => {
            line("")?;
            line(&format!(
                "  Save the content with `vault open {} -o FILE`.",
                short(&id.to_hex())
            ))?;
        }
    }
    Ok(())
}

/// Text for the terminal: control characters other than newlines and tabs
/// removed.
fn clean_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if vault_fhir::is_hidden(c) && c != '\n' && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Keeps at most `limit` bytes (what `show` needs), discards the rest.
struct LimitSink<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
}

impl Write for LimitSink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.buf.len());
        self.buf
            .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `vault open`: record contents to stdout, a file, or a directory.
pub fn open(session: &mut Session, args: &OpenArgs) -> Result<()> {
    let secret = session.unlock()?;
    let vault = session.select_vault()?;
    let state = session.refresh(&vault)?;
    let mut keyring = Keyring::new(&secret, session.now());
    let ids: Vec<RecordId> = match &args.collection {
        Some(c) => {
            let coll = find_collection(&state, &secret, session.now(), c)?;
            state
                .records(Some(&coll))
                .into_iter()
                .map(|r| r.id)
                .collect()
        }
        None if args.records.is_empty() => {
            return Err(CliError::Usage(
                "name the records to open, or a collection with --collection".into(),
            ))
        }
        None => args
            .records
            .iter()
            .map(|r| {
                let id = find_record(&state, r)?;
                check_readable(session, &state, &id)?;
                Ok(id)
            })
            .collect::<Result<_>>()?,
    };
    session.ensure_blobs(&state, &ids)?;
    let to_stdout = match &args.output {
        None => true,
        Some(p) => p.as_os_str() == "-",
    };
    if to_stdout {
        if ids.len() != 1 {
            return Err(CliError::Usage(
                "several records: choose a directory with -o DIR".into(),
            ));
        }
        let id = ids
            .first()
            .copied()
            .ok_or_else(|| CliError::NotFound("no record".into()))?;
        let stdout = std::io::stdout();
        if args.output.is_none() && stdout.is_terminal() {
            // To a terminal: text only, cleaned (raw bytes could drive it).
            let mut body = Vec::new();
            let opened = open_record(
                &session.store,
                &state,
                &mut keyring,
                &id,
                LimitSink {
                    buf: &mut body,
                    limit: 16 * 1024 * 1024,
                },
            )?;
            let ct = opened.info.content_type.to_ascii_lowercase();
            if !(ct.starts_with("text/") || ct.contains("json")) {
                return Err(CliError::Usage(format!(
                    "the record is {}; write it to a file with -o FILE (or `-o -` to send the raw bytes to the terminal anyway)",
                    clean(&opened.info.content_type)
                )));
            }
            return line(&clean_text(&String::from_utf8_lossy(&body)));
        }
        let mut lock = stdout.lock();
        open_record(&session.store, &state, &mut keyring, &id, &mut lock)?;
        lock.flush().map_err(|e| CliError::file("<stdout>", e))?;
        return Ok(());
    }
    let out = args.output.as_deref().unwrap_or(Path::new("."));
    let single_file = ids.len() == 1 && args.collection.is_none() && !out.is_dir();
    let mut written = Vec::new();
    for id in &ids {
        let path = if single_file {
            out.to_path_buf()
        } else {
            create_private_dir(out)?;
            out.join(file_name_for(&session.store, &state, &mut keyring, id)?)
        };
        write_record(session, &state, &mut keyring, id, &path)?;
        written.push(json!({ "record": id.to_hex(), "file": path.display().to_string() }));
        if !session.out.json {
            line(&format!("{}  {}", short(&id.to_hex()), path.display()))?;
        }
    }
    if session.out.json {
        return session.out.json(&written);
    }
    Ok(())
}

/// `<id>-<title>.<ext>` for a record.
fn file_name_for(
    store: &dyn vault_core::store::Store,
    state: &VaultState,
    keyring: &mut Keyring,
    id: &RecordId,
) -> Result<String> {
    let opened = open_record(store, state, keyring, id, std::io::sink())?;
    Ok(format!(
        "{}-{}.{}",
        short(&id.to_hex()),
        vault_core::export::safe_component(&opened.info.title),
        vault_core::export::extension(&opened.info.content_type)
    ))
}

/// Writes one record to a new file (temporary file, then renamed: a failed
/// or tampered record leaves nothing behind; an existing file is never
/// overwritten).
fn write_record(
    session: &Session,
    state: &VaultState,
    keyring: &mut Keyring,
    id: &RecordId,
    path: &Path,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| CliError::file(dir, e))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        open_record(&session.store, state, keyring, id, &mut w)?;
        w.flush().map_err(|e| CliError::file(path, e))?;
    }
    tmp.persist_noclobber(path).map_err(|e| {
        CliError::file(
            path,
            std::io::Error::new(
                e.error.kind(),
                format!("{} (refusing to overwrite an existing file)", e.error),
            ),
        )
    })?;
    Ok(())
}
