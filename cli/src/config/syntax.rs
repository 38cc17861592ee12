//! One syntax tree for both config formats.
//!
//! The native HCL form (parsed by hcl-edit, which keeps byte spans) and the HCL JSON form
//! (parsed by [`super::json`]) are both turned into a [`Body`] of attributes and blocks, checked
//! against a [`Schema`] on the way. The JSON form needs the schema to tell blocks from
//! attributes; the HCL form uses it to reject unknown names early. Every attribute and block
//! carries its [`Location`]; expressions become `hcl::Expression`s, evaluated later.

use std::path::Path;

use hcl::edit::Span;
use hcl::expr::{Expression, Object, ObjectKey, TemplateExpr};

use super::error::{ConfigError, Location};
use super::json;

#[derive(Debug, Clone, Default)]
pub(crate) struct Body {
    pub attrs: Vec<Attr>,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub name: String,
    pub loc: Location,
    pub expr: Expression,
    /// For an object written literally (`env = { A = "x" }`): where each key
    /// is written, for errors about one entry. Empty otherwise.
    pub key_locs: Vec<(String, Location)>,
}

impl Attr {
    /// Where the key `key` of this attribute's object is written, or the
    /// attribute itself when that is not known.
    pub fn key_loc(&self, key: &str) -> &Location {
        self.key_locs
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&self.loc, |(_, l)| l)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub ident: String,
    pub labels: Vec<String>,
    pub loc: Location,
    pub body: Body,
}

impl Body {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    pub fn blocks<'a>(&'a self, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
        self.blocks.iter().filter(move |b| b.ident == ident)
    }
}

/// What a body may contain.
pub(crate) struct Schema {
    pub attrs: &'static [&'static str],
    pub blocks: &'static [BlockSpec],
    /// Blocks accepted and skipped (Waypoint features Cairn does not use yet).
    pub ignored: &'static [&'static str],
    /// Anything goes: every attribute is kept, nested blocks become object values
    /// (the body of a `use` block, which only the plugin can check).
    pub open: bool,
}

pub(crate) struct BlockSpec {
    pub name: &'static str,
    /// What each label is, e.g. `["app name"]`; its length is the number of labels required.
    pub labels: &'static [&'static str],
    pub schema: &'static Schema,
}

impl Schema {
    fn block(&self, name: &str) -> Option<&'static BlockSpec> {
        self.blocks.iter().find(|b| b.name == name)
    }

    fn allowed(&self) -> String {
        let mut parts = Vec::new();
        if !self.attrs.is_empty() {
            parts.push(format!("attributes {}", self.attrs.join(", ")));
        }
        let blocks: Vec<&str> = self
            .blocks
            .iter()
            .map(|b| b.name)
            .chain(self.ignored.iter().copied())
            .collect();
        if !blocks.is_empty() {
            parts.push(format!("blocks {}", blocks.join(", ")));
        }
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join("; ")
        }
    }
}

/// Turns byte offsets into locations.
pub(crate) struct Lines<'a> {
    file: &'a Path,
    src: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub fn new(file: &'a Path, src: &'a str) -> Lines<'a> {
        let starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { file, src, starts }
    }

    pub fn loc(&self, offset: usize) -> Location {
        let offset = offset.min(self.src.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = match self.src.get(start..offset) {
            Some(s) => s.chars().count() + 1,
            None => offset - start + 1,
        };
        Location::new(self.file, line, column)
    }
}

fn context_of(ident: &str, labels: &[String]) -> String {
    let mut s = format!("in `{ident}`");
    for l in labels {
        s.push_str(&format!(" \"{l}\""));
    }
    s
}

fn unknown(kind: &str, name: &str, ctx: &str, schema: &Schema, loc: &Location) -> ConfigError {
    ConfigError::invalid(
        loc,
        format!(
            "unknown {kind} `{name}` {ctx}; allowed here: {}",
            schema.allowed()
        ),
    )
}

