//! Platform `docker`: one container per instance, labelled with project, app,
//! deployment and instance, running the image's command under the Cairn
//! entrypoint (which reaches the cluster and serves the URL tunnel, so nothing
//! is published on the host).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use serde::Deserialize;

use super::auth::{self, Auth};
use super::engine::{describe, engine, engine_error, is_not_found, pull};
use super::{
    container_name, Container, Deployment, Image, DEPLOYMENT, IMAGE, LABEL_APP, LABEL_DEPLOYMENT,
    LABEL_INSTANCE, LABEL_MANAGED, LABEL_PROJECT, LABEL_WORKSPACE,
};
use crate::{
    async_trait, config_error, parse_config, DeploymentHealth, InstanceHealth, OpContext, Platform,
    PluginError, Value,
};

/// How long a new container must stay up to count as started, when no
/// health probe says more (with one, the probe passing is the proof).
const START_GRACE: Duration = Duration::from_millis(1500);
/// How long a health probe may take to pass, unless `probe_timeout` says.
const DEFAULT_PROBE_TIMEOUT_S: u64 = 30;
/// The app's port when `service_port` is not given (Waypoint's default).
const DEFAULT_SERVICE_PORT: u16 = 3000;
/// How many log lines of a container that failed to start are shown.
const FAILED_LOG_LINES: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "one")]
    count: usize,
    #[serde(default)]
    service_port: Option<u16>,
    #[serde(default)]
    static_environment: BTreeMap<String, String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    /// `{ memory = "512MB", cpu = "512" }` (cpu in CPU shares, as Waypoint).
    #[serde(default)]
    resources: BTreeMap<String, serde_json::Value>,
    /// Networks to join; the first is the container's main network
    /// (default: the engine's default bridge).
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    force_pull: bool,
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(default)]
    encoded_auth: Option<String>,
    /// An HTTP path that must answer 2xx/3xx on `service_port` before the
    /// deployment counts as up.
    #[serde(default)]
    probe_path: Option<String>,
    #[serde(default)]
    probe_timeout: Option<u64>,
    #[serde(default)]
    binds: Vec<String>,
    #[serde(default)]
    extra_ports: Vec<u16>,
    /// Accepted for Waypoint files (Waypoint never used it either).
    #[serde(default)]
    #[allow(dead_code)]
    scratch_path: Option<String>,
}

fn one() -> usize {
    1
}

struct Resources {
    memory: Option<i64>,
    cpu_shares: Option<i64>,
}

/// Platform `docker`.
pub struct DockerPlatform {
    config: Config,
    resources: Resources,
}

impl DockerPlatform {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Platform>, PluginError> {
        let config: Config = parse_config("docker", config)?;
        if config.count == 0 {
            return Err(config_error("docker", "count", "must be at least 1"));
        }
        if config.command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(config_error(
                "docker",
                "command",
                "must name a program to run",
            ));
        }
        if let Some(p) = &config.probe_path {
            if !p.starts_with('/') {
                return Err(config_error("docker", "probe_path", "must start with '/'"));
            }
        }
        let mut resources = Resources {
            memory: None,
            cpu_shares: None,
        };
        for (k, v) in &config.resources {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => {
                    return Err(config_error(
                        "docker",
                        &format!("resources.{k}"),
                        "must be a string or a number",
                    ))
                }
            };
            match k.as_str() {
                "memory" => {
                    resources.memory = Some(parse_size(&text).ok_or_else(|| {
                        config_error(
                            "docker",
                            "resources.memory",
                            &format!("{text:?} is not a size such as \"512MB\" or \"1GiB\""),
                        )
                    })?)
                }
                "cpu" => {
                    resources.cpu_shares = Some(text.trim().parse().map_err(|_| {
                        config_error(
                            "docker",
                            "resources.cpu",
                            &format!(
                                "{text:?} is not a whole number of CPU shares (1024 = one CPU)"
                            ),
                        )
                    })?)
                }
                other => {
                    return Err(config_error(
                        "docker",
                        &format!("resources.{other}"),
                        "unknown resource (known: memory, cpu)",
                    ))
                }
            }
        }
        Ok(Box::new(DockerPlatform { config, resources }))
    }

    fn service_port(&self) -> u16 {
        self.config.service_port.unwrap_or(DEFAULT_SERVICE_PORT)
    }
}

