package hooks

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/poolrepo"
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
	// GitEnv, if set, is the whole environment of the git commands that
	// read the push's objects (nil: this process's, which inside a hook
	// points git at the quarantine).
	GitEnv []string
}

// Result of a hook run.
type Result struct {
	Violations []validator.Violation
	Verdict    string // "", VerdictTransient or VerdictPermanent
	Updates    []Update
}

// Update is one ref update of the push, with the new first-parent commits
// it brings to the branch (oldest first).
type Update struct {
	validator.RefUpdate
	Commits []string
}

var (
	shaRe = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)
)

// Run executes the hook and returns its exit code: 0 accept, 1 reject.
func (h *PreReceive) Run() int {
	res, err := h.judge()
	if err == nil {
		err = h.record(res)
	}
	if err != nil {
		// Fail closed: a validator that cannot run must not wave pushes through.
		fmt.Fprintf(h.Stderr, "poolgate: push refused: the server could not validate it: %v\n", err)
		h.writeVerdict(VerdictPermanent, nil)
		return 1
	}
	if len(res.Violations) == 0 {
		h.writeVerdict("accepted", nil)
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
	if res.Verdict == VerdictTransient {
		b.WriteString("poolgate: this is temporary; the push will land once the pool allows it.\n")
	}
	io.WriteString(h.Stderr, b.String())
	h.writeVerdict(res.Verdict, res.Violations)
	return 1
}

func (h *PreReceive) writeVerdict(v string, vs []validator.Violation) {
	if p := h.Getenv(EnvVerdictFile); p != "" {
		var rules []string
		for _, x := range vs {
			rules = append(rules, string(x.Rule))
		}
		// Best effort: the daemon treats a missing verdict as transient,
		// the safe default for the stock client's retry loop.
		_ = os.WriteFile(p, []byte(v+"\nrules: "+strings.Join(rules, ",")+"\n"), 0o600)
	}
}

// ReadVerdict reads a verdict file: its first line is the verdict, its
// second the rules that were broken. A missing file reads as "".
func ReadVerdict(path string) (verdict string, rules []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil
	}
	first, rest, _ := strings.Cut(string(b), "\n")
	if r, ok := strings.CutPrefix(strings.TrimSpace(rest), "rules: "); ok && r != "" {
		rules = strings.Split(r, ",")
	}
	return strings.TrimSpace(first), rules
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
		path = h.Getenv(EnvConfig)
	}
	cfg := h.Config
	if cfg == nil {
		var err error
		if cfg, err = LoadConfig(path); err != nil {
			return s, err
		}
	}
	name := h.Getenv(EnvRepo)
	if name == "" {
		name = RepoNameFromDir(h.Dir)
	}
	var err error
	if s.Policy, err = repo.Policy(cfg, name); err != nil {
		return s, err
	}
	role := h.Getenv(EnvRole)
	if role == "" {
		role = "write"
	}
	r, err := config.ParseRole(role)
	if err != nil {
		return s, fmt.Errorf("%s: %w", EnvRole, err)
	}
	if r < config.RoleWrite {
		return s, fmt.Errorf("role %s may not push", r)
	}
	s.Pusher = validator.Pusher{Known: true, Admin: r == config.RoleAdmin}
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

func (h *PreReceive) judge() (Result, error) {
	var res Result
	repo := poolrepo.Open(h.Dir)
	repo.Git.Env = h.GitEnv
	defer repo.Close()
	set, err := h.settings(repo)
	if err != nil {
		return res, err
	}
	sc := bufio.NewScanner(h.Stdin)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || !shaRe.MatchString(f[0]) || !shaRe.MatchString(f[1]) {
			return res, fmt.Errorf("malformed hook input line %q", sc.Text())
		}
		u := validator.RefUpdate{Old: f[0], New: f[1], Ref: f[2], FastForward: true}
		branch := u.Ref == "refs/heads/"+set.Policy.Branch
		var chain []string
		if !validator.IsZero(u.New) && branch {
			chain, u.FastForward, err = repo.NewCommits(u.Old, u.New)
			if err != nil {
				return res, err
			}
		}
		res.Updates = append(res.Updates, Update{RefUpdate: u, Commits: chain})
		res.Violations = append(res.Violations, validator.CheckRef(u, set.Policy, set.Pusher)...)
		if len(chain) > 0 {
			vs, err := validator.CheckCommits(repo, chain, set.Pusher, set.Policy)
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
			res.Verdict = VerdictPermanent
			break
		}
		res.Verdict = VerdictTransient
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
