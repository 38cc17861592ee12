//! The subset of Go's `text/template` that Waypoint's exec templates use:
//! actions that print one name. `{{.Input.NAME}}` (a field of the input
//! value, nested fields as `.Input.a.b`), `{{.Env.NAME}}`, `{{.App}}`,
//! `{{.Project}}`, `{{.Workspace}}`; spaces inside the braces, the trim
//! markers `{{-` and `-}}`, and comments `{{/* … */}}` as in Go. Anything else
//! (pipelines, functions, `if`, `range`) is an error naming the action.

use std::collections::BTreeMap;

/// What the actions of a template can name.
pub(crate) struct Data {
    /// The input value's type, for messages.
    pub input_type: String,
    /// The input value's fields, with Waypoint's computed names added.
    pub input: serde_json::Map<String, serde_json::Value>,
    pub env: BTreeMap<String, String>,
    pub app: String,
    pub project: String,
    pub workspace: String,
}

impl Data {
    /// The fields of `data` (none when it is not an object), plus Waypoint's
    /// `DockerImageFull` (`image:tag`), `DockerImageName` and `DockerImageTag`
    /// when it has string fields `image` and `tag`.
    pub(crate) fn input_fields(
        data: &serde_json::Value,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = data.as_object().cloned().unwrap_or_default();
        let image = fields
            .get("image")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let tag = fields
            .get("tag")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        if let (Some(image), Some(tag)) = (image, tag) {
            for (name, value) in [
                ("DockerImageFull", format!("{image}:{tag}")),
                ("DockerImageName", image),
                ("DockerImageTag", tag),
            ] {
                fields
                    .entry(name.to_string())
                    .or_insert(serde_json::Value::String(value));
            }
        }
        fields
    }
}

/// Renders `text`. The error is one line: `line N: …`.
pub(crate) fn render(text: &str, data: &Data) -> Result<String, String> {
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut out = String::with_capacity(text.len());
    // `pos`: where the text not yet copied starts.
    let mut pos = 0;
    let mut trim_next = false;
    while let Some(found) = text[pos..].find("{{") {
        let open = pos + found;
        let inner_start = open + 2;
        let Some(len) = text[inner_start..].find("}}") else {
            return Err(format!(
                "line {}: `{{{{` is never closed by `}}}}`",
                line_of(open)
            ));
        };
        let close = inner_start + len;
        let mut inner = &text[inner_start..close];
        let mut before = &text[pos..open];
        if trim_next {
            before = before.trim_start();
        }
        // Go's trim markers: a dash next to the braces, then a space.
        if let Some(rest) = inner.strip_prefix('-') {
            if rest.starts_with(char::is_whitespace) {
                before = before.trim_end();
                inner = rest;
            }
        }
        trim_next = false;
        if let Some(rest) = inner.strip_suffix('-') {
            if rest.ends_with(char::is_whitespace) {
                trim_next = true;
                inner = rest;
            }
        }
        out.push_str(before);
        let action = inner.trim();
        let printed = eval(action, data).map_err(|m| format!("line {}: {m}", line_of(open)))?;
        out.push_str(&printed);
        pos = close + 2;
    }
    let rest = &text[pos..];
    out.push_str(if trim_next { rest.trim_start() } else { rest });
    Ok(out)
}

const KNOWN: &str = ".Input.NAME, .Env.NAME, .App, .Project, .Workspace";

/// What one action prints.
fn eval(action: &str, data: &Data) -> Result<String, String> {
    if action.starts_with("/*") && action.ends_with("*/") && action.len() >= 4 {
        return Ok(String::new());
    }
    let unsupported = || {
        format!(
            "unsupported template action `{{{{{action}}}}}`: exec templates print one name ({KNOWN})"
        )
    };
    let Some(path) = action.strip_prefix('.') else {
        return Err(unsupported());
    };
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| !is_identifier(p)) {
        return Err(unsupported());
    }
    match parts.as_slice() {
        ["App"] => Ok(data.app.clone()),
        ["Project"] => Ok(data.project.clone()),
        ["Workspace"] => Ok(data.workspace.clone()),
        ["Env", name] => data.env.get(*name).cloned().ok_or_else(|| {
            format!("unknown name `.Env.{name}`: no variable {name} in the deploy's environment")
        }),
        ["Input", fields @ ..] if !fields.is_empty() => input_field(fields, data),
        _ => Err(format!("unknown name `{action}` (known: {KNOWN})")),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// `.Input.a.b`: the field by its exact name, else by a name that differs only
/// in case and underscores (Waypoint's Go field names: `.Input.Image`).
fn input_field(path: &[&str], data: &Data) -> Result<String, String> {
    let mut fields = &data.input;
    let mut walked = String::from(".Input");
    for (i, name) in path.iter().enumerate() {
        let value = lookup(fields, name).ok_or_else(|| {
            let mut known: Vec<&str> = fields.keys().map(String::as_str).collect();
            known.sort_unstable();
            let known = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            format!(
                "unknown name `{walked}.{name}`: the input ({}) has no field {name} (fields of {walked}: {known})",
                data.input_type
            )
        })?;
        walked.push('.');
        walked.push_str(name);
        if i + 1 == path.len() {
            return Ok(printed(value));
        }
        fields = value.as_object().ok_or_else(|| {
            format!(
                "unknown name `{walked}.{}`: {walked} has no fields",
                path[i + 1]
            )
        })?;
    }
    // `path` is not empty: the loop returned.
    Err(format!("unknown name `{walked}`"))
}

fn lookup<'a>(
    fields: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(v) = fields.get(name) {
        return Some(v);
    }
    let folded = fold(name);
    let mut matches = fields.iter().filter(|(k, _)| fold(k) == folded);
    match (matches.next(), matches.next()) {
        (Some((_, v)), None) => Some(v),
        _ => None,
    }
}

fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A value as text: strings as they are, `null` as nothing, other scalars as
/// written in JSON, objects and lists as JSON.
fn printed(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}
