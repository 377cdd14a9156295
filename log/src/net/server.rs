//! The TCP server: accepts connections and answers Kafka requests with the [`Broker`].
//!
//! Each connection handles one request at a time, in the order they came, so responses leave
//! in request order (as Kafka's broker, which mutes a connection while a request is in
//! hand). Unlike Kafka, it reads up to a few requests ahead while one is handled, so a
//! producer's pipelined batches are copied off the socket while the batch before is appended. Everything a peer controls is
//! bounded: the frame size (`socket.request.max.bytes`), the bytes of requests held at once
//! across connections (`queued.max.request.bytes`), the time a started frame may take to
//! arrive (a slow client cannot pin memory forever), idle connections
//! (`connections.max.idle.ms`), the number of connections (`max.connections`), and the array
//! elements a request may declare (checked by [`super::schema`] before decoding). A
//! connection that breaks a rule is closed with a log line; everyone else is unaffected.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::frame::{
    finish_frame, parse_header, read_body, set_aside, split_frame, start_response, RequestHeader,
};
use super::schema;
use super::versions::{api_versions_response, fit_response, supported};
use crate::broker::{Broker, BrokerError, RequestContext};

/// Server limits, under Kafka's broker config names where Kafka has one.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `socket.request.max.bytes`: the largest request frame accepted.
    pub socket_request_max_bytes: usize,
    /// `queued.max.request.bytes`: request bytes held (being read or handled) across all
    /// connections; a connection waits for room before reading a frame's body. At least
    /// `socket.request.max.bytes` (see [`ServerConfig::validate`]).
    pub queued_max_request_bytes: usize,
    /// `connections.max.idle.ms`: a connection with no request for this long is closed.
    pub connections_max_idle_ms: u64,
    /// Once a frame's length has arrived, the rest must arrive within this (rill's guard
    /// against slow clients holding memory).
    pub request_read_timeout_ms: u64,
    /// `max.connections`: connections beyond this are closed at once.
    pub max_connections: usize,
    /// The most array elements one request may declare, all arrays together.
    pub max_request_elements: usize,
    /// On shutdown, how long in-flight requests get to finish before their connections are
    /// dropped.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket_request_max_bytes: 104_857_600,
            queued_max_request_bytes: 512 << 20,
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
            max_connections: 1_000,
            max_request_elements: 1 << 20,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl ServerConfig {
    /// Refuses limits that cannot work together: a frame larger than the whole request
    /// budget would wait for room forever.
    pub fn validate(&self) -> Result<(), crate::storage::ConfigError> {
        if self.queued_max_request_bytes < self.socket_request_max_bytes {
            return Err(crate::storage::ConfigError::InvalidValue {
                key: "queued.max.request.bytes".into(),
                value: self.queued_max_request_bytes.to_string(),
                reason: format!(
                    "must be at least socket.request.max.bytes ({}), or a request that large \
                     waits forever",
                    self.socket_request_max_bytes
                ),
            });
        }
        Ok(())
    }
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    broker: Arc<Broker>,
    config: ServerConfig,
    memory: Arc<Semaphore>,
}

impl Server {
    /// Serves `listener` with `broker` until [`Server::shutdown`]. Needs a tokio runtime.
    pub fn start(listener: TcpListener, broker: Arc<Broker>, config: ServerConfig) -> Server {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            memory: Arc::new(Semaphore::new(config.queued_max_request_bytes.max(1))),
            broker,
            config,
        });
        let accept = tokio::spawn(accept_loop(listener, shared, stopped));
        Server { addr, stop, accept }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets every connection finish the request it is handling (up to
    /// `shutdown_grace_ms`), then closes them all. The broker stays open: close it after.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.accept.await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= shared.config.max_connections {
                        tracing::warn!(%peer, limit = shared.config.max_connections, "max.connections reached; closing the new connection");
                        drop(stream);
                        continue;
                    }
                    connections.spawn(serve_connection(stream, peer, Arc::clone(&shared), stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let grace = Duration::from_millis(shared.config.shutdown_grace_ms);
    if tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "connections still busy after the shutdown grace; dropping them"
        );
        connections.shutdown().await;
    }
}

