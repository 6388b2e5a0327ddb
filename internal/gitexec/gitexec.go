// Package gitexec is the one place poolgate starts git: it builds the
// command's environment from one policy, runs git in the directory asked
// for, puts it in a process group of its own and kills that whole group
// when the context ends, so nothing git or a hook started outlives it.
package gitexec

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// WaitDelay bounds how long Wait waits, once git has exited or been
// killed, for its output to be copied: a grandchild that kept a pipe
// open (a hook's background process) cannot hold a session up.
const WaitDelay = 10 * time.Second

// defaultPath is git's PATH when the process has none.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// Options say where git runs and what it sees beyond the clean environment.
type Options struct {
	// Dir is git's working directory: the repo. Nothing a client sent is
	// ever an argument to git; a repo is named by running git in it.
	Dir string
	// Home is git's HOME ($HOME/.gitconfig is read); "" sets none.
	Home string
	// Inherit names variables passed on from this process's environment
	// when they are set: the hook's quarantine (GIT_OBJECT_DIRECTORY...),
	// watch mode's SSH agent and proxies.
	Inherit []string
	// Env are more NAME=value pairs, after the above; a later one wins.
	Env []string
	// SameGroup keeps git in the caller's process group: for a hook's own
	// git, which must die with the receive-pack group the daemon kills.
	// Such a git is killed alone on cancel.
	SameGroup bool
}

// Environ is the whole environment of a git started with o.
//
// Security: git, and every hook it starts, sees only this. Nothing of the
// caller's environment passes on but PATH and what o names: no GIT_*
// variable of the daemon's (GIT_DIR, GIT_CONFIG_*, GIT_SSH_COMMAND) can
// point git elsewhere, no secret of the daemon's environment (a config's
// ${NAME}) reaches a hook unless the config asks, and the system gitconfig
// is not read. Keep it a list of what is let in, never of what is left out.
func Environ(o Options) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	env := []string{"PATH=" + path, "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C"}
	if o.Home != "" {
		env = append(env, "HOME="+o.Home)
	}
	for _, k := range o.Inherit {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, o.Env...)
}

// Command returns git with args, set up as o says, bound to ctx: when ctx
// ends, git's process group is killed (SIGKILL) and Wait returns within
// WaitDelay. The caller sets stdin/stdout/stderr and runs it.
func Command(ctx context.Context, o Options, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = o.Dir
	cmd.Env = Environ(o)
	cmd.WaitDelay = WaitDelay
	if o.SameGroup {
		return cmd // exec's default Cancel kills git alone
	}
	// Own process group: a Ctrl-C on the daemon's terminal must not reach
	// git half-way through a push, and killing the group also ends what
	// git started (the hook, pack-objects under repack).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// ExitCode is git's exit status from Wait's error: 0 for nil, git's own
// status when it exited with one, and ok false when it did not exit by
// itself (not started, killed by a signal, an I/O error).
func ExitCode(err error) (code int, ok bool) {
	if err == nil {
		return 0, true
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return ee.ExitCode(), true
	}
	return 1, false
}
