use std::fs;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::files::{is_excluded, Artifact, StoredArtifact};
use super::testutil::{ctx, write, Lines, Wait};
use super::*;

fn catalog() -> Catalog {
    Catalog::builtin()
}

#[test]
fn names_and_unknown_plugins() {
    let c = catalog();
    #[cfg(feature = "docker")]
    {
        assert_eq!(
            c.names(Kind::Builder),
            vec!["command", "docker", "docker-pull", "files", "null"]
        );
        assert_eq!(c.names(Kind::Registry), vec!["docker", "files", "null"]);
        #[cfg(feature = "kubernetes")]
        assert_eq!(
            c.names(Kind::Platform),
            vec![
                "docker",
                "exec",
                "kubernetes",
                "kubernetes-apply",
                "null",
                "process"
            ]
        );
        #[cfg(not(feature = "kubernetes"))]
        assert_eq!(
            c.names(Kind::Platform),
            vec!["docker", "exec", "null", "process"]
        );
    }
    #[cfg(not(feature = "docker"))]
    {
        assert_eq!(c.names(Kind::Builder), vec!["command", "files", "null"]);
        assert_eq!(c.names(Kind::Registry), vec!["files", "null"]);
        assert_eq!(c.names(Kind::Platform), vec!["exec", "null", "process"]);
    }
    #[cfg(feature = "kubernetes")]
    assert_eq!(
        c.names(Kind::Releaser),
        vec!["kubernetes", "null", "process"]
    );
    #[cfg(not(feature = "kubernetes"))]
    assert_eq!(c.names(Kind::Releaser), vec!["null", "process"]);
    let err = c
        .builder("bazel", &json!({}))
        .err()
        .expect("unknown plugin");
    assert!(matches!(
        err,
        PluginError::UnknownPlugin {
            kind: Kind::Builder,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "builder plugin \"bazel\" is not available (available: {}); or install an external plugin cairn-plugin-bazel",
            c.names(Kind::Builder).join(", ")
        )
    );
    let err = c.releaser("k8s", &json!({})).err().expect("unknown plugin");
    assert_eq!(
        err.to_string(),
        format!(
            "releaser plugin \"k8s\" is not available (available: {}); or install an external plugin cairn-plugin-k8s",
            c.names(Kind::Releaser).join(", ")
        )
    );
}

fn config_err(result: Result<impl Sized, PluginError>) -> (String, String, String) {
    match result {
        Err(PluginError::Config {
            plugin,
            field,
            message,
        }) => (plugin, field, message),
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error, got a plugin"),
    }
}

#[test]
fn config_errors_name_the_field() {
    let c = catalog();
    let err = c
        .platform("process", &json!({"command": ["x"], "count": "two"}))
        .err()
        .expect("bad count");
    assert_eq!(
        err.to_string(),
        "plugin \"process\": field \"count\": invalid type: string \"two\", expected u32"
    );

    let (plugin, field, message) = config_err(c.builder("files", &json!({"excludes": []})));
    assert_eq!((plugin.as_str(), field.as_str()), ("files", "excludes"));
    assert!(message.contains("unknown field `excludes`"), "{message}");

    let (_, field, message) = config_err(c.platform("process", &json!({})));
    assert_eq!(field, "command");
    assert_eq!(message, "missing field `command`");

    let (_, field, _) = config_err(c.builder("files", &json!({"exclude": ["ok", {"a": 1}]})));
    assert_eq!(field, "exclude[1]");
    // What HCL converts is converted (cty did so for Waypoint's plugins): a number where a
    // string is wanted, a numeric string where a number is.
    assert!(c.builder("files", &json!({"exclude": ["ok", 3]})).is_ok());
    assert!(c
        .platform(
            "process",
            &json!({"command": ["serve", 8080, true], "count": "2"})
        )
        .is_ok());

    let (_, field, _) = config_err(c.platform("process", &json!({"command": []})));
    assert_eq!(field, "command");
    let (_, field, _) = config_err(c.platform("process", &json!({"command": ["x"], "count": 0})));
    assert_eq!(field, "count");
    let (_, field, _) =
        config_err(c.platform("process", &json!({"command": ["x"], "workdir": "../up"})));
    assert_eq!(field, "workdir");
    let (_, field, _) = config_err(c.builder("command", &json!({"command": ["make"]})));
    assert_eq!(field, "output");
    let (_, field, _) = config_err(c.releaser("process", &json!({"retain": 2})));
    assert_eq!(field, "retain");

    // A block without a body, and defaults.
    assert!(c.builder("files", &serde_json::Value::Null).is_ok());
    assert!(c.registry("files", &json!({})).is_ok());
    assert!(c.platform("process", &json!({"command": ["x"]})).is_ok());
}

fn tagged(type_name: &str, tag: &str) -> Value {
    Value {
        type_name: type_name.to_string(),
        data: json!({ "tag": tag }),
    }
}

fn a_to_b_sync(v: &Value) -> Result<Value, PluginError> {
    Ok(tagged(
        "b",
        &format!("{}>b", v.data["tag"].as_str().unwrap_or("?")),
    ))
}
fn b_to_c_sync(v: &Value) -> Result<Value, PluginError> {
    Ok(tagged(
        "c",
        &format!("{}>c", v.data["tag"].as_str().unwrap_or("?")),
    ))
}
fn c_to_d_sync(v: &Value) -> Result<Value, PluginError> {
    Ok(tagged(
        "d",
        &format!("{}>d", v.data["tag"].as_str().unwrap_or("?")),
    ))
}
fn a_to_d_sync(v: &Value) -> Result<Value, PluginError> {
    Ok(tagged(
        "d",
        &format!("{}>D", v.data["tag"].as_str().unwrap_or("?")),
    ))
}
fn x_to_c_sync(v: &Value) -> Result<Value, PluginError> {
    Ok(tagged(
        "c",
        &format!("{}>c", v.data["tag"].as_str().unwrap_or("?")),
    ))
}
fn broken_sync(_: &Value) -> Result<Value, PluginError> {
    Err(PluginError::Failed("disk on fire".to_string()))
}

/// A mapper function around a synchronous test conversion.
macro_rules! mapfn {
    ($name:ident, $sync:ident) => {
        fn $name<'a>(
            v: &'a Value,
            _: &'a mut OpContext,
        ) -> BoxFuture<'a, Result<Value, PluginError>> {
            Box::pin(async move { $sync(v) })
        }
    };
}
mapfn!(a_to_b, a_to_b_sync);
mapfn!(b_to_c, b_to_c_sync);
mapfn!(c_to_d, c_to_d_sync);
mapfn!(a_to_d, a_to_d_sync);
mapfn!(x_to_c, x_to_c_sync);
mapfn!(broken, broken_sync);

