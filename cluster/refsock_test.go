package cluster_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/cluster"
	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/internal/poolclient"
)

// countingPoolgate makes a poolgate (a script logging each start, then
// running the plain build) with the hook program copied beside it, and
// points the cluster's hooks at it: what a push starts is counted, not
// timed. It returns the log.
func countingPoolgate(t *testing.T, tc *testCluster) string {
	t.Helper()
	bin := t.TempDir()
	log := filepath.Join(t.TempDir(), "poolgate.log")
	exe := filepath.Join(bin, "poolgate")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\necho \"$*\" >> '"+log+"'\nexec '"+tc.hookBin+"' \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A copy, not a link: its fallback runs the poolgate beside its own
	// resolved path, which must be the counting one.
	hook, err := os.ReadFile(filepath.Join(filepath.Dir(tc.hookBin), hooks.HookProgram))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, hooks.HookProgram), hook, 0o755); err != nil {
		t.Fatal(err)
	}
	tc.hookBin = exe
	return log
}

// A cluster push under the daemon starts no poolgate: the
// reference-transaction hook is the small program, which asks the daemon
// for the cluster's decision over the hook socket with the push's ticket
// (the node's own etcd client decides; a lost compare-and-set through the
// same path is TestLostCompareAndSetIsAnOrdinaryRejectionTheClientRetries).
// With the daemon's socket gone, the hook refuses: the push is an
// error and no node's branch moves (fail closed).
func TestClusterPushStartsNoPoolgateAndFailsClosed(t *testing.T) {
	e := startEtcd(t, 1)
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, locks: [a, b, c]}]",
		Etcd: [][]string{e.endpoints(), e.endpoints(), e.endpoints()}})
	startLog := countingPoolgate(t, tc)
	tc.start()
	tc.converge()
	for _, n := range tc.nodes {
		// (A unix socket's path is short: a long test name makes the
		// data dir too long for one.)
		if l := n.p.grep("no hook socket"); l != "" {
			t.Fatalf("%s: %s", n.name, l)
		}
		link, err := os.Readlink(filepath.Join(n.dir, "data", "hooks", cluster.HookName))
		if err != nil || filepath.Base(link) != hooks.HookProgram {
			t.Fatalf("%s: %s is not a link to %s: %q, %v", n.name, cluster.HookName, hooks.HookProgram, link, err)
		}
	}
	ctx := ctxT(t, 2*time.Minute)
	c1 := tc.client("c1", tc.nodes[0].sshAddr, "demo")
	c2 := tc.client("c2", tc.nodes[1].sshAddr, "demo")
	for _, c := range []*poolclient.Client{c1, c2} {
		if err := c.Clone(ctx); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(startLog)
	for i, c := range []*poolclient.Client{c1, c2} {
		if _, err := c.Acquire(ctx); err != nil {
			t.Fatalf("acquire via n%d: %v\n%s", i+1, err, tc.nodes[i].p.Log())
		}
	}
	tip := tc.converge()
	if b, err := os.ReadFile(startLog); err == nil {
		t.Errorf("poolgate was started during the pushes:\n%s", b)
	}
	for _, n := range tc.nodes[:2] {
		if got := n.p.grep(`"message":"decided over the hook socket"`); strings.Count(got, `"exit":0`) != 1 {
			t.Errorf("%s: want one push decided over the hook socket:\n%s", n.name, got)
		}
	}

	// The daemon's socket gone: the hook has its ticket, nothing listens.
	hook := filepath.Join(tc.nodes[0].dir, "data", "hooks", cluster.HookName)
	small, err := os.Readlink(hook)
	if err != nil {
		t.Fatal(err)
	}
	named := filepath.Join(t.TempDir(), cluster.HookName) // argv[0] names the hook
	if err := os.Symlink(small, named); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(t.TempDir(), "gone.sock")
	if err := hooks.WriteHook(filepath.Dir(hook), cluster.HookName, "",
		"#!/bin/sh\nPOOLGATE_HOOK_SOCKET="+hooks.ShellQuote(gone)+" exec "+hooks.ShellQuote(named)+" \"$@\"\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Acquire(ctx); err == nil {
		t.Fatal("a push landed without the daemon's decision")
	}
	out := c1.Stats().LastPush
	if !strings.Contains(out, "pushes are unavailable") || !strings.Contains(out, "not reachable") || strings.Contains(out, "[remote rejected]") {
		t.Errorf("push output is not an error naming the reason:\n%s", out)
	}
	if after := tc.converge(); after != tip {
		t.Errorf("the branch moved from %s to %s without the decision", tip, after)
	}
	if b, err := os.ReadFile(startLog); err == nil {
		t.Errorf("poolgate was started:\n%s", b)
	}
}
