//! Docker fixtures for the container tests and the container benchmark:
//! whether an engine answers, the static entrypoint the builder injects,
//! copies of `examples/docker-hello`, Debian's `docker-registry` on loopback,
//! and queries by Cairn's labels.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{assert_eventually, http_get, workspace_root};

/// Whether the tests can use a Docker engine (see the module's doc).
pub fn docker_ready() -> bool {
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
pub fn static_entrypoint() {
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
pub fn docker_hello(project: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
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

pub fn copy_tree(from: &Path, to: &Path) {
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
pub fn containers_of(project: &str) -> Vec<String> {
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

pub fn labelled(kind: &str, project: &str) -> Vec<String> {
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
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A registry that takes pushes from anyone.
    pub fn start() -> Registry {
        Registry::launch(None)
    }

    /// A registry that wants `user`/`password` (htpasswd, bcrypt; made with
    /// `htpasswd` from Debian's apache2-utils).
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::launch(Some((user, password)))
    }

    fn launch(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (Debian's apache2-utils)");
            assert!(out.status.success(), "htpasswd: {out:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: cairn-test\n    path: {}\n",
                file.display()
            ));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, yaml).expect("registry config");
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
        let want = if auth.is_some() { 401 } else { 200 };
        assert_eventually!(
            http_get(&format!("http://127.0.0.1:{port}/v2/")).is_ok_and(|r| r.status == want),
            Duration::from_secs(10),
            "docker-registry did not answer on port {port}"
        );
        r
    }

    /// `GET path` with basic auth (curl); the body when it answered 2xx.
    pub fn get_as(&self, user: &str, password: &str, path: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sf", "-u", &format!("{user}:{password}")])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

pub fn registry_program() -> PathBuf {
    PathBuf::from("/usr/bin/docker-registry")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The instance prefixes of `cairn logs` lines ("d4df2d32 | …").
pub fn log_instances(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_once(" | ").map(|(i, _)| i.trim().to_string()))
        .collect()
}

/// Removes every container labelled with a project when dropped, however the
/// test ends (a test that fails half-way leaves nothing running).
pub struct Sweep(pub String);

impl Drop for Sweep {
    fn drop(&mut self) {
        remove_containers(&format!("label=dev.cairn.project={}", self.0));
    }
}

/// Removes (with their anonymous volumes) the containers `docker ps
/// --filter FILTER` names, quietly.
pub fn remove_containers(filter: &str) {
    let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", filter])
        .output()
    else {
        return;
    };
    let ids = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&ids)
            .output();
    }
}
