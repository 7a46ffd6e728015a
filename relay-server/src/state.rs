//! The relay's shared state: storage, the clock, the verified state of
//! each vault it serves, the identity cache, authentication and metrics.
//! The rules that use it are in [`crate::domain`].
//!
//! The relay keeps its own verified copy of every vault's log (a
//! `vault_core::VaultState`), so it refuses entries no client would accept
//! and knows, from the log alone, who is a member with which rights.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vault_core::pairing::PAIRING_TTL;
use vault_core::{Fingerprint, LogEntry, PublicIdentity, VaultId, VaultState};

use crate::admission::SourceBudget;
use crate::auth::{AuthLimits, Authenticator};
use crate::config::Config;
use crate::domain::access::AccessError;
use crate::domain::{Clock, Failure, SystemClock};
use crate::metrics::Metrics;
use crate::storage::{BlobStore, Head, MetaStore};

/// One vault's verified state; `None` until loaded, and again after an
/// append left it ahead of storage (an entry refused after earlier ones of
/// its batch were applied in place, or storage refusing or failing), so it
/// is rebuilt from the stored log at the next use. Appends hold the write
/// lock from verification until the entries are durable.
pub type VaultSlot = tokio::sync::RwLock<Option<VaultState>>;

/// A vault's state, loaded, locked for reading.
pub type StateRead = tokio::sync::OwnedRwLockReadGuard<Option<VaultState>>;

/// A vault's state, loaded, locked for writing.
pub type StateWrite = tokio::sync::OwnedRwLockWriteGuard<Option<VaultState>>;

/// Everything a handler needs.
pub struct AppState {
    /// Configuration.
    pub config: Config,
    /// Metadata storage.
    pub meta: Arc<dyn MetaStore>,
    /// Blob storage.
    pub blobs: Arc<dyn BlobStore>,
    /// Request authentication.
    pub auth: Authenticator,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// New identities and vaults per source address, per clock hour.
    pub new_budget: SourceBudget,
    /// Pairing opens per source address, per [`PAIRING_TTL`] (so one
    /// source holds at most twice that many live slots, whatever number
    /// of identities it made).
    pub pairing_budget: SourceBudget,
    /// Whether the storage answers ([`crate::health`]).
    pub health: crate::health::Health,
    clock: Arc<dyn Clock>,
    identities: Mutex<HashMap<Fingerprint, Arc<PublicIdentity>>>,
    vaults: Mutex<VaultCache>,
    loads: AtomicU64,
    catch_ups: AtomicU64,
    rebuild_cooldowns: Mutex<HashMap<VaultId, u64>>,
}

/// After an append left the state of a vault of more than
/// [`REBUILD_FREE`] entries ahead of storage (so it must be rebuilt from
/// the stored log), multi-entry appends to that vault are refused for this
/// many seconds: a writer cannot make the relay rebuild a large vault more
/// than about once a minute.
pub const REBUILD_COOLDOWN: u64 = 60;

/// Vaults up to this many entries are cheap to rebuild and get no
/// [`REBUILD_COOLDOWN`].
pub const REBUILD_FREE: u64 = 1000;

/// One cached vault: its slot, what reloading it would cost (entries in
/// its log) and its eviction priority.
struct Cached {
    slot: Arc<VaultSlot>,
    cost: u64,
    priority: u64,
}

/// The vault states kept in memory, evicted by GreedyDual (Young 1991;
/// Cao and Irani's GreedyDual-Size with unit sizes): a vault's priority is
/// the cache's *floor* plus its reload cost (its log's length), refreshed
/// at every use; the idle vault with the lowest priority goes first and
/// raises the floor to its priority. So a vault that is cheap to reload is
/// evicted before an expensive one, and touching many cheap vaults only
/// ages the others slowly (by the cost of what is evicted), while a vault
/// nobody uses is still evicted eventually. Each operation is O(log n);
/// nothing scans the cache.
struct VaultCache {
    map: HashMap<VaultId, Cached>,
    order: BTreeSet<(u64, VaultId)>,
    floor: u64,
    capacity: usize,
}

