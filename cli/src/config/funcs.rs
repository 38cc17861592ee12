//! The HCL function library of Terraform and Waypoint that a config can call, beyond the
//! few functions of [`super::eval`] (git, `timestamp`, `file`, base64, JSON, `upper`, …).
//!
//! Semantics follow Terraform's (Waypoint's for the template functions), with these
//! differences:
//! - There is no regular-expression engine in the build: `regex` and `regexall` are not
//!   declared, and `replace` is plain-text only (a `/…/` pattern is an error rather than a
//!   silently literal match).
//! - Relative paths (`abspath`, `fileexists`, `fileset`, `filesha256`, the template functions)
//!   start at the config's directory ([`config_dir`]), not the process's cwd.
//! - Lists and sets are both HCL arrays; `toset` removes duplicates (and sorts a set of strings
//!   or numbers, as Terraform iterates them).
//! - `templatefile` and `templatedir` return the *path* of the rendered text, as Waypoint's do,
//!   written content-addressed under the user's cache directory (see [`cache_root`]).
//!
//! hcl-rs functions are plain `fn` pointers: the config's directory comes from the
//! thread-local of [`super::eval`]. hcl-rs checks the declared parameter types and prefixes
//! errors with the function's name; the messages here say what is wrong with the arguments.

use std::cmp::Ordering;
use std::fs;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use hcl::eval::{Context, Evaluate as _, Func, FuncArgs, FuncDef, ParamType};
use hcl::{Map, Number, Value};
use sha2::{Digest as _, Sha256, Sha512};

use super::eval::{config_dir, read_file};

/// The names of the functions this module declares (for "available: …" messages).
pub(crate) const NAMES: &[&str] = &[
    // strings
    "format",
    "formatlist",
    "join",
    "split",
    "replace",
    "substr",
    "title",
    "trim",
    "trimprefix",
    "trimsuffix",
    "chomp",
    "indent",
    "strrev",
    "startswith",
    "endswith",
    "strcontains",
    // collections
    "length",
    "concat",
    "contains",
    "distinct",
    "element",
    "flatten",
    "index",
    "keys",
    "values",
    "lookup",
    "merge",
    "range",
    "reverse",
    "slice",
    "sort",
    "zipmap",
    "coalesce",
    "coalescelist",
    "compact",
    "chunklist",
    "setunion",
    "one",
    "alltrue",
    "anytrue",
    "sum",
    "tolist",
    "toset",
    "tomap",
    "tostring",
    "tonumber",
    "tobool",
    // numbers
    "abs",
    "ceil",
    "floor",
    "log",
    "max",
    "min",
    "pow",
    "signum",
    "parseint",
    // encoding and hashing
    "urlencode",
    "yamldecode",
    "yamlencode",
    "base64gzip",
    "sha256",
    "sha512",
    "base64sha256",
    "base64sha512",
    // filesystem
    "abspath",
    "dirname",
    "basename",
    "pathexpand",
    "fileexists",
    "fileset",
    "filesha256",
    "filesha512",
    // templates
    "templatefile",
    "templatedir",
    "templatestring",
    // time
    "timeadd",
    "formatdate",
];

/// Declares every function of this module in `ctx`.
pub(crate) fn declare(ctx: &mut Context<'static>) {
    for (name, def) in definitions() {
        ctx.declare_func(name, def);
    }
}

/// Each function with its parameters, in the order of [`NAMES`].
fn definitions() -> Vec<(&'static str, FuncDef)> {
    use ParamType as P;
    let s = || P::String;
    let n = || P::Number;
    let any = || P::Any;
    let list = || P::array_of(P::Any);
    let object = || P::object_of(P::Any);
    let fixed = |params: Vec<ParamType>, f: Func| FuncDef::new(f, params);
    let variadic = |params: Vec<ParamType>, rest: ParamType, f: Func| {
        FuncDef::builder()
            .params(params)
            .variadic_param(rest)
            .build(f)
    };
    vec![
        // strings
        ("format", variadic(vec![s()], any(), format)),
        ("formatlist", variadic(vec![s()], any(), formatlist)),
        ("join", variadic(vec![s()], list(), join)),
        ("split", fixed(vec![s(), s()], split)),
        ("replace", fixed(vec![s(), s(), s()], replace)),
        ("substr", fixed(vec![s(), n(), n()], substr)),
        ("title", fixed(vec![s()], title)),
        ("trim", fixed(vec![s(), s()], trim)),
        ("trimprefix", fixed(vec![s(), s()], trimprefix)),
        ("trimsuffix", fixed(vec![s(), s()], trimsuffix)),
        ("chomp", fixed(vec![s()], chomp)),
        ("indent", fixed(vec![n(), s()], indent)),
        ("strrev", fixed(vec![s()], strrev)),
        ("startswith", fixed(vec![s(), s()], startswith)),
        ("endswith", fixed(vec![s(), s()], endswith)),
        ("strcontains", fixed(vec![s(), s()], strcontains)),
        // collections
        ("length", fixed(vec![any()], length)),
        ("concat", variadic(vec![], list(), concat)),
        ("contains", fixed(vec![list(), any()], contains)),
        ("distinct", fixed(vec![list()], distinct)),
        ("element", fixed(vec![list(), n()], element)),
        ("flatten", fixed(vec![list()], flatten)),
        ("index", fixed(vec![list(), any()], index)),
        ("keys", fixed(vec![object()], keys)),
        ("values", fixed(vec![object()], values)),
        ("lookup", variadic(vec![object(), s()], any(), lookup)),
        ("merge", variadic(vec![], P::nullable(object()), merge)),
        ("range", variadic(vec![], n(), range)),
        ("reverse", fixed(vec![list()], reverse)),
        ("slice", fixed(vec![list(), n(), n()], slice)),
        ("sort", fixed(vec![list()], sort)),
        ("zipmap", fixed(vec![list(), list()], zipmap)),
        ("coalesce", variadic(vec![], any(), coalesce)),
        ("coalescelist", variadic(vec![], list(), coalescelist)),
        ("compact", fixed(vec![list()], compact)),
        ("chunklist", fixed(vec![list(), n()], chunklist)),
        ("setunion", variadic(vec![], list(), setunion)),
        ("one", fixed(vec![list()], one)),
        ("alltrue", fixed(vec![list()], alltrue)),
        ("anytrue", fixed(vec![list()], anytrue)),
        ("sum", fixed(vec![list()], sum)),
        ("tolist", fixed(vec![any()], tolist)),
        ("toset", fixed(vec![any()], toset)),
        ("tomap", fixed(vec![any()], tomap)),
        ("tostring", fixed(vec![any()], tostring)),
        ("tonumber", fixed(vec![any()], tonumber)),
        ("tobool", fixed(vec![any()], tobool)),
        // numbers
        ("abs", fixed(vec![n()], abs)),
        ("ceil", fixed(vec![n()], ceil)),
        ("floor", fixed(vec![n()], floor)),
        ("log", fixed(vec![n(), n()], log)),
        ("max", variadic(vec![], n(), max)),
        ("min", variadic(vec![], n(), min)),
        ("pow", fixed(vec![n(), n()], pow)),
        ("signum", fixed(vec![n()], signum)),
        ("parseint", fixed(vec![s(), n()], parseint)),
        // encoding and hashing
        ("urlencode", fixed(vec![s()], urlencode)),
        ("yamldecode", fixed(vec![s()], yamldecode)),
        ("yamlencode", fixed(vec![any()], yamlencode)),
        ("base64gzip", fixed(vec![s()], base64gzip)),
        ("sha256", fixed(vec![s()], sha256)),
        ("sha512", fixed(vec![s()], sha512)),
        ("base64sha256", fixed(vec![s()], base64sha256)),
        ("base64sha512", fixed(vec![s()], base64sha512)),
        // filesystem
        ("abspath", fixed(vec![s()], abspath)),
        ("dirname", fixed(vec![s()], dirname)),
        ("basename", fixed(vec![s()], basename)),
        ("pathexpand", fixed(vec![s()], pathexpand)),
        ("fileexists", fixed(vec![s()], fileexists)),
        ("fileset", fixed(vec![s(), s()], fileset)),
        ("filesha256", fixed(vec![s()], filesha256)),
        ("filesha512", fixed(vec![s()], filesha512)),
        // templates
        ("templatefile", variadic(vec![s()], object(), templatefile)),
        ("templatedir", variadic(vec![s()], object(), templatedir)),
        (
            "templatestring",
            variadic(vec![s()], object(), templatestring),
        ),
        // time
        ("timeadd", fixed(vec![s(), s()], timeadd)),
        ("formatdate", fixed(vec![s(), s()], formatdate)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Argument and value helpers

/// Argument `i`, declared `string`.
fn str_arg(args: &FuncArgs, i: usize) -> &str {
    args.get(i).and_then(Value::as_str).unwrap_or_default()
}

/// Argument `i`, declared `array(any)`.
fn list_arg(args: &FuncArgs, i: usize) -> &[Value] {
    args.get(i)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Argument `i`, declared `object(any)`.
fn object_arg(args: &FuncArgs, i: usize) -> Result<&Map<String, Value>, String> {
    args.get(i)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("argument {} must be an object", i + 1))
}

/// Argument `i`, declared `number`, as a float.
fn num_arg(args: &FuncArgs, i: usize) -> f64 {
    args.get(i).map(as_f64).unwrap_or_default()
}

/// Argument `i`, declared `number`, which must be a whole number; `what` names it in errors.
fn int_arg(args: &FuncArgs, i: usize, what: &str) -> Result<i64, String> {
    let v = args.get(i).unwrap_or(&Value::Null);
    to_int(v).ok_or_else(|| format!("{what} must be a whole number, got {}", show(v)))
}

/// The optional `VARS` argument of the template functions (at most one).
fn optional_arg<'a>(args: &'a FuncArgs, what: &str) -> Result<Option<&'a Value>, String> {
    let mut rest = args.variadic_args();
    let first = rest.next();
    if rest.next().is_some() {
        return Err(format!("expected at most one {what} argument"));
    }
    Ok(first)
}

fn as_f64(v: &Value) -> f64 {
    v.as_number().and_then(Number::as_f64).unwrap_or_default()
}

/// A whole number as `i64` (from an integer or a float without a fraction).
fn to_int(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    n.as_i64().or_else(|| {
        let f = n.as_f64()?;
        (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    })
}

/// A float as an HCL number (whole values become integers).
fn number(f: f64) -> Result<Value, String> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| "the result is not a finite number".to_string())
}

