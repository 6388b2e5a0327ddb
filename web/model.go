// Package web serves poolgate's read-only HTTP side: the status page, the
// JSON API and /metrics. It reads through the Backend interface, so it
// knows nothing of how events are derived or stored.
package web

import (
	"context"
	"errors"
	"time"

	"github.com/poolgate/poolgate/events"
	"github.com/poolgate/poolgate/pool"
)

// ErrUnknownRepo is returned by a Backend for a repo it does not serve.
var ErrUnknownRepo = errors.New("unknown repo")

// Backend is what the pages and the API read.
type Backend interface {
	Repos() []Repo
	Pools(ctx context.Context, repo string) ([]Pool, error)
	Events(ctx context.Context, repo string, q Query) ([]Event, error)
	Rejections(ctx context.Context, repo string, limit int) ([]Event, error)
	Webhooks(ctx context.Context) ([]Webhook, error)
}

// Repo is a served repo and its configured pools.
type Repo struct {
	Name   string   `json:"name"`
	Branch string   `json:"branch"`
	Pools  []string `json:"pools"`
	// Mirror is set for a watch-mode repo: a mirror of a repo hosted
	// elsewhere, only as fresh as its last sync.
	Mirror *Mirror `json:"mirror,omitempty"`
}

// Mirror is a watched repo's fetch health.
type Mirror struct {
	LastSync  *time.Time `json:"last_sync"`
	LastError string     `json:"last_error,omitempty"`
	Failures  int64      `json:"fetch_failures"`
}

// Pool is one pool as it stands now.
type Pool struct {
	Name       string `json:"name"`
	MaxClaimed *int   `json:"max_claimed"`
	// StaleAfterSeconds is the pool's stale_after; null when unset.
	StaleAfterSeconds *int64 `json:"stale_after_seconds"`
	Claimed           int    `json:"claimed"`
	Total             int    `json:"total"`
	Locks             []Lock `json:"locks"`
	// Waiting are builds refused over max_claimed that still retry
	// (DESIGN.md §10), longest waiting first.
	Waiting []events.Waiter `json:"waiting"`
}

// Lock is one lock now.
type Lock struct {
	Name        string    `json:"name"`
	State       string    `json:"state"`
	Since       time.Time `json:"since,omitzero"`
	HeldSeconds *int64    `json:"held_seconds"`
	HeldBy      *Holder   `json:"held_by"`
	Commit      string    `json:"commit,omitempty"`
	Stale       bool      `json:"stale"`
	// Content is the lock file's text, cut at 1 KiB (ContentTruncated).
	Content          string `json:"content"`
	ContentTruncated bool   `json:"content_truncated,omitempty"`
}

// Holder is who holds a claimed lock.
type Holder struct {
	User     string `json:"user,omitempty"`
	Key      string `json:"key,omitempty"`
	BuildURL string `json:"build_url,omitempty"`
	Team     string `json:"team,omitempty"`
	Pipeline string `json:"pipeline,omitempty"`
	Job      string `json:"job,omitempty"`
	Build    string `json:"build,omitempty"`
}

// Query filters the event history.
type Query struct {
	Pool  string
	Lock  string
	Type  string
	Limit int
}

// Event is one entry of a repo's history. Data is the event as webhooks
// carry it (DESIGN.md §5); the other fields are what the page shows.
type Event struct {
	Type        string    `json:"type"`
	Time        time.Time `json:"timestamp"`
	ID          string    `json:"id"`
	Pool        string    `json:"pool,omitempty"`
	Lock        string    `json:"lock,omitempty"`
	Commit      string    `json:"commit,omitempty"`
	User        string    `json:"user,omitempty"`
	HeldSeconds *int64    `json:"held_seconds,omitempty"`
	Build       *Holder   `json:"build,omitempty"`
	Rule        string    `json:"rule,omitempty"`
	Kind        string    `json:"kind,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	// Violations are every rule a refused push broke (Rule and Reason
	// repeat the first), as the hook recorded them.
	Violations []events.Violation `json:"violations,omitempty"`
	Data       any                `json:"data"`

	// Operator is set on an operator's action: who, and why.
	Operator *pool.Operator `json:"operator,omitempty"`
}

// Webhook is a delivery target and its health.
type Webhook struct {
	Name       string     `json:"name"`
	Format     string     `json:"format"`
	URL        string     `json:"url"` // with credentials and query redacted
	Cursor     int64      `json:"cursor"`
	Pending    int64      `json:"pending"`
	Disabled   string     `json:"disabled,omitempty"`
	LastOK     *time.Time `json:"last_ok,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
	Deliveries []Delivery `json:"deliveries"`
}

// Delivery is one attempt.
type Delivery struct {
	Time     time.Time `json:"time"`
	EventID  string    `json:"event_id"`
	Status   int       `json:"status"`
	Error    string    `json:"error,omitempty"`
	Duration float64   `json:"duration_seconds"`
}
