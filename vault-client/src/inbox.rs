//! The inbox: which owners a person accepts shares from. Strangers (owners
//! not accepted) are listed within the relay's caps, so nobody can flood a
//! person's inbox; accepted owners are listed in full. The list lives on
//! the relay, so every device of the person sees the same one; changes
//! are read-modify-write with a version, retried when another device
//! changed the list in between.

use vault_core::Fingerprint;

use crate::{AcceptedOwners, ClientError, RelayClient, Result};

/// How often a change is retried after another device changed the list.
const ATTEMPTS: u32 = 5;

/// Adds `owners` to the caller's accepted owners; returns the list as
/// stored. Owners already accepted are kept once.
pub async fn accept(client: &RelayClient, owners: &[Fingerprint]) -> Result<AcceptedOwners> {
    change(client, |list| {
        for o in owners {
            if !list.contains(o) {
                list.push(*o);
            }
        }
    })
    .await
}

/// Removes `owners` from the caller's accepted owners (their shares are
/// then capped as a stranger's); returns the list as stored.
pub async fn forget(client: &RelayClient, owners: &[Fingerprint]) -> Result<AcceptedOwners> {
    change(client, |list| list.retain(|o| !owners.contains(o))).await
}

async fn change(
    client: &RelayClient,
    edit: impl Fn(&mut Vec<Fingerprint>),
) -> Result<AcceptedOwners> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let stored = client.accepted_owners().await?;
        let mut owners = stored.owners.clone();
        edit(&mut owners);
        owners.sort_by_key(|o| *o.as_bytes());
        owners.dedup();
        if owners.len() > 1000 {
            return Err(ClientError::Config(
                "you can accept at most 1,000 owners; forget some first".into(),
            ));
        }
        if owners == stored.owners && stored.version > 0 {
            return Ok(stored);
        }
        let next = AcceptedOwners {
            version: stored.version.saturating_add(1),
            owners,
        };
        match client.set_accepted_owners(&next).await {
            Ok(()) => return Ok(next),
            Err(e @ ClientError::Relay { status: 409, .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        ClientError::Protocol("the accepted list kept changing under this device".into())
    }))
}
