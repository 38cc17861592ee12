//! Platform `kubernetes`: one Deployment per Cairn deployment, its pods running the image
//! with the Cairn entrypoint in front (which dials the cluster: config, logs, exec and the
//! URL tunnel work as on every platform).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment as KDeployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;

use super::conn::{status_code, Connected};
use super::objects::{self, Config, Inputs};
use super::{
    deployment_labels, deployment_name, rollout, selector, Deployment, Target, DEPLOYMENT,
    LABEL_APP, LABEL_DEPLOYMENT, LABEL_PROJECT, LABEL_WORKSPACE,
};
use crate::docker::{Image, IMAGE};
use crate::{
    async_trait, DeploymentHealth, InstanceHealth, OpContext, Platform, PluginError, Value,
};

/// How long destroy (and a failed deploy's cleanup) waits for a deployment's pods to be
/// gone before it reports the ones still terminating and returns: Kubernetes removes them
/// after their graceful stop, which on the local 1.20 cluster took 5 to 70 s.
const TERMINATION_WAIT: Duration = Duration::from_secs(20);

/// Platform `kubernetes`.
pub struct KubernetesPlatform {
    config: Config,
}

impl KubernetesPlatform {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Platform>, PluginError> {
        Ok(Box::new(KubernetesPlatform {
            config: Config::parse(config)?,
        }))
    }
}

#[async_trait]
impl Platform for KubernetesPlatform {
    fn input_types(&self) -> &[&'static str] {
        &[IMAGE]
    }

