#!/usr/bin/env bash
# bench/run.sh: poolgate against plain git over OpenSSH, side by side, on
# loopback. Needs root (it starts sshd and a dedicated git-shell user).
#
#   bench/run.sh                    # every workload, full size (~10 min)
#   bench/run.sh -quick             # seconds per workload: a smoke run
#   bench/run.sh -workloads 1,6     # a subset; see `go run ./bench/harness -h`
#   bench/run.sh -workloads 7 -scale-n 1000,3000,10000
#                                   # the waiting-builds scale curve (bench/poll)
#   bench/run.sh -pprof bench/out   # also CPU profiles of the daemon (PROFILE.md)
#   bench/run.sh -variant 'poolgate-v2off=POOLGATE_V2=off'
#                                   # one more poolgate with other settings, as a
#                                   # further target in W1 and W6 (before/after)
#   bench/run.sh -variant 'base=bin=/tmp/base/poolgate'
#                                   # another build (its poolgate-hook beside it)
#                                   # as a further target: before/after in one run
#
# Server CPU is read from one cpuacct cgroup per server (exact, descendants
# included); client CPU from one for the harness and its git/ssh clients.
#
# Everything stays on 127.0.0.1 and stops by itself (-timeout, default 25m).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench/run.sh: run as root (it starts sshd and uses a dedicated user)" >&2
  exit 2
fi
if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ]; then
  echo "bench/run.sh: installing openssh-server (the baseline)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/dev/null
  # Installing it may start the system's own sshd on :22; the benchmark
  # runs its own on a loopback port, so stop that one again.
  if command -v systemctl >/dev/null; then systemctl stop ssh 2>/dev/null || true; fi
fi
mkdir -p /run/sshd && chmod 0755 /run/sshd
if ! id poolbench >/dev/null 2>&1; then
  # '*' rather than useradd's locked '!': sshd without PAM refuses even
  # key logins for a locked account.
  useradd --create-home --shell /usr/bin/git-shell --password '*' poolbench
fi

# poolgate-hook beside poolgate: the daemon installs it as the hook.
go build -o bench/.bin/poolgate ./cmd/poolgate
go build -o bench/.bin/poolgate-hook ./cmd/poolgate-hook
ln -sfn .bin/poolgate bench/.poolgate # for pprof (PROFILE.md)
go build -o bench/.harness ./bench/harness
exec bench/.harness -poolgate bench/.bin/poolgate "$@"
