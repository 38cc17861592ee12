//! The `kubernetes` platform and releaser against a real cluster: Kubernetes 1.20.2 built
//! from Debian's source package by `tests/k8s/local-cluster.sh` (`.ci/run` builds it once
//! into a cache), started for each test on loopback, its pods real containers on this
//! machine's Docker engine, its Services routed by kube-proxy. The images go through a real
//! registry (Debian's `docker-registry`) that the kubelet pulls from.
//!
//! Without a Docker engine these tests skip with a loud message, except in CI (`CI=true`).

use std::path::Path;
use std::time::Duration;

use cairn_tests::docker::{copy_tree, docker_ready, log_instances, static_entrypoint, Registry};
use cairn_tests::k8s::{pod_containers, write, Cluster};
use cairn_tests::{assert_eventually, http_get, workspace_root, Cli, NodeProc};

/// `examples/kubernetes-hello` as project `project`, with its deploy block's body replaced
/// by `deploy` when given.
fn hello_app(project: &str, deploy: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(
        &workspace_root().join("examples/kubernetes-hello"),
        dir.path(),
    );
    let cfg = dir.path().join("cairn.hcl");
    let mut text = std::fs::read_to_string(&cfg).expect("cairn.hcl");
    text = text.replace(
        "project = \"kubernetes-hello\"",
        &format!("project = \"{project}\""),
    );
    if let Some(body) = deploy {
        set_deploy(&mut text, body);
    }
    std::fs::write(&cfg, text).expect("write cairn.hcl");
    dir
}

const HELLO_DEPLOY: &str =
    "      replicas     = 2\n      service_port = 3000\n      probe_path   = \"/\"\n";

/// Replaces the body of `deploy { use "kubernetes" { … } }`.
fn set_deploy(text: &mut String, body: &str) {
    let start = text
        .find("use \"kubernetes\" {\n")
        .expect("a kubernetes deploy")
        + 19;
    // The block's closing brace: a line of exactly four spaces and `}`.
    let end = start + text[start..].find("\n    }\n").expect("its end") + 1;
    text.replace_range(start..end, body);
}

fn edit_deploy(app: &Path, body: &str) {
    let cfg = app.join("cairn.hcl");
    let mut text = std::fs::read_to_string(&cfg).expect("cairn.hcl");
    set_deploy(&mut text, body);
    std::fs::write(&cfg, text).expect("write cairn.hcl");
}

/// The Service's selector value for the deployment label.
fn service_selects(cluster: &Cluster, service: &str) -> String {
    cluster.ok(&[
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.selector.cairn\\.dev/deployment}",
    ])
}

/// The names of the pods the Service's endpoints list.
fn endpoint_pods(cluster: &Cluster, service: &str) -> Vec<String> {
    let out = cluster.ok(&[
        "get",
        "endpoints",
        service,
        "-o",
        "jsonpath={.subsets[*].addresses[*].targetRef.name}",
    ]);
    let mut v: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    v.sort();
    v
}

