#!/usr/bin/env bash
# One figure of the connection-cost probe: server CPU per short connection in one mode, the server and the
# client each a fresh node process. From the project root, after `npm run build`:
#   for m in net fiber adapter floor tcp echo; do bash benchmarks/probes/connection-cost/run.sh $m 5000; done
# Extra arguments go to the server's node (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=$1
total=${2:-5000}
shift 2 || shift $#
out=$(mktemp)
node "$@" "$here/server.mjs" "$mode" "$total" >"$out" &
server=$!
for _ in $(seq 100); do grep -q PORT "$out" && break; sleep 0.05; done
node "$here/client.mjs" "$(awk '/PORT/ {print $2}' "$out")" "$total"
wait "$server"
grep -v PORT "$out"
rm -f "$out"
