//! Input variables: `variable "NAME" { type, default, description, sensitive, env }`.
//!
//! A variable's value comes from, lowest precedence first:
//! 1. its `default` (evaluated with the functions and `workspace.name`);
//! 2. the first set environment variable its `env = [...]` names;
//! 3. `*.auto.cairnvars`, `*.auto.wpvars` (HCL) and their `.json` forms in the config's
//!    directory, in name order;
//! 4. `CAIRN_VAR_NAME` (or Waypoint's `WP_VAR_NAME`) in the environment;
//! 5. `-var-file FILE` (HCL, or JSON when it ends in `.json`), in the order given;
//! 6. `-var NAME=VALUE`, in the order given.
//!
//! A value given as text (`-var`, the environment) is a string for `string` and `any`
//! variables and an HCL expression otherwise (`-var 'ports=[80, 443]'`), as in Terraform.
//! Every value is converted to the declared type; a mismatch names the variable, the type
//! and where the value came from. A sensitive variable's value is never shown: not in
//! `cairn validate`, not in an error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hcl::expr::{Expression, ObjectKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type constraint of a variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ty {
    Any,
    String,
    Number,
    Bool,
    List(Box<Ty>),
    Set(Box<Ty>),
    Map(Box<Ty>),
    Object(BTreeMap<String, Ty>),
    Tuple(Vec<Ty>),
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Any => write!(f, "any"),
            Ty::String => write!(f, "string"),
            Ty::Number => write!(f, "number"),
            Ty::Bool => write!(f, "bool"),
            Ty::List(t) => write!(f, "list({t})"),
            Ty::Set(t) => write!(f, "set({t})"),
            Ty::Map(t) => write!(f, "map({t})"),
            Ty::Object(attrs) => {
                let parts: Vec<String> = attrs.iter().map(|(k, t)| format!("{k} = {t}")).collect();
                write!(f, "object({{ {} }})", parts.join(", "))
            }
            Ty::Tuple(items) => {
                let parts: Vec<String> = items.iter().map(|t| t.to_string()).collect();
                write!(f, "tuple([{}])", parts.join(", "))
            }
        }
    }
}

const TYPE_HELP: &str =
    "use string, number, bool, any, list(T), set(T), map(T), object({ NAME = T }) or tuple([T, …])";

