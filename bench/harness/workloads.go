package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/poolgate/poolgate/internal/poolclient"

	"github.com/poolgate/poolgate/bench/poller"
)

func (b *bench) client(t *target, pool, dir string) *poolclient.Client {
	return &poolclient.Client{
		URL:        t.url("locks"),
		Branch:     "master",
		Pool:       pool,
		Dir:        dir,
		Env:        t.env(b.home()),
		RetryDelay: b.o.retry,
		BuildURL:   "https://ci.example.com/teams/main/pipelines/bench/jobs/" + t.name + "/builds/1",
	}
}

// meter attributes a server's CPU to the operations between snapshots.
type meter struct {
	srv   *server
	last  float64
	ms    map[string]float64
	count map[string]int
}

func newMeter(srv *server) *meter {
	quiesce(srv.pid())
	return &meter{srv: srv, last: srv.cpuMs(), ms: map[string]float64{}, count: map[string]int{}}
}

// resync skips whatever ran since the last snapshot.
func (m *meter) resync() {
	quiesce(m.srv.pid())
	m.last = m.srv.cpuMs()
}

// done waits for the server to finish the operation's processes and books
// the CPU used since the last snapshot to op.
func (m *meter) done(op string) {
	quiesce(m.srv.pid())
	t := m.srv.cpuMs()
	m.ms[op] += t - m.last
	m.count[op]++
	m.last = t
}

func (m *meter) msPer(op string) float64 {
	if m.count[op] == 0 {
		return 0
	}
	return m.ms[op] / float64(m.count[op])
}

// cycle is one acquire + release, each a separate put step exactly as the
// stock pool-resource runs it: clone --single-branch --branch, fetch,
// reset --hard, git mv, commit, push. It returns the wall time of the git
// commands (pauses to read the server's CPU excluded).
func (b *bench) cycle(ctx context.Context, t *target, pool string, m *meter) (time.Duration, error) {
	var total time.Duration
	timed := func(op string, f func() error) error {
		start := time.Now()
		err := f()
		total += time.Since(start)
		if m != nil && op != "" {
			m.done(op)
		}
		return err
	}
	name := ""
	for _, step := range []struct{ from, to, verb string }{{"unclaimed", "claimed", "claiming"}, {"claimed", "unclaimed", "unclaiming"}} {
		c := b.client(t, pool, b.scratch("w1"))
		if err := timed("clone", func() error { return c.Clone(ctx) }); err != nil {
			return 0, err
		}
		if err := timed("fetch", func() error { _, err := c.Git(ctx, "fetch", "origin", "master"); return err }); err != nil {
			return 0, err
		}
		err := timed("", func() error {
			if _, err := c.Git(ctx, "reset", "--hard", "origin/master"); err != nil {
				return err
			}
			if name == "" {
				ents, err := os.ReadDir(filepath.Join(c.Dir, pool, "unclaimed"))
				if err != nil {
					return err
				}
				var free []string
				for _, e := range ents {
					if !strings.HasPrefix(e.Name(), ".") {
						free = append(free, e.Name())
					}
				}
				if len(free) == 0 {
					return errors.New("no free lock in pool " + pool)
				}
				name = free[rand.IntN(len(free))]
			}
			if _, err := c.Git(ctx, "mv", pool+"/"+step.from+"/"+name, pool+"/"+step.to+"/"+name); err != nil {
				return err
			}
			_, err := c.Git(ctx, "commit", "-m", c.Message(step.verb, name))
			return err
		})
		if err != nil {
			return 0, err
		}
		var out string
		err = timed("push", func() error { var err error; out, err = c.Git(ctx, "push", "origin", "HEAD:master"); return err })
		if err != nil || strings.Contains(out, "rejected") {
			return 0, fmt.Errorf("push to %s: %v: %s", t.name, err, out)
		}
		os.RemoveAll(c.Dir)
	}
	return total, nil
}

