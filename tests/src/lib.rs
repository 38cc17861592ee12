//! End-to-end test support: fixtures that start the real `cairn` and
//! `cairn-node` binaries.
//!
//! - [`bins`] builds both binaries once per test process and returns their paths.
//! - [`NodeProc`] runs a `cairn-node` on a loopback port in a temp dir; it can be
//!   killed with SIGKILL and restarted on the same data dir.
//! - [`Cli`] runs `cairn` with its own `CAIRN_HOME`, captures its output with a
//!   timeout, and on drop destroys what it deployed and stops its local node.
//! - [`assert_eventually!`] polls a condition until a deadline (no fixed sleeps).
//! - [`hello_app`] / [`write_app`] prepare app directories.
//!
//! Invariant: every process a fixture starts (directly, or through the CLI:
//! local nodes, deployment supervisors) is stopped when the fixture drops.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod bench;
pub mod corpus;
pub mod docker;
pub mod k8s;
pub mod nat;
pub use tempfile::TempDir;

/// How long one CLI command may take before the fixture kills it.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to write its ready file.
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Poll `$cond` (a `bool` expression) every 50 ms until it holds; panic with
/// the message after the deadline (default 20 s).
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr $(,)?) => {
        $crate::assert_eventually!($cond, ::std::time::Duration::from_secs(20), "condition `{}` never held", stringify!($cond))
    };
    ($cond:expr, $timeout:expr $(,)?) => {
        $crate::assert_eventually!($cond, $timeout, "condition `{}` never held", stringify!($cond))
    };
    ($cond:expr, $timeout:expr, $($msg:tt)+) => {{
        let deadline = ::std::time::Instant::now() + $timeout;
        loop {
            if $cond {
                break;
            }
            if ::std::time::Instant::now() > deadline {
                panic!("after {:?}: {}", $timeout, format!($($msg)+));
            }
            ::std::thread::sleep(::std::time::Duration::from_millis(50));
        }
    }};
}

// ---------------------------------------------------------------------------
// Binaries

/// Paths of the binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    pub cairn: PathBuf,
    pub node: PathBuf,
    pub entrypoint: PathBuf,
    /// `tests/src/bin/conn-flood.rs`: holds idle connections (the ingress soak).
    pub conn_flood: PathBuf,
    /// `examples/plugin-stamp`: the example external plugin.
    pub plugin_stamp: PathBuf,
    /// `tests/src/bin/cairn-plugin-misbehave.rs`: an external plugin that crashes, hangs or
    /// speaks garbage, as its config says.
    pub plugin_misbehave: PathBuf,
}