/// A short description of a value's type for errors.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// A value as written in HCL, shortened for an error message.
fn show(v: &Value) -> String {
    let text = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Terraform's automatic conversion of a primitive to a string.
fn to_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `to_str` with an error naming the element.
fn elem_str(v: &Value, i: usize) -> Result<String, String> {
    to_str(v).ok_or_else(|| format!("element {i} must be a string, got {}", type_name(v)))
}

/// Terraform's automatic conversion of a number or a numeric string to a number.
fn to_number(v: &Value) -> Option<Value> {
    match v {
        Value::Number(_) => Some(v.clone()),
        Value::String(s) => parse_number(s.trim()),
        _ => None,
    }
}

fn parse_number(s: &str) -> Option<Value> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    if let Ok(u) = s.parse::<u64>() {
        return Some(Value::from(u));
    }
    let looks_numeric = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if s.is_empty() || !looks_numeric {
        return None;
    }
    s.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

/// Terraform's automatic conversion of a bool or `"true"`/`"false"` to a bool.
fn to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// The elements of `list` without duplicates, first occurrence first.
fn dedup(list: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for v in list {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn compare_numbers(a: &Value, b: &Value) -> Ordering {
    as_f64(a).partial_cmp(&as_f64(b)).unwrap_or(Ordering::Equal)
}

// ---------------------------------------------------------------------------------------------
// Strings

/// `format(SPEC, ARGS...)`: printf-style formatting with Terraform's verbs: `%v` (`%#v` as
/// JSON), `%s`, `%q`, `%d`, `%b`, `%o`, `%x`, `%X`, `%e`, `%E`, `%f`, `%g`, `%G`, `%t`, `%%`;
/// flags `-+# 0`, width, `.precision` and `%[N]` argument indexes.
fn format(args: FuncArgs) -> Result<Value, String> {
    let values: Vec<Value> = args.variadic_args().cloned().collect();
    sprintf(str_arg(&args, 0), &values).map(Value::String)
}

/// `formatlist(SPEC, ARGS...)`: `format` over lists element by element; scalar arguments are
/// repeated, and every list argument must have the same length.
fn formatlist(args: FuncArgs) -> Result<Value, String> {
    let spec = str_arg(&args, 0);
    let rest: Vec<&Value> = args.variadic_args().collect();
    let mut len: Option<usize> = None;
    for (i, v) in rest.iter().enumerate() {
        if let Value::Array(list) = v {
            match len {
                Some(n) if n != list.len() => {
                    return Err(format!(
                        "argument {} has length {}, but an earlier list argument has length {n}",
                        i + 2,
                        list.len()
                    ))
                }
                _ => len = Some(list.len()),
            }
        }
    }
    let mut out = Vec::new();
    for row in 0..len.unwrap_or(1) {
        let values: Vec<Value> = rest
            .iter()
            .map(|v| match v {
                Value::Array(list) => list.get(row).cloned().unwrap_or(Value::Null),
                other => (*other).clone(),
            })
            .collect();
        out.push(Value::String(sprintf(spec, &values)?));
    }
    Ok(Value::Array(out))
}

/// One `%…` directive of a format string.
#[derive(Default)]
struct Directive {
    minus: bool,
    plus: bool,
    sharp: bool,
    zero: bool,
    space: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

fn sprintf(spec: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = spec.chars().peekable();
    let mut next = 0usize;
    let mut used = vec![false; args.len()];
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut d = Directive::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => d.minus = true,
                '+' => d.plus = true,
                '#' => d.sharp = true,
                '0' => d.zero = true,
                ' ' => d.space = true,
                _ => break,
            }
            chars.next();
        }
        let read_index = |chars: &mut std::iter::Peekable<std::str::Chars>| {
            if chars.peek() != Some(&'[') {
                return Ok(None);
            }
            chars.next();
            let digits: String =
                std::iter::from_fn(|| chars.next_if(char::is_ascii_digit)).collect();
            if chars.next() != Some(']') {
                return Err("invalid argument index: expected %[N]".to_string());
            }
            match digits.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Some(n - 1)),
                _ => Err("invalid argument index: they start at 1".to_string()),
            }
        };
        if let Some(i) = read_index(&mut chars)? {
            next = i;
        }
        let width: String = std::iter::from_fn(|| chars.next_if(char::is_ascii_digit)).collect();
        d.width = width.parse().ok();
        if chars.next_if_eq(&'.').is_some() {
            let p: String = std::iter::from_fn(|| chars.next_if(char::is_ascii_digit)).collect();
            d.precision = Some(p.parse().unwrap_or(0));
        }
        if let Some(i) = read_index(&mut chars)? {
            next = i;
        }
        let verb = chars
            .next()
            .ok_or_else(|| "the format string ends with an unfinished %".to_string())?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args.get(next).ok_or_else(|| {
            format!(
                "not enough arguments for the format string: %{verb} needs argument {} of {}",
                next + 1,
                args.len()
            )
        })?;
        used[next] = true;
        next += 1;
        out.push_str(&format_one(&d, verb, arg)?);
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(format!(
            "too many arguments: argument {} is not used by the format string",
            unused + 1
        ));
    }
    Ok(out)
}

/// Formats one argument for one directive, padded to its width.
fn format_one(d: &Directive, verb: char, arg: &Value) -> Result<String, String> {
    let numeric = |arg: &Value| {
        to_number(arg).ok_or_else(|| {
            format!(
                "%{verb} needs a number, got {} {}",
                type_name(arg),
                show(arg)
            )
        })
    };
    let (sign, body) = match verb {
        'v' if d.sharp => ("", serde_json::to_string(arg).map_err(|e| e.to_string())?),
        'v' => match arg {
            Value::Null => ("", "null".to_string()),
            Value::Array(_) | Value::Object(_) => {
                ("", serde_json::to_string(arg).map_err(|e| e.to_string())?)
            }
            Value::Number(_) => split_sign(&arg.to_string(), d),
            other => ("", to_str(other).unwrap_or_default()),
        },
        's' | 'q' => {
            let mut s = to_str(arg).ok_or_else(|| {
                format!(
                    "%{verb} needs a string, got {} {}",
                    type_name(arg),
                    show(arg)
                )
            })?;
            if let Some(p) = d.precision {
                s = s.chars().take(p).collect();
            }
            if verb == 'q' {
                s = serde_json::to_string(&s).map_err(|e| e.to_string())?;
            }
            ("", s)
        }
        't' => {
            let b = to_bool(arg)
                .ok_or_else(|| format!("%t needs a bool, got {} {}", type_name(arg), show(arg)))?;
            ("", b.to_string())
        }
        'd' | 'b' | 'o' | 'x' | 'X' => {
            let v = numeric(arg)?;
            let i = to_int(&v)
                .ok_or_else(|| format!("%{verb} needs a whole number, got {}", show(&v)))?;
            let magnitude = i.unsigned_abs();
            let mut digits = match verb {
                'd' => magnitude.to_string(),
                'b' => format!("{magnitude:b}"),
                'o' => format!("{magnitude:o}"),
                'x' => format!("{magnitude:x}"),
                _ => format!("{magnitude:X}"),
            };
            if let Some(p) = d.precision {
                while digits.len() < p {
                    digits.insert(0, '0');
                }
            }
            if d.sharp {
                let prefix = match verb {
                    'b' => "0b",
                    'o' => "0",
                    'x' => "0x",
                    'X' => "0X",
                    _ => "",
                };
                digits.insert_str(0, prefix);
            }
            (sign_of(i < 0, d), digits)
        }
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' => {
            let x = as_f64(&numeric(arg)?);
            let body = match verb {
                'e' | 'E' => format_exp(x.abs(), d.precision.unwrap_or(6)),
                'f' | 'F' => format!("{:.*}", d.precision.unwrap_or(6), x.abs()),
                _ => format_general(x.abs(), d.precision, d.sharp),
            };
            let body = if verb.is_ascii_uppercase() {
                body.to_uppercase()
            } else {
                body
            };
            (sign_of(x.is_sign_negative() && x != 0.0, d), body)
        }
        other => return Err(format!("unsupported format verb %{other}")),
    };
    Ok(pad(
        d,
        sign,
        &body,
        verb != 's' && verb != 'q' && verb != 't',
    ))
}

fn sign_of(negative: bool, d: &Directive) -> &'static str {
    if negative {
        "-"
    } else if d.plus {
        "+"
    } else if d.space {
        " "
    } else {
        ""
    }
}

fn split_sign<'a>(text: &str, d: &Directive) -> (&'a str, String) {
    match text.strip_prefix('-') {
        Some(rest) => ("-", rest.to_string()),
        None => (sign_of(false, d), text.to_string()),
    }
}

/// Pads `sign` + `body` to the directive's width (zeros go after the sign).
fn pad(d: &Directive, sign: &str, body: &str, numeric: bool) -> String {
    let len = sign.chars().count() + body.chars().count();
    let fill = d.width.unwrap_or(0).saturating_sub(len);
    if d.minus {
        format!("{sign}{body}{}", " ".repeat(fill))
    } else if d.zero && numeric {
        format!("{sign}{}{body}", "0".repeat(fill))
    } else {
        format!("{}{sign}{body}", " ".repeat(fill))
    }
}

/// `x` (not negative) as `d.dddde+XX`, like Go's `%e`.
fn format_exp(x: f64, precision: usize) -> String {
    go_exponent(&format!("{x:.precision$e}"))
}

/// Rust's `1.5e3` / `1.5e-7` → Go's `1.5e+03` / `1.5e-07`.
fn go_exponent(rust: &str) -> String {
    match rust.split_once('e') {
        Some((mantissa, exp)) => {
            let exp: i32 = exp.parse().unwrap_or(0);
            let sign = if exp < 0 { '-' } else { '+' };
            format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
        }
        None => rust.to_string(),
    }
}

