//! Stage hooks: commands run before/after a stage, in the app's directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::{Hook, HookWhen, OnFailure};
use crate::plugins::{OpContext, OutputSink, Stream};

/// Run `body` between the stage's before and after hooks. When an after
/// hook fails, `undo` gets what the body made (so nothing is left running).
pub fn around<T>(
    hooks: &[Hook],
    ctx: &mut OpContext,
    body: impl FnOnce(&mut OpContext) -> Result<T, String>,
    undo: impl FnOnce(&mut OpContext, &T),
) -> Result<T, String> {
    let (dir, env) = (ctx.source_dir.clone(), ctx.env.clone());
    run(hooks, HookWhen::Before, &dir, &env, ctx.out)?;
    let v = body(ctx)?;
    if let Err(e) = run(hooks, HookWhen::After, &dir, &env, ctx.out) {
        undo(ctx, &v);
        return Err(e);
    }
    Ok(v)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Location;

    #[derive(Default)]
    struct Lines(Vec<String>);
    impl OutputSink for Lines {
        fn line(&mut self, _stream: Stream, text: &str) {
            self.0.push(text.to_string());
        }
    }

    fn hook(when: HookWhen, cmd: &str, on_failure: OnFailure) -> Hook {
        Hook {
            when,
            command: vec!["sh".into(), "-c".into(), cmd.into()],
            on_failure,
            location: Location::new("cairn.hcl", 7, 5),
        }
    }

    fn ctx<'a>(out: &'a mut Lines, dir: &Path) -> OpContext<'a> {
        OpContext {
            project: "p".into(),
            app: "a".into(),
            workspace: "default".into(),
            sequence: 1,
            source_dir: dir.to_path_buf(),
            data_dir: dir.to_path_buf(),
            self_exe: "cairn".into(),
            env: [("HOOK_VAR".to_string(), "v1".to_string())].into(),
            entrypoint: None,
            out,
        }
    }

    #[test]
    fn hooks_run_in_order_around_the_body_with_env_and_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let hooks = vec![
            hook(HookWhen::After, "echo after $HOOK_VAR", OnFailure::Fail),
            hook(
                HookWhen::Before,
                "echo before $(basename $PWD)",
                OnFailure::Fail,
            ),
        ];
        let mut out = Lines::default();
        let mut c = ctx(&mut out, tmp.path());
        let r = around(
            &hooks,
            &mut c,
            |c| {
                c.info("body");
                Ok(42)
            },
            |_, _| panic!("no undo on success"),
        );
        assert_eq!(r, Ok(42));
        let base = tmp
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let text: Vec<&str> = out
            .0
            .iter()
            .map(String::as_str)
            .filter(|l| !l.starts_with("hook ("))
            .collect();
        assert_eq!(
            text,
            vec![format!("before {base}").as_str(), "body", "after v1"]
        );
    }

    #[test]
    fn failing_before_hook_stops_the_stage_unless_continue() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut out = Lines::default();
        let mut c = ctx(&mut out, tmp.path());
        let fail = vec![hook(HookWhen::Before, "exit 3", OnFailure::Fail)];
        let r: Result<(), String> =
            around(&fail, &mut c, |_| panic!("body must not run"), |_, _| {});
        let e = r.expect_err("fails");
        assert!(
            e.starts_with("cairn.hcl:7:5: hook `sh -c exit 3` failed with exit code 3"),
            "{e}"
        );
        let cont = vec![hook(HookWhen::Before, "exit 3", OnFailure::Continue)];
        assert_eq!(around(&cont, &mut c, |_| Ok(1), |_, _| {}), Ok(1));
    }

    #[test]
    fn failing_after_hook_undoes_the_body() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut out = Lines::default();
        let mut c = ctx(&mut out, tmp.path());
        let hooks = vec![hook(HookWhen::After, "false", OnFailure::Fail)];
        let mut undone = None;
        let r = around(&hooks, &mut c, |_| Ok(7), |_, v| undone = Some(*v));
        assert!(r.is_err());
        assert_eq!(undone, Some(7));
    }
}
