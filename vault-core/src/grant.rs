//! Grants (`docs/format.md` §7): how a member receives a collection key or a
//! single record's data key.
//!
//! The key travels as a standard age file encrypted to the member's X25519
//! recipient. The owner signs (vault, collection, epoch, [record, version],
//! member fingerprint, permission, expiry, issue time, SHA-256 of the age
//! file), so a relay that replaces the age file, changes a field, or hands a
//! member a key the owner never granted is caught. A parsed [`Grant`] must be
//! verified against the owner's identity ([`Grant::verify`]) before the key
//! inside can be opened.

use crate::agefile;
use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::identity::{Fingerprint, PublicIdentity, SecretIdentity};
use crate::ids::{CollectionId, RecordId, VaultId};
use crate::keys::{CollectionKey, DataKey, DepositPublicKey};
use crate::primitives::{self, sha256};
use crate::record::VerifiedRecord;

/// Version 2 adds the granted key's commitment; version 1 is still read.
const GRANT_VERSION: u8 = 2;
/// Version 3 (`docs/format.md` §7.1) adds the signer and the member's key
/// generation: written by agents, whose grants the owner did not sign.
const GRANT_VERSION_3: u8 = 3;
const GRANT_SIGNATURE_CONTEXT: &[u8] = b"vault/v1/grant\0";
const MAX_AGE_FILE: usize = 4096;

/// What a member may do with a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read records.
    Read,
    /// Read records and add or update records (signed as the member):
    /// also replace or delete any record of the collection, the owner's
    /// included.
    ReadWrite,
    /// Read records, add new ones and new versions of the records this
    /// member created; never delete, never replace a record someone else
    /// created (`docs/format.md` §8.2).
    Add,
    /// Write-only: add new records and new versions of the records this
    /// member created, as [`Permission::Add`], but read nothing. The grant
    /// carries the epoch's deposit public key instead of the collection key
    /// (`docs/format.md` §5.5, §7.1), so the member can seal data keys to
    /// the collection's readers and open none, not even its own deposits.
    Deposit,
}

impl Permission {
    fn to_byte(self) -> u8 {
        match self {
            Permission::Read => 1,
            Permission::ReadWrite => 2,
            Permission::Add => 3,
            Permission::Deposit => 4,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Permission::Read),
            2 => Some(Permission::ReadWrite),
            3 => Some(Permission::Add),
            4 => Some(Permission::Deposit),
            _ => None,
        }
    }
    /// `"read"`, `"read-write"`, `"read-add"` or `"deposit"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::ReadWrite => "read-write",
            Permission::Add => "read-add",
            Permission::Deposit => "deposit",
        }
    }

    /// The permission named by [`Permission::as_str`], if `name` is one.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Permission::Read,
            Permission::ReadWrite,
            Permission::Add,
            Permission::Deposit,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }

    /// Whether it lets the member append record-put entries at all.
    pub fn may_add(self) -> bool {
        matches!(
            self,
            Permission::ReadWrite | Permission::Add | Permission::Deposit
        )
    }

    /// Whether it lets the member read the collection's records (every
    /// permission but [`Permission::Deposit`]).
    pub fn may_read(self) -> bool {
        self != Permission::Deposit
    }

    /// Whether the member may replace only the records it created (read-add
    /// and deposit), not anyone's.
    pub fn own_records_only(self) -> bool {
        matches!(self, Permission::Add | Permission::Deposit)
    }
}

/// What a grant gives access to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrantScope {
    /// A whole collection, at one epoch.
    Collection {
        /// The collection.
        collection: CollectionId,
        /// The epoch whose key is granted.
        epoch: u32,
    },
    /// One record version's data key.
    Record {
        /// The collection the record is in.
        collection: CollectionId,
        /// The record.
        record: RecordId,
        /// The record version whose data key is granted.
        version: u32,
    },
}

impl GrantScope {
    /// The collection this grant is about.
    pub fn collection(&self) -> CollectionId {
        match self {
            GrantScope::Collection { collection, .. } | GrantScope::Record { collection, .. } => {
                *collection
            }
        }
    }
}

