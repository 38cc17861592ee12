//! Plugins `docker` (builder, registry, platform) and `docker-pull` (builder), on
//! the Docker engine through bollard. Field names are those Waypoint's docker
//! plugin took, so existing `waypoint.hcl` stanzas work unchanged.
//!
//! Invariants:
//! - Credentials (`auth`, `encoded_auth`, `username`/`password`, the runner's
//!   docker config) are used on the runner only: they are never part of a value
//!   (values are recorded on the server) and never printed.
//! - Every container Cairn makes carries the labels [`LABEL_PROJECT`],
//!   [`LABEL_APP`], [`LABEL_DEPLOYMENT`] and [`LABEL_INSTANCE`], so `destroy` finds
//!   what an interrupted deploy left behind by label, not only by record.
//! - A failed deploy removes every container it created.

mod auth;
mod build;
mod context;
mod engine;
mod files_image;
mod inject;
mod platform;
mod pull;
mod registry;

use serde::{Deserialize, Serialize};

pub use build::DockerBuilder;
pub use engine::{engine, engine_address};
pub use files_image::{APP_DIR, FILES_TO_IMAGE};
pub use inject::{entrypoint_binary, ENTRYPOINT_PATH};
pub use platform::{bridge_gateway, reachable_from_containers, DockerPlatform};
pub use pull::PullBuilder;
pub use registry::DockerRegistry;

pub const IMAGE: &str = "docker.Image";
pub const DEPLOYMENT: &str = "docker.Deployment";

/// Labels on every container Cairn makes (it makes no networks or volumes).
pub const LABEL_MANAGED: &str = "dev.cairn.managed";
pub const LABEL_PROJECT: &str = "dev.cairn.project";
pub const LABEL_APP: &str = "dev.cairn.app";
pub const LABEL_WORKSPACE: &str = "dev.cairn.workspace";
/// The deployment's sequence (vN), as a number.
pub const LABEL_DEPLOYMENT: &str = "dev.cairn.deployment";
pub const LABEL_INSTANCE: &str = "dev.cairn.instance";
/// On an image: the Cairn release whose entrypoint was injected.
pub const LABEL_ENTRYPOINT: &str = "dev.cairn.entrypoint";

/// `docker.Image`: an image on a Docker engine or in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Repository, e.g. `cairn.local/demo/web` or `127.0.0.1:5000/web`.
    pub image: String,
    pub tag: String,
    /// The image id (`sha256:…`) on the engine that built or pulled it.
    #[serde(default)]
    pub id: Option<String>,
    /// Only on the engine that built it (not pushed anywhere).
    pub local: bool,
    /// Whether `cairn-entrypoint` runs in front of the image's command.
    #[serde(default)]
    pub entrypoint: bool,
}

impl crate::Typed for Image {
    const TYPE_NAME: &'static str = IMAGE;
}

impl Image {
    /// `image:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.image, self.tag)
    }
}

/// `docker.Deployment`: the containers of one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub project: String,
    pub app: String,
    pub sequence: u64,
    /// The image reference the containers run.
    pub image: String,
    pub containers: Vec<Container>,
    pub service_port: u16,
    /// The first container's address on its network, for a runner on the
    /// Docker host (the URL service's tunnel needs none).
    #[serde(default)]
    pub url: Option<String>,
}

impl crate::Typed for Deployment {
    const TYPE_NAME: &'static str = DEPLOYMENT;
}

/// One container of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub index: usize,
    pub id: String,
    pub name: String,
}

/// A name Docker accepts for a container: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn container_name(parts: &[&str]) -> String {
    let joined = parts.join("-");
    let mut name: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'c');
    }
    name
}

/// The name of a build on the engine: `cairn.local/<project>/<app>` and `v<seq>`
/// (one tag per build, so a rollback still finds its image).
pub(crate) fn build_name(ctx: &crate::OpContext) -> (String, String) {
    (
        format!(
            "cairn.local/{}/{}",
            repo_component(&ctx.project),
            repo_component(&ctx.app)
        ),
        format!("v{}", ctx.sequence),
    )
}

/// A repository path component Docker accepts: lowercase `[a-z0-9._-]`.
pub(crate) fn repo_component(s: &str) -> String {
    let mut out: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.remove(0);
    }
    while out.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.pop();
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}
