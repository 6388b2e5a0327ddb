package main

// End to end: a real `poolgate serve` reloads its config on SIGHUP, and
// every part follows at once: the hook, the API, the status page, the
// metrics, event payloads and webhook deliveries (real git over real ssh
// with the stock client's sequence, a real HTTP receiver for webhooks).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/poolgate/poolgate/internal/poolclient"
	"github.com/poolgate/poolgate/internal/testserver"
)

const reloadToken = "reload-test-token"

// hookReceiver records every webhook request; the target is told apart
// by the URL's path.
type hookReceiver struct {
	*httptest.Server
	mu   sync.Mutex
	hits []hookHit
}

type hookHit struct {
	Path string
	Type string         `json:"type"`
	Data map[string]any `json:"data"`
}

func newHookReceiver(t *testing.T) *hookReceiver {
	rc := &hookReceiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := hookHit{Path: r.URL.Path}
		json.Unmarshal(body, &h)
		rc.mu.Lock()
		rc.hits = append(rc.hits, h)
		rc.mu.Unlock()
	}))
	t.Cleanup(rc.Close)
	return rc
}

// got is the deliveries to path of event type typ (any type if "") for
// lock (any lock if "").
func (rc *hookReceiver) got(path, typ, lock string) []hookHit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []hookHit
	for _, h := range rc.hits {
		if h.Path == path && (typ == "" || h.Type == typ) && (lock == "" || h.Data["lock"] == lock) {
			out = append(out, h)
		}
	}
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// httpGet fetches path from the server with the bearer token.
func httpGet(t *testing.T, s *testserver.Server, path string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.HTTPAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+reloadToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", path, resp.Status, body)
	}
	return string(body)
}

type apiPool struct {
	Name              string `json:"name"`
	MaxClaimed        *int   `json:"max_claimed"`
	StaleAfterSeconds *int64 `json:"stale_after_seconds"`
	Claimed           int    `json:"claimed"`
	Locks             []struct {
		Name        string `json:"name"`
		State       string `json:"state"`
		Stale       bool   `json:"stale"`
		HeldSeconds *int64 `json:"held_seconds"`
	} `json:"locks"`
}

// demoPool is the API's view of pool demo.
func demoPool(t *testing.T, s *testserver.Server) apiPool {
	t.Helper()
	var doc struct{ Pools []apiPool }
	if err := json.Unmarshal([]byte(httpGet(t, s, "/api/v1/repos/locks/pools")), &doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range doc.Pools {
		if p.Name == "demo" {
			return p
		}
	}
	t.Fatalf("no pool demo in %+v", doc.Pools)
	return apiPool{}
}

func (p apiPool) limits() string {
	m, s := "none", "none"
	if p.MaxClaimed != nil {
		m = fmt.Sprint(*p.MaxClaimed)
	}
	if p.StaleAfterSeconds != nil {
		s = fmt.Sprint(*p.StaleAfterSeconds)
	}
	return "max_claimed " + m + ", stale_after_seconds " + s
}

func (p apiPool) stale(lock string) bool {
	for _, l := range p.Locks {
		if l.Name == lock {
			return l.Stale
		}
	}
	return false
}

// pushClaim claims lock by hand, pushing once (the stock client would
// retry a refusal forever), and returns git's output and error.
func pushClaim(t *testing.T, ctx context.Context, c *poolclient.Client, lock string) (string, error) {
	t.Helper()
	for _, args := range [][]string{{"fetch", "origin", "master"}, {"reset", "--hard", "origin/master"},
		{"mv", "demo/unclaimed/" + lock, "demo/claimed/" + lock}, {"commit", "-m", c.Message("claiming", lock)}} {
		if out, err := c.Git(ctx, args...); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return c.Git(ctx, "push", "origin", "HEAD:master")
}

var staleRow = regexp.MustCompile(`<tr class="lock stale" data-lock="lock-a"`)

const (
	poolsBefore = "[{name: demo, max_claimed: 1, stale_after: 1h, locks: [lock-a, lock-b, lock-c]}]"
	poolsAfter  = "[{name: demo, max_claimed: 2, stale_after: 2s, locks: [lock-a, lock-b, lock-c]}]"
)

func webhooksYAML(rc *hookReceiver, hooks ...[2]string) string {
	var items []string
	for _, h := range hooks {
		items = append(items, fmt.Sprintf("{name: %s, url: %q, format: json, events: [claimed, released, stale]}", h[0], rc.URL+h[1]))
	}
	return "[" + strings.Join(items, ", ") + "]"
}

// rewrite replaces, in the server's config file, each old text with its
// new one (pairs), as an operator editing it would (a new file renamed
// over the old).
func rewrite(t *testing.T, f *testserver.Fixture, pairs ...string) {
	t.Helper()
	b, err := os.ReadFile(f.Config)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("config does not hold %q:\n%s", pairs[i], text)
		}
		text = strings.Replace(text, pairs[i], pairs[i+1], 1)
	}
	if err := os.WriteFile(f.Config+".new", []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.Config+".new", f.Config); err != nil {
		t.Fatal(err)
	}
}

