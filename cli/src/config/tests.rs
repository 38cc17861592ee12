use super::*;
use serde_json::json;
use std::process::Command;

const EXAMPLE: &str = r#"project = "hello"

app "web" {
  path   = "./web"
  labels = { team = "x" }
  config {
    env = { GREETING = "hi" }
  }
  build {
    use "files" {
      path = "."
    }
    hook {
      when       = "before"
      command    = ["echo", "hi"]
      on_failure = "continue"
    }
    registry {
      use "files" {
        directory = "/tmp/x"
      }
    }
  }
  deploy {
    use "process" {
      command = ["python3", "app.py"]
      count   = 2
    }
  }
  release {
    use "process" {}
  }
}
"#;

const EXAMPLE_JSON: &str = r#"{
  "project": "hello",
  "app": {
    "web": {
      "path": "./web",
      "labels": {"team": "x"},
      "config": {"env": {"GREETING": "hi"}},
      "build": {
        "use": {"files": {"path": "."}},
        "hook": [{"when": "before", "command": ["echo", "hi"], "on_failure": "continue"}],
        "registry": {"use": {"files": {"directory": "/tmp/x"}}}
      },
      "deploy": {
        "use": {
          "process": {
            "command": ["python3", "app.py"],
            "count": 2
          }
        }
      },
      "release": {"use": {"process": {}}}
    }
  }
}
"#;

fn loc(file: &str, line: usize, column: usize) -> Location {
    Location::new(file, line, column)
}

fn parse(src: &str) -> Result<Config, ConfigError> {
    parse_str(src, Path::new("cairn.hcl"))
}

/// The error's one-line Display, asserting it is one line.
fn err_of(src: &str, file: &str) -> String {
    let e = parse_str(src, Path::new(file)).expect_err("expected an error");
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s:?}");
    s
}

/// `src` evaluates, but its (first) app cannot run: the error starts with `prefix`, holds
/// `needle` and is one line (a name Cairn cannot hold).
fn assert_blocked(src: &str, prefix: &str, needle: &str) {
    let cfg = parse(src).expect("a file with a blocker evaluates");
    let e = cfg.runnable(&cfg.apps[0]).expect_err("blocked").to_string();
    assert!(!e.contains('\n'), "multi-line error: {e:?}");
    assert!(e.starts_with(prefix), "expected prefix {prefix:?} in {e:?}");
    assert!(e.contains(needle), "expected {needle:?} in {e:?}");
}

/// `src` is valid, and its first gap reads `want…`.
fn assert_gap(src: &str, want: &str) {
    let cfg = parse(src).expect("a file with a gap is valid");
    let gap = cfg.gaps.first().map(|g| g.to_string()).unwrap_or_default();
    assert!(
        gap.starts_with(want),
        "expected a gap {want:?}, got {gap:?}"
    );
}

fn assert_err(src: &str, prefix: &str, needle: &str) {
    let s = err_of(src, "cairn.hcl");
    assert!(s.starts_with(prefix), "expected prefix {prefix:?} in {s:?}");
    assert!(s.contains(needle), "expected {needle:?} in {s:?}");
}

/// A minimal valid app body to build error cases from.
fn app(body: &str) -> String {
    format!("project = \"p\"\napp \"web\" {{\n{body}\n}}\n")
}

const BUILD: &str = "  build {\n    use \"files\" {}\n  }";
const DEPLOY: &str = "  deploy {\n    use \"process\" {}\n  }";

#[test]
fn example_parses_with_locations() {
    let cfg = parse(EXAMPLE).expect("example parses");
    let f = "cairn.hcl";
    assert_eq!(cfg.file, PathBuf::from(f));
    assert_eq!(cfg.project, "hello");
    assert_eq!(cfg.apps.len(), 1);
    let web = &cfg.apps[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.location, loc(f, 3, 1));
    assert_eq!(web.path, PathBuf::from("./web"));
    assert_eq!(cfg.app_dir(web), PathBuf::from("./web"));
    assert_eq!(web.labels, BTreeMap::from([("team".into(), "x".into())]));
    assert_eq!(
        web.config_env,
        BTreeMap::from([("GREETING".into(), "hi".into())])
    );

    let b = &web.build.as_ref().expect("stage").builder;
    assert_eq!(b.name, "files");
    assert_eq!(b.config, json!({"path": "."}));
    assert_eq!(b.location, loc(f, 10, 5));
    assert_eq!(b.field_locations["path"], loc(f, 11, 7));
    assert_eq!(
        web.build.as_ref().expect("stage").hooks,
        vec![Hook {
            when: HookWhen::Before,
            command: vec!["echo".into(), "hi".into()],
            on_failure: OnFailure::Continue,
            location: loc(f, 13, 5),
        }]
    );
    let reg = web
        .build
        .as_ref()
        .expect("stage")
        .registry
        .as_ref()
        .expect("registry");
    assert_eq!(reg.plugin.name, "files");
    assert_eq!(reg.plugin.config, json!({"directory": "/tmp/x"}));
    assert_eq!(reg.plugin.location, loc(f, 19, 7));
    assert_eq!(reg.plugin.field_locations["directory"], loc(f, 20, 9));
    assert!(reg.hooks.is_empty());

    let d = &web.deploy.as_ref().expect("stage").plugin;
    assert_eq!(d.name, "process");
    assert_eq!(
        d.config,
        json!({"command": ["python3", "app.py"], "count": 2})
    );
    assert_eq!(d.location, loc(f, 25, 5));
    assert_eq!(d.field_locations["command"], loc(f, 26, 7));
    assert_eq!(d.field_locations["count"], loc(f, 27, 7));
    assert_eq!(d.location_of("count"), &loc(f, 27, 7));
    assert_eq!(d.location_of("missing"), &loc(f, 25, 5));

    let r = web.release.as_ref().expect("release");
    assert_eq!(r.plugin.name, "process");
    assert_eq!(r.plugin.config, json!({}));
    assert_eq!(r.plugin.location, loc(f, 31, 5));
    assert!(r.plugin.field_locations.is_empty());

    assert_eq!(cfg.app(None).expect("only app").name, "web");
    assert_eq!(cfg.app(Some("web")).expect("by name").name, "web");
}

/// Replaces every location with a fixed one, to compare two forms' structures.
fn without_locations(mut cfg: Config) -> Config {
    let z = Location::new("x", 0, 0);
    let fix_use = |u: &mut PluginUse| {
        u.location = z.clone();
        for l in u.field_locations.values_mut() {
            *l = z.clone();
        }
    };
    let fix_hooks = |hs: &mut Vec<Hook>| hs.iter_mut().for_each(|h| h.location = z.clone());
    cfg.file = PathBuf::from("x");
    for a in &mut cfg.apps {
        a.location = z.clone();
        fix_use(&mut a.build.as_mut().expect("stage").builder);
        fix_hooks(&mut a.build.as_mut().expect("stage").hooks);
        for s in [
            a.build.as_mut().expect("stage").registry.as_mut(),
            a.deploy.as_mut(),
            a.release.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            fix_use(&mut s.plugin);
            fix_hooks(&mut s.hooks);
        }
    }
    cfg
}

