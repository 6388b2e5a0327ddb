#!/usr/bin/env bash
# Times one `poolgate hook pre-receive` run judging a one-commit claim, as git
# runs it (a new process, OLD NEW REF on stdin), on a pool repo of 1,000 locks
# with 100 and with 100,000 commits of history, and prints the median of each
# and their ratio. The hook's cost must not grow with history: the ratio
# should stay near 1.
#
#   bench/hook.sh                 # 6 rounds of 50 hook runs per size
#   COUNT=10 BENCHTIME=100x bench/hook.sh
#
# The first run generates the 100,000-commit repo with git fast-import
# (about 30 s) and caches it under ${TMPDIR:-/tmp}/poolgate-bench.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-6}
BENCHTIME=${BENCHTIME:-50x}

out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "# $(go version); $(git --version); $(nproc) CPUs"
# One test binary, run COUNT times with -test.count 1: go test's own -count
# would run all rounds of one size before the other, and drift on a shared
# machine would then look like a difference between sizes. Run this way the
# sizes alternate (A B A B ...). -short is not set, so both sizes run.
bin=$(mktemp -d)
trap 'rm -f "$out"; rm -rf "$bin"' EXIT
go test -c -o "$bin/hooks.test" ./hooks
for i in $(seq "$COUNT"); do
  (cd hooks && "$bin/hooks.test" -test.run '^$' -test.bench '^BenchmarkPreReceive$' -test.benchtime "$BENCHTIME" -test.count 1) |
    tee -a "$out" | grep '^Benchmark'
done

# median of the ns/op column of one sub-benchmark, in ms
p50() {
  awk -v want="BenchmarkPreReceive/commits=$1" '
    { name = $1; sub(/-[0-9]+$/, "", name) }
    name == want && $4 == "ns/op" { print $3 }' "$out" |
    sort -n |
    awk '{ v[NR] = $1 }
      END {
        if (NR == 0) { print "NaN"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.2f\n", m / 1e6
      }'
}

small=$(p50 100)
large=$(p50 100000)
echo
echo "one pre-receive hook run (one-commit claim, 1,000 locks), median of $COUNT rounds of $BENCHTIME:"
printf '  %-16s p50 %8s ms\n' "100 commits" "$small" "100,000 commits" "$large"
awk -v a="$small" -v b="$large" 'BEGIN { if (a > 0) printf "  ratio 100,000 / 100: %.2f\n", b / a }'

# benchstat, when it can be had (installed, or through the Go module proxy).
echo
if command -v benchstat >/dev/null 2>&1; then
  benchstat "$out"
elif timeout 120 go run golang.org/x/perf/cmd/benchstat@latest "$out" 2>/dev/null; then
  :
else
  echo "(benchstat not available; the medians above are computed with awk)"
fi
