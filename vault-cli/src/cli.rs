//! The command line: every command, flag and help text (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Getting started (patient):
  vault init --name \"Alice Example\"            create your identity
  vault create                                 create your vault on the relay
  vault import patient-bundle.json             import a FHIR R4 bundle
  vault share labs --with dr-jones --until 30d share a collection

Getting started (clinician):
  vault init --name \"Dr Jones\" --role clinician
  vault whoami                                 show the fingerprint to your patient
  vault contacts add alice --lookup <fingerprint>
  vault inbox                                  what patients shared with you

Exit codes: 0 ok, 1 error, 2 usage, 3 wrong passphrase or no identity,
4 access denied, 5 not found, 6 integrity or security failure (tampering,
rollback, fork, changed key), 7 relay unreachable, 130 interrupted (Ctrl-C).";

/// vault: your end-to-end encrypted health records.
///
/// Records are sealed on this device before they reach the relay; the relay
/// stores only ciphertext. Patients create a vault and share collections
/// with clinicians; clinicians read what was shared and write results back.
#[derive(Debug, Parser)]
#[command(name = "vault", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Options every command understands.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The relay to talk to (overrides the config file).
    #[arg(
        long,
        global = true,
        env = "VAULT_RELAY",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Global options"
    )]
    pub relay: Option<String>,

    /// The invitation token a relay asks new identities for (only relays
    /// whose operator requires one).
    #[arg(
        long,
        global = true,
        env = "VAULT_INVITE",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Global options"
    )]
    pub invite: Option<String>,

    /// Which vault: a vault id (or a unique prefix of it), a contact's name
    /// (the vault that contact owns), or `mine`. Defaults to your own vault,
    /// or the only vault this device knows.
    #[arg(
        long,
        short = 'v',
        global = true,
        value_name = "VAULT",
        help_heading = "Global options"
    )]
    pub vault: Option<String>,

    /// Read the passphrase from the first line of this file instead of
    /// prompting (the VAULT_PASSPHRASE environment variable also works).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    pub passphrase_file: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Do not contact the relay: work from this device's copy.
    #[arg(long, global = true, help_heading = "Global options")]
    pub offline: bool,

    /// No progress bars or notices (errors are still printed).
    #[arg(long, short = 'q', global = true, help_heading = "Global options")]
    pub quiet: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create your identity (keys sealed with a passphrase on this device).
    Init(InitArgs),
    /// Show your identity and fingerprint (also as a QR code).
    Whoami(WhoamiArgs),
    /// Manage the people you share with (their keys are pinned).
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Create a new vault on the relay (patients).
    Create,
    /// Fetch new entries and records for your vaults, and vaults shared with
    /// you by verified contacts.
    Sync(SyncArgs),
    /// List the vaults this device knows.
    Vaults,
    /// Show or name the relays that keep a vault: its home and mirrors.
    ///
    /// The home is where writes go; up to 8 mirrors run by other operators
    /// are read from when the home does not answer. Shows what each holds
    /// against this device (up to date, behind, forked, unreachable).
    ///
    /// Mirrors are kept by your devices: `vault sync` pushes to each mirror
    /// the signed entries and encrypted records it lacks, and each mirror
    /// checks them as it would any write. A mirror sees what the home sees
    /// (ciphertext, sizes, who holds which grant), no more.
    Relays(RelaysArgs),
    /// Vaults that patients shared with you, and what they contain; and
    /// whose shares you accept.
    ///
    /// Anyone can share with anyone, so the relay lists shares from people
    /// you have not accepted (strangers) only up to a limit: a flood of
    /// shares cannot bury the ones you expect. Your contacts are accepted
    /// when you sync; `vault inbox accept` accepts someone else.
    Inbox(InboxArgs),
    /// List the collections of a vault.
    Collections,
    /// Add files to a collection (FHIR JSON, PDF, images, notes...).
    Add(AddArgs),
    /// Import a FHIR R4 bundle: each resource becomes a record, sorted into
    /// collections (labs, conditions, medications, ...).
    Import(ImportArgs),
    /// Pull your record from a hospital's or GP's FHIR R4 server: each
    /// resource becomes a record, as with `vault import`.
    ///
    /// Fetches Patient/ID/$everything (every page), or with --bulk the Bulk
    /// Data export. The next pull asks only for what changed since this one
    /// (the cursor is kept, encrypted, in the vault's pull-sources
    /// collection, so your other devices continue from it); a resource that
    /// changed on the server becomes a new version of its record, and
    /// running the same pull twice adds nothing. An interrupted pull is
    /// resumed by running it again.
    Pull(PullArgs),
    /// List records, with readable titles.
    List(ListArgs),
    /// Show a record: who wrote it, when, and a readable summary.
    Show(ShowArgs),
    /// Write records' contents to stdout or files.
    Open(OpenArgs),
    /// Delete a record (a signed deletion in the log; earlier versions stay
    /// in the history).
    ///
    /// The history stays readable to you and to those who could already
    /// read it. Anyone you share the collection with afterwards cannot
    /// fetch or open deleted or replaced versions: the collection's key is
    /// rotated before that share.
    Delete(DeleteArgs),
    /// Destroy a record's earlier versions for good, keeping the current one
    /// (owner only).
    ///
    /// The relay and your devices delete their ciphertext; nobody, you
    /// included, can fetch or open them again. Copies someone already
    /// downloaded stay where they are. To destroy a record entirely, use
    /// `vault delete --purge`.
    Purge(PurgeArgs),
    /// Share a collection or one record with a contact.
    Share(ShareArgs),
    /// Revoke a contact's access (the collection key is rotated).
    Revoke(RevokeArgs),
    /// Who has access to what.
    Access,
    /// Agents who act for you in chosen collections: name, list, end.
    ///
    /// An agent is someone you trust to act for you: a parent for a child,
    /// an adult child, a lawyer. An agent reads the collections you name, and with the powers you
    /// give may add records, share the collections with others and revoke
    /// them, and name further agents within its own powers. It never
    /// deletes, never touches your keys or your other collections, and
    /// everything it does is shown as done on your behalf. Ending an
    /// agency takes its access at once and rotates the collection's key;
    /// what the agent did stays.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// The devices that act for you: each has its own key, reads and
    /// writes your vault as you, and can be removed alone if it is lost.
    ///
    /// To add one, pair it: `vault devices pair` here shows a 10-digit code;
    /// on the new device, `vault init --role device --name laptop` then
    /// `vault devices join CODE`. Both screens then show the same 8 digits,
    /// which you type on each to confirm: a relay in the middle cannot make
    /// them agree. (`vault devices add FINGERPRINT`, with the 64 hex digits
    /// `vault whoami --json` shows on the new device, does the same without
    /// pairing.) Removing a device rotates every collection's key, so
    /// nothing written afterwards opens with its keys, and the relay refuses
    /// it in this vault at once; people it shared with keep their access
    /// (you are told who). If a stolen device changed the list, `vault
    /// devices recover` with your key file takes it back.
    ///
    /// A clinician (a person who owns no vault) lists devices the same way:
    /// the list is published on the relay, so whoever shares with you next
    /// grants every device, and it is carried into the collections already
    /// shared with you. A device you remove is refused there at once, and
    /// each owner's next `vault sync` (or web app refresh) rotates the key
    /// it held.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Export the vault as standard age files plus a FHIR R4 bundle.
    Export(ExportArgs),
    /// Verify the whole vault and print its checkpoint code.
    Verify(VerifyArgs),
    /// SMART Health Links: share a patient summary, a collection or chosen
    /// records with anyone, by link or QR code, with no account.
    ///
    /// The files are encrypted on this device under a key that only the
    /// link carries; the relay stores ciphertext, a slow hash of the
    /// passcode, and a record of every fetch. Anyone holding the link (and
    /// the passcode, if any) can read what it shares until it expires or
    /// is revoked.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Unlock once: later commands ask no passphrase until idle or locked.
    ///
    /// Later commands of this profile then ask no passphrase. The agent
    /// answers only your user, writes nothing secret to disk, and forgets
    /// the key after the idle timeout. Without it, every command asks for
    /// the passphrase as before.
    Unlock(UnlockArgs),
    /// Forget the unlocked identity now (commands ask the passphrase again).
    Lock,
    /// Run a hospital trust's gateway: deposit each enrolled patient's new
    /// and changed FHIR resources into their vault, reading nothing.
    ///
    /// Each patient grants this identity deposit rights on one collection
    /// (`vault share COLLECTION --with GATEWAY --deposit`) and is enrolled
    /// in the configuration file with their FHIR id and fingerprint. Every
    /// round polls the FHIR server for what changed and deposits it, each
    /// resource version exactly once, even across crashes (a ledger in the
    /// state directory remembers what was deposited). Logs and the status
    /// file carry counts and errors, never clinical content.
    Gateway(GatewayArgs),
    /// Print shell completions.
    Completions(CompletionsArgs),
    /// The agent process `vault unlock` starts (not for direct use).
    #[command(hide = true)]
    AgentServe(AgentServeArgs),
}

