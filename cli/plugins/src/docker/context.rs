//! The build context: the context directory as a tar, honouring its
//! `.dockerignore` the way `docker build` does (patterns relative to the
//! context root, `**`, and `!` exceptions; the Dockerfile and `.dockerignore`
//! themselves are always sent).

use std::fs;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::PluginError;

/// Name under which a Dockerfile from outside the context is sent.
pub const OUTSIDE_DOCKERFILE: &str = ".cairn.Dockerfile";

/// A context ready to send: the tar, the Dockerfile's path inside it, and how
/// many files it holds.
pub struct Context {
    pub tar: Vec<u8>,
    pub dockerfile: String,
    pub files: usize,
}

/// Packs `dir` (the context) with `dockerfile` (absolute).
pub fn pack(dir: &Path, dockerfile: &Path) -> Result<Context, PluginError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        PluginError::io(format!("build context: {what} {}", p.display()), e)
    };
    let meta = fs::metadata(dir).map_err(|e| io("reading", dir, e))?;
    if !meta.is_dir() {
        return Err(PluginError::Failed(format!(
            "build context {} is not a directory",
            dir.display()
        )));
    }
    if !dockerfile.is_file() {
        return Err(PluginError::Failed(format!(
            "no Dockerfile at {} (set `dockerfile` to where it is)",
            dockerfile.display()
        )));
    }
    let ignore = dockerignore(dir)?;
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut files = 0;
    let inside = dockerfile
        .strip_prefix(dir)
        .ok()
        .map(|p| p.to_string_lossy().to_string());
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&abs)
            .map_err(|e| io("reading", &abs, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| io("reading", &abs, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel_path = rel.join(entry.file_name());
            let kind = entry
                .file_type()
                .map_err(|e| io("reading", &entry.path(), e))?;
            let always = rel_path == Path::new(".dockerignore")
                || inside.as_deref() == Some(&*rel_path.to_string_lossy());
            if !always
                && ignore
                    .matched_path_or_any_parents(&rel_path, kind.is_dir())
                    .is_ignore()
            {
                // A directory stays walked when an exception may re-include
                // something under it (`!dir/keep`).
                if !(kind.is_dir() && has_exceptions(&ignore)) {
                    continue;
                }
                stack.push(rel_path);
                continue;
            }
            if kind.is_dir() {
                builder
                    .append_dir(&rel_path, entry.path())
                    .map_err(|e| io("packing", &entry.path(), e))?;
                stack.push(rel_path);
            } else {
                builder
                    .append_path_with_name(entry.path(), &rel_path)
                    .map_err(|e| io("packing", &entry.path(), e))?;
                files += 1;
            }
        }
    }
    let dockerfile_name = match inside {
        Some(name) => name,
        None => {
            builder
                .append_path_with_name(dockerfile, OUTSIDE_DOCKERFILE)
                .map_err(|e| io("packing", dockerfile, e))?;
            OUTSIDE_DOCKERFILE.to_string()
        }
    };
    let tar = builder.into_inner().map_err(|e| io("packing", dir, e))?;
    Ok(Context {
        tar,
        dockerfile: dockerfile_name,
        files,
    })
}

/// The context's `.dockerignore` as a matcher. Docker's patterns are
/// relative to the context root, so each is anchored there.
fn dockerignore(dir: &Path) -> Result<Gitignore, PluginError> {
    let path = dir.join(".dockerignore");
    let mut b = GitignoreBuilder::new(dir);
    if let Ok(text) = fs::read_to_string(&path) {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (neg, pat) = match line.strip_prefix('!') {
                Some(p) => ("!", p.trim()),
                None => ("", line),
            };
            let pat = pat.trim_start_matches("./");
            let anchored = if pat.starts_with('/') {
                pat.to_string()
            } else {
                format!("/{pat}")
            };
            b.add_line(None, &format!("{neg}{anchored}"))
                .map_err(|e| PluginError::Failed(format!("{}:{}: {e}", path.display(), n + 1)))?;
        }
    }
    b.build()
        .map_err(|e| PluginError::Failed(format!("{}: {e}", path.display())))
}

fn has_exceptions(ignore: &Gitignore) -> bool {
    ignore.num_whitelists() > 0
}

/// A tar of in-memory files (`name`, bytes, mode), each with mtime 0;
/// `what` names the work in an error.
pub(crate) fn tar_of(files: &[(&str, &[u8], u32)], what: &str) -> Result<Vec<u8>, PluginError> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        b.append_data(&mut header, name, *bytes)
            .map_err(|e| PluginError::io(what, e))?;
    }
    b.into_inner().map_err(|e| PluginError::io(what, e))
}