/// A parsed (not yet verified) grant.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    vault: VaultId,
    scope: GrantScope,
    member: Fingerprint,
    permission: Permission,
    expires_at: Option<u64>,
    issued_at: u64,
    /// The granted key's commitment (§7.1; `None` in a version-1 grant).
    key_commitment: Option<[u8; 32]>,
    /// Version 3: who signed the grant (the author of the entry carrying
    /// it). `None` in versions 1 and 2, which the owner signs.
    signer: Option<Fingerprint>,
    /// Version 3: the member's key generation the age file is sealed to
    /// (`docs/format.md` §3.7; 0, the member's document's own key, in
    /// versions 1 and 2 and for a person without a device list).
    generation: u32,
    age_file: Vec<u8>,
    signature: [u8; 64],
}

impl Grant {
    /// The context the granted key is committed in: the vault and the
    /// scope, as encoded.
    fn commitment_context(vault: &VaultId, scope: &GrantScope) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed(b"grant").fixed(vault.as_bytes());
        Self::write_scope(&mut w, scope);
        w.into_vec()
    }

    fn write_scope(w: &mut Writer, scope: &GrantScope) {
        match *scope {
            GrantScope::Collection { collection, epoch } => {
                w.u8(1).fixed(collection.as_bytes()).u32(epoch);
            }
            GrantScope::Record {
                collection,
                record,
                version,
            } => {
                w.u8(2)
                    .fixed(collection.as_bytes())
                    .fixed(record.as_bytes())
                    .u32(version);
            }
        }
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_context(GRANT_SIGNATURE_CONTEXT);
        self.write_fields(&mut w);
        w.fixed(&sha256(&[&self.age_file]));
        w.into_vec()
    }

    fn format(&self) -> u8 {
        match (&self.signer, &self.key_commitment) {
            (Some(_), _) => GRANT_VERSION_3,
            (None, Some(_)) => GRANT_VERSION,
            (None, None) => 1,
        }
    }

    fn write_fields(&self, w: &mut Writer) {
        w.u8(self.format()).fixed(self.vault.as_bytes());
        Self::write_scope(w, &self.scope);
        w.fixed(self.member.as_bytes())
            .u8(self.permission.to_byte())
            .option(self.expires_at, |w, t| {
                w.u64(t);
            })
            .u64(self.issued_at);
        if let Some(c) = &self.key_commitment {
            w.fixed(c);
        }
        if let Some(signer) = &self.signer {
            w.fixed(signer.as_bytes()).u32(self.generation);
        }
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write_fields(&mut w);
        w.fixed(&sha256(&[&self.age_file]))
            .bytes(&self.age_file)
            .fixed(&self.signature);
        w.into_vec()
    }

    /// Parses a grant strictly. The embedded hash must match the embedded age
    /// file (a replaced age file is refused here, before any signature work).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "grant");
        let format = r.u8()?;
        if !matches!(format, 1 | GRANT_VERSION | GRANT_VERSION_3) {
            return Err(Error::UnsupportedVersion {
                what: "grant",
                version: format,
            });
        }
        let vault = VaultId::from_bytes(r.array()?);
        let scope = match r.u8()? {
            1 => GrantScope::Collection {
                collection: CollectionId::from_bytes(r.array()?),
                epoch: r.u32()?,
            },
            2 => GrantScope::Record {
                collection: CollectionId::from_bytes(r.array()?),
                record: RecordId::from_bytes(r.array()?),
                version: r.u32()?,
            },
            _ => return Err(r.malformed("unknown grant scope")),
        };
        let member = Fingerprint::from_bytes(r.array()?);
        let permission = Permission::from_byte(r.u8()?).ok_or(r.malformed("unknown permission"))?;
        let expires_at = r.option(|r| r.u64())?;
        let issued_at = r.u64()?;
        let key_commitment = if format >= GRANT_VERSION {
            Some(r.array()?)
        } else {
            None
        };
        let (signer, generation) = if format == GRANT_VERSION_3 {
            (Some(Fingerprint::from_bytes(r.array()?)), r.u32()?)
        } else {
            (None, 0)
        };
        let hash: [u8; 32] = r.array()?;
        let age_file = r.bytes(MAX_AGE_FILE)?.to_vec();
        let signature = r.array()?;
        r.finish()?;
        if !primitives::ct_eq(&hash, &sha256(&[&age_file])) {
            return Err(Error::ContextMismatch {
                what: "grant key file",
                field: "hash",
            });
        }
        if matches!(scope, GrantScope::Record { .. }) && permission != Permission::Read {
            return Err(Error::Malformed {
                what: "grant",
                reason: "record grants are read-only",
            });
        }
        if permission == Permission::Deposit && key_commitment.is_none() {
            return Err(Error::Malformed {
                what: "grant",
                reason: "a deposit grant is version 2",
            });
        }
        Ok(Self {
            vault,
            scope,
            member,
            permission,
            expires_at,
            issued_at,
            key_commitment,
            signer,
            generation,
            age_file,
            signature,
        })
    }

    fn issue(signer: &SecretIdentity, to: &GrantTo, terms: Terms, key: &[u8; 32]) -> Result<Self> {
        let Terms {
            vault,
            scope,
            permission,
            expires_at,
            issued_at,
            as_agent,
        } = terms;
        let age_file = agefile::encrypt(&agefile::x25519_recipient(&to.public)?, key)?;
        // A grant to a generation above 0 names it, so is version 3.
        let names_signer = as_agent || to.generation != 0;
        let mut g = Self {
            vault,
            scope,
            member: to.member,
            permission,
            expires_at,
            issued_at,
            key_commitment: Some(primitives::key_commitment(
                key,
                &Self::commitment_context(&vault, &scope),
            )),
            signer: names_signer.then(|| signer.fingerprint()),
            generation: to.generation,
            age_file,
            signature: [0; 64],
        };
        g.signature = signer.sign(&g.signed_bytes());
        Ok(g)
    }

    /// Issues a grant of a collection to `member`, signed by the owner (a
    /// version-2 grant): of the collection key, or for
    /// [`Permission::Deposit`] of the epoch's deposit public key only
    /// (`docs/format.md` §7.1).
    #[cfg(test)]
    pub(crate) fn for_collection(
        owner: &SecretIdentity,
        key: &CollectionKey,
        member: &PublicIdentity,
        permission: Permission,
        expires_at: Option<u64>,
        issued_at: u64,
    ) -> Result<Self> {
        Self::for_collection_signed(owner, key, member, permission, expires_at, issued_at, false)
    }

    /// [`Grant::for_collection`] signed by `signer`: the owner, or with
    /// `as_agent` an agent acting for the owner (`docs/format.md` §8.10),
    /// whose grant is version 3 and names it.
    #[cfg(test)]
    pub(crate) fn for_collection_signed(
        signer: &SecretIdentity,
        key: &CollectionKey,
        member: &PublicIdentity,
        permission: Permission,
        expires_at: Option<u64>,
        issued_at: u64,
        as_agent: bool,
    ) -> Result<Self> {
        let to = GrantTo::document(member);
        Self::for_collection_to(
            signer, key, &to, permission, expires_at, issued_at, as_agent,
        )
    }

    /// Issues a grant of a collection, signed by `signer`, sealed to `to`
    /// (a member's key generation): of the collection key, or for
    /// [`Permission::Deposit`] of the epoch's deposit public key only
    /// (`docs/format.md` §7.1). With `names_signer` (an agent, or a device
    /// signing for its person), or a generation above 0, the grant is
    /// version 3 and names its signer; otherwise version 2, signed by the
    /// owner.
    pub(crate) fn for_collection_to(
        signer: &SecretIdentity,
        key: &CollectionKey,
        to: &GrantTo,
        permission: Permission,
        expires_at: Option<u64>,
        issued_at: u64,
        names_signer: bool,
    ) -> Result<Self> {
        let terms = Terms {
            vault: key.vault(),
            scope: GrantScope::Collection {
                collection: key.collection(),
                epoch: key.epoch(),
            },
            permission,
            expires_at,
            issued_at,
            as_agent: names_signer,
        };
        if permission == Permission::Deposit {
            Self::issue(signer, to, terms, key.deposit_public().as_bytes())
        } else {
            Self::issue(signer, to, terms, key.secret())
        }
    }

    /// A version-3 collection grant naming `member` but sealed to
    /// `sealed_to`, signed by `agent`: what a malicious agent's rotation
    /// can carry (the log cannot tell), for tests.
    #[cfg(test)]
    pub(crate) fn misaddressed_for_test(
        agent: &SecretIdentity,
        key: &CollectionKey,
        member: &PublicIdentity,
        sealed_to: &PublicIdentity,
        issued_at: u64,
    ) -> Result<Self> {
        let mut g = Self::for_collection_signed(
            agent,
            key,
            sealed_to,
            Permission::ReadWrite,
            None,
            issued_at,
            true,
        )?;
        g.member = member.fingerprint();
        g.signature = agent.sign(&g.signed_bytes());
        Ok(g)
    }

    /// Issues a grant of one verified record version's data key to
    /// `member` (read-only); with `names_signer` (a device of the owner
    /// signing), version 3 naming its signer.
    pub(crate) fn for_record(
        owner: &SecretIdentity,
        record: &VerifiedRecord<'_>,
        data_key: &DataKey,
        member: &PublicIdentity,
        expires_at: Option<u64>,
        issued_at: u64,
        names_signer: bool,
    ) -> Result<Self> {
        let m = record.metadata();
        let terms = Terms {
            vault: m.vault(),
            scope: GrantScope::Record {
                collection: m.collection(),
                record: m.record(),
                version: m.version(),
            },
            permission: Permission::Read,
            expires_at,
            issued_at,
            as_agent: names_signer,
        };
        Self::issue(owner, &GrantTo::document(member), terms, &data_key.0)
    }

    /// Verifies the signature of `signer`: the owner for a version-1 or
    /// version-2 grant, the identity [`Grant::signer`] names for a
    /// version-3 one. Only a verified grant can be opened.
    pub fn verify(&self, signer: &PublicIdentity) -> Result<VerifiedGrant> {
        if self.signer.is_some_and(|s| s != signer.fingerprint()) {
            return Err(Error::BadSignature { what: "grant" });
        }
        primitives::verify_in_batch(
            signer.verifying_key(),
            &self.signed_bytes(),
            &self.signature,
            "grant",
        )?;
        Ok(VerifiedGrant(self.clone()))
    }

    /// A grant whose signature was verified when its entry arrived, read
    /// again from a log this device verified up to a trusted checkpoint.
    pub(crate) fn verified_before(&self) -> VerifiedGrant {
        VerifiedGrant(self.clone())
    }

    /// The vault.
    pub fn vault(&self) -> VaultId {
        self.vault
    }
    /// What is granted.
    pub fn scope(&self) -> GrantScope {
        self.scope
    }
    /// The member's fingerprint.
    pub fn member(&self) -> Fingerprint {
        self.member
    }
    /// The permission.
    pub fn permission(&self) -> Permission {
        self.permission
    }
    /// Expiry, seconds since the Unix epoch, if any.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }
    /// Issue time, seconds since the Unix epoch.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
    /// Who signed the grant, if it names them (version 3, written by an
    /// agent); `None` for a version-1 or version-2 grant, which the vault
    /// owner signed.
    pub fn signer(&self) -> Option<Fingerprint> {
        self.signer
    }
    /// The member's key generation the grant is sealed to: 0 (the member's
    /// identity document's own key) unless a version-3 grant names another
    /// (`docs/format.md` §3.7).
    pub fn generation(&self) -> u32 {
        self.generation
    }
    /// The granted key's commitment (`None` in a version-1 grant): the
    /// same for every grant of one collection epoch, whoever signed it.
    pub(crate) fn key_commitment(&self) -> Option<&[u8; 32]> {
        self.key_commitment.as_ref()
    }
    /// The standard age file carrying the key (decryptable with stock age
    /// and the member's `AGE-SECRET-KEY-1…`).
    pub fn age_file(&self) -> &[u8] {
        &self.age_file
    }
    /// Whether the grant is in force at `now` (seconds since the Unix epoch).
    pub fn is_valid_at(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }
}

