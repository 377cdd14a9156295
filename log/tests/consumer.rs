//! The Consumer over the embedded transport (manual assignment): positions from commits or
//! `auto.offset.reset`, per-partition order, `max.poll.records`, seeks by offset and by time,
//! committed offsets that let a new consumer resume with no gap, across a broker restart,
//! pause / resume, seeks to either end, offsets by time, auto-commit and `commit_async`, and
//! fetches whose last batch the broker cut at a size limit.

mod common;

use std::sync::Arc;

use common::{broker, embedded};

use rill_log::broker::Broker;
use rill_log::client::{
    Admin, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use rill_log::types::TopicPartition;

/// Produces `n` records "v0".."v{n-1}" to `partition` with timestamps 1000 + i.
async fn produce(b: &Arc<Broker>, partition: i32, n: usize, prefix: &str) {
    let config = ProducerConfig {
        linger_ms: 0,
        ..Default::default()
    };
    produce_values(b, partition, n, config, |i| format!("{prefix}{i}")).await;
}

/// Produces `n` records with values `value(i)` to `partition` (timestamps 1000 + i).
async fn produce_values(
    b: &Arc<Broker>,
    partition: i32,
    n: usize,
    config: ProducerConfig,
    value: impl Fn(usize) -> String,
) {
    let p = Producer::new(embedded(b), config);
    let mut ds = Vec::new();
    for i in 0..n {
        let mut r = ProducerRecord::new("t", Some("k"), value(i));
        r.partition = Some(partition);
        r.timestamp_ms = Some(1000 + i as i64);
        ds.push(p.send(r).await.unwrap());
    }
    for d in ds {
        d.await.unwrap();
    }
    p.close().await;
}

fn consumer(b: &Arc<Broker>, group: Option<&str>, reset: OffsetReset, max_poll: usize) -> Consumer {
    let config = ConsumerConfig {
        group_id: group.map(str::to_string),
        auto_offset_reset: reset,
        max_poll_records: max_poll,
        fetch_max_wait_ms: 10,
        ..Default::default()
    };
    let mut c = Consumer::new(embedded(b), config);
    c.assign([TopicPartition::new("t", 0), TopicPartition::new("t", 1)]);
    c
}

async fn values(c: &mut Consumer, want: usize) -> Vec<(i32, i64, String)> {
    let mut out = Vec::new();
    for _ in 0..50 {
        for r in c.poll().await.unwrap() {
            out.push((
                r.partition,
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
        if out.len() >= want {
            break;
        }
    }
    out
}

#[tokio::test]
async fn reads_every_record_in_partition_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    produce(&b, 0, 30, "a").await;
    produce(&b, 1, 20, "b").await;
    let mut c = consumer(&b, None, OffsetReset::Earliest, 7);
    let got = values(&mut c, 50).await;
    assert_eq!(got.len(), 50);
    for p in 0..2 {
        let mine: Vec<(i64, String)> = got
            .iter()
            .filter(|r| r.0 == p)
            .map(|r| (r.1, r.2.clone()))
            .collect();
        let prefix = if p == 0 { "a" } else { "b" };
        let want: Vec<(i64, String)> = (0..mine.len() as i64)
            .map(|i| (i, format!("{prefix}{i}")))
            .collect();
        assert_eq!(mine, want);
    }
    assert_eq!(c.position(&TopicPartition::new("t", 0)), Some(30));
    // max.poll.records bounds each poll.
    let mut c = consumer(&b, None, OffsetReset::Earliest, 7);
    assert_eq!(c.poll().await.unwrap().len(), 7);
    b.close().unwrap();
}

#[tokio::test]
async fn a_new_consumer_resumes_at_the_commit_with_no_gap_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = broker(dir.path());
        Admin::new(embedded(&b))
            .create_topic("t", 2, &[])
            .await
            .unwrap();
        produce(&b, 0, 40, "v").await;
        let mut c = consumer(&b, Some("g"), OffsetReset::Earliest, 15);
        let first = c.poll().await.unwrap();
        assert_eq!(first.len(), 15);
        c.commit_sync().await.unwrap();
        let committed = c
            .committed(&[TopicPartition::new("t", 0), TopicPartition::new("t", 1)])
            .await
            .unwrap();
        assert_eq!(committed[&TopicPartition::new("t", 0)], Some(15));
        // Partition 1 is empty: its position (0) is committed too.
        assert_eq!(committed[&TopicPartition::new("t", 1)], Some(0));
        b.close().unwrap();
    }
    let b = broker(dir.path());
    let mut c = consumer(&b, Some("g"), OffsetReset::None, 100);
    let rest = values(&mut c, 25).await;
    let offsets: Vec<i64> = rest.iter().map(|r| r.1).collect();
    assert_eq!(
        offsets,
        (15..40).collect::<Vec<_>>(),
        "resumed exactly after the commit"
    );
    b.close().unwrap();
}

#[tokio::test]
async fn latest_reset_skips_the_backlog_and_seeks_move_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    produce(&b, 0, 10, "old").await;
    let mut c = consumer(&b, None, OffsetReset::Latest, 100);
    assert!(c.poll().await.unwrap().is_empty());
    produce(&b, 0, 3, "new").await;
    let got = values(&mut c, 3).await;
    assert_eq!(
        got.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        vec!["new0", "new1", "new2"]
    );
    // Seek by offset, then by timestamp (timestamps are 1000 + i per produce call).
    let tp = TopicPartition::new("t", 0);
    c.seek(&tp, 8).unwrap();
    let got = values(&mut c, 5).await;
    assert_eq!(
        got.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        vec!["old8", "old9", "new0", "new1", "new2"]
    );
    c.seek_to_timestamp(&tp, 1002).await.unwrap();
    // The first record with a timestamp >= 1002 is old2 (offset 2).
    assert_eq!(c.position(&tp), Some(2));
    // A committed group with auto.offset.reset=none and no commit is an error, not a guess.
    let mut strict = consumer(&b, Some("fresh"), OffsetReset::None, 10);
    assert!(strict.poll().await.is_err());
    b.close().unwrap();
}