func (b *bench) w1AcquireRelease(ctx context.Context) error {
	durs := map[string][]float64{}
	meters := map[string]*meter{}
	for _, t := range b.withVariants() {
		// One warm-up cycle each: page cache, first host key generation.
		if _, err := b.cycle(ctx, t, "bench", nil); err != nil {
			return err
		}
	}
	for _, t := range b.withVariants() {
		meters[t.name] = nil
	}
	for i := 0; i < b.o.n; i++ {
		for _, t := range b.withVariants() {
			m := meters[t.name]
			if m == nil {
				m = newMeter(t.srv)
				meters[t.name] = m
			} else {
				// Other targets ran in between, one on the same server.
				m.resync()
			}
			d, err := b.cycle(ctx, t, "bench", m)
			if err != nil {
				return err
			}
			durs[t.name] = append(durs[t.name], d.Seconds())
		}
	}
	p50, p99 := map[string]float64{}, map[string]float64{}
	cyc, push, fetch, clone := map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, t := range b.withVariants() {
		p50[t.name] = poller.Percentile(durs[t.name], 50)
		p99[t.name] = poller.Percentile(durs[t.name], 99)
		m := meters[t.name]
		push[t.name] = m.msPer("push")
		fetch[t.name] = m.msPer("fetch")
		clone[t.name] = m.msPer("clone")
		cyc[t.name] = 2 * (m.msPer("push") + m.msPer("fetch") + m.msPer("clone"))
	}
	b.rep.add("1", fmt.Sprintf("acquire+release p50 (n=%d)", b.o.n), "s", p50)
	b.rep.add("1", fmt.Sprintf("acquire+release p99 (n=%d)", b.o.n), "s", p99)
	b.rep.add("1", "server CPU per acquire+release", "ms", cyc)
	b.rep.add("1", "server CPU per push (hook included)", "ms", push)
	b.rep.add("1", "server CPU per fetch (nothing new)", "ms", fetch)
	b.rep.add("1", "server CPU per clone (small repo)", "ms", clone)
	return nil
}

