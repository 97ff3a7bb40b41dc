#!/usr/bin/env bash
# Runs a command with the test control plane up and $KUBECONFIG pointing at
# it. Starts the control plane if it is not running, and stops it afterwards
# only if it started it here (a developer's running cluster is left alone).
set -euo pipefail
cluster=$(dirname "${BASH_SOURCE[0]}")/cluster.sh
started=
if ! "$cluster" status; then
  started=1
fi
kubeconfig=$("$cluster" up)
[[ -n $started ]] && trap '"$cluster" down' EXIT
eval "$("$cluster" env)"
export KUBECONFIG=$kubeconfig
"$@"
