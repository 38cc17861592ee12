//! `cairn fmt`: rewrite config files in the canonical layout (what `terraform fmt` does to
//! HCL), keeping every comment and the blank-line structure.
//!
//! The rewrite is line based, driven by a tokenizer pass ([`scan`]) that knows quoted strings,
//! `${…}`/`%{…}` templates, heredocs (`<<EOF`, `<<-EOF`) and comments (`#`, `//`, `/* */`), so
//! brackets and `=` inside them never count. The rules ([`format_source`]):
//!
//! - 2 spaces of indentation per level of `{ }`, `[ ]`, `( )` that spans lines (several brackets
//!   opened on one line make one level; a line starting with closers is indented at the level
//!   they return to); tabs in the indentation become spaces;
//! - heredoc bodies, their closing marker and the continuation lines of a string or a
//!   `/* */` comment are kept byte for byte;
//! - one space on each side of an attribute's `=`, and the `=` of consecutive one-line
//!   attributes (or object entries) at the same level aligned; a blank line, a comment line, a
//!   block or a value spanning lines ends the group;
//! - trailing whitespace removed; at most one blank line in a row; no blank line at the start
//!   of the file, right after a line ending with `{`, `[` or `(`, or before a line starting with
//!   `}`, `]` or `)`; one final newline;
//! - a file whose lines all end with CRLF keeps CRLF; a byte order mark is kept.
//!
//! Safety: the text before and after is parsed (hcl-edit) and compared as `hcl::Body`, which
//! ignores layout and comments; when they differ nothing is written and the file is named as
//! a bug of `cairn fmt`. The JSON form (`*.hcl.json`) is left as it is: re-indenting it needs a
//! JSON parser that keeps the key order, and this build's `serde_json` has no
//! `preserve_order`.

use std::path::{Path, PathBuf};

use super::Global;

/// `cairn fmt [--check] [--diff] [FILE…]`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = "\
What changes (what `terraform fmt` does to HCL; comments and blank lines are kept):
  - 2 spaces of indentation per level of { }, [ ], ( ) spanning lines; tabs become spaces
  - one space around an attribute's `=`, and the `=` of consecutive one-line attributes
    (or object entries) at the same level aligned; a blank line, a comment line or a block
    ends the group
  - trailing whitespace removed; at most one blank line in a row; no blank line after an
    opening `{` or before a closing `}`; one final newline
  - heredoc bodies (<<EOF, <<-EOF) and everything inside strings and /* */ comments are kept
    as they are

The result is parsed again and compared with the original, layout and comments aside: if
they differ, nothing is written (that is a bug in cairn fmt). A file that does not parse is
reported with its file:line:column and nothing is written. JSON files (cairn.hcl.json) are
left as they are.

Examples:
  cairn fmt                      format the config here (cairn.hcl, else waypoint.hcl…)
  cairn fmt --check              exit 1, listing what would change; write nothing (for CI)
  cairn fmt --diff               format, and show what changed
  cairn fmt --check --diff a.hcl b/waypoint.hcl")]
pub struct FmtArgs {
    /// Write nothing: list the files that are not formatted and exit 1 if there are any.
    #[arg(long)]
    pub check: bool,
    /// Show the changes as a unified diff (with --check: the changes it would make).
    #[arg(long)]
    pub diff: bool,
    /// The files (or directories, for the config in each) to format; relative paths are
    /// taken from -C DIR. Default: the config that other commands read in -C DIR (cairn.hcl,
    /// cairn.hcl.json, waypoint.hcl, waypoint.hcl.json: the first that exists).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Why a text could not be formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FmtError {
    /// The text does not parse: line and column (1-based) and the parser's message.
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// The formatted text would not mean the same as the original: a bug of this formatter.
    Changed(String),
}

/// What happened to one file.
enum Outcome {
    Unchanged,
    Changed { old: String, new: String },
    Skipped(String),
}

