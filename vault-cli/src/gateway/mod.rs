//! `vault gateway`: a hospital trust's gateway that polls its FHIR server
//! and deposits each enrolled patient's new and changed resources into the
//! patient's vault, with write-only deposit rights (`docs/format.md` §5.5):
//! it can read nothing in any vault, not even what it deposited.
//!
//! Each round, for each enrolled patient: join (or refresh) the patient's
//! vault, verifying its owner against the enrolment's fingerprint; find
//! the collection the patient granted for deposits; settle what an earlier,
//! interrupted round left pending ([`ledger::Ledger::settle`]); fetch what
//! changed on the FHIR server since the patient's cursor; deposit each new
//! resource as a new record and each changed one as a new version of its
//! record; then move the cursor. A patient's failure is reported and the
//! others go on. Exactly once by (resource type, id, version), across
//! crashes: see [`ledger`].
//!
//! Logs and the status file carry counts, FHIR patient ids and errors,
//! never clinical content.

pub mod config;
pub mod ledger;
pub mod source;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use vault_client::fhir_pull::filing;
use vault_client::records::{add_records, NewRecord};
use vault_core::{CollectionId, RecordId, RecordTarget, SecretIdentity, VaultId, VaultState};

use crate::cli::GatewayArgs;
use crate::error::{CliError, Result};
use crate::output::line;
use crate::session::Session;
use config::{Enrolment, GatewayConfig};
use ledger::{Entry, Ledger};
use source::{Changes, Source};

/// What one round did for one patient.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PatientReport {
    /// The patient's FHIR id.
    pub patient: String,
    /// Resources deposited as new records.
    pub added: usize,
    /// Changed resources deposited as new versions of their records.
    pub updated: usize,
    /// Resources the vault already had at this version.
    pub unchanged: usize,
    /// Resources skipped because the server gave them no id.
    pub without_id: usize,
    /// Records an interrupted round had appended (now in the ledger).
    pub recovered: usize,
    /// What went wrong, if anything (the other patients went on).
    pub error: Option<String>,
    /// Resources deposited for this patient over the gateway's life.
    pub total: u64,
}

/// What one round did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RoundReport {
    /// The round's number since the gateway started (1 for the first).
    pub round: u64,
    /// When it started and ended, seconds since the Unix epoch.
    pub started_at: u64,
    /// When it ended.
    pub finished_at: u64,
    /// Per patient, in configuration order.
    pub patients: Vec<PatientReport>,
    /// Sums over the patients.
    pub added: usize,
    /// Sum of [`PatientReport::updated`].
    pub updated: usize,
    /// Patients that failed this round.
    pub failed: usize,
}

/// `vault gateway`.
pub fn run(session: &mut Session, args: &GatewayArgs) -> Result<()> {
    let config = GatewayConfig::load(&args.config)?;
    if config.patients.is_empty() {
        return Err(CliError::Usage(format!(
            "{} enrols no patient: add a [[patient]] table for each patient who granted the gateway deposit rights",
            args.config.display()
        )));
    }
    let state_dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => session.home.data_dir().join("gateway"),
    };
    crate::home::create_private_dir(&state_dir)?;
    let mut ledger = Ledger::open(&state_dir.join("ledger.sqlite"))?;
    let secret = session.unlock()?;
    let token = config
        .token_file
        .as_deref()
        .map(crate::commands::pulling::read_token_file)
        .transpose()?;
    let source = source::FhirServer::new(&config.fhir, token)?;
    let interval = args.interval.unwrap_or(config.interval);
    let mut round = 0u64;
    loop {
        round += 1;
        let report = run_round(session, &secret, &config, &mut ledger, &source, round)?;
        if let Some(path) = &args.status {
            write_status(path, &report)?;
        }
        if session.out.json {
            session.out.json(&report)?;
        } else {
            for p in &report.patients {
                line(&describe(p))?;
            }
            line(&format!(
                "Round {round}: {} added, {} updated, {} patient(s) failed.",
                report.added, report.updated, report.failed
            ))?;
        }
        if args.once {
            return if report.failed > 0 {
                Err(CliError::Usage(format!(
                    "{} of {} patient(s) failed this round (see above); what was deposited is kept, and the next round resumes",
                    report.failed,
                    report.patients.len()
                )))
            } else {
                Ok(())
            };
        }
        std::thread::sleep(std::time::Duration::from_secs(interval));
    }
}

