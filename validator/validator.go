package validator

import (
	"fmt"
	"strings"

	"github.com/poolgate/poolgate/pool"
)

// Policy is the repo's configuration as far as the rules need it.
type Policy struct {
	Branch       string         // the one branch writers may push
	MaxClaimed   map[string]int // pool path → limit; absent or 0: none
	MaxLockBytes int64          // 0: no limit
	// MaxTree bounds what a judged commit's whole tree may expand to;
	// zero fields: no bound.
	MaxTree pool.Shape
}

// Pusher is who pushes. Offline checks do not know (Known false), and then
// the rules that depend on the pusher are not judged.
type Pusher struct {
	Known bool
	Admin bool
	// Operator: the push is poolgate's own operator action (stalerelease.go).
	Operator bool
}

// Commit is the commit metadata the rules read.
type Commit struct {
	Hash    string
	Tree    string
	Parents []string
	Message string
}

// Input is one commit to judge.
type Input struct {
	Commit Commit
	// Before is the state the commit changes: its parent's tree (pool.Empty
	// for a root commit), or for a merge what its parents combine to
	// (pool.Merged), so a merge takes over unjudged only what its parents
	// were judged for, and everything else it holds is its own change.
	Before *pool.Snapshot
	After  *pool.Snapshot
	// Parents are a merge's parents' snapshots (nil for other commits): the
	// claimed count is judged against them too, as combining two lines of
	// history can go over a limit neither went over.
	Parents []*pool.Snapshot
	Pusher  Pusher
	Policy  Policy
	// BlobSize returns a blob's size; only asked for lock files the commit
	// writes.
	BlobSize func(hash string) (int64, error)
	// History, if set, returns a lock's latest steps on the branch up to
	// the first parent (LockLog); stale-release needs it.
	History func(pool, lock string, n int) ([]LockStep, error)
}

// CheckCommit applies every tree and message rule (rules.go) to one commit.
func CheckCommit(in Input) ([]Violation, error) {
	j := &commitCheck{Input: in, changes: pool.Diff(in.Before, in.After), intent: pool.ParseMessage(in.Commit.Message)}
	for _, rule := range commitRules {
		if err := rule(j); err != nil {
			return nil, err
		}
	}
	return j.out, nil
}

// commitCheck is one commit being judged: what every rule reads, and what
// the rules found so far.
type commitCheck struct {
	Input
	changes []pool.Change
	intent  pool.Intent
	out     []Violation
}

func (j *commitCheck) add(v Violation) {
	v.Commit, v.Subject = j.Commit.Hash, pool.Subject(j.Commit.Message)
	j.out = append(j.out, v)
}

// lockChanges are the changes to locks whose names can exist: a bad name is
// reported as bad-name alone.
func (j *commitCheck) lockChanges() []pool.Change {
	var out []pool.Change
	for _, c := range j.changes {
		if c.New.Hash == "" || CheckName(c.Name) == nil {
			out = append(out, c)
		}
	}
	return out
}

// newExtras calls f for each extra (pool.Extra) of a changed pool that the
// commit adds.
func (j *commitCheck) newExtras(f func(path, rel string, x pool.Extra)) {
	for _, path := range j.After.PoolPaths() {
		ap, bp := j.After.Pool(path), j.Before.Pool(path)
		if pool.Unchanged(bp, ap) {
			continue
		}
		for _, x := range ap.Extras {
			if !extraIn(bp, x) {
				f(path, ap.ExtraPath(x), x)
			}
		}
	}
}

func performs(changes []pool.Change, in pool.Intent) bool {
	for _, c := range changes {
		if c.Name != in.Name {
			continue
		}
		if c.Op == pool.OpDuplicate && strings.HasPrefix(in.Verb, "adding ") {
			// The add happened; that it made a duplicate is duplicate-name's
			// to say, once.
			return true
		}
		for _, op := range in.Ops() {
			if c.Op != op {
				continue
			}
			switch {
			case op == pool.OpUpdate && in.Verb == "adding claimed" && c.After != pool.StateClaimed:
			case op == pool.OpUpdate && in.Verb == "adding unclaimed" && c.After != pool.StateUnclaimed:
			default:
				return true
			}
		}
	}
	return false
}

func describe(changes []pool.Change, name string) string {
	var ops []string
	for _, c := range changes {
		if c.Name == name {
			ops = append(ops, fmt.Sprintf("does %s in pool %s", c.Op, c.Pool))
		}
	}
	if len(ops) == 0 {
		return "does not touch that lock"
	}
	return joinAnd(ops)
}

func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	out := s[0]
	for _, x := range s[1 : len(s)-1] {
		out += ", " + x
	}
	return out + " and " + s[len(s)-1]
}

func extraIn(p *pool.Pool, s pool.Extra) bool {
	if p == nil {
		return false
	}
	for _, o := range p.Extras {
		if o == s {
			return true
		}
	}
	return false
}
