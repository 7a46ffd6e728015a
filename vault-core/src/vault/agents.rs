//! Designated agents (`docs/format.md` §8.10): the log's rules for naming
//! and ending agencies and for what an agent may write, the views of them,
//! and the builders of their entries.
//!
//! An agency is in force in a collection from its agent-named entry there
//! until an agency-ended entry for it (or for an agency above it), and
//! while it has not expired. Its agent holds a grant of the collection
//! like any member (read, or read-add), and with its powers may share the
//! collection (read or read-add, never beyond its own expiry), revoke
//! plain members by rotating the key, and name further agents within its
//! own powers. It never creates collections, deletes or purges, holds
//! read-write, grants deposit, names relays, or touches the owner.

use std::collections::BTreeMap;

use crate::agency::{AgentNamed, Powers, MAX_AGENCY_CHAIN};
use crate::error::{Error, Result};
use crate::grant::{Grant, GrantScope, Permission, VerifiedGrant};
use crate::identity::{Fingerprint, PublicIdentity, SecretIdentity};
use crate::ids::{CollectionId, DelegationId};
use crate::log::{EntryBody, LogEntry, Rotation};

use super::apply::Applying;
use super::*;

/// One agency as the log defines it.
#[derive(Clone, Debug)]
pub(super) struct Agency {
    agent: Fingerprint,
    parent: Option<DelegationId>,
    powers: Powers,
    expires_at: Option<u64>,
    /// Who named it: the owner, or the agent of `parent`.
    named_by: Fingerprint,
    /// Each collection it was named in: the sequence numbers of its
    /// agent-named entry there and, once it ended there, of the entry
    /// that ended it. An ended agency is never named there again.
    spans: BTreeMap<CollectionId, (u64, Option<u64>)>,
}

impl Agency {
    /// Whether it was named in `collection` and has not ended there
    /// (expiry aside).
    fn named_in(&self, collection: &CollectionId) -> bool {
        matches!(self.spans.get(collection), Some((_, None)))
    }

    /// Collections where it was named, ended there or not.
    fn collections(&self, ended: bool) -> Vec<CollectionId> {
        self.spans
            .iter()
            .filter(|(_, (_, end))| end.is_some() == ended)
            .map(|(c, _)| *c)
            .collect()
    }
}

/// An agency, for listings ([`VaultState::agencies`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgencySummary {
    /// The agency.
    pub delegation: DelegationId,
    /// The agent.
    pub agent: Fingerprint,
    /// The agency of the agent who named this one (`None`: the owner did).
    pub parent: Option<DelegationId>,
    /// Who named it.
    pub named_by: Fingerprint,
    /// What the agent may do.
    pub powers: Powers,
    /// When it ends by itself, if it does.
    pub expires_at: Option<u64>,
    /// Collections it is in force in (expiry aside).
    pub collections: Vec<CollectionId>,
    /// Collections it was ended in.
    pub ended: Vec<CollectionId>,
}

impl VaultState {
    // ----- views --------------------------------------------------------

    /// Every agency named in this vault, in force or ended, by id.
    pub fn agencies(&self) -> Vec<AgencySummary> {
        self.agencies
            .iter()
            .map(|(d, a)| AgencySummary {
                delegation: *d,
                agent: a.agent,
                parent: a.parent,
                named_by: a.named_by,
                powers: a.powers,
                expires_at: a.expires_at,
                collections: a.collections(false),
                ended: a.collections(true),
            })
            .collect()
    }

    /// The agency `agent` acts under in `collection` at `at`, if one is in
    /// force there. A device of an agent's, listed in `collection`, acts
    /// under its agent's agency there (decision 70), as the log judges it.
    pub fn agency_of(
        &self,
        agent: &Fingerprint,
        collection: &CollectionId,
        at: u64,
    ) -> Option<(DelegationId, Powers)> {
        self.agency_in_force(agent, collection, at)
            .map(|(d, a)| (d, a.powers))
    }

    /// The agency in force in `collection` at `at` whose agent is `who`'s
    /// person there (itself, or the agent whose list there names it).
    fn agency_in_force(
        &self,
        who: &Fingerprint,
        collection: &CollectionId,
        at: u64,
    ) -> Option<(DelegationId, &Agency)> {
        let agent = self.person_in(who, Some(collection));
        self.agencies
            .iter()
            .find(|(d, a)| a.agent == agent && self.in_force(d, collection, at))
            .map(|(d, a)| (*d, a))
    }

