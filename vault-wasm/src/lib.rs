//! WebAssembly bindings over vault-core and vault-client for the patient
//! web app (`web/`): identities, vaults, records, sharing, export and
//! checkpoints. No cryptography happens in JavaScript: the page hands bytes
//! and ids to this module and gets JSON, bytes or an error back.
//!
//! - Errors are JS `Error`s whose message is `"<code>: <message>"` with a
//!   stable code ([`failure::Failure`]); `web/src/vault.ts` turns them into
//!   typed `VaultError`s.
//! - Randomness comes from the browser's CSPRNG (`crypto.getRandomValues`,
//!   through getrandom's `js` feature); time from `Date.now()`.
//! - The only secret the page ever stores is the passphrase-sealed key
//!   file; [`Session::snapshot`] holds verified logs and pins, no secret
//!   and no record content.
#![forbid(unsafe_code)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod failure;
mod links;
pub mod pairing;
mod progress;
mod records;
mod session;
mod sharing;
mod snapshot;
mod unlocked;
mod view;
pub mod worker;

use secrecy::SecretString;
use vault_core::{keyfile, Fingerprint, IdentityInfo, PublicIdentity, Role, SecretIdentity};
use wasm_bindgen::prelude::*;

use failure::{Failure, Result};
pub use session::Session;

/// The version of the bindings (the crate version).
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Parses a 64-hex fingerprint from the page.
fn fingerprint(s: &str) -> Result<Fingerprint> {
    Fingerprint::from_hex(&s.trim().to_ascii_lowercase()).map_err(|_| {
        Failure::input("a fingerprint is 64 hexadecimal digits (as `vault whoami` prints it)")
    })
}

/// The content type of a file from its first bytes (at least 132 when the
/// file is that long) and its name: the same detection as the `vault`
/// command's (`vault_client::content::content_type`).
#[wasm_bindgen(js_name = contentTypeOf)]
pub fn content_type_of(head: &[u8], file_name: &str) -> String {
    vault_client::content::content_type(head, file_name).to_owned()
}

/// Verifies a public identity in its text form (`vault-identity:v1:…`) and
/// returns its fingerprint as six groups of five digits. Throws a JS error
/// whose message starts with a stable code (e.g. `bad_signature: …`).
#[wasm_bindgen(js_name = fingerprintOf)]
pub fn fingerprint_of(identity_text: &str) -> std::result::Result<String, JsValue> {
    PublicIdentity::from_text(identity_text.trim())
        .map(|id| id.fingerprint().to_string())
        .map_err(|e| Failure::from(e).into_js())
}

/// Verifies a public identity in its text form and describes it (JSON:
/// name, role, registration, fingerprint, fingerprintHex, identityText).
#[wasm_bindgen(js_name = describeIdentity)]
pub fn describe_identity(identity_text: &str) -> std::result::Result<String, JsValue> {
    PublicIdentity::from_text(identity_text.trim())
        .map(|id| view::identity(&id).to_string())
        .map_err(|e| Failure::from(e).into_js())
}

/// What a SMART Health Link says about itself, read without any request
/// (JSON: label, expiresAt, expired, passcode, longTerm, direct, origin).
/// Throws `invalid_link: …` for a malformed, truncated or altered link.
#[wasm_bindgen(js_name = describeLink)]
pub fn describe_link(link: &str) -> std::result::Result<String, JsValue> {
    links::describe(link, vault_client::system_now())
        .map(|v| v.to_string())
        .map_err(Failure::into_js)
}

/// Opens a SMART Health Link as its recipient, with no account: fetches
/// its manifest and files from the link's own origin, decrypts and checks
/// them here, and resolves to JSON (label, expiresAt, files with their
/// resources and health overview). `recipient` is who is asking, as the
/// sharer will see it; `passcode` is for links with flag `P`. Rejects
/// with `wrong_passcode: …` (attempts left in the message),
/// `link_not_found: …` or `invalid_link: …`.
#[wasm_bindgen(js_name = openLink)]
pub fn open_link(link: String, recipient: String, passcode: Option<String>) -> js_sys::Promise {
    let passcode = passcode
        .filter(|p| !p.is_empty())
        .map(zeroize::Zeroizing::new);
    wasm_bindgen_futures::future_to_promise(async move {
        links::open(&link, &recipient, passcode, vault_client::system_now())
            .await
            .map(|v| JsValue::from_str(&v.to_string()))
            .map_err(Failure::into_js)
    })
}

/// The QR code of a link as an SVG document (error-correction level M, as
/// the SMART Health Links specification recommends).
#[wasm_bindgen(js_name = linkQrSvg)]
pub fn link_qr_svg(link: &str) -> std::result::Result<String, JsValue> {
    links::qr_svg(link).map_err(Failure::into_js)
}

/// A new identity: the passphrase-sealed key file (the only thing to store)
/// and the public identity.
#[wasm_bindgen]
pub struct NewIdentity {
    key_file: Vec<u8>,
    identity: String,
}

#[wasm_bindgen]
impl NewIdentity {
    /// The key file: an age file sealed with the passphrase (scrypt).
    #[wasm_bindgen(js_name = keyFile)]
    pub fn key_file(&self) -> Vec<u8> {
        self.key_file.clone()
    }

    /// The public identity (JSON, as `describeIdentity`).
    pub fn identity(&self) -> String {
        self.identity.clone()
    }
}