/// `vault gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The configuration file (TOML): the FHIR server and the enrolled
    /// patients.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Run one round and exit (non-zero if any patient failed).
    #[arg(long)]
    pub once: bool,
    /// Seconds between rounds (default: the configuration's `interval`,
    /// or 300).
    #[arg(long, value_name = "SECONDS")]
    pub interval: Option<u64>,
    /// Where the ledger of deposits lives [default: gateway/ in the
    /// profile directory].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Write each round's report (JSON) to this file, atomically.
    #[arg(long, value_name = "FILE")]
    pub status: Option<PathBuf>,
}

/// `vault unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Forget the key after this long without a command: 90s, 15min, 2h
    /// (at most 24h).
    #[arg(long, value_name = "DURATION", default_value = "15min")]
    pub idle: String,
}

/// `vault agent-serve`.
#[derive(Debug, Args)]
pub struct AgentServeArgs {
    /// The socket to answer on.
    #[arg(long)]
    pub socket: PathBuf,
    /// Idle timeout in seconds.
    #[arg(long)]
    pub idle_seconds: u64,
}

/// `vault init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Your name. A clinician's is published in their identity; a
    /// patient's stays on this device (see --public-name).
    #[arg(long)]
    pub name: String,
    /// The name published in your identity, which the relay and everyone
    /// you share with can see. Default: your name for clinicians, "Patient"
    /// for patients (the people you share with name you in their own
    /// contacts after checking your fingerprint).
    #[arg(long, value_name = "NAME")]
    pub public_name: Option<String>,
    /// Your role.
    #[arg(long, value_enum, default_value_t = RoleArg::Patient)]
    pub role: RoleArg,
    /// Professional registration number (clinicians).
    #[arg(long, value_name = "NUMBER")]
    pub registration: Option<String>,
    /// scrypt cost of the key file, as log2(N): 15 to 20. Higher is slower to
    /// unlock and harder to brute-force.
    #[arg(long, default_value_t = 18, value_name = "N", value_parser = clap::value_parser!(u8).range(15..=20))]
    pub work_factor: u8,
    /// Save this relay address in the config file.
    #[arg(long = "save-relay")]
    pub save_relay: bool,
}

