package hooks

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitstore"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/poolrepo"
	"github.com/poolgate/poolgate/pushlog"
	"github.com/poolgate/poolgate/validator"
)

// PreReceive is one run of the pre-receive hook.
type PreReceive struct {
	ConfigPath string // --config; else $POOLGATE_CONFIG
	Getenv     func(string) string
	Stdin      io.Reader
	Stderr     io.Writer
	// Dir is the repository (git runs hooks in the repo directory).
	Dir string
	// Config, if set, is used instead of loading ConfigPath: the daemon
	// judges with the config it has loaded already.
	Config *config.Config
	// GitEnv, if set, is added to the clean environment of the git
	// commands that read the push's objects (nil: the variables of this
	// process's that gitstore.HookEnv names, which inside a hook point git
	// at the quarantine).
	GitEnv []string
	// Objects, if set, returns the reader of the push's objects (the
	// daemon's in-process one); git commands still get GitEnv, and so does
	// git's cat-file for any object that reader does not have. Nil: git's
	// cat-file reads them all.
	Objects func() poolrepo.Objects
}

// Result of a hook run.
type Result struct {
	Violations []validator.Violation
	Verdict    string // "", pushlog.VerdictTransient or pushlog.VerdictPermanent
	Updates    []pool.RefUpdate
}

// Run executes the hook and returns its exit code: 0 accept, 1 reject.
func (h *PreReceive) Run() int {
	res, err := h.judge()
	if err == nil {
		err = h.record(res)
	}
	if err != nil {
		// Fail closed: a validator that cannot run must not wave pushes through.
		fmt.Fprintf(h.Stderr, "poolgate: push refused: the server could not validate it: %v\n", err)
		h.writeVerdict(pushlog.VerdictPermanent, nil)
		return 1
	}
	if len(res.Violations) == 0 {
		h.writeVerdict(pushlog.VerdictAccepted, nil)
		return 0
	}
	var b strings.Builder
	fmt.Fprintf(&b, "poolgate: push refused (%d problem", len(res.Violations))
	if len(res.Violations) > 1 {
		b.WriteString("s")
	}
	b.WriteString("):\n")
	for _, v := range res.Violations {
		for _, line := range strings.Split(v.String(), "\n") {
			b.WriteString("poolgate: " + line + "\n")
		}
	}
	if res.Verdict == pushlog.VerdictTransient {
		b.WriteString("poolgate: this is temporary; the push will land once the pool allows it.\n")
	}
	io.WriteString(h.Stderr, b.String())
	h.writeVerdict(res.Verdict, res.Violations)
	return 1
}

func (h *PreReceive) writeVerdict(v string, vs []validator.Violation) {
	if p := h.Getenv(pushlog.EnvVerdictFile); p != "" {
		var rules []string
		for _, x := range vs {
			rules = append(rules, string(x.Rule))
		}
		// Best effort: the daemon treats a missing verdict as transient,
		// the safe default for the stock client's retry loop.
		_ = pushlog.WriteVerdict(p, v, rules)
	}
}

// Settings is what a hook run needs from the config for one repo.
type Settings struct {
	Policy validator.Policy
	Pusher validator.Pusher
}

func (h *PreReceive) settings(repo *poolrepo.Repo) (Settings, error) {
	var s Settings
	path := h.ConfigPath
	if path == "" {
		path = h.Getenv(pushlog.EnvConfig)
	}
	cfg := h.Config
	if cfg == nil {
		var err error
		if cfg, err = LoadConfig(path); err != nil {
			return s, err
		}
	}
	name := h.Getenv(pushlog.EnvRepo)
	if name == "" {
		name = RepoNameFromDir(h.Dir)
	}
	var err error
	if s.Policy, err = repo.Policy(cfg, name); err != nil {
		return s, err
	}
	_, _, role := h.pusher()
	r, err := config.ParseRole(role)
	if err != nil {
		return s, fmt.Errorf("%s: %w", pushlog.EnvRole, err)
	}
	if r < config.RoleWrite {
		return s, fmt.Errorf("role %s may not push", r)
	}
	s.Pusher = validator.Pusher{Known: true, Admin: r == config.RoleAdmin, Operator: h.Getenv(pushlog.EnvOperator) == "1"}
	return s, nil
}

// RepoNameFromDir is a repo's name from its directory: "locks" for
// /srv/locks.git, and for a work tree's .git, the work tree's name.
func RepoNameFromDir(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	base := filepath.Base(abs)
	if base == ".git" {
		base = filepath.Base(filepath.Dir(abs))
	}
	return strings.TrimSuffix(base, ".git")
}

// openRepo opens the pushed repo as this run sees it: in the daemon
// (GitEnv set) with the push's quarantine, where the refused commits are.
func (h *PreReceive) openRepo() *poolrepo.Repo {
	g := gitstore.Open(h.Dir)
	g.Env = h.GitEnv
	if h.Objects == nil {
		return poolrepo.OpenWith(g, g)
	}
	return poolrepo.OpenWith(g, poolrepo.WithFallback(h.Objects(), g))
}

func (h *PreReceive) judge() (Result, error) {
	var res Result
	repo := h.openRepo()
	defer repo.Close()
	set, err := h.settings(repo)
	if err != nil {
		return res, err
	}
	sc := bufio.NewScanner(h.Stdin)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		u, err := pool.ParseRefUpdate(sc.Text())
		if err != nil {
			return res, err
		}
		branch := u.Ref == "refs/heads/"+set.Policy.Branch
		var unjudged []string
		if !pool.IsZero(u.New) && branch {
			u.Commits, u.FastForward, err = repo.NewCommits(u.Old, u.New)
			if err != nil {
				return res, err
			}
			// Security: every commit the branch gains is judged, not only
			// its first-parent chain; a merge's other parents would
			// otherwise bring changes in unjudged (DESIGN.md §2).
			if unjudged, err = repo.Unjudged(u.Old, u.New, u.Commits); err != nil {
				return res, err
			}
		}
		res.Updates = append(res.Updates, u)
		res.Violations = append(res.Violations, validator.CheckRef(u, set.Policy, set.Pusher)...)
		if len(unjudged) > 0 {
			vs, err := validator.CheckCommits(repo, unjudged, set.Pusher, set.Policy)
			if err != nil {
				return res, err
			}
			res.Violations = append(res.Violations, vs...)
		}
	}
	if err := sc.Err(); err != nil {
		return res, err
	}
	for _, v := range res.Violations {
		if v.Kind == validator.Permanent {
			res.Verdict = pushlog.VerdictPermanent
			break
		}
		res.Verdict = pushlog.VerdictTransient
	}
	return res, nil
}

// LoadConfig loads the config at path, or the built-in empty one for "".
func LoadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Parse("", nil)
	}
	return config.Load(path)
}
