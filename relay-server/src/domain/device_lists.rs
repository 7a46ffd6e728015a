//! The directory of people's device lists (`docs/format.md` §3.7,
//! decision 70): where a person's devices publish the person's current
//! list, so that someone about to share with the person seals the grant to
//! the generation every one of its devices opens. A convenience, never an
//! authority: the relay verifies each version against the person's
//! published root document before storing it, and every client verifies
//! the versions again (and against its own pin) before using them.
//!
//! The directory keeps the versions from the newest one the person's root
//! signed to the current one, at most [`MAX_STORED_VERSIONS`], so a reader
//! who never saw the person's list accepts them from the first.

use std::sync::Arc;

use vault_core::devices::{DeviceList, MAX_DEVICE_LIST_LEN};
use vault_core::Fingerprint;

use crate::domain::Failure;
use crate::state::AppState;
use crate::storage::DeviceLists;

/// Most versions the directory keeps for a person: as many as a vault
/// log's devices-listed entry carries (`docs/format.md` §8.11).
pub const MAX_STORED_VERSIONS: usize = vault_core::MAX_LISTED_VERSIONS;

/// Why device lists were not stored or not found.
#[derive(Debug, thiserror::Error)]
pub enum DeviceListError {
    /// The person's identity is not published here.
    #[error("no identity with this fingerprint is published on this relay; publish it first (`vault whoami --publish`)")]
    PersonNotFound,
    /// The request is signed by neither the person nor one of its devices.
    #[error(
        "a person's device list is published by the person's key file or one of its listed devices"
    )]
    NotTheirs,
    /// A version is not accepted after the one before it.
    #[error("a device list version is not accepted: {0}")]
    Invalid(vault_core::Error),
    /// A version is not newer than the stored current one: another device
    /// published first, or this is a replay.
    #[error("the directory holds version {stored} of this person's device list; fetch it and build on it")]
    Stale {
        /// The stored current serial.
        stored: u64,
    },
    /// Too many device-signed versions since the root's last one.
    #[error("more than 64 versions since the key file last signed the list: take the list back with the key file (`vault devices recover`)")]
    TooMany,
    /// The relay failed.
    #[error(transparent)]
    Failure(#[from] Failure),
}

/// Publishing and looking up device lists.
pub struct DeviceDirectory {
    app: Arc<AppState>,
}

impl DeviceDirectory {
    /// The service over the relay's state.
    pub fn new(app: Arc<AppState>) -> Self {
        Self { app }
    }

    /// The versions the directory holds for `person`, oldest first (the
    /// first signed by the person's root); none if the person published no
    /// list (grants to it then go to its document's own key: not an
    /// error, the common case).
    pub async fn lookup(&self, person: Fingerprint) -> Result<Vec<DeviceList>, DeviceListError> {
        self.stored(person).await
    }

