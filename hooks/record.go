package hooks

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/pushlog"
)

func (h *PreReceive) gitDir() string {
	if d := h.Getenv("GIT_DIR"); d != "" {
		if filepath.IsAbs(d) {
			return d
		}
		return filepath.Join(h.Dir, d)
	}
	return h.Dir
}

// pusher is who pushes, as the environment says.
func (h *PreReceive) pusher() (user, key, role string) {
	user, key, role = h.Getenv(pushlog.EnvUser), h.Getenv(pushlog.EnvKey), h.Getenv(pushlog.EnvRole)
	if role == "" {
		role = "write"
	}
	return user, key, role
}

// record appends the verdict's record, fsynced, before the hook answers,
// so a daemon that dies right after a push loses neither who pushed nor a
// refusal. A push let through is recorded as pending only: its ref update
// can still fail (a lost race, a full disk), so the acceptance is recorded
// by post-receive once the ref has moved.
func (h *PreReceive) record(res Result) error {
	now := time.Now().UTC()
	user, key, role := h.pusher()
	log := pushlog.At(h.gitDir())
	if len(res.Violations) > 0 {
		vs := pushlog.ViolationsOf(res.Violations)
		h.describe(vs, res.Updates)
		for _, u := range res.Updates {
			// One line per refused push; the violations name their refs.
			return log.Append(pushlog.Rejections, pushlog.Rejection{Time: now, User: user, Key: key, Role: role, Ref: u.Ref,
				Old: u.Old, New: u.New, Verdict: res.Verdict, Violations: vs})
		}
		return nil
	}
	var lines []any
	for _, u := range res.Updates {
		lines = append(lines, pushlog.Push{Time: now, User: user, Key: key, Role: role, Ref: u.Ref,
			Old: u.Old, New: u.New, Commits: u.Commits})
	}
	return log.Append(pushlog.Pending, lines...)
}

// describe adds to each refused commit's violations the build its message
// names and its pool's counts on the branch at the time (what a waiting
// build is waiting for). Best effort: a refusal is recorded without them
// rather than not at all.
func (h *PreReceive) describe(vs []pushlog.Violation, ups []pool.RefUpdate) {
	repo := h.openRepo()
	defer repo.Close()
	set, err := h.settings(repo)
	if err != nil {
		return
	}
	var branch *pool.Snapshot // nil (no pools) for a new branch
	for _, u := range ups {
		if u.Ref == "refs/heads/"+set.Policy.Branch && !pool.IsZero(u.Old) {
			branch, _ = repo.SnapshotAt(u.Old)
		}
	}
	for i := range vs {
		v := &vs[i]
		if v.Commit != "" {
			if c, err := repo.RawCommit(v.Commit); err == nil {
				v.SetBuild(pool.ParseMessage(c.Message))
			}
		}
		if v.Pool != "" {
			n := branch.Pool(v.Pool).ClaimedCount()
			v.Claimed = &n
			if m := set.Policy.MaxClaimed[v.Pool]; m > 0 {
				v.MaxClaimed = &m
			}
		}
	}
}

// PostReceive is one run of the post-receive hook. git runs it after the
// ref updates, with only the refs that did move, so what it records as
// accepted has landed. Its exit status cannot undo a push.
type PostReceive PreReceive

// Run records the accepted push and returns the exit code.
func (h *PostReceive) Run() int {
	if err := h.record(); err != nil {
		// The push has landed; who pushed it is still in the pending
		// record the pre-receive hook wrote.
		fmt.Fprintf(h.Stderr, "poolgate: warning: the push landed but could not be recorded: %v\n", err)
		return 1
	}
	return 0
}

func (h *PostReceive) record() error {
	pre := (*PreReceive)(h)
	lines, err := readUpdates(h.Stdin)
	if err != nil || len(lines) == 0 {
		return err
	}
	repo := pre.openRepo()
	defer repo.Close()
	set, err := pre.settings(repo)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	user, key, role := pre.pusher()
	var recs []any
	for _, u := range lines {
		var chain []string
		if !pool.IsZero(u.New) && u.Ref == "refs/heads/"+set.Policy.Branch {
			if chain, _, err = repo.NewCommits(u.Old, u.New); err != nil {
				return err
			}
		}
		recs = append(recs, pushlog.Push{Time: now, User: user, Key: key, Role: role, Ref: u.Ref, Old: u.Old, New: u.New, Commits: chain})
	}
	return pushlog.At(pre.gitDir()).Append(pushlog.Pushes, recs...)
}

func readUpdates(r io.Reader) ([]pool.RefUpdate, error) {
	var out []pool.RefUpdate
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		u, err := pool.ParseRefUpdate(sc.Text())
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, sc.Err()
}
