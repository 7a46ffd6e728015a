//! What the page is shown, as JSON: identities, members and authors. Names
//! come from signed identity documents but are chosen by their holders, so
//! the page must render them as text (it does: `textContent`), never HTML.

use serde_json::{json, Value};
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
