//! The client-side commands of `rill`: topics, produce, consume and groups, over the Kafka
//! protocol to any Kafka-compatible broker (`--bootstrap-server`).

use std::io::{BufRead, Write};
use std::sync::Arc;

use bytes::Bytes;

use super::output::Table;
use super::CliError;
use crate::client::admin::ConfigOp;
use crate::client::{
    Admin, ClientError, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, OffsetSpec,
    Producer, ProducerConfig, ProducerRecord, Transport,
};
use crate::net::{TcpConfig, TcpTransport};
use crate::types::TopicPartition;

/// A transport to `bootstrap` that has reached a broker (so "connection refused" surfaces
/// here, once, in words).
pub async fn connect(bootstrap: &str) -> Result<Arc<dyn Transport>, CliError> {
    let mut config = TcpConfig::new(bootstrap);
    config.client_id = "rill-cli".into();
    config.request_timeout_ms = 15_000;
    if config.bootstrap_servers.is_empty() {
        return Err(CliError::Usage("--bootstrap-server is empty".into()));
    }
    match TcpTransport::connect(config).await {
        Ok(t) => Ok(Arc::new(t)),
        Err(ClientError::Network(e)) => Err(CliError::Usage(e)),
        Err(e) => Err(e.into()),
    }
}

/// `key=value` pairs from the command line.
pub fn pairs(items: &[String]) -> Result<Vec<(String, String)>, CliError> {
    items
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| CliError::Usage(format!("`{s}` is not key=value")))
        })
        .collect()
}

pub async fn topics_create(
    t: Arc<dyn Transport>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> Result<Table, CliError> {
    let configs: Vec<(&str, &str)> = configs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Admin::new(t)
        .create_replicated_topic(name, partitions, replication_factor, &configs)
        .await?;
    let mut table = Table::new(&["topic", "partitions", "status"]);
    table.push(vec![name.into(), partitions.to_string(), "created".into()]);
    Ok(table)
}

pub async fn topics_list(t: Arc<dyn Transport>) -> Result<Table, CliError> {
    let mut topics = Admin::new(t).list_topics().await?;
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let mut table = Table::new(&["topic", "partitions", "internal"]);
    for d in topics {
        table.push(vec![
            d.name,
            d.partitions.to_string(),
            d.internal.to_string(),
        ]);
    }
    Ok(table)
}

/// Partitions (leader, epoch, replicas, ISR, log start, log end) and the topic's configs;
/// with `under_replicated`, only the partitions whose ISR is short of their replicas; with
/// `under_min_isr`, only those whose ISR is smaller than the topic's `min.insync.replicas`
/// (acks=all produce is refused there).
pub async fn topics_describe(
    t: Arc<dyn Transport>,
    name: &str,
    under_replicated: bool,
    under_min_isr: bool,
) -> Result<Table, CliError> {
    let admin = Admin::new(t);
    let topic = admin
        .list_topics()
        .await?
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| CliError::Usage(format!("unknown topic `{name}`")))?;
    let tps: Vec<TopicPartition> = (0..topic.partitions)
        .map(|p| TopicPartition::new(name, p))
        .collect();
    let q = |spec| tps.iter().map(|tp| (tp.clone(), spec)).collect::<Vec<_>>();
    let starts = admin.list_offsets(&q(OffsetSpec::Earliest)).await?;
    let ends = admin.list_offsets(&q(OffsetSpec::Latest)).await?;
    let configs = admin.describe_topic_configs(name).await?;
    let min_isr: i64 = configs
        .iter()
        .find(|(k, _)| k.as_str() == "min.insync.replicas")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1);
    let mut table = Table::new(&[
        "topic",
        "partition",
        "leader",
        "leader_epoch",
        "replicas",
        "isr",
        "offline",
        "log_start",
        "log_end",
    ]);
    let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    for tp in &tps {
        let state = topic
            .partition_states
            .iter()
            .find(|p| p.partition == tp.partition.0);
        if under_replicated && !state.is_some_and(|s| s.under_replicated()) {
            continue;
        }
        if under_min_isr && state.is_none_or(|s| (s.isr.len() as i64) >= min_isr) {
            continue;
        }
        table.push(vec![
            name.into(),
            tp.partition.0.to_string(),
            state.map_or("-".into(), |s| s.leader.to_string()),
            state.map_or("-".into(), |s| s.leader_epoch.to_string()),
            state.map_or(String::new(), |s| list(&s.replicas)),
            state.map_or(String::new(), |s| list(&s.isr)),
            state.map_or(String::new(), |s| list(&s.offline)),
            starts.get(tp).map_or(-1, |o| o.offset).to_string(),
            ends.get(tp).map_or(-1, |o| o.offset).to_string(),
        ]);
    }
    let mut cfg = Table::new(&["topic", "config", "value"]);
    for (k, v) in configs {
        cfg.push(vec![name.into(), k, v]);
    }
    // One table: partitions first, then configs under their own header.
    table.rows.push(Vec::new());
    table
        .rows
        .push(cfg.columns.iter().map(|c| c.to_string()).collect());
    table.rows.extend(cfg.rows);
    Ok(table)
}

