//! Expression evaluation: the functions a config can call and the variables it can read.
//!
//! hcl-rs functions are plain `fn` pointers, so they cannot capture the config's directory.
//! [`enter`] puts it in a thread-local for the duration of one load (an RAII guard restores
//! the previous value, so nested or concurrent loads on other threads don't interfere); the
//! git functions run `git -C <config dir>`, never in the process's cwd. Results are cached per
//! load: every `timestamp()` in one file is the same instant, and git runs at most once per
//! function.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::{Map, Value};

use super::error::{one_line, ConfigError};
use super::syntax::Attr;

struct EvalEnv {
    dir: PathBuf,
    /// The environment `dynamic("env", …)` reads (`None`: the process's).
    env: Option<std::collections::BTreeMap<String, String>>,
    cache: HashMap<&'static str, Result<String, String>>,
    /// Set by `dynamic()` when its source cannot be reached: (source, why).
    unreachable: Option<(String, String)>,
    /// What the cluster holds for the project (`dynamic("cairn", …)` reads it), when read.
    server: Option<super::ServerValues>,
    workspace: String,
    /// The app being evaluated (`None`: the file's top level).
    app: Option<String>,
}

thread_local! {
    static ENV: RefCell<Option<EvalEnv>> = const { RefCell::new(None) };
}

/// Restores the previous evaluation environment when dropped.
pub(crate) struct EnvGuard {
    prev: Option<EvalEnv>,
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        ENV.with(|e| *e.borrow_mut() = prev);
    }
}

/// Makes `dir` the directory the functions of this thread work in, until the guard drops.
pub(crate) fn enter(dir: &Path, inputs: &super::Inputs) -> EnvGuard {
    let env = EvalEnv {
        dir: dir.to_path_buf(),
        env: inputs.env.clone(),
        cache: HashMap::new(),
        unreachable: None,
        server: inputs.server.clone(),
        workspace: inputs.workspace(),
        app: None,
    };
    let prev = ENV.with(|e| e.borrow_mut().replace(env));
    EnvGuard { prev }
}

/// Makes `app` the app whose config `dynamic("cairn", …)` reads (`None`: the project's).
pub(crate) fn set_app(app: Option<&str>) {
    ENV.with(|e| {
        if let Some(env) = e.borrow_mut().as_mut() {
            env.app = app.map(String::from);
        }
    });
}

/// `dynamic("cairn", { name = "VAR" })`: the app's config variable `VAR` as the cluster
/// resolves it (workspace-app, app, workspace, project), or why it cannot be read.
fn cluster_config(name: &str) -> Result<String, String> {
    ENV.with(|e| {
        let env = e.borrow();
        let Some(env) = env.as_ref() else {
            return Err("no config is being evaluated".into());
        };
        let Some(server) = &env.server else {
            return Err(
                "the cluster's config was not read here (no cluster is running for this context, or the command works offline): give the value with -var, or run where a cluster is reachable".into(),
            );
        };
        let app = env.app.as_deref().unwrap_or("");
        let all = cairn_protocol::config::resolve_env(
            &server.vars,
            &server.project,
            app,
            &env.workspace,
        );
        all.get(name).cloned().ok_or_else(|| {
            let whose = match &env.app {
                Some(a) => format!("app \"{a}\" of project \"{}\"", server.project),
                None => format!("project \"{}\"", server.project),
            };
            format!(
                "the cluster holds no config variable {name} for {whose} in workspace \"{}\": set it with `cairn config set {name}=VALUE`",
                env.workspace
            )
        })
    })
}

