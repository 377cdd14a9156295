//! Choosing a record's partition the way Kafka's Java client does: murmur2 of the key bytes
//! (the same partition for the same key and partition count), and sticky partitioning for
//! records without a key (KIP-480: stay on one partition until its batch is sent, then move).

use std::collections::HashMap;
use std::sync::Mutex;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on MIN).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition Kafka's default partitioner gives a keyed record.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 1 {
        // Any hash lands here: no need to compute it (a topic of one partition is common:
        // changelogs, outputs of small jobs).
        return 0;
    }
    to_positive(murmur2(key)) % partitions
}

/// Picks the partition of a record. Implement it for custom placement.
pub trait Partitioner: Send + Sync + std::fmt::Debug {
    /// The partition of a record of `topic` with `key`, among `partitions` (>= 1).
    fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: i32) -> i32;

    /// Told when the batch a keyless record went to was closed, so a sticky partitioner can
    /// move on. `prev` is the partition whose batch closed.
    fn on_new_batch(&self, _topic: &str, _prev: i32, _partitions: i32) {}
}

/// Kafka's default: murmur2 for keys, sticky for null keys.
#[derive(Debug)]
pub struct DefaultPartitioner {
    sticky: Mutex<HashMap<String, i32>>,
    rng: Mutex<u64>,
}

impl DefaultPartitioner {
    /// `seed` drives the choice of sticky partitions (fixed in tests and simulations).
    pub fn new(seed: u64) -> Self {
        DefaultPartitioner {
            sticky: Mutex::new(HashMap::new()),
            rng: Mutex::new(seed | 1),
        }
    }

    fn random(&self, below: i32) -> i32 {
        let mut x = crate::sync::plain(&self.rng);
        // xorshift64*
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r % below.max(1) as u64) as i32
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: i32) -> i32 {
        if let Some(key) = key {
            return partition_for_key(key, partitions);
        }
        let mut sticky = crate::sync::plain(&self.sticky);
        match sticky.get(topic) {
            Some(p) if *p < partitions => *p,
            _ => {
                let p = self.random(partitions);
                sticky.insert(topic.to_string(), p);
                p
            }
        }
    }

    fn on_new_batch(&self, topic: &str, prev: i32, partitions: i32) {
        let mut sticky = crate::sync::plain(&self.sticky);
        if sticky.get(topic) != Some(&prev) {
            return;
        }
        // Move to another partition (any other, uniformly), as KIP-480 does.
        let next = if partitions <= 1 {
            0
        } else {
            let r = self.random(partitions - 1);
            if r >= prev {
                r + 1
            } else {
                r
            }
        };
        sticky.insert(topic.to_string(), next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_client() {
        // Vectors from Kafka's own tests (UtilsTest) and ports that check against it.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), *want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn keyed_records_land_where_kafka_puts_them() {
        // toPositive(-790332482) % 10 = 1357151166 % 10.
        assert_eq!(partition_for_key(b"foobar", 10), 6);
        assert_eq!(partition_for_key(b"abc", 7), 479_470_107 % 7);
        assert_eq!(to_positive(i32::MIN), 0);
        let p = DefaultPartitioner::new(1);
        for _ in 0..3 {
            assert_eq!(p.partition("t", Some(b"foobar"), 10), 6);
        }
    }

    #[test]
    fn keyless_records_stick_until_the_batch_closes() {
        let p = DefaultPartitioner::new(42);
        let first = p.partition("t", None, 8);
        for _ in 0..100 {
            assert_eq!(p.partition("t", None, 8), first);
        }
        p.on_new_batch("t", first, 8);
        let second = p.partition("t", None, 8);
        assert_ne!(second, first);
        // A stale notification (for a partition no longer sticky) changes nothing.
        p.on_new_batch("t", first, 8);
        assert_eq!(p.partition("t", None, 8), second);
        // Over many batches every partition is used.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let cur = p.partition("t", None, 8);
            seen.insert(cur);
            p.on_new_batch("t", cur, 8);
        }
        assert_eq!(seen.len(), 8);
    }
}
