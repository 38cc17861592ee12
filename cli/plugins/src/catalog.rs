//! The registry of plugins and mappers, and the search for mapper chains.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use cairn_plugin_sdk::protocol::ComponentKind;

use super::external::{self, ExternalComponent, ExternalPlugin};
use super::{
    command, files, process, Builder, Kind, Mapper, OpContext, Platform, PluginError, Registry,
    Releaser, Value,
};

type Factory<T> = fn(&serde_json::Value) -> Result<Box<T>, PluginError>;

/// The known plugins by kind and name, and the known mappers: the built-in ones, and the
/// external plugins a config asked for ([`Catalog::with_externals`]).
#[derive(Clone)]
pub struct Catalog {
    builders: Vec<(&'static str, Factory<dyn Builder>)>,
    registries: Vec<(&'static str, Factory<dyn Registry>)>,
    platforms: Vec<(&'static str, Factory<dyn Platform>)>,
    releasers: Vec<(&'static str, Factory<dyn Releaser>)>,
    mappers: Vec<Mapper>,
    externals: Vec<Arc<ExternalPlugin>>,
}

/// An external plugin the config names, where to look for it and how long it may take.
#[derive(Debug, Clone)]
pub struct ExternalWanted {
    pub name: String,
    /// `plugin "NAME" { timeout = … }`, else [`external::DEFAULT_OP_TIMEOUT`].
    pub timeout: Option<std::time::Duration>,
    /// `plugin "NAME" { … }` was written: not finding it is an error even when no stage
    /// uses it (it may bring mappers).
    pub declared: bool,
    /// `plugin "NAME" { checksum = "sha256:HEX" }`: the program must have this digest.
    pub checksum: Option<String>,
}

/// One step of a conversion: a built-in mapper or an external plugin's.
#[derive(Clone)]
enum Edge {
    Builtin(Mapper),
    External {
        plugin: Arc<ExternalPlugin>,
        from: String,
        to: String,
    },
}

impl Edge {
    fn from(&self) -> &str {
        match self {
            Edge::Builtin(m) => m.from,
            Edge::External { from, .. } => from,
        }
    }

    fn to(&self) -> &str {
        match self {
            Edge::Builtin(m) => m.to,
            Edge::External { to, .. } => to,
        }
    }

    async fn run(&self, value: &Value, ctx: &mut OpContext) -> Result<Value, PluginError> {
        match self {
            Edge::Builtin(m) => (m.f)(value, ctx).await,
            Edge::External { plugin, to, .. } => external::map(plugin, value, to, ctx).await,
        }
    }
}

impl Default for Catalog {
    /// No plugins: the program builds the one catalog it uses with
    /// [`Catalog::builtin`] and hands it to whoever needs it.
    fn default() -> Catalog {
        Catalog::empty()
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn names<T>(v: &[(&'static str, T)]) -> Vec<&'static str> {
            v.iter().map(|(n, _)| *n).collect()
        }
        f.debug_struct("Catalog")
            .field("builders", &names(&self.builders))
            .field("registries", &names(&self.registries))
            .field("platforms", &names(&self.platforms))
            .field("releasers", &names(&self.releasers))
            .field("mappers", &self.mappers.len())
            .field(
                "externals",
                &self
                    .externals
                    .iter()
                    .map(|e| e.name.clone())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Catalog {
    /// The built-in plugins and mappers.
    pub fn builtin() -> Catalog {
        #[allow(unused_mut)]
        let mut c = Catalog {
            builders: vec![
                ("command", command::CommandBuilder::boxed),
                ("files", files::FilesBuilder::boxed),
            ],
            registries: vec![("files", files::FilesRegistry::boxed)],
            platforms: vec![("process", process::ProcessPlatform::boxed)],
            releasers: vec![("process", process::ProcessReleaser::boxed)],
            mappers: vec![command::OUTPUT_TO_ARTIFACT, files::STORED_TO_ARTIFACT],
            externals: Vec::new(),
        };
        {
            use super::{exec, null};
            c.builders.push(("null", null::NullBuilder::boxed));
            c.registries.push(("null", null::NullRegistry::boxed));
            c.platforms.push(("exec", exec::ExecPlatform::boxed));
            c.platforms.push(("null", null::NullPlatform::boxed));
            c.releasers.push(("null", null::NullReleaser::boxed));
        }
        #[cfg(feature = "docker")]
        {
            use super::docker;
            c.builders.push(("docker", docker::DockerBuilder::boxed));
            c.builders.push(("docker-pull", docker::PullBuilder::boxed));
            c.registries.push(("docker", docker::DockerRegistry::boxed));
            c.platforms.push(("docker", docker::DockerPlatform::boxed));
            c.mappers.push(docker::FILES_TO_IMAGE);
        }
        #[cfg(feature = "kubernetes")]
        {
            use super::kubernetes;
            c.platforms
                .push(("kubernetes", kubernetes::KubernetesPlatform::boxed));
            c.platforms
                .push(("kubernetes-apply", kubernetes::ApplyPlatform::boxed));
            c.releasers
                .push(("kubernetes", kubernetes::KubernetesReleaser::boxed));
        }
        c
    }

    /// An empty catalog, to be filled with `add_mapper` (for tests and embedders).
    pub fn empty() -> Catalog {
        Catalog {
            builders: Vec::new(),
            registries: Vec::new(),
            platforms: Vec::new(),
            releasers: Vec::new(),
            mappers: Vec::new(),
            externals: Vec::new(),
        }
    }

    /// This catalog with the external plugins `wanted` that it does not have built in:
    /// each `cairn-plugin-NAME` found in `dirs` (then on `PATH`) is run once to learn its
    /// components and mappers. A name found nowhere is left out (using it is then the usual
    /// "not available" error) unless it was declared with a `plugin` block.
    pub async fn with_externals(
        &self,
        wanted: &[ExternalWanted],
        dirs: &[PathBuf],
    ) -> Result<Catalog, PluginError> {
        let mut c = self.clone();
        for w in wanted {
            if c.externals.iter().any(|e| e.name == w.name) || self.is_builtin(&w.name) {
                continue;
            }
            match external::find(&w.name, dirs) {
                Some(path) => {
                    if let Some(want) = &w.checksum {
                        external::check_digest(&w.name, &path, want)?;
                    }
                    let timeout = w.timeout.unwrap_or(external::DEFAULT_OP_TIMEOUT);
                    let plugin = ExternalPlugin::describe(&w.name, &path, timeout).await?;
                    c.externals.push(Arc::new(plugin));
                }
                None if w.declared => {
                    let looked: Vec<String> =
                        dirs.iter().map(|d| d.display().to_string()).collect();
                    return Err(PluginError::Failed(format!(
                        "plugin \"{}\" is declared, but no {}{} was found in {} or on PATH",
                        w.name,
                        external::PROGRAM_PREFIX,
                        w.name,
                        looked.join(", ")
                    )));
                }
                None => {}
            }
        }
        Ok(c)
    }

    /// The external plugins this catalog holds.
    pub fn externals(&self) -> &[Arc<ExternalPlugin>] {
        &self.externals
    }

    fn is_builtin(&self, name: &str) -> bool {
        [
            Kind::Builder,
            Kind::Registry,
            Kind::Platform,
            Kind::Releaser,
        ]
        .iter()
        .any(|k| self.names(*k).contains(&name))
    }

    fn external(&self, name: &str, kind: ComponentKind) -> Option<Arc<ExternalPlugin>> {
        self.externals
            .iter()
            .find(|e| e.name == name && e.has(kind))
            .cloned()
    }

    pub fn builder(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Box<dyn Builder>, PluginError> {
        match self.external(name, ComponentKind::Builder) {
            Some(p) if !self.is_builtin(name) => Ok(Box::new(ExternalComponent::new(
                p,
                ComponentKind::Builder,
                config,
            )?)),
            _ => instantiate(Kind::Builder, &self.builders, name, config),
        }
    }

    pub fn registry(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Box<dyn Registry>, PluginError> {
        match self.external(name, ComponentKind::Registry) {
            Some(p) if !self.is_builtin(name) => Ok(Box::new(ExternalComponent::new(
                p,
                ComponentKind::Registry,
                config,
            )?)),
            _ => instantiate(Kind::Registry, &self.registries, name, config),
        }
    }

    pub fn platform(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Box<dyn Platform>, PluginError> {
        match self.external(name, ComponentKind::Platform) {
            Some(p) if !self.is_builtin(name) => Ok(Box::new(ExternalComponent::new(
                p,
                ComponentKind::Platform,
                config,
            )?)),
            _ => instantiate(Kind::Platform, &self.platforms, name, config),
        }
    }

    pub fn releaser(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Box<dyn Releaser>, PluginError> {
        match self.external(name, ComponentKind::Releaser) {
            Some(p) if !self.is_builtin(name) => Ok(Box::new(ExternalComponent::new(
                p,
                ComponentKind::Releaser,
                config,
            )?)),
            _ => instantiate(Kind::Releaser, &self.releasers, name, config),
        }
    }

    /// The names of the plugins of one kind, sorted.
    pub fn names(&self, kind: Kind) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = match kind {
            Kind::Builder => self.builders.iter().map(|(n, _)| *n).collect(),
            Kind::Registry => self.registries.iter().map(|(n, _)| *n).collect(),
            Kind::Platform => self.platforms.iter().map(|(n, _)| *n).collect(),
            Kind::Releaser => self.releasers.iter().map(|(n, _)| *n).collect(),
        };
        names.sort_unstable();
        names
    }

    pub fn mappers(&self) -> &[Mapper] {
        &self.mappers
    }

    pub fn add_mapper(&mut self, mapper: Mapper) {
        self.mappers.push(mapper);
    }

    /// Plans how to produce a value of one of the `wanted` types from the values
    /// at hand: the shortest chain of mappers (none when a value already has a
    /// wanted type). Among chains of equal length the one starting from the latest
    /// value wins (values are in the order they were produced: build, then push…).
    /// Planning runs nothing, so a missing type is found before any work starts.
    pub fn plan(&self, values: &[Value], wanted: &[&str]) -> Result<Conversion, PluginError> {
        let edges: Vec<Edge> = self
            .mappers
            .iter()
            .map(|m| Edge::Builtin(*m))
            .chain(self.externals.iter().flat_map(|p| {
                p.mappers.iter().map(|m| Edge::External {
                    plugin: p.clone(),
                    from: m.from.clone(),
                    to: m.to.clone(),
                })
            }))
            .collect();
        // Multi-source BFS over type names. `origin[t]` is how `t` was reached: from a
        // value at hand (index) or through a mapper (index) from another type.
        enum Origin {
            Value(usize),
            Mapper(usize),
        }
        let mut origin: HashMap<&str, Origin> = HashMap::new();
        let mut queue: VecDeque<&str> = VecDeque::new();
        for (i, value) in values.iter().enumerate().rev() {
            let t = value.type_name.as_str();
            if !origin.contains_key(t) {
                origin.insert(t, Origin::Value(i));
                queue.push_back(t);
            }
        }
        let mut found = None;
        while let Some(t) = queue.pop_front() {
            if wanted.contains(&t) {
                found = Some(t);
                break;
            }
            for (i, m) in edges.iter().enumerate() {
                if m.from() == t && !origin.contains_key(m.to()) {
                    origin.insert(m.to(), Origin::Mapper(i));
                    queue.push_back(m.to());
                }
            }
        }
        let Some(mut t) = found else {
            let mut have: Vec<String> = Vec::new();
            for v in values {
                if !have.contains(&v.type_name) {
                    have.push(v.type_name.clone());
                }
            }
            return Err(PluginError::MissingType {
                wanted: wanted.iter().map(|w| w.to_string()).collect(),
                have,
            });
        };
        // Walk back to the value at hand; the mappers apply in the other order.
        let mut chain: Vec<Edge> = Vec::new();
        let start = loop {
            match origin.get(t) {
                Some(Origin::Value(i)) => break values[*i].clone(),
                Some(Origin::Mapper(i)) => {
                    let m = &edges[*i];
                    chain.push(m.clone());
                    t = m.from();
                }
                // Invariant: every type in the BFS tree has an origin.
                None => return Err(PluginError::Failed(format!("mapper search lost {t}"))),
            }
        };
        chain.reverse();
        Ok(Conversion { start, chain })
    }

    /// Produces a value of one of the `wanted` types from the values at hand
    /// ([`Catalog::plan`], then [`Conversion::run`]).
    pub async fn convert(
        &self,
        values: &[Value],
        wanted: &[&str],
        ctx: &mut OpContext,
    ) -> Result<Value, PluginError> {
        self.plan(values, wanted)?.run(ctx).await
    }
}

/// A planned conversion: a value at hand and the mappers to apply to it.
#[derive(Clone)]
pub struct Conversion {
    start: Value,
    chain: Vec<Edge>,
}

impl std::fmt::Debug for Conversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversion")
            .field("start", &self.start.type_name)
            .field("steps", &self.steps())
            .finish()
    }
}

impl Conversion {
    /// The mappers it applies, as "from -> to".
    pub fn steps(&self) -> Vec<String> {
        self.chain
            .iter()
            .map(|m| match m {
                Edge::Builtin(m) => format!("{} -> {}", m.from, m.to),
                Edge::External { plugin, from, to } => {
                    format!("{from} -> {to} (plugin {})", plugin.name)
                }
            })
            .collect()
    }

    /// The type it produces: the last mapper's, or the value's own.
    pub fn output_type(&self) -> &str {
        self.chain
            .last()
            .map_or(self.start.type_name.as_str(), |m| m.to())
    }

    /// Applies the mappers in order.
    pub async fn run(self, ctx: &mut OpContext) -> Result<Value, PluginError> {
        let mut value = self.start;
        for m in &self.chain {
            ctx.info(&format!("mapping {} to {}", m.from(), m.to()));
            value = m.run(&value, ctx).await.map_err(|e| {
                PluginError::Failed(format!("mapping {} to {}: {e}", m.from(), m.to()))
            })?;
            if value.type_name != m.to() {
                return Err(PluginError::Failed(format!(
                    "mapper {} -> {} produced a {}",
                    m.from(),
                    m.to(),
                    value.type_name
                )));
            }
        }
        Ok(value)
    }
}

fn instantiate<T: ?Sized>(
    kind: Kind,
    table: &[(&'static str, Factory<T>)],
    name: &str,
    config: &serde_json::Value,
) -> Result<Box<T>, PluginError> {
    match table.iter().find(|(n, _)| *n == name) {
        Some((_, factory)) => factory(config),
        None => {
            let mut available: Vec<String> = table.iter().map(|(n, _)| n.to_string()).collect();
            available.sort();
            Err(PluginError::UnknownPlugin {
                kind,
                name: name.to_string(),
                available,
            })
        }
    }
}
