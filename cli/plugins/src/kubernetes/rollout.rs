//! Following a Deployment's rollout until its pods are available, and saying why when they
//! are not: an image that cannot be pulled, a container that crash-loops (with its last
//! lines), a probe that fails (with what the kubelet saw), a pod nothing can schedule.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment as KDeployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::api::{ListParams, LogParams};
use kube::Api;

use super::conn::Connected;
use crate::{OpContext, PluginError};

/// How often the rollout is looked at.
const POLL: Duration = Duration::from_millis(500);
/// How many log lines of a crash-looping container are shown.
const FAILED_LOG_LINES: i64 = 20;
/// Waiting reasons that mean the image will not come.
const PULL_FAILURES: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
];
/// Waiting reasons that are errors of the pod's spec, failed only when they last.
const CONFIG_FAILURES: &[&str] = &["CreateContainerConfigError", "CreateContainerError"];
/// How long a config error may last before it fails the rollout (a Secret made a moment
/// later clears it).
const CONFIG_FAILURE_GRACE: Duration = Duration::from_secs(10);

/// Waits until `name`'s pods (selected by `selector`) are `want` available ones of its
/// current spec, reporting progress in the job output, or fails with the reason.
pub(crate) async fn wait(
    c: &Connected,
    ctx: &mut OpContext,
    name: &str,
    selector: &str,
    want: i32,
    limit: Duration,
) -> Result<(), PluginError> {
    let deployments: Api<KDeployment> = Api::namespaced(c.client.clone(), &c.namespace);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &c.namespace);
    let start = Instant::now();
    let mut last_line = String::new();
    let mut seen_reasons: BTreeMap<String, String> = BTreeMap::new();
    let mut config_errors: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let d = deployments
            .get(name)
            .await
            .map_err(|e| c.error(&format!("reading Deployment {name}"), e))?;
        let generation = d.metadata.generation.unwrap_or(0);
        let st = d.status.clone().unwrap_or_default();
        let updated = st.updated_replicas.unwrap_or(0);
        let ready = st.ready_replicas.unwrap_or(0);
        let available = st.available_replicas.unwrap_or(0);
        let line = format!("{name}: {ready}/{want} pods ready, {available} available");
        if line != last_line {
            ctx.info(&line);
            last_line = line;
        }
        if st.observed_generation.unwrap_or(0) >= generation && updated >= want && available >= want
        {
            return Ok(());
        }
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| c.error(&format!("listing the pods of {name}"), e))?;
        for pod in &list.items {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let status = pod.status.clone().unwrap_or_default();
            // Unschedulable, as the scheduler says.
            let unschedulable = status
                .conditions
                .iter()
                .flatten()
                .find(|cd| cd.type_ == "PodScheduled" && cd.status == "False")
                .map(|cd| cd.message.clone().unwrap_or_default());
            let statuses: Vec<&ContainerStatus> = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten())
                .collect();
            for cs in &statuses {
                let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
                let reason = waiting.and_then(|w| w.reason.clone()).unwrap_or_default();
                let message = waiting.and_then(|w| w.message.clone()).unwrap_or_default();
                let key = format!("{pod_name}/{}", cs.name);
                if !reason.is_empty() && seen_reasons.get(&key) != Some(&reason) {
                    ctx.info(&format!("pod {pod_name}: container {}: {reason}", cs.name));
                    seen_reasons.insert(key.clone(), reason.clone());
                }
                if PULL_FAILURES.contains(&reason.as_str()) {
                    return Err(PluginError::Failed(format!(
                        "pod {pod_name} cannot get its image {}: {reason}{}",
                        cs.image,
                        if message.is_empty() {
                            String::new()
                        } else {
                            format!(": {message}")
                        }
                    )));
                }
                if CONFIG_FAILURES.contains(&reason.as_str()) {
                    let since = *config_errors.entry(key).or_insert_with(Instant::now);
                    if since.elapsed() >= CONFIG_FAILURE_GRACE {
                        return Err(PluginError::Failed(format!(
                            "pod {pod_name} cannot start container {}: {reason}: {message}",
                            cs.name
                        )));
                    }
                }
                if reason == "CrashLoopBackOff" {
                    let probe = unhealthy_events(c, &pod_name).await;
                    let last = last_lines(&pods, &pod_name, &cs.name).await;
                    let term = cs
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| {
                            format!(
                                "; it last exited with code {}{}",
                                t.exit_code,
                                t.reason
                                    .as_ref()
                                    .map(|r| format!(" ({r})"))
                                    .unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    return Err(PluginError::Failed(format!(
                        "container {} of pod {pod_name} is crash-looping (restarted {} time{}){term}{}{}",
                        cs.name,
                        cs.restart_count,
                        if cs.restart_count == 1 { "" } else { "s" },
                        match probe.last() {
                            Some(p) => format!("; its probe failed: {p}"),
                            None => String::new(),
                        },
                        if last.is_empty() {
                            "; it printed nothing".to_string()
                        } else {
                            format!("; its last lines:\n{}", last.join("\n"))
                        }
                    )));
                }
            }
            if start.elapsed() >= limit {
                let probe = unhealthy_events(c, &pod_name).await;
                let why = if let Some(p) = probe.last() {
                    format!("its probe keeps failing: {p}")
                } else if let Some(u) = unschedulable {
                    format!("it cannot be scheduled: {u}")
                } else {
                    let waiting: Vec<String> = statuses
                        .iter()
                        .filter_map(|cs| {
                            let w = cs.state.as_ref()?.waiting.as_ref()?;
                            Some(format!(
                                "{} waits ({})",
                                cs.name,
                                w.reason.clone().unwrap_or_default()
                            ))
                        })
                        .collect();
                    if waiting.is_empty() {
                        format!(
                            "phase {}",
                            status.phase.clone().unwrap_or_else(|| "unknown".into())
                        )
                    } else {
                        waiting.join(", ")
                    }
                };
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|cd| cd.type_ == "Ready" && cd.status == "True");
                if !ready {
                    return Err(PluginError::Failed(format!(
                        "Deployment {name} did not become available within {} s ({ready_n}/{want} pods ready): pod {pod_name} is not ready: {why}",
                        limit.as_secs(),
                        ready_n = st.ready_replicas.unwrap_or(0),
                    )));
                }
            }
        }
        if start.elapsed() >= limit {
            let cond = st
                .conditions
                .iter()
                .flatten()
                .filter_map(|cd| cd.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(PluginError::Failed(format!(
                "Deployment {name} did not become available within {} s ({ready}/{want} pods ready, {} pods exist){}",
                limit.as_secs(),
                list.items.len(),
                if cond.is_empty() {
                    String::new()
                } else {
                    format!(": {cond}")
                }
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The messages of the pod's `Unhealthy` events (its probes failing), oldest first.
async fn unhealthy_events(c: &Connected, pod: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(c.client.clone(), &c.namespace);
    let Ok(list) = events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Pod,involvedObject.name={pod}"
        )))
        .await
    else {
        return Vec::new();
    };
    let mut out: Vec<(Option<String>, String)> = list
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Unhealthy"))
        .map(|e| {
            (
                e.last_timestamp.map(|t| format!("{:?}", t.0)),
                e.message.unwrap_or_default().trim().to_string(),
            )
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, m)| m).collect()
}

/// The last lines a container printed before it last stopped (or so far).
async fn last_lines(pods: &Api<Pod>, pod: &str, container: &str) -> Vec<String> {
    for previous in [true, false] {
        let lp = LogParams {
            container: Some(container.to_string()),
            tail_lines: Some(FAILED_LOG_LINES),
            previous,
            ..Default::default()
        };
        if let Ok(text) = pods.logs(pod, &lp).await {
            if !text.trim().is_empty() {
                return text.lines().map(|l| format!("  {l}")).collect();
            }
        }
    }
    Vec::new()
}
