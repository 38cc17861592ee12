//! Reaching the Kubernetes API server from the runner: the runner's own kubeconfig
//! (`KUBECONFIG`, `~/.kube/config`) or in-cluster service account, a `kubeconfig` path,
//! a `context` from it, and the `namespace` to work in. Credentials never leave the runner:
//! a value records the path and context, never what they hold.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::{Deserialize, Serialize};

use crate::PluginError;

/// How long connecting to the API server may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one API request may wait for its answer (Cairn polls; it never watches).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster fields the platform and the releaser share (Waypoint's names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// A kubeconfig file; default: `KUBECONFIG`, then `~/.kube/config`, then the
    /// in-cluster service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// A context of that kubeconfig; default: its current context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Default: the context's namespace, else `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A client for the target, the namespace it works in and the server's address (for
/// messages).
pub struct Connected {
    pub client: Client,
    pub namespace: String,
    pub server: String,
}

impl Target {
    /// Where the configuration comes from, for messages.
    fn source(&self) -> String {
        match (&self.kubeconfig, std::env::var_os("KUBECONFIG")) {
            (Some(k), _) => format!("kubeconfig {k}"),
            (None, Some(k)) => format!("KUBECONFIG={}", k.to_string_lossy()),
            (None, None) => "~/.kube/config or the in-cluster service account".to_string(),
        }
    }

    async fn config(&self) -> Result<Config, PluginError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let fail = |e: String| {
            PluginError::Failed(format!(
                "cannot configure the Kubernetes client from {}{}: {e}",
                self.source(),
                self.context
                    .as_ref()
                    .map(|c| format!(" (context {c:?})"))
                    .unwrap_or_default()
            ))
        };
        match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let path = expand_home(path);
                let kc = Kubeconfig::read_from(&path).map_err(|e| fail(e.to_string()))?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| fail(e.to_string()))
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| fail(e.to_string())),
            (None, None) => Config::infer().await.map_err(|e| fail(e.to_string())),
        }
    }

    /// A client, after checking that the API server answers and the namespace exists: an
    /// unreachable server or a missing namespace is said plainly before anything is made.
    pub async fn connect(&self) -> Result<Connected, PluginError> {
        let mut config = self.config().await?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        let server = config.cluster_url.to_string();
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| {
            PluginError::Failed(format!("cannot make a Kubernetes client for {server}: {e}"))
        })?;
        let c = Connected {
            client,
            namespace,
            server,
        };
        match Api::<Namespace>::all(c.client.clone()).get(&c.namespace).await {
            Ok(_) => Ok(c),
            Err(e) if status_code(&e) == Some(404) => Err(PluginError::Failed(format!(
                "namespace {:?} does not exist in the cluster at {} (create it with `kubectl create namespace {}`, or set `namespace`)",
                c.namespace, c.server, c.namespace
            ))),
            // Allowed to work in the namespace but not to read it: go on.
            Err(e) if status_code(&e) == Some(403) => Ok(c),
            Err(e) => Err(c.error("reaching the API server", e)),
        }
    }
}

impl Connected {
    /// A clear error for a failed API request: a connection failure names the server.
    pub fn error(&self, doing: &str, e: kube::Error) -> PluginError {
        match &e {
            kube::Error::Api(s) => PluginError::Failed(format!(
                "{doing}: the Kubernetes API server at {} refused ({} {}): {}",
                self.server, s.code, s.reason, s.message
            )),
            _ => PluginError::Failed(format!(
                "{doing}: cannot reach the Kubernetes API server at {}: {}",
                self.server,
                chain(&e)
            )),
        }
    }
}

/// The HTTP status of an API error, if it is one.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// An error with its causes, one line ("connection refused" is at the bottom of hyper's).
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn expand_home(path: &str) -> std::path::PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => std::path::Path::new(&home).join(rest),
        _ => std::path::PathBuf::from(path),
    }
}
