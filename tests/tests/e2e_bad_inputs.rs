//! Bad inputs fail fast, with a one-line error that says where, and record
//! nothing as a success.

use std::path::Path;
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::frame::{self, MAX_FRAME_SIZE};
use cairn_protocol::rpc;
use cairn_tests::{hello_app, json, write_app, Cli, NodeProc, Output};

/// Nothing was queued or recorded on the node `cli` talks to.
#[track_caller]
fn nothing_recorded(cli: &Cli) {
    let jobs = cli.json(&["job", "list"]);
    assert!(json::items(&jobs).is_empty(), "no job expected: {jobs}");
    for l in [
        &["artifact", "list"][..],
        &["artifact", "pushed"],
        &["deployment", "list"],
        &["release", "list"],
    ] {
        let ops = cli.json(l);
        assert!(
            json::items(&ops).is_empty(),
            "`{l:?}` should be empty: {ops}"
        );
    }
}

/// The single stderr line, without the `error: ` prefix.
#[track_caller]
fn one_line_error(out: &Output) -> String {
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "one-line error expected: {out}");
    lines[0]
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("error line starts with `error: `: {out}"))
        .to_string()
}

/// `msg` starts with `FILE:LINE:COL:`; returns (LINE, COL, rest).
#[track_caller]
fn located(msg: &str, file: &Path) -> (u32, u32, String) {
    let prefix = format!("{}:", file.display());
    let rest = msg
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("error should start with {prefix}LINE:COL: — got {msg}"));
    let mut parts = rest.splitn(3, ':');
    let line = parts.next().and_then(|l| l.parse().ok());
    let col = parts.next().and_then(|c| c.parse().ok());
    match (line, col, parts.next()) {
        (Some(l), Some(c), Some(rest)) => (l, c, rest.trim().to_string()),
        _ => panic!("error should start with {prefix}LINE:COL: — got {msg}"),
    }
}

const MALFORMED: &str = r#"project = "bad"

app "web" {
  @@@
}
"#;

const UNKNOWN_PLUGIN: &str = r#"project = "bad"

app "web" {
  build {
    use "nope" {}
  }
  deploy {
    use "process" {
      command = ["true"]
    }
  }
}
"#;

const NO_DEPLOY: &str = r#"project = "bad"

app "web" {
  build {
    use "files" {}
  }
}
"#;

const WRONG_TYPE: &str = r#"project = "bad"

app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["python3", "app.py"]
      count   = "two"
    }
  }
}
"#;

#[test]
fn bad_configs_fail_before_anything_is_queued() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");

    // (config, expected line, words the message must contain)
    let cases: [(&str, u32, &[&str]); 4] = [
        (MALFORMED, 4, &[]),
        (
            UNKNOWN_PLUGIN,
            5,
            &["\"nope\"", "available", "files", "command"],
        ),
        (NO_DEPLOY, 3, &["\"web\"", "deploy"]),
        (WRONG_TYPE, 10, &["count", "string"]),
    ];
    for (hcl, want_line, words) in cases {
        let app = write_app(hcl, &[]);
        let out = cli.run_in(app.path(), &["up"]).fails();
        let msg = one_line_error(&out);
        let (line, col, rest) = located(&msg, &app.path().join("cairn.hcl"));
        assert_eq!(line, want_line, "{msg}");
        assert!(col >= 1, "{msg}");
        assert!(!rest.is_empty(), "{msg}");
        for w in words {
            assert!(msg.contains(w), "{w:?} missing from: {msg}");
        }
        assert!(
            out.stdout.is_empty(),
            "nothing printed before failing: {out}"
        );
    }
    nothing_recorded(&cli);
}

#[test]
fn unreachable_node_is_reported_within_ten_seconds() {
    // A UDP port nothing listens on.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a UDP port")
        .port();
    let cli = Cli::new();
    cli.write_context(
        "gone",
        &format!("127.0.0.1:{port}"),
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "cairn_user_0000",
    );
    let app = hello_app();
    let out = cli.run_in(app.path(), &["up"]).fails();
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );
    let msg = one_line_error(&out);
    assert!(msg.contains("cannot reach"), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")),
        "names the address: {msg}"
    );
    assert!(cli.supervisor_pids().is_empty(), "nothing was deployed");
}

