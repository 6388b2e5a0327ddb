package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/poolgate/poolgate/config"
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
}

// Status reads the branch tip's locks from git and joins what the store
// knows about each: when it entered its state, and who holds it. The store
// should be synced first for the freshest answer.
func Status(ctx context.Context, st *Store, cfg *config.Config, repoName string, now time.Time) ([]LockStatus, error) {
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
	if tip == "" {
		return nil, nil
	}
	snap, err := r.SnapshotAt(tip)
	if err != nil {
		return nil, err
	}
	last, err := st.lastPerLock(ctx, repoName)
	if err != nil {
		return nil, err
	}
	holds, err := st.Holds(ctx, repoName)
	if err != nil {
		return nil, err
	}
	held := map[[2]string]Hold{}
	for _, h := range holds {
		held[[2]string{h.Pool, h.Lock}] = h
	}
	d := &Deriver{cfg: rc}
	var out []LockStatus
	for _, p := range snap.PoolPaths() {
		pl := snap.Pool(p)
		mc, _ := d.poolCfg(p)
		for _, name := range pl.Names() {
			ls := LockStatus{Repo: repoName, Pool: p, Lock: name, State: stateName(pl.StateOf(name)), MaxClaimed: mc}
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
			out = append(out, ls)
		}
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
