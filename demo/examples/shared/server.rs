//! What the example servers share: start-up from the environment and graceful shutdown
//! (included with `#[path]`: not an example itself).

use par_store::PostgresStore;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// Reads `.env`, logs to stderr under `RUST_LOG` (default `info,par_store=debug`), connects to
/// the PostgreSQL at `DATABASE_URL` and applies par-store's migrations there.
pub async fn start() -> Result<PostgresStore, Box<dyn std::error::Error>> {
    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,par_store=debug")),
        )
        .init();
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let store = PostgresStore::connect(&database_url).await.map_err(|err| {
        format!("cannot use the PostgreSQL at DATABASE_URL ({err}); start one with `docker compose up -d --wait`")
    })?;
    store.migrate().await?;
    Ok(store)
}

/// Resolves on Ctrl-C, or on SIGTERM where there is one (containers, systemd).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing the requests in flight");
}