fn pods_of(cluster: &Cluster, project: &str, seq: u64) -> Vec<String> {
    let out = cluster.ok(&[
        "get",
        "pods",
        "-l",
        &format!("cairn.dev/project={project},cairn.dev/deployment={seq}"),
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let mut v: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    v.sort();
    v
}

/// GET through the Service's cluster address (kube-proxy's rules on this machine).
fn via_cluster_ip(cluster: &Cluster, service: &str, path: &str) -> Option<String> {
    let ip = cluster.ok(&[
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let port = cluster.ok(&[
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.ports[0].port}",
    ]);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-m",
            "5",
            &format!("http://{}:{}{path}", ip.trim(), port.trim()),
        ])
        .output()
        .expect("curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// What every test here stands on: a registry, the local cluster, a node, and a CLI whose
/// runner reaches the cluster (`KUBECONFIG`). `None` without a Docker engine (outside CI).
struct Env {
    // A test binds these registry, cluster, node, CLI, so they drop the other way round:
    // the CLI first (it destroys what its apps left), the registry last.
    cli: Cli,
    _node: NodeProc,
    cluster: Cluster,
    registry: Registry,
}

fn env() -> Option<Env> {
    if !docker_ready() {
        return None;
    }
    static_entrypoint();
    let registry = Registry::start();
    let cluster = Cluster::start();
    let node = NodeProc::start_new();
    let mut cli = Cli::new();
    cli.set_env("KUBECONFIG", &cluster.kubeconfig().to_string_lossy());
    cli.connect_to(&node, "dev");
    Some(Env {
        cli,
        _node: node,
        cluster,
        registry,
    })
}

#[test]
fn kubernetes_hello_deploys_releases_rolls_back_and_destroys() {
    // Bound in this order, so dropped CLI first, registry last.
    let Some(Env {
        registry,
        cluster,
        _node,
        cli,
    }) = env()
    else {
        return;
    };
    let project = format!("kh-{}", std::process::id());
    let app = hello_app(&project, None);
    let reg = format!("registry=127.0.0.1:{}", registry.port);

    let up = cli.run_in(app.path(), &["up", "--var", &reg]).ok();
    for step in [
        "Building v1 with docker",
        "Injecting the Cairn entrypoint",
        "Pushing artifact v1 with docker",
        "Deploying v1 with kubernetes",
        "created Deployment web-v1 (2 replicas",
        "web-v1: 2/2 pods ready",
        "Releasing deployment v1",
        "Service web (ClusterIP) now selects v1",
        "Service web's endpoints are v1's 2 pod(s)",
    ] {
        assert!(up.stdout.contains(step), "no {step:?}: {up}");
    }
    let tags = http_get(&format!(
        "http://127.0.0.1:{}/v2/kubernetes-hello/web/tags/list",
        registry.port
    ))
    .expect("registry tags");
    assert!(tags.body.contains("latest"), "pushed: {tags:?}");
    // The kubelet pulled the image from the registry (`:latest` is always pulled): its
    // events say so for both pods.
    let image = format!("127.0.0.1:{}/kubernetes-hello/web:latest", registry.port);
    let pulled = cluster.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=Pulled",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name} {.message}{\"\\n\"}{end}",
    ]);
    let pulled_by: std::collections::BTreeSet<&str> = pulled
        .lines()
        .filter(|l| l.contains(&format!("Successfully pulled image \"{image}\"")))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(pulled_by.len(), 2, "both pods pull {image}: {pulled}");
    let v1_pods = pods_of(&cluster, &project, 1);
    assert_eq!(v1_pods.len(), 2);
    assert_eq!(service_selects(&cluster, "web"), "1");
    assert_eq!(endpoint_pods(&cluster, "web"), v1_pods);
    // The entrypoint's token is in a Secret, not in the pod spec.
    let spec = cluster.ok(&["get", "deployment", "web-v1", "-o", "json"]);
    assert!(!spec.contains("CAIRN_ENTRYPOINT_TOKEN"), "{spec}");
    assert!(spec.contains("web-v1-cairn"), "{spec}");

    // The Service answers through kube-proxy; the release URL through Cairn's tunnel.
    assert_eventually!(
        via_cluster_ip(&cluster, "web", "/")
            .is_some_and(|b| b.contains("Hello from Cairn on Kubernetes")),
        Duration::from_secs(30),
        "the Service's cluster address does not answer"
    );
    let release_url = up.field("Release URL").expect("Release URL");
    let v1_url = up.field("Deployment URL").expect("Deployment URL");
    for url in [&release_url, &v1_url] {
        assert_eventually!(
            http_get(url).is_ok_and(|r| r.status == 200 && r.body.contains("Hello from Cairn on Kubernetes")),
            Duration::from_secs(30),
            "{url} does not answer"
        );
    }
    // Both pods' entrypoints registered; the platform sees both pods ready.
    assert_eventually!(
        {
            let st = cli.run_in(app.path(), &["status", "--json"]).ok().json();
            st[0]["deployments"][0]["entrypoints_connected"].as_u64() == Some(2)
                && st[0]["deployments"][0]["platform"]["alive"].as_u64() == Some(2)
        },
        Duration::from_secs(30),
        "the two entrypoints did not connect"
    );
    // Logs of both pods; exec in one; config reaches the pods.
    for _ in 0..6 {
        let _ = http_get(&v1_url);
    }
    assert_eventually!(
        log_instances(&cli.run_in(app.path(), &["logs"]).ok().stdout).len() == 2,
        Duration::from_secs(30),
        "`cairn logs` does not show both pods"
    );
    let ls = cli.run_in(app.path(), &["exec", "--", "ls", "/"]).ok();
    assert!(
        ls.stdout.contains("cairn-entrypoint") && ls.stdout.contains("www"),
        "{ls}"
    );
    let host = cli
        .run_in(app.path(), &["exec", "--", "hostname"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(
        v1_pods.contains(&host),
        "exec ran in {host:?}, not a pod of v1 {v1_pods:?}"
    );
    cli.run_in(
        app.path(),
        &["config", "set", "--app", "web", "GREETING=Bonjour"],
    )
    .ok();
    assert_eventually!(
        http_get(&format!("{v1_url}cgi-bin/hello"))
            .is_ok_and(|r| r.body.starts_with("Bonjour from ")),
        Duration::from_secs(30),
        "the pods did not pick up GREETING=Bonjour"
    );

    // v2: the Service moves to its pods; v1 keeps running beside it.
    let up2 = cli.run_in(app.path(), &["up", "--var", &reg]).ok();
    assert!(up2.stdout.contains("Deploying v2 with kubernetes"), "{up2}");
    let v2_pods = pods_of(&cluster, &project, 2);
    assert_eq!(v2_pods.len(), 2);
    assert_eq!(service_selects(&cluster, "web"), "2");
    assert_eq!(endpoint_pods(&cluster, "web"), v2_pods);
    assert_eq!(pods_of(&cluster, &project, 1), v1_pods, "v1 still runs");
    // Rollback: releasing v1 switches the selector back.
    let rb = cli.run_in(app.path(), &["release", "1"]).ok();
    assert!(
        rb.stdout.contains("Service web (ClusterIP) now selects v1"),
        "{rb}"
    );
    assert_eq!(service_selects(&cluster, "web"), "1");
    assert_eq!(endpoint_pods(&cluster, "web"), v1_pods);
    assert_eventually!(
        http_get(&release_url).is_ok_and(|r| r.status == 200),
        Duration::from_secs(30),
        "{release_url} does not answer after the rollback"
    );

    // An Ingress on the release: releasing v2 again applies it.
    let cfg = app.path().join("cairn.hcl");
    let text = std::fs::read_to_string(&cfg).expect("cairn.hcl").replace(
        "      port = 80\n",
        "      port = 80\n      ingress \"http\" {\n        host = \"web.example.test\"\n        path = \"/\"\n      }\n",
    );
    std::fs::write(&cfg, text).expect("write cairn.hcl");
    let fwd = cli.run_in(app.path(), &["release", "2"]).ok();
    assert!(
        fwd.stdout
            .contains("Ingress web-http routes / to Service web"),
        "{fwd}"
    );
    let rule = cluster.ok(&[
        "get",
        "ingresses.v1.networking.k8s.io",
        "web-http",
        "-o",
        "jsonpath={.spec.rules[0].host} {.spec.rules[0].http.paths[0].backend.service.name}",
    ]);
    assert_eq!(rule, "web.example.test web");
    assert_eq!(service_selects(&cluster, "web"), "2");

    // Destroy: nothing with Cairn's labels is left, pods and the Ingress included.
    let d = cli.run_in(app.path(), &["destroy"]).ok();
    assert!(d.stdout.contains("Destroying release"), "{d}");
    assert_eventually!(
        cluster.objects_of(&project).is_empty(),
        Duration::from_secs(120),
        "left: {:?}",
        cluster.objects_of(&project)
    );
    drop(cli);
    drop(cluster);
    assert_eq!(
        pod_containers(),
        0,
        "the cluster's stop leaves no pod container"
    );
}

#[test]
fn kubernetes_failures_say_why_and_leave_nothing_behind() {
    // Bound in this order, so dropped CLI first, registry last.
    let Some(Env {
        registry,
        cluster,
        _node,
        cli,
    }) = env()
    else {
        return;
    };
    let project = format!("kf-{}", std::process::id());
    let app = hello_app(&project, None);
    let reg = format!("registry=127.0.0.1:{}", registry.port);
    cli.run_in(app.path(), &["build", "--var", &reg]).ok();
    // Deleted at once; pods may still be terminating (the kubelet here is slow to end
    // them), so "nothing left" is awaited.
    let nothing_left = |case: &str| {
        assert_eventually!(
            cluster.objects_of(&project).is_empty(),
            Duration::from_secs(120),
            "{case}: something was left: {:?}",
            cluster.objects_of(&project)
        );
    };

    // An API server that does not answer.
    let bad = write(
        cluster.dir.path(),
        "unreachable.kubeconfig",
        &std::fs::read_to_string(cluster.kubeconfig())
            .expect("kubeconfig")
            .replace("https://127.0.0.1:6443", "https://127.0.0.1:1"),
    );
    let out = cli
        .run_in_env(
            app.path(),
            &[("KUBECONFIG", &bad.to_string_lossy())],
            &["deploy"],
        )
        .fails();
    assert!(
        out.stderr
            .contains("cannot reach the Kubernetes API server at https://127.0.0.1:1/")
            && out.stderr.to_lowercase().contains("connection refused"),
        "{out}"
    );

    // A namespace that does not exist.
    edit_deploy(
        app.path(),
        &format!("{HELLO_DEPLOY}      namespace    = \"nowhere\"\n"),
    );
    let out = cli.run_in(app.path(), &["deploy"]).fails();
    assert!(
        out.stderr.contains(
            "namespace \"nowhere\" does not exist in the cluster at https://127.0.0.1:6443/"
        ),
        "{out}"
    );
    nothing_left("missing namespace");

    // A container that crash-loops: the reason and its last lines.
    edit_deploy(
        app.path(),
        "      service_port = 3000\n      pod {\n        container {\n          command = [\"/bin/sh\", \"-c\", \"echo about to fail; exit 3\"]\n        }\n      }\n",
    );
    let out = cli.run_in(app.path(), &["deploy"]).fails();
    assert!(
        out.stderr.contains("is crash-looping")
            && out.stderr.contains("exited with code 3")
            && out.stderr.contains("about to fail"),
        "{out}"
    );
    assert!(
        out.stdout.contains("deploy failed, deleting what it made"),
        "{out}"
    );
    nothing_left("crash loop");

    // A probe that never passes.
    edit_deploy(
        app.path(),
        "      service_port    = 3000\n      probe_path      = \"/not-there\"\n      rollout_timeout = \"20s\"\n",
    );
    let out = cli.run_in(app.path(), &["deploy"]).fails();
    assert!(
        out.stderr.contains("did not become available within 20 s")
            && out.stderr.contains("probe keeps failing")
            && out.stderr.contains("404"),
        "{out}"
    );
    nothing_left("failing probe");

    // An image that cannot be pulled: built and pushed to a registry that is then gone
    // (`:latest` is always pulled, so the kubelet asks that registry).
    let gone = Registry::start();
    edit_deploy(app.path(), HELLO_DEPLOY);
    cli.run_in(
        app.path(),
        &[
            "build",
            "--var",
            &format!("registry=127.0.0.1:{}", gone.port),
        ],
    )
    .ok();
    let gone_port = gone.port;
    drop(gone);
    let out = cli.run_in(app.path(), &["deploy"]).fails();
    assert!(
        out.stderr.contains("cannot get its image")
            && out.stderr.contains(&format!(
                "127.0.0.1:{gone_port}/kubernetes-hello/web:latest"
            ))
            && (out.stderr.contains("ErrImagePull") || out.stderr.contains("ImagePullBackOff")),
        "{out}"
    );
    nothing_left("unpullable image");

    // Every failed deploy is a failed deployment in the records.
    let list = cli
        .run_in(app.path(), &["deployment", "list", "--json"])
        .ok()
        .json();
    let failed = list
        .as_array()
        .expect("a list")
        .iter()
        .filter(|d| d["status"].as_str() == Some("Error") && d["plugin"] == "kubernetes")
        .count();
    assert_eq!(failed, 5, "{list}");
}

/// A real `waypoint.hcl` of the corpus that deploys and releases with kubernetes, using
/// plugins Cairn has (docker build and registry, kubernetes deploy and release), deploys on
/// the local cluster unchanged but for its registry.
#[test]
fn a_corpus_kubernetes_config_deploys_on_the_local_cluster() {
    let Some(corpus) = cairn_tests::corpus::dir() else {
        panic!("no ../shared/waypoint-corpus next to the checkout");
    };
    // Bound in this order, so dropped CLI first, registry last.
    let Some(Env {
        registry,
        cluster,
        _node,
        cli,
    }) = env()
    else {
        return;
    };
    let file = corpus.join(
        "hashicorp_waypoint-examples__kubernetes_go-workspace-pull_waypoint.hcl/waypoint.hcl",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&file, dir.path().join("waypoint.hcl")).expect("copy");
    // The app's source (the corpus has only the config): the example's web server.
    let src = workspace_root().join("examples/kubernetes-hello");
    std::fs::copy(src.join("Dockerfile"), dir.path().join("Dockerfile")).expect("Dockerfile");
    copy_tree(&src.join("www"), &dir.path().join("www"));
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).expect("busybox");
    let image = format!("push_image=127.0.0.1:{}/go-k8s", registry.port);
    let up = cli.run_in(dir.path(), &["up", "--var", &image]).ok();
    assert!(up.stdout.contains("Deploying v1 with kubernetes"), "{up}");
    assert!(
        up.stdout
            .contains("Service go-k8s (LoadBalancer) now selects v1"),
        "{up}"
    );
    // `annotations = labels`: the app's labels are on its pods as annotations.
    let ann = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "cairn.dev/project=go-k8s",
        "-o",
        "jsonpath={.items[0].metadata.annotations.service}",
    ]);
    assert_eq!(ann, "go-k8s");
    assert_eventually!(
        via_cluster_ip(&cluster, "go-k8s", "/").is_some_and(|b| b.contains("Hello from Cairn")),
        Duration::from_secs(30),
        "the corpus app's Service does not answer on port 3000"
    );
    cli.run_in(dir.path(), &["destroy"]).ok();
    assert_eventually!(
        cluster.objects_of("go-k8s").is_empty(),
        Duration::from_secs(120),
        "left: {:?}",
        cluster.objects_of("go-k8s")
    );
}