/// Roles selectable at `vault init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// A patient, who owns vaults.
    Patient,
    /// A clinician, who receives shares.
    Clinician,
    /// Another device of yours (a laptop, a second CLI profile): it reads
    /// and writes your vault as you once your patient profile (or the web
    /// app) adds it with `vault devices add`, and can be removed alone if
    /// it is lost. Name it after the device ("laptop"): the people you
    /// share with see it. It never owns a vault of its own.
    Device,
}

/// `vault whoami`.
#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// Print only your public identity text (to send to others).
    #[arg(long)]
    pub export: bool,
    /// Do not draw the QR code.
    #[arg(long)]
    pub no_qr: bool,
    /// Publish your identity on the relay so others can look it up by
    /// fingerprint.
    #[arg(long)]
    pub publish: bool,
}

/// `vault inbox`.
#[derive(Debug, Args)]
pub struct InboxArgs {
    /// List only shares from people you have not accepted (as the relay
    /// claims them; nothing is joined).
    #[arg(long)]
    pub strangers: bool,
    /// Accept or forget owners, or show whom you accept.
    #[command(subcommand)]
    pub action: Option<InboxCommand>,
}

/// `vault inbox ...`.
#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// Accept shares from these owners in full (contact names, or 64-hex
    /// fingerprints).
    Accept {
        /// Contact names or fingerprints.
        #[arg(required = true, value_name = "WHO")]
        who: Vec<String>,
    },
    /// Stop accepting these owners (their shares are listed as a
    /// stranger's again).
    Forget {
        /// Contact names or fingerprints.
        #[arg(required = true, value_name = "WHO")]
        who: Vec<String>,
    },
    /// Show whom you accept shares from.
    Accepted,
}

