//! A nesting limit for native HCL, checked before parsing (issue 13): the
//! parser (hcl-rs) recurses once per level of `{`, `[`, `(`, string and
//! `${`/`%{` template, so a file nested a few thousand levels deep
//! overflowed the CLI's stack (SIGABRT). The JSON form has its own limit
//! (`json::MAX_DEPTH`).
//!
//! The scan knows just enough of the syntax to skip what does not nest:
//! comments (`#`, `//`, `/* */`), the text of quoted strings and heredocs
//! (`<<ID` / `<<-ID` up to a line holding only `ID`), and the escapes `$${`
//! and `%%{`. It judges nothing else: a malformed file passes it and gets
//! the parser's own error.

/// Deepest nesting accepted, as for the JSON form.
pub const MAX_NESTING: usize = 128;

/// Most lines (or comma-separated entries) one `{ … }` may hold. The
/// parser's objects are vector maps whose inserts compare every key before,
/// so an object of n keys costs n² (100,000 keys: 80 s of CPU); this keeps a
/// file well under a second. Counted generously: every line and comma
/// between the braces, comments and blank lines included.
pub const MAX_ENTRIES: usize = 10_000;

/// What [`check`] refused, and at which byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Nested deeper than [`MAX_NESTING`].
    Nesting(usize),
    /// A `{ … }` with more than [`MAX_ENTRIES`] lines or entries; the
    /// offset of its `{`.
    Entries(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Open {
    /// `{`, `[` or `(`: closed by this byte; where it opened and, for `{`,
    /// how many lines and commas it holds so far.
    Bracket(u8, usize, usize),
    /// `${` or `%{` in a string or heredoc: closed by `}`.
    Template,
    /// A quoted string.
    Str,
    /// A heredoc's text, ended by a line holding only this marker.
    Heredoc(String),
}

/// The first limit `src` goes past, if any (see [`Limit`]).
pub fn check(src: &str) -> Result<(), Limit> {
    let b = src.as_bytes();
    let at = |i: usize| b.get(i).copied();
    let mut stack: Vec<Open> = Vec::new();
    let mut line_start = true;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = at(i + 1);
        match stack.last() {
            Some(Open::Str) => match c {
                b'\\' => i += 1,
                b'"' => {
                    stack.pop();
                }
                b'$' | b'%' if next == Some(c) && at(i + 2) == Some(b'{') => i += 2,
                b'$' | b'%' if next == Some(b'{') => {
                    stack.push(Open::Template);
                    i += 1;
                }
                _ => {}
            },
            Some(Open::Heredoc(marker)) => {
                if line_start {
                    let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
                    if src[i..end].trim() == marker {
                        stack.pop();
                        i = end;
                        continue;
                    }
                }
                match c {
                    b'$' | b'%' if next == Some(c) && at(i + 2) == Some(b'{') => i += 2,
                    b'$' | b'%' if next == Some(b'{') => {
                        stack.push(Open::Template);
                        i += 1;
                    }
                    _ => {}
                }
            }
            // Code: the top level, inside brackets, or inside a template.
            _ => match c {
                b'#' => {
                    i = src[i..].find('\n').map_or(b.len(), |n| i + n);
                    continue;
                }
                b'/' if next == Some(b'/') => {
                    i = src[i..].find('\n').map_or(b.len(), |n| i + n);
                    continue;
                }
                b'/' if next == Some(b'*') => {
                    i = src[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
                    continue;
                }
                b'"' => stack.push(Open::Str),
                b'<' if next == Some(b'<') => {
                    let mut j = i + 2;
                    if at(j) == Some(b'-') {
                        j += 1;
                    }
                    let id_end = src[j..]
                        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '-'))
                        .map_or(b.len(), |n| j + n);
                    if id_end > j && at(id_end) == Some(b'\n') {
                        stack.push(Open::Heredoc(src[j..id_end].to_string()));
                        i = id_end + 1;
                        line_start = true;
                        if stack.len() > MAX_NESTING {
                            return Err(Limit::Nesting(i));
                        }
                        continue;
                    }
                }
                b'{' => stack.push(Open::Bracket(b'}', i, 0)),
                b'[' => stack.push(Open::Bracket(b']', i, 0)),
                b'(' => stack.push(Open::Bracket(b')', i, 0)),
                b'}' | b']' | b')'
                    if matches!(stack.last(), Some(Open::Bracket(close, _, _)) if *close == c)
                        || (c == b'}' && stack.last() == Some(&Open::Template)) =>
                {
                    stack.pop();
                }
                b'\n' | b',' => {
                    if let Some(Open::Bracket(b'}', at, n)) = stack.last_mut() {
                        *n += 1;
                        if *n > MAX_ENTRIES {
                            return Err(Limit::Entries(*at));
                        }
                    }
                }
                _ => {}
            },
        }
        if stack.len() > MAX_NESTING {
            return Err(Limit::Nesting(i));
        }
        line_start = c == b'\n';
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, n: usize) -> String {
        format!("x = {}1{}\n", open.repeat(n), close.repeat(n))
    }

    #[test]
    fn an_object_or_block_with_too_many_entries_is_refused_at_its_brace() {
        let object = |n: usize, sep: &str| {
            let entries: Vec<String> = (0..n).map(|i| format!("K{i} = \"v\"")).collect();
            format!("x = 1\nenv = {{{}}}\n", entries.join(sep))
        };
        // Every line break and comma between the braces counts: n entries
        // separated by either are n - 1 of them.
        assert_eq!(check(&object(MAX_ENTRIES + 1, "\n")), Ok(()));
        assert_eq!(
            check(&object(MAX_ENTRIES + 2, "\n")),
            Err(Limit::Entries(12))
        );
        assert_eq!(
            check(&object(MAX_ENTRIES + 2, ", ")),
            Err(Limit::Entries(12))
        );
        // Lists and strings are not objects; lines inside a heredoc are text.
        let list = format!("l = [{}]", "1,\n".repeat(MAX_ENTRIES * 2));
        assert_eq!(check(&list), Ok(()));
        let heredoc = format!(
            "b {{\n  t = <<EOT\n{}EOT\n}}\n",
            "line\n".repeat(MAX_ENTRIES * 2)
        );
        assert_eq!(check(&heredoc), Ok(()));
    }

    #[test]
    fn deep_nesting_of_any_kind_is_refused_where_it_goes_past_the_limit() {
        for (open, close) in [("[", "]"), ("(", ")"), ("{a = ", "}")] {
            assert_eq!(check(&nested(open, close, MAX_NESTING)), Ok(()), "{open}");
            let deep = nested(open, close, MAX_NESTING + 1);
            let at = check(&deep).expect_err(open);
            assert_eq!(at, Limit::Nesting(4 + MAX_NESTING * open.len()), "{open}");
        }
        let blocks = format!("{}{}", "b {\n".repeat(2_000), "}\n".repeat(2_000));
        assert!(check(&blocks).is_err());
        let templates = format!("x = \"{}\"", "${\"".repeat(1_000));
        assert!(check(&templates).is_err());
    }

    #[test]
    fn brackets_in_strings_comments_and_heredocs_do_not_count() {
        let many = "{[(".repeat(200);
        let src = format!(
            "a = \"{many}\"\n# {many}\n// {many}\n/* {many}\n*/\nb = <<EOT\n{many}\nEOT\nc = <<-EOT\n  {many}\n  EOT\nd = \"$${{ {many}\"\ne = \"\\\" {many}\"\n"
        );
        assert_eq!(check(&src), Ok(()));
    }

    #[test]
    fn templates_nest_inside_strings_and_heredocs() {
        let deep_in_string = format!(
            "a = \"${{{}1{}}}\"\n",
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        assert!(check(&deep_in_string).is_err());
        let deep_in_heredoc = format!(
            "a = <<EOT\n${{{}1{}}}\nEOT\n",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert!(check(&deep_in_heredoc).is_err());
        // After a template closes, the string goes on: its braces do not count.
        let src = format!("a = \"${{x}} {}\"\nb = [1]\n", "{".repeat(300));
        assert_eq!(check(&src), Ok(()));
    }
}
