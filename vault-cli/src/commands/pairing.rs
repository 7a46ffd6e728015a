//! `vault devices pair` and `vault devices join`: the CLI's presentation
//! of [`vault_client::pairing`] (`docs/format.md` §3.8). The existing
//! device shows a code, the new device types it, both show 8 digits, and
//! the person types on each screen the digits the other shows: only then
//! is the device added (on the existing one) and the person pinned (on the
//! new one).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use serde_json::json;
use vault_client::pairing::{Joining, Listed, Offer};
use vault_core::pairing::{ComparedCode, PairingCode};
use vault_core::store::Store as _;
use vault_core::Role;

use super::devices::{add_device, ListOf};
use crate::cli::JoinArgs;
use crate::error::{CliError, Result};
use crate::output::clean;
use crate::session::{system_now, Acting, Session};

/// Asks the person to type the 8 digits the other device shows, and checks
/// them against `ours` ([`vault_client::pairing::confirm`]). Prompts go to
/// stderr, so `--json` output stays one document on stdout. The line is
/// read on a thread of its own, so that a wait for it can be interrupted
/// ([`or_ctrl_c`]).
async fn confirm(ours: ComparedCode, other: &str) -> Result<()> {
    eprintln!("This device shows:  {ours}");
    eprintln!("Type the 8 digits {other} shows (anything else cancels): ");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut answer = String::new();
        let read = std::io::stdin().read_line(&mut answer).map(|_| answer);
        let _ = tx.send(read);
    });
    let answer = rx
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the answer could not be read from the terminal",
            ))
        })
        .map_err(|e| CliError::file("<stdin>", e))?;
    Ok(vault_client::pairing::confirm(ours, &answer)?)
}

/// How long a pairing stopped with Ctrl-C waits for the relay to close its
/// slot before it exits anyway.
const CLOSE_WHEN_STOPPED: Duration = Duration::from_secs(5);