pub fn run(g: &Global, args: &FmtArgs) -> anyhow::Result<i32> {
    let dir = g.dir();
    let files: Vec<PathBuf> = if args.files.is_empty() {
        vec![crate::config::find(&dir)?]
    } else {
        let mut v = Vec::new();
        for f in &args.files {
            let p = if f.is_absolute() {
                f.clone()
            } else {
                dir.join(f)
            };
            if p.is_dir() {
                v.push(crate::config::find(&p)?);
            } else {
                v.push(p);
            }
        }
        v
    };

    // Everything is formatted (and checked) before anything is written.
    let mut errors = Vec::new();
    let mut outcomes = Vec::new();
    for file in &files {
        match format_file(file) {
            Ok(o) => outcomes.push((file, o)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        eprintln!("nothing was written");
        return Ok(1);
    }

    let mut changed = 0usize;
    for (file, outcome) in &outcomes {
        match outcome {
            Outcome::Unchanged => {}
            Outcome::Skipped(why) => eprintln!("note: {}: left as it is: {why}", file.display()),
            Outcome::Changed { old, new } => {
                changed += 1;
                if args.diff {
                    print!("{}", unified_diff(&file.display().to_string(), old, new));
                }
                if args.check {
                    println!("would reformat {}", file.display());
                } else {
                    write_atomic(file, new.as_bytes())?;
                    println!("formatted {}", file.display());
                }
            }
        }
    }
    let n = outcomes.len();
    let files_word = |n: usize| if n == 1 { "file" } else { "files" };
    if args.check && changed > 0 {
        eprintln!(
            "{changed} {} of {n} not formatted: run `cairn fmt` to rewrite {}",
            files_word(changed),
            if changed == 1 { "it" } else { "them" }
        );
        return Ok(1);
    }
    if changed == 0 {
        let skipped = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Skipped(_)))
            .count();
        if skipped < n {
            println!(
                "{} {} already formatted",
                n - skipped,
                files_word(n - skipped)
            );
        }
    }
    Ok(0)
}

fn format_file(file: &Path) -> anyhow::Result<Outcome> {
    let is_json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let bytes = std::fs::read(file)
        .map_err(|e| anyhow::anyhow!("{}: cannot read it: {e}", file.display()))?;
    let Ok(old) = String::from_utf8(bytes) else {
        anyhow::bail!("{}: not UTF-8 text", file.display());
    };
    if is_json {
        return Ok(Outcome::Skipped(
            "cairn fmt does not rewrite the JSON form (it would need a JSON parser that keeps \
             the order of keys, which this build lacks)"
                .into(),
        ));
    }
    match format_hcl(&old) {
        Ok(new) if new == old => Ok(Outcome::Unchanged),
        Ok(new) => Ok(Outcome::Changed { old, new }),
        Err(FmtError::Syntax {
            line,
            column,
            message,
        }) => Err(anyhow::anyhow!(
            "{}:{line}:{column}: {}",
            file.display(),
            message.trim_end()
        )),
        Err(FmtError::Changed(why)) => Err(anyhow::anyhow!(
            "{}: formatting would change what the file means ({why}); this is a bug in cairn \
             fmt, please report it with the file",
            file.display()
        )),
    }
}

/// Write `data` to `path` through a temporary file in the same directory and a rename, so a
/// reader sees the old file or the new one, never a part. Keeps the permissions of the file
/// it replaces.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    // Through a symbolic link: replace the file it points to, not the link.
    let resolved;
    let path = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            resolved = std::fs::canonicalize(path)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            resolved.as_path()
        }
        _ => path,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cairn.hcl".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(data)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("cannot write {}: {e}", path.display());
    }
    Ok(())
}

/// Format HCL text and check that the result means the same (see the module doc).
pub fn format_hcl(src: &str) -> Result<String, FmtError> {
    format_checked(src, format_source)
}

/// `rewrite(src)`, refused unless it parses to the same structure as `src`.
fn format_checked(src: &str, rewrite: impl Fn(&str) -> String) -> Result<String, FmtError> {
    let old = parse(src)?;
    let out = rewrite(src);
    let new = parse(&out).map_err(|e| match e {
        FmtError::Syntax {
            line,
            column,
            message,
        } => FmtError::Changed(format!(
            "the result does not parse at {line}:{column}: {}",
            message.trim_end()
        )),
        other => other,
    })?;
    if old != new {
        return Err(FmtError::Changed(
            "its attributes or blocks would differ".into(),
        ));
    }
    Ok(out)
}

/// The structure of `src`, layout and comments aside.
fn parse(src: &str) -> Result<hcl::Body, FmtError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    hcl::edit::parser::parse_body(src)
        .map(hcl::Body::from)
        .map_err(|e| {
            let l = e.location();
            FmtError::Syntax {
                line: l.line(),
                column: l.column(),
                message: e.message().to_string(),
            }
        })
}

/// Whether two HCL texts parse to the same structure, layout and comments aside.
pub fn same_structure(a: &str, b: &str) -> Result<bool, FmtError> {
    Ok(parse(a)? == parse(b)?)
}

// ---------------------------------------------------------------------------------------------
// The tokenizer pass

