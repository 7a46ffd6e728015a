//! One command's working context: the profile, the local store, the
//! contacts, the unlocked identity and the relay client.
//!
//! Reading commands bring a vault up to date from the relay first and fall
//! back to the local copy, with a notice, when the relay is unreachable;
//! every byte from the relay goes through vault-core's verification before
//! it is stored or used.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::SecretString;
use vault_client::{mirrors, sync, InboxVault, RelayClient};
use vault_core::request::RelayOrigin;
use vault_core::store::{self, SqliteStore, Store};
use vault_core::{Fingerprint, PublicIdentity, RecordId, SecretIdentity, VaultId, VaultState};

use crate::cli::GlobalArgs;
use crate::contacts::Contacts;
use crate::error::{CliError, Result};
use crate::home::{Config, Home};
use crate::output::Output;
use crate::passphrase;

mod person;
pub(crate) use person::Acting;

/// Blobs up to this size are downloaded into memory, concurrently.
const SMALL_DOWNLOAD: u64 = 1024 * 1024;

/// Options that shape a session.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Relay URL from the command line or environment.
    pub relay: Option<String>,
    /// Invitation token for relays that admit new identities by invitation.
    pub invite: Option<String>,
    /// Vault selector.
    pub vault: Option<String>,
    /// Never contact the relay.
    pub offline: bool,
    /// Passphrase source.
    pub passphrase: passphrase::Source,
}

impl Options {
    /// The options of the global command-line flags.
    pub fn from_args(g: &GlobalArgs) -> Self {
        Self {
            relay: g.relay.clone(),
            invite: g.invite.clone(),
            vault: g.vault.clone(),
            offline: g.offline,
            passphrase: passphrase::Source::new(g.passphrase_file.as_deref()),
        }
    }
}

/// What [`Session::join_shared`] found.
#[derive(Debug)]
pub struct Joined {
    /// The relay's inbox, as it claims it.
    pub inbox: Vec<InboxVault>,
    /// Vaults whose owner is not a verified contact (not joined).
    pub unknown: Vec<InboxVault>,
    /// Vaults that failed verification when joined (a lying relay), with
    /// the reason.
    pub rejected: Vec<(VaultId, CliError)>,
}

/// The working context of one command.
pub struct Session {
    /// The profile.
    pub home: Home,
    /// How to print.
    pub out: Output,
    /// The options.
    pub opts: Options,
    /// The config file.
    pub config: Config,
    /// The local store.
    pub store: SqliteStore,
    /// The contact book.
    pub contacts: Contacts,
    /// The runtime for network calls.
    pub rt: tokio::runtime::Runtime,
    public: PublicIdentity,
    secret: Option<Arc<SecretIdentity>>,
    client: Option<RelayClient>,
    /// Clients of other relays than the profile's: a vault's home after
    /// the owner moved it, and mirrors (`vault relays`).
    others: HashMap<RelayOrigin, RelayClient>,
    /// Vaults read from a mirror because their home did not answer: their
    /// ciphertext comes from there too.
    read_from: HashMap<VaultId, RelayClient>,
    /// Each vault's home as this device last verified it (`None`: the
    /// profile's relay), so that finding where to write does not replay
    /// the vault's log every time; set by [`Session::pull`].
    homes: HashMap<VaultId, Option<RelayOrigin>>,
    /// Set when a read fell back to the local copy because the relay was
    /// unreachable.
    unreachable: bool,
    /// The last vault [`Session::join_shared`] joined in this command from
    /// the profile's relay, its home (one, so that an inbox of many vaults
    /// does not keep them all in memory): the next [`Session::refresh`] of
    /// it takes it, if the stored head has not moved since, rather than
    /// loading and pulling it again moments later. [`Session::pull`] drops
    /// it, so a write always builds on a new pull.
    joined: Option<VaultState>,
    /// Whom this command reads the inbox for, when it is not what the
    /// config file says ([`person::Acting`]).
    acting: person::Acting,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("me", &self.public.fingerprint())
            .field("unlocked", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads the public identity of a profile (no passphrase needed).
pub fn read_public(home: &Home) -> Result<PublicIdentity> {
    let path = home.public_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::NoIdentity(home.key_file()))
        }
        Err(e) => return Err(CliError::file(path, e)),
    };
    Ok(PublicIdentity::from_text(&text)?)
}

