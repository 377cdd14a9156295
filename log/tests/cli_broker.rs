//! `rill broker` as a real process and the client commands against it: topics, produce from
//! stdin, consume with formats and groups, groups describe and reset-offsets, JSON output,
//! one-line errors; data surviving `kill -9` and a restart; a clean stop on SIGTERM; and a
//! config file with a bad key refused at start.

mod common;

use std::process::Command;

use common::{run_with_timeout, BrokerProcess};

fn rill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rill"))
}

/// Runs `rill <args> --bootstrap-server addr` with `stdin`; (ok, stdout, stderr).
fn cli(addr: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut cmd = rill();
    cmd.args(args).args(["--bootstrap-server", addr]);
    run_with_timeout(&mut cmd, stdin, 60)
}

fn ok(addr: &str, args: &[&str], stdin: &str) -> String {
    let (success, out, err) = cli(addr, args, stdin);
    assert!(success, "rill {args:?} failed:\n{out}\n{err}");
    out
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn the_cli_drives_a_broker_process_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let a = broker.addr.as_str();
    ok(
        a,
        &[
            "topics",
            "create",
            "orders",
            "--partitions",
            "2",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    let listed = json_lines(&ok(a, &["topics", "list", "--json"], ""));
    assert!(listed
        .iter()
        .any(|t| t["topic"] == "orders" && t["partitions"] == 2));
    // Produce keyed lines with a header; same key, same partition, in order.
    let input: String = (0..20).map(|i| format!("k{}:v{i}\n", i % 4)).collect();
    ok(
        a,
        &[
            "produce",
            "orders",
            "--key-separator",
            ":",
            "--header",
            "src=test",
        ],
        &input,
    );
    let out = ok(
        a,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "20",
            "--format",
            "%p|%o|%k|%v|%h",
        ],
        "",
    );
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(lines.len(), 20, "{out}");
    for k in 0..4 {
        let key = format!("k{k}");
        let mine: Vec<&Vec<&str>> = lines.iter().filter(|l| l[2] == key).collect();
        assert!(
            mine.iter().all(|l| l[0] == mine[0][0]),
            "{key} on one partition"
        );
        let values: Vec<&str> = mine.iter().map(|l| l[3]).collect();
        let want: Vec<String> = (0..5).map(|j| format!("v{}", k + 4 * j)).collect();
        assert_eq!(values, want);
        assert!(mine.iter().all(|l| l[4] == "src=test"));
    }
    // A group reads 12, commits exactly what it printed; describe shows the lag of the rest.
    let out = ok(
        a,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--max-messages",
            "12",
        ],
        "",
    );
    assert_eq!(out.lines().count(), 12);
    let rows = json_lines(&ok(a, &["groups", "describe", "billing", "--json"], ""));
    let committed: i64 = rows.iter().map(|r| r["committed"].as_i64().unwrap()).sum();
    let lag: i64 = rows.iter().map(|r| r["lag"].as_i64().unwrap()).sum();
    assert_eq!((committed, lag), (12, 8), "{rows:?}");
    assert!(rows.iter().all(|r| r["state"] == "Empty"));
    // The group resumes after its commit.
    let out = ok(
        a,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--timeout-ms",
            "1500",
        ],
        "",
    );
    assert_eq!(out.lines().count(), 8, "{out}");
    // Reset to the start (plan, then execute), and the group reads everything again.
    let plan = json_lines(&ok(
        a,
        &[
            "groups",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-earliest",
            "--json",
        ],
        "",
    ));
    assert!(plan.iter().all(|r| r["new"] == 0), "{plan:?}");
    ok(
        a,
        &[
            "groups",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-earliest",
            "--execute",
        ],
        "",
    );
    let out = ok(
        a,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--timeout-ms",
            "1500",
        ],
        "",
    );
    assert_eq!(out.lines().count(), 20);
    let groups = json_lines(&ok(a, &["groups", "list", "--json"], ""));
    assert!(groups.iter().any(|g| g["group"] == "billing"));
    // Configs: alter, then describe shows it.
    ok(
        a,
        &[
            "topics",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=7200000",
        ],
        "",
    );
    let described = ok(a, &["topics", "describe", "orders"], "");
    assert!(described.contains("retention.ms") && described.contains("7200000"));
    // One-line errors.
    let (success, _, err) = cli(a, &["topics", "describe", "nope"], "");
    assert!(!success);
    assert_eq!(err.trim(), "error: unknown topic `nope`");
    let (success, _, err) = cli(a, &["topics", "create", "orders"], "");
    assert!(!success);
    assert_eq!(err.trim(), "error: the topic already exists");
    let (success, _, err) = cli("127.0.0.1:1", &["topics", "list"], "");
    assert!(!success);
    assert!(
        err.starts_with("error: cannot connect to 127.0.0.1:1") && err.trim().lines().count() == 1,
        "{err}"
    );
    ok(a, &["topics", "delete", "orders"], "");
    let listed = json_lines(&ok(a, &["topics", "list", "--json"], ""));
    assert!(listed.iter().all(|t| t["topic"] != "orders"));
}

