//! `rill broker`: binds the listener, opens the broker on the data directory, serves until the
//! shutdown signal, then stops accepting, lets in-flight requests finish, and closes the log
//! (flushing every partition). With `process.roles`, the node is part of a cluster: a
//! controller (a voter of the metadata quorum, on its controller listener), a broker that
//! joins the cluster, or both.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::{CliError, NodeConfig};
use crate::broker::Broker;
use crate::controller::quorum::QuorumConfig;
use crate::controller::service::ControllerService;
use crate::net::Server;
use crate::storage::meta_properties;
use crate::time::SystemClock;

/// Marks a data directory whose broker closed cleanly (Kafka's `.kafka_cleanshutdown`): its
/// logs were flushed, so after a restart it may stay an eligible leader replica (KIP-966).
const CLEAN_SHUTDOWN: &str = ".rill-clean-shutdown";
/// The boot id of the machine the broker last ran on. A broker that crashed (kill -9) while
/// the machine stayed up lost nothing it had written: the page cache survived. Only a
/// machine restart (a power loss) can take unflushed writes, so only then is the restart
/// unclean for KIP-966 (Linux's `/proc/sys/kernel/random/boot_id`).
const RUNNING_ON: &str = ".rill-running-on";

/// The current boot id, where the system has one.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether the data directory's logs hold everything this node wrote before it stopped: a
/// clean shutdown, or a crash of the process alone. Marks the directory as in use by this
/// boot.
fn logs_intact(dir: &std::path::Path) -> bool {
    let clean = std::fs::remove_file(dir.join(CLEAN_SHUTDOWN)).is_ok();
    let boot = boot_id();
    let same_boot = boot.is_some()
        && std::fs::read_to_string(dir.join(RUNNING_ON))
            .ok()
            .map(|s| s.trim().to_string())
            == boot;
    if let Some(b) = boot {
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(dir.join(RUNNING_ON), b);
    }
    clean || same_boot
}

/// Starts this node's controller, if it is one.
async fn start_controller(
    config: &NodeConfig,
    cluster_id: &str,
) -> Result<Option<Arc<ControllerService>>, CliError> {
    let c = &config.cluster;
    if !c.controller_role {
        return Ok(None);
    }
    let node = config.broker.node_id as u64;
    let listen = c
        .controller_listen
        .clone()
        .or_else(|| c.broker.voters.get(&node).cloned())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "node {node} is a controller but not in controller.quorum.voters and has no CONTROLLER listener"
            ))
        })?;
    if !c.broker.voters.contains_key(&node) {
        return Err(CliError::Usage(format!(
            "controller {node} is not one of controller.quorum.voters"
        )));
    }
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {listen}: {e}")))?;
    let bound = listener.local_addr()?;
    let quorum = QuorumConfig::new(
        node,
        c.broker.voters.clone(),
        config.broker.log.data_dir.join("__cluster_metadata"),
    )
    .with_election_timeout(c.election_timeout_ms);
    let mut controller = c.controller.clone();
    controller.cluster_id = Some(cluster_id.to_string());
    controller.num_partitions = config.broker.num_partitions;
    controller.max_partitions_per_topic = config.broker.max_partitions_per_topic;
    controller.min_insync_replicas = config.broker.log.defaults.min_insync_replicas.max(1) as usize;
    let service = ControllerService::start(
        quorum,
        controller,
        listener,
        Arc::new(SystemClock),
        config.broker.seed,
    )
    .await
    .map_err(|e| CliError::Usage(format!("the controller failed to start: {e}")))?;
    println!("rill controller {node} listening on {bound}");
    let _ = std::io::stdout().flush();
    Ok(Some(service))
}

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
    let clustered = config.cluster.enabled();
    let data_dir = config.broker.log.data_dir.clone();
    let clean_shutdown = logs_intact(&data_dir);
    let mut controller = None;
    if clustered {
        if config.cluster.broker.voters.is_empty() {
            return Err(CliError::Usage(
                "process.roles needs controller.quorum.voters".into(),
            ));
        }
        let given = config
            .cluster_id_given
            .then(|| config.broker.cluster_id.clone());
        let meta = meta_properties::ensure(&data_dir, config.broker.node_id, given.as_deref())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        config.broker.cluster_id = meta.cluster_id.clone();
        controller = start_controller(&config, &meta.cluster_id).await?;
        if !config.cluster.broker_role {
            shutdown.await;
            if let Some(c) = controller {
                c.shutdown().await;
            }
            println!("rill controller stopped");
            return Ok(());
        }
    }
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
    config.broker.clustered = clustered;
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
    if clustered {
        // Registration needs a quorum, which may still be starting: join in the background.
        let (broker, cluster) = (Arc::clone(&broker), config.cluster.broker.clone());
        tokio::spawn(async move {
            if let Err(e) = broker.join_cluster(cluster, clean_shutdown).await {
                tracing::error!(error = %e, "joining the cluster failed");
                eprintln!("error: joining the cluster failed: {e}");
                std::process::exit(1);
            }
        });
    }
    shutdown.await;
    tracing::info!("shutting down");
    // Leaderships move away first, while this broker still answers (NOT_LEADER_OR_FOLLOWER
    // sends clients to the new leaders).
    broker.controlled_shutdown().await;
    server.shutdown().await;
    let closing = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|e| CliError::Usage(format!("the broker failed to close: {e}")))??;
    let _ = std::fs::write(data_dir.join(CLEAN_SHUTDOWN), b"");
    if let Some(c) = controller {
        c.shutdown().await;
    }
    println!("rill broker stopped");
    Ok(())
}