    /// Whether agency `d` is in force in `collection` at `at`: named
    /// there, not ended there, not expired, and its parent likewise.
    fn in_force(&self, d: &DelegationId, collection: &CollectionId, at: u64) -> bool {
        let mut next = Some(*d);
        for _ in 0..MAX_AGENCY_CHAIN {
            let Some(a) = next.and_then(|d| self.agencies.get(&d)) else {
                return false;
            };
            if !a.named_in(collection) || a.expires_at.is_some_and(|e| at >= e) {
                return false;
            }
            next = a.parent;
            if next.is_none() {
                return true;
            }
        }
        false
    }

    /// `d` and the agencies above it, nearest first.
    fn chain(&self, d: &DelegationId) -> Vec<DelegationId> {
        let mut chain = Vec::new();
        let mut next = Some(*d);
        while let Some(d) = next.filter(|_| chain.len() <= MAX_AGENCY_CHAIN) {
            chain.push(d);
            next = self.agencies.get(&d).and_then(|a| a.parent);
        }
        chain
    }

    /// The agency under which `author` wrote the entry at `seq` of
    /// `collection`, if it wrote it as an agent of the owner (named there
    /// before `seq`, not ended before it): what listings show as "on
    /// behalf of" the owner. Expiry needs no check here: an agent's
    /// entries after its agency expired were refused. A device an agent's
    /// list in `collection` named wrote as the agent (the log accepted its
    /// entries only while it was listed).
    pub fn acting_for_owner(
        &self,
        author: &Fingerprint,
        collection: &CollectionId,
        seq: u64,
    ) -> Option<DelegationId> {
        let author = self
            .member_device(collection, author)
            .map_or(*author, |(person, _)| person);
        self.agencies
            .iter()
            .find(|(_, a)| {
                a.agent == author
                    && a.spans
                        .get(collection)
                        .is_some_and(|(from, to)| *from < seq && to.is_none_or(|to| seq < to))
            })
            .map(|(d, _)| *d)
    }

    /// When the agency `agent` acts under in `collection` at `at` ends by
    /// itself (`None`: it does not, or there is none).
    pub(super) fn agency_expiry(
        &self,
        agent: &Fingerprint,
        collection: &CollectionId,
        at: u64,
    ) -> Option<u64> {
        self.agency_in_force(agent, collection, at)
            .and_then(|(_, a)| a.expires_at)
    }

    /// Whether `who` is the agent of an agency in force in `collection`.
    pub(super) fn is_agent_in(
        &self,
        who: &Fingerprint,
        collection: &CollectionId,
        at: u64,
    ) -> bool {
        self.agency_in_force(who, collection, at).is_some()
    }

    /// The agency the entry's author acts under in `collection` at the
    /// entry's time, or the error for an author who is neither the owner
    /// nor such an agent.
    fn agency_of_author(&self, ctx: &Applying, collection: &CollectionId) -> Result<&Agency> {
        self.agency_in_force(&ctx.author, collection, ctx.time)
            .map(|(_, a)| a)
            .ok_or(
                ctx.unauthorized("is not the owner, nor an agent of the owner in this collection"),
            )
    }

    /// A collection grant-added entry by the owner: it may not change the
    /// grant of an agent in force (its agency is ended instead). A grant to
    /// someone whose agency here expired closes that agency's span: what
    /// they write from now on is their own.
    pub(super) fn check_owner_grant_to(
        &self,
        ctx: &Applying,
        member: &Fingerprint,
        collection: &CollectionId,
    ) -> Result<()> {
        if self.is_agent_in(member, collection, ctx.time) {
            return Err(
                ctx.invalid("the grant is for an agent in force here: end the agency instead")
            );
        }
        Ok(())
    }

    /// Ends, at `seq`, the spans in `collection` of `member`'s agencies
    /// there that expired without an agency-ended entry (see
    /// [`Self::check_owner_grant_to`]).
    pub(super) fn close_expired_agencies(
        &mut self,
        member: &Fingerprint,
        collection: &CollectionId,
        seq: u64,
    ) {
        for a in self.agencies.values_mut().filter(|a| a.agent == *member) {
            if let Some(span @ (_, None)) = a.spans.get_mut(collection) {
                span.1 = Some(seq);
            }
        }
    }

    // ----- rules ----------------------------------------------------------

    /// Kind 12: the owner, or an agent who may name agents, names an agent
    /// in one collection.
    pub(super) fn apply_agent_named(&mut self, ctx: &Applying, named: &AgentNamed) -> Result<()> {
        let grant = self.check_agent_named(ctx, named)?;
        let collection = named.grant.scope().collection();
        let agent = named.agent.fingerprint();
        if let Some(c) = self.collections.get_mut(&collection) {
            c.grants.insert(agent, grant);
        }
        self.identities.insert(agent, named.agent.clone());
        self.agencies
            .entry(named.delegation)
            .or_insert_with(|| Agency {
                agent,
                parent: named.parent,
                powers: named.powers,
                expires_at: named.expires_at,
                named_by: ctx.author,
                spans: BTreeMap::new(),
            })
            .spans
            .insert(collection, (ctx.seq, None));
        Ok(())
    }