fn check_labels(
    spec: &BlockSpec,
    labels: &[String],
    loc: &Location,
    ctx: &str,
) -> Result<(), ConfigError> {
    if labels.len() == spec.labels.len() {
        return Ok(());
    }
    let want = if spec.labels.is_empty() {
        "takes no labels".to_string()
    } else {
        format!(
            "needs {} label{} ({})",
            spec.labels.len(),
            if spec.labels.len() == 1 { "" } else { "s" },
            spec.labels.join(", ")
        )
    };
    let example = if spec.labels.is_empty() {
        format!("{} {{ … }}", spec.name)
    } else {
        let labels: Vec<String> = spec.labels.iter().map(|l| format!("\"<{l}>\"")).collect();
        format!("{} {} {{ … }}", spec.name, labels.join(" "))
    };
    Err(ConfigError::invalid(
        loc,
        format!(
            "block `{}` {ctx} {want}, found {}: write {example}",
            spec.name,
            labels.len()
        ),
    ))
}

fn check_unique_attrs(body: &mut Body, ctx: &str, errs: &mut Vec<ConfigError>) {
    let mut kept: Vec<Attr> = Vec::new();
    for a in std::mem::take(&mut body.attrs) {
        if let Some(first) = kept.iter().find(|b| b.name == a.name) {
            errs.push(ConfigError::invalid(
                &a.loc,
                format!(
                    "attribute `{}` {ctx} is defined twice (first at {}:{})",
                    a.name, first.loc.line, first.loc.column
                ),
            ));
            continue;
        }
        kept.push(a);
    }
    body.attrs = kept;
}

/// Groups the blocks of an open body into attributes: one block → an object; several blocks
/// with the same name → an array of objects; labels wrap the object (`a "x" { }` → `a = { x = {…} }`).
fn open_blocks_to_attrs(
    blocks: Vec<(String, Location, Expression)>,
    attrs: &mut Vec<Attr>,
    ctx: &str,
    errs: &mut Vec<ConfigError>,
) {
    let mut order: Vec<String> = Vec::new();
    for (name, _, _) in &blocks {
        if !order.contains(name) {
            order.push(name.clone());
        }
    }
    for name in order {
        let group: Vec<&(String, Location, Expression)> =
            blocks.iter().filter(|(n, _, _)| *n == name).collect();
        let loc = group[0].1.clone();
        if let Some(a) = attrs.iter().find(|a| a.name == name) {
            errs.push(ConfigError::invalid(
                &loc,
                format!(
                    "`{name}` {ctx} is both an attribute (at {}:{}) and a block",
                    a.loc.line, a.loc.column
                ),
            ));
            continue;
        }
        let expr = if group.len() == 1 {
            group[0].2.clone()
        } else {
            Expression::Array(group.iter().map(|(_, _, e)| e.clone()).collect())
        };
        attrs.push(Attr {
            name,
            loc,
            expr,
            key_locs: Vec::new(),
        });
    }
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::Expression(Expression::String(name.to_string()))
}

fn wrap_labels(mut expr: Expression, labels: &[String]) -> Expression {
    for label in labels.iter().rev() {
        let mut obj = Object::new();
        obj.insert(key(label), expr);
        expr = Expression::Object(obj);
    }
    expr
}

// ---------------------------------------------------------------------------------------------
// Native HCL

