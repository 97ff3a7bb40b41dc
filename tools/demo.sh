#!/usr/bin/env bash
# `make demo`: three Leasehold replicas on a real local control plane.
# Shows the election, a graceful handover and a crash takeover, with timings.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${LEASEHOLD_BIN:-$ROOT/target/release/leasehold}
WORK=$(mktemp -d /tmp/leasehold-demo.XXXXXX)
NAMESPACE=default
LEASE=leasehold-demo-$$
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
  rm -rf "$WORK"
}
trap cleanup EXIT

start_replica() {
  local name=$1
  PORT[$name]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$BIN" run --identity "$name" --lease-namespace "$NAMESPACE" --lease-name "$LEASE" "${TIMINGS[@]}" \
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
sleep 2
note "the replica directory, from a follower:"
follower=$(for r in alpha bravo charlie; do [[ $r != "$leader" ]] && echo "$r" && break; done)
curl -fsS "localhost:${PORT[$follower]}/api/v1/replicas" \
  | json '"\n".join("      %-8s %s" % (r["identity"], r["role"]) for r in d["replicas"])'

say "Graceful handover: SIGTERM to the leader ($leader)"
t0=$(now_us)
kill -TERM "${PID[$leader]}"
remaining=(); for r in alpha bravo charlie; do [[ $r != "$leader" ]] && remaining+=("$r"); done
successor=$(wait_for_leader "${remaining[@]}")
until first=$(first_action_after "$successor" "$t0") && [[ -n $first ]]; do sleep 0.01; done
wait_exit "${PID[$leader]}"; unset "PID[$leader]"
note "$leader stopped its leader-only work, released the Lease and exited"
note "$successor took over $(( (first - t0) / 1000 )) ms after the signal (client-go: up to 4.4 s)"

say "Crash: SIGKILL to the new leader ($successor)"
t0=$(now_us)
kill -KILL "${PID[$successor]}"
last=(); for r in "${remaining[@]}"; do [[ $r != "$successor" ]] && last+=("$r"); done
survivor=$(wait_for_leader "${last[@]}")
until first=$(first_action_after "$survivor" "$t0") && [[ -n $first ]]; do sleep 0.01; done
wait_exit "${PID[$successor]}"; unset "PID[$successor]"
note "$survivor took over $(( (first - t0) / 1000 )) ms after the crash: the ${TIMINGS[1]} lease had to expire first"
note "leaseTransitions is now $(curl -fsS "localhost:${PORT[$survivor]}/api/v1/leader" | json 'd["leaseTransitions"]')"

say "Cleaning up"
kill -TERM "${PID[$survivor]}"; wait_exit "${PID[$survivor]}"; unset "PID[$survivor]"
kubectl -n "$NAMESPACE" delete lease -l leasehold.dev/replica-of="$LEASE" >/dev/null 2>&1 || true
kubectl -n "$NAMESPACE" delete lease "$LEASE" >/dev/null 2>&1 || true
note "done. Plugins (wasm controllers) join this story as later issues land; see README.md."
