//! Releaser `kubernetes`: a Service per app (and the Ingresses the config asks for)
//! selecting the released deployment's pods. A release changes the Service's selector in
//! one server-side apply, so traffic moves at once; releasing an older deployment is a
//! rollback; `--prune` deletes deployments older than the retained ones.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::Api;
use serde::Deserialize;
use serde_json::json;

use super::conn::{status_code, Connected};
use super::platform::{delete_labelled, PodWait};
use super::{
    app_labels, deployment_labels, object_name, selector, service_name, Deployment, Release,
    Target, DEPLOYMENT, LABEL_DEPLOYMENT, RELEASE,
};
use crate::{
    async_trait, config_error, parse_config, OpContext, PluginError, ReleaseOptions,
    ReleaseOutcome, Releaser, Value,
};

const PLUGIN: &str = "kubernetes";
/// The Service's port when `port` is not given (Waypoint's default).
const DEFAULT_PORT: u16 = 80;
/// How long a release waits for the Service's endpoints to be the new pods.
const SWITCH_WAIT: Duration = Duration::from_secs(30);
/// Server-side apply's field manager.
const MANAGER: &str = "cairn";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    load_balancer: bool,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    node_port: Option<u16>,
    /// Several ports: `[{ port = 80, target_port = 3000, node_port = 30080, name = "http" }]`.
    #[serde(default)]
    ports: Vec<PortEntry>,
    /// On the Service.
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// `ingress "NAME" { host, path, path_type, default, tls { hosts, secret_name },
    /// annotations }`.
    #[serde(default)]
    ingress: BTreeMap<String, IngressCfg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortEntry {
    port: u16,
    #[serde(default)]
    target_port: Option<u16>,
    #[serde(default)]
    node_port: Option<u16>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngressCfg {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    path_type: Option<String>,
    #[serde(default)]
    default: bool,
    #[serde(default)]
    tls: Option<Tls>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    #[serde(default)]
    hosts: Vec<String>,
    secret_name: String,
}

/// Releaser `kubernetes`.
pub struct KubernetesReleaser {
    config: Config,
}

impl KubernetesReleaser {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Releaser>, PluginError> {
        let config: Config = parse_config(PLUGIN, config)?;
        if config.ports.len() > 1 && config.ports.iter().any(|p| p.name.is_none()) {
            return Err(config_error(
                PLUGIN,
                "ports",
                "each port needs a name when there are several",
            ));
        }
        for (n, i) in &config.ingress {
            if let Some(p) = &i.path {
                if !p.starts_with('/') {
                    return Err(config_error(
                        PLUGIN,
                        &format!("ingress.{n}.path"),
                        "must start with '/'",
                    ));
                }
            }
            if let Some(t) = &i.path_type {
                if !["Exact", "Prefix", "ImplementationSpecific"].contains(&t.as_str()) {
                    return Err(config_error(
                        PLUGIN,
                        &format!("ingress.{n}.path_type"),
                        "must be Exact, Prefix or ImplementationSpecific",
                    ));
                }
            }
        }
        Ok(Box::new(KubernetesReleaser { config }))
    }

    fn service_ports(&self, target_port: u16) -> Vec<serde_json::Value> {
        if self.config.ports.is_empty() {
            let mut p = json!({
                "name": "http",
                "port": self.config.port.unwrap_or(DEFAULT_PORT),
                "targetPort": target_port,
                "protocol": "TCP",
            });
            if let Some(n) = self.config.node_port {
                p["nodePort"] = json!(n);
            }
            return vec![p];
        }
        self.config
            .ports
            .iter()
            .map(|e| {
                let mut p = json!({
                    "port": e.port,
                    "targetPort": e.target_port.unwrap_or(target_port),
                    "protocol": "TCP",
                });
                if let Some(n) = &e.name {
                    p["name"] = json!(n);
                }
                if let Some(n) = e.node_port {
                    p["nodePort"] = json!(n);
                }
                p
            })
            .collect()
    }

    fn service_type(&self) -> &'static str {
        if self.config.load_balancer {
            "LoadBalancer"
        } else if self.config.node_port.is_some()
            || self.config.ports.iter().any(|p| p.node_port.is_some())
        {
            "NodePort"
        } else {
            "ClusterIP"
        }
    }
}

#[async_trait]
impl Releaser for KubernetesReleaser {
    fn input_types(&self) -> &[&'static str] {
        &[DEPLOYMENT]
    }

