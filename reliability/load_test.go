package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/events"
	"github.com/poolgate/poolgate/internal/poolclient"
)

// load is a run of stock-like clients, each claiming any free lock and
// releasing it, over and over, until stop.
type load struct {
	e        *env
	clients  int
	tolerant bool // a crash is under way: failed steps are expected, re-run like a build would

	ops      atomic.Int64 // acquire and release steps that succeeded
	gitFails atomic.Int64 // failed git commands (failed steps and pushes retried as unexpected)
	// Push attempts, and those that lost a race ("[rejected]": another
	// client pushed first, or the pool was at max_claimed): retried.
	pushes, conflicts atomic.Int64

	mu       sync.Mutex
	longest  time.Duration // the longest acquire, waiting included
	failures []string
	accepted map[string]string // commit the client was told landed → op
	holds    map[string]bool   // locks a crashed step may have left claimed, resolved at the end
}

func newLoad(e *env, clients int) *load {
	return &load{e: e, clients: clients, accepted: map[string]string{}, holds: map[string]bool{}}
}

func (l *load) step(d time.Duration) {
	l.mu.Lock()
	l.longest = max(l.longest, d)
	l.mu.Unlock()
}

func (l *load) fail(format string, args ...any) {
	l.gitFails.Add(1)
	l.mu.Lock()
	if len(l.failures) < 20 {
		l.failures = append(l.failures, fmt.Sprintf(format, args...))
	}
	l.mu.Unlock()
}

// run drives the clients until stop is closed, then lets every client end
// its current step (a held lock is released) and returns.
func (l *load) run(stop <-chan struct{}) {
	var wg sync.WaitGroup
	for i := 0; i < l.clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			l.client(i, stop)
		}(i)
	}
	wg.Wait()
}

func (l *load) client(i int, stop <-chan struct{}) {
	gen := 0
	fresh := func() *poolclient.Client {
		gen++
		c := l.e.client("writer", fmt.Sprintf("c%02d-%d", i, gen))
		c.RetryDelay = 500 * time.Millisecond
		c.Stop = stop
		return c
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	// A step waits for a free lock as long as it takes, as pool-resource
	// does (with 32 clients on 3 slots, minutes in a long run: the server
	// promises no fairness); the bound only turns a hang into a failure.
	stepCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 15*time.Minute)
	}
	c := fresh()
	for {
		ctx, cancel := stepCtx()
		err := c.Clone(ctx)
		cancel()
		if err == nil {
			break
		}
		l.fail("client %d: clone: %v", i, err)
		if !l.tolerant || stopped() {
			return
		}
		c = fresh()
	}
	for !stopped() {
		ctx, cancel := stepCtx()
		st := time.Now()
		name, err := c.Acquire(ctx)
		cancel()
		l.step(time.Since(st))
		l.countUnexpected(c)
		if errors.Is(err, poolclient.ErrStopped) {
			return // the test's end while waiting for a lock
		}
		if err != nil {
			l.fail("client %d: acquire: %v", i, err)
			if !l.tolerant {
				return
			}
			// The step failed: its claim may or may not have landed. A
			// re-run of the job (a fresh clone) finds out and releases.
			l.noteHold(name)
			c = l.reclone(i, fresh)
			if c == nil {
				return
			}
			continue
		}
		l.accept(c, "acquire "+name)
		// A release always runs to its end, as a build's ensure step does.
		ctx, cancel = stepCtx()
		c.Stop = nil
		err = c.Release(ctx, name)
		c.Stop = stop
		cancel()
		l.countUnexpected(c)
		if err != nil {
			l.fail("client %d: release %s: %v", i, name, err)
			if !l.tolerant {
				return
			}
			l.noteHold(name)
			c = l.reclone(i, fresh)
			if c == nil {
				return
			}
			continue
		}
		l.accept(c, "release "+name)
	}
}