fn cached(
    key: &'static str,
    compute: impl FnOnce(&Path) -> Result<String, String>,
) -> Result<String, String> {
    let (dir, hit) = ENV.with(|e| match &*e.borrow() {
        Some(env) => (env.dir.clone(), env.cache.get(key).cloned()),
        None => (PathBuf::from("."), None),
    });
    if let Some(hit) = hit {
        return hit;
    }
    let result = compute(&dir);
    ENV.with(|e| {
        if let Some(env) = e.borrow_mut().as_mut() {
            env.cache.insert(key, result.clone());
        }
    });
    result
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "git is not installed (or not on PATH)".to_string(),
            _ => format!("cannot run git: {e}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .map(|l| l.trim().trim_start_matches("fatal: "))
            .find(|l| !l.is_empty())
            .unwrap_or("no output");
        return Err(format!(
            "`git {}` failed in {}: {reason}",
            args.join(" "),
            dir.display()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// `gitrefpretty()`: `git describe --tags --always --dirty` in the config's directory — the
/// tag (annotated or lightweight) when HEAD is tagged, `TAG-N-gHASH` after one, else the
/// abbreviated commit hash; `-dirty` appended when tracked files have uncommitted changes.
/// Outside a repository (or with no commit yet) it is an error, not a made-up value.
fn gitrefpretty(_: FuncArgs) -> Result<Value, String> {
    cached("gitrefpretty", |dir| {
        git(dir, &["describe", "--tags", "--always", "--dirty"])
    })
    .map(Value::String)
}

/// `gitrefhash()`: the full hash of HEAD in the config's directory.
fn gitrefhash(_: FuncArgs) -> Result<Value, String> {
    cached("gitrefhash", |dir| git(dir, &["rev-parse", "HEAD"])).map(Value::String)
}

/// The current time as RFC 3339 in UTC with whole seconds, e.g. `2024-05-01T12:00:00Z`.
pub(crate) fn now_rfc3339() -> Result<String, String> {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())
}

/// `timestamp()`: the time the config was loaded (the same for every call in one load).
fn timestamp(_: FuncArgs) -> Result<Value, String> {
    cached("timestamp", |_| now_rfc3339()).map(Value::String)
}

/// The config's directory (where relative paths of `file()` start).
pub(crate) fn config_dir() -> PathBuf {
    ENV.with(|e| match &*e.borrow() {
        Some(env) => env.dir.clone(),
        None => PathBuf::from("."),
    })
}

/// The bytes of `path` (relative to the config's directory), or an error naming it.
pub(crate) fn read_file(path: &str) -> Result<Vec<u8>, String> {
    let p = config_dir().join(path);
    std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// The first argument, a string (the function's declared parameter type).
fn arg_str(args: &FuncArgs) -> &str {
    args[0].as_str().unwrap_or_default()
}

/// `file(PATH)`: the file's contents as a UTF-8 string.
fn file(args: FuncArgs) -> Result<Value, String> {
    let path = arg_str(&args);
    String::from_utf8(read_file(path)?)
        .map(Value::String)
        .map_err(|_| format!("{path} is not UTF-8 text: use filebase64({path:?})"))
}

/// `filebase64(PATH)`: the file's bytes, base64-encoded.
fn filebase64(args: FuncArgs) -> Result<Value, String> {
    use base64::Engine as _;
    let bytes = read_file(arg_str(&args))?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

fn base64encode(args: FuncArgs) -> Result<Value, String> {
    use base64::Engine as _;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(arg_str(&args)),
    ))
}

fn base64decode(args: FuncArgs) -> Result<Value, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(arg_str(&args).trim())
        .map_err(|e| format!("not base64: {e}"))?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| "the decoded bytes are not UTF-8 text".to_string())
}

/// `jsonencode(VALUE)`: compact JSON.
fn jsonencode(args: FuncArgs) -> Result<Value, String> {
    serde_json::to_string(&args[0])
        .map(Value::String)
        .map_err(|e| e.to_string())
}

/// `jsondecode(STRING)`: the value the JSON text holds.
fn jsondecode(args: FuncArgs) -> Result<Value, String> {
    serde_json::from_str::<Value>(arg_str(&args)).map_err(|e| format!("not JSON: {e}"))
}

fn upper(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(arg_str(&args).to_uppercase()))
}

fn lower(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(arg_str(&args).to_lowercase()))
}

fn trimspace(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(arg_str(&args).trim().to_string()))
}

/// An environment variable as this load sees it.
fn env_var(name: &str) -> Option<String> {
    ENV.with(|e| match &*e.borrow() {
        Some(EvalEnv { env: Some(env), .. }) => env.get(name).cloned(),
        _ => std::env::var(name).ok(),
    })
    .filter(|v| !v.is_empty())
}

