//! Plugins `files`: a builder that packs a directory into a deterministic,
//! content-addressed `.tar.gz`, and a registry that stores artifacts in a directory.
//!
//! Invariant: the same tree (names, contents, executable bits, symlink targets) gives
//! the same archive bytes, hence the same `sha256-<hex>.tar.gz` name.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    async_trait, parse_config, BoxFuture, Builder, Mapper, OpContext, PluginError, Registry, Value,
};

pub const ARTIFACT: &str = "files.Artifact";
pub const STORED_ARTIFACT: &str = "files.StoredArtifact";

/// The modification time written for every archive entry.
const FIXED_MTIME: u64 = 0;

/// `files.Artifact`: a `.tar.gz` on the runner's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl crate::Typed for Artifact {
    const TYPE_NAME: &'static str = ARTIFACT;
}

/// `files.StoredArtifact`: an artifact copied into a `files` registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArtifact {
    pub path: PathBuf,
    pub sha256: String,
}

impl crate::Typed for StoredArtifact {
    const TYPE_NAME: &'static str = STORED_ARTIFACT;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuilderConfig {
    #[serde(default = "dot")]
    path: String,
    #[serde(default)]
    exclude: Vec<String>,
}

fn dot() -> String {
    ".".to_string()
}

/// Builder `files`.
pub struct FilesBuilder {
    config: BuilderConfig,
}

impl FilesBuilder {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Builder>, PluginError> {
        let config: BuilderConfig = parse_config("files", config)?;
        for (i, pattern) in config.exclude.iter().enumerate() {
            if pattern.is_empty() {
                return Err(super::config_error(
                    "files",
                    &format!("exclude[{i}]"),
                    "empty pattern",
                ));
            }
        }
        Ok(Box::new(FilesBuilder { config }))
    }
}

#[async_trait]
impl Builder for FilesBuilder {
    fn output_type(&self) -> &'static str {
        ARTIFACT
    }

    async fn build(&self, ctx: &mut OpContext) -> Result<Value, PluginError> {
        tokio::task::block_in_place(|| self.pack(ctx))
    }
}

impl FilesBuilder {
    fn pack(&self, ctx: &mut OpContext) -> Result<Value, PluginError> {
        let root = ctx.source_dir.join(&self.config.path);
        let meta = fs::metadata(&root)
            .map_err(|e| PluginError::io(format!("files: {}", root.display()), e))?;
        if !meta.is_dir() {
            return Err(PluginError::Failed(format!(
                "files: {} is not a directory",
                root.display()
            )));
        }
        // Never pack our own data directory when it lives inside the tree.
        let skip = fs::canonicalize(&ctx.data_dir).ok();
        let entries = walk(&root, &self.config.exclude, skip.as_deref())?;
        let artifacts = ctx.data_dir.join("artifacts");
        let artifact = write_archive(&artifacts, &root, &entries)?;
        ctx.info(&format!(
            "packed {} entries from {} into {} ({} bytes)",
            entries.len(),
            root.display(),
            artifact.path.display(),
            artifact.size
        ));
        Value::of(&artifact)
    }
}

/// One entry of the tree to pack, relative to its root.
#[derive(Debug)]
pub(crate) struct Entry {
    rel: PathBuf,
    kind: EntryKind,
}

#[derive(Debug)]
enum EntryKind {
    Dir,
    File { executable: bool },
    Symlink(PathBuf),
}

/// Lists the tree under `root` (not following symlinks), minus excluded paths, sorted
/// by path. Sockets, FIFOs and devices are skipped.
pub(crate) fn walk(
    root: &Path,
    exclude: &[String],
    skip: Option<&Path>,
) -> Result<Vec<Entry>, PluginError> {
    let mut entries = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let abs = root.join(&dir);
        let read = fs::read_dir(&abs)
            .map_err(|e| PluginError::io(format!("reading {}", abs.display()), e))?;
        for item in read {
            let item =
                item.map_err(|e| PluginError::io(format!("reading {}", abs.display()), e))?;
            let rel = dir.join(item.file_name());
            if is_excluded(&rel, exclude) {
                continue;
            }
            let path = item.path();
            let meta = fs::symlink_metadata(&path)
                .map_err(|e| PluginError::io(format!("reading {}", path.display()), e))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                if let (Some(skip), Ok(canon)) = (skip, fs::canonicalize(&path)) {
                    if canon == skip {
                        continue;
                    }
                }
                entries.push(Entry {
                    rel: rel.clone(),
                    kind: EntryKind::Dir,
                });
                stack.push(rel);
            } else if ft.is_file() {
                entries.push(Entry {
                    rel,
                    kind: EntryKind::File {
                        executable: is_executable(&meta),
                    },
                });
            } else if ft.is_symlink() {
                let target = fs::read_link(&path)
                    .map_err(|e| PluginError::io(format!("reading {}", path.display()), e))?;
                entries.push(Entry {
                    rel,
                    kind: EntryKind::Symlink(target),
                });
            }
        }
    }
    entries.sort_by(|a, b| a.rel.as_os_str().cmp(b.rel.as_os_str()));
    Ok(entries)
}

