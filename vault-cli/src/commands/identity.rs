//! `vault init`, `vault whoami` and `vault contacts`.

use std::io::{IsTerminal, Read};

use serde_json::json;
use vault_core::store::Store as _;
use vault_core::{Fingerprint, IdentityInfo, PublicIdentity, Role, SecretIdentity};

use crate::cli::{
    AgentServeArgs, ContactAddArgs, ContactsCommand, InitArgs, RoleArg, UnlockArgs, WhoamiArgs,
};
use crate::error::{CliError, Result};
use crate::home::{write_atomic, Home};
use crate::output::{clean, line, table, Output};
use crate::session::{read_public, system_now, Options, Session};

/// Creates a profile's identity: fresh keys, the key file sealed under
/// `passphrase` with scrypt work factor `work_factor`, and the public
/// identity file. Never overwrites an existing identity.
pub fn create_identity(
    home: &Home,
    info: &IdentityInfo,
    passphrase: &secrecy::SecretString,
    work_factor: u8,
) -> Result<SecretIdentity> {
    let key_file = home.key_file();
    if key_file.exists() || home.public_file().exists() {
        return Err(CliError::IdentityExists(key_file));
    }
    let secret = SecretIdentity::generate(info)?;
    let sealed = vault_core::keyfile::seal(&secret, passphrase, work_factor)?;
    home.ensure_data_dir()?;
    write_atomic(&key_file, &sealed, true)?;
    if let Err(e) = write_atomic(
        &home.public_file(),
        format!("{}\n", secret.public().to_text()).as_bytes(),
        true,
    ) {
        // Half an identity is worse than none: `init` can be run again.
        let _ = std::fs::remove_file(&key_file);
        return Err(e);
    }
    Ok(secret)
}

/// `vault init`: a new identity, its key file sealed under a passphrase.
pub fn init(home: &Home, out: Output, opts: &Options, args: &InitArgs) -> Result<()> {
    let key_file = home.key_file();
    if key_file.exists() || home.public_file().exists() {
        return Err(CliError::IdentityExists(key_file));
    }
    // A patient's real name never reaches the relay unless they choose.
    let public_name = match (&args.public_name, args.role) {
        (Some(n), _) => n.trim().to_owned(),
        (None, RoleArg::Patient) => "Patient".to_owned(),
        (None, RoleArg::Clinician | RoleArg::Device) => args.name.trim().to_owned(),
    };
    let info = IdentityInfo {
        display_name: public_name.clone(),
        role: match args.role {
            RoleArg::Patient => Role::Patient,
            RoleArg::Clinician => Role::Clinician,
            RoleArg::Device => Role::Device,
        },
        registration: args.registration.clone(),
        created_at: system_now(),
    };
    // Arguments are checked before anything is written.
    let save_relay = match (args.save_relay, &opts.relay) {
        (true, None) => return Err(CliError::Usage("--save-relay needs --relay URL".into())),
        (true, Some(r)) => Some(r.clone()),
        (false, _) => None,
    };
    let passphrase = opts.passphrase.choose()?;
    out.notice("Sealing your key file (this takes a moment)...");
    let secret = create_identity(home, &info, &passphrase, args.work_factor)?;
    let local_name = (args.name.trim() != public_name).then(|| args.name.trim().to_owned());
    if save_relay.is_some() || local_name.is_some() {
        let mut config = home.config()?;
        if let Some(relay) = save_relay {
            config.relay = Some(relay);
        }
        config.name = local_name;
        home.save_config(&config)?;
    }
    let public = secret.public();
    if out.json {
        return out.json(&identity_json(public));
    }
    line(&format!(
        "Created identity for {} ({}).",
        clean(args.name.trim()),
        public.role().as_str()
    ))?;
    if public.display_name() != args.name.trim() {
        line(&format!(
            "Your identity is published as {:?}: the relay never learns your name, and the people you share with name you in their own contacts.",
            clean(public.display_name())
        ))?;
    }
    line(&format!("Fingerprint: {}", grouped(&public.fingerprint())))?;
    line(&format!("Key file:    {}", key_file.display()))?;
    line("Keep the passphrase safe: without it the key file cannot be opened, and nobody can reset it.")?;
    line("Back up the key file; `vault whoami` shows your identity to share.")
}

fn grouped(fp: &Fingerprint) -> String {
    fp.digit_groups().join(" ")
}

/// Sets a field of a JSON object.
fn set(v: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
}

fn identity_json(p: &PublicIdentity) -> serde_json::Value {
    json!({
        "name": p.display_name(),
        "role": p.role().as_str(),
        "registration": p.registration(),
        "fingerprint": p.fingerprint().to_hex(),
        "fingerprint_digits": grouped(&p.fingerprint()),
        "identity": p.to_text(),
        "created_at": p.created_at(),
    })
}

