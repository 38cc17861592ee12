//! Builder `docker-pull`: an existing image (on the engine, or pulled from its
//! registry), tagged as this build and given the Cairn entrypoint.

use bollard::query_parameters::TagImageOptionsBuilder;
use serde::Deserialize;

use super::auth::{self, Auth};
use super::engine::{engine, engine_error, is_not_found, pull};
use super::{build_name, inject, Image, IMAGE};
use crate::{async_trait, parse_config, Builder, OpContext, PluginError, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    image: String,
    tag: String,
    #[serde(default)]
    disable_entrypoint: bool,
    #[serde(default)]
    encoded_auth: Option<String>,
    #[serde(default)]
    auth: Option<Auth>,
}

/// Builder `docker-pull`.
pub struct PullBuilder {
    config: Config,
}

impl PullBuilder {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Builder>, PluginError> {
        let config: Config = parse_config("docker-pull", config)?;
        if config.image.trim().is_empty() {
            return Err(crate::config_error(
                "docker-pull",
                "image",
                "must not be empty",
            ));
        }
        Ok(Box::new(PullBuilder { config }))
    }
}

#[async_trait]
impl Builder for PullBuilder {
    fn output_type(&self) -> &'static str {
        IMAGE
    }

    async fn build(&self, ctx: &mut OpContext) -> Result<Value, PluginError> {
        let c = &self.config;
        let source = format!("{}:{}", c.image, c.tag);
        let docker = engine().await?;
        match docker.inspect_image(&source).await {
            Ok(_) => ctx.info(&format!("{source} is on the engine")),
            Err(e) if is_not_found(&e) => {
                let host = auth::registry_of(&c.image);
                let given = auth::Given {
                    encoded_auth: c.encoded_auth.as_deref(),
                    auth: c.auth.as_ref(),
                    ..Default::default()
                };
                let (creds, from) = auth::resolve("docker-pull", &host, &given)?;
                ctx.info(&format!("pulling {source} from {host} ({from})"));
                pull(&docker, ctx.out.as_mut(), &c.image, &c.tag, creds)
                    .await
                    .map_err(|m| {
                        PluginError::Failed(format!(
                            "image {source} is not on the Docker engine and pulling it from {host} failed: {m}"
                        ))
                    })?;
            }
            Err(e) => return Err(engine_error(&format!("inspecting {source}"), e)),
        }
        // This build's own name, so later pulls of the same tag do not move it.
        let (image, tag) = build_name(ctx);
        docker
            .tag_image(
                &source,
                Some(
                    TagImageOptionsBuilder::default()
                        .repo(&image)
                        .tag(&tag)
                        .build(),
                ),
            )
            .await
            .map_err(|e| engine_error(&format!("tagging {source}"), e))?;
        let id = docker
            .inspect_image(&source)
            .await
            .map_err(|e| engine_error(&format!("inspecting {source}"), e))?
            .id;
        let mut built = Image {
            image,
            tag,
            id,
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
