//! The CLI moves to another member by itself: a three-node cluster in this
//! process, the `cairn` binary with a context naming one node; that node
//! stops; the CLI keeps working through the others.

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_node::{Node, NodeConfig};
use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::{self, Dial};
use cairn_protocol::types::TokenScope;

fn config(dir: &Path) -> NodeConfig {
    NodeConfig::new(dir, "127.0.0.1:0".parse().expect("addr"))
}

async fn user_call(addr: &str, ca: &str, token: &str, req: ClientRequest) -> ClientResponse {
    let s = rpc::connect(&Dial {
        addr: addr.to_string(),
        ca_fingerprint: ca.to_string(),
        identity: None,
        role: Role::Client,
        token: token.to_string(),
        agent: "failover-test".into(),
        limits: TransportLimits::DEFAULT,
    })
    .await
    .expect("connects");
    let r = rpc::call(&s.conn, &req).await.expect("call");
    s.conn.close(0u32.into(), b"bye");
    r
}

/// Run the `cairn` binary with its own CAIRN_HOME; (exit code, stdout, stderr, time).
async fn cairn(home: &Path, args: &[&str]) -> (i32, String, String, Duration) {
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_HOME", home)
        .env_remove("CAIRN_CONTEXT")
        .env_remove("CAIRN_LOG")
        .output()
        .await
        .expect("runs cairn");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_moves_to_another_member_when_its_node_dies() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let first = cairn_node::start(config(dirs[0].path()))
        .await
        .expect("first node");
    let ca = first.ca_fingerprint.clone();
    let a0 = first.addr.to_string();
    let boot = first.bootstrap_token.clone().expect("bootstrap token");
    let user = match user_call(
        &a0,
        &ca,
        &boot,
        ClientRequest::ExchangeBootstrap {
            name: "admin".into(),
        },
    )
    .await
    {
        ClientResponse::Token { token } => token,
        other => panic!("unexpected {other:?}"),
    };
    let mut nodes: Vec<Option<Node>> = vec![Some(first)];
    for dir in &dirs[1..] {
        let join_token = match user_call(
            &a0,
            &ca,
            &user,
            ClientRequest::CreateToken {
                scope: TokenScope::Join,
                name: "t".into(),
                ttl_s: None,
            },
        )
        .await
        {
            ClientResponse::Token { token } => token,
            other => panic!("unexpected {other:?}"),
        };
        let mut cfg = config(dir.path());
        cfg.join = Some(a0.clone());
        cfg.join_token = Some(join_token);
        cfg.join_ca = Some(ca.clone());
        nodes.push(Some(cairn_node::start(cfg).await.expect("node joins")));
    }

    let home = tempfile::tempdir().expect("home");
    let h = home.path();
    let (code, out, err, _) = cairn(
        h,
        &[
            "context",
            "create",
            "c",
            "--address",
            &a0,
            "--ca-fingerprint",
            &ca,
            "--token",
            &user,
            "--use",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    // The first command learns the other members.
    let (code, out, err, _) = cairn(h, &["server", "members"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (_, ctx_json, _, _) = cairn(h, &["context", "inspect", "c", "--json"]).await;
    let saved: serde_json::Value = serde_json::from_str(&ctx_json).expect("json");
    let members: Vec<String> = saved["members"]
        .as_array()
        .expect("members saved in the context")
        .iter()
        .filter_map(|m| m.as_str().map(String::from))
        .collect();
    assert_eq!(members.len(), 2, "{saved}");
    for n in nodes.iter().skip(1).flatten() {
        assert!(members.contains(&n.addr.to_string()), "{saved}");
    }

    // The context's node goes away (it is the leader, too).
    if let Some(n) = nodes[0].take() {
        n.stop().await;
    }
    let (code, out, err, took) = cairn(h, &["server", "members", "--json"]).await;
    assert_eq!(code, 0, "the CLI should have moved on: {out}{err}");
    let ms: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(
        ms.as_array()
            .expect("array")
            .iter()
            .any(|m| m["leader"] == true),
        "a new leader: {ms}"
    );
    eprintln!("`cairn server members` with the context's node down took {took:?}");
    let (code, out, err, _) = cairn(h, &["job", "list"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    for n in nodes.into_iter().flatten() {
        n.stop().await;
    }
}
