//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use rill_log::record::{decode_batches, encode_batch, Compression, NewRecord};
use rill_log::storage::{LogConfig, PartitionLog};
use rill_log::time::ManualClock;
use rill_log::types::{Offset, TopicPartition};

/// A batch of `(key, value, timestamp)` records, uncompressed.
pub fn batch(records: &[(Option<&str>, Option<&str>, i64)]) -> Vec<u8> {
    batch_with(records, Compression::None)
}

pub fn batch_with(records: &[(Option<&str>, Option<&str>, i64)], c: Compression) -> Vec<u8> {
    let recs: Vec<NewRecord> = records
        .iter()
        .map(|(k, v, ts)| NewRecord::new(k.map(|s| s.to_string()), v.map(|s| s.to_string()), *ts))
        .collect();
    encode_batch(&recs, c).expect("encodable")
}

/// `n` records with values `prefix-i`, keys `k-i`, timestamp `ts`.
pub fn simple_batch(prefix: &str, n: usize, ts: i64) -> Vec<u8> {
    let owned: Vec<(String, String)> = (0..n)
        .map(|i| (format!("k-{i}"), format!("{prefix}-{i}")))
        .collect();
    let recs: Vec<(Option<&str>, Option<&str>, i64)> = owned
        .iter()
        .map(|(k, v)| (Some(k.as_str()), Some(v.as_str()), ts))
        .collect();
    batch(&recs)
}

pub fn open(dir: &std::path::Path, config: LogConfig, clock: Arc<ManualClock>) -> PartitionLog {
    PartitionLog::open(dir, TopicPartition::new("t", 0), config, clock).expect("log opens")
}

/// Every record from the log start to the end, as (offset, key, value, timestamp).
pub fn read_all(log: &PartitionLog) -> Vec<(i64, Option<String>, Option<String>, i64)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset().0;
    let end = log.log_end_offset().0;
    while next < end {
        let r = log.read(Offset(next), 64 * 1024).expect("read");
        if r.records.is_empty() {
            // Reads cross compaction's holes themselves; an empty read below the end means no
            // batch remains after `next` (the tail of the last closed segment was compacted
            // away and the active segment is empty). Callers compare against exact contents.
            break;
        }
        let recs = decode_batches(&r.records).expect("served batches decode");
        assert!(!recs.is_empty());
        for rec in recs {
            if rec.offset >= next {
                out.push((
                    rec.offset,
                    rec.key.map(|b| String::from_utf8(b.to_vec()).unwrap()),
                    rec.value.map(|b| String::from_utf8(b.to_vec()).unwrap()),
                    rec.timestamp_ms,
                ));
            }
        }
        next = out.last().map_or(next, |r| r.0 + 1).max(next);
        // Batches may end in a hole (compaction keeps a batch's last offset).
        let last_batch_end = last_offset_in(&r.records) + 1;
        next = next.max(last_batch_end);
    }
    out
}

fn last_offset_in(buf: &[u8]) -> i64 {
    let mut last = -1;
    for item in rill_log::record::batch::BatchIter::new(buf) {
        let (h, _, _) = item.expect("served batches verify");
        last = h.last_offset();
    }
    last
}

pub fn config(pairs: &[(&str, &str)]) -> LogConfig {
    let mut c = LogConfig::default();
    for (k, v) in pairs {
        c.set(k, v).expect("valid config");
    }
    c
}

/// An embedded broker with a one-partition `__consumer_offsets`, on the system clock.
pub fn broker(dir: &std::path::Path) -> Arc<rill_log::broker::Broker> {
    let mut config = rill_log::broker::BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 1;
    Arc::new(rill_log::broker::Broker::open(config, Arc::new(rill_log::time::SystemClock)).unwrap())
}

/// The embedded transport to `b`.
pub fn embedded(b: &Arc<rill_log::broker::Broker>) -> Arc<dyn rill_log::client::Transport> {
    Arc::new(rill_log::client::EmbeddedTransport::new(
        Arc::clone(b),
        "test",
    ))
}

/// A `rill broker` process on a free loopback port, killed when dropped.
pub struct BrokerProcess {
    pub child: std::process::Child,
    pub addr: String,
    /// The broker's stderr, collected in the background.
    pub stderr: Arc<std::sync::Mutex<String>>,
}

impl BrokerProcess {
    /// Starts `rill broker` on `dir` (small internal topics, no initial rebalance delay) and
    /// waits for its "listening on" line.
    pub fn start(dir: &std::path::Path, extra: &[&str]) -> BrokerProcess {
        Self::start_with(dir, extra, "warn")
    }

    /// [`start`](Self::start) with its own `RUST_LOG`; lines before the broker's
    /// "listening on" (a controller's, in a cluster node) are skipped.
    pub fn start_with(dir: &std::path::Path, extra: &[&str], log: &str) -> BrokerProcess {
        Self::start_at(dir, "127.0.0.1:0", extra, log)
    }

    /// [`start_with`](Self::start_with) on the client listener `listen`.
    pub fn start_at(
        dir: &std::path::Path,
        listen: &str,
        extra: &[&str],
        log: &str,
    ) -> BrokerProcess {
        use std::io::{BufRead, Read};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rill"))
            .args(["broker", "--listen", listen, "--data-dir"])
            .arg(dir)
            .args([
                "--override",
                "group.initial.rebalance.delay.ms=0",
                "--override",
                "offsets.topic.num.partitions=3",
            ])
            .args(extra)
            .env("RUST_LOG", log)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("rill broker starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let line = loop {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    panic!("no listening line; stderr: {}", stderr.lock().unwrap())
                });
            if !line.starts_with("rill controller") {
                break line;
            }
        };
        let addr = line
            .split_whitespace()
            .nth(4)
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        assert!(line.starts_with("rill broker listening on "), "{line}");
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        BrokerProcess {
            child,
            addr,
            stderr,
        }
    }

    /// SIGKILL, no chance to flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (within `secs`).
    pub fn terminate(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        wait_child(&mut self.child, secs)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `secs` for `child` to exit; kills it after.
pub fn wait_child(child: &mut std::process::Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Runs a command with stdin text, a deadline, and collects (success, stdout, stderr).
pub fn run_with_timeout(
    cmd: &mut std::process::Command,
    stdin: &str,
    secs: u64,
) -> (bool, String, String) {
    use std::io::{Read, Write};
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("command starts");
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_child(&mut child, secs);
    let _ = writer.join();
    let stdout = reader.join().unwrap_or_default();
    let mut stderr = err_reader.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n(killed after {secs} s)"));
    }
    (status.is_some_and(|s| s.success()), stdout, stderr)
}
