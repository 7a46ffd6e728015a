//! vault-client: the sync protocol over HTTP (`docs/relay-api.md`).
//!
//! - [`RelayClient`]: signed requests to one relay (identities, vault logs
//!   with compare-and-swap appends, chunked resumable blob uploads,
//!   resumable hash-checked downloads, the inbox), with retries
//!   ([`RetryPolicy`]) and clock-skew correction. Works on native targets
//!   (reqwest over hyper and rustls, tokio timers) and on
//!   `wasm32-unknown-unknown` (the browser's `fetch`).
//! - [`fhir_pull`] (native targets): a patient's record pulled from a FHIR
//!   R4 server (`$everything` or Bulk Data), every byte from it untrusted,
//!   and filed into a vault as new records or new versions.
//! - [`links`]: SMART Health Links, the sharer's side and the viewer's
//!   (decision 49).
//! - [`sync`]: a local [`vault_core::store::Store`] kept in step with a
//!   relay: every entry and blob the relay delivers is verified by
//!   vault-core before it is persisted or used.
//!
//! The relay is untrusted: every answer is parsed strictly with capped
//! sizes, and nothing it says is believed until vault-core verified it.
//!
//! ```no_run
//! # async fn demo(me: std::sync::Arc<vault_core::SecretIdentity>) -> vault_client::Result<()> {
//! use vault_client::{sync, RelayClient};
//! use vault_core::store::MemoryStore;
//!
//! let client = RelayClient::new("https://relay.example", me.clone())?;
//! client.publish_identity().await?;
//! let (_, genesis) = vault_core::VaultState::create(&me, client.now())?;
//! let mut store = MemoryStore::new();
//! let state = sync::create_vault(&mut store, &client, &genesis).await?;
//! let state = sync::push_with_retry(&mut store, &client, &state.vault(), |state| {
//!     let (_, entry) = state.create_collection(&me, "Lab results", client.now())?;
//!     Ok(vec![entry])
//! })
//! .await?;
//! # let _ = state;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod agents;
mod blob;
mod client;
pub mod content;
pub mod devices;
mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod fhir_pull;
#[doc(hidden)]
pub mod fuzzing;
mod head;
pub mod inbox;
pub mod links;
pub mod member_devices;
pub mod mirrors;
pub mod pairing;
mod platform;
pub mod reading;
pub mod records;
mod retry;
pub mod sharing;
pub mod sync;
#[cfg(test)]
mod test_support;
mod wire;

pub use blob::{
    batch_reads, DownloadSink, Seekable, UploadSource, Wanted, Written, MAX_BATCH_BLOBS,
    MAX_BATCH_BYTES, MAX_BATCH_READS, MAX_BATCH_READ_BYTES,
};
pub use client::{
    DetachedRequest, InboxListing, InboxView, RelayClient, DEFAULT_CHUNK_SIZE, MAX_APPEND_ENTRIES,
    MAX_CHUNK_SIZE, MAX_INBOX_PAGES, MAX_LOG_PAGE,
};
pub use error::{ClientError, Result};
pub use retry::RetryPolicy;

/// Seconds since the Unix epoch by this device's clock (the browser's on
/// wasm32; 0 if the clock is before 1970). Relay requests use
/// [`RelayClient::now`], which corrects for the relay's clock.
pub fn system_now() -> u64 {
    platform::unix_now()
}
pub use wire::{AcceptedOwners, Head, InboxCollection, InboxVault, UploadStatus};