    fn output_type(&self) -> &'static str {
        RELEASE
    }

    fn owns_objects(&self) -> bool {
        true
    }

    async fn release(
        &self,
        ctx: &mut OpContext,
        target: &Value,
        others: &[(u64, Value)],
        opts: &ReleaseOptions,
    ) -> Result<ReleaseOutcome, PluginError> {
        let d: Deployment = target.get::<Deployment>()?;
        if let Some(ns) = &self.config.namespace {
            if *ns != d.namespace {
                return Err(config_error(
                    PLUGIN,
                    "namespace",
                    &format!(
                        "is {ns:?}, but v{} runs in namespace {:?}: a Service selects pods of its own namespace only",
                        d.sequence, d.namespace
                    ),
                ));
            }
        }
        let t = Target {
            kubeconfig: self
                .config
                .kubeconfig
                .clone()
                .or(d.target.kubeconfig.clone()),
            context: self.config.context.clone().or(d.target.context.clone()),
            namespace: Some(d.namespace.clone()),
        };
        let c = t.connect().await?;
        let name = service_name(&d.app, &d.workspace);
        let labels = app_labels(&d.project, &d.app, &d.workspace);
        let svc = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name, "namespace": c.namespace, "labels": labels,
                "annotations": self.config.annotations,
            },
            "spec": {
                "type": self.service_type(),
                "selector": d.selector,
                "ports": self.service_ports(d.service_port),
            },
        });
        let services: Api<Service> = Api::namespaced(c.client.clone(), &c.namespace);
        let switched = Instant::now();
        let applied = services
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&svc),
            )
            .await
            .map_err(|e| c.error(&format!("applying Service {name}"), e))?;
        ctx.info(&format!(
            "Service {name} ({}) now selects v{}",
            self.service_type(),
            d.sequence
        ));
        let pods = wait_for_endpoints(&c, &name, d.sequence).await?;
        ctx.info(&format!(
            "Service {name}'s endpoints are v{}'s {pods} pod(s) ({:.2} s after the switch)",
            d.sequence,
            switched.elapsed().as_secs_f64()
        ));

        let ingresses = self.apply_ingresses(&c, ctx, &name, &labels).await?;
        let urls = self.urls(&c, &applied, &ingresses).await;
        for u in &urls {
            ctx.info(&format!("reachable at {u}"));
        }

        let mut pruned = Vec::new();
        if opts.prune {
            let mut older: Vec<&(u64, Value)> =
                others.iter().filter(|(s, _)| *s < d.sequence).collect();
            older.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
            for (seq, v) in older.into_iter().skip(opts.retain) {
                let Ok(od) = v.get::<Deployment>() else {
                    continue;
                };
                let l = deployment_labels(&od.project, &od.app, &od.workspace, od.sequence);
                let what = delete_labelled(&c, ctx, &l, PodWait::No).await?;
                ctx.info(&format!("pruned v{seq}: {what}"));
                pruned.push(*seq);
            }
            pruned.sort();
        }
        let value = Value::of(&Release {
            project: d.project.clone(),
            app: d.app.clone(),
            workspace: d.workspace.clone(),
            target: t,
            namespace: c.namespace.clone(),
            service: name,
            sequence: d.sequence,
            service_type: self.service_type().to_string(),
            cluster_ip: applied.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
            ingresses: ingresses.iter().map(|(n, _)| n.clone()).collect(),
            urls: urls.clone(),
        })?;
        Ok(ReleaseOutcome {
            value,
            urls,
            pruned,
        })
    }

    async fn destroy(&self, ctx: &mut OpContext, release: &Value) -> Result<(), PluginError> {
        let r: Release = release.get::<Release>()?;
        let c = r.target.connect().await?;
        // The Service and Ingresses of the app, found by its labels (not by record only:
        // an Ingress dropped from the config since is still Cairn's).
        let labels = selector(&app_labels(&r.project, &r.app, &r.workspace));
        let mut gone = Vec::new();
        let services: Api<Service> = Api::namespaced(c.client.clone(), &c.namespace);
        for s in services
            .list(&ListParams::default().labels(&labels))
            .await
            .map_err(|e| c.error("listing Services", e))?
            .items
        {
            let n = s.metadata.name.unwrap_or_default();
            delete_ignoring_missing(&c, &services, &n, "Service").await?;
            gone.push(format!("Service {n}"));
        }
        let ingresses: Api<Ingress> = Api::namespaced(c.client.clone(), &c.namespace);
        for i in ingresses
            .list(&ListParams::default().labels(&labels))
            .await
            .map_err(|e| c.error("listing Ingresses", e))?
            .items
        {
            let n = i.metadata.name.unwrap_or_default();
            delete_ignoring_missing(&c, &ingresses, &n, "Ingress").await?;
            gone.push(format!("Ingress {n}"));
        }
        ctx.info(&if gone.is_empty() {
            "the release had nothing left in the cluster".to_string()
        } else {
            format!("deleted {}", gone.join(", "))
        });
        Ok(())
    }
}

