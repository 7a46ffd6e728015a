//! Home and mirror relays (`docs/format.md` §8.9, decision 57).
//!
//! The owner names a vault's home relay, where writes go, and mirror
//! relays run by other operators. Mirrors are kept by the clients, not by
//! relay-to-relay replication: after a sync, a member's device pushes to
//! each mirror the signed entries and record ciphertexts it holds that the
//! mirror lacks ([`push_to`], the repair path of decision 53, which the
//! mirror verifies as any append). Reading falls back to a mirror when the
//! home does not answer, verified exactly as from the home; a mirror that
//! lags, forks or withholds is named in a [`MirrorReport`].

use vault_core::request::RelayOrigin;
use vault_core::store::Store;
use vault_core::{Relays, VaultId, VaultState};

use crate::client::RelayClient;
use crate::error::{ClientError, Result};
use crate::sync::{self, Repaired};

/// What a relay holds of a vault, against this device's verified copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MirrorStatus {
    /// It holds what this device verified (after the push, if any).
    UpToDate {
        /// Entries this device pushed to it now (0 if none were missing).
        pushed: u64,
        /// Record ciphertexts uploaded with them.
        blobs: u64,
    },
    /// It still lacks entries after the push, which stopped (an entry this
    /// device holds only redacted, or a ciphertext it does not hold): a
    /// device that holds them, the owner's first, must push them.
    Behind {
        /// The relay's last entry.
        at: u64,
        /// This device's last verified entry.
        verified: u64,
        /// Why the push stopped.
        reason: String,
    },
    /// Its log differs from the verified one: nothing was pushed, and it
    /// must not be trusted for this vault.
    Forked {
        /// The first sequence number where it differs (or its head).
        seq: u64,
    },
    /// It has entries this device has not verified yet (sync from the
    /// home first).
    Ahead {
        /// The relay's last entry.
        at: u64,
        /// This device's last verified entry.
        verified: u64,
    },
    /// It does not hold the vault (not sent to it yet).
    NoVault,
    /// It did not answer, or refused (the message says why).
    Unavailable(String),
}

/// What `relay` holds of the vault of `state` (this device's verified
/// copy), by its head alone: nothing is pushed or pulled.
pub async fn status_of(state: &VaultState, relay: &RelayClient) -> MirrorStatus {
    let verified = state.head();
    match relay.head(&state.vault()).await {
        Ok(head) if head.seq > verified.seq => MirrorStatus::Ahead {
            at: head.seq,
            verified: verified.seq,
        },
        Ok(head) if state.checkpoint_at(head.seq).map(|c| c.head) != Some(head.hash) => {
            MirrorStatus::Forked { seq: head.seq }
        }
        Ok(head) if head.seq < verified.seq => MirrorStatus::Behind {
            at: head.seq,
            verified: verified.seq,
            reason: "not sent yet: `vault sync` on a device that holds the entries sends them"
                .into(),
        },
        Ok(_) => MirrorStatus::UpToDate {
            pushed: 0,
            blobs: 0,
        },
        Err(e) if vault_not_found(&e) => MirrorStatus::NoVault,
        Err(e) => MirrorStatus::Unavailable(e.to_string()),
    }
}

/// One mirror's state after [`push_to_mirrors`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorReport {
    /// The mirror.
    pub relay: RelayOrigin,
    /// What it holds.
    pub status: MirrorStatus,
}

/// A client for `origin` signing as `like`'s identity, with its retry
/// policy and chunk size.
pub fn client_for(like: &RelayClient, origin: &RelayOrigin) -> Result<RelayClient> {
    Ok(RelayClient::new(origin.as_str(), like.identity().clone())?
        .with_retry_policy(like.retry_policy().clone())
        .with_chunk_size(like.chunk_size()))
}

/// [`client_for`], with the identity published at `origin` first (a relay
/// verifies request signatures against the identities published to it;
/// publishing is idempotent).
async fn published(like: &RelayClient, origin: &RelayOrigin) -> Result<RelayClient> {
    let client = client_for(like, origin)?;
    client.publish_identity().await?;
    Ok(client)
}

/// The relay does not hold the vault (its own `vault_not_found`, not a
/// 404 from something in front of it).
fn vault_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Relay { status: 404, code, .. } if code == "vault_not_found")
}

