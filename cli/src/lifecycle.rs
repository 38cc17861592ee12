//! An app's lifecycle stages as plugin instances. Used by the CLI to check a
//! config before anything is queued, and by the runner to run it.

use std::sync::Arc;

use crate::config::{AppConfig, PluginUse};
use crate::plugins::{Builder, Catalog, Platform, PluginError, Registry, Releaser};

/// The instantiated plugins of one app.
pub struct Stages {
    pub builder: Arc<dyn Builder>,
    pub registry: Option<Arc<dyn Registry>>,
    pub platform: Arc<dyn Platform>,
    /// The deploy stage's plugin name.
    pub platform_name: String,
    /// The app's release stage, or the platform's own releaser when the app
    /// has no `release` block (as Waypoint does), or none.
    pub releaser: Option<(String, Arc<dyn Releaser>)>,
}

/// A plugin error with the config location it refers to.
pub fn locate(plugin: &PluginUse, e: PluginError) -> String {
    match &e {
        PluginError::Config { field, .. } => {
            let top = field.split(['.', '[']).next().unwrap_or(field);
            format!("{}: {e}", plugin.location_of(top))
        }
        _ => format!("{}: {e}", plugin.location),
    }
}

/// Instantiate every stage of `app`: unknown plugins and bad plugin fields
/// fail here, with the file:line:column of the offending block or field.
pub fn instantiate(app: &AppConfig, catalog: &Catalog) -> Result<Stages, String> {
    let build = app.build_stage()?;
    let b = &build.builder;
    let builder: Arc<dyn Builder> = catalog
        .builder(&b.name, &b.config)
        .map_err(|e| locate(b, e))?
        .into();
    let registry = match &build.registry {
        Some(stage) => {
            let p = &stage.plugin;
            Some(Arc::from(
                catalog
                    .registry(&p.name, &p.config)
                    .map_err(|e| locate(p, e))?,
            ))
        }
        None => None,
    };
    let d = &app.deploy_stage()?.plugin;
    let platform: Arc<dyn Platform> = catalog
        .platform(&d.name, &d.config)
        .map_err(|e| locate(d, e))?
        .into();
    let releaser = match &app.release {
        Some(stage) => {
            let p = &stage.plugin;
            Some((
                p.name.clone(),
                Arc::from(
                    catalog
                        .releaser(&p.name, &p.config)
                        .map_err(|e| locate(p, e))?,
                ),
            ))
        }
        None => match catalog.releaser(&d.name, &serde_json::json!({})) {
            Ok(r) => Some((d.name.clone(), Arc::from(r))),
            Err(_) => None,
        },
    };
    Ok(Stages {
        builder,
        registry,
        platform,
        platform_name: d.name.clone(),
        releaser,
    })
}
