//! Designated agents (`docs/format.md` §8.10): Jane Doe acts for the
//! patient in "labs". An agent shares only within its powers and its
//! collections, the log (the relay's check and every client's) refuses
//! anything beyond, and after the agency ends the agent is refused while
//! what it did stays.

use super::fixture::*;
use crate::agency::{AgentNamed, Powers};
use crate::error::Error;
use crate::grant::Grant;
use crate::identity::{Role, SecretIdentity};
use crate::keys::CollectionKey;
use crate::log::{EntryBody, LogEntry};
use crate::{CollectionId, DelegationId, Keyring, Permission, VaultState};

const SHARE: Powers = Powers::new(false, true, false);

fn jane() -> SecretIdentity {
    identity(5, "Jane Doe", Role::Patient)
}

/// A vault with a lab result, and Jane named in "labs" with `powers`
/// until `expires_at`.
fn with_agent(powers: Powers, expires_at: Option<u64>) -> (Fixture, SecretIdentity, DelegationId) {
    let mut f = Fixture::new();
    f.put_as(0, f.labs, None, "HbA1c", b"48 mmol/mol");
    let jane = jane();
    let mut keyring = Keyring::new(&f.patient, NOW);
    let (d, e) = f
        .state
        .name_agent(
            &mut keyring,
            &f.labs,
            jane.public(),
            powers,
            expires_at,
            None,
        )
        .unwrap();
    f.append(e);
    (f, jane, d)
}

/// Jane shares `collection` with `who` through her client.
fn jane_shares(
    f: &Fixture,
    jane: &SecretIdentity,
    collection: CollectionId,
    who: usize,
    permission: Permission,
    expires_at: Option<u64>,
) -> crate::Result<LogEntry> {
    let mut keyring = Keyring::new(jane, NOW);
    f.state.share_collection(
        &mut keyring,
        &collection,
        f.who(who).public(),
        permission,
        expires_at,
    )
}

/// A record-put entry by `agent` (through its client) at `now`.
fn agents_record(f: &Fixture, agent: &SecretIdentity, title: &str, now: u64) -> LogEntry {
    let mut keyring = Keyring::new(agent, now);
    let (_, e) = f
        .state
        .put_record(
            &mut keyring,
            &f.labs,
            None,
            &info(title),
            crate::RecordBody::new(&b"x"[..], 1),
            &mut Vec::new(),
        )
        .unwrap();
    e
}

/// A grant-added entry Jane signs herself, bypassing her client's checks.
fn forged_share(
    f: &Fixture,
    jane: &SecretIdentity,
    key: &CollectionKey,
    who: usize,
    permission: Permission,
    expires_at: Option<u64>,
) -> LogEntry {
    let member = f.who(who).public().clone();
    let grant = agent_signed(jane, key, &member, permission, expires_at, NOW).unwrap();
    f.forge(jane, EntryBody::GrantAdded { member, grant })
}

/// A collection grant signed by an agent (version 3), whatever its
/// agency allows.
fn agent_signed(
    agent: &SecretIdentity,
    key: &CollectionKey,
    member: &crate::PublicIdentity,
    permission: Permission,
    expires_at: Option<u64>,
    now: u64,
) -> crate::Result<Grant> {
    Grant::for_collection_signed(agent, key, member, permission, expires_at, now, true)
}

fn is_unauthorized(e: &Error) -> bool {
    matches!(e, Error::Unauthorized { .. })
}

#[test]
fn an_agent_who_may_share_shares_a_collection_with_a_clinician_who_reads_it() {
    let (mut f, jane, d) = with_agent(SHARE, None);
    let record = f.state.records(Some(&f.labs))[0].id;
    // Jane reads what she acts on.
    let mut keyring = Keyring::new(&jane, NOW);
    let verified = f.state.record(&record).unwrap();
    let mut out = Vec::new();
    keyring
        .open(
            &f.state,
            &verified,
            f.blobs[verified.metadata().ciphertext_hash()].as_slice(),
            &mut out,
        )
        .unwrap();
    assert_eq!(out, b"48 mmol/mol");

    let e = jane_shares(&f, &jane, f.labs, 1, Permission::Read, None).unwrap();
    let EntryBody::GrantAdded { grant, .. } = e.body() else {
        panic!("not a grant")
    };
    assert_eq!(
        grant.signer(),
        Some(jane.fingerprint()),
        "a version-3 grant"
    );
    assert_eq!(grant.to_bytes()[0], 3);
    f.append(e);
    let (_, body) = f.open_as(1, &record).unwrap();
    assert_eq!(body, b"48 mmol/mol");

    // The relay's access check: Jane is a reader who may append (she
    // shares), Alice a plain reader.
    let access = f.state.access(&jane.fingerprint(), NOW);
    let labs = access.collections[&f.labs];
    assert_eq!(labs.permission, Permission::Read);
    assert_eq!(labs.agent, Some(SHARE));
    assert!(access.may_write());
    let alice = f.state.access(&f.alice.fingerprint(), NOW);
    assert_eq!(alice.collections[&f.labs].agent, None);
    assert!(!alice.may_write());

    let agencies = f.state.agencies();
    assert_eq!(agencies.len(), 1);
    assert_eq!(agencies[0].delegation, d);
    assert_eq!(agencies[0].named_by, f.patient.fingerprint());
    assert_eq!(agencies[0].collections, vec![f.labs]);
    // The whole log verifies from genesis, as a new device would.
    let again = f.reverify().unwrap();
    assert_eq!(again.agencies(), agencies);
    // Alice, joining, sees the labs entries whole, Jane's naming included.
    let naming = &f.log[4];
    assert!(matches!(naming.body(), EntryBody::AgentNamed(_)));
    assert!(f.state.shows_in_full(naming, &f.alice.fingerprint()));
    assert!(!f.state.shows_in_full(naming, &f.bob.fingerprint()));
}