#[test]
fn json_form_matches_hcl_form() {
    let f = "cairn.hcl.json";
    let from_json = parse_str(EXAMPLE_JSON, Path::new(f)).expect("json parses");
    let from_hcl = parse(EXAMPLE).expect("hcl parses");
    assert_eq!(from_json.file, PathBuf::from(f));
    assert_eq!(
        without_locations(from_json.clone()),
        without_locations(from_hcl)
    );

    // Locations point into the JSON text: blocks at their innermost label key (or the
    // element of an array), attributes at their key.
    let web = &from_json.apps[0];
    assert_eq!(web.location, loc(f, 4, 5));
    assert_eq!(
        web.build.as_ref().expect("stage").builder.location,
        loc(f, 9, 17)
    );
    assert_eq!(
        web.build.as_ref().expect("stage").builder.field_locations["path"],
        loc(f, 9, 27)
    );
    assert_eq!(
        web.build.as_ref().expect("stage").hooks[0].location,
        loc(f, 10, 18)
    );
    let d = &web.deploy.as_ref().expect("stage").plugin;
    assert_eq!(d.location, loc(f, 15, 11));
    assert_eq!(d.field_locations["command"], loc(f, 16, 13));
    assert_eq!(d.field_locations["count"], loc(f, 17, 13));
}

#[test]
fn json_form_details() {
    // A comment key, apps as an array of labeled objects, templates in strings, ignored blocks.
    let src = r#"{
  "//": "comment",
  "project": "p",
  "runner": {"enabled": true},
  "variable": {"x": {"default": 1}},
  "app": [
    {"a": {"build": {"use": {"files": {"tag": "t-${timestamp()}", "raw": "C:\\dir"}}},
           "deploy": {"use": {"process": {}}}}},
    {"b": {"build": {"use": {"files": {}}}, "deploy": {"use": {"process": {}}},
           "url": {"auto_hostname": false}}}
  ]
}"#;
    let cfg = parse_str(src, Path::new("c.hcl.json")).expect("parses");
    let names: Vec<&str> = cfg.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let c = &cfg.apps[0].build.as_ref().expect("stage").builder.config;
    let tag = c["tag"].as_str().expect("tag is a string");
    assert!(tag.starts_with("t-20") && tag.ends_with('Z'), "{tag}");
    assert_eq!(c["raw"], json!("C:\\dir"));
}

#[test]
fn json_errors_have_locations() {
    let f = "c.hcl.json";
    let s = err_of("{\n  \"project\": \"p\",\n  \"app\": {\n}", f);
    assert!(s.starts_with("c.hcl.json:4:2: syntax error"), "{s}");
    let s = err_of("{\n  \"project\": \"p\" \"x\"\n}", f);
    assert!(s.starts_with("c.hcl.json:2:18: syntax error"), "{s}");
    assert!(s.contains("expected ',' or '}'"), "{s}");
    let s = err_of("{\n  \"project\": \"p\",\n  \"bogus\": 1\n}", f);
    assert!(s.starts_with("c.hcl.json:3:3: unknown key `bogus`"), "{s}");
    assert!(s.contains("attributes project"), "{s}");
    let s = err_of(
        "{\"project\": \"p\",\n \"app\": {\"w\": {\"build\": 3}}}",
        f,
    );
    assert!(s.starts_with("c.hcl.json:2:25: block `build`"), "{s}");
    assert!(s.contains("must be an object"), "{s}");
    let s = err_of("{\"project\": \"p\", \"project\": \"q\"}", f);
    assert!(s.starts_with("c.hcl.json:1:18: attribute `project`"), "{s}");
    assert!(s.contains("defined twice (first at 1:2)"), "{s}");
}

#[test]
fn waypoint_style_file_is_accepted() {
    let src = r#"project = "legacy"

runner {
  enabled = true
  data_source "git" {
    url = "https://example.com/x.git"
  }
}

variable "image" {
  default = "x"
  type    = string
}

plugin "custom" {
  type {
    mapper = true
  }
}

url {
  auto_hostname = false
}

app "api" {
  labels = {
    "service" = "api"
    "env"     = "dev"
  }

  url {
    auto_hostname = true
  }

  runner {
    profile = "x"
  }

  build {
    use "docker" {
      buildkit = false
      auth {
        username = "u"
        password = "p"
      }
    }
    registry {
      use "docker" {
        image = "registry.example.com/api"
        tag   = "latest"
        local = false
      }
    }
  }

  deploy {
    use "docker" {
      service_port = 8080
      static_environment = {
        "PORT" : "8080"
      }
    }
  }
}
"#;
    let cfg = parse_str(src, Path::new("dir/waypoint.hcl")).expect("waypoint.hcl parses");
    assert_eq!(cfg.project, "legacy");
    assert_eq!(cfg.dir(), PathBuf::from("dir"));
    let api = cfg.app(None).expect("one app");
    assert_eq!(api.name, "api");
    assert_eq!(api.path, PathBuf::from("."));
    assert_eq!(cfg.app_dir(api), PathBuf::from("dir/."));
    assert_eq!(api.labels["service"], "api");
    assert_eq!(api.location, Location::new("dir/waypoint.hcl", 25, 1));
    // A nested block in a use body becomes an object value.
    assert_eq!(
        api.build.as_ref().expect("stage").builder.config,
        json!({"buildkit": false, "auth": {"username": "u", "password": "p"}})
    );
    assert_eq!(
        api.build.as_ref().expect("stage").builder.field_locations["auth"],
        Location::new("dir/waypoint.hcl", 42, 7)
    );
    assert_eq!(
        api.deploy.as_ref().expect("stage").plugin.config["static_environment"]["PORT"],
        "8080"
    );
    assert!(api.release.is_none());
    assert_eq!(
        api.build
            .as_ref()
            .expect("stage")
            .registry
            .as_ref()
            .expect("registry")
            .plugin
            .config["tag"],
        "latest"
    );
}

#[test]
fn repeated_and_labeled_blocks_in_use_bodies() {
    let src = app(&format!(
        r#"{BUILD}
  deploy {{
    use "k8s" {{
      port {{
        name = "http"
      }}
      port {{
        name = "grpc"
      }}
      probe "live" {{
        path = "/healthz"
      }}
    }}
  }}"#
    ));
    let cfg = parse(&src).expect("parses");
    let c = &cfg.apps[0].deploy.as_ref().expect("stage").plugin.config;
    assert_eq!(
        c,
        &json!({
            "port": [{"name": "http"}, {"name": "grpc"}],
            "probe": {"live": {"path": "/healthz"}}
        })
    );
    assert_eq!(
        cfg.apps[0]
            .deploy
            .as_ref()
            .expect("stage")
            .plugin
            .field_locations["port"],
        loc("cairn.hcl", 8, 7)
    );
}

