#!/usr/bin/env bash
# A real OCI registry on loopback (the CNCF distribution registry), plain
# HTTP, blobs on tmpfs. Tests that pull and push wasm OCI artifacts, and the
# demo, use it (tests/src/registry.rs starts it on demand).
#
#   tools/registry.sh install   build/cache the registry from the Go module proxy
#   tools/registry.sh up        start (or reuse) it; prints its address, host:port
#   tools/registry.sh down      stop it and remove its state (and every pushed artifact)
#   tools/registry.sh status    exit 0 when it is up and answers /v2/
#   tools/registry.sh env       print `export LEASEHOLD_REGISTRY=host:port PATH=...` lines
#
# The build is cached under ~/.cache/leasehold, keyed by version, so only a
# new machine pays for it. Nothing built here is ever committed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LEASEHOLD_CACHE:-$HOME/.cache/leasehold}
# The registry version is pinned once, in tools/registry/go.mod.
VERSION=$(grep -oE 'github.com/distribution/distribution/v3 v3\.[0-9]+\.[0-9]+' "$ROOT/tools/registry/go.mod" | head -1 | cut -d' ' -f2)
BIN=$CACHE/bin/registry-$VERSION
# One registry per machine user; tests and the demo share it.
STATE=${LEASEHOLD_REGISTRY_DIR:-/dev/shm/leasehold-registry-$(id -u)}
export GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build GOFLAGS=-mod=mod CGO_ENABLED=0

log() { printf '%s\n' "registry: $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=tools/processes.sh
source "$ROOT/tools/processes.sh"

cmd_install() {
  [[ -x $BIN/registry ]] && return
  mkdir -p "$CACHE/bin"
  # Two first callers at once (make deps and a test) must not build into the
  # same temporary directory. The build runs in a subshell that holds fd 8;
  # nothing long-lived is started from it.
  (
    flock 8
    [[ -x $BIN/registry ]] && exit 0
    log "building the distribution registry $VERSION from the Go module proxy (once per machine; cached in $BIN)"
    rm -rf "$BIN.tmp" && mkdir -p "$BIN.tmp"
    (cd "$ROOT/tools/registry" && go build -trimpath \
      -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=$VERSION" \
      -o "$BIN.tmp/" github.com/distribution/distribution/v3/cmd/registry)
    rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  ) 8>"$BIN.lock"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

address() { [[ -f $STATE/port ]] && echo "127.0.0.1:$(cat "$STATE/port")"; }

is_ready() {
  local addr
  addr=$(address) || return 1
  [[ -f $STATE/registry.pid ]] && kill -0 "$(cat "$STATE/registry.pid")" 2>/dev/null || return 1
  curl -fsS --max-time 2 "http://$addr/v2/" >/dev/null 2>&1
}

cmd_status() { is_ready; }

write_config() {
  local port=$1
  cat > "$STATE/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  # A fixed secret: without one the registry logs a warning on every start.
  secret: leasehold-test-registry
  headers:
    X-Content-Type-Options: [nosniff]
EOF
}

# Starts the registry on a free port; returns 1 if it exits before answering
# (most likely another process took the port between free_port and bind).
start_once() {
  local port
  port=$(free_port)
  mkdir -p "$STATE/data"
  write_config "$port"
  echo "$port" > "$STATE/port"
  # setsid: the registry outlives the shell that started it (cargo test may
  # start it; `tools/registry.sh down` stops it). 9>&-: it must not inherit
  # the start-up lock, or every later caller waits on it for ever.
  # OTEL_TRACES_EXPORTER=none: v3 otherwise exports traces to an OTLP
  # collector on localhost that does not exist here.
  OTEL_TRACES_EXPORTER=none setsid "$BIN/registry" serve "$STATE/config.yml" \
    >"$STATE/registry.log" 2>&1 </dev/null 9>&- &
  echo $! > "$STATE/registry.pid"
  local deadline=$((SECONDS + 30))
  until is_ready; do
    kill -0 "$(cat "$STATE/registry.pid")" 2>/dev/null || return 1
    ((SECONDS < deadline)) || die "registry not ready after 30 s; log: $STATE/registry.log"
    sleep 0.05
  done
}

cmd_up() {
  if is_ready; then
    address
    return
  fi
  cmd_install
  # Serialise concurrent callers (parallel test binaries): the first starts
  # the registry, the others wait and reuse it.
  exec 9>"$STATE.lock"
  flock 9
  if is_ready; then
    address
    return
  fi
  stop
  local attempt
  for attempt in 1 2 3; do
    if start_once; then
      log "distribution registry $VERSION ready at http://$(address) (state in $STATE)"
      address
      return
    fi
    log "registry exited on start (attempt $attempt); log: $STATE/registry.log"
    tail -5 "$STATE/registry.log" >&2 || true
    stop
  done
  die "registry did not start"
}

stop() {
  stop_pid "$STATE/registry.pid"
  rm -rf "$STATE"
}

cmd_down() {
  exec 9>"$STATE.lock"
  flock 9
  stop
  log "registry stopped"
}

cmd_env() {
  if is_ready; then echo "export LEASEHOLD_REGISTRY=$(address)"; fi
  echo "export PATH=$BIN:\$PATH"
}

case ${1:-} in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
