//! Starting and stopping a relay: open storage, bind, serve until a
//! shutdown signal, finish in-flight requests, then close storage.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::app::router;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::storage::backends::{self, BackendError};
use crate::storage::files::FileBlobs;
use crate::storage::sqlite::SqliteMeta;
use crate::storage::StorageError;

/// Uploads untouched this long are abandoned and removed.
pub const ABANDONED_UPLOAD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A relay's state over its storage.
pub struct Relay {
    /// The shared state.
    pub state: Arc<AppState>,
    close: Arc<dyn Fn() + Send + Sync>,
    /// What storage it runs on (no secrets), for the log.
    pub storage: String,
}

impl Relay {
    /// Opens (creating) the embedded storage in the data directory:
    /// `relay.sqlite3`, `blobs/`, `uploads/`. For PostgreSQL or S3
    /// ([`Config::storage`]), use [`Relay::connect`].
    pub fn open(config: Config) -> Result<Self, StorageError> {
        if !config.storage.is_embedded() {
            return Err(StorageError::new(
                "Relay::open opens the embedded storage only; use Relay::connect for PostgreSQL or S3",
            ));
        }
        let metrics = Arc::new(Metrics::new());
        let m = metrics.clone();
        let meta = Arc::new(SqliteMeta::open(
            &config.data_dir,
            config.max_batch,
            Arc::new(move |n| m.batch_sizes.observe(n as f64)),
        )?);
        let blobs = Arc::new(FileBlobs::open(&config.data_dir)?);
        let storage = format!("SQLite and files in {}", config.data_dir.display());
        let closing = meta.clone();
        let state = Arc::new(AppState::new(config, meta, blobs, metrics));
        Ok(Self {
            state,
            close: Arc::new(move || closing.close()),
            storage,
        })
    }

    /// Opens the configured storage, embedded or remote: connects to
    /// PostgreSQL and applies its migrations, checks the bucket. Every
    /// error names the setting to fix; nothing remote is written when one
    /// is returned.
    pub async fn connect(config: Config) -> Result<Self, BackendError> {
        let metrics = Arc::new(Metrics::new());
        let m = metrics.clone();
        let opened = backends::open(
            &config.storage,
            &config.data_dir,
            config.max_batch,
            Arc::new(move |n| m.batch_sizes.observe(n as f64)),
        )
        .await?;
        let state = Arc::new(AppState::new(config, opened.meta, opened.blobs, metrics));
        Ok(Self {
            state,
            close: Arc::from(opened.close),
            storage: opened.description,
        })
    }

    /// The router (for in-process tests).
    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
    }

    /// The operator's router (`/metrics`, `/healthz`), for
    /// [`crate::config::Config::admin_listen`]; never merged into the public
    /// one.
    pub fn admin_router(&self) -> axum::Router {
        crate::admin::admin_router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then waits for
    /// in-flight requests and closes storage (every acknowledged write is
    /// already durable).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router();
        let probe = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::health::PROBE_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    state
                        .health
                        .probe(&*state.meta, &*state.blobs, &state.metrics)
                        .await;
                }
            })
        };
        let housekeeping = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    state.auth.housekeeping();
                    state.housekeeping();
                    state.new_budget.housekeeping(state.now());
                    state.pairing_budget.housekeeping(state.now());
                    if state.meta.is_shared() {
                        if let Err(e) = state.meta.expire_nonces(crate::auth::unix_now()).await {
                            tracing::warn!(error = %e, "forgetting expired request nonces failed");
                        }
                    }
                    if let Err(e) = state.meta.expire_pairings(state.now()).await {
                        tracing::warn!(error = %e, "forgetting expired pairing slots failed");
                    }
                    // Expired SMART Health Links' files are deleted (the
                    // link and its access record stay, listed as expired).
                    match state.meta.retire_links(state.now()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(retired = n, "deleted the files of expired links"),
                        Err(e) => tracing::warn!(error = %e, "retiring expired links failed"),
                    }
                    match state.blobs.sweep_uploads(ABANDONED_UPLOAD).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "swept abandoned uploads"),
                        Err(e) => tracing::warn!(error = %e, "sweeping abandoned uploads failed"),
                    }
                    match state
                        .meta
                        .release_stale_uploads(ABANDONED_UPLOAD.as_secs())
                        .await
                    {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(released = n, "released abandoned uploads' quota"),
                        Err(e) => tracing::warn!(error = %e, "releasing abandoned uploads failed"),
                    }
                }
            })
        };
        // Connections from trusted load balancers name their client in a
        // PROXY protocol header (crate::proxy).
        let listener = crate::proxy::RelayListener::new(
            listener,
            self.state.config.proxy_protocol_from.clone(),
        )?;
        // Small responses must not wait for the peer's delayed ACK.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let result = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        housekeeping.abort();
        probe.abort();
        let close = self.close.clone();
        let _ = tokio::task::spawn_blocking(move || close()).await;
        result
    }
}

/// Resolves on Ctrl-C or SIGTERM. SIGTERM is caught from the moment this
/// is called (inside the runtime), not from its first poll: a SIGTERM that
/// arrives right after the relay announced it listens still shuts it down
/// gracefully.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
        tracing::info!("shutdown requested; finishing in-flight requests");
    }
}
