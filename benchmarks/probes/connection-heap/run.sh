#!/usr/bin/env bash
# What one idle connection holds on the JavaScript heap: a server (raw `net` `socket.pipe`, `Tcp.serve`
# with an echo-once handler, or `Echo.serve`) takes 10, then 1,010 connections that each echoed 16 bytes
# and stay open; a heap snapshot of each, after a full collection, and the difference per connection by
# object kind (self sizes); `shutdown` is `Shutdown.serve`, whose clients send nothing and wait for its preface. From the project root, after `npm run build`:
#   bash benchmarks/probes/connection-heap/run.sh raw ; bash benchmarks/probes/connection-heap/run.sh tcp
#   bash benchmarks/probes/connection-heap/run.sh echo
# Kinds: raw, tcp, tcp-flat (the same handler without a generator), echo, store, spill, shutdown, proxy.
# CLOSURES=1 also lists the closures per connection by source location (closures.mjs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=${1:-echo}
dir=$(mktemp -d)
node --expose-gc "$here/server.mjs" 10 "$kind" "$dir/small.heapsnapshot"
node --expose-gc "$here/server.mjs" 1010 "$kind" "$dir/large.heapsnapshot"
node "$here/summarize.mjs" "$dir/small.heapsnapshot" "$dir/large.heapsnapshot" 1000 "${2:-30}"
[ -n "${CLOSURES:-}" ] && node "$here/closures.mjs" "$dir/small.heapsnapshot" "$dir/large.heapsnapshot" 1000
rm -rf "$dir"