/// Whom a grant is sealed to: the member (a person's fingerprint), the
/// X25519 public key of the member's key generation, and which generation
/// that is (0: the member's identity document's own key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GrantTo {
    pub(crate) member: Fingerprint,
    pub(crate) public: [u8; 32],
    pub(crate) generation: u32,
}

impl GrantTo {
    /// Generation 0 of `member`: its identity document's own key.
    pub(crate) fn document(member: &PublicIdentity) -> Self {
        Self {
            member: member.fingerprint(),
            public: *member.x25519_public(),
            generation: 0,
        }
    }
}

/// What a grant says, before it is encrypted to its member and signed.
struct Terms {
    vault: VaultId,
    scope: GrantScope,
    permission: Permission,
    expires_at: Option<u64>,
    issued_at: u64,
    /// Signed by an agent: a version-3 grant naming its signer.
    as_agent: bool,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("vault", &self.vault)
            .field("scope", &self.scope)
            .field("member", &self.member)
            .field("permission", &self.permission)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A grant whose owner signature was verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedGrant(Grant);

impl std::ops::Deref for VerifiedGrant {
    type Target = Grant;
    fn deref(&self) -> &Grant {
        &self.0
    }
}

impl VerifiedGrant {
    fn open_key(&self, me: &GrantKey) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        if self.0.member != me.member {
            return Err(Error::AccessDenied("this grant is for another member"));
        }
        // Whatever fails (not for this key, a longer plaintext, a corrupt
        // file) the grant does not open: an agent's rotation can seal the
        // owner's grant so (decision 65), and the owner then re-keys.
        let pt = agefile::decrypt_x25519(&self.0.age_file, &me.identity, 32)
            .map_err(|_| Error::DecryptionFailed)?;
        let key: [u8; 32] = pt
            .as_slice()
            .try_into()
            .map_err(|_| Error::DecryptionFailed)?;
        let key = zeroize::Zeroizing::new(key);
        if let Some(expected) = &self.0.key_commitment {
            let actual = primitives::key_commitment(
                &key,
                &Grant::commitment_context(&self.0.vault, &self.0.scope),
            );
            if !primitives::ct_eq(&actual, expected) {
                return Err(Error::DecryptionFailed);
            }
        }
        Ok(key)
    }

