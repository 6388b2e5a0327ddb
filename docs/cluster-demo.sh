#!/usr/bin/env bash
# Three poolgate nodes and one etcd on loopback, to see a failover in a
# minute (docs/cluster.md). Needs git, ssh, ssh-keygen, go and /usr/bin/etcd
# (apt-get install etcd-server). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/poolgate-cluster-demo.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; echo "demo files left in $dir"; }
trap cleanup EXIT INT TERM

go build -o "$dir/poolgate" ./cmd/poolgate
ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh_host_ed25519_key"   # one host key for all nodes
ssh-keygen -q -t ed25519 -N '' -f "$dir/client"
/usr/bin/etcd --name e1 --data-dir "$dir/etcd" \
  --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster e1=http://127.0.0.1:23800 --log-level error --logger zap 2>"$dir/etcd.log" &
pids+=($!)

for i in 1 2 3; do
  peers=""
  for j in 1 2 3; do
    [ "$i" = "$j" ] || peers+="    - {name: n$j, address: \"127.0.0.1:700$j\"}"$'\n'
  done
  cat >"$dir/n$i.yaml" <<YAML
data_dir: $dir/n$i
ssh: {listen: "127.0.0.1:222$i", host_key: $dir/ssh_host_ed25519_key}
http: {listen: "127.0.0.1:808$i"}
users:
  - {name: demo, role: admin, keys_file: $dir/client.pub}
repos:
  - name: locks
    pools: [{name: demo, max_claimed: 1, locks: [a, b, c]}]
cluster:
  node: n$i
  advertise: "127.0.0.1:700$i"
  peers:
$peers  etcd: {endpoints: ["127.0.0.1:23790"]}
YAML
  "$dir/poolgate" serve --config "$dir/n$i.yaml" 2>"$dir/n$i.log" &
  pids+=($!)
  echo "node n$i: pid $!, ssh 127.0.0.1:222$i, http http://127.0.0.1:808$i/ (log $dir/n$i.log)"
done

export GIT_SSH_COMMAND="ssh -i $dir/client -o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR"
for i in 1 2 3; do
  until curl -fs "http://127.0.0.1:808$i/healthz/push" >/dev/null 2>&1; do sleep 0.5; done
done
cat <<TXT

All three nodes take pushes. Try, in another shell:

  export GIT_SSH_COMMAND="$GIT_SSH_COMMAND"
  git clone ssh://git@127.0.0.1:2221/locks.git a && cd a
  git mv demo/unclaimed/a demo/claimed/a && git commit -m 'claiming: a' && git push
  git clone ssh://git@127.0.0.1:2222/locks.git ../b   # n2 has the claim
  kill -9 ${pids[1]}                                  # n1 dies; n2 and n3 go on
  curl http://127.0.0.1:8082/healthz/push

Ctrl-C here stops the demo.
TXT
wait