    /// The rules of kind 12 ([`Self::apply_agent_named`]); the agent's
    /// grant, verified.
    fn check_agent_named(&self, ctx: &Applying, named: &AgentNamed) -> Result<VerifiedGrant> {
        let collection = named.grant.scope().collection();
        let agent = named.agent.fingerprint();
        let coll = self
            .collections
            .get(&collection)
            .ok_or(ctx.invalid("an agent named in an unknown collection"))?;
        // Who names: the owner (no parent), or an agent in force here who
        // may name agents, within its own powers and expiry.
        let depth = if ctx.is_owner {
            if named.parent.is_some() {
                return Err(ctx.invalid("an agency the owner names has no parent agency"));
            }
            1
        } else {
            let (d, a) = self
                .agency_in_force(&ctx.author, &collection, ctx.time)
                .ok_or(ctx.unauthorized(
                    "is not the owner, nor an agent of the owner in this collection",
                ))?;
            if !a.powers.names_agents() {
                return Err(ctx.unauthorized("is an agent who may not name further agents"));
            }
            if named.parent != Some(d) {
                return Err(ctx.invalid("an agent names agents under its own agency"));
            }
            if !named.powers.within(a.powers) || !within_expiry(named.expires_at, a.expires_at) {
                return Err(ctx.unauthorized("may not give an agent more than it holds"));
            }
            let chain = self.chain(&d);
            if chain
                .iter()
                .any(|p| self.agencies.get(p).is_some_and(|a| a.agent == agent))
            {
                return Err(ctx.invalid("an agent cannot be named under its own agency"));
            }
            chain.len() + 1
        };
        if depth > MAX_AGENCY_CHAIN {
            return Err(ctx.invalid("agencies nest at most three deep"));
        }
        if agent == self.owner.fingerprint()
            || agent == ctx.author
            || self.listed_device(&agent).is_some()
            || self.member_devices.contains(&agent)
        {
            return Err(ctx.invalid(
                "the owner, one of the owner's devices, or the one naming, cannot be named an agent",
            ));
        }
        if self
            .identities
            .get(&agent)
            .is_some_and(|known| *known != named.agent)
        {
            return Err(ctx.invalid("a different document for a known identity"));
        }
        match self.agencies.get(&named.delegation) {
            None => {}
            Some(a)
                if a.agent == agent
                    && a.parent == named.parent
                    && a.powers == named.powers
                    && a.expires_at == named.expires_at
                    && !a.spans.contains_key(&collection) => {}
            Some(_) => {
                return Err(ctx.invalid(
                    "the delegation id belongs to another agency, or to this one in this collection already",
                ))
            }
        }
        if self.is_agent_in(&agent, &collection, ctx.time) {
            return Err(ctx.invalid("already an agent in this collection: end that agency first"));
        }
        if !ctx.is_owner && coll.grants.contains_key(&agent) {
            return Err(ctx
                .invalid("an agent names only someone who is not yet a member of the collection"));
        }
        let grant = &named.grant;
        if grant.member() != agent
            || grant.scope()
                != (GrantScope::Collection {
                    collection,
                    epoch: coll.epoch,
                })
            || grant.permission() != named.powers.permission()
            || grant.expires_at() != named.expires_at
        {
            return Err(ctx.invalid(
                "an agent's grant is of the collection's current key, read or read-add, expiring with the agency",
            ));
        }
        if !coll.grants.contains_key(&agent) && coll.grants.len() >= MAX_COLLECTION_MEMBERS {
            return Err(ctx.invalid("the collection already has the maximum number of members"));
        }
        if !ctx.is_owner {
            self.check_key_commitment(ctx, grant)?;
        }
        self.verify_grant(grant, ctx.seq, ctx.check_signatures, &ctx.device)
    }

