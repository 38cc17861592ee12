//! From the checked syntax tree to [`Config`]: the schema of a Cairn config and the rules
//! that a schema cannot say (exactly one `use`, hook fields, variable types…).
//!
//! Decoding goes on past an error: every error of the file is collected (each located), and
//! an attribute that reads a variable which has no value is skipped without a second error.
//! What `cairn up` needs but a valid file may leave out (a project name, an app, a stage, a
//! `use` in a stage) is a [`Gap`], not an error: `cairn validate` shows it, commands that
//! run the app refuse it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cairn_protocol::config;
use hcl::eval::Context;
use serde_json::Value;

use super::error::{ConfigError, Location};
use super::eval::{self, eval_attr};
use super::syntax::{self, Attr, Block, BlockSpec, Body, Lines, Schema};
use super::vars::{self, Given, Inputs, Origin, Ty, VarValue, Variable};
use super::{
    AppConfig, BuildStage, Config, Gap, Hook, HookWhen, OnFailure, Pipeline, PluginDecl, PluginUse,
    RunnerConfig, Stage, Step, StepAction, UrlConfig,
};

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

/// `workspace "NAME" { use … }` and `label "SELECTOR" { use … }` inside a stage.
static SCOPED_USE: Schema = Schema {
    attrs: &[],
    blocks: &[USE_SPEC, HOOK_SPEC],
    ignored: &[],
    open: false,
};

const WORKSPACE_SCOPE: BlockSpec = BlockSpec {
    name: "workspace",
    labels: &["workspace name"],
    schema: &SCOPED_USE,
};

const LABEL_SCOPE: BlockSpec = BlockSpec {
    name: "label",
    labels: &["label selector"],
    schema: &SCOPED_USE,
};

static STAGE: Schema = Schema {
    attrs: &["labels"],
    blocks: &[USE_SPEC, HOOK_SPEC, WORKSPACE_SCOPE, LABEL_SCOPE],
    ignored: &[],
    open: false,
};

static BUILD: Schema = Schema {
    attrs: &["labels"],
    blocks: &[
        USE_SPEC,
        HOOK_SPEC,
        WORKSPACE_SCOPE,
        LABEL_SCOPE,
        BlockSpec {
            name: "registry",
            labels: &[],
            schema: &STAGE,
        },
    ],
    ignored: &[],
    open: false,
};

static CONFIG_RUNNER: Schema = Schema {
    attrs: &["env", "file"],
    blocks: &[],
    ignored: &[],
    open: false,
};

static CONFIG_SCOPED: Schema = Schema {
    attrs: &["env", "file", "internal"],
    blocks: &[],
    ignored: &[],
    open: false,
};

static CONFIG: Schema = Schema {
    attrs: &["env", "file", "internal"],
    blocks: &[
        BlockSpec {
            name: "runner",
            labels: &[],
            schema: &CONFIG_RUNNER,
        },
        BlockSpec {
            name: "workspace",
            labels: &["workspace name"],
            schema: &CONFIG_SCOPED,
        },
        BlockSpec {
            name: "label",
            labels: &["label selector"],
            schema: &CONFIG_SCOPED,
        },
    ],
    ignored: &[],
    open: false,
};

const CONFIG_SPEC: BlockSpec = BlockSpec {
    name: "config",
    labels: &[],
    schema: &CONFIG,
};

static POLL: Schema = Schema {
    attrs: &["enabled", "interval"],
    blocks: &[],
    ignored: &[],
    open: false,
};

static RUNNER: Schema = Schema {
    attrs: &["enabled", "profile", "labels"],
    blocks: &[
        BlockSpec {
            name: "data_source",
            labels: &["source type"],
            schema: &USE,
        },
        BlockSpec {
            name: "poll",
            labels: &[],
            schema: &POLL,
        },
    ],
    ignored: &[],
    open: false,
};

const RUNNER_SPEC: BlockSpec = BlockSpec {
    name: "runner",
    labels: &[],
    schema: &RUNNER,
};

static URL: Schema = Schema {
    attrs: &["auto_hostname"],
    blocks: &[],
    ignored: &[],
    open: false,
};

const URL_SPEC: BlockSpec = BlockSpec {
    name: "url",
    labels: &[],
    schema: &URL,
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
        URL_SPEC,
        RUNNER_SPEC,
    ],
    ignored: &[],
    open: false,
};

static VARIABLE: Schema = Schema {
    attrs: &[
        "type",
        "default",
        "description",
        "sensitive",
        "env",
        "nullable",
    ],
    blocks: &[],
    ignored: &[],
    open: false,
};

static STEP: Schema = Schema {
    attrs: &["image_url", "workspace"],
    blocks: &[
        USE_SPEC,
        BlockSpec {
            name: "pipeline",
            labels: &["pipeline name"],
            schema: &PIPELINE,
        },
    ],
    ignored: &[],
    open: false,
};

static PIPELINE: Schema = Schema {
    attrs: &[],
    blocks: &[BlockSpec {
        name: "step",
        labels: &["step name"],
        schema: &STEP,
    }],
    ignored: &[],
    open: false,
};

const PIPELINE_SPEC: BlockSpec = BlockSpec {
    name: "pipeline",
    labels: &["pipeline name"],
    schema: &PIPELINE,
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
        BlockSpec {
            name: "variable",
            labels: &["variable name"],
            schema: &VARIABLE,
        },
        RUNNER_SPEC,
        URL_SPEC,
        BlockSpec {
            name: "plugin",
            labels: &["plugin name"],
            schema: &USE,
        },
        PIPELINE_SPEC,
    ],
    ignored: &[],
    open: false,
};

const TOP_CTX: &str = "at the top level";

pub(crate) fn parse_hcl(
    src: &str,
    file: &Path,
    errs: &mut Vec<ConfigError>,
) -> Result<Body, ConfigError> {
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
    Ok(syntax::from_hcl(&body, &TOP, &lines, TOP_CTX, errs))
}

