// Package validator decides whether a pool repo commit may land. It is pure:
// trees come in as pool snapshots, and anything it must look up (commits,
// blob sizes) comes through the small Source interface its caller provides.
package validator

import (
	"fmt"
	"strings"

	"github.com/poolgate/poolgate/pool"
)

// Rule ids, as messages, logs, webhooks and docs call them (DESIGN.md §2).
type Rule string

const (
	DuplicateName  Rule = "duplicate-name"
	ClaimMissing   Rule = "claim-missing"
	IntentMismatch Rule = "intent-mismatch"
	OverLimit      Rule = "over-limit"
	BadPath        Rule = "bad-path"
	BadName        Rule = "bad-name"
	BadMode        Rule = "bad-mode"
	TooLarge       Rule = "too-large"
	PoolChange     Rule = "pool-change"
	RefRule        Rule = "ref"
)

// Rules lists every rule, in the order of DESIGN.md §2.
var Rules = []Rule{DuplicateName, ClaimMissing, IntentMismatch, OverLimit, BadPath, BadName, BadMode, TooLarge, PoolChange, RefRule, StaleRelease, OperatorTrailer}

// commitRules are the tree and message rules in DESIGN.md §2's order, one
// function each. The tree bound of too-large is tooLargeTree, judged before
// a commit's tree is loaded; the ref rule is CheckRef.
var commitRules = []func(*commitCheck) error{duplicateName, claimMissing, intentMismatch, overLimit, badPath, badName, badMode, tooLarge, poolChange, operatorRules}

// operatorRules: stale-release and operator-trailer (stalerelease.go).
func operatorRules(j *commitCheck) error { return checkOperatorRules(j.Input, j.changes, j.add) }

// duplicateName: a name present in both claimed/ and unclaimed/ of a pool,
// where the commit put it there.
func duplicateName(j *commitCheck) error {
	for _, c := range j.lockChanges() {
		if c.After == pool.StateBoth {
			j.add(newViolation(DuplicateName, c.Pool, c.Name,
				fmt.Sprintf("%q would be in both claimed/ and unclaimed/.", c.Name),
				fmt.Sprintf("a lock lives in exactly one of claimed/ or unclaimed/; use 'git mv' to move it, or pick another name than %q", c.Name)))
		}
	}
	return nil
}

// claimMissing: a lock entering claimed/ that was not in unclaimed/, unless
// the message says "adding claimed: NAME" or an admin pushed it.
func claimMissing(j *commitCheck) error {
	if j.Pusher.Admin {
		return nil
	}
	for _, c := range j.lockChanges() {
		if c.Op == pool.OpAddClaimed && !(j.intent.Verb == "adding claimed" && j.intent.Name == c.Name) {
			j.add(newViolation(ClaimMissing, c.Pool, c.Name,
				fmt.Sprintf("%q entered claimed/ but was not in unclaimed/ before.", c.Name),
				fmt.Sprintf("claim only locks that exist in %s/unclaimed/; to add a lock that starts claimed, commit with the message \"adding claimed: %s\"", c.Pool, c.Name)))
		}
	}
	return nil
}

// intentMismatch: a pool-resource message naming an operation the commit's
// tree change does not perform.
func intentMismatch(j *commitCheck) error {
	if j.intent.Verb != "" && !performs(j.changes, j.intent) {
		j.add(newViolation(IntentMismatch, "", j.intent.Name,
			fmt.Sprintf("the message says %q but the commit %s.", j.intent.Verb+": "+j.intent.Name, describe(j.changes, j.intent.Name)),
			"pool-resource commit messages must match the change; write a free-form message for anything else"))
	}
	return nil
}

