//! Issue 18's ground: the local Kubernetes cluster of `tests/k8s/local-cluster.sh` (built
//! from Debian's source package by `.ci/run`) starts on this machine, runs a 2-replica
//! Deployment of a locally made image as real containers on the Docker engine, routes its
//! Service's cluster address through kube-proxy, execs in a pod, and stops leaving no pod
//! container behind. The `kubernetes` platform's tests build on this.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_tests::workspace_root;

fn script() -> PathBuf {
    workspace_root().join("tests/k8s/local-cluster.sh")
}

fn kubectl() -> PathBuf {
    let cache = std::env::var("CAIRN_K8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME"))
                .join(".cache/cairn/kubernetes-1.20.2")
        });
    cache.join("bin/kubectl")
}

/// The cluster, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        assert!(
            kubectl().exists(),
            "no Kubernetes binaries at {}: run `tests/k8s/local-cluster.sh build` (.ci/run does)",
            kubectl().display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run local-cluster.sh");
        let c = Cluster { dir };
        assert!(
            out.status.success(),
            "the cluster did not start: {}\n(logs in {})",
            String::from_utf8_lossy(&out.stderr),
            c.dir.path().join("logs").display()
        );
        c
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .args(args)
            .output()
            .expect("run kubectl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// An image `name` holding busybox, serving `www/index.html` = `body` on port 8080.
fn busybox_web_image(name: &str, body: &str) {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("bin")).expect("bin");
    std::fs::create_dir_all(root.path().join("www")).expect("www");
    std::fs::copy("/bin/busybox", root.path().join("bin/busybox"))
        .expect("/bin/busybox (Debian's busybox-static)");
    std::fs::write(root.path().join("www/index.html"), body).expect("index");
    let tar = root.path().join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-cf"])
        .arg(&tar)
        .args(["bin", "www"])
        .status()
        .expect("tar");
    assert!(st.success());
    let st = Command::new("docker")
        .args([
            "import",
            "-c",
            r#"CMD ["/bin/busybox","httpd","-f","-p","8080","-h","/www"]"#,
        ])
        .arg(&tar)
        .arg(name)
        .output()
        .expect("docker import");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

fn pod_containers() -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=io.kubernetes.pod.name"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn the_local_cluster_runs_a_deployment_behind_its_service() {
    let marker = format!("k8s-fixture-{}", std::process::id());
    busybox_web_image("cairn-k8s-fixture:1", &marker);
    let started = Instant::now();
    let cluster = Cluster::start();
    let ready = started.elapsed();
    let manifest = write(
        cluster.dir.path(),
        "web.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: fixture, labels: {app: fixture}}
spec:
  replicas: 2
  selector: {matchLabels: {app: fixture}}
  template:
    metadata: {labels: {app: fixture}}
    spec:
      containers:
      - name: web
        image: cairn-k8s-fixture:1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: fixture}
spec:
  selector: {app: fixture}
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
"#,
    );
    cluster.ok(&["apply", "-f", manifest.to_str().expect("path")]);
    let rollout = Instant::now();
    cluster.ok(&["rollout", "status", "deployment/fixture", "--timeout=120s"]);
    eprintln!(
        "cluster ready in {:.1} s, a 2-replica rollout in {:.1} s",
        ready.as_secs_f64(),
        rollout.elapsed().as_secs_f64()
    );
    let pods = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=fixture",
        "-o",
        "jsonpath={.items[*].status.phase}",
    ]);
    assert_eq!(
        pods.split_whitespace().collect::<Vec<_>>(),
        ["Running", "Running"]
    );
    let endpoints = cluster.ok(&[
        "get",
        "endpoints",
        "fixture",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    assert_eq!(endpoints.split_whitespace().count(), 2, "{endpoints}");

    // The Service's cluster address, through kube-proxy's rules.
    let ip = cluster.ok(&["get", "svc", "fixture", "-o", "jsonpath={.spec.clusterIP}"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let out = Command::new("curl")
            .args(["-sS", "-m", "5", &format!("http://{}/", ip.trim())])
            .output()
            .expect("curl");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the Service's address {ip} never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(body.trim(), marker);

    // kubectl exec reaches a pod (the API server reaches the kubelet by host name).
    let inside = cluster.ok(&[
        "exec",
        "deploy/fixture",
        "--",
        "/bin/busybox",
        "cat",
        "/www/index.html",
    ]);
    assert_eq!(inside.trim(), marker);
    assert!(pod_containers() >= 4, "two pods: sandboxes and containers");

    drop(cluster);
    assert_eq!(pod_containers(), 0, "stop leaves no pod container");
}