pub(crate) fn parse_json(
    src: &str,
    file: &Path,
    errs: &mut Vec<ConfigError>,
) -> Result<Body, ConfigError> {
    let lines = Lines::new(file, src);
    let node =
        super::json::parse(src).map_err(|e| ConfigError::syntax(lines.loc(e.at), e.message))?;
    Ok(syntax::from_json(&node, &TOP, &lines, TOP_CTX, errs))
}

fn at(loc: &Location) -> String {
    format!("{}:{}", loc.line, loc.column)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The state of one decode: the errors so far and what variables could not be given a value.
struct Decoder<'a> {
    file: &'a Path,
    dir: &'a Path,
    workspace: String,
    errs: Vec<ConfigError>,
    /// Variables without a value: attributes reading them are skipped (their error is the
    /// variable's, reported once).
    unresolved: BTreeSet<String>,
    /// Sensitive variables: a plugin field reading one is masked by `cairn validate`.
    sensitive: BTreeSet<String>,
    gaps: Vec<Gap>,
    /// What stops an operation but not the evaluation: `dynamic()` sources that could not be
    /// read, names Cairn cannot hold.
    blockers: Vec<Gap>,
    /// What Cairn did differently from what the file says, harmlessly (a name it rewrote).
    notes: Vec<Gap>,
    /// The app being decoded (gaps found meanwhile are its).
    app: Option<String>,
    /// The project's name once evaluated (kept when the file has errors, so that a caller
    /// can look up what the cluster stores for it).
    project: Option<String>,
}

impl Decoder<'_> {
    /// Collects an error; a source that cannot be reached is kept apart (the file is still
    /// valid, but cannot run until the value can be read).
    fn push(&mut self, e: ConfigError) {
        match e {
            ConfigError::Unreachable {
                location,
                attribute,
                source_name,
                message,
            } => self.blockers.push(Gap {
                location,
                message: format!("`{attribute}` reads config source \"{source_name}\", which cannot be reached: {message}"),
                app: self.app.clone(),
            }),
            e => self.errs.push(e),
        }
    }

    /// A rule of Cairn's the file breaks without making the rest unreadable (a name): an error
    /// for every command, reported by `cairn validate` with the plan.
    fn blocker(&mut self, loc: &Location, message: impl Into<String>) {
        self.blockers.push(Gap {
            location: loc.clone(),
            message: message.into(),
            app: self.app.clone(),
        });
    }

    fn note(&mut self, loc: &Location, message: impl Into<String>) {
        self.notes.push(Gap {
            location: loc.clone(),
            message: message.into(),
            app: self.app.clone(),
        });
    }

    fn gap(&mut self, loc: &Location, message: impl Into<String>) {
        self.gaps.push(Gap {
            location: loc.clone(),
            message: message.into(),
            app: self.app.clone(),
        });
    }

    /// `attr` evaluated, or `None` with its error collected (or without one when it reads a
    /// variable that has no value).
    fn eval(&mut self, attr: &Attr, ctx: &Context) -> Option<Value> {
        if vars::var_refs(&attr.expr)
            .iter()
            .any(|v| self.unresolved.contains(v))
        {
            return None;
        }
        match eval_attr(attr, ctx) {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }

    fn eval_string(&mut self, attr: &Attr, ctx: &Context, example: &str) -> Option<String> {
        match self.eval(attr, ctx)? {
            Value::String(s) => Some(s),
            other => {
                self.push(ConfigError::invalid(
                    &attr.loc,
                    format!(
                        "`{}` must be a string, e.g. {} = {example}; found {}",
                        attr.name,
                        attr.name,
                        type_name(&other)
                    ),
                ));
                None
            }
        }
    }

    fn eval_bool(&mut self, attr: &Attr, ctx: &Context) -> Option<bool> {
        match self.eval(attr, ctx)? {
            Value::Bool(b) => Some(b),
            other => {
                self.push(ConfigError::invalid(
                    &attr.loc,
                    format!(
                        "`{}` must be true or false; found {}",
                        attr.name,
                        type_name(&other)
                    ),
                ));
                None
            }
        }
    }

    /// A map of strings; numbers and booleans are accepted and written as strings.
    fn eval_string_map(&mut self, attr: &Attr, ctx: &Context) -> Option<BTreeMap<String, String>> {
        let value = self.eval(attr, ctx)?;
        let bad = |found: &str| {
            ConfigError::invalid(
                &attr.loc,
                format!(
                    "`{}` must be a map of strings, e.g. {} = {{ KEY = \"value\" }}; found {found}",
                    attr.name, attr.name
                ),
            )
        };
        let Value::Object(map) = value else {
            self.push(bad(type_name(&value)));
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let s = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.push(bad(&format!("{} under `{k}`", type_name(&other))));
                    return None;
                }
            };
            out.insert(k, s);
        }
        Some(out)
    }

    /// At most one block named `ident` in `body` (a second is an error; the first is used).
    fn at_most_one<'b>(&mut self, body: &'b Body, ident: &str, ctx: &str) -> Option<&'b Block> {
        let mut it = body.blocks.iter().filter(|b| b.ident == ident);
        let first = it.next();
        for extra in it {
            if let Some(first) = first {
                self.push(ConfigError::invalid(
                    &extra.loc,
                    format!(
                        "more than one `{ident}` block {ctx} (first at {})",
                        at(&first.loc)
                    ),
                ));
            }
        }
        first
    }

    /// Whether a `workspace`/`label` scope applies to this load.
    fn scope_matches(&mut self, block: &Block, labels: &BTreeMap<String, String>) -> bool {
        match block.ident.as_str() {
            "workspace" => block.labels[0] == self.workspace,
            _ => {
                let mut all = labels.clone();
                all.insert("waypoint/workspace".into(), self.workspace.clone());
                all.insert("cairn/workspace".into(), self.workspace.clone());
                match super::selector::matches(&block.labels[0], &all) {
                    Ok(m) => m,
                    Err(e) => {
                        self.push(ConfigError::invalid(
                            &block.loc,
                            format!("bad label selector {:?}: {e}", block.labels[0]),
                        ));
                        false
                    }
                }
            }
        }
    }
}