// countUnexpected adds the pushes a client retried as "unexpected" (not a
// rejection): each is a failed git command even if a retry then worked.
func (l *load) countUnexpected(c *poolclient.Client) {
	st := c.Stats()
	l.pushes.Add(int64(st.Pushes))
	l.conflicts.Add(int64(st.Conflicts))
	if st.Unexpected > 0 {
		l.fail("pushes failed unexpectedly %d times; last: %s", st.Unexpected, strings.TrimSpace(st.LastPush))
	}
	// Stats are cumulative per client; count each once.
	*c = poolclient.Client{URL: c.URL, Branch: c.Branch, Pool: c.Pool, Dir: c.Dir, Env: c.Env, RetryDelay: c.RetryDelay, BuildURL: c.BuildURL, Stop: c.Stop}
}

func (l *load) accept(c *poolclient.Client, op string) {
	l.ops.Add(1)
	head, err := c.Git(context.Background(), "rev-parse", "HEAD")
	if err != nil {
		l.fail("rev-parse: %v", err)
		return
	}
	l.mu.Lock()
	l.accepted[strings.TrimSpace(head)] = op
	l.mu.Unlock()
}

func (l *load) noteHold(name string) {
	if name == "" {
		return
	}
	l.mu.Lock()
	l.holds[name] = true
	l.mu.Unlock()
}

func (l *load) reclone(i int, fresh func() *poolclient.Client) *poolclient.Client {
	for try := 0; try < 30; try++ {
		c := fresh()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := c.Clone(ctx)
		cancel()
		if err == nil {
			return c
		}
		l.fail("client %d: re-clone: %v", i, err)
		time.Sleep(500 * time.Millisecond)
	}
	return nil
}

// releaseLeftovers releases, as an admin would, locks that crashed steps
// may have left claimed.
func (l *load) releaseLeftovers(t *testing.T) {
	if len(l.holds) == 0 {
		return
	}
	c := l.e.client("writer", "cleanup")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Clone(ctx); err != nil {
		t.Fatalf("cleanup clone: %v", err)
	}
	for name := range l.holds {
		if err := c.Release(ctx, name); err != nil && !errors.Is(err, poolclient.ErrNotClaimed) {
			t.Errorf("cleanup release %s: %v", name, err)
		}
	}
}