/// Converts through `c` with a throwaway context.
fn convert(c: &Catalog, values: &[Value], wanted: &[&str]) -> Result<Value, PluginError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cx = ctx(tmp.path(), tmp.path(), 1, &Lines::default());
    c.convert(values, wanted, &mut cx).wait()
}

fn test_catalog() -> Catalog {
    let mut c = Catalog::empty();
    c.add_mapper(Mapper {
        from: "a",
        to: "b",
        f: a_to_b,
    });
    c.add_mapper(Mapper {
        from: "b",
        to: "c",
        f: b_to_c,
    });
    c.add_mapper(Mapper {
        from: "c",
        to: "d",
        f: c_to_d,
    });
    c.add_mapper(Mapper {
        from: "x",
        to: "c",
        f: x_to_c,
    });
    c
}

#[test]
fn convert_finds_the_shortest_chain() -> Result<()> {
    let mut c = test_catalog();
    // A value of the wanted type is used as is.
    let v = convert(&c, &[tagged("a", "1"), tagged("d", "0")], &["d"])?;
    assert_eq!(v, tagged("d", "0"));
    // a > b > c > d.
    let v = convert(&c, &[tagged("a", "1")], &["d"])?;
    assert_eq!(v, tagged("d", "1>b>c>d"));
    // x > c > d is shorter than a > b > c > d.
    let v = convert(&c, &[tagged("a", "1"), tagged("x", "2")], &["d"])?;
    assert_eq!(v, tagged("d", "2>c>d"));
    // Any of several wanted types: the nearest wins.
    let v = convert(&c, &[tagged("a", "1")], &["d", "b"])?;
    assert_eq!(v, tagged("b", "1>b"));
    // Equal length: the latest value wins.
    let v = convert(&c, &[tagged("x", "old"), tagged("b", "new")], &["c"])?;
    assert_eq!(v, tagged("c", "new>c"));
    // A direct mapper beats the chain.
    c.add_mapper(Mapper {
        from: "a",
        to: "d",
        f: a_to_d,
    });
    let v = convert(&c, &[tagged("a", "1")], &["d"])?;
    assert_eq!(v, tagged("d", "1>D"));
    Ok(())
}