/// The config `body` makes, and the names of its project (as far as it was evaluated) and
/// apps, kept when the file has errors.
pub(crate) fn decode(
    body: &Body,
    file: &Path,
    dir: &Path,
    inputs: &Inputs,
    errs: Vec<ConfigError>,
) -> (Result<Config, ConfigError>, Names) {
    let mut project = None;
    let r = decode_into(body, file, dir, inputs, errs, &mut project);
    let names = Names {
        project,
        apps: body
            .blocks("app")
            .map(|b| cairn_name(&b.labels[0]))
            .collect(),
        variables: body
            .blocks("variable")
            .map(|b| {
                let sensitive = b
                    .body
                    .attr("sensitive")
                    .is_some_and(|a| matches!(a.expr, hcl::Expression::Bool(true)));
                (b.labels[0].clone(), sensitive)
            })
            .collect(),
    };
    (r, names)
}

/// The names a config gives, as Cairn takes them.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// `None` when `project` could not be evaluated.
    pub project: Option<String>,
    pub apps: Vec<String>,
    /// The input variables declared, each with whether it says `sensitive = true`.
    pub variables: Vec<(String, bool)>,
}

fn decode_into(
    body: &Body,
    file: &Path,
    dir: &Path,
    inputs: &Inputs,
    errs: Vec<ConfigError>,
    project_out: &mut Option<String>,
) -> Result<Config, ConfigError> {
    let start = Location::start_of(file);
    let mut d = Decoder {
        file,
        dir,
        workspace: inputs.workspace(),
        errs,
        unresolved: BTreeSet::new(),
        sensitive: BTreeSet::new(),
        gaps: Vec::new(),
        blockers: Vec::new(),
        notes: Vec::new(),
        app: None,
        project: None,
    };
    if let Err(why) = check_workspace_name(&d.workspace) {
        d.push(ConfigError::invalid(
            &start,
            format!("workspace {:?}: {why}", d.workspace),
        ));
    }

    let mut base = eval::base_context(dir);
    let mut ws = hcl::Map::new();
    ws.insert("name".into(), hcl::Value::String(d.workspace.clone()));
    base.declare_var("workspace", hcl::Value::Object(ws));
    for (name, value) in [("artifact", &inputs.artifact), ("deploy", &inputs.deploy)] {
        if let Some(v) = value {
            base.declare_var(name, hcl::to_value(v).unwrap_or(hcl::Value::Null));
        }
    }

    let variables = decode_variables(&mut d, body, &base, inputs);
    let mut var_obj = hcl::Map::new();
    for v in &variables {
        if let Some(value) = &v.value {
            var_obj.insert(
                v.name.clone(),
                hcl::to_value(&value.value).unwrap_or(hcl::Value::Null),
            );
        }
    }
    base.declare_var("var", hcl::Value::Object(var_obj));

    let project = match body.attr("project") {
        Some(attr) => d
            .eval_string(attr, &base, "\"my-project\"")
            .map(|p| {
                let name = cairn_name(&p);
                if name != p {
                    d.note(
                        &attr.loc,
                        format!("project {p:?} is {name:?} in Cairn (its names hold no '/'; set project = {name:?} to say so)"),
                    );
                }
                if let Err(why) = check_project_name(&name) {
                    d.blocker(&attr.loc, why);
                }
                d.project = Some(name.clone());
                name
            })
            .unwrap_or_default(),
        None => {
            d.gap(
                &start,
                "no `project` attribute at the top level: add project = \"NAME\"",
            );
            String::new()
        }
    };

    let top_labels = match body.attr("labels") {
        Some(attr) => d.eval_string_map(attr, &base).unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let top_config = decode_config(&mut d, body, &base, &top_labels, TOP_CTX);
    let runner = d
        .at_most_one(body, "runner", TOP_CTX)
        .map(|b| decode_runner(&mut d, b, &base));
    let url = d
        .at_most_one(body, "url", TOP_CTX)
        .map(|b| decode_url(&mut d, b, &base));
    let plugins = body
        .blocks("plugin")
        .map(|b| PluginDecl {
            name: b.labels[0].clone(),
            config: decode_open(&mut d, &b.body, &base),
            location: b.loc.clone(),
        })
        .collect();
    let pipelines = body
        .blocks("pipeline")
        .map(|b| decode_pipeline(&mut d, b, &base))
        .collect();

    let mut apps: Vec<AppConfig> = Vec::new();
    for block in body.blocks("app") {
        d.app = Some(cairn_name(&block.labels[0]));
        eval::set_app(d.app.as_deref());
        let app = decode_app(&mut d, block, &top_config, &top_labels, &base);
        eval::set_app(None);
        d.app = None;
        let Some(app) = app else {
            continue;
        };
        if let Some(first) = apps.iter().find(|a| a.name == app.name) {
            d.push(ConfigError::invalid(
                &block.loc,
                format!(
                    "app \"{}\" is defined twice (first at {}){}",
                    block.labels[0],
                    at(&first.location),
                    if block.labels[0] != app.name {
                        format!(", as Cairn names it: {:?}", app.name)
                    } else {
                        String::new()
                    }
                ),
            ));
            continue;
        }
        apps.push(app);
    }
    if body.blocks("app").next().is_none() {
        d.gap(
            &start,
            "no app defined: add app \"NAME\" { build { use \"…\" {} } deploy { use \"…\" {} } }",
        );
    }

    project_out.clone_from(&d.project);
    if !d.errs.is_empty() {
        return Err(ConfigError::many(std::mem::take(&mut d.errs)));
    }
    Ok(Config {
        file: file.to_path_buf(),
        project,
        apps,
        env: top_config.env,
        workspace_env: top_config.scoped_env,
        secret_env: top_config.secret,
        labels: top_labels,
        workspace: d.workspace,
        variables,
        files: top_config.files,
        workspace_files: top_config.scoped_files,
        runner_env: top_config.runner_env,
        runner,
        url,
        plugins,
        pipelines,
        gaps: d.gaps,
        blockers: d.blockers,
        notes: d.notes,
    })
}

fn check_workspace_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    if name.is_empty() || name.len() > 64 {
        return Err("a workspace name is 1 to 64 characters".into());
    }
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(
            "a workspace name holds letters, digits, '-' and '_', starting with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

fn check_project_name(project: &str) -> Result<(), String> {
    if project.trim().is_empty() {
        return Err("`project` must not be empty".into());
    }
    if let Some(c) = project
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '/')
    {
        return Err(format!(
            "`project` {project:?} holds {c:?}: a project name cannot hold control characters, spaces or '/' (use '-')"
        ));
    }
    if project.len() > MAX_PROJECT_NAME {
        return Err(format!(
            "`project` is {} bytes long; at most {MAX_PROJECT_NAME}",
            project.len()
        ));
    }
    Ok(())
}

/// Longest project name (the node's limit too).
const MAX_PROJECT_NAME: usize = 128;
/// Longest app name (the node's limit too): `APP--vN` stays one DNS label.
const MAX_APP_NAME: usize = 48;

/// The name Cairn gives a project or app the file names `name`: Waypoint allowed '/' in
/// them, Cairn's names hold none (they become paths, container names and DNS labels), so
/// each '/' becomes '-'.
fn cairn_name(name: &str) -> String {
    name.replace('/', "-")
}

fn valid_app_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_APP_NAME
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

// ---------------------------------------------------------------------------------------------
// Variables

struct Decl<'b> {
    block: &'b Block,
    ty: Ty,
    sensitive: bool,
    description: Option<String>,
    env: Vec<String>,
}

