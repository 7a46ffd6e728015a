//! What the page is shown, as JSON: identities, members and authors. Names
//! come from signed identity documents but are chosen by their holders, so
//! the page must render them as text (it does: `textContent`), never HTML.

use serde_json::{json, Value};
use vault_core::{Fingerprint, PublicIdentity, VaultState};

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

/// Someone named in a vault (an author or a member), with the identity the
/// vault's log verified for them, if it holds one.
pub fn principal(state: &VaultState, fp: &Fingerprint, me: &Fingerprint) -> Value {
    let known = state.identity(fp);
    json!({
        "fingerprint": fp.to_string(),
        "fingerprintHex": fp.to_hex(),
        "name": known.map(PublicIdentity::display_name),
        "role": known.map(|i| i.role().as_str()),
        "isOwner": *fp == state.owner().fingerprint(),
        "isMe": fp == me,
    })
}
