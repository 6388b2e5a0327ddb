package events

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/rs/zerolog"
)

// gitCounter puts a `git` first on PATH that logs each run, then runs the
// real one: any git process this test process starts is seen.
func gitCounter(t *testing.T) (runs func() []string) {
	real, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "runs")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %q\nexec %q \"$@\"\n", log, real)
	if err := os.WriteFile(filepath.Join(dir, "git"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return func() []string {
		b, _ := os.ReadFile(log)
		return strings.Fields(strings.ReplaceAll(string(b), " ", "_"))
	}
}

// runService runs a service until the test ends (or stop is called).
func runService(t *testing.T, cfg *config.Config, poll time.Duration) (svc *Service, stop func()) {
	t.Helper()
	svc, err := NewService(config.NewLive(cfg), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	svc.SafetyPoll = poll
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	stop = func() {
		cancel()
		<-done
		svc.Store.Close()
	}
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			stop()
		}
	})
	return svc, stop
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func eventsOf(t *testing.T, st *Store, typ string) []Event {
	evs, err := st.Events(context.Background(), Query{Repo: "locks", Types: []string{typ}})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// idleWindow watches a running service for a while (the safety poll runs
// many times in it) and fails if it started any git process or synced.
func idleWindow(t *testing.T, svc *Service, runs func() []string) {
	t.Helper()
	before, syncs := len(runs()), svc.Deriver("locks").syncs.Load()
	time.Sleep(300 * time.Millisecond)
	if got := runs(); len(got) != before {
		t.Fatalf("an idle service started git: %v", got[before:])
	}
	if n := svc.Deriver("locks").syncs.Load() - syncs; n != 0 {
		t.Fatalf("an idle service synced %d times", n)
	}
}

func TestIdleServiceStartsNoGitYetDerivesAPushWhenToldAndAChangeBehindItsBackByStat(t *testing.T) {
	runs := gitCounter(t)
	data := t.TempDir()
	r := newWorkRepoAt(t, filepath.Join(data, "repos", "locks.git"))
	r.write("staging/unclaimed/env-a", "a")
	r.commit(time.Time{}, "init")
	cfg := &config.Config{DataDir: data, Repos: []config.Repo{*testRepoCfg()}}

	// Told by the push path: no safety poll in this part.
	svc, stop := runService(t, cfg, time.Hour)
	waitUntil(t, "the history derived", 30*time.Second, func() bool { return len(eventsOf(t, svc.Store, Added)) == 1 })
	idleWindow(t, svc, runs)
	r.move(time.Time{}, "staging", "env-a", "unclaimed", "claimed", "claiming: env-a")
	svc.Pushed("locks")
	waitUntil(t, "the pushed claim derived", 30*time.Second, func() bool { return len(eventsOf(t, svc.Store, Claimed)) == 1 })
	idleWindow(t, svc, runs)
	stop()

	// Nobody tells it: an admin's git on the server. The stat-only poll
	// runs every 10ms here, and still starts no git while nothing changes.
	svc, _ = runService(t, cfg, 10*time.Millisecond)
	waitUntil(t, "the first sync", 30*time.Second, func() bool { return svc.Deriver("locks").syncs.Load() > 0 })
	idleWindow(t, svc, runs)
	r.move(time.Time{}, "staging", "env-a", "claimed", "unclaimed", "unclaiming: env-a")
	waitUntil(t, "the release made behind its back derived", 30*time.Second, func() bool { return len(eventsOf(t, svc.Store, Released)) == 1 })
	idleWindow(t, svc, runs)
	pools, err := Pools(context.Background(), svc.Store, cfg, "locks", time.Now())
	if err != nil || len(pools) != 1 || len(pools[0].Locks) != 1 || pools[0].Locks[0].State != "unclaimed" || pools[0].Claimed != 0 {
		t.Fatalf("pools after the release: %v %+v", err, pools)
	}
}

func TestAClaimGoesStaleWhenDueWithoutAnyPushOrPoll(t *testing.T) {
	data := t.TempDir()
	r := newWorkRepoAt(t, filepath.Join(data, "repos", "locks.git"))
	r.write("staging/unclaimed/env-a", "a")
	r.commit(time.Time{}, "init")
	// Claimed now (committer time, whole seconds): due within 3s.
	r.move(time.Now(), "staging", "env-a", "unclaimed", "claimed", "claiming: env-a")
	rc := testRepoCfg()
	rc.Pools[0].StaleAfter = config.Duration(3 * time.Second)
	cfg := &config.Config{DataDir: data, Repos: []config.Repo{*rc}}
	svc, _ := runService(t, cfg, time.Hour)
	waitUntil(t, "the claim derived", 30*time.Second, func() bool { return len(eventsOf(t, svc.Store, Claimed)) == 1 })
	if n := len(eventsOf(t, svc.Store, Stale)); n != 0 {
		t.Fatalf("%d stale events before the claim was due", n)
	}
	if svc.Deriver("locks").NextDue().IsZero() {
		t.Fatal("no wake-up planned for a claim that will go stale")
	}
	waitUntil(t, "the stale event", 30*time.Second, func() bool { return len(eventsOf(t, svc.Store, Stale)) == 1 })
}

func TestStatusBesideARunningDaemonReadsAndNeverDerives(t *testing.T) {
	data := t.TempDir()
	unlock, err := LockDerivation(context.Background(), data, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDerivation(context.Background(), data, false); !errors.Is(err, ErrDeriving) {
		t.Fatalf("a second taker got %v, want ErrDeriving", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := LockDerivation(ctx, data, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a waiting taker got %v, want to wait until its context ended", err)
	}
	unlock()
	unlock, err = LockDerivation(context.Background(), data, false)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	unlock()
}