pub use vault_client::system_now;

impl Session {
    /// Opens the profile's identity (public part), store and contacts.
    pub fn open(home: Home, out: Output, opts: Options) -> Result<Self> {
        let public = read_public(&home)?;
        if let Some(w) = home.permission_warning() {
            out.warn(w);
        }
        let config = home.config()?;
        let store = SqliteStore::open(home.store_dir())?;
        let contacts = Contacts::load(&home.contacts_file())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?;
        Ok(Self {
            home,
            out,
            opts,
            config,
            store,
            contacts,
            rt,
            public,
            secret: None,
            client: None,
            others: HashMap::new(),
            read_from: HashMap::new(),
            homes: HashMap::new(),
            joined: None,
            acting: person::Acting::AsConfigured,
            unreachable: false,
        })
    }

    /// This profile's public identity.
    pub fn me(&self) -> &PublicIdentity {
        &self.public
    }

    /// Unlocks the secret identity (once per session): from the unlock
    /// agent if one holds this profile's identity (`vault unlock`), else
    /// with the passphrase.
    pub fn unlock(&mut self) -> Result<Arc<SecretIdentity>> {
        if let Some(s) = &self.secret {
            return Ok(s.clone());
        }
        #[cfg(unix)]
        if let Some(secret) = self.agent_identity() {
            let secret = Arc::new(secret);
            self.secret = Some(secret.clone());
            return Ok(secret);
        }
        self.unlock_with_passphrase()
    }

    /// The identity held by this profile's unlock agent, if one answers.
    #[cfg(unix)]
    fn agent_identity(&self) -> Option<SecretIdentity> {
        let socket = crate::agent::socket_path(self.home.data_dir()).ok()?;
        crate::agent::fetch(&socket, &self.public.fingerprint(), |w| self.out.warn(w))
    }

    /// Unlocks with the passphrase, never the agent (`vault unlock`).
    pub fn unlock_with_passphrase(&mut self) -> Result<Arc<SecretIdentity>> {
        let secret = Arc::new(self.opts.passphrase.unlock(|p| self.unlock_with(p))?);
        self.secret = Some(secret.clone());
        Ok(secret)
    }

    /// Unlocks with a given passphrase (benches, tests).
    pub fn unlock_with(&self, passphrase: &SecretString) -> Result<SecretIdentity> {
        let path = self.home.key_file();
        let file = std::fs::read(&path).map_err(|e| CliError::file(&path, e))?;
        let secret = vault_core::keyfile::open(&file, passphrase)?;
        if secret.fingerprint() != self.public.fingerprint() {
            return Err(CliError::Usage(format!(
                "{} and {} belong to different identities; restore the pair from your backup",
                path.display(),
                self.home.public_file().display()
            )));
        }
        Ok(secret)
    }

    /// Uses an already unlocked identity (benches, tests).
    pub fn set_secret(&mut self, secret: Arc<SecretIdentity>) {
        self.secret = Some(secret);
    }

    /// The relay URL: `--relay`/`VAULT_RELAY`, else the config file.
    pub fn relay_url(&self) -> Result<String> {
        self.opts
            .relay
            .clone()
            .filter(|r| !r.trim().is_empty())
            .or_else(|| self.config.relay.clone())
            .ok_or_else(|| CliError::NoRelay(self.home.config_file()))
    }

    /// The relay client (unlocks the identity: requests are signed).
    pub fn client(&mut self) -> Result<RelayClient> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        if self.unreachable {
            return Err(CliError::NotOffline(
                "what this command needs from the relay".into(),
            ));
        }
        if self.opts.offline {
            return Err(CliError::Usage(
                "this command needs the relay, but --offline was given".into(),
            ));
        }
        let secret = self.unlock()?;
        // Few retries: a person is waiting, and reading falls back to the
        // local copy when the relay is down.
        let mut client = RelayClient::new(&self.relay_url()?, secret)?
            .with_retry_policy(vault_client::RetryPolicy::with_attempts(3));
        if let Some(token) = &self.opts.invite {
            client = client.with_invite(token)?;
        }
        if let Some(person) = self.person()? {
            client = client.with_person(person);
        } else if let Some(notice) = self.person_elsewhere() {
            self.out.notice(notice);
        }
        // Requests are signed by a published identity: publish it first
        // (idempotent, one small request), so a relay that was reset or
        // replaced knows this identity again.
        self.rt.block_on(client.publish_identity())?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// The current time: the relay's clock when a client exists (entries
    /// must fall in its window), else this machine's.
    pub fn now(&self) -> u64 {
        self.client.as_ref().map_or_else(system_now, |c| c.now())
    }