/// "512MB" (decimal units, as Docker's `FromHumanSize`), "1GiB" (binary), "1024".
fn parse_size(text: &str) -> Option<i64> {
    let t = text.trim().to_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (v >= 1.0 && v < i64::MAX as f64).then_some(v as i64)
}

#[async_trait]
impl Platform for DockerPlatform {
    fn input_types(&self) -> &[&'static str] {
        &[IMAGE]
    }

    fn output_type(&self) -> &'static str {
        DEPLOYMENT
    }

    async fn deploy(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        let image: Image = input.get::<Image>()?;
        let docker = engine().await?;
        let reference = image.reference();
        self.ensure_image(&docker, ctx, &image).await?;
        let mut created: Vec<Container> = Vec::new();
        let result = self.start_all(&docker, ctx, &image, &mut created).await;
        match result {
            Ok(url) => {
                ctx.info(&format!(
                    "{} container(s) of v{} running",
                    created.len(),
                    ctx.sequence
                ));
                Value::of(&Deployment {
                    project: ctx.project.clone(),
                    app: ctx.app.clone(),
                    sequence: ctx.sequence,
                    image: reference,
                    containers: created,
                    service_port: self.service_port(),
                    url,
                })
            }
            Err(e) => {
                ctx.info(&format!("deploy failed, removing what it started: {e}"));
                for c in &created {
                    remove(&docker, &c.id).await;
                }
                // Anything of this deployment the records do not name.
                let _ = remove_labelled(&docker, &ctx.project, &ctx.app, ctx.sequence).await;
                Err(e)
            }
        }
    }

    async fn destroy(&self, ctx: &mut OpContext, deployment: &Value) -> Result<(), PluginError> {
        let d: Deployment = deployment.get::<Deployment>()?;
        let docker = engine().await?;
        for c in &d.containers {
            remove(&docker, &c.id).await;
        }
        let n = remove_labelled(&docker, &d.project, &d.app, d.sequence).await?;
        ctx.info(&format!(
            "removed the containers of v{} ({} by record, {n} more by label)",
            d.sequence,
            d.containers.len()
        ));
        Ok(())
    }

    async fn destroy_interrupted(&self, ctx: &mut OpContext) -> Result<String, PluginError> {
        let docker = engine().await?;
        let n = remove_labelled(&docker, &ctx.project, &ctx.app, ctx.sequence).await?;
        Ok(format!(
            "removed {n} container(s) labelled as v{}",
            ctx.sequence
        ))
    }

    async fn status(
        &self,
        _ctx: &mut OpContext,
        deployment: &Value,
    ) -> Result<DeploymentHealth, PluginError> {
        let d: Deployment = deployment.get::<Deployment>()?;
        let docker = engine().await?;
        let mut instances = Vec::new();
        for c in &d.containers {
            let (alive, pid, restarts) = match docker
                .inspect_container(
                    &c.id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
            {
                Ok(info) => {
                    let st = info.state.unwrap_or_default();
                    (
                        st.running.unwrap_or(false),
                        st.pid.filter(|p| *p > 0).map(|p| p as u32),
                        info.restart_count.unwrap_or(0).max(0) as u64,
                    )
                }
                Err(e) if is_not_found(&e) => (false, None, 0),
                Err(e) => return Err(engine_error(&format!("inspecting {}", c.name), e)),
            };
            instances.push(InstanceHealth {
                index: c.index,
                alive,
                port: Some(d.service_port),
                pid,
                restarts,
            });
        }
        Ok(DeploymentHealth {
            total: instances.len(),
            alive: instances.iter().filter(|i| i.alive).count(),
            instances,
        })
    }

    fn url(&self, deployment: &Value) -> Option<String> {
        deployment.get::<Deployment>().ok().and_then(|d| d.url)
    }
}