#[test]
fn an_agent_without_share_rights_is_refused_by_its_client_and_by_the_log() {
    let (mut f, jane, d) = with_agent(Powers::new(true, false, false), None);
    assert!(matches!(
        jane_shares(&f, &jane, f.labs, 1, Permission::Read, None),
        Err(Error::AccessDenied(_))
    ));
    let key = f.key_of(0, f.labs);
    let forged = forged_share(&f, &jane, &key, 1, Permission::Read, None);
    assert!(is_unauthorized(&f.refuse(&forged)));
    // She may add records (her grant is read-add) but not delete them.
    let e = agents_record(&f, &jane, "her note", NOW);
    let seq = e.seq();
    f.append(e);
    // Listings show her record as written on the patient's behalf.
    assert_eq!(
        f.state.acting_for_owner(&jane.fingerprint(), &f.labs, seq),
        Some(d)
    );
    assert_eq!(
        f.state.acting_for_owner(&jane.fingerprint(), &f.meds, seq),
        None
    );
    let access = f.state.access(&jane.fingerprint(), NOW);
    assert_eq!(access.collections[&f.labs].permission, Permission::Add);
    let record = f.state.records(Some(&f.labs))[0].id;
    let delete = f.forge(&jane, EntryBody::RecordDeleted { record, version: 2 });
    assert!(is_unauthorized(&f.refuse(&delete)));
    // A read-only agent may not append at all: the relay refuses it
    // before looking at the entry.
    let (f, jane, _) = with_agent(Powers::read_only(), None);
    assert!(!f.state.access(&jane.fingerprint(), NOW).may_write());
}

#[test]
fn an_agents_grant_outside_its_scope_is_refused() {
    let expiry = NOW + 86_400;
    let (mut f, jane, _) = with_agent(Powers::new(true, true, false), Some(expiry));
    let labs = f.key_of(0, f.labs);
    let meds = f.key_of(0, f.meds);
    // Her client refuses each, and the log refuses what she would forge.
    for (collection, key, who, permission, expires_at, why, reason) in [
        (
            f.meds,
            &meds,
            1,
            Permission::Read,
            Some(expiry),
            "another collection",
            "nor an agent of the owner in this collection",
        ),
        (
            f.labs,
            &labs,
            1,
            Permission::ReadWrite,
            Some(expiry),
            "read-write",
            "may not grant more than it holds",
        ),
        (
            f.labs,
            &labs,
            1,
            Permission::Deposit,
            Some(expiry),
            "deposit",
            "may not grant more than it holds",
        ),
        (
            f.labs,
            &labs,
            1,
            Permission::Read,
            None,
            "longer than hers",
            "may not grant more than it holds",
        ),
        (
            f.labs,
            &labs,
            1,
            Permission::Read,
            Some(expiry + 1),
            "past hers",
            "may not grant more than it holds",
        ),
        (
            f.labs,
            &labs,
            0,
            Permission::Read,
            Some(expiry),
            "to the owner",
            "not the owner, itself, or already a member",
        ),
    ] {
        // Her client gives a share without expiry hers; the log refuses
        // one without.
        if expires_at.is_some() {
            assert!(
                jane_shares(&f, &jane, collection, who, permission, expires_at).is_err(),
                "her client shared {why}"
            );
        }
        let forged = forged_share(&f, &jane, key, who, permission, expires_at);
        let err = f.refuse(&forged);
        assert!(err.to_string().contains(reason), "{why}: {err}");
    }
    // A key of her own making, under the labs epoch.
    let own = CollectionKey::generate(f.state.vault(), f.labs, 0);
    let forged = forged_share(&f, &jane, &own, 1, Permission::Read, Some(expiry));
    assert!(matches!(f.refuse(&forged), Error::InvalidEntry { .. }));
    // An owner-signed grant carried in her entry.
    let member = f.alice.public().clone();
    let grant = Grant::for_collection(
        &f.patient,
        &labs,
        &member,
        Permission::Read,
        Some(expiry),
        NOW,
    )
    .unwrap();
    let forged = f.forge(&jane, EntryBody::GrantAdded { member, grant });
    assert!(matches!(f.refuse(&forged), Error::InvalidEntry { .. }));
    // Naming another agent without the power to.
    let mut keyring = Keyring::new(&jane, NOW);
    assert!(f
        .state
        .name_agent(
            &mut keyring,
            &f.labs,
            f.bob.public(),
            Powers::read_only(),
            Some(expiry),
            None
        )
        .is_err());
    // Owner-only kinds.
    let mut keyring = Keyring::new(&jane, NOW);
    assert!(f
        .state
        .revoke(&mut keyring, &f.labs, &[f.patient.fingerprint()])
        .is_err());
    let created = f.forge(
        &jane,
        EntryBody::CollectionCreated {
            collection: CollectionId::from_bytes([9; 16]),
            sealed_name: own.seal_name("mine").unwrap(),
            owner_grant: agent_signed(&jane, &own, jane.public(), Permission::ReadWrite, None, NOW)
                .unwrap(),
        },
    );
    assert!(is_unauthorized(&f.refuse(&created)));
    // Within her scope, all of it works: a read-add grant, by default as
    // long as hers.
    let e = jane_shares(&f, &jane, f.labs, 1, Permission::Add, None).unwrap();
    f.append(e);
    assert_eq!(
        f.state.access(&f.alice.fingerprint(), NOW).collections[&f.labs].expires_at,
        Some(expiry)
    );
    // And she revokes the member she can: a rotation signed by her, which
    // keeps the owner's and her own access as they were.
    let mut keyring = Keyring::new(&jane, NOW);
    let e = f
        .state
        .revoke(&mut keyring, &f.labs, &[f.alice.fingerprint()])
        .unwrap();
    f.append(e);
    let record = f.state.records(Some(&f.labs))[0].id;
    assert!(f.open_as(1, &record).is_err(), "Alice was revoked");
    f.open_as(0, &record).unwrap();
    assert_eq!(
        f.state.access(&jane.fingerprint(), NOW).collections[&f.labs].epoch,
        1
    );
    f.reverify().unwrap();
}