/// `x` (not negative) like Go's `%g`: exponent form for large and small exponents, the
/// shortest representation without a precision, trailing zeros removed unless `#`.
fn format_general(x: f64, precision: Option<usize>, sharp: bool) -> String {
    let strip = |s: String| {
        if sharp || !s.contains('.') {
            return s;
        }
        let (mantissa, exp) = match s.find('e') {
            Some(i) => (s[..i].to_string(), s[i..].to_string()),
            None => (s.clone(), String::new()),
        };
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        format!("{mantissa}{exp}")
    };
    match precision {
        None => {
            let shortest = format!("{x:e}");
            let exp: i32 = shortest
                .split_once('e')
                .and_then(|(_, e)| e.parse().ok())
                .unwrap_or(0);
            if x != 0.0 && !(-4..6).contains(&exp) {
                go_exponent(&shortest)
            } else {
                x.to_string()
            }
        }
        Some(p) => {
            let p = p.max(1);
            let sci = format!("{x:.*e}", p - 1);
            let exp: i32 = sci
                .split_once('e')
                .and_then(|(_, e)| e.parse().ok())
                .unwrap_or(0);
            if exp < -4 || exp >= p as i32 {
                strip(go_exponent(&sci))
            } else {
                let decimals = (p as i32 - 1 - exp).max(0) as usize;
                strip(format!("{x:.decimals$}"))
            }
        }
    }
}

/// `join(SEPARATOR, LISTS...)`: the elements of the lists joined by the separator.
fn join(args: FuncArgs) -> Result<Value, String> {
    if args.len() < 2 {
        return Err("expected at least one list after the separator".to_string());
    }
    let mut parts = Vec::new();
    for list in args.variadic_args() {
        for (i, v) in list.as_array().into_iter().flatten().enumerate() {
            parts.push(elem_str(v, i)?);
        }
    }
    Ok(Value::String(parts.join(str_arg(&args, 0))))
}

/// `split(SEPARATOR, STRING)`: the parts of the string (an empty separator splits into
/// characters).
fn split(args: FuncArgs) -> Result<Value, String> {
    let (sep, s) = (str_arg(&args, 0), str_arg(&args, 1));
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep).map(|p| Value::String(p.to_string())).collect()
    };
    Ok(Value::Array(parts))
}

/// `replace(STRING, SUBSTRING, REPLACEMENT)`: every occurrence replaced. Plain text only: the
/// build has no regular-expression engine, so a `/…/` pattern (Terraform's regex form) is an
/// error rather than a literal match.
fn replace(args: FuncArgs) -> Result<Value, String> {
    let (s, from, to) = (str_arg(&args, 0), str_arg(&args, 1), str_arg(&args, 2));
    if from.len() > 1 && from.starts_with('/') && from.ends_with('/') {
        return Err(format!(
            "regular expressions ({from}) are not supported; use a plain substring"
        ));
    }
    if from.is_empty() {
        return Ok(Value::String(s.to_string()));
    }
    Ok(Value::String(s.replace(from, to)))
}

/// `substr(STRING, OFFSET, LENGTH)`: characters from `OFFSET` (negative: from the end);
/// `LENGTH` -1 means to the end. Out-of-range parts are empty, as in Terraform.
fn substr(args: FuncArgs) -> Result<Value, String> {
    let chars: Vec<char> = str_arg(&args, 0).chars().collect();
    let mut offset = int_arg(&args, 1, "the offset")?;
    let length = int_arg(&args, 2, "the length")?;
    if length < -1 {
        return Err(format!("the length must be -1 or more, got {length}"));
    }
    if offset < 0 {
        offset = (offset + chars.len() as i64).max(0);
    }
    let start = (offset as usize).min(chars.len());
    let end = if length == -1 {
        chars.len()
    } else {
        start.saturating_add(length as usize).min(chars.len())
    };
    Ok(Value::String(chars[start..end].iter().collect()))
}

/// `title(STRING)`: the first letter of each word in upper case.
fn title(args: FuncArgs) -> Result<Value, String> {
    let mut out = String::new();
    let mut at_word_start = true;
    for c in str_arg(&args, 0).chars() {
        if at_word_start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_word_start = if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            c.is_whitespace()
        };
    }
    Ok(Value::String(out))
}

/// `trim(STRING, CHARACTERS)`: the characters of the second string removed from both ends.
fn trim(args: FuncArgs) -> Result<Value, String> {
    let cutset = str_arg(&args, 1);
    Ok(Value::String(
        str_arg(&args, 0)
            .trim_matches(|c| cutset.contains(c))
            .to_string(),
    ))
}

fn trimprefix(args: FuncArgs) -> Result<Value, String> {
    let s = str_arg(&args, 0);
    Ok(Value::String(
        s.strip_prefix(str_arg(&args, 1)).unwrap_or(s).to_string(),
    ))
}

fn trimsuffix(args: FuncArgs) -> Result<Value, String> {
    let s = str_arg(&args, 0);
    Ok(Value::String(
        s.strip_suffix(str_arg(&args, 1)).unwrap_or(s).to_string(),
    ))
}

/// `chomp(STRING)`: trailing newlines (`\n`, `\r\n`) removed.
fn chomp(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(
        str_arg(&args, 0).trim_end_matches(['\n', '\r']).to_string(),
    ))
}

/// `indent(SPACES, STRING)`: every line but the first prefixed with that many spaces.
fn indent(args: FuncArgs) -> Result<Value, String> {
    let n = int_arg(&args, 0, "the number of spaces")?;
    let n = usize::try_from(n)
        .map_err(|_| format!("the number of spaces must not be negative, got {n}"))?;
    let pad = format!("\n{}", " ".repeat(n));
    Ok(Value::String(str_arg(&args, 1).replace('\n', &pad)))
}

fn strrev(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(str_arg(&args, 0).chars().rev().collect()))
}

fn startswith(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(
        str_arg(&args, 0).starts_with(str_arg(&args, 1)),
    ))
}

fn endswith(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(str_arg(&args, 0).ends_with(str_arg(&args, 1))))
}

fn strcontains(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(str_arg(&args, 0).contains(str_arg(&args, 1))))
}

// ---------------------------------------------------------------------------------------------
// Collections

/// `length(VALUE)`: characters of a string, elements of a list, keys of an object.
fn length(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        Value::String(s) => Ok(Value::from(s.chars().count())),
        Value::Array(a) => Ok(Value::from(a.len())),
        Value::Object(o) => Ok(Value::from(o.len())),
        other => Err(format!(
            "needs a string, list or object, got {}",
            type_name(other)
        )),
    }
}

/// `concat(LISTS...)`: the lists one after the other.
fn concat(args: FuncArgs) -> Result<Value, String> {
    if args.is_empty() {
        return Err("expected at least one list".to_string());
    }
    let out = args
        .iter()
        .flat_map(|l| l.as_array().cloned().unwrap_or_default())
        .collect();
    Ok(Value::Array(out))
}

fn contains(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(list_arg(&args, 0).contains(&args[1])))
}

fn distinct(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Array(dedup(list_arg(&args, 0).iter().cloned())))
}

/// `element(LIST, INDEX)`: the element at `INDEX`, wrapping around past the end.
fn element(args: FuncArgs) -> Result<Value, String> {
    let list = list_arg(&args, 0);
    let i = int_arg(&args, 1, "the index")?;
    if i < 0 {
        return Err(format!("the index must not be negative, got {i}"));
    }
    if list.is_empty() {
        return Err("cannot take an element of an empty list".to_string());
    }
    Ok(list[(i as u64 % list.len() as u64) as usize].clone())
}

/// `flatten(LIST)`: nested lists replaced by their elements, recursively.
fn flatten(args: FuncArgs) -> Result<Value, String> {
    fn walk(list: &[Value], out: &mut Vec<Value>) {
        for v in list {
            match v {
                Value::Array(inner) => walk(inner, out),
                other => out.push(other.clone()),
            }
        }
    }
    let mut out = Vec::new();
    walk(list_arg(&args, 0), &mut out);
    Ok(Value::Array(out))
}

/// `index(LIST, VALUE)`: the position of the first element equal to `VALUE`.
fn index(args: FuncArgs) -> Result<Value, String> {
    list_arg(&args, 0)
        .iter()
        .position(|v| v == &args[1])
        .map(Value::from)
        .ok_or_else(|| format!("{} is not in the list", show(&args[1])))
}

/// `keys(OBJECT)`: the keys, sorted.
fn keys(args: FuncArgs) -> Result<Value, String> {
    let mut keys: Vec<&String> = object_arg(&args, 0)?.keys().collect();
    keys.sort();
    Ok(Value::Array(
        keys.into_iter().map(|k| Value::String(k.clone())).collect(),
    ))
}

/// `values(OBJECT)`: the values, in the order of the sorted keys.
fn values(args: FuncArgs) -> Result<Value, String> {
    let mut entries: Vec<(&String, &Value)> = object_arg(&args, 0)?.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    Ok(Value::Array(
        entries.into_iter().map(|(_, v)| v.clone()).collect(),
    ))
}

/// `lookup(OBJECT, KEY)` / `lookup(OBJECT, KEY, DEFAULT)`.
fn lookup(args: FuncArgs) -> Result<Value, String> {
    let default = optional_arg(&args, "default")?;
    let key = str_arg(&args, 1);
    match (object_arg(&args, 0)?.get(key), default) {
        (Some(v), _) => Ok(v.clone()),
        (None, Some(d)) => Ok(d.clone()),
        (None, None) => Err(format!("no key {key:?} in the object (and no default)")),
    }
}