/// The folder holding `cairn`, `cairn-node` and `cairn-entrypoint` of an
/// earlier release (`v0.1.0`, as listed in `tests/fixtures/RELEASES`),
/// built once into a cache outside the checkout by
/// `tests/upgrade/build-release.sh` (several minutes the first time; CI
/// builds it before the tests). `CAIRN_PREVIOUS_RELEASE_BIN` names a folder
/// to use instead.
pub fn previous_release(release: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    if let Some(dir) = std::env::var_os("CAIRN_PREVIOUS_RELEASE_BIN") {
        return PathBuf::from(dir);
    }
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = built.get(release) {
        return dir.clone();
    }
    let out = Command::new(workspace_root().join("tests/upgrade/build-release.sh"))
        .arg(release)
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/upgrade/build-release.sh");
    assert!(
        out.status.success(),
        "building release {release} failed (see above)"
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    built.insert(release.to_string(), dir.clone());
    dir
}

/// The workspace root (for `examples/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Build `cairn`, `cairn-node` and `cairn-entrypoint` (once per test process) into the target
/// dir this test binary lives in, and return their paths. Set
/// `CAIRN_TESTS_NO_BUILD=1` to skip the build and use what is there.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        // The test binary is target/<profile>/deps/NAME-HASH.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir
            .parent()
            .expect("target/<profile> has a parent")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        // `--workspace`, not `-p cairn-cli -p cairn-node …`: with resolver 2
        // a subset of packages unifies dependency features differently from
        // the workspace build the test runner just did (nix turns on libc
        // features, for one), so a `-p` build would recompile most of the
        // dependency tree once more — minutes on a 2-core CI machine.
        cmd.args(["build", "--quiet", "--workspace", "--bins"])
            .arg("--manifest-path")
            .arg(workspace_root().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir);
        // `cargo test` gives us the variables it sets for this crate
        // (CARGO_PKG_*, CARGO_MANIFEST_DIR…). Build scripts that track them
        // (ring's does) would see a changed environment, rebuild half the tree,
        // and the next plain `cargo build` would rebuild it back. Build with
        // the environment a shell would have.
        for (k, _) in std::env::vars_os() {
            let Some(k) = k.to_str() else { continue };
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || k.starts_with("CARGO_BIN_")
                || matches!(
                    k,
                    "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_RUSTC_CURRENT_DIR"
                        | "OUT_DIR"
                )
            {
                cmd.env_remove(k);
            }
        }
        if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        // CAIRN_TESTS_NO_BUILD=1: use the binaries already in the target dir
        // (CI builds them in an earlier step).
        if std::env::var_os("CAIRN_TESTS_NO_BUILD").is_none_or(|v| v.is_empty() || v == "0") {
            let status = cmd.status().expect("running cargo build");
            assert!(status.success(), "cargo build --workspace --bins failed");
        }
        let bins = Bins {
            cairn: profile_dir.join("cairn"),
            node: profile_dir.join("cairn-node"),
            entrypoint: profile_dir.join("cairn-entrypoint"),
            conn_flood: profile_dir.join("conn-flood"),
            plugin_stamp: profile_dir.join("cairn-plugin-stamp"),
            plugin_misbehave: profile_dir.join("cairn-plugin-misbehave"),
        };
        assert!(bins.cairn.exists(), "{} missing", bins.cairn.display());
        assert!(bins.node.exists(), "{} missing", bins.node.display());
        assert!(
            bins.entrypoint.exists(),
            "{} missing",
            bins.entrypoint.display()
        );
        bins
    })
}

// ---------------------------------------------------------------------------
// Processes

/// Whether `pid` names a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .map(|r| r.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Whether `pid` is alive and its command line contains `needle`.
pub fn pid_runs(pid: u32, needle: &str) -> bool {
    pid_alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(needle))
            .unwrap_or(false)
}

