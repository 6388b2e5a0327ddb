package cluster_test

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// httpText is a GET's body ("" on any failure).
func httpText(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// The cluster view from a node that does not lead, after another node
// died: the status page, the metrics and `poolgate status` each show
// which node leads, which is unreachable, which are in step.
func TestClusterViewFromAFollowerOnThePageMetricsAndStatus(t *testing.T) {
	e := startEtcd(t, 1)
	tc := newTestCluster(t, clusterOptions{Nodes: 3, Pools: "[{name: demo, locks: [a]}]",
		Etcd: [][]string{e.endpoints(), e.endpoints(), e.endpoints()}})
	tc.start()
	tc.converge()
	var leader string
	waitStatus(t, tc.nodes[0], func(st clusterStatus) bool {
		for _, n := range st.Nodes {
			if n.Leader && n.Reachable {
				leader = n.Name
			}
		}
		return leader != ""
	})
	var lead, viewer, dead *node
	for _, n := range tc.nodes {
		switch {
		case n.name == leader:
			lead = n
		case viewer == nil:
			viewer = n
		default:
			dead = n
		}
	}
	dead.p.kill()

	row := func(page, name string) string {
		m := regexp.MustCompile(`(?s)<tr class="cluster-node" data-node="` + name + `">(.*?)</tr>`).FindStringSubmatch(page)
		if m == nil {
			return ""
		}
		return m[1]
	}
	status := func() string {
		cmd := exec.Command(tc.hookBin, "status", "--config", viewer.config)
		cmd.Env = []string{"HOME=" + viewer.dir, "PATH=/usr/bin:/bin"}
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	line := func(out, name string) string {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == name {
				return l
			}
		}
		return ""
	}
	var page, metrics, out string
	waitFor(t, "the page, metrics and status to show the dead node", time.Minute, func() bool {
		page = httpText("http://" + viewer.httpAddr + "/")
		metrics = httpText("http://" + viewer.httpAddr + "/metrics")
		out = status()
		return strings.Contains(row(page, dead.name), "unreachable") &&
			strings.Contains(metrics, fmt.Sprintf("poolgate_cluster_node_up{node=%q} 0", dead.name)) &&
			strings.Contains(line(out, dead.name), "unreachable")
	})
	if r := row(page, lead.name); !strings.Contains(r, "leader") || !strings.Contains(r, "in step") {
		t.Errorf("page row of the leader %s: %s", lead.name, r)
	}
	if r := row(page, viewer.name); strings.Contains(r, "leader") || !strings.Contains(r, "in step") {
		t.Errorf("page row of %s (follower): %s", viewer.name, r)
	}
	for _, want := range []string{
		fmt.Sprintf("poolgate_cluster_node_leader{node=%q} 1", lead.name),
		fmt.Sprintf("poolgate_cluster_node_leader{node=%q} 0", viewer.name),
		fmt.Sprintf("poolgate_cluster_node_up{node=%q} 1", viewer.name),
		fmt.Sprintf("poolgate_cluster_node_behind{node=%q} 0", lead.name),
		"poolgate_cluster_pushes_available 1",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics of %s lack %s", viewer.name, want)
		}
	}
	if l := line(out, lead.name); !strings.Contains(l, "leader") || !strings.Contains(l, "in step") {
		t.Errorf("poolgate status on %s, leader's line: %q\n%s", viewer.name, l, out)
	}
	if l := line(out, viewer.name); strings.Contains(l, "leader") || !strings.Contains(l, "in step") {
		t.Errorf("poolgate status on %s, its own line: %q\n%s", viewer.name, l, out)
	}
	t.Logf("poolgate status on %s:\n%s", viewer.name, out)
}