// w2Contention runs clients that each acquire and release in a loop, all on
// one 4-lock pool, for a bounded window.
func (b *bench) w2Contention(ctx context.Context) error {
	type res struct {
		cycles int
		waits  []float64
		pushes int
		errs   []string
	}
	results := map[string]*res{}
	for round := 0; round < b.o.rounds; round++ {
		for ti, t := range b.targets {
			pool := contendPool(round, ti)
			r := results[t.name]
			if r == nil {
				r = &res{}
				results[t.name] = r
			}
			wctx, cancel := context.WithTimeout(ctx, b.o.contend)
			var mu sync.Mutex
			var wg sync.WaitGroup
			start := time.Now()
			for i := 0; i < b.o.clients; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for wctx.Err() == nil {
						t0 := time.Now()
						c := b.client(t, pool, b.scratch("w2"))
						if err := c.Clone(wctx); err != nil {
							if wctx.Err() == nil {
								mu.Lock()
								r.errs = append(r.errs, err.Error())
								mu.Unlock()
							}
							return
						}
						name, err := c.Acquire(wctx)
						os.RemoveAll(c.Dir)
						if err != nil {
							if wctx.Err() == nil {
								mu.Lock()
								r.errs = append(r.errs, err.Error())
								mu.Unlock()
							}
							return
						}
						wait := time.Since(t0).Seconds()
						// The release always completes, deadline or not, so
						// the next round starts with every lock free.
						rctx, rcancel := context.WithTimeout(ctx, 120*time.Second)
						c2 := b.client(t, pool, b.scratch("w2"))
						err = c2.Clone(rctx)
						if err == nil {
							err = c2.Release(rctx, name)
						}
						rcancel()
						os.RemoveAll(c2.Dir)
						mu.Lock()
						r.pushes += c.Stats().Pushes + c2.Stats().Pushes
						if err != nil {
							r.errs = append(r.errs, err.Error())
						} else if wctx.Err() == nil {
							r.cycles++
							r.waits = append(r.waits, wait)
						}
						mu.Unlock()
						if err != nil {
							return
						}
					}
				}()
			}
			wg.Wait()
			cancel()
			fmt.Printf("  W2 round %d %s: %d cycles so far, %.1fs incl. drain\n", round, t.name, r.cycles, time.Since(start).Seconds())
		}
	}
	window := b.o.contend.Seconds() * float64(b.o.rounds)
	rate, p99, p50 := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, t := range b.targets {
		r := results[t.name]
		rate[t.name] = float64(r.cycles) / window
		p50[t.name] = poller.Percentile(r.waits, 50)
		p99[t.name] = poller.Percentile(r.waits, 99)
		if len(r.errs) > 0 {
			b.rep.note("W2 %s: %d client errors, first: %s", t.name, len(r.errs), firstLine(r.errs[0]))
		}
	}
	b.rep.add("2", fmt.Sprintf("contention cycles/s (%d clients, 4 locks)", b.o.clients), "1/s", rate)
	b.rep.add("2", "contention wait p50 (clone+acquire)", "s", p50)
	b.rep.add("2", "contention wait p99 (clone+acquire)", "s", p99)
	// Invariants: poolgate check over the whole history of both servers'
	// repos (the baseline has no validation; it is checked for contrast).
	viol := map[string]float64{}
	for _, x := range []struct{ name, dir string }{
		{"poolgate", filepath.Join(b.pgData, "repos", "locks.git")},
		{"openssh", filepath.Join(b.sshd.repos, "locks.git")},
	} {
		cmd := exec.CommandContext(ctx, b.o.poolgate, "check", "--config", b.pgCfg, "--repo", x.dir, "--name", "locks")
		cmd.Env = append(append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1"), safeEnv...)
		out, err := cmd.CombinedOutput()
		n := 0
		if err != nil {
			n = strings.Count(string(out), "\n")
			b.rep.note("poolgate check on %s's repo: %v: %s", x.name, err, firstLine(string(out)))
		}
		viol[x.name] = float64(n)
		fmt.Printf("  poolgate check (%s): %s\n", x.name, firstLine(string(out)))
	}
	b.rep.add("2", "poolgate check violations, whole history", "", viol)
	return nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// w6Polling is what every waiting build does every retry_delay: a fetch
// with nothing new, 8 at a time in a loop.
func (b *bench) w6Polling(ctx context.Context) error {
	count := map[string]int{}
	total := map[string]float64{}
	ownTotal := map[string]float64{}
	statTotal := map[string]float64{}
	clientTotal := map[string]float64{}
	clones := map[string][]*poolclient.Client{}
	for _, t := range b.withVariants() {
		for i := 0; i < b.o.pollers; i++ {
			c := b.client(t, "bench", b.scratch("w6"))
			if err := c.Clone(ctx); err != nil {
				return err
			}
			clones[t.name] = append(clones[t.name], c)
		}
	}
	for round := 0; round < b.o.rounds; round++ {
		for _, t := range b.withVariants() {
			pid := t.srv.pid()
			quiesce(pid)
			ownBefore, _, _ := cpuSplit(pid)
			cpuBefore, statBefore, clientBefore := t.srv.cpuMs(), t.srv.statMs(), b.clientMs()
			wctx, cancel := context.WithTimeout(ctx, b.o.poll)
			if round == 0 && t.name == "poolgate" {
				b.profile(wctx, "w6-polling", b.o.poll-time.Second)
			}
			var n atomic.Int64
			var wg sync.WaitGroup
			var firstErr atomic.Value
			for _, c := range clones[t.name] {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for wctx.Err() == nil {
						if _, err := c.Git(wctx, "fetch", "origin"); err != nil {
							if wctx.Err() == nil {
								firstErr.CompareAndSwap(nil, err.Error())
							}
							return
						}
						if wctx.Err() == nil {
							n.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			cancel()
			quiesce(pid)
			ownAfter, _, _ := cpuSplit(pid)
			count[t.name] += int(n.Load())
			total[t.name] += t.srv.cpuMs() - cpuBefore
			statTotal[t.name] += t.srv.statMs() - statBefore
			clientTotal[t.name] += b.clientMs() - clientBefore
			ownTotal[t.name] += float64(ownAfter-ownBefore) * tickMs
			if e := firstErr.Load(); e != nil {
				b.rep.note("W6 %s: fetch failed: %s", t.name, firstLine(e.(string)))
			}
		}
	}
	rate, cpu, own, stat, client := map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, t := range b.withVariants() {
		rate[t.name] = float64(count[t.name]) / (b.o.poll.Seconds() * float64(b.o.rounds))
		if count[t.name] > 0 {
			cpu[t.name] = total[t.name] / float64(count[t.name])
			own[t.name] = ownTotal[t.name] / float64(count[t.name])
			stat[t.name] = statTotal[t.name] / float64(count[t.name])
			client[t.name] = clientTotal[t.name] / float64(count[t.name])
		}
	}
	b.rep.add("6", fmt.Sprintf("no-op fetches/s (%d parallel loops)", b.o.pollers), "1/s", rate)
	b.rep.add("6", "server CPU per no-op fetch", "ms", cpu)
	b.rep.add("6", "  of which the listener process itself", "ms", own)
	b.rep.add("6", "  same, as /proc/PID/stat fields 14-17 see it", "ms", stat)
	if b.clientCG != nil {
		b.rep.add("6", "client CPU per no-op fetch (git + ssh)", "ms", client)
	}
	return nil
}

// w3Clone clones the big pool repo before and after maintenance.
func (b *bench) w3Clone(ctx context.Context) error {
	measure := func(state string) error {
		durs := map[string][]float64{}
		cpu := map[string]float64{}
		ccpu := map[string]float64{}
		for i := 0; i < b.o.clones; i++ {
			for _, t := range b.targets {
				dir := b.scratch("w3")
				quiesce(t.srv.pid())
				before, cbefore := t.srv.cpuMs(), b.clientMs()
				start := time.Now()
				cmd := exec.CommandContext(ctx, "git", "clone", "-q", "--single-branch", "--branch", "master", t.url("big"), dir)
				cmd.Env = append(os.Environ(), t.env(b.home())...)
				out, err := cmd.CombinedOutput()
				d := time.Since(start)
				if err != nil {
					return fmt.Errorf("clone from %s: %v: %s", t.name, err, out)
				}
				quiesce(t.srv.pid())
				durs[t.name] = append(durs[t.name], d.Seconds())
				cpu[t.name] += t.srv.cpuMs() - before
				ccpu[t.name] += b.clientMs() - cbefore
				os.RemoveAll(dir)
			}
		}
		med, scpu := map[string]float64{}, map[string]float64{}
		for _, t := range b.targets {
			med[t.name] = poller.Percentile(durs[t.name], 50)
			scpu[t.name] = cpu[t.name] / float64(b.o.clones)
			ccpu[t.name] /= float64(b.o.clones)
		}
		b.rep.add("3", fmt.Sprintf("clone %d commits, %s, median", b.o.commits, state), "s", med)
		b.rep.add("3", fmt.Sprintf("server CPU per clone, %s", state), "ms", scpu)
		if b.clientCG != nil {
			b.rep.add("3", fmt.Sprintf("client CPU per clone, %s", state), "ms", ccpu)
		}
		return nil
	}
	if err := measure("as generated"); err != nil {
		return err
	}
	// poolgate: restart with maintenance on; it maintains repos that lack
	// a bitmap or commit-graph at start, in the background.
	start := time.Now()
	if err := b.startPoolgate(ctx, true); err != nil {
		return err
	}
	b.targets[0].srv = b.pg
	deadline := time.Now().Add(10 * time.Minute)
	for countLogLines(b.pg.log, "repacked", "repo", "big") == 0 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.rep.note("poolgate did not log 'repacked' for repo big within 10 minutes; 'after' is not after maintenance")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("  poolgate maintenance of big done %.1fs after restart\n", time.Since(start).Seconds())
	b.settle(ctx)
	// The baseline, maintained by hand as its owner would: first git's
	// standard (what the issue names), then exactly poolgate's commands.
	bigBase := filepath.Join(b.sshd.repos, "big.git")
	maintain := func(steps [][]string) error {
		start := time.Now()
		for _, args := range steps {
			if err := gitRun(ctx, bigBase, args...); err != nil {
				return err
			}
		}
		fmt.Printf("  baseline maintenance of big took %.1fs\n", time.Since(start).Seconds())
		return chownR(bigBase, mustUID(), mustGID())
	}
	if err := maintain([][]string{
		{"repack", "-a", "-d", "-k", "-q", "--write-bitmap-index"},
		{"commit-graph", "write", "--reachable"},
	}); err != nil {
		return err
	}
	if err := measure("after maintenance (baseline: git repack -adk --write-bitmap-index)"); err != nil {
		return err
	}
	// daemon/maintain_policy.go's first run, by hand.
	if err := maintain([][]string{
		{"config", "pack.compression", "0"},
		{"repack", "-a", "-d", "-k", "-q", "--write-bitmap-index", "-F"},
		{"commit-graph", "write", "--reachable"},
	}); err != nil {
		return err
	}
	return measure("after maintenance (baseline: poolgate's commands)")
}

// w5Memory reads the daemon's resident memory idle and while many clones
// of the small repo run at once.
func (b *bench) w5Memory(ctx context.Context) error {
	idle := map[string]float64{}
	peak := map[string]float64{}
	tree := map[string]float64{}
	idleCPU := map[string]float64{}
	for _, t := range b.targets[:2] { // one per server
		pid := t.srv.pid()
		quiesce(pid)
		// Background work (maintenance, events, webhooks) shows here and
		// is in every per-operation CPU figure too.
		c0 := t.srv.cpuMs()
		time.Sleep(3 * time.Second)
		idleCPU[t.name] = (t.srv.cpuMs() - c0) / 3
		idle[t.name] = float64(rssKiB(pid)) / 1024
		stop := make(chan struct{})
		var maxOwn, maxTree int64
		var sampler sync.WaitGroup
		sampler.Add(1)
		go func() {
			defer sampler.Done()
			for {
				own := rssKiB(pid)
				all := own
				for _, c := range descendants(pid) {
					all += rssKiB(c)
				}
				maxOwn = max(maxOwn, own)
				maxTree = max(maxTree, all)
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
		var wg sync.WaitGroup
		errs := atomic.Int64{}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		for i := 0; i < b.o.concur; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dir := b.scratch("w5")
				cmd := exec.CommandContext(cctx, "git", "clone", "-q", "--single-branch", "--branch", "master", t.url("locks"), dir)
				cmd.Env = append(os.Environ(), t.env(b.home())...)
				if out, err := cmd.CombinedOutput(); err != nil {
					if errs.Add(1) == 1 {
						fmt.Printf("  W5 %s clone failed: %v: %s\n", t.name, err, firstLine(string(out)))
					}
				}
				os.RemoveAll(dir)
			}()
		}
		wg.Wait()
		cancel()
		close(stop)
		sampler.Wait()
		peak[t.name] = float64(maxOwn) / 1024
		tree[t.name] = float64(maxTree) / 1024
		if errs.Load() > 0 {
			b.rep.note("W5 %s: %d of %d concurrent clones failed", t.name, errs.Load(), b.o.concur)
		}
	}
	b.rep.add("5", "server CPU while idle", "ms/s", idleCPU)
	b.rep.add("5", "server RSS idle (listener process)", "MiB", idle)
	b.rep.add("5", fmt.Sprintf("server RSS peak, %d concurrent clones (listener)", b.o.concur), "MiB", peak)
	b.rep.add("5", fmt.Sprintf("server RSS peak, %d clones (listener + children)", b.o.concur), "MiB", tree)
	return nil
}

// w4Hook times `poolgate hook pre-receive` alone on one new claim commit on
// top of a short and a long history.
func (b *bench) w4Hook(ctx context.Context) error {
	p50, cpu := map[string]float64{}, map[string]float64{}
	for _, size := range []int{100, b.o.commits} {
		dir := b.scratch("w4") + ".git"
		if err := genPoolRepo(ctx, dir, "big", size); err != nil {
			return err
		}
		tip, err := gitOut(ctx, dir, "rev-parse", "refs/heads/master")
		if err != nil {
			return err
		}
		commit, err := claimCommit(ctx, dir, tip)
		if err != nil {
			return err
		}
		var walls, cpus []float64
		for i := 0; i < b.o.hookRuns; i++ {
			cmd := exec.CommandContext(ctx, b.o.poolgate, "hook", "pre-receive")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "POOLGATE_CONFIG="+b.pgCfg,
				"POOLGATE_REPO=big", "POOLGATE_USER=bench", "POOLGATE_ROLE=write")
			cmd.Stdin = strings.NewReader(tip + " " + commit + " refs/heads/master\n")
			start := time.Now()
			out, err := cmd.CombinedOutput()
			walls = append(walls, time.Since(start).Seconds()*1000)
			if err != nil {
				return fmt.Errorf("hook at %d commits: %v: %s", size, err, out)
			}
			ps := cmd.ProcessState
			cpus = append(cpus, (ps.UserTime()+ps.SystemTime()).Seconds()*1000)
		}
		key := fmt.Sprintf("%d commits", size)
		p50[key] = poller.Percentile(walls, 50)
		cpu[key] = poller.Percentile(cpus, 50)
		os.RemoveAll(dir)
	}
	b.rep.add("4", "hook wall time p50 (poolgate hook alone)", "ms", p50)
	b.rep.add("4", "hook CPU p50 (incl. its git children)", "ms", cpu)
	return nil
}

// claimCommit makes, with plumbing, the commit a stock client would push
// next: claiming the first unclaimed lock.
func claimCommit(ctx context.Context, dir, tip string) (string, error) {
	ls, err := gitOut(ctx, dir, "ls-tree", tip, "big/unclaimed/")
	if err != nil {
		return "", err
	}
	var mode, blob, name string
	for _, line := range strings.Split(ls, "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && !strings.HasPrefix(filepath.Base(f[3]), ".") {
			mode, blob, name = f[0], f[2], filepath.Base(f[3])
			break
		}
	}
	if name == "" {
		return "", errors.New("no unclaimed lock at the tip")
	}
	idx := filepath.Join(dir, "bench-index")
	defer os.Remove(idx)
	run := func(stdin string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_INDEX_FILE="+idx, "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_NAME=git", "GIT_AUTHOR_EMAIL=git@localhost", "GIT_COMMITTER_NAME=git", "GIT_COMMITTER_EMAIL=git@localhost")
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	if _, err := run("", "read-tree", tip); err != nil {
		return "", err
	}
	info := fmt.Sprintf("0 %s\tbig/unclaimed/%s\n%s %s\tbig/claimed/%s\n", strings.Repeat("0", 40), name, mode, blob, name)
	if _, err := run(info, "update-index", "--index-info"); err != nil {
		return "", err
	}
	tree, err := run("", "write-tree")
	if err != nil {
		return "", err
	}
	return run("", "commit-tree", tree, "-p", tip, "-m", "claiming: "+name+"\nBuild URL: https://ci.example.com/b/1")
}

// profile fetches a CPU profile of the daemon in the background, when the
// harness runs with -pprof DIR (poolgate then serves pprof on loopback).
func (b *bench) profile(ctx context.Context, name string, d time.Duration) {
	if b.o.pprofDir == "" || b.pprofAddr == "" || d < time.Second {
		return
	}
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.pprofAddr, int(d.Seconds()))
		out := filepath.Join(b.o.pprofDir, name+".pprof")
		cmd := exec.Command("curl", "-sS", "-o", out, url)
		if o, err := cmd.CombinedOutput(); err != nil {
			fmt.Printf("  pprof %s: %v: %s\n", name, err, o)
			return
		}
		fmt.Printf("  pprof %s written to %s\n", name, out)
	}()
}

// w1Profile, with -pprof only: acquire+release cycles against poolgate alone
// while a CPU profile is taken.
func (b *bench) w1Profile(ctx context.Context) error {
	if b.o.pprofDir == "" {
		return nil
	}
	t := b.targets[0]
	pctx, cancel := context.WithTimeout(ctx, b.o.profileFor)
	defer cancel()
	b.profile(pctx, "w1-acquire-release", b.o.profileFor-time.Second)
	pid := t.srv.pid()
	quiesce(pid)
	own0, _, _ := cpuSplit(pid)
	all0 := t.srv.cpuMs()
	n := 0
	for pctx.Err() == nil {
		if _, err := b.cycle(pctx, t, "bench", nil); err != nil {
			if pctx.Err() != nil {
				break
			}
			return err
		}
		n++
	}
	time.Sleep(2 * time.Second) // let the profile arrive
	quiesce(pid)
	own1, _, _ := cpuSplit(pid)
	all1 := t.srv.cpuMs()
	if n > 0 {
		own := float64(own1-own0) * tickMs / float64(n)
		b.rep.note("profile pass: %d poolgate cycles; daemon's own CPU %.1f ms/cycle, its children's (git, hook) %.1f ms/cycle",
			n, own, (all1-all0)/float64(n)-own)
	}
	return nil
}