impl DockerPlatform {
    /// Pulls the image when the engine lacks it (or `force_pull`).
    async fn ensure_image(
        &self,
        docker: &Docker,
        ctx: &mut OpContext,
        image: &Image,
    ) -> Result<(), PluginError> {
        let reference = image.reference();
        let present = match docker.inspect_image(&reference).await {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(engine_error(&format!("inspecting {reference}"), e)),
        };
        if present && !self.config.force_pull {
            return Ok(());
        }
        let host = auth::registry_of(&image.image);
        let given = auth::Given {
            encoded_auth: self.config.encoded_auth.as_deref(),
            auth: self.config.auth.as_ref(),
            ..Default::default()
        };
        let (creds, from) = auth::resolve("docker", &host, &given)?;
        ctx.info(&format!("pulling {reference} from {host} ({from})"));
        pull(docker, ctx.out.as_mut(), &image.image, &image.tag, creds)
            .await
            .map_err(|message| {
                PluginError::Failed(if auth::is_auth_refusal(&message) {
                    format!("the registry {host} refused to give {reference} ({from}): {message}")
                } else if present {
                    format!("pulling {reference} (force_pull) failed: {message}")
                } else {
                    format!(
                        "image {reference} is not on the Docker engine and pulling it failed: {message}"
                    )
                })
            })
    }

