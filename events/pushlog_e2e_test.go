package events_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/poolgate/poolgate/pushlog"
)

// A claim the validator lets through but whose ref update fails (the
// branch's ref locked by another writer's .lock, as a full disk fails it)
// is not recorded as accepted and announces nothing; the next claim, once
// the ref can move, is recorded and announced with its pusher.
func TestClaimWhoseRefUpdateFailsOverSSHIsNotRecordedOrAnnounced(t *testing.T) {
	rc := newReceiver(t)
	f := newFixture(t, `
      - name: demo
        locks: [lock-a, lock-b]`, fmt.Sprintf(`
  - name: json
    url: %s/json
    format: json
    events: [claimed]
    secret: %s`, rc.URL, secret))
	s := f.Start()
	c := s.Client("deploy", "demo", buildURL)
	ctx := ctxT(t, 2*time.Minute)
	repo := filepath.Join(f.Data, "repos", "locks.git")
	lock := filepath.Join(repo, "refs", "heads", "master.lock")
	if err := os.WriteFile(lock, []byte("held\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Git(ctx, "mv", "demo/unclaimed/lock-a", "demo/claimed/lock-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Git(ctx, "commit", "-q", "-m", c.Message("claiming", "lock-a")); err != nil {
		t.Fatal(err)
	}
	failed := rev(c.Git(ctx, "rev-parse", "HEAD"))
	out, err := c.Git(ctx, "push", "origin", "HEAD:master")
	if err == nil || !strings.Contains(out, "lock") {
		t.Fatalf("push through a held ref lock: err %v\n%s", err, out)
	}
	os.Remove(lock)
	c.Git(ctx, "fetch", "-q", "origin")
	c.Git(ctx, "reset", "-q", "--hard", "origin/master")
	if err := c.Claim(ctx, "lock-b"); err != nil {
		t.Fatal(err)
	}
	landed := rev(c.Git(ctx, "rev-parse", "HEAD"))
	// Delivery is in order: once lock-b's claim is here, anything derived
	// from the failed push would have been delivered before it.
	waitFor(t, "lock-b's claim", 30*time.Second, func() bool { return len(rc.payloads("/json", "lock.claimed")) > 0 })
	claims := rc.payloads("/json", "lock.claimed")
	if len(claims) != 1 || claims[0].Data["lock"] != "lock-b" {
		t.Fatalf("claims announced: %v; want lock-b's only", claims)
	}
	if p, _ := claims[0].Data["pusher"].(map[string]any); p["user"] != "writer" {
		t.Errorf("lock-b's claim has pusher %v, want writer", claims[0].Data["pusher"])
	}
	if h := f.Run("history", "--config", f.Config, "locks", "--lock", "lock-a"); strings.Contains(h, "claimed") {
		t.Errorf("history has a claim of lock-a from a push that did not land:\n%s", h)
	}
	lines, _, err := pushlog.At(repo).Read(pushlog.Pushes, 0)
	if err != nil {
		t.Fatal(err)
	}
	var accepted []string
	for _, l := range lines {
		var p pushlog.Push
		pushlog.Decode(l, &p)
		accepted = append(accepted, p.New)
	}
	if strings.Contains(strings.Join(accepted, " "), failed) {
		t.Errorf("the failed push %s is recorded as accepted: %v", failed, accepted)
	}
	if len(accepted) == 0 || accepted[len(accepted)-1] != landed {
		t.Errorf("accepted records %v do not end with the landed claim %s", accepted, landed)
	}
}

// A build waiting on a full pool is refused over-limit; the `rejected`
// event's JSON webhook says which build waits (URL, team, pipeline, job,
// build) and how full the pool was: claimed 1 of max_claimed 1, not 0.
func TestOverLimitRejectionOverSSHCarriesTheBuildAndThePoolsCounts(t *testing.T) {
	rc := newReceiver(t)
	f := newFixture(t, `
      - name: demo
        max_claimed: 1
        locks: [lock-a, lock-b]`, fmt.Sprintf(`
  - name: json
    url: %s/json
    format: json
    events: [rejected]
    secret: %s`, rc.URL, secret))
	s := f.Start()
	ctx := ctxT(t, 2*time.Minute)
	if err := s.Client("holder", "demo", buildURL).Claim(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}
	const waitingURL = "https://ci.example.com/teams/qa/pipelines/nightly/jobs/smoke/builds/7"
	waiting := s.Client("waiting", "demo", waitingURL)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- waiting.Claim(wctx, "lock-b") }()
	waitFor(t, "the over-limit rejection", 30*time.Second, func() bool { return len(rc.payloads("/json", "lock.rejected")) > 0 })
	cancel()
	<-done
	p := rc.payloads("/json", "lock.rejected")[0]
	wh, _ := standardwebhooks.NewWebhook(secret)
	if err := wh.Verify(p.hit.body, p.hit.header); err != nil {
		t.Errorf("signature: %v", err)
	}
	want := map[string]any{"rule": "over-limit", "kind": "transient", "pool": "demo", "lock": "lock-b",
		"build_url": waitingURL, "team": "qa", "pipeline": "nightly", "job": "smoke", "build": "7",
		"claimed": float64(1), "max_claimed": float64(1)}
	for k, v := range want {
		if p.Data[k] != v {
			t.Errorf("rejected data.%s = %v, want %v", k, p.Data[k], v)
		}
	}
	if t.Failed() {
		t.Logf("payload: %s", p.hit.body)
	}
}

// One push adding 5,000 locks reaches Slack as one summary message, and a
// claim pushed after it is the very next message, not 5,000 seconds later.
func TestPushAdding5000LocksIsOneSlackSummaryAndTheNextClaimFollowsIt(t *testing.T) {
	rc := newReceiver(t)
	f := newFixture(t, `
      - name: demo
        locks: [lock-a]`, fmt.Sprintf(`
  - name: slack
    url: %s/slack
    format: slack`, rc.URL))
	s := f.Start()
	c := s.Client("bulk", "demo", buildURL)
	ctx := ctxT(t, 3*time.Minute)
	// The pool's creation (lock-a added) is announced first.
	waitFor(t, "lock-a's creation on Slack", time.Minute, func() bool { return len(rc.delivered("/slack", true)) == 1 })
	for i := 0; i < 5000; i++ {
		if err := os.WriteFile(filepath.Join(c.Dir, "demo", "unclaimed", fmt.Sprintf("env-%04d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"add", "-A"}, {"commit", "-q", "-m", "bulk import of test environments"}, {"push", "-q", "origin", "HEAD:master"}} {
		if out, err := c.Git(ctx, args...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	if err := c.Claim(ctx, "lock-a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the claim on Slack", time.Minute, func() bool {
		h := rc.delivered("/slack", true)
		return len(h) > 0 && strings.Contains(string(h[len(h)-1].body), "claimed by")
	})
	h := rc.delivered("/slack", true)[1:]
	if len(h) != 2 {
		t.Fatalf("%d Slack messages for a 5,000-lock push and a claim, want 2: the summary, then the claim", len(h))
	}
	if b := string(h[0].body); !strings.Contains(b, "5000 lock events from one push") || !strings.Contains(b, "5000 added") {
		t.Errorf("first message is not the summary: %s", b)
	}
	if b := string(h[1].body); !strings.Contains(b, "*demo/lock-a* claimed by p/deploy #42") {
		t.Errorf("second message is not the claim: %s", b)
	}
}

func rev(out string, _ error) string { return strings.TrimSpace(out) }