/// `vault unlock`: starts the agent (or reports the one running).
#[cfg(unix)]
pub fn unlock(session: &mut Session, args: &UnlockArgs) -> Result<()> {
    use crate::agent;
    let idle = agent::parse_idle(&args.idle)?;
    let socket = agent::socket_path(session.home.data_dir())?;
    let me = session.me().fingerprint();
    let report =
        |session: &Session, already: bool, idle_left: u64| {
            if session.out.json {
                return session.out.json(&json!({
                    "unlocked": true,
                    "already": already,
                    "fingerprint": me.to_hex(),
                    "idle_seconds_left": idle_left,
                }));
            }
            line(&format!(
            "{} Commands of this profile ask no passphrase until {} without one, or `vault lock`.",
            if already { "Already unlocked." } else { "Unlocked." },
            agent_idle(idle_left)
        ))
        };
    match agent::status(&socket) {
        Some(s) if s.fingerprint == me => return report(session, true, s.idle_left),
        _ => {
            agent::lock(&socket)?;
        }
    }
    let secret = session.unlock_with_passphrase()?;
    agent::start(&socket, &secret, idle)?;
    report(session, false, idle.as_secs())
}

/// `vault unlock` where there are no Unix sockets.
#[cfg(not(unix))]
pub fn unlock(_session: &mut Session, _args: &UnlockArgs) -> Result<()> {
    Err(CliError::Usage(
        "the unlock agent needs Unix sockets; on this system every command asks for the passphrase"
            .into(),
    ))
}

fn agent_idle(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} seconds"),
        s if s < 2 * 3600 => format!("{} minutes", s.div_ceil(60)),
        s => format!("{} hours", s / 3600),
    }
}

/// `vault lock`.
pub fn lock(home: &Home, out: Output) -> Result<()> {
    #[cfg(unix)]
    let was = crate::agent::lock(&crate::agent::socket_path(home.data_dir())?)?;
    #[cfg(not(unix))]
    let was = {
        let _ = home;
        false
    };
    if out.json {
        return out.json(&json!({ "locked": true, "agent_was_running": was }));
    }
    line(if was {
        "Locked: the agent forgot your identity; commands ask for the passphrase again."
    } else {
        "No agent was running; commands ask for the passphrase."
    })
}

/// `vault agent-serve`: the agent process itself.
#[cfg(unix)]
pub fn agent_serve(args: &AgentServeArgs) -> Result<()> {
    crate::agent::serve(
        &args.socket,
        std::time::Duration::from_secs(args.idle_seconds),
    )
}

/// `vault agent-serve` where there are no Unix sockets.
#[cfg(not(unix))]
pub fn agent_serve(_args: &AgentServeArgs) -> Result<()> {
    Err(CliError::Usage(
        "the unlock agent needs Unix sockets".into(),
    ))
}

/// `vault whoami`.
pub fn whoami(home: &Home, out: Output, opts: &Options, args: &WhoamiArgs) -> Result<()> {
    let public = read_public(home)?;
    if args.publish {
        let mut session = Session::open(home.clone(), out, opts.clone())?;
        let client = session.client()?;
        let fresh = session.rt.block_on(client.publish_identity())?;
        out.notice(if fresh {
            "Published your identity on the relay."
        } else {
            "Your identity was already published on the relay."
        });
    }
    if args.export {
        return line(&public.to_text());
    }
    if out.json {
        return out.json(&identity_json(&public));
    }
    let own_name = home.config()?.name;
    line(&format!(
        "{} ({}{})",
        clean(own_name.as_deref().unwrap_or(public.display_name())),
        public.role().as_str(),
        public
            .registration()
            .map(|r| format!(", registration {}", clean(r)))
            .unwrap_or_default()
    ))?;
    if own_name.is_some() {
        line(&format!("Published as: {}", clean(public.display_name())))?;
    }
    line(&format!("Fingerprint: {}", grouped(&public.fingerprint())))?;
    line(&format!("             {}", public.fingerprint().to_hex()))?;
    line("Read the digits to the other person, or let them scan the code; they pass them to `vault contacts add --verify`.")?;
    if !args.no_qr {
        line("")?;
        line(&qr(&public.to_text())?)?;
    }
    line(&format!("Identity (to send): {}", public.to_text()))
}

/// The identity text as a QR code (error-correction level L: it is long
/// and read from a screen) drawn with Unicode half blocks.
fn qr(text: &str) -> Result<String> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| CliError::Usage(format!("cannot draw the QR code: {e}")))?;
    Ok(crate::output::qr_text(&code))
}