#[test]
fn after_an_agency_ends_the_agent_is_refused_and_what_it_granted_stays() {
    let (mut f, jane, d) = with_agent(Powers::new(true, true, false), None);
    let e = jane_shares(&f, &jane, f.labs, 1, Permission::Read, None).unwrap();
    f.append(e);
    let naming = f
        .log
        .iter()
        .find_map(|e| match e.body() {
            EntryBody::AgentNamed(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap();
    // The owner ends the agency, and rotates the key in the same append.
    let e = f.state.end_agency(&f.patient, &d, &f.labs, NOW).unwrap();
    f.append(e);
    let mut keyring = Keyring::new(&f.patient, NOW);
    let e = f.state.revoke(&mut keyring, &f.labs, &[]).unwrap();
    f.append(e);
    let after = f.put_as(0, f.labs, None, "after", b"written after the agency ended");

    // Jane is refused: no access, no grant, no record, no further naming.
    let access = f.state.access(&jane.fingerprint(), NOW);
    assert!(!access.is_member() && !access.may_write());
    assert!(jane_shares(&f, &jane, f.labs, 2, Permission::Read, None).is_err());
    let old_key = f.key_of(0, f.labs);
    let forged = forged_share(&f, &jane, &old_key, 2, Permission::Read, None);
    assert!(is_unauthorized(&f.refuse(&forged)));
    let mut keyring = Keyring::new(&jane, NOW);
    assert!(f
        .state
        .put_record(
            &mut keyring,
            &f.labs,
            None,
            &info("late"),
            crate::RecordBody::new(&b"x"[..], 1),
            &mut Vec::new(),
        )
        .is_err());
    let mut keyring = Keyring::new(&jane, NOW);
    let verified = f.state.record(&after.record()).unwrap();
    assert!(keyring
        .open(
            &f.state,
            &verified,
            f.blobs[after.ciphertext_hash()].as_slice(),
            &mut Vec::new()
        )
        .is_err());
    // Her agency named again under its id, with a grant of the current
    // key, is refused: an ended agency is never named there again.
    let patient = identity(1, "Pat Patient", Role::Patient);
    let mut keyring = Keyring::new(&patient, NOW);
    let current = f.key_of(0, f.labs);
    let replay = f.forge(
        &f.patient,
        EntryBody::AgentNamed(AgentNamed {
            grant: Grant::for_collection(
                &f.patient,
                &current,
                jane.public(),
                naming.powers.permission(),
                None,
                NOW,
            )
            .unwrap(),
            ..naming.clone()
        }),
    );
    let err = f.refuse(&replay);
    assert!(
        err.to_string().contains("the delegation id belongs to another agency, or to this one in this collection already"),
        "{err}"
    );
    let e = f
        .state
        .name_agent(
            &mut keyring,
            &f.labs,
            jane.public(),
            naming.powers,
            None,
            Some(d),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidEntry { .. }), "{e}");
    // Ending it again is refused too.
    let again = f.forge(
        &f.patient,
        EntryBody::AgencyEnded {
            delegation: d,
            collection: f.labs,
        },
    );
    assert!(matches!(f.refuse(&again), Error::InvalidEntry { .. }));

    // What she did stays: Alice, whom she granted, reads what was written
    // after the agency ended.
    let (_, body) = f.open_as(1, &after.record()).unwrap();
    assert_eq!(body, b"written after the agency ended");
    // The relay shows Jane the labs entries up to the end, and none after.
    let end = &f.log[6];
    assert!(matches!(end.body(), EntryBody::AgencyEnded { .. }));
    assert!(f.state.shows_in_full(end, &jane.fingerprint()));
    let last = f.log.last().unwrap();
    assert!(!f.state.shows_in_full(last, &jane.fingerprint()));
    let ended = &f.state.agencies()[0];
    assert!(ended.collections.is_empty());
    assert_eq!(ended.ended, vec![f.labs]);
    f.reverify().unwrap();
}

#[test]
fn agents_name_agents_within_their_own_powers_and_ending_one_ends_those_below() {
    let powers = Powers::new(false, true, true);
    let (mut f, jane, d) = with_agent(powers, Some(NOW + 1000));
    let mut keyring = Keyring::new(&jane, NOW);
    // Not more than she holds: add, or a longer expiry.
    for (p, exp) in [
        (Powers::new(true, false, false), Some(NOW + 1000)),
        (Powers::read_only(), None),
    ] {
        assert!(f
            .state
            .name_agent(&mut keyring, &f.labs, f.bob.public(), p, exp, None)
            .is_err());
    }
    let (bobs, e) = f
        .state
        .name_agent(
            &mut keyring,
            &f.labs,
            f.bob.public(),
            SHARE,
            Some(NOW + 500),
            None,
        )
        .unwrap();
    let EntryBody::AgentNamed(named) = e.body() else {
        panic!("not a naming")
    };
    assert_eq!(named.parent, Some(d));
    f.append(e);
    // Bob, her agent, shares within his powers.
    let mut keyring = Keyring::new(&f.bob, NOW);
    let e = f
        .state
        .share_collection(
            &mut keyring,
            &f.labs,
            f.alice.public(),
            Permission::Read,
            Some(NOW + 500),
        )
        .unwrap();
    f.append(e);
    // Bob may not name Jane under himself, nor end her agency.
    let up = f.forge(
        &f.bob,
        EntryBody::AgencyEnded {
            delegation: d,
            collection: f.labs,
        },
    );
    assert!(is_unauthorized(&f.refuse(&up)));
    // Jane ends her own agency (she resigns): Bob's ends with it.
    let e = f.state.end_agency(&jane, &d, &f.labs, NOW).unwrap();
    f.append(e);
    assert!(f
        .state
        .agency_of(&f.bob.fingerprint(), &f.labs, NOW)
        .is_none());
    assert!(!f.state.access(&f.bob.fingerprint(), NOW).is_member());
    assert!(f
        .state
        .agencies()
        .iter()
        .any(|a| a.delegation == bobs && a.ended == vec![f.labs]));
    // Alice's grant, which Bob gave, stays.
    assert!(f.state.access(&f.alice.fingerprint(), NOW).is_member());
    // The owner's rotation may not revoke an agent in force: it ends the
    // agency instead. (In "medications", which holds no record, so the
    // rotation breaks no other rule.)
    let mut f = Fixture::new();
    let jane = self::jane();
    let patient = identity(1, "Pat Patient", Role::Patient);
    let mut keyring = Keyring::new(&patient, NOW);
    let (_, e) = f
        .state
        .name_agent(&mut keyring, &f.meds, jane.public(), SHARE, None, None)
        .unwrap();
    f.append(e);
    assert!(f
        .state
        .revoke(&mut keyring, &f.meds, &[jane.fingerprint()])
        .is_err());
    let key = f.key_of(0, f.meds);
    let rotation = crate::log::Rotation {
        collection: f.meds,
        epoch: 1,
        revoked: vec![jane.fingerprint()],
        sealed_name: key.seal_name("medications").unwrap(),
        grants: vec![Grant::for_collection(
            &f.patient,
            &CollectionKey::generate(f.state.vault(), f.meds, 1),
            f.patient.public(),
            Permission::ReadWrite,
            None,
            NOW,
        )
        .unwrap()],
        rewraps: Vec::new(),
        dropped: Vec::new(),
    };
    let mut honest = rotation.clone();
    honest.revoked.clear();
    let forged = f.forge(&f.patient, EntryBody::Rotation(rotation));
    let err = f.refuse(&forged);
    assert!(
        err.to_string().contains("revokes an agent in force"),
        "{err}"
    );
    // Without her in `revoked` (she keeps no grant in it either) the same
    // rotation is refused only as not granting every remaining member.
    let err = f.refuse(&f.forge(&f.patient, EntryBody::Rotation(honest)));
    assert!(
        err.to_string().contains("exactly the remaining members"),
        "{err}"
    );
}

#[test]
fn an_expired_agency_gives_nothing() {
    let (mut f, jane, _) = with_agent(SHARE, Some(NOW + 10));
    let key = f.key_of(0, f.labs);
    let member = f.alice.public().clone();
    let grant = agent_signed(&jane, &key, &member, Permission::Read, Some(NOW + 10), NOW).unwrap();
    let late = f.forge_at(&jane, NOW + 10, EntryBody::GrantAdded { member, grant });
    assert!(is_unauthorized(&f.refuse(&late)));
    assert!(f
        .state
        .agency_of(&jane.fingerprint(), &f.labs, NOW + 10)
        .is_none());
}

#[test]
fn agent_entries_round_trip_and_refuse_what_is_not_canonical() {
    let (f, jane, _) = with_agent(SHARE, Some(NOW + 10));
    let naming = f.log.last().unwrap();
    let bytes = naming.to_bytes().to_vec();
    let parsed = LogEntry::from_bytes(&bytes).unwrap();
    assert_eq!(parsed.reencode(), bytes);
    let EntryBody::AgentNamed(AgentNamed { grant, .. }) = parsed.body() else {
        panic!("not a naming")
    };
    assert_eq!(grant.signer(), None, "the owner's grant is version 2");
    // A version-3 grant names the member's key generation (a person with
    // no device list has only generation 0; the log refuses any other:
    // tests/devices_in_logs.rs).
    let key = f.key_of(0, f.labs);
    let g = agent_signed(&jane, &key, f.alice.public(), Permission::Read, None, NOW).unwrap();
    let mut b = g.to_bytes();
    assert_eq!(Grant::from_bytes(&b).unwrap(), g);
    let generation_at = 1 + 16 + 1 + 16 + 4 + 32 + 1 + 1 + 8 + 32 + 32;
    assert_eq!(g.generation(), 0);
    b[generation_at + 3] = 1;
    assert_eq!(Grant::from_bytes(&b).unwrap().generation(), 1);
    // Powers with read missing, or an unknown bit, are refused.
    assert!(Powers::from_byte(0x02).is_none());
    assert!(Powers::from_byte(0x11).is_none());
    assert_eq!(
        Powers::parse("add, share").unwrap().to_string(),
        "read,add,share"
    );
    assert!(Powers::parse("delete").is_err());
    // A state verified again sees the same.
    let again = VaultState::verify_log(&f.log).unwrap();
    assert_eq!(again.agencies(), f.state.agencies());
}

/// The agents vector (`tests/vectors/agents.json`, `docs/format.md`
/// §8.10): a log in which the patient names Jane an agent who may share
/// "labs", Jane shares it with Dr Alice (a version-3 grant) and revokes
/// Dr Bob (her rotation), and the patient ends the agency and rotates;
/// with entries a reader must refuse after a given prefix of it.
/// Regenerate (only for a deliberate format change) with
/// `VAULT_REGENERATE_VECTORS=1 cargo test -p vault-core --lib agents_vector`.
#[test]
fn agents_vector() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/agents.json");
    if std::env::var_os("VAULT_REGENERATE_VECTORS").is_some() {
        let mut f = Fixture::new();
        let record = f.put_as(0, f.labs, None, "HbA1c", b"48 mmol/mol");
        f.share(2, f.labs, Permission::Read, None);
        let jane = jane();
        let delegation = DelegationId::from_bytes([7; 16]);
        let mut keyring = Keyring::new(&f.patient, NOW);
        let (_, e) = f
            .state
            .name_agent(
                &mut keyring,
                &f.labs,
                jane.public(),
                SHARE,
                None,
                Some(delegation),
            )
            .unwrap();
        let naming = e.clone();
        f.append(e);
        let key = f.key_of(0, f.labs);
        let mut negative = Vec::new();
        let mut refused = |f: &mut Fixture, what: &str, entry: LogEntry, code: &str| {
            assert_eq!(f.refuse(&entry).code(), code, "{what}");
            negative.push(serde_json::json!({
                "description": what,
                "after_seq": f.state.head().seq,
                "entry": hex::encode(entry.to_bytes()),
                "error": code,
            }));
        };
        let rw = forged_share(&f, &jane, &key, 1, Permission::ReadWrite, None);
        refused(
            &mut f,
            "an agent grants read-write",
            rw,
            "unauthorized_author",
        );
        let to_owner = forged_share(&f, &jane, &key, 0, Permission::Read, None);
        refused(
            &mut f,
            "an agent grants the owner",
            to_owner,
            "invalid_entry",
        );
        let own = CollectionKey::generate(f.state.vault(), f.labs, 0);
        let own_key = forged_share(&f, &jane, &own, 1, Permission::Read, None);
        refused(
            &mut f,
            "an agent grants a key of its own making",
            own_key,
            "invalid_entry",
        );
        let e = jane_shares(&f, &jane, f.labs, 1, Permission::Read, None).unwrap();
        f.append(e);
        let mut keyring = Keyring::new(&jane, NOW);
        let e = f
            .state
            .revoke(&mut keyring, &f.labs, &[f.bob.fingerprint()])
            .unwrap();
        f.append(e);
        let e = f
            .state
            .end_agency(&f.patient, &delegation, &f.labs, NOW)
            .unwrap();
        f.append(e);
        let mut keyring = Keyring::new(&f.patient, NOW);
        let e = f.state.revoke(&mut keyring, &f.labs, &[]).unwrap();
        f.append(e);
        let EntryBody::AgentNamed(named) = naming.body() else {
            panic!("not a naming")
        };
        // Named again under its id, with a grant of the current key.
        let current = f.key_of(0, f.labs);
        let replay = f.forge(
            &f.patient,
            EntryBody::AgentNamed(AgentNamed {
                grant: Grant::for_collection(
                    &f.patient,
                    &current,
                    jane.public(),
                    named.powers.permission(),
                    None,
                    NOW,
                )
                .unwrap(),
                ..named.clone()
            }),
        );
        refused(
            &mut f,
            "an ended agency named again",
            replay,
            "invalid_entry",
        );
        let late = forged_share(&f, &jane, &f.key_of(0, f.labs), 3, Permission::Read, None);
        refused(
            &mut f,
            "a share by an agent whose agency ended",
            late,
            "unauthorized_author",
        );
        let v = serde_json::json!({
            "description": "docs/format.md §8.10: a vault log (patient seed [1;32], Dr Alice [2;32], Dr Bob [3;32], Jane Doe [5;32] the agent, as in vault-core's test fixture). Seq 3 puts the record, seq 4 shares labs with Dr Bob; seq 5 names Jane (delegation 0707..07, powers 0x05: read and share) in labs; seq 6 is her version-3 grant to Dr Alice; seq 7 her rotation revoking Dr Bob; seq 8 the patient ends the agency; seq 9 the patient's rotation. Alice opens the record with the plaintext given; Jane and Bob hold nothing at the end. Each negative entry must be refused after the log's prefix up to after_seq, with the error code given.",
            "log": f.log.iter().map(|e| hex::encode(e.to_bytes())).collect::<Vec<_>>(),
            "record": record.record().to_hex(),
            "ciphertext": hex::encode(&f.blobs[record.ciphertext_hash()]),
            "plaintext": "48 mmol/mol",
            "negative": negative,
        });
        save_vector(&path, &v);
    }
    let v = load_vector(&path);
    let log = vector_log(&v);
    let state = VaultState::verify_log(&log).unwrap();
    let agencies = state.agencies();
    assert_eq!(agencies.len(), 1);
    assert_eq!(agencies[0].delegation, DelegationId::from_bytes([7; 16]));
    assert_eq!(agencies[0].powers, SHARE);
    assert!(agencies[0].collections.is_empty());
    let EntryBody::GrantAdded { grant, .. } = log[6].body() else {
        panic!("seq 6 is not a grant")
    };
    assert_eq!(grant.signer(), Some(jane().fingerprint()));
    assert_eq!(log[7].author(), jane().fingerprint());
    assert!(matches!(log[7].body(), EntryBody::Rotation(_)));
    let alice = identity(2, "Dr Alice", Role::Clinician);
    let bob = identity(3, "Dr Bob", Role::Clinician);
    assert!(!state.access(&jane().fingerprint(), NOW).is_member());
    assert!(!state.access(&bob.fingerprint(), NOW).is_member());
    let record = crate::RecordId::from_hex(v["record"].as_str().unwrap()).unwrap();
    let verified = state.record(&record).unwrap();
    let mut out = Vec::new();
    Keyring::new(&alice, NOW)
        .open(
            &state,
            &verified,
            hex::decode(v["ciphertext"].as_str().unwrap())
                .unwrap()
                .as_slice(),
            &mut out,
        )
        .unwrap();
    assert_eq!(out, v["plaintext"].as_str().unwrap().as_bytes());
    check_negative_cases(&v, &log, 5);
}

#[test]
fn the_export_manifest_names_what_an_agent_wrote_on_the_owners_behalf() {
    let (mut f, jane, d) = with_agent(Powers::new(true, false, false), None);
    let mut keyring = Keyring::new(&jane, NOW);
    let mut ct = Vec::new();
    let (m, e) = f
        .state
        .put_record(
            &mut keyring,
            &f.labs,
            None,
            &info("her note"),
            crate::RecordBody::new(&b"called the GP"[..], 13),
            &mut ct,
        )
        .unwrap();
    f.blobs.insert(*m.ciphertext_hash(), ct);
    f.append(e);
    let mut sink = super::flow::MemSink(Default::default());
    let mut keyring = Keyring::new(&f.patient, NOW);
    let blobs = f.blobs.clone();
    crate::export::vault(
        &f.state,
        &mut keyring,
        f.patient.public(),
        |meta| {
            Ok(Box::new(std::io::Cursor::new(
                blobs[meta.ciphertext_hash()].clone(),
            )))
        },
        &mut sink,
    )
    .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&super::flow::age_decrypt(
        &sink.0["manifest.json.age"],
        &f.patient,
    ))
    .unwrap();
    let records = manifest["records"].as_array().unwrap();
    let hers = records
        .iter()
        .find(|r| r["record"] == m.record().to_hex())
        .unwrap();
    assert_eq!(hers["author"], jane.fingerprint().to_hex());
    assert_eq!(hers["on_behalf_of"], f.patient.fingerprint().to_hex());
    assert_eq!(hers["delegation"], d.to_hex());
    let owners = records
        .iter()
        .find(|r| r["record"] != m.record().to_hex())
        .unwrap();
    assert!(owners["on_behalf_of"].is_null());
}

