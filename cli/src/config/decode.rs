//! From the checked syntax tree to [`Config`]: the schema of a Cairn config and the rules
//! that a schema cannot say (required stages, exactly one `use`, hook fields…).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_protocol::config;
use hcl::eval::Context;

use super::error::{ConfigError, Location};
use super::eval::{self, eval_attr};
use super::syntax::{self, Attr, Block, BlockSpec, Body, Lines, Schema};
use super::{AppConfig, BuildStage, Config, Hook, HookWhen, OnFailure, PluginUse, Stage};

static USE: Schema = Schema {
    attrs: &[],
    blocks: &[],
    ignored: &[],
    open: true,
};

static HOOK: Schema = Schema {
    attrs: &["when", "command", "on_failure"],
    blocks: &[],
    ignored: &[],
    open: false,
};

const USE_SPEC: BlockSpec = BlockSpec {
    name: "use",
    labels: &["plugin name"],
    schema: &USE,
};

const HOOK_SPEC: BlockSpec = BlockSpec {
    name: "hook",
    labels: &[],
    schema: &HOOK,
};

static STAGE: Schema = Schema {
    attrs: &["labels"],
    blocks: &[USE_SPEC, HOOK_SPEC],
    ignored: &[],
    open: false,
};

static BUILD: Schema = Schema {
    attrs: &["labels"],
    blocks: &[
        USE_SPEC,
        HOOK_SPEC,
        BlockSpec {
            name: "registry",
            labels: &[],
            schema: &STAGE,
        },
    ],
    ignored: &[],
    open: false,
};

static CONFIG: Schema = Schema {
    attrs: &["env"],
    blocks: &[],
    ignored: &[],
    open: false,
};

const CONFIG_SPEC: BlockSpec = BlockSpec {
    name: "config",
    labels: &[],
    schema: &CONFIG,
};

static APP: Schema = Schema {
    attrs: &["path", "labels"],
    blocks: &[
        CONFIG_SPEC,
        BlockSpec {
            name: "build",
            labels: &[],
            schema: &BUILD,
        },
        BlockSpec {
            name: "deploy",
            labels: &[],
            schema: &STAGE,
        },
        BlockSpec {
            name: "release",
            labels: &[],
            schema: &STAGE,
        },
    ],
    ignored: &["url", "runner"],
    open: false,
};

static TOP: Schema = Schema {
    attrs: &["project", "labels"],
    blocks: &[
        BlockSpec {
            name: "app",
            labels: &["app name"],
            schema: &APP,
        },
        CONFIG_SPEC,
    ],
    ignored: &["runner", "variable", "url", "plugin"],
    open: false,
};

const TOP_CTX: &str = "at the top level";

pub(crate) fn parse_hcl(src: &str, file: &Path) -> Result<Body, ConfigError> {
    let lines = Lines::new(file, src);
    super::nesting::check(src).map_err(|limit| match limit {
        super::nesting::Limit::Nesting(at) => ConfigError::syntax(
            lines.loc(at),
            format!(
                "nested more than {} levels deep (blocks, brackets, strings and templates)",
                super::nesting::MAX_NESTING
            ),
        ),
        super::nesting::Limit::Entries(at) => ConfigError::syntax(
            lines.loc(at),
            format!(
                "this {{ … }} holds more than {} lines or entries; split it (a config this large takes the parser minutes)",
                super::nesting::MAX_ENTRIES
            ),
        ),
    })?;
    let body = hcl::edit::parser::parse_body(src).map_err(|e| {
        let l = e.location();
        ConfigError::syntax(Location::new(file, l.line(), l.column()), e.message())
    })?;
    syntax::from_hcl(&body, &TOP, &lines, TOP_CTX)
}

pub(crate) fn parse_json(src: &str, file: &Path) -> Result<Body, ConfigError> {
    let lines = Lines::new(file, src);
    let node =
        super::json::parse(src).map_err(|e| ConfigError::syntax(lines.loc(e.at), e.message))?;
    syntax::from_json(&node, &TOP, &lines, TOP_CTX)
}

fn at(loc: &Location) -> String {
    format!("{}:{}", loc.line, loc.column)
}

