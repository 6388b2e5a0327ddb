package events

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/pool"
	"github.com/poolgate/poolgate/poolrepo"
)

// LockStatus is one lock as it stands now (the status command and the
// HTTP API's pools view).
type LockStatus struct {
	Repo  string    `json:"repo"`
	Pool  string    `json:"pool"`
	Lock  string    `json:"lock"`
	State string    `json:"state"` // claimed | unclaimed | claimed+unclaimed
	Since time.Time `json:"since,omitzero"`
	// HeldSeconds is how long a claimed lock has been held.
	HeldSeconds *int64  `json:"held_seconds"`
	By          *Pusher `json:"by"` // who claimed it (claimed locks)
	BuildURL    string  `json:"build_url,omitempty"`
	Team        string  `json:"team,omitempty"`
	Pipeline    string  `json:"pipeline,omitempty"`
	Job         string  `json:"job,omitempty"`
	Build       string  `json:"build,omitempty"`
	Commit      string  `json:"commit,omitempty"` // the commit of its last event
	Stale       bool    `json:"stale,omitempty"`
	MaxClaimed  *int    `json:"max_claimed"`
	// Content is the lock file's bytes as text, cut at MaxContent;
	// ContentTruncated says it was cut.
	Content          string `json:"content"`
	ContentTruncated bool   `json:"content_truncated,omitempty"`
}

// MaxContent is how much of a lock file status answers carry.
const MaxContent = 1024

// PoolState is one pool now: its limits, counts and every lock.
type PoolState struct {
	Repo       string `json:"repo"`
	Pool       string `json:"pool"`
	MaxClaimed *int   `json:"max_claimed"`
	// StaleAfterSeconds is the pool's stale_after; null when unset.
	StaleAfterSeconds *int64       `json:"stale_after_seconds"`
	Claimed           int          `json:"claimed"`
	Total             int          `json:"total"`
	Locks             []LockStatus `json:"locks"`
	// Waiting are the builds refused over max_claimed that still retry.
	Waiting []Waiter `json:"waiting"`
}

// Pools reads the branch tip's pools from git (configured pools that do
// not exist yet are listed empty) and joins what the store knows about
// each lock: when it entered its state, and who holds it. Sync the store
// first for the freshest answer.
func Pools(ctx context.Context, st *Store, cfg *config.Config, repoName string, now time.Time) ([]PoolState, error) {
	rc := cfg.Repo(repoName)
	if rc == nil {
		return nil, fmt.Errorf("unknown repo %q", repoName)
	}
	r := poolrepo.Open(RepoDir(cfg, repoName))
	defer r.Close()
	tip, err := r.Git.ResolveBranch(rc.Branch)
	if err != nil {
		return nil, err
	}
	var snap *pool.Snapshot
	if tip != "" {
		if snap, err = r.SnapshotAt(tip); err != nil {
			return nil, err
		}
	}
	last, err := st.lastPerLock(ctx, repoName)
	if err != nil {
		return nil, err
	}
	holds, err := st.Holds(ctx, repoName)
	if err != nil {
		return nil, err
	}
	waiting, err := st.Waiters(ctx, repoName, now)
	if err != nil {
		return nil, err
	}
	held := map[[2]string]Hold{}
	for _, h := range holds {
		held[[2]string{h.Pool, h.Lock}] = h
	}
	d := &Deriver{cfg: rc}
	paths := snap.PoolPaths()
	for _, p := range rc.Pools {
		if snap.Pool(p.Name) == nil {
			paths = append(paths, p.Name)
		}
	}
	sort.Strings(paths)
	var out []PoolState
	for _, p := range paths {
		pl := snap.Pool(p)
		ps := PoolState{Repo: repoName, Pool: p, Claimed: pl.ClaimedCount(), Locks: []LockStatus{}, Waiting: waiting[p]}
		if ps.Waiting == nil {
			ps.Waiting = []Waiter{}
		}
		var staleAfter time.Duration
		ps.MaxClaimed, staleAfter = d.poolCfg(p)
		if staleAfter > 0 {
			s := int64(staleAfter.Seconds())
			ps.StaleAfterSeconds = &s
		}
		for _, name := range pl.Names() {
			ls := LockStatus{Repo: repoName, Pool: p, Lock: name, State: stateName(pl.StateOf(name)), MaxClaimed: ps.MaxClaimed}
			if l, ok := pl.Lock(name); ok {
				if ls.Content, ls.ContentTruncated, err = lockContent(r, l.Hash); err != nil {
					return nil, err
				}
			}
			if e, ok := last[[2]string{p, name}]; ok {
				ls.Since, ls.Commit = e.Time, e.Commit
			}
			if h, ok := held[[2]string{p, name}]; ok && ls.State != "unclaimed" {
				c := h.Claim
				ls.Since, ls.By, ls.BuildURL = h.Since, c.Pusher, c.BuildURL
				ls.Team, ls.Pipeline, ls.Job, ls.Build = c.Team, c.Pipeline, c.Job, c.Build
				if ls.Build == "" {
					ls.Build = c.BuildID
				}
				s := int64(now.Sub(h.Since).Seconds())
				ls.HeldSeconds, ls.Stale = &s, h.StaleSent
			}
			ps.Locks = append(ps.Locks, ls)
		}
		ps.Total = len(ps.Locks)
		out = append(out, ps)
	}
	return out, nil
}

