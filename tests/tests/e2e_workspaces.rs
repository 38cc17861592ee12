//! Workspaces (issue 16): `cairn up --workspace W` deploys and releases in W, whose
//! deployments answer at `APP--vN.W.DOMAIN` and release at `APP.W.DOMAIN`, beside the
//! default workspace's at `APP.DOMAIN`; `workspace "W" { … }` config reaches only W.

use cairn_tests::{hello_app, http_get, Cli};

#[test]
fn each_workspace_has_its_own_deployments_urls_and_config() {
    let cli = Cli::new();
    let app = hello_app();
    let config = std::fs::read_to_string(app.path().join("cairn.hcl")).expect("config");
    // A staging greeting, in a workspace scope of the app's config block.
    let config = config.replace(
        "      GREETING = \"Hello from Cairn\"\n    }",
        "      GREETING = \"Hello from Cairn\"\n    }\n    workspace \"staging\" {\n      env = { GREETING = \"Hello from staging\" }\n    }",
    );
    assert!(config.contains("Hello from staging"), "{config}");
    std::fs::write(app.path().join("cairn.hcl"), &config).expect("write config");

    let prod = cli.run_in(app.path(), &["up"]).ok();
    let staging = cli
        .run_in(app.path(), &["up", "--workspace", "staging"])
        .ok();
    let prod_url = prod.field("Release URL").expect("Release URL");
    let staging_url = staging.field("Release URL").expect("Release URL");
    let staging_dep = staging.field("Deployment URL").expect("Deployment URL");
    assert!(staging_url.contains("web.staging."), "{staging}");
    assert!(staging_dep.contains("web--v2.staging."), "{staging}");

    let get = |url: &str| http_get(url).expect("GET").body;
    assert!(
        get(&prod_url).contains("Hello from Cairn!"),
        "{}",
        get(&prod_url)
    );
    assert!(
        get(&staging_url).contains("Hello from staging!"),
        "{}",
        get(&staging_url)
    );
    assert!(get(&staging_dep).contains("Hello from staging!"));
    // The default workspace's release is still its own deployment.
    assert!(
        get(&prod_url).contains("deployment v1"),
        "{}",
        get(&prod_url)
    );
    assert!(
        get(&staging_url).contains("deployment v2"),
        "{}",
        get(&staging_url)
    );
}
