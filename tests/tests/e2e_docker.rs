//! Containers on the real Docker engine: `cairn up` on `examples/docker-hello`
//! builds the image, injects the entrypoint, pushes it to a real registry
//! (Debian's `docker-registry` on loopback), runs two containers whose
//! entrypoints connect out to the node, and everything a developer does next
//! (URLs, logs, exec, config, rollback, destroy) works as with processes.
//!
//! Without a Docker engine these tests skip with a loud message, except in CI
//! (`CI=true`), where a missing engine fails them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_tests::{assert_eventually, http_get, workspace_root, Cli, NodeProc};

/// Whether the tests can use a Docker engine (see the module's doc).
fn docker_ready() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "no Docker engine answers `docker info`, and CI needs one for the container tests"
            );
        }
        eprintln!(
            "!!!! SKIPPED: no Docker engine answers `docker info`: the container tests did not run"
        );
    }
    ok
}

/// The static entrypoint the docker builder injects: built once by
/// `entrypoint/build-static.sh` where the builder looks for it.
fn static_entrypoint() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new(workspace_root().join("entrypoint/build-static.sh"))
            .output()
            .expect("run build-static.sh");
        assert!(
            out.status.success(),
            "build-static.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A copy of examples/docker-hello under its own project name (containers are
/// named after it, and tests run in parallel), with `edit` applied to its config.
fn docker_hello(project: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&workspace_root().join("examples/docker-hello"), dir.path());
    let cfg = dir.path().join("cairn.hcl");
    let text = std::fs::read_to_string(&cfg).expect("cairn.hcl");
    let text = text.replace(
        "project = \"docker-hello\"",
        &format!("project = \"{project}\""),
    );
    std::fs::write(&cfg, edit(text)).expect("write cairn.hcl");
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read example") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &dest);
        } else if e.file_name() != "busybox" {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// Names of the containers (running or not) labelled with `project`.
fn containers_of(project: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=dev.cairn.project={project}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn labelled(kind: &str, project: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            kind,
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.cairn.project={project}"),
        ])
        .output()
        .expect("docker ls");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Debian's `docker-registry` on a free loopback port; stopped on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let child = Command::new(registry_program())
            .args(["serve", &config.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (Debian's docker-registry package)");
        let r = Registry {
            child,
            port,
            _dir: dir,
        };
        assert_eventually!(
            http_get(&format!("http://127.0.0.1:{port}/v2/")).is_ok_and(|r| r.status == 200),
            Duration::from_secs(10),
            "docker-registry did not answer on port {port}"
        );
        r
    }
}

fn registry_program() -> PathBuf {
    PathBuf::from("/usr/bin/docker-registry")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The instance prefixes of `cairn logs` lines ("d4df2d32 | …").
fn log_instances(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_once(" | ").map(|(i, _)| i.trim().to_string()))
        .collect()
}

#[test]
fn docker_hello_builds_pushes_runs_and_cleans_up() {
    if !docker_ready() {
        return;
    }
    static_entrypoint();
    let registry = Registry::start();
    let project = format!("dh-{}", std::process::id());
    let image = format!("127.0.0.1:{}/{project}/web", registry.port);
    let app = docker_hello(&project, |t| {
        t.replace(
            "    use \"docker\" {}\n",
            &format!(
                "    use \"docker\" {{}}\n\n    registry {{\n      use \"docker\" {{\n        image = \"{image}\"\n        tag   = \"latest\"\n      }}\n    }}\n"
            ),
        )
    });
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");

    let up = cli.run_in(app.path(), &["up"]).ok();
    for step in [
        "Building v1 with docker",
        "Injecting the Cairn entrypoint",
        "Pushing artifact v1 with docker",
        "Deploying v1 with docker",
    ] {
        assert!(up.stdout.contains(step), "no {step:?}: {up}");
    }
    let tags = http_get(&format!(
        "http://127.0.0.1:{}/v2/{project}/web/tags/list",
        registry.port
    ))
    .expect("registry tags");
    assert!(tags.body.contains("latest"), "pushed: {tags:?}");
    assert_eq!(containers_of(&project).len(), 2, "two containers");

    // Both URLs answer through the tunnel (nothing is published on the host).
    let release_url = up.field("Release URL").expect("Release URL");
    let v1_url = up.field("Deployment URL").expect("Deployment URL");
    for url in [&release_url, &v1_url] {
        assert_eventually!(
            http_get(url).is_ok_and(
                |r| r.status == 200 && r.body.contains("Hello from Cairn in a container")
            ),
            Duration::from_secs(20),
            "{url} does not answer"
        );
    }
    // The entrypoints inside the containers registered with the node.
    assert_eventually!(
        {
            let st = cli.run_in(app.path(), &["status", "--json"]).ok().json();
            st[0]["deployments"][0]["entrypoints_connected"].as_u64() == Some(2)
                && st[0]["deployments"][0]["platform"]["alive"].as_u64() == Some(2)
        },
        Duration::from_secs(20),
        "the two entrypoints did not connect"
    );

    // Logs of both containers; exec inside one.
    for _ in 0..4 {
        let _ = http_get(&v1_url);
    }
    assert_eventually!(
        log_instances(&cli.run_in(app.path(), &["logs"]).ok().stdout).len() == 2,
        Duration::from_secs(20),
        "`cairn logs` does not show both containers"
    );
    let ls = cli.run_in(app.path(), &["exec", "--", "ls", "/"]).ok();
    assert!(
        ls.stdout.contains("cairn-entrypoint") && ls.stdout.contains("www"),
        "{ls}"
    );

    // Config: the app restarts with the new value.
    let hello = format!("{}cgi-bin/hello", v1_url);
    cli.run_in(
        app.path(),
        &["config", "set", "--app", "web", "GREETING=Bonjour"],
    )
    .ok();
    assert_eventually!(
        http_get(&hello).is_ok_and(|r| r.body.starts_with("Bonjour from ")),
        Duration::from_secs(20),
        "the containers did not pick up GREETING=Bonjour"
    );

    // v2, then roll back to v1: both keep answering on their URLs.
    let up2 = cli.run_in(app.path(), &["up"]).ok();
    assert!(up2.stdout.contains("Deploying v2 with docker"), "{up2}");
    let v2_url = up2.field("Deployment URL").expect("Deployment URL v2");
    let rb = cli.run_in(app.path(), &["release", "1"]).ok();
    assert!(rb.stdout.contains("Releasing deployment v1"), "{rb}");
    assert_eq!(
        containers_of(&project).len(),
        4,
        "v1 and v2 run side by side"
    );
    for url in [&release_url, &v1_url, &v2_url] {
        assert_eventually!(
            http_get(url).is_ok_and(|r| r.status == 200),
            Duration::from_secs(20),
            "{url} does not answer after the rollback"
        );
    }

    // Destroy: nothing of Cairn's is left, by label.
    cli.run_in(app.path(), &["destroy"]).ok();
    assert!(
        containers_of(&project).is_empty(),
        "{:?}",
        containers_of(&project)
    );
    assert!(labelled("network", &project).is_empty());
    assert!(labelled("volume", &project).is_empty());
}
