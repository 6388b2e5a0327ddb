// Package operator performs an operator's action on a pool (release, claim,
// add, remove a lock) as one server-authored commit pushed through the same
// receive-pack and pre-receive hook as a client's push, so it is validated,
// recorded and announced like any other change, with who did it and why.
//
// The daemon runs it under its per-repo push lock (for the CLI over the
// operator socket, the HTTP API and release_after); without a daemon the CLI
// runs it itself under a lock file in the repo (hook-only set-ups).
package operator

import (
	"errors"
	"fmt"

	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/validator"
)

// Verb is an operator action.
type Verb string

const (
	Release Verb = "release"
	Claim   Verb = "claim"
	Add     Verb = "add"
	Remove  Verb = "remove"
)

// Verbs lists the actions, as the CLI offers them.
var Verbs = []Verb{Release, Claim, Add, Remove}

type verbSpec struct {
	from, to pool.State
	message  string // pool-resource's verb for the commit message
	want     string // the state the lock must be in, as a refusal says it
}

var specs = map[Verb]verbSpec{
	Release: {pool.StateClaimed, pool.StateUnclaimed, "unclaiming", "claimed"},
	Claim:   {pool.StateUnclaimed, pool.StateClaimed, "claiming", "unclaimed"},
	Add:     {pool.Absent, pool.StateUnclaimed, "adding unclaimed", "absent"},
	// Only a free lock: removing a held one would pull it from under a
	// running build; release it first, on purpose.
	Remove: {pool.StateUnclaimed, pool.Absent, "removing", "unclaimed"},
}

// Action is one operator action.
type Action struct {
	Repo, Pool, Lock string
	Verb             Verb
	Reason           string
	// Operator is who acts, as the caller established it (the OS user on
	// the operator socket, "http" for the API).
	Operator string
	// Commit, if set, is the commit the operator looked at: the action is
	// refused if the lock changed after it, or it is not on the branch.
	Commit string
	// ClaimCommit, if set, is the claim the action means to end
	// (release_after): refused if the lock was claimed again since.
	ClaimCommit string
}

// Result is a done action.
type Result struct {
	Old    string `json:"old"`    // the branch tip before
	Commit string `json:"commit"` // the operator's commit, now the tip
}

// Code classifies a refusal; the HTTP API maps it to a status.
type Code int

const (
	Invalid  Code = iota + 1 // bad input: 400
	NotFound                 // no such repo or pool: 404
	Conflict                 // the lock is not as expected, or moved: 409
	Rejected                 // the validator refused the commit: 409
	Busy                     // the repo stayed busy: 503
)

// Refusal is an action not done, with a one-line reason for the operator.
type Refusal struct {
	Code Code
	Msg  string
	// Rules the validator named (Rejected).
	Rules []string
}

func (r *Refusal) Error() string { return r.Msg }

func refuse(c Code, format string, args ...any) error {
	return &Refusal{Code: c, Msg: fmt.Sprintf(format, args...)}
}

// AsRefusal returns err's refusal, if it is one.
func AsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}

// Check refuses an action that can never be done, before anything is read.
func (a Action) Check() error {
	if _, ok := specs[a.Verb]; !ok {
		return refuse(Invalid, "unknown action %q (want release, claim, add or remove)", a.Verb)
	}
	if err := validator.CheckPoolPath(a.Pool); err != nil {
		return refuse(Invalid, "%v", err)
	}
	if err := validator.CheckName(a.Lock); err != nil || pool.IsDot(a.Lock) {
		return refuse(Invalid, "%q is not a lock name", a.Lock)
	}
	if err := pool.CheckReason("the reason", a.Reason); err != nil {
		return refuse(Invalid, "%v (--reason says why, for the audit)", err)
	}
	if err := pool.CheckReason("the operator's name", a.Operator); err != nil {
		return refuse(Invalid, "%v", err)
	}
	for _, c := range []string{a.Commit, a.ClaimCommit} {
		if c != "" && !pool.IsObjectID(c) {
			return refuse(Invalid, "commit %q is not a full commit id", c)
		}
	}
	return nil
}

// Message is the action's commit message.
func (a Action) Message() string {
	return pool.OperatorMessage(specs[a.Verb].message, a.Lock, pool.Operator{Name: a.Operator, Reason: a.Reason})
}