/// `vault contacts ...`.
#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    /// Add a contact from an identity file or text, or look it up on the
    /// relay by fingerprint; the key is pinned under the name.
    Add(ContactAddArgs),
    /// List contacts.
    List,
    /// Show one contact.
    Show {
        /// The contact's name.
        name: String,
    },
    /// Forget a contact (its pin is kept, so a changed key is still caught
    /// if it is added again; use --replace then).
    Remove {
        /// The contact's name.
        name: String,
    },
}

/// `vault contacts add`.
#[derive(Debug, Args)]
pub struct ContactAddArgs {
    /// A short name for the contact (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The contact's identity: a file written by `vault whoami --export`, or
    /// `-` for stdin.
    #[arg(long, value_name = "FILE", conflicts_with = "lookup")]
    pub file: Option<PathBuf>,
    /// Look the identity up on the relay by this fingerprint (the 64 hex
    /// digits `vault whoami` prints); the relay cannot substitute another
    /// key.
    #[arg(long, value_name = "FINGERPRINT")]
    pub lookup: Option<String>,
    /// The fingerprint the contact gave you in person or by phone (the six
    /// groups of digits, or the 64 hex digits); the identity must match it.
    /// Without it you are asked to confirm.
    #[arg(long, value_name = "FINGERPRINT", num_args = 1..=6)]
    pub verify: Option<Vec<String>>,
    /// Replace the key already pinned under this name (after verifying the
    /// new fingerprint with the contact).
    #[arg(long)]
    pub replace: bool,
}

/// `vault add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Files to add (`-` reads stdin, which needs --title).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The collection to add to (created if it does not exist and you own
    /// the vault).
    #[arg(long, short = 'c')]
    pub collection: String,
    /// Title (default: the FHIR resource's title, or the file name).
    #[arg(long)]
    pub title: Option<String>,
    /// Content type (default: guessed from the contents and file name).
    #[arg(long = "type", value_name = "MIME")]
    pub content_type: Option<String>,
    /// Replace this record with a new version instead of adding a record.
    #[arg(long, value_name = "RECORD")]
    pub replace: Option<String>,
}

/// `vault import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A FHIR R4 Bundle (or a single resource) as JSON.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Import resources already in the vault again (by default a resource
    /// whose type and id are already in the vault is skipped, so an
    /// interrupted import can simply be run again).
    #[arg(long)]
    pub again: bool,
}

/// `vault pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The FHIR R4 server's base URL, such as `https://fhir.example.org/r4`.
    #[arg(long, value_name = "BASE_URL")]
    pub fhir: String,
    /// Your patient id on that server.
    #[arg(long, value_name = "ID")]
    pub patient: String,
    /// Use the Bulk Data export (Patient/$export, polled until ready, files
    /// streamed) instead of Patient/ID/$everything; only your own
    /// resources are kept.
    #[arg(long)]
    pub bulk: bool,
    /// With --bulk: export this Group (Group/ID/$export, a group the
    /// server keeps of your records) instead of every patient.
    #[arg(long, value_name = "ID", requires = "bulk")]
    pub group: Option<String>,
    /// Read a bearer token from the first line of this file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["token_env", "smart_client_id"])]
    pub token_file: Option<PathBuf>,
    /// Read a bearer token from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "smart_client_id")]
    pub token_env: Option<String>,
    /// SMART Backend Services: the client id registered with the server
    /// (with --smart-key).
    #[arg(long, value_name = "ID", requires = "smart_key")]
    pub smart_client_id: Option<String>,
    /// SMART Backend Services: the client's private key (PKCS#8 PEM: EC
    /// P-384, P-256 or RSA), which signs the token request.
    #[arg(long, value_name = "FILE", requires = "smart_client_id")]
    pub smart_key: Option<PathBuf>,
    /// SMART Backend Services: the key id (kid) registered with the server.
    #[arg(long, value_name = "KID", requires = "smart_client_id")]
    pub smart_kid: Option<String>,
    /// SMART Backend Services: the scope to ask for [default: system/*.read].
    #[arg(long, value_name = "SCOPE", requires = "smart_client_id")]
    pub smart_scope: Option<String>,
    /// SMART Backend Services: the token endpoint (default: from the
    /// server's .well-known/smart-configuration).
    #[arg(long, value_name = "URL", requires = "smart_client_id")]
    pub smart_token_url: Option<String>,
    /// Fetch everything again, ignoring the saved cursor (still only new or
    /// changed resources are filed).
    #[arg(long)]
    pub full: bool,
    /// How long to wait for a bulk export to be ready: 90s, 15min, 2h.
    #[arg(long, value_name = "DURATION", default_value = "30min")]
    pub bulk_wait: String,
}

