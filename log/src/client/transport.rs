//! The one seam between rill's clients and a broker: send a typed Kafka request, get the typed
//! response. The embedded transport calls an in-process [`Broker`]; the TCP transport
//! (`net::TcpTransport`) speaks the wire protocol to any Kafka-compatible broker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use tokio::sync::oneshot;

use super::ClientError;
use crate::broker::{Broker, RequestContext};

/// A boxed future, so transports can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends requests to a broker.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Sends one request; `Ok(None)` when the request gets no response (produce, acks=0).
    fn send(
        &self,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>>;

    /// [`Transport::send`], telling `written` (by sending or by dropping it) once the request
    /// is on its way: a request about the same partition sent after that reaches the broker
    /// after this one. The producer pipelines a partition's batches with it. By default that
    /// is once the response is in, which keeps the order without pipelining anything.
    fn send_ordered(
        &self,
        request: RequestKind,
        written: oneshot::Sender<()>,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(async move {
            let resp = self.send(request).await;
            drop(written);
            resp
        })
    }

    /// Sends one request to the broker with id `broker` (for requests about that broker's
    /// own state, such as DescribeLogDirs). A transport to one broker sends it there.
    fn send_to_broker(
        &self,
        broker: i32,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        let _ = broker;
        self.send(request)
    }
}

/// Typed requests handed straight to an in-process broker: no bytes, no sockets.
#[derive(Debug, Clone)]
pub struct EmbeddedTransport {
    broker: Arc<Broker>,
    ctx: RequestContext,
}

impl EmbeddedTransport {
    pub fn new(broker: Arc<Broker>, client_id: impl Into<String>) -> Self {
        EmbeddedTransport {
            broker,
            ctx: RequestContext::embedded(client_id),
        }
    }
}

impl Transport for EmbeddedTransport {
    fn send(
        &self,
        request: RequestKind,
    ) -> BoxFuture<'_, Result<Option<ResponseKind>, ClientError>> {
        Box::pin(async move { Ok(self.broker.handle(&self.ctx, request).await?) })
    }
}
