//! Platform `kubernetes-apply` (Waypoint's): applies a file or directory of YAML or JSON
//! manifests with server-side apply, waits for the Deployments among them to roll out, and
//! deletes what carries `prune_label` but is no longer in the manifests. The image goes in
//! through the config's own templating (`path = templatedir("${path.app}/k8s")` with
//! `${artifact.image}` in the files), as Waypoint users wrote it.
//!
//! Each applied object gets Cairn's labels of the app and of the deployment that applied it
//! last; destroying a deployment deletes only the objects still carrying its sequence (a
//! later deploy owns the rest). The Cairn entrypoint's settings are not put into the
//! manifests: pods made this way run without Cairn's config, logs, exec and URLs unless
//! their manifests give them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::Api;
use serde::{Deserialize, Serialize};

use super::conn::{status_code, Connected};
use super::{deployment_labels, rollout, Target, LABEL_DEPLOYMENT};
use crate::docker::IMAGE;
use crate::{
    async_trait, config_error, parse_config, DeploymentHealth, InstanceHealth, OpContext, Platform,
    PluginError, Value,
};

const PLUGIN: &str = "kubernetes-apply";
pub const APPLIED: &str = "kubernetes.Applied";
const MANAGER: &str = "cairn";
/// The kinds pruned besides those applied (kubectl's default set, but for the kinds the
/// cluster makes itself).
const DEFAULT_PRUNE_KINDS: &[&str] = &[
    "core/v1/ConfigMap",
    "core/v1/Secret",
    "core/v1/Service",
    "core/v1/PersistentVolumeClaim",
    "apps/v1/Deployment",
    "apps/v1/StatefulSet",
    "apps/v1/DaemonSet",
    "batch/v1/Job",
    "networking.k8s.io/v1/Ingress",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    path: String,
    prune_label: String,
    /// Kinds (`apps/v1/Deployment`, `v1/ConfigMap`) to prune besides those applied.
    #[serde(default, alias = "prune_whitelist")]
    prune_allowlist: Vec<String>,
    #[serde(default)]
    kubeconfig: Option<String>,
    #[serde(default)]
    context: Option<String>,
    /// For objects that name none (default: the context's).
    #[serde(default)]
    namespace: Option<String>,
    /// How long the Deployments' rollouts may take ("90s", "5m", or seconds).
    #[serde(default)]
    rollout_timeout: Option<serde_json::Value>,
}

/// One applied object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// `kubernetes.Applied`: what one deploy applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub project: String,
    pub app: String,
    pub workspace: String,
    pub sequence: u64,
    pub target: Target,
    pub prune_label: String,
    pub objects: Vec<ObjectRef>,
}

impl crate::Typed for Applied {
    const TYPE_NAME: &'static str = APPLIED;
}

/// Platform `kubernetes-apply`.
pub struct ApplyPlatform {
    config: Config,
}

impl ApplyPlatform {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Platform>, PluginError> {
        let config: Config = parse_config(PLUGIN, config)?;
        if config.prune_label.trim().is_empty() || !config.prune_label.contains('=') {
            return Err(config_error(
                PLUGIN,
                "prune_label",
                "must be a label selector such as \"app=myapp\"",
            ));
        }
        for (i, k) in config.prune_allowlist.iter().enumerate() {
            if parse_kind(k).is_none() {
                return Err(config_error(
                    PLUGIN,
                    &format!("prune_allowlist[{i}]"),
                    "must be GROUP/VERSION/KIND, e.g. \"apps/v1/Deployment\" or \"core/v1/ConfigMap\"",
                ));
            }
        }
        super::objects::rollout_timeout(PLUGIN, config.rollout_timeout.as_ref())?;
        Ok(Box::new(ApplyPlatform { config }))
    }

    fn target(&self) -> Target {
        Target {
            kubeconfig: self.config.kubeconfig.clone(),
            context: self.config.context.clone(),
            namespace: self.config.namespace.clone(),
        }
    }

    fn rollout_timeout(&self) -> Result<std::time::Duration, PluginError> {
        super::objects::rollout_timeout(PLUGIN, self.config.rollout_timeout.as_ref())
    }
}

