//! Releaser `process`: marks the released deployment and prunes older ones.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::platform::health;
use super::supervisor::write_json_atomic;
use super::{app_dir, destroy_deployment, Deployment, DEPLOYMENT};
use crate::{
    async_trait, parse_config, OpContext, PluginError, ReleaseOptions, ReleaseOutcome, Releaser,
    Stream, Value,
};

pub const RELEASE: &str = "process.Release";

/// `process.Release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub sequence: u64,
    pub url: String,
}

impl crate::Typed for Release {
    const TYPE_NAME: &'static str = RELEASE;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {}

/// Releaser `process`.
pub struct ProcessReleaser;

impl ProcessReleaser {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Releaser>, PluginError> {
        let Config {} = parse_config("process", config)?;
        Ok(Box::new(ProcessReleaser))
    }
}

/// The sequence recorded by the last release of `app`, if any.
pub fn released_sequence(data_dir: &Path, app: &str) -> Option<u64> {
    let path = data_dir.join("deployments").join(app).join("released");
    let text = std::fs::read_to_string(path).ok()?;
    let marker: Release = serde_json::from_str(&text).ok()?;
    Some(marker.sequence)
}

#[async_trait]
impl Releaser for ProcessReleaser {
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
        others: &[(u64, Value)],
        opts: &ReleaseOptions,
    ) -> Result<ReleaseOutcome, PluginError> {
        tokio::task::block_in_place(|| release_blocking(ctx, target, others, opts))
    }
}

fn release_blocking(
    ctx: &mut OpContext,
    target: &Value,
    others: &[(u64, Value)],
    opts: &ReleaseOptions,
) -> Result<ReleaseOutcome, PluginError> {
    let deployment: Deployment = target.get::<Deployment>()?;
    let sequence = deployment.sequence;
    let health = health(&deployment);
    if health.alive == 0 {
        return Err(PluginError::Failed(format!(
            "v{sequence} has no running instance; deploy it again before releasing it"
        )));
    }
    let release = Release {
        sequence,
        url: deployment.url.clone(),
    };
    let dir = app_dir(ctx)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| PluginError::io(format!("creating {}", dir.display()), e))?;
    let marker = dir.join("released");
    write_json_atomic(&marker, &release)
        .map_err(|e| PluginError::io(format!("writing {}", marker.display()), e))?;
    ctx.info(&format!("released v{sequence} ({})", release.url));

    let mut pruned = Vec::new();
    if opts.prune {
        let mut older: Vec<(u64, Deployment)> = others
            .iter()
            .filter(|(seq, v)| *seq < sequence && v.type_name == DEPLOYMENT)
            .filter_map(|(seq, v)| v.get::<Deployment>().ok().map(|d| (*seq, d)))
            .collect();
        older.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        for (seq, old) in older.into_iter().skip(opts.retain) {
            match destroy_deployment(&old) {
                Ok(()) => {
                    ctx.info(&format!("pruned v{seq}"));
                    pruned.push(seq);
                }
                Err(e) => ctx
                    .out
                    .line(Stream::Info, &format!("could not prune v{seq}: {e}")),
            }
        }
        pruned.sort_unstable();
    }
    Ok(ReleaseOutcome {
        value: Value::of(&release)?,
        urls: vec![release.url],
        pruned,
    })
}