#[test]
fn convert_names_what_is_missing() {
    let mut c = test_catalog();
    let err = convert(
        &c,
        &[
            tagged("d", "1"),
            tagged("docker.Image", "2"),
            tagged("d", "3"),
        ],
        &["files.Artifact"],
    )
    .expect_err("no chain");
    assert!(matches!(&err, PluginError::MissingType { wanted, have }
        if wanted == &["files.Artifact"] && have == &["d", "docker.Image"]));
    assert_eq!(
        err.to_string(),
        "no value of type files.Artifact can be produced: the values at hand are [d, docker.Image], and no chain of mappers leads from them"
    );
    let err = convert(&c, &[], &["p", "q"]).expect_err("nothing at hand");
    assert_eq!(
        err.to_string(),
        "no value of type any of [p, q] can be produced: the values at hand are none, and no chain of mappers leads from them"
    );
    // A failing mapper says which step failed.
    c.add_mapper(Mapper {
        from: "d",
        to: "e",
        f: broken,
    });
    let err = convert(&c, &[tagged("a", "1")], &["e"]).expect_err("broken mapper");
    assert_eq!(err.to_string(), "mapping d to e: disk on fire");
}

/// A small tree with a subdirectory, an executable, a symlink and an empty directory.
fn sample_tree(root: &Path) {
    write(&root.join("index.html"), "<h1>hello</h1>\n");
    write(&root.join("lib/util.js"), "export const x = 1;\n");
    write(&root.join("run.sh"), "#!/bin/sh\necho hi\n");
    write(&root.join("debug.log"), "noise\n");
    write(&root.join("target/big.bin"), "build output\n");
    write(&root.join("docs/a.md"), "# a\n");
    write(&root.join("docs/keep.txt"), "keep\n");
    fs::create_dir_all(root.join("empty")).expect("mkdir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink("index.html", root.join("home.html")).expect("symlink");
    }
}

fn build_files(source: &Path, data: &Path, config: serde_json::Value) -> Result<Artifact> {
    let out = Lines::default();
    let mut ctx = ctx(source, data, 1, &out);
    let value = catalog()
        .builder("files", &config)?
        .build(&mut ctx)
        .wait()?;
    Ok(value.get::<files::Artifact>()?)
}

/// (path, mode, mtime, kind) of every entry of a .tar.gz.
fn list_archive(path: &Path) -> Result<Vec<(String, u32, u64, tar::EntryType)>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(path)?));
    let mut entries = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let header = entry.header();
        entries.push((
            entry.path()?.to_string_lossy().into_owned(),
            header.mode()?,
            header.mtime()?,
            header.entry_type(),
        ));
    }
    Ok(entries)
}

#[test]
fn files_builder_is_deterministic_and_content_addressed() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let source = tmp.path().join("src");
    sample_tree(&source);
    let data = tmp.path().join("data");
    let first = build_files(&source, &data, json!({}))?;
    assert_eq!(
        first.path,
        data.join("artifacts")
            .join(format!("sha256-{}.tar.gz", first.sha256))
    );
    assert_eq!(first.size, fs::metadata(&first.path)?.len());
    assert_eq!(files::sha256_file(&first.path)?, first.sha256);

    // Same tree, other mtimes, built again into another data dir: same bytes.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    fs::File::options()
        .write(true)
        .open(source.join("index.html"))?
        .set_modified(old)?;
    let second = build_files(&source, &tmp.path().join("data2"), json!({}))?;
    assert_eq!(first.sha256, second.sha256);
    assert_eq!(fs::read(&first.path)?, fs::read(&second.path)?);

    let entries = list_archive(&first.path)?;
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "debug.log",
            "docs",
            "docs/a.md",
            "docs/keep.txt",
            "empty",
            "home.html",
            "index.html",
            "lib",
            "lib/util.js",
            "run.sh",
            "target",
            "target/big.bin",
        ]
    );
    assert!(entries.iter().all(|e| e.2 == 0), "fixed mtimes");
    let mode = |name: &str| entries.iter().find(|e| e.0 == name).map(|e| (e.1, e.3));
    assert_eq!(mode("run.sh"), Some((0o755, tar::EntryType::Regular)));
    assert_eq!(mode("index.html"), Some((0o644, tar::EntryType::Regular)));
    assert_eq!(mode("empty"), Some((0o755, tar::EntryType::Directory)));
    assert_eq!(
        mode("home.html").map(|m| m.1),
        Some(tar::EntryType::Symlink)
    );

    // A content change changes the hash.
    write(&source.join("lib/util.js"), "export const x = 2;\n");
    let third = build_files(&source, &data, json!({}))?;
    assert_ne!(third.sha256, first.sha256);
    Ok(())
}

