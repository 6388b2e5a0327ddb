package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/internal/gitexec"
	"github.com/poolgate/poolgate/pool"
)

// repoSettings tune every served repo; applied at each start so upgrades
// reach existing repos too.
var repoSettings = [][2]string{
	// Objects are checked on the way in; a pool repo is tiny, this is cheap.
	{"receive.fsckObjects", "true"},
	// The pre-receive hook judges fast-forwards (admins may force).
	{"receive.denyNonFastForwards", "false"},
	{"receive.denyDeletes", "false"},
	// An accepted claim must survive a power cut (DESIGN.md §7): git's
	// default syncs neither loose objects nor refs.
	{"core.fsync", "committed,reference"},
	{"core.fsyncMethod", "fsync"},
	// The daemon repacks outside the push path; auto-gc inside a push would
	// hold the repo's push lock for seconds.
	{"gc.auto", "0"},
	{"receive.autogc", "false"},
	{"repack.writeBitmaps", "true"},
	{"core.commitGraph", "true"},
	{"fetch.writeCommitGraph", "false"},
	// receive-pack's connectivity check runs `rev-list --alternate-refs`,
	// and inside a push's quarantine the only alternate is the repo itself,
	// whose refs `--all` already gives: listing them again is a second git
	// process per push (git for-each-ref). `true` lists nothing.
	{"core.alternateRefsCommand", "true"},
}

// ensureRepo creates the repo if missing, applies the settings and hooks,
// and creates each configured pool that its branch does not hold yet.
// Existing state is never reset.
func (s *Server) ensureRepo(ctx context.Context, r *config.Repo) error {
	dir := s.cfg.RepoDir(r.Name)
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); os.IsNotExist(err) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return err
		}
		if _, err := s.git(ctx, filepath.Dir(dir), nil, nil, "init", "-q", "--bare", "--initial-branch="+r.Branch, "--", dir); err != nil {
			return err
		}
		s.log.Info().Str("repo", r.Name).Str("dir", dir).Msg("created repo")
	}
	settings := append(repoSettings[:len(repoSettings):len(repoSettings)],
		[2]string{"core.hooksPath", s.hooksDir()},
		// The relay caps a push's bytes already (limits.go); git's own cap
		// is the same number, in case a push ever reaches git another way.
		[2]string{"receive.maxInputSize", fmt.Sprint(s.cfg.Limits.MaxPushBytes)},
		// Any blob over this is streamed by git, never held in memory.
		[2]string{"core.bigFileThreshold", fmt.Sprint(max(s.cfg.Limits.MaxObjectBytes, 1<<20))},
	)
	for _, kv := range settings {
		if _, err := s.git(ctx, dir, nil, nil, "config", kv[0], kv[1]); err != nil {
			return err
		}
	}
	if r.Upstream != nil {
		// A watched mirror holds exactly what upstream has; creating pools
		// here would make it diverge.
		return nil
	}
	for i := range r.Pools {
		if err := s.ensurePool(ctx, dir, r, &r.Pools[i]); err != nil {
			return fmt.Errorf("repo %s pool %s: %w", r.Name, r.Pools[i].Name, err)
		}
	}
	return nil
}

// ensurePool adds a missing pool in one server-authored commit, made with
// plumbing and a private index: a bare repo has no work tree, and the ref
// moves only if nobody pushed in between (update-ref with the old value).
func (s *Server) ensurePool(ctx context.Context, dir string, r *config.Repo, p *config.Pool) error {
	ref := "refs/heads/" + r.Branch
	old, _ := s.git(ctx, dir, nil, nil, "rev-parse", "-q", "--verify", ref+"^{commit}")
	if old != "" {
		for _, sub := range []string{pool.Claimed, pool.Unclaimed} {
			if _, err := s.git(ctx, dir, nil, nil, "rev-parse", "-q", "--verify", old+":"+p.Name+"/"+sub); err == nil {
				return nil // the pool exists; its locks are the pushers' business now
			}
		}
	}
	tmp, err := os.MkdirTemp("", "poolgate-index-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	env := []string{
		"GIT_INDEX_FILE=" + filepath.Join(tmp, "index"),
		"GIT_AUTHOR_NAME=poolgate", "GIT_AUTHOR_EMAIL=poolgate@localhost",
		"GIT_COMMITTER_NAME=poolgate", "GIT_COMMITTER_EMAIL=poolgate@localhost",
	}
	if old != "" {
		if _, err := s.git(ctx, dir, env, nil, "read-tree", old); err != nil {
			return err
		}
	}
	blob, err := s.git(ctx, dir, env, []byte{}, "hash-object", "-w", "--stdin")
	if err != nil {
		return err
	}
	var entries bytes.Buffer
	paths := []string{p.Name + "/claimed/.gitkeep", p.Name + "/unclaimed/.gitkeep"}
	for _, l := range p.Locks {
		paths = append(paths, p.Name+"/unclaimed/"+l)
	}
	for _, path := range paths {
		fmt.Fprintf(&entries, "100644 %s\t%s\n", blob, path)
	}
	if _, err := s.git(ctx, dir, env, entries.Bytes(), "update-index", "--add", "--index-info"); err != nil {
		return err
	}
	tree, err := s.git(ctx, dir, env, nil, "write-tree")
	if err != nil {
		return err
	}
	args := []string{"commit-tree", tree, "-m", "poolgate: create pool " + p.Name}
	if old != "" {
		args = append(args, "-p", old)
	}
	commit, err := s.git(ctx, dir, env, nil, args...)
	if err != nil {
		return err
	}
	expect := old
	if expect == "" {
		expect = pool.ZeroSHA
	}
	if _, err := s.git(ctx, dir, env, nil, "update-ref", "-m", "poolgate: create pool", ref, commit, expect); err != nil {
		return err
	}
	s.log.Info().Str("repo", r.Name).Str("pool", p.Name).Strs("locks", p.Locks).Str("commit", commit).Msg("created pool")
	return nil
}

// git runs a git command of the daemon's own (not a client's) and returns
// its trimmed stdout; stderr goes into the error. On cancel (shutdown)
// git's whole group goes: a pack-objects under repack outliving the daemon
// would keep writing into the repo.
func (s *Server) git(ctx context.Context, dir string, env []string, stdin []byte, args ...string) (string, error) {
	cmd := gitexec.Command(ctx, s.gitOptions(dir, env...), args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %v: %s", args[0], err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// gitOptions is how the daemon runs git in dir: the clean environment with
// env added. Git reads $HOME/.gitconfig; the data dir is the operator's
// place for one, not whoever's home the daemon started in.
func (s *Server) gitOptions(dir string, env ...string) gitexec.Options {
	return gitexec.Options{Dir: dir, Home: s.cfg.DataDir, Env: env}
}

// baseEnv is the whole environment of a git the daemon starts, for a
// caller that hands it on (the hook socket's reads, operator actions).
func (s *Server) baseEnv() []string { return gitexec.Environ(s.gitOptions("")) }

func (s *Server) hooksDir() string { return filepath.Join(s.cfg.DataDir, "hooks") }
