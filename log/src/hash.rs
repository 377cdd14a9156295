//! A fast hash for maps of short keys that come from the process itself, not from the
//! network (SipHash, std's default, costs more than the lookup it serves on a per-record path).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-rotate hash taking eight bytes a step (as rustc's FxHash does), for maps whose
/// keys the process chooses itself (store keys a task's own operators wrote, the topics a
/// producer writes to): they are short, and SipHash's DoS resistance buys nothing there.
/// Fixed (unseeded), so a hashed map iterates in the same order on every run.
#[derive(Debug, Default)]
pub struct FastHash(u64);

impl FastHash {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FastHash {
    fn finish(&self) -> u64 {
        // The high bits mix best; hashbrown takes its control bits from the top.
        self.0.rotate_left(20)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// A `HashMap` hashing with [`FastHash`].
pub type FastHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHash>>;
