//! The `kubernetes` platform's configuration (Waypoint's fields) and the objects it makes
//! from it: a Deployment, the Secret its entrypoints read, and an autoscaler.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, IntoDeserializer};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value as J};

use super::Target;
use crate::{config_error, PluginError};

pub(crate) const PLUGIN: &str = "kubernetes";
/// The app's port when `service_port` is not given (Waypoint's default).
const DEFAULT_SERVICE_PORT: u16 = 3000;
/// How long a rollout may take unless `rollout_timeout` says.
pub(crate) const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);
/// Probe defaults (Waypoint's, except the first delay: 2 s, with readiness checked every 2 s,
/// so a quick app is ready in seconds).
const DEFAULT_PROBE_DELAY_S: u32 = 2;
const DEFAULT_PROBE_TIMEOUT_S: u32 = 5;
const DEFAULT_LIVENESS_FAILURES: u32 = 30;
const READINESS_PERIOD_S: u32 = 2;

/// `deploy { use "kubernetes" { … } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub kubeconfig: Option<String>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// Unset: one pod (or what an autoscaler keeps).
    #[serde(default)]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub service_port: Option<u16>,
    /// More ports of the app container: `[{ name = "grpc", port = 9000 }]`.
    #[serde(default)]
    pub ports: Vec<PortMap>,
    #[serde(default)]
    pub probe_path: Option<String>,
    #[serde(default)]
    pub probe: Option<ProbeCfg>,
    #[serde(default)]
    pub static_environment: BTreeMap<String, String>,
    /// Added to the pods.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Added to the Deployment and its pods (Cairn's own labels win).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An existing Secret of the namespace for pulling the image.
    #[serde(default)]
    pub image_secret: Option<String>,
    #[serde(default)]
    pub service_account: Option<String>,
    /// `{ limits_memory = "256Mi", requests_cpu = "100m" }`.
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
    #[serde(default)]
    pub cpu: Option<Amounts>,
    #[serde(default)]
    pub memory: Option<Amounts>,
    /// Directories given an emptyDir volume in every container.
    #[serde(default, deserialize_with = "one_or_many")]
    pub scratch_path: Vec<String>,
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    #[serde(default)]
    pub pod: Option<PodCfg>,
    /// Cairn: the cluster addresses (`host:port`, comma-separated) the pods' entrypoints
    /// dial; default: the runner's, with a loopback one turned into the Docker bridge's
    /// gateway (pods on this machine's engine reach the node there).
    #[serde(default)]
    pub cairn_address: Option<String>,
    /// Cairn: how long the rollout may take ("90s", "5m", or seconds).
    #[serde(default)]
    pub rollout_timeout: Option<J>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbeCfg {
    #[serde(default)]
    pub initial_delay: Option<u32>,
    #[serde(default)]
    pub timeout: Option<u32>,
    #[serde(default)]
    pub failure_threshold: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Amounts {
    #[serde(default)]
    pub request: Option<String>,
    #[serde(default)]
    pub limit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Autoscale {
    #[serde(default)]
    pub min_replicas: Option<i32>,
    #[serde(default)]
    pub max_replicas: Option<i32>,
    #[serde(default)]
    pub cpu_percent: Option<i32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PodCfg {
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
    #[serde(default)]
    pub container: Option<ContainerCfg>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub sidecar: Vec<Sidecar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecurityContext {
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub run_as_group: Option<i64>,
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    #[serde(default)]
    pub fs_group: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContainerCfg {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub port: Vec<PortCfg>,
    #[serde(default)]
    pub probe_path: Option<String>,
    #[serde(default)]
    pub probe: Option<ProbeCfg>,
    #[serde(default)]
    pub cpu: Option<Amounts>,
    #[serde(default)]
    pub memory: Option<Amounts>,
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub static_environment: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sidecar {
    pub image: String,
    #[serde(default)]
    pub container: ContainerCfg,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortCfg {
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub host_ip: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// An entry of Waypoint's `ports` list (`port`, `name`; the releaser's keys are accepted).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortMap {
    pub port: u16,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub target_port: Option<u16>,
    #[serde(default)]
    #[allow(dead_code)]
    pub node_port: Option<u16>,
}

/// A block or a list of blocks (HCL gives a repeated block as a list, one block as an
/// object), or a string or a list of strings.
pub(crate) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a block, a list of blocks, or a list of strings")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| vec![t])
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            T::deserialize(v.to_string().into_deserializer()).map(|t| vec![t])
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V(PhantomData))
}

impl Config {
    pub fn parse(config: &serde_json::Value) -> Result<Config, PluginError> {
        let c: Config = crate::parse_config(PLUGIN, config)?;
        if c.replicas.is_some_and(|r| r < 0) {
            return Err(config_error(PLUGIN, "replicas", "must not be negative"));
        }
        for (field, p) in [
            ("probe_path", c.probe_path.as_ref()),
            (
                "pod.container.probe_path",
                c.pod
                    .as_ref()
                    .and_then(|p| p.container.as_ref())
                    .and_then(|c| c.probe_path.as_ref()),
            ),
        ] {
            if p.is_some_and(|p| !p.starts_with('/')) {
                return Err(config_error(PLUGIN, field, "must start with '/'"));
            }
        }
        for (i, s) in c.scratch_path.iter().enumerate() {
            if !s.starts_with('/') {
                return Err(config_error(
                    PLUGIN,
                    &format!("scratch_path[{i}]"),
                    "must be an absolute path",
                ));
            }
        }
        check_resources("resources", &c.resources)?;
        if let Some(p) = &c.pod {
            if let Some(ct) = &p.container {
                check_resources("pod.container.resources", &ct.resources)?;
                if ct.command.as_ref().is_some_and(|c| c.is_empty()) {
                    return Err(config_error(
                        PLUGIN,
                        "pod.container.command",
                        "must name a program to run",
                    ));
                }
            }
            for (i, s) in p.sidecar.iter().enumerate() {
                if s.image.trim().is_empty() {
                    return Err(config_error(
                        PLUGIN,
                        &format!("pod.sidecar[{i}].image"),
                        "must name an image",
                    ));
                }
                check_resources(
                    &format!("pod.sidecar[{i}].container.resources"),
                    &s.container.resources,
                )?;
            }
        }
        if let Some(a) = &c.autoscale {
            if let (Some(min), Some(max)) = (a.min_replicas, a.max_replicas) {
                if min > max {
                    return Err(config_error(
                        PLUGIN,
                        "autoscale.min_replicas",
                        "must not be above max_replicas",
                    ));
                }
            }
            if a.max_replicas.is_none() {
                return Err(config_error(
                    PLUGIN,
                    "autoscale.max_replicas",
                    "must be given (an autoscaler needs a ceiling)",
                ));
            }
        }
        c.rollout_timeout()?;
        Ok(c)
    }

    pub fn target(&self) -> Target {
        Target {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        }
    }

    pub fn service_port(&self) -> u16 {
        self.service_port.unwrap_or(DEFAULT_SERVICE_PORT)
    }

    pub fn rollout_timeout(&self) -> Result<Duration, PluginError> {
        rollout_timeout(PLUGIN, self.rollout_timeout.as_ref())
    }

    /// How many pods the rollout waits for.
    pub fn wanted_pods(&self) -> i32 {
        match (&self.autoscale, self.replicas) {
            (_, Some(r)) => r,
            (Some(a), None) => a.min_replicas.unwrap_or(1),
            (None, None) => 1,
        }
    }
}

/// A plugin's `rollout_timeout` field: "90s", "5m", or a number of seconds; default
/// [`DEFAULT_ROLLOUT_TIMEOUT`].
pub(crate) fn rollout_timeout(plugin: &str, v: Option<&J>) -> Result<Duration, PluginError> {
    let bad = || {
        config_error(
            plugin,
            "rollout_timeout",
            "must be a duration such as \"90s\" or \"5m\", or a number of seconds",
        )
    };
    match v {
        None => Ok(DEFAULT_ROLLOUT_TIMEOUT),
        Some(J::Number(n)) => n
            .as_u64()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .ok_or_else(bad),
        Some(J::String(s)) => parse_duration(s).ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// "90s", "5m", "1h", "250ms", or a bare number of seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

fn check_resources(field: &str, r: &BTreeMap<String, String>) -> Result<(), PluginError> {
    for k in r.keys() {
        if !(k.starts_with("limits_") || k.starts_with("requests_")) || k.ends_with('_') {
            return Err(config_error(
                PLUGIN,
                &format!("{field}.{k}"),
                "must start with limits_ or requests_ and name a resource (e.g. limits_memory)",
            ));
        }
    }
    Ok(())
}

/// What a deployment's objects are made from besides the configuration.
pub(crate) struct Inputs<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub image: &'a str,
    /// The image exists only on the engine that built it (never pushed).
    pub image_local: bool,
    /// The image runs the Cairn entrypoint in front of its command.
    pub entrypoint: bool,
    /// The Secret holding the entrypoint's settings, when there is one.
    pub secret: Option<&'a str>,
    /// Cairn's labels of this deployment (they select its pods).
    pub labels: &'a BTreeMap<String, String>,
    pub app: &'a str,
}

fn amounts(
    cpu: Option<&Amounts>,
    memory: Option<&Amounts>,
    extra: &BTreeMap<String, String>,
) -> Option<J> {
    let mut limits = serde_json::Map::new();
    let mut requests = serde_json::Map::new();
    for (res, a) in [("cpu", cpu), ("memory", memory)] {
        if let Some(a) = a {
            if let Some(r) = &a.request {
                requests.insert(res.into(), J::String(r.clone()));
            }
            if let Some(l) = &a.limit {
                limits.insert(res.into(), J::String(l.clone()));
            }
        }
    }
    for (k, v) in extra {
        if let Some(res) = k.strip_prefix("limits_") {
            limits.insert(res.into(), J::String(v.clone()));
        } else if let Some(res) = k.strip_prefix("requests_") {
            requests.insert(res.into(), J::String(v.clone()));
        }
    }
    if limits.is_empty() && requests.is_empty() {
        return None;
    }
    let mut out = serde_json::Map::new();
    if !limits.is_empty() {
        out.insert("limits".into(), J::Object(limits));
    }
    if !requests.is_empty() {
        out.insert("requests".into(), J::Object(requests));
    }
    Some(J::Object(out))
}

fn probes(path: Option<&str>, port: J, cfg: Option<&ProbeCfg>, default_failures: u32) -> (J, J) {
    let handler = match path {
        Some(p) => json!({"httpGet": {"path": p, "port": port}}),
        None => json!({"tcpSocket": {"port": port}}),
    };
    let delay = cfg
        .and_then(|c| c.initial_delay)
        .unwrap_or(DEFAULT_PROBE_DELAY_S);
    let timeout = cfg
        .and_then(|c| c.timeout)
        .unwrap_or(DEFAULT_PROBE_TIMEOUT_S);
    let failures = cfg
        .and_then(|c| c.failure_threshold)
        .unwrap_or(default_failures)
        .max(1);
    let mut liveness = handler.clone();
    let mut readiness = handler;
    for (p, extra) in [
        (&mut liveness, json!({"failureThreshold": failures})),
        (&mut readiness, json!({"periodSeconds": READINESS_PERIOD_S})),
    ] {
        let m = p.as_object_mut().expect("an object");
        m.insert("initialDelaySeconds".into(), json!(delay));
        m.insert("timeoutSeconds".into(), json!(timeout));
        for (k, v) in extra.as_object().expect("an object") {
            m.insert(k.clone(), v.clone());
        }
    }
    (liveness, readiness)
}

fn env_list(maps: &[&BTreeMap<String, String>]) -> Vec<J> {
    let mut merged: BTreeMap<&String, &String> = BTreeMap::new();
    for m in maps {
        merged.extend(m.iter());
    }
    merged
        .into_iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect()
}

fn port_list(ports: &[PortCfg]) -> Vec<J> {
    ports
        .iter()
        .map(|p| {
            let mut o = json!({
                "name": p.name,
                "containerPort": p.port,
                "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into()).to_uppercase(),
            });
            if let Some(h) = p.host_port {
                o["hostPort"] = json!(h);
            }
            if let Some(ip) = &p.host_ip {
                o["hostIP"] = json!(ip);
            }
            o
        })
        .collect()
}

/// The Deployment of one Cairn deployment, as JSON of the `apps/v1` object.
pub(crate) fn deployment(cfg: &Config, i: &Inputs) -> J {
    let port = cfg.service_port();
    let empty = ContainerCfg::default();
    let main = cfg
        .pod
        .as_ref()
        .and_then(|p| p.container.as_ref())
        .unwrap_or(&empty);
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    for (n, path) in cfg.scratch_path.iter().enumerate() {
        let vol = format!("scratch-{n}");
        volumes.push(json!({"name": vol, "emptyDir": {}}));
        mounts.push(json!({"name": vol, "mountPath": path}));
    }

    // The app's container.
    let mut ports = vec![json!({"name": "http", "containerPort": port, "protocol": "TCP"})];
    for p in &cfg.ports {
        if p.port != port {
            let mut o = json!({"containerPort": p.port, "protocol": "TCP"});
            if let Some(n) = &p.name {
                o["name"] = json!(n);
            }
            ports.push(o);
        }
    }
    ports.extend(
        port_list(&main.port)
            .into_iter()
            .filter(|p| p["containerPort"] != json!(port)),
    );
    let fixed = BTreeMap::from([("PORT".to_string(), port.to_string())]);
    let cairn_fixed = BTreeMap::from([("CAIRN_ENV_FIXED".to_string(), "PORT".to_string())]);
    let mut env_maps = vec![&fixed];
    if i.entrypoint {
        env_maps.push(&cairn_fixed);
    }
    env_maps.push(&cfg.static_environment);
    env_maps.push(&main.static_environment);
    let (liveness, readiness) = probes(
        main.probe_path.as_deref().or(cfg.probe_path.as_deref()),
        json!(port),
        main.probe.as_ref().or(cfg.probe.as_ref()),
        DEFAULT_LIVENESS_FAILURES,
    );
    let mut resources = cfg.resources.clone();
    resources.extend(main.resources.clone());
    let mut app = json!({
        "name": main.name.clone().unwrap_or_else(|| super::object_name(&[i.app])),
        "image": i.image,
        "ports": ports,
        "env": env_list(&env_maps),
        "livenessProbe": liveness,
        "readinessProbe": readiness,
    });
    if i.image_local {
        // Only this machine's engine has it: never try a registry.
        app["imagePullPolicy"] = json!("IfNotPresent");
    }
    if let Some(secret) = i.secret {
        app["envFrom"] = json!([{"secretRef": {"name": secret}}]);
    }
    match (&main.command, i.entrypoint) {
        // The image's ENTRYPOINT is the Cairn entrypoint; a command replaces it, so the
        // entrypoint is put back in front.
        (Some(cmd), true) => {
            let mut c = vec![crate::docker::ENTRYPOINT_PATH.to_string(), "--".to_string()];
            c.extend(cmd.iter().cloned());
            app["command"] = json!(c);
        }
        (Some(cmd), false) => app["command"] = json!(cmd),
        (None, _) => {}
    }
    if let Some(args) = &main.args {
        app["args"] = json!(args);
    }
    if let Some(r) = amounts(
        main.cpu.as_ref().or(cfg.cpu.as_ref()),
        main.memory.as_ref().or(cfg.memory.as_ref()),
        &resources,
    ) {
        app["resources"] = r;
    }
    if !mounts.is_empty() {
        app["volumeMounts"] = json!(mounts);
    }
    let mut containers = vec![app];

    for (n, s) in cfg.pod.iter().flat_map(|p| p.sidecar.iter()).enumerate() {
        let c = &s.container;
        let mut o = json!({
            "name": c.name.clone().unwrap_or_else(|| format!("sidecar-{n}")),
            "image": s.image,
            "env": env_list(&[&c.static_environment]),
        });
        let ports = port_list(&c.port);
        if let Some(first) = ports.first() {
            let (liveness, readiness) = probes(
                c.probe_path.as_deref(),
                first["containerPort"].clone(),
                c.probe.as_ref(),
                5,
            );
            if c.probe_path.is_some() || c.probe.is_some() {
                o["livenessProbe"] = liveness;
                o["readinessProbe"] = readiness;
            }
        }
        if !ports.is_empty() {
            o["ports"] = json!(ports);
        }
        if let Some(cmd) = &c.command {
            o["command"] = json!(cmd);
        }
        if let Some(args) = &c.args {
            o["args"] = json!(args);
        }
        if let Some(r) = amounts(c.cpu.as_ref(), c.memory.as_ref(), &c.resources) {
            o["resources"] = r;
        }
        if !mounts.is_empty() {
            o["volumeMounts"] = json!(mounts);
        }
        containers.push(o);
    }

    let mut labels = cfg.labels.clone();
    labels.extend(i.labels.clone());
    let mut pod_spec = json!({"containers": containers});
    if !volumes.is_empty() {
        pod_spec["volumes"] = json!(volumes);
    }
    if let Some(s) = &cfg.image_secret {
        pod_spec["imagePullSecrets"] = json!([{"name": s}]);
    }
    if let Some(sa) = &cfg.service_account {
        pod_spec["serviceAccountName"] = json!(sa);
    }
    if let Some(sc) = cfg.pod.as_ref().and_then(|p| p.security_context.as_ref()) {
        let mut o = serde_json::Map::new();
        if let Some(v) = sc.run_as_user {
            o.insert("runAsUser".into(), json!(v));
        }
        if let Some(v) = sc.run_as_group {
            o.insert("runAsGroup".into(), json!(v));
        }
        if let Some(v) = sc.run_as_non_root {
            o.insert("runAsNonRoot".into(), json!(v));
        }
        if let Some(v) = sc.fs_group {
            o.insert("fsGroup".into(), json!(v));
        }
        pod_spec["securityContext"] = J::Object(o);
    }
    let mut spec = json!({
        "selector": {"matchLabels": i.labels},
        "template": {
            "metadata": {"labels": labels, "annotations": cfg.annotations},
            "spec": pod_spec,
        },
        "progressDeadlineSeconds": cfg.rollout_timeout().map(|d| d.as_secs().max(1)).unwrap_or(600),
    });
    if let Some(r) = cfg.replicas {
        spec["replicas"] = json!(r);
    } else if let Some(a) = &cfg.autoscale {
        spec["replicas"] = json!(a.min_replicas.unwrap_or(1));
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": i.name, "namespace": i.namespace, "labels": labels},
        "spec": spec,
    })
}

/// The Secret holding what the pods' entrypoints need to reach the cluster (their token
/// among it).
pub(crate) fn secret(
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
) -> J {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "stringData": env,
    })
}

/// The autoscaler of a deployment (`autoscaling/v1`, which every version serves).
pub(crate) fn autoscaler(
    a: &Autoscale,
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> J {
    let mut spec = json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "maxReplicas": a.max_replicas.unwrap_or(1),
    });
    if let Some(m) = a.min_replicas {
        spec["minReplicas"] = json!(m);
    }
    if let Some(c) = a.cpu_percent {
        spec["targetCPUUtilizationPercentage"] = json!(c);
    }
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: J) -> Result<Config, String> {
        Config::parse(&v).map_err(|e| e.to_string())
    }

    #[test]
    fn waypoint_fields_parse_and_bad_ones_are_named() {
        // The corpus's stanzas, as HCL gives them (one block: an object; repeated: a list).
        let c = parse(json!({
            "namespace": "default", "probe_path": "/", "scratch_path": ["/shared-config"],
            "service_port": 8080, "annotations": {"a": "b"}, "image_secret": "regcred",
            "service_account": "sa", "replicas": 2,
            "pod": {"sidecar": {"image": "nginx:1.21.1", "container": {
                "name": "nginx", "port": {"name": "http", "port": 80},
                "command": ["/bin/sh"], "args": ["-c", "nginx"]}}}
        }))
        .expect("parses");
        assert_eq!(c.pod.as_ref().expect("pod").sidecar.len(), 1);
        let c2 = parse(
            json!({"pod": {"sidecar": {"image": "telegraf", "container": {
            "port": [{"name": "a", "port": 1}, {"name": "b", "port": 2}],
            "probe_path": "/health", "static_environment": {"X": "y"}}}}}),
        )
        .expect("parses");
        assert_eq!(c2.pod.expect("pod").sidecar[0].container.port.len(), 2);
        assert_eq!(
            parse(json!({"scratch_path": "/tmp/x"}))
                .expect("a string")
                .scratch_path,
            ["/tmp/x"]
        );
        assert!(parse(json!({"probe": {"initial_delay": 1, "timeout": 2, "failure_threshold": 3},
            "cpu": {"request": "100m", "limit": "1"}, "memory": {"limit": "128Mi"},
            "resources": {"limits_ephemeral-storage": "1Gi"},
            "autoscale": {"min_replicas": 1, "max_replicas": 3, "cpu_percent": 50},
            "context": "c", "kubeconfig": "~/k", "rollout_timeout": "90s",
            "cairn_address": "10.0.0.1:9701", "labels": {"l": "v"},
            "static_environment": {"A": "b"}, "ports": [{"port": 9000, "name": "grpc"}],
            "pod": {"security_context": {"run_as_user": 1000, "run_as_non_root": true, "fs_group": 2000, "run_as_group": 3000}}}))
        .is_ok());

        let err = |v: J| parse(v).expect_err("refused");
        assert!(err(json!({"probe_pth": "/"})).contains("field \"probe_pth\""));
        assert!(err(json!({"probe_path": "health"}))
            .contains("field \"probe_path\": must start with '/'"));
        assert!(err(json!({"pod": {"sidecar": {"container": {}}}})).contains("image"));
        assert!(err(json!({"resources": {"memory": "1Gi"}})).contains("field \"resources.memory\""));
        assert!(err(json!({"rollout_timeout": "soon"})).contains("field \"rollout_timeout\""));
        assert!(err(json!({"autoscale": {"min_replicas": 3}})).contains("autoscale.max_replicas"));
        assert!(err(json!({"replicas": "two"})).contains("field \"replicas\""));
    }

    #[test]
    fn the_deployment_object_carries_what_the_config_says() {
        let cfg = parse(json!({
            "service_port": 8080, "replicas": 2, "probe_path": "/healthz",
            "static_environment": {"MODE": "x"}, "annotations": {"note": "y"},
            "labels": {"team": "web", "cairn.dev/app": "hijack"}, "image_secret": "regcred",
            "scratch_path": ["/scratch"], "memory": {"limit": "128Mi"},
            "pod": {"container": {"command": ["/bin/app", "serve"]},
                    "sidecar": [{"image": "side:1", "container": {"name": "side"}}]}
        }))
        .expect("parses");
        let labels = super::super::deployment_labels("p", "web", "default", 4);
        let d = deployment(
            &cfg,
            &Inputs {
                name: "web-v4",
                namespace: "ns",
                image: "127.0.0.1:5000/p/web:latest",
                image_local: false,
                entrypoint: true,
                secret: Some("web-v4-cairn"),
                labels: &labels,
                app: "web",
            },
        );
        // It is a valid apps/v1 Deployment.
        let typed: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(d.clone()).expect("a Deployment");
        let spec = typed.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let sel = spec.selector.match_labels.expect("labels");
        assert_eq!(
            sel.get("cairn.dev/deployment").map(String::as_str),
            Some("4")
        );
        let tl = spec
            .template
            .metadata
            .expect("meta")
            .labels
            .expect("labels");
        assert_eq!(
            tl.get("cairn.dev/app").map(String::as_str),
            Some("web"),
            "Cairn's labels win"
        );
        assert_eq!(tl.get("team").map(String::as_str), Some("web"));
        let pod = spec.template.spec.expect("pod");
        assert_eq!(pod.containers.len(), 2);
        let app = &pod.containers[0];
        assert_eq!(
            app.command.as_deref(),
            Some(
                &[
                    "/cairn-entrypoint".to_string(),
                    "--".into(),
                    "/bin/app".into(),
                    "serve".into()
                ][..]
            ),
            "a command keeps the entrypoint in front"
        );
        let env: BTreeMap<_, _> = app
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["PORT"], "8080");
        assert_eq!(env["MODE"], "x");
        assert_eq!(env["CAIRN_ENV_FIXED"], "PORT");
        assert!(
            !env.contains_key("CAIRN_ENTRYPOINT_TOKEN"),
            "the token is in the Secret"
        );
        assert_eq!(
            app.env_from.as_ref().expect("envFrom")[0]
                .secret_ref
                .as_ref()
                .expect("secret")
                .name,
            "web-v4-cairn"
        );
        let probe = app.readiness_probe.as_ref().expect("readiness");
        assert_eq!(
            probe.http_get.as_ref().expect("http").path.as_deref(),
            Some("/healthz")
        );
        assert_eq!(pod.image_pull_secrets.expect("secrets")[0].name, "regcred");
        assert_eq!(pod.volumes.expect("volumes").len(), 1);
        assert_eq!(
            pod.containers[1].volume_mounts.as_ref().expect("mounts")[0].mount_path,
            "/scratch"
        );
        assert!(app
            .resources
            .as_ref()
            .expect("resources")
            .limits
            .as_ref()
            .expect("limits")
            .contains_key("memory"));
    }
}