/// "apps/v1/Deployment" or "core/v1/ConfigMap" (or "v1/ConfigMap").
fn parse_kind(s: &str) -> Option<GroupVersionKind> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [v, k] if !v.is_empty() && !k.is_empty() => Some(GroupVersionKind::gvk("", v, k)),
        [g, v, k] if !v.is_empty() && !k.is_empty() => Some(GroupVersionKind::gvk(
            if *g == "core" { "" } else { g },
            v,
            k,
        )),
        _ => None,
    }
}

fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    match api_version.split_once('/') {
        Some((g, v)) => GroupVersionKind::gvk(g, v, kind),
        None => GroupVersionKind::gvk("", api_version, kind),
    }
}

/// The manifest files under `path` (or `path` itself), sorted, recursively.
fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, PluginError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| PluginError::io(format!("{PLUGIN}: path {}", path.display()), e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let rd = std::fs::read_dir(&d)
            .map_err(|e| PluginError::io(format!("reading {}", d.display()), e))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(PluginError::Failed(format!(
            "{PLUGIN}: no .yaml, .yml or .json files under {}",
            path.display()
        )));
    }
    Ok(out)
}

/// The objects of the manifests, each with its file and document number for errors.
fn read_objects(path: &Path) -> Result<Vec<(String, serde_json::Value)>, PluginError> {
    let mut out = Vec::new();
    for f in manifest_files(path)? {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| PluginError::io(format!("reading {}", f.display()), e))?;
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let at = format!("{} (document {})", f.display(), i + 1);
            let v = serde_json::Value::deserialize(doc)
                .map_err(|e| PluginError::Failed(format!("{at}: not YAML or JSON: {e}")))?;
            if v.is_null() {
                continue;
            }
            // A List holds its items.
            if v["kind"] == "List" {
                for item in v["items"].as_array().into_iter().flatten() {
                    out.push((at.clone(), item.clone()));
                }
                continue;
            }
            for field in ["apiVersion", "kind"] {
                if !v[field].is_string() {
                    return Err(PluginError::Failed(format!("{at}: no {field}")));
                }
            }
            if !v["metadata"]["name"].is_string() {
                return Err(PluginError::Failed(format!("{at}: no metadata.name")));
            }
            out.push((at, v));
        }
    }
    Ok(out)
}

/// The API of a kind, and whether it is namespaced.
async fn api_for(
    c: &Connected,
    gvk: &GroupVersionKind,
    namespace: &str,
) -> Result<(Api<DynamicObject>, ApiResource, bool), PluginError> {
    let (ar, caps) = discovery::pinned_kind(&c.client, gvk).await.map_err(|e| {
        c.error(
            &format!(
                "finding kind {} of {}",
                gvk.kind,
                if gvk.group.is_empty() {
                    gvk.version.clone()
                } else {
                    format!("{}/{}", gvk.group, gvk.version)
                }
            ),
            e,
        )
    })?;
    Ok(match caps.scope {
        Scope::Namespaced => (
            Api::namespaced_with(c.client.clone(), namespace, &ar),
            ar,
            true,
        ),
        Scope::Cluster => (Api::all_with(c.client.clone(), &ar), ar, false),
    })
}

#[async_trait]
impl Platform for ApplyPlatform {
    fn input_types(&self) -> &[&'static str] {
        &[IMAGE]
    }