#[test]
fn an_owner_locked_out_by_an_agents_rotation_ends_it_and_rotates_from_earlier_keys() {
    let (mut f, jane, d) = with_agent(SHARE, None);
    let before = f.state.records(Some(&f.labs))[0].id;
    f.share(1, f.labs, Permission::Add, None);
    // Jane's rotation revokes nobody, and seals the owner's new grant to
    // herself: every check the log can make passes.
    let mut keyring = Keyring::new(&jane, NOW);
    let honest = f.state.revoke(&mut keyring, &f.labs, &[]).unwrap();
    let EntryBody::Rotation(mut rotation) = honest.body().clone() else {
        panic!("not a rotation")
    };
    let new_key = {
        let mut trial = f.state.clone();
        trial.apply(&honest).unwrap();
        let mut kr = Keyring::new(&jane, NOW);
        copy_key(kr.collection_key(&trial, &f.labs, 1).unwrap())
    };
    let owner = f.patient.fingerprint();
    for g in rotation.grants.iter_mut().filter(|g| g.member() == owner) {
        *g = Grant::misaddressed_for_test(&jane, &new_key, f.patient.public(), jane.public(), NOW)
            .unwrap();
    }
    let e = f.forge(&jane, EntryBody::Rotation(rotation));
    f.append(e);
    // Alice adds a record under the new key, which the owner cannot open.
    let during = f.put_as(1, f.labs, None, "during", b"sealed under the withheld key");
    assert_eq!(
        f.state.grant_signer(&f.labs, &owner),
        Some(jane.fingerprint())
    );
    // The owner's key of the new epoch does not open; what was written
    // before still opens, from the wrap it was written with; what was
    // sealed under the withheld key does not.
    let mut keyring = Keyring::new(&f.patient, NOW);
    assert!(matches!(
        keyring.collection_key(&f.state, &f.labs, 1),
        Err(Error::DecryptionFailed)
    ));
    let (_, body) = f.open_as(0, &before).unwrap();
    assert_eq!(body, b"48 mmol/mol");
    assert!(matches!(
        f.open_as(0, &during.record()),
        Err(Error::DecryptionFailed)
    ));

    // The owner ends the agency and rotates from the keys it holds: the
    // record from before opens again, the one sealed under the withheld
    // key is dropped (nobody the owner trusts could vouch for it).
    let e = f.state.end_agency(&f.patient, &d, &f.labs, NOW).unwrap();
    f.append(e);
    let mut keyring = Keyring::new(&f.patient, NOW);
    let e = f.state.revoke(&mut keyring, &f.labs, &[]).unwrap();
    let EntryBody::Rotation(r) = e.body() else {
        panic!("not a rotation")
    };
    assert_eq!(r.dropped, vec![during.record()]);
    f.append(e);
    let (_, body) = f.open_as(0, &before).unwrap();
    assert_eq!(body, b"48 mmol/mol");
    assert_eq!(f.state.grant_signer(&f.labs, &owner), Some(owner));
    assert_eq!(
        f.state
            .collection_name(&mut Keyring::new(&f.patient, NOW), &f.labs)
            .unwrap(),
        "labs"
    );
    // Alice, granted again by the owner's rotation, reads the earlier record.
    f.open_as(1, &before).unwrap();
    f.reverify().unwrap();
}

