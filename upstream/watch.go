// Package upstream is watch mode: a pool repo that stays on GitHub, GitLab
// or Gitea, followed by a local mirror. Nothing can be refused there, so
// the validator runs after the fact and what it finds is recorded as
// violations; the mirror's history feeds the same events as a served repo.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/internal/gitexec"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/poolrepo"
	"github.com/poolgate/poolgate/pushlog"
	"github.com/poolgate/poolgate/validator"
)

// Watcher keeps one mirror in step with its upstream.
type Watcher struct {
	Name string // the repo's; its branch and its being watched are fixed for the process's life
	Dir  string // the mirror's bare repo
	// Config is the running config: the upstream's URL, key, secret and
	// poll interval, and the pool rules judged, are read from it when used,
	// so a reload reaches the next fetch.
	Config configSource
	Log    zerolog.Logger
	// Changed is told the repo's branch moved (the event deriver).
	Changed func(repo string)

	mu      sync.Mutex // one fetch at a time
	trigger chan string

	statusMu sync.Mutex
	status   SyncStatus
}

// configSource is the running config (config.Live).
type configSource interface{ Current() *config.Config }

// NewWatcher makes a watcher of the repo named name, which conf's config
// must give an upstream; Run starts it.
func NewWatcher(conf configSource, name, dir string, log zerolog.Logger, changed func(string)) *Watcher {
	return &Watcher{Name: name, Dir: dir, Config: conf, Log: log.With().Str("repo", name).Logger(), Changed: changed,
		trigger: make(chan string, 1)}
}

// repo is the watched repo's current config. A reload can neither remove
// the repo nor its upstream block (the daemon's reload keeps the running
// repos then), so both are there.
func (w *Watcher) repo() *config.Repo { return w.Config.Current().Repo(w.Name) }

// Trigger asks for a fetch soon, naming who pushed upstream if known. It
// never blocks: a webhook handler must answer at once.
func (w *Watcher) Trigger(pusher string) {
	select {
	case w.trigger <- pusher:
	default: // a fetch is already due; it will see this push too
	}
}

// Run fetches on every trigger and at the poll interval until ctx ends. A
// missed webhook therefore costs at most one interval, never an event.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	pusher := ""
	for {
		_, err := w.Sync(ctx, pusher)
		if err != nil && ctx.Err() == nil {
			w.Log.Warn().Err(err).Msg("upstream fetch failed; will retry")
		}
		if ctx.Err() == nil {
			w.noteSync(err, time.Now())
		}
		// Read at each round: a reload's poll_interval counts from now.
		t.Reset(w.repo().Upstream.PollInterval.D())
		select {
		case <-ctx.Done():
			return
		case pusher = <-w.trigger:
		case <-t.C:
			pusher = ""
		}
	}
}

// Result of one sync.
type Result struct {
	Old, New   string
	Rewritten  bool
	Violations int
}

// Sync fetches the upstream branch into the mirror, judges what arrived and
// records it. pusher is recorded as who pushed the new commits ("" when a
// poll, not a webhook, found them).
func (w *Watcher) Sync(ctx context.Context, pusher string) (Result, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var res Result
	if err := w.ensureMirror(ctx); err != nil {
		return res, err
	}
	repo := poolrepo.Open(w.Dir)
	defer repo.Close()
	branch := w.repo().Branch
	old, err := repo.Git.ResolveBranch(branch)
	if err != nil {
		return res, err
	}
	newTip, err := w.fetch(ctx, repo)
	if err != nil {
		return res, err
	}
	res.Old, res.New = old, newTip
	if newTip == old {
		return res, nil
	}
	expect := old // for update-ref: "" means the branch must not exist yet
	if old == "" {
		old = pool.ZeroSHA
	}
	chain, ff, err := repo.NewCommits(old, newTip)
	if err != nil {
		return res, err
	}
	now := time.Now().UTC()
	log := pushlog.At(w.Dir)
	if !ff {
		res.Rewritten = true
		dropped := 0
		if out, err := repo.Git.Git("rev-list", "--first-parent", "--count", old, "--not", newTip, "--"); err == nil {
			fmt.Sscan(out, &dropped)
		}
		if err := log.Append(pushlog.Rewrites, pushlog.Rewrite{Time: now, User: pusher, Old: old, New: newTip, Dropped: dropped}); err != nil {
			return res, err
		}
		w.Log.Warn().Str("old", old).Str("new", newTip).Int("dropped", dropped).Msg("upstream history was rewritten (force push)")
	}
	// Who pushed, for the events: the same record as for served repos,
	// so the deriver needs no second code path.
	user := pusher
	if user == "" {
		user = "upstream"
	}
	if err := log.Append(pushlog.Pushes, pushlog.Push{Time: now, User: user, Role: "write",
		Ref: "refs/heads/" + branch, Old: old, New: newTip, Commits: chain}); err != nil {
		return res, err
	}
	policy, err := repo.Policy(w.Config.Current(), w.Name)
	if err != nil {
		return res, err
	}
	// The pusher's role upstream is unknown: pusher-dependent rules are not
	// judged, as in `poolgate check`.
	// Every commit the branch gains is judged, as the hook does: a merge's
	// other parents would otherwise bring changes in unreported.
	unjudged, err := repo.Unjudged(old, newTip, chain)
	if err != nil {
		return res, err
	}
	vs, err := validator.CheckCommits(repo, unjudged, validator.Pusher{}, policy)
	if err != nil {
		return res, err
	}
	var recs []any
	for _, v := range pushlog.ViolationsOf(vs) {
		recs = append(recs, pushlog.UpstreamViolation{Time: now, User: pusher, Violation: v})
		w.Log.Warn().Str("rule", v.Rule).Str("commit", v.Commit).Str("pool", v.Pool).Str("lock", v.Lock).Msg("upstream commit breaks a pool rule")
	}
	if err := log.Append(pushlog.Violations, recs...); err != nil {
		return res, err
	}
	res.Violations = len(vs)
	// The branch moves only now, after its records: a deriver that sees
	// the new tip finds who pushed it, as with a served repo's hook.
	if err := w.git(ctx, w.Dir, "update-ref", "-m", "poolgate: upstream", "refs/heads/"+branch, newTip, expect); err != nil {
		return res, err
	}
	w.Log.Info().Str("old", old).Str("new", newTip).Int("commits", len(chain)).Int("violations", len(vs)).Msg("upstream fetched")
	if w.Changed != nil {
		w.Changed(w.Name)
	}
	return res, nil
}

