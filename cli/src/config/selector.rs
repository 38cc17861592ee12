//! Label selectors, as Waypoint's `label "SELECTOR" { … }` scopes write them:
//! `waypoint/workspace == staging`, `env != prod and team == web`,
//! `(a == x || b == y) && c != z`, `tier in [web, api]`, `team` (the label is set).
//! Values may be quoted ("a b"). `and`/`&&`, `or`/`||`, `not`/`!` and parentheses work as
//! usual (`not` binds tightest, then `and`, then `or`).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Eq,
    Ne,
    And,
    Or,
    Not,
    Open,
    Close,
    In,
    ListOpen,
    ListClose,
    Comma,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            '[' => {
                chars.next();
                out.push(Tok::ListOpen);
            }
            ']' => {
                chars.next();
                out.push(Tok::ListClose);
            }
            ',' => {
                chars.next();
                out.push(Tok::Comma);
            }
            '=' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err("write == to compare".into());
                }
                out.push(Tok::Eq);
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Tok::Ne);
                } else {
                    out.push(Tok::Not);
                }
            }
            '&' => {
                chars.next();
                if chars.next() != Some('&') {
                    return Err("write && (or `and`)".into());
                }
                out.push(Tok::And);
            }
            '|' => {
                chars.next();
                if chars.next() != Some('|') {
                    return Err("write || (or `or`)".into());
                }
                out.push(Tok::Or);
            }
            '"' => {
                chars.next();
                let mut w = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => w.extend(chars.next()),
                        Some(c) => w.push(c),
                        None => return Err("unterminated quoted value".into()),
                    }
                }
                out.push(Tok::Word(w));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "()[],=!&|\"".contains(c) {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(match w.as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    "in" => Tok::In,
                    _ => Tok::Word(w),
                });
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    labels: &'a BTreeMap<String, String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<bool, String> {
        let mut v = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.next();
            v = self.and()? || v;
        }
        Ok(v)
    }

    fn and(&mut self) -> Result<bool, String> {
        let mut v = self.not()?;
        while self.peek() == Some(&Tok::And) {
            self.next();
            v = self.not()? && v;
        }
        Ok(v)
    }

    fn not(&mut self) -> Result<bool, String> {
        if self.peek() == Some(&Tok::Not) {
            self.next();
            return Ok(!self.not()?);
        }
        self.atom()
    }

    fn word(&mut self, what: &str) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            _ => Err(format!("expected {what}")),
        }
    }

    fn atom(&mut self) -> Result<bool, String> {
        if self.peek() == Some(&Tok::Open) {
            self.next();
            let v = self.or()?;
            if self.next() != Some(Tok::Close) {
                return Err("a `(` is not closed".into());
            }
            return Ok(v);
        }
        let key = self.word("a label name")?;
        let have = self.labels.get(&key);
        match self.peek() {
            Some(Tok::Eq) => {
                self.next();
                let want = self.word("a value after ==")?;
                Ok(have == Some(&want))
            }
            Some(Tok::Ne) => {
                self.next();
                let want = self.word("a value after !=")?;
                Ok(have != Some(&want))
            }
            Some(Tok::In) => {
                self.next();
                if self.next() != Some(Tok::ListOpen) {
                    return Err("write `in [a, b]`".into());
                }
                let mut any = false;
                loop {
                    let w = self.word("a value in the list")?;
                    any |= have == Some(&w);
                    match self.next() {
                        Some(Tok::Comma) => continue,
                        Some(Tok::ListClose) => break,
                        _ => return Err("a `[` is not closed".into()),
                    }
                }
                Ok(any)
            }
            _ => Ok(have.is_some()),
        }
    }
}

/// Whether `labels` satisfy `selector`, or why the selector cannot be read.
pub fn matches(selector: &str, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let toks = lex(selector)?;
    if toks.is_empty() {
        return Err("the selector is empty".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        labels,
    };
    let v = p.or()?;
    if p.pos < p.toks.len() {
        return Err(format!(
            "unexpected {:?} at token {}",
            p.toks[p.pos],
            p.pos + 1
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_labels() {
        let labels: BTreeMap<String, String> = [("waypoint/workspace", "staging"), ("team", "web")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let m = |s: &str| matches(s, &labels).expect("a valid selector");
        assert!(m("waypoint/workspace == staging"));
        assert!(!m("waypoint/workspace == production"));
        assert!(m("team != api and waypoint/workspace == \"staging\""));
        assert!(m("(team == api || team == web) && !missing"));
        assert!(m("team in [api, web]"));
        assert!(m("team"));
        assert!(!m("not team"));
        assert!(matches("team = web", &labels)
            .expect_err("bad")
            .contains("=="));
        assert!(matches("(team == web", &labels)
            .expect_err("bad")
            .contains("not closed"));
    }
}
