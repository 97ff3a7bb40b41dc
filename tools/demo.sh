#!/usr/bin/env bash
# `make demo`: three Leasehold replicas on a real local control plane, with
# the ConfigMap mirror deployed as a Plugin object. Shows the election, the
# plugin reconciling real objects on the leader only, a graceful handover
# and a crash takeover (the plugin follows the leader), with timings.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${LEASEHOLD_BIN:-$ROOT/target/release/leasehold}
WORK=$(mktemp -d /tmp/leasehold-demo.XXXXXX)
NAMESPACE=leasehold-demo-$$
LEASE=leasehold
MIRROR_WASM=${MIRROR_WASM:-$ROOT/target/wasm32-wasip2/release/configmap_mirror.wasm}
# Short timings so the crash takeover is quick to watch; the defaults are
# client-go's 15 s / 10 s / 2 s.
TIMINGS=(--lease-duration 4s --renew-deadline 3s --retry-period 1s)
declare -A PID PORT

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
now_us() { python3 -c 'import time; print(time.time_ns() // 1000)'; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
leader_of() { curl -fsS "localhost:${PORT[$1]}/api/v1/leader" | json 'd["holder"] or ""'; }
first_action_after() { # replica, since-µs
  awk -v since="$2" '$2 >= since { print $2; exit }' "$WORK/$1.activity" 2>/dev/null
}
cleanup() {
  for r in "${!PID[@]}"; do
    kill -KILL "${PID[$r]}" 2>/dev/null || true
  done
  kubectl delete namespace "$NAMESPACE" "$NAMESPACE-a" "$NAMESPACE-b" --wait=false >/dev/null 2>&1 || true
  kubectl delete clusterrole,clusterrolebinding "$NAMESPACE-mirror" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_replica() {
  local name=$1
  PORT[$name]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$BIN" run --identity "$name" --lease-namespace "$NAMESPACE" --lease-name "$LEASE" "${TIMINGS[@]}" \
    --plugin-namespace "$NAMESPACE" --compile-cache "$WORK/cache-$name" \
    --listen "127.0.0.1:${PORT[$name]}" --activity-log "$WORK/$name.activity" \
    >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  # Not a job of this shell: no "Killed" notices in the story.
  disown "${PID[$name]}"
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
say "Installing the Plugin CRD and an identity for the mirror plugin"
kubectl apply --server-side -f "$ROOT/charts/leasehold/crds/" >/dev/null
kubectl wait --for condition=established crd/plugins.leasehold.dev --timeout=30s >/dev/null
kubectl create namespace "$NAMESPACE" >/dev/null
kubectl -n "$NAMESPACE" create serviceaccount configmap-mirror >/dev/null
kubectl create clusterrole "$NAMESPACE-mirror" --verb=get,list,watch,create,update,patch,delete \
  --resource=configmaps >/dev/null
kubectl patch clusterrole "$NAMESPACE-mirror" --type=json -p '[
  {"op":"add","path":"/rules/-","value":{"apiGroups":[""],"resources":["namespaces"],"verbs":["get","list","watch"]}},
  {"op":"add","path":"/rules/-","value":{"apiGroups":["","events.k8s.io"],"resources":["events"],"verbs":["create","patch"]}}]' >/dev/null
kubectl create clusterrolebinding "$NAMESPACE-mirror" --clusterrole="$NAMESPACE-mirror" \
  --serviceaccount="$NAMESPACE:configmap-mirror" >/dev/null
note "namespace $NAMESPACE; ServiceAccount configmap-mirror may touch ConfigMaps, read namespaces, write Events: nothing else"

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

say "Deploying the ConfigMap mirror as a Plugin object ($(( $(stat -c %s "$MIRROR_WASM") / 1024 )) KiB wasm component)"
kubectl -n "$NAMESPACE" create configmap configmap-mirror-component \
  --from-file=component.wasm="$MIRROR_WASM" >/dev/null
digest=$(sha256sum "$MIRROR_WASM" | cut -d' ' -f1)
deployed=$(now_us)
kubectl apply -f - >/dev/null <<YAML
apiVersion: leasehold.dev/v1alpha1
kind: Plugin
metadata: {name: configmap-mirror, namespace: $NAMESPACE}
spec:
  source: {configMap: {name: configmap-mirror-component, sha256: "$digest"}}
  serviceAccountName: configmap-mirror
  config: {namespaceSelector: "leasehold.dev/mirror-target=$NAMESPACE"}
  limits: {memory: 32Mi, timeout: 1s}
YAML
kubectl -n "$NAMESPACE" wait plugin/configmap-mirror --for=condition=Ready --timeout=60s >/dev/null
note "every replica fetched and compiled it; $leader runs it ($(( ($(now_us) - deployed) / 1000 )) ms to Ready):"
kubectl -n "$NAMESPACE" get plugins | sed 's/^/      /'

say "The plugin at work: a labelled ConfigMap is mirrored into the selected namespaces"
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
note "the mirror now runs on $(kubectl -n "$NAMESPACE" get plugin configmap-mirror -o jsonpath='{.status.runningOn}'), compiled before it led: an edit was mirrored $(( ($(now_us) - t1) / 1000 )) ms later"

say "Crash: SIGKILL to the new leader ($successor)"
t0=$(now_us)
kill -KILL "${PID[$successor]}"
last=(); for r in "${remaining[@]}"; do [[ $r != "$successor" ]] && last+=("$r"); done
survivor=$(wait_for_leader "${last[@]}")
until first=$(first_action_after "$survivor" "$t0") && [[ -n $first ]]; do sleep 0.01; done
wait_exit "${PID[$successor]}"; unset "PID[$successor]"
note "$survivor took over $(( (first - t0) / 1000 )) ms after the crash: the ${TIMINGS[1]} lease had to expire first"
note "leaseTransitions is now $(curl -fsS "localhost:${PORT[$survivor]}/api/v1/leader" | json 'd["leaseTransitions"]')"
kubectl -n "$NAMESPACE" wait plugin/configmap-mirror --for=jsonpath='{.status.runningOn}'="$survivor" --timeout=30s >/dev/null
kubectl -n "$NAMESPACE" get plugins | sed 's/^/      /'

say "Cleaning up"
kill -TERM "${PID[$survivor]}"; wait_exit "${PID[$survivor]}"; unset "PID[$survivor]"
note "done: replicas stopped; the demo's namespaces and RBAC are deleted on exit"
