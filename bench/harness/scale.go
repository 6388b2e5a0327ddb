package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/poolgate/poolgate/bench/poller"
)

// w7Scale is the waiting-builds scale curve: package poller's cheap pollers
// (one poll per -scale-interval each) against each server at each N, one
// point at a time, with stock acquire+release cycles timed idle and while
// they wait.
func (b *bench) w7Scale(ctx context.Context) error {
	type point struct {
		t *target
		n int
	}
	var points []point
	for _, t := range b.targets {
		var ns []int
		switch t.name {
		case "poolgate":
			ns = b.o.scaleN
		case "openssh-c25519":
			ns = b.o.scaleNOpenSSH
		}
		for _, n := range ns {
			points = append(points, point{t, n})
		}
	}
	for _, p := range points {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.settle(ctx)
		r, err := b.pollPoint(ctx, p.t, p.n)
		if err != nil {
			return fmt.Errorf("%s at %d: %w", p.t.name, p.n, err)
		}
		name := fmt.Sprintf("%s, %d waiting builds", p.t.name, p.n)
		fmt.Printf("[W7] %s: %.0f polls/s, server CPU %.1f%% of a core (%.2f ms/poll), p50 %.1f ms, p99 %.1f ms, refused %d, failed %d, late %d, client %.2f ms/poll; acquire+release idle %.3f s, waiting %.3f s (load %s)\n",
			name, r.PollsPerS, r.ServerCPUPct, r.ServerMsPoll, r.P50Ms, r.P99Ms, r.Refused, r.Failed, r.Late, r.ClientMsPoll, r.IdleCycleS, r.LoadedCycleS, r.Load)
		if r.CycleError != "" {
			b.rep.note("W7 %s: an acquire+release while they waited failed: %s", name, firstLine(r.CycleError))
		}
		v := func(x float64) map[string]float64 { return map[string]float64{p.t.name: x} }
		b.rep.add("7", fmt.Sprintf("N=%d server CPU, %% of one core", p.n), "%", v(r.ServerCPUPct))
		b.rep.add("7", fmt.Sprintf("N=%d poll p50", p.n), "ms", v(r.P50Ms))
		b.rep.add("7", fmt.Sprintf("N=%d poll p99", p.n), "ms", v(r.P99Ms))
		b.rep.add("7", fmt.Sprintf("N=%d polls refused + failed + late", p.n), "", v(float64(r.Refused+r.Failed+r.Late)))
		b.rep.add("7", fmt.Sprintf("N=%d acquire+release p50 while waiting (idle: %.3f s)", p.n, r.IdleCycleS), "s", v(r.LoadedCycleS))
	}
	return nil
}

func (b *bench) pollPoint(ctx context.Context, t *target, n int) (poller.Result, error) {
	o := poller.Options{Addr: "127.0.0.1:" + strconv.Itoa(t.srv.port), User: "git", KeyFile: b.key, Repo: "/locks.git",
		Branch: "master", N: n, Interval: b.o.scaleInterval, Window: b.o.scaleWindow, Timeout: 30 * time.Second,
		GitURL: t.url("locks"), GitSSH: t.sshCmd, Pool: "bench", Cycles: b.o.scaleCycles}
	if t.srv.kind == "openssh" {
		o.User, o.Repo = benchUser, filepath.Join(t.srv.repos, "locks.git")
	}
	if t.name == "poolgate" {
		o.OnWindow = func(d time.Duration) { b.profile(ctx, fmt.Sprintf("w7-poolgate-%d", n), d-time.Second) }
	}
	if t.srv.cg != nil {
		o.ServerCgroup = t.srv.cg.dir
	} else {
		o.ServerPID = t.srv.pid()
	}
	pctx, cancel := context.WithTimeout(ctx, 2*b.o.scaleInterval+b.o.scaleWindow+5*time.Minute)
	defer cancel()
	// In the harness's process: its CPU is the clients' (the harness's
	// cgroup), never the server's.
	return poller.Run(pctx, o)
}
