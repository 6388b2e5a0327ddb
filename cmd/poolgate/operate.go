package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitstore"
	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/operator"
	"github.com/poolgate/poolgate/pushlog"
)

func init() {
	register("release", "operator: release a claimed lock, with a reason (one audited commit)", operate(operator.Release))
	register("claim", "operator: claim a free lock, with a reason", operate(operator.Claim))
	register("add", "operator: add a lock, free, with a reason", operate(operator.Add))
	register("remove", "operator: remove a free lock, with a reason", operate(operator.Remove))
}

var pastTense = map[operator.Verb]string{operator.Release: "released", operator.Claim: "claimed", operator.Add: "added", operator.Remove: "removed"}

// operate runs one operator action: through the running daemon's operator
// socket when there is one, else by itself under a lock file in the repo
// (hook-only set-ups, or the daemon stopped).
func operate(verb operator.Verb) func([]string, io.Writer, io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		name := string(verb)
		fs := newFlags(name, name+" [--config FILE] REPO POOL LOCK --reason TEXT [--commit SHA]", stdout, stderr)
		cfgFile := fs.String("config", os.Getenv(pushlog.EnvConfig), "config file (default $POOLGATE_CONFIG); REPO may instead be a repository directory (hook-only set-ups)")
		reason := fs.String("reason", "", "why, for the audit (required)")
		seen := fs.String("commit", "", "refuse if the lock changed after this commit (the one you looked at)")
		pos, code := parseFlags(fs, args, stderr)
		if code >= 0 {
			return code
		}
		if len(pos) != 3 {
			fmt.Fprintf(stderr, "poolgate %s: want REPO POOL LOCK (see poolgate %s --help)\n", name, name)
			return exitUsage
		}
		a := operator.Action{Repo: pos[0], Pool: pos[1], Lock: pos[2], Verb: verb, Reason: *reason, Commit: *seen}
		pre := a
		pre.Operator = "cli" // named by the daemon, or by the OS below
		if err := pre.Check(); err != nil {
			fmt.Fprintf(stderr, "poolgate %s: %v\n", name, err)
			return exitUsage
		}
		// Honoured from root only (operator.OperatorName).
		a.Operator = os.Getenv("SUDO_USER")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res, err := operateVia(ctx, *cfgFile, a)
		if err != nil {
			var usage *usageError
			if errors.As(err, &usage) {
				fmt.Fprintf(stderr, "poolgate %s: %v\n", name, err)
				return exitUsage
			}
			fmt.Fprintf(stderr, "poolgate %s: %v\n", name, err)
			return exitFailed
		}
		fmt.Fprintf(stdout, "%s %s/%s in commit %s\n", pastTense[verb], a.Pool, a.Lock, res.Commit)
		return exitOK
	}
}

type usageError struct{ error }

func operateVia(ctx context.Context, cfgFile string, a operator.Action) (operator.Result, error) {
	var cfg *config.Config
	var err error
	if cfgFile != "" || !isRepoDir(a.Repo) {
		if cfg, err = loadDataConfig(cfgFile); err != nil {
			return operator.Result{}, &usageError{err}
		}
	}
	if cfg == nil || cfg.Repo(a.Repo) == nil {
		if !isRepoDir(a.Repo) {
			return operator.Result{}, &usageError{fmt.Errorf("no repo %q in %s, and no bare repository at that path", a.Repo, cfg.File)}
		}
		// Hook-only: the repository itself, through its own hook.
		dir := a.Repo
		a.Repo = hooks.RepoNameFromDir(dir)
		return operateLocal(ctx, cfg, dir, a)
	}
	res, err := operator.Call(ctx, operator.SocketPath(cfg.DataDir), a)
	if !errors.Is(err, operator.ErrNoDaemon) {
		return res, err
	}
	return operateLocal(ctx, cfg, cfg.RepoDir(a.Repo), a)
}

// operateLocal acts without a daemon, as the OS user running the command.
func operateLocal(ctx context.Context, cfg *config.Config, dir string, a operator.Action) (operator.Result, error) {
	a.Operator = operator.OperatorName(os.Getuid(), a.Operator)
	t := operator.Target{Dir: dir, Env: []string{pushlog.EnvRepo + "=" + a.Repo}}
	if cfg != nil {
		if rc := cfg.Repo(a.Repo); rc != nil {
			t.Branch = rc.Branch
		}
		if cfg.File != "" {
			t.Env = append(t.Env, pushlog.EnvConfig+"="+cfg.File)
		}
		// The hook expands the config's ${NAME}s as the daemon's would.
		for _, n := range cfg.EnvNames {
			if v, ok := os.LookupEnv(n); ok {
				t.Env = append(t.Env, n+"="+v)
			}
		}
	}
	if t.Branch == "" {
		var err error
		if t.Branch, err = gitstore.Open(dir).Git("symbolic-ref", "--short", "HEAD"); err != nil {
			return operator.Result{}, fmt.Errorf("finding the branch of %s: %w", dir, err)
		}
	}
	return operator.ApplyLocal(ctx, t, a)
}

func isRepoDir(p string) bool {
	// Bare repositories only: a push into a work tree's checked-out
	// branch is refused by git anyway.
	fi, err := os.Stat(filepath.Join(p, "HEAD"))
	return err == nil && !fi.IsDir()
}
