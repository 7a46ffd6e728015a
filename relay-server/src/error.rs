//! API errors: every failure is a status, a stable machine-readable code
//! and a human message (`docs/relay-api.md`, "Errors").
//!
//! This is also the one place where the domain layer's typed errors
//! ([`crate::domain`]) become HTTP answers: each `From` impl below gives a
//! refusal its status, code and extra fields; the message is the error's
//! own text, and failures of the relay itself are logged and answered
//! without detail.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::admission::CreationLimited;
use crate::domain::access::AccessError;
use crate::domain::append::AppendError;
use crate::domain::blobs::BlobError;
use crate::domain::device_lists::DeviceListError;
use crate::domain::identities::IdentityError;
use crate::domain::links::LinkError;
use crate::domain::pairings::PairingError;
use crate::domain::vaults::VaultError;
use crate::domain::Failure;
use crate::routes::HeadJson;

/// Seconds a client is asked to wait when the relay's storage cannot be
/// reached (`503 unavailable`).
pub const STORAGE_RETRY_AFTER: u64 = 2;

/// One API error. Messages never contain bodies, keys or signatures.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Map<String, Value>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// Adds a top-level field to the JSON body.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// Sets a `retry-after` header.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// 400 `malformed_request`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }
    /// 400 `bad_json`.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_json", message)
    }
    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404 with a specific code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// 413 `too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }
    /// 507 `insufficient_storage` when the relay's disk is full (nothing
    /// was stored; retry once space returns), 503 `unavailable` with
    /// `retry-after` when its database or object store cannot be reached
    /// (nothing was acknowledged), else 500 `internal`.
    pub fn storage(context: &str, err: &crate::storage::StorageError) -> Self {
        if err.unavailable {
            tracing::warn!(error = %err, "{context}: storage unavailable");
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the relay cannot reach its storage just now; nothing was acknowledged. Retry after the delay in retry-after",
            )
            .retry_after(STORAGE_RETRY_AFTER)
        } else if err.full {
            tracing::error!(error = %err, "{context}: the disk is full");
            Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                "the relay's storage is full; nothing was stored. Retry later, or tell the relay's operator",
            )
            .retry_after(60)
        } else {
            Self::internal(context, err)
        }
    }
    /// 500 `internal`: the details go to the log, not to the caller.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the relay failed to complete the request; nothing was acknowledged, retry later",
        )
    }
    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).retry_after(1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        body.insert(
            "error".into(),
            json!({ "code": self.code, "message": self.message }),
        );
        let mut resp = (self.status, axum::Json(Value::Object(body))).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// Results of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// 422 `invalid_entry` for entry `index` of a request, with vault-core's
/// code as `detail`.
fn invalid_entry(message: String, index: usize, source: &vault_core::Error) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_entry", message)
        .with("detail", json!(source.code()))
        .with("index", json!(index))
}

/// 422 `entry_time_out_of_range`, with the relay's clock.
fn entry_time(message: String, server_time: u64) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "entry_time_out_of_range",
        message,
    )
    .with("server_time", json!(server_time))
}

/// 413 `quota_exceeded`.
fn quota_exceeded(message: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded", message)
}

