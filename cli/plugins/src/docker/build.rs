//! Builder `docker`: `docker build` of the app's Dockerfile, its output streamed
//! line by line, then the Cairn entrypoint injected (unless
//! `disable_entrypoint = true`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use serde::Deserialize;

use super::auth::{self, Auth};
use super::engine::{describe, engine, engine_error, LineBuffer};
use super::{build_name, context, inject, Image, IMAGE};
use crate::{async_trait, parse_config, Builder, OpContext, PluginError, Stream, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Relative to the app's directory (default `Dockerfile` in the context).
    #[serde(default)]
    dockerfile: Option<String>,
    /// Relative to the app's directory (default the app's directory).
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    build_args: BTreeMap<String, Option<String>>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    disable_entrypoint: bool,
    /// Accepted for Waypoint files; the classic builder is used either way.
    #[serde(default)]
    buildkit: bool,
    #[serde(default)]
    no_cache: bool,
    /// Credentials for the registries the Dockerfile pulls from.
    #[serde(default)]
    auth: Option<Auth>,
}

/// Builder `docker`.
pub struct DockerBuilder {
    config: Config,
}

impl DockerBuilder {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Builder>, PluginError> {
        let config: Config = parse_config("docker", config)?;
        Ok(Box::new(DockerBuilder { config }))
    }
}

#[async_trait]
impl Builder for DockerBuilder {
    fn output_type(&self) -> &'static str {
        IMAGE
    }

    async fn build(&self, ctx: &mut OpContext) -> Result<Value, PluginError> {
        let c = &self.config;
        let dir = match &c.context {
            Some(p) => ctx.source_dir.join(p),
            None => ctx.source_dir.clone(),
        };
        let dockerfile: PathBuf = match &c.dockerfile {
            Some(p) => ctx.source_dir.join(p),
            None => dir.join("Dockerfile"),
        };
        let packed = tokio::task::block_in_place(|| context::pack(&dir, &dockerfile))?;
        ctx.info(&format!(
            "sending the build context {} ({} files, {} bytes)",
            dir.display(),
            packed.files,
            packed.tar.len()
        ));
        if c.buildkit {
            ctx.info("buildkit = true: building with the engine's classic builder");
        }
        let docker = engine().await?;
        let (image, tag) = build_name(ctx);
        let reference = format!("{image}:{tag}");
        let args: HashMap<String, String> = c
            .build_args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect();
        let mut opts = BuildImageOptionsBuilder::default()
            .dockerfile(&packed.dockerfile)
            .t(&reference)
            .rm(true)
            .forcerm(true)
            .nocache(c.no_cache)
            .buildargs(&args);
        if let Some(t) = &c.target {
            opts = opts.target(t);
        }
        if let Some(p) = &c.platform {
            opts = opts.platform(p);
        }
        let creds = match &c.auth {
            Some(a) => {
                let host = a.hostname.clone().unwrap_or_else(|| "docker.io".into());
                let given = auth::Given {
                    auth: Some(a),
                    ..Default::default()
                };
                auth::resolve("docker", &host, &given)?
                    .0
                    .map(|cr| HashMap::from([(host, cr)]))
            }
            None => None,
        };
        ctx.info(&format!("Building image {reference}"));
        let id = run_build(&docker, ctx, opts.build(), creds, packed.tar, &reference).await?;
        ctx.info(&format!("built {reference} ({id})"));
        let mut built = Image {
            image,
            tag,
            id: Some(id),
            local: true,
            entrypoint: false,
        };
        if c.disable_entrypoint {
            ctx.info("disable_entrypoint = true: the image runs without the Cairn entrypoint");
        } else {
            inject::inject(&docker, ctx, &mut built).await?;
        }
        Value::of(&built)
    }
}

/// Runs one `docker build` of `tar` (a context with its Dockerfile), its
/// output streamed line by line; a failure names the step it failed at.
/// Returns the image id.
pub(crate) async fn run_build(
    docker: &bollard::Docker,
    ctx: &mut OpContext,
    opts: bollard::query_parameters::BuildImageOptions,
    creds: Option<HashMap<String, bollard::auth::DockerCredentials>>,
    tar: Vec<u8>,
    reference: &str,
) -> Result<String, PluginError> {
    let mut stream = docker.build_image(opts, creds, Some(bollard::body_full(tar.into())));
    let mut lines = LineBuffer::default();
    let mut step: Option<String> = None;
    let mut id: Option<String> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(chunk) = info.stream.as_deref() {
                    for line in lines.push(chunk) {
                        if line.starts_with("Step ") {
                            step = Some(line.clone());
                        }
                        ctx.out.line(Stream::Stdout, &line);
                    }
                }
                if let Some(status) = info.status.as_deref() {
                    ctx.out.line(Stream::Stdout, status.trim_end());
                }
                if let Some(aux) = info.aux.and_then(|a| a.id) {
                    id = Some(aux);
                }
            }
            Err(e) => {
                if let Some(rest) = lines.finish() {
                    ctx.out.line(Stream::Stdout, &rest);
                }
                return Err(PluginError::Failed(match &step {
                    Some(s) => format!("docker build failed at {s}: {}", describe(&e)),
                    None => format!("docker build failed: {}", describe(&e)),
                }));
            }
        }
    }
    if let Some(rest) = lines.finish() {
        ctx.out.line(Stream::Stdout, &rest);
    }
    Ok(match id {
        Some(id) => id,
        None => docker
            .inspect_image(reference)
            .await
            .map_err(|e| engine_error(&format!("inspecting {reference}"), e))?
            .id
            .unwrap_or_default(),
    })
}
