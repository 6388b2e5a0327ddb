package main

import (
	"fmt"
	"io"
	"os"

	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/hooksock"
	"github.com/poolgate/poolgate/poolrepo"
	"github.com/poolgate/poolgate/pushlog"
)

func init() {
	register("hook", "run a git hook: 'hook pre-receive' validates a push, 'hook post-receive' records it", runHook)
	register("check", "validate existing history offline", runCheck)
}

func runHook(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hook", "hook pre-receive|post-receive [--config FILE]  (reads OLD NEW REF lines on stdin)", stdout, stderr)
	cfg := fs.String("config", "", "config `FILE` (default $POOLGATE_CONFIG; none: no limits)")
	pos, code := parseFlags(fs, args, stderr)
	if code >= 0 {
		return code
	}
	if len(pos) == 1 && pos[0] == "post-receive" {
		if hooksock.Enabled(os.Getenv) {
			// Under poolgate serve: the daemon records (see package hooksock).
			return hooksock.Run(hooksock.PostReceive, os.Getenv, os.Stdin, stderr)
		}
		h := &hooks.PostReceive{ConfigPath: *cfg, Getenv: os.Getenv, Stdin: os.Stdin, Stderr: stderr, Dir: "."}
		return h.Run()
	}
	if len(pos) != 1 || pos[0] != "pre-receive" {
		fmt.Fprintln(stderr, "poolgate hook: want 'poolgate hook pre-receive' or 'poolgate hook post-receive'")
		return exitUsage
	}
	if hooksock.Enabled(os.Getenv) {
		// Under poolgate serve: the daemon judges (see package hooksock).
		return hooksock.Run(hooksock.PreReceive, os.Getenv, os.Stdin, stderr)
	}
	h := &hooks.PreReceive{ConfigPath: *cfg, Getenv: os.Getenv, Stdin: os.Stdin, Stderr: stderr, Dir: "."}
	return h.Run()
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "check [--config FILE] [--repo DIR] [--name NAME] [REV-RANGE]", stdout, stderr)
	cfgPath := fs.String("config", os.Getenv(pushlog.EnvConfig), "config `FILE` (limits, branch); optional")
	dir := fs.String("repo", ".", "repository `DIR`: a clone or a bare repo")
	name := fs.String("name", "", "repo `NAME` in the config (default: the directory's name without .git)")
	pos, code := parseFlags(fs, args, stderr)
	if code >= 0 {
		return code
	}
	if len(pos) > 1 {
		fmt.Fprintln(stderr, "poolgate check: at most one REV-RANGE")
		return exitUsage
	}
	cfg, err := hooks.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate check: %v\n", err)
		return exitUsage
	}
	if _, err := gitDirOf(*dir); err != nil {
		fmt.Fprintf(stderr, "poolgate check: --repo %v\n", err)
		return exitFailed
	}
	if *name == "" {
		*name = hooks.RepoNameFromDir(*dir)
	}
	repo := poolrepo.Open(*dir)
	defer repo.Close()
	policy, err := repo.Policy(cfg, *name)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate check: %v\n", err)
		return exitFailed
	}
	rng := ""
	if len(pos) == 1 {
		rng = pos[0]
	}
	n, vs, err := repo.CheckRange(rng, policy)
	if err != nil {
		fmt.Fprintf(stderr, "poolgate check: %v\n", err)
		return exitFailed
	}
	for _, v := range vs {
		fmt.Fprintln(stdout, v.String())
	}
	if len(vs) > 0 {
		fmt.Fprintf(stderr, "poolgate check: %d violation(s) in %d commit(s)\n", len(vs), n)
		return exitFailed
	}
	fmt.Fprintf(stdout, "ok: %d commit(s) checked, no violations\n", n)
	return exitOK
}
