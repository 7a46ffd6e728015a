//! The person a device reads its inbox for (decision 76): recorded in the
//! profile's config with the relay it was recorded for, applied to the
//! relay client, and given up for one command when the relay refuses it.

use std::future::Future;

use vault_client::{ClientError, RelayClient};
use vault_core::Fingerprint;

use super::Session;
use crate::error::{CliError, Result};

impl Session {
    /// The person this device reads its inbox for (`person` in the config
    /// file), if any, and if it was recorded for the relay this command
    /// talks to (`person_relay`): another relay's directory need not hold
    /// the person's list.
    pub fn person(&self) -> Result<Option<Fingerprint>> {
        let Some(hex) = self.config.person.as_deref() else {
            return Ok(None);
        };
        let person = Fingerprint::from_hex(hex).map_err(|_| {
            CliError::Usage(format!(
                "{}: `person` is not a fingerprint (64 lowercase hex digits); fix it, or delete the line and run `vault devices confirm`",
                self.home.config_file().display()
            ))
        })?;
        let here = self.relay_url().ok();
        Ok((here.is_some() && self.config.person_relay == here).then_some(person))
    }

    /// Records `person` as the person this device reads its inbox for on
    /// the profile's relay (`None`: its own), in the config file and the
    /// relay client.
    pub fn set_person(&mut self, person: Option<Fingerprint>) -> Result<()> {
        let hex = person.map(|p| p.to_hex());
        let relay = person.and_then(|_| self.relay_url().ok());
        if self.config.person == hex && self.config.person_relay == relay {
            return Ok(());
        }
        self.config.person = hex;
        self.config.person_relay = relay;
        self.home.save_config(&self.config)?;
        self.client = None;
        Ok(())
    }

    /// Whether the relay refused to read for this device's person: it does
    /// not list the device (`not_their_device`), or it predates decision 76.
    fn person_refused(e: &ClientError) -> bool {
        e.code() == "not_their_device" || matches!(e, ClientError::PersonNotServed)
    }

    /// `read` with the relay client, which reads for this device's person.
    /// If the relay refuses to read for the person, `read` again with a
    /// client reading for this device alone, for the rest of this command,
    /// with a warning; the config file keeps its `person`, for a relay must
    /// not be able to make a device forget its person.
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
                self.config.person = None;
                self.client = None;
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
                "the relay says this device is not on its person's current device list: if the person listed it again, run `vault devices confirm`; if they removed it, delete the `person` lines from {}",
                config.display()
            )
        }
    }

    /// The owners this device accepted on its own list, before it reads
    /// for a person: [`Session::carry_own_accepted`] adds them to the
    /// person's list, so that none stops counting. None if the list cannot
    /// be read (with a warning).
    pub fn own_accepted(&mut self) -> Vec<Fingerprint> {
        let saved = self.config.person.take();
        self.client = None;
        let own = self
            .client()
            .and_then(|c| Ok(self.rt.block_on(c.accepted_owners())?));
        self.config.person = saved;
        self.client = None;
        match own {
            Ok(list) => list.owners,
            Err(e) => {
                eprintln!("warning: the owners this device accepted could not be read ({e}); accept them again with `vault inbox accept`");
                Vec::new()
            }
        }
    }

    /// Adds `owners` ([`Session::own_accepted`]) to the accepted list of
    /// the person this device now reads for; a failure is a warning.
    pub fn carry_own_accepted(&mut self, owners: &[Fingerprint]) {
        if owners.is_empty() {
            return;
        }
        let done = self
            .client()
            .and_then(|c| Ok(self.rt.block_on(vault_client::inbox::accept(&c, owners))?));
        if let Err(e) = done {
            eprintln!("warning: the {} owner(s) this device accepted were not added to its person's list ({e}); accept them again with `vault inbox accept`", owners.len());
        }
    }
}