#[test]
fn config_env_merges_top_level_and_app() {
    let src = format!(
        r#"project = "p"
config {{
  env = {{ A = "top", B = "top", PORT = 8080 }}
}}
app "one" {{
  config {{
    env = {{ B = "app", C = "app" }}
  }}
{BUILD}
{DEPLOY}
}}
app "two" {{
{BUILD}
{DEPLOY}
}}
"#
    );
    let cfg = parse(&src).expect("parses");
    let one = cfg.app(Some("one")).expect("one");
    let want: BTreeMap<String, String> =
        [("A", "top"), ("B", "app"), ("C", "app"), ("PORT", "8080")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(one.config_env, want);
    let two = cfg.app(Some("two")).expect("two");
    assert_eq!(two.config_env["B"], "top");
    assert_eq!(two.config_env.len(), 3);
    // The scopes are also kept apart, for syncing: top level = project, app block = app.
    let strings = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        cfg.env,
        strings(&[("A", "top"), ("B", "top"), ("PORT", "8080")])
    );
    assert_eq!(one.app_env, strings(&[("B", "app"), ("C", "app")]));
    assert!(two.app_env.is_empty());
}

#[test]
fn config_env_names_must_be_env_var_names_and_errors_point_at_the_key() {
    // In an app block: the error points at the bad key, not at `env`.
    let src = format!(
        "project = \"p\"\napp \"web\" {{\n  config {{\n    env = {{\n      GOOD = \"1\"\n      \"BAD-NAME\" = \"2\"\n    }}\n  }}\n{BUILD}\n{DEPLOY}\n}}\n"
    );
    assert_err(
        &src,
        "cairn.hcl:6:7:",
        "invalid config variable name \"BAD-NAME\" in `env`",
    );
    // At top level, a name starting with a digit.
    let src = format!(
        "project = \"p\"\nconfig {{\n  env = {{ \"1X\" = \"v\" }}\n}}\napp \"web\" {{\n{BUILD}\n{DEPLOY}\n}}\n"
    );
    assert_err(&src, "cairn.hcl:3:11:", "cannot start with a digit");
    // An empty name.
    let src = format!(
        "project = \"p\"\nconfig {{\n  env = {{ \"\" = \"v\" }}\n}}\napp \"web\" {{\n{BUILD}\n{DEPLOY}\n}}\n"
    );
    assert_err(&src, "cairn.hcl:3:11:", "the name is empty");
    // Not a map.
    let src = format!(
        "project = \"p\"\nconfig {{\n  env = [\"A\"]\n}}\napp \"web\" {{\n{BUILD}\n{DEPLOY}\n}}\n"
    );
    assert_err(&src, "cairn.hcl:3:3:", "must be a map of strings");
    // A key computed by an expression: located at the attribute.
    let src = format!(
        "project = \"p\"\nconfig {{\n  env = {{ (\"A.B\") = \"v\" }}\n}}\napp \"web\" {{\n{BUILD}\n{DEPLOY}\n}}\n"
    );
    assert_err(
        &src,
        "cairn.hcl:3:3:",
        "invalid config variable name \"A.B\"",
    );
}

#[test]
fn config_env_names_are_checked_in_the_json_form_too() {
    let src = r#"{
  "project": "p",
  "config": {"env": {"OK": "1", "no good": "2"}},
  "app": {"web": {
    "build": {"use": {"files": {}}},
    "deploy": {"use": {"process": {"command": ["true"]}}}
  }}
}"#;
    let e = err_of(src, "cairn.hcl.json");
    assert!(
        e.starts_with("cairn.hcl.json:3:33:") && e.contains("\"no good\""),
        "{e}"
    );
}

#[test]
fn app_selection() {
    let src = format!(
        "project = \"p\"\napp \"web\" {{\n{BUILD}\n{DEPLOY}\n}}\napp \"api\" {{\n{BUILD}\n{DEPLOY}\n}}\n"
    );
    let cfg = parse(&src).expect("parses");
    let names: Vec<&str> = cfg.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["web", "api"]);
    let e = cfg.app(None).expect_err("ambiguous").to_string();
    assert_eq!(
        e,
        "cairn.hcl: several apps are defined (web, api); name the one to use"
    );
    let e = cfg.app(Some("db")).expect_err("missing").to_string();
    assert_eq!(e, "cairn.hcl: no app named \"db\"; defined: web, api");
    assert_eq!(cfg.app(Some("api")).expect("api").name, "api");
}

#[test]
fn hooks_in_every_stage_and_default_on_failure() {
    let src = app(&format!(
        r#"{BUILD}
  deploy {{
    hook {{
      when    = "after"
      command = ["./notify", "deployed"]
    }}
    use "process" {{}}
  }}
  release {{
    use "process" {{}}
    hook {{
      when    = "before"
      command = ["true"]
    }}
  }}"#
    ));
    let cfg = parse(&src).expect("parses");
    let a = &cfg.apps[0];
    assert_eq!(a.deploy.as_ref().expect("stage").hooks.len(), 1);
    assert_eq!(
        a.deploy.as_ref().expect("stage").hooks[0].when,
        HookWhen::After
    );
    assert_eq!(
        a.deploy.as_ref().expect("stage").hooks[0].on_failure,
        OnFailure::Fail
    );
    assert_eq!(
        a.deploy.as_ref().expect("stage").hooks[0].command,
        ["./notify", "deployed"]
    );
    assert_eq!(
        a.deploy.as_ref().expect("stage").hooks[0].location,
        loc("cairn.hcl", 7, 5)
    );
    let r = a.release.as_ref().expect("release");
    assert_eq!(r.hooks[0].when, HookWhen::Before);
    assert_eq!(r.hooks[0].command, ["true"]);
}

