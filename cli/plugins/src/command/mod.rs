//! Builder `command`: runs a build command in the source directory and records the
//! file it produces.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use super::files::{self, Artifact};
use super::{config_error, parse_config, Builder, Mapper, OpContext, PluginError, Stream, Value};

pub const OUTPUT: &str = "command.Output";

/// `command.Output`: the file a build command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Absolute path of the produced file.
    pub path: PathBuf,
    pub sha256: String,
    /// Where the `command.Output → files.Artifact` mapper writes its archive.
    #[serde(default)]
    pub artifacts_dir: Option<PathBuf>,
}

impl crate::Typed for Output {
    const TYPE_NAME: &'static str = OUTPUT;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    command: Vec<String>,
    output: PathBuf,
}

/// Builder `command`.
pub struct CommandBuilder {
    config: Config,
}

impl CommandBuilder {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Builder>, PluginError> {
        let config: Config = parse_config("command", config)?;
        if config.command.first().is_none_or(|p| p.is_empty()) {
            return Err(config_error(
                "command",
                "command",
                "must name a program to run",
            ));
        }
        Ok(Box::new(CommandBuilder { config }))
    }
}

impl Builder for CommandBuilder {
    fn output_type(&self) -> &'static str {
        OUTPUT
    }

    fn build(&self, ctx: &mut OpContext) -> Result<Value, PluginError> {
        let shown = self.config.command.join(" ");
        ctx.info(&format!(
            "running `{shown}` in {}",
            ctx.source_dir.display()
        ));
        let source_dir = ctx.source_dir.clone();
        let code = run_streaming(&self.config.command, &source_dir, ctx)?;
        if code != Some(0) {
            return Err(PluginError::CommandFailed {
                command: shown,
                code,
            });
        }
        let path = absolute(&ctx.source_dir.join(&self.config.output))?;
        let meta = fs::metadata(&path).map_err(|e| {
            PluginError::io(
                format!("`{shown}` succeeded but its output {}", path.display()),
                e,
            )
        })?;
        if !meta.is_file() {
            return Err(PluginError::Failed(format!(
                "output {} is not a regular file",
                path.display()
            )));
        }
        let sha256 = files::sha256_file(&path)?;
        ctx.info(&format!("output {} (sha256 {sha256})", path.display()));
        Value::of(&Output {
            path,
            sha256,
            artifacts_dir: Some(ctx.data_dir.join("artifacts")),
        })
    }
}

fn absolute(path: &Path) -> Result<PathBuf, PluginError> {
    std::path::absolute(path)
        .map_err(|e| PluginError::io(format!("resolving {}", path.display()), e))
}

/// Runs `argv` in `dir` with stdin closed, sending its output line by line to
/// `ctx.out`. Returns the exit code (`None` when killed by a signal).
pub(crate) fn run_streaming(
    argv: &[String],
    dir: &Path,
    ctx: &mut OpContext,
) -> Result<Option<i32>, PluginError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| PluginError::Failed("empty command".to_string()))?;
    let mut child = Command::new(resolve_program(program, dir))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PluginError::io(format!("starting `{program}`"), e))?;
    let (tx, rx) = mpsc::channel::<(Stream, String)>();
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(forward_lines(stdout, Stream::Stdout, tx.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(forward_lines(stderr, Stream::Stderr, tx.clone()));
    }
    drop(tx);
    // Ends when both pipes are closed.
    for (stream, line) in rx {
        ctx.out.line(stream, &line);
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child
        .wait()
        .map_err(|e| PluginError::io(format!("waiting for `{program}`"), e))?;
    Ok(status.code())
}

fn forward_lines<R: Read + Send + 'static>(
    pipe: R,
    stream: Stream,
    tx: mpsc::Sender<(Stream, String)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send((stream, line)).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// A relative program path with a `/` (`./build.sh`) is taken relative to `dir`;
/// a bare name is looked up in `PATH`.
pub(crate) fn resolve_program(program: &str, dir: &Path) -> PathBuf {
    let path = Path::new(program);
    if path.is_relative() && program.contains('/') {
        dir.join(path)
    } else {
        path.to_path_buf()
    }
}

/// `command.Output → files.Artifact`: packs the single output file (under its file
/// name, keeping its executable bit) into a deterministic archive.
pub const OUTPUT_TO_ARTIFACT: Mapper = Mapper {
    from: OUTPUT,
    to: files::ARTIFACT,
    f: output_to_artifact,
};

fn output_to_artifact(value: &Value) -> Result<Value, PluginError> {
    let output: Output = value.get::<Output>()?;
    let actual = files::sha256_file(&output.path)?;
    if actual != output.sha256 {
        return Err(PluginError::Failed(format!(
            "{} changed since it was built (sha256 {actual}, recorded {})",
            output.path.display(),
            output.sha256
        )));
    }
    let (Some(root), Some(name)) = (output.path.parent(), output.path.file_name()) else {
        return Err(PluginError::Failed(format!(
            "{} is not a file path",
            output.path.display()
        )));
    };
    let dir = output
        .artifacts_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("cairn-artifacts"));
    let entry = files::file_entry(root, Path::new(name))?;
    let artifact: Artifact = files::write_archive(&dir, root, &[entry])?;
    Value::of(&artifact)
}
