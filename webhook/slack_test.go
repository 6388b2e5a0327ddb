package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/events"
	"github.com/rs/zerolog"
)

// A pusher writes the commit message, so its "Build URL:" is attacker
// text: a '|' must not make the rest of it a link label, '<'/'>' must not
// open or close a link, a non-http URL is not linked, and labels are fixed.
func TestSlackHostileBuildURLNeverBecomesALinkOrItsLabel(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"https://ci.example.com/b/1|<!channel> pwned <https://evil.example|click>",
			"🔒 *staging/env-a* claimed by a build (<https://ci.example.com/b/1%7C%3C%21channel%3E%20pwned%20%3Chttps://evil.example%7Cclick%3E|build>)"},
		{"https://ci.example.com/b/1?x=a|b&c=<d>",
			"🔒 *staging/env-a* claimed by a build (<https://ci.example.com/b/1?x=a%7Cb&amp;c=&lt;d&gt;|build>)"},
		{"javascript:alert(1)//|click", "🔒 *staging/env-a* claimed by a build"},
		{"ci.example.com/no-scheme|click", "🔒 *staging/env-a* claimed by a build"},
		{"", "🔒 *staging/env-a* claimed by concourse"},
	} {
		e := claimEvent("env-a")
		e.Pipeline, e.Job, e.Build, e.BuildURL = "", "", "", c.url
		if got := SlackLine(e); got != c.want {
			t.Errorf("Build URL %q:\n got %s\nwant %s", c.url, got, c.want)
		}
	}
	// Pipeline and job names from the old message format are commit text
	// too: escaped, outside the link.
	e := claimEvent("env-a")
	e.Pipeline, e.Job = "p|<https://evil.example|x>", "j&"
	want := "🔒 *staging/env-a* claimed by p|&lt;https://evil.example|x&gt;/j&amp; #42 (<https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42|build>)"
	if got := SlackLine(e); got != want {
		t.Errorf("hostile pipeline:\n got %s\nwant %s", got, want)
	}
}

// One push adding 200 locks is one summary message, not 200 messages at
// Slack's 1/s; a claim pushed after it is the very next message.
func TestSlackBurstFromOnePushIsOneSummaryAndTheNextClaimFollowsIt(t *testing.T) {
	rc := newReceiver(t, nil)
	hook := config.Webhook{Name: "slack", URL: rc.URL, Format: "slack"}
	st, err := events.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := st.InitWebhook(ctx, hook.Name); err != nil {
		t.Fatal(err)
	}
	// The deriver stores a push's events in one transaction; here they are
	// stored one by one, all before delivery starts.
	push := time.Now().UTC().Truncate(time.Second)
	for i := 0; i < 200; i++ {
		e := claimEvent(fmt.Sprintf("env-%03d", i))
		e.Type, e.Action, e.Time = events.Added, events.Added, push
		if i%2 == 1 {
			e.Pool = "prod"
		}
		st.Append(ctx, e)
	}
	claim := claimEvent("env-000")
	claim.Time = push.Add(time.Second)
	st.Append(ctx, claim)
	d := New(config.NewLive(&config.Config{Webhooks: []config.Webhook{hook}}), st, zerolog.Nop(), fast)
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	waitFor(t, "the claim after the burst", 20*time.Second, func() bool {
		g := rc.got()
		return len(g) > 0 && strings.Contains(string(g[len(g)-1].body), "claimed by")
	})
	g := rc.got()
	if len(g) != 2 {
		t.Fatalf("%d Slack messages for a 200-lock push and a claim, want 2 (a summary, then the claim)", len(g))
	}
	var first, second struct{ Text string }
	json.Unmarshal(g[0].body, &first)
	json.Unmarshal(g[1].body, &second)
	wantSummary := "📦 200 lock events from one push to *locks* by p/deploy #42 (<https://ci.example.com/teams/main/pipelines/p/jobs/deploy/builds/42|build>): 200 added — pools staging, prod"
	if first.Text != wantSummary {
		t.Errorf("summary:\n got %s\nwant %s", first.Text, wantSummary)
	}
	if !strings.HasPrefix(second.Text, "🔒 *staging/env-000* claimed by") {
		t.Errorf("second message: %s", second.Text)
	}
}
