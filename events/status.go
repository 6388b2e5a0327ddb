package events

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/poolgate/poolgate/config"
	"github.com/poolgate/poolgate/gitread"
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

// Pools is every pool of the repo as derived so far (configured pools that
// do not exist yet are listed empty): each lock's state, since when, and
// who holds it. It reads the store's current-state tables, not git, so its
// cost follows the number of locks, not the length of history; the daemon
// derives a push right after it ends.
func Pools(ctx context.Context, st *Store, cfg *config.Config, repoName string, now time.Time) ([]PoolState, error) {
	rc := cfg.Repo(repoName)
	if rc == nil {
		return nil, fmt.Errorf("unknown repo %q", repoName)
	}
	paths, locks, err := st.stateRows(ctx, repoName)
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
	for _, p := range rc.Pools {
		if !slices.Contains(paths, p.Name) {
			paths = append(paths, p.Name)
		}
	}
	sort.Strings(paths)
	var out []PoolState
	for _, p := range paths {
		ps := PoolState{Repo: repoName, Pool: p, Locks: []LockStatus{}, Waiting: waiting[p]}
		if ps.Waiting == nil {
			ps.Waiting = []Waiter{}
		}
		var staleAfter time.Duration
		ps.MaxClaimed, staleAfter = d.poolCfg(p)
		if staleAfter > 0 {
			s := int64(staleAfter.Seconds())
			ps.StaleAfterSeconds = &s
		}
		for _, r := range locks[p] {
			ls := LockStatus{Repo: repoName, Pool: p, Lock: r.lock, State: r.state, MaxClaimed: ps.MaxClaimed, Commit: r.commit,
				Content: r.content, ContentTruncated: r.truncated}
			if r.time != 0 {
				ls.Since = time.Unix(0, r.time).UTC()
			}
			if r.state != "unclaimed" && r.state != "absent" {
				ps.Claimed++
			}
			if h, ok := held[[2]string{p, r.lock}]; ok && ls.State != "unclaimed" {
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

// Behind reports whether the store has not derived the repo's branch tip
// yet: a daemon still deriving a long history at its first start. It reads
// the tip in-process.
func Behind(st *Store, cfg *config.Config, repoName string) (bool, error) {
	rc := cfg.Repo(repoName)
	if rc == nil {
		return false, fmt.Errorf("unknown repo %q", repoName)
	}
	r := gitread.Open(gitDir(cfg.RepoDir(repoName)))
	defer r.Close()
	tip, err := r.Tip(rc.Branch)
	if err != nil {
		return false, err
	}
	cur, err := getCursor(st.db, repoName, cursorCommit)
	return tip != cur, err
}

// emptyBlobs are the empty file's ids (SHA-1, SHA-256): most lock files,
// and no reason to ask git.
var emptyBlobs = map[string]bool{
	"e69de29bb2d1d6434b8b29ae775ad8c2e48c5391":                         true,
	"473a0f4c3be8a93681a267e3b1e9a7dcda1185436fe141f7749120a303721813": true,
}

// lockContent is a lock file's text, cut at MaxContent on a rune boundary.
// Bytes that are not UTF-8 are replaced, so JSON and the page show text.
func lockContent(r *gitread.Repo, hash string) (string, bool, error) {
	if hash == "" || emptyBlobs[hash] {
		return "", false, nil
	}
	b, err := r.Blob(hash)
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

// Rejections returns a repo's refused pushes, newest first (the API's
// /rejections), including coalesced repeats.
func (s *Store) Rejections(ctx context.Context, repo string, limit int) ([]Event, error) {
	return s.Events(ctx, Query{Repo: repo, Types: []string{Rejected}, Limit: limit})
}

// MarshalData is the event's webhook `data` object.
func (e *Event) MarshalData() ([]byte, error) { return json.Marshal(e) }
