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
use crate::storage::files::FileBlobs;
use crate::storage::sqlite::SqliteMeta;
use crate::storage::StorageError;

/// Uploads untouched this long are abandoned and removed.
pub const ABANDONED_UPLOAD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A relay's state over the embedded storage in `config.data_dir`.
pub struct Relay {
    /// The shared state.
    pub state: Arc<AppState>,
    meta: Arc<SqliteMeta>,
}

impl Relay {
    /// Opens (creating) the data directory: `relay.sqlite3`, `blobs/`,
    /// `uploads/`.
    pub fn open(config: Config) -> Result<Self, StorageError> {
        let metrics = Arc::new(Metrics::new());
        let m = metrics.clone();
        let meta = Arc::new(SqliteMeta::open(
            &config.data_dir,
            config.max_batch,
            Arc::new(move |n| m.batch_sizes.observe(n as f64)),
        )?);
        let blobs = Arc::new(FileBlobs::open(&config.data_dir)?);
        let state = Arc::new(AppState::new(config, meta.clone(), blobs, metrics));
        Ok(Self { state, meta })
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
        let housekeeping = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    state.auth.housekeeping();
                    state.housekeeping();
                    state.new_budget.housekeeping(state.now());
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
        let meta = self.meta.clone();
        let _ = tokio::task::spawn_blocking(move || meta.close()).await;
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