/// Where a line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// In the body: the line is re-indented.
    Code,
    /// Inside a `/* */` comment: kept as it is (trailing whitespace aside).
    Comment,
    /// Inside a string, a template or a heredoc body: kept byte for byte.
    Template,
    /// The closing marker of a heredoc: kept as it is.
    HeredocEnd,
}

/// Where a line ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// In the body (or in a `#`/`//` comment): trailing whitespace may go.
    Code,
    /// Inside a `/* */` comment.
    Comment,
    /// Inside a string, a template or a heredoc: trailing whitespace is content.
    Template,
}

/// What the tokenizer learnt about one line.
#[derive(Debug, Clone)]
struct Line {
    start: Start,
    end: End,
    /// The brackets of the body's own syntax on this line, in order (`true`: an opener).
    brackets: Vec<bool>,
    /// Closers before anything else on the line.
    leading_closers: usize,
    /// Byte offset of the attribute's `=`: the first lone `=` of the body outside the
    /// brackets the line opens, after something else.
    assign: Option<usize>,
    /// The number of entries of `brackets` before `assign`.
    assign_brackets: usize,
    /// A heredoc starts on this line.
    heredoc: bool,
    /// The last token of the body on the line (comments aside) opens a bracket.
    ends_with_opener: bool,
}

