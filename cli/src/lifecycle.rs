//! An app's lifecycle stages as plugin instances. Used by the CLI to check a
//! config before anything is queued, and by the runner to run it.

use std::sync::Arc;

use crate::config::{AppConfig, Config, PluginUse};
use crate::plugins::{
    Builder, Catalog, ExternalWanted, Kind, Platform, PluginError, Registry, Releaser,
};

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

/// Where external plugins are looked for (before `PATH`): the project's `.cairn/plugins/`,
/// then the user's `~/.config/cairn/plugins/`.
pub fn plugin_dirs(cfg: &Config) -> Vec<std::path::PathBuf> {
    vec![
        cfg.dir().join(".cairn").join("plugins"),
        crate::paths::config_dir().join("plugins"),
    ]
}

/// `catalog` with the external plugins `cfg` uses: every `use` name Cairn has no built-in
/// for, and every `plugin "NAME" { … }` block (whose `timeout = "90s"` sets how long each
/// operation of that plugin may take, and `checksum = "sha256:…"` pins the program).
pub async fn catalog_for(cfg: &Config, catalog: &Arc<Catalog>) -> Result<Arc<Catalog>, String> {
    let mut wanted: Vec<ExternalWanted> = Vec::new();
    for p in &cfg.plugins {
        let timeout = match p.config.get("timeout") {
            None => None,
            Some(serde_json::Value::String(t)) => {
                Some(crate::config::duration(t).map_err(|e| {
                    format!("{}: plugin \"{}\": `timeout`: {e}", p.location, p.name)
                })?)
            }
            Some(_) => {
                return Err(format!(
                    "{}: plugin \"{}\": `timeout` must be a duration such as \"90s\" or \"10m\"",
                    p.location, p.name
                ))
            }
        };
        let checksum = match p.config.get("checksum") {
            None => None,
            Some(serde_json::Value::String(c)) => Some(c.clone()),
            Some(_) => {
                return Err(format!(
                    "{}: plugin \"{}\": `checksum` must be a string such as \"sha256:…\"",
                    p.location, p.name
                ))
            }
        };
        wanted.push(ExternalWanted {
            name: p.name.clone(),
            timeout,
            declared: true,
            checksum,
        });
    }
    let mut uses: Vec<&PluginUse> = Vec::new();
    for app in &cfg.apps {
        if let Some(b) = &app.build {
            uses.push(&b.builder);
            uses.extend(b.registry.as_ref().map(|r| &r.plugin));
        }
        uses.extend(app.deploy.as_ref().map(|d| &d.plugin));
        uses.extend(app.release.as_ref().map(|r| &r.plugin));
    }
    for u in uses {
        if !wanted.iter().any(|w| w.name == u.name) {
            wanted.push(ExternalWanted {
                name: u.name.clone(),
                timeout: None,
                declared: false,
                checksum: None,
            });
        }
    }
    // Only what is not built in; nothing to look for is the common case.
    let all_builtin = wanted.iter().all(|w| {
        !w.declared
            && [
                Kind::Builder,
                Kind::Registry,
                Kind::Platform,
                Kind::Releaser,
            ]
            .iter()
            .any(|k| catalog.names(*k).contains(&w.name.as_str()))
    });
    if wanted.is_empty() || all_builtin {
        return Ok(catalog.clone());
    }
    catalog
        .with_externals(&wanted, &plugin_dirs(cfg))
        .await
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Whether `e` is the plugin's complaint about a field left out because it reads `artifact.*`
/// (or any complaint, for a plugin whose config lacks such fields: it could not be checked).
pub fn about_deferred(p: &PluginUse, e: &PluginError) -> bool {
    match e {
        PluginError::Config { field, .. } => {
            let top = field.split(['.', '[']).next().unwrap_or(field);
            p.deferred.contains(top)
        }
        _ => false,
    }
}

/// The registry, platform or releaser of a stage whose fields read
/// `artifact.*` or `deploy.*`: made anew for each operation from the config evaluated with
/// those values; anything else asked of it is an error.
struct Deferred {
    /// "registry", "platform" or "releaser".
    role: &'static str,
    name: String,
    fields: Vec<String>,
}

impl Deferred {
    fn refuse(&self) -> PluginError {
        PluginError::Failed(format!(
            "{} \"{}\" reads artifact.* or deploy.* in {}: it is made for each operation with that operation's values",
            self.role,
            self.name,
            self.fields.join(", ")
        ))
    }
}

#[async_trait::async_trait]
impl Platform for Deferred {
    fn input_types(&self) -> &[&'static str] {
        &[]
    }
    fn output_type(&self) -> &'static str {
        "deferred"
    }
    async fn deploy(
        &self,
        _ctx: &mut crate::plugins::OpContext,
        _input: &crate::plugins::Value,
    ) -> Result<crate::plugins::Value, PluginError> {
        Err(self.refuse())
    }
    async fn destroy(
        &self,
        _ctx: &mut crate::plugins::OpContext,
        _deployment: &crate::plugins::Value,
    ) -> Result<(), PluginError> {
        Err(self.refuse())
    }
    async fn destroy_interrupted(
        &self,
        _ctx: &mut crate::plugins::OpContext,
    ) -> Result<String, PluginError> {
        Err(self.refuse())
    }
    async fn status(
        &self,
        _ctx: &mut crate::plugins::OpContext,
        _deployment: &crate::plugins::Value,
    ) -> Result<crate::plugins::DeploymentHealth, PluginError> {
        Err(self.refuse())
    }
    fn url(&self, _deployment: &crate::plugins::Value) -> Option<String> {
        None
    }
}

