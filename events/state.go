package events

import (
	"context"
	"database/sql"

	"github.com/poolgate/poolgate/pool"
)

// The current state (tables lock_state and pool_state) is kept beside the
// events, written in the same transaction as the events of each commit, so
// the status page, the API and the metrics read one row per lock instead of
// grouping every event ever derived or reading git.

// cursorState marks a repo whose current-state tables are maintained (a
// store from before they existed is filled once, from the derived tip).
const cursorState = "state"

// applyChanges records one commit's lock changes and the pools it created
// or deleted.
func (d *Deriver) applyChanges(tx dbtx, before, after *pool.Snapshot, changes []pool.Change, when int64, commit string) error {
	for _, ch := range changes {
		if ch.After == pool.Absent {
			if _, err := tx.Exec(`DELETE FROM lock_state WHERE repo=? AND pool=? AND lock=?`, d.cfg.Name, ch.Pool, ch.Name); err != nil {
				return err
			}
			continue
		}
		content, cut, err := d.content(ch.New.Hash)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO lock_state(repo,pool,lock,state,time,commit_hash,content,truncated) VALUES(?,?,?,?,?,?,?,?)
			ON CONFLICT(repo,pool,lock) DO UPDATE SET state=excluded.state, time=excluded.time, commit_hash=excluded.commit_hash,
				content=excluded.content, truncated=excluded.truncated`,
			d.cfg.Name, ch.Pool, ch.Name, stateName(ch.After), when, commit, content, cut); err != nil {
			return err
		}
	}
	if before != nil && after != nil && before.Tree == after.Tree {
		return nil
	}
	for p := range after.Pools {
		if before.Pool(p) == nil {
			if _, err := tx.Exec(`INSERT OR IGNORE INTO pool_state(repo,pool) VALUES(?,?)`, d.cfg.Name, p); err != nil {
				return err
			}
		}
	}
	if before == nil {
		return nil
	}
	for p := range before.Pools {
		if after.Pool(p) == nil {
			if _, err := tx.Exec(`DELETE FROM pool_state WHERE repo=? AND pool=?`, d.cfg.Name, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// reconcile makes the current state and the holds agree with the tip's
// snapshot. Deriving commit by commit keeps them exact along one history;
// an admin's forced push moves the branch to another, where a lock claimed
// in a dropped commit would otherwise stay held (and go stale) forever.
// A lock whose state changed here gets no time or commit: no commit on the
// branch says when it entered that state. The holds follow with events
// (reconcileHolds).
func (d *Deriver) reconcile(tx *sql.Tx, tip string, snap *pool.Snapshot, rewound bool) ([]Event, error) {
	repo := d.cfg.Name
	type row struct{ pool, lock, state string }
	rows, err := tx.Query(`SELECT pool, lock, state FROM lock_state WHERE repo=?`, repo)
	if err != nil {
		return nil, err
	}
	var have []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.pool, &r.lock, &r.state); err != nil {
			rows.Close()
			return nil, err
		}
		have = append(have, r)
	}
	rows.Close()
	known := map[[2]string]bool{}
	for _, r := range have {
		known[[2]string{r.pool, r.lock}] = true
		st := snap.Pool(r.pool).StateOf(r.lock)
		switch {
		case st == pool.Absent:
			_, err = tx.Exec(`DELETE FROM lock_state WHERE repo=? AND pool=? AND lock=?`, repo, r.pool, r.lock)
		case stateName(st) != r.state:
			l, _ := snap.Pool(r.pool).Lock(r.lock)
			content, cut, cerr := d.content(l.Hash)
			if cerr != nil {
				return nil, cerr
			}
			_, err = tx.Exec(`UPDATE lock_state SET state=?, time=0, commit_hash='', content=?, truncated=? WHERE repo=? AND pool=? AND lock=?`,
				stateName(st), content, cut, repo, r.pool, r.lock)
		}
		if err != nil {
			return nil, err
		}
	}
	if _, err := tx.Exec(`DELETE FROM pool_state WHERE repo=?`, repo); err != nil {
		return nil, err
	}
	for _, p := range snap.PoolPaths() {
		if _, err := tx.Exec(`INSERT INTO pool_state(repo,pool) VALUES(?,?)`, repo, p); err != nil {
			return nil, err
		}
		pl := snap.Pool(p)
		for _, name := range pl.Names() {
			if known[[2]string{p, name}] {
				continue
			}
			l, _ := pl.Lock(name)
			content, cut, err := d.content(l.Hash)
			if err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`INSERT INTO lock_state(repo,pool,lock,state,time,commit_hash,content,truncated) VALUES(?,?,?,?,0,'',?,?)`,
				repo, p, name, stateName(pl.StateOf(name)), content, cut); err != nil {
				return nil, err
			}
		}
	}
	return d.reconcileHolds(tx, tip, snap, rewound)
}

// backfillState fills the current state of a store derived before it was
// kept: the derived tip's snapshot, each lock's time and commit from its
// latest event (one pass over the events, once).
func (d *Deriver) backfillState(tx *sql.Tx, tip string, snap *pool.Snapshot) ([]Event, error) {
	evs, err := d.reconcile(tx, tip, snap, false)
	if err != nil {
		return nil, err
	}
	_, err = tx.Exec(`UPDATE lock_state SET (time, commit_hash) = (
		SELECT e.time, json_extract(e.data, '$.commit') FROM events e
		WHERE e.repo=lock_state.repo AND e.pool=lock_state.pool AND e.lock=lock_state.lock
		  AND e.type IN ('added','removed','claimed','released','updated')
		ORDER BY e.seq DESC LIMIT 1)
		WHERE repo=? AND EXISTS (SELECT 1 FROM events e WHERE e.repo=lock_state.repo AND e.pool=lock_state.pool AND e.lock=lock_state.lock)`,
		d.cfg.Name)
	return evs, err
}

// stateRows reads a repo's current state: the pools and their locks.
func (s *Store) stateRows(ctx context.Context, repo string) (pools []string, locks map[string][]lockRow, err error) {
	rows, err := s.db.QueryContext(ctx, `SELECT pool FROM pool_state WHERE repo=? ORDER BY pool`, repo)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return nil, nil, err
		}
		pools = append(pools, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	rows, err = s.db.QueryContext(ctx, `SELECT pool, lock, state, time, commit_hash, content, truncated FROM lock_state WHERE repo=? ORDER BY pool, lock`, repo)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	locks = map[string][]lockRow{}
	for rows.Next() {
		var r lockRow
		if err := rows.Scan(&r.pool, &r.lock, &r.state, &r.time, &r.commit, &r.content, &r.truncated); err != nil {
			return nil, nil, err
		}
		locks[r.pool] = append(locks[r.pool], r)
	}
	return pools, locks, rows.Err()
}

type lockRow struct {
	pool, lock, state, commit, content string
	time                               int64
	truncated                          bool
}

// content is a lock file's text for the current state (lockContent),
// remembered by blob: a history moves the same few files back and forth.
func (d *Deriver) content(hash string) (string, bool, error) {
	if c, ok := d.contents[hash]; ok {
		return c.text, c.cut, nil
	}
	text, cut, err := lockContent(d.repo, hash)
	if err != nil {
		return "", false, err
	}
	if len(d.contents) > 1024 {
		clear(d.contents)
	}
	d.contents[hash] = lockText{text, cut}
	return text, cut, nil
}

type lockText struct {
	text string
	cut  bool
}
