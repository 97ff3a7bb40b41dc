# Sourced by the tools that run background services (cluster.sh,
# registry.sh): stopping a process recorded in a pid file.

# stop_pid FILE: TERM the process in FILE, give it 10 s, then KILL it; the
# file goes either way.
stop_pid() {
  local file=$1 pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}