/// Records that `source` cannot be reached, and returns the error for hcl-rs.
fn unreachable(source: &str, why: String) -> Result<Value, String> {
    ENV.with(|e| {
        if let Some(env) = e.borrow_mut().as_mut() {
            env.unreachable = Some((source.to_string(), why.clone()));
        }
    });
    Err(why)
}

/// The sources `dynamic()` reads by itself.
pub const DYNAMIC_SOURCES: &[&str] = &["env", "file", "cairn"];

/// `dynamic(SOURCE, { … })` and `configdynamic(SOURCE, { … })`: a value read from a config
/// source when the config is evaluated. Cairn reads `env` (`{ name = "VAR" }`: the
/// environment of the CLI or runner evaluating the file) and `file` (`{ path = "…" }`,
/// relative to the config's directory) and `cairn` (`{ name = "VAR" }`: the app's config
/// variable as the cluster resolves it, `cairn config set`). Waypoint's other sources (vault, terraform-cloud,
/// aws-ssm, consul, kubernetes, packer…) are named in an error that says what they would need,
/// so the rest of the file is still evaluated.
fn dynamic(args: FuncArgs) -> Result<Value, String> {
    let source = arg_str(&args).to_string();
    let cfg =
        match &args[1] {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            _ => return Err(
                "the second argument is the source's settings: an object, e.g. { name = \"X\" }"
                    .into(),
            ),
        };
    let field = |k: &str| cfg.get(k).and_then(|v| v.as_str()).map(String::from);
    match source.as_str() {
        "env" => {
            let Some(name) = field("name") else {
                return Err("dynamic(\"env\", { name = \"VAR\" }) needs `name`".into());
            };
            match env_var(&name) {
                Some(v) => Ok(Value::String(v)),
                None => unreachable(&source, format!("the environment variable {name} is not set")),
            }
        }
        "file" => {
            let Some(path) = field("path") else {
                return Err("dynamic(\"file\", { path = \"…\" }) needs `path`".into());
            };
            match read_file(&path) {
                Ok(bytes) => String::from_utf8(bytes)
                    .map(Value::String)
                    .map_err(|_| format!("{path} is not UTF-8 text")),
                Err(e) => unreachable(&source, e),
            }
        }
        "cairn" => {
            let Some(name) = field("name") else {
                return Err("dynamic(\"cairn\", { name = \"VAR\" }) needs `name`".into());
            };
            match cluster_config(&name) {
                Ok(v) => Ok(Value::String(v)),
                Err(why) => unreachable(&source, why),
            }
        }
        "vault" => match env_var("VAULT_ADDR") {
            None => unreachable(
                &source,
                "no vault address: VAULT_ADDR is not set (and Cairn does not read vault itself; give the value with -var, or `cairn config set` for app config)".into(),
            ),
            Some(addr) => unreachable(
                &source,
                format!("VAULT_ADDR is {addr}, but Cairn has no vault reader: give the value with -var, or `cairn config set` for app config"),
            ),
        },
        "terraform-cloud" => unreachable(
            &source,
            "Cairn does not read Terraform Cloud outputs (they need a TFE token and app.terraform.io): give the value with -var or a *.auto.cairnvars file".into(),
        ),
        other => unreachable(
            other,
            format!(
                "Cairn reads the config sources {} only: give the value with -var or a *.auto.cairnvars file",
                DYNAMIC_SOURCES.join(", ")
            ),
        ),
    }
}

/// The names of the functions a config may call.
pub const FUNCTIONS: &[&str] = &[
    "gitrefpretty",
    "gitrefhash",
    "timestamp",
    "file",
    "filebase64",
    "base64encode",
    "base64decode",
    "jsonencode",
    "jsondecode",
    "upper",
    "lower",
    "trimspace",
    "dynamic",
    "configdynamic",
];

