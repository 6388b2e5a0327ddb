// Package webhook delivers stored events to the webhook targets of the
// config (DESIGN.md §5): signed JSON (Standard Webhooks), Slack incoming
// webhooks and Concourse resource check webhooks. Each target has its own
// goroutine and durable cursor, so a dead target only ever delays itself.
package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/events"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/validator"
)

// Payload is the JSON format's body.
type Payload struct {
	Type      string        `json:"type"`
	Timestamp string        `json:"timestamp"`
	Data      *events.Event `json:"data"`
}

// JSONBody is the Standard Webhooks body of an event.
func JSONBody(e *events.Event) ([]byte, error) {
	return json.Marshal(Payload{Type: e.WebhookType(), Timestamp: e.Time.UTC().Format(time.RFC3339), Data: e})
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// slackURL is raw as it may stand inside a Slack link, or "" when raw is
// not an absolute http(s) URL. Commit text chooses it: re-encoded and
// escaped, nothing in it can end the link or start its label.
func slackURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	// String() percent-encodes the path but keeps the query as given.
	return slackEscape(strings.NewReplacer("|", "%7C", " ", "%20").Replace(u.String()))
}

// slackBuildLink is " (<URL|build>)" for an event's build, or "". Security:
// the label is fixed text, never taken from a commit.
func slackBuildLink(e *events.Event) string {
	if u := slackURL(e.BuildURL); u != "" {
		return " (<" + u + "|build>)"
	}
	return ""
}

// Human formats a duration the way the status table and Slack show it:
// "45s", "12m", "2h 5m", "3d 4h".
func Human(d time.Duration) string {
	s := int64(d.Seconds())
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm", s/60)
	case s < 86400:
		if m := (s % 3600) / 60; m > 0 {
			return fmt.Sprintf("%dh %dm", s/3600, m)
		}
		return fmt.Sprintf("%dh", s/3600)
	}
	if h := (s % 86400) / 3600; h > 0 {
		return fmt.Sprintf("%dd %dh", s/86400, h)
	}
	return fmt.Sprintf("%dd", s/86400)
}

// buildLabel names the build behind an event: "p/deploy #42", "one-off
// build 17", "operator alice (why)", or else the pusher.
func buildLabel(e *events.Event) string {
	if e.Operator != nil {
		return "operator " + e.Operator.Name + " (" + e.Operator.Reason + ")"
	}
	if l := pool.BuildLabel(e.Pipeline, e.Job, e.Build, e.BuildID); l != "" {
		return l
	}
	switch {
	case e.BuildURL != "":
		return "a build"
	case e.Pusher != nil && e.Pusher.User != "":
		return e.Pusher.User
	}
	return "someone"
}

func held(e *events.Event) string {
	if e.HeldSeconds == nil {
		return ""
	}
	return Human(time.Duration(*e.HeldSeconds) * time.Second)
}

// SlackLine is the one-line summary of an event, in Slack mrkdwn.
func SlackLine(e *events.Event) string {
	lock := "*" + slackEscape(e.Pool+"/"+e.Lock) + "*"
	by := slackEscape(buildLabel(e)) + slackBuildLink(e)
	switch e.Type {
	case events.Claimed:
		return "🔒 " + lock + " claimed by " + by
	case events.Released:
		s := "🔓 " + lock + " released"
		if h := held(e); h != "" {
			s += " after " + h
		}
		return s + " by " + by
	case events.Added:
		s := "➕ " + lock + " added"
		if e.State == "claimed" {
			s += " claimed"
		}
		return s + " by " + by
	case events.Removed:
		s := "➖ " + lock + " removed"
		if h := held(e); h != "" {
			s += " after " + h + " held"
		}
		return s + " by " + by
	case events.Updated:
		return "✏️ " + lock + " updated by " + by
	case events.Stale:
		return "⏰ " + lock + " held for " + held(e) + " by " + by + " — past its pool's stale_after"
	case events.Rejected:
		who := "someone"
		if e.Pusher != nil {
			who = e.Pusher.User
		}
		s := "⛔ push by " + slackEscape(who) + slackBuildLink(e) + " to *" + slackEscape(e.Repo) + "* refused (`" + slackEscape(e.Rule) + "`"
		if e.Kind == string(validator.Transient) {
			s += ", waiting"
		}
		s += "): " + slackEscape(e.Reason)
		if e.Pool != "" {
			s += " — " + lock
		}
		return s
	case events.Violated:
		who := "someone"
		if e.Pusher != nil {
			who = e.Pusher.User
		}
		s := "🚨 a push by " + slackEscape(who) + " upstream to *" + slackEscape(e.Repo) + "* broke `" + slackEscape(e.Rule) + "`: " + slackEscape(e.Reason)
		if e.Pool != "" {
			s += " — " + lock
		}
		return s
	}
	return slackEscape(e.Type) + " " + lock
}

// SlackSummary is the one line for a burst of events from one push:
// counts by type and the pools touched.
func SlackSummary(evs []*events.Event) string {
	counts := map[string]int{}
	var pools []string
	for _, e := range evs {
		counts[e.Type]++
		if e.Pool != "" && !slices.Contains(pools, e.Pool) {
			pools = append(pools, e.Pool)
		}
	}
	var parts []string
	for _, typ := range config.EventTypes {
		if n := counts[typ]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, typ))
		}
	}
	first := evs[0]
	s := fmt.Sprintf("📦 %d lock events from one push to *%s* by %s%s: %s", len(evs), slackEscape(first.Repo),
		slackEscape(buildLabel(first)), slackBuildLink(first), strings.Join(parts, ", "))
	if len(pools) > 0 {
		more := ""
		if len(pools) > 5 {
			pools, more = pools[:5], ", …"
		}
		s += " — pools " + slackEscape(strings.Join(pools, ", ")) + more
	}
	return s
}

// SlackBody is an incoming-webhook message: the line as fallback text and
// as a mrkdwn section, with the repo and commit as context. Several events
// (a burst from one push) make one summary message.
func SlackBody(evs ...*events.Event) ([]byte, error) {
	e := evs[0]
	line := SlackLine(e)
	if len(evs) > 1 {
		line = SlackSummary(evs)
	}
	ctx := "repo " + slackEscape(e.Repo)
	if e.Commit != "" {
		ctx += " · commit `" + slackEscape(pool.Short(e.Commit)) + "`"
	}
	if e.Pusher != nil && e.Pusher.User != "" {
		ctx += " · pushed by " + slackEscape(e.Pusher.User)
	}
	type text struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	type block struct {
		Type     string `json:"type"`
		Text     *text  `json:"text,omitempty"`
		Elements []text `json:"elements,omitempty"`
	}
	return json.Marshal(struct {
		Text   string  `json:"text"`
		Blocks []block `json:"blocks"`
	}{
		Text: line,
		Blocks: []block{
			{Type: "section", Text: &text{Type: "mrkdwn", Text: line}},
			{Type: "context", Elements: []text{{Type: "mrkdwn", Text: ctx}}},
		},
	})
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
