package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/poolgate/poolgate/hooks"
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
const HookName = "reference-transaction"

// InstallHook writes the reference-transaction hook into the daemon's hook
// dir when clustered, and removes it otherwise (a node taken out of a
// cluster serves alone again). exe is the poolgate binary.
func InstallHook(dir, exe string, clustered bool) error {
	path := filepath.Join(dir, HookName)
	if !clustered {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	// Only a client's push through the daemon (it sets the verdict file)
	// in the prepared phase is decided; the daemon's own updates (catch-up)
	// and the committed/aborted phases cost no process.
	script := fmt.Sprintf(`#!/bin/sh
[ "$1" = prepared ] && [ -n "$%s" ] || exit 0
exec %s cluster-hook %s "$@"
`, pushlog.EnvVerdictFile, shellQuote(exe), HookName)
	tmp := filepath.Join(dir, "."+HookName+".tmp")
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// RefHook is one run of the reference-transaction hook.
type RefHook struct {
	Args   []string // the hook's arguments: the phase
	Getenv func(string) string
	Stdin  io.Reader
	Stderr io.Writer
	Dir    string // the repository
}

// Run decides the push's branch update in the cluster; 0 lets git move the
// ref, 1 aborts it.
func (h *RefHook) Run() int {
	if len(h.Args) != 1 || h.Args[0] != "prepared" || h.Getenv(pushlog.EnvVerdictFile) == "" {
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
	cfg, err := hooks.LoadConfig(h.Getenv(pushlog.EnvConfig))
	if err != nil {
		return &UnavailableError{Reason: "config: " + err.Error()}
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
	signer, err := signerFromFile(cfg.HostKeyPath())
	if err != nil {
		return &UnavailableError{Reason: "cluster key: " + err.Error()}
	}
	cli, err := newEtcd(cl)
	if err != nil {
		return &UnavailableError{Reason: err.Error()}
	}
	defer cli.Close()
	d := &decider{cl: cl, etcd: cli, signer: signer, git: gitRunner{home: cfg.DataDir}, keys: keys{cl.Etcd.Prefix}}
	return d.decide(context.Background(), h.Dir, repo.Name, repo.Branch, old, new)
}