impl Line {
    /// The value after `=` ends on this line: the brackets after it balance out and no
    /// heredoc, string or comment goes on past the line.
    fn one_line_value(&self) -> bool {
        if self.assign.is_none() {
            return false;
        }
        let mut depth = 0i64;
        for &open in &self.brackets[self.assign_brackets..] {
            depth += if open { 1 } else { -1 };
            if depth < 0 {
                return false;
            }
        }
        depth == 0 && !self.heredoc && self.end == End::Code
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ctx {
    /// The body's own syntax (only ever the bottom of the stack).
    Body,
    /// `/* … */`.
    Comment,
    /// `"…"`.
    Quoted,
    /// `${…}` or `%{…}` inside a string or heredoc, with the depth of `{` opened inside it.
    Interp(u32),
    /// A heredoc body, until a line holding its marker.
    Heredoc(String),
}

/// What kind of token the tokenizer read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// Whitespace or a line comment.
    None,
    /// The start of a `/* */` comment.
    Comment,
    Open,
    Close,
    Other,
}

/// The heredoc opener at `b[i..]` (`<<ID` or `<<-ID`): its marker and where it ends.
fn heredoc_opener(b: &[u8], i: usize) -> Option<(String, usize)> {
    if b.get(i..i + 2) != Some(b"<<") {
        return None;
    }
    let mut j = i + 2;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    let start = j;
    match b.get(j) {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => j += 1,
        _ => return None,
    }
    while b
        .get(j)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
    {
        j += 1;
    }
    let marker = String::from_utf8_lossy(&b[start..j]).into_owned();
    Some((marker, j))
}

/// The tokenizer pass: one [`Line`] per line of `lines`.
fn scan(lines: &[&str]) -> Vec<Line> {
    let mut stack = vec![Ctx::Body];
    let mut out = Vec::with_capacity(lines.len());
    for text in lines {
        let b = text.as_bytes();
        let mut i = 0;
        let start = match stack.last() {
            Some(Ctx::Heredoc(marker)) => {
                let t = b
                    .iter()
                    .position(|c| *c != b' ' && *c != b'\t')
                    .unwrap_or(b.len());
                if b[t..].starts_with(marker.as_bytes()) {
                    i = t + marker.len();
                    stack.pop();
                    Start::HeredocEnd
                } else {
                    Start::Template
                }
            }
            Some(Ctx::Comment) => Start::Comment,
            Some(Ctx::Quoted) | Some(Ctx::Interp(_)) => Start::Template,
            _ => Start::Code,
        };
        let mut line = Line {
            start,
            end: End::Code,
            brackets: Vec::new(),
            leading_closers: 0,
            assign: None,
            assign_brackets: 0,
            heredoc: false,
            ends_with_opener: false,
        };
        // Only tokens of the body count for these.
        let mut leading = start == Start::Code;
        let mut seen_token = false;
        let mut depth = 0i64;
        let mut pending: Option<String> = None;
        while i < b.len() {
            let c = b[i];
            let next = b.get(i + 1).copied();
            let base = stack.len() == 1;
            match stack.last_mut() {
                Some(Ctx::Body) | Some(Ctx::Interp(_)) => {
                    // The token read, for the line's properties (body only).
                    let mut tok = Tok::Other;
                    match c {
                        b' ' | b'\t' | b'\r' | b'\x0c' => {
                            tok = Tok::None;
                            i += 1;
                        }
                        b'#' => {
                            tok = Tok::None;
                            i = b.len();
                        }
                        b'/' if next == Some(b'/') => {
                            tok = Tok::None;
                            i = b.len();
                        }
                        b'/' if next == Some(b'*') => {
                            tok = Tok::Comment;
                            stack.push(Ctx::Comment);
                            i += 2;
                        }
                        b'"' => {
                            stack.push(Ctx::Quoted);
                            i += 1;
                        }
                        b'<' if next == Some(b'<') => match heredoc_opener(b, i) {
                            Some((marker, end)) => {
                                line.heredoc = true;
                                pending = Some(marker);
                                i = end;
                            }
                            None => i += 2,
                        },
                        b'{' | b'[' | b'(' => {
                            tok = Tok::Open;
                            if base {
                                line.brackets.push(true);
                                depth += 1;
                            } else if let (b'{', Some(Ctx::Interp(d))) = (c, stack.last_mut()) {
                                *d += 1;
                            }
                            i += 1;
                        }
                        b'}' | b']' | b')' => {
                            tok = Tok::Close;
                            if base {
                                if leading {
                                    line.leading_closers += 1;
                                }
                                line.brackets.push(false);
                                depth -= 1;
                            } else if let (b'}', Some(Ctx::Interp(d))) = (c, stack.last_mut()) {
                                if *d == 0 {
                                    stack.pop();
                                } else {
                                    *d -= 1;
                                }
                            }
                            i += 1;
                        }
                        b'=' if next == Some(b'=') || next == Some(b'>') => i += 2,
                        b'!' | b'<' | b'>' if next == Some(b'=') => i += 2,
                        b'=' => {
                            if base && depth == 0 && seen_token && line.assign.is_none() {
                                line.assign = Some(i);
                                line.assign_brackets = line.brackets.len();
                            }
                            i += 1;
                        }
                        _ => i += 1,
                    }
                    if base {
                        match tok {
                            Tok::None => {}
                            Tok::Comment => leading = false,
                            Tok::Close => {
                                line.ends_with_opener = false;
                                seen_token = true;
                            }
                            Tok::Open | Tok::Other => {
                                line.ends_with_opener = tok == Tok::Open;
                                seen_token = true;
                                leading = false;
                            }
                        }
                    }
                }
                Some(Ctx::Comment) => match b[i..].windows(2).position(|w| w == b"*/") {
                    Some(p) => {
                        i += p + 2;
                        stack.pop();
                    }
                    None => i = b.len(),
                },
                Some(Ctx::Quoted) => match c {
                    b'\\' => i += 2,
                    b'"' => {
                        stack.pop();
                        i += 1;
                    }
                    b'$' | b'%' if next == Some(c) && b.get(i + 2) == Some(&b'{') => i += 3,
                    b'$' | b'%' if next == Some(b'{') => {
                        stack.push(Ctx::Interp(0));
                        i += 2;
                    }
                    _ => i += 1,
                },
                Some(Ctx::Heredoc(_)) => match c {
                    b'$' | b'%' if next == Some(c) && b.get(i + 2) == Some(&b'{') => i += 3,
                    b'$' | b'%' if next == Some(b'{') => {
                        stack.push(Ctx::Interp(0));
                        i += 2;
                    }
                    _ => i += 1,
                },
                None => {
                    // Never: the body stays at the bottom. Recover rather than panic.
                    stack.push(Ctx::Body);
                }
            }
        }
        line.end = match stack.last() {
            Some(Ctx::Body) | None => End::Code,
            Some(Ctx::Comment) => End::Comment,
            _ => End::Template,
        };
        if let Some(marker) = pending {
            stack.push(Ctx::Heredoc(marker));
        }
        out.push(line);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The rewrite

/// One line of the output, before the `=` are aligned.
#[derive(Debug)]
enum Out {
    /// A blank line of the body.
    Blank,
    /// Any text, final.
    Text(String),
    /// An attribute (or object entry) `LHS = RHS`, indented by `indent` levels.
    Assign {
        indent: usize,
        lhs: String,
        rhs: String,
        /// It may be aligned with its neighbours (its value fits on the line).
        align: bool,
    },
}

const INDENT: &str = "  ";

fn trim_trailing(s: &str) -> &str {
    s.trim_end_matches([' ', '\t', '\r', '\x0c'])
}

/// Remove `n` closers from the indentation stack (each entry: the brackets one line opened).
fn close(stack: &mut Vec<usize>, mut n: usize) {
    while n > 0 {
        let Some(top) = stack.last_mut() else { return };
        if *top > n {
            *top -= n;
            return;
        }
        n -= *top;
        stack.pop();
    }
}

/// The canonical layout of `src` (no check that it parses; see [`format_hcl`]).
pub fn format_source(src: &str) -> String {
    let (bom, body) = match src.strip_prefix('\u{feff}') {
        Some(rest) => ("\u{feff}", rest),
        None => ("", src),
    };
    // A file whose every line ends with CRLF keeps them; otherwise lone CRs at the end of a
    // body line are trailing whitespace.
    let crlf = body.contains("\r\n") && body.matches('\n').count() == body.matches("\r\n").count();
    let text = if crlf {
        body.replace("\r\n", "\n")
    } else {
        body.to_string()
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    let scanned = scan(&lines);

    let mut out: Vec<Out> = Vec::with_capacity(lines.len());
    // Whether the last line written ends with an opener (no blank line may follow it).
    let mut after_opener = false;
    let mut stack: Vec<usize> = Vec::new();
    for (text, line) in lines.iter().zip(&scanned) {
        let mut ends_with_opener = false;
        let mut blank = false;
        match line.start {
            Start::Code => {
                let content = text.trim_start_matches([' ', '\t']);
                let lead = text.len() - content.len();
                let content = if line.end == End::Template {
                    content
                } else {
                    trim_trailing(content)
                };
                if content.is_empty() {
                    blank = true;
                    let blank_before = matches!(out.last(), None | Some(Out::Blank));
                    if !blank_before && !after_opener {
                        out.push(Out::Blank);
                    }
                } else {
                    if line.leading_closers > 0 {
                        while matches!(out.last(), Some(Out::Blank)) {
                            out.pop();
                        }
                    }
                    let mut at = stack.clone();
                    close(&mut at, line.leading_closers);
                    let indent = at.len();
                    match line.assign {
                        Some(a) if a >= lead && a - lead < content.len() => {
                            let a = a - lead;
                            let lhs = trim_trailing(&content[..a]).to_string();
                            let rhs = content[a + 1..].trim_start_matches([' ', '\t']).to_string();
                            out.push(Out::Assign {
                                indent,
                                lhs,
                                rhs,
                                align: line.one_line_value(),
                            });
                        }
                        _ => out.push(Out::Text(format!("{}{content}", INDENT.repeat(indent)))),
                    }
                    ends_with_opener = line.ends_with_opener;
                }
            }
            Start::Comment | Start::HeredocEnd => {
                let t = if line.end == End::Template {
                    text
                } else {
                    trim_trailing(text)
                };
                out.push(Out::Text(t.to_string()));
                ends_with_opener = line.ends_with_opener;
            }
            Start::Template => out.push(Out::Text(text.to_string())),
        }
        if !blank {
            after_opener = ends_with_opener;
        }
        // The brackets of the line move the indentation of the next ones.
        let mut opened = 0usize;
        for &open in &line.brackets {
            if open {
                opened += 1;
            } else if opened > 0 {
                opened -= 1;
            } else {
                close(&mut stack, 1);
            }
        }
        if opened > 0 {
            stack.push(opened);
        }
    }
    while matches!(out.last(), Some(Out::Blank)) {
        out.pop();
    }

    // Align the `=` of each run of one-line attributes at the same level.
    let mut width = vec![0usize; out.len()];
    let mut i = 0;
    while i < out.len() {
        let Out::Assign {
            indent,
            align: true,
            ..
        } = &out[i]
        else {
            i += 1;
            continue;
        };
        let level = *indent;
        let mut j = i;
        let mut w = 0;
        while let Some(Out::Assign {
            indent,
            lhs,
            align: true,
            ..
        }) = out.get(j)
        {
            if *indent != level {
                break;
            }
            w = w.max(lhs.chars().count());
            j += 1;
        }
        for x in &mut width[i..j] {
            *x = w;
        }
        i = j;
    }

    let mut result = String::with_capacity(text.len() + 64);
    for (o, w) in out.iter().zip(width) {
        match o {
            Out::Blank => {}
            Out::Text(t) => result.push_str(t),
            Out::Assign {
                indent, lhs, rhs, ..
            } => {
                result.push_str(&INDENT.repeat(*indent));
                result.push_str(lhs);
                let pad = w.saturating_sub(lhs.chars().count());
                result.extend(std::iter::repeat_n(' ', pad));
                if rhs.is_empty() {
                    result.push_str(" =");
                } else {
                    result.push_str(" = ");
                    result.push_str(rhs);
                }
            }
        }
        result.push('\n');
    }
    if crlf {
        result = result.replace('\n', "\r\n");
    }
    format!("{bom}{result}")
}

// ---------------------------------------------------------------------------------------------
// Diff

/// A unified diff of `old` and `new` (3 lines of context), named `name`.
pub fn unified_diff(name: &str, old: &str, new: &str) -> String {
    // Lines with their `\n`, so that a missing final newline shows.
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let line = |prefix: char, l: &str| {
        let mut s = format!("{prefix}{}\n", l.strip_suffix('\n').unwrap_or(l));
        if !l.ends_with('\n') {
            s.push_str("\\ No newline at end of file\n");
        }
        s
    };
    let ops = diff_ops(&a, &b);
    const CONTEXT: usize = 3;
    let mut out = format!("--- {name}\n+++ {name} (formatted)\n");
    // Indices in `ops` of changes; hunks gather changes closer than 2*CONTEXT.
    let changes: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::Same(..)))
        .map(|(i, _)| i)
        .collect();
    let mut k = 0;
    while k < changes.len() {
        let first = changes[k];
        let mut last = first;
        while k + 1 < changes.len() && changes[k + 1] - last <= 2 * CONTEXT + 1 {
            k += 1;
            last = changes[k];
        }
        k += 1;
        let from = first.saturating_sub(CONTEXT);
        let to = (last + CONTEXT + 1).min(ops.len());
        let (mut a_start, mut b_start) = (None, None);
        let (mut a_len, mut b_len) = (0, 0);
        let mut body = String::new();
        for op in &ops[from..to] {
            match *op {
                Op::Same(i, j) => {
                    a_start.get_or_insert(i);
                    b_start.get_or_insert(j);
                    a_len += 1;
                    b_len += 1;
                    body.push_str(&line(' ', a[i]));
                }
                Op::Del(i, j) => {
                    a_start.get_or_insert(i);
                    b_start.get_or_insert(j);
                    a_len += 1;
                    body.push_str(&line('-', a[i]));
                }
                Op::Add(i, j) => {
                    a_start.get_or_insert(i);
                    b_start.get_or_insert(j);
                    b_len += 1;
                    body.push_str(&line('+', b[j]));
                }
            }
        }
        let range = |start: Option<usize>, len: usize| {
            let s = start.unwrap_or(0);
            if len == 0 {
                format!("{s},0")
            } else {
                format!("{},{len}", s + 1)
            }
        };
        out.push_str(&format!(
            "@@ -{} +{} @@\n{body}",
            range(a_start, a_len),
            range(b_start, b_len)
        ));
    }
    out
}

/// One step of a line diff; the indices are where it is in `a` and in `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same(usize, usize),
    Del(usize, usize),
    Add(usize, usize),
}

/// The steps from `a` to `b`: a longest common subsequence of the lines between the common
/// prefix and suffix (a whole replacement when that middle is too large to compare).
fn diff_ops(a: &[&str], b: &[&str]) -> Vec<Op> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops: Vec<Op> = (0..prefix).map(|i| Op::Same(i, i)).collect();
    if ma.len().saturating_mul(mb.len()) > 16_000_000 {
        ops.extend((0..ma.len()).map(|i| Op::Del(prefix + i, prefix)));
        ops.extend((0..mb.len()).map(|j| Op::Add(prefix + ma.len(), prefix + j)));
    } else {
        // lcs[i][j]: the longest common subsequence of ma[i..] and mb[j..].
        let (n, m) = (ma.len(), mb.len());
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * (m + 1) + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && ma[i] == mb[j] {
                ops.push(Op::Same(prefix + i, prefix + j));
                i += 1;
                j += 1;
            } else if j < m && (i == n || lcs[i * (m + 1) + j + 1] > lcs[(i + 1) * (m + 1) + j]) {
                ops.push(Op::Add(prefix + i, prefix + j));
                j += 1;
            } else {
                ops.push(Op::Del(prefix + i, prefix + j));
                i += 1;
            }
        }
    }
    let (sa, sb) = (a.len() - suffix, b.len() - suffix);
    ops.extend((0..suffix).map(|k| Op::Same(sa + k, sb + k)));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(src: &str) -> String {
        match format_hcl(src) {
            Ok(s) => s,
            Err(e) => panic!("format failed: {e:?}\n{src}"),
        }
    }

    /// Formatting `src` gives `want`, and formatting that again changes nothing.
    #[track_caller]
    fn check(src: &str, want: &str) {
        let got = fmt(src);
        assert_eq!(got, want, "\n--- got ---\n{got}\n--- want ---\n{want}");
        assert_eq!(fmt(&got), got, "not idempotent");
    }

    #[test]
    fn indents_by_nesting_and_aligns_equals() {
        check(
            "project=\"x\"\napp \"web\" {\nbuild {\n\tuse \"files\" {\n path = \".\"\n\t\t\texclude   =  [\"a\"]\n    }\n  }\n}\n",
            "project = \"x\"\napp \"web\" {\n  build {\n    use \"files\" {\n      path    = \".\"\n      exclude = [\"a\"]\n    }\n  }\n}\n",
        );
    }

    #[test]
    fn alignment_groups_break_at_blank_lines_comments_and_blocks() {
        check(
            "a = 1\nbbb = 2\n\ncc = 3\n# note\nd = 4\neeeee = 5\nx {\n}\nff = 6\n",
            "a   = 1\nbbb = 2\n\ncc = 3\n# note\nd     = 4\neeeee = 5\nx {\n}\nff = 6\n",
        );
        // A value spanning lines is not aligned (terraform fmt does the same), and its
        // entries form their own group.
        check(
            "aa = 1\nb = {\nc = 1\ndddd = \"x\"\n}\ne = 2\n",
            "aa = 1\nb = {\n  c    = 1\n  dddd = \"x\"\n}\ne = 2\n",
        );
    }

    #[test]
    fn blank_lines_are_squeezed_and_trimmed_around_braces() {
        check(
            "\n\nproject = \"x\"   \n\n\n\napp \"a\" {\n\n  deploy {\n\n\n    use \"p\" {}\n\n  }\n\n}\n\n\n",
            "project = \"x\"\n\napp \"a\" {\n  deploy {\n    use \"p\" {}\n  }\n}\n",
        );
        // A final newline is added.
        check("a = 1", "a = 1\n");
        check("", "");
    }

    #[test]
    fn brackets_in_strings_comments_and_heredocs_do_not_count() {
        let src = r#"a = "{[("  # {{{
b = "${foo("}")}" // ]]]
/* {
   [ ( */
