package events_test

// End to end: a real `poolgate serve` on loopback, pushes over real ssh by
// the stock pool-resource's git sequence (internal/poolclient), webhook
// receivers on loopback, and the status/history commands run beside it.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/poolgate/poolgate/internal/testserver"
)

// hit is one request a receiver got.
type hit struct {
	path   string
	header http.Header
	body   []byte
	status int
}

// receiver is every webhook target of a test: one loopback server, the
// target told apart by path. fail decides per request whether to answer 500.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	hits []hit
	fail func(h hit) bool
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := hit{path: r.URL.Path, header: r.Header.Clone(), body: body, status: 200}
		rc.mu.Lock()
		if rc.fail != nil && rc.fail(h) {
			h.status = 500
		}
		rc.hits = append(rc.hits, h)
		rc.mu.Unlock()
		w.WriteHeader(h.status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) setFail(f func(hit) bool) {
	rc.mu.Lock()
	rc.fail = f
	rc.mu.Unlock()
}

// delivered returns the requests to path, successful ones only if ok.
func (rc *receiver) delivered(path string, ok bool) []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []hit
	for _, h := range rc.hits {
		if h.path == path && (!ok || h.status < 300) {
			out = append(out, h)
		}
	}
	return out
}

// payloads decodes the successful JSON deliveries of one type.
func (rc *receiver) payloads(path, typ string) []payload {
	var out []payload
	for _, h := range rc.delivered(path, true) {
		var p payload
		if json.Unmarshal(h.body, &p) == nil && p.Type == typ {
			p.hit = h
			out = append(out, p)
		}
	}
	return out
}

type payload struct {
	Type      string         `json:"type"`
	Timestamp string         `json:"timestamp"`
	Data      map[string]any `json:"data"`
	hit       hit
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

var secret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("poolgate end-to-end test key"))