/// The base context: functions, and `path.project` / `path.pwd`.
pub(crate) fn base_context(project_dir: &Path) -> Context<'static> {
    let mut ctx = Context::new();
    ctx.declare_func("gitrefpretty", FuncDef::builder().build(gitrefpretty));
    ctx.declare_func("gitrefhash", FuncDef::builder().build(gitrefhash));
    ctx.declare_func("timestamp", FuncDef::builder().build(timestamp));
    let string_fns: [(&str, hcl::eval::Func); 8] = [
        ("file", file),
        ("filebase64", filebase64),
        ("base64encode", base64encode),
        ("base64decode", base64decode),
        ("jsondecode", jsondecode),
        ("upper", upper),
        ("lower", lower),
        ("trimspace", trimspace),
    ];
    for (name, f) in string_fns {
        ctx.declare_func(name, FuncDef::builder().param(ParamType::String).build(f));
    }
    ctx.declare_func(
        "jsonencode",
        FuncDef::builder().param(ParamType::Any).build(jsonencode),
    );
    for name in ["dynamic", "configdynamic"] {
        ctx.declare_func(
            name,
            FuncDef::builder()
                .param(ParamType::String)
                .param(ParamType::Any)
                .build(dynamic),
        );
    }
    super::funcs::declare(&mut ctx);
    ctx.declare_var("path", path_var(project_dir, None));
    ctx
}

/// Every function a config may call, sorted.
pub fn all_functions() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = FUNCTIONS
        .iter()
        .chain(super::funcs::NAMES)
        .copied()
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The context for one app: the base plus `path.app`.
pub(crate) fn app_context(
    base: &Context<'static>,
    project_dir: &Path,
    app_dir: &Path,
) -> Context<'static> {
    let mut ctx = base.clone();
    ctx.declare_var("path", path_var(project_dir, Some(app_dir)));
    ctx
}

fn path_var(project_dir: &Path, app_dir: Option<&Path>) -> Value {
    let s = |p: &Path| Value::String(p.display().to_string());
    let mut m = Map::new();
    m.insert("project".to_string(), s(project_dir));
    if let Ok(pwd) = std::env::current_dir() {
        m.insert("pwd".to_string(), s(&pwd));
    }
    if let Some(app) = app_dir {
        m.insert("app".to_string(), s(app));
    }
    Value::Object(m)
}

/// Evaluates an attribute to plain JSON; errors point at the attribute.
pub(crate) fn eval_attr(attr: &Attr, ctx: &Context) -> Result<serde_json::Value, ConfigError> {
    let err = |message: String| ConfigError::Eval {
        location: attr.loc.clone(),
        attribute: attr.name.clone(),
        message: one_line(&message),
    };
    ENV.with(|e| {
        if let Some(env) = e.borrow_mut().as_mut() {
            env.unreachable = None;
        }
    });
    let value = attr.expr.evaluate(ctx).map_err(|e| {
        let unreachable = ENV.with(|e| e.borrow_mut().as_mut().and_then(|env| env.unreachable.take()));
        if let Some((source_name, message)) = unreachable {
            return ConfigError::Unreachable {
                location: attr.loc.clone(),
                attribute: attr.name.clone(),
                source_name,
                message,
            };
        }
        let mut message = e.to_string();
        match e.kind() {
            hcl::eval::ErrorKind::UndefinedFunc(_) => {
                message.push_str(&format!(" (available: {})", all_functions().join(", ")));
            }
            hcl::eval::ErrorKind::NoSuchKey(k)
                if super::vars::var_refs(&attr.expr).iter().any(|v| v == k) =>
            {
                message = format!(
                    "undeclared input variable `{k}`: declare it with variable \"{k}\" {{ type = string }}"
                );
            }
            hcl::eval::ErrorKind::NoSuchKey(k) => {
                const KNOWN: [(&str, &str); 5] = [
                    ("workspace", "name"),
                    ("path", "project, app, pwd"),
                    ("app", "name"),
                    ("config", "internal"),
                    ("artifact", "the fields of the value the build made"),
                ];
                let roots = super::vars::roots_of_attr(&attr.expr, k);
                if let Some((root, has)) = KNOWN.iter().find(|(r, _)| roots.iter().any(|x| x == r)) {
                    message = format!("`{root}.{k}` does not exist: `{root}` has {has}");
                }
            }
            hcl::eval::ErrorKind::UndefinedVar(v)
                if ["artifact", "deploy", "entrypoint"].contains(&v.as_str()) =>
            {
                message.push_str(&format!(
                    " (`{v}.*` is known only while an operation runs: Cairn fills in `artifact.*` for the fields of a deploy stage's `use` block, nowhere else yet)"
                ));
            }
            _ => {}
        }
        err(message)
    })?;
    serde_json::to_value(&value).map_err(|e| err(e.to_string()))
}
