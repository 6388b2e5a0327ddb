package webhook

import (
	"context"
	"testing"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/events"
	"github.com/rs/zerolog"
)

// A reload that removes webhook A and adds B: once the reload's Store has
// returned, A gets nothing more (not even at its own poll), and B gets the
// next event but none from before the reload; an unchanged webhook C goes
// on from its cursor; a reload that names the same webhooks restarts none.
func TestReloadThatSwapsAWebhookSendsTheNextEventToTheNewOneOnly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := events.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, b, c := newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil)
	hookA := config.Webhook{Name: "a", URL: a.URL, Format: "json"}
	hookC := config.Webhook{Name: "c", URL: c.URL, Format: "json"}
	live := config.NewLive(&config.Config{Webhooks: []config.Webhook{hookA, hookC}})
	d := New(live, st, zerolog.Nop(), fast)
	if err := d.Init(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	before := claimEvent("env-a")
	st.Append(ctx, before)
	d.Notify()
	waitFor(t, "the first event at A and C", 5*time.Second, func() bool { return len(a.got()) == 1 && len(c.got()) == 1 })

	live.Store(&config.Config{Webhooks: []config.Webhook{{Name: "b", URL: b.URL, Format: "json"}, hookC}})
	if got := d.Webhooks(); len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Fatalf("webhooks after the reload: %v", got)
	}
	after := claimEvent("env-b")
	st.Append(ctx, after)
	d.Notify()
	waitFor(t, "the next event at B and C", 5*time.Second, func() bool { return len(b.got()) == 1 && len(c.got()) == 2 })
	if got := b.got()[0].header.Get("webhook-id"); got != after.ID {
		t.Errorf("B's first delivery is %q, want the event after the reload %q", got, after.ID)
	}
	// A was stopped inside Store: however often its old poll would have
	// come round, it sent nothing after the reload.
	if n := len(a.got()); n != 1 {
		t.Errorf("removed webhook A got %d deliveries, want only the one before the reload", n)
	}

	// The same webhooks again (a reload that changed something else):
	// nothing restarts, nothing is sent twice.
	live.Store(&config.Config{Webhooks: []config.Webhook{{Name: "b", URL: b.URL, Format: "json"}, hookC}})
	again := claimEvent("env-d")
	st.Append(ctx, again)
	d.Notify()
	waitFor(t, "the event after the second reload at B and C", 5*time.Second, func() bool { return len(b.got()) == 2 && len(c.got()) == 3 })
	for _, rc := range []*receiver{b, c} {
		seen := map[string]int{}
		for _, g := range rc.got() {
			seen[g.header.Get("webhook-id")]++
		}
		for id, n := range seen {
			if n > 1 {
				t.Errorf("%s delivered %d times", id, n)
			}
		}
	}
}
