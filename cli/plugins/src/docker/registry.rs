//! Registry `docker`: tags the image as `image:tag` and pushes it (unless
//! `local = true`), signing in with the credentials given to the runner.

use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures::StreamExt;
use serde::Deserialize;

use super::auth::{self, Auth};
use super::engine::{describe, engine, engine_error, Progress};
use super::{Image, IMAGE};
use crate::{async_trait, parse_config, OpContext, PluginError, Registry, Stream, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    image: String,
    tag: String,
    #[serde(default)]
    local: bool,
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(default)]
    encoded_auth: Option<String>,
    /// Accepted for Waypoint files: the engine decides (it speaks plain HTTP
    /// to registries on loopback and to those in its `insecure-registries`).
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Registry `docker`.
pub struct DockerRegistry {
    config: Config,
}

impl DockerRegistry {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Registry>, PluginError> {
        let config: Config = parse_config("docker", config)?;
        if config.image.trim().is_empty() {
            return Err(crate::config_error("docker", "image", "must not be empty"));
        }
        if config.tag.trim().is_empty() || config.tag.contains([':', '/', ' ']) {
            return Err(crate::config_error(
                "docker",
                "tag",
                "must be a tag such as \"latest\" or \"v1\" (no ':' '/' or spaces)",
            ));
        }
        if let Some(a) = &config.auth {
            if a.hostname.is_some() {
                return Err(crate::config_error(
                    "docker",
                    "auth.hostname",
                    "is not used by a registry: the host is the first part of `image`",
                ));
            }
        }
        Ok(Box::new(DockerRegistry { config }))
    }
}

#[async_trait]
impl Registry for DockerRegistry {
    fn input_types(&self) -> &[&'static str] {
        &[IMAGE]
    }

    fn output_type(&self) -> &'static str {
        IMAGE
    }

    async fn push(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        let c = &self.config;
        let source: Image = input.get::<Image>()?;
        let docker = engine().await?;
        let target = format!("{}:{}", c.image, c.tag);
        docker
            .tag_image(
                &source.reference(),
                Some(
                    TagImageOptionsBuilder::default()
                        .repo(&c.image)
                        .tag(&c.tag)
                        .build(),
                ),
            )
            .await
            .map_err(|e| engine_error(&format!("tagging {} as {target}", source.reference()), e))?;
        let mut out = Image {
            image: c.image.clone(),
            tag: c.tag.clone(),
            id: source.id.clone(),
            local: true,
            entrypoint: source.entrypoint,
        };
        if c.local {
            ctx.info(&format!("tagged {target} (local = true: not pushed)"));
            return Value::of(&out);
        }
        let host = auth::registry_of(&c.image);
        let given = auth::Given {
            encoded_auth: c.encoded_auth.as_deref(),
            username: c.username.as_deref(),
            password: c.password.as_deref(),
            auth: c.auth.as_ref(),
        };
        let (creds, from) = auth::resolve("docker", &host, &given)?;
        if c.insecure {
            ctx.info("insecure = true: the Docker engine chooses HTTP or HTTPS (it uses HTTP for registries on loopback and those in its insecure-registries)");
        }
        ctx.info(&format!("pushing {target} to {host} ({from})"));
        let mut stream = docker.push_image(
            &c.image,
            Some(PushImageOptionsBuilder::default().tag(&c.tag).build()),
            creds,
        );
        let mut progress = Progress::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(line) = progress.line(None, info.status.as_deref()) {
                        ctx.out.line(Stream::Stdout, &line);
                    }
                }
                Err(e) => {
                    let message = describe(&e);
                    return Err(PluginError::Failed(if auth::is_auth_refusal(&message) {
                        format!(
                            "the registry {host} refused the credentials ({from}) for {target}: {message}"
                        )
                    } else {
                        format!("pushing {target} to {host} failed: {message}")
                    }));
                }
            }
        }
        out.local = false;
        ctx.info(&format!("pushed {target}"));
        Value::of(&out)
    }
}