/// `merge(OBJECTS...)`: one object; a key in a later object wins. Nulls are skipped.
fn merge(args: FuncArgs) -> Result<Value, String> {
    let mut out = Map::new();
    for m in args.iter().filter_map(Value::as_object) {
        for (k, v) in m {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

/// `range(LIMIT)`, `range(START, LIMIT)`, `range(START, LIMIT, STEP)`: numbers from `START`
/// (default 0) up to but excluding `LIMIT`, by `STEP` (default 1, or -1 when counting down).
fn range(args: FuncArgs) -> Result<Value, String> {
    const MAX: usize = 1024;
    let (start, limit, step) = match args.len() {
        1 => (0.0, num_arg(&args, 0), None),
        2 => (num_arg(&args, 0), num_arg(&args, 1), None),
        3 => (
            num_arg(&args, 0),
            num_arg(&args, 1),
            Some(num_arg(&args, 2)),
        ),
        n => return Err(format!("expected 1 to 3 arguments, got {n}")),
    };
    let step = step.unwrap_or(if start > limit { -1.0 } else { 1.0 });
    if step == 0.0 {
        return Err("the step must not be zero".to_string());
    }
    let mut out = Vec::new();
    let mut v = start;
    while (step > 0.0 && v < limit) || (step < 0.0 && v > limit) {
        if out.len() == MAX {
            return Err(format!(
                "more than {MAX} numbers: use a larger step or a smaller range"
            ));
        }
        out.push(number(v)?);
        v = start + step * out.len() as f64;
    }
    Ok(Value::Array(out))
}

fn reverse(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Array(
        list_arg(&args, 0).iter().rev().cloned().collect(),
    ))
}

/// `slice(LIST, START, END)`: elements from `START` up to but excluding `END`.
fn slice(args: FuncArgs) -> Result<Value, String> {
    let list = list_arg(&args, 0);
    let start = int_arg(&args, 1, "the start index")?;
    let end = int_arg(&args, 2, "the end index")?;
    if start < 0 {
        return Err(format!("the start index must not be negative, got {start}"));
    }
    if end < 0 || end as usize > list.len() {
        return Err(format!(
            "the end index {end} is out of range for a list of {}",
            list.len()
        ));
    }
    if start > end {
        return Err(format!(
            "the start index {start} is greater than the end index {end}"
        ));
    }
    Ok(Value::Array(list[start as usize..end as usize].to_vec()))
}

/// `sort(LIST)`: the strings in lexicographic order (numbers and bools become strings).
fn sort(args: FuncArgs) -> Result<Value, String> {
    let mut strings = list_arg(&args, 0)
        .iter()
        .enumerate()
        .map(|(i, v)| elem_str(v, i))
        .collect::<Result<Vec<_>, _>>()?;
    strings.sort();
    Ok(Value::Array(
        strings.into_iter().map(Value::String).collect(),
    ))
}

/// `zipmap(KEYS, VALUES)`: an object from a list of keys and a list of values.
fn zipmap(args: FuncArgs) -> Result<Value, String> {
    let (keys, values) = (list_arg(&args, 0), list_arg(&args, 1));
    if keys.len() != values.len() {
        return Err(format!(
            "{} keys but {} values: the lists must have the same length",
            keys.len(),
            values.len()
        ));
    }
    let mut out = Map::new();
    for (i, (k, v)) in keys.iter().zip(values).enumerate() {
        out.insert(elem_str(k, i)?, v.clone());
    }
    Ok(Value::Object(out))
}

/// `coalesce(VALUES...)`: the first argument that is neither null nor an empty string.
fn coalesce(args: FuncArgs) -> Result<Value, String> {
    args.iter()
        .find(|v| !v.is_null() && v.as_str() != Some(""))
        .cloned()
        .ok_or_else(|| "every argument is null or an empty string".to_string())
}

/// `coalescelist(LISTS...)`: the first list that is not empty.
fn coalescelist(args: FuncArgs) -> Result<Value, String> {
    args.iter()
        .find(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        .cloned()
        .ok_or_else(|| "every list is empty".to_string())
}

/// `compact(LIST)`: the list without nulls and empty strings.
fn compact(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Array(
        list_arg(&args, 0)
            .iter()
            .filter(|v| !v.is_null() && v.as_str() != Some(""))
            .cloned()
            .collect(),
    ))
}

/// `chunklist(LIST, SIZE)`: the list cut into lists of `SIZE` (0: one chunk).
fn chunklist(args: FuncArgs) -> Result<Value, String> {
    let list = list_arg(&args, 0);
    let size = int_arg(&args, 1, "the chunk size")?;
    let size = usize::try_from(size)
        .map_err(|_| format!("the chunk size must not be negative, got {size}"))?;
    if size == 0 {
        return Ok(Value::Array(vec![Value::Array(list.to_vec())]));
    }
    Ok(Value::Array(
        list.chunks(size)
            .map(|c| Value::Array(c.to_vec()))
            .collect(),
    ))
}

/// `setunion(LISTS...)`: every element of any list, once.
fn setunion(args: FuncArgs) -> Result<Value, String> {
    if args.is_empty() {
        return Err("expected at least one list".to_string());
    }
    let all = args
        .iter()
        .flat_map(|l| l.as_array().cloned().unwrap_or_default());
    Ok(Value::Array(dedup(all)))
}

/// `one(LIST)`: null for an empty list, the element of a one-element list, else an error.
fn one(args: FuncArgs) -> Result<Value, String> {
    match list_arg(&args, 0) {
        [] => Ok(Value::Null),
        [only] => Ok(only.clone()),
        more => Err(format!(
            "the list must have at most one element, it has {}",
            more.len()
        )),
    }
}

fn bools(list: &[Value]) -> Result<Vec<bool>, String> {
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            to_bool(v).ok_or_else(|| {
                format!(
                    "element {i} must be a bool, got {} {}",
                    type_name(v),
                    show(v)
                )
            })
        })
        .collect()
}

fn alltrue(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(
        bools(list_arg(&args, 0))?.into_iter().all(|b| b),
    ))
}

fn anytrue(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::Bool(
        bools(list_arg(&args, 0))?.into_iter().any(|b| b),
    ))
}

