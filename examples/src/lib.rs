//! `rill-examples`: runnable programs that show rill, one per file beside this crate's
//! `Cargo.toml` (run one with `cargo run --release --example <name>`). This library holds
//! what they share: an embedded log (or a broker given with `--bootstrap-server`), topic
//! creation, typed producing and read_committed consuming, and a small seeded generator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rill_dsl::core::runtime::{ProcessingGuarantee, StreamsConfig};
use rill_dsl::serdes::{auto, Data, SerdeRef};
use rill_log::broker::{Broker, BrokerConfig};
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, EmbeddedTransport, IsolationLevel, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, Transport,
};
use rill_log::net::{TcpConfig, TcpTransport};
use rill_log::time::SystemClock;
use rill_log::types::TopicPartition;

/// The command line every example takes.
#[derive(Debug, Clone)]
pub struct Args {
    /// `--bootstrap-server host:port`: use a running broker instead of an embedded log.
    pub bootstrap: Option<String>,
    /// `--records N`: how much input to generate.
    pub records: Option<usize>,
}

impl Args {
    pub fn parse() -> Result<Args> {
        let mut args = std::env::args().skip(1);
        let mut out = Args {
            bootstrap: None,
            records: None,
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--bootstrap-server" => {
                    out.bootstrap = Some(args.next().context("--bootstrap-server needs host:port")?)
                }
                "--records" => {
                    out.records = Some(
                        args.next()
                            .context("--records needs a number")?
                            .parse()
                            .context("--records needs a number")?,
                    )
                }
                "--help" | "-h" => {
                    println!("options: --bootstrap-server host:port  --records N");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other} (try --help)"),
            }
        }
        Ok(out)
    }
}

/// Where an example runs: an embedded log in a temporary directory, or a broker.
pub struct Cluster {
    pub transport: Arc<dyn Transport>,
    broker: Option<Arc<Broker>>,
    /// Keeps the embedded log's and the applications' directories until the end.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("embedded", &self.broker.is_some())
            .finish()
    }
}

impl Cluster {
    pub async fn start(args: &Args) -> Result<Cluster> {
        // `RUST_LOG=info` (or `rill_core=debug`, ...) shows what the runtime logs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
        let dir = tempfile::tempdir()?;
        match &args.bootstrap {
            Some(b) => {
                let t = TcpTransport::connect(TcpConfig::new(b.clone()))
                    .await
                    .with_context(|| format!("connecting to {b}"))?;
                Ok(Cluster {
                    transport: Arc::new(t),
                    broker: None,
                    dir,
                })
            }
            None => {
                let mut config = BrokerConfig::new(dir.path().join("log"));
                config.offsets_topic_num_partitions = 1;
                config.transaction_state_num_partitions = 1;
                config.group.initial_rebalance_delay_ms = 0;
                config.group_tick_ms = 20;
                let broker = Arc::new(Broker::open(config, Arc::new(SystemClock))?);
                let transport = Arc::new(EmbeddedTransport::new(Arc::clone(&broker), "example"));
                Ok(Cluster {
                    transport,
                    broker: Some(broker),
                    dir,
                })
            }
        }
    }

    /// Creates the topics (those that exist already are kept).
    pub async fn create_topics(&self, topics: &[(&str, i32)]) -> Result<()> {
        let admin = Admin::new(Arc::clone(&self.transport));
        for (name, partitions) in topics {
            if let Err(e) = admin.create_topic(name, *partitions, &[]).await {
                if !e.to_string().to_lowercase().contains("exist") {
                    return Err(e).with_context(|| format!("creating {name}"));
                }
            }
        }
        Ok(())
    }

    /// An exactly-once application config with a state directory, committing every 100 ms.
    pub fn streams_config(&self, application_id: &str) -> StreamsConfig {
        let mut c = StreamsConfig::new(application_id);
        c.processing_guarantee = ProcessingGuarantee::ExactlyOnceV2;
        c.commit_interval_ms = 100;
        c.state_dir = Some(self.state_dir(application_id));
        c.poll_ms = 50;
        c.session_timeout_ms = 6_000;
        c.heartbeat_interval_ms = 200;
        c
    }

    pub fn state_dir(&self, application_id: &str) -> PathBuf {
        self.dir.path().join("state").join(application_id)
    }

    /// Produces typed records (keys and values in the `Auto` serde) and waits for their acks.
    pub async fn produce<K: Data, V: Data>(
        &self,
        topic: &str,
        records: &[(K, V, i64)],
    ) -> Result<()> {
        self.produce_with(topic, records, auto(), auto()).await
    }

    pub async fn produce_with<K: Data, V: Data>(
        &self,
        topic: &str,
        records: &[(K, V, i64)],
        keys: SerdeRef<K>,
        values: SerdeRef<V>,
    ) -> Result<()> {
        let producer = Producer::new(Arc::clone(&self.transport), ProducerConfig::default());
        let mut pending = Vec::with_capacity(records.len());
        let topic: Arc<str> = topic.into();
        for (k, v, ts) in records {
            let r = ProducerRecord {
                topic: Arc::clone(&topic),
                key: keys.serialize(k)?.map(Bytes::from),
                value: values.serialize(v)?.map(Bytes::from),
                timestamp_ms: Some(*ts),
                ..Default::default()
            };
            pending.push(producer.send(r).await?);
        }
        for d in pending {
            d.await?;
        }
        producer.close().await;
        Ok(())
    }

    /// Reads `topic` read_committed from the start until `done` says the records so far are
    /// enough, or `timeout` passes (an error).
    pub async fn consume_until<K: Data, V: Data>(
        &self,
        topic: &str,
        keys: SerdeRef<K>,
        timeout: Duration,
        mut done: impl FnMut(&[(K, Option<V>, i64)]) -> bool,
    ) -> Result<Vec<(K, Option<V>, i64)>> {
        let admin = Admin::new(Arc::clone(&self.transport));
        let partitions = admin
            .list_topics()
            .await?
            .into_iter()
            .find(|t| t.name == topic)
            .with_context(|| format!("no topic {topic}"))?
            .partitions;
        let mut consumer = Consumer::new(
            Arc::clone(&self.transport),
            ConsumerConfig {
                isolation_level: IsolationLevel::ReadCommitted,
                auto_offset_reset: OffsetReset::Earliest,
                fetch_max_wait_ms: 100,
                ..Default::default()
            },
        );
        consumer.assign((0..partitions).map(|p| TopicPartition::new(topic, p)));
        let values: SerdeRef<V> = auto();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&out) {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{topic}: gave up waiting after {timeout:?} with {} records",
                    out.len()
                );
            }
            for r in consumer.poll().await? {
                let Some(k) = keys.deserialize(r.key.as_deref())? else {
                    continue;
                };
                let v = match r.value.as_deref() {
                    None => None,
                    Some(b) => values.deserialize(Some(b))?,
                };
                out.push((k, v, r.timestamp_ms));
            }
        }
        Ok(out)
    }

    /// Stops the embedded log, if there is one.
    pub fn close(self) -> Result<()> {
        if let Some(b) = self.broker {
            b.close()?;
        }
        Ok(())
    }
}

/// Counts per key, for checking an example's output against its input.
pub fn tally<K: Ord + Clone>(items: impl IntoIterator<Item = K>) -> BTreeMap<K, i64> {
    let mut m = BTreeMap::new();
    for k in items {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// A small seeded generator (xorshift), so that every run generates the same input.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