/// Send a signal to one process (never a group, never pid <= 1).
pub fn signal(pid: u32, sig: &str) {
    if pid <= 1 {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM `pid`, wait up to `grace` for it to go, then SIGKILL it.
pub fn terminate(pid: u32, grace: Duration) {
    if !pid_alive(pid) {
        return;
    }
    signal(pid, "TERM");
    let deadline = Instant::now() + grace;
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if pid_alive(pid) {
        signal(pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

// ---------------------------------------------------------------------------
// HTTP

/// A minimal HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET url` with plain std (http:// only, HTTP/1.0, no redirects).
/// `host:port` of a URL as a socket address; names under `localhost`
/// (`web.localhost`, the URL service's dev domain) are the loopback
/// address, as curl and browsers take them.
pub fn resolve_http_host(host: &str) -> Option<SocketAddr> {
    let (name, port) = host.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    std::net::ToSocketAddrs::to_socket_addrs(host).ok()?.next()
}

pub fn http_get(url: &str) -> std::io::Result<HttpResponse> {
    let bad =
        |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{m}: {url}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("not an http:// URL"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = resolve_http_host(host).ok_or_else(|| bad("host resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no header/body separator in the answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code in the answer"))?;
    Ok(HttpResponse {
        status,
        body: body.to_string(),
    })
}

// ---------------------------------------------------------------------------
// App directories

/// A copy of `examples/hello` in a fresh temp dir (the app is at `.path()`).
pub fn hello_app() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = workspace_root().join("examples/hello");
    for e in std::fs::read_dir(&src).expect("examples/hello") {
        let e = e.expect("dir entry");
        if e.file_type().expect("file type").is_file() {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
        }
    }
    dir
}

/// `tests/src/webapp.py`: the URL-service tests' app (Python standard
/// library; `/`, `/headers`, `/upload`, `/stream`, `/ws`).
pub const WEBAPP: &str = include_str!("webapp.py");

/// App `web` of project `shop`: `count` instances of [`WEBAPP`] on the
/// process platform.
pub fn webapp(count: u32) -> TempDir {
    let hcl = format!(
        r#"project = "shop"

app "web" {{
  build {{
    use "files" {{}}
  }}
  deploy {{
    use "process" {{
      command = ["python3", "web.py"]
      count   = {count}
    }}
  }}
  release {{
    use "process" {{}}
  }}
}}
"#
    );
    write_app(&hcl, &[("web.py", WEBAPP)])
}

/// The first file named `name` under `root` (depth first).
pub fn find_file(root: &Path, name: &str) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(found) = find_file(&p, name) {
                return Some(found);
            }
        }
    }
    None
}

/// A temp dir holding `cairn.hcl` with `hcl` (plus any `extra` files).
pub fn write_app(hcl: &str, extra: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("cairn.hcl"), hcl).expect("write cairn.hcl");
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).expect("write file");
    }
    dir
}

// ---------------------------------------------------------------------------
// Cluster

/// Nodes of one cluster: the first bootstraps it, the others join through
/// it; `admin` holds a context on the first with the user token.
pub struct TestCluster {
    pub nodes: Vec<NodeProc>,
    pub admin: Cli,
    /// The admin's user token.
    pub token: String,
    pub ca: String,
}

impl TestCluster {
    /// `n` nodes, waited for until all of them are voters.
    pub fn start(n: usize) -> TestCluster {
        let first = NodeProc::start_new();
        let admin = Cli::new();
        admin.connect_to(&first, "n0");
        let token = json::s(&admin.context_file("n0"), "token").to_string();
        let ca = first.ca_fingerprint();
        let mut nodes = vec![first];
        for _ in 1..n {
            let join = join_token(&admin);
            let via = nodes[0].addr();
            nodes.push(
                NodeProc::builder()
                    .arg("--join")
                    .arg(&via)
                    .env("CAIRN_JOIN_TOKEN", &join)
                    .arg("--join-ca")
                    .arg(&ca)
                    .spawn(),
            );
        }
        let c = TestCluster {
            nodes,
            admin,
            token,
            ca,
        };
        assert_eventually!(
            {
                let ms = c.members();
                ms.len() == n && ms.iter().all(|m| m["role"] == "voter")
            },
            Duration::from_secs(30),
            "{n} voters: {:?}",
            c.members()
        );
        c
    }

    /// `cairn server members --json`, or nothing while the cluster cannot say.
    pub fn members(&self) -> Vec<serde_json::Value> {
        let out = self.admin.run(&["server", "members", "--json"]);
        if !out.success() {
            return Vec::new();
        }
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// The index in `nodes` of the node whose id (hex) is `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.node_id_hex() == id)
    }

    /// A new CLI with a context on node `i` (the admin's user token).
    pub fn cli_on(&self, i: usize) -> Cli {
        let cli = Cli::new();
        cli.run(&[
            "context",
            "create",
            "n",
            "--address",
            &self.nodes[i].addr(),
            "--ca-fingerprint",
            &self.ca,
            "--token",
            &self.token,
            "--use",
        ])
        .ok();
        cli
    }
}