/// `vault list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this collection.
    #[arg(long, short = 'c')]
    pub collection: Option<String>,
    /// Only records whose type contains this (e.g. Observation, pdf).
    #[arg(long = "type", value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Newest first (by clinical date).
    #[arg(long)]
    pub newest: bool,
}

/// `vault show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The record: its id or a unique prefix of it (as `vault list` shows).
    pub record: String,
    /// Also print the whole FHIR JSON.
    #[arg(long)]
    pub full: bool,
}

/// `vault open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Records to open (ids or unique prefixes).
    #[arg(value_name = "RECORD")]
    pub records: Vec<String>,
    /// Open every record of this collection.
    #[arg(long, short = 'c', conflicts_with = "records")]
    pub collection: Option<String>,
    /// Where to write: a file (one record), a directory (several), or `-`
    /// for stdout. Default: stdout for one record.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// `vault delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The record: its id or a unique prefix of it.
    pub record: String,
    /// Also destroy every version of it for good (owner only): the relay
    /// and your devices delete the ciphertext, and nobody, you included,
    /// can fetch or open it again. Copies already downloaded stay where
    /// they are.
    #[arg(long)]
    pub purge: bool,
}

/// `vault purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The record: its id or a unique prefix of it.
    pub record: String,
}

/// `vault share`.
#[derive(Debug, Args)]
pub struct ShareArgs {
    /// A collection name, or a record id (prefix) with --record.
    pub what: String,
    /// The contact to share with.
    #[arg(long, value_name = "CONTACT")]
    pub with: String,
    /// Share one record (its current version, read-only) instead of a
    /// collection.
    #[arg(long)]
    pub record: bool,
    /// Allow the contact to add records to the collection, and to replace
    /// or delete any of its records, yours included (see --add-only).
    #[arg(long, conflicts_with = "add_only")]
    pub write: bool,
    /// Allow the contact to add records and new versions of the records
    /// they added, but never to delete or replace anyone else's.
    #[arg(long, conflicts_with = "deposit")]
    pub add_only: bool,
    /// Write-only, for an organisation's gateway such as a hospital lab:
    /// the contact may add records to the collection (as --add-only) but
    /// can read nothing in the vault, not even what it added. Its records
    /// show it as their author.
    #[arg(long, conflicts_with = "write")]
    pub deposit: bool,
    /// Access ends at this time: a duration (`90min`, `12h`, `30d`, `2w`,
    /// `6mo`, `1y`) or a date (`2027-01-31`).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
}

/// `vault revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Whose access ends: a contact's name, or a fingerprint (or its first
    /// 8+ hex digits, as `vault access --json` shows) for a member who is
    /// not a contact or whose key was replaced.
    #[arg(value_name = "WHO")]
    pub contact: String,
    /// Only this collection (default: every collection and record shared
    /// with the contact).
    #[arg(long, short = 'c')]
    pub collection: Option<String>,
}

/// `vault export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A new directory to write the export into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `vault relays`.
#[derive(Debug, Args)]
pub struct RelaysArgs {
    /// Name the vault's relays (owner only).
    #[command(subcommand)]
    pub action: Option<RelaysCommand>,
}

/// `vault relays ...`.
#[derive(Debug, Subcommand)]
pub enum RelaysCommand {
    /// Name the vault's home relay and its mirrors, replacing the list
    /// (owner only). The mirrors receive a copy at once.
    ///
    /// To move the vault's home (its operator is closing, or it is gone),
    /// name the new home with --home: this device first sends it
    /// everything it verified, then the naming is written there. Members'
    /// devices follow the move at their next sync, from any relay that
    /// answers.
    Set {
        /// The home relay (default: the current home).
        #[arg(long, value_name = "URL")]
        home: Option<String>,
        /// A mirror relay (repeat for several, at most 8; none to stop
        /// mirroring).
        #[arg(long = "mirror", value_name = "URL")]
        mirrors: Vec<String>,
    },
}

