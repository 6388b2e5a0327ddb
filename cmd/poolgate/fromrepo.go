package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/daemon"
	"github.com/poolgate/poolgate/events"
	"github.com/poolgate/poolgate/hooks"
	"github.com/poolgate/poolgate/internal/gitexec"
	"github.com/poolgate/poolgate/poolrepo"
)

// gitDirOf returns the git dir of a clone or bare repo at dir, or a
// one-line error saying dir is not a git repository.
func gitDirOf(dir string) (string, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%s: no such directory", dir)
	}
	out, err := gitexec.Command(context.Background(), gitexec.Options{
		Dir: dir,
		// The user's own gitconfig (safe.directory) still applies.
		Inherit: []string{"HOME"},
		// A repo above dir is not the one asked about.
		Env: []string{"GIT_CEILING_DIRECTORIES=" + filepath.Dir(absPath(dir))},
	}, "rev-parse", "--absolute-git-dir").Output()
	if err != nil {
		return "", fmt.Errorf("%s is not a git repository", dir)
	}
	return strings.TrimSpace(string(out)), nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// repoInPlace reads a repo where it lies, for hook-only set-ups (gitolite,
// plain git) where no daemon keeps an event store: its events are derived
// in-process, from its history and the hook's records in its git dir, into
// a throwaway store. The config (optional) gives the repo's branch and
// pools; without it the branch is the repo's HEAD. The returned config
// names only that repo, and close removes the store.
func repoInPlace(ctx context.Context, cfg *config.Config, dir, name string) (*config.Config, *events.Store, func(), error) {
	gitDir, err := gitDirOf(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	if name == "" {
		name = hooks.RepoNameFromDir(dir)
	}
	if cfg == nil {
		if cfg, err = config.Parse("", nil); err != nil {
			return nil, nil, nil, err
		}
	}
	rc := cfg.Repo(name)
	if rc == nil {
		r := poolrepo.Open(gitDir)
		p, err := r.Policy(cfg, name)
		r.Close()
		if err != nil {
			return nil, nil, nil, err
		}
		rc = &config.Repo{Name: name, Branch: p.Branch}
	}
	tmp, err := os.MkdirTemp("", "poolgate-inplace-")
	if err != nil {
		return nil, nil, nil, err
	}
	done := func() { os.RemoveAll(tmp) }
	local := *cfg
	local.DataDir, local.Repos = tmp, []config.Repo{*rc}
	// The store's code finds a repo under data_dir; a link puts it there
	// without copying (the repo is only read).
	if err := os.MkdirAll(filepath.Dir(local.RepoDir(name)), 0o700); err != nil {
		done()
		return nil, nil, nil, err
	}
	if err := os.Symlink(gitDir, local.RepoDir(name)); err != nil {
		done()
		return nil, nil, nil, err
	}
	st, err := events.Open(tmp, false)
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	d := events.NewDeriver(st, &local.Repos[0], local.RepoDir(name))
	err = d.SyncFunc(ctx, nil)
	d.Close()
	if err != nil {
		st.Close()
		done()
		return nil, nil, nil, err
	}
	return &local, st, func() { st.Close(); done() }, nil
}

// readSource is where status and history read from: the daemon's data dir
// (by --config, $POOLGATE_CONFIG or the demo data dir), or with --repo a
// repo read in place. With neither, a git repo in the current directory
// is read in place, so `poolgate status` works inside a hook-only repo.
type readSource struct {
	cfgFile, repoDir, name string
	// cmd and stderr are for a note when a running daemon is still
	// deriving what the command shows.
	cmd    string
	stderr io.Writer
}

// open returns the config, the store and a func to close both. repos are
// the repos to bring up to date; nil means all of them.
func (src readSource) open(ctx context.Context, repos []string) (*config.Config, *events.Store, func(), error) {
	var cfg *config.Config
	var err error
	if src.cfgFile != "" {
		if cfg, err = config.LoadForReading(absPath(src.cfgFile)); err != nil {
			return nil, nil, nil, usageErr{err}
		}
	}
	dir := src.repoDir
	if dir == "" && src.cfgFile == "" {
		if _, derr := os.Stat(daemon.DemoDataDir); derr != nil {
			if _, gerr := gitDirOf("."); gerr != nil {
				return nil, nil, nil, usageErr{fmt.Errorf("no --config given, no ./%s here, and . is not a git repository (use --repo DIR for a repo served by another git server)", daemon.DemoDataDir)}
			}
			dir = "."
		}
	}
	if dir != "" {
		return repoInPlace(ctx, cfg, dir, src.name)
	}
	if cfg == nil {
		if cfg, err = loadDataConfig(""); err != nil {
			return nil, nil, nil, usageErr{err}
		}
	}
	for _, r := range repos {
		if cfg.Repo(r) == nil {
			return nil, nil, nil, usageErr{fmt.Errorf("unknown repo %q", r)}
		}
	}
	if repos == nil {
		for _, r := range cfg.Repos {
			repos = append(repos, r.Name)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, events.DBFile)); err != nil && len(repos) > 0 {
		if _, err := os.Stat(cfg.RepoDir(repos[0])); err != nil {
			// A hook-only host: the config is there, the daemon's data not.
			return nil, nil, nil, usageErr{fmt.Errorf("no event store and no repo %s in %s (poolgate serve has not run here); for a repo served by another git server use --repo DIR", repos[0], cfg.DataDir)}
		}
	}
	st, err := openStore(ctx, cfg, repos, src.cmd, src.stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, st, func() { st.Close() }, nil
}

// usageErr marks a problem with what was asked (exit 2), not a failure.
type usageErr struct{ error }

func exitFor(err error) int {
	if _, ok := err.(usageErr); ok {
		return exitUsage
	}
	return exitFailed
}