fn new_identity(
    name: &str,
    role: &str,
    passphrase: &SecretString,
    work_factor: u8,
) -> Result<NewIdentity> {
    let role = match role {
        "patient" => Role::Patient,
        "clinician" => Role::Clinician,
        "device" => Role::Device,
        other => return Err(Failure::input(format!("unknown role {other:?}"))),
    };
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Failure::input(
            "a name is 1 to 64 characters, without control characters",
        ));
    }
    if secrecy::ExposeSecret::expose_secret(passphrase)
        .chars()
        .count()
        < 8
    {
        return Err(Failure::input(
            "the passphrase must be at least 8 characters",
        ));
    }
    let secret = SecretIdentity::generate(&IdentityInfo {
        display_name: name.to_owned(),
        role,
        registration: None,
        created_at: vault_client::system_now(),
    })?;
    let key_file = keyfile::seal(&secret, passphrase, work_factor)?;
    Ok(NewIdentity {
        key_file,
        identity: view::identity(secret.public()).to_string(),
    })
}

/// Creates an identity (`role`: `patient`, `clinician`, or `device`: a
/// device of a person whose key file is elsewhere, which acts for that
/// person once listed and never owns a vault) and seals it
/// under `passphrase` (at least 8 characters) with scrypt work factor
/// `work_factor` (15 to 20; the command line's default is 18).
#[wasm_bindgen(js_name = createIdentity)]
pub fn create_identity(
    name: &str,
    role: &str,
    passphrase: String,
    work_factor: u8,
) -> std::result::Result<NewIdentity, JsValue> {
    new_identity(name, role, &SecretString::from(passphrase), work_factor).map_err(Failure::into_js)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::store::{MemoryStore, Store};
    use vault_core::VaultState;

    fn patient() -> SecretIdentity {
        SecretIdentity::from_seed(
            &[1; 32],
            &IdentityInfo {
                display_name: "Pat".into(),
                role: Role::Patient,
                registration: None,
                created_at: 0,
            },
        )
        .unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn identities_are_created_sealed_and_described() {
        let pass = SecretString::from("correct horse".to_owned());
        let made =
            new_identity("Pat", "patient", &pass, 15).unwrap_or_else(|e| unreachable!("{e}"));
        let view: serde_json::Value = serde_json::from_str(&made.identity).unwrap_or_default();
        assert_eq!(view["name"], "Pat");
        assert_eq!(view["role"], "patient");
        let opened = keyfile::open(&made.key_file, &pass).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(opened.fingerprint().to_hex(), view["fingerprintHex"]);
        assert!(new_identity(
            "Pat",
            "patient",
            &SecretString::from("short".to_owned()),
            15
        )
        .is_err_and(|e| e.code == "invalid_input"));
        assert!(new_identity("Pat", "doctor", &pass, 15).is_err_and(|e| e.code == "invalid_input"));
        let device =
            new_identity("browser", "device", &pass, 15).unwrap_or_else(|e| unreachable!("{e}"));
        let view: serde_json::Value = serde_json::from_str(&device.identity).unwrap_or_default();
        assert_eq!(view["role"], "device");
        assert!(new_identity("", "patient", &pass, 15).is_err_and(|e| e.code == "invalid_input"));
    }

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let me = patient();
        let (mut state, genesis) =
            VaultState::create(&me, 100).unwrap_or_else(|e| unreachable!("{e}"));
        let (_, coll) = state
            .create_collection(&me, "labs", 101)
            .unwrap_or_else(|e| unreachable!("{e}"));
        state.apply(&coll).unwrap_or_else(|e| unreachable!("{e}"));
        let mut store = MemoryStore::new();
        store
            .append_entries(&state.vault(), &[genesis, coll])
            .unwrap_or_else(|e| unreachable!("{e}"));
        store
            .pin("owner", &me.fingerprint())
            .unwrap_or_else(|e| unreachable!("{e}"));
        let bytes = snapshot::save(&store).unwrap_or_default();
        let back = snapshot::restore(&bytes, &me.fingerprint(), 100)
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(back.head(&state.vault()).ok().flatten(), Some(state.head()));
        assert_eq!(back.pinned("owner").ok().flatten(), Some(me.fingerprint()));
        // One flipped byte inside a signed entry is refused, not loaded.
        let text = String::from_utf8(bytes).unwrap_or_default();
        let at = text.find("\"vaults\"").unwrap_or(0) + 120;
        let mut damaged = text.into_bytes();
        if let Some(b) = damaged.get_mut(at) {
            *b = if *b == b'0' { b'1' } else { b'0' };
        }
        assert!(snapshot::restore(&damaged, &me.fingerprint(), 100)
            .is_err_and(|e| e.code == "local_state"));
        assert!(snapshot::restore(b"{}", &me.fingerprint(), 100)
            .is_err_and(|e| e.code == "local_state"));
        assert!(snapshot::restore(b"not json", &me.fingerprint(), 100)
            .is_err_and(|e| e.code == "local_state"));
    }

    #[test]
    fn identity_text_is_verified_and_described() {
        let id = patient();
        let text = id.public().to_text();
        let view: serde_json::Value =
            serde_json::from_str(&view::identity(id.public()).to_string()).unwrap_or_default();
        assert_eq!(view["fingerprint"], id.fingerprint().to_string());
        assert_eq!(view["identityText"], text);
        assert!(fingerprint("zz").is_err_and(|e| e.code == "invalid_input"));
        assert_eq!(
            fingerprint(&id.fingerprint().to_hex().to_uppercase()).ok(),
            Some(id.fingerprint())
        );
        assert!(!version().is_empty());
    }
}
