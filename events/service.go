package events

import (
	"context"
	"sync"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/rs/zerolog"
)

const (
	// SafetyPoll is how often the service looks, by stat alone, whether a
	// repo's branch or records changed without it being told (an admin's
	// git on the server). Pushes through the daemon are derived as soon as
	// they end (Pushed); stale claims when they fall due. Idle, nothing
	// else runs: no git process, no query.
	SafetyPoll = 5 * time.Second
	// retryAfter is when a failed sync is tried again.
	retryAfter = 5 * time.Second
)

// Service keeps every configured repo's events derived, off the push path:
// the daemon only pokes it (Pushed) after a receive-pack ends.
type Service struct {
	Store *Store
	// OnEvents, if set, is called after a sync stored new events (the
	// webhook dispatcher's wake-up). It must not block.
	OnEvents func([]Event)
	// SafetyPoll, if set, replaces the package's (tests).
	SafetyPoll time.Duration

	conf     configSource
	dataDir  string
	log      zerolog.Logger
	derivers map[string]*Deriver
	kicks    map[string]chan struct{}
	wg       sync.WaitGroup
}

// configSource is the running config (config.Live). The pools' settings
// that events carry (max_claimed) or act on (stale_after) are read from it
// at each sync, and a change (a reload) syncs every repo at once, so a
// shorter stale_after raises its stale events then, not at the old due time.
type configSource interface {
	Current() *config.Config
	Subscribe(func(*config.Config)) (cancel func())
}

// NewService opens the store in the data dir. The data dir and the set of
// repos are the ones conf holds now (a reload cannot change them).
func NewService(conf configSource, log zerolog.Logger) (*Service, error) {
	cfg := conf.Current()
	st, err := Open(cfg.DataDir, false)
	if err != nil {
		return nil, err
	}
	s := &Service{Store: st, conf: conf, dataDir: cfg.DataDir, log: log, derivers: map[string]*Deriver{}, kicks: map[string]chan struct{}{}}
	for i := range cfg.Repos {
		r := &cfg.Repos[i]
		d := NewDeriver(st, r, cfg.RepoDir(r.Name))
		name := r.Name
		d.settings = func() *config.Repo { return conf.Current().Repo(name) }
		s.derivers[name] = d
		s.kicks[name] = make(chan struct{}, 1)
	}
	return s, nil
}

// Pushed tells the service a push to repo ended (accepted or not). It never
// blocks: a sync already pending covers this push too.
func (s *Service) Pushed(repo string) {
	if k, ok := s.kicks[repo]; ok {
		select {
		case k <- struct{}{}:
		default:
		}
	}
}

// Deriver returns a repo's deriver (nil for an unknown repo).
func (s *Service) Deriver(repo string) *Deriver { return s.derivers[repo] }

// Run takes the store's derivation lock (waiting while a CLI command
// catches up), then syncs every repo at once, on Pushed, when a claim falls
// due to go stale, and when the safety poll sees a change, until ctx ends;
// then closes the derivers (not the store).
func (s *Service) Run(ctx context.Context) {
	unlock, err := LockDerivation(ctx, s.dataDir, true)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error().Err(err).Msg("taking the event store's derivation lock; no events are derived")
		}
		return
	}
	defer unlock()
	stopHearing := s.conf.Subscribe(func(*config.Config) {
		for name := range s.kicks {
			s.Pushed(name)
		}
	})
	defer stopHearing()
	for name, d := range s.derivers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer d.Close()
			s.loop(ctx, name, d)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watch(ctx)
	}()
	s.wg.Wait()
}

func (s *Service) loop(ctx context.Context, name string, d *Deriver) {
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	failing := false
	for {
		bulk := 0
		err := d.SyncFunc(ctx, func(evs []Event) {
			if len(evs) > 50 {
				bulk += len(evs) // a history import: one line, not one per event
			} else {
				for _, e := range evs {
					s.log.Info().Str("repo", e.Repo).Str("event", e.Type).Str("pool", e.Pool).Str("lock", e.Lock).
						Str("id", e.ID).Str("commit", e.Commit).Bool("announce", e.Announce).Msg("event")
				}
			}
			if s.OnEvents != nil {
				s.OnEvents(evs)
			}
		})
		if bulk > 0 {
			s.log.Info().Str("repo", name).Int("events", bulk).Msg("derived events")
		}
		next := d.NextDue()
		switch {
		case err != nil && ctx.Err() == nil:
			// Logged once per failure streak: a broken repo must not
			// flood the journal.
			if !failing {
				s.log.Error().Err(err).Str("repo", name).Msg("deriving events")
			}
			failing = true
			next = time.Now().Add(retryAfter)
		case err == nil:
			if failing {
				s.log.Info().Str("repo", name).Msg("deriving events works again")
			}
			failing = false
		}
		wake.Stop()
		var due <-chan time.Time
		if !next.IsZero() {
			wake.Reset(time.Until(next))
			due = wake.C
		}
		select {
		case <-ctx.Done():
			return
		case <-s.kicks[name]:
		case <-due:
		}
	}
}

// watch is the safety poll: a stat of each repo's ref files and records,
// a sync only when one changed since that repo's last sync began.
func (s *Service) watch(ctx context.Context) {
	every := s.SafetyPoll
	if every <= 0 {
		every = SafetyPoll
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for name, d := range s.derivers {
			if d.Changed() {
				s.Pushed(name)
			}
		}
	}
}