/// Brings `relay` up to this device's verified copy of `vault`: creates the
/// vault there from its genesis entry if the relay does not know it (the
/// owner only: the relay refuses anyone else), then pushes the entries and
/// record ciphertexts it lacks ([`sync::repair`]; a relay whose log
/// differs is [`vault_core::Error::Fork`] and receives nothing). The
/// caller's identity must be published at `relay`.
pub async fn push_to<S: Store + ?Sized>(
    store: &mut S,
    relay: &RelayClient,
    vault: &VaultId,
) -> Result<Repaired> {
    match relay.head(vault).await {
        Ok(_) => {}
        Err(e) if vault_not_found(&e) => {
            let genesis = store.entries(vault, 0)?.into_iter().next().ok_or_else(|| {
                vault_core::Error::Missing {
                    what: format!("the genesis entry of vault {vault} on this device"),
                }
            })?;
            relay.create_vault(&genesis).await?;
        }
        Err(e) => return Err(e),
    }
    sync::repair(store, relay, vault).await
}

/// Names `relays` as the vault's home and mirrors (owner only): appends
/// the relays-named entry at `at`, which must be the new home (the relay
/// refuses it otherwise, `not_home`) and must already hold everything this
/// device verified ([`push_to`] first when moving the home). Naming the
/// relays already named appends nothing.
pub async fn name_relays<S: Store + ?Sized>(
    store: &mut S,
    at: &RelayClient,
    vault: &VaultId,
    relays: Relays,
) -> Result<VaultState> {
    let owner = at.identity().clone();
    sync::push_with_retry(store, at, vault, |state| {
        if state.relays() == Some(&relays) {
            return Ok(Vec::new());
        }
        Ok(vec![state.name_relays(&owner, relays.clone(), at.now())?])
    })
    .await
}

/// Pushes to every mirror `state` names what it lacks ([`push_to`]), one
/// after the other, and reports each. A mirror that fails does not stop
/// the others; nothing here changes this device's copy.
pub async fn push_to_mirrors<S: Store + ?Sized>(
    store: &mut S,
    like: &RelayClient,
    state: &VaultState,
) -> Vec<MirrorReport> {
    let Some(relays) = state.relays() else {
        return Vec::new();
    };
    let vault = state.vault();
    let verified = state.head().seq;
    let mut reports = Vec::new();
    for origin in relays.mirrors() {
        let status = match published(like, origin).await {
            Ok(client) => match push_to(store, &client, &vault).await {
                Ok(r) => status_after(&r, verified),
                Err(e) => status_of_error(e),
            },
            Err(e) => MirrorStatus::Unavailable(e.to_string()),
        };
        reports.push(MirrorReport {
            relay: origin.clone(),
            status,
        });
    }
    reports
}

fn status_after(r: &Repaired, verified: u64) -> MirrorStatus {
    if r.after.seq > verified {
        return MirrorStatus::Ahead {
            at: r.after.seq,
            verified,
        };
    }
    match &r.stopped {
        Some(reason) if r.after.seq < verified => MirrorStatus::Behind {
            at: r.after.seq,
            verified,
            reason: reason.clone(),
        },
        _ => MirrorStatus::UpToDate {
            pushed: r.entries,
            blobs: r.blobs,
        },
    }
}

fn status_of_error(e: ClientError) -> MirrorStatus {
    match e {
        ClientError::Core(vault_core::Error::Fork { seq }) => MirrorStatus::Forked { seq },
        e => MirrorStatus::Unavailable(e.to_string()),
    }
}

/// Where a vault's log was read from by [`pull_any`].
#[derive(Debug)]
pub struct Pulled {
    /// The verified state.
    pub state: VaultState,
    /// The relay that answered: the home, or a mirror when the home did
    /// not answer.
    pub from: RelayClient,
}

/// A relay [`pull_any`] passed over, and why: unreachable, behind this
/// device (a rollback), forked, withholding.
pub type PassedOver = (RelayOrigin, ClientError);

