package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/events"
	"github.com/rs/zerolog"
)

// receiver is a loopback HTTP server that records what it got and answers
// with whatever the test's policy says.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []got
	answer func(n int, r *http.Request) (int, http.Header)
}

type got struct {
	at     time.Time
	header http.Header
	body   []byte
	status int
}

func newReceiver(t *testing.T, answer func(n int, r *http.Request) (int, http.Header)) *receiver {
	rc := &receiver{answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		n := len(rc.reqs)
		status, h := 200, http.Header(nil)
		if rc.answer != nil {
			status, h = rc.answer(n, r)
		}
		rc.reqs = append(rc.reqs, got{at: time.Now(), header: r.Header.Clone(), body: body, status: status})
		rc.mu.Unlock()
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) got() []got {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]got(nil), rc.reqs...)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var fast = Options{Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Coalesce: 300 * time.Millisecond,
	SlackInterval: 200 * time.Millisecond, Poll: 50 * time.Millisecond, Timeout: 5 * time.Second}

// start runs a dispatcher for the given webhooks over a fresh store.
func start(t *testing.T, opt Options, hooks ...config.Webhook) (*events.Store, *Dispatcher) {
	st, err := events.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	// Targets seen for the first time start after the newest event; give
	// them their cursor before the test adds any (InitWebhook is idempotent).
	for _, h := range hooks {
		if _, err := st.InitWebhook(context.Background(), h.Name); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &config.Config{Webhooks: hooks}
	d := New(config.NewLive(cfg), st, zerolog.Nop(), opt)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return st, d
}

var n int

func claimEvent(lock string) *events.Event {
	n++
	held := int64(754)
	one := 1
	return &events.Event{
		ID: fmt.Sprintf("evt_test_%d_%s", n, lock), Type: events.Claimed, Time: time.Now().UTC().Truncate(time.Second), Announce: true,
		Repo: "locks", Branch: "master", Pool: "staging", Lock: lock, Action: "claimed", State: "claimed",
		Commit: "0123456789abcdef0123456789abcdef01234567", Message: "claiming: " + lock,
		BuildURL: "https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42",
		Team:     "main", Pipeline: "p", Job: "deploy", Build: "42",
		Pusher: &events.Pusher{User: "concourse", Key: "SHA256:abc"}, Author: &events.Person{Name: "git", Email: "git@localhost"},
		Claimed: 1, MaxClaimed: &one, HeldSeconds: &held,
	}
}

func TestJSONSignatureVerifiesWithTheStandardWebhooksLibrary(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a 24-byte-or-so test key"))
	rc := newReceiver(t, nil)
	signer, err := config.WebhookSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	st, d := start(t, fast, config.Webhook{Name: "ops", URL: rc.URL, Format: "json", Secret: secret, Signer: signer})
	e := claimEvent("env-a")
	st.Append(context.Background(), e)
	d.Notify()
	waitFor(t, "delivery", 5*time.Second, func() bool { return len(rc.got()) == 1 })

	r := rc.got()[0]
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(r.body, r.header); err != nil {
		t.Fatalf("standard-webhooks verify: %v\nheaders %v", err, r.header)
	}
	if r.header.Get("webhook-id") != e.ID {
		t.Errorf("webhook-id %q, want the event id %q", r.header.Get("webhook-id"), e.ID)
	}
	// A tampered body must fail: the check above is not vacuous.
	if err := wh.Verify(append([]byte(" "), r.body...), r.header); err == nil {
		t.Error("tampered body verified")
	}
	var p struct {
		Type      string         `json:"type"`
		Timestamp string         `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != "lock.claimed" || p.Timestamp != e.Time.Format(time.RFC3339) {
		t.Errorf("payload: %s", r.body)
	}
	for _, k := range []string{"id", "repo", "branch", "pool", "lock", "action", "commit", "message", "build_url",
		"team", "pipeline", "job", "build", "pusher", "author", "claimed", "max_claimed", "held_seconds"} {
		if _, ok := p.Data[k]; !ok {
			t.Errorf("data has no %q: %s", k, r.body)
		}
	}
}

func TestReceiverFailingThreeTimesGetsEachEventOnceInOrder(t *testing.T) {
	rc := newReceiver(t, func(n int, r *http.Request) (int, http.Header) {
		if n < 3 {
			return 500, nil
		}
		return 204, nil
	})
	st, d := start(t, fast, config.Webhook{Name: "flaky", URL: rc.URL, Format: "json"})
	var want []string
	for _, l := range []string{"env-a", "env-b", "env-c"} {
		e := claimEvent(l)
		want = append(want, e.ID)
		st.Append(context.Background(), e)
	}
	d.Notify()
	waitFor(t, "three deliveries", 10*time.Second, func() bool {
		n := 0
		for _, g := range rc.got() {
			if g.status < 300 {
				n++
			}
		}
		return n == 3
	})
	time.Sleep(100 * time.Millisecond)
	var ok, all []string
	for _, g := range rc.got() {
		all = append(all, g.header.Get("webhook-id"))
		if g.status < 300 {
			ok = append(ok, g.header.Get("webhook-id"))
		}
	}
	if strings.Join(ok, " ") != strings.Join(want, " ") {
		t.Errorf("delivered %v, want %v", ok, want)
	}
	if len(all) != 6 || all[0] != want[0] || all[3] != want[0] {
		t.Errorf("attempts %v: want the first event 4 times, then the others", all)
	}
	log, _ := st.Deliveries(context.Background(), "flaky", 0)
	if len(log) != 6 || log[len(log)-1].Status != 500 || log[0].Status != 204 || log[2].Attempt != 4 {
		t.Errorf("delivery log: %+v", log)
	}
	if w, _ := st.Webhook(context.Background(), "flaky"); w.Seq < 3 {
		t.Errorf("cursor %d after delivering 3 events", w.Seq)
	}
}

func TestSlackBodyEscapesAndOneMessagePerIntervalAndHonours429(t *testing.T) {
	rc := newReceiver(t, func(n int, r *http.Request) (int, http.Header) {
		if n == 0 {
			return 429, http.Header{"Retry-After": {"1"}}
		}
		return 200, nil
	})
	st, d := start(t, fast, config.Webhook{Name: "slack", URL: rc.URL, Format: "slack"})
	e := claimEvent("db<1>&co")
	e.Pipeline = "p&<q>"
	st.Append(context.Background(), e)
	st.Append(context.Background(), claimEvent("env-b"))
	st.Append(context.Background(), claimEvent("env-c"))
	d.Notify()
	waitFor(t, "slack messages", 10*time.Second, func() bool { return len(rc.got()) == 4 })
	g := rc.got()
	if gap := g[1].at.Sub(g[0].at); gap < 950*time.Millisecond {
		t.Errorf("retry %v after a 429 with Retry-After: 1", gap)
	}
	for i := 2; i < 4; i++ {
		if gap := g[i].at.Sub(g[i-1].at); gap < 150*time.Millisecond {
			t.Errorf("messages %d and %d only %v apart", i-1, i, gap)
		}
	}
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
			Text *struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"text"`
			Elements []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"elements"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(g[1].body, &msg); err != nil {
		t.Fatal(err)
	}
	wantLine := "🔒 *staging/db&lt;1&gt;&amp;co* claimed by p&amp;&lt;q&gt;/deploy #42 (<https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42|build>)"
	if msg.Text != wantLine {
		t.Errorf("text:\n got %s\nwant %s", msg.Text, wantLine)
	}
	if len(msg.Blocks) != 2 || msg.Blocks[0].Type != "section" || msg.Blocks[0].Text.Type != "mrkdwn" || msg.Blocks[0].Text.Text != wantLine ||
		msg.Blocks[1].Type != "context" || len(msg.Blocks[1].Elements) != 1 || msg.Blocks[1].Elements[0].Type != "mrkdwn" {
		t.Errorf("blocks: %s", g[1].body)
	}
}

func TestConcourseTargetGetsOnePostForABurstOfFiveChanges(t *testing.T) {
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header) { return 201, nil })
	other := newReceiver(t, nil)
	st, d := start(t, fast,
		config.Webhook{Name: "check", URL: rc.URL + "/api/v1/teams/main/pipelines/p/resources/locks/check/webhook?webhook_token=tok", Format: "concourse", Pools: []string{"staging"}},
		config.Webhook{Name: "elsewhere", URL: other.URL, Format: "concourse", Pools: []string{"prod"}})
	for i := 0; i < 5; i++ {
		st.Append(context.Background(), claimEvent(fmt.Sprintf("env-%d", i)))
		d.Notify()
		time.Sleep(30 * time.Millisecond)
	}
	waitFor(t, "check request", 5*time.Second, func() bool { return len(rc.got()) >= 1 })
	time.Sleep(2 * fast.Coalesce)
	g := rc.got()
	if len(g) != 1 {
		t.Fatalf("%d POSTs for a burst of five, want 1", len(g))
	}
	if len(g[0].body) != 0 {
		t.Errorf("body %q, want a bare POST", g[0].body)
	}
	if len(other.got()) != 0 {
		t.Errorf("a target following another pool was called")
	}
}

