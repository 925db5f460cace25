#!/usr/bin/env bash
# The receive floor: what 1 GiB over loopback costs a bare Node receiver, by how it reads and whether the
# process has loaded Effect. Sender and receiver are fresh node processes. From the project root:
#   for r in 1 2 3; do for m in fresh copy reused; do bash benchmarks/probes/receive-floor/run.sh $m; \
#     EFFECT=1 bash benchmarks/probes/receive-floor/run.sh $m; done; done
# Extra arguments go to the receiver's node (e.g. --trace-gc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:-fresh}
shift || true
out=$(mktemp)
node "$here/sender.mjs" >"$out" &
sender=$!
for _ in $(seq 100); do grep -q PORT "$out" && break; sleep 0.05; done
node "$@" "$here/receiver.mjs" "$(awk '/PORT/ {print $2}' "$out")" "$mode"
wait "$sender"
rm -f "$out"