    /// The vaults this device follows, with their verified owners.
    pub fn known_vaults(&self) -> Result<Vec<(VaultId, PublicIdentity)>> {
        let mut out = Vec::new();
        for v in self.store.vaults()? {
            let state = store::load_vault(&self.store, &v)?;
            out.push((v, state.owner().clone()));
        }
        Ok(out)
    }

    /// Joins the inbox's vaults whose owner is a verified contact (and your
    /// own vaults this device does not have yet). A vault that fails
    /// verification is reported on stderr and listed in
    /// [`Joined::rejected`]; the others are still joined. The inbox is read
    /// page by page; a flooded inbox is cut (with a warning on stderr)
    /// instead of failing.
    pub fn join_shared(&mut self) -> Result<Joined> {
        let contacts = self.contacts.all(&self.store)?;
        // Contacts are the owners this person accepts shares from: a
        // contact whose shares the relay lists as a stranger's (or may have
        // held back) is accepted, and the inbox read again.
        let contact_fps: Vec<Fingerprint> =
            contacts.iter().map(|c| c.identity.fingerprint()).collect();
        let read = self.reading_for_person(|client| {
            let trusted = contact_fps.clone();
            async move { vault_client::inbox::listing_trusting(&client, &trusted).await }
        })?;
        if let Some(e) = &read.not_accepted {
            eprintln!("warning: your contacts were not accepted on the relay ({e}); their shares may be listed as strangers': run `vault inbox` again, or `vault inbox accept FINGERPRINT`");
        }
        let listing = read.listing;
        if listing.strangers_held_back > 0 {
            self.out.notice(format!(
                "notice: {} more vault(s) shared by people who are not your contacts are not listed (the relay's limit for strangers); add the person with `vault contacts add`, or `vault inbox accept FINGERPRINT`",
                listing.strangers_held_back
            ));
        }
        if listing.truncated {
            eprintln!(
                "warning: the relay lists more vaults in your inbox than vault reads ({} pages); only the first {} were considered (someone may be sharing many vaults with you)",
                vault_client::MAX_INBOX_PAGES,
                listing.vaults.len()
            );
        }
        let inbox = listing.vaults;
        // The client of the rest of this command (it reads for this
        // device alone if the relay refused to read for its person).
        let client = self.client()?;
        let me = self.public.fingerprint();
        let mut unknown = Vec::new();
        let mut rejected = Vec::new();
        for v in &inbox {
            // A device of the owner's is told it owns the vault too: its
            // owner must then be a contact, as for any shared vault (the
            // log says which devices act for the owner).
            let owner = if v.is_owner && v.owner == me {
                Some(me)
            } else {
                contacts
                    .iter()
                    .map(|c| c.identity.fingerprint())
                    .find(|fp| *fp == v.owner)
            };
            match owner {
                Some(owner) => {
                    // One vault the relay lies about must not hide the
                    // others: report it and go on.
                    match self.rt.block_on(sync::join_vault(
                        &mut self.store,
                        &client,
                        &v.vault,
                        &owner,
                    )) {
                        Ok(state) => {
                            self.note_home(&state);
                            self.joined =
                                (self.homes.get(&v.vault) == Some(&None)).then_some(state);
                        }
                        Err(e) => {
                            let e = CliError::from(e);
                            if e.is_unreachable() {
                                return Err(e);
                            }
                            eprintln!("warning: vault {} was not joined: {e}", v.vault);
                            rejected.push((v.vault, e));
                        }
                    }
                }
                None => unknown.push(v.clone()),
            }
        }
        Ok(Joined {
            inbox,
            unknown,
            rejected,
        })
    }

