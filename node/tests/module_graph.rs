//! `node/src`'s module graph (issue 17): which top-level module's code uses which, read from
//! the sources (`crate::X` in code, not in comments or test modules). It must have no
//! cycles, and the picture in ARCHITECTURE.md (a mermaid graph between the
//! `module-graph` markers) must be exactly its transitive reduction (every arrow that no
//! longer path implies), so the picture cannot go stale.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "tests") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs")
            && p.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(p);
        }
    }
}

/// The code of a file without comments, string literals' contents and `#[cfg(test)]`
/// modules (a test module may use anything).
fn code_of(text: &str) -> String {
    // `#[cfg(test)] mod NAME {` runs to the end of its braces; test modules in their own
    // file (`#[cfg(test)] mod tests;`) are skipped by file name.
    let mut text = text.to_string();
    while let Some(at) = text.find("#[cfg(test)]") {
        let rest = &text[at..];
        let Some(open) = rest.find('{') else { break };
        let head = &rest[..open];
        if !head.contains("mod ") || head.contains(';') {
            // `#[cfg(test)]` on something else (or `mod tests;`): drop the attribute only.
            text.replace_range(at..at + "#[cfg(test)]".len(), "");
            continue;
        }
        let mut depth = 0usize;
        let mut end = text.len();
        for (i, c) in text[at + open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        text.replace_range(at..end, "");
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            // A char literal such as '"' must not open a string.
            '\'' => {
                let look: String = chars.clone().take(3).collect();
                if look.starts_with("\"'") || look.starts_with("\\\"'") {
                    for _ in 0..look.find('\'').map_or(0, |i| i + 1) {
                        chars.next();
                    }
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The modules `code` names as `crate::X` (also inside `use crate::{X, Y::…}`).
fn uses(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) {
                    found.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                found.insert(name);
            }
        }
        rest = after;
    }
    found
}

fn module_graph() -> Graph {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let top = |p: &Path| -> String {
        let rel = p.strip_prefix(&root).expect("under src");
        let first = rel.components().next().expect("a component");
        first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string()
    };
    let modules: BTreeSet<String> = files
        .iter()
        .map(|p| top(p))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut g: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in &files {
        let m = top(f);
        if !modules.contains(&m) {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(f).expect("read"));
        for used in uses(&code, &modules) {
            if used != m {
                g.get_mut(&m).expect("module").insert(used);
            }
        }
    }
    g
}

/// A cycle of `g`, if it has one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        g: &Graph,
        m: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(m.to_string(), Mark::Open);
        path.push(m.to_string());
        for n in g.get(m).into_iter().flatten() {
            match marks.get(n).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = path.iter().position(|p| p == n).expect("on the path");
                    let mut cycle = path[from..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(g, n, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(m.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in g.keys() {
        if marks.get(m).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(c) = visit(g, m, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The edges of ARCHITECTURE.md's picture: `a --> b` lines between the markers.
fn documented_graph() -> Graph {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    let start = doc
        .find("<!-- module-graph:start -->")
        .expect("ARCHITECTURE.md has a <!-- module-graph:start --> marker");
    let end = doc
        .find("<!-- module-graph:end -->")
        .expect("ARCHITECTURE.md has a <!-- module-graph:end --> marker");
    let mut g = Graph::new();
    let body = &doc[start + "<!-- module-graph:start -->".len()..end];
    for line in body.lines() {
        let line = line.trim();
        if let Some((a, b)) = line.split_once("-->") {
            g.entry(a.trim().to_string())
                .or_default()
                .insert(b.trim().to_string());
        } else if !line.is_empty() && line.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            g.entry(line.to_string()).or_default();
        }
    }
    g
}

/// The modules `from` reaches by one or more arrows.
fn reach(g: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&String> = g.get(from).into_iter().flatten().collect();
    while let Some(m) = todo.pop() {
        if seen.insert(m.clone()) {
            todo.extend(g.get(m).into_iter().flatten());
        }
    }
    seen
}

/// The arrows of a DAG that no longer path implies (its transitive reduction): the same
/// "who may use whom", drawn with fewer lines.
fn reduction(g: &Graph) -> Graph {
    g.iter()
        .map(|(a, bs)| {
            let kept = bs
                .iter()
                .filter(|b| !bs.iter().any(|c| c != *b && reach(g, c).contains(*b)))
                .cloned()
                .collect();
            (a.clone(), kept)
        })
        .collect()
}

#[test]
fn node_src_has_no_module_cycles_and_architecture_md_draws_it() {
    let g = module_graph();
    assert!(g.len() >= 10, "found the modules: {:?}", g.keys());
    if let Some(cycle) = find_cycle(&g) {
        panic!("node/src has a module cycle: {}", cycle.join(" -> "));
    }
    // The picture draws the reduction: an arrow the others imply is left out.
    let g = reduction(&g);
    let doc = documented_graph();
    let listing = |g: &Graph| {
        g.iter()
            .flat_map(|(a, bs)| {
                if bs.is_empty() {
                    vec![a.clone()]
                } else {
                    bs.iter().map(|b| format!("{a} --> {b}")).collect()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        listing(&doc),
        listing(&g),
        "ARCHITECTURE.md's module graph (left) is not node/src's (right): put the right one between the markers"
    );
}

#[test]
fn the_reader_finds_uses_and_cycles() {
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let code = code_of(
        "use crate::a::X; // crate::c in a comment\nlet s = \"crate::c in a string\";\nuse crate::{b, z};\n#[cfg(test)]\nmod tests { use crate::c; }\n",
    );
    assert_eq!(
        uses(&code, &modules),
        ["a", "b"].iter().map(|s| s.to_string()).collect()
    );
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert_eq!(find_cycle(&g), None);
    let mut with_shortcut = g.clone();
    with_shortcut.get_mut("a").expect("a").insert("c".into());
    assert_eq!(
        reduction(&with_shortcut),
        g,
        "a --> c is implied by a --> b --> c"
    );
    g.get_mut("c").expect("c").insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