    /// Creates and starts `count` containers, recording each in `created` as
    /// soon as it exists; then waits for them to be up. Returns the first
    /// container's URL on its network.
    async fn start_all(
        &self,
        docker: &Docker,
        ctx: &mut OpContext,
        image: &Image,
        created: &mut Vec<Container>,
    ) -> Result<Option<String>, PluginError> {
        let reference = image.reference();
        let port = self.service_port();
        let mut env: Vec<String> = Vec::new();
        match (&ctx.entrypoint, image.entrypoint) {
            (Some(launch), true) => {
                let gateway = bridge_gateway(docker).await;
                for (k, v) in &launch.env {
                    let v = if k == "CAIRN_ADDRS" {
                        reachable_from_containers(v, gateway.as_deref())
                    } else {
                        v.clone()
                    };
                    env.push(format!("{k}={v}"));
                }
                // The URL tunnel reaches the app on PORT; config cannot move it.
                env.push("CAIRN_ENV_FIXED=PORT".to_string());
            }
            (None, true) => {}
            (_, false) => ctx.info(
                "the image has no Cairn entrypoint: its containers run without config, logs, exec or URLs from the cluster",
            ),
        }
        env.push(format!("PORT={port}"));
        for (k, v) in &self.config.static_environment {
            env.push(format!("{k}={v}"));
        }
        let mut labels: HashMap<String, String> = self
            .config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_PROJECT.into(), ctx.project.clone());
        labels.insert(LABEL_APP.into(), ctx.app.clone());
        labels.insert(LABEL_WORKSPACE.into(), ctx.workspace.clone());
        labels.insert(LABEL_DEPLOYMENT.into(), ctx.sequence.to_string());
        let mut exposed = vec![format!("{port}/tcp")];
        exposed.extend(self.config.extra_ports.iter().map(|p| format!("{p}/tcp")));
        for index in 0..self.config.count {
            let name = container_name(&[
                "cairn",
                &ctx.project,
                &ctx.app,
                &format!("v{}", ctx.sequence),
                &index.to_string(),
            ]);
            let mut labels = labels.clone();
            labels.insert(LABEL_INSTANCE.into(), index.to_string());
            let body = ContainerCreateBody {
                image: Some(reference.clone()),
                cmd: self.config.command.clone(),
                env: Some(env.clone()),
                labels: Some(labels),
                exposed_ports: Some(exposed.clone()),
                host_config: Some(HostConfig {
                    memory: self.resources.memory,
                    cpu_shares: self.resources.cpu_shares,
                    network_mode: self.config.networks.first().cloned(),
                    binds: (!self.config.binds.is_empty()).then(|| self.config.binds.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let made = docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                    body,
                )
                .await
                .map_err(|e| {
                    let m = describe(&e);
                    if m.contains("is already in use") {
                        PluginError::Failed(format!(
                            "a container named {name} already exists (left by an earlier run, or made by hand): remove it (`docker rm -f {name}`) and deploy again"
                        ))
                    } else {
                        PluginError::Failed(format!("creating container {name} from {reference}: {m}"))
                    }
                })?;
            created.push(Container {
                index,
                id: made.id.clone(),
                name: name.clone(),
            });
            for net in self.config.networks.iter().skip(1) {
                docker
                    .connect_network(
                        net,
                        NetworkConnectRequest {
                            container: made.id.clone(),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| engine_error(&format!("connecting {name} to network {net}"), e))?;
            }
            docker
                .start_container(
                    &made.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| engine_error(&format!("starting {name}"), e))?;
            ctx.info(&format!("started {name} ({})", short(&made.id)));
        }
        // Up: still running after a grace period, or the probe passes.
        let mut url = None;
        let started = Instant::now();
        let grace = match self.config.probe_path {
            Some(_) => Duration::ZERO,
            None => START_GRACE,
        };
        for c in created.iter() {
            let ip = wait_running(docker, c, started, grace).await?;
            if url.is_none() {
                url = ip.as_ref().map(|ip| format!("http://{ip}:{port}/"));
            }
            if let (Some(path), Some(ip)) = (&self.config.probe_path, &ip) {
                let limit = Duration::from_secs(
                    self.config.probe_timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT_S),
                );
                probe(docker, c, ip, port, path, limit).await?;
                ctx.info(&format!("{}: GET {path} answered", c.name));
            }
        }
        Ok(url)
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Waits until `grace` after `since` with the container running; a
/// container that exits meanwhile fails the deploy with its last log lines.
/// Returns its address on its main network.
async fn wait_running(
    docker: &Docker,
    c: &Container,
    since: Instant,
    grace: Duration,
) -> Result<Option<String>, PluginError> {
    loop {
        let info = docker
            .inspect_container(
                &c.id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| engine_error(&format!("inspecting {}", c.name), e))?;
        let st = info.state.clone().unwrap_or_default();
        if !st.running.unwrap_or(false) {
            let code = st.exit_code.unwrap_or(-1);
            let tail = last_lines(docker, &c.id).await;
            return Err(PluginError::Failed(format!(
                "container {} exited with code {code} as it started{}",
                c.name,
                if tail.is_empty() {
                    " (it printed nothing)".to_string()
                } else {
                    format!("; its last lines:\n{}", tail.join("\n"))
                }
            )));
        }
        if since.elapsed() >= grace {
            let ip = info
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|nets| {
                    nets.values()
                        .filter_map(|n| n.ip_address.clone())
                        .find(|ip| !ip.is_empty())
                });
            return Ok(ip);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines a container printed (stdout and stderr).
async fn last_lines(docker: &Docker, id: &str) -> Vec<String> {
    let mut stream = docker.logs(
        id,
        Some(
            LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .tail(&FAILED_LOG_LINES.to_string())
                .build(),
        ),
    );
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    text.lines().map(|l| format!("  {l}")).collect()
}

/// HTTP GET `path` on the container until it answers 2xx/3xx or `limit` passes.
async fn probe(
    docker: &Docker,
    c: &Container,
    ip: &str,
    port: u16,
    path: &str,
    limit: Duration,
) -> Result<(), PluginError> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    while start.elapsed() < limit {
        match http_status(ip, port, path).await {
            Ok(code) if (200..400).contains(&code) => return Ok(()),
            Ok(code) => last = format!("answered {code}"),
            Err(e) => last = e,
        }
        // A container that died while probed says so, with its lines.
        if let Ok(info) = docker
            .inspect_container(
                &c.id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            if !info.state.and_then(|s| s.running).unwrap_or(false) {
                let tail = last_lines(docker, &c.id).await;
                return Err(PluginError::Failed(format!(
                    "container {} exited while its health probe waited; its last lines:\n{}",
                    c.name,
                    tail.join("\n")
                )));
            }
        }
        // Often at first (a server is usually up within tens of ms), then
        // less: the probe must not load a slow starter.
        let pause = if start.elapsed() < Duration::from_secs(2) {
            25
        } else {
            250
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    Err(PluginError::Failed(format!(
        "the health probe GET {path} on port {port} of {} did not pass within {} s ({last})",
        c.name,
        limit.as_secs()
    )))
}

async fn http_status(ip: &str, port: u16, path: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: cairn-probe\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .map_err(|_| "no answer within 2 s".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))
}

/// Removes a container (and its anonymous volumes), ignoring "not found".
async fn remove(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await;
}

/// Removes every container labelled as deployment `sequence` of the app.
/// Returns how many there were.
async fn remove_labelled(
    docker: &Docker,
    project: &str,
    app: &str,
    sequence: u64,
) -> Result<usize, PluginError> {
    let filters: HashMap<String, Vec<String>> = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_PROJECT}={project}"),
            format!("{LABEL_APP}={app}"),
            format!("{LABEL_DEPLOYMENT}={sequence}"),
        ],
    )]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| engine_error("listing containers", e))?;
    for c in &list {
        if let Some(id) = &c.id {
            remove(docker, id).await;
        }
    }
    Ok(list.len())
}

/// The default bridge's gateway: the host's address as containers see it.
/// The engine names it in the network's IPAM config, or (as the default
/// bridge often does) gives only the subnet, whose first address it takes.
pub async fn bridge_gateway(docker: &Docker) -> Option<String> {
    let net = docker
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .ok()?;
    let configs = net.ipam?.config?;
    if let Some(gw) = configs.iter().find_map(|c| {
        c.gateway
            .clone()
            .filter(|g| g.parse::<std::net::Ipv4Addr>().is_ok())
    }) {
        return Some(gw);
    }
    configs
        .iter()
        .find_map(|c| c.subnet.as_deref().and_then(first_host))
        .map(|ip| ip.to_string())
}

/// The first host address of an IPv4 subnet ("172.17.0.0/16" → 172.17.0.1).
fn first_host(subnet: &str) -> Option<std::net::Ipv4Addr> {
    let (net, bits) = subnet.split_once('/')?;
    let net: std::net::Ipv4Addr = net.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    if bits > 30 {
        return None;
    }
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    Some(std::net::Ipv4Addr::from((u32::from(net) & mask) + 1))
}

/// `CAIRN_ADDRS` as containers can use it: a loopback address means this host,
/// which containers reach at the bridge's gateway (the node also listens
/// there, see the node's `bridge` listener). Other addresses stay, after the
/// rewritten ones.
pub fn reachable_from_containers(addrs: &str, gateway: Option<&str>) -> String {
    let mut out: Vec<String> = Vec::new();
    for a in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let mapped = match (a.parse::<std::net::SocketAddr>(), gateway) {
            (Ok(sa), Some(gw)) if sa.ip().is_loopback() => format!("{gw}:{}", sa.port()),
            _ => a.to_string(),
        };
        if !out.contains(&mapped) {
            out.push(mapped);
        }
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_subnets_and_addresses() {
        assert_eq!(parse_size("512MB"), Some(512_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(first_host("172.17.0.0/16"), Some([172, 17, 0, 1].into()));
        assert_eq!(first_host("10.1.2.3/24"), Some([10, 1, 2, 1].into()));
        assert_eq!(first_host("nonsense"), None);
        assert_eq!(
            reachable_from_containers(
                "127.0.0.1:9701,10.0.0.5:9701,[::1]:9701",
                Some("172.17.0.1")
            ),
            "172.17.0.1:9701,10.0.0.5:9701"
        );
        assert_eq!(
            reachable_from_containers("127.0.0.1:9701", None),
            "127.0.0.1:9701"
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |v: serde_json::Value| match DockerPlatform::boxed(&v) {
            Ok(_) => panic!("accepted {v}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            err(serde_json::json!({"resources": {"memory": "lots"}})),
            "plugin \"docker\": field \"resources.memory\": \"lots\" is not a size such as \"512MB\" or \"1GiB\""
        );
        assert!(err(serde_json::json!({"servce_port": 80})).contains("field \"servce_port\""));
        assert!(
            err(serde_json::json!({"count": 0})).contains("field \"count\": must be at least 1")
        );
        assert!(DockerPlatform::boxed(&serde_json::json!({
            "service_port": 8080, "static_environment": {"A": "b"}, "command": ["x"],
            "resources": {"memory": "256MB", "cpu": 512}, "networks": ["n"], "labels": {"l": "v"},
            "probe_path": "/health", "binds": [], "extra_ports": [9000], "scratch_path": "/s",
            "force_pull": false
        }))
        .is_ok());
    }
}
