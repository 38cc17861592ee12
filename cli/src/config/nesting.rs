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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Open {
    /// `{`, `[` or `(`: closed by this byte.
    Bracket(u8),
    /// `${` or `%{` in a string or heredoc: closed by `}`.
    Template,
    /// A quoted string.
    Str,
    /// A heredoc's text, ended by a line holding only this marker.
    Heredoc(String),
}

/// `Err(offset)`: the byte where the nesting first goes past [`MAX_NESTING`].
pub fn check(src: &str) -> Result<(), usize> {
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
                            return Err(i);
                        }
                        continue;
                    }
                }
                b'{' => stack.push(Open::Bracket(b'}')),
                b'[' => stack.push(Open::Bracket(b']')),
                b'(' => stack.push(Open::Bracket(b')')),
                b'}' | b']' | b')'
                    if matches!(stack.last(), Some(Open::Bracket(close)) if *close == c)
                        || (c == b'}' && stack.last() == Some(&Open::Template)) =>
                {
                    stack.pop();
                }
                _ => {}
            },
        }
        if stack.len() > MAX_NESTING {
            return Err(i);
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
    fn deep_nesting_of_any_kind_is_refused_where_it_goes_past_the_limit() {
        for (open, close) in [("[", "]"), ("(", ")"), ("{a = ", "}")] {
            assert_eq!(check(&nested(open, close, MAX_NESTING)), Ok(()), "{open}");
            let deep = nested(open, close, MAX_NESTING + 1);
            let at = check(&deep).expect_err(open);
            assert_eq!(at, 4 + MAX_NESTING * open.len(), "{open}");
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
