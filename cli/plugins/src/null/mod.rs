//! Plugins `null` (builder, registry, platform, releaser): Waypoint's plugins
//! that do nothing, to try a configuration's stages without building or
//! running anything. Each operation says in one output line what it did not do
//! and produces an empty value: `null.Artifact` (build, push),
//! `null.Deployment` (deploy), `null.Release` (release, without URLs).
//!
//! The only field they take is an optional `labels` map (shown, otherwise
//! ignored); any other field is a configuration error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    async_trait, parse_config, Builder, DeploymentHealth, OpContext, Platform, PluginError,
    Registry, ReleaseOptions, ReleaseOutcome, Releaser, Value,
};

pub const ARTIFACT: &str = "null.Artifact";
pub const DEPLOYMENT: &str = "null.Deployment";
pub const RELEASE: &str = "null.Release";

/// `null.Artifact`: nothing was built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {}

impl crate::Typed for Artifact {
    const TYPE_NAME: &'static str = ARTIFACT;
}

/// `null.Deployment`: nothing was deployed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {}

impl crate::Typed for Deployment {
    const TYPE_NAME: &'static str = DEPLOYMENT;
}

/// `null.Release`: nothing was released.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {}

impl crate::Typed for Release {
    const TYPE_NAME: &'static str = RELEASE;
}

/// The configuration of every `null` plugin.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl Config {
    fn parse(config: &serde_json::Value) -> Result<Config, PluginError> {
        parse_config("null", config)
    }

    /// ` (labels a=1, b=2)`, or nothing without labels.
    fn shown_labels(&self) -> String {
        if self.labels.is_empty() {
            return String::new();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(" (labels {})", labels.join(", "))
    }
}

/// Builder `null`.
pub struct NullBuilder {
    config: Config,
}

impl NullBuilder {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Builder>, PluginError> {
        Ok(Box::new(NullBuilder {
            config: Config::parse(config)?,
        }))
    }
}

#[async_trait]
impl Builder for NullBuilder {
    fn output_type(&self) -> &'static str {
        ARTIFACT
    }

    async fn build(&self, ctx: &mut OpContext) -> Result<Value, PluginError> {
        ctx.info(&format!(
            "null builder: built nothing, an empty {ARTIFACT}{}",
            self.config.shown_labels()
        ));
        Value::of(&Artifact {})
    }
}

/// Registry `null`.
pub struct NullRegistry {
    config: Config,
}

impl NullRegistry {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Registry>, PluginError> {
        Ok(Box::new(NullRegistry {
            config: Config::parse(config)?,
        }))
    }
}

#[async_trait]
impl Registry for NullRegistry {
    fn input_types(&self) -> &[&'static str] {
        &[ARTIFACT]
    }

    fn output_type(&self) -> &'static str {
        ARTIFACT
    }

    async fn push(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        let Artifact {} = input.get::<Artifact>()?;
        ctx.info(&format!(
            "null registry: pushed nothing, an empty {ARTIFACT}{}",
            self.config.shown_labels()
        ));
        Value::of(&Artifact {})
    }
}

/// Platform `null`.
pub struct NullPlatform {
    config: Config,
}

impl NullPlatform {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Platform>, PluginError> {
        Ok(Box::new(NullPlatform {
            config: Config::parse(config)?,
        }))
    }
}

#[async_trait]
impl Platform for NullPlatform {
    fn input_types(&self) -> &[&'static str] {
        &[ARTIFACT]
    }

    fn output_type(&self) -> &'static str {
        DEPLOYMENT
    }

    async fn deploy(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        let Artifact {} = input.get::<Artifact>()?;
        ctx.info(&format!(
            "null platform: deployed nothing, an empty {DEPLOYMENT}{}",
            self.config.shown_labels()
        ));
        Value::of(&Deployment {})
    }

    async fn destroy(&self, ctx: &mut OpContext, deployment: &Value) -> Result<(), PluginError> {
        let Deployment {} = deployment.get::<Deployment>()?;
        ctx.info("null platform: destroyed nothing (a null deployment runs nothing)");
        Ok(())
    }

    async fn destroy_interrupted(&self, _ctx: &mut OpContext) -> Result<String, PluginError> {
        // The runner shows what this returns.
        Ok("nothing: a null deployment leaves nothing behind".to_string())
    }

    async fn status(
        &self,
        ctx: &mut OpContext,
        deployment: &Value,
    ) -> Result<DeploymentHealth, PluginError> {
        let Deployment {} = deployment.get::<Deployment>()?;
        ctx.info("null platform: a null deployment has no instances");
        Ok(DeploymentHealth {
            total: 0,
            alive: 0,
            instances: Vec::new(),
        })
    }

    fn url(&self, _deployment: &Value) -> Option<String> {
        None
    }
}

/// Releaser `null`.
pub struct NullReleaser {
    config: Config,
}

impl NullReleaser {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Releaser>, PluginError> {
        Ok(Box::new(NullReleaser {
            config: Config::parse(config)?,
        }))
    }
}

#[async_trait]
impl Releaser for NullReleaser {
    fn input_types(&self) -> &[&'static str] {
        &[DEPLOYMENT]
    }

    fn output_type(&self) -> &'static str {
        RELEASE
    }

    async fn release(
        &self,
        ctx: &mut OpContext,
        target: &Value,
        _others: &[(u64, Value)],
        opts: &ReleaseOptions,
    ) -> Result<ReleaseOutcome, PluginError> {
        let Deployment {} = target.get::<Deployment>()?;
        let pruned = if opts.prune { ", pruned nothing" } else { "" };
        ctx.info(&format!(
            "null releaser: released nothing, an empty {RELEASE} without URLs{pruned}{}",
            self.config.shown_labels()
        ));
        Ok(ReleaseOutcome {
            value: Value::of(&Release {})?,
            urls: Vec::new(),
            pruned: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
