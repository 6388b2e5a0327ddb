#!/usr/bin/env bash
# bench/hookstart.sh: CPU per start of each piece a push's pre-receive hook
# can cost, measured with bash's `times` (children's user+sys) over N runs:
# the shell of a script hook, the whole poolgate binary, and the small
# poolgate-hook (run with a ticket but no socket, so it starts, fails to
# dial and exits: its start-up and nothing else).
#
#   bench/hookstart.sh          # N=300
#   N=1000 bench/hookstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-300}
mkdir -p bench/.bin
go build -o bench/.bin/poolgate ./cmd/poolgate
go build -o bench/.bin/poolgate-hook ./cmd/poolgate-hook

# ms of CPU per run of "$@" (children of a subshell, user + sys).
per_run() {
  (
    for ((i = 0; i < N; i++)); do "$@" </dev/null >/dev/null 2>&1 || true; done
    times
  ) | tail -1 | awk -v n="$N" '{
      t = 0
      for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
      printf "%.2f", t * 1000 / n
    }'
}

printf 'load %s, N=%d\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$N"
printf '%-58s %s ms\n' "/bin/true (a process start, for scale)" "$(per_run /bin/true)"
printf '%-58s %s ms\n' "sh -c 'exec /bin/true' (the script hook's shell)" "$(per_run sh -c 'exec /bin/true')"
printf '%-58s %s ms\n' "poolgate version (the whole binary's start)" "$(per_run bench/.bin/poolgate version)"
printf '%-58s %s ms\n' "poolgate-hook, no socket (the small hook's start)" \
  "$(POOLGATE_HOOK_SOCKET=/nonexistent POOLGATE_HOOK_TOKEN=x per_run bench/.bin/poolgate-hook)"
printf '%-58s %s ms\n' "git cat-file --batch-command, empty input (judge's reader)" \
  "$(per_run git -C bench cat-file --batch-command)"