/// The entry for the regular file `root/rel`.
pub(crate) fn file_entry(root: &Path, rel: &Path) -> Result<Entry, PluginError> {
    let path = root.join(rel);
    let meta = fs::metadata(&path)
        .map_err(|e| PluginError::io(format!("reading {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(PluginError::Failed(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(Entry {
        rel: rel.to_path_buf(),
        kind: EntryKind::File {
            executable: is_executable(&meta),
        },
    })
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

/// Exclusion: a pattern without `/` matches any single path component (so `target`
/// or `*.log` match at any depth); a pattern with `/` matches the whole path relative
/// to the packed root (`docs/*.md`, `**/tmp`). `*` and `?` do not cross `/`, `**` does.
/// An excluded directory excludes everything below it.
pub(crate) fn is_excluded(rel: &Path, exclude: &[String]) -> bool {
    let rel = rel.to_string_lossy();
    let name = rel.rsplit('/').next().unwrap_or(&rel);
    exclude.iter().any(|pattern| {
        let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
        if pattern.contains('/') {
            glob_match(pattern.trim_start_matches('/').as_bytes(), rel.as_bytes())
        } else {
            glob_match(pattern.as_bytes(), name.as_bytes())
        }
    })
}

/// Glob matching with `*`, `?` (not crossing `/`) and `**` (crossing `/`).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => {
            // `**/` may also match nothing at all.
            let rest_after_slash = rest.strip_prefix(b"/").unwrap_or(rest);
            if glob_match(rest_after_slash, text) {
                return true;
            }
            (0..text.len()).any(|i| glob_match(rest, &text[i + 1..]))
        }
        [b'*', rest @ ..] => {
            for i in 0..=text.len() {
                if glob_match(rest, &text[i..]) {
                    return true;
                }
                if i < text.len() && text[i] == b'/' {
                    break;
                }
            }
            false
        }
        [b'?', rest @ ..] => match text {
            [c, tail @ ..] if *c != b'/' => glob_match(rest, tail),
            _ => false,
        },
        [p, rest @ ..] => match text {
            [c, tail @ ..] if c == p => glob_match(rest, tail),
            _ => false,
        },
    }
}

/// Writes the entries as a deterministic `.tar.gz` into `dir`, named by its hash.
pub(crate) fn write_archive(
    dir: &Path,
    root: &Path,
    entries: &[Entry],
) -> Result<Artifact, PluginError> {
    fs::create_dir_all(dir)
        .map_err(|e| PluginError::io(format!("creating {}", dir.display()), e))?;
    let tmp = temp_path(dir);
    let result = (|| {
        let file = File::create(&tmp)?;
        let hasher = HashingWriter::new(BufWriter::new(file));
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(hasher, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for entry in entries {
            append_entry(&mut tar, root, entry)?;
        }
        let gz = tar.into_inner()?;
        let hasher = gz.finish()?;
        let (mut inner, sha256, size) = hasher.finish();
        inner.flush()?;
        inner.get_ref().sync_all()?;
        Ok::<_, io::Error>((sha256, size))
    })();
    let (sha256, size) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(PluginError::io(format!("writing {}", tmp.display()), e));
        }
    };
    let path = dir.join(format!("sha256-{sha256}.tar.gz"));
    fs::rename(&tmp, &path)
        .map_err(|e| PluginError::io(format!("writing {}", path.display()), e))?;
    Ok(Artifact { path, sha256, size })
}

fn append_entry<W: Write>(tar: &mut tar::Builder<W>, root: &Path, entry: &Entry) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(FIXED_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    match &entry.kind {
        EntryKind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, &entry.rel, io::empty())
        }
        EntryKind::File { executable } => {
            let path = root.join(&entry.rel);
            let file = File::open(&path)?;
            let size = file.metadata()?.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if *executable { 0o755 } else { 0o644 });
            header.set_size(size);
            // `take` keeps the archive consistent if the file grows meanwhile.
            tar.append_data(&mut header, &entry.rel, BufReader::new(file).take(size))
        }
        EntryKind::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &entry.rel, target)
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh name for a temporary file in `dir` (renamed into place when complete).
pub(crate) fn temp_path(dir: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".tmp-{}-{n}", std::process::id()))
}

