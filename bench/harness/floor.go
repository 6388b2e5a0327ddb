package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/poolgate/poolgate/bench/poller"
)

// w8Floor times the stock acquire+release against poolgate and, alternating
// cycle by cycle, the same client against a file:// remote: a bare copy of
// the same repo with git's default settings, no SSH, no server, no hook.
// That is the client-bound floor; the ratio says what SSH and the server
// add. The client's CPU is taken from the harness's cgroup.
func (b *bench) w8Floor(ctx context.Context) error {
	bare := filepath.Join(b.root, "file-remote", "locks.git")
	if err := gitRun(ctx, "", "clone", "-q", "--bare", filepath.Join(b.pgData, "repos", "locks.git"), bare); err != nil {
		return err
	}
	file := &target{name: "file", srv: &server{kind: "file", url: func(string) string { return "file://" + bare }}}
	pg := b.targets[0]
	// Variants (-variant) run as further targets: before/after in one run.
	targets := append(append([]*target{pg}, b.variants...), file)
	for _, t := range targets {
		if _, err := b.cycle(ctx, t, "bench", nil); err != nil { // warm-up
			return err
		}
	}
	durs := map[string][]float64{}
	client, server := map[string]float64{}, map[string]float64{}
	for i := 0; i < b.o.n; i++ {
		for _, t := range targets {
			quiesce(pg.srv.pid())
			c0 := b.clientMs()
			s0 := 0.0
			if t.srv.cmd != nil {
				s0 = t.srv.cpuMs()
			}
			d, err := b.cycle(ctx, t, "bench", nil)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			client[t.name] += b.clientMs() - c0
			if t.srv.cmd != nil {
				// Read at once: what the push set off afterwards (events)
				// is not in the client's wait either.
				server[t.name] += t.srv.cpuMs() - s0
			}
			durs[t.name] = append(durs[t.name], d.Seconds())
		}
	}
	p50 := map[string]float64{}
	for _, t := range targets {
		p50[t.name] = poller.Percentile(durs[t.name], 50)
		client[t.name] /= float64(b.o.n)
		if _, ok := server[t.name]; ok {
			server[t.name] /= float64(b.o.n)
		}
	}
	ratio := p50["poolgate"] / p50["file"]
	b.rep.add("8", fmt.Sprintf("acquire+release p50, alternating (n=%d): poolgate / file:// = %.2f", b.o.n, ratio), "s", p50)
	for _, v := range b.variants {
		b.rep.note("W8: %s / file:// = %.2f", v.name, p50[v.name]/p50["file"])
	}
	b.rep.add("8", "client CPU per acquire+release (git, ssh)", "ms", client)
	b.rep.add("8", "server CPU during an acquire+release (file://: none, git runs in the client)", "ms", server)
	for _, t := range targets {
		fmt.Printf("harness: W8 cycles %s %v\n", t.name, round(durs[t.name]))
	}
	return nil
}

func round(xs []float64) []string {
	var out []string
	for _, x := range xs {
		out = append(out, (time.Duration(x * float64(time.Second))).Round(time.Millisecond).String())
	}
	return out
}
