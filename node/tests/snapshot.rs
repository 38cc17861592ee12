//! `SnapshotSave` and `--restore`: a saved state restored into a new
//! one-member cluster keeps its CA (fingerprint), its tokens and its data.

mod common;
use common::{call, connect, var};
use std::net::SocketAddr;

use cairn_node::NodeConfig;
use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc::{self, RpcError, Session};
use cairn_protocol::types::{ConfigScope, ConfigVar};

async fn get_all(s: &Session) -> Vec<(String, String)> {
    match call(
        s,
        ClientRequest::ListConfig {
            scope: Some(ConfigScope::Project("p".into())),
        },
    )
    .await
    {
        ClientResponse::Config(vars) => vars.into_iter().map(|v| (v.name, v.value)).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

const BIG_VARS: usize = 80;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restores_into_a_new_cluster() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let a = cairn_node::start(NodeConfig::new(dir_a.path(), any_port()))
        .await
        .expect("node A");
    let ca = a.ca_fingerprint.clone();
    let boot = a.bootstrap_token.clone().expect("bootstrap token");
    let user = common::user_token(a.addr, &ca, &boot).await;

    let s = connect(a.addr, &ca, &user).await.expect("user connects");
    for (k, v) in [("a", "1"), ("b", "2")] {
        let r = call(&s, ClientRequest::SetConfig { var: var(k, v) }).await;
        assert_eq!(r, ClientResponse::Ok);
    }
    // Over 5 MiB of state: the answer takes more than one chunk. (One app
    // each: an app's environment is limited to 512 KiB.)
    let big = "x".repeat(64 * 1024);
    for i in 0..BIG_VARS {
        let var = ConfigVar {
            scope: ConfigScope::App {
                project: "big".into(),
                app: format!("a{i}"),
            },
            name: format!("v{i}"),
            value: big.clone(),
            secret: false,
        };
        assert_eq!(
            call(&s, ClientRequest::SetConfig { var }).await,
            ClientResponse::Ok
        );
    }
    let bytes = rpc::snapshot_save(&s.conn).await.expect("snapshot save");
    assert!(bytes.len() > cairn_protocol::api::SNAPSHOT_CHUNK);
    // A versioned file: magic, format version, then the state.
    assert_eq!(&bytes[..8], b"CAIRNSNP");
    assert_eq!(
        bytes[8..12],
        cairn_node::raft::SNAPSHOT_FILE_VERSION.to_le_bytes()
    );
    // Only a user may save one (it holds the CA key).
    let ClientResponse::Token { token: joiner } = call(
        &s,
        ClientRequest::CreateToken {
            scope: cairn_protocol::types::TokenScope::Join,
            name: "r".into(),
            ttl_s: None,
        },
    )
    .await
    else {
        panic!("no join token")
    };
    let r = connect(a.addr, &ca, &joiner)
        .await
        .expect("joiner connects");
    assert!(matches!(
        rpc::snapshot_save(&r.conn).await,
        Err(RpcError::Remote(_))
    ));
    r.conn.close(0u32.into(), b"bye");
    s.conn.close(0u32.into(), b"bye");
    assert!(!bytes.is_empty());

    let dir_x = tempfile::tempdir().expect("tempdir");
    let file = dir_x.path().join("cluster.snap");
    cairn_node::identity::write_atomic(&file, &bytes, true).expect("write snapshot");
    a.stop().await;

    let dir_b = tempfile::tempdir().expect("tempdir");
    let mut cfg = NodeConfig::new(dir_b.path().join("data"), any_port());
    cfg.restore = Some(file.clone());
    let b = cairn_node::start(cfg.clone()).await.expect("restored node");
    assert_eq!(b.ca_fingerprint, ca, "the CA survives the restore");
    assert!(
        b.ctx.raft.metrics().snapshot.is_some(),
        "the restore entry is compacted into a snapshot"
    );
    assert!(
        b.bootstrap_token.is_none(),
        "a restored cluster has its tokens already"
    );

    let s = connect(b.addr, &ca, &user)
        .await
        .expect("the old user token authenticates");
    assert_eq!(
        get_all(&s).await,
        vec![("a".to_string(), "1".to_string()), ("b".into(), "2".into())]
    );
    match call(&s, ClientRequest::ListConfig { scope: None }).await {
        ClientResponse::Config(vars) => assert_eq!(
            vars.iter().filter(|v| v.scope.project() == "big").count(),
            BIG_VARS
        ),
        other => panic!("unexpected {other:?}"),
    }
    let r = call(&s, ClientRequest::SetConfig { var: var("c", "3") }).await;
    assert_eq!(r, ClientResponse::Ok, "a new write works");
    assert_eq!(get_all(&s).await.len(), 3);
    s.conn.close(0u32.into(), b"bye");

    // Restarting the restored node (with --restore still given) keeps its
    // state instead of restoring again.
    cfg.listen = b.addr;
    b.stop().await;
    let b = loop {
        match cairn_node::start(cfg.clone()).await {
            Ok(n) => break n,
            Err(cairn_node::NodeError::Bind { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("restart failed: {e}"),
        }
    };
    let s = connect(b.addr, &ca, &user).await.expect("user connects");
    assert_eq!(get_all(&s).await.len(), 3, "the restart kept the new write");
    s.conn.close(0u32.into(), b"bye");
    b.stop().await;
}

/// Start a node restoring from a file holding `bytes`; the error it fails with.
fn restore_error(bytes: &[u8]) -> (std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.snap");
    std::fs::write(&file, bytes).expect("write");
    let mut cfg = NodeConfig::new(dir.path().join("data"), any_port());
    cfg.restore = Some(file.clone());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let msg = match rt.block_on(cairn_node::start(cfg)) {
        Err(e @ cairn_node::NodeError::Restore { .. }) => e.to_string(),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("started from {bytes:?}"),
    };
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        msg.contains(&file.display().to_string()),
        "names the file: {msg}"
    );
    assert!(
        !dir.path().join("data").join("node.json").exists(),
        "no identity created for a refused restore"
    );
    (file, msg)
}

/// A state with a cluster CA, as a restorable snapshot holds.
fn restorable_state() -> cairn_node::state::State {
    let ca = cairn_protocol::pki::Ca::generate("test").expect("ca");
    cairn_node::state::State {
        cluster_ca: Some(cairn_node::state::ClusterCa {
            cert_pem: ca.cert_pem.clone(),
            key_pem: ca.key_pem().to_string(),
        }),
        ..Default::default()
    }
}

#[test]
fn garbage_is_not_a_snapshot() {
    let (_, msg) = restore_error(b"not a snapshot");
    assert!(msg.contains("not a Cairn snapshot file"), "{msg}");
    // The state without the header (what saves wrote before format versions).
    let legacy = bincode::serde::encode_to_vec(restorable_state(), bincode::config::standard())
        .expect("encode");
    let (_, msg) = restore_error(&legacy);
    assert!(msg.contains("not a Cairn snapshot file"), "{msg}");
}

#[test]
fn a_snapshot_of_another_format_version_is_refused() {
    let mut bytes = cairn_node::raft::encode_snapshot_file(&restorable_state()).expect("encode");
    // The same bytes restore (the state is fine) …
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ok.snap");
    std::fs::write(&file, &bytes).expect("write");
    let mut cfg = NodeConfig::new(dir.path().join("data"), any_port());
    cfg.restore = Some(file);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let n = cairn_node::start(cfg).await.expect("restores");
        n.stop().await;
    });
    // … but not when they claim a future format version.
    let future = cairn_node::raft::SNAPSHOT_FILE_VERSION + 1;
    bytes[8..12].copy_from_slice(&future.to_le_bytes());
    let (_, msg) = restore_error(&bytes);
    assert!(
        msg.contains(&format!("version {future}"))
            && msg.contains(&format!(
                "reads versions {} to {}",
                cairn_node::raft::OLDEST_SNAPSHOT_FILE_VERSION,
                cairn_node::raft::SNAPSHOT_FILE_VERSION
            )),
        "{msg}"
    );
}

/// What `cairn-node --restore` prints for a file of another version: one
/// line on stderr naming the file and both versions, and a failure status.
#[test]
fn cairn_node_refuses_another_version_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("future.snap");
    let mut bytes = b"CAIRNSNP".to_vec();
    bytes.extend_from_slice(&99u32.to_le_bytes());
    bytes.extend_from_slice(b"whatever a future version holds");
    std::fs::write(&file, &bytes).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn-node"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--restore"])
        .arg(&file)
        .env_remove("CAIRN_DATA_DIR")
        .output()
        .expect("cairn-node");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert_eq!(
        lines[0],
        format!(
            "cairn-node: cannot restore from {}: snapshot file format version 99, but this cairn-node reads versions {} to {} (a newer release wrote it: restore it with that release or newer)",
            file.display(),
            cairn_node::raft::OLDEST_SNAPSHOT_FILE_VERSION,
            cairn_node::raft::SNAPSHOT_FILE_VERSION
        )
    );
}