#[tokio::test]
async fn pause_resume_seek_to_either_end_and_offsets_for_times() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    produce(&b, 0, 10, "a").await;
    produce(&b, 1, 5, "b").await;
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    let mut c = consumer(&b, None, OffsetReset::Earliest, 100);
    c.pause(std::slice::from_ref(&p0)).unwrap();
    assert_eq!(c.paused(), vec![p0.clone()]);
    let got = values(&mut c, 5).await;
    assert_eq!(
        got.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        (0..5).map(|o| (1, o)).collect::<Vec<_>>(),
        "a paused partition is neither fetched nor returned"
    );
    assert_eq!(c.position(&p0), Some(0));
    c.resume(std::slice::from_ref(&p0));
    let got = values(&mut c, 10).await;
    assert_eq!(got.iter().filter(|r| r.0 == 0).count(), 10);
    // Back to the start of p1, past the end of p0.
    c.seek_to_beginning(std::slice::from_ref(&p1))
        .await
        .unwrap();
    c.seek_to_end(std::slice::from_ref(&p0)).await.unwrap();
    assert_eq!((c.position(&p0), c.position(&p1)), (Some(10), Some(0)));
    let got = values(&mut c, 5).await;
    assert_eq!(
        got.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        (0..5).map(|o| (1, o)).collect::<Vec<_>>()
    );
    // Timestamps are 1000 + i: the first record at or after 1003 is offset 3; none that late.
    let found = c
        .offsets_for_times(&[(p0.clone(), 1003), (p1.clone(), 5000)])
        .await
        .unwrap();
    assert_eq!(found[&p0], Some((3, 1003)));
    assert_eq!(found[&p1], None);
    // Pausing or seeking what is not assigned is refused.
    let other = TopicPartition::new("t", 7);
    assert!(c.pause(std::slice::from_ref(&other)).is_err());
    assert!(c.seek_to_end(&[other]).await.is_err());
    b.close().unwrap();
}

#[tokio::test]
async fn auto_commit_and_commit_async_store_the_positions_returned() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    produce(&b, 0, 30, "v").await;
    let p0 = TopicPartition::new("t", 0);
    // Auto-commit on every poll: the next poll commits what the previous one returned.
    let mut c = Consumer::new(
        embedded(&b),
        ConsumerConfig {
            group_id: Some("auto".into()),
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records: 12,
            fetch_max_wait_ms: 10,
            enable_auto_commit: true,
            auto_commit_interval_ms: 0,
            ..Default::default()
        },
    );
    c.assign([p0.clone()]);
    assert_eq!(c.poll().await.unwrap().len(), 12);
    assert_eq!(
        c.committed(std::slice::from_ref(&p0)).await.unwrap()[&p0],
        None
    );
    assert_eq!(c.poll().await.unwrap().len(), 12);
    assert_eq!(
        c.committed(std::slice::from_ref(&p0)).await.unwrap()[&p0],
        Some(12)
    );
    // commit_async: the handle resolves once the commit is stored.
    let mut c = consumer(&b, Some("async"), OffsetReset::Earliest, 20);
    assert_eq!(c.poll().await.unwrap().len(), 20);
    c.commit_async().await.unwrap().unwrap();
    assert_eq!(
        c.committed(std::slice::from_ref(&p0)).await.unwrap()[&p0],
        Some(20)
    );
    b.close().unwrap();
}