    /// Opens a collection grant addressed to `me`. A deposit grant carries
    /// no collection key and is refused ([`Error::AccessDenied`]).
    pub fn open_collection_key(&self, me: &SecretIdentity) -> Result<CollectionKey> {
        self.open_collection_key_as(&GrantKey::document(me)?)
    }

    /// [`VerifiedGrant::open_collection_key`] with the key of a member's
    /// generation (a device opening its person's grant).
    pub fn open_collection_key_as(&self, me: &GrantKey) -> Result<CollectionKey> {
        if self.0.permission == Permission::Deposit {
            return Err(Error::AccessDenied(
                "you may deposit records into this collection but not read it",
            ));
        }
        match self.0.scope {
            GrantScope::Collection { collection, epoch } => Ok(CollectionKey::from_secret(
                self.0.vault,
                collection,
                epoch,
                self.open_key(me)?,
            )),
            GrantScope::Record { .. } => Err(Error::InvalidInput("this is a record grant")),
        }
    }

    /// Opens a deposit grant addressed to `me`: the public key of the
    /// epoch's deposit key, which data keys of new records are sealed to.
    pub fn open_deposit_key(&self, me: &SecretIdentity) -> Result<DepositPublicKey> {
        self.open_deposit_key_as(&GrantKey::document(me)?)
    }