#[test]
fn errors_carry_file_line_column() {
    // Malformed HCL: hcl-rs's own line and column.
    assert_err(
        "project = \"p\"\napp \"web\" {\n  path = \n}\n",
        "cairn.hcl:3:",
        "syntax error",
    );
    // The HCL spec allows only one attribute in a one-line block.
    assert_err(
        "project = \"p\"\nx { a = 1 b = 2 }\n",
        "cairn.hcl:2:11: syntax error",
        "expected `}`",
    );
    // Missing project / no app: valid files with a gap at the start of the file,
    // which commands that run an app refuse.
    assert_gap(
        &format!("app \"web\" {{\n{BUILD}\n{DEPLOY}\n}}\n"),
        "cairn.hcl:1:1: no `project` attribute",
    );
    assert_gap("project = \"p\"\n", "cairn.hcl:1:1: no app defined");
    // Duplicate app name: the second one, naming the first.
    assert_err(
        &format!("project = \"p\"\napp \"web\" {{\n{BUILD}\n{DEPLOY}\n}}\napp \"web\" {{\n{BUILD}\n{DEPLOY}\n}}\n"),
        "cairn.hcl:10:1: ",
        "app \"web\" is defined twice (first at 2:1)",
    );
    // Missing stages: gaps at the app block; `runnable` refuses the app with it.
    assert_gap(
        &app(DEPLOY),
        "cairn.hcl:2:1: app \"web\" has no build stage",
    );
    assert_gap(
        &app(BUILD),
        "cairn.hcl:2:1: app \"web\" has no deploy stage",
    );
    let cfg = parse(&app(BUILD)).expect("valid");
    assert_eq!(
        cfg.runnable(&cfg.apps[0])
            .expect_err("no deploy")
            .to_string(),
        "cairn.hcl:2:1: app \"web\" has no deploy stage"
    );
    // `use` missing / twice.
    assert_gap(
        &app(&format!("{BUILD}\n  deploy {{\n  }}")),
        "cairn.hcl:6:3: the deploy stage of app \"web\" has no `use` block",
    );
    assert_err(
        &app(&format!(
            "  build {{\n    use \"a\" {{}}\n    use \"b\" {{}}\n  }}\n{DEPLOY}"
        )),
        "cairn.hcl:5:5: ",
        "more than one `use` block (first at 4:5)",
    );
    // Hook fields.
    let hook = |body: &str| {
        app(&format!(
            "  build {{\n    use \"a\" {{}}\n    hook {{\n{body}\n    }}\n  }}\n{DEPLOY}"
        ))
    };
    assert_err(
        &hook("      when = \"during\"\n      command = [\"x\"]"),
        "cairn.hcl:6:7: ",
        "hook `when` must be \"before\" or \"after\"",
    );
    assert_err(
        &hook("      when = \"before\"\n      command = \"echo hi\""),
        "cairn.hcl:7:7: ",
        "hook `command` must be a non-empty list of strings",
    );
    assert_err(
        &hook("      when = \"before\"\n      command = [\"echo\", 1]"),
        "cairn.hcl:7:7: ",
        "a number in the list",
    );
    assert_err(
        &hook("      when = \"before\"\n      command = [\"x\"]\n      on_failure = \"ignore\""),
        "cairn.hcl:8:7: ",
        "`on_failure` must be \"fail\" or \"continue\"",
    );
    assert_err(
        &hook("      command = [\"x\"]"),
        "cairn.hcl:5:5: ",
        "hook has no `when`",
    );
    // Evaluation errors: the attribute whose expression failed.
    let with_use = |attr: &str| {
        app(&format!(
            "  build {{\n    use \"a\" {{\n      ok = 1\n{attr}\n    }}\n  }}\n{DEPLOY}"
        ))
    };
    assert_err(
        &with_use("      tag = nope()"),
        "cairn.hcl:6:7: cannot evaluate `tag`: ",
        "undefined function `nope`",
    );
    let s = err_of(&with_use("      tag = nope()"), "cairn.hcl");
    assert!(
        s.contains("(available: abs, abspath, alltrue,") && s.contains(" yamldecode, "),
        "{s}"
    );
    assert_err(
        &with_use("      tag = \"v-${var.version}\""),
        "cairn.hcl:6:7: cannot evaluate `tag`: ",
        "undeclared input variable `version`: declare it with variable \"version\" { type = string }",
    );
    assert_err(
        &with_use("      n = 1 + \"x\""),
        "cairn.hcl:6:7: cannot evaluate `n`: ",
        "binary operator `+` is not applicable",
    );
    assert_err(
        "project = shout(\"P\")\n",
        "cairn.hcl:1:1: cannot evaluate `project`",
        "undefined function `shout`",
    );
}

#[test]
fn unknown_and_misplaced_names_are_rejected() {
    assert_err(
        "project = \"p\"\nfrobnicate {\n}\n",
        "cairn.hcl:2:1: unknown block `frobnicate` at the top level",
        "allowed here: attributes project, labels; blocks app, config, variable, runner, url, plugin, pipeline",
    );
    assert_err(
        "project = \"p\"\nname = \"x\"\n",
        "cairn.hcl:2:1: unknown attribute `name` at the top level",
        "attributes project",
    );
    assert_err(
        &app(&format!("{BUILD}\n{DEPLOY}\n  deploy_later {{\n  }}")),
        "cairn.hcl:9:3: unknown block `deploy_later` in `app` \"web\"",
        "blocks config, build, deploy, release, url, runner",
    );
    assert_err(
        &app(&format!("  build {{\n    use \"a\" {{}}\n    hook {{\n      when = \"before\"\n      command = [\"x\"]\n      shell = true\n    }}\n  }}\n{DEPLOY}")),
        "cairn.hcl:8:7: unknown attribute `shell` in `hook`",
        "attributes when, command, on_failure",
    );
    assert_err(
        &app(&format!("  build = {{}}\n{DEPLOY}")),
        "cairn.hcl:3:3: ",
        "`build` in `app` \"web\" is a block, not an attribute",
    );
    assert_err(
        &app(&format!("  path {{\n  }}\n{BUILD}\n{DEPLOY}")),
        "cairn.hcl:3:3: ",
        "is an attribute, not a block",
    );
    assert_err(
        &format!("project = \"p\"\napp {{\n{BUILD}\n{DEPLOY}\n}}\n"),
        "cairn.hcl:2:1: ",
        "block `app` at the top level needs 1 label (app name), found 0: write app \"<app name>\" { … }",
    );
    assert_err(
        &app(&format!("  build {{\n    use {{}}\n  }}\n{DEPLOY}")),
        "cairn.hcl:4:5: ",
        "needs 1 label (plugin name)",
    );
    assert_err(
        &app(&format!("  build {{\n    use \"\" {{}}\n  }}\n{DEPLOY}")),
        "cairn.hcl:4:5: ",
        "the build stage of app \"web\" has a `use` block with an empty plugin name",
    );
    assert_err(
        &app(&format!(
            "{BUILD}\n{DEPLOY}\n  deploy {{\n    use \"x\" {{}}\n  }}"
        )),
        "cairn.hcl:9:3: ",
        "more than one `deploy` block",
    );
    assert_blocked(
        &format!("project = \"p\"\napp \"my app\" {{\n{BUILD}\n{DEPLOY}\n}}\n"),
        "cairn.hcl:2:1: ",
        "invalid app name \"my app\"",
    );
    // Control characters are named escaped, never printed raw (a terminal
    // would act on them).
    assert_blocked(
        &format!("project = \"p\"\napp \"we\u{1b}[31mb\" {{\n{BUILD}\n{DEPLOY}\n}}\n"),
        "cairn.hcl:2:1: ",
        "invalid app name \"we\\u{1b}[31mb\"",
    );
    assert_blocked(
        &format!("project = \"p\\u001b[2J\"\napp \"web\" {{\n{BUILD}\n{DEPLOY}\n}}\n"),
        "cairn.hcl:1:1: ",
        "`project` \"p\\u{1b}[2J\" holds '\\u{1b}'",
    );
    assert_blocked(
        &format!(
            "project = \"p\"\napp \"{}\" {{\n{BUILD}\n{DEPLOY}\n}}\n",
            "a".repeat(49)
        ),
        "cairn.hcl:2:1: ",
        "at most 48",
    );
    assert_err(
        &app(&format!("  path = 3\n{BUILD}\n{DEPLOY}")),
        "cairn.hcl:3:3: ",
        "`path` must be a string",
    );
    assert_err(
        &app(&format!("  labels = {{ a = [1] }}\n{BUILD}\n{DEPLOY}")),
        "cairn.hcl:3:3: ",
        "`labels` must be a map of strings",
    );
}

