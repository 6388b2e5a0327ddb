package cluster_test

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// An operator's action on one node (poolgate release through its operator
// socket, and a release over another node's HTTP API) is decided in etcd
// like a push: etcd's tip is its commit, every node moves to it and
// derives the release.
func TestOperatorReleaseOnANodeGoesThroughEtcdAndEveryNodeSeesIt(t *testing.T) {
	e := startEtcd(t, 1)
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, locks: [a, b]}]",
		Etcd: [][]string{e.endpoints(), e.endpoints(), e.endpoints()}})
	tc.start()
	tc.converge()
	cli := etcdClient(t, e)
	ctx := ctxT(t, 3*time.Minute)
	c := tc.client("c", tc.nodes[0].sshAddr, "demo")
	if err := c.Clone(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := c.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tc.converge()

	released := func(how, commit string) {
		t.Helper()
		tip := tc.converge()
		if tip != commit {
			t.Fatalf("%s: the nodes are at %s, not the release %s", how, tip, commit)
		}
		resp, err := cli.Get(ctx, "/poolgate/repos/locks/refs/heads/master")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != commit {
			t.Fatalf("%s: etcd's tip is not the release %s: %v %v", how, commit, resp, err)
		}
		for _, n := range tc.nodes {
			waitFor(t, n.name+" to derive the release of "+how, time.Minute, func() bool {
				for _, ev := range n.events(t, "released") {
					if ev.Commit == commit {
						return true
					}
				}
				return false
			})
		}
	}

	// poolgate release beside n2.
	cmd := exec.Command(tc.hookBin, "release", "--config", tc.nodes[1].config, "--reason", "stuck build", "locks", "demo", first)
	cmd.Env = []string{"HOME=" + tc.nodes[1].dir, "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("poolgate release via n2: %v\n%s", err, out)
	}
	f := strings.Fields(string(out))
	released("poolgate release via n2", f[len(f)-1])

	// The HTTP API of n3.
	body := `{"reason": "stuck build", "operator": "ops"}`
	resp, err := http.Post("http://"+tc.nodes[2].httpAddr+"/api/v1/repos/locks/pools/demo/locks/"+second+"/release", "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("API release via n3: %d %s", resp.StatusCode, b)
	}
	tip := tc.nodes[2].tip(t)
	if !strings.Contains(string(b), tip) {
		t.Fatalf("API release via n3 answered %s; n3 is at %s", b, tip)
	}
	released("API release via n3", tip)
}