#[test]
fn data_survives_kill_9_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &[]);
    let input: String = (0..100).map(|i| format!("r{i}\n")).collect();
    ok(&broker.addr, &["topics", "create", "t"], "");
    ok(&broker.addr, &["produce", "t"], &input);
    broker.kill9();
    // Same data directory, a new process: every acknowledged record is there.
    let mut broker = BrokerProcess::start(dir.path(), &[]);
    let out = ok(
        &broker.addr,
        &["consume", "t", "--from-beginning", "--max-messages", "100"],
        "",
    );
    let want: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
    let status = broker.terminate(30).expect("the broker stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        broker.stderr.lock().unwrap().is_empty()
            || !broker.stderr.lock().unwrap().contains("panicked")
    );
}

#[test]
fn a_bad_config_file_is_refused_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rill.toml");
    std::fs::write(&config, "num.partitions = 3\nlog.retention.hourz = 1\n").unwrap();
    let mut cmd = rill();
    cmd.args(["broker", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let (success, _, err) = run_with_timeout(&mut cmd, "", 30);
    assert!(!success);
    assert_eq!(err.trim(), "error: unknown config `log.retention.hourz`");
    let mut cmd = rill();
    cmd.args(["broker", "--listen", "127.0.0.1:0"]);
    let (success, _, err) = run_with_timeout(&mut cmd, "", 30);
    assert!(!success);
    assert!(err.contains("no data directory"), "{err}");
    // Limits that cannot work together are refused at start, both keys named (a frame over
    // the whole request budget would wait for room forever).
    std::fs::write(
        &config,
        "socket.request.max.bytes = 2000000\nqueued.max.request.bytes = 1000000\n",
    )
    .unwrap();
    let mut cmd = rill();
    cmd.args(["broker", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let (success, _, err) = run_with_timeout(&mut cmd, "", 30);
    assert!(!success);
    assert!(
        err.contains("queued.max.request.bytes") && err.contains("socket.request.max.bytes"),
        "{err}"
    );
}

/// `rill transactions` against a broker process (ListTransactions, DescribeTransactions and
/// DescribeProducers over TCP): an open transaction of a rill producer is listed and
/// described with its partition, is not reported hanging, and cannot be aborted from the
/// command line; after its commit it is listed CompleteCommit.
#[test]
fn the_cli_lists_describes_and_guards_transactions() {
    use rill_log::client::{Producer, ProducerConfig, ProducerRecord, Transport};
    use rill_log::net::{TcpConfig, TcpTransport};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let a = broker.addr.as_str();
    ok(a, &["topics", "create", "t", "--partitions", "2"], "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let producer = rt.block_on(async {
        let t: Arc<dyn Transport> =
            Arc::new(TcpTransport::connect(TcpConfig::new(a)).await.unwrap());
        let p = Producer::new(
            t,
            ProducerConfig {
                transactional_id: Some("cli-tx".into()),
                linger_ms: 0,
                ..Default::default()
            },
        );
        p.init_transactions().await.unwrap();
        p.begin_transaction().unwrap();
        let mut r = ProducerRecord::new("t", None::<String>, "v");
        r.partition = Some(1);
        p.send(r).await.unwrap().wait().await.unwrap();
        p
    });
    let listed = json_lines(&ok(a, &["transactions", "list", "--json"], ""));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["transactional_id"], "cli-tx");
    assert_eq!(listed[0]["state"], "Ongoing");
    let described = json_lines(&ok(
        a,
        &["transactions", "describe", "cli-tx", "--json"],
        "",
    ));
    assert_eq!(described[0]["partitions"], "t-1");
    assert_eq!(described[0]["producer_epoch"], 0);
    let hanging = json_lines(&ok(a, &["transactions", "find-hanging", "--json"], ""));
    assert!(
        hanging.is_empty(),
        "a running transaction is not hanging: {hanging:?}"
    );
    let pid = listed[0]["producer_id"].to_string();
    let (refused, _, err) = cli(
        a,
        &[
            "transactions",
            "abort",
            "--topic",
            "t",
            "--partition",
            "1",
            "--producer-id",
            &pid,
        ],
        "",
    );
    assert!(
        !refused,
        "the coordinator's own transaction is not aborted behind its back"
    );
    assert!(err.contains("no hanging transaction"), "{err}");
    let (missing, _, err) = cli(a, &["transactions", "describe", "nope"], "");
    assert!(!missing && err.contains("TransactionalIdNotFound"), "{err}");
    rt.block_on(async {
        producer.commit_transaction().await.unwrap();
        producer.close().await;
    });
    let listed = json_lines(&ok(a, &["transactions", "list", "--json"], ""));
    assert_eq!(listed[0]["state"], "CompleteCommit");
}

/// `rill groups delete-offsets` (OffsetDelete over TCP): a group's committed offsets of a
/// topic go, and the group's next consumer starts from the reset policy again.
#[test]
fn the_cli_deletes_a_groups_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let a = broker.addr.as_str();
    ok(a, &["topics", "create", "events", "--partitions", "1"], "");
    ok(a, &["produce", "events"], "a\nb\nc\n");
    let consume = [
        "consume",
        "events",
        "--group",
        "readers",
        "--from-beginning",
        "--max-messages",
        "3",
    ];
    assert_eq!(ok(a, &consume, ""), "a\nb\nc\n");
    let rows = json_lines(&ok(
        a,
        &[
            "groups",
            "delete-offsets",
            "readers",
            "--topic",
            "events",
            "--json",
        ],
        "",
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["result"], "deleted");
    // Nothing committed any more: the group reads from the beginning again.
    assert_eq!(ok(a, &consume, ""), "a\nb\nc\n");
    let (refused, _, err) = cli(
        a,
        &["groups", "delete-offsets", "nobody", "--topic", "events"],
        "",
    );
    assert!(!refused && err.contains("unknown group"), "{err}");
}

/// `rill leaders elect` on a single broker: each partition's one replica leads already, so
/// every election is ELECTION_NOT_NEEDED (Kafka's answer for a balanced partition); asked
/// for every partition, the answer leaves those out; a topic or `--all-topic-partitions`
/// must be named.
#[test]
fn the_cli_asks_for_leader_elections() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let a = broker.addr.as_str();
    ok(a, &["topics", "create", "events", "--partitions", "2"], "");
    let rows = json_lines(&ok(
        a,
        &["leaders", "elect", "--topic", "events", "--json"],
        "",
    ));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r["result"] == "ElectionNotNeeded"),
        "{rows:?}"
    );
    let rows = json_lines(&ok(
        a,
        &[
            "leaders",
            "elect",
            "--all-topic-partitions",
            "--election-type",
            "unclean",
            "--json",
        ],
        "",
    ));
    assert!(rows.is_empty(), "{rows:?}");
    let rows = json_lines(&ok(
        a,
        &[
            "leaders",
            "elect",
            "--topic",
            "events",
            "--partition",
            "7",
            "--json",
        ],
        "",
    ));
    assert_eq!(rows[0]["result"], "UnknownTopicOrPartition");
    let (done, _, err) = cli(a, &["leaders", "elect"], "");
    assert!(!done && err.contains("--all-topic-partitions"), "{err}");
}

/// `rill cluster describe` on a single broker: its row carries its log directory's
/// partitions and bytes (DescribeLogDirs) and the volume's usable bytes.
#[test]
fn the_cli_shows_each_brokers_log_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let a = broker.addr.as_str();
    ok(a, &["topics", "create", "sized", "--partitions", "3"], "");
    ok(
        a,
        &["produce", "sized", "--partition", "1"],
        "one\ntwo\nthree\n",
    );
    let rows = json_lines(&ok(a, &["cluster", "describe", "--json"], ""));
    let row = rows
        .iter()
        .find(|r| r["role"] == "broker")
        .expect("a broker row");
    let int = |k: &str| row[k].as_i64();
    // `sized`'s three and whatever internal partitions the broker made.
    assert!(int("partitions").is_some_and(|n| n >= 3), "{row}");
    assert!(int("log_bytes").is_some_and(|b| b > 0), "{row}");
    assert!(int("usable_bytes").is_some_and(|b| b > 0), "{row}");
}