// newFixture is a real poolgate serve's config: user writer, repo locks
// with the given pools and webhooks (YAML list bodies).
func newFixture(t *testing.T, pools, webhooks string) *testserver.Fixture {
	return testserver.New(t, testserver.Options{Pools: pools, Webhooks: webhooks})
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

const buildURL = "https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42"

func TestClaimAndReleaseOverSSHAreAnnouncedAsSignedJSONSlackAndOneConcourseCheckPerBurst(t *testing.T) {
	rc := newReceiver(t)
	f := newFixture(t, `
      - name: demo
        max_claimed: 2
        locks: [lock-a, lock-b, lock-c]`, fmt.Sprintf(`
  - name: json
    url: %s/json
    format: json
    events: [claimed, released]
    secret: %s
  - name: slack
    url: %s/slack
    format: slack
    events: [claimed, released]
  - name: check
    url: %s/concourse?webhook_token=tok
    format: concourse
    coalesce: 3s
    pools: [demo]`, rc.URL, secret, rc.URL, rc.URL))
	s := f.Start()
	c := s.Client("deploy", "demo", buildURL)
	ctx := ctxT(t, 2*time.Minute)
	if err := c.Claim(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}
	claimCommit, _ := c.Git(ctx, "rev-parse", "HEAD")
	if err := c.Release(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "claimed and released as JSON", 30*time.Second, func() bool {
		return len(rc.payloads("/json", "lock.claimed")) == 1 && len(rc.payloads("/json", "lock.released")) == 1
	})

	wh, _ := standardwebhooks.NewWebhook(secret)
	for _, typ := range []string{"lock.claimed", "lock.released"} {
		p := rc.payloads("/json", typ)[0]
		if err := wh.Verify(p.hit.body, p.hit.header); err != nil {
			t.Errorf("%s: signature does not verify with the Standard Webhooks library: %v", typ, err)
		}
		d := p.Data
		for _, k := range []string{"id", "repo", "branch", "pool", "lock", "action", "commit", "message", "build_url",
			"team", "pipeline", "job", "build", "pusher", "author", "claimed", "max_claimed"} {
			if v, ok := d[k]; !ok || v == nil || v == "" {
				t.Errorf("%s: data.%s is %v", typ, k, v)
			}
		}
		if p.hit.header.Get("webhook-id") != d["id"] {
			t.Errorf("%s: webhook-id %q, data.id %v", typ, p.hit.header.Get("webhook-id"), d["id"])
		}
		pusher, _ := d["pusher"].(map[string]any)
		author, _ := d["author"].(map[string]any)
		if d["repo"] != "locks" || d["branch"] != "master" || d["pool"] != "demo" || d["lock"] != "lock-a" ||
			d["team"] != "main" || d["pipeline"] != "p" || d["job"] != "deploy" || d["build"] != "42" || d["build_url"] != buildURL ||
			pusher["user"] != "writer" || pusher["key"] != f.KeyFP || author["email"] != "git@localhost" || d["max_claimed"] != 2.0 {
			t.Errorf("%s: data %v", typ, d)
		}
	}
	claimed, released := rc.payloads("/json", "lock.claimed")[0].Data, rc.payloads("/json", "lock.released")[0].Data
	if claimed["commit"] != strings.TrimSpace(claimCommit) || claimed["message"] != "claiming: lock-a" || claimed["claimed"] != 1.0 || claimed["held_seconds"] != nil {
		t.Errorf("claimed: %v", claimed)
	}
	if h, ok := released["held_seconds"].(float64); !ok || h < 0 || released["claimed"] != 0.0 || released["message"] != "unclaiming: lock-a" {
		t.Errorf("released: %v", released)
	}

	waitFor(t, "two Slack messages", 10*time.Second, func() bool { return len(rc.delivered("/slack", true)) == 2 })
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
			Text struct{ Type, Text string }
		} `json:"blocks"`
	}
	json.Unmarshal(rc.delivered("/slack", true)[0].body, &msg)
	want := "🔒 *demo/lock-a* claimed by p/deploy #42 (<" + buildURL + "|build>)"
	if msg.Text != want || len(msg.Blocks) == 0 || msg.Blocks[0].Type != "section" || msg.Blocks[0].Text.Type != "mrkdwn" || msg.Blocks[0].Text.Text != want {
		t.Errorf("slack message: %s", rc.delivered("/slack", true)[0].body)
	}
	json.Unmarshal(rc.delivered("/slack", true)[1].body, &msg)
	if !strings.HasPrefix(msg.Text, "🔓 *demo/lock-a* released after ") {
		t.Errorf("slack release: %q", msg.Text)
	}

	// The claim and release already caused a check; let it settle, then
	// five changes pushed one after the other must cause exactly one more.
	// They are committed first and pushed back to back, as five builds
	// finishing together would; coalesce is 3s so a loaded 2-core machine
	// does not split the burst.
	waitFor(t, "a first check", 15*time.Second, func() bool { return len(rc.delivered("/concourse", true)) >= 1 })
	time.Sleep(time.Second)
	before := len(rc.delivered("/concourse", true))
	var shas []string
	for _, step := range [][3]string{
		{"lock-a", "unclaimed", "claimed"}, {"lock-b", "unclaimed", "claimed"},
		{"lock-a", "claimed", "unclaimed"}, {"lock-b", "claimed", "unclaimed"}, {"lock-c", "unclaimed", "claimed"},
	} {
		verb := "claiming"
		if step[2] == "unclaimed" {
			verb = "unclaiming"
		}
		if _, err := c.Git(ctx, "mv", "demo/"+step[1]+"/"+step[0], "demo/"+step[2]+"/"+step[0]); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Git(ctx, "commit", "-m", c.Message(verb, step[0])); err != nil {
			t.Fatal(err)
		}
		sha, _ := c.Git(ctx, "rev-parse", "HEAD")
		shas = append(shas, strings.TrimSpace(sha))
	}
	for _, sha := range shas {
		if out, err := c.Git(ctx, "push", "origin", sha+":refs/heads/master"); err != nil {
			t.Fatalf("push %s: %v\n%s", sha, err, out)
		}
	}
	waitFor(t, "the burst's check", 20*time.Second, func() bool { return len(rc.delivered("/concourse", true)) > before })
	time.Sleep(4 * time.Second)
	hits := rc.delivered("/concourse", true)
	if n := len(hits) - before; n != 1 {
		t.Errorf("%d check requests for a burst of five changes, want 1", n)
	}
	if last := hits[len(hits)-1]; len(last.body) != 0 || !strings.Contains(s.Log(), `"webhook":"check"`) {
		t.Errorf("check request body %q", last.body)
	}
}

