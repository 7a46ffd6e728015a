//! The person a device reads its inbox for (decision 76): recorded in the
//! profile's config with the relay it was recorded for, applied to the
//! relay client, and set aside for one command when the relay refuses it
//! (the config file is written only when a person is confirmed, so no
//! failure and no relay can make a device forget its person).

use std::future::Future;

use vault_client::{ClientError, RelayClient};
use vault_core::Fingerprint;

use super::Session;
use crate::error::{CliError, Result};

/// Whom a command reads the inbox for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acting {
    /// The person in the config file, on the relay it was recorded for.
    AsConfigured,
    /// This device alone, whatever the config file says (the relay refused
    /// to read for the person, or the person is being set).
    Alone,
    /// This person, not yet in the config file (a confirmation in
    /// progress).
    For(Fingerprint),
}

impl Session {
    /// The person this device reads its inbox for in this command: the
    /// config file's `person`, if it was recorded for the relay this
    /// command talks to (`person_relay`: another relay's directory need
    /// not hold the person's list), unless this command reads for the
    /// device alone.
    pub fn person(&self) -> Result<Option<Fingerprint>> {
        match self.acting {
            Acting::Alone => return Ok(None),
            Acting::For(person) => return Ok(Some(person)),
            Acting::AsConfigured => {}
        }
        let Some(hex) = self.config.person.as_deref() else {
            return Ok(None);
        };
        let person = Fingerprint::from_hex(hex).map_err(|_| {
            CliError::Usage(format!(
                "{}: `person` is not a fingerprint (64 lowercase hex digits); fix it, or delete the `person` lines and run `vault devices confirm`",
                self.home.config_file().display()
            ))
        })?;
        Ok(self.on_persons_relay().then_some(person))
    }

    /// Whether this command talks to the relay the config file's `person`
    /// was recorded for.
    fn on_persons_relay(&self) -> bool {
        let here = self.profile_origin().map(|o| o.as_str().to_owned());
        here.is_some() && self.config.person_relay == here
    }

    /// What to tell the user when the config file names a person for
    /// another relay than this command's: the device reads its own inbox
    /// here. Said once per relay client.
    pub(crate) fn person_elsewhere(&self) -> Option<String> {
        (self.acting == Acting::AsConfigured
            && self.config.person.is_some()
            && !self.on_persons_relay())
        .then(|| {
            format!(
                "notice: this device reads its person's inbox on {}, not on this relay: it reads its own here",
                self.config.person_relay.as_deref().unwrap_or("another relay")
            )
        })
    }

    /// Records in the config file that this device reads its inbox for
    /// `person` on the profile's relay (`None`: for itself), and applies
    /// it from now on in this command.
    pub fn set_person(&mut self, person: Option<Fingerprint>) -> Result<()> {
        let relay = match person {
            Some(_) => Some(
                self.profile_origin()
                    .ok_or_else(|| CliError::NoRelay(self.home.config_file()))?
                    .as_str()
                    .to_owned(),
            ),
            None => None,
        };
        let hex = person.map(|p| p.to_hex());
        self.acting = Acting::AsConfigured;
        self.client = None;
        if self.config.person == hex && self.config.person_relay == relay {
            return Ok(());
        }
        self.config.person = hex;
        self.config.person_relay = relay;
        self.home.save_config(&self.config)
    }

    /// Reads for `acting` in the rest of this command, without writing the
    /// config file.
    pub(crate) fn act(&mut self, acting: Acting) {
        if self.acting != acting {
            self.acting = acting;
            self.client = None;
        }
    }

    /// Whether the relay refused to read for this device's person: it does
    /// not list the device (`not_their_device`), or it predates decision 76.
    fn person_refused(e: &ClientError) -> bool {
        e.code() == "not_their_device" || matches!(e, ClientError::PersonNotServed)
    }

    /// `read` with the relay client, which reads for this device's person.
    /// If the relay refuses to read for the person, `read` again for this
    /// device alone, for the rest of this command, with a warning; the
    /// config file keeps its `person`.
    pub fn reading_for_person<T, F, Fut>(&mut self, read: F) -> Result<T>
    where
        F: Fn(RelayClient) -> Fut,
        Fut: Future<Output = vault_client::Result<T>>,
    {
        let client = self.client()?;
        match self.rt.block_on(read(client)) {
            Err(e) if Self::person_refused(&e) => {
                eprintln!(
                    "warning: {}; this command read this device's own inbox instead",
                    self.person_advice(&e)
                );
                self.act(Acting::Alone);
                let client = self.client()?;
                Ok(self.rt.block_on(read(client))?)
            }
            other => Ok(other?),
        }
    }

    /// `e`, with what to do when the relay refused to read for this
    /// device's person: for the accepted-owners commands, which must not
    /// change or show the device's own list in the person's place.
    pub fn person_error(&self, e: ClientError) -> CliError {
        if Self::person_refused(&e) {
            CliError::Usage(self.person_advice(&e))
        } else {
            e.into()
        }
    }

    fn person_advice(&self, e: &ClientError) -> String {
        let config = self.home.config_file();
        if matches!(e, ClientError::PersonNotServed) {
            format!(
                "this device reads its person's inbox and accepted owners, and this relay cannot (it predates decision 76): update the relay, or delete the `person` lines from {} to use this device's own",
                config.display()
            )
        } else {
            format!(
                "the relay says this device is not on its person's current device list: if the person listed it again, run `vault devices confirm` (with `--contact NAME` if you pinned them under another name than `me`); if they removed it, delete the `person` lines from {}",
                config.display()
            )
        }
    }

    /// The owners this device accepted on its own list, before it starts
    /// reading for a person: [`Session::carry_own_accepted`] adds them to
    /// the person's list, so that none stops counting. None if the list
    /// cannot be read (with a warning).
    pub fn own_accepted(&mut self) -> Vec<Fingerprint> {
        let before = self.acting;
        self.act(Acting::Alone);
        let own = self
            .client()
            .and_then(|c| Ok(self.rt.block_on(c.accepted_owners())?));
        self.act(before);
        match own {
            Ok(list) => list.owners,
            Err(e) => {
                eprintln!("warning: the owners this device accepted on its own list could not be read ({e}); `vault inbox accepted` shows its person's list once it reads for them, to accept any again");
                Vec::new()
            }
        }
    }

    /// Adds `owners` ([`Session::own_accepted`]) to the accepted list of
    /// the person this device now reads for; a failure is a warning that
    /// names them.
    pub fn carry_own_accepted(&mut self, owners: &[Fingerprint]) {
        if owners.is_empty() {
            return;
        }
        let done = self
            .client()
            .and_then(|c| Ok(self.rt.block_on(vault_client::inbox::accept(&c, owners))?));
        if let Err(e) = done {
            let named: Vec<String> = owners.iter().map(|o| o.to_hex()).collect();
            eprintln!(
                "warning: the owners this device accepted were not added to its person's list ({e}); once the relay allows it, run `vault inbox accept {}`",
                named.join(" ")
            );
        }
    }
}