/// At most one block named `ident` in `body`.
fn at_most_one<'a>(
    body: &'a Body,
    ident: &'a str,
    ctx: &str,
) -> Result<Option<&'a Block>, ConfigError> {
    let mut it = body.blocks(ident);
    let first = it.next();
    if let (Some(first), Some(second)) = (first, it.next()) {
        return Err(ConfigError::invalid(
            &second.loc,
            format!(
                "more than one `{ident}` block {ctx} (first at {})",
                at(&first.loc)
            ),
        ));
    }
    Ok(first)
}

fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

fn eval_string(attr: &Attr, ctx: &Context, example: &str) -> Result<String, ConfigError> {
    match eval_attr(attr, ctx)? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(ConfigError::invalid(
            &attr.loc,
            format!(
                "`{}` must be a string, e.g. {} = {example}; found {}",
                attr.name,
                attr.name,
                type_name(&other)
            ),
        )),
    }
}

/// A map of strings; numbers and booleans are accepted and written as strings.
fn eval_string_map(attr: &Attr, ctx: &Context) -> Result<BTreeMap<String, String>, ConfigError> {
    let bad = |found: &str| {
        ConfigError::invalid(
            &attr.loc,
            format!(
                "`{}` must be a map of strings, e.g. {} = {{ KEY = \"value\" }}; found {found}",
                attr.name, attr.name
            ),
        )
    };
    let serde_json::Value::Object(map) = eval_attr(attr, ctx)? else {
        return Err(bad("something else"));
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => return Err(bad(&format!("{} under `{k}`", type_name(&other)))),
        };
        out.insert(k, s);
    }
    Ok(out)
}

/// `config { env = { … } }` of `body`: names must be environment variable names, values at
/// most `MAX_VALUE` bytes; an error points at the entry's key.
fn config_env(
    body: &Body,
    ctx: &Context,
    where_: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some(env) = at_most_one(body, "config", where_)?.and_then(|b| b.body.attr("env")) else {
        return Ok(BTreeMap::new());
    };
    let map = eval_string_map(env, ctx)?;
    for (name, value) in &map {
        if let Err(why) = config::check_env_name(name) {
            return Err(ConfigError::invalid(
                env.key_loc(name),
                format!("invalid config variable name {name:?} in `env`: {why}"),
            ));
        }
        if value.len() > config::MAX_VALUE {
            return Err(ConfigError::invalid(
                env.key_loc(name),
                format!(
                    "the value of config variable {name} is {} bytes, over the {}-byte limit",
                    value.len(),
                    config::MAX_VALUE
                ),
            ));
        }
    }
    Ok(map)
}

pub(crate) fn decode(body: &Body, file: &Path, dir: &Path) -> Result<Config, ConfigError> {
    let start = Location::start_of(file);
    let base = eval::base_context(dir);

    let project = match body.attr("project") {
        Some(attr) => eval_string(attr, &base, "\"my-project\"")?,
        None => {
            return Err(ConfigError::invalid(
                &start,
                "missing `project` attribute at the top level: add project = \"NAME\"",
            ))
        }
    };
    if project.trim().is_empty() {
        let attr = body.attr("project").map_or(&start, |a| &a.loc);
        return Err(ConfigError::invalid(attr, "`project` must not be empty"));
    }
    if let Some(c) = project
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '/')
    {
        let attr = body.attr("project").map_or(&start, |a| &a.loc);
        return Err(ConfigError::invalid(
            attr,
            format!("`project` {project:?} holds {c:?}: a project name cannot hold control characters, spaces or '/'"),
        ));
    }
    if project.len() > MAX_PROJECT_NAME {
        let attr = body.attr("project").map_or(&start, |a| &a.loc);
        return Err(ConfigError::invalid(
            attr,
            format!(
                "`project` is {} bytes long; at most {MAX_PROJECT_NAME}",
                project.len()
            ),
        ));
    }

    let top_env = config_env(body, &base, TOP_CTX)?;
    let top_labels = match body.attr("labels") {
        Some(attr) => eval_string_map(attr, &base)?,
        None => BTreeMap::new(),
    };

    let mut apps: Vec<AppConfig> = Vec::new();
    for block in body.blocks("app") {
        let app = decode_app(block, &top_env, &top_labels, &base, dir)?;
        if let Some(first) = apps.iter().find(|a| a.name == app.name) {
            return Err(ConfigError::invalid(
                &block.loc,
                format!(
                    "app \"{}\" is defined twice (first at {})",
                    app.name,
                    at(&first.location)
                ),
            ));
        }
        apps.push(app);
    }
    if apps.is_empty() {
        return Err(ConfigError::invalid(
            &start,
            "no app defined: add app \"NAME\" { build { use \"…\" {} } deploy { use \"…\" {} } }",
        ));
    }

    Ok(Config {
        file: file.to_path_buf(),
        project,
        apps,
        env: top_env,
        labels: top_labels,
    })
}