/// `sum(LIST)`: the sum of the numbers (an integer when they all are).
fn sum(args: FuncArgs) -> Result<Value, String> {
    let list = list_arg(&args, 0);
    if list.is_empty() {
        return Err("cannot sum an empty list".to_string());
    }
    let nums = list
        .iter()
        .enumerate()
        .map(|(i, v)| {
            to_number(v).ok_or_else(|| {
                format!(
                    "element {i} must be a number, got {} {}",
                    type_name(v),
                    show(v)
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ints: Option<Vec<i64>> = nums
        .iter()
        .map(|v| v.as_number().and_then(Number::as_i64))
        .collect();
    if let Some(total) = ints.and_then(|is| is.into_iter().try_fold(0i64, i64::checked_add)) {
        return Ok(Value::from(total));
    }
    number(nums.iter().map(as_f64).sum())
}

/// `tolist(LIST)`: the list itself (HCL has no separate set type).
fn tolist(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        v @ (Value::Array(_) | Value::Null) => Ok(v.clone()),
        other => Err(format!("cannot convert a {} to a list", type_name(other))),
    }
}

/// `toset(LIST)`: the list without duplicates; strings or numbers sorted, as Terraform orders
/// its sets.
fn toset(args: FuncArgs) -> Result<Value, String> {
    let list = match &args[0] {
        Value::Array(list) => list,
        Value::Null => return Ok(Value::Null),
        other => return Err(format!("cannot convert a {} to a set", type_name(other))),
    };
    let mut set = dedup(list.iter().cloned());
    if set.iter().all(Value::is_string) {
        set.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    } else if set.iter().all(Value::is_number) {
        set.sort_by(compare_numbers);
    }
    Ok(Value::Array(set))
}

fn tomap(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        v @ (Value::Object(_) | Value::Null) => Ok(v.clone()),
        other => Err(format!("cannot convert a {} to a map", type_name(other))),
    }
}

fn tostring(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        Value::Null => Ok(Value::Null),
        v => to_str(v)
            .map(Value::String)
            .ok_or_else(|| format!("cannot convert a {} to a string", type_name(v))),
    }
}

fn tonumber(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        Value::Null => Ok(Value::Null),
        v => to_number(v).ok_or_else(|| format!("cannot convert {} to a number", show(v))),
    }
}

fn tobool(args: FuncArgs) -> Result<Value, String> {
    match &args[0] {
        Value::Null => Ok(Value::Null),
        v => to_bool(v)
            .map(Value::Bool)
            .ok_or_else(|| format!("cannot convert {} to a bool", show(v))),
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers

fn abs(args: FuncArgs) -> Result<Value, String> {
    match args[0].as_number().and_then(Number::as_i64) {
        Some(i) if i != i64::MIN => Ok(Value::from(i.abs())),
        _ => number(num_arg(&args, 0).abs()),
    }
}

fn ceil(args: FuncArgs) -> Result<Value, String> {
    number(num_arg(&args, 0).ceil())
}

fn floor(args: FuncArgs) -> Result<Value, String> {
    number(num_arg(&args, 0).floor())
}

/// `log(NUMBER, BASE)`.
fn log(args: FuncArgs) -> Result<Value, String> {
    number(num_arg(&args, 0).ln() / num_arg(&args, 1).ln())
}

/// `pow(BASE, EXPONENT)` (exact for whole numbers that fit).
fn pow(args: FuncArgs) -> Result<Value, String> {
    let (base, exp) = (
        args[0].as_number().and_then(Number::as_i64),
        args[1].as_number().and_then(Number::as_u64),
    );
    if let (Some(b), Some(e)) = (base, exp.and_then(|e| u32::try_from(e).ok())) {
        if let Some(r) = b.checked_pow(e) {
            return Ok(Value::from(r));
        }
    }
    number(num_arg(&args, 0).powf(num_arg(&args, 1)))
}

fn signum(args: FuncArgs) -> Result<Value, String> {
    let x = num_arg(&args, 0);
    Ok(Value::from(if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }))
}

fn extreme(args: &FuncArgs, wanted: Ordering) -> Result<Value, String> {
    let mut best: Option<&Value> = None;
    for v in args.iter() {
        if best.is_none_or(|b| compare_numbers(v, b) == wanted) {
            best = Some(v);
        }
    }
    best.cloned()
        .ok_or_else(|| "expected at least one number".to_string())
}

fn max(args: FuncArgs) -> Result<Value, String> {
    extreme(&args, Ordering::Greater)
}

fn min(args: FuncArgs) -> Result<Value, String> {
    extreme(&args, Ordering::Less)
}

/// `parseint(STRING, BASE)`: an integer written in base 2 to 62 (digits `0-9a-zA-Z`; up to
/// base 36 letters are case-insensitive, above it `a-z` are 10–35 and `A-Z` 36–61).
fn parseint(args: FuncArgs) -> Result<Value, String> {
    let s = str_arg(&args, 0);
    let base = int_arg(&args, 1, "the base")?;
    if !(2..=62).contains(&base) {
        return Err(format!("the base must be between 2 and 62, got {base}"));
    }
    let bad = || format!("cannot parse {s:?} as a base {base} integer");
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let mut acc: i128 = 0;
    for c in digits.chars() {
        let d = match c {
            '0'..='9' => c as i128 - '0' as i128,
            'a'..='z' => c as i128 - 'a' as i128 + 10,
            'A'..='Z' if base <= 36 => c as i128 - 'A' as i128 + 10,
            'A'..='Z' => c as i128 - 'A' as i128 + 36,
            _ => return Err(bad()),
        };
        if d >= base as i128 {
            return Err(bad());
        }
        acc = acc
            .checked_mul(base as i128)
            .and_then(|a| a.checked_add(d))
            .filter(|a| *a <= u64::MAX as i128)
            .ok_or_else(|| format!("{s:?} is too large"))?;
    }
    if negative {
        i64::try_from(-acc)
            .map(Value::from)
            .map_err(|_| format!("{s:?} is too small"))
    } else {
        Ok(Value::from(acc as u64))
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding and hashing

/// `urlencode(STRING)`: query-string escaping (space → `+`), like Go's `url.QueryEscape`.
fn urlencode(args: FuncArgs) -> Result<Value, String> {
    let mut out = String::new();
    for b in str_arg(&args, 0).bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    Ok(Value::String(out))
}

/// `yamldecode(STRING)`: the value of a single YAML document (merge keys `<<` applied; scalar
/// keys become strings; tags are ignored).
fn yamldecode(args: FuncArgs) -> Result<Value, String> {
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(str_arg(&args, 0)).map_err(|e| format!("not YAML: {e}"))?;
    doc.apply_merge().map_err(|e| format!("not YAML: {e}"))?;
    from_yaml(doc)
}

fn from_yaml(v: serde_yaml_ng::Value) -> Result<Value, String> {
    use serde_yaml_ng::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                number(n.as_f64().unwrap_or(f64::NAN))
                    .map_err(|_| format!("the YAML number {n} has no HCL equivalent"))?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            Value::Array(items.into_iter().map(from_yaml).collect::<Result<_, _>>()?)
        }
        Y::Mapping(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let key = match from_yaml(k)? {
                    Value::Null => "null".to_string(),
                    other => to_str(&other).ok_or_else(|| {
                        format!("a YAML key must be a string, not a {}", type_name(&other))
                    })?,
                };
                out.insert(key, from_yaml(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => from_yaml(tagged.value)?,
    })
}

/// `yamlencode(VALUE)`: the value as a YAML document.
fn yamlencode(args: FuncArgs) -> Result<Value, String> {
    serde_yaml_ng::to_string(&args[0])
        .map(Value::String)
        .map_err(|e| e.to_string())
}

/// `base64gzip(STRING)`: the string gzip-compressed, then base64-encoded.
fn base64gzip(args: FuncArgs) -> Result<Value, String> {
    use base64::Engine as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(str_arg(&args, 0).as_bytes())
        .map_err(|e| e.to_string())?;
    let bytes = gz.finish().map_err(|e| e.to_string())?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

fn base64_of(bytes: &[u8]) -> Value {
    use base64::Engine as _;
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn sha256(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(hex::encode(Sha256::digest(str_arg(
        &args, 0,
    )))))
}

fn sha512(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(hex::encode(Sha512::digest(str_arg(
        &args, 0,
    )))))
}

fn base64sha256(args: FuncArgs) -> Result<Value, String> {
    Ok(base64_of(&Sha256::digest(str_arg(&args, 0))))
}

fn base64sha512(args: FuncArgs) -> Result<Value, String> {
    Ok(base64_of(&Sha512::digest(str_arg(&args, 0))))
}

// ---------------------------------------------------------------------------------------------
// Filesystem

/// `path` cleaned lexically: `.` dropped, `..` resolved against the previous component.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let last_is_normal =
                    matches!(out.components().next_back(), Some(Component::Normal(_)));
                if last_is_normal {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The config's directory as an absolute path.
fn absolute_config_dir() -> Result<PathBuf, String> {
    let dir = config_dir();
    if dir.is_absolute() {
        return Ok(dir);
    }
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    Ok(cwd.join(dir))
}

/// `abspath(PATH)`: the absolute, cleaned path. Unlike Terraform (relative to the process's
/// cwd), a relative path is taken from the config's directory. Symlinks are not resolved.
fn abspath(args: FuncArgs) -> Result<Value, String> {
    let path = absolute_config_dir()?.join(str_arg(&args, 0));
    Ok(Value::String(clean(&path).display().to_string()))
}

/// `dirname(PATH)`: all but the last element of the path (Go's `filepath.Dir`).
fn dirname(args: FuncArgs) -> Result<Value, String> {
    let p = str_arg(&args, 0);
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    let cleaned = if dir.is_empty() {
        ".".to_string()
    } else {
        clean(Path::new(dir)).display().to_string()
    };
    Ok(Value::String(cleaned))
}

/// `basename(PATH)`: the last element of the path (Go's `filepath.Base`).
fn basename(args: FuncArgs) -> Result<Value, String> {
    let p = str_arg(&args, 0);
    if p.is_empty() {
        return Ok(Value::String(".".to_string()));
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(Value::String("/".to_string()));
    }
    let base = trimmed.rsplit('/').next().unwrap_or(trimmed);
    Ok(Value::String(base.to_string()))
}

/// `pathexpand(PATH)`: a leading `~` replaced by the user's home directory.
fn pathexpand(args: FuncArgs) -> Result<Value, String> {
    let p = str_arg(&args, 0);
    let rest = match p.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        Some(_) => return Err(format!("cannot expand {p:?}: only ~ and ~/… are supported")),
        None => return Ok(Value::String(p.to_string())),
    };
    let home = dirs::home_dir().ok_or_else(|| "cannot find the home directory".to_string())?;
    Ok(Value::String(format!(
        "{}{rest}",
        home.display().to_string().trim_end_matches('/')
    )))
}

/// `fileexists(PATH)`: whether a regular file is there (a directory is an error).
fn fileexists(args: FuncArgs) -> Result<Value, String> {
    let p = config_dir().join(str_arg(&args, 0));
    match fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(Value::Bool(true)),
        Ok(_) => Err(format!("{} is not a regular file", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Bool(false)),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

/// The regular files under `base`, as sorted `/`-separated paths relative to it. Symlinks to
/// files count; symlinks to directories are not followed.
fn walk_files(base: &Path) -> Result<Vec<String>, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), String> {
        let entries =
            fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{prefix}{name}");
            let file_type = entry
                .file_type()
                .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
            if file_type.is_dir() {
                walk(&entry.path(), &format!("{rel}/"), out)?;
            } else if fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(base, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// `fileset(PATH, PATTERN)`: the files under `PATH` whose path relative to it matches the
/// pattern, sorted. Patterns: `*` (within one path element), `**` (any number of elements),
/// `?`, `[abc]` / `[a-z]` / `[!a]`, `{a,b}`. A missing directory gives an empty list.
fn fileset(args: FuncArgs) -> Result<Value, String> {
    let base = config_dir().join(str_arg(&args, 0));
    let pattern = str_arg(&args, 1);
    let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
    if !base.is_dir() {
        return Ok(Value::Array(Vec::new()));
    }
    let expanded = expand_braces(pattern)?;
    let patterns: Vec<Vec<&str>> = expanded
        .iter()
        .map(|p| p.split('/').filter(|s| !s.is_empty()).collect())
        .collect();
    let mut out = Vec::new();
    for file in walk_files(&base)? {
        let parts: Vec<&str> = file.split('/').collect();
        if patterns.iter().any(|pat| glob_path(pat, &parts)) {
            out.push(Value::String(file));
        }
    }
    Ok(Value::Array(out))
}

/// `a{b,c}d` → `abd`, `acd` (nested groups too).
fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let close = close.ok_or_else(|| format!("unclosed {{ in the pattern {pattern:?}"))?;
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let alt = &pattern[w[0] + 1..w[1]];
        out.extend(expand_braces(&format!("{head}{alt}{tail}"))?);
    }
    Ok(out)
}

/// Matches path elements against pattern elements (`**` matches any number of elements).
fn glob_path(pat: &[&str], path: &[&str]) -> bool {
    match (pat.split_first(), path.split_first()) {
        (None, _) => path.is_empty(),
        (Some((&"**", rest)), _) => (0..=path.len()).any(|skip| glob_path(rest, &path[skip..])),
        (Some((first, pat_rest)), Some((name, path_rest))) => {
            let (p, n): (Vec<char>, Vec<char>) = (first.chars().collect(), name.chars().collect());
            glob_name(&p, &n) && glob_path(pat_rest, path_rest)
        }
        (Some(_), None) => false,
    }
}

/// Matches one path element against one pattern element: `*`, `?`, `[abc]`, `[a-z]`, `[!a]`,
/// `\x`; an unclosed `[` is literal.
fn glob_name(pat: &[char], name: &[char]) -> bool {
    let Some((&p, pat_rest)) = pat.split_first() else {
        return name.is_empty();
    };
    if p == '*' {
        return (0..=name.len()).any(|skip| glob_name(pat_rest, &name[skip..]));
    }
    let Some((&c, name_rest)) = name.split_first() else {
        return false;
    };
    let class_end = (p == '[')
        .then(|| pat.iter().skip(2).position(|&x| x == ']').map(|i| i + 2))
        .flatten();
    match (p, class_end) {
        ('?', _) => glob_name(pat_rest, name_rest),
        ('[', Some(end)) => {
            let (negated, class) = match &pat[1..end] {
                ['!' | '^', rest @ ..] => (true, rest),
                class => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negated && glob_name(&pat[end + 1..], name_rest)
        }
        ('\\', _) if !pat_rest.is_empty() => {
            c == pat_rest[0] && glob_name(&pat_rest[1..], name_rest)
        }
        _ => c == p && glob_name(pat_rest, name_rest),
    }
}

fn filesha256(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(hex::encode(Sha256::digest(read_file(
        str_arg(&args, 0),
    )?))))
}

fn filesha512(args: FuncArgs) -> Result<Value, String> {
    Ok(Value::String(hex::encode(Sha512::digest(read_file(
        str_arg(&args, 0),
    )?))))
}

// ---------------------------------------------------------------------------------------------
// Templates

#[cfg(test)]
thread_local! {
    /// Tests render into their own directory (the environment is process-wide).
    static CACHE_ROOT: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Where rendered templates go: `$XDG_CACHE_HOME/cairn/templates`, else
/// `$HOME/.cache/cairn/templates`, else the system's temporary directory.
fn cache_root() -> PathBuf {
    #[cfg(test)]
    if let Some(root) = CACHE_ROOT.with(|c| c.borrow().clone()) {
        return root;
    }
    let env_dir = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = env_dir("XDG_CACHE_HOME")
        .or_else(|| env_dir("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("cairn").join("templates")
}

/// Creates `dir` and its missing parents, readable by this user only (rendered templates
/// may hold secrets).
fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// A name for a temporary file or directory no other writer uses.
fn temp_name(what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
    format!(".{what}.{}.{n}.tmp", std::process::id())
}

/// Renders `src` as an HCL template with `vars` and this module's functions; `name` (the
/// template's file, or "the template") prefixes errors, with line:column for syntax errors.
fn render(src: &str, name: &str, vars: Option<&Value>) -> Result<String, String> {
    let template = hcl::Template::from_str(src).map_err(|e| match e {
        hcl::Error::Parse(p) => format!(
            "{name}:{}:{}: {}",
            p.location().line(),
            p.location().column(),
            p.message()
        ),
        other => format!("{name}: {other}"),
    })?;
    // The config's functions (and `path`), then the template's own variables.
    let mut ctx = super::eval::base_context(&super::eval::config_dir());
    if let Some(vars) = vars.and_then(Value::as_object) {
        for (k, v) in vars {
            let ident = hcl::Identifier::new(k.as_str())
                .map_err(|_| format!("the template variable name {k:?} is not an identifier"))?;
            ctx.declare_var(ident, v.clone());
        }
    }
    template.evaluate(&ctx).map_err(|e| format!("{name}: {e}"))
}

/// The template file at `path` (relative to the config's directory), read as text.
fn read_template(path: &Path) -> Result<String, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// `templatefile(PATH, VARS)`: renders the file at `PATH` (relative to the config's
/// directory) with the variables of the object `VARS` (optional) and returns the path of a
/// file holding the result, as Waypoint does: `$CACHE/<sha256 of the text>/<name>`, `<name>`
/// being the template's without a trailing `.tpl`. The same text always gives the same path.
fn templatefile(args: FuncArgs) -> Result<Value, String> {
    let vars = optional_arg(&args, "VARS")?;
    let path = config_dir().join(str_arg(&args, 0));
    let text = render(&read_template(&path)?, &path.display().to_string(), vars)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".tpl").unwrap_or(&name);
    let name = if name.is_empty() { "template" } else { name };
    let out = write_rendered(name, text.as_bytes())?;
    Ok(Value::String(out.display().to_string()))
}

/// Writes `bytes` as `<cache>/<sha256>/<name>` unless it is already there; atomic (a temporary
/// file renamed into place), so concurrent loads never see a partial file.
fn write_rendered(name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let dir = cache_root().join(hex::encode(Sha256::digest(bytes)));
    let path = dir.join(name);
    if fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64) {
        return Ok(path);
    }
    create_private_dir(&dir)?;
    let tmp = dir.join(temp_name(name));
    let written = fs::write(&tmp, bytes)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))
        .and_then(|()| {
            fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))
        });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| path)
}

/// `templatedir(PATH, VARS)`: renders every regular file under the directory `PATH`
/// (recursively, names kept) into a new directory and returns its path:
/// `$CACHE/<sha256 over the relative paths, modes and rendered texts>`. File modes are kept.
fn templatedir(args: FuncArgs) -> Result<Value, String> {
    let vars = optional_arg(&args, "VARS")?;
    let base = config_dir().join(str_arg(&args, 0));
    if !base.is_dir() {
        return Err(match fs::metadata(&base) {
            Err(e) => format!("cannot read {}: {e}", base.display()),
            Ok(_) => format!("{} is not a directory", base.display()),
        });
    }
    let mut rendered = Vec::new();
    let mut hash = Sha256::new();
    for rel in walk_files(&base)? {
        let src = base.join(&rel);
        let text = render(&read_template(&src)?, &src.display().to_string(), vars)?;
        let perms = fs::metadata(&src).map(|m| m.permissions()).ok();
        #[cfg(unix)]
        let mode = perms.as_ref().map_or(0, |p| {
            use std::os::unix::fs::PermissionsExt as _;
            p.mode()
        });
        #[cfg(not(unix))]
        let mode = perms.as_ref().map_or(0, |p| u32::from(p.readonly()));
        hash.update(rel.as_bytes());
        hash.update([0]);
        hash.update(mode.to_be_bytes());
        hash.update((text.len() as u64).to_be_bytes());
        hash.update(text.as_bytes());
        rendered.push((rel, text, perms));
    }
    let root = cache_root();
    let dir = root.join(hex::encode(hash.finalize()));
    if dir.is_dir() {
        return Ok(Value::String(dir.display().to_string()));
    }
    create_private_dir(&root)?;
    let tmp = root.join(temp_name("dir"));
    let filled = (|| {
        for (rel, text, perms) in &rendered {
            let file = tmp.join(rel);
            if let Some(parent) = file.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            fs::write(&file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            if let Some(perms) = perms {
                fs::set_permissions(&file, perms.clone())
                    .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            }
        }
        fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))
    })();
    let placed = filled.and_then(|()| match fs::rename(&tmp, &dir) {
        Ok(()) => Ok(()),
        // Another load rendered the same directory first: theirs is identical.
        Err(_) if dir.is_dir() => Ok(()),
        Err(e) => Err(format!("cannot write {}: {e}", dir.display())),
    });
    if tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    placed.map(|()| Value::String(dir.display().to_string()))
}