#[async_trait::async_trait]
impl crate::plugins::Registry for Deferred {
    fn input_types(&self) -> &[&'static str] {
        &[]
    }
    fn output_type(&self) -> &'static str {
        "deferred"
    }
    async fn push(
        &self,
        _ctx: &mut crate::plugins::OpContext,
        _input: &crate::plugins::Value,
    ) -> Result<crate::plugins::Value, PluginError> {
        Err(self.refuse())
    }
}

#[async_trait::async_trait]
impl crate::plugins::Releaser for Deferred {
    fn input_types(&self) -> &[&'static str] {
        &[]
    }
    fn output_type(&self) -> &'static str {
        "deferred"
    }
    async fn release(
        &self,
        _ctx: &mut crate::plugins::OpContext,
        _target: &crate::plugins::Value,
        _others: &[(u64, crate::plugins::Value)],
        _opts: &crate::plugins::ReleaseOptions,
    ) -> Result<crate::plugins::ReleaseOutcome, PluginError> {
        Err(self.refuse())
    }
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
            let registry: Arc<dyn Registry> = match catalog.registry(&p.name, &p.config) {
                Ok(r) => r.into(),
                // A field reading `artifact.*` (the build's) waits for the push.
                Err(e) if about_deferred(p, &e) => Arc::new(Deferred {
                    role: "registry",
                    name: p.name.clone(),
                    fields: p.deferred.iter().cloned().collect(),
                }),
                Err(e) => return Err(locate(p, e)),
            };
            Some(registry)
        }
        None => None,
    };
    let d = &app.deploy_stage()?.plugin;
    let platform: Arc<dyn Platform> = match catalog.platform(&d.name, &d.config) {
        Ok(p) => p.into(),
        // A field that reads `artifact.*` is left out until the deploy evaluates it with the
        // artifact; the plugin's complaint about it waits for then.
        Err(e) if about_deferred(d, &e) => Arc::new(Deferred {
            role: "platform",
            name: d.name.clone(),
            fields: d.deferred.iter().cloned().collect(),
        }),
        Err(e) => return Err(locate(d, e)),
    };
    let releaser = match &app.release {
        Some(stage) => {
            let p = &stage.plugin;
            let releaser: Arc<dyn crate::plugins::Releaser> =
                match catalog.releaser(&p.name, &p.config) {
                    Ok(r) => r.into(),
                    // As for the platform: a field reading `deploy.*` or `artifact.*` waits
                    // for the release.
                    Err(e) if about_deferred(p, &e) => Arc::new(Deferred {
                        role: "releaser",
                        name: p.name.clone(),
                        fields: p.deferred.iter().cloned().collect(),
                    }),
                    Err(e) => return Err(locate(p, e)),
                };
            Some((p.name.clone(), releaser))
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
