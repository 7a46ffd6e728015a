//! `vault add` and `vault import`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use serde_json::{json, Value};
use vault_core::RecordInfo;

use crate::cli::{AddArgs, DeleteArgs, ImportArgs, PurgeArgs};
use crate::error::{CliError, Result};
use crate::output::{clean, line, short};
use crate::records::{add_records, add_stream, ensure_collections, find_record, open_all};
use crate::session::{system_now, Session};
use vault_client::records::FhirImport;
use vault_fhir as fhir;

/// Largest JSON file read into memory (a FHIR resource or bundle).
const MAX_JSON: u64 = 512 * 1024 * 1024;

/// What a file is, by its first bytes and name
/// ([`vault_client::content::content_type`], shared with the web app).
fn sniff(head: &[u8], path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    vault_client::content::content_type(head, name)
}

/// Largest input read from stdin (kept in memory, never spooled to disk
/// in clear).
const MAX_STDIN: u64 = 64 * 1024 * 1024;

/// Where an input's bytes are.
enum Source {
    /// A regular file.
    File(File),
    /// Standard input, read into memory (zeroized when dropped).
    Memory(Arc<Zeroizing<Vec<u8>>>),
}

/// A file to add, with its length.
struct Input {
    source: Source,
    len: u64,
    name: String,
    path: PathBuf,
}

impl Input {
    /// A reader from the start of the input.
    fn reader(&self) -> std::io::Result<Box<dyn Read>> {
        Ok(match &self.source {
            Source::File(f) => {
                let mut f = f.try_clone()?;
                f.seek(SeekFrom::Start(0))?;
                Box::new(std::io::BufReader::with_capacity(1 << 20, f))
            }
            Source::Memory(bytes) => Box::new(SharedReader {
                bytes: bytes.clone(),
                at: 0,
            }),
        })
    }

    /// The whole input, if it is at most `max` bytes.
    fn read_all(&self, max: u64) -> Result<Option<Vec<u8>>> {
        if self.len > max {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        self.reader()
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(|e| CliError::file(&self.path, e))?;
        Ok(Some(bytes))
    }
}

/// Reads shared in-memory bytes without copying them.
struct SharedReader {
    bytes: Arc<Zeroizing<Vec<u8>>>,
    at: usize,
}

impl Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(rest.get(..n).unwrap_or_default());
        self.at += n;
        Ok(n)
    }
}