/// `vault sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Repair a relay that lost entries this device verified (restored
    /// from an older backup, or failed over to a replica that lagged):
    /// push back, signed by their authors, the entries and record
    /// ciphertexts this device holds. The relay checks them as any new
    /// entry; a relay whose history differs from this device's (a fork) is
    /// refused and left unchanged.
    #[arg(long)]
    pub repair: bool,
}

/// `vault verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A checkpoint code someone else read from their device: it must match
    /// this device's history of the vault.
    #[arg(long, value_name = "CODE")]
    pub compare: Option<String>,
}

/// `vault completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `vault agents ...`.
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Name a contact your agent in one or more collections.
    Name(AgentNameArgs),
    /// List the agents of this vault: who named them, their powers, and
    /// where they are in force.
    List,
    /// End a contact's agency (in every collection, or one): their access
    /// ends and the collection's key is rotated.
    ///
    /// What the agent did stays: the records it added, and the people it
    /// shared with or revoked. `vault access` lists the people it shared
    /// with; `vault revoke` them if they should go too. An agent may end
    /// its own agency, and an agent may end the agencies it named.
    End(AgentEndArgs),
}

/// `vault devices`.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List the devices that act for the vault's owner (for a person who
    /// owns no vault: your devices, as the relay publishes them).
    List,
    /// Pair a new device: shows a code to type on it (`vault devices join
    /// CODE`), then the 8 digits both screens show, and adds the device
    /// once you type the digits the new device shows.
    ///
    /// The code works for 10 minutes, for one device; Ctrl-C before the
    /// device is added closes it at once.
    Pair,
    /// On a new device (`vault init --role device`): join the pairing
    /// another of your devices (or your key file) opened with `vault
    /// devices pair`, compare the 8 digits both screens show, and wait to
    /// be added.
    Join(JoinArgs),
    /// Add a device by its whole fingerprint (its identity published on the
    /// relay, of role device); `vault devices pair` does it by a code.
    Add(DeviceArgs),
    /// Remove a device (lost, stolen or retired): the relay refuses it,
    /// and every collection's key is rotated.
    Remove(DeviceArgs),
    /// Take the device list back with your key file, after a device was
    /// stolen or the list changed without you: only the devices you keep
    /// act for you, and every collection's key is rotated.
    ///
    /// Run it from the profile holding your key file (`vault init`), not a
    /// device's. While one of your own devices is still listed, `vault
    /// devices remove` from it is enough and keeps every record; this
    /// command also works when the list was changed so that your key file
    /// cannot open it, and then drops the records only the thief's keys
    /// open.
    Recover(RecoverArgs),
    /// On a device of a person who owns no vault (a clinician): sign your
    /// person's device list, unchanged, so that this device acts for that
    /// person even where someone else listed its public document first.
    ///
    /// The device then reads its person's inbox and accepted owners on the
    /// relay, so the person's patients are never strangers to it.
    ///
    /// `vault devices join` does it once the device is added; run it on a
    /// device added by `vault devices add FINGERPRINT`, or when the join
    /// said it could not.
    Confirm(ConfirmArgs),
}

/// `vault devices confirm`.
#[derive(Debug, Args)]
pub struct ConfirmArgs {
    /// The contact this device acts for, as `vault devices join` pinned
    /// it.
    #[arg(long, default_value = "me", value_name = "NAME")]
    pub contact: String,
}

/// `vault devices join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The 10-digit code `vault devices pair` (or the web app) shows on
    /// your other device; spaces and dashes are ignored.
    #[arg(required = true, num_args = 1..=3, value_name = "CODE")]
    pub code: Vec<String>,
    /// The contact name to pin the person under on this device: the name
    /// later commands take (`--vault me`).
    #[arg(long, default_value = "me", value_name = "NAME")]
    pub contact: String,
}

/// `vault devices recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// A device to keep (at least 8 hex digits of its fingerprint, see
    /// `vault devices list`; any device ever listed in the vault). Repeat
    /// for several; without any, no device acts for you until you add one
    /// again.
    #[arg(long, value_name = "FINGERPRINT")]
    pub keep: Vec<String>,
}

/// `vault devices add` and `vault devices remove`.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// The device's fingerprint: whole to add (as `vault whoami` shows it
    /// on that device), at least 8 hex digits to remove (see `vault
    /// devices list`).
    #[arg(value_name = "FINGERPRINT")]
    pub device: String,
}