#[test]
fn files_builder_excludes_and_skips_its_data_dir() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let source = tmp.path().join("src");
    sample_tree(&source);
    // The data dir inside the tree is never packed.
    let data = source.join(".cairn");
    let artifact = build_files(
        &source,
        &data,
        json!({"exclude": ["*.log", "target", "docs/*.md", "empty/"]}),
    )?;
    let names: Vec<String> = list_archive(&artifact.path)?
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        names,
        vec![
            "docs",
            "docs/keep.txt",
            "home.html",
            "index.html",
            "lib",
            "lib/util.js",
            "run.sh"
        ]
    );
    // A sub-path.
    let artifact = build_files(&source, &data, json!({"path": "lib"}))?;
    let names: Vec<String> = list_archive(&artifact.path)?
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, vec!["util.js"]);
    // Not a directory.
    let err = build_files(&source, &data, json!({"path": "index.html"})).expect_err("a file");
    assert!(err.to_string().contains("is not a directory"), "{err}");
    Ok(())
}

#[test]
fn exclude_patterns() {
    let ex = |pattern: &str, path: &str| is_excluded(Path::new(path), &[pattern.to_string()]);
    assert!(ex("*.log", "a.log"));
    assert!(ex("*.log", "deep/down/a.log"));
    assert!(!ex("*.log", "a.log.txt"));
    assert!(ex("node_modules", "web/node_modules"));
    assert!(!ex("node_modules", "web/node_modules_x"));
    assert!(ex("docs/*.md", "docs/a.md"));
    assert!(!ex("docs/*.md", "docs/sub/a.md"));
    assert!(!ex("docs/*.md", "x/docs/a.md"));
    assert!(ex("docs/**/*.md", "docs/sub/a.md"));
    assert!(ex("docs/**/*.md", "docs/a.md"));
    assert!(ex("**/tmp", "a/b/tmp"));
    assert!(ex("**/tmp", "tmp"));
    assert!(ex("/build", "build"));
    assert!(ex("./build/", "build"));
    assert!(ex("file?.txt", "file1.txt"));
    assert!(!ex("file?.txt", "file10.txt"));
}

#[test]
fn command_builder_streams_output_and_records_the_file() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let source = tmp.path();
    write(
        &source.join("build.sh"),
        "echo out1\necho err1 >&2\nmkdir -p dist\nprintf 'binary' > dist/app\necho out2\n",
    );
    let builder = catalog().builder(
        "command",
        &json!({"command": ["sh", "./build.sh"], "output": "dist/app"}),
    )?;
    assert_eq!(builder.output_type(), "command.Output");
    let out = Lines::default();
    let mut ctx = ctx(source, &source.join("data"), 1, &out);
    let value = builder.build(&mut ctx).wait()?;
    let output: command::Output = value.get::<command::Output>()?;
    assert!(output.path.is_absolute());
    assert_eq!(output.path, source.join("dist/app"));
    assert_eq!(
        output.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"binary"))
    );
    assert_eq!(out.text(Stream::Stdout), vec!["out1", "out2"]);
    assert_eq!(out.text(Stream::Stderr), vec!["err1"]);
    Ok(())
}

#[test]
fn command_builder_failures() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let source = tmp.path();
    let c = catalog();
    let out = Lines::default();
    let mut ctx = ctx(source, &source.join("data"), 1, &out);

    let failing = c.builder(
        "command",
        &json!({"command": ["sh", "-c", "echo nope >&2; exit 7"], "output": "x"}),
    )?;
    let err = failing.build(&mut ctx).wait().expect_err("exit 7");
    assert!(matches!(
        err,
        PluginError::CommandFailed { code: Some(7), .. }
    ));
    assert_eq!(
        err.to_string(),
        "command `sh -c echo nope >&2; exit 7` exited with code 7"
    );

    let no_output = c.builder(
        "command",
        &json!({"command": ["true"], "output": "missing.bin"}),
    )?;
    let err = no_output.build(&mut ctx).wait().expect_err("no output");
    assert!(err.to_string().contains("missing.bin"), "{err}");

    let not_found = c.builder(
        "command",
        &json!({"command": ["./no-such-program"], "output": "x"}),
    )?;
    let err = not_found.build(&mut ctx).wait().expect_err("not found");
    assert!(
        err.to_string().starts_with("starting `./no-such-program`"),
        "{err}"
    );
    Ok(())
}

