//! Real QUIC + TLS against an in-process node: the handshake refuses bad
//! versions, bad tokens and wrong CAs with readable reasons, never a hang.

use std::time::{Duration, Instant};

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::frame;
use cairn_protocol::handshake::{Hello, HelloReply, Role, Versions, PROTOCOL_VERSION};
use cairn_protocol::pki::{Ca, TransportLimits};
use cairn_protocol::rpc::{self, Dial, RpcError};

async fn node() -> (cairn_node::Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = cairn_node::NodeConfig::new(dir.path(), "127.0.0.1:0".parse().expect("addr"));
    (cairn_node::start(cfg).await.expect("node starts"), dir)
}

fn dial(node: &cairn_node::Node, token: &str) -> Dial {
    Dial {
        addr: node.addr.to_string(),
        ca_fingerprint: node.ca_fingerprint.clone(),
        identity: None,
        role: Role::Client,
        token: token.to_string(),
        agent: "test".into(),
        limits: TransportLimits::DEFAULT,
    }
}

async fn user_token(node: &cairn_node::Node) -> String {
    let boot = node
        .bootstrap_token
        .clone()
        .expect("first start has a bootstrap token");
    let s = rpc::connect(&dial(node, &boot))
        .await
        .expect("bootstrap connects");
    // The bootstrap token can do nothing but be exchanged.
    let denied = rpc::call(&s.conn, &ClientRequest::ListJobs { limit: 1 }).await;
    assert!(matches!(denied, Err(RpcError::Remote(m)) if m.contains("bootstrap token")));
    match rpc::call(
        &s.conn,
        &ClientRequest::ExchangeBootstrap { name: "me".into() },
    )
    .await
    {
        Ok(ClientResponse::Token { token }) => token,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn bootstrap_exchange_is_one_time_and_user_token_works() {
    let (node, _dir) = node().await;
    let boot = node.bootstrap_token.clone().expect("bootstrap token");
    let token = user_token(&node).await;
    let s = rpc::connect(&dial(&node, &token))
        .await
        .expect("user connects");
    assert_eq!(s.principal, "user:me");
    let r = rpc::call(&s.conn, &ClientRequest::ListJobs { limit: 10 })
        .await
        .expect("list");
    assert_eq!(r, ClientResponse::Jobs(vec![]));
    // The spent bootstrap token no longer authenticates.
    match rpc::connect(&dial(&node, &boot)).await {
        Err(RpcError::Refused(reason)) => assert!(reason.contains("not valid"), "{reason}"),
        other => panic!("expected refusal, got {other:?}"),
    }
    node.stop().await;
}

#[tokio::test]
async fn wrong_token_is_refused_with_a_reason() {
    let (node, _dir) = node().await;
    let started = Instant::now();
    match rpc::connect(&dial(&node, "cairn_user_nope")).await {
        Err(RpcError::Refused(reason)) => {
            assert!(reason.contains("token is not valid"), "{reason}")
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    node.stop().await;
}

/// Speak the handshake by hand: send `hello` on a fresh connection and read
/// the node's answer (bounded in time: a refusal must never hang).
async fn raw_hello(
    node: &cairn_node::Node,
    endpoint: &quinn::Endpoint,
    hello: &Hello,
) -> HelloReply {
    let conn = endpoint
        .connect_with(
            cairn_protocol::pki::client_config(
                &node.ca_fingerprint,
                None,
                Role::Client.alpn(),
                TransportLimits::DEFAULT,
            )
            .expect("client config"),
            node.addr,
            cairn_protocol::pki::NODE_SERVER_NAME,
        )
        .expect("connect")
        .await
        .expect("tls handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    frame::write(&mut send, hello).await.expect("write");
    send.finish().expect("finish");
    tokio::time::timeout(Duration::from_secs(5), frame::read_required(&mut recv))
        .await
        .expect("answered in time")
        .expect("reply")
}

#[tokio::test]
async fn versions_are_negotiated_and_a_range_without_overlap_is_refused_naming_both() {
    let (node, _dir) = node().await;
    let token = user_token(&node).await;
    let s = rpc::connect(&dial(&node, &token)).await.expect("connects");
    // This build against itself: the newest version, and the node's release.
    assert_eq!(s.node.version, PROTOCOL_VERSION);
    assert_eq!(s.node.versions, Versions::OURS);
    assert_eq!(s.node.release, cairn_protocol::VERSION);
    let endpoint = s.endpoint.clone();

    // Exactly what release 0.1.0's CLI sends: it gets the legacy answer
    // (the only one it decodes) and version 4, and its requests work.
    let legacy = Hello {
        version: 4,
        role: Role::Client,
        token: token.clone(),
        agent: "cairn 0.1.0".into(),
    };
    match raw_hello(&node, &endpoint, &legacy).await {
        HelloReply::Welcome { version, .. } => assert_eq!(version, 4),
        other => panic!("expected the legacy welcome, got {other:?}"),
    }

    // A future program that speaks 6 to 7 only: refused, naming both ranges
    // and which side to upgrade.
    let future = Hello {
        version: 6,
        role: Role::Client,
        token: token.clone(),
        agent: "cairn 0.9.0; protocol 6-7".into(),
    };
    match raw_hello(&node, &endpoint, &future).await {
        HelloReply::Refused { reason } => assert!(
            reason.contains("this node (cairn-node ")
                && reason.contains("speaks protocol versions 4 to 5")
                && reason.contains("cairn 0.9.0 speaks protocol versions 6 to 7")
                && reason.ends_with(&format!(
                    "upgrade this node (cairn-node {}) to a release that speaks version 6",
                    cairn_protocol::VERSION
                )),
            "{reason}"
        ),
        other => panic!("expected refusal, got {other:?}"),
    }
    // One that overlaps at 5: agreed on 5.
    let newer = Hello {
        version: 5,
        role: Role::Client,
        token: token.clone(),
        agent: "cairn 0.3.0; protocol 5-6".into(),
    };
    match raw_hello(&node, &endpoint, &newer).await {
        HelloReply::Agreed {
            version, versions, ..
        } => {
            assert_eq!(version, 5);
            assert_eq!(versions, Versions::OURS);
        }
        other => panic!("expected agreement on 5, got {other:?}"),
    }
    // An old one below the range.
    let ancient = Hello {
        version: 3,
        role: Role::Client,
        token,
        agent: "cairn 0.0.9".into(),
    };
    match raw_hello(&node, &endpoint, &ancient).await {
        HelloReply::Refused { reason } => assert!(
            reason.contains("cairn 0.0.9 speaks protocol version 3")
                && reason.ends_with("upgrade cairn 0.0.9 to a release that speaks version 4"),
            "{reason}"
        ),
        other => panic!("expected refusal, got {other:?}"),
    }
    node.stop().await;
}

#[tokio::test]
async fn wrong_ca_fingerprint_fails_fast() {
    let (node, _dir) = node().await;
    let other = Ca::generate("other")
        .expect("ca")
        .fingerprint()
        .expect("fp");
    let mut d = dial(&node, "whatever");
    d.ca_fingerprint = other;
    let started = Instant::now();
    match rpc::connect(&d).await {
        Err(RpcError::Unreachable { reason, .. }) => assert!(
            reason.contains("fingerprint") || reason.contains("certificate"),
            "{reason}"
        ),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    node.stop().await;
}

#[tokio::test]
async fn oversized_frame_gets_an_error_and_the_node_keeps_serving() {
    let (node, _dir) = node().await;
    let token = user_token(&node).await;
    let s = rpc::connect(&dial(&node, &token)).await.expect("connects");
    let (mut send, mut recv) = s.conn.open_bi().await.expect("stream");
    let len = (frame::MAX_FRAME_SIZE as u32) + 1;
    send.write_all(&len.to_be_bytes())
        .await
        .expect("write header");
    send.write_all(&[0u8; 64]).await.expect("write some body");
    let _ = send.finish();
    let resp: ClientResponse =
        tokio::time::timeout(Duration::from_secs(5), frame::read_required(&mut recv))
            .await
            .expect("answered in time")
            .expect("a frame");
    match resp {
        ClientResponse::Error { message } => assert!(message.contains("limit"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // Another connection is served normally.
    let s2 = rpc::connect(&dial(&node, &token))
        .await
        .expect("still serving");
    assert!(matches!(
        rpc::call(&s2.conn, &ClientRequest::ServerInfo).await,
        Ok(ClientResponse::ServerInfo(_))
    ));
    node.stop().await;
}

#[tokio::test]
async fn restart_keeps_tokens_and_does_not_bootstrap_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = cairn_node::NodeConfig::new(dir.path(), "127.0.0.1:0".parse().expect("addr"));
    let node = cairn_node::start(cfg.clone()).await.expect("start");
    let token = user_token(&node).await;
    let fp = node.ca_fingerprint.clone();
    node.stop().await;
    let node = cairn_node::start(cfg).await.expect("restart");
    assert!(node.bootstrap_token.is_none(), "bootstrap happens once");
    assert_eq!(node.ca_fingerprint, fp, "same CA after restart");
    let s = rpc::connect(&dial(&node, &token))
        .await
        .expect("token still valid");
    assert!(matches!(
        rpc::call(&s.conn, &ClientRequest::ServerInfo).await,
        Ok(ClientResponse::ServerInfo(_))
    ));
    node.stop().await;
}