/// `vault agents name`.
#[derive(Debug, Args)]
pub struct AgentNameArgs {
    /// The contact to name (a verified contact: `vault contacts add`).
    #[arg(value_name = "CONTACT")]
    pub contact: String,
    /// A collection the agent acts in (repeat for several).
    #[arg(long, short = 'c', required = true, value_name = "COLLECTION")]
    pub collection: Vec<String>,
    /// What the agent may do besides reading, comma-separated: `add`
    /// (records, and new versions of its own), `share` (share these
    /// collections read or read-add, and revoke people), `name-agents`
    /// (name further agents within its own powers). Default: read only.
    #[arg(long, value_name = "POWERS", default_value = "")]
    pub powers: String,
    /// The agency ends by itself at this time: a duration (`90min`,
    /// `12h`, `30d`, `2w`, `6mo`, `1y`) or a date (`2027-01-31`).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
}

/// `vault agents end`.
#[derive(Debug, Args)]
pub struct AgentEndArgs {
    /// The agent: a contact's name, or a fingerprint prefix as `vault
    /// agents list --json` shows.
    #[arg(value_name = "AGENT")]
    pub agent: String,
    /// Only in this collection (default: every collection it acts in).
    #[arg(long, short = 'c')]
    pub collection: Option<String>,
}

/// `vault link ...`.
#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Make a link to a patient summary, a collection or chosen records,
    /// and print it with a QR code.
    Create(LinkCreateArgs),
    /// List your links: status, expiry, how often they were fetched.
    List,
    /// Revoke a link: it stops working at once and its files are deleted
    /// at the relay.
    Revoke {
        /// The link's handle (or a unique prefix, from `vault link list`),
        /// or the link itself.
        link: String,
    },
    /// Who fetched a link, when, and whether the passcode was right.
    ///
    /// Each line is what a requester sent as its name (`recipient`); the
    /// relay cannot check it.
    Log {
        /// The link's handle (or a unique prefix), or the link itself.
        link: String,
    },
    /// Open a SMART Health Link as its recipient (no identity needed) and
    /// write what it shares.
    Open(LinkOpenArgs),
}

/// `vault link create`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["summary", "collection", "records"])))]
pub struct LinkCreateArgs {
    /// Share a patient summary made now from your FHIR records (an
    /// International Patient Summary document: problems, medications,
    /// allergies, immunizations, recent results, procedures).
    #[arg(long)]
    pub summary: bool,
    /// Share every FHIR record of this collection.
    #[arg(long, short = 'c', value_name = "NAME")]
    pub collection: Option<String>,
    /// Share these FHIR records (ids or unique prefixes).
    #[arg(value_name = "RECORD")]
    pub records: Vec<String>,
    /// Require a passcode, asked on the terminal (or read from
    /// VAULT_LINK_PASSCODE); give it to the recipient separately.
    #[arg(long)]
    pub passcode: bool,
    /// Require the passcode on the first line of this file.
    #[arg(long, value_name = "FILE")]
    pub passcode_file: Option<PathBuf>,
    /// Wrong passcodes allowed before the link is disabled for good.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_attempts: u32,
    /// When the link stops working: a duration (90min, 12h, 30d, 2w, 6mo,
    /// 1y) or a date (2027-01-31).
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,
    /// A short description for the recipient (at most 80 characters; in
    /// the link only, never sent to the relay).
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Mark the link for long-term use (flag L).
    #[arg(long)]
    pub long_term: bool,
    /// Make a direct-file link (flag U): its URL is the one encrypted file,
    /// fetched with a single request and no manifest. It cannot have a
    /// passcode.
    #[arg(long, conflicts_with_all = ["passcode", "passcode_file"])]
    pub direct: bool,
    /// Do not draw the QR code.
    #[arg(long)]
    pub no_qr: bool,
}

/// `vault link open`.
#[derive(Debug, Args)]
pub struct LinkOpenArgs {
    /// The link: `shlink:/...` or a viewer link ending in `#shlink:/...`.
    pub link: String,
    /// Who you are, as the sharer will see it in the link's record.
    #[arg(long, value_name = "NAME")]
    pub recipient: String,
    /// The link's passcode, from the first line of this file (else
    /// VAULT_LINK_PASSCODE, else asked on the terminal when needed).
    #[arg(long, value_name = "FILE")]
    pub passcode_file: Option<PathBuf>,
    /// Write the shared files here (a file for one, a directory for
    /// several); default: stdout.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
}