/// Ctrl-C, watched from the moment this is first polled (so before what
/// it guards is shown); never, if the signal cannot be watched.
type CtrlC = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts watching Ctrl-C now, in place of its default (ending the
/// process); refused as [`CliError::Interrupted`] if it was already
/// pressed.
fn watch_ctrl_c(session: &Session) -> Result<CtrlC> {
    let mut ctrl_c: CtrlC = Box::pin(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    let pressed = session.rt.block_on(std::future::poll_fn(|cx| {
        Poll::Ready(ctrl_c.as_mut().poll(cx).is_ready())
    }));
    if pressed {
        return Err(CliError::Interrupted("cancelled".into()));
    }
    Ok(ctrl_c)
}

/// `work`, or `None` if Ctrl-C comes first.
async fn or_ctrl_c<T>(work: impl Future<Output = T>, ctrl_c: &mut CtrlC) -> Option<T> {
    tokio::select! {
        // Ctrl-C first: pressed as the answer arrives, it still cancels.
        biased;
        () = ctrl_c.as_mut() => None,
        done = work => Some(done),
    }
}

/// `vault devices pair`: on an existing device (or the key file).
pub fn pair(session: &mut Session) -> Result<()> {
    let to = ListOf::resolve(session)?;
    let person = to.person();
    let client = session.client()?;
    let offer = session
        .rt
        .block_on(Offer::open(&client, &person.fingerprint()))?;
    let minutes = offer.seconds_left().div_ceil(60);
    // Watched before the code is shown: from here Ctrl-C closes the slot.
    let mut ctrl_c = match watch_ctrl_c(session) {
        Ok(c) => c,
        Err(e) => {
            let _ = session.rt.block_on(offer.close(&client));
            return Err(e);
        }
    };
    eprintln!(
        "On the new device, run:\n\n    vault devices join {}\n\n(after `vault init --role device --name NAME` there). The code works for {minutes} minutes, for one device. Waiting for it…",
        offer.code().shown()
    );
    // Until the slot closes, Ctrl-C closes it first: an abandoned code
    // would count against this identity's three until it expired.
    let live = session.rt.block_on(or_ctrl_c(
        async {
            let joined = offer.wait(&client).await?;
            let device = joined.device.clone();
            eprintln!(
                "The device {:?} ({}) joined.",
                clean(device.display_name()),
                crate::output::short(&device.fingerprint().to_hex())
            );
            confirm(joined.compared, "the new device").await?;
            Ok::<_, CliError>(device)
        },
        &mut ctrl_c,
    ));
    let Some(confirmed) = live else {
        // Stopped: the slot is closed, but not waited for beyond a few
        // seconds (the client would retry an unreachable relay for longer).
        let closed = session.rt.block_on(async {
            tokio::time::timeout(CLOSE_WHEN_STOPPED, offer.close(&client)).await
        });
        return Err(CliError::Interrupted(match closed {
            Ok(Ok(())) => "cancelled: the code no longer works".into(),
            Ok(Err(e)) => format!(
                "cancelled; the relay did not close the code ({e}): it stops working within {minutes} minutes"
            ),
            Err(_) => format!(
                "cancelled; the relay did not answer in time to close the code: it stops working within {minutes} minutes"
            ),
        }));
    };
    // The slot has served: closed whatever the answer.
    let closed = session.rt.block_on(offer.close(&client));
    let device = confirmed?;
    closed?;
    // From here Ctrl-C stops the command again (at its next request to
    // the relay), as the watch above replaced the signal's default.
    session.rt.spawn(async move {
        ctrl_c.await;
        eprintln!(
            "interrupted; the device may already have been added: check `vault devices list`"
        );
        std::process::exit(i32::from(crate::error::exit::INTERRUPTED));
    });
    add_device(session, &to, device.fingerprint(), true)
}

/// `vault devices join CODE`: on the new device.
pub fn join(session: &mut Session, args: &JoinArgs) -> Result<()> {
    crate::contacts::check_name(&args.contact)?;
    let secret = session.unlock()?;
    if secret.public().role() != Role::Device {
        return Err(CliError::Usage(
            "this profile is not a device: on the new device, make one with `vault init --role device --name NAME`, then join"
                .into(),
        ));
    }
    let code = PairingCode::parse(&args.code.join(""))?;
    let client = session.client()?;
    let joining = session.rt.block_on(Joining::join(&client, &code))?;
    eprintln!("Joined. Waiting for the other device to answer…");
    let revealed = session.rt.block_on(joining.wait(&client))?;
    let person = &revealed.person;
    eprintln!(
        "Pairing as a device of {:?} ({}).",
        clean(person.display_name()),
        person.fingerprint().digit_groups().join(" ")
    );
    // The name must be free (or this person's) before the person confirms:
    // the other device adds this one on its own confirmation.
    if let Some(pinned) = session
        .store
        .pinned(&crate::contacts::pin_name(&args.contact))?
        .filter(|p| *p != person.fingerprint())
    {
        return Err(CliError::Usage(format!(
            "the contact name {:?} is pinned to someone else ({}): nothing was paired; start again with `vault devices join CODE --contact NAME`",
            args.contact,
            crate::output::short(&pinned.to_hex())
        )));
    }
    session
        .rt
        .block_on(confirm(revealed.compared, "the other device"))?;
    let Session {
        contacts, store, ..
    } = session;
    contacts.add(store, &args.contact, person, false, system_now())?;
    // A person this profile read for before (a removed device paired
    // again) would have the relay refuse the wait's inbox reads: the wait
    // reads for this device alone (the config file is written once it is
    // listed).
    session.act(Acting::Alone);
    let client = session.client()?;
    eprintln!("Confirmed. Waiting for the other device to add this one…");
    let left = joining.seconds_left().saturating_add(60);
    let listed = session
        .rt
        .block_on(revealed.wait_listed(&client, Duration::from_secs(left)))?;
    // A member's device signs its person's list at once: its own claim
    // (`docs/format.md` §8.12 rule 4), which outranks anyone else listing
    // its public document. Failing that, the pairing still stands.
    if matches!(listed, Listed::Member { .. }) {
        // Its person's inbox and accepted owners are the device's too; the
        // owners it accepted on its own list join the person's.
        let own = session.own_accepted();
        session.set_person(Some(person.fingerprint()))?;
        session.carry_own_accepted(&own);
    } else {
        // An owner's device: its owner's list is in the owner's vaults,
        // not in the directory; it reads its own inbox.
        session.set_person(None)?;
    }
    let (listed, claim_failed) = match listed {
        Listed::Member { serial } => match super::devices::confirm(session, person) {
            Ok(change) => (
                Listed::Member {
                    serial: change.list.serial(),
                },
                None,
            ),
            Err(e) => (Listed::Member { serial }, Some(e.to_string())),
        },
        owner => (owner, None),
    };
    let name = clean(person.display_name());
    if session.out.json {
        let (kind, vaults, serial) = match &listed {
            Listed::Owner(v) => ("owner", v.iter().map(|v| v.to_hex()).collect(), None),
            Listed::Member { serial } => ("member", Vec::new(), Some(*serial)),
        };
        return session.out.json(&json!({
            "person": person.fingerprint().to_hex(),
            "name": person.display_name(),
            "contact": args.contact,
            "listed": kind,
            "vaults": vaults,
            "serial": serial,
            "confirm_error": claim_failed,
        }));
    }
    if let Some(why) = &claim_failed {
        eprintln!(
            "warning: this device could not sign {name}'s device list ({why}); until it does, someone else who listed it first keeps it: run `vault devices confirm --contact {}`",
            args.contact
        );
    }
    match listed {
        Listed::Owner(vaults) => crate::output::line(&format!(
            "This device now acts for {name} in {} vault(s), pinned as {:?}: `vault list --vault {}` shows the records.",
            vaults.len(),
            args.contact,
            args.contact
        )),
        Listed::Member { serial } => crate::output::line(&format!(
            "This device is listed for {name} (version {serial}), pinned as {:?}: what is shared with {name} reaches it; `vault inbox` shows it.",
            args.contact
        )),
    }
}
