//! `Suppressed` and `BufferConfig`: what `KTable::suppress` holds back, until when, and what
//! a full buffer does.

use std::time::Duration;

use crate::options::millis;

/// What `suppress` holds back (Kafka Streams' `Suppressed`); the buffer is logged to a
/// changelog like any store, and unbounded unless a [`BufferConfig`] bounds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub(crate) limit: SuppressUntil,
    pub(crate) name: Option<String>,
    pub(crate) buffer: BufferConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SuppressUntil {
    WindowCloses,
    TimeLimit(i64),
}

/// How much a suppression buffer may hold, and what happens when it is full (Kafka Streams'
/// `BufferConfig`): emit the oldest entries early, or stop the application with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    pub(crate) max_records: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) emit_early: bool,
}

impl BufferConfig {
    /// No bound (the default).
    pub fn unbounded() -> Self {
        BufferConfig {
            max_records: None,
            max_bytes: None,
            emit_early: false,
        }
    }

    /// At most `n` keys buffered; when full, the oldest are emitted early.
    pub fn max_records(n: u64) -> Self {
        BufferConfig {
            max_records: Some(n),
            max_bytes: None,
            emit_early: true,
        }
    }

    /// At most `n` bytes of keys and values buffered; when full, the oldest are emitted
    /// early.
    pub fn max_bytes(n: u64) -> Self {
        BufferConfig {
            max_records: None,
            max_bytes: Some(n),
            emit_early: true,
        }
    }

    /// Adds a record bound to a byte bound (or the reverse).
    pub fn with_max_records(mut self, n: u64) -> Self {
        self.max_records = Some(n);
        self
    }

    pub fn with_max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }

    /// When full, emit the oldest entries before their time (not allowed with
    /// `until_window_closes`, whose results must be final).
    pub fn emit_early_when_full(mut self) -> Self {
        self.emit_early = true;
        self
    }

    /// When full, fail the stream thread (the application stops with an error).
    pub fn shut_down_when_full(mut self) -> Self {
        self.emit_early = false;
        self
    }

    pub(crate) fn full(&self, records: u64, bytes: u64) -> bool {
        self.max_records.is_some_and(|m| records > m) || self.max_bytes.is_some_and(|m| bytes > m)
    }
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig::unbounded()
    }
}

impl Suppressed {
    /// Each window's final result, once, when `window end + grace <= stream time`.
    pub fn until_window_closes() -> Self {
        Suppressed {
            limit: SuppressUntil::WindowCloses,
            name: None,
            buffer: BufferConfig::unbounded(),
        }
    }

    /// A key's latest value once stream time has passed its last update by `limit` (rate
    /// limiting).
    pub fn until_time_limit(limit: Duration) -> Self {
        Suppressed {
            limit: SuppressUntil::TimeLimit(millis(limit)),
            name: None,
            buffer: BufferConfig::unbounded(),
        }
    }

    /// Names the buffer's store (and so its changelog).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Bounds the buffer.
    pub fn with_buffer(mut self, buffer: BufferConfig) -> Self {
        self.buffer = buffer;
        self
    }
}