#[test]
fn find_and_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = find(dir.path()).expect_err("empty dir").to_string();
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    assert!(
        e.contains("cairn.hcl, cairn.hcl.json, waypoint.hcl, waypoint.hcl.json"),
        "{e}"
    );

    let src = format!("project = \"p\"\napp \"web\" {{\n{BUILD}\n{DEPLOY}\n}}\n");
    std::fs::write(dir.path().join("waypoint.hcl.json"), "{}").expect("write");
    assert_eq!(
        find(dir.path()).expect("found"),
        dir.path().join("waypoint.hcl.json")
    );
    std::fs::write(dir.path().join("waypoint.hcl"), &src).expect("write");
    assert_eq!(
        find(dir.path()).expect("found"),
        dir.path().join("waypoint.hcl")
    );
    std::fs::write(dir.path().join("cairn.hcl.json"), EXAMPLE_JSON).expect("write");
    assert_eq!(
        find(dir.path()).expect("found"),
        dir.path().join("cairn.hcl.json")
    );
    std::fs::write(dir.path().join("cairn.hcl"), &src).expect("write");
    let path = find(dir.path()).expect("found");
    assert_eq!(path, dir.path().join("cairn.hcl"));

    let cfg = load(&path).expect("loads");
    assert_eq!(cfg.file, path);
    assert_eq!(cfg.apps[0].location, Location::new(&path, 2, 1));
    assert_eq!(cfg.app_dir(&cfg.apps[0]), dir.path().join("."));
    let json_cfg = load(&dir.path().join("cairn.hcl.json")).expect("json loads");
    assert_eq!(json_cfg.project, "hello");

    let missing = dir.path().join("nope.hcl");
    let e = load(&missing).expect_err("missing file");
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(e
        .to_string()
        .starts_with(&format!("{}: cannot read config", missing.display())));
    // A bad file read from disk names its path in the error.
    std::fs::write(dir.path().join("cairn.hcl"), "project = 3\n").expect("write");
    let e = load(&path).expect_err("bad project").to_string();
    assert!(
        e.starts_with(&format!(
            "{}:1:1: `project` must be a string",
            path.display()
        )),
        "{e}"
    );
}

