package web_test

import (
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/testserver"
)

type waiterDoc struct {
	BuildURL string `json:"build_url"`
	Team     string
	Pipeline string
	Job      string
	Build    string
	FirstTry time.Time `json:"first_try"`
	LastTry  time.Time `json:"last_try"`
	Tries    int
}

type waitingDoc struct {
	Pools []struct {
		Name    string
		Waiting []waiterDoc
	}
}

// pollWaiting polls the pools API until ok accepts the pool's waiters.
func pollWaiting(t *testing.T, s *testserver.Server, pool, what string, ok func([]waiterDoc) bool) []waiterDoc {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var doc waitingDoc
		getJSON(t, "http://"+s.HTTPAddr+"/api/v1/repos/locks/pools", token, &doc)
		for _, p := range doc.Pools {
			if p.Name == pool && p.Waiting != nil && ok(p.Waiting) {
				return p.Waiting
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting in %s never %s: %+v", pool, what, doc)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A stock-like client refused over max_claimed keeps retrying: it shows as
// a waiter (API and `poolgate status`) while it does, and is gone once its
// claim lands.
func TestABuildWaitingOverMaxClaimedIsShownThenDroppedWhenItGetsIn(t *testing.T) {
	f := testserver.New(t, testserver.Options{Token: token, Pools: "[{name: staging, max_claimed: 1, locks: [env-a, env-b]}]"})
	s := f.Start()
	holder := s.Client("holder", "staging", buildURL)
	if err := holder.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "env-a", "claimed")

	// Pre-1.8 messages carry team/pipeline/job/build in the subject, which
	// is what the hook records of a refused commit.
	waiter := s.Client("waiter", "staging", "")
	waiter.OldPrefix = "main/p/smoke build 7"
	got := make(chan error, 1)
	go func() {
		_, err := waiter.Acquire(ctx(t))
		got <- err
	}()
	ws := pollWaiting(t, s, "staging", "showed the waiting build", func(ws []waiterDoc) bool {
		return len(ws) == 1 && ws[0].Tries >= 2
	})
	w := ws[0]
	if w.Team != "main" || w.Pipeline != "p" || w.Job != "smoke" || w.Build != "7" ||
		w.FirstTry.IsZero() || w.LastTry.Before(w.FirstTry) {
		t.Fatalf("waiter %+v", w)
	}
	out := f.Run("status", "--config", f.Config)
	if !strings.Contains(out, "Waiting") || !strings.Contains(out, "p/smoke #7") {
		t.Fatalf("poolgate status does not show the waiting build:\n%s", out)
	}

	if err := holder.Release(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the waiting client never got in after the release")
	}
	pollWaiting(t, s, "staging", "dropped the build that got in", func(ws []waiterDoc) bool { return len(ws) == 0 })
	out = f.Run("status", "--config", f.Config)
	if strings.Contains(out, "Waiting") {
		t.Fatalf("poolgate status still shows a waiter after it got in:\n%s", out)
	}
}
