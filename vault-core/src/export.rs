//! Export to standard formats (no lock-in, brief P6): every record as a
//! standard age file for the patient's own X25519 recipient, plus a FHIR R4
//! bundle of all FHIR records and a manifest, themselves age files. Stock
//! `age`/`rage` decrypt all of it with the patient's `AGE-SECRET-KEY-1…`
//! (which [`crate::keyfile`] files contain).

use std::io::{Read, Write};

use serde_json::{json, Value};

use crate::agefile;
use crate::error::{Error, Result};
use crate::identity::PublicIdentity;
use crate::ids::RecordId;
use crate::record::{OpenedRecord, RecordMetadata};
use crate::vault::{Keyring, VaultState};

/// The content type of FHIR R4 JSON records (RFC 6838 registration by HL7).
pub const FHIR_CONTENT_TYPE: &str = "application/fhir+json";
/// Largest FHIR resource that export keeps in memory for the bundle.
const MAX_FHIR_RECORD: usize = 64 * 1024 * 1024;

/// The `README.txt` an export carries beside its files: how to decrypt them
/// with the stock `age` tool, given the key file `identity.vault.age` that
/// exporters put beside it.
pub const README: &str = "\
This is an export of a vault: every record is a standard age file
(https://age-encryption.org) encrypted to your own key.

1. Recover your age identity from your passphrase-sealed key file:
     age -d -o identity.txt identity.vault.age      (asks for your passphrase)
2. Decrypt any file with it:
     age -d -i identity.txt fhir-bundle.json.age > fhir-bundle.json
     age -d -i identity.txt manifest.json.age > manifest.json
     age -d -i identity.txt records/<collection id>/<record id>.<ext>.age > <file>

fhir-bundle.json is a FHIR R4 Bundle of every FHIR resource; manifest.json
lists every record with its collection, title, dates, verified author (and,
for what an agent wrote, the owner it acted for) and file (file names carry
ids only, so a directory listing reveals no health information). Keep identity.txt secret and delete it when you are done.
";

/// Where exported files go: a directory, an archive, a browser download.
pub trait ExportSink {
    /// Creates a file at `path` (a relative path of safe components made by
    /// this module: letters, digits, `.`, `-`, `_` and `/` separators).
    fn create(&mut self, path: &str) -> Result<Box<dyn Write + '_>>;
}

/// Writes an export below a directory on disk (created if missing; existing
/// files are never overwritten; new files and directories are readable by
/// their owner only on Unix).
#[derive(Debug)]
pub struct DirectorySink {
    root: std::path::PathBuf,
}

impl DirectorySink {
    /// A sink writing below `root`.
    pub fn new(root: impl Into<std::path::PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl ExportSink for DirectorySink {
    fn create(&mut self, path: &str) -> Result<Box<dyn Write + '_>> {
        let mut full = self.root.clone();
        for part in path.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(Error::InvalidInput("unsafe export path"));
            }
            full.push(part);
        }
        if let Some(parent) = full.parent() {
            let mut dirs = std::fs::DirBuilder::new();
            dirs.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                dirs.mode(0o700);
            }
            dirs.create(parent)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&full)?;
        Ok(Box::new(std::io::BufWriter::new(file)))
    }
}

/// Makes a string safe as one path component: letters, digits, `.`, `-`
/// and `_` (others become `_`), at most 64 bytes, never starting with `.`.
pub fn safe_component(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    while out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The usual file extension (without the dot) for a content type; `bin`
/// for unknown ones.
pub fn extension(content_type: &str) -> &'static str {
    let base = content_type.split(';').next().unwrap_or_default().trim();
    match base {
        FHIR_CONTENT_TYPE | "application/json" => "json",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        "text/markdown" => "md",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "application/dicom" => "dcm",
        _ => "bin",
    }
}

/// Whether a content type denotes FHIR JSON.
pub fn is_fhir(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or_default().trim() == FHIR_CONTENT_TYPE
}

/// Decrypts one verified record and re-encrypts it, streaming, as a standard
/// age file for `recipient`.
pub fn record_to_age<R: Read, W: Write>(
    state: &VaultState,
    keyring: &mut Keyring,
    record: &RecordId,
    ciphertext: R,
    recipient: &PublicIdentity,
    out: W,
) -> Result<OpenedRecord> {
    let verified = state.record(record)?;
    let mut w = agefile::encrypt_stream(&recipient.recipient()?, out)?;
    let opened = keyring.open(state, &verified, ciphertext, &mut w)?;
    w.finish()?;
    Ok(opened)
}

/// What [`vault`] exported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records exported.
    pub records: usize,
    /// FHIR resources in the bundle.
    pub fhir_resources: usize,
    /// Paths written, relative to the sink.
    pub files: Vec<String>,
    /// Records that could not be opened and were left out (also listed in
    /// the manifest under `unreadable`). An export with any is incomplete:
    /// presenters say so and fail.
    pub unreadable: Vec<UnreadableRecord>,
}

/// A record an export left out because it could not be opened: its
/// ciphertext is not what its author signed, or its key or inner header is
/// faulty (a faulty or malicious writer's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableRecord {
    /// The record.
    pub record: RecordId,
    /// The author of its current version, from the verified log.
    pub author: crate::identity::Fingerprint,
    /// Why it could not be opened (a vault-core error code, Appendix B).
    pub code: &'static str,
}