#[test]
fn timestamp_is_rfc3339_utc_and_stable_within_a_load() {
    let src = app(&format!(
        "  build {{\n    use \"a\" {{\n      t1 = timestamp()\n      t2 = \"at ${{timestamp()}}\"\n    }}\n  }}\n{DEPLOY}"
    ));
    let before = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("ns");
    let cfg = parse(&src).expect("parses");
    let after = time::OffsetDateTime::now_utc();
    let c = &cfg.apps[0].build.as_ref().expect("stage").builder.config;
    let t1 = c["t1"].as_str().expect("string");
    assert_eq!(t1.len(), "2024-05-01T12:00:00Z".len(), "{t1}");
    assert!(t1.ends_with('Z'), "{t1}");
    let parsed = time::OffsetDateTime::parse(t1, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    assert!(
        parsed >= before && parsed <= after,
        "{t1} not between {before} and {after}"
    );
    assert_eq!(c["t2"], json!(format!("at {t1}")));
}

#[test]
fn path_variables() {
    let src = app(&format!(
        "  path = \"svc\"\n  build {{\n    use \"a\" {{\n      dir = path.app\n      root = path.project\n    }}\n  }}\n{DEPLOY}"
    ));
    let cfg = parse_str(&src, Path::new("proj/cairn.hcl")).expect("parses");
    let c = &cfg.apps[0].build.as_ref().expect("stage").builder.config;
    assert_eq!(
        c["dir"],
        json!(Path::new("proj").join("svc").display().to_string())
    );
    assert_eq!(c["root"], json!("proj"));
}

fn git_available() -> bool {
    Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn git_functions_in_a_temp_repo() {
    if !git_available() {
        eprintln!("git not available: skipping git_functions_in_a_temp_repo");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    git(d, &["init", "-q"]);
    std::fs::write(d.join("a.txt"), "a").expect("write");
    git(d, &["add", "a.txt"]);
    git(d, &["commit", "-q", "-m", "one"]);
    let head = git(d, &["rev-parse", "HEAD"]);
    let short = git(d, &["rev-parse", "--short", "HEAD"]);

    let src = app(&format!(
        "  build {{\n    use \"docker\" {{\n      hash = gitrefhash()\n      tag = gitrefpretty()\n    }}\n  }}\n{DEPLOY}"
    ));
    let file = d.join("cairn.hcl");
    std::fs::write(&file, &src).expect("write");
    let cfg = load(&file).expect("loads");
    let c = &cfg.apps[0].build.as_ref().expect("stage").builder.config;
    assert_eq!(c["hash"], json!(head));
    assert_eq!(head.len(), 40);
    assert_eq!(c["tag"], json!(short));

    // A tag on HEAD wins (untracked files such as this cairn.hcl don't count as changes);
    // uncommitted changes to tracked files add "-dirty".
    git(d, &["tag", "v1.2.3"]);
    let cfg = load(&file).expect("loads");
    assert_eq!(
        cfg.apps[0].build.as_ref().expect("stage").builder.config["tag"],
        json!("v1.2.3")
    );
    std::fs::write(d.join("a.txt"), "changed").expect("write");
    let cfg = load(&file).expect("loads");
    assert_eq!(
        cfg.apps[0].build.as_ref().expect("stage").builder.config["tag"],
        json!("v1.2.3-dirty")
    );

    // The functions run in the config's directory, not the process's cwd: the same source
    // under a path in another repository gives that repository's hash.
    let other = tempfile::tempdir().expect("tempdir");
    git(other.path(), &["init", "-q"]);
    git(other.path(), &["commit", "-q", "--allow-empty", "-m", "x"]);
    let other_head = git(other.path(), &["rev-parse", "HEAD"]);
    let cfg = parse_str(&src, &other.path().join("cairn.hcl")).expect("parses");
    assert_eq!(
        cfg.apps[0].build.as_ref().expect("stage").builder.config["hash"],
        json!(other_head)
    );
    assert_ne!(other_head, head);
}

#[test]
fn git_functions_outside_a_repo_are_located_errors() {
    if !git_available() {
        eprintln!("git not available: skipping");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let inside_repo = Command::new("git")
        .arg("-C")
        .arg(dir.path())
        .args(["rev-parse", "HEAD"])
        .output()
        .is_ok_and(|o| o.status.success());
    if inside_repo {
        eprintln!("the temp dir is inside a git repository: skipping");
        return;
    }
    let src = app(&format!(
        "  build {{\n    use \"docker\" {{\n      tag = gitrefpretty()\n    }}\n  }}\n{DEPLOY}"
    ));
    let file = dir.path().join("cairn.hcl");
    let e = parse_str(&src, &file).expect_err("not a repo").to_string();
    assert!(
        e.starts_with(&format!(
            "{}:5:7: cannot evaluate `tag`: error calling function `gitrefpretty`",
            file.display()
        )),
        "{e}"
    );
    assert!(e.contains("not a git repository"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn json_strings_and_truncated_inputs() {
    let src = r#"{"project": "p\u00e9\ud83d\ude00\"q\"", "app": {"w": {"build": {"use": {"x": {"s": "tab\there\nline"}}}, "deploy": {"use": {"y": {"n": -1.5e2}}}}}}"#;
    let cfg = parse_str(src, Path::new("c.json")).expect("parses");
    assert_eq!(cfg.project, "pé😀\"q\"");
    assert_eq!(
        cfg.apps[0].build.as_ref().expect("stage").builder.config["s"],
        json!("tab\there\nline")
    );
    assert_eq!(
        cfg.apps[0].deploy.as_ref().expect("stage").plugin.config["n"],
        json!(-150)
    ); // HCL numbers: a whole float is an integer
       // Every truncation of valid documents is a one-line, located error (and never a panic).
    for (doc, file) in [
        (src, "c.json"),
        (EXAMPLE_JSON, "c.json"),
        (EXAMPLE, "cairn.hcl"),
    ] {
        for (i, _) in doc.char_indices().skip(1) {
            if let Err(e) = parse_str(&doc[..i], Path::new(file)) {
                let s = e.to_string();
                assert!(!s.contains('\n'), "{s:?}");
                assert!(e.location().is_some(), "{s}");
            }
        }
    }
}

#[test]
fn deep_nesting_is_a_clear_error_not_a_crash() {
    // 2,000 levels of blocks, brackets or parentheses used to overflow the
    // stack (SIGABRT) in the parser.
    let blocks = format!(
        "project = \"p\"\n{}{}",
        "b {\n".repeat(2_000),
        "}\n".repeat(2_000)
    );
    let limit = super::nesting::MAX_NESTING;
    // The 129th `b {` is on line 130 (after the project line).
    assert_err(
        &blocks,
        &format!("cairn.hcl:{}:", limit + 2),
        "nested more than 128 levels",
    );
    for (open, close) in [("[", "]"), ("(", ")")] {
        let src = format!(
            "project = \"p\"\nx = {}1{}\n",
            open.repeat(2_000),
            close.repeat(2_000)
        );
        assert_err(&src, "cairn.hcl:2:", "nested more than 128 levels");
    }
    // At the limit, the parser has stack enough (a test thread has 2 MiB;
    // the CLI's main thread 8).
    let at_limit = format!(
        "project = \"p\"\nx = {}1{}\napp \"web\" {{\n  build {{\n    use \"files\" {{}}\n  }}\n  deploy {{\n    use \"process\" {{ command = [\"true\"] }}\n  }}\n}}\n",
        "[".repeat(limit - 1),
        "]".repeat(limit - 1)
    );
    match parse(&at_limit) {
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().contains("nested more than"), "{e}"),
    }
}

/// 100,000 keys in one map used to take the parser ~80 s of CPU (its maps
/// cost n² to build); now such a map is refused at once, naming where it
/// starts, in both forms.
#[test]
fn a_map_past_the_entry_limit_is_refused_where_it_opens() {
    use super::nesting::MAX_ENTRIES;
    let n = MAX_ENTRIES * 10;
    let keys: Vec<String> = (0..n).map(|i| format!("      K{i} = \"v\"")).collect();
    let hcl = format!(
        "project = \"p\"\napp \"web\" {{\n  config {{\n    env = {{\n{}\n    }}\n  }}\n{BUILD}\n{DEPLOY}\n}}\n",
        keys.join("\n")
    );
    let started = std::time::Instant::now();
    let e = parse_str(&hcl, Path::new("cairn.hcl")).expect_err("refused");
    assert!(e.to_string().starts_with("cairn.hcl:4:11: "), "{e}");
    assert!(e.to_string().contains("more than 10000"), "{e}");
    let members: Vec<String> = (0..n).map(|i| format!("\"K{i}\": \"v\"")).collect();
    let json = format!(
        "{{\"project\": \"p\", \"app\": {{\"web\": {{\"config\": {{\"env\": {{{}}}}}}}}}}}",
        members.join(", ")
    );
    let e = parse_str(&json, Path::new("c.json")).expect_err("refused");
    assert!(e.to_string().contains("more than 10000 members"), "{e}");
    eprintln!("both refused in {:?}", started.elapsed());
}

/// Waypoint's labels: the project's (top level), every app's (which override
/// the project's key by key) and each stage's own.
#[test]
fn project_app_and_stage_labels() {
    let cfg = parse(
        r#"project = "p"
labels = { team = "core", tier = "backend" }

app "web" {
  labels = { tier = "frontend" }
  build {
    labels = { stage = "build" }
    use "files" {}
    registry {
      labels = { stage = "push" }
      use "files" {}
    }
  }
  deploy {
    labels = { "env/kind" = "staging" }
    use "process" { command = ["true"] }
  }
}
"#,
    )
    .expect("labels parse");
    assert_eq!(cfg.labels["team"], "core");
    let web = &cfg.apps[0];
    assert_eq!(
        web.labels,
        BTreeMap::from([
            ("team".into(), "core".into()),
            ("tier".into(), "frontend".into())
        ])
    );
    assert_eq!(web.build.as_ref().expect("stage").labels["stage"], "build");
    assert_eq!(
        web.build
            .as_ref()
            .expect("stage")
            .registry
            .as_ref()
            .expect("registry")
            .labels["stage"],
        "push"
    );
    assert_eq!(
        web.deploy.as_ref().expect("stage").labels["env/kind"],
        "staging"
    );
    // A label that is not a string is refused where it is written.
    let e = err_of(
        "project = \"p\"\nlabels = { n = [1] }\napp \"web\" {\n  build {\n    use \"files\" {}\n  }\n  deploy {\n    use \"process\" { command = [\"true\"] }\n  }\n}\n",
        "cairn.hcl",
    );
    assert!(
        e.starts_with("cairn.hcl:2:1:") && e.contains("`labels` must be a map of strings"),
        "{e}"
    );
}

/// The file, encoding and string functions, with paths relative to the
/// config's directory and located errors.
#[test]
fn file_encoding_and_string_functions() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("telegraf.conf"),
        "[agent]\n  interval = \"10s\"\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("blob.bin"), [0xff, 0x00, 0x7f]).expect("write");
    let src = r#"project = "p"

app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command  = [upper("run"), lower("NOW"), trimspace("  x  ")]
      pass_env = [
        file("telegraf.conf"),
        filebase64("blob.bin"),
        base64encode("hi"),
        base64decode("aGk="),
        jsonencode({ a = [1, true] }),
        jsondecode("{\"k\": \"v\"}").k,
      ]
    }
  }
}
"#;
    let cfg = parse_str(src, &dir.path().join("cairn.hcl")).expect("functions evaluate");
    let c = &cfg.apps[0].deploy.as_ref().expect("stage").plugin.config;
    assert_eq!(c["command"], serde_json::json!(["RUN", "now", "x"]));
    assert_eq!(
        c["pass_env"],
        serde_json::json!([
            "[agent]\n  interval = \"10s\"\n",
            "/wB/",
            "aGk=",
            "hi",
            "{\"a\":[1,true]}",
            "v"
        ])
    );
    // A missing file names itself, at the attribute.
    let e = parse_str(
        &src.replace("telegraf.conf", "missing.conf"),
        &dir.path().join("cairn.hcl"),
    )
    .expect_err("a missing file")
    .to_string();
    assert!(
        e.contains("cairn.hcl:10:7") && e.contains("missing.conf") && e.contains("cannot read"),
        "{e}"
    );
    // Bytes that are not text are pointed at filebase64.
    let e = parse_str(
        &src.replace("file(\"telegraf.conf\")", "file(\"blob.bin\")"),
        &dir.path().join("cairn.hcl"),
    )
    .expect_err("binary through file()")
    .to_string();
    assert!(e.contains("use filebase64"), "{e}");
}

/// Workspace-scoped config env is kept apart from the block's own (each is synced to its
/// scope), merged by precedence for builds; values reading a sensitive variable are secret.
#[test]
fn workspace_config_env_is_scoped_and_sensitive_values_are_secret() {
    let src = r#"project = "p"
variable "pw" {
  type      = string
  sensitive = true
  default   = "hunter2"
}
config {
  env = { A = "top", PW = var.pw }
  workspace "prod" {
    env = { A = "top-prod" }
  }
}
app "web" {
  config {
    env = { B = "app", DSN = "u:${var.pw}@db" }
    workspace "prod" {
      env = { B = "app-prod" }
    }
    workspace "staging" {
      env = { C = "never" }
    }
  }
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["true"]
    }
  }
}
"#;
    let inputs = Inputs {
        workspace: Some("prod".into()),
        ..Default::default()
    };
    let cfg = parse_str_with(src, Path::new("cairn.hcl"), &inputs).expect("valid");
    let web = &cfg.apps[0];
    let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(cfg.env, m(&[("A", "top"), ("PW", "hunter2")]));
    assert_eq!(cfg.workspace_env, m(&[("A", "top-prod")]));
    assert_eq!(web.app_env, m(&[("B", "app"), ("DSN", "u:hunter2@db")]));
    assert_eq!(web.workspace_app_env, m(&[("B", "app-prod")]));
    assert_eq!(
        web.config_env,
        m(&[
            ("A", "top-prod"),
            ("B", "app-prod"),
            ("DSN", "u:hunter2@db"),
            ("PW", "hunter2")
        ])
    );
    assert!(cfg.secret_env.contains("PW") && !cfg.secret_env.contains("A"));
    assert!(web.secret_env.contains("DSN") && !web.secret_env.contains("B"));
    // In the default workspace no scope applies.
    let cfg = parse(src).expect("valid");
    assert!(cfg.workspace_env.is_empty() && cfg.apps[0].workspace_app_env.is_empty());
    assert_eq!(cfg.apps[0].config_env["A"], "top");
}