#[test]
fn command_output_maps_to_artifact_and_through_the_registry() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let source = tmp.path().join("src");
    let data = tmp.path().join("data");
    fs::create_dir_all(&source)?;
    let c = catalog();
    let out = Lines::default();
    let mut ctx = ctx(&source, &data, 1, &out);
    let built = c
        .builder("command", &json!({"command": ["sh", "-c", "printf '#!/bin/sh\\n' > app; chmod +x app"], "output": "app"}))?
        .build(&mut ctx).wait()?;

    let registry = c.registry("files", &json!({}))?;
    let artifact_value = convert(&c, std::slice::from_ref(&built), registry.input_types())?;
    let artifact: Artifact = artifact_value.get::<files::Artifact>()?;
    assert!(artifact.path.starts_with(data.join("artifacts")));
    let entries = list_archive(&artifact.path)?;
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].0.as_str(), entries[0].1), ("app", 0o755));

    let stored_value = registry.push(&mut ctx, &artifact_value).wait()?;
    let stored: StoredArtifact = stored_value.get::<files::StoredArtifact>()?;
    assert_eq!(
        stored.path,
        data.join("registry")
            .join(format!("sha256-{}.tar.gz", artifact.sha256))
    );
    assert_eq!(files::sha256_file(&stored.path)?, artifact.sha256);
    // Pushing again is a no-op.
    registry.push(&mut ctx, &artifact_value).wait()?;

    // After the push, only the stored artifact is at hand: it maps back.
    let again: Artifact =
        convert(&c, &[stored_value], &["files.Artifact"])?.get::<files::Artifact>()?;
    assert_eq!(
        (again.path.clone(), again.sha256.clone()),
        (stored.path.clone(), artifact.sha256.clone())
    );
    assert_eq!(again.size, artifact.size);

    // A tampered output is refused by the mapper.
    fs::write(source.join("app"), "changed")?;
    let err = convert(&c, &[built], &["files.Artifact"]).expect_err("tampered");
    assert!(
        err.to_string().contains("changed since it was built"),
        "{err}"
    );

    // A registry never stores an archive whose content does not match its hash.
    let mut bad = artifact.clone();
    bad.sha256 = "0".repeat(64);
    let err = c
        .registry("files", &json!({"directory": "store"}))?
        .push(&mut ctx, &Value::named("files.Artifact", &bad)?)
        .wait()
        .expect_err("hash mismatch");
    assert!(err.to_string().contains("expected 0000"), "{err}");
    // Wrong input type.
    let err = registry
        .push(&mut ctx, &tagged("docker.Image", "x"))
        .wait()
        .expect_err("wrong type");
    assert_eq!(
        err.to_string(),
        "expected a value of type files.Artifact, got docker.Image"
    );
    Ok(())
}

/// The built-in chains a docker platform finds for the process world's
/// artifacts: command output → files → image, stored files → files → image.
#[cfg(feature = "docker")]
#[test]
fn builtin_chains_reach_docker_images() {
    let c = catalog();
    let val = |t: &str| Value {
        type_name: t.to_string(),
        data: json!({}),
    };
    let steps = |v: Value| {
        c.plan(&[v], &[docker::IMAGE])
            .expect("a chain to docker.Image")
            .steps()
    };
    assert_eq!(
        steps(val(command::OUTPUT)),
        vec![
            "command.Output -> files.Artifact",
            "files.Artifact -> docker.Image"
        ]
    );
    assert_eq!(
        steps(val(files::STORED_ARTIFACT)),
        vec![
            "files.StoredArtifact -> files.Artifact",
            "files.Artifact -> docker.Image"
        ]
    );
    // And none the other way: a process platform cannot run an image.
    assert!(c.plan(&[val(docker::IMAGE)], &[files::ARTIFACT]).is_err());
}