impl VaultCache {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeSet::new(),
            floor: 0,
            capacity: capacity.max(1),
        }
    }

    /// The slot of `vault`, inserted (evicting an idle vault if the cache
    /// is full) or refreshed.
    fn slot(&mut self, vault: VaultId) -> Arc<VaultSlot> {
        if let Some(c) = self.map.get_mut(&vault) {
            self.order.remove(&(c.priority, vault));
            c.priority = self.floor.saturating_add(c.cost);
            self.order.insert((c.priority, vault));
            return c.slot.clone();
        }
        if self.map.len() >= self.capacity {
            self.evict_one();
        }
        let slot = Arc::new(VaultSlot::new(None));
        let priority = self.floor.saturating_add(1);
        self.map.insert(
            vault,
            Cached {
                slot: slot.clone(),
                cost: 1,
                priority,
            },
        );
        self.order.insert((priority, vault));
        slot
    }

    /// Evicts the idle vault of lowest priority (vaults in use are
    /// skipped: at most as many as requests in flight). If every vault is
    /// in use, the cache grows past its capacity until they are released.
    fn evict_one(&mut self) {
        let victim = self.order.iter().copied().find(|(_, v)| {
            self.map
                .get(v)
                .is_some_and(|c| Arc::strong_count(&c.slot) == 1)
        });
        if let Some((priority, vault)) = victim {
            self.order.remove(&(priority, vault));
            self.map.remove(&vault);
            self.floor = self.floor.max(priority);
        }
    }

    /// Records what reloading `vault` costs (entries in its log).
    fn set_cost(&mut self, vault: VaultId, cost: u64) {
        if let Some(c) = self.map.get_mut(&vault) {
            self.order.remove(&(c.priority, vault));
            c.cost = cost.max(1);
            c.priority = self.floor.saturating_add(c.cost);
            self.order.insert((c.priority, vault));
        }
    }

    /// Drops `vault` if nobody uses it.
    fn forget(&mut self, vault: VaultId) {
        if let Some(c) = self.map.get(&vault) {
            if Arc::strong_count(&c.slot) == 1 {
                self.order.remove(&(c.priority, vault));
                self.map.remove(&vault);
            }
        }
    }
}

impl AppState {
    /// State over the given storage.
    pub fn new(
        config: Config,
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let auth = Authenticator::new(AuthLimits {
            past_skew: config.clock_skew,
            future_skew: config.future_skew,
            rate: config.rate,
            burst: config.burst,
        })
        .with_origins(config.relay_origins());
        Self {
            meta,
            blobs,
            auth,
            metrics,
            vaults: Mutex::new(VaultCache::new(config.vault_cache)),
            new_budget: SourceBudget::new(config.new_per_hour, 3600, config.new_per_hour_loopback),
            pairing_budget: SourceBudget::new(
                config.pairings_per_source,
                PAIRING_TTL,
                config.new_per_hour_loopback,
            ),
            health: crate::health::Health::new(),
            config,
            clock: Arc::new(SystemClock),
            identities: Mutex::new(HashMap::new()),
            loads: AtomicU64::new(0),
            catch_ups: AtomicU64::new(0),
            rebuild_cooldowns: Mutex::new(HashMap::new()),
        }
    }