    fn output_type(&self) -> &'static str {
        APPLIED
    }

    async fn deploy(&self, ctx: &mut OpContext, _input: &Value) -> Result<Value, PluginError> {
        let path = ctx.source_dir.join(&self.config.path);
        let objects = read_objects(&path)?;
        let target = self.target();
        let c = target.connect().await?;
        ctx.info(&format!(
            "applying {} object(s) from {} to {} (namespace {})",
            objects.len(),
            self.config.path,
            c.server,
            c.namespace
        ));
        let labels = deployment_labels(&ctx.project, &ctx.app, &ctx.workspace, ctx.sequence);
        let mut applied = Vec::new();
        let mut kinds: BTreeSet<(String, String)> = BTreeSet::new();
        let mut rollouts = Vec::new();
        for (at, mut obj) in objects {
            let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let gvk = gvk_of(&api_version, &kind);
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| c.namespace.clone());
            let (api, _, namespaced) = api_for(&c, &gvk, &ns).await?;
            let meta = obj["metadata"]
                .as_object_mut()
                .ok_or_else(|| PluginError::Failed(format!("{at}: metadata is not a map")))?;
            let l = meta
                .entry("labels")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(l) = l.as_object_mut() {
                for (k, v) in &labels {
                    l.insert(k.clone(), serde_json::json!(v));
                }
            }
            if namespaced {
                meta.insert("namespace".into(), serde_json::json!(ns));
            }
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|e| c.error(&format!("{at}: applying {kind} {name}"), e))?;
            ctx.info(&format!("applied {kind} {name}"));
            if kind == "Deployment" {
                let sel = obj["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let want = obj["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
                rollouts.push((ns.clone(), name.clone(), sel, want));
            }
            kinds.insert((api_version.clone(), kind.clone()));
            applied.push(ObjectRef {
                api_version,
                kind,
                namespace: namespaced.then_some(ns),
                name,
            });
        }
        for (ns, name, sel, want) in rollouts {
            let cn = Connected {
                client: c.client.clone(),
                namespace: ns,
                server: c.server.clone(),
            };
            rollout::wait(&cn, ctx, &name, &sel, want, self.rollout_timeout()?).await?;
        }
        // Prune: what Cairn applied for this app (its labels) and carries prune_label, in
        // the kinds applied now, the common kinds and the allowed ones, but was not applied
        // now. (Objects the cluster made, such as a Deployment's pods, carry no Cairn label.)
        let mut prune_kinds: Vec<GroupVersionKind> =
            kinds.iter().map(|(a, k)| gvk_of(a, k)).collect();
        prune_kinds.extend(DEFAULT_PRUNE_KINDS.iter().filter_map(|k| parse_kind(k)));
        prune_kinds.extend(
            self.config
                .prune_allowlist
                .iter()
                .filter_map(|k| parse_kind(k)),
        );
        prune_kinds
            .sort_by(|a, b| (&a.group, &a.version, &a.kind).cmp(&(&b.group, &b.version, &b.kind)));
        prune_kinds.dedup();
        let prune_sel = format!(
            "{},{}",
            self.config.prune_label,
            super::selector(&super::app_labels(&ctx.project, &ctx.app, &ctx.workspace))
        );
        let keep: BTreeSet<(String, Option<String>, String)> = applied
            .iter()
            .map(|o| (o.kind.clone(), o.namespace.clone(), o.name.clone()))
            .collect();
        for gvk in prune_kinds {
            // A kind this cluster does not serve has nothing to prune.
            let Ok((api, _, namespaced)) = api_for(&c, &gvk, &c.namespace).await else {
                continue;
            };
            let list = api
                .list(&ListParams::default().labels(&prune_sel))
                .await
                .map_err(|e| c.error(&format!("listing {}s to prune", gvk.kind), e))?;
            for o in list.items {
                let name = o.metadata.name.clone().unwrap_or_default();
                let ns = namespaced.then(|| o.metadata.namespace.clone().unwrap_or_default());
                if keep.contains(&(gvk.kind.clone(), ns, name.clone())) {
                    continue;
                }
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => ctx.info(&format!("pruned {} {name}", gvk.kind)),
                    Err(e) if status_code(&e) == Some(404) => {}
                    Err(e) => return Err(c.error(&format!("pruning {} {name}", gvk.kind), e)),
                }
            }
        }
        applied.sort();
        Value::of(&Applied {
            project: ctx.project.clone(),
            app: ctx.app.clone(),
            workspace: ctx.workspace.clone(),
            sequence: ctx.sequence,
            target: Target {
                namespace: Some(c.namespace.clone()),
                ..target
            },
            prune_label: self.config.prune_label.clone(),
            objects: applied,
        })
    }

    async fn destroy(&self, ctx: &mut OpContext, deployment: &Value) -> Result<(), PluginError> {
        let a: Applied = deployment.get::<Applied>()?;
        let c = a.target.connect().await?;
        let seq = a.sequence.to_string();
        let mut gone = 0;
        let mut kept = 0;
        for o in &a.objects {
            let ns = o.namespace.clone().unwrap_or_else(|| c.namespace.clone());
            let (api, _, _) = api_for(&c, &gvk_of(&o.api_version, &o.kind), &ns).await?;
            match api.get(&o.name).await {
                Ok(obj) => {
                    let owner = obj
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(LABEL_DEPLOYMENT));
                    if owner != Some(&seq) {
                        kept += 1;
                        continue;
                    }
                    match api.delete(&o.name, &DeleteParams::background()).await {
                        Ok(_) => gone += 1,
                        Err(e) if status_code(&e) == Some(404) => {}
                        Err(e) => {
                            return Err(c.error(&format!("deleting {} {}", o.kind, o.name), e))
                        }
                    }
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(c.error(&format!("reading {} {}", o.kind, o.name), e)),
            }
        }
        ctx.info(&format!(
            "deleted {gone} object(s) v{} applied{}",
            a.sequence,
            if kept > 0 {
                format!("; {kept} a later deploy applied again were left")
            } else {
                String::new()
            }
        ));
        Ok(())
    }

    async fn destroy_interrupted(&self, ctx: &mut OpContext) -> Result<String, PluginError> {
        // The manifests say which kinds; the labels say which objects this deploy applied.
        let objects = read_objects(&ctx.source_dir.join(&self.config.path))?;
        let c = self.target().connect().await?;
        let sel = super::selector(&deployment_labels(
            &ctx.project,
            &ctx.app,
            &ctx.workspace,
            ctx.sequence,
        ));
        let kinds: BTreeSet<(String, String)> = objects
            .iter()
            .map(|(_, o)| {
                (
                    o["apiVersion"].as_str().unwrap_or_default().to_string(),
                    o["kind"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let mut n = 0;
        for (a, k) in kinds {
            let (api, _, _) = api_for(&c, &gvk_of(&a, &k), &c.namespace).await?;
            let list = api
                .list(&ListParams::default().labels(&sel))
                .await
                .map_err(|e| c.error(&format!("listing {k}s"), e))?;
            for o in list.items {
                let name = o.metadata.name.unwrap_or_default();
                if api.delete(&name, &DeleteParams::background()).await.is_ok() {
                    n += 1;
                }
            }
        }
        Ok(format!("deleted {n} object(s) v{} applied", ctx.sequence))
    }

    async fn status(
        &self,
        _ctx: &mut OpContext,
        deployment: &Value,
    ) -> Result<DeploymentHealth, PluginError> {
        let a: Applied = deployment.get::<Applied>()?;
        let c = a.target.connect().await?;
        let mut instances = Vec::new();
        for (index, o) in a.objects.iter().enumerate() {
            let ns = o.namespace.clone().unwrap_or_else(|| c.namespace.clone());
            let (api, _, _) = api_for(&c, &gvk_of(&o.api_version, &o.kind), &ns).await?;
            let alive = match api.get(&o.name).await {
                Ok(obj) if o.kind == "Deployment" => {
                    let st = &obj.data["status"];
                    let want = obj.data["spec"]["replicas"].as_i64().unwrap_or(1);
                    st["availableReplicas"].as_i64().unwrap_or(0) >= want
                }
                Ok(_) => true,
                Err(e) if status_code(&e) == Some(404) => false,
                Err(e) => return Err(c.error(&format!("reading {} {}", o.kind, o.name), e)),
            };
            instances.push(InstanceHealth {
                index,
                alive,
                port: None,
                pid: None,
                restarts: 0,
            });
        }
        Ok(DeploymentHealth {
            total: instances.len(),
            alive: instances.iter().filter(|i| i.alive).count(),
            instances,
        })
    }

    fn url(&self, _deployment: &Value) -> Option<String> {
        None
    }
}
