#!/usr/bin/env bash
# `make demo`: Leasehold installed with its Helm chart on a real local
# control plane, with the example plugins declared in the chart's values,
# and three replicas running as the chart's ServiceAccount. Shows the
# election, the plugins reconciling real objects on the leader only, a
# graceful handover and a crash takeover (the plugins follow the leader),
# with timings.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${LEASEHOLD_BIN:-$ROOT/target/release/leasehold}
# Where `image` sources are read from: the built components stand in for
# the ones the Dockerfile bakes into /plugins.
PLUGIN_ROOT=${PLUGIN_ROOT:-$ROOT/target/wasm32-wasip2/plugin}
WORK=$(mktemp -d /tmp/leasehold-demo.XXXXXX)
NAMESPACE=leasehold-demo-$$
RELEASE=$NAMESPACE
LEASE=leasehold
# Short timings so the crash takeover is quick to watch; the defaults are
# client-go's 15 s / 10 s / 2 s.
TIMINGS=(--lease-duration 4s --renew-deadline 3s --retry-period 1s)
declare -A PID PORT

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
now_us() { python3 -c 'import time; print(time.time_ns() // 1000)'; }
ms_since() { echo $(( ($(now_us) - $1) / 1000 )); }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
leader_of() { curl -fsS "localhost:${PORT[$1]}/api/v1/leader" | json 'd["holder"] or ""'; }
first_action_after() { # replica, since-µs
  awk -v since="$2" '$2 >= since { print $2; exit }' "$WORK/$1.activity" 2>/dev/null
}
cleanup() {
  for r in "${!PID[@]}"; do
    kill -KILL "${PID[$r]}" 2>/dev/null || true
  done
  helm uninstall "$RELEASE" -n "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
  kubectl delete namespace "$NAMESPACE" "$NAMESPACE-a" "$NAMESPACE-b" --wait=false >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_replica() {
  local name=$1
  PORT[$name]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  KUBECONFIG=$WORK/replica.kubeconfig "$BIN" run --identity "$name" \
    --lease-namespace "$NAMESPACE" --lease-name "$LEASE" "${TIMINGS[@]}" \
    --plugin-namespace "$NAMESPACE" --plugin-root "$PLUGIN_ROOT" --compile-cache "$WORK/cache-$name" \
    --listen "127.0.0.1:${PORT[$name]}" --activity-log "$WORK/$name.activity" \
    >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  # Not a job of this shell: no "Killed" notices in the story.
  disown "${PID[$name]}"
}

# When a step times out: what the Plugins say and the replicas' last words.
explain() {
  echo "the demo stopped: $*" >&2
  kubectl -n "$NAMESPACE" get plugins -o jsonpath='{range .items[*]}{.metadata.name}: {.status.lastError.message}{"\n"}{end}' >&2 || true
  for r in "${!PID[@]}"; do echo "--- $r" >&2; tail -n 5 "$WORK/$r.log" >&2; done
  exit 1
}

wait_exit() { while kill -0 "$1" 2>/dev/null; do sleep 0.02; done; }

wait_for_leader() { # among...
  local deadline=$((SECONDS + 30)) holder
  while ((SECONDS < deadline)); do
    for r in "$@"; do
      holder=$(leader_of "$r" 2>/dev/null || true)
      if [[ -n $holder && " $* " == *" $holder "* ]]; then echo "$holder"; return; fi
    done
    sleep 0.05
  done
  echo "no leader after 30 s; logs in $WORK" >&2; exit 1
}

server=$(awk '/server:/ {print $2}' "$KUBECONFIG")
say "Local control plane: $(kubectl version -o json 2>/dev/null | json 'd["serverVersion"]["gitVersion"]') with etcd $(etcd --version | awk '/etcd Version/ {print $3}') at $server"

say "Installing Leasehold with Helm, the example plugins declared in its values"
# The greeter reconciles a custom resource of its own; its author ships the CRD.
kubectl apply --server-side -f "$ROOT/plugins/examples/greeter/crd.json" >/dev/null
cat >"$WORK/values.yaml" <<YAML
replicaCount: 3
plugins:
  - name: configmap-mirror
    source: {image: {path: configmap_mirror.wasm}}
    serviceAccountName: configmap-mirror
    serviceAccount: {create: true}
    config: {namespaceSelector: "leasehold.dev/mirror-target=$NAMESPACE"}
    limits: {memory: 32Mi, timeout: 1s}
    clusterRules:
      - {apiGroups: [""], resources: [configmaps], verbs: [get, list, watch, create, update, patch, delete]}
      - {apiGroups: [""], resources: [namespaces], verbs: [get, list, watch]}
      - {apiGroups: ["", events.k8s.io], resources: [events], verbs: [create, patch]}
  - name: greeter
    source: {image: {path: greeter.wasm}}
    serviceAccountName: greeter
    serviceAccount: {create: true}
    # It watches Greetings and ConfigMaps everywhere, but writes only here.
    clusterRules:
      - {apiGroups: ["", examples.leasehold.dev], resources: [configmaps, greetings], verbs: [get, list, watch]}
    rules:
      - {apiGroups: [""], resources: [configmaps], verbs: [create, update, patch]}
      - {apiGroups: [examples.leasehold.dev], resources: [greetings/status], verbs: [update, patch]}
      - {apiGroups: ["", events.k8s.io], resources: [events], verbs: [create, patch]}
YAML
t0=$(now_us)
helm install "$RELEASE" "$ROOT/charts/leasehold" -n "$NAMESPACE" --create-namespace \
  -f "$WORK/values.yaml" >/dev/null
note "helm install $RELEASE charts/leasehold --set replicaCount=3 -f values.yaml  ($(ms_since "$t0") ms)"
note "it created: $(helm get manifest "$RELEASE" -n "$NAMESPACE" | awk '/^kind:/ {print $2}' | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')"
note "plus the Plugin CRD from the chart's crds/; each plugin got a ServiceAccount and only the RBAC its values grant"
# No kubelet runs here, so the Deployment's pods are played by local
# processes with the pods' identity: a token of the chart's ServiceAccount.
kubectl config view --raw --minify >"$WORK/replica.kubeconfig"
token=$(kubectl -n "$NAMESPACE" create token "$RELEASE" --duration 1h)
kubectl --kubeconfig "$WORK/replica.kubeconfig" config set-credentials replica --token "$token" >/dev/null
kubectl --kubeconfig "$WORK/replica.kubeconfig" config set-context --current --user replica >/dev/null
note "the replicas below play the Deployment's pods (no kubelet here): local processes acting as"
note "system:serviceaccount:$NAMESPACE:$RELEASE, so the chart's RBAC is all they have"

say "Starting three replicas (lease ${TIMINGS[1]}, renew deadline ${TIMINGS[3]}, retry ${TIMINGS[5]})"
started=$(now_us)
for r in alpha bravo charlie; do start_replica "$r"; done
leader=$(wait_for_leader alpha bravo charlie)
elected=$(first_action_after "$leader" "$started")
note "$leader was elected; its leader-only work started $(( (elected - started) / 1000 )) ms after launch"
note "every replica serves the API; ask any of them:"
for r in alpha bravo charlie; do
  role=$(curl -fsS "localhost:${PORT[$r]}/api/v1/leader" | json 'd["role"]')
  note "  curl localhost:${PORT[$r]}/api/v1/leader   -> $r is $role"
done

kubectl -n "$NAMESPACE" wait plugin --all --for=condition=Ready --timeout=60s >/dev/null ||
  explain "the plugins did not become Ready"
note "every replica read both components from --plugin-root and compiled them; $leader runs them ($(ms_since "$started") ms after launch):"
kubectl -n "$NAMESPACE" get plugins | sed 's/^/      /'

say "The plugins at work: the mirror copies a labelled ConfigMap, the greeter answers a Greeting"
for target in a b; do
  kubectl create namespace "$NAMESPACE-$target" >/dev/null
  kubectl label namespace "$NAMESPACE-$target" leasehold.dev/mirror-target="$NAMESPACE" >/dev/null
done
t0=$(now_us)
kubectl -n "$NAMESPACE" create configmap greeting --from-literal=text=hello >/dev/null
kubectl -n "$NAMESPACE" label configmap greeting leasehold.dev/mirror=true >/dev/null
mirrored() { # text
  for target in a b; do
    [[ $(kubectl -n "$NAMESPACE-$target" get configmap greeting -o jsonpath='{.data.text}' 2>/dev/null) == "$1" ]] || return 1
  done
}
until mirrored hello; do sleep 0.05; done
note "copied into $NAMESPACE-a and $NAMESPACE-b $(( ($(now_us) - t0) / 1000 )) ms after labelling"
kubectl apply -f - >/dev/null <<YAML
apiVersion: examples.leasehold.dev/v1alpha1
kind: Greeting
metadata: {name: hello, namespace: $NAMESPACE}
spec: {name: world}
YAML
t0=$(now_us)
kubectl -n "$NAMESPACE" wait greeting/hello --for=jsonpath='{.status.ready}'=true --timeout=30s >/dev/null ||
  explain "the Greeting was not answered"
note "a Greeting for \"world\" got its ConfigMap and a ready status $(ms_since "$t0") ms after it was created:"
note "  hello-greeting: $(kubectl -n "$NAMESPACE" get configmap hello-greeting -o jsonpath='{.data.greeting}')   (owned by $(kubectl -n "$NAMESPACE" get configmap hello-greeting -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}'))"
note "instances created so far, per replica (only the leader ever instantiates):"
for r in alpha bravo charlie; do
  count=$(curl -fsS "localhost:${PORT[$r]}/metrics" | awk -F' ' '/^leasehold_plugin_instantiations_total/ {s+=$2} END {print s+0}')
  note "  $r: $count"
done

say "Graceful handover: SIGTERM to the leader ($leader)"
t0=$(now_us)
kill -TERM "${PID[$leader]}"
remaining=(); for r in alpha bravo charlie; do [[ $r != "$leader" ]] && remaining+=("$r"); done
successor=$(wait_for_leader "${remaining[@]}")
until first=$(first_action_after "$successor" "$t0") && [[ -n $first ]]; do sleep 0.01; done
wait_exit "${PID[$leader]}"; unset "PID[$leader]"
note "$leader stopped its leader-only work, released the Lease and exited"
note "$successor took over $(( (first - t0) / 1000 )) ms after the signal (client-go: up to 4.4 s)"
kubectl -n "$NAMESPACE" patch configmap greeting --type=merge -p '{"data":{"text":"hello again"}}' >/dev/null
t1=$(now_us)
until mirrored "hello again"; do sleep 0.05; done
note "the plugins now run on $(kubectl -n "$NAMESPACE" get plugin configmap-mirror -o jsonpath='{.status.runningOn}'), compiled before it led: an edit was mirrored $(ms_since "$t1") ms later"

say "Crash: SIGKILL to the new leader ($successor)"
t0=$(now_us)
kill -KILL "${PID[$successor]}"
last=(); for r in "${remaining[@]}"; do [[ $r != "$successor" ]] && last+=("$r"); done
survivor=$(wait_for_leader "${last[@]}")
until first=$(first_action_after "$survivor" "$t0") && [[ -n $first ]]; do sleep 0.01; done
wait_exit "${PID[$successor]}"; unset "PID[$successor]"
note "$survivor took over $(( (first - t0) / 1000 )) ms after the crash: the ${TIMINGS[1]} lease had to expire first"
note "leaseTransitions is now $(curl -fsS "localhost:${PORT[$survivor]}/api/v1/leader" | json 'd["leaseTransitions"]')"
kubectl -n "$NAMESPACE" wait plugin --all --for=jsonpath='{.status.runningOn}'="$survivor" --timeout=30s >/dev/null
kubectl -n "$NAMESPACE" get plugins | sed 's/^/      /'

say "Cleaning up"
kill -TERM "${PID[$survivor]}"; wait_exit "${PID[$survivor]}"; unset "PID[$survivor]"
note "done: replicas stopped; the release (helm uninstall) and the demo's namespaces are deleted on exit"