async fn delete_ignoring_missing<K>(
    c: &Connected,
    api: &Api<K>,
    name: &str,
    kind: &str,
) -> Result<(), PluginError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(c.error(&format!("deleting {kind} {name}"), e)),
    }
}

/// Waits until the Service's ready endpoints are pods of deployment `sequence` only, and
/// at least one. Returns how many.
async fn wait_for_endpoints(
    c: &Connected,
    service: &str,
    sequence: u64,
) -> Result<usize, PluginError> {
    let endpoints: Api<Endpoints> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(c.client.clone(), &c.namespace);
    let start = Instant::now();
    let mut last = String::from("no endpoints yet");
    while start.elapsed() < SWITCH_WAIT {
        if let Ok(ep) = endpoints.get(service).await {
            let names: Vec<String> = ep
                .subsets
                .iter()
                .flatten()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter_map(|a| a.target_ref.as_ref().and_then(|r| r.name.clone()))
                .collect();
            let mut all_new = !names.is_empty();
            for n in &names {
                let seq = pods
                    .get(n)
                    .await
                    .ok()
                    .and_then(|p| p.metadata.labels)
                    .and_then(|l| l.get(LABEL_DEPLOYMENT).cloned());
                if seq.as_deref() != Some(&sequence.to_string()) {
                    all_new = false;
                    last = format!("pod {n} of another deployment is still an endpoint");
                }
            }
            if all_new {
                return Ok(names.len());
            }
            if names.is_empty() {
                last = "no ready endpoints".to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(PluginError::Failed(format!(
        "Service {service} did not come to select v{sequence}'s ready pods within {} s ({last})",
        SWITCH_WAIT.as_secs()
    )))
}

impl KubernetesReleaser {
    /// Applies the configured Ingresses and deletes the app's others. Returns (name, the
    /// URL it serves, if it names a host).
    async fn apply_ingresses(
        &self,
        c: &Connected,
        ctx: &mut OpContext,
        service: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, Option<String>)>, PluginError> {
        let api: Api<Ingress> = Api::namespaced(c.client.clone(), &c.namespace);
        let port = self
            .config
            .ports
            .first()
            .map(|p| p.port)
            .or(self.config.port)
            .unwrap_or(DEFAULT_PORT);
        let backend = json!({"service": {"name": service, "port": {"number": port}}});
        let mut made = Vec::new();
        for (label, i) in &self.config.ingress {
            let name = object_name(&[service, label]);
            let mut spec = serde_json::Map::new();
            if i.default {
                spec.insert("defaultBackend".into(), backend.clone());
            }
            let path = i.path.clone().unwrap_or_else(|| "/".into());
            let mut rule = json!({"http": {"paths": [{
                "path": path,
                "pathType": i.path_type.clone().unwrap_or_else(|| "Prefix".into()),
                "backend": backend,
            }]}});
            if let Some(h) = &i.host {
                rule["host"] = json!(h);
            }
            spec.insert("rules".into(), json!([rule]));
            if let Some(t) = &i.tls {
                spec.insert(
                    "tls".into(),
                    json!([{"hosts": t.hosts, "secretName": t.secret_name}]),
                );
            }
            let obj = json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": name, "namespace": c.namespace, "labels": labels,
                             "annotations": i.annotations},
                "spec": spec,
            });
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|e| c.error(&format!("applying Ingress {name}"), e))?;
            ctx.info(&format!(
                "Ingress {name} routes {path} to Service {service}"
            ));
            let url = i.host.as_ref().map(|h| {
                let scheme = if i.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{h}{path}")
            });
            made.push((name, url));
        }
        // Ingresses of the app the config no longer has.
        for old in api
            .list(&ListParams::default().labels(&selector(labels)))
            .await
            .map_err(|e| c.error("listing Ingresses", e))?
            .items
        {
            let n = old.metadata.name.unwrap_or_default();
            if !made.iter().any(|(m, _)| *m == n) {
                delete_ignoring_missing(c, &api, &n, "Ingress").await?;
                ctx.info(&format!(
                    "deleted Ingress {n}, which the config no longer has"
                ));
            }
        }
        Ok(made)
    }

    /// Where the Service answers: its load balancer's address, its node ports, or its
    /// cluster address; then the Ingresses' hosts.
    async fn urls(
        &self,
        c: &Connected,
        svc: &Service,
        ingresses: &[(String, Option<String>)],
    ) -> Vec<String> {
        let mut urls = Vec::new();
        let spec = svc.spec.clone().unwrap_or_default();
        let ports = spec.ports.clone().unwrap_or_default();
        let first = ports.first();
        let lb = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.ip.clone().or(i.hostname.clone()));
        if let (Some(host), Some(p)) = (lb, first) {
            urls.push(format!("http://{host}:{}/", p.port));
        }
        if let Some(np) = first.and_then(|p| p.node_port) {
            let nodes: Api<Node> = Api::all(c.client.clone());
            if let Ok(list) = nodes.list(&ListParams::default()).await {
                if let Some(ip) = list.items.iter().find_map(|n| {
                    n.status
                        .as_ref()?
                        .addresses
                        .as_ref()?
                        .iter()
                        .find(|a| a.type_ == "InternalIP")
                        .map(|a| a.address.clone())
                }) {
                    urls.push(format!("http://{ip}:{np}/"));
                }
            }
        }
        if let (Some(ip), Some(p)) = (spec.cluster_ip.as_ref().filter(|ip| *ip != "None"), first) {
            urls.push(format!("http://{ip}:{}/", p.port));
        }
        urls.extend(ingresses.iter().filter_map(|(_, u)| u.clone()));
        urls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(v: serde_json::Value) -> String {
        match KubernetesReleaser::boxed(&v) {
            Ok(_) => panic!("accepted {v}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn waypoint_release_fields_parse_and_bad_ones_are_named() {
        // The corpus's stanzas, as HCL gives them.
        for ok in [
            json!({"load_balancer": true, "port": 3000}),
            json!({"port": 443}),
            json!({"namespace": "ingress-nginx", "ingress": {"http": {"path_type": "Prefix", "path": "/app-one"}}}),
            json!({"ingress": {"http": {"default": true, "path_type": "Prefix", "path": "/"}}}),
            json!({"load_balancer": true, "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}}),
            json!({"node_port": 30080, "ingress": {"web": {"host": "web.example.com",
                "tls": {"hosts": ["web.example.com"], "secret_name": "web-tls"}, "annotations": {"a": "b"}}}}),
            json!({"ports": [{"port": 80, "target_port": 3000, "name": "http"}, {"port": 9000, "name": "grpc"}]}),
        ] {
            assert!(KubernetesReleaser::boxed(&ok).is_ok(), "{ok}");
        }
        assert!(err(json!({"lod_balancer": true})).contains("field \"lod_balancer\""));
        assert!(err(json!({"ingress": {"x": {"path": "app"}}}))
            .contains("field \"ingress.x.path\": must start with '/'"));
        assert!(err(json!({"ingress": {"x": {"path_type": "Sometimes"}}}))
            .contains("ingress.x.path_type"));
        assert!(err(json!({"ports": [{"port": 80}, {"port": 81}]})).contains("field \"ports\""));
        assert!(err(json!({"port": "eighty"})).contains("field \"port\""));
    }

    #[test]
    fn the_service_type_and_ports_follow_the_config() {
        let r = |v: serde_json::Value| KubernetesReleaser {
            config: parse_config(PLUGIN, &v).expect("parses"),
        };
        assert_eq!(r(json!({})).service_type(), "ClusterIP");
        assert_eq!(r(json!({"node_port": 30080})).service_type(), "NodePort");
        assert_eq!(
            r(json!({"node_port": 30080, "load_balancer": true})).service_type(),
            "LoadBalancer"
        );
        assert_eq!(
            r(json!({"port": 8080})).service_ports(3000),
            vec![json!({"name": "http", "port": 8080, "targetPort": 3000, "protocol": "TCP"})]
        );
        let two = r(json!({"ports": [{"port": 80, "name": "a"}, {"port": 81, "target_port": 9, "name": "b"}]}))
            .service_ports(3000);
        assert_eq!(two[0]["targetPort"], 3000);
        assert_eq!(two[1]["targetPort"], 9);
        assert!(
            two.iter().all(|p| p["protocol"] == "TCP"),
            "1.20's server-side apply wants it"
        );
    }
}