/// Why a connection ends.
enum Close {
    /// The peer went away, idled out, or the server is stopping: nothing to report.
    Quiet,
    /// The peer broke a rule or sent something unreadable.
    Refused(String),
}

/// Requests of one connection read ahead of the one being handled: the socket is read
/// (copied into memory) while the request before is appended, so one producer's pipelined
/// batches keep both the network and the disk busy. Their bytes count toward
/// `queued.max.request.bytes` like any request's.
const READ_AHEAD: usize = 4;

/// What the connection's reader hands its handler.
enum Next {
    Frame(Bytes, tokio::sync::OwnedSemaphorePermit),
    /// No more requests: the peer left, broke a rule, idled out, or the server is stopping.
    End(Close),
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut wr = BufWriter::with_capacity(64 * 1024, wr);
    let idle = Duration::from_millis(shared.config.connections_max_idle_ms);
    let read_timeout = Duration::from_millis(shared.config.request_read_timeout_ms);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Next>(READ_AHEAD);
    // Requests read and not yet answered: the connection is idle only when there are none.
    let outstanding = std::sync::atomic::AtomicUsize::new(0);
    let mut reader_stop = stop.clone();
    let reader = async {
        let end = loop {
            // Between requests: wait for bytes (without taking any, so a timeout loses
            // nothing), the idle timeout, or shutdown.
            let ready = tokio::select! {
                _ = reader_stop.changed() => break Close::Quiet,
                r = tokio::time::timeout(idle, rd.fill_buf()) => r,
            };
            match ready {
                Err(_) if outstanding.load(Ordering::Relaxed) > 0 => continue,
                Err(_) => break Close::Quiet,
                Ok(Err(_)) => break Close::Quiet,
                Ok(Ok([])) => break Close::Quiet,
                Ok(Ok(_)) => {}
            }
            let read = tokio::time::timeout(read_timeout, async {
                let len = rd.read_i32().await.map_err(|_| Close::Quiet)?;
                if len <= 0 || len as usize > shared.config.socket_request_max_bytes {
                    return Err(Close::Refused(format!(
                        "frame of {len} bytes (socket.request.max.bytes is {})",
                        shared.config.socket_request_max_bytes
                    )));
                }
                let len = len as usize;
                let permit = Arc::clone(&shared.memory)
                    .acquire_many_owned(len as u32)
                    .await
                    .map_err(|_| Close::Quiet)?;
                let frame = read_body(&mut rd, len).await.map_err(|_| Close::Quiet)?;
                Ok((frame, permit))
            })
            .await;
            let (frame, permit) = match read {
                Ok(Ok(f)) => f,
                Ok(Err(close)) => break close,
                Err(_) => {
                    break Close::Refused(format!(
                        "a request did not arrive within {} ms",
                        shared.config.request_read_timeout_ms
                    ))
                }
            };
            outstanding.fetch_add(1, Ordering::Relaxed);
            if tx.send(Next::Frame(frame, permit)).await.is_err() {
                break Close::Quiet;
            }
        };
        let _ = tx.send(Next::End(end)).await;
    };
    let handler = async {
        let mut next: Option<Next> = None;
        // Produce answers waiting for the fsync of their appends, in request order.
        let mut syncing: VecDeque<AfterSync> = VecDeque::new();
        let outcome = loop {
            let item = match next.take() {
                Some(n) => n,
                None => {
                    // While waiting for the next request, an answer whose fsync is done
                    // leaves at once.
                    let event = tokio::select! {
                        biased;
                        done = first_synced(&mut syncing), if !syncing.is_empty() => Ok(done),
                        n = rx.recv() => Err(n),
                    };
                    match event {
                        Ok(done) => {
                            if let Err(close) = write_answer(&mut wr, done).await {
                                break close;
                            }
                            if syncing.is_empty() && wr.flush().await.is_err() {
                                break Close::Quiet;
                            }
                            continue;
                        }
                        Err(Some(n)) => n,
                        Err(None) => break Close::Quiet,
                    }
                }
            };
            let (frame, _permit) = match item {
                Next::Frame(frame, permit) => (frame, permit),
                Next::End(close) => break close,
            };
            let handled = match handle_frame(&shared, peer, frame).await {
                Ok(h) => h,
                Err(reason) => break Close::Refused(reason),
            };
            outstanding.fetch_sub(1, Ordering::Relaxed);
            match handled {
                // Its answer comes later; the next request is taken meanwhile.
                Handled::AfterSync(task) => syncing.push_back(task),
                Handled::Now(response) => {
                    // Answers go in request order: those waiting on an fsync first.
                    let mut failed = None;
                    while !syncing.is_empty() {
                        let done = first_synced(&mut syncing).await;
                        if let Err(close) = write_answer(&mut wr, done).await {
                            failed = Some(close);
                            break;
                        }
                    }
                    if let Some(close) = failed {
                        break close;
                    }
                    if let Some(resp) = response {
                        if write_chunks(&mut wr, &resp).await.is_err() {
                            break Close::Quiet;
                        }
                    }
                }
            }
            // An answer goes out at once, since the next request may be one the broker
            // holds (a long-poll Fetch, a JoinGroup) and this answer must not wait behind
            // it; unless the next request is already here and is a Produce (pipelined
            // batches): then the answers leave together, one write for several.
            next = rx.try_recv().ok();
            let produce_next = matches!(&next, Some(Next::Frame(f, _)) if is_produce(f));
            if !produce_next && wr.flush().await.is_err() {
                break Close::Quiet;
            }
            // Stopping: the request in hand is answered, the ones read ahead are not.
            if *stop.borrow_and_update() {
                break Close::Quiet;
            }
        };
        // Appends already made get their answers (their fsyncs run anyway).
        while !syncing.is_empty() {
            let done = first_synced(&mut syncing).await;
            if write_answer(&mut wr, done).await.is_err() {
                break;
            }
        }
        let _ = wr.flush().await;
        outcome
    };
    tokio::pin!(reader);
    tokio::pin!(handler);
    // The handler decides when the connection ends; a reader that is done (it has sent its
    // `End`) leaves the handler to finish what was read.
    let outcome = tokio::select! {
        outcome = &mut handler => outcome,
        () = &mut reader => handler.await,
    };
    if let Close::Refused(reason) = outcome {
        tracing::warn!(%peer, %reason, "closing connection");
    }
}