/// `kubernetes-apply`: a directory of manifests, templated with the pushed image, applied;
/// a later deploy prunes what left the manifests; destroy deletes only what each
/// deployment still owns.
#[test]
fn kubernetes_apply_applies_prunes_and_destroys() {
    // Bound in this order, so dropped CLI first, registry last.
    let Some(Env {
        registry,
        cluster,
        _node,
        cli,
    }) = env()
    else {
        return;
    };
    let project = format!("ka-{}", std::process::id());
    let app = tempfile::tempdir().expect("tempdir");
    let src = workspace_root().join("examples/kubernetes-hello");
    std::fs::copy(src.join("Dockerfile"), app.path().join("Dockerfile")).expect("Dockerfile");
    copy_tree(&src.join("www"), &app.path().join("www"));
    std::fs::copy("/bin/busybox", app.path().join("busybox")).expect("busybox");
    write(
        app.path(),
        "cairn.hcl",
        &format!(
            r#"project = "{project}"

app "web" {{
  build {{
    use "docker" {{}}
    registry {{
      use "docker" {{
        image = "127.0.0.1:{port}/ka/web"
        tag   = "latest"
      }}
    }}
  }}
  deploy {{
    use "kubernetes-apply" {{
      path        = templatedir("${{path.app}}/k8s", {{ image = "${{artifact.image}}:${{artifact.tag}}" }})
      prune_label = "app=kapply"
    }}
  }}
}}
"#,
            port = registry.port
        ),
    );
    std::fs::create_dir_all(app.path().join("k8s")).expect("k8s dir");
    let deployment = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: kapply, labels: {app: kapply}}
