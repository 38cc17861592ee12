//! `cairn-plugin-stamp`: an example external plugin, built with `cairn-plugin-sdk`.
//!
//! - builder `stamp` (makes `stamp.Bundle`): copies the app's files into its data dir and
//!   adds a `STAMP` file saying what was built (`message` in the config is added to it);
//! - mapper `stamp.Bundle -> files.Artifact`: packs the bundle into a `.tar.gz`, which
//!   Cairn's built-in `process` platform (or the `files` registry) then takes.
//!
//! ```hcl
//! build  { use "stamp" { message = "hello" } }
//! deploy { use "process" { command = ["python3", "-m", "http.server"] } }
//! ```
//!
//! Install it as `cairn-plugin-stamp` in the project's `.cairn/plugins/`, in
//! `~/.config/cairn/plugins/`, or on `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_plugin_sdk::{ComponentKind, Ctx, Error, Plugin, Value};
use sha2::{Digest, Sha256};

fn check(config: &serde_json::Value) -> Result<(), Error> {
    if let Some(obj) = config.as_object() {
        for (k, v) in obj {
            match k.as_str() {
                "message" if v.is_string() => {}
                "message" => return Err(Error::field("message", "must be a string")),
                other => return Err(Error::field(other, "unknown field (stamp takes: message)")),
            }
        }
    }
    Ok(())
}

/// Copies the regular files under `from` into `to` (skipping `.git` and `.cairn`).
fn copy_tree(from: &Path, to: &Path, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name == ".git" || name == ".cairn" {
            continue;
        }
        let kind = e.file_type()?;
        if kind.is_dir() {
            copy_tree(&e.path(), &to.join(&name), out)?;
        } else if kind.is_file() {
            let n = std::fs::copy(e.path(), to.join(&name))?;
            out.push((name.to_string_lossy().into_owned(), n));
        }
    }
    Ok(())
}

fn build(ctx: &mut Ctx, config: &serde_json::Value) -> Result<Value, Error> {
    let message = config["message"].as_str().unwrap_or("").to_string();
    let dir = PathBuf::from(&ctx.info.data_dir).join(format!("v{}", ctx.info.sequence));
    let _ = std::fs::remove_dir_all(&dir);
    let source = PathBuf::from(&ctx.info.source_dir);
    let files = ctx.step("Copying the app's files", |_| {
        let mut files = Vec::new();
        copy_tree(&source, &dir, &mut files)?;
        Ok(files)
    })?;
    let stamp = format!(
        "{} v{} stamped by cairn-plugin-stamp{}{}\n",
        ctx.info.app,
        ctx.info.sequence,
        if message.is_empty() { "" } else { ": " },
        message
    );
    ctx.step("Writing STAMP", |_| {
        Ok(std::fs::write(dir.join("STAMP"), &stamp)?)
    })?;
    ctx.table(
        &["FILE", "BYTES"],
        files
            .iter()
            .map(|(f, n)| vec![f.clone(), n.to_string()])
            .collect(),
    );
    Ok(Value::new(
        "stamp.Bundle",
        serde_json::json!({ "dir": dir, "stamp": stamp.trim_end(), "files": files.len() }),
    ))
}

fn to_artifact(ctx: &mut Ctx, bundle: &Value) -> Result<Value, Error> {
    let dir = bundle.data["dir"]
        .as_str()
        .ok_or_else(|| Error::new("a stamp.Bundle without a dir"))?
        .to_string();
    let tarball = PathBuf::from(format!("{dir}.tar.gz"));
    ctx.step("Packing the bundle", |_| {
        let st = Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&dir)
            .arg(".")
            .status()?;
        if !st.success() {
            return Err(Error::new(format!("tar failed: {st}")));
        }
        Ok(())
    })?;
    let bytes = std::fs::read(&tarball)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    ctx.line(&format!(
        "{} ({} bytes, sha256 {})",
        tarball.display(),
        bytes.len(),
        &sha256[..12]
    ));
    Ok(Value::new(
        "files.Artifact",
        serde_json::json!({ "path": tarball, "sha256": sha256, "size": bytes.len() }),
    ))
}

fn main() {
    Plugin::new("stamp")
        .builder("stamp.Bundle", build)
        .check(ComponentKind::Builder, check)
        .mapper("stamp.Bundle", "files.Artifact", to_artifact)
        .serve()
}