/// Jane's honest rotation of labs (revoking nobody), and the key of its
/// new epoch, for tests that then corrupt it as a malicious agent would.
fn janes_rotation(f: &Fixture, jane: &SecretIdentity) -> (crate::log::Rotation, CollectionKey) {
    let mut keyring = Keyring::new(jane, NOW);
    let honest = f.state.revoke(&mut keyring, &f.labs, &[]).unwrap();
    let EntryBody::Rotation(rotation) = honest.body().clone() else {
        panic!("not a rotation")
    };
    let mut trial = f.state.clone();
    trial.apply(&honest).unwrap();
    let mut kr = Keyring::new(jane, NOW);
    let key = copy_key(kr.collection_key(&trial, &f.labs, rotation.epoch).unwrap());
    (rotation, key)
}

#[test]
fn an_agents_rotation_deletes_nothing_and_bad_rewraps_or_names_cost_the_owner_nothing() {
    let (mut f, jane, d) = with_agent(SHARE, None);
    let record = f.state.records(Some(&f.labs))[0].id;
    // A kind-8 rotation dropping the record: an agent deletes nothing.
    let (mut drop_all, _) = janes_rotation(&f, &jane);
    drop_all.rewraps.clear();
    drop_all.dropped = vec![record];
    let err = f.refuse(&f.forge(&jane, EntryBody::Rotation(drop_all)));
    assert!(err.to_string().contains("may not drop records"), "{err}");

    // A rotation whose re-wrap of the record is garbage and whose sealed
    // name is garbage, with the owner's grant correct: the log accepts it.
    let (mut bad, key) = janes_rotation(&f, &jane);
    bad.rewraps[0].wrapped = key.wrap(
        &crate::keys::DataKey(zeroize::Zeroizing::new([7; 32])),
        &record,
        1,
    );
    bad.sealed_name = vec![0; 60];
    f.append(f.forge(&jane, EntryBody::Rotation(bad)));
    // The owner still opens the record (from the wrap it was written with),
    // and its next rotation keeps it, with the name from the earlier epoch.
    let (_, body) = f.open_as(0, &record).unwrap();
    assert_eq!(body, b"48 mmol/mol");
    let e = f.state.end_agency(&f.patient, &d, &f.labs, NOW).unwrap();
    f.append(e);
    let mut keyring = Keyring::new(&f.patient, NOW);
    let e = f.state.revoke(&mut keyring, &f.labs, &[]).unwrap();
    let EntryBody::Rotation(r) = e.body() else {
        panic!("not a rotation")
    };
    assert!(r.dropped.is_empty(), "a good record was dropped");
    f.append(e);
    f.open_as(0, &record).unwrap();
    assert_eq!(
        f.state
            .collection_name(&mut Keyring::new(&f.patient, NOW), &f.labs)
            .unwrap(),
        "labs"
    );
}