/// `templatestring(TEMPLATE, VARS)`: the string rendered as a template, as text. A template
/// written as a literal in the config must escape its sequences (`$${x}`, `%%{ if … }`), or
/// the config's own evaluation interpolates them first.
fn templatestring(args: FuncArgs) -> Result<Value, String> {
    let vars = optional_arg(&args, "VARS")?;
    render(str_arg(&args, 0), "the template", vars).map(Value::String)
}

// ---------------------------------------------------------------------------------------------
// Time

fn parse_timestamp(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{s:?} is not an RFC 3339 timestamp (like \"2024-05-01T12:00:00Z\")"))
}

/// A Go duration that is not negative (`"90s"`, `"1h30m"`, `"1.5m"`), as a config's
/// `timeout = "…"` fields write it.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration(s.trim())? {
        ns if ns < 0 => Err(format!(
            "{s:?} is negative: a duration such as \"90s\" or \"10m\""
        )),
        ns => Ok(std::time::Duration::from_nanos(ns as u64)),
    }
}

/// A Go duration (`"1h30m"`, `"-2.5s"`, `"300ms"`) in nanoseconds.
fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a duration (like \"1h30m\", \"-10s\" or \"250ms\")");
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut part = whole.checked_mul(scale).ok_or_else(bad)?;
        let mut divisor: i128 = 1;
        for d in frac.chars() {
            let d = d.to_digit(10).ok_or_else(bad)? as i128;
            divisor = divisor.saturating_mul(10);
            part += d * scale / divisor;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = after;
    }
    let total = if negative { -total } else { total };
    i64::try_from(total).map_err(|_| format!("the duration {s:?} is too long"))
}

/// `timeadd(TIMESTAMP, DURATION)`: the RFC 3339 timestamp moved by a Go duration; the result
/// keeps the timestamp's offset and whole seconds, as Terraform's does.
fn timeadd(args: FuncArgs) -> Result<Value, String> {
    let t = parse_timestamp(str_arg(&args, 0))?;
    let nanos = parse_duration(str_arg(&args, 1))?;
    let moved = t
        .checked_add(time::Duration::nanoseconds(nanos))
        .ok_or_else(|| "the result is out of range".to_string())?;
    format_time("YYYY-MM-DD'T'hh:mm:ssZ", moved).map(Value::String)
}

/// `formatdate(SPEC, TIMESTAMP)`: the timestamp formatted with Terraform's spec: `YYYY`, `YY`,
/// `MMMM`, `MMM`, `MM`, `M`, `DD`, `D`, `EEEE`, `EEE`, `hh`, `h`, `HH`, `H`, `AA`, `aa`, `mm`,
/// `m`, `ss`, `s`, `ZZZZZ`, `ZZZZ`, `ZZZ`, `Z`; `'text'` is literal (`''` a quote).
fn formatdate(args: FuncArgs) -> Result<Value, String> {
    let t = parse_timestamp(str_arg(&args, 1))?;
    format_time(str_arg(&args, 0), t).map(Value::String)
}