    /// Kind 13: the owner, the agent itself, or an agent above it ends an
    /// agency in one collection, and every agency named under it there.
    /// Their agents' grants leave the collection; what they did stays.
    pub(super) fn apply_agency_ended(
        &mut self,
        ctx: &Applying,
        delegation: &DelegationId,
        collection: &CollectionId,
    ) -> Result<()> {
        self.check_agency_ended(ctx, delegation, collection)?;
        let ending: Vec<DelegationId> = self
            .agencies
            .iter()
            .filter(|(d, a)| a.named_in(collection) && self.chain(d).contains(delegation))
            .map(|(d, _)| *d)
            .collect();
        for d in ending {
            let Some(a) = self.agencies.get_mut(&d) else {
                continue;
            };
            if let Some(span) = a.spans.get_mut(collection) {
                span.1 = Some(ctx.seq);
            }
            let agent = a.agent;
            if let Some(c) = self.collections.get_mut(collection) {
                c.grants.remove(&agent);
                c.left.insert(agent, ctx.seq);
            }
        }
        Ok(())
    }

    /// The rules of kind 13 ([`Self::apply_agency_ended`]).
    fn check_agency_ended(
        &self,
        ctx: &Applying,
        delegation: &DelegationId,
        collection: &CollectionId,
    ) -> Result<()> {
        let agency = self
            .agencies
            .get(delegation)
            .filter(|a| a.named_in(collection))
            .ok_or(ctx.invalid("no such agency in force in this collection"))?;
        let may_end = ctx.is_owner
            || agency.agent == ctx.author
            || self
                .agency_in_force(&ctx.author, collection, ctx.time)
                .is_some_and(|(mine, _)| self.chain(delegation).contains(&mine));
        if !may_end {
            return Err(ctx.unauthorized(
                "is not the owner, the agent, or an agent above it, so may not end this agency",
            ));
        }
        Ok(())
    }

    /// A collection grant-added entry by an agent: it shares within its
    /// powers (read, or read-add if it adds; never beyond its own expiry;
    /// the collection's current key, as the owner's grant commits to it)
    /// with someone who is not the owner, itself, an agent in force, or
    /// already a member.
    pub(super) fn check_agent_grant(&self, ctx: &Applying, grant: &Grant) -> Result<()> {
        let GrantScope::Collection { collection, .. } = grant.scope() else {
            return Err(ctx.unauthorized(
                "is an agent, who shares whole collections only (the owner shares single records)",
            ));
        };
        let agency = self.agency_of_author(ctx, &collection)?;
        let (powers, own_expiry) = (agency.powers, agency.expires_at);
        if !powers.shares() {
            return Err(ctx.unauthorized("is an agent who may not share"));
        }
        let member = grant.member();
        let allowed = match grant.permission() {
            Permission::Read => true,
            Permission::Add => powers.adds(),
            Permission::ReadWrite | Permission::Deposit => false,
        };
        if !allowed || !within_expiry(grant.expires_at(), own_expiry) {
            return Err(ctx.unauthorized("may not grant more than it holds"));
        }
        let coll = self
            .collections
            .get(&collection)
            .ok_or(ctx.invalid("grant for an unknown collection"))?;
        if member == self.owner.fingerprint()
            || member == ctx.author
            || coll.grants.contains_key(&member)
        {
            return Err(ctx.invalid(
                "an agent shares only with someone who is not the owner, itself, or already a member",
            ));
        }
        self.check_key_commitment(ctx, grant)
    }

    /// An agent's grant of a collection must commit to the key the owner's
    /// grant of that epoch commits to: an agent cannot hand out a key of
    /// its own making.
    fn check_key_commitment(&self, ctx: &Applying, grant: &Grant) -> Result<()> {
        let GrantScope::Collection { collection, epoch } = grant.scope() else {
            return Err(ctx.invalid("not a collection grant"));
        };
        let owners = self
            .collections
            .get(&collection)
            .and_then(|c| c.grants_of(epoch))
            .and_then(|g| g.get(&self.owner.fingerprint()))
            .and_then(|g| g.key_commitment().copied());
        match (owners, grant.key_commitment()) {
            (Some(o), Some(g)) if crate::primitives::ct_eq(&o, g) => Ok(()),
            _ => Err(ctx.invalid("the grant is not of the key the owner holds")),
        }
    }

