//! The commands: each takes its parsed arguments and a session, prints its
//! result (text or `--json`) and returns a typed error.

mod agencies;
mod devices;
pub mod identity;
mod links;
mod pairing;
pub(crate) mod pulling;
mod reading;
mod relays;
mod sharing;
mod vaults;
pub mod writing;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::error::Result;
use crate::home::Home;
use crate::output::Output;
use crate::session::{Options, Session};

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let out = Output {
        json: cli.global.json,
        quiet: cli.global.quiet,
    };
    let opts = Options::from_args(&cli.global);
    let home = Home::locate()?;
    let session = || Session::open(home.clone(), out, opts.clone());
    match cli.command {
        Command::Init(args) => identity::init(&home, out, &opts, &args),
        Command::Whoami(args) => identity::whoami(&home, out, &opts, &args),
        Command::Contacts(cmd) => identity::contacts(&mut session()?, cmd),
        Command::Create => vaults::create(&mut session()?),
        Command::Sync(args) => vaults::sync(&mut session()?, &args),
        Command::Vaults => vaults::list(&mut session()?),
        Command::Relays(args) => relays::run(&mut session()?, &args),
        Command::Inbox(args) => vaults::inbox(&mut session()?, &args),
        Command::Collections => reading::collections(&mut session()?),
        Command::Add(args) => writing::add(&mut session()?, &args),
        Command::Import(args) => writing::import(&mut session()?, &args),
        Command::Pull(args) => pulling::pull(&mut session()?, &args),
        Command::List(args) => reading::list(&mut session()?, &args),
        Command::Show(args) => reading::show(&mut session()?, &args),
        Command::Open(args) => reading::open(&mut session()?, &args),
        Command::Delete(args) => writing::delete(&mut session()?, &args),
        Command::Purge(args) => writing::purge(&mut session()?, &args),
        Command::Share(args) => sharing::share(&mut session()?, &args),
        Command::Revoke(args) => sharing::revoke(&mut session()?, &args),
        Command::Access => sharing::access(&mut session()?),
        Command::Agents(cmd) => agencies::run(&mut session()?, cmd),
        Command::Devices(cmd) => devices::run(&mut session()?, cmd),
        Command::Export(args) => sharing::export(&mut session()?, &args),
        Command::Verify(args) => sharing::verify(&mut session()?, &args),
        Command::Link(cmd) => links::run(session, out, cmd),
        Command::Unlock(args) => identity::unlock(&mut session()?, &args),
        Command::Lock => identity::lock(&home, out),
        Command::Gateway(args) => crate::gateway::run(&mut session()?, &args),
        Command::AgentServe(args) => identity::agent_serve(&args),
        Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "vault",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// Formats Unix seconds as a UTC date for people.
pub(crate) fn date(t: i64) -> String {
    vault_fhir::format_date(t)
}

/// Formats an expiry for people: the UTC date and time, and how far away
/// it is.
pub(crate) fn expiry(t: u64, now: u64) -> String {
    let secs = i64::try_from(t).unwrap_or(i64::MAX);
    let time = format!(
        "{} {:02}:{:02} UTC",
        date(secs),
        (secs.rem_euclid(86_400)) / 3600,
        (secs.rem_euclid(3600)) / 60
    );
    let left = t.saturating_sub(now);
    let rel = match left {
        0 => "expired".to_owned(),
        l if l < 3600 => format!("in {} minutes", l.div_ceil(60)),
        l if l < 2 * 86_400 => format!("in {} hours", l / 3600),
        l => format!("in {} days", l / 86_400),
    };
    format!("{time} ({rel})")
}

/// Parses `--until`: a duration from now (`90min`, `12h`, `30d`, `2w`,
/// `6mo`, `1y`) or a date (`2027-01-31`, midnight UTC). A bare `m` is
/// refused as ambiguous (minutes or months?).
pub(crate) fn parse_until(s: &str, now: u64) -> Result<u64> {
    let bad = || {
        crate::error::CliError::Usage(format!(
            "--until {s:?}: use a duration like 90min, 12h, 30d, 2w, 6mo or 1y, or a date like 2027-01-31"
        ))
    };
    let s = s.trim();
    if let Some(t) = vault_fhir::parse_date(s) {
        let t = u64::try_from(t).map_err(|_| bad())?;
        if t <= now {
            return Err(crate::error::CliError::Usage(format!(
                "--until {s}: that date is in the past"
            )));
        }
        return Ok(t);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "mo" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    n.checked_mul(unit_secs)
        .and_then(|d| now.checked_add(d))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_accepts_durations_and_dates() {
        let now = 1_700_000_000;
        assert_eq!(parse_until("30d", now).ok(), Some(now + 30 * 86_400));
        assert_eq!(parse_until("90min", now).ok(), Some(now + 90 * 60));
        assert_eq!(parse_until("6mo", now).ok(), Some(now + 180 * 86_400));
        assert_eq!(parse_until("12h", now).ok(), Some(now + 12 * 3600));
        assert_eq!(parse_until("2w", now).ok(), Some(now + 14 * 86_400));
        assert_eq!(parse_until("2030-01-01", now).ok(), Some(1_893_456_000));
        for bad in [
            "",
            "d",
            "0d",
            "6m",
            "10x",
            "-3d",
            "2001-01-01",
            "99999999999999999999d",
        ] {
            assert!(parse_until(bad, now).is_err(), "{bad}");
        }
    }
}
