package cluster_test

import (
	"fmt"
	"testing"
	"time"
)

// A push refused on a node that does not lead (over max_claimed: the
// stock client waits) is recorded there alone; its `rejected` event must
// still reach the webhook promptly, delivered by the leader, and be in
// every node's history.
func TestRejectionOnAFollowerIsDeliveredByTheLeader(t *testing.T) {
	e := startEtcd(t, 1)
	rec := newReceiver(t)
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, max_claimed: 1, locks: [a, b]}]",
		Etcd:     [][]string{e.endpoints(), e.endpoints(), e.endpoints()},
		Webhooks: fmt.Sprintf("[{name: rec, url: %q, format: json, events: [rejected]}]", rec.url)})
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
	var lead, follower *node
	for _, n := range tc.nodes {
		if n.name == leader {
			lead = n
		} else {
			follower = n
		}
	}
	ctx := ctxT(t, 3*time.Minute)
	c1 := tc.client("c1", lead.sshAddr, "demo")
	if err := c1.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	tc.converge()
	// The second claim is over max_claimed: refused on the follower, the
	// client waits and retries.
	c2 := tc.client("c2", follower.sshAddr, "demo")
	stop := make(chan struct{})
	c2.Stop = stop
	if err := c2.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c2.Acquire(ctx); done <- err }()
	var id string
	waitFor(t, "the follower's rejection in its history", time.Minute, func() bool {
		for _, ev := range follower.events(t, "rejected") {
			id = ev.ID
		}
		return id != ""
	})
	missing := rec.waitFor(map[string]bool{id: true}, 30*time.Second)
	close(stop)
	<-done
	if len(missing) > 0 {
		t.Fatalf("rejection %s on %s (leader %s) was not delivered:\nleader's log:\n%s", id, follower.name, lead.name, lead.p.Log())
	}
	if !lead.eventIDs(t, "rejected")[id] {
		t.Errorf("the leader %s's history lacks %s's rejection %s", lead.name, follower.name, id)
	}
	// Delivered by the leader, not by the follower taking the lead.
	waitStatus(t, follower, func(st clusterStatus) bool {
		for _, n := range st.Nodes {
			if n.Leader && n.Name != lead.name {
				t.Errorf("the lead moved to %s", n.Name)
			}
		}
		return true
	})
}