func TestGoneDisablesTargetAndOthersKeepGoing(t *testing.T) {
	gone := newReceiver(t, func(int, *http.Request) (int, http.Header) { return 410, nil })
	slow := newReceiver(t, func(int, *http.Request) (int, http.Header) { time.Sleep(2 * time.Second); return 200, nil })
	ok := newReceiver(t, nil)
	st, d := start(t, fast,
		config.Webhook{Name: "gone", URL: gone.URL, Format: "json"},
		config.Webhook{Name: "slow", URL: slow.URL, Format: "json"},
		config.Webhook{Name: "ok", URL: ok.URL, Format: "json"})
	st.Append(context.Background(), claimEvent("env-a"))
	st.Append(context.Background(), claimEvent("env-b"))
	d.Notify()
	waitFor(t, "healthy target", time.Second, func() bool { return len(ok.got()) == 2 })
	waitFor(t, "disable", 5*time.Second, func() bool {
		w, _ := st.Webhook(context.Background(), "gone")
		return w.Disabled != ""
	})
	time.Sleep(100 * time.Millisecond)
	if n := len(gone.got()); n != 1 {
		t.Errorf("a disabled target got %d requests, want 1", n)
	}
}

func TestTargetGivesUpOnAnEventAfterTheBoundAndMovesOn(t *testing.T) {
	rc := newReceiver(t, func(n int, r *http.Request) (int, http.Header) {
		if strings.Contains(r.Header.Get("webhook-id"), "env-a") {
			return 500, nil
		}
		return 200, nil
	})
	opt := fast
	opt.GiveUpAfter = 200 * time.Millisecond
	st, d := start(t, opt, config.Webhook{Name: "x", URL: rc.URL, Format: "json"})
	st.Append(context.Background(), claimEvent("env-a"))
	b := claimEvent("env-b")
	st.Append(context.Background(), b)
	d.Notify()
	waitFor(t, "the next event", 5*time.Second, func() bool {
		g := rc.got()
		return len(g) > 0 && g[len(g)-1].header.Get("webhook-id") == b.ID
	})
	log, _ := st.Deliveries(context.Background(), "x", 0)
	found := false
	for _, l := range log {
		found = found || strings.HasPrefix(l.Error, "gave up")
	}
	if !found {
		t.Errorf("no give-up entry in the delivery log: %+v", log)
	}
}

