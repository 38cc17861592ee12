//! `cairn-entrypoint` against a real node process: it registers its
//! instance, starts the app with the deployment's configuration, restarts it
//! gracefully when that configuration changes, starts it without the cluster
//! when the node is down (then connects in the background), and leaves the
//! app alone when the connection drops.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc;
use cairn_protocol::types::{Instance, InstanceState, OpKind, TokenScope};
use cairn_tests::{bins, write_app, Cli, NodeProc};

const APP: &str = r#"project = "shop"

app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["sleep", "600"]
      wait_for_port = false
    }
  }
}
"#;

/// Prints `start PID GREETING` each time it starts; exits 0 on TERM.
const CHILD: &str = r#"trap 'echo stop $$; exit 0' TERM; echo "start $$ ${GREETING-unset}"; while :; do sleep 0.05; done"#;

const WITHIN: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One user-token call to `node`.
fn call(node: &NodeProc, token: &str, req: ClientRequest) -> ClientResponse {
    runtime().block_on(async {
        let s = rpc::connect(&node.dial(token)).await.expect("connect");
        let r = rpc::call(&s.conn, &req).await;
        s.conn.close(0u32.into(), b"bye");
        r.unwrap_or_else(|e| panic!("{req:?}: {e}"))
    })
}

/// A node with `shop/web` deployed and `GREETING=hello`; the CLI, the user
/// token, the deployment's id and an entrypoint token for it.
struct Deployed {
    node: NodeProc,
    cli: Cli,
    app: tempfile::TempDir,
    user: String,
    deployment: u64,
    token: String,
}

fn deployed() -> Deployed {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = write_app(APP, &[]);
    cli.run_in(app.path(), &["config", "set", "GREETING=hello"])
        .ok();
    cli.run_in(app.path(), &["up"]).ok();
    let user = cli.context_file("dev")["token"]
        .as_str()
        .expect("token in the context")
        .to_string();
    let list = ClientRequest::ListOperations {
        kind: OpKind::Deployment,
        project: Some("shop".into()),
        app: Some("web".into()),
    };
    let ClientResponse::Operations(ops) = call(&node, &user, list) else {
        panic!("no operations")
    };
    let deployment = ops.last().expect("a deployment").id;
    let mint = ClientRequest::CreateToken {
        scope: TokenScope::Entrypoint {
            app: "web".into(),
            deployment,
        },
        name: "web".into(),
        ttl_s: None,
    };
    let ClientResponse::Token { token } = call(&node, &user, mint) else {
        panic!("no token")
    };
    Deployed {
        node,
        cli,
        app,
        user,
        deployment,
        token,
    }
}

impl Deployed {
    fn instances(&self) -> Vec<Instance> {
        match call(&self.node, &self.user, ClientRequest::ListInstances) {
            ClientResponse::Instances(v) => v,
            other => panic!("{other:?}"),
        }
    }

    /// Poll until an instance satisfies `f`.
    fn instance_where(&self, what: &str, f: impl Fn(&Instance) -> bool) -> Instance {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(i) = self.instances().into_iter().find(|i| f(i)) {
                return i;
            }
            assert!(Instant::now() < deadline, "not within {WITHIN:?}: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn entrypoint(&self, addr: &str) -> Entrypoint {
        self.entrypoint_running(addr, CHILD)
    }

    /// An entrypoint running `sh -c SCRIPT` for this deployment.
    fn entrypoint_running(&self, addr: &str, script: &str) -> Entrypoint {
        let mut child = Command::new(&bins().entrypoint)
            .args(["sh", "-c", script])
            .env("CAIRN_ADDRS", addr)
            .env("CAIRN_CA_FINGERPRINT", self.node.ca_fingerprint())
            .env("CAIRN_DEPLOYMENT_ID", self.deployment.to_string())
            .env("CAIRN_ENTRYPOINT_TOKEN", &self.token)
            .env_remove("GREETING")
            .env_remove("CAIRN_DISABLE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn-entrypoint");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let err = child.stderr.take().expect("stderr");
        let (etx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = etx.send(l);
            }
            drop(tx2);
        });
        Entrypoint {
            child,
            lines,
            stderr,
        }
    }
}

