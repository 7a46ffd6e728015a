//! Designated agents (`docs/format.md` §8.10): what an agent-named entry
//! says, and the powers it gives.
//!
//! An agent is someone the owner names to act for them in some
//! collections: a parent for a child, an adult child for a parent, a
//! lawyer. The naming is a log entry (kind 12) per collection, carrying
//! the agent's grant; it is ended by a kind-13 entry. Which agent entries
//! the log accepts is decided by [`crate::VaultState`].

use std::fmt;

use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::grant::{Grant, Permission};
use crate::identity::{PublicIdentity, MAX_IDENTITY_LEN};
use crate::ids::DelegationId;
use crate::log::MAX_GRANT_LEN;

/// The most agencies in one chain of naming (an agent named by an agent
/// named by the owner is a chain of 2).
pub const MAX_AGENCY_CHAIN: usize = 3;

/// What an agent may do in the collections of its agency. Read is always
/// given (an agent acts on what it can see).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Powers(u8);

impl Powers {
    const READ: u8 = 0x01;
    const ADD: u8 = 0x02;
    const SHARE: u8 = 0x04;
    const NAME_AGENTS: u8 = 0x08;
    const ALL: u8 = Self::READ | Self::ADD | Self::SHARE | Self::NAME_AGENTS;

    /// Read only.
    pub const fn read_only() -> Self {
        Self(Self::READ)
    }

    /// Read, plus the powers asked for. Naming agents implies sharing: an
    /// agent who may name agents can give read access to anyone anyway.
    pub const fn new(add: bool, share: bool, name_agents: bool) -> Self {
        let mut bits = Self::READ;
        if add {
            bits |= Self::ADD;
        }
        if share || name_agents {
            bits |= Self::SHARE;
        }
        if name_agents {
            bits |= Self::NAME_AGENTS;
        }
        Self(bits)
    }

    /// The powers of an encoded byte: read set, no unknown bit, and share
    /// set wherever name-agents is.
    pub fn from_byte(byte: u8) -> Option<Self> {
        let valid = byte & Self::READ != 0
            && byte & !Self::ALL == 0
            && (byte & Self::NAME_AGENTS == 0 || byte & Self::SHARE != 0);
        valid.then_some(Self(byte))
    }

    /// The encoded byte.
    pub const fn to_byte(self) -> u8 {
        self.0
    }

    /// Parses a comma-separated list of `read`, `add`, `share`,
    /// `name-agents` (read is implied, and name-agents implies share), e.g.
    /// `"add,share"`.
    pub fn parse(list: &str) -> Result<Self> {
        let mut bits = Self::READ;
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            bits |=
                match name {
                    "read" => Self::READ,
                    "add" => Self::ADD,
                    "share" => Self::SHARE,
                    "name-agents" => Self::NAME_AGENTS | Self::SHARE,
                    _ => return Err(Error::InvalidInput(
                        "unknown power: use read, add, share or name-agents, separated by commas",
                    )),
                };
        }
        Ok(Self(bits))
    }

    /// The permission of the agent's grant: read-add when it adds, read
    /// otherwise (an agent never holds read-write).
    pub const fn permission(self) -> Permission {
        if self.adds() {
            Permission::Add
        } else {
            Permission::Read
        }
    }

    /// Whether the agent may add records, and new versions of the records
    /// it created (its grant is read-add instead of read).
    pub const fn adds(self) -> bool {
        self.0 & Self::ADD != 0
    }

    /// Whether the agent may share the collection with others (read or,
    /// if it adds, read-add) and revoke them.
    pub const fn shares(self) -> bool {
        self.0 & Self::SHARE != 0
    }

    /// Whether the agent may name further agents, within its own powers.
    pub const fn names_agents(self) -> bool {
        self.0 & Self::NAME_AGENTS != 0
    }

    /// Whether every power of `self` is also one of `other`'s.
    pub const fn within(self, other: Powers) -> bool {
        self.0 & !other.0 == 0
    }
}

impl fmt::Display for Powers {
    /// `read`, then `add`, `share`, `name-agents` as held, comma-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("read")?;
        for (held, name) in [
            (self.adds(), "add"),
            (self.shares(), "share"),
            (self.names_agents(), "name-agents"),
        ] {
            if held {
                write!(f, ",{name}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Powers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Powers({self})")
    }
}

/// The payload of an agent-named entry (kind 12): an agency in one
/// collection, with the agent's grant of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentNamed {
    /// The agency (one id across every collection it covers).
    pub delegation: DelegationId,
    /// The agency of the agent who named this one; `None` when the owner
    /// did.
    pub parent: Option<DelegationId>,
    /// What the agent may do.
    pub powers: Powers,
    /// When the agency ends by itself, seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// The agent's identity.
    pub agent: PublicIdentity,
    /// The agent's grant of the collection at its current epoch: read, or
    /// read-add when the agent adds; expiring with the agency.
    pub grant: Grant,
}

impl AgentNamed {
    pub(crate) fn write(&self, w: &mut Writer) {
        w.fixed(self.delegation.as_bytes())
            .option(self.parent, |w, p| {
                w.fixed(p.as_bytes());
            })
            .u8(self.powers.to_byte())
            .option(self.expires_at, |w, t| {
                w.u64(t);
            })
            .bytes(self.agent.to_bytes())
            .bytes(&self.grant.to_bytes());
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let delegation = DelegationId::from_bytes(r.array()?);
        let parent = r.option(|r| Ok(DelegationId::from_bytes(r.array()?)))?;
        let powers = Powers::from_byte(r.u8()?)
            .ok_or(r.malformed("agent powers must include read and no unknown power"))?;
        let expires_at = r.option(|r| r.u64())?;
        let agent = PublicIdentity::from_bytes(r.bytes(MAX_IDENTITY_LEN)?)?;
        let grant = Grant::from_bytes(r.bytes(MAX_GRANT_LEN)?)?;
        Ok(Self {
            delegation,
            parent,
            powers,
            expires_at,
            agent,
            grant,
        })
    }
}
