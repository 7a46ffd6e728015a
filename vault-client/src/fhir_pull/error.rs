//! What can go wrong pulling from a FHIR server. Every message says what
//! to do next; none carries a token, a client key or clinical content
//! (server text is cleaned and shortened before it is kept).

use std::time::Duration;

/// An error pulling a patient's record from a FHIR server.
///
/// Guarantees: no variant holds the bearer token, the SMART client key or
/// an access token; text that came from the server is stripped of control
/// characters and cut to 200 characters ([`server_text`]). Nothing is filed
/// from a resource that produced one of these errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FhirPullError {
    /// The command was given something unusable (a base URL that is not
    /// http(s), a patient id that is not a FHIR id, an unreadable key).
    #[error("{0}")]
    Config(String),

    /// The FHIR server could not be reached, or the connection broke
    /// (after the bounded retries).
    #[error("could not talk to the FHIR server at {host}: {reason}; check the address and the network, then run the same pull again (what was already filed is kept and skipped)")]
    Transport {
        /// The server's host.
        host: String,
        /// What failed (reqwest's description, which never includes headers).
        reason: String,
    },

    /// The server refused the request or failed, after the bounded retries
    /// for 408, 429, 500, 502, 503 and 504.
    #[error("the FHIR server answered {status} to {what}{}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default(), advice(*status))]
    Status {
        /// The HTTP status.
        status: u16,
        /// Which request (no query string, no token).
        what: String,
        /// The server's diagnostics (an OperationOutcome's text), cleaned.
        detail: Option<String>,
    },

    /// The server's answer does not follow FHIR R4 or the Bulk Data
    /// specification (malformed JSON, a Bundle that is not a Bundle, a line
    /// that is not a resource, a manifest without output).
    #[error("the FHIR server sent something malformed ({what}): {reason}; nothing from it was filed. The server is faulty or is not a FHIR R4 server")]
    Malformed {
        /// Where (a page, a file and line).
        what: String,
        /// What is wrong.
        reason: String,
    },

    /// One answer, page or resource is larger than the limit.
    #[error("the FHIR server sent {what} larger than {limit} bytes; nothing from it was filed. Ask the server's operator, or pull with a smaller scope")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// A link (next page, status, file, token endpoint) points to another
    /// origin than the base URL: following it could send the token to a
    /// stranger.
    #[error("the FHIR server sent a {what} link to another host ({found}); refusing to follow it (the token would go there too). Check the base URL")]
    ForeignLink {
        /// Which link.
        what: &'static str,
        /// Its origin (scheme, host and port only).
        found: String,
    },

    /// The `next` links loop back to a page already read, or never end.
    #[error(
        "the FHIR server's `next` links {0}; stopping. Nothing beyond the last good page was filed"
    )]
    Paging(String),

    /// A download ended early: fewer lines than the manifest announced, or
    /// the connection closed mid-file.
    #[error("the download of {what} was cut short ({reason}); run the same pull again to resume: what was filed is kept and skipped")]
    Truncated {
        /// Which file.
        what: String,
        /// How it was detected.
        reason: String,
    },

    /// A bulk export was still running when the wait ran out.
    #[error("the FHIR server's bulk export was still running after {}s; try again later, or raise --bulk-wait", waited.as_secs())]
    ExportTimeout {
        /// How long the client waited.
        waited: Duration,
    },

    /// The server refused the credentials (401, 403, or a SMART token
    /// request refused).
    #[error("the FHIR server refused the credentials ({0}); check the token (or the SMART client id and key) and that it allows reading this patient")]
    Unauthorized(String),
}

impl FhirPullError {
    /// A stable machine-readable code: `fhir_config`, `fhir_transport`,
    /// `fhir_status`, `fhir_malformed`, `fhir_too_large`,
    /// `fhir_foreign_link`, `fhir_paging`, `fhir_truncated`,
    /// `fhir_export_timeout` or `fhir_unauthorized`.
    pub fn code(&self) -> &'static str {
        match self {
            FhirPullError::Config(_) => "fhir_config",
            FhirPullError::Transport { .. } => "fhir_transport",
            FhirPullError::Status { .. } => "fhir_status",
            FhirPullError::Malformed { .. } => "fhir_malformed",
            FhirPullError::TooLarge { .. } => "fhir_too_large",
            FhirPullError::ForeignLink { .. } => "fhir_foreign_link",
            FhirPullError::Paging(_) => "fhir_paging",
            FhirPullError::Truncated { .. } => "fhir_truncated",
            FhirPullError::ExportTimeout { .. } => "fhir_export_timeout",
            FhirPullError::Unauthorized(_) => "fhir_unauthorized",
        }
    }

    /// Whether running the same pull later may succeed (the server was
    /// unreachable, busy, failing, or cut a download short).
    pub fn is_transient(&self) -> bool {
        match self {
            FhirPullError::Transport { .. }
            | FhirPullError::Truncated { .. }
            | FhirPullError::ExportTimeout { .. } => true,
            FhirPullError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl Into<String>) -> Self {
        FhirPullError::Malformed {
            what: what.into(),
            reason: server_text(&reason.into()),
        }
    }
}

fn advice(status: u16) -> &'static str {
    match status {
        404 => "; check the base URL and the patient id",
        429 | 500..=599 => {
            "; the server is busy or failing: try again later (what was filed is kept)"
        }
        _ => "",
    }
}

/// Text from the server made safe to show: control and invisible
/// characters removed ([`vault_fhir::clean`]), at most 200 characters.
pub fn server_text(s: &str) -> String {
    let cleaned = vault_fhir::clean(s);
    let mut out: String = cleaned.chars().take(200).collect();
    if cleaned.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_cleaned_and_bounded() {
        let long = "x".repeat(500);
        assert_eq!(server_text(&long).chars().count(), 201);
        assert!(!server_text("a\u{1b}[31mb\u{202e}c").contains('\u{1b}'));
        assert!(!server_text("a\u{202e}c").contains('\u{202e}'));
    }

    #[test]
    fn only_retryable_failures_are_transient() {
        let s = |status| FhirPullError::Status {
            status,
            what: "x".into(),
            detail: None,
        };
        assert!(s(503).is_transient());
        assert!(s(429).is_transient());
        assert!(!s(404).is_transient());
        assert!(!FhirPullError::Paging("loop".into()).is_transient());
    }
}
