package operator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/poolgate/poolgate/gitstore"
	"github.com/poolgate/poolgate/pushlog"
)

// LockFile is the file ApplyLocal holds while it acts, inside the repo's
// git dir beside the hook's records.
const LockFile = "operator.lock"

// ApplyLocal performs an action with no daemon running (hook-only set-ups:
// plain git over OpenSSH, gitolite): under an flock in the repo, so two
// operators never interleave, and through the repo's own pre-receive hook.
// A client's push racing it is serialized by git's ref lock instead: one
// of the two sees the branch moved (the client retries, this refuses).
func ApplyLocal(ctx context.Context, t Target, a Action) (Result, error) {
	if err := a.Check(); err != nil {
		return Result{}, err
	}
	if ok, err := hasHook(t.Dir); err != nil {
		return Result{}, err
	} else if !ok {
		return Result{}, refuse(Invalid, "%s has no pre-receive hook; install poolgate's (poolgate hook pre-receive) so that operator actions are validated", t.Dir)
	}
	dir := pushlog.At(t.Dir).Dir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, err
	}
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	// Released by the kernel when this process ends, however it ends.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return Result{}, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return Apply(ctx, t, a)
}

// hasHook reports whether git would run a pre-receive hook in the repo.
func hasHook(dir string) (bool, error) {
	hooksDir := filepath.Join(dir, "hooks")
	if p, err := gitstore.Open(dir).Git("config", "--get", "core.hooksPath"); err == nil && p != "" {
		hooksDir = p
		if !filepath.IsAbs(p) {
			hooksDir = filepath.Join(dir, p)
		}
	}
	fi, err := os.Stat(filepath.Join(hooksDir, "pre-receive"))
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return fi.Mode()&0o111 != 0, nil
}