fn decode_variables(
    d: &mut Decoder,
    body: &Body,
    base: &Context<'static>,
    inputs: &Inputs,
) -> Vec<Variable> {
    // Declarations.
    let mut decls: Vec<Decl> = Vec::new();
    for block in body.blocks("variable") {
        let name = block.labels[0].clone();
        if !valid_var_name(&name) {
            d.push(ConfigError::invalid(
                &block.loc,
                format!("invalid variable name {name:?}: use letters, digits, '_' and '-', starting with a letter"),
            ));
            continue;
        }
        if let Some(first) = decls.iter().find(|x| x.block.labels[0] == name) {
            d.push(ConfigError::invalid(
                &block.loc,
                format!(
                    "variable \"{name}\" is declared twice (first at {})",
                    at(&first.block.loc)
                ),
            ));
            continue;
        }
        let ty = match block.body.attr("type") {
            None => Ty::Any,
            Some(attr) => match Ty::parse(&attr.expr) {
                Ok(t) => t,
                Err(e) => {
                    d.push(ConfigError::invalid(
                        &attr.loc,
                        format!("variable \"{name}\": {e}"),
                    ));
                    Ty::Any
                }
            },
        };
        let plain = Context::new();
        let sensitive = block
            .body
            .attr("sensitive")
            .and_then(|a| d.eval_bool(a, &plain))
            .unwrap_or(false);
        let description = block
            .body
            .attr("description")
            .and_then(|a| d.eval_string(a, &plain, "\"what it is for\""));
        let env = match block.body.attr("env") {
            None => Vec::new(),
            Some(a) => match d.eval(a, &plain) {
                Some(Value::Array(items)) if items.iter().all(|i| i.is_string()) => items
                    .into_iter()
                    .filter_map(|i| i.as_str().map(String::from))
                    .collect(),
                Some(_) => {
                    d.push(ConfigError::invalid(
                        &a.loc,
                        "`env` must be a list of environment variable names, e.g. env = [\"PORT\"]",
                    ));
                    Vec::new()
                }
                None => Vec::new(),
            },
        };
        if sensitive {
            d.sensitive.insert(name.clone());
        }
        decls.push(Decl {
            block,
            ty,
            sensitive,
            description,
            env,
        });
    }

    // Values given, lowest precedence first; later ones replace earlier ones.
    let mut given: Givens = BTreeMap::new();
    // Stored on the cluster (a value for a variable the file no longer declares is left
    // alone: the file may have moved on).
    if let Some(server) = &inputs.server {
        for (name, (value, origin)) in server.inputs(&d.workspace) {
            if decls.iter().any(|x| x.block.labels[0] == name) {
                given.insert(name, (Given::Text(value), origin, None));
            }
        }
    }
    for decl in &decls {
        if let Some((var, value)) = decl
            .env
            .iter()
            .find_map(|e| inputs.env_var(e).map(|v| (e.clone(), v)))
        {
            given.insert(
                decl.block.labels[0].clone(),
                (Given::Text(value), Origin::VariableEnv(var), None),
            );
        }
    }
    let names: Vec<String> = decls.iter().map(|x| x.block.labels[0].clone()).collect();
    for path in vars::auto_files(d.dir) {
        apply_vars_file(d, &path, true, &names, &mut given);
    }
    for name in &names {
        for prefix in ["WP_VAR_", "CAIRN_VAR_"] {
            let key = format!("{prefix}{name}");
            if let Some(v) = inputs.env_var(&key) {
                given.insert(name.clone(), (Given::Text(v), Origin::Env(key), None));
            }
        }
    }
    for path in &inputs.var_files {
        apply_vars_file(d, path, false, &names, &mut given);
    }
    let start = Location::start_of(d.file);
    for flag in &inputs.vars {
        let Some((name, value)) = flag.split_once('=') else {
            d.push(ConfigError::invalid(
                &start,
                format!("-var {flag:?}: write -var NAME=VALUE"),
            ));
            continue;
        };
        let name = name.trim();
        if !names.iter().any(|n| n == name) {
            d.push(ConfigError::invalid(
                &start,
                format!(
                    "-var {name}: no variable \"{name}\" is declared in this file (declared: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
            continue;
        }
        given.insert(
            name.to_string(),
            (Given::Text(value.to_string()), Origin::Flag, None),
        );
    }

    // Each variable's value.
    let mut out = Vec::new();
    for decl in decls {
        let name = decl.block.labels[0].clone();
        let value = match given.remove(&name) {
            Some((g, origin, loc)) => match g.into_value(&decl.ty) {
                Ok(v) => Some(VarValue {
                    value: v,
                    origin,
                    sensitive: decl.sensitive,
                }),
                Err(e) => {
                    let loc = loc.unwrap_or_else(|| decl.block.loc.clone());
                    // The reason may quote the value: not for a sensitive one.
                    let why = if decl.sensitive {
                        "(not shown: the variable is sensitive)".to_string()
                    } else {
                        e
                    };
                    d.push(ConfigError::invalid(
                        &loc,
                        format!(
                            "variable \"{name}\" is of type {}, and the value from {origin} does not fit: {why}",
                            decl.ty
                        ),
                    ));
                    None
                }
            },
            None => match decl.block.body.attr("default") {
                Some(attr) => match eval_attr(attr, base) {
                    Ok(v) => match vars::convert(v, &decl.ty) {
                        Ok(v) => Some(VarValue {
                            value: v,
                            origin: Origin::Default,
                            sensitive: decl.sensitive,
                        }),
                        Err(e) => {
                            d.push(ConfigError::invalid(
                                &attr.loc,
                                format!(
                                    "variable \"{name}\" is of type {}, and its default does not fit: {e}",
                                    decl.ty
                                ),
                            ));
                            None
                        }
                    },
                    Err(e) => {
                        d.push(e);
                        None
                    }
                },
                None => {
                    d.push(ConfigError::NoValue {
                        location: decl.block.loc.clone(),
                        variable: name.clone(),
                        message: format!(
                            "variable \"{name}\" has no value: set it with -var {name}=VALUE, -var-file FILE, CAIRN_VAR_{name}=VALUE in the environment or a *.auto.cairnvars file, store it on the cluster with `cairn var set {name} VALUE`, or give it a default"
                        ),
                    });
                    None
                }
            },
        };
        if value.is_none() {
            d.unresolved.insert(name.clone());
        }
        out.push(Variable {
            name,
            ty: decl.ty.to_string(),
            description: decl.description,
            sensitive: decl.sensitive,
            value,
            location: decl.block.loc.clone(),
        });
    }
    out
}

type Givens = BTreeMap<String, (Given, Origin, Option<Location>)>;

/// The entries of one vars file into `given` (an undeclared name is an error at its line).
fn apply_vars_file(
    d: &mut Decoder,
    path: &Path,
    auto: bool,
    declared: &[String],
    given: &mut Givens,
) {
    let entries = match vars::read_vars_file(path) {
        Ok(e) => e,
        Err(e) => {
            d.push(e);
            return;
        }
    };
    for entry in entries {
        if !declared.contains(&entry.name) {
            d.push(ConfigError::invalid(
                &entry.location,
                format!(
                    "no variable \"{}\" is declared in {}: declare it with variable \"{}\" {{ type = string }}",
                    entry.name,
                    d.file.display(),
                    entry.name
                ),
            ));
            continue;
        }
        match entry.value {
            Ok(v) => {
                let origin = if auto {
                    Origin::AutoFile(path.to_path_buf())
                } else {
                    Origin::VarFile(path.to_path_buf())
                };
                given.insert(entry.name, (Given::Value(v), origin, Some(entry.location)));
            }
            Err(e) => d.push(ConfigError::invalid(
                &entry.location,
                format!("the value of \"{}\" cannot be read: {e}", entry.name),
            )),
        }
    }
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

// ---------------------------------------------------------------------------------------------
// config { env, file, internal, runner { env }, workspace "x" { … } }

/// What a `config` block gives (already merged with its matching scopes).
#[derive(Default, Clone)]
struct ConfigOut {
    /// The block's own `env`.
    env: BTreeMap<String, String>,
    /// `env` of its `workspace`/`label` scopes that match this load.
    scoped_env: BTreeMap<String, String>,
    /// Names whose value reads a sensitive variable.
    secret: BTreeSet<String>,
    /// The block's own `file`.
    files: BTreeMap<String, String>,
    /// `file` of its matching scopes.
    scoped_files: BTreeMap<String, String>,
    runner_env: BTreeMap<String, String>,
}

fn decode_config(
    d: &mut Decoder,
    body: &Body,
    ctx: &Context<'static>,
    labels: &BTreeMap<String, String>,
    where_: &str,
) -> ConfigOut {
    let mut out = ConfigOut::default();
    let Some(block) = d.at_most_one(body, "config", where_) else {
        return out;
    };
    let mut bodies = vec![&block.body];
    for scoped in block
        .body
        .blocks
        .iter()
        .filter(|b| b.ident == "workspace" || b.ident == "label")
    {
        if d.scope_matches(scoped, labels) {
            bodies.push(&scoped.body);
        }
    }
    // `internal` first: env and file may read config.internal.NAME.
    let mut internal = hcl::Map::new();
    let mut internal_failed = false;
    for b in &bodies {
        if let Some(attr) = b.attr("internal") {
            let value = d.eval(attr, ctx);
            internal_failed |= value.is_none();
            match value {
                Some(Value::Object(m)) => {
                    for (k, v) in m {
                        internal.insert(k, hcl::to_value(&v).unwrap_or(hcl::Value::Null));
                    }
                }
                Some(other) => d.push(ConfigError::invalid(
                    &attr.loc,
                    format!(
                        "`internal` must be a map, e.g. internal = {{ NAME = \"value\" }}; found {}",
                        type_name(&other)
                    ),
                )),
                None => {}
            }
        }
    }
    let mut ctx = ctx.clone();
    let mut config_var = hcl::Map::new();
    config_var.insert("internal".into(), hcl::Value::Object(internal));
    ctx.declare_var("config", hcl::Value::Object(config_var));
    // An `internal` that failed was reported: what reads it is left out quietly.
    let reads_failed = |attr: &Attr| internal_failed && vars::mentions_root(&attr.expr, "config");
    for (i, b) in bodies.iter().enumerate() {
        if let Some(attr) = b.attr("env").filter(|a| !reads_failed(a)) {
            if let Some(env) = checked_env(d, attr, &ctx) {
                out.secret.extend(secret_keys(d, attr, &env));
                if i == 0 {
                    out.env.extend(env);
                } else {
                    out.scoped_env.extend(env);
                }
            }
        }
        if let Some(attr) = b.attr("file").filter(|a| !reads_failed(a)) {
            if let Some(files) = checked_files(d, attr, &ctx) {
                if i == 0 {
                    out.files.extend(files);
                } else {
                    out.scoped_files.extend(files);
                }
            }
        }
    }
    if let Some(runner) = d.at_most_one(&block.body, "runner", "in `config`") {
        if let Some(attr) = runner.body.attr("env") {
            if let Some(env) = checked_env(d, attr, &ctx) {
                out.runner_env.extend(env);
            }
        }
    }
    out
}

/// The keys of `env` whose value reads a sensitive variable (all of them when the map is not
/// written literally and reads one).
fn secret_keys(d: &Decoder, attr: &Attr, env: &BTreeMap<String, String>) -> BTreeSet<String> {
    let sensitive = |e: &hcl::Expression| vars::var_refs(e).iter().any(|v| d.sensitive.contains(v));
    match &attr.expr {
        hcl::Expression::Object(obj) => obj
            .iter()
            .filter(|(_, v)| sensitive(v))
            .filter_map(|(k, _)| match k {
                hcl::expr::ObjectKey::Identifier(i) => Some(i.to_string()),
                hcl::expr::ObjectKey::Expression(hcl::Expression::String(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        e if sensitive(e) => env.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

/// `env = { … }`: names must be environment variable names, values at most `MAX_VALUE` bytes;
/// an error points at the entry's key.
fn checked_env(d: &mut Decoder, env: &Attr, ctx: &Context) -> Option<BTreeMap<String, String>> {
    let map = d.eval_string_map(env, ctx)?;
    let mut ok = true;
    for (name, value) in &map {
        if let Err(why) = config::check_env_name(name) {
            d.push(ConfigError::invalid(
                env.key_loc(name),
                format!("invalid config variable name {name:?} in `env`: {why}"),
            ));
            ok = false;
        } else if value.len() > config::MAX_VALUE {
            d.push(ConfigError::invalid(
                env.key_loc(name),
                format!(
                    "the value of config variable {name} is {} bytes, over the {}-byte limit",
                    value.len(),
                    config::MAX_VALUE
                ),
            ));
            ok = false;
        }
    }
    ok.then_some(map)
}

/// `file = { "PATH" = "CONTENT" }`: files the entrypoint writes into each instance; a path is
/// relative to the instance's working directory or absolute.
fn checked_files(d: &mut Decoder, attr: &Attr, ctx: &Context) -> Option<BTreeMap<String, String>> {
    let map = d.eval_string_map(attr, ctx)?;
    let mut ok = true;
    for (path, content) in &map {
        if path.is_empty() || path.split('/').any(|c| c == "..") || path.contains('\0') {
            d.push(ConfigError::invalid(
                attr.key_loc(path),
                format!("config file path {path:?} must be a path without `..`"),
            ));
            ok = false;
        } else if content.len() > config::MAX_VALUE {
            d.push(ConfigError::invalid(
                attr.key_loc(path),
                format!(
                    "config file {path} is {} bytes, over the {}-byte limit",
                    content.len(),
                    config::MAX_VALUE
                ),
            ));
            ok = false;
        }
    }
    ok.then_some(map)
}

// ---------------------------------------------------------------------------------------------
// runner, url, plugin, pipeline

fn decode_open(d: &mut Decoder, body: &Body, ctx: &Context) -> Value {
    let mut out = serde_json::Map::new();
    for attr in &body.attrs {
        if let Some(v) = d.eval(attr, ctx) {
            out.insert(attr.name.clone(), v);
        }
    }
    Value::Object(out)
}

fn decode_runner(d: &mut Decoder, block: &Block, ctx: &Context) -> RunnerConfig {
    let body = &block.body;
    let data_source = d
        .at_most_one(body, "data_source", "in `runner`")
        .map(|b| (b.labels[0].clone(), decode_open(d, &b.body, ctx)));
    let poll = d
        .at_most_one(body, "poll", "in `runner`")
        .map(|b| decode_open(d, &b.body, ctx));
    RunnerConfig {
        enabled: body.attr("enabled").and_then(|a| d.eval_bool(a, ctx)),
        profile: body
            .attr("profile")
            .and_then(|a| d.eval_string(a, ctx, "\"docker-local\"")),
        labels: body
            .attr("labels")
            .and_then(|a| d.eval_string_map(a, ctx))
            .unwrap_or_default(),
        data_source,
        poll,
        location: block.loc.clone(),
    }
}

fn decode_url(d: &mut Decoder, block: &Block, ctx: &Context) -> UrlConfig {
    UrlConfig {
        auto_hostname: block
            .body
            .attr("auto_hostname")
            .and_then(|a| d.eval_bool(a, ctx)),
    }
}

fn decode_pipeline(d: &mut Decoder, block: &Block, ctx: &Context) -> Pipeline {
    let mut steps = Vec::new();
    for step in block.body.blocks("step") {
        let name = step.labels[0].clone();
        let image_url = step
            .body
            .attr("image_url")
            .and_then(|a| d.eval_string(a, ctx, "\"busybox\""));
        let workspace = step
            .body
            .attr("workspace")
            .and_then(|a| d.eval_string(a, ctx, "\"staging\""));
        let uses: Vec<&Block> = step.body.blocks("use").collect();
        let nested: Vec<&Block> = step.body.blocks("pipeline").collect();
        let action = match (uses.as_slice(), nested.as_slice()) {
            ([u], []) => Some(StepAction::Use(decode_use_block(d, u, ctx))),
            ([], [p]) => Some(StepAction::Pipeline(Box::new(decode_pipeline(d, p, ctx)))),
            _ => {
                d.push(ConfigError::invalid(
                    &step.loc,
                    format!(
                        "step \"{name}\" needs exactly one `use` block or one nested `pipeline`"
                    ),
                ));
                None
            }
        };
        if let Some(action) = action {
            steps.push(Step {
                name,
                image_url,
                workspace,
                action,
                location: step.loc.clone(),
            });
        }
    }
    Pipeline {
        name: block.labels[0].clone(),
        steps,
        location: block.loc.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Apps and stages

fn decode_app(
    d: &mut Decoder,
    block: &Block,
    top: &ConfigOut,
    top_labels: &BTreeMap<String, String>,
    base: &Context<'static>,
) -> Option<AppConfig> {
    let label = block.labels[0].clone();
    let name = cairn_name(&label);
    if name != label {
        d.note(
            &block.loc,
            format!("app {label:?} is {name:?} in Cairn (its names hold no '/'; name the app {name:?} to say so)"),
        );
    }
    if !valid_app_name(&name) {
        d.blocker(
            &block.loc,
            format!(
                "invalid app name {name:?}: use letters, digits, '-' and '_', starting with a letter or digit, at most {MAX_APP_NAME} of them"
            ),
        );
    }
    let ctx_name = format!("in app \"{name}\"");
    let body = &block.body;

    let path = match body.attr("path") {
        Some(attr) => match d.eval_string(attr, base, "\"./web\"") {
            Some(p) if p.is_empty() => {
                d.push(ConfigError::invalid(
                    &attr.loc,
                    "`path` must not be empty (use \".\")",
                ));
                PathBuf::from(".")
            }
            Some(p) => PathBuf::from(p),
            None => PathBuf::from("."),
        },
        None => PathBuf::from("."),
    };
    let dir = d.dir.to_path_buf();
    let mut ctx = eval::app_context(base, &dir, &dir.join(&path));
    let mut app_var = hcl::Map::new();
    // `app.name` is the name as the file writes it (Waypoint's meaning: it often names an
    // image, where '/' is at home).
    app_var.insert("name".into(), hcl::Value::String(label.clone()));
    ctx.declare_var("app", hcl::Value::Object(app_var));

    // The project's labels, overridden key by key by the app's own.
    let mut labels = top_labels.clone();
    if let Some(attr) = body.attr("labels") {
        labels.extend(d.eval_string_map(attr, &ctx).unwrap_or_default());
    }
    let mut label_var = hcl::Map::new();
    for (k, v) in &labels {
        label_var.insert(k.clone(), hcl::Value::String(v.clone()));
    }
    ctx.declare_var("labels", hcl::Value::Object(label_var));

    let own = decode_config(d, body, &ctx, &labels, &ctx_name);
    // By precedence, as the cluster resolves them: project, workspace, app, workspace-app.
    let mut config_env = top.env.clone();
    config_env.extend(top.scoped_env.clone());
    config_env.extend(own.env.clone());
    config_env.extend(own.scoped_env.clone());
    // By the same precedence as env.
    let mut files = top.files.clone();
    files.extend(top.scoped_files.clone());
    files.extend(own.files.clone());
    files.extend(own.scoped_files.clone());

    let build = match d.at_most_one(body, "build", &ctx_name) {
        Some(b) => {
            let registry = d
                .at_most_one(
                    &b.body,
                    "registry",
                    &format!("in the build stage of app \"{name}\""),
                )
                .and_then(|r| {
                    decode_stage(
                        d,
                        r,
                        &ctx,
                        &labels,
                        &format!("registry stage of app \"{name}\""),
                    )
                });
            let builder = pick_use(
                d,
                b,
                &ctx,
                &labels,
                &format!("build stage of app \"{name}\""),
            );
            let hooks = decode_hooks(d, &b.body, &ctx);
            let stage_labels = stage_labels(d, b, &ctx);
            builder.map(|builder| BuildStage {
                builder,
                registry,
                hooks,
                labels: stage_labels,
            })
        }
        None => {
            d.gap(&block.loc, format!("app \"{name}\" has no build stage"));
            None
        }
    };
    let deploy = match d.at_most_one(body, "deploy", &ctx_name) {
        Some(b) => decode_stage(
            d,
            b,
            &ctx,
            &labels,
            &format!("deploy stage of app \"{name}\""),
        ),
        None => {
            d.gap(&block.loc, format!("app \"{name}\" has no deploy stage"));
            None
        }
    };
    let release = d.at_most_one(body, "release", &ctx_name).and_then(|b| {
        decode_stage(
            d,
            b,
            &ctx,
            &labels,
            &format!("release stage of app \"{name}\""),
        )
    });
    let runner = d
        .at_most_one(body, "runner", &ctx_name)
        .map(|b| decode_runner(d, b, &ctx));
    let url = d
        .at_most_one(body, "url", &ctx_name)
        .map(|b| decode_url(d, b, &ctx));

    Some(AppConfig {
        name,
        path,
        build,
        deploy,
        release,
        config_env,
        app_env: own.env,
        workspace_app_env: own.scoped_env,
        secret_env: own.secret,
        files,
        app_files: own.files,
        workspace_app_files: own.scoped_files,
        runner_env: own.runner_env,
        labels,
        runner,
        url,
        location: block.loc.clone(),
    })
}

fn decode_stage(
    d: &mut Decoder,
    block: &Block,
    ctx: &Context,
    labels: &BTreeMap<String, String>,
    what: &str,
) -> Option<Stage> {
    let plugin = pick_use(d, block, ctx, labels, what);
    let hooks = decode_hooks(d, &block.body, ctx);
    let stage_labels = stage_labels(d, block, ctx);
    Some(Stage {
        plugin: plugin?,
        hooks,
        labels: stage_labels,
    })
}

/// A stage's own `labels = { … }` (Waypoint's operation labels).
fn stage_labels(d: &mut Decoder, block: &Block, ctx: &Context) -> BTreeMap<String, String> {
    block
        .body
        .attr("labels")
        .and_then(|a| d.eval_string_map(a, ctx))
        .unwrap_or_default()
}

/// The `use` of a stage for this load: the first `workspace`/`label` scope that matches, else
/// the stage's own `use`. Every `use` is evaluated (so every error shows), only one is kept.
fn pick_use(
    d: &mut Decoder,
    stage: &Block,
    ctx: &Context,
    labels: &BTreeMap<String, String>,
    what: &str,
) -> Option<PluginUse> {
    let own = one_use(d, stage, ctx, what);
    let mut chosen = None;
    for scoped in stage
        .body
        .blocks
        .iter()
        .filter(|b| b.ident == "workspace" || b.ident == "label")
    {
        let scope = format!("{what}, {} \"{}\"", scoped.ident, scoped.labels[0]);
        let u = one_use(d, scoped, ctx, &scope);
        if chosen.is_none() && d.scope_matches(scoped, labels) {
            chosen = u;
        }
    }
    let picked = chosen.or(own);
    if picked.is_none() && !stage.body.blocks.iter().any(|b| b.ident == "use") {
        d.gap(
            &stage.loc,
            format!("the {what} has no `use` block for workspace \"{}\": say which plugin, e.g. use \"docker\" {{}}", d.workspace),
        );
    }
    picked
}

/// The single `use` block directly in `block`, evaluated; `None` when there is none (the
/// caller decides whether that is a gap) or it has errors.
fn one_use(d: &mut Decoder, block: &Block, ctx: &Context, what: &str) -> Option<PluginUse> {
    let mut uses = block.body.blocks("use");
    let first = uses.next()?;
    for second in uses {
        d.push(ConfigError::invalid(
            &second.loc,
            format!(
                "the {what} has more than one `use` block (first at {}); a stage uses exactly one plugin",
                at(&first.loc)
            ),
        ));
    }
    if first.labels[0].trim().is_empty() {
        d.push(ConfigError::invalid(
            &first.loc,
            format!("the {what} has a `use` block with an empty plugin name"),
        ));
        return None;
    }
    Some(decode_use_block(d, first, ctx))
}

fn decode_use_block(d: &mut Decoder, use_block: &Block, ctx: &Context) -> PluginUse {
    let mut config = serde_json::Map::new();
    let mut field_locations = BTreeMap::new();
    let mut sensitive_fields = BTreeSet::new();
    let mut pending = BTreeSet::new();
    let mut deferred = BTreeSet::new();
    for attr in &use_block.body.attrs {
        field_locations.insert(attr.name.clone(), attr.loc.clone());
        let refs = vars::var_refs(&attr.expr);
        if refs.iter().any(|r| d.sensitive.contains(r)) {
            sensitive_fields.insert(attr.name.clone());
        }
        if refs.iter().any(|r| d.unresolved.contains(r)) {
            pending.insert(attr.name.clone());
            continue;
        }
        // `artifact.*` and `deploy.*` are known only while an operation runs.
        if OPERATION_VARS
            .iter()
            .any(|v| vars::mentions_root(&attr.expr, v) && !ctx_has(ctx, v))
        {
            deferred.insert(attr.name.clone());
            continue;
        }
        if let Some(v) = d.eval(attr, ctx) {
            config.insert(attr.name.clone(), v);
        }
    }
    PluginUse {
        name: use_block.labels[0].clone(),
        config: Value::Object(config),
        location: use_block.loc.clone(),
        field_locations,
        sensitive_fields,
        pending,
        deferred,
    }
}

/// The variables an operation defines for the stages after it: the artifact the build (or
/// push) made, the deployment.
const OPERATION_VARS: [&str; 2] = ["artifact", "deploy"];

fn ctx_has(ctx: &Context, var: &str) -> bool {
    let probe = hcl::Expression::Variable(hcl::expr::Variable::unchecked(var));
    hcl::eval::Evaluate::evaluate(&probe, ctx).is_ok()
}

fn decode_hooks(d: &mut Decoder, body: &Body, ctx: &Context) -> Vec<Hook> {
    body.blocks("hook")
        .filter_map(|b| decode_hook(d, b, ctx))
        .collect()
}

fn decode_hook(d: &mut Decoder, block: &Block, ctx: &Context) -> Option<Hook> {
    let body = &block.body;
    let when = match body.attr("when") {
        None => {
            d.push(ConfigError::invalid(
                &block.loc,
                "hook has no `when`: add when = \"before\" or when = \"after\"",
            ));
            None
        }
        Some(attr) => match d.eval(attr, ctx) {
            Some(Value::String(s)) if s == "before" => Some(HookWhen::Before),
            Some(Value::String(s)) if s == "after" => Some(HookWhen::After),
            Some(other) => {
                d.push(ConfigError::invalid(
                    &attr.loc,
                    format!("hook `when` must be \"before\" or \"after\", found {other}"),
                ));
                None
            }
            None => None,
        },
    };
    let command = match body.attr("command") {
        None => {
            d.push(ConfigError::invalid(
                &block.loc,
                "hook has no `command`: add command = [\"program\", \"arg\"]",
            ));
            None
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
            match d.eval(attr, ctx) {
                Some(Value::Array(items)) if !items.is_empty() => {
                    let mut out = Vec::new();
                    let mut bad_item = None;
                    for v in items {
                        match v {
                            Value::String(s) => out.push(s),
                            other => bad_item = Some(type_name(&other)),
                        }
                    }
                    match bad_item {
                        Some(t) => {
                            d.push(bad(format!("{t} in the list")));
                            None
                        }
                        None => Some(out),
                    }
                }
                Some(Value::Array(_)) => {
                    d.push(bad("an empty list".into()));
                    None
                }
                Some(other) => {
                    d.push(bad(type_name(&other).into()));
                    None
                }
                None => None,
            }
        }
    };
    let on_failure = match body.attr("on_failure") {
        None => Some(OnFailure::Fail),
        Some(attr) => match d.eval(attr, ctx) {
            Some(Value::String(s)) if s == "fail" => Some(OnFailure::Fail),
            Some(Value::String(s)) if s == "continue" => Some(OnFailure::Continue),
            Some(other) => {
                d.push(ConfigError::invalid(
                    &attr.loc,
                    format!("hook `on_failure` must be \"fail\" or \"continue\", found {other}"),
                ));
                None
            }
            None => None,
        },
    };
    Some(Hook {
        when: when?,
        command: command?,
        on_failure: on_failure?,
        location: block.loc.clone(),
    })
}