// overLimit: more locks claimed in a pool than its max_claimed, raised by
// this commit.
func overLimit(j *commitCheck) error {
	in := j.Input
	newly := map[string][]string{}
	for _, c := range j.changes {
		if c.After == pool.StateClaimed || c.After == pool.StateBoth {
			if c.Before != pool.StateClaimed && c.Before != pool.StateBoth {
				newly[c.Pool] = append(newly[c.Pool], c.Name)
			}
		}
	}
	for _, path := range in.After.PoolPaths() {
		limit := in.Policy.MaxClaimed[path]
		after := in.After.Pool(path).ClaimedCount()
		if limit <= 0 || after <= limit {
			continue
		}
		// A commit may keep a count it started from (a pool already over
		// a lowered limit), not raise it. A merge starts from the lower of
		// what its parents combine to and the most any parent held: two
		// lines that each stayed within the limit may not sum over it, and
		// a merge with an old commit may not bring back its claims.
		from := in.Before.Pool(path).ClaimedCount()
		if len(in.Parents) > 0 {
			most := 0
			for _, p := range in.Parents {
				most = max(most, p.Pool(path).ClaimedCount())
			}
			from = min(from, most)
		}
		if after <= from {
			continue
		}
		lock := ""
		if n := newly[path]; len(n) > 0 {
			lock = n[0]
		} else {
			lock = claimedBeyond(in.After.Pool(path), in.Parents)
		}
		j.add(newViolation(OverLimit, path, lock,
			fmt.Sprintf("%d locks would be claimed, over max_claimed %d.", after, limit),
			"wait for a release; pool-resource retries this push by itself"))
	}
	return nil
}

// claimedBeyond names a lock claimed in p that some parent did not have
// claimed: one of those a merge combined.
func claimedBeyond(p *pool.Pool, parents []*pool.Snapshot) string {
	for _, name := range p.Names() {
		if _, ok := p.Claimed[name]; !ok {
			continue
		}
		for _, ps := range parents {
			if st := ps.Pool(p.Path).StateOf(name); st != pool.StateClaimed && st != pool.StateBoth {
				return name
			}
		}
	}
	return ""
}

// badPath: a file in a pool that is not a lock or a dot-file at its top (or
// directly in claimed/ or unclaimed/); a directory inside claimed/ or
// unclaimed/, or one at the pool's top that holds no pool.
func badPath(j *commitCheck) error {
	j.newExtras(func(path, rel string, x pool.Extra) {
		if x.Mode != pool.ModeSymlink && x.Mode != pool.ModeSubmodule && !dotFile(x) {
			j.add(newViolation(BadPath, path, "", fmt.Sprintf("%q is not a lock.", rel),
				"a pool holds only claimed/NAME, unclaimed/NAME and dot-files at its top; no directories inside claimed/ or unclaimed/"))
		}
	})
	return nil
}

// dotFile: a regular dot-file at a pool's top or directly in claimed/ or
// unclaimed/ (.gitkeep, pool-trigger-resource's .pending-triggers), which a
// pool may hold.
func dotFile(x pool.Extra) bool {
	dir, name := "", x.Path
	if i := strings.LastIndexByte(x.Path, '/'); i >= 0 {
		dir, name = x.Path[:i], x.Path[i+1:]
	}
	return (pool.TreeEntry{Mode: x.Mode}).IsRegular() && pool.IsDot(name) &&
		(dir == "" || dir == pool.Claimed || dir == pool.Unclaimed)
}

// badName: a lock name the commit writes that CheckName refuses.
func badName(j *commitCheck) error {
	for _, c := range j.changes {
		if c.New.Hash == "" {
			continue
		}
		if err := CheckName(c.Name); err != nil {
			j.add(newViolation(BadName, c.Pool, c.Name, err.Error()+".",
				"lock names must be valid UTF-8, at most 255 bytes, without control characters or newlines"))
		}
	}
	return nil
}

// badMode: a symlink or submodule anywhere in a pool.
func badMode(j *commitCheck) error {
	j.newExtras(func(path, rel string, x pool.Extra) {
		kind := "a symlink"
		switch x.Mode {
		case pool.ModeSymlink:
		case pool.ModeSubmodule:
			kind = "a submodule"
		default:
			return
		}
		j.add(newViolation(BadMode, path, "", fmt.Sprintf("%q is %s.", rel, kind),
			"pools hold only regular files; symlinks and submodules could point anywhere"))
	})
	return nil
}

