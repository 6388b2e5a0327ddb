package cluster

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

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
	st := Status{Node: n.cl.Node, Pushes: "ok"}
	if err := n.PushHealth(); err != nil {
		st.Pushes = err.Error()
	}
	all := append([]struct{ Name, Address string }{{n.cl.Node, n.cl.Advertise}}, peerList(n)...)
	ctx, cancel := context.WithTimeout(ctx, etcdOpTimeout)
	defer cancel()
	resp, err := n.etcd.Get(ctx, n.keys.nodes(), clientv3.WithPrefix())
	var leader string
	if err == nil {
		if l, lerr := n.etcd.Get(ctx, n.keys.election()+"/", clientv3.WithFirstCreate()...); lerr == nil && len(l.Kvs) > 0 {
			leader = string(l.Kvs[0].Value)
		}
	} else {
		st.EtcdError = oneLine(err)
	}
	for _, a := range all {
		ns := NodeStatus{Name: a.Name, Address: a.Address, Leader: a.Name == leader}
		if resp != nil {
			for _, kv := range resp.Kvs {
				if string(kv.Key) == n.keys.node(a.Name) {
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

func peerList(n *Node) []struct{ Name, Address string } {
	var out []struct{ Name, Address string }
	for _, p := range n.cl.Peers {
		out = append(out, struct{ Name, Address string }{p.Name, p.Address})
	}
	return out
}

// StatusHandler answers GET /api/v1/cluster with Status as JSON.
func (n *Node) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(n.Status(r.Context()))
	})
}
