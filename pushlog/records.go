package pushlog

import (
	"time"

	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/validator"
)

// Push is one line of pushes.jsonl: a ref update and the new first-parent
// commits it brought (oldest first). Readers count only commits that are
// really on the branch.
type Push struct {
	Time    time.Time `json:"time"`
	User    string    `json:"user"`
	Key     string    `json:"key,omitempty"`
	Role    string    `json:"role"`
	Ref     string    `json:"ref"`
	Old     string    `json:"old"`
	New     string    `json:"new"`
	Commits []string  `json:"commits"`
}

// Rejection is one line of rejections.jsonl: a refused push.
type Rejection struct {
	Time       time.Time   `json:"time"`
	User       string      `json:"user"`
	Key        string      `json:"key,omitempty"`
	Role       string      `json:"role"`
	Ref        string      `json:"ref"`
	Old        string      `json:"old"`
	New        string      `json:"new"`
	Verdict    string      `json:"verdict"`
	Violations []Violation `json:"violations"`
}

// Violation is a validator.Violation as stored and announced.
type Violation struct {
	Rule    string `json:"rule"`
	Kind    string `json:"kind"`
	Commit  string `json:"commit,omitempty"`
	Subject string `json:"subject,omitempty"`
	Ref     string `json:"ref,omitempty"`
	Pool    string `json:"pool,omitempty"`
	Lock    string `json:"lock,omitempty"`
	Reason  string `json:"reason"`
	Hint    string `json:"hint,omitempty"`

	// The refused commit's build, from its pool-resource message.
	BuildURL string `json:"build_url,omitempty"`
	Team     string `json:"team,omitempty"`
	Pipeline string `json:"pipeline,omitempty"`
	Job      string `json:"job,omitempty"`
	Build    string `json:"build,omitempty"`
	BuildID  string `json:"build_id,omitempty"`
	// The pool's counts on the branch when the push was refused. Claimed
	// is nil in records from before they were kept; MaxClaimed is nil
	// when the pool has no limit.
	Claimed    *int `json:"claimed,omitempty"`
	MaxClaimed *int `json:"max_claimed,omitempty"`
}

// SetBuild fills the build fields from a parsed commit message.
func (v *Violation) SetBuild(in pool.Intent) {
	v.BuildURL, v.Team, v.Pipeline, v.Job, v.Build, v.BuildID = in.BuildURL, in.Team, in.Pipeline, in.Job, in.Build, in.BuildID
}

// ViolationsOf converts the validator's findings to records.
func ViolationsOf(vs []validator.Violation) []Violation {
	out := make([]Violation, len(vs))
	for i, v := range vs {
		out[i] = Violation{Rule: string(v.Rule), Kind: string(v.Kind), Commit: v.Commit, Subject: v.Subject,
			Ref: v.Ref, Pool: v.Pool, Lock: v.Lock, Reason: v.Reason, Hint: v.Hint}
	}
	return out
}

// UpstreamViolation is one line of violations.jsonl: a rule broken by a
// commit that already landed upstream (watch mode), where nothing could
// refuse it.
type UpstreamViolation struct {
	Time time.Time `json:"time"`
	User string    `json:"user,omitempty"`
	Violation
}

// Rewrite is one line of rewrites.jsonl: a history rewrite (force push)
// seen upstream.
type Rewrite struct {
	Time time.Time `json:"time"`
	User string    `json:"user,omitempty"`
	Old  string    `json:"old"`
	New  string    `json:"new"`
	// Dropped counts the first-parent commits of old that new lost.
	Dropped int `json:"dropped"`
}