#[test]
fn an_agent_rotates_a_collection_with_a_depositor() {
    let (mut f, jane, _) = with_agent(SHARE, None);
    f.share(2, f.labs, Permission::Deposit, None);
    f.share(1, f.labs, Permission::Read, None);
    let mut keyring = Keyring::new(&jane, NOW);
    let e = f
        .state
        .revoke(&mut keyring, &f.labs, &[f.alice.fingerprint()])
        .unwrap();
    f.append(e);
    assert!(!f.state.access(&f.alice.fingerprint(), NOW).is_member());
    let bob = f.state.access(&f.bob.fingerprint(), NOW);
    assert_eq!(bob.collections[&f.labs].permission, Permission::Deposit);
    assert_eq!(bob.collections[&f.labs].epoch, 1);
}

#[test]
fn agents_never_change_an_existing_members_access_nor_does_the_owner_an_agents() {
    let powers = Powers::new(false, true, true);
    let (mut f, jane, d) = with_agent(powers, None);
    f.share(1, f.labs, Permission::ReadWrite, None);
    // Jane may not name Alice, a read-write member, as a (read-only) agent.
    let mut keyring = Keyring::new(&jane, NOW);
    let err = f
        .state
        .name_agent(
            &mut keyring,
            &f.labs,
            f.alice.public(),
            Powers::read_only(),
            None,
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("not yet a member"), "{err}");
    // The owner may not change Jane's grant while her agency is in force.
    let mut keyring = Keyring::new(&f.patient, NOW);
    let share = f.state.share_collection(
        &mut keyring,
        &f.labs,
        jane.public(),
        Permission::ReadWrite,
        None,
    );
    let err = match share {
        Ok(e) => f.refuse(&e),
        Err(e) => e,
    };
    assert!(err.to_string().contains("end the agency instead"), "{err}");
    assert_eq!(
        f.state.access(&jane.fingerprint(), NOW).collections[&f.labs].agent,
        Some(powers)
    );
    let _ = d;
    // After an agency expired, a plain grant to the same person ends its
    // span: what they write afterwards is their own, not the owner's.
    let (mut f, jane, _) = with_agent(Powers::new(true, false, false), Some(NOW + 10));
    let later = NOW + 20;
    let mut keyring = Keyring::new(&f.patient, later);
    let e = f
        .state
        .share_collection(&mut keyring, &f.labs, jane.public(), Permission::Add, None)
        .unwrap();
    f.append(e);
    let e = agents_record(&f, &jane, "mine", later);
    let seq = e.seq();
    f.append(e);
    assert_eq!(
        f.state.acting_for_owner(&jane.fingerprint(), &f.labs, seq),
        None
    );
}

