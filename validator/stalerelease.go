package validator

import (
	"fmt"

	"github.com/poolgate/poolgate/pool"
)

// Rules of operator actions (docs/rules.md, docs/operating.md).
const (
	// StaleRelease: a build releases (or removes) a lock that an operator
	// took from it and another pipeline has claimed since. The stock
	// client would otherwise free the new holder's lock without a word.
	StaleRelease Rule = "stale-release"
	// OperatorTrailer: a push writes the Poolgate-Operator trailer, which
	// only poolgate's own operator actions may write; the audit trusts it.
	OperatorTrailer Rule = "operator-trailer"
)

// LockStep is one commit on the branch that changed one lock.
type LockStep struct {
	Commit  string
	Message string
	State   pool.State // the lock's state after the commit
}

// LockLog is an optional Source capability: the commits on the first-parent
// chain ending at tip (inclusive) that changed a lock, newest first, at most
// n. A Source without it is not asked, and stale-release is not judged.
type LockLog interface {
	LockSteps(tip, poolPath, lock string, n int) ([]LockStep, error)
}

// staleReleaseDepth bounds how far back a lock's history is read: enough
// for a few operator releases in a row, never the whole history.
const staleReleaseDepth = 16

// checkOperatorRules applies stale-release and operator-trailer to one
// commit (its own changes, as CheckCommit computed them).
func checkOperatorRules(in Input, changes []pool.Change, add func(Violation)) error {
	op := pool.ParseOperator(in.Commit.Message)
	if op != nil {
		if in.Pusher.Known && !in.Pusher.Operator {
			add(newViolation(OperatorTrailer, "", "",
				fmt.Sprintf("the message carries a %s line, which only poolgate's operator actions write.", pool.OperatorTrailer),
				"remove the Poolgate-* lines; to act as an operator use 'poolgate release|claim|add|remove' or the API"))
		}
		return nil // an operator's release is the point, never stale
	}
	if in.History == nil {
		return nil
	}
	intent := pool.ParseMessage(in.Commit.Message)
	if intent.Verb != "unclaiming" && intent.Verb != "removing" {
		return nil
	}
	who := pipelineOf(intent)
	if who == "" {
		return nil // a release that names no pipeline cannot be matched
	}
	for _, c := range changes {
		if c.Name != intent.Name || (c.Op != pool.OpRelease && c.Op != pool.OpRemove) {
			continue
		}
		// The current claim first: a release by its own pipeline, the
		// common case, needs no more history than that.
		steps, err := in.History(c.Pool, c.Name, 1)
		if err != nil {
			return err
		}
		if len(steps) == 0 || steps[0].State != pool.StateClaimed || pipelineOf(pool.ParseMessage(steps[0].Message)) == who {
			continue
		}
		if steps, err = in.History(c.Pool, c.Name, staleReleaseDepth); err != nil {
			return err
		}
		if v, ok := staleReleaseOf(in.Commit.Message, who, steps); ok {
			v.Pool, v.Lock = c.Pool, c.Name
			add(v)
		}
	}
	return nil
}

// staleReleaseOf walks a lock's history back from the current claim: past
// pairs of (operator release, claim by another pipeline), looking for a
// claim by the releasing pipeline that an operator ended.
func staleReleaseOf(releaser, who string, steps []LockStep) (Violation, bool) {
	if len(steps) == 0 || steps[0].State != pool.StateClaimed {
		return Violation{}, false
	}
	holder := pool.ParseMessage(steps[0].Message)
	if pipelineOf(holder) == who {
		return Violation{}, false // the releasing pipeline holds it now
	}
	for i := 1; i+1 < len(steps); i += 2 {
		rel, claim := steps[i], steps[i+1]
		opr := pool.ParseOperator(rel.Message)
		if opr == nil || rel.State == pool.StateClaimed || claim.State != pool.StateClaimed {
			return Violation{}, false // the chain of operator releases ends here
		}
		if pipelineOf(pool.ParseMessage(claim.Message)) != who {
			continue
		}
		v := newViolation(StaleRelease, "", "",
			fmt.Sprintf("%s no longer holds this lock: operator %s released it in commit %s (%q), and %s has claimed it since in commit %s.",
				buildOf(releaser), opr.Name, pool.Short(rel.Commit), opr.Reason, buildOf(steps[0].Message), pool.Short(steps[0].Commit)),
			"the build's claim was ended by an operator; nothing to release. Fix the pipeline's ensure/on_abort if this was not expected")
		return v, true
	}
	return Violation{}, false
}

// pipelineOf is the team/pipeline a pool-resource message comes from, ""
// when it names none.
func pipelineOf(in pool.Intent) string {
	if in.Pipeline == "" {
		return ""
	}
	return in.Team + "/" + in.Pipeline
}

// buildOf names who wrote a lock's commit the way people read it: the
// build's label and its URL, or the operator.
func buildOf(msg string) string {
	if o := pool.ParseOperator(msg); o != nil {
		return "operator " + o.Name
	}
	in := pool.ParseMessage(msg)
	s := in.Label()
	if s == "" {
		s = "a build"
	}
	if in.BuildURL != "" {
		s += " (" + in.BuildURL + ")"
	}
	return s
}
