//! WebAssembly bindings over vault-core for the patient web app.
//!
//! A small start: the bindings the web app needs (identities, vaults,
//! records, sync) arrive with the web-app issue. What is here works and is
//! tested natively.
#![forbid(unsafe_code)]

use wasm_bindgen::prelude::*;

/// The version of the bindings (the crate version).
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Verifies a public identity in its text form (`vault-identity:v1:…`) and
/// returns its fingerprint as six groups of five digits. Throws a JS error
/// whose message starts with a stable code (e.g. `bad_signature: …`).
#[wasm_bindgen(js_name = fingerprintOf)]
pub fn fingerprint_of(identity_text: &str) -> Result<String, JsError> {
    vault_core::PublicIdentity::from_text(identity_text)
        .map(|id| id.fingerprint().to_string())
        .map_err(|e| JsError::new(&format!("{}: {e}", e.code())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::{IdentityInfo, Role, SecretIdentity};

    #[test]
    fn fingerprint_of_verifies_identity_text() {
        let id = SecretIdentity::from_seed(
            &[1; 32],
            &IdentityInfo {
                display_name: "Pat".into(),
                role: Role::Patient,
                registration: None,
                created_at: 0,
            },
        )
        .unwrap();
        let text = id.public().to_text();
        assert_eq!(
            fingerprint_of(&text).unwrap_or_default(),
            id.fingerprint().to_string()
        );
        assert!(!version().is_empty());
    }
}