    /// The vault named by `--vault` (an id prefix, a contact's name, or
    /// `mine`), or the default: your own vault, or the only one known.
    /// When none matches and the relay is configured, the vaults shared
    /// with you are fetched first (`vault inbox`), then it looks again.
    pub fn select_vault(&mut self) -> Result<VaultId> {
        match self.select_known_vault() {
            Err(CliError::NotFound(_)) if !self.opts.offline && self.relay_url().is_ok() => {
                self.join_shared()?;
                self.select_known_vault()
            }
            other => other,
        }
    }

    /// The vault a write goes to: as [`Session::select_vault`], but a vault
    /// someone else owns must be named with `--vault` (a clinician never
    /// writes into a patient's vault by default), and a notice says whose
    /// vault it is.
    pub fn select_vault_for_write(&mut self) -> Result<VaultId> {
        let vault = self.select_vault()?;
        let state = self.local(&vault)?;
        let owner = state.owner().fingerprint();
        if !state.is_owner(&self.public.fingerprint()) {
            let name = self.namer().name(&owner, Some(&state));
            if self.opts.vault.is_none() {
                return Err(CliError::Usage(format!(
                    "the only vault on this device belongs to {name}; to write into it, name it explicitly with --vault"
                )));
            }
            self.out
                .notice(format!("Writing into {name}'s vault {}.", vault));
        }
        Ok(vault)
    }

