//! relay-server: the blind relay of vault.
//!
//! It stores public identities, vault logs and ciphertext blobs, and
//! nothing else: it never receives a secret key or a plaintext byte
//! (design brief §6). Every request is signed by its caller's Ed25519 key;
//! every appended entry is verified with vault-core against the relay's
//! own verified copy of the log, so membership and write rights come from
//! the owner-signed log, never from relay-side accounts. The HTTP contract
//! is `docs/relay-api.md`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod backup;
#[cfg(feature = "postgres")]
pub mod backup_pg;
pub mod config;
pub mod domain;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod state;
pub mod storage;

pub use config::Config;
pub use server::Relay;