// reload sends SIGHUP and waits for the log line that ends the reload
// (good or refused); every part has taken a good one by then.
func reload(t *testing.T, s *testserver.Server, line string) {
	t.Helper()
	before := strings.Count(s.Log(), line)
	if err := s.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the log line "+line, func() bool { return strings.Count(s.Log(), line) > before })
}

const (
	reloadedLine = `"message":"config reloaded"`
	refusedLine  = `"message":"reload refused`
)

// A SIGHUP that raises max_claimed from 1 to 2, shortens stale_after from
// 1h to 2s, removes webhook a, moves webhook c to a new URL and adds
// webhook b reaches every part at once: the API and the page show the new
// limit and the claim that went stale under the new stale_after, the stale
// event and a new claim's event (carrying the new limit) go to b and c's
// new URL and never to a or c's old URL, and the hook admits the second
// claim it refused before.
func TestSIGHUPThatRaisesMaxClaimedShortensStaleAfterAndSwapsWebhooksReachesEveryPart(t *testing.T) {
	rc := newHookReceiver(t)
	hooksBefore := webhooksYAML(rc, [2]string{"a", "/a"}, [2]string{"c", "/c-old"})
	hooksAfter := webhooksYAML(rc, [2]string{"b", "/b"}, [2]string{"c", "/c-new"})
	f := testserver.New(t, testserver.Options{Token: reloadToken, Pools: poolsBefore, Webhooks: hooksBefore})
	s := f.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	first := s.Client("first", "demo", "https://ci.example.com/builds/1")
	if err := first.Claim(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "lock-a's claim at a and c", func() bool {
		return len(rc.got("/a", "lock.claimed", "lock-a")) == 1 && len(rc.got("/c-old", "lock.claimed", "lock-a")) == 1
	})
	if mc := rc.got("/a", "lock.claimed", "lock-a")[0].Data["max_claimed"]; mc != 1.0 {
		t.Errorf("claim before the reload carries max_claimed %v, want 1", mc)
	}
	second := s.Client("second", "demo", "https://ci.example.com/builds/2")
	if out, err := pushClaim(t, ctx, second, "lock-b"); err == nil || !strings.Contains(out, "over max_claimed 1") {
		t.Fatalf("a second claim under max_claimed 1 was not refused: %v\n%s", err, out)
	}
	if got := demoPool(t, s).limits(); got != "max_claimed 1, stale_after_seconds 3600" {
		t.Fatalf("API before the reload: %s", got)
	}
	if page := httpGet(t, s, "/"); !strings.Contains(page, "1 of max 1 claimed") {
		t.Fatalf("page before the reload does not say 1 of max 1 claimed:\n%s", page)
	}
	// lock-a must be older than the new stale_after when the reload lands,
	// so that only the reload can make it stale.
	waitUntil(t, "lock-a held for 3s", func() bool {
		for _, l := range demoPool(t, s).Locks {
			if l.Name == "lock-a" && l.HeldSeconds != nil && *l.HeldSeconds >= 3 {
				return true
			}
		}
		return false
	})
	if demoPool(t, s).stale("lock-a") {
		t.Fatal("lock-a stale under stale_after 1h")
	}

	rewrite(t, f, poolsBefore, poolsAfter, hooksBefore, hooksAfter)
	reload(t, s, reloadedLine)
	aBefore, cOldBefore := len(rc.got("/a", "", "")), len(rc.got("/c-old", "", ""))

	// The API and the metrics read the running config at each request:
	// no wait needed once the reload is logged.
	if got := demoPool(t, s).limits(); got != "max_claimed 2, stale_after_seconds 2" {
		t.Errorf("API after the reload: %s", got)
	}
	if page := httpGet(t, s, "/"); !strings.Contains(page, "1 of max 2 claimed") {
		t.Errorf("page after the reload does not say 1 of max 2 claimed:\n%s", page)
	}
	if m := httpGet(t, s, "/metrics"); !strings.Contains(m, `poolgate_webhook_deliveries_total{result="ok",target="b"} `) {
		t.Errorf("metrics have no series for the added webhook b:\n%s", m)
	}
	// lock-a, held past the new stale_after, goes stale now: an event to
	// b and c's new URL, the lock marked stale in the API and on the page.
	waitUntil(t, "lock-a's stale event at b and c's new URL", func() bool {
		return len(rc.got("/b", "lock.stale", "lock-a")) == 1 && len(rc.got("/c-new", "lock.stale", "lock-a")) == 1
	})
	if mc := rc.got("/b", "lock.stale", "lock-a")[0].Data["max_claimed"]; mc != 2.0 {
		t.Errorf("stale event after the reload carries max_claimed %v, want 2", mc)
	}
	if !demoPool(t, s).stale("lock-a") {
		t.Error("API: lock-a not stale after stale_after became 2s")
	}
	if page := httpGet(t, s, "/"); !staleRow.MatchString(page) {
		t.Errorf("page: lock-a's row not marked stale:\n%s", page)
	}
	if m := httpGet(t, s, "/metrics"); !strings.Contains(m, `poolgate_stale_claims{pool="demo",repo="locks"} 1`) {
		t.Errorf("metrics do not count lock-a as stale")
	}

	// The hook admits a second claim now (the stock client's loop), and
	// its event carries the new limit.
	if err := second.Claim(ctx, "lock-b"); err != nil {
		t.Fatalf("second claim under max_claimed 2: %v", err)
	}
	waitUntil(t, "lock-b's claim at b and c's new URL", func() bool {
		return len(rc.got("/b", "lock.claimed", "lock-b")) == 1 && len(rc.got("/c-new", "lock.claimed", "lock-b")) == 1
	})
	d := rc.got("/b", "lock.claimed", "lock-b")[0].Data
	if d["max_claimed"] != 2.0 || d["claimed"] != 2.0 {
		t.Errorf("claim after the reload: max_claimed %v, claimed %v; want 2 and 2", d["max_claimed"], d["claimed"])
	}
	if p := demoPool(t, s); p.Claimed != 2 {
		t.Errorf("API: %d claimed, want 2", p.Claimed)
	}
	if page := httpGet(t, s, "/"); !strings.Contains(page, "2 of max 2 claimed") {
		t.Errorf("page does not say 2 of max 2 claimed:\n%s", page)
	}
	// b had no past replayed: its first delivery is the stale event.
	if hits := rc.got("/b", "", ""); len(hits) == 0 || hits[0].Type != "lock.stale" {
		t.Errorf("b's first delivery is %+v, want lock-a's stale event", hits)
	}
	// The removed and the moved URL got nothing after the reload.
	if n, m := len(rc.got("/a", "", "")), len(rc.got("/c-old", "", "")); n != aBefore || m != cOldBefore {
		t.Errorf("after the reload: %d more deliveries to removed webhook a, %d to c's old URL", n-aBefore, m-cOldBefore)
	}
	if strings.Contains(s.Log(), "needs a restart") {
		t.Error("the reload said a setting needs a restart; none of these does")
	}
}

