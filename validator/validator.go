package validator

import (
	"fmt"
	"sort"
	"strings"

	"github.com/poolgate/poolgate/pool"
)

// Policy is the repo's configuration as far as the rules need it.
type Policy struct {
	Branch       string         // the one branch writers may push
	MaxClaimed   map[string]int // pool path → limit; absent or 0: none
	MaxLockBytes int64          // 0: no limit
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

// Input is one commit to judge against its first parent.
type Input struct {
	Commit Commit
	Before *pool.Snapshot // first parent's tree; pool.Empty for a root commit
	After  *pool.Snapshot
	// Others are the snapshots of a merge's other parents. A lock state the
	// merge takes over unchanged from one of them was judged when that line
	// of history landed, so it is not judged again.
	Others []*pool.Snapshot
	Pusher Pusher
	Policy Policy
	// BlobSize returns a blob's size; only asked for lock files the commit
	// writes.
	BlobSize func(hash string) (int64, error)
	// History, if set, returns a lock's latest steps on the branch up to
	// the first parent (LockLog); stale-release needs it.
	History func(pool, lock string, n int) ([]LockStep, error)
}

// CheckCommit applies every tree and message rule to one commit.
func CheckCommit(in Input) ([]Violation, error) {
	changes := ownChanges(in)
	intent := pool.ParseMessage(in.Commit.Message)
	var out []Violation
	add := func(v Violation) {
		v.Commit, v.Subject = in.Commit.Hash, pool.Subject(in.Commit.Message)
		out = append(out, v)
	}

	for _, c := range changes {
		if c.New.Hash != "" {
			if err := pool.CheckName(c.Name); err != nil {
				add(newViolation(BadName, c.Pool, c.Name, err.Error()+".",
					"lock names must be valid UTF-8, at most 255 bytes, without control characters or newlines"))
				continue
			}
		}
		switch {
		case c.After == pool.StateBoth:
			add(newViolation(DuplicateName, c.Pool, c.Name,
				fmt.Sprintf("%q would be in both claimed/ and unclaimed/.", c.Name),
				fmt.Sprintf("a lock lives in exactly one of claimed/ or unclaimed/; use 'git mv' to move it, or pick another name than %q", c.Name)))
		case c.Op == pool.OpAddClaimed && !in.Pusher.Admin &&
			!(intent.Verb == "adding claimed" && intent.Name == c.Name):
			add(newViolation(ClaimMissing, c.Pool, c.Name,
				fmt.Sprintf("%q entered claimed/ but was not in unclaimed/ before.", c.Name),
				fmt.Sprintf("claim only locks that exist in %s/unclaimed/; to add a lock that starts claimed, commit with the message \"adding claimed: %s\"", c.Pool, c.Name)))
		}
		if c.New.Hash != "" && c.New.Hash != c.Old.Hash && in.Policy.MaxLockBytes > 0 && in.BlobSize != nil {
			size, err := in.BlobSize(c.New.Hash)
			if err != nil {
				return nil, err
			}
			if size > in.Policy.MaxLockBytes {
				add(newViolation(TooLarge, c.Pool, c.Name,
					fmt.Sprintf("lock file is %d bytes, over the limit of %d.", size, in.Policy.MaxLockBytes),
					"lock files hold small metadata; keep large data elsewhere and put a reference in the lock"))
			}
		}
	}

	overLimit(in, changes, add)
	if err := checkOperatorRules(in, changes, add); err != nil {
		return nil, err
	}

	if intent.Verb != "" && !performs(changes, intent) {
		add(newViolation(IntentMismatch, "", intent.Name,
			fmt.Sprintf("the message says %q but the commit %s.", intent.Verb+": "+intent.Name, describe(changes, intent.Name)),
			"pool-resource commit messages must match the change; write a free-form message for anything else"))
	}

	for _, path := range in.After.PoolPaths() {
		ap, bp := in.After.Pool(path), in.Before.Pool(path)
		if pool.Unchanged(bp, ap) {
			continue
		}
		for _, s := range ap.Strays {
			if strayIn(bp, s) || inOthers(in.Others, path, s) {
				continue
			}
			rel := ap.StrayPath(s)
			if s.Mode == pool.ModeSymlink || s.Mode == pool.ModeSubmodule {
				kind := "a symlink"
				if s.Mode == pool.ModeSubmodule {
					kind = "a submodule"
				}
				add(newViolation(BadMode, path, "", fmt.Sprintf("%q is %s.", rel, kind),
					"pools hold only regular files; symlinks and submodules could point anywhere"))
				continue
			}
			add(newViolation(BadPath, path, "", fmt.Sprintf("%q is not a lock.", rel),
				fmt.Sprintf("a pool holds only claimed/NAME, unclaimed/NAME and dot-files at its top; no directories inside claimed/ or unclaimed/")))
		}
	}

	if in.Pusher.Known && !in.Pusher.Admin {
		for _, path := range in.After.PoolPaths() {
			if in.Before.Pool(path) == nil && !poolInOthers(in.Others, path) {
				add(newViolation(PoolChange, path, "", "this commit creates a new pool.",
					"pools are declared in poolgate's config or created by an admin"))
			}
		}
		for _, path := range in.Before.PoolPaths() {
			if in.After.Pool(path) == nil {
				add(newViolation(PoolChange, path, "", "this commit deletes the pool.",
					"only an admin may delete a pool; keep claimed/.gitkeep and unclaimed/.gitkeep so an empty pool stays a pool"))
			}
		}
	}
	return out, nil
}

func overLimit(in Input, changes []pool.Change, add func(Violation)) {
	// The full diff, not the merge-filtered one: claims a merge takes over
	// from another parent still add up with the ones on this side.
	all := changes
	if len(in.Others) > 0 {
		all = pool.Diff(in.Before, in.After)
	}
	newly := map[string][]string{}
	for _, c := range all {
		if c.After == pool.StateClaimed || c.After == pool.StateBoth {
			if c.Before != pool.StateClaimed && c.Before != pool.StateBoth {
				newly[c.Pool] = append(newly[c.Pool], c.Name)
			}
		}
	}
	paths := make([]string, 0, len(newly))
	for p := range newly {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		max := in.Policy.MaxClaimed[p]
		after := in.After.Pool(p).ClaimedCount()
		if max <= 0 || after <= max || after <= in.Before.Pool(p).ClaimedCount() {
			continue
		}
		// A merge that only keeps a count some parent already had adds
		// nothing; one that sums both sides' claims does.
		inherited := false
		for _, o := range in.Others {
			if after <= o.Pool(p).ClaimedCount() {
				inherited = true
			}
		}
		if inherited {
			continue
		}
		add(newViolation(OverLimit, p, newly[p][0],
			fmt.Sprintf("%d locks would be claimed, over max_claimed %d.", after, max),
			"wait for a release; pool-resource retries this push by itself"))
	}
}

// ownChanges is the commit's diff against its first parent, less what a merge
// took over unchanged from another parent.
func ownChanges(in Input) []pool.Change {
	all := pool.Diff(in.Before, in.After)
	if len(in.Others) == 0 {
		return all
	}
	out := all[:0:0]
	for _, c := range all {
		inherited := false
		for _, o := range in.Others {
			op := o.Pool(c.Pool)
			if op.StateOf(c.Name) == c.After {
				if l, _ := op.Lock(c.Name); l == c.New {
					inherited = true
					break
				}
			}
		}
		if !inherited {
			out = append(out, c)
		}
	}
	return out
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

func strayIn(p *pool.Pool, s pool.Stray) bool {
	if p == nil {
		return false
	}
	for _, o := range p.Strays {
		if o == s {
			return true
		}
	}
	return false
}

func inOthers(others []*pool.Snapshot, path string, s pool.Stray) bool {
	for _, o := range others {
		if strayIn(o.Pool(path), s) {
			return true
		}
	}
	return false
}

func poolInOthers(others []*pool.Snapshot, path string) bool {
	for _, o := range others {
		if o.Pool(path) != nil {
			return true
		}
	}
	return false
}

// RefUpdate is one line a pre-receive hook reads.
type RefUpdate struct {
	Old, New, Ref string
	// FastForward: New descends from Old (or Old is zero).
	FastForward bool
}

// ZeroSHA is git's "no object" id.
const ZeroSHA = "0000000000000000000000000000000000000000"

// IsZero reports an all-zero object id of any hash length.
func IsZero(sha string) bool {
	for _, c := range sha {
		if c != '0' {
			return false
		}
	}
	return sha != ""
}

// CheckRef applies the ref rule to one update.
func CheckRef(u RefUpdate, p Policy, who Pusher) []Violation {
	branch := "refs/heads/" + p.Branch
	v := func(reason, hint string) []Violation {
		x := newViolation(RefRule, "", "", reason, hint)
		x.Ref = u.Ref
		return []Violation{x}
	}
	if u.Ref == branch && IsZero(u.New) {
		return v("deleting the pool branch is refused.", "the branch is the pool; nobody may delete it")
	}
	if who.Admin {
		return nil
	}
	if u.Ref != branch {
		return v(fmt.Sprintf("only %s may be pushed.", branch),
			fmt.Sprintf("push to the pool branch: git push origin HEAD:%s", p.Branch))
	}
	if !IsZero(u.Old) && !u.FastForward {
		return v("a non-fast-forward push (history rewrite) is refused.",
			"fetch, rebase or merge onto the current branch and push again; an admin may force-push")
	}
	return nil
}
