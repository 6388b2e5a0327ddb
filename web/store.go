package web

import (
	"context"
	"net/url"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/events"
	"github.com/poolgate/poolgate/upstream"
	"github.com/poolgate/poolgate/webhook"
)

// StoreBackend reads the daemon's event store and repos: the Backend the
// daemon and the tests use.
type StoreBackend struct {
	// Config is the running config (config.Live), read at each request:
	// a reload's max_claimed, stale_after and webhooks show at once.
	Config configSource
	Store  *events.Store
	Now    func() time.Time
	// Mirrors, if set, reports watch-mode repos' fetch health.
	Mirrors func() map[string]upstream.SyncStatus
}

// configSource is the running config.
type configSource interface{ Current() *config.Config }

func (b *StoreBackend) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func (b *StoreBackend) Repos() []Repo {
	cfg := b.Config.Current()
	out := make([]Repo, 0, len(cfg.Repos))
	for _, r := range cfg.Repos {
		pools := make([]string, 0, len(r.Pools))
		for _, p := range r.Pools {
			pools = append(pools, p.Name)
		}
		repo := Repo{Name: r.Name, Branch: r.Branch, Pools: pools}
		if r.Upstream != nil {
			repo.Mirror = &Mirror{}
			if b.Mirrors != nil {
				st := b.Mirrors()[r.Name]
				if !st.LastSync.IsZero() {
					t := st.LastSync
					repo.Mirror.LastSync = &t
				}
				repo.Mirror.LastError, repo.Mirror.Failures = st.LastError, st.Failures
			}
		}
		out = append(out, repo)
	}
	return out
}

func (b *StoreBackend) Pools(ctx context.Context, repo string) ([]Pool, error) {
	cfg := b.Config.Current()
	if cfg.Repo(repo) == nil {
		return nil, ErrUnknownRepo
	}
	states, err := events.Pools(ctx, b.Store, cfg, repo, b.now())
	if err != nil {
		return nil, err
	}
	out := make([]Pool, 0, len(states))
	for _, ps := range states {
		p := Pool{Name: ps.Pool, MaxClaimed: ps.MaxClaimed, StaleAfterSeconds: ps.StaleAfterSeconds,
			Claimed: ps.Claimed, Total: ps.Total, Locks: make([]Lock, 0, len(ps.Locks)), Waiting: ps.Waiting}
		for _, ls := range ps.Locks {
			l := Lock{Name: ls.Lock, State: ls.State, Since: ls.Since, HeldSeconds: ls.HeldSeconds, Commit: ls.Commit, Stale: ls.Stale,
				Content: ls.Content, ContentTruncated: ls.ContentTruncated}
			if ls.State != "unclaimed" {
				h := &Holder{BuildURL: ls.BuildURL, Team: ls.Team, Pipeline: ls.Pipeline, Job: ls.Job, Build: ls.Build}
				if ls.By != nil {
					h.User, h.Key = ls.By.User, ls.By.Key
				}
				l.HeldBy = h
			}
			p.Locks = append(p.Locks, l)
		}
		out = append(out, p)
	}
	return out, nil
}

func (b *StoreBackend) Events(ctx context.Context, repo string, q Query) ([]Event, error) {
	if b.Config.Current().Repo(repo) == nil {
		return nil, ErrUnknownRepo
	}
	eq := events.Query{Repo: repo, Pool: q.Pool, Lock: q.Lock, Limit: q.Limit}
	if q.Type != "" {
		eq.Types = []string{events.TypeOfWebhookType(q.Type)}
	}
	evs, err := b.Store.Events(ctx, eq)
	if err != nil {
		return nil, err
	}
	return convert(evs), nil
}

func (b *StoreBackend) Rejections(ctx context.Context, repo string, limit int) ([]Event, error) {
	if b.Config.Current().Repo(repo) == nil {
		return nil, ErrUnknownRepo
	}
	evs, err := b.Store.Rejections(ctx, repo, limit)
	if err != nil {
		return nil, err
	}
	return convert(evs), nil
}

func convert(evs []events.Event) []Event {
	out := make([]Event, 0, len(evs))
	for i := range evs {
		e := &evs[i]
		v := Event{Type: e.Type, Time: e.Time, ID: e.ID, Pool: e.Pool, Lock: e.Lock, Commit: e.Commit,
			HeldSeconds: e.HeldSeconds, Rule: e.Rule, Kind: e.Kind, Reason: e.Reason, Operator: e.Operator, Data: e}
		if e.Pusher != nil {
			v.User = e.Pusher.User
		}
		v.Violations = e.Violations
		if e.BuildURL != "" || e.Pipeline != "" {
			v.Build = &Holder{BuildURL: e.BuildURL, Team: e.Team, Pipeline: e.Pipeline, Job: e.Job, Build: e.Build}
		}
		out = append(out, v)
	}
	return out
}

func (b *StoreBackend) Webhooks(ctx context.Context) ([]Webhook, error) {
	ts, err := webhook.Targets(ctx, b.Config.Current(), b.Store, 20)
	if err != nil {
		return nil, err
	}
	out := make([]Webhook, 0, len(ts))
	for _, t := range ts {
		w := Webhook{Name: t.Name, Format: t.Format, URL: redact(t.URL), Cursor: t.Cursor, Pending: t.Pending,
			Disabled: t.Disabled, LastOK: t.LastOK, LastError: t.LastError, Deliveries: []Delivery{}}
		for _, d := range t.Deliveries {
			id := ""
			if len(d.Events) > 0 {
				id = d.Events[0]
			}
			w.Deliveries = append(w.Deliveries, Delivery{Time: d.Time, EventID: id, Status: d.Status, Error: d.Error,
				Duration: d.Duration.Seconds()})
		}
		out = append(out, w)
	}
	return out, nil
}

// redact keeps a webhook URL's host and path but drops what may be a
// credential: userinfo and the query (Concourse's webhook_token), and
// Slack's secret path.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "redacted"
	}
	if u.Host == "hooks.slack.com" {
		u.Path = "/services/…"
	}
	return u.String()
}