#[test]
fn chains_of_agents_are_bounded_and_never_loop() {
    let powers = Powers::new(false, true, true);
    let (mut f, jane, d) = with_agent(powers, None);
    // Jane names Bob, Bob names Mallory: a chain of 3.
    let mut keyring = Keyring::new(&jane, NOW);
    let (bobs, e) = f
        .state
        .name_agent(&mut keyring, &f.labs, f.bob.public(), powers, None, None)
        .unwrap();
    f.append(e);
    let mut keyring = Keyring::new(&f.bob, NOW);
    let (_, e) = f
        .state
        .name_agent(
            &mut keyring,
            &f.labs,
            f.mallory.public(),
            powers,
            None,
            None,
        )
        .unwrap();
    f.append(e);
    // Mallory may not name a fourth.
    let mut keyring = Keyring::new(&f.mallory, NOW);
    let err = f
        .state
        .name_agent(
            &mut keyring,
            &f.labs,
            f.alice.public(),
            Powers::read_only(),
            None,
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("at most three deep"), "{err}");
    // Bob may not name Jane (above him) under himself, nor end her agency.
    let up = f.forge(
        &f.bob,
        EntryBody::AgencyEnded {
            delegation: d,
            collection: f.labs,
        },
    );
    assert!(is_unauthorized(&f.refuse(&up)));
    let key = f.key_of(0, f.labs);
    let loop_back = f.forge(
        &f.bob,
        EntryBody::AgentNamed(AgentNamed {
            delegation: DelegationId::from_bytes([9; 16]),
            parent: Some(bobs),
            powers: Powers::read_only(),
            expires_at: None,
            agent: jane.public().clone(),
            grant: agent_signed(&f.bob, &key, jane.public(), Permission::Read, None, NOW).unwrap(),
        }),
    );
    let err = f.refuse(&loop_back);
    assert!(
        err.to_string()
            .contains("already an agent in this collection")
            || err
                .to_string()
                .contains("cannot be named under its own agency"),
        "{err}"
    );
    // Naming agents implies sharing.
    assert!(Powers::from_byte(0x09).is_none());
    assert!(Powers::new(false, false, true).shares());
    assert_eq!(
        Powers::parse("name-agents").unwrap().to_string(),
        "read,share,name-agents"
    );
}

#[test]
fn owner_only_entries_by_an_agent_are_refused_by_the_log() {
    let (mut f, jane, _) = with_agent(Powers::new(true, true, true), None);
    let record = f.state.records(Some(&f.labs))[0].id;
    f.put_as(0, f.labs, Some(record), "HbA1c", b"50 mmol/mol");
    let share = {
        let mut keyring = Keyring::new(&f.patient, NOW);
        f.state
            .share_record(&mut keyring, &record, f.alice.public(), None)
            .unwrap()
    };
    f.append(share);
    let origin = crate::request::RelayOrigin::parse("https://relay.example").unwrap();
    for (body, why) in [
        (EntryBody::RecordPurged { record, through: 1 }, "a purge"),
        (
            EntryBody::RecordGrantRevoked {
                record,
                member: f.alice.fingerprint(),
            },
            "a record grant withdrawn",
        ),
        (
            EntryBody::RelaysNamed(crate::log::Relays::new(origin.clone(), Vec::new()).unwrap()),
            "relays named",
        ),
        (
            EntryBody::RecordDeleted { record, version: 3 },
            "a deletion",
        ),
    ] {
        let err = f.refuse(&f.forge(&jane, body));
        assert!(is_unauthorized(&err), "{why}: {err}");
    }
}

