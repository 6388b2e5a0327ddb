package validator

import "github.com/poolgate/poolgate/pool"

// Source is how the validator reaches a repository's objects. The hook and
// `poolgate check` back it with git; tests with memory.
type Source interface {
	Commit(hash string) (Commit, error)
	Snapshot(tree string) (*pool.Snapshot, error)
	BlobSize(hash string) (int64, error)
	// MergeBases returns the best common ancestors of commits; none for
	// unrelated histories.
	MergeBases(commits []string) ([]string, error)
	// TreeShape measures a tree against bound (pool.Loader.Shape).
	TreeShape(tree string, bound pool.Shape) (s pool.Shape, over bool, err error)
}

// CheckCommits judges each commit and returns every violation found, so a
// pusher fixes all of them in one go. hashes must be every commit the push
// brings into the branch (not reachable from it before), parents before
// children; then no change enters the branch unjudged (DESIGN.md §2): a
// commit is judged against its parent, a merge against what its parents
// combine to (pool.Merged), and every parent a merge brings in is itself in
// hashes or was already on the branch.
func CheckCommits(src Source, hashes []string, who Pusher, p Policy) ([]Violation, error) {
	var out []Violation
	for _, h := range hashes {
		vs, unbounded, err := checkOne(src, h, who, p)
		if err != nil {
			return nil, err
		}
		out = append(out, vs...)
		if unbounded {
			// Nothing built on that tree can be loaded safely, and the
			// push is refused anyway.
			break
		}
	}
	return out, nil
}

// checkOne judges one commit; unbounded reports a tree past the bound.
func checkOne(src Source, h string, who Pusher, p Policy) (vs []Violation, unbounded bool, err error) {
	c, err := src.Commit(h)
	if err != nil {
		return nil, false, err
	}
	if v, err := tooLargeTree(src, c, p); err != nil || v != nil {
		if v != nil {
			vs = []Violation{*v}
		}
		return vs, v != nil, err
	}
	in := Input{Commit: c, Pusher: who, Policy: p, BlobSize: src.BlobSize}
	if ll, ok := src.(LockLog); ok && len(c.Parents) > 0 {
		in.History = func(pool, lock string, n int) ([]LockStep, error) { return ll.LockSteps(c.Parents[0], pool, lock, n) }
	}
	if in.After, err = src.Snapshot(c.Tree); err != nil {
		return nil, false, err
	}
	parents := make([]*pool.Snapshot, len(c.Parents))
	for i, ph := range c.Parents {
		if parents[i], err = snapshotOf(src, ph); err != nil {
			return nil, false, err
		}
	}
	switch len(parents) {
	case 0:
		in.Before = pool.Empty
		vs, err = CheckCommit(in)
		return vs, false, err
	case 1:
		in.Before = parents[0]
		vs, err = CheckCommit(in)
		return vs, false, err
	}
	baseHashes, err := src.MergeBases(c.Parents)
	if err != nil {
		return nil, false, err
	}
	var bases []*pool.Snapshot
	for _, bh := range baseHashes {
		s, err := snapshotOf(src, bh)
		if err != nil {
			return nil, false, err
		}
		bases = append(bases, s)
	}
	in.Parents = parents
	// Where the parents changed a lock differently, the merge's choice is
	// judged against each side in turn: it must be a lawful change from
	// whichever side it took over.
	var out []Violation
	seen := map[string]bool{}
	for prefer := range parents {
		merged, conflicts := pool.Merged(bases, parents, prefer)
		in.Before = merged
		vs, err := CheckCommit(in)
		if err != nil {
			return nil, false, err
		}
		for _, v := range vs {
			if k := v.String(); !seen[k] {
				seen[k] = true
				out = append(out, v)
			}
		}
		if !conflicts {
			break
		}
	}
	return out, false, nil
}

func snapshotOf(src Source, commit string) (*pool.Snapshot, error) {
	c, err := src.Commit(commit)
	if err != nil {
		return nil, err
	}
	return src.Snapshot(c.Tree)
}
