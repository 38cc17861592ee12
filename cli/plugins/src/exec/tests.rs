//! Tests of the exec platform with real commands, and of its templates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::template::{render, Data};
use super::*;
use crate::testutil::{ctx, write, Lines, Wait};
use crate::{Catalog, HealthState};

struct Fixture {
    _tmp: tempfile::TempDir,
    source: PathBuf,
    data: PathBuf,
    lines: Lines,
}

impl Fixture {
    fn new() -> Result<Fixture> {
        let tmp = tempfile::tempdir()?;
        let source = tmp.path().join("src");
        let data = tmp.path().join("data");
        fs::create_dir_all(&source)?;
        fs::create_dir_all(&data)?;
        Ok(Fixture {
            _tmp: tmp,
            source,
            data,
            lines: Lines::default(),
        })
    }

    fn ctx(&self) -> OpContext {
        let mut c = ctx(&self.source, &self.data, 4, &self.lines);
        c.env.insert("GREETING".to_string(), "hello".to_string());
        c
    }

    fn deploy(&self, config: serde_json::Value, input: &Value) -> Result<Value, PluginError> {
        let platform = Catalog::builtin().platform("exec", &config)?;
        let mut ctx = self.ctx();
        platform.deploy(&mut ctx, input).wait()
    }

    /// What is left under the data dir's `exec/` (rendered templates are removed).
    fn leftovers(&self) -> Vec<String> {
        match fs::read_dir(self.data.join("exec")) {
            Ok(dir) => dir
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn image() -> Value {
    Value::named(
        "docker.Image",
        &json!({"image": "registry.example/web", "tag": "v7", "id": null, "local": false, "entrypoint": false}),
    )
    .expect("an image value")
}

fn exec_err(result: Result<Value, PluginError>) -> String {
    match result {
        Ok(v) => panic!("expected the deploy to fail, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn exec_renders_a_file_template_and_runs_the_command() -> Result<()> {
    let f = Fixture::new()?;
    write(
        &f.source.join("deploy.yaml"),
        "image: {{.Input.DockerImageFull}}\n\
         name: {{ .Input.image }} tag: {{.Input.DockerImageTag}} repo: {{.Input.DockerImageName}}\n\
         app: {{.App}} in {{ .Workspace }} of {{.Project}}, {{.Env.GREETING}} {{.Env.WHO}}\n",
    );
    let value = f.deploy(
        json!({
            "command": ["sh", "-c", "cat \"$1\" > out.txt; echo applied \"$(basename \"$1\")\"", "sh", "<TPL>"],
            "template": {"path": "./deploy.yaml"},
            "env": {"WHO": "world"},
        }),
        &image(),
    )?;
    assert_eq!(
        fs::read_to_string(f.source.join("out.txt"))?,
        "image: registry.example/web:v7\n\
         name: registry.example/web tag: v7 repo: registry.example/web\n\
         app: web in default of demo, hello world\n"
    );
    assert_eq!(value.type_name, "exec.Deployment");
    let d: Deployment = value.get::<Deployment>()?;
    assert_eq!(d.exit_code, 0);
    assert_eq!(d.template, Some(PathBuf::from("./deploy.yaml")));
    assert_eq!(d.template_files, vec!["deploy.yaml"]);
    assert_eq!(d.dir, f.source);
    let rendered = Path::new(&d.command[4]);
    assert!(rendered.starts_with(f.data.join("exec")), "{rendered:?}");
    assert!(rendered.ends_with("deploy.yaml"), "{rendered:?}");
    assert!(!rendered.exists(), "the rendered template is removed");
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
    assert_eq!(f.lines.text(Stream::Stdout), vec!["applied deploy.yaml"]);
    let info = f.lines.text(Stream::Info).join("\n");
    assert!(
        info.contains("rendered template ./deploy.yaml (1 file) from the docker.Image"),
        "{info}"
    );
    assert!(info.contains("running `sh -c "), "{info}");
    Ok(())
}

#[test]
fn exec_takes_a_string_command_with_args_and_a_dir() -> Result<()> {
    let f = Fixture::new()?;
    fs::create_dir_all(f.source.join("ops"))?;
    // A template keeps its permission bits: the rendered script runs as the program.
    write(
        &f.source.join("ops/run.sh"),
        "#!/bin/sh\necho \"artifact {{.Input.sha256}} in $(basename \"$PWD\")\"\n",
    );
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(
            f.source.join("ops/run.sh"),
            fs::Permissions::from_mode(0o755),
        )?;
    }
    let artifact = Value::named(
        files::ARTIFACT,
        &json!({"path": "/nowhere/a.tar.gz", "sha256": "abc123", "size": 1}),
    )?;
    f.deploy(
        json!({"command": "<TPL>", "template": {"path": "ops/run.sh"}, "dir": "ops"}),
        &artifact,
    )?;
    assert_eq!(f.lines.text(Stream::Stdout), vec!["artifact abc123 in ops"]);

    // Without a template: `command` and `args`, as pipelines' exec steps wrote it.
    let f = Fixture::new()?;
    let value = f.deploy(
        json!({"command": "echo", "args": ["hi", "there"]}),
        &image(),
    )?;
    assert_eq!(f.lines.text(Stream::Stdout), vec!["hi there"]);
    let d: Deployment = value.get::<Deployment>()?;
    assert_eq!(d.command, vec!["echo", "hi", "there"]);
    assert_eq!(d.template, None);
    assert!(d.template_files.is_empty());
    Ok(())
}

#[test]
fn exec_renders_a_directory_template() -> Result<()> {
    let f = Fixture::new()?;
    write(
        &f.source.join("k8s/deployment.yaml"),
        "image: {{ .Input.DockerImageFull }}\n",
    );
    write(
        &f.source.join("k8s/svc/service.yaml"),
        "{{- /* a comment */ -}}\n  app: {{.App}}\n",
    );
    write(&f.source.join("k8s/README"), "no actions here\n");
    let value = f.deploy(
        json!({
            "command": ["sh", "-c", "cp -R \"$1\" copied && ls \"$1\"", "sh", "<TPL>"],
            "template": {"path": "k8s"},
        }),
        &image(),
    )?;
    let copied = f.source.join("copied");
    assert_eq!(
        fs::read_to_string(copied.join("deployment.yaml"))?,
        "image: registry.example/web:v7\n"
    );
    assert_eq!(
        fs::read_to_string(copied.join("svc/service.yaml"))?,
        "app: web\n"
    );
    assert_eq!(
        fs::read_to_string(copied.join("README"))?,
        "no actions here\n"
    );
    let d: Deployment = value.get::<Deployment>()?;
    assert_eq!(
        d.template_files,
        vec!["README", "deployment.yaml", "svc/service.yaml"]
    );
    assert!(d.command[4].ends_with("/k8s"), "{:?}", d.command);
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());

    // `path = "."` with the data dir inside the source: the data dir is skipped.
    let f = Fixture::new()?;
    let data_inside = f.source.join(".cairn");
    fs::create_dir_all(&data_inside)?;
    write(&f.source.join("a.txt"), "{{.Input.tag}}\n");
    let platform = Catalog::builtin().platform(
        "exec",
        &json!({"command": ["sh", "-c", "cd \"$1\" && find . -type f | sort", "sh", "<TPL>"], "template": {"path": "."}}),
    )?;
    let mut c = ctx(&f.source, &data_inside, 1, &f.lines);
    let value = platform.deploy(&mut c, &image()).wait()?;
    assert_eq!(f.lines.text(Stream::Stdout), vec!["./a.txt"]);
    assert_eq!(value.get::<Deployment>()?.template_files, vec!["a.txt"]);
    Ok(())
}

#[test]
fn exec_unknown_template_names_are_errors() -> Result<()> {
    let f = Fixture::new()?;
    write(
        &f.source.join("k8s/app.yaml"),
        "kind: Deployment\nimage: {{ .Input.imagee }}\n",
    );
    let config = json!({
        "command": ["sh", "-c", "touch ran", "sh", "<TPL>"],
        "template": {"path": "k8s"},
    });
    let err = exec_err(f.deploy(config.clone(), &image()));
    assert!(
        err.starts_with(
            "exec: template k8s/app.yaml: line 2: unknown name `.Input.imagee`: the input (docker.Image) has no field imagee (fields of .Input: DockerImageFull, DockerImageName, DockerImageTag, entrypoint, id, image, local, tag)"
        ),
        "{err}"
    );
    assert!(!f.source.join("ran").exists(), "the command did not run");
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());

    write(
        &f.source.join("k8s/app.yaml"),
        "{{ .Env.NO_SUCH_VAR_FOR_CAIRN }}",
    );
    let err = exec_err(f.deploy(config.clone(), &image()));
    assert_eq!(
        err,
        "exec: template k8s/app.yaml: line 1: unknown name `.Env.NO_SUCH_VAR_FOR_CAIRN`: no variable NO_SUCH_VAR_FOR_CAIRN in the deploy's environment"
    );

    write(
        &f.source.join("k8s/app.yaml"),
        "{{ if .Input.local }}x{{ end }}",
    );
    let err = exec_err(f.deploy(config.clone(), &image()));
    assert!(
        err.contains("unsupported template action `{{if .Input.local}}`"),
        "{err}"
    );

    let err = exec_err(f.deploy(
        json!({"command": ["cat", "<TPL>"], "template": {"path": "missing.yaml"}}),
        &image(),
    ));
    assert!(err.starts_with("exec: template missing.yaml: "), "{err}");
    assert!(!f.source.join("ran").exists());
    Ok(())
}

#[test]
fn exec_failing_command_fails_the_deploy_with_its_last_output() -> Result<()> {
    let f = Fixture::new()?;
    write(&f.source.join("t.txt"), "{{.Input.tag}}");
    let err = exec_err(f.deploy(
        json!({
            "command": ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i >&2; done; exit 3", "sh", "<TPL>"],
            "template": {"path": "t.txt"},
        }),
        &image(),
    ));
    let shown_tpl = f.data.join("exec");
    assert!(
        err.starts_with(&format!(
            "command `sh -c for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i >&2; done; exit 3 sh {}",
            shown_tpl.display()
        )),
        "{err}"
    );
    assert!(
        err.ends_with(
            "/t.txt` exited with code 3; last output: line 3 | line 4 | line 5 | line 6 | line 7 | line 8 | line 9 | line 10 | line 11 | line 12"
        ),
        "{err}"
    );
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
    // Everything was streamed into the job.
    assert_eq!(f.lines.text(Stream::Stderr).len(), 12);

    let err = exec_err(f.deploy(json!({"command": ["false"]}), &image()));
    assert_eq!(
        err,
        "command `false` exited with code 1; it printed nothing"
    );
    let err = exec_err(f.deploy(json!({"command": ["sh", "-c", "kill -9 $$"]}), &image()));
    assert_eq!(
        err,
        "command `sh -c kill -9 $$` was killed by a signal; it printed nothing"
    );
    let err = exec_err(f.deploy(json!({"command": ["./no-such-deployer"]}), &image()));
    assert!(err.starts_with("starting `./no-such-deployer`: "), "{err}");
    let err = exec_err(f.deploy(json!({"command": ["true"], "dir": "nope"}), &image()));
    assert!(err.contains("working directory"), "{err}");
    Ok(())
}

/// A cancelled deploy kills the command's whole process group and removes
/// the rendered template.
#[test]
fn exec_cancelled_deploy_kills_the_process_group() -> Result<()> {
    let f = Fixture::new()?;
    write(&f.source.join("t.txt"), "x");
    let platform = Catalog::builtin().platform(
        "exec",
        &json!({
            "command": ["sh", "-c", "sleep 60 & echo $! > bg.pid; wait", "sh", "<TPL>"],
            "template": {"path": "t.txt"},
        }),
    )?;
    let mut c = f.ctx();
    let input = image();
    let pid_file = f.source.join("bg.pid");
    let result = async {
        tokio::time::timeout(Duration::from_secs(30), async {
            tokio::select! {
                r = platform.deploy(&mut c, &input) => Some(r),
                () = async {
                    while !fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n')) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                } => None,
            }
        })
        .await
    }
    .wait();
    assert!(
        matches!(result, Ok(None)),
        "the deploy should still be running"
    );
    let pid: i32 = fs::read_to_string(&pid_file)?.trim().parse()?;
    assert!(
        gone(pid),
        "background process {pid} of the command survived"
    );
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
    Ok(())
}

/// Whether `pid` ends (or is a zombie) within a few seconds.
fn gone(pid: i32) -> bool {
    for _ in 0..250 {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                let state = stat.rsplit(')').next().map(str::trim_start);
                if state.is_some_and(|s| s.starts_with('Z')) {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A command that leaves a process running with its output open still ends
/// the deploy.
#[test]
fn exec_does_not_wait_for_background_processes() -> Result<()> {
    let f = Fixture::new()?;
    let started = std::time::Instant::now();
    let result = f.deploy(
        json!({"command": ["sh", "-c", "sleep 60 & echo $! > bg.pid; echo started"]}),
        &image(),
    );
    let pid: i32 = fs::read_to_string(f.source.join("bg.pid"))?
        .trim()
        .parse()?;
    // Left running by design: stop it here.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    result?;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(f.lines.text(Stream::Stdout), vec!["started"]);
    assert!(f
        .lines
        .text(Stream::Info)
        .iter()
        .any(|l| l.contains("keeps its output open")));
    Ok(())
}

#[test]
fn exec_destroy_status_and_url() -> Result<()> {
    let f = Fixture::new()?;
    let platform = Catalog::builtin().platform("exec", &json!({"command": ["true"]}))?;
    assert_eq!(platform.output_type(), "exec.Deployment");
    for t in [
        "docker.Image",
        "files.Artifact",
        "files.StoredArtifact",
        "command.Output",
        "null.Artifact",
    ] {
        assert!(platform.input_types().contains(&t), "{t}");
    }
    let mut c = f.ctx();
    let value = platform.deploy(&mut c, &image()).wait()?;
    platform.destroy(&mut c, &value).wait()?;
    assert!(f
        .lines
        .text(Stream::Info)
        .contains(&"exec deployments are not destroyed: the command's effects stay".to_string()));
    let said = platform.destroy_interrupted(&mut c).wait()?;
    assert_eq!(
        said,
        "nothing: exec deployments are not destroyed: the command's effects stay"
    );
    let health = platform.status(&mut c, &value).wait()?;
    assert_eq!((health.total, health.alive), (0, 0));
    assert_eq!(health.state(), HealthState::Down);
    assert_eq!(platform.url(&value), None);
    Ok(())
}

fn config_err(config: serde_json::Value) -> (String, String) {
    match Catalog::builtin().platform("exec", &config) {
        Err(PluginError::Config {
            plugin,
            field,
            message,
        }) => {
            assert_eq!(plugin, "exec");
            (field, message)
        }
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error for {config}"),
    }
}

#[test]
fn exec_config_errors_name_the_field() {
    assert_eq!(
        config_err(json!({"command": 5})),
        (
            "command".to_string(),
            "invalid type: integer `5`, expected a string or a list of strings".to_string()
        )
    );
    assert_eq!(
        config_err(json!({"command": ["sh", {"a": 1}]})).0,
        "command[1]"
    );
    // A number where a string is wanted is converted, as HCL does.
    assert!(Catalog::builtin()
        .platform("exec", &json!({"command": ["sleep", 3]}))
        .is_ok());
    assert_eq!(
        config_err(json!({})),
        ("command".to_string(), "missing field `command`".to_string())
    );
    assert_eq!(config_err(serde_json::Value::Null).0, "command");
    let (field, message) = config_err(json!({"command": ["x"], "templates": {"path": "k8s"}}));
    assert_eq!(field, "templates");
    assert!(
        message.starts_with("unknown field `templates`, expected one of"),
        "{message}"
    );
    assert_eq!(config_err(json!({"command": []})).0, "command");
    assert_eq!(config_err(json!({"command": ""})).0, "command");
    assert_eq!(
        config_err(json!({"command": ["kubectl", "apply", "-f", "<TPL>"]})),
        (
            "command".to_string(),
            "uses <TPL> but there is no `template` block to render".to_string()
        )
    );
    assert_eq!(
        config_err(json!({"command": ["x"], "args": ["y"]})).0,
        "args"
    );
    assert_eq!(config_err(json!({"command": "x", "args": "y"})).0, "args");
    assert_eq!(
        config_err(json!({"command": "x", "env": {"A": [1]}})).0,
        "env.A"
    );
    assert_eq!(
        config_err(json!({"command": "x", "template": {"path": "a", "mode": "x"}})).0,
        "template.mode"
    );
    assert_eq!(
        config_err(json!({"command": "x", "template": {}})).0,
        "template"
    );
    assert_eq!(
        config_err(json!({"command": "x", "template": {"path": ""}})).0,
        "template.path"
    );
}

fn data() -> Data {
    Data {
        input_type: "test.Value".to_string(),
        input: Data::input_fields(&json!({
            "image": "web",
            "tag": "v1",
            "port": 8080,
            "local": true,
            "id": null,
            "service_port": 80,
            "nested": {"name": "n", "list": [1, 2]},
        })),
        env: [("HOME".to_string(), "/home/x".to_string())].into(),
        app: "web".to_string(),
        project: "demo".to_string(),
        workspace: "prod".to_string(),
    }
}

#[test]
fn template_actions() {
    let d = data();
    let ok = |t: &str| render(t, &d).unwrap_or_else(|e| panic!("{t}: {e}"));
    assert_eq!(ok("no actions {"), "no actions {");
    assert_eq!(ok("{{.Input.DockerImageFull}}"), "web:v1");
    assert_eq!(ok("{{   .Input.tag\t}}"), "v1");
    assert_eq!(
        ok("{{.Input.port}}/{{.Input.local}}/[{{.Input.id}}]"),
        "8080/true/[]"
    );
    assert_eq!(
        ok("{{.Input.nested.name}} {{.Input.nested.list}}"),
        "n [1,2]"
    );
    // Waypoint's Go field names: case and underscores do not matter.
    assert_eq!(ok("{{.Input.Image}}:{{.Input.ServicePort}}"), "web:80");
    assert_eq!(ok("a  {{- .App -}}  b"), "awebb");
    assert_eq!(ok("a {{- /* gone */}} b"), "a b");
    assert_eq!(
        ok("{{.Project}}/{{.Workspace}} {{.Env.HOME}}"),
        "demo/prod /home/x"
    );
    let err = |t: &str| {
        render(t, &d)
            .err()
            .unwrap_or_else(|| panic!("{t} rendered"))
    };
    assert_eq!(
        err("x\n\ny {{ .Input.tag"),
        "line 3: `{{` is never closed by `}}`"
    );
    assert_eq!(
        err("{{ .Foo }}"),
        "line 1: unknown name `.Foo` (known: .Input.NAME, .Env.NAME, .App, .Project, .Workspace)"
    );
    assert_eq!(
        err("{{ .Input.nested.name.more }}"),
        "line 1: unknown name `.Input.nested.name.more`: .Input.nested.name has no fields"
    );
    assert!(err("{{ .Input }}").starts_with("line 1: unknown name `.Input`"));
    assert!(err("{{ .Input.tag | upper }}").contains("unsupported template action"));
    assert!(err("{{ template \"x\" }}").contains("unsupported template action"));
    // Without image and tag, no computed names.
    let plain = Data::input_fields(&json!({"path": "/a"}));
    assert!(!plain.contains_key("DockerImageFull"));
}