impl From<Failure> for ApiError {
    fn from(e: Failure) -> Self {
        match e {
            Failure::Storage { context, source } => Self::storage(context, &source),
            Failure::Internal { context, detail } => Self::internal(context, detail),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        let message = e.to_string();
        match e {
            AccessError::VaultNotFound => Self::not_found("vault_not_found", message),
            AccessError::NotMember | AccessError::ReadOnly => Self::forbidden(message),
            AccessError::Failure(f) => f.into(),
        }
    }
}

impl From<CreationLimited> for ApiError {
    fn from(e: CreationLimited) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "creation_limited",
            e.to_string(),
        )
        .retry_after(e.retry_after)
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        let message = e.to_string();
        match e {
            VaultError::InvalidEntry { index, source } => invalid_entry(message, index, &source),
            VaultError::NotOwner => Self::new(StatusCode::FORBIDDEN, "not_author", message),
            VaultError::EntryTimeOutOfRange { server_time, .. } => entry_time(message, server_time),
            VaultError::CreationLimited(c) => c.into(),
            VaultError::QuotaExceeded => quota_exceeded(message),
            VaultError::VaultExists => Self::new(StatusCode::CONFLICT, "vault_exists", message),
            VaultError::Access(a) => a.into(),
            VaultError::Failure(f) => f.into(),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        let message = e.to_string();
        match e {
            AppendError::Empty => Self::bad_json(message),
            AppendError::TooMany { .. } => Self::too_large(message),
            AppendError::InvalidEntry { index, source } => invalid_entry(message, index, &source),
            AppendError::NotAuthor { .. } => {
                Self::new(StatusCode::FORBIDDEN, "not_author", message)
            }
            AppendError::EntryTimeOutOfRange { server_time, .. } => {
                entry_time(message, server_time)
            }
            AppendError::RebuildCooldown { retry_after } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
                    .retry_after(retry_after)
            }
            AppendError::Access(a) => a.into(),
            AppendError::HeadMoved(head) => Self::new(StatusCode::CONFLICT, "head_moved", message)
                .with("head", json!(HeadJson::from(head))),
            AppendError::VaultFull { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "vault_full", message)
            }
            AppendError::QuotaExceeded => quota_exceeded(message),
            AppendError::BlobMissing { .. } => {
                Self::new(StatusCode::CONFLICT, "blob_missing", message)
            }
            AppendError::NotHome { home } => Self::new(StatusCode::CONFLICT, "not_home", message)
                .with("home", json!(home.as_str())),
            AppendError::Replayed => crate::auth::replayed(),
            AppendError::Failure(f) => f.into(),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        let message = e.to_string();
        match e {
            BlobError::Access(a) => a.into(),
            BlobError::BlobTooLarge { .. } | BlobError::ChunkTooLarge { .. } => {
                Self::too_large(message)
            }
            BlobError::QuotaExceeded => quota_exceeded(message),
            BlobError::OffsetMismatch { offset } => {
                Self::new(StatusCode::CONFLICT, "upload_offset_mismatch", message)
                    .with("offset", json!(offset))
            }
            BlobError::ChunkDigestMismatch => {
                Self::new(StatusCode::BAD_REQUEST, "body_digest_mismatch", message)
            }
            BlobError::HashMismatch | BlobError::BatchHashMismatch { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch", message)
            }
            BlobError::BodyCutOff(_) => Self::malformed(message),
            BlobError::UploadInProgress { .. } => {
                Self::new(StatusCode::CONFLICT, "upload_in_progress", message)
            }
            BlobError::NotFound => Self::not_found("blob_not_found", message),
            BlobError::NotReadable => Self::forbidden(message),
            BlobError::Failure(f) => f.into(),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        let message = e.to_string();
        match e {
            IdentityError::Invalid(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_identity",
                message,
            ),
            IdentityError::NotSelf => Self::forbidden(message),
            IdentityError::InviteRequired => {
                Self::new(StatusCode::FORBIDDEN, "invite_required", message)
            }
            IdentityError::CreationLimited(c) => c.into(),
            IdentityError::NotFound => Self::not_found("identity_not_found", message),
            IdentityError::Failure(f) => f.into(),
        }
    }
}

impl From<DeviceListError> for ApiError {
    fn from(e: DeviceListError) -> Self {
        let message = e.to_string();
        match e {
            DeviceListError::PersonNotFound => Self::not_found("identity_not_found", message),
            DeviceListError::NotTheirs => Self::forbidden(message),
            DeviceListError::Invalid(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_device_list",
                message,
            ),
            DeviceListError::Stale { stored } => {
                Self::new(StatusCode::CONFLICT, "stale_list", message).with("serial", json!(stored))
            }
            DeviceListError::TooMany => Self::too_large(message),
            DeviceListError::Failure(f) => f.into(),
        }
    }
}

impl From<PairingError> for ApiError {
    fn from(e: PairingError) -> Self {
        let message = e.to_string();
        let conflict = |code| Self::new(StatusCode::CONFLICT, code, message.clone());
        match e {
            PairingError::NotFound => Self::not_found("pairing_not_found", message),
            PairingError::Taken => conflict("pairing_taken"),
            PairingError::CodeInUse => conflict("pairing_code_in_use"),
            PairingError::NotJoined => conflict("pairing_not_joined"),
            PairingError::AlreadyRevealed => conflict("pairing_answered"),
            PairingError::NonceSent => conflict("pairing_nonce_sent"),
            PairingError::TooManyOfYours(_) => conflict("too_many_pairings"),
            PairingError::TooManyFromSource { retry_after, .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "pairings_limited", message)
                    .retry_after(retry_after)
            }
            PairingError::TooMany => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_pairings", message)
                    .retry_after(60)
            }
            PairingError::NotADevice | PairingError::OwnSlot => Self::forbidden(message),
            PairingError::PersonNotFound => Self::not_found("identity_not_found", message),
            PairingError::Failure(f) => f.into(),
        }
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        let message = e.to_string();
        match e {
            LinkError::NotFound => Self::not_found("link_not_found", message),
            LinkError::WrongPasscode { remaining } => {
                Self::new(StatusCode::UNAUTHORIZED, "wrong_passcode", message)
                    .with("remainingAttempts", json!(remaining))
            }
            LinkError::Invalid(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_link", message)
            }
            LinkError::QuotaExceeded => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded", message)
            }
            LinkError::TooMany(_) => Self::new(StatusCode::CONFLICT, "too_many_links", message),
            LinkError::NoSuchHandle => Self::not_found("link_not_found", message),
            LinkError::Failure(f) => f.into(),
        }
    }
}
