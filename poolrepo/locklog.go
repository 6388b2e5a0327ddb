package poolrepo

import (
	"fmt"
	"strings"

	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/validator"
)

// lockWalkLimit bounds the in-process walk of LockSteps before it leaves
// the rest to git log: a lock's last few moves are usually a few commits
// back, and git's path-limited walk is the faster one over a long way.
const lockWalkLimit = 2000

// LockSteps implements validator.LockLog. It walks tip's first-parent
// chain through the repo's caches (a `poolgate check` has every commit and
// tree of the walk loaded already; a hook reads a few objects per step
// through its one cat-file), and stops at the n-th commit that changed the
// lock, so the cost follows how recently the lock moved.
func (r *Repo) LockSteps(tip, poolPath, lock string, n int) ([]validator.LockStep, error) {
	var steps []validator.LockStep
	h := tip
	for i := 0; i < lockWalkLimit && len(steps) < n; i++ {
		c, err := r.RawCommit(h)
		if err != nil {
			return nil, err
		}
		after, err := r.Snapshot(c.Tree)
		if err != nil {
			return nil, err
		}
		before := pool.Empty
		if len(c.Parents) > 0 {
			if before, err = r.SnapshotAt(c.Parents[0]); err != nil {
				return nil, err
			}
		}
		ap, bp := after.Pool(poolPath), before.Pool(poolPath)
		st := ap.StateOf(lock)
		al, _ := ap.Lock(lock)
		bl, _ := bp.Lock(lock)
		if st != bp.StateOf(lock) || al != bl {
			steps = append(steps, validator.LockStep{Commit: h, Message: c.Message, State: st})
		}
		if len(c.Parents) == 0 {
			return steps, nil
		}
		h = c.Parents[0]
	}
	if len(steps) == n {
		return steps, nil
	}
	rest, err := r.lockLog(h, poolPath, lock, n-len(steps))
	return append(steps, rest...), err
}

// lockLog is LockSteps by git's own path-limited walk, for the part of
// history past lockWalkLimit.
func (r *Repo) lockLog(tip, poolPath, lock string, n int) ([]validator.LockStep, error) {
	if strings.HasPrefix(tip, "-") {
		return nil, fmt.Errorf("bad revision %q", tip)
	}
	// Literal pathspecs: lock names may hold '*' or '['.
	out, err := r.Git.Git("--literal-pathspecs", "log", "--first-parent", "-z", "--format=%H%n%B",
		fmt.Sprintf("-n%d", n), tip, "--",
		poolPath+"/"+pool.Claimed+"/"+lock, poolPath+"/"+pool.Unclaimed+"/"+lock)
	if err != nil {
		return nil, err
	}
	var steps []validator.LockStep
	for _, rec := range strings.Split(out, "\x00") {
		rec = strings.TrimLeft(rec, "\n")
		if rec == "" {
			continue
		}
		hash, msg, _ := strings.Cut(rec, "\n")
		snap, err := r.SnapshotAt(hash)
		if err != nil {
			return nil, err
		}
		steps = append(steps, validator.LockStep{Commit: hash, Message: msg, State: snap.Pool(poolPath).StateOf(lock)})
	}
	return steps, nil
}
