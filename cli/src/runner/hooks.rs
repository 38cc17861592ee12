//! Stage hooks: commands run before/after a stage, in the app's directory,
//! with the stage's environment. A stage runs `before`, its operation, then
//! `after`; when an after hook fails, the caller undoes what the operation
//! made (so nothing is left running).

use crate::config::{Hook, HookWhen, OnFailure};
use crate::plugins::command::run_streaming;
use crate::plugins::{OpContext, Stream};

/// Runs the stage's before hooks.
pub async fn before(hooks: &[Hook], ctx: &mut OpContext) -> Result<(), String> {
    run(hooks, HookWhen::Before, ctx).await
}

/// Runs the stage's after hooks.
pub async fn after(hooks: &[Hook], ctx: &mut OpContext) -> Result<(), String> {
    run(hooks, HookWhen::After, ctx).await
}

/// Run the hooks of `when`; `Err` when one with `on_failure = "fail"` failed.
async fn run(hooks: &[Hook], when: HookWhen, ctx: &mut OpContext) -> Result<(), String> {
    for hook in hooks.iter().filter(|h| h.when == when) {
        let shown = hook.command.join(" ");
        ctx.out.line(
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
        let result =
            match run_streaming(&hook.command, &ctx.source_dir, &ctx.env, ctx.out.as_mut()).await {
                Ok(Some(0)) => Ok(()),
                Ok(Some(c)) => Err(format!("failed with exit code {c}")),
                Ok(None) => Err("was killed by a signal".to_string()),
                Err(e) => Err(e.to_string()),
            };
        if let Err(e) = result {
            match hook.on_failure {
                OnFailure::Fail => return Err(format!("{}: hook `{shown}` {e}", hook.location)),
                OnFailure::Continue => ctx.out.line(
                    Stream::Info,
                    &format!("hook `{shown}` {e}; continuing (on_failure = \"continue\")"),
                ),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Location;

    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use crate::plugins::OutputSink;

    #[derive(Default, Clone)]
    struct Lines(Arc<Mutex<Vec<String>>>);
    impl OutputSink for Lines {
        fn line(&mut self, _stream: Stream, text: &str) {
            self.0.lock().expect("lines").push(text.to_string());
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

    fn ctx(out: &Lines, dir: &Path) -> OpContext {
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
            out: Box::new(out.clone()),
        }
    }

    #[tokio::test]
    async fn hooks_run_in_order_with_env_and_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let hooks = vec![
            hook(HookWhen::After, "echo after $HOOK_VAR", OnFailure::Fail),
            hook(
                HookWhen::Before,
                "echo before $(basename $PWD)",
                OnFailure::Fail,
            ),
        ];
        let out = Lines::default();
        let mut c = ctx(&out, tmp.path());
        assert_eq!(before(&hooks, &mut c).await, Ok(()));
        c.info("body");
        assert_eq!(after(&hooks, &mut c).await, Ok(()));
        let base = tmp
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let lines = out.0.lock().expect("lines").clone();
        let text: Vec<&str> = lines
            .iter()
            .map(String::as_str)
            .filter(|l| !l.starts_with("hook ("))
            .collect();
        assert_eq!(
            text,
            vec![format!("before {base}").as_str(), "body", "after v1"]
        );
    }

    #[tokio::test]
    async fn a_failing_hook_stops_the_stage_unless_continue() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = Lines::default();
        let mut c = ctx(&out, tmp.path());
        let fail = vec![hook(
            HookWhen::Before,
            "echo oops >&2; exit 3",
            OnFailure::Fail,
        )];
        let e = before(&fail, &mut c).await.expect_err("fails");
        assert!(
            e.starts_with(
                "cairn.hcl:7:5: hook `sh -c echo oops >&2; exit 3` failed with exit code 3"
            ),
            "{e}"
        );
        assert!(out.0.lock().expect("lines").contains(&"oops".to_string()));
        let cont = vec![hook(HookWhen::Before, "exit 3", OnFailure::Continue)];
        assert_eq!(before(&cont, &mut c).await, Ok(()));
        // A hook of the other kind does not run.
        assert_eq!(after(&fail, &mut c).await, Ok(()));
        let mut gone = vec![hook(HookWhen::After, "x", OnFailure::Fail)];
        gone[0].command = vec!["/nonexistent/hook".into()];
        let e = after(&gone, &mut c).await.expect_err("cannot start");
        assert!(e.contains("starting `/nonexistent/hook`"), "{e}");
    }
}
