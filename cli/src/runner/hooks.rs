//! Stage hooks: commands run before/after a stage, in the app's directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::{Hook, HookWhen, OnFailure};
use crate::plugins::{OutputSink, Stream};

/// Run the hooks of `when`; `Err` when one with `on_failure = "fail"` failed.
pub fn run(
    hooks: &[Hook],
    when: HookWhen,
    dir: &Path,
    env: &std::collections::BTreeMap<String, String>,
    out: &mut dyn OutputSink,
) -> Result<(), String> {
    for hook in hooks.iter().filter(|h| h.when == when) {
        let shown = hook.command.join(" ");
        out.line(
            Stream::Info,
            &format!(
                "hook ({}): {shown}",
                if when == HookWhen::Before {
                    "before"
                } else {
                    "after"
                }
            ),
        );
        let result = run_one(&hook.command, dir, env, out);
        if let Err(e) = result {
            match hook.on_failure {
                OnFailure::Fail => return Err(format!("{}: hook `{shown}` {e}", hook.location)),
                OnFailure::Continue => out.line(
                    Stream::Info,
                    &format!("hook `{shown}` {e}; continuing (on_failure = \"continue\")"),
                ),
            }
        }
    }
    Ok(())
}

fn run_one(
    cmd: &[String],
    dir: &Path,
    env: &std::collections::BTreeMap<String, String>,
    out: &mut dyn OutputSink,
) -> Result<(), String> {
    let (prog, args) = cmd.split_first().ok_or("is empty")?;
    let mut child = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start: {e}"))?;
    let stderr = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel::<(Stream, String)>();
    let tx2 = tx.clone();
    let t = std::thread::spawn(move || {
        if let Some(e) = stderr {
            for line in BufReader::new(e).lines().map_while(Result::ok) {
                let _ = tx2.send((Stream::Stderr, line));
            }
        }
    });
    if let Some(o) = child.stdout.take() {
        let t2 = std::thread::spawn(move || {
            for line in BufReader::new(o).lines().map_while(Result::ok) {
                let _ = tx.send((Stream::Stdout, line));
            }
        });
        for (s, l) in rx.iter() {
            out.line(s, &l);
        }
        let _ = t2.join();
    }
    let _ = t.join();
    let status = child.wait().map_err(|e| format!("could not wait: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(match status.code() {
            Some(c) => format!("failed with exit code {c}"),
            None => "was killed by a signal".into(),
        })
    }
}