pub async fn topics_delete(t: Arc<dyn Transport>, name: &str) -> Result<Table, CliError> {
    Admin::new(t).delete_topic(name).await?;
    let mut table = Table::new(&["topic", "status"]);
    table.push(vec![name.into(), "deleted".into()]);
    Ok(table)
}

pub async fn topics_alter_config(
    t: Arc<dyn Transport>,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<Table, CliError> {
    if set.is_empty() && delete.is_empty() {
        return Err(CliError::Usage(
            "nothing to change: give --set or --delete".into(),
        ));
    }
    let mut ops: Vec<(String, ConfigOp)> = set
        .iter()
        .map(|(k, v)| (k.clone(), ConfigOp::Set(v.clone())))
        .collect();
    ops.extend(delete.iter().map(|k| (k.clone(), ConfigOp::Delete)));
    let admin = Admin::new(t);
    let refs: Vec<(&str, ConfigOp)> = ops.iter().map(|(k, o)| (k.as_str(), o.clone())).collect();
    admin.alter_topic_configs(name, &refs).await?;
    let now = admin.describe_topic_configs(name).await?;
    let mut table = Table::new(&["topic", "config", "value"]);
    for (k, _) in &ops {
        table.push(vec![
            name.into(),
            k.clone(),
            now.get(k).cloned().unwrap_or_default(),
        ]);
    }
    Ok(table)
}

/// How `rill produce` reads stdin.
#[derive(Debug, Clone, Default)]
pub struct ProduceOptions {
    pub topic: String,
    /// Split each line at the first separator into key and value.
    pub key_separator: Option<String>,
    pub headers: Vec<(String, String)>,
    pub partition: Option<i32>,
    /// Producer properties (`acks=1`, `compression.type=zstd`, ...).
    pub properties: Vec<(String, String)>,
}

/// Sends one record per input line; returns how many were acknowledged.
pub async fn produce(
    t: Arc<dyn Transport>,
    opts: &ProduceOptions,
    input: impl BufRead,
) -> Result<u64, CliError> {
    let config = ProducerConfig::from_props(opts.properties.iter().cloned())?;
    let producer = Producer::new(t, config);
    let mut deliveries = Vec::new();
    for line in input.lines() {
        let line = line?;
        let (key, value) = match &opts.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let mut r = ProducerRecord::new(opts.topic.clone(), key, value);
        r.partition = opts.partition;
        r.headers = opts
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Some(Bytes::from(v.clone()))))
            .collect();
        deliveries.push(producer.send(r).await?);
        // Keep the pending list short on long inputs: settle what is already done.
        if deliveries.len() >= 10_000 {
            producer.flush().await;
            for d in deliveries.drain(..) {
                d.await?;
            }
        }
    }
    producer.flush().await;
    let mut n = deliveries.len() as u64;
    let mut first_error = None;
    for d in deliveries {
        if let Err(e) = d.await {
            n -= 1;
            first_error.get_or_insert(e);
        }
    }
    producer.close().await;
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(n),
    }
}