    /// The same state reading `clock` instead of the system clock (entry
    /// times, access and rebuild cooldowns are evaluated at it; request
    /// authentication keeps the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The relay's time now, Unix seconds (its [`Clock`]).
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// A published identity (cached: documents are immutable, since the
    /// fingerprint is their hash).
    pub async fn identity(&self, fp: Fingerprint) -> Result<Option<Arc<PublicIdentity>>, Failure> {
        if let Some(id) = self
            .identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fp)
        {
            return Ok(Some(id.clone()));
        }
        let Some(bytes) = self
            .meta
            .identity(fp)
            .await
            .map_err(|e| Failure::storage("reading an identity", e))?
        else {
            return Ok(None);
        };
        let id = Arc::new(
            PublicIdentity::from_bytes(&bytes)
                .map_err(|e| Failure::internal("a stored identity does not parse", e))?,
        );
        let mut cache = self.identities.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(fp, id.clone());
        Ok(Some(id))
    }

    /// The slot of a vault (whether or not it exists), marked as used now.
    pub fn slot(&self, vault: VaultId) -> Arc<VaultSlot> {
        self.vaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .slot(vault)
    }

    /// Drops a vault's slot if nobody is using it (requests for vaults that
    /// do not exist must not push real vaults out of the cache).
    pub fn forget(&self, vault: VaultId) {
        self.vaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(vault);
    }

    /// Records a cached vault's log length, its reload cost for eviction.
    pub fn note_len(&self, vault: VaultId, entries: u64) {
        self.vaults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_cost(vault, entries);
    }

    /// Notes that `vault`'s state was dropped by a refused append, starting
    /// its [`REBUILD_COOLDOWN`].
    pub fn start_rebuild_cooldown(&self, vault: VaultId) {
        let until = self.now().saturating_add(REBUILD_COOLDOWN);
        let mut map = self
            .rebuild_cooldowns
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.insert(vault, until);
    }

    /// Seconds left of `vault`'s rebuild cooldown, if one runs.
    pub fn rebuild_cooldown(&self, vault: VaultId) -> Option<u64> {
        let now = self.now();
        let mut map = self
            .rebuild_cooldowns
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match map.get(&vault).copied() {
            Some(until) if until > now => Some(until - now),
            Some(_) => {
                map.remove(&vault);
                None
            }
            None => None,
        }
    }

    /// Forgets finished rebuild cooldowns (call periodically).
    pub fn housekeeping(&self) {
        let now = self.now();
        self.rebuild_cooldowns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
    }

    /// How many times a vault's state was rebuilt from storage since the
    /// relay started (a load reads and replays the vault's whole log).
    pub fn vault_loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Loads a vault's state from storage, verifying its log
    /// ([`AccessError::VaultNotFound`] if there is no such vault,
    /// [`AccessError::Failure`] if storage fails or the stored log does not
    /// verify).
    pub async fn load(&self, vault: VaultId) -> Result<VaultState, AccessError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        let Some(head) = self
            .meta
            .head(vault)
            .await
            .map_err(|e| Failure::storage("reading a vault head", e))?
        else {
            return Err(AccessError::VaultNotFound);
        };
        let raw = self
            .meta
            .entries(vault, 0, u64::MAX)
            .await
            .map_err(|e| Failure::storage("reading a vault log", e))?;
        let entries = raw
            .iter()
            .map(|b| LogEntry::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::internal("a stored entry does not parse", e))?;
        // Stored entries were verified when appended; the chain is
        // re-checked up to the stored head, signatures are not.
        let trusted = vault_core::Checkpoint {
            vault,
            seq: head.seq,
            head: head.hash,
        };
        Ok(VaultState::verify_log_from(entries.iter(), Some(&trusted))
            .map_err(|e| Failure::internal("a stored vault log does not verify", e))?)
    }

    /// A vault's verified state, loaded from storage if needed, locked for
    /// writing ([`AccessError::VaultNotFound`] if there is no such vault;
    /// its slot is then dropped, so requests for absent vaults do not push
    /// real ones out of the cache). Over a store other relays write too
    /// ([`crate::storage::MetaStore::is_shared`]) the state is first
    /// brought up to the stored log (`AppState::catch_up`): whatever is
    /// decided on it is decided on a head at least as recent as the
    /// store's when this was called.
    pub async fn write_state(&self, vault: VaultId) -> Result<StateWrite, AccessError> {
        Ok(self.write_state_after(vault, None).await?.0)
    }

    /// [`AppState::write_state`] for a write that names the head it
    /// follows: over a shared store, a cached state whose head is `prev`
    /// is returned without reading the store (decision 59). It may then
    /// be behind the store; what is decided on it holds only for a write
    /// that the store's compare-and-swap on `prev` accepts, and a refusal
    /// decided on it stands only if the store's head is still `prev`
    /// (`domain::append` checks both). The second value says whether the
    /// read was skipped.
    pub async fn write_state_following(
        &self,
        vault: VaultId,
        prev: Head,
    ) -> Result<(StateWrite, bool), AccessError> {
        self.write_state_after(vault, Some(prev)).await
    }

    /// The state, caught up with the store unless its cached head is
    /// `prev`; and whether, over a shared store, that read was skipped.
    async fn write_state_after(
        &self,
        vault: VaultId,
        prev: Option<Head>,
    ) -> Result<(StateWrite, bool), AccessError> {
        let mut guard = self.slot(vault).write_owned().await;
        let shared = self.meta.is_shared();
        let skipped = shared
            && guard
                .as_ref()
                .is_some_and(|s| prev.is_some_and(|p| Head::of(s) == p));
        if guard.is_some() && shared && !skipped {
            self.catch_up(vault, &mut guard).await?;
        }
        if guard.is_none() {
            if let Err(e) = self.reload(vault, &mut guard).await {
                drop(guard);
                self.forget(vault);
                return Err(e);
            }
        }
        Ok((guard, skipped))
    }

    /// Rebuilds `vault`'s state from storage into `guard` (its slot,
    /// locked for writing), noting its length for the cache. On error
    /// `guard` is left as it was.
    pub async fn reload(&self, vault: VaultId, guard: &mut StateWrite) -> Result<(), AccessError> {
        let state = self.load(vault).await?;
        self.note_len(vault, state.head().seq.saturating_add(1));
        **guard = Some(state);
        Ok(())
    }

    /// [`AppState::write_state`], locked for reading.
    pub async fn read_state(&self, vault: VaultId) -> Result<StateRead, AccessError> {
        let guard = self.slot(vault).read_owned().await;
        if let Some(state) = guard.as_ref() {
            if !self.meta.is_shared() || self.newer_entries(vault, state).await?.is_empty() {
                return Ok(guard);
            }
        }
        drop(guard);
        Ok(self.write_state(vault).await?.downgrade())
    }

    /// The stored entries after `state`'s head (read from the store).
    async fn newer_entries(
        &self,
        vault: VaultId,
        state: &VaultState,
    ) -> Result<Vec<Vec<u8>>, AccessError> {
        let next = state.head().seq.saturating_add(1);
        Ok(self
            .meta
            .entries(vault, next, u64::MAX)
            .await
            .map_err(|e| Failure::storage("reading a vault log", e))?)
    }

    /// Brings a cached state up to the stored log: applies, verifying each
    /// with vault-core, the entries other relays stored after its head.
    /// The cached state is never ahead of the store (every append that
    /// could leave it so drops it), so the stored log extends it; if the
    /// stored entries do not chain onto it anyway, it is dropped and
    /// rebuilt from the store. Counted in [`AppState::vault_catch_ups`].
    async fn catch_up(&self, vault: VaultId, guard: &mut StateWrite) -> Result<(), AccessError> {
        let Some(state) = guard.as_mut() else {
            return Ok(());
        };
        let newer = self.newer_entries(vault, state).await?;
        if newer.is_empty() {
            return Ok(());
        }
        self.catch_ups.fetch_add(1, Ordering::Relaxed);
        self.metrics.vault_catch_ups.inc();
        for bytes in &newer {
            let applied = LogEntry::from_bytes(bytes).and_then(|e| state.apply(&e));
            if let Err(e) = applied {
                tracing::warn!(error = %e, "a vault's stored entries do not extend its cached state; rebuilding it");
                **guard = None;
                return Ok(());
            }
        }
        self.note_len(vault, state.head().seq.saturating_add(1));
        Ok(())
    }

    /// How many times a cached vault state was brought up to entries
    /// another relay stored (only over a shared store).
    pub fn vault_catch_ups(&self) -> u64 {
        self.catch_ups.load(Ordering::Relaxed)
    }
}