pub(crate) fn from_hcl(
    body: &hcl::edit::structure::Body,
    schema: &Schema,
    lines: &Lines,
    ctx: &str,
    errs: &mut Vec<ConfigError>,
) -> Body {
    use hcl::edit::structure::Structure;

    let mut out = Body::default();
    let mut open_blocks = Vec::new();
    for structure in body.iter() {
        match structure {
            Structure::Attribute(attr) => {
                let name = attr.key.as_str();
                let loc = lines.loc(attr.span().map_or(0, |s| s.start));
                if schema.open || schema.attrs.contains(&name) {
                    out.attrs.push(Attr {
                        name: name.to_string(),
                        loc,
                        expr: Expression::from(attr.value.clone()),
                        key_locs: hcl_key_locs(&attr.value, lines),
                    });
                } else if schema.block(name).is_some() || schema.ignored.contains(&name) {
                    errs.push(ConfigError::invalid(
                        &loc,
                        format!(
                            "`{name}` {ctx} is a block, not an attribute: write {name} {{ … }}"
                        ),
                    ));
                } else {
                    errs.push(unknown("attribute", name, ctx, schema, &loc));
                }
            }
            Structure::Block(block) => {
                let ident = block.ident.as_str();
                let loc = lines.loc(block.span().map_or(0, |s| s.start));
                let labels: Vec<String> = block
                    .labels
                    .iter()
                    .map(|l| l.as_str().to_string())
                    .collect();
                if schema.open {
                    let inner =
                        hcl_block_to_expr(&block.body, lines, &context_of(ident, &labels), errs);
                    open_blocks.push((ident.to_string(), loc, wrap_labels(inner, &labels)));
                } else if let Some(spec) = schema.block(ident) {
                    if let Err(e) = check_labels(spec, &labels, &loc, ctx) {
                        errs.push(e);
                        continue;
                    }
                    let body = from_hcl(
                        &block.body,
                        spec.schema,
                        lines,
                        &context_of(ident, &labels),
                        errs,
                    );
                    out.blocks.push(Block {
                        ident: ident.to_string(),
                        labels,
                        loc,
                        body,
                    });
                } else if schema.ignored.contains(&ident) {
                    // A Waypoint block Cairn does not use (yet): accepted, not interpreted.
                } else if schema.attrs.contains(&ident) {
                    errs.push(ConfigError::invalid(
                        &loc,
                        format!("`{ident}` {ctx} is an attribute, not a block: write {ident} = …"),
                    ));
                } else {
                    errs.push(unknown("block", ident, ctx, schema, &loc));
                }
            }
        }
    }
    open_blocks_to_attrs(open_blocks, &mut out.attrs, ctx, errs);
    check_unique_attrs(&mut out, ctx, errs);
    out
}

/// Where each literal key of an object expression is written.
fn hcl_key_locs(value: &hcl::edit::expr::Expression, lines: &Lines) -> Vec<(String, Location)> {
    use hcl::edit::expr::{Expression as E, ObjectKey as K};
    let E::Object(obj) = value else {
        return Vec::new();
    };
    obj.iter()
        .filter_map(|(k, _)| {
            let name = match k {
                K::Ident(id) => id.as_str().to_string(),
                K::Expression(E::String(s)) => s.value().clone(),
                K::Expression(_) => return None,
            };
            Some((name, lines.loc(k.span().map_or(0, |s| s.start))))
        })
        .collect()
}

/// The body of a block inside an open body, as an object expression.
fn hcl_block_to_expr(
    body: &hcl::edit::structure::Body,
    lines: &Lines,
    ctx: &str,
    errs: &mut Vec<ConfigError>,
) -> Expression {
    static OPEN: Schema = Schema {
        attrs: &[],
        blocks: &[],
        ignored: &[],
        open: true,
    };
    let body = from_hcl(body, &OPEN, lines, ctx, errs);
    let mut obj = Object::new();
    for a in body.attrs {
        obj.insert(key(&a.name), a.expr);
    }
    Expression::Object(obj)
}

// ---------------------------------------------------------------------------------------------
// HCL JSON form

