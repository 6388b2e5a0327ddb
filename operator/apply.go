package operator

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/poolgate/poolgate/internal/gitexec"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/poolrepo"
	"github.com/poolgate/poolgate/pushlog"
)

// Target is where an action lands.
type Target struct {
	Dir    string // the bare repository
	Branch string
	// Env is the environment of the local push, hence of the hook: PATH,
	// POOLGATE_CONFIG, POOLGATE_REPO and the config's ${NAME}s. Apply adds
	// the pusher (the operator) and the operator mark.
	Env []string
}

// Apply performs the action: it checks the lock against the branch tip,
// writes the commit in a scratch repository that borrows the repo's
// objects, and pushes it into the repo with git's own receive-pack, so the
// pre-receive hook validates and records it exactly as it does a client's
// push. The caller serializes it with other pushes.
func Apply(ctx context.Context, t Target, a Action) (Result, error) {
	if err := a.Check(); err != nil {
		return Result{}, err
	}
	tip, old, err := precondition(t, a)
	if err != nil {
		return Result{}, err
	}
	scratch, err := os.MkdirTemp("", "poolgate-operator-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(scratch)
	commit, err := writeCommit(ctx, scratch, t, a, tip, old)
	if err != nil {
		return Result{}, err
	}
	if err := pushCommit(ctx, scratch, t, a, tip, commit); err != nil {
		return Result{}, err
	}
	return Result{Old: tip, Commit: commit}, nil
}

// lockPaths are the lock's two possible paths: claimed, then unclaimed.
func lockPaths(a Action) []string {
	return []string{a.Pool + "/" + pool.Claimed + "/" + a.Lock, a.Pool + "/" + pool.Unclaimed + "/" + a.Lock}
}

// precondition checks the lock against the branch tip (and against what
// the operator saw, when the action names it) and returns the tip and the
// lock's entry there.
func precondition(t Target, a Action) (tip string, old pool.Lock, err error) {
	spec := specs[a.Verb]
	r := poolrepo.Open(t.Dir)
	defer r.Close()
	tip, err = r.Git.ResolveBranch(t.Branch)
	if err != nil {
		return "", old, err
	}
	if tip == "" {
		return "", old, refuse(NotFound, "branch %s has no commits yet", t.Branch)
	}
	snap, err := r.SnapshotAt(tip)
	if err != nil {
		return "", old, err
	}
	p := snap.Pool(a.Pool)
	if p == nil {
		return "", old, refuse(NotFound, "there is no pool %q on branch %s", a.Pool, t.Branch)
	}
	if st := p.StateOf(a.Lock); st == pool.Absent && spec.from != pool.Absent {
		return "", old, refuse(NotFound, "there is no lock %s/%s on branch %s", a.Pool, a.Lock, t.Branch)
	} else if st != spec.from {
		return "", old, refuse(Conflict, "cannot %s %s/%s: it is %s, not %s", a.Verb, a.Pool, a.Lock, st, spec.want)
	}
	if a.Commit != "" {
		if err := lockSince(r, a.Commit, tip, lockPaths(a)); err != nil {
			return "", old, err
		}
	}
	if a.ClaimCommit != "" {
		if err := sameClaim(r, tip, a); err != nil {
			return "", old, err
		}
	}
	old, _ = p.Lock(a.Lock)
	return tip, old, nil
}

// writeCommit writes the action's commit on top of tip in scratch, a bare
// repository that borrows the repo's objects, and returns its id.
func writeCommit(ctx context.Context, scratch string, t Target, a Action, tip string, old pool.Lock) (string, error) {
	g := gitIn(scratch,
		"GIT_INDEX_FILE="+filepath.Join(scratch, "index"),
		"GIT_AUTHOR_NAME="+a.Operator, "GIT_AUTHOR_EMAIL=operator@poolgate",
		"GIT_COMMITTER_NAME=poolgate", "GIT_COMMITTER_EMAIL=poolgate@localhost")
	if _, err := g.run(ctx, nil, "init", "-q", "--bare", "."); err != nil {
		return "", err
	}
	objects, err := filepath.Abs(filepath.Join(t.Dir, "objects"))
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(scratch, "objects", "info", "alternates"), []byte(objects+"\n"), 0o644); err != nil {
		return "", err
	}
	if _, err := g.run(ctx, nil, "read-tree", tip); err != nil {
		return "", err
	}
	var entries bytes.Buffer
	mode, blob := fmt.Sprintf("%o", old.Mode), old.Hash
	if a.Verb == Add {
		if blob, err = g.run(ctx, []byte{}, "hash-object", "-w", "--stdin"); err != nil {
			return "", err
		}
		mode = "100644"
	}
	paths := lockPaths(a)
	for _, path := range paths {
		// Mode 0 removes the path from the index.
		fmt.Fprintf(&entries, "0 %s\t%s\n", strings.Repeat("0", len(tip)), path)
	}
	switch specs[a.Verb].to {
	case pool.StateClaimed:
		fmt.Fprintf(&entries, "%s %s\t%s\n", mode, blob, paths[0])
	case pool.StateUnclaimed:
		fmt.Fprintf(&entries, "%s %s\t%s\n", mode, blob, paths[1])
	}
	if _, err := g.run(ctx, entries.Bytes(), "update-index", "--index-info"); err != nil {
		return "", err
	}
	tree, err := g.run(ctx, nil, "write-tree")
	if err != nil {
		return "", err
	}
	return g.run(ctx, nil, "commit-tree", tree, "-p", tip, "-m", a.Message())
}

