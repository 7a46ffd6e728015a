//! Getting the passphrase: from `--passphrase-file`, the `VAULT_PASSPHRASE`
//! environment variable, or a prompt on the terminal without echo. The
//! passphrase lives in a [`SecretString`] (zeroized on drop) and is never
//! printed.

use std::io::IsTerminal;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::error::{CliError, Result};

/// The environment variable scripts can set.
pub const ENV: &str = "VAULT_PASSPHRASE";
/// Shortest passphrase `vault init` accepts.
pub const MIN_LEN: usize = 8;

/// Where the passphrase comes from.
#[derive(Clone, Debug, Default)]
pub struct Source {
    file: Option<std::path::PathBuf>,
}

impl Source {
    /// A source reading `file` if given, else the environment, else the
    /// terminal.
    pub fn new(file: Option<&Path>) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
        }
    }

    /// Unlocks with `open`, asking for the passphrase: a scripted one is
    /// tried once; on a terminal a wrong one is asked again, three times in
    /// all.
    pub fn unlock<T>(&self, mut open: impl FnMut(&SecretString) -> Result<T>) -> Result<T> {
        if let Some(p) = self.scripted()? {
            return open(&p);
        }
        let mut attempt = 1;
        loop {
            let p = prompt("Passphrase: ")?;
            match open(&p) {
                Err(CliError::Core(vault_core::Error::WrongPassphrase)) if attempt < 3 => {
                    eprintln!("Wrong passphrase, try again.");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A new passphrase (asked twice on a terminal), at least [`MIN_LEN`]
    /// characters.
    pub fn choose(&self) -> Result<SecretString> {
        let p = match self.scripted()? {
            Some(p) => p,
            None => {
                let first = prompt("New passphrase: ")?;
                let second = prompt("Repeat it: ")?;
                if first.expose_secret() != second.expose_secret() {
                    return Err(CliError::Passphrase(
                        "the two passphrases differ; nothing was created, try again".into(),
                    ));
                }
                first
            }
        };
        if p.expose_secret().chars().count() < MIN_LEN {
            return Err(CliError::Usage(format!(
                "the passphrase is too short: use at least {MIN_LEN} characters (a few random words are best)"
            )));
        }
        Ok(p)
    }

    fn scripted(&self) -> Result<Option<SecretString>> {
        if let Some(path) = &self.file {
            let text =
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?);
            let line = text.lines().next().unwrap_or_default();
            if line.is_empty() {
                return Err(CliError::Passphrase(format!(
                    "{}: the first line is empty; put the passphrase on it",
                    path.display()
                )));
            }
            return Ok(Some(SecretString::from(line.to_owned())));
        }
        match std::env::var(ENV) {
            Ok(v) if !v.is_empty() => Ok(Some(SecretString::from(v))),
            _ => Ok(None),
        }
    }
}

fn prompt(label: &str) -> Result<SecretString> {
    // Only when stdin is a terminal: a command in a pipeline or a script
    // must not stop to wait on the controlling terminal.
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Passphrase(format!(
            "a passphrase is needed but there is no terminal to ask on; use --passphrase-file FILE or set {ENV}"
        )));
    }
    let p = rpassword::prompt_password(label)
        .map_err(|e| CliError::Passphrase(format!("could not read the passphrase: {e}")))?;
    Ok(SecretString::from(p))
}
