//! Client helpers shared by the node's multi-node integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::{self, Dial, RpcError, Session};
use cairn_protocol::types::{ConfigScope, ConfigVar};

/// Dial `addr` as a client with `token`, pinning the CA `ca`.
pub async fn connect(addr: SocketAddr, ca: &str, token: &str) -> Result<Session, RpcError> {
    rpc::connect(&Dial {
        addr: addr.to_string(),
        ca_fingerprint: ca.to_string(),
        identity: None,
        role: Role::Client,
        token: token.to_string(),
        agent: "node-test".into(),
        limits: TransportLimits::DEFAULT,
    })
    .await
}

/// One call that must succeed.
pub async fn call(s: &Session, req: ClientRequest) -> ClientResponse {
    match rpc::call(&s.conn, &req).await {
        Ok(r) => r,
        Err(e) => panic!("{req:?} failed: {e}"),
    }
}

/// A project-scoped config variable.
pub fn var(name: &str, value: &str) -> ConfigVar {
    ConfigVar {
        scope: ConfigScope::Project("p".into()),
        name: name.into(),
        value: value.into(),
        secret: false,
    }
}