// A SIGHUP with a file that does not load changes nothing anywhere: one
// log line says why (file:line), the API and the page keep the old limit
// and stale_after, the hook still refuses over the old max_claimed, and
// the next event is delivered to the old webhook with the old limit.
func TestSIGHUPWithABrokenConfigChangesNothingAndSaysSoInOneLine(t *testing.T) {
	rc := newHookReceiver(t)
	hooksBefore := webhooksYAML(rc, [2]string{"a", "/a"})
	hooksAfter := webhooksYAML(rc, [2]string{"b", "/b"})
	f := testserver.New(t, testserver.Options{Token: reloadToken, Pools: poolsBefore, Webhooks: hooksBefore})
	s := f.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	first := s.Client("first", "demo", "https://ci.example.com/builds/1")
	if err := first.Claim(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "lock-a's claim at a", func() bool { return len(rc.got("/a", "lock.claimed", "lock-a")) == 1 })

	// Everything the good reload above changes, and one value that does
	// not parse: nothing of it may be taken.
	broken := strings.Replace(poolsAfter, "max_claimed: 2", "max_claimed: two", 1)
	rewrite(t, f, poolsBefore, broken, hooksBefore, hooksAfter)
	reload(t, s, refusedLine)
	var refusals []string
	for _, l := range strings.Split(s.Log(), "\n") {
		if strings.Contains(l, `"message":"reload`) {
			refusals = append(refusals, l)
		}
	}
	if len(refusals) != 1 || !strings.Contains(refusals[0], "poolgate.yaml:") || !strings.Contains(refusals[0], "the running config stays") {
		t.Errorf("want one log line naming file:line, got:\n%s", strings.Join(refusals, "\n"))
	}

	// Held past the 2s the broken file asks for: had any of it been
	// taken, lock-a would go stale.
	waitUntil(t, "lock-a held for 3s", func() bool {
		for _, l := range demoPool(t, s).Locks {
			if l.Name == "lock-a" && l.HeldSeconds != nil && *l.HeldSeconds >= 3 {
				return true
			}
		}
		return false
	})
	p := demoPool(t, s)
	if got := p.limits(); got != "max_claimed 1, stale_after_seconds 3600" || p.stale("lock-a") {
		t.Errorf("API after a refused reload: %s, lock-a stale %v", got, p.stale("lock-a"))
	}
	if page := httpGet(t, s, "/"); !strings.Contains(page, "1 of max 1 claimed") || staleRow.MatchString(page) {
		t.Errorf("page after a refused reload changed:\n%s", page)
	}
	if m := httpGet(t, s, "/metrics"); strings.Contains(m, `target="b"`) {
		t.Error("metrics list webhook b of the refused file")
	}
	second := s.Client("second", "demo", "https://ci.example.com/builds/2")
	if out, err := pushClaim(t, ctx, second, "lock-b"); err == nil || !strings.Contains(out, "over max_claimed 1") {
		t.Errorf("after a refused reload, a second claim was not refused over max_claimed 1: %v\n%s", err, out)
	}
	if err := first.Release(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "lock-a's release at a", func() bool { return len(rc.got("/a", "lock.released", "lock-a")) == 1 })
	if mc := rc.got("/a", "lock.released", "lock-a")[0].Data["max_claimed"]; mc != 1.0 {
		t.Errorf("release after a refused reload carries max_claimed %v, want 1", mc)
	}
	if n := len(rc.got("/b", "", "")); n != 0 {
		t.Errorf("%d deliveries to webhook b of the refused file", n)
	}
	if n := len(rc.got("/a", "lock.stale", "")); n != 0 {
		t.Errorf("%d stale events under the running stale_after 1h", n)
	}
}

