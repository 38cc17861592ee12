//! The docker plugins accept every field that real `waypoint.hcl` files give
//! them (issue 15, item 5): each `use "docker"` / `use "docker-pull"` stanza
//! of `../shared/waypoint-corpus`, field by field, is offered to the plugin
//! of its stage, which must not call the field unknown. (Whole files are
//! evaluated elsewhere; values here may be variables, so only the names are
//! checked, each with a null value.)

use std::path::{Path, PathBuf};

use cairn_cli::plugins::{Catalog, PluginError};

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/waypoint-corpus");
    dir.is_dir().then_some(dir)
}

fn hcl_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read corpus").flatten() {
        let p = e.path();
        if p.is_dir() {
            hcl_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "hcl") {
            out.push(p);
        }
    }
}

/// (stage, plugin, field) of every docker stanza under `body`; `stage` is
/// the nearest enclosing `build`, `registry`, `deploy` or `release` block.
fn docker_fields(body: &hcl::Body, stage: &str, out: &mut Vec<(String, String, String)>) {
    for block in body.blocks() {
        let id = block.identifier();
        let label = block.labels().first().map(|l| l.as_str().to_string());
        match (id, label.as_deref()) {
            ("use", Some(plugin @ ("docker" | "docker-pull"))) => {
                for a in block.body().attributes() {
                    out.push((stage.into(), plugin.into(), a.key().to_string()));
                }
                for b in block.body().blocks() {
                    out.push((stage.into(), plugin.into(), b.identifier().to_string()));
                }
            }
            // `workspace "x" { use … }` and the like stay in their stage.
            ("build" | "registry" | "deploy" | "release", _) => {
                docker_fields(block.body(), id, out)
            }
            _ => docker_fields(block.body(), stage, out),
        }
    }
}

#[test]
fn docker_plugins_accept_every_field_the_corpus_gives_them() {
    let Some(dir) = corpus() else {
        eprintln!("!!!! SKIPPED: ../shared/waypoint-corpus is not there");
        return;
    };
    let mut files = Vec::new();
    hcl_files(&dir, &mut files);
    files.sort();
    let catalog = Catalog::builtin();
    let mut checked = 0;
    let mut unknown = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let body: hcl::Body = match hcl::parse(&text) {
            Ok(b) => b,
            Err(e) => panic!("{} does not parse: {e}", file.display()),
        };
        let mut fields = Vec::new();
        docker_fields(&body, "", &mut fields);
        for (stage, plugin, field) in fields {
            let config = serde_json::json!({ field.as_str(): null });
            let made = match stage.as_str() {
                "build" => catalog.builder(&plugin, &config).map(|_| ()),
                "registry" => catalog.registry(&plugin, &config).map(|_| ()),
                "deploy" => catalog.platform(&plugin, &config).map(|_| ()),
                "release" => catalog.releaser(&plugin, &config).map(|_| ()),
                other => panic!("{}: use \"{plugin}\" in a {other:?} block", file.display()),
            };
            checked += 1;
            match made {
                Err(PluginError::Config { message, .. }) if message.contains("unknown field") => {
                    unknown.push(format!(
                        "{}: {stage} {plugin}: {field}: {message}",
                        file.display()
                    ))
                }
                Err(PluginError::UnknownPlugin { .. }) => unknown.push(format!(
                    "{}: {stage} has no plugin {plugin:?}",
                    file.display()
                )),
                _ => {}
            }
        }
    }
    eprintln!(
        "{checked} docker fields checked in {} corpus files",
        files.len()
    );
    assert!(
        checked >= 50,
        "the corpus has more docker fields than {checked}"
    );
    assert!(unknown.is_empty(), "refused:\n{}", unknown.join("\n"));
}