/// Hashes (SHA-256) and counts what is written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The inner writer, the hex digest and the byte count.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.size)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes (SHA-256) what is read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads to the end (so trailing bytes are hashed too) and returns the hex digest.
    pub(crate) fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The hex SHA-256 of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<String, PluginError> {
    let file =
        File::open(path).map_err(|e| PluginError::io(format!("reading {}", path.display()), e))?;
    HashingReader::new(BufReader::new(file))
        .finish()
        .map_err(|e| PluginError::io(format!("reading {}", path.display()), e))
}

/// Fails unless `path` still has the SHA-256 recorded when it was built.
pub(crate) fn check_unchanged(path: &Path, recorded: &str) -> Result<(), PluginError> {
    let actual = sha256_file(path)?;
    if actual != recorded {
        return Err(PluginError::Failed(format!(
            "{} changed since it was built (sha256 {actual}, recorded {recorded})",
            path.display()
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryConfig {
    #[serde(default)]
    directory: Option<PathBuf>,
}

/// Registry `files`: copies artifacts into a directory (default `data_dir/registry`;
/// a relative `directory` is relative to the source directory).
pub struct FilesRegistry {
    config: RegistryConfig,
}

impl FilesRegistry {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Registry>, PluginError> {
        let config = parse_config("files", config)?;
        Ok(Box::new(FilesRegistry { config }))
    }
}

#[async_trait]
impl Registry for FilesRegistry {
    fn input_types(&self) -> &[&'static str] {
        &[ARTIFACT]
    }

    fn output_type(&self) -> &'static str {
        STORED_ARTIFACT
    }

    async fn push(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        tokio::task::block_in_place(|| self.store(ctx, input))
    }
}

impl FilesRegistry {
    fn store(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        let artifact: Artifact = input.get::<Artifact>()?;
        let dir = match &self.config.directory {
            Some(dir) => ctx.source_dir.join(dir),
            None => ctx.data_dir.join("registry"),
        };
        fs::create_dir_all(&dir)
            .map_err(|e| PluginError::io(format!("creating {}", dir.display()), e))?;
        let dest = dir.join(format!("sha256-{}.tar.gz", artifact.sha256));
        if dest.exists() && sha256_file(&dest)? == artifact.sha256 {
            ctx.info(&format!("{} is already stored", dest.display()));
        } else {
            copy_verified(&artifact.path, &dest, &artifact.sha256)?;
            ctx.info(&format!("stored {}", dest.display()));
        }
        Value::of(&StoredArtifact {
            path: dest,
            sha256: artifact.sha256,
        })
    }
}

/// Copies `src` to `dest` through a temporary file, checking the content's hash.
fn copy_verified(src: &Path, dest: &Path, sha256: &str) -> Result<(), PluginError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(dir);
    let result = (|| {
        let mut reader = HashingReader::new(File::open(src)?);
        let mut out = File::create(&tmp)?;
        io::copy(&mut reader, &mut out)?;
        out.sync_all()?;
        reader.finish()
    })();
    match result {
        Ok(actual) if actual == sha256 => fs::rename(&tmp, dest)
            .map_err(|e| PluginError::io(format!("writing {}", dest.display()), e)),
        Ok(actual) => {
            let _ = fs::remove_file(&tmp);
            Err(PluginError::Failed(format!(
                "{} has sha256 {actual}, expected {sha256}",
                src.display()
            )))
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(PluginError::io(format!("copying {}", src.display()), e))
        }
    }
}

/// `files.StoredArtifact → files.Artifact`: the stored copy is the same archive.
pub const STORED_TO_ARTIFACT: Mapper = Mapper {
    from: STORED_ARTIFACT,
    to: ARTIFACT,
    f: stored_to_artifact,
};

fn stored_to_artifact<'a>(
    value: &'a Value,
    _ctx: &'a mut OpContext,
) -> BoxFuture<'a, Result<Value, PluginError>> {
    Box::pin(async move { stored_artifact(value) })
}

fn stored_artifact(value: &Value) -> Result<Value, PluginError> {
    let stored: StoredArtifact = value.get::<StoredArtifact>()?;
    let size = fs::metadata(&stored.path)
        .map_err(|e| PluginError::io(format!("reading {}", stored.path.display()), e))?
        .len();
    Value::of(&Artifact {
        path: stored.path,
        sha256: stored.sha256,
        size,
    })
}