    fn output_type(&self) -> &'static str {
        DEPLOYMENT
    }

    async fn deploy(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        let image: Image = input.get::<Image>()?;
        let target = self.config.target();
        let c = target.connect().await?;
        ctx.info(&format!(
            "Kubernetes API server {}, namespace {}",
            c.server, c.namespace
        ));
        let reference = image.reference();
        if image.local {
            ctx.info(&format!(
                "{reference} was not pushed to a registry: only nodes whose engine has it can run it (add a registry stage to push it)"
            ));
        }
        let name = deployment_name(&ctx.app, &ctx.workspace, ctx.sequence);
        let labels = deployment_labels(&ctx.project, &ctx.app, &ctx.workspace, ctx.sequence);
        let sel = selector(&labels);
        self.clear_leftover(&c, ctx, &name, &labels).await?;

        // What the entrypoints need, in a Secret of the deployment's own.
        let secret_name = format!("{name}-cairn");
        let launch_env = ctx.entrypoint.as_ref().map(|l| l.env.clone());
        let secret_env = match (launch_env, image.entrypoint) {
            (Some(env), true) => Some(self.entrypoint_env(ctx, &env).await),
            (None, true) => None,
            (_, false) => {
                ctx.info("the image has no Cairn entrypoint: its pods run without config, logs, exec or URLs from the cluster");
                None
            }
        };
        let result = async {
            if let Some(env) = &secret_env {
                create(
                    &c,
                    &Api::<Secret>::namespaced(c.client.clone(), &c.namespace),
                    objects::secret(&secret_name, &c.namespace, &labels, env),
                    "Secret",
                )
                .await?;
            }
            let obj = objects::deployment(
                &self.config,
                &Inputs {
                    name: &name,
                    namespace: &c.namespace,
                    image: &reference,
                    image_local: image.local,
                    entrypoint: image.entrypoint,
                    secret: secret_env.as_ref().map(|_| secret_name.as_str()),
                    labels: &labels,
                    app: &ctx.app,
                },
            );
            let deployments: Api<KDeployment> = Api::namespaced(c.client.clone(), &c.namespace);
            let made: KDeployment = create(&c, &deployments, obj, "Deployment").await?;
            ctx.info(&format!(
                "created Deployment {name} ({} of {reference})",
                match self.config.replicas {
                    Some(n) => format!("{n} replicas"),
                    None => "default replicas".to_string(),
                }
            ));
            // The Secret and the autoscaler go with the Deployment (the garbage collector
            // deletes them when it goes, whoever deletes it).
            let owner = OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.clone(),
                uid: made.metadata.uid.clone().unwrap_or_default(),
                controller: Some(false),
                block_owner_deletion: Some(false),
            };
            if secret_env.is_some() {
                let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
                Api::<Secret>::namespaced(c.client.clone(), &c.namespace)
                    .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| c.error(&format!("owning Secret {secret_name}"), e))?;
            }
            if let Some(a) = &self.config.autoscale {
                let mut hpa = objects::autoscaler(a, &name, &c.namespace, &labels);
                hpa["metadata"]["ownerReferences"] = serde_json::json!([owner]);
                create(
                    &c,
                    &Api::<HorizontalPodAutoscaler>::namespaced(c.client.clone(), &c.namespace),
                    hpa,
                    "HorizontalPodAutoscaler",
                )
                .await?;
            }
            let want = self.config.wanted_pods();
            let started = Instant::now();
            rollout::wait(&c, ctx, &name, &sel, want, self.config.rollout_timeout()?).await?;
            ctx.info(&format!(
                "Deployment {name} rolled out: {want} pod(s) available in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            Ok::<(), PluginError>(())
        }
        .await;
        if let Err(e) = result {
            ctx.info(&format!("deploy failed, deleting what it made: {e}"));
            if let Err(e2) = delete_labelled(&c, ctx, &labels, PodWait::UntilGone).await {
                ctx.info(&format!("cleaning up failed too: {e2}"));
            }
            return Err(e);
        }
        Value::of(&Deployment {
            project: ctx.project.clone(),
            app: ctx.app.clone(),
            workspace: ctx.workspace.clone(),
            sequence: ctx.sequence,
            target: Target {
                namespace: Some(c.namespace.clone()),
                ..target
            },
            namespace: c.namespace.clone(),
            name,
            image: reference,
            service_port: self.config.service_port(),
            replicas: self.config.replicas,
            selector: labels,
        })
    }

    async fn destroy(&self, ctx: &mut OpContext, deployment: &Value) -> Result<(), PluginError> {
        let d: Deployment = deployment.get::<Deployment>()?;
        let c = d.target.connect().await?;
        let labels = deployment_labels(&d.project, &d.app, &d.workspace, d.sequence);
        let n = delete_labelled(&c, ctx, &labels, PodWait::UntilGone).await?;
        ctx.info(&format!(
            "deleted the objects of v{} in namespace {} ({n})",
            d.sequence, c.namespace
        ));
        Ok(())
    }

    async fn destroy_interrupted(&self, ctx: &mut OpContext) -> Result<String, PluginError> {
        let c = self.config.target().connect().await?;
        let labels = deployment_labels(&ctx.project, &ctx.app, &ctx.workspace, ctx.sequence);
        let n = delete_labelled(&c, ctx, &labels, PodWait::UntilGone).await?;
        Ok(format!(
            "deleted what v{} left in namespace {} ({n})",
            ctx.sequence, c.namespace
        ))
    }

    async fn status(
        &self,
        _ctx: &mut OpContext,
        deployment: &Value,
    ) -> Result<DeploymentHealth, PluginError> {
        let d: Deployment = deployment.get::<Deployment>()?;
        let c = d.target.connect().await?;
        let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
        let mut list = pods
            .list(&ListParams::default().labels(&selector(&d.selector)))
            .await
            .map_err(|e| c.error(&format!("listing the pods of {}", d.name), e))?
            .items;
        list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let instances: Vec<InstanceHealth> = list
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let st = p.status.clone().unwrap_or_default();
                let ready = st
                    .conditions
                    .iter()
                    .flatten()
                    .any(|cd| cd.type_ == "Ready" && cd.status == "True");
                let terminating = p.metadata.deletion_timestamp.is_some();
                InstanceHealth {
                    index,
                    alive: ready && !terminating,
                    port: Some(d.service_port),
                    pid: None,
                    restarts: st
                        .container_statuses
                        .iter()
                        .flatten()
                        .map(|cs| cs.restart_count.max(0) as u64)
                        .sum(),
                }
            })
            .collect();
        // Pods the Deployment wants but that do not exist count as down.
        let wanted = d.replicas.unwrap_or(1).max(0) as usize;
        let total = instances.len().max(wanted);
        Ok(DeploymentHealth {
            total,
            alive: instances.iter().filter(|i| i.alive).count(),
            instances,
        })
    }

    fn url(&self, _deployment: &Value) -> Option<String> {
        None
    }
}

impl KubernetesPlatform {
    /// The entrypoint's settings as pods can use them: the cluster's addresses as
    /// `cairn_address` gives them, or the runner's with a loopback address turned into the
    /// Docker bridge's gateway (pods on this machine's engine reach the node there).
    async fn entrypoint_env(
        &self,
        ctx: &mut OpContext,
        env: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut env = env.clone();
        let addrs = match &self.config.cairn_address {
            Some(a) => a.clone(),
            None => {
                let given = env.get("CAIRN_ADDRS").cloned().unwrap_or_default();
                let gateway = match crate::docker::engine().await {
                    Ok(docker) => crate::docker::bridge_gateway(&docker).await,
                    Err(_) => None,
                };
                let mapped = crate::docker::reachable_from_containers(&given, gateway.as_deref());
                if mapped.split(',').all(|a| {
                    a.parse::<std::net::SocketAddr>()
                        .is_ok_and(|s| s.ip().is_loopback())
                }) {
                    ctx.info(&format!(
                        "the cluster's addresses ({mapped}) are loopback ones, which pods cannot reach: set cairn_address to one they can"
                    ));
                }
                mapped
            }
        };
        ctx.info(&format!("the pods' entrypoints dial {addrs}"));
        env.insert("CAIRN_ADDRS".into(), addrs);
        env
    }

