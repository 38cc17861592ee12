//! Plugins `kubernetes` (platform and releaser) on a Kubernetes cluster through the API
//! server (the `kube` crate). Field names are those of Waypoint's kubernetes plugin, so
//! existing `waypoint.hcl` stanzas work unchanged; only stable `apps/v1`, `v1`,
//! `networking.k8s.io/v1` and `autoscaling/v1` objects are made.
//!
//! Invariants:
//! - Every object Cairn makes carries [`LABEL_MANAGED`] = `cairn` and the labels of its
//!   project, app and workspace; a deployment's objects (Deployment, its pods, its Secret,
//!   its autoscaler) also carry [`LABEL_DEPLOYMENT`]. Destroy finds them by these labels,
//!   never by name alone, and deletes nothing else.
//! - The entrypoint's token is in a Secret of the deployment's own, never in the pod spec.
//! - Credentials for the cluster come from the runner (kubeconfig or in-cluster) and are
//!   never part of a value.
//! - A failed deploy deletes what it made and waits for its pods to go.

mod apply;
mod conn;
mod objects;
mod platform;
mod release;
mod rollout;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use apply::{Applied, ApplyPlatform, APPLIED};
pub use conn::Target;
pub use platform::KubernetesPlatform;
pub use release::KubernetesReleaser;

pub const DEPLOYMENT: &str = "kubernetes.Deployment";
pub const RELEASE: &str = "kubernetes.Release";

/// `app.kubernetes.io/managed-by` = [`MANAGER`] on everything Cairn makes.
pub const LABEL_MANAGED: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "cairn";
pub const LABEL_PROJECT: &str = "cairn.dev/project";
pub const LABEL_APP: &str = "cairn.dev/app";
pub const LABEL_WORKSPACE: &str = "cairn.dev/workspace";
/// The deployment's sequence (vN), as a number.
pub const LABEL_DEPLOYMENT: &str = "cairn.dev/deployment";

/// `kubernetes.Deployment`: one Deployment (and its Secret) in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub project: String,
    pub app: String,
    pub workspace: String,
    pub sequence: u64,
    /// How the runner reached the cluster (paths and names only).
    pub target: Target,
    pub namespace: String,
    /// The Deployment's name.
    pub name: String,
    /// The image reference its pods run.
    pub image: String,
    pub service_port: u16,
    pub replicas: Option<i32>,
    /// The labels that select its pods (project, app, workspace, deployment).
    pub selector: BTreeMap<String, String>,
}

impl crate::Typed for Deployment {
    const TYPE_NAME: &'static str = DEPLOYMENT;
}

/// `kubernetes.Release`: the Service (and Ingresses) pointing at a deployment's pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub project: String,
    pub app: String,
    pub workspace: String,
    pub target: Target,
    pub namespace: String,
    pub service: String,
    /// The deployment the Service selects.
    pub sequence: u64,
    pub service_type: String,
    pub cluster_ip: Option<String>,
    pub ingresses: Vec<String>,
    pub urls: Vec<String>,
}

impl crate::Typed for Release {
    const TYPE_NAME: &'static str = RELEASE;
}

/// The labels of everything Cairn makes for an app in a workspace.
pub(crate) fn app_labels(project: &str, app: &str, workspace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED.to_string(), MANAGER.to_string()),
        (LABEL_PROJECT.to_string(), label_value(project)),
        (LABEL_APP.to_string(), label_value(app)),
        (LABEL_WORKSPACE.to_string(), label_value(workspace)),
    ])
}

/// The labels of one deployment's objects and pods.
pub(crate) fn deployment_labels(
    project: &str,
    app: &str,
    workspace: &str,
    sequence: u64,
) -> BTreeMap<String, String> {
    let mut l = app_labels(project, app, workspace);
    l.insert(LABEL_DEPLOYMENT.to_string(), sequence.to_string());
    l
}

/// A label selector (`k=v,k=v`) for `labels`.
pub(crate) fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A label value Kubernetes accepts: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both
/// ends. Another character becomes `_`; a longer value keeps its start and a hash of the
/// whole, so two long names stay apart.
pub(crate) fn label_value(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if v.len() > 63 {
        v = format!("{}-{}", &v[..54], &short_hash(s));
    }
    let v = v.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    v.to_string()
}

/// An object name Kubernetes accepts (a DNS-1123 label: at most 63 of `[a-z0-9-]`,
/// alphanumeric at both ends), from `parts` joined with `-`.
pub(crate) fn object_name(parts: &[&str]) -> String {
    let joined = parts.join("-");
    let mut name: String = joined
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let mut name = name.trim_matches('-').to_string();
    if name.len() > 63 {
        // Keep the end (the sequence) and a hash of the whole.
        let tail: String = name[name.len() - 19..].to_string();
        name = format!(
            "{}-{}-{}",
            &name[..34],
            short_hash(&joined),
            tail.trim_matches('-')
        );
        name = name.trim_matches('-').to_string();
    }
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "c-");
    }
    name
}

fn short_hash(s: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..4])
}

/// The name of deployment `sequence` of an app: `APP-vN` (`APP-WORKSPACE-vN` outside the
/// default workspace).
pub(crate) fn deployment_name(app: &str, workspace: &str, sequence: u64) -> String {
    let seq = format!("v{sequence}");
    if workspace == "default" {
        object_name(&[app, &seq])
    } else {
        object_name(&[app, workspace, &seq])
    }
}

/// The name of an app's Service: `APP` (`APP-WORKSPACE` outside the default workspace).
pub(crate) fn service_name(app: &str, workspace: &str) -> String {
    if workspace == "default" {
        object_name(&[app])
    } else {
        object_name(&[app, workspace])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_label_values_are_what_kubernetes_accepts() {
        assert_eq!(deployment_name("web", "default", 3), "web-v3");
        assert_eq!(deployment_name("My_App", "prod", 12), "my-app-prod-v12");
        assert_eq!(service_name("web", "default"), "web");
        assert_eq!(object_name(&["9lives"]), "c-9lives");
        let long = deployment_name(&"a".repeat(80), "default", 7);
        assert!(long.len() <= 63 && long.ends_with("-v7"), "{long}");
        assert_ne!(
            deployment_name(&format!("{}x", "a".repeat(80)), "default", 7),
            long
        );
        assert_eq!(label_value("demo/web"), "demo_web");
        assert_eq!(label_value("-x-"), "x");
        let lv = label_value(&"b".repeat(100));
        assert!(lv.len() <= 63, "{lv}");
        assert_eq!(
            selector(&deployment_labels("p", "a", "default", 2)),
            "app.kubernetes.io/managed-by=cairn,cairn.dev/app=a,cairn.dev/deployment=2,cairn.dev/project=p,cairn.dev/workspace=default"
        );
    }
}