    /// A rotation by an agent who may share: it revokes plain members only
    /// (never the owner or an agent in force), every remaining member
    /// keeps its permission and expiry, and every new grant commits to one
    /// key.
    pub(super) fn check_agent_rotation(&self, ctx: &Applying, r: &Rotation) -> Result<()> {
        if !self.agency_of_author(ctx, &r.collection)?.powers.shares() {
            return Err(ctx.unauthorized("is an agent who may not revoke"));
        }
        if !r.dropped.is_empty() {
            return Err(ctx.unauthorized(
                "is an agent, who deletes nothing: its rotation may not drop records",
            ));
        }
        let coll = self
            .collections
            .get(&r.collection)
            .ok_or(ctx.invalid("rotation of an unknown collection"))?;
        for g in &r.grants {
            let kept = coll.grants.get(&g.member()).is_some_and(|old| {
                old.permission() == g.permission() && old.expires_at() == g.expires_at()
            });
            if !kept {
                return Err(ctx.unauthorized(
                    "is an agent, whose rotation must keep every remaining member's access as it was",
                ));
            }
        }
        // A deposit grant commits to the epoch's deposit public key, the
        // others to the collection key: every one of those is the same.
        let mut commitments = r
            .grants
            .iter()
            .filter(|g| g.permission() != Permission::Deposit)
            .map(Grant::key_commitment);
        let first = commitments.next().flatten();
        if first.is_none() || commitments.any(|c| c != first) {
            return Err(ctx.invalid("the new grants of an agent's rotation commit to one key"));
        }
        Ok(())
    }

    // ----- builders -------------------------------------------------------

    /// An entry naming `agent` as an agent in `collection` with `powers`
    /// until `expires_at`, as the keyring's identity: the owner, or an
    /// agent in force there who may name agents (the new agency is then
    /// under its own, within its powers and expiry). `delegation` extends
    /// an existing agency to this collection (same agent, powers and
    /// expiry); `None` starts a new one. Returns the agency's id and the
    /// entry.
    pub fn name_agent(
        &self,
        keyring: &mut Keyring,
        collection: &CollectionId,
        agent: &PublicIdentity,
        powers: Powers,
        expires_at: Option<u64>,
        delegation: Option<DelegationId>,
    ) -> Result<(DelegationId, LogEntry)> {
        let me = keyring.identity();
        let now = keyring.now();
        let parent = if self.is_owner(&me.fingerprint()) {
            None
        } else {
            let (d, held) = self
                .agency_of(&me.fingerprint(), collection, now)
                .ok_or(Error::AccessDenied(
                "only the vault owner, or an agent of theirs in this collection, can name agents",
            ))?;
            if !held.names_agents() {
                return Err(Error::AccessDenied(
                    "your agency does not let you name further agents",
                ));
            }
            Some(d)
        };
        let key = self.current_key(keyring, collection)?;
        let grant = Grant::for_collection_to(
            me,
            key,
            &self.grant_to(agent, Some(collection)),
            powers.permission(),
            expires_at,
            now,
            self.names_signer(me),
        )?;
        let delegation = delegation.unwrap_or_else(DelegationId::random);
        let body = EntryBody::AgentNamed(AgentNamed {
            delegation,
            parent,
            powers,
            expires_at,
            agent: agent.clone(),
            grant,
        });
        let entry = self.next_entry(me, now, body)?;
        if let EntryBody::AgentNamed(named) = entry.body() {
            self.check_agent_named(&self.applying(&entry), named)?;
        }
        Ok((delegation, entry))
    }

    /// An entry ending agency `delegation` in `collection`, as `author`:
    /// the owner, the agent (resigning), or an agent above it. The owner's
    /// client follows it with a rotation revoking nobody in the same
    /// append, so the key the agent held opens nothing written afterwards.
    pub fn end_agency(
        &self,
        author: &SecretIdentity,
        delegation: &DelegationId,
        collection: &CollectionId,
        now: u64,
    ) -> Result<LogEntry> {
        let entry = self.next_entry(
            author,
            now,
            EntryBody::AgencyEnded {
                delegation: *delegation,
                collection: *collection,
            },
        )?;
        self.check_agency_ended(&self.applying(&entry), delegation, collection)?;
        Ok(entry)
    }

    /// Whether the keyring's identity shares `collection` as an agent
    /// (`Ok(true)`), as the owner (`Ok(false)`), or may not share it.
    pub(super) fn sharing_as_agent(
        &self,
        who: &SecretIdentity,
        collection: &CollectionId,
        now: u64,
    ) -> Result<bool> {
        if self.is_owner(&who.fingerprint()) {
            return Ok(false);
        }
        match self.agency_of(&who.fingerprint(), collection, now) {
            Some((_, powers)) if powers.shares() => Ok(true),
            Some(_) => Err(Error::AccessDenied(
                "your agency does not let you share or revoke; ask the owner",
            )),
            None => Err(Error::AccessDenied(
                "only the vault owner, or an agent of theirs who may share, can do this",
            )),
        }
    }
}

/// Whether an expiry `inner` ends no later than `outer` (no expiry is the
/// latest).
fn within_expiry(inner: Option<u64>, outer: Option<u64>) -> bool {
    match (inner, outer) {
        (_, None) => true,
        (Some(i), Some(o)) => i <= o,
        (None, Some(_)) => false,
    }
}
