//! The gateway's configuration file (TOML): the FHIR server it polls and
//! the patients enrolled, each a FHIR patient id mapped to the vault owner
//! who granted the gateway deposit rights.
//!
//! ```toml
//! fhir = "https://fhir.trust.example/r4"   # the trust's FHIR R4 base URL
//! token_file = "/etc/vault-gateway/token"  # optional: a bearer token
//! interval = 300                           # seconds between rounds
//!
//! [[patient]]
//! fhir_id = "pat-0001"
//! # The patient's fingerprint, read out by the patient at enrolment and
//! # compared digit by digit, as contacts are.
//! owner = "3f0c…64 hex digits"
//! # Optional: the vault and the collection, as the patient's share names
//! # them; by default the one vault of `owner` shared with the gateway and
//! # its one collection granted for deposits.
//! vault = "…32 hex digits"
//! collection = "…32 hex digits"
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vault_core::{CollectionId, Fingerprint, VaultId};

use crate::error::{CliError, Result};

/// The largest configuration file read.
const MAX_CONFIG: u64 = 16 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    fhir: String,
    token_file: Option<PathBuf>,
    interval: Option<u64>,
    #[serde(default, rename = "patient")]
    patients: Vec<RawPatient>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPatient {
    fhir_id: String,
    owner: String,
    vault: Option<String>,
    collection: Option<String>,
}

/// One enrolled patient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolment {
    /// The patient's id on the FHIR server (a valid FHIR id).
    pub fhir_id: String,
    /// The vault owner's fingerprint, verified at enrolment.
    pub owner: Fingerprint,
    /// The vault, if the configuration names it.
    pub vault: Option<VaultId>,
    /// The collection, if the configuration names it.
    pub collection: Option<CollectionId>,
}

/// A checked gateway configuration.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The FHIR server's base URL (http or https; no trailing slash).
    pub fhir: String,
    /// A file holding the bearer token for the FHIR server, if it needs one.
    pub token_file: Option<PathBuf>,
    /// Seconds between polling rounds.
    pub interval: u64,
    /// The enrolled patients, in file order.
    pub patients: Vec<Enrolment>,
}

fn valid_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl GatewayConfig {
    /// Reads and checks the configuration at `path`: every problem is
    /// reported with the patient it concerns.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| CliError::file(path, e))?;
        if meta.len() > MAX_CONFIG {
            return Err(CliError::Usage(format!(
                "{} is larger than {} MiB",
                path.display(),
                MAX_CONFIG >> 20
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?;
        Self::parse(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
    }

    /// Parses and checks a configuration's text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| e.to_string())?;
        let fhir = raw.fhir.trim_end_matches('/').to_owned();
        if !(fhir.starts_with("https://") || fhir.starts_with("http://")) {
            return Err(format!("fhir = {fhir:?} is not an http(s) URL"));
        }
        let interval = raw.interval.unwrap_or(300);
        if interval == 0 {
            return Err("interval must be at least 1 second".into());
        }
        let mut seen = BTreeSet::new();
        let mut patients = Vec::with_capacity(raw.patients.len());
        for (i, p) in raw.patients.into_iter().enumerate() {
            let which = format!("patient {} ({:?})", i + 1, p.fhir_id);
            if !valid_fhir_id(&p.fhir_id) {
                return Err(format!(
                    "{which}: fhir_id must be 1 to 64 letters, digits, '-' or '.'"
                ));
            }
            if !seen.insert(p.fhir_id.clone()) {
                return Err(format!("{which}: enrolled twice"));
            }
            let hex: String = p.owner.chars().filter(|c| !c.is_whitespace()).collect();
            let owner = Fingerprint::from_hex(&hex.to_ascii_lowercase()).map_err(|_| {
                format!("{which}: owner must be the patient's 64-digit fingerprint")
            })?;
            let vault = p
                .vault
                .map(|v| VaultId::from_hex(&v.to_ascii_lowercase()))
                .transpose()
                .map_err(|_| format!("{which}: vault must be a 32-digit vault id"))?;
            let collection = p
                .collection
                .map(|c| CollectionId::from_hex(&c.to_ascii_lowercase()))
                .transpose()
                .map_err(|_| format!("{which}: collection must be a 32-digit collection id"))?;
            patients.push(Enrolment {
                fhir_id: p.fhir_id,
                owner,
                vault,
                collection,
            });
        }
        Ok(Self {
            fhir,
            token_file: raw.token_file,
            interval,
            patients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "3f0c3f0c3f0c3f0c3f0c3f0c3f0c3f0c3f0c3f0c3f0c3f0c3f0c3f0c3f0c3f0c";

    #[test]
    fn a_configuration_is_checked_patient_by_patient() {
        let ok = GatewayConfig::parse(&format!(
            "fhir = \"http://127.0.0.1:8080/fhir/\"\n[[patient]]\nfhir_id = \"p-1\"\nowner = \"{FP}\"\n"
        ))
        .unwrap();
        assert_eq!(ok.fhir, "http://127.0.0.1:8080/fhir");
        assert_eq!(ok.interval, 300);
        assert_eq!(ok.patients[0].owner.to_hex(), FP);
        for (bad, says) in [
            ("fhir = \"ftp://x\"".to_owned(), "not an http"),
            (format!("fhir = \"http://x\"\n[[patient]]\nfhir_id = \"a/b\"\nowner = \"{FP}\""), "fhir_id"),
            ("fhir = \"http://x\"\n[[patient]]\nfhir_id = \"a\"\nowner = \"12\"".to_owned(), "fingerprint"),
            (format!("fhir = \"http://x\"\n[[patient]]\nfhir_id = \"a\"\nowner = \"{FP}\"\n[[patient]]\nfhir_id = \"a\"\nowner = \"{FP}\""), "twice"),
            (format!("fhir = \"http://x\"\n[[patient]]\nfhir_id = \"a\"\nowner = \"{FP}\"\nvault = \"zz\""), "vault"),
            ("fhir = \"http://x\"\nunknown = 1".to_owned(), "unknown"),
            ("fhir = \"http://x\"\ninterval = 0".to_owned(), "interval"),
        ] {
            let e = GatewayConfig::parse(&bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
