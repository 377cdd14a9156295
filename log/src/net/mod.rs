//! The Kafka wire protocol over TCP: the server in front of the [`crate::broker::Broker`]
//! and the client transport that speaks to any Kafka-compatible broker.
//!
//! - [`frame`]: length-prefixed frames and request/response headers.
//! - [`schema`]: the bounded structural check every request body (in the server) and every
//!   response body (in the client) passes before decoding.
//! - [`versions`]: the APIs and versions rill advertises, and fitting responses to old versions.
//! - [`server`]: accept loop, per-connection request handling, limits, graceful shutdown.
//! - [`client`]: [`TcpTransport`], the clients' transport over TCP.

pub mod client;
pub mod frame;
pub mod schema;
mod schema_responses;
mod schema_tables;
pub mod server;
pub mod versions;

pub use client::{decode_response, BadResponse, TcpConfig, TcpTransport};
pub use server::{decode_request, Decoded, Server, ServerConfig};