func (w *Watcher) ensureMirror(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(w.Dir, "HEAD")); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(w.Dir), 0o755); err != nil {
		return err
	}
	return w.git(ctx, filepath.Dir(w.Dir), "init", "-q", "--bare", "-b", w.repo().Branch, "--", w.Dir)
}

// fetch brings the upstream branch's objects into the mirror and returns
// its tip, without moving the mirror's branch: Sync records the push first.
// The mirror follows upstream rewrites included (they are recorded, not
// refused).
func (w *Watcher) fetch(ctx context.Context, repo *poolrepo.Repo) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	// FETCH_HEAD, not a ref: nothing half-done is ever advertised to clones.
	r := w.repo()
	if err := w.git(ctx, w.Dir, "fetch", "--quiet", "--no-tags", "--", r.Upstream.URL,
		"refs/heads/"+r.Branch); err != nil {
		return "", err
	}
	return repo.Git.Git("rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}")
}

// fetchEnv is what of the daemon's environment a fetch from upstream may
// need beyond gitexec's clean set: the SSH agent and the network's proxy
// and CA settings. Git's own configuration comes from the data dir's
// .gitconfig (HOME), as for everything else the daemon runs.
var fetchEnv = []string{
	"SSH_AUTH_SOCK", "GIT_SSH_COMMAND",
	"http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
	"SSL_CERT_FILE", "SSL_CERT_DIR",
}

func (w *Watcher) git(ctx context.Context, dir string, args ...string) error {
	cfg := w.Config.Current()
	o := gitexec.Options{Dir: dir, Home: cfg.DataDir, Inherit: fetchEnv, Env: []string{"GIT_TERMINAL_PROMPT=0"}}
	if k := cfg.Repo(w.Name).Upstream.KeyFile; k != "" {
		// accept-new: the first fetch learns the host key, later ones hold
		// it to that, kept in the data dir rather than a user's home.
		known := filepath.Join(cfg.DataDir, "upstream_known_hosts")
		o.Env = append(o.Env, "GIT_SSH_COMMAND=ssh -i '"+k+"' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile='"+known+"'")
	}
	out, err := gitexec.Command(ctx, o, args...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = err.Error()
		}
		// The URL may hold credentials: it is not repeated here.
		return errors.New("git " + args[0] + ": " + msg)
	}
	return nil
}

// Start runs a watcher for every repo with an upstream and returns the
// webhook handler for them, or nil when there are none. changed may be nil.
func Start(ctx context.Context, conf configSource, log zerolog.Logger, changed func(repo string)) *Handler {
	h := &Handler{Watchers: map[string]*Watcher{}, Log: log}
	cfg := conf.Current()
	for _, r := range cfg.Repos {
		if r.Upstream == nil {
			continue
		}
		w := NewWatcher(conf, r.Name, cfg.RepoDir(r.Name), log, changed)
		h.Watchers[r.Name] = w
		go w.Run(ctx)
	}
	if len(h.Watchers) == 0 {
		return nil
	}
	return h
}
