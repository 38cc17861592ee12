//! A minimal native etcd v3 gRPC client: the few etcdserverpb messages the
//! bench needs, written by hand with prost's derive (field numbers from
//! etcd's api/etcdserverpb/rpc.proto), sent with tonic's generic unary call.
//! No protoc, no build script.

use std::time::Duration;

use anyhow::Context as _;
use tonic::codec::ProstCodec;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub lease: i64,
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
    #[prost(bool, tag = "5")]
    pub ignore_value: bool,
    #[prost(bool, tag = "6")]
    pub ignore_lease: bool,
}

/// `prev_kv` (field 2) is never asked for, so it is left out (prost skips
/// unknown fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(int64, tag = "3")]
    pub db_size: i64,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
    #[prost(uint64, tag = "5")]
    pub raft_index: u64,
    #[prost(uint64, tag = "6")]
    pub raft_term: u64,
    #[prost(uint64, tag = "7")]
    pub raft_applied_index: u64,
    #[prost(string, repeated, tag = "8")]
    pub errors: Vec<String>,
}

/// One HTTP/2 connection to one etcd member (a tonic channel reconnects by
/// itself after a failure).
#[derive(Clone)]
pub struct EtcdConn {
    ch: Channel,
}

impl EtcdConn {
    /// Connect now (fails if the member does not accept connections).
    pub async fn connect(addr: &str) -> anyhow::Result<EtcdConn> {
        let ch = endpoint(addr)?
            .connect()
            .await
            .with_context(|| format!("connecting to etcd at {addr}"))?;
        Ok(EtcdConn { ch })
    }

    /// A channel that connects on first use (and reconnects after failures).
    pub fn lazy(addr: &str) -> anyhow::Result<EtcdConn> {
        Ok(EtcdConn {
            ch: endpoint(addr)?.connect_lazy(),
        })
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> anyhow::Result<PutResponse> {
        self.unary(
            "/etcdserverpb.KV/Put",
            PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn status(&self) -> anyhow::Result<StatusResponse> {
        self.unary("/etcdserverpb.Maintenance/Status", StatusRequest {})
            .await
    }

    async fn unary<Req, Resp>(&self, path: &'static str, req: Req) -> anyhow::Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.ch.clone());
        grpc.ready()
            .await
            .map_err(|e| anyhow::anyhow!("etcd channel not ready: {e}"))?;
        let codec = ProstCodec::<Req, Resp>::default();
        let r = grpc
            .unary(
                tonic::Request::new(req),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map_err(|s| anyhow::anyhow!("etcd {path}: {:?}: {}", s.code(), s.message()))?;
        Ok(r.into_inner())
    }
}

fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2)))
}