/// `cairn server join-token`: the token on the line after the header.
pub fn join_token(cli: &Cli) -> String {
    let out = cli.run(&["server", "join-token"]).ok();
    out.stdout
        .lines()
        .nth(1)
        .map(|l| l.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| panic!("no join token in: {out}"))
}

// ---------------------------------------------------------------------------
// Node

/// The node's ready file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Ready {
    pub addr: String,
    pub ca_fingerprint: String,
    pub node_id: u64,
    pub pid: u32,
    /// `http://ip:port` of the URL-service ingress, when it serves one.
    #[serde(default)]
    pub ingress: Option<String>,
    /// `http://ip:port` of the HTTP API, when it serves one.
    #[serde(default)]
    pub http: Option<String>,
}

/// Options for a [`NodeProc`].
#[derive(Debug, Clone, Default)]
pub struct NodeBuilder {
    /// The `cairn-node` to run (default: this build's).
    program: Option<PathBuf>,
    listen: Option<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    data_from: Option<PathBuf>,
    /// Runs the node under this command (e.g. `ip netns exec NS`).
    wrapper: Vec<String>,
}

impl NodeBuilder {
    /// Run the node under `wrapper` (e.g. `["ip", "netns", "exec", "ns"]`, which
    /// execs it: the ready file's pid is still the node's).
    pub fn wrapper(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Listen here instead of 127.0.0.1:0.
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Start from the data dir in this `.tar.gz` (holding one folder,
    /// `data/`), as an earlier release left it.
    pub fn data_from(mut self, tar_gz: &Path) -> Self {
        self.data_from = Some(tar_gz.to_path_buf());
        self
    }

    /// Run this `cairn-node` (e.g. an earlier release's, see
    /// [`previous_release`]) instead of this build's.
    pub fn program(mut self, path: &Path) -> Self {
        self.program = Some(path.to_path_buf());
        self
    }

    /// One more command-line argument (e.g. `--join ADDR`).
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn spawn(self) -> NodeProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = NodeProc {
            child: None,
            ready: None,
            bootstrap: None,
            dir,
            builder: self,
        };
        if let Some(tar_gz) = &n.builder.data_from {
            let status = Command::new("tar")
                .arg("-xzf")
                .arg(tar_gz)
                .arg("-C")
                .arg(n.dir.path())
                .status()
                .expect("tar");
            assert!(status.success(), "extracting {}", tar_gz.display());
        }
        n.start();
        n.bootstrap = std::fs::read_to_string(n.dir.path().join("bootstrap.token"))
            .ok()
            .map(|s| s.trim().to_string());
        n
    }
}

/// A real `cairn-node` process on loopback, data in a temp dir.
pub struct NodeProc {
    child: Option<Child>,
    ready: Option<Ready>,
    bootstrap: Option<String>,
    dir: TempDir,
    builder: NodeBuilder,
}

impl NodeProc {
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Start a node with default options.
    pub fn start_new() -> NodeProc {
        NodeBuilder::default().spawn()
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.path().join("ready.json")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(self.ready_file());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("node log");
        let log2 = log.try_clone().expect("clone log");
        let program = self
            .builder
            .program
            .clone()
            .unwrap_or_else(|| bins().node.clone());
        let mut cmd = match self.builder.wrapper.split_first() {
            None => Command::new(program),
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(program);
                c
            }
        };
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(self.builder.listen.as_deref().unwrap_or("127.0.0.1:0"))
            // Any free port for the ingress (several nodes share loopback),
            // unless the test chose.
            .args(
                (!self
                    .builder
                    .args
                    .iter()
                    .any(|a| a == "--ingress" || a == "--no-ingress"))
                .then_some(["--ingress", "127.0.0.1:0"])
                .into_iter()
                .flatten(),
            )
            // And for the HTTP API (this build's node: 0.1.0 has none).
            .args(
                (self.builder.program.is_none()
                    && !self
                        .builder
                        .args
                        .iter()
                        .any(|a| a == "--http" || a == "--no-http"))
                .then_some(["--http", "127.0.0.1:0"])
                .into_iter()
                .flatten(),
            )
            .arg("--ready-file")
            .arg(self.ready_file())
            .arg("--bootstrap-file")
            .arg(self.dir.path().join("bootstrap.token"))
            .args(&self.builder.args)
            .env_remove("CAIRN_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        for (k, v) in &self.builder.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cairn-node");
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        let ready = loop {
            if let Ok(text) = std::fs::read_to_string(self.ready_file()) {
                if let Ok(r) = serde_json::from_str::<Ready>(&text) {
                    break r;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "cairn-node exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "cairn-node not ready within {NODE_READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(ready.pid, child.id(), "ready file names another pid");
        self.child = Some(child);
        self.ready = Some(ready);
    }

    fn ready(&self) -> &Ready {
        self.ready.as_ref().expect("node was started")
    }

    pub fn addr(&self) -> String {
        self.ready().addr.clone()
    }

    pub fn ca_fingerprint(&self) -> String {
        self.ready().ca_fingerprint.clone()
    }

    pub fn pid(&self) -> u32 {
        self.ready().pid
    }

    /// `http://HOST:PORT/` on this node's ingress (HOST as given:
    /// `web.localhost`, `web--v2.localhost`…).
    pub fn url(&self, host: &str) -> String {
        let ingress = self
            .ready()
            .ingress
            .clone()
            .expect("this node serves an ingress");
        let port = ingress.rsplit(':').next().unwrap_or_default().to_string();
        format!("http://{host}:{port}/")
    }

    /// `http://ip:port` of this node's HTTP API.
    pub fn http_api(&self) -> String {
        self.ready()
            .http
            .clone()
            .expect("this node serves the HTTP API")
    }

    /// The node's id in hex, as `cairn instance list` and logs show it.
    pub fn node_id_hex(&self) -> String {
        format!("{:x}", self.ready().node_id)
    }

    /// The one-time bootstrap token written on first start.
    pub fn bootstrap_token(&self) -> String {
        self.bootstrap
            .clone()
            .expect("the node wrote a bootstrap token on first start")
    }

    /// SIGKILL the node and reap it. `addr()` and `pid()` keep naming the
    /// killed process until the next start.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill the node (if running) and start it again on the same data dir;
    /// the new address is read back from the ready file.
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// Kill and start again on the same UDP address.
    pub fn restart_same_addr(&mut self) {
        let addr = self.addr();
        self.kill9();
        let prev = self.builder.listen.replace(addr);
        self.start();
        self.builder.listen = prev;
    }

    /// Stop the node as a user does (SIGTERM, then SIGKILL after 10 s) and
    /// start `program` (`None`: this build's `cairn-node`) on the same data
    /// dir and address: one step of a rolling upgrade or a rollback.
    pub fn replace_binary(&mut self, program: Option<&Path>) {
        let addr = self.addr();
        self.stop();
        self.builder.program = program.map(Path::to_path_buf);
        let prev = self.builder.listen.replace(addr);
        self.start();
        self.builder.listen = prev;
    }

    /// Stop the node as a user does: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
    }

    /// A dial to this node as a client with `token`.
    pub fn dial(&self, token: &str) -> cairn_protocol::rpc::Dial {
        cairn_protocol::rpc::Dial {
            addr: self.addr(),
            ca_fingerprint: self.ca_fingerprint(),
            identity: None,
            role: cairn_protocol::handshake::Role::Client,
            token: token.to_string(),
            agent: "cairn-tests".into(),
            limits: cairn_protocol::pki::TransportLimits::DEFAULT,
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        // A graceful stop first: it is what a user does.
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// CLI

/// What a CLI run produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub args: Vec<String>,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panic with the whole output unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Output {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// Panic with the whole output unless the command exited non-zero.
    #[track_caller]
    pub fn fails(self) -> Output {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "command should have failed: {self}"
        );
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }

    /// The value of the first stdout line `KEY: value`.
    pub fn field(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}:");
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }

    /// The non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`cairn {}` exited {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// A `cairn` command running in the background.
pub struct Background {
    child: Option<Child>,
    args: Vec<String>,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
    _dir: TempDir,
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What it printed so far.
    pub fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Wait for it to exit (killing it after `timeout`).
    pub fn wait(mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("not waited yet");
        let code = wait_with_timeout(&mut child, timeout);
        Output {
            args: self.args.clone(),
            code: code.flatten(),
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default()
                + if code.is_none() {
                    "\n[cairn-tests: killed after the timeout]"
                } else {
                    ""
                },
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `Some(code)` when it exited within `timeout` (`code` is `None` for a
/// signal), `None` when it had to be killed.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<Option<i32>> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.code()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The `cairn` CLI with its own `CAIRN_HOME`.
pub struct Cli {
    /// The `cairn` to run (default: this build's).
    program: Option<PathBuf>,
    home: TempDir,
    timeout: Duration,
    /// App dirs to `cairn destroy` on drop.
    apps: Mutex<BTreeSet<PathBuf>>,
    /// Environment every `cairn` it runs gets (e.g. `KUBECONFIG`).
    env: Vec<(String, String)>,
}

impl Default for Cli {
    fn default() -> Self {
        Cli::new()
    }
}

impl Cli {
    pub fn new() -> Cli {
        Cli {
            program: None,
            home: tempfile::tempdir().expect("tempdir"),
            timeout: CLI_TIMEOUT,
            apps: Mutex::new(BTreeSet::new()),
            env: Vec::new(),
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Run this `cairn` (e.g. an earlier release's, see [`previous_release`])
    /// from now on, `None` for this build's; the home (contexts) stays.
    pub fn set_program(&mut self, program: Option<&Path>) {
        self.program = program.map(Path::to_path_buf);
    }

    /// `CAIRN_HOME/data`.
    pub fn data_dir(&self) -> PathBuf {
        self.home.path().join("data")
    }

    /// The embedded local node's ready file, if it was started.
    pub fn local_ready(&self) -> Option<Ready> {
        let text = std::fs::read_to_string(self.data_dir().join("local-node/ready.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Remember `dir` so that drop runs `cairn -C dir destroy`.
    pub fn track(&self, dir: &Path) {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf());
    }

    /// Every `cairn` this CLI runs from now on gets `key=value` in its environment.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// `cairn ARGS…` with this CLI's home, stdin from /dev/null (change it
    /// before spawning if needed).
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_under(&[], args)
    }

    /// [`Cli::command`] run by `wrapper` (e.g. `["prlimit", "--stack=1048576", "--"]`):
    /// `WRAPPER… cairn ARGS…`.
    pub fn command_under(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let cairn = self.program.clone().unwrap_or_else(|| bins().cairn.clone());
        let mut cmd = match wrapper.split_first() {
            None => Command::new(&cairn),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&cairn);
                c
            }
        };
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CAIRN_HOME", self.home.path())
            .env("NO_COLOR", "1")
            .env_remove("CAIRN_CONTEXT")
            .env_remove("CAIRN_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Run `cairn ARGS…` to completion (killed after the timeout).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_timeout(args, self.timeout)
    }

    /// Run `cairn -C DIR ARGS…`, remembering DIR for cleanup.
    pub fn run_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.track(dir);
        let d = dir.to_string_lossy().to_string();
        let mut all = vec!["-C", d.as_str()];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// [`Cli::run`] with extra environment variables (no app dir is tracked).
    pub fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        self.run_command(cmd, args, None, self.timeout)
    }

    /// [`Cli::run_in`] with extra environment variables (e.g. `DOCKER_HOST`).
    pub fn run_in_env(&self, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.track(dir);
        let d = dir.to_string_lossy().to_string();
        let mut all = vec!["-C", d.as_str()];
        all.extend_from_slice(args);
        let mut cmd = self.command(&all);
        cmd.envs(env.iter().copied());
        self.run_command(cmd, &all, None, self.timeout)
    }

    pub fn run_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        self.run_with_input(args, None, timeout)
    }

    /// Run `cairn ARGS…` with `input` on its stdin (then end of file).
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        self.run_with_input(args, Some(input.to_vec()), self.timeout)
    }

    /// `cairn -C DIR ARGS…` run by `wrapper` (see [`Cli::command_under`]),
    /// remembering DIR for cleanup.
    pub fn run_in_under(&self, wrapper: &[&str], dir: &Path, args: &[&str]) -> Output {
        self.track(dir);
        let d = dir.to_string_lossy().to_string();
        let mut all = vec!["-C", d.as_str()];
        all.extend_from_slice(args);
        self.run_command(self.command_under(wrapper, &all), &all, None, self.timeout)
    }

    fn run_with_input(&self, args: &[&str], input: Option<Vec<u8>>, timeout: Duration) -> Output {
        self.run_command(self.command(args), args, input, timeout)
    }

    fn run_command(
        &self,
        mut cmd: Command,
        args: &[&str],
        input: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Output {
        let started = Instant::now();
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn");
        if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let t_out = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            s
        });
        let code = wait_with_timeout(&mut child, timeout);
        // A detached grandchild (the local node) never holds our pipes: the
        // CLI sends its stdio to a log file.
        let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).to_string();
        let mut stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).to_string();
        if code.is_none() {
            stderr.push_str(&format!("\n[cairn-tests: killed after {timeout:?}]"));
        }
        Output {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: code.flatten(),
            stdout,
            stderr,
            elapsed: started.elapsed(),
        }
    }

    /// Start `cairn ARGS…` in the background; output goes to temp files.
    pub fn spawn(&self, args: &[&str]) -> Background {
        self.spawn_under(&[], args)
    }

    /// [`Cli::spawn`] run by `wrapper` (e.g. `["ip", "netns", "exec", "ns"]`).
    pub fn spawn_under(&self, wrapper: &[&str], args: &[&str]) -> Background {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("stdout");
        let err = dir.path().join("stderr");
        let child = self
            .command_under(wrapper, args)
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("spawn cairn");
        Background {
            child: Some(child),
            args: args.iter().map(|s| s.to_string()).collect(),
            out,
            err,
            started: Instant::now(),
            _dir: dir,
        }
    }

    /// `cairn ARGS… --json`, which must succeed, parsed.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        self.run(&all).ok().json()
    }

    /// `cairn context create NAME` for `node` with its bootstrap token.
    #[track_caller]
    pub fn connect_to(&self, node: &NodeProc, name: &str) {
        let addr = node.addr();
        let fp = node.ca_fingerprint();
        let tok = node.bootstrap_token();
        self.run(&[
            "context",
            "create",
            name,
            "--address",
            &addr,
            "--ca-fingerprint",
            &fp,
            "--bootstrap-token",
            &tok,
            "--use",
        ])
        .ok();
    }

    /// Write a context file directly (for addresses or tokens the CLI would
    /// refuse to create), and make it current.
    pub fn write_context(&self, name: &str, address: &str, ca_fingerprint: &str, token: &str) {
        // Private, as the CLI makes them (it warns about anything looser).
        let dir = self.home.path().join("config/contexts");
        cairn_protocol::private::create_dir(&dir).expect("contexts dir");
        let ctx = serde_json::json!({
            "name": name,
            "address": address,
            "ca_fingerprint": ca_fingerprint,
            "token": token,
            "local": false,
        });
        cairn_protocol::private::write(
            &dir.join(format!("{name}.json")),
            ctx.to_string().as_bytes(),
        )
        .expect("context");
        cairn_protocol::private::write(&self.home.path().join("config/current"), name.as_bytes())
            .expect("current");
    }

    /// The current context's fields, read from its file.
    pub fn context_file(&self, name: &str) -> serde_json::Value {
        let p = self
            .home
            .path()
            .join(format!("config/contexts/{name}.json"));
        serde_json::from_str(&std::fs::read_to_string(&p).expect("context file"))
            .expect("context JSON")
    }

    /// Where this CLI's runner extracted deployment `seq` of `app` (the
    /// process platform): under the instance root when the tests run as root
    /// (instances then run as another user), else in the runner's data dir.
    pub fn deployment_dir(&self, app: &str, seq: u64) -> PathBuf {
        let runner = self.data_dir().join("runner");
        let base = if nix::unistd::geteuid().is_root() {
            cairn_cli::plugins::process::isolation::instance_root(&runner).join(app)
        } else {
            runner.join("deployments").join(app)
        };
        base.join(format!("v{seq}"))
    }

    /// Supervisor pids recorded in this CLI's runner dir (any state).
    pub fn supervisor_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        let root = self.data_dir().join("runner/deployments");
        let Ok(apps) = std::fs::read_dir(&root) else {
            return pids;
        };
        for app in apps.flatten() {
            let Ok(runs) = std::fs::read_dir(app.path()) else {
                continue;
            };
            for run in runs.flatten() {
                if !run.file_name().to_string_lossy().ends_with(".run") {
                    continue;
                }
                let Ok(files) = std::fs::read_dir(run.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    if !f.file_name().to_string_lossy().ends_with(".state.json") {
                        continue;
                    }
                    let Ok(text) = std::fs::read_to_string(f.path()) else {
                        continue;
                    };
                    if let Some(pid) = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["supervisor_pid"].as_u64())
                    {
                        pids.push(pid as u32);
                    }
                }
            }
        }
        pids
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        // 1. Destroy what we deployed, the way a user would (best effort).
        let apps: Vec<PathBuf> = self
            .apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let has_context = self.home.path().join("config/current").exists()
            || self.local_ready().is_some_and(|r| pid_alive(r.pid));
        if has_context && !self.supervisor_pids().iter().all(|p| !pid_alive(*p)) {
            for dir in apps {
                if dir.join("cairn.hcl").exists() {
                    let d = dir.to_string_lossy().to_string();
                    let _ = self.run_timeout(&["-C", &d, "destroy"], Duration::from_secs(20));
                }
            }
        }
        // 2. Whatever is still supervised (node gone, destroy failed): stop it.
        //    The supervisor stops its command's process group on SIGTERM.
        for pid in self.supervisor_pids() {
            if pid_runs(pid, "__supervise") {
                terminate(pid, Duration::from_secs(8));
            }
        }
        // 3. The embedded local node.
        if let Some(r) = self.local_ready() {
            if pid_alive(r.pid) {
                let _ = self.run_timeout(&["server", "stop-local"], Duration::from_secs(20));
                if pid_runs(r.pid, "server") {
                    terminate(r.pid, Duration::from_secs(5));
                }
            }
        }
    }
}

/// JSON list helpers.
pub mod json {
    use serde_json::Value;

    /// The array items of `v` (panics if it is not an array).
    #[track_caller]
    pub fn items(v: &Value) -> &Vec<Value> {
        v.as_array()
            .unwrap_or_else(|| panic!("expected a JSON array, got {v}"))
    }

    /// `v[key]` as u64.
    #[track_caller]
    pub fn u(v: &Value, key: &str) -> u64 {
        v[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
    }

    /// `v[key]` as &str.
    #[track_caller]
    pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
    }

    /// The parsed `result.json` of an operation.
    #[track_caller]
    pub fn result(op: &Value) -> Value {
        let text = op["result"]["json"]
            .as_str()
            .unwrap_or_else(|| panic!("operation has no result: {op}"));
        serde_json::from_str(text).expect("result JSON")
    }
}