// tooLarge: a lock file the commit writes over max_lock_bytes.
func tooLarge(j *commitCheck) error {
	if j.Policy.MaxLockBytes <= 0 || j.BlobSize == nil {
		return nil
	}
	for _, c := range j.lockChanges() {
		if c.New.Hash == "" || c.New.Hash == c.Old.Hash {
			continue
		}
		size, err := j.BlobSize(c.New.Hash)
		if err != nil {
			return err
		}
		if size > j.Policy.MaxLockBytes {
			j.add(newViolation(TooLarge, c.Pool, c.Name,
				fmt.Sprintf("lock file is %d bytes, over the limit of %d.", size, j.Policy.MaxLockBytes),
				"lock files hold small metadata; keep large data elsewhere and put a reference in the lock"))
		}
	}
	return nil
}

// tooLargeTree: a commit whose whole tree, anywhere in the repo, expands
// past limits.max_tree_paths or limits.max_tree_depth. Judged before the
// tree is loaded (CheckCommits): the bound is what keeps loading it cheap.
func tooLargeTree(src Source, c Commit, p Policy) (*Violation, error) {
	if p.MaxTree == (pool.Shape{}) {
		return nil, nil
	}
	s, over, err := src.TreeShape(c.Tree, p.MaxTree)
	if err != nil || !over {
		return nil, err
	}
	reason := fmt.Sprintf("the commit's tree expands to more paths than limits.max_tree_paths %d.", p.MaxTree.Paths)
	if s.Depth > p.MaxTree.Depth {
		reason = fmt.Sprintf("the commit's tree is nested deeper than limits.max_tree_depth %d.", p.MaxTree.Depth)
	}
	v := newViolation(TooLarge, "", "", reason,
		"a pool repo holds a few directories of small files; a tree that names the same subtree over and over would hang every clone")
	v.Commit, v.Subject = c.Hash, pool.Subject(c.Message)
	return &v, nil
}

// poolChange: a pool created or deleted by a non-admin.
func poolChange(j *commitCheck) error {
	if !j.Pusher.Known || j.Pusher.Admin {
		return nil
	}
	for _, path := range j.After.PoolPaths() {
		if j.Before.Pool(path) == nil {
			j.add(newViolation(PoolChange, path, "", "this commit creates a new pool.",
				"pools are declared in poolgate's config or created by an admin"))
		}
	}
	for _, path := range j.Before.PoolPaths() {
		if j.After.Pool(path) == nil {
			j.add(newViolation(PoolChange, path, "", "this commit deletes the pool.",
				"only an admin may delete a pool; keep claimed/.gitkeep and unclaimed/.gitkeep so an empty pool stays a pool"))
		}
	}
	return nil
}

// CheckRef applies the ref rule to one update.
func CheckRef(u pool.RefUpdate, p Policy, who Pusher) []Violation {
	branch := "refs/heads/" + p.Branch
	v := func(reason, hint string) []Violation {
		x := newViolation(RefRule, "", "", reason, hint)
		x.Ref = u.Ref
		return []Violation{x}
	}
	if u.Ref == branch && pool.IsZero(u.New) {
		return v("deleting the pool branch is refused.", "the branch is the pool; nobody may delete it")
	}
	if who.Admin {
		return nil
	}
	if u.Ref != branch {
		return v(fmt.Sprintf("only %s may be pushed.", branch),
			fmt.Sprintf("push to the pool branch: git push origin HEAD:%s", p.Branch))
	}
	if !pool.IsZero(u.Old) && !u.FastForward {
		return v("a non-fast-forward push (history rewrite) is refused.",
			"fetch, rebase or merge onto the current branch and push again; an admin may force-push")
	}
	return nil
}
