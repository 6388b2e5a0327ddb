package poolrepo

import (
	"fmt"
	"strings"

	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/validator"
)

// LockSteps implements validator.LockLog: git walks tip's first-parent
// chain and stops after n commits that touch the lock's two paths, so the
// cost follows how recently the lock moved, not the length of history.
func (r *Repo) LockSteps(tip, poolPath, lock string, n int) ([]validator.LockStep, error) {
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