#[test]
fn wrong_token_is_refused_with_a_reason() {
    let node = NodeProc::start_new();
    let cli = Cli::new();

    // `context create` checks the token and refuses to save a bad one.
    let out = cli
        .run(&[
            "context",
            "create",
            "bad",
            "--address",
            &node.addr(),
            "--ca-fingerprint",
            &node.ca_fingerprint(),
            "--token",
            "cairn_user_not-a-real-token",
        ])
        .fails();
    let msg = one_line_error(&out);
    assert!(msg.contains("refused"), "{msg}");
    assert!(msg.contains("token is not valid"), "{msg}");
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );

    // A context that carries a wrong token: `up` is refused too.
    cli.write_context(
        "bad",
        &node.addr(),
        &node.ca_fingerprint(),
        "cairn_user_not-a-real-token",
    );
    let app = hello_app();
    let out = cli.run_in(app.path(), &["up"]).fails();
    let msg = one_line_error(&out);
    assert!(msg.contains("refused") && msg.contains("token"), "{msg}");
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );

    // Nothing happened on the node.
    cli.connect_to(&node, "good");
    nothing_recorded(&cli);
    assert!(cli.supervisor_pids().is_empty());
}

#[test]
fn wrong_ca_fingerprint_is_refused_without_hanging() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    let wrong = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let out = cli
        .run(&[
            "context",
            "create",
            "bad",
            "--address",
            &node.addr(),
            "--ca-fingerprint",
            wrong,
            "--bootstrap-token",
            &node.bootstrap_token(),
        ])
        .fails();
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );
    let msg = one_line_error(&out);
    assert!(
        msg.contains("does not match the pinned fingerprint") && msg.contains(wrong),
        "{msg}"
    );

    // A context pinning the wrong CA: `up` fails the same way.
    cli.write_context("bad", &node.addr(), wrong, "cairn_user_whatever");
    let app = hello_app();
    let out = cli.run_in(app.path(), &["up"]).fails();
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );
    let msg = one_line_error(&out);
    assert!(
        msg.contains("does not match the pinned fingerprint"),
        "{msg}"
    );

    // The bootstrap token was never sent to the impostor-looking node, so it
    // still works with the right fingerprint.
    cli.connect_to(&node, "good");
    nothing_recorded(&cli);
}

#[test]
fn oversized_frame_is_refused_and_the_node_keeps_serving() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let token = json::s(&cli.context_file("dev"), "token").to_string();
    let dial = node.dial(&token);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = rpc::connect(&dial)
            .await
            .expect("connect with a valid token");
        let (mut send, mut recv) = s.conn.open_bi().await.expect("open a stream");
        let mut bytes = ((MAX_FRAME_SIZE + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xAB; 4096]);
        // The node may stop reading (and close) before all of it is sent.
        let _ = send.write_all(&bytes).await;
        let _ = send.finish();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            frame::read::<_, ClientResponse>(&mut recv),
        )
        .await
        .expect("the node answers or closes within 10 s, never hangs");
        eprintln!("answer to an oversized frame: {answer:?}");
        match answer {
            Ok(Some(ClientResponse::Error { message })) => {
                assert!(
                    message.contains("limit") || message.contains("MAX_FRAME_SIZE"),
                    "{message}"
                );
            }
            Ok(Some(other)) => panic!("oversized frame accepted: {other:?}"),
            // Closed stream or connection: also a refusal.
            Ok(None) | Err(_) => {}
        }
        s.conn.close(0u32.into(), b"done");
        s.endpoint.wait_idle().await;

        // A fresh connection is served normally.
        let s = rpc::connect(&dial)
            .await
            .expect("node still accepts connections");
        match rpc::call(&s.conn, &ClientRequest::ServerInfo).await {
            Ok(ClientResponse::ServerInfo(info)) => {
                assert_eq!(info.ca_fingerprint, node.ca_fingerprint())
            }
            other => panic!("ServerInfo after the oversized frame: {other:?}"),
        }
        s.conn.close(0u32.into(), b"done");
    });
    // And so is the CLI.
    let jobs = cli.json(&["job", "list"]);
    assert!(json::items(&jobs).is_empty());
}
