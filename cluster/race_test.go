package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdClient is the test's own client of the test etcd.
func etcdClient(t *testing.T, e *etcdCluster) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// holdDecision replaces n's reference-transaction hook by one that, on the
// first push it decides, waits (holding git's ref lock, before the
// compare-and-set) until the file dir/go exists, then runs the real hook.
// dir/paused appears when it waits.
func (tc *testCluster) holdDecision(t *testing.T, n *node, dir string) {
	t.Helper()
	script := fmt.Sprintf(`#!/bin/sh
[ "$1" = prepared ] && [ -n "$POOLGATE_VERDICT_FILE" ] || exit 0
dir=%q
if mkdir "$dir/paused" 2>/dev/null; then
	while [ ! -e "$dir/go" ]; do sleep 0.05; done
fi
exec %q cluster-hook reference-transaction "$@"
`, dir, tc.hookBin)
	path := filepath.Join(n.dir, "data", "hooks", "reference-transaction")
	if err := os.WriteFile(path+".tmp", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond (bounded) and fails with what.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Two nodes race pushes made on the same old tip, and the first one's
// cluster push lock is lost with its lease (as in a partition healed
// within seconds): the other node's push lands, and the first one loses
// the compare-and-set. The stock client must see that as an ordinary
// "[remote rejected]" (it fetches and retries), not as a git error that
// counts towards failing its step.
func TestLostCompareAndSetIsAnOrdinaryRejectionTheClientRetries(t *testing.T) {
	e := startEtcd(t, 1)
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, locks: [a, b, c]}]",
		Etcd: [][]string{e.endpoints(), e.endpoints(), e.endpoints()}})
	tc.start()
	tc.converge()
	cli := etcdClient(t, e)
	ctx := ctxT(t, 3*time.Minute)

	hold := t.TempDir()
	tc.holdDecision(t, tc.nodes[0], hold)
	c1 := tc.client("c1", tc.nodes[0].sshAddr, "demo")
	if err := c1.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	c2 := tc.client("c2", tc.nodes[1].sshAddr, "demo")
	if err := c2.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c1.Acquire(ctx); done <- err }()

	// n1 holds the repo's cluster push lock, and git its ref lock, while
	// its decision is held.
	waitFor(t, "c1's push to be held", time.Minute, func() bool { _, err := os.Stat(filepath.Join(hold, "paused")); return err == nil })
	var lease clientv3.LeaseID
	waitFor(t, "n1's push lock in etcd", time.Minute, func() bool {
		resp, err := cli.Get(ctx, "/poolgate/locks/locks/", clientv3.WithPrefix())
		if err == nil && len(resp.Kvs) == 1 {
			lease = clientv3.LeaseID(resp.Kvs[0].Lease)
		}
		return lease != 0
	})
	// The lock's lease ends, as it does when n1 stops renewing it.
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Acquire(ctx); err != nil {
		t.Fatalf("acquire via n2 while n1's push is held: %v\n%s", err, tc.nodes[1].p.Log())
	}
	if err := os.WriteFile(filepath.Join(hold, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("acquire via n1 after losing the race: %v", err)
	}
	st := c1.Stats()
	if st.Unexpected != 0 || st.Conflicts < 1 {
		t.Errorf("c1 saw %d push errors and %d ordinary rejections; want 0 and at least 1 (last push: %s)", st.Unexpected, st.Conflicts, st.LastPush)
	}
	if !strings.Contains(tc.nodes[0].p.Log(), "the pool moved on another node") {
		t.Errorf("n1 did not answer a lost compare-and-set:\n%s", tc.nodes[0].p.Log())
	}
	final := tc.converge()
	out, err := tc.nodes[2].git(t, "log", "--format=%s", final)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count("\n"+out, "\nclaiming:"); n != 2 {
		t.Errorf("history has %d claims, want 2:\n%s", n, out)
	}
	for _, n := range tc.nodes {
		if out, err := n.git(t, "fsck", "--no-progress"); err != nil {
			t.Errorf("%s: fsck: %v\n%s", n.name, err, out)
		}
	}
}
