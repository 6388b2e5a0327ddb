package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/poolgate/poolgate/internal/testserver"
)

const (
	token    = "t0ken-for-tests"
	buildURL = "https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42"
)

func getJSON(t *testing.T, url, tok string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s: %v\n%s", url, err, body)
		}
	}
	return resp.StatusCode
}

type poolsDoc struct {
	Pools []struct {
		Name       string
		MaxClaimed *int `json:"max_claimed"`
		Claimed    int
		Total      int
		Locks      []struct {
			Name        string
			State       string
			HeldSeconds *int64 `json:"held_seconds"`
			HeldBy      *struct {
				User, Key, Pipeline, Job, Build string
				BuildURL                        string `json:"build_url"`
			} `json:"held_by"`
			Commit string
		}
	}
}

// waitState polls the API until lock has state: events are derived just
// after the push, not inside it.
func waitState(t *testing.T, s *testserver.Server, lock, state string) poolsDoc {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var doc poolsDoc
		getJSON(t, "http://"+s.HTTPAddr+"/api/v1/repos/locks/pools", token, &doc)
		for _, p := range doc.Pools {
			for _, l := range p.Locks {
				if l.Name == lock && l.State == state && (state != "claimed" || l.HeldBy != nil) {
					return doc
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became %s: %+v", lock, state, doc)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestAPIAnswersFromRealPushesWithFiltersLimitsAndAuth(t *testing.T) {
	f := testserver.New(t, testserver.Options{Token: token,
		Pools: "[{name: staging, max_claimed: 2, stale_after: 1h, locks: [env-a, env-b, env-c]}]"})
	s := f.Start()
	base := "http://" + s.HTTPAddr
	c := s.Client("c1", "staging", buildURL)
	if err := c.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	doc := waitState(t, s, "env-a", "claimed")
	p := doc.Pools[0]
	if p.Name != "staging" || p.MaxClaimed == nil || *p.MaxClaimed != 2 || p.Claimed != 1 || p.Total != 3 {
		t.Fatalf("pool %+v", p)
	}
	for _, l := range p.Locks {
		if l.Name != "env-a" {
			continue
		}
		h := l.HeldBy
		if h.User != "writer" || h.Key != f.KeyFP || h.BuildURL != buildURL || h.Pipeline != "p" || h.Job != "deploy" || h.Build != "42" || l.HeldSeconds == nil || l.Commit == "" {
			t.Fatalf("env-a %+v held by %+v", l, h)
		}
	}

	var repos struct {
		Repos []struct{ Name, Branch string }
	}
	if code := getJSON(t, base+"/api/v1/repos", token, &repos); code != 200 || len(repos.Repos) != 1 || repos.Repos[0].Name != "locks" {
		t.Fatalf("repos %d %+v", code, repos)
	}

	if err := c.Release(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "env-a", "unclaimed")
	var evs struct {
		Events []struct{ Type, Lock, Pool, ID string }
	}
	getJSON(t, base+"/api/v1/repos/locks/events?lock=env-a", token, &evs)
	if len(evs.Events) < 2 || evs.Events[0].Type != "released" || evs.Events[1].Type != "claimed" {
		t.Fatalf("env-a history, newest first: %+v", evs.Events)
	}
	for _, typ := range []string{"claimed", "lock.claimed"} {
		getJSON(t, base+"/api/v1/repos/locks/events?type="+typ+"&limit=1", token, &evs)
		if len(evs.Events) != 1 || evs.Events[0].Type != "claimed" {
			t.Fatalf("type=%s+limit filter: %+v", typ, evs.Events)
		}
	}
	getJSON(t, base+"/api/v1/repos/locks/events?pool=nope", token, &evs)
	if len(evs.Events) != 0 {
		t.Fatalf("pool filter: %+v", evs.Events)
	}

	// A claim of a lock that does not exist: refused, and listed.
	bad := s.Client("c2", "staging", buildURL)
	bad.Git(ctx(t), "commit", "-q", "--allow-empty", "-m", "claiming: ghost")
	out, _ := bad.Git(ctx(t), "push", "origin", "HEAD:master")
	if !strings.Contains(out, "intent-mismatch") {
		t.Fatalf("push was not refused by the validator:\n%s", out)
	}
	var rej struct {
		Rejections []struct {
			Rule, Kind, Reason, User string
			Violations               json.RawMessage
			Data                     struct{ Violations json.RawMessage }
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(rej.Rejections) == 0 && time.Now().Before(deadline) {
		getJSON(t, base+"/api/v1/repos/locks/rejections?limit=5", token, &rej)
		time.Sleep(100 * time.Millisecond)
	}
	if len(rej.Rejections) != 1 || rej.Rejections[0].Rule != "intent-mismatch" || rej.Rejections[0].Kind != "permanent" || rej.Rejections[0].User != "writer" {
		t.Fatalf("rejections %+v", rej.Rejections)
	}
	// The API shows the hook's violation records themselves, as the webhook
	// payload carries them: the page's model declares no copy of them.
	r := rej.Rejections[0]
	var got, want bytes.Buffer
	if json.Compact(&got, r.Violations) != nil || json.Compact(&want, r.Data.Violations) != nil ||
		got.String() != want.String() || !strings.Contains(got.String(), `"subject":"claiming: ghost"`) {
		t.Fatalf("violations %s differ from the event's %s", r.Violations, r.Data.Violations)
	}

	for _, path := range []string{"/api/v1/repos", "/api/v1/repos/locks/pools", "/api/v1/webhooks", "/", "/metrics"} {
		if code := getJSON(t, base+path, "", nil); code != http.StatusUnauthorized {
			t.Errorf("%s without the token: %d, want 401", path, code)
		}
	}
	if code := getJSON(t, base+"/api/v1/repos/nope/pools", token, nil); code != http.StatusNotFound {
		t.Errorf("unknown repo: %d, want 404", code)
	}
	if code := getJSON(t, base+"/healthz", "", nil); code != http.StatusOK {
		t.Errorf("healthz: %d", code)
	}
}

func scrape(t *testing.T, s *testserver.Server) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.HTTPAddr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// value finds the sample of family whose labels include want.
func value(fams map[string]*dto.MetricFamily, family string, want map[string]string) (float64, bool) {
	f := fams[family]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		ok := true
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsCountThePushesMade(t *testing.T) {
	var mu sync.Mutex
	got := 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got++
		mu.Unlock()
	}))
	defer recv.Close()
	f := testserver.New(t, testserver.Options{Token: token, Pools: "[{name: staging, max_claimed: 1, locks: [env-a, env-b]}]",
		Webhooks: "[{name: ops, url: " + recv.URL + ", format: json, events: [claimed, released]}]"})
	s := f.Start()
	c := s.Client("c1", "staging", buildURL)
	// Three accepted pushes: claim, release, claim.
	for _, step := range []func() error{
		func() error { return c.Claim(ctx(t), "env-a") },
		func() error { return c.Release(ctx(t), "env-a") },
		func() error { return c.Claim(ctx(t), "env-b") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	// One refused by over-limit (transient): a second claim at max_claimed 1.
	other := s.Client("c2", "staging", buildURL)
	other.Git(ctx(t), "mv", "staging/unclaimed/env-a", "staging/claimed/env-a")
	other.Git(ctx(t), "commit", "-q", "-m", "claiming: env-a")
	if out, _ := other.Git(ctx(t), "push", "origin", "HEAD:master"); !strings.Contains(out, "over-limit") {
		t.Fatalf("second claim not refused by over-limit:\n%s", out)
	}
	waitState(t, s, "env-b", "claimed")

	// claim, release, claim: three deliveries to the one target.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := got
		mu.Unlock()
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fams := scrape(t, s)
	checks := []struct {
		family string
		labels map[string]string
		want   float64
	}{
		{"poolgate_pushes_total", map[string]string{"repo": "locks", "result": "accepted"}, 3},
		{"poolgate_pushes_total", map[string]string{"repo": "locks", "result": "rejected"}, 1},
		{"poolgate_push_rejections_total", map[string]string{"repo": "locks", "rule": "over-limit"}, 1},
		{"poolgate_locks_claimed", map[string]string{"repo": "locks", "pool": "staging"}, 1},
		{"poolgate_locks", map[string]string{"repo": "locks", "pool": "staging"}, 2},
		{"poolgate_claim_hold_seconds", map[string]string{"repo": "locks", "pool": "staging"}, 1},
		{"poolgate_git_command_duration_seconds", map[string]string{"service": "git-receive-pack"}, 4},
		{"poolgate_webhook_deliveries_total", map[string]string{"target": "ops", "result": "ok"}, 3},
	}
	for _, c := range checks {
		got, ok := value(fams, c.family, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.family, c.labels, got, ok, c.want)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("Go runtime metrics missing")
	}
	if _, ok := value(fams, "poolgate_ssh_sessions_total", nil); !ok {
		t.Error("ssh session counter missing")
	}
}

// chromium finds Debian's browser; .ci/run installs it. A missing browser
// fails the test unless explicitly waived, so it can never pass unseen.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("POOLGATE_NO_BROWSER") == "1" {
		t.Skip("no browser, and POOLGATE_NO_BROWSER=1")
	}
	t.Fatal("chromium not found: install Debian's chromium (bash .ci/run does) or set POOLGATE_NO_BROWSER=1")
	return ""
}

func artifacts(t *testing.T) string {
	dir := os.Getenv("POOLGATE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func browse(t *testing.T, bin, profile string, args ...string) string {
	t.Helper()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir=" + profile}
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(c, bin, append(base, args...)...).Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return string(out)
}

func TestStatusPageInABrowserShowsTheClaimThenTheRelease(t *testing.T) {
	bin := chromium(t)
	f := testserver.New(t, testserver.Options{Token: token, Pools: "[{name: staging, max_claimed: 2, locks: [env-a, env-b, env-c]}]"})
	s := f.Start()
	profile := t.TempDir()
	// The token arrives once in the URL, becomes a cookie, and the browser
	// is redirected to the bare page.
	url := "http://" + s.HTTPAddr + "/?token=" + token
	art := artifacts(t)

	c := s.Client("c1", "staging", buildURL)
	if err := c.Claim(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "env-a", "claimed")
	dom := browse(t, bin, profile, "--dump-dom", url)
	if !strings.Contains(dom, `data-lock="env-a" data-state="claimed"`) || !strings.Contains(dom, "p/deploy #42") ||
		!strings.Contains(dom, `href="`+buildURL+`"`) {
		t.Fatalf("page does not show env-a claimed by p/deploy #42:\n%s", dom)
	}
	for _, w := range []string{"390,1400", "1920,1080"} {
		png := filepath.Join(art, fmt.Sprintf("status-claimed-%s.png", strings.Split(w, ",")[0]))
		browse(t, bin, profile, "--window-size="+w, "--screenshot="+png, url)
		if st, err := os.Stat(png); err != nil || st.Size() == 0 {
			t.Fatalf("no screenshot at %s: %v", png, err)
		}
	}

	if err := c.Release(ctx(t), "env-a"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "env-a", "unclaimed")
	dom = browse(t, bin, profile, "--dump-dom", url)
	if !strings.Contains(dom, `data-lock="env-a" data-state="unclaimed"`) || !strings.Contains(dom, "released") {
		t.Fatalf("page does not show env-a free after the release:\n%s", dom)
	}
	browse(t, bin, profile, "--window-size=390,1400", "--screenshot="+filepath.Join(art, "status-released-390.png"), url)
}
