package web_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/testserver"
)

// pollMetric scrapes until the sample of family with labels satisfies ok.
func pollMetric(t *testing.T, s *testserver.Server, family string, labels map[string]string, what string, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		v, found := value(scrape(t, s), family, labels)
		if found && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v never %s (last %v, found %v)", family, labels, what, v, found)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func gitIn(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@x", "GIT_COMMITTER_NAME=a",
		"GIT_COMMITTER_EMAIL=a@x", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// newUpstream makes a bare repo with one pool, for a watch-mode mirror.
func newUpstream(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	up, work := filepath.Join(root, "up.git"), filepath.Join(root, "work")
	gitIn(t, root, "init", "-q", "--bare", "-b", "master", up)
	gitIn(t, root, "clone", "-q", up, work)
	os.MkdirAll(filepath.Join(work, "p", "unclaimed"), 0o755)
	os.WriteFile(filepath.Join(work, "p", "unclaimed", "x"), nil, 0o644)
	gitIn(t, work, "add", "-A")
	gitIn(t, work, "commit", "-q", "-m", "init")
	gitIn(t, work, "push", "-q", "origin", "HEAD:master")
	return up
}

// startWaiter starts a stock-like acquire on pool that the test stops at
// its end (the pool is expected to be at max_claimed).
func startWaiter(t *testing.T, s *testserver.Server, pool, oldPrefix string) {
	stop := make(chan struct{})
	waiter := s.Client("waiter", pool, "")
	waiter.OldPrefix, waiter.Stop = oldPrefix, stop
	done := make(chan error, 1)
	c := ctx(t)
	go func() { _, err := waiter.Acquire(c); done <- err }()
	t.Cleanup(func() { close(stop); <-done })
}

// pushBadPath makes a permanent refusal: a directory inside unclaimed/.
func pushBadPath(t *testing.T, s *testserver.Server, pool string) {
	t.Helper()
	bad := s.Client("bad", pool, "")
	os.MkdirAll(filepath.Join(bad.Dir, pool, "unclaimed", "dir"), 0o755)
	os.WriteFile(filepath.Join(bad.Dir, pool, "unclaimed", "dir", "f"), nil, 0o644)
	bad.Git(ctx(t), "add", "-A")
	bad.Git(ctx(t), "commit", "-q", "-m", "nested")
	if out, _ := bad.Git(ctx(t), "push", "origin", "HEAD:master"); !strings.Contains(out, "bad-path") {
		t.Fatalf("nested dir not refused by bad-path:\n%s", out)
	}
}

// The alerting series exist at 0 from the start and then follow real
// pushes: a claim's age, a waiting build, a stale claim, refused pushes
// split by kind and rule, and watch-mode fetch health for a mirror whose
// upstream works and one whose upstream is gone.
func TestMetricsForAlertsExistAtZeroThenFollowRealPushes(t *testing.T) {
	up := newUpstream(t)

	f := testserver.New(t, testserver.Options{Token: token,
		Pools: "[{name: staging, max_claimed: 1, stale_after: 2s, locks: [env-a, env-b]}]",
		// Only stale events: the pool's creation at start is not sent (the
		// target would count a failure before the first scrape).
		Webhooks: "[{name: ops, url: 'http://127.0.0.1:9/never', format: json, events: [stale]}]",
		ExtraRepos: fmt.Sprintf(`  - name: mirror
    upstream: {url: %q, provider: github, secret: s3cret, poll_interval: 1h}
  - name: gone
    upstream: {url: %q, provider: github, secret: s3cret, poll_interval: 1h}`, up, filepath.Join(t.TempDir(), "missing.git"))})
	s := f.Start()

	fams := scrape(t, s)
	zero := []struct {
		family string
		labels map[string]string
	}{
		{"poolgate_pushes_total", map[string]string{"repo": "locks", "result": "rejected"}},
		{"poolgate_push_rejections_total", map[string]string{"repo": "locks", "rule": "over-limit"}},
		{"poolgate_push_rejections_total", map[string]string{"repo": "locks", "rule": "bad-path"}},
		{"poolgate_refused_pushes_total", map[string]string{"repo": "locks", "kind": "transient"}},
		{"poolgate_refused_pushes_total", map[string]string{"repo": "locks", "kind": "permanent"}},
		{"poolgate_waiting_builds", map[string]string{"repo": "locks", "pool": "staging"}},
		{"poolgate_stale_claims", map[string]string{"repo": "locks", "pool": "staging"}},
		{"poolgate_webhook_failures_total", map[string]string{"target": "ops"}},
		{"poolgate_claim_hold_seconds", map[string]string{"repo": "locks", "pool": "staging"}},
	}
	for _, z := range zero {
		if v, ok := value(fams, z.family, z.labels); !ok || v != 0 {
			t.Errorf("at start %s%v = %v (present %v), want a series at 0", z.family, z.labels, v, ok)
		}
	}
	// A lock's claim age is there, at 0, once the events service has read
	// the lock from the repo as it starts (no push needed).
	ageOfA := map[string]string{"repo": "locks", "pool": "staging", "lock": "env-a"}
	for i := 0; ; i++ {
		if v, ok := value(scrape(t, s), "poolgate_claim_age_seconds", ageOfA); ok {
			if v != 0 {
				t.Errorf("at start poolgate_claim_age_seconds%v = %v, want 0 for a free lock", ageOfA, v)
			}
			break
		}
		if i == 300 {
			t.Fatalf("poolgate_claim_age_seconds%v never appeared", ageOfA)
		}
		time.Sleep(100 * time.Millisecond)
	}

	holder := s.Client("holder", "staging", buildURL)
	if err := holder.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	startWaiter(t, s, "staging", "main/p/smoke build 9")

	st := map[string]string{"repo": "locks", "pool": "staging"}
	pollMetric(t, s, "poolgate_waiting_builds", st, "counted the waiting build", func(v float64) bool { return v == 1 })
	pollMetric(t, s, "poolgate_claim_age_seconds", map[string]string{"repo": "locks", "pool": "staging", "lock": "env-a"},
		"aged past stale_after", func(v float64) bool { return v >= 2 })
	pollMetric(t, s, "poolgate_stale_claims", st, "counted the stale claim", func(v float64) bool { return v == 1 })
	if v, _ := value(scrape(t, s), "poolgate_claim_age_seconds", map[string]string{"repo": "locks", "pool": "staging", "lock": "env-b"}); v != 0 {
		t.Errorf("free env-b has claim age %v", v)
	}
	pushBadPath(t, s, "staging")
	fams = scrape(t, s)
	for _, c := range []struct {
		family  string
		labels  map[string]string
		atLeast float64
	}{
		{"poolgate_refused_pushes_total", map[string]string{"repo": "locks", "kind": "transient"}, 1},
		{"poolgate_refused_pushes_total", map[string]string{"repo": "locks", "kind": "permanent"}, 1},
		{"poolgate_push_rejections_total", map[string]string{"repo": "locks", "rule": "over-limit"}, 1},
		{"poolgate_push_rejections_total", map[string]string{"repo": "locks", "rule": "bad-path"}, 1},
	} {
		if v, ok := value(fams, c.family, c.labels); !ok || v < c.atLeast {
			t.Errorf("%s%v = %v, want at least %v", c.family, c.labels, v, c.atLeast)
		}
	}
	refused, _ := value(fams, "poolgate_pushes_total", map[string]string{"repo": "locks", "result": "rejected"})
	tr, _ := value(fams, "poolgate_refused_pushes_total", map[string]string{"repo": "locks", "kind": "transient"})
	pe, _ := value(fams, "poolgate_refused_pushes_total", map[string]string{"repo": "locks", "kind": "permanent"})
	if tr+pe != refused {
		t.Errorf("refused pushes by kind (%v + %v) do not add up to rejected pushes (%v)", tr, pe, refused)
	}

	pollMetric(t, s, "poolgate_upstream_last_sync_timestamp_seconds", map[string]string{"repo": "mirror"},
		"recorded the mirror's sync", func(v float64) bool { return v > float64(time.Now().Add(-time.Hour).Unix()) })
	pollMetric(t, s, "poolgate_upstream_fetch_failures_total", map[string]string{"repo": "gone"},
		"counted the failing fetch", func(v float64) bool { return v >= 1 })
	fams = scrape(t, s)
	if v, ok := value(fams, "poolgate_upstream_last_sync_timestamp_seconds", map[string]string{"repo": "gone"}); !ok || v != 0 {
		t.Errorf("a mirror that never synced has last sync %v (present %v), want 0", v, ok)
	}
	if v, ok := value(fams, "poolgate_upstream_fetch_failures_total", map[string]string{"repo": "mirror"}); !ok || v != 0 {
		t.Errorf("a working mirror has %v fetch failures (present %v)", v, ok)
	}
}