func TestEventOfAPushAcceptedBeforeASIGKILLArrivesAfterRestartWithTheSameID(t *testing.T) {
	rc := newReceiver(t)
	rc.setFail(func(hit) bool { return true }) // down until the daemon is killed
	f := newFixture(t, `
      - name: demo
        locks: [lock-a, lock-b]`, fmt.Sprintf(`
  - name: json
    url: %s/json
    format: json
    events: [claimed, released]
    secret: %s`, rc.URL, secret))
	s := f.Start()
	c := s.Client("deploy", "demo", buildURL)
	if err := c.Claim(ctxT(t, time.Minute), "lock-a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a failed delivery attempt", 30*time.Second, func() bool { return len(rc.delivered("/json", false)) > 0 })
	firstID := rc.delivered("/json", false)[0].header.Get("webhook-id")
	s.Stop(syscall.SIGKILL)
	rc.setFail(nil)

	s = f.Start()
	waitFor(t, "delivery after the restart", 30*time.Second, func() bool { return len(rc.payloads("/json", "lock.claimed")) > 0 })
	time.Sleep(500 * time.Millisecond)
	ok := rc.payloads("/json", "lock.claimed")
	if len(ok) != 1 || ok[0].hit.header.Get("webhook-id") != firstID || ok[0].Data["id"] != firstID {
		t.Fatalf("after restart: %d deliveries, id %q; before the kill the id was %q", len(ok), ok[0].hit.header.Get("webhook-id"), firstID)
	}

	// Now the receiver fails three times, then recovers: the release gets
	// through once, and the claim after it only after it.
	failures := 0
	rc.setFail(func(hit) bool { failures++; return failures <= 3 })
	c = s.Client("deploy-2", "demo", buildURL)
	ctx := ctxT(t, time.Minute)
	if err := c.Release(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Claim(ctx, "lock-b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the claim after the retried release", 60*time.Second, func() bool { return len(rc.payloads("/json", "lock.claimed")) == 2 })
	var seq []string
	for _, h := range rc.delivered("/json", false) {
		var p payload
		json.Unmarshal(h.body, &p)
		seq = append(seq, fmt.Sprintf("%s/%v/%d", p.Type, p.Data["lock"], h.status))
	}
	want := "lock.claimed/lock-a/500 lock.claimed/lock-a/200 lock.released/lock-a/500 lock.released/lock-a/500 lock.released/lock-a/500 lock.released/lock-a/200 lock.claimed/lock-b/200"
	// Attempts before the kill may be more than one.
	if got := strings.Join(seq, " "); !strings.HasSuffix(got, want[len("lock.claimed/lock-a/500 "):]) {
		t.Errorf("attempts in order:\n got %s\nwant ...%s", got, want[len("lock.claimed/lock-a/500 "):])
	}
}

func TestRefusedPushIsARejectedEventAndAStaleClaimIsAnnouncedOnceAcrossRestarts(t *testing.T) {
	rc := newReceiver(t)
	f := newFixture(t, `
      - name: demo
        stale_after: 1s
        max_claimed: 1
        locks: [lock-a, lock-b]`, fmt.Sprintf(`
  - name: json
    url: %s/json
    format: json
    events: [rejected, stale]`, rc.URL))
	s := f.Start()
	c := s.Client("deploy", "demo", buildURL)
	ctx := ctxT(t, 2*time.Minute)

	// A lock that was never in unclaimed/ pushed straight into claimed/.
	os.MkdirAll(filepath.Join(c.Dir, "demo", "claimed"), 0o755)
	os.WriteFile(filepath.Join(c.Dir, "demo", "claimed", "ghost"), []byte("x"), 0o644)
	c.Git(ctx, "add", "-A")
	c.Git(ctx, "commit", "-m", c.Message("claiming", "ghost"))
	if out, err := c.Git(ctx, "push", "origin", "HEAD:master"); err == nil {
		t.Fatalf("push of a ghost claim accepted:\n%s", out)
	}
	waitFor(t, "the rejected event", 30*time.Second, func() bool { return len(rc.payloads("/json", "lock.rejected")) == 1 })
	rej := rc.payloads("/json", "lock.rejected")[0].Data
	if rule := rej["rule"]; (rule != "claim-missing" && rule != "intent-mismatch") || rej["kind"] != "permanent" || rej["reason"] == "" ||
		rej["pool"] != "demo" || rej["lock"] != "ghost" || rej["pusher"].(map[string]any)["user"] != "writer" {
		t.Errorf("rejected event: %v", rej)
	}

	c.Git(ctx, "reset", "--hard", "origin/master")
	if err := c.Claim(ctx, "lock-b"); err != nil {
		t.Fatal(err)
	}
	// A second build waiting on the full pool is refused every retry,
	// transiently: all recorded, announced once.
	waiting := s.Client("waiting", "demo", buildURL)
	wctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	waiting.Claim(wctx, "lock-a")
	cancel()
	if n := waiting.Stats().Conflicts; n < 2 {
		t.Fatalf("the waiting build was refused %d times; the test needs 2 or more", n)
	}
	waitFor(t, "the stale event", 30*time.Second, func() bool { return len(rc.payloads("/json", "lock.stale")) == 1 })
	time.Sleep(2500 * time.Millisecond)
	s.Stop(syscall.SIGTERM)
	f.Start()
	time.Sleep(2500 * time.Millisecond)
	st := rc.payloads("/json", "lock.stale")
	if len(st) != 1 {
		t.Fatalf("%d stale events for one claim, across a restart; want 1", len(st))
	}
	if d := st[0].Data; d["lock"] != "lock-b" || d["held_seconds"] == nil || d["build"] != "42" {
		t.Errorf("stale event: %v", d)
	}
	if out := f.Run("history", "--config", f.Config, "locks", "--type", "stale", "--json"); strings.Count(out, `"type": "stale"`) != 1 {
		t.Errorf("history --type stale:\n%s", out)
	}
	var overLimit []payload
	for _, p := range rc.payloads("/json", "lock.rejected") {
		if p.Data["rule"] == "over-limit" {
			overLimit = append(overLimit, p)
		}
	}
	recorded := strings.Count(f.Run("history", "--config", f.Config, "locks", "--type", "rejected"), "over-limit (transient)")
	if len(overLimit) != 1 || recorded < 2 || overLimit[0].Data["kind"] != "transient" || overLimit[0].Data["lock"] != "lock-a" {
		t.Errorf("over-limit: %d announced, %d recorded; want 1 announced of 2 or more", len(overLimit), recorded)
	}
}

var cols = regexp.MustCompile(`\s{2,}`)

// table splits a CLI table into rows of cells (header included).
func table(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, cols.Split(strings.TrimSpace(l), -1))
	}
	return rows
}

