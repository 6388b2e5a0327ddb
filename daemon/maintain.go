package daemon

import (
	"context"
	"sync"
	"time"
)

// MaintenanceInterval is how often repos that took pushes are repacked.
const MaintenanceInterval = time.Hour

// maintainer keeps served repos' packs lean: pool repos only grow, and a
// clone's server cost is the pack it builds, which bitmaps and a commit
// graph make cheap (BENCHMARKING.md). It runs beside pushes, never under the
// push lock: git repack is safe against a concurrent receive-pack.
type maintainer struct {
	s        *Server
	mu       sync.Mutex
	dirty    map[string]bool
	interval time.Duration
}

func newMaintainer(s *Server) *maintainer {
	return &maintainer{s: s, dirty: map[string]bool{}, interval: MaintenanceInterval}
}

func (m *maintainer) touched(repo string) {
	m.mu.Lock()
	m.dirty[repo] = true
	m.mu.Unlock()
}

func (m *maintainer) run(ctx context.Context) {
	if maintenanceOff() {
		m.s.log.Info().Msg("repo maintenance off (" + EnvMaintenance + ")")
		return
	}
	m.startupPass(ctx)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		repos := m.dirty
		m.dirty = map[string]bool{}
		m.mu.Unlock()
		for name := range m.due(repos) {
			m.repack(ctx, name)
		}
	}
}

func (m *maintainer) repack(ctx context.Context, name string) {
	dir := m.s.cfg.RepoDir(name)
	start := time.Now()
	for _, args := range maintenanceSteps(ctx, m.s, dir) {
		if _, err := m.s.git(ctx, dir, nil, nil, args...); err != nil {
			m.s.log.Warn().Str("repo", name).Err(err).Msg("maintenance failed")
			return
		}
	}
	m.s.log.Info().Str("repo", name).Dur("duration", time.Since(start)).Msg("repacked")
}