/// How `rill consume` reads.
#[derive(Debug, Clone, Default)]
pub struct ConsumeOptions {
    pub topic: String,
    pub from_beginning: bool,
    /// Start at this offset of `partition` (only that partition is read).
    pub offset: Option<i64>,
    pub partition: Option<i32>,
    pub group: Option<String>,
    pub max_messages: Option<u64>,
    /// Stop after this long without a record.
    pub timeout_ms: Option<u64>,
    /// `%t` topic, `%p` partition, `%o` offset, `%T` timestamp, `%k` key, `%v` value,
    /// `%h` headers, `\n` and `\t`. Default `%v`.
    pub format: String,
    /// Consumer properties.
    pub properties: Vec<(String, String)>,
}

/// One record through a `--format` string.
pub fn format_record(format: &str, r: &ConsumerRecord) -> String {
    let text = |b: &Option<Bytes>| {
        b.as_ref().map_or("null".to_string(), |b| {
            String::from_utf8_lossy(b).into_owned()
        })
    };
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some(k)) if "tpoTkvh%".contains(k) => {
                chars.next();
                match k {
                    't' => out.push_str(&r.topic),
                    'p' => out.push_str(&r.partition.to_string()),
                    'o' => out.push_str(&r.offset.to_string()),
                    'T' => out.push_str(&r.timestamp_ms.to_string()),
                    'k' => out.push_str(&text(&r.key)),
                    'v' => out.push_str(&text(&r.value)),
                    'h' => {
                        let hs: Vec<String> = r
                            .headers
                            .iter()
                            .map(|(k, v)| format!("{k}={}", text(v)))
                            .collect();
                        out.push_str(&hs.join(","));
                    }
                    _ => out.push('%'),
                }
            }
            ('\\', Some('n')) => {
                chars.next();
                out.push('\n');
            }
            ('\\', Some('t')) => {
                chars.next();
                out.push('\t');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Prints records as they come; returns how many.
pub async fn consume(
    t: Arc<dyn Transport>,
    opts: &ConsumeOptions,
    out: &mut impl Write,
) -> Result<u64, CliError> {
    let mut config = ConsumerConfig::from_props(opts.properties.iter().cloned())?;
    config.group_id = opts.group.clone().or(config.group_id);
    config.auto_offset_reset = if opts.from_beginning {
        OffsetReset::Earliest
    } else {
        config.auto_offset_reset
    };
    config.fetch_max_wait_ms = config.fetch_max_wait_ms.min(200);
    if opts.group.is_none() {
        config.enable_auto_commit = false;
    }
    let mut consumer = Consumer::new(Arc::clone(&t), config);
    match (opts.offset, opts.partition) {
        (Some(offset), Some(p)) => {
            let tp = TopicPartition::new(opts.topic.clone(), p);
            consumer.assign([tp.clone()]);
            consumer.seek(&tp, offset)?;
        }
        (Some(_), None) => {
            return Err(CliError::Usage("--offset needs --partition".into()));
        }
        (None, _) if opts.group.is_some() => consumer.subscribe([opts.topic.clone()]),
        (None, partition) => {
            let topic = Admin::new(t)
                .list_topics()
                .await?
                .into_iter()
                .find(|d| d.name == opts.topic)
                .ok_or_else(|| CliError::Usage(format!("unknown topic `{}`", opts.topic)))?;
            consumer.assign(
                (0..topic.partitions)
                    .filter(|p| partition.is_none_or(|only| only == *p))
                    .map(|p| TopicPartition::new(opts.topic.clone(), p)),
            );
        }
    }
    let format = if opts.format.is_empty() {
        "%v"
    } else {
        opts.format.as_str()
    };
    let mut n = 0u64;
    let mut last_record = std::time::Instant::now();
    'poll: loop {
        let records = consumer.poll().await?;
        if !records.is_empty() {
            last_record = std::time::Instant::now();
        }
        for r in &records {
            writeln!(out, "{}", format_record(format, r))?;
            n += 1;
            if opts.max_messages.is_some_and(|max| n >= max) {
                // Commit exactly up to what was printed.
                if opts.group.is_some() {
                    let tp = TopicPartition::new(&*r.topic, r.partition);
                    consumer.seek(&tp, r.offset + 1)?;
                }
                break 'poll;
            }
        }
        out.flush()?;
        if opts
            .timeout_ms
            .is_some_and(|ms| last_record.elapsed().as_millis() as u64 >= ms)
        {
            break;
        }
    }
    out.flush()?;
    if opts.group.is_some() {
        consumer.commit_sync().await?;
    }
    consumer.close().await?;
    Ok(n)
}