fn open_input(path: &Path) -> Result<Input> {
    if path.as_os_str() == "-" {
        let mut bytes = Zeroizing::new(Vec::new());
        let len = std::io::stdin()
            .lock()
            .take(MAX_STDIN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| CliError::file("<stdin>", e))? as u64;
        if len > MAX_STDIN {
            return Err(CliError::Usage(format!(
                "standard input is larger than {} MiB; save it to a file and add the file (it is streamed)",
                MAX_STDIN >> 20
            )));
        }
        return Ok(Input {
            source: Source::Memory(Arc::new(bytes)),
            len,
            name: "stdin".into(),
            path: path.to_path_buf(),
        });
    }
    let file = File::open(path).map_err(|e| CliError::file(path, e))?;
    let meta = file.metadata().map_err(|e| CliError::file(path, e))?;
    if !meta.is_file() {
        return Err(CliError::Usage(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(Input {
        source: Source::File(file),
        len: meta.len(),
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into()),
        path: path.to_path_buf(),
    })
}

/// `vault add`.
pub fn add(session: &mut Session, args: &AddArgs) -> Result<()> {
    if args.files.len() > 1 && (args.title.is_some() || args.replace.is_some()) {
        return Err(CliError::Usage(
            "--title and --replace apply to one file at a time".into(),
        ));
    }
    let stdin_count = args.files.iter().filter(|p| p.as_os_str() == "-").count();
    if stdin_count > 1 {
        return Err(CliError::Usage("`-` (stdin) can be given once".into()));
    }
    if stdin_count == 1 && args.title.is_none() && args.replace.is_none() {
        return Err(CliError::Usage(
            "a record from stdin needs a title: pass --title".into(),
        ));
    }
    // Every input opened before anything is added: a typo in the third
    // file must not leave the first two added.
    let inputs: Vec<Input> = args
        .files
        .iter()
        .map(|p| open_input(p))
        .collect::<Result<_>>()?;
    let vault = session.select_vault_for_write()?;
    let (state, collections) = ensure_collections(session, &vault, &[args.collection.as_str()])?;
    let collection = *collections
        .get(&args.collection)
        .ok_or_else(|| CliError::NotFound(format!("collection {:?}", args.collection)))?;
    let replace = args
        .replace
        .as_deref()
        .map(|r| find_record(&state, r))
        .transpose()?;
    let mut added = Vec::new();
    for input in &inputs {
        let path = &input.path;
        let mut head = vec![0u8; 512];
        let n = input
            .reader()
            .and_then(|mut r| read_up_to(&mut r, &mut head))
            .map_err(|e| CliError::file(path, e))?;
        head.truncate(n);
        let mut content_type = args
            .content_type
            .clone()
            .unwrap_or_else(|| sniff(&head, path).to_owned());
        let mut title = args.title.clone();
        let mut effective_at = None;
        if content_type == "application/json" {
            if let Some(bytes) = input.read_all(MAX_JSON)? {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    if let Some(rt) = v.get("resourceType").and_then(Value::as_str) {
                        if rt == "Bundle" {
                            return Err(CliError::Usage(format!(
                                "{} is a FHIR Bundle: use `vault import {}` to add each resource as a record",
                                path.display(),
                                path.display()
                            )));
                        }
                        content_type = fhir::content_type(rt, v.get("id").and_then(Value::as_str));
                        title = title.or_else(|| Some(fhir::title(&v)));
                        effective_at = fhir::effective_at(&v);
                    }
                }
            }
        }
        let info = RecordInfo {
            content_type,
            title: clean(&title.unwrap_or_else(|| input.name.clone())),
            created_at: system_now(),
            effective_at,
        };
        let bar = session.out.progress(input.len, "sealing", true);
        let mut reopen = || input.reader();
        let result = add_stream(
            session,
            &vault,
            &collection,
            replace,
            &info,
            &mut reopen,
            input.len,
            &bar,
        );
        bar.finish_and_clear();
        let (_, metadata) = result?;
        if !session.out.json {
            line(&format!(
                "Added {:?} to {} as record {} (version {}, {} bytes sealed into {}).",
                info.title,
                args.collection,
                short(&metadata.record().to_hex()),
                metadata.version(),
                input.len,
                metadata.ciphertext_len()
            ))?;
        }
        added.push(json!({
            "record": metadata.record().to_hex(),
            "version": metadata.version(),
            "collection": args.collection,
            "title": info.title,
            "content_type": info.content_type,
            "bytes": input.len,
        }));
    }
    if session.out.json {
        return session.out.json(&added);
    }
    Ok(())
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `vault import`: a FHIR R4 bundle, one record per resource, sorted into
/// collections by category.
pub fn import(session: &mut Session, args: &ImportArgs) -> Result<()> {
    let path = &args.bundle;
    let len = std::fs::metadata(path)
        .map_err(|e| CliError::file(path, e))?
        .len();
    if len > MAX_JSON {
        return Err(CliError::Usage(format!(
            "{} is larger than {} MiB; split the bundle",
            path.display(),
            MAX_JSON >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| CliError::file(path, e))?;
    let resources = fhir::split_bundle(&bytes)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    let vault = session.select_vault_for_write()?;
    let summary = import_resources(session, &vault, resources, args.again)?;
    if session.out.json {
        return session.out.json(&summary);
    }
    let (added, skipped) = (summary.added, summary.skipped);
    line(&format!(
        "Imported {added} resources from {}{}.",
        path.display(),
        if skipped > 0 {
            format!(" ({skipped} already in the vault were skipped)")
        } else {
            String::new()
        }
    ))?;
    for (name, n) in &summary.collections {
        line(&format!("  {name:<16} {n}"))?;
    }
    line(&format!("Checkpoint: {}", summary.checkpoint))
}

/// What an import did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportSummary {
    /// The vault.
    pub vault: String,
    /// Resources added.
    pub added: usize,
    /// Resources skipped because the vault had them already.
    pub skipped: usize,
    /// Resources added per collection.
    pub collections: BTreeMap<String, usize>,
    /// The vault's checkpoint code afterwards.
    pub checkpoint: String,
}

/// Imports parsed resources into a vault (skipping those already there
/// unless `again`). Used by `vault import` and the benchmark.
pub fn import_resources(
    session: &mut Session,
    vault: &vault_core::VaultId,
    resources: Vec<fhir::Resource>,
    again: bool,
) -> Result<ImportSummary> {
    let existing: BTreeSet<(String, String)> = if again {
        BTreeSet::new()
    } else {
        existing_resources(session, vault)?
    };
    // Skip what the vault has, and repeats within the bundle itself.
    let plan = FhirImport::plan(resources, existing);
    let (mut state, collections) = ensure_collections(session, vault, &plan.collection_names())?;
    if !plan.fresh.is_empty() {
        let items = plan.records(&collections, system_now())?;
        let bar = session.out.progress(items.len() as u64, "importing", false);
        let result = add_records(session, state, items, &bar);
        bar.finish_and_clear();
        state = result?.0;
    }
    Ok(ImportSummary {
        vault: vault.to_hex(),
        added: plan.per_collection.values().sum(),
        skipped: plan.skipped,
        collections: plan.per_collection,
        checkpoint: state.head().code(),
    })
}

/// (resourceType, id) of the FHIR records already in the vault that this
/// device can read.
fn existing_resources(
    session: &mut Session,
    vault: &vault_core::VaultId,
) -> Result<BTreeSet<(String, String)>> {
    let state = session.pull(vault)?;
    let listing = open_all(session, &state, None, false)?;
    Ok(listing
        .opened
        .iter()
        .filter_map(|l| fhir::resource_key(&l.opened.info.content_type))
        .collect())
}

/// `vault delete`: a signed deletion of a record's current version.
pub fn delete(session: &mut Session, args: &DeleteArgs) -> Result<()> {
    session.unlock()?;
    let vault = session.select_vault_for_write()?;
    let client = session.client_for(&vault)?;
    let state = session.pull(&vault)?;
    let record = find_record(&state, &args.record)?;
    let state = session.rt.block_on(vault_client::records::delete(
        &mut session.store,
        &client,
        &vault,
        &record,
        args.purge,
    ))?;
    if session.out.json {
        return session.out.json(&json!({
            "deleted": record.to_hex(),
            "purged": args.purge,
            "checkpoint": state.head().code(),
        }));
    }
    if args.purge {
        return line(&format!(
            "Deleted record {} and destroyed every version of it: the relay and your devices delete the ciphertext (copies already downloaded stay where they are).",
            short(&record.to_hex())
        ));
    }
    line(&format!(
        "Deleted record {} (the deletion is signed and kept in the vault's history).",
        short(&record.to_hex())
    ))
}

/// `vault purge`: destroys a record's earlier versions for good.
pub fn purge(session: &mut Session, args: &PurgeArgs) -> Result<()> {
    session.unlock()?;
    let vault = session.select_vault_for_write()?;
    let client = session.client_for(&vault)?;
    let state = session.pull(&vault)?;
    let record = find_record(&state, &args.record)?;
    let state = session.rt.block_on(vault_client::records::purge(
        &mut session.store,
        &client,
        &vault,
        &record,
    ))?;
    let purged = state.purged_ciphertexts(&record).len();
    if session.out.json {
        return session.out.json(&json!({
            "purged": record.to_hex(),
            "versions": purged,
            "checkpoint": state.head().code(),
        }));
    }
    line(&format!(
        "Destroyed {purged} earlier version(s) of record {}: the relay and your devices delete their ciphertext (copies already downloaded stay where they are).",
        short(&record.to_hex())
    ))
}

#[cfg(test)]
mod tests {
    use super::sniff;
    use std::path::Path;

    #[test]
    fn the_file_name_not_the_directory_decides() {
        assert_eq!(
            sniff(b"x", Path::new("notes.v2/scan.dcm")),
            "application/dicom"
        );
        assert_eq!(sniff(b"x", Path::new("notes.md/readme")), "text/plain");
    }
}
