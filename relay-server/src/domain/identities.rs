//! The identity directory: publishing self-signed identity documents and
//! looking them up. A convenience, never an authority: clients pin
//! fingerprints. Admission applies to new identities only (an invitation
//! token where the relay requires one, and the per-source budget).

use std::net::IpAddr;
use std::sync::Arc;

use vault_core::{Fingerprint, PublicIdentity};

use crate::admission::CreationLimited;
use crate::domain::Failure;
use crate::state::AppState;

/// Why an identity was not published or not found.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The document does not parse or its self-signature does not verify.
    #[error("the identity document is not valid: {0}")]
    Invalid(vault_core::Error),
    /// The request is signed by another identity than the one published.
    #[error("an identity can only be published by itself")]
    NotSelf,
    /// The relay requires an invitation for new identities, and the request
    /// carries no valid one.
    #[error("this relay publishes new identities by invitation only: ask its operator for an invitation token and send it in the x-vault-invite header")]
    InviteRequired,
    /// The source address created too many identities and vaults this hour.
    #[error(transparent)]
    CreationLimited(#[from] CreationLimited),
    /// No identity with this fingerprint is published.
    #[error("no identity with this fingerprint is published on this relay")]
    NotFound,
    /// The relay failed.
    #[error(transparent)]
    Failure(#[from] Failure),
}

/// The outcome of publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The identity's fingerprint.
    pub fingerprint: Fingerprint,
    /// `false` if it was already published.
    pub new: bool,
}

/// Publishing and looking up identities.
pub struct Directory {
    app: Arc<AppState>,
}

impl Directory {
    /// The service over the relay's state.
    pub fn new(app: Arc<AppState>) -> Self {
        Self { app }
    }

    /// Publishes `identity` for a request signed by `signer` (already
    /// authenticated against `identity` itself) from `source`, presenting
    /// `invite` (the token, if any). Publishing again what is published is
    /// always allowed; a new identity needs an accepted invitation where
    /// the relay requires one ([`IdentityError::InviteRequired`]) and
    /// budget left for `source` ([`IdentityError::CreationLimited`], given
    /// back unless the identity turns out new). Its document is charged to
    /// its own quota. Durable when it returns.
    pub async fn publish(
        &self,
        signer: Fingerprint,
        identity: &PublicIdentity,
        invite: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<Published, IdentityError> {
        if signer != identity.fingerprint() {
            return Err(IdentityError::NotSelf);
        }
        let app = &self.app;
        if app.identity(identity.fingerprint()).await?.is_some() {
            return self.store(identity).await;
        }
        let tokens = &app.config.invite_tokens;
        if tokens.required() && !tokens.accepts(invite.unwrap_or("")) {
            return Err(IdentityError::InviteRequired);
        }
        let now = app.now();
        app.new_budget
            .take(source, now)
            .map_err(CreationLimited::from)?;
        let stored = self.store(identity).await;
        if !matches!(&stored, Ok(Published { new: true, .. })) {
            app.new_budget.give_back(source, now);
        }
        stored
    }

    async fn store(&self, identity: &PublicIdentity) -> Result<Published, IdentityError> {
        let fingerprint = identity.fingerprint();
        let new = self
            .app
            .meta
            .put_identity(fingerprint, identity.to_bytes().to_vec())
            .await
            .map_err(|e| Failure::storage("storing an identity", e))?;
        Ok(Published { fingerprint, new })
    }

    /// The published identity with fingerprint `fp`
    /// ([`IdentityError::NotFound`] if none).
    pub async fn lookup(&self, fp: Fingerprint) -> Result<Arc<PublicIdentity>, IdentityError> {
        self.app.identity(fp).await?.ok_or(IdentityError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::InviteTokens;
    use crate::domain::testing::{ident, Relay, World};

    const SOURCE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));

    #[tokio::test]
    async fn an_identity_is_published_by_itself_only() {
        let w = World::new().await;
        let dir = Directory::new(w.app.clone());
        let alice = ident(2, "Dr Alice", w.now);
        let bob = ident(3, "Dr Bob", w.now);
        let err = dir
            .publish(bob.fingerprint(), alice.public(), None, None)
            .await
            .unwrap_err();
        assert!(matches!(err, IdentityError::NotSelf), "{err:?}");
        let err = dir.lookup(alice.fingerprint()).await.unwrap_err();
        assert!(matches!(err, IdentityError::NotFound), "{err:?}");
        let p = dir
            .publish(alice.fingerprint(), alice.public(), None, None)
            .await
            .unwrap();
        assert_eq!((p.fingerprint, p.new), (alice.fingerprint(), true));
        let p = dir
            .publish(alice.fingerprint(), alice.public(), None, None)
            .await
            .unwrap();
        assert!(!p.new);
        assert_eq!(
            dir.lookup(alice.fingerprint()).await.unwrap().to_text(),
            alice.public().to_text()
        );
    }

    #[tokio::test]
    async fn new_identities_need_an_invitation_where_the_relay_asks_for_one() {
        let token = "a-long-invitation-token";
        let w = Relay::with(|c| c.invite_tokens = InviteTokens::new([token]).unwrap());
        let dir = Directory::new(w.app.clone());
        let alice = ident(2, "Dr Alice", w.now);
        for presented in [None, Some("a-wrong-invitation-token")] {
            let err = dir
                .publish(alice.fingerprint(), alice.public(), presented, None)
                .await
                .unwrap_err();
            assert!(matches!(err, IdentityError::InviteRequired), "{err:?}");
        }
        assert!(
            dir.publish(alice.fingerprint(), alice.public(), Some(token), None)
                .await
                .unwrap()
                .new
        );
        // Publishing again needs none.
        assert!(
            !dir.publish(alice.fingerprint(), alice.public(), None, None)
                .await
                .unwrap()
                .new
        );
    }

    #[tokio::test]
    async fn new_identities_count_against_their_source_and_republishing_does_not() {
        let w = World::with(|c| c.new_per_hour = 1).await;
        let dir = Directory::new(w.app.clone());
        let alice = ident(2, "Dr Alice", w.now);
        let bob = ident(3, "Dr Bob", w.now);
        dir.publish(alice.fingerprint(), alice.public(), None, SOURCE)
            .await
            .unwrap();
        dir.publish(alice.fingerprint(), alice.public(), None, SOURCE)
            .await
            .unwrap();
        let err = dir
            .publish(bob.fingerprint(), bob.public(), None, SOURCE)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::CreationLimited(CreationLimited { per_hour: 1, .. })
            ),
            "{err:?}"
        );
        // The budget is per clock hour of the relay's clock.
        w.clock.set(w.now + 3600);
        dir.publish(bob.fingerprint(), bob.public(), None, SOURCE)
            .await
            .unwrap();
    }
}