pub(crate) fn from_json(
    node: &json::Node,
    schema: &Schema,
    lines: &Lines,
    ctx: &str,
    errs: &mut Vec<ConfigError>,
) -> Body {
    let json::Kind::Object(members) = &node.kind else {
        errs.push(ConfigError::invalid(
            &lines.loc(node.at),
            format!(
                "expected a JSON object {ctx}, found {}",
                node.kind.type_name()
            ),
        ));
        return Body::default();
    };
    let mut out = Body::default();
    for m in members {
        let name = m.key.as_str();
        let loc = lines.loc(m.key_at);
        if name == "//" {
            continue; // a comment, per the HCL JSON spec
        }
        if schema.open || schema.attrs.contains(&name) {
            let key_locs = match &m.value.kind {
                json::Kind::Object(members) => members
                    .iter()
                    .map(|m| (m.key.clone(), lines.loc(m.key_at)))
                    .collect(),
                _ => Vec::new(),
            };
            out.attrs.push(Attr {
                name: name.to_string(),
                loc,
                expr: json_to_expr(&m.value),
                key_locs,
            });
        } else if let Some(spec) = schema.block(name) {
            if let Err(e) = expand_json_block(
                spec,
                &m.value,
                Vec::new(),
                m.key_at,
                lines,
                ctx,
                &mut out.blocks,
                errs,
            ) {
                errs.push(e);
            }
        } else if schema.ignored.contains(&name) {
            // A Waypoint block Cairn does not use (yet).
        } else {
            errs.push(unknown("key", name, ctx, schema, &loc));
        }
    }
    check_unique_attrs(&mut out, ctx, errs);
    out
}

/// A JSON value under a block key: one object per label level, then the body (or an array of
/// bodies for repeated blocks). Arrays are also accepted at label levels, as the spec allows.
#[allow(clippy::too_many_arguments)] // the recursion carries the parser's state
fn expand_json_block(
    spec: &BlockSpec,
    value: &json::Node,
    labels: Vec<String>,
    at: json::Offset,
    lines: &Lines,
    ctx: &str,
    out: &mut Vec<Block>,
    errs: &mut Vec<ConfigError>,
) -> Result<(), ConfigError> {
    let level = labels.len();
    match &value.kind {
        json::Kind::Array(items) => {
            for item in items {
                expand_json_block(spec, item, labels.clone(), item.at, lines, ctx, out, errs)?;
            }
            Ok(())
        }
        json::Kind::Object(members) if level < spec.labels.len() => {
            for m in members {
                let mut labels = labels.clone();
                labels.push(m.key.clone());
                expand_json_block(spec, &m.value, labels, m.key_at, lines, ctx, out, errs)?;
            }
            Ok(())
        }
        json::Kind::Object(_) => {
            let inner_ctx = context_of(spec.name, &labels);
            let body = from_json(value, spec.schema, lines, &inner_ctx, errs);
            out.push(Block {
                ident: spec.name.to_string(),
                labels,
                loc: lines.loc(at),
                body,
            });
            Ok(())
        }
        other => {
            let expected = if level < spec.labels.len() {
                format!("an object keyed by {}", spec.labels[level])
            } else {
                "an object (the block body)".to_string()
            };
            Err(ConfigError::invalid(
                &lines.loc(value.at),
                format!(
                    "block `{}` {ctx} must be {expected}, found {}",
                    spec.name,
                    other.type_name()
                ),
            ))
        }
    }
}

/// A JSON value as an expression. Strings holding `${` or `%{` are templates, as in the HCL
/// JSON spec; other strings are literal (so backslashes in plain strings stay as they are).
pub(crate) fn json_to_expr(node: &json::Node) -> Expression {
    match &node.kind {
        json::Kind::Null => Expression::Null,
        json::Kind::Bool(b) => Expression::Bool(*b),
        json::Kind::Number(n) => {
            if let Some(i) = n.as_i64() {
                Expression::from(i)
            } else if let Some(u) = n.as_u64() {
                Expression::from(u)
            } else {
                Expression::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        json::Kind::String(s) if s.contains("${") || s.contains("%{") => {
            Expression::from(TemplateExpr::QuotedString(s.clone()))
        }
        json::Kind::String(s) => Expression::String(s.clone()),
        json::Kind::Array(items) => Expression::Array(items.iter().map(json_to_expr).collect()),
        json::Kind::Object(members) => {
            let mut obj = Object::new();
            for m in members {
                obj.insert(key(&m.key), json_to_expr(&m.value));
            }
            Expression::Object(obj)
        }
    }
}
