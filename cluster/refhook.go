package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/hooksock"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/pushlog"
)

// The global decision sits in git's reference-transaction hook, "prepared"
// phase: receive-pack calls it after the pre-receive hook accepted the push
// and after the pushed objects left quarantine for the object store, with
// the ref locked and not yet moved. A non-zero exit aborts the update, so
// the local ref moves only after etcd decided, never before (the bug Gerrit
// multi-site fixed late). A crash between the CAS and git's ref update
// leaves this node behind etcd, which it catches up with at start; never
// ahead of it.

// HookName is the git hook that runs the decision.
const HookName = hooksock.RefTransaction

// InstallHook writes the reference-transaction hook into the daemon's hook
// dir when clustered, and removes it otherwise (a node taken out of a
// cluster serves alone again). exe is the poolgate binary. Where the small
// hook program sits beside exe (hooks.SmallProgram, as for the daemon's
// other hooks), the hook is a link to it and the decision is made in the
// daemon, over the hook socket; otherwise a script runs `poolgate
// cluster-hook`.
func InstallHook(dir, exe string, clustered bool) error {
	return installHook(dir, exe, clustered, true)
}

// InstallHookScript always writes the script (the daemon's hook socket
// off, POOLGATE_HOOKSOCK=off, for measuring the hook as it was).
func InstallHookScript(dir, exe string, clustered bool) error {
	return installHook(dir, exe, clustered, false)
}

func installHook(dir, exe string, clustered, allowSmall bool) error {
	path := filepath.Join(dir, HookName)
	if !clustered {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	small := ""
	if allowSmall {
		small = hooks.SmallProgram(exe)
	}
	// Only a client's push through the daemon (it sets the verdict file)
	// in the prepared phase is decided (hooksock.RefTransactionDecides);
	// the daemon's own updates (catch-up) and the committed/aborted phases
	// cost no poolgate start.
	script := fmt.Sprintf(`#!/bin/sh
[ "$1" = prepared ] && [ -n "$%s" ] || exit 0
exec %s cluster-hook %s "$@"
`, pushlog.EnvVerdictFile, hooks.ShellQuote(exe), HookName)
	return hooks.WriteHook(dir, HookName, small, script)
}

// RefHook is one run of the reference-transaction hook.
type RefHook struct {
	Args   []string // the hook's arguments: the phase
	Getenv func(string) string
	Stdin  io.Reader
	Stderr io.Writer
	Dir    string // the repository
	// In the daemon (Node.RefTransaction): the config the push is served
	// with, and the node's decider with its etcd client. Nil: the config
	// file the environment names, and a client of its own.
	Config  *config.Config
	decider *decider
}

// Run decides the push's branch update in the cluster; 0 lets git move the
// ref, 1 aborts it.
func (h *RefHook) Run() int {
	if !hooksock.RefTransactionDecides(h.Args, h.Getenv) {
		return 0
	}
	err := h.decide()
	if err == nil {
		return 0
	}
	// The daemon reads the verdict once receive-pack ended, which is after
	// this hook: a permanent one ends the push as an error.
	verdictFile := h.Getenv(pushlog.EnvVerdictFile)
	if errors.Is(err, ErrMoved) {
		// git 2.39 dies on a prepared-phase refusal, without a report; the
		// daemon, seeing this rule, writes the report receive-pack would
		// have ("ng"), so the stock client sees an ordinary
		// "[remote rejected]", fetches the new tip and retries.
		_ = pushlog.WriteVerdict(verdictFile, pushlog.VerdictTransient, []string{pushlog.RuleMoved})
		return 1
	}
	fmt.Fprintf(h.Stderr, "poolgate: push refused: %v\n", err)
	_ = pushlog.WriteVerdict(verdictFile, pushlog.VerdictPermanent, nil)
	return 1
}

func (h *RefHook) decide() error {
	cfg := h.Config
	if cfg == nil {
		var err error
		if cfg, err = hooks.LoadConfig(h.Getenv(pushlog.EnvConfig)); err != nil {
			return &UnavailableError{Reason: "config: " + err.Error()}
		}
	}
	cl := cfg.Cluster
	if cl == nil {
		return nil // a hook left from a cluster configuration
	}
	name := h.Getenv(pushlog.EnvRepo)
	repo := cfg.Repo(name)
	if repo == nil {
		return &UnavailableError{Reason: fmt.Sprintf("unknown repo %q", name)}
	}
	var old, new string
	sc := bufio.NewScanner(h.Stdin)
	for sc.Scan() {
		u, err := pool.ParseRefUpdate(sc.Text())
		if err != nil {
			return &UnavailableError{Reason: err.Error()}
		}
		if u.Ref == "HEAD" {
			// A bare repo's HEAD names the branch: git reports the update
			// through it too.
			continue
		}
		if u.Ref != "refs/heads/"+repo.Branch {
			// Only the pool branch is decided cluster-wide; any other ref
			// would silently differ between nodes.
			return fmt.Errorf("only branch %s is replicated in a cluster, not %s", repo.Branch, u.Ref)
		}
		if pool.IsZero(u.New) {
			return fmt.Errorf("the branch cannot be deleted")
		}
		old, new = u.Old, u.New
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if new == "" {
		return nil
	}
	d := h.decider
	if d == nil {
		signer, err := signerFromFile(cfg.HostKeyPath())
		if err != nil {
			return &UnavailableError{Reason: "cluster key: " + err.Error()}
		}
		cli, err := newEtcd(cl)
		if err != nil {
			return &UnavailableError{Reason: err.Error()}
		}
		defer cli.Close()
		d = &decider{cl: cl, etcd: cli, signer: signer, git: gitRunner{home: cfg.DataDir}, keys: keys{cl.Etcd.Prefix}}
	}
	return d.decide(context.Background(), h.Dir, repo.Name, repo.Branch, old, new)
}

// RefTransaction is the reference-transaction hook's prepared phase run
// in the daemon (daemon.RefDecider): the same decision, messages and
// verdicts as the hook process makes, with the node's etcd client and
// signer instead of a fresh client and a key read per push. cfg is the
// config the push is served with; getenv gives the hook's environment as
// the daemon knows it (the verdict file).
func (n *Node) RefTransaction(cfg *config.Config, getenv func(string) string, stdin io.Reader, stderr io.Writer, dir string) int {
	h := &RefHook{Args: []string{"prepared"}, Getenv: getenv, Stdin: stdin, Stderr: stderr, Dir: dir, Config: cfg, decider: n.dec}
	return h.Run()
}