impl Ty {
    /// The type a `type = …` expression writes (not evaluated: `string` is a keyword here).
    pub fn parse(expr: &Expression) -> Result<Ty, String> {
        match expr {
            Expression::Variable(v) => match v.as_str() {
                "any" => Ok(Ty::Any),
                "string" => Ok(Ty::String),
                "number" => Ok(Ty::Number),
                "bool" => Ok(Ty::Bool),
                "list" | "set" | "map" => Err(format!(
                    "`{}` needs an element type, e.g. {}(string)",
                    v.as_str(),
                    v.as_str()
                )),
                other => Err(format!("unknown type `{other}`: {TYPE_HELP}")),
            },
            Expression::Parenthesis(e) => Ty::parse(e),
            Expression::FuncCall(call) => {
                let name = call.name.name.as_str();
                let one = || -> Result<Ty, String> {
                    match call.args.as_slice() {
                        [t] => Ty::parse(t),
                        _ => Err(format!(
                            "`{name}(…)` takes one element type, e.g. {name}(string)"
                        )),
                    }
                };
                match name {
                    "list" => Ok(Ty::List(Box::new(one()?))),
                    "set" => Ok(Ty::Set(Box::new(one()?))),
                    "map" => Ok(Ty::Map(Box::new(one()?))),
                    "object" => match call.args.as_slice() {
                        [Expression::Object(obj)] => {
                            let mut attrs = BTreeMap::new();
                            for (k, t) in obj.iter() {
                                let key = match k {
                                    ObjectKey::Identifier(i) => i.to_string(),
                                    ObjectKey::Expression(Expression::String(s)) => s.clone(),
                                    ObjectKey::Expression(Expression::Variable(v)) => {
                                        v.to_string()
                                    }
                                    _ => return Err("object attribute names must be plain names".into()),
                                };
                                attrs.insert(key, Ty::parse(t)?);
                            }
                            Ok(Ty::Object(attrs))
                        }
                        _ => Err("`object(…)` takes one object of attribute types, e.g. object({ name = string })".into()),
                    },
                    "tuple" => match call.args.as_slice() {
                        [Expression::Array(items)] => Ok(Ty::Tuple(
                            items.iter().map(Ty::parse).collect::<Result<_, _>>()?,
                        )),
                        _ => Err("`tuple(…)` takes one list of types, e.g. tuple([string, number])".into()),
                    },
                    other => Err(format!("unknown type `{other}(…)`: {TYPE_HELP}")),
                }
            }
            // `type = "string"` (a quoted keyword), as some HCL 1 configs wrote it.
            Expression::String(s) => Ty::parse(&Expression::Variable(
                hcl::Identifier::new(s.as_str())
                    .map_err(|_| format!("unknown type {s:?}: {TYPE_HELP}"))?
                    .into(),
            )),
            _ => Err(format!("not a type: {TYPE_HELP}")),
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `v` converted to `ty` the way HCL converts (numbers and bools to strings and back, a
/// list to a set…), or why not. `at` is the path inside the value (e.g. `[2].name`).
pub fn convert(v: Value, ty: &Ty) -> Result<Value, String> {
    convert_at(v, ty, "")
}

fn convert_at(v: Value, ty: &Ty, at: &str) -> Result<Value, String> {
    let within = |what: String| {
        if at.is_empty() {
            what
        } else {
            format!("{what} at {at}")
        }
    };
    let wrong = |v: &Value, want: &str| within(format!("{want} is required, found {}", kind_of(v)));
    match (ty, v) {
        (Ty::Any, v) => Ok(v),
        (_, Value::Null) => Ok(Value::Null),
        (Ty::String, Value::String(s)) => Ok(Value::String(s)),
        (Ty::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (Ty::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (Ty::Number, Value::Number(n)) => Ok(Value::Number(n)),
        (Ty::Number, Value::String(s)) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Value::from(i));
            }
            match t.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                Some(n) => Ok(Value::Number(n)),
                None => Err(within(format!(
                    "a number is required, found the string {s:?}"
                ))),
            }
        }
        (Ty::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
        (Ty::Bool, Value::String(s)) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
        (Ty::Bool, Value::String(s)) => Err(within(format!(
            "a bool is required, found the string {s:?}"
        ))),
        (Ty::List(t) | Ty::Set(t), Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let item = convert_at(item, t, &format!("{at}[{i}]"))?;
                if matches!(ty, Ty::Set(_)) && out.contains(&item) {
                    continue;
                }
                out.push(item);
            }
            Ok(Value::Array(out))
        }
        (Ty::Tuple(ts), Value::Array(items)) => {
            if ts.len() != items.len() {
                return Err(within(format!(
                    "a tuple of {} elements is required, found {}",
                    ts.len(),
                    items.len()
                )));
            }
            items
                .into_iter()
                .zip(ts)
                .enumerate()
                .map(|(i, (item, t))| convert_at(item, t, &format!("{at}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        (Ty::Map(t), Value::Object(m)) => {
            let mut out = serde_json::Map::new();
            for (k, item) in m {
                let item = convert_at(item, t, &format!("{at}[{k:?}]"))?;
                out.insert(k, item);
            }
            Ok(Value::Object(out))
        }
        (Ty::Object(attrs), Value::Object(mut m)) => {
            let mut out = serde_json::Map::new();
            for (k, t) in attrs {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match m.remove(k) {
                    Some(item) => {
                        out.insert(k.clone(), convert_at(item, t, &path)?);
                    }
                    None => {
                        return Err(format!("attribute `{path}` is required (type {ty})"));
                    }
                }
            }
            if let Some(extra) = m.keys().next() {
                let path = if at.is_empty() {
                    extra.clone()
                } else {
                    format!("{at}.{extra}")
                };
                return Err(format!("attribute `{path}` is not in the type {ty}"));
            }
            Ok(Value::Object(out))
        }
        (Ty::String, v) => Err(wrong(&v, "a string")),
        (Ty::Number, v) => Err(wrong(&v, "a number")),
        (Ty::Bool, v) => Err(wrong(&v, "a bool")),
        (Ty::List(_), v) => Err(wrong(&v, "a list")),
        (Ty::Set(_), v) => Err(wrong(&v, "a set")),
        (Ty::Tuple(_), v) => Err(wrong(&v, "a tuple")),
        (Ty::Map(_), v) => Err(wrong(&v, "a map")),
        (Ty::Object(_), v) => Err(wrong(&v, "an object")),
    }
}

/// What the command line (and the environment) give the config loader.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `-workspace` (default: `CAIRN_WORKSPACE`, `WP_WORKSPACE`, then "default").
    pub workspace: Option<String>,
    /// `-var NAME=VALUE`, in the order given.
    pub vars: Vec<String>,
    /// `-var-file FILE`, in the order given.
    pub var_files: Vec<PathBuf>,
    /// The environment to read `CAIRN_VAR_*`, `WP_VAR_*` and variables' `env` from; `None`
    /// reads the process's.
    pub env: Option<BTreeMap<String, String>>,
    /// `artifact`: the data of the value the build (or push) made, when a runner evaluates
    /// the deploy stage again after it. Fields reading `artifact.*` are deferred without it.
    pub artifact: Option<Value>,
    /// `deploy`: the data of the deployment a release is for, when a runner evaluates the
    /// release stage again for it. Fields reading `deploy.*` are deferred without it.
    pub deploy: Option<Value>,
    /// What the cluster holds for the project, when the caller read it: input variable
    /// values stored with `cairn var set`, and the app config `dynamic("cairn", …)` reads.
    /// `None`: not read (an offline `cairn validate`).
    pub server: Option<ServerValues>,
}

/// What the cluster holds for one project, read before the config is evaluated.
#[derive(Debug, Clone, Default)]
pub struct ServerValues {
    /// The project they were read for.
    pub project: String,
    /// Its config variables, every scope (input variable values are the reserved
    /// `cairn.var.NAME` ones).
    pub vars: Vec<cairn_protocol::types::ConfigVar>,
}

impl ServerValues {
    /// The stored input variable values for `workspace`: name → (value, origin).
    pub fn inputs(&self, workspace: &str) -> BTreeMap<String, (String, Origin)> {
        cairn_protocol::config::resolve_inputs(&self.vars, &self.project, workspace)
            .into_iter()
            .map(|(name, (value, scope))| {
                let origin = match scope {
                    cairn_protocol::types::ConfigScope::Workspace { workspace, .. } => {
                        Origin::Server(format!("workspace {workspace}"))
                    }
                    _ => Origin::Server("project".into()),
                };
                (name, (value.to_string(), origin))
            })
            .collect()
    }
}

impl Inputs {
    pub(crate) fn env_var(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(env) => env.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
        .filter(|v| !v.is_empty())
    }

    /// The workspace: `-workspace`, `CAIRN_WORKSPACE`, `WP_WORKSPACE`, else "default".
    pub fn workspace(&self) -> String {
        self.workspace
            .clone()
            .or_else(|| self.env_var("CAIRN_WORKSPACE"))
            .or_else(|| self.env_var("WP_WORKSPACE"))
            .unwrap_or_else(|| cairn_protocol::types::DEFAULT_WORKSPACE.to_string())
    }

    /// Whether anything here would give a variable a value the config's directory does not
    /// hold (a remote runner could not see it).
    pub fn gives_values(&self) -> bool {
        !self.vars.is_empty() || !self.var_files.is_empty()
    }
}

/// Where a variable's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "from")]
pub enum Origin {
    Default,
    /// The variable's own `env = [...]`: the environment variable that was set.
    VariableEnv(String),
    AutoFile(PathBuf),
    /// `CAIRN_VAR_NAME` / `WP_VAR_NAME`.
    Env(String),
    VarFile(PathBuf),
    Flag,
    /// Stored on the cluster (`cairn var set`): for the project, or for one workspace.
    Server(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::VariableEnv(name) => write!(f, "env {name}"),
            Origin::AutoFile(p) => write!(f, "file {}", p.display()),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::VarFile(p) => write!(f, "-var-file {}", p.display()),
            Origin::Flag => write!(f, "-var"),
            Origin::Server(scope) => write!(f, "cluster ({scope})"),
        }
    }
}

/// A value given for a variable before it is converted to the variable's type.
#[derive(Debug, Clone)]
pub(crate) enum Given {
    /// Text (`-var`, the environment): a string for `string`/`any`, else an HCL expression.
    Text(String),
    /// A value from a vars file.
    Value(Value),
}

impl Given {
    /// The value for a variable of type `ty`.
    pub fn into_value(self, ty: &Ty) -> Result<Value, String> {
        match self {
            Given::Value(v) => convert(v, ty),
            Given::Text(s) if matches!(ty, Ty::String | Ty::Any) => Ok(Value::String(s)),
            Given::Text(s) if matches!(ty, Ty::Number | Ty::Bool) => convert(Value::String(s), ty),
            Given::Text(s) => {
                let value = parse_literal(&s).map_err(|e| {
                    format!("the text is not an HCL value of type {ty} ({e}); quote lists and objects for the shell, e.g. -var 'NAME=[\"a\", \"b\"]'")
                })?;
                convert(value, ty)
            }
        }
    }
}

/// An HCL expression without references, e.g. `[80, 443]` or `{ a = 1 }`.
pub(crate) fn parse_literal(text: &str) -> Result<Value, String> {
    use hcl::eval::Evaluate;
    let expr =
        hcl::edit::parser::parse_expr(text).map_err(|e| super::error::one_line(e.message()))?;
    let expr = Expression::from(expr);
    let value = expr
        .evaluate(&hcl::eval::Context::new())
        .map_err(|e| super::error::one_line(&e.to_string()))?;
    serde_json::to_value(&value).map_err(|e| e.to_string())
}

/// One entry of a vars file: its name, value and where it is written.
pub(crate) struct FileEntry {
    pub name: String,
    pub value: Result<Value, String>,
    pub location: super::Location,
}

/// The entries of a vars file: HCL attributes (`name = value`, literals only) or a JSON
/// object. An unreadable or malformed file is one error naming it.
pub(crate) fn read_vars_file(path: &Path) -> Result<Vec<FileEntry>, super::ConfigError> {
    use super::{ConfigError, Location};
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::invalid(
            &Location::start_of(path),
            format!("cannot read the vars file: {e}"),
        )
    })?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let lines = super::syntax::Lines::new(path, &src);
    if is_json {
        let value: Value = serde_json::from_str(&src).map_err(|e| {
            ConfigError::syntax(Location::new(path, e.line(), e.column()), e.to_string())
        })?;
        let Value::Object(map) = value else {
            return Err(ConfigError::invalid(
                &Location::start_of(path),
                "a JSON vars file holds one object: { \"NAME\": VALUE, … }",
            ));
        };
        let at = |key: &str| {
            src.find(&format!("\"{key}\""))
                .map_or_else(|| Location::start_of(path), |o| lines.loc(o))
        };
        return Ok(map
            .into_iter()
            .map(|(name, value)| FileEntry {
                location: at(&name),
                name,
                value: Ok(value),
            })
            .collect());
    }
    let body = hcl::edit::parser::parse_body(&src).map_err(|e| {
        let l = e.location();
        ConfigError::syntax(Location::new(path, l.line(), l.column()), e.message())
    })?;
    let mut out = Vec::new();
    for structure in body.iter() {
        use hcl::edit::Span;
        let loc = lines.loc(structure.span().map_or(0, |s| s.start));
        match structure {
            hcl::edit::structure::Structure::Attribute(attr) => {
                use hcl::eval::Evaluate;
                let expr = Expression::from(attr.value.clone());
                let value = expr
                    .evaluate(&hcl::eval::Context::new())
                    .map_err(|e| super::error::one_line(&e.to_string()))
                    .and_then(|v| serde_json::to_value(&v).map_err(|e| e.to_string()));
                out.push(FileEntry {
                    name: attr.key.as_str().to_string(),
                    value,
                    location: loc,
                });
            }
            hcl::edit::structure::Structure::Block(b) => {
                return Err(ConfigError::invalid(
                    &loc,
                    format!(
                        "a vars file holds only NAME = VALUE lines; `{}` is a block",
                        b.ident.as_str()
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// The vars files the config's directory gives by itself, in the order they apply.
pub(crate) fn auto_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            [
                ".auto.cairnvars",
                ".auto.cairnvars.json",
                ".auto.wpvars",
                ".auto.wpvars.json",
            ]
            .iter()
            .any(|s| name.ends_with(s))
                && p.is_file()
        })
        .collect();
    files.sort();
    files
}

/// A variable as the config declares it and the value it got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Variable {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub description: Option<String>,
    pub sensitive: bool,
    /// `None` when it has no value (the error says how to give one) or its source could not
    /// be reached.
    #[serde(serialize_with = "masked")]
    pub value: Option<VarValue>,
    pub location: super::Location,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VarValue {
    pub value: Value,
    pub origin: Origin,
    pub sensitive: bool,
}

impl VarValue {
    /// The value as `cairn validate` shows it: JSON, or `(sensitive)`.
    pub fn shown(&self) -> String {
        if self.sensitive {
            "(sensitive)".to_string()
        } else {
            self.value.to_string()
        }
    }
}

fn masked<S: serde::Serializer>(v: &Option<VarValue>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    match v {
        None => s.serialize_none(),
        Some(v) => {
            let mut st = s.serialize_struct("VarValue", 2)?;
            if v.sensitive {
                st.serialize_field("value", "(sensitive)")?;
            } else {
                st.serialize_field("value", &v.value)?;
            }
            st.serialize_field("origin", &v.origin)?;
            st.end()
        }
    }
}

/// Calls `f(root, first)` for every variable `expr` reads: `root` is the variable's name and
/// `first` the attribute right after it (`var.port` → ("var", Some("port"))), templates in
/// strings included. Names a `for` expression binds are reported too (callers ask about
/// `var`, `artifact`, `deploy`, `config`, which a config does not rebind).
fn walk_refs(expr: &Expression, f: &mut dyn FnMut(&str, Option<&str>)) {
    use hcl::expr::{Operation, TraversalOperator};
    match expr {
        Expression::Variable(v) => f(v.as_str(), None),
        Expression::Traversal(t) => {
            match &t.expr {
                Expression::Variable(v) => {
                    let first = match t.operators.first() {
                        Some(TraversalOperator::GetAttr(id)) => Some(id.as_str()),
                        Some(TraversalOperator::Index(Expression::String(s))) => Some(s.as_str()),
                        _ => None,
                    };
                    f(v.as_str(), first);
                }
                other => walk_refs(other, f),
            }
            for op in &t.operators {
                if let TraversalOperator::Index(e) = op {
                    walk_refs(e, f);
                }
            }
        }
        Expression::Array(items) => items.iter().for_each(|e| walk_refs(e, f)),
        Expression::Object(obj) => {
            for (k, v) in obj.iter() {
                if let ObjectKey::Expression(k) = k {
                    walk_refs(k, f);
                }
                walk_refs(v, f);
            }
        }
        Expression::TemplateExpr(t) => {
            if let Ok(template) = hcl::Template::from_expr(t) {
                walk_template(&template, f);
            }
        }
        Expression::FuncCall(c) => c.args.iter().for_each(|e| walk_refs(e, f)),
        Expression::Parenthesis(e) => walk_refs(e, f),
        Expression::Conditional(c) => {
            walk_refs(&c.cond_expr, f);
            walk_refs(&c.true_expr, f);
            walk_refs(&c.false_expr, f);
        }
        Expression::Operation(op) => match op.as_ref() {
            Operation::Unary(u) => walk_refs(&u.expr, f),
            Operation::Binary(b) => {
                walk_refs(&b.lhs_expr, f);
                walk_refs(&b.rhs_expr, f);
            }
        },
        Expression::ForExpr(fe) => {
            walk_refs(&fe.collection_expr, f);
            if let Some(k) = &fe.key_expr {
                walk_refs(k, f);
            }
            walk_refs(&fe.value_expr, f);
            if let Some(c) = &fe.cond_expr {
                walk_refs(c, f);
            }
        }
        _ => {}
    }
}

fn walk_template(t: &hcl::Template, f: &mut dyn FnMut(&str, Option<&str>)) {
    use hcl::template::{Directive, Element};
    for el in t.elements() {
        match el {
            Element::Literal(_) => {}
            Element::Interpolation(i) => walk_refs(&i.expr, f),
            Element::Directive(Directive::If(d)) => {
                walk_refs(&d.cond_expr, f);
                walk_template(&d.true_template, f);
                if let Some(e) = &d.false_template {
                    walk_template(e, f);
                }
            }
            Element::Directive(Directive::For(d)) => {
                walk_refs(&d.collection_expr, f);
                walk_template(&d.template, f);
            }
        }
    }
}

/// The names `var.NAME` refers to in `expr`, in order, without repeats.
pub(crate) fn var_refs(expr: &Expression) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    walk_refs(expr, &mut |root, first| {
        if let (Some(name), "var") = (first, root) {
            if !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    });
    out
}

/// The variables `expr` reads as `ROOT.attr` (e.g. `workspace` for `workspace.nmae`).
pub(crate) fn roots_of_attr(expr: &Expression, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk_refs(expr, &mut |root, first| {
        if first == Some(attr) && !out.iter().any(|o| o == root) {
            out.push(root.to_string());
        }
    });
    out
}

/// Whether `expr` reads the variable `root` (e.g. `artifact` in `artifact.image` or in
/// `{ artifact = artifact }`); words inside string literals do not count.
pub(crate) fn mentions_root(expr: &Expression, root: &str) -> bool {
    let mut found = false;
    walk_refs(expr, &mut |r, _| found |= r == root);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(s: &str) -> Ty {
        let expr = Expression::from(hcl::edit::parser::parse_expr(s).expect("expr"));
        Ty::parse(&expr).expect("type")
    }

    #[test]
    fn types_parse_and_print() {
        assert_eq!(ty("string"), Ty::String);
        assert_eq!(ty("list(string)"), Ty::List(Box::new(Ty::String)));
        assert_eq!(
            ty("object({ name = string, ports = list(number) })").to_string(),
            "object({ name = string, ports = list(number) })"
        );
        let bad = Expression::from(hcl::edit::parser::parse_expr("strin").expect("expr"));
        assert!(Ty::parse(&bad)
            .expect_err("an error")
            .contains("unknown type `strin`"));
    }

    #[test]
    fn conversion_follows_hcl() {
        use serde_json::json;
        assert_eq!(convert(json!(3), &Ty::String).expect("ok"), json!("3"));
        assert_eq!(convert(json!("42"), &Ty::Number).expect("ok"), json!(42));
        assert_eq!(
            convert(json!("x"), &Ty::Number).expect_err("an error"),
            "a number is required, found the string \"x\""
        );
        assert_eq!(
            convert(json!([1, "a"]), &ty("list(number)")).expect_err("an error"),
            "a number is required, found the string \"a\" at [1]"
        );
        assert_eq!(
            convert(
                json!({"name": "x"}),
                &ty("object({ name = string, port = number })")
            )
            .expect_err("an error"),
            "attribute `port` is required (type object({ name = string, port = number }))"
        );
        assert_eq!(
            Given::Text("[80, 443]".into())
                .into_value(&ty("list(number)"))
                .expect("ok"),
            json!([80, 443])
        );
        assert_eq!(
            Given::Text("[80".into())
                .into_value(&Ty::String)
                .expect("ok"),
            json!("[80")
        );
    }

    #[test]
    fn var_refs_finds_templates_and_traversals() {
        let expr = Expression::from(
            hcl::edit::parser::parse_expr(
                r#"{ a = "${var.user}:${var.pass}", b = var.x[1], c = myvar.y }"#,
            )
            .expect("ok"),
        );
        assert_eq!(var_refs(&expr), vec!["user", "pass", "x"]);
        let uses = |s: &str| {
            let e = Expression::from(hcl::edit::parser::parse_expr(s).expect("expr"));
            mentions_root(&e, "artifact")
        };
        assert!(uses("artifact.image"));
        assert!(uses("templatefile(\"x\", { artifact = artifact })"));
        assert!(uses("\"${artifact.tag}\""));
        assert!(!uses("var.artifact_path"));
        assert!(!uses("x.artifact"));
        assert!(!uses("[\"./deploy.sh\", \"artifact.tag\"]"));
        assert!(uses("\"%{ if artifact.ok }yes%{ endif }\""));
    }
}