func TestDeliveryErrorsKeepTheURLsTokenOutOfLogAndAPI(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL + "/api/v1/teams/main/pipelines/p/resources/locks/check/webhook?webhook_token=s3cret"
	dead.Close() // connection refused from now on
	st, d := start(t, fast, config.Webhook{Name: "check", URL: url, Format: "concourse"})
	st.Append(context.Background(), claimEvent("env-a"))
	d.Notify()
	waitFor(t, "a failed attempt", 5*time.Second, func() bool {
		log, _ := st.Deliveries(context.Background(), "check", 0)
		return len(log) > 0
	})
	log, _ := st.Deliveries(context.Background(), "check", 0)
	if l := log[0]; l.Error == "" || strings.Contains(l.Error, "s3cret") || l.Status != 0 {
		t.Errorf("delivery log entry %+v", l)
	}
}

func TestTargetsCountOnlyWhatEachTargetWillSend(t *testing.T) {
	st, err := events.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	hooks := []config.Webhook{{Name: "staging", Format: "json", Pools: []string{"staging"}}, {Name: "all", Format: "json"}}
	for _, h := range hooks {
		st.InitWebhook(context.Background(), h.Name)
	}
	st.Append(context.Background(), claimEvent("env-a"))
	other := claimEvent("db")
	other.Pool = "prod"
	st.Append(context.Background(), other)
	ts, err := Targets(context.Background(), &config.Config{Webhooks: hooks}, st, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].Pending != 1 || ts[1].Pending != 2 || ts[0].LastOK != nil {
		t.Errorf("targets: %+v", ts)
	}
}

func TestGiveUpBoundCountsFromTheFirstFailureBeforeARestart(t *testing.T) {
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header) { return 503, nil })
	st, err := events.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st.InitWebhook(ctx, "x")
	e := claimEvent("env-a")
	st.Append(ctx, e)
	// A previous run of the daemon has been failing on this event for 25h.
	st.FailingSince(ctx, "x", e.Seq, time.Now().Add(-25*time.Hour))
	opt := fast
	opt.GiveUpAfter = 24 * time.Hour
	d := New(config.NewLive(&config.Config{Webhooks: []config.Webhook{{Name: "x", URL: rc.URL, Format: "json"}}}), st, zerolog.Nop(), opt)
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "giving up", 5*time.Second, func() bool {
		w, _ := st.Webhook(ctx, "x")
		return w.Seq == e.Seq
	})
	if n := len(rc.got()); n != 1 {
		t.Errorf("%d attempts after the restart, want 1", n)
	}
}

func TestTargetDisabledByGoneIsEnabledAgainOnlyWhenItsURLChanges(t *testing.T) {
	ctx := context.Background()
	st, err := events.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	init := func(url string) string {
		d := New(config.NewLive(&config.Config{Webhooks: []config.Webhook{{Name: "x", URL: url, Format: "json"}}}), st, zerolog.Nop(), fast)
		if err := d.Init(ctx); err != nil {
			t.Fatal(err)
		}
		w, _ := st.Webhook(ctx, "x")
		return w.Disabled
	}
	init("https://old.example.com/hook")
	st.DisableWebhook(ctx, "x", "410 Gone")
	if init("https://old.example.com/hook") == "" {
		t.Error("a restart with the same URL enabled a target that answered 410")
	}
	if got := init("https://new.example.com/hook"); got != "" {
		t.Errorf("still disabled (%q) after the URL changed", got)
	}
}
