//! The local Kubernetes cluster of `tests/k8s/local-cluster.sh` (Kubernetes 1.20.2 built
//! from Debian's source package, pods on this machine's Docker engine), for the kubernetes
//! tests and benchmark. One cluster runs at a time on this machine (its ports and iptables
//! chains are fixed): [`Cluster::start`] holds a lock file until the cluster is dropped, so
//! tests in separate processes take turns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::workspace_root;

fn script() -> PathBuf {
    workspace_root().join("tests/k8s/local-cluster.sh")
}

/// The cache the binaries are built into.
pub fn cache() -> PathBuf {
    std::env::var("CAIRN_K8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME"))
                .join(".cache/cairn/kubernetes-1.20.2")
        })
}

pub fn kubectl_program() -> PathBuf {
    cache().join("bin/kubectl")
}

/// A running cluster, stopped when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Cluster {
    /// Starts the cluster (after any other process's cluster is stopped).
    pub fn start() -> Cluster {
        assert!(
            kubectl_program().exists(),
            "no Kubernetes binaries at {}: run `tests/k8s/local-cluster.sh build` (.ci/run does)",
            kubectl_program().display()
        );
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("cairn-local-k8s.lock"))
            .expect("lock file");
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock the local cluster");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run local-cluster.sh");
        let c = Cluster { dir, _lock: lock };
        assert!(
            out.status.success(),
            "the cluster did not start: {}\n(logs in {})",
            String::from_utf8_lossy(&out.stderr),
            c.dir.path().join("logs").display()
        );
        c
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_program())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// `kubectl ARGS…`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Every object (of the kinds Cairn makes, and the pods and ReplicaSets they make) in any
    /// namespace carrying Cairn's label for `project`, as `kind/name`.
    pub fn objects_of(&self, project: &str) -> Vec<String> {
        let out = self.ok(&[
            "get",
            "deployments,replicasets,pods,services,secrets,configmaps,ingresses,horizontalpodautoscalers",
            "--all-namespaces",
            "-l",
            &format!("cairn.dev/project={project}"),
            "-o",
            "name",
        ]);
        out.lines().map(str::to_string).collect()
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
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

/// Pod containers on the engine (the kubelet's, by its label).
pub fn pod_containers() -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=io.kubernetes.pod.name"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}
