//! Errors as the web app sees them: a stable code and a message that tells
//! the patient what to do, thrown as a JS `Error` whose message is
//! `"<code>: <message>"` (`web/src/vault.ts` splits it again).

use wasm_bindgen::JsValue;

/// A failed operation: a stable machine code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable code: vault-core's or the relay's (`wrong_passphrase`,
    /// `transport`, `quota_exceeded`, `fork`, …) or this crate's
    /// (`invalid_input`, `local_state`).
    pub code: String,
    /// What happened and what to do, for a person.
    pub message: String,
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Failure>;

impl Failure {
    /// A failure with a code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// Bad input from the page (a malformed id, an unknown collection).
    pub fn input(message: impl Into<String>) -> Self {
        Self::new("invalid_input", message)
    }

    /// The JS error thrown for it.
    pub fn into_js(self) -> JsValue {
        js_sys::Error::new(&format!("{}: {}", self.code, self.message)).into()
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<vault_core::Error> for Failure {
    fn from(e: vault_core::Error) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<vault_client::ClientError> for Failure {
    fn from(e: vault_client::ClientError) -> Self {
        let message = match &e {
            vault_client::ClientError::Transport(_) => {
                "the relay cannot be reached; check your connection and try again (nothing was changed)"
                    .to_owned()
            }
            other => other.to_string(),
        };
        Self::new(e.code(), message)
    }
}

impl From<vault_fhir::FhirError> for Failure {
    fn from(e: vault_fhir::FhirError) -> Self {
        Self::new("invalid_fhir", e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::new("io", e.to_string())
    }
}
