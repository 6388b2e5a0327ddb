// Package events turns a pool repo's history, and the push records the
// pre-receive hook leaves beside it, into the lock events of DESIGN.md §5,
// and keeps them in a durable store that the daemon, the webhook delivery
// and the status/history commands share.
//
// Events are derived, never captured: the branch's first-parent chain and
// the hook's fsynced JSON-lines records are the source of truth, so an event
// lost to a crash is derived again, with the same id, at the next start.
package events

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/pushlog"
)

// Event types (config.EventTypes).
const (
	Added    = "added"
	Removed  = "removed"
	Claimed  = "claimed"
	Released = "released"
	Updated  = "updated"
	Stale    = "stale"
	Rejected = "rejected"
)

// Person is a commit author.
type Person struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

// Pusher is who pushed, as the SSH key proved it.
type Pusher struct {
	User string `json:"user"`
	Key  string `json:"key"`
}

// Violation is one reason a push was refused, as the hook recorded it.
type Violation = pushlog.Violation

// Event is one thing that happened to a lock, or one refused push. Its JSON
// form is the `data` object of the webhook payload (DESIGN.md §5).
type Event struct {
	// Seq orders events in the store; 0 until stored.
	Seq  int64     `json:"-"`
	Type string    `json:"-"`
	Time time.Time `json:"-"`
	// Announce is false for a transient rejection repeated within the
	// coalescing window: recorded for the history, not sent to webhooks.
	Announce bool `json:"-"`

	ID       string `json:"id"`
	Repo     string `json:"repo"`
	Branch   string `json:"branch"`
	Pool     string `json:"pool"`
	Lock     string `json:"lock"`
	Action   string `json:"action"`
	State    string `json:"state,omitempty"` // the lock's state after the event: claimed, unclaimed, absent
	Commit   string `json:"commit"`
	Message  string `json:"message"`
	BuildURL string `json:"build_url"`
	Team     string `json:"team"`
	Pipeline string `json:"pipeline"`
	Job      string `json:"job"`
	Build    string `json:"build"`
	// BuildID is a one-off build's id (old message format); build is empty then.
	BuildID     string  `json:"build_id,omitempty"`
	Pusher      *Pusher `json:"pusher"`
	Author      *Person `json:"author"`
	Claimed     int     `json:"claimed"`
	MaxClaimed  *int    `json:"max_claimed"` // null: no limit
	HeldSeconds *int64  `json:"held_seconds"`
	// ClaimCommit is the commit that claimed the lock (released, removed, stale).
	ClaimCommit string `json:"claim_commit,omitempty"`
	// HistoryRewrite marks a claim or release that no commit made: a
	// forced push (upstream, or an admin's) replaced the history, and the
	// new tip has the lock in a state the old history left it out of.
	HistoryRewrite bool `json:"history_rewrite,omitempty"`
	// Operator is set on an operator's action (poolgate release, the API,
	// the page, release_after): who, and why. A `released` event with it
	// is a lock "released by operator".
	Operator *pool.Operator `json:"operator,omitempty"`

	// Rejections only.
	Rule       string      `json:"rule,omitempty"`
	Reason     string      `json:"reason,omitempty"`
	Kind       string      `json:"kind,omitempty"`
	Ref        string      `json:"ref,omitempty"`
	Violations []Violation `json:"violations,omitempty"`
}

// webhookPrefix turns an event type into the payload's type field.
const webhookPrefix = "lock."

// WebhookType is the payload's type field: "lock.claimed", "lock.rejected".
func (e *Event) WebhookType() string { return webhookPrefix + e.Type }

// TypeOfWebhookType is the event type a filter names either way:
// "lock.claimed" (as payloads spell it) or "claimed".
func TypeOfWebhookType(t string) string { return strings.TrimPrefix(t, webhookPrefix) }

// ID is an event's stable id: the same inputs always give the same id, so
// re-deriving after a crash cannot duplicate an event and receivers can
// de-duplicate redeliveries.
func ID(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return "evt_" + hex.EncodeToString(h[:16])
}

// TypeOf maps a tree operation to its event type. An add-claimed is an
// `added` event whose state is claimed (one event per lock per commit, as
// DESIGN.md §5 says); it starts a hold like a claim does, so its release
// reports how long it was held. Adding a name that already exists (in the
// other directory) is no lock event at all but a broken rule: the hook
// refuses it, and watch mode reports it as a `violation` ("" here). Undoing
// such a duplicate surfaces as `updated`.
func TypeOf(op pool.Op) string {
	switch op {
	case pool.OpDuplicate:
		return ""
	case pool.OpAdd, pool.OpAddClaimed:
		return Added
	case pool.OpClaim:
		return Claimed
	case pool.OpRelease:
		return Released
	case pool.OpRemove, pool.OpRemoveFree:
		return Removed
	}
	return Updated
}

func stateName(s pool.State) string {
	switch s {
	case pool.StateClaimed:
		return "claimed"
	case pool.StateUnclaimed:
		return "unclaimed"
	case pool.StateBoth:
		return "claimed+unclaimed"
	}
	return "absent"
}