func TestHistoryOfALockPrintsTheScriptedSequenceWithPusherAndBuildAndStatusShowsTheHolder(t *testing.T) {
	f := newFixture(t, `
      - name: demo
        locks: [lock-a, lock-b]`, " []")
	s := f.Start()
	ctx := ctxT(t, 2*time.Minute)
	one := s.Client("one", "demo", "https://ci.example.com/teams/main/pipelines/p/jobs/one/builds/1")
	if err := one.Claim(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}
	if err := one.Release(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}
	two := s.Client("two", "demo", "")
	two.OldPrefix = "main/p/two build 7" // a pre-v1.8.0 client
	if err := two.Claim(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}

	out := f.Run("history", "--config", f.Config, "locks", "--lock", "lock-a")
	rows := table(out)
	want := [][3]string{{"claimed", "writer", "p/two #7"}, {"released", "writer", "p/one #1"}, {"claimed", "writer", "p/one #1"}, {"added", "-", "-"}}
	if len(rows) != len(want)+1 || strings.Join(rows[0], " ") != "TIME EVENT POOL LOCK PUSHER BUILD DETAIL COMMIT" {
		t.Fatalf("history:\n%s", out)
	}
	for i, w := range want {
		r := rows[i+1]
		if r[1] != w[0] || r[2] != "demo" || r[3] != "lock-a" || r[4] != w[1] || r[5] != w[2] {
			t.Errorf("history row %d: %q, want %v\n%s", i, r, w, out)
		}
	}
	if !strings.HasPrefix(rows[2][6], "held ") {
		t.Errorf("release row without held time: %q", rows[2])
	}

	out = f.Run("status", "--config", f.Config, "locks")
	rows = table(out)
	if strings.Join(rows[0], " ") != "POOL LOCK STATE SINCE HELD FOR BY BUILD BUILD URL" || len(rows) != 3 {
		t.Fatalf("status:\n%s", out)
	}
	if r := rows[1]; r[1] != "lock-a" || r[2] != "claimed" || !regexp.MustCompile(`^\d+s$`).MatchString(r[4]) || r[5] != "writer" || r[6] != "p/two #7" {
		t.Errorf("status of lock-a: %q\n%s", r, out)
	}
	if r := rows[2]; r[1] != "lock-b" || r[2] != "unclaimed" || r[5] != "-" {
		t.Errorf("status of lock-b: %q\n%s", r, out)
	}
	var js []struct {
		Lock        string
		State       string
		HeldSeconds *int64 `json:"held_seconds"`
		By          *struct{ User, Key string }
	}
	if err := json.Unmarshal([]byte(f.Run("status", "--config", f.Config, "locks", "--json")), &js); err != nil {
		t.Fatal(err)
	}
	if len(js) != 2 || js[0].By == nil || js[0].By.Key != f.KeyFP || js[0].HeldSeconds == nil {
		t.Errorf("status --json: %+v", js)
	}
}
