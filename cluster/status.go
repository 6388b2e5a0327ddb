package cluster

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Every node announces itself under <prefix>/nodes/<name> on a short lease:
// the key is there while the node is alive and reaches etcd. The status
// answers from any node with the whole cluster's view.

// presenceTTL is how long a node stays listed after it stopped renewing.
const presenceTTL = 5

// presence is what a node publishes about itself.
type presence struct {
	Advertise string   `json:"advertise"`
	Behind    []string `json:"behind,omitempty"` // repos not at the decided tip
	Since     int64    `json:"since"`
}

// announce keeps this node's presence key up until ctx ends.
func (n *Node) announce(ctx context.Context) {
	since := time.Now().Unix()
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
		lease, err := n.etcd.Grant(gctx, presenceTTL)
		cancel()
		if err == nil {
			err = n.keepPresence(ctx, lease.ID, since)
		}
		if ctx.Err() == nil {
			n.log.Debug().Err(err).Msg("cluster: presence lost, renewing")
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// keepPresence writes the presence (again whenever what it says changes)
// and keeps its lease alive, until the lease is lost.
func (n *Node) keepPresence(ctx context.Context, lease clientv3.LeaseID, since int64) error {
	ka, err := n.etcd.KeepAlive(ctx, lease)
	if err != nil {
		return err
	}
	last := ""
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		p := presence{Advertise: n.cl.Advertise, Behind: n.behind(), Since: since}
		b, _ := json.Marshal(p)
		if string(b) != last {
			pctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
			_, err := n.etcd.Put(pctx, n.keys.node(n.cl.Node), string(b), clientv3.WithLease(lease))
			cancel()
			if err != nil {
				return err
			}
			last = string(b)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-ka:
			if !ok {
				return context.Canceled
			}
		case <-tick.C:
		}
	}
}

// behind lists the repos whose local tip is not the last decided one seen.
func (n *Node) behind() []string {
	var out []string
	for _, rs := range n.repos {
		rs.mu.Lock()
		decided, ready := rs.decided, rs.ready
		rs.mu.Unlock()
		local, err := n.git.tip(context.Background(), rs.dir, rs.branch)
		if !ready || err != nil || local != decided {
			out = append(out, rs.name)
		}
	}
	return out
}

// NodeStatus is one node in the cluster view.
type NodeStatus struct {
	Name      string   `json:"name"`
	Address   string   `json:"address"`
	Reachable bool     `json:"reachable"` // its presence is in etcd
	Leader    bool     `json:"leader"`
	Behind    []string `json:"behind,omitempty"`
}

// Status is the cluster view as this node sees it.
type Status struct {
	Node      string       `json:"node"`
	EtcdError string       `json:"etcd_error,omitempty"`
	Pushes    string       `json:"pushes"` // "ok" or why not
	Nodes     []NodeStatus `json:"nodes"`
}

// Status reads every node's presence and the leader from etcd.
func (n *Node) Status(ctx context.Context) Status {
	st := view(ctx, n.etcd, n.cl, n.keys)
	st.Pushes = "ok"
	if err := n.PushHealth(); err != nil {
		st.Pushes = err.Error()
	}
	return st
}

// ReadStatus is the cluster view for a command beside the daemon (poolgate
// status): the same etcd reads, from the config's cluster block.
func ReadStatus(ctx context.Context, cl *config.Cluster) (Status, error) {
	cli, err := newEtcd(cl)
	if err != nil {
		return Status{}, err
	}
	defer cli.Close()
	st := view(ctx, cli, cl, keys{cl.Etcd.Prefix})
	if st.EtcdError != "" {
		st.Pushes = "etcd unreachable: " + st.EtcdError
	}
	return st, nil
}

func view(ctx context.Context, cli *clientv3.Client, cl *config.Cluster, k keys) Status {
	st := Status{Node: cl.Node}
	all := append([]config.Peer{{Name: cl.Node, Address: cl.Advertise}}, cl.Peers...)
	ctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
	defer cancel()
	resp, err := cli.Get(ctx, k.nodes(), clientv3.WithPrefix())
	var leader string
	if err == nil {
		if l, lerr := cli.Get(ctx, k.election()+"/", clientv3.WithFirstCreate()...); lerr == nil && len(l.Kvs) > 0 {
			leader = string(l.Kvs[0].Value)
		}
	} else {
		st.EtcdError = oneLine(err)
	}
	for _, a := range all {
		ns := NodeStatus{Name: a.Name, Address: a.Address, Leader: a.Name == leader}
		if resp != nil {
			for _, kv := range resp.Kvs {
				if string(kv.Key) == k.node(a.Name) {
					var p presence
					json.Unmarshal(kv.Value, &p)
					ns.Reachable, ns.Behind = true, p.Behind
				}
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}

// StatusHandler answers GET /api/v1/cluster with Status as JSON.
func (n *Node) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(n.Status(r.Context()))
	})
}

// Collector exports the cluster view as metrics, read from etcd at scrape
// time, the same from any node: poolgate_cluster_node_up,
// poolgate_cluster_node_leader, poolgate_cluster_node_behind (repos not at
// the decided tip) per node, and poolgate_cluster_pushes_available for
// this node.
func (n *Node) Collector() prometheus.Collector { return clusterCollector{n} }

var (
	descNodeUp = prometheus.NewDesc("poolgate_cluster_node_up",
		"1 while the node is alive and reaches etcd (its presence key is there).", []string{"node"}, nil)
	descNodeLeader = prometheus.NewDesc("poolgate_cluster_node_leader",
		"1 for the node that delivers webhooks and raises stale alarms.", []string{"node"}, nil)
	descNodeBehind = prometheus.NewDesc("poolgate_cluster_node_behind",
		"Repos the node has not caught up with (0 for a node that is not up).", []string{"node"}, nil)
	descPushes = prometheus.NewDesc("poolgate_cluster_pushes_available",
		"1 while this node can take pushes (reaches etcd, every repo in step).", nil, nil)
)

type clusterCollector struct{ n *Node }

func (c clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descNodeUp
	ch <- descNodeLeader
	ch <- descNodeBehind
	ch <- descPushes
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.n.Status(context.Background())
	for _, ns := range st.Nodes {
		ch <- prometheus.MustNewConstMetric(descNodeUp, prometheus.GaugeValue, b2f(ns.Reachable), ns.Name)
		ch <- prometheus.MustNewConstMetric(descNodeLeader, prometheus.GaugeValue, b2f(ns.Leader), ns.Name)
		ch <- prometheus.MustNewConstMetric(descNodeBehind, prometheus.GaugeValue, float64(len(ns.Behind)), ns.Name)
	}
	ch <- prometheus.MustNewConstMetric(descPushes, prometheus.GaugeValue, b2f(st.Pushes == "ok"))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