// A SIGHUP that changes settings a running process cannot (the HTTP token,
// the log level, then the set of repos) keeps each one's running value with
// one line naming it, and takes the rest of the file (max_claimed); when
// the set of repos changes, the whole running repos list stays, pool
// settings included.
func TestSIGHUPKeepsRestartOnlySettingsWithALineEachAndTakesTheRest(t *testing.T) {
	f := testserver.New(t, testserver.Options{Token: reloadToken, Pools: poolsBefore})
	s := f.Start()
	rewrite(t, f, `token: "`+reloadToken+`"`, `token: "another-token"`, "level: debug", "level: info",
		"max_claimed: 1", "max_claimed: 2")
	reload(t, s, reloadedLine)
	restartLines := func() []string {
		var out []string
		for _, l := range strings.Split(s.Log(), "\n") {
			if strings.Contains(l, "this setting needs a restart") {
				var m struct{ Setting string }
				json.Unmarshal([]byte(l), &m)
				out = append(out, m.Setting)
			}
		}
		return out
	}
	if got := strings.Join(restartLines(), ","); got != "http,log" {
		t.Errorf("restart-only settings logged: %q, want http,log", got)
	}
	// The running token still opens the API (httpGet sends it), and the
	// file's new one does not.
	if got := demoPool(t, s).limits(); got != "max_claimed 2, stale_after_seconds 3600" {
		t.Errorf("API after the reload: %s", got)
	}
	req, _ := http.NewRequest("GET", "http://"+s.HTTPAddr+"/api/v1/repos", nil)
	req.Header.Set("Authorization", "Bearer another-token")
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the reloaded file's token opened the API: %s", resp.Status)
	}

	rewrite(t, f, "max_claimed: 2", "max_claimed: 3",
		"webhooks: ", "  - name: other\n    branch: master\n    pools: [{name: p, locks: [x]}]\nwebhooks: ")
	reload(t, s, reloadedLine)
	// The file still differs from the running http and log: each is
	// named again, with the repos.
	if got := strings.Join(restartLines(), ","); got != "http,log,http,log,repos (names, branches or upstream on/off)" {
		t.Errorf("restart-only settings logged: %q, want http and log again, and the repos", got)
	}
	if got := demoPool(t, s).limits(); got != "max_claimed 2, stale_after_seconds 3600" {
		t.Errorf("API after a reload that adds a repo: %s (the running repos, pools included, stay)", got)
	}
	if body := httpGet(t, s, "/api/v1/repos"); strings.Contains(body, `"other"`) {
		t.Errorf("a repo added by a reload is listed: %s", body)
	}
}
