//! What earlier releases wrote keeps loading (issue 14). The fixtures in
//! `tests/fixtures/<release>/` were written by that release's binaries
//! (see the README there); each release adds its own and none is removed.

use cairn_tests::{workspace_root, Cli, NodeProc};

/// The releases whose files HEAD must load.
const RELEASES: &[&str] = &["v0.1.0"];

fn fixture(release: &str, name: &str) -> std::path::PathBuf {
    workspace_root()
        .join("tests/fixtures")
        .join(release)
        .join(name)
}

/// The records every fixture holds: project `fixture`'s config (one value a
/// secret) and `examples/hello` built, deployed and released.
fn assert_records(cli: &Cli, release: &str) {
    let vars = cli.json(&["config", "list", "--project", "fixture"]);
    let text = vars.to_string();
    for want in ["\"A\"", "\"B\"", "two", "TOKEN"] {
        assert!(text.contains(want), "{release}: {want} missing from {text}");
    }
    assert!(
        !text.contains("s3cret"),
        "{release}: the secret is shown: {text}"
    );
    for kind in ["artifact", "deployment", "releases"] {
        let args: Vec<&str> = if kind == "releases" {
            vec!["releases"]
        } else {
            vec![kind, "list"]
        };
        let list = cli.json(&args);
        let items = list.as_array().map_or(0, Vec::len);
        assert!(items >= 1, "{release}: no {kind} in {list}");
        assert!(list.to_string().contains("hello"), "{release}: {list}");
    }
}

fn context(cli: &Cli, node: &NodeProc, release: &str) {
    let token = std::fs::read_to_string(fixture(release, "user.token")).expect("user token");
    cli.run(&[
        "context",
        "create",
        "fx",
        "--address",
        &node.addr(),
        "--ca-fingerprint",
        &node.ca_fingerprint(),
        "--token",
        token.trim(),
        "--use",
    ])
    .ok();
}

/// A snapshot file saved by `cairn server snapshot save` of each release
/// restores into a new cluster with every record.
#[test]
fn snapshot_files_of_earlier_releases_restore() {
    for release in RELEASES {
        let snap = tempfile::tempdir().expect("tempdir");
        let copy = snap.path().join("state.snap");
        std::fs::copy(fixture(release, "state.snap"), &copy).expect("copy");
        let node = NodeProc::builder()
            .arg("--restore")
            .arg(copy.to_str().expect("utf-8"))
            .spawn();
        let cli = Cli::new();
        context(&cli, &node, release);
        assert_records(&cli, release);
    }
}

/// A data dir (identity, Raft log and state machine) written by each
/// release starts under HEAD with every record.
#[test]
fn data_dirs_of_earlier_releases_load() {
    for release in RELEASES {
        let node = NodeProc::builder()
            .data_from(&fixture(release, "data-dir.tar.gz"))
            .spawn();
        let cli = Cli::new();
        context(&cli, &node, release);
        assert_records(&cli, release);
    }
}

/// The CLI's own files of each release (its contexts, current context and
/// reach memory) keep working: the release's data dir is started on the
/// address those files name, and the CLI uses them as they are.
#[test]
fn cli_files_of_earlier_releases_keep_working() {
    for release in RELEASES {
        let cli = Cli::new();
        let status = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(fixture(release, "cli-home.tar.gz"))
            .arg("-C")
            .arg(cli.home())
            .status()
            .expect("tar");
        assert!(status.success());
        let ctx = cli.run(&["context", "inspect", "--json"]).ok().json();
        let addr = ctx["address"].as_str().expect("address").to_string();
        assert_eq!(ctx["name"], "fx", "{release}: {ctx}");
        // The address those files name: free, almost surely (it was an
        // ephemeral port on the machine that wrote them).
        if std::net::UdpSocket::bind(&addr).is_err() {
            eprintln!("{release}: {addr} is taken here; only the files' parsing was checked");
            continue;
        }
        let node = NodeProc::builder()
            .listen(&addr)
            .data_from(&fixture(release, "data-dir.tar.gz"))
            .spawn();
        assert_eq!(
            ctx["ca_fingerprint"].as_str(),
            Some(node.ca_fingerprint().as_str()),
            "{release}"
        );
        assert_records(&cli, release);
    }
}
