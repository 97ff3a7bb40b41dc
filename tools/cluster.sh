#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd + kube-apiserver +
# kube-controller-manager, RBAC on, an admin client certificate, data on
# tmpfs. The controller manager runs the loops a user's cluster has and no
# node: garbage collection (owned objects go with their owner), namespace
# deletion, ClusterRole aggregation (the built-in view/edit/admin roles),
# ServiceAccounts and their tokens, and each namespace's kube-root-ca.crt. Used by `make test`, `make demo`
# and the Rust test support (host/src/testing).
#
#   tools/cluster.sh install   build/cache kube-apiserver, kube-controller-manager, kubectl, helm and etcd (never touches a system etcd)
#   tools/cluster.sh up        start (or reuse) the control plane; prints the kubeconfig path
#   tools/cluster.sh down      stop it and remove its state
#   tools/cluster.sh status    exit 0 when it is up and ready
#   tools/cluster.sh env       print `export KUBECONFIG=... PATH=...` lines
#   tools/cluster.sh baseline  build client-go's leader election (the benchmark baseline); prints its path
#
# Everything slow is cached under ~/.cache/leasehold, keyed by version, so only
# a new machine pays for it. Nothing built here is ever committed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LEASEHOLD_CACHE:-$HOME/.cache/leasehold}
# The Kubernetes version is pinned once, in tools/k8s/go.mod.
K8S_VERSION=$(grep -oE 'k8s.io/kubernetes v1\.[0-9]+\.[0-9]+' "$ROOT/tools/k8s/go.mod" | head -1 | cut -d' ' -f2)
HELM_VERSION=v3.19.5
BIN=$CACHE/bin/k8s-$K8S_VERSION
HELM_BIN=$CACHE/bin/helm-$HELM_VERSION
# One control plane per machine user; tests and the demo share it.
STATE=${LEASEHOLD_CLUSTER_DIR:-/dev/shm/leasehold-cluster-$(id -u)}
export GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build GOFLAGS=-mod=mod CGO_ENABLED=0

