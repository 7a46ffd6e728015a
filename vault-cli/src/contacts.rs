//! The contact book: names for other people's public identities.
//!
//! The identities are kept in `contacts.json`; the fingerprint of each is
//! also pinned in the local store under `contact:<name>`, and every use
//! checks the identity against that pin, so an identity swapped in the file
//! or on the relay is refused ([`vault_core::Error::PinnedKeyChanged`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vault_core::store::Store;
use vault_core::{Fingerprint, PublicIdentity};

use crate::error::{CliError, Result};
use crate::home::write_atomic;

/// One contact as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    identity: String,
    added_at: u64,
}

/// The contact book of one profile.
#[derive(Debug)]
pub struct Contacts {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

/// A contact, checked against its pin.
#[derive(Clone, Debug)]
pub struct Contact {
    /// The name it is filed under.
    pub name: String,
    /// The identity (its fingerprint equals the pinned one).
    pub identity: PublicIdentity,
    /// When it was added (Unix seconds).
    pub added_at: u64,
}

/// A refused pin, in the contact's own name.
fn key_changed(name: &str, e: vault_core::Error) -> CliError {
    match e {
        vault_core::Error::PinnedKeyChanged {
            pinned, presented, ..
        } => CliError::KeyChanged {
            name: name.to_owned(),
            pinned,
            presented,
        },
        other => other.into(),
    }
}

/// The store pin name of a contact.
pub fn pin_name(name: &str) -> String {
    format!("contact:{name}")
}

/// Checks a contact name: 1 to 64 letters, digits, `-`, `_` or `.`, not
/// starting with `-`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{name:?} is not a valid contact name: use 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

impl Contacts {
    /// Loads the book (a missing file is an empty book).
    pub fn load(path: &Path) -> Result<Self> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::Usage(format!(
                    "{}: not a valid contacts file ({e}); restore it from a backup or remove it",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(CliError::file(path, e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.entries)
            .map_err(|e| CliError::Usage(format!("cannot encode contacts: {e}")))?;
        write_atomic(&self.path, &bytes, false)
    }

    /// Adds (or, with `replace`, replaces) a contact whose fingerprint the
    /// caller verified, pinning it. Without `replace`, a name already
    /// pinned to another key is refused.
    pub fn add(
        &mut self,
        store: &mut dyn Store,
        name: &str,
        identity: &PublicIdentity,
        replace: bool,
        now: u64,
    ) -> Result<()> {
        check_name(name)?;
        let pin = pin_name(name);
        if replace {
            store.repin(&pin, &identity.fingerprint())?;
        } else {
            store
                .pin(&pin, &identity.fingerprint())
                .map_err(|e| key_changed(name, e))?;
        }
        self.entries.insert(
            name.to_owned(),
            Entry {
                identity: identity.to_text(),
                added_at: now,
            },
        );
        self.save()
    }

    /// Removes a contact from the book (the pin stays).
    pub fn remove(&mut self, name: &str) -> Result<()> {
        if self.entries.remove(name).is_none() {
            return Err(CliError::UnknownContact(name.to_owned()));
        }
        self.save()
    }

    /// A contact by name, checked against its pin.
    pub fn get(&self, store: &dyn Store, name: &str) -> Result<Contact> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| CliError::UnknownContact(name.to_owned()))?;
        self.checked(store, name, entry)
    }

    fn checked(&self, store: &dyn Store, name: &str, entry: &Entry) -> Result<Contact> {
        let identity = PublicIdentity::from_text(&entry.identity)?;
        let fp = identity.fingerprint();
        match store.pinned(&pin_name(name))? {
            Some(pinned) if pinned == fp => {}
            Some(pinned) => {
                return Err(CliError::KeyChanged {
                    name: name.to_owned(),
                    pinned,
                    presented: fp,
                })
            }
            None => {
                return Err(CliError::Usage(format!(
                    "contact {name:?} has no pinned key in this device's store; add it again with `vault contacts add {name} ... --verify <fingerprint>`"
                )))
            }
        }
        Ok(Contact {
            name: name.to_owned(),
            identity,
            added_at: entry.added_at,
        })
    }

    /// Every contact, checked against its pin, sorted by name.
    pub fn all(&self, store: &dyn Store) -> Result<Vec<Contact>> {
        self.entries
            .iter()
            .map(|(name, e)| self.checked(store, name, e))
            .collect()
    }

    /// The name of the contact with this fingerprint, if any.
    pub fn name_of(&self, fp: &Fingerprint) -> Option<String> {
        self.entries.iter().find_map(|(name, e)| {
            PublicIdentity::from_text(&e.identity)
                .ok()
                .filter(|i| i.fingerprint() == *fp)
                .map(|_| name.clone())
        })
    }
}
