//! `vault pull`: presents `vault_client::fhir_pull` (fetching from a FHIR
//! server, filing into the vault, the cursor), with progress on stderr.

use std::time::Duration;

use secrecy::{SecretBox, SecretString};
use vault_client::fhir_pull::filing::{self, Holdings, VaultPullError, VaultPullProgress};
use vault_client::fhir_pull::{
    Credentials, FhirSource, Mode, PullOptions, PullProgress, SmartClient,
};
use zeroize::Zeroizing;

use crate::cli::PullArgs;
use crate::error::{CliError, Result};
use crate::output::line;
use crate::records::open_all;
use crate::session::Session;

/// The credentials the flags name, read now (the token never reaches a
/// message).
fn credentials(args: &PullArgs) -> Result<Credentials> {
    if let Some(path) = &args.token_file {
        return Ok(Credentials::Bearer(read_token_file(path)?));
    }
    if let Some(var) = &args.token_env {
        let value = Zeroizing::new(std::env::var(var).map_err(|_| {
            CliError::Usage(format!(
                "the environment variable {var} is not set (or not UTF-8): set it to the bearer token"
            ))
        })?);
        let token = value.trim();
        if token.is_empty() {
            return Err(CliError::Usage(format!(
                "the environment variable {var} is empty: set it to the bearer token"
            )));
        }
        return Ok(Credentials::Bearer(SecretString::from(token.to_owned())));
    }
    if let (Some(id), Some(key)) = (&args.smart_client_id, &args.smart_key) {
        let pem = SecretBox::new(Box::new(
            std::fs::read(key).map_err(|e| CliError::file(key, e))?,
        ));
        let token_url = args
            .smart_token_url
            .as_deref()
            .map(|u| {
                url::Url::parse(u)
                    .map_err(|e| CliError::Usage(format!("--smart-token-url {u:?}: {e}")))
            })
            .transpose()?;
        let client = SmartClient::from_pem(
            id,
            &pem,
            args.smart_kid.clone(),
            args.smart_scope.clone(),
            token_url,
        )?;
        return Ok(Credentials::Smart(client));
    }
    Ok(Credentials::None)
}

/// The bearer token on the first line of `path` (the token never reaches a
/// message).
pub(crate) fn read_token_file(path: &std::path::Path) -> Result<SecretString> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?);
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(CliError::Usage(format!(
            "{} is empty: put the bearer token on its first line",
            path.display()
        )));
    }
    Ok(SecretString::from(token.to_owned()))
}

/// Parses `--bulk-wait`: `90s`, `15min` or `2h`, from one second to a day.
fn parse_wait(s: &str) -> Result<Duration> {
    crate::agent::parse_span(
        "--bulk-wait",
        s,
        (Duration::from_secs(1), Duration::from_secs(86_400)),
    )
}

fn pull_error(e: VaultPullError) -> CliError {
    match e {
        VaultPullError::Fhir(e) => CliError::FhirPull(e),
        VaultPullError::Vault(e) => CliError::Client(e),
        other => CliError::Usage(other.to_string()),
    }
}

/// `vault pull`: fetches the patient's record from a FHIR server and files
/// it in the vault (new records, new versions of changed ones), then keeps
/// the cursor for the next pull in the vault.
pub fn pull(session: &mut Session, args: &PullArgs) -> Result<()> {
    let source = FhirSource::new(&args.fhir, &args.patient)?;
    let credentials = credentials(args)?;
    let mut options = PullOptions::new(if args.bulk {
        Mode::Bulk
    } else {
        Mode::Everything
    });
    options.bulk_wait = parse_wait(&args.bulk_wait)?;
    options.bulk_group = args.group.clone();
    let vault = session.select_vault_for_write()?;
    let secret = session.unlock()?;
    let client = session.client()?;
    let state = session.pull(&vault)?;
    // What the vault holds (FHIR bodies kept to compare versions), and the
    // saved cursor: the ciphertext is downloaded here, as for `vault list`.
    let listing = open_all(session, &state, None, true)?;
    let holdings = Holdings::from_listing(&listing);
    let saved = filing::find_cursor(
        &session.store,
        &state,
        &secret,
        session.now(),
        &listing,
        &source,
    )?;
    drop(listing);
    let out = session.out;
    if let Some(s) = &saved {
        if !args.full {
            out.notice(format!(
                "Asking {} for changes since {} (the last pull; --full fetches everything).",
                source.base_text(),
                s.cursor.since.as_str()
            ));
        }
    }
    let bar = out.progress(0, "pulling", false);
    let mut progress = |p: VaultPullProgress| match p {
        VaultPullProgress::Fetch(PullProgress::ExportStarted) => {
            out.notice("Bulk export started; waiting for the server to prepare the files.");
        }
        VaultPullProgress::Fetch(PullProgress::ExportWaiting {
            progress,
            next_poll,
        }) => {
            bar.set_message(format!(
                "export {}",
                progress.as_deref().unwrap_or("in progress")
            ));
            if !bar.is_hidden() {
                return;
            }
            out.notice(format!(
                "  export in progress{}; next check in {}s",
                progress.map(|p| format!(" ({p})")).unwrap_or_default(),
                next_poll.as_secs_f32().ceil()
            ));
        }
        VaultPullProgress::Fetch(PullProgress::File {
            resource_type,
            index,
            total,
            count,
        }) => {
            bar.set_message(format!("file {index}/{total}"));
            if bar.is_hidden() {
                out.notice(format!(
                    "  reading file {index}/{total}: {resource_type}{}",
                    count
                        .map(|c| format!(" ({c} resources)"))
                        .unwrap_or_default()
                ));
            }
        }
        VaultPullProgress::Fetch(PullProgress::Page { number, resources }) => {
            bar.set_message(format!("page {number}"));
            if bar.is_hidden() {
                out.notice(format!("  page {number}: {resources} resources"));
            }
        }
        VaultPullProgress::Fetch(PullProgress::Retrying {
            what,
            status,
            delay,
        }) => {
            out.notice(format!(
                "  {what}: {}; retrying in {:.1}s",
                status
                    .map(|s| format!("the server answered {s}"))
                    .unwrap_or_else(|| "connection failed".into()),
                delay.as_secs_f32()
            ));
        }
        VaultPullProgress::Filed { fetched, .. } => {
            bar.set_length(fetched);
            bar.set_position(fetched);
        }
        _ => {}
    };
    let result = session.rt.block_on(filing::pull_into_vault(
        &mut session.store,
        &client,
        &secret,
        &vault,
        holdings,
        saved,
        args.full,
        source,
        credentials,
        options,
        &mut progress,
    ));
    bar.finish_and_clear();
    let report = result.map_err(pull_error)?;
    if out.json {
        return out.json(&report);
    }
    line(&format!(
        "Pulled {} resources for Patient/{} from {}: {} added, {} updated (new versions), {} already in the vault.",
        report.fetched,
        report.patient,
        report.source,
        report.filed.added,
        report.filed.updated,
        report.filed.unchanged
    ))?;
    for (name, n) in &report.filed.collections {
        line(&format!("  {name:<16} {n}"))?;
    }
    match &report.cursor {
        Some(c) => line(&format!("The next pull asks for changes since {c}."))?,
        None => line("The server gave no time to resume from: the next pull fetches everything again (and files only what changed).")?,
    }
    line(&format!("Checkpoint: {}", report.checkpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_bounded_durations() {
        assert_eq!(parse_wait("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_wait("30min").ok(), Some(Duration::from_secs(1800)));
        for bad in ["", "0s", "25h", "5", "1d", "-1s"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
    }
}
