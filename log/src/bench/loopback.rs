//! The machine's own limits, measured in the same run as the TCP benches they are baselines
//! for: a plain socket blast over loopback (throughput), a ping-pong of one size (latency),
//! writes into the page cache, and append + fdatasync of one size (durable writes).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::BenchError;

/// A latency histogram in microseconds, 1 us to 60 s at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// A connected loopback pair: (client side, server side).
fn pair() -> Result<(TcpStream, TcpStream), BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

/// Bytes per second one thread can push through loopback TCP to another, writing `chunk`
/// bytes at a time (the size of the requests it stands for) for `budget`.
pub fn blast(chunk: usize, budget: Duration) -> Result<f64, BenchError> {
    let (mut tx, mut rx) = pair()?;
    let chunk = chunk.clamp(1, 8 << 20);
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            let n = rx.read(&mut buf)?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        Ok((total, first.map_or(Duration::ZERO, |f| f.elapsed())))
    });
    let data = vec![0x5au8; chunk];
    let start = Instant::now();
    while start.elapsed() < budget {
        tx.write_all(&data)?;
    }
    drop(tx);
    let (total, elapsed) = reader
        .join()
        .map_err(|_| BenchError::Client("the loopback reader panicked".into()))??;
    Ok(total as f64 / elapsed.as_secs_f64().max(1e-9))
}

/// Round trips of `size` bytes each way between two threads over loopback TCP, `count`
/// times (or until `budget`), as a latency histogram in microseconds.
pub fn ping_pong(size: usize, count: u64, budget: Duration) -> Result<Histogram<u64>, BenchError> {
    let (mut client, mut server) = pair()?;
    let size = size.max(1);
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; size];
        loop {
            match server.read_exact(&mut buf) {
                Ok(()) => server.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut hist = latency_histogram();
    let out = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let start = Instant::now();
    for _ in 0..count.max(1) {
        if start.elapsed() >= budget {
            break;
        }
        let t = Instant::now();
        client.write_all(&out)?;
        client.read_exact(&mut back)?;
        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
    }
    drop(client);
    echo.join()
        .map_err(|_| BenchError::Client("the loopback echo panicked".into()))??;
    Ok(hist)
}

/// Bytes per second of `write` (into the page cache, as the broker's appends go) of `chunk`
/// bytes at a time to a new file in `dir`, for `budget` (at most 512 MiB); the file is removed
/// afterwards. On a virtual machine, writing into memory the guest has not touched before
/// can cost several times more than into memory it has: this is that machine's figure now.
pub fn file_write_limit(dir: &Path, chunk: usize, budget: Duration) -> Result<f64, BenchError> {
    write_limit(dir, chunk, budget, false)
}

/// Bytes per second of `write` + `fdatasync` of `chunk` bytes at a time to a new file in
/// `dir`, for `budget` (at most 512 MiB); the file is removed afterwards.
pub fn fdatasync_limit(dir: &Path, chunk: usize, budget: Duration) -> Result<f64, BenchError> {
    write_limit(dir, chunk, budget, true)
}

fn write_limit(dir: &Path, chunk: usize, budget: Duration, sync: bool) -> Result<f64, BenchError> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("write-baseline-{}", std::process::id()));
    let data = vec![0x5au8; chunk.max(1)];
    // The storage bench's raw-file phase: a new file, removed afterwards.
    let t = super::baseline_write_phase(&path, &data, 0, budget, sync)?;
    Ok(t.bytes as f64 / t.elapsed.as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_baselines_measure_something() {
        let rate = blast(64 * 1024, Duration::from_millis(100)).unwrap();
        assert!(rate > 1e6, "{rate} B/s over loopback");
        let h = ping_pong(100, 200, Duration::from_secs(5)).unwrap();
        assert_eq!(h.len(), 200);
        assert!(h.value_at_quantile(0.5) >= 1);
        let dir = tempfile::tempdir().unwrap();
        let rate = fdatasync_limit(dir.path(), 4096, Duration::from_millis(50)).unwrap();
        assert!(rate > 0.0);
        let rate = file_write_limit(dir.path(), 65536, Duration::from_millis(50)).unwrap();
        assert!(rate > 1e6, "{rate} B/s");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