    /// Stores `versions` (oldest first) for `person`, sent by `signer`:
    /// each accepted (§3.7) after the one before, the first after the
    /// stored current one (or, with none stored, signed by the root). The
    /// signer is the person's root or a device the held version lists.
    /// Stored only if nothing was stored meanwhile (compare-and-swap on
    /// the serial read). Returns the serial now current. Durable when it
    /// returns.
    pub async fn publish(
        &self,
        signer: Fingerprint,
        person: Fingerprint,
        versions: &[DeviceList],
    ) -> Result<u32, DeviceListError> {
        let root = self
            .app
            .identity(person)
            .await?
            .ok_or(DeviceListError::PersonNotFound)?;
        if versions.is_empty() || versions.len() > MAX_STORED_VERSIONS {
            return Err(DeviceListError::Invalid(vault_core::Error::InvalidInput(
                "send 1 to 64 versions",
            )));
        }
        let mut segment = self.stored(person).await?;
        let held = segment.last().cloned();
        // The person's root, or a device of the held version: never a
        // device only an old version lists (a removed device re-publishing
        // the version that listed it where nothing is held yet).
        if signer != person && held.as_ref().is_none_or(|l| l.device(&signer).is_none()) {
            return Err(DeviceListError::NotTheirs);
        }
        let mut current = held.clone();
        for v in versions {
            v.accept(&root, current.as_ref()).map_err(|e| match e {
                vault_core::Error::Rollback { verified, .. } => {
                    DeviceListError::Stale { stored: verified }
                }
                e => DeviceListError::Invalid(e),
            })?;
            // The root's override starts the chain a new reader accepts
            // afresh; an extension (by the root or a device) continues it,
            // so a collection carrying any version since takes the rest.
            let extends = current.as_ref().is_some_and(|c| {
                v.prev() == c.hash() && v.serial() == c.serial().saturating_add(1)
            });
            if !extends {
                segment.clear();
            }
            segment.push(v.clone());
            current = Some(v.clone());
        }
        if segment.len() > MAX_STORED_VERSIONS {
            // Keep from the newest root-signed version that leaves at most
            // 64: a reader holding none starts there.
            let start = segment
                .iter()
                .enumerate()
                .skip(segment.len() - MAX_STORED_VERSIONS)
                .find(|(_, v)| v.signer() == person)
                .map(|(i, _)| i)
                .ok_or(DeviceListError::TooMany)?;
            segment.drain(..start);
        }
        let serial = current.map_or(0, |c| c.serial());
        let lists = DeviceLists {
            serial: u64::from(serial),
            lists: encode(&segment),
        };
        let read = held.map_or(0, |h| u64::from(h.serial()));
        match self
            .app
            .meta
            .set_device_lists(person, read, lists)
            .await
            .map_err(|e| Failure::storage("storing a device list", e))?
        {
            Ok(()) => Ok(serial),
            Err(stored) => Err(DeviceListError::Stale {
                stored: stored.serial,
            }),
        }
    }

    /// The person's current list: the newest version the directory holds
    /// (verified when it was published), `None` if the person published
    /// none.
    pub async fn current(
        &self,
        person: Fingerprint,
    ) -> Result<Option<DeviceList>, DeviceListError> {
        let stored = self.stored_bytes(person).await?;
        last(&stored).map_err(|e| Failure::internal("reading a stored device list", e).into())
    }

    async fn stored(&self, person: Fingerprint) -> Result<Vec<DeviceList>, DeviceListError> {
        let stored = self.stored_bytes(person).await?;
        decode(&stored).map_err(|e| Failure::internal("reading a stored device list", e).into())
    }

    /// The versions stored for `person`, as [`encode`] wrote them.
    async fn stored_bytes(&self, person: Fingerprint) -> Result<Vec<u8>, DeviceListError> {
        Ok(self
            .app
            .meta
            .device_lists(person)
            .await
            .map_err(|e| Failure::storage("reading a device list", e))?
            .lists)
    }
}

