package cluster_test

import (
	"strings"
	"testing"
	"time"
)

// A push accepted on one node is on every node, a client sent to another
// node right after sees it (its release needs the claim), and a push made
// on a stale view loses the compare-and-set as an ordinary rejection.
func TestPushOnOneNodeIsServedByEveryNode(t *testing.T) {
	e := startEtcd(t, 1)
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, max_claimed: 2, locks: [a, b, c]}]",
		Etcd: [][]string{e.endpoints(), e.endpoints(), e.endpoints()}})
	tc.start()
	first := tc.converge()
	ctx := ctxT(t, 2*time.Minute)

	c1 := tc.client("c1", tc.nodes[0].sshAddr, "demo")
	if err := c1.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	lock, err := c1.Acquire(ctx)
	if err != nil {
		t.Fatalf("acquire via n1: %v\n%s", err, tc.nodes[0].p.Log())
	}
	tip := tc.converge()
	if tip == first {
		t.Fatal("the claim did not move the tip")
	}
	// The next step of the same build goes to another node.
	c2 := tc.client("c2", tc.nodes[1].sshAddr, "demo")
	if err := c2.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c2.Release(ctx, lock); err != nil {
		t.Fatalf("release via n2 of %s claimed via n1: %v", lock, err)
	}
	// A client whose view is stale: it fetched from n3, then the branch
	// moved via n1; its push to n3 is an ordinary rejection, then lands.
	c3 := tc.client("c3", tc.nodes[2].sshAddr, "demo")
	if err := c3.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c3.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	final := tc.converge()
	out, err := tc.nodes[0].git(t, "log", "--format=%s", final)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count("\n"+out, "\nclaiming:"); n != 3 {
		t.Errorf("history has %d claims, want 3:\n%s", n, out)
	}
	for _, n := range tc.nodes {
		if out, err := n.git(t, "fsck", "--no-progress"); err != nil {
			t.Errorf("%s: fsck: %v\n%s", n.name, err, out)
		}
	}
}

// etcd gone: pushes fail as errors that name the reason (the stock client
// prints them and fails the step), never as silent rejections; fetches and
// clones are still served.
func TestEtcdUnreachablePushIsAnErrorFetchStillServed(t *testing.T) {
	e := startEtcd(t, 1)
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, locks: [a, b]}]",
		Etcd: [][]string{e.endpoints(), e.endpoints(), e.endpoints()}})
	tc.start()
	tc.converge()
	ctx := ctxT(t, 2*time.Minute)
	c := tc.client("c", tc.nodes[0].sshAddr, "demo")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	e.members[0].p.kill()
	_, err := c.Acquire(ctx)
	if err == nil {
		t.Fatal("a push landed with etcd down")
	}
	out := c.Stats().LastPush
	if !strings.Contains(out, "pushes are unavailable") || strings.Contains(out, "[rejected]") || strings.Contains(out, "[remote rejected]") {
		t.Errorf("push output is not an error naming the reason:\n%s", out)
	}
	c2 := tc.client("c2", tc.nodes[1].sshAddr, "demo")
	if err := c2.Clone(ctx); err != nil {
		t.Errorf("clone with etcd down: %v", err)
	}
}