    /// [`VerifiedGrant::open_deposit_key`] with the key of a member's
    /// generation.
    pub fn open_deposit_key_as(&self, me: &GrantKey) -> Result<DepositPublicKey> {
        match (self.0.permission, self.0.scope) {
            (Permission::Deposit, GrantScope::Collection { collection, epoch }) => Ok(
                DepositPublicKey::from_parts(self.0.vault, collection, epoch, *self.open_key(me)?),
            ),
            _ => Err(Error::InvalidInput("this is not a deposit grant")),
        }
    }

    /// Opens a record grant addressed to `me`.
    pub(crate) fn open_data_key(&self, me: &GrantKey) -> Result<DataKey> {
        match self.0.scope {
            GrantScope::Record { .. } => Ok(DataKey(self.open_key(me)?)),
            GrantScope::Collection { .. } => Err(Error::InvalidInput("this is a collection grant")),
        }
    }
}

/// The key a grant is opened with: the member it must be addressed to (a
/// person's fingerprint) and the age identity of the generation it was
/// sealed to. Never printed.
pub struct GrantKey {
    member: Fingerprint,
    identity: age::x25519::Identity,
}

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantKey")
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

impl GrantKey {
    /// Generation 0 of `me`: its identity document's own key.
    pub fn document(me: &SecretIdentity) -> Result<Self> {
        Ok(Self {
            member: me.fingerprint(),
            identity: me.age_identity()?,
        })
    }

    /// A generation's key of `member`, opened from its device list.
    pub fn generation(member: Fingerprint, identity: age::x25519::Identity) -> Self {
        Self { member, identity }
    }
}
