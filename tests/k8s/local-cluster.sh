#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, for Cairn's kubernetes tests (issue 18).
#
# No registry this machine reaches ships Kubernetes server binaries, so they are built from
# Debian bookworm's `kubernetes` source package (1.20.2, dependencies vendored) with Debian's
# Go, once, into a cache outside the checkout; etcd is Debian's `etcd-server`; pods are
# containers on this machine's Docker engine (the 1.20 kubelet's dockershim).
#
#   tests/k8s/local-cluster.sh build        packages, sources, patches, binaries (reused when present)
#   tests/k8s/local-cluster.sh start DIR    start the cluster; DIR gets its PKI, kubeconfig, data, logs
#   tests/k8s/local-cluster.sh stop DIR     stop it and remove its pods' containers
#
# After `start`, DIR/kubeconfig reaches the API server at https://127.0.0.1:$CAIRN_K8S_PORT
# (default 6443) as a cluster admin. The cache is $CAIRN_K8S_CACHE (default
# ~/.cache/cairn/kubernetes-1.20.2).
set -euo pipefail

K8S_VERSION=1.20.2
CACHE=${CAIRN_K8S_CACHE:-$HOME/.cache/cairn/kubernetes-$K8S_VERSION}
BIN=$CACHE/bin
PORT=${CAIRN_K8S_PORT:-6443}
ETCD_PORT=${CAIRN_K8S_ETCD_PORT:-23790}
PAUSE_IMAGE=cairn-k8s-pause:1
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

