//! The browser's local store between visits: the verified log of every vault
//! and the pinned fingerprints, as bytes the page keeps in IndexedDB. With
//! it, a returning patient's device refuses a relay that rolls a vault back
//! or forks it, exactly as the command line's SQLite store does.
//!
//! A snapshot holds no secret and no record content (logs carry only
//! signatures, wrapped keys and sealed metadata: what the relay stores
//! anyway). It is still untrusted on the way back in: every log is verified
//! again from genesis before it is used.

use serde_json::{json, Map, Value};
use vault_core::store::{MemoryStore, Store};
use vault_core::{Fingerprint, LogEntry, VaultId, VaultState};

use crate::failure::{Failure, Result};

const FORMAT: &str = "vault-web-snapshot/v1";

/// The store's logs and pins as JSON bytes (ciphertext blobs are not kept:
/// they are fetched again when needed).
pub fn save(store: &MemoryStore) -> Result<Vec<u8>> {
    let mut vaults = Map::new();
    for v in store.vaults()? {
        let entries: Vec<Value> = store
            .entries(&v, 0)?
            .iter()
            .map(|e| Value::String(hex::encode(e.to_bytes())))
            .collect();
        vaults.insert(v.to_hex(), Value::Array(entries));
    }
    let pins: Map<String, Value> = store
        .pins()?
        .into_iter()
        .map(|(name, fp)| (name, Value::String(fp.to_hex())))
        .collect();
    serde_json::to_vec(&json!({ "format": FORMAT, "vaults": vaults, "pins": pins }))
        .map_err(|e| Failure::new("local_state", e.to_string()))
}

/// A store rebuilt from [`save`]'s bytes, each vault verified from genesis
/// as `viewer` sees it at `now` (entries a relay served redacted included,
/// `docs/format.md` §8.8).
pub fn restore(bytes: &[u8], viewer: &Fingerprint, now: u64) -> Result<MemoryStore> {
    let damaged = |what: &str| {
        Failure::new(
            "local_state",
            format!("the copy of your vaults saved in this browser is damaged ({what}); remove this browser's saved copy and unlock again to fetch everything from the relay"),
        )
    };
    let root: Value = serde_json::from_slice(bytes).map_err(|_| damaged("not JSON"))?;
    if root.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(damaged("unknown format"));
    }
    let mut store = MemoryStore::new();
    let vaults = root
        .get("vaults")
        .and_then(Value::as_object)
        .ok_or_else(|| damaged("no vaults"))?;
    for (id, entries) in vaults {
        let vault = VaultId::from_hex(id).map_err(|_| damaged("a vault id"))?;
        let entries = entries
            .as_array()
            .ok_or_else(|| damaged("a log"))?
            .iter()
            .map(|e| {
                e.as_str()
                    .and_then(|s| hex::decode(s).ok())
                    .and_then(|b| LogEntry::from_bytes(&b).ok())
                    .ok_or_else(|| damaged("a log entry"))
            })
            .collect::<Result<Vec<_>>>()?;
        let state = VaultState::verify_log_as(viewer, now, &entries, None)
            .map_err(|e| damaged(&format!("vault {vault}: {e}")))?;
        if state.vault() != vault {
            return Err(damaged("a log filed under another vault"));
        }
        store.append_entries(&vault, &entries)?;
    }
    if let Some(pins) = root.get("pins").and_then(Value::as_object) {
        for (name, fp) in pins {
            let fp = fp
                .as_str()
                .and_then(|s| Fingerprint::from_hex(s).ok())
                .ok_or_else(|| damaged("a pinned fingerprint"))?;
            store.pin(name, &fp)?;
        }
    }
    Ok(store)
}