log() { printf '%s\n' "cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=tools/processes.sh
source "$ROOT/tools/processes.sh"

# etcd comes from Debian's etcd-server package, unpacked into the cache
# rather than installed: installing it would start a system etcd on 2379,
# and this script never starts, stops or reconfigures what it does not own.
ETCD_BIN=$CACHE/bin/etcd-debian
install_etcd() {
  [[ -x $ETCD_BIN/etcd ]] && return
  command -v apt-get >/dev/null || die "etcd is unpacked from Debian's etcd-server package; on a non-Debian machine put an etcd 3.4+ binary at $ETCD_BIN/etcd"
  log "unpacking etcd from Debian's etcd-server package into $ETCD_BIN (once per machine)"
  local work; work=$(mktemp -d)
  (cd "$work" && apt-get download -qq etcd-server >/dev/null 2>&1) \
    || { apt-get update -qq >/dev/null && (cd "$work" && apt-get download -qq etcd-server >/dev/null); } \
    || die "apt-get could not download etcd-server"
  dpkg-deb -x "$work"/etcd-server_*.deb "$work/root"
  mkdir -p "$ETCD_BIN.tmp" && cp "$work/root/usr/bin/etcd" "$ETCD_BIN.tmp/"
  rm -rf "$work" "$ETCD_BIN" && mv "$ETCD_BIN.tmp" "$ETCD_BIN"
}

# What the scripts call but cannot install themselves, each with one line on
# how to get it.
check_prerequisites() {
  local missing=0
  need() { command -v "$1" >/dev/null || { log "missing $1: $2"; missing=1; }; }
  need go "install Go 1.24+ (https://go.dev/doc/install) or: apt-get install golang"
  need openssl "apt-get install openssl"
  need curl "apt-get install curl"
  need python3 "apt-get install python3"
  need flock "apt-get install util-linux"
  ((missing == 0)) || die "prerequisites missing (see above)"
}

# The controller manager's loops that make sense without nodes or a cloud.
KCM_CONTROLLERS=garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller

build_kubernetes() {
  [[ -x $BIN/kube-apiserver && -x $BIN/kube-controller-manager && -x $BIN/kubectl ]] && return
  log "building kube-apiserver, kube-controller-manager and kubectl $K8S_VERSION from the Go module proxy (once per machine; cached in $BIN)"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  done
  mkdir -p "$BIN.tmp"
  (cd "$ROOT/tools/k8s" && go build -trimpath -ldflags "$ldflags" -o "$BIN.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
}

build_helm() {
  [[ -x $HELM_BIN/helm ]] && return
  log "building helm $HELM_VERSION from the Go module proxy (once per machine)"
  GOBIN=$HELM_BIN.tmp go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$HELM_BIN" && mv "$HELM_BIN.tmp" "$HELM_BIN"
}

# client-go's leader election with leasehold's flags: the baseline that
# `make bench-failover` measures in the same run. Cached by source hash.
cmd_baseline() {
  local src=$ROOT/tools/k8s/cmd/client-go-election
  local hash; hash=$(cat "$src"/*.go "$ROOT/tools/k8s/go.sum" | sha256sum | cut -c1-12)
  local out=$CACHE/bin/client-go-election-$K8S_VERSION-$hash
  if [[ ! -x $out ]]; then
    log "building the client-go leader-election baseline"
    (cd "$ROOT/tools/k8s" && go build -trimpath -o "$out.tmp" ./cmd/client-go-election)
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

cmd_install() {
  check_prerequisites
  install_etcd
  build_kubernetes
  build_helm
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A small CA, a serving certificate for 127.0.0.1 and an admin client
# certificate (O=system:masters is bound to cluster-admin by RBAC's bootstrap
# policy, so RBAC stays on for every other identity).
make_pki() {
  local pki=$STATE/pki
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=leasehold-test-ca \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=leasehold-admin" \
      -keyout admin.key -out admin.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

# The audit log that tests read to judge who wrote what, in the API server's
# own order: Lease writes (who holds which election, and what the fencing
# tests' plugin writes), with their responses, so each committed write has
# its resourceVersion; and who wrote Plugin statuses, with which term.
# Nothing else, so it stays small. (Policies match the
# authenticated user, not an impersonated one, and ConfigMaps also carry
# megabytes of components: hence Leases.)
write_audit_policy() {
  cat > "$STATE/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
omitManagedFields: true
rules:
- level: None
  verbs: [get, list, watch]
- level: RequestResponse
  resources: [{group: coordination.k8s.io, resources: [leases]}]
- level: Metadata
  resources: [{group: leasehold.dev, resources: [plugins/status]}]
- level: None
EOF
}

write_kubeconfig() {
  local port=$1 pki=$STATE/pki
  cat > "$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: leasehold-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: leasehold-test
  context: {cluster: leasehold-test, user: admin, namespace: default}
current-context: leasehold-test
EOF
}

is_ready() {
  [[ -f $STATE/kubeconfig ]] || return 1
  # A control plane whose controller manager died is not the one tests expect.
  [[ ! -f $STATE/controller-manager.pid ]] || kill -0 "$(cat "$STATE/controller-manager.pid")" 2>/dev/null || return 1
  local server
  server=$(awk '/server:/ {print $2}' "$STATE/kubeconfig")
  curl -fsS --max-time 2 --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" \
    --key "$STATE/pki/admin.key" "$server/readyz" >/dev/null 2>&1
}

cmd_status() { is_ready; }

cmd_up() {
  if is_ready; then
    echo "$STATE/kubeconfig"
    return
  fi
  # Serialise concurrent callers (parallel test binaries): the first starts
  # the control plane, the others wait and reuse it. The daemons must not
  # inherit the lock's descriptor (9>&- below), or it is held while they run.
  exec 9>"$STATE.lock"
  flock 9
  if is_ready; then
    echo "$STATE/kubeconfig"
    return
  fi
  cmd_install
  cmd_down quiet
  mkdir -p "$STATE"
  make_pki
  write_audit_policy
  local etcd_port etcd_peer api_port
  etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port)
  # setsid: the control plane outlives the shell that started it (cargo test
  # may start it; `tools/cluster.sh down` stops it).
  setsid "$ETCD_BIN/etcd" --name leasehold --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "leasehold=http://127.0.0.1:$etcd_peer" \
    >"$STATE/etcd.log" 2>&1 </dev/null 9>&- &
  echo $! > "$STATE/etcd.pid"
  setsid "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$STATE/pki" \
    --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
    --client-ca-file "$STATE/pki/ca.crt" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$STATE/pki/sa.pub" \
    --service-account-signing-key-file "$STATE/pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --disable-admission-plugins ServiceAccount \
    --allow-privileged=true \
    --audit-policy-file "$STATE/audit-policy.yaml" --audit-log-path "$STATE/audit.log" \
    >"$STATE/apiserver.log" 2>&1 </dev/null 9>&- &
  echo $! > "$STATE/apiserver.pid"
  write_kubeconfig "$api_port"
  # Generous: a cold apiserver on a busy 2-core machine takes a while.
  local deadline=$((SECONDS + 120))
  until is_ready; do
    if ! kill -0 "$(cat "$STATE/apiserver.pid")" 2>/dev/null; then
      tail -20 "$STATE/apiserver.log" >&2
      die "kube-apiserver exited; log: $STATE/apiserver.log"
    fi
    ((SECONDS < deadline)) || die "kube-apiserver not ready after 120 s; log: $STATE/apiserver.log"
    sleep 0.1
  done
  # After the API server: it reads its kubeconfig once at start.
  setsid "$BIN/kube-controller-manager" \
    --kubeconfig "$STATE/kubeconfig" \
    --leader-elect=false --secure-port 0 \
    --controllers "$KCM_CONTROLLERS" \
    --service-account-private-key-file "$STATE/pki/sa.key" \
    --root-ca-file "$STATE/pki/ca.crt" \
    --use-service-account-credentials=false \
    >"$STATE/controller-manager.log" 2>&1 </dev/null 9>&- &
  echo $! > "$STATE/controller-manager.pid"
  log "control plane $K8S_VERSION ready at https://127.0.0.1:$api_port (state in $STATE)"
  echo "$STATE/kubeconfig"
}

cmd_down() {
  stop_pid "$STATE/controller-manager.pid"
  stop_pid "$STATE/apiserver.pid"
  stop_pid "$STATE/etcd.pid"
  rm -rf "$STATE"
  [[ ${1:-} == quiet ]] || log "control plane stopped"
}

cmd_env() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export PATH=$BIN:$HELM_BIN:$ETCD_BIN:\$PATH"
}

case ${1:-} in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  baseline) cmd_baseline ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