    /// A Deployment of this name that an earlier, interrupted run of the same deployment
    /// left is deleted; one that is not this deployment's stops the deploy.
    async fn clear_leftover(
        &self,
        c: &Connected,
        ctx: &mut OpContext,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), PluginError> {
        let deployments: Api<KDeployment> = Api::namespaced(c.client.clone(), &c.namespace);
        match deployments.get(name).await {
            Ok(existing) => {
                let theirs = existing.metadata.labels.unwrap_or_default();
                let ours = [LABEL_PROJECT, LABEL_APP, LABEL_WORKSPACE, LABEL_DEPLOYMENT]
                    .iter()
                    .all(|k| theirs.get(*k) == labels.get(*k));
                if !ours {
                    return Err(PluginError::Failed(format!(
                        "a Deployment named {name} already exists in namespace {} and is not Cairn's v{} of this app: delete it (`kubectl -n {} delete deployment {name}`) or deploy to another namespace",
                        c.namespace, ctx.sequence, c.namespace
                    )));
                }
                ctx.info(&format!(
                    "Deployment {name} was left by an interrupted deploy: deleting it first"
                ));
                delete_labelled(c, ctx, labels, PodWait::UntilGone).await?;
                Ok(())
            }
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(c.error(&format!("looking for Deployment {name}"), e)),
        }
    }
}

/// Creates `obj` (JSON of a `K`), naming its kind in errors.
async fn create<K>(
    c: &Connected,
    api: &Api<K>,
    obj: serde_json::Value,
    kind: &str,
) -> Result<K, PluginError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj["metadata"]["name"].as_str().unwrap_or("?").to_string();
    let typed: K = serde_json::from_value(obj).map_err(|e| {
        PluginError::Failed(format!("the {kind} {name} Cairn made is malformed: {e}"))
    })?;
    api.create(&PostParams::default(), &typed)
        .await
        .map_err(|e| c.error(&format!("creating {kind} {name}"), e))
}

/// Whether [`delete_labelled`] waits for the deleted pods to be gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodWait {
    /// Destroy and a failed deploy: "nothing left" means the pods too.
    UntilGone,
    /// A prune during a release: the old pods stop gracefully on their own time, which
    /// the release does not wait for (the kubelet here takes 5 to 70 s).
    No,
}

/// Deletes the Deployments, ReplicaSets, pods, Secrets and autoscalers carrying `labels`,
/// then (with [`PodWait::UntilGone`]) waits for the pods to be gone. Returns what it
/// deleted, in words.
pub(crate) async fn delete_labelled(
    c: &Connected,
    ctx: &mut OpContext,
    labels: &BTreeMap<String, String>,
    wait: PodWait,
) -> Result<String, PluginError> {
    let lp = ListParams::default().labels(&selector(labels));
    let dp = DeleteParams::background();
    let ns = &c.namespace;
    let mut counts = Vec::new();
    macro_rules! delete_kind {
        ($k:ty, $word:expr) => {{
            let api: Api<$k> = Api::namespaced(c.client.clone(), ns);
            let list = api
                .list(&lp)
                .await
                .map_err(|e| c.error(&format!("listing {}s", $word), e))?;
            let mut n = 0;
            for o in &list.items {
                let Some(name) = o.metadata.name.as_deref() else {
                    continue;
                };
                if o.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                match api.delete(name, &dp).await {
                    Ok(_) => n += 1,
                    Err(e) if status_code(&e) == Some(404) => {}
                    Err(e) => return Err(c.error(&format!("deleting {} {name}", $word), e)),
                }
            }
            if n > 0 {
                counts.push(format!("{n} {}{}", $word, if n == 1 { "" } else { "s" }));
            }
        }};
    }
    delete_kind!(KDeployment, "Deployment");
    delete_kind!(HorizontalPodAutoscaler, "HorizontalPodAutoscaler");
    delete_kind!(ReplicaSet, "ReplicaSet");
    delete_kind!(Secret, "Secret");
    delete_kind!(Pod, "pod");
    if wait == PodWait::No {
        return Ok(if counts.is_empty() {
            "nothing left".to_string()
        } else {
            counts.join(", ")
        });
    }
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let start = Instant::now();
    let mut told = false;
    loop {
        let left = pods
            .list(&lp)
            .await
            .map_err(|e| c.error("listing pods", e))?
            .items
            .len();
        if left == 0 {
            break;
        }
        if start.elapsed() >= TERMINATION_WAIT {
            ctx.info(&format!(
                "{left} pod(s) still terminating after {} s; Kubernetes deletes them when they stop",
                TERMINATION_WAIT.as_secs()
            ));
            break;
        }
        if !told {
            ctx.info(&format!("waiting for {left} pod(s) to terminate"));
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(if counts.is_empty() {
        "nothing left".to_string()
    } else {
        counts.join(", ")
    })
}
