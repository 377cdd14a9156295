//! Real Kafka clients against a real `rill broker` process on loopback: confluent-kafka
//! (librdkafka), kafka-python and aiokafka from PyPI, Debian's kcat, and kafkajs from npm
//! (which speaks only the non-flexible protocol versions; found through `RILL_NODE_PATH`,
//! default `/var/tmp/rill-npm/node_modules`, where `.ci/run` installs it). Each script in
//! `tests/compat/` runs the scenarios (keys, headers and every codec; a group of three
//! with commits and a member leaving; seek by timestamp; topics and configs through the admin
//! APIs) and exits non-zero on the first difference from Kafka. Offsets committed by one
//! client are read by the next (confluent -> kafka-python -> aiokafka).
//!
//! The clients are installed by `.ci/run`. Without them this test says so and passes, unless
//! `RILL_COMPAT_REQUIRED=1` (set by CI), where a missing client fails it.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{run_with_timeout, BrokerProcess};

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("compat")
        .join(name)
}

fn clients_missing() -> Option<String> {
    let python = Command::new("python3")
        .args([
            "-c",
            "import confluent_kafka, kafka, aiokafka, cramjam, lz4, zstandard",
        ])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        return Some(
            "python3 with confluent-kafka, kafka-python, aiokafka, cramjam, lz4, zstandard, \
             python-snappy"
                .into(),
        );
    }
    if !Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("kcat".into());
    }
    if !Command::new("node")
        .args(["-e", "require('kafkajs')"])
        .env("NODE_PATH", node_path())
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(format!("node with kafkajs in {}", node_path()));
    }
    None
}

/// Where kafkajs is installed (`npm install kafkajs` there).
fn node_path() -> String {
    std::env::var("RILL_NODE_PATH").unwrap_or_else(|_| "/var/tmp/rill-npm/node_modules".into())
}

#[test]
fn kafka_clients_work_against_a_rill_broker_process() {
    if let Some(missing) = clients_missing() {
        if std::env::var("RILL_COMPAT_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("client compatibility tests need {missing}");
        }
        eprintln!("SKIPPED: client compatibility tests need {missing} (see .ci/run)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &[]);
    let addr = broker.addr.clone();
    let run = |cmd: &mut Command, what: &str| -> String {
        let (ok, out, err) = run_with_timeout(cmd, "", 240);
        assert!(
            ok,
            "{what} failed\nstdout:\n{out}\nstderr:\n{err}\nbroker log:\n{}",
            broker.stderr.lock().unwrap()
        );
        eprintln!("{what}:\n{out}");
        out
    };
    let out = run(
        Command::new("python3")
            .arg(script("confluent_kafka_client.py"))
            .arg(&addr),
        "confluent-kafka",
    );
    let cross: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("CROSS "))
        .expect("the confluent script names its committed group")
        .split_whitespace()
        .collect();
    let out = run(
        Command::new("python3")
            .arg(script("kafka_python_client.py"))
            .arg(&addr)
            .args(&cross),
        "kafka-python",
    );
    assert!(out.contains("ok scenario_read_offsets_committed_by_confluent"));
    let out = run(
        Command::new("python3")
            .arg(script("aiokafka_client.py"))
            .arg(&addr)
            .args(&cross),
        "aiokafka",
    );
    assert!(out.contains("ok scenario_read_offsets_committed_by_kafka_python"));
    let out = run(
        Command::new("bash")
            .arg(script("kcat_client.sh"))
            .arg(&addr),
        "kcat",
    );
    assert!(out.contains("ok group commits and resume"));
    let out = run(
        Command::new("node")
            .arg(script("kafkajs_client.js"))
            .arg(&addr)
            .env("NODE_PATH", node_path()),
        "kafkajs",
    );
    assert!(out.contains("ok scenarioTransactions"));
}
