//! Entry points for the fuzz targets in `fuzz/` (not a stable API; hidden
//! from the documentation). Each function runs the parsing the
//! client applies to one kind of relay answer, on untrusted bytes, and
//! returns what the client would see.

use vault_core::{LogEntry, VaultId};

use crate::error::{ErrorBody, Result};
use crate::wire::{self, Head, InboxVault, UploadStatus};

/// A relay error body, as [`crate::ClientError::Relay`] for `status`.
pub fn error_body(body: &[u8], status: u16) -> crate::ClientError {
    ErrorBody::parse(body).into_error(status)
}

/// The answer of `GET …/head` and of an append: `{"head": …}`.
pub fn head_answer(body: &[u8]) -> Result<Head> {
    let answer: wire::HeadAnswer = wire::parse_json(body, "head answer")?;
    answer.head.parse()
}

/// The answer of `POST /v1/vaults`: the vault id and the head.
pub fn vault_answer(body: &[u8]) -> Result<(VaultId, Head)> {
    let answer: wire::VaultAnswer = wire::parse_json(body, "vault creation answer")?;
    let vault = VaultId::from_hex(&answer.vault)
        .map_err(|_| crate::ClientError::Protocol("vault id".into()))?;
    Ok((vault, answer.head.parse()?))
}

/// The answer of `GET …/log`: the head and the parsed entries.
pub fn log_answer(body: &[u8]) -> Result<(Head, Vec<LogEntry>)> {
    wire::parse_json::<wire::LogAnswer>(body, "log answer")?.parse()
}

/// The answer of `GET /v1/inbox`.
pub fn inbox_answer(body: &[u8]) -> Result<Vec<InboxVault>> {
    let answer: wire::InboxAnswer = wire::parse_json(body, "inbox answer")?;
    answer
        .vaults
        .into_iter()
        .map(wire::RawInboxVault::parse)
        .collect()
}

/// The answer of a blob upload or upload-status request, checked against
/// an upload of `total` bytes.
pub fn upload_answer(body: &[u8], total: u64) -> Result<UploadStatus> {
    let answer: wire::UploadAnswer = wire::parse_json(body, "upload answer")?;
    crate::blob::chunk_outcome(answer.stored, answer.offset, total)?;
    Ok(answer.into())
}

/// A blob download's `content-range` (status 206) checked against `have`
/// bytes already written of an `expected_len`-byte blob (the 206 path).
pub fn content_range(value: &str, have: u64, expected_len: u64) -> Result<()> {
    crate::blob::resume_plan(
        reqwest::StatusCode::PARTIAL_CONTENT,
        Some(value),
        have,
        expected_len,
    )
    .map(|_| ())
}