#[test]
fn names_with_slashes_take_dashes_and_say_so() {
    let src = r#"project = "org/${workspace.name}/svc"
app "team/web" {
  config {
    env = { N = app.name }
  }
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["true"]
    }
  }
}
"#;
    let cfg = parse(src).expect("valid");
    assert_eq!(cfg.project, "org-default-svc");
    assert_eq!(cfg.apps[0].name, "team-web");
    // `app.name` stays as the file writes it (it often names an image).
    assert_eq!(cfg.apps[0].app_env["N"], "team/web");
    let notes: Vec<String> = cfg.notes.iter().map(|n| n.to_string()).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with(
            "cairn.hcl:1:1: project \"org/default/svc\" is \"org-default-svc\" in Cairn"
        ),
        "{notes:?}"
    );
    assert!(
        notes[1].contains("app \"team/web\" is \"team-web\" in Cairn"),
        "{notes:?}"
    );
    assert!(cfg.blockers.is_empty() && cfg.gaps.is_empty());
    cfg.runnable(&cfg.apps[0]).expect("runnable");

    // Two apps that become one name are refused.
    let twice = format!(
        "{}{}",
        src.replace("team/web", "team-web"),
        src.split_once('\n').expect("two lines").1
    );
    let e = parse(&twice)
        .expect_err("two apps named team-web")
        .to_string();
    assert!(
        e.contains(
            "app \"team/web\" is defined twice (first at 2:1), as Cairn names it: \"team-web\""
        ),
        "{e}"
    );
    // A plain name gives no note.
    assert!(parse(EXAMPLE).expect("valid").notes.is_empty());
}

fn stored(
    scope: cairn_protocol::types::ConfigScope,
    name: &str,
    value: &str,
) -> cairn_protocol::types::ConfigVar {
    cairn_protocol::types::ConfigVar {
        scope,
        name: name.into(),
        value: value.into(),
        secret: false,
    }
}

