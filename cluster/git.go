package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/poolgate/poolgate/internal/gitexec"
	"github.com/poolgate/poolgate/pool"
)

// gitRunner runs git for the cluster's own work. It streams stdin and
// stdout (packs), which the daemon's and gitstore's helpers do not, and
// gives git a clean environment: in the ref hook the process environment
// is receive-pack's, and none of its GIT_* variables may leak in.
type gitRunner struct {
	home string // HOME for git: the data dir, as the daemon does
}

// run runs git in dir. stdin and stdout may be nil; stderr is kept for the
// error. A cancelled ctx kills git's whole process group.
func (g gitRunner) run(ctx context.Context, dir string, stdin io.Reader, stdout io.Writer, args ...string) error {
	cmd := gitexec.Command(ctx, gitexec.Options{Dir: dir, Home: g.home}, args...)
	cmd.Stdin = stdin
	cmd.Stdout = stdout
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return &gitError{args: args, err: err, stderr: strings.TrimSpace(errb.String())}
	}
	return nil
}

// out runs git and returns its trimmed stdout.
func (g gitRunner) out(ctx context.Context, dir string, args ...string) (string, error) {
	var b bytes.Buffer
	err := g.run(ctx, dir, nil, &b, args...)
	return strings.TrimSpace(b.String()), err
}

type gitError struct {
	args   []string
	err    error
	stderr string
}

func (e *gitError) Error() string {
	return fmt.Sprintf("git %s: %v: %s", e.args[0], e.err, e.stderr)
}

// exitCode is git's exit status, or -1 when it did not run to an exit.
func exitCode(err error) int {
	var ge *gitError
	var ee *exec.ExitError
	if errors.As(err, &ge) && errors.As(ge.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// tip is the branch's commit in the repo at dir, "" when it has none.
func (g gitRunner) tip(ctx context.Context, dir, branch string) (string, error) {
	out, err := g.out(ctx, dir, "rev-parse", "-q", "--verify", "refs/heads/"+branch+"^{commit}")
	if exitCode(err) == 1 {
		return "", nil
	}
	return out, err
}

// connected reports whether sha and everything it reaches are in the repo:
// git's own connectivity check, as receive-pack runs it.
func (g gitRunner) connected(ctx context.Context, dir, sha string) bool {
	return g.run(ctx, dir, nil, nil, "rev-list", "--objects", "--quiet", sha, "--not", "--all") == nil
}

// hasCommit reports whether the commit object itself is present.
func (g gitRunner) hasCommit(ctx context.Context, dir, sha string) bool {
	return g.run(ctx, dir, nil, nil, "cat-file", "-e", sha+"^{commit}") == nil
}

// isAncestor reports whether a is b or reachable from it.
func (g gitRunner) isAncestor(ctx context.Context, dir, a, b string) bool {
	return g.run(ctx, dir, nil, nil, "merge-base", "--is-ancestor", a, b) == nil
}

// pack writes a pack of want less what have reaches (have may be "") to w.
// Not thin: the receiver needs no base it may lack.
func (g gitRunner) pack(ctx context.Context, dir, want, have string, w io.Writer) error {
	revs := want + "\n"
	if have != "" {
		revs += "^" + have + "\n"
	}
	return g.run(ctx, dir, strings.NewReader(revs), w, "pack-objects", "--stdout", "--revs", "-q", "--delta-base-offset")
}

// unpack stores a pack from r in the repo's object store (synced as the
// repo's core.fsync says) and checks that want is now complete.
func (g gitRunner) unpack(ctx context.Context, dir, want string, r io.Reader) error {
	if err := g.run(ctx, dir, r, nil, "unpack-objects", "-q"); err != nil {
		return err
	}
	if !g.connected(ctx, dir, want) {
		return fmt.Errorf("objects of %s incomplete after unpacking", want)
	}
	return nil
}

// setTip moves the branch to sha, only if it still is at old ("" = absent).
// The cluster's ref hook is kept out: this follows a decision, it is not one.
func (g gitRunner) setTip(ctx context.Context, dir, branch, sha, old, why string) error {
	if old == "" {
		old = pool.ZeroSHA
	}
	return g.run(ctx, dir, nil, nil, "-c", "core.hooksPath=/dev/null", "update-ref", "-m", why, "refs/heads/"+branch, sha, old)
}