// pushCommit pushes commit into the repo with git's own receive-pack, so
// the pre-receive hook validates and records it as it does a client's
// push; the lease refuses it if the tip moved since tip.
func pushCommit(ctx context.Context, scratch string, t Target, a Action, tip, commit string) error {
	verdict := filepath.Join(scratch, "verdict")
	push := gitIn(scratch, slices.Concat(t.Env, []string{
		pushlog.EnvUser + "=" + a.Operator, pushlog.EnvRole + "=write", pushlog.EnvKey + "=",
		pushlog.EnvOperator + "=1", pushlog.EnvVerdictFile + "=" + verdict})...)
	ref := "refs/heads/" + t.Branch
	dst, err := filepath.Abs(t.Dir)
	if err != nil {
		return err
	}
	out, err := push.run(ctx, nil, "push", "--porcelain", "--force-with-lease="+ref+":"+tip, dst, commit+":"+ref)
	if err != nil {
		return pushRefusal(out, err, verdict)
	}
	return nil
}

// lockSince refuses when seen is not on the branch, or the lock changed
// after it: the operator decided on what they saw, and it is gone.
func lockSince(r *poolrepo.Repo, seen, tip string, paths []string) error {
	ok, err := r.Git.IsAncestor(seen, tip)
	if err != nil || !ok {
		return refuse(Conflict, "commit %s is not on the branch (any more); look again", pool.Short(seen))
	}
	moved, err := r.Git.Git(append([]string{"--literal-pathspecs", "rev-list", "-1", seen + ".." + tip, "--"}, paths...)...)
	if err != nil {
		return err
	}
	if moved != "" {
		return refuse(Conflict, "the lock changed after commit %s (in %s); look again", pool.Short(seen), pool.Short(moved))
	}
	return nil
}

// sameClaim refuses unless the lock's claim is still the one in
// a.ClaimCommit (updates of the claimed file since are fine).
func sameClaim(r *poolrepo.Repo, tip string, a Action) error {
	steps, err := r.LockSteps(tip, a.Pool, a.Lock, 16)
	if err != nil {
		return err
	}
	for _, s := range steps {
		if s.State != pool.StateClaimed {
			break
		}
		if s.Commit == a.ClaimCommit {
			return nil
		}
	}
	return refuse(Conflict, "%s/%s is not held by the claim of commit %s any more", a.Pool, a.Lock, pool.Short(a.ClaimCommit))
}

// pushRefusal turns a failed local push into the operator's answer: the
// hook's own lines when it refused, a conflict when the branch moved.
func pushRefusal(out string, err error, verdictFile string) error {
	_, rules := pushlog.ReadVerdict(verdictFile)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(l), "remote: poolgate: "); ok && !strings.HasPrefix(m, "push refused (") &&
			!strings.HasPrefix(m, "this is temporary") {
			lines = append(lines, strings.TrimSpace(m))
		}
	}
	switch {
	case len(lines) > 0:
		return &Refusal{Code: Rejected, Msg: "refused by the validator: " + strings.Join(lines, " "), Rules: rules}
	case strings.Contains(out, "stale info") || strings.Contains(out, "fetch first") || strings.Contains(out, "non-fast-forward"):
		return refuse(Conflict, "the branch moved while the action was prepared; try again")
	case strings.Contains(out, "pre-receive hook declined"):
		return &Refusal{Code: Rejected, Msg: "refused by the pre-receive hook", Rules: rules}
	}
	return err
}

// gitIn is git run in dir with env added to gitexec's clean environment:
// nothing of an operator's shell (GIT_DIR, a ~/.gitconfig) leaks in.
func gitIn(dir string, env ...string) *git {
	return &git{gitexec.Options{Dir: dir, Home: "/nonexistent", Env: append([]string{"GIT_CONFIG_GLOBAL=/dev/null"}, env...)}}
}

type git struct{ o gitexec.Options }

// run returns stdout trimmed; on failure, stdout and stderr together, for
// pushRefusal to read.
func (g *git) run(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := gitexec.Command(ctx, g.o, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String() + errb.String(), fmt.Errorf("git %s: %v: %s", args[0], err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}