// emptyBlobs are the empty file's ids (SHA-1, SHA-256): most lock files,
// and no reason to ask git.
var emptyBlobs = map[string]bool{
	"e69de29bb2d1d6434b8b29ae775ad8c2e48c5391":                         true,
	"473a0f4c3be8a93681a267e3b1e9a7dcda1185436fe141f7749120a303721813": true,
}

// lockContent is a lock file's text, cut at MaxContent on a rune boundary.
// Bytes that are not UTF-8 are replaced, so JSON and the page show text.
func lockContent(r *poolrepo.Repo, hash string) (string, bool, error) {
	if hash == "" || emptyBlobs[hash] {
		return "", false, nil
	}
	b, err := r.Git.ReadBlob(hash)
	if err != nil {
		return "", false, err
	}
	cut := len(b) > MaxContent
	if cut {
		b = b[:MaxContent]
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	if cut {
		s = strings.TrimSuffix(s, "\uFFFD") // a rune split by the cut
	}
	return s, cut, nil
}

// Status is every lock of a repo now, pool by pool (the status command).
func Status(ctx context.Context, st *Store, cfg *config.Config, repoName string, now time.Time) ([]LockStatus, error) {
	pools, err := Pools(ctx, st, cfg, repoName, now)
	if err != nil {
		return nil, err
	}
	var out []LockStatus
	for _, p := range pools {
		out = append(out, p.Locks...)
	}
	return out, nil
}

// lastPerLock is each lock's latest lock event.
func (s *Store) lastPerLock(ctx context.Context, repo string) (map[[2]string]Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT e.seq,e.type,e.time,e.announce,e.data FROM events e
		JOIN (SELECT MAX(seq) AS s FROM events WHERE repo=? AND type IN ('added','removed','claimed','released','updated')
		      GROUP BY pool, lock) m ON e.seq = m.s`, repo)
	if err != nil {
		return nil, err
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, err
	}
	out := map[[2]string]Event{}
	for _, e := range evs {
		out[[2]string{e.Pool, e.Lock}] = e
	}
	return out, nil
}

// Rejections returns a repo's refused pushes, newest first (the API's
// /rejections), including coalesced repeats.
func (s *Store) Rejections(ctx context.Context, repo string, limit int) ([]Event, error) {
	return s.Events(ctx, Query{Repo: repo, Types: []string{Rejected}, Limit: limit})
}

// MarshalData is the event's webhook `data` object.
func (e *Event) MarshalData() ([]byte, error) { return json.Marshal(e) }
