package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/operator"
	"github.com/poolgate/poolgate/pushlog"
)

// Operate performs an operator action (the operator socket, the HTTP API,
// release_after) as a push: under the repo's push lock, so it is serialized
// with clients' pushes exactly as they are with each other, and through
// receive-pack and the hook (operator.Apply).
func (s *Server) Operate(ctx context.Context, a operator.Action) (operator.Result, error) {
	lc := s.conf()
	repo := lc.Repo(a.Repo)
	if repo == nil {
		return operator.Result{}, &operator.Refusal{Code: operator.NotFound, Msg: "no such repo " + a.Repo}
	}
	if repo.Upstream != nil {
		return operator.Result{}, &operator.Refusal{Code: operator.Invalid, Msg: a.Repo + " is a read-only mirror; act on its upstream"}
	}
	if err := a.Check(); err != nil {
		return operator.Result{}, err
	}
	if !s.begin() {
		return operator.Result{}, &operator.Refusal{Code: operator.Busy, Msg: "server is stopping, try again"}
	}
	defer s.inflight.Done()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, lc.SSH.PushTimeout.D())
	defer cancel()
	// Serialized with pushes, and decided by the cluster like them.
	release, err := s.takeForWrite(ctx, repo.Name)
	if errors.Is(err, errRepoTaken) {
		return operator.Result{}, &operator.Refusal{Code: operator.Busy, Msg: "repository busy, try again"}
	}
	if err != nil {
		return operator.Result{}, &operator.Refusal{Code: operator.Busy, Msg: err.Error()}
	}
	defer release()
	env := append(s.baseEnv(), pushlog.EnvConfig+"="+lc.hookFile, pushlog.EnvRepo+"="+repo.Name)
	env = append(env, lc.env...)
	res, err := operator.Apply(ctx, operator.Target{Dir: s.cfg.RepoDir(repo.Name), Branch: repo.Branch, Env: env}, a)
	ev := s.log.Info()
	if err != nil {
		ev = s.log.Warn().Err(err)
	}
	ev.Str("repo", a.Repo).Str("pool", a.Pool).Str("lock", a.Lock).Str("action", string(a.Verb)).
		Str("operator", a.Operator).Str("reason", a.Reason).Str("commit", res.Commit).
		Dur("duration", time.Since(start)).Msg("operator action")
	if r, ok := operator.AsRefusal(err); ok && r.Code == operator.Rejected {
		s.Metrics.Push(repo.Name, false, r.Rules)
	}
	if err == nil {
		s.Metrics.Push(repo.Name, true, nil)
		s.maint.touched(repo.Name)
	}
	if s.Observer != nil {
		s.Observer.Pushed(repo.Name)
	}
	return res, err
}

// Config is the running config (after any SIGHUP reload).
func (s *Server) Config() *config.Config { return s.conf().Config }

// Live is the holder of the running config that the daemon's Reload swaps:
// every other long-running part reads its settings through it.
func (s *Server) Live() *config.Live { return s.running }
