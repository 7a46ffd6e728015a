//! The inbox: which owners a person accepts shares from. Strangers (owners
//! not accepted) are listed within the relay's caps, so nobody can flood a
//! person's inbox; accepted owners are listed in full. The list lives on
//! the relay: a device that reads for its person
//! ([`RelayClient::with_person`]) reads and changes the person's list, so
//! every such device sees the same one. Changes are read-modify-write with
//! a version, retried when another device changed the list in between.

use vault_core::Fingerprint;

use crate::{AcceptedOwners, ClientError, InboxListing, RelayClient, Result};

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

/// An inbox listing read by [`listing_trusting`].
#[derive(Debug)]
pub struct TrustedListing {
    /// The listing, after the trusted owners were accepted (or as first
    /// read, if accepting them failed).
    pub listing: InboxListing,
    /// Why the trusted owners missing from the accepted list were not
    /// accepted (`None`: they were, or none was missing): their shares
    /// may then be capped as a stranger's. Report it.
    pub not_accepted: Option<ClientError>,
}

/// The caller's inbox ([`RelayClient::inbox_listing`]) where the owners in
/// `trusted` (a person's contacts, or the person a device acts for) are
/// never strangers: when the listing shows one of them as a stranger, or
/// holds strangers back (one of them may be among those), the trusted
/// owners missing from the accepted list are accepted and the inbox read
/// again. Nothing is accepted when `trusted` is empty (the caller and the
/// person it reads for are never strangers, and are left out). Accepting
/// is best effort: if the change fails (another device kept changing the
/// list, the list is full), the first listing is returned with the error
/// in [`TrustedListing::not_accepted`]; reading the inbox or the accepted
/// list failing is an error.
pub async fn listing_trusting(
    client: &RelayClient,
    trusted: &[Fingerprint],
) -> Result<TrustedListing> {
    // The caller and its person are accepted without a list.
    let me = client.identity().fingerprint();
    let trusted: Vec<Fingerprint> = trusted
        .iter()
        .filter(|f| **f != me && Some(**f) != client.person())
        .copied()
        .collect();
    let listing = client.inbox_listing().await?;
    if listing.truncated {
        tracing::warn!(
            listed = listing.vaults.len(),
            "the inbox has more vaults than this client lists; showing the first ones"
        );
    }
    let as_read = |listing| {
        Ok(TrustedListing {
            listing,
            not_accepted: None,
        })
    };
    let stranger_trusted = listing
        .vaults
        .iter()
        .any(|v| !v.accepted && trusted.contains(&v.owner));
    if trusted.is_empty() || !(stranger_trusted || listing.strangers_held_back > 0) {
        return as_read(listing);
    }
    let stored = client.accepted_owners().await?;
    let missing: Vec<Fingerprint> = trusted
        .iter()
        .filter(|f| !stored.owners.contains(f))
        .copied()
        .collect();
    if missing.is_empty() {
        return as_read(listing);
    }
    // Accepting only widens what is listed: a failure leaves the listing
    // as the relay gave it.
    if let Err(e) = accept(client, &missing).await {
        return Ok(TrustedListing {
            listing,
            not_accepted: Some(e),
        });
    }
    as_read(client.inbox_listing().await?)
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