fn describe(p: &PatientReport) -> String {
    let mut s = format!(
        "{}: {} added, {} updated, {} unchanged",
        p.patient, p.added, p.updated, p.unchanged
    );
    if p.recovered > 0 {
        s.push_str(&format!(
            ", {} recovered from an interrupted round",
            p.recovered
        ));
    }
    if p.without_id > 0 {
        s.push_str(&format!(", {} without an id skipped", p.without_id));
    }
    if let Some(e) = &p.error {
        s.push_str(&format!(" — failed: {e}"));
    }
    s
}

/// Writes the status file atomically (a reader never sees half of it).
fn write_status(path: &Path, report: &RoundReport) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| CliError::file(dir, e))?;
    serde_json::to_writer_pretty(&mut tmp, report)
        .map_err(|e| CliError::Usage(format!("status: {e}")))?;
    tmp.persist(path)
        .map_err(|e| CliError::file(path, e.error))
        .map(drop)
}

/// One polling round over every enrolled patient: each patient's failure
/// is in its report; only an unreachable relay stops the round.
pub fn run_round<S: Source>(
    session: &mut Session,
    secret: &Arc<SecretIdentity>,
    config: &GatewayConfig,
    ledger: &mut Ledger,
    source: &S,
    round: u64,
) -> Result<RoundReport> {
    let mut report = RoundReport {
        round,
        started_at: vault_client::system_now(),
        ..RoundReport::default()
    };
    for enrolment in &config.patients {
        let mut p = PatientReport {
            patient: enrolment.fhir_id.clone(),
            ..PatientReport::default()
        };
        if let Err(e) = deposit_patient(session, secret, enrolment, ledger, source, &mut p) {
            if e.is_unreachable() {
                // The relay itself is down: no patient can be served.
                return Err(e);
            }
            p.error = Some(e.to_string());
            report.failed += 1;
        }
        p.total = ledger.count(&enrolment.fhir_id)?;
        report.added += p.added;
        report.updated += p.updated;
        report.patients.push(p);
    }
    report.finished_at = vault_client::system_now();
    Ok(report)
}

/// The vault and collection an enrolment deposits into, the vault joined
/// (its owner checked against the enrolment) and up to date.
fn target(
    session: &mut Session,
    secret: &SecretIdentity,
    enrolment: &Enrolment,
) -> Result<(VaultId, CollectionId, VaultState)> {
    let client = session.client()?;
    let vault = match enrolment.vault {
        Some(v) => v,
        None => {
            let listing = session.rt.block_on(client.inbox_listing())?;
            let vaults: Vec<VaultId> = listing
                .vaults
                .iter()
                .filter(|v| v.owner == enrolment.owner)
                .map(|v| v.vault)
                .collect();
            match vaults.as_slice() {
                [one] => *one,
                [] => {
                    return Err(CliError::NotFound(format!(
                        "no vault of {} is shared with this gateway: the patient grants it with `vault share COLLECTION --with GATEWAY --deposit`",
                        short_fp(&enrolment.owner)
                    )))
                }
                _ => {
                    return Err(CliError::Usage(format!(
                        "{} shares {} vaults with this gateway; name one with vault = \"…\" in the configuration",
                        short_fp(&enrolment.owner),
                        vaults.len()
                    )))
                }
            }
        }
    };
    let state = session.rt.block_on(vault_client::sync::join_vault(
        &mut session.store,
        &client,
        &vault,
        &enrolment.owner,
    ))?;
    let deposits: Vec<CollectionId> = state
        .access(&secret.fingerprint(), session.now())
        .collections
        .into_iter()
        .filter(|(_, a)| a.permission.may_add())
        .map(|(id, _)| id)
        .collect();
    let collection = match (enrolment.collection, deposits.as_slice()) {
        (Some(c), _) if deposits.contains(&c) => c,
        (Some(c), _) => {
            return Err(CliError::NotFound(format!(
                "the gateway may not deposit into collection {c} of this vault (no grant, or it was revoked or expired)"
            )))
        }
        (None, [one]) => *one,
        (None, []) => {
            return Err(CliError::Core(vault_core::Error::AccessDenied(
                "the gateway may deposit into no collection of this vault (no grant, or it was revoked or expired)",
            )))
        }
        (None, several) => {
            return Err(CliError::Usage(format!(
                "the gateway may deposit into {} collections of this vault; name one with collection = \"…\"",
                several.len()
            )))
        }
    };
    Ok((vault, collection, state))
}

