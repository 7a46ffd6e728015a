//! Where a profile lives: the sealed key file, the public identity, the
//! contacts, the local store and the config file.
//!
//! `VAULT_HOME` puts everything in one directory (one profile per
//! directory); otherwise the XDG directories are used
//! (`~/.config/vault/config.toml`, `~/.local/share/vault/...` on Linux).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

/// The directories of one profile.
#[derive(Clone, Debug)]
pub struct Home {
    config_dir: PathBuf,
    data_dir: PathBuf,
}

/// The config file (`config.toml`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The relay's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Your own name, when it differs from the one published in your
    /// identity (patients keep theirs off the relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For a device of a person whose key file is elsewhere: that person's
    /// fingerprint (64 lowercase hex digits), set by `vault devices join` and `vault
    /// devices confirm`. The device reads the person's inbox and accepted
    /// owners on the relay, so the person's patients are never strangers
    /// to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    /// The relay `person` was recorded for (its origin): on another relay
    /// (`--relay`), the device reads its own inbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_relay: Option<String>,
}

impl Home {
    /// The profile named by `VAULT_HOME`, or the XDG directories.
    pub fn locate() -> Result<Self> {
        if let Some(dir) = std::env::var_os("VAULT_HOME").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            return Ok(Self {
                config_dir: dir.clone(),
                data_dir: dir,
            });
        }
        let dirs = directories::ProjectDirs::from("", "", "vault").ok_or_else(|| {
            CliError::Usage(
                "cannot find your home directory; set VAULT_HOME to a directory for vault's files"
                    .into(),
            )
        })?;
        Ok(Self {
            config_dir: dirs.config_dir().to_path_buf(),
            data_dir: dirs.data_dir().to_path_buf(),
        })
    }

    /// A profile in one directory (tests, benches).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            config_dir: dir.clone(),
            data_dir: dir,
        }
    }

    /// The passphrase-sealed secret key file.
    pub fn key_file(&self) -> PathBuf {
        self.data_dir.join("identity.vault")
    }

    /// The public identity text (readable without the passphrase).
    pub fn public_file(&self) -> PathBuf {
        self.data_dir.join("identity.pub")
    }

    /// The contacts file.
    pub fn contacts_file(&self) -> PathBuf {
        self.data_dir.join("contacts.json")
    }

    /// The local store (SQLite and the ciphertext cache).
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// The config file.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The data directory (key file, store, the agent's socket).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The data directory, created (owner-only) if missing.
    pub fn ensure_data_dir(&self) -> Result<&Path> {
        create_private_dir(&self.data_dir)?;
        Ok(&self.data_dir)
    }

    /// A warning if the data directory can be read by other users (it is
    /// not changed: it may be a directory the user chose to share).
    pub fn permission_warning(&self) -> Option<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&self.data_dir).ok()?.permissions().mode();
            if mode & 0o077 != 0 {
                return Some(format!(
                    "warning: {} is accessible to other users (mode {:o}); run `chmod 700 {}`",
                    self.data_dir.display(),
                    mode & 0o777,
                    self.data_dir.display()
                ));
            }
        }
        None
    }

    /// Reads the config file (missing: defaults).
    pub fn config(&self) -> Result<Config> {
        let path = self.config_file();
        match fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                CliError::Usage(format!(
                    "{}: {}; fix or delete the file",
                    path.display(),
                    e.message()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(CliError::file(path, e)),
        }
    }

    /// Writes the config file.
    pub fn save_config(&self, config: &Config) -> Result<()> {
        create_private_dir(&self.config_dir)?;
        let text = toml::to_string(config)
            .map_err(|e| CliError::Usage(format!("cannot encode the config: {e}")))?;
        write_atomic(&self.config_file(), text.as_bytes(), false)
    }
}

/// Creates a directory readable only by its owner (on Unix).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| CliError::file(dir, e))
}

/// Writes a file atomically (temporary file, fsync, rename). With
/// `create_new`, an existing file is never replaced.
pub fn write_atomic(path: &Path, bytes: &[u8], create_new: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| CliError::file(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600))
            .map_err(|e| CliError::file(tmp.path(), e))?;
    }
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| CliError::file(path, e))?;
    if create_new {
        tmp.persist_noclobber(path)
            .map_err(|e| CliError::file(path, e.error))?;
    } else {
        tmp.persist(path)
            .map_err(|e| CliError::file(path, e.error))?;
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
