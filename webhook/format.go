// Package webhook delivers stored events to the webhook targets of the
// config (DESIGN.md §5): signed JSON (Standard Webhooks), Slack incoming
// webhooks and Concourse resource check webhooks. Each target has its own
// goroutine and durable cursor, so a dead target only ever delays itself.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/poolgate/poolgate/events"
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

// Sign returns the webhook-signature header value for a message:
// "v1," + base64(HMAC-SHA256(key, id.timestamp.body)) where the key is the
// base64 part of a "whsec_" secret.
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	key, err := secretKey(secret)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.", id, ts.Unix())
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}

func secretKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, errors.New(`webhook secret must start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	return key, nil
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// slackLink is <URL|label>; a label cannot hold '|'.
func slackLink(url, label string) string {
	if url == "" {
		return slackEscape(label)
	}
	return "<" + slackEscape(url) + "|" + strings.ReplaceAll(slackEscape(label), "|", "¦") + ">"
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
	switch {
	case e.Operator != nil:
		return "operator " + e.Operator.Name + " (" + e.Operator.Reason + ")"
	case e.Pipeline != "" && e.Job != "":
		l := e.Pipeline + "/" + e.Job
		if e.Build != "" {
			l += " #" + e.Build
		}
		return l
	case e.BuildID != "":
		return "one-off build " + e.BuildID
	case e.BuildURL != "":
		return e.BuildURL
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
	by := slackLink(e.BuildURL, buildLabel(e))
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
		s := "⛔ push by " + slackEscape(who) + " to *" + slackEscape(e.Repo) + "* refused (`" + slackEscape(e.Rule) + "`"
		if e.Kind == "transient" {
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

// SlackBody is an incoming-webhook message: the line as fallback text and
// as a mrkdwn section, with the repo and commit as context.
func SlackBody(e *events.Event) ([]byte, error) {
	line := SlackLine(e)
	ctx := "repo " + slackEscape(e.Repo)
	if e.Commit != "" {
		c := e.Commit
		if len(c) > 10 {
			c = c[:10]
		}
		ctx += " · commit `" + slackEscape(c) + "`"
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