/// An agent's own devices (decision 70's member lists, for an agent):
/// Jane, named in labs with add and share, lists a tablet and a phone
/// there; after the owner re-keys, each device reads labs and acts for
/// Jane within her agency (it adds, and it shares with Dr Bob, who reads;
/// it cannot share what Jane may not); Jane's phone removes the tablet,
/// which the log then refuses and, once the owner re-keys, whose key
/// generation opens nothing sealed afterwards; when the agency ends, the
/// phone is refused too, and what the devices did stays.
#[test]
fn an_agents_devices_act_for_the_agent_within_its_agency_until_removed() {
    let (mut f, jane, d) = with_agent(Powers::new(true, true, false), None);
    let lab = f.state.records(Some(&f.labs))[0].id;
    let tablet = identity(40, "tablet", Role::Device);
    let phone = identity(41, "phone", Role::Device);
    let (v1, _) = crate::devices::DeviceList::first(
        &jane,
        &[tablet.public().clone(), phone.public().clone()],
        NOW,
    )
    .unwrap();
    let (tablet_keys, phone_keys) = (v1.open(&tablet).unwrap(), v1.open(&phone).unwrap());
    // The owner carries Jane's list into labs and re-keys: Jane's agency
    // grant goes to her generation 1.
    let e = f
        .state
        .list_member_devices(
            &f.patient,
            &f.labs,
            jane.public(),
            std::slice::from_ref(&v1),
            NOW,
        )
        .unwrap();
    f.append(e);
    assert_eq!(f.state.collections_to_rekey(), vec![f.labs]);
    f.rekey(f.labs);
    assert!(f.state.collections_to_rekey().is_empty());
    let jane_grant = |f: &Fixture| {
        let jane = jane.fingerprint();
        f.log
            .iter()
            .rev()
            .find_map(|e| match e.body() {
                EntryBody::Rotation(r) if r.collection == f.labs => {
                    r.grants.iter().find(|g| g.member() == jane).cloned()
                }
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(jane_grant(&f).generation(), 1);
    let open = |f: &Fixture, who: &SecretIdentity, record: &crate::RecordId| {
        let verified = f.state.record(record)?;
        let mut out = Vec::new();
        Keyring::new(who, NOW).open(
            &f.state,
            &verified,
            f.blobs[verified.metadata().ciphertext_hash()].as_slice(),
            &mut out,
        )?;
        Ok::<_, Error>(out)
    };

    // Each device reads labs, and acts for Jane with her powers there.
    for device in [&tablet, &phone] {
        assert_eq!(
            f.state.person_in(&device.fingerprint(), Some(&f.labs)),
            jane.fingerprint()
        );
        let access = f.state.access(&device.fingerprint(), NOW);
        assert_eq!(
            access.collections[&f.labs].agent,
            Some(Powers::new(true, true, false))
        );
        assert_eq!(open(&f, device, &lab).unwrap(), b"48 mmol/mol");
    }
    let added = agents_record(&f, &tablet, "from Jane's tablet", NOW);
    f.append(added);
    let shared = jane_shares(&f, &tablet, f.labs, 2, Permission::Read, None).unwrap();
    let EntryBody::GrantAdded { grant, .. } = shared.body() else {
        panic!("not a grant")
    };
    assert_eq!(grant.signer(), Some(tablet.fingerprint()));
    f.append(shared);
    let (_, body) = f.open_as(2, &lab).unwrap();
    assert_eq!(body, b"48 mmol/mol");
    // Beyond Jane's agency: medications is not hers to share, by the
    // client or (forged past it) by the log.
    assert!(jane_shares(&f, &tablet, f.meds, 2, Permission::Read, None).is_err());
    let meds_key = f.key_of(0, f.meds);
    let forged = forged_share(&f, &tablet, &meds_key, 1, Permission::Read, None);
    assert!(is_unauthorized(&f.refuse(&forged)));
    // Nor more than Jane holds: a read-write grant.
    assert!(jane_shares(&f, &tablet, f.labs, 1, Permission::ReadWrite, None).is_err());

    // Written by the tablet before its removal, appended after: refused.
    let EntryBody::RecordPut { metadata: late } =
        agents_record(&f, &tablet, "late", NOW).body().clone()
    else {
        panic!("not a record")
    };
    // Jane's phone removes the tablet (generation 2) and carries the list
    // into labs: the log refuses the tablet from then on.
    let (v2, _) = v1
        .next(&phone, &phone_keys, &[], &[tablet.fingerprint()], NOW)
        .unwrap();
    let e = f
        .state
        .list_member_devices(
            &phone,
            &f.labs,
            jane.public(),
            std::slice::from_ref(&v2),
            NOW,
        )
        .unwrap();
    f.append(e);
    assert!(f
        .state
        .access(&tablet.fingerprint(), NOW)
        .collections
        .is_empty());
    let err = f.refuse(&f.forge(&tablet, EntryBody::RecordPut { metadata: late }));
    assert!(is_unauthorized(&err), "{err:?}");
    let forged = forged_share(&f, &tablet, &f.key_of(0, f.labs), 1, Permission::Read, None);
    assert!(is_unauthorized(&f.refuse(&forged)));
    // The owner re-keys: Jane's grant goes to generation 2, which the
    // tablet's keys do not open.
    assert_eq!(f.state.collections_to_rekey(), vec![f.labs]);
    f.rekey(f.labs);
    let grant = jane_grant(&f);
    assert_eq!(grant.generation(), 2);
    let verified = grant.verify(f.patient.public()).unwrap();
    let tablet_gen1 = tablet_keys.age_identity(v1.enc_public()).unwrap();
    assert!(matches!(
        verified.open_collection_key_as(&crate::grant::GrantKey::generation(
            jane.fingerprint(),
            tablet_gen1
        )),
        Err(Error::DecryptionFailed)
    ));
    let after = f.put_as(0, f.labs, None, "Sodium", b"139 mmol/L");
    assert_eq!(open(&f, &phone, &after.record()).unwrap(), b"139 mmol/L");
    assert!(open(&f, &tablet, &after.record()).is_err());

    // The agency ends: the phone is refused as Jane is; Bob's grant, made
    // by the tablet, stays.
    let e = f.state.end_agency(&f.patient, &d, &f.labs, NOW).unwrap();
    f.append(e);
    assert!(f
        .state
        .access(&phone.fingerprint(), NOW)
        .collections
        .is_empty());
    assert!(jane_shares(&f, &phone, f.labs, 1, Permission::Read, None).is_err());
    let (_, body) = f.open_as(2, &after.record()).unwrap();
    assert_eq!(body, b"139 mmol/L");
    f.reverify().unwrap();
}