/// Exports every live record of the vault that `keyring` can open to `sink`,
/// as age files for `recipient` (normally the patient), plus
/// `fhir-bundle.json.age` (a FHIR R4 `collection` Bundle of every FHIR
/// resource) and `manifest.json.age`. `ciphertext` supplies each record's
/// ciphertext (from the local store or the relay); a record it cannot
/// supply fails the export with [`Error::Missing`]. A record whose
/// ciphertext or key does not open ([`Error::is_record_failure`]) is left
/// out and reported in [`ExportSummary::unreadable`] and in the manifest,
/// so one faulty record never holds the rest of the vault hostage; nothing
/// is skipped silently.
pub fn vault(
    state: &VaultState,
    keyring: &mut Keyring,
    recipient: &PublicIdentity,
    mut ciphertext: impl FnMut(&RecordMetadata) -> Result<Box<dyn Read>>,
    sink: &mut dyn ExportSink,
) -> Result<ExportSummary> {
    let age_recipient = recipient.recipient()?;
    let mut summary = ExportSummary::default();
    let mut bundle_entries: Vec<Value> = Vec::new();
    let mut manifest: Vec<Value> = Vec::new();
    let mut unreadable: Vec<Value> = Vec::new();
    for coll in state.collections() {
        let name = state.collection_name(keyring, &coll.id)?;
        // Paths carry ids only: collection names and record titles are
        // health information, and exports get copied to cloud drives whose
        // file listings are not encrypted. The (encrypted) manifest maps
        // each file to its collection and title.
        let dir = format!("records/{}", coll.id.to_hex());
        for rec in state.records(Some(&coll.id)) {
            let verified = state.record(&rec.id)?;
            let input = ciphertext(verified.metadata())?;
            let mut plain = Vec::new();
            let opened = match keyring.open(state, &verified, input, &mut plain) {
                Ok(opened) => opened,
                Err(e) if e.is_record_failure() => {
                    let author = verified.metadata().author();
                    unreadable.push(json!({
                        "record": rec.id.to_hex(),
                        "collection": name,
                        "author": author.to_hex(),
                        "author_name": state.identity(&author).map(|i| i.display_name().to_owned()),
                        "error": e.code(),
                    }));
                    summary.unreadable.push(UnreadableRecord {
                        record: rec.id,
                        author,
                        code: e.code(),
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            let path = format!(
                "{dir}/{}.{}.age",
                rec.id.to_hex(),
                extension(&opened.info.content_type)
            );
            let agency = state.acting_for_owner(&opened.author, &coll.id, verified.seq());
            if is_fhir(&opened.info.content_type) && plain.len() <= MAX_FHIR_RECORD {
                if let Ok(v) = serde_json::from_slice::<Value>(&plain) {
                    collect_fhir(v, &mut bundle_entries);
                }
            }
            let mut out = sink.create(&path)?;
            let mut w = agefile::encrypt_stream(&age_recipient, &mut out)?;
            w.write_all(&plain)?;
            w.finish()?;
            out.flush()?;
            drop(out);
            manifest.push(json!({
                "record": rec.id.to_hex(),
                "version": opened.version,
                "collection": name,
                "title": opened.info.title,
                "content_type": opened.info.content_type,
                "created_at": opened.info.created_at,
                "effective_at": opened.info.effective_at,
                "author": opened.author.to_hex(),
                "author_name": state.identity(&opened.author).map(|i| i.display_name().to_owned()),
                // Written by an agent acting for the owner (format.md §8.10).
                "on_behalf_of": agency.map(|_| state.owner().fingerprint().to_hex()),
                "delegation": agency.map(|d| d.to_hex()),
                "file": path,
            }));
            summary.files.push(path);
            summary.records += 1;
        }
    }
    summary.fhir_resources = bundle_entries.len();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": bundle_entries,
    });
    let manifest = json!({
        "vault": state.vault().to_hex(),
        "checkpoint": state.head().code(),
        "owner": state.owner().fingerprint().to_hex(),
        "records": manifest,
        "unreadable": unreadable,
    });
    for (path, value) in [
        ("fhir-bundle.json.age", bundle),
        ("manifest.json.age", manifest),
    ] {
        let bytes = serde_json::to_vec_pretty(&value)
            .map_err(|_| Error::InvalidInput("JSON encoding failed"))?;
        let mut out = sink.create(path)?;
        out.write_all(&agefile::encrypt(&age_recipient, &bytes)?)?;
        out.flush()?;
        summary.files.push(path.to_owned());
    }
    Ok(summary)
}

/// Adds a FHIR resource (or every resource of a Bundle) as bundle entries.
fn collect_fhir(v: Value, entries: &mut Vec<Value>) {
    match v.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => {
            if let Some(Value::Array(items)) = v.get("entry") {
                for item in items {
                    if let Some(res) = item.get("resource") {
                        collect_fhir(res.clone(), entries);
                    }
                }
            }
        }
        Some(rt) => {
            let full_url = v
                .get("id")
                .and_then(Value::as_str)
                .map(|id| format!("urn:uuid:{id}"))
                .unwrap_or_else(|| format!("urn:vault:{rt}:{}", entries.len()));
            entries.push(json!({ "fullUrl": full_url, "resource": v }));
        }
        None => {}
    }
}