/// A produce answer that leaves once the fsyncs of its appends are done.
type AfterSync = tokio::task::JoinHandle<Result<Option<Answer>, String>>;

/// An encoded response frame, as the chunks to write in order (a fetch's large records are
/// chunks of their own, not copied into the frame).
type Answer = Vec<Bytes>;

/// What a request frame came to.
enum Handled {
    /// The answer (none for a produce with acks=0), ready now.
    Now(Option<Answer>),
    /// A produce whose appends made an fsync due (`flush.messages`, `flush.ms`): the fsync
    /// runs while the connection takes its next request, and one fsync covers the appends
    /// made meanwhile (group commit); the answer leaves after it, in request order.
    AfterSync(AfterSync),
}

/// Waits for the oldest answer waiting on an fsync and takes it off the queue (cancel-safe:
/// it stays queued until it is done).
async fn first_synced(syncing: &mut VecDeque<AfterSync>) -> Result<Option<Answer>, String> {
    let done = match syncing.front_mut() {
        Some(task) => task
            .await
            .unwrap_or_else(|e| Err(format!("a produce's fsync failed: {e}"))),
        None => return Ok(None),
    };
    syncing.pop_front();
    done
}

/// Writes an answer that waited on an fsync (not flushed); `Err` ends the connection.
async fn write_answer<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    done: Result<Option<Answer>, String>,
) -> Result<(), Close> {
    match done {
        Ok(Some(resp)) => write_chunks(wr, &resp).await.map_err(|_| Close::Quiet),
        Ok(None) => Ok(()),
        Err(reason) => Err(Close::Refused(reason)),
    }
}

