package cluster_test

import (
	"strings"
	"testing"
	"time"
)

// A node cut off from etcd still reaches the other nodes: a fetch there
// shows the tip another node just decided (it asks them), never its own
// older one. Cut off from the other nodes as well, it refuses fetches
// after a few seconds with the reason, rather than serve a history that
// may be behind (a stock release would find its own claim missing).
func TestNodeCutOffEtcdServesTheDecidedTipAndRefusesOnceAlone(t *testing.T) {
	e := startEtcd(t, 1)
	cut := newProxy(t, "", func() []string { return []string{e.members[0].client} })
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, locks: [a, b]}]",
		Etcd: [][]string{e.endpoints(), e.endpoints(), {cut.addr()}}})
	tc.start()
	tc.converge()
	n1, n3 := tc.nodes[0], tc.nodes[2]
	ctx := ctxT(t, 3*time.Minute)
	cut.setCut(true)
	waitFor(t, n3.name+" to notice it lost etcd", time.Minute, func() bool {
		return strings.Contains(httpText("http://"+n3.httpAddr+"/healthz/push"), "etcd unreachable")
	})

	c1 := tc.client("c1", n1.sshAddr, "demo")
	if err := c1.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Acquire(ctx); err != nil {
		t.Fatalf("acquire via %s: %v", n1.name, err)
	}
	decided := n1.tip(t)
	c3 := tc.client("c3", n3.sshAddr, "demo")
	if err := c3.Clone(ctx); err != nil {
		t.Fatalf("clone via %s cut off etcd: %v\n%s", n3.name, err, n3.p.Log())
	}
	if got, _ := c3.Git(ctx, "rev-parse", "HEAD"); strings.TrimSpace(got) != decided {
		t.Fatalf("a clone via %s cut off etcd shows %s, not the decided tip %s", n3.name, strings.TrimSpace(got), decided)
	}

	// Alone: etcd and both other nodes gone.
	tc.nodes[0].p.kill()
	tc.nodes[1].p.kill()
	alone := time.Now()
	for time.Since(alone) < 7*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	out, err := c3.Git(ctx, "fetch", "origin", "master")
	if err == nil {
		t.Fatalf("a fetch via %s, cut off from etcd and every node, was served:\n%s", n3.name, out)
	}
	if !strings.Contains(out, "cut off from the cluster") {
		t.Errorf("the refused fetch does not say why:\n%s", out)
	}
}
