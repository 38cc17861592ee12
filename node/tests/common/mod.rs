//! Client helpers shared by the node's multi-node integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

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

/// Exchange a fresh cluster's one-time bootstrap token for a user token.
pub async fn user_token(addr: SocketAddr, ca: &str, bootstrap: &str) -> String {
    let s = connect(addr, ca, bootstrap)
        .await
        .expect("bootstrap connects");
    let r = call(
        &s,
        ClientRequest::ExchangeBootstrap {
            name: "admin".into(),
        },
    )
    .await;
    s.conn.close(0u32.into(), b"bye");
    match r {
        ClientResponse::Token { token } => token,
        other => panic!("no user token: {other:?}"),
    }
}

/// Poll `f` until it returns `Some`, at most `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
