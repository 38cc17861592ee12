//! The registry of plugins and mappers, and the search for mapper chains.

use std::collections::{HashMap, VecDeque};

use super::{
    command, files, process, Builder, Kind, Mapper, OpContext, Platform, PluginError, Registry,
    Releaser, Value,
};

type Factory<T> = fn(&serde_json::Value) -> Result<Box<T>, PluginError>;

/// The known plugins by kind and name, and the known mappers.
pub struct Catalog {
    builders: Vec<(&'static str, Factory<dyn Builder>)>,
    registries: Vec<(&'static str, Factory<dyn Registry>)>,
    platforms: Vec<(&'static str, Factory<dyn Platform>)>,
    releasers: Vec<(&'static str, Factory<dyn Releaser>)>,
    mappers: Vec<Mapper>,
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
        };
        #[cfg(feature = "docker")]
        {
            use super::docker;
            c.builders.push(("docker", docker::DockerBuilder::boxed));
            c.builders.push(("docker-pull", docker::PullBuilder::boxed));
            c.registries.push(("docker", docker::DockerRegistry::boxed));
            c.platforms.push(("docker", docker::DockerPlatform::boxed));
            c.mappers.push(docker::FILES_TO_IMAGE);
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
        }
    }

    pub fn builder(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Box<dyn Builder>, PluginError> {
        instantiate(Kind::Builder, &self.builders, name, config)
    }

    pub fn registry(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Box<dyn Registry>, PluginError> {
        instantiate(Kind::Registry, &self.registries, name, config)
    }

    pub fn platform(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Box<dyn Platform>, PluginError> {
        instantiate(Kind::Platform, &self.platforms, name, config)
    }

    pub fn releaser(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Box<dyn Releaser>, PluginError> {
        instantiate(Kind::Releaser, &self.releasers, name, config)
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
            for (i, m) in self.mappers.iter().enumerate() {
                if m.from == t && !origin.contains_key(m.to) {
                    origin.insert(m.to, Origin::Mapper(i));
                    queue.push_back(m.to);
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
        let mut chain: Vec<Mapper> = Vec::new();
        let start = loop {
            match origin.get(t) {
                Some(Origin::Value(i)) => break values[*i].clone(),
                Some(Origin::Mapper(i)) => {
                    let m = self.mappers[*i];
                    chain.push(m);
                    t = m.from;
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
#[derive(Debug, Clone)]
pub struct Conversion {
    start: Value,
    chain: Vec<Mapper>,
}

impl Conversion {
    /// The mappers it applies, as "from -> to".
    pub fn steps(&self) -> Vec<String> {
        self.chain
            .iter()
            .map(|m| format!("{} -> {}", m.from, m.to))
            .collect()
    }

    /// The type it produces: the last mapper's, or the value's own.
    pub fn output_type(&self) -> &str {
        self.chain
            .last()
            .map_or(self.start.type_name.as_str(), |m| m.to)
    }

    /// Applies the mappers in order.
    pub async fn run(self, ctx: &mut OpContext) -> Result<Value, PluginError> {
        let mut value = self.start;
        for m in &self.chain {
            ctx.info(&format!("mapping {} to {}", m.from, m.to));
            value = (m.f)(&value, ctx)
                .await
                .map_err(|e| PluginError::Failed(format!("mapping {} to {}: {e}", m.from, m.to)))?;
            if value.type_name != m.to {
                return Err(PluginError::Failed(format!(
                    "mapper {} -> {} produced a {}",
                    m.from, m.to, value.type_name
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