    fn select_known_vault(&self) -> Result<VaultId> {
        let known = self.known_vaults()?;
        let me = self.public.fingerprint();
        // Yours: its owner is you, or, for a device profile, its owner
        // lists this device (a device writes as the owner). Only a device
        // loads the vaults' states for that: no person's identity is ever
        // listed as a device.
        let device = self.public.role() == vault_core::Role::Device;
        let mine: Vec<VaultId> = known
            .iter()
            .filter(|(v, o)| {
                o.fingerprint() == me || (device && self.local(v).is_ok_and(|s| s.is_owner(&me)))
            })
            .map(|(v, _)| *v)
            .collect();
        let pick = |found: Vec<VaultId>, what: &str| -> Result<VaultId> {
            match found.as_slice() {
                [one] => Ok(*one),
                [] => Err(CliError::NotFound(format!(
                    "no vault matches {what} on this device; see `vault vaults` (run `vault sync` or `vault inbox` to fetch vaults shared with you)"
                ))),
                _ => Err(CliError::Usage(format!(
                    "{what} matches several vaults ({}); pass --vault with a longer id",
                    found.iter().map(|v| v.to_hex()).collect::<Vec<_>>().join(", ")
                ))),
            }
        };
        match self.opts.vault.as_deref() {
            None => {
                if mine.len() == 1 || (mine.is_empty() && known.len() == 1) {
                    return pick(
                        if mine.is_empty() {
                            known.iter().map(|(v, _)| *v).collect()
                        } else {
                            mine
                        },
                        "the default",
                    );
                }
                if known.is_empty() {
                    return Err(CliError::NotFound(
                        "this device knows no vault yet: create one with `vault create`, or fetch the ones shared with you with `vault inbox`".into(),
                    ));
                }
                Err(CliError::Usage(
                    "this device knows several vaults: choose one with --vault (see `vault vaults`)"
                        .into(),
                ))
            }
            Some("mine") => pick(mine, "\"mine\""),
            Some(sel) => {
                let contact = match self.contacts.get(&self.store, sel) {
                    Ok(c) => Some(c),
                    Err(CliError::UnknownContact(_)) => None,
                    Err(e) => return Err(e),
                };
                if let Some(c) = contact {
                    let fp = c.identity.fingerprint();
                    return pick(
                        known
                            .iter()
                            .filter(|(_, o)| o.fingerprint() == fp)
                            .map(|(v, _)| *v)
                            .collect(),
                        &format!("contact {sel:?}"),
                    );
                }
                let lower = sel.to_ascii_lowercase();
                if lower.len() < 4 || !lower.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(CliError::NotFound(format!(
                        "--vault {sel:?} is neither a contact nor a vault id (use at least 4 hex digits)"
                    )));
                }
                pick(
                    known
                        .iter()
                        .filter(|(v, _)| v.to_hex().starts_with(&lower))
                        .map(|(v, _)| *v)
                        .collect(),
                    &format!("vault id {sel:?}"),
                )
            }
        }
    }

    /// The vault brought up to date from the relay, or this device's
    /// verified copy when offline or the relay is unreachable (with a
    /// notice). Verification failures (rollback, fork, tampering) are
    /// errors, never a fallback. For reading; writes use [`Session::pull`].
    pub fn refresh(&mut self, vault: &VaultId) -> Result<VaultState> {
        if self.opts.offline || self.unreachable || self.relay_url().is_err() {
            return self.local(vault);
        }
        if let Some(state) = self.joined.take_if(|s| s.vault() == *vault) {
            // Unless something was written to the vault since.
            if vault_core::store::Store::head(&self.store, vault)? == Some(state.head()) {
                // Read from the home, as a pull from it would note.
                self.read_from.remove(vault);
                return Ok(state);
            }
        }
        match self.pull(vault) {
            Ok(state) => Ok(state),
            Err(e) if e.is_unreachable() => {
                let state = self.local(vault)?;
                self.out.notice(format!(
                    "notice: the relay at {} is unreachable; showing this device's copy (verified up to checkpoint {})",
                    self.relay_url().unwrap_or_default(),
                    state.head().code()
                ));
                self.client = None;
                self.unreachable = true;
                Ok(state)
            }
            Err(e) => Err(e),
        }
    }

    /// The vault brought up to date from its home relay; when the home
    /// does not answer, from the first mirror the owner named that does,
    /// verified the same way (with a notice, and a warning for each mirror
    /// passed over: behind this device, forked or withholding). What a
    /// write builds on (the write itself goes to the home).
    pub fn pull(&mut self, vault: &VaultId) -> Result<VaultState> {
        self.joined.take_if(|s| s.vault() == *vault);
        let home = match self.client_for(vault) {
            Ok(c) => c,
            // Unreachable: a client that has not published, for pull_any
            // to find so and turn to the mirrors.
            Err(e) if e.is_unreachable() => {
                match self.home_origin(vault).or_else(|| self.profile_origin()) {
                    Some(origin) => self.bare_client(&origin)?,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let mut passed_over = Vec::new();
        let pulled = self.rt.block_on(mirrors::pull_any(
            &mut self.store,
            &home,
            vault,
            &mut passed_over,
        ));
        for (relay, why) in &passed_over {
            let what = match why.code() {
                "rollback" => "it is behind what this device verified (it lags)".to_owned(),
                "fork" => {
                    "its log differs from the one this device verified (forked): do not use it"
                        .to_owned()
                }
                "missing_or_withheld" => "it withholds entries".to_owned(),
                _ => why.to_string(),
            };
            self.out.warn(format!(
                "warning: vault {}: mirror relay {relay} passed over: {what}",
                crate::output::short(&vault.to_hex())
            ));
        }
        let pulled = pulled?;
        self.note_home(&pulled.state);
        let new_home = pulled.state.relays().map(|r| r.home().clone());
        let short = crate::output::short(&vault.to_hex());
        let checkpoint = pulled.state.head().code();
        let from = pulled.from.origin().clone();
        self.read_from.remove(vault);
        if from == *home.origin() {
            // Read from the home, as usual.
        } else if new_home.as_ref() == Some(&from) {
            self.out.notice(format!(
                "notice: vault {short}: its owner moved its home relay to {from}; this device follows (checkpoint {checkpoint})"
            ));
        } else {
            self.out.notice(format!(
                "notice: vault {short}: the home relay {} did not answer; read from the mirror {from} (verified as from any relay, checkpoint {checkpoint}). Writes wait for the home.",
                home.origin()
            ));
            self.read_from.insert(*vault, pulled.from);
        }
        Ok(pulled.state)
    }

    /// The client of a vault's home relay: the profile's relay, unless the
    /// vault's owner named another home (`vault relays set --home`).
    pub fn client_for(&mut self, vault: &VaultId) -> Result<RelayClient> {
        match self.home_origin(vault) {
            Some(origin) => self.relay_client(&origin),
            None => self.client(),
        }
    }

    /// The home the owner named, from this device's verified copy, when it
    /// is not the profile's relay (the copy is read once per command).
    fn home_origin(&mut self, vault: &VaultId) -> Option<RelayOrigin> {
        if !self.homes.contains_key(vault) {
            let state = self.local(vault).ok()?;
            self.note_home(&state);
        }
        self.homes.get(vault).cloned().flatten()
    }

    /// Notes the home `state` names, for [`Session::client_for`] (after a
    /// pull, or after this device named the relays).
    pub fn note_home(&mut self, state: &VaultState) {
        let home = state
            .relays()
            .map(|r| r.home().clone())
            .filter(|h| Some(h) != self.profile_origin().as_ref());
        self.homes.insert(state.vault(), home);
    }

    /// The origin of the profile's relay, if one is configured.
    fn profile_origin(&self) -> Option<RelayOrigin> {
        RelayOrigin::parse(&self.relay_url().ok()?).ok()
    }

    /// A client of `origin` with this profile's identity published there
    /// (the profile's own client if `origin` is the profile's relay).
    pub fn relay_client(&mut self, origin: &RelayOrigin) -> Result<RelayClient> {
        if self.profile_origin().as_ref() == Some(origin) {
            return self.client();
        }
        if let Some(c) = self.others.get(origin) {
            return Ok(c.clone());
        }
        let client = self.bare_client(origin)?;
        self.rt.block_on(client.publish_identity())?;
        self.others.insert(origin.clone(), client.clone());
        Ok(client)
    }

    /// A client of `origin`, with no request made yet.
    fn bare_client(&mut self, origin: &RelayOrigin) -> Result<RelayClient> {
        if self.opts.offline {
            return Err(CliError::Usage(
                "this command needs the relay, but --offline was given".into(),
            ));
        }
        let secret = self.unlock()?;
        Ok(RelayClient::new(origin.as_str(), secret)?
            .with_retry_policy(vault_client::RetryPolicy::with_attempts(3)))
    }

    /// The relay to download a vault's ciphertext from: the mirror it was
    /// read from when its home did not answer, else its home.
    fn read_client(&mut self, vault: &VaultId) -> Result<RelayClient> {
        match self.read_from.get(vault) {
            Some(c) => Ok(c.clone()),
            None => self.client_for(vault),
        }
    }

    /// Sends every mirror of the vault what it lacks of this device's
    /// verified copy ([`mirrors::push_to_mirrors`]); empty when the vault
    /// names no mirror or no relay client can be made.
    pub fn push_mirrors(&mut self, state: &VaultState) -> Vec<mirrors::MirrorReport> {
        // Any client will do as the model of the mirrors' clients (the
        // identity and retry policy): the first mirror's.
        let Some(first) = state.relays().and_then(|r| r.mirrors().first()) else {
            return Vec::new();
        };
        let Ok(like) = self.bare_client(&first.clone()) else {
            return Vec::new();
        };
        self.rt
            .block_on(mirrors::push_to_mirrors(&mut self.store, &like, state))
    }

    /// Repairs the home relay's copy of a vault from this device's
    /// ([`mirrors::push_to`]: [`sync::repair`], after creating the vault
    /// from its genesis entry if the relay lost it entirely, which only
    /// the owner can).
    pub fn repair(&mut self, vault: &VaultId) -> Result<sync::Repaired> {
        let client = self.client_for(vault)?;
        Ok(self
            .rt
            .block_on(mirrors::push_to(&mut self.store, &client, vault))?)
    }

    /// This device's verified copy of a vault.
    pub fn local(&self, vault: &VaultId) -> Result<VaultState> {
        Ok(store::load_vault(&self.store, vault)?)
    }

    /// Makes the ciphertext of `records` available locally, downloading the
    /// missing ones (each checked against its signed hash): small ones
    /// concurrently and stored in batches as they arrive, large ones one at
    /// a time through a temporary file, so memory stays bounded.
    pub fn ensure_blobs(&mut self, state: &VaultState, records: &[RecordId]) -> Result<()> {
        let missing = vault_client::records::missing_blobs(&self.store, state, records)?;
        if missing.is_empty() {
            return Ok(());
        }
        if self.opts.offline || self.unreachable {
            return Err(CliError::NotOffline(format!(
                "the ciphertext of {} record(s)",
                missing.len()
            )));
        }
        let client = self.read_client(&state.vault())?;
        let (small, large): (Vec<_>, Vec<_>) = missing
            .into_iter()
            .partition(|m| m.ciphertext_len() <= SMALL_DOWNLOAD);
        let bar = self
            .out
            .progress((small.len() + large.len()) as u64, "downloading", false);
        let result = self.fetch_small(&client, &small, &bar).and_then(|()| {
            for m in &large {
                let mut spool =
                    tempfile::tempfile().map_err(|e| CliError::file(std::env::temp_dir(), e))?;
                self.rt.block_on(sync::fetch_blob(
                    &mut self.store,
                    &client,
                    &m.vault(),
                    m.ciphertext_hash(),
                    m.address_kind(),
                    m.ciphertext_len(),
                    &mut spool,
                ))?;
                bar.inc(1);
            }
            Ok(())
        });
        bar.finish_and_clear();
        match result {
            Err(e) if e.is_unreachable() => {
                Err(CliError::NotOffline("the records' ciphertext".into()))
            }
            other => other,
        }
    }

    /// Downloads small blobs concurrently, storing each window of them in
    /// one batch.
    fn fetch_small(
        &mut self,
        client: &RelayClient,
        small: &[vault_core::RecordMetadata],
        bar: &indicatif::ProgressBar,
    ) -> Result<()> {
        let inc = || bar.inc(1);
        self.rt.block_on(vault_client::records::fetch_small_blobs(
            &mut self.store,
            client,
            small,
            inc,
        ))?;
        Ok(())
    }

    /// The live records of `state` (of one collection, or all) this
    /// identity may read now.
    pub fn readable(
        &self,
        state: &VaultState,
        collection: Option<&vault_core::CollectionId>,
    ) -> Vec<vault_core::RecordSummary> {
        let access = state.access(&self.public.fingerprint(), self.now());
        state
            .records(collection)
            .into_iter()
            .filter(|r| access.may_read(&r.collection, &r.id))
            .collect()
    }

    /// The ids of every live record of `state` this identity may read now.
    pub fn readable_records(&self, state: &VaultState) -> Vec<RecordId> {
        self.readable(state, None)
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    /// A map from fingerprints to the names this device knows them by
    /// (you, contacts, then the names identities give themselves).
    pub fn namer(&self) -> Namer {
        let mut names = HashMap::new();
        if let Ok(all) = self.contacts.all(&self.store) {
            for c in all {
                names.insert(c.identity.fingerprint(), c.name);
            }
        }
        names.insert(self.public.fingerprint(), "you".to_owned());
        Namer { names }
    }
}

/// Names principals for display.
#[derive(Debug)]
pub struct Namer {
    names: HashMap<Fingerprint, String>,
}

impl Namer {
    /// The author of the entry at `seq` of `collection`, named as
    /// [`Namer::name`] does, and "on behalf of" the owner when the author
    /// wrote it as the owner's agent (`docs/format.md` §8.10).
    pub fn author(
        &self,
        fp: &Fingerprint,
        state: &VaultState,
        collection: &vault_core::CollectionId,
        seq: u64,
    ) -> String {
        // A device of the owner's wrote it as the owner; a member's, as the
        // member.
        let device = state
            .listed_device(fp)
            .map(|d| (state.owner().fingerprint(), d))
            .or_else(|| state.member_device(collection, fp));
        let name = match device {
            Some((person, device)) => {
                let whose = if self.names.get(&person).is_some_and(|n| n == "you") {
                    "your".to_owned()
                } else {
                    format!("{}'s", self.name(&person, Some(state)))
                };
                format!(
                    "{} ({whose} device)",
                    crate::output::clean(device.display_name())
                )
            }
            None => self.name(fp, Some(state)),
        };
        // An agent's device wrote as the agent, on the owner's behalf.
        if state.acting_for_owner(fp, collection, seq).is_some() {
            format!(
                "{name} on behalf of {}",
                self.name(&state.owner().fingerprint(), Some(state))
            )
        } else {
            name
        }
    }

    /// "contact-name", "you", or the identity's own display name (from the
    /// vault's log) marked as not a contact, or the fingerprint's first
    /// digits.
    pub fn name(&self, fp: &Fingerprint, state: Option<&VaultState>) -> String {
        if let Some(n) = self.names.get(fp) {
            return n.clone();
        }
        match state.and_then(|s| s.identity(fp)) {
            Some(i) => format!(
                "{} (not a contact, {})",
                crate::output::clean(i.display_name()),
                fp.digit_groups().first().cloned().unwrap_or_default()
            ),
            None => fp.to_hex().get(..12).unwrap_or_default().to_owned(),
        }
    }
}