pub async fn groups_list(t: Arc<dyn Transport>) -> Result<Table, CliError> {
    let mut groups = Admin::new(t).list_groups().await?;
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    let mut table = Table::new(&["group", "state", "protocol_type"]);
    for g in groups {
        table.push(vec![g.group_id, g.state, g.protocol_type]);
    }
    Ok(table)
}

/// Per partition: committed offset, log end, lag, and the member that owns it.
pub async fn groups_describe(t: Arc<dyn Transport>, group: &str) -> Result<Table, CliError> {
    let admin = Admin::new(t);
    let described = admin.describe_groups(&[group]).await?;
    let d = described
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Usage(format!("unknown group `{group}`")))?;
    if d.state == "Dead" {
        return Err(CliError::Usage(format!("unknown group `{group}`")));
    }
    let lag = admin.consumer_lag(group).await?;
    let mut table = Table::new(&[
        "group",
        "state",
        "topic",
        "partition",
        "committed",
        "log_end",
        "lag",
        "member",
        "client_id",
        "host",
    ]);
    let owner = |tp: &TopicPartition| d.members.iter().find(|m| m.assignment.contains(tp));
    let mut seen = Vec::new();
    for l in &lag {
        let m = owner(&l.partition);
        seen.push(l.partition.clone());
        table.push(vec![
            group.into(),
            d.state.clone(),
            l.partition.topic.clone(),
            l.partition.partition.0.to_string(),
            l.committed.to_string(),
            l.log_end.to_string(),
            l.lag.to_string(),
            m.map_or("-".into(), |m| m.member_id.clone()),
            m.map_or("-".into(), |m| m.client_id.clone()),
            m.map_or("-".into(), |m| m.client_host.clone()),
        ]);
    }
    // Assigned partitions with nothing committed yet.
    for m in &d.members {
        for tp in m.assignment.iter().filter(|tp| !seen.contains(tp)) {
            table.push(vec![
                group.into(),
                d.state.clone(),
                tp.topic.clone(),
                tp.partition.0.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                m.member_id.clone(),
                m.client_id.clone(),
                m.client_host.clone(),
            ]);
        }
    }
    if table.rows.is_empty() {
        table.push(vec![
            group.into(),
            d.state.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    Ok(table)
}

/// `groups delete-offsets`: deletes `group`'s committed offsets of `topic` (of `partitions`,
/// or of every partition); one row per partition with the outcome.
pub async fn groups_delete_offsets(
    t: Arc<dyn Transport>,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Table, CliError> {
    let admin = Admin::new(t);
    let wanted = topic_partitions(&admin, topic, partitions).await?;
    let mut table = Table::new(&["group", "topic", "partition", "result"]);
    for (tp, error) in admin.delete_group_offsets(group, &wanted).await? {
        table.push(vec![
            group.into(),
            tp.topic.clone(),
            tp.partition.0.to_string(),
            error.map_or("deleted".into(), |e| format!("{e:?}")),
        ]);
    }
    Ok(table)
}

/// `leaders elect`: elections for `topic`'s partitions (`partitions`, or all of them), or
/// for every partition of every topic when `topic` is `None`; a row per partition.
pub async fn leaders_elect(
    t: Arc<dyn Transport>,
    preferred: bool,
    topic: Option<&str>,
    partitions: &[i32],
) -> Result<Table, CliError> {
    let admin = Admin::new(t);
    let wanted = match topic {
        None => None,
        Some(topic) => Some(topic_partitions(&admin, topic, partitions).await?),
    };
    let mut table = Table::new(&["topic", "partition", "result"]);
    for (tp, error) in admin.elect_leaders(preferred, wanted.as_deref()).await? {
        table.push(vec![
            tp.topic.clone(),
            tp.partition.0.to_string(),
            error.map_or("elected".into(), |e| format!("{e:?}")),
        ]);
    }
    Ok(table)
}

/// `partitions` of `topic`, or all of its partitions when none are named.
async fn topic_partitions(
    admin: &Admin,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<TopicPartition>, CliError> {
    if !partitions.is_empty() {
        return Ok(partitions
            .iter()
            .map(|p| TopicPartition::new(topic, *p))
            .collect());
    }
    let described = admin.list_topics().await?;
    let count = described
        .iter()
        .find(|d| d.name == topic)
        .map(|d| d.partitions)
        .ok_or_else(|| CliError::Usage(format!("unknown topic `{topic}`")))?;
    Ok((0..count).map(|p| TopicPartition::new(topic, p)).collect())
}

/// Where `groups reset-offsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

/// Plans (and with `execute`, commits) new offsets for every partition of `topic`. The group
/// must have no members, as in Kafka.
pub async fn groups_reset_offsets(
    t: Arc<dyn Transport>,
    group: &str,
    topic: &str,
    to: ResetTo,
    execute: bool,
) -> Result<Table, CliError> {
    let admin = Admin::new(Arc::clone(&t));
    if let Some(d) = admin.describe_groups(&[group]).await?.first() {
        if !d.members.is_empty() {
            return Err(CliError::Usage(format!(
                "group `{group}` has {} active member(s): stop them first",
                d.members.len()
            )));
        }
    }
    let partitions = admin
        .list_topics()
        .await?
        .into_iter()
        .find(|d| d.name == topic)
        .ok_or_else(|| CliError::Usage(format!("unknown topic `{topic}`")))?
        .partitions;
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let q = |spec| tps.iter().map(|tp| (tp.clone(), spec)).collect::<Vec<_>>();
    let starts = admin.list_offsets(&q(OffsetSpec::Earliest)).await?;
    let ends = admin.list_offsets(&q(OffsetSpec::Latest)).await?;
    let by_time = match to {
        ResetTo::Timestamp(ts) => Some(admin.list_offsets(&q(OffsetSpec::Timestamp(ts))).await?),
        _ => None,
    };
    let current = admin.list_group_offsets(group).await?;
    let mut plan = Vec::new();
    let mut table = Table::new(&["group", "topic", "partition", "current", "new"]);
    for tp in &tps {
        let (start, end) = (
            starts.get(tp).map_or(0, |o| o.offset),
            ends.get(tp).map_or(0, |o| o.offset),
        );
        let new = match to {
            ResetTo::Earliest => start,
            ResetTo::Latest => end,
            ResetTo::Offset(o) => o.clamp(start, end),
            ResetTo::Timestamp(_) => by_time
                .as_ref()
                .and_then(|m| m.get(tp))
                .map(|o| o.offset)
                .filter(|o| *o >= 0)
                .unwrap_or(end),
        };
        table.push(vec![
            group.into(),
            topic.into(),
            tp.partition.0.to_string(),
            current.get(tp).map_or("-".into(), |(o, _)| o.to_string()),
            new.to_string(),
        ]);
        plan.push((tp.clone(), new));
    }
    if execute {
        let committer = Consumer::new(
            t,
            ConsumerConfig {
                group_id: Some(group.into()),
                enable_auto_commit: false,
                ..Default::default()
            },
        );
        committer.commit_offsets(&plan).await?;
    }
    Ok(table)
}

/// `rill cluster describe`: the brokers (DescribeCluster: id, endpoint, rack, which is the
/// controller) and, given the controller quorum's voters, each controller's view of the
/// quorum (leader or follower, term, metadata offset applied; "unreachable" when it does not
/// answer), so a lagging or dead controller shows.
pub async fn cluster_describe(
    t: Arc<dyn Transport>,
    voters: Option<std::collections::BTreeMap<u64, String>>,
) -> Result<Table, CliError> {
    use kafka_protocol::messages::{DescribeClusterRequest, RequestKind, ResponseKind};
    let resp = t
        .send(RequestKind::DescribeCluster(
            DescribeClusterRequest::default(),
        ))
        .await?;
    let Some(ResponseKind::DescribeCluster(cluster)) = resp else {
        return Err(CliError::Usage("no DescribeCluster answer".into()));
    };
    crate::client::check(cluster.error_code, cluster.error_message.as_deref())?;
    let mut table = Table::new(&[
        "role",
        "id",
        "endpoint",
        "rack",
        "state",
        "term",
        "applied",
        "partitions",
        "log_bytes",
        "usable_bytes",
    ]);
    let admin = Admin::new(Arc::clone(&t));
    for b in &cluster.brokers {
        let state = if b.broker_id == cluster.controller_id {
            "controller (as DescribeCluster names it)"
        } else {
            "serving"
        };
        // Its log directory (DescribeLogDirs to that broker): partitions held, their bytes,
        // and the bytes left on the volume; blank when it does not answer.
        let dirs = admin.describe_log_dirs(b.broker_id.0).await.ok();
        let sizes = dirs.map(|dirs| {
            let partitions: usize = dirs.iter().map(|d| d.partitions.len()).sum();
            let bytes: i64 = dirs.iter().flat_map(|d| &d.partitions).map(|p| p.1).sum();
            let usable = dirs.iter().map(|d| d.usable_bytes).max().unwrap_or(-1);
            (
                partitions.to_string(),
                bytes.to_string(),
                usable.to_string(),
            )
        });
        let (partitions, bytes, usable) = sizes.unwrap_or_default();
        table.push(vec![
            "broker".into(),
            b.broker_id.0.to_string(),
            format!("{}:{}", b.host, b.port),
            b.rack.as_deref().unwrap_or("").to_string(),
            state.into(),
            String::new(),
            String::new(),
            partitions,
            bytes,
            usable,
        ]);
    }
    for (id, addr) in voters.unwrap_or_default() {
        use crate::controller::rpc::{ControllerRequest, ControllerResponse};
        let one = [(id, addr.clone())].into_iter().collect();
        let mut client = crate::controller::service::ControllerClient::new(
            one,
            std::time::Duration::from_secs(3),
        );
        let row = match client.call(&ControllerRequest::DescribeQuorum).await {
            Ok(ControllerResponse::Quorum(q)) => {
                let state = match q.leader {
                    Some(l) if l == id => "leader".to_string(),
                    Some(l) => format!("follower of {l}"),
                    None => "no leader known".to_string(),
                };
                (state, q.term.to_string(), q.applied.to_string())
            }
            Ok(other) => (format!("unexpected answer {other:?}"), "".into(), "".into()),
            Err(e) => (format!("unreachable ({e})"), "".into(), "".into()),
        };
        table.push(vec![
            "controller".into(),
            id.to_string(),
            addr,
            String::new(),
            row.0,
            row.1,
            row.2,
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    Ok(table)
}
