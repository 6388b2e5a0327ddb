package cluster_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
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
	// The cluster view from any node: all three up and in step, one leader.
	st := waitStatus(t, tc.nodes[1], func(st clusterStatus) bool {
		leaders, ok := 0, 0
		for _, n := range st.Nodes {
			if n.Leader {
				leaders++
			}
			if n.Reachable && len(n.Behind) == 0 {
				ok++
			}
		}
		return leaders == 1 && ok == 3 && st.Pushes == "ok"
	})
	t.Logf("cluster view from n2: %+v", st)
}

// A node killed shows as unreachable in the view from the others, and the
// leadership moves if it led.
func TestClusterViewShowsADeadNodeAndMovesTheLead(t *testing.T) {
	e := startEtcd(t, 1)
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, locks: [a]}]",
		Etcd: [][]string{e.endpoints(), e.endpoints(), e.endpoints()}})
	tc.start()
	tc.converge()
	var leader string
	waitStatus(t, tc.nodes[0], func(st clusterStatus) bool {
		for _, n := range st.Nodes {
			if n.Leader {
				leader = n.Name
			}
		}
		return leader != ""
	})
	var dead, other *node
	for _, n := range tc.nodes {
		if n.name == leader {
			dead = n
		} else {
			other = n
		}
	}
	dead.p.kill()
	st := waitStatus(t, other, func(st clusterStatus) bool {
		newLeader, deadShown := "", false
		for _, n := range st.Nodes {
			if n.Leader {
				newLeader = n.Name
			}
			if n.Name == dead.name && !n.Reachable {
				deadShown = true
			}
		}
		return deadShown && newLeader != "" && newLeader != dead.name
	})
	t.Logf("after killing the leader %s: %+v", dead.name, st)
	resp, err := http.Get("http://" + other.httpAddr + "/healthz/push")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz/push on %s: %d with one node of three dead", other.name, resp.StatusCode)
	}
}

type clusterStatus struct {
	Node   string `json:"node"`
	Pushes string `json:"pushes"`
	Nodes  []struct {
		Name      string   `json:"name"`
		Reachable bool     `json:"reachable"`
		Leader    bool     `json:"leader"`
		Behind    []string `json:"behind"`
	} `json:"nodes"`
}

// waitStatus polls a node's /api/v1/cluster (bounded) until ok says so.
func waitStatus(t *testing.T, n *node, ok func(clusterStatus) bool) clusterStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var st clusterStatus
	for {
		resp, err := http.Get("http://" + n.httpAddr + "/api/v1/cluster")
		if err == nil {
			st = clusterStatus{}
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if ok(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster view from %s never as expected: %+v (%v)", n.name, st, err)
		}
		time.Sleep(200 * time.Millisecond)
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
	killed := time.Now()
	_, err := c.Acquire(ctx)
	if err == nil {
		t.Fatal("a push landed with etcd down")
	}
	out := c.Stats().LastPush
	if !strings.Contains(out, "pushes are unavailable") || strings.Contains(out, "[rejected]") || strings.Contains(out, "[remote rejected]") {
		t.Errorf("push output is not an error naming the reason:\n%s", out)
	}
	// Past the grace a node cut off alone has: every node lost etcd, so no
	// node can move the tip, and reads go on.
	for time.Since(killed) < 7*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	c2 := tc.client("c2", tc.nodes[1].sshAddr, "demo")
	if err := c2.Clone(ctx); err != nil {
		t.Errorf("clone with etcd down: %v", err)
	}
}

// A hand-over (SIGUSR2) of a node: the successor binds the node-to-node
// port while its predecessor drains, and the node goes on taking pushes.
func TestHandoverKeepsTheNodeInTheCluster(t *testing.T) {
	e := startEtcd(t, 1)
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, locks: [a, b]}]",
		Etcd: [][]string{e.endpoints(), e.endpoints(), e.endpoints()}})
	tc.start()
	tc.converge()
	n := tc.nodes[0]
	old := n.p.cmd.Process.Pid
	if err := n.p.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var successor int
	deadline := time.After(60 * time.Second)
	for successor == 0 {
		select {
		case m := <-n.p.line:
			if pid, _ := m["pid"].(float64); int(pid) != old {
				successor = int(pid)
			}
		case <-deadline:
			t.Fatalf("no successor listening:\n%s", n.p.Log())
		}
	}
	t.Cleanup(func() { syscall.Kill(-successor, syscall.SIGKILL) })
	select {
	case <-n.p.done:
	case <-time.After(60 * time.Second):
		n.p.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, into the log
		time.Sleep(2 * time.Second)
		t.Fatalf("the predecessor did not exit:\n%s", n.p.Log())
	}
	ctx := ctxT(t, time.Minute)
	c := tc.client("c", n.sshAddr, "demo")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(ctx); err != nil {
		t.Fatalf("push to the successor: %v\n%s", err, n.p.Log())
	}
	tc.converge()
	// Objects still travel to this node: a push via n2 lands on n1 too.
	c2 := tc.client("c2", tc.nodes[1].sshAddr, "demo")
	if err := c2.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	tc.converge()
}

// Two of three nodes dead: a push cannot get its objects onto a quorum, so
// it fails as an error naming that, and nothing moves.
func TestPushWithoutAQuorumOfNodesIsAnErrorAndLandsNothing(t *testing.T) {
	e := startEtcd(t, 1)
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, locks: [a, b]}]",
		Etcd: [][]string{e.endpoints(), e.endpoints(), e.endpoints()}})
	tc.start()
	before := tc.converge()
	ctx := ctxT(t, 2*time.Minute)
	c := tc.client("c", tc.nodes[0].sshAddr, "demo")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	tc.nodes[1].p.kill()
	tc.nodes[2].p.kill()
	if _, err := c.Acquire(ctx); err == nil {
		t.Fatal("a push landed on one node of three")
	}
	out := c.Stats().LastPush
	if !strings.Contains(out, "the objects reached 1 of 3 nodes, 2 needed") || strings.Contains(out, "[rejected]") || strings.Contains(out, "[remote rejected]") {
		t.Errorf("push output is not an error naming the quorum:\n%s", out)
	}
	if tip := tc.nodes[0].tip(t); tip != before {
		t.Errorf("n1's branch moved to %s", tip)
	}
}