/// Longest project name (the node's limit too).
const MAX_PROJECT_NAME: usize = 128;
/// Longest app name (the node's limit too): `APP--vN` stays one DNS label.
const MAX_APP_NAME: usize = 48;

fn valid_app_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_APP_NAME
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn decode_app(
    block: &Block,
    top_env: &BTreeMap<String, String>,
    top_labels: &BTreeMap<String, String>,
    base: &Context<'static>,
    dir: &Path,
) -> Result<AppConfig, ConfigError> {
    let name = block.labels[0].clone();
    if !valid_app_name(&name) {
        return Err(ConfigError::invalid(
            &block.loc,
            format!(
                "invalid app name {name:?}: use letters, digits, '-' and '_', starting with a letter or digit, at most {MAX_APP_NAME} of them"
            ),
        ));
    }
    let ctx_name = format!("in app \"{name}\"");
    let body = &block.body;

    let path = match body.attr("path") {
        Some(attr) => {
            let p = eval_string(attr, base, "\"./web\"")?;
            if p.is_empty() {
                return Err(ConfigError::invalid(
                    &attr.loc,
                    "`path` must not be empty (use \".\")",
                ));
            }
            PathBuf::from(p)
        }
        None => PathBuf::from("."),
    };
    let ctx = eval::app_context(base, dir, &dir.join(&path));

    // The project's labels, overridden key by key by the app's own.
    let mut labels = top_labels.clone();
    if let Some(attr) = body.attr("labels") {
        labels.extend(eval_string_map(attr, &ctx)?);
    }
    let app_env = self::config_env(body, &ctx, &ctx_name)?;
    let mut config_env = top_env.clone();
    config_env.extend(app_env.clone());

    let missing = |stage: &str| {
        ConfigError::invalid(&block.loc, format!("app \"{name}\" has no {stage} stage"))
    };

    let build_block = at_most_one(body, "build", &ctx_name)?.ok_or_else(|| missing("build"))?;
    let deploy_block = at_most_one(body, "deploy", &ctx_name)?.ok_or_else(|| missing("deploy"))?;
    let release_block = at_most_one(body, "release", &ctx_name)?;

    let build_what = format!("build stage of app \"{name}\"");
    let registry = match at_most_one(
        &build_block.body,
        "registry",
        &format!("in the {build_what}"),
    )? {
        Some(b) => Some(decode_stage(
            b,
            &ctx,
            &format!("registry stage of app \"{name}\""),
        )?),
        None => None,
    };
    let build = BuildStage {
        builder: decode_use(build_block, &ctx, &build_what)?,
        registry,
        hooks: decode_hooks(&build_block.body, &ctx)?,
        labels: stage_labels(build_block, &ctx)?,
    };
    let deploy = decode_stage(
        deploy_block,
        &ctx,
        &format!("deploy stage of app \"{name}\""),
    )?;
    let release = match release_block {
        Some(b) => Some(decode_stage(
            b,
            &ctx,
            &format!("release stage of app \"{name}\""),
        )?),
        None => None,
    };

    Ok(AppConfig {
        name,
        path,
        build,
        deploy,
        release,
        config_env,
        app_env,
        labels,
        location: block.loc.clone(),
    })
}

fn decode_stage(block: &Block, ctx: &Context, what: &str) -> Result<Stage, ConfigError> {
    Ok(Stage {
        plugin: decode_use(block, ctx, what)?,
        hooks: decode_hooks(&block.body, ctx)?,
        labels: stage_labels(block, ctx)?,
    })
}