say() { echo "local-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

built() {
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

cmd_build() {
  need_packages etcd-server busybox-static openssl iptables conntrack
  if built; then
    say "binaries of $K8S_VERSION already in $BIN"
    return 0
  fi
  need_packages golang-go jq rsync make dpkg-dev
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-k8s-build.XXXXXX")
  trap 'rm -rf "$work"' RETURN
  # Debian's sources, through a private sources list (the system's lists are left alone).
  mkdir -p "$work/lists/partial"
  echo "deb-src http://deb.debian.org/debian bookworm main" >"$work/sources.list"
  local apt=(apt-get -qq -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists")
  say "fetching the kubernetes source package (bookworm)"
  "${apt[@]}" update
  (cd "$work" && "${apt[@]}" source --download-only kubernetes 2>/dev/null)
  (cd "$work" && dpkg-source -x --no-check ./*.dsc src >/dev/null)
  local src=$work/src
  [ -f "$src/CHANGELOG/CHANGELOG-1.20.md" ] && ls "$work"/*really"$K8S_VERSION"*.dsc >/dev/null 2>&1 \
    || die "the source package is not kubernetes $K8S_VERSION (bookworm's moved?)"
  # This machine cannot lower a process's OOM score: the kubelet's two negative scores (the
  # pod sandbox's, and guaranteed pods') become 0, or no pod starts. (The kubelet's and
  # kube-proxy's own scores are flags, given as 0 at start.)
  sed -i -E 's/^(\s*defaultSandboxOOMAdj\s+int\s*=\s*)-998$/\10/' "$src/pkg/kubelet/dockershim/docker_sandbox.go"
  sed -i -E 's/^(\s*guaranteedOOMScoreAdj\s+int\s*=\s*)-997$/\10/' "$src/pkg/kubelet/qos/policy.go"
  grep -qE 'defaultSandboxOOMAdj\s+int\s*=\s*0$' "$src/pkg/kubelet/dockershim/docker_sandbox.go" \
    && grep -qE 'guaranteedOOMScoreAdj\s+int\s*=\s*0$' "$src/pkg/kubelet/qos/policy.go" \
    || die "the OOM score patch no longer matches the kubelet's sources"
  say "building ${BINARIES[*]} (about 6 minutes on 2 cores)"
  mkdir -p "$src/.go/src/k8s.io"
  ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  local what=()
  for b in "${BINARIES[@]}"; do what+=("cmd/$b"); done
  (cd "$src" && env GOPATH="$src/.go" GOFLAGS=-mod=vendor CGO_ENABLED=0 HOME="$work" \
    PATH="/usr/lib/go/bin:$PATH" make WHAT="${what[*]}" >"$work/build.log" 2>&1) \
    || { tail -30 "$work/build.log" >&2; die "the build failed"; }
  mkdir -p "$BIN.new"
  for b in "${BINARIES[@]}"; do cp "$src/_output/bin/$b" "$BIN.new/"; done
  rm -rf "$BIN" && mv "$BIN.new" "$BIN"
  say "built into $BIN"
}

pki() {
  local d=$1
  mkdir -p "$d/pki"
  cd "$d/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=cairn-local-k8s-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
  cat >apiserver.ext <<EOF
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.0.0.1
extendedKeyUsage=serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >token
  echo "$(cat token),admin,admin,system:masters" >tokens.csv
  cd - >/dev/null
  cat >"$d/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority: $d/pki/ca.crt
users:
- name: admin
  user:
    token: $(cat "$d/pki/token")
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
EOF
}

pause_image() {
  docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
  local t
  t=$(mktemp -d)
  mkdir -p "$t/bin"
  cp /bin/busybox "$t/bin/busybox"
  tar -C "$t" -cf "$t/rootfs.tar" bin
  docker import -c 'CMD ["/bin/busybox","sh","-c","trap \"exit 0\" TERM INT; while :; do /bin/busybox sleep 1; done"]' \
    "$t/rootfs.tar" "$PAUSE_IMAGE" >/dev/null
  rm -rf "$t"
}

spawn() {
  local d=$1 name=$2
  shift 2
  "$@" >"$d/logs/$name.log" 2>&1 &
  echo $! >"$d/pids/$name"
}

wait_for() {
  local what=$1 secs=$2
  shift 2
  local i
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what did not happen within ${secs}s"
}

cmd_start() {
  local d=${1:?usage: start DIR}
  built || die "no binaries in $BIN: run '$0 build' first"
  mkdir -p "$d"
  d=$(cd "$d" && pwd)
  mkdir -p "$d/logs" "$d/pids" "$d/etcd" "$d/kubelet"
  pki "$d"
  pause_image
  local kc=$d/kubeconfig
  spawn "$d" etcd etcd --name local --data-dir "$d/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "local=http://127.0.0.1:$((ETCD_PORT + 10))"
  spawn "$d" kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$PORT" --advertise-address 127.0.0.1 \
    --token-auth-file "$d/pki/tokens.csv" --client-ca-file "$d/pki/ca.crt" \
    --tls-cert-file "$d/pki/apiserver.crt" --tls-private-key-file "$d/pki/apiserver.key" \
    --service-account-key-file "$d/pki/sa.pub" --service-account-signing-key-file "$d/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode AlwaysAllow --allow-privileged \
    --kubelet-preferred-address-types Hostname --kubelet-https=true
  wait_for "the API server answering" 60 "$BIN/kubectl" --kubeconfig "$kc" get --raw /readyz
  spawn "$d" kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$kc" \
    --service-account-private-key-file "$d/pki/sa.key" --root-ca-file "$d/pki/ca.crt" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 --port 0 \
    --controllers '*,-nodeipam,-cloud-node-lifecycle'
  spawn "$d" kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$kc" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0 --port 0
  spawn "$d" kubelet "$BIN/kubelet" --kubeconfig "$kc" --hostname-override localhost \
    --container-runtime docker --pod-infra-container-image "$PAUSE_IMAGE" \
    --cgroup-driver cgroupfs --root-dir "$d/kubelet" --cert-dir "$d/kubelet/pki" \
    --fail-swap-on=false --eviction-hard '' --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
    --address 127.0.0.1 --authorization-mode AlwaysAllow --anonymous-auth=true \
    --resolv-conf '' --cgroups-per-qos=false --enforce-node-allocatable '' \
    --register-node --read-only-port 0 --healthz-port 0 --oom-score-adj 0
  spawn "$d" kube-proxy "$BIN/kube-proxy" --kubeconfig "$kc" --hostname-override localhost \
    --proxy-mode iptables --bind-address 127.0.0.1 --metrics-bind-address "127.0.0.1:$((ETCD_PORT + 21))" \
    --healthz-bind-address "127.0.0.1:$((ETCD_PORT + 20))" --conntrack-max-per-core 0 --oom-score-adj 0
  wait_for "node localhost Ready" 90 sh -c \
    "'$BIN/kubectl' --kubeconfig '$kc' get node localhost -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
  say "ready: KUBECONFIG=$kc"
}

cmd_stop() {
  local d=${1:?usage: stop DIR}
  [ -d "$d" ] || return 0
  mkdir -p "$d/pids"
  # The pods first (while the kubelet still runs they would come back): their containers.
  docker ps -aq --filter label=io.kubernetes.pod.name 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
  for n in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$d/pids/$n" ] && kill "$(cat "$d/pids/$n")" 2>/dev/null || true
  done
  sleep 1
  for n in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$d/pids/$n" ] && kill -9 "$(cat "$d/pids/$n")" 2>/dev/null || true
    rm -f "$d/pids/$n"
  done
  docker ps -aq --filter label=io.kubernetes.pod.name 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
  # The kubelet's mounts: its root dir (bind-mounted onto itself) and the volumes under it
  # (secrets are tmpfs).
  local root
  root=$(cd "$d" && pwd)/kubelet
  awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r \
    | xargs -r -n1 umount 2>/dev/null || true
  # kube-proxy's iptables rules go too, and the canary chains the kubelet and kube-proxy
  # leave (KUBE-*-CANARY, one per table).
  "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  local t c
  for t in filter nat mangle; do
    for c in $(iptables -t "$t" -S 2>/dev/null | sed -n 's/^-N \(KUBE-[A-Z-]*\)$/\1/p'); do
      iptables -t "$t" -S 2>/dev/null | grep -- "-j $c\b" | sed 's/^-A/-D/' | while read -r rule; do
        eval iptables -t "$t" "$rule" 2>/dev/null || true
      done || true
      iptables -t "$t" -F "$c" 2>/dev/null || true
      iptables -t "$t" -X "$c" 2>/dev/null || true
    done
  done
  say "stopped"
}

case "${1:-}" in
  build) cmd_build ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