/// `vault contacts ...`.
pub fn contacts(session: &mut Session, cmd: ContactsCommand) -> Result<()> {
    match cmd {
        ContactsCommand::Add(args) => add_contact(session, &args),
        ContactsCommand::List => {
            let all = session.contacts.all(&session.store)?;
            if session.out.json {
                let v: Vec<_> = all
                    .iter()
                    .map(|c| {
                        let mut j = identity_json(&c.identity);
                        set(&mut j, "contact", json!(c.name));
                        set(&mut j, "added_at", json!(c.added_at));
                        j
                    })
                    .collect();
                return session.out.json(&v);
            }
            if all.is_empty() {
                session.out.notice(
                    "No contacts yet; add one with `vault contacts add NAME --lookup FINGERPRINT`.",
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        clean(c.identity.display_name()),
                        c.identity.role().as_str().to_owned(),
                        grouped(&c.identity.fingerprint()),
                    ]
                })
                .collect();
            table(&["CONTACT", "NAME", "ROLE", "FINGERPRINT"], &rows)
        }
        ContactsCommand::Show { name } => {
            let c = session.contacts.get(&session.store, &name)?;
            if session.out.json {
                let mut j = identity_json(&c.identity);
                set(&mut j, "contact", json!(c.name));
                set(&mut j, "added_at", json!(c.added_at));
                return session.out.json(&j);
            }
            line(&format!(
                "{name}: {} ({})",
                clean(c.identity.display_name()),
                c.identity.role().as_str()
            ))?;
            line(&format!(
                "Fingerprint: {}",
                grouped(&c.identity.fingerprint())
            ))?;
            line(&format!("Identity: {}", c.identity.to_text()))
        }
        ContactsCommand::Remove { name } => {
            let fp = session
                .contacts
                .get(&session.store, &name)?
                .identity
                .fingerprint();
            session.contacts.remove(&name)?;
            if session.out.json {
                return session.out.json(&json!({ "removed": name }));
            }
            session.out.notice(format!(
                "Removed contact {name}. Shares they hold stay until you revoke them: `vault revoke {}`.",
                fp.to_hex()
            ));
            Ok(())
        }
    }
}

fn add_contact(session: &mut Session, args: &ContactAddArgs) -> Result<()> {
    crate::contacts::check_name(&args.name)?;
    let (identity, verified_by_lookup) = match (&args.file, &args.lookup) {
        (Some(path), None) => {
            let text = if path.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| CliError::file("<stdin>", e))?;
                s
            } else {
                std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?
            };
            let identity = PublicIdentity::from_text(&text).map_err(|e| {
                CliError::Usage(format!(
                    "{} does not hold a vault identity ({e}); ask the contact for the output of `vault whoami --export`",
                    path.display()
                ))
            })?;
            (identity, false)
        }
        (None, Some(fp)) => {
            let fp = parse_fingerprint(fp)?;
            let client = session.client()?;
            let identity = session.rt.block_on(client.lookup_identity(&fp))?;
            (identity, true)
        }
        _ => return Err(CliError::Usage(
            "give the contact's identity with --file FILE, or look it up with --lookup FINGERPRINT"
                .into(),
        )),
    };
    let fp = identity.fingerprint();
    match &args.verify {
        Some(typed) => fp.verify_spoken(&typed.join(" "))?,
        None if verified_by_lookup => {}
        None => confirm_fingerprint(&args.name, &identity)?,
    }
    if identity.fingerprint() == session.me().fingerprint() {
        return Err(CliError::Usage("that is your own identity".into()));
    }
    let now = system_now();
    let previous = session
        .store
        .pinned(&crate::contacts::pin_name(&args.name))?
        .filter(|old| *old != fp);
    let Session {
        contacts, store, ..
    } = session;
    contacts.add(store, &args.name, &identity, args.replace, now)?;
    if let Some(old) = previous {
        session.out.notice(format!(
            "notice: {}'s previous key ({}) may still hold shares in your vaults; end them with `vault revoke {}`",
            args.name,
            grouped(&old),
            old.to_hex()
        ));
    }
    if session.out.json {
        let mut j = identity_json(&identity);
        set(&mut j, "contact", json!(args.name));
        return session.out.json(&j);
    }
    line(&format!(
        "Added {} as {:?} ({}), fingerprint {} (pinned).",
        clean(identity.display_name()),
        args.name,
        identity.role().as_str(),
        grouped(&fp)
    ))
}

/// Parses a fingerprint typed as 64 hex digits or as the 30 grouped digits
/// (which only verify, so they cannot be looked up).
fn parse_fingerprint(s: &str) -> Result<Fingerprint> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    Fingerprint::from_hex(&compact.to_ascii_lowercase()).map_err(|_| {
        CliError::Usage(format!(
            "{s:?} is not a fingerprint: --lookup needs the 64 hex digits `vault whoami` prints (the grouped digits are for --verify)"
        ))
    })
}

/// Asks the user to confirm a fingerprint they compared out of band.
fn confirm_fingerprint(name: &str, identity: &PublicIdentity) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "compare the fingerprint with {name} and pass it with --verify: {}",
            grouped(&identity.fingerprint())
        )));
    }
    eprintln!(
        "{} ({}) has fingerprint\n  {}\nDoes it match what {name} showed you? Type yes to pin it: ",
        clean(identity.display_name()),
        identity.role().as_str(),
        grouped(&identity.fingerprint())
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CliError::file("<stdin>", e))?;
    if answer.trim().eq_ignore_ascii_case("yes") {
        Ok(())
    } else {
        Err(CliError::Usage("not confirmed; nothing was added".into()))
    }
}
