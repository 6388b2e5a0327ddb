#!/usr/bin/env bash
# bench/events.sh: the events service's costs, a baseline poolgate and this
# tree side by side (bench/events/main.go says what each figure is).
#
#   bench/events.sh                      # baseline: main
#   BASE=4b24c08 bench/events.sh -run derive -sizes 100000
#
# Long histories are generated once with bench/harness -gen and cached in
# ${TMPDIR:-/tmp}/poolgate-bench/. Prints markdown tables with the load
# average beside each figure. Loopback only; no root needed.
set -euo pipefail
cd "$(dirname "$0")/.."
base_rev=${BASE:-main}
cache=${TMPDIR:-/tmp}/poolgate-bench
mkdir -p "$cache"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

git archive "$base_rev" | tar -x -C "$tmp"
(cd "$tmp" && go build -o "$cache/poolgate-base" ./cmd/poolgate)
go build -o "$cache/poolgate-new" ./cmd/poolgate
go build -o "$cache/harness" ./bench/harness
go build -o "$cache/bench-events" ./bench/events
for n in 100000 200000; do
  [ -d "$cache/h$n.git" ] || "$cache/harness" -gen "$cache/h$n.git" -commits "$n"
done
echo "baseline: $base_rev ($(git rev-parse --short "$base_rev")); new: $(git rev-parse --short HEAD)$(git diff --quiet || echo +changes)"
exec "$cache/bench-events" -base "$cache/poolgate-base" -new "$cache/poolgate-new" -histories "$cache" "$@"
