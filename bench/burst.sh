#!/usr/bin/env bash
# bench/burst.sh: a burst of real git clients, all with one key (as Concourse
# teams share one key across every pipeline), started at once against one
# poolgate on loopback. Prints how many failed and how long they took.
#
#   bench/burst.sh                       # 1,000 clients, this tree's poolgate
#   N=300 MAX_SESSIONS=64 bench/burst.sh
#   BASE=4b24c08 bench/burst.sh          # the same burst against that commit
#                                        # too, alternating (A B A B)
#   ROUNDS=2 bench/burst.sh              # rounds per server (default 1)
#
# Half the clients run `git ls-remote URL master` (a pool-resource check),
# half `git fetch URL master` into a fresh repo (its in/out steps). Each is
# one SSH connection, OpenSSH's client, protocol v2. Everything stays on
# 127.0.0.1 and is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
MAX_SESSIONS=${MAX_SESSIONS:-256}
ROUNDS=${ROUNDS:-1}
BASE=${BASE:-}

tmp=$(mktemp -d /tmp/poolgate-burst.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/poolgate-head" ./cmd/poolgate
bins=(head)
if [ -n "$BASE" ]; then
  mkdir -p "$tmp/base-src"
  git archive "$BASE" | tar -x -C "$tmp/base-src"
  (cd "$tmp/base-src" && go build -o "$tmp/poolgate-base" ./cmd/poolgate)
  bins=(base head)
fi
ssh-keygen -q -t ed25519 -N '' -C burst -f "$tmp/key"

# start BIN: a fresh data dir and config; sets pid and port.
start() {
  local bin=$1 data="$tmp/data-$1-$2"
  cat >"$tmp/poolgate.yaml" <<EOF
data_dir: $data
ssh:
  listen: "127.0.0.1:0"
  max_sessions: $MAX_SESSIONS
http:
  listen: ""
log:
  format: json
  level: info
users:
  - name: ci
    role: read
    keys: ["$(cat "$tmp/key.pub")"]
repos:
  - name: locks
    pools:
      - name: burst
        locks: [a, b, c]
EOF
  : >"$tmp/log"
  "$tmp/poolgate-$bin" serve --config "$tmp/poolgate.yaml" 2>"$tmp/log" >/dev/null &
  pid=$!
  port=""
  for _ in $(seq 600); do
    port=$(sed -n 's/.*"ssh":"127\.0\.0\.1:\([0-9]*\)".*"message":"listening".*/\1/p' "$tmp/log" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "poolgate did not start:"; cat "$tmp/log"; exit 1; }
}

stop() {
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

export GIT_SSH_COMMAND="ssh -F /dev/null -i $tmp/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ControlMaster=no -o LogLevel=ERROR -o BatchMode=yes"
export SSH_AUTH_SOCK= GIT_CONFIG_NOSYSTEM=1 HOME="$tmp"

# burst NAME: N clients at once; one line of figures.
burst() {
  local name=$1 url="ssh://git@127.0.0.1:$port/locks.git" out="$tmp/out"
  rm -rf "$out"; mkdir -p "$out"
  for i in $(seq "$N"); do
    if [ $((i % 2)) = 1 ]; then git init -q "$out/r$i"; fi
  done
  local t0 t1
  t0=$(date +%s%N)
  local pids=()
  for i in $(seq "$N"); do
    (
      s=$(date +%s%N)
      if [ $((i % 2)) = 0 ]; then
        git ls-remote "$url" master >"$out/$i.out" 2>&1 && grep -q refs/heads/master "$out/$i.out"
      else
        git -C "$out/r$i" fetch -q "$url" master >"$out/$i.out" 2>&1
      fi
      rc=$?
      echo "$(( ($(date +%s%N) - s) / 1000000 )) $rc" >"$out/$i.res"
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"  # the clients, not the server
  t1=$(date +%s%N)
  local failed
  failed=$(cat "$out"/*.res | awk '$2 != 0' | wc -l)
  cat "$out"/*.res | awk '{print $1}' | sort -n >"$out/ms"
  local p50 p99 maxms
  local count
  count=$(wc -l <"$out/ms")
  p50=$(sed -n "$(( (count * 50 + 99) / 100 ))p" "$out/ms")
  p99=$(sed -n "$(( (count * 99 + 99) / 100 ))p" "$out/ms")
  maxms=$(tail -1 "$out/ms")
  printf '%-6s clients %5d  failed %5d  wall %6d ms  per client p50 %6s ms  p99 %6s ms  max %6s ms\n' \
    "$name" "$N" "$failed" $(( (t1 - t0) / 1000000 )) "$p50" "$p99" "$maxms"
  # What the server closed, and why (its own log).
  grep -o '"message":"connection [a-z]*: [^"]*"' "$tmp/log" | sort | uniq -c | sed 's/^/       server: /' || true
  if [ "$failed" != 0 ]; then
    echo "       first failure: $(for f in "$out"/*.res; do if [ "$(cut -d' ' -f2 "$f")" != 0 ]; then tr '\n' ' ' <"${f%.res}.out"; break; fi; done)"
  fi
}

echo "burst: $N clients (half ls-remote, half fetch), one key, max_sessions $MAX_SESSIONS, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for b in "${bins[@]}"; do
    start "$b" "$r"
    burst "$b"
    stop
  done
done
