//! The controllers' Raft RPCs over TCP (openraft's `RaftNetwork`), framed as every request
//! on the controller listener is (`controller::rpc`), on a connection a controller keeps to
//! each peer; and [`Peer`], that connection, which brokers use to reach controllers too.

use std::io;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::MetadataRaft;
use crate::controller::rpc::{read_frame, write_frame, ControllerRequest, ControllerResponse};

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A request on the controller listener.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    AppendEntries(AppendEntriesRequest<MetadataRaft>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<MetadataRaft>),
}

/// Its answer: openraft's result, the error included.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
}

/// A connection to one peer, opened on first use and again after a failure.
#[derive(Debug)]
pub struct Peer {
    target: u64,
    addr: String,
    conn: Option<TcpStream>,
}

impl Peer {
    pub fn new(target: u64, addr: impl Into<String>) -> Self {
        Peer {
            target,
            addr: addr.into(),
            conn: None,
        }
    }

    /// One request and its response within `ttl`; any failure drops the connection.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        req: &Req,
        ttl: Duration,
    ) -> io::Result<Resp> {
        let result = tokio::time::timeout(ttl, self.exchange(req)).await;
        let result = result.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "controller RPC timed out",
            ))
        });
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn exchange<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        req: &Req,
    ) -> io::Result<Resp> {
        if self.conn.is_none() {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            self.conn = Some(stream);
        }
        let conn = self.conn.as_mut().expect("connected above");
        write_frame(conn, req).await?;
        read_frame(conn)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed"))
    }

    async fn raft_call(
        &mut self,
        req: RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftResponse, io::Error> {
        let req = ControllerRequest::Raft(req);
        match self.call(&req, option.hard_ttl()).await? {
            ControllerResponse::Raft(r) => Ok(r),
            other => Err(io::Error::other(format!("unexpected answer {other:?}"))),
        }
    }
}

/// Connects openraft to peers (openraft's `RaftNetworkFactory`).
#[derive(Debug, Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<MetadataRaft> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer::new(target, node.addr.clone())
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

/// A failed exchange: a refused or reset connection is "unreachable" (openraft backs off),
/// anything else a network error (it retries).
fn transport_error<E: std::error::Error>(
    e: io::Error,
) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::TimedOut
        | io::ErrorKind::NotConnected => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected<E: std::error::Error>(what: &str) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    RPCError::Network(NetworkError::new(&io::Error::other(format!(
        "unexpected answer to {what}"
    ))))
}

impl RaftNetwork<MetadataRaft> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MetadataRaft>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        match self
            .raft_call(RaftRequest::AppendEntries(rpc), &option)
            .await
        {
            Ok(RaftResponse::AppendEntries(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected("AppendEntries")),
            Err(e) => Err(transport_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MetadataRaft>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self
            .raft_call(RaftRequest::InstallSnapshot(rpc), &option)
            .await
        {
            Ok(RaftResponse::InstallSnapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected("InstallSnapshot")),
            Err(e) => Err(transport_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        match self.raft_call(RaftRequest::Vote(rpc), &option).await {
            Ok(RaftResponse::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected("Vote")),
            Err(e) => Err(transport_error(e)),
        }
    }
}