#[test]
fn values_the_cluster_stores_rank_above_defaults_and_below_what_is_given_here() {
    use cairn_protocol::config::input_var;
    use cairn_protocol::types::ConfigScope;
    let src = r#"project = "p"
variable "size" {
  type    = number
  default = 1
}
variable "region" {
  type = string
}
variable "pw" {
  type      = number
  sensitive = true
}
app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["true"]
    }
  }
}
"#;
    let path = Path::new("cairn.hcl");
    // Nothing stored: the variables without a default are missing, and that is all.
    let (r, names) = attempt_str(src, path, &Inputs::default()).expect("parses");
    let e = r.expect_err("no values");
    assert_eq!(e.only_missing_values(), Some(vec!["region", "pw"]));
    assert!(
        e.to_string()
            .contains("store it on the cluster with `cairn var set region VALUE`"),
        "{e}"
    );
    assert_eq!(names.project.as_deref(), Some("p"));
    assert_eq!(names.apps, vec!["web".to_string()]);
    assert_eq!(
        names.variables,
        vec![
            ("size".to_string(), false),
            ("region".to_string(), false),
            ("pw".to_string(), true)
        ]
    );

    let ws = |w: &str| ConfigScope::Workspace {
        project: "p".into(),
        workspace: w.into(),
    };
    let server = ServerValues {
        project: "p".into(),
        vars: vec![
            stored(ConfigScope::Project("p".into()), &input_var("size"), "2"),
            stored(ws("prod"), &input_var("size"), "3"),
            stored(ConfigScope::Project("p".into()), &input_var("region"), "eu"),
            stored(ConfigScope::Project("p".into()), &input_var("pw"), "42"),
            stored(ConfigScope::Project("p".into()), &input_var("gone"), "x"),
            stored(
                ConfigScope::Project("other".into()),
                &input_var("region"),
                "us",
            ),
        ],
    };
    let with = |workspace: Option<&str>, env: &[(&str, &str)]| Inputs {
        workspace: workspace.map(String::from),
        env: Some(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        server: Some(server.clone()),
        ..Default::default()
    };
    let value = |cfg: &Config, n: &str| {
        let v = cfg
            .variables
            .iter()
            .find(|v| v.name == n)
            .expect("declared")
            .value
            .clone()
            .expect("a value");
        (v.value.to_string(), v.origin.to_string())
    };
    let cfg = parse_str_with(src, path, &with(None, &[])).expect("valid with stored values");
    assert_eq!(
        value(&cfg, "size"),
        ("2".into(), "cluster (project)".into())
    );
    assert_eq!(
        value(&cfg, "region"),
        ("\"eu\"".into(), "cluster (project)".into())
    );
    let cfg = parse_str_with(src, path, &with(Some("prod"), &[])).expect("valid");
    assert_eq!(
        value(&cfg, "size"),
        ("3".into(), "cluster (workspace prod)".into())
    );
    // What is given where the config is evaluated wins.
    let cfg =
        parse_str_with(src, path, &with(Some("prod"), &[("CAIRN_VAR_size", "4")])).expect("valid");
    assert_eq!(
        value(&cfg, "size"),
        ("4".into(), "env CAIRN_VAR_size".into())
    );

    // A stored value that does not fit its type is an error naming where it came from; a
    // sensitive one is not shown.
    let mut bad = server.clone();
    bad.vars[0].value = "big".into();
    bad.vars[3].value = "hunter2".into();
    let inputs = Inputs {
        server: Some(bad),
        ..Default::default()
    };
    let e = parse_str_with(src, path, &inputs)
        .expect_err("bad values")
        .to_string();
    assert!(
        e.contains("variable \"size\" is of type number, and the value from cluster (project) does not fit: a number is required, found the string \"big\""),
        "{e}"
    );
    assert!(e.contains("variable \"pw\" is of type number, and the value from cluster (project) does not fit: (not shown: the variable is sensitive)"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn dynamic_cairn_reads_the_apps_config_as_the_cluster_resolves_it() {
    use cairn_protocol::types::ConfigScope;
    let src = r#"project = "p"
config {
  env = { TOP = dynamic("cairn", { name = "SHARED" }) }
}
app "web" {
  config {
    env = { DSN = configdynamic("cairn", { name = "DSN" }) }
  }
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["true"]
    }
  }
}
"#;
    let path = Path::new("cairn.hcl");
    let server = ServerValues {
        project: "p".into(),
        vars: vec![
            stored(ConfigScope::Project("p".into()), "SHARED", "s"),
            stored(ConfigScope::Project("p".into()), "DSN", "project-dsn"),
            stored(
                ConfigScope::App {
                    project: "p".into(),
                    app: "web".into(),
                },
                "DSN",
                "web-dsn",
            ),
        ],
    };
    let inputs = Inputs {
        server: Some(server.clone()),
        ..Default::default()
    };
    let cfg = parse_str_with(src, path, &inputs).expect("valid");
    assert!(cfg.blockers.is_empty(), "{:?}", cfg.blockers);
    assert_eq!(cfg.env["TOP"], "s");
    assert_eq!(cfg.apps[0].app_env["DSN"], "web-dsn");

    // A name the cluster does not hold, and a command that read nothing from the cluster:
    // blockers naming the source and why, after the whole file was evaluated.
    let mut less = server.clone();
    less.vars.remove(2);
    less.vars.remove(1);
    let cfg = parse_str_with(
        src,
        path,
        &Inputs {
            server: Some(less),
            ..Default::default()
        },
    )
    .expect("valid");
    let b: Vec<String> = cfg.blockers.iter().map(|b| b.to_string()).collect();
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(b[0].starts_with("cairn.hcl:7:"), "{b:?}");
    assert!(b[0].contains("reads config source \"cairn\", which cannot be reached: the cluster holds no config variable DSN for app \"web\" of project \"p\" in workspace \"default\""), "{b:?}");
    let cfg = parse(src).expect("valid offline");
    assert_eq!(cfg.blockers.len(), 2);
    assert!(cfg.blockers[0]
        .to_string()
        .contains("the cluster's config was not read here"));
}

#[test]
fn release_fields_reading_deploy_wait_for_the_deployment() {
    let src = r#"project = "p"
app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["true"]
    }
  }
  release {
    use "process" {
      note  = "${deploy.url} from ${artifact.path}"
      plain = "x"
    }
  }
}
"#;
    let cfg = parse(src).expect("valid");
    let rel = &cfg.apps[0].release.as_ref().expect("release").plugin;
    assert_eq!(rel.deferred.iter().collect::<Vec<_>>(), vec!["note"]);
    assert_eq!(rel.config, json!({ "plain": "x" }));
    let inputs = Inputs {
        artifact: Some(json!({ "path": "/tmp/a" })),
        deploy: Some(json!({ "url": "http://web--v1.localhost" })),
        ..Default::default()
    };
    let cfg = parse_str_with(src, Path::new("cairn.hcl"), &inputs).expect("valid");
    let rel = &cfg.apps[0].release.as_ref().expect("release").plugin;
    assert!(rel.deferred.is_empty());
    assert_eq!(
        rel.config,
        json!({ "note": "http://web--v1.localhost from /tmp/a", "plain": "x" })
    );
}
