//! vault-client: the sync protocol over HTTP (`docs/relay-api.md`).
#![forbid(unsafe_code)]