/// How [`Cutting`] shortens the records of the fetches it passes on, one way per fetch in turn.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Inside a batch's 12-byte framing (offset and length).
    Framing,
    /// Inside a batch's header, past its length and magic.
    Header,
    /// Inside a batch's records.
    Body,
    /// Exactly at the end of a batch (of the last one: not cut at all).
    Boundary,
}

/// A transport that cuts the records of every fetch response as a broker does at a size
/// limit: in the first, second or third batch of the response (or the last, if there are
/// fewer) or right after it.
/// With `corrupt`, it also flips a byte inside the first batch's records.
#[derive(Debug)]
struct Cutting {
    inner: Arc<dyn rill_log::client::Transport>,
    fetches: std::sync::atomic::AtomicUsize,
    corrupt: bool,
}

impl Cutting {
    fn new(b: &Arc<Broker>, corrupt: bool) -> Arc<Self> {
        Arc::new(Cutting {
            inner: embedded(b),
            fetches: Default::default(),
            corrupt,
        })
    }

    fn cut(&self, records: bytes::Bytes) -> bytes::Bytes {
        const WAYS: [Cut; 4] = [Cut::Framing, Cut::Header, Cut::Body, Cut::Boundary];
        let i = self
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Where each batch starts and ends.
        let spans: Vec<(usize, usize)> = rill_log::record::batch::FramedIter::new(&records)
            .map(|b| b.expect("the broker serves whole batches"))
            .map(|(h, _, at)| (at, at + h.total_bytes()))
            .collect();
        let Some(&(start, end)) = spans.get((i / WAYS.len()) % 3).or(spans.last()) else {
            return records;
        };
        let mut out = records.to_vec();
        if self.corrupt {
            // The first record's value, inside the CRC's span.
            let last = spans[0].1 - 1;
            out[last] ^= 0x20;
        }
        let cut = match WAYS[i % WAYS.len()] {
            Cut::Framing => start + 7,
            Cut::Header => start + 30,
            Cut::Body => start + 61 + (end - start - 61) / 2,
            Cut::Boundary => end,
        };
        out.truncate(cut);
        out.into()
    }
}

impl rill_log::client::Transport for Cutting {
    fn send(
        &self,
        request: kafka_protocol::messages::RequestKind,
    ) -> rill_log::client::transport::BoxFuture<
        '_,
        Result<Option<kafka_protocol::messages::ResponseKind>, rill_log::client::ClientError>,
    > {
        Box::pin(async move {
            let mut resp = self.inner.send(request).await?;
            if let Some(kafka_protocol::messages::ResponseKind::Fetch(f)) = resp.as_mut() {
                for p in f.responses.iter_mut().flat_map(|t| &mut t.partitions) {
                    if let Some(records) = p.records.take() {
                        p.records = Some(self.cut(records));
                    }
                }
            }
            Ok(resp)
        })
    }
}

/// Batches of 1 to 5 records, "v0".."v{n-1}", to partition 0 of `t`.
async fn produce_batches(b: &Arc<Broker>, n: usize) {
    let p = Producer::new(
        embedded(b),
        ProducerConfig {
            linger_ms: 0,
            ..Default::default()
        },
    );
    let mut i = 0;
    while i < n {
        let size = (i % 5 + 1).min(n - i);
        let records = (i..i + size).map(|j| {
            rill_log::record::NewRecord::new(Some("k"), Some(format!("v{j}")), 1000 + j as i64)
        });
        for d in p.send_to_partition("t", 0, records).await.unwrap() {
            d.await.unwrap();
        }
        i += size;
    }
    p.close().await;
}