struct Entrypoint {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Entrypoint {
    /// The next stdout line, within [`WITHIN`].
    fn next(&self) -> String {
        self.lines.recv_timeout(WITHIN).unwrap_or_else(|_| {
            panic!(
                "no output within {WITHIN:?}; stderr: {:?}",
                self.stderr_so_far()
            )
        })
    }

    /// The next `start PID GREETING` line: (pid, greeting).
    fn started(&self) -> (String, String) {
        loop {
            let l = self.next();
            let mut w = l.split_whitespace();
            if w.next() == Some("start") {
                let pid = w.next().unwrap_or_default().to_string();
                return (pid, w.next().unwrap_or_default().to_string());
            }
        }
    }

    fn stderr_so_far(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    fn terminate(mut self) -> i32 {
        cairn_tests::signal(self.child.id(), "TERM");
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "entrypoint did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Entrypoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn entrypoint_starts_the_app_with_its_config_restarts_on_change_and_is_tracked() {
    let d = deployed();
    let ep = d.entrypoint(&d.node.addr());
    let (pid1, greeting) = ep.started();
    assert_eq!(greeting, "hello", "the config is there at the first start");
    let me = ep.child.id();
    let i = d.instance_where("instance connected", |i| {
        i.deployment == d.deployment && i.pid == me && i.state == InstanceState::Connected
    });
    assert_eq!((i.project.as_str(), i.app.as_str()), ("shop", "web"));

    // `cairn instance list`, as JSON and as a table.
    let listed = d.cli.run(&["instance", "list", "--json"]).ok().json();
    let items = listed.as_array().expect("a JSON array");
    let item = items
        .iter()
        .find(|v| v["instance"] == i.id.as_str())
        .unwrap_or_else(|| panic!("instance {} not listed: {listed}", i.id));
    assert_eq!(item["deployment"], "v1");
    assert_eq!(item["app"], "web");
    assert_eq!(item["state"], "connected");
    assert_eq!(item["pid"], me);
    assert_eq!(item["node"], format!("{:x}", i.node));
    assert!(item["last_seen_ms"].as_u64() >= item["since_ms"].as_u64());
    let table = d.cli.run(&["instance", "list"]).ok();
    assert!(
        table.stdout.contains("LAST SEEN") && table.stdout.contains(&i.id),
        "{table}"
    );
    assert!(table.stdout.contains("shop/web v1"), "{table}");

    // A change restarts the app gracefully with the new value.
    d.cli
        .run_in(d.app.path(), &["config", "set", "GREETING=bonjour"])
        .ok();
    assert_eq!(ep.next(), format!("stop {pid1}"), "stopped with TERM first");
    let (pid2, greeting) = ep.started();
    assert_eq!(greeting, "bonjour");
    assert_ne!(pid1, pid2);

    // A change to another app's config restarts nothing.
    d.cli
        .run_in(
            d.app.path(),
            &["config", "set", "--app", "other", "GREETING=x"],
        )
        .ok();
    d.cli
        .run_in(d.app.path(), &["config", "set", "GREETING=hej"])
        .ok();
    assert_eq!(ep.next(), format!("stop {pid2}"));
    assert_eq!(ep.started().1, "hej");

    // TERM to the entrypoint: the app stops, no restart, exit 0.
    assert_eq!(ep.terminate(), 0);
    d.instance_where("instance disconnected", |i| {
        i.pid == me && i.state == InstanceState::Disconnected
    });
}

#[test]
fn entrypoint_fails_open_then_connects_and_leaves_the_app_alone_when_the_node_goes() {
    let mut d = deployed();
    let addr = d.node.addr();
    d.node.kill9();

    // The node is down: the app starts within the 5 s wait, without config.
    let t0 = Instant::now();
    let ep = d.entrypoint(&addr);
    let (_, greeting) = ep.started();
    assert_eq!(greeting, "unset");
    assert!(
        t0.elapsed() < Duration::from_secs(9),
        "started after {:?}",
        t0.elapsed()
    );

    // The node comes back: the entrypoint connects, gets the config and
    // restarts the app with it.
    d.node.restart_same_addr();
    let (pid, greeting) = ep.started();
    assert_eq!(greeting, "hello");
    let me = ep.child.id();
    let first = d.instance_where("instance connected", |i| {
        i.pid == me && i.state == InstanceState::Connected
    });

    // The node dies and comes back: the app is untouched, the entrypoint
    // reconnects (a newer `since`) and, the config being the same, does not
    // restart it.
    d.node.restart_same_addr();
    d.instance_where("instance reconnected", |i| {
        i.pid == me && i.state == InstanceState::Connected && i.since_ms > first.since_ms
    });
    assert!(
        ep.lines.try_recv().is_err(),
        "the app printed something: was it restarted?"
    );
    assert!(cairn_tests::pid_alive(pid.parse().expect("pid")));
    assert_eq!(ep.terminate(), 0);
}

#[test]
fn an_entrypoint_whose_first_address_is_silent_gets_its_config_from_the_next() {
    let d = deployed();
    // A member that takes packets and never answers (a dead or cut-off
    // host): dialled alone, it would hold the entrypoint for its whole
    // connect timeout (5 s), past the 5 s wait, and the app would start
    // without its configuration.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent = hole.local_addr().expect("addr").to_string();
    let t0 = Instant::now();
    let ep = d.entrypoint(&format!("{silent},{}", d.node.addr()));
    let (_, greeting) = ep.started();
    assert_eq!(
        greeting,
        "hello",
        "the app started after {:?} without its config",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "started after {:?}",
        t0.elapsed()
    );
    assert_eq!(ep.terminate(), 0);
}

#[test]
fn lines_dropped_while_disconnected_are_counted_and_reported() {
    let mut d = deployed();
    // No configuration: connecting later changes nothing, so the app is not
    // restarted (its second burst would blur the count).
    d.cli
        .run_in(d.app.path(), &["config", "delete", "GREETING"])
        .ok();
    let addr = d.node.addr();
    d.node.kill9();

    // Disconnected: a burst of 10,000 lines; the queue keeps the first
    // LOG_QUEUE_LINES and counts the rest; the pass-through shows them all.
    let ep = d.entrypoint_running(
        &addr,
        "seq 1 10000; echo burst-done; while :; do sleep 0.05; done",
    );
    let deadline = Instant::now() + WITHIN;
    let mut passed = 0;
    loop {
        let l = ep.next();
        passed += 1;
        if l == "burst-done" {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    assert_eq!(passed, 10_001, "every line passed through");

    // Connected again: the queued lines arrive, and the drop is reported.
    d.node.restart_same_addr();
    let queued = cairn_entrypoint::LOG_QUEUE_LINES;
    let dropped = 10_001 - queued;
    let notice = format!("cairn: {dropped} lines dropped by the entrypoint");
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while Instant::now() < deadline {
        let out = d.cli.run_in(d.app.path(), &["logs", "--json"]);
        lines = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() > queued {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let texts: Vec<&str> = lines.iter().filter_map(|l| l["line"].as_str()).collect();
    let notices: Vec<&&str> = texts.iter().filter(|t| t.starts_with("cairn: ")).collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].starts_with(&notice), "{notices:?}");
    let numbers: Vec<&str> = texts
        .iter()
        .copied()
        .filter(|t| !t.starts_with("cairn: "))
        .collect();
    let expected: Vec<String> = (1..=queued).map(|i| i.to_string()).collect();
    assert_eq!(numbers, expected, "the first {queued} lines, in order");
    // The script does not trap TERM: the entrypoint exits as the app did.
    assert_eq!(ep.terminate(), 128 + 15);
}