/// The stored form: each version prefixed by its `u32` length.
fn encode(versions: &[DeviceList]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in versions {
        let bytes = v.to_bytes();
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Reads what [`encode`] wrote.
fn decode(bytes: &[u8]) -> vault_core::Result<Vec<DeviceList>> {
    versions(bytes)?
        .into_iter()
        .map(DeviceList::from_bytes)
        .collect()
}

/// The newest version [`encode`] wrote, the others left undecoded.
fn last(bytes: &[u8]) -> vault_core::Result<Option<DeviceList>> {
    versions(bytes)?
        .last()
        .map(|v| DeviceList::from_bytes(v))
        .transpose()
}

/// The encoded versions [`encode`] wrote, split at their length prefixes.
fn versions(mut bytes: &[u8]) -> vault_core::Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let malformed = || vault_core::Error::InvalidInput("a stored device list is cut short");
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(malformed)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
        if len > MAX_DEVICE_LIST_LEN || len > rest.len() {
            return Err(malformed());
        }
        let (list, rest) = rest.split_at(len);
        out.push(list);
        bytes = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::identities::Directory;
    use crate::domain::testing::{ident_as as ident, World};
    use vault_core::{Role, SecretIdentity};

    #[tokio::test]
    async fn a_persons_devices_publish_versions_that_extend_the_held_one() {
        let w = World::new().await;
        let now = w.now;
        let dee = ident(40, "Dr Dee", Role::Clinician, now);
        let laptop = ident(41, "laptop", Role::Device, now);
        let phone = ident(42, "phone", Role::Device, now);
        let dir = DeviceDirectory::new(w.app.clone());
        let (v1, _) = DeviceList::first(
            &dee,
            &[laptop.public().clone(), phone.public().clone()],
            now,
        )
        .unwrap();
        let person = dee.fingerprint();
        let publish = |signer: &SecretIdentity, v: &DeviceList| {
            let (dir, signer, v) = (&dir, signer.fingerprint(), v.clone());
            async move { dir.publish(signer, person, &[v]).await }
        };
        // The person is not published yet.
        assert!(matches!(
            publish(&dee, &v1).await,
            Err(DeviceListError::PersonNotFound)
        ));
        Directory::new(w.app.clone())
            .publish(dee.fingerprint(), dee.public(), None, None)
            .await
            .unwrap();
        assert!(dir.lookup(dee.fingerprint()).await.unwrap().is_empty());
        // A stranger may not publish it, even a valid version; nor, with
        // nothing held, a device the root's version lists (a removed
        // device re-publishing the version that listed it, elsewhere).
        let stranger = ident(43, "stranger", Role::Clinician, now);
        for who in [&stranger, &laptop] {
            assert!(matches!(
                publish(who, &v1).await,
                Err(DeviceListError::NotTheirs)
            ));
        }
        assert_eq!(publish(&dee, &v1).await.unwrap(), 1);
        // The phone removes the laptop: kept after the root's version.
        let keys = v1.open(&phone).unwrap();
        let (v2, _) = v1
            .next(&phone, &keys, &[], &[laptop.fingerprint()], now)
            .unwrap();
        assert_eq!(publish(&phone, &v2).await.unwrap(), 2);
        assert_eq!(
            dir.lookup(dee.fingerprint()).await.unwrap(),
            vec![v1.clone(), v2.clone()]
        );
        // The removed laptop may not publish; an old version is stale.
        let laptop_keys = v1.open(&laptop).unwrap();
        let (fork, _) = v1
            .next(&laptop, &laptop_keys, &[], &[phone.fingerprint()], now)
            .unwrap();
        assert!(matches!(
            publish(&laptop, &fork).await,
            Err(DeviceListError::NotTheirs)
        ));
        assert!(matches!(
            publish(&dee, &v1).await,
            Err(DeviceListError::Stale { stored: 2 })
        ));
        // Another version under the held serial (a fork) is stale.
        assert!(matches!(
            publish(&phone, &fork).await,
            Err(DeviceListError::Stale { stored: 2 })
        ));
        // The root's extension keeps the chain, so a collection carrying
        // v1 takes v2 and v3; an override built on an earlier version
        // restarts it.
        let (v3, _) = v2
            .recover(&dee, &[v1.clone(), v2.clone()], &[], &[], now)
            .unwrap();
        assert_eq!(publish(&dee, &v3).await.unwrap(), 3);
        assert_eq!(
            dir.lookup(dee.fingerprint()).await.unwrap(),
            vec![v1.clone(), v2.clone(), v3.clone()]
        );
        let (v4, _) = v1
            .recover(&dee, &[v1.clone(), v2.clone(), v3.clone()], &[], &[], now)
            .unwrap();
        assert_eq!(publish(&dee, &v4).await.unwrap(), 4);
        assert_eq!(dir.lookup(dee.fingerprint()).await.unwrap(), vec![v4]);
    }
}
