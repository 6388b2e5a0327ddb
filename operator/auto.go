package operator

import (
	"context"
	"fmt"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/events"
	"github.com/poolgate/poolgate/webhook"
	"github.com/rs/zerolog"
)

// AutoOperator is the operator name of release_after's releases.
const AutoOperator = "poolgate release_after"

// AutoRelease releases claims held longer than their pool's release_after,
// each as an operator action (so a commit, a `released` event with the
// operator and the reason, and a late release by the old holder is refused
// as stale-release). Pools without release_after are never touched.
type AutoRelease struct {
	// Config is the running config: a SIGHUP that sets or changes a
	// pool's release_after takes effect at the next check.
	Config func() *config.Config
	Holds  func(ctx context.Context, repo string) ([]events.Hold, error)
	Actor  Actor
	Log    zerolog.Logger
	Now    func() time.Time

	warned map[string]bool // claim commits whose release failed, logged once
}

// Run checks until ctx ends.
func (a *AutoRelease) Run(ctx context.Context) {
	if a.Now == nil {
		a.Now = time.Now
	}
	a.warned = map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval(a.Config())):
			a.Once(ctx)
		}
	}
}

// interval is a tenth of the shortest release_after, within 1s and 30s:
// a claim is released at most that late. With none set, checking every
// 30s only notices a reload that sets one.
func interval(cfg *config.Config) time.Duration {
	var shortest time.Duration
	for _, r := range cfg.Repos {
		for _, p := range r.Pools {
			if d := p.ReleaseAfter.D(); d > 0 && (shortest == 0 || d < shortest) {
				shortest = d
			}
		}
	}
	if shortest == 0 {
		return 30 * time.Second
	}
	return max(time.Second, min(shortest/10, 30*time.Second))
}

// Once releases every claim that is due now.
func (a *AutoRelease) Once(ctx context.Context) {
	now := a.Now()
	for _, r := range a.Config().Repos {
		holds, err := a.Holds(ctx, r.Name)
		if err != nil {
			a.Log.Error().Err(err).Str("repo", r.Name).Msg("release_after: reading claims")
			continue
		}
		for _, h := range holds {
			p := r.Pool(h.Pool)
			if p == nil || p.ReleaseAfter <= 0 || now.Sub(h.Since) < p.ReleaseAfter.D() {
				continue
			}
			act := Action{Repo: r.Name, Pool: h.Pool, Lock: h.Lock, Verb: Release, Operator: AutoOperator,
				ClaimCommit: h.Claim.Commit,
				Reason:      fmt.Sprintf("held for %s, over the pool's release_after %s", webhook.Human(now.Sub(h.Since)), webhook.Human(p.ReleaseAfter.D()))}
			res, err := a.Actor.Operate(ctx, act)
			if err != nil {
				// A conflict is the store lagging behind a release or a
				// new claim: the next round sees it right.
				if ref, ok := AsRefusal(err); (ok && ref.Code == Conflict) || a.warned[h.Claim.Commit] {
					continue
				}
				a.warned[h.Claim.Commit] = true
				a.Log.Warn().Err(err).Str("repo", r.Name).Str("pool", h.Pool).Str("lock", h.Lock).Msg("release_after: release refused")
				continue
			}
			a.Log.Info().Str("repo", r.Name).Str("pool", h.Pool).Str("lock", h.Lock).Str("commit", res.Commit).Msg("release_after: released")
		}
	}
}