fn format_time(spec: &str, t: time::OffsetDateTime) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = spec.chars().collect();
    let mut i = 0;
    let offset = t.offset();
    let (off_h, off_m) = (offset.whole_hours(), offset.minutes_past_hour());
    let off_sign = if offset.is_negative() { '-' } else { '+' };
    let (off_h, off_m) = (off_h.unsigned_abs(), off_m.unsigned_abs());
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            let end = chars[i + 1..]
                .iter()
                .position(|&q| q == '\'')
                .map(|p| p + i + 1)
                .ok_or_else(|| "unterminated quoted literal in the format".to_string())?;
            out.extend(&chars[i + 1..end]);
            i = end + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        let token: String = chars[i..i + run].iter().collect();
        let month = t.month().to_string();
        let weekday = t.weekday().to_string();
        let text = match token.as_str() {
            "YYYY" => format!("{:04}", t.year()),
            "YY" => format!("{:02}", t.year().rem_euclid(100)),
            "MMMM" => month,
            "MMM" => month.chars().take(3).collect(),
            "MM" => format!("{:02}", u8::from(t.month())),
            "M" => u8::from(t.month()).to_string(),
            "DD" => format!("{:02}", t.day()),
            "D" => t.day().to_string(),
            "EEEE" => weekday,
            "EEE" => weekday.chars().take(3).collect(),
            "hh" => format!("{:02}", t.hour()),
            "h" => t.hour().to_string(),
            "HH" => format!("{hour12:02}"),
            "H" => hour12.to_string(),
            "AA" => if t.hour() < 12 { "AM" } else { "PM" }.to_string(),
            "aa" => if t.hour() < 12 { "am" } else { "pm" }.to_string(),
            "mm" => format!("{:02}", t.minute()),
            "m" => t.minute().to_string(),
            "ss" => format!("{:02}", t.second()),
            "s" => t.second().to_string(),
            "ZZZZZ" => format!("{off_sign}{off_h:02}:{off_m:02}"),
            "ZZZZ" => format!("{off_sign}{off_h:02}{off_m:02}"),
            "ZZZ" if offset.is_utc() => "UTC".to_string(),
            "ZZZ" => format!("{off_sign}{off_h:02}{off_m:02}"),
            "Z" if offset.is_utc() => "Z".to_string(),
            "Z" => format!("{off_sign}{off_h:02}:{off_m:02}"),
            other => {
                return Err(format!(
                    "invalid date format verb {other:?} (quote literal letters: '{other}')"
                ))
            }
        };
        out.push_str(&text);
        i += run;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders templates under `dir` on this thread until dropped.
    struct CacheGuard(Option<PathBuf>);

    impl Drop for CacheGuard {
        fn drop(&mut self) {
            let prev = self.0.take();
            CACHE_ROOT.with(|c| *c.borrow_mut() = prev);
        }
    }

    fn cache_in(dir: &Path) -> CacheGuard {
        CacheGuard(CACHE_ROOT.with(|c| c.borrow_mut().replace(dir.to_path_buf())))
    }

    /// Makes `dir` the config's directory on this thread until the guard drops.
    fn enter(dir: &Path) -> super::super::eval::EnvGuard {
        super::super::eval::enter(dir, &crate::config::Inputs::default())
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Evaluates the HCL expression `src` with this module's functions.
    fn eval(src: &str) -> Result<Value, String> {
        let body = hcl::parse(&format!("x = {src}\n")).map_err(|e| format!("parse: {e}"))?;
        let attr = body
            .attributes()
            .next()
            .ok_or_else(|| "no attribute".to_string())?;
        let mut ctx = Context::new();
        declare(&mut ctx);
        attr.expr().evaluate(&ctx).map_err(|e| e.to_string())
    }

    fn ok(src: &str) -> Value {
        eval(src).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn err(src: &str) -> String {
        match eval(src) {
            Ok(v) => panic!("{src}: expected an error, got {v}"),
            Err(e) => e,
        }
    }

    /// `ok(src)` compared with the value of the HCL expression `expected`.
    fn check(src: &str, expected: &str) {
        let want = hcl::parse(&format!("x = {expected}\n"))
            .ok()
            .and_then(|b| b.attributes().next().map(|a| a.expr().clone()))
            .and_then(|e| e.evaluate(&Context::new()).ok())
            .unwrap_or_else(|| panic!("bad expected value {expected}"));
        assert_eq!(ok(src), want, "{src}");
    }

    fn text(v: Value) -> String {
        v.as_str()
            .unwrap_or_else(|| panic!("not a string: {v}"))
            .to_string()
    }

    #[test]
    fn names_match_the_declared_functions() {
        let declared: Vec<&str> = definitions().into_iter().map(|(n, _)| n).collect();
        assert_eq!(declared, NAMES);
        let eval_names = super::super::eval::FUNCTIONS;
        for name in NAMES {
            assert!(!eval_names.contains(name), "{name} is also in eval.rs");
        }
    }

    #[test]
    fn format_verbs() {
        check(r#"format("Hello, %s!", "Ander")"#, r#""Hello, Ander!""#);
        check(
            r#"format("There are %d lights", 4)"#,
            r#""There are 4 lights""#,
        );
        check(
            r#"format("%05.2f|%-4d|%4s|%%", 3.14159, 7, "ab")"#,
            r#""03.14|7   |  ab|%""#,
        );
        check(
            r#"format("%q %v %v %t", "a\"b", 1.5, [1, "x"], true)"#,
            r#""\"a\\\"b\" 1.5 [1,\"x\"] true""#,
        );
        check(
            r#"format("%x %X %o %b %+d", 255, 255, 8, 5, 3)"#,
            r#""ff FF 10 101 +3""#,
        );
        check(
            r#"format("%e %g %g", 1234.5, 0.5, 1000000)"#,
            r#""1.234500e+03 0.5 1e+06""#,
        );
        check(r#"format("%[2]s-%[1]s", "a", "b")"#, r#""b-a""#);
        check(r#"format("%d", "12")"#, r#""12""#);
        assert!(err(r#"format("%d %d", 1)"#).contains("not enough arguments"));
        assert!(err(r#"format("%d", 1, 2)"#).contains("argument 2 is not used"));
        assert!(err(r#"format("%d", 1.5)"#).contains("needs a whole number"));
        assert!(err(r#"format("%s", [1])"#).contains("needs a string"));
        check(
            r#"formatlist("%s=%d", ["a", "b"], [1, 2])"#,
            r#"["a=1", "b=2"]"#,
        );
        check(r#"formatlist("x-%s", ["a", "b"])"#, r#"["x-a", "x-b"]"#);
        assert!(err(r#"formatlist("%s%s", ["a"], ["b", "c"])"#).contains("length"));
    }

    #[test]
    fn string_functions() {
        check(r#"join(", ", ["a", "b"], ["c"])"#, r#""a, b, c""#);
        check(r#"split(",", "a,b,,c")"#, r#"["a", "b", "", "c"]"#);
        check(r#"replace("1 + 2 + 3", "+", "-")"#, r#""1 - 2 - 3""#);
        assert!(err(r#"replace("abc", "/b/", "x")"#).contains("not supported"));
        check(r#"substr("hello world", 1, 4)"#, r#""ello""#);
        check(r#"substr("hello world", -5, -1)"#, r#""world""#);
        check(r#"substr("héllo", 1, 100)"#, r#""éllo""#);
        check(r#"title("hello world-wide")"#, r#""Hello World-Wide""#);
        check(r#"trim("?!hello?!", "!?")"#, r#""hello""#);
        check(r#"trimprefix("helloworld", "hello")"#, r#""world""#);
        check(r#"trimsuffix("helloworld", "world")"#, r#""hello""#);
        check(r#"chomp("hello\n\r\n")"#, r#""hello""#);
        check(r#"indent(2, "a\nb\n")"#, r#""a\n  b\n  ""#);
        check(r#"strrev("abc")"#, r#""cba""#);
        check(
            r#"[startswith("hello", "he"), endswith("hello", "lo"), strcontains("hello", "x")]"#,
            "[true, true, false]",
        );
    }

    #[test]
    fn collection_functions() {
        check(
            r#"[length("héllo"), length([1, 2]), length({a = 1})]"#,
            "[5, 2, 1]",
        );
        assert!(err("length(5)").contains("needs a string, list or object"));
        check(r#"concat(["a"], ["b", "c"])"#, r#"["a", "b", "c"]"#);
        check(
            r#"[contains(["a", "b"], "b"), contains([1], 2)]"#,
            "[true, false]",
        );
        check(r#"distinct(["a", "b", "a", "c"])"#, r#"["a", "b", "c"]"#);
        check(r#"element(["a", "b", "c"], 4)"#, r#""b""#);
        assert!(err("element([], 0)").contains("empty list"));
        check("flatten([[1, [2]], [], 3])", "[1, 2, 3]");
        check(r#"index(["a", "b"], "b")"#, "1");
        assert!(err(r#"index(["a"], "z")"#).contains(r#""z" is not in the list"#));
        check(r#"keys({b = 1, a = 2})"#, r#"["a", "b"]"#);
        check(r#"values({b = 1, a = 2})"#, "[2, 1]");
        check(r#"lookup({a = 1}, "a")"#, "1");
        check(r#"lookup({a = 1}, "b", "dflt")"#, r#""dflt""#);
        assert!(err(r#"lookup({a = 1}, "b")"#).contains("no key \"b\""));
        check(
            r#"merge({a = 1, b = 2}, null, {b = 3, c = 4})"#,
            "{a = 1, b = 3, c = 4}",
        );
        check("range(3)", "[0, 1, 2]");
        check("range(1, 4)", "[1, 2, 3]");
        check("range(4, 1)", "[4, 3, 2]");
        check("range(0, 1, 0.25)", "[0, 0.25, 0.5, 0.75]");
        assert!(err("range(0, 10, 0)").contains("must not be zero"));
        assert!(err("range(1, 2, 3, 4)").contains("expected 1 to 3 arguments"));
        check("reverse([1, 2, 3])", "[3, 2, 1]");
        check(r#"slice(["a", "b", "c", "d"], 1, 3)"#, r#"["b", "c"]"#);
        assert!(err(r#"slice(["a", "b", "c"], 0, 5)"#).starts_with(
            "error calling function `slice`: the end index 5 is out of range for a list of 3"
        ));
        check(r#"sort(["b", "a", 10])"#, r#"["10", "a", "b"]"#);
        check(r#"zipmap(["a", "b"], [1, 2])"#, "{a = 1, b = 2}");
        check(r#"coalesce(null, "", "b")"#, r#""b""#);
        check("coalescelist([], [1])", "[1]");
        check(r#"compact(["a", "", null, "b"])"#, r#"["a", "b"]"#);
        check("chunklist([1, 2, 3], 2)", "[[1, 2], [3]]");
        check(r#"setunion(["a", "b"], ["b", "c"])"#, r#"["a", "b", "c"]"#);
        check(r#"[one([]), one(["x"])]"#, r#"[null, "x"]"#);
        assert!(err("one([1, 2])").contains("at most one element"));
        check(
            r#"[alltrue([true, "true"]), anytrue([false]), alltrue([])]"#,
            "[true, false, true]",
        );
        check("[sum([1, 2, 3]), sum([1, 0.5])]", "[6, 1.5]");
        check(r#"toset(["b", "a", "b"])"#, r#"["a", "b"]"#);
        check(r#"tolist(["a"])"#, r#"["a"]"#);
        check(r#"tomap({a = 1})"#, "{a = 1}");
        check(
            r#"[tostring(5), tonumber("42"), tonumber("1.5"), tobool("true")]"#,
            r#"["5", 42, 1.5, true]"#,
        );
        assert!(err(r#"tonumber("x")"#).contains("cannot convert \"x\" to a number"));
    }

    #[test]
    fn integers_stay_integers() {
        assert_eq!(ok("abs(-3)"), Value::from(3));
        assert_eq!(ok("pow(2, 10)"), Value::from(1024));
        assert_eq!(ok("sum([1, 2])"), Value::from(3));
        assert!(ok("abs(-3)").as_number().is_some_and(|n| !n.is_f64()));
    }

    #[test]
    fn number_functions() {
        check(
            "[abs(-1.5), ceil(1.2), floor(-1.2), signum(-4), signum(0)]",
            "[1.5, 2, -2, -1, 0]",
        );
        check("[log(16, 2), pow(3, 2), pow(4, 0.5)]", "[4, 9, 2]");
        check("[max(1, 5, 3), min(4, -2.5)]", "[5, -2.5]");
        check("max([1, 7]...)", "7");
        assert!(err("max()").contains("at least one number"));
        check(
            r#"[parseint("100", 10), parseint("FF", 16), parseint("-1010", 2), parseint("zZ", 62)]"#,
            "[100, 255, -10, 2231]",
        );
        assert!(err(r#"parseint("12x", 10)"#).contains("cannot parse \"12x\" as a base 10 integer"));
        assert!(err(r#"parseint("1", 1)"#).contains("between 2 and 62"));
    }

    #[test]
    fn wrong_argument_types_are_errors() {
        let e = err(r#"element("abc", 1)"#);
        assert!(e.contains("element") && e.contains("array"), "{e}");
        let e = err(r#"abs("x")"#);
        assert!(e.contains("`number`"), "{e}");
        let e = err(r#"element(["a"], 0.5)"#);
        assert!(
            e.contains("the index must be a whole number, got 0.5"),
            "{e}"
        );
    }

    #[test]
    fn encoding_functions() {
        check(r#"urlencode("a b&c=d/é")"#, r#""a+b%26c%3Dd%2F%C3%A9""#);
        check(
            r#"sha256("hello")"#,
            r#""2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824""#,
        );
        assert_eq!(text(ok(r#"sha512("")"#)).len(), 128);
        check(
            r#"base64sha256("hello")"#,
            r#""LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=""#,
        );
        let gz = text(ok(r#"base64gzip("hello")"#));
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(gz)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, "hello");
    }

    #[test]
    fn yamldecode_of_a_map_with_a_nested_list() {
        check(
            r#"yamldecode("name: web\nports:\n  - 80\n  - 443\nopts: {debug: true, ratio: 0.5}\n")"#,
            r#"{name = "web", ports = [80, 443], opts = {debug = true, ratio = 0.5}}"#,
        );
        check(r#"yamldecode("")"#, "null");
        check(
            r#"yamldecode("base: &b {a: 1}\nx:\n  <<: *b\n  c: 2\n")"#,
            "{base = {a = 1}, x = {a = 1, c = 2}}",
        );
        assert!(err(r#"yamldecode("a: [1")"#).contains("not YAML"));
        assert!(err(r#"yamldecode("a: 1\n---\nb: 2\n")"#).contains("not YAML"));
        let round = ok(r#"yamldecode(yamlencode({a = [1, "two"], b = {c = true}}))"#);
        assert_eq!(round, ok(r#"{a = [1, "two"], b = {c = true}}"#));
    }

    #[test]
    fn filesystem_functions() {
        let dir = tempdir();
        let root = dir.path();
        write(&root.join("a.txt"), "hello");
        write(&root.join("sub/b.txt"), "b");
        write(&root.join("sub/deep/c.md"), "c");
        let _env = enter(root);
        check(
            r#"[fileexists("a.txt"), fileexists("nope.txt")]"#,
            "[true, false]",
        );
        assert!(err(r#"fileexists("sub")"#).contains("is not a regular file"));
        check(r#"fileset(".", "*.txt")"#, r#"["a.txt"]"#);
        check(r#"fileset(".", "**/*.txt")"#, r#"["a.txt", "sub/b.txt"]"#);
        check(
            r#"fileset(".", "**")"#,
            r#"["a.txt", "sub/b.txt", "sub/deep/c.md"]"#,
        );
        check(
            r#"fileset("sub", "{*.txt,deep/?.md}")"#,
            r#"["b.txt", "deep/c.md"]"#,
        );
        check(r#"fileset(".", "sub/[a-b].txt")"#, r#"["sub/b.txt"]"#);
        check(r#"fileset("missing", "*")"#, "[]");
        check(r#"fileset(".", "s?b/[!a]*")"#, r#"["sub/b.txt"]"#);
        check(r#"fileset(".", "sub/**/*.md")"#, r#"["sub/deep/c.md"]"#);
        check(
            r#"filesha256("a.txt")"#,
            r#""2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824""#,
        );
        assert!(err(r#"filesha256("nope")"#).contains(&root.join("nope").display().to_string()));
        let abs = text(ok(r#"abspath("sub/../a.txt")"#));
        assert_eq!(abs, root.join("a.txt").display().to_string());
        check(r#"abspath("/x/./y/../z")"#, r#""/x/z""#);
        check(
            r#"[dirname("foo/bar/baz.txt"), dirname("baz"), dirname("/a"), dirname("a/b/")]"#,
            r#"["foo/bar", ".", "/", "a/b"]"#,
        );
        check(
            r#"[basename("foo/bar/baz.txt"), basename("a/b/"), basename("/"), basename("")]"#,
            r#"["baz.txt", "b", "/", "."]"#,
        );
        let home = dirs::home_dir().map(|h| h.display().to_string());
        if let Some(home) = home {
            assert_eq!(
                text(ok(r#"pathexpand("~/x")"#)),
                format!("{}/x", home.trim_end_matches('/'))
            );
        }
        check(r#"pathexpand("/etc")"#, r#""/etc""#);
    }

    #[test]
    fn templatefile_returns_the_path_of_the_rendered_text() {
        let dir = tempdir();
        let cache = tempdir();
        let _cache = cache_in(cache.path());
        let conf = dir.path().join("conf");
        write(
            &conf.join("tpl/Dockerfile.tpl"),
            "FROM ${base}\n%{ for p in ports ~}\nEXPOSE ${p}\n%{ endfor ~}\n%{ if debug }ENV DEBUG=1\n%{ endif }",
        );
        let _env = enter(&conf);
        let call = r#"templatefile("tpl/Dockerfile.tpl", {base = "alpine", ports = [80, 443], debug = true})"#;
        let path = text(ok(call));
        assert!(
            path.starts_with(&cache.path().display().to_string()),
            "{path}"
        );
        assert!(path.ends_with("/Dockerfile"), "{path}");
        let rendered = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            rendered,
            "FROM alpine\nEXPOSE 80\nEXPOSE 443\nENV DEBUG=1\n"
        );
        assert_eq!(text(ok(call)), path, "the same path for the same text");
        let dir_name = Path::new(&path)
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned());
        assert_eq!(
            dir_name,
            Some(hex::encode(Sha256::digest(rendered.as_bytes())))
        );
        // No temporary file left behind.
        let leftovers = fs::read_dir(Path::new(&path).parent().unwrap_or(Path::new("/")))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 1);
        // VARS is optional, and a template can call the functions of this module.
        write(
            &conf.join("plain.txt"),
            "${upper_first} ${title(\"x y\")}\n",
        );
        let e = err(r#"templatefile("plain.txt")"#);
        assert!(e.contains("plain.txt") && e.contains("upper_first"), "{e}");
        write(&conf.join("plain.txt"), "${title(\"x y\")}\n");
        let p = text(ok(r#"templatefile("plain.txt")"#));
        assert!(p.ends_with("/plain.txt"));
        assert_eq!(fs::read_to_string(&p).ok().as_deref(), Some("X Y\n"));
    }

    #[test]
    fn templatefile_errors_name_the_file() {
        let dir = tempdir();
        let cache = tempdir();
        let _cache = cache_in(cache.path());
        let _env = enter(dir.path());
        let missing = dir.path().join("missing.tpl");
        let e = err(r#"templatefile("missing.tpl", {})"#);
        assert!(
            e.contains(&format!(
                "cannot read {}: No such file or directory",
                missing.display()
            )),
            "{e}"
        );
        write(&dir.path().join("bad.tpl"), "line one\n${ 1 + }\n");
        let e = err(r#"templatefile("bad.tpl", {})"#);
        let bad = dir.path().join("bad.tpl").display().to_string();
        assert!(e.contains(&format!("{bad}:2:")), "{e}");
        assert!(err(r#"templatefile("bad.tpl", {}, {})"#).contains("at most one"));
        assert!(err(r#"templatefile("bad.tpl", "x")"#).contains("object"));
    }

    #[test]
    fn templatedir_renders_nested_files() {
        let dir = tempdir();
        let cache = tempdir();
        let _cache = cache_in(cache.path());
        let src = dir.path().join("site");
        write(&src.join("index.html"), "<h1>${name}</h1>\n");
        write(&src.join("conf/app.conf"), "port = ${port}\n");
        write(
            &src.join("conf/deep/x.txt"),
            "%{ if port > 80 }high%{ else }low%{ endif }",
        );
        let _env = enter(dir.path());
        let call = r#"templatedir("site", {name = "Cairn", port = 8080})"#;
        let out = PathBuf::from(text(ok(call)));
        assert!(out.starts_with(cache.path()));
        let read =
            |rel: &str| fs::read_to_string(out.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(read("index.html"), "<h1>Cairn</h1>\n");
        assert_eq!(read("conf/app.conf"), "port = 8080\n");
        assert_eq!(read("conf/deep/x.txt"), "high");
        assert_eq!(
            PathBuf::from(text(ok(call))),
            out,
            "the same directory twice"
        );
        let other = PathBuf::from(text(ok(r#"templatedir("site", {name = "X", port = 1})"#)));
        assert_ne!(other, out);
        let entries = fs::read_dir(cache.path()).map(|d| d.count()).unwrap_or(0);
        assert_eq!(entries, 2, "no temporary directory left behind");
        assert!(err(r#"templatedir("nope", {})"#).contains("cannot read"));
    }

    #[test]
    fn templatestring_renders_text() {
        check(
            r#"templatestring("Hi $${name}%%{ for x in xs }-$${x}%%{ endfor }", {name = "a", xs = [1, 2]})"#,
            r#""Hi a-1-2""#,
        );
        check(r#"templatestring("plain")"#, r#""plain""#);
        assert!(err(r#"templatestring("$${nope}", {})"#).contains("undefined variable `nope`"));
    }

    #[test]
    fn time_functions() {
        check(
            r#"timeadd("2024-01-01T00:00:00Z", "1h30m")"#,
            r#""2024-01-01T01:30:00Z""#,
        );
        check(
            r#"timeadd("2024-01-01T00:00:00+02:00", "-24h")"#,
            r#""2023-12-31T00:00:00+02:00""#,
        );
        check(
            r#"timeadd("2024-01-01T00:00:00Z", "1.5s")"#,
            r#""2024-01-01T00:00:01Z""#,
        );
        assert!(err(r#"timeadd("2024-01-01T00:00:00Z", "1 day")"#).contains("is not a duration"));
        assert!(err(r#"timeadd("yesterday", "1h")"#).contains("not an RFC 3339 timestamp"));
        check(
            r#"formatdate("DD MMM YYYY hh:mm ZZZ", "2018-01-02T23:12:01Z")"#,
            r#""02 Jan 2018 23:12 UTC""#,
        );
        check(
            r#"formatdate("EEEE, MMMM D, YYYY 'at' H:mmaa ZZZZZ", "2018-01-02T23:12:01-08:00")"#,
            r#""Tuesday, January 2, 2018 at 11:12pm -08:00""#,
        );
        check(
            r#"formatdate("YYYYMMDDhhmmss", "2018-01-02T03:04:05Z")"#,
            r#""20180102030405""#,
        );
        assert!(
            err(r#"formatdate("Q", "2018-01-02T03:04:05Z")"#).contains("invalid date format verb")
        );
    }
}
