package config

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Live is the one holder of a running daemon's config. Every long-running
// part (the daemon's sessions, event derivation, webhook delivery, the
// status page and API, metrics, watch mode, release_after) reads it through
// Current at the moment it needs a setting, so a reload (SIGHUP) that
// Stores a new config reaches all of them at once. A part that keeps
// something built from the config (webhook delivery's targets, a deriver's
// next stale deadline) hears of each change through Subscribe.
//
// A stored *Config is never modified afterwards: readers share it without
// locks, and a reader that took one keeps a consistent view for its call.
type Live struct {
	cur atomic.Pointer[Config]

	mu   sync.Mutex // orders Store's calls to the subscribers
	next int
	subs []subscriber
}

type subscriber struct {
	id int
	f  func(*Config)
}

// NewLive holds cfg as the running config.
func NewLive(cfg *Config) *Live {
	l := &Live{}
	l.cur.Store(cfg)
	return l
}

// Current is the running config.
func (l *Live) Current() *Config { return l.cur.Load() }

// Store makes cfg the running config, then calls every subscriber with it,
// in this goroutine and in the order they subscribed: when Store returns,
// every part has taken the change (the reload logs "config reloaded" only
// then). Only the daemon's reload calls it.
func (l *Live) Store(cfg *Config) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cur.Store(cfg)
	for _, s := range l.subs {
		s.f(cfg)
	}
}

// Subscribe calls f with the new config after each Store, until cancel is
// called. f runs inside Store: it must be quick and must not call Store or
// Subscribe.
func (l *Live) Subscribe(f func(*Config)) (cancel func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := l.next
	l.next++
	l.subs = append(l.subs, subscriber{id, f})
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.subs = slices.DeleteFunc(l.subs, func(s subscriber) bool { return s.id == id })
	}
}