/// Writes an answer's chunks (buffered: small ones are gathered, large ones go straight to
/// the socket).
async fn write_chunks<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    for c in chunks {
        wr.write_all(c).await?;
    }
    Ok(())
}

/// Whether a request frame (without its length) is a Produce: its answer follows soon
/// without waiting on anyone, so the answer before it may wait for it and leave in the same
/// write.
fn is_produce(frame: &[u8]) -> bool {
    frame.get(..2) == Some(&(ApiKey::Produce as i16).to_be_bytes()[..])
}

/// What a request frame turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// A request rill handles, at a version it speaks.
    Request(RequestHeader, Box<RequestKind>),
    /// ApiVersions at a version rill does not speak: answer with the v0 error reply.
    UnsupportedApiVersions(RequestHeader),
}

/// Reads one request frame (without its length prefix): the header, the advertised-version
/// check, the bounded schema walk, then kafka-protocol's decoder. `Err` says why the frame is
/// refused; nothing a peer sends can make this panic or allocate beyond the frame's worth
/// (the `request_decoding` fuzz target drives it with arbitrary bytes).
pub fn decode_request(frame: &Bytes, max_elements: usize) -> Result<Decoded, String> {
    let (header, body_at) = parse_header(frame).map_err(|e| e.to_string())?;
    let key = ApiKey::try_from(header.api_key)
        .map_err(|_| format!("unknown API key {}", header.api_key))?;
    let version = header.api_version;
    let Some((min, max)) = supported(key) else {
        return Err(format!("{key:?} is not supported"));
    };
    if version < min || version > max {
        if key == ApiKey::ApiVersions {
            return Ok(Decoded::UnsupportedApiVersions(header));
        }
        return Err(format!(
            "{key:?} v{version} is not supported (rill speaks v{min}-v{max})"
        ));
    }
    let schema = schema::schema(header.api_key, version)
        .ok_or_else(|| format!("no schema for {key:?} v{version}"))?;
    let used = schema::walk(schema, version, &frame[body_at..], max_elements).map_err(|e| {
        // The first bytes, to make a client's encoding bug findable.
        let head: String = frame.iter().take(48).map(|b| format!("{b:02x}")).collect();
        format!(
            "{} v{version}: {e} (frame starts {head}, body at {body_at})",
            schema.name
        )
    })?;
    if body_at + used < frame.len() {
        tracing::debug!(
            api = schema.name,
            version,
            extra = frame.len() - body_at - used,
            "ignoring bytes after the request, as Kafka does"
        );
    }
    let mut body = frame.slice(body_at..);
    let request = RequestKind::decode(key, &mut body, version)
        .map_err(|e| format!("{key:?} v{version} does not decode: {e}"))?;
    Ok(Decoded::Request(header, Box::new(request)))
}

