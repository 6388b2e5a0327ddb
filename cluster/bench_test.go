package cluster_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks (not run by go test without -bench); bench/cluster.md has the
// command and the figures. Daemons and hooks are plain builds here.

// One stock-like client's acquire+release, against one plain node and
// against one node of a three-node cluster (objects to a quorum, etcd lock
// and CAS per push).
func BenchmarkAcquireRelease(b *testing.B) {
	for _, mode := range []string{"single", "cluster"} {
		b.Run(mode, func(b *testing.B) {
			o := clusterOptions{Nodes: 1, Pools: "[{name: p, locks: [l1]}]", Plain: true}
			if mode == "cluster" {
				e := startEtcd(b, 1)
				o.Nodes, o.Etcd = 3, [][]string{e.endpoints(), e.endpoints(), e.endpoints()}
			}
			tc := newTestCluster(b, o)
			tc.start()
			tc.converge()
			ctx := ctxT(b, 10*time.Minute)
			c := tc.client("c", tc.nodes[0].sshAddr, "p")
			if err := c.Clone(ctx); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				lock, err := c.Acquire(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Release(ctx, lock); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The time from kill -9 of the node the proxy sends pushes to, to the first
// push that lands through the proxy (health checks every 200 ms, as a
// balancer would run them every second or so).
func BenchmarkFailoverFirstPush(b *testing.B) {
	e := startEtcd(b, 1)
	tc := newTestCluster(b, clusterOptions{Nodes: 3, Pools: "[{name: p, locks: [l1, l2, l3, l4, l5, l6, l7, l8]}]", Plain: true,
		Etcd: [][]string{e.endpoints(), e.endpoints(), e.endpoints()}})
	tc.start()
	tc.converge()
	var healthy atomic.Pointer[[]string]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			h := pushHealthy(tc.nodes)
			healthy.Store(&h)
			time.Sleep(200 * time.Millisecond)
		}
	}()
	for healthy.Load() == nil || len(*healthy.Load()) < 3 {
		time.Sleep(50 * time.Millisecond)
	}
	// The proxy prefers the first healthy node; the victim is whichever
	// that is when the clock starts.
	front := newProxy(b, "", func() []string {
		h := *healthy.Load()
		if len(h) > 1 {
			h = h[:1]
		}
		return h
	})
	var total time.Duration
	for i := 0; i < b.N; i++ {
		c := tc.client("c", front.addr(), "p")
		cctx := ctxT(b, 2*time.Minute)
		if err := c.Clone(cctx); err != nil {
			b.Fatal(err)
		}
		victim := (*healthy.Load())[0]
		var dead *node
		for _, n := range tc.nodes {
			if n.sshAddr == victim {
				dead = n
			}
		}
		start := time.Now()
		dead.p.kill()
		for {
			lock, err := c.Acquire(cctx)
			if err == nil {
				c.Release(cctx, lock)
				break
			}
			if cctx.Err() != nil {
				b.Fatal(err)
			}
			c.Clone(cctx)
		}
		total += time.Since(start)
		tc.start(dead)
		tc.converge()
		for len(*healthy.Load()) < 3 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-first-push")
}
