package validator

import "github.com/poolgate/poolgate/pool"

// Source is how the validator reaches a repository's objects. The hook and
// `poolgate check` back it with git; tests with memory.
type Source interface {
	Commit(hash string) (Commit, error)
	Snapshot(tree string) (*pool.Snapshot, error)
	BlobSize(hash string) (int64, error)
}

// CheckCommits judges each commit (oldest first) against its first parent and
// returns every violation found, so a pusher fixes all of them in one go.
func CheckCommits(src Source, hashes []string, who Pusher, p Policy) ([]Violation, error) {
	var out []Violation
	var prevHash string
	var prev *pool.Snapshot
	for _, h := range hashes {
		c, err := src.Commit(h)
		if err != nil {
			return nil, err
		}
		in := Input{Commit: c, Pusher: who, Policy: p, BlobSize: src.BlobSize}
		if ll, ok := src.(LockLog); ok && len(c.Parents) > 0 {
			in.History = func(pool, lock string, n int) ([]LockStep, error) { return ll.LockSteps(c.Parents[0], pool, lock, n) }
		}
		if in.After, err = src.Snapshot(c.Tree); err != nil {
			return nil, err
		}
		switch {
		case len(c.Parents) == 0:
			in.Before = pool.Empty
		case c.Parents[0] == prevHash && prev != nil:
			in.Before = prev
		default:
			pc, err := src.Commit(c.Parents[0])
			if err != nil {
				return nil, err
			}
			if in.Before, err = src.Snapshot(pc.Tree); err != nil {
				return nil, err
			}
		}
		for _, ph := range c.Parents[min(1, len(c.Parents)):] {
			pc, err := src.Commit(ph)
			if err != nil {
				return nil, err
			}
			s, err := src.Snapshot(pc.Tree)
			if err != nil {
				return nil, err
			}
			in.Others = append(in.Others, s)
		}
		vs, err := CheckCommit(in)
		if err != nil {
			return nil, err
		}
		out = append(out, vs...)
		prevHash, prev = h, in.After
	}
	return out, nil
}