c {
x = <<EOF
  {{ not code
   }
EOF
y = <<-EOT
    keep   
      this
    EOT
z = "$${not} %%{x} {"
}
"#;
        let want = r#"a = "{[("  # {{{
b = "${foo("}")}" // ]]]
/* {
   [ ( */
c {
  x = <<EOF
  {{ not code
   }
EOF
  y = <<-EOT
    keep   
      this
    EOT
  z = "$${not} %%{x} {"
}
"#;
        check(src, want);
    }

    #[test]
    fn multi_line_expressions_indent_per_line_not_per_bracket() {
        check(
            "x = dynamic(\"vault\", {\npath = \"a\"\nkey = \"b\"\n})\ny = [\n{\na = 1\n},\n{\na = 2\n}]\nz = [for s in l :\nupper(s)\n]\n",
            "x = dynamic(\"vault\", {\n  path = \"a\"\n  key  = \"b\"\n})\ny = [\n  {\n    a = 1\n  },\n  {\n    a = 2\n}]\nz = [for s in l :\n  upper(s)\n]\n",
        );
    }

    #[test]
    fn operators_are_not_assignments() {
        check(
            "a = b == c\nlong_name = d != e\nf = { for k, v in m : k => v if v >= 1 }\n",
            "a         = b == c\nlong_name = d != e\nf         = { for k, v in m : k => v if v >= 1 }\n",
        );
    }

    #[test]
    fn writes_replace_the_file_keeping_its_mode_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().expect("tempdir");
        let real = t.path().join("real.hcl");
        std::fs::write(&real, "a=1\n").expect("write");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let link = t.path().join("cairn.hcl");
        std::os::unix::fs::symlink("real.hcl", &link).expect("symlink");
        write_atomic(&link, b"a = 1\n").expect("write_atomic");
        assert!(std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&real).expect("read"), "a = 1\n");
        let mode = std::fs::metadata(&real).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        // No temporary file is left.
        assert_eq!(std::fs::read_dir(t.path()).expect("ls").count(), 2);
    }

    #[test]
    fn crlf_and_bom_are_kept() {
        check(
            "\u{feff}a=1\r\nbb = {\r\nc=2\r\n}\r\n",
            "\u{feff}a = 1\r\nbb = {\r\n  c = 2\r\n}\r\n",
        );
    }

    #[test]
    fn comments_are_kept_in_place() {
        check(
            "app \"a\" { # the app\n    # inside\n  path = \".\"   # where\n  labels = {} /* x */\n}\n# end\n",
            "app \"a\" { # the app\n  # inside\n  path   = \".\"   # where\n  labels = {} /* x */\n}\n# end\n",
        );
    }

    #[test]
    fn heredocs_and_templates_spanning_lines_are_kept() {
        // A heredoc inside brackets, and one ending a call.
        check(
            "a {\nx = [<<EOF\n  }\n\n\nEOF\n, \"b\"]\ny = f(<<-EOT\n   {\n   EOT\n)\n}\n",
            "a {\n  x = [<<EOF\n  }\n\n\nEOF\n    , \"b\"]\n  y = f(<<-EOT\n   {\n   EOT\n  )\n}\n",
        );
        // An interpolation spanning lines: its lines are the string's, kept as they are.
        check(
            "a {\nb = \"${join(\",\", [\n     \"x\",   \n  \"}\"])}\"\n}\n",
            "a {\n  b = \"${join(\",\", [\n     \"x\",   \n  \"}\"])}\"\n}\n",
        );
        // Directives and escapes in a heredoc; a marker-like word inside a line is not the end.
        check(
            "a {\nb = <<EOF\n%{ if true }{%{ endif } $${x} not EOF\nEOF\nc=1\n}\n",
            "a {\n  b = <<EOF\n%{ if true }{%{ endif } $${x} not EOF\nEOF\n  c = 1\n}\n",
        );
    }

    #[test]
    fn a_rewrite_that_changes_the_meaning_is_refused() {
        let src = "a = 1\n";
        let r = format_checked(src, |s| s.replace('1', "2"));
        assert!(matches!(r, Err(FmtError::Changed(_))), "{r:?}");
        let r = format_checked(src, |s| s.replace('1', "{"));
        assert!(matches!(r, Err(FmtError::Changed(_))), "{r:?}");
        // Layout and comments do not count.
        assert_eq!(
            format_checked(src, |_| "# hi\n  a   =  1 // one\n".into()),
            Ok("# hi\n  a   =  1 // one\n".into())
        );
    }

    #[test]
    fn a_syntax_error_is_located() {
        match format_hcl("project = \"x\"\napp \"a\" {\n  build = \n") {
            Err(FmtError::Syntax { line, .. }) => assert!(line >= 3, "line {line}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn examples_are_already_formatted() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for ex in [
            "examples/hello/cairn.hcl",
            "examples/docker-hello/cairn.hcl",
        ] {
            let Ok(src) = std::fs::read_to_string(root.join(ex)) else {
                continue;
            };
            assert_eq!(fmt(&src), src, "{ex}");
        }
    }

    /// Every `waypoint.hcl` of the shared corpus: formatting keeps its structure and is
    /// idempotent.
    #[test]
    fn corpus_formats_idempotently_keeping_structure() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/waypoint-corpus");
        let Ok(entries) = std::fs::read_dir(&corpus) else {
            eprintln!(
                "skipped: no corpus at {} (the shared Waypoint corpus is absent)",
                corpus.display()
            );
            return;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let file = e.path().join("waypoint.hcl");
            let Ok(src) = std::fs::read_to_string(&file) else {
                continue;
            };
            let once = match format_hcl(&src) {
                Ok(s) => s,
                Err(e) => panic!("{}: {e:?}", file.display()),
            };
            assert_eq!(
                same_structure(&src, &once),
                Ok(true),
                "{}: structure changed",
                file.display()
            );
            let twice = fmt(&once);
            assert_eq!(twice, once, "{}: not idempotent", file.display());
            n += 1;
        }
        assert!(n > 0, "no waypoint.hcl in {}", corpus.display());
    }

    #[test]
    fn diff_shows_changed_lines_with_context() {
        let d = unified_diff("f", "a\nb\nc\n", "a\nB\nc\n");
        assert_eq!(
            d,
            "--- f\n+++ f (formatted)\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
        );
        let d = unified_diff("f", "", "x\n");
        assert!(d.contains("@@ -0,0 +1,1 @@\n+x\n"), "{d}");
        let d = unified_diff("f", "a\n}", "a\n}\n");
        assert!(d.ends_with("-}\n\\ No newline at end of file\n+}\n"), "{d}");
    }
}
