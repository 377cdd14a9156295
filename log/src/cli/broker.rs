//! `rill broker`: binds the listener, opens the broker on the data directory, serves until the
//! shutdown signal, then stops accepting, lets in-flight requests finish, and closes the log
//! (flushing every partition).

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::{CliError, NodeConfig};
use crate::broker::Broker;
use crate::net::Server;
use crate::time::SystemClock;

/// Runs a broker until `shutdown` resolves. Prints one line to stdout once it is serving:
/// `rill broker listening on <addr> ...` (tests read the port from it).
pub async fn run(
    mut config: NodeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    config
        .server
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", config.listen)))?;
    let bound = listener.local_addr()?;
    let (host, port) = match &config.advertised {
        Some(a) => {
            let (h, p) = a.rsplit_once(':').unwrap_or((a.as_str(), "9092"));
            let port: u16 = p.parse().unwrap_or(bound.port());
            (h.to_string(), if port == 0 { bound.port() } else { port })
        }
        None if bound.ip().is_unspecified() => ("localhost".to_string(), bound.port()),
        None => (bound.ip().to_string(), bound.port()),
    };
    config.broker.advertised_host = host.clone();
    config.broker.advertised_port = i32::from(port);
    let data_dir = config.broker.log.data_dir.clone();
    let broker_config = config.broker.clone();
    let broker =
        tokio::task::spawn_blocking(move || Broker::open(broker_config, Arc::new(SystemClock)))
            .await
            .map_err(|e| CliError::Usage(format!("the broker failed to open: {e}")))??;
    let broker = Arc::new(broker);
    let server = Server::start(listener, Arc::clone(&broker), config.server.clone());
    println!(
        "rill broker listening on {bound} (advertised as {host}:{port}), data in {}",
        data_dir.display()
    );
    let _ = std::io::stdout().flush();
    tracing::info!(%bound, "serving");
    shutdown.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    let closing = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|e| CliError::Usage(format!("the broker failed to close: {e}")))??;
    println!("rill broker stopped");
    Ok(())
}