/// Brings a stored vault up to date from `home`, or, when it does not
/// answer (a transport failure or a 5xx), from the first mirror the
/// verified state names that does, verified exactly as from the home
/// ([`sync::pull`]). A mirror that is behind this device (rollback),
/// forked or withholding is passed over and named in
/// `passed_over` (whether or not a relay answered after them); if no
/// relay serves the vault, the home's error is returned.
pub async fn pull_any<S: Store + ?Sized>(
    store: &mut S,
    home: &RelayClient,
    vault: &VaultId,
    passed_over: &mut Vec<PassedOver>,
) -> Result<Pulled> {
    let first = match sync::pull(store, home, vault).await {
        Ok(state) => {
            return Ok(Pulled {
                state,
                from: home.clone(),
            })
        }
        Err(e) if unavailable(&e) => e,
        Err(e) => return Err(e),
    };
    let local = sync::load(store, vault)?;
    let Some(relays) = local.relays() else {
        return Err(first);
    };
    for origin in mirrors_to_try(relays, home.origin()) {
        match pull_from(store, home, &origin, vault).await {
            Ok((state, client)) => {
                let mut pulled = Pulled {
                    state,
                    from: client,
                };
                follow_move(store, home, &mut pulled, vault, passed_over).await;
                return Ok(pulled);
            }
            Err(e) => passed_over.push((origin, e)),
        }
    }
    Err(first)
}

/// After reading from a mirror: if the log it served moves the home to
/// another relay (neither the one tried first nor the mirror), reads from
/// the new home too, which may hold entries the mirror has not received
/// yet. A new home that fails is noted in `passed_over`.
async fn follow_move<S: Store + ?Sized>(
    store: &mut S,
    tried: &RelayClient,
    pulled: &mut Pulled,
    vault: &VaultId,
    passed_over: &mut Vec<PassedOver>,
) {
    let Some(new_home) = pulled.state.relays().map(|r| r.home().clone()) else {
        return;
    };
    if new_home == *tried.origin() || new_home == *pulled.from.origin() {
        return;
    }
    match pull_from(store, tried, &new_home, vault).await {
        Ok((state, client)) => {
            pulled.state = state;
            pulled.from = client;
        }
        Err(e) => passed_over.push((new_home, e)),
    }
}

/// [`sync::pull`] from `origin`, with a client made like `like` and the
/// identity published there.
async fn pull_from<S: Store + ?Sized>(
    store: &mut S,
    like: &RelayClient,
    origin: &RelayOrigin,
    vault: &VaultId,
) -> Result<(VaultState, RelayClient)> {
    let client = published(like, origin).await?;
    let state = sync::pull(store, &client, vault).await?;
    Ok((state, client))
}

/// The relays to read from when `tried` did not answer: the home (when it
/// is not `tried`, after a move), then the mirrors.
fn mirrors_to_try(relays: &Relays, tried: &RelayOrigin) -> Vec<RelayOrigin> {
    std::iter::once(relays.home())
        .chain(relays.mirrors())
        .filter(|o| *o != tried)
        .cloned()
        .collect()
}

/// A failure that says nothing about the vault: the relay is down,
/// overloaded or unreachable.
pub fn unavailable(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(_) => true,
        ClientError::Relay { status, .. } => *status >= 500,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::Head;

    fn repaired(after: u64, entries: u64, stopped: Option<&str>) -> Repaired {
        let head = |seq| Head { seq, hash: [0; 32] };
        Repaired {
            before: head(0),
            after: head(after),
            entries,
            blobs: 0,
            stopped: stopped.map(Into::into),
        }
    }

    #[test]
    fn a_mirror_is_up_to_date_behind_or_ahead_of_the_verified_head() {
        assert_eq!(
            status_after(&repaired(7, 3, None), 7),
            MirrorStatus::UpToDate {
                pushed: 3,
                blobs: 0
            }
        );
        assert!(matches!(
            status_after(&repaired(5, 1, Some("redacted")), 7),
            MirrorStatus::Behind {
                at: 5,
                verified: 7,
                ..
            }
        ));
        assert_eq!(
            status_after(&repaired(9, 0, None), 7),
            MirrorStatus::Ahead { at: 9, verified: 7 }
        );
        assert_eq!(
            status_of_error(ClientError::Core(vault_core::Error::Fork { seq: 4 })),
            MirrorStatus::Forked { seq: 4 }
        );
    }

    #[test]
    fn after_the_home_come_the_mirrors_never_the_relay_just_tried() {
        let o = |s: &str| RelayOrigin::parse(s).unwrap();
        let relays = Relays::new(
            o("https://home.example"),
            vec![o("https://b.example"), o("https://a.example")],
        )
        .unwrap();
        assert_eq!(
            mirrors_to_try(&relays, &o("https://home.example")),
            vec![o("https://a.example"), o("https://b.example")]
        );
        assert_eq!(
            mirrors_to_try(&relays, &o("https://old.example")),
            vec![
                o("https://home.example"),
                o("https://a.example"),
                o("https://b.example")
            ]
        );
    }
}