fn short_fp(fp: &vault_core::Fingerprint) -> String {
    fp.to_hex().chars().take(16).collect()
}

/// A resource as the server gave it, with what decides whether it is
/// newer than what was deposited: the same rules as `vault pull`
/// ([`filing::meta_of`], [`filing::is_newer`], [`filing::resource_digest`]).
struct Pulled {
    resource: vault_fhir::Resource,
    version_id: Option<String>,
    last_updated: Option<String>,
    digest: [u8; 32],
}

impl Pulled {
    fn new(resource: vault_fhir::Resource) -> Self {
        let (version_id, last_updated) = filing::meta_of(&resource.json);
        let digest = filing::resource_digest(&resource.json);
        Self {
            resource,
            version_id,
            last_updated,
            digest,
        }
    }

    fn version(&self) -> (Option<&str>, Option<&str>) {
        (self.version_id.as_deref(), self.last_updated.as_deref())
    }

    fn is_newer_than(&self, held: &(Option<&str>, Option<&str>)) -> bool {
        filing::is_newer(self.version(), *held)
    }
}

fn deposit_patient<S: Source>(
    session: &mut Session,
    secret: &Arc<SecretIdentity>,
    enrolment: &Enrolment,
    ledger: &mut Ledger,
    source: &S,
    report: &mut PatientReport,
) -> Result<()> {
    let patient = enrolment.fhir_id.as_str();
    let (_, collection, state) = target(session, secret, enrolment)?;
    let (landed, _) = ledger.settle(patient, &state, &secret.fingerprint())?;
    report.recovered = landed;
    let since = ledger.cursor(patient)?;
    let Changes { resources, next } = session
        .rt
        .block_on(source.changes(patient, since.as_deref()))?;
    // The newest of each resource in this batch, in first-seen order.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut newest: BTreeMap<(String, String), Pulled> = BTreeMap::new();
    for r in resources {
        let Some(id) = r.id.clone() else {
            report.without_id += 1;
            continue;
        };
        let key = (r.resource_type.clone(), id);
        let pulled = Pulled::new(r);
        match newest.get(&key) {
            Some(held) if !pulled.is_newer_than(&held.version()) => {}
            Some(_) => {
                newest.insert(key, pulled);
            }
            None => {
                order.push(key.clone());
                newest.insert(key, pulled);
            }
        }
    }
    let now = vault_client::system_now();
    let mut entries = Vec::new();
    let mut items = Vec::new();
    for key in &order {
        let Some(pulled) = newest.remove(key) else {
            continue;
        };
        let (target, record_version) = match ledger.deposited(patient, &key.0, &key.1)? {
            Some(e)
                if e.digest == pulled.digest
                    || !pulled
                        .is_newer_than(&(e.version_id.as_deref(), e.last_updated.as_deref())) =>
            {
                report.unchanged += 1;
                continue;
            }
            // A changed resource: the next version of its record, unless
            // the patient deleted that record (then a new one).
            Some(e) => match state.record(&e.record) {
                Ok(current) => {
                    report.updated += 1;
                    (
                        RecordTarget::Next(e.record),
                        current.metadata().version().saturating_add(1),
                    )
                }
                Err(_) => {
                    report.added += 1;
                    (RecordTarget::New(RecordId::random()), 1)
                }
            },
            None => {
                report.added += 1;
                (RecordTarget::New(RecordId::random()), 1)
            }
        };
        entries.push(Entry {
            resource_type: key.0.clone(),
            resource_id: key.1.clone(),
            version_id: pulled.version_id.clone(),
            last_updated: pulled.last_updated.clone(),
            digest: pulled.digest,
            record: target.record(),
            record_version,
        });
        items.push(NewRecord {
            target: Some(target),
            ..NewRecord::fhir(&pulled.resource, collection, now)
        });
    }
    if !items.is_empty() {
        ledger.begin(patient, &entries)?;
        let client = session.client()?;
        session.rt.block_on(add_records(
            &mut session.store,
            &client,
            secret,
            state,
            &items,
            |_| {},
        ))?;
        ledger.commit(patient, &entries)?;
    }
    if let Some(next) = next {
        ledger.set_cursor(patient, &next)?;
    }
    Ok(())
}
