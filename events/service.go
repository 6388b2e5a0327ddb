package events

import (
	"context"
	"sync"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/rs/zerolog"
)

// PollInterval is how often each repo is synced without being told: it
// catches pushes that did not come through the daemon (an admin's git on
// the server) and times stale claims.
const PollInterval = time.Second

// Service keeps every configured repo's events derived, off the push path:
// the daemon only pokes it (Pushed) after a receive-pack ends.
type Service struct {
	Store *Store
	// OnEvents, if set, is called after a sync stored new events (the
	// webhook dispatcher's wake-up). It must not block.
	OnEvents func([]Event)

	cfg      *config.Config
	log      zerolog.Logger
	derivers map[string]*Deriver
	kicks    map[string]chan struct{}
	wg       sync.WaitGroup
}

// NewService opens the store in the data dir.
func NewService(cfg *config.Config, log zerolog.Logger) (*Service, error) {
	st, err := Open(cfg.DataDir, false)
	if err != nil {
		return nil, err
	}
	s := &Service{Store: st, cfg: cfg, log: log, derivers: map[string]*Deriver{}, kicks: map[string]chan struct{}{}}
	for i := range cfg.Repos {
		r := &cfg.Repos[i]
		s.derivers[r.Name] = NewDeriver(st, r, RepoDir(cfg, r.Name))
		s.kicks[r.Name] = make(chan struct{}, 1)
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

// Run syncs every repo, at once, on Pushed and every PollInterval, until
// ctx ends; then closes the derivers (not the store).
func (s *Service) Run(ctx context.Context) {
	for name, d := range s.derivers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer d.Close()
			s.loop(ctx, name, d)
		}()
	}
	s.wg.Wait()
}

func (s *Service) loop(ctx context.Context, name string, d *Deriver) {
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	failing := false
	for {
		evs, err := d.Sync(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			// Logged once per failure streak: a broken repo must not
			// flood the journal every second.
			if !failing {
				s.log.Error().Err(err).Str("repo", name).Msg("deriving events")
			}
			failing = true
		case err == nil:
			if failing {
				s.log.Info().Str("repo", name).Msg("deriving events works again")
			}
			failing = false
			if len(evs) > 50 {
				// A history import: one line, not one per event.
				s.log.Info().Str("repo", name).Int("events", len(evs)).Msg("derived events")
			} else {
				for _, e := range evs {
					s.log.Info().Str("repo", e.Repo).Str("event", e.Type).Str("pool", e.Pool).Str("lock", e.Lock).
						Str("id", e.ID).Str("commit", e.Commit).Bool("announce", e.Announce).Msg("event")
				}
			}
			if len(evs) > 0 && s.OnEvents != nil {
				s.OnEvents(evs)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.kicks[name]:
		case <-t.C:
		}
	}
}