/// A broker may cut the last batch of a fetch at its size limit (Kafka's do): the consumer
/// returns the whole batches before the cut and fetches the cut one again, so every record
/// comes out once, in order, wherever the cuts fall (in a batch's framing, header or records,
/// or exactly between batches, also when no whole batch is left).
#[tokio::test]
async fn a_batch_cut_at_the_end_of_a_fetch_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    let n = 120;
    produce_batches(&b, n).await;
    let cutting = Cutting::new(&b, false);
    let mut c = Consumer::new(
        cutting.clone(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 10,
            ..Default::default()
        },
    );
    let tp = TopicPartition::new("t", 0);
    c.assign([tp.clone()]);
    let mut seen = Vec::new();
    while seen.len() < n && cutting.fetches.load(std::sync::atomic::Ordering::SeqCst) < 1000 {
        for r in c.poll().await.expect("a cut batch is not an error") {
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            seen.push((r.offset, value));
        }
    }
    let want: Vec<(i64, String)> = (0..n).map(|i| (i as i64, format!("v{i}"))).collect();
    assert_eq!(seen, want);
    assert_eq!(c.position(&tp), Some(n as i64));
    // Every way of cutting was met more than once.
    assert!(cutting.fetches.load(std::sync::atomic::Ordering::SeqCst) > 20);
}

/// A complete batch whose CRC does not match is corrupt, not cut: `poll` fails.
#[tokio::test]
async fn a_complete_batch_with_a_bad_crc_is_still_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 1, &[])
        .await
        .unwrap();
    produce_batches(&b, 20).await;
    let mut c = Consumer::new(
        Cutting::new(&b, true),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 10,
            ..Default::default()
        },
    );
    c.assign([TopicPartition::new("t", 0)]);
    // Whatever the cut (the first fetches cut the first batch itself, which hides the
    // flipped byte), a fetch holding the whole first batch fails.
    let mut failed = None;
    for _ in 0..10 {
        match c.poll().await {
            Ok(records) => assert!(records.is_empty(), "records of a corrupt batch"),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let e = failed.expect("a corrupt batch fails poll");
    assert!(e.to_string().contains("CRC32C mismatch"), "{e}");
}

/// Produces `n` records of 1 KiB each (`c` repeated) to `partition`, in batches of 16 KiB.
async fn produce_big(b: &Arc<Broker>, partition: i32, n: usize, c: char) {
    let value = c.to_string().repeat(1024);
    produce_values(b, partition, n, ProducerConfig::default(), |_| {
        value.clone()
    })
    .await;
}

/// The consumer sends its next fetch while it hands out the last one's records (Kafka's
/// pre-fetch): a backlog read in many small fetches comes out whole and in order, and a
/// seek or a pause made while a pre-fetch is out is obeyed (the pre-fetch is dropped).
#[tokio::test]
async fn prefetched_records_never_outlive_a_seek_or_a_pause() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path());
    Admin::new(embedded(&b))
        .create_topic("t", 2, &[])
        .await
        .unwrap();
    produce_big(&b, 0, 300, 'a').await;
    produce_big(&b, 1, 300, 'b').await;
    // Fetches of 64 KiB (the least that is followed by a pre-fetch) and small polls: many
    // pre-fetches.
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        max_poll_records: 7,
        max_partition_fetch_bytes: 64 * 1024,
        fetch_max_wait_ms: 10,
        ..Default::default()
    };
    let mut c = Consumer::new(embedded(&b), config.clone());
    c.assign([TopicPartition::new("t", 0), TopicPartition::new("t", 1)]);
    let mut all = Vec::new();
    for _ in 0..1_000 {
        all.extend(
            c.poll()
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.partition, r.offset)),
        );
        if all.len() >= 600 {
            break;
        }
    }
    for p in 0..2 {
        let offsets: Vec<i64> = all.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
        assert_eq!(offsets, (0..300).collect::<Vec<_>>(), "partition {p}");
    }
    // A seek while a pre-fetch is out: the next records come from the seek's offset.
    let mut c = Consumer::new(embedded(&b), config.clone());
    let t0 = TopicPartition::new("t", 0);
    c.assign([t0.clone()]);
    let first = c.poll().await.unwrap();
    assert_eq!(first.first().map(|r| r.offset), Some(0));
    c.seek(&t0, 250).unwrap();
    let after = c.poll().await.unwrap();
    assert_eq!(after.first().map(|r| r.offset), Some(250), "{after:?}");
    // A pause while a pre-fetch is out: nothing more from the paused partition.
    let mut c = Consumer::new(embedded(&b), config);
    let t1 = TopicPartition::new("t", 1);
    c.assign([t0.clone(), t1.clone()]);
    let mut seen = Vec::new();
    while seen.is_empty() {
        seen = c.poll().await.unwrap();
    }
    c.pause(std::slice::from_ref(&t1)).unwrap();
    for _ in 0..20 {
        let got = c.poll().await.unwrap();
        assert!(
            got.iter().all(|r| r.partition == 0),
            "records of a paused partition"
        );
    }
    b.close().unwrap();
}
