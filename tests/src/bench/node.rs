//! A `cairn-node` process started by a bench, with a user token.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc::{self, Dial, Session};
use cairn_protocol::types::{OpKind, TokenScope};

use super::procs::{client_dial, tail, terminate};

/// How long a node may take to write its ready file.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The ready file a node writes once it listens.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Ready {
    pub addr: String,
    pub ca_fingerprint: String,
    pub pid: u32,
    /// `http://ip:port` of the node's URL-service ingress, if it serves one.
    #[serde(default)]
    pub ingress: Option<String>,
    /// `http://ip:port` of the node's HTTP API, if it serves one.
    #[serde(default)]
    pub http: Option<String>,
}

/// A `cairn-node` process this bench started, in a process group of its
/// own (a Ctrl-C reaches the bench, which then cleans up in order).
/// Dropping it stops the node.
pub struct BenchNode {
    child: Child,
    pub ready: Ready,
    /// The user token obtained from the one-time bootstrap token.
    pub token: String,
    pub log: PathBuf,
    /// Time from spawn to the ready file appearing.
    pub start_time: Duration,
    /// How this bench names itself to the node.
    agent: String,
}

impl BenchNode {
    /// Start `cairn-node` with its data in `dir`, wait until it is ready and
    /// exchange its bootstrap token for a user token.
    pub async fn start(node_bin: &Path, dir: &Path, agent: &str) -> anyhow::Result<BenchNode> {
        Self::start_with_env(node_bin, dir, agent, &[]).await
    }

    /// [`BenchNode::start`] with extra environment variables for the node.
    pub async fn start_with_env(
        node_bin: &Path,
        dir: &Path,
        agent: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<BenchNode> {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let ready_file = dir.join("ready.json");
        let boot_file = dir.join("bootstrap.token");
        let log_path = dir.join("node.log");
        let log = std::fs::File::create(&log_path)?;
        let t0 = Instant::now();
        let child = Command::new(node_bin)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--ready-file"])
            .arg(&ready_file)
            .arg("--bootstrap-file")
            .arg(&boot_file)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", node_bin.display()))?;
        // From here on the guard owns the child, so an error below kills it.
        let mut node = BenchNode {
            child,
            ready: Ready {
                addr: String::new(),
                ca_fingerprint: String::new(),
                pid: 0,
                ingress: None,
                http: None,
            },
            token: String::new(),
            log: log_path,
            start_time: Duration::ZERO,
            agent: agent.to_string(),
        };
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file) {
                if let Ok(r) = serde_json::from_str::<Ready>(&text) {
                    node.ready = r;
                    break;
                }
            }
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "cairn-node exited during start-up ({status}); log:\n{}",
                    tail(&node.log, 20)
                );
            }
            if t0.elapsed() > NODE_START_TIMEOUT {
                bail!(
                    "cairn-node not ready within {} s; log:\n{}",
                    NODE_START_TIMEOUT.as_secs(),
                    tail(&node.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.start_time = t0.elapsed();
        let boot = std::fs::read_to_string(&boot_file)
            .with_context(|| format!("reading {}", boot_file.display()))?;
        node.token = cairn_cli::local::exchange_bootstrap(
            &node.ready.addr,
            &node.ready.ca_fingerprint,
            boot.trim(),
        )
        .await
        .context("exchanging the bootstrap token")?;
        Ok(node)
    }

    pub fn dial(&self) -> Dial {
        client_dial(
            &self.agent,
            &self.ready.addr,
            &self.ready.ca_fingerprint,
            &self.token,
        )
    }

    pub async fn connect(&self) -> anyhow::Result<Session> {
        let d = self.dial();
        rpc::connect(&d)
            .await
            .with_context(|| format!("connecting to {}", d.addr))
    }

    /// One user-token call on a connection of its own.
    pub async fn call(&self, req: ClientRequest) -> anyhow::Result<ClientResponse> {
        let s = self.connect().await?;
        let r = rpc::call(&s.conn, &req).await;
        s.conn.close(0u32.into(), b"bench");
        r.map_err(|e| anyhow!("{req:?}: {e}"))
    }

    /// The id of the newest deployment operation of `project/app`.
    pub async fn deployment_id(&self, project: &str, app: &str) -> anyhow::Result<u64> {
        let r = self
            .call(ClientRequest::ListOperations {
                kind: OpKind::Deployment,
                project: Some(project.into()),
                app: Some(app.into()),
            })
            .await?;
        match r {
            ClientResponse::Operations(ops) => ops
                .iter()
                .map(|o| o.id)
                .max()
                .ok_or_else(|| anyhow!("{project}/{app} has no deployment")),
            other => bail!("ListOperations answered {other:?}"),
        }
    }

    /// An entrypoint token for `deployment` of `app` (what the platform
    /// hands its instances).
    pub async fn entrypoint_token(&self, app: &str, deployment: u64) -> anyhow::Result<String> {
        let r = self
            .call(ClientRequest::CreateToken {
                scope: TokenScope::Entrypoint {
                    app: app.into(),
                    deployment,
                },
                name: format!("bench-{app}"),
                ttl_s: None,
            })
            .await?;
        match r {
            ClientResponse::Token { token } => Ok(token),
            other => bail!("CreateToken answered {other:?}"),
        }
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        terminate(self.child.id());
        let _ = self.child.wait();
    }
}