/// One request frame in, at most one response frame out (now or after an fsync); `Err`
/// closes the connection.
async fn handle_frame(shared: &Shared, peer: SocketAddr, frame: Bytes) -> Result<Handled, String> {
    let decoded = decode_request(&frame, shared.config.max_request_elements)?;
    // The request's byte fields are slices of the frame: with the frame gone, a produce
    // request's records are the only holder of their bytes and are rewritten in place.
    drop(frame);
    let (header, request) = match decoded {
        Decoded::Request(header, request) => (header, *request),
        Decoded::UnsupportedApiVersions(header) => {
            // KIP-511: answer in v0 with UNSUPPORTED_VERSION and our ranges, so the client
            // can retry with a version we speak.
            let resp = ResponseKind::ApiVersions(api_versions_response(Some(
                ResponseError::UnsupportedVersion,
            )));
            return encode(header.correlation_id, ApiKey::ApiVersions, 0, resp)
                .map(|r| Handled::Now(Some(r)));
        }
    };
    let key = ApiKey::try_from(header.api_key).map_err(|_| "unknown API key".to_string())?;
    let version = header.api_version;
    tracing::trace!(%peer, api = ?key, version, correlation = header.correlation_id, client = ?header.client_id, "request");
    let correlation = header.correlation_id;
    let response = match request {
        RequestKind::ApiVersions(_) => Some(ResponseKind::ApiVersions(api_versions_response(None))),
        // In a cluster, appends happen here and the wait for the in-sync replicas
        // (acks=all) runs while the connection takes its next requests; answers keep their
        // order.
        RequestKind::Produce(r) if r.acks != 0 && shared.broker.is_clustered() => {
            let timeout_ms = r.timeout_ms;
            let (resp, acks) = shared.broker.produce_appending(r);
            match resp {
                Some(mut resp) if !acks.is_empty() => {
                    let broker = Arc::clone(&shared.broker);
                    let task = tokio::spawn(async move {
                        broker.await_acks(&mut resp, acks, timeout_ms).await;
                        let mut resp = ResponseKind::Produce(resp);
                        fit_response(&mut resp, version);
                        encode(correlation, key, version, resp).map(Some)
                    });
                    return Ok(Handled::AfterSync(task));
                }
                resp => resp.map(ResponseKind::Produce),
            }
        }
        // Appends go to the page cache here; an fsync they make due runs after (off the
        // async workers) while the connection goes on.
        RequestKind::Produce(r) if r.acks != 0 => {
            let (resp, syncs) = shared.broker.produce_deferring_syncs(r);
            match resp {
                Some(mut resp) if !syncs.is_empty() => {
                    let task = tokio::spawn(async move {
                        let resp = crate::broker::off_the_workers(move || {
                            crate::broker::finish_syncs(&mut resp, syncs);
                            resp
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                        let mut resp = ResponseKind::Produce(resp);
                        fit_response(&mut resp, version);
                        encode(correlation, key, version, resp).map(Some)
                    });
                    return Ok(Handled::AfterSync(task));
                }
                resp => resp.map(ResponseKind::Produce),
            }
        }
        request => {
            let ctx = RequestContext {
                api_version: version,
                client_id: header.client_id.unwrap_or_default(),
                client_host: peer.ip().to_string(),
            };
            match shared.broker.handle_off_thread(&ctx, request).await {
                Ok(r) => r,
                Err(BrokerError::Unsupported(name)) => {
                    return Err(format!("{name} is not handled"));
                }
                Err(e) => return Err(format!("{key:?} v{version} failed: {e}")),
            }
        }
    };
    match response {
        None => Ok(Handled::Now(None)),
        Some(mut resp) => {
            fit_response(&mut resp, version);
            encode(correlation, key, version, resp).map(|r| Handled::Now(Some(r)))
        }
    }
}

fn encode(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    mut resp: ResponseKind,
) -> Result<Answer, String> {
    // A fetch's large records are written beside the frame, not copied into it.
    let mut taken = Vec::new();
    if let ResponseKind::Fetch(r) = &mut resp {
        for p in r.responses.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            set_aside(&mut p.records, &mut taken);
        }
    }
    let header_version = key.response_header_version(version);
    let mut buf = start_response(correlation_id, header_version);
    resp.encode(&mut buf, version)
        .map_err(|e| format!("cannot encode the {key:?} v{version} response: {e}"))?;
    finish_frame(&mut buf);
    // Flexible versions are the ones with a tagged-field response header.
    split_frame(buf, taken, header_version >= 1)
        .map_err(|e| format!("{key:?} v{version} response: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uvarint(out: &mut Vec<u8>, mut n: u32) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// A request frame without its length: header v1 (`key`, `version`, correlation 1, client
    /// "c"), with header v2's empty tagged section when `flexible`, then `body`.
    fn frame(key: ApiKey, version: i16, flexible: bool, body: &[u8]) -> Bytes {
        let mut f = Vec::new();
        f.extend_from_slice(&(key as i16).to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&1i32.to_be_bytes());
        f.extend_from_slice(&[0, 1, b'c']);
        if flexible {
            f.push(0);
        }
        f.extend_from_slice(body);
        Bytes::from(f)
    }

    fn refusal(frame: &Bytes, max_elements: usize) -> String {
        match decode_request(frame, max_elements) {
            Ok(d) => panic!("decoded: {d:?}"),
            Err(e) => e,
        }
    }

    /// Metadata v1 asking for `n` topics with empty names.
    fn metadata_topics(n: u32) -> Vec<u8> {
        let mut body = n.to_be_bytes().to_vec();
        body.resize(4 + 2 * n as usize, 0);
        body
    }

    /// Kafka's limit of 1,000,000 elements per array holds whatever the request-wide cap.
    #[test]
    fn an_array_of_more_than_a_million_elements_is_refused() {
        let over = frame(ApiKey::Metadata, 1, false, &metadata_topics(1_000_001));
        let e = refusal(&over, usize::MAX);
        assert!(e.contains("more than 1,000,000 elements"), "{e}");
        let schema = schema::schema(3, 1).expect("Metadata v1");
        let at = metadata_topics(1_000_000);
        assert_eq!(schema::walk(schema, 1, &at, usize::MAX), Ok(at.len()));
        // A claim of 2^31 - 1 in a few bytes.
        let mut huge = i32::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        let e = refusal(&frame(ApiKey::Metadata, 1, false, &huge), usize::MAX);
        assert!(e.contains("more than 1,000,000 elements"), "{e}");
    }

    /// Heartbeat v4 (group "g", generation 1, member "m", no instance id) with `n` unknown
    /// tagged fields.
    fn heartbeat_with_tags(n: u32) -> Vec<u8> {
        let mut b = vec![2, b'g', 0, 0, 0, 1, 2, b'm', 0];
        uvarint(&mut b, n);
        for tag in 0..n {
            uvarint(&mut b, 100 + tag);
            b.push(0);
        }
        b
    }

    #[test]
    fn only_a_produce_request_read_ahead_holds_back_a_response() {
        assert!(is_produce(&frame(ApiKey::Produce, 9, true, &[])));
        assert!(!is_produce(&frame(ApiKey::Fetch, 12, true, &[])));
        assert!(!is_produce(&[0]));
    }

    #[test]
    fn more_than_ten_thousand_tagged_fields_are_refused() {
        let over = frame(ApiKey::Heartbeat, 4, true, &heartbeat_with_tags(10_001));
        let e = refusal(&over, 1 << 20);
        assert!(e.contains("more than 10,000 tagged fields"), "{e}");
        let at = frame(ApiKey::Heartbeat, 4, true, &heartbeat_with_tags(10_000));
        let Ok(Decoded::Request(_, r)) = decode_request(&at, 1 << 20) else {
            panic!("10,000 tagged fields are allowed");
        };
        let RequestKind::Heartbeat(r) = *r else {
            panic!("not a heartbeat: {r:?}");
        };
        assert_eq!(
            (r.generation_id, r.unknown_tagged_fields.len()),
            (1, 10_000)
        );
        // In the request header too.
        let mut header = frame(ApiKey::Heartbeat, 4, false, &[]).to_vec();
        uvarint(&mut header, 10_001);
        for tag in 0..10_001 {
            uvarint(&mut header, tag);
            header.push(0);
        }
        header.extend_from_slice(&heartbeat_with_tags(0));
        let e = refusal(&Bytes::from(header), 1 << 20);
        assert!(
            e.contains("more than 10,000 tagged fields in the header"),
            "{e}"
        );
    }
}
