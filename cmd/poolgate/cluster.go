package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/poolgate/poolgate/cluster"
	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/daemon"
	"github.com/poolgate/poolgate/hooksock"
	"github.com/poolgate/poolgate/web"
	"github.com/poolgate/poolgate/webhook"
	"github.com/rs/zerolog"
)

func init() {
	register("cluster-hook", "run by git in a cluster node: 'cluster-hook reference-transaction PHASE' decides a push in etcd", runClusterHook)
}

func runClusterHook(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cluster-hook", "cluster-hook reference-transaction PHASE  (reads OLD NEW REF lines on stdin)", stdout, stderr)
	pos, code := parseFlags(fs, args, stderr)
	if code >= 0 {
		return code
	}
	if len(pos) != 2 || pos[0] != cluster.HookName {
		fmt.Fprintln(stderr, "poolgate cluster-hook: want 'poolgate cluster-hook reference-transaction PHASE'")
		return exitUsage
	}
	if hooksock.RefTransactionDecides(pos[1:], os.Getenv) && hooksock.Enabled(os.Getenv) {
		// The script hook (no poolgate-hook beside this binary) under the
		// daemon: the daemon decides, with its own etcd client.
		return hooksock.Run(hooksock.RefTransaction, os.Getenv, os.Stdin, stderr)
	}
	h := &cluster.RefHook{Args: pos[1:], Getenv: os.Getenv, Stdin: os.Stdin, Stderr: stderr, Dir: "."}
	return h.Run()
}

// clusterInitWait bounds how long a starting node waits to be in step with
// the cluster before it serves (reads only, until it is).
const clusterInitWait = 15 * time.Second

// startCluster joins the cluster when the config has a cluster block (and
// removes a leftover cluster hook when it has not). moved is to be pointed
// at the events service once it runs. The returned func leaves.
func startCluster(cfg *config.Config, log zerolog.Logger, srv *daemon.Server, exe string) (node *cluster.Node, moved *atomic.Pointer[func(string)], stop func(), err error) {
	install := cluster.InstallHook
	if daemon.HookSocketOff() {
		install = cluster.InstallHookScript
	}
	if err := install(srv.HooksDir(), exe, cfg.Cluster != nil); err != nil {
		return nil, nil, nil, fmt.Errorf("cluster hook: %w", err)
	}
	moved = new(atomic.Pointer[func(string)])
	if cfg.Cluster == nil {
		return nil, moved, func() {}, nil
	}
	node, err = cluster.Start(cfg, log.With().Str("part", "cluster").Str("node", cfg.Cluster.Node).Logger(), cluster.Options{
		RepoDir: cfg.RepoDir,
		Signer:  srv.Signer(),
		Moved: func(repo string) {
			if f := moved.Load(); f != nil {
				(*f)(repo)
			}
		},
	}, clusterInitWait)
	if err != nil {
		return nil, nil, nil, err
	}
	srv.SetGate(node)
	// /healthz stays "serving"; this one says whether pushes can land here.
	srv.Handle("GET /healthz/push", node)
	return node, moved, node.Close, nil
}

// runDelivery runs webhook delivery: always on a single node; in a cluster
// only while this node is the elected leader, with the delivered ids in
// etcd, and a follower's cursors kept moving over what the leader sent.
func runDelivery(ctx context.Context, node *cluster.Node, disp *webhook.Dispatcher, st cluster.CursorStore) {
	if node == nil {
		disp.Run(ctx)
		return
	}
	go node.FollowCursors(ctx, st, disp)
	node.Lead(ctx, disp.Run)
}

// printCluster lists a cluster node's view of every node (poolgate status),
// read from etcd as the node itself reads it; nothing for a single node.
func printCluster(ctx context.Context, w io.Writer, cfg *config.Config) {
	if cfg.Cluster == nil {
		return
	}
	st, err := cluster.ReadStatus(ctx, cfg.Cluster)
	if err != nil {
		fmt.Fprintf(w, "\nCluster: %v\n", oneLine(err))
		return
	}
	fmt.Fprintf(w, "\nCluster (as node %s sees it):\n", st.Node)
	if st.EtcdError != "" {
		fmt.Fprintf(w, "etcd unreachable: %s\n", st.EtcdError)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tHEALTH\tROLE")
	for _, n := range st.Nodes {
		health := "in step"
		switch {
		case !n.Reachable:
			health = "unreachable"
		case len(n.Behind) > 0:
			health = "behind: " + strings.Join(n.Behind, ",")
		}
		role := "-"
		if n.Leader {
			role = "leader"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, n.Address, health, role)
	}
	tw.Flush()
}

// clusterView is the status page's cluster section.
func clusterView(st cluster.Status) web.ClusterView {
	v := web.ClusterView{Node: st.Node, Pushes: st.Pushes, EtcdError: st.EtcdError}
	for _, n := range st.Nodes {
		v.Nodes = append(v.Nodes, web.ClusterNode{Name: n.Name, Address: n.Address, Reachable: n.Reachable, Leader: n.Leader, Behind: n.Behind})
	}
	return v
}