spec:
  replicas: 2
  selector: {matchLabels: {app: kapply}}
  template:
    metadata: {labels: {app: kapply}}
    spec:
      containers:
      - name: web
        image: ${image}
        env: [{name: PORT, value: "3000"}]
        ports: [{containerPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: kapply, labels: {app: kapply}}
spec:
  selector: {app: kapply}
  ports: [{port: 80, targetPort: 3000, protocol: TCP}]
"#;
    write(&app.path().join("k8s"), "web.yaml", deployment);
    write(
        &app.path().join("k8s"),
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kapply-config, labels: {app: kapply}}\ndata: {greeting: hello}\n",
    );
    let up = cli.run_in(app.path(), &["up"]).ok();
    for step in [
        "Deploying v1 with kubernetes-apply",
        "applying 3 object(s)",
        "applied ConfigMap kapply-config",
        "applied Deployment kapply",
        "kapply: 2/2 pods ready",
    ] {
        assert!(up.stdout.contains(step), "no {step:?}: {up}");
    }
    let image = cluster.ok(&[
        "get",
        "deployment",
        "kapply",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, format!("127.0.0.1:{}/ka/web:latest", registry.port));
    assert_eventually!(
        via_cluster_ip(&cluster, "kapply", "/").is_some_and(|b| b.contains("Hello from Cairn")),
        Duration::from_secs(30),
        "the applied Service does not answer"
    );
    // The applied objects carry Cairn's labels (their pods are the manifests' own).
    let mut ours = cluster.objects_of(&project);
    ours.sort();
    assert_eq!(
        ours,
        [
            "configmap/kapply-config",
            "deployment.apps/kapply",
            "service/kapply"
        ]
    );

    // The ConfigMap leaves the manifests: the next deploy prunes it.
    std::fs::remove_file(app.path().join("k8s/config.yaml")).expect("rm");
    let d2 = cli.run_in(app.path(), &["deploy"]).ok();
    assert!(d2.stdout.contains("pruned ConfigMap kapply-config"), "{d2}");
    assert!(!cluster
        .kubectl(&["get", "configmap", "kapply-config"])
        .status
        .success());

    // Destroy: v1's objects now belong to v2, which deletes them.
    let d = cli.run_in(app.path(), &["destroy"]).ok();
    assert!(
        d.stdout.contains("a later deploy applied again were left"),
        "{d}"
    );
    assert_eventually!(
        cluster.objects_of(&project).is_empty(),
        Duration::from_secs(60),
        "left: {:?}",
        cluster.objects_of(&project)
    );
}
