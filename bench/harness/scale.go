package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// pollResult is the part of bench/poll's JSON the scale curve reports.
type pollResult struct {
	N            int     `json:"n"`
	PollsPerS    float64 `json:"polls_per_s"`
	Refused      int64   `json:"refused"`
	Failed       int64   `json:"failed"`
	Late         int64   `json:"late"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	ServerCPUPct float64 `json:"server_cpu_pct"`
	ServerMsPoll float64 `json:"server_ms_per_poll"`
	ClientMsPoll float64 `json:"client_ms_per_poll"`
	IdleCycleS   float64 `json:"idle_acquire_release_p50_s"`
	LoadedCycleS float64 `json:"loaded_acquire_release_p50_s"`
	Load         string  `json:"load"`
}

// w7Scale is the waiting-builds scale curve: bench/poll's cheap pollers
// (one poll per -scale-interval each) against each server at each N, one
// point at a time, with stock acquire+release cycles timed idle and while
// they wait.
func (b *bench) w7Scale(ctx context.Context) error {
	if b.o.poller == "" {
		return fmt.Errorf("-poller BIN is required for workload 7 (bench/run.sh builds it)")
	}
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
		v := func(x float64) map[string]float64 { return map[string]float64{p.t.name: x} }
		b.rep.add("7", fmt.Sprintf("N=%d server CPU, %% of one core", p.n), "%", v(r.ServerCPUPct))
		b.rep.add("7", fmt.Sprintf("N=%d poll p50", p.n), "ms", v(r.P50Ms))
		b.rep.add("7", fmt.Sprintf("N=%d poll p99", p.n), "ms", v(r.P99Ms))
		b.rep.add("7", fmt.Sprintf("N=%d polls refused + failed + late", p.n), "", v(float64(r.Refused+r.Failed+r.Late)))
		b.rep.add("7", fmt.Sprintf("N=%d acquire+release p50 while waiting (idle: %.3f s)", p.n, r.IdleCycleS), "s", v(r.LoadedCycleS))
	}
	return nil
}

func (b *bench) pollPoint(ctx context.Context, t *target, n int) (pollResult, error) {
	var r pollResult
	out := filepath.Join(b.root, fmt.Sprintf("poll-%s-%d.json", t.name, n))
	user, repo := "git", "/locks.git"
	if t.srv.kind == "openssh" {
		user, repo = benchUser, filepath.Join(t.srv.repos, "locks.git")
	}
	args := []string{"-addr", "127.0.0.1:" + strconv.Itoa(t.srv.port), "-user", user, "-key", b.key, "-repo", repo,
		"-n", strconv.Itoa(n), "-interval", b.o.scaleInterval.String(), "-duration", b.o.scaleWindow.String(),
		"-git-url", t.url("locks"), "-git-ssh", t.sshCmd, "-pool", "bench", "-cycles", strconv.Itoa(b.o.scaleCycles),
		"-json", out}
	if t.srv.cg != nil {
		args = append(args, "-server-cgroup", t.srv.cg.dir)
	} else {
		args = append(args, "-server-pid", strconv.Itoa(t.srv.pid()))
	}
	pctx, cancel := context.WithTimeout(ctx, 2*b.o.scaleInterval+b.o.scaleWindow+5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(pctx, b.o.poller, args...)
	cmd.Env = append(os.Environ(), t.env(b.home())...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	fmt.Printf("harness: %s %s\n", b.o.poller, strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return r, err
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(raw, &r)
}
