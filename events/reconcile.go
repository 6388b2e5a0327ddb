package events

import (
	"database/sql"
	"sort"

	"github.com/poolgate/poolgate/pool"
)

// reconcileHolds brings the holds in line with the tip's claims. Commits
// make every change on a history that only grows; a forced push (upstream
// in watch mode, or an admin's) can replace history instead, so that a
// claim's release, or a claim, is in no commit on the branch. Derived from
// the state change, each is a `released` or `claimed` event marked
// history_rewrite, so the lock neither stays held (and goes stale) forever
// nor shows unclaimed "since" its old claim. rewound says the branch was
// moved back to tip, an older commit: its push record then says who pushed
// it long ago, not who rewound it, so the events name no pusher. snap is
// the tip's snapshot.
func (d *Deriver) reconcileHolds(tx *sql.Tx, tip string, snap *pool.Snapshot, rewound bool) ([]Event, error) {
	rows, err := tx.Query(`SELECT pool, lock FROM holds WHERE repo=?`, d.cfg.Name)
	if err != nil {
		return nil, err
	}
	held := map[[2]string]bool{}
	var gone [][2]string
	for rows.Next() {
		var k [2]string
		if err := rows.Scan(&k[0], &k[1]); err != nil {
			rows.Close()
			return nil, err
		}
		held[k] = true
		if st := snap.Pool(k[0]).StateOf(k[1]); st != pool.StateClaimed && st != pool.StateBoth {
			gone = append(gone, k)
		}
	}
	rows.Close()
	var claimed [][2]string
	for _, p := range snap.PoolPaths() {
		for name := range snap.Pool(p).Claimed {
			// StateBoth is a duplicate, reported as such, not a claim.
			if k := [2]string{p, name}; !held[k] && snap.Pool(p).StateOf(name) == pool.StateClaimed {
				claimed = append(claimed, k)
			}
		}
	}
	if len(gone) == 0 && len(claimed) == 0 {
		return nil, nil
	}
	sort.Slice(claimed, func(i, j int) bool {
		return claimed[i][0] < claimed[j][0] || claimed[i][0] == claimed[j][0] && claimed[i][1] < claimed[j][1]
	})
	c, err := d.repo.Commit(tip)
	if err != nil {
		return nil, err
	}
	pusher, when, err := d.pushOf(tx, tip)
	if err != nil {
		return nil, err
	}
	if rewound || when.IsZero() {
		pusher, when = nil, d.Now().UTC()
	}
	mk := func(k [2]string, typ, state string) Event {
		maxClaimed, _ := d.poolCfg(k[0])
		return Event{ID: ID(d.cfg.Name, tip, k[0], k[1], typ, "history-rewrite"), Type: typ, Time: when, Announce: d.announce(when),
			Repo: d.cfg.Name, Branch: d.branch, Pool: k[0], Lock: k[1], Action: typ, State: state, Commit: tip,
			Message: pool.Subject(c.Message), Pusher: pusher, Author: authorOf(c),
			Claimed: snap.Pool(k[0]).ClaimedCount(), MaxClaimed: maxClaimed, HistoryRewrite: true}
	}
	var out []Event
	for _, k := range gone {
		e := mk(k, Released, stateName(snap.Pool(k[0]).StateOf(k[1])))
		claimCommit, since, ok, err := d.hold(tx, k[0], k[1])
		if err != nil {
			return nil, err
		}
		if ok {
			h := max(int64(when.Sub(since).Seconds()), 0)
			e.HeldSeconds, e.ClaimCommit = &h, claimCommit
		}
		isNew, err := insertEvent(tx, &e)
		if err != nil {
			return nil, err
		}
		if _, err := tx.Exec(`DELETE FROM holds WHERE repo=? AND pool=? AND lock=?`, d.cfg.Name, k[0], k[1]); err != nil {
			return nil, err
		}
		if isNew {
			out = append(out, e)
		}
	}
	for _, k := range claimed {
		e := mk(k, Claimed, "claimed")
		isNew, err := insertEvent(tx, &e)
		if err != nil {
			return nil, err
		}
		if _, err := tx.Exec(`INSERT INTO holds(repo,pool,lock,event,time,stale_sent) VALUES(?,?,?,?,?,0)
			ON CONFLICT(repo,pool,lock) DO UPDATE SET event=excluded.event, time=excluded.time, stale_sent=0`,
			d.cfg.Name, k[0], k[1], e.ID, when.UnixNano()); err != nil {
			return nil, err
		}
		if isNew {
			out = append(out, e)
		}
	}
	return out, nil
}
