//! The null plugins, chained as a configuration's stages would run them.

use anyhow::Result;
use serde_json::json;

use super::*;
use crate::testutil::{ctx, Lines, Wait};
use crate::{Catalog, HealthState, PluginError, Stream};

#[test]
fn null_plugins_chain_build_push_deploy_release() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let lines = Lines::default();
    let mut c = ctx(tmp.path(), &tmp.path().join("data"), 1, &lines);
    let catalog = Catalog::builtin();
    let labels = json!({"labels": {"team": "web", "env": "test"}});

    let builder = catalog.builder("null", &labels)?;
    assert_eq!(builder.output_type(), "null.Artifact");
    let built = builder.build(&mut c).wait()?;
    assert_eq!(built.type_name, "null.Artifact");
    assert_eq!(built.data, json!({}));

    let registry = catalog.registry("null", &json!({}))?;
    let pushed_input = catalog.plan(std::slice::from_ref(&built), registry.input_types())?;
    assert!(pushed_input.steps().is_empty());
    let pushed = registry.push(&mut c, &built).wait()?;
    assert_eq!(pushed, Value::of(&Artifact {})?);

    let platform = catalog.platform("null", &serde_json::Value::Null)?;
    assert_eq!(platform.output_type(), "null.Deployment");
    let deployed = platform.deploy(&mut c, &pushed).wait()?;
    assert_eq!(deployed.type_name, "null.Deployment");
    assert_eq!(deployed.data, json!({}));
    assert_eq!(platform.url(&deployed), None);

    let releaser = catalog.releaser("null", &json!({}))?;
    let outcome = releaser
        .release(
            &mut c,
            &deployed,
            &[(0, Value::of(&Deployment {})?)],
            &crate::ReleaseOptions {
                prune: true,
                retain: 0,
            },
        )
        .wait()?;
    assert_eq!(outcome.value.type_name, "null.Release");
    assert!(outcome.urls.is_empty());
    assert!(outcome.pruned.is_empty());

    // One line each, saying what it did not do.
    assert_eq!(
        lines.text(Stream::Info),
        vec![
            "null builder: built nothing, an empty null.Artifact (labels env=test, team=web)",
            "null registry: pushed nothing, an empty null.Artifact",
            "null platform: deployed nothing, an empty null.Deployment",
            "null releaser: released nothing, an empty null.Release without URLs, pruned nothing",
        ]
    );

    let health = platform.status(&mut c, &deployed).wait()?;
    assert_eq!(health.total, 0);
    assert_eq!(health.state(), HealthState::Down);
    platform.destroy(&mut c, &deployed).wait()?;
    assert_eq!(
        lines.text(Stream::Info).last().map(String::as_str),
        Some("null platform: destroyed nothing (a null deployment runs nothing)")
    );
    assert_eq!(
        platform.destroy_interrupted(&mut c).wait()?,
        "nothing: a null deployment leaves nothing behind"
    );

    // A null artifact also goes to the exec platform.
    let exec = catalog.platform("exec", &json!({"command": ["true"]}))?;
    assert!(catalog
        .plan(std::slice::from_ref(&built), exec.input_types())
        .is_ok());

    // Other values are refused.
    let err = platform
        .deploy(&mut c, &Value::named("files.Artifact", &json!({}))?)
        .wait()
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("expected a value of type null.Artifact, got files.Artifact")
    );
    Ok(())
}

#[test]
fn null_config_takes_only_labels() {
    let catalog = Catalog::builtin();
    let field_error = |r: Result<(), PluginError>| match r {
        Err(PluginError::Config {
            plugin,
            field,
            message,
        }) => (plugin, field, message),
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(()) => panic!("expected a config error"),
    };
    let (plugin, field, message) =
        field_error(catalog.builder("null", &json!({"foo": 1})).map(|_| ()));
    assert_eq!(
        (plugin.as_str(), field.as_str(), message.as_str()),
        ("null", "foo", "unknown field `foo`, expected `labels`")
    );
    let (_, field, _) = field_error(catalog.registry("null", &json!({"image": "x"})).map(|_| ()));
    assert_eq!(field, "image");
    let (_, field, _) = field_error(
        catalog
            .platform("null", &json!({"command": ["x"]}))
            .map(|_| ()),
    );
    assert_eq!(field, "command");
    let (_, field, message) = field_error(
        catalog
            .releaser("null", &json!({"labels": {"a": [true]}}))
            .map(|_| ()),
    );
    assert_eq!(field, "labels.a");
    assert!(message.starts_with("invalid type: sequence"), "{message}");
    // A bool where a string is wanted is converted, as HCL does.
    assert!(catalog
        .releaser("null", &json!({"labels": {"a": true}}))
        .is_ok());
    let (_, field, _) = field_error(
        catalog
            .releaser("null", &json!({"labels": ["a"]}))
            .map(|_| ()),
    );
    assert_eq!(field, "labels");
}