// maxClaimed replays the branch's first-parent history and returns the
// largest number of locks claimed at once in pool demo, and the commits.
func maxClaimed(t *testing.T, e *env) (most int, commits []string) {
	cmd := exec.Command("git", "log", "--reverse", "--first-parent", "--no-renames", "--format=%x00%H", "--name-status", "refs/heads/master")
	cmd.Dir = filepath.Join(e.data, "repos", "locks.git")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	claimed := map[string]bool{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if h, ok := strings.CutPrefix(line, "\x00"); ok {
			commits = append(commits, h)
			continue
		}
		st, path, ok := strings.Cut(line, "\t")
		if !ok {
			continue
		}
		name, ok := strings.CutPrefix(path, "demo/claimed/")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		switch st {
		case "A":
			claimed[name] = true
		case "D":
			delete(claimed, name)
		}
		most = max(most, len(claimed))
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	return most, commits
}

// checkHistory asserts what every load test asserts afterwards: `poolgate
// check` finds nothing, no state had more than 3 claimed, every push a
// client was told landed is in history, and git fsck is clean.
func checkHistory(t *testing.T, e *env, l *load) (commits, lost int) {
	repo := filepath.Join(e.data, "repos", "locks.git")
	check := exec.Command(binPath, "check", "--config", e.cfgFile, "--repo", repo)
	check.Env = append(os.Environ(), "REL_WEBHOOK_SECRET="+webhookSecret)
	out, err := check.CombinedOutput()
	if err != nil {
		t.Errorf("poolgate check: %v\n%s", err, out)
	}
	most, all := maxClaimed(t, e)
	if most > 3 {
		t.Errorf("history has a state with %d locks claimed in pool demo (max_claimed: 3)", most)
	}
	inHistory := map[string]bool{}
	for _, c := range all {
		inHistory[c] = true
	}
	for c, op := range l.accepted {
		if !inHistory[c] {
			lost++
			t.Errorf("push of %s (%s) was accepted but is not in history", c, op)
		}
	}
	if out, err := e.git("", "fsck", "--full", "--strict", "--no-dangling"); err != nil {
		t.Errorf("git fsck: %v\n%s", err, out)
	}
	return len(all), lost
}

// Load: 32 stock-like clients on a 4-lock pool with max_claimed 3.
func TestLoad32StockClientsOnFourLocksNeverBreakARule(t *testing.T) {
	e := newEnv(t)
	e.writeConfig()
	pid := e.start()
	dur := scale(30*time.Second, 5*time.Minute)
	l := newLoad(e, 32)
	stop := make(chan struct{})
	time.AfterFunc(dur, func() { close(stop) })
	start := time.Now()
	l.run(stop)
	elapsed := time.Since(start)
	rss := rssKB(pid)
	commits, lost := checkHistory(t, e, l)
	if n := l.gitFails.Load(); n > 0 {
		t.Errorf("%d failed git commands, e.g.:\n%s", n, strings.Join(l.failures, "\n"))
	}
	figures(t, "load", "clients", l.clients, "operations", l.ops.Load(), "pushes", l.pushes.Load(), "pushes_retried", l.conflicts.Load(), "commits", commits, "duration", elapsed.Round(time.Second),
		"failures", l.gitFails.Load(), "accepted_pushes_lost", lost, "longest_acquire", l.longest.Round(time.Millisecond), "daemon_rss_kib", rss)
}

// Restart under load: twice a hand-over (SIGUSR2: the daemon re-execs
// itself with the listening socket) and once a systemd-style restart
// (SIGTERM, drain, start again on the socket the test holds, as systemd
// socket activation holds it). No git command may fail.
func TestRestartsUnderLoadFailNoGitCommand(t *testing.T) {
	rc := newReceiver(t)
	e := newEnv(t)
	e.Webhook = rc.srv.URL + "/hook"
	e.writeConfig()
	pid := e.start()
	base := e.tip()
	dur := scale(36*time.Second, 5*time.Minute)
	l := newLoad(e, 32)
	stop := make(chan struct{})
	done := make(chan struct{})
	start := time.Now()
	go func() { l.run(stop); close(done) }()

	restarts := 0
	step := dur / 4
	time.Sleep(step)
	old := pid
	pid = e.handover(pid)
	if !e.waitExit(old, 2*time.Minute) {
		t.Errorf("old process %d still running after the hand-over", old)
	}
	restarts++
	time.Sleep(step)
	// systemd-style: stop, wait for the drain to end, start.
	syscall.Kill(pid, syscall.SIGTERM)
	if !e.waitExit(pid, 2*time.Minute) {
		t.Fatalf("daemon %d did not stop on SIGTERM", pid)
	}
	pid = e.start()
	restarts++
	time.Sleep(step)
	old = pid
	pid = e.handover(pid)
	e.waitExit(old, 2*time.Minute)
	restarts++
	time.Sleep(dur - 3*step)
	close(stop)
	<-done
	elapsed := time.Since(start)
	commits, lost := checkHistory(t, e, l)
	if n := l.gitFails.Load(); n > 0 {
		t.Errorf("%d failed git commands across %d restarts, e.g.:\n%s", n, restarts, strings.Join(l.failures, "\n"))
	}
	if n := len(e.logs.find("drain timeout: closing remaining connections")); n > 0 {
		t.Errorf("%d drains ran out of time", n)
	}
	want := expectedEvents(t, e, base)
	lostEvents := undelivered(t, rc, want)
	figures(t, "restart", "clients", l.clients, "operations", l.ops.Load(), "pushes", l.pushes.Load(), "pushes_retried", l.conflicts.Load(), "commits", commits, "restarts", restarts,
		"duration", elapsed.Round(time.Second), "failures", l.gitFails.Load(), "accepted_pushes_lost", lost,
		"events_expected", len(want), "events_lost", len(lostEvents), "longest_acquire", l.longest.Round(time.Millisecond))
}

// SIGKILL under load, then start: nothing the clients were told is lost,
// the repo is sound, and every event of every landed commit reaches the
// webhook (by id, at least once).
func TestSIGKILLUnderLoadLosesNoAcceptedPushOrEvent(t *testing.T) {
	rc := newReceiver(t)
	e := newEnv(t)
	e.Webhook = rc.srv.URL + "/hook"
	e.writeConfig()
	pid := e.start()
	base := e.tip()
	dur := scale(30*time.Second, 5*time.Minute)
	l := newLoad(e, 32)
	l.tolerant = true
	stop := make(chan struct{})
	done := make(chan struct{})
	start := time.Now()
	go func() { l.run(stop); close(done) }()
	kills := 0
	for _, at := range []time.Duration{dur / 3, dur / 3} {
		time.Sleep(at)
		syscall.Kill(pid, syscall.SIGKILL)
		e.waitExit(pid, time.Minute)
		kills++
		pid = e.start()
	}
	time.Sleep(dur - 2*(dur/3))
	close(stop)
	<-done
	l.releaseLeftovers(t)
	elapsed := time.Since(start)
	commits, lostPushes := checkHistory(t, e, l)

	// Every claim and release that landed after the webhook existed has
	// its event, with the id events.ID gives it, delivered.
	want := expectedEvents(t, e, base)
	lost := undelivered(t, rc, want)
	if strings.Contains(e.logs.String(), webhookSecret) || strings.Contains(e.logs.String(), strings.TrimPrefix(webhookSecret, "whsec_")) {
		t.Error("the webhook secret appears in the daemon's log")
	}
	figures(t, "sigkill", "clients", l.clients, "operations", l.ops.Load(), "pushes", l.pushes.Load(), "pushes_retried", l.conflicts.Load(), "commits", commits, "kills", kills,
		"duration", elapsed.Round(time.Second), "failed_steps_during_kills", l.gitFails.Load(),
		"accepted_pushes_lost", lostPushes, "events_expected", len(want), "events_lost", len(lost), "events_received", rc.count())
}

// undelivered waits (bounded) until the receiver has every wanted event id
// and returns those it never got.
func undelivered(t *testing.T, rc *receiver, want []string) []string {
	deadline := time.Now().Add(2 * time.Minute)
	var lost []string
	for {
		lost = lost[:0]
		for _, id := range want {
			if !rc.has(id) {
				lost = append(lost, id)
			}
		}
		if len(lost) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d events never delivered, e.g. %v", len(lost), len(want), lost[:min(5, len(lost))])
	}
	return lost
}

// expectedEvents derives, independently of the events package's deriver,
// the ids of the claimed/released events of every commit after base.
func expectedEvents(t *testing.T, e *env, base string) []string {
	out := e.mustGit("", "log", "--reverse", "--first-parent", "--no-renames", "--format=%x00%H", "--name-status", base+"..refs/heads/master")
	var ids []string
	commit := ""
	for _, line := range strings.Split(out, "\n") {
		if h, ok := strings.CutPrefix(line, "\x00"); ok {
			commit = h
			continue
		}
		st, path, ok := strings.Cut(line, "\t")
		if !ok || st != "A" {
			continue
		}
		switch {
		case strings.HasPrefix(path, "demo/claimed/"):
			ids = append(ids, events.ID("locks", commit, "demo", strings.TrimPrefix(path, "demo/claimed/"), events.Claimed))
		case strings.HasPrefix(path, "demo/unclaimed/"):
			ids = append(ids, events.ID("locks", commit, "demo", strings.TrimPrefix(path, "demo/unclaimed/"), events.Released))
		}
	}
	if len(ids) == 0 {
		t.Fatal("no claims or releases landed")
	}
	return ids
}