/// A stage's own `labels = { … }` (Waypoint's operation labels).
fn stage_labels(block: &Block, ctx: &Context) -> Result<BTreeMap<String, String>, ConfigError> {
    match block.body.attr("labels") {
        Some(attr) => eval_string_map(attr, ctx),
        None => Ok(BTreeMap::new()),
    }
}

fn decode_use(stage: &Block, ctx: &Context, what: &str) -> Result<PluginUse, ConfigError> {
    let mut uses = stage.body.blocks("use");
    let Some(use_block) = uses.next() else {
        return Err(ConfigError::invalid(
            &stage.loc,
            format!("the {what} has no `use` block: say which plugin, e.g. use \"docker\" {{}}"),
        ));
    };
    if let Some(second) = uses.next() {
        return Err(ConfigError::invalid(
            &second.loc,
            format!(
                "the {what} has more than one `use` block (first at {}); a stage uses exactly one plugin",
                at(&use_block.loc)
            ),
        ));
    }
    let name = use_block.labels[0].clone();
    if name.trim().is_empty() {
        return Err(ConfigError::invalid(
            &use_block.loc,
            format!("the {what} has a `use` block with an empty plugin name"),
        ));
    }
    let mut config = serde_json::Map::new();
    let mut field_locations = BTreeMap::new();
    for attr in &use_block.body.attrs {
        config.insert(attr.name.clone(), eval_attr(attr, ctx)?);
        field_locations.insert(attr.name.clone(), attr.loc.clone());
    }
    Ok(PluginUse {
        name,
        config: serde_json::Value::Object(config),
        location: use_block.loc.clone(),
        field_locations,
    })
}

fn decode_hooks(body: &Body, ctx: &Context) -> Result<Vec<Hook>, ConfigError> {
    body.blocks("hook").map(|b| decode_hook(b, ctx)).collect()
}

fn decode_hook(block: &Block, ctx: &Context) -> Result<Hook, ConfigError> {
    let body = &block.body;
    let when = match body.attr("when") {
        None => {
            return Err(ConfigError::invalid(
                &block.loc,
                "hook has no `when`: add when = \"before\" or when = \"after\"",
            ))
        }
        Some(attr) => match eval_attr(attr, ctx)? {
            serde_json::Value::String(s) if s == "before" => HookWhen::Before,
            serde_json::Value::String(s) if s == "after" => HookWhen::After,
            other => {
                return Err(ConfigError::invalid(
                    &attr.loc,
                    format!("hook `when` must be \"before\" or \"after\", found {other}"),
                ))
            }
        },
    };
    let command = match body.attr("command") {
        None => {
            return Err(ConfigError::invalid(
                &block.loc,
                "hook has no `command`: add command = [\"program\", \"arg\"]",
            ))
        }
        Some(attr) => {
            let bad = |found: String| {
                ConfigError::invalid(
                    &attr.loc,
                    format!(
                        "hook `command` must be a non-empty list of strings, e.g. [\"make\", \"test\"]; found {found}"
                    ),
                )
            };
            match eval_attr(attr, ctx)? {
                serde_json::Value::Array(items) if !items.is_empty() => items
                    .into_iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => Ok(s),
                        other => Err(bad(format!("{} in the list", type_name(&other)))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                serde_json::Value::Array(_) => return Err(bad("an empty list".into())),
                other => return Err(bad(type_name(&other).into())),
            }
        }
    };
    let on_failure = match body.attr("on_failure") {
        None => OnFailure::Fail,
        Some(attr) => match eval_attr(attr, ctx)? {
            serde_json::Value::String(s) if s == "fail" => OnFailure::Fail,
            serde_json::Value::String(s) if s == "continue" => OnFailure::Continue,
            other => {
                return Err(ConfigError::invalid(
                    &attr.loc,
                    format!("hook `on_failure` must be \"fail\" or \"continue\", found {other}"),
                ))
            }
        },
    };
    Ok(Hook {
        when,
        command,
        on_failure,
        location: block.loc.clone(),
    })
}
