//! What the page is shown, as JSON: identities, members and authors. Names
//! come from signed identity documents but are chosen by their holders, so
//! the page must render them as text (it does: `textContent`), never HTML.

use serde_json::{json, Value};
use vault_client::member_devices::Propagation;
use vault_core::{CollectionId, Fingerprint, PublicIdentity, VaultState};

/// A verified public identity: name, role, registration, fingerprint (six
/// digit groups and hex) and its shareable text form.
pub fn identity(id: &PublicIdentity) -> Value {
    let fp = id.fingerprint();
    json!({
        "name": id.display_name(),
        "role": id.role().as_str(),
        "registration": id.registration(),
        "fingerprint": fp.to_string(),
        "fingerprintHex": fp.to_hex(),
        "identityText": id.to_text(),
    })
}

/// Where a change of the person's device list went beyond this vault
/// ([`Propagation`]): `notPublished` (why the relay's directory did not
/// take it, or `null`), `owned` (how many other vaults of the person's
/// took it), `carried` (into how many vaults shared with the person),
/// `notReached` (`[{vault, error}]`: do it again to finish),
/// `inboxNotRead` (why the vaults this browser does not follow were not
/// reached, or `null`), `strangersNotReached` (strangers' vaults not
/// reached) and `refused`
/// (`[{vault, collection, error}]`: another list of the person's is there).
pub fn propagation(p: &Propagation) -> Value {
    json!({
        "notPublished": p.not_published,
        "owned": p.owned.len(),
        "carried": p.carried.len(),
        "notReached": p.not_reached.iter().map(|(v, why)| json!({
            "vault": v.to_hex(),
            "error": why,
        })).collect::<Vec<_>>(),
        "inboxNotRead": p.inbox_not_read,
        "strangersNotReached": p.strangers_not_reached,
        "refused": p.refused.iter().map(|(v, c, why)| json!({
            "vault": v.to_hex(),
            "collection": c.to_hex(),
            "error": why,
        })).collect::<Vec<_>>(),
    })
}

/// A re-keying the page did on its own (the vault overview): JSON `{rotated,
/// dropped, notRotated: [{collection, error}], failed}` (`failed`: the
/// relay's refusal that stopped it, or `null`).
pub fn rekeying(done: &vault_client::devices::Rekeying, failed: Option<&str>) -> Value {
    json!({
        "rotated": done.rotated.len(),
        "dropped": done.dropped.len(),
        "notRotated": done.not_rotated.iter().map(|(c, why)| json!({
            "collection": c.to_hex(),
            "error": why,
        })).collect::<Vec<_>>(),
        "failed": failed,
    })
}

/// The author of the entry at `seq` of `collection`, with the identity the
/// vault's log verified for them if it holds one, and `onBehalfOf` the
/// owner's name when the author wrote it as the owner's agent
/// (`docs/format.md` §8.10; `null` otherwise), `onBehalfOfMe` when that
/// owner is the reader, and `memberDeviceOf` the member's name when the
/// author is a device of a member's (§8.12).
pub fn author(
    state: &VaultState,
    fp: &Fingerprint,
    me: &Fingerprint,
    collection: &CollectionId,
    seq: u64,
) -> Value {
    let on_behalf_of = state
        .acting_for_owner(fp, collection, seq)
        .map(|_| state.owner().display_name());
    let known = state.identity(fp);
    // A member's device wrote it, as the member (`docs/format.md` §8.12).
    let member_device_of = state
        .member_device(collection, fp)
        .and_then(|(person, _)| state.identity(&person))
        .map(PublicIdentity::display_name);
    json!({
        "fingerprint": fp.to_string(),
        "fingerprintHex": fp.to_hex(),
        "name": known.map(PublicIdentity::display_name),
        "role": known.map(|i| i.role().as_str()),
        "isOwner": *fp == state.owner().fingerprint(),
        "ownerDevice": state.listed_device(fp).is_some(),
        "memberDeviceOf": member_device_of,
        "ownerIsMe": state.is_owner(me),
        "isMe": fp == me,
        "onBehalfOf": on_behalf_of,
        "onBehalfOfMe": on_behalf_of.is_some() && state.is_owner(me),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::VaultId;

    /// The page is told what was reached and, by vault, what was not.
    #[test]
    fn a_propagation_is_shown_with_what_it_did_not_reach() {
        assert_eq!(
            propagation(&Propagation::default()),
            json!({"notPublished": null, "owned": 0, "carried": 0, "notReached": [], "inboxNotRead": null, "strangersNotReached": 0, "refused": []})
        );
        let (mine, shared, late) = (VaultId::random(), VaultId::random(), VaultId::random());
        let forked = CollectionId::random();
        let p = Propagation {
            not_published: Some("the relay is unavailable".into()),
            owned: vec![(mine, 2)],
            carried: vec![(shared, vec![CollectionId::random(), forked])],
            not_reached: vec![(late, "timed out".into())],
            inbox_not_read: Some("forbidden".into()),
            strangers_not_reached: 2,
            refused: vec![(shared, forked, "another version".into())],
        };
        assert_eq!(
            propagation(&p),
            json!({
                "notPublished": "the relay is unavailable",
                "owned": 1,
                "carried": 1,
                "notReached": [{"vault": late.to_hex(), "error": "timed out"}],
                "inboxNotRead": "forbidden",
                "strangersNotReached": 2,
                "refused": [{"vault": shared.to_hex(), "collection": forked.to_hex(), "error": "another version"}],
            })
        );
    }
}
